//! The scheduler's pure bookkeeping: per-class queues, and the choice of what runs next.
//! No threads, no clocks of its own: the caller passes `now`, so every rule is tested as a table.
//!
//! **Order.** Classes first (DESIGN §2). Within a class, the freshest work first: a task's
//! *freshness* is the slot its work is for, as the caller judges it (the API gives the duty's
//! slot, capped at the current slot, so a selection proof asked ahead of time is no fresher than
//! the present's work); among equals, arrival order — the order in which the requests reached the
//! signer, not the queue ([`Queued::arrived`]): a request held up on its way (slashing protection
//! waiting on a commit, say) takes the place its arrival gives it rather than one behind every
//! request that came after it, so such a delay is absorbed by the queue instead of adding to that
//! request's latency. Under an overload that outlasts a slot, the
//! backlog of an older slot then waits behind the new slot's work, not the other way round: an
//! attestation signed in its own slot can still earn head, source and target rewards, a slot
//! later only source and target, five slots later only target (`specs/deneb/beacon-chain.md`,
//! `get_attestation_participation_flag_indices`), and a sync committee message or a block of a
//! past slot nothing at all. Oldest-first (FIFO) would spend the devices on the stale backlog
//! and make the fresh work stale in turn; earliest-deadline-first would do the same, since the
//! oldest work has the nearest deadline. What can no longer be used is dropped: a task whose
//! deadline passed comes out as [`Next::Expired`], from the head of its class or from its tail
//! (the stalest work, which is where deadlines pass first), so stale work does not hold places
//! in the queue until its turn. Work without a slot (freshness 0: registrations, exits,
//! background) runs in arrival order.
//!
//! With `fifo` set (the benchmark's baseline), one queue in arrival order, whatever the class and
//! freshness.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::Instant;

/// Priority classes of DESIGN §2, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `BLOCK_V2`, `BLOCK`, `RANDAO_REVEAL`, `EXECUTION_PAYLOAD_ENVELOPE`.
    Block = 0,
    /// `ATTESTATION`, `SYNC_COMMITTEE_MESSAGE`, `PAYLOAD_ATTESTATION_MESSAGE`,
    /// `EXECUTION_PAYLOAD_BID`.
    Attestation = 1,
    /// Aggregates, contributions, live selection proofs, `PROPOSER_PREFERENCES`.
    Aggregate = 2,
    /// `VALIDATOR_REGISTRATION`, `VOLUNTARY_EXIT`, `DEPOSIT`, `BUILDER_REQUEST_AUTH`.
    Admin = 3,
    /// Precomputed selection proofs: only idle capacity.
    Background = 4,
}

/// Number of classes.
pub(crate) const CLASSES: usize = 5;

impl Class {
    /// All classes, highest first.
    pub const ALL: [Class; CLASSES] = [
        Class::Block,
        Class::Attestation,
        Class::Aggregate,
        Class::Admin,
        Class::Background,
    ];

    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Class::Block => "block",
            Class::Attestation => "attestation",
            Class::Aggregate => "aggregate",
            Class::Admin => "admin",
            Class::Background => "background",
        }
    }
}

/// Something that waits in a queue.
pub(crate) trait Queued {
    /// Its class.
    fn class(&self) -> Class;
    /// Within its class, a higher one runs first (the slot of its work; 0 for none).
    fn freshness(&self) -> u64;
    /// When it stops being worth doing.
    fn deadline(&self) -> Instant;
    /// When its request reached the signer: among equals, the earlier runs first.
    fn arrived(&self) -> Instant;
    /// Whether its client went away.
    fn cancelled(&self) -> bool;
    /// Unique id (for removal on cancel).
    fn id(&self) -> u64;
}

/// What `pop` found.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// Run this.
    Run(T),
    /// Refuse this: its deadline passed while it waited (answer 503, do not sign).
    Expired(T),
    /// Its client went away: drop it.
    Cancelled(T),
    /// Nothing runnable.
    Idle,
}

/// How urgent a queue's head is, to compare the heads of several queues: lower runs first
/// (class, then freshness, highest first, then arrival, then the order of submission).
pub(crate) type Urgency = (usize, Reverse<u64>, Instant, u64);

