//! `bench scenario`: the seed's situation (Lighthouse issue #3963). At an epoch boundary N
//! validators' selection proofs, builder registrations and attestations arrive at once, with one
//! block proposal (and a few more spread over the burst). Measured through the real scheduler
//! and real SoftHSM tokens, in process (no HTTP), for our priorities and for a FIFO baseline
//! (same code path, priorities off), on plain SoftHSM and on SoftHSM slowed down to stand in for
//! a network HSM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::metrics::Metrics;
use crate::config::Config;
use crate::consensus::SelectionProof;
use crate::consensus::SigningRoot;
use crate::devices::Devices;
use crate::duties::ProofCache;
use crate::error::{Result, SignerError};
use crate::keys::{seal_share, KeyRecord, PublicKeyBytes, ShareId};
use crate::scheduler::{Class, Scheduler, SchedulerConfig, SignJob};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Validators (each signs one proof, one registration and one attestation).
    pub validators: usize,
    /// Blocks proposed during the burst (the first at its start).
    pub blocks: usize,
    /// Time between two of those blocks.
    pub block_interval: Duration,
    /// Bursts per variant, taken in turn (ours, FIFO, ours + precompute; with precompute every
    /// other round the other way round); their samples are pooled, so a percentile rests on
    /// `rounds × blocks` blocks.
    pub rounds: usize,
    /// Simulated network HSM: latency per operation.
    pub slow_latency: Duration,
    /// Simulated network HSM: sessions per device.
    pub slow_sessions: usize,
    /// Also run our scheduler with selection proofs precomputed (`crate::duties`).
    pub precompute: bool,
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Latency {
    /// Summarise samples in milliseconds (sorts them).
    pub(crate) fn of_ms(samples: &mut [f64]) -> Latency {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            samples[quantile_index(samples.len(), q)]
        };
        Latency {
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: samples.last().copied().unwrap_or(0.0),
        }
    }

    /// Summarise samples.
    pub fn of(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Latency::of_ms(&mut ms)
    }
}

/// One variant's results.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// `ours`, `fifo` or `ours+precompute`.
    pub scheduler: &'static str,
    /// Block latency under the burst.
    pub block: Latency,
    /// Attestation latency under the burst.
    pub attestation: Latency,
    /// Signatures per second over the whole burst.
    pub throughput_per_sec: f64,
    /// Requests refused (should be 0: deadlines are disabled for the benchmark).
    pub refused: usize,
    /// Bulk signatures the rescue worker made because the bulk workers were starved.
    pub rescued: u64,
    /// Block and attestation p99 of each round on its own, milliseconds: how far a variant
    /// differs from itself between bursts, the yardstick for a difference between variants.
    pub p99_per_round: Vec<(f64, f64)>,
    /// Raw samples for the plot (block, attestation), milliseconds.
    #[serde(skip)]
    pub samples: (Vec<f64>, Vec<f64>),
    /// With precompute: the share of selection-proof requests answered from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_proof_hit_rate: Option<f64>,
}

/// One device setup (plain or simulated network HSM).
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// Description.
    pub devices: String,
    /// Block latency with nothing else running (before or after the bursts: the faster).
    pub idle_block: Latency,
    /// Our scheduler.
    pub ours: VariantReport,
    /// The FIFO baseline.
    pub fifo: VariantReport,
    /// Our scheduler with selection proofs precomputed (`--precompute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompute: Option<VariantReport>,
    /// block p99 under burst ÷ idle block p50 (target ≤ 2).
    pub ours_block_p99_over_idle: f64,
    /// FIFO block p99 ÷ ours (target ≥ 50 on the network HSM).
    pub fifo_over_ours_block_p99: f64,
    /// ours ÷ FIFO throughput (target ≥ 0.95).
    pub throughput_ours_over_fifo: f64,
    /// With precompute: its block p99 against ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompute_block_p99: Option<NoWorse>,
    /// With precompute: its attestation p99 against ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompute_attestation_p99: Option<NoWorse>,
}

/// How much worse a variant's p99 may be and still count as no worse: 10 %. A p99 is a
/// tail of a few samples and moves between bursts of the same variant by more than that
/// (`p99_per_round`), so "no worse" can only mean "not worse beyond a margin, with
/// confidence"; 10 % of a block's p99 under the burst is 0.1 ms on SoftHSM, far inside the
/// 2 × idle target.
pub(crate) const NO_WORSE_MARGIN: f64 = 0.10;

