//! The consensus module against the oracle fixtures in `tests/fixtures/signing/` (mainnet
//! preset) and `tests/fixtures/signing/minimal/` (minimal preset), made by the consensus specs'
//! own Python package: every case's signing root and BLS signature, the supplied-root
//! accessors, tamper sensitivity, each preset's bitfield sizes refused by the other, and a seeded
//! mutation test of the parser.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use blst::min_pk::SecretKey;
use hsm_signer::consensus::{
    ConsensusError, Duty, MessageType, Network, Preset, SignRequest, SlashingData,
};
use serde_json::{json, Map, Value};

const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
const FORKS: [&str; 8] = [
    "phase0",
    "altair",
    "bellatrix",
    "capella",
    "deneb",
    "electra",
    "fulu",
    "gloas",
];

/// The presets with oracle fixtures, and their directories under `tests/fixtures/`.
const PRESETS: [(Preset, &str); 2] = [
    (Preset::Mainnet, "signing"),
    (Preset::Minimal, "signing/minimal"),
];

struct Fixture {
    preset: Preset,
    fork: String,
    secret_key: Vec<u8>,
    /// The fixtures' network: its preset, epoch length and genesis fork version.
    network: Network,
    cases: Vec<Value>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every fixture file of every preset.
fn fixtures() -> Vec<Fixture> {
    PRESETS
        .into_iter()
        .flat_map(|(preset, dir)| FORKS.iter().map(move |fork| fixture(preset, dir, fork)))
        .collect()
}

fn fixture(preset: Preset, dir: &str, fork: &str) -> Fixture {
    let path = fixtures_dir().join(dir).join(format!("{fork}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture file");
    let v: Value = serde_json::from_str(&text).expect("fixture JSON");
    assert_eq!(v["preset"], preset.name(), "{}", path.display());
    let gfv: [u8; 4] = hex_bytes(v["genesis_fork_version"].as_str().expect("gfv"))
        .try_into()
        .expect("4 bytes");
    let network = match preset {
        Preset::Mainnet => network(gfv),
        // The minimal fixtures' own config.yaml, as the server is given it.
        _ => {
            let n = Network::from_config_file(&fixtures_dir().join(dir).join("config.yaml"))
                .expect("config.yaml");
            assert_eq!(n.preset, preset);
            assert_eq!(n.genesis_fork_version, gfv);
            n
        }
    };
    Fixture {
        preset,
        fork: fork.to_string(),
        secret_key: hex_bytes(v["secret_key"].as_str().expect("secret_key")),
        network,
        cases: v["cases"].as_array().expect("cases").clone(),
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s.strip_prefix("0x").expect("0x")).expect("hex")
}

/// Mainnet's timing with the fixture's genesis fork version; no root, no genesis time (the
/// fixtures' roots and slots are random).
fn network(gfv: [u8; 4]) -> Network {
    let mut n = Network::preset("mainnet").expect("mainnet");
    n.name = "fixture".into();
    n.genesis_fork_version = gfv;
    n.genesis_time = None;
    n.genesis_validators_root = None;
    n
}

fn parse(fx: &Fixture, body: &[u8]) -> Result<SignRequest, ConsensusError> {
    SignRequest::from_json(body, fx.preset)
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

#[test]
fn every_fixture_case_gives_the_oracle_signing_root_and_signature() {
    let mut per_fork = BTreeMap::new();
    let mut covered = HashSet::new();
    let mut total = BTreeMap::new();
    for fx in fixtures() {
        let sk = SecretKey::from_bytes(&fx.secret_key).expect("secret key");
        let net = &fx.network;
        for case in &fx.cases {
            let name = case["name"].as_str().unwrap_or("?");
            let name = format!("{}/{name}", fx.preset);
            let req = parse(&fx, &body(&case["request"]))
                .unwrap_or_else(|e| panic!("{}/{name}: {e}", fx.fork));
            assert_eq!(req.message_type().as_str(), case["type"], "{name}");
            assert_eq!(req.supplied_signing_root(), None, "{name}");
            let root = req
                .signing_root(net)
                .unwrap_or_else(|e| panic!("{}/{name}: {e}", fx.fork));
            assert_eq!(
                root.to_string(),
                case["signing_root"].as_str().expect("signing_root"),
                "{}/{name}",
                fx.fork
            );
            let sig = sk.sign(&root.0, DST, &[]).compress();
            assert_eq!(
                format!("0x{}", hex::encode(sig)),
                case["signature"].as_str().expect("signature"),
                "{}/{name}",
                fx.fork
            );
            covered.insert((fx.preset, req.message_type()));
            *total.entry(fx.preset.name()).or_insert(0) += 1;
            *per_fork
                .entry(format!("{}/{}", fx.preset, fx.fork))
                .or_insert(0) += 1;
        }
    }
    eprintln!("fixture cases passed: {total:?} {per_fork:?}");
    for (preset, _) in PRESETS {
        for t in MessageType::ALL {
            assert!(covered.contains(&(preset, t)), "no {preset} case for {t}");
        }
        let n = total.get(preset.name()).copied().unwrap_or(0);
        assert!(n >= 300, "only {n} {preset} cases");
    }
}

#[test]
fn accessors_agree_with_the_request() {
    for fx in fixtures() {
        let spe = fx.network.slots_per_epoch;
        for case in &fx.cases {
            let r = &case["request"];
            let req = parse(&fx, &body(r)).expect("parses");
            let u = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
            let (slashing, duty) = match req.message_type() {
                MessageType::Attestation => (
                    SlashingData::Attestation {
                        source_epoch: u(&r["attestation"]["source"]["epoch"]).expect("source"),
                        target_epoch: u(&r["attestation"]["target"]["epoch"]).expect("target"),
                    },
                    u(&r["attestation"]["slot"]),
                ),
                MessageType::Block => (
                    SlashingData::Block {
                        slot: u(&r["block"]["slot"]).expect("slot"),
                    },
                    u(&r["block"]["slot"]),
                ),
                MessageType::BlockV2 => {
                    let bb = &r["beacon_block"];
                    let slot = u(&bb["block"]["slot"]).or(u(&bb["block_header"]["slot"]));
                    (
                        SlashingData::Block {
                            slot: slot.expect("slot"),
                        },
                        slot,
                    )
                }
                MessageType::RandaoReveal => (SlashingData::None, u(&r["randao_reveal"]["epoch"])),
                // An exit has no validity window (valid from its epoch on, forever).
                MessageType::VoluntaryExit => (SlashingData::None, None),
                MessageType::AggregationSlot => {
                    (SlashingData::None, u(&r["aggregation_slot"]["slot"]))
                }
                MessageType::AggregateAndProof => (
                    SlashingData::None,
                    u(&r["aggregate_and_proof"]["aggregate"]["data"]["slot"]),
                ),
                MessageType::AggregateAndProofV2 => (
                    SlashingData::None,
                    u(&r["aggregate_and_proof"]["data"]["aggregate"]["data"]["slot"]),
                ),
                MessageType::SyncCommitteeMessage => {
                    (SlashingData::None, u(&r["sync_committee_message"]["slot"]))
                }
                MessageType::SyncCommitteeSelectionProof => (
                    SlashingData::None,
                    u(&r["sync_aggregator_selection_data"]["slot"]),
                ),
                MessageType::SyncCommitteeContributionAndProof => (
                    SlashingData::None,
                    u(&r["contribution_and_proof"]["contribution"]["slot"]),
                ),
                MessageType::Deposit | MessageType::ValidatorRegistration => {
                    (SlashingData::None, None)
                }
                MessageType::ExecutionPayloadBid => (
                    SlashingData::None,
                    u(&r["execution_payload_bid"]["data"]["slot"]),
                ),
                MessageType::PayloadAttestationMessage => (
                    SlashingData::None,
                    u(&r["payload_attestation_message"]["data"]["slot"]),
                ),
                MessageType::ProposerPreferences => (
                    SlashingData::None,
                    u(&r["proposer_preferences"]["data"]["proposal_slot"]),
                ),
                // No protocol deadline: an envelope is taken for any unfinalized block, and
                // builder auth is out of protocol.
                MessageType::ExecutionPayloadEnvelope | MessageType::BuilderRequestAuth => {
                    (SlashingData::None, None)
                }
            };
            assert_eq!(req.slashing_data(), slashing, "{}", case["name"]);
            let duty = match req.message_type() {
                MessageType::RandaoReveal => duty.map(Duty::Epoch),
                _ => duty.map(Duty::Slot),
            };
            assert_eq!(
                req.validity_window(spe).map(|w| w.duty),
                duty,
                "{}",
                case["name"]
            );
            let gvr = r["fork_info"]["genesis_validators_root"]
                .as_str()
                .map(|s| <[u8; 32]>::try_from(hex_bytes(s)).expect("32"));
            assert_eq!(req.genesis_validators_root(), gvr, "{}", case["name"]);
        }
    }
}

#[test]
fn supplied_root_is_read_in_either_spelling() {
    let fx = fixture(Preset::Mainnet, "signing", "altair");
    let net = &fx.network;
    let case = &fx.cases[0];
    let root = case["signing_root"].as_str().expect("root");
    let other = format!("0x{}", "ab".repeat(32));
    for key in ["signing_root", "signingRoot"] {
        let mut r = case["request"].clone();
        r[key] = json!(root);
        let req = parse(&fx, &body(&r)).expect("parses");
        assert_eq!(
            req.supplied_signing_root().map(|s| s.to_string()),
            Some(root.to_string())
        );
        assert_eq!(
            req.verified_signing_root(net).expect("matches").to_string(),
            root
        );

        r[key] = json!(other);
        let req = parse(&fx, &body(&r)).expect("parses");
        assert!(matches!(
            req.verified_signing_root(net),
            Err(ConsensusError::Inconsistent(_))
        ));
    }
    // Both spellings, equal: fine. Different: malformed.
    let mut r = case["request"].clone();
    r["signing_root"] = json!(root);
    r["signingRoot"] = json!(root);
    assert!(parse(&fx, &body(&r)).is_ok());
    r["signingRoot"] = json!(other);
    assert!(matches!(
        parse(&fx, &body(&r)),
        Err(ConsensusError::Malformed(_))
    ));
    // A supplied root with a bad shape is malformed too.
    let mut r = case["request"].clone();
    r["signingRoot"] = json!("0x1234");
    assert!(matches!(
        parse(&fx, &body(&r)),
        Err(ConsensusError::Malformed(_))
    ));
}

/// The field that holds the signed message, per type.
fn message_key(r: &Value) -> &'static str {
    let t = r["type"].as_str().unwrap_or("");
    match t {
        "AGGREGATION_SLOT" => "aggregation_slot",
        "AGGREGATE_AND_PROOF" | "AGGREGATE_AND_PROOF_V2" => "aggregate_and_proof",
        "ATTESTATION" => "attestation",
        "BLOCK" => "block",
        "BLOCK_V2" => "beacon_block",
        "DEPOSIT" => "deposit",
        "RANDAO_REVEAL" => "randao_reveal",
        "VOLUNTARY_EXIT" => "voluntary_exit",
        "SYNC_COMMITTEE_MESSAGE" => "sync_committee_message",
        "SYNC_COMMITTEE_SELECTION_PROOF" => "sync_aggregator_selection_data",
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => "contribution_and_proof",
        "VALIDATOR_REGISTRATION" => "validator_registration",
        "EXECUTION_PAYLOAD_BID" => "execution_payload_bid",
        "EXECUTION_PAYLOAD_ENVELOPE" => "execution_payload_envelope",
        "PAYLOAD_ATTESTATION_MESSAGE" => "payload_attestation_message",
        "PROPOSER_PREFERENCES" => "proposer_preferences",
        "BUILDER_REQUEST_AUTH" => "builder_request_auth",
        _ => "",
    }
}

/// JSON-pointer paths of every string leaf under `v`.
fn leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                leaves(c, format!("{path}/{k}"), out)
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                leaves(c, format!("{path}/{i}"), out)
            }
        }
        Value::String(_) => out.push(path),
        _ => {}
    }
}

