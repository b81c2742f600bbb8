//! `hsm-signer import web3signer`: a migration from Web3Signer. Everything is read and checked
//! before anything is written (every key decrypted, the interchange parsed and for this
//! signer's network); then the slashing history goes in first and the keys after it, so that
//! no key can sign here before its history protects it. The source must have stopped: a key
//! that still signs there while it signs here can be slashed whatever either database says.

use std::path::Path;

use super::serve::configured_network;
use super::ImportCmd;
use crate::app::open_slashing_db;
use crate::config::Config;
use crate::devices::open_devices;
use crate::keys::web3signer::{self, Definition, Origin};
use crate::keys::{seal_share, KeyRecord, KeyStore, Progress, PublicKeyBytes, ShareId};
use crate::slashing::interchange;
use crate::{Result, SignerError};

pub(super) fn import_cmd(config: &Config, cmd: ImportCmd) -> Result<()> {
    match cmd {
        ImportCmd::Web3signer {
            key_config_path,
            interchange,
            source_stopped,
            device,
        } => web3signer(
            config,
            &key_config_path,
            &interchange,
            source_stopped,
            device.as_deref().unwrap_or(&config.default_device),
        ),
    }
}

/// A validator's newest entries in an interchange.
struct Newest {
    pubkey: [u8; 48],
    block: Option<u64>,
    attestation: Option<(u64, u64)>,
}

fn newest_entries(parsed: &interchange::Interchange) -> Vec<Newest> {
    let mut out: Vec<Newest> = parsed
        .validators
        .iter()
        .map(|v| Newest {
            pubkey: v.pubkey,
            block: v.blocks.iter().map(|b| b.slot).max(),
            attestation: v
                .attestations
                .iter()
                .map(|a| (a.target_epoch, a.source_epoch))
                .max()
                .map(|(t, s)| (s, t)),
        })
        .collect();
    // Newest first: by attestation target, then block slot.
    out.sort_by_key(|n| std::cmp::Reverse((n.attestation.map(|a| a.1), n.block)));
    out
}