/// One variant's p99 against another's, in the same run, with its uncertainty.
#[derive(Debug, Clone, Serialize)]
pub struct NoWorse {
    /// p99 of the variant ÷ p99 of the reference, as measured.
    pub ratio: f64,
    /// One-sided 95 % upper confidence bound of that ratio: the 95th percentile of the ratio
    /// over 1,000 bootstrap resamples, each burst rebuilt from random stretches of a tenth of
    /// its own samples (in the order they were taken).
    pub upper95: f64,
    /// `upper95 ≤ 1 + NO_WORSE_MARGIN`: no worse, with 95 % confidence, beyond the margin.
    pub no_worse: bool,
}

/// Where the `q` quantile of `len` sorted samples (`len` ≥ 1) stands.
fn quantile_index(len: usize, q: f64) -> usize {
    ((len as f64 * q).ceil() as usize).clamp(1, len) - 1
}

/// The p99 as [`Latency::of_ms`] picks it, without sorting everything.
fn p99_of(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = quantile_index(v.len(), 0.99);
    *v.select_nth_unstable_by(i, f64::total_cmp).1
}

/// One kind of sample of each burst.
fn bursts(rounds: &[Round], pick: fn(&Round) -> &[f64]) -> Vec<&[f64]> {
    rounds.iter().map(pick).collect()
}

