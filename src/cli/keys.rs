//! `hsm-signer keys`: generate, import, split, list and verify keys.

use std::path::PathBuf;

use secrecy::SecretString;
use serde_json::json;

use super::KeysCmd;
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
        KeysCmd::ImportShares(args) => match args.mode()? {
            ShareImportMode::Local(local) => import_local_shares(config, &mut store, local),
            ShareImportMode::Participant(participant) => {
                import_participant_share(config, &mut store, participant)
            }
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

/// The arguments of `keys split`.
#[derive(clap::Args)]
pub(super) struct SplitKeyArgs {
    /// The validator's EIP-2335 keystore.
    #[arg(long)]
    keystore: PathBuf,
    /// File holding the keystore's password.
    #[arg(long)]
    password_file: PathBuf,
    /// Shares needed to sign (t).
    #[arg(long)]
    threshold: usize,
    /// Shares to make (n; default: one per --participants endpoint, which it must equal).
    #[arg(long)]
    shares: Option<usize>,
    /// Share ids (x-coordinates), comma-separated, one per participant in the same order
    /// (default 1..n).
    #[arg(long)]
    share_ids: Option<String>,
    /// Each participant's HTTPS origin (https://host:port), comma-separated, in share order.
    #[arg(long, value_delimiter = ',', required = true)]
    participants: Vec<String>,
    /// The directory to write; it must not exist.
    #[arg(long)]
    out: PathBuf,
}

fn split_cmd(args: SplitKeyArgs) -> Result<()> {
    let ids = args
        .share_ids
        .as_deref()
        .map(provision::parse_share_ids)
        .transpose()?;
    let spec = SplitSpec::new(args.threshold, args.shares, ids, args.participants)?;
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
    for p in &dealt.manifest().account().participants {
        println!(
            "  {}: {} {} (share {})",
            p.endpoint,
            distribution::share_keystore_name(p.id),
            distribution::share_password_name(p.id),
            p.id
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

/// The arguments of `keys import-shares`: local mode's or participant mode's
/// ([`ImportSharesArgs::mode`] says which).
#[derive(clap::Args)]
pub(super) struct ImportSharesArgs {
    /// One keystore file per share (local mode: in the order of --share-ids and --devices;
    /// participant mode: exactly one, this participant's).
    #[arg(long = "keystore", required = true, num_args = 1..)]
    keystores: Vec<PathBuf>,
    /// Password file: one for all keystores, or one per keystore in the same order.
    #[arg(long = "password-file", required = true, num_args = 1..)]
    password_files: Vec<PathBuf>,
    /// Participant mode: the split's manifest.json.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Participant mode: device that seals the share (default: the configured default).
    #[arg(long)]
    device: Option<String>,
    /// Local mode: the validator (group) public key the shares recombine to (0x…).
    #[arg(long)]
    group_pubkey: Option<String>,
    /// Local mode: shares needed to sign.
    #[arg(long)]
    threshold: Option<usize>,
    /// Local mode: each share's id (x-coordinate), comma-separated, e.g. 1,2,3.
    #[arg(long)]
    share_ids: Option<String>,
    /// Local mode: each share's device, comma-separated.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
}

/// The two modes of `keys import-shares`, resolved from its arguments.
enum ShareImportMode {
    /// Every share onto this host's devices.
    Local(LocalShares),
    /// This participant's one share of a distributed account.
    Participant(ParticipantShare),
}

struct LocalShares {
    keystores: Vec<PathBuf>,
    password_files: Vec<PathBuf>,
    group_pubkey: String,
    threshold: usize,
    share_ids: String,
    devices: Vec<String>,
}

struct ParticipantShare {
    manifest: PathBuf,
    keystore: PathBuf,
    password_file: PathBuf,
    device: Option<String>,
}

impl ImportSharesArgs {
    /// Which mode the arguments ask for; mixing the two, or a mode's argument missing, is
    /// refused in one line that says what each mode takes.
    fn mode(self) -> Result<ShareImportMode> {
        let local: Vec<&str> = [
            ("--group-pubkey", self.group_pubkey.is_some()),
            ("--threshold", self.threshold.is_some()),
            ("--share-ids", self.share_ids.is_some()),
            ("--devices", !self.devices.is_empty()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if let Some(manifest) = self.manifest {
            if !local.is_empty() {
                return Err(SignerError::Invalid(format!(
                    "--manifest (participant mode: this host's one share) cannot be combined \
                     with {} (local mode: every share on this host's devices)",
                    local.join(", ")
                )));
            }
            let ([keystore], [password_file]) =
                (self.keystores.as_slice(), self.password_files.as_slice())
            else {
                return Err(SignerError::Invalid(format!(
                    "participant mode (--manifest) imports one share: give one --keystore and \
                     one --password-file, not {} and {}",
                    self.keystores.len(),
                    self.password_files.len()
                )));
            };
            return Ok(ShareImportMode::Participant(ParticipantShare {
                keystore: keystore.clone(),
                password_file: password_file.clone(),
                manifest,
                device: self.device,
            }));
        }
        if self.device.is_some() {
            return Err(SignerError::Invalid(
                "--device is for participant mode (with --manifest); local mode places each \
                 share with --devices"
                    .into(),
            ));
        }
        match (self.group_pubkey, self.threshold, self.share_ids) {
            (Some(group_pubkey), Some(threshold), Some(share_ids)) if !self.devices.is_empty() => {
                Ok(ShareImportMode::Local(LocalShares {
                    keystores: self.keystores,
                    password_files: self.password_files,
                    group_pubkey,
                    threshold,
                    share_ids,
                    devices: self.devices,
                }))
            }
            _ => {
                let missing: Vec<&str> =
                    ["--group-pubkey", "--threshold", "--share-ids", "--devices"]
                        .into_iter()
                        .filter(|f| !local.contains(f))
                        .collect();
                Err(SignerError::Invalid(format!(
                    "import-shares needs --manifest (participant mode: this host's one share) or \
                     local mode's --group-pubkey, --threshold, --share-ids and --devices \
                     (missing: {})",
                    missing.join(", ")
                )))
            }
        }
    }
}

fn import_local_shares(config: &Config, store: &mut KeyStore, args: LocalShares) -> Result<()> {
    let group_pubkey = PublicKeyBytes::parse(&args.group_pubkey).ok_or_else(|| {
        SignerError::Invalid(format!(
            "--group-pubkey {:?} is not a 48-byte hex public key",
            args.group_pubkey
        ))
    })?;
    let mut import = provision::ShareImport {
        keystores: args.keystores,
        passwords: Vec::new(),
        group_pubkey,
        threshold: args.threshold,
        ids: provision::parse_share_ids(&args.share_ids)?,
        devices: args.devices,
    };
    provision::check_share_import(&import)?;
    for d in &import.devices {
        config.device(d)?;
    }
    import.passwords = args
        .password_files
        .iter()
        .map(|f| read_password(f))
        .collect::<Result<_>>()?;
    let open = open_devices(config)?;
    let pk = provision::import_shares(store, &open, &import, Progress::Quiet)?;
    println!(
        "imported {pk} as {}-of-{} shares on {}",
        import.threshold,
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
    args: ParticipantShare,
) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let composite = manifest.composite_public_key();
    if store.contains(&composite) {
        return Err(DistributionError::AlreadyStored(composite.to_string()).into());
    }
    let device = args.device.unwrap_or_else(|| config.default_device.clone());
    config.device(&device)?;
    let password = read_password(&args.password_file)?;
    let share = OwnShare::open(&manifest, &args.manifest, &args.keystore, &password)?;
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
