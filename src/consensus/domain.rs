//! Domains and signing roots, as the phase0 spec's `compute_domain`, `get_domain` (fork version
//! by epoch) and `compute_signing_root` define them.

use tree_hash::TreeHash;
use tree_hash_derive::TreeHash;

use super::containers::{Fork, Root, Version};
use super::wire::Bytes;
use super::SigningRoot;

/// A 4-byte domain type.
pub(crate) type DomainType = [u8; 4];

pub(crate) const DOMAIN_BEACON_PROPOSER: DomainType = [0, 0, 0, 0];
pub(crate) const DOMAIN_BEACON_ATTESTER: DomainType = [1, 0, 0, 0];
pub(crate) const DOMAIN_RANDAO: DomainType = [2, 0, 0, 0];
pub(crate) const DOMAIN_DEPOSIT: DomainType = [3, 0, 0, 0];
pub(crate) const DOMAIN_VOLUNTARY_EXIT: DomainType = [4, 0, 0, 0];
pub(crate) const DOMAIN_SELECTION_PROOF: DomainType = [5, 0, 0, 0];
pub(crate) const DOMAIN_AGGREGATE_AND_PROOF: DomainType = [6, 0, 0, 0];
pub(crate) const DOMAIN_SYNC_COMMITTEE: DomainType = [7, 0, 0, 0];
pub(crate) const DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF: DomainType = [8, 0, 0, 0];
pub(crate) const DOMAIN_CONTRIBUTION_AND_PROOF: DomainType = [9, 0, 0, 0];
/// Capella: `DOMAIN_BLS_TO_EXECUTION_CHANGE = 0x0A000000` (signed with withdrawal keys; no
/// request of this API signs in it).
pub(crate) const DOMAIN_BLS_TO_EXECUTION_CHANGE: DomainType = [0x0a, 0, 0, 0];
/// Gloas: `DOMAIN_BEACON_BUILDER = 0x0B000000` (bids and payload envelopes).
pub(crate) const DOMAIN_BEACON_BUILDER: DomainType = [0x0b, 0, 0, 0];
/// Gloas: `DOMAIN_PTC_ATTESTER = 0x0C000000` (payload attestations).
pub(crate) const DOMAIN_PTC_ATTESTER: DomainType = [0x0c, 0, 0, 0];
/// Gloas: `DOMAIN_PROPOSER_PREFERENCES = 0x0D000000`.
pub(crate) const DOMAIN_PROPOSER_PREFERENCES: DomainType = [0x0d, 0, 0, 0];
/// Remote Signing API v1.4.0, `BUILDER_REQUEST_AUTH`: `0x0B000001`, `DOMAIN_BEACON_BUILDER` in the
/// application space (`DOMAIN_APPLICATION_MASK`), computed like the builder API's domain: the
/// genesis fork version and a zero root.
pub(crate) const DOMAIN_BUILDER_REQUEST_AUTH: DomainType = [0x0b, 0, 0, 1];
/// Builder specs: `DOMAIN_APPLICATION_BUILDER = 0x00000001`.
pub(crate) const DOMAIN_APPLICATION_BUILDER: DomainType = [0, 0, 0, 1];

/// Every domain type the consensus specs (phase0 to gloas), the builder specs or a typed
/// request of this API define, with its name.
const DEFINED: [(DomainType, &str); 16] = [
    (DOMAIN_BEACON_PROPOSER, "DOMAIN_BEACON_PROPOSER"),
    (DOMAIN_BEACON_ATTESTER, "DOMAIN_BEACON_ATTESTER"),
    (DOMAIN_RANDAO, "DOMAIN_RANDAO"),
    (DOMAIN_DEPOSIT, "DOMAIN_DEPOSIT"),
    (DOMAIN_VOLUNTARY_EXIT, "DOMAIN_VOLUNTARY_EXIT"),
    (DOMAIN_SELECTION_PROOF, "DOMAIN_SELECTION_PROOF"),
    (DOMAIN_AGGREGATE_AND_PROOF, "DOMAIN_AGGREGATE_AND_PROOF"),
    (DOMAIN_SYNC_COMMITTEE, "DOMAIN_SYNC_COMMITTEE"),
    (
        DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF,
        "DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF",
    ),
    (
        DOMAIN_CONTRIBUTION_AND_PROOF,
        "DOMAIN_CONTRIBUTION_AND_PROOF",
    ),
    (
        DOMAIN_BLS_TO_EXECUTION_CHANGE,
        "DOMAIN_BLS_TO_EXECUTION_CHANGE",
    ),
    (DOMAIN_BEACON_BUILDER, "DOMAIN_BEACON_BUILDER"),
    (DOMAIN_PTC_ATTESTER, "DOMAIN_PTC_ATTESTER"),
    (DOMAIN_PROPOSER_PREFERENCES, "DOMAIN_PROPOSER_PREFERENCES"),
    (DOMAIN_APPLICATION_BUILDER, "DOMAIN_APPLICATION_BUILDER"),
    (DOMAIN_BUILDER_REQUEST_AUTH, "DOMAIN_BUILDER_REQUEST_AUTH"),
];

