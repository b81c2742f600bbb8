//! The Gloas fork's containers (ePBS, EIP-7732; progressive SSZ, EIP-7688) that a sign request
//! carries: the execution payload bid and envelope a builder signs, the payload-timeliness
//! committee's `PayloadAttestationData`, `ProposerPreferences`, and the containers Gloas makes
//! progressive: `Attestation` (so `AGGREGATE_AND_PROOF_V2`), the block body, the execution
//! payload and requests. As `eth-consensus-specs` 1.7.0 (`gloas/beacon-chain.md`) defines them.
//!
//! A progressive list has no limit in its type and its root does not depend on one; the signer
//! still reads at most as many elements as the specs' processing rules accept (the limits the
//! lists had before Gloas: `MAX_ATTESTATIONS_ELECTRA`, `MAX_WITHDRAWALS_PER_PAYLOAD`, …), so a
//! request cannot make it buffer more than that. Bitfields whose size is a preset's are kept as
//! read and checked against the network's preset by [`Checked::check`] before anything is
//! hashed; once checked, a bitvector's root depends only on its bytes.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tree_hash::{Hash256, PackedEncoding, TreeHash, TreeHashType};
use tree_hash_derive::TreeHash;

use super::containers::{
    AttestationData, Deposit, Eth1Data, ProposerSlashing, PublicKey, Root, Signature,
    SignedVoluntaryExit,
};
use super::preset::{Bitvector, Preset, Size};
use super::progressive;
use super::wire::{self, Bytes, HexVisitor, RawBitlist, RawBitvector};

/// An execution address.
type Address = Bytes<20>;

// ---- Progressive SSZ types ---------------------------------------------------------------------

/// An SSZ `uint64` read as a decimal string (or a JSON number), for list elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Uint64(pub u64);

impl<'de> Deserialize<'de> for Uint64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::u64(d).map(Uint64)
    }
}

impl TreeHash for Uint64 {
    fn tree_hash_type() -> TreeHashType {
        TreeHashType::Basic
    }

    fn tree_hash_packed_encoding(&self) -> PackedEncoding {
        self.0.tree_hash_packed_encoding()
    }

    fn tree_hash_packing_factor() -> usize {
        u64::tree_hash_packing_factor()
    }

    fn tree_hash_root(&self) -> Hash256 {
        self.0.tree_hash_root()
    }
}

/// An SSZ `uint256` (`base_fee_per_gas`), read as a decimal string as the Beacon API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Uint256(pub [u8; 32]);

impl Uint256 {
    /// `s` as a little-endian 256-bit number: ASCII digits only, at most 2^256 − 1.
    fn from_decimal(s: &str) -> Option<Uint256> {
        if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut limbs = [0u64; 4];
        for digit in s.bytes().map(|b| u64::from(b - b'0')) {
            let mut carry = digit as u128;
            for limb in limbs.iter_mut() {
                let v = (*limb as u128) * 10 + carry;
                *limb = v as u64;
                carry = v >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        let mut out = [0u8; 32];
        for (i, limb) in limbs.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        Some(Uint256(out))
    }
}

impl<'de> Deserialize<'de> for Uint256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Uint256;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a uint256 as a decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Uint256, E> {
                let mut out = [0u8; 32];
                out[..8].copy_from_slice(&v.to_le_bytes());
                Ok(Uint256(out))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Uint256, E> {
                Uint256::from_decimal(s)
                    .ok_or_else(|| E::custom("uint256 string not of 0-9 or over 2^256 - 1"))
            }
        }
        d.deserialize_any(V)
    }
}

impl TreeHash for Uint256 {
    fn tree_hash_type() -> TreeHashType {
        TreeHashType::Basic
    }

    fn tree_hash_packed_encoding(&self) -> PackedEncoding {
        PackedEncoding::from_slice(&self.0)
    }

    fn tree_hash_packing_factor() -> usize {
        1
    }

    fn tree_hash_root(&self) -> Hash256 {
        Hash256::from(self.0)
    }
}

/// An EIP-7916 `ProgressiveList[T]`, read with at most `MAX` elements.
#[derive(Debug, Clone)]
pub(crate) struct PList<T, const MAX: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for PList<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::bounded_seq(d, MAX).map(PList)
    }
}

