//! `hsm-signer bench slashing-longrun`: a month of a signer's slashing-protection traffic in fast
//! forward, with pruning on, to show that the database stays bounded and that the check does not
//! slow down as it ages: size and rows at the end, and check latency at the end of day 1 against
//! the end of the last day, on SQLite and PostgreSQL.
//!
//! Everything goes through the real service ([`SlashingProtection`]): its writer, group commit,
//! its rules and stores. Each epoch, every validator attests (source `e-1`, target `e`) and one
//! validator a slot proposes a block (the proposer drawn at random among ours, as if they were
//! the whole network). Most epochs are fast-forwarded: attestations in groups of `batch` (as the
//! batch endpoint hands them to the writer), several groups in flight, blocks one by one beside
//! them. The last `measure_epochs` of day 1 and of the last day are measured the way the signer
//! is used one request at a time: `concurrency` callers each checking one attestation after
//! another, and the slot's block from a caller of its own, every latency recorded. A pruning
//! pass (the background pruner's own pass) starts each `prune_interval` of simulated time, 6.4
//! minutes an epoch, and runs beside the traffic. Fast-forwarding compresses time some 200-fold
//! but not the passes, which then overlap a share of the checks far larger than on a chain: the
//! measured checks are reported apart by whether a pass ran during them, and the day-1 against
//! last-day ratio (the database's age) is taken on those during which none did.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::scenario::Latency;
use super::slashing::{pubkey, signing_root, Store};
use crate::slashing::{Footprint, Options, Proposal, Root, SlashingError, SlashingProtection};

/// Mainnet's epoch: 32 slots of 12 s.
const EPOCH: Duration = Duration::from_secs(32 * 12);
/// Epochs in a day on mainnet.
pub(crate) const EPOCHS_PER_DAY: u64 = 225;
const SLOTS_PER_EPOCH: u64 = 32;
const GVR: Root = [0x4c; 32];
/// Attestation groups handed to the writer at once while fast-forwarding: enough that the
/// next one is queued when a transaction commits.
const GROUPS_IN_FLIGHT: usize = 4;

/// What to simulate.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LongrunOptions {
    /// Validators.
    pub validators: usize,
    /// Simulated days.
    pub days: u64,
    /// Epochs kept per validator by pruning.
    pub keep_epochs: u64,
    /// Simulated time between two pruning passes.
    #[serde(serialize_with = "minutes")]
    pub prune_interval: Duration,
    /// Epochs measured at the end of day 1 and at the end of the last day.
    pub measure_epochs: u64,
    /// Concurrent callers in the measured epochs.
    pub concurrency: usize,
    /// Attestations per group in the fast-forwarded epochs.
    pub batch: usize,
}

fn minutes<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() / 60.0)
}

/// Latencies of one measured window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Window {
    /// First and last epoch measured.
    pub epochs: (u64, u64),
    /// Attestation checks measured.
    pub attestations: usize,
    /// Their latency.
    pub attestation: Latency,
    /// Of them, those during which no pruning pass ran: what the database's age alone costs.
    pub attestations_clear: usize,
    /// Their latency.
    pub attestation_clear: Latency,
    /// Those that overlapped a pruning pass. Fast-forwarding runs a month in hours, so passes
    /// (each simulated hour) overlap a share of the checks some 200 times larger than on a
    /// chain, where an hourly pass of seconds overlaps well under 1 % of them.
    pub attestations_during_pass: usize,
    /// Their latency.
    pub attestation_during_pass: Latency,
    /// Blocks measured.
    pub blocks: usize,
    /// Their latency.
    pub block: Latency,
}

