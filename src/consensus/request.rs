//! The Web3Signer eth2 sign request (`POST /api/v1/eth2/sign/{identifier}`), parsed into typed
//! containers, and what the rest of the signer asks of it: the signing root, slashing data, the
//! validity window. Parsing is in two passes over the body: first the `type` and the optional
//! supplied root, then the body as that type's own struct, so every error names a real field and
//! duplicate keys are refused (serde rejects a field given twice). Parsing knows the network's
//! preset: a bitfield of another preset's size is malformed, not hashed.

use serde::Deserialize;
use serde_json::value::RawValue;
use tree_hash::TreeHash;

use super::containers::{
    AggregateAndProof, AggregateAndProofElectra, AggregateAndProofWire, AttestationData,
    BeaconBlock, BeaconBlockAltair, BeaconBlockHeader, BeaconBlockWire, ContributionAndProof,
    ContributionAndProofWire, DepositMessage, DepositRequest, ForkInfo, Root,
    SyncAggregatorSelectionData, SyncCommitteeMessage, ValidatorRegistration, VoluntaryExit,
};
use super::domain::{self, DomainType};
use super::generic::GenericRequest;
use super::gloas::{self, Checked};
use super::wire::{self, Bytes};
use super::{
    clip, ConsensusError, MessageType, Network, Preset, RequestKind, SelectionProof, SigningRoot,
    SlashingData, ValidityWindow,
};

/// A request of the distributed endpoints: one of the API's typed requests, or the
/// distributed-signing profile's `GENERIC` (an object root and a domain, already computed).
/// Only the distributed endpoints parse this; the others parse a [`SignRequest`], for which
/// `GENERIC` is an unknown type.
#[derive(Debug, Clone)]
pub enum Request {
    /// A typed request: the signer computes the root from the message itself.
    Typed(SignRequest),
    /// `GENERIC`.
    Generic(GenericRequest),
}

impl Request {
    /// Parse a body of any type [`SignRequest::from_json`] parses, or `GENERIC`.
    pub fn from_json(body: &[u8], preset: Preset) -> Result<Request, ConsensusError> {
        let envelope: Envelope = parse(body)?;
        if envelope.kind == RequestKind::Generic.as_str() {
            let supplied = envelope.supplied_root()?;
            return GenericRequest::from_json(body, supplied).map(Request::Generic);
        }
        SignRequest::from_envelope(envelope, body, preset).map(Request::Typed)
    }

    /// Its type.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Typed(r) => RequestKind::Typed(r.message_type()),
            Request::Generic(_) => RequestKind::Generic,
        }
    }

    /// The typed request, unless it is `GENERIC`.
    pub fn typed(&self) -> Option<&SignRequest> {
        match self {
            Request::Typed(r) => Some(r),
            Request::Generic(_) => None,
        }
    }
}

/// A parsed Web3Signer eth2 sign request.
#[derive(Debug, Clone)]
pub struct SignRequest {
    kind: MessageType,
    /// The preset whose sizes the containers were checked against.
    preset: Preset,
    supplied_root: Option<SigningRoot>,
    /// Present for every type but `DEPOSIT` and `VALIDATOR_REGISTRATION`.
    fork_info: Option<ForkInfo>,
    message: Message,
}

/// The typed message, in the container the signature covers.
#[derive(Debug, Clone)]
enum Message {
    AggregationSlot { slot: u64 },
    Aggregate(Box<AggregateAndProof>),
    AggregateElectra(Box<AggregateAndProofElectra>),
    Attestation(AttestationData),
    BlockPhase0(Box<BeaconBlock>),
    BlockAltair(Box<BeaconBlockAltair>),
    BlockHeader(BeaconBlockHeader),
    Deposit(DepositRequest),
    RandaoReveal { epoch: u64 },
    VoluntaryExit(VoluntaryExit),
    SyncCommitteeMessage(SyncCommitteeMessage),
    SyncSelection(SyncAggregatorSelectionData),
    Contribution(Box<ContributionAndProof>),
    Registration(ValidatorRegistration),
    AggregateGloas(Box<gloas::AggregateAndProof>),
    BlockGloas(Box<gloas::BeaconBlock>),
    Bid(Box<gloas::ExecutionPayloadBid>),
    Envelope(Box<gloas::ExecutionPayloadEnvelope>),
    PayloadAttestation(gloas::PayloadAttestationData),
    Preferences(gloas::ProposerPreferences),
    RequestAuth(gloas::BuilderRequestAuth),
}