tree_hash_by_root!([T: TreeHash, const MAX: usize] PList<T, MAX>, List, |this| {
        let root = match T::tree_hash_type() {
            TreeHashType::Basic => {
                let packed: Vec<u8> = this
                    .0
                    .iter()
                    .flat_map(|e| e.tree_hash_packed_encoding())
                    .collect();
                progressive::basic_list_root(&packed, this.0.len())
            }
            _ => {
                let roots: Vec<progressive::Chunk> =
                    this.0.iter().map(|e| e.tree_hash_root().0).collect();
                progressive::composite_list_root(&roots)
            }
        };
        Hash256::from(root)
});

/// An EIP-7916 `ProgressiveByteList` (`Transaction`, `BlockAccessList`): `0x` hex of at most
/// `MAX` bytes.
#[derive(Debug, Clone)]
pub(crate) struct PBytes<const MAX: usize>(pub Vec<u8>);

impl<'de, const MAX: usize> Deserialize<'de> for PBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(HexVisitor { min: 0, max: MAX })
            .map(PBytes)
    }
}

tree_hash_by_root!([const MAX: usize] PBytes<MAX>, List, |this| Hash256::from(
    progressive::basic_list_root(&this.0, this.0.len())
));

/// An SSZ `ByteList[N]` (`extra_data`): `0x` hex of at most `N` bytes, hashed with its limit.
#[derive(Debug, Clone)]
pub(crate) struct ByteList<const N: usize>(pub Vec<u8>);

impl<'de, const N: usize> Deserialize<'de> for ByteList<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(HexVisitor { min: 0, max: N })
            .map(ByteList)
    }
}

tree_hash_by_root!([const N: usize] ByteList<N>, List, |this| {
    let root = tree_hash::merkle_root(&this.0, N.div_ceil(32));
    tree_hash::mix_in_length(&root, this.0.len())
});

/// A bitvector whose size is a preset's, as read; its root is right only once
/// [`Checked::check`] has found it the preset's size (its bytes then fix its chunk count).
#[derive(Debug, Clone)]
pub(crate) struct PresetBitvector(pub(crate) RawBitvector);

impl<'de> Deserialize<'de> for PresetBitvector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawBitvector::deserialize(d).map(PresetBitvector)
    }
}

impl PresetBitvector {
    fn check(&self, field: &str, preset: Preset, size: Size) -> Result<(), String> {
        Bitvector::sized(self.0.clone(), field, preset, size).map(|_| ())
    }
}

// ceil(N / 256) chunks for N bits; ceil(N / 8) bytes: the same count from the bytes.
tree_hash_by_root!([] PresetBitvector, Vector, |this| tree_hash::merkle_root(
    &this.0 .0,
    this.0 .0.len().div_ceil(32)
));

/// An EIP-7916 `ProgressiveBitlist` (Gloas `AggregationBits`), as read; its length is checked
/// against the preset's `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT` by
/// [`Checked::check`] (a progressive bitlist's root does not depend on any limit).
#[derive(Debug, Clone)]
pub(crate) struct PBitlist(pub(crate) RawBitlist);

impl<'de> Deserialize<'de> for PBitlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawBitlist::deserialize(d).map(PBitlist)
    }
}

tree_hash_by_root!([] PBitlist, List, |this| {
        let bytes = &this.0 .0;
        let len = this.0.bit_len().unwrap_or(0);
        // Without the length bit: bit `len` is in byte `len / 8`, the last.
        let mut bits = bytes.clone();
        if let Some(last) = bits.get_mut(len / 8) {
            *last &= !(1u8 << (len % 8));
        }
        bits.truncate(len.div_ceil(8));
        Hash256::from(progressive::bitlist_root_packed(&bits, len))
});

/// A Gloas container whose preset-sized fields are checked before it is hashed.
pub(crate) trait Checked {
    /// `Err` names the first field whose size is not the preset's.
    fn check(&self, preset: Preset) -> Result<(), String>;
}

impl<T: Checked, const MAX: usize> Checked for PList<T, MAX> {
    fn check(&self, preset: Preset) -> Result<(), String> {
        self.0.iter().try_for_each(|e| e.check(preset))
    }
}

/// `TreeHash` for an EIP-7495 `ProgressiveContainer(active_fields=[1] * n)`: the fields' roots
/// merkleized progressively, with the active-fields bitvector mixed in.
macro_rules! progressive_container {
    ($name:ident { $($field:ident),+ $(,)? }) => {
        tree_hash_by_root!([] $name, Container, |this| {
            let roots = [$(this.$field.tree_hash_root().0),+];
            let active = [true; { [$(stringify!($field)),+].len() }];
            // Every field active, fewer than 256 of them: always a root.
            Hash256::from(progressive::container_root(&roots, &active).unwrap_or_default())
        });
    };
}

// ---- Containers ---------------------------------------------------------------------------------

