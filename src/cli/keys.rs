//! `hsm-signer keys`: generate, import, split, list and verify keys.

use std::path::PathBuf;

use secrecy::SecretString;
use serde_json::json;

use super::KeysCmd;
use crate::config::Config;
use crate::devices::open_devices;
use crate::keys::provision::{self, Placement};
use crate::keys::{self, ImportOptions, KeyStore, Progress, PublicKeyBytes};
use crate::{Result, SignerError};

pub(super) fn keys_cmd(config: &Config, cmd: KeysCmd) -> Result<()> {
    let mut store = KeyStore::load_strict(&config.keys_dir())?;
    match cmd {
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
            group_pubkey,
            threshold,
            share_ids,
            devices,
        } => {
            let group_pubkey = PublicKeyBytes::parse(&group_pubkey).ok_or_else(|| {
                SignerError::Invalid(format!(
                    "--group-pubkey {group_pubkey:?} is not a 48-byte hex public key"
                ))
            })?;
            let mut import = provision::ShareImport {
                keystores,
                passwords: Vec::new(),
                group_pubkey,
                threshold,
                ids: provision::parse_share_ids(&share_ids)?,
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
            let pk = provision::import_shares(&mut store, &open, &import, Progress::Quiet)?;
            println!(
                "imported {pk} as {threshold}-of-{} shares on {}",
                import.devices.len(),
                import.devices.join(",")
            );
            Ok(())
        }
        KeysCmd::List { json } => {
            if json {
                let list: Vec<_> = store
                    .iter()
                    .map(|r| {
                        json!({
                            "pubkey": r.pubkey,
                            "threshold": r.threshold,
                            "shares": r.shares.iter().map(|s| json!({"id": s.id, "device": s.device, "pubkey": s.pubkey})).collect::<Vec<_>>(),
                            "origin": r.origin,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for r in store.iter() {
                    let devices: Vec<_> = r.shares.iter().map(|s| s.device.as_str()).collect();
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