/// Compare `variant`'s p99 with `reference`'s; each is a list of bursts' samples.
fn no_worse(reference: &[&[f64]], variant: &[&[f64]]) -> NoWorse {
    // splitmix64: a fixed seed, so a report can be recomputed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let pooled = |bursts: &[&[f64]]| bursts.concat();
    let ratio = p99_of(&mut pooled(variant)) / p99_of(&mut pooled(reference)).max(1e-9);
    // Each burst is rebuilt from stretches of a tenth of its samples at random starts, wrapping
    // round (a circular block bootstrap): a slow spell of the host lasts a few hundred
    // milliseconds and slows the blocks in it together, and resampling samples one by one
    // would treat them as independent and understate how far the p99 can move.
    let mut resample = |bursts: &[&[f64]], buf: &mut Vec<f64>| {
        buf.clear();
        for b in bursts.iter().filter(|b| !b.is_empty()) {
            let (n, end) = (b.len(), buf.len() + b.len());
            while buf.len() < end {
                let start = next(n);
                buf.extend((0..n.div_ceil(10)).map(|j| b[(start + j) % n]));
            }
            buf.truncate(end);
        }
        p99_of(buf)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = (0..1000)
        .map(|_| resample(variant, &mut a) / resample(reference, &mut b).max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let upper95 = ratios[949];
    NoWorse {
        ratio,
        upper95,
        no_worse: upper95 <= 1.0 + NO_WORSE_MARGIN,
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Validators.
    pub validators: usize,
    /// Requests in the burst.
    pub requests: usize,
    /// Blocks among them.
    pub blocks: usize,
    /// Bursts per variant, pooled.
    pub rounds: usize,
    /// CPU signing threads.
    pub cpu_workers: usize,
    /// Per device setup.
    pub setups: Vec<SetupReport>,
}

pub(crate) fn bench_config(fifo: bool) -> SchedulerConfig {
    SchedulerConfig {
        fifo,
        // Every job must run in both variants so that throughput compares like with like.
        max_queue_time: [Duration::from_secs(600); 5],
        ..SchedulerConfig::default()
    }
}

/// Open the configured devices as `latency`/`sessions` say (None: as configured).
fn open_devices(config: &Config, slow: Option<(Duration, usize)>) -> Result<Devices> {
    let mut out = Vec::new();
    for d in &config.devices {
        let mut cfg = d.hsm.clone();
        if let Some((latency, sessions)) = slow {
            cfg.simulated_latency = Some(latency);
            cfg.max_sessions = sessions;
        }
        out.push(Arc::new(hsm::Device::open(cfg)?));
    }
    Ok(Devices::from_open(out))
}

/// Random keys sealed round-robin on the devices, kept in memory only.
fn make_keys(devices: &Devices, n: usize) -> Result<Vec<Arc<KeyRecord>>> {
    let devs: Vec<_> = devices.iter().cloned().collect();
    let id = ShareId::ONE;
    (0..n)
        .map(|i| {
            let sk = crate::bls::random_secret_key()?;
            let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
            let share = seal_share(&devs[i % devs.len()], &pk, id, &sk)?;
            Ok(Arc::new(KeyRecord::whole(pk, share, "bench")))
        })
        .collect()
}

fn root(i: usize, salt: u8) -> [u8; 32] {
    let mut r = [salt; 32];
    r[..8].copy_from_slice(&(i as u64).to_le_bytes());
    r
}

async fn idle_blocks(devices: &Devices, keys: &[Arc<KeyRecord>]) -> Latency {
    let scheduler = Scheduler::with_config(devices.clone(), bench_config(false), Arc::default());
    let mut samples = Vec::new();
    // 200 blocks after 5 to warm up: the denominator of the ratio must not be noise.
    for i in 0..205 {
        let t = Instant::now();
        let _ = scheduler
            .sign(SignJob {
                arrived: None,
                key: keys[i % keys.len()].clone(),
                signing_root: SigningRoot(root(i, 0xb0)),
                class: Class::Block,
                deadline: None,
                freshness: 0,
                request: None,
            })
            .await;
        samples.push(t.elapsed());
    }
    Latency::of(&samples[5..])
}

async fn burst(
    devices: &Devices,
    keys: &[Arc<KeyRecord>],
    variant: Variant,
    blocks: usize,
    block_interval: Duration,
    lead_in: bool,
) -> Round {
    let fifo = variant == Variant::Fifo;
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::with_config(
        devices.clone(),
        bench_config(fifo),
        metrics.scheduler.clone(),
    );
    // With `--precompute` every variant's burst follows the same lead-in, the epoch's proofs
    // signed as background work (the service does it at the mid-slot ticks of the slots
    // before; here back to back, seconds of both cores), and only the precompute variant keeps
    // them. After such a lead-in the block tail of the very same burst measured 5-10 % slower
    // at p99 than without one, and a busy loop in its place did the same: the host's doing
    // after seconds of full load, not precompute's. With it on every variant, the comparison
    // sees what precompute changes in the burst itself.
    let proofs = if lead_in {
        Some(precompute_proofs(&scheduler, keys, &metrics).await)
    } else {
        None
    }
    .filter(|_| variant == Variant::Precompute);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(keys.len() * 3 + blocks);
    // Blocks: one at the start, then one every `block_interval` while the herd is being
    // signed. Spawned before the herd so the harness itself does not queue the first one
    // behind 30,000 tasks.
    for b in 0..blocks {
        let (s, key) = (scheduler.clone(), keys[b % keys.len()].clone());
        let delay = block_interval * b as u32;
        tasks.push((
            Class::Block,
            tokio::spawn(async move {
                tokio::time::sleep_until((start + delay).into()).await;
                let t = Instant::now();
                let r = s
                    .sign(SignJob {
                        arrived: None,
                        key,
                        signing_root: SigningRoot(root(b, 0xbb)),
                        class: Class::Block,
                        deadline: None,
                        freshness: 0,
                        request: None,
                    })
                    .await;
                (t.elapsed(), r.is_ok())
            }),
        ));
    }
    // The herd, in the order a validator client fires it. Submitted from inside the runtime,
    // yielding every 64 submissions as a server's connection tasks would take them off their
    // sockets: 30,000 tasks spawned at once from outside the runtime all land in tokio's global
    // FIFO, and a reply's wake-up would measure that queue rather than the scheduler.
    let herd = {
        let (scheduler, keys, proofs) = (scheduler.clone(), keys.to_vec(), proofs.clone());
        tokio::spawn(async move {
            let mut herd = Vec::with_capacity(keys.len() * 3);
            for (class, salt) in [
                (Class::Aggregate, 1u8),
                (Class::Admin, 2),
                (Class::Attestation, 3),
            ] {
                for (i, key) in keys.iter().enumerate() {
                    let (s, key) = (scheduler.clone(), key.clone());
                    let cache = match class {
                        Class::Aggregate => proofs.clone(),
                        _ => None,
                    };
                    herd.push((
                        class,
                        tokio::spawn(async move {
                            let t = Instant::now();
                            let ok = match cache {
                                // The validator client's AGGREGATION_SLOT: from the cache, else
                                // signed live.
                                Some(cache) => {
                                    let proof = bench_proof(i, 0);
                                    let root = proof.signing_root();
                                    cache.lookup(&key.pubkey, &proof, &root).is_some()
                                        || s.sign(SignJob {
                                            arrived: None,
                                            key,
                                            signing_root: root,
                                            class,
                                            deadline: None,
                                            freshness: 0,
                                            request: None,
                                        })
                                        .await
                                        .is_ok()
                                }
                                None => s
                                    .sign(SignJob {
                                        arrived: None,
                                        key,
                                        signing_root: SigningRoot(root(i, salt)),
                                        class,
                                        deadline: None,
                                        freshness: 0,
                                        request: None,
                                    })
                                    .await
                                    .is_ok(),
                            };
                            (t.elapsed(), ok)
                        }),
                    ));
                    if herd.len() % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            herd
        })
    };
    tasks.extend(herd.await.unwrap_or_default());
    // With precompute, the proofs of the slot entering the lookahead window (a 32nd of the
    // validators) are signed during the burst, as the service does at every mid-slot:
    // background work that must not slow the foreground.
    if proofs.is_some() {
        for (i, key) in keys.iter().enumerate().take(keys.len().div_ceil(32)) {
            let (s, key) = (scheduler.clone(), key.clone());
            tasks.push((
                Class::Background,
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = s
                        .sign(SignJob {
                            arrived: None,
                            key,
                            signing_root: bench_proof(i, 1).signing_root(),
                            class: Class::Background,
                            deadline: None,
                            freshness: 0,
                            request: None,
                        })
                        .await;
                    (t.elapsed(), r.is_ok())
                }),
            ));
        }
    }
    let total = tasks.len();
    let (mut block, mut att, mut refused) = (Vec::new(), Vec::new(), 0);
    for (class, t) in tasks {
        let (latency, ok) = t.await.unwrap_or((Duration::ZERO, false));
        refused += usize::from(!ok);
        match class {
            Class::Block => block.push(latency),
            Class::Attestation => att.push(latency),
            _ => {}
        }
    }
    let ms = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>();
    let m = &metrics.precompute;
    Round {
        elapsed: start.elapsed(),
        requests: total,
        refused,
        block: ms(&block),
        attestation: ms(&att),
        rescued: metrics.scheduler.starved_rescued_total(),
        hits: m.hits.load(std::sync::atomic::Ordering::Relaxed),
        misses: m.misses.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// One burst of one variant.
#[derive(Debug, Default)]
struct Round {
    elapsed: Duration,
    requests: usize,
    refused: usize,
    rescued: u64,
    /// Latencies in milliseconds.
    block: Vec<f64>,
    attestation: Vec<f64>,
    /// Selection proofs answered from the cache, and signed live.
    hits: u64,
    misses: u64,
}

impl VariantReport {
    /// One variant's rounds, pooled.
    fn pooled(scheduler: &'static str, rounds: Vec<Round>, precompute: bool) -> VariantReport {
        let mut all = Round::default();
        let p99_per_round = rounds
            .iter()
            .map(|r| {
                let (mut b, mut a) = (r.block.clone(), r.attestation.clone());
                (Latency::of_ms(&mut b).p99_ms, Latency::of_ms(&mut a).p99_ms)
            })
            .collect();
        for r in rounds {
            all.elapsed += r.elapsed;
            all.requests += r.requests;
            all.refused += r.refused;
            all.rescued += r.rescued;
            all.block.extend(r.block);
            all.attestation.extend(r.attestation);
            all.hits += r.hits;
            all.misses += r.misses;
        }
        let (mut block, mut att) = (all.block.clone(), all.attestation.clone());
        VariantReport {
            scheduler,
            selection_proof_hit_rate: precompute
                .then(|| all.hits as f64 / (all.hits + all.misses).max(1) as f64),
            block: Latency::of_ms(&mut block),
            attestation: Latency::of_ms(&mut att),
            throughput_per_sec: all.requests as f64 / all.elapsed.as_secs_f64().max(1e-9),
            refused: all.refused,
            rescued: all.rescued,
            p99_per_round,
            samples: (all.block, all.attestation),
        }
    }
}

/// Validator `i`'s selection proof `slots_ahead` epochs from the burst (a fake chain's root).
fn bench_proof(i: usize, slots_ahead: u64) -> SelectionProof {
    SelectionProof {
        slot: 32 * (1000 + slots_ahead) + (i as u64 % 32),
        subcommittee_index: None,
        fork_version: [0; 4],
        genesis_validators_root: [0x4b; 32],
    }
}

/// Before the burst, in idle time (the service's mid-slot ticks of the slots before it): every
/// validator's proof, signed as background work into a cache.
async fn precompute_proofs(
    scheduler: &Scheduler,
    keys: &[Arc<KeyRecord>],
    metrics: &Arc<Metrics>,
) -> Arc<ProofCache> {
    let cache = Arc::new(ProofCache::new(metrics.precompute.clone()));
    let mut tasks = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let (s, key, cache) = (scheduler.clone(), key.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            let proof = bench_proof(i, 0);
            let root = proof.signing_root();
            let pubkey = key.pubkey;
            if let Ok(sig) = s
                .sign(SignJob {
                    arrived: None,
                    key,
                    signing_root: root,
                    class: Class::Background,
                    deadline: None,
                    freshness: 0,
                    request: None,
                })
                .await
            {
                cache.insert(pubkey, proof, root, sig.compress());
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    cache
}

/// One variant's burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Ours,
    Fifo,
    Precompute,
}

/// The bursts of round `round`, in the order they run: ours, FIFO, then ours + precompute if
/// asked for, and with precompute every other round the other way round. A burst right after
/// FIFO's (its longer stretch of full load) measured a 5 % slower block p99 than the same
/// variant's burst before it; over an even number of rounds both of the variants compared
/// follow FIFO equally often, and the comparison does not take that for precompute's doing.
fn round_order(round: usize, precompute: bool) -> &'static [Variant] {
    use Variant::{Fifo, Ours, Precompute};
    match (precompute, round % 2) {
        (false, _) => &[Ours, Fifo],
        (true, 0) => &[Ours, Fifo, Precompute],
        (true, _) => &[Precompute, Fifo, Ours],
    }
}

/// Run the scenario on the configured devices (plain, then simulated network HSM).
pub fn run(config: &Config, opts: &ScenarioOptions) -> Result<ScenarioReport> {
    let rt =
        crate::scheduler::runtime().map_err(|e| SignerError::System(format!("runtime: {e}")))?;
    let plain = open_devices(config, None)?;
    eprintln!(
        "sealing {} keys on {} devices…",
        opts.validators,
        config.devices.len()
    );
    let keys = make_keys(&plain, opts.validators)?;
    let mut setups = Vec::new();
    for slow in [None, Some((opts.slow_latency, opts.slow_sessions))] {
        let (devices, label) = match slow {
            None => (
                plain.clone(),
                format!("{} SoftHSM tokens", config.devices.len()),
            ),
            Some((latency, sessions)) => (
                open_devices(config, slow)?,
                format!(
                    "{} simulated network HSMs ({} ms, {} sessions each)",
                    config.devices.len(),
                    latency.as_millis(),
                    sessions
                ),
            ),
        };
        eprintln!(
            "{label}: idle blocks, the bursts with our scheduler and with FIFO, idle blocks…"
        );
        let idle_before = rt.block_on(idle_blocks(&devices, &keys));
        let (blocks, every) = (opts.blocks, opts.block_interval);
        let (mut ours, mut fifo, mut pre) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..opts.rounds.max(1) {
            for &variant in round_order(round, opts.precompute) {
                let lead_in = opts.precompute;
                let r = rt.block_on(burst(&devices, &keys, variant, blocks, every, lead_in));
                match variant {
                    Variant::Ours => ours.push(r),
                    Variant::Fifo => fifo.push(r),
                    Variant::Precompute => pre.push(r),
                }
            }
        }
        let compare = |pick: fn(&Round) -> &[f64]| {
            opts.precompute
                .then(|| no_worse(&bursts(&ours, pick), &bursts(&pre, pick)))
        };
        let precompute_block_p99 = compare(|r| r.block.as_slice());
        let precompute_attestation_p99 = compare(|r| r.attestation.as_slice());
        // The idle latency is measured before and after the bursts, and the faster of the two
        // kept: a slow spell on the host during one of them (seen: 0.74 and 0.78 ms against
        // the usual 0.52) would otherwise flatter the ratio to it.
        let idle_after = rt.block_on(idle_blocks(&devices, &keys));
        let idle_block = if idle_after.p50_ms < idle_before.p50_ms {
            idle_after
        } else {
            idle_before
        };
        let ours = VariantReport::pooled("ours", ours, false);
        let fifo = VariantReport::pooled("fifo", fifo, false);
        let precompute = opts
            .precompute
            .then(|| VariantReport::pooled("ours+precompute", pre, true));
        setups.push(SetupReport {
            devices: label,
            ours_block_p99_over_idle: ours.block.p99_ms / idle_block.p50_ms.max(1e-6),
            fifo_over_ours_block_p99: fifo.block.p99_ms / ours.block.p99_ms.max(1e-6),
            throughput_ours_over_fifo: ours.throughput_per_sec / fifo.throughput_per_sec.max(1e-9),
            precompute_block_p99,
            precompute_attestation_p99,
            idle_block,
            ours,
            fifo,
            precompute,
        });
    }
    Ok(ScenarioReport {
        bench: "scenario",
        validators: opts.validators,
        requests: opts.validators * 3 + opts.blocks,
        blocks: opts.blocks,
        rounds: opts.rounds.max(1),
        cpu_workers: SchedulerConfig::default().cpu_workers,
        setups,
    })
}

impl ScenarioReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario: {} validators, {} requests at an epoch boundary ({} of them blocks), {} CPU signing threads; {} bursts per variant, pooled\n",
            self.validators, self.requests, self.blocks, self.cpu_workers, self.rounds
        );
        for s in &self.setups {
            out += &format!(
                "\n{} (idle block p50 {:.2} ms)\n",
                s.devices, s.idle_block.p50_ms
            );
            out += &format!(
                "{:<15} {:>10} {:>10} {:>10} {:>12} {:>10} {:>8} {:>8}\n",
                "",
                "block p50",
                "block p99",
                "block max",
                "attest. p99",
                "signs/s",
                "refused",
                "rescued"
            );
            for v in [Some(&s.ours), Some(&s.fifo), s.precompute.as_ref()]
                .into_iter()
                .flatten()
            {
                out += &format!(
                    "{:<15} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>10.1}ms {:>10.0} {:>8} {:>8}\n",
                    v.scheduler,
                    v.block.p50_ms,
                    v.block.p99_ms,
                    v.block.max_ms,
                    v.attestation.p99_ms,
                    v.throughput_per_sec,
                    v.refused,
                    v.rescued
                );
            }
            out += &format!(
                "ours block p99 / idle block = {:.2} (target <= 2); FIFO / ours block p99 = {:.0}x; throughput ours / FIFO = {:.3} (target >= 0.95)\n",
                s.ours_block_p99_over_idle, s.fifo_over_ours_block_p99, s.throughput_ours_over_fifo
            );
            for v in [Some(&s.ours), s.precompute.as_ref()].into_iter().flatten() {
                let (b, a): (Vec<f64>, Vec<f64>) = v.p99_per_round.iter().copied().unzip();
                let range = |x: &[f64]| {
                    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (lo, hi)
                };
                let ((blo, bhi), (alo, ahi)) = (range(&b), range(&a));
                out += &format!(
                    "{}: p99 of single bursts ranges over block {blo:.2}-{bhi:.2} ms, attestation {alo:.1}-{ahi:.1} ms\n",
                    v.scheduler
                );
            }
            if let Some(p) = &s.precompute {
                out += &format!(
                    "ours+precompute: selection proofs from the cache {:.1}%; block p99 {:.2} vs {:.2} ms, attestation p99 {:.1} vs {:.1} ms without precompute\n",
                    p.selection_proof_hit_rate.unwrap_or(0.0) * 100.0,
                    p.block.p99_ms,
                    s.ours.block.p99_ms,
                    p.attestation.p99_ms,
                    s.ours.attestation.p99_ms
                );
            }
            for (what, c) in [
                ("block", &s.precompute_block_p99),
                ("attestation", &s.precompute_attestation_p99),
            ] {
                if let Some(c) = c {
                    out += &format!(
                        "precompute {what} p99 / without = {:.3}, 95% upper bound {:.3}: {} (margin {:.0}%)\n",
                        c.ratio,
                        c.upper95,
                        if c.no_worse { "no worse" } else { "NOT shown no worse" },
                        NO_WORSE_MARGIN * 100.0
                    );
                }
            }
        }
        out
    }

    /// An SVG of the latency distributions: per setup, the CDF of block and attestation
    /// latency for ours and FIFO on a log time axis.
    pub(crate) fn svg(&self) -> String {
        let mut svg = svg_open(PANEL_HEIGHT * self.setups.len() as f64 + 40.0);
        for (k, s) in self.setups.iter().enumerate() {
            // The target: a block under the burst within twice the idle block latency.
            let target = 2.0 * s.idle_block.p50_ms;
            cdf_panel(
                &mut svg,
                30.0 + k as f64 * PANEL_HEIGHT,
                &format!("{}: latency distribution under the burst", s.devices),
                Some((target, &format!("2 x idle block ({target:.2} ms)"))),
                &[
                    (&s.ours.samples.0, "#d62728", "block, ours", "0"),
                    (&s.fifo.samples.0, "#d62728", "block, FIFO", "6,4"),
                    (&s.ours.samples.1, "#1f77b4", "attestation, ours", "0"),
                    (&s.fifo.samples.1, "#1f77b4", "attestation, FIFO", "6,4"),
                ],
            );
        }
        svg + "</svg>\n"
    }
}

const SVG_WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 300.0;

fn svg_open(h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

/// One series of a CDF panel: samples (ms), colour, name, dash pattern.
pub(crate) type Series<'a> = (&'a [f64], &'a str, &'a str, &'a str);

/// One panel at `top`: the CDF of each series on a log time axis (0.1 ms to 100 s), with a
/// target line where given.
fn cdf_panel(
    svg: &mut String,
    top: f64,
    title: &str,
    target: Option<(f64, &str)>,
    series: &[Series<'_>],
) {
    let (w, ph, pad) = (SVG_WIDTH, PANEL_HEIGHT, 60.0);
    let (lo, hi) = (0.1f64.log10(), 100_000f64.log10());
    let (x0, x1, y0, y1) = (pad, w - 20.0, top + ph - 50.0, top + 20.0);
    *svg += &format!(
        "<text x=\"{pad}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n",
        top + 10.0
    );
    *svg += &format!("<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n");
    for (f, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        let y = y0 - f * (y0 - y1);
        *svg += &format!("<line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n", x0 - 5.0, y + 4.0);
    }
    *svg += &format!("<text x=\"{}\" y=\"{}\" transform=\"rotate(-90 {} {})\" text-anchor=\"middle\">fraction done</text>\n", x0 - 35.0, (y0 + y1) / 2.0, x0 - 35.0, (y0 + y1) / 2.0);
    *svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (ms, log scale)</text>\n",
        (x0 + x1) / 2.0,
        y0 + 32.0
    );
    for e in -1..=5 {
        let x = x0 + (e as f64 - lo) / (hi - lo) * (x1 - x0);
        let label = if e < 0 {
            "0.1".to_owned()
        } else {
            format!("{}", 10u64.pow(e as u32))
        };
        *svg += &format!("<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n", y1, y0 + 15.0);
    }
    if let Some((target, label)) = target {
        let tx = x0 + (target.log10().clamp(lo, hi) - lo) / (hi - lo) * (x1 - x0);
        *svg += &format!("<line x1=\"{tx:.1}\" y1=\"{y0}\" x2=\"{tx:.1}\" y2=\"{y1}\" stroke=\"#2ca02c\" stroke-dasharray=\"2,3\"/><text x=\"{:.1}\" y=\"{}\" fill=\"#2ca02c\">{label}</text>\n", tx + 4.0, y1 + 12.0);
    }
    for (j, (samples, color, name, dash)) in series.iter().enumerate() {
        let mut v: Vec<f64> = samples.iter().map(|x| x.max(0.1)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len().max(1) as f64;
        let step = (v.len() / 400).max(1);
        let mut pts = String::new();
        for (i, x) in v
            .iter()
            .enumerate()
            .step_by(step)
            .chain(v.iter().enumerate().next_back())
        {
            let px = x0 + (x.log10().clamp(lo, hi) - lo) / (hi - lo) * (x1 - x0);
            let py = y0 - (i + 1) as f64 / n * (y0 - y1);
            pts += &format!("{px:.1},{py:.1} ");
        }
        *svg += &format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{pts}\"/>\n");
        let (lx, ly) = (x1 - 230.0, y0 - 75.0 + 15.0 * j as f64);
        *svg += &format!("<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n", lx + 30.0, lx + 35.0, ly + 4.0);
    }
}

/// A one-panel SVG of latency CDFs.
pub(crate) fn cdf_svg(title: &str, target: Option<(f64, &str)>, series: &[Series<'_>]) -> String {
    let mut svg = svg_open(PANEL_HEIGHT + 40.0);
    cdf_panel(&mut svg, 30.0, title, target, series);
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` latencies with a tail: `scale` ms mostly, up to twice that for the slowest few.
    fn tailed(n: usize, scale: f64, salt: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let x = ((i * 7919 + salt * 104_729) % n) as f64 / n as f64;
                scale * (1.0 + x.powi(8))
            })
            .collect()
    }

    #[test]
    fn the_same_distribution_is_no_worse_and_a_slower_one_is_not() {
        let r: Vec<Vec<f64>> = (0..3).map(|k| tailed(100, 1.0, k)).collect();
        let reference: Vec<&[f64]> = r.iter().map(Vec::as_slice).collect();
        let same = no_worse(&reference, &reference);
        assert_eq!(same.ratio, 1.0);
        assert!(same.upper95 >= 1.0 && same.no_worse, "{same:?}");
        let s: Vec<Vec<f64>> = (0..3).map(|k| tailed(100, 1.3, k + 5)).collect();
        let slower: Vec<&[f64]> = s.iter().map(Vec::as_slice).collect();
        let worse = no_worse(&reference, &slower);
        assert!(worse.ratio > 1.2 && !worse.no_worse, "{worse:?}");
        // And the other way round: faster is no worse.
        assert!(no_worse(&slower, &reference).no_worse);
    }

    #[test]
    fn a_slow_spell_is_resampled_whole() {
        // Five samples three times as slow: together in one spell, or spread over the burst.
        // Fewer than the nine that make a p99 of 900, so the ratio as measured is the same;
        // a resample that picks the spell twice or more moves the p99 a long way, which
        // resampling sample by sample would almost never do.
        let r: Vec<Vec<f64>> = (0..3).map(|k| tailed(300, 1.0, k)).collect();
        let with_spell = |at: [usize; 5]| {
            let mut v = r.clone();
            for i in at {
                v[0][i] = 3.0;
            }
            v
        };
        let (spell, spread) = (
            with_spell([100, 101, 102, 103, 104]),
            with_spell([0, 60, 120, 180, 240]),
        );
        fn slices(v: &[Vec<f64>]) -> Vec<&[f64]> {
            v.iter().map(Vec::as_slice).collect()
        }
        let reference = slices(&r);
        let (spell, spread) = (
            no_worse(&reference, &slices(&spell)),
            no_worse(&reference, &slices(&spread)),
        );
        assert_eq!(spell.ratio, spread.ratio);
        assert!(spell.upper95 > 1.3 * spread.upper95, "{spell:?} {spread:?}");
    }

    #[test]
    fn ours_and_precompute_follow_fifo_equally_often() {
        let order: Vec<Variant> = (0..4).flat_map(|r| round_order(r, true).to_vec()).collect();
        let after_fifo = |v| {
            order
                .windows(2)
                .filter(|w| w == &[Variant::Fifo, v])
                .count()
        };
        assert_eq!(after_fifo(Variant::Ours), 2);
        assert_eq!(after_fifo(Variant::Precompute), 2);
        for v in [Variant::Ours, Variant::Fifo, Variant::Precompute] {
            assert_eq!(order.iter().filter(|&&x| x == v).count(), 4);
        }
        assert_eq!(round_order(1, false), &[Variant::Ours, Variant::Fifo]);
    }

    #[test]
    fn the_p99_is_picked_as_the_report_picks_it() {
        let mut v: Vec<f64> = (1..=300).map(f64::from).rev().collect();
        let expected = Latency::of_ms(&mut v.clone()).p99_ms;
        assert_eq!(p99_of(&mut v), expected);
        assert_eq!(expected, 297.0);
    }
}
