//! Pruning that never holds the writer for long: a pass over every validator made of small
//! transactions, and the background thread that runs a pass at an interval.
//!
//! The writer is one thread that every block and attestation waits on, so a pass is cut into
//! chunks: each chunk is one task on the writer's queue, prunes validators until its time budget
//! is spent (at least one), and commits. The next chunk is queued only once the previous one is
//! answered, so checks that arrived meanwhile are ahead of it in the queue and are served between
//! chunks. Protection never drops: the highest deleted values become low watermarks in the same
//! transaction ([`rules::prune_validator`](super::rules::prune_validator), and PostgreSQL's bulk
//! statement alike).
//!
//! Several instances on one PostgreSQL database may prune at once: the store skips a validator
//! whose row another transaction holds (it is taken at the next pass), so a chunk never waits for
//! a lock and can never deadlock with a batch or with another instance's chunk.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::service::{call, Counters, Job, Task};
use super::store::ValidatorId;
use super::SlashingError;

/// Epochs of history kept per validator before its newest record, unless configured: about
/// 4.5 days on mainnet. See the README ("Pruning") for the reasoning.
pub const DEFAULT_KEEP_EPOCHS: u64 = 1024;
/// Time between two background passes, unless configured.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Fewest epochs that may be kept: an attestation may still be included in the epoch after its
/// own, so two epochs hold every message that can still earn anything.
pub const MIN_KEEP_EPOCHS: u64 = 2;
/// Longest a chunk keeps pruning before it commits and lets queued checks go first.
pub const DEFAULT_CHUNK_BUDGET: Duration = Duration::from_millis(10);
/// Most validators handed to one chunk (the budget usually ends it sooner).
const MAX_CHUNK_VALIDATORS: usize = 1024;

/// Background pruning of [`SlashingProtection`](super::SlashingProtection): what to keep and how
/// often to prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruning {
    /// Epochs of history kept per validator before its newest record (its newest block and
    /// attestation are always kept). At least [`MIN_KEEP_EPOCHS`].
    pub keep_epochs: u64,
    /// Time between two passes; the first pass starts at once.
    pub interval: Duration,
    /// Longest one chunk (one transaction) prunes before it commits.
    pub chunk_budget: Duration,
}

impl Default for Pruning {
    fn default() -> Self {
        Pruning {
            keep_epochs: DEFAULT_KEEP_EPOCHS,
            interval: DEFAULT_PRUNE_INTERVAL,
            chunk_budget: DEFAULT_CHUNK_BUDGET,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Records deleted.
    pub records: u64,
    /// Validators visited (a validator busy on PostgreSQL is visited but left for the next pass).
    pub validators: u64,
    /// Transactions the pass took.
    pub chunks: u64,
    /// Wall time of the pass.
    pub duration: Duration,
}

/// One chunk's outcome, from the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ChunkDone {
    /// Validators of the chunk pruned, from its start.
    pub validators: usize,
    /// Records deleted.
    pub records: u64,
}

/// Run one pass through the writer behind `sender`: list the validators, then prune them chunk
/// after chunk. `stop` is polled between chunks (the background thread's shutdown).
pub(super) fn pass(
    sender: &SyncSender<Job>,
    counters: &Counters,
    keep_epochs: u64,
    chunk_budget: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<PruneReport, SlashingError> {
    let start = Instant::now();
    let ids: Vec<ValidatorId> = call(sender, |reply| Job::Task(Task::ValidatorIds(reply)))??;
    let mut report = PruneReport::default();
    let mut rest = ids.as_slice();
    while !rest.is_empty() && !stop() {
        let chunk = rest[..rest.len().min(MAX_CHUNK_VALIDATORS)].to_vec();
        let done: ChunkDone = call(sender, |reply| {
            Job::Task(Task::PruneChunk {
                ids: chunk,
                keep_epochs,
                budget: chunk_budget,
                reply,
            })
        })??;
        // The writer prunes at least one validator per chunk, so the pass always advances.
        let advanced = done.validators.clamp(1, rest.len());
        rest = &rest[advanced..];
        report.records += done.records;
        report.validators += advanced as u64;
        report.chunks += 1;
        counters
            .pruned_records
            .fetch_add(done.records, Ordering::Relaxed);
    }
    report.duration = start.elapsed();
    counters.prune_passes.fetch_add(1, Ordering::Relaxed);
    counters.last_prune_micros.store(
        u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    Ok(report)
}

/// The background thread: a pass at once, then one every [`Pruning::interval`], until stopped.
pub(super) struct Pruner {
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    /// Start pruning through the writer behind `sender` (the thread keeps a clone of it, which it
    /// drops when stopped: stop the pruner before waiting for the writer to end).
    pub(super) fn start(
        sender: SyncSender<Job>,
        counters: std::sync::Arc<Counters>,
        pruning: Pruning,
    ) -> Result<Pruner, SlashingError> {
        let (stop, stopped) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("slashing-prune".into())
            .spawn(move || run(&sender, &counters, pruning, &stopped))
            .map_err(|e| SlashingError::Store(format!("cannot start the pruning thread: {e}")))?;
        Ok(Pruner {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        // Closing the channel wakes the thread; it ends within one chunk.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(sender: &SyncSender<Job>, counters: &Counters, pruning: Pruning, stopped: &Receiver<()>) {
    let stop = || !matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Empty));
    let mut next = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        match pass(
            sender,
            counters,
            pruning.keep_epochs,
            pruning.chunk_budget,
            &stop,
        ) {
            Ok(r) => tracing::info!(
                records = r.records,
                validators = r.validators,
                transactions = r.chunks,
                seconds = r.duration.as_secs_f64(),
                "slashing protection pruned; the newest {} epochs per validator are kept",
                pruning.keep_epochs
            ),
            Err(e) => {
                counters.prune_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("slashing protection: pruning failed (retried next time): {e}");
            }
        }
        next = Instant::now() + pruning.interval;
    }
}

/// Most validators in one group of a chunk (one statement on PostgreSQL).
const MAX_BULK_VALIDATORS: usize = 256;

/// Prune the validators of one chunk, in the writer's transaction: until `budget` is spent, at
/// least one. Validators go to the store in groups
/// ([`StoreTxn::prune_many`](super::store::StoreTxn::prune_many): PostgreSQL prunes a group in
/// one round trip instead of seven a validator, SQLite one validator after another) that start
/// at one validator and double while a group takes under an eighth of the budget, so a first
/// pass after a long pause (many records a validator) does not hold the writer much past its
/// budget.
pub(super) fn prune_chunk(
    tx: &mut dyn super::store::StoreTxn,
    ids: &[ValidatorId],
    keep_epochs: u64,
    budget: Duration,
) -> Result<ChunkDone, SlashingError> {
    let start = Instant::now();
    let mut done = ChunkDone::default();
    let mut group = 1;
    while done.validators < ids.len() {
        let end = (done.validators + group).min(ids.len());
        let took = Instant::now();
        done.records += tx.prune_many(&ids[done.validators..end], keep_epochs)?;
        done.validators = end;
        if took.elapsed() < budget / 8 {
            group = (group * 2).min(MAX_BULK_VALIDATORS);
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    Ok(done)
}
