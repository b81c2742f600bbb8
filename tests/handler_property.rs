//! A bounded property test of the whole HTTP signing handler (the cargo-fuzz target
//! `fuzz/fuzz_targets/sign_handler.rs` runs the same path unbounded): the real router in
//! process, on a real SoftHSM token holding the fixture key, SQLite slashing protection, and
//! slot deadlines on (a `ManualSlotClock` that moves forward through the run). Thousands of
//! requests, each a request of some type and fork about a slot near the clock, then mutated
//! at random places (absurd numbers, wrong types, missing and unknown fields, long lists,
//! other types' names, broken bytes), with a seeded generator so that a failure replays.
//!
//! The properties: no thread panics; every answer is a status the API defines with a JSON
//! error naming a reason; every signature given verifies under the key over the signing root
//! of what was asked; slashing protection never records a block or attestation ahead of the
//! clock; and the mix is not degenerate (every type both signs and is refused).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{request_at, request_shapes, Signer, FIXTURE_PK};
use hsm_signer::api::policy::Policy;
use hsm_signer::api::{router, AppState};
use hsm_signer::consensus::{ManualSlotClock, Network, Preset, SignRequest, SlotTiming};
use hsm_signer::keys::KeyStore;
use hsm_signer::slashing::SlashingProtection;
use serde_json::{json, Value};

/// Mainnet's genesis time; slots of 12 s, 32 to an epoch.
const GENESIS: u64 = 1_606_824_023;
const SPE: u64 = 32;
const CASES: usize = 3000;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of every value in `v`.
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

const TYPES: [&str; 14] = [
    "AGGREGATION_SLOT",
    "AGGREGATE_AND_PROOF",
    "AGGREGATE_AND_PROOF_V2",
    "ATTESTATION",
    "BLOCK",
    "BLOCK_V2",
    "DEPOSIT",
    "RANDAO_REVEAL",
    "VOLUNTARY_EXIT",
    "SYNC_COMMITTEE_MESSAGE",
    "SYNC_COMMITTEE_SELECTION_PROOF",
    "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
    "VALIDATOR_REGISTRATION",
    "NOT_A_TYPE",
];

/// A value that is wrong somewhere, or right in an odd way.
fn odd_value(rng: &mut Rng) -> Value {
    let deep = (0..rng.below(300)).fold(json!(0), |v, _| json!([v]));
    let choices = [
        json!("18446744073709551615"),
        json!("18446744073709551616"),
        json!("340282366920938463463374607431768211456"),
        json!("-1"),
        json!("0"),
        json!(" 1"),
        json!("1e3"),
        json!("0x"),
        json!("0xzz"),
        json!(format!("0x{}", "ab".repeat(rng.below(200)))),
        json!(""),
        json!("a".repeat(rng.below(5000))),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
        deep,
        json!(TYPES[rng.below(TYPES.len())]),
    ];
    choices[rng.below(choices.len())].clone()
}

/// Change `body` at a random place, one of several ways.
fn mutate(body: &mut Value, rng: &mut Rng) {
    let mut all = Vec::new();
    paths(body, &mut Vec::new(), &mut all);
    let path = all[rng.below(all.len())].clone();
    match rng.below(6) {
        // Replace the value.
        0..=2 => {
            if let Some(v) = at(body, &path) {
                *v = odd_value(rng);
            }
        }
        // Remove it from its object or list.
        3 => {
            if let Some((last, parent)) = path.split_last() {
                match (at(body, parent), last) {
                    (Some(Value::Object(map)), Step::Key(k)) => {
                        map.remove(k);
                    }
                    (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
                        items.remove(*i);
                    }
                    _ => {}
                }
            }
        }
        // An unknown field.
        4 => {
            if let Some(Value::Object(map)) = at(body, &path) {
                map.insert("unexpected".into(), odd_value(rng));
            }
        }
        // A list made long (or a value made a long list).
        _ => {
            let n = [2, 17, 129, 2049, 5000][rng.below(5)];
            if let Some(v) = at(body, &path) {
                let item = match &*v {
                    Value::Array(items) if !items.is_empty() => items[0].clone(),
                    other => other.clone(),
                };
                *v = Value::Array(vec![item; n]);
            }
        }
    }
}

/// The bytes sent: usually the JSON, sometimes broken on the way.
fn encode(body: &Value, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(body).unwrap();
    if rng.chance(10) && !bytes.is_empty() {
        let i = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes.truncate(i),
            1 => bytes[i] = (rng.next() & 0xff) as u8,
            _ => bytes
                .splice(i..i, [0xff, 0xfe, b'"', b'\\', 0])
                .for_each(drop),
        }
    }
    bytes
}