/// One class's tasks: runs of equal freshness, the freshest run first, each in arrival order
/// (then submission order: the id).
/// No run is empty but a sole one: the last run is kept when the queue empties, so a queue that
/// empties and fills again (an idle signer: every job) makes no run. Other emptied runs' buffers
/// are kept for reuse.
#[derive(Debug)]
struct ClassQueue<T> {
    runs: VecDeque<(u64, VecDeque<T>)>,
    len: usize,
    spare: Vec<VecDeque<T>>,
}

impl<T: Queued> ClassQueue<T> {
    fn new() -> Self {
        ClassQueue {
            runs: VecDeque::new(),
            len: 0,
            spare: Vec::new(),
        }
    }

    /// The next to run.
    fn front(&self) -> Option<&T> {
        self.runs.front()?.1.front()
    }

    /// The stalest task: the earliest arrival of the least fresh run.
    fn stalest(&self) -> Option<&T> {
        self.runs.back()?.1.front()
    }

    /// The run of `freshness`, made where it belongs if there is none.
    fn run_of(&mut self, freshness: u64) -> &mut VecDeque<T> {
        let i = if self.len == 0 && !self.runs.is_empty() {
            // The sole, empty run takes any freshness.
            self.runs[0].0 = freshness;
            0
        } else {
            let i = self
                .runs
                .iter()
                .position(|(f, _)| *f <= freshness)
                .unwrap_or(self.runs.len());
            if self.runs.get(i).is_none_or(|(f, _)| *f != freshness) {
                let buf = self.spare.pop().unwrap_or_default();
                self.runs.insert(i, (freshness, buf));
            }
            i
        };
        &mut self.runs[i].1
    }

    /// Behind every task of its run that arrived before it (or at the same moment): at the back
    /// unless it was held up on its way, then past the later arrivals.
    fn push_back(&mut self, t: T, freshness: u64) {
        let run = self.run_of(freshness);
        let key = (t.arrived(), t.id());
        // Runs are kept in this order, so a binary search finds the place (a task put back at
        // the front may sit before an earlier arrival queued meanwhile: close enough).
        if run.back().is_none_or(|u| (u.arrived(), u.id()) <= key) {
            run.push_back(t);
        } else {
            let at = run.partition_point(|u| (u.arrived(), u.id()) <= key);
            run.insert(at, t);
        }
        self.len += 1;
    }

    fn push_front(&mut self, t: T, freshness: u64) {
        self.run_of(freshness).push_front(t);
        self.len += 1;
    }

    /// Take from run `i`, at its front or back, or at `pos`; drops the run if that empties it
    /// (unless it is the only one).
    fn take(&mut self, i: usize, at: At) -> Option<T> {
        let run = &mut self.runs.get_mut(i)?.1;
        let t = match at {
            At::Front => run.pop_front(),
            At::Back => run.pop_back(),
            At::Pos(pos) => run.remove(pos),
        }?;
        if run.is_empty() && self.runs.len() > 1 {
            if let Some((_, buf)) = self.runs.remove(i) {
                self.spare.push(buf);
            }
        }
        self.len -= 1;
        Some(t)
    }

    fn pop_front(&mut self) -> Option<T> {
        self.take(0, At::Front)
    }

    fn pop_stalest(&mut self) -> Option<T> {
        self.take(self.runs.len().checked_sub(1)?, At::Front)
    }

    /// The task that would run last.
    fn pop_back(&mut self) -> Option<T> {
        self.take(self.runs.len().checked_sub(1)?, At::Back)
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let (i, pos) = self
            .runs
            .iter()
            .enumerate()
            .find_map(|(i, (_, run))| run.iter().position(|t| t.id() == id).map(|p| (i, p)))?;
        self.take(i, At::Pos(pos))
    }
}

/// Where [`ClassQueue::take`] takes from a run.
#[derive(Clone, Copy)]
enum At {
    Front,
    Back,
    Pos(usize),
}

/// One queue per class. With `fifo` set, every class shares one queue in arrival order (the
/// baseline the benchmark compares against: same code path, priorities off).
#[derive(Debug)]
pub(crate) struct ClassQueues<T> {
    q: [ClassQueue<T>; CLASSES],
    fifo: bool,
}

