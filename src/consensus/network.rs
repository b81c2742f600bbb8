//! Network identity: which chain this signer serves. A network is its genesis validators root,
//! genesis fork version, genesis time, slot timing and fork schedule. Known networks are built
//! in; any other comes from its consensus-spec `config.yaml` (with the root from configuration,
//! a `genesis_validators_root.txt` beside the file, or the beacon node). Nothing here guesses:
//! what a request claims about its network is checked against this, never the other way round.

use std::path::Path;

use super::{clip, ConsensusError, Preset};

/// `FAR_FUTURE_EPOCH`: a fork scheduled here is not scheduled at all.
pub const FAR_FUTURE_EPOCH: u64 = u64::MAX;

/// The consensus forks, in order, with the prefix of their config keys (`ALTAIR_FORK_VERSION`
/// …). Phase0's version is `GENESIS_FORK_VERSION`.
pub(crate) const FORK_NAMES: [&str; 8] = [
    "phase0",
    "altair",
    "bellatrix",
    "capella",
    "deneb",
    "electra",
    "fulu",
    "gloas",
];

/// One fork of a network's schedule: in force from `epoch` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledFork {
    /// Lower-case fork name (`phase0`, `altair`, …).
    pub name: &'static str,
    /// Its fork version.
    pub version: [u8; 4],
    /// Its first epoch.
    pub epoch: u64,
}

/// Where a network's genesis time came from: the chain itself, or only the config's
/// `MIN_GENESIS_TIME + GENESIS_DELAY` (which a chain may start later than).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenesisTimeSource {
    /// The real genesis time of a built-in network, or one a beacon node confirmed.
    Chain,
    /// `MIN_GENESIS_TIME + GENESIS_DELAY` from a config file: the earliest possible genesis.
    ConfigEstimate,
}

/// The network a signer serves.
#[derive(Debug, Clone)]
pub struct Network {
    /// The network's name (`CONFIG_NAME`).
    pub name: String,
    /// `GENESIS_FORK_VERSION`.
    pub genesis_fork_version: [u8; 4],
    /// The genesis validators root, when known (built in, configured, or from a beacon node).
    pub genesis_validators_root: Option<[u8; 32]>,
    /// Unix time of slot 0, if known.
    pub genesis_time: Option<u64>,
    /// How sure [`Network::genesis_time`] is.
    pub genesis_time_source: GenesisTimeSource,
    /// `SECONDS_PER_SLOT`.
    pub seconds_per_slot: u64,
    /// `SLOTS_PER_EPOCH` (a preset value: 32 on mainnet-preset networks).
    pub slots_per_epoch: u64,
    /// The scheduled forks, phase0 first, in epoch order; forks at `FAR_FUTURE_EPOCH` are left
    /// out.
    pub forks: Vec<ScheduledFork>,
    /// `PRESET_BASE`: the SSZ sizes of the containers a request carries.
    pub preset: Preset,
}

/// A built-in network. Sources, each value checked against at least two of them: the
/// eth-clients network configs (`eth-clients/{mainnet,sepolia,holesky,hoodi}/metadata/config.yaml`,
/// `genesis_validators_root.txt`), `gnosischain/configs` (`mainnet/`, `chiado/`), and clients'
/// built-in tables (Lighthouse, Teku, Prysm, Nethermind). Genesis times are the real ones of
/// each chain's genesis state: mainnet's and gnosis's genesis were triggered by deposits, so they
/// are not `MIN_GENESIS_TIME + GENESIS_DELAY`.
struct BuiltIn {
    name: &'static str,
    genesis_validators_root: &'static str,
    genesis_time: u64,
    seconds_per_slot: u64,
    preset: Preset,
    /// (version, epoch) of phase0, altair, … in [`FORK_NAMES`] order; only scheduled forks.
    forks: &'static [([u8; 4], u64)],
}

