//! PKCS#11 devices for hsm-signer.
//!
//! This crate owns everything that says "PKCS#11": loading a module once per process, finding a
//! token by label or slot, logging in with a PIN read from a file or the environment, a capped
//! pool of owned sessions, the token's non-extractable AES-256 custody key, AES-GCM envelope
//! encryption and decryption under it, health checks, and re-opening sessions after a token
//! reset. It knows nothing of Ethereum, BLS or key files: callers hand it bytes and AAD.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod device;
mod error;
mod module;
mod pool;

pub use config::{DeviceConfig, PinSource, TokenSelector, DEFAULT_CUSTODY_KEY_LABEL};
pub use device::{init_soft_token, CustodyKeyInfo, Device, Envelope, TokenSummary, IV_LEN};
pub use error::HsmError;
pub use module::{find_softhsm_module, load_module, SOFTHSM_MODULE_CANDIDATES};
pub use pool::PoolStats;
