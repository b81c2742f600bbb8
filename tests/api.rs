//! The Web3Signer eth2 API over HTTP: the real binary on SoftHSM tokens, every endpoint, both
//! response content types, every error status, and every oracle fixture signed through HTTP, on
//! a mainnet-preset network and on a minimal-preset one.

mod common;

use std::path::PathBuf;

use common::{blst_signature, signing_fixtures, Server, Signer};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The oracle fixtures' key is the EIP-2335 vectors' key: import it and serve.
fn serve_fixture_key() -> (Signer, Server, String) {
    let s = Signer::with_fixture_key();
    // Every type is signed, voluntary exits too (off unless the policy enables them).
    s.enable_exits();
    // The fixtures' slots are random or historical and each case has its own genesis validators
    // root: replay them without slot deadlines, network check or slashing protection (each
    // tested elsewhere).
    let server = Server::start(
        &s,
        &[
            "--no-slot-deadlines",
            "--no-slashing-protection",
            "--no-network-check",
        ],
    );
    (s, server, common::FIXTURE_PK.to_owned())
}

fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn first_case(kind: &str) -> Value {
    signing_fixtures()
        .1
        .into_iter()
        .find(|(_, c)| c["type"] == kind)
        .map(|(_, c)| c)
        .unwrap()
}

/// [`first_case`] made a mainnet request (mainnet's genesis validators root; the supplied root,
/// now stale, removed), for a signer that checks the network.
fn mainnet_case(kind: &str) -> Value {
    let mut case = first_case(kind);
    case["request"]["fork_info"]["genesis_validators_root"] =
        json!("0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95");
    let o = case["request"].as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    case
}

/// Signs every case over HTTP; each signature must be the oracle's and blst's. Returns the
/// request types exercised.
fn sign_every_case(
    server: &Server,
    pk: &str,
    cases: &[(String, Value)],
) -> std::collections::BTreeSet<String> {
    let http = client();
    let mut kinds = std::collections::BTreeSet::new();
    for (fork, case) in cases {
        let resp = http
            .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
            .header("Accept", "application/json")
            .json(&case["request"])
            .send()
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().unwrap();
        assert_eq!(status, StatusCode::OK, "{fork} {}: {body}", case["name"]);
        let got = body["signature"].as_str().unwrap();
        assert_eq!(
            got,
            case["signature"].as_str().unwrap(),
            "{fork} {}",
            case["name"]
        );
        // Differential: blst signing the oracle's root with the same key gives the same bytes.
        assert_eq!(got, blst_signature(case), "{fork} {}", case["name"]);
        kinds.insert(case["type"].as_str().unwrap().to_owned());
    }
    kinds
}

/// Every Gloas oracle case of the five v1.4.0 types, sent in each shape clients use today
/// (Lighthouse's and older Lodestar's type names and keys, unwrapped bodies, numbers): the same
/// signature as the v1.4.0 form, the oracle's.
#[test]
fn gloas_aliases_sign_identically_to_the_spec_names() {
    let (_s, server, pk) = serve_fixture_key();
    let (_, cases) = signing_fixtures();
    let mut aliased = Vec::new();
    let mut forms = std::collections::BTreeSet::new();
    for (fork, case) in cases.iter().filter(|(f, _)| f == "gloas") {
        for (who, request) in common::gloas_alias_forms(&case["request"]) {
            let mut c = case.clone();
            c["request"] = request;
            c["name"] = json!(format!("{} as {who}", case["name"].as_str().unwrap()));
            forms.insert(format!("{} {who}", case["type"].as_str().unwrap()));
            aliased.push((fork.clone(), c));
        }
    }
    sign_every_case(&server, &pk, &aliased);
    eprintln!("{} alias requests signed, forms: {forms:#?}", aliased.len());
    assert_eq!(forms.len(), 5 + 3 + 2 + 1, "{forms:#?}");
}

#[test]
fn every_oracle_case_signs_over_http_identically_to_the_oracle_and_to_blst() {
    let (_s, server, pk) = serve_fixture_key();
    let (_, cases) = signing_fixtures();
    let kinds = sign_every_case(&server, &pk, &cases);
    assert_eq!(
        kinds.len(),
        hsm_signer::consensus::MessageType::ALL.len(),
        "every request type was exercised: {kinds:?}"
    );
    assert!(cases.len() >= 300);
}

