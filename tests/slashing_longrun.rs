//! `hsm-signer bench slashing-longrun` at a tiny size, through the real binary, on a real SQLite
//! file and a real PostgreSQL server: days of traffic with pruning on leave a database bounded by
//! what `keep_epochs` allows, with every validator's newest epochs kept.

mod common;

use common::pg::PgServer;

#[test]
fn a_few_simulated_days_leave_a_bounded_database_on_sqlite_and_postgres() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (validators, days, keep, interval_minutes) = (50u64, 3u64, 64u64, 60u64);
    let out = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["bench", "slashing-longrun"])
        .args(["--validators", &validators.to_string()])
        .args(["--days", &days.to_string()])
        .args(["--keep-epochs", &keep.to_string()])
        .args(["--prune-interval-minutes", &interval_minutes.to_string()])
        .args([
            "--measure-epochs",
            "4",
            "--concurrency",
            "8",
            "--batch",
            "16",
        ])
        .args(["--postgres", pg.url(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let epochs = days * 225;
    // An hour is 9.375 epochs: a validator gains at most 10 records between two passes.
    let bound = validators * (keep + 1 + 10);
    for store in ["sqlite", "postgres"] {
        let run = &report[store];
        let n = |k: &str| {
            run[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{store}: {k} in {run}"))
        };
        assert_eq!(n("errors"), 0, "{store}: {run}");
        assert_eq!(n("epochs"), epochs, "{store}: {run}");
        assert_eq!(n("attestations"), validators * epochs, "{store}: {run}");
        // A pass each simulated hour.
        assert!(n("prune_passes") >= days * 24 - 1, "{store}: {run}");
        let f = &run["footprint"];
        let rows = f["attestations"].as_u64().unwrap();
        assert!(
            rows <= bound,
            "{store}: {rows} attestations, more than pruning allows ({bound})"
        );
        // The newest keep_epochs + 1 of every validator are all there.
        assert!(rows >= validators * (keep + 1), "{store}: {rows}");
        assert_eq!(run["bounded"], true, "{store}: {run}");
        assert_eq!(f["validators"].as_u64().unwrap(), validators, "{store}");
        // Unpruned there would be 32 blocks an epoch; kept are those of about the last
        // keep_epochs (+ an interval) epochs.
        let blocks = f["blocks"].as_u64().unwrap();
        assert!(
            blocks <= 32 * (keep + 1 + 10) + validators,
            "{store}: {blocks} blocks"
        );
        assert_eq!(
            n("pruned_records") + rows + blocks,
            validators * epochs + n("blocks"),
            "{store}: every record is either kept or pruned"
        );
        assert!(f["bytes"].as_u64().unwrap() > 0, "{store}");
        for window in ["day_1", "last_day"] {
            let w = &run[window];
            assert_eq!(w["attestations"], validators * 4, "{store} {window}: {w}");
            assert_eq!(w["blocks"], 32 * 4, "{store} {window}: {w}");
            // Every measured check is counted once: clear of any pruning pass, or during one.
            assert_eq!(
                w["attestations_clear"].as_u64().unwrap()
                    + w["attestations_during_pass"].as_u64().unwrap(),
                validators * 4,
                "{store} {window}: {w}"
            );
        }
    }
    // The scratch database is gone.
    let left = pg
        .admin()
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hsm_signer_longrun%'",
            &[],
        )
        .unwrap();
    assert!(left.is_empty());
}
