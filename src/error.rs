//! The signer's error type: every failure a CLI command or the API can meet, with a message an
//! operator can act on. Never carries a secret, PIN or password.

use std::path::PathBuf;

/// Errors of the hsm-signer crate.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A device failed.
    #[error(transparent)]
    Hsm(#[from] hsm::HsmError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An EIP-2335 keystore could not be used.
    #[error("keystore {path}: {source}")]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// Why.
        source: Eip2335Error,
    },
    /// A key-store record is malformed or inconsistent.
    #[error("key file {path}: {reason}")]
    KeyRecord {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No such validator key.
    #[error("unknown validator key {0}")]
    UnknownKey(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// Where keys go does not hold together: devices, threshold, share ids.
    #[error("{0}")]
    Placement(String),
    /// Threshold key material does not hold together (share math, recombination).
    #[error("{0}")]
    Threshold(String),
    /// The slashing protection database failed (or refused).
    #[error("{0}")]
    Slashing(String),
    /// The host refused a resource: a thread, a runtime, a port, randomness.
    #[error("{0}")]
    System(String),
    /// A step that cannot fail did (a closed channel, a value that does not serialise).
    #[error("{0}")]
    Internal(String),
    /// BLS failure (bad key bytes, …).
    #[error("BLS: {0}")]
    Bls(String),
    /// Dealing a key out to participants, or a participant taking its share in.
    #[error(transparent)]
    Distribution(#[from] DistributionError),
}

impl SignerError {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SignerError {
        let path = path.into();
        move |source| SignerError::Io { path, source }
    }
}

/// Result with [`SignerError`].
pub type Result<T, E = SignerError> = std::result::Result<T, E>;

/// Errors from reading, decrypting or writing an EIP-2335 keystore.
///
/// No variant ever carries a password, a secret, a derived key or ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Eip2335Error {
    /// The JSON is not a well-formed keystore: bad syntax, a missing field, a
    /// field of the wrong type, bad hex, or a value of the wrong length.
    #[error("malformed keystore: {0}")]
    Malformed(String),
    /// The `version` field is not 4.
    #[error("unsupported keystore version {0} (only version 4, EIP-2335, is supported)")]
    UnsupportedVersion(u64),
    /// `crypto.kdf.function` is neither `scrypt` nor `pbkdf2`.
    #[error("unknown KDF function {0:?} (supported: \"scrypt\", \"pbkdf2\")")]
    UnknownKdf(String),
    /// `crypto.cipher.function` is not `aes-128-ctr`.
    #[error("unknown cipher function {0:?} (supported: \"aes-128-ctr\")")]
    UnknownCipher(String),
    /// `crypto.checksum.function` is not `sha256`.
    #[error("unknown checksum function {0:?} (supported: \"sha256\")")]
    UnknownChecksum(String),
    /// KDF parameters outside what the EIP allows or what this module is
    /// willing to spend memory and CPU on.
    #[error("unsupported KDF parameters: {0}")]
    UnsupportedKdfParams(String),
    /// The password does not match the keystore, or the keystore was altered.
    #[error("checksum mismatch: wrong password or corrupted keystore")]
    ChecksumMismatch,
    /// The keystore protects a secret that is not 32 bytes long.
    #[error("secret must be 32 bytes, but the keystore holds {0} bytes")]
    BadSecretLength(usize),
    /// The operating system's random number generator failed (encrypt only).
    #[error("system random number generator failed: {0}")]
    Randomness(String),
}

/// Errors of distributing a key to participants (`keys split`) and of a participant importing its
/// share (`keys import-shares --manifest`). No variant carries a secret or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistributionError {
    /// The split asked for does not hold together (threshold, share ids, participants).
    #[error("split: {0}")]
    BadSplit(String),
    /// The output directory exists: a split writes only into a directory it creates.
    #[error("{0}: already exists; a split writes only into a new directory")]
    OutputExists(PathBuf),
    /// The shares made did not prove out (a bug or a hardware fault); nothing was written.
    #[error("split: {0}; nothing was written")]
    Unproven(String),
    /// The manifest is not the profile's JSON, or breaks its rules.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The keystore's share is none of the manifest's participants.
    #[error(
        "keystore {keystore}: its public key {pubkey} is not the public_key of any participant \
         in manifest {manifest}"
    )]
    NotAParticipant {
        /// The share keystore.
        keystore: PathBuf,
        /// The share's public key (from its secret).
        pubkey: String,
        /// The manifest.
        manifest: PathBuf,
    },
    /// The composite key is in the key store already.
    #[error("composite key {0} is already in the key store; nothing was changed")]
    AlreadyStored(String),
}