/// One store's month.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LongrunRun {
    /// "sqlite" or "postgresql".
    pub store: String,
    /// Epochs simulated.
    pub epochs: u64,
    /// Attestations checked and recorded.
    pub attestations: u64,
    /// Blocks checked and recorded.
    pub blocks: u64,
    /// Requests that failed or were refused (should be 0).
    pub errors: u64,
    /// Wall time of the simulation.
    pub seconds: f64,
    /// Checks per second over the whole run.
    pub checks_per_second: f64,
    /// Pruning passes run.
    pub prune_passes: u64,
    /// Records they deleted.
    pub pruned_records: u64,
    /// The longest pass, seconds.
    pub longest_prune_seconds: f64,
    /// Passes due while the previous one still ran (the simulation waited for it).
    pub prune_passes_overrun: u64,
    /// What the database holds at the end.
    pub footprint: Footprint,
    /// Most attestations pruning allows: each validator's newest `keep_epochs + 1`, plus what
    /// one interval adds before the next pass.
    pub attestation_bound: u64,
    /// Whether the database holds no more attestations than that.
    pub bounded: bool,
    /// The end of day 1.
    pub day_1: Window,
    /// The end of the last day.
    pub last_day: Window,
    /// Attestation p50 of the last day over day 1, checks during which no pass ran.
    pub p50_ratio: f64,
    /// Attestation p99 of the last day over day 1, checks during which no pass ran (target: at
    /// most 1.5): the database's growth and age alone.
    pub p99_ratio: f64,
    /// The same over every check, those that overlapped a pass included.
    pub p99_ratio_all: f64,
}

/// The report: the options and each store's run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LongrunReport {
    /// What was simulated.
    pub options: LongrunOptions,
    /// SQLite.
    pub sqlite: Option<LongrunRun>,
    /// PostgreSQL, when a server was given.
    pub postgres: Option<LongrunRun>,
}

impl LongrunReport {
    /// The human table.
    pub(crate) fn table(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "slashing long run: {} validators x {} days ({} epochs), a block a slot, pruning \
             keeps {} epochs every {:.0} simulated minutes; latency of {} concurrent callers \
             over the last {} epochs of day 1 and of day {}\n",
            o.validators,
            o.days,
            o.days.saturating_mul(EPOCHS_PER_DAY),
            o.keep_epochs,
            o.prune_interval.as_secs_f64() / 60.0,
            o.concurrency,
            o.measure_epochs,
            o.days
        );
        out.push_str(&format!(
            "{:<11} {:>9} {:>11} {:>9} {:>8} {:>15} {:>15} {:>15} {:>9} {:>9} {:>9} {:>8}\n",
            "store",
            "db MiB",
            "attestations",
            "blocks",
            "bounded",
            "day1 p50/p99",
            "last p50/p99",
            "block 1/last p99",
            "p99 ratio",
            "(all)",
            "pruned",
            "wall s"
        ));
        for run in [&self.sqlite, &self.postgres].into_iter().flatten() {
            out.push_str(&format!(
                "{:<11} {:>9.1} {:>11} {:>9} {:>8} {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} \
                 {:>9.2} {:>9.2} {:>9} {:>8.0}\n",
                run.store,
                run.footprint.bytes as f64 / (1024.0 * 1024.0),
                run.footprint.attestations,
                run.footprint.blocks,
                if run.bounded { "yes" } else { "NO" },
                run.day_1.attestation_clear.p50_ms,
                run.day_1.attestation_clear.p99_ms,
                run.last_day.attestation_clear.p50_ms,
                run.last_day.attestation_clear.p99_ms,
                run.day_1.block.p99_ms,
                run.last_day.block.p99_ms,
                run.p99_ratio,
                run.p99_ratio_all,
                run.pruned_records,
                run.seconds
            ));
        }
        for run in [&self.sqlite, &self.postgres].into_iter().flatten() {
            for (day, w) in [("day 1", &run.day_1), ("last day", &run.last_day)] {
                out.push_str(&format!(
                    "{} {day}: {} of {} attestation checks overlapped a pruning pass (p50/p99 \
                     {:.2}/{:.2} ms); passes took up to {:.2} s, {} of {} overran their interval\n",
                    run.store,
                    w.attestations_during_pass,
                    w.attestations,
                    w.attestation_during_pass.p50_ms,
                    w.attestation_during_pass.p99_ms,
                    run.longest_prune_seconds,
                    run.prune_passes_overrun,
                    run.prune_passes
                ));
            }
        }
        out.push_str(
            "p50/p99 and the ratio: checks during which no pass ran (the database's age alone); \
             (all): every check\n",
        );
        out.push_str("target: last-day attestation p99 within 1.5x of day 1's\n");
        out
    }
}