fn web3signer(
    config: &Config,
    dir: &Path,
    interchange_path: &Path,
    source_stopped: bool,
    device: &str,
) -> Result<()> {
    // 1. Read everything; write nothing.
    let definitions = web3signer::read_dir(dir)?;
    if definitions.keys.is_empty() {
        return Err(SignerError::Invalid(format!(
            "{}: no key definition (.yaml files of type file-keystore or file-raw); nothing \
             was imported",
            dir.display()
        )));
    }
    let json =
        std::fs::read_to_string(interchange_path).map_err(SignerError::io(interchange_path))?;
    let parsed = interchange::parse(&json)
        .map_err(|e| SignerError::Slashing(format!("{}: {e}", interchange_path.display())))?;
    let network = configured_network(config)?;
    if let Some(gvr) = network.genesis_validators_root {
        if gvr != parsed.genesis_validators_root {
            return Err(SignerError::Slashing(format!(
                "{}: its genesis validators root is 0x{}, this signer's network {} has 0x{}: \
                 it is another network's history; nothing was imported",
                interchange_path.display(),
                hex::encode(parsed.genesis_validators_root),
                network.name,
                hex::encode(gvr)
            )));
        }
    }
    let secrets = open_definitions(&definitions.keys)?;

    // 2. What is about to move, and the check only the operator can make.
    let (keystores, raw) = definitions.counts();
    println!(
        "Web3Signer migration: {} key(s) in {} ({keystores} file-keystore, {raw} file-raw); \
         slashing history of {} validator(s) in {} (genesis validators root 0x{})",
        secrets.len(),
        dir.display(),
        parsed.validators.len(),
        interchange_path.display(),
        hex::encode(parsed.genesis_validators_root)
    );
    let newest = newest_entries(&parsed);
    println!("Newest entries of the interchange (they must be the source's last signatures):");
    for n in newest.iter().take(5) {
        println!(
            "  0x{}: newest block at slot {}, newest attestation source {} target {}",
            hex::encode(n.pubkey),
            n.block.map_or("-".into(), |s| s.to_string()),
            n.attestation.map_or("-".into(), |a| a.0.to_string()),
            n.attestation.map_or("-".into(), |a| a.1.to_string()),
        );
    }
    if newest.len() > 5 {
        println!("  … and {} more validator(s)", newest.len() - 5);
    }
    let with_history: std::collections::HashSet<[u8; 48]> =
        parsed.validators.iter().map(|v| v.pubkey).collect();
    let without: Vec<&PublicKeyBytes> = secrets
        .iter()
        .map(|(pk, ..)| pk)
        .filter(|pk| !with_history.contains(&pk.0))
        .collect();
    for pk in &without {
        println!(
            "WARNING: {pk} has no history in the interchange: if it ever signed, its history is \
             missing (export again, or import it with `slashing import` first)"
        );
    }
    if !source_stopped {
        return Err(SignerError::Invalid(
            "the source may still be signing: stop Web3Signer and every validator client that \
             used it, for good, export its slashing protection after that, check the newest \
             entries above against the source's last duties, then run this again with \
             --source-stopped; nothing was imported"
                .into(),
        ));
    }

    // 3. History first: a key stored before it could sign without it.
    std::fs::create_dir_all(&config.data_dir).map_err(SignerError::io(&config.data_dir))?;
    let (where_db, db) = open_slashing_db(config, network.genesis_validators_root, None);
    let db =
        db.map_err(|e| SignerError::Slashing(format!("slashing protection {where_db}: {e}")))?;
    let summary = db.import_parsed(parsed).map_err(|e| {
        SignerError::Slashing(format!("importing the history: {e}; no key was imported"))
    })?;
    println!(
        "history imported {where_db}: {} validator(s), {} block(s) and {} attestation(s) \
         recorded, {} already present",
        summary.validators,
        summary.blocks_recorded,
        summary.attestations_recorded,
        summary.already_recorded
    );
    for m in &summary.minified {
        println!("slashable data for {m:?} was imported as low watermarks only");
    }
    drop(db);

    // 4. The keys, sealed on the device.
    let devices = open_devices(config)?;
    let dev = devices.get(device)?;
    let mut store = KeyStore::load_strict(&config.keys_dir())?;
    let (mut imported, mut present) = (0, 0);
    for (pubkey, sk, origin) in secrets {
        if store.contains(&pubkey) {
            println!("already present {pubkey} ({origin})");
            present += 1;
            continue;
        }
        let share = seal_share(dev, &pubkey, ShareId::ONE, &sk)?;
        store.insert(KeyRecord::whole(pubkey, share, "web3signer"))?;
        println!("imported {pubkey} ({origin})");
        imported += 1;
    }
    println!("{imported} key(s) imported onto {device}, {present} already present");
    Ok(())
}

/// Every definition's key: keystores decrypted (in parallel, each with its own password),
/// raw keys read; all of them, or an error and nothing.
fn open_definitions(
    keys: &[(Origin, Definition)],
) -> Result<Vec<(PublicKeyBytes, blst::min_pk::SecretKey, Origin)>> {
    let mut paths = Vec::new();
    let mut passwords = Vec::new();
    let mut out = Vec::with_capacity(keys.len());
    let mut keystore_origins = Vec::new();
    for (origin, def) in keys {
        match def {
            Definition::Keystore {
                keystore,
                password_file,
            } => {
                paths.push(keystore.clone());
                passwords.push(web3signer::read_password(password_file)?);
                keystore_origins.push(origin.clone());
            }
            Definition::Raw { secret } => {
                let sk = crate::bls::secret_key(secret.as_ref()).map_err(|e| {
                    SignerError::Invalid(format!("{origin}: privateKey is not a BLS secret: {e}"))
                })?;
                out.push((
                    PublicKeyBytes(crate::bls::public_key_bytes(&sk)),
                    sk,
                    origin.clone(),
                ));
            }
        }
    }
    if !paths.is_empty() {
        let decrypted = crate::keys::import::decrypt_keystores(&paths, &passwords, Progress::Auto)?;
        out.extend(
            decrypted
                .secrets
                .into_iter()
                .zip(keystore_origins)
                .map(|((pk, sk), origin)| (pk, sk, origin)),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (pk, _, origin) in &out {
        if !seen.insert(pk.0) {
            return Err(SignerError::Invalid(format!(
                "{pk} is defined twice (again in {origin}); nothing was imported"
            )));
        }
    }
    Ok(out)
}
