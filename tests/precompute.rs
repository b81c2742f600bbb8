//! Selection-proof precompute, end to end: the real binary on SoftHSM tokens, fed duties by a
//! **fake beacon node** (an in-process axum server answering the standard Beacon API endpoints
//! with canned, deterministic duties on a 1-second-slot chain — the one stand-in these tests
//! allow). The test plays the validator client: it asks for each duty's proof early in the
//! duty's slot and checks where the answer came from by the signer's own counters.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{Server, Signer};
use hsm_signer::consensus::{Network, SelectionProof, SignRequest};
use hsm_signer::scheduler::{Class, Scheduler, SchedulerConfig, SignJob};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const SLOTS_PER_EPOCH: u64 = 8;
const GENESIS_FORK_VERSION: &str = "0x10000038";
/// The fake chain forks to this version at epoch 2 (slot 16).
const FORK_VERSION_2: &str = "0x20000038";
const FORK_EPOCH: u64 = 2;
const GVR: &str = "0x9a3b0c84f1f2cf1ea9b1d8b8d3c7e1b4a5f6c7d8e9fa0b1c2d3e4f5a6b7c8d9e";

fn root32(hex_root: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex_root[2..], &mut out).unwrap();
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the fake beacon node serves.
struct Chain {
    genesis_time: u64,
    /// (pubkey, index) of the validators the chain knows.
    validators: Vec<(String, u64)>,
    /// Epochs with attester duties (every validator, one slot each).
    attester_epochs: std::ops::RangeInclusive<u64>,
    /// Sync committee: (period, validator position, committee indices). Periods are one epoch.
    sync: Option<(u64, usize, Vec<u64>)>,
    /// Set: the duties of epoch 2 and later move (a re-org) and their dependent root changes.
    reorged: AtomicBool,
    /// Answer nonsense on the first calls of each endpoint.
    nonsense: bool,
    calls: Mutex<BTreeMap<String, u64>>,
}

impl Chain {
    /// Validator `position`'s duty slot in `epoch`.
    fn duty_slot(&self, position: usize, epoch: u64) -> u64 {
        let shift = if self.reorged.load(Ordering::SeqCst) && epoch >= 2 {
            4
        } else {
            0
        };
        epoch * SLOTS_PER_EPOCH + (3 * position as u64 + shift) % SLOTS_PER_EPOCH
    }

    fn fork_info(slot: u64) -> Value {
        let (current, epoch) = if slot / SLOTS_PER_EPOCH >= FORK_EPOCH {
            (FORK_VERSION_2, FORK_EPOCH)
        } else {
            (GENESIS_FORK_VERSION, 0)
        };
        json!({
            "fork": {"previous_version": GENESIS_FORK_VERSION, "current_version": current,
                     "epoch": epoch.to_string()},
            "genesis_validators_root": GVR,
        })
    }

    /// Count a call; the number of earlier calls to the same endpoint.
    fn call(&self, endpoint: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(endpoint.to_owned()).or_default();
        *n += 1;
        *n - 1
    }
}

type Shared = Arc<Chain>;

fn nonsense(body: &'static str) -> Response {
    (StatusCode::OK, body).into_response()
}

