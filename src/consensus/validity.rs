//! Validity windows: until when a request's signature is still worth something, from the
//! consensus specs (ethereum/consensus-specs). The table itself is
//! [`SignRequest::validity_window`](super::SignRequest::validity_window), one arm per message;
//! the rules it applies are here, each with the spec text it follows. A window is open from the
//! request's own slot (or epoch) until the start of the slot where it ends, plus
//! [`MAXIMUM_GOSSIP_CLOCK_DISPARITY`]; a request after that is refused before anything is
//! recorded or signed. Early requests are not refused (validator clients sign selection proofs
//! and exits ahead of time), except blocks and attestations further ahead than slashing
//! protection may record ([`check_not_ahead`]).
//!
//! Where the rule changed at a fork (attestations and aggregates at Deneb, EIP-7045), the window
//! is the wider one: the signer does not know which fork a `fork_info` names, and a signature it
//! refuses that the chain would still have counted is a lost reward, while one it signs in vain
//! costs one device operation. The Deneb window is the wider for every slot (see
//! [`ValidityWindow::attestation`]).

use std::fmt;
use std::time::{Duration, Instant};

use super::clock::SlotClock;
use super::{MessageType, SlashingData};

/// `MAXIMUM_GOSSIP_CLOCK_DISPARITY` (`specs/phase0/p2p-interface.md`, configuration): 500 ms.
/// The gossip rules add it to the end of every slot range ("`MAXIMUM_GOSSIP_CLOCK_DISPARITY`
/// MUST be subtracted and added respectively", the FAQ "Why is there
/// `MAXIMUM_GOSSIP_CLOCK_DISPARITY` ..."), so honest peers whose clocks run up to 500 ms behind
/// ours still accept a message that late. The signer's clock is one more clock: every window here
/// ends that much after its last slot does. (No allowance at the start: early requests are not
/// refused at all.)
pub(crate) const MAXIMUM_GOSSIP_CLOCK_DISPARITY: Duration = Duration::from_millis(500);

/// What a signature is for, as the request names it: a slot, or an epoch (`RANDAO_REVEAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// A message of this slot.
    Slot(u64),
    /// A message of this epoch.
    Epoch(u64),
}

impl Duty {
    /// The first slot of the duty (an epoch's first slot); `None` if it overflows.
    pub fn first_slot(self, slots_per_epoch: u64) -> Option<u64> {
        match self {
            Duty::Slot(s) => Some(s),
            Duty::Epoch(e) => e.checked_mul(slots_per_epoch),
        }
    }
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Duty::Slot(s) => write!(f, "slot {s}"),
            Duty::Epoch(e) => write!(f, "epoch {e}"),
        }
    }
}

/// Which rule of the specs a window follows (for tests, docs and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A block: its own slot.
    BlockSlot,
    /// A RANDAO reveal: its epoch, the epoch of the block that carries it.
    RandaoEpoch,
    /// An attestation: its inclusion window (EIP-7045).
    AttestationInclusion,
    /// An aggregate or an aggregation selection proof: the aggregate's gossip window (EIP-7045).
    AggregateGossip,
    /// A sync committee message, selection proof or contribution: its own slot.
    SyncCommitteeSlot,
    /// A payload attestation (Gloas PTC): its own slot.
    PayloadAttestationSlot,
    /// An execution payload bid (Gloas): until its slot ends.
    BidSlot,
    /// Proposer preferences (Gloas): until the proposal slot begins.
    PreferencesBeforeSlot,
}

/// When a signature stops being worth anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityWindow {
    /// What it is for.
    pub duty: Duty,
    /// The window ends [`MAXIMUM_GOSSIP_CLOCK_DISPARITY`] after this slot begins. `None`: that
    /// slot is beyond `u64`, so the window never ends.
    pub ends_at: Option<u64>,
    /// The rule it follows.
    pub rule: Rule,
}

