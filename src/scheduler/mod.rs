//! The device-aware queue (DESIGN §2). Two scarce resources in one priority order: device
//! sessions (one worker thread per session, so a device's cap can never be exceeded) and CPU
//! signing threads (blst never runs on the async runtime). A job first opens its envelope on its
//! device, then signs on a CPU worker; both stages take the highest class first, within it the
//! freshest duty slot, then the oldest arrival.
//!
//! Rules: a block waits at most for one operation in flight per device, and for no signature
//! at all: each device has a block thread besides its session threads, idle but for blocks and
//! at real-time OS priority where the host allows it ([`raise_thread_priority`]); it opens a
//! block's envelope in the next free session (a session thread never takes one a block waits
//! for) and signs it, or combines a threshold block's shares, where it stands, while the bulk
//! CPU workers (at the lowest OS priority) finish theirs. A rescue worker stands in for bulk
//! workers starved by other load on the host (see [`SchedulerConfig::starved_after`]).
//! Background work never takes a device's last free
//! session; the queue is bounded and sheds the lowest class first; within a class the freshest
//! work goes first ([`queue`] says why); a job past its deadline is refused, never signed; a job
//! whose client went away frees its place at once. Envelopes
//! opened, or being opened, ahead of the CPU workers are bounded (blocks excepted), so a burst
//! never piles plaintext keys up in memory; the bound follows the measured device and signing
//! times ([`ahead_limit`]), so a slow device still keeps the CPU workers fed. A freed place
//! wakes one device thread, the one with the most urgent work, never every device's.

mod metrics;
pub mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blst::min_pk::{SecretKey, Signature};
use hsm::Device;
use tokio::sync::oneshot;

pub use metrics::SchedulerMetrics;
pub use queue::{Class, Next, Queued, Urgency, CLASSES};

use crate::devices::Devices;
use crate::error::SignerError;
use crate::keys::threshold::{self, CombineError, HashedMessage, ThresholdKey};
use crate::keys::{KeyRecord, PublicKeyBytes};
use crate::scheduler::queue::ClassQueues;

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// CPU signing threads (default: the number of cores).
    pub cpu_workers: usize,
    /// Jobs that may wait for a device, all devices together.
    pub queue_capacity: usize,
    /// Longest wait per class when no slot deadline applies.
    pub max_queue_time: [Duration; CLASSES],
    /// Priorities off: one FIFO, no background rule (the benchmark's baseline).
    pub fifo: bool,
    /// Envelopes opened ahead of a CPU: being opened on a device, or opened and waiting for
    /// a CPU worker (blocks are not counted). It bounds the plaintext secrets in memory, and
    /// must cover the devices' latency, or the CPU workers wait for envelopes while work is
    /// queued. Default (`None`): adaptive, see [`ahead_limit`].
    pub cpu_buffer: Option<usize>,
    /// A threshold job whose shares are not all back after this long asks one more device.
    pub hedge_delay: Duration,
    /// An opened envelope that has waited this long for a bulk CPU worker is signed by the
    /// rescue worker instead. Bulk workers run at `SCHED_IDLE`: on a host where other
    /// processes keep every core busy they would get almost nothing, and attestations would
    /// miss their slot. The rescue worker runs at normal priority, so bulk work then goes on
    /// at one core's pace.
    pub starved_after: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        SchedulerConfig {
            cpu_workers: cores,
            queue_capacity: 100_000,
            max_queue_time: [
                Duration::from_secs(4),
                Duration::from_secs(8),
                Duration::from_secs(8),
                Duration::from_secs(30),
                Duration::from_secs(12),
            ],
            fifo: false,
            cpu_buffer: None,
            hedge_delay: Duration::from_millis(250),
            starved_after: Duration::from_millis(100),
        }
    }
}

impl SchedulerConfig {
    /// The defaults, with what `[scheduler]` sets.
    pub fn from_settings(s: &crate::config::SchedulerSettings) -> SchedulerConfig {
        let mut c = SchedulerConfig::default();
        if let Some(n) = s.cpu_workers {
            c.cpu_workers = n.max(1);
        }
        if let Some(n) = s.queue_capacity {
            c.queue_capacity = n;
        }
        if let Some(ms) = s.starved_after_ms {
            c.starved_after = Duration::from_millis(ms.max(1));
        }
        c
    }
}

/// One signature to make.
#[derive(Debug, Clone)]
pub struct SignJob {
    /// The key.
    pub key: Arc<KeyRecord>,
    /// What to sign.
    pub signing_root: [u8; 32],
    /// Priority class.
    pub class: Class,
    /// When the work stops being worth doing, if ever: for a signing request the end of its
    /// validity window (`crate::consensus::validity`), for a precomputed proof the moment its
    /// client needs it. The class's maximum queue time applies too.
    pub deadline: Option<Instant>,
    /// Within its class, work of a higher freshness runs first: the slot of its duty, capped at
    /// the current slot; 0 for work with no slot, which runs in arrival order ([`queue`]).
    pub freshness: u64,
}

/// Which limit a job ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The deadline its caller gave ([`SignJob::deadline`]; for a signing request, the end of
    /// its validity window, as the refusal says).
    Deadline,
    /// Its class's maximum queue time ([`SchedulerConfig::max_queue_time`]).
    QueueTime(Duration),
}

/// Where a job was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before it was queued.
    Submitted,
    /// Waiting for a device session.
    Device,
    /// Its envelope opened, waiting for a signing thread.
    Cpu,
}

/// Why a job did not produce a signature.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A device needed is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// The queue is full (503 with Retry-After).
    #[error("signer overloaded: {0} work shed; retry shortly")]
    Overloaded(&'static str),
    /// The deadline passed before the job could run (503); nothing was signed.
    #[error("{}", expired_message(*.class, *.limit, *.stage, *.waited))]
    Expired {
        /// The job's class.
        class: Class,
        /// The limit it ran into.
        limit: Limit,
        /// Where it waited.
        stage: Stage,
        /// How long it waited.
        waited: Duration,
    },
    /// Anything else (500): integrity failure, BLS failure, …
    #[error("{0}")]
    Failed(SignerError),
    /// Internal: partials of these shares were wrong (retried with other shares).
    #[error("faulty shares {0:?}")]
    Faulty(Vec<crate::keys::ShareId>),
}

