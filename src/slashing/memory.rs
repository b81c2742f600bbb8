//! A naive in-memory store for tests: linear scans, no cleverness, so it can serve as the
//! reference the SQLite queries are compared against.

use super::store::{
    AttestationRecord, BlockRecord, DeletesBelow, Footprint, Pruned, SlashingStore, StoreTxn,
    ValidatorId, Watermarks,
};
use super::{Pubkey, Root, SlashingError};

#[derive(Clone, Default)]
struct State {
    gvr: Option<Root>,
    validators: Vec<(Pubkey, Watermarks)>,
    blocks: Vec<(ValidatorId, BlockRecord)>,
    attestations: Vec<(ValidatorId, AttestationRecord)>,
    deleted: std::collections::BTreeSet<Pubkey>,
}

/// The store: committed state only.
#[derive(Default)]
pub(crate) struct MemoryStore {
    state: State,
}

struct Txn<'a> {
    state: &'a mut State,
    savepoint: Option<State>,
}

impl SlashingStore for MemoryStore {
    fn transaction<R>(
        &mut self,
        mut f: impl FnMut(&mut dyn StoreTxn) -> Result<R, SlashingError>,
    ) -> Result<R, SlashingError> {
        let mut work = self.state.clone();
        let r = f(&mut Txn {
            state: &mut work,
            savepoint: None,
        })?;
        self.state = work;
        Ok(r)
    }

    fn footprint(&mut self) -> Result<Footprint, SlashingError> {
        Ok(Footprint {
            validators: self.state.validators.len() as u64,
            blocks: self.state.blocks.len() as u64,
            attestations: self.state.attestations.len() as u64,
            bytes: 0,
        })
    }
}

fn idx(v: ValidatorId) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Txn<'_> {
    fn atts(&self, v: ValidatorId) -> impl Iterator<Item = &AttestationRecord> {
        self.state
            .attestations
            .iter()
            .filter(move |(w, _)| *w == v)
            .map(|(_, a)| a)
    }
    fn blks(&self, v: ValidatorId) -> impl Iterator<Item = &BlockRecord> {
        self.state
            .blocks
            .iter()
            .filter(move |(w, _)| *w == v)
            .map(|(_, b)| b)
    }
}

