//! The EIP-3076 interchange test suite (release v5.3.0, `shared/vectors/`), every file twice: as
//! given and with each interchange minified before import; each run against a fresh SQLite
//! database and against a fresh PostgreSQL one (the `…_postgres` tests). We implement the complete strategy, so the expected verdict is
//! `should_succeed_complete`, with one documented exception for minified runs (see
//! `MINIFIED_LOSES_HISTORY`). Plus round trips through our own export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hsm_signer::slashing::{Proposal, Refusal, SlashingError, SlashingProtection};
use serde_json::{json, Value};

mod common;

/// Which store a suite file runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Sqlite,
    /// A fresh PostgreSQL cluster for the test (`common::pg`).
    Postgres,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/slashing-interchange-v5.3.0")
}

/// Checks that, after minification, get the *minimal* strategy's verdict (`should_succeed`,
/// which refuses them) instead of `should_succeed_complete`. Each is allowed by the complete
/// strategy only because of a record that minification drops by definition: a signing root
/// (minified data has none), or a record below the validator's maximum (minified data has only
/// the maximum). So no implementation, complete or not, can allow them from the minified file.
/// Each entry: (file, step, "block" | "attestation", index in the step's list).
const MINIFIED_LOSES_HISTORY: &[(&str, usize, &str, usize)] = &[
    // Blocks at slot 3 between imported 2 and 4; minified keeps only 6.
    (
        "multiple_interchanges_multiple_validators_repeat_idem",
        1,
        "block",
        1,
    ),
    (
        "multiple_interchanges_multiple_validators_repeat_idem",
        1,
        "block",
        3,
    ),
    // Slot 11 between imported 10 and 15; minified keeps only 20. Attestation 1->4 above the
    // lowest source 0; minified keeps source 5.
    (
        "multiple_validators_multiple_blocks_and_attestations",
        0,
        "block",
        3,
    ),
    (
        "multiple_validators_multiple_blocks_and_attestations",
        0,
        "attestation",
        6,
    ),
    // Slots 4 and 256 and attestation 11->12 inside the imported range; minified keeps maxima.
    (
        "single_validator_multiple_blocks_and_attestations",
        0,
        "block",
        5,
    ),
    (
        "single_validator_multiple_blocks_and_attestations",
        0,
        "block",
        6,
    ),
    (
        "single_validator_multiple_blocks_and_attestations",
        0,
        "attestation",
        5,
    ),
    // Re-signing with the imported signing root, which minification drops.
    ("single_validator_resign_attestation", 0, "attestation", 2),
    ("single_validator_resign_block", 0, "block", 0),
    ("single_validator_resign_block", 0, "block", 1),
    ("single_validator_resign_block", 0, "block", 2),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    AsGiven,
    Minified,
}

fn hex_bytes<const N: usize>(v: &Value) -> [u8; N] {
    let s = v.as_str().expect("hex string");
    let mut out = [0u8; N];
    hex::decode_to_slice(s.trim_start_matches("0x"), &mut out).expect("hex");
    out
}

fn number(v: &Value) -> u64 {
    v.as_str().expect("decimal string").parse().expect("u64")
}

/// Keep, per validator, only the highest block slot and the highest source and target epochs,
/// without signing roots (what a minimal-strategy client would export).
fn minify(interchange: &Value) -> Value {
    let mut order: Vec<String> = Vec::new();
    // Per pubkey: highest slot, highest source, highest target.
    type Maxima = (Option<u64>, Option<u64>, Option<u64>);
    let mut maxima: HashMap<String, Maxima> = HashMap::new();
    for v in interchange["data"].as_array().expect("data") {
        let pk = v["pubkey"].as_str().expect("pubkey").to_string();
        let entry = maxima.entry(pk.clone()).or_insert_with(|| {
            order.push(pk);
            (None, None, None)
        });
        for b in v["signed_blocks"].as_array().expect("blocks") {
            entry.0 = entry.0.max(Some(number(&b["slot"])));
        }
        for a in v["signed_attestations"].as_array().expect("attestations") {
            entry.1 = entry.1.max(Some(number(&a["source_epoch"])));
            entry.2 = entry.2.max(Some(number(&a["target_epoch"])));
        }
    }
    let data: Vec<Value> = order
        .iter()
        .map(|pk| {
            let (slot, source, target) = maxima[pk];
            let blocks: Vec<Value> = slot
                .map(|s| json!({"slot": s.to_string()}))
                .into_iter()
                .collect();
            let atts: Vec<Value> = match (source, target) {
                (Some(s), Some(t)) => {
                    vec![json!({"source_epoch": s.to_string(), "target_epoch": t.to_string()})]
                }
                _ => vec![],
            };
            json!({"pubkey": pk, "signed_blocks": blocks, "signed_attestations": atts})
        })
        .collect();
    json!({"metadata": interchange["metadata"].clone(), "data": data})
}