impl<T: Queued> ClassQueues<T> {
    /// Empty queues.
    pub fn new(fifo: bool) -> Self {
        ClassQueues {
            q: std::array::from_fn(|_| ClassQueue::new()),
            fifo,
        }
    }

    fn slot(&self, class: Class) -> usize {
        if self.fifo {
            0
        } else {
            class as usize
        }
    }

    /// The freshness `t` is ordered by (none in the FIFO baseline).
    fn freshness_of(&self, t: &T) -> u64 {
        if self.fifo {
            0
        } else {
            t.freshness()
        }
    }

    /// Total queued.
    pub fn len(&self) -> usize {
        self.q.iter().map(|q| q.len).sum()
    }

    /// True when empty.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class of the task `pop` would look at first (it may have expired or been cancelled
    /// meanwhile), and its urgency, to compare with other queues' heads.
    pub fn head(&self) -> Option<(Class, Urgency)> {
        self.q.iter().enumerate().find_map(|(s, q)| {
            q.front().map(|t| {
                let urgency = (s, Reverse(self.freshness_of(t)), t.arrived(), t.id());
                (t.class(), urgency)
            })
        })
    }

    /// Add behind the tasks of its class that are fresher, or as fresh and arrived before it.
    pub fn push(&mut self, t: T) {
        let (s, f) = (self.slot(t.class()), self.freshness_of(&t));
        self.q[s].push_back(t, f);
    }

    /// Put back where `pop` took it from (a task that could not run after all).
    pub(crate) fn push_front(&mut self, t: T) {
        let (s, f) = (self.slot(t.class()), self.freshness_of(&t));
        self.q[s].push_front(t, f);
    }

    /// The next thing to do: the freshest, then oldest, task of the highest non-empty class.
    /// Expired and cancelled tasks come out first so the caller can answer them. Background work
    /// comes out only if `allow_background` (the caller knows whether it would take the last
    /// session).
    pub fn pop(&mut self, now: Instant, allow_background: bool) -> Next<T> {
        self.pop_from(0, now, allow_background)
    }

    /// As [`ClassQueues::pop`], but blocks stay queued for their device's block thread (with
    /// priorities on; the FIFO baseline has one queue and no block threads).
    pub(crate) fn pop_except_blocks(&mut self, now: Instant, allow_background: bool) -> Next<T> {
        let first = if self.fifo {
            0
        } else {
            Class::Block as usize + 1
        };
        self.pop_from(first, now, allow_background)
    }

    fn pop_from(&mut self, first: usize, now: Instant, allow_background: bool) -> Next<T> {
        for s in first..CLASSES {
            let q = &mut self.q[s];
            let Some(front) = q.front() else {
                continue;
            };
            if front.cancelled() {
                return q.pop_front().map_or(Next::Idle, Next::Cancelled);
            }
            // The stalest task expires first: clear it before it holds a place any longer. (With
            // one run it is the front, checked next.)
            if q.runs.len() > 1 && q.stalest().is_some_and(|t| t.deadline() <= now) {
                return q.pop_stalest().map_or(Next::Idle, Next::Expired);
            }
            if front.deadline() <= now {
                return q.pop_front().map_or(Next::Idle, Next::Expired);
            }
            if front.class() == Class::Background && !allow_background && !self.fifo {
                // Background is the lowest class: nothing after it can run either.
                return Next::Idle;
            }
            return q.pop_front().map_or(Next::Idle, Next::Run);
        }
        Next::Idle
    }

    /// Make room for a task of `class`: remove the task that would run last of the lowest class
    /// strictly below `class`, if any (shed background first; within a class, the stalest work,
    /// newest arrival first).
    pub(crate) fn evict_below(&mut self, class: Class) -> Option<T> {
        if self.fifo {
            return None;
        }
        for s in (class as usize + 1..CLASSES).rev() {
            if let Some(t) = self.q[s].pop_back() {
                return Some(t);
            }
        }
        None
    }