/// Why an expired job was not signed, in words: what it waited for and which limit passed.
fn expired_message(class: Class, limit: Limit, stage: Stage, waited: Duration) -> String {
    let limit = match limit {
        Limit::Deadline => "the end of its validity window".to_owned(),
        Limit::QueueTime(max) => format!(
            "the {:.1} s a job of the {} class may wait",
            max.as_secs_f64(),
            class.label()
        ),
    };
    let (what, busy) = match stage {
        Stage::Submitted => {
            return format!("{limit} had passed when it was submitted; nothing was signed")
        }
        Stage::Device => ("a device session", "the devices"),
        Stage::Cpu => ("a signing thread", "the signing threads"),
    };
    format!(
        "waited {:.1} s for {what}, past {limit}, because {busy} were busy with other work; \
         nothing was signed",
        waited.as_secs_f64()
    )
}

impl JobError {
    fn expired(ctx: &Ctx, stage: Stage) -> JobError {
        JobError::Expired {
            class: ctx.class,
            limit: ctx.limit,
            stage,
            waited: ctx.enqueued.elapsed(),
        }
    }
}

impl From<SignerError> for JobError {
    fn from(e: SignerError) -> Self {
        match e {
            SignerError::Hsm(h) if h.is_unavailable() => JobError::Unavailable(h.to_string()),
            other => JobError::Failed(other),
        }
    }
}

type Reply = oneshot::Sender<Result<Signature, JobError>>;

/// A job as the workers see it.
struct Ctx {
    id: u64,
    class: Class,
    freshness: u64,
    deadline: Instant,
    /// Which limit `deadline` is.
    limit: Limit,
    enqueued: Instant,
    key: Arc<KeyRecord>,
    root: [u8; 32],
    cancelled: AtomicBool,
    reply: Mutex<Option<Reply>>,
    /// For a t-of-n key: which shares were asked and what came back.
    threshold: Option<Mutex<ThresholdJob>>,
}

/// The state of one threshold signature across its devices.
struct ThresholdJob {
    key: Arc<ThresholdKey>,
    /// Share indices asked so far (queued, in flight or answered).
    asked: Vec<usize>,
    /// Shares whose device failed, or whose partial was wrong.
    excluded: Vec<usize>,
    /// Opened shares not yet combined.
    collected: Vec<(usize, SecretKey)>,
    /// Device tasks queued or in flight.
    outstanding: usize,
    /// A CPU task holds t shares right now.
    combining: bool,
    /// Why devices failed, for the 503 message.
    failures: Vec<String>,
}

impl Ctx {
    fn new(
        id: u64,
        job: SignJob,
        (deadline, limit): (Instant, Limit),
        enqueued: Instant,
        tx: Reply,
        threshold: Option<Mutex<ThresholdJob>>,
    ) -> Arc<Ctx> {
        Arc::new(Ctx {
            id,
            class: job.class,
            freshness: job.freshness,
            deadline,
            limit,
            enqueued,
            key: job.key,
            root: job.signing_root,
            cancelled: AtomicBool::new(false),
            reply: Mutex::new(Some(tx)),
            threshold,
        })
    }

    fn answer(&self, result: Result<Signature, JobError>) {
        if let Some(tx) = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(result);
        }
    }
    fn gone(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
            || self
                .reply
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(|tx| tx.is_closed())
    }
}

/// A job's visit to one device: which share it opens there.
struct DevTask(Arc<Ctx>, usize);

struct CpuTask {
    ctx: Arc<Ctx>,
    /// When it joined the CPU queue (the rescue worker's starvation check).
    queued_at: Instant,
    /// (share index, opened secret): one for a whole key, t for a threshold key.
    secrets: Vec<(usize, SecretKey)>,
}

impl Queued for DevTask {
    fn class(&self) -> Class {
        self.0.class
    }
    fn freshness(&self) -> u64 {
        self.0.freshness
    }
    fn deadline(&self) -> Instant {
        self.0.deadline
    }
    fn cancelled(&self) -> bool {
        self.0.gone()
    }
    fn id(&self) -> u64 {
        self.0.id
    }
}

impl Queued for CpuTask {
    fn class(&self) -> Class {
        self.ctx.class
    }
    fn freshness(&self) -> u64 {
        self.ctx.freshness
    }
    fn deadline(&self) -> Instant {
        self.ctx.deadline
    }
    fn cancelled(&self) -> bool {
        self.ctx.gone()
    }
    fn id(&self) -> u64 {
        self.ctx.id
    }
}

struct State {
    dev_q: Vec<ClassQueues<DevTask>>,
    dev_busy: Vec<usize>,
    dev_busy_background: Vec<usize>,
    cpu_q: ClassQueues<CpuTask>,
    cpu_buffered: usize,
    /// Non-block device operations in flight: envelopes being opened, counted against the
    /// CPU buffer with those opened.
    opening: usize,
    waiting: usize,
    next_id: u64,
    shutdown: bool,
    /// Bulk CPU workers take nothing while set (tests: "every core is busy" as a state).
    bulk_paused: bool,
    /// While set and in the future, the rescue worker signs bulk work as soon as it is queued:
    /// the bulk workers were found starved (see [`SchedulerConfig::starved_after`]).
    rescue_until: Option<Instant>,
}

/// Counters tests and benchmarks read.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Most device operations ever in flight at once, per device.
    pub peak_device_busy: Vec<AtomicUsize>,
    /// Most background device operations ever in flight at once, per device.
    pub peak_background_busy: Vec<AtomicUsize>,
}

