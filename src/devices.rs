//! Opening the configured devices, and creating the embedded default's SoftHSM tokens on first
//! use. Everything PKCS#11 is delegated to the `hsm` crate.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use hsm::{init_soft_token, Device, PinSource};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::{Config, ResolvedDevice};
use crate::error::{Result, SignerError};

/// The open devices, by name.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    by_name: BTreeMap<String, Arc<Device>>,
}

impl Devices {
    /// Open every configured device; the first failure is returned.
    pub fn open_all(config: &Config) -> Result<Devices> {
        let mut by_name = BTreeMap::new();
        for d in &config.devices {
            by_name.insert(d.hsm.name.clone(), Arc::new(Device::open(d.hsm.clone())?));
        }
        Ok(Devices { by_name })
    }

    /// Devices opened elsewhere (a reload reuses the unchanged ones).
    pub fn from_open(devices: Vec<Arc<Device>>) -> Devices {
        Devices {
            by_name: devices
                .into_iter()
                .map(|d| (d.name().to_owned(), d))
                .collect(),
        }
    }

    /// The devices `config` names, for a reload: an open device whose configuration is
    /// unchanged and which has not gone stale (its token moved to another slot, or it rejected
    /// a PIN since fixed) is kept as it is; the others are opened (again). The first failure is
    /// returned, and nothing open is closed by it.
    pub(crate) fn reopen(config: &Config, current: &Devices) -> Result<Devices> {
        let mut devices = Vec::new();
        for d in &config.devices {
            let reused = current
                .by_name
                .get(&d.hsm.name)
                .filter(|open| *open.config() == d.hsm)
                .filter(|open| match open.staleness() {
                    None => true,
                    Some(reason) => {
                        tracing::warn!(device = %d.hsm.name, %reason, "opening the device again");
                        false
                    }
                })
                .cloned();
            devices.push(match reused {
                Some(open) => open,
                None => Arc::new(Device::open(d.hsm.clone())?),
            });
        }
        Ok(Devices::from_open(devices))
    }

    /// A device by name.
    pub fn get(&self, name: &str) -> Result<&Arc<Device>> {
        self.by_name
            .get(name)
            .ok_or_else(|| SignerError::Config(format!("no device named {name:?} is open")))
    }

    /// All devices in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Device>> {
        self.by_name.values()
    }
}

fn create_dir_private(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(SignerError::io(dir))
}

/// Write `contents` to a new file readable only by us. Fails if the file exists.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SignerError::io(path))?;
    f.write_all(contents).map_err(SignerError::io(path))?;
    f.sync_all().map_err(SignerError::io(path))
}

fn random_pin() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; 16]);
    getrandom::getrandom(bytes.as_mut())
        .map_err(|e| SignerError::System(format!("no randomness for a PIN: {e}")))?;
    Ok(Zeroizing::new(hex::encode(bytes.as_ref())))
}

fn read_or_create_pin(path: &Path) -> Result<SecretString> {
    if !path.exists() {
        write_private_file(path, random_pin()?.as_bytes())?;
    }
    PinSource::File(path.to_owned())
        .read("soft token")
        .map_err(SignerError::from)
}

/// What `bootstrap` did to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Device name.
    pub device: String,
    /// A token was created.
    pub token_created: bool,
    /// A custody key was created.
    pub custody_key_created: bool,
}

/// Make the devices ready: for soft tokens the signer owns (the embedded default, or a device
/// with an SO PIN file), write the module configuration and PIN files and create the token if
/// missing; for every device, create the custody key if missing. Idempotent.
pub fn init_devices(config: &Config, only: Option<&str>) -> Result<Vec<InitReport>> {
    if config.is_embedded() {
        write_softhsm_conf(config)?;
    }
    let mut reports = Vec::new();
    for d in config
        .devices
        .iter()
        .filter(|d| only.is_none_or(|n| n == d.hsm.name))
    {
        let token_created = create_soft_token_if_owned(d)?;
        let device = Device::open(d.hsm.clone())?;
        let custody_key_created = device.ensure_custody_key()?;
        reports.push(InitReport {
            device: d.hsm.name.clone(),
            token_created,
            custody_key_created,
        });
    }
    if let Some(name) = only {
        if reports.is_empty() {
            config.device(name)?;
        }
    }
    Ok(reports)
}