/// `PayloadAttestationData`: what a payload-timeliness committee member signs.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct PayloadAttestationData {
    pub beacon_block_root: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    pub payload_present: bool,
    pub blob_data_available: bool,
}

/// `PayloadAttestationMessage`: the data with its validator (only the data is signed; the other
/// two fields are read so that the message's shape is checked, and not used).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PayloadAttestationMessage {
    #[serde(deserialize_with = "wire::u64")]
    #[allow(dead_code)]
    pub validator_index: u64,
    pub data: PayloadAttestationData,
    #[allow(dead_code)]
    pub signature: Signature,
}

/// `ProposerPreferences`, signed by a proposer ahead of its slot.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct ProposerPreferences {
    pub dependent_root: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub proposal_slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub validator_index: u64,
    pub fee_recipient: Address,
    #[serde(deserialize_with = "wire::u64")]
    pub target_gas_limit: u64,
}

/// `ExecutionPayloadBid` (progressive, 12 fields), signed by a builder.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecutionPayloadBid {
    pub parent_block_hash: Root,
    pub parent_block_root: Root,
    pub block_hash: Root,
    pub prev_randao: Root,
    pub fee_recipient: Address,
    #[serde(deserialize_with = "wire::u64")]
    pub gas_limit: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub builder_index: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub value: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub execution_payment: u64,
    /// `MAX_BLOB_COMMITMENTS_PER_BLOCK`.
    pub blob_kzg_commitments: PList<Bytes<48>, 4096>,
    pub execution_requests_root: Root,
}

progressive_container!(ExecutionPayloadBid {
    parent_block_hash,
    parent_block_root,
    block_hash,
    prev_randao,
    fee_recipient,
    gas_limit,
    builder_index,
    slot,
    value,
    execution_payment,
    blob_kzg_commitments,
    execution_requests_root,
});

/// `SignedExecutionPayloadBid`, as a block body carries it.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SignedExecutionPayloadBid {
    pub message: ExecutionPayloadBid,
    pub signature: Signature,
}

/// Capella `Withdrawal`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct Withdrawal {
    #[serde(deserialize_with = "wire::u64")]
    pub index: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub validator_index: u64,
    pub address: Address,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
}

/// A transaction is at most the request body; this bounds what one hex string may decode to.
const MAX_TRANSACTION_BYTES: usize = 16 * 1024 * 1024;

/// Gloas `ExecutionPayload` (progressive, 19 fields).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecutionPayload {
    pub parent_hash: Root,
    pub fee_recipient: Address,
    pub state_root: Root,
    pub receipts_root: Root,
    pub logs_bloom: Bytes<256>,
    pub prev_randao: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub block_number: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub gas_limit: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub gas_used: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub timestamp: u64,
    /// `MAX_EXTRA_DATA_BYTES`.
    pub extra_data: ByteList<32>,
    pub base_fee_per_gas: Uint256,
    pub block_hash: Root,
    /// `MAX_TRANSACTIONS_PER_PAYLOAD`.
    pub transactions: PList<PBytes<MAX_TRANSACTION_BYTES>, 1_048_576>,
    /// `MAX_WITHDRAWALS_PER_PAYLOAD`.
    pub withdrawals: PList<Withdrawal, 16>,
    #[serde(deserialize_with = "wire::u64")]
    pub blob_gas_used: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub excess_blob_gas: u64,
    pub block_access_list: PBytes<MAX_TRANSACTION_BYTES>,
    #[serde(deserialize_with = "wire::u64")]
    pub slot_number: u64,
}

progressive_container!(ExecutionPayload {
    parent_hash,
    fee_recipient,
    state_root,
    receipts_root,
    logs_bloom,
    prev_randao,
    block_number,
    gas_limit,
    gas_used,
    timestamp,
    extra_data,
    base_fee_per_gas,
    block_hash,
    transactions,
    withdrawals,
    blob_gas_used,
    excess_blob_gas,
    block_access_list,
    slot_number,
});

/// Electra `DepositRequest`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct DepositRequest {
    pub pubkey: PublicKey,
    pub withdrawal_credentials: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
    pub signature: Signature,
    #[serde(deserialize_with = "wire::u64")]
    pub index: u64,
}

/// Electra `WithdrawalRequest`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct WithdrawalRequest {
    pub source_address: Address,
    pub validator_pubkey: PublicKey,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
}

/// Electra `ConsolidationRequest`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct ConsolidationRequest {
    pub source_address: Address,
    pub source_pubkey: PublicKey,
    pub target_pubkey: PublicKey,
}

