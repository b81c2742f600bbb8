//! The SSZ containers a sign request can carry, as the consensus specs define them (phase0,
//! altair, electra, and the builder specs' `ValidatorRegistrationV1`). The sizes that every
//! preset shares are compile-time types; the few a preset decides (see [`super::preset`]) are
//! [`Bitvector`]s and [`Bitlist`]s checked against the network's preset. Containers that look
//! the same on the wire in every fork and preset deserialize directly; those whose shape depends
//! on a version (attestations in aggregates, full blocks) or whose sizes depend on the preset
//! are read as a superset ("wire" types) and converted once both are known, so a field that does
//! not belong to the version, or a bitfield of another preset's size, is refused instead of
//! silently ignored or hashed with the wrong size.

use serde::Deserialize;
use ssz_types::{BitList, FixedVector, VariableList};
use tree_hash_derive::TreeHash;
use typenum::{U128, U16, U2, U2048, U33};

use super::preset::{Bitlist, Bitvector, Preset, Size};
use super::wire::{self, Bytes, RawBitlist, RawBitvector};

/// A 32-byte root.
pub(crate) type Root = Bytes<32>;
/// A 4-byte fork version.
pub(crate) type Version = Bytes<4>;
/// A compressed BLS public key.
pub(crate) type PublicKey = Bytes<48>;
/// A compressed BLS signature.
pub(crate) type Signature = Bytes<96>;

// The same in the mainnet, minimal and gnosis presets (consensus-specs presets/*/phase0.yaml).
type MaxValidatorsPerCommittee = U2048;
type MaxProposerSlashings = U16;
type MaxAttesterSlashings = U2;
type MaxAttestations = U128;
type MaxDeposits = U16;
type MaxVoluntaryExits = U16;
/// `DEPOSIT_CONTRACT_TREE_DEPTH + 1`.
type DepositProofLength = U33;

/// `Fork` as the request's `fork_info.fork` carries it (not hashed).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Fork {
    pub previous_version: Version,
    pub current_version: Version,
    #[serde(deserialize_with = "wire::u64")]
    pub epoch: u64,
}

