//! The Keymanager API (`/eth/v1/keystores`) through the real binary on SoftHSM tokens and SQLite:
//! import with slashing history, sign, delete (the history comes back as recorded), a restored key
//! file that must not sign again, an explicit re-import, statuses for duplicates, wrong passwords
//! and unknown keys, 400s that change nothing, and a t-of-n split taken from the configuration.

mod common;

use std::path::PathBuf;

use common::{fixture, mainnet_root, snapshot, Server, Signer};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
const DEPOSIT_PASSWORD: &str = "hsm-signer-test-password";
const KEYSTORES: &str = "/eth/v1/keystores";

fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The deposit CLI's keystore for validator `i` (path `m/12381/3600/<i>/0/0`): (JSON, pubkey).
fn deposit_keystore(i: usize) -> (String, String) {
    let dir = fixture("deposit-cli-100-pbkdf2/validator_keys");
    let path: PathBuf = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("keystore-m_12381_3600_{i}_0_0-"))
        })
        .unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let pk = serde_json::from_str::<Value>(&text).unwrap()["pubkey"]
        .as_str()
        .unwrap()
        .to_owned();
    (text, format!("0x{}", pk.trim_start_matches("0x")))
}

fn template(kind: &str) -> Value {
    common::fixture_request(kind, |_| true)
}

fn attestation(source: u64, target: u64) -> Value {
    let mut a = template("ATTESTATION");
    a["attestation"]["source"]["epoch"] = json!(source.to_string());
    a["attestation"]["target"]["epoch"] = json!(target.to_string());
    a
}

fn hex_root(root: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(root))
}