    /// Remove the task with `id`, wherever it waits.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        self.q.iter_mut().find_map(|q| q.remove(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    struct T {
        id: u64,
        class: Class,
        freshness: u64,
        deadline: Instant,
        arrived: Instant,
        cancelled: bool,
    }

    impl Queued for T {
        fn class(&self) -> Class {
            self.class
        }
        fn freshness(&self) -> u64 {
            self.freshness
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
        fn arrived(&self) -> Instant {
            self.arrived
        }
        fn cancelled(&self) -> bool {
            self.cancelled
        }
        fn id(&self) -> u64 {
            self.id
        }
    }

    fn t(id: u64, class: Class, now: Instant) -> T {
        fresh(id, class, 0, now)
    }

    fn fresh(id: u64, class: Class, freshness: u64, now: Instant) -> T {
        T {
            id,
            class,
            freshness,
            deadline: now + Duration::from_secs(10),
            arrived: now,
            cancelled: false,
        }
    }

    fn ids(q: &mut ClassQueues<T>, now: Instant, allow_bg: bool) -> Vec<u64> {
        let mut out = Vec::new();
        while let Next::Run(x) = q.pop(now, allow_bg) {
            out.push(x.id);
        }
        out
    }

    use Class::*;

    /// Arrivals as (id, class).
    type Arrivals = &'static [(u64, Class)];

    #[test]
    fn order_is_class_then_arrival() {
        let now = Instant::now();
        // (arrivals as (id, class), background allowed, expected run order)
        let table: &[(Arrivals, bool, &[u64])] = &[
            (
                &[(1, Attestation), (2, Block), (3, Attestation)],
                true,
                &[2, 1, 3],
            ),
            (
                &[
                    (1, Background),
                    (2, Admin),
                    (3, Aggregate),
                    (4, Attestation),
                    (5, Block),
                ],
                true,
                &[5, 4, 3, 2, 1],
            ),
            (
                &[(1, Background), (2, Background), (3, Attestation)],
                false,
                &[3],
            ),
            (&[(1, Background), (2, Background)], true, &[1, 2]),
            (&[(1, Block), (2, Block), (3, Block)], true, &[1, 2, 3]),
        ];
        for (arrivals, allow_bg, expected) in table {
            let mut q = ClassQueues::new(false);
            for (id, class) in arrivals.iter() {
                q.push(t(*id, *class, now));
            }
            assert_eq!(ids(&mut q, now, *allow_bg), *expected, "{arrivals:?}");
        }
    }

    /// Arrivals as (id, class, freshness).
    type Fresh = &'static [(u64, Class, u64)];

    #[test]
    fn within_a_class_the_freshest_work_runs_first_then_the_oldest_arrival() {
        let now = Instant::now();
        // (arrivals, expected run order)
        let table: &[(Fresh, &[u64])] = &[
            // Slot 10's backlog waits behind slot 11's attestations, which arrived later.
            (
                &[
                    (1, Attestation, 10),
                    (2, Attestation, 10),
                    (3, Attestation, 11),
                    (4, Attestation, 11),
                ],
                &[3, 4, 1, 2],
            ),
            // Runs of equal freshness keep their arrival order, wherever they are inserted.
            (
                &[
                    (1, Aggregate, 5),
                    (2, Aggregate, 7),
                    (3, Aggregate, 6),
                    (4, Aggregate, 5),
                    (5, Aggregate, 7),
                    (6, Aggregate, 6),
                ],
                &[2, 5, 3, 6, 1, 4],
            ),
            // Class still comes first: a fresh attestation never passes a stale block.
            (
                &[(1, Block, 3), (2, Attestation, 9), (3, Block, 4)],
                &[3, 1, 2],
            ),
            // No slot (freshness 0): arrival order, behind anything with a slot.
            (&[(1, Admin, 0), (2, Admin, 0), (3, Admin, 0)], &[1, 2, 3]),
            (
                &[(1, Aggregate, 0), (2, Aggregate, 4), (3, Aggregate, 0)],
                &[2, 1, 3],
            ),
        ];
        for (arrivals, expected) in table {
            let mut q = ClassQueues::new(false);
            for (id, class, f) in arrivals.iter() {
                q.push(fresh(*id, *class, *f, now));
            }
            assert_eq!(q.len(), arrivals.len());
            assert_eq!(ids(&mut q, now, true), *expected, "{arrivals:?}");
            assert!(q.is_empty());
        }
    }

    #[test]
    fn head_urgency_orders_queues_by_class_then_freshness_then_arrival() {
        let now = Instant::now();
        let head = |items: &[(u64, Class, u64)]| {
            let mut q = ClassQueues::new(false);
            for (id, class, f) in items {
                q.push(fresh(*id, *class, *f, now));
            }
            q.head().map(|(_, u)| u)
        };
        let stale_block = head(&[(1, Block, 3)]);
        let fresh_attestation = head(&[(2, Attestation, 9)]);
        let older_attestation = head(&[(3, Attestation, 8)]);
        let later_arrival = head(&[(4, Attestation, 9)]);
        assert!(stale_block < fresh_attestation);
        assert!(fresh_attestation < older_attestation);
        assert!(fresh_attestation < later_arrival);
        assert_eq!(head(&[]), None);
    }

    #[test]
    fn fifo_mode_ignores_classes_and_freshness() {
        let now = Instant::now();
        let mut q = ClassQueues::new(true);
        for (id, class, f) in [
            (1, Background, 0),
            (2, Attestation, 3),
            (3, Block, 1),
            (4, Admin, 0),
            (5, Attestation, 9),
        ] {
            q.push(fresh(id, class, f, now));
        }
        assert_eq!(ids(&mut q, now, false), vec![1, 2, 3, 4, 5]);
        assert!(
            q.evict_below(Block).is_none(),
            "FIFO sheds nothing: it refuses newcomers"
        );
    }

    #[test]
    fn expired_and_cancelled_come_out_for_an_answer() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        let mut old = t(1, Attestation, now);
        old.deadline = now - Duration::from_millis(1);
        let mut gone = t(2, Block, now);
        gone.cancelled = true;
        q.push(old);
        q.push(gone);
        q.push(t(3, Attestation, now));
        assert!(matches!(q.pop(now, true), Next::Cancelled(T { id: 2, .. })));
        assert!(matches!(q.pop(now, true), Next::Expired(T { id: 1, .. })));
        assert!(matches!(q.pop(now, true), Next::Run(T { id: 3, .. })));
        assert!(matches!(q.pop(now, true), Next::Idle));
    }

    #[test]
    fn stale_work_past_its_deadline_is_cleared_from_the_tail_before_fresh_work_runs() {
        let now = Instant::now();
        let past = now - Duration::from_millis(1);
        let mut q = ClassQueues::new(false);
        // Slot 10's attestations: one expired (the queue hold it at the back, behind slot 11).
        let mut expired = fresh(1, Attestation, 10, now);
        expired.deadline = past;
        q.push(expired);
        q.push(fresh(2, Attestation, 10, now));
        q.push(fresh(3, Attestation, 11, now));
        // The expired one comes out first, from the tail; then the freshest runs.
        assert!(matches!(q.pop(now, true), Next::Expired(T { id: 1, .. })));
        assert_eq!(q.len(), 2);
        assert!(matches!(q.pop(now, true), Next::Run(T { id: 3, .. })));
        assert!(matches!(q.pop(now, true), Next::Run(T { id: 2, .. })));
        // Deadlines are checked against the `now` given: the same task runs at an earlier now.
        let mut q = ClassQueues::new(false);
        let mut later = fresh(4, Aggregate, 1, now);
        later.deadline = now + Duration::from_millis(5);
        q.push(later);
        assert!(matches!(
            q.pop(now + Duration::from_millis(5), true),
            Next::Expired(T { id: 4, .. })
        ));
    }

    #[test]
    fn eviction_sheds_the_newest_of_the_lowest_class_below() {
        let now = Instant::now();
        let table: &[(Arrivals, Class, Option<u64>)] = &[
            (
                &[(1, Background), (2, Background), (3, Admin)],
                Block,
                Some(2),
            ),
            (&[(1, Admin), (2, Aggregate)], Attestation, Some(1)),
            (&[(1, Attestation), (2, Block)], Attestation, None),
            (&[(1, Block)], Block, None),
            (&[(1, Aggregate), (2, Background)], Admin, Some(2)),
            (&[(1, Aggregate)], Admin, None),
        ];
        for (arrivals, incoming, evicted) in table {
            let mut q = ClassQueues::new(false);
            for (id, class) in arrivals.iter() {
                q.push(t(*id, *class, now));
            }
            assert_eq!(
                q.evict_below(*incoming).map(|x| x.id),
                *evicted,
                "{arrivals:?} <- {incoming:?}"
            );
        }
    }

    #[test]
    fn eviction_within_a_class_takes_what_would_run_last() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        for (id, f) in [(1, 10), (2, 11), (3, 10), (4, 11)] {
            q.push(fresh(id, Aggregate, f, now));
        }
        // The stalest run (slot 10), its newest arrival first.
        assert_eq!(q.evict_below(Attestation).map(|x| x.id), Some(3));
        assert_eq!(q.evict_below(Attestation).map(|x| x.id), Some(1));
        assert_eq!(q.evict_below(Attestation).map(|x| x.id), Some(4));
        assert_eq!(ids(&mut q, now, true), vec![2]);
    }

    #[test]
    fn remove_by_id_frees_the_place() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        for id in 0..5 {
            q.push(fresh(id, Attestation, id % 2, now));
        }
        assert_eq!(q.remove(3).map(|x| x.id), Some(3));
        assert_eq!(q.remove(3), None);
        assert_eq!(q.len(), 4);
        assert_eq!(q.remove(1).map(|x| x.id), Some(1), "empties its run");
        assert_eq!(ids(&mut q, now, true), vec![0, 2, 4]);
    }

    #[test]
    fn among_equals_the_earlier_arrival_at_the_signer_runs_first_however_late_it_is_queued() {
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms);
        let mut q = ClassQueues::new(false);
        let arriving = |id, class, freshness, arrived| T {
            arrived,
            ..fresh(id, class, freshness, now)
        };
        // Submitted in id order; 4 and 5 arrived before 2 and 3 but were held up on their way
        // (slashing protection), 6 arrived with 1. Freshness and class still come first.
        q.push(arriving(1, Attestation, 0, at(1)));
        q.push(arriving(2, Attestation, 0, at(5)));
        q.push(arriving(3, Attestation, 0, at(6)));
        q.push(arriving(4, Attestation, 0, at(2)));
        q.push(arriving(5, Attestation, 0, at(3)));
        q.push(arriving(6, Attestation, 0, at(1)));
        q.push(arriving(7, Attestation, 1, at(9)));
        q.push(arriving(8, Block, 0, at(9)));
        assert_eq!(q.head().map(|(_, u)| u), Some((0, Reverse(0), at(9), 8)));
        assert_eq!(ids(&mut q, now, true), vec![8, 7, 1, 6, 4, 5, 2, 3]);
        // The FIFO baseline orders by arrival alone.
        let mut q = ClassQueues::new(true);
        q.push(arriving(1, Admin, 0, at(4)));
        q.push(arriving(2, Block, 5, at(2)));
        q.push(arriving(3, Attestation, 9, at(3)));
        assert_eq!(ids(&mut q, now, true), vec![2, 3, 1]);
    }

    #[test]
    fn a_queue_that_empties_and_fills_again_keeps_its_order() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        // Empties (its last run stays, empty), then fills with other freshnesses.
        q.push(fresh(1, Attestation, 5, now));
        assert_eq!(ids(&mut q, now, true), vec![1]);
        assert!(q.is_empty() && q.head().is_none());
        for (id, f) in [(2, 3), (3, 7), (4, 3), (5, 9)] {
            q.push(fresh(id, Attestation, f, now));
        }
        assert_eq!(q.head().map(|(_, u)| u), Some((1, Reverse(9), now, 5)));
        // Runs emptied by removal and eviction go too; the rest keep their order.
        assert_eq!(q.remove(3).map(|x| x.id), Some(3));
        assert_eq!(q.evict_below(Block).map(|x| x.id), Some(4));
        q.push(fresh(6, Attestation, 7, now));
        assert_eq!(ids(&mut q, now, true), vec![5, 6, 2]);
        assert_eq!(q.len(), 0);
        assert!(matches!(q.pop(now, true), Next::Idle));
    }

    #[test]
    fn push_front_puts_a_task_back_where_pop_took_it() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        for (id, f) in [(1, 5), (2, 6), (3, 6)] {
            q.push(fresh(id, Attestation, f, now));
        }
        let Next::Run(first) = q.pop(now, true) else {
            panic!("nothing ran")
        };
        assert_eq!(first.id, 2);
        q.push_front(first);
        assert_eq!(ids(&mut q, now, true), vec![2, 3, 1]);
    }
}
