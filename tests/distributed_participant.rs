//! The participant side of distributed signing through the real binary, over HTTPS with mutual
//! TLS 1.3 (a PKI minted by rcgen): account discovery, partial signatures checked by blst under
//! the share's public key, the participant's own slashing protection, `GENERIC` and the domains
//! it is refused in, the batch form, the separation of complete and partial endpoints, and who
//! may call the distributed endpoints at all.

mod common;

use common::distributed::{
    attestation, block, insert_participant_share, profile_vector, root_hex, Account,
};
use common::tls::{error_chain, https_client, https_client_tls12, write_identity, Ca, Identity};
use common::{Server, Signer, FIXTURE_PK};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The Ethereum ciphersuite, written here rather than taken from the signer.
const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// The participants of both test accounts (the profile's vector's endpoints).
const PARTICIPANTS: [(u64, &str); 3] = [
    (1, "https://signer-1.example.com"),
    (2, "https://signer-2.example.com"),
    (3, "https://signer-3.example.com"),
];

/// A participant's data directory: the fixture's whole key ([`FIXTURE_PK`]), share 1 of the
/// profile's 2-of-3 vector, and share 2 of a second account.
struct Participant {
    signer: Signer,
    /// The vector's composite key, and this participant's share key (the vector's too).
    composite: String,
    share_pk: String,
    /// The second account's composite key and this participant's share key of it.
    second: String,
    second_share_pk: String,
}

fn public_key(secret: &[u8; 32]) -> String {
    let sk = hsm_signer::bls::secret_key(secret).unwrap();
    format!("0x{}", hex::encode(hsm_signer::bls::public_key_bytes(&sk)))
}

fn scalar(n: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[31] = n;
    s
}

fn participant() -> Participant {
    let signer = Signer::with_fixture_key();
    let (composite, threshold, vector) = profile_vector();
    let one = &vector[0];
    assert_eq!(one.id, 1);
    let account = Account {
        composite: &composite,
        threshold,
        participants: &PARTICIPANTS,
    };
    let share = insert_participant_share(&signer, "softhsm-1", &account, one.id, &one.secret);
    // The share key the signer derived is the vector's.
    assert_eq!(share.to_string(), one.public_key);
    let second = public_key(&scalar(11));
    let second_account = Account {
        composite: &second,
        threshold: 2,
        participants: &PARTICIPANTS,
    };
    let second_share =
        insert_participant_share(&signer, "softhsm-2", &second_account, 2, &scalar(13));
    Participant {
        signer,
        composite,
        share_pk: one.public_key.clone(),
        second,
        second_share_pk: second_share.to_string(),
    }
}

/// The test PKI: the server's CA, and two clients of the clients' CA, of which only
/// `coordinator` is on the allow-list.
struct Pki {
    ca: Ca,
    coordinator: Identity,
    stranger: Identity,
}

/// Serve HTTPS with mutual TLS, `tls.allowed_clients = ["coordinator"]`.
fn configure_mutual_tls(s: &Signer) -> Pki {
    let dir = s.data_dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("participant CA");
    let (cert, key) = write_identity(&dir, "server", &ca.server());
    let clients = Ca::new("coordinators CA");
    let clients_ca = dir.join("clients-ca.pem");
    std::fs::write(&clients_ca, clients.cert_pem()).unwrap();
    s.add_config(&format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {clients_ca:?}\n\
         allowed_clients = [\"coordinator\"]\n"
    ));
    Pki {
        ca,
        coordinator: clients.client("coordinator"),
        stranger: clients.client("stranger"),
    }
}

fn answer(resp: reqwest::blocking::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn post(http: &Client, server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    answer(http.post(server.url(path)).json(body).send().unwrap())
}

fn get(http: &Client, server: &Server, path: &str) -> (StatusCode, Value) {
    answer(http.get(server.url(path)).send().unwrap())
}

fn partial_of(http: &Client, server: &Server, key: &str, body: &Value) -> (StatusCode, Value) {
    post(
        http,
        server,
        &format!("/api/v1/eth2/distributed/sign/{key}"),
        body,
    )
}

fn bytes<const N: usize>(hex_str: &str) -> [u8; N] {
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_str.trim_start_matches("0x"), &mut out).unwrap();
    out
}

