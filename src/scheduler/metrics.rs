//! The scheduler's metrics: where jobs wait, and what happens to those that do not run.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{render_labelled, render_one, Family, Histogram};
use crate::scheduler::{Class, CLASSES};

/// Every metric of the scheduler (and of the per-class refusals made before it).
#[derive(Debug, Default)]
pub struct SchedulerMetrics {
    /// Time from submission to a device session (per class).
    pub queue_wait: [Histogram; CLASSES],
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
    /// Threshold shares whose device failed, per device (count; latency to failure).
    pub share_failures: Family,
    /// Threshold shares whose partial signature was wrong, per device.
    pub faulty_shares: Family,
    /// Extra devices asked because one was late.
    pub hedges: AtomicU64,
    /// Threshold signatures verified in a batch with others (a bulk worker behind on a herd).
    pub batch_verified: AtomicU64,
}

impl SchedulerMetrics {
    /// Bulk signatures the rescue worker made for starved bulk workers, all classes.
    pub fn starved_rescued_total(&self) -> u64 {
        self.starved_rescued
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// The queue-wait histograms, per class.
    pub(crate) fn render_queue_wait(&self, out: &mut String) {
        out.push_str("# TYPE signer_queue_wait_seconds histogram\n");
        for c in Class::ALL {
            self.queue_wait[c as usize].render(
                out,
                "signer_queue_wait_seconds",
                &format!("class=\"{}\"", c.label()),
            );
        }
    }

    /// Everything but the queue wait: device operations, the per-class counters, threshold
    /// shares and hedges.
    pub(crate) fn render_rest(&self, out: &mut String) {
        out.push_str("# TYPE signer_device_operation_seconds histogram\n");
        self.device_op
            .render(out, "signer_device_operation_seconds", "device");
        for (name, arr) in [
            ("signer_shed_expired_total", &self.shed_expired),
            ("signer_refused_past_window_total", &self.past_window),
            ("signer_refused_ahead_of_clock_total", &self.ahead_of_clock),
            ("signer_shed_overload_total", &self.shed_overload),
            ("signer_cancelled_total", &self.cancelled),
            ("signer_starved_rescued_total", &self.starved_rescued),
        ] {
            render_labelled(
                out,
                name,
                "counter",
                "class",
                Class::ALL.iter().map(|c| (c.label(), &arr[*c as usize])),
            );
        }
        out.push_str("# TYPE signer_threshold_share_failures_seconds histogram\n");
        self.share_failures
            .render(out, "signer_threshold_share_failures_seconds", "device");
        out.push_str("# TYPE signer_threshold_faulty_shares histogram\n");
        self.faulty_shares
            .render(out, "signer_threshold_faulty_shares", "device");
        render_one(
            out,
            "signer_threshold_hedges_total",
            "counter",
            &self.hedges,
        );
        render_one(
            out,
            "signer_threshold_batch_verified_total",
            "counter",
            &self.batch_verified,
        );
    }

    /// All of the scheduler's metrics in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_queue_wait(&mut out);
        self.render_rest(&mut out);
        out
    }
}
