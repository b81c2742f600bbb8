//! The device layer against a real PKCS#11 module: SoftHSM2, or kryoptic with
//! `HSM_SIGNER_TEST_PKCS11=kryoptic` (see `backend`). Each test runs in its own process (nextest)
//! with its own token directory, so `C_Initialize` and tokens never leak between tests.

mod backend;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::Backend;
use hsm::{
    init_soft_token, load_module, Device, DeviceConfig, HsmError, PinSource, TokenSelector,
    DEFAULT_CUSTODY_KEY_LABEL,
};
use secrecy::SecretString;

const PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";

struct Tokens {
    dir: tempfile::TempDir,
    module: PathBuf,
}

/// A private module configuration with `labels` initialised as tokens.
fn tokens(labels: &[&str]) -> Tokens {
    let dir = tempfile::tempdir().unwrap();
    let setup = Backend::selected().write_config(dir.path(), labels.len());
    setup.apply_env();
    let module = setup.module;
    for label in labels {
        let created = init_soft_token(
            &module,
            label,
            &SecretString::from(SO_PIN.to_owned()),
            &SecretString::from(PIN.to_owned()),
        )
        .unwrap();
        assert!(created);
    }
    std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
    Tokens { dir, module }
}

fn config(t: &Tokens, label: &str, max_sessions: usize) -> DeviceConfig {
    DeviceConfig {
        name: format!("dev-{label}"),
        module: t.module.clone(),
        token: TokenSelector::Label(label.to_owned()),
        pin: PinSource::File(t.dir.path().join("pin")),
        max_sessions,
        custody_key_label: DEFAULT_CUSTODY_KEY_LABEL.to_owned(),
        session_copy: true,
        simulated_latency: None,
    }
}

fn ready_device(t: &Tokens, label: &str, max_sessions: usize) -> Device {
    let device = Device::open(config(t, label, max_sessions)).unwrap();
    assert!(device.ensure_custody_key().unwrap());
    assert!(!device.ensure_custody_key().unwrap(), "idempotent");
    device
}

#[test]
fn custody_key_is_sensitive_non_extractable_and_unreadable() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let info = device.custody_key_info().unwrap();
    assert!(info.sensitive);
    assert!(!info.extractable);
    assert!(info.always_sensitive);
    assert!(info.never_extractable);
    assert!(!info.value_readable, "CKA_VALUE must not be readable");
}

#[test]
fn custody_key_is_invisible_to_a_session_that_is_not_logged_in() {
    let t = tokens(&["a"]);
    let slot = {
        let device = ready_device(&t, "a", 2);
        device.token_summary().unwrap().slot
        // Dropping the device closes all its sessions, which logs the application out.
    };
    let ctx = load_module(&t.module).unwrap();
    let slot = cryptoki::slot::Slot::try_from(slot).unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    let template = [
        cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::SECRET_KEY),
        cryptoki::object::Attribute::Label(DEFAULT_CUSTODY_KEY_LABEL.as_bytes().to_vec()),
    ];
    assert!(session.find_objects(&template).unwrap().is_empty());
    session
        .login(
            cryptoki::session::UserType::User,
            Some(&SecretString::from(PIN.to_owned())),
        )
        .unwrap();
    assert_eq!(session.find_objects(&template).unwrap().len(), 1);
}

#[test]
fn envelope_round_trips_and_is_bound_to_its_aad() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let secret = [7u8; 32];
    let envelope = device.encrypt(&secret, b"aad-1").unwrap();
    assert_eq!(envelope.ciphertext.len(), 32 + 16);
    assert!(!envelope.ciphertext.windows(32).any(|w| w == secret));
    assert_eq!(&device.decrypt(&envelope, b"aad-1").unwrap()[..], &secret);
    let again = device.encrypt(&secret, b"aad-1").unwrap();
    assert_ne!(again.iv, envelope.iv, "a fresh IV for every encryption");

    let err = device.decrypt(&envelope, b"aad-2").unwrap_err();
    assert!(matches!(err, HsmError::Integrity { .. }), "{err}");
}

