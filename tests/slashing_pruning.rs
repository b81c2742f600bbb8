//! Pruning in the background, on a real SQLite file and a real PostgreSQL server: it removes old
//! records and keeps the newest epochs, protection holds over what it removed (the low
//! watermarks rise), a block is answered within a bound while a large pass runs, and two
//! instances pruning one PostgreSQL database at once stay safe.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::pg::PgServer;
use hsm_signer::slashing::{
    Options, Proposal, Pruning, Refusal, SlashingError, SlashingProtection, WatermarkKind,
};

const GVR: [u8; 32] = [0x55; 32];

/// Where a test's database lives: a SQLite file, or a fresh database on a PostgreSQL server.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(PgServer, String),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Db {
        let pg = PgServer::start();
        let url = pg.create_database("prune");
        Db::Postgres(pg, url)
    }

    fn open(&self, pruning: Option<Pruning>) -> SlashingProtection {
        let options = Options {
            pruning,
            ..Options::default()
        };
        match self {
            Db::Sqlite(dir) => SlashingProtection::open_sqlite_with(
                &dir.path().join("s.sqlite"),
                Some(GVR),
                options,
            ),
            Db::Postgres(_, url) => SlashingProtection::open_postgres_with(url, Some(GVR), options),
        }
        .expect("open")
    }

    fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(..) => "postgresql",
        }
    }

    /// Give every registered validator an attestation history `e-1 -> e` for every epoch `e`
    /// in `epochs` (signing root unknown), straight in SQL: hundreds of thousands of records in
    /// seconds.
    fn seed_history(&self, epochs: std::ops::RangeInclusive<u64>) {
        let (from, to) = (*epochs.start() as i64, *epochs.end() as i64);
        match self {
            Db::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("s.sqlite")).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute(
                    "WITH RECURSIVE e(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM e WHERE n < ?2)
                     INSERT INTO signed_attestations (validator_id, target_epoch, source_epoch)
                     SELECT v.id, e.n, e.n - 1 FROM validators v, e",
                    rusqlite::params![from, to],
                )
                .unwrap();
            }
            Db::Postgres(pg, url) => {
                pg.connect(url)
                    .execute(
                        "INSERT INTO hsm_signer.signed_attestations
                         (validator_id, target_epoch, source_epoch)
                         SELECT v.id, e, e - 1 FROM hsm_signer.validators v,
                         generate_series($1::BIGINT, $2::BIGINT) e",
                        &[&from, &to],
                    )
                    .unwrap();
            }
        }
    }
}

fn pubkey(i: u64) -> [u8; 48] {
    let mut pk = [0u8; 48];
    pk[0] = 0xa0;
    pk[40..].copy_from_slice(&i.to_be_bytes());
    pk
}

fn root(tag: u64) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(tag + 1).to_le_bytes());
    r
}

fn att(source_epoch: u64, target_epoch: u64, tag: u64) -> Proposal {
    Proposal::Attestation {
        source_epoch,
        target_epoch,
        signing_root: root(tag),
    }
}

fn block(slot: u64, tag: u64) -> Proposal {
    Proposal::Block {
        slot,
        signing_root: root(tag),
    }
}

