//! Threshold keys through the scheduler on SoftHSM (or kryoptic) tokens: t partials from t
//! devices, combined and verified; failover when a token goes away mid-stream; a corrupted share
//! never produces a released signature and is named.

mod common;

use std::sync::Arc;

use common::{device, signing_fixtures, Server, Signer};
use hsm_signer::bls;
use hsm_signer::consensus::SigningRoot;
use hsm_signer::keys::{self, threshold, KeyRecord, KeyStore, PublicKeyBytes, ShareId};
use hsm_signer::scheduler::SchedulerMetrics as Metrics;
use hsm_signer::scheduler::{Class, JobError, Scheduler, SchedulerConfig, SignJob};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn registration() -> Value {
    signing_fixtures()
        .1
        .into_iter()
        .find(|(_, c)| c["type"] == "VALIDATOR_REGISTRATION")
        .unwrap()
        .1["request"]
        .clone()
}

fn set_device(http: &Client, server: &Server, name: &str, enabled: bool) {
    let resp = http
        .post(server.url(&format!("/admin/devices/{name}")))
        .bearer_auth(server.token())
        .json(&json!({ "enabled": enabled }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn a_2_of_3_key_survives_one_token_going_away_and_recovers_without_restart() {
    let s = Signer::new();
    let devices = format!("{},{},{}", device(1), device(2), device(3));
    let out = s.ok(&[
        "keys",
        "generate",
        "--count",
        "1",
        "--threshold",
        "2",
        "--devices",
        &devices,
    ]);
    let pk = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let url = server.url(&format!("/api/v1/eth2/sign/{pk}"));
    let mut body = registration();
    body.as_object_mut().unwrap().remove("signingRoot");
    let pk_bytes = PublicKeyBytes::parse(&pk).unwrap();
    let network = hsm_signer::consensus::Network::preset("mainnet").unwrap();

    let sign = |i: u64| {
        let mut b = body.clone();
        b["validator_registration"]["timestamp"] = json!(i.to_string());
        let root =
            hsm_signer::consensus::SignRequest::from_json(b.to_string().as_bytes(), network.preset)
                .unwrap()
                .signing_root(&network)
                .unwrap();
        let resp = http.post(&url).json(&b).send().unwrap();
        let status = resp.status();
        let reply: Value = resp.json().unwrap();
        if status == StatusCode::OK {
            let sig = blst::min_pk::Signature::from_bytes(
                &hex::decode(
                    reply["signature"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("0x"),
                )
                .unwrap(),
            )
            .unwrap();
            assert!(
                bls::verify(&pk_bytes.0, &root.0, &sig),
                "a released signature verifies"
            );
        }
        (status, reply)
    };

    // A stream of requests; the second token goes away in the middle of it.
    for i in 0..60u64 {
        if i == 20 {
            set_device(&http, &server, &device(2), false);
        }
        let (status, reply) = sign(i);
        assert_eq!(status, StatusCode::OK, "request {i}: {reply}");
    }
    // With two of three gone, a clear 503.
    set_device(&http, &server, &device(3), false);
    let (status, reply) = sign(100);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("fewer than 2 of the 3 devices"),
        "{reply}"
    );
    // One token back: signing recovers without a restart.
    set_device(&http, &server, &device(2), true);
    for i in 200..210u64 {
        assert_eq!(sign(i).0, StatusCode::OK);
    }
}

/// A 2-of-3 key whose shares `corrupt` hold a wrong secret (the share pubkeys stay the true
/// ones, as if a device had been given the wrong share).
fn corrupted_key(
    devices: &hsm_signer::devices::Devices,
    corrupt: &[u64],
) -> (KeyRecord, blst::min_pk::SecretKey) {
    let sk = bls::random_secret_key().unwrap();
    let pk = PublicKeyBytes(bls::public_key_bytes(&sk));
    let ids: Vec<ShareId> = (1..=3).map(|i| ShareId::new(i).unwrap()).collect();
    let shares = threshold::split(&sk, 2, &ids).unwrap();
    let mut records = Vec::new();
    for (n, (id, share_sk)) in shares.iter().enumerate() {
        let device = devices.get(&device(n + 1)).unwrap();
        let mut record = if corrupt.contains(&id.get()) {
            keys::seal_share(device, &pk, *id, &bls::random_secret_key().unwrap()).unwrap()
        } else {
            keys::seal_share(device, &pk, *id, share_sk).unwrap()
        };
        record.pubkey = PublicKeyBytes(bls::public_key_bytes(share_sk));
        records.push(record);
    }
    let record = KeyRecord {
        version: 1,
        pubkey: pk,
        threshold: 2,
        shares: records,
        origin: "test".into(),
        derivation_path: None,
        remote: Vec::new(),
        distributed: None,
    };
    (record, sk)
}

/// The metrics name `device` as having given a faulty share.
fn assert_named_faulty(metrics: &Metrics, device: &str) {
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "signer_threshold_faulty_shares_count{{device=\"{device}\"}}"
        )),
        "the faulty device is named in the metrics:\n{text}"
    );
}