const BUILT_IN: [BuiltIn; 6] = [
    BuiltIn {
        name: "mainnet",
        genesis_validators_root:
            "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95",
        genesis_time: 1_606_824_023,
        seconds_per_slot: 12,
        preset: Preset::Mainnet,
        forks: &[
            ([0x00, 0, 0, 0], 0),
            ([0x01, 0, 0, 0], 74_240),
            ([0x02, 0, 0, 0], 144_896),
            ([0x03, 0, 0, 0], 194_048),
            ([0x04, 0, 0, 0], 269_568),
            ([0x05, 0, 0, 0], 364_032),
            ([0x06, 0, 0, 0], 411_392),
        ],
    },
    BuiltIn {
        name: "sepolia",
        genesis_validators_root:
            "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078",
        genesis_time: 1_655_733_600,
        seconds_per_slot: 12,
        preset: Preset::Mainnet,
        forks: &[
            ([0x90, 0, 0, 0x69], 0),
            ([0x90, 0, 0, 0x70], 50),
            ([0x90, 0, 0, 0x71], 100),
            ([0x90, 0, 0, 0x72], 56_832),
            ([0x90, 0, 0, 0x73], 132_608),
            ([0x90, 0, 0, 0x74], 222_464),
            ([0x90, 0, 0, 0x75], 272_640),
            ([0x90, 0, 0, 0x76], 353_024),
        ],
    },
    BuiltIn {
        name: "holesky",
        genesis_validators_root:
            "0x9143aa7c615a7f7115e2b6aac319c03529df8242ae705fba9df39b79c59fa8b1",
        genesis_time: 1_695_902_400,
        seconds_per_slot: 12,
        preset: Preset::Mainnet,
        forks: &[
            ([0x01, 0x01, 0x70, 0], 0),
            ([0x02, 0x01, 0x70, 0], 0),
            ([0x03, 0x01, 0x70, 0], 0),
            ([0x04, 0x01, 0x70, 0], 256),
            ([0x05, 0x01, 0x70, 0], 29_696),
            ([0x06, 0x01, 0x70, 0], 115_968),
            ([0x07, 0x01, 0x70, 0], 165_120),
        ],
    },
    BuiltIn {
        name: "hoodi",
        genesis_validators_root:
            "0x212f13fc4df078b6cb7db228f1c8307566dcecf900867401a92023d7ba99cb5f",
        genesis_time: 1_742_213_400,
        seconds_per_slot: 12,
        preset: Preset::Mainnet,
        forks: &[
            ([0x10, 0, 0x09, 0x10], 0),
            ([0x20, 0, 0x09, 0x10], 0),
            ([0x30, 0, 0x09, 0x10], 0),
            ([0x40, 0, 0x09, 0x10], 0),
            ([0x50, 0, 0x09, 0x10], 0),
            ([0x60, 0, 0x09, 0x10], 2_048),
            ([0x70, 0, 0x09, 0x10], 50_688),
        ],
    },
    BuiltIn {
        name: "gnosis",
        genesis_validators_root:
            "0xf5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47",
        genesis_time: 1_638_993_340,
        seconds_per_slot: 5,
        preset: Preset::Gnosis,
        forks: &[
            ([0x00, 0, 0, 0x64], 0),
            ([0x01, 0, 0, 0x64], 512),
            ([0x02, 0, 0, 0x64], 385_536),
            ([0x03, 0, 0, 0x64], 648_704),
            ([0x04, 0, 0, 0x64], 889_856),
            ([0x05, 0, 0, 0x64], 1_337_856),
            ([0x06, 0, 0, 0x64], 1_714_688),
        ],
    },
    BuiltIn {
        name: "chiado",
        genesis_validators_root:
            "0x9d642dac73058fbf39c0ae41ab1e34e4d889043cb199851ded7095bc99eb4c1e",
        genesis_time: 1_665_396_300,
        seconds_per_slot: 5,
        preset: Preset::Gnosis,
        forks: &[
            ([0x00, 0, 0, 0x6f], 0),
            ([0x01, 0, 0, 0x6f], 90),
            ([0x02, 0, 0, 0x6f], 180),
            ([0x03, 0, 0, 0x6f], 244_224),
            ([0x04, 0, 0, 0x6f], 516_608),
            ([0x05, 0, 0, 0x6f], 948_224),
            ([0x06, 0, 0, 0x6f], 1_353_216),
        ],
    },
];

/// The names of the built-in networks, for messages.
pub(crate) const BUILT_IN_NAMES: &str = "mainnet, sepolia, holesky, hoodi, gnosis, chiado";

/// Largest config file we read; real ones are a few KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file beside a network's `config.yaml` that holds its genesis validators root (as the
/// eth-clients network metadata directories ship it).
pub(crate) const GVR_FILE_NAME: &str = "genesis_validators_root.txt";