/// The name of `kind` when it is a defined domain type ([`DEFINED`]).
pub(crate) fn defined_name(kind: DomainType) -> Option<&'static str> {
    DEFINED.iter().find(|(d, _)| *d == kind).map(|(_, n)| *n)
}

#[derive(TreeHash)]
struct ForkData {
    current_version: Version,
    genesis_validators_root: Root,
}

#[derive(TreeHash)]
struct SigningData {
    object_root: Root,
    domain: Root,
}

/// `get_domain`'s fork version: the current version from the fork's epoch on, else the previous.
pub(crate) fn fork_version(fork: &Fork, epoch: u64) -> Version {
    if epoch >= fork.epoch {
        fork.current_version
    } else {
        fork.previous_version
    }
}

/// `compute_domain(domain_type, fork_version, genesis_validators_root)`.
pub(crate) fn compute_domain(
    domain_type: DomainType,
    fork_version: Version,
    genesis_validators_root: Root,
) -> [u8; 32] {
    let fork_data_root = ForkData {
        current_version: fork_version,
        genesis_validators_root,
    }
    .tree_hash_root();
    let mut domain = [0u8; 32];
    domain[..4].copy_from_slice(&domain_type);
    domain[4..].copy_from_slice(&fork_data_root.0[..28]);
    domain
}

/// `compute_signing_root(object, domain)` given the object's `hash_tree_root`.
pub(crate) fn signing_root(object_root: [u8; 32], domain: [u8; 32]) -> SigningRoot {
    let root = SigningData {
        object_root: Bytes(object_root),
        domain: Bytes(domain),
    }
    .tree_hash_root();
    SigningRoot(root.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork(prev: u8, cur: u8, epoch: u64) -> Fork {
        Fork {
            previous_version: Bytes([prev, 0, 0, 0]),
            current_version: Bytes([cur, 0, 0, 0]),
            epoch,
        }
    }

    #[test]
    fn fork_epoch_itself_selects_the_current_version() {
        let f = fork(1, 2, 100);
        assert_eq!(fork_version(&f, 99).0, [1, 0, 0, 0]);
        assert_eq!(fork_version(&f, 100).0, [2, 0, 0, 0]);
        assert_eq!(fork_version(&f, 101).0, [2, 0, 0, 0]);
        assert_eq!(fork_version(&f, u64::MAX).0, [2, 0, 0, 0]);
        assert_eq!(fork_version(&fork(1, 2, 0), 0).0, [2, 0, 0, 0]);
        assert_eq!(
            fork_version(&fork(1, 2, u64::MAX), u64::MAX - 1).0,
            [1, 0, 0, 0]
        );
    }

    #[test]
    fn domain_types_are_the_specs() {
        // phase0/altair beacon-chain.md and builder-specs: DomainType('0x0X000000') etc.
        let all = [
            (DOMAIN_BEACON_PROPOSER, "00000000"),
            (DOMAIN_BEACON_ATTESTER, "01000000"),
            (DOMAIN_RANDAO, "02000000"),
            (DOMAIN_DEPOSIT, "03000000"),
            (DOMAIN_VOLUNTARY_EXIT, "04000000"),
            (DOMAIN_SELECTION_PROOF, "05000000"),
            (DOMAIN_AGGREGATE_AND_PROOF, "06000000"),
            (DOMAIN_SYNC_COMMITTEE, "07000000"),
            (DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF, "08000000"),
            (DOMAIN_CONTRIBUTION_AND_PROOF, "09000000"),
            (DOMAIN_BLS_TO_EXECUTION_CHANGE, "0a000000"),
            (DOMAIN_BEACON_BUILDER, "0b000000"),
            (DOMAIN_PTC_ATTESTER, "0c000000"),
            (DOMAIN_PROPOSER_PREFERENCES, "0d000000"),
            (DOMAIN_APPLICATION_BUILDER, "00000001"),
            (DOMAIN_BUILDER_REQUEST_AUTH, "0b000001"),
        ];
        for (d, hex) in all {
            assert_eq!(hex::encode(d), hex);
        }
        // The list GENERIC is refused on has each of them, once.
        assert_eq!(DEFINED.len(), all.len());
        for (d, _) in all {
            assert_eq!(DEFINED.iter().filter(|(x, _)| *x == d).count(), 1);
        }
    }

    #[test]
    fn mainnet_deposit_domain_is_the_known_constant() {
        // compute_domain(DOMAIN_DEPOSIT, 0x00000000, zero root) on mainnet, as used by every
        // deposit tool.
        let d = compute_domain(DOMAIN_DEPOSIT, Bytes([0; 4]), Bytes([0; 32]));
        assert_eq!(
            hex::encode(d),
            "03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
        );
    }
}
