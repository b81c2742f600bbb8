//! The few network parameters the signer needs: the genesis fork version (for builder
//! registrations), genesis time and slot timing (for deadlines), and the epoch length (to turn a
//! slot into the epoch that selects a fork version). Known networks are built in; any other comes
//! from its consensus-spec `config.yaml`.

use std::path::Path;

use super::{clip, ConsensusError, Preset};

/// Network parameters the signer needs.
#[derive(Debug, Clone)]
pub struct Network {
    /// The network's name (`CONFIG_NAME`).
    pub name: String,
    /// `GENESIS_FORK_VERSION`.
    pub genesis_fork_version: [u8; 4],
    /// Unix time of slot 0, if known.
    pub genesis_time: Option<u64>,
    /// `SECONDS_PER_SLOT`.
    pub seconds_per_slot: u64,
    /// `SLOTS_PER_EPOCH` (a preset value: 32 on mainnet-preset networks).
    pub slots_per_epoch: u64,
    /// `PRESET_BASE`: the SSZ sizes of the containers a request carries.
    pub preset: Preset,
}

/// The built-in networks. Fork versions and times are from the eth-clients network configs
/// (`github.com/eth-clients/{mainnet,sepolia,holesky,hoodi}/metadata/config.yaml`); the genesis
/// time is the real one of each chain's genesis state:
/// - mainnet: `GENESIS_FORK_VERSION: 0x00000000`; genesis 1606824023 (2020-12-01 12:00:23 UTC).
///   Mainnet's genesis was triggered by the deposit contract, so it is *not*
///   `MIN_GENESIS_TIME + GENESIS_DELAY` (1606824000 + 604800).
/// - sepolia: `0x90000069`; `MIN_GENESIS_TIME: 1655647200` + `GENESIS_DELAY: 86400` = 1655733600.
/// - holesky: `0x01017000`; `1695902100` + `300` = 1695902400.
/// - hoodi: `0x10000910`; `1742212800` + `600` = 1742213400.
const PRESETS: [(&str, [u8; 4], u64); 4] = [
    ("mainnet", [0x00, 0x00, 0x00, 0x00], 1_606_824_023),
    ("sepolia", [0x90, 0x00, 0x00, 0x69], 1_655_733_600),
    ("holesky", [0x01, 0x01, 0x70, 0x00], 1_695_902_400),
    ("hoodi", [0x10, 0x00, 0x09, 0x10], 1_742_213_400),
];

