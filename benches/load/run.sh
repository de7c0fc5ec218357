#!/usr/bin/env bash
# aigate load harness: the same HTTPS workload, in one run on one machine, against
#   direct            the client talks TLS straight to the local origin (the floor)
#   aigate-intercept  aigate decrypting a catalog host (api.openai.com), deciding, auditing to SQLite
#   aigate-tunnel     aigate blind-tunnelling a host outside the catalog (bench.test)
#   mitmproxy         mitmdump intercepting, with a regex PII/secret scan addon (mitm_scan.py)
#   squid             Squid ssl-bump intercepting (bump all), access log on
# and writes its report to docs/perf/REPORT-<UTC date>.md (-b, -c, ... when that day has one
# already; each report is history, never overwritten), raw results to target/bench-results.jsonl.
# Add the new report's row to docs/perf/RESULTS.md. See the README section "Load harness".
#
# Usage: benches/load/run.sh [--quick] [--targets direct,aigate-intercept,...] [--keep]
#   --quick    short runs (2 s per level, 256 MiB bulk, 2,000 idle connections) to validate
#   --targets  comma-separated subset (direct is always run: it is the floor)
#   --keep     keep the work directory (configs, logs, raw JSON lines)
# Environment: PROXY_CPU (default 1), CLIENT_CPU (default 0), DURATION, IDLE_CONNECTIONS,
#   BULK_BYTES, AIGATE_LOG_LEVEL (default warn), SKIP_BUILD=1, PACED_SHARES (default "50 25"),
#   STORE=sqlite (default) or postgres (a fresh database aigate_load on PG_URL, default
#   postgres://postgres@127.0.0.1:5432), AIGATE_WRAP (a command prefix for aigate, e.g.
#   "heaptrack -o /tmp/aigate" for a heap profile), WRITER_PRIORITY ([audit] writer_priority,
#   default adaptive), UPSTREAM_HTTP2 ([upstream] http2, default true), TMPDIR (where the work
#   directory, SQLite database and journal go; default /tmp), HALT_POLL_NS (KVM guests with the
#   haltpoll cpuidle driver: guest_halt_poll_ns for the run, restored after; unset: as found),
#   AIGATE_BIN (another aigate binary to run instead of target/release/aigate: a build A/B),
#   BUSY_POLL_US ([proxy] busy_poll_us; unset: the gateway's default).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QUICK=0
KEEP=0
TARGETS="direct,aigate-intercept,aigate-tunnel,mitmproxy,squid"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --targets) TARGETS="direct,$2"; shift ;;
        --targets=*) TARGETS="direct,${1#--targets=}" ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    DURATION=${DURATION:-2}
    BULK_BYTES=${BULK_BYTES:-268435456}
    IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}
    MODE_NAME="quick"
else
    DURATION=${DURATION:-10}
    BULK_BYTES=${BULK_BYTES:-1073741824}
    IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
    MODE_NAME="full"
fi
LEVELS=(1 16 128)
CHURN_CONCURRENCY=16
PACED_CONNECTIONS=32
# Percentages of the peak for the open-loop rows; 50 is the target's load.
PACED_SHARES=${PACED_SHARES:-50 25}
for share in $PACED_SHARES; do
    case "$share" in
        [1-9]|[1-9][0-9]|100) ;;
        *) echo "PACED_SHARES takes percentages from 1 to 100, not '$share'" >&2; exit 2 ;;
    esac
done
AIGATE_LOG_LEVEL=${AIGATE_LOG_LEVEL:-warn}
STORE=${STORE:-sqlite}
WRITER_PRIORITY=${WRITER_PRIORITY:-adaptive}
UPSTREAM_HTTP2=${UPSTREAM_HTTP2:-true}
BUSY_POLL_US=${BUSY_POLL_US:-}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}