/// The `version` of `BLOCK_V2`, `AGGREGATE_AND_PROOF_V2` and the Gloas types' bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum ForkName {
    Phase0,
    Altair,
    Bellatrix,
    Capella,
    Deneb,
    Electra,
    Fulu,
    Gloas,
}

/// First pass: what every request has.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    signing_root: Option<Root>,
    #[serde(default, rename = "signingRoot")]
    signing_root_camel: Option<Root>,
}

impl Envelope {
    /// The root the client supplied, under either name (both given must agree).
    fn supplied_root(&self) -> Result<Option<SigningRoot>, ConsensusError> {
        match (self.signing_root, self.signing_root_camel) {
            (Some(a), Some(b)) if a != b => Err(malformed(
                "signing_root and signingRoot are both given and differ",
            )),
            (a, b) => Ok(a.or(b).map(|r| SigningRoot(r.0))),
        }
    }
}

#[derive(Deserialize)]
struct SlotField {
    #[serde(deserialize_with = "wire::u64")]
    slot: u64,
}

#[derive(Deserialize)]
struct EpochField {
    #[serde(deserialize_with = "wire::u64")]
    epoch: u64,
}

#[derive(Deserialize)]
struct VersionedAggregate {
    version: ForkName,
    data: AggregateAndProofWire,
}

/// The block is read once its version is known: a Gloas block is another container.
#[derive(Deserialize)]
struct VersionedBlock {
    version: ForkName,
    #[serde(default)]
    block: Option<Box<RawValue>>,
    #[serde(default)]
    block_header: Option<BeaconBlockHeader>,
}

/// A Gloas type's body as v1.4.0 wraps it (`{version, data}`), or as some clients send it today,
/// the container itself: told apart by `version`.
#[derive(Deserialize)]
struct MaybeVersioned<'a> {
    #[serde(default)]
    version: Option<ForkName>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Second-pass bodies: `fork_info` and the type's own field.
macro_rules! body_with_fork {
    ($($name:ident { $field:ident: $ty:ty })*) => {$(
        #[derive(Deserialize)]
        struct $name {
            fork_info: ForkInfo,
            $field: $ty,
        }
    )*};
}

body_with_fork! {
    AggregationSlotBody { aggregation_slot: SlotField }
    AggregateBody { aggregate_and_proof: AggregateAndProofWire }
    AggregateV2Body { aggregate_and_proof: VersionedAggregate }
    AttestationBody { attestation: AttestationData }
    BlockBody { block: BeaconBlockWire }
    BlockV2Body { beacon_block: VersionedBlock }
    RandaoBody { randao_reveal: EpochField }
    ExitBody { voluntary_exit: VoluntaryExit }
    SyncMessageBody { sync_committee_message: SyncCommitteeMessage }
    SyncSelectionBody { sync_aggregator_selection_data: SyncAggregatorSelectionData }
    ContributionBody { contribution_and_proof: ContributionAndProofWire }
}

#[derive(Deserialize)]
struct DepositBody {
    deposit: DepositRequest,
}

#[derive(Deserialize)]
struct RegistrationBody {
    validator_registration: ValidatorRegistration,
}

/// The bodies of the Gloas types, by every key clients send them under (v1.4.0's first).
#[derive(Deserialize)]
struct GloasBody<'a> {
    #[serde(default)]
    fork_info: Option<ForkInfo>,
    #[serde(default, borrow)]
    execution_payload_bid: Option<&'a RawValue>,
    #[serde(default, borrow)]
    execution_payload_envelope: Option<&'a RawValue>,
    #[serde(default, borrow)]
    payload_attestation_message: Option<&'a RawValue>,
    #[serde(default, borrow)]
    payload_attestation_data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    payload_attestation: Option<&'a RawValue>,
    #[serde(default, borrow)]
    proposer_preferences: Option<&'a RawValue>,
    #[serde(default, borrow)]
    builder_request_auth: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_auth: Option<&'a RawValue>,
}

