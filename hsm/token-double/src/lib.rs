//! **TEST DOUBLE — never a real token.** A PKCS#11 module that forwards every call to a real
//! module (SoftHSM2 or kryoptic, path in `TOKEN_DOUBLE_MODULE`) and changes one behaviour, chosen
//! by `TOKEN_DOUBLE_MODE`:
//!
//! - `token-iv` (default): on `C_EncryptInit` with `CKM_AES_GCM` it writes an IV of its own choice
//!   into the caller's `CK_GCM_PARAMS.pIv` and encrypts with that IV, as CloudHSM and Luna in FIPS
//!   mode do. No such HSM runs here; this is how the signer's sealing is tested against one.
//! - `corrupt`: `C_Encrypt` returns a ciphertext with one bit flipped, a faulty token.
//! - `forward`: changes nothing.
//!
//! It counts `C_Encrypt`/`C_Decrypt` calls that produced output ([`token_double_counts`]), so a test
//! can see that every new envelope was opened once.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use cryptoki_sys::{
    CKM_AES_GCM, CKR_ARGUMENTS_BAD, CKR_GENERAL_ERROR, CKR_OK, CK_BYTE, CK_FUNCTION_LIST,
    CK_FUNCTION_LIST_PTR, CK_FUNCTION_LIST_PTR_PTR, CK_GCM_PARAMS, CK_MECHANISM, CK_OBJECT_HANDLE,
    CK_RV, CK_SESSION_HANDLE, CK_ULONG,
};

/// Environment variable: path of the real module every call is forwarded to.
pub const MODULE_ENV: &str = "TOKEN_DOUBLE_MODULE";
/// Environment variable: `token-iv` (default), `corrupt` or `forward`.
pub const MODE_ENV: &str = "TOKEN_DOUBLE_MODE";

/// The file name cargo gives this crate's cdylib.
pub const LIBRARY_FILE: &str = "libpkcs11_token_double.so";

struct Real {
    /// The real module's function list, as it returned it.
    list: CK_FUNCTION_LIST,
    /// Ours: the same, with the few functions this double changes.
    ours: CK_FUNCTION_LIST,
}

// SAFETY: the lists hold only function pointers and a version, never mutated after creation.
unsafe impl Send for Real {}
unsafe impl Sync for Real {}

static REAL: OnceLock<Option<Real>> = OnceLock::new();
static ENCRYPTS: AtomicU64 = AtomicU64::new(0);
static DECRYPTS: AtomicU64 = AtomicU64::new(0);

#[derive(PartialEq)]
enum Mode {
    TokenIv,
    Corrupt,
    Forward,
}

fn mode() -> Mode {
    match std::env::var(MODE_ENV).as_deref() {
        Ok("corrupt") => Mode::Corrupt,
        Ok("forward") => Mode::Forward,
        _ => Mode::TokenIv,
    }
}

fn real() -> Option<&'static Real> {
    REAL.get_or_init(|| {
        let path = std::env::var_os(MODULE_ENV)?;
        // SAFETY: loading a PKCS#11 module runs its initialisers, which is what modules are for.
        unsafe {
            let lib = libloading::Library::new(path).ok()?;
            let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
                lib.get(b"C_GetFunctionList").ok()?;
            let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
            if get(&mut list) != CKR_OK || list.is_null() {
                return None;
            }
            let list = *list;
            // The module stays loaded for the life of the process, like any PKCS#11 module.
            std::mem::forget(lib);
            let mut ours = list;
            ours.C_EncryptInit = Some(encrypt_init);
            ours.C_Encrypt = Some(encrypt);
            ours.C_Decrypt = Some(decrypt);
            Some(Real { list, ours })
        }
    })
    .as_ref()
}

/// The module's entry point: the real module's function list with our changes.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(out: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    if out.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match real() {
        Some(real) => {
            *out = &real.ours as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR;
            CKR_OK
        }
        None => CKR_GENERAL_ERROR,
    }
}

unsafe extern "C" fn encrypt_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let Some(real) = real() else {
        return CKR_GENERAL_ERROR;
    };
    if mode() == Mode::TokenIv
        && !mechanism.is_null()
        && (*mechanism).mechanism == CKM_AES_GCM
        && !(*mechanism).pParameter.is_null()
    {
        // The token picks the IV and hands it back in the caller's parameters.
        let params = (*mechanism).pParameter as *mut CK_GCM_PARAMS;
        if !(*params).pIv.is_null() && (*params).ulIvLen > 0 {
            let iv = std::slice::from_raw_parts_mut((*params).pIv, (*params).ulIvLen as usize);
            if getrandom::getrandom(iv).is_err() {
                return CKR_GENERAL_ERROR;
            }
        }
    }
    match real.list.C_EncryptInit {
        Some(f) => f(session, mechanism, key),
        None => CKR_GENERAL_ERROR,
    }
}

unsafe extern "C" fn encrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    let Some(f) = real().and_then(|r| r.list.C_Encrypt) else {
        return CKR_GENERAL_ERROR;
    };
    let rv = f(session, data, data_len, out, out_len);
    if rv == CKR_OK && !out.is_null() && !out_len.is_null() && *out_len > 0 {
        ENCRYPTS.fetch_add(1, Ordering::SeqCst);
        if mode() == Mode::Corrupt {
            *out ^= 0x01;
        }
    }
    rv
}

unsafe extern "C" fn decrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    let Some(f) = real().and_then(|r| r.list.C_Decrypt) else {
        return CKR_GENERAL_ERROR;
    };
    let rv = f(session, data, data_len, out, out_len);
    if !out.is_null() {
        DECRYPTS.fetch_add(1, Ordering::SeqCst);
    }
    rv
}

/// Encryptions that produced a ciphertext and decryptions attempted with an output buffer, since
/// the module was loaded. Tests reach it through `dlsym`.
#[no_mangle]
pub unsafe extern "C" fn token_double_counts(encrypts: *mut u64, decrypts: *mut u64) {
    if !encrypts.is_null() {
        *encrypts = ENCRYPTS.load(Ordering::SeqCst);
    }
    if !decrypts.is_null() {
        *decrypts = DECRYPTS.load(Ordering::SeqCst);
    }
}
