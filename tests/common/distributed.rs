//! Distributed signing in tests: the profile's 2-of-3 vector (`tests/fixtures/threshold/
//! threshold-2of3.json`, the same bytes as remote-signing-api PR #29's
//! `distributed/test-vectors/threshold-signing.json`), and participant records made the way an
//! operator's import makes them: [`split_for`] and [`import_share`] run `keys split` and `keys
//! import-shares --manifest`; [`insert_participant_share`] builds a record of a chosen secret (the
//! vector's) with the library, in a test process that opens one signer's tokens only.

use hsm_signer::keys::{
    seal_share, Distributed, KeyRecord, KeyStore, ParticipantRef, PublicKeyBytes, ShareId,
};

use super::Signer;

/// One participant of the profile's vector.
pub struct VectorParticipant {
    pub id: u64,
    pub secret: [u8; 32],
    pub public_key: String,
}

/// The profile's 2-of-3 vector: (composite public key, threshold, participants).
pub fn profile_vector() -> (String, u32, Vec<VectorParticipant>) {
    let text = std::fs::read_to_string(super::fixture("threshold/threshold-2of3.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let participants = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut secret = [0u8; 32];
            hex::decode_to_slice(
                p["secret_key"].as_str().unwrap().trim_start_matches("0x"),
                &mut secret,
            )
            .unwrap();
            VectorParticipant {
                id: p["id"].as_str().unwrap().parse().unwrap(),
                secret,
                public_key: p["public_key"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    (
        v["composite_public_key"].as_str().unwrap().to_owned(),
        v["threshold"].as_str().unwrap().parse().unwrap(),
        participants,
    )
}

/// The account of a participant record: its threshold and every participant (id, endpoint).
pub struct Account<'a> {
    pub composite: &'a str,
    pub threshold: u32,
    pub participants: &'a [(u64, &'a str)],
}

/// Make `signer` a participant of `account`: its share `id` with `secret`, sealed on `device`
/// and written to the key store as a participant record (one local share, threshold 1, the
/// account's threshold and participants). Returns the share's public key. Run it while no
/// server is running on `signer`'s data directory (the server reads the store at start).
pub fn insert_participant_share(
    signer: &Signer,
    device: &str,
    account: &Account,
    id: u64,
    secret: &[u8; 32],
) -> PublicKeyBytes {
    let (config, devices) = signer.open();
    let mut store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let composite = PublicKeyBytes::parse(account.composite).unwrap();
    let sk = hsm_signer::bls::secret_key(secret).unwrap();
    let share = seal_share(
        devices.get(device).unwrap(),
        &composite,
        ShareId::new(id).unwrap(),
        &sk,
    )
    .unwrap();
    let share_pubkey = share.pubkey;
    let mut record = KeyRecord::whole(composite, share, "test participant share");
    record.distributed = Some(Distributed {
        signing_threshold: account.threshold,
        participants: account
            .participants
            .iter()
            .map(|(id, endpoint)| ParticipantRef {
                id: ShareId::new(*id).unwrap(),
                endpoint: (*endpoint).to_owned(),
            })
            .collect(),
    });
    store.insert(record).unwrap();
    share_pubkey
}

/// A keystore of a fresh random key and its password file, in `dir` (PBKDF2 at a test's cost).
pub fn random_keystore(
    dir: &std::path::Path,
) -> (
    blst::min_pk::SecretKey,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    use hsm_signer::keys::eip2335::{KdfChoice, Keystore};
    let sk = hsm_signer::bls::random_secret_key().unwrap();
    let ks = Keystore::encrypt(
        &sk.to_bytes(),
        &secrecy::SecretString::from("validator password".to_owned()),
        KdfChoice::Pbkdf2 { c: 1024 },
        Some(hex::encode(sk.sk_to_pk().compress())),
        "m/12381/3600/0/0/0",
    )
    .unwrap();
    let name = hex::encode(&sk.sk_to_pk().compress()[..6]);
    let keystore = dir.join(format!("keystore-{name}.json"));
    std::fs::write(&keystore, ks.to_json()).unwrap();
    let password = dir.join(format!("password-{name}.txt"));
    std::fs::write(&password, "validator password\n").unwrap();
    (sk, keystore, password)
}

/// `keys split` of `keystore` t-of-n for the participants at `endpoints` (share i+1 for
/// endpoint i), run by `splitter`, into `out`.
pub fn split_for(
    splitter: &Signer,
    (keystore, password): (&std::path::Path, &std::path::Path),
    t: usize,
    endpoints: &[String],
    out: &std::path::Path,
) {
    splitter.ok(&[
        "keys",
        "split",
        "--keystore",
        keystore.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
        "--threshold",
        &t.to_string(),
        "--participants",
        &endpoints.join(","),
        "--out",
        out.to_str().unwrap(),
    ]);
}

/// `keys import-shares --manifest` of share `id` of the split in `split_dir`, on `signer`.
pub fn import_share(signer: &Signer, split_dir: &std::path::Path, id: u64) {
    signer.ok(&[
        "keys",
        "import-shares",
        "--manifest",
        split_dir.join("manifest.json").to_str().unwrap(),
        "--keystore",
        split_dir.join(format!("share-{id}.json")).to_str().unwrap(),
        "--password-file",
        split_dir
            .join(format!("share-{id}.password"))
            .to_str()
            .unwrap(),
    ]);
}

/// A 32-byte root of `tag` (0x-hex), to tell messages apart.
pub fn root_hex(tag: u64) -> String {
    format!("0x{tag:064x}")
}

/// A mainnet attestation from `source` to `target` (its slot the target's first), voting for
/// block `tag`.
pub fn attestation(source: u64, target: u64, tag: u64) -> serde_json::Value {
    let mut a = super::fixture_request("ATTESTATION", |_| true);
    a["attestation"]["slot"] = serde_json::json!((target * 32).to_string());
    a["attestation"]["source"]["epoch"] = serde_json::json!(source.to_string());
    a["attestation"]["target"]["epoch"] = serde_json::json!(target.to_string());
    a["attestation"]["beacon_block_root"] = serde_json::json!(root_hex(tag));
    a
}

/// A mainnet Deneb `BLOCK_V2` header at `slot` whose body is `tag`.
pub fn block(slot: u64, tag: u64) -> serde_json::Value {
    let mut b = super::fixture_request("BLOCK_V2", |r| r["beacon_block"]["version"] == "DENEB");
    b["beacon_block"]["block_header"]["slot"] = serde_json::json!(slot.to_string());
    b["beacon_block"]["block_header"]["body_root"] = serde_json::json!(root_hex(tag));
    b
}