fn scheduler(devices: hsm_signer::devices::Devices) -> (Scheduler, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    (
        Scheduler::with_config(devices, SchedulerConfig::default(), metrics.clone()),
        metrics,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_share_is_named_excluded_and_never_released() {
    let s = Signer::new();
    let (_config, devices) = s.open();
    // Share 1 is wrong; the scheduler asks shares 1 and 2 first (lowest ids on idle devices).
    let (record, sk) = corrupted_key(&devices, &[1]);
    let record = Arc::new(record);
    let (sched, metrics) = scheduler(devices);
    for i in 0..6u8 {
        let root = [i; 32];
        let sig = sched
            .sign(SignJob {
                arrived: None,
                key: record.clone(),
                signing_root: SigningRoot(root),
                // Blocks too: a device's block thread combines them, and asks again itself.
                class: if i % 2 == 0 {
                    Class::Attestation
                } else {
                    Class::Block
                },
                deadline: None,
                freshness: 0,
                request: None,
            })
            .await
            .unwrap();
        assert_eq!(
            sig.compress(),
            bls::sign(&sk, &root).compress(),
            "the released signature is the key's own"
        );
    }
    assert_named_faulty(&metrics, &device(1));
}

/// Many attestations at once for several keys: the CPU falls behind, so the bulk workers
/// combine and verify them in batches; a key whose share 1 is wrong is among them. Every
/// signature released is the key's own, and the faulty device is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_threshold_signatures_verified_together_has_the_corrupted_share_named() {
    let s = Signer::new();
    let (_config, devices) = s.open();
    let good: Vec<_> = (0..3).map(|_| corrupted_key(&devices, &[])).collect();
    let bad = corrupted_key(&devices, &[1]);
    let keys: Vec<(Arc<KeyRecord>, blst::min_pk::SecretKey)> = good
        .into_iter()
        .chain([bad])
        .map(|(r, sk)| (Arc::new(r), sk))
        .collect();
    let (sched, metrics) = scheduler(devices);
    let sched = Arc::new(sched);
    let mut jobs = Vec::new();
    for i in 0..96u8 {
        let (record, _) = &keys[usize::from(i) % keys.len()];
        let (sched, record) = (sched.clone(), record.clone());
        jobs.push(tokio::spawn(async move {
            sched
                .sign(SignJob {
                    arrived: None,
                    key: record,
                    signing_root: SigningRoot([i; 32]),
                    class: Class::Attestation,
                    deadline: None,
                    freshness: 0,
                    request: None,
                })
                .await
        }));
    }
    for (i, job) in jobs.into_iter().enumerate() {
        let (_, sk) = &keys[i % keys.len()];
        let sig = job
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("job {i}: {e:?}"));
        assert_eq!(
            sig.compress(),
            bls::sign(sk, &[i as u8; 32]).compress(),
            "job {i}: the released signature is the key's own"
        );
    }
    assert_named_faulty(&metrics, &device(1));
    // The herd was verified in batches, not one signature at a time.
    let batched = metrics
        .batch_verified
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(batched >= 2, "{batched} signatures verified in batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_corrupted_shares_of_a_2_of_3_key_release_nothing() {
    let s = Signer::new();
    let (_config, devices) = s.open();
    let (record, _sk) = corrupted_key(&devices, &[1, 3]);
    let record = Arc::new(record);
    let (sched, _metrics) = scheduler(devices);
    let result = sched
        .sign(SignJob {
            arrived: None,
            key: record,
            signing_root: SigningRoot([7; 32]),
            class: Class::Attestation,
            deadline: None,
            freshness: 0,
            request: None,
        })
        .await;
    match result {
        Err(JobError::Unavailable(msg)) => {
            assert!(msg.contains("wrong partial signature from share"), "{msg}")
        }
        other => panic!("expected a refusal naming the faulty shares, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subset_of_devices_gives_the_keys_own_signature() {
    let s = Signer::new();
    let (config, devices) = s.open();
    let mut store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let (record, sk) = corrupted_key(&devices, &[]);
    store.insert(record.clone()).unwrap();
    let record = Arc::new(record);
    let (sched, _metrics) = scheduler(devices.clone());
    // Take each device out in turn: the remaining two always give the same signature.
    for off in [device(1), device(2), device(3)] {
        devices.get(&off).unwrap().set_enabled(false);
        let root = [9; 32];
        let sig = sched
            .sign(SignJob {
                arrived: None,
                key: record.clone(),
                signing_root: SigningRoot(root),
                class: Class::Block,
                deadline: None,
                freshness: 0,
                request: None,
            })
            .await
            .unwrap();
        assert_eq!(
            sig.compress(),
            bls::sign(&sk, &root).compress(),
            "without {off}"
        );
        devices.get(&off).unwrap().set_enabled(true);
    }
}
