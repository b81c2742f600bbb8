//! `hsm-signer bench`: the benchmarks (`crate::bench`) from the command line.

use super::keys::{print_report, tempfile_dir};
use super::BenchCmd;
use crate::bench::slashing::Store;
use crate::config::Config;
use crate::devices::{bootstrap_embedded, open_devices};
use crate::{bench, Result, SignerError};

pub(super) fn bench_cmd(config: &Config, cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Slashing {
            validators,
            concurrency,
            seconds,
            postgres,
            json,
        } => {
            let err = |e: crate::slashing::SlashingError| {
                SignerError::Slashing(format!("slashing bench: {e}"))
            };
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let sk = crate::bls::random_secret_key()?;
            let raw =
                bench::throughput(threads, std::time::Duration::from_secs_f64(seconds), |i| {
                    std::hint::black_box(crate::bls::sign(&sk, &bench::message(i)));
                });
            let dir = tempfile_dir(&config.data_dir)?;
            let sqlite = crate::bench::slashing::bench(
                Store::Sqlite(&dir),
                validators,
                concurrency,
                seconds,
            )
            .map_err(err)?;
            let _ = std::fs::remove_dir_all(&dir);
            let pg = match &postgres {
                Some(url) => Some(
                    crate::bench::slashing::bench(
                        Store::Postgres(url),
                        validators,
                        concurrency,
                        seconds,
                    )
                    .map_err(err)?,
                ),
                None => None,
            };
            let report = serde_json::json!({
                "bench": "slashing",
                "validators": validators,
                "concurrency": concurrency,
                "raw_blst_signs_per_sec": raw,
                "sqlite": sqlite,
                "postgres": pg,
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("slashing protection: {validators} validators, {concurrency} concurrent attestations; raw blst {raw:.0} signs/s on {threads} threads");
                println!(
                    "{:<12} {:<24} {:>10} {:>8} {:>8} {:>10} {:>12} {:>14}",
                    "store",
                    "mode",
                    "att/s",
                    "p50 ms",
                    "p99 ms",
                    "÷ raw blst",
                    "per fsync",
                    "trips per txn"
                );
                let mut rows = vec![("sqlite", &sqlite)];
                if let Some(pg) = &pg {
                    rows.push(("postgresql", pg));
                }
                for (store, r) in rows {
                    for run in [&r.group_commit, &r.transaction_per_request] {
                        println!(
                            "{:<12} {:<24} {:>10.0} {:>8.2} {:>8.2} {:>10.2} {:>12.1} {:>14.1}",
                            store,
                            run.mode,
                            run.attestations_per_second,
                            run.p50_ms,
                            run.p99_ms,
                            run.attestations_per_second / raw,
                            run.mean_batch,
                            run.round_trips_per_transaction
                        );
                    }
                }
            }
            Ok(())
        }
        BenchCmd::SlashingLongrun {
            validators,
            days,
            keep_epochs,
            prune_interval_minutes,
            measure_epochs,
            concurrency,
            batch,
            postgres,
            postgres_only,
            json,
        } => {
            if keep_epochs < crate::slashing::MIN_KEEP_EPOCHS || prune_interval_minutes == 0 {
                return Err(SignerError::Config(format!(
                    "--keep-epochs must be at least {} and --prune-interval-minutes positive",
                    crate::slashing::MIN_KEEP_EPOCHS
                )));
            }
            let options = bench::slashing_longrun::LongrunOptions {
                validators,
                days,
                keep_epochs,
                prune_interval: std::time::Duration::from_secs(
                    prune_interval_minutes.saturating_mul(60),
                ),
                measure_epochs,
                concurrency,
                batch,
            };
            let dir = tempfile_dir(&config.data_dir)?;
            let report =
                bench::slashing_longrun::run(&dir, postgres.as_deref(), postgres_only, &options);
            let _ = std::fs::remove_dir_all(&dir);
            let report =
                report.map_err(|e| SignerError::Slashing(format!("slashing long run: {e}")))?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Threshold {
            seconds,
            concurrency,
            json,
        } => {
            bootstrap_embedded(config)?;
            let report = bench::threshold::run(config, seconds, concurrency)?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Scenario {
            validators,
            blocks,
            block_interval_ms,
            rounds,
            slow_latency_ms,
            slow_sessions,
            precompute,
            json,
            plot,
        } => {
            bootstrap_embedded(config)?;
            let report = bench::scenario::run(
                config,
                &bench::scenario::ScenarioOptions {
                    validators,
                    blocks,
                    block_interval: std::time::Duration::from_millis(block_interval_ms),
                    rounds,
                    slow_latency: std::time::Duration::from_millis(slow_latency_ms),
                    slow_sessions,
                    precompute,
                },
            )?;
            if let Some(path) = plot {
                std::fs::write(&path, report.svg()).map_err(SignerError::io(&path))?;
                eprintln!("latency distributions drawn to {}", path.display());
            }
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::HealthFlood {
            blocks,
            clients,
            rate,
            sources,
            fresh_connections,
            json,
        } => {
            bootstrap_embedded(config)?;
            let dir = tempfile_dir(&config.data_dir)?;
            let report = bench::health_flood::run(
                config,
                &dir,
                &bench::health_flood::FloodOptions {
                    blocks,
                    clients,
                    rate,
                    sources,
                    fresh_connections,
                },
            );
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Batch {
            keys,
            batch_size,
            blocks,
            json,
        } => {
            bootstrap_embedded(config)?;
            let dir = tempfile_dir(&config.data_dir)?;
            let report = bench::batch::run(
                config,
                &dir,
                &bench::batch::BatchOptions {
                    keys,
                    batch_size,
                    blocks,
                },
            );
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Distributed {
            keys,
            seconds,
            concurrency,
            blocks,
            block_interval_ms,
            rounds,
            max_in_flight,
            json,
        } => {
            if max_in_flight == Some(0) {
                return Err(SignerError::Config(
                    "--max-in-flight must be positive".into(),
                ));
            }
            bootstrap_embedded(config)?;
            let dir = tempfile_dir(&config.data_dir)?;
            let report = bench::distributed::run(
                config,
                &dir,
                &bench::distributed::DistributedOptions {
                    keys,
                    seconds,
                    concurrency,
                    blocks,
                    block_interval: std::time::Duration::from_millis(block_interval_ms),
                    rounds,
                    max_in_flight,
                },
            );
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Http {
            keys,
            seconds,
            connections,
            postgres,
            group_commit_wait_us,
            plot,
            json,
        } => {
            if keys == 0 || connections == 0 || !(seconds > 0.0 && seconds <= 3600.0) {
                return Err(SignerError::Config(
                    "--keys and --connections must be positive, --seconds in (0, 3600]".into(),
                ));
            }
            bootstrap_embedded(config)?;
            let dir = tempfile_dir(&config.data_dir)?;
            let report = bench::http::run(
                config,
                &dir,
                &bench::http::HttpOptions {
                    keys,
                    seconds,
                    connections,
                    postgres: postgres.map(secrecy::SecretString::from),
                    group_commit_wait_us,
                },
            );
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            if let Some(path) = plot {
                std::fs::write(&path, report.svg()).map_err(SignerError::io(&path))?;
            }
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::SealKeys => {
            bootstrap_embedded(config)?;
            let sealed = bench::child::seal_keys(config, std::io::stdin().lock())?;
            println!("{sealed} key(s) sealed");
            Ok(())
        }
        BenchCmd::Custody {
            device,
            threads,
            seconds,
            json,
        } => {
            let devices = open_devices(config)?;
            let device = device.unwrap_or_else(|| config.default_device.clone());
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let report = bench::custody::run(&devices, &device, threads, seconds)?;
            print_report(&report, report.table(), json);
            Ok(())
        }
    }
}
