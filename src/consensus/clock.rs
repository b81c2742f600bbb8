//! The slot clock: which slot it is, and when a slot begins, for a network whose genesis time is
//! known. An injectable trait after Lighthouse's `common/slot_clock` (`trait SlotClock`,
//! `SystemTimeSlotClock`, `ManualSlotClock`): the signer reads the system clock, tests set the
//! time by hand, and every rule that depends on the time is tested without waiting.
//!
//! Every computation is checked: a slot from the network can be any `u64`, and a time that no
//! `Duration` or `Instant` can hold is `None` ("never", for a deadline), never a panic.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Slot 0's start and the slot length: the arithmetic every clock shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotTiming {
    /// Slot 0's start, as time since the Unix epoch.
    pub genesis: Duration,
    /// The length of a slot (`SECONDS_PER_SLOT`). A zero length has no slots.
    pub slot_duration: Duration,
}

impl SlotTiming {
    /// Genesis at `genesis_time` (Unix seconds) and slots of `seconds_per_slot`.
    pub fn from_secs(genesis_time: u64, seconds_per_slot: u64) -> SlotTiming {
        SlotTiming {
            genesis: Duration::from_secs(genesis_time),
            slot_duration: Duration::from_secs(seconds_per_slot),
        }
    }

    /// When `slot` begins, as time since the Unix epoch; `None` when no `Duration` holds it.
    pub fn start_of(&self, slot: u64) -> Option<Duration> {
        const NANOS: u128 = 1_000_000_000;
        let since_genesis = self
            .slot_duration
            .as_nanos()
            .checked_mul(u128::from(slot))?;
        let secs = u64::try_from(since_genesis / NANOS).ok()?;
        // The remainder is below 10^9, so it fits a u32.
        let nanos = u32::try_from(since_genesis % NANOS).ok()?;
        self.genesis.checked_add(Duration::new(secs, nanos))
    }

    /// The slot in progress at `t` (time since the Unix epoch); `None` before genesis.
    pub fn slot_of(&self, t: Duration) -> Option<u64> {
        let since_genesis = t.checked_sub(self.genesis)?;
        let slot = since_genesis
            .as_nanos()
            .checked_div(self.slot_duration.as_nanos())?;
        u64::try_from(slot).ok()
    }
}

/// A clock that says which slot it is. Object safe: the API holds an `Arc<dyn SlotClock>`.
pub trait SlotClock: Send + Sync + fmt::Debug {
    /// The network's slot timing.
    fn timing(&self) -> SlotTiming;

    /// Now, as time since the Unix epoch (`None` if the clock reads before 1970).
    fn now_duration(&self) -> Option<Duration>;

    /// The slot in progress now; `None` before genesis.
    fn now(&self) -> Option<u64> {
        self.timing().slot_of(self.now_duration()?)
    }

    /// When `slot` begins, as time since the Unix epoch; `None` beyond any representable time.
    fn start_of(&self, slot: u64) -> Option<Duration> {
        self.timing().start_of(slot)
    }

    /// The slot in progress at `t`; `None` before genesis.
    fn slot_of(&self, t: Duration) -> Option<u64> {
        self.timing().slot_of(t)
    }

    /// The monotonic instant at which this clock reads `t`, for deadlines the scheduler checks
    /// against `Instant::now()`. A time already past maps to now or earlier; a time no `Instant`
    /// can hold is `None` (it never comes).
    fn instant_at(&self, t: Duration) -> Option<Instant> {
        let (wall, now) = (self.now_duration()?, Instant::now());
        match t.checked_sub(wall) {
            Some(ahead) => now.checked_add(ahead),
            None => Some(now.checked_sub(wall - t).unwrap_or(now)),
        }
    }

    /// When `slot` begins, as an `Instant` (see [`SlotClock::instant_at`]).
    fn instant_of_slot(&self, slot: u64) -> Option<Instant> {
        self.instant_at(self.start_of(slot)?)
    }
}

/// The clock the signer runs on: the system's wall clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemTimeSlotClock {
    timing: SlotTiming,
}

impl SystemTimeSlotClock {
    /// A clock for genesis at `genesis_time` (Unix seconds) and slots of `seconds_per_slot`.
    pub fn new(genesis_time: u64, seconds_per_slot: u64) -> SystemTimeSlotClock {
        SystemTimeSlotClock {
            timing: SlotTiming::from_secs(genesis_time, seconds_per_slot),
        }
    }
}

impl SlotClock for SystemTimeSlotClock {
    fn timing(&self) -> SlotTiming {
        self.timing
    }

    fn now_duration(&self) -> Option<Duration> {
        SystemTime::now().duration_since(UNIX_EPOCH).ok()
    }
}

/// A clock whose time is set by hand (tests). Clones share the time: set it on one, and every
/// holder of a clone (the API's state, say) reads the new time.
#[derive(Debug, Clone)]
pub struct ManualSlotClock {
    timing: SlotTiming,
    now: Arc<RwLock<Duration>>,
}