impl StoreTxn for Txn<'_> {
    fn genesis_validators_root(&mut self) -> Result<Option<Root>, SlashingError> {
        Ok(self.state.gvr)
    }
    fn set_genesis_validators_root(&mut self, gvr: &Root) -> Result<(), SlashingError> {
        self.state.gvr = Some(*gvr);
        Ok(())
    }
    fn lock_validator(&mut self, pubkey: &Pubkey) -> Result<ValidatorId, SlashingError> {
        if let Some(v) = self.find_validator(pubkey)? {
            return Ok(v);
        }
        self.state.validators.push((*pubkey, Watermarks::default()));
        Ok(self.state.validators.len() as ValidatorId - 1)
    }
    fn find_validator(&mut self, pubkey: &Pubkey) -> Result<Option<ValidatorId>, SlashingError> {
        Ok(self
            .state
            .validators
            .iter()
            .position(|(p, _)| p == pubkey)
            .map(|i| i as ValidatorId))
    }
    fn validators(&mut self) -> Result<Vec<(ValidatorId, Pubkey)>, SlashingError> {
        Ok(self
            .state
            .validators
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (i as ValidatorId, *p))
            .collect())
    }
    fn watermarks(&mut self, v: ValidatorId) -> Result<Watermarks, SlashingError> {
        Ok(self.state.validators[idx(v)].1)
    }
    fn set_watermarks(&mut self, v: ValidatorId, wm: &Watermarks) -> Result<(), SlashingError> {
        self.state.validators[idx(v)].1 = *wm;
        Ok(())
    }
    fn block_at(
        &mut self,
        v: ValidatorId,
        slot: u64,
    ) -> Result<Option<Option<Root>>, SlashingError> {
        Ok(self
            .blks(v)
            .find(|b| b.slot == slot)
            .map(|b| b.signing_root))
    }
    fn min_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        Ok(self.blks(v).map(|b| b.slot).min())
    }
    fn max_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        Ok(self.blks(v).map(|b| b.slot).max())
    }
    fn insert_block(&mut self, v: ValidatorId, block: &BlockRecord) -> Result<(), SlashingError> {
        if self.block_at(v, block.slot)?.is_some() {
            return Err(SlashingError::Store("duplicate block".into()));
        }
        self.state.blocks.push((v, *block));
        Ok(())
    }
    fn blocks(&mut self, v: ValidatorId) -> Result<Vec<BlockRecord>, SlashingError> {
        let mut out: Vec<_> = self.blks(v).copied().collect();
        out.sort_by_key(|b| b.slot);
        Ok(out)
    }
    fn attestation_at_target(
        &mut self,
        v: ValidatorId,
        target_epoch: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        Ok(self
            .atts(v)
            .find(|a| a.target_epoch == target_epoch)
            .copied())
    }
    fn min_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        Ok((
            self.atts(v).map(|a| a.source_epoch).min(),
            self.atts(v).map(|a| a.target_epoch).min(),
        ))
    }
    fn max_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        Ok((
            self.atts(v).map(|a| a.source_epoch).max(),
            self.atts(v).map(|a| a.target_epoch).max(),
        ))
    }
    fn attestation_surrounded_by(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        Ok(self
            .atts(v)
            .find(|a| source < a.source_epoch && a.target_epoch < target)
            .copied())
    }
    fn attestation_surrounding(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        Ok(self
            .atts(v)
            .find(|a| a.source_epoch < source && target < a.target_epoch)
            .copied())
    }
    fn insert_attestation(
        &mut self,
        v: ValidatorId,
        att: &AttestationRecord,
    ) -> Result<(), SlashingError> {
        if self.attestation_at_target(v, att.target_epoch)?.is_some() {
            return Err(SlashingError::Store("duplicate attestation".into()));
        }
        self.state.attestations.push((v, *att));
        Ok(())
    }
    fn attestations(&mut self, v: ValidatorId) -> Result<Vec<AttestationRecord>, SlashingError> {
        let mut out: Vec<_> = self.atts(v).copied().collect();
        out.sort_by_key(|a| a.target_epoch);
        Ok(out)
    }
    fn prune_many(&mut self, ids: &[ValidatorId], keep_epochs: u64) -> Result<u64, SlashingError> {
        super::rules::prune_each(self, ids, keep_epochs)
    }
    fn savepoint(&mut self) -> Result<(), SlashingError> {
        self.savepoint = Some(self.state.clone());
        Ok(())
    }
    fn rollback_savepoint(&mut self) -> Result<(), SlashingError> {
        if let Some(s) = self.savepoint.take() {
            *self.state = s;
        }
        Ok(())
    }
    fn release_savepoint(&mut self) -> Result<(), SlashingError> {
        self.savepoint = None;
        Ok(())
    }

    fn set_deleted(&mut self, pubkey: &Pubkey, deleted: bool) -> Result<(), SlashingError> {
        if deleted {
            self.state.deleted.insert(*pubkey);
        } else {
            self.state.deleted.remove(pubkey);
        }
        Ok(())
    }

    fn is_deleted(&mut self, pubkey: &Pubkey) -> Result<bool, SlashingError> {
        Ok(self.state.deleted.contains(pubkey))
    }

    fn deleted_keys(&mut self) -> Result<Vec<Pubkey>, SlashingError> {
        Ok(self.state.deleted.iter().copied().collect())
    }
}

impl DeletesBelow for Txn<'_> {
    fn delete_below(
        &mut self,
        v: ValidatorId,
        below_slot: u64,
        below_target: u64,
    ) -> Result<Pruned, SlashingError> {
        let mut p = Pruned::default();
        self.state.blocks.retain(|(w, b)| {
            let drop = *w == v && b.slot < below_slot;
            if drop {
                p.records += 1;
                p.maxima.raise(&Watermarks {
                    block_slot: Some(b.slot),
                    ..Default::default()
                });
            }
            !drop
        });
        self.state.attestations.retain(|(w, a)| {
            let drop = *w == v && a.target_epoch < below_target;
            if drop {
                p.records += 1;
                p.maxima.raise(&Watermarks {
                    block_slot: None,
                    attestation_source: Some(a.source_epoch),
                    attestation_target: Some(a.target_epoch),
                });
            }
            !drop
        });
        Ok(p)
    }
}
