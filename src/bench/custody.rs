//! `bench custody`: what the custody model costs. Decrypt-on-the-token-then-sign against raw
//! blst signing with the same key, on the same threads, alternating rounds in one run.

use std::time::Duration;

use serde::Serialize;

use crate::bench::{message, throughput};
use crate::bls;
use crate::consensus::SigningRoot;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::{seal_share, sign_with_share, PublicKeyBytes, ShareId};

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct CustodyReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Device used.
    pub device: String,
    /// Its session cap.
    pub max_sessions: usize,
    /// Signing threads.
    pub threads: usize,
    /// Measured seconds per variant.
    pub seconds_each: f64,
    /// Raw blst signatures per second.
    pub raw_blst_signs_per_sec: f64,
    /// Decrypt-on-device + blst signatures per second.
    pub custody_signs_per_sec: f64,
    /// Device decryptions alone per second (the device's share of the cost).
    pub device_decrypts_per_sec: f64,
    /// custody ÷ raw.
    pub ratio: f64,
}

/// Run the benchmark for `seconds` in total on `device` with `threads` threads.
pub fn run(devices: &Devices, device: &str, threads: usize, seconds: f64) -> Result<CustodyReport> {
    let device = devices.get(device)?;
    let sk = bls::random_secret_key()?;
    let pubkey = PublicKeyBytes(bls::public_key_bytes(&sk));
    let id = ShareId::ONE;
    let share = seal_share(device, &pubkey, id, &sk)?;

    // Both paths must give the same bytes before their speed means anything.
    let m = message(42);
    let via_device = sign_with_share(device, &pubkey, &share, &SigningRoot(m))?;
    if via_device.compress() != bls::sign(&sk, &m).compress() {
        return Err(SignerError::Bls(
            "custody signature differs from blst's".into(),
        ));
    }

    const ROUNDS: u32 = 3;
    let slice = Duration::from_secs_f64((seconds / (2 * ROUNDS) as f64).max(0.05));
    let (mut raw, mut custody, mut decrypts) = (0.0, 0.0, 0.0);
    let aad = crate::keys::envelope_aad(&pubkey, id);
    let failures = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..ROUNDS {
        raw += throughput(threads, slice, |i| {
            std::hint::black_box(bls::sign(&sk, &message(i)));
        });
        custody += throughput(threads, slice, |i| {
            match sign_with_share(device, &pubkey, &share, &SigningRoot(message(i))) {
                Ok(sig) => {
                    std::hint::black_box(sig);
                }
                Err(_) => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        decrypts += throughput(threads, slice, |_| {
            if device.decrypt(&share.envelope, &aad).is_err() {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let failures = failures.into_inner();
    if failures > 0 {
        return Err(SignerError::Invalid(format!(
            "{failures} custody signatures failed during the run"
        )));
    }
    let (raw, custody) = (raw / ROUNDS as f64, custody / ROUNDS as f64);
    let decrypts = decrypts / ROUNDS as f64;
    Ok(CustodyReport {
        bench: "custody",
        device: device.name().to_owned(),
        max_sessions: device.config().max_sessions,
        threads,
        seconds_each: slice.as_secs_f64() * ROUNDS as f64,
        raw_blst_signs_per_sec: raw,
        custody_signs_per_sec: custody,
        device_decrypts_per_sec: decrypts,
        ratio: custody / raw,
    })
}

impl CustodyReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        format!(
            "custody benchmark on {} ({} sessions max), {} threads, {:.1} s per variant\n\
             {:<34}{:>12}\n{:<34}{:>12.0}\n{:<34}{:>12.0}\n{:<34}{:>12.0}\n{:<34}{:>12.3}\n",
            self.device,
            self.max_sessions,
            self.threads,
            self.seconds_each,
            "variant",
            "signs/s",
            "raw blst sign",
            self.raw_blst_signs_per_sec,
            "device decrypt + blst sign",
            self.custody_signs_per_sec,
            "device decrypt alone (ops/s)",
            self.device_decrypts_per_sec,
            "ratio (custody / raw)",
            self.ratio
        )
    }
}
