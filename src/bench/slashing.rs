//! The slashing-protection benchmark behind `hsm-signer bench slashing`: durable attestations
//! per second and latency on SQLite and PostgreSQL (the same workload on a fresh database of
//! each), group commit against one transaction per request.
//!
//! Workload: `validators` keys, already registered with one attestation each (imported in one
//! transaction before timing); `concurrency` threads, each owning every `concurrency`-th
//! validator and attesting for its validators in turn, one epoch further each round, so that
//! every request is allowed and recorded (the steady state of a healthy signer).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::slashing::{Options, Proposal, Pubkey, Root, SlashingError, SlashingProtection};

/// One measured run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BenchRun {
    /// "group-commit" or "transaction-per-request".
    pub mode: String,
    /// Most requests per transaction.
    pub max_batch: usize,
    /// Validators.
    pub validators: usize,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Attestations checked and durably recorded.
    pub attestations: u64,
    /// Requests that failed (should be 0).
    pub errors: u64,
    /// Throughput.
    pub attestations_per_second: f64,
    /// Median latency of one `check_and_record`, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Worst latency, ms.
    pub max_ms: f64,
    /// Transactions committed (fsyncs).
    pub transactions: u64,
    /// Requests per transaction.
    pub mean_batch: f64,
    /// Statements sent to the database server per transaction, each a round trip
    /// (PostgreSQL; 0 for SQLite).
    pub round_trips_per_transaction: f64,
}

/// Group commit beside the one-transaction-per-request baseline, same workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BenchReport {
    /// Our way.
    pub group_commit: BenchRun,
    /// The baseline.
    pub transaction_per_request: BenchRun,
}

const GVR: Root = [0x42; 32];

/// The `i`-th benchmark validator's key.
pub(crate) fn pubkey(i: usize) -> Pubkey {
    let mut pk = [0u8; 48];
    pk[0] = 0xb0;
    pk[40..].copy_from_slice(&(i as u64).to_be_bytes());
    pk
}

/// A signing root unique to validator `i` and `epoch`.
pub(crate) fn signing_root(i: usize, epoch: u64) -> Root {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(i as u64).to_be_bytes());
    r[8..16].copy_from_slice(&epoch.to_be_bytes());
    r
}

/// Where a run keeps its scratch database.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Store<'a> {
    /// A fresh SQLite file in this folder for each mode (removed after).
    Sqlite(&'a Path),
    /// A fresh database for each mode on the server this URL points to (its role needs
    /// `CREATEDB`), dropped after.
    Postgres(&'a str),
}

/// Run both modes for `seconds` each on `store`: group commit, then one transaction per request.
pub(crate) fn bench(
    store: Store<'_>,
    validators: usize,
    concurrency: usize,
    seconds: f64,
) -> Result<BenchReport, SlashingError> {
    let validators = validators.max(1);
    let concurrency = concurrency.clamp(1, validators);
    let run = |max_batch| match store {
        Store::Sqlite(dir) => bench_sqlite_mode(dir, validators, concurrency, seconds, max_batch),
        Store::Postgres(url) => {
            let tag = format!("bench_{max_batch}");
            crate::slashing::with_scratch_database(url, &tag, |open| {
                run_with(open, validators, concurrency, seconds, max_batch)
            })
        }
    };
    Ok(BenchReport {
        group_commit: run(Options::default().max_batch)?,
        transaction_per_request: run(1)?,
    })
}

/// One SQLite run with at most `max_batch` requests per transaction (1: the baseline).
fn bench_sqlite_mode(
    dir: &Path,
    validators: usize,
    concurrency: usize,
    seconds: f64,
    max_batch: usize,
) -> Result<BenchRun, SlashingError> {
    let path = dir.join(format!(
        "bench-slashing-{}-{max_batch}-{}.sqlite",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = run(&path, validators, concurrency, seconds, max_batch);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}

fn run(
    path: &Path,
    validators: usize,
    concurrency: usize,
    seconds: f64,
    max_batch: usize,
) -> Result<BenchRun, SlashingError> {
    run_with(
        |gvr, options| SlashingProtection::open_sqlite_with(path, Some(gvr), options),
        validators,
        concurrency,
        seconds,
        max_batch,
    )
}

/// The workload on the service `open` returns for a fresh, empty database of any store.
pub(crate) fn run_with(
    open: impl FnOnce(Root, Options) -> Result<SlashingProtection, SlashingError>,
    validators: usize,
    concurrency: usize,
    seconds: f64,
    max_batch: usize,
) -> Result<BenchRun, SlashingError> {
    let sp = open(
        GVR,
        Options {
            max_batch,
            ..Options::default()
        },
    )?;
    // Every validator starts with history 0->1, imported in one transaction.
    let data: Vec<String> = (0..validators)
        .map(|i| {
            format!(
                r#"{{"pubkey":"0x{}","signed_blocks":[],"signed_attestations":[{{"source_epoch":"0","target_epoch":"1"}}]}}"#,
                hex::encode(pubkey(i))
            )
        })
        .collect();
    sp.import_interchange(&format!(
        r#"{{"metadata":{{"interchange_format_version":"5","genesis_validators_root":"0x{}"}},"data":[{}]}}"#,
        hex::encode(GVR),
        data.join(",")
    ))?;

    let before = sp.stats();
    let duration = Duration::from_secs_f64(seconds.max(0.01));
    let start = Instant::now();
    let per_thread: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|t| {
                let sp = sp.clone();
                s.spawn(move || {
                    let mine: Vec<usize> = (t..validators).step_by(concurrency).collect();
                    let mut latencies = Vec::new();
                    let mut errors = 0u64;
                    let mut epoch = 2u64;
                    'outer: loop {
                        for &i in &mine {
                            if start.elapsed() >= duration {
                                break 'outer;
                            }
                            let proposal = Proposal::Attestation {
                                source_epoch: epoch - 1,
                                target_epoch: epoch,
                                signing_root: signing_root(i, epoch),
                            };
                            let t0 = Instant::now();
                            let r = sp.check_and_record(&pubkey(i), &GVR, proposal);
                            let micros = t0.elapsed().as_micros();
                            match r {
                                Ok(()) => latencies.push(u32::try_from(micros).unwrap_or(u32::MAX)),
                                Err(_) => errors += 1,
                            }
                        }
                        epoch += 1;
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let after = sp.stats();

    let errors = per_thread.iter().map(|(_, e)| e).sum();
    let mut latencies: Vec<u32> = per_thread.into_iter().flat_map(|(l, _)| l).collect();
    latencies.sort_unstable();
    let pct = |p: usize| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = (latencies.len() * p / 100).min(latencies.len() - 1);
        f64::from(latencies[i]) / 1000.0
    };
    let attestations = latencies.len() as u64;
    let transactions = after.transactions - before.transactions;
    Ok(BenchRun {
        mode: if max_batch > 1 {
            "group-commit"
        } else {
            "transaction-per-request"
        }
        .into(),
        max_batch,
        validators,
        concurrency,
        seconds: elapsed,
        attestations,
        errors,
        attestations_per_second: attestations as f64 / elapsed,
        p50_ms: pct(50),
        p99_ms: pct(99),
        max_ms: latencies.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        transactions,
        mean_batch: (after.requests - before.requests) as f64 / transactions.max(1) as f64,
        round_trips_per_transaction: (after.round_trips - before.round_trips) as f64
            / transactions.max(1) as f64,
    })
}
