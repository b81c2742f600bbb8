//! The slot clock: turns a duty's slot into a deadline when the network's genesis time is known.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::scheduler::Class;

/// Genesis time and slot length.
#[derive(Debug, Clone, Copy)]
pub struct SlotClock {
    /// Unix seconds of slot 0.
    pub genesis_time: u64,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
}

impl SlotClock {
    /// The current slot, or `None` before genesis.
    pub fn current_slot(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        now.checked_sub(self.genesis_time)
            .map(|s| s / self.seconds_per_slot.max(1))
    }

    /// When `slot` begins, as an `Instant` (in the past if it has begun).
    pub fn slot_start(&self, slot: u64) -> Instant {
        let start = UNIX_EPOCH
            + Duration::from_secs(
                self.genesis_time
                    .saturating_add(slot.saturating_mul(self.seconds_per_slot)),
            );
        let (now_sys, now) = (SystemTime::now(), Instant::now());
        match start.duration_since(now_sys) {
            Ok(ahead) => now
                .checked_add(ahead)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            Err(e) => now.checked_sub(e.duration()).unwrap_or(now),
        }
    }

    /// The deadline of a duty at `slot`: blocks, attestations and aggregates for slot s are
    /// worthless once slot s+1 has begun. Other classes have no slot deadline.
    pub fn deadline(&self, class: Class, slot: u64) -> Option<Instant> {
        match class {
            Class::Block | Class::Attestation | Class::Aggregate => {
                Some(self.slot_start(slot.saturating_add(1)))
            }
            Class::Admin | Class::Background => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_slot_clock() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let clock = SlotClock {
            genesis_time: now - 120,
            seconds_per_slot: 12,
        };
        let current = clock.current_slot().unwrap();
        assert!((9..=10).contains(&current), "{current}");
        let i = Instant::now();
        assert!(
            clock.deadline(Class::Attestation, current - 1).unwrap() <= i,
            "last slot's attestation expired"
        );
        assert!(
            clock.deadline(Class::Attestation, current).unwrap() > i,
            "this slot's is still good"
        );
        assert!(clock.deadline(Class::Block, current + 5).unwrap() > i + Duration::from_secs(60));
        assert!(clock.deadline(Class::Admin, 0).is_none());
    }
}
