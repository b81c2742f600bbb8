//! The storage boundary: what a slashing-protection database must offer so that the rules,
//! group commit, import, export and pruning (written once, in this module's siblings) can run on
//! it. SQLite implements it here; a PostgreSQL store implements the same two traits.
//!
//! Contract for implementers:
//! - [`SlashingStore::transaction`] runs its closure in one transaction and makes the result
//!   durable (committed, and on disk) before returning `Ok`; on `Err`, or if the commit fails,
//!   nothing of it is visible to anyone.
//! - [`StoreTxn::lock_validator`] registers the key if it is new and locks its row until the
//!   transaction ends (PostgreSQL: `SELECT … FOR UPDATE`), so that several signer processes
//!   sharing one database serialise per validator. Callers lock in ascending pubkey order so that
//!   two batches can never deadlock. SQLite's `BEGIN IMMEDIATE` already serialises writers.
//! - [`StoreTxn::lock_validators`] does the same for a batch's validators at once and reads what
//!   the rules need of each ([`ValidatorState`]) after every lock is held, so that it sees what
//!   the previous holders committed. A store where a statement costs a round trip does it in
//!   few statements; the default goes key by key.
//! - At most one block per (validator, slot) and one attestation per (validator, target epoch)
//!   are stored; the callers never insert a second one (a store may enforce it with a key).
//! - A store may hold back inserts and write them later in the transaction, as long as every
//!   read sees them (it writes them first) and the commit includes them.

use super::{Pubkey, Root, SlashingError};

/// A store's id of a validator (a row id).
pub(crate) type ValidatorId = i64;

/// Explicit low watermarks of one validator, on top of its lowest records. Set by pruning (the
/// highest pruned values), by a minified import (the imported maxima), and by any import into a
/// validator that already had history (the low watermark that held before, so that importing old
/// records never lowers protection). They only ever rise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Watermarks {
    /// A new block's slot must be above this.
    pub block_slot: Option<u64>,
    /// A new attestation's source epoch must be at or above this.
    pub attestation_source: Option<u64>,
    /// A new attestation's target epoch must be above this.
    pub attestation_target: Option<u64>,
}

impl Watermarks {
    /// Raise each watermark to at least the corresponding value in `other`.
    pub(crate) fn raise(&mut self, other: &Watermarks) {
        self.block_slot = max_opt(self.block_slot, other.block_slot);
        self.attestation_source = max_opt(self.attestation_source, other.attestation_source);
        self.attestation_target = max_opt(self.attestation_target, other.attestation_target);
    }
}

/// The larger of two optional values (`None` is "no bound").
pub(crate) fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A recorded block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockRecord {
    /// Slot.
    pub slot: u64,
    /// Signing root; `None` when imported without one (unknown, never equal to a request's).
    pub signing_root: Option<Root>,
}

/// A recorded attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttestationRecord {
    /// Source epoch.
    pub source_epoch: u64,
    /// Target epoch.
    pub target_epoch: u64,
    /// Signing root; `None` when imported without one (unknown, never equal to a request's).
    pub signing_root: Option<Root>,
}

/// The span of a validator's recorded attestations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttestationSpan {
    /// Lowest source epoch.
    pub min_source: u64,
    /// Lowest target epoch.
    pub min_target: u64,
    /// Highest source epoch.
    pub max_source: u64,
    /// Highest target epoch.
    pub max_target: u64,
}

impl AttestationSpan {
    /// The span from its four bounds, as the store reads them (`None` each when the validator
    /// has no attestation recorded).
    pub(crate) fn of(
        min: (Option<u64>, Option<u64>),
        max: (Option<u64>, Option<u64>),
    ) -> Option<AttestationSpan> {
        match (min, max) {
            ((Some(min_source), Some(min_target)), (Some(max_source), Some(max_target))) => {
                Some(AttestationSpan {
                    min_source,
                    min_target,
                    max_source,
                    max_target,
                })
            }
            _ => None,
        }
    }

    /// The span with `source`→`target` recorded too.
    pub(crate) fn with(span: Option<Self>, source: u64, target: u64) -> Self {
        match span {
            Some(s) => AttestationSpan {
                min_source: s.min_source.min(source),
                min_target: s.min_target.min(target),
                max_source: s.max_source.max(source),
                max_target: s.max_target.max(target),
            },
            None => AttestationSpan {
                min_source: source,
                min_target: target,
                max_source: source,
                max_target: target,
            },
        }
    }
}

/// What the rules need of one locked validator: enough to decide the usual request (above
/// everything recorded) without asking the store again. Kept up to date by the rules as they
/// record within the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValidatorState {
    /// The validator.
    pub id: ValidatorId,
    /// Marked deleted through the Keymanager API.
    pub deleted: bool,
    /// Its explicit watermarks.
    pub watermarks: Watermarks,
    /// Lowest and highest recorded block slot.
    pub blocks: Option<(u64, u64)>,
    /// Its recorded attestations' span.
    pub attestations: Option<AttestationSpan>,
}