/// True when the embedded default still needs `init_devices` (first run).
pub(crate) fn embedded_needs_init(config: &Config) -> bool {
    config.is_embedded()
        && config.devices.iter().any(|d| match &d.so_pin_file {
            Some(p) => !p.exists(),
            None => false,
        })
}

/// The embedded default's module configuration names its token directory by absolute path: a
/// data directory restored or moved elsewhere would still open the old location's tokens (or
/// none). Point it at this data directory's own tokens again, before any module starts. True
/// when it was rewritten.
pub(crate) fn relocate_embedded(config: &Config) -> Result<bool> {
    if !config.is_embedded() {
        return Ok(false);
    }
    let soft = config.data_dir.join("softhsm");
    let conf = soft.join("softhsm2.conf");
    let Ok(text) = std::fs::read_to_string(&conf) else {
        return Ok(false);
    };
    let line = format!("directories.tokendir = {}", soft.join("tokens").display());
    if text.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    let rewritten: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("directories.tokendir") {
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    // A new file renamed over the old one: never a half-written configuration.
    let next = soft.join("softhsm2.conf.new");
    let _ = std::fs::remove_file(&next);
    write_private_file(&next, format!("{rewritten}\n").as_bytes())?;
    std::fs::rename(&next, &conf).map_err(SignerError::io(&conf))?;
    Ok(true)
}

fn write_softhsm_conf(config: &Config) -> Result<()> {
    let soft = config.data_dir.join("softhsm");
    let tokens = soft.join("tokens");
    create_dir_private(&tokens)?;
    let conf = soft.join("softhsm2.conf");
    if !conf.exists() {
        let text = format!(
            "# Written by hsm-signer for its embedded default tokens.\n\
             directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        );
        write_private_file(&conf, text.as_bytes())?;
    }
    Ok(())
}

fn create_soft_token_if_owned(d: &ResolvedDevice) -> Result<bool> {
    let (Some(so_pin_file), true) = (&d.so_pin_file, d.profile.soft_token) else {
        return Ok(false);
    };
    let hsm::TokenSelector::Label(label) = &d.hsm.token else {
        return Err(SignerError::Config(format!(
            "device {}: a token the signer creates needs token_label",
            d.hsm.name
        )));
    };
    if let Some(dir) = so_pin_file.parent() {
        create_dir_private(dir)?;
    }
    let so_pin = read_or_create_pin(so_pin_file)?;
    let user_pin = match &d.hsm.pin {
        PinSource::File(p) => read_or_create_pin(p)?,
        PinSource::Env(_) => d.hsm.pin.read(&d.hsm.name)?,
    };
    Ok(init_soft_token(&d.hsm.module, label, &so_pin, &user_pin)?)
}

/// Open every device, creating the embedded default's tokens on first use. Commands call this
/// only after their own input has been checked, so bad input changes nothing.
pub(crate) fn open_devices(config: &Config) -> Result<Devices> {
    bootstrap_embedded(config)?;
    Devices::open_all(config)
}

/// Create the embedded default's tokens (with custody keys) if they do not exist yet, and say
/// so on stderr.
pub(crate) fn bootstrap_embedded(config: &Config) -> Result<()> {
    if embedded_needs_init(config) {
        init_devices(config, None)?;
        eprintln!(
            "created {} SoftHSM tokens with custody keys under {} (PINs in 0600 files there)",
            config.devices.len(),
            config.data_dir.join("softhsm").display()
        );
    }
    Ok(())
}
