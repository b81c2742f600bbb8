//! The HTTP side's metrics (responses, refusals, connections) and `/metrics`' whole page, which
//! renders them beside the scheduler's and the precompute's.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::duties::PrecomputeMetrics;
use crate::metrics::{render_labelled, render_one, Family};
use crate::scheduler::SchedulerMetrics;

/// The signing policy's rules, as `signer_refused_by_policy_total` labels them (the policy's
/// `Rule` indexes this list).
pub(crate) const POLICY_RULES: [&str; 5] = ["client", "key", "type", "exit", "fee_recipient"];

/// Every metric of the signer: the API's own, and the services' it renders.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The scheduler's (shared with every scheduler a reload builds).
    pub scheduler: Arc<SchedulerMetrics>,
    /// The selection-proof precompute's (`crate::duties`).
    pub precompute: Arc<PrecomputeMetrics>,
    /// Whole signing latency per request type, from parsed request to signature.
    pub signing: Family,
    /// Responses per HTTP status.
    pub responses: Mutex<BTreeMap<u16, u64>>,
    /// Signing requests refused by slashing protection.
    pub slashing_refusals: AtomicU64,
    /// Slashing protection's decisions as a request waits for them (queue, check, record,
    /// commit), blocks and attestations together.
    pub slashing_check: crate::metrics::Histogram,
    /// Requests refused by the signing policy, per rule (in the order of [`POLICY_RULES`]).
    pub refused_by_policy: [AtomicU64; POLICY_RULES.len()],
    /// The HTTP server's connections (`crate::api::transport`).
    pub connections: ConnectionMetrics,
    /// The distributed endpoints' (this signer as a participant: `crate::api::distributed`).
    pub distributed: DistributedMetrics,
}

/// Why a distributed endpoint did not release a partial signature: the `reason` label of
/// `signer_distributed_refused_total`, indexed by [`DistributedMetrics::refused`]. `access`:
/// not mutual TLS 1.3 from an allowed client; the others by the answer's status (`forbidden`
/// is the signing policy or a `GENERIC` in a defined domain, `slashing` is 412).
pub(crate) const DISTRIBUTED_REFUSALS: [&str; 7] = [
    "access",
    "bad_request",
    "forbidden",
    "not_found",
    "slashing",
    "unavailable",
    "error",
];

/// Counters of the distributed endpoints.
#[derive(Debug, Default)]
pub struct DistributedMetrics {
    /// Partial signatures released, per request type.
    pub partials: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests (or batch items) refused, by [`DISTRIBUTED_REFUSALS`] reason.
    pub refused: [AtomicU64; DISTRIBUTED_REFUSALS.len()],
}

impl DistributedMetrics {
    /// Count one partial signature of `kind`.
    pub(crate) fn released(&self, kind: &'static str) {
        *self
            .partials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Count one refusal answered with `status` (`access` is counted apart: [`Self::no_access`]).
    pub(crate) fn refused_with(&self, status: u16) {
        let reason = match status {
            400 | 413 => 1,
            401 | 403 => 2,
            404 => 3,
            412 => 4,
            503 => 5,
            _ => 6,
        };
        self.refused[reason].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Count one request refused for its transport (not mutual TLS 1.3 from an allowed client).
    pub(crate) fn no_access(&self) {
        self.refused[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        out.push_str("# TYPE signer_distributed_partials_total counter\n");
        for (kind, n) in self
            .partials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "signer_distributed_partials_total{{type=\"{kind}\"}} {n}"
            );
        }
        render_labelled(
            out,
            "signer_distributed_refused_total",
            "counter",
            "reason",
            DISTRIBUTED_REFUSALS.iter().copied().zip(&self.refused),
        );
    }
}

/// Why a connection was closed as soon as it was accepted: the `reason` label of
/// `signer_connections_refused_total`, indexed by [`ConnectionMetrics::refused`].
pub(crate) const CONNECTION_REFUSALS: [&str; 3] =
    ["max_connections", "per_ip", "tls_handshakes_per_ip"];
/// Where a connection ran out of time: the `phase` label of `signer_connections_timed_out_total`,
/// indexed by [`ConnectionMetrics::timed_out`].
pub(crate) const CONNECTION_TIMEOUTS: [&str; 3] = ["tls_handshake", "header", "body"];

/// Counters of the HTTP server's connections.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now (TLS handshakes included).
    pub open: AtomicU64,
    /// Connections closed on arrival, by [`CONNECTION_REFUSALS`] reason.
    pub refused: [AtomicU64; 3],
    /// Connections closed for taking too long, by [`CONNECTION_TIMEOUTS`] phase.
    pub timed_out: [AtomicU64; 3],
    /// Requests to the open endpoints that waited for their turn (`crate::api::throttle`).
    pub open_delayed: AtomicU64,
    /// Requests to the open endpoints answered 429 after the longest wait.
    pub open_refused: AtomicU64,
}