/// Sign over HTTP; on 200 check the signature with blst against the pubkey and the signing root.
fn sign(http: &Client, server: &Server, pk: &str, body: &Value) -> StatusCode {
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
        .json(body)
        .send()
        .unwrap();
    let status = resp.status();
    let reply: Value = resp.json().unwrap_or(Value::Null);
    if status == StatusCode::OK {
        let sig = hex::decode(
            reply["signature"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
        )
        .unwrap();
        let sig = blst::min_pk::Signature::from_bytes(&sig).unwrap();
        let key = blst::min_pk::PublicKey::key_validate(
            &hex::decode(pk.trim_start_matches("0x")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            sig.verify(
                true,
                &mainnet_root(body),
                hsm_signer::bls::DST,
                &[],
                &key,
                true
            ),
            blst::BLST_ERROR::BLST_SUCCESS,
            "signature of {pk} does not verify"
        );
    }
    status
}

fn keymanager(
    http: &Client,
    server: &Server,
    method: reqwest::Method,
    body: &str,
) -> (StatusCode, Value) {
    let resp = http
        .request(method, server.url(KEYSTORES))
        .bearer_auth(server.token())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn post(http: &Client, server: &Server, body: &Value) -> (StatusCode, Value) {
    keymanager(http, server, reqwest::Method::POST, &body.to_string())
}

fn delete(http: &Client, server: &Server, pubkeys: &[&str]) -> (StatusCode, Value) {
    keymanager(
        http,
        server,
        reqwest::Method::DELETE,
        &json!({ "pubkeys": pubkeys }).to_string(),
    )
}

fn statuses(reply: &Value) -> Vec<String> {
    reply["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {reply}"))
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

fn listed(http: &Client, server: &Server) -> Vec<Value> {
    let reply: Value = http
        .get(server.url(KEYSTORES))
        .bearer_auth(server.token())
        .send()
        .unwrap()
        .json()
        .unwrap();
    reply["data"].as_array().unwrap().clone()
}

fn public_keys(http: &Client, server: &Server) -> Vec<String> {
    http.get(server.url("/api/v1/eth2/publicKeys"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// One validator's history as a canonical value: (blocks, attestations) as sorted tuples.
type History = (
    Vec<(String, Option<String>)>,
    Vec<(String, String, Option<String>)>,
);

/// The data directory's files (see `common::snapshot`) but the SQLite database, whose background
/// checkpointer may rewrite it at any time; what the database holds is checked through the API.
fn files_but_database(s: &Signer) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    snapshot(s.data_dir())
        .into_iter()
        .filter(|(p, _, _)| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("slashing-protection.sqlite")
        })
        .collect()
}

fn history_of(interchange: &str, pk: &str) -> Option<History> {
    let v: Value = serde_json::from_str(interchange).unwrap();
    assert_eq!(v["metadata"]["interchange_format_version"], "5", "{v}");
    let entry = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pubkey"].as_str().unwrap().eq_ignore_ascii_case(pk))?
        .clone();
    let s = |x: &Value| x.as_str().map(str::to_owned);
    let mut blocks: Vec<_> = entry["signed_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (s(&b["slot"]).unwrap(), s(&b["signing_root"])))
        .collect();
    let mut atts: Vec<_> = entry["signed_attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                s(&a["source_epoch"]).unwrap(),
                s(&a["target_epoch"]).unwrap(),
                s(&a["signing_root"]),
            )
        })
        .collect();
    blocks.sort();
    atts.sort();
    Some((blocks, atts))
}

#[test]
fn import_sign_delete_restore_and_reimport_through_the_keymanager_api() {
    let s = Signer::new();
    let mut server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    let (ks_a, pk_a) = deposit_keystore(0);
    let (ks_b, pk_b) = deposit_keystore(1);
    let imported_root = hex_root(&[0x11; 32]);
    let block_root = hex_root(&[0x22; 32]);
    let interchange = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
        "data": [{
            "pubkey": pk_a,
            "signed_blocks": [{"slot": "100", "signing_root": block_root}],
            "signed_attestations": [
                {"source_epoch": "10", "target_epoch": "20", "signing_root": imported_root}
            ]
        }]
    });

    // Without the API token, or with a wrong one, the Keymanager API refuses and imports nothing.
    for token in [None, Some("api-token-0000")] {
        let req = http
            .post(server.url(KEYSTORES))
            .header("content-type", "application/json")
            .body(json!({ "keystores": [ks_a], "passwords": [DEPOSIT_PASSWORD] }).to_string());
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        assert_eq!(req.send().unwrap().status(), StatusCode::UNAUTHORIZED);
        let get = http.get(server.url(KEYSTORES));
        let get = match token {
            Some(t) => get.bearer_auth(t),
            None => get,
        };
        assert_eq!(get.send().unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert!(listed(&http, &server).is_empty());

    // Import two keystores with A's history.
    let (status, reply) = post(
        &http,
        &server,
        &json!({
            "keystores": [ks_a, ks_b],
            "passwords": [DEPOSIT_PASSWORD, DEPOSIT_PASSWORD],
            "slashing_protection": interchange.to_string(),
        }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["imported", "imported"]);

    let list = listed(&http, &server);
    for (pk, path) in [(&pk_a, "m/12381/3600/0/0/0"), (&pk_b, "m/12381/3600/1/0/0")] {
        let entry = list
            .iter()
            .find(|e| e["validating_pubkey"] == json!(pk))
            .unwrap_or_else(|| panic!("{pk} not listed in {list:?}"));
        assert_eq!(entry["derivation_path"], path);
        assert_eq!(entry["readonly"], false);
    }
    let keys = public_keys(&http, &server);
    assert!(keys.contains(&pk_a) && keys.contains(&pk_b), "{keys:?}");

    // Both sign; the imported history makes a surrounding vote slashable.
    let vote = attestation(20, 21);
    assert_eq!(sign(&http, &server, &pk_a, &vote), StatusCode::OK);
    assert_eq!(
        sign(&http, &server, &pk_b, &attestation(3, 4)),
        StatusCode::OK
    );
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(9, 25)),
        StatusCode::PRECONDITION_FAILED,
        "a vote surrounding the imported 10->20 must be refused"
    );

    // Keep a copy of A's key file, then delete A (and a key nobody knows).
    let key_file = s.data_dir().join(format!("keys/{pk_a}.json"));
    let saved = std::fs::read(&key_file).unwrap();
    let unknown = format!("0x{}", "ab".repeat(48));
    let (status, reply) = delete(&http, &server, &[&pk_a, &unknown]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["deleted", "not_found"]);
    assert!(!key_file.exists(), "the key file must be gone");
    let returned = reply["slashing_protection"].as_str().unwrap().to_owned();
    let expected: History = (
        vec![("100".into(), Some(block_root.clone()))],
        vec![
            ("10".into(), "20".into(), Some(imported_root.clone())),
            (
                "20".into(),
                "21".into(),
                Some(hex_root(&mainnet_root(&vote))),
            ),
        ],
    );
    assert_eq!(history_of(&returned, &pk_a), Some(expected.clone()));
    assert_eq!(history_of(&returned, &unknown), None);
    let gvr: Value = serde_json::from_str::<Value>(&returned).unwrap()["metadata"]
        ["genesis_validators_root"]
        .clone();
    assert_eq!(gvr, GVR);

    // A no longer signs, nor is listed; B is untouched.
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(21, 22)),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        sign(&http, &server, &pk_a, &template("RANDAO_REVEAL")),
        StatusCode::NOT_FOUND
    );
    assert!(!public_keys(&http, &server).contains(&pk_a));
    assert!(listed(&http, &server)
        .iter()
        .all(|e| e["validating_pubkey"] != json!(pk_a)));
    assert_eq!(
        sign(&http, &server, &pk_b, &attestation(4, 5)),
        StatusCode::OK
    );

    // The restored key file does not bring A back: not on reload, not on restart.
    std::fs::write(&key_file, &saved).unwrap();
    let st = server.reload_and_wait();
    assert_eq!(st["status"], "completed", "{st}");
    // Deliberately ignored, not a load error: the signer stays healthy.
    assert_eq!(
        http.get(server.url("/healthcheck"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(21, 22)),
        StatusCode::NOT_FOUND
    );
    assert!(!public_keys(&http, &server).contains(&pk_a));
    drop(server);
    // Not even with slashing protection off (the tombstones are still read).
    server = Server::start(&s, &["--no-slot-deadlines", "--no-slashing-protection"]);
    assert_eq!(
        sign(&http, &server, &pk_a, &template("RANDAO_REVEAL")),
        StatusCode::NOT_FOUND
    );
    assert!(!public_keys(&http, &server).contains(&pk_a));
    drop(server);
    server = Server::start(&s, &["--no-slot-deadlines"]);
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(21, 22)),
        StatusCode::NOT_FOUND
    );
    assert!(!public_keys(&http, &server).contains(&pk_a));
    assert!(public_keys(&http, &server).contains(&pk_b));

    // A second DELETE still returns the history: the key is known, but not active.
    let (status, reply) = delete(&http, &server, &[&pk_a]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["not_active"]);
    assert_eq!(
        history_of(reply["slashing_protection"].as_str().unwrap(), &pk_a),
        Some(expected)
    );

    // The explicit re-import brings A back, and its history still protects it.
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks_a], "passwords": [DEPOSIT_PASSWORD] }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["imported"]);
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(9, 25)),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(21, 22)),
        StatusCode::OK
    );
    assert!(public_keys(&http, &server).contains(&pk_a));

    // Importing a loaded key again is a duplicate, and changes nothing.
    let before = std::fs::read(&key_file).unwrap();
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks_a], "passwords": [DEPOSIT_PASSWORD] }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["duplicate"]);
    assert_eq!(std::fs::read(&key_file).unwrap(), before);

    // And it survives a restart.
    drop(server);
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(22, 23)),
        StatusCode::OK
    );
}

