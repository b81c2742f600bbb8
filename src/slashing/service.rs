//! [`SlashingProtection`], the service the signing path calls, and its group-commit writer.
//!
//! One writer thread owns the store. Callers queue requests on a bounded channel; the writer
//! takes everything queued (up to [`Options::max_batch`]), applies it in arrival order in one
//! transaction, commits (one fsync), then answers every caller; blocks queued among the rest go
//! first, in a transaction of their own. Under load (the last transaction held several
//! checks) it first waits a little for more ([`Options::gather_wait`], counted from the first
//! check; never while a block waits): one fsync then answers many callers instead of a few. Two
//! conflicting requests for one validator in one batch: the first wins, the second is refused.
//! If the transaction fails, every caller in it gets [`SlashingError::Store`] and must not sign.
//! No history is kept outside the database between transactions, so nothing can diverge from
//! it: a batch reads each validator's state under its lock and carries it from one request to
//! the next only within its own transaction. Pruning ([`prune`](super::prune)) queues its
//! chunks here like any task.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::interchange::{self, ImportSummary};
use super::prune::{self, ChunkDone, PruneReport, Pruner, Pruning};
use super::rules::{self, Allowed, Verdict};
use super::sqlite::SqliteStore;
use super::store::{Footprint, SlashingStore, ValidatorId, ValidatorState};
use super::{Proposal, Pubkey, Refusal, Root, SlashingError};

/// [`Options::gather_wait`] unless configured. Under 64 concurrent durable attestations over
/// HTTP on 2 cores (`bench http`, README), SQLite went from ~2,800 a second with no wait to
/// 3,400–3,900 with 500 µs and 4,100–4,500 with 2 ms (p99 under 20 ms in each of four runs at
/// 2 ms, in few at 500 µs); PostgreSQL was the same either way. An attestation has seconds;
/// a block never waits.
pub const DEFAULT_GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Tuning of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Most requests per transaction. 1 means one transaction (and fsync) per request: the
    /// baseline the benchmark compares group commit against.
    pub max_batch: usize,
    /// Group-commit wait: when the last transaction held more than one check (callers are
    /// arriving together), the writer waits up to this long, from the batch's first check, for
    /// more before it commits. Not when the last one held a single check (a lone request pays
    /// nothing), and never once a block is among them: the block goes at once. Zero: take only
    /// what is already queued.
    pub gather_wait: std::time::Duration,
    /// Most requests waiting; past it callers get [`SlashingError::Store`] (HTTP 503) at once.
    pub queue_capacity: usize,
    /// Longest a caller waits for its decision: past it, [`SlashingError::Store`] (HTTP 503),
    /// nothing signed. A database that stopped answering (a half-open connection, a frozen
    /// server) then costs each request this much, not a hang; a check whose caller gave up is
    /// skipped by the writer if it has not started on it yet.
    pub wait: std::time::Duration,
    /// Background pruning (`None`: records are kept until pruned by hand).
    pub pruning: Option<Pruning>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 512,
            gather_wait: DEFAULT_GATHER_WAIT,
            queue_capacity: 16_384,
            wait: std::time::Duration::from_secs(6),
            pruning: None,
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Check requests answered.
    pub requests: u64,
    /// Check transactions committed (each one fsync).
    pub transactions: u64,
    /// Check transactions that failed (every request in them answered with a store error).
    pub failed_transactions: u64,
    /// Requests refused.
    pub refused: u64,
    /// Requests allowed as identical re-signs.
    pub repeats: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
    /// Records deleted by pruning (background passes and `prune`).
    pub pruned_records: u64,
    /// Pruning passes completed.
    pub prune_passes: u64,
    /// Background pruning passes that failed (each is retried at the next interval).
    pub prune_failures: u64,
    /// Wall time of the last completed pass.
    pub last_prune_duration: std::time::Duration,
    /// Statements sent to the database server, each a round trip (PostgreSQL; 0 for SQLite).
    pub round_trips: u64,
    /// Time in check transactions (`transactions` + `failed_transactions` of them), each from
    /// its first statement to its commit answered: the store's own latency, without a check's
    /// wait for the batch in progress or for company.
    pub transaction_time: std::time::Duration,
}

#[derive(Default)]
pub(super) struct Counters {
    requests: AtomicU64,
    transactions: AtomicU64,
    failed_transactions: AtomicU64,
    refused: AtomicU64,
    repeats: AtomicU64,
    largest_batch: AtomicU64,
    pub(super) pruned_records: AtomicU64,
    pub(super) prune_passes: AtomicU64,
    pub(super) prune_failures: AtomicU64,
    pub(super) last_prune_micros: AtomicU64,
    round_trips: AtomicU64,
    /// Nanoseconds in check transactions, committed or failed: each from its first statement
    /// to its commit answered.
    transaction_nanos: AtomicU64,
}

