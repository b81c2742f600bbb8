//! One PKCS#11 token as a device: login, the custody key, envelope encryption under it, health,
//! and recovery from lost sessions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::{DeviceConfig, TokenSelector};
use crate::module::load_module;
use crate::pool::{Lease, PoolStats, SessionPool};
use crate::HsmError;

/// AES-GCM nonce length: 96 bits, the size GCM is defined for without extra hashing.
pub const IV_LEN: usize = 12;
/// AES-GCM tag length in bits.
const TAG_BITS: u64 = 128;

/// A secret sealed by a device's custody key: the IV and `ciphertext || tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The GCM nonce, fresh for every encryption.
    pub iv: [u8; IV_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// What the token says about the custody key's protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustodyKeyInfo {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// Whether `CKA_VALUE` can be read at all (it must not).
    pub value_readable: bool,
}

/// A token's identity as the module reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSummary {
    /// Slot id.
    pub slot: u64,
    /// Token label.
    pub label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
}

/// One token, ready to encrypt and decrypt under its custody key.
pub struct Device {
    name: String,
    config: DeviceConfig,
    ctx: Pkcs11,
    slot: Slot,
    /// The token's serial number when the device was opened.
    serial: String,
    pin: SecretString,
    pool: SessionPool,
    /// The custody key's handles for one pool generation (a token reset makes a new one).
    custody_key: Mutex<Option<CustodyHandles>>,
    /// Set when the token rejected our PIN: never try it again (tokens lock after a few tries).
    pin_rejected: AtomicBool,
    enabled: AtomicBool,
    operations: AtomicU64,
    failures: AtomicU64,
    /// Tests only: while set, an operation that has its session waits here (see [`Device::hold`]).
    held: AtomicBool,
    hold_gate: (Mutex<bool>, Condvar),
}

/// The custody key as found in one pool generation: the token object, and the session copy
/// encryption and decryption use when [`DeviceConfig::session_copy`] is on and the token made one.
struct CustodyHandles {
    generation: u64,
    token: ObjectHandle,
    copy: Option<SessionCopy>,
}

/// A session object copied from the custody key, and the session it lives in (not a pooled
/// one: closing `anchor` destroys the copy, which is how an old generation's copy goes).
struct SessionCopy {
    _anchor: Session,
    handle: ObjectHandle,
}

impl CustodyHandles {
    fn working(&self) -> ObjectHandle {
        self.copy.as_ref().map_or(self.token, |c| c.handle)
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("slot", &self.slot.id())
            .field("token", &self.config.token)
            .finish_non_exhaustive()
    }
}

/// Return values meaning "this session (or the whole token state) is gone; open a new one".
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Equality without an early exit: one of the two is a secret.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn token_label(info_label: &str) -> String {
    info_label.trim_end().to_owned()
}

/// Find the slot of the token selected by `sel`.
fn find_slot(ctx: &Pkcs11, device: &str, sel: &TokenSelector) -> Result<Slot, HsmError> {
    let ck = |op: &'static str| {
        move |e: CkError| HsmError::Pkcs11 {
            device: device.to_owned(),
            op,
            reason: e.to_string(),
        }
    };
    let slots = ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))?;
    let mut uninitialised = 0;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        let matches = match sel {
            TokenSelector::Label(l) => token_label(info.label()) == *l,
            TokenSelector::Slot(id) => slot.id() == *id,
        };
        if !info.token_initialized() {
            uninitialised += 1;
        }
        if matches {
            if !info.token_initialized() || !info.user_pin_initialized() {
                return Err(HsmError::TokenNotInitialized {
                    device: device.to_owned(),
                    label: sel.to_string(),
                });
            }
            return Ok(slot);
        }
    }
    let hint = if uninitialised > 0 {
        format!(" ({uninitialised} uninitialised token(s) present; run `hsm-signer device init`)")
    } else {
        String::new()
    };
    Err(HsmError::TokenNotFound {
        device: device.to_owned(),
        label: sel.to_string(),
        hint,
    })
}