/// Gloas `BuilderDepositRequest` (EIP-8282).
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BuilderDepositRequest {
    pub pubkey: PublicKey,
    pub withdrawal_credentials: Root,
    #[serde(deserialize_with = "wire::u64")]
    pub amount: u64,
    pub signature: Signature,
}

/// Gloas `BuilderExitRequest` (EIP-8282).
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BuilderExitRequest {
    pub source_address: Address,
    pub pubkey: PublicKey,
}

/// Gloas `ExecutionRequests` (progressive, 5 fields).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecutionRequests {
    /// `MAX_DEPOSIT_REQUESTS_PER_PAYLOAD`.
    pub deposits: PList<DepositRequest, 8192>,
    /// `MAX_WITHDRAWAL_REQUESTS_PER_PAYLOAD`.
    pub withdrawals: PList<WithdrawalRequest, 16>,
    /// `MAX_CONSOLIDATION_REQUESTS_PER_PAYLOAD`.
    pub consolidations: PList<ConsolidationRequest, 2>,
    /// `MAX_BUILDER_DEPOSIT_REQUESTS_PER_PAYLOAD`.
    pub builder_deposits: PList<BuilderDepositRequest, 64>,
    /// `MAX_BUILDER_EXIT_REQUESTS_PER_PAYLOAD`.
    pub builder_exits: PList<BuilderExitRequest, 16>,
}

progressive_container!(ExecutionRequests {
    deposits,
    withdrawals,
    consolidations,
    builder_deposits,
    builder_exits,
});

/// `ExecutionPayloadEnvelope` (progressive, 5 fields), signed by the builder (or the proposer
/// building its own payload).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecutionPayloadEnvelope {
    pub payload: ExecutionPayload,
    pub execution_requests: ExecutionRequests,
    #[serde(deserialize_with = "wire::u64")]
    pub builder_index: u64,
    pub beacon_block_root: Root,
    pub parent_beacon_block_root: Root,
}

progressive_container!(ExecutionPayloadEnvelope {
    payload,
    execution_requests,
    builder_index,
    beacon_block_root,
    parent_beacon_block_root,
});

/// Gloas `Attestation` (progressive, 4 fields; its `aggregation_bits` a progressive bitlist).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Attestation {
    pub aggregation_bits: PBitlist,
    pub data: AttestationData,
    pub signature: Signature,
    pub committee_bits: PresetBitvector,
}

progressive_container!(Attestation {
    aggregation_bits,
    data,
    signature,
    committee_bits,
});

impl Attestation {
    /// The checks of [`Checked`], naming the fields under `at`.
    fn check_at(&self, at: &str, preset: Preset) -> Result<(), String> {
        let field = format!("{at}aggregation_bits");
        let bits = self
            .aggregation_bits
            .0
            .bit_len()
            .ok_or_else(|| format!("{field}: bitlist without length bit"))?;
        let limit = preset.size(Size::ValidatorsPerSlot);
        if bits > limit {
            return Err(format!(
                "{field}: {bits} bits, over the {preset} preset's limit \
                 MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT = {limit}"
            ));
        }
        self.committee_bits.check(
            &format!("{at}committee_bits"),
            preset,
            Size::CommitteesPerSlot,
        )
    }
}

impl Checked for Attestation {
    fn check(&self, preset: Preset) -> Result<(), String> {
        self.check_at("attestations[].", preset)
    }
}

/// Gloas `AggregateAndProof` (its attestation progressive).
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct AggregateAndProof {
    #[serde(deserialize_with = "wire::u64")]
    pub aggregator_index: u64,
    pub aggregate: Attestation,
    pub selection_proof: Signature,
}

impl Checked for AggregateAndProof {
    fn check(&self, preset: Preset) -> Result<(), String> {
        self.aggregate.check_at("aggregate.", preset)
    }
}

/// Gloas `IndexedAttestation` (progressive, 3 fields).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IndexedAttestation {
    /// At most any preset's `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT`; the
    /// network's own is checked by [`Checked`].
    pub attesting_indices: PList<Uint64, 131_072>,
    pub data: AttestationData,
    pub signature: Signature,
}

progressive_container!(IndexedAttestation {
    attesting_indices,
    data,
    signature,
});

impl Checked for IndexedAttestation {
    fn check(&self, preset: Preset) -> Result<(), String> {
        let limit = preset.size(Size::ValidatorsPerSlot);
        let n = self.attesting_indices.0.len();
        if n > limit {
            return Err(format!(
                "attester_slashings[].attesting_indices: {n} indices, over the {preset} \
                 preset's limit of {limit}"
            ));
        }
        Ok(())
    }
}