pub(super) enum Reply<T> {
    Blocking(SyncSender<T>),
    Async(tokio::sync::oneshot::Sender<T>),
}

impl<T> Reply<T> {
    /// The caller stopped waiting (timed out, or hung up).
    fn abandoned(&self) -> bool {
        match self {
            Reply::Blocking(_) => false,
            Reply::Async(s) => s.is_closed(),
        }
    }

    fn send(self, value: T) {
        // A caller that went away loses its answer, not its protection: the record stands.
        match self {
            Reply::Blocking(s) => {
                let _ = s.send(value);
            }
            Reply::Async(s) => {
                let _ = s.send(value);
            }
        }
    }
}

pub(super) struct Check {
    pubkey: Pubkey,
    gvr: Root,
    proposal: Proposal,
    reply: Reply<Result<(), SlashingError>>,
}

pub(super) enum Job {
    Check(Check),
    /// Several checks that go into one transaction together (a batch request's keys).
    Checks(Vec<Check>),
    Task(Task),
}

/// Work that runs in a transaction of its own.
pub(super) enum Task {
    Import(
        interchange::Interchange,
        Reply<Result<ImportSummary, SlashingError>>,
    ),
    Export(Option<Vec<Pubkey>>, Reply<Result<String, SlashingError>>),
    /// Every registered validator's id, for a pruning pass.
    ValidatorIds(Reply<Result<Vec<ValidatorId>, SlashingError>>),
    /// One chunk of a pruning pass (see [`prune`](super::prune)).
    PruneChunk {
        ids: Vec<ValidatorId>,
        keep_epochs: u64,
        budget: std::time::Duration,
        reply: Reply<Result<ChunkDone, SlashingError>>,
    },
    /// Row counts and bytes on disk (benchmarks).
    Footprint(Reply<Result<Footprint, SlashingError>>),
    Delete(Vec<(Pubkey, bool)>, Reply<Result<Deletion, SlashingError>>),
    Restore(Vec<Pubkey>, Reply<Result<(), SlashingError>>),
    DeletedKeys(Reply<Result<Vec<Pubkey>, SlashingError>>),
}

/// What [`SlashingProtection::mark_deleted`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Per requested key, in order: whether it was known (active, or in the database). Known
    /// keys are now marked deleted; unknown ones were left alone.
    pub known: Vec<bool>,
    /// EIP-3076 v5 interchange of the known keys, as recorded (read in the same transaction).
    pub interchange: String,
}

/// The slashing-protection service. Cheap to clone (an `Arc` inside); the writer thread stops
/// when the last clone is dropped (the drop waits for it, so the database is closed after).
///
/// [`check_and_record`](Self::check_and_record) blocks the calling thread until the decision
/// is durable: call it from `spawn_blocking`, or use
/// [`check_and_record_async`](Self::check_and_record_async) from async code.
#[derive(Clone)]
pub struct SlashingProtection {
    inner: Arc<Inner>,
}

struct Inner {
    sender: Option<SyncSender<Job>>,
    wait: std::time::Duration,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    pruner: Option<Pruner>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The pruner holds a sender too: it goes first, then closing the channel ends the
        // writer's loop once the queue is drained.
        self.pruner.take();
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for SlashingProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlashingProtection")
            .field("stats", &self.stats())
            .finish()
    }
}

fn writer_gone() -> SlashingError {
    SlashingError::Store("the slashing-protection writer has stopped".into())
}

impl SlashingProtection {
    /// Open (create) the SQLite database at `path` (WAL, `synchronous=FULL`, migrations
    /// embedded) for the network whose genesis validators root is `gvr`: recorded on first
    /// open (or, if `None`, on the first request or import); another one later is refused.
    pub fn open_sqlite(path: &Path, gvr: Option<Root>) -> Result<Self, SlashingError> {
        Self::open_sqlite_with(path, gvr, Options::default())
    }

    /// [`open_sqlite`](Self::open_sqlite) with explicit [`Options`].
    pub fn open_sqlite_with(
        path: &Path,
        gvr: Option<Root>,
        options: Options,
    ) -> Result<Self, SlashingError> {
        Self::with_store(SqliteStore::open(path, gvr)?, options)
    }