impl<'a> GloasBody<'a> {
    /// The one body of `kind`, under whichever of its keys it came: `(key, value)`.
    fn pick(&self, kind: MessageType) -> Result<(&'static str, &'a RawValue), ConsensusError> {
        let keys: &[(&'static str, Option<&'a RawValue>)] = match kind {
            MessageType::ExecutionPayloadBid => {
                &[("execution_payload_bid", self.execution_payload_bid)]
            }
            MessageType::ExecutionPayloadEnvelope => &[(
                "execution_payload_envelope",
                self.execution_payload_envelope,
            )],
            MessageType::PayloadAttestationMessage => &[
                (
                    "payload_attestation_message",
                    self.payload_attestation_message,
                ),
                ("payload_attestation_data", self.payload_attestation_data),
                ("payload_attestation", self.payload_attestation),
            ],
            MessageType::ProposerPreferences => {
                &[("proposer_preferences", self.proposer_preferences)]
            }
            MessageType::BuilderRequestAuth => &[
                ("builder_request_auth", self.builder_request_auth),
                ("request_auth", self.request_auth),
            ],
            _ => &[],
        };
        let mut present = keys.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
        match (present.next(), present.next()) {
            (Some(one), None) => Ok(one),
            (Some((a, _)), Some((b, _))) => Err(malformed(format!(
                "{kind}: both {a} and {b} are given; send one"
            ))),
            (None, _) => Err(malformed(format!(
                "{kind} needs `{}`",
                keys.first().map_or("", |(k, _)| *k)
            ))),
        }
    }
}

/// `raw` as a `T`, the error naming `what`.
fn parse_raw<'a, T: Deserialize<'a>>(raw: &'a RawValue, what: &str) -> Result<T, ConsensusError> {
    serde_json::from_str(raw.get()).map_err(|e| match json_error(e) {
        ConsensusError::Malformed(m) => malformed(format!("{what}: {m}")),
        other => other,
    })
}

/// A Gloas type's message from its body: `{version: "GLOAS", data: T}`, or `T` itself.
fn versioned_or_bare<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    key: &str,
) -> Result<T, ConsensusError> {
    let probe: MaybeVersioned<'a> = parse_raw(raw, key)?;
    match (probe.version, probe.data) {
        (None, _) => parse_raw(raw, key),
        (Some(ForkName::Gloas), Some(data)) => parse_raw(data, &format!("{key}.data")),
        (Some(ForkName::Gloas), None) => Err(malformed(format!("{key}: `data` is missing"))),
        (Some(other), _) => Err(malformed(format!(
            "{key}: version {other:?} has no such message; it is new in GLOAS"
        ))),
    }
}

/// A payload attestation's signed data, whichever way it came: `PayloadAttestationData`
/// (v1.4.0's `data`, Lighthouse's `payload_attestation_data`) or a whole
/// `PayloadAttestationMessage` (`{validator_index, data, signature}`), whose `data` is signed.
fn payload_attestation_data(
    raw: &RawValue,
    key: &str,
) -> Result<gloas::PayloadAttestationData, ConsensusError> {
    // Not wrapped, and carrying a `data` object: a whole message.
    let probe: MaybeVersioned = parse_raw(raw, key)?;
    let message_like = probe.version.is_none()
        && probe
            .data
            .is_some_and(|d| d.get().trim_start().starts_with('{'));
    if message_like {
        let m: gloas::PayloadAttestationMessage = parse_raw(raw, key)?;
        return Ok(m.data);
    }
    versioned_or_bare(raw, key)
}

pub(super) fn malformed(m: impl Into<String>) -> ConsensusError {
    ConsensusError::Malformed(m.into())
}

/// A serde_json error as a short message: the error text clipped, then its position.
fn json_error(e: serde_json::Error) -> ConsensusError {
    let full = e.to_string();
    let text = match (e.line(), full.rfind(" at line ")) {
        (l, Some(i)) if l > 0 => &full[..i],
        _ => full.as_str(),
    };
    if e.line() > 0 {
        malformed(format!(
            "{} at line {} column {}",
            clip(text),
            e.line(),
            e.column()
        ))
    } else {
        malformed(clip(text))
    }
}

pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ConsensusError> {
    serde_json::from_slice(body).map_err(json_error)
}