/// Run the simulation on SQLite (a file in `dir`; not when `postgres_only`) and, when
/// `postgres` is given, on a scratch database of that server.
pub(crate) fn run(
    dir: &Path,
    postgres: Option<&str>,
    postgres_only: bool,
    options: &LongrunOptions,
) -> Result<LongrunReport, SlashingError> {
    let sqlite = if postgres_only && postgres.is_some() {
        None
    } else {
        Some(simulate_on(Store::Sqlite(dir), options)?)
    };
    let postgres = postgres
        .map(|url| simulate_on(Store::Postgres(url), options))
        .transpose()?;
    Ok(LongrunReport {
        options: *options,
        sqlite,
        postgres,
    })
}

/// One store, on a fresh database that is removed afterwards.
pub(crate) fn simulate_on(
    store: Store<'_>,
    options: &LongrunOptions,
) -> Result<LongrunRun, SlashingError> {
    match store {
        Store::Sqlite(dir) => {
            let path = dir.join(format!("longrun-{}.sqlite", std::process::id()));
            let run = SlashingProtection::open_sqlite_with(&path, Some(GVR), writer_options())
                .and_then(|sp| simulate(&sp, "sqlite", options));
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
            run
        }
        Store::Postgres(url) => crate::slashing::with_scratch_database(url, "longrun", |open| {
            simulate(&open(GVR, writer_options())?, "postgresql", options)
        }),
    }
}

/// The writer's options: the defaults, without the group-commit wait. Fast-forwarding keeps a
/// few groups in flight and nothing else arrives while they are applied, so a wait would only
/// idle the writer (a month took four times as long); and in the measured windows the wait
/// would add the same to both days, diluting their ratio: without it the comparison is stricter.
fn writer_options() -> Options {
    Options {
        gather_wait: Duration::ZERO,
        ..Options::default()
    }
}

/// The proposer of `slot` among `validators`: a fixed pseudo-random draw (SplitMix64).
fn proposer(slot: u64, validators: usize) -> usize {
    let mut z = slot.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % validators.max(1) as u64) as usize
}

fn attestation(i: usize, epoch: u64) -> Proposal {
    Proposal::Attestation {
        source_epoch: epoch - 1,
        target_epoch: epoch,
        signing_root: signing_root(i, epoch),
    }
}

fn block(i: usize, slot: u64) -> Proposal {
    let mut root = signing_root(i, slot);
    root[31] = 0xb1;
    Proposal::Block {
        slot,
        signing_root: root,
    }
}

/// Latency samples of one measured window: when each request started, and how long it took.
#[derive(Default)]
struct Samples {
    from: u64,
    to: u64,
    attestations: Vec<(Instant, Duration)>,
    blocks: Vec<(Instant, Duration)>,
}

impl Samples {
    /// The window's figures, attestations split by whether they overlapped one of `passes`
    /// (each pruning pass's start and end).
    fn window(&self, passes: &[(Instant, Instant)]) -> Window {
        let overlaps =
            |&(t0, d): &(Instant, Duration)| passes.iter().any(|&(a, b)| t0 <= b && t0 + d >= a);
        let (during, clear): (Vec<_>, Vec<_>) = self.attestations.iter().partition(|s| overlaps(s));
        let durations = |v: &[&(Instant, Duration)]| v.iter().map(|s| s.1).collect::<Vec<_>>();
        let all: Vec<Duration> = self.attestations.iter().map(|s| s.1).collect();
        let blocks: Vec<Duration> = self.blocks.iter().map(|s| s.1).collect();
        Window {
            epochs: (self.from, self.to),
            attestations: all.len(),
            attestation: Latency::of(&all),
            attestations_clear: clear.len(),
            attestation_clear: Latency::of(&durations(&clear)),
            attestations_during_pass: during.len(),
            attestation_during_pass: Latency::of(&durations(&during)),
            blocks: blocks.len(),
            block: Latency::of(&blocks),
        }
    }
}

/// A pruning pass under way: its start, and the thread running it.
type Pass = (
    Instant,
    std::thread::JoinHandle<Result<crate::slashing::PruneReport, SlashingError>>,
);

