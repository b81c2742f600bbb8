//! The EIP-3076 decision for one request against one validator's recorded history, inside the
//! caller's transaction: check, and if safe, record. Written once for every store.

use super::store::{
    max_opt, AttestationRecord, AttestationSpan, BlockRecord, DeletesBelow, StoreTxn, ValidatorId,
    ValidatorState, Watermarks,
};
use super::{Proposal, Refusal, Root, SlashingError, WatermarkKind, MAX_SLOT_OR_EPOCH};

/// Why a request was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// New message, now recorded.
    Recorded,
    /// Exactly the message already recorded (same slot/epochs and signing root): signing it again
    /// produces the same signature, so it is safe; nothing new is recorded.
    Repeat,
}

/// The verdict: `Ok` allowed, `Err` refused. The outer `Result` is the store's.
pub(crate) type Verdict = Result<Allowed, Refusal>;

/// Check `proposal` for the validator `v` describes (locked by the caller) and record it if
/// safe; `v` is brought up to date with what was recorded. What `v` shows decides the usual
/// request (a slot or epoch above everything recorded) without asking the store; anything else
/// is looked up.
pub(crate) fn check_and_record(
    tx: &mut dyn StoreTxn,
    v: &mut ValidatorState,
    proposal: &Proposal,
) -> Result<Verdict, SlashingError> {
    match *proposal {
        Proposal::Block { slot, signing_root } => check_block(tx, v, slot, &signing_root),
        Proposal::Attestation {
            source_epoch,
            target_epoch,
            signing_root,
        } => check_attestation(tx, v, source_epoch, target_epoch, &signing_root),
    }
}

fn check_block(
    tx: &mut dyn StoreTxn,
    v: &mut ValidatorState,
    slot: u64,
    root: &Root,
) -> Result<Verdict, SlashingError> {
    if slot > MAX_SLOT_OR_EPOCH {
        return Ok(Err(Refusal::OutOfRange {
            what: "slot",
            value: slot,
        }));
    }
    // Nothing is recorded above the highest slot.
    let existing = match v.blocks {
        Some((_, highest)) if slot <= highest => tx.block_at(v.id, slot)?,
        _ => None,
    };
    if let Some(existing_root) = existing {
        return Ok(if existing_root.as_ref() == Some(root) {
            Ok(Allowed::Repeat)
        } else {
            Err(Refusal::DoubleBlockProposal {
                slot,
                existing_root,
            })
        });
    }
    // EIP-3076 condition 2: nothing at or below the lowest known slot (its history is unknown).
    if let Some(watermark) = max_opt(v.watermarks.block_slot, v.blocks.map(|(lo, _)| lo)) {
        if slot <= watermark {
            return Ok(Err(Refusal::BelowLowWatermark {
                kind: WatermarkKind::BlockSlot,
                value: slot,
                watermark,
            }));
        }
    }
    tx.insert_block(
        v.id,
        &BlockRecord {
            slot,
            signing_root: Some(*root),
        },
    )?;
    v.blocks = Some(match v.blocks {
        Some((lo, hi)) => (lo.min(slot), hi.max(slot)),
        None => (slot, slot),
    });
    Ok(Ok(Allowed::Recorded))
}