/// A signer started with a minimal-preset `config.yaml` (the spec's own, with the fixtures' fork
/// epochs; without the network check, as each case has a root of its own) signs every minimal-preset oracle case as the oracle does, and refuses a
/// mainnet-sized sync contribution, saying which preset's size it is not.
#[test]
fn every_minimal_preset_oracle_case_signs_over_http_on_a_minimal_network() {
    let s = Signer::with_fixture_key();
    s.enable_exits();
    let config = common::fixture(common::MINIMAL_NETWORK_CONFIG);
    let server = Server::start(
        &s,
        &[
            "--no-slot-deadlines",
            "--no-slashing-protection",
            // Each case has its own genesis validators root.
            "--no-network-check",
            "--network",
            config.to_str().unwrap(),
        ],
    );
    let pk = common::FIXTURE_PK;
    let (_, cases) = common::minimal_signing_fixtures();
    let kinds = sign_every_case(&server, pk, &cases);
    assert_eq!(
        kinds.len(),
        hsm_signer::consensus::MessageType::ALL.len(),
        "every request type was exercised: {kinds:?}"
    );
    assert!(cases.len() >= 300);

    let mainnet_sized = first_case("SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF");
    let resp = client()
        .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
        .json(&mainnet_sized["request"])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let message = resp.json::<Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(
            "contribution.aggregation_bits: 128 bits, the minimal preset's \
             SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT is 8"
        ),
        "{message}"
    );
}

#[test]
fn supplied_signing_root_in_either_spelling_is_checked() {
    let (_s, server, pk) = serve_fixture_key();
    let case = first_case("ATTESTATION");
    let http = client();
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));
    for field in ["signingRoot", "signing_root"] {
        let mut good = case["request"].clone();
        good[field] = case["signing_root"].clone();
        let resp = http.post(&url).json(&good).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{field}");

        let mut bad = case["request"].clone();
        bad[field] = json!(format!("0x{}", "11".repeat(32)));
        let resp = http.post(&url).json(&bad).send().unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{field}");
        let body: Value = resp.json().unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("signing root mismatch"),
            "{body}"
        );
        assert_eq!(body["code"], 400);
    }
}

#[test]
fn response_content_type_follows_accept() {
    let (_s, server, pk) = serve_fixture_key();
    let case = first_case("RANDAO_REVEAL");
    let http = client();
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));
    let expected = case["signature"].as_str().unwrap();
    for accept in ["application/json", "*/*"] {
        let resp = http
            .post(&url)
            .header("Accept", accept)
            .json(&case["request"])
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(resp.json::<Value>().unwrap()["signature"], expected);
    }
    let resp = http
        .post(&url)
        .header("Accept", "text/plain")
        .json(&case["request"])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().unwrap(), expected);
}