    /// Serve `store` from a new writer thread.
    pub(crate) fn with_store<S: SlashingStore>(
        store: S,
        options: Options,
    ) -> Result<Self, SlashingError> {
        if let Some(pruning) = &options.pruning {
            check_pruning(pruning)?;
        }
        let (sender, receiver) = mpsc::sync_channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        let batching = Batching {
            max: options.max_batch.max(1),
            wait: options.gather_wait,
        };
        let writer = std::thread::Builder::new()
            .name("slashing-writer".into())
            .spawn(move || writer_loop(store, receiver, batching, &writer_counters))
            .map_err(|e| SlashingError::Store(format!("cannot start the writer thread: {e}")))?;
        let pruner = options
            .pruning
            .map(|pruning| Pruner::start(sender.clone(), counters.clone(), pruning))
            .transpose()?;
        Ok(SlashingProtection {
            inner: Arc::new(Inner {
                sender: Some(sender),
                wait: options.wait,
                writer: Some(writer),
                counters,
                pruner,
            }),
        })
    }

    fn submit(&self, job: Job) -> Result<(), SlashingError> {
        send(self.sender()?, job)
    }

    fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, SlashingError> {
        call(self.sender()?, job)
    }

    fn sender(&self) -> Result<&SyncSender<Job>, SlashingError> {
        self.inner.sender.as_ref().ok_or_else(writer_gone)
    }

