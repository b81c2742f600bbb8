//! Bringing keys in: EIP-2335 keystores (the deposit CLI's `validator_keys/`), decrypted on
//! every core, checked against their pubkeys, sealed on a device, written to the store — or
//! nothing at all when any keystore of the batch fails. And fresh random keys.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use secrecy::SecretString;

use crate::bls;
use crate::error::{Result, SignerError};
use crate::keys::eip2335::Keystore;
use crate::keys::record::{KeyRecord, PublicKeyBytes, ShareId};
use crate::keys::{seal_share, KeyStore};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar when stderr is a terminal, otherwise a line every 10%.
    Auto,
    /// Nothing.
    Quiet,
}

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Device that seals the keys.
    pub device: String,
    /// Progress display.
    pub progress: Progress,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Keys added to the store.
    pub imported: Vec<PublicKeyBytes>,
    /// Keys already present (left as they were).
    pub duplicates: Vec<PublicKeyBytes>,
    /// Distinct threads that ran a KDF.
    pub kdf_threads: usize,
    /// Wall time of the KDF phase.
    pub kdf_wall: Duration,
    /// Process CPU time during the KDF phase (Linux), to show the cores were used.
    pub kdf_cpu: Option<Duration>,
}

/// Expand directories into the keystore files they hold (`keystore*.json`, as the deposit CLI
/// names them); files are taken as given.
pub(crate) fn collect_keystore_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(SignerError::io(input))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("keystore") && n.ends_with(".json"))
                })
                .collect();
            if found.is_empty() {
                return Err(SignerError::Invalid(format!(
                    "{}: no keystore*.json files in this directory",
                    input.display()
                )));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// Process CPU time (user + system, all threads) from /proc/self/stat, in USER_HZ = 100 ticks.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    total: usize,
    done: AtomicUsize,
}

