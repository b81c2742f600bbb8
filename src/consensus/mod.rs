//! Ethereum consensus for the signer: the typed Web3Signer eth2 sign request, the SSZ containers
//! of every fork it can carry (phase0 … gloas) sized by the network's preset (mainnet, minimal,
//! gnosis), domains and signing roots, the network parameters those need, the slot clock, and
//! each request's validity window (until when its signature is worth anything, from the specs).
//! It owns *what* is signed and until when; it does not decide whether to sign (slashing
//! protection), in which order (the scheduler) or with which key (the key store). Nothing here
//! panics on input from the network: every shape error is a [`ConsensusError`], and slot
//! arithmetic is checked.

/// `TreeHash` for a type hashed as a whole (a vector, list or container; never packed into a
/// chunk with others): `[generics] Type, Kind, |this| root`.
macro_rules! tree_hash_by_root {
    ([$($gen:tt)*] $ty:ty, $kind:ident, |$this:ident| $root:expr) => {
        impl<$($gen)*> tree_hash::TreeHash for $ty {
            fn tree_hash_type() -> tree_hash::TreeHashType {
                tree_hash::TreeHashType::$kind
            }

            // Never packed; answer with its root rather than panic if anyone asks.
            fn tree_hash_packed_encoding(&self) -> tree_hash::PackedEncoding {
                tree_hash::PackedEncoding::from_slice(
                    tree_hash::TreeHash::tree_hash_root(self).as_slice(),
                )
            }

            fn tree_hash_packing_factor() -> usize {
                1
            }

            fn tree_hash_root(&self) -> tree_hash::Hash256 {
                let $this = self;
                $root
            }
        }
    };
}

pub mod clock;
mod containers;
mod domain;
mod generic;
mod gloas;
mod network;
mod preset;
pub mod progressive;
mod request;
mod selection;
pub mod validity;
pub(crate) mod wire;

pub use clock::{ManualSlotClock, SlotTiming};
pub(crate) use clock::{SlotClock, SystemTimeSlotClock};
pub use generic::GenericRequest;
pub(crate) use network::parse_root;
pub(crate) use network::{GenesisTimeSource, BUILT_IN_NAMES, FORK_NAMES, GVR_FILE_NAME};
pub use network::{Network, ScheduledFork, FAR_FUTURE_EPOCH};
pub use preset::Preset;
pub use request::{Request, SignRequest};
pub use selection::SelectionProof;
pub use validity::Duty;
pub(crate) use validity::ValidityWindow;

use std::fmt;

/// A 32-byte signing root: `hash_tree_root(SigningData{object_root, domain})`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigningRoot(pub [u8; 32]);

impl SigningRoot {
    /// The root's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SigningRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

/// The `type` of a sign request, with the wire names of the Web3Signer eth2 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `AGGREGATION_SLOT`: an attestation aggregator selection proof.
    AggregationSlot,
    /// `AGGREGATE_AND_PROOF` (deprecated): a phase0-style aggregate.
    AggregateAndProof,
    /// `AGGREGATE_AND_PROOF_V2`: a versioned aggregate (Electra containers from ELECTRA on).
    AggregateAndProofV2,
    /// `ATTESTATION`: attestation data (slashable).
    Attestation,
    /// `BLOCK` (deprecated): a phase0 block (slashable).
    Block,
    /// `BLOCK_V2`: a versioned block or block header (slashable).
    BlockV2,
    /// `DEPOSIT`: a deposit message.
    Deposit,
    /// `RANDAO_REVEAL`: an epoch's RANDAO reveal.
    RandaoReveal,
    /// `VOLUNTARY_EXIT`: a voluntary exit.
    VoluntaryExit,
    /// `SYNC_COMMITTEE_MESSAGE`: a sync committee member's block root.
    SyncCommitteeMessage,
    /// `SYNC_COMMITTEE_SELECTION_PROOF`: a sync aggregator selection proof.
    SyncCommitteeSelectionProof,
    /// `SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF`: a sync committee contribution.
    SyncCommitteeContributionAndProof,
    /// `VALIDATOR_REGISTRATION`: a builder-API validator registration.
    ValidatorRegistration,
    /// `EXECUTION_PAYLOAD_BID` (Gloas): a builder's bid for a slot.
    ExecutionPayloadBid,
    /// `EXECUTION_PAYLOAD_ENVELOPE` (Gloas): the payload a builder (or self-building proposer)
    /// reveals for its block.
    ExecutionPayloadEnvelope,
    /// `PAYLOAD_ATTESTATION_MESSAGE` (Gloas): a payload-timeliness committee member's vote
    /// (alias `PAYLOAD_ATTESTATION`).
    PayloadAttestationMessage,
    /// `PROPOSER_PREFERENCES` (Gloas): a proposer's fee recipient and gas limit for its slot.
    ProposerPreferences,
    /// `BUILDER_REQUEST_AUTH` (Gloas builder API): a request authenticated to a builder
    /// (alias `REQUEST_AUTH`).
    BuilderRequestAuth,
}