impl SignRequest {
    /// Parse a Web3Signer eth2 sign request body for a network of `preset` (the `preset` field of
    /// the [`Network`] served). Never panics; any shape error is [`ConsensusError::Malformed`] with a
    /// short message (a bitfield of another preset's size names the field, the preset and the
    /// size), and an unknown `type` is [`ConsensusError::UnknownType`].
    pub fn from_json(body: &[u8], preset: Preset) -> Result<SignRequest, ConsensusError> {
        let envelope: Envelope = parse(body)?;
        SignRequest::from_envelope(envelope, body, preset)
    }

    /// The second pass of [`SignRequest::from_json`], its first pass (`envelope`) done.
    fn from_envelope(
        envelope: Envelope,
        body: &[u8],
        preset: Preset,
    ) -> Result<SignRequest, ConsensusError> {
        let supplied_root = envelope.supplied_root()?;
        let kind = MessageType::from_wire(&envelope.kind)
            .ok_or_else(|| ConsensusError::UnknownType(clip(&envelope.kind)))?;

        let (fork_info, message) = match kind {
            MessageType::AggregationSlot => {
                let b: AggregationSlotBody = parse(body)?;
                (
                    Some(b.fork_info),
                    Message::AggregationSlot {
                        slot: b.aggregation_slot.slot,
                    },
                )
            }
            MessageType::AggregateAndProof => {
                let b: AggregateBody = parse(body)?;
                let a = b
                    .aggregate_and_proof
                    .into_phase0()
                    .map_err(|m| malformed(format!("aggregate_and_proof: {m}")))?;
                (Some(b.fork_info), Message::Aggregate(Box::new(a)))
            }
            MessageType::AggregateAndProofV2 => {
                let b: AggregateV2Body = parse(body)?;
                let VersionedAggregate { version, data } = b.aggregate_and_proof;
                let what = |m: String| malformed(format!("aggregate_and_proof ({version:?}): {m}"));
                let message = match version {
                    ForkName::Gloas => {
                        let a = data.into_gloas().map_err(what)?;
                        a.check(preset).map_err(what)?;
                        Message::AggregateGloas(Box::new(a))
                    }
                    ForkName::Electra | ForkName::Fulu => Message::AggregateElectra(Box::new(
                        data.into_electra(preset).map_err(what)?,
                    )),
                    _ => Message::Aggregate(Box::new(data.into_phase0().map_err(what)?)),
                };
                (Some(b.fork_info), message)
            }
            MessageType::Attestation => {
                let b: AttestationBody = parse(body)?;
                (Some(b.fork_info), Message::Attestation(b.attestation))
            }
            MessageType::Block => {
                let b: BlockBody = parse(body)?;
                let block = b
                    .block
                    .into_phase0()
                    .map_err(|m| malformed(format!("block: {m}")))?;
                (Some(b.fork_info), Message::BlockPhase0(Box::new(block)))
            }
            MessageType::BlockV2 => {
                let b: BlockV2Body = parse(body)?;
                (Some(b.fork_info), block_v2(b.beacon_block, preset)?)
            }
            MessageType::Deposit => {
                let b: DepositBody = parse(body)?;
                (None, Message::Deposit(b.deposit))
            }
            MessageType::RandaoReveal => {
                let b: RandaoBody = parse(body)?;
                (
                    Some(b.fork_info),
                    Message::RandaoReveal {
                        epoch: b.randao_reveal.epoch,
                    },
                )
            }
            MessageType::VoluntaryExit => {
                let b: ExitBody = parse(body)?;
                (Some(b.fork_info), Message::VoluntaryExit(b.voluntary_exit))
            }
            MessageType::SyncCommitteeMessage => {
                let b: SyncMessageBody = parse(body)?;
                (
                    Some(b.fork_info),
                    Message::SyncCommitteeMessage(b.sync_committee_message),
                )
            }
            MessageType::SyncCommitteeSelectionProof => {
                let b: SyncSelectionBody = parse(body)?;
                (
                    Some(b.fork_info),
                    Message::SyncSelection(b.sync_aggregator_selection_data),
                )
            }
            MessageType::SyncCommitteeContributionAndProof => {
                let b: ContributionBody = parse(body)?;
                let c = b
                    .contribution_and_proof
                    .into_sized(preset)
                    .map_err(|m| malformed(format!("contribution_and_proof: {m}")))?;
                (Some(b.fork_info), Message::Contribution(Box::new(c)))
            }
            MessageType::ValidatorRegistration => {
                let b: RegistrationBody = parse(body)?;
                (None, Message::Registration(b.validator_registration))
            }
            MessageType::ExecutionPayloadBid
            | MessageType::ExecutionPayloadEnvelope
            | MessageType::PayloadAttestationMessage
            | MessageType::ProposerPreferences
            | MessageType::BuilderRequestAuth => gloas_message(kind, body)?,
        };
        Ok(SignRequest {
            kind,
            preset,
            supplied_root,
            fork_info,
            message,
        })
    }