impl ValidityWindow {
    /// A block for `slot`: until its slot ends. The specs: a validator proposes "at the
    /// beginning of any slot during which `is_proposer`" (`specs/phase0/validator.md`, Block
    /// proposal); fork choice deems a block timely only when it arrives in its own slot, before
    /// the attesting interval (`specs/phase0/fork-choice.md`, `record_block_timeliness`): a later
    /// block gets neither the proposer boost nor its own slot's attestations, and the next
    /// proposer may build past it (`get_proposer_head`). Gossip itself sets no end (only "not
    /// from a future slot"), so this is the end of the block's use, not of its validity.
    pub fn block(slot: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: slot.checked_add(1),
            rule: Rule::BlockSlot,
        }
    }

    /// A RANDAO reveal for `epoch`: until the epoch ends. It goes into a block of that epoch:
    /// `get_epoch_signature` signs `compute_epoch_at_slot(block.slot)`
    /// (`specs/phase0/validator.md`, Randao reveal), and validator clients ask for it just before
    /// the block, at any slot of the epoch.
    pub fn randao(epoch: u64, slots_per_epoch: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Epoch(epoch),
            ends_at: epoch
                .checked_add(1)
                .and_then(|e| epoch_start(e, slots_per_epoch)),
            rule: Rule::RandaoEpoch,
        }
    }

    /// An attestation for `slot`: until the epoch after its own ends. From Deneb (EIP-7045)
    /// `process_attestation` only asks `data.slot + MIN_ATTESTATION_INCLUSION_DELAY <=
    /// state.slot` and `data.target.epoch in (previous, current)` (`specs/deneb/beacon-chain.md`,
    /// Modified `process_attestation`), and `get_attestation_participation_flag_indices` sets the
    /// target flag at any inclusion delay (Modified there too): an attestation still earns its
    /// target reward until the end of the epoch after its target epoch, and its source reward
    /// for `integer_squareroot(SLOTS_PER_EPOCH)` slots. Gossip matches
    /// (`specs/deneb/p2p-interface.md`, Modified `beacon_attestation_{subnet_id}`: "epoch is
    /// either the current or previous epoch", `is_current_or_previous_epoch`). Before Deneb
    /// inclusion ended at `data.slot + SLOTS_PER_EPOCH` (`specs/phase0/beacon-chain.md`,
    /// `process_attestation`; gossip `ATTESTATION_PROPAGATION_SLOT_RANGE` = 32). With
    /// `slot = e * SLOTS_PER_EPOCH + k`, the Deneb window ends at slot `slot + 2 *
    /// SLOTS_PER_EPOCH - k`, at least `slot + SLOTS_PER_EPOCH + 1`, where the older one ends: it
    /// is never the narrower, so it is the one applied on every fork. The epoch is the slot's,
    /// which the specs require the target epoch to equal; an attestation whose target differs
    /// can never be included, whatever the time.
    pub fn attestation(slot: u64, slots_per_epoch: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: next_epoch_but_one(slot, slots_per_epoch),
            rule: Rule::AttestationInclusion,
        }
    }

    /// An aggregate (`AGGREGATE_AND_PROOF[_V2]`) of an attestation at `slot`, or the selection
    /// proof (`AGGREGATION_SLOT`) that makes its aggregator: the aggregate's gossip window, which
    /// from Deneb is the attestation's: "the aggregate attestation's epoch is either the current
    /// or previous epoch" (`specs/deneb/p2p-interface.md`, Modified `beacon_aggregate_and_proof`;
    /// before Deneb `ATTESTATION_PROPAGATION_SLOT_RANGE`, the narrower, as for attestations). The
    /// proof is verified against `aggregate.data.slot` in that same check, so it is worth
    /// signing while an aggregate of that slot is.
    pub fn aggregate(slot: u64, slots_per_epoch: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: next_epoch_but_one(slot, slots_per_epoch),
            rule: Rule::AggregateGossip,
        }
    }

    /// A sync committee message, sync selection proof or contribution for `slot`: its slot.
    /// Gossip takes messages and contributions only "for the current slot (with a
    /// `MAXIMUM_GOSSIP_CLOCK_DISPARITY` allowance)" (`specs/altair/p2p-interface.md`,
    /// `sync_committee_{subnet_id}` and `sync_committee_contribution_and_proof`,
    /// `is_current_slot`); the proof is verified in the contribution's check.
    pub(crate) fn sync_committee(slot: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: slot.checked_add(1),
            rule: Rule::SyncCommitteeSlot,
        }
    }

    /// A payload attestation for `slot`: its slot. Gloas gossip takes a
    /// `payload_attestation_message` only "for the current slot" (`specs/gloas/p2p-interface.md`,
    /// `is_current_slot(store, data.slot, …)` in `validate_payload_attestation_message_gossip`),
    /// and the next block aggregates what it heard then (`process_payload_attestation`: `data.slot
    /// + 1 == state.slot`).
    pub(crate) fn payload_attestation(slot: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: slot.checked_add(1),
            rule: Rule::PayloadAttestationSlot,
        }
    }

    /// An execution payload bid for `slot`: until its slot ends. Gloas gossip takes a bid only
    /// when "the bid's slot is the current slot or the next slot" (`is_current_or_next_slot` in
    /// `validate_execution_payload_bid_gossip`), and the proposer of `slot` picks one at the
    /// slot's start.
    pub(crate) fn bid(slot: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(slot),
            ends_at: slot.checked_add(1),
            rule: Rule::BidSlot,
        }
    }

    /// Proposer preferences for `proposal_slot`: until that slot begins. Gloas gossip ignores them
    /// once "the proposal slot has already started" (`is_past_slot` in
    /// `validate_proposer_preferences_gossip`): builders need them before they bid.
    pub(crate) fn proposer_preferences(proposal_slot: u64) -> ValidityWindow {
        ValidityWindow {
            duty: Duty::Slot(proposal_slot),
            ends_at: Some(proposal_slot),
            rule: Rule::PreferencesBeforeSlot,
        }
    }

    /// When the window ends, as time since the Unix epoch on `clock`'s network; `None` when that
    /// is beyond any representable time (never).
    pub fn end_time(&self, clock: &dyn SlotClock) -> Option<Duration> {
        clock
            .start_of(self.ends_at?)?
            .checked_add(MAXIMUM_GOSSIP_CLOCK_DISPARITY)
    }
}