/// Electra `AttesterSlashing` of Gloas `IndexedAttestation`s.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct AttesterSlashing {
    pub attestation_1: IndexedAttestation,
    pub attestation_2: IndexedAttestation,
}

impl Checked for AttesterSlashing {
    fn check(&self, preset: Preset) -> Result<(), String> {
        self.attestation_1.check(preset)?;
        self.attestation_2.check(preset)
    }
}

/// Altair `SyncAggregate`, its bits checked by [`Checked`].
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SyncAggregate {
    pub sync_committee_bits: PresetBitvector,
    pub sync_committee_signature: Signature,
}

/// Capella `BLSToExecutionChange`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BlsToExecutionChange {
    #[serde(deserialize_with = "wire::u64")]
    pub validator_index: u64,
    pub from_bls_pubkey: PublicKey,
    pub to_execution_address: Address,
}

/// Capella `SignedBLSToExecutionChange`.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct SignedBlsToExecutionChange {
    pub message: BlsToExecutionChange,
    pub signature: Signature,
}

/// Gloas `PayloadAttestation` (progressive, 3 fields; `PTC_SIZE` bits).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PayloadAttestation {
    pub aggregation_bits: PresetBitvector,
    pub data: PayloadAttestationData,
    pub signature: Signature,
}

progressive_container!(PayloadAttestation {
    aggregation_bits,
    data,
    signature,
});

impl Checked for PayloadAttestation {
    fn check(&self, preset: Preset) -> Result<(), String> {
        self.aggregation_bits.check(
            "body.payload_attestations[].aggregation_bits",
            preset,
            Size::Ptc,
        )
    }
}

/// Gloas `BeaconBlockBody` (progressive, 13 fields).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BeaconBlockBody {
    pub randao_reveal: Signature,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    /// `MAX_PROPOSER_SLASHINGS`.
    pub proposer_slashings: PList<ProposerSlashing, 16>,
    /// `MAX_ATTESTER_SLASHINGS_ELECTRA`.
    pub attester_slashings: PList<AttesterSlashing, 1>,
    /// `MAX_ATTESTATIONS_ELECTRA`.
    pub attestations: PList<Attestation, 8>,
    /// `MAX_DEPOSITS` (Gloas processes none; the list is still part of the body).
    pub deposits: PList<Deposit, 16>,
    /// `MAX_VOLUNTARY_EXITS`.
    pub voluntary_exits: PList<SignedVoluntaryExit, 16>,
    pub sync_aggregate: SyncAggregate,
    /// `MAX_BLS_TO_EXECUTION_CHANGES`.
    pub bls_to_execution_changes: PList<SignedBlsToExecutionChange, 16>,
    pub signed_execution_payload_bid: SignedExecutionPayloadBid,
    /// `MAX_PAYLOAD_ATTESTATIONS`.
    pub payload_attestations: PList<PayloadAttestation, 4>,
    pub parent_execution_requests: ExecutionRequests,
}

progressive_container!(BeaconBlockBody {
    randao_reveal,
    eth1_data,
    graffiti,
    proposer_slashings,
    attester_slashings,
    attestations,
    deposits,
    voluntary_exits,
    sync_aggregate,
    bls_to_execution_changes,
    signed_execution_payload_bid,
    payload_attestations,
    parent_execution_requests,
});

/// Gloas `BeaconBlock` (a plain container around the progressive body).
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BeaconBlock {
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
    #[serde(deserialize_with = "wire::u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBody,
}

impl Checked for BeaconBlock {
    fn check(&self, preset: Preset) -> Result<(), String> {
        let body = &self.body;
        body.attester_slashings.check(preset)?;
        body.attestations
            .0
            .iter()
            .try_for_each(|a| a.check_at("body.attestations[].", preset))?;
        body.sync_aggregate.sync_committee_bits.check(
            "body.sync_aggregate.sync_committee_bits",
            preset,
            Size::SyncCommittee,
        )?;
        body.payload_attestations.check(preset)
    }
}

/// `BUILDER_REQUEST_AUTH`'s message (Remote Signing API v1.4.0, `BuilderRequestAuthGloas`): opaque
/// data agreed with a builder, at most 4096 bytes and not empty, and the proposal slot it is for.
#[derive(Debug, Clone, Deserialize, TreeHash)]
pub(crate) struct BuilderRequestAuth {
    pub data: ByteList<4096>,
    #[serde(deserialize_with = "wire::u64")]
    pub slot: u64,
}