/// Run one suite file; return the number of signing checks made.
fn run_file(name: &str, variant: Variant, store: Store) -> usize {
    let path = suite_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let test: Value = serde_json::from_str(&text).expect("suite JSON");
    assert_eq!(test["name"], name);
    let gvr: [u8; 32] = hex_bytes(&test["genesis_validators_root"]);

    let dir = tempfile::tempdir().unwrap();
    let pg = (store == Store::Postgres).then(common::pg::PgServer::start);
    let sp = match &pg {
        None => SlashingProtection::open_sqlite(&dir.path().join("slashing.sqlite"), Some(gvr)),
        Some(pg) => SlashingProtection::open_postgres(pg.url(), Some(gvr)),
    }
    .unwrap();
    let mut checks = 0;
    let mut exceptions_used = 0;

    for (step_index, step) in test["steps"].as_array().expect("steps").iter().enumerate() {
        let interchange = match variant {
            Variant::AsGiven => step["interchange"].clone(),
            Variant::Minified => minify(&step["interchange"]),
        };
        let should_import = step["should_succeed"].as_bool().expect("should_succeed");
        let slashable = step["contains_slashable_data"]
            .as_bool()
            .expect("contains_slashable_data");
        match sp.import_interchange(&interchange.to_string()) {
            Ok(summary) => {
                assert!(
                    should_import,
                    "{name} step {step_index}: import should have failed"
                );
                // We work around slashable data (never reject it), and only where there is some.
                assert!(
                    summary.minified.is_empty() || slashable,
                    "{name} step {step_index}: clean data imported as watermarks: {summary:?}"
                );
            }
            Err(e) => {
                assert!(
                    !should_import,
                    "{name} step {step_index}: import failed: {e}"
                );
                assert!(matches!(e, SlashingError::Interchange(_)), "{e}");
            }
        }

        for (kind, list) in [
            ("block", &step["blocks"]),
            ("attestation", &step["attestations"]),
        ] {
            for (i, c) in list.as_array().expect("list").iter().enumerate() {
                let pubkey: [u8; 48] = hex_bytes(&c["pubkey"]);
                let signing_root: [u8; 32] = hex_bytes(&c["signing_root"]);
                let proposal = if kind == "block" {
                    Proposal::Block {
                        slot: number(&c["slot"]),
                        signing_root,
                    }
                } else {
                    Proposal::Attestation {
                        source_epoch: number(&c["source_epoch"]),
                        target_epoch: number(&c["target_epoch"]),
                        signing_root,
                    }
                };
                let complete = c["should_succeed_complete"].as_bool().expect("complete");
                let minimal = c["should_succeed"].as_bool().expect("minimal");
                let exception = variant == Variant::Minified
                    && MINIFIED_LOSES_HISTORY.contains(&(name, step_index, kind, i));
                let expected = if exception {
                    assert_ne!(
                        minimal, complete,
                        "{name}: exception on a strategy-neutral check"
                    );
                    exceptions_used += 1;
                    minimal
                } else {
                    complete
                };
                let got = match sp.check_and_record(&pubkey, &gvr, proposal) {
                    Ok(()) => true,
                    Err(SlashingError::Refused(_)) => false,
                    Err(e) => panic!("{name} step {step_index} {kind} {i}: {e}"),
                };
                assert_eq!(
                    got, expected,
                    "{name} ({variant:?}) step {step_index}: {kind} {i} {proposal:?}"
                );
                checks += 1;
            }
        }
    }
    let listed = MINIFIED_LOSES_HISTORY
        .iter()
        .filter(|e| e.0 == name)
        .count();
    if variant == Variant::Minified {
        assert_eq!(
            exceptions_used, listed,
            "{name}: unused MINIFIED_LOSES_HISTORY entries"
        );
    }
    checks
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        /// Every file of the suite, by name.
        const FILES: &[&str] = &[$(stringify!($name)),*];
        $(
            mod $name {
                #[test]
                fn as_given() {
                    super::run_file(stringify!($name), super::Variant::AsGiven, super::Store::Sqlite);
                }
                #[test]
                fn minified() {
                    super::run_file(stringify!($name), super::Variant::Minified, super::Store::Sqlite);
                }
                #[test]
                fn as_given_postgres() {
                    super::run_file(stringify!($name), super::Variant::AsGiven, super::Store::Postgres);
                }
                #[test]
                fn minified_postgres() {
                    super::run_file(stringify!($name), super::Variant::Minified, super::Store::Postgres);
                }
            }
        )*
    };
}