fn check_attestation(
    tx: &mut dyn StoreTxn,
    v: &mut ValidatorState,
    source: u64,
    target: u64,
    root: &Root,
) -> Result<Verdict, SlashingError> {
    for (what, value) in [("source epoch", source), ("target epoch", target)] {
        if value > MAX_SLOT_OR_EPOCH {
            return Ok(Err(Refusal::OutOfRange { what, value }));
        }
    }
    if source > target {
        return Ok(Err(Refusal::SourceAfterTarget {
            source_epoch: source,
            target_epoch: target,
        }));
    }
    let span = v.attestations;
    // Nothing is recorded above the highest target.
    let existing = match span {
        Some(s) if target <= s.max_target => tx.attestation_at_target(v.id, target)?,
        _ => None,
    };
    if let Some(e) = existing {
        // The signing root commits to source and target; compare the source too, so that a
        // corrupt or hand-made record can never turn a double vote into a "repeat".
        return Ok(
            if e.source_epoch == source && e.signing_root.as_ref() == Some(root) {
                Ok(Allowed::Repeat)
            } else {
                Err(Refusal::DoubleVote {
                    target_epoch: target,
                    existing_source_epoch: e.source_epoch,
                    existing_root: e.signing_root,
                })
            },
        );
    }
    // EIP-3076 conditions 4 and 5: not below the lowest known source, not at or below the lowest
    // known target.
    let wm = v.watermarks;
    if let Some(watermark) = max_opt(wm.attestation_source, span.map(|s| s.min_source)) {
        if source < watermark {
            return Ok(Err(Refusal::BelowLowWatermark {
                kind: WatermarkKind::AttestationSource,
                value: source,
                watermark,
            }));
        }
    }
    if let Some(watermark) = max_opt(wm.attestation_target, span.map(|s| s.min_target)) {
        if target <= watermark {
            return Ok(Err(Refusal::BelowLowWatermark {
                kind: WatermarkKind::AttestationTarget,
                value: target,
                watermark,
            }));
        }
    }
    // Condition 3: is_slashable_attestation_data, both surround directions. A record the new
    // vote surrounds has a higher source, one that surrounds it a higher target: with none
    // recorded, there is nothing to look for.
    if span.is_some_and(|s| source < s.max_source) {
        if let Some(e) = tx.attestation_surrounded_by(v.id, source, target)? {
            return Ok(Err(Refusal::SurroundingVote {
                source_epoch: source,
                target_epoch: target,
                existing_source_epoch: e.source_epoch,
                existing_target_epoch: e.target_epoch,
            }));
        }
    }
    if span.is_some_and(|s| target < s.max_target) {
        if let Some(e) = tx.attestation_surrounding(v.id, source, target)? {
            return Ok(Err(Refusal::SurroundedVote {
                source_epoch: source,
                target_epoch: target,
                existing_source_epoch: e.source_epoch,
                existing_target_epoch: e.target_epoch,
            }));
        }
    }
    tx.insert_attestation(
        v.id,
        &AttestationRecord {
            source_epoch: source,
            target_epoch: target,
            signing_root: Some(*root),
        },
    )?;
    v.attestations = Some(AttestationSpan::with(span, source, target));
    Ok(Ok(Allowed::Recorded))
}

/// The low watermarks in force for `v`: each explicit watermark or the lowest record, whichever
/// is higher.
pub(crate) fn effective_watermarks(
    tx: &mut dyn StoreTxn,
    v: ValidatorId,
) -> Result<Watermarks, SlashingError> {
    let mut wm = tx.watermarks(v)?;
    let (min_source, min_target) = tx.min_attestation_epochs(v)?;
    wm.raise(&Watermarks {
        block_slot: tx.min_block_slot(v)?,
        attestation_source: min_source,
        attestation_target: min_target,
    });
    Ok(wm)
}

/// Slots per epoch, to turn "epochs kept" into a block-slot horizon (mainnet and every public
/// network; a smaller preset only means more block history is kept).
pub(crate) const SLOTS_PER_EPOCH: u64 = 32;

/// Delete `v`'s records older than `keep_epochs` before its newest ones, keeping the newest block
/// and attestation always. Protection never drops: the highest pruned values become watermarks,
/// and any new attestation at or above them (source ≥, target >) can neither double-vote nor
/// surround or be surrounded by a pruned one; the lowest remaining records only rise.
pub(crate) fn prune_validator<T: StoreTxn + DeletesBelow + ?Sized>(
    tx: &mut T,
    v: ValidatorId,
    keep_epochs: u64,
) -> Result<u64, SlashingError> {
    let below_slot = tx.max_block_slot(v)?.map_or(0, |max| {
        max.saturating_sub(keep_epochs.saturating_mul(SLOTS_PER_EPOCH))
    });
    let below_target = tx
        .max_attestation_epochs(v)?
        .1
        .map_or(0, |max| max.saturating_sub(keep_epochs));
    let pruned = tx.delete_below(v, below_slot, below_target)?;
    if pruned.records > 0 {
        let mut wm = tx.watermarks(v)?;
        wm.raise(&pruned.maxima);
        tx.set_watermarks(v, &wm)?;
    }
    Ok(pruned.records)
}

