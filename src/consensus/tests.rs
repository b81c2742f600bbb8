//! Unit tests of the consensus module: request shapes accepted and refused, fork selection at
//! the boundary, networks. The oracle fixtures are checked in `tests/consensus_fixtures.rs`.

use serde_json::{json, Value};

use super::*;
use std::time::Duration;

const GVR: &str = "0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673";
const ROOT: &str = "0x367cbd40ac7318427aadb97345a91fa2e965daf3158d7f1846f1306305f41bef";

fn sig() -> String {
    format!("0x{}", "a1".repeat(96))
}

fn fork_info(prev: &str, cur: &str, epoch: &str) -> Value {
    json!({
        "fork": {"previous_version": prev, "current_version": cur, "epoch": epoch},
        "genesis_validators_root": GVR,
    })
}

fn mainnet() -> Network {
    Network::preset("mainnet").expect("mainnet")
}

fn attestation_data(slot: &str, target_epoch: &str) -> Value {
    json!({
        "slot": slot, "index": "3", "beacon_block_root": ROOT,
        "source": {"epoch": "9", "root": ROOT},
        "target": {"epoch": target_epoch, "root": ROOT},
    })
}

fn attestation(target_epoch: &str, fi: Value) -> Value {
    json!({"type": "ATTESTATION", "fork_info": fi, "attestation": attestation_data("320", target_epoch)})
}

fn header() -> Value {
    json!({"slot": "64", "proposer_index": "7", "parent_root": ROOT, "state_root": ROOT, "body_root": ROOT})
}

fn block_v2(version: &str, field: &str, value: Value) -> Value {
    json!({
        "type": "BLOCK_V2",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "beacon_block": {"version": version, field: value},
    })
}

fn full_block(with_sync_aggregate: bool) -> Value {
    full_block_with_sync_bytes(with_sync_aggregate.then_some(64))
}

/// A full block; with a sync aggregate of `sync_bytes` bytes of bits when given.
fn full_block_with_sync_bytes(sync_bytes: Option<usize>) -> Value {
    let mut body = json!({
        "randao_reveal": sig(),
        "eth1_data": {"deposit_root": ROOT, "deposit_count": "8", "block_hash": ROOT},
        "graffiti": ROOT,
        "proposer_slashings": [], "attester_slashings": [], "attestations": [],
        "deposits": [], "voluntary_exits": [],
    });
    if let Some(n) = sync_bytes {
        body["sync_aggregate"] = json!({
            "sync_committee_bits": format!("0x{}", "ff".repeat(n)),
            "sync_committee_signature": sig(),
        });
    }
    json!({"slot": "64", "proposer_index": "7", "parent_root": ROOT, "state_root": ROOT, "body": body})
}

fn aggregate_v2(version: &str, bits: &str, committee_bits: Option<&str>) -> Value {
    let mut aggregate = json!({
        "aggregation_bits": bits,
        "data": attestation_data("320", "10"),
        "signature": sig(),
    });
    if let Some(c) = committee_bits {
        aggregate["committee_bits"] = json!(c);
    }
    json!({
        "type": "AGGREGATE_AND_PROOF_V2",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "aggregate_and_proof": {"version": version, "data": {
            "aggregator_index": "1", "aggregate": aggregate, "selection_proof": sig(),
        }},
    })
}

fn parse(v: &Value) -> Result<SignRequest, ConsensusError> {
    SignRequest::from_json(v.to_string().as_bytes(), Preset::Mainnet)
}

fn parse_for(v: &Value, preset: Preset) -> Result<SignRequest, ConsensusError> {
    SignRequest::from_json(v.to_string().as_bytes(), preset)
}

/// A network of `preset` (mainnet's other parameters).
fn network_of(preset: Preset) -> Network {
    Network {
        preset,
        slots_per_epoch: preset.slots_per_epoch(),
        ..mainnet()
    }
}

fn root(v: &Value) -> SigningRoot {
    parse(v)
        .and_then(|r| r.signing_root(&mainnet()))
        .unwrap_or_else(|e| panic!("{e}: {v}"))
}

#[track_caller]
fn assert_malformed(v: &Value, needle: &str) {
    assert_malformed_for(v, Preset::Mainnet, needle)
}

#[track_caller]
fn assert_malformed_for(v: &Value, preset: Preset, needle: &str) {
    match parse_for(v, preset) {
        Err(ConsensusError::Malformed(m)) => {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
            assert!(m.chars().count() < 200, "message too long: {m}");
        }
        other => panic!("expected Malformed({needle}), got {other:?}"),
    }
}