#[test]
fn a_wrong_password_fails_only_its_own_keystore_and_writes_nothing_for_it() {
    let s = Signer::new();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    let (ks_a, pk_a) = deposit_keystore(2);
    let (ks_b, pk_b) = deposit_keystore(3);

    // Alone: an error with a message, and the data directory unchanged.
    let before = files_but_database(&s);
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks_a], "passwords": ["not the password"] }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["error"]);
    let message = reply["data"][0]["message"].as_str().unwrap();
    assert!(message.contains("keystores[0]"), "{message}");
    assert!(!message.contains("not the password"), "{message}");
    assert_eq!(files_but_database(&s), before);
    assert!(listed(&http, &server).is_empty());

    // Beside a good one: the good one is imported and signs, the bad one is not.
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks_b, ks_a], "passwords": [DEPOSIT_PASSWORD, "wrong"] }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["imported", "error"]);
    assert!(!s.data_dir().join(format!("keys/{pk_a}.json")).exists());
    assert_eq!(
        sign(&http, &server, &pk_b, &attestation(1, 2)),
        StatusCode::OK
    );
    assert_eq!(
        sign(&http, &server, &pk_a, &attestation(1, 2)),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn malformed_requests_are_refused_with_400_and_change_nothing() {
    let s = Signer::new();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    let (ks, pk) = deposit_keystore(4);
    // Prime the data directory (database, tokens) so the snapshot compares like with like.
    let (status, _) = delete(&http, &server, &[&pk]);
    assert_eq!(status, StatusCode::OK);
    let before = files_but_database(&s);

    let history = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
        "data": [{"pubkey": pk, "signed_blocks": [{"slot": "7"}], "signed_attestations": []}]
    })
    .to_string();
    let bad_interchange = json!({
        "keystores": [ks],
        "passwords": [DEPOSIT_PASSWORD],
        "slashing_protection": "{\"metadata\": {}}",
    })
    .to_string();
    let cases: Vec<(reqwest::Method, String, &str)> = vec![
        (reqwest::Method::POST, "{".into(), "invalid import request"),
        (reqwest::Method::POST, "[]".into(), "invalid import request"),
        (
            reqwest::Method::POST,
            json!({ "keystores": [ks], "passwords": "hunter2-secret" }).to_string(),
            "expected {\"keystores\"",
        ),
        (
            reqwest::Method::POST,
            json!({ "keystores": [ks], "passwords": [7] }).to_string(),
            "invalid import request",
        ),
        (
            reqwest::Method::POST,
            json!({ "passwords": [] }).to_string(),
            "keystores",
        ),
        (
            reqwest::Method::POST,
            json!({ "keystores": [ks], "passwords": [], "slashing_protection": history })
                .to_string(),
            "1 keystore(s) but 0 password(s)",
        ),
        (
            reqwest::Method::POST,
            json!({ "keystores": ["{\"not\": \"a keystore\"}"], "passwords": ["x"] }).to_string(),
            "keystores[0]",
        ),
        (
            reqwest::Method::POST,
            bad_interchange,
            "slashing_protection",
        ),
        (
            reqwest::Method::DELETE,
            "nonsense".into(),
            "invalid delete request",
        ),
        (
            reqwest::Method::DELETE,
            json!({ "pubkeys": [pk, "0x1234"] }).to_string(),
            "pubkeys[1]",
        ),
        (
            reqwest::Method::DELETE,
            json!({ "pubkeys": [pk.trim_start_matches("0x")] }).to_string(),
            "pubkeys[0]",
        ),
    ];
    for (method, body, needle) in cases {
        let (status, reply) = keymanager(&http, &server, method.clone(), &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {body}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("hunter2"),
            "a password was echoed: {message}"
        );
        assert!(
            message.contains(needle),
            "{method} {body}: {message:?} lacks {needle:?}"
        );
    }
    assert_eq!(
        files_but_database(&s),
        before,
        "a refused request changed files"
    );
    // Nor was the valid interchange of the mismatched request imported: the key is unknown.
    assert_eq!(statuses(&delete(&http, &server, &[&pk]).1), ["not_found"]);
    assert!(listed(&http, &server).is_empty());

    // Deleting a key nobody knows is not an error: not_found, with a valid (empty) interchange.
    let (status, reply) = delete(&http, &server, &[&format!("0x{}", "cd".repeat(48))]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["not_found"]);
    let ic: Value = serde_json::from_str(reply["slashing_protection"].as_str().unwrap()).unwrap();
    assert_eq!(ic["metadata"]["interchange_format_version"], "5");
    assert_eq!(ic["data"], json!([]));

    // A key file on disk that did not load is deleted too: not_active, and the file is gone.
    let broken = format!("0x{}", "ef".repeat(48));
    let file = s.data_dir().join(format!("keys/{broken}.json"));
    std::fs::write(&file, "{").unwrap();
    let (status, reply) = delete(&http, &server, &[&broken]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["not_active"]);
    assert!(!file.exists());
    let ic: Value = serde_json::from_str(reply["slashing_protection"].as_str().unwrap()).unwrap();
    assert_eq!(
        ic["data"],
        json!([{"pubkey": broken, "signed_blocks": [], "signed_attestations": []}])
    );
}