/// Whether `signature` is a valid signature of `root` under `public_key` (blst, directly).
fn verifies(public_key: &str, root: &str, signature: &str) -> bool {
    let pk = blst::min_pk::PublicKey::from_bytes(&bytes::<48>(public_key)).unwrap();
    let sig = blst::min_pk::Signature::from_bytes(&bytes::<96>(signature)).unwrap();
    sig.verify(true, &bytes::<32>(root), DST, &[], &pk, true) == blst::BLST_ERROR::BLST_SUCCESS
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

/// `GENERIC` in the profile's form: an object root of 0x11 bytes and a domain of `domain_type`
/// followed by 28 bytes (zero for the all-zero domain of the profile's vector, else 0x22).
fn generic(domain_type: &str) -> Value {
    let rest = if domain_type == "00000000" {
        "00"
    } else {
        "22"
    };
    json!({
        "type": "GENERIC",
        "signing_data": {
            "object_root": format!("0x{}", "11".repeat(32)),
            "domain": format!("0x{domain_type}{}", rest.repeat(28)),
        },
    })
}

/// `sha256(object_root || domain)` of a `GENERIC` request, computed here.
fn generic_root(request: &Value) -> String {
    let data = &request["signing_data"];
    let mut h = Sha256::new();
    h.update(bytes::<32>(data["object_root"].as_str().unwrap()));
    h.update(bytes::<32>(data["domain"].as_str().unwrap()));
    format!("0x{}", hex::encode(h.finalize()))
}

#[test]
fn partials_are_the_shares_signatures_after_the_participants_own_checks() {
    let p = participant();
    let pki = configure_mutual_tls(&p.signer);
    let server = Server::start(&p.signer, &["--no-slot-deadlines"]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let http = https_client(&pki.ca.cert_pem(), Some(&pki.coordinator));
    let (composite, second) = (p.composite.as_str(), p.second.as_str());

    // Discovery: both accounts, this participant's id and share key, the common metadata,
    // uint64s as decimal strings.
    let (status, list) = get(&http, &server, "/api/v1/eth2/distributed/accounts");
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let expected_participants: Vec<Value> = PARTICIPANTS
        .iter()
        .map(|(id, endpoint)| json!({ "id": id.to_string(), "endpoint": endpoint }))
        .collect();
    let expected = json!({
        "participant_id": "1",
        "public_key": p.share_pk,
        "composite_public_key": composite,
        "signing_threshold": "2",
        "participants": expected_participants,
    });
    assert!(list.contains(&expected), "{list:?}");
    let (status, one) = get(
        &http,
        &server,
        &format!("/api/v1/eth2/distributed/accounts/{composite}"),
    );
    assert_eq!((status, &one), (StatusCode::OK, &expected));
    let (_, other) = get(
        &http,
        &server,
        &format!("/api/v1/eth2/distributed/accounts/{second}"),
    );
    assert_eq!(other["participant_id"], "2");
    assert_eq!(other["public_key"].as_str().unwrap(), p.second_share_pk);
    let unknown = format!("0x{}", "ab".repeat(48));
    for (id, want) in [
        (unknown.as_str(), StatusCode::NOT_FOUND),
        (FIXTURE_PK, StatusCode::NOT_FOUND),
        ("0x1234", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = get(
            &http,
            &server,
            &format!("/api/v1/eth2/distributed/accounts/{id}"),
        );
        assert_eq!(status, want, "{id}: {body}");
    }

    // An attestation: the partial is the share's signature (not the validator's) of the root
    // the complete endpoint signs for the same request on a whole key.
    let vote = attestation(99, 100, 1);
    let (status, partial) = partial_of(&http, &server, composite, &vote);
    assert_eq!(status, StatusCode::OK, "{partial}");
    assert_eq!(partial["participant_id"], "1");
    let root = partial["signing_root"].as_str().unwrap().to_owned();
    let signature = partial["signature"].as_str().unwrap();
    assert!(verifies(&p.share_pk, &root, signature));
    assert!(!verifies(composite, &root, signature));
    let (status, complete) = post(
        &http,
        &server,
        &format!("/api/v1/eth2/sign/{FIXTURE_PK}"),
        &vote,
    );
    assert_eq!(status, StatusCode::OK, "{complete}");
    assert!(verifies(
        FIXTURE_PK,
        &root,
        complete["signature"].as_str().unwrap()
    ));
    // The same request again, with its root supplied: the same partial; a wrong root: 400.
    let mut with_root = vote.clone();
    with_root["signingRoot"] = json!(root);
    let (status, again) = partial_of(&http, &server, composite, &with_root);
    assert_eq!((status, &again), (StatusCode::OK, &partial));
    with_root["signingRoot"] = json!(root_hex(7));
    let (status, body) = partial_of(&http, &server, composite, &with_root);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("signing root mismatch"), "{body}");

    // The participant's own slashing protection: a double vote, a surround vote, a second
    // block at one slot are refused (412), whatever the coordinator decided.
    let (status, block_partial) = partial_of(&http, &server, composite, &block(10, 1));
    assert_eq!(status, StatusCode::OK, "{block_partial}");
    assert!(verifies(
        &p.share_pk,
        block_partial["signing_root"].as_str().unwrap(),
        block_partial["signature"].as_str().unwrap()
    ));
    for (what, request) in [
        ("double vote", attestation(99, 100, 2)),
        ("surround vote", attestation(98, 101, 3)),
        ("double proposal", block(10, 2)),
    ] {
        let (status, body) = partial_of(&http, &server, composite, &request);
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{what}: {body}");
        assert!(
            message(&body).starts_with("refused by slashing protection: "),
            "{what}: {body}"
        );
    }

    // GENERIC: refused in a domain the specs define (the profile's own vector among them: its
    // all-zero domain is the proposer's), signed in one they do not.
    for (domain_type, name) in [
        ("00000000", "DOMAIN_BEACON_PROPOSER"),
        ("01000000", "DOMAIN_BEACON_ATTESTER"),
        ("04000000", "DOMAIN_VOLUNTARY_EXIT"),
        ("0b000000", "DOMAIN_BEACON_BUILDER"),
        ("00000001", "DOMAIN_APPLICATION_BUILDER"),
    ] {
        let (status, body) = partial_of(&http, &server, composite, &generic(domain_type));
        assert_eq!(status, StatusCode::FORBIDDEN, "{domain_type}: {body}");
        assert!(
            message(&body).contains(name) && message(&body).contains(&format!("0x{domain_type}")),
            "{domain_type}: {body}"
        );
    }
    let opaque = generic("10000000");
    let (status, body) = partial_of(&http, &server, composite, &opaque);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["signing_root"].as_str().unwrap(),
        generic_root(&opaque)
    );
    assert!(verifies(
        &p.share_pk,
        &generic_root(&opaque),
        body["signature"].as_str().unwrap()
    ));
    // GENERIC is no request of the complete endpoints.
    let (status, body) = post(
        &http,
        &server,
        &format!("/api/v1/eth2/sign/{FIXTURE_PK}"),
        &opaque,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("distributed endpoints"), "{body}");

    // Separation: a share is never served as a validator key, and a validator key never as a
    // share.
    let (status, body) = post(
        &http,
        &server,
        &format!("/api/v1/eth2/sign/{composite}"),
        &attestation(200, 201, 1),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        message(&body).contains("distributed share")
            && message(&body).contains("/api/v1/eth2/distributed/sign"),
        "{body}"
    );
    let (status, body) = partial_of(&http, &server, FIXTURE_PK, &attestation(200, 201, 1));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        message(&body).contains("not a distributed account"),
        "{body}"
    );
    let (_, listed) = get(&http, &server, "/api/v1/eth2/publicKeys");
    assert_eq!(listed, json!([FIXTURE_PK]), "{listed}");

    // The batch form: one result per identifier, in order; a failing one shifts nothing.
    let identifiers = [composite, unknown.as_str(), second, FIXTURE_PK];
    let (status, results) = post(
        &http,
        &server,
        "/api/v1/eth2/distributed/sign",
        &json!({ "identifiers": identifiers, "signing_request": attestation(100, 101, 4) }),
    );
    assert_eq!(status, StatusCode::OK, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 4, "{results:?}");
    for (result, id) in results.iter().zip(identifiers) {
        assert_eq!(result["identifier"], id, "{result}");
    }
    let batch_root = results[0]["signing_root"].as_str().unwrap();
    assert_eq!(results[2]["signing_root"].as_str().unwrap(), batch_root);
    assert_eq!(results[0]["participant_id"], "1");
    assert!(verifies(
        &p.share_pk,
        batch_root,
        results[0]["signature"].as_str().unwrap()
    ));
    assert_eq!(results[2]["participant_id"], "2");
    assert!(verifies(
        &p.second_share_pk,
        batch_root,
        results[2]["signature"].as_str().unwrap()
    ));
    assert_eq!(results[1]["error"]["code"], 404, "{}", results[1]);
    assert_eq!(results[3]["error"]["code"], 404, "{}", results[3]);
    assert!(
        results[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a distributed account"),
        "{}",
        results[3]
    );
    // A GENERIC batch in a defined domain fails for every key alike: refused whole.
    let (status, body) = post(
        &http,
        &server,
        "/api/v1/eth2/distributed/sign",
        &json!({ "identifiers": [composite], "signing_request": generic("00000000") }),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The counters say what was released and what was refused.
    let metric = |name: &str| server.metric_with(&http, name);
    assert_eq!(
        metric("signer_distributed_partials_total{type=\"ATTESTATION\"}"),
        4.0
    );
    assert_eq!(
        metric("signer_distributed_partials_total{type=\"GENERIC\"}"),
        1.0
    );
    assert_eq!(
        metric("signer_distributed_refused_total{reason=\"slashing\"}"),
        3.0
    );
    assert_eq!(
        metric("signer_distributed_refused_total{reason=\"forbidden\"}"),
        6.0
    );
}

#[test]
fn only_mutual_tls13_clients_on_the_allow_list_reach_the_distributed_endpoints() {
    let p = participant();
    let accounts = "/api/v1/eth2/distributed/accounts";
    let sign_path = format!("/api/v1/eth2/distributed/sign/{}", p.composite);

    // Plain HTTP on loopback: the signer warns at start; the routes refuse everyone, with the
    // admin token or without. The share is not listed as a validator key either.
    let log = p.signer.data_dir().join("plain.log");
    {
        let server = Server::start_logging_to(&p.signer, &["--no-slot-deadlines"], &log);
        let http = Client::new();
        let token = server.token();
        for bearer in [None, Some(token.as_str())] {
            let with = |r: reqwest::blocking::RequestBuilder| match bearer {
                Some(t) => r.bearer_auth(t),
                None => r,
            };
            let (status, body) = answer(with(http.get(server.url(accounts))).send().unwrap());
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(
                message(&body).contains("mutual TLS 1.3") && message(&body).contains("plain HTTP"),
                "{body}"
            );
            let request = with(http.post(server.url(&sign_path))).json(&generic("10000000"));
            assert_eq!(request.send().unwrap().status(), StatusCode::FORBIDDEN);
        }
        let (_, listed) = get(&http, &server, "/api/v1/eth2/publicKeys");
        assert_eq!(listed, json!([FIXTURE_PK]));
        let keystores: Value = http
            .get(server.url("/eth/v1/keystores"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let listed: Vec<&str> = keystores["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["validating_pubkey"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [FIXTURE_PK], "{keystores}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "WARNING: 2 distributed share(s) are loaded, but mutual TLS is not configured"
        ),
        "{text}"
    );

    // Mutual TLS: no certificate, or one not on the allow-list, is refused in the handshake.
    let pki = configure_mutual_tls(&p.signer);
    let server = Server::start(&p.signer, &["--no-slot-deadlines"]);
    for (what, id) in [
        ("no client certificate", None),
        ("a certificate not on the allow-list", Some(&pki.stranger)),
    ] {
        match https_client(&pki.ca.cert_pem(), id)
            .get(server.url(accounts))
            .send()
        {
            Ok(resp) => panic!("{what}: answered {}", resp.status()),
            Err(e) => assert!(e.status().is_none(), "{what}: {}", error_chain(&e)),
        }
    }
    // An allowed client over TLS 1.2 reaches the signing API, not the distributed endpoints,
    // with or without a token.
    let tls12 = https_client_tls12(&pki.ca.cert_pem(), Some(&pki.coordinator));
    let (status, _) = get(&tls12, &server, "/api/v1/eth2/publicKeys");
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&tls12, &server, accounts);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        message(&body).contains("mutual TLS 1.3") && message(&body).contains("TLSv1_2"),
        "{body}"
    );
    let resp = tls12
        .post(server.url(&sign_path))
        .bearer_auth(server.token())
        .json(&generic("10000000"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Over TLS 1.3 it is in.
    let tls13 = https_client(&pki.ca.cert_pem(), Some(&pki.coordinator));
    let (status, body) = get(&tls13, &server, accounts);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&tls13, &server, &sign_path, &generic("10000000"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.metric_with(
            &tls13,
            "signer_distributed_refused_total{reason=\"access\"}"
        ),
        2.0
    );
}
