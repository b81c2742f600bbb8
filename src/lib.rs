//! hsm-signer: a remote signer for Ethereum validators whose BLS12-381 keys are in the custody
//! of PKCS#11 tokens. See `DESIGN.md` in the shared folder for the architecture; a request flows
//! `api` → `consensus` → `slashing` → `scheduler` → `keys` / `hsm`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

// The product's surface: the signer (`app`), its HTTP API (`api`), the command line (`cli`),
// configuration, the consensus types, keys and slashing protection. Inside each, what no test
// or other crate needs is `pub(crate)`.
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod error;
pub mod keys;
pub mod slashing;

// Parts public only for the integration tests and benchmarks (hidden from the documentation).
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod bls;
#[doc(hidden)]
pub mod devices;
#[doc(hidden)]
pub mod duties;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod participants;
#[doc(hidden)]
pub mod scheduler;

pub use error::{Result, SignerError};
