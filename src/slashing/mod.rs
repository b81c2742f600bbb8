//! Slashing protection (EIP-3076, the *complete* strategy): the check that stands between a
//! signing request and the key. For every block and attestation it decides whether signing is
//! safe and, if so, records the message durably (committed and fsynced) **before** the caller may
//! sign. A crash between record and sign can lose a signature, never protection.
//!
//! This module owns the rules ([`Refusal`] says why a request is refused), the store trait
//! ([`SlashingStore`], so that a PostgreSQL store can sit beside the SQLite one), the group-commit
//! writer behind [`SlashingProtection`], EIP-3076 v5 interchange import/export, and pruning.
//! It does not own HTTP status codes (the API maps [`SlashingError::Refused`] to 412 and
//! [`SlashingError::Store`] to 503), the CLI, or the signing itself.
//!
//! How a decision is made, per validator (all comparisons on the validator's own records):
//! - blocks: a slot that is already recorded is a repeat (allowed, nothing new recorded) if the
//!   signing root is the same, otherwise a double proposal; a new slot must be above the low
//!   watermark (the lowest recorded slot, or a higher explicit watermark left by pruning or by a
//!   minified import).
//! - attestations: source must not exceed target; a recorded target is a repeat if source and
//!   signing root are the same, otherwise a double vote; source must not be below, and target
//!   must be above, the low watermarks; and no recorded attestation may surround the new one or
//!   be surrounded by it.
//!
//! A record imported without a signing root has an *unknown* root, which never equals a
//! requested one.

pub(crate) mod interchange;
#[cfg(test)]
mod memory;
mod pg_tls;
mod postgres;
mod prune;
mod rules;
mod service;
mod sqlite;
mod store;

use std::fmt;

pub(crate) use self::postgres::{
    connection_string_has_password, with_scratch_database, with_scratch_url,
};
pub use prune::{
    PruneReport, Pruning, DEFAULT_CHUNK_BUDGET, DEFAULT_KEEP_EPOCHS, DEFAULT_PRUNE_INTERVAL,
    MIN_KEEP_EPOCHS,
};
pub use service::{Options, SlashingProtection, Stats, DEFAULT_GATHER_WAIT};
pub use store::Footprint;

/// A validator's 48-byte compressed BLS public key.
pub type Pubkey = [u8; 48];
/// A 32-byte root (signing root, genesis validators root).
pub type Root = [u8; 32];

/// Largest slot or epoch we store: SQL integers are signed 64-bit. (2^63 slots is ~10^12 years.)
pub const MAX_SLOT_OR_EPOCH: u64 = i64::MAX as u64;

/// What is about to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposal {
    /// A beacon block (`BLOCK`, `BLOCK_V2`) at `slot`.
    Block {
        /// The block's slot.
        slot: u64,
        /// `compute_signing_root(block, domain)`.
        signing_root: Root,
    },
    /// An attestation (`ATTESTATION`) voting `source_epoch` → `target_epoch`.
    Attestation {
        /// `attestation.data.source.epoch`.
        source_epoch: u64,
        /// `attestation.data.target.epoch`.
        target_epoch: u64,
        /// `compute_signing_root(attestation_data, domain)`.
        signing_root: Root,
    },
}

/// Which low watermark a request fell below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkKind {
    /// Block slot: a new slot must be strictly above it.
    BlockSlot,
    /// Attestation source epoch: a new source must be at or above it.
    AttestationSource,
    /// Attestation target epoch: a new target must be strictly above it.
    AttestationTarget,
}

impl fmt::Display for WatermarkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatermarkKind::BlockSlot => "block slot",
            WatermarkKind::AttestationSource => "attestation source epoch",
            WatermarkKind::AttestationTarget => "attestation target epoch",
        })
    }
}

