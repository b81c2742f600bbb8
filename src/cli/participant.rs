//! `hsm-signer participant`: the remote participants of a coordinator — check that each answers
//! over mutual TLS, and make the key records of the distributed keys they hold.

use serde_json::json;

use super::ParticipantCmd;
use crate::config::Config;
use crate::keys::KeyStore;
use crate::participants::{discover, Participants};
use crate::{Result, SignerError};

pub(super) fn participant_cmd(config: &Config, cmd: ParticipantCmd) -> Result<()> {
    if config.participants.is_empty() {
        return Err(SignerError::Config(
            "no [[participant]] is configured: a coordinator names its participants (name, url, \
             ca_file, cert_file, key_file) in its configuration file"
                .into(),
        ));
    }
    let participants = Participants::open(&config.participants)?;
    match cmd {
        ParticipantCmd::Check => {
            let mut failed = 0;
            for p in participants.iter() {
                match p.accounts() {
                    Ok(accounts) => println!(
                        "{}: {} answers over mutual TLS 1.3; {} distributed account(s)",
                        p.name(),
                        p.url(),
                        accounts.len()
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{}: FAILED: {e}", p.name());
                    }
                }
            }
            if failed > 0 {
                return Err(SignerError::Config(format!(
                    "{failed} of {} participant(s) failed the check",
                    participants.len()
                )));
            }
            Ok(())
        }
        ParticipantCmd::Records { write } => {
            let found = discover(&participants);
            for problem in &found.problems {
                eprintln!("warning: {problem}");
            }
            if !write {
                for r in &found.records {
                    println!(
                        "{}",
                        serde_json::to_string(r)
                            .map_err(|e| SignerError::Internal(e.to_string()))?
                    );
                }
                return Ok(());
            }
            let (mut store, _) = KeyStore::load(&config.keys_dir())?;
            let (mut added, mut present) = (0, 0);
            for r in found.records {
                match store.get(&r.pubkey) {
                    Some(existing) if **existing == r => present += 1,
                    Some(_) => eprintln!(
                        "warning: key {}: the store has another record for it; left as it is",
                        r.pubkey
                    ),
                    None => {
                        store.insert(r)?;
                        added += 1;
                    }
                }
            }
            println!(
                "{}",
                json!({"added": added, "already_present": present, "problems": found.problems.len()})
            );
            Ok(())
        }
    }
}
