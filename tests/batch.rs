//! The batch endpoint (`POST /api/v1/eth2/sign`, the Remote Signing API's batch draft) through
//! the real binary: each key's result is what its own single request answers (the same
//! signature bytes, a 404 or 412 in its place), one slashable attestation among a hundred keys
//! leaves the other 99 signed in one slashing transaction, and a malformed batch is a 400 that
//! signs and records nothing.

mod common;

use common::{blst_signature_of, Server, Signer, FIXTURE_PK};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A signer holding the fixture key and `extra` generated keys; the generated keys, in order.
fn signer_with_keys(extra: usize) -> (Signer, Vec<String>) {
    let s = Signer::with_fixture_key();
    let out = s.ok(&[
        "keys",
        "generate",
        "--count",
        &extra.to_string(),
        "--device",
        "softhsm-2",
    ]);
    let keys: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(keys.len(), extra, "{out}");
    (s, keys)
}

fn single(http: &Client, server: &Server, key: &str, request: &Value) -> (StatusCode, Value) {
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{key}")))
        .json(request)
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn batch(http: &Client, server: &Server, body: &Value) -> (StatusCode, Value) {
    let resp = http
        .post(server.url("/api/v1/eth2/sign"))
        .json(body)
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn root_of(request: &Value, server: &Server, http: &Client) -> [u8; 32] {
    // The signer names its computed root when a supplied one differs.
    let mut probe = request.clone();
    probe["signingRoot"] = json!(format!("0x{}", "00".repeat(32)));
    let (status, body) = single(http, server, FIXTURE_PK, &probe);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap();
    let computed = message.split("computed 0x").nth(1).unwrap();
    let mut root = [0u8; 32];
    hex::decode_to_slice(&computed[..64], &mut root).unwrap();
    root
}

fn verify(pubkey: &str, root: &[u8; 32], signature: &str) -> bool {
    let pk =
        blst::min_pk::PublicKey::from_bytes(&hex::decode(pubkey.trim_start_matches("0x")).unwrap())
            .unwrap();
    let sig = blst::min_pk::Signature::from_bytes(
        &hex::decode(signature.trim_start_matches("0x")).unwrap(),
    )
    .unwrap();
    sig.verify(
        true,
        root,
        b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_",
        &[],
        &pk,
        true,
    ) == blst::BLST_ERROR::BLST_SUCCESS
}

fn attestation(target: u64, tag: u64) -> Value {
    let mut a = common::fixture_request("ATTESTATION", |_| true);
    a["attestation"]["source"]["epoch"] = json!((target - 1).to_string());
    a["attestation"]["target"]["epoch"] = json!(target.to_string());
    a["attestation"]["beacon_block_root"] = json!(format!("0x{tag:064x}"));
    a
}

/// Every batchable type, as a request.
fn batchable() -> Vec<(&'static str, Value)> {
    [
        "AGGREGATION_SLOT",
        "ATTESTATION",
        "RANDAO_REVEAL",
        "SYNC_COMMITTEE_MESSAGE",
        "SYNC_COMMITTEE_SELECTION_PROOF",
    ]
    .into_iter()
    .map(|t| (t, common::fixture_request(t, |_| true)))
    .collect()
}

#[test]
fn each_key_gets_what_its_single_request_gets_in_order() {
    let (s, keys) = signer_with_keys(3);
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let unknown = format!("0x{}", "ab".repeat(48));
    for (kind, request) in batchable() {
        let root = root_of(&request, &server, &http);
        // A conflicting attestation already signed by keys[2]: its batch result is a 412.
        if kind == "ATTESTATION" {
            let mut other = request.clone();
            other["attestation"]["beacon_block_root"] = json!(format!("0x{}", "77".repeat(32)));
            let (status, body) = single(&http, &server, &keys[2], &other);
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // The fixture key in upper-case hex: identifiers are keys, not strings.
        let fixture_upper = format!("0x{}", FIXTURE_PK[2..].to_uppercase());
        let ids = vec![
            keys[0].clone(),
            unknown.clone(),
            fixture_upper.clone(),
            keys[1].clone(),
            keys[2].clone(),
        ];
        let (status, results) = batch(
            &http,
            &server,
            &json!({"identifiers": ids, "signing_request": request}),
        );
        assert_eq!(status, StatusCode::OK, "{kind}: {results}");
        let results = results.as_array().unwrap();
        assert_eq!(results.len(), ids.len(), "{kind}");
        for (id, result) in ids.iter().zip(results) {
            assert_eq!(result["identifier"], json!(id), "{kind}: in order, as sent");
            let (single_status, single_body) = single(&http, &server, id, &request);
            if single_status == StatusCode::OK {
                let sig = result["signature"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{kind}: {id}: single signs, batch said {result}"));
                assert_eq!(json!(sig), single_body["signature"], "{kind}: {id}");
                assert!(verify(id, &root, sig), "{kind}: {id}: signature verifies");
                assert!(result.get("error").is_none(), "{kind}: {result}");
            } else {
                assert_eq!(
                    result["error"]["code"],
                    json!(single_status.as_u16()),
                    "{kind}: {id}: {result} vs {single_body}"
                );
                assert!(result.get("signature").is_none(), "{kind}: {result}");
            }
        }
        // What each key gets, independently of the signer: the fixture key's signature is
        // blst's over the root; the unknown key is a 404; keys[2]'s attestation a 412.
        assert_eq!(
            results[2]["signature"],
            json!(blst_signature_of(&root)),
            "{kind}"
        );
        assert_eq!(results[1]["error"]["code"], json!(404), "{kind}");
        let third = if kind == "ATTESTATION" { 412 } else { 200 };
        let code = results[4]["error"]["code"].as_u64().unwrap_or(200);
        assert_eq!(code, third, "{kind}: {}", results[4]);
    }
}

#[test]
fn one_slashable_attestation_among_a_hundred_leaves_the_other_99_signed_in_one_commit() {
    let (s, keys) = signer_with_keys(99);
    let mut ids = keys.clone();
    ids.insert(37, FIXTURE_PK.to_owned());
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    // The fixture key signed another attestation for the same target: a double vote.
    let (status, body) = single(&http, &server, FIXTURE_PK, &attestation(5, 1));
    assert_eq!(status, StatusCode::OK, "{body}");
    let request = attestation(5, 2);
    let root = root_of(&request, &server, &http);
    let transactions = server.metric("signer_slashing_transactions");
    let checks = server.metric("signer_slashing_checks");
    let timed = server.metric("signer_slashing_transaction_seconds_count");
    let (status, results) = batch(
        &http,
        &server,
        &json!({"identifiers": ids, "signing_request": request}),
    );
    assert_eq!(status, StatusCode::OK, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (i, (id, r)) in ids.iter().zip(results).enumerate() {
        if i == 37 {
            assert_eq!(r["error"]["code"], json!(412), "{r}");
            assert!(
                r["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("slashing protection"),
                "{r}"
            );
        } else {
            let sig = r["signature"]
                .as_str()
                .unwrap_or_else(|| panic!("{i}: {r}"));
            assert!(verify(id, &root, sig), "{i}: {id}");
        }
    }
    // All hundred decided in one transaction.
    assert_eq!(server.metric("signer_slashing_checks") - checks, 100.0);
    assert_eq!(
        server.metric("signer_slashing_transactions") - transactions,
        1.0
    );
    // Its time in the store observed once.
    assert_eq!(
        server.metric("signer_slashing_transaction_seconds_count") - timed,
        1.0
    );
    assert!(server.metric("signer_slashing_transaction_seconds_sum") > 0.0);
    // And recorded: the 99 now refuse a conflicting vote for that target.
    let (status, _) = single(&http, &server, &keys[0], &attestation(5, 3));
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}

#[test]
fn malformed_batches_are_400_and_sign_or_record_nothing() {
    let (s, keys) = signer_with_keys(2);
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let request = attestation(9, 1);
    let upper = format!("0x{}", keys[0][2..].to_uppercase());
    let block = common::fixture_request("BLOCK_V2", |r| r["beacon_block"]["version"] == "DENEB");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no identifiers",
            json!({"identifiers": [], "signing_request": request}),
            "empty",
        ),
        (
            "a key twice, in two casings",
            json!({"identifiers": [keys[0], keys[1], upper], "signing_request": request}),
            "repeats key",
        ),
        (
            "not a key",
            json!({"identifiers": [keys[0], "0x1234"], "signing_request": request}),
            "identifiers[1]",
        ),
        (
            "no signing request",
            json!({"identifiers": [keys[0]]}),
            "signing_request",
        ),
        (
            "an unknown field",
            json!({"identifiers": [keys[0]], "signing_request": request, "extra": 1}),
            "unknown field",
        ),
        (
            "a type the draft does not batch",
            json!({"identifiers": [keys[0]], "signing_request": block}),
            "cannot be batched",
        ),
        (
            "a request malformed for every key",
            json!({"identifiers": [keys[0]], "signing_request": {"type": "ATTESTATION"}}),
            "fork_info",
        ),
    ];
    for (what, body, needle) in cases {
        let (status, answer) = batch(&http, &server, &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {message}");
    }
    let resp = http
        .post(server.url("/api/v1/eth2/sign"))
        .header("content-type", "application/json")
        .body("{\"identifiers\": [")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Nothing was recorded: a conflicting attestation for the same target still signs.
    assert_eq!(server.metric("signer_slashing_checks"), 0.0);
    for key in &keys {
        let (status, body) = single(&http, &server, key, &attestation(9, 2));
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[test]
fn a_batch_of_randao_reveals_runs_below_blocks_and_one_key_keeps_the_block_class() {
    let (s, keys) = signer_with_keys(3);
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let request = common::fixture_request("RANDAO_REVEAL", |_| true);
    let count = |class: &str| {
        server.metric(&format!(
            "signer_queue_wait_seconds_count{{class=\"{class}\"}}"
        ))
    };
    let (block, attestation) = (count("block"), count("attestation"));
    let (status, results) = batch(
        &http,
        &server,
        &json!({"identifiers": keys, "signing_request": request}),
    );
    assert_eq!(status, StatusCode::OK, "{results}");
    assert!(results
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("signature").is_some()));
    assert_eq!(
        count("block"),
        block,
        "no reveal of the batch took the block class"
    );
    assert_eq!(count("attestation"), attestation + 3.0);
    let (status, results) = batch(
        &http,
        &server,
        &json!({"identifiers": [keys[0]], "signing_request": request}),
    );
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(
        count("block"),
        block + 1.0,
        "one key's reveal is a proposer's"
    );
}
