//! The scheduler's pure bookkeeping: per-class FIFO queues, and the choice of what runs next.
//! No threads, no clocks of its own: the caller passes `now`, so every rule is tested as a table.

use std::collections::VecDeque;
use std::time::Instant;

/// Priority classes of DESIGN §2, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `BLOCK_V2`, `BLOCK`, `RANDAO_REVEAL`.
    Block = 0,
    /// `ATTESTATION`, `SYNC_COMMITTEE_MESSAGE`.
    Attestation = 1,
    /// Aggregates, contributions, live selection proofs.
    Aggregate = 2,
    /// `VALIDATOR_REGISTRATION`, `VOLUNTARY_EXIT`, `DEPOSIT`.
    Admin = 3,
    /// Precomputed selection proofs: only idle capacity.
    Background = 4,
}

/// Number of classes.
pub const CLASSES: usize = 5;

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
pub trait Queued {
    /// Its class.
    fn class(&self) -> Class;
    /// When it stops being worth doing.
    fn deadline(&self) -> Instant;
    /// Whether its client went away.
    fn cancelled(&self) -> bool;
    /// Unique id (for removal on cancel).
    fn id(&self) -> u64;
}

/// What `pop` found.
#[derive(Debug)]
pub enum Next<T> {
    /// Run this.
    Run(T),
    /// Refuse this: its deadline passed while it waited (answer 503, do not sign).
    Expired(T),
    /// Its client went away: drop it.
    Cancelled(T),
    /// Nothing runnable.
    Idle,
}

/// One FIFO per class. With `fifo` set, every class shares one queue (the baseline the
/// benchmark compares against: same code path, priorities off).
#[derive(Debug)]
pub struct ClassQueues<T> {
    q: [VecDeque<T>; CLASSES],
    fifo: bool,
}

impl<T: Queued> ClassQueues<T> {
    /// Empty queues.
    pub fn new(fifo: bool) -> Self {
        ClassQueues {
            q: Default::default(),
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

    /// Total queued.
    pub fn len(&self) -> usize {
        self.q.iter().map(VecDeque::len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued per class (for metrics).
    pub fn len_of(&self, class: Class) -> usize {
        self.q
            .iter()
            .flatten()
            .filter(|t| t.class() == class)
            .count()
    }

    /// The class and id of the task `pop` would look at first (it may have expired or been
    /// cancelled meanwhile), and an ordering key: lower runs first across several queues.
    pub fn head(&self) -> Option<(Class, (usize, u64))> {
        self.q
            .iter()
            .enumerate()
            .find_map(|(s, q)| q.front().map(|t| (t.class(), (s, t.id()))))
    }

    /// Add at the back of its class.
    pub fn push(&mut self, t: T) {
        let s = self.slot(t.class());
        self.q[s].push_back(t);
    }

    /// Put back at the front of its class (a task that could not run after all).
    pub fn push_front(&mut self, t: T) {
        let s = self.slot(t.class());
        self.q[s].push_front(t);
    }

    /// The next thing to do: the oldest task of the highest non-empty class. Expired and
    /// cancelled tasks come out first so the caller can answer them. Background work comes
    /// out only if `allow_background` (the caller knows whether it would take the last session).
    pub fn pop(&mut self, now: Instant, allow_background: bool) -> Next<T> {
        self.pop_from(0, now, allow_background)
    }

    /// As [`ClassQueues::pop`], but blocks stay queued for their device's block thread (with
    /// priorities on; the FIFO baseline has one queue and no block threads).
    pub fn pop_except_blocks(&mut self, now: Instant, allow_background: bool) -> Next<T> {
        let first = if self.fifo {
            0
        } else {
            Class::Block as usize + 1
        };
        self.pop_from(first, now, allow_background)
    }

    fn pop_from(&mut self, first: usize, now: Instant, allow_background: bool) -> Next<T> {
        for s in first..CLASSES {
            let Some(front) = self.q[s].front() else {
                continue;
            };
            if front.cancelled() {
                return self.q[s].pop_front().map_or(Next::Idle, Next::Cancelled);
            }
            if front.deadline() <= now {
                return self.q[s].pop_front().map_or(Next::Idle, Next::Expired);
            }
            if front.class() == Class::Background && !allow_background && !self.fifo {
                // Background is the lowest class: nothing after it can run either.
                return Next::Idle;
            }
            return self.q[s].pop_front().map_or(Next::Idle, Next::Run);
        }
        Next::Idle
    }

    /// Make room for a task of `class`: remove the newest task of the lowest class that is
    /// strictly below `class`, if any (shed background first).
    pub fn evict_below(&mut self, class: Class) -> Option<T> {
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
        for q in &mut self.q {
            if let Some(pos) = q.iter().position(|t| t.id() == id) {
                return q.remove(pos);
            }
        }
        None
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
        deadline: Instant,
        cancelled: bool,
    }

    impl Queued for T {
        fn class(&self) -> Class {
            self.class
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
        fn cancelled(&self) -> bool {
            self.cancelled
        }
        fn id(&self) -> u64 {
            self.id
        }
    }

    fn t(id: u64, class: Class, now: Instant) -> T {
        T {
            id,
            class,
            deadline: now + Duration::from_secs(10),
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

    #[test]
    fn fifo_mode_ignores_classes() {
        let now = Instant::now();
        let mut q = ClassQueues::new(true);
        for (id, class) in [(1, Background), (2, Attestation), (3, Block), (4, Admin)] {
            q.push(t(id, class, now));
        }
        assert_eq!(ids(&mut q, now, false), vec![1, 2, 3, 4]);
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
    fn remove_by_id_frees_the_place() {
        let now = Instant::now();
        let mut q = ClassQueues::new(false);
        for id in 0..5 {
            q.push(t(id, Attestation, now));
        }
        assert_eq!(q.remove(3).map(|x| x.id), Some(3));
        assert_eq!(q.remove(3), None);
        assert_eq!(q.len(), 4);
        assert_eq!(ids(&mut q, now, true), vec![0, 1, 2, 4]);
    }
}