# CPU affinity. The proxy under test gets a core of its own; the load client and the origin
# share the other, the same for every target (so "direct" is client + origin on that core).
NCPU=$(nproc)
PROXY_CPU=${PROXY_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
if [ "$NCPU" -lt 2 ]; then
    PROXY_CPU=0
    CLIENT_CPU=0
fi

# How an idle vCPU waits. With guest_halt_poll_ns = 0 it halts at once and every wake-up from
# the other CPU is an IPI through the hypervisor: on such hosts that alone moves low-load
# numbers 2x or more, so the report names the setting and HALT_POLL_NS can change it for the run.
HALT_POLL_PARAM=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_FOUND=""
[ -r "$HALT_POLL_PARAM" ] && HALT_POLL_FOUND=$(cat "$HALT_POLL_PARAM")
if [ -n "${HALT_POLL_NS:-}" ]; then
    case "$HALT_POLL_NS" in
        *[!0-9]*) echo "HALT_POLL_NS takes nanoseconds (digits), not '$HALT_POLL_NS'" >&2; exit 2 ;;
    esac
    if [ -z "$HALT_POLL_FOUND" ]; then
        echo "HALT_POLL_NS needs the haltpoll cpuidle driver ($HALT_POLL_PARAM is absent)" >&2
        exit 2
    fi
    [ -w "$HALT_POLL_PARAM" ] || { echo "cannot write $HALT_POLL_PARAM (root needed)" >&2; exit 2; }
fi
idle_description() {
    local driver
    driver=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)
    if [ -r "$HALT_POLL_PARAM" ]; then
        echo "cpuidle $driver, guest_halt_poll_ns $(cat "$HALT_POLL_PARAM")"
    else
        echo "cpuidle $driver"
    fi
}

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Ticks the hypervisor gave to others while this guest wanted to run: on a shared VM the same
# binary's numbers move with it, so the report says how much there was.
cpu_ticks() { awk '/^cpu /{total=0; for (i=2; i<=NF; i++) total+=$i; print $9, total}' /proc/stat; }
TICKS_AT_START=$(cpu_ticks)