    /// The request's `type`.
    pub fn message_type(&self) -> MessageType {
        self.kind
    }

    /// The `signing_root` / `signingRoot` the client sent, if any.
    pub fn supplied_signing_root(&self) -> Option<SigningRoot> {
        self.supplied_root
    }

    /// A `VALIDATOR_REGISTRATION`'s fee recipient (the signing policy checks it); `None` for
    /// every other type.
    pub fn fee_recipient(&self) -> Option<[u8; 20]> {
        match &self.message {
            Message::Registration(r) => Some(r.fee_recipient.0),
            _ => None,
        }
    }

    /// The preset the request was parsed for.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// The epoch whose fork version the signature's domain uses (`None` for `DEPOSIT` and
    /// `VALIDATOR_REGISTRATION`, whose domains do not depend on the fork).
    fn fork_epoch(&self, slots_per_epoch: u64) -> Result<Option<u64>, ConsensusError> {
        let epoch_of = |slot: u64| {
            slot.checked_div(slots_per_epoch).map(Some).ok_or_else(|| {
                ConsensusError::Inconsistent("the network's SLOTS_PER_EPOCH is 0".into())
            })
        };
        match &self.message {
            Message::Deposit(_) | Message::Registration(_) => Ok(None),
            Message::AggregationSlot { slot } => epoch_of(*slot),
            Message::Aggregate(a) => epoch_of(a.aggregate.data.slot),
            Message::AggregateElectra(a) => epoch_of(a.aggregate.data.slot),
            Message::Attestation(a) => Ok(Some(a.target.epoch)),
            Message::BlockPhase0(b) => epoch_of(b.slot),
            Message::BlockAltair(b) => epoch_of(b.slot),
            Message::BlockHeader(h) => epoch_of(h.slot),
            Message::RandaoReveal { epoch } => Ok(Some(*epoch)),
            Message::VoluntaryExit(e) => Ok(Some(e.epoch)),
            Message::SyncCommitteeMessage(m) => epoch_of(m.slot),
            Message::SyncSelection(s) => epoch_of(s.slot),
            Message::Contribution(c) => epoch_of(c.contribution.slot),
            Message::AggregateGloas(a) => epoch_of(a.aggregate.data.slot),
            Message::BlockGloas(b) => epoch_of(b.slot),
            Message::Bid(b) => epoch_of(b.slot),
            // `get_execution_payload_envelope_signature`: the epoch of `state.slot`, the block's
            // slot, which the payload carries as `slot_number` (EIP-7843).
            Message::Envelope(e) => epoch_of(e.payload.slot_number),
            Message::PayloadAttestation(d) => epoch_of(d.slot),
            Message::Preferences(p) => epoch_of(p.proposal_slot),
            Message::RequestAuth(_) => Ok(None),
        }
    }

    /// Whether the request is for `network`: its `fork_info.genesis_validators_root` is the
    /// network's (when known), the fork version its domain uses is one of the network's forks,
    /// and a `DEPOSIT`'s genesis fork version is the network's. Anything else is
    /// [`ConsensusError::OtherNetwork`], with both sides named.
    pub fn check_network(&self, network: &Network) -> Result<(), ConsensusError> {
        if let Message::Deposit(d) = &self.message {
            if d.genesis_fork_version.0 != network.genesis_fork_version {
                return Err(ConsensusError::OtherNetwork(format!(
                    "this signer serves network {}, whose genesis fork version is 0x{}; the \
                     deposit is for genesis fork version 0x{}; nothing was signed",
                    network.name,
                    hex::encode(network.genesis_fork_version),
                    hex::encode(d.genesis_fork_version.0)
                )));
            }
        }
        let (Some(fork_info), Some(epoch)) =
            (&self.fork_info, self.fork_epoch(network.slots_per_epoch)?)
        else {
            return Ok(());
        };
        let version = domain::fork_version(&fork_info.fork, epoch);
        network.check_request(fork_info.genesis_validators_root.0, version.0, epoch)
    }

