//! The signing policy through the real binary: clients named by a bearer token of their own or
//! by their mutual-TLS certificate may use only their keys and message types; a voluntary exit
//! only for a key the policy enables; a registration only to a fee recipient on the key's list.
//! Each refusal is a 403 naming its rule, with nothing signed and nothing recorded in slashing
//! protection; what is allowed signs as the oracle and blst do; `/reload` takes a new policy.

mod common;

use common::tls::{https_client, write_identity, Ca};
use common::{blst_signature, blst_signature_of, signing_fixtures, Server, Signer, FIXTURE_PK};
use hsm_signer::consensus::{Network, Preset, SignRequest};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A key no test signer holds (the policy parses it; nothing signs with it).
const OTHER_PK: &str = "0xa1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
/// Mainnet's genesis validators root (the signer serves mainnet).
const GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

/// The first oracle case of `kind` (request and the oracle's signature).
fn case(kind: &str) -> Value {
    signing_fixtures()
        .1
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c["type"] == kind)
        .unwrap()
}

/// A DENEB block header at `slot` for mainnet (no supplied root).
fn block(slot: u64) -> Value {
    let mut b = signing_fixtures()
        .1
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c["type"] == "BLOCK_V2" && c["request"]["beacon_block"]["version"] == "DENEB")
        .unwrap()["request"]
        .clone();
    let o = b.as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    b["fork_info"]["genesis_validators_root"] = json!(GVR);
    b["beacon_block"]["block_header"]["slot"] = json!(slot.to_string());
    b
}

/// The first oracle case of `kind` made a mainnet request (no supplied root).
fn mainnet(kind: &str) -> Value {
    let mut r = case(kind)["request"].clone();
    let o = r.as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    r["fork_info"]["genesis_validators_root"] = json!(GVR);
    r
}

/// An attestation with these epochs for mainnet (no supplied root).
fn attestation(source: u64, target: u64) -> Value {
    let mut a = mainnet("ATTESTATION");
    a["attestation"]["source"]["epoch"] = json!(source.to_string());
    a["attestation"]["target"]["epoch"] = json!(target.to_string());
    a
}

/// blst's signature of `body`'s signing root with the fixture key.
fn blst_of(body: &Value) -> String {
    let network = Network::preset("mainnet").unwrap();
    let root = SignRequest::from_json(body.to_string().as_bytes(), Preset::Mainnet)
        .unwrap()
        .signing_root(&network)
        .unwrap();
    blst_signature_of(root.as_bytes())
}

fn sign(
    http: &Client,
    server: &Server,
    token: Option<&str>,
    pk: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = http
        .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
        .header("Accept", "application/json")
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

/// 403, the body naming `rule` and containing `words`.
fn assert_refused(answer: (StatusCode, Value), rule: &str, words: &str) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["rule"], rule, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("rule {rule}")) && message.contains(words),
        "{message}"
    );
}

/// 200 with `signature`.
fn assert_signed(answer: (StatusCode, Value), signature: &str, what: &str) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    assert_eq!(body["signature"], signature, "{what}");
}

