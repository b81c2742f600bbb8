//! Prometheus metrics at every place work can wait: atomic counters and fixed-bucket
//! histograms, rendered in the text exposition format by `/metrics`. Lock-free on the hot path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scheduler::{Class, CLASSES};

/// Bucket upper bounds in seconds.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Histograms keyed by a label value, created on first use.
#[derive(Debug, Default)]
pub struct Family {
    by: Mutex<BTreeMap<String, Arc<Histogram>>>,
}

impl Family {
    /// The histogram for `label`.
    pub fn get(&self, label: &str) -> Arc<Histogram> {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        by.entry(label.to_owned()).or_default().clone()
    }

    fn render(&self, out: &mut String, name: &str, key: &str) {
        for (label, h) in self.by.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            h.render(out, name, &format!("{key}=\"{label}\""));
        }
    }
}

/// The signing policy's rules, as `signer_refused_by_policy_total` labels them (the policy's
/// `Rule` indexes this list).
pub const POLICY_RULES: [&str; 5] = ["client", "key", "type", "exit", "fee_recipient"];

/// Every metric of the signer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Time from submission to a device session (per class).
    pub queue_wait: [Histogram; CLASSES],
    /// Whole signing latency per request type, from parsed request to signature.
    pub signing: Family,
    /// Device operation latency per device.
    pub device_op: Family,
    /// Jobs refused because their deadline passed (per class).
    pub shed_expired: [AtomicU64; CLASSES],
    /// Requests refused because they arrived after their validity window ended (per class).
    pub past_window: [AtomicU64; CLASSES],
    /// Blocks and attestations refused because they are further ahead of the slot clock than
    /// slashing protection may record (per class).
    pub ahead_of_clock: [AtomicU64; CLASSES],
    /// Jobs refused because the queue was full (per class).
    pub shed_overload: [AtomicU64; CLASSES],
    /// Jobs whose client went away before they ran (per class).
    pub cancelled: [AtomicU64; CLASSES],
    /// Opened envelopes the rescue worker signed because the bulk workers (at the lowest OS
    /// priority) were starved by other load on the host (per class).
    pub starved_rescued: [AtomicU64; CLASSES],
    /// Responses per HTTP status.
    pub responses: Mutex<BTreeMap<u16, u64>>,
    /// Signing requests refused by slashing protection.
    pub slashing_refusals: AtomicU64,
    /// Requests refused by the signing policy, per rule (in the order of [`POLICY_RULES`]).
    pub refused_by_policy: [AtomicU64; POLICY_RULES.len()],
    /// Threshold shares whose device failed, per device (count; latency to failure).
    pub share_failures: Family,
    /// Threshold shares whose partial signature was wrong, per device.
    pub faulty_shares: Family,
    /// Extra devices asked because one was late.
    pub hedges: AtomicU64,
    /// Selection-proof precompute (`crate::duties`).
    pub precompute: PrecomputeMetrics,
    /// The HTTP server's connections (`crate::api::transport`).
    pub connections: ConnectionMetrics,
}