#[test]
fn with_a_keymanager_threshold_an_import_is_split_2_of_3_and_signs_under_the_original_key() {
    let s = Signer::new();
    // The embedded default's tokens, named in a configuration with a [keymanager] split.
    s.ok(&["device", "init"]);
    let soft = s.data_dir().join("softhsm");
    let mut toml = String::from(
        "default_device = \"softhsm-1\"\n[keymanager]\nthreshold = 2\n\
         devices = [\"softhsm-1\", \"softhsm-2\", \"softhsm-3\"]\n",
    );
    for i in 1..=3 {
        toml += &format!(
            "\n[[device]]\nname = \"softhsm-{i}\"\ntoken_label = \"hsm-signer-{i}\"\n\
             pin_file = \"{}\"\nmodule_config = \"{}\"\n",
            soft.join(format!("softhsm-{i}.pin")).display(),
            soft.join("softhsm2.conf").display(),
        );
    }
    std::fs::write(s.data_dir().join("hsm-signer.toml"), toml).unwrap();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    let ks = std::fs::read_to_string(fixture("eip2335/keystore-pbkdf2.json")).unwrap();
    let password = std::fs::read_to_string(fixture("eip2335/password.txt")).unwrap();
    let password = password.trim_end_matches(['\n', '\r']);
    let pk = common::FIXTURE_PK;

    let import = || {
        let (status, reply) = post(
            &http,
            &server,
            &json!({ "keystores": [&ks], "passwords": [password] }),
        );
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(statuses(&reply), ["imported"]);
        let file = s.data_dir().join(format!("keys/{pk}.json"));
        serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).unwrap()
    };

    let record = import();
    assert_eq!(record["threshold"], 2);
    let mut devices: Vec<&str> = record["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sh| sh["device"].as_str().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, ["softhsm-1", "softhsm-2", "softhsm-3"]);
    assert!(
        record["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|sh| sh["pubkey"] != json!(pk)),
        "a share must not be the whole key"
    );

    // The combined signature verifies under the keystore's own public key (checked in `sign`).
    assert_eq!(sign(&http, &server, pk, &attestation(5, 6)), StatusCode::OK);
    assert_eq!(
        sign(&http, &server, pk, &template("RANDAO_REVEAL")),
        StatusCode::OK
    );

    // Deleted, then imported again: fresh shares (a new polynomial), and it still signs.
    let share_keys = |record: &Value| -> Vec<String> {
        record["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sh| sh["pubkey"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, reply) = delete(&http, &server, &[pk]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["deleted"]);
    assert_eq!(
        sign(&http, &server, pk, &template("RANDAO_REVEAL")),
        StatusCode::NOT_FOUND
    );
    let again = import();
    assert_eq!(again["threshold"], 2);
    let (old, new) = (share_keys(&record), share_keys(&again));
    assert!(old.iter().all(|k| !new.contains(k)), "{old:?} vs {new:?}");
    assert_eq!(sign(&http, &server, pk, &attestation(6, 7)), StatusCode::OK);
}

#[test]
fn with_postgresql_a_deleted_key_stays_deleted_across_restarts_until_reimported() {
    let pg = common::pg::PgServer::start();
    let s = Signer::new();
    let args = ["--no-slot-deadlines", "--slashing-db", pg.url()];
    let server = Server::start(&s, &args);
    let http = client();
    let (ks, pk) = deposit_keystore(5);
    let body = json!({ "keystores": [ks], "passwords": [DEPOSIT_PASSWORD] });
    assert_eq!(statuses(&post(&http, &server, &body).1), ["imported"]);
    let vote = attestation(1, 2);
    assert_eq!(sign(&http, &server, &pk, &vote), StatusCode::OK);

    let key_file = s.data_dir().join(format!("keys/{pk}.json"));
    let saved = std::fs::read(&key_file).unwrap();
    let (status, reply) = delete(&http, &server, &[&pk]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["deleted"]);
    assert_eq!(
        history_of(reply["slashing_protection"].as_str().unwrap(), &pk),
        Some((
            vec![],
            vec![("1".into(), "2".into(), Some(hex_root(&mainnet_root(&vote))))]
        ))
    );

    std::fs::write(&key_file, &saved).unwrap();
    drop(server);
    let server = Server::start(&s, &args);
    assert_eq!(
        sign(&http, &server, &pk, &attestation(2, 3)),
        StatusCode::NOT_FOUND
    );
    assert_eq!(statuses(&post(&http, &server, &body).1), ["imported"]);
    assert_eq!(
        sign(&http, &server, &pk, &attestation(2, 3)),
        StatusCode::OK
    );
    // The history recorded before the deletion still protects the re-imported key.
    assert_eq!(
        sign(&http, &server, &pk, &attestation(0, 5)),
        StatusCode::PRECONDITION_FAILED
    );
}

/// The EIP-2335 scrypt vector with its KDF parameters replaced and its pubkey removed (so that
/// only its KDF can say which key it holds): it does not decrypt, but a KDF that runs costs
/// `n · r · p` units of work.
fn forged_scrypt_keystore(n: u64, r: u64, p: u64) -> String {
    let mut ks: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("eip2335/keystore-scrypt.json")).unwrap(),
    )
    .unwrap();
    ks["crypto"]["kdf"]["params"]["n"] = json!(n);
    ks["crypto"]["kdf"]["params"]["r"] = json!(r);
    ks["crypto"]["kdf"]["params"]["p"] = json!(p);
    ks.as_object_mut().unwrap().remove("pubkey");
    ks.to_string()
}

const KDF_RUNS: &str = "signer_keystore_kdf_runs";

#[test]
fn an_import_over_the_requests_kdf_budget_is_refused_before_any_kdf_runs() {
    let s = Signer::new();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    // Nine keystores of 2^24 units each: over the 2^27 a request may spend.
    let heavy = forged_scrypt_keystore(1 << 17, 8, 16);
    let body = json!({ "keystores": vec![heavy; 9], "passwords": vec!["x"; 9] });
    let (status, reply) = post(&http, &server, &body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("units of work"), "{reply}");
    assert!(message.contains("nothing was decrypted"), "{reply}");
    assert_eq!(server.metric(KDF_RUNS), 0.0, "a KDF ran");
    assert!(listed(&http, &server).is_empty());

    // The counter does count: a request within the budget runs its KDF.
    let (ks, _) = deposit_keystore(1);
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks], "passwords": ["wrong"] }),
    );
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["error"]);
    assert_eq!(server.metric(KDF_RUNS), 1.0);
}

