//! Selection proofs as the precompute sees them: which proof (slot, subcommittee) under which
//! fork version and genesis validators root, and its signing root. The same roots the request
//! path computes for `AGGREGATION_SLOT` and `SYNC_COMMITTEE_SELECTION_PROOF`; a test pins that
//! both agree.

use tree_hash::TreeHash;

use super::containers::SyncAggregatorSelectionData;
use super::domain;
use super::wire::Bytes;
use super::SigningRoot;

/// One selection proof, identified by everything its signing root depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SelectionProof {
    /// The duty's slot.
    pub slot: u64,
    /// `None`: an attestation aggregator proof (`AGGREGATION_SLOT`); `Some(i)`: a sync
    /// committee aggregator proof for subcommittee `i` (`SYNC_COMMITTEE_SELECTION_PROOF`).
    pub subcommittee_index: Option<u64>,
    /// The fork version in effect at the slot's epoch.
    pub fork_version: [u8; 4],
    /// The chain's genesis validators root.
    pub genesis_validators_root: [u8; 32],
}

impl SelectionProof {
    /// `compute_signing_root` of the proof's object under its domain.
    pub fn signing_root(&self) -> SigningRoot {
        let (domain_type, object_root) = match self.subcommittee_index {
            None => (domain::DOMAIN_SELECTION_PROOF, self.slot.tree_hash_root().0),
            Some(subcommittee_index) => (
                domain::DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF,
                SyncAggregatorSelectionData {
                    slot: self.slot,
                    subcommittee_index,
                }
                .tree_hash_root()
                .0,
            ),
        };
        let domain = domain::compute_domain(
            domain_type,
            Bytes(self.fork_version),
            Bytes(self.genesis_validators_root),
        );
        domain::signing_root(object_root, domain)
    }
}