/// The first slot of the epoch after the next: where an attestation of `slot` stops counting.
fn next_epoch_but_one(slot: u64, slots_per_epoch: u64) -> Option<u64> {
    epoch_start(
        slot.checked_div(slots_per_epoch)?.checked_add(2)?,
        slots_per_epoch,
    )
}

/// `compute_start_slot_at_epoch`, checked; `None` when it overflows or epochs have no slots.
fn epoch_start(epoch: u64, slots_per_epoch: u64) -> Option<u64> {
    (slots_per_epoch > 0)
        .then(|| epoch.checked_mul(slots_per_epoch))
        .flatten()
}

/// A request that arrived after its window ended: refused, nothing recorded or signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastWindow {
    /// The request's type.
    pub kind: MessageType,
    /// Its window.
    pub window: ValidityWindow,
    /// The slot when it was refused (`None`: before genesis).
    pub current_slot: Option<u64>,
}

impl fmt::Display for PastWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for {} is past its validity window, which ended {} ms after slot {} began",
            self.kind,
            self.window.duty,
            MAXIMUM_GOSSIP_CLOCK_DISPARITY.as_millis(),
            // A window that never ends is never past.
            self.window.ends_at.unwrap_or(u64::MAX),
        )?;
        match self.current_slot {
            Some(s) => write!(f, " (the current slot is {s})")?,
            None => f.write_str(" (the chain has not started)")?,
        }
        f.write_str("; nothing was signed")
    }
}

impl std::error::Error for PastWindow {}