#[test]
fn a_keystore_of_a_loaded_key_is_a_duplicate_without_running_its_kdf() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    // The same key in its scrypt keystore, with a password that would not even open it.
    let ks = std::fs::read_to_string(fixture("eip2335/keystore-scrypt.json")).unwrap();
    let started = std::time::Instant::now();
    let (status, reply) = post(
        &http,
        &server,
        &json!({ "keystores": [ks], "passwords": ["not the password"] }),
    );
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["duplicate"]);
    assert_eq!(server.metric(KDF_RUNS), 0.0, "the KDF ran");
    eprintln!("duplicate answered in {took:?}");
}

#[test]
fn signing_and_a_small_import_go_on_while_a_heavy_import_derives_its_keys() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = client();
    let mut epoch = 0;
    let mut sign_once = |http: &Client| {
        epoch += 1;
        let started = std::time::Instant::now();
        let status = sign(
            http,
            &server,
            common::FIXTURE_PK,
            &attestation(epoch, epoch + 1),
        );
        assert_eq!(status, StatusCode::OK);
        started.elapsed()
    };
    let idle: Vec<_> = (0..10).map(|_| sign_once(&http)).collect();

    // Four keystores of 2^22 units each (a second or more of KDF apiece), none of which opens.
    let heavy = forged_scrypt_keystore(1 << 15, 8, 16);
    let body = json!({ "keystores": vec![heavy; 4], "passwords": vec!["x"; 4] });
    let heavy_import = std::thread::scope(|scope| {
        let heavy_import = scope.spawn(|| post(&client(), &server, &body));
        // Let it start (its first KDF runs for a second or more).
        std::thread::sleep(std::time::Duration::from_millis(500));
        let busy: Vec<_> = (0..10).map(|_| sign_once(&http)).collect();
        // Another import takes its turn between the heavy one's keystores.
        let (ks, pk) = deposit_keystore(4);
        let (status, reply) = post(
            &http,
            &server,
            &json!({ "keystores": [ks], "passwords": [DEPOSIT_PASSWORD] }),
        );
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(statuses(&reply), ["imported"]);
        assert!(
            !heavy_import.is_finished(),
            "the small import waited for the whole heavy one"
        );
        assert_eq!(
            sign(&http, &server, &pk, &attestation(1, 2)),
            StatusCode::OK
        );
        let max = |v: &[std::time::Duration]| v.iter().max().copied().unwrap_or_default();
        eprintln!(
            "attestation latency: idle max {:?}, during the heavy import max {:?}",
            max(&idle),
            max(&busy)
        );
        heavy_import.join().unwrap()
    });
    let (status, reply) = heavy_import;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["error"; 4]);
}