struct Inner {
    devices: Devices,
    dev_list: Vec<Arc<Device>>,
    dev_index: HashMap<String, usize>,
    caps: Vec<usize>,
    config: SchedulerConfig,
    /// The most that `cpu_buffer: None` lets ahead: two per CPU worker and every session.
    cpu_buffer_max: usize,
    /// Measured device operation and signature times, for the adaptive CPU buffer.
    pace: Pace,
    state: Mutex<State>,
    dev_cv: Vec<Condvar>,
    /// Wakes a device's block thread (priorities on): the one thread per device that takes
    /// blocks, at real-time priority where the host allows it.
    block_cv: Vec<Condvar>,
    cpu_cv: Condvar,
    /// Wakes the rescue worker, which signs bulk work the bulk workers are too starved to take.
    rescue_cv: Condvar,
    /// Mirrors `State::rescue_until` being set, for `notify_cpu` (which runs without the lock).
    rescuing: AtomicBool,
    metrics: Arc<SchedulerMetrics>,
    stats: SchedulerStats,
    /// Threshold keys with their public keys parsed and validated once.
    threshold_keys: Mutex<HashMap<PublicKeyBytes, Arc<ThresholdKey>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task was queued for a CPU: wake a bulk worker (and the rescue worker too while it
    /// stands in for starved bulk workers).
    fn notify_cpu(&self) {
        self.cpu_cv.notify_one();
        if self.rescuing.load(Ordering::Relaxed) {
            self.rescue_cv.notify_one();
        }
    }

    /// The urgency of the job a free thread of device `d` would start now, if any: a session
    /// is free and the job at the head of its queue may start (a block always; other work while
    /// the CPU buffer has room; background only with a second session free).
    fn runnable_on(&self, st: &State, d: usize) -> Option<Urgency> {
        let free = self.caps[d].saturating_sub(st.dev_busy[d]);
        let (class, key) = st.dev_q[d].head()?;
        let may = free >= 1
            && (class == Class::Block
                || (self.cpu_room(st)
                    && (class != Class::Background || free >= 2 || self.config.fifo)));
        may.then_some(key)
    }

    /// Whether another envelope may be opened ahead of a CPU (blocks may always).
    fn cpu_room(&self, st: &State) -> bool {
        st.cpu_buffered + st.opening < self.cpu_buffer_limit()
    }

    /// The CPU buffer's size now: as configured, or adapted to the measured pace.
    fn cpu_buffer_limit(&self) -> usize {
        self.config.cpu_buffer.unwrap_or_else(|| {
            ahead_limit(
                self.config.cpu_workers.max(1),
                self.pace.device_op(),
                self.pace.sign(),
            )
            .min(self.cpu_buffer_max)
        })
    }

    /// Wake one device thread: on the device whose next job is the most urgent of those that
    /// may start now (none, if none may). Called once per free place (a CPU buffer slot, a
    /// session); the thread woken wakes a sibling if more may start after its job
    /// ([`device_worker`]). Waking a thread on every device woke all but one for nothing, and
    /// each such wake-up preempted a bulk signing thread.
    fn wake_a_device(&self, st: &State) {
        if let Some(cv) = self.device_to_wake(st) {
            cv.notify_one();
        }
    }

    /// What [`Inner::wake_a_device`] would wake, to be woken once the lock is released.
    fn device_to_wake(&self, st: &State) -> Option<&Condvar> {
        (0..self.dev_list.len())
            .filter_map(|d| self.runnable_on(st, d).map(|key| (key, d)))
            .min()
            .map(|(_, d)| self.device_cv(st, d))
    }

    /// Wake the thread of device `d` that would take the head of its queue.
    fn notify_device(&self, st: &State, d: usize) {
        self.device_cv(st, d).notify_one();
    }

    /// Where the thread that would take the head of device `d`'s queue waits: its block thread
    /// for a block, else one of its session threads.
    fn device_cv(&self, st: &State, d: usize) -> &Condvar {
        match st.dev_q[d].head() {
            Some((Class::Block, _)) if !self.config.fifo => &self.block_cv[d],
            _ => &self.dev_cv[d],
        }
    }

    fn threshold_key(&self, record: &KeyRecord) -> Result<Arc<ThresholdKey>, JobError> {
        let mut cache = self
            .threshold_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(&record.pubkey) {
            return Ok(k.clone());
        }
        let key = Arc::new(ThresholdKey::from_record(record).map_err(JobError::Failed)?);
        cache.insert(record.pubkey, key.clone());
        Ok(key)
    }

    /// The shares to ask next: not yet asked or excluded, on an open and enabled device, the
    /// least loaded first (queued + in flight), then the lowest id.
    fn pick_shares(&self, st: &State, ctx: &Ctx, job: &ThresholdJob, want: usize) -> Vec<usize> {
        let mut candidates: Vec<(usize, usize, u64)> = ctx
            .key
            .shares
            .iter()
            .enumerate()
            .filter(|(i, _)| !job.asked.contains(i) && !job.excluded.contains(i))
            .filter_map(|(i, share)| {
                let d = *self.dev_index.get(&share.device)?;
                self.dev_list[d]
                    .is_enabled()
                    .then(|| (i, st.dev_q[d].len() + st.dev_busy[d], share.id.get()))
            })
            .collect();
        candidates.sort_by_key(|&(_, load, id)| (load, id));
        candidates
            .into_iter()
            .take(want)
            .map(|(i, _, _)| i)
            .collect()
    }

    /// Queue a threshold job's visit to share `i`'s device.
    fn ask(
        &self,
        st: &mut State,
        ctx: &Arc<Ctx>,
        job: &mut ThresholdJob,
        i: usize,
    ) -> Option<usize> {
        let d = *self.dev_index.get(&ctx.key.shares[i].device)?;
        job.asked.push(i);
        job.outstanding += 1;
        st.waiting += 1;
        st.dev_q[d].push(DevTask(ctx.clone(), i));
        Some(d)
    }

    /// Ask replacements for shares that failed, or give up with a 503 when fewer than t shares
    /// can still come back. Call with the state lock held.
    fn top_up(&self, st: &mut State, ctx: &Arc<Ctx>, job: &mut ThresholdJob) {
        if job.combining {
            return;
        }
        let need = job
            .key
            .threshold
            .saturating_sub(job.collected.len() + job.outstanding);
        if need == 0 {
            return;
        }
        let picks = self.pick_shares(st, ctx, job, need);
        for i in &picks {
            if let Some(d) = self.ask(st, ctx, job, *i) {
                self.notify_device(st, d);
            }
        }
        if picks.len() < need && job.outstanding == 0 {
            job.collected.clear();
            ctx.answer(Err(JobError::Unavailable(format!(
                "fewer than {} of {} devices holding shares of {} can sign: {}",
                job.key.threshold,
                ctx.key.shares.len(),
                ctx.key.pubkey,
                if job.failures.is_empty() {
                    "devices disabled or not open".to_owned()
                } else {
                    job.failures.join("; ")
                }
            ))));
        }
    }
}

/// The tokio runtime the request path runs on. Every reply comes from a scheduler thread, so
/// it wakes its task through tokio's global queue, which a busy worker by default checks only
/// every 61 polls; under a herd of new requests a block's reply would wait behind them. Checking
/// every 4 polls costs little and keeps that wait to a few polls. (One worker fewer than the
/// cores was tried too: a few runs were better, but its worst runs were far worse.)
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .global_queue_interval(4)
        .on_thread_start(|| set_own_nice(RUNTIME_NICE))
        .build()
}

/// The OS priority order of the signer's threads: the devices' block threads at real-time
/// priority where allowed ([`raise_thread_priority`]); session threads and the rescue worker at
/// normal priority, since their work is short; the async runtime (parsing, slashing checks,
/// replies) at nice 5, since a herd of requests must not take the cores from a block's
/// signature; bulk signing at `SCHED_IDLE`, on what is left.
const RUNTIME_NICE: i32 = 5;

