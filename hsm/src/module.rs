//! One `Pkcs11` context per module file per process: `C_Initialize` is process-global, so a
//! second initialisation of the same library must be avoided, and contexts are never finalised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::HsmError;

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Load and initialise `path` once for the whole process; later calls return the same context.
pub fn load_module(path: &Path) -> Result<Pkcs11, HsmError> {
    if !path.is_file() {
        return Err(HsmError::ModuleNotFound(path.to_owned()));
    }
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let modules = MODULES.get_or_init(Default::default);
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = modules.get(&key) {
        return Ok(ctx.clone());
    }
    let load_err = |reason: String| HsmError::ModuleLoad {
        path: path.to_owned(),
        reason,
    };
    let ctx = Pkcs11::new(&key).map_err(|e| load_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e.to_string())),
    }
    modules.insert(key, ctx.clone());
    Ok(ctx)
}

/// Well-known install locations of SoftHSM2's module, first match wins.
pub const SOFTHSM_MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

/// Find SoftHSM2's module on this machine.
pub fn find_softhsm_module() -> Option<PathBuf> {
    SOFTHSM_MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}