suite!(
    duplicate_pubkey_not_slashable,
    duplicate_pubkey_slashable_attestation,
    duplicate_pubkey_slashable_block,
    multiple_interchanges_multiple_validators_repeat_idem,
    multiple_interchanges_overlapping_validators_merge_stale,
    multiple_interchanges_overlapping_validators_repeat_idem,
    multiple_interchanges_single_validator_fail_iff_imported,
    multiple_interchanges_single_validator_first_surrounds_second,
    multiple_interchanges_single_validator_multiple_blocks_out_of_order,
    multiple_interchanges_single_validator_second_surrounds_first,
    multiple_interchanges_single_validator_single_att_out_of_order,
    multiple_interchanges_single_validator_single_block_out_of_order,
    multiple_interchanges_single_validator_single_message_gap,
    multiple_validators_multiple_blocks_and_attestations,
    multiple_validators_same_slot_blocks,
    single_validator_genesis_attestation,
    single_validator_import_only,
    single_validator_multiple_block_attempts,
    single_validator_multiple_blocks_and_attestations,
    single_validator_out_of_order_attestations,
    single_validator_out_of_order_blocks,
    single_validator_resign_attestation,
    single_validator_resign_block,
    single_validator_single_attestation,
    single_validator_single_block,
    single_validator_single_block_and_attestation,
    single_validator_single_block_and_attestation_signing_root,
    single_validator_slashable_attestations_double_vote,
    single_validator_slashable_attestations_surrounded_by_existing,
    single_validator_slashable_attestations_surrounds_existing,
    single_validator_slashable_blocks,
    single_validator_slashable_blocks_no_root,
    single_validator_source_greater_than_target,
    single_validator_source_greater_than_target_sensible_iff_minified,
    single_validator_source_greater_than_target_surrounded,
    single_validator_source_greater_than_target_surrounding,
    single_validator_two_blocks_no_signing_root,
    wrong_genesis_validators_root,
);

#[test]
fn every_suite_file_runs_in_both_variants() {
    let mut on_disk: Vec<String> = std::fs::read_dir(suite_dir())
        .expect("suite directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "schema")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "the suite! list must name every file of the suite"
    );
    assert_eq!(FILES.len(), 38);

    let (mut files, mut checks) = (0, 0);
    for name in FILES {
        for variant in [Variant::AsGiven, Variant::Minified] {
            checks += run_file(name, variant, Store::Sqlite);
            files += 1;
        }
    }
    assert_eq!(files, 76);
    assert_eq!(checks, 2 * 150, "signing checks over both variants");
}

const GVR: [u8; 32] = [0x11; 32];

fn att(source_epoch: u64, target_epoch: u64, root: u8) -> Proposal {
    Proposal::Attestation {
        source_epoch,
        target_epoch,
        signing_root: [root; 32],
    }
}

fn blk(slot: u64, root: u8) -> Proposal {
    Proposal::Block {
        slot,
        signing_root: [root; 32],
    }
}

