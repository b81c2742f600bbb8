//! `bench threshold`: what t-of-n costs. Signatures per second and latency for 1-of-1, 2-of-3
//! and 3-of-5 keys in one run, through the real scheduler and SoftHSM tokens, with every
//! combined signature verified before release (as in production).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::scenario::Latency;
use crate::config::Config;
use crate::consensus::SigningRoot;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::{seal_share, threshold, KeyRecord, PublicKeyBytes, ShareId, KEY_FILE_VERSION};
use crate::scheduler::{Class, Scheduler, SchedulerConfig, SignJob};

/// One key shape's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeReport {
    /// e.g. "2-of-3".
    pub shape: String,
    /// Verified signatures per second.
    pub signatures_per_sec: f64,
    /// Latency.
    pub latency: Latency,
    /// This shape's throughput ÷ 1-of-1's.
    pub ratio_to_1_of_1: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Concurrent requests kept in flight.
    pub concurrency: usize,
    /// Seconds measured per shape.
    pub seconds_each: f64,
    /// Devices used.
    pub devices: usize,
    /// Per shape.
    pub shapes: Vec<ShapeReport>,
}

/// A t-of-n key with its shares sealed on the first n devices (in memory only).
pub(crate) fn make_key(devices: &[Arc<hsm::Device>], t: usize, n: usize) -> Result<Arc<KeyRecord>> {
    let sk = crate::bls::random_secret_key()?;
    let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
    let ids: Vec<ShareId> = (1..=n as u64).filter_map(ShareId::new).collect();
    let shares = if n == 1 {
        vec![(ids[0], sk.clone())]
    } else {
        threshold::split(&sk, t, &ids)?
    };
    let records = shares
        .iter()
        .zip(devices)
        .map(|((id, share), device)| seal_share(device, &pk, *id, share))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(KeyRecord {
        version: KEY_FILE_VERSION,
        pubkey: pk,
        threshold: t as u32,
        shares: records,
        origin: "bench".into(),
        derivation_path: None,
        remote: Vec::new(),
        distributed: None,
    }))
}

/// Open the configured devices, adding SoftHSM tokens to the embedded default until there are
/// at least `want` (tokens `hsm-signer-4`, … with their own PIN files, kept for later runs).
pub(crate) fn devices_for(config: &Config, want: usize) -> Result<Vec<Arc<hsm::Device>>> {
    let mut out: Vec<Arc<hsm::Device>> = Devices::open_all(config)?.iter().cloned().collect();
    if config.is_embedded() {
        let template = config.devices[0].clone();
        for i in out.len() + 1..=want {
            let soft = config.data_dir.join("softhsm");
            let mut d = template.clone();
            d.hsm.name = format!("softhsm-{i}");
            d.hsm.token = hsm::TokenSelector::Label(format!("hsm-signer-{i}"));
            d.hsm.pin = hsm::PinSource::File(soft.join(format!("softhsm-{i}.pin")));
            d.so_pin_file = Some(soft.join(format!("softhsm-{i}.so-pin")));
            let extra = Config {
                devices: vec![d],
                ..config.clone()
            };
            crate::devices::init_devices(&extra, None)?;
            out.push(Arc::new(hsm::Device::open(extra.devices[0].hsm.clone())?));
        }
    }
    if out.len() < want {
        return Err(SignerError::Config(format!(
            "bench threshold needs {want} devices, {} configured",
            out.len()
        )));
    }
    Ok(out)
}

/// Run for `seconds` per shape with `concurrency` requests in flight.
pub fn run(config: &Config, seconds: f64, concurrency: usize) -> Result<ThresholdReport> {
    let devices = devices_for(config, 5)?;
    let scheduler = Scheduler::with_config(
        Devices::from_open(devices.clone()),
        SchedulerConfig::default(),
        Arc::default(),
    );
    let rt =
        crate::scheduler::runtime().map_err(|e| SignerError::System(format!("runtime: {e}")))?;
    let mut shapes = Vec::new();
    let mut base = 0.0;
    for (t, n) in [(1usize, 1usize), (2, 3), (3, 5)] {
        let keys: Vec<Arc<KeyRecord>> = (0..16)
            .map(|_| make_key(&devices, t, n))
            .collect::<Result<_>>()?;
        let (rate, lat) = rt.block_on(async {
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(seconds);
            let mut tasks = Vec::new();
            for w in 0..concurrency {
                let (s, keys) = (scheduler.clone(), keys.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = w as u64;
                    while Instant::now() < end {
                        let mut root = [0u8; 32];
                        root[..8].copy_from_slice(&i.to_le_bytes());
                        let t0 = Instant::now();
                        let job = SignJob {
                            arrived: None,
                            key: keys[i as usize % keys.len()].clone(),
                            signing_root: SigningRoot(root),
                            class: Class::Attestation,
                            deadline: None,
                            freshness: 0,
                            request: None,
                        };
                        if s.sign(job).await.is_ok() {
                            lat.push(t0.elapsed());
                        }
                        i += concurrency as u64;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap_or_default());
            }
            (all.len() as f64 / start.elapsed().as_secs_f64(), all)
        });
        if t == 1 {
            base = rate;
        }
        shapes.push(ShapeReport {
            shape: format!("{t}-of-{n}"),
            signatures_per_sec: rate,
            latency: Latency::of(&lat),
            ratio_to_1_of_1: rate / base.max(1e-9),
        });
    }
    Ok(ThresholdReport {
        bench: "threshold",
        concurrency,
        seconds_each: seconds,
        devices: devices.len(),
        shapes,
    })
}

impl ThresholdReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "threshold benchmark: {} devices, {} requests in flight, {:.1} s per shape, every signature verified\n{:<8} {:>10} {:>10} {:>10} {:>12}\n",
            self.devices, self.concurrency, self.seconds_each, "shape", "sigs/s", "p50 ms", "p99 ms", "÷ 1-of-1"
        );
        for s in &self.shapes {
            out += &format!(
                "{:<8} {:>10.0} {:>10.2} {:>10.2} {:>12.3}\n",
                s.shape,
                s.signatures_per_sec,
                s.latency.p50_ms,
                s.latency.p99_ms,
                s.ratio_to_1_of_1
            );
        }
        out
    }
}
