//! Prometheus primitives: atomic counters and fixed-bucket histograms, rendered in the text
//! exposition format. Lock-free on the hot path. Each service owns its metrics
//! (`scheduler::SchedulerMetrics`, `duties::PrecomputeMetrics`, `api::metrics`); `/metrics`
//! renders them all.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
    pub(crate) fn observe(&self, d: Duration) {
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

    /// Append this histogram as `name` with `labels` (`key="value",…`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
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
    by: RwLock<BTreeMap<String, Arc<Histogram>>>,
}

impl Family {
    /// The histogram for `label`. It is read on every device operation by many threads at
    /// once: a label seen before costs a shared lock and no allocation.
    pub fn get(&self, label: &str) -> Arc<Histogram> {
        if let Some(h) = self.by.read().unwrap_or_else(|p| p.into_inner()).get(label) {
            return h.clone();
        }
        let mut by = self.by.write().unwrap_or_else(|p| p.into_inner());
        by.entry(label.to_owned()).or_default().clone()
    }

    /// Append every histogram of the family as `name`, labelled `key="<label>"`.
    pub fn render(&self, out: &mut String, name: &str, key: &str) {
        for (label, h) in self.by.read().unwrap_or_else(|p| p.into_inner()).iter() {
            h.render(out, name, &format!("{key}=\"{label}\""));
        }
    }
}

/// Append a counter or gauge family `name` of `kind`, one line per (label value, count).
pub(crate) fn render_labelled<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    key: &str,
    values: impl IntoIterator<Item = (&'a str, &'a AtomicU64)>,
) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (value, n) in values {
        let _ = writeln!(
            out,
            "{name}{{{key}=\"{value}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
}

/// Append one unlabelled counter or gauge.
pub(crate) fn render_one(out: &mut String, name: &str, kind: &str, value: &AtomicU64) {
    let _ = writeln!(
        out,
        "# TYPE {name} {kind}\n{name} {}",
        value.load(Ordering::Relaxed)
    );
}