/// Why a signature is refused. Each variant's `Display` is the human reason sent in the HTTP 412
/// body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A different block (or one whose signing root is unknown) was already signed at this slot.
    #[error(
        "double block proposal: a block at slot {slot} was already signed with signing root {}",
        root_text(.existing_root)
    )]
    DoubleBlockProposal {
        /// The slot.
        slot: u64,
        /// The recorded block's signing root (`None`: imported without one).
        existing_root: Option<Root>,
    },
    /// A different attestation (or one whose signing root is unknown) was already signed for
    /// this target epoch.
    #[error(
        "double vote: an attestation with target epoch {target_epoch} was already signed \
         (source epoch {existing_source_epoch}, signing root {})",
        root_text(.existing_root)
    )]
    DoubleVote {
        /// The target epoch.
        target_epoch: u64,
        /// The recorded attestation's source epoch.
        existing_source_epoch: u64,
        /// The recorded attestation's signing root (`None`: imported without one).
        existing_root: Option<Root>,
    },
    /// The new attestation would surround a recorded one.
    #[error(
        "surrounding vote: attestation {source_epoch}->{target_epoch} would surround the signed \
         attestation {existing_source_epoch}->{existing_target_epoch}"
    )]
    SurroundingVote {
        /// New source epoch.
        source_epoch: u64,
        /// New target epoch.
        target_epoch: u64,
        /// Recorded source epoch.
        existing_source_epoch: u64,
        /// Recorded target epoch.
        existing_target_epoch: u64,
    },
    /// The new attestation would be surrounded by a recorded one.
    #[error(
        "surrounded vote: attestation {source_epoch}->{target_epoch} would be surrounded by the \
         signed attestation {existing_source_epoch}->{existing_target_epoch}"
    )]
    SurroundedVote {
        /// New source epoch.
        source_epoch: u64,
        /// New target epoch.
        target_epoch: u64,
        /// Recorded source epoch.
        existing_source_epoch: u64,
        /// Recorded target epoch.
        existing_target_epoch: u64,
    },
    /// An attestation's source epoch is after its target epoch.
    #[error(
        "invalid attestation: source epoch {source_epoch} is after target epoch {target_epoch}"
    )]
    SourceAfterTarget {
        /// Source epoch.
        source_epoch: u64,
        /// Target epoch.
        target_epoch: u64,
    },
    /// Below the low watermark: the signing history there is unknown (imported minified data,
    /// the oldest imported record, or pruned history), so nothing may be signed there.
    #[error(
        "{kind} {value} is {} the low watermark {watermark}; the signing history there is unknown",
        if matches!(.kind, WatermarkKind::AttestationSource) { "below" } else { "not above" }
    )]
    BelowLowWatermark {
        /// Which watermark.
        kind: WatermarkKind,
        /// The requested slot or epoch.
        value: u64,
        /// The watermark.
        watermark: u64,
    },
    /// The request is for another network than the one this database protects.
    #[error(
        "genesis validators root mismatch: this database protects the network with root {}, \
         not {}",
        hex_root(.expected),
        hex_root(.got)
    )]
    GenesisValidatorsRootMismatch {
        /// The database's genesis validators root.
        expected: Root,
        /// The request's.
        got: Root,
    },
    /// The key was deleted through the Keymanager API (by this signer or another one sharing the
    /// database): it signs nothing until its keystore is imported again. Not a slashing risk but
    /// a key that is gone, so the API answers 404 as for an unknown key.
    #[error(
        "key {} was deleted through the Keymanager API (by this or another signer sharing the \
         slashing database); nothing was recorded",
        hex_pubkey(.pubkey)
    )]
    KeyDeleted {
        /// The deleted key.
        pubkey: Pubkey,
    },
    /// A slot or epoch beyond [`MAX_SLOT_OR_EPOCH`].
    #[error("{what} {value} is beyond the supported maximum {MAX_SLOT_OR_EPOCH}")]
    OutOfRange {
        /// "slot", "source epoch" or "target epoch".
        what: &'static str,
        /// The value.
        value: u64,
    },
}

/// Slashing-protection failures.
#[derive(Debug, thiserror::Error)]
pub enum SlashingError {
    /// Signing would be unsafe (or the request is for another network): HTTP 412.
    #[error("slashing protection refused to sign: {0}")]
    Refused(#[from] Refusal),
    /// The database is unavailable, failed, or the queue is full: HTTP 503. Nothing was recorded,
    /// so nothing may be signed.
    #[error("slashing protection database unavailable: {0}")]
    Store(String),
    /// An interchange file is malformed or does not fit this database; nothing was imported.
    #[error("slashing protection interchange: {0}")]
    Interchange(String),
}

pub(crate) fn hex_root(root: &Root) -> String {
    format!("0x{}", hex::encode(root))
}

fn hex_pubkey(pubkey: &Pubkey) -> String {
    format!("0x{}", hex::encode(pubkey))
}

fn root_text(root: &Option<Root>) -> String {
    match root {
        Some(r) => hex_root(r),
        None => "unknown (imported without one)".to_string(),
    }
}
