//! `import web3signer`: a Web3Signer key configuration directory (written as its documentation
//! shows it: YAML files of type `file-keystore` and `file-raw`) and a slashing protection
//! interchange, moved into the signer through the real binary. Refused until the operator
//! confirms the source stopped (nothing written, the newest entries shown); then the history
//! refuses a double vote and a double proposal of the migrated keys, and later duties sign
//! with the keys' own signatures (checked with blst against the secrets).

mod common;

use std::path::Path;

use common::{fixture, mainnet_root, Server, Signer, TEST_GVR};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The EIP-2335 test vector's secret (tests/fixtures/eip2335/README.md).
const KEYSTORE_SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
/// The raw key of Web3Signer's own `file-raw` example.
const RAW_SECRET: &str = "25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866";

fn secret(hex_secret: &str) -> blst::min_pk::SecretKey {
    hsm_signer::bls::secret_key(&hex::decode(hex_secret).unwrap()).unwrap()
}

fn pubkey(hex_secret: &str) -> String {
    format!(
        "0x{}",
        hex::encode(hsm_signer::bls::public_key_bytes(&secret(hex_secret)))
    )
}

fn root_hex(tag: u64) -> String {
    format!("0x{tag:064x}")
}

/// Web3Signer's key configuration directory, as its documentation writes the two types.
fn key_config(dir: &Path) -> std::path::PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir_all(keys.join("keystores")).unwrap();
    let keystore = keys.join("keystores/validator_1.json");
    std::fs::copy(fixture("eip2335/keystore-pbkdf2.json"), &keystore).unwrap();
    let password = keys.join("keystores/validator_1.txt");
    std::fs::copy(fixture("eip2335/password.txt"), &password).unwrap();
    std::fs::write(
        keys.join("validator_1.yaml"),
        format!(
            "type: \"file-keystore\"\nkeyType: \"BLS\"\nkeystoreFile: \"{}\"\nkeystorePasswordFile: \"{}\"\n",
            keystore.display(),
            password.display()
        ),
    )
    .unwrap();
    std::fs::write(
        keys.join("validator_2.yaml"),
        format!("type: \"file-raw\"\nkeyType: \"BLS\"\nprivateKey: \"0x{RAW_SECRET}\"\n"),
    )
    .unwrap();
    keys
}

/// Web3Signer's export: validator 1 proposed at slot 100 and voted 5→6; validator 2 voted
/// 7→8, its newest.
fn interchange(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("interchange.json");
    let body = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": TEST_GVR},
        "data": [
            {
                "pubkey": pubkey(KEYSTORE_SECRET),
                "signed_blocks": [{"slot": "100", "signing_root": root_hex(1)}],
                "signed_attestations": [
                    {"source_epoch": "5", "target_epoch": "6", "signing_root": root_hex(2)}
                ]
            },
            {
                "pubkey": pubkey(RAW_SECRET),
                "signed_blocks": [],
                "signed_attestations": [
                    {"source_epoch": "7", "target_epoch": "8", "signing_root": root_hex(3)}
                ]
            }
        ]
    });
    std::fs::write(&file, body.to_string()).unwrap();
    file
}

fn attestation(source: u64, target: u64, tag: u64) -> Value {
    let mut a = common::fixture_request("ATTESTATION", |_| true);
    a.as_object_mut().unwrap().remove("signingRoot");
    a["fork_info"]["genesis_validators_root"] = json!(TEST_GVR);
    a["attestation"]["source"]["epoch"] = json!(source.to_string());
    a["attestation"]["target"]["epoch"] = json!(target.to_string());
    a["attestation"]["beacon_block_root"] = json!(root_hex(tag));
    a
}

fn block(slot: u64, tag: u64) -> Value {
    let mut b = common::fixture_request("BLOCK_V2", |r| r["beacon_block"]["version"] == "DENEB");
    b.as_object_mut().unwrap().remove("signingRoot");
    b["fork_info"]["genesis_validators_root"] = json!(TEST_GVR);
    b["beacon_block"]["block_header"]["slot"] = json!(slot.to_string());
    b["beacon_block"]["block_header"]["body_root"] = json!(root_hex(tag));
    b
}