    /// Our own signing root, from the message, `fork_info` and `network`. It is not compared
    /// with the supplied root; [`SignRequest::verified_signing_root`] does that. A request parsed
    /// for another preset than the network's is [`ConsensusError::Inconsistent`]: its containers
    /// were sized for the other one.
    pub fn signing_root(&self, network: &Network) -> Result<SigningRoot, ConsensusError> {
        if self.preset != network.preset {
            return Err(ConsensusError::Inconsistent(format!(
                "request parsed for the {} preset, network {} is {}",
                self.preset,
                clip(&network.name),
                network.preset
            )));
        }
        let (domain_type, object_root): (DomainType, [u8; 32]) = match &self.message {
            Message::Deposit(d) => {
                let domain = domain::compute_domain(
                    domain::DOMAIN_DEPOSIT,
                    d.genesis_fork_version,
                    Bytes([0; 32]),
                );
                let object = DepositMessage {
                    pubkey: d.pubkey,
                    withdrawal_credentials: d.withdrawal_credentials,
                    amount: d.amount,
                };
                return Ok(domain::signing_root(object.tree_hash_root().0, domain));
            }
            Message::Registration(r) => {
                let domain = domain::compute_domain(
                    domain::DOMAIN_APPLICATION_BUILDER,
                    Bytes(network.genesis_fork_version),
                    Bytes([0; 32]),
                );
                return Ok(domain::signing_root(r.tree_hash_root().0, domain));
            }
            Message::RequestAuth(a) => {
                let domain = domain::compute_domain(
                    domain::DOMAIN_BUILDER_REQUEST_AUTH,
                    Bytes(network.genesis_fork_version),
                    Bytes([0; 32]),
                );
                return Ok(domain::signing_root(a.tree_hash_root().0, domain));
            }
            Message::AggregationSlot { slot } => {
                (domain::DOMAIN_SELECTION_PROOF, slot.tree_hash_root().0)
            }
            Message::Aggregate(a) => (domain::DOMAIN_AGGREGATE_AND_PROOF, a.tree_hash_root().0),
            Message::AggregateElectra(a) => {
                (domain::DOMAIN_AGGREGATE_AND_PROOF, a.tree_hash_root().0)
            }
            Message::Attestation(a) => (domain::DOMAIN_BEACON_ATTESTER, a.tree_hash_root().0),
            Message::BlockPhase0(b) => (domain::DOMAIN_BEACON_PROPOSER, b.tree_hash_root().0),
            Message::BlockAltair(b) => (domain::DOMAIN_BEACON_PROPOSER, b.tree_hash_root().0),
            Message::BlockHeader(h) => (domain::DOMAIN_BEACON_PROPOSER, h.tree_hash_root().0),
            Message::RandaoReveal { epoch } => (domain::DOMAIN_RANDAO, epoch.tree_hash_root().0),
            Message::VoluntaryExit(e) => (domain::DOMAIN_VOLUNTARY_EXIT, e.tree_hash_root().0),
            // A Root's hash_tree_root is the root itself.
            Message::SyncCommitteeMessage(m) => (
                domain::DOMAIN_SYNC_COMMITTEE,
                m.beacon_block_root.tree_hash_root().0,
            ),
            Message::SyncSelection(s) => (
                domain::DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF,
                s.tree_hash_root().0,
            ),
            Message::Contribution(c) => {
                (domain::DOMAIN_CONTRIBUTION_AND_PROOF, c.tree_hash_root().0)
            }
            Message::AggregateGloas(a) => {
                (domain::DOMAIN_AGGREGATE_AND_PROOF, a.tree_hash_root().0)
            }
            Message::BlockGloas(b) => (domain::DOMAIN_BEACON_PROPOSER, b.tree_hash_root().0),
            Message::Bid(b) => (domain::DOMAIN_BEACON_BUILDER, b.tree_hash_root().0),
            Message::Envelope(e) => (domain::DOMAIN_BEACON_BUILDER, e.tree_hash_root().0),
            Message::PayloadAttestation(d) => (domain::DOMAIN_PTC_ATTESTER, d.tree_hash_root().0),
            Message::Preferences(p) => (domain::DOMAIN_PROPOSER_PREFERENCES, p.tree_hash_root().0),
        };
        let epoch = self
            .fork_epoch(network.slots_per_epoch)?
            .ok_or_else(|| malformed(format!("{} has no fork epoch", self.kind)))?;
        let fork_info = self
            .fork_info
            .as_ref()
            .ok_or_else(|| malformed(format!("{} needs fork_info", self.kind)))?;
        let version = domain::fork_version(&fork_info.fork, epoch);
        let domain =
            domain::compute_domain(domain_type, version, fork_info.genesis_validators_root);
        Ok(domain::signing_root(object_root, domain))
    }

