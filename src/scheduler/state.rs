//! The scheduler's shared state: a job as the workers see it (`Ctx`), its visits to devices and
//! the CPU, the queues and counters under one lock (`State`), and the wake policy (`Inner`):
//! which one thread a freed place wakes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use blst::min_pk::{SecretKey, Signature};
use hsm::Device;
use tokio::sync::oneshot;

use super::pace::{ahead_limit, Pace};
use super::queue::{Class, Queued, Urgency};
use super::threshold::ThresholdJob;
use super::{Ctx, JobError, Limit, SchedulerConfig, SchedulerMetrics, SignJob, State};
use crate::consensus::SigningRoot;
use crate::devices::Devices;
use crate::keys::threshold::{HashedMessage, ThresholdKey};
use crate::keys::PublicKeyBytes;
use crate::participants::Participant;

pub(super) type Reply = oneshot::Sender<Result<Signature, JobError>>;

/// Where a share is held: a device (a PKCS#11 token) or a remote participant. The scheduler
/// treats both alike — a queue, a session cap, threads — and differs only in the operation:
/// a device opens an envelope, a participant answers with its partial signature.
pub(super) enum Station {
    Device(Arc<Device>),
    Participant(Arc<Participant>),
}

impl Station {
    pub(super) fn name(&self) -> &str {
        match self {
            Station::Device(d) => d.name(),
            Station::Participant(p) => p.name(),
        }
    }
    /// It may be asked: a device enabled, a participant in service and up.
    pub(super) fn is_enabled(&self) -> bool {
        match self {
            Station::Device(d) => d.is_enabled(),
            Station::Participant(p) => p.is_available(),
        }
    }
    pub(super) fn is_remote(&self) -> bool {
        matches!(self, Station::Participant(_))
    }
}

/// What a station's operation gave for one share: an opened secret (a device) or a partial
/// signature (a participant; a valid G2 point, verified with the combination).
pub(super) enum Opened {
    Secret(SecretKey),
    Partial(Signature),
}

impl Ctx {
    pub(super) fn new(
        id: u64,
        job: SignJob,
        (deadline, limit): (Instant, Limit),
        enqueued: Instant,
        tx: Reply,
        threshold: Option<Mutex<ThresholdJob>>,
    ) -> Arc<Ctx> {
        Arc::new(Ctx {
            id,
            // Not later than now, whatever the caller says.
            arrived: job.arrived.map_or(enqueued, |a| a.min(enqueued)),
            class: job.class,
            freshness: job.freshness,
            deadline,
            limit,
            enqueued,
            key: job.key,
            root: job.signing_root,
            request: job.request,
            cancelled: AtomicBool::new(false),
            reply: Mutex::new(Some(tx)),
            threshold,
        })
    }