impl ManualSlotClock {
    /// A clock reading genesis time.
    pub fn new(timing: SlotTiming) -> ManualSlotClock {
        ManualSlotClock {
            timing,
            now: Arc::new(RwLock::new(timing.genesis)),
        }
    }

    /// Set the time (since the Unix epoch).
    pub fn set_current_time(&self, t: Duration) {
        *self.now.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Set the time to `offset` into `slot`. Returns false (and leaves the time) when that time
    /// cannot be represented.
    pub fn set_slot_and_offset(&self, slot: u64, offset: Duration) -> bool {
        match self
            .timing
            .start_of(slot)
            .and_then(|t| t.checked_add(offset))
        {
            Some(t) => {
                self.set_current_time(t);
                true
            }
            None => false,
        }
    }

    /// Move the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.write().unwrap_or_else(|p| p.into_inner());
        *now = now.saturating_add(by);
    }
}

impl SlotClock for ManualSlotClock {
    fn timing(&self) -> SlotTiming {
        self.timing
    }

    fn now_duration(&self) -> Option<Duration> {
        Some(*self.now.read().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn slots_and_their_starts() {
        let t = SlotTiming::from_secs(1_000, 12);
        assert_eq!(t.start_of(0), Some(SECS(1_000)));
        assert_eq!(t.start_of(10), Some(SECS(1_120)));
        assert_eq!(t.slot_of(SECS(999)), None, "before genesis");
        assert_eq!(t.slot_of(SECS(1_000)), Some(0));
        assert_eq!(t.slot_of(SECS(1_131)), Some(10));
        assert_eq!(t.slot_of(SECS(1_132)), Some(11));
        // Milliseconds slots (SLOT_DURATION_MS) work the same.
        let ms = SlotTiming {
            genesis: SECS(0),
            slot_duration: Duration::from_millis(1_500),
        };
        assert_eq!(ms.start_of(3), Some(Duration::from_millis(4_500)));
        assert_eq!(ms.slot_of(Duration::from_millis(4_499)), Some(2));
    }

    #[test]
    fn absurd_slots_and_times_are_none_never_a_panic() {
        let t = SlotTiming::from_secs(1_606_824_023, 12);
        for slot in [u64::MAX, u64::MAX - 1, 1 << 63, u64::MAX / 12 + 1] {
            assert_eq!(t.start_of(slot), None, "{slot}");
        }
        // The largest slot that still has a start (u64 seconds hold it), and its neighbours.
        let last = (u64::MAX - 1_606_824_023) / 12;
        assert!(t.start_of(last).is_some());
        assert_eq!(t.start_of(last + 1), None);
        assert_eq!(
            t.slot_of(Duration::MAX),
            Some((u64::MAX - 1_606_824_023) / 12)
        );
        assert_eq!(SlotTiming::from_secs(u64::MAX, 12).start_of(1), None);
        assert_eq!(
            SlotTiming::from_secs(0, 0).slot_of(SECS(5)),
            None,
            "no slots"
        );
        assert_eq!(
            SlotTiming::from_secs(0, 0).start_of(u64::MAX),
            Some(SECS(0))
        );

        let clock = ManualSlotClock::new(t);
        clock.set_current_time(Duration::MAX);
        assert!(clock.now().is_some());
        // Far ahead of the real now: no Instant holds it; far behind: saturates to now or earlier.
        let real = SystemTimeSlotClock::new(1_606_824_023, 12);
        assert_eq!(real.instant_at(Duration::MAX), None);
        assert!(real.instant_at(Duration::ZERO).unwrap() <= Instant::now());
        assert_eq!(real.instant_of_slot(u64::MAX), None);
        assert!(!clock.set_slot_and_offset(u64::MAX, Duration::ZERO));
    }

    #[test]
    fn the_manual_clock_is_shared_by_its_clones_and_maps_to_instants() {
        let clock = ManualSlotClock::new(SlotTiming::from_secs(1_000, 12));
        let held: Arc<dyn SlotClock> = Arc::new(clock.clone());
        assert_eq!(held.now(), Some(0));
        assert!(clock.set_slot_and_offset(40, SECS(3)));
        assert_eq!(held.now(), Some(40));
        clock.advance(SECS(9));
        assert_eq!(held.now(), Some(41));
        // Slot 42 begins 12 s from now on the manual clock: so many seconds from the real now.
        let before = Instant::now();
        let at = held.instant_of_slot(42).unwrap();
        let after = Instant::now();
        assert!(at >= before + SECS(12) && at <= after + SECS(12));
        assert!(held.instant_of_slot(41).unwrap() <= Instant::now());
    }

    #[test]
    fn the_system_clock_is_on_the_real_time() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let clock = SystemTimeSlotClock::new(now - 120, 12);
        let current = clock.now().unwrap();
        assert!((9..=10).contains(&current), "{current}");
        assert!(clock.instant_of_slot(current + 1).unwrap() > Instant::now());
        assert!(clock.instant_of_slot(current).unwrap() <= Instant::now());
    }
}