#[test]
fn tampered_ciphertext_tag_or_iv_fails_authentication() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let envelope = device.encrypt(&[1u8; 32], b"aad").unwrap();
    for i in [0, 31, 32, 47] {
        let mut bad = envelope.clone();
        bad.ciphertext[i] ^= 0x01;
        let err = device.decrypt(&bad, b"aad").unwrap_err();
        assert!(matches!(err, HsmError::Integrity { .. }), "byte {i}: {err}");
    }
    let mut bad = envelope.clone();
    bad.iv[0] ^= 0x80;
    assert!(matches!(
        device.decrypt(&bad, b"aad").unwrap_err(),
        HsmError::Integrity { .. }
    ));
    let mut short = envelope.clone();
    short.ciphertext.truncate(10);
    assert!(matches!(
        device.decrypt(&short, b"aad").unwrap_err(),
        HsmError::Integrity { .. }
    ));
    // The device still works after the failures.
    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[1u8; 32]);
}

#[test]
fn an_envelope_from_another_device_does_not_open() {
    let t = tokens(&["a", "b"]);
    let a = ready_device(&t, "a", 2);
    let b = ready_device(&t, "b", 2);
    let envelope = a.encrypt(&[9u8; 32], b"aad").unwrap();
    assert!(matches!(
        b.decrypt(&envelope, b"aad").unwrap_err(),
        HsmError::Integrity { .. }
    ));
}

#[test]
fn wrong_pin_is_one_clear_error_and_is_not_retried() {
    let t = tokens(&["a"]);
    let wrong = t.dir.path().join("wrong-pin");
    std::fs::write(&wrong, "not-the-pin").unwrap();
    let mut cfg = config(&t, "a", 2);
    cfg.pin = PinSource::File(wrong);
    let err = Device::open(cfg).unwrap_err();
    assert!(matches!(err, HsmError::WrongPin { .. }), "{err}");
    let msg = err.to_string();
    assert!(!msg.contains("not-the-pin") && !msg.contains(PIN), "{msg}");
    // The right PIN still works: we did not lock the token.
    ready_device(&t, "a", 2);
}

#[test]
fn pin_from_environment_and_missing_sources_are_reported() {
    let t = tokens(&["a"]);
    let mut cfg = config(&t, "a", 2);
    std::env::set_var("HSM_TEST_PIN", PIN);
    cfg.pin = PinSource::Env("HSM_TEST_PIN".into());
    Device::open(cfg.clone()).unwrap();
    cfg.pin = PinSource::Env("HSM_TEST_PIN_UNSET".into());
    let err = Device::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, HsmError::PinSource { .. }), "{err}");
    cfg.pin = PinSource::File(t.dir.path().join("no-such-file"));
    assert!(matches!(
        Device::open(cfg).unwrap_err(),
        HsmError::PinSource { .. }
    ));
}

#[test]
fn missing_module_unknown_label_and_uninitialised_token_are_clear_errors() {
    let t = tokens(&["a"]);
    let mut cfg = config(&t, "a", 2);
    cfg.module = PathBuf::from("/nonexistent/libpkcs11.so");
    let err = Device::open(cfg).unwrap_err();
    assert!(matches!(err, HsmError::ModuleNotFound(_)), "{err}");

    let err = Device::open(config(&t, "nope", 2)).unwrap_err();
    assert!(matches!(err, HsmError::TokenNotFound { .. }), "{err}");
    assert!(err.to_string().contains("uninitialised"), "{err}");

    // Both modules offer one free, uninitialised slot (kryoptic: as configured by `backend`).
    let ctx = load_module(&t.module).unwrap();
    let free = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
        .unwrap();
    let mut cfg = config(&t, "a", 2);
    cfg.token = TokenSelector::Slot(free.id());
    let err = Device::open(cfg).unwrap_err();
    assert!(matches!(err, HsmError::TokenNotInitialized { .. }), "{err}");
}

#[test]
fn missing_custody_key_is_reported_before_any_use() {
    let t = tokens(&["a"]);
    let device = Device::open(config(&t, "a", 2)).unwrap();
    let err = device.encrypt(&[0u8; 32], b"x").unwrap_err();
    assert!(matches!(err, HsmError::CustodyKeyMissing { .. }), "{err}");
    assert!(err.to_string().contains("device init"));
}