/// Largest config file we read; real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Network {
    /// A built-in network: `"mainnet"`, `"sepolia"`, `"hoodi"` or `"holesky"`.
    pub fn preset(name: &str) -> Option<Network> {
        PRESETS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(n, version, genesis)| Network {
                name: n.to_string(),
                genesis_fork_version: version,
                genesis_time: Some(genesis),
                seconds_per_slot: 12,
                slots_per_epoch: Preset::Mainnet.slots_per_epoch(),
                preset: Preset::Mainnet,
            })
    }

    /// A network from a consensus-spec style `config.yaml`. Reads top-level `KEY: value` lines:
    /// `GENESIS_FORK_VERSION` (required), `SECONDS_PER_SLOT` (or `SLOT_DURATION_MS`),
    /// `SLOTS_PER_EPOCH` (else the preset's), `MIN_GENESIS_TIME` + `GENESIS_DELAY` (genesis time,
    /// unless the file describes a built-in network, whose real genesis time wins),
    /// `CONFIG_NAME`, `PRESET_BASE` (`mainnet`, `minimal` or `gnosis`; mainnet when absent).
    pub fn from_config_file(path: &Path) -> Result<Network, ConsensusError> {
        let io = |e: std::io::Error| ConsensusError::Io(format!("{}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConsensusError::Malformed(format!(
                "{}: larger than {MAX_CONFIG_BYTES} bytes",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Network::from_config_str(&text).map_err(|e| match e {
            ConsensusError::Malformed(m) => {
                ConsensusError::Malformed(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// [`Network::from_config_file`] on the file's text.
    pub fn from_config_str(text: &str) -> Result<Network, ConsensusError> {
        let cfg = ConfigLines::parse(text)?;
        let bad = |m: String| ConsensusError::Malformed(m);

        let version_text = cfg
            .get("GENESIS_FORK_VERSION")?
            .ok_or_else(|| bad("GENESIS_FORK_VERSION missing".into()))?;
        let genesis_fork_version = parse_version(version_text)
            .ok_or_else(|| bad(format!("GENESIS_FORK_VERSION {:?}", clip(version_text))))?;

        let preset = match cfg.get("PRESET_BASE")? {
            None => Preset::Mainnet,
            Some(name) => Preset::from_name(name).ok_or_else(|| {
                bad(format!(
                    "PRESET_BASE {:?} is not a preset we know (mainnet, minimal, gnosis)",
                    clip(name)
                ))
            })?,
        };
        let slots_per_epoch = cfg
            .get_u64("SLOTS_PER_EPOCH")?
            .unwrap_or(preset.slots_per_epoch());
        if slots_per_epoch == 0 {
            return Err(bad("SLOTS_PER_EPOCH is 0".into()));
        }

        let seconds_per_slot = match (
            cfg.get_u64("SECONDS_PER_SLOT")?,
            cfg.get_u64("SLOT_DURATION_MS")?,
        ) {
            (Some(s), _) => s,
            (None, Some(ms)) if ms % 1000 == 0 => ms / 1000,
            (None, Some(_)) => {
                return Err(bad(
                    "SLOT_DURATION_MS is not a whole number of seconds".into()
                ))
            }
            (None, None) => return Err(bad("SECONDS_PER_SLOT missing".into())),
        };
        if seconds_per_slot == 0 {
            return Err(bad("SECONDS_PER_SLOT is 0".into()));
        }

        let name = match cfg.get("CONFIG_NAME")? {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => "custom".to_string(),
        };

        let known = Network::preset(&name)
            .filter(|p| p.genesis_fork_version == genesis_fork_version)
            .and_then(|p| p.genesis_time);
        let computed = match (
            cfg.get_u64("MIN_GENESIS_TIME")?,
            cfg.get_u64("GENESIS_DELAY")?,
        ) {
            (Some(t), Some(d)) => Some(
                t.checked_add(d)
                    .ok_or_else(|| bad("MIN_GENESIS_TIME + GENESIS_DELAY overflows".into()))?,
            ),
            _ => None,
        };

        Ok(Network {
            name,
            genesis_fork_version,
            genesis_time: known.or(computed),
            seconds_per_slot,
            slots_per_epoch,
            preset,
        })
    }
}

/// `0x` + 8 hex digits.
fn parse_version(s: &str) -> Option<[u8; 4]> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    let mut out = [0u8; 4];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The top-level `KEY: value` lines of a YAML config (comments and quotes stripped; indented
/// lines and list items belong to nested values and are skipped).
struct ConfigLines<'a> {
    entries: Vec<(&'a str, &'a str)>,
}

impl<'a> ConfigLines<'a> {
    fn parse(text: &'a str) -> Result<Self, ConsensusError> {
        let mut entries = Vec::new();
        for line in text.lines() {
            if line.starts_with([' ', '\t', '-', '#']) || line.trim().is_empty() {
                continue;
            }
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim();
            let value = rest.split('#').next().unwrap_or("").trim();
            let value = strip_quotes(value);
            entries.push((key, value));
        }
        Ok(ConfigLines { entries })
    }

    /// The value of `key`; a key given twice is an error.
    fn get(&self, key: &str) -> Result<Option<&'a str>, ConsensusError> {
        let mut found = self.entries.iter().filter(|(k, _)| *k == key);
        let first = found.next().map(|(_, v)| *v);
        if found.next().is_some() {
            return Err(ConsensusError::Malformed(format!("{key} given twice")));
        }
        Ok(first)
    }

    fn get_u64(&self, key: &str) -> Result<Option<u64>, ConsensusError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ConsensusError::Malformed(format!("{key} out of range"))),
            Some(v) => Err(ConsensusError::Malformed(format!(
                "{key} {:?} is not a number",
                clip(v)
            ))),
        }
    }
}

fn strip_quotes(v: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}