/// [`StoreTxn::prune_many`] for a store that prunes one validator at a time: each of `ids` by
/// [`prune_validator`], in order. The records deleted.
pub(crate) fn prune_each<T: StoreTxn + DeletesBelow + ?Sized>(
    tx: &mut T,
    ids: &[ValidatorId],
    keep_epochs: u64,
) -> Result<u64, SlashingError> {
    ids.iter().try_fold(0, |records, &v| {
        Ok(records + prune_validator(tx, v, keep_epochs)?)
    })
}

#[cfg(test)]
mod tests {
    //! The rules as a table: one line per case, the verdict beside it. Every table runs against
    //! the SQLite store and against a naive in-memory store (a second, independent
    //! implementation of the queries).

    use super::*;
    use crate::slashing::memory::MemoryStore;
    use crate::slashing::sqlite::SqliteStore;
    use crate::slashing::store::{read_state, SlashingStore};

    /// A history entry.
    #[derive(Clone, Copy)]
    enum H {
        /// Block at slot with root byte (0 = imported without a root).
        B(u64, u8),
        /// Attestation source, target, root byte (0 = imported without a root).
        A(u64, u64, u8),
        /// Explicit watermarks (block slot, source, target); u64::MAX = none.
        Wm(u64, u64, u64),
    }
    use H::{A, B};