    /// Our signing root, checked against the supplied one: a supplied root that differs is
    /// [`ConsensusError::Inconsistent`] (the API answers 400 and signs nothing).
    pub fn verified_signing_root(&self, network: &Network) -> Result<SigningRoot, ConsensusError> {
        let ours = self.signing_root(network)?;
        match self.supplied_root {
            Some(theirs) if theirs != ours => Err(ConsensusError::Inconsistent(format!(
                "supplied signing root {theirs} differs from the computed {ours}"
            ))),
            _ => Ok(ours),
        }
    }

    /// What slashing protection needs: the slot of a block, the epochs of an attestation.
    pub fn slashing_data(&self) -> SlashingData {
        match &self.message {
            Message::BlockPhase0(b) => SlashingData::Block { slot: b.slot },
            Message::BlockAltair(b) => SlashingData::Block { slot: b.slot },
            Message::BlockHeader(h) => SlashingData::Block { slot: h.slot },
            Message::BlockGloas(b) => SlashingData::Block { slot: b.slot },
            Message::Attestation(a) => SlashingData::Attestation {
                source_epoch: a.source.epoch,
                target_epoch: a.target.epoch,
            },
            _ => SlashingData::None,
        }
    }

    /// Until when its signature is worth anything: the table of validity windows, one arm per
    /// message (the rules and the specs they follow are in [`super::validity`]). `None`: no time
    /// limit — an exit is valid from its epoch on, forever (`process_voluntary_exit` only asks
    /// `get_current_epoch(state) >= voluntary_exit.epoch`, and EIP-7044 keeps its domain fixed),
    /// and deposits and builder registrations carry no slot at all. Every computation is checked:
    /// an end beyond `u64` slots is a window that never ends. A `slots_per_epoch` of 0 has no
    /// epochs: such windows never end either.
    pub fn validity_window(&self, slots_per_epoch: u64) -> Option<ValidityWindow> {
        let spe = slots_per_epoch;
        Some(match &self.message {
            Message::BlockPhase0(b) => ValidityWindow::block(b.slot),
            Message::BlockAltair(b) => ValidityWindow::block(b.slot),
            Message::BlockHeader(h) => ValidityWindow::block(h.slot),
            Message::RandaoReveal { epoch } => ValidityWindow::randao(*epoch, spe),
            Message::Attestation(a) => ValidityWindow::attestation(a.slot, spe),
            Message::Aggregate(a) => ValidityWindow::aggregate(a.aggregate.data.slot, spe),
            Message::AggregateElectra(a) => ValidityWindow::aggregate(a.aggregate.data.slot, spe),
            Message::AggregationSlot { slot } => ValidityWindow::aggregate(*slot, spe),
            Message::SyncCommitteeMessage(m) => ValidityWindow::sync_committee(m.slot),
            Message::SyncSelection(s) => ValidityWindow::sync_committee(s.slot),
            Message::Contribution(c) => ValidityWindow::sync_committee(c.contribution.slot),
            Message::BlockGloas(b) => ValidityWindow::block(b.slot),
            Message::AggregateGloas(a) => ValidityWindow::aggregate(a.aggregate.data.slot, spe),
            Message::PayloadAttestation(d) => ValidityWindow::payload_attestation(d.slot),
            Message::Bid(b) => ValidityWindow::bid(b.slot),
            Message::Preferences(p) => ValidityWindow::proposer_preferences(p.proposal_slot),
            // A payload envelope: gossip takes one for any block not older than finality
            // (`validate_execution_payload_envelope_gossip`), so no time limit here; builder
            // auth carries no protocol deadline either.
            Message::Envelope(_) | Message::RequestAuth(_) => return None,
            Message::VoluntaryExit(_) | Message::Deposit(_) | Message::Registration(_) => {
                return None
            }
        })
    }

