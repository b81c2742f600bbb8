//! `hsm-signer device`: create, check and list the PKCS#11 devices.

use serde_json::json;

use super::DeviceCmd;
use crate::config::Config;
use crate::devices::{bootstrap_embedded, init_devices};
use crate::{Result, SignerError};

pub(super) fn device_cmd(config: &Config, cmd: DeviceCmd) -> Result<()> {
    match cmd {
        DeviceCmd::Init { device } => {
            for r in init_devices(config, device.as_deref())? {
                println!(
                    "{}: token {}, custody key {}",
                    r.device,
                    if r.token_created {
                        "created"
                    } else {
                        "present"
                    },
                    if r.custody_key_created {
                        "created"
                    } else {
                        "present"
                    },
                );
            }
            if config.is_embedded() {
                println!(
                    "embedded SoftHSM tokens live in {}",
                    config.data_dir.join("softhsm").display()
                );
            }
            Ok(())
        }
        DeviceCmd::List { json } => {
            bootstrap_embedded(config)?;
            let mut rows = Vec::new();
            for d in &config.devices {
                let status = match hsm::Device::open(d.hsm.clone()) {
                    Ok(dev) => dev
                        .check()
                        .map(|_| "ok".to_owned())
                        .unwrap_or_else(|e| e.to_string()),
                    Err(e) => e.to_string(),
                };
                rows.push(json!({
                    "name": d.hsm.name,
                    "profile": d.profile.description,
                    "module": d.hsm.module,
                    "token": d.hsm.token.to_string(),
                    "max_sessions": d.hsm.max_sessions,
                    "default": d.hsm.name == config.default_device,
                    "status": status,
                }));
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rows {
                    println!(
                        "{:<14} token {:<16} sessions {:<3} {}  [{}]",
                        r["name"].as_str().unwrap_or_default(),
                        r["token"].as_str().unwrap_or_default(),
                        r["max_sessions"],
                        r["status"].as_str().unwrap_or_default(),
                        r["profile"].as_str().unwrap_or_default(),
                    );
                }
            }
            Ok(())
        }
        DeviceCmd::Check { device } => {
            bootstrap_embedded(config)?;
            let mut failed = 0;
            for d in config
                .devices
                .iter()
                .filter(|d| device.as_ref().is_none_or(|n| *n == d.hsm.name))
            {
                match check_device(&d.hsm) {
                    Ok(line) => println!("{}: ok: {line}", d.hsm.name),
                    Err(e) => {
                        failed += 1;
                        println!("{}: FAILED: {e}", d.hsm.name);
                    }
                }
            }
            if failed > 0 {
                return Err(SignerError::Invalid(format!(
                    "{failed} device(s) failed the check"
                )));
            }
            Ok(())
        }
    }
}

fn check_device(cfg: &hsm::DeviceConfig) -> Result<String> {
    let device = hsm::Device::open(cfg.clone())?;
    let info = device.custody_key_info()?;
    let faults = custody_key_faults(&info);
    if !faults.is_empty() {
        return Err(SignerError::Invalid(format!(
            "custody key is not trustworthy: {}. A key that was ever readable or extractable may \
             exist outside the token; create a new custody key on it and provision the keys again",
            faults.join("; ")
        )));
    }
    let mut probe = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(probe.as_mut()).map_err(|e| SignerError::System(e.to_string()))?;
    let env = device.encrypt(probe.as_ref(), b"hsm-signer/check")?;
    if device.decrypt(&env, b"hsm-signer/check")?.as_slice() != probe.as_ref() {
        return Err(SignerError::Invalid(
            "AES-GCM round trip returned different bytes".into(),
        ));
    }
    let token = device.token_summary()?;
    Ok(format!(
        "token {:?} ({} {}, serial {}), custody key sensitive, non-extractable, always sensitive, never extractable, AES-GCM round trip ok",
        token.label, token.manufacturer, token.model, token.serial
    ))
}

/// What is wrong with a custody key's protection, each fault named by its attribute. Sensitive and
/// non-extractable now is not enough: only `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE` say
/// the key was never readable or exportable before someone set those flags.
fn custody_key_faults(info: &hsm::CustodyKeyInfo) -> Vec<&'static str> {
    let mut faults = Vec::new();
    if !info.sensitive {
        faults.push("CKA_SENSITIVE is false");
    }
    if info.extractable {
        faults.push("CKA_EXTRACTABLE is true");
    }
    if !info.always_sensitive {
        faults.push("CKA_ALWAYS_SENSITIVE is false (it was not sensitive at some time)");
    }
    if !info.never_extractable {
        faults.push("CKA_NEVER_EXTRACTABLE is false (it was extractable at some time)");
    }
    if info.value_readable {
        faults.push("CKA_VALUE can be read");
    }
    faults
}