fn public_keys(http: &Client, server: &Server, token: Option<&str>) -> Value {
    let mut req = http.get(server.url("/api/v1/eth2/publicKeys"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().unwrap()
}

/// (block slots, attestation target epochs) in the signer's slashing database.
fn recorded(s: &Signer) -> (Vec<u64>, Vec<u64>) {
    common::recorded_in(&s.ok(&["slashing", "export", "-"]))
}

fn read_token(s: &Signer, name: &str) -> String {
    std::fs::read_to_string(s.data_dir().join(name))
        .unwrap()
        .trim()
        .to_owned()
}

/// The registration fixture's fee recipient, and another address.
fn fee_recipients() -> (String, String) {
    let listed = case("VALIDATOR_REGISTRATION")["request"]["validator_registration"]
        ["fee_recipient"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let other = format!("0x{}", "77".repeat(20));
    assert_ne!(listed, other);
    (listed, other)
}

#[test]
fn token_clients_get_their_keys_and_types_exits_and_fee_recipients_only_as_the_policy_says() {
    let s = Signer::with_fixture_key();
    let (listed, other_recipient) = fee_recipients();
    std::fs::write(
        s.data_dir().join("vc-a-keys.txt"),
        format!("# validator client A\n{FIXTURE_PK}\n"),
    )
    .unwrap();
    let policy = |exit_keys: &str| {
        format!(
            "exit_keys = {exit_keys}\n\
             fee_recipients = [\"{other_recipient}\"]\n\
             [[key_fee_recipients]]\nkeys = [\"{FIXTURE_PK}\"]\nallowed = [\"{listed}\"]\n\
             [[client]]\nname = \"vc-a\"\ntoken_file = \"tokens/vc-a\"\nkeys = [\"file:vc-a-keys.txt\"]\n\
             [[client]]\nname = \"vc-b\"\ntoken_file = \"tokens/vc-b\"\nkeys = [\"{OTHER_PK}\"]\n\
             types = [\"BLOCK_V2\", \"ATTESTATION\"]\n\
             [[client]]\nname = \"vc-c\"\ntoken_file = \"tokens/vc-c\"\nkeys = \"all\"\n\
             types = [\"ATTESTATION\"]\n"
        )
    };
    s.write_policy(&policy("[]"));
    // Slashing protection on (SQLite); the fixtures' historical slots without the slot clock.
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = common::http();
    // The client tokens were created, private, at start.
    let (a, b, c) = (
        read_token(&s, "tokens/vc-a"),
        read_token(&s, "tokens/vc-b"),
        read_token(&s, "tokens/vc-c"),
    );
    assert!(a != b && b != c && a.starts_with("api-token-"));

    // Who is not a client of the policy: no token → 403, the API token → 403, a token that is
    // no one's → 401.
    assert_refused(
        sign(&http, &server, None, FIXTURE_PK, &block(100)),
        "client",
        "names no client",
    );
    assert_refused(
        sign(
            &http,
            &server,
            Some(&server.token()),
            FIXTURE_PK,
            &block(100),
        ),
        "client",
        "API token is not a signing client",
    );
    let (status, _) = sign(
        &http,
        &server,
        Some(&format!("api-token-{}", "0".repeat(64))),
        FIXTURE_PK,
        &block(100),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // vc-b may not use the fixture key: a block and an attestation are refused (rule key).
    for body in [block(100), attestation(1, 2)] {
        assert_refused(
            sign(&http, &server, Some(&b), FIXTURE_PK, &body),
            "key",
            &format!("client \"vc-b\" may not use key {FIXTURE_PK}"),
        );
    }
    // vc-c may use every key, but only for attestations (rule type).
    assert_refused(
        sign(&http, &server, Some(&c), FIXTURE_PK, &block(100)),
        "type",
        "client \"vc-c\" may not request BLOCK_V2",
    );
    // vc-a may use the key for every type, but no exit is enabled (rule exit) …
    let exit = mainnet("VOLUNTARY_EXIT");
    assert_refused(
        sign(&http, &server, Some(&a), FIXTURE_PK, &exit),
        "exit",
        &format!("voluntary exits are not enabled for key {FIXTURE_PK}"),
    );
    // … and a registration to a fee recipient off the key's list is refused (rule
    // fee_recipient), even one on the default list (the key's own list replaces it).
    let mut registration = case("VALIDATOR_REGISTRATION");
    let mut off_list = registration["request"].clone();
    off_list["validator_registration"]["fee_recipient"] = json!(other_recipient);
    assert_refused(
        sign(&http, &server, Some(&a), FIXTURE_PK, &off_list),
        "fee_recipient",
        &format!("fee recipient {other_recipient} is not on the allow-list of key {FIXTURE_PK}"),
    );
    // Nothing refused was recorded.
    assert_eq!(recorded(&s), (vec![], vec![]));
    for (rule, n) in [
        ("client", 2.0),
        ("key", 2.0),
        ("type", 1.0),
        ("exit", 1.0),
        ("fee_recipient", 1.0),
    ] {
        assert_eq!(
            server.metric(&format!(
                "signer_refused_by_policy_total{{rule=\"{rule}\"}}"
            )),
            n,
            "{rule}"
        );
    }

    // What is allowed signs: vc-a's registration to the listed recipient (the oracle's
    // signature and blst's), its block, vc-c's attestation; both are recorded.
    let oracle = registration["signature"].as_str().unwrap().to_owned();
    assert_eq!(oracle, blst_signature(&registration));
    registration["request"]["validator_registration"]["fee_recipient"] = json!(listed);
    assert_signed(
        sign(
            &http,
            &server,
            Some(&a),
            FIXTURE_PK,
            &registration["request"],
        ),
        &oracle,
        "registration",
    );
    let (blk, att) = (block(100), attestation(1, 2));
    assert_signed(
        sign(&http, &server, Some(&a), FIXTURE_PK, &blk),
        &blst_of(&blk),
        "block",
    );
    assert_signed(
        sign(&http, &server, Some(&c), FIXTURE_PK, &att),
        &blst_of(&att),
        "attestation",
    );
    assert_eq!(recorded(&s), (vec![100], vec![2]));

    // Each client sees only its keys.
    assert_eq!(public_keys(&http, &server, Some(&a)), json!([FIXTURE_PK]));
    assert_eq!(public_keys(&http, &server, Some(&b)), json!([]));
    assert_eq!(public_keys(&http, &server, Some(&c)), json!([FIXTURE_PK]));

    // Exits enabled for the key (from a file of keys) and reloaded: the exit signs.
    s.write_policy(&policy("[\"file:vc-a-keys.txt\"]"));
    assert_eq!(server.reload_and_wait()["status"], "completed");
    assert_signed(
        sign(&http, &server, Some(&a), FIXTURE_PK, &exit),
        &blst_of(&exit),
        "exit after reload",
    );

    // A policy that does not build fails the reload; the one in force stays.
    s.write_policy("exit_keys = \"every\"\n");
    let st = server.reload_and_wait();
    assert_eq!(st["status"], "failed", "{st}");
    assert!(
        st["lastError"].as_str().unwrap().contains("exit_keys"),
        "{st}"
    );
    assert_refused(
        sign(&http, &server, None, FIXTURE_PK, &block(101)),
        "client",
        "names no client",
    );
}

#[test]
fn mutual_tls_clients_are_the_policy_clients_their_certificates_name() {
    let s = Signer::with_fixture_key();
    let dir = s.data_dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("hsm-signer test CA");
    let (cert, key) = write_identity(&dir, "server", &ca.server());
    let clients_ca = Ca::new("validator clients CA");
    let vc1 = clients_ca.client("vc-1");
    let vc2 = clients_ca.client("vc-2");
    std::fs::write(dir.join("clients-ca.pem"), clients_ca.cert_pem()).unwrap();
    s.write_config(&format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\
         client_ca_file = \"tls/clients-ca.pem\"\nallowed_clients = [\"vc-1\", \"{}\"]\n",
        vc2.fingerprint()
    ));
    s.write_policy(&format!(
        "[[client]]\nname = \"validator-1\"\ntls = [\"vc-1\"]\nkeys = [\"{FIXTURE_PK}\"]\n\
         [[client]]\nname = \"validator-2\"\ntls = [\"{}\"]\nkeys = [\"{OTHER_PK}\"]\n",
        vc2.fingerprint()
    ));
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let one = https_client(&ca.cert_pem(), Some(&vc1));
    let two = https_client(&ca.cert_pem(), Some(&vc2));

    // validator-2 (by fingerprint) may not use the fixture key: refused, nothing recorded.
    for body in [block(200), attestation(3, 4)] {
        assert_refused(
            sign(&two, &server, None, FIXTURE_PK, &body),
            "key",
            &format!("client \"validator-2\" may not use key {FIXTURE_PK}"),
        );
    }
    assert_eq!(recorded(&s), (vec![], vec![]));
    // validator-1 (by name): its exit is refused (none enabled), its block and registration sign.
    assert_refused(
        sign(&one, &server, None, FIXTURE_PK, &mainnet("VOLUNTARY_EXIT")),
        "exit",
        "an exit cannot be undone",
    );
    let blk = block(200);
    assert_signed(
        sign(&one, &server, None, FIXTURE_PK, &blk),
        &blst_of(&blk),
        "block",
    );
    let registration = case("VALIDATOR_REGISTRATION");
    assert_signed(
        sign(&one, &server, None, FIXTURE_PK, &registration["request"]),
        registration["signature"].as_str().unwrap(),
        "registration",
    );
    assert_eq!(recorded(&s), (vec![200], vec![]));
    assert_eq!(public_keys(&one, &server, None), json!([FIXTURE_PK]));
    assert_eq!(public_keys(&two, &server, None), json!([]));
}

#[test]
fn a_policy_that_cannot_work_is_refused_at_start_naming_the_mistake() {
    let s = Signer::with_fixture_key();
    let cases: &[(&str, &str)] = &[
        ("exit_keys = \"every\"\n", "neither \"all\" nor a list of keys"),
        ("exit_keys = [\"0x1234\"]\n", "is not a 0x-prefixed 48-byte public key"),
        ("exit_keys = [\"file:missing.txt\"]\n", "missing.txt"),
        ("fee_recipients = [\"0x12\"]\n", "not a 0x-prefixed 20-byte address"),
        (
            "[[client]]\nname = \"x\"\nkeys = \"all\"\n",
            "nothing identifies it",
        ),
        (
            "[[client]]\nname = \"x\"\ntoken_file = \"t\"\nkeys = \"all\"\ntypes = [\"BLOCK\", \"EXIT\"]\n",
            "unknown message type \"EXIT\"",
        ),
        (
            "[[client]]\nname = \"x\"\ntls = [\"vc-1\"]\nkeys = \"all\"\n",
            "tls needs mutual TLS",
        ),
        (
            "[[client]]\nname = \"x\"\ntoken_file = \"t\"\nkeys = \"all\"\n\
             [[client]]\nname = \"x\"\ntoken_file = \"u\"\nkeys = \"all\"\n",
            "is defined twice",
        ),
        (
            "[[client]]\nname = \"x\"\ntoken_file = \"t\"\nkeys = \"all\"\n\
             [[client]]\nname = \"y\"\ntoken_file = \"t\"\nkeys = \"all\"\n",
            "its token is client \"x\"'s token too",
        ),
        (
            "[[client]]\nname = \"x\"\ntoken_file = \"api-token.txt\"\nkeys = \"all\"\n",
            "its token is the API (admin) token",
        ),
        ("colour = \"blue\"\n", "unknown field"),
    ];
    for (policy, words) in cases {
        s.write_policy(policy);
        let err = s.fail(&["serve", "--listen", "127.0.0.1:0"]);
        assert!(
            err.contains("signing policy") || err.contains(words),
            "{policy}: {err}"
        );
        assert!(err.contains(words), "{policy}: {err}");
    }
}

#[test]
fn a_policy_with_token_clients_opens_signing_off_loopback_to_them_only() {
    let s = Signer::with_fixture_key();
    s.write_policy(&format!(
        "[[client]]\nname = \"vc\"\ntoken_file = \"vc.token\"\nkeys = [\"{FIXTURE_PK}\"]\n"
    ));
    // No mutual TLS, no --require-auth-on-signing: the policy's clients authenticate.
    let server = Server::start_on(&s, "0.0.0.0:0", &["--allow-insecure-http"]);
    let base = server.base.replacen("0.0.0.0", "127.0.0.1", 1);
    let url = format!("{base}/api/v1/eth2/sign/{FIXTURE_PK}");
    let registration = case("VALIDATOR_REGISTRATION");
    let http = common::http();
    let anonymous = http
        .post(&url)
        .json(&registration["request"])
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    let signed: Value = http
        .post(&url)
        .bearer_auth(read_token(&s, "vc.token"))
        .json(&registration["request"])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(signed["signature"], registration["signature"]);
}

#[test]
fn without_a_policy_file_a_voluntary_exit_is_refused_and_every_other_type_signs() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = common::http();
    assert_refused(
        sign(&http, &server, None, FIXTURE_PK, &mainnet("VOLUNTARY_EXIT")),
        "exit",
        &format!("voluntary exits are not enabled for key {FIXTURE_PK}"),
    );
    let registration = case("VALIDATOR_REGISTRATION");
    assert_signed(
        sign(&http, &server, None, FIXTURE_PK, &registration["request"]),
        registration["signature"].as_str().unwrap(),
        "registration",
    );
    let randao = mainnet("RANDAO_REVEAL");
    assert_signed(
        sign(&http, &server, None, FIXTURE_PK, &randao),
        &blst_of(&randao),
        "randao reveal",
    );
    assert_eq!(
        server.metric("signer_refused_by_policy_total{rule=\"exit\"}"),
        1.0
    );
}