/// Initialise a new token with `label` on the module's first free slot (SoftHSM always offers
/// one; kryoptic offers each configured slot whose database does not exist yet). Returns false
/// when a token with that label already exists.
///
/// This erases whatever is on the chosen free slot, so it is only used for tokens the signer
/// creates itself (the embedded SoftHSM default), never on an operator's HSM.
pub fn init_soft_token(
    module: &std::path::Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<bool, HsmError> {
    let ctx = load_module(module)?;
    let ck = |op: &'static str| {
        move |e: CkError| HsmError::Pkcs11 {
            device: label.to_owned(),
            op,
            reason: e.to_string(),
        }
    };
    let mut free = None;
    for slot in ctx.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
        let info = ctx.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        if info.token_initialized() && token_label(info.label()) == label {
            return Ok(false);
        }
        if !info.token_initialized() && free.is_none() {
            free = Some(slot);
        }
    }
    let slot = free.ok_or_else(|| HsmError::TokenNotFound {
        device: label.to_owned(),
        label: label.to_owned(),
        hint: " (no free slot to initialise a new token in)".into(),
    })?;
    ctx.init_token(slot, so_pin, label)
        .map_err(ck("C_InitToken"))?;
    // The slot list may change after C_InitToken (SoftHSM's does); find our token again by label.
    let slot = find_slot(&ctx, label, &TokenSelector::Label(label.to_owned())).or_else(|e| {
        match e {
            // Token is there, only the user PIN is missing, which is what we set next.
            HsmError::TokenNotInitialized { .. } => ctx
                .get_slots_with_token()
                .map_err(ck("C_GetSlotList"))?
                .into_iter()
                .find(|s| {
                    ctx.get_token_info(*s)
                        .map(|i| token_label(i.label()) == label)
                        .unwrap_or(false)
                })
                .ok_or(e),
            other => Err(other),
        }
    })?;
    let session = ctx.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(ck("C_Login(SO)"))?;
    session.init_pin(user_pin).map_err(ck("C_InitPIN"))?;
    session.logout().map_err(ck("C_Logout"))?;
    Ok(true)
}

