//! hsm-signer: a remote signer for Ethereum validators whose BLS12-381 keys are in the custody
//! of PKCS#11 tokens. See `DESIGN.md` in the shared folder for the architecture; a request flows
//! `api` → `consensus` → `slashing` → `scheduler` → `keys` / `hsm`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod bench;
pub mod bls;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod devices;
pub mod duties;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod scheduler;
pub mod slashing;

pub use error::{Result, SignerError};