    /// Check `proposal` for `pubkey` on the network `gvr` and, if safe, record it durably
    /// (committed and fsynced) before returning `Ok`: only then may the caller sign. An
    /// identical re-sign (same slot/epochs and signing root) is `Ok` and records nothing.
    /// Blocks the calling thread (see the type's doc).
    pub fn check_and_record(
        &self,
        pubkey: &Pubkey,
        gvr: &Root,
        proposal: Proposal,
    ) -> Result<(), SlashingError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Job::Check(Check {
            pubkey: *pubkey,
            gvr: *gvr,
            proposal,
            reply: Reply::Blocking(tx),
        }))?;
        match rx.recv_timeout(self.inner.wait) {
            Ok(decision) => decision,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self.no_answer()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(writer_gone()),
        }
    }

    fn no_answer(&self) -> SlashingError {
        SlashingError::Store(format!(
            "no decision within {:?}: the database is not answering (or is overloaded); \
             nothing was signed",
            self.inner.wait
        ))
    }

    /// [`check_and_record`](Self::check_and_record) for async callers: waits without blocking
    /// a runtime thread, at most [`Options::wait`] (so the runtime needs its time driver, as the
    /// server's has: `enable_time`). If the future is dropped after submitting, the request may still be
    /// recorded (a lost signature, never lost protection).
    pub async fn check_and_record_async(
        &self,
        pubkey: &Pubkey,
        gvr: &Root,
        proposal: Proposal,
    ) -> Result<(), SlashingError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Check(Check {
            pubkey: *pubkey,
            gvr: *gvr,
            proposal,
            reply: Reply::Async(tx),
        }))?;
        match tokio::time::timeout(self.inner.wait, rx).await {
            Ok(decision) => decision.map_err(|_| writer_gone())?,
            Err(_) => Err(self.no_answer()),
        }
    }

    /// [`check_and_record_async`](Self::check_and_record_async) for several proposals at once
    /// (a batch request's keys): decided in order, in one transaction (one commit, one fsync),
    /// a decision each, in the order given. One refusal does not affect the others; a store
    /// failure refuses them all.
    pub async fn check_and_record_many_async(
        &self,
        items: Vec<(Pubkey, Root, Proposal)>,
    ) -> Vec<Result<(), SlashingError>> {
        if items.is_empty() {
            return Vec::new();
        }
        let n = items.len();
        let mut receivers = Vec::with_capacity(n);
        let checks = items
            .into_iter()
            .map(|(pubkey, gvr, proposal)| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                receivers.push(rx);
                Check {
                    pubkey,
                    gvr,
                    proposal,
                    reply: Reply::Async(tx),
                }
            })
            .collect();
        if let Err(e) = self.submit(Job::Checks(checks)) {
            let reason = e.to_string();
            return (0..n)
                .map(|_| Err(SlashingError::Store(reason.clone())))
                .collect();
        }
        let all = async {
            let mut out = Vec::with_capacity(n);
            for rx in receivers {
                out.push(rx.await.map_err(|_| writer_gone()).and_then(|d| d));
            }
            out
        };
        match tokio::time::timeout(self.inner.wait, all).await {
            Ok(decisions) => decisions,
            Err(_) => (0..n).map(|_| Err(self.no_answer())).collect(),
        }
    }

    /// Import an EIP-3076 v5 interchange, atomically: all of it or nothing. Slashable data is
    /// never merged as records; see [`ImportSummary::minified`].
    pub fn import_interchange(&self, json: &str) -> Result<ImportSummary, SlashingError> {
        let parsed = interchange::parse(json)?;
        self.call(|reply| Job::Task(Task::Import(parsed, reply)))?
    }

    /// Export the given validators (all when `None`) as EIP-3076 v5 JSON. The EIP advises
    /// exporting only while nothing is being signed.
    pub fn export_interchange(&self, pubkeys: Option<&[Pubkey]>) -> Result<String, SlashingError> {
        let pubkeys = pubkeys.map(<[Pubkey]>::to_vec);
        self.call(|reply| Job::Task(Task::Export(pubkeys, reply)))?
    }

    /// Delete records older than `keep_epochs` before each validator's newest, keeping its
    /// newest block and attestation; the highest deleted values become low watermarks, so
    /// protection never drops. Returns the number of records deleted. Runs as the background
    /// pass does, in short transactions, so signing goes on meanwhile. Blocks the calling thread.
    pub fn prune(&self, keep_epochs: u64) -> Result<u64, SlashingError> {
        Ok(self.prune_pass(keep_epochs)?.records)
    }

    /// One pruning pass, as the background pruner runs it (see [`prune`](Self::prune)), with
    /// what it did. Blocks the calling thread.
    pub fn prune_pass(&self, keep_epochs: u64) -> Result<PruneReport, SlashingError> {
        prune::pass(
            self.sender()?,
            &self.inner.counters,
            keep_epochs,
            prune::DEFAULT_CHUNK_BUDGET,
            &|| false,
        )
    }

    /// Rows and bytes the database holds now (counts every row: for benchmarks and tests, not
    /// for a metric). Blocks the calling thread.
    pub fn footprint(&self) -> Result<Footprint, SlashingError> {
        self.call(|reply| Job::Task(Task::Footprint(reply)))?
    }

    /// Import an already parsed interchange (see [`import_interchange`](Self::import_interchange)).
    pub(crate) fn import_parsed(
        &self,
        parsed: interchange::Interchange,
    ) -> Result<ImportSummary, SlashingError> {
        self.call(|reply| Job::Task(Task::Import(parsed, reply)))?
    }

    /// Keymanager DELETE, in one durable transaction: each key that is present (the flag: loaded,
    /// or its key file on disk) or already known to the database is marked deleted (a tombstone that outlives a restored
    /// key file) and registered; then the interchange of those keys is read. Keys neither
    /// present nor known are left alone (`known = false`). Blocks the calling thread.
    pub fn mark_deleted(&self, keys: &[(Pubkey, bool)]) -> Result<Deletion, SlashingError> {
        let keys = keys.to_vec();
        self.call(|reply| Job::Task(Task::Delete(keys, reply)))?
    }

    /// Clear the deletion marks of `keys` (an explicit re-import). Blocks the calling thread.
    pub fn clear_deleted(&self, keys: &[Pubkey]) -> Result<(), SlashingError> {
        let keys = keys.to_vec();
        self.call(|reply| Job::Task(Task::Restore(keys, reply)))?
    }

    /// Every key marked deleted. Blocks the calling thread.
    pub(crate) fn deleted_keys(&self) -> Result<Vec<Pubkey>, SlashingError> {
        self.call(|reply| Job::Task(Task::DeletedKeys(reply)))?
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            requests: c.requests.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            failed_transactions: c.failed_transactions.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            repeats: c.repeats.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            pruned_records: c.pruned_records.load(Ordering::Relaxed),
            prune_passes: c.prune_passes.load(Ordering::Relaxed),
            prune_failures: c.prune_failures.load(Ordering::Relaxed),
            last_prune_duration: std::time::Duration::from_micros(
                c.last_prune_micros.load(Ordering::Relaxed),
            ),
            round_trips: c.round_trips.load(Ordering::Relaxed),
            transaction_time: std::time::Duration::from_nanos(
                c.transaction_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}

/// Send `job` to the writer behind `sender` and wait for its answer.
pub(super) fn call<T>(
    sender: &SyncSender<Job>,
    job: impl FnOnce(Reply<T>) -> Job,
) -> Result<T, SlashingError> {
    let (tx, rx) = mpsc::sync_channel(1);
    send(sender, job(Reply::Blocking(tx)))?;
    rx.recv().map_err(|_| writer_gone())
}

/// Queue `job` without waiting: a full queue is an error at once (HTTP 503).
fn send(sender: &SyncSender<Job>, job: Job) -> Result<(), SlashingError> {
    sender.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => {
            SlashingError::Store("too many signing requests queued; retry shortly".into())
        }
        TrySendError::Disconnected(_) => writer_gone(),
    })
}

