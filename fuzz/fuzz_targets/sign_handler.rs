//! Fuzzes the whole HTTP signing handler, as a client on the signing port reaches it: the real
//! router on a real SoftHSM token holding the EIP-2335 vectors' key, SQLite slashing protection
//! (on tmpfs when there is one), slot deadlines on with a clock the input sets. Nothing may
//! panic (libFuzzer aborts on a panic in any thread), and every answer must be a status the API
//! defines with a JSON body.
//!
//! Input: byte 0 picks the identifier (the key, an unknown key, garbage) and the `Accept`
//! header; bytes 1..3 a signed offset, in seconds, of the clock from the start of the request's
//! duty slot (or from an arbitrary moment when the body does not parse); the rest is the body.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use hsm_signer::api::{router, AppState};
use hsm_signer::config::Config;
use hsm_signer::consensus::{ManualSlotClock, Network, Preset, SignRequest, SlotTiming};
use hsm_signer::devices::{init_devices, Devices};
use hsm_signer::keys::{self, ImportOptions, KeyStore, Progress};
use hsm_signer::slashing::SlashingProtection;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use tower::ServiceExt;

const PUBKEY: &str = "0x9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07";
/// Mainnet's genesis time; slots of 12 s.
const GENESIS: u64 = 1_606_824_023;

struct Harness {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    app: Router,
    clock: ManualSlotClock,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("a temporary directory");
        let config = Config::load(None, dir.path()).expect("the embedded default");
        config.apply_module_environment().expect("SoftHSM's configuration");
        init_devices(&config, None).expect("SoftHSM tokens");
        let devices = Devices::open_all(&config).expect("the tokens open");
        let mut keys = KeyStore::load_strict(&config.keys_dir()).expect("the key store");
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/eip2335");
        let password = std::fs::read_to_string(format!("{fixtures}/password.txt"))
            .expect("the vectors' password");
        keys::import_keystores(
            &mut keys,
            &devices,
            &[format!("{fixtures}/keystore-pbkdf2.json").into()],
            &SecretString::from(password.trim_end_matches('\n').to_owned()),
            &ImportOptions {
                device: config.default_device.clone(),
                progress: Progress::Quiet,
            },
        )
        .expect("the vectors' key imports");
        let network = Network::preset("mainnet").expect("mainnet");
        let slashing = SlashingProtection::open_sqlite(
            &dir.path().join("slashing.sqlite"),
            network.genesis_validators_root,
        )
        .expect("slashing protection");
        let runtime = hsm_signer::scheduler::runtime().expect("a runtime");
        let clock = ManualSlotClock::new(SlotTiming::from_secs(GENESIS, 12));
        let app = {
            let _guard = runtime.enter();
            let mut state = AppState::new(
                config,
                network,
                devices,
                keys,
                Vec::new(),
                Some(slashing),
            );
            state.clock = Some(Arc::new(clock.clone()));
            router(state)
        };
        Harness {
            _dir: dir,
            runtime,
            app,
            clock,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let h = harness();
    let (head, body) = data.split_at(3);
    let offset = i16::from_le_bytes([head[1], head[2]]) as i64;
    // The clock: near the request's duty when it parses, else an arbitrary moment.
    let duty_slot = SignRequest::from_json(body, Preset::Mainnet)
        .ok()
        .and_then(|r| r.validity_window(32).and_then(|w| w.duty.first_slot(32)));
    let base = match duty_slot {
        Some(slot) => slot.saturating_mul(12).saturating_add(GENESIS),
        None => GENESIS + 10_000_000 * 12,
    };
    let now = base.saturating_add_signed(offset);
    h.clock.set_current_time(Duration::from_secs(now.min(u64::MAX / 2)));
    let identifier = match head[0] % 8 {
        0 => "0xnot-a-key",
        1 => "0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
        _ => PUBKEY,
    };
    let accept = ["application/json", "text/plain", "*/*", "text/plain;q=0.1, application/json"]
        [(head[0] / 8 % 4) as usize];
    let request = Request::post(format!("/api/v1/eth2/sign/{identifier}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept)
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let response = h
        .runtime
        .block_on(h.app.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    assert!(
        matches!(
            status,
            StatusCode::OK
                | StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::PRECONDITION_FAILED
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::SERVICE_UNAVAILABLE
        ),
        "status {status}"
    );
    if status != StatusCode::OK {
        let bytes = h
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("a body");
        let answer: serde_json::Value =
            serde_json::from_slice(&bytes).expect("an error body in JSON");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
});
