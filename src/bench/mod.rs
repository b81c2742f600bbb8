//! `hsm-signer bench …`: benchmarks that answer an operator's questions, each reporting ratios
//! measured in one run (ours against a baseline), as a table or as JSON.

pub mod batch;
pub mod combine;
pub mod custody;
pub mod health_flood;
pub mod scenario;
pub mod slashing;
pub mod threshold;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Run `op` on `threads` threads for `duration`; return completed operations per second.
pub(crate) fn throughput<F>(threads: usize, duration: Duration, op: F) -> f64
where
    F: Fn(u64) + Sync,
{
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done, op) = (&stop, &done, &op);
            s.spawn(move || {
                let mut i = (t as u64) << 40;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(i);
                    i += 1;
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A distinct 32-byte message per operation index, so no work can be cached.
pub fn message(i: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    m
}
