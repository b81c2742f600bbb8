//! How a device is described: which module, which token, where its PIN comes from, how many
//! sessions it may have. Parsing of the project's TOML lives in the binary; this is the shape.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::HsmError;

/// Label of the custody key unless a profile says otherwise.
pub const DEFAULT_CUSTODY_KEY_LABEL: &str = "hsm-signer-custody";

/// Where a token's user PIN comes from. PINs are never written in a config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// A file holding the PIN (trailing newline ignored); should be mode 0600.
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    /// Read the PIN. Errors say where we looked, never what we found.
    pub fn read(&self, device: &str) -> Result<SecretString, HsmError> {
        let err = |reason: String| HsmError::PinSource {
            device: device.to_owned(),
            reason,
        };
        let raw = match self {
            PinSource::File(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| err(format!("PIN file {}: {e}", path.display())))?,
            ),
            PinSource::Env(var) => Zeroizing::new(
                std::env::var(var)
                    .map_err(|_| err(format!("environment variable {var} is not set")))?,
            ),
        };
        let pin = raw.trim_end_matches(['\n', '\r']);
        if pin.is_empty() {
            return Err(err("the PIN is empty".into()));
        }
        Ok(SecretString::from(pin.to_owned()))
    }
}

/// Which token on the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token with this label (the usual way: slot numbers move around).
    Label(String),
    /// A fixed slot id.
    Slot(u64),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "{l}"),
            TokenSelector::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

/// Everything needed to open one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Our name for the device (key files refer to it).
    pub name: String,
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Which token.
    pub token: TokenSelector,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Cap on concurrently open sessions (a YubiHSM2 has 16).
    pub max_sessions: usize,
    /// Label of the custody key on the token.
    pub custody_key_label: String,
    /// Decrypt with a session copy of the custody key (`C_CopyObject` with `CKA_TOKEN` false,
    /// still sensitive and non-extractable, inside the token) instead of the token object.
    /// Software tokens re-read their object store on every use of a token object (SoftHSM2: a
    /// decryption 21 µs against 7 µs; kryoptic: 42 against 2.5); the copy costs one session
    /// more. A token that refuses the copy is used as before.
    pub session_copy: bool,
    /// Benchmarks only: a fixed delay added to every device operation, standing in for a
    /// network HSM. Never set this in production.
    pub simulated_latency: Option<Duration>,
}
