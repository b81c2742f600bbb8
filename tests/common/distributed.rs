//! Distributed signing in tests: the profile's 2-of-3 vector (`tests/fixtures/threshold/
//! threshold-2of3.json`, the same bytes as remote-signing-api PR #29's
//! `distributed/test-vectors/threshold-signing.json`), and participant records made the way an
//! operator's import will make them. Until `keys import-shares --manifest` lands,
//! [`insert_participant_share`] builds the record with the library; swap its body for the CLI then.

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