/// Whether a request with this `window` (`None`: no time limit) may still be signed by `clock`'s
/// time. `Ok` gives the deadline for the queue (`None`: none, also when the end is beyond any
/// representable time or the clock cannot be read); `Err` says why it is too late.
pub fn check(
    kind: MessageType,
    window: Option<ValidityWindow>,
    clock: &dyn SlotClock,
) -> Result<Option<Instant>, PastWindow> {
    let Some(window) = window else {
        return Ok(None);
    };
    let (Some(end), Some(now)) = (window.end_time(clock), clock.now_duration()) else {
        return Ok(None);
    };
    if now >= end {
        return Err(PastWindow {
            kind,
            window,
            current_slot: clock.slot_of(now),
        });
    }
    Ok(clock.instant_at(end))
}

/// How far ahead of the slot clock a slashable message may be, in slots. An honest validator
/// client signs a block at the start of its slot and an attestation during its slot; slashing
/// protection records both, so one far ahead (a block at slot 10^12, a target epoch of 2^40)
/// would refuse every real block or attestation of that validator afterwards. Allowed: a block
/// whose slot begins, and an attestation whose target epoch begins, at most one slot (plus
/// [`MAXIMUM_GOSSIP_CLOCK_DISPARITY`]) after now.
pub(crate) const SLASHABLE_LOOKAHEAD_SLOTS: u64 = 1;

/// A slashable request further ahead of the slot clock than [`SLASHABLE_LOOKAHEAD_SLOTS`]:
/// refused before slashing protection records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AheadOfClock {
    /// The request's type.
    pub kind: MessageType,
    /// What is ahead: `slot N` or `target epoch N`.
    pub what: String,
    /// The latest slot at which such a message may begin now.
    pub latest_slot: Option<u64>,
    /// The slot in progress (`None`: before genesis).
    pub current_slot: Option<u64>,
}

impl fmt::Display for AheadOfClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for {} is ahead of the slot clock (",
            self.kind, self.what
        )?;
        match self.current_slot {
            Some(s) => write!(f, "the current slot is {s}")?,
            None => f.write_str("the chain has not started")?,
        }
        write!(
            f,
            "): a block or attestation is signed at most {SLASHABLE_LOOKAHEAD_SLOTS} slot ahead, \
             so that slashing protection never records a future it would refuse every real \
             message for; nothing was signed or recorded"
        )
    }
}

impl std::error::Error for AheadOfClock {}

/// Whether a slashable request (`slashing`) is near enough to `clock`'s time to be signed and
/// recorded. Not slashable, or a clock that cannot be read: `Ok`.
pub(crate) fn check_not_ahead(
    kind: MessageType,
    slashing: SlashingData,
    slots_per_epoch: u64,
    clock: &dyn SlotClock,
) -> Result<(), AheadOfClock> {
    let (first_slot, what) = match slashing {
        SlashingData::None => return Ok(()),
        SlashingData::Block { slot } => (Some(slot), format!("slot {slot}")),
        SlashingData::Attestation { target_epoch, .. } => (
            target_epoch.checked_mul(slots_per_epoch),
            format!("target epoch {target_epoch}"),
        ),
    };
    let Some(now) = clock.now_duration() else {
        return Ok(());
    };
    let horizon = clock
        .timing()
        .slot_duration
        .checked_mul(SLASHABLE_LOOKAHEAD_SLOTS as u32)
        .and_then(|d| d.checked_add(MAXIMUM_GOSSIP_CLOCK_DISPARITY))
        .and_then(|d| now.checked_add(d));
    // The latest slot that begins by the horizon; before genesis, none.
    let latest_slot = horizon.and_then(|t| clock.slot_of(t));
    match (first_slot, latest_slot) {
        (Some(first), Some(latest)) if first <= latest => Ok(()),
        _ => Err(AheadOfClock {
            kind,
            what,
            latest_slot,
            current_slot: clock.slot_of(now),
        }),
    }
}