fn refusal(r: Result<(), SlashingError>) -> Refusal {
    match r {
        Err(SlashingError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn export_then_import_into_a_fresh_database_keeps_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let a = SlashingProtection::open_sqlite(&dir.path().join("a.sqlite"), Some(GVR)).unwrap();
    let (v1, v2) = ([1u8; 48], [2u8; 48]);
    for (pk, p) in [
        (v1, blk(10, 1)),
        (v1, blk(12, 2)),
        (v1, att(1, 2, 3)),
        (v1, att(2, 5, 4)),
        (v2, att(7, 8, 5)),
    ] {
        a.check_and_record(&pk, &GVR, p).unwrap();
    }
    let exported = a.export_interchange(None).unwrap();
    let only_v2 = a.export_interchange(Some(&[v2, [9u8; 48]])).unwrap();
    assert!(!only_v2.contains(&hex::encode(v1)) && only_v2.contains(&hex::encode(v2)));

    let b = SlashingProtection::open_sqlite(&dir.path().join("b.sqlite"), Some(GVR)).unwrap();
    let summary = b.import_interchange(&exported).unwrap();
    assert_eq!(
        (summary.blocks_recorded, summary.attestations_recorded),
        (2, 3)
    );
    assert!(summary.minified.is_empty());
    // Re-importing changes nothing.
    let again = b.import_interchange(&exported).unwrap();
    assert_eq!((again.blocks_recorded, again.already_recorded), (0, 5));
    for sp in [&a, &b] {
        assert!(matches!(
            refusal(sp.check_and_record(&v1, &GVR, blk(12, 9))),
            Refusal::DoubleBlockProposal { .. }
        ));
        assert!(matches!(
            refusal(sp.check_and_record(&v1, &GVR, blk(9, 9))),
            Refusal::BelowLowWatermark { .. }
        ));
        assert!(matches!(
            refusal(sp.check_and_record(&v1, &GVR, att(2, 5, 9))),
            Refusal::DoubleVote { .. }
        ));
        assert!(matches!(
            refusal(sp.check_and_record(&v1, &GVR, att(3, 4, 9))),
            Refusal::SurroundedVote { .. }
        ));
        assert!(matches!(
            refusal(sp.check_and_record(&v2, &GVR, att(6, 9, 9))),
            Refusal::BelowLowWatermark { .. }
        ));
        // Identical re-signs survive the round trip, since signing roots travel with it.
        sp.check_and_record(&v1, &GVR, blk(12, 2)).unwrap();
        sp.check_and_record(&v1, &GVR, att(2, 5, 4)).unwrap();
    }
    assert_eq!(
        b.export_interchange(None).unwrap().len(),
        a.export_interchange(None).unwrap().len()
    );
}

#[test]
fn import_refuses_another_network_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sp = SlashingProtection::open_sqlite(&dir.path().join("g.sqlite"), Some(GVR)).unwrap();
    let file = |gvr: [u8; 32], slot: u64| {
        json!({
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": format!("0x{}", hex::encode(gvr))},
            "data": [{"pubkey": format!("0x{}", hex::encode([3u8; 48])), "signed_blocks": [{"slot": slot.to_string()}], "signed_attestations": []}]
        })
        .to_string()
    };
    let err = sp.import_interchange(&file([0x22; 32], 50)).unwrap_err();
    assert!(matches!(err, SlashingError::Interchange(_)), "{err}");
    // Nothing was recorded: slot 40 is still signable.
    sp.check_and_record(&[3u8; 48], &GVR, blk(40, 1)).unwrap();
    // A request for another network is refused.
    assert!(matches!(
        refusal(sp.check_and_record(&[3u8; 48], &[0x22; 32], blk(41, 1))),
        Refusal::GenesisValidatorsRootMismatch { .. }
    ));
    sp.import_interchange(&file(GVR, 50)).unwrap();
    assert!(matches!(
        refusal(sp.check_and_record(&[3u8; 48], &GVR, blk(50, 1))),
        Refusal::DoubleBlockProposal { .. }
    ));
}

#[test]
fn importing_old_history_never_lowers_protection() {
    let dir = tempfile::tempdir().unwrap();
    let sp = SlashingProtection::open_sqlite(&dir.path().join("o.sqlite"), Some(GVR)).unwrap();
    let pk = [4u8; 48];
    sp.check_and_record(&pk, &GVR, blk(100, 1)).unwrap();
    sp.check_and_record(&pk, &GVR, att(20, 21, 1)).unwrap();
    // Slots below 100 and targets at or below 21 are unknown history: refused.
    assert!(matches!(
        refusal(sp.check_and_record(&pk, &GVR, blk(50, 2))),
        Refusal::BelowLowWatermark { .. }
    ));
    let old = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": format!("0x{}", hex::encode(GVR))},
        "data": [{"pubkey": format!("0x{}", hex::encode(pk)),
                  "signed_blocks": [{"slot": "2"}],
                  "signed_attestations": [{"source_epoch": "1", "target_epoch": "2"}]}]
    });
    let summary = sp.import_interchange(&old.to_string()).unwrap();
    assert_eq!(
        (summary.blocks_recorded, summary.attestations_recorded),
        (1, 1)
    );
    // Still refused: the file says nothing about slots 3..99 or epochs 3..21.
    assert!(matches!(
        refusal(sp.check_and_record(&pk, &GVR, blk(50, 2))),
        Refusal::BelowLowWatermark { .. }
    ));
    assert!(matches!(
        refusal(sp.check_and_record(&pk, &GVR, att(5, 10, 2))),
        Refusal::BelowLowWatermark { .. }
    ));
    sp.check_and_record(&pk, &GVR, blk(101, 2)).unwrap();
}

