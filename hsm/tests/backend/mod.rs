//! Which PKCS#11 implementation a test process runs against, and its private configuration.
//!
//! SoftHSM2 by default; kryoptic when `HSM_SIGNER_TEST_PKCS11=kryoptic`, with the module from
//! `HSM_SIGNER_KRYOPTIC_MODULE` (`scripts/test.sh` sets both from `scripts/kryoptic.sh`). The
//! `hsm` crate's device tests and the workspace's harness (`tests/common`, through `#[path]`)
//! share this file, so both run unchanged on either module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Environment variable that selects the PKCS#11 implementation of a test run.
pub const SELECT_ENV: &str = "HSM_SIGNER_TEST_PKCS11";
/// Environment variable holding the path of kryoptic's module.
pub const KRYOPTIC_MODULE_ENV: &str = "HSM_SIGNER_KRYOPTIC_MODULE";

/// A PKCS#11 implementation the tests can run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SoftHSM2 from Debian's package.
    SoftHsm,
    /// kryoptic built from crates.io by `scripts/kryoptic.sh`.
    Kryoptic,
}

/// A module with its configuration file written under a test's own directory.
#[derive(Debug, Clone)]
pub struct ModuleSetup {
    /// Which implementation.
    pub backend: Backend,
    /// Path of the module (`.so`).
    pub module: PathBuf,
    /// The signer's device profile for it (`pkcs11-config/<profile>.toml`).
    pub profile: &'static str,
    /// The environment variable through which the module finds its configuration.
    pub config_env: &'static str,
    /// The configuration file written for this test.
    pub config: PathBuf,
}

impl Backend {
    /// The implementation this test process was asked to use.
    pub fn selected() -> Backend {
        match std::env::var(SELECT_ENV).as_deref() {
            Err(_) | Ok("") | Ok("softhsm") => Backend::SoftHsm,
            Ok("kryoptic") => Backend::Kryoptic,
            Ok(other) => panic!("{SELECT_ENV}={other:?}: expected softhsm or kryoptic"),
        }
    }

    /// Short name, as used in device names.
    pub fn name(self) -> &'static str {
        match self {
            Backend::SoftHsm => "softhsm",
            Backend::Kryoptic => "kryoptic",
        }
    }

    fn module(self) -> PathBuf {
        match self {
            Backend::SoftHsm => {
                hsm::find_softhsm_module().expect("SoftHSM2 is installed (scripts/install-deps.sh)")
            }
            Backend::Kryoptic => {
                let path = std::env::var_os(KRYOPTIC_MODULE_ENV).unwrap_or_else(|| {
                    panic!("{KRYOPTIC_MODULE_ENV} is not set: export it from scripts/kryoptic.sh")
                });
                let path = PathBuf::from(path);
                assert!(path.is_file(), "{}: no such module", path.display());
                path
            }
        }
    }

    /// Write the module's configuration under `dir` with room for at least `tokens` tokens (and
    /// one uninitialised slot more, as SoftHSM always offers), without touching the process
    /// environment.
    pub fn write_config(self, dir: &Path, tokens: usize) -> ModuleSetup {
        let module = self.module();
        match self {
            Backend::SoftHsm => {
                let token_dir = dir.join("tokens");
                std::fs::create_dir_all(&token_dir).unwrap();
                let config = dir.join("softhsm2.conf");
                std::fs::write(
                    &config,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                        token_dir.display()
                    ),
                )
                .unwrap();
                ModuleSetup {
                    backend: self,
                    module,
                    profile: "softhsm",
                    config_env: "SOFTHSM2_CONF",
                    config,
                }
            }
            Backend::Kryoptic => {
                // One SQLite file per slot; a slot whose file does not exist yet holds an
                // uninitialised token that C_InitToken creates.
                std::fs::create_dir_all(dir).unwrap();
                let mut text = String::new();
                for slot in 1..=tokens + 1 {
                    text.push_str(&format!(
                        "[[slots]]\nslot = {slot}\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\n",
                        dir.join(format!("token-{slot}.sql")).display()
                    ));
                }
                let config = dir.join("kryoptic.conf");
                std::fs::write(&config, text).unwrap();
                ModuleSetup {
                    backend: self,
                    module,
                    profile: "kryoptic",
                    config_env: "KRYOPTIC_CONF",
                    config,
                }
            }
        }
    }
}

impl ModuleSetup {
    /// Point the module at this configuration for the rest of the process (before it is
    /// loaded: modules read it in `C_Initialize`).
    pub fn apply_env(&self) {
        std::env::set_var(self.config_env, &self.config);
    }
}