#[test]
fn a_delete_that_cannot_drain_a_signature_under_way_leaves_the_key_active_and_can_be_retried() {
    // The fixture key on a device that takes 4 s per operation; DELETE waits at most 1 s.
    let s = Signer::with_fixture_key();
    let soft = s.data_dir().join("softhsm");
    let mut toml = String::from(
        "default_device = \"softhsm-1\"\n[keymanager]\ndelete_drain_timeout_secs = 1\n",
    );
    for i in 1..=3 {
        toml += &format!(
            "\n[[device]]\nname = \"softhsm-{i}\"\ntoken_label = \"hsm-signer-{i}\"\n\
             pin_file = \"{}\"\nmodule_config = \"{}\"\n{}",
            soft.join(format!("softhsm-{i}.pin")).display(),
            soft.join("softhsm2.conf").display(),
            if i == 1 {
                "simulated_latency_ms = 4000\n"
            } else {
                ""
            },
        );
    }
    std::fs::write(s.data_dir().join("hsm-signer.toml"), toml).unwrap();
    let server = std::sync::Arc::new(Server::start(&s, &["--no-slot-deadlines"]));
    let http = client();
    let pk = common::FIXTURE_PK;

    let signing = {
        let (server, http) = (server.clone(), http.clone());
        std::thread::spawn(move || sign(&http, &server, pk, &attestation(1, 2)))
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let (status, reply) = delete(&http, &server, &[pk]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(statuses(&reply), ["error"], "{reply}");
    let message = reply["data"][0]["message"].as_str().unwrap();
    assert!(message.contains("not deleted"), "{message}");
    // Nothing exported for it: it was not deleted.
    assert_eq!(
        history_of(reply["slashing_protection"].as_str().unwrap(), pk),
        None
    );
    // The signature under way completes, and the key signs on as before.
    assert_eq!(signing.join().unwrap(), StatusCode::OK);
    assert_eq!(public_keys(&http, &server), [pk]);
    assert_eq!(sign(&http, &server, pk, &attestation(2, 3)), StatusCode::OK);

    // Retried with nothing under way: deleted, with the whole history.
    let (status, reply) = delete(&http, &server, &[pk]);
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(statuses(&reply), ["deleted"]);
    let (_, atts) = history_of(reply["slashing_protection"].as_str().unwrap(), pk).unwrap();
    assert_eq!(atts.len(), 2, "{atts:?}");
    assert_eq!(
        sign(&http, &server, pk, &attestation(3, 4)),
        StatusCode::NOT_FOUND
    );
}