#[test]
fn prune_keeps_protection_and_the_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    let sp = SlashingProtection::open_sqlite(&dir.path().join("p.sqlite"), Some(GVR)).unwrap();
    let pk = [5u8; 48];
    for e in 1..=100u64 {
        sp.check_and_record(&pk, &GVR, att(e - 1, e, 1)).unwrap();
        sp.check_and_record(&pk, &GVR, blk(e * 32, 1)).unwrap();
    }
    // Keep 10 epochs: attestations with target < 90 and blocks below slot 3200 - 320 go.
    let pruned = sp.prune(10).unwrap();
    assert_eq!(pruned, 89 + 89);
    assert_eq!(
        sp.prune(10).unwrap(),
        0,
        "pruning twice removes nothing more"
    );
    // Everything pruned is still refused, one way or another.
    for e in 1..90u64 {
        assert!(sp.check_and_record(&pk, &GVR, att(e - 1, e, 2)).is_err());
        assert!(sp.check_and_record(&pk, &GVR, blk(e * 32, 2)).is_err());
    }
    // Identical re-signs of kept records still work; new messages too.
    sp.check_and_record(&pk, &GVR, att(99, 100, 1)).unwrap();
    sp.check_and_record(&pk, &GVR, att(100, 101, 1)).unwrap();
    // Export after pruning is importable and as strict.
    let exported = sp.export_interchange(None).unwrap();
    let other = SlashingProtection::open_sqlite(&dir.path().join("q.sqlite"), Some(GVR)).unwrap();
    other.import_interchange(&exported).unwrap();
    for e in 1..90u64 {
        assert!(other.check_and_record(&pk, &GVR, att(e - 1, e, 2)).is_err());
    }
    other.check_and_record(&pk, &GVR, att(101, 102, 1)).unwrap();
}

#[test]
fn slashable_data_is_imported_as_watermarks_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sp = SlashingProtection::open_sqlite(&dir.path().join("s.sqlite"), Some(GVR)).unwrap();
    let pk = [6u8; 48];
    sp.check_and_record(&pk, &GVR, att(9, 21, 1)).unwrap();
    let file = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": format!("0x{}", hex::encode(GVR))},
        "data": [{"pubkey": format!("0x{}", hex::encode(pk)), "signed_blocks": [],
                  "signed_attestations": [{"source_epoch": "10", "target_epoch": "20"}]}]
    });
    let summary = sp.import_interchange(&file.to_string()).unwrap();
    assert_eq!(summary.minified.len(), 1);
    assert!(
        summary.minified[0].reason.contains("surrounded"),
        "{summary:?}"
    );
    assert_eq!(summary.attestations_recorded, 0);
    // Export says (at least) as much: an importer refuses what we refuse.
    let exported = sp.export_interchange(None).unwrap();
    let other = SlashingProtection::open_sqlite(&dir.path().join("t.sqlite"), Some(GVR)).unwrap();
    other.import_interchange(&exported).unwrap();
    for sp in [&sp, &other] {
        for p in [att(10, 21, 2), att(9, 22, 2), att(10, 20, 2), att(9, 21, 2)] {
            assert!(sp.check_and_record(&pk, &GVR, p).is_err(), "{p:?}");
        }
        sp.check_and_record(&pk, &GVR, att(10, 22, 2)).unwrap();
    }
}
