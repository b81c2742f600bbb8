//! The one error type of the `hsm` crate. Messages name the device and the operation, never a PIN
//! or any key material.

use std::path::PathBuf;

/// Everything that can go wrong between us and a PKCS#11 token.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The configured module file does not exist.
    #[error("PKCS#11 module not found: {0}")]
    ModuleNotFound(PathBuf),
    /// The module exists but could not be loaded or initialised.
    #[error("PKCS#11 module {path} could not be loaded: {reason}")]
    ModuleLoad {
        /// Module path.
        path: PathBuf,
        /// What the loader or `C_Initialize` said.
        reason: String,
    },
    /// No token with this label (or in this slot) is present.
    #[error("device {device}: no token labelled {label:?} is present{hint}")]
    TokenNotFound {
        /// Device name from the configuration.
        device: String,
        /// The label we looked for.
        label: String,
        /// Extra help, e.g. that uninitialised tokens exist.
        hint: String,
    },
    /// The token exists but has not been initialised (no user PIN set).
    #[error("device {device}: token {label:?} is not initialised; run `hsm-signer device init`")]
    TokenNotInitialized {
        /// Device name.
        device: String,
        /// Token label or slot.
        label: String,
    },
    /// The PIN could not be read from its source.
    #[error("device {device}: cannot read PIN: {reason}")]
    PinSource {
        /// Device name.
        device: String,
        /// Why (file missing, variable unset, …). Never the PIN.
        reason: String,
    },
    /// The token rejected the PIN. We stop trying so as not to lock the token.
    #[error("device {device}: the token rejected the PIN (no further attempts are made, so the token is not locked out)")]
    WrongPin {
        /// Device name.
        device: String,
    },
    /// The token's user PIN is locked.
    #[error("device {device}: the token's user PIN is locked")]
    PinLocked {
        /// Device name.
        device: String,
    },
    /// The token has no custody key yet.
    #[error(
        "device {device}: no custody key {label:?} on the token; run `hsm-signer device init`"
    )]
    CustodyKeyMissing {
        /// Device name.
        device: String,
        /// Custody key label.
        label: String,
    },
    /// More than one object matches the custody key label.
    #[error(
        "device {device}: {count} keys are labelled {label:?}; exactly one custody key is expected"
    )]
    CustodyKeyAmbiguous {
        /// Device name.
        device: String,
        /// Custody key label.
        label: String,
        /// How many matched.
        count: usize,
    },
    /// Decryption failed: the envelope was tampered with, belongs to another device or another
    /// key, or is corrupt. Any decrypt failure is an integrity failure.
    #[error("device {device}: envelope failed authentication (tampered, corrupt, or sealed by another device or for another key)")]
    Integrity {
        /// Device name.
        device: String,
    },
    /// A newly sealed envelope did not open on the token that sealed it; it was not returned, so
    /// nothing was stored.
    #[error("device {device}: a newly sealed envelope does not open on the token ({reason}); nothing was written. The token may choose the AES-GCM IV in a way the signer cannot read back, or be faulty: do not provision keys on it")]
    SealCheck {
        /// Device name.
        device: String,
        /// What went wrong when opening it.
        reason: String,
    },
    /// The device cannot be reached (removed, reset, erroring) even after re-opening a session.
    #[error("device {device} unavailable during {op}: {reason}")]
    Unavailable {
        /// Device name.
        device: String,
        /// The operation that failed.
        op: &'static str,
        /// The PKCS#11 return value.
        reason: String,
    },
    /// Any other PKCS#11 failure.
    #[error("device {device}: {op} failed: {reason}")]
    Pkcs11 {
        /// Device name.
        device: String,
        /// The operation that failed.
        op: &'static str,
        /// The PKCS#11 return value.
        reason: String,
    },
    /// The device is administratively disabled (see [`crate::Device::set_enabled`]).
    #[error("device {0} is disabled")]
    Disabled(String),
    /// A bad argument from our own caller (wrong length, …).
    #[error("device {device}: {reason}")]
    InvalidInput {
        /// Device name.
        device: String,
        /// What is wrong.
        reason: String,
    },
}

impl HsmError {
    /// True when the failure is about the device being unreachable, so that the caller may try
    /// another device or report 503, as opposed to a configuration or integrity error.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HsmError::Unavailable { .. } | HsmError::Disabled(_))
    }
}