/// Lower the calling thread's priority to `nice` (raising it back would need privilege).
pub(crate) fn set_own_nice(nice: i32) {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!(error = %e, "could not lower a thread's priority");
    }
}

/// The scheduler. Cheap to clone; worker threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
    _workers: Arc<Workers>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Owns the worker threads: stops and joins them when dropped, so devices (and their PKCS#11
/// sessions) are released before the caller goes on — never by a straggler thread racing the
/// module's own teardown at process exit.
struct Workers {
    inner: Arc<Inner>,
    handles: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.inner.lock().shutdown = true;
        for cv in self.inner.dev_cv.iter().chain(&self.inner.block_cv) {
            cv.notify_all();
        }
        self.inner.cpu_cv.notify_all();
        self.inner.rescue_cv.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Scheduler {
    /// A scheduler over `devices` with default settings.
    pub fn new(devices: Devices) -> Scheduler {
        Self::with_config(devices, SchedulerConfig::default(), Arc::default())
    }

    /// A scheduler with explicit settings and metrics.
    pub fn with_config(
        devices: Devices,
        config: SchedulerConfig,
        metrics: Arc<SchedulerMetrics>,
    ) -> Scheduler {
        let dev_list: Vec<Arc<Device>> = devices.iter().cloned().collect();
        let caps: Vec<usize> = dev_list
            .iter()
            .map(|d| d.config().max_sessions.max(1))
            .collect();
        let n = dev_list.len();
        let inner = Arc::new(Inner {
            cpu_buffer_max: 2 * config.cpu_workers.max(1) + caps.iter().sum::<usize>(),
            pace: Pace::default(),
            dev_index: dev_list
                .iter()
                .enumerate()
                .map(|(i, d)| (d.name().to_owned(), i))
                .collect(),
            devices,
            caps: caps.clone(),
            state: Mutex::new(State {
                dev_q: (0..n).map(|_| ClassQueues::new(config.fifo)).collect(),
                dev_busy: vec![0; n],
                dev_busy_background: vec![0; n],
                cpu_q: ClassQueues::new(config.fifo),
                cpu_buffered: 0,
                opening: 0,
                waiting: 0,
                next_id: 0,
                shutdown: false,
                bulk_paused: false,
                rescue_until: None,
            }),
            dev_cv: (0..n).map(|_| Condvar::new()).collect(),
            block_cv: (0..n).map(|_| Condvar::new()).collect(),
            cpu_cv: Condvar::new(),
            rescue_cv: Condvar::new(),
            rescuing: AtomicBool::new(false),
            stats: SchedulerStats {
                peak_device_busy: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                peak_background_busy: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            },
            dev_list,
            config,
            metrics,
            threshold_keys: Mutex::default(),
        });
        let mut handles = Vec::new();
        for (d, cap) in caps.iter().enumerate() {
            for w in 0..*cap {
                let inner = inner.clone();
                let name = format!("dev{d}-{w}");
                handles.extend(
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || device_worker(inner, d, false)),
                );
            }
            if !inner.config.fifo {
                let inner = inner.clone();
                handles.extend(
                    std::thread::Builder::new()
                        .name(format!("dev{d}-block"))
                        .spawn(move || {
                            raise_thread_priority();
                            device_worker(inner, d, true)
                        }),
                );
            }
        }
        for w in 0..inner.config.cpu_workers.max(1) {
            let inner = inner.clone();
            handles.extend(
                std::thread::Builder::new()
                    .name(format!("cpu-{w}"))
                    .spawn(move || {
                        // Priorities off (the FIFO baseline): OS priorities off too.
                        if !inner.config.fifo {
                            lower_thread_priority();
                        }
                        cpu_worker(inner, false)
                    }),
            );
        }
        if !inner.config.fifo {
            let inner = inner.clone();
            handles.extend(
                std::thread::Builder::new()
                    .name("cpu-rescue".into())
                    .spawn(move || cpu_worker(inner, true)),
            );
        }
        Scheduler {
            _workers: Arc::new(Workers {
                inner: inner.clone(),
                handles: Mutex::new(handles),
            }),
            inner,
        }
    }

    /// Forget what was cached about a key (its threshold shares' public keys), so that a key
    /// deleted and imported again with new shares is not checked against the old ones.
    pub fn forget_key(&self, pubkey: &PublicKeyBytes) {
        self.inner
            .threshold_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pubkey);
    }

    /// The devices it schedules on.
    pub fn devices(&self) -> &Devices {
        &self.inner.devices
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &Arc<SchedulerMetrics> {
        &self.inner.metrics
    }

    /// Counters for tests and benchmarks.
    pub fn stats(&self) -> &SchedulerStats {
        &self.inner.stats
    }

    /// Envelopes that may be opened ahead of the CPU workers now.
    pub fn cpu_buffer_limit(&self) -> usize {
        self.inner.cpu_buffer_limit()
    }

    /// Jobs waiting for a device, and opened envelopes waiting for a CPU.
    pub fn queued(&self) -> (usize, usize) {
        let st = self.inner.lock();
        (st.waiting, st.cpu_q.len())
    }

    /// Hold the bulk CPU workers (they finish what they hold and take nothing new) or release
    /// them. For tests, which need "every core busy" as a state rather than a race.
    #[doc(hidden)]
    pub fn pause_bulk_cpu(&self, paused: bool) {
        self.inner.lock().bulk_paused = paused;
        self.inner.cpu_cv.notify_all();
    }

    /// Device names with sessions in use, for the metrics gauges.
    pub fn sessions_in_use(&self) -> Vec<(String, usize, usize)> {
        let st = self.inner.lock();
        self.inner
            .dev_list
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name().to_owned(), st.dev_busy[i], self.inner.caps[i]))
            .collect()
    }

    /// Run `probe` on device `name` as background work: only while the device has two
    /// sessions free or more (so that one stays free for a block, the rule background signing
    /// follows), and counted among its sessions in use meanwhile, so that the scheduler never
    /// has more operations on the device than its cap. `None`: unknown device, or no session
    /// to spare now (the device is busy signing; its own outcomes say whether it is up).
    /// Blocks while `probe` runs: call from a blocking thread.
    pub fn probe_device<T>(&self, name: &str, probe: impl FnOnce(&Device) -> T) -> Option<T> {
        let inner = &self.inner;
        let d = inner.dev_list.iter().position(|dev| dev.name() == name)?;
        {
            let mut st = inner.lock();
            if st.shutdown || inner.caps[d].saturating_sub(st.dev_busy[d]) < 2 {
                return None;
            }
            st.dev_busy[d] += 1;
        }
        /// Gives the session place back (and wakes whoever may take it), even if `probe`
        /// panics.
        struct Place<'a>(&'a Inner, usize);
        impl Drop for Place<'_> {
            fn drop(&mut self) {
                let (inner, d) = (self.0, self.1);
                let mut st = inner.lock();
                st.dev_busy[d] -= 1;
                if inner.runnable_on(&st, d).is_some() {
                    inner.notify_device(&st, d);
                }
            }
        }
        let _place = Place(inner, d);
        Some(probe(&inner.dev_list[d]))
    }

    /// Sign `job`. Resolves when the signature is made or the job is refused; dropping the
    /// future (the client went away) frees the job's place in the queue.
    pub async fn sign(&self, job: SignJob) -> Result<Signature, JobError> {
        let (tx, mut rx) = oneshot::channel();
        let ctx = self.submit(job, tx)?;
        let mut guard = CancelOnDrop {
            sched: self,
            id: ctx.id,
            armed: true,
        };
        let result = if ctx.threshold.is_some() {
            // A device that is late beyond the hedge delay: ask one more, once per delay.
            loop {
                tokio::select! {
                    r = &mut rx => break r,
                    _ = tokio::time::sleep(self.inner.config.hedge_delay) => self.hedge(&ctx),
                }
            }
        } else {
            rx.await
        };
        guard.armed = false;
        result.unwrap_or_else(|_| {
            Err(JobError::Failed(SignerError::Invalid(
                "the scheduler stopped".into(),
            )))
        })
    }

    fn hedge(&self, ctx: &Arc<Ctx>) {
        let Some(thr) = &ctx.threshold else { return };
        let inner = &self.inner;
        let mut st = inner.lock();
        let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
        if job.combining || ctx.gone() {
            return;
        }
        if let Some(i) = inner.pick_shares(&st, ctx, &job, 1).first().copied() {
            if let Some(d) = inner.ask(&mut st, ctx, &mut job, i) {
                inner.metrics.hedges.fetch_add(1, Ordering::Relaxed);
                inner.notify_device(&st, d);
            }
        }
    }

    fn submit_threshold(
        &self,
        job: SignJob,
        tx: Reply,
        deadline: (Instant, Limit),
        now: Instant,
    ) -> Result<Arc<Ctx>, JobError> {
        let inner = &self.inner;
        let key = inner.threshold_key(&job.key)?;
        let t = key.threshold;
        let mut st = inner.lock();
        if st.waiting + t > inner.config.queue_capacity {
            inner.metrics.shed_overload[job.class as usize].fetch_add(1, Ordering::Relaxed);
            return Err(JobError::Overloaded(job.class.label()));
        }
        let id = st.next_id;
        st.next_id += 1;
        let ctx = Ctx::new(
            id,
            job,
            deadline,
            now,
            tx,
            Some(Mutex::new(ThresholdJob {
                key,
                asked: Vec::new(),
                excluded: Vec::new(),
                collected: Vec::new(),
                outstanding: 0,
                combining: false,
                failures: Vec::new(),
            })),
        );
        let thr = ctx
            .threshold
            .as_ref()
            .ok_or_else(|| JobError::Unavailable("internal".into()))?;
        let mut tj = thr.lock().unwrap_or_else(|p| p.into_inner());
        let picks = inner.pick_shares(&st, &ctx, &tj, t);
        if picks.len() < t {
            return Err(JobError::Unavailable(format!(
                "fewer than {t} of {} devices holding shares of {} are available",
                ctx.key.shares.len(),
                ctx.key.pubkey
            )));
        }
        let mut devices = Vec::new();
        for i in picks {
            devices.extend(inner.ask(&mut st, &ctx, &mut tj, i));
        }
        drop(tj);
        for d in devices {
            inner.notify_device(&st, d);
        }
        drop(st);
        Ok(ctx)
    }

    fn submit(&self, job: SignJob, tx: Reply) -> Result<Arc<Ctx>, JobError> {
        let inner = &self.inner;
        let now = Instant::now();
        let max_wait = inner.config.max_queue_time[job.class as usize];
        let max = now + max_wait;
        let deadline = match job.deadline {
            Some(d) if d < max => (d, Limit::Deadline),
            _ => (max, Limit::QueueTime(max_wait)),
        };
        if deadline.0 <= now {
            inner.metrics.shed_expired[job.class as usize].fetch_add(1, Ordering::Relaxed);
            return Err(JobError::Expired {
                class: job.class,
                limit: deadline.1,
                stage: Stage::Submitted,
                waited: Duration::ZERO,
            });
        }
        if job.key.threshold != 1 || job.key.shares.len() != 1 {
            return self.submit_threshold(job, tx, deadline, now);
        }
        let device_name = &job.key.shares[0].device;
        let device = *inner.dev_index.get(device_name).ok_or_else(|| {
            JobError::Unavailable(format!(
                "device {device_name} is not available to this signer"
            ))
        })?;
        if !inner.dev_list[device].is_enabled() {
            return Err(JobError::Unavailable(format!(
                "device {device_name} is disabled"
            )));
        }
        let mut st = inner.lock();
        if st.waiting >= inner.config.queue_capacity {
            // Shed the lowest class below this one, on any device; else refuse this one.
            let evicted = (0..st.dev_q.len()).find_map(|d| st.dev_q[d].evict_below(job.class));
            match evicted {
                Some(DevTask(victim, _)) => {
                    st.waiting -= 1;
                    inner.metrics.shed_overload[victim.class as usize]
                        .fetch_add(1, Ordering::Relaxed);
                    victim.answer(Err(JobError::Overloaded(victim.class.label())));
                }
                None => {
                    inner.metrics.shed_overload[job.class as usize].fetch_add(1, Ordering::Relaxed);
                    return Err(JobError::Overloaded(job.class.label()));
                }
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        st.waiting += 1;
        let ctx = Ctx::new(id, job, deadline, now, tx, None);
        st.dev_q[device].push(DevTask(ctx.clone(), 0));
        // Wake a thread only if it may start this job now: while every session is busy or
        // opened envelopes wait for a CPU, it would wake only to find it may not (the thread
        // that frees the place wakes one). Without this, each request of a herd woke a thread
        // for nothing.
        if inner.runnable_on(&st, device).is_some() {
            inner.notify_device(&st, device);
        }
        drop(st);
        Ok(ctx)
    }

    fn cancel(&self, id: u64) {
        let inner = &self.inner;
        let mut st = inner.lock();
        let mut removed = None;
        for d in 0..st.dev_q.len() {
            while let Some(DevTask(ctx, _)) = st.dev_q[d].remove(id) {
                st.waiting -= 1;
                if let Some(thr) = &ctx.threshold {
                    thr.lock().unwrap_or_else(|p| p.into_inner()).outstanding -= 1;
                }
                removed = Some(ctx);
            }
        }
        if let Some(ctx) = removed {
            ctx.cancelled.store(true, Ordering::Relaxed);
            inner.metrics.cancelled[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(task) = st.cpu_q.remove(id) {
            if task.ctx.class != Class::Block {
                st.cpu_buffered -= 1;
                inner.wake_a_device(&st);
            }
            inner.metrics.cancelled[task.ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct CancelOnDrop<'a> {
    sched: &'a Scheduler,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.sched.cancel(self.id);
        }
    }
}

fn device_worker(inner: Arc<Inner>, d: usize, blocks: bool) {
    let device = inner.dev_list[d].clone();
    let cap = inner.caps[d];
    let fifo = inner.config.fifo;
    let cv = if blocks {
        &inner.block_cv[d]
    } else {
        &inner.dev_cv[d]
    };
    loop {
        let (ctx, share_index) = {
            let mut st = inner.lock();
            loop {
                if st.shutdown {
                    return;
                }
                // Background may run only if another session stays free.
                let free = cap.saturating_sub(st.dev_busy[d]);
                let allow_background = free >= 2;
                let now = Instant::now();
                let next = if free == 0 {
                    Next::Idle
                } else if blocks {
                    pop_blocks_only(&mut st.dev_q[d], now)
                } else if !fifo && matches!(st.dev_q[d].head(), Some((Class::Block, _))) {
                    // A block waits: the session is its block thread's.
                    Next::Idle
                } else if inner.cpu_room(&st) {
                    st.dev_q[d].pop(now, allow_background)
                } else if fifo {
                    pop_blocks_only(&mut st.dev_q[d], now)
                } else {
                    Next::Idle
                };
                match next {
                    Next::Run(DevTask(ctx, share)) => {
                        st.waiting -= 1;
                        st.dev_busy[d] += 1;
                        if ctx.class != Class::Block {
                            st.opening += 1;
                        }
                        // More may start beside this job (here or on another device): wake a
                        // thread for it, so a slow device's sessions fill up without waiting
                        // for a CPU worker to take an envelope.
                        inner.wake_a_device(&st);
                        inner.stats.peak_device_busy[d].fetch_max(st.dev_busy[d], Ordering::SeqCst);
                        if ctx.class == Class::Background {
                            st.dev_busy_background[d] += 1;
                            inner.stats.peak_background_busy[d]
                                .fetch_max(st.dev_busy_background[d], Ordering::SeqCst);
                        }
                        break (ctx, share);
                    }
                    Next::Expired(DevTask(ctx, _)) => {
                        st.waiting -= 1;
                        if let Some(thr) = &ctx.threshold {
                            thr.lock().unwrap_or_else(|p| p.into_inner()).outstanding -= 1;
                        }
                        inner.metrics.shed_expired[ctx.class as usize]
                            .fetch_add(1, Ordering::Relaxed);
                        ctx.answer(Err(JobError::expired(&ctx, Stage::Device)));
                    }
                    Next::Cancelled(DevTask(ctx, _)) => {
                        st.waiting -= 1;
                        if let Some(thr) = &ctx.threshold {
                            thr.lock().unwrap_or_else(|p| p.into_inner()).outstanding -= 1;
                        }
                        inner.metrics.cancelled[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    Next::Idle => {
                        st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                }
            }
        };
        inner.metrics.queue_wait[ctx.class as usize].observe(ctx.enqueued.elapsed());
        let share = &ctx.key.shares[share_index];
        let started = Instant::now();
        // THE decrypt of the decrypt-then-sign (`keys`): the secret exists from here only in a
        // key that wipes itself when dropped.
        let opened = crate::keys::open_share(&device, &ctx.key.pubkey, share);
        let took = started.elapsed();
        inner.metrics.device_op.get(device.name()).observe(took);
        if ctx.class != Class::Block {
            inner.pace.observe_device_op(took);
        }

        let mut st = inner.lock();
        st.dev_busy[d] -= 1;
        if ctx.class == Class::Background {
            st.dev_busy_background[d] -= 1;
        }
        // A block waiting for this session: its block thread takes it.
        if !fifo && !blocks && matches!(st.dev_q[d].head(), Some((Class::Block, _))) {
            inner.block_cv[d].notify_one();
        }
        if ctx.class != Class::Block {
            st.opening -= 1;
        }
        match (&ctx.threshold, opened) {
            // A block is signed by the (block) thread that opened it: handing it to a CPU
            // worker would add a thread wake-up, which on busy cores can cost a time slice.
            (None, Ok(secret)) if ctx.class == Class::Block && !inner.config.fifo => {
                // This session is free while the block is signed: another thread may use it.
                if inner.runnable_on(&st, d).is_some() {
                    inner.notify_device(&st, d);
                }
                drop(st);
                sign_whole(&inner, &ctx, &secret);
            }
            (None, Ok(secret)) => {
                if ctx.class != Class::Block {
                    st.cpu_buffered += 1;
                }
                st.cpu_q.push(CpuTask {
                    secrets: vec![(share_index, secret)],
                    ctx,
                    queued_at: Instant::now(),
                });
                drop(st);
                inner.notify_cpu();
            }
            (None, Err(e)) => {
                // A place ahead of the CPU freed with no envelope to fill it.
                inner.wake_a_device(&st);
                drop(st);
                ctx.answer(Err(JobError::from(e)));
            }
            (Some(thr), opened) => {
                let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
                job.outstanding -= 1;
                // Only the t-th share becomes a CPU task; the others free a place ahead of
                // the CPU.
                if !(opened.is_ok()
                    && !job.combining
                    && job.collected.len() + 1 == job.key.threshold)
                {
                    inner.wake_a_device(&st);
                }
                match opened {
                    Ok(secret) if !job.combining && job.collected.len() < job.key.threshold => {
                        job.collected.push((share_index, secret));
                        if job.collected.len() == job.key.threshold {
                            job.combining = true;
                            let task = CpuTask {
                                ctx: ctx.clone(),
                                secrets: std::mem::take(&mut job.collected),
                                queued_at: Instant::now(),
                            };
                            drop(job);
                            if ctx.class == Class::Block && !fifo {
                                // As a whole key's block: combined where it stands.
                                drop(st);
                                if still_wanted(&inner, &ctx, Stage::Device) {
                                    combine_threshold(&inner, task);
                                }
                                continue;
                            }
                            if ctx.class != Class::Block {
                                st.cpu_buffered += 1;
                            }
                            st.cpu_q.push(task);
                            inner.notify_cpu();
                        }
                    }
                    // A hedged extra that came back after t others: not needed, wiped on drop.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(device = %device.name(), validator = %ctx.key.pubkey, error = %e, "share unavailable; asking another device");
                        job.excluded.push(share_index);
                        job.failures.push(e.to_string());
                        inner
                            .metrics
                            .share_failures
                            .get(device.name())
                            .observe(started.elapsed());
                        inner.top_up(&mut st, &ctx, &mut job);
                    }
                }
            }
        }
        // This thread looks at its queue again itself; a sibling is woken only by a place
        // freed elsewhere (a CPU buffer slot) or by a job it may start beside this one.
    }
}

/// How many envelopes may be opened ahead of `workers` CPU workers when a device operation
/// takes `device_op` and a signature `sign` (both as measured, wall time): two per worker
/// waiting, plus twice what the workers sign while one device operation is under way. Little's
/// law gives the once (the operations in flight that keep the workers busy on average); the
/// twice covers the variance of both times, without which the workers were found waiting for
/// envelopes on a slow device. So a slow device keeps enough operations in flight, and a fast
/// one keeps few secrets open and few device threads on the cores.
pub fn ahead_limit(workers: usize, device_op: Duration, sign: Duration) -> usize {
    let per_op = device_op.as_secs_f64() / sign.as_secs_f64().max(1e-6);
    2 * workers + 2 * (workers as f64 * per_op).ceil().min(1e6) as usize
}

/// Moving averages of device operation and signature times (wall time, nanoseconds), each
/// sample weighing an eighth. Updated without a lock by whichever thread measured; a lost
/// update among racing threads costs nothing but a sample.
struct Pace {
    device_op_ns: AtomicU64,
    sign_ns: AtomicU64,
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
    fn update(avg: &AtomicU64, sample: Duration) {
        let x = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let old = avg.load(Ordering::Relaxed);
        let new = old - old / 8 + x / 8;
        avg.store(new, Ordering::Relaxed);
    }
    fn observe_device_op(&self, took: Duration) {
        Self::update(&self.device_op_ns, took);
    }
    fn observe_sign(&self, took: Duration) {
        Self::update(&self.sign_ns, took);
    }
    fn device_op(&self) -> Duration {
        Duration::from_nanos(self.device_op_ns.load(Ordering::Relaxed))
    }
    fn sign(&self) -> Duration {
        Duration::from_nanos(self.sign_ns.load(Ordering::Relaxed))
    }
}

/// Take the next job only if it is a block (expired and cancelled jobs are cleared as usual).
/// Used by the devices' block threads (and, priorities off, while opened envelopes are backed
/// up waiting for a CPU).
fn pop_blocks_only<T: Queued>(q: &mut ClassQueues<T>, now: Instant) -> Next<T> {
    match q.pop(now, false) {
        Next::Run(t) if t.class() != Class::Block => {
            q.push_front(t);
            Next::Idle
        }
        other => other,
    }
}

/// Bulk signing threads yield the OS's cores to everything short and urgent: device threads,
/// the rescue worker and the HTTP runtime. A lower nice value is not enough: Linux's EEVDF
/// lets a running thread finish its slice (about 3 ms) before a woken one of any nice value
/// runs, which held a block's signature for that long. A `SCHED_IDLE` thread is preempted at
/// once, and a thread may move itself there without privilege. Elsewhere, or if refused: nice
/// 10. The cost: on a host shared with CPU-hungry processes, bulk signing gets only what they
/// leave; the rescue worker then takes over what waits too long
/// ([`SchedulerConfig::starved_after`]).
fn lower_thread_priority() {
    if let Err(e) = os_policy::set_current_thread_idle() {
        tracing::debug!(error = %e, "SCHED_IDLE refused; lowering the nice value instead");
        set_own_nice(10);
    }
}

/// A device's block thread runs at `SCHED_FIFO` priority 1, the lowest real-time one, where
/// the host allows it (`CAP_SYS_NICE`, or `LimitRTPRIO=1` in a systemd unit): it then takes a
/// core the moment a block arrives, and keeps it while it opens and signs. At normal priority
/// it may first wait for a running thread's time slice, and be preempted mid-signature; with
/// two cores under a herd that was a block's worst delay (p99 ÷ idle 1.9–2.7 in `bench
/// scenario`, against 1.4–2.0 at real-time). It sleeps on a condition variable between blocks,
/// so it cannot hold a core, and the kernel keeps 5 % of every core for normal threads anyway.
/// Refused, it stays at normal priority (said once in the log).
fn raise_thread_priority() {
    static TOLD: std::sync::Once = std::sync::Once::new();
    if let Err(e) = os_policy::set_current_thread_realtime() {
        TOLD.call_once(|| {
            tracing::info!(error = %e, "blocks are signed at normal OS priority: real-time priority needs CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 (systemd: LimitRTPRIO=1)");
        });
    }
}

/// The calls the safe system crates lack: `sched_setscheduler` on the calling thread.
#[allow(unsafe_code)]
mod os_policy {
    /// Move the calling thread to `SCHED_IDLE`.
    #[cfg(target_os = "linux")]
    pub(super) fn set_current_thread_idle() -> std::io::Result<()> {
        set_current_thread(libc::SCHED_IDLE, 0)
    }

    /// Move the calling thread to `SCHED_FIFO`, priority 1.
    #[cfg(target_os = "linux")]
    pub(super) fn set_current_thread_realtime() -> std::io::Result<()> {
        set_current_thread(libc::SCHED_FIFO, 1)
    }

    #[cfg(target_os = "linux")]
    fn set_current_thread(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised sched_param that
        // outlives the call, which only reads it.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Not available here.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_current_thread_idle() -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    /// Not available here.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn set_current_thread_realtime() -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// One CPU worker. A bulk worker takes the highest class first (blocks never come here with
/// priorities on: their device's block thread signs them); the rescue worker (one per
/// scheduler, at normal priority) takes bulk work only when the bulk workers are starved.
/// Priorities off (the FIFO baseline), every job comes here.
fn cpu_worker(inner: Arc<Inner>, rescue: bool) {
    let cv = if rescue {
        &inner.rescue_cv
    } else {
        &inner.cpu_cv
    };
    loop {
        let (task, wake) = {
            let mut st = inner.lock();
            loop {
                if st.shutdown {
                    return;
                }
                let now = Instant::now();
                let next = if rescue {
                    rescue_starved(&inner, &mut st, now)
                } else if st.bulk_paused {
                    Next::Idle
                } else {
                    // A block signed here would run at the bulk threads' low priority.
                    st.cpu_q.pop_except_blocks(now, true)
                };
                let task = match next {
                    // Rescuing, the rescue worker is woken for bulk work until `rescue_until`;
                    // otherwise nobody wakes it for bulk work, so it looks again in time to
                    // find a bulk task starved (a few wake-ups a second, idle or not).
                    Next::Idle if rescue => {
                        let wait = st.rescue_until.map_or(inner.config.starved_after / 2, |t| {
                            t.saturating_duration_since(now)
                        });
                        st = cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        continue;
                    }
                    Next::Idle => {
                        st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    Next::Run(t) | Next::Expired(t) | Next::Cancelled(t) => t,
                };
                // The place freed in the CPU buffer goes to a device thread, woken once the lock
                // is released: a thread woken under it would preempt this one (a bulk worker,
                // at the lowest OS priority) while it holds the lock, and every other thread,
                // a block's included, would wait until the OS let this one run again.
                let wake = if task.ctx.class != Class::Block {
                    st.cpu_buffered -= 1;
                    inner.device_to_wake(&st)
                } else {
                    None
                };
                // Re-classify outside the match so the counters above stay in one place.
                if still_wanted(&inner, &task.ctx, Stage::Cpu) {
                    break (task, wake);
                }
                if let Some(cv) = wake {
                    cv.notify_one();
                }
            }
        };
        if let Some(cv) = wake {
            cv.notify_one();
        }
        if task.ctx.threshold.is_some() {
            combine_threshold(&inner, task);
            continue;
        }
        let started = Instant::now();
        let result = match task.secrets.first() {
            Some((_, secret)) => Ok(crate::keys::sign_opened(secret, &task.ctx.root)),
            None => Err(JobError::Failed(SignerError::Invalid(
                "no share opened".into(),
            ))),
        };
        inner.pace.observe_sign(started.elapsed());
        drop(task.secrets);
        task.ctx.answer(result);
    }
}

/// For the rescue worker: the next bulk task if the bulk workers are starved. They are once a
/// task has waited `starved_after` for them (when they run, they take work within
/// microseconds); the rescue worker then takes every bulk task as it comes for
/// ten times that long, and longer while it keeps finding tasks that old.
fn rescue_starved(inner: &Inner, st: &mut State, now: Instant) -> Next<CpuTask> {
    if st.rescue_until.is_some_and(|t| t <= now) {
        st.rescue_until = None;
        inner.rescuing.store(false, Ordering::Relaxed);
    }
    match st.cpu_q.pop_except_blocks(now, true) {
        Next::Run(t) => {
            let starved = now.duration_since(t.queued_at) >= inner.config.starved_after;
            if !starved && st.rescue_until.is_none() {
                st.cpu_q.push_front(t);
                return Next::Idle;
            }
            if starved {
                st.rescue_until = Some(now + 10 * inner.config.starved_after);
                inner.rescuing.store(true, Ordering::Relaxed);
            }
            inner.metrics.starved_rescued[t.ctx.class as usize].fetch_add(1, Ordering::Relaxed);
            Next::Run(t)
        }
        other => other,
    }
}

/// False (counted, and answered if it expired) when a job's client went away or its deadline
/// passed while it waited (at `stage`).
fn still_wanted(inner: &Inner, ctx: &Ctx, stage: Stage) -> bool {
    if ctx.gone() {
        inner.metrics.cancelled[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if ctx.deadline <= Instant::now() {
        inner.metrics.shed_expired[ctx.class as usize].fetch_add(1, Ordering::Relaxed);
        ctx.answer(Err(JobError::expired(ctx, stage)));
        return false;
    }
    true
}

/// Sign a whole key's job with its opened secret where it stands (a device thread, for a
/// block), unless its client went away or its deadline passed meanwhile.
fn sign_whole(inner: &Inner, ctx: &Ctx, secret: &SecretKey) {
    if still_wanted(inner, ctx, Stage::Device) {
        ctx.answer(Ok(crate::keys::sign_opened(secret, &ctx.root)));
    }
}

/// Make t weighted partials from the opened shares, combine, verify under the validator key.
/// A combination that does not verify names the faulty shares, excludes them and asks other
/// devices; no unverified signature is ever answered.
fn combine_threshold(inner: &Arc<Inner>, task: CpuTask) {
    let CpuTask { ctx, secrets, .. } = task;
    let Some(thr) = &ctx.threshold else { return };
    let key = thr.lock().unwrap_or_else(|p| p.into_inner()).key.clone();
    let opened: Vec<_> = secrets
        .iter()
        .map(|(i, secret)| (ctx.key.shares[*i].id, secret))
        .collect();
    // THE sign of the decrypt-then-sign (`keys`): weighted partials, combined, verified.
    let outcome = threshold::sign_with_opened_shares(&key, &HashedMessage::new(&ctx.root), &opened)
        .map_err(|e| match e {
            CombineError::Unverified { faulty } => JobError::Faulty(faulty),
            other => JobError::Failed(SignerError::Bls(other.to_string())),
        });
    drop(opened);
    match outcome {
        Ok(sig) => ctx.answer(Ok(sig)),
        Err(JobError::Faulty(faulty)) => {
            let mut st = inner.lock();
            let mut job = thr.lock().unwrap_or_else(|p| p.into_inner());
            job.combining = false;
            let mut named = Vec::new();
            for (i, secret) in secrets {
                let share = &ctx.key.shares[i];
                if faulty.contains(&share.id) {
                    job.excluded.push(i);
                    named.push(format!("share {} on device {}", share.id, share.device));
                    inner
                        .metrics
                        .faulty_shares
                        .get(&share.device)
                        .observe(Duration::ZERO);
                } else {
                    job.collected.push((i, secret));
                }
            }
            tracing::error!(validator = %ctx.key.pubkey, faulty = %named.join(", "), "combined signature did not verify; excluding the faulty share(s)");
            if named.is_empty() {
                job.collected.clear();
                ctx.answer(Err(JobError::Failed(SignerError::Bls(format!(
                    "combined signature for {} did not verify and no share could be blamed; nothing was released",
                    ctx.key.pubkey
                )))));
                return;
            }
            job.failures.push(format!("faulty {}", named.join(", ")));
            inner.top_up(&mut st, &ctx, &mut job);
        }
        Err(e) => ctx.answer(Err(e)),
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