#[test]
fn pool_never_exceeds_max_sessions_with_64_concurrent_users() {
    let t = tokens(&["a"]);
    let device = Arc::new(ready_device(&t, "a", 4));
    let envelope = device.encrypt(&[3u8; 32], b"aad").unwrap();
    // Contention as a state, not a race against how fast the token decrypts (kryoptic's
    // session copy takes microseconds): operations wait with their sessions until every
    // session is taken, then go.
    device.hold(true);
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let device = device.clone();
            let envelope = envelope.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[3u8; 32]);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while device.pool_stats().in_use < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            device.pool_stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    device.hold(false);
    for t in threads {
        t.join().unwrap();
    }
    let stats = device.pool_stats();
    assert!(stats.peak_in_use <= 4, "{stats:?}");
    assert!(
        stats.peak_in_use >= 2,
        "the pool was actually contended: {stats:?}"
    );
    assert!(stats.opened <= 4, "{stats:?}");
    assert_eq!(stats.in_use, 0);
}

/// Close every session of the slot behind the pool's back, through the module's own function
/// list, as a token reset or a removed device would.
#[allow(unsafe_code)]
fn close_all_sessions_behind_the_pools_back(module: &Path, slot: u64) {
    use cryptoki_sys::{CKR_OK, CK_FUNCTION_LIST_PTR, CK_RV};
    // SAFETY: the module is already loaded and initialised in this process; dlopen returns the
    // same instance, and C_CloseAllSessions takes only a slot id.
    unsafe {
        let lib = libloading::Library::new(module).unwrap();
        let get: libloading::Symbol<unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV> =
            lib.get(b"C_GetFunctionList").unwrap();
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        assert_eq!(get(&mut list), CKR_OK);
        let close_all = (*list).C_CloseAllSessions.unwrap();
        assert_eq!(close_all(slot as _), CKR_OK);
        std::mem::forget(lib);
    }
}

#[test]
fn sessions_closed_under_the_pool_are_replaced_transparently() {
    let t = tokens(&["a"]);
    let device = Arc::new(ready_device(&t, "a", 4));
    let envelope = device.encrypt(&[5u8; 32], b"aad").unwrap();
    // Fill the pool with several idle sessions.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10 {
                    device.decrypt(&envelope, b"aad").unwrap();
                }
            });
        }
    });
    let before = device.pool_stats();
    let slot = device.token_summary().unwrap().slot;
    close_all_sessions_behind_the_pools_back(&t.module, slot);

    // Every later operation succeeds, after re-opening and logging in again.
    for _ in 0..20 {
        assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[5u8; 32]);
    }
    device.check().unwrap();
    let after = device.pool_stats();
    assert!(after.discarded >= 1, "{after:?}");
    assert!(after.opened > before.opened, "{before:?} -> {after:?}");
    assert!(after.peak_in_use <= 4);
}

#[test]
fn a_disabled_device_refuses_work_and_recovers_when_enabled() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let envelope = device.encrypt(&[2u8; 32], b"aad").unwrap();
    device.set_enabled(false);
    let err = device.decrypt(&envelope, b"aad").unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    device.set_enabled(true);
    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[2u8; 32]);
}

#[test]
fn the_tokens_come_from_the_selected_module() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let summary = device.token_summary().unwrap();
    let backend = Backend::selected();
    assert!(
        summary.manufacturer.to_lowercase().contains(backend.name()),
        "{backend:?} selected, token made by {summary:?}"
    );
    assert_eq!(summary.label, "a");
}

/// The TEST DOUBLE `pkcs11-token-double` (a module that forwards to the selected real one and
/// chooses the AES-GCM IV itself, as CloudHSM and Luna in FIPS mode do): a device configuration
/// that loads its library, built next to this test binary.
fn token_double(t: &Tokens, mode: &str) -> DeviceConfig {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let library = deps.join(pkcs11_token_double::LIBRARY_FILE);
    assert!(library.is_file(), "{}: not built", library.display());
    std::env::set_var(pkcs11_token_double::MODULE_ENV, &t.module);
    std::env::set_var(pkcs11_token_double::MODE_ENV, mode);
    let mut cfg = config(t, "a", 2);
    cfg.module = library;
    cfg
}