/// A different value of the same kind: a uint64 ± 1, or hex with one bit of its first byte
/// flipped.
fn tamper(s: &str) -> Option<String> {
    if let Some(hex) = s.strip_prefix("0x") {
        let mut b = hex::decode(hex).ok()?;
        let first = b.first_mut()?;
        *first ^= 0x02;
        Some(format!("0x{}", hex::encode(b)))
    } else {
        let n: u64 = s.parse().ok()?;
        Some(if n == u64::MAX { n - 1 } else { n + 1 }.to_string())
    }
}

#[test]
fn tampering_any_signed_field_changes_the_root() {
    let mut checked = 0;
    for fx in fixtures() {
        let net = &fx.network;
        for case in &fx.cases {
            let r = &case["request"];
            let original = case["signing_root"].as_str().expect("root");
            let key = message_key(r);
            let mut paths = Vec::new();
            leaves(&r[key], format!("/{key}"), &mut paths);
            paths.push("/fork_info/genesis_validators_root".into());
            for path in paths {
                // The block/aggregate version selects a container, and a sync committee
                // message's slot only selects the fork version: neither is itself hashed.
                if path.ends_with("/version") || path == "/sync_committee_message/slot" {
                    continue;
                }
                if r.get("fork_info").is_none() && path.starts_with("/fork_info") {
                    continue;
                }
                let mut t = r.clone();
                let Some(leaf) = t.pointer_mut(&path) else {
                    continue;
                };
                let Some(new) = leaf.as_str().and_then(tamper) else {
                    continue;
                };
                *leaf = Value::String(new);
                // A flipped bit may make a bitfield invalid; that is refused, not signed.
                let Ok(req) = parse(&fx, &body(&t)) else {
                    continue;
                };
                let root = req.signing_root(net).expect("root").to_string();
                assert_ne!(
                    root, original,
                    "{} {} {}: {path}",
                    fx.preset, fx.fork, case["name"]
                );
                checked += 1;
            }
        }
    }
    eprintln!("tampered fields checked: {checked}");
    assert!(checked > 1000);
}

