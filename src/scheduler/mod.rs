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
mod os_priority;
mod pace;
pub mod queue;
mod state;
mod threshold;
mod workers;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blst::min_pk::Signature;
use hsm::Device;
use tokio::sync::oneshot;

pub use metrics::SchedulerMetrics;
pub use os_priority::runtime;
pub(crate) use os_priority::set_own_nice;
pub use queue::Class;
pub(crate) use queue::CLASSES;
pub use state::SchedulerStats;

use crate::consensus::SigningRoot;
use crate::devices::Devices;
use crate::error::SignerError;
use crate::keys::KeyRecord;
use crate::keys::PublicKeyBytes;
use crate::participants::Participants;
use crate::scheduler::queue::ClassQueues;
use os_priority::{lower_thread_priority, raise_thread_priority};
use pace::Pace;
use state::{CpuTask, DevTask, Inner, Reply, Signal, Station};
use threshold::ThresholdJob;
use workers::{cpu_worker, device_worker};

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
    pub(crate) fn from_settings(s: &crate::config::SchedulerSettings) -> SchedulerConfig {
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
    pub signing_root: SigningRoot,
    /// Priority class.
    pub class: Class,
    /// When the work stops being worth doing, if ever: for a signing request the end of its
    /// validity window (`crate::consensus::validity`), for a precomputed proof the moment its
    /// client needs it. The class's maximum queue time applies too.
    pub deadline: Option<Instant>,
    /// Within its class, work of a higher freshness runs first: the slot of its duty, capped at
    /// the current slot; 0 for work with no slot, which runs in arrival order ([`queue`]).
    pub freshness: u64,
    /// The signing request as the client sent it (JSON), for a key with shares on remote
    /// participants: it is forwarded to them as it is, and each computes the root itself. A
    /// job without it cannot use a participant.
    pub request: Option<Forwarded>,
    /// When its request reached the signer, if before now: among jobs of equal class and
    /// freshness it runs in this order ([`queue`]), so a request held up on its way (in slashing
    /// protection, waiting for a commit) is not queued behind the requests that came after it.
    /// `None`: when it is submitted.
    pub arrived: Option<Instant>,
}

/// A signing request to forward to participants.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// Its JSON, as the client sent it.
    pub body: Arc<str>,
    /// Its type is one of the messages many validators sign alike (the batch draft's types:
    /// `AGGREGATION_SLOT`, `ATTESTATION`, `RANDAO_REVEAL`, the sync committee's message and
    /// selection proof): jobs of other keys queued for the same participant with the same
    /// signing root go to it in one request of the profile's batch form.
    pub shared: bool,
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