fn check_pruning(p: &Pruning) -> Result<(), SlashingError> {
    if p.keep_epochs < prune::MIN_KEEP_EPOCHS || p.interval.is_zero() {
        return Err(SlashingError::Store(format!(
            "pruning must keep at least {} epochs, at a non-zero interval",
            prune::MIN_KEEP_EPOCHS
        )));
    }
    Ok(())
}

type Answers = Vec<(Reply<Result<(), SlashingError>>, Result<(), SlashingError>)>;

/// How the writer forms its transactions ([`Options::max_batch`], [`Options::gather_wait`]).
#[derive(Debug, Clone, Copy)]
struct Batching {
    max: usize,
    wait: std::time::Duration,
}

fn writer_loop<S: SlashingStore>(
    mut store: S,
    receiver: Receiver<Job>,
    batching: Batching,
    counters: &Counters,
) {
    // Waking hundreds of callers costs a syscall each; a second thread does it while the
    // writer starts on the next batch. Answers leave only after their batch committed.
    let (answer, answers) = mpsc::channel::<Answers>();
    let replier = std::thread::Builder::new()
        .name("slashing-reply".into())
        .spawn(move || {
            for batch in answers {
                for (reply, result) in batch {
                    reply.send(result);
                }
            }
        });
    let answer = match replier {
        Ok(_) => Some(answer),
        Err(e) => {
            tracing::warn!("slashing protection: no reply thread ({e}); the writer replies");
            None
        }
    };
    let deliver = |batch: Answers| match &answer {
        Some(a) => {
            if let Err(mpsc::SendError(batch)) = a.send(batch) {
                batch
                    .into_iter()
                    .for_each(|(reply, result)| reply.send(result));
            }
        }
        None => batch
            .into_iter()
            .for_each(|(reply, result)| reply.send(result)),
    };
    let mut pending: Option<Job> = None;
    // Whether the last transaction of checks held more than one: callers are arriving together.
    let mut busy = false;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let wait = if busy {
            batching.wait
        } else {
            std::time::Duration::ZERO
        };
        match gather(first, &receiver, batching.max, wait, &mut pending) {
            Ok((blocks, batch)) => {
                if !blocks.is_empty() {
                    deliver(run_batch(&mut store, blocks, counters));
                }
                if !batch.is_empty() {
                    busy = batch.len() > 1;
                    deliver(run_batch(&mut store, batch, counters));
                }
            }
            Err(task) => run_task(&mut store, task, counters),
        }
    }
}

/// The checks the writer applies next: `first` and what is queued behind it, up to `max_batch`
/// (a task found behind it waits in `pending` for the next round); `Err` when `first` is a
/// task. With a non-zero `wait`, checks arriving until `wait` after `first` join too, unless
/// a block is among them (it must not wait) or a task arrives. Blocks queued on their own come
/// out apart, to go first in a transaction of their own: a proposal then waits for the fsync in
/// progress and one more, not for a herd's attestations to be applied with it. A block and an attestation never decide each other, and blocks keep
/// their order among themselves, as the rest does.
fn gather(
    first: Job,
    receiver: &Receiver<Job>,
    max_batch: usize,
    wait: std::time::Duration,
    pending: &mut Option<Job>,
) -> Result<(Vec<Check>, Vec<Check>), Task> {
    let (mut blocks, mut batch) = (Vec::new(), Vec::new());
    if let Some(task) = sort_job(first, &mut blocks, &mut batch) {
        return Err(task);
    }
    let deadline = std::time::Instant::now() + wait;
    while blocks.len() + batch.len() < max_batch {
        let next = match receiver.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if !blocks.is_empty() || left.is_zero() {
                    break;
                }
                match receiver.recv_timeout(left) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        if let Some(task) = sort_job(next, &mut blocks, &mut batch) {
            *pending = Some(Job::Task(task));
            break;
        }
    }
    Ok((blocks, batch))
}

