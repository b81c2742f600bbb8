//! Pacing: how many envelopes may be open ahead of the CPU workers, from the measured device
//! and signing times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many envelopes may be opened ahead of `workers` CPU workers when a device operation
/// takes `device_op` and a signature `sign` (both as measured, wall time): two per worker
/// waiting, plus twice what the workers sign while one device operation is under way. Little's
/// law gives the once (the operations in flight that keep the workers busy on average); the
/// twice covers the variance of both times, without which the workers were found waiting for
/// envelopes on a slow device. So a slow device keeps enough operations in flight, and a fast
/// one keeps few secrets open and few device threads on the cores.
pub(crate) fn ahead_limit(workers: usize, device_op: Duration, sign: Duration) -> usize {
    let per_op = device_op.as_secs_f64() / sign.as_secs_f64().max(1e-6);
    2 * workers + 2 * (workers as f64 * per_op).ceil().min(1e6) as usize
}

/// Moving averages of device operation and signature times (wall time, nanoseconds), each
/// sample weighing an eighth. Updated without a lock by whichever thread measured; a lost
/// update among racing threads costs nothing but a sample.
pub(super) struct Pace {
    pub(super) device_op_ns: AtomicU64,
    pub(super) sign_ns: AtomicU64,
}

impl Default for Pace {
    /// Before any measurement: a device operation takes no time and a signature 1 ms, so the
    /// CPU buffer starts at two envelopes per worker.
    fn default() -> Self {
        Pace {
            device_op_ns: AtomicU64::new(0),
            sign_ns: AtomicU64::new(1_000_000),
        }
    }
}

impl Pace {
    pub(super) fn update(avg: &AtomicU64, sample: Duration) {
        let x = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let old = avg.load(Ordering::Relaxed);
        let new = old - old / 8 + x / 8;
        avg.store(new, Ordering::Relaxed);
    }
    pub(super) fn observe_device_op(&self, took: Duration) {
        Self::update(&self.device_op_ns, took);
    }
    pub(super) fn observe_sign(&self, took: Duration) {
        Self::update(&self.sign_ns, took);
    }
    pub(super) fn device_op(&self) -> Duration {
        Duration::from_nanos(self.device_op_ns.load(Ordering::Relaxed))
    }
    pub(super) fn sign(&self) -> Duration {
        Duration::from_nanos(self.sign_ns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_buffer_covers_twice_the_signatures_made_during_one_device_operation() {
        let us = Duration::from_micros;
        // A fast device: two waiting per worker, and twice one more.
        assert_eq!(ahead_limit(2, us(40), us(450)), 6);
        // Nothing measured yet: two per worker.
        assert_eq!(ahead_limit(2, Duration::ZERO, us(1000)), 4);
        // A 2 ms network HSM: 2 workers sign 8.9 envelopes meanwhile, so 9 twice.
        assert_eq!(ahead_limit(2, us(2000), us(450)), 4 + 2 * 9);
        // A zero signature time does not divide by zero.
        assert!(ahead_limit(1, us(10), Duration::ZERO) > 2);
    }
}