/// A job as the workers see it.
struct Ctx {
    id: u64,
    /// The validator key, and the root it signs.
    key: Arc<KeyRecord>,
    root: SigningRoot,
    /// The request to forward to participants (see [`SignJob::request`]).
    request: Option<Forwarded>,
    /// Where the job stands in the queues: its class, then its duty's slot.
    class: Class,
    freshness: u64,
    /// When the job stops being worth signing, and which limit that is.
    deadline: Instant,
    limit: Limit,
    enqueued: Instant,
    /// When its request reached the signer ([`SignJob::arrived`]; else `enqueued`).
    arrived: Instant,
    /// The client went away (or the job was taken out of the queue).
    cancelled: AtomicBool,
    /// Where the answer goes; taken by the first answer.
    reply: Mutex<Option<Reply>>,
    /// For a t-of-n key: which shares were asked and what came back.
    threshold: Option<Mutex<ThresholdJob>>,
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
        Self::with_participants(devices, Participants::default(), config, metrics)
    }

    /// A scheduler over devices and remote participants (each scheduled as a device, its
    /// `max_in_flight` its session cap).
    pub fn with_participants(
        devices: Devices,
        participants: Participants,
        config: SchedulerConfig,
        metrics: Arc<SchedulerMetrics>,
    ) -> Scheduler {
        let stations: Vec<Station> = devices
            .iter()
            .map(|d| Station::Device(d.clone()))
            .chain(participants.iter().map(|p| Station::Participant(p.clone())))
            .collect();
        let caps: Vec<usize> = stations
            .iter()
            .map(|s| match s {
                Station::Device(d) => d.config().max_sessions.max(1),
                Station::Participant(p) => p.max_in_flight().max(1),
            })
            .collect();
        let n = stations.len();
        let local_sessions: usize = stations
            .iter()
            .zip(&caps)
            .filter(|(s, _)| !s.is_remote())
            .map(|(_, c)| c)
            .sum();
        let inner = Arc::new(Inner {
            cpu_buffer_max: 2 * config.cpu_workers.max(1) + local_sessions,
            pace: Pace::default(),
            dev_index: stations
                .iter()
                .enumerate()
                .map(|(i, d)| (d.name().to_owned(), i))
                .collect(),
            devices,
            participants,
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
            dev_cv: (0..n).map(|_| Signal::default()).collect(),
            block_cv: (0..n).map(|_| Signal::default()).collect(),
            cpu_cv: Signal::default(),
            rescue_cv: Signal::default(),
            rescuing: AtomicBool::new(false),
            stats: SchedulerStats {
                peak_device_busy: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                peak_background_busy: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            },
            stations,
            config,
            metrics,
            threshold_keys: Mutex::default(),
            hashed: Default::default(),
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
    pub(crate) fn forget_key(&self, pubkey: &PublicKeyBytes) {
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

    /// The remote participants it schedules on.
    pub fn participants(&self) -> &Participants {
        &self.inner.participants
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
            .stations
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_remote())
            .map(|(i, d)| (d.name().to_owned(), st.dev_busy[i], self.inner.caps[i]))
            .collect()
    }

    /// Partials in flight (or being asked) per participant.
    pub fn participants_in_flight(&self) -> std::collections::BTreeMap<String, usize> {
        let st = self.inner.lock();
        self.inner
            .stations
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_remote())
            .map(|(i, s)| (s.name().to_owned(), st.dev_busy[i]))
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
        let d = inner
            .stations
            .iter()
            .position(|s| matches!(s, Station::Device(dev) if dev.name() == name))?;
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
        let Station::Device(device) = &inner.stations[d] else {
            return None;
        };
        Some(probe(device))
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
            Err(JobError::Failed(SignerError::Internal(
                "the scheduler stopped".into(),
            )))
        })
    }

    fn submit(&self, job: SignJob, tx: Reply) -> Result<Arc<Ctx>, JobError> {
        let now = Instant::now();
        let deadline = self.deadline_of(&job, now)?;
        if !job.key.is_one_local_share() {
            return self.submit_threshold(job, tx, deadline, now);
        }
        let device = self.device_of(&job)?;
        let inner = &self.inner;
        let mut st = inner.lock();
        let ctx = self.enqueue(&mut st, job, tx, deadline, now, device)?;
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

    /// The job's deadline (its own or its class's queue time, the earlier); `Err` when it has
    /// already passed.
    fn deadline_of(&self, job: &SignJob, now: Instant) -> Result<(Instant, Limit), JobError> {
        let inner = &self.inner;
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
        Ok(deadline)
    }

    /// The index of a whole key's device, if it is available.
    fn device_of(&self, job: &SignJob) -> Result<usize, JobError> {
        let inner = &self.inner;
        let device_name = &job.key.shares[0].device;
        let device = *inner.dev_index.get(device_name).ok_or_else(|| {
            JobError::Unavailable(format!(
                "device {device_name} is not available to this signer"
            ))
        })?;
        if inner.stations[device].is_remote() || !inner.stations[device].is_enabled() {
            return Err(JobError::Unavailable(format!(
                "device {device_name} is disabled"
            )));
        }
        Ok(device)
    }

    /// Queue a whole key's job on `device`, under the lock; a full queue sheds the lowest class
    /// below this one, or refuses this one.
    fn enqueue(
        &self,
        st: &mut State,
        job: SignJob,
        tx: Reply,
        deadline: (Instant, Limit),
        now: Instant,
        device: usize,
    ) -> Result<Arc<Ctx>, JobError> {
        let inner = &self.inner;
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
        Ok(ctx)
    }

    /// Sign many jobs (one message for many keys: a batch request), each answered as
    /// [`Scheduler::sign`] would answer it, in order. The whole keys' jobs are queued
    /// [`SUBMIT_CHUNK`] per lock, and each device with work it may start is woken once per
    /// chunk, so a batch of thousands costs the queue what a few requests do; threshold keys go through [`Scheduler::sign`].
    /// Dropping the future withdraws every job not yet answered.
    pub async fn sign_many(&self, jobs: Vec<SignJob>) -> Vec<Result<Signature, JobError>> {
        let now = Instant::now();
        let mut results: Vec<Option<Result<Signature, JobError>>> =
            std::iter::repeat_with(|| None).take(jobs.len()).collect();
        let mut waiting = Vec::with_capacity(jobs.len());
        let mut threshold = Vec::new();
        // Queued a chunk per lock: the lock is held for a few hundred pushes at a time, never
        // for a whole batch, so a block thread never waits long to take its block.
        let inner = &self.inner;
        let mut jobs = jobs.into_iter().enumerate().peekable();
        while jobs.peek().is_some() {
            let mut st = inner.lock();
            let mut woken = vec![false; inner.stations.len()];
            for (i, job) in jobs.by_ref().take(SUBMIT_CHUNK) {
                if !job.key.is_one_local_share() {
                    threshold.push((i, job));
                    continue;
                }
                let queued = self.deadline_of(&job, now).and_then(|deadline| {
                    let device = self.device_of(&job)?;
                    let (tx, rx) = oneshot::channel();
                    let ctx = self.enqueue(&mut st, job, tx, deadline, now, device)?;
                    Ok((ctx.id, rx, device))
                });
                match queued {
                    Ok((id, rx, device)) => {
                        woken[device] = true;
                        waiting.push((i, id, rx));
                    }
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            for (device, _) in woken.iter().enumerate().filter(|(_, w)| **w) {
                if inner.runnable_on(&st, device).is_some() {
                    inner.notify_device(&st, device);
                }
            }
        }
        let mut guard = CancelAllOnDrop {
            sched: self,
            ids: waiting.iter().map(|(_, id, _)| Some(*id)).collect(),
        };
        for (n, (i, _, rx)) in waiting.into_iter().enumerate() {
            let answer = rx.await.unwrap_or_else(|_| {
                Err(JobError::Failed(SignerError::Internal(
                    "the scheduler stopped".into(),
                )))
            });
            guard.ids[n] = None;
            results[i] = Some(answer);
        }
        let answered =
            futures_util::future::join_all(threshold.iter().map(|(_, job)| self.sign(job.clone())))
                .await;
        for ((i, _), answer) in threshold.into_iter().zip(answered) {
            results[i] = Some(answer);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(JobError::Failed(SignerError::Internal(
                        "a job of the batch was not answered".into(),
                    )))
                })
            })
            .collect()
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

/// Jobs [`Scheduler::sign_many`] queues per holding of the scheduler's lock.
const SUBMIT_CHUNK: usize = 256;

/// [`Scheduler::sign_many`]'s jobs not yet answered (`Some`), withdrawn if it is dropped.
struct CancelAllOnDrop<'a> {
    sched: &'a Scheduler,
    ids: Vec<Option<u64>>,
}

impl Drop for CancelAllOnDrop<'_> {
    fn drop(&mut self) {
        for id in self.ids.iter().flatten() {
            self.sched.cancel(*id);
        }
    }
}