/// The request's `fork_info`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ForkInfo {
    pub fork: Fork,
    pub genesis_validators_root: Root,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct Checkpoint {
    #[serde(deserialize_with = "wire::u64")]
    pub epoch: u64,
    pub root: Root,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct AttestationData {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub index: u64,
    pub beacon_block_root: Root,
    pub source: Checkpoint,
    pub target: Checkpoint,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BeaconBlockHeader {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body_root: Root,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SignedBeaconBlockHeader {
    pub message: BeaconBlockHeader,
    pub signature: Signature,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct ProposerSlashing {
    pub signed_header_1: SignedBeaconBlockHeader,
    pub signed_header_2: SignedBeaconBlockHeader,
}

/// Phase0 `IndexedAttestation` (full blocks exist on the wire only up to altair).
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct IndexedAttestation {
    #[serde(deserialize_with = "wire::list_u64")]
    pub attesting_indices: VariableList<u64, MaxValidatorsPerCommittee>,
    pub data: AttestationData,
    pub signature: Signature,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct AttesterSlashing {
    pub attestation_1: IndexedAttestation,
    pub attestation_2: IndexedAttestation,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct Eth1Data {
    pub deposit_root: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub deposit_count: u64,
    pub block_hash: Root,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct DepositData {
    pub pubkey: PublicKey,
    pub withdrawal_credentials: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
    pub signature: Signature,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct Deposit {
    #[serde(deserialize_with = "wire::vector")]
    pub proof: FixedVector<Root, DepositProofLength>,
    pub data: DepositData,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct VoluntaryExit {
    #[serde(deserialize_with = "wire::u64")]
    pub epoch: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub validator_index: u64,
}

#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SignedVoluntaryExit {
    pub message: VoluntaryExit,
    pub signature: Signature,
}

/// Altair `SyncAggregate`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct SyncAggregate {
    pub sync_committee_bits: Bitvector,
    pub sync_committee_signature: Signature,
}

/// A `SyncAggregate` before its bits are checked against the preset.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SyncAggregateWire {
    pub sync_committee_bits: RawBitvector,
    pub sync_committee_signature: Signature,
}

impl SyncAggregateWire {
    fn into_sized(self, preset: Preset) -> Result<SyncAggregate, String> {
        Ok(SyncAggregate {
            sync_committee_bits: Bitvector::sized(
                self.sync_committee_bits,
                "body.sync_aggregate.sync_committee_bits",
                preset,
                Size::SyncCommittee,
            )?,
            sync_committee_signature: self.sync_committee_signature,
        })
    }
}

/// `DepositMessage`: what a deposit signature covers.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct DepositMessage {
    pub pubkey: PublicKey,
    pub withdrawal_credentials: Root,
    pub amount: u64,
}

/// The `deposit` of a `DEPOSIT` request: the message and the fork version its domain uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DepositRequest {
    pub pubkey: PublicKey,
    pub withdrawal_credentials: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
    pub genesis_fork_version: Version,
}

/// Altair `SyncAggregatorSelectionData`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SyncAggregatorSelectionData {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub subcommittee_index: u64,
}

/// Altair `SyncCommitteeContribution`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct SyncCommitteeContribution {
    pub slot: u64,
    pub beacon_block_root: Root,
    pub subcommittee_index: u64,
    pub aggregation_bits: Bitvector,
    pub signature: Signature,
}

/// Altair `ContributionAndProof`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct ContributionAndProof {
    pub aggregator_index: u64,
    pub contribution: SyncCommitteeContribution,
    pub selection_proof: Signature,
}

/// A `SyncCommitteeContribution` before its bits are checked against the preset.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SyncCommitteeContributionWire {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    pub beacon_block_root: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub subcommittee_index: u64,
    pub aggregation_bits: RawBitvector,
    pub signature: Signature,
}

/// A `ContributionAndProof` before its bits are checked against the preset.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContributionAndProofWire {
    #[serde(deserialize_with = "wire::u64")]
    pub aggregator_index: u64,
    pub contribution: SyncCommitteeContributionWire,
    pub selection_proof: Signature,
}

impl ContributionAndProofWire {
    pub(crate) fn into_sized(self, preset: Preset) -> Result<ContributionAndProof, String> {
        let c = self.contribution;
        Ok(ContributionAndProof {
            aggregator_index: self.aggregator_index,
            contribution: SyncCommitteeContribution {
                slot: c.slot,
                beacon_block_root: c.beacon_block_root,
                subcommittee_index: c.subcommittee_index,
                aggregation_bits: Bitvector::sized(
                    c.aggregation_bits,
                    "contribution.aggregation_bits",
                    preset,
                    Size::SyncSubcommittee,
                )?,
                signature: c.signature,
            },
            selection_proof: self.selection_proof,
        })
    }
}

/// Builder specs' `ValidatorRegistrationV1`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct ValidatorRegistration {
    pub fee_recipient: Bytes<20>,
    #[serde(deserialize_with = "wire::u64")]
    pub gas_limit: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub timestamp: u64,
    pub pubkey: PublicKey,
}

/// `SYNC_COMMITTEE_MESSAGE`'s `sync_committee_message`. Only the root is signed.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SyncCommitteeMessage {
    pub beacon_block_root: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
}

// ---- Version-dependent containers ------------------------------------------------------------

/// Phase0 `Attestation`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct Attestation {
    pub aggregation_bits: BitList<MaxValidatorsPerCommittee>,
    pub data: AttestationData,
    pub signature: Signature,
}

/// Electra `Attestation`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct AttestationElectra {
    pub aggregation_bits: Bitlist,
    pub data: AttestationData,
    pub signature: Signature,
    pub committee_bits: Bitvector,
}

/// Phase0 `AggregateAndProof` (unchanged up to deneb).
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct AggregateAndProof {
    pub aggregator_index: u64,
    pub aggregate: Attestation,
    pub selection_proof: Signature,
}

