//! `hsm-signer slashing`: EIP-3076 interchange import and export, pruning.

use super::serve::configured_network;
use super::SlashingCmd;
use crate::app::open_slashing_db;
use crate::config::Config;
use crate::keys::PublicKeyBytes;
use crate::{Result, SignerError};

pub(super) fn slashing_cmd(config: &Config, cmd: SlashingCmd) -> Result<()> {
    let err = |e: crate::slashing::SlashingError| {
        SignerError::Slashing(format!("slashing protection: {e}"))
    };
    match cmd {
        SlashingCmd::Import { file } => {
            let json = std::fs::read_to_string(&file).map_err(SignerError::io(&file))?;
            std::fs::create_dir_all(&config.data_dir).map_err(SignerError::io(&config.data_dir))?;
            // A fresh database is bound to the configured network; an interchange of another
            // network is refused.
            let gvr = configured_network(config)?.genesis_validators_root;
            let db = open_slashing_db(config, gvr, None).1.map_err(err)?;
            let summary = db.import_interchange(&json).map_err(err)?;
            println!(
                "imported {} validator(s): {} block(s), {} attestation(s) recorded, {} already present",
                summary.validators, summary.blocks_recorded, summary.attestations_recorded, summary.already_recorded
            );
            for m in &summary.minified {
                println!("slashable data for {m:?} was imported as low watermarks only");
            }
            Ok(())
        }
        SlashingCmd::Prune { keep_epochs } => {
            let (_, db) = open_slashing_db(config, None, None);
            let removed = db.map_err(err)?.prune(keep_epochs).map_err(err)?;
            println!("pruned {removed} record(s); the newest {keep_epochs} epochs per validator are kept");
            Ok(())
        }
        SlashingCmd::Export { file, pubkeys } => {
            let keys = pubkeys
                .iter()
                .map(|p| {
                    PublicKeyBytes::parse(p).map(|k| k.0).ok_or_else(|| {
                        SignerError::Invalid(format!("{p:?} is not a 48-byte hex public key"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let db = open_slashing_db(config, None, None).1.map_err(err)?;
            let json = db
                .export_interchange((!keys.is_empty()).then_some(keys.as_slice()))
                .map_err(err)?;
            if file.as_os_str() == "-" {
                println!("{json}");
            } else {
                std::fs::write(&file, json).map_err(SignerError::io(&file))?;
                eprintln!("wrote {}", file.display());
            }
            Ok(())
        }
    }
}