want() { [[ ",$TARGETS," == *",$1,"* ]]; }
log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aigate-load.XXXXXX")
chmod 755 "$WORK"   # squid drops to its own user and must read its config and CA
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.3
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -n "${HALT_POLL_NS:-}" ] && [ -n "$HALT_POLL_FOUND" ]; then
        echo "$HALT_POLL_FOUND" >"$HALT_POLL_PARAM" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ] || [ $status -ne 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Set only now, so that cleanup puts back what was found whatever ends the run.
if [ -n "${HALT_POLL_NS:-}" ]; then echo "$HALT_POLL_NS" >"$HALT_POLL_PARAM"; fi

# 10,000 idle connections need two descriptors each in the client and in the gateway.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- build -------------------------------------------------------------------------------------
cd "$ROOT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building aigate and the load client (release)"
    cargo build --release --bin aigate --example load_client
fi
AIGATE="${AIGATE_BIN:-$ROOT/target/release/aigate}"
[ -x "$AIGATE" ] || { echo "no aigate binary at $AIGATE (build it, or unset AIGATE_BIN)" >&2; exit 2; }
CLIENT="$ROOT/target/release/examples/load_client"
# Measured before anything else runs: the proxy and the client sit on different CPUs, so every
# loopback hop between them is such a wake-up, and its price is the host's, not the proxy's.
WAKE_LINE=$(RUST_BACKTRACE=0 "$CLIENT" wake-cost --waker-cpu "$CLIENT_CPU" --sleeper-cpu "$PROXY_CPU" 2>&1) \
    || WAKE_LINE="not measured: $(tr -s '\n ' ' ' <<<"$WAKE_LINE")"

# --- competitors -------------------------------------------------------------------------------
VENV="$ROOT/target/load/venv"
MITMDUMP="$VENV/bin/mitmdump"
if want mitmproxy && [ ! -x "$MITMDUMP" ]; then
    log "installing mitmproxy into $VENV"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q mitmproxy \
        || { log "mitmproxy install failed: its rows will be missing"; TARGETS=${TARGETS//mitmproxy/}; }
fi
if want squid && ! command -v squid >/dev/null; then
    log "installing squid-openssl"
    { apt-get install -y squid-openssl >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && apt-get install -y squid-openssl >/dev/null 2>&1; }; } \
        || { log "squid install failed: its rows will be missing"; TARGETS=${TARGETS//squid/}; }
    # The package starts a system squid on :3128; this harness runs its own.
    service squid stop >/dev/null 2>&1 || true
fi

# --- ports and certificates --------------------------------------------------------------------
read -r UP_PORT SINK_PORT AIGATE_PORT ADMIN_PORT MITM_PORT SQUID_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
)

make_ca() { # name common-name
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$WORK/$1.key" -out "$WORK/$1.pem" -subj "/O=aigate load/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
make_ca upstream-ca "aigate load upstream CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/origin.key" \
    -out "$WORK/origin.csr" -subj "/O=aigate load/CN=api.openai.com" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:api.openai.com,DNS:bench.test,DNS:localhost,IP:127.0.0.1" \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" >"$WORK/origin.ext"
openssl x509 -req -in "$WORK/origin.csr" -CA "$WORK/upstream-ca.pem" -CAkey "$WORK/upstream-ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/origin.ext" -out "$WORK/origin.pem" 2>/dev/null

wait_port() { # port name pid
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || { log "$2 exited during start-up (see $WORK/$2.log)"; return 1; }
        sleep 0.2
    done
    log "$2 did not listen on $1 within 30 s"
    return 1
}

# --- origin and sink (client core) -------------------------------------------------------------
taskset -c "$CLIENT_CPU" "$CLIENT" serve --listen "127.0.0.1:$UP_PORT" \
    --cert "$WORK/origin.pem" --key "$WORK/origin.key" >"$WORK/origin.log" 2>&1 &
PIDS+=($!); wait_port "$UP_PORT" origin $!
taskset -c "$CLIENT_CPU" "$CLIENT" sink --listen "127.0.0.1:$SINK_PORT" >"$WORK/sink.log" 2>&1 &
PIDS+=($!); wait_port "$SINK_PORT" sink $!

# --- aigate (proxy core) -----------------------------------------------------------------------
AIGATE_PID=""
if want aigate-intercept || want aigate-tunnel; then
    # The shipped catalog approves nothing and the shipped review policy would answer every
    # request with 403: run every other shipped policy and let unapproved services through, so
    # requests take the full forward path (the integration tests do the same).
    mkdir -p "$WORK/aigate/policies"
    case "$STORE" in
        sqlite) STORE_URL="sqlite://$WORK/aigate/aigate.db" ;;
        postgres)
            psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS aigate_load" -c "CREATE DATABASE aigate_load" >/dev/null
            STORE_URL="$PG_URL/aigate_load" ;;
        *) echo "STORE must be sqlite or postgres, not $STORE" >&2; exit 2 ;;
    esac
    for f in "$ROOT"/config/policies/*; do
        case "$(basename "$f")" in review-unapproved-ai*) ;; *) cp "$f" "$WORK/aigate/policies/" ;; esac
    done
    cat >"$WORK/aigate/aigate.toml" <<EOF
[proxy]
listen = "127.0.0.1:$AIGATE_PORT"
max_connections = 20000
header_read_timeout_secs = 300      # idle-connection check: the handshaken connections send nothing
client_idle_timeout_secs = 300
max_connections_per_client = 0      # every load connection comes from 127.0.0.1
${BUSY_POLL_US:+busy_poll_us = $BUSY_POLL_US}

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[tls]
ca_dir = "$WORK/aigate/certs"

[upstream]
extra_roots = ["$WORK/upstream-ca.pem"]
http2 = $UPSTREAM_HTTP2

[upstream.resolve]
"api.openai.com" = "127.0.0.1:$UP_PORT"
"bench.test" = "127.0.0.1:$UP_PORT"
"sink.test" = "127.0.0.1:$SINK_PORT"

[store]
url = "$STORE_URL"

[audit]
journal_dir = "$WORK/aigate/journal"
writer_priority = "$WRITER_PRIORITY"

[catalog]
dir = "$ROOT/config/catalog"

[policy]
dir = "$WORK/aigate/policies"

[policy.defaults]
review_required = "allow"
unknown = "allow"

[log]
level = "$AIGATE_LOG_LEVEL"
EOF
    "$AIGATE" check-config --config "$WORK/aigate/aigate.toml" >"$WORK/aigate-check.log" 2>&1 \
        || { cat "$WORK/aigate-check.log" >&2; exit 1; }
    taskset -c "$PROXY_CPU" ${AIGATE_WRAP:-} "$AIGATE" run --config "$WORK/aigate/aigate.toml" >"$WORK/aigate.log" 2>&1 &
    AIGATE_PID=$!; PIDS+=("$AIGATE_PID")
    wait_port "$AIGATE_PORT" aigate "$AIGATE_PID"
fi

# --- mitmproxy (proxy core) --------------------------------------------------------------------
MITM_PID=""
if want mitmproxy; then
    mkdir -p "$WORK/mitm"
    make_ca mitm-ca "aigate load mitmproxy CA"
    # mitmproxy reads its CA (key + certificate) from confdir; an EC key like the others', so the
    # handshake cost compares like with like.
    cat "$WORK/mitm-ca.key" "$WORK/mitm-ca.pem" >"$WORK/mitm/mitmproxy-ca.pem"
    taskset -c "$PROXY_CPU" "$MITMDUMP" -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
        --set confdir="$WORK/mitm" --set connection_strategy=lazy \
        --set ssl_verify_upstream_trusted_ca="$WORK/upstream-ca.pem" \
        --set flow_detail=0 -s "$ROOT/benches/load/mitm_scan.py" >"$WORK/mitmproxy.log" 2>&1 &
    MITM_PID=$!; PIDS+=("$MITM_PID")
    wait_port "$MITM_PORT" mitmproxy "$MITM_PID"
fi

# --- squid (proxy core) ------------------------------------------------------------------------
SQUID_PID=""
if want squid; then
    SQ="$WORK/squid"
    mkdir -p "$SQ"
    make_ca squid-ca "aigate load squid CA"
    cp "$WORK/squid-ca.pem" "$WORK/squid-ca.key" "$SQ/"
    # Squid resolves the CONNECT host itself: a private hosts file sends api.openai.com to
    # loopback (no /etc/hosts edit), so squid's CONNECT names the origin's port.
    printf '127.0.0.1 api.openai.com bench.test\n' >"$SQ/hosts"
    /usr/lib/squid/security_file_certgen -c -s "$SQ/ssl_db" -M 16MB >/dev/null
    cat >"$SQ/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID_PORT ssl-bump tls-cert=$SQ/squid-ca.pem tls-key=$SQ/squid-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s $SQ/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
ssl_bump bump all
tls_outgoing_options cafile=$WORK/upstream-ca.pem
hosts_file $SQ/hosts
http_access allow all
cache deny all
access_log stdio:$SQ/access.log
cache_log $SQ/cache.log
pid_filename $SQ/squid.pid
coredump_dir $SQ
max_filedescriptors 65536
shutdown_lifetime 1 second
EOF
    chown -R proxy:proxy "$SQ" 2>/dev/null || true
    taskset -c "$PROXY_CPU" squid -N -f "$SQ/squid.conf" >"$WORK/squid.log" 2>&1 &
    SQUID_PID=$!; PIDS+=("$SQUID_PID")
    wait_port "$SQUID_PORT" squid "$SQUID_PID"
fi

# --- runs --------------------------------------------------------------------------------------
# target -> client arguments. aigate is told where the host lives (`[upstream.resolve]`), so its
# CONNECT names port 443; squid and mitmproxy resolve the name themselves (a private hosts file,
# the addon), so theirs names the origin's real port.
declare -A ARGS
ARGS[direct]="--addr 127.0.0.1:$UP_PORT --authority api.openai.com:$UP_PORT --ca $WORK/upstream-ca.pem"
ARGS[aigate-intercept]="--proxy 127.0.0.1:$AIGATE_PORT --authority api.openai.com:443 --ca $WORK/aigate/certs/ca.pem --pid $AIGATE_PID"
ARGS[aigate-tunnel]="--proxy 127.0.0.1:$AIGATE_PORT --authority bench.test:443 --ca $WORK/upstream-ca.pem --pid $AIGATE_PID"
ARGS[mitmproxy]="--proxy 127.0.0.1:$MITM_PORT --authority api.openai.com:$UP_PORT --ca $WORK/mitm-ca.pem --pid $MITM_PID"
ARGS[squid]="--proxy 127.0.0.1:$SQUID_PORT --authority api.openai.com:$UP_PORT --ca $WORK/squid-ca.pem --pid $SQUID_PID"
ORDER=(direct aigate-intercept aigate-tunnel mitmproxy squid)

measure() { # target scenario mode client-args...
    local target=$1 scenario=$2 MODE=$3
    shift 3
    log "$target $scenario"
    local rows
    rows=$(wc -l <"$RESULTS")
    # The client appends its row, a failed run included; RUST_BACKTRACE would bury the reason.
    # shellcheck disable=SC2086  # ARGS entries are word lists by construction
    RUST_BACKTRACE=0 taskset -c "$CLIENT_CPU" "$CLIENT" run --target "$target" --scenario "$scenario" \
        ${ARGS[$target]} "$@" --out "$RESULTS" 2>>"$WORK/client.log" || true
    if [ "$(wc -l <"$RESULTS")" = "$rows" ]; then
        # It died before writing anything (a crash): still give the report its row.
        printf '{"target":"%s","scenario":"%s","mode":"%s","errors":1,"first_error":"client crashed (see client.log)"}\n' \
            "$target" "$scenario" "$MODE" >>"$RESULTS"
    fi
    grep -v '^Error\|^Caused\|^ \|^$' "$WORK/client.log" | tail -n 1 >&2
}

for level in "${LEVELS[@]}"; do
    for target in "${ORDER[@]}"; do
        want "$target" || continue
        measure "$target" "c$level" keepalive --mode keepalive --concurrency "$level" --duration "$DURATION"
    done
done
for target in "${ORDER[@]}"; do
    want "$target" || continue
    measure "$target" churn churn --mode churn --concurrency "$CHURN_CONCURRENCY" --duration "$DURATION"
done

# Shares of aigate's peak, open loop, each next to direct at the same rate: half is the target's
# load; a quarter shows the latency the proxy adds when its core is not near saturation.
if want aigate-intercept; then
    PEAK=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(max([r.get("rps") or 0 for r in rows if r["target"] == "aigate-intercept" and r.get("mode") == "keepalive"] + [0]))
' "$RESULTS")
    for share in $PACED_SHARES; do
        RATE=$(python3 -c "print(round(float('$PEAK') * $share / 100))")
        if [ "$RATE" -gt 0 ]; then
            for target in direct aigate-intercept; do
                measure "$target" "paced-$share%" paced --mode paced --rate "$RATE" \
                    --concurrency "$PACED_CONNECTIONS" --duration "$DURATION"
            done
        else
            log "no aigate-intercept peak measured: skipping the paced runs"
            break
        fi
    done
fi

# Tunnel throughput: one upload stream to the sink, direct and through aigate's blind tunnel.
# The request runs are over: the targets' arguments now point at the sink.
ARGS[direct]="--addr 127.0.0.1:$SINK_PORT --authority sink.test:$SINK_PORT"
ARGS[aigate-tunnel]="--proxy 127.0.0.1:$AIGATE_PORT --authority sink.test:443 --pid $AIGATE_PID"
measure direct bulk bulk --mode bulk --bytes "$BULK_BYTES"
if want aigate-tunnel; then
    measure aigate-tunnel bulk bulk --mode bulk --bytes "$BULK_BYTES"
fi

# Memory with idle intercepted connections.
if want aigate-intercept; then
    measure aigate-intercept idle idle --mode idle --connections "$IDLE_CONNECTIONS" --concurrency 64 --duration 2
fi

# The audit pipeline over the whole run: what it wrote and how long its flushes took.
AUDIT_LINE=""
if want aigate-intercept || want aigate-tunnel; then
    AUDIT_LINE=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | python3 "$ROOT/benches/load/audit_metrics.py" 2>/dev/null || echo "metrics unavailable")
fi

# --- report ------------------------------------------------------------------------------------
# The next free name for today's report: REPORT-<date>.md, then -b, -c, ... (a full day of
# experiments has reached -g), so an earlier run of the day is never overwritten.
next_report_path() {
    local dir="$ROOT/docs/perf" day suffix candidate
    day=$(date -u +%Y-%m-%d)
    candidate="$dir/REPORT-$day.md"
    for suffix in b c d e f g h i j k l m n o p q r s t u v w x y z; do
        [ -e "$candidate" ] || break
        candidate="$dir/REPORT-$day-$suffix.md"
    done
    if [ -e "$candidate" ]; then
        echo "run.sh: every report name for $day is taken up to -z in $dir" >&2
        return 1
    fi
    echo "$candidate"
}
mkdir -p "$ROOT/docs/perf"
REPORT=$(next_report_path)
read -r STEAL_START TOTAL_START <<<"$TICKS_AT_START"
read -r STEAL_END TOTAL_END <<<"$(cpu_ticks)"
STEAL_SHARE=$(awk -v s=$((STEAL_END - STEAL_START)) -v t=$((TOTAL_END - TOTAL_START)) 'BEGIN { printf "%.1f%%", t ? 100 * s / t : 0 }')
{
    echo "# aigate load report ($MODE_NAME mode)"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+dirty')"
    echo "- machine: $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}'), $NCPU CPUs, $(uname -r); load average at start: $LOAD_AT_START; CPU time stolen by the hypervisor during the run: $STEAL_SHARE; idle: $(idle_description)"
    echo "- cross-CPU wake-up: $WAKE_LINE"
    echo "- affinity: proxy under test on CPU $PROXY_CPU (taskset); load client and origin on CPU $CLIENT_CPU (taskset)"
    echo "- workload: HTTPS POST, 2 KiB OpenAI chat-completion body (benign text), HTTP/1.1 keep-alive through CONNECT, TLS 1.3 ECDSA P-256 everywhere, no session resumption; ${DURATION} s per row; churn: new TCP + CONNECT + TLS per request at concurrency $CHURN_CONCURRENCY; paced: open loop over $PACED_CONNECTIONS connections, latency from the intended send time"
    echo "- aigate: ${AIGATE_BIN:+binary $AIGATE_BIN, }release build, shipped catalog, shipped policies minus review-unapproved-ai (unapproved services allowed so requests are forwarded), $STORE store, audit on (writer priority $WRITER_PRIORITY), upstream http2 $UPSTREAM_HTTP2, busy poll ${BUSY_POLL_US:-default} µs, log level $AIGATE_LOG_LEVEL"
    [ -n "$AUDIT_LINE" ] && echo "- aigate audit pipeline over the run: $AUDIT_LINE"
    want mitmproxy && echo "- mitmproxy: $("$MITMDUMP" --version 2>/dev/null | head -1), mitmdump -q, lazy upstream connect, addon benches/load/mitm_scan.py (JSON prompt extraction + 7 PII/secret regexes)"
    want squid && echo "- squid: $(squid -v | head -1 | sed 's/Squid Cache: //'), ssl_bump bump all, no cache, access log on"
    echo "- CPU: utime+stime of the proxy process tree over the measured window (/proc/PID/stat); peak RSS: VmHWM, reset per row via /proc/PID/clear_refs"
    [ "$QUICK" = 1 ] && echo "- **quick mode**: short runs for validating the harness; do not quote these numbers"
    echo
} >"$WORK/header.md"
"$CLIENT" report --results "$RESULTS" --out "$REPORT" --header "$WORK/header.md"
cp "$RESULTS" "$ROOT/target/bench-results.jsonl"
log "report: ${REPORT#"$ROOT"/} (raw: target/bench-results.jsonl); add its row to docs/perf/RESULTS.md"