/// Electra `AggregateAndProof` (also fulu's).
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct AggregateAndProofElectra {
    pub aggregator_index: u64,
    pub aggregate: AttestationElectra,
    pub selection_proof: Signature,
}

/// Phase0 `BeaconBlockBody`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct BeaconBlockBody {
    pub randao_reveal: Signature,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    pub proposer_slashings: VariableList<ProposerSlashing, MaxProposerSlashings>,
    pub attester_slashings: VariableList<AttesterSlashing, MaxAttesterSlashings>,
    pub attestations: VariableList<Attestation, MaxAttestations>,
    pub deposits: VariableList<Deposit, MaxDeposits>,
    pub voluntary_exits: VariableList<SignedVoluntaryExit, MaxVoluntaryExits>,
}

/// Altair `BeaconBlockBody`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct BeaconBlockBodyAltair {
    pub randao_reveal: Signature,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    pub proposer_slashings: VariableList<ProposerSlashing, MaxProposerSlashings>,
    pub attester_slashings: VariableList<AttesterSlashing, MaxAttesterSlashings>,
    pub attestations: VariableList<Attestation, MaxAttestations>,
    pub deposits: VariableList<Deposit, MaxDeposits>,
    pub voluntary_exits: VariableList<SignedVoluntaryExit, MaxVoluntaryExits>,
    pub sync_aggregate: SyncAggregate,
}

/// Phase0 `BeaconBlock`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct BeaconBlock {
    pub slot: u64,
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBody,
}

/// Altair `BeaconBlock`.
#[derive(Debug, Clone, TreeHash)]
pub(crate) struct BeaconBlockAltair {
    pub slot: u64,
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBodyAltair,
}

// ---- Wire supersets ---------------------------------------------------------------------------

/// An attestation of either shape: phase0 (no `committee_bits`) or electra.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AttestationWire {
    pub aggregation_bits: RawBitlist,
    pub data: AttestationData,
    pub signature: Signature,
    #[serde(default)]
    pub committee_bits: Option<RawBitvector>,
}

impl AttestationWire {
    pub(crate) fn into_phase0(self) -> Result<Attestation, String> {
        if self.committee_bits.is_some() {
            return Err("committee_bits in a pre-electra attestation".into());
        }
        Ok(Attestation {
            aggregation_bits: wire::bitlist_from_ssz(&self.aggregation_bits, "aggregation_bits")?,
            data: self.data,
            signature: self.signature,
        })
    }

    pub(crate) fn into_electra(self, preset: Preset) -> Result<AttestationElectra, String> {
        let committee_bits = self
            .committee_bits
            .ok_or("electra attestation without committee_bits")?;
        Ok(AttestationElectra {
            aggregation_bits: Bitlist::sized(
                &self.aggregation_bits,
                "aggregate.aggregation_bits",
                preset,
                Size::ValidatorsPerSlot,
            )?,
            data: self.data,
            signature: self.signature,
            committee_bits: Bitvector::sized(
                committee_bits,
                "aggregate.committee_bits",
                preset,
                Size::CommitteesPerSlot,
            )?,
        })
    }
}

/// An `AggregateAndProof` of either shape.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AggregateAndProofWire {
    #[serde(deserialize_with = "wire::u64")]
    pub aggregator_index: u64,
    pub aggregate: AttestationWire,
    pub selection_proof: Signature,
}

impl AggregateAndProofWire {
    pub(crate) fn into_phase0(self) -> Result<AggregateAndProof, String> {
        Ok(AggregateAndProof {
            aggregator_index: self.aggregator_index,
            aggregate: self.aggregate.into_phase0()?,
            selection_proof: self.selection_proof,
        })
    }