    /// For `AGGREGATION_SLOT` and `SYNC_COMMITTEE_SELECTION_PROOF`: which proof this is, with the
    /// fork version `fork_info` gives for the slot's epoch (the precompute cache's key). `None`
    /// for every other type, or when `slots_per_epoch` is 0.
    pub(crate) fn selection_proof(&self, slots_per_epoch: u64) -> Option<SelectionProof> {
        let (slot, subcommittee_index) = match &self.message {
            Message::AggregationSlot { slot } => (*slot, None),
            Message::SyncSelection(s) => (s.slot, Some(s.subcommittee_index)),
            _ => return None,
        };
        let fork_info = self.fork_info.as_ref()?;
        let epoch = slot.checked_div(slots_per_epoch)?;
        Some(SelectionProof {
            slot,
            subcommittee_index,
            fork_version: domain::fork_version(&fork_info.fork, epoch).0,
            genesis_validators_root: fork_info.genesis_validators_root.0,
        })
    }

    /// `fork_info.genesis_validators_root`, for the types that carry `fork_info`.
    pub fn genesis_validators_root(&self) -> Option<[u8; 32]> {
        self.fork_info.as_ref().map(|f| f.genesis_validators_root.0)
    }
}

/// `BLOCK_V2`: a full block for PHASE0/ALTAIR, a header from BELLATRIX on (the API's shape), and
/// for GLOAS either (a Gloas block body is small again: the payload travels in its envelope); the
/// other field must be absent.
fn block_v2(b: VersionedBlock, preset: Preset) -> Result<Message, ConsensusError> {
    let version = b.version;
    let what = |m: String| malformed(format!("beacon_block ({version:?}): {m}"));
    let full = |raw: &RawValue| -> Result<BeaconBlockWire, ConsensusError> {
        parse_raw(raw, &format!("beacon_block ({version:?}).block"))
    };
    match (version, b.block, b.block_header) {
        (_, Some(_), Some(_)) => Err(what("both block and block_header given".into())),
        (ForkName::Phase0, Some(block), None) => Ok(Message::BlockPhase0(Box::new(
            full(&block)?.into_phase0().map_err(what)?,
        ))),
        (ForkName::Altair, Some(block), None) => Ok(Message::BlockAltair(Box::new(
            full(&block)?.into_altair(preset).map_err(what)?,
        ))),
        (ForkName::Gloas, Some(block), None) => {
            let block: gloas::BeaconBlock = parse_raw(&block, "beacon_block (Gloas).block")?;
            block.check(preset).map_err(what)?;
            Ok(Message::BlockGloas(Box::new(block)))
        }
        (ForkName::Phase0 | ForkName::Altair, None, _) => {
            Err(what("needs the full block in `block`".into()))
        }
        (_, None, Some(header)) => Ok(Message::BlockHeader(header)),
        (_, _, None) => Err(what("needs `block_header` from BELLATRIX on".into())),
    }
}

/// The Gloas types (Remote Signing API v1.4.0), with the names and shapes clients send today.
fn gloas_message(
    kind: MessageType,
    body: &[u8],
) -> Result<(Option<ForkInfo>, Message), ConsensusError> {
    let b: GloasBody = parse(body)?;
    let (key, raw) = b.pick(kind)?;
    let message = match kind {
        MessageType::ExecutionPayloadBid => Message::Bid(Box::new(versioned_or_bare(raw, key)?)),
        MessageType::ExecutionPayloadEnvelope => {
            Message::Envelope(Box::new(versioned_or_bare(raw, key)?))
        }
        MessageType::PayloadAttestationMessage => {
            Message::PayloadAttestation(payload_attestation_data(raw, key)?)
        }
        MessageType::ProposerPreferences => Message::Preferences(versioned_or_bare(raw, key)?),
        _ => {
            let auth: gloas::BuilderRequestAuth = versioned_or_bare(raw, key)?;
            if auth.data.0.is_empty() {
                return Err(malformed(format!("{key}: `data` is empty")));
            }
            // Its domain is the genesis fork's: no fork_info (one sent is not used).
            return Ok((None, Message::RequestAuth(auth)));
        }
    };
    let fork_info = b
        .fork_info
        .ok_or_else(|| malformed(format!("{kind} needs fork_info")))?;
    Ok((Some(fork_info), message))
}