    /// Expected verdict.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum X {
        /// Allowed and recorded.
        Rec,
        /// Allowed as an identical re-sign.
        Rep,
        DoubleBlock,
        DoubleVote,
        Surrounding,
        Surrounded,
        SrcAfterTgt,
        BelowSlot,
        BelowSource,
        BelowTarget,
        OutOfRange,
    }
    use X::*;

    fn root(byte: u8) -> Root {
        [byte; 32]
    }
    fn blk(slot: u64, r: u8) -> Proposal {
        Proposal::Block {
            slot,
            signing_root: root(r),
        }
    }
    fn att(source_epoch: u64, target_epoch: u64, r: u8) -> Proposal {
        Proposal::Attestation {
            source_epoch,
            target_epoch,
            signing_root: root(r),
        }
    }
    fn wm(slot: u64, source: u64, target: u64) -> H {
        H::Wm(slot, source, target)
    }
    const NONE: u64 = u64::MAX;

    fn classify(v: &Verdict) -> X {
        match v {
            Ok(Allowed::Recorded) => Rec,
            Ok(Allowed::Repeat) => Rep,
            Err(Refusal::DoubleBlockProposal { .. }) => DoubleBlock,
            Err(Refusal::DoubleVote { .. }) => DoubleVote,
            Err(Refusal::SurroundingVote { .. }) => Surrounding,
            Err(Refusal::SurroundedVote { .. }) => Surrounded,
            Err(Refusal::SourceAfterTarget { .. }) => SrcAfterTgt,
            Err(Refusal::BelowLowWatermark { kind, .. }) => match kind {
                WatermarkKind::BlockSlot => BelowSlot,
                WatermarkKind::AttestationSource => BelowSource,
                WatermarkKind::AttestationTarget => BelowTarget,
            },
            Err(Refusal::OutOfRange { .. }) => OutOfRange,
            Err(Refusal::GenesisValidatorsRootMismatch { .. } | Refusal::KeyDeleted { .. }) => {
                unreachable!("not a rule verdict")
            }
        }
    }

    fn seed(tx: &mut dyn StoreTxn, v: ValidatorId, history: &[H]) -> Result<(), SlashingError> {
        let opt = |x: u64| (x != NONE).then_some(x);
        for h in history {
            match *h {
                B(slot, r) => tx.insert_block(
                    v,
                    &BlockRecord {
                        slot,
                        signing_root: (r != 0).then_some(root(r)),
                    },
                )?,
                A(s, t, r) => tx.insert_attestation(
                    v,
                    &AttestationRecord {
                        source_epoch: s,
                        target_epoch: t,
                        signing_root: (r != 0).then_some(root(r)),
                    },
                )?,
                H::Wm(b, s, t) => tx.set_watermarks(
                    v,
                    &Watermarks {
                        block_slot: opt(b),
                        attestation_source: opt(s),
                        attestation_target: opt(t),
                    },
                )?,
            }
        }
        Ok(())
    }

    /// Run one case on a store: seed, check, and check again to show what was recorded (the
    /// second check decides on the state the first one left, as a batch's next request does).
    fn run<S: SlashingStore>(store: &mut S, history: &[H], request: &Proposal) -> (X, X) {
        let pk = [7u8; 48];
        let result = store.transaction(|tx| {
            let v = tx.lock_validator(&pk)?;
            seed(tx, v, history)?;
            let mut state = read_state(tx, v, false)?;
            let first = check_and_record(tx, &mut state, request)?;
            let again = check_and_record(tx, &mut state, request)?;
            Ok((classify(&first), classify(&again)))
        });
        match result {
            Ok(x) => x,
            Err(e) => panic!("store error: {e}"),
        }
    }

    fn run_table(table: &[(&[H], Proposal, X)]) {
        for (i, (history, request, expected)) in table.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut sqlite = SqliteStore::open(&dir.path().join("t.sqlite"), None).unwrap();
            let mut memory = MemoryStore::default();
            for (name, (got, again)) in [
                ("sqlite", run(&mut sqlite, history, request)),
                ("memory", run(&mut memory, history, request)),
            ] {
                assert_eq!(got, *expected, "case {i} on {name}: {request:?}");
                // Whatever was allowed is now an identical re-sign; a refusal stays refused.
                let expected_again = if matches!(got, Rec | Rep) { Rep } else { got };
                assert_eq!(again, expected_again, "case {i} (repeat) on {name}");
            }
        }
    }

    #[test]
    fn block_rules() {
        #[rustfmt::skip]
        let table: &[(&[H], Proposal, X)] = &[
            // history                           request          verdict
            (&[],                                blk(0, 1),       Rec),         // genesis slot, fresh
            (&[],                                blk(100, 1),     Rec),
            (&[B(10, 1)],                        blk(10, 1),      Rep),         // identical re-sign
            (&[B(10, 1)],                        blk(10, 2),      DoubleBlock), // same slot, other root
            (&[B(10, 0)],                        blk(10, 1),      DoubleBlock), // imported without root
            (&[B(10, 0)],                        blk(10, 0),      DoubleBlock), // unknown root never matches
            (&[B(10, 1)],                        blk(11, 1),      Rec),
            (&[B(10, 1)],                        blk(9, 2),       BelowSlot),   // below lowest slot
            (&[B(10, 1), B(20, 2)],              blk(15, 3),      Rec),         // between records: complete strategy
            (&[B(10, 1), B(20, 2)],              blk(20, 2),      Rep),
            (&[B(10, 1), B(20, 2)],              blk(5, 3),       BelowSlot),
            (&[wm(10, NONE, NONE)],              blk(10, 1),      BelowSlot),   // watermark itself refused
            (&[wm(10, NONE, NONE)],              blk(11, 1),      Rec),
            (&[B(5, 1), wm(10, NONE, NONE)],     blk(5, 1),       Rep),         // re-sign below watermark
            (&[B(5, 1), wm(10, NONE, NONE)],     blk(7, 1),       BelowSlot),
            (&[B(20, 1), wm(10, NONE, NONE)],    blk(15, 1),      BelowSlot),   // lowest record is higher
            (&[wm(NONE, 5, 6)],                  blk(1, 1),       Rec),         // attestation marks don't bind blocks
            (&[],                                blk(MAX_SLOT_OR_EPOCH, 1), Rec),
            (&[],                                blk(MAX_SLOT_OR_EPOCH + 1, 1), OutOfRange),
        ];
        run_table(table);
    }

    #[test]
    fn attestation_rules() {
        #[rustfmt::skip]
        let table: &[(&[H], Proposal, X)] = &[
            // history                           request          verdict
            (&[],                                att(0, 0, 1),    Rec),         // genesis attestation
            (&[],                                att(3, 2, 1),    SrcAfterTgt),
            (&[],                                att(2, 2, 1),    Rec),
            (&[A(1, 2, 1)],                      att(1, 2, 1),    Rep),         // identical re-sign
            (&[A(1, 2, 1)],                      att(1, 2, 2),    DoubleVote),  // same target, other root
            (&[A(1, 2, 1)],                      att(0, 2, 1),    DoubleVote),  // same target+root, other source
            (&[A(1, 2, 0)],                      att(1, 2, 1),    DoubleVote),  // imported without root
            (&[A(1, 2, 1)],                      att(2, 3, 2),    Rec),
            (&[A(1, 2, 1)],                      att(1, 3, 2),    Rec),         // same source is fine
            (&[A(2, 3, 1)],                      att(1, 4, 2),    BelowSource), // also surrounding, but below
            (&[A(2, 3, 1), A(0, 1, 2)],          att(1, 4, 3),    Surrounding), // new 1->4 surrounds 2->3
            (&[A(0, 1, 2), A(1, 9, 1)],          att(2, 8, 3),    Surrounded),  // 1->9 surrounds new 2->8
            (&[A(1, 4, 1)],                      att(1, 3, 2),    BelowTarget), // below lowest target
            (&[A(1, 4, 1), A(0, 1, 2)],          att(1, 3, 3),    Rec),         // same source: no surround
            (&[A(1, 4, 1), A(0, 1, 2)],          att(2, 4, 3),    DoubleVote),
            (&[A(1, 4, 1), A(0, 1, 2)],          att(2, 3, 3),    Surrounded),
            (&[A(1, 4, 1), A(0, 1, 2)],          att(0, 5, 3),    Surrounding), // 0->5 surrounds 1->4
            (&[A(1, 4, 1), A(0, 1, 2)],          att(1, 5, 3),    Rec),         // same source: no surround
            (&[A(1, 4, 1), A(0, 1, 2)],          att(4, 5, 3),    Rec),
            (&[A(10, 11, 1), A(12, 13, 2), A(20, 24, 3)], att(11, 12, 4), Rec),  // in a gap: complete strategy
            (&[A(10, 11, 1), A(12, 13, 2), A(20, 24, 3)], att(10, 24, 4), DoubleVote),
            (&[A(10, 11, 1), A(12, 13, 2), A(20, 24, 3)], att(21, 22, 4), Surrounded),
            (&[A(10, 11, 1), A(12, 13, 2), A(20, 24, 3)], att(11, 14, 4), Surrounding),
            (&[wm(NONE, 5, 6)],                  att(4, 7, 1),    BelowSource),
            (&[wm(NONE, 5, 6)],                  att(5, 6, 1),    BelowTarget),
            (&[wm(NONE, 5, 6)],                  att(5, 7, 1),    Rec),         // source == mark is allowed
            (&[A(1, 2, 1), wm(NONE, 5, 6)],      att(1, 2, 1),    Rep),         // re-sign below watermark
            (&[A(1, 2, 1), wm(NONE, 5, 6)],      att(1, 3, 1),    BelowSource),
            (&[wm(9, NONE, NONE)],               att(0, 1, 1),    Rec),         // block mark doesn't bind attestations
            (&[],                                att(MAX_SLOT_OR_EPOCH, MAX_SLOT_OR_EPOCH, 1), Rec),
            (&[],                                att(0, MAX_SLOT_OR_EPOCH + 1, 1), OutOfRange),
            (&[],                                att(MAX_SLOT_OR_EPOCH + 1, 0, 1), OutOfRange),
        ];
        run_table(table);
    }

    #[test]
    fn refusal_messages_name_the_conflict() {
        let r = Refusal::DoubleVote {
            target_epoch: 5,
            existing_source_epoch: 4,
            existing_root: None,
        };
        assert_eq!(
            r.to_string(),
            "double vote: an attestation with target epoch 5 was already signed (source epoch 4, \
             signing root unknown (imported without one))"
        );
        let r = Refusal::BelowLowWatermark {
            kind: WatermarkKind::AttestationSource,
            value: 3,
            watermark: 4,
        };
        assert_eq!(
            r.to_string(),
            "attestation source epoch 3 is below the low watermark 4; the signing history there \
             is unknown"
        );
        let r = Refusal::SurroundingVote {
            source_epoch: 1,
            target_epoch: 4,
            existing_source_epoch: 2,
            existing_target_epoch: 3,
        };
        assert_eq!(
            r.to_string(),
            "surrounding vote: attestation 1->4 would surround the signed attestation 2->3"
        );
    }

    /// A differential test: random histories and requests, SQLite against the naive in-memory
    /// store, verdict by verdict. SQLite decides them as the writer does, in batches of one to
    /// eight in one transaction (each request on the state the previous ones left); the naive
    /// store decides each in a transaction of its own, on state read afresh. Catches a wrong
    /// inequality or index use in the SQL, and a state that drifts from the records.
    #[test]
    fn sqlite_agrees_with_naive_store_on_random_sequences() {
        use crate::slashing::service::apply_checks;
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..20 {
            let mut sqlite =
                SqliteStore::open(&dir.path().join(format!("r{round}.sqlite")), None).unwrap();
            let mut memory = MemoryStore::default();
            let mut step = 0;
            while step < 300 {
                if next(50) == 0 {
                    let pk = [next(3) as u8; 48];
                    let w = Watermarks {
                        block_slot: Some(next(20)),
                        attestation_source: Some(next(10)),
                        attestation_target: Some(next(15)),
                    };
                    let raise = |tx: &mut dyn StoreTxn| {
                        let v = tx.lock_validator(&pk)?;
                        let mut cur = tx.watermarks(v)?;
                        cur.raise(&w);
                        tx.set_watermarks(v, &cur)
                    };
                    sqlite.transaction(raise).unwrap();
                    memory.transaction(raise).unwrap();
                }
                let batch: Vec<(crate::slashing::Pubkey, Root, Proposal)> = (0..1 + next(8))
                    .map(|_| {
                        let pk = [next(3) as u8; 48];
                        let request = if next(4) == 0 {
                            blk(next(40), 1 + next(2) as u8)
                        } else {
                            att(next(30), next(30), 1 + next(2) as u8)
                        };
                        (pk, [0; 32], request)
                    })
                    .collect();
                let a: Vec<X> = apply_checks(&mut sqlite, &batch)
                    .unwrap()
                    .iter()
                    .map(classify)
                    .collect();
                let b: Vec<X> = batch
                    .iter()
                    .map(|(pk, _, request)| {
                        memory
                            .transaction(|tx| {
                                let v = tx.lock_validator(pk)?;
                                let mut state = read_state(tx, v, false)?;
                                Ok(classify(&check_and_record(tx, &mut state, request)?))
                            })
                            .unwrap()
                    })
                    .collect();
                assert_eq!(a, b, "round {round} step {step}: {batch:?}");
                step += batch.len();
            }
        }
    }
}