/// Encryptions and decryptions the double has seen.
#[allow(unsafe_code)]
fn token_double_counts(library: &Path) -> (u64, u64) {
    // SAFETY: the library is already loaded (dlopen returns the same instance); the function
    // writes two u64 through the pointers given.
    unsafe {
        let lib = libloading::Library::new(library).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(*mut u64, *mut u64)> =
            lib.get(b"token_double_counts").unwrap();
        let (mut e, mut d) = (0, 0);
        f(&mut e, &mut d);
        (e, d)
    }
}

#[test]
fn an_iv_chosen_by_the_token_is_the_one_stored_and_every_new_envelope_was_opened() {
    let t = tokens(&["a"]);
    ready_device(&t, "a", 2);
    let cfg = token_double(&t, "token-iv");
    let library = cfg.module.clone();
    let double = Device::open(cfg).unwrap();
    let real = Device::open(config(&t, "a", 2)).unwrap();
    for i in 0..16u8 {
        let secret = [i; 32];
        let before = token_double_counts(&library);
        let envelope = double.encrypt(&secret, b"aad").unwrap();
        let after = token_double_counts(&library);
        // The stored IV is the token's: the envelope opens on the real token, without the double.
        let opened = real.decrypt(&envelope, b"aad");
        assert!(opened.is_ok(), "envelope {i} does not open: {opened:?}");
        assert_eq!(&opened.unwrap()[..], &secret);
        assert_eq!(after.0 - before.0, 1, "one encryption");
        assert_eq!(
            after.1 - before.1,
            1,
            "the new envelope was opened once before it was returned"
        );
    }
}