/// Wait until `sp` has completed `passes` pruning passes (at most 60 s).
fn wait_for_passes(sp: &SlashingProtection, passes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sp.stats().prune_passes < passes {
        assert!(
            Instant::now() < deadline,
            "no pruning pass: {:?}",
            sp.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn below_watermark(r: &Result<(), SlashingError>, kind: WatermarkKind) -> bool {
    matches!(r, Err(SlashingError::Refused(Refusal::BelowLowWatermark { kind: k, .. })) if *k == kind)
}

fn background_pruning_keeps_the_newest_epochs_and_protection(db: Db) {
    let name = db.name();
    let sp = db.open(Some(Pruning {
        keep_epochs: 10,
        interval: Duration::from_millis(50),
        ..Pruning::default()
    }));
    // Three validators, epochs 1..=50: an attestation e-1 -> e and a block at slot 32e each.
    for v in 0..3 {
        for e in 1..=50u64 {
            sp.check_and_record(&pubkey(v), &GVR, att(e - 1, e, 1))
                .unwrap();
            sp.check_and_record(&pubkey(v), &GVR, block(e * 32, 1))
                .unwrap();
        }
    }
    // A pass that started after the last record has seen all of them.
    let passes = sp.stats().prune_passes;
    wait_for_passes(&sp, passes + 2);
    let stats = sp.stats();
    let kept = sp.footprint().unwrap();
    // Kept: targets 40..=50 and slots 32*40..=32*50 (the newest 10 epochs before the newest).
    assert_eq!(
        (kept.validators, kept.attestations, kept.blocks),
        (3, 3 * 11, 3 * 11),
        "{name}: {kept:?}"
    );
    assert_eq!(stats.pruned_records, 3 * (39 + 39), "{name}: {stats:?}");
    assert_eq!(stats.prune_failures, 0, "{name}: {stats:?}");
    let export: serde_json::Value =
        serde_json::from_str(&sp.export_interchange(Some(&[pubkey(1)])).unwrap()).unwrap();
    let targets: Vec<&str> = export["data"][0]["signed_attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target_epoch"].as_str().unwrap())
        .collect();
    assert_eq!(targets.first(), Some(&"40"), "{name}: {targets:?}");
    assert_eq!(targets.len(), 11, "{name}");

    let pk = pubkey(1);
    // A double vote on a pruned target, a vote surrounding a pruned one, a vote in a gap of the
    // pruned history: each below the raised watermarks.
    let double = sp.check_and_record(&pk, &GVR, att(29, 30, 2));
    assert!(
        below_watermark(&double, WatermarkKind::AttestationSource),
        "{name}: {double:?}"
    );
    let surround = sp.check_and_record(&pk, &GVR, att(19, 22, 2));
    assert!(
        below_watermark(&surround, WatermarkKind::AttestationSource),
        "{name}: {surround:?}"
    );
    let late = sp.check_and_record(&pk, &GVR, att(39, 39, 2));
    assert!(
        below_watermark(&late, WatermarkKind::AttestationTarget),
        "{name}: {late:?}"
    );
    // A double proposal at a pruned slot, and a slot between pruned blocks that the complete
    // strategy allowed before pruning (above the lowest block): both below the block watermark.
    for slot in [20 * 32, 20 * 32 + 5] {
        let r = sp.check_and_record(&pk, &GVR, block(slot, 2));
        assert!(
            below_watermark(&r, WatermarkKind::BlockSlot),
            "{name}: {r:?}"
        );
    }
    // What was kept still decides: a double vote on a kept target, a surround of a kept vote.
    let r = sp.check_and_record(&pk, &GVR, att(44, 45, 2));
    assert!(
        matches!(r, Err(SlashingError::Refused(Refusal::DoubleVote { .. }))),
        "{name}: {r:?}"
    );
    let r = sp.check_and_record(&pk, &GVR, att(43, 51, 2));
    assert!(
        matches!(
            r,
            Err(SlashingError::Refused(Refusal::SurroundingVote { .. }))
        ),
        "{name}: {r:?}"
    );
    // And signing goes on.
    sp.check_and_record(&pk, &GVR, att(49, 50, 1)).unwrap();
    sp.check_and_record(&pk, &GVR, att(50, 51, 1)).unwrap();
    sp.check_and_record(&pk, &GVR, block(51 * 32, 1)).unwrap();
}

#[test]
fn background_pruning_keeps_the_newest_epochs_and_protection_on_sqlite() {
    background_pruning_keeps_the_newest_epochs_and_protection(Db::sqlite());
}

#[test]
fn background_pruning_keeps_the_newest_epochs_and_protection_on_postgres() {
    background_pruning_keeps_the_newest_epochs_and_protection(Db::postgres());
}

/// A pass over `validators` validators with 200 epochs of history each (keeping 10), in the
/// background, while blocks of another validator are signed one after another, 2 ms apart: no
/// block waits more than a quarter of the pass. Pruned in one transaction (as before), the first
/// block would have waited for about the whole pass. (Relative, because a shared test machine
/// stretches both; typical here: 15-25 ms worst for a pass of 0.8-3 s.)
fn a_block_waits_little_while_a_large_pass_prunes(db: Db, validators: u64) {
    let name = db.name();
    {
        // Register the validators (one attestation each) and give them their history.
        let sp = db.open(None);
        for v in 0..validators {
            sp.check_and_record(&pubkey(v), &GVR, att(200, 201, 1))
                .unwrap();
        }
    }
    db.seed_history(1..=200);
    let sp = db.open(Some(Pruning {
        keep_epochs: 10,
        interval: Duration::from_secs(3600),
        ..Pruning::default()
    }));
    let proposer = pubkey(validators + 1);
    let mut latencies = Vec::new();
    let mut slot = 0;
    while sp.stats().prune_passes == 0 {
        slot += 1;
        let t0 = Instant::now();
        sp.check_and_record(&proposer, &GVR, block(slot, 1))
            .unwrap();
        latencies.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = sp.stats();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    let mut top: Vec<(usize, Duration)> = latencies.iter().copied().enumerate().collect();
    top.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    eprintln!(
        "{name}: slowest blocks (index, latency): {:?}",
        &top[..top.len().min(6)]
    );
    eprintln!(
        "{name}: pass of {:?} pruned {} records; {} blocks meanwhile, worst {worst:?}",
        stats.last_prune_duration,
        stats.pruned_records,
        latencies.len()
    );
    assert_eq!(
        stats.pruned_records,
        validators * 190,
        "{name}: targets 1..=190 of each validator go (201 is its newest)"
    );
    assert!(latencies.len() >= 10, "{name}: {} blocks", latencies.len());
    assert!(
        worst * 4 < stats.last_prune_duration,
        "{name}: a block waited {worst:?} during a pass of {:?}",
        stats.last_prune_duration
    );
}

#[test]
fn a_block_waits_little_while_a_large_pass_prunes_on_sqlite() {
    a_block_waits_little_while_a_large_pass_prunes(Db::sqlite(), 4000);
}

#[test]
fn a_block_waits_little_while_a_large_pass_prunes_on_postgres() {
    a_block_waits_little_while_a_large_pass_prunes(Db::postgres(), 1500);
}

#[test]
fn two_instances_pruning_one_postgres_database_at_once_stay_safe_and_bounded() {
    // Both instances attest for the same validators, epoch after epoch (every batch of one wants
    // rows the other's batches and prune chunks hold), and both prune every 20 ms.
    let db = Db::postgres();
    let pruning = Pruning {
        keep_epochs: 5,
        interval: Duration::from_millis(20),
        ..Pruning::default()
    };
    let services = [db.open(Some(pruning)), db.open(Some(pruning))];
    let (validators, epochs) = (32u64, 40u64);
    let barrier = Arc::new(Barrier::new(2 * validators as usize));
    let wins: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2 * validators)
            .map(|k| {
                let (side, v) = (k % 2, k / 2);
                let (sp, barrier) = (services[side as usize].clone(), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    let mut won = Vec::new();
                    for e in 1..=epochs {
                        match sp.check_and_record(&pubkey(v), &GVR, att(e - 1, e, side)) {
                            Ok(()) => won.push((v, e)),
                            Err(SlashingError::Refused(_)) => {}
                            Err(err) => panic!("validator {v} epoch {e}: {err}"),
                        }
                    }
                    won
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut per_epoch: HashMap<(u64, u64), usize> = HashMap::new();
    for w in &wins {
        *per_epoch.entry(*w).or_default() += 1;
    }
    assert_eq!(per_epoch.len(), (validators * epochs) as usize);
    assert!(per_epoch.values().all(|&n| n == 1), "an epoch signed twice");
    for sp in &services {
        let stats = sp.stats();
        assert_eq!(stats.failed_transactions, 0, "{stats:?}");
        assert_eq!(stats.prune_failures, 0, "{stats:?}");
        assert!(stats.prune_passes >= 2, "{stats:?}");
    }
    // Both pruned; what is left is each validator's newest 5 epochs before its newest.
    let pruned: u64 = services.iter().map(|sp| sp.stats().pruned_records).sum();
    services[0].prune_pass(pruning.keep_epochs).unwrap();
    let left = services[1].footprint().unwrap();
    assert_eq!(left.attestations, validators * 6, "{left:?}");
    assert!(pruned > 0);
    // Protection held over the pruned epochs, whichever instance is asked.
    for sp in &services {
        let r = sp.check_and_record(&pubkey(3), &GVR, att(9, 10, 7));
        assert!(
            below_watermark(&r, WatermarkKind::AttestationSource),
            "{r:?}"
        );
    }
}

#[test]
fn pruning_keeps_at_least_two_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let r = SlashingProtection::open_sqlite_with(
        &dir.path().join("s.sqlite"),
        Some(GVR),
        Options {
            pruning: Some(Pruning {
                keep_epochs: 1,
                ..Pruning::default()
            }),
            ..Options::default()
        },
    );
    assert!(
        matches!(&r, Err(SlashingError::Store(m)) if m.contains("at least 2 epochs")),
        "{:?}",
        r.err()
    );
}