/// Put a queued job's checks in `blocks` (a block check queued on its own) or `batch`
/// (anything else; a group is never split: all of it in one transaction, however large); a
/// task is given back.
fn sort_job(job: Job, blocks: &mut Vec<Check>, batch: &mut Vec<Check>) -> Option<Task> {
    match job {
        Job::Check(check) if matches!(check.proposal, Proposal::Block { .. }) => blocks.push(check),
        Job::Check(check) => batch.push(check),
        Job::Checks(checks) => batch.extend(checks),
        Job::Task(task) => return Some(task),
    }
    None
}

/// Run `f`, turning a panic (a bug) into a store error so that the writer lives on and the
/// callers refuse to sign; the transaction was rolled back by unwinding.
fn guarded<T>(f: impl FnOnce() -> Result<T, SlashingError>) -> Result<T, SlashingError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("slashing protection: internal error (panic); nothing was recorded");
        Err(SlashingError::Store(
            "internal error in slashing protection; nothing was recorded".into(),
        ))
    })
}

/// Answer a task, its round trips counted first (so that whoever it answers reads them).
fn answer<T, S: SlashingStore>(reply: Reply<T>, value: T, counters: &Counters, store: &S) {
    counters
        .round_trips
        .store(store.round_trips(), Ordering::Relaxed);
    reply.send(value);
}

fn run_task<S: SlashingStore>(store: &mut S, task: Task, counters: &Counters) {
    match task {
        Task::Import(ic, reply) => answer(
            reply,
            guarded(|| store.transaction(|tx| interchange::import(tx, &ic))),
            counters,
            store,
        ),
        Task::Export(pubkeys, reply) => answer(
            reply,
            guarded(|| store.transaction(|tx| interchange::export(tx, pubkeys.as_deref()))),
            counters,
            store,
        ),
        Task::ValidatorIds(reply) => answer(
            reply,
            guarded(|| {
                store.transaction(|tx| Ok(tx.validators()?.into_iter().map(|(v, _)| v).collect()))
            }),
            counters,
            store,
        ),
        Task::PruneChunk {
            ids,
            keep_epochs,
            budget,
            reply,
        } => answer(
            reply,
            guarded(|| store.transaction(|tx| prune::prune_chunk(tx, &ids, keep_epochs, budget))),
            counters,
            store,
        ),
        Task::Footprint(reply) => answer(reply, guarded(|| store.footprint()), counters, store),
        Task::Delete(keys, reply) => answer(
            reply,
            guarded(|| {
                store.transaction(|tx| {
                    let mut known = Vec::with_capacity(keys.len());
                    let mut marked: Vec<Pubkey> = Vec::new();
                    for (pk, active) in &keys {
                        let is_known = *active || tx.find_validator(pk)?.is_some();
                        if is_known && !marked.contains(pk) {
                            marked.push(*pk);
                        }
                        known.push(is_known);
                    }
                    // Lock in pubkey order, like every batch, so concurrent writers cannot deadlock.
                    let mut sorted = marked.clone();
                    sorted.sort();
                    for pk in &sorted {
                        tx.lock_validator(pk)?;
                        tx.set_deleted(pk, true)?;
                    }
                    let interchange = interchange::export_keys(tx, &marked)?;
                    Ok(Deletion { known, interchange })
                })
            }),
            counters,
            store,
        ),
        Task::Restore(keys, reply) => answer(
            reply,
            guarded(|| {
                store.transaction(|tx| {
                    for pk in &keys {
                        tx.set_deleted(pk, false)?;
                    }
                    Ok(())
                })
            }),
            counters,
            store,
        ),
        Task::DeletedKeys(reply) => answer(
            reply,
            guarded(|| store.transaction(|tx| tx.deleted_keys())),
            counters,
            store,
        ),
    }
}

fn run_batch<S: SlashingStore>(store: &mut S, batch: Vec<Check>, counters: &Counters) -> Answers {
    // Whoever gave up waiting signs nothing: recording for them would only pin a message that
    // may never be signed.
    let batch: Vec<Check> = batch.into_iter().filter(|c| !c.reply.abandoned()).collect();
    if batch.is_empty() {
        return Vec::new();
    }
    let items: Vec<(Pubkey, Root, Proposal)> = batch
        .iter()
        .map(|c| (c.pubkey, c.gvr, c.proposal))
        .collect();
    let n = batch.len() as u64;
    counters.requests.fetch_add(n, Ordering::Relaxed);
    counters.largest_batch.fetch_max(n, Ordering::Relaxed);
    let began = std::time::Instant::now();
    let applied = guarded(|| apply_checks(store, &items));
    let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counters
        .transaction_nanos
        .fetch_add(took, Ordering::Relaxed);
    // Counted before the answers leave, so that a caller reads the trips its batch took.
    counters
        .round_trips
        .store(store.round_trips(), Ordering::Relaxed);
    match applied {
        Ok(verdicts) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            batch
                .into_iter()
                .zip(verdicts)
                .map(|(check, verdict)| {
                    match &verdict {
                        Ok(Allowed::Repeat) => counters.repeats.fetch_add(1, Ordering::Relaxed),
                        Ok(Allowed::Recorded) => 0,
                        Err(_) => counters.refused.fetch_add(1, Ordering::Relaxed),
                    };
                    (
                        check.reply,
                        verdict.map(|_| ()).map_err(SlashingError::Refused),
                    )
                })
                .collect()
        }
        Err(e) => {
            counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
            tracing::error!("slashing protection: transaction of {n} requests failed: {e}");
            let reason = match e {
                SlashingError::Store(m) => m,
                other => other.to_string(),
            };
            batch
                .into_iter()
                .map(|check| (check.reply, Err(SlashingError::Store(reason.clone()))))
                .collect()
        }
    }
}