/// Whether a case carries a bitfield whose size the preset decides: an altair or gloas block's
/// sync aggregate (and a gloas block's committee and PTC bits), an electra or gloas aggregate's
/// bits, a sync contribution's bits.
fn has_preset_sized_bits(request: &Value) -> bool {
    let version = |v: &Value| v["version"].as_str().unwrap_or("").to_owned();
    match request["type"].as_str().unwrap_or("") {
        // Full blocks: altair's and gloas' (sync aggregate; gloas also committee and PTC bits).
        "BLOCK_V2" => {
            request["beacon_block"].get("block").is_some()
                && version(&request["beacon_block"]) != "PHASE0"
        }
        "AGGREGATE_AND_PROOF_V2" => {
            matches!(
                version(&request["aggregate_and_proof"]).as_str(),
                "ELECTRA" | "FULU" | "GLOAS"
            )
        }
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => true,
        _ => false,
    }
}

/// The oracle's requests under the other presets: a request with a bitfield of one preset's size
/// is refused under a preset of another size, naming that preset; every other request parses
/// and, hashed under gnosis with the same epoch length and fork versions, gives mainnet's root
/// (gnosis shares mainnet's sizes).
#[test]
fn each_presets_bitfields_are_refused_by_the_other_and_gnosis_hashes_as_mainnet() {
    let (mut refused, mut shared, mut gnosis) = (0, 0, 0);
    for fx in fixtures() {
        for case in &fx.cases {
            let r = &case["request"];
            let name = format!("{} {} {}", fx.preset, fx.fork, case["name"]);
            let sized = has_preset_sized_bits(r);
            for other in Preset::ALL {
                let same_sizes = matches!(
                    (fx.preset, other),
                    (
                        Preset::Mainnet | Preset::Gnosis,
                        Preset::Mainnet | Preset::Gnosis
                    ) | (Preset::Minimal, Preset::Minimal)
                );
                let parsed = SignRequest::from_json(&body(r), other);
                match (same_sizes, sized, parsed) {
                    (false, true, Err(ConsensusError::Malformed(m))) => {
                        let expected = format!("the {other} preset's ");
                        assert!(m.contains(&expected), "{name}: {m}");
                        refused += 1;
                    }
                    (false, false, Ok(_)) => shared += 1,
                    (true, _, Ok(req)) => {
                        let net = Network {
                            preset: other,
                            ..fx.network.clone()
                        };
                        assert_eq!(
                            req.signing_root(&net).expect("root").to_string(),
                            case["signing_root"].as_str().expect("root"),
                            "{name} under {other}"
                        );
                        gnosis += usize::from(other == Preset::Gnosis);
                    }
                    (_, _, parsed) => panic!("{name} under {other}: {parsed:?}"),
                }
            }
        }
    }
    eprintln!("refused under another preset's sizes: {refused}, shared sizes: {shared}, gnosis roots: {gnosis}");
    assert!(refused >= 40 && shared >= 400 && gnosis >= 300);
}