impl ConnectionMetrics {
    fn render(&self, out: &mut String) {
        render_one(out, "signer_connections_open", "gauge", &self.open);
        render_labelled(
            out,
            "signer_open_requests_paced_total",
            "counter",
            "outcome",
            [
                ("delayed", &self.open_delayed),
                ("refused", &self.open_refused),
            ],
        );
        render_labelled(
            out,
            "signer_connections_refused_total",
            "counter",
            "reason",
            CONNECTION_REFUSALS.iter().copied().zip(&self.refused),
        );
        render_labelled(
            out,
            "signer_connections_timed_out_total",
            "counter",
            "phase",
            CONNECTION_TIMEOUTS.iter().copied().zip(&self.timed_out),
        );
    }
}

impl Metrics {
    /// Count one HTTP response.
    pub fn response(&self, status: u16) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
    }

    /// Render everything, plus gauges supplied by the caller as (name, labels, value).
    pub fn render(&self, gauges: &[(&str, String, f64)]) -> String {
        let mut out = String::new();
        self.scheduler.render_queue_wait(&mut out);
        out.push_str("# TYPE signer_signing_seconds histogram\n");
        self.signing
            .render(&mut out, "signer_signing_seconds", "type");
        self.scheduler.render_rest(&mut out);
        out.push_str("# TYPE signer_http_responses_total counter\n");
        for (status, n) in self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "signer_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# TYPE signer_slashing_check_seconds histogram\n");
        self.slashing_check
            .render(&mut out, "signer_slashing_check_seconds", "");
        render_one(
            &mut out,
            "signer_slashing_refusals_total",
            "counter",
            &self.slashing_refusals,
        );
        render_labelled(
            &mut out,
            "signer_refused_by_policy_total",
            "counter",
            "rule",
            POLICY_RULES.iter().copied().zip(&self.refused_by_policy),
        );
        self.precompute.render(&mut out);
        self.connections.render(&mut out);
        self.distributed.render(&mut out);
        crate::metrics::render_stage_cpu(&mut out);
        let mut last = "";
        for (name, labels, value) in gauges {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            let braces = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{name}{braces} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered() {
        let m = Metrics::default();
        m.scheduler.queue_wait[0].observe(Duration::from_micros(50));
        m.scheduler.queue_wait[0].observe(Duration::from_millis(3));
        m.scheduler.queue_wait[0].observe(Duration::from_secs(60));
        m.scheduler.shed_expired[1].fetch_add(2, Ordering::Relaxed);
        let text = m.render(&[("signer_sessions_in_use", "device=\"d\"".into(), 3.0)]);
        assert!(
            text.contains("signer_queue_wait_seconds_bucket{class=\"block\",le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(text.contains("signer_queue_wait_seconds_bucket{class=\"block\",le=\"0.005\"} 2"));
        assert!(text.contains("signer_queue_wait_seconds_bucket{class=\"block\",le=\"+Inf\"} 3"));
        assert!(text.contains("signer_shed_expired_total{class=\"attestation\"} 2"));
        assert!(text.contains("signer_sessions_in_use{device=\"d\"} 3"));
    }
}