fn simulate(
    sp: &SlashingProtection,
    store: &str,
    o: &LongrunOptions,
) -> Result<LongrunRun, SlashingError> {
    let validators = o.validators.max(1);
    let epochs = o.days.max(1).saturating_mul(EPOCHS_PER_DAY);
    let measure = o.measure_epochs.clamp(1, EPOCHS_PER_DAY);
    let day_1 = (EPOCHS_PER_DAY - measure + 1)..=EPOCHS_PER_DAY;
    let last_day = (epochs - measure + 1)..=epochs;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| SlashingError::Store(format!("runtime: {e}")))?;
    let pubkeys: Vec<_> = (0..validators).map(pubkey).collect();
    let interval = o.prune_interval.max(Duration::from_secs(1));
    let mut next_prune = Duration::ZERO;
    let mut pass: Option<Pass> = None;
    // Every finished pass's start and end (the report's duration from its start).
    let mut pass_times: Vec<(Instant, Instant)> = Vec::new();
    let (mut longest, mut overrun, mut passes) = (Duration::ZERO, 0u64, 0u64);
    let (mut errors, mut blocks) = (0u64, 0u64);
    let mut windows = [Samples::default(), Samples::default()];
    let start = Instant::now();
    // Epoch 0: every validator's first attestation 0 -> 0 is left out, so each one's history
    // starts at 0 -> 1 and is a plain chain.
    for epoch in 1..=epochs {
        let now = EPOCH.saturating_mul(u32::try_from(epoch).unwrap_or(u32::MAX));
        if now >= next_prune {
            if let Some((started, p)) = pass.take() {
                overrun += u64::from(!p.is_finished());
                let took = joined(p)?.duration;
                pass_times.push((started, started + took));
                longest = longest.max(took);
                passes += 1;
            }
            let (sp, keep) = (sp.clone(), o.keep_epochs);
            pass = Some((
                Instant::now(),
                std::thread::spawn(move || sp.prune_pass(keep)),
            ));
            // On the interval's grid: a pass each interval of simulated time, not each interval
            // rounded up to whole epochs.
            while next_prune <= now {
                next_prune += interval;
            }
        }
        let slots: Vec<(usize, Proposal)> = (0..SLOTS_PER_EPOCH)
            .map(|s| {
                let slot = epoch * SLOTS_PER_EPOCH + s;
                let i = proposer(slot, validators);
                (i, block(i, slot))
            })
            .collect();
        blocks += slots.len() as u64;
        let measured = if day_1.contains(&epoch) {
            Some(0)
        } else if last_day.contains(&epoch) {
            Some(1)
        } else {
            None
        };
        match measured {
            Some(w) => {
                let samples = &mut windows[w];
                if samples.attestations.is_empty() {
                    samples.from = epoch;
                }
                samples.to = epoch;
                errors += measured_epoch(sp, &pubkeys, epoch, &slots, o.concurrency, samples);
            }
            None => {
                errors += runtime.block_on(fast_epoch(sp, &pubkeys, epoch, &slots, o.batch));
            }
        }
    }
    if let Some((started, p)) = pass.take() {
        let took = joined(p)?.duration;
        pass_times.push((started, started + took));
        longest = longest.max(took);
        passes += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let stats = sp.stats();
    let footprint = sp.footprint()?;
    let interval_epochs = interval.as_secs().div_ceil(EPOCH.as_secs());
    let attestation_bound = (validators as u64).saturating_mul(
        o.keep_epochs
            .saturating_add(1)
            .saturating_add(interval_epochs),
    );
    let (d1, last) = (
        windows[0].window(&pass_times),
        windows[1].window(&pass_times),
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let attestations = (validators as u64).saturating_mul(epochs);
    Ok(LongrunRun {
        store: store.into(),
        epochs,
        attestations,
        blocks,
        errors,
        seconds,
        checks_per_second: (attestations + blocks) as f64 / seconds.max(1e-9),
        prune_passes: passes,
        pruned_records: stats.pruned_records,
        longest_prune_seconds: longest.as_secs_f64(),
        prune_passes_overrun: overrun,
        bounded: footprint.attestations <= attestation_bound,
        footprint,
        attestation_bound,
        p50_ratio: ratio(last.attestation_clear.p50_ms, d1.attestation_clear.p50_ms),
        p99_ratio: ratio(last.attestation_clear.p99_ms, d1.attestation_clear.p99_ms),
        p99_ratio_all: ratio(last.attestation.p99_ms, d1.attestation.p99_ms),
        day_1: d1,
        last_day: last,
    })
}

fn joined(
    pass: std::thread::JoinHandle<Result<crate::slashing::PruneReport, SlashingError>>,
) -> Result<crate::slashing::PruneReport, SlashingError> {
    pass.join()
        .map_err(|_| SlashingError::Store("the pruning pass panicked".into()))?
}

/// A fast-forwarded epoch: attestations in groups, several in flight, blocks beside them.
/// Returns the failed or refused requests.
async fn fast_epoch(
    sp: &SlashingProtection,
    pubkeys: &[crate::slashing::Pubkey],
    epoch: u64,
    slots: &[(usize, Proposal)],
    batch: usize,
) -> u64 {
    use futures_util::stream::{self, StreamExt};
    let groups = stream::iter(
        (0..pubkeys.len())
            .collect::<Vec<_>>()
            .chunks(batch.max(1))
            .map(|c| {
                c.iter()
                    .map(|&i| (pubkeys[i], GVR, attestation(i, epoch)))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>(),
    )
    .map(|group| sp.check_and_record_many_async(group))
    .buffer_unordered(GROUPS_IN_FLIGHT)
    .map(|results| results.iter().filter(|r| r.is_err()).count() as u64)
    .fold(0u64, |a, b| async move { a + b });
    let blocks = futures_util::future::join_all(
        slots
            .iter()
            .map(|(i, p)| sp.check_and_record_async(&pubkeys[*i], &GVR, *p)),
    );
    let (failed, blocks) = tokio::join!(groups, blocks);
    failed + blocks.iter().filter(|r| r.is_err()).count() as u64
}

/// A measured epoch: `concurrency` callers, each checking its validators' attestations one
/// after another, and the epoch's blocks one after another from a caller of its own, each
/// latency recorded. Returns the failed or refused requests.
fn measured_epoch(
    sp: &SlashingProtection,
    pubkeys: &[crate::slashing::Pubkey],
    epoch: u64,
    slots: &[(usize, Proposal)],
    concurrency: usize,
    samples: &mut Samples,
) -> u64 {
    let concurrency = concurrency.clamp(1, pubkeys.len());
    let timed = |pk: &crate::slashing::Pubkey, p: Proposal| {
        let t0 = Instant::now();
        let ok = sp.check_and_record(pk, &GVR, p).is_ok();
        (ok, (t0, t0.elapsed()))
    };
    let (atts, blks) = std::thread::scope(|s| {
        let callers: Vec<_> = (0..concurrency)
            .map(|t| {
                s.spawn(move || {
                    (t..pubkeys.len())
                        .step_by(concurrency)
                        .map(|i| timed(&pubkeys[i], attestation(i, epoch)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let proposer = s.spawn(|| {
            slots
                .iter()
                .map(|(i, p)| timed(&pubkeys[*i], *p))
                .collect::<Vec<_>>()
        });
        let atts: Vec<(bool, (Instant, Duration))> = callers
            .into_iter()
            .flat_map(|c| c.join().unwrap_or_default())
            .collect();
        (atts, proposer.join().unwrap_or_default())
    });
    let mut failed = 0;
    for (ok, d) in atts {
        if ok {
            samples.attestations.push(d);
        } else {
            failed += 1;
        }
    }
    for (ok, d) in blks {
        if ok {
            samples.blocks.push(d);
        } else {
            failed += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposers_spread_over_every_validator() {
        let mut seen = vec![0u32; 50];
        for slot in 0..50 * 200 {
            seen[proposer(slot, 50)] += 1;
        }
        assert!(seen.iter().all(|&n| (100..=300).contains(&n)), "{seen:?}");
    }
}