    /// Gloas: the same fields, the attestation a progressive container (sizes checked by
    /// `gloas::Checked` against the preset).
    pub(crate) fn into_gloas(self) -> Result<super::gloas::AggregateAndProof, String> {
        let a = self.aggregate;
        let committee_bits = a
            .committee_bits
            .ok_or("gloas attestation without committee_bits")?;
        Ok(super::gloas::AggregateAndProof {
            aggregator_index: self.aggregator_index,
            aggregate: super::gloas::Attestation {
                aggregation_bits: super::gloas::PBitlist(a.aggregation_bits),
                data: a.data,
                signature: a.signature,
                committee_bits: super::gloas::PresetBitvector(committee_bits),
            },
            selection_proof: self.selection_proof,
        })
    }

    pub(crate) fn into_electra(self, preset: Preset) -> Result<AggregateAndProofElectra, String> {
        Ok(AggregateAndProofElectra {
            aggregator_index: self.aggregator_index,
            aggregate: self.aggregate.into_electra(preset)?,
            selection_proof: self.selection_proof,
        })
    }
}

/// A full block body of phase0 or altair shape (`sync_aggregate` only in altair).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BeaconBlockBodyWire {
    pub randao_reveal: Signature,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    #[serde(deserialize_with = "wire::list")]
    pub proposer_slashings: VariableList<ProposerSlashing, MaxProposerSlashings>,
    #[serde(deserialize_with = "wire::list")]
    pub attester_slashings: VariableList<AttesterSlashing, MaxAttesterSlashings>,
    #[serde(deserialize_with = "wire::list")]
    pub attestations: VariableList<AttestationWire, MaxAttestations>,
    #[serde(deserialize_with = "wire::list")]
    pub deposits: VariableList<Deposit, MaxDeposits>,
    #[serde(deserialize_with = "wire::list")]
    pub voluntary_exits: VariableList<SignedVoluntaryExit, MaxVoluntaryExits>,
    #[serde(default)]
    pub sync_aggregate: Option<SyncAggregateWire>,
}

/// A full block of phase0 or altair shape.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BeaconBlockWire {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBodyWire,
}

/// The body's attestations as phase0 `Attestation`s.
fn phase0_attestations(
    list: VariableList<AttestationWire, MaxAttestations>,
) -> Result<VariableList<Attestation, MaxAttestations>, String> {
    let items = Vec::from(list)
        .into_iter()
        .map(AttestationWire::into_phase0)
        .collect::<Result<Vec<_>, _>>()?;
    VariableList::new(items).map_err(|_| "too many attestations".to_string())
}

impl BeaconBlockWire {
    pub(crate) fn into_phase0(self) -> Result<BeaconBlock, String> {
        let b = self.body;
        if b.sync_aggregate.is_some() {
            return Err("sync_aggregate in a phase0 block".into());
        }
        Ok(BeaconBlock {
            slot: self.slot,
            proposer_index: self.proposer_index,
            parent_root: self.parent_root,
            state_root: self.state_root,
            body: BeaconBlockBody {
                randao_reveal: b.randao_reveal,
                eth1_data: b.eth1_data,
                graffiti: b.graffiti,
                proposer_slashings: b.proposer_slashings,
                attester_slashings: b.attester_slashings,
                attestations: phase0_attestations(b.attestations)?,
                deposits: b.deposits,
                voluntary_exits: b.voluntary_exits,
            },
        })
    }

    pub(crate) fn into_altair(self, preset: Preset) -> Result<BeaconBlockAltair, String> {
        let b = self.body;
        let sync_aggregate = b
            .sync_aggregate
            .ok_or("altair block without body.sync_aggregate")?
            .into_sized(preset)?;
        Ok(BeaconBlockAltair {
            slot: self.slot,
            proposer_index: self.proposer_index,
            parent_root: self.parent_root,
            state_root: self.state_root,
            body: BeaconBlockBodyAltair {
                randao_reveal: b.randao_reveal,
                eth1_data: b.eth1_data,
                graffiti: b.graffiti,
                proposer_slashings: b.proposer_slashings,
                attester_slashings: b.attester_slashings,
                attestations: phase0_attestations(b.attestations)?,
                deposits: b.deposits,
                voluntary_exits: b.voluntary_exits,
                sync_aggregate,
            },
        })
    }
}