fn sign(http: &Client, server: &Server, pk: &str, body: &Value) -> (StatusCode, Value) {
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
        .json(body)
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn keys_listed(s: &Signer) -> usize {
    s.ok(&["keys", "list"])
        .lines()
        .filter(|l| l.contains("0x"))
        .count()
}

#[test]
fn a_web3signer_migration_is_refused_until_the_source_stopped_then_history_protects_the_keys() {
    let s = Signer::new();
    let work = tempfile::tempdir().unwrap();
    let keys = key_config(work.path());
    let file = interchange(work.path());
    let args = |stopped: bool| {
        let mut a = vec![
            "import".to_owned(),
            "web3signer".to_owned(),
            "--key-config-path".to_owned(),
            keys.display().to_string(),
            "--interchange".to_owned(),
            file.display().to_string(),
        ];
        if stopped {
            a.push("--source-stopped".to_owned());
        }
        a
    };
    let run = |stopped: bool| {
        let a = args(stopped);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        s.run(&a)
    };

    // Unconfirmed: the newest entries shown (validator 2's vote first), nothing written.
    let out = run(false);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("2 key(s)"), "{stdout}");
    let newest = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Newest entries"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        newest.contains(&pubkey(RAW_SECRET)) && newest.contains("target 8"),
        "{stdout}"
    );
    assert!(stdout.contains("block at slot 100"), "{stdout}");
    assert!(stderr.contains("--source-stopped"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(keys_listed(&s), 0);
    assert!(!s.data_dir().join("slashing-protection.sqlite").exists());

    // A key kept elsewhere (here, HashiCorp Vault) cannot be moved by this: refused whole.
    let vault = keys.join("validator_3.yaml");
    std::fs::write(
        &vault,
        "type: \"hashicorp\"\nkeyType: \"BLS\"\nkeyPath: \"/v1/secret/data/k\"\n",
    )
    .unwrap();
    let out = run(true);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("validator_3.yaml") && stderr.contains("hashicorp"),
        "{stderr}"
    );
    assert_eq!(keys_listed(&s), 0);
    std::fs::remove_file(&vault).unwrap();

    // Another network's history: refused before anything is written.
    let other = work.path().join("other.json");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(TEST_GVR, &root_hex(9));
    std::fs::write(&other, text).unwrap();
    let out = s.run(&[
        "import",
        "web3signer",
        "--key-config-path",
        keys.to_str().unwrap(),
        "--interchange",
        other.to_str().unwrap(),
        "--source-stopped",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another network's history"));
    assert_eq!(keys_listed(&s), 0);

    // Confirmed: history, then keys.
    let out = run(true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = stdout.find("history imported").unwrap();
    let first_key = stdout.find("imported 0x").unwrap();
    assert!(history < first_key, "history first: {stdout}");
    assert!(stdout.contains("2 key(s) imported"), "{stdout}");
    assert_eq!(keys_listed(&s), 2);
    // Again: nothing new.
    let again = run(true);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success()
            && said.contains("0 key(s) imported onto")
            && said.contains("2 already present"),
        "{said}"
    );

    // The imported history refuses what Web3Signer's signatures make slashable, and later
    // duties sign with each key's own signature.
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let (pk1, pk2) = (pubkey(KEYSTORE_SECRET), pubkey(RAW_SECRET));
    for (what, pk, body) in [
        ("double vote of validator 1", &pk1, attestation(5, 6, 20)),
        ("double proposal of validator 1", &pk1, block(100, 21)),
        ("double vote of validator 2", &pk2, attestation(7, 8, 22)),
        (
            "vote surrounding validator 2's",
            &pk2,
            attestation(6, 9, 23),
        ),
    ] {
        let (status, reply) = sign(&http, &server, pk, &body);
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{what}: {reply}");
        assert!(reply.get("signature").is_none(), "{what}");
    }
    for (pk, secret_hex, body) in [
        (&pk1, KEYSTORE_SECRET, attestation(6, 7, 24)),
        (&pk1, KEYSTORE_SECRET, block(101, 25)),
        (&pk2, RAW_SECRET, attestation(8, 9, 26)),
    ] {
        let (status, reply) = sign(&http, &server, pk, &body);
        assert_eq!(status, StatusCode::OK, "{reply}");
        let want = format!(
            "0x{}",
            hex::encode(
                hsm_signer::bls::sign(&secret(secret_hex), &mainnet_root(&body)).compress()
            )
        );
        assert_eq!(reply["signature"], json!(want));
    }
}