/// Apply `items` (pubkey, the request's genesis validators root, proposal) in order in one
/// transaction; a verdict per item. `Err` means nothing was committed.
pub(crate) fn apply_checks<S: SlashingStore>(
    store: &mut S,
    items: &[(Pubkey, Root, Proposal)],
) -> Result<Vec<Verdict>, SlashingError> {
    store.transaction(|tx| {
        // Lock every validator of the batch first, in pubkey order: a store shared by several
        // processes (PostgreSQL row locks) can then never deadlock on two batches. Each one's
        // deletion mark is read under its lock, which a Keymanager DELETE takes too: a deletion
        // committed by any instance before now is seen, so no instance records (and signs)
        // after it.
        let mut keys: Vec<Pubkey> = items.iter().map(|(pk, _, _)| *pk).collect();
        keys.sort();
        keys.dedup();
        let states = tx.lock_validators(&keys)?;
        if states.len() != keys.len() {
            return Err(SlashingError::Store("validator lock lost".into()));
        }
        let mut locked: HashMap<Pubkey, ValidatorState> = keys.into_iter().zip(states).collect();
        let mut network = tx.genesis_validators_root()?;
        let mut verdicts = Vec::with_capacity(items.len());
        for (pk, gvr, proposal) in items {
            let v = locked
                .get_mut(pk)
                .ok_or_else(|| SlashingError::Store("validator lock lost".into()))?;
            if v.deleted {
                verdicts.push(Err(Refusal::KeyDeleted { pubkey: *pk }));
                continue;
            }
            let expected = match network {
                Some(g) => g,
                None => {
                    tx.set_genesis_validators_root(gvr)?;
                    network = Some(*gvr);
                    *gvr
                }
            };
            if expected != *gvr {
                verdicts.push(Err(Refusal::GenesisValidatorsRootMismatch {
                    expected,
                    got: *gvr,
                }));
                continue;
            }
            verdicts.push(rules::check_and_record(tx, v, proposal)?);
        }
        Ok(verdicts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn check(key: u8, proposal: Proposal) -> Job {
        let (reply, _) = mpsc::sync_channel(1);
        Job::Check(Check {
            pubkey: [key; 48],
            gvr: [0; 32],
            proposal,
            reply: Reply::Blocking(reply),
        })
    }

    fn block(key: u8, slot: u64) -> Job {
        check(
            key,
            Proposal::Block {
                slot,
                signing_root: [1; 32],
            },
        )
    }

    fn vote(key: u8, target: u64) -> Job {
        check(
            key,
            Proposal::Attestation {
                source_epoch: 0,
                target_epoch: target,
                signing_root: [2; 32],
            },
        )
    }

    fn keys(checks: &[Check]) -> Vec<u8> {
        checks.iter().map(|c| c.pubkey[0]).collect()
    }

    #[test]
    fn blocks_queued_among_attestations_come_out_first_and_in_order_and_tasks_wait() {
        let (tx, rx) = mpsc::sync_channel(64);
        for job in [
            vote(2, 1),
            block(7, 10),
            vote(3, 1),
            block(8, 10),
            vote(4, 1),
        ] {
            tx.send(job).unwrap();
        }
        let (r, _) = mpsc::sync_channel(1);
        tx.send(Job::Task(Task::DeletedKeys(Reply::Blocking(r))))
            .unwrap();
        tx.send(vote(5, 1)).unwrap();
        let mut pending = None;
        let Ok((blocks, batch)) = gather(vote(1, 1), &rx, 512, ZERO, &mut pending) else {
            panic!("the first job is a check");
        };
        assert_eq!(keys(&blocks), [7, 8]);
        assert_eq!(keys(&batch), [1, 2, 3, 4]);
        // The task stops the gathering; what is behind it waits for the next round.
        assert!(matches!(pending, Some(Job::Task(Task::DeletedKeys(_)))));
        assert!(matches!(rx.try_recv(), Ok(Job::Check(c)) if c.pubkey[0] == 5));
        // The cap counts every check, blocks included.
        for job in [block(9, 11), vote(6, 1), vote(7, 1)] {
            tx.send(job).unwrap();
        }
        let Ok((blocks, batch)) = gather(vote(5, 2), &rx, 3, ZERO, &mut pending) else {
            panic!("the first job is a check");
        };
        assert_eq!((keys(&blocks), keys(&batch)), (vec![9], vec![5, 6]));
        assert!(gather(vote(1, 1), &rx, 512, ZERO, &mut None).is_ok());
        let (r, _) = mpsc::sync_channel(1);
        assert!(gather(
            Job::Task(Task::DeletedKeys(Reply::Blocking(r))),
            &rx,
            512,
            ZERO,
            &mut None
        )
        .is_err());
    }

    const ZERO: Duration = Duration::ZERO;

    /// Send `jobs` from another thread, each after its delay.
    fn send_later(tx: SyncSender<Job>, jobs: Vec<(Duration, Job)>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for (delay, job) in jobs {
                std::thread::sleep(delay);
                if tx.send(job).is_err() {
                    return;
                }
            }
        })
    }

    #[test]
    fn the_gathering_wait_takes_checks_that_arrive_and_ends_at_once_when_a_block_comes() {
        let (tx, rx) = mpsc::sync_channel(64);
        let ms = Duration::from_millis;
        let sender = send_later(
            tx.clone(),
            vec![
                (ms(20), vote(2, 1)),
                (ms(20), vote(3, 1)),
                (ms(20), block(9, 4)),
            ],
        );
        let started = Instant::now();
        let Ok((blocks, batch)) = gather(vote(1, 1), &rx, 512, Duration::from_secs(30), &mut None)
        else {
            panic!("the first job is a check");
        };
        // Bounded far below the 30 s wait: the block ended it.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!((keys(&blocks), keys(&batch)), (vec![9], vec![1, 2, 3]));
        sender.join().unwrap();

        // A task arriving ends it too, and waits for the next round.
        let (r, _) = mpsc::sync_channel(1);
        let sender = send_later(
            tx.clone(),
            vec![
                (ms(20), vote(2, 2)),
                (ms(20), Job::Task(Task::DeletedKeys(Reply::Blocking(r)))),
            ],
        );
        let mut pending = None;
        let started = Instant::now();
        let gathered = gather(vote(1, 2), &rx, 512, Duration::from_secs(30), &mut pending);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(gathered, Ok((b, v)) if b.is_empty() && keys(&v) == [1, 2]));
        assert!(matches!(pending, Some(Job::Task(_))));
        sender.join().unwrap();
    }

    #[test]
    fn the_gathering_wait_counts_from_the_first_check_however_long_the_trickle() {
        let (tx, rx) = mpsc::sync_channel(64);
        // A check every 10 ms for 20 s; the wait is 300 ms from the first.
        let trickle = (0..2_000u64)
            .map(|i| (Duration::from_millis(10), vote((i % 200) as u8, 3)))
            .collect();
        let sender = send_later(tx, trickle);
        let started = Instant::now();
        let Ok((_, batch)) = gather(vote(1, 3), &rx, 512, Duration::from_millis(300), &mut None)
        else {
            panic!("the first job is a check");
        };
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(batch.len() >= 2 && batch.len() < 1_000, "{}", batch.len());
        drop(rx);
        sender.join().unwrap();
    }

    #[test]
    fn a_lone_check_on_an_idle_writer_does_not_wait_for_company() {
        let dir = tempfile::tempdir().unwrap();
        let sp = SlashingProtection::open_sqlite_with(
            &dir.path().join("sp.sqlite"),
            Some([1; 32]),
            Options {
                gather_wait: Duration::from_secs(30),
                ..Options::default()
            },
        )
        .unwrap();
        for target in 1..=3u64 {
            let started = Instant::now();
            sp.check_and_record(
                &[3; 48],
                &[1; 32],
                Proposal::Attestation {
                    source_epoch: 0,
                    target_epoch: target,
                    signing_root: [target as u8; 32],
                },
            )
            .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
        }
    }
}