#[test]
fn message_type_wire_names_round_trip() {
    let mut seen = std::collections::HashSet::new();
    for t in MessageType::ALL {
        assert!(seen.insert(t.as_str()));
        assert_eq!(MessageType::from_wire(t.as_str()), Some(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert_eq!(MessageType::from_wire("attestation"), None);
    assert_eq!(MessageType::from_wire("BLOCK_V3"), None);
}

#[test]
fn signing_root_displays_as_0x_hex() {
    let mut b = [0u8; 32];
    b[0] = 0xab;
    b[31] = 0x01;
    assert_eq!(
        SigningRoot(b).to_string(),
        format!("0xab{}01", "00".repeat(30))
    );
}

#[test]
fn fork_epoch_boundary_selects_current_version() {
    let a = "0x0000000a";
    let b = "0x0000000b";
    // target.epoch == fork.epoch → current version.
    assert_eq!(
        root(&attestation("10", fork_info(a, b, "10"))),
        root(&attestation("10", fork_info(b, b, "10")))
    );
    assert_ne!(
        root(&attestation("10", fork_info(a, b, "10"))),
        root(&attestation("10", fork_info(a, a, "10")))
    );
    // One epoch before → previous version.
    assert_eq!(
        root(&attestation("9", fork_info(a, b, "10"))),
        root(&attestation("9", fork_info(a, a, "10")))
    );
}

#[test]
fn slot_based_types_use_the_network_epoch_length() {
    // Slot 64 is epoch 2 with 32 slots per epoch, epoch 8 with 8.
    let v = block_v2("DENEB", "block_header", header());
    let mut req = v.clone();
    req["fork_info"] = fork_info("0x0000000a", "0x0000000b", "3");
    let parsed = parse(&req).expect("parses");
    let mut short = mainnet();
    short.slots_per_epoch = 8;
    assert_ne!(
        parsed.signing_root(&mainnet()).expect("root"),
        parsed.signing_root(&short).expect("root")
    );
    short.slots_per_epoch = 0;
    assert!(matches!(
        parsed.signing_root(&short),
        Err(ConsensusError::Inconsistent(_))
    ));
}

#[test]
fn block_v2_versions_need_their_own_field() {
    assert!(parse(&block_v2("PHASE0", "block", full_block(false))).is_ok());
    assert!(parse(&block_v2("ALTAIR", "block", full_block(true))).is_ok());
    for v in ["BELLATRIX", "CAPELLA", "DENEB", "ELECTRA", "FULU"] {
        assert!(parse(&block_v2(v, "block_header", header())).is_ok(), "{v}");
        assert_malformed(&block_v2(v, "block", full_block(true)), "block_header");
    }
    assert_malformed(&block_v2("PHASE0", "block_header", header()), "full block");
    assert_malformed(&block_v2("ALTAIR", "block_header", header()), "full block");
    assert_malformed(
        &block_v2("PHASE0", "block", full_block(true)),
        "sync_aggregate",
    );
    assert_malformed(
        &block_v2("ALTAIR", "block", full_block(false)),
        "sync_aggregate",
    );
    let mut both = block_v2("DENEB", "block_header", header());
    both["beacon_block"]["block"] = full_block(true);
    assert_malformed(&both, "both");
    // GLOAS: a header, or its own full block (an altair one is not one).
    assert!(parse(&block_v2("GLOAS", "block_header", header())).is_ok());
    assert_malformed(
        &block_v2("GLOAS", "block", full_block(true)),
        "missing field",
    );
    assert_malformed(
        &block_v2("HEZE", "block_header", header()),
        "unknown variant",
    );
    assert_malformed(
        &block_v2("deneb", "block_header", header()),
        "unknown variant",
    );
}

#[test]
fn deprecated_block_is_phase0_only() {
    let ok = json!({
        "type": "BLOCK",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "block": full_block(false),
    });
    let v2 = block_v2("PHASE0", "block", full_block(false));
    assert_eq!(root(&ok), root(&v2));
    let mut bad = ok.clone();
    bad["block"] = full_block(true);
    assert_malformed(&bad, "sync_aggregate");
}

#[test]
fn aggregate_v2_versions_select_the_container() {
    let phase0_bits = "0x0d";
    let committee = "0x0100000000000000";
    for v in ["PHASE0", "ALTAIR", "BELLATRIX", "CAPELLA", "DENEB"] {
        assert!(parse(&aggregate_v2(v, phase0_bits, None)).is_ok(), "{v}");
        assert_malformed(
            &aggregate_v2(v, phase0_bits, Some(committee)),
            "committee_bits",
        );
    }
    for v in ["ELECTRA", "FULU"] {
        assert!(
            parse(&aggregate_v2(v, phase0_bits, Some(committee))).is_ok(),
            "{v}"
        );
        assert_malformed(&aggregate_v2(v, phase0_bits, None), "committee_bits");
    }
    // ELECTRA and FULU share the container; DENEB and PHASE0 share theirs.
    assert_eq!(
        root(&aggregate_v2("ELECTRA", phase0_bits, Some(committee))),
        root(&aggregate_v2("FULU", phase0_bits, Some(committee)))
    );
    assert_eq!(
        root(&aggregate_v2("PHASE0", phase0_bits, None)),
        root(&aggregate_v2("DENEB", phase0_bits, None))
    );
    // The deprecated type is the phase0 container without the version wrapper.
    let v2 = aggregate_v2("PHASE0", phase0_bits, None);
    let v1 = json!({
        "type": "AGGREGATE_AND_PROOF",
        "fork_info": v2["fork_info"].clone(),
        "aggregate_and_proof": v2["aggregate_and_proof"]["data"].clone(),
    });
    assert_eq!(root(&v1), root(&v2));
}

#[test]
fn lists_over_their_limit_are_malformed() {
    // Phase0 aggregation bits: at most 2048 bits; 2049 bits need 257 bytes with the length bit.
    let bits_2048 = format!("0x{}01", "ff".repeat(256));
    let bits_2049 = format!("0x{}03", "ff".repeat(256));
    assert!(parse(&aggregate_v2("DENEB", &bits_2048, None)).is_ok());
    assert_malformed(&aggregate_v2("DENEB", &bits_2049, None), "limit");
    // Electra: 2048 * 64 bits.
    let committee = "0x0100000000000000";
    assert!(parse(&aggregate_v2("ELECTRA", &bits_2049, Some(committee))).is_ok());
    let electra_max = format!("0x{}01", "ff".repeat(16384));
    assert!(parse(&aggregate_v2("ELECTRA", &electra_max, Some(committee))).is_ok());
    let electra_over = format!("0x{}03", "ff".repeat(16384));
    assert_malformed(
        &aggregate_v2("ELECTRA", &electra_over, Some(committee)),
        "limit",
    );

    // Attester slashing indices: 2048.
    let indexed = |n: usize| {
        json!({
            "attesting_indices": vec!["1"; n],
            "data": attestation_data("1", "1"),
            "signature": sig(),
        })
    };
    let mut block = full_block(false);
    block["body"]["attester_slashings"] =
        json!([{"attestation_1": indexed(2048), "attestation_2": indexed(1)}]);
    assert!(parse(&block_v2("PHASE0", "block", block.clone())).is_ok());
    block["body"]["attester_slashings"] =
        json!([{"attestation_1": indexed(2049), "attestation_2": indexed(1)}]);
    assert_malformed(&block_v2("PHASE0", "block", block.clone()), "limit");

    // Body lists: 16 voluntary exits at most.
    let exit = json!({"message": {"epoch": "1", "validator_index": "2"}, "signature": sig()});
    block["body"]["attester_slashings"] = json!([]);
    block["body"]["voluntary_exits"] = Value::Array(vec![exit.clone(); 16]);
    assert!(parse(&block_v2("PHASE0", "block", block.clone())).is_ok());
    block["body"]["voluntary_exits"] = Value::Array(vec![exit; 17]);
    assert_malformed(&block_v2("PHASE0", "block", block.clone()), "limit");

    // A deposit proof is exactly 33 roots.
    let deposit = |n: usize| {
        json!({"proof": vec![ROOT; n], "data": {
            "pubkey": format!("0x{}", "11".repeat(48)), "withdrawal_credentials": ROOT,
            "amount": "32000000000", "signature": sig(),
        }})
    };
    block["body"]["voluntary_exits"] = json!([]);
    block["body"]["deposits"] = json!([deposit(33)]);
    assert!(parse(&block_v2("PHASE0", "block", block.clone())).is_ok());
    block["body"]["deposits"] = json!([deposit(32)]);
    assert_malformed(&block_v2("PHASE0", "block", block.clone()), "33");
    block["body"]["deposits"] = json!([deposit(34)]);
    assert_malformed(&block_v2("PHASE0", "block", block), "33");
}

fn contribution(bits: &str) -> Value {
    json!({
        "type": "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "contribution_and_proof": {
            "aggregator_index": "11", "selection_proof": sig(),
            "contribution": {
                "slot": "0", "beacon_block_root": ROOT, "subcommittee_index": "1",
                "aggregation_bits": bits, "signature": sig(),
            },
        },
    })
}

#[test]
fn sync_bitvectors_have_mainnet_sizes() {
    assert!(parse(&contribution(&format!("0x{}", "24".repeat(16)))).is_ok());
    // The sign.yaml example's one byte is the minimal preset's size.
    assert_malformed(
        &contribution("0x24"),
        "contribution_and_proof: contribution.aggregation_bits: 8 bits, the mainnet preset's \
         SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT is 128",
    );
    assert_malformed(
        &contribution(&format!("0x{}", "24".repeat(17))),
        "136 bits, the mainnet preset's",
    );
    let mut block = full_block(true);
    block["body"]["sync_aggregate"]["sync_committee_bits"] = json!("0x01000000");
    assert_malformed(
        &block_v2("ALTAIR", "block", block),
        "body.sync_aggregate.sync_committee_bits: 32 bits, the mainnet preset's \
         SYNC_COMMITTEE_SIZE is 512",
    );
}

/// Each preset takes its own sizes and refuses the other's, naming the field, the preset and
/// the size; gnosis has mainnet's sizes.
#[test]
fn bitfields_follow_the_preset() {
    let (mainnet, minimal, gnosis) = (Preset::Mainnet, Preset::Minimal, Preset::Gnosis);
    // Altair sync aggregate: 512 bits (64 bytes) against 32 (4 bytes).
    let mainnet_block = block_v2("ALTAIR", "block", full_block_with_sync_bytes(Some(64)));
    let minimal_block = block_v2("ALTAIR", "block", full_block_with_sync_bytes(Some(4)));
    for preset in [mainnet, gnosis] {
        assert!(parse_for(&mainnet_block, preset).is_ok());
        assert_malformed_for(
            &minimal_block,
            preset,
            &format!(
                "sync_committee_bits: 32 bits, the {preset} preset's SYNC_COMMITTEE_SIZE is 512"
            ),
        );
    }
    assert!(parse_for(&minimal_block, minimal).is_ok());
    assert_malformed_for(
        &mainnet_block,
        minimal,
        "beacon_block (Altair): body.sync_aggregate.sync_committee_bits: 512 bits, \
         the minimal preset's SYNC_COMMITTEE_SIZE is 32",
    );

    // Sync contribution: 128 bits (16 bytes) against 8 (1 byte).
    let mainnet_contribution = contribution(&format!("0x{}", "24".repeat(16)));
    let minimal_contribution = contribution("0x24");
    assert!(parse_for(&minimal_contribution, minimal).is_ok());
    assert!(parse_for(&mainnet_contribution, gnosis).is_ok());
    assert_malformed_for(
        &mainnet_contribution,
        minimal,
        "aggregation_bits: 128 bits, the minimal preset's \
         SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT is 8",
    );

    // Electra committee bits: 64 bits (8 bytes) against 4 (1 byte, high nibble clear).
    let bits = "0x0d";
    let mainnet_aggregate = aggregate_v2("ELECTRA", bits, Some("0x0100000000000000"));
    let minimal_aggregate = aggregate_v2("FULU", bits, Some("0x09"));
    assert!(parse_for(&mainnet_aggregate, gnosis).is_ok());
    assert!(parse_for(&minimal_aggregate, minimal).is_ok());
    assert_malformed_for(
        &mainnet_aggregate,
        minimal,
        "aggregate_and_proof (Electra): aggregate.committee_bits: 64 bits, \
         the minimal preset's MAX_COMMITTEES_PER_SLOT is 4",
    );
    assert_malformed_for(
        &minimal_aggregate,
        mainnet,
        "committee_bits: 8 bits, the mainnet preset's MAX_COMMITTEES_PER_SLOT is 64",
    );
    assert_malformed_for(
        &aggregate_v2("ELECTRA", bits, Some("0x10")),
        minimal,
        "committee_bits: bits set past the minimal preset's MAX_COMMITTEES_PER_SLOT of 4",
    );

    // Electra aggregation bits: at most 2048 * 4 bits on minimal, 2048 * 64 on mainnet.
    let minimal_max = format!("0x{}01", "ff".repeat(1024));
    let minimal_over = format!("0x{}03", "ff".repeat(1024));
    assert!(parse_for(
        &aggregate_v2("ELECTRA", &minimal_max, Some("0x01")),
        minimal
    )
    .is_ok());
    assert_malformed_for(
        &aggregate_v2("ELECTRA", &minimal_over, Some("0x01")),
        minimal,
        "aggregate.aggregation_bits: 8193 bits, over the minimal preset's limit \
         MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT = 8192",
    );
    assert!(parse_for(&mainnet_aggregate, mainnet).is_ok());

    // What every preset shares parses the same under each, with the same root.
    let phase0_aggregate = aggregate_v2("DENEB", bits, None);
    let roots: Vec<SigningRoot> = Preset::ALL
        .into_iter()
        .map(|p| {
            parse_for(&phase0_aggregate, p)
                .and_then(|r| r.signing_root(&network_of(p)))
                .expect("root")
        })
        .collect();
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
}

#[test]
fn a_request_parsed_for_one_preset_is_not_rooted_for_another() {
    let req = parse_for(&contribution("0x24"), Preset::Minimal).expect("parses");
    assert_eq!(req.preset(), Preset::Minimal);
    assert!(req.signing_root(&network_of(Preset::Minimal)).is_ok());
    for other in [Preset::Mainnet, Preset::Gnosis] {
        match req.signing_root(&network_of(other)) {
            Err(ConsensusError::Inconsistent(m)) => {
                assert!(m.contains("minimal") && m.contains(other.name()), "{m}")
            }
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn shape_errors_are_malformed() {
    let good = attestation("10", fork_info("0x00000001", "0x00000001", "1"));
    assert!(parse(&good).is_ok());

    let mut v = good.clone();
    v.as_object_mut().map(|m| m.remove("fork_info"));
    assert_malformed(&v, "fork_info");

    let mut v = good.clone();
    v.as_object_mut().map(|m| m.remove("type"));
    assert_malformed(&v, "type");

    let mut v = good.clone();
    v["type"] = json!(3);
    assert_malformed(&v, "invalid type");

    let mut v = good.clone();
    v["attestation"]["beacon_block_root"] = json!("0x1234");
    assert_malformed(&v, "32 hex bytes");

    let mut v = good.clone();
    v["attestation"]["beacon_block_root"] = json!(ROOT.replace("0x36", "0xzz"));
    assert_malformed(&v, "hex");

    let mut v = good.clone();
    v["attestation"]["beacon_block_root"] = json!(ROOT.trim_start_matches("0x"));
    assert_malformed(&v, "0x");

    let mut v = good.clone();
    v["fork_info"]["fork"]["current_version"] = json!("0x000001");
    assert_malformed(&v, "4 hex bytes");

    let mut v = good.clone();
    v["attestation"]["slot"] = json!("18446744073709551616");
    assert_malformed(&v, "out of range");

    let mut v = good.clone();
    v["attestation"]["slot"] = json!(-4);
    assert_malformed(&v, "negative");

    let mut v = good.clone();
    v["attestation"]["source"] = json!(null);
    assert_malformed(&v, "invalid type");

    // camelCase is not the schema's spelling (only `signingRoot` is).
    let mut v = good.clone();
    v["fork_info"]["fork"] =
        json!({"previousVersion": "0x00000001", "currentVersion": "0x00000001", "epoch": "1"});
    assert_malformed(&v, "previous_version");

    // The type must match the body.
    let mut v = good.clone();
    v["type"] = json!("BLOCK_V2");
    assert_malformed(&v, "beacon_block");
}

#[test]
fn unknown_type_is_its_own_error_and_clipped() {
    let mut v = attestation("10", fork_info("0x00000001", "0x00000001", "1"));
    v["type"] = json!("BLOCK_V3");
    assert!(matches!(parse(&v), Err(ConsensusError::UnknownType(t)) if t == "BLOCK_V3"));
    v["type"] = json!("X".repeat(100_000));
    match parse(&v) {
        Err(ConsensusError::UnknownType(t)) => assert!(t.chars().count() <= MAX_ECHO + 1),
        other => panic!("{other:?}"),
    }
    // A long bad value elsewhere is not echoed either.
    let mut v = attestation("10", fork_info("0x00000001", "0x00000001", "1"));
    v["attestation"]["slot"] = json!("9".repeat(100_000));
    match parse(&v) {
        Err(ConsensusError::Malformed(m)) => assert!(m.len() < 200, "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bodies_that_are_not_one_json_object_are_malformed() {
    let good = attestation("10", fork_info("0x00000001", "0x00000001", "1")).to_string();
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_in_field = good.replacen(
        "\"index\":\"3\"",
        &format!("\"extra\":{},\"index\":\"3\"", deep),
        1,
    );
    let duplicate_type = good.replacen('{', "{\"type\":\"BLOCK\",", 1);
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"ATTESTATION\"".to_vec(),
        b"{}".to_vec(),
        format!("{good} trailing").into_bytes(),
        good.as_bytes()[..good.len() / 2].to_vec(),
        vec![0xff, 0xfe, b'{'],
        deep.into_bytes(),
        duplicate_type.into_bytes(),
    ];
    for input in inputs {
        assert!(
            matches!(
                SignRequest::from_json(&input, Preset::Mainnet),
                Err(ConsensusError::Malformed(_))
            ),
            "{}",
            clip(&String::from_utf8_lossy(&input))
        );
    }
    // serde_json skips an unknown field without recursing, so even a deep one is harmless.
    assert!(SignRequest::from_json(deep_in_field.as_bytes(), Preset::Mainnet).is_ok());
}

#[test]
fn unknown_fields_are_ignored_but_duplicates_are_not() {
    let good = attestation("10", fork_info("0x00000001", "0x00000001", "1"));
    let mut extra = good.clone();
    extra["attestation"]["note"] = json!({"anything": [1, 2, 3]});
    extra["block"] = json!("not looked at for an attestation");
    assert_eq!(root(&extra), root(&good));
    let text =
        good.to_string()
            .replacen("\"slot\":\"320\"", "\"slot\":\"320\",\"slot\":\"321\"", 1);
    assert!(matches!(
        SignRequest::from_json(text.as_bytes(), Preset::Mainnet),
        Err(ConsensusError::Malformed(m)) if m.contains("duplicate")
    ));
}

#[test]
fn plain_json_numbers_are_accepted_for_uint64() {
    let good = attestation("10", fork_info("0x00000001", "0x00000001", "1"));
    let mut plain = good.clone();
    plain["attestation"]["slot"] = json!(320);
    plain["fork_info"]["fork"]["epoch"] = json!(1);
    assert_eq!(root(&plain), root(&good));
}

#[test]
fn deposit_and_registration_need_no_fork_info() {
    let deposit = json!({
        "type": "DEPOSIT",
        "deposit": {
            "pubkey": format!("0x{}", "11".repeat(48)), "withdrawal_credentials": ROOT,
            "amount": "32000000000", "genesis_fork_version": "0x00000000",
        },
    });
    let req = parse(&deposit).expect("deposit");
    assert_eq!(req.genesis_validators_root(), None);
    assert_eq!(req.validity_window(32), None, "a deposit never expires");
    // The deposit's own fork version decides, not the network's.
    let mut other = mainnet();
    other.genesis_fork_version = [9, 9, 9, 9];
    assert_eq!(
        req.signing_root(&mainnet()).expect("root"),
        req.signing_root(&other).expect("root")
    );

    let registration = json!({
        "type": "VALIDATOR_REGISTRATION",
        "validator_registration": {
            "fee_recipient": format!("0x{}", "22".repeat(20)), "gas_limit": "30000000",
            "timestamp": "1700000000", "pubkey": format!("0x{}", "11".repeat(48)),
        },
    });
    let req = parse(&registration).expect("registration");
    assert_eq!(req.validity_window(32), None, "nor does a registration");
    // The network's genesis fork version decides.
    assert_ne!(
        req.signing_root(&mainnet()).expect("root"),
        req.signing_root(&other).expect("root")
    );
}

#[test]
fn windows_of_absurd_slots_and_epochs_never_end_and_never_panic() {
    use super::validity::{self, Rule};
    let max = "18446744073709551615";
    let randao = json!({
        "type": "RANDAO_REVEAL",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "randao_reveal": {"epoch": max},
    });
    let req = parse(&randao).expect("parses");
    let w = req.validity_window(32).expect("a window");
    assert_eq!(
        (w.duty, w.ends_at, w.rule),
        (Duty::Epoch(u64::MAX), None, Rule::RandaoEpoch)
    );
    assert_eq!(w.duty.first_slot(32), None);
    assert_eq!(req.validity_window(0).expect("a window").ends_at, None);
    assert!(req.signing_root(&mainnet()).is_ok());
    assert_eq!(req.slashing_data(), SlashingData::None);

    let selection = json!({
        "type": "AGGREGATION_SLOT",
        "fork_info": fork_info("0x00000001", "0x00000001", "1"),
        "aggregation_slot": {"slot": max},
    });
    let req = parse(&selection).expect("parses");
    assert_eq!(req.validity_window(32).expect("a window").ends_at, None);
    let mut header = header();
    header["slot"] = json!(max);
    let block = parse(&block_v2("DENEB", "block_header", header)).expect("parses");
    let w = block.validity_window(32).expect("a window");
    assert_eq!((w.duty, w.ends_at), (Duty::Slot(u64::MAX), None));

    // A window that ends at a slot no clock can reach: no deadline, and no panic on any clock.
    let clock = ManualSlotClock::new(SlotTiming::from_secs(1_606_824_023, 12));
    for now in [
        Duration::ZERO,
        Duration::from_secs(1_700_000_000),
        Duration::MAX,
    ] {
        clock.set_current_time(now);
        for r in [&req, &block] {
            let window = r.validity_window(32);
            assert_eq!(validity::check(r.message_type(), window, &clock), Ok(None));
        }
    }
    // The largest slots that do end: their end is beyond any representable time.
    let w = ValidityWindow::block(u64::MAX - 1);
    assert_eq!(w.ends_at, Some(u64::MAX));
    assert_eq!(w.end_time(&clock), None);
    assert_eq!(
        validity::check(MessageType::BlockV2, Some(w), &clock),
        Ok(None)
    );
    assert_eq!(ValidityWindow::attestation(u64::MAX - 63, 32).ends_at, None);
    assert_eq!(
        ValidityWindow::attestation(u64::MAX - 95, 32).ends_at,
        Some(u64::MAX - 31)
    );
}
#[test]
fn presets_are_the_real_networks() {
    let m = Network::preset("mainnet").expect("mainnet");
    assert_eq!(m.genesis_fork_version, [0, 0, 0, 0]);
    assert_eq!(m.genesis_time, Some(1_606_824_023));
    assert_eq!((m.seconds_per_slot, m.slots_per_epoch), (12, 32));
    assert_eq!(m.preset, Preset::Mainnet);
    let s = Network::preset("sepolia").expect("sepolia");
    assert_eq!(s.genesis_fork_version, [0x90, 0, 0, 0x69]);
    assert_eq!(s.genesis_time, Some(1_655_733_600));
    let h = Network::preset("holesky").expect("holesky");
    assert_eq!(h.genesis_fork_version, [0x01, 0x01, 0x70, 0x00]);
    assert_eq!(h.genesis_time, Some(1_695_902_400));
    let o = Network::preset("hoodi").expect("hoodi");
    assert_eq!(o.genesis_fork_version, [0x10, 0x00, 0x09, 0x10]);
    assert_eq!(o.genesis_time, Some(1_742_213_400));
    for name in ["sepolia", "holesky", "hoodi"] {
        assert_eq!(
            Network::preset(name).map(|n| n.preset),
            Some(Preset::Mainnet)
        );
    }
    assert!(Network::preset("goerli").is_none());
    assert!(Network::preset("Mainnet").is_none());
}

#[test]
fn built_in_networks_carry_root_and_fork_schedule() {
    let root = |n: &Network| hex::encode(n.genesis_validators_root.expect("root"));
    let m = mainnet();
    assert_eq!(
        root(&m),
        "4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
    );
    let names: Vec<&str> = m.forks.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "phase0",
            "altair",
            "bellatrix",
            "capella",
            "deneb",
            "electra",
            "fulu"
        ]
    );
    assert_eq!(m.fork_at(74_239).version, [0, 0, 0, 0]);
    assert_eq!(m.fork_at(74_240).version, [1, 0, 0, 0]);
    assert_eq!(m.fork_at(411_392).name, "fulu");
    assert_eq!(m.fork_at(u64::MAX).name, "fulu");
    let g = Network::preset("gnosis").expect("gnosis");
    assert_eq!((g.seconds_per_slot, g.slots_per_epoch), (5, 16));
    assert_eq!(g.genesis_time, Some(1_638_993_340));
    assert_eq!(
        root(&g),
        "f5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47"
    );
    let c = Network::preset("chiado").expect("chiado");
    assert_eq!(c.genesis_fork_version, [0, 0, 0, 0x6f]);
    assert_eq!(c.fork_at(948_224).name, "electra");
    // Hoodi's first five forks share epoch 0: deneb is in force at genesis.
    let h = Network::preset("hoodi").expect("hoodi");
    assert_eq!(h.fork_at(0).name, "deneb");
    assert_eq!(h.fork_at(0).version, [0x50, 0, 0x09, 0x10]);
    for name in ["mainnet", "sepolia", "holesky", "hoodi", "gnosis", "chiado"] {
        let n = Network::preset(name).expect(name);
        assert!(
            n.forks.windows(2).all(|w| w[0].epoch <= w[1].epoch),
            "{name}: forks in epoch order"
        );
        assert_eq!(n.forks[0].version, n.genesis_fork_version, "{name}");
        assert!(BUILT_IN_NAMES.contains(name));
    }
}

/// A request for `gvr` at slot 320 (epoch 10) under `fork`.
fn aggregation_slot(gvr: &str, prev: &str, cur: &str, fork_epoch: &str) -> Value {
    let mut fi = fork_info(prev, cur, fork_epoch);
    fi["genesis_validators_root"] = json!(gvr);
    json!({"type": "AGGREGATION_SLOT", "fork_info": fi, "aggregation_slot": {"slot": "320"}})
}

#[test]
fn requests_for_another_network_are_refused_with_both_sides_named() {
    let m = mainnet();
    let ours = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
    let ok = aggregation_slot(ours, "0x00000000", "0x01000000", "74240");
    parse(&ok)
        .unwrap()
        .check_network(&m)
        .expect("mainnet request");

    let foreign = aggregation_slot(GVR, "0x00000000", "0x01000000", "74240");
    match parse(&foreign).unwrap().check_network(&m) {
        Err(ConsensusError::OtherNetwork(msg)) => {
            assert!(
                msg.contains("serves network mainnet (genesis validators root 0x4b363d"),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("the request is for genesis validators root {GVR}")),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Mainnet's root with a fork version no mainnet fork has (a devnet's altair).
    let devnet = aggregation_slot(ours, "0x00000000", "0x01000064", "0");
    match parse(&devnet).unwrap().check_network(&m) {
        Err(ConsensusError::OtherNetwork(msg)) => {
            assert!(
                msg.contains("epoch 10 is phase0 (fork version 0x00000000)"),
                "{msg}"
            );
            assert!(msg.contains("signs with fork version 0x01000064"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A deposit names its network by genesis fork version.
    let deposit = |version: &str| {
        json!({"type": "DEPOSIT", "deposit": {
            "pubkey": format!("0x{}", "aa".repeat(48)), "withdrawal_credentials": ROOT,
            "amount": "32000000000", "genesis_fork_version": version}})
    };
    parse(&deposit("0x00000000"))
        .unwrap()
        .check_network(&m)
        .expect("mainnet deposit");
    assert!(matches!(
        parse(&deposit("0x90000069")).unwrap().check_network(&m),
        Err(ConsensusError::OtherNetwork(_))
    ));
    // A network whose root is not known checks the fork version only.
    let mut custom = Network::from_config_str(HOODI_LIKE).expect("config");
    assert!(custom.genesis_validators_root.is_none());
    let hoodi_like = aggregation_slot(GVR, "0x10000910", "0x10000910", "0");
    parse(&hoodi_like)
        .unwrap()
        .check_network(&custom)
        .expect("any root");
    custom = custom
        .with_genesis_validators_root([0x11; 32])
        .expect("root");
    assert!(parse(&hoodi_like).unwrap().check_network(&custom).is_err());
}

#[test]
fn a_built_in_networks_root_cannot_be_overridden() {
    let m = mainnet();
    let own = m.genesis_validators_root.unwrap();
    assert!(m.clone().with_genesis_validators_root(own).is_ok());
    match m.with_genesis_validators_root([1; 32]) {
        Err(ConsensusError::Inconsistent(msg)) => {
            assert!(msg.contains("network mainnet has"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

const HOODI_LIKE: &str = "\
# Extends the mainnet preset
PRESET_BASE: mainnet
CONFIG_NAME: devnet-7

# Genesis
MIN_GENESIS_TIME: 1742212800
GENESIS_FORK_VERSION: 0x10000910   # a comment
GENESIS_DELAY: 600
SECONDS_PER_SLOT: 12
BLOB_SCHEDULE:
  - EPOCH: 274176
    MAX_BLOBS_PER_BLOCK: 15
";

#[test]
fn config_files_give_the_network() {
    let n = Network::from_config_str(HOODI_LIKE).expect("config");
    assert_eq!(n.name, "devnet-7");
    assert_eq!(n.genesis_fork_version, [0x10, 0x00, 0x09, 0x10]);
    assert_eq!(n.genesis_time, Some(1_742_213_400));
    assert_eq!((n.seconds_per_slot, n.slots_per_epoch), (12, 32));
    assert_eq!(n.preset, Preset::Mainnet);
    // No PRESET_BASE: mainnet, as before presets were read.
    let n =
        Network::from_config_str(&HOODI_LIKE.replace("PRESET_BASE: mainnet", "")).expect("config");
    assert_eq!((n.preset, n.slots_per_epoch), (Preset::Mainnet, 32));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "PRESET_BASE: 'gnosis'\nCONFIG_NAME: 'chiado'\nGENESIS_FORK_VERSION: \"0x0000006f\"\n\
         SLOT_DURATION_MS: 5000\nSLOTS_PER_EPOCH: 16\n",
    )
    .expect("write");
    let n = Network::from_config_file(&path).expect("config");
    assert_eq!(n.name, "chiado");
    assert_eq!(n.genesis_fork_version, [0, 0, 0, 0x6f]);
    assert_eq!((n.seconds_per_slot, n.slots_per_epoch), (5, 16));
    // Chiado is built in: the file gets its real genesis time and root.
    assert_eq!(n.preset, Preset::Gnosis);
    assert_eq!(n.genesis_time, Some(1_665_396_300));
    assert!(n.genesis_validators_root.is_some());
    std::fs::write(
        &path,
        "PRESET_BASE: 'gnosis'\nCONFIG_NAME: 'gnosis-devnet'\nGENESIS_FORK_VERSION: \"0x0000006f\"\n\
         SLOT_DURATION_MS: 5000\nSLOTS_PER_EPOCH: 16\n",
    )
    .expect("write");
    let n = Network::from_config_file(&path).expect("config");
    assert_eq!(n.preset, Preset::Gnosis);
    assert_eq!((n.genesis_time, n.genesis_validators_root), (None, None));

    // A built-in network's file keeps its real genesis time.
    std::fs::write(
        &path,
        "PRESET_BASE: 'mainnet'\nCONFIG_NAME: 'mainnet'\nMIN_GENESIS_TIME: 1606824000\n\
         GENESIS_FORK_VERSION: 0x00000000\nGENESIS_DELAY: 604800\nSECONDS_PER_SLOT: 12\n",
    )
    .expect("write");
    let n = Network::from_config_file(&path).expect("config");
    assert_eq!(n.genesis_time, Some(1_606_824_023));

    assert!(matches!(
        Network::from_config_file(&dir.path().join("absent.yaml")),
        Err(ConsensusError::Io(_))
    ));

    // The root beside the config file, as eth-clients ship it; a built-in network's own.
    assert_eq!(
        n.genesis_validators_root,
        Network::preset("mainnet").unwrap().genesis_validators_root
    );
    std::fs::write(&path, HOODI_LIKE).expect("write");
    let gvr_file = dir.path().join(GVR_FILE_NAME);
    std::fs::write(&gvr_file, format!("0x{}\n", "ab".repeat(32))).expect("write");
    let n = Network::from_config_file(&path).expect("config");
    assert_eq!(n.genesis_validators_root, Some([0xab; 32]));
    std::fs::write(&gvr_file, "0x1234\n").expect("write");
    assert!(matches!(
        Network::from_config_file(&path),
        Err(ConsensusError::Malformed(m)) if m.contains(GVR_FILE_NAME)
    ));
}

#[test]
fn config_files_give_the_fork_schedule() {
    let text = format!(
        "{HOODI_LIKE}ALTAIR_FORK_VERSION: 0x20000910\nALTAIR_FORK_EPOCH: 0\n\
         BELLATRIX_FORK_VERSION: 0x30000910\nBELLATRIX_FORK_EPOCH: 10\n\
         CAPELLA_FORK_VERSION: 0x40000910\nCAPELLA_FORK_EPOCH: 18446744073709551615\n"
    );
    let n = Network::from_config_str(&text).expect("config");
    let forks: Vec<(&str, u64)> = n.forks.iter().map(|f| (f.name, f.epoch)).collect();
    assert_eq!(forks, [("phase0", 0), ("altair", 0), ("bellatrix", 10)]);
    assert_eq!(n.fork_at(9).version, [0x20, 0, 0x09, 0x10]);
    assert!(n.has_fork_version([0x30, 0, 0x09, 0x10]));
    assert!(
        !n.has_fork_version([0x40, 0, 0x09, 0x10]),
        "far future is not scheduled"
    );
    let backwards = text.replace(
        "BELLATRIX_FORK_EPOCH: 10",
        "BELLATRIX_FORK_EPOCH: 10\nDENEB_FORK_VERSION: 0x50000910\nDENEB_FORK_EPOCH: 5",
    );
    match Network::from_config_str(&backwards) {
        Err(ConsensusError::Malformed(m)) => {
            assert!(m.contains("DENEB_FORK_EPOCH 5 is before"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let no_version = format!("{HOODI_LIKE}ALTAIR_FORK_EPOCH: 3\n");
    match Network::from_config_str(&no_version) {
        Err(ConsensusError::Malformed(m)) => {
            assert!(m.contains("ALTAIR_FORK_VERSION is missing"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

/// The consensus specs' own `configs/minimal.yaml` with the fork epochs of the minimal-preset
/// oracle fixtures (written by `scripts/oracle/gen_signing_fixtures.py --preset minimal`).
const SPEC_MINIMAL_CONFIG: &str = include_str!("../../tests/fixtures/signing/minimal/config.yaml");

#[test]
fn a_minimal_preset_config_loads() {
    let n = Network::from_config_str(SPEC_MINIMAL_CONFIG).expect("config");
    assert_eq!(n.name, "minimal");
    assert_eq!(n.preset, Preset::Minimal);
    assert_eq!(n.genesis_fork_version, [0, 0, 0, 1]);
    assert_eq!((n.seconds_per_slot, n.slots_per_epoch), (6, 8));
    assert_eq!(n.genesis_time, Some(1_578_009_600 + 300));
    // The file the HTTP test serves is the spec's own: every key the signer reads is there.
    assert!(SPEC_MINIMAL_CONFIG.contains("GLOAS_FORK_VERSION"));
    // A config may still set its own epoch length.
    let n = Network::from_config_str(&format!("{SPEC_MINIMAL_CONFIG}SLOTS_PER_EPOCH: 6\n"))
        .expect("config");
    assert_eq!((n.preset, n.slots_per_epoch), (Preset::Minimal, 6));
}

#[test]
fn bad_config_files_are_refused() {
    let cases = [
        (
            HOODI_LIKE.replace("GENESIS_FORK_VERSION: 0x10000910", ""),
            "GENESIS_FORK_VERSION",
        ),
        (
            HOODI_LIKE.replace("0x10000910", "0x100009"),
            "GENESIS_FORK_VERSION",
        ),
        (
            HOODI_LIKE.replace("PRESET_BASE: mainnet", "PRESET_BASE: mainnet-ish"),
            "PRESET_BASE \"mainnet-ish\" is not a preset we know (mainnet, minimal, gnosis)",
        ),
        (
            HOODI_LIKE.replace("PRESET_BASE: mainnet", "PRESET_BASE: Minimal"),
            "PRESET_BASE \"Minimal\" is not a preset we know",
        ),
        (
            HOODI_LIKE.replace("PRESET_BASE: mainnet", "PRESET_BASE: "),
            "PRESET_BASE \"\" is not a preset we know",
        ),
        (
            format!("{HOODI_LIKE}PRESET_BASE: minimal\n"),
            "PRESET_BASE given twice",
        ),
        (
            HOODI_LIKE.replace("SECONDS_PER_SLOT: 12", ""),
            "SECONDS_PER_SLOT",
        ),
        (
            HOODI_LIKE.replace("SECONDS_PER_SLOT: 12", "SECONDS_PER_SLOT: 0"),
            "0",
        ),
        (
            HOODI_LIKE.replace("SECONDS_PER_SLOT: 12", "SECONDS_PER_SLOT: twelve"),
            "number",
        ),
        (
            format!("{HOODI_LIKE}SLOTS_PER_EPOCH: 0\n"),
            "SLOTS_PER_EPOCH",
        ),
        (format!("{HOODI_LIKE}GENESIS_DELAY: 1\n"), "twice"),
        (
            HOODI_LIKE.replace("GENESIS_DELAY: 600", "GENESIS_DELAY: 18446744073709551615"),
            "overflow",
        ),
    ];
    for (text, needle) in cases {
        match Network::from_config_str(&text) {
            Err(ConsensusError::Malformed(m)) => assert!(m.contains(needle), "{m} / {needle}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
}

/// The request examples of the API spec itself (network genesis fork version `0x00000001`).
/// Those in the schema's own shape reproduce their `signingRoot`; the few that do not are
/// listed with the reason (see `tests/fixtures/signing/README.md`).
#[test]
fn sign_yaml_examples_reproduce_their_signing_roots() {
    let doc: Value = serde_json::from_str(include_str!("testdata/sign_yaml_examples.json"))
        .expect("examples JSON");
    let mut net = mainnet();
    net.genesis_fork_version = [0, 0, 0, 1];
    let mut matched = 0;
    for ex in doc["examples"].as_array().expect("examples") {
        let name = ex["name"].as_str().expect("name");
        let parsed = parse(&ex["request"]);
        match ex["expect"].as_str().expect("expect") {
            "match" => {
                let req = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                let ours = req.verified_signing_root(&net);
                assert!(ours.is_ok(), "{name}: {ours:?}");
                matched += 1;
            }
            "differs" => {
                let req = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    matches!(
                        req.verified_signing_root(&net),
                        Err(ConsensusError::Inconsistent(_))
                    ),
                    "{name}"
                );
            }
            _ => assert!(
                matches!(parsed, Err(ConsensusError::Malformed(_))),
                "{name}: {parsed:?}"
            ),
        }
    }
    assert_eq!(matched, 19);
}

/// The same examples on a minimal-preset network: the two with minimal-preset bit sizes
/// (BLOCK_V2 ALTAIR, SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF) now reproduce their `signingRoot`
/// too, and the ELECTRA/FULU aggregates, whose committee bits have mainnet's size, are refused.
#[test]
fn sign_yaml_examples_of_minimal_sizes_reproduce_their_roots_on_a_minimal_network() {
    let doc: Value = serde_json::from_str(include_str!("testdata/sign_yaml_examples.json"))
        .expect("examples JSON");
    let mut net = network_of(Preset::Minimal);
    net.genesis_fork_version = [0, 0, 0, 1];
    let mut matched = 0;
    for ex in doc["examples"].as_array().expect("examples") {
        let name = ex["name"].as_str().expect("name");
        let parsed = parse_for(&ex["request"], Preset::Minimal);
        let expect = match name {
            "BLOCK_V2 (ALTAIR)" | "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => "match",
            "AGGREGATE_AND_PROOF_V2 (ELECTRA)" | "AGGREGATE_AND_PROOF_V2 (FULU)" => "mainnet sizes",
            _ => ex["expect"].as_str().expect("expect"),
        };
        match (expect, parsed) {
            ("match", Ok(req)) => {
                let ours = req.verified_signing_root(&net);
                assert!(ours.is_ok(), "{name}: {ours:?}");
                matched += 1;
            }
            ("mainnet sizes", Err(ConsensusError::Malformed(m))) => assert!(
                m.contains("64 bits, the minimal preset's MAX_COMMITTEES_PER_SLOT is 4"),
                "{name}: {m}"
            ),
            ("malformed", Err(ConsensusError::Malformed(_))) => {}
            (expect, parsed) => panic!("{name}: expected {expect}, got {parsed:?}"),
        }
    }
    assert_eq!(matched, 21);
}

#[test]
fn selection_proof_roots_match_the_request_path_on_both_sides_of_a_fork() {
    let gvr = format!("0x{}", "5a".repeat(32));
    let fi = json!({
        "fork": {"previous_version": "0x01000000", "current_version": "0x02000000", "epoch": "10"},
        "genesis_validators_root": gvr,
    });
    for slot in ["319", "320", "321"] {
        let requests = [
            json!({"type": "AGGREGATION_SLOT", "fork_info": fi, "aggregation_slot": {"slot": slot}}),
            json!({"type": "SYNC_COMMITTEE_SELECTION_PROOF", "fork_info": fi,
                   "sync_aggregator_selection_data": {"slot": slot, "subcommittee_index": "3"}}),
        ];
        for v in requests {
            let req = parse(&v).unwrap();
            let proof = req.selection_proof(32).unwrap();
            assert_eq!(proof.slot, slot.parse::<u64>().unwrap());
            let expected_version = if proof.slot >= 320 { 2 } else { 1 };
            assert_eq!(proof.fork_version, [expected_version, 0, 0, 0], "{v}");
            assert_eq!(proof.genesis_validators_root, [0x5a; 32]);
            assert_eq!(proof.signing_root(), root(&v), "{v}");
        }
    }
    let att = attestation("3", fork_info("0x01000000", "0x02000000", "10"));
    assert!(parse(&att).unwrap().selection_proof(32).is_none());
}