#[test]
fn error_statuses_follow_the_contract() {
    let (s, server, pk) = serve_fixture_key();
    let case = first_case("ATTESTATION");
    let http = client();
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));

    // 400: malformed JSON, wrong shape, unknown type, bad identifier.
    for body in [
        "{not json",
        "[]",
        "{\"type\":\"NOPE\"}",
        "{\"type\":\"ATTESTATION\"}",
        "",
    ] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let err: Value = resp.json().unwrap();
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    let resp = http
        .post(server.url("/api/v1/eth2/sign/0x1234"))
        .json(&case["request"])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // 404: a well-formed key we do not hold.
    let other = format!("0x{}", "a".repeat(96));
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{other}")))
        .json(&case["request"])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().unwrap()["code"], 404);

    // 413: a body over the limit is refused before parsing. The server then closes that
    // connection unread, so the request gets a client of its own.
    let huge = format!(
        "{{\"type\":\"ATTESTATION\",\"pad\":\"{}\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // 503 with Retry-After: the key's device is not available to this signer. Write a copy of
    // the key file that claims a device this signer does not have, then reload.
    let keys_dir = s.data_dir().join("keys");
    let original = std::fs::read_to_string(keys_dir.join(format!("{pk}.json"))).unwrap();
    let mut record: Value = serde_json::from_str(&original).unwrap();
    let sk2 = hsm_signer::bls::random_secret_key().unwrap();
    let pk2 = format!("0x{}", hex::encode(hsm_signer::bls::public_key_bytes(&sk2)));
    record["pubkey"] = json!(pk2);
    record["shares"][0]["pubkey"] = json!(pk2);
    record["shares"][0]["device"] = json!("hsm-in-another-rack");
    std::fs::write(keys_dir.join(format!("{pk2}.json")), record.to_string()).unwrap();
    server.reload_and_wait();
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{pk2}")))
        .json(&case["request"])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));

    // The server is still healthy for good requests after all of that.
    let resp = http.post(&url).json(&case["request"]).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn status_endpoints_and_reload() {
    let (s, server, pk) = serve_fixture_key();
    let http = client();

    let resp = http.get(server.url("/upcheck")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().unwrap(), "OK");

    let resp = http.get(server.url("/healthcheck")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let health: Value = resp.json().unwrap();
    assert_eq!(health["status"], "UP");
    assert_eq!(health["outcome"], "UP");
    let checks = health["checks"].as_array().unwrap();
    assert_eq!(
        checks
            .iter()
            .filter(|c| c["id"].as_str().unwrap().starts_with("device:"))
            .count(),
        3
    );
    assert!(checks.iter().all(|c| c["status"] == "UP"), "{health}");

    let keys: Vec<String> = http
        .get(server.url("/api/v1/eth2/publicKeys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(keys, vec![pk.clone()]);

    let st: Value = http
        .get(server.url("/reload"))
        .bearer_auth(server.token())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(st["status"], "idle");

    // Keys added on disk while serving appear after a reload; the old key still signs.
    let added = s.ok(&["keys", "generate", "--count", "2", "--device", "softhsm-2"]);
    let st = server.reload_and_wait();
    assert_eq!(st["status"], "completed", "{st}");
    assert!(st["lastOperationTime"].as_str().unwrap().ends_with('Z'));
    let mut keys: Vec<String> = http
        .get(server.url("/api/v1/eth2/publicKeys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    keys.sort();
    let mut expected: Vec<String> = added
        .lines()
        .map(str::to_owned)
        .chain([pk.clone()])
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    let case = first_case("AGGREGATION_SLOT");
    for key in &keys {
        let resp = http
            .post(server.url(&format!("/api/v1/eth2/sign/{key}")))
            .json(&case["request"])
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{key}");
    }

    // A broken key file makes the reload complete with errors and the health check say so.
    std::fs::write(
        s.data_dir()
            .join(format!("keys/0x{}.json", "cd".repeat(48))),
        "{",
    )
    .unwrap();
    let st = server.reload_and_wait();
    assert_eq!(st["status"], "completed_with_errors", "{st}");
    assert!(st["lastError"]
        .as_str()
        .unwrap()
        .contains("1 signer loading error"));
    let resp = http.get(server.url("/healthcheck")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A configuration over the embedded tokens with one slow, single-session device and the given
/// `[scheduler]` table (the tokens must exist: run `device init` first).
fn slow_device_config(s: &Signer, scheduler: &str) {
    let soft = s.data_dir().join("softhsm");
    let mut text = format!("default_device = \"softhsm-1\"\n[scheduler]\n{scheduler}\n");
    for i in 1..=3 {
        text += &format!(
            "[[device]]\nname = \"softhsm-{i}\"\ntoken_label = \"hsm-signer-{i}\"\npin_file = \"{}\"\nmodule_config = \"{}\"\n{}\n",
            soft.join(format!("softhsm-{i}.pin")).display(),
            soft.join("softhsm2.conf").display(),
            if i == 1 { "max_sessions = 1\nsimulated_latency_ms = 1000" } else { "" }
        );
    }
    std::fs::write(s.data_dir().join("hsm-signer.toml"), text).unwrap();
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let (s, server, pk) = serve_fixture_key();
    drop(server);
    slow_device_config(&s, "queue_capacity = 1\nslot_deadlines = false");
    let server = Server::start(&s, &[]);
    let case = mainnet_case("ATTESTATION");
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, body) = (url.clone(), case["request"].clone());
            std::thread::spawn(move || {
                let resp = client().post(&url).json(&body).send().unwrap();
                (resp.status(), resp.headers().get("retry-after").cloned())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused: Vec<_> = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!refused.is_empty(), "{results:?}");
    assert!(
        refused.iter().all(|(_, ra)| ra.is_some()),
        "every 503 carries Retry-After"
    );
    assert!(
        results.iter().any(|(st, _)| *st == StatusCode::OK),
        "{results:?}"
    );
    assert!(server.metric("signer_shed_overload_total{class=\"attestation\"}") >= 1.0);
}

#[test]
fn a_client_that_hangs_up_frees_its_place() {
    let (s, server, pk) = serve_fixture_key();
    drop(server);
    slow_device_config(&s, "slot_deadlines = false");
    let server = Server::start(&s, &[]);
    let case = mainnet_case("ATTESTATION");
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));
    let (u, b) = (url.clone(), case["request"].clone());
    let busy = std::thread::spawn(move || client().post(&u).json(&b).send().unwrap().status());
    // Wait for the state "the device's one session is busy" (it stays busy for 1 s).
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.metric("signer_device_sessions_in_use{device=\"softhsm-1\"}") < 1.0 {
        assert!(
            std::time::Instant::now() < limit,
            "the device never got busy"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // This one waits behind the busy session; its client gives up after 300 ms.
    let impatient = Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient.post(&url).json(&case["request"]).send().is_err());
    assert_eq!(busy.join().unwrap(), StatusCode::OK);
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.metric("signer_cancelled_total{class=\"attestation\"}") < 1.0 {
        assert!(
            std::time::Instant::now() < limit,
            "the abandoned request was never cancelled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.metric("signer_queue_waiting_for_device"), 0.0);
    // Exactly one device operation ran: the abandoned request never reached the device.
    assert_eq!(
        server.metric("signer_device_operation_seconds_count{device=\"softhsm-1\"}"),
        1.0
    );
}

/// Mainnet's fork versions, every fork in force from genesis: the fixtures' requests carry them.
const MAINNET_VERSIONS_FROM_GENESIS: &str =
    "ALTAIR_FORK_VERSION: 0x01000000\nALTAIR_FORK_EPOCH: 0\n\
     BELLATRIX_FORK_VERSION: 0x02000000\nBELLATRIX_FORK_EPOCH: 0\n\
     CAPELLA_FORK_VERSION: 0x03000000\nCAPELLA_FORK_EPOCH: 0\n\
     DENEB_FORK_VERSION: 0x04000000\nDENEB_FORK_EPOCH: 0\n\
     ELECTRA_FORK_VERSION: 0x05000000\nELECTRA_FORK_EPOCH: 0\n\
     FULU_FORK_VERSION: 0x06000000\nFULU_FORK_EPOCH: 0\n";

/// A network whose genesis puts "now" `into_slot` seconds into `slot`, with slots of
/// `seconds_per_slot`: its config.yaml, written into the signer's data directory, and its
/// genesis time.
fn network_at(s: &Signer, slot: u64, into_slot: u64, seconds_per_slot: u64) -> (PathBuf, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let genesis = now - slot * seconds_per_slot - into_slot;
    let path = s.data_dir().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "CONFIG_NAME: 'deadline-test'\nPRESET_BASE: 'mainnet'\n\
             GENESIS_FORK_VERSION: 0x00000000\nMIN_GENESIS_TIME: {genesis}\nGENESIS_DELAY: 0\n\
             SECONDS_PER_SLOT: {seconds_per_slot}\n{MAINNET_VERSIONS_FROM_GENESIS}"
        ),
    )
    .unwrap();
    // The root of the requests the helpers make, beside the config (as a devnet ships it).
    std::fs::write(
        s.data_dir().join("genesis_validators_root.txt"),
        common::TEST_GVR,
    )
    .unwrap();
    (path, genesis)
}

fn shape(fork: &str, kind: &str) -> Value {
    common::request_shapes()
        .into_iter()
        .find(|(f, k, _)| f == fork && k == kind)
        .unwrap_or_else(|| panic!("no {fork} {kind} fixture"))
        .2
}

/// (block slots, attestation target epochs) in the signer's slashing database.
fn recorded(s: &Signer) -> (Vec<u64>, Vec<u64>) {
    common::recorded_in(&s.ok(&["slashing", "export", "-"]))
}

#[test]
fn with_the_slot_clock_a_randao_reveal_signs_late_in_its_epoch_and_a_stale_attestation_is_refused()
{
    let s = Signer::with_fixture_key();
    // Now is 5 s into slot 351, the last of epoch 10, with one-minute slots (55 s to spare).
    let (config, genesis) = network_at(&s, 351, 5, 60);
    let server = Server::start(&s, &["--network", config.to_str().unwrap()]);
    let url = server.url(&format!("/api/v1/eth2/sign/{}", common::FIXTURE_PK));
    let http = client();
    let post = |body: &Value| {
        let resp = http.post(&url).json(body).send().unwrap();
        let status = resp.status();
        (status, resp.json::<Value>().unwrap())
    };
    let current = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now - genesis) / 60
    };
    assert_eq!(current(), 351);

    // The epoch's RANDAO reveal, in its last slot: a proposer of that slot needs it now (the
    // first-slot deadline refused it in 31 slots of 32).
    let randao = common::request_at(&shape("deneb", "RANDAO_REVEAL"), 10, 32);
    let (status, body) = post(&randao);
    assert_eq!(status, StatusCode::OK, "{body}");
    // This slot's block and attestation sign, and are recorded.
    let block = common::request_at(&shape("deneb", "BLOCK_V2"), 351, 32);
    assert_eq!(post(&block).0, StatusCode::OK);
    let attestation = shape("deneb", "ATTESTATION");
    assert_eq!(
        post(&common::request_at(&attestation, 351, 32)).0,
        StatusCode::OK
    );
    // An attestation of an epoch before the last is no longer includable: 400, with the reason.
    let (status, body) = post(&common::request_at(&attestation, 5, 32));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().is_empty());
    assert_eq!(
        body["message"].as_str().unwrap(),
        format!(
            "ATTESTATION for slot 5 is past its validity window, which ended 500 ms after slot 64 \
             began (the current slot is {}); nothing was signed",
            current()
        )
    );
    // So is the block of the slot before.
    let (status, body) = post(&common::request_at(&shape("deneb", "BLOCK_V2"), 350, 32));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("BLOCK_V2 for slot 350 is past its validity window, which ended 500 ms after slot 351 began"));
    assert_eq!(
        server.metric("signer_refused_past_window_total{class=\"attestation\"}"),
        1.0
    );
    assert_eq!(
        server.metric("signer_refused_past_window_total{class=\"block\"}"),
        1.0
    );
    // The refused ones never reached a device, and slashing protection recorded neither.
    assert_eq!(server.metric("signer_device_operation_seconds_count"), 3.0);
    // A registration has no window and is signed.
    let (status, _) = post(&first_case("VALIDATOR_REGISTRATION")["request"]);
    assert_eq!(status, StatusCode::OK);
    drop(server);
    let (blocks, targets) = recorded(&s);
    assert_eq!(blocks, vec![351]);
    assert_eq!(targets, vec![10]);
}

#[test]
fn absurd_slots_and_epochs_never_panic_the_signer() {
    let s = Signer::with_fixture_key();
    s.enable_exits();
    let log = s.data_dir().join("server.log");
    // Mainnet: the slot clock is on, and so is slashing protection.
    let server = Server::start_logging_to(&s, &["--network", "mainnet"], &log);
    let url = server.url(&format!("/api/v1/eth2/sign/{}", common::FIXTURE_PK));
    let http = client();
    // Slots and epochs near 2^64, and the first slot whose start overflows u64 seconds.
    let absurd = [u64::MAX, u64::MAX - 1, 1 << 63, u64::MAX / 12 + 1];
    let mut statuses = std::collections::BTreeMap::new();
    for (fork, kind, request) in common::request_shapes() {
        for duty in absurd {
            let body = common::request_at(&request, duty, 32);
            // A panic in the handler would drop the connection: an error here, not a status.
            let resp = http
                .post(&url)
                .json(&body)
                .send()
                .unwrap_or_else(|e| panic!("{fork} {kind} at {duty}: {e}"));
            let status = resp.status();
            let answer: Value = resp.json().unwrap();
            // Nothing this far ahead is past its window. Blocks and attestations are refused
            // as ahead of the slot clock (400), before slashing protection records them. The
            // rest are signed.
            match kind.as_str() {
                // Mainnet schedules no Gloas: a Gloas fork_info is another network's (400).
                _ if fork == "gloas" && body.get("fork_info").is_some() => {
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {answer}");
                    assert!(
                        answer["message"]
                            .as_str()
                            .unwrap()
                            .contains("wrong network"),
                        "{answer}"
                    );
                }
                "BLOCK" | "BLOCK_V2" | "ATTESTATION" => {
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {answer}");
                    assert!(
                        answer["message"]
                            .as_str()
                            .unwrap()
                            .contains("is ahead of the slot clock"),
                        "{answer}"
                    );
                }
                _ => assert_eq!(status, StatusCode::OK, "{fork} {kind} at {duty}: {answer}"),
            }
            *statuses.entry(status.as_u16()).or_insert(0) += 1;
        }
    }
    // Still serving; no thread panicked.
    let (status, _) = {
        let resp = http
            .post(&url)
            .json(&first_case("VALIDATOR_REGISTRATION")["request"])
            .send()
            .unwrap();
        (resp.status(), ())
    };
    assert_eq!(status, StatusCode::OK);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(recorded(&s), (vec![], vec![]), "{statuses:?}");
}

#[test]
fn metrics_expose_queue_waits_signing_latency_sessions_and_shedding() {
    let (_s, server, pk) = serve_fixture_key();
    for kind in ["BLOCK_V2", "ATTESTATION", "VALIDATOR_REGISTRATION"] {
        let case = first_case(kind);
        let resp = client()
            .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
            .json(&case["request"])
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for needle in [
        "signer_queue_wait_seconds_count{class=\"block\"} 1",
        "signer_queue_wait_seconds_count{class=\"attestation\"} 1",
        "signer_queue_wait_seconds_count{class=\"admin\"} 1",
        "signer_signing_seconds_count{type=\"BLOCK_V2\"} 1",
        "signer_signing_seconds_count{type=\"ATTESTATION\"} 1",
        "signer_device_operation_seconds_count{device=\"softhsm-1\"} 3",
        "signer_device_sessions_in_use{device=\"softhsm-1\"} 0",
        "signer_device_sessions_max{device=\"softhsm-1\"} 32",
        "signer_shed_overload_total{class=\"background\"} 0",
        "signer_shed_expired_total{class=\"block\"} 0",
        "signer_cpu_buffer_limit ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// Hardening (issue 15, finding 5): `/healthcheck` is unauthenticated, and each device check
/// takes a session from a device the signer needs: a flood of calls makes one round of checks
/// per 2 s, not one per call, and every caller still gets the devices' health.
#[test]
fn a_healthcheck_flood_checks_each_device_once_per_round_not_once_per_call() {
    let (_s, server, _pk) = serve_fixture_key();
    let started = std::time::Instant::now();
    // Paced at 20 a second from one address (40 at once) since: 120 calls take some 4 s.
    let calls = 8 * 15;
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let http = common::http();
                for _ in 0..calls / 8 {
                    let resp = http.get(server.url("/healthcheck")).send().unwrap();
                    let status = resp.status();
                    let body: Value = resp.json().unwrap();
                    assert_eq!(status, StatusCode::OK, "{body}");
                    assert_eq!(body["checks"][0]["status"], "UP", "{body}");
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(ok.into_inner(), calls);
    let rounds = started.elapsed().as_secs_f64() / 2.0 + 1.0;
    let checks = server.metric("signer_health_device_checks");
    // Three devices per round.
    assert!(
        checks >= 3.0 && checks <= 3.0 * rounds.ceil(),
        "{checks} device checks for {calls} calls in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