#[test]
fn an_envelope_that_does_not_open_is_never_returned() {
    let t = tokens(&["a"]);
    ready_device(&t, "a", 2);
    let double = Device::open(token_double(&t, "corrupt")).unwrap();
    let err = double.encrypt(&[4u8; 32], b"aad").unwrap_err();
    assert!(matches!(err, HsmError::SealCheck { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
}

#[test]
fn a_device_whose_token_moved_to_another_slot_is_stale_and_opens_again_in_the_new_slot() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    assert_eq!(device.staleness(), None);
    let old_slot = device.token_summary().unwrap().slot;
    // The token labelled "a" is made again in another slot, and its old slot holds another
    // token (as when tokens are added and removed and the module renumbers its slots).
    device.set_enabled(false);
    let ctx = load_module(&t.module).unwrap();
    ctx.init_token(
        cryptoki::slot::Slot::try_from(old_slot).unwrap(),
        &SecretString::from(SO_PIN.to_owned()),
        "z",
    )
    .unwrap();
    assert!(init_soft_token(
        &t.module,
        "a",
        &SecretString::from(SO_PIN.to_owned()),
        &SecretString::from(PIN.to_owned()),
    )
    .unwrap());
    let why = device.staleness().expect("the device is stale");
    assert!(why.contains("is now in slot"), "{why}");

    let again = Device::open(config(&t, "a", 2)).unwrap();
    assert_ne!(again.token_summary().unwrap().slot, old_slot);
    assert_eq!(again.token_summary().unwrap().label, "a");
    assert_eq!(again.staleness(), None);
}

#[test]
fn a_rejected_pin_makes_the_device_stale_and_opens_again_once_the_pin_file_is_fixed() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let envelope = device.encrypt(&[6u8; 32], b"aad").unwrap();
    let slot = device.token_summary().unwrap().slot;
    // The user PIN is changed on the token, and the signer's sessions are gone: its next login
    // uses the old PIN, is rejected, and the device stops trying.
    const NEW_PIN: &str = "rotated-pin-9876";
    let ctx = load_module(&t.module).unwrap();
    let session = ctx
        .open_rw_session(cryptoki::slot::Slot::try_from(slot).unwrap())
        .unwrap();
    session
        .set_pin(
            &SecretString::from(PIN.to_owned()),
            &SecretString::from(NEW_PIN.to_owned()),
        )
        .unwrap();
    drop(session);
    close_all_sessions_behind_the_pools_back(&t.module, slot);
    let err = device.decrypt(&envelope, b"aad").unwrap_err();
    assert!(matches!(err, HsmError::WrongPin { .. }), "{err}");
    let why = device.staleness().expect("the device is stale");
    assert!(why.contains("rejected its PIN"), "{why}");

    // The operator fixes the PIN file: opened again, the device works.
    std::fs::write(t.dir.path().join("pin"), format!("{NEW_PIN}\n")).unwrap();
    let again = Device::open(config(&t, "a", 2)).unwrap();
    assert_eq!(again.staleness(), None);
    assert_eq!(&again.decrypt(&envelope, b"aad").unwrap()[..], &[6u8; 32]);
}

/// A decryption that cannot start (`C_DecryptInit` refused: here the application's login was
/// dropped behind the pool's back) is the token's error, never reported as a tampered envelope:
/// an operator told "tampered" would go looking for an attacker in the key files. SoftHSM
/// answers as for a lost session, so the device logs in again and the envelope opens; kryoptic
/// answers CKR_GENERAL_ERROR, which the device reports, naming the call.
#[test]
fn a_decryption_that_cannot_start_is_not_called_tampering() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let envelope = device.encrypt(&[8u8; 32], b"aad").unwrap();
    let slot = device.token_summary().unwrap().slot;
    let ctx = load_module(&t.module).unwrap();
    let session = ctx
        .open_ro_session(cryptoki::slot::Slot::try_from(slot).unwrap())
        .unwrap();
    session.logout().unwrap();
    drop(session);
    match device.decrypt(&envelope, b"aad") {
        Ok(plain) => assert_eq!(&plain[..], &[8u8; 32]),
        Err(e) => {
            assert!(!matches!(e, HsmError::Integrity { .. }), "{e}");
            assert!(e.to_string().contains("DecryptInit"), "{e}");
        }
    }
    // A tampered envelope still is one.
    let mut bad = envelope.clone();
    bad.ciphertext[0] ^= 1;
    let mut fresh = Device::open(config(&t, "a", 2)).unwrap();
    let err = fresh.decrypt(&bad, b"aad").unwrap_err();
    assert!(matches!(err, HsmError::Integrity { .. }), "{err}");
    fresh = Device::open(config(&t, "a", 2)).unwrap();
    assert_eq!(&fresh.decrypt(&envelope, b"aad").unwrap()[..], &[8u8; 32]);
}

/// A logged-in session of this process on `label`'s token, beside the device's own (the module
/// is initialised once per process, so it sees the device's session objects).
fn side_session(t: &Tokens, device: &Device) -> cryptoki::session::Session {
    let ctx = load_module(&t.module).unwrap();
    let slot = cryptoki::slot::Slot::try_from(device.token_summary().unwrap().slot).unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(
        cryptoki::session::UserType::User,
        Some(&SecretString::from(PIN.to_owned())),
    ) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session
}

/// The custody key objects the token holds for this process: (handle, `CKA_TOKEN`).
fn custody_objects(
    session: &cryptoki::session::Session,
) -> Vec<(cryptoki::object::ObjectHandle, bool)> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(DEFAULT_CUSTODY_KEY_LABEL.as_bytes().to_vec()),
        ])
        .unwrap();
    found
        .into_iter()
        .map(|h| {
            let attrs = session.get_attributes(h, &[AttributeType::Token]).unwrap();
            let token = attrs.iter().any(|a| matches!(a, Attribute::Token(true)));
            (h, token)
        })
        .collect()
}