fn hex_root(root: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(root))
}

fn hex_version(v: &[u8; 4]) -> String {
    format!("0x{}", hex::encode(v))
}

/// `0x` + 64 hex digits, as a genesis validators root.
pub(crate) fn parse_root(s: &str) -> Option<[u8; 32]> {
    let digits = s
        .trim()
        .strip_prefix("0x")
        .or_else(|| s.trim().strip_prefix("0X"))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

impl BuiltIn {
    fn network(&self) -> Network {
        let forks = self
            .forks
            .iter()
            .zip(FORK_NAMES)
            .map(|(&(version, epoch), name)| ScheduledFork {
                name,
                version,
                epoch,
            })
            .collect::<Vec<_>>();
        Network {
            name: self.name.to_string(),
            genesis_fork_version: self.forks[0].0,
            genesis_validators_root: parse_root(self.genesis_validators_root),
            genesis_time: Some(self.genesis_time),
            genesis_time_source: GenesisTimeSource::Chain,
            seconds_per_slot: self.seconds_per_slot,
            slots_per_epoch: self.preset.slots_per_epoch(),
            forks,
            preset: self.preset,
        }
    }
}

impl Network {
    /// A built-in network by name: one of [`BUILT_IN_NAMES`].
    pub fn preset(name: &str) -> Option<Network> {
        BUILT_IN
            .iter()
            .find(|b| b.name == name)
            .map(BuiltIn::network)
    }

    /// A network from a consensus-spec `config.yaml`, with the genesis validators root from a
    /// `genesis_validators_root.txt` beside it when there is one. See
    /// [`Network::from_config_str`] for what is read.
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
        let in_file = |e: ConsensusError| match e {
            ConsensusError::Malformed(m) => {
                ConsensusError::Malformed(format!("{}: {m}", path.display()))
            }
            other => other,
        };
        let mut network = Network::from_config_str(&text).map_err(in_file)?;
        let gvr_file = path.with_file_name(GVR_FILE_NAME);
        if gvr_file.is_file() {
            let io = |e: std::io::Error| ConsensusError::Io(format!("{}: {e}", gvr_file.display()));
            let meta = std::fs::metadata(&gvr_file).map_err(io)?;
            let text = if meta.len() <= 1024 {
                std::fs::read_to_string(&gvr_file).map_err(io)?
            } else {
                String::new()
            };
            let root = parse_root(&text).ok_or_else(|| {
                ConsensusError::Malformed(format!(
                    "{}: not a 0x-prefixed 32-byte hex root",
                    gvr_file.display()
                ))
            })?;
            network = network.with_genesis_validators_root(root)?;
        }
        Ok(network)
    }

    /// A network from the text of a consensus-spec style `config.yaml`. Reads top-level
    /// `KEY: value` lines: `GENESIS_FORK_VERSION` (required), `SECONDS_PER_SLOT` (or
    /// `SLOT_DURATION_MS`), `SLOTS_PER_EPOCH` (else the preset's), `MIN_GENESIS_TIME` +
    /// `GENESIS_DELAY` (the earliest genesis; a built-in network's real genesis time and root
    /// win when the file describes it), `CONFIG_NAME`, `PRESET_BASE`, and the fork schedule
    /// (`ALTAIR_FORK_VERSION`, `ALTAIR_FORK_EPOCH`, … up to `GLOAS_`; a fork at
    /// `FAR_FUTURE_EPOCH` is not scheduled).
    pub(crate) fn from_config_str(text: &str) -> Result<Network, ConsensusError> {
        let cfg = ConfigLines::parse(text)?;
        let bad = |m: String| ConsensusError::Malformed(m);

        let genesis_fork_version = cfg
            .get_version("GENESIS_FORK_VERSION")?
            .ok_or_else(|| bad("GENESIS_FORK_VERSION missing".into()))?;

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

        let mut forks = vec![ScheduledFork {
            name: FORK_NAMES[0],
            version: genesis_fork_version,
            epoch: 0,
        }];
        for name in &FORK_NAMES[1..] {
            let upper = name.to_ascii_uppercase();
            let version = cfg.get_version(&format!("{upper}_FORK_VERSION"))?;
            let epoch = cfg.get_u64(&format!("{upper}_FORK_EPOCH"))?;
            match (version, epoch) {
                (_, None) | (_, Some(FAR_FUTURE_EPOCH)) => {}
                (None, Some(_)) => {
                    return Err(bad(format!(
                        "{upper}_FORK_EPOCH is set but {upper}_FORK_VERSION is missing"
                    )))
                }
                (Some(version), Some(epoch)) => {
                    let last = forks.last().map_or(0, |f| f.epoch);
                    if epoch < last {
                        return Err(bad(format!(
                            "{upper}_FORK_EPOCH {epoch} is before the previous fork's {last}"
                        )));
                    }
                    forks.push(ScheduledFork {
                        name,
                        version,
                        epoch,
                    });
                }
            }
        }

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

        let mut network = Network {
            name,
            genesis_fork_version,
            genesis_validators_root: None,
            genesis_time: computed,
            genesis_time_source: GenesisTimeSource::ConfigEstimate,
            seconds_per_slot,
            slots_per_epoch,
            forks,
            preset,
        };
        // A file that describes a built-in network (its name and genesis fork version) takes
        // that network's real genesis time and root.
        if let Some(known) = Network::preset(&network.name)
            .filter(|p| p.genesis_fork_version == genesis_fork_version)
        {
            network.genesis_time = known.genesis_time;
            network.genesis_time_source = GenesisTimeSource::Chain;
            network.genesis_validators_root = known.genesis_validators_root;
        }
        Ok(network)
    }

    /// This network with its genesis validators root set to `root`; refused when the network
    /// already has another one (a built-in network's root cannot be overridden).
    pub fn with_genesis_validators_root(
        mut self,
        root: [u8; 32],
    ) -> Result<Network, ConsensusError> {
        match self.genesis_validators_root {
            Some(known) if known != root => Err(ConsensusError::Inconsistent(format!(
                "network {} has genesis validators root {}, not the configured {}",
                self.name,
                hex_root(&known),
                hex_root(&root)
            ))),
            _ => {
                self.genesis_validators_root = Some(root);
                Ok(self)
            }
        }
    }

    /// The fork in force at `epoch` (phase0 before any other).
    pub(crate) fn fork_at(&self, epoch: u64) -> ScheduledFork {
        self.forks
            .iter()
            .rev()
            .find(|f| f.epoch <= epoch)
            .copied()
            .unwrap_or(ScheduledFork {
                name: FORK_NAMES[0],
                version: self.genesis_fork_version,
                epoch: 0,
            })
    }

    /// Whether `version` is the version of one of this network's scheduled forks.
    pub(crate) fn has_fork_version(&self, version: [u8; 4]) -> bool {
        self.forks.iter().any(|f| f.version == version)
    }

    /// `name (genesis validators root 0x…)`, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.genesis_validators_root {
            Some(root) => format!("{} (genesis validators root {})", self.name, hex_root(root)),
            None => format!("{} (genesis validators root not known)", self.name),
        }
    }

    /// Check what a request says of its network: its genesis validators root (when this
    /// network's is known) and the fork version it signs with, `version`, which must be one of
    /// this network's. A request for another network is [`ConsensusError::OtherNetwork`].
    pub(crate) fn check_request(
        &self,
        genesis_validators_root: [u8; 32],
        version: [u8; 4],
        epoch: u64,
    ) -> Result<(), ConsensusError> {
        if let Some(ours) = self.genesis_validators_root {
            if ours != genesis_validators_root {
                return Err(ConsensusError::OtherNetwork(format!(
                    "this signer serves network {}; the request is for genesis validators root \
                     {}; nothing was signed",
                    self.describe(),
                    hex_root(&genesis_validators_root)
                )));
            }
        }
        if !self.has_fork_version(version) {
            let expected = self.fork_at(epoch);
            return Err(ConsensusError::OtherNetwork(format!(
                "this signer serves network {}, where epoch {epoch} is {} (fork version {}); \
                 the request signs with fork version {}, which is none of this network's forks; \
                 nothing was signed",
                self.name,
                expected.name,
                hex_version(&expected.version),
                hex_version(&version)
            )));
        }
        Ok(())
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

    fn get_version(&self, key: &str) -> Result<Option<[u8; 4]>, ConsensusError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => parse_version(v)
                .map(Some)
                .ok_or_else(|| ConsensusError::Malformed(format!("{key} {:?}", clip(v)))),
        }
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