// ---- Property test: the parser never panics ----------------------------------------------

/// xorshift64*: small, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

/// A random node of `v` (possibly `v` itself).
fn random_node<'a>(v: &'a mut Value, rng: &mut Rng) -> &'a mut Value {
    let descend = rng.below(4) != 0;
    let len = match &*v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if !descend || len == 0 {
        return v;
    }
    let i = rng.below(len);
    match v {
        Value::Object(m) => match m.values_mut().nth(i) {
            Some(c) => random_node(c, rng),
            None => unreachable!(),
        },
        Value::Array(a) => random_node(&mut a[i], rng),
        _ => unreachable!(),
    }
}

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => json!(rng.next()),
        3 => json!(rng.next() as i64),
        4 => Value::String(random_string(rng)),
        5 => Value::Array(
            (0..rng.below(5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "type",
                "fork_info",
                "fork",
                "epoch",
                "slot",
                "block",
                "block_header",
                "version",
                "data",
                "aggregate",
                "body",
                "signingRoot",
                "x",
            ];
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(
                    keys[rng.below(keys.len())].to_string(),
                    random_json(rng, depth - 1),
                );
            }
            Value::Object(m)
        }
    }
}

fn random_string(rng: &mut Rng) -> String {
    let pool = [
        "",
        "0x",
        "0x00",
        "0x01",
        "0xzz",
        "0x0",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "+1",
        "1e3",
        "PHASE0",
        "ALTAIR",
        "BELLATRIX",
        "ELECTRA",
        "FULU",
        "GLOAS",
        "BLOCK_V2",
        "ATTESTATION",
        "é",
        "\u{0}",
        "\u{202e}",
    ];
    if rng.chance(3) {
        let n = 2 * rng.below(200);
        let digits: String = (0..n)
            .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
            .collect();
        format!("0x{digits}")
    } else {
        pool[rng.below(pool.len())].to_string()
    }
}

