"""Summarises aigate's audit pipeline from its Prometheus text on stdin, for the load report."""
import re
import sys

metrics, buckets = {}, []
for line in sys.stdin:
    if line.startswith("#") or not line.strip():
        continue
    name, value = line.rsplit(" ", 1)
    bucket = re.match(r'aigate_audit_flush_seconds_bucket\{le="([^"]+)"\}', name)
    if bucket:
        buckets.append((float(bucket.group(1)), float(value)))
    else:
        metrics[name] = float(value)

flushes = metrics.get("aigate_audit_flush_seconds_count", 0)
p99 = next((le for le, n in sorted(buckets) if flushes and n >= 0.99 * flushes), float("nan"))
within_target = next((n for le, n in sorted(buckets) if le == 0.25), float("nan"))
written = int(metrics.get("aigate_audit_written_total", 0))
spilled = int(metrics.get("aigate_audit_spilled_total", 0))
dropped = int(metrics.get("aigate_audit_dropped_total", 0))
print(
    f"{written} records written in {int(flushes)} flushes, flush p99 <= {p99 * 1000:g} ms "
    f"(histogram bucket), {int(flushes - within_target)} over 250 ms, spilled {spilled}, "
    f"dropped {dropped}"
)