impl ValidatorState {
    /// The state of validator `id` from the columns a store's state query returns, in this
    /// order: the three explicit watermarks (block slot, attestation source, attestation
    /// target), the deletion mark (non-zero: deleted), the lowest and highest block slot, the
    /// lowest source, lowest target, highest source and highest target epoch.
    pub(crate) fn from_columns(
        id: ValidatorId,
        c: &[Option<i64>; 10],
    ) -> Result<ValidatorState, SlashingError> {
        let u = |i: usize| {
            c[i].map(|v| {
                u64::try_from(v).map_err(|_| {
                    SlashingError::Store(format!("corrupt database: negative value {v}"))
                })
            })
            .transpose()
        };
        let blocks = match (u(4)?, u(5)?) {
            (Some(lo), Some(hi)) => Some((lo, hi)),
            _ => None,
        };
        let attestations = AttestationSpan::of((u(6)?, u(7)?), (u(8)?, u(9)?));
        Ok(ValidatorState {
            id,
            deleted: c[3].is_some_and(|d| d != 0),
            watermarks: Watermarks {
                block_slot: u(0)?,
                attestation_source: u(1)?,
                attestation_target: u(2)?,
            },
            blocks,
            attestations,
        })
    }
}

/// Read [`ValidatorState`] of a validator whose row `tx` holds, statement by statement.
pub(crate) fn read_state(
    tx: &mut (impl StoreTxn + ?Sized),
    id: ValidatorId,
    deleted: bool,
) -> Result<ValidatorState, SlashingError> {
    let blocks = match (tx.min_block_slot(id)?, tx.max_block_slot(id)?) {
        (Some(lo), Some(hi)) => Some((lo, hi)),
        _ => None,
    };
    let attestations = AttestationSpan::of(
        tx.min_attestation_epochs(id)?,
        tx.max_attestation_epochs(id)?,
    );
    Ok(ValidatorState {
        id,
        deleted,
        watermarks: tx.watermarks(id)?,
        blocks,
        attestations,
    })
}

/// The per-validator deletion a store that prunes one validator at a time builds
/// [`StoreTxn::prune_many`] from ([`rules::prune_each`](super::rules::prune_each)).
pub(crate) trait DeletesBelow {
    /// Delete `v`'s blocks with `slot < below_slot` and attestations with
    /// `target_epoch < below_target`; report how many and the highest deleted values.
    fn delete_below(
        &mut self,
        v: ValidatorId,
        below_slot: u64,
        below_target: u64,
    ) -> Result<Pruned, SlashingError>;
}

/// What pruning removed from one validator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    /// Records deleted.
    pub records: u64,
    /// The highest pruned values, which become watermarks.
    pub maxima: Watermarks,
}

/// What a database holds: rows per table and bytes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Registered validators.
    pub validators: u64,
    /// Recorded blocks.
    pub blocks: u64,
    /// Recorded attestations.
    pub attestations: u64,
    /// Bytes on disk: SQLite's file with its WAL and shared-memory file; PostgreSQL's tables
    /// with their indexes and TOAST (`pg_total_relation_size`).
    pub bytes: u64,
}

/// A slashing-protection database. Owned by one writer thread, hence `Send` but not `Sync`.
pub(crate) trait SlashingStore: Send + 'static {
    /// Run `f` in one write transaction; commit durably iff it returns `Ok`, else roll back.
    /// A store may run `f` a second time, in a new transaction, when the first one's opening
    /// failed (a server connection that had died while idle): `f` acts only through the
    /// transaction it is given.
    fn transaction<R>(
        &mut self,
        f: impl FnMut(&mut dyn StoreTxn) -> Result<R, SlashingError>,
    ) -> Result<R, SlashingError>;

    /// Count the rows (all of them: slow on a large database) and measure the bytes on disk.
    fn footprint(&mut self) -> Result<Footprint, SlashingError>;

    /// Statements sent to a database server so far, each a round trip (0 for a file).
    fn round_trips(&self) -> u64 {
        0
    }
}

/// Operations inside one transaction. Slots and epochs are at most
/// [`MAX_SLOT_OR_EPOCH`](super::MAX_SLOT_OR_EPOCH).
pub(crate) trait StoreTxn {
    /// The network this database protects, if recorded yet.
    fn genesis_validators_root(&mut self) -> Result<Option<Root>, SlashingError>;
    /// Record the network (only when none is recorded).
    fn set_genesis_validators_root(&mut self, gvr: &Root) -> Result<(), SlashingError>;