    pub(super) fn answer(&self, result: Result<Signature, JobError>) {
        if let Some(tx) = self.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(result);
        }
    }
    pub(super) fn gone(&self) -> bool {
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
pub(super) struct DevTask(pub(super) Arc<Ctx>, pub(super) usize);

pub(super) struct CpuTask {
    pub(super) ctx: Arc<Ctx>,
    /// When it joined the CPU queue (the rescue worker's starvation check).
    pub(super) queued_at: Instant,
    /// (share index, what its station gave): one secret for a whole key, t for a threshold
    /// key.
    pub(super) secrets: Vec<(usize, Opened)>,
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
    fn arrived(&self) -> Instant {
        self.0.arrived
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
    fn arrived(&self) -> Instant {
        self.ctx.arrived
    }
    fn cancelled(&self) -> bool {
        self.ctx.gone()
    }
    fn id(&self) -> u64 {
        self.ctx.id
    }
}

/// Counters tests and benchmarks read.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Most device operations ever in flight at once, per device.
    pub peak_device_busy: Vec<AtomicUsize>,
    /// Most background device operations ever in flight at once, per device.
    pub peak_background_busy: Vec<AtomicUsize>,
}

pub(super) struct Inner {
    pub(super) devices: Devices,
    pub(super) participants: crate::participants::Participants,
    /// Devices, then participants: index `d` everywhere below.
    pub(super) stations: Vec<Station>,
    pub(super) dev_index: HashMap<String, usize>,
    pub(super) caps: Vec<usize>,
    pub(super) config: SchedulerConfig,
    /// The most that `cpu_buffer: None` lets ahead: two per CPU worker and every session.
    pub(super) cpu_buffer_max: usize,
    /// Measured device operation and signature times, for the adaptive CPU buffer.
    pub(super) pace: Pace,
    pub(super) state: Mutex<State>,
    pub(super) dev_cv: Vec<Signal>,
    /// Wakes a device's block thread (priorities on): the one thread per device that takes
    /// blocks, at real-time priority where the host allows it.
    pub(super) block_cv: Vec<Signal>,
    pub(super) cpu_cv: Signal,
    /// Wakes the rescue worker, which signs bulk work the bulk workers are too starved to take.
    pub(super) rescue_cv: Signal,
    /// Mirrors `State::rescue_until` being set, for `notify_cpu` (which runs without the lock).
    pub(super) rescuing: AtomicBool,
    pub(super) metrics: Arc<SchedulerMetrics>,
    pub(super) stats: SchedulerStats,
    /// Threshold keys with their public keys parsed and validated once.
    pub(super) threshold_keys: Mutex<HashMap<PublicKeyBytes, Arc<ThresholdKey>>>,
    /// Signing roots hashed to G2, for the many keys that sign one message (a batch, a herd).
    pub(super) hashed: HashedRoots,
}

/// A condition variable that enters the kernel only when a thread waits on it. std's
/// `Condvar::notify_one` always makes a futex system call, and the scheduler notifies once or
/// twice per job, mostly with no thread waiting: under load that was several system calls a
/// request. A waiter counts itself while it holds the state lock, before it sleeps (which
/// releases the lock); a notifier changed the state under that lock before it reads the count.
/// So a waiter that may have missed the change is always counted and woken: the same guarantee
/// as the condition variable's own (a notify before the wait is lost either way).
#[derive(Debug, Default)]
pub(super) struct Signal {
    cv: Condvar,
    waiting: AtomicUsize,
}

impl Signal {
    /// Sleep until notified (or spuriously), releasing `guard` meanwhile.
    pub(super) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.cv.wait(guard).unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// [`Signal::wait`], for at most `timeout`.
    pub(super) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let (guard, _) = self
            .cv
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Wake one waiting thread, if any.
    pub(super) fn notify_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.cv.notify_one();
        }
    }

    /// Wake every waiting thread.
    pub(super) fn notify_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }
}

/// The most recent signing roots hashed to G2 (`HashedMessage`). Many keys sign one message at
/// once — a batch of selection proofs, a committee's attestation, the whole set's RANDAO reveal
/// — and `hash_to_curve` is some 40 % of a signature: it is done once per root, and each key
/// multiplies the point by its secret (blst's constant-time signing multiplication, the same
/// bytes as blst's `sign`). Bounded: the oldest root goes when a new one comes past the cap.
#[derive(Default)]
pub(super) struct HashedRoots {
    recent: Mutex<std::collections::VecDeque<(SigningRoot, Arc<HashedMessage>)>>,
}

/// Roots kept: more than the distinct messages of one slot's duties.
const HASHED_ROOTS_KEPT: usize = 256;