fn verify(signature: &str, root: &[u8; 32]) -> bool {
    use blst::min_pk::{PublicKey, Signature};
    let pk = PublicKey::from_bytes(&hex::decode(&FIXTURE_PK[2..]).unwrap()).unwrap();
    let Ok(sig) = hex::decode(signature.trim_start_matches("0x")) else {
        return false;
    };
    let Ok(sig) = Signature::from_bytes(&sig) else {
        return false;
    };
    sig.verify(
        true,
        root,
        b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_",
        &[],
        &pk,
        true,
    ) == blst::BLST_ERROR::BLST_SUCCESS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_handler_holds_its_properties_under_thousands_of_mutated_requests() {
    // Any panic on any thread (handler, scheduler, device, slashing writer) is counted.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let signer = Signer::with_fixture_key();
    // Every type is signed, voluntary exits too (off unless the policy enables them).
    signer.enable_exits();
    let (config, devices) = signer.open();
    let policy = Policy::build(&config, None).unwrap();
    let keys = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let network = Network::preset("mainnet").unwrap();
    let db = signer.data_dir().join("slashing.sqlite");
    let slashing =
        SlashingProtection::open_sqlite(&db, Some(network.genesis_validators_root.unwrap()))
            .unwrap();
    let mut state = AppState::serving(hsm_signer::app::Signer::new(
        config,
        network.clone(),
        (devices, Default::default()),
        keys,
        Vec::new(),
        Some(slashing.clone()),
    ))
    .with_policy(policy);
    let clock = ManualSlotClock::new(SlotTiming::from_secs(GENESIS, 12));
    state.clock = Some(Arc::new(clock.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let shapes = request_shapes();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut slot: u64 = 10_000_000;
    // (type, status) → count.
    let mut outcomes: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for case in 0..CASES {
        slot += rng.below(3) as u64;
        let now = Duration::from_secs(GENESIS + slot * 12)
            + Duration::from_millis(rng.below(12_000) as u64);
        clock.set_current_time(now);
        let (_, kind, shape) = &shapes[rng.below(shapes.len())];
        let duty = match rng.below(10) {
            0 => [0, u64::MAX, u64::MAX / 12 + 1, 1 << 40][rng.below(4)],
            1..=3 => slot + rng.below(4) as u64,
            _ => slot.saturating_sub(rng.below(70) as u64),
        };
        let duty = if kind == "RANDAO_REVEAL" || kind == "VOLUNTARY_EXIT" {
            duty / SPE
        } else {
            duty
        };
        let mut body = request_at(shape, duty, SPE);
        let mutations = [0, 0, 1, 1, 2, 3][rng.below(6)];
        for _ in 0..mutations {
            mutate(&mut body, &mut rng);
        }
        let bytes = encode(&body, &mut rng);
        let identifier = match rng.below(20) {
            0 => "0xnot-a-key".to_owned(),
            1 => format!("0x{}", "a1".repeat(48)),
            _ => FIXTURE_PK.to_owned(),
        };
        let sent = http
            .post(format!("{base}/api/v1/eth2/sign/{identifier}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(bytes.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            // Over the body limit the server answers 413 and closes without reading the rest;
            // a client still writing sees the connection go. Only there.
            Err(e) if bytes.len() > hsm_signer::api::BODY_LIMIT && e.is_request() => {
                *outcomes.entry((kind.clone(), 413)).or_default() += 1;
                continue;
            }
            Err(e) => panic!(
                "case {case} ({kind}, {} bytes): the connection failed: {e:?}",
                bytes.len()
            ),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("case {case} ({kind}): {status} not JSON ({e}): {text}"));
        match status {
            200 => {
                // Signed: over the root of what was sent, by the fixture key.
                let request = SignRequest::from_json(&bytes, Preset::Mainnet)
                    .unwrap_or_else(|e| panic!("case {case}: signed an unparsable request: {e}"));
                let root = request.signing_root(&network).unwrap();
                let signature = answer["signature"].as_str().unwrap_or_default();
                assert!(
                    verify(signature, root.as_bytes()),
                    "case {case} ({kind}): the signature does not verify over the request's root"
                );
            }
            400 | 403 | 404 | 412 | 413 | 415 | 422 | 503 => {
                let message = answer["message"].as_str().unwrap_or_default();
                assert!(
                    !message.is_empty(),
                    "case {case} ({kind}): {status} without a reason: {text}"
                );
            }
            other => panic!("case {case} ({kind}): status {other}: {text}"),
        }
        *outcomes.entry((kind.clone(), status)).or_default() += 1;
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");

    // Nothing recorded ahead of the clock: the last block at most one slot ahead, the last
    // target at most one epoch ahead.
    let (blocks, targets) = common::recorded_in(&slashing.export_interchange(None).unwrap());
    assert!(!blocks.is_empty() && !targets.is_empty(), "{outcomes:?}");
    assert!(
        blocks.iter().all(|&s| s <= slot + 1),
        "{blocks:?} at {slot}"
    );
    assert!(
        targets.iter().all(|&t| t <= slot / SPE + 1),
        "{targets:?} at {slot}"
    );

    // Not degenerate: each real type was both signed and refused.
    for kind in &TYPES[..13] {
        let count = |pred: &dyn Fn(u16) -> bool| {
            outcomes
                .iter()
                .filter(|((k, s), _)| k == kind && pred(*s))
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        assert!(
            count(&|s| s == 200) > 0,
            "{kind} never signed: {outcomes:?}"
        );
        assert!(
            count(&|s| s != 200) > 0,
            "{kind} never refused: {outcomes:?}"
        );
    }
    eprintln!("{CASES} cases: {outcomes:?}");
}