    /// Register `pubkey` if new, lock its row until the transaction ends, return its id.
    fn lock_validator(&mut self, pubkey: &Pubkey) -> Result<ValidatorId, SlashingError>;
    /// [`lock_validator`](Self::lock_validator) for each of `pubkeys` (ascending, without
    /// duplicates), then, with every lock held, each one's [`ValidatorState`], in that order.
    fn lock_validators(
        &mut self,
        pubkeys: &[Pubkey],
    ) -> Result<Vec<ValidatorState>, SlashingError> {
        let mut ids = Vec::with_capacity(pubkeys.len());
        for pk in pubkeys {
            ids.push(self.lock_validator(pk)?);
        }
        pubkeys
            .iter()
            .zip(ids)
            .map(|(pk, id)| {
                let deleted = self.is_deleted(pk)?;
                read_state(self, id, deleted)
            })
            .collect()
    }
    /// The id of `pubkey`, if registered (no lock: for export).
    fn find_validator(&mut self, pubkey: &Pubkey) -> Result<Option<ValidatorId>, SlashingError>;
    /// Every registered validator, in registration order.
    fn validators(&mut self) -> Result<Vec<(ValidatorId, Pubkey)>, SlashingError>;
    /// The validator's explicit watermarks.
    fn watermarks(&mut self, v: ValidatorId) -> Result<Watermarks, SlashingError>;
    /// Replace the validator's explicit watermarks (callers only raise them).
    fn set_watermarks(&mut self, v: ValidatorId, wm: &Watermarks) -> Result<(), SlashingError>;

    /// The block recorded at `slot`: `Some(signing_root)` if there is one.
    fn block_at(
        &mut self,
        v: ValidatorId,
        slot: u64,
    ) -> Result<Option<Option<Root>>, SlashingError>;
    /// The lowest recorded block slot.
    fn min_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError>;
    /// The highest recorded block slot.
    fn max_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError>;
    /// Record a block.
    fn insert_block(&mut self, v: ValidatorId, block: &BlockRecord) -> Result<(), SlashingError>;
    /// Every recorded block, by ascending slot.
    fn blocks(&mut self, v: ValidatorId) -> Result<Vec<BlockRecord>, SlashingError>;

    /// The attestation recorded for `target_epoch`, if any.
    fn attestation_at_target(
        &mut self,
        v: ValidatorId,
        target_epoch: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError>;
    /// The lowest recorded source epoch and the lowest recorded target epoch.
    fn min_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError>;
    /// The highest recorded source epoch and the highest recorded target epoch.
    fn max_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError>;
    /// A recorded attestation that `source`→`target` would surround
    /// (`source < r.source && r.target < target`), if any.
    fn attestation_surrounded_by(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError>;
    /// A recorded attestation that surrounds `source`→`target`
    /// (`r.source < source && target < r.target`), if any.
    fn attestation_surrounding(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError>;
    /// Record an attestation.
    fn insert_attestation(
        &mut self,
        v: ValidatorId,
        att: &AttestationRecord,
    ) -> Result<(), SlashingError>;
    /// Every recorded attestation, by ascending target epoch.
    fn attestations(&mut self, v: ValidatorId) -> Result<Vec<AttestationRecord>, SlashingError>;

    /// Prune each of `ids` as [`rules::prune_validator`](super::rules::prune_validator)
    /// defines it: every record more than `keep_epochs` epochs (`keep_epochs` × 32 slots) below
    /// the validator's newest is deleted, and the highest deleted values raise its watermarks.
    /// A store may skip a validator another transaction holds (left for the next pass). The
    /// records deleted. SQLite and the in-memory store go one validator at a time
    /// ([`rules::prune_each`](super::rules::prune_each) over [`DeletesBelow`]); PostgreSQL in
    /// one statement for them all.
    fn prune_many(&mut self, ids: &[ValidatorId], keep_epochs: u64) -> Result<u64, SlashingError>;

    /// Mark `pubkey` deleted through the Keymanager API (`true`, idempotent) or clear the mark
    /// (`false`: an explicit re-import). A deleted key is never loaded for signing.
    fn set_deleted(&mut self, pubkey: &Pubkey, deleted: bool) -> Result<(), SlashingError>;
    /// Every pubkey marked deleted, in ascending order.
    fn deleted_keys(&mut self) -> Result<Vec<Pubkey>, SlashingError>;
    /// Whether `pubkey` is marked deleted. Read after [`StoreTxn::lock_validator`] on the key,
    /// it sees a deletion committed by any process before the lock was granted (the deletion
    /// locks the same row).
    fn is_deleted(&mut self, pubkey: &Pubkey) -> Result<bool, SlashingError>;

    /// Open a nested savepoint (one level) inside the transaction.
    fn savepoint(&mut self) -> Result<(), SlashingError>;
    /// Undo everything since [`StoreTxn::savepoint`] and close it.
    fn rollback_savepoint(&mut self) -> Result<(), SlashingError>;
    /// Keep everything since [`StoreTxn::savepoint`] and close it.
    fn release_savepoint(&mut self) -> Result<(), SlashingError>;
}
