//! The signer's error type: every failure a CLI command or the API can meet, with a message an
//! operator can act on. Never carries a secret, PIN or password.

use std::path::PathBuf;

use crate::keys::eip2335::Eip2335Error;

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
    /// BLS failure (bad key bytes, …).
    #[error("BLS: {0}")]
    Bls(String),
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