impl Reporter {
    fn new(progress: Progress, total: usize) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        let bar = (progress == Progress::Auto && tty).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "decrypting keystores {bar:40} {pos}/{len} [{elapsed_precise}, eta {eta}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Reporter {
            bar,
            lines: progress == Progress::Auto && !tty,
            total,
            done: AtomicUsize::new(0),
        }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if self.lines {
            let step = (self.total / 10).max(1);
            if done % step == 0 || done == self.total {
                eprintln!("decrypting keystores: {done}/{}", self.total);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Keystores decrypted in one batch, with how the KDF work was spread.
pub(crate) struct Decrypted {
    /// Each keystore's pubkey (checked against its secret) and secret, in input order.
    pub secrets: Vec<(PublicKeyBytes, blst::min_pk::SecretKey)>,
    /// An import report with the KDF figures filled in.
    pub report: ImportReport,
}

/// Read and decrypt every keystore, in parallel: all of them or an error naming each failure.
/// `passwords` holds one password for all keystores, or one per keystore.
pub(crate) fn decrypt_keystores(
    paths: &[PathBuf],
    passwords: &[SecretString],
    progress: Progress,
) -> Result<Decrypted> {
    if passwords.len() != 1 && passwords.len() != paths.len() {
        return Err(SignerError::Invalid(format!(
            "{} password(s) for {} keystore(s): give one for all, or one per keystore",
            passwords.len(),
            paths.len()
        )));
    }
    let keystores = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(SignerError::io(p))?;
            Keystore::from_json(&text).map_err(|source| SignerError::Keystore {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let reporter = Reporter::new(progress, keystores.len());
    let threads = Mutex::new(HashSet::new());
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    let decrypted: Vec<Result<(PublicKeyBytes, blst::min_pk::SecretKey)>> = keystores
        .par_iter()
        .zip(paths.par_iter())
        .enumerate()
        .map(|(i, (ks, path))| {
            threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(std::thread::current().id());
            let password = &passwords[if passwords.len() == 1 { 0 } else { i }];
            let result = decrypt_one(ks, path, password);
            reporter.tick();
            result
        })
        .collect();
    reporter.finish();
    let kdf_wall = t0.elapsed();
    let kdf_cpu = cpu0
        .zip(process_cpu_time())
        .map(|(a, b)| b.saturating_sub(a));

    let mut failures = Vec::new();
    let mut secrets = Vec::new();
    for r in decrypted {
        match r {
            Ok(v) => secrets.push(v),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(SignerError::Invalid(format!(
            "{} of {} keystore(s) failed; nothing was imported:\n  {}",
            failures.len(),
            paths.len(),
            failures.join("\n  ")
        )));
    }
    let kdf_threads = threads.lock().unwrap_or_else(|p| p.into_inner()).len();
    Ok(Decrypted {
        secrets,
        report: ImportReport {
            kdf_threads,
            kdf_wall,
            kdf_cpu,
            ..Default::default()
        },
    })
}

/// Import keystores onto `opts.device`. All keystores are decrypted first, in parallel; if any
/// fails (wrong password, bad checksum, unknown KDF, pubkey mismatch) nothing is stored.
pub fn import_keystores(
    store: &mut KeyStore,
    devices: &crate::devices::Devices,
    paths: &[PathBuf],
    password: &SecretString,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let device = devices.get(&opts.device)?;
    let Decrypted {
        secrets,
        mut report,
    } = decrypt_keystores(paths, std::slice::from_ref(password), opts.progress)?;
    let one = ShareId::ONE;
    for (pubkey, sk) in secrets {
        if store.contains(&pubkey) || report.imported.contains(&pubkey) {
            report.duplicates.push(pubkey);
            continue;
        }
        let share = seal_share(device, &pubkey, one, &sk)?;
        store.insert(KeyRecord::whole(pubkey, share, "imported"))?;
        report.imported.push(pubkey);
    }
    Ok(report)
}

/// Decrypt keystores already in memory, in parallel on every core: one result per keystore, in
/// order, so that a failure (wrong password, pubkey mismatch, …) affects only its own entry.
/// `labels[i]` names keystore i in its error. Runs the KDFs on rayon's pool and blocks until
/// they are done: call it from a blocking thread, never from async code.
pub fn decrypt_each(
    keystores: &[(Keystore, SecretString)],
    labels: &[String],
) -> Vec<Result<(PublicKeyBytes, blst::min_pk::SecretKey)>> {
    keystores
        .par_iter()
        .zip(labels.par_iter())
        .map(|((ks, password), label)| decrypt_one(ks, Path::new(label), password))
        .collect()
}

/// Decrypt one keystore (its KDF, checksum and cipher) into the validator's public key and
/// secret. The Keymanager API calls it in its own turn at low priority (`crate::api::keymanager`).
pub(crate) fn decrypt_one(
    ks: &Keystore,
    path: &Path,
    password: &SecretString,
) -> Result<(PublicKeyBytes, blst::min_pk::SecretKey)> {
    let secret = ks
        .decrypt(password)
        .map_err(|source| SignerError::Keystore {
            path: path.to_owned(),
            source,
        })?;
    let sk = bls::secret_key(secret.as_ref()).map_err(|e| SignerError::KeyRecord {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let pubkey = PublicKeyBytes(bls::public_key_bytes(&sk));
    if let Some(claimed) = ks.pubkey.as_deref() {
        if PublicKeyBytes::parse(claimed) != Some(pubkey) {
            return Err(SignerError::KeyRecord {
                path: path.to_owned(),
                reason: format!(
                    "the keystore claims pubkey {claimed} but its secret gives {pubkey}"
                ),
            });
        }
    }
    Ok((pubkey, sk))
}

/// Generate `count` random keys sealed on `device`.
pub fn generate(
    store: &mut KeyStore,
    devices: &crate::devices::Devices,
    device: &str,
    count: usize,
) -> Result<Vec<PublicKeyBytes>> {
    let device = devices.get(device)?;
    let one = ShareId::ONE;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let sk = bls::random_secret_key()?;
        let pubkey = PublicKeyBytes(bls::public_key_bytes(&sk));
        let share = seal_share(device, &pubkey, one, &sk)?;
        store.insert(KeyRecord::whole(pubkey, share, "generated"))?;
        out.push(pubkey);
    }
    Ok(out)
}