impl MessageType {
    /// Every message type, in the order of the API's `oneOf`.
    pub const ALL: [MessageType; 18] = [
        MessageType::AggregationSlot,
        MessageType::AggregateAndProof,
        MessageType::AggregateAndProofV2,
        MessageType::Attestation,
        MessageType::Block,
        MessageType::BlockV2,
        MessageType::Deposit,
        MessageType::RandaoReveal,
        MessageType::VoluntaryExit,
        MessageType::SyncCommitteeMessage,
        MessageType::SyncCommitteeSelectionProof,
        MessageType::SyncCommitteeContributionAndProof,
        MessageType::ValidatorRegistration,
        MessageType::ExecutionPayloadBid,
        MessageType::ExecutionPayloadEnvelope,
        MessageType::PayloadAttestationMessage,
        MessageType::ProposerPreferences,
        MessageType::BuilderRequestAuth,
    ];

    /// The names clients send today for a type the API names otherwise (`sigp/lighthouse#9252`),
    /// with the type they mean.
    pub const ALIASES: [(&'static str, MessageType); 2] = [
        (
            "PAYLOAD_ATTESTATION",
            MessageType::PayloadAttestationMessage,
        ),
        ("REQUEST_AUTH", MessageType::BuilderRequestAuth),
    ];

    /// The wire name, as in the request's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::AggregationSlot => "AGGREGATION_SLOT",
            MessageType::AggregateAndProof => "AGGREGATE_AND_PROOF",
            MessageType::AggregateAndProofV2 => "AGGREGATE_AND_PROOF_V2",
            MessageType::Attestation => "ATTESTATION",
            MessageType::Block => "BLOCK",
            MessageType::BlockV2 => "BLOCK_V2",
            MessageType::Deposit => "DEPOSIT",
            MessageType::RandaoReveal => "RANDAO_REVEAL",
            MessageType::VoluntaryExit => "VOLUNTARY_EXIT",
            MessageType::SyncCommitteeMessage => "SYNC_COMMITTEE_MESSAGE",
            MessageType::SyncCommitteeSelectionProof => "SYNC_COMMITTEE_SELECTION_PROOF",
            MessageType::SyncCommitteeContributionAndProof => {
                "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF"
            }
            MessageType::ValidatorRegistration => "VALIDATOR_REGISTRATION",
            MessageType::ExecutionPayloadBid => "EXECUTION_PAYLOAD_BID",
            MessageType::ExecutionPayloadEnvelope => "EXECUTION_PAYLOAD_ENVELOPE",
            MessageType::PayloadAttestationMessage => "PAYLOAD_ATTESTATION_MESSAGE",
            MessageType::ProposerPreferences => "PROPOSER_PREFERENCES",
            MessageType::BuilderRequestAuth => "BUILDER_REQUEST_AUTH",
        }
    }

    /// The type with wire name `name` (exact, case-sensitive), or whose alias it is, if any.
    pub(crate) fn from_wire(name: &str) -> Option<MessageType> {
        MessageType::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .or_else(|| {
                MessageType::ALIASES
                    .into_iter()
                    .find(|(alias, _)| *alias == name)
                    .map(|(_, t)| t)
            })
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request asks to sign, as the signing policy and the metrics name it: one of the API's
/// message types, or the distributed-signing profile's `GENERIC` (which only the distributed
/// endpoints accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A typed request.
    Typed(MessageType),
    /// `GENERIC`: an object root and a domain.
    Generic,
}

impl RequestKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Typed(t) => t.as_str(),
            RequestKind::Generic => "GENERIC",
        }
    }

    /// The kind with wire name (or alias) `name`, if any.
    pub(crate) fn from_wire(name: &str) -> Option<RequestKind> {
        if name == RequestKind::Generic.as_str() {
            return Some(RequestKind::Generic);
        }
        MessageType::from_wire(name).map(RequestKind::Typed)
    }
}

impl From<MessageType> for RequestKind {
    fn from(t: MessageType) -> RequestKind {
        RequestKind::Typed(t)
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What slashing protection needs to know about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlashingData {
    /// Not slashable.
    None,
    /// A block proposal (`BLOCK`, `BLOCK_V2`) at `slot`.
    Block {
        /// The block's slot.
        slot: u64,
    },
    /// An attestation (`ATTESTATION`).
    Attestation {
        /// `data.source.epoch`.
        source_epoch: u64,
        /// `data.target.epoch`.
        target_epoch: u64,
    },
}

/// Errors of the consensus module. Messages are short and never echo more than a few dozen
/// characters of the request.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The request (or a config file) does not have the required shape: bad JSON, a missing or
    /// extra field, bad hex, a wrong length, a list over its limit.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The request is well formed but contradicts itself or the network (for example a supplied
    /// signing root that differs from ours).
    #[error("inconsistent: {0}")]
    Inconsistent(String),
    /// The request is for another network than the one this signer serves (another genesis
    /// validators root, or a fork version that is none of this network's).
    #[error("wrong network: {0}")]
    OtherNetwork(String),
    /// The request's `type` is not one of the API's message types.
    #[error("unknown message type: {0}")]
    UnknownType(String),
    /// A file could not be read.
    #[error("{0}")]
    Io(String),
}

/// At most this many characters of anything that came from outside go into an error message.
const MAX_ECHO: usize = 80;

/// `s` cut to [`MAX_ECHO`] characters (on a char boundary), with an ellipsis when cut.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

#[cfg(test)]
mod tests;
