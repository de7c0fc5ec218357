//! Process-wide Prometheus metrics.
//!
//! One registry, created lazily, rendered by the admin listener at `/metrics`. Labels stay
//! low-cardinality on purpose: decision, listener, direction, reason — never a user, host or URL,
//! which would let one noisy client blow up the series count.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Metric definitions below are static literals: a failure to build or register one is a
/// programming error that the unit test at the bottom catches, so it is not an input error path.
#[expect(
    clippy::expect_used,
    reason = "static metric definitions, checked by the unit test"
)]
fn register<C: prometheus::core::Collector + Clone + 'static>(built: prometheus::Result<C>) -> C {
    let collector = built.expect("valid static metric definition");
    REGISTRY
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::with_opts(Opts::new(name, help)))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels))
}

pub static CONNECTIONS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_connections_total",
        "Client connections accepted, by listener.",
        &["listener"],
    )
});
pub static CONNECTIONS_ACTIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_connections_active",
        "Client connections currently open.",
    ))
});
pub static CONNECTIONS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_connections_rejected_total",
        "Client connections refused or closed before proxying, by reason.",
        &["reason"],
    )
});
pub static UPSTREAM_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_upstream_refused_total",
        "Requests and CONNECTs refused by the destination policy, by reason (self, loop, loopback, link_local, unspecified, multicast, own_address, private, denied_network).",
        &["reason"],
    )
});
pub static PROXY_AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_proxy_auth_failures_total",
        "Requests and CONNECTs refused for proxy authentication, by reason (missing or rejected credentials: 407; locked: 429 after repeated failures).",
        &["reason"],
    )
});
pub static REQUESTS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_requests_total",
        "HTTP requests that reached a decision, by decision.",
        &["decision"],
    )
});
pub static TUNNELS_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_tunnels_total",
        "CONNECT tunnels opened without interception.",
    )
});
pub static INTERCEPTS_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_intercepts_total",
        "CONNECT sessions whose TLS was intercepted.",
    )
});
pub static TUNNEL_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_tunnel_bytes_total",
        "Bytes relayed through blind tunnels, by direction.",
        &["direction"],
    )
});
pub static CERT_CACHE_HITS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_cert_cache_hits_total",
        "Leaf certificates served from the cache.",
    )
});
pub static CERT_CACHE_MISSES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_cert_cache_misses_total",
        "Leaf certificates that had to be minted.",
    )
});
pub static CERT_MINT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "aigate_cert_mint_seconds",
        "Time to mint one leaf certificate.",
    )
    .buckets(vec![
        0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05,
    ]);
    register(Histogram::with_opts(opts))
});
pub static TLS_HANDSHAKE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_tls_handshake_failures_total",
        "Client TLS handshakes with a minted leaf that failed, by reason.",
        &["reason"],
    )
});
pub static LEARNED_BYPASS_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_learned_bypass_total",
        "Hosts moved to the learned bypass list after repeated handshake aborts (certificate pinning).",
    )
});
pub static PROXY_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_proxy_errors_total",
        "Requests that failed in the proxy path, by stage.",
        &["stage"],
    )
});

pub static AUDIT_QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_audit_queue_depth",
        "Audit records waiting in the writer queue.",
    ))
});
pub static AUDIT_WRITTEN_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_written_total",
        "Audit records written to the store directly.",
    )
});
pub static AUDIT_OVERFLOW_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_overflow_total",
        "Audit records that found the queue full and were parked for spilling.",
    )
});
pub static AUDIT_SPILLED_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_spilled_total",
        "Audit records appended to the spill journal.",
    )
});
pub static AUDIT_REPLAYED_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_replayed_total",
        "Audit records replayed from the spill journal into the store.",
    )
});
pub static AUDIT_DEAD_LETTER_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_dead_letter_total",
        "Audit records the store refused, moved to the dead-letter file.",
    )
});
pub static AUDIT_DROPPED_TOTAL: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_dropped_total",
        "Audit records lost (the journal itself could not be written).",
    )
});
pub static AUDIT_STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_audit_store_errors_total",
        "Audit writes the store failed, by kind (disk_full, io_error, connection, busy, resources, rejected).",
        &["kind"],
    )
});
/// Every `kind` of `aigate_audit_store_errors_total`: the store's failure kinds, spelled here so
/// this module depends on no store (the store's unit tests hold the two lists equal).
pub const AUDIT_STORE_ERROR_KINDS: [&str; 6] = [
    "disk_full",
    "io_error",
    "connection",
    "busy",
    "resources",
    "rejected",
];
pub static AUDIT_STORE_FAILING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_audit_store_failing",
        "1 while the store fails audit writes (records go to the journal or wait in memory).",
    ))
});
pub static AUDIT_JOURNAL_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_audit_journal_errors_total",
        "Spill journal appends that failed (records then wait in memory and are retried).",
    )
});
pub static AUDIT_HELD_RECORDS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_audit_held_records",
        "Audit records held in memory because neither the store nor the journal took them.",
    ))
});
pub static AUDIT_FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "aigate_audit_flush_seconds",
        "Time to write one batch to the store.",
    )
    // Fine around the 250 ms flush-p99 target, so the histogram can tell whether it is met.
    .buckets(vec![
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5,
    ]);
    register(Histogram::with_opts(opts))
});