async fn genesis(State(c): State<Shared>) -> Response {
    if c.nonsense {
        match c.call("genesis") {
            0 => return nonsense(r#"{"data": {"genesis_time": "soon"}}"#),
            1 => {
                // Far beyond any clock: must be refused, not overflow.
                return Json(json!({"data": {"genesis_time": u64::MAX.to_string(),
                    "genesis_validators_root": GVR, "genesis_fork_version": GENESIS_FORK_VERSION}}))
                .into_response();
            }
            _ => {}
        }
    }
    Json(json!({"data": {
        "genesis_time": c.genesis_time.to_string(),
        "genesis_validators_root": GVR,
        "genesis_fork_version": GENESIS_FORK_VERSION,
    }}))
    .into_response()
}

async fn spec(State(c): State<Shared>) -> Response {
    if c.nonsense && c.call("spec") == 0 {
        return nonsense(r#"{"data": {"SECONDS_PER_SLOT": "0", "SLOTS_PER_EPOCH": "8"}}"#);
    }
    Json(json!({"data": {
        "CONFIG_NAME": "fake-devnet",
        "SECONDS_PER_SLOT": "1",
        "SLOTS_PER_EPOCH": SLOTS_PER_EPOCH.to_string(),
        "EPOCHS_PER_SYNC_COMMITTEE_PERIOD": "1",
        "SYNC_COMMITTEE_SIZE": "512",
        "SYNC_COMMITTEE_SUBNET_COUNT": "4",
        "DEPOSIT_CONTRACT_ADDRESS": "0x00000000219ab540356cbb839cbe05303d7705fa",
    }}))
    .into_response()
}

async fn fork_schedule(State(_): State<Shared>) -> Response {
    Json(json!({"data": [
        {"previous_version": GENESIS_FORK_VERSION, "current_version": GENESIS_FORK_VERSION, "epoch": "0"},
        {"previous_version": GENESIS_FORK_VERSION, "current_version": FORK_VERSION_2,
         "epoch": FORK_EPOCH.to_string()},
    ]}))
    .into_response()
}

async fn validators(State(c): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    if c.nonsense {
        match c.call("validators") {
            0 => return nonsense("not json at all"),
            1 => {
                return nonsense(r#"{"data": [{"index": "-1", "validator": {"pubkey": "0x00"}}]}"#)
            }
            2 => {
                // A validator nobody asked for.
                let other = format!("0x{}", "ab".repeat(48));
                return Json(json!({"data": [{"index": "7", "validator": {"pubkey": other}}]}))
                    .into_response();
            }
            _ => {}
        }
    }
    // The Beacon API's array query, `id=a&id=b`, read as Lodestar 1.5.1 reads it: a comma list
    // is one id that matches no validator.
    let asked: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, id)| id.to_lowercase())
        .collect();
    let data: Vec<Value> = c
        .validators
        .iter()
        .filter(|(pk, _)| asked.contains(pk))
        .map(|(pk, i)| {
            json!({"index": i.to_string(), "balance": "32000000000", "status": "active_ongoing",
                   "validator": {"pubkey": pk, "effective_balance": "32000000000"}})
        })
        .collect();
    Json(json!({"execution_optimistic": false, "finalized": false, "data": data})).into_response()
}

fn asked_indices(body: &[u8]) -> Vec<u64> {
    serde_json::from_slice::<Vec<String>>(body)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

async fn attester(
    State(c): State<Shared>,
    UrlPath(epoch): UrlPath<u64>,
    body: axum::body::Bytes,
) -> Response {
    if c.nonsense {
        match c.call("attester") {
            0 => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            1 => return nonsense(r#"{"dependent_root": "0x12", "data": []}"#),
            2 => {
                return Json(json!({"dependent_root": GVR, "data": [{
                    "pubkey": c.validators[0].0, "validator_index": c.validators[0].1.to_string(),
                    "committee_index": "0", "committee_length": "1", "committees_at_slot": "1",
                    "validator_committee_index": "0", "slot": "18446744073709551615"}]}))
                .into_response()
            }
            3 => return nonsense(r#"{"dependent_root": 5, "data": {"slot": []}}"#),
            _ => {}
        }
    }
    let asked = asked_indices(&body);
    let reorged = c.reorged.load(Ordering::SeqCst) && epoch >= 2;
    let mut root = [epoch as u8; 32];
    root[31] = u8::from(reorged);
    let data: Vec<Value> = if c.attester_epochs.contains(&epoch) {
        c.validators
            .iter()
            .enumerate()
            .filter(|(_, (_, i))| asked.contains(i))
            .map(|(pos, (pk, i))| {
                json!({"pubkey": pk, "validator_index": i.to_string(), "committee_index": "0",
                       "committee_length": "3", "committees_at_slot": "1",
                       "validator_committee_index": pos.to_string(),
                       "slot": c.duty_slot(pos, epoch).to_string()})
            })
            .collect()
    } else {
        Vec::new()
    };
    Json(json!({"dependent_root": format!("0x{}", hex::encode(root)),
                "execution_optimistic": false, "data": data}))
    .into_response()
}

async fn sync(
    State(c): State<Shared>,
    UrlPath(epoch): UrlPath<u64>,
    body: axum::body::Bytes,
) -> Response {
    if c.nonsense && c.call("sync") == 0 {
        // A committee index far beyond the committee.
        return Json(json!({"data": [{"pubkey": c.validators[0].0,
            "validator_index": c.validators[0].1.to_string(),
            "validator_sync_committee_indices": ["18446744073709551615"]}]}))
        .into_response();
    }
    let asked = asked_indices(&body);
    let data: Vec<Value> = match &c.sync {
        Some((period, pos, indices)) if *period == epoch => {
            let (pk, i) = &c.validators[*pos];
            if asked.contains(i) {
                let indices: Vec<String> = indices.iter().map(u64::to_string).collect();
                vec![json!({"pubkey": pk, "validator_index": i.to_string(),
                            "validator_sync_committee_indices": indices})]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    Json(json!({"execution_optimistic": false, "data": data})).into_response()
}

/// Serve `chain` on a loopback port from a thread of its own; returns the base URL.
fn start_fake_beacon_node(chain: Shared) -> String {
    let app = Router::new()
        .route("/eth/v1/beacon/genesis", get(genesis))
        .route("/eth/v1/config/spec", get(spec))
        .route("/eth/v1/config/fork_schedule", get(fork_schedule))
        .route("/eth/v1/beacon/states/head/validators", get(validators))
        .route("/eth/v1/validator/duties/attester/{epoch}", post(attester))
        .route("/eth/v1/validator/duties/sync/{epoch}", post(sync))
        .with_state(chain);
    common::beacon::serve_router(app)
}

/// A signer with `n` fresh keys; returns them in generation order.
fn signer_with_keys(n: usize) -> (Signer, Vec<String>) {
    let s = Signer::new();
    let out = s.ok(&["keys", "generate", "--count", &n.to_string()]);
    let pks: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("0x") && l.len() == 98)
        .map(str::to_lowercase)
        .collect();
    assert_eq!(pks.len(), n, "{out}");
    (s, pks)
}

/// The consensus config of the fake chain, for the signer's `--network`.
fn network_file(dir: &Path, genesis_time: u64) -> PathBuf {
    let path = dir.join("fake-devnet.yaml");
    std::fs::write(
        &path,
        format!(
            "CONFIG_NAME: 'fake-devnet'\nPRESET_BASE: 'mainnet'\nGENESIS_FORK_VERSION: {GENESIS_FORK_VERSION}\n\
             MIN_GENESIS_TIME: {genesis_time}\nGENESIS_DELAY: 0\nSECONDS_PER_SLOT: 1\nSLOTS_PER_EPOCH: {SLOTS_PER_EPOCH}\n\
             ALTAIR_FORK_VERSION: {FORK_VERSION_2}\nALTAIR_FORK_EPOCH: {FORK_EPOCH}\n"
        ),
    )
    .unwrap();
    path
}

fn client() -> Client {
    common::http()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < until, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Play the validator client: wait until `slot` has begun (plus a little), as a client asking
/// early in the slot would.
fn at_slot_start(genesis_time: u64, slot: u64) {
    at_ms_after_genesis(genesis_time, slot * 1000 + 30);
}

/// Wait until `ms` milliseconds after genesis (slots are one second).
fn at_ms_after_genesis(genesis_time: u64, ms: u64) {
    let when = UNIX_EPOCH + Duration::from_secs(genesis_time) + Duration::from_millis(ms);
    if let Ok(ahead) = when.duration_since(SystemTime::now()) {
        std::thread::sleep(ahead);
    }
}

fn aggregation_slot(slot: u64) -> Value {
    json!({"type": "AGGREGATION_SLOT", "fork_info": Chain::fork_info(slot),
           "aggregation_slot": {"slot": slot.to_string()}})
}

fn sync_selection(slot: u64, subcommittee: u64) -> Value {
    json!({"type": "SYNC_COMMITTEE_SELECTION_PROOF", "fork_info": Chain::fork_info(slot),
           "sync_aggregator_selection_data": {"slot": slot.to_string(),
                                              "subcommittee_index": subcommittee.to_string()}})
}

/// Sign over HTTP; insist on 200 and a signature that verifies under `pk` over our root.
fn sign_ok(server: &Server, network: &Network, pk: &str, request: &Value) {
    let resp = client()
        .post(server.url(&format!("/api/v1/eth2/sign/{pk}")))
        .header("Accept", "application/json")
        .json(request)
        .send()
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 200, "{request}: {body}");
    let sig_hex = body["signature"].as_str().unwrap();
    let sig = blst::min_pk::Signature::from_bytes(&hex::decode(&sig_hex[2..]).unwrap()).unwrap();
    let root = SignRequest::from_json(request.to_string().as_bytes(), network.preset)
        .unwrap()
        .signing_root(network)
        .unwrap();
    let pk_bytes = hex::decode(&pk[2..]).unwrap();
    assert!(
        hsm_signer::bls::verify(&pk_bytes, root.as_bytes(), &sig),
        "signature for {request} does not verify"
    );
}

struct Setup {
    _signer: Signer,
    server: Server,
    chain: Shared,
    network: Network,
    pks: Vec<String>,
}

/// Three validators (indices 100, 101, 102), a chain whose genesis is a few seconds ahead (so
/// every duty lies ahead of the signer's start), attester duties in epochs 1 and 2 and, if
/// `sync`, validator 0 in the sync committee of period 1 at positions 5 and 200 (subcommittees
/// 0 and 1).
fn setup(sync: bool, nonsense: bool) -> Setup {
    setup_with(sync, nonsense, |_, _| {})
}

/// [`setup`], with `prepare` run on the data directory before the signer starts.
fn setup_with(sync: bool, nonsense: bool, prepare: impl FnOnce(&Signer, &[String])) -> Setup {
    let (signer, pks) = signer_with_keys(3);
    prepare(&signer, &pks);
    let genesis_time = now_secs() + 4;
    let chain = Arc::new(Chain {
        genesis_time,
        validators: pks
            .iter()
            .enumerate()
            .map(|(i, pk)| (pk.clone(), 100 + i as u64))
            .collect(),
        attester_epochs: 1..=2,
        sync: sync.then(|| (1, 0, vec![5, 200])),
        reorged: AtomicBool::new(false),
        nonsense,
        calls: Mutex::default(),
    });
    let url = start_fake_beacon_node(chain.clone());
    let net = network_file(signer.data_dir(), genesis_time);
    let network = Network::from_config_file(&net).unwrap();
    let server = Server::start(
        &signer,
        &[
            "--network",
            net.to_str().unwrap(),
            "--beacon-node-url",
            &url,
        ],
    );
    Setup {
        _signer: signer,
        server,
        chain,
        network,
        pks,
    }
}

#[test]
fn every_duty_proof_is_cached_before_its_slot_and_served_without_a_device_operation() {
    let Setup {
        server,
        chain,
        network,
        pks,
        _signer: _data_dir,
    } = setup(true, false);
    // Every duty of the fake chain, as the validator client would ask for them: (when, in ms
    // after genesis; slot; validator; request). Early in the duty's slot ...
    let mut asks: Vec<(u64, u64, String, Value)> = Vec::new();
    for epoch in chain.attester_epochs.clone() {
        for (pos, pk) in pks.iter().enumerate() {
            let slot = chain.duty_slot(pos, epoch);
            asks.push((slot * 1000 + 30, slot, pk.clone(), aggregation_slot(slot)));
        }
    }
    // A sync committee signs for the slots before its period's last: period 1 (epoch 1, slots
    // 8..=15) signs at slots 7..=14.
    for slot in SLOTS_PER_EPOCH - 1..2 * SLOTS_PER_EPOCH - 1 {
        for sub in [0, 1] {
            asks.push((
                slot * 1000 + 30,
                slot,
                pks[0].clone(),
                sync_selection(slot, sub),
            ));
        }
    }
    let proofs = asks.len();
    assert_eq!(proofs, 6 + 16);
    // ... and, as a Lighthouse client does for its subnet subscriptions, 8 slots ahead at
    // mid-slot (for duties whose proof the signer had a full slot to make).
    for (_, slot, pk, request) in asks.clone() {
        if request["type"] == "AGGREGATION_SLOT" && slot >= 10 {
            asks.push(((slot - 8) * 1000 + 600, slot, pk, request));
        }
    }
    asks.sort_by_key(|(when, ..)| *when);
    for (when, slot, pk, request) in &asks {
        at_ms_after_genesis(chain.genesis_time, *when);
        let hits = server.metric("signer_selection_proof_cache_hits_total");
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH + Duration::from_secs(chain.genesis_time))
            .unwrap()
            .as_millis();
        sign_ok(&server, &network, pk, request);
        assert_eq!(
            server.metric("signer_selection_proof_cache_hits_total"),
            hits + 1.0,
            "slot {slot}, asked {when} ms after genesis (sent at {sent} ms): {request} was not answered from the \
             cache (joined {}, taken over {}, misses {}, precomputed {}, missed deadline {})",
            server.metric("signer_selection_proof_cache_joined_total"),
            server.metric("signer_selection_proof_cache_taken_over_total"),
            server.metric("signer_selection_proof_cache_misses_total"),
            server.metric("signer_selection_proofs_precomputed_total"),
            server.metric("signer_selection_proofs_missed_deadline_total"),
        );
    }
    assert_eq!(
        server.metric("signer_selection_proof_cache_misses_total"),
        0.0
    );
    let precomputed = server.metric("signer_selection_proofs_precomputed_total");
    assert_eq!(precomputed, proofs as f64, "one proof per duty, each once");
    // The server process's devices did exactly the precompute's operations: none for the
    // validator client's requests.
    assert_eq!(server.metric("signer_device_operations"), precomputed);
    assert_eq!(
        server.metric("signer_selection_proofs_missed_deadline_total"),
        0.0
    );
    // Past slots' proofs are dropped.
    wait_for(
        "the cache empties after the last duty",
        Duration::from_secs(30),
        || server.metric("signer_selection_proof_cache_entries") == 0.0,
    );
}

#[test]
fn a_dependent_root_change_drops_the_old_proofs_and_precomputes_the_new_duties() {
    let Setup {
        server,
        chain,
        network,
        pks,
        _signer: _data_dir,
    } = setup(false, false);
    let before: Vec<u64> = (0..3).map(|p| chain.duty_slot(p, 2)).collect();
    // Slot 16's proof is signed at mid-slot 8; re-org epoch 2 while the signer holds it.
    at_slot_start(chain.genesis_time, 11);
    wait_for(
        "epoch 2's first proof to be precomputed",
        Duration::from_secs(20),
        || server.metric("signer_selection_proofs_precomputed_total") >= 4.0,
    );
    chain.reorged.store(true, Ordering::SeqCst);
    let after: Vec<u64> = (0..3).map(|p| chain.duty_slot(p, 2)).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    wait_for("the re-org to drop proofs", Duration::from_secs(20), || {
        server.metric("signer_selection_proofs_dropped_reorg_total") >= 1.0
    });
    let mut asks: Vec<(u64, usize, bool)> = (0..3)
        .flat_map(|p| [(before[p], p, false), (after[p], p, true)])
        .collect();
    asks.sort();
    for (slot, pos, current) in asks {
        at_slot_start(chain.genesis_time, slot);
        let (hits, misses) = (
            server.metric("signer_selection_proof_cache_hits_total"),
            server.metric("signer_selection_proof_cache_misses_total"),
        );
        // A stale duty's proof is still signed (normally, on a device); a current one is cached.
        sign_ok(&server, &network, &pks[pos], &aggregation_slot(slot));
        let hit = server.metric("signer_selection_proof_cache_hits_total") == hits + 1.0;
        let missed = server.metric("signer_selection_proof_cache_misses_total") == misses + 1.0;
        if current {
            assert!(
                hit && !missed,
                "slot {slot}: the re-orged duty's proof was not cached"
            );
        } else {
            assert!(
                missed && !hit,
                "slot {slot}: the dropped duty's proof was still cached"
            );
        }
    }
}

fn key_file(signer: &Signer, pk: &str) -> PathBuf {
    signer.data_dir().join("keys").join(format!("{pk}.json"))
}

#[test]
fn precompute_follows_a_reload_onto_the_new_keys_and_scheduler() {
    // The third validator's key is not in the key store when the signer starts.
    let parked = tempfile::tempdir().unwrap();
    let parked_file = parked.path().join("key.json");
    let Setup {
        server,
        chain,
        network,
        pks,
        _signer: signer,
    } = setup_with(false, false, |s, pks| {
        std::fs::rename(key_file(s, &pks[2]), &parked_file).unwrap();
    });
    wait_for(
        "precompute for the first keys",
        Duration::from_secs(30),
        || server.metric("signer_selection_proofs_precomputed_total") >= 1.0,
    );
    std::fs::rename(&parked_file, key_file(&signer, &pks[2])).unwrap();
    assert_eq!(server.reload_and_wait()["status"], "completed");
    // The new key's duties (looked up at the next epoch) are precomputed on the new scheduler.
    let slot = chain.duty_slot(2, *chain.attester_epochs.end());
    at_slot_start(chain.genesis_time, slot);
    let hits = server.metric("signer_selection_proof_cache_hits_total");
    sign_ok(&server, &network, &pks[2], &aggregation_slot(slot));
    assert_eq!(
        server.metric("signer_selection_proof_cache_hits_total"),
        hits + 1.0,
        "slot {slot}: the reloaded key's proof was not precomputed"
    );
}

#[test]
fn sigterm_stops_the_signer_cleanly_while_precompute_runs() {
    let Setup {
        mut server,
        _signer: _data_dir,
        ..
    } = setup(true, false);
    wait_for("precompute to run", Duration::from_secs(30), || {
        server.metric("signer_selection_proofs_precomputed_total") >= 1.0
    });
    let pid = server.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = None;
    wait_for("the signer to exit", Duration::from_secs(30), || {
        status = server.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "exit status {status:?}");
}

/// Live signing, with the beacon node unusable: a selection proof (a cache miss, signed on the
/// device) and an attestation both sign; the server stays up.
fn live_signing_works(server: &mut Server, network: &Network, pk: &str, slot: u64) {
    // At the start of the slot, so the attestation's deadline (the next slot) is a slot away.
    at_slot_start(network.genesis_time.unwrap(), slot);
    sign_ok(server, network, pk, &aggregation_slot(slot));
    let epoch = slot / SLOTS_PER_EPOCH;
    let root = format!("0x{}", "11".repeat(32));
    let attestation = json!({"type": "ATTESTATION", "fork_info": Chain::fork_info(slot),
        "attestation": {"slot": slot.to_string(), "index": "0", "beacon_block_root": root,
            "source": {"epoch": epoch.saturating_sub(1).to_string(), "root": root},
            "target": {"epoch": epoch.to_string(), "root": root}}});
    sign_ok(server, network, pk, &attestation);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the signer exited"
    );
}

#[test]
fn with_the_beacon_node_down_live_signing_is_unaffected() {
    let (signer, pks) = signer_with_keys(1);
    // A port with nothing behind it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let genesis_time = now_secs() - 100;
    let net = network_file(signer.data_dir(), genesis_time);
    // The root is configured: the node is the only source of nothing, so its silence only
    // costs the precompute.
    let network = Network::from_config_file(&net)
        .unwrap()
        .with_genesis_validators_root(root32(GVR))
        .unwrap();
    let mut server = Server::start(
        &signer,
        &[
            "--network",
            net.to_str().unwrap(),
            "--genesis-validators-root",
            GVR,
            "--beacon-node-url",
            &url,
        ],
    );
    wait_for("a failed beacon node call", Duration::from_secs(30), || {
        server.metric("signer_beacon_node_errors_total") >= 1.0
    });
    let slot = now_secs() - genesis_time + 1;
    live_signing_works(&mut server, &network, &pks[0], slot);
    assert_eq!(
        server.metric("signer_selection_proof_cache_misses_total"),
        1.0
    );
    assert_eq!(
        server.metric("signer_selection_proofs_precomputed_total"),
        0.0
    );
}

#[test]
fn a_beacon_node_answering_nonsense_neither_breaks_live_signing_nor_precompute() {
    let Setup {
        mut server,
        chain,
        network,
        pks,
        _signer: _data_dir,
    } = setup(true, true);
    // Every endpoint's nonsense has been answered (and counted) ...
    wait_for(
        "every kind of nonsense to be served",
        Duration::from_secs(40),
        || {
            let calls = chain.calls.lock().unwrap();
            ["genesis", "spec", "validators", "attester", "sync"]
                .iter()
                .all(|e| calls.get(*e).copied().unwrap_or(0) >= 2)
                && calls.get("genesis").copied().unwrap_or(0) >= 3
                && calls.get("attester").copied().unwrap_or(0) >= 5
        },
    );
    assert!(server.metric("signer_beacon_node_errors_total") >= 8.0);
    // ... while live signing went on; and once the node makes sense, precompute resumes.
    let slot = now_secs() - chain.genesis_time + 1;
    live_signing_works(&mut server, &network, &pks[1], slot);
    wait_for("precompute to resume", Duration::from_secs(30), || {
        server.metric("signer_selection_proofs_precomputed_total") >= 1.0
    });
    // The sync duty whose committee index was nonsense never produced a proof for a
    // subcommittee that does not exist: the only sync proofs are for subcommittees 0 and 1.
    let last = 2 * SLOTS_PER_EPOCH - 2;
    at_slot_start(chain.genesis_time, last);
    let hits = server.metric("signer_selection_proof_cache_hits_total");
    sign_ok(&server, &network, &pks[0], &sync_selection(last, 1));
    assert_eq!(
        server.metric("signer_selection_proof_cache_hits_total"),
        hits + 1.0
    );
}

/// A small in-process harness: one SoftHSM device with two sessions and 20 ms per operation.
struct Bench {
    _signer: Signer,
    scheduler: Scheduler,
    keys: Vec<Arc<hsm_signer::keys::KeyRecord>>,
}

fn bench(fifo: bool) -> Bench {
    use hsm_signer::devices::Devices;
    use hsm_signer::keys::{self, KeyStore};
    let signer = Signer::new();
    let (cfg, devices) = signer.open();
    let mut store = KeyStore::load_strict(&cfg.keys_dir()).unwrap();
    let pks = keys::generate(&mut store, &devices, "softhsm-1", 4).unwrap();
    let mut dev = cfg.device("softhsm-1").unwrap().hsm.clone();
    dev.max_sessions = 2;
    dev.simulated_latency = Some(Duration::from_millis(20));
    let device = Arc::new(hsm::Device::open(dev).unwrap());
    let scheduler = Scheduler::with_config(
        Devices::from_open(vec![device]),
        SchedulerConfig {
            fifo,
            cpu_workers: 1,
            cpu_buffer: Some(2),
            ..Default::default()
        },
        Arc::default(),
    );
    let keys = pks
        .iter()
        .map(|pk| store.get(pk).unwrap().clone())
        .collect();
    Bench {
        _signer: signer,
        scheduler,
        keys,
    }
}

/// How many background jobs may finish ahead of a foreground job without having delayed it:
/// the one on the device (background never holds the last of the two sessions), and those
/// already opened and waiting for or on the one CPU thread (`cpu_buffer` 2 + 1 in progress).
const AHEAD_WITHOUT_DELAY: usize = 1 + 2 + 1;

/// An epoch boundary's herd of 60 precompute jobs queued, then a block and 6 attestations.
/// Returns the event log: `submit <what>` when a foreground job entered the scheduler (logged
/// in the same poll as its submission), then `<what>` when each job finished.
async fn foreground_under_precompute(fifo: bool) -> Vec<&'static str> {
    let b = bench(fifo);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        // The real precompute's jobs: selection-proof roots, background class.
        let proof = SelectionProof {
            slot: 1000 + i,
            subcommittee_index: None,
            fork_version: [0x10, 0, 0, 0x38],
            genesis_validators_root: [0x9a; 32],
        };
        let (s, k, l) = (
            b.scheduler.clone(),
            b.keys[i as usize % 4].clone(),
            log.clone(),
        );
        tasks.push(tokio::spawn(async move {
            s.sign(SignJob {
                arrived: None,
                key: k,
                signing_root: proof.signing_root(),
                class: Class::Background,
                deadline: None,
                freshness: 0,
                request: None,
            })
            .await
            .unwrap();
            l.lock().unwrap().push("background");
        }));
    }
    let s = b.scheduler.clone();
    let limit = Instant::now() + Duration::from_secs(20);
    while s.queued().0 < 50 {
        assert!(Instant::now() < limit, "the herd never queued");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut fg: Vec<(Class, &'static str, &'static str, u8)> =
        vec![(Class::Block, "submit block", "block", 200)];
    fg.extend((0..6).map(|i| {
        (
            Class::Attestation,
            "submit attestation",
            "attestation",
            201 + i,
        )
    }));
    for (class, submit, done, i) in fg {
        let (s, k, l) = (b.scheduler.clone(), b.keys[0].clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let job = SignJob {
                arrived: None,
                key: k,
                signing_root: hsm_signer::consensus::SigningRoot([i; 32]),
                class,
                deadline: None,
                freshness: 0,
                request: None,
            };
            let signing = s.sign(job);
            tokio::pin!(signing);
            // Logged just before the first poll, which submits (no await in between).
            l.lock().unwrap().push(submit);
            signing.await.unwrap();
            l.lock().unwrap().push(done);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    log
}

/// Background jobs that finished after `from` and before `to` (positions in the log).
fn background_between(log: &[&str], from: usize, to: usize) -> usize {
    log[from..to].iter().filter(|x| **x == "background").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompute_never_delays_blocks_and_attestations() {
    let log = foreground_under_precompute(false).await;
    let pos = |x: &str| log.iter().position(|e| *e == x).unwrap();
    let block = background_between(&log, pos("submit block"), pos("block"));
    assert!(
        block <= AHEAD_WITHOUT_DELAY,
        "{block} precompute jobs finished ahead of the block: {log:?}"
    );
    let last_submit = log.iter().rposition(|e| e.starts_with("submit")).unwrap();
    let last_done = log.iter().rposition(|e| *e == "attestation").unwrap();
    let attestations = background_between(&log, last_submit, last_done);
    assert!(
        attestations <= AHEAD_WITHOUT_DELAY,
        "{attestations} precompute jobs finished ahead of the attestations: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|e| **e == "background").count(),
        60,
        "the herd ran too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_priorities_the_precompute_herd_would_delay_the_block() {
    // The contrast that makes the test above meaningful: the same herd in one FIFO.
    let log = foreground_under_precompute(true).await;
    let pos = |x: &str| log.iter().position(|e| *e == x).unwrap();
    let block = background_between(&log, pos("submit block"), pos("block"));
    assert!(
        block >= 40,
        "only {block} precompute jobs ahead of the FIFO block: {log:?}"
    );
}

#[test]
fn precomputed_roots_are_the_oracles() {
    let (_, cases) = common::signing_fixtures();
    let mut checked = 0;
    for (fork, case) in cases {
        let kind = case["type"].as_str().unwrap();
        if kind != "AGGREGATION_SLOT" && kind != "SYNC_COMMITTEE_SELECTION_PROOF" {
            continue;
        }
        let req = &case["request"];
        let hex32 = |v: &Value| -> [u8; 32] {
            hex::decode(&v.as_str().unwrap()[2..])
                .unwrap()
                .try_into()
                .unwrap()
        };
        let hex4 = |v: &Value| -> [u8; 4] {
            hex::decode(&v.as_str().unwrap()[2..])
                .unwrap()
                .try_into()
                .unwrap()
        };
        let num = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
        let (slot, sub) = if kind == "AGGREGATION_SLOT" {
            (num(&req["aggregation_slot"]["slot"]), None)
        } else {
            let d = &req["sync_aggregator_selection_data"];
            (num(&d["slot"]), Some(num(&d["subcommittee_index"])))
        };
        let fork_info = &req["fork_info"]["fork"];
        let version = if slot / 32 >= num(&fork_info["epoch"]) {
            hex4(&fork_info["current_version"])
        } else {
            hex4(&fork_info["previous_version"])
        };
        let proof = SelectionProof {
            slot,
            subcommittee_index: sub,
            fork_version: version,
            genesis_validators_root: hex32(&req["fork_info"]["genesis_validators_root"]),
        };
        assert_eq!(
            proof.signing_root().to_string(),
            case["signing_root"].as_str().unwrap(),
            "{fork} {}",
            case["name"]
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} oracle cases");
}

#[test]
fn bench_scenario_precompute_row_serves_every_selection_proof_from_the_cache() {
    let s = Signer::new();
    let out = s.ok(&[
        "bench",
        "scenario",
        "--validators",
        "64",
        "--blocks",
        "3",
        "--precompute",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let setups = report["setups"].as_array().unwrap();
    assert_eq!(setups.len(), 2, "{report}");
    for setup in setups {
        let on = &setup["precompute"];
        assert_eq!(on["scheduler"], "ours+precompute", "{setup}");
        assert_eq!(on["selection_proof_hit_rate"], 1.0, "{setup}");
        assert_eq!(on["refused"], 0, "{setup}");
        // Latencies are reported beside the precompute-off row of the same run, not asserted:
        // they depend on the machine's load.
        assert!(on["block"]["p99_ms"].as_f64().unwrap() > 0.0);
        // … and compared with it, with the bootstrap's upper bound deciding "no worse".
        for what in ["precompute_block_p99", "precompute_attestation_p99"] {
            let c = &setup[what];
            let upper = c["upper95"].as_f64().unwrap();
            assert!(c["ratio"].as_f64().unwrap() > 0.0, "{setup}");
            assert_eq!(c["no_worse"].as_bool().unwrap(), upper <= 1.10, "{setup}");
        }
        assert!(
            setup["ours"]["selection_proof_hit_rate"].is_null(),
            "{setup}"
        );
    }
}