impl HashedRoots {
    /// `root` hashed to G2, from the cache or computed (outside the lock) and kept.
    pub(super) fn get(&self, root: &SigningRoot) -> Arc<HashedMessage> {
        let found = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|(r, _)| r == root)
            .map(|(_, h)| h.clone());
        if let Some(hashed) = found {
            return hashed;
        }
        let hashed = Arc::new(HashedMessage::new(&root.0));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == HASHED_ROOTS_KEPT {
            recent.pop_front();
        }
        recent.push_back((*root, hashed.clone()));
        hashed
    }
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task was queued for a CPU: wake a bulk worker (and the rescue worker too while it
    /// stands in for starved bulk workers).
    pub(super) fn notify_cpu(&self) {
        self.cpu_cv.notify_one();
        if self.rescuing.load(Ordering::Relaxed) {
            self.rescue_cv.notify_one();
        }
    }

    /// The urgency of the job a free thread of device `d` would start now, if any: a session
    /// is free and the job at the head of its queue may start (a block always; other work while
    /// the CPU buffer has room; background only with a second session free).
    pub(super) fn runnable_on(&self, st: &State, d: usize) -> Option<Urgency> {
        let (class, key) = st.dev_q[d].head()?;
        let free = self
            .cap(d, class == Class::Block)
            .saturating_sub(st.dev_busy[d]);
        // A participant's answer is a partial, not an opened secret: it takes no place in the
        // CPU buffer (which bounds secrets open in memory); its session cap bounds it.
        let cpu_room = self.stations[d].is_remote() || self.cpu_room(st);
        let may = free >= 1
            && (class == Class::Block
                || (cpu_room && (class != Class::Background || free >= 2 || self.config.fifo)));
        may.then_some(key)
    }

    /// Operations station `d` may have running at once, for its session threads or (`block`) its
    /// block thread. A participant's block thread has a place of its own beyond the cap: a block
    /// is sent at once, not after one of the bulk partials in flight comes back (the cap bounds
    /// our load on the participant, whose own scheduler puts the block first). A device's
    /// sessions are the token's: its cap holds for blocks too.
    pub(super) fn cap(&self, d: usize, block: bool) -> usize {
        let spare = block && !self.config.fifo && self.stations[d].is_remote();
        self.caps[d] + usize::from(spare)
    }

    /// Operations queued or running on station `d`.
    pub(super) fn load(st: &State, d: usize) -> usize {
        st.dev_q[d].len() + st.dev_busy[d]
    }

    /// Whether another envelope may be opened ahead of a CPU (blocks may always).
    pub(super) fn cpu_room(&self, st: &State) -> bool {
        st.cpu_buffered + st.opening < self.cpu_buffer_limit()
    }

    /// The CPU buffer's size now: as configured, or adapted to the measured pace.
    pub(super) fn cpu_buffer_limit(&self) -> usize {
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
    pub(super) fn wake_a_device(&self, st: &State) {
        if let Some(cv) = self.device_to_wake(st) {
            cv.notify_one();
        }
    }

    /// What [`Inner::wake_a_device`] would wake, to be woken once the lock is released.
    pub(super) fn device_to_wake(&self, st: &State) -> Option<&Signal> {
        (0..self.stations.len())
            .filter_map(|d| self.runnable_on(st, d).map(|key| (key, d)))
            .min()
            .map(|(_, d)| self.device_cv(st, d))
    }

    /// Wake the thread of device `d` that would take the head of its queue.
    pub(super) fn notify_device(&self, st: &State, d: usize) {
        self.device_cv(st, d).notify_one();
    }

    /// Where the thread that would take the head of device `d`'s queue waits: its block thread
    /// for a block, else one of its session threads.
    pub(super) fn device_cv(&self, st: &State, d: usize) -> &Signal {
        match st.dev_q[d].head() {
            Some((Class::Block, _)) if !self.config.fifo => &self.block_cv[d],
            _ => &self.dev_cv[d],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_wakes_a_thread_waiting_for_a_change_made_under_the_lock() {
        let state = Arc::new((Mutex::new(0u32), Signal::default()));
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let state = state.clone();
            waiters.push(std::thread::spawn(move || {
                let (lock, signal) = &*state;
                let mut n = lock.lock().unwrap();
                while *n == 0 {
                    n = signal.wait(n);
                }
                *n -= 1;
            }));
        }
        // Each change is made under the lock, then signalled: whether a waiter slept before
        // it or looked after it, each one takes exactly one.
        for _ in 0..3 {
            *state.0.lock().unwrap() += 1;
            state.1.notify_one();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*state.0.lock().unwrap(), 0);
        assert_eq!(
            state.1.waiting.load(Ordering::SeqCst),
            0,
            "no waiter left counted"
        );
    }

    #[test]
    fn hashed_roots_are_kept_once_each_and_bounded() {
        let cache = HashedRoots::default();
        let root = |i: u32| {
            let mut r = [0u8; 32];
            r[..4].copy_from_slice(&i.to_le_bytes());
            SigningRoot(r)
        };
        let first = cache.get(&root(0));
        assert!(Arc::ptr_eq(&first, &cache.get(&root(0))), "hashed once");
        assert_eq!(*first, HashedMessage::new(&root(0).0));
        for i in 1..=HASHED_ROOTS_KEPT as u32 {
            cache.get(&root(i));
        }
        let recent = cache.recent.lock().unwrap();
        assert_eq!(recent.len(), HASHED_ROOTS_KEPT);
        assert!(recent.iter().all(|(r, _)| *r != root(0)), "the oldest went");
    }
}