/// Serializes `v`, writing the `dup`-th object's first entry twice.
fn write_with_duplicate(v: &Value, dup: &mut isize, out: &mut String) {
    match v {
        Value::Object(m) => {
            *dup -= 1;
            let twice = *dup == 0;
            out.push('{');
            let mut first = true;
            for (i, (k, c)) in m.iter().enumerate() {
                for _ in 0..if twice && i == 0 { 2 } else { 1 } {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write_with_duplicate(c, dup, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, c) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_with_duplicate(c, dup, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn mutate(base: &Value, rng: &mut Rng) -> Vec<u8> {
    let mut v = base.clone();
    let rounds = 1 + rng.below(3);
    let mut text: Option<Vec<u8>> = None;
    for _ in 0..rounds {
        match rng.below(12) {
            // Delete a field.
            0 => {
                if let Value::Object(m) = random_node(&mut v, rng) {
                    if !m.is_empty() {
                        let k = m
                            .keys()
                            .nth(rng.below(m.len()))
                            .cloned()
                            .unwrap_or_default();
                        m.remove(&k);
                    }
                }
            }
            // Swap a node's type.
            1 => *random_node(&mut v, rng) = random_json(rng, 0),
            // Huge or odd numbers.
            2 => {
                let odd = [
                    json!("18446744073709551616"),
                    json!("99999999999999999999999999999999"),
                    json!(u64::MAX),
                    json!(-1),
                    json!(1.5),
                    json!(1e300),
                    json!("0"),
                    json!(0),
                    json!(u64::MAX.to_string()),
                ];
                *random_node(&mut v, rng) = odd[rng.below(odd.len())].clone();
            }
            // Deep nesting.
            3 => {
                let node = random_node(&mut v, rng);
                let mut inner = node.take();
                for _ in 0..(50 + rng.below(300)) {
                    // Built by hand: `json!` would copy `inner` at every level.
                    inner = if rng.chance(2) {
                        Value::Array(vec![inner])
                    } else {
                        let mut m = Map::new();
                        m.insert("a".into(), inner);
                        Value::Object(m)
                    };
                }
                *node = inner;
            }
            // Random JSON in place of a subtree, or of everything.
            4 => {
                if rng.chance(8) {
                    v = random_json(rng, 4);
                } else {
                    *random_node(&mut v, rng) = random_json(rng, 3);
                }
            }
            // Strings: hex of the wrong length, not hex, names of other versions and types.
            5 => *random_node(&mut v, rng) = Value::String(random_string(rng)),
            // Swap the type or the version.
            6 => {
                let names = MessageType::ALL.map(|t| t.as_str());
                if rng.chance(2) {
                    if let Value::Object(m) = &mut v {
                        m.insert("type".into(), json!(names[rng.below(names.len())]));
                    }
                } else {
                    let versions = ["PHASE0", "ALTAIR", "BELLATRIX", "DENEB", "ELECTRA", "FULU"];
                    let version = json!(versions[rng.below(versions.len())]);
                    if let Some(Value::Object(m)) = v.get_mut("beacon_block") {
                        m.insert("version".into(), version);
                    } else if let Some(Value::Object(m)) = v.get_mut("aggregate_and_proof") {
                        m.insert("version".into(), version);
                    }
                }
            }
            // Inflate a list past its limit.
            7 => {
                if let Value::Array(a) = random_node(&mut v, rng) {
                    if let Some(first) = a.first().cloned() {
                        // The 2048-element limits hold numbers; containers' limits are ≤ 128.
                        let sizes: &[usize] = if first.is_object() {
                            &[3, 17, 129]
                        } else {
                            &[3, 17, 129, 2049]
                        };
                        a.resize(sizes[rng.below(sizes.len())], first);
                    }
                }
            }
            // Byte flips.
            8 => {
                let mut b = text.take().unwrap_or_else(|| body(&v));
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(b.len());
                    if let Some(x) = b.get_mut(i) {
                        *x = rng.next() as u8;
                    }
                }
                text = Some(b);
            }
            // Truncation.
            9 => {
                let mut b = text.take().unwrap_or_else(|| body(&v));
                b.truncate(rng.below(b.len() + 1));
                text = Some(b);
            }
            // Duplicate a field.
            10 => {
                let mut s = String::new();
                let mut dup = 1 + rng.below(6) as isize;
                write_with_duplicate(&v, &mut dup, &mut s);
                text = Some(s.into_bytes());
            }
            // Add a stray field somewhere.
            _ => {
                if let Value::Object(m) = random_node(&mut v, rng) {
                    m.insert(
                        [
                            "sync_aggregate",
                            "committee_bits",
                            "block",
                            "block_header",
                            "zz",
                        ][rng.below(5)]
                        .into(),
                        random_json(rng, 2),
                    );
                }
            }
        }
    }
    text.unwrap_or_else(|| body(&v))
}

#[test]
fn parser_never_panics_on_100k_mutated_bodies() {
    const N: usize = 100_000;
    let fixtures = fixtures();
    let requests: Vec<(Value, &Network)> = fixtures
        .iter()
        .flat_map(|f| f.cases.iter().map(|c| (c["request"].clone(), &f.network)))
        .collect();
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let started = Instant::now();
    let (mut parsed, mut rooted) = (0usize, 0usize);
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in 0..N {
        let (base, net) = &requests[rng.below(requests.len())];
        let input = mutate(base, &mut rng);
        // Mostly the fixture's own preset; now and then another one's sizes.
        let preset = if rng.chance(4) {
            Preset::ALL[rng.below(Preset::ALL.len())]
        } else {
            net.preset
        };
        let net = Network {
            preset,
            ..(*net).clone()
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let req = SignRequest::from_json(&input, preset)?;
            let _ = (
                req.slashing_data(),
                req.validity_window(32),
                req.validity_window(u64::MAX),
                req.validity_window(0),
            );
            let _ = req.genesis_validators_root();
            Ok::<_, ConsensusError>(req.signing_root(&net))
        }));
        let error = match outcome {
            Ok(Ok(Ok(_))) => {
                parsed += 1;
                rooted += 1;
                None
            }
            Ok(Ok(Err(e))) => {
                parsed += 1;
                Some(e)
            }
            Ok(Err(e)) => Some(e),
            Err(_) => panic!(
                "panic on mutated body #{i}: {}",
                String::from_utf8_lossy(&input[..input.len().min(2000)])
            ),
        };
        if let Some(e) = error {
            let (kind, msg) = match &e {
                ConsensusError::Malformed(m) => ("malformed", m),
                ConsensusError::Inconsistent(m) => ("inconsistent", m),
                ConsensusError::OtherNetwork(m) => ("other_network", m),
                ConsensusError::UnknownType(m) => ("unknown_type", m),
                ConsensusError::Io(m) => ("io", m),
            };
            // Messages stay short whatever the input.
            assert!(msg.chars().count() < 200, "long message: {msg}");
            *kinds.entry(kind).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{N} mutated bodies in {elapsed:?}: {parsed} parsed, {rooted} rooted, errors {kinds:?}"
    );
    assert!(
        parsed > N / 50,
        "mutations too destructive: {parsed} parsed"
    );
    assert!(kinds.get("malformed").copied().unwrap_or(0) > N / 2);
}