/// Touch every metric so that `/metrics` lists them from the first scrape, not only after the
/// first event of each kind.
pub fn init() {
    for listener in ["explicit", "transparent"] {
        CONNECTIONS_TOTAL.with_label_values(&[listener]);
    }
    for decision in ["allow", "deny", "review"] {
        REQUESTS_TOTAL.with_label_values(&[decision]);
    }
    for direction in ["upstream", "downstream"] {
        TUNNEL_BYTES.with_label_values(&[direction]);
    }
    LazyLock::force(&CONNECTIONS_ACTIVE);
    LazyLock::force(&CONNECTIONS_REJECTED);
    LazyLock::force(&UPSTREAM_REFUSED);
    LazyLock::force(&PROXY_AUTH_FAILURES);
    LazyLock::force(&PROXY_AUTH_VERIFICATIONS);
    LazyLock::force(&PROXY_AUTH_VERIFYING);
    LazyLock::force(&PROXY_AUTH_VERIFYING_PEAK);
    LazyLock::force(&TUNNELS_TOTAL);
    LazyLock::force(&INTERCEPTS_TOTAL);
    LazyLock::force(&CERT_CACHE_HITS);
    LazyLock::force(&CERT_CACHE_MISSES);
    LazyLock::force(&CERT_MINT_SECONDS);
    LazyLock::force(&TLS_HANDSHAKE_FAILURES);
    LazyLock::force(&LEARNED_BYPASS_TOTAL);
    LazyLock::force(&PROXY_ERRORS);
    LazyLock::force(&AUDIT_QUEUE_DEPTH);
    LazyLock::force(&AUDIT_WRITTEN_TOTAL);
    LazyLock::force(&AUDIT_OVERFLOW_TOTAL);
    LazyLock::force(&AUDIT_SPILLED_TOTAL);
    LazyLock::force(&AUDIT_REPLAYED_TOTAL);
    LazyLock::force(&AUDIT_DEAD_LETTER_TOTAL);
    LazyLock::force(&AUDIT_DROPPED_TOTAL);
    LazyLock::force(&AUDIT_FLUSH_SECONDS);
    for kind in AUDIT_STORE_ERROR_KINDS {
        AUDIT_STORE_ERRORS.with_label_values(&[kind]);
    }
    LazyLock::force(&AUDIT_STORE_FAILING);
    LazyLock::force(&AUDIT_JOURNAL_ERRORS);
    LazyLock::force(&AUDIT_HELD_RECORDS);
    LazyLock::force(&POLICY_LOAD_ERRORS);
    LazyLock::force(&POLICY_MEMO_HITS);
    LazyLock::force(&POLICY_MEMO_MISSES);
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> String {
    let mut buffer = Vec::with_capacity(8 * 1024);
    let encoder = TextEncoder::new();
    if encoder.encode(&REGISTRY.gather(), &mut buffer).is_err() {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}

pub static POLICY_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_policy_errors_total",
        "Policy evaluations that failed (the fail mode applied).",
    )
});
pub static POLICY_LOAD_ERRORS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_policy_load_errors",
        "Active policies that do not compile: their scope is denied until they are fixed.",
    ))
});
pub static POLICY_MEMO_HITS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_policy_memo_hits_total",
        "Policy verdicts reused because the input the policy reads equalled an earlier request's.",
    )
});
pub static POLICY_MEMO_MISSES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_policy_memo_misses_total",
        "Memoizable policy verdicts that had to be evaluated.",
    )
});
pub static POLICY_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_policy_reloads_total",
        "Snapshot reloads of policies, catalog and exceptions, by result.",
        &["result"],
    )
});

pub static PROXY_AUTH_VERIFICATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "aigate_proxy_auth_verifications_total",
        "Proxy passwords checked with argon2 (cached results and lockouts cost none).",
    )
});
pub static PROXY_AUTH_VERIFYING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_proxy_auth_verifying",
        "Argon2 proxy-password checks running now.",
    ))
});
pub static PROXY_AUTH_VERIFYING_PEAK: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new(
        "aigate_proxy_auth_verifying_peak",
        "Most argon2 proxy-password checks ever running at once (bounded by the CPU count).",
    ))
});

pub static EXPORT_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_export_events_total",
        "Events handed to SIEM and webhook integrations, by integration and outcome (delivered, dead_lettered).",
        &["integration", "outcome"],
    )
});
pub static EXPORT_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "aigate_export_attempts_total",
        "Batch deliveries tried, by integration and outcome (success, failure).",
        &["integration", "outcome"],
    )
});
pub static EXPORT_LAG_SECONDS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register(prometheus::IntGaugeVec::new(
        Opts::new(
            "aigate_export_lag_seconds",
            "Age of the newest event an integration has delivered, when it was delivered.",
        ),
        &["integration"],
    ))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_under_its_own_name() {
        init();
        let text = render();
        for name in [
            "aigate_connections_total",
            "aigate_connections_active",
            "aigate_requests_total",
            "aigate_tunnel_bytes_total",
            "aigate_cert_cache_hits_total",
            "aigate_cert_cache_misses_total",
            "aigate_cert_mint_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
