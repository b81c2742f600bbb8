//! `/reload` opens a device again when the one it holds no longer stands for its token (issue
//! 15, finding 11). The token's user PIN is changed behind the signer's back and its sessions
//! are closed, as when an HSM administrator rotates the PIN and the token restarts: the signer's
//! next login is rejected and the device stops trying (so that it never locks the token).
//! Before the fix a reload kept that device, latched, for good; now a reload with the PIN file
//! still old fails and says why, and once the operator fixes the file a reload opens the device
//! again and blocks sign.
//!
//! In process: the real router, reload handler and transport on a loopback port, on a real
//! token, because the change must happen inside the signer's own PKCS#11 module instance
//! (another process's change is not seen by a running SoftHSM, and that is what a test
//! outside the process could make).

mod common;

use std::time::Duration;

use common::{blst_signature_of, request_at, request_shapes, Signer};
use hsm_signer::api::auth::ApiToken;
use hsm_signer::api::{router, transport, AppState};
use hsm_signer::consensus::{Network, Preset, SignRequest};
use hsm_signer::keys::KeyStore;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;

/// A Capella BLOCK_V2 at `slot`.
fn block(slot: u64) -> Value {
    let (_, _, request) = request_shapes()
        .into_iter()
        .find(|(fork, kind, _)| fork == "capella" && kind == "BLOCK_V2")
        .expect("a capella BLOCK_V2 fixture");
    request_at(&request, slot, 32)
}

struct InProcess {
    base: String,
    token: String,
    http: Client,
    network: Network,
    _rt: tokio::runtime::Runtime,
}

impl InProcess {
    fn sign(&self, slot: u64) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/api/v1/eth2/sign/{}",
                self.base,
                common::FIXTURE_PK
            ))
            .json(&block(slot))
            .send()
            .unwrap();
        (resp.status(), resp.json().unwrap_or(Value::Null))
    }

    /// Signed, with the signature blst makes over our own signing root.
    fn assert_signs(&self, slot: u64) {
        let (status, body) = self.sign(slot);
        assert_eq!(status, StatusCode::OK, "slot {slot}: {body}");
        let root = SignRequest::from_json(block(slot).to_string().as_bytes(), Preset::Mainnet)
            .unwrap()
            .signing_root(&self.network)
            .unwrap();
        assert_eq!(
            body["signature"].as_str(),
            Some(blst_signature_of(root.as_bytes()).as_str())
        );
    }

    /// `POST /reload`, then its final status.
    fn reload(&self) -> Value {
        common::reload_and_wait(&self.base, &self.token)
    }
}

/// Close every session of the application on `slot` (its login goes with them), as a token
/// restart does, without the signer's session pool knowing.
fn close_all_sessions_behind_the_signers_back(module: &std::path::Path, slot: u64) {
    use cryptoki_sys::{CKR_OK, CK_FUNCTION_LIST_PTR, CK_RV};
    // SAFETY: the module is already loaded and initialised in this process (the signer's
    // devices); dlopen returns the same instance, and C_CloseAllSessions takes only a slot id.
    unsafe {
        let lib = libloading::Library::new(module).unwrap();
        let get: libloading::Symbol<unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV> =
            lib.get(b"C_GetFunctionList").unwrap();
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        assert_eq!(get(&mut list), CKR_OK);
        let close_all = (*list).C_CloseAllSessions.unwrap();
        assert_eq!(close_all(slot as _), CKR_OK);
        // The module stays loaded for the process, as the signer's devices need it.
        std::mem::forget(lib);
    }
}

#[test]
fn a_device_whose_pin_was_rejected_is_opened_again_by_reload_once_the_pin_file_is_fixed() {
    let signer = Signer::with_fixture_key();
    let (config, devices) = signer.open();
    let keys = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let (token, _) = ApiToken::load_or_create(&signer.data_dir().join("reload-token.txt")).unwrap();
    let bearer = std::fs::read_to_string(signer.data_dir().join("reload-token.txt"))
        .unwrap()
        .trim()
        .to_owned();
    let device = devices.get(&config.default_device).unwrap().clone();
    let dc = device.config().clone();
    let hsm::PinSource::File(pin_file) = dc.pin.clone() else {
        panic!("the fixture's device reads its PIN from a file");
    };
    let slot = device.token_summary().unwrap().slot;
    let network = Network::preset("mainnet").unwrap();

    let mut state = AppState::serving(hsm_signer::app::Signer::new(
        config.clone(),
        network.clone(),
        (devices, Default::default()),
        keys,
        Vec::new(),
        None,
    ))
    .with_api_token(token);
    state.clock = None;
    state.network_check = false;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let metrics = state.metrics.clone();
    let app = router(state);
    rt.spawn(transport::serve(
        listener,
        None,
        app,
        transport::Limits::default(),
        metrics,
        std::future::pending(),
    ));
    let signer_http = InProcess {
        base,
        token: bearer,
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        network,
        _rt: rt,
    };
    signer_http.assert_signs(1);

    // The PIN is rotated on the token, and the login every session shared is dropped.
    let old_pin = std::fs::read_to_string(&pin_file)
        .unwrap()
        .trim()
        .to_owned();
    let new_pin = format!("{old_pin}-rotated");
    let ctx = hsm::load_module(&dc.module).unwrap();
    let session = ctx
        .open_rw_session(cryptoki::slot::Slot::try_from(slot).unwrap())
        .unwrap();
    session
        .set_pin(
            &SecretString::from(old_pin.clone()),
            &SecretString::from(new_pin.clone()),
        )
        .unwrap();
    drop(session);
    close_all_sessions_behind_the_signers_back(&dc.module, slot);

    // The signer's next login is rejected: the device is down and stays latched (no retry
    // that could lock the token), and nothing signs.
    let (status, body) = signer_http.sign(2);
    assert_ne!(status, StatusCode::OK, "{body}");
    let (status, body) = signer_http.sign(3);
    assert_ne!(status, StatusCode::OK, "{body}");
    let why = device.staleness().expect("the device is stale");
    assert!(why.contains("rejected its PIN"), "{why}");

    // A reload with the PIN file still old: the device is opened again, its login is refused
    // again, the reload fails naming the device and its PIN, and nothing changes.
    let st = signer_http.reload();
    assert_eq!(st["status"], "failed", "{st}");
    let err = st["lastError"].as_str().unwrap_or_default();
    assert!(
        err.contains(&dc.name) && err.to_lowercase().contains("pin"),
        "{err}"
    );
    assert!(!err.contains(&old_pin) && !err.contains(&new_pin), "{err}");
    let (status, _) = signer_http.sign(4);
    assert_ne!(status, StatusCode::OK);

    // The operator writes the new PIN to the file: the reload opens the device again, and
    // blocks sign.
    std::fs::write(&pin_file, format!("{new_pin}\n")).unwrap();
    let st = signer_http.reload();
    assert_eq!(st["status"], "completed", "{st}");
    signer_http.assert_signs(5);
    signer_http.assert_signs(6);
    // The device the signer started with is still the stale one: the reload replaced it.
    assert!(device.staleness().is_some());
}