#[test]
fn decryption_uses_a_session_copy_inside_the_token_that_is_as_protected_as_the_original() {
    use cryptoki::mechanism::{aead::GcmParams, Mechanism};
    use cryptoki::object::{Attribute, AttributeType};
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 2);
    let envelope = device.encrypt(&[9u8; 32], b"aad").unwrap();
    let side = side_session(&t, &device);
    let objects = custody_objects(&side);
    assert_eq!(
        objects.len(),
        2,
        "the token key and one session copy: {objects:?}"
    );
    let copy = objects
        .iter()
        .find(|(_, token)| !token)
        .expect("a session object")
        .0;
    // As protected as the token object: sensitive, never extractable, its value unreadable.
    let attrs = side
        .get_attributes(
            copy,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    let value = side.get_attributes(copy, &[AttributeType::Value]);
    assert!(
        !matches!(&value, Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "CKA_VALUE of the copy must not be readable: {value:?}"
    );
    // The same key: it opens the device's envelope.
    let mut iv = envelope.iv;
    let opened = side
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap()),
            copy,
            &envelope.ciphertext,
        )
        .unwrap();
    assert_eq!(opened, vec![9u8; 32]);

    // The device decrypts with it: destroyed behind its back, the next decryption fails once
    // as a lost handle (a session discarded), is retried, and a new copy serves it.
    let before = device.pool_stats();
    side.destroy_object(copy).unwrap();
    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[9u8; 32]);
    assert_eq!(device.pool_stats().discarded, before.discarded + 1);
    let objects = custody_objects(&side);
    assert_eq!(
        objects.iter().filter(|(_, token)| !token).count(),
        1,
        "{objects:?}"
    );
    assert_eq!(device.op_counts().1, 0, "no operation failed");
}

#[test]
fn without_the_session_copy_or_when_the_token_refuses_it_the_token_object_decrypts() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    // Turned off: no copy is made.
    let t = tokens(&["a"]);
    let mut cfg = config(&t, "a", 2);
    cfg.session_copy = false;
    let device = Device::open(cfg).unwrap();
    assert!(device.ensure_custody_key().unwrap());
    let envelope = device.encrypt(&[3u8; 32], b"aad").unwrap();
    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[3u8; 32]);
    let side = side_session(&t, &device);
    assert_eq!(custody_objects(&side).len(), 1);
    drop((side, device));

    // A custody key the token may not copy (CKA_COPYABLE false, as an HSM's policy may make
    // it): the copy is refused, and the token object does the work.
    let t = tokens(&["b"]);
    let cfg = config(&t, "b", 2);
    let device = Device::open(cfg).unwrap();
    let side = side_session(&t, &device);
    side.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(DEFAULT_CUSTODY_KEY_LABEL.as_bytes().to_vec()),
        ],
    )
    .unwrap();
    assert!(!device.ensure_custody_key().unwrap(), "ours is found");
    let envelope = device.encrypt(&[4u8; 32], b"aad").unwrap();
    assert_eq!(&device.decrypt(&envelope, b"aad").unwrap()[..], &[4u8; 32]);
    let objects = custody_objects(&side);
    assert!(
        objects.len() == 1 && objects[0].1,
        "the token object alone: {objects:?}"
    );
    assert_eq!(device.op_counts().1, 0);
}

#[test]
fn many_threads_decrypt_after_token_resets_and_one_session_copy_is_left() {
    let t = tokens(&["a"]);
    let device = ready_device(&t, "a", 8);
    let envelope = device.encrypt(&[6u8; 32], b"aad").unwrap();
    let slot = device.token_summary().unwrap().slot;
    for round in 0..4 {
        if round > 0 {
            // A token reset between rounds (every session closed, the copy's among them; not
            // while an operation runs: the modules do not survive that race themselves). The
            // round's eight threads then all meet dead sessions at once.
            close_all_sessions_behind_the_pools_back(&t.module, slot);
        }
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..25 {
                        let opened = device.decrypt(&envelope, b"aad").unwrap();
                        assert_eq!(&opened[..], &[6u8; 32]);
                    }
                });
            }
        });
    }
    assert_eq!(
        device.op_counts(),
        (4 * 8 * 25 + 1 + 1, 0),
        "every decryption succeeded"
    );
    assert!(
        device.pool_stats().discarded >= 3,
        "{:?}",
        device.pool_stats()
    );
    // Each reset's copy went with its session; the last one made is the only one left.
    let side = side_session(&t, &device);
    let objects = custody_objects(&side);
    assert_eq!(
        objects.iter().filter(|(_, token)| !token).count(),
        1,
        "{objects:?}"
    );
}
