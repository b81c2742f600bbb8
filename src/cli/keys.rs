//! `hsm-signer keys`: generate, import, split, list and verify keys.

use std::path::PathBuf;

use secrecy::SecretString;
use serde_json::json;

use super::{KeysCmd, SplitKeyArgs};
use crate::config::Config;
use crate::devices::open_devices;
use crate::error::DistributionError;
use crate::keys::distribution::{self, Manifest, OwnShare, SplitSpec};
use crate::keys::provision::{self, Placement};
use crate::keys::{self, ImportOptions, KeyStore, Progress, PublicKeyBytes};
use crate::{Result, SignerError};

pub(super) fn keys_cmd(config: &Config, cmd: KeysCmd) -> Result<()> {
    // A split needs neither the key store nor a device.
    if let KeysCmd::Split(args) = cmd {
        return split_cmd(args);
    }
    let mut store = KeyStore::load_strict(&config.keys_dir())?;
    match cmd {
        KeysCmd::Split(_) => Err(SignerError::Internal(
            "keys split is run before the key store is loaded".into(),
        )),
        KeysCmd::Import {
            keystores,
            password_file,
            device,
            split,
        } => {
            let placement = split.resolve(config, device)?;
            let password = read_password(&password_file)?;
            let paths = keys::import::collect_keystore_paths(&keystores)?;
            let devices = open_devices(config)?;
            let (report, device) = match placement {
                Placement::Whole(device) => (
                    keys::import_keystores(
                        &mut store,
                        &devices,
                        &paths,
                        &password,
                        &ImportOptions {
                            device: device.clone(),
                            progress: Progress::Auto,
                        },
                    )?,
                    device,
                ),
                Placement::Split(plan) => (
                    provision::import_keystores_threshold(
                        &mut store,
                        &devices,
                        &paths,
                        &password,
                        &plan,
                        Progress::Auto,
                    )?,
                    format!(
                        "{}-of-{} shares on {}",
                        plan.threshold,
                        plan.devices.len(),
                        plan.devices.join(",")
                    ),
                ),
            };
            for pk in &report.imported {
                println!("imported {pk}");
            }
            for pk in &report.duplicates {
                println!("already present {pk}");
            }
            let cpu = report
                .kdf_cpu
                .map(|c| {
                    format!(
                        ", {:.1} s CPU ({:.2} cores busy)",
                        c.as_secs_f64(),
                        c.as_secs_f64() / report.kdf_wall.as_secs_f64().max(1e-9)
                    )
                })
                .unwrap_or_default();
            println!(
                "{} imported, {} already present, onto {device}; KDF on {} threads in {:.1} s{cpu}",
                report.imported.len(),
                report.duplicates.len(),
                report.kdf_threads,
                report.kdf_wall.as_secs_f64(),
            );
            Ok(())
        }
        KeysCmd::Generate {
            count,
            device,
            split,
        } => {
            let placement = split.resolve(config, device)?;
            let devices = open_devices(config)?;
            let pks = match placement {
                Placement::Whole(device) => keys::generate(&mut store, &devices, &device, count)?,
                Placement::Split(plan) => {
                    provision::generate_threshold(&mut store, &devices, count, &plan)?
                }
            };
            for pk in pks {
                println!("{pk}");
            }
            Ok(())
        }
        KeysCmd::ImportShares {
            keystores,
            password_files,
            manifest,
            device,
            group_pubkey,
            threshold,
            share_ids,
            devices,
        } => match share_import_mode(
            keystores,
            password_files,
            manifest,
            device,
            group_pubkey,
            threshold,
            share_ids,
            devices,
        )? {
            ShareImportMode::Local {
                keystores,
                password_files,
                group_pubkey,
                threshold,
                share_ids,
                devices,
            } => import_local_shares(
                config,
                &mut store,
                keystores,
                password_files,
                &group_pubkey,
                threshold,
                &share_ids,
                devices,
            ),
            ShareImportMode::Participant {
                manifest,
                keystore,
                password_file,
                device,
            } => import_participant_share(
                config,
                &mut store,
                &manifest,
                &keystore,
                &password_file,
                device,
            ),
        },
        KeysCmd::List { json } => {
            if json {
                let list: Vec<_> = store
                    .iter()
                    .map(|r| {
                        let mut entry = json!({
                            "pubkey": r.pubkey,
                            "threshold": r.threshold,
                            "shares": r.shares.iter().map(|s| json!({"id": s.id, "device": s.device, "pubkey": s.pubkey})).collect::<Vec<_>>(),
                            "origin": r.origin,
                        });
                        if let Some(account) = &r.distributed {
                            entry["distributed"] = json!(account);
                        }
                        entry
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for r in store.iter() {
                    let devices: Vec<_> = r.shares.iter().map(|s| s.device.as_str()).collect();
                    if let (Some(account), Some(own)) = (&r.distributed, r.own_share()) {
                        println!(
                            "{} share {} of {}-of-{} (participant) on {}",
                            r.pubkey,
                            own.id,
                            account.signing_threshold,
                            account.participants.len(),
                            own.device
                        );
                        continue;
                    }
                    println!(
                        "{} {}-of-{} on {}",
                        r.pubkey,
                        r.threshold,
                        r.shares.len(),
                        devices.join(",")
                    );
                }
                eprintln!("{} key(s) in {}", store.len(), store.dir().display());
            }
            Ok(())
        }
        KeysCmd::Delete { pubkey } => {
            let pk = PublicKeyBytes::parse(&pubkey).ok_or_else(|| {
                SignerError::Invalid(format!("{pubkey:?} is not a 48-byte hex public key"))
            })?;
            store.delete(&pk)?;
            println!("deleted {pk}");
            Ok(())
        }
    }
}

fn split_cmd(args: SplitKeyArgs) -> Result<()> {
    let ids = args
        .share_ids
        .as_deref()
        .map(provision::parse_share_ids)
        .transpose()?;
    let spec = SplitSpec::new(args.threshold, args.shares, ids, args.participants.clone())?;
    // Before the key derivation; `Dealt::write` creates the directory exclusively all the same.
    if args.out.symlink_metadata().is_ok() {
        return Err(DistributionError::OutputExists(args.out).into());
    }
    let password = read_password(&args.password_file)?;
    let (composite, secret) = distribution::open_keystore(&args.keystore, &password)?;
    let dealt = distribution::deal(&secret, &spec)?;
    dealt.write(&args.out)?;
    println!(
        "split {composite} {}-of-{} into {}:",
        spec.threshold(),
        spec.shares(),
        args.out.display()
    );
    for (id, endpoint) in dealt.ids().into_iter().zip(&args.participants) {
        println!(
            "  {endpoint}: {} {} (share {id})",
            distribution::share_keystore_name(id),
            distribution::share_password_name(id)
        );
    }
    println!("  every participant: {}", distribution::MANIFEST_FILE);
    eprintln!(
        "give each participant its keystore, its password file and the manifest, run `keys \
         import-shares --manifest` there, then delete {}",
        args.out.display()
    );
    Ok(())
}

/// The two modes of `keys import-shares`, resolved from its arguments.
enum ShareImportMode {
    /// Every share onto this host's devices.
    Local {
        keystores: Vec<PathBuf>,
        password_files: Vec<PathBuf>,
        group_pubkey: String,
        threshold: usize,
        share_ids: String,
        devices: Vec<String>,
    },
    /// This participant's one share of a distributed account.
    Participant {
        manifest: PathBuf,
        keystore: PathBuf,
        password_file: PathBuf,
        device: Option<String>,
    },
}

/// Which mode the arguments ask for; mixing the two, or a mode's argument missing, is refused
/// in one line that says what each mode takes.
#[allow(clippy::too_many_arguments)]
fn share_import_mode(
    keystores: Vec<PathBuf>,
    password_files: Vec<PathBuf>,
    manifest: Option<PathBuf>,
    device: Option<String>,
    group_pubkey: Option<String>,
    threshold: Option<usize>,
    share_ids: Option<String>,
    devices: Vec<String>,
) -> Result<ShareImportMode> {
    let local: Vec<&str> = [
        ("--group-pubkey", group_pubkey.is_some()),
        ("--threshold", threshold.is_some()),
        ("--share-ids", share_ids.is_some()),
        ("--devices", !devices.is_empty()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if let Some(manifest) = manifest {
        if !local.is_empty() {
            return Err(SignerError::Invalid(format!(
                "--manifest (participant mode: this host's one share) cannot be combined with \
                 {} (local mode: every share on this host's devices)",
                local.join(", ")
            )));
        }
        let ([keystore], [password_file]) = (keystores.as_slice(), password_files.as_slice())
        else {
            return Err(SignerError::Invalid(format!(
                "participant mode (--manifest) imports one share: give one --keystore and one \
                 --password-file, not {} and {}",
                keystores.len(),
                password_files.len()
            )));
        };
        return Ok(ShareImportMode::Participant {
            keystore: keystore.clone(),
            password_file: password_file.clone(),
            manifest,
            device,
        });
    }
    if device.is_some() {
        return Err(SignerError::Invalid(
            "--device is for participant mode (with --manifest); local mode places each share \
             with --devices"
                .into(),
        ));
    }
    match (group_pubkey, threshold, share_ids, devices) {
        (Some(group_pubkey), Some(threshold), Some(share_ids), devices) if !devices.is_empty() => {
            Ok(ShareImportMode::Local {
                keystores,
                password_files,
                group_pubkey,
                threshold,
                share_ids,
                devices,
            })
        }
        _ => {
            let missing: Vec<&str> = ["--group-pubkey", "--threshold", "--share-ids", "--devices"]
                .into_iter()
                .filter(|f| !local.contains(f))
                .collect();
            Err(SignerError::Invalid(format!(
                "import-shares needs --manifest (participant mode: this host's one share) or \
                 local mode's --group-pubkey, --threshold, --share-ids and --devices (missing: \
                 {})",
                missing.join(", ")
            )))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn import_local_shares(
    config: &Config,
    store: &mut KeyStore,
    keystores: Vec<PathBuf>,
    password_files: Vec<PathBuf>,
    group_pubkey: &str,
    threshold: usize,
    share_ids: &str,
    devices: Vec<String>,
) -> Result<()> {
    let group_pubkey = PublicKeyBytes::parse(group_pubkey).ok_or_else(|| {
        SignerError::Invalid(format!(
            "--group-pubkey {group_pubkey:?} is not a 48-byte hex public key"
        ))
    })?;
    let mut import = provision::ShareImport {
        keystores,
        passwords: Vec::new(),
        group_pubkey,
        threshold,
        ids: provision::parse_share_ids(share_ids)?,
        devices,
    };
    provision::check_share_import(&import)?;
    for d in &import.devices {
        config.device(d)?;
    }
    import.passwords = password_files
        .iter()
        .map(|f| read_password(f))
        .collect::<Result<_>>()?;
    let open = open_devices(config)?;
    let pk = provision::import_shares(store, &open, &import, Progress::Quiet)?;
    println!(
        "imported {pk} as {threshold}-of-{} shares on {}",
        import.devices.len(),
        import.devices.join(",")
    );
    Ok(())
}

/// Participant mode: everything is read and checked (manifest, keystore, password, the key not
/// stored yet, the device configured) before any device is opened, so bad input changes nothing.
fn import_participant_share(
    config: &Config,
    store: &mut KeyStore,
    manifest_path: &std::path::Path,
    keystore: &std::path::Path,
    password_file: &std::path::Path,
    device: Option<String>,
) -> Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let composite = manifest.composite_public_key();
    if store.contains(&composite) {
        return Err(DistributionError::AlreadyStored(composite.to_string()).into());
    }
    let device = device.unwrap_or_else(|| config.default_device.clone());
    config.device(&device)?;
    let password = read_password(password_file)?;
    let share = OwnShare::open(&manifest, manifest_path, keystore, &password)?;
    let (id, endpoint) = (share.id(), share.endpoint().to_owned());
    let (t, n) = (
        share.account().signing_threshold,
        share.account().participants.len(),
    );
    let devices = open_devices(config)?;
    share.store(store, devices.get(&device)?)?;
    println!(
        "imported share {id} of {composite} ({t}-of-{n}; this participant: {endpoint}) on {device}"
    );
    Ok(())
}

pub(super) fn read_password(path: &std::path::Path) -> Result<SecretString> {
    let raw =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(SignerError::io(path))?);
    Ok(SecretString::from(
        raw.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// A benchmark report as pretty JSON, or as its table.
pub(super) fn print_report(report: &impl serde::Serialize, table: String, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{table}");
    }
}

/// A fresh scratch directory under the data directory.
pub(super) fn tempfile_dir(data_dir: &std::path::Path) -> Result<PathBuf> {
    let dir = data_dir.join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(SignerError::io(&dir))?;
    Ok(dir)
}