/// Why a connection was closed as soon as it was accepted: the `reason` label of
/// `signer_connections_refused_total`, indexed by [`ConnectionMetrics::refused`].
pub const CONNECTION_REFUSALS: [&str; 3] = ["max_connections", "per_ip", "tls_handshakes_per_ip"];
/// Where a connection ran out of time: the `phase` label of `signer_connections_timed_out_total`,
/// indexed by [`ConnectionMetrics::timed_out`].
pub const CONNECTION_TIMEOUTS: [&str; 3] = ["tls_handshake", "header", "body"];

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
        let _ = writeln!(
            out,
            "# TYPE signer_connections_open gauge\nsigner_connections_open {}",
            self.open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE signer_open_requests_paced_total counter\n\
             signer_open_requests_paced_total{{outcome=\"delayed\"}} {}\n\
             signer_open_requests_paced_total{{outcome=\"refused\"}} {}",
            self.open_delayed.load(Ordering::Relaxed),
            self.open_refused.load(Ordering::Relaxed)
        );
        for (name, label, labels, counts) in [
            (
                "signer_connections_refused_total",
                "reason",
                &CONNECTION_REFUSALS,
                &self.refused,
            ),
            (
                "signer_connections_timed_out_total",
                "phase",
                &CONNECTION_TIMEOUTS,
                &self.timed_out,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (value, n) in labels.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "{name}{{{label}=\"{value}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// Counters of the selection-proof precompute and its cache.
#[derive(Debug, Default)]
pub struct PrecomputeMetrics {
    /// Proofs signed ahead of time (background class).
    pub precomputed: AtomicU64,
    /// Proofs precomputed at the last mid-slot tick that finished.
    pub precomputed_last_slot: AtomicU64,
    /// Live selection-proof requests answered from the cache, without a device operation.
    pub hits: AtomicU64,
    /// Live selection-proof requests the cache could not answer (signed normally).
    pub misses: AtomicU64,
    /// Live selection-proof requests that found their proof being precomputed and were
    /// answered by that signature when it came (no second device operation).
    pub joined: AtomicU64,
    /// Live requests that found their proof queued for precompute too long and signed it
    /// themselves instead, taking the precompute's job out of the queue (counted as misses too).
    pub taken_over: AtomicU64,
    /// Precomputed proofs that were not ready by 1/3 of their slot (late, expired or shed).
    pub missed_deadline: AtomicU64,
    /// Cache entries dropped because the beacon node re-orged the duty away.
    pub dropped_reorg: AtomicU64,
    /// Beacon node requests that failed or answered nonsense.
    pub beacon_errors: AtomicU64,
    /// Proofs in the cache now.
    pub cached: AtomicU64,
}

impl PrecomputeMetrics {
    fn render(&self, out: &mut String) {
        for (name, kind, v) in [
            (
                "signer_selection_proofs_precomputed_total",
                "counter",
                &self.precomputed,
            ),
            (
                "signer_selection_proofs_precomputed_last_slot",
                "gauge",
                &self.precomputed_last_slot,
            ),
            (
                "signer_selection_proof_cache_hits_total",
                "counter",
                &self.hits,
            ),
            (
                "signer_selection_proof_cache_misses_total",
                "counter",
                &self.misses,
            ),
            (
                "signer_selection_proof_cache_joined_total",
                "counter",
                &self.joined,
            ),
            (
                "signer_selection_proof_cache_taken_over_total",
                "counter",
                &self.taken_over,
            ),
            (
                "signer_selection_proofs_missed_deadline_total",
                "counter",
                &self.missed_deadline,
            ),
            (
                "signer_selection_proofs_dropped_reorg_total",
                "counter",
                &self.dropped_reorg,
            ),
            (
                "signer_beacon_node_errors_total",
                "counter",
                &self.beacon_errors,
            ),
            (
                "signer_selection_proof_cache_entries",
                "gauge",
                &self.cached,
            ),
        ] {
            let _ = writeln!(
                out,
                "# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

impl Metrics {
    /// Bulk signatures the rescue worker made for starved bulk workers, all classes.
    pub fn starved_rescued_total(&self) -> u64 {
        self.starved_rescued
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

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
        out.push_str("# TYPE signer_queue_wait_seconds histogram\n");
        for c in Class::ALL {
            self.queue_wait[c as usize].render(
                &mut out,
                "signer_queue_wait_seconds",
                &format!("class=\"{}\"", c.label()),
            );
        }
        out.push_str("# TYPE signer_signing_seconds histogram\n");
        self.signing
            .render(&mut out, "signer_signing_seconds", "type");
        out.push_str("# TYPE signer_device_operation_seconds histogram\n");
        self.device_op
            .render(&mut out, "signer_device_operation_seconds", "device");
        for (name, arr) in [
            ("signer_shed_expired_total", &self.shed_expired),
            ("signer_refused_past_window_total", &self.past_window),
            ("signer_refused_ahead_of_clock_total", &self.ahead_of_clock),
            ("signer_shed_overload_total", &self.shed_overload),
            ("signer_cancelled_total", &self.cancelled),
            ("signer_starved_rescued_total", &self.starved_rescued),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for c in Class::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{class=\"{}\"}} {}",
                    c.label(),
                    arr[c as usize].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# TYPE signer_threshold_share_failures_seconds histogram\n");
        self.share_failures.render(
            &mut out,
            "signer_threshold_share_failures_seconds",
            "device",
        );
        out.push_str("# TYPE signer_threshold_faulty_shares histogram\n");
        self.faulty_shares
            .render(&mut out, "signer_threshold_faulty_shares", "device");
        let _ = writeln!(
            out,
            "# TYPE signer_threshold_hedges_total counter\nsigner_threshold_hedges_total {}",
            self.hedges.load(Ordering::Relaxed)
        );
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
        let _ = writeln!(
            out,
            "# TYPE signer_slashing_refusals_total counter\nsigner_slashing_refusals_total {}",
            self.slashing_refusals.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE signer_refused_by_policy_total counter\n");
        for (rule, n) in POLICY_RULES.iter().zip(&self.refused_by_policy) {
            let _ = writeln!(
                out,
                "signer_refused_by_policy_total{{rule=\"{rule}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        self.precompute.render(&mut out);
        self.connections.render(&mut out);
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

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered() {
        let m = Metrics::default();
        m.queue_wait[0].observe(Duration::from_micros(50));
        m.queue_wait[0].observe(Duration::from_millis(3));
        m.queue_wait[0].observe(Duration::from_secs(60));
        m.shed_expired[1].fetch_add(2, Ordering::Relaxed);
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