impl Device {
    /// Load the module, find the token, read the PIN and log in once to prove it. Does not
    /// require the custody key to exist (see [`Device::ensure_custody_key`]).
    pub fn open(config: DeviceConfig) -> Result<Device, HsmError> {
        let ctx = load_module(&config.module)?;
        let slot = find_slot(&ctx, &config.name, &config.token)?;
        let pin = config.pin.read(&config.name)?;
        let serial = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::Pkcs11 {
                device: config.name.clone(),
                op: "C_GetTokenInfo",
                reason: e.to_string(),
            })?
            .serial_number()
            .trim_end()
            .to_owned();
        let device = Device {
            name: config.name.clone(),
            pool: SessionPool::new(config.max_sessions),
            config,
            ctx,
            slot,
            serial,
            pin,
            custody_key: Mutex::new(None),
            pin_rejected: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            operations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            held: AtomicBool::new(false),
            hold_gate: (Mutex::new(false), Condvar::new()),
        };
        // Log in now so that a wrong PIN is reported at start-up, not at the first signature.
        drop(device.lease("login")?);
        Ok(device)
    }

    /// Why this open device no longer stands for its configured token, or `None` when it
    /// still does. A device must then be opened again (a reload does): its token rejected
    /// its PIN (the latch that keeps us from locking the token; the PIN may since be fixed),
    /// or the token it was selected by now sits in another slot (modules renumber slots when
    /// tokens come and go), or another token is in its slot, or it cannot be found.
    pub fn staleness(&self) -> Option<String> {
        if self.pin_rejected.load(Ordering::SeqCst) {
            return Some("the token rejected its PIN".into());
        }
        let slot = match find_slot(&self.ctx, &self.name, &self.config.token) {
            Ok(slot) => slot,
            Err(e) => return Some(e.to_string()),
        };
        if slot.id() != self.slot.id() {
            return Some(format!(
                "token {} is now in slot {}, not {}",
                self.config.token,
                slot.id(),
                self.slot.id()
            ));
        }
        match self.ctx.get_token_info(slot) {
            Ok(info) if info.serial_number().trim_end() == self.serial => None,
            Ok(info) => Some(format!(
                "slot {} holds the token with serial {:?}, not {:?}",
                slot.id(),
                info.serial_number().trim_end(),
                self.serial
            )),
            Err(e) => Some(self.ck_err("C_GetTokenInfo", e).to_string()),
        }
    }

    /// Our name for the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration the device was opened with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    fn ck_err(&self, op: &'static str, e: CkError) -> HsmError {
        match e {
            CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            ) => HsmError::WrongPin {
                device: self.name.clone(),
            },
            CkError::Pkcs11(RvError::PinLocked, _) => HsmError::PinLocked {
                device: self.name.clone(),
            },
            e if session_lost(&e) => HsmError::Unavailable {
                device: self.name.clone(),
                op,
                reason: e.to_string(),
            },
            e => HsmError::Pkcs11 {
                device: self.name.clone(),
                op,
                reason: e.to_string(),
            },
        }
    }

    fn open_session(&self) -> Result<Session, HsmError> {
        if self.pin_rejected.load(Ordering::SeqCst) {
            return Err(HsmError::WrongPin {
                device: self.name.clone(),
            });
        }
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.ck_err("C_OpenSession", e))?;
        // Login state is per application, not per session: the first session logs in for all.
        match session.login(UserType::User, Some(&AuthPin::from(self.pin_str()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => {
                let err = self.ck_err("C_Login", e);
                if matches!(err, HsmError::WrongPin { .. } | HsmError::PinLocked { .. }) {
                    self.pin_rejected.store(true, Ordering::SeqCst);
                }
                Err(err)
            }
        }
    }

    fn pin_str(&self) -> String {
        use secrecy::ExposeSecret;
        // cryptoki's AuthPin is a SecretString that zeroizes this copy when dropped.
        self.pin.expose_secret().to_owned()
    }

    fn lease(&self, op: &'static str) -> Result<Lease<'_>, HsmError> {
        if !self.enabled.load(Ordering::SeqCst) {
            return Err(HsmError::Disabled(self.name.clone()));
        }
        self.pool
            .acquire(|| self.open_session())?
            .ok_or_else(|| HsmError::Unavailable {
                device: self.name.clone(),
                op,
                reason: "no session became free in time".into(),
            })
    }

    fn find_custody_key(&self, session: &Session) -> Result<Option<ObjectHandle>, CkError> {
        // Token objects only: our session copy (and another device's of the same token in this
        // process) carries the same label.
        let found = session.find_objects(&[
            Attribute::Token(true),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.config.custody_key_label.as_bytes().to_vec()),
        ])?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0])),
            // Reported by the caller: we refuse to guess which key seals our envelopes.
            _ => Err(CkError::InvalidValue),
        }
    }

    /// Copy the custody key into a session object of a session of its own, and check that the
    /// token made it as it must be: a session object, sensitive, not extractable. `None` (with
    /// the reason logged) when the token refuses; the token object is then used.
    fn session_copy(&self, token_key: ObjectHandle) -> Option<SessionCopy> {
        let refused = |reason: String| {
            tracing::warn!(device = %self.name, %reason,
                "custody key: no session copy; decrypting with the token object");
            None
        };
        let anchor = match self.open_session() {
            Ok(s) => s,
            Err(e) => return refused(e.to_string()),
        };
        // Everything else is the token object's own (tokens refuse to change most of it while
        // copying); what matters is checked on the copy below.
        let handle = match anchor.copy_object(token_key, &[Attribute::Token(false)]) {
            Ok(h) => h,
            Err(e) => return refused(format!("C_CopyObject: {e}")),
        };
        let wanted = [
            (AttributeType::Token, false),
            (AttributeType::Sensitive, true),
            (AttributeType::Extractable, false),
        ];
        let types: Vec<AttributeType> = wanted.iter().map(|(t, _)| *t).collect();
        let as_made = match anchor.get_attributes(handle, &types) {
            Ok(attrs) => attrs,
            Err(e) => return refused(format!("C_GetAttributeValue on the copy: {e}")),
        };
        let holds = |t: AttributeType, v: bool| {
            as_made.iter().any(|a| {
                matches!(
                    (a, t),
                    (Attribute::Token(x), AttributeType::Token)
                        | (Attribute::Sensitive(x), AttributeType::Sensitive)
                        | (Attribute::Extractable(x), AttributeType::Extractable) if *x == v
                )
            })
        };
        if let Some((t, _)) = wanted.iter().find(|(t, v)| !holds(*t, *v)) {
            // Closing the anchor destroys it.
            return refused(format!("the copy's {t:?} is not as asked"));
        }
        tracing::info!(device = %self.name, "custody key: decrypting with a session copy");
        Some(SessionCopy {
            _anchor: anchor,
            handle,
        })
    }

    /// The custody key on the token (for its attributes).
    fn custody_key_handle(&self, lease: &Lease<'_>) -> Result<ObjectHandle, HsmError> {
        self.custody_handles(lease, |h| h.token)
    }

    /// The handle encryption and decryption use: the session copy if there is one, else the
    /// token object.
    fn working_key_handle(&self, lease: &Lease<'_>) -> Result<ObjectHandle, HsmError> {
        self.custody_handles(lease, CustodyHandles::working)
    }

    /// `pick` from the custody key's handles of `lease`'s generation, found (and copied) first
    /// when the generation is new. The copy of the generation before dies with its session.
    fn custody_handles(
        &self,
        lease: &Lease<'_>,
        pick: impl Fn(&CustodyHandles) -> ObjectHandle,
    ) -> Result<ObjectHandle, HsmError> {
        let mut cached = self.custody_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handles) = cached.as_ref() {
            // A lease of an older generation may still be out: a newer generation's handles
            // serve it too (a session object is visible to every session of the application).
            if handles.generation >= lease.generation() {
                return Ok(pick(handles));
            }
        }
        // Sessions were lost since (a token reset, say): find the key again and copy it anew.
        // An operation still using the old copy fails once as a lost handle and is retried.
        *cached = None;
        match self.find_custody_key(lease.session()) {
            Ok(Some(token)) => {
                let copy = if self.config.session_copy {
                    self.session_copy(token)
                } else {
                    None
                };
                let handles = CustodyHandles {
                    generation: lease.generation(),
                    token,
                    copy,
                };
                let handle = pick(&handles);
                *cached = Some(handles);
                Ok(handle)
            }
            Ok(None) => Err(HsmError::CustodyKeyMissing {
                device: self.name.clone(),
                label: self.config.custody_key_label.clone(),
            }),
            Err(CkError::InvalidValue) => Err(HsmError::CustodyKeyAmbiguous {
                device: self.name.clone(),
                label: self.config.custody_key_label.clone(),
                count: 2,
            }),
            Err(e) => Err(self.ck_err("C_FindObjects", e)),
        }
    }

    /// Run `f` on a pooled session with the custody key. If the device says the session is
    /// gone, the session (and its idle siblings) are discarded and `f` runs once more on a
    /// fresh, logged-in session, so a token reset costs one retry and no restart.
    fn with_custody_key<T>(
        &self,
        op: &'static str,
        f: impl FnMut(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let result = self.on_a_session(op, f);
        // Its session is back in the pool: if the device was disabled meanwhile, this may
        // have been its last operation.
        self.close_copy_if_out_of_service();
        result
    }

    fn on_a_session<T>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Refused before the token (disabled, no session, a rejected PIN): not an operation.
            let lease = self.lease(op)?;
            if attempt == 1 {
                self.operations.fetch_add(1, Ordering::Relaxed);
            }
            if self.held.load(Ordering::Acquire) {
                self.wait_while_held();
            }
            if let Some(latency) = self.config.simulated_latency {
                std::thread::sleep(latency);
            }
            let result = match self.working_key_handle(&lease) {
                Ok(key) => f(lease.session(), key),
                Err(HsmError::Unavailable { reason, .. }) if attempt == 1 => {
                    tracing::warn!(device = %self.name, %reason, "session lost; reopening");
                    lease.discard();
                    continue;
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if session_lost(&e) && attempt == 1 => {
                    tracing::warn!(device = %self.name, error = %e, "session lost; reopening");
                    lease.discard();
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if session_lost(&e) {
                        lease.discard();
                    }
                    return Err(self.ck_err(op, e));
                }
            }
        }
    }

    /// Seal `plaintext` under the custody key with AES-256-GCM, binding `aad`, and open the new
    /// envelope once on the token before returning it, so that an envelope that would not open is
    /// never stored (a key sealed only in it would be lost for good).
    ///
    /// The IV stored is the one in the GCM parameters as the token left them: we propose a random
    /// one, but a token may choose its own and write it back (CloudHSM; Luna in FIPS mode).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Envelope, HsmError> {
        let mut proposed = [0u8; IV_LEN];
        getrandom::getrandom(&mut proposed).map_err(|e| HsmError::InvalidInput {
            device: self.name.clone(),
            reason: format!("no randomness for the IV: {e}"),
        })?;
        let (iv, ciphertext) = self.with_custody_key("C_Encrypt", |session, key| {
            let mut iv = proposed;
            let ciphertext = {
                let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
                session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?
            };
            Ok((iv, ciphertext))
        })?;
        let envelope = Envelope { iv, ciphertext };
        let failed = |reason: &str| HsmError::SealCheck {
            device: self.name.clone(),
            reason: reason.to_owned(),
        };
        match self.decrypt(&envelope, aad) {
            Ok(opened) if same_bytes(&opened, plaintext) => Ok(envelope),
            Ok(_) => Err(failed("it opened to different bytes")),
            Err(HsmError::Integrity { .. }) => Err(failed(
                "the token refused to open it (an IV or ciphertext the token did not report as it used)",
            )),
            Err(e) => Err(e),
        }
    }

    /// Decrypt an envelope into a buffer that is wiped when dropped. Every failure of the
    /// decryption itself (`C_Decrypt`) is reported as [`HsmError::Integrity`]; a failure to
    /// start it (`C_DecryptInit`) as the token's error.
    pub fn decrypt(&self, envelope: &Envelope, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let mut integrity = false;
        let result = self.with_custody_key("C_Decrypt", |session, key| {
            let mut iv_buf = envelope.iv;
            let params = GcmParams::new(&mut iv_buf, aad, TAG_BITS.into())?;
            // cryptoki sizes this Vec exactly before the real call, so it never reallocates:
            // wrapping it right away wipes the only copy.
            match session.decrypt(&Mechanism::AesGcm(params), key, &envelope.ciphertext) {
                Ok(v) => Ok(Zeroizing::new(v)),
                Err(e) if session_lost(&e) => Err(e),
                // Only C_Decrypt sees the ciphertext and checks its tag. A C_DecryptInit that
                // fails says something about the session or the key (kryoptic answers
                // CKR_GENERAL_ERROR there when its login is gone), never about the envelope.
                Err(e @ CkError::Pkcs11(_, cryptoki::context::Function::Decrypt)) => {
                    integrity = true;
                    Err(e)
                }
                Err(e) => Err(e),
            }
        });
        match result {
            Err(_) if integrity => Err(HsmError::Integrity {
                device: self.name.clone(),
            }),
            other => other,
        }
    }

    /// Create the custody key if the token has none. Returns true when it was created.
    pub fn ensure_custody_key(&self) -> Result<bool, HsmError> {
        let lease = self.lease("create custody key")?;
        match self.custody_key_handle(&lease) {
            Ok(_) => return Ok(false),
            Err(HsmError::CustodyKeyMissing { .. }) => {}
            Err(e) => return Err(e),
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(self.config.custody_key_label.as_bytes().to_vec()),
        ];
        lease
            .session()
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.ck_err("C_GenerateKey", e))?;
        // Found again (and copied) by the next operation.
        *self.custody_key.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::info!(device = %self.name, "created custody key");
        Ok(true)
    }

    /// Read the custody key's protection attributes back from the token.
    pub fn custody_key_info(&self) -> Result<CustodyKeyInfo, HsmError> {
        let lease = self.lease("inspect custody key")?;
        let key = self.custody_key_handle(&lease)?;
        let session = lease.session();
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(|e| self.ck_err("C_GetAttributeValue", e))?;
        let flag = |t: AttributeType| {
            attrs.iter().any(|a| {
                matches!(
                    (a, t),
                    (Attribute::Sensitive(true), AttributeType::Sensitive)
                        | (Attribute::Extractable(true), AttributeType::Extractable)
                        | (
                            Attribute::AlwaysSensitive(true),
                            AttributeType::AlwaysSensitive
                        )
                        | (
                            Attribute::NeverExtractable(true),
                            AttributeType::NeverExtractable
                        )
                )
            })
        };
        let value = session
            .get_attribute_info(key, &[AttributeType::Value])
            .map_err(|e| self.ck_err("C_GetAttributeValue", e))?;
        let value_readable = matches!(value.first(), Some(AttributeInfo::Available(_)));
        Ok(CustodyKeyInfo {
            sensitive: flag(AttributeType::Sensitive),
            extractable: flag(AttributeType::Extractable),
            always_sensitive: flag(AttributeType::AlwaysSensitive),
            never_extractable: flag(AttributeType::NeverExtractable),
            value_readable,
        })
    }

    /// The token's identity.
    pub fn token_summary(&self) -> Result<TokenSummary, HsmError> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| self.ck_err("C_GetTokenInfo", e))?;
        Ok(TokenSummary {
            slot: self.slot.id(),
            label: token_label(info.label()),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
        })
    }

    /// A cheap liveness check: the token answers, a session is usable and the custody key is
    /// there. Recovers a lost session on the way, like any other operation.
    pub fn check(&self) -> Result<(), HsmError> {
        self.with_custody_key("health check", |session, _key| {
            session.get_session_info().map(|_| ())
        })
    }

    /// Hold every operation once it has its session (`true`), or let them all go (`false`).
    /// For tests, which need "every session is busy" as a state they set rather than a race
    /// against an operation's duration. Nothing in the signer calls it.
    #[doc(hidden)]
    pub fn hold(&self, held: bool) {
        let (lock, cv) = &self.hold_gate;
        let mut gate = lock.lock().unwrap_or_else(|p| p.into_inner());
        *gate = held;
        self.held.store(held, Ordering::Release);
        cv.notify_all();
    }

    fn wait_while_held(&self) {
        let (lock, cv) = &self.hold_gate;
        let gate = lock.lock().unwrap_or_else(|p| p.into_inner());
        drop(
            cv.wait_while(gate, |held| *held)
                .unwrap_or_else(|p| p.into_inner()),
        );
    }

    /// Take a device out of service (no new operations) or put it back. Operations in flight
    /// finish; idle sessions are closed when disabling.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
        if !enabled {
            self.pool.drain_idle();
            self.close_copy_if_out_of_service();
        }
    }

    /// A disabled device keeps no session open once its last operation is done: the session
    /// copy's goes too (the next operation after enabling makes a new one).
    fn close_copy_if_out_of_service(&self) {
        if !self.is_enabled() && self.pool.stats().in_use == 0 {
            let mut cached = self.custody_key.lock().unwrap_or_else(|p| p.into_inner());
            if cached.as_ref().is_some_and(|h| h.copy.is_some()) {
                *cached = None;
            }
        }
    }

    /// Whether the device accepts operations.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Session pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Operations that reached the token (had a session), and those of them that failed, since
    /// start. A request refused before the token (device disabled, no session free in time, its
    /// PIN rejected) is neither.
    pub fn op_counts(&self) -> (u64, u64) {
        (
            self.operations.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}
