//! The one configuration loader: a TOML file (or the embedded SoftHSM default when there is
//! none), device profiles from `pkcs11-config/` compiled into the binary, and the data directory
//! layout. Opening devices is `crate::devices`' job, not this module's.
//!
//! Keys of the HTTP server's access control (relative paths are relative to the config file):
//!
//! ```toml
//! listen = "0.0.0.0:9000"
//! allow_insecure_http = false      # plain HTTP off loopback only with this set
//! allow_unauthenticated_signing = false  # signing off loopback without mTLS or token: only with this
//! [auth]
//! token_file = "api-token.txt"     # default <data-dir>/api-token.txt, created 0600
//! require_on_signing = false       # bearer token on /api/v1/eth2/* too
//! [tls]
//! cert_file = "server.pem"         # PEM chain, leaf first
//! key_file = "server.key"          # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! client_ca_file = "clients-ca.pem"    # mutual TLS: client certificates must chain here
//! allowed_clients = ["vc-1.example", "sha256:3f…"] # … and be on this list
//! [server]                         # connection limits (`crate::api::transport`), defaults shown
//! max_connections = 4096
//! max_connections_per_ip = 1024    # per IPv4 address or IPv6 /64
//! header_read_timeout_ms = 15000   # a whole request head, from opening or the last response
//! body_read_timeout_ms = 10000
//! tls_handshake_timeout_ms = 5000
//! max_tls_handshakes_per_ip = 32
//! ```
//!
//! Pruning of the slashing-protection database while `serve` runs (defaults shown; see the
//! README, "Pruning", for why):
//!
//! ```toml
//! [slashing]
//! prune = true
//! keep_epochs = 1024               # per validator, before its newest record; at least 2
//! prune_interval_minutes = 60      # the first pass runs at start
//! group_commit_wait_us = 2000      # under load, wait this long for more checks per fsync
//! ```
//!
//! Who may sign what is the signing policy, a file of its own (`policy_file`, default
//! `<data-dir>/signing-policy.toml`; see `crate::api::policy` and the README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hsm::{DeviceConfig, PinSource, TokenSelector, DEFAULT_CUSTODY_KEY_LABEL};
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{Result, SignerError};

/// Device profiles shipped in `pkcs11-config/`, by name.
const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("softhsm", include_str!("../pkcs11-config/softhsm.toml")),
    ("yubihsm2", include_str!("../pkcs11-config/yubihsm2.toml")),
    ("luna", include_str!("../pkcs11-config/luna.toml")),
    ("cloudhsm", include_str!("../pkcs11-config/cloudhsm.toml")),
    ("nshield", include_str!("../pkcs11-config/nshield.toml")),
    ("kryoptic", include_str!("../pkcs11-config/kryoptic.toml")),
];

/// Number of SoftHSM tokens the embedded default creates (enough for a 2-of-3 threshold key).
pub const EMBEDDED_TOKENS: usize = 3;
/// Name of the configuration file looked for in the data directory.
pub const CONFIG_FILE_NAME: &str = "hsm-signer.toml";

/// A kind of device, as described by a file in `pkcs11-config/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the device is.
    pub description: String,
    /// Where its module usually is.
    #[serde(default)]
    pub module_candidates: Vec<PathBuf>,
    /// Session cap per token.
    pub max_sessions: usize,
    /// Envelope mechanism; only `CKM_AES_GCM` exists today.
    pub mechanism: String,
    /// The signer may create tokens of this kind itself.
    #[serde(default)]
    pub soft_token: bool,
    /// Environment variable through which the module finds its own configuration.
    #[serde(default)]
    pub config_env: Option<String>,
    /// Decrypt with a session copy of the custody key (`hsm::DeviceConfig::session_copy`).
    /// Measured on the soft tokens only, so off unless a profile turns it on.
    #[serde(default)]
    pub custody_key_session_copy: bool,
}

/// Look up a built-in profile by name.
pub(crate) fn builtin_profile(name: &str) -> Result<Profile> {
    let text = BUILTIN_PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let known: Vec<_> = BUILTIN_PROFILES.iter().map(|(n, _)| *n).collect();
            SignerError::Config(format!(
                "unknown device profile {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
    toml::from_str(text).map_err(|e| SignerError::Config(format!("built-in profile {name}: {e}")))
}

/// One `[[device]]` entry of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceEntry {
    /// Our name for the device; key files refer to it.
    pub name: String,
    /// Built-in profile name (default `softhsm`).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// A profile file on disk instead of a built-in one.
    pub profile_file: Option<PathBuf>,
    /// Token label (preferred) …
    pub token_label: Option<String>,
    /// … or a fixed slot id.
    pub slot: Option<u64>,
    /// File holding the user PIN.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Override the profile's module path.
    pub module: Option<PathBuf>,
    /// Override the profile's session cap.
    pub max_sessions: Option<usize>,
    /// Override the custody key label.
    pub custody_key_label: Option<String>,
    /// Override the profile's `custody_key_session_copy`.
    pub custody_key_session_copy: Option<bool>,
    /// Value for the profile's `config_env` (e.g. the path of softhsm2.conf).
    pub module_config: Option<PathBuf>,
    /// Benchmarks only: fixed latency added to every device operation (a stand-in network HSM).
    pub simulated_latency_ms: Option<u64>,
    /// File holding the SO PIN, for `device init` of soft tokens.
    pub so_pin_file: Option<PathBuf>,
}

fn default_profile() -> String {
    "softhsm".into()
}

/// `[scheduler]` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// CPU signing threads (default: the number of cores).
    pub cpu_workers: Option<usize>,
    /// Jobs that may wait for a device (default 100,000).
    pub queue_capacity: Option<usize>,
    /// Refuse every request that arrives after its validity window (the consensus specs' rule
    /// for its type: a block's slot, a RANDAO reveal's epoch, an attestation's inclusion window,
    /// …; see the README) and give the rest the window's end as their queue deadline (default
    /// true; needs the network's genesis time).
    pub slot_deadlines: Option<bool>,
    /// Milliseconds an opened envelope may wait for a bulk signing thread before the rescue
    /// thread signs bulk work in its place (default 100; see the README's scheduling section).
    pub starved_after_ms: Option<u64>,
}

/// `beacon_node_url` must be a plain `http://` URL (no TLS client is built in): checked when the
/// configuration loads, so a typo is a clear error at start, not a silent lack of precompute.
pub(crate) fn check_beacon_node_url(url: &str) -> Result<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        SignerError::Config(format!(
            "beacon_node_url {url:?}: only http:// URLs are supported"
        ))
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
        return Err(SignerError::Config(format!(
            "beacon_node_url {url:?}: expected http://host:port"
        )));
    }
    Ok(())
}

/// `[auth]` settings: the API bearer token (see `crate::api::auth`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// File holding the bearer token; created with mode 0600 on first start, refused if group
    /// or others may read it. Default `<data-dir>/api-token.txt`.
    pub token_file: Option<PathBuf>,
    /// Require the token on the signing API (`/api/v1/eth2/…`) too. Default false: Web3Signer
    /// clients generally send none. The admin routes always require it.
    #[serde(default)]
    pub require_on_signing: bool,
}

/// `[tls]` settings: HTTPS, and mutual TLS with an allow-list (see `crate::api::tls`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf.
    pub key_file: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates must chain to; turns on mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// Clients let in under mutual TLS: `sha256:<hex>` (fingerprint of the client's DER
    /// certificate) or a name matched against the certificate's subject common name and its
    /// DNS subject alternative names. Required (non-empty) with `client_ca_file`.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
}

impl TlsSettings {
    /// Whether HTTPS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    fn resolve(mut self, base: &Path) -> TlsSettings {
        for p in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        self
    }
}

/// `[[participant]]`: a remote participant (another hsm-signer holding shares of distributed
/// keys, `crate::participants`), reached over mutual TLS 1.3. Key records name it by `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSettings {
    /// Name used in key records, metrics and commands; unique among devices and participants.
    pub name: String,
    /// Its HTTPS origin, `https://host:port` (no path).
    pub url: String,
    /// PEM bundle of the CAs its server certificate must chain to (only these).
    pub ca_file: PathBuf,
    /// Our client certificate (PEM chain, leaf first), which its allow-list names.
    pub cert_file: PathBuf,
    /// Our client certificate's private key (PEM).
    pub key_file: PathBuf,
    /// Requests in flight to it at once: its "sessions". Default 16.
    pub max_in_flight: Option<usize>,
    /// Longest wait for one partial signature, connection included. Default 2000 ms.
    pub timeout_ms: Option<u64>,
    /// Longest wait for a TCP connection and TLS handshake. Default 500 ms.
    pub connect_timeout_ms: Option<u64>,
}

impl ParticipantSettings {
    fn resolve(mut self, base: &Path) -> ParticipantSettings {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            *p = base.join(&*p);
        }
        self
    }
}

/// An HTTPS origin, as the distributed-signing profile writes participant endpoints:
/// `https://` then a host (and port), without path, query, fragment or user.
pub(crate) fn check_https_origin(endpoint: &str) -> std::result::Result<(), String> {
    let shown: String = endpoint.chars().take(80).collect();
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| format!("participant endpoint {shown:?} is not an https:// origin"))?;
    if rest.is_empty()
        || rest
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "participant endpoint {shown:?} must be an origin: https://host[:port], no path, \
             query, fragment or user"
        ));
    }
    Ok(())
}

/// `[server]` settings: how long a client may take and how many connections it may hold (see
/// `crate::api::transport`). Every limit has a default; set one only to change it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Open connections at once (default 4096); one more is closed at once.
    pub max_connections: Option<usize>,
    /// Open connections from one IP address (or IPv6 /64) at once (default 1024).
    pub max_connections_per_ip: Option<usize>,
    /// Milliseconds a connection may take to send a whole request head, counted from its
    /// opening or from the end of the previous response: a trickling or idle connection is
    /// closed then (default 15,000: more than a slot, so a validator client's connection
    /// lives from one slot's requests to the next).
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds a request body may take to arrive once its head has (default 10,000).
    pub body_read_timeout_ms: Option<u64>,
    /// Milliseconds a TLS handshake may take (default 5,000).
    pub tls_handshake_timeout_ms: Option<u64>,
    /// TLS handshakes in progress from one IP address at once (default 32).
    pub max_tls_handshakes_per_ip: Option<usize>,
    /// Requests a second to the endpoints that answer anyone (`/upcheck`, `/healthcheck`,
    /// `/metrics`) from one IP address or IPv6 /64 (default 20); more wait their turn, and
    /// past 5 s of waiting get 429.
    pub open_requests_per_sec_per_client: Option<f64>,
    /// Of those, how many one address may send at once after a quiet spell (default 40).
    pub open_requests_burst_per_client: Option<u32>,
    /// Requests a second to those endpoints from every address together (default 200).
    pub open_requests_per_sec: Option<f64>,
    /// Of those, how many may come at once (default 400).
    pub open_requests_burst: Option<u32>,
    /// Count the CPU time of each stage of the request path (parse, root, device, sign,
    /// response) in `/metrics` (`signer_stage_cpu_seconds_total`, estimated from one run in 16
    /// of each stage on each thread, two clock reads each); for benchmarks and profiling
    /// (default false).
    pub stage_cpu: Option<bool>,
}

/// The longest `[slashing] group_commit_wait_us` accepted: 20 ms, a fifth of an attestation's
/// usual head room over the wire.
pub const MAX_GROUP_COMMIT_WAIT_US: u64 = 20_000;

/// `[slashing]` settings: pruning of the slashing-protection database while `serve` runs (see
/// `crate::slashing::Pruning`, whose defaults apply to what is left unset). Pruning deletes a
/// validator's records older than `keep_epochs` before its newest ones and raises its low
/// watermarks to what it deleted, so protection never drops.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashingSettings {
    /// Prune in the background (default true).
    pub prune: Option<bool>,
    /// Epochs of history kept per validator before its newest record (default 1024, about
    /// 4.5 days on mainnet; at least 2). Its newest block and attestation are always kept.
    pub keep_epochs: Option<u64>,
    /// Minutes between two pruning passes (default 60); the first runs at start.
    pub prune_interval_minutes: Option<u64>,
    /// Group commit: how long the writer waits for more checks before committing, once
    /// several arrive together (microseconds, default 2000, at most 20,000; 0: only what is
    /// already queued). Never for a block, never for a lone request. See
    /// `crate::slashing::Options::gather_wait`.
    pub group_commit_wait_us: Option<u64>,
}

/// `[keymanager]` settings: where keys imported through the Keymanager API
/// (`POST /eth/v1/keystores`) are placed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeymanagerSettings {
    /// Split each imported key t-of-n, with this threshold, across `devices`.
    pub threshold: Option<usize>,
    /// One device per share. Empty (the default): the whole key goes to `default_device`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// How long `DELETE /eth/v1/keystores` waits for signatures under way for a key before it
    /// gives up on that key, leaving it active (default 30 s).
    pub delete_drain_timeout_secs: Option<u64>,
}

/// Name of the signing policy file looked for in the data directory (`policy_file` overrides).
pub(crate) const POLICY_FILE_NAME: &str = "signing-policy.toml";

/// A set of validator keys as the policy file writes it: `"all"`, or a list whose entries are
/// public keys (`0x…`) or `file:<path>` (a file of public keys, one a line, `#` comments).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum KeySetSpec {
    /// `"all"` (any other string is an error when the policy is built).
    Word(String),
    /// Public keys and `file:` entries.
    List(Vec<String>),
}

impl Default for KeySetSpec {
    fn default() -> Self {
        KeySetSpec::List(Vec::new())
    }
}

/// Message types as the policy file writes them: `"all"` or a list of wire names
/// (`"BLOCK_V2"`, `"ATTESTATION"`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TypesSpec {
    /// `"all"`.
    Word(String),
    /// Wire names.
    List(Vec<String>),
}

impl Default for TypesSpec {
    fn default() -> Self {
        TypesSpec::Word("all".into())
    }
}

/// One `[[client]]` of the signing policy: who it is and what it may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The client's name, in refusals, logs and metrics.
    pub name: String,
    /// Certificates that identify it under mutual TLS: names (subject CN or DNS SAN) or
    /// `sha256:<fingerprint>`, as in `tls.allowed_clients` (each must be there too).
    #[serde(default)]
    pub tls: Vec<String>,
    /// A file holding its bearer token (0600; created with a random token if absent).
    pub token_file: Option<PathBuf>,
    /// The keys it may use.
    pub keys: KeySetSpec,
    /// The message types it may request (default all).
    #[serde(default)]
    pub types: TypesSpec,
}

/// One `[[key_fee_recipients]]`: the fee recipients registrations of these keys may name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFeeRecipients {
    /// The keys (not `"all"`: that is `fee_recipients`).
    pub keys: KeySetSpec,
    /// 20-byte addresses, `0x…`.
    pub allowed: Vec<String>,
}

/// The signing policy file (see `crate::api::policy`, which builds and enforces it). Absent:
/// every client may ask for every key and type, and no voluntary exit is signed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Keys that may sign a `VOLUNTARY_EXIT` (default none: an exit cannot be undone).
    #[serde(default)]
    pub exit_keys: KeySetSpec,
    /// Fee recipients a `VALIDATOR_REGISTRATION` may name, for keys without their own list.
    /// Unset: any.
    pub fee_recipients: Option<Vec<String>>,
    /// Per-key fee recipient lists (they replace `fee_recipients` for their keys).
    #[serde(default)]
    pub key_fee_recipients: Vec<KeyFeeRecipients>,
    /// The clients; none: no per-client restriction.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientSettings>,
    /// The file it came from (`file:` entries and token files are relative to it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl PolicySettings {
    /// Read the policy file: `explicit` (it must exist), else `<data_dir>/signing-policy.toml`
    /// if there is one, else the default policy.
    fn load(explicit: Option<&Path>, data_dir: &Path) -> Result<PolicySettings> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => {
                let p = data_dir.join(POLICY_FILE_NAME);
                if !p.is_file() {
                    return Ok(PolicySettings::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(SignerError::io(&path))?;
        let mut policy: PolicySettings = toml::from_str(&text)
            .map_err(|e| SignerError::Config(format!("signing policy {}: {e}", path.display())))?;
        policy.source = Some(path);
        Ok(policy)
    }

    /// Whether some client is identified by a bearer token.
    pub(crate) fn has_token_clients(&self) -> bool {
        self.clients.iter().any(|c| c.token_file.is_some())
    }

    /// The directory relative paths of the policy are relative to.
    pub fn base(&self) -> &Path {
        self.source
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    scheduler: SchedulerSettings,
    #[serde(default)]
    auth: AuthSettings,
    #[serde(default)]
    tls: TlsSettings,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default)]
    allow_unauthenticated_signing: bool,
    #[serde(default)]
    keymanager: KeymanagerSettings,
    #[serde(default)]
    slashing: SlashingSettings,
    policy_file: Option<PathBuf>,
    #[serde(default)]
    server: ServerSettings,
    listen: Option<String>,
    network: Option<String>,
    genesis_validators_root: Option<String>,
    slashing_db: Option<String>,
    slashing_db_file: Option<PathBuf>,
    beacon_node_url: Option<String>,
    default_device: Option<String>,
    #[serde(default)]
    device: Vec<DeviceEntry>,
    #[serde(default)]
    participant: Vec<ParticipantSettings>,
}

/// A resolved device: the `hsm` crate's config plus what the signer needs around it.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    /// What the `hsm` crate needs to open it.
    pub hsm: DeviceConfig,
    /// Its profile.
    pub profile: Profile,
    /// Environment for the module (`config_env` = `module_config`).
    pub module_env: Option<(String, PathBuf)>,
    /// SO PIN file (soft tokens created by the signer).
    pub so_pin_file: Option<PathBuf>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (key store, slashing database, embedded tokens).
    pub data_dir: PathBuf,
    /// Where the configuration came from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: String,
    /// Network preset name or consensus config file (`--network` overrides).
    pub network: String,
    /// The network's genesis validators root, for a network whose config file does not give
    /// it (`--genesis-validators-root` overrides). A built-in network's own root cannot be
    /// overridden; a different one here is an error at start-up.
    pub genesis_validators_root: Option<[u8; 32]>,
    /// Scheduler settings.
    pub scheduler: SchedulerSettings,
    /// Slashing protection in PostgreSQL: a connection string (`postgres://user@host/db`), so
    /// that several signers share it (`slashing_db`, or read from `slashing_db_file`). `None`:
    /// SQLite in the data directory. Secret: it may carry a password, so it never shows in
    /// `Debug` output.
    pub slashing_db: Option<SecretString>,
    /// Slashing-protection pruning.
    pub slashing: SlashingSettings,
    /// A beacon node (standard Beacon API, `http://host:port`) to learn duties from, so that
    /// selection proofs are signed ahead of time. `None`: no precompute.
    pub beacon_node_url: Option<String>,
    /// Devices, in configuration order.
    pub devices: Vec<ResolvedDevice>,
    /// Device that takes new whole keys unless told otherwise.
    pub default_device: String,
    /// API bearer token settings.
    pub auth: AuthSettings,
    /// HTTPS / mutual TLS settings.
    pub tls: TlsSettings,
    /// Serve plain HTTP on a non-loopback address (refused otherwise).
    pub allow_insecure_http: bool,
    /// Open the signing API on a non-loopback address without client authentication (refused
    /// otherwise).
    pub allow_unauthenticated_signing: bool,
    /// Keymanager API settings.
    pub keymanager: KeymanagerSettings,
    /// The signing policy (`policy_file`, default `<data-dir>/signing-policy.toml`), as read;
    /// `crate::api::policy::Policy::build` checks and resolves it.
    pub policy: PolicySettings,
    /// HTTP server limits.
    pub server: ServerSettings,
    /// Remote participants holding shares of this signer's distributed keys.
    pub participants: Vec<ParticipantSettings>,
}

/// A secret kept in a file of its own (a database URL with its password): the file's text
/// without its trailing line break. The text read is wiped.
pub(crate) fn read_secret_file(path: &Path) -> Result<SecretString> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(SignerError::io(path))?);
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(SignerError::Config(format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(secret))
}

/// `$XDG_DATA_HOME/hsm-signer`, else `~/.local/share/hsm-signer`.
pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hsm-signer");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/share/hsm-signer")
}

impl Config {
    /// Load `config` if given, else `<data_dir>/hsm-signer.toml` if present, else the embedded
    /// default (SoftHSM tokens under the data directory).
    pub fn load(config: Option<&Path>, data_dir: &Path) -> Result<Config> {
        let path = match config {
            Some(p) => Some(p.to_owned()),
            None => Some(data_dir.join(CONFIG_FILE_NAME)).filter(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Self::embedded(data_dir);
        };
        // It may hold the database password (`slashing_db`): wiped once parsed.
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&path).map_err(SignerError::io(&path))?,
        );
        let file: FileConfig = toml::from_str(&text)
            .map_err(|e| SignerError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        let base = base.as_path();
        let devices = file
            .device
            .iter()
            .map(|d| resolve_device(d, base))
            .collect::<Result<Vec<_>>>()?;
        let default_device = file
            .default_device
            .or_else(|| devices.first().map(|d| d.hsm.name.clone()))
            .ok_or_else(|| {
                SignerError::Config(format!("{}: no [[device]] configured", path.display()))
            })?;
        let genesis_validators_root = file
            .genesis_validators_root
            .as_deref()
            .map(|r| {
                crate::consensus::parse_root(r).ok_or_else(|| {
                    SignerError::Config(format!(
                        "{}: genesis_validators_root is not a 0x-prefixed 32-byte hex root",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        let slashing_db = match (file.slashing_db, file.slashing_db_file) {
            (Some(_), Some(_)) => {
                return Err(SignerError::Config(format!(
                    "{}: give slashing_db or slashing_db_file, not both",
                    path.display()
                )))
            }
            (Some(url), None) => Some(SecretString::from(url)),
            (None, Some(f)) => Some(read_secret_file(&base.join(f))?),
            (None, None) => None,
        };
        let config = Config {
            data_dir: data_dir.to_owned(),
            source: Some(path),
            listen: file.listen.unwrap_or_else(|| "127.0.0.1:9000".into()),
            network: match file.network {
                // A config file named in the configuration is relative to it.
                Some(n) if crate::consensus::Network::preset(&n).is_none() => {
                    base.join(n).display().to_string()
                }
                Some(n) => n,
                None => "mainnet".into(),
            },
            genesis_validators_root,
            scheduler: file.scheduler,
            slashing_db,
            slashing: file.slashing,
            beacon_node_url: file.beacon_node_url,
            devices,
            default_device,
            auth: AuthSettings {
                token_file: file.auth.token_file.map(|p| base.join(p)),
                ..file.auth
            },
            tls: file.tls.resolve(base),
            allow_insecure_http: file.allow_insecure_http,
            allow_unauthenticated_signing: file.allow_unauthenticated_signing,
            keymanager: file.keymanager,
            policy: PolicySettings::load(
                file.policy_file.map(|p| base.join(p)).as_deref(),
                data_dir,
            )?,
            server: file.server,
            participants: file
                .participant
                .into_iter()
                .map(|p| p.resolve(base))
                .collect(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The embedded default: `EMBEDDED_TOKENS` SoftHSM tokens under `<data_dir>/softhsm`, with
    /// random PINs in 0600 files (created by [`crate::devices::init_devices`]).
    pub fn embedded(data_dir: &Path) -> Result<Config> {
        let soft = data_dir.join("softhsm");
        let entries: Vec<DeviceEntry> = (1..=EMBEDDED_TOKENS)
            .map(|i| DeviceEntry {
                name: format!("softhsm-{i}"),
                profile: "softhsm".into(),
                profile_file: None,
                token_label: Some(format!("hsm-signer-{i}")),
                slot: None,
                pin_file: Some(soft.join(format!("softhsm-{i}.pin"))),
                pin_env: None,
                module: None,
                max_sessions: None,
                custody_key_label: None,
                custody_key_session_copy: None,
                module_config: Some(soft.join("softhsm2.conf")),
                simulated_latency_ms: None,
                so_pin_file: Some(soft.join(format!("softhsm-{i}.so-pin"))),
            })
            .collect();
        let devices = entries
            .iter()
            .map(|d| resolve_device(d, data_dir))
            .collect::<Result<Vec<_>>>()?;
        Ok(Config {
            data_dir: data_dir.to_owned(),
            source: None,
            listen: "127.0.0.1:9000".into(),
            network: "mainnet".into(),
            genesis_validators_root: None,
            scheduler: SchedulerSettings::default(),
            slashing_db: None,
            slashing: SlashingSettings::default(),
            beacon_node_url: None,
            default_device: devices[0].hsm.name.clone(),
            devices,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            allow_insecure_http: false,
            allow_unauthenticated_signing: false,
            keymanager: KeymanagerSettings::default(),
            policy: PolicySettings::load(None, data_dir)?,
            server: ServerSettings::default(),
            participants: Vec::new(),
        })
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for d in &self.devices {
            if !names.insert(&d.hsm.name) {
                return Err(SignerError::Config(format!(
                    "device {:?} is configured twice",
                    d.hsm.name
                )));
            }
        }
        if !names.contains(&self.default_device) {
            return Err(SignerError::Config(format!(
                "default_device {:?} is not a configured device",
                self.default_device
            )));
        }
        for p in &self.participants {
            if !names.insert(&p.name) {
                return Err(SignerError::Config(format!(
                    "participant {:?}: the name is already a device's or another participant's",
                    p.name
                )));
            }
            check_https_origin(&p.url)
                .map_err(|e| SignerError::Config(format!("participant {:?}: {e}", p.name)))?;
            if p.max_in_flight == Some(0)
                || p.timeout_ms == Some(0)
                || p.connect_timeout_ms == Some(0)
            {
                return Err(SignerError::Config(format!(
                    "participant {:?}: max_in_flight, timeout_ms and connect_timeout_ms must be \
                     positive",
                    p.name
                )));
            }
        }
        if self
            .slashing
            .group_commit_wait_us
            .is_some_and(|us| us > MAX_GROUP_COMMIT_WAIT_US)
        {
            return Err(SignerError::Config(format!(
                "[slashing] group_commit_wait_us must be at most {MAX_GROUP_COMMIT_WAIT_US} \
                 (every attestation under load waits up to this long)"
            )));
        }
        self.check_keymanager_split()?;
        if let Some(url) = &self.beacon_node_url {
            check_beacon_node_url(url)?;
        }
        self.module_environment().map(|_| ())
    }

    /// The `[keymanager]` split, when it names devices or a threshold: the threshold needs
    /// devices, [`check_split`]'s rules, and every device configured.
    pub(crate) fn check_keymanager_split(&self) -> Result<()> {
        let km = &self.keymanager;
        if km.devices.is_empty() && km.threshold.is_none() {
            return Ok(());
        }
        let place = |e: SignerError| SignerError::Config(format!("[keymanager]: {e}"));
        if km.devices.is_empty() {
            return Err(SignerError::Config(
                "[keymanager]: threshold needs devices (one device per share)".into(),
            ));
        }
        check_split(km.threshold.unwrap_or(1), &km.devices).map_err(place)?;
        for d in &km.devices {
            self.device(d).map_err(place)?;
        }
        Ok(())
    }

    /// The environment the modules need (e.g. `SOFTHSM2_CONF`); two devices asking for
    /// different values of one variable is an error, since the module reads it once.
    pub(crate) fn module_environment(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut env = BTreeMap::new();
        for d in &self.devices {
            if let Some((var, value)) = &d.module_env {
                if let Some(prev) = env.insert(var.clone(), value.clone()) {
                    if prev != *value {
                        return Err(SignerError::Config(format!(
                            "devices disagree on {var}: {} vs {}",
                            prev.display(),
                            value.display()
                        )));
                    }
                }
            }
        }
        Ok(env)
    }

    /// Set the module environment in this process. Call before any device is opened and
    /// before other threads exist (the modules read it in `C_Initialize`).
    pub fn apply_module_environment(&self) -> Result<()> {
        for (var, value) in self.module_environment()? {
            std::env::set_var(var, value);
        }
        Ok(())
    }

    /// Directory of the key store.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    /// The API bearer token file: `auth.token_file`, else `<data-dir>/api-token.txt`.
    pub fn token_file(&self) -> PathBuf {
        self.auth
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("api-token.txt"))
    }

    /// Whether this is the embedded default (the signer owns the tokens).
    pub(crate) fn is_embedded(&self) -> bool {
        self.source.is_none()
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Result<&ResolvedDevice> {
        self.devices
            .iter()
            .find(|d| d.hsm.name == name)
            .ok_or_else(|| SignerError::Config(format!("no device named {name:?} is configured")))
    }
}

fn resolve_device(d: &DeviceEntry, base: &Path) -> Result<ResolvedDevice> {
    let rel = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let profile = match &d.profile_file {
        Some(f) => {
            let f = rel(f);
            let text = std::fs::read_to_string(&f).map_err(SignerError::io(&f))?;
            toml::from_str(&text)
                .map_err(|e| SignerError::Config(format!("{}: {e}", f.display())))?
        }
        None => builtin_profile(&d.profile)?,
    };
    if profile.mechanism != "CKM_AES_GCM" {
        return Err(SignerError::Config(format!(
            "device {}: mechanism {} is not supported (CKM_AES_GCM is)",
            d.name, profile.mechanism
        )));
    }
    let module = match &d.module {
        Some(m) => rel(m),
        None => profile
            .module_candidates
            .iter()
            .find(|p| p.is_file())
            .or(profile.module_candidates.first())
            .cloned()
            .ok_or_else(|| SignerError::Config(format!("device {}: no module path", d.name)))?,
    };
    let token = match (&d.token_label, d.slot) {
        (Some(l), None) => TokenSelector::Label(l.clone()),
        (None, Some(s)) => TokenSelector::Slot(s),
        _ => {
            return Err(SignerError::Config(format!(
                "device {}: set exactly one of token_label and slot",
                d.name
            )))
        }
    };
    let pin = match (&d.pin_file, &d.pin_env) {
        (Some(f), None) => PinSource::File(rel(f)),
        (None, Some(v)) => PinSource::Env(v.clone()),
        _ => {
            return Err(SignerError::Config(format!(
                "device {}: set exactly one of pin_file and pin_env",
                d.name
            )))
        }
    };
    let module_env = match (&profile.config_env, &d.module_config) {
        (Some(var), Some(path)) => Some((var.clone(), rel(path))),
        (None, Some(_)) => {
            return Err(SignerError::Config(format!(
                "device {}: module_config is set but profile has no config_env",
                d.name
            )))
        }
        _ => None,
    };
    let max_sessions = d.max_sessions.unwrap_or(profile.max_sessions);
    if max_sessions == 0 {
        return Err(SignerError::Config(format!(
            "device {}: max_sessions must be at least 1",
            d.name
        )));
    }
    Ok(ResolvedDevice {
        hsm: DeviceConfig {
            name: d.name.clone(),
            module,
            token,
            pin,
            max_sessions,
            custody_key_label: d
                .custody_key_label
                .clone()
                .unwrap_or_else(|| DEFAULT_CUSTODY_KEY_LABEL.to_owned()),
            session_copy: d
                .custody_key_session_copy
                .unwrap_or(profile.custody_key_session_copy),
            simulated_latency: d.simulated_latency_ms.map(Duration::from_millis),
        },
        module_env,
        so_pin_file: d.so_pin_file.as_ref().map(rel),
        profile,
    })
}

/// The rules of a t-of-n split that need no key material: at least one device, 1 ≤ threshold ≤
/// devices, each device once (a share per device).
pub(crate) fn check_split(threshold: usize, device_names: &[String]) -> Result<()> {
    let n = device_names.len();
    if n == 0 {
        return Err(SignerError::Placement(
            "no devices given for the shares".into(),
        ));
    }
    if threshold == 0 {
        return Err(SignerError::Placement(
            "threshold must be at least 1".into(),
        ));
    }
    if threshold > n {
        return Err(SignerError::Placement(format!(
            "threshold {threshold} needs at least {threshold} devices, got {n}"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for d in device_names {
        if !seen.insert(d) {
            return Err(SignerError::Placement(format!(
                "device {d} is listed twice: each share needs its own device"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for (name, _) in BUILTIN_PROFILES {
            let p = builtin_profile(name).unwrap();
            assert!(p.max_sessions > 0, "{name}");
            assert_eq!(p.mechanism, "CKM_AES_GCM");
        }
        assert!(builtin_profile("nope").is_err());
    }

    #[test]
    fn config_file_resolves_relative_paths_and_rejects_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:9100"
[[device]]
name = "yubi"
profile = "yubihsm2"
token_label = "YubiHSM"
pin_env = "YUBI_PIN"
[[device]]
name = "soft"
token_label = "t"
pin_file = "pins/soft"
max_sessions = 3
simulated_latency_ms = 2
"#,
        )
        .unwrap();
        let c = Config::load(Some(&path), dir.path()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.default_device, "yubi");
        assert_eq!(c.devices[0].hsm.max_sessions, 16);
        let soft = c.device("soft").unwrap();
        assert_eq!(soft.hsm.max_sessions, 3);
        assert_eq!(soft.hsm.pin, PinSource::File(dir.path().join("pins/soft")));
        assert_eq!(soft.hsm.simulated_latency, Some(Duration::from_millis(2)));

        std::fs::write(
            &path,
            "[[device]]\nname='a'\ntoken_label='x'\nslot=1\npin_env='P'\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of token_label and slot"), "{err}");
        std::fs::write(
            &path,
            "[[device]]\nname='a'\ntoken_label='x'\npin_env='P'\nbogus=1\n",
        )
        .unwrap();
        assert!(Config::load(Some(&path), dir.path()).is_err());
    }

    #[test]
    fn access_control_keys_parse_and_resolve_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
allow_insecure_http = true
[auth]
token_file = "secrets/token"
require_on_signing = true
[tls]
cert_file = "tls/server.pem"
key_file = "/etc/hsm-signer/server.key"
client_ca_file = "tls/ca.pem"
allowed_clients = ["vc-1", "sha256:00"]
[[device]]
name = "soft"
token_label = "t"
pin_env = "P"
"#,
        )
        .unwrap();
        let c = Config::load(Some(&path), dir.path()).unwrap();
        assert!(c.allow_insecure_http);
        assert!(c.auth.require_on_signing);
        assert_eq!(c.token_file(), dir.path().join("secrets/token"));
        assert!(c.tls.enabled());
        assert_eq!(c.tls.cert_file, Some(dir.path().join("tls/server.pem")));
        assert_eq!(
            c.tls.key_file,
            Some(PathBuf::from("/etc/hsm-signer/server.key"))
        );
        assert_eq!(c.tls.client_ca_file, Some(dir.path().join("tls/ca.pem")));
        assert_eq!(c.tls.allowed_clients, ["vc-1", "sha256:00"]);

        // Defaults: token in the data dir, signing open, no TLS, no plain HTTP off loopback.
        let d = Config::load(None, dir.path()).unwrap();
        assert_eq!(d.token_file(), dir.path().join("api-token.txt"));
        assert!(!d.auth.require_on_signing && !d.tls.enabled() && !d.allow_insecure_http);

        std::fs::write(&path, "[tls]\ncert = 'x'\n").unwrap();
        assert!(Config::load(Some(&path), dir.path()).is_err());
    }

    /// Load a configuration file of `top` (top-level keys) and one device entry.
    fn load_with_one_device(top: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let device = "[[device]]\nname='a'\ntoken_label='x'\npin_env='P'\n";
        std::fs::write(&path, format!("{top}\n{device}")).unwrap();
        Config::load(Some(&path), dir.path())
    }

    #[test]
    fn slashing_settings_reach_the_pruning_with_defaults_for_what_is_unset() {
        use crate::slashing::Pruning;
        let c = load_with_one_device("").unwrap();
        assert_eq!(crate::app::pruning(&c.slashing), Some(Pruning::default()));
        let c = load_with_one_device(
            "[slashing]
keep_epochs = 64
prune_interval_minutes = 5",
        )
        .unwrap();
        let p = crate::app::pruning(&c.slashing).unwrap();
        assert_eq!((p.keep_epochs, p.interval), (64, Duration::from_secs(300)));
        let c = load_with_one_device(
            "[slashing]
prune = false",
        )
        .unwrap();
        assert_eq!(crate::app::pruning(&c.slashing), None);
        let gathering = |c: &Config| crate::app::slashing_options(c, None).gather_wait;
        assert_eq!(gathering(&c), crate::slashing::DEFAULT_GATHER_WAIT);
        let c = load_with_one_device("[slashing]\ngroup_commit_wait_us = 0").unwrap();
        assert_eq!(gathering(&c), Duration::ZERO);
        let c = load_with_one_device("[slashing]\ngroup_commit_wait_us = 1500").unwrap();
        assert_eq!(gathering(&c), Duration::from_micros(1500));
        let err = load_with_one_device("[slashing]\ngroup_commit_wait_us = 20001").unwrap_err();
        assert!(err.to_string().contains("at most 20000"), "{err}");
        let err = load_with_one_device(
            "[slashing]
keep_epoch = 64",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn scheduler_settings_reach_the_scheduler_config() {
        let c = load_with_one_device(
            "[scheduler]\ncpu_workers = 3\nqueue_capacity = 7\nstarved_after_ms = 250",
        )
        .unwrap();
        let s = crate::scheduler::SchedulerConfig::from_settings(&c.scheduler);
        assert_eq!((s.cpu_workers, s.queue_capacity), (3, 7));
        assert_eq!(s.starved_after, Duration::from_millis(250));
        let unset = crate::scheduler::SchedulerConfig::from_settings(
            &load_with_one_device("").unwrap().scheduler,
        );
        let default = crate::scheduler::SchedulerConfig::default();
        assert_eq!(unset.starved_after, default.starved_after);
        assert_eq!(unset.queue_capacity, default.queue_capacity);
    }

    #[test]
    fn a_slashing_db_password_never_shows_in_debug_output() {
        use secrecy::ExposeSecret;
        let url = "postgres://signer:hunter2-secret@db.internal:5432/slashing";
        let c = load_with_one_device(&format!("slashing_db = '{url}'")).unwrap();
        assert_eq!(c.slashing_db.as_ref().unwrap().expose_secret(), url);
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("slashing_db"), "{shown}");
    }

    #[test]
    fn slashing_db_file_is_read_beside_the_configuration_and_excludes_slashing_db() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let device = "[[device]]\nname='a'\ntoken_label='x'\npin_env='P'\n";
        let url = "postgres://signer:hunter2@db.internal/slashing";
        std::fs::write(dir.path().join("db.url"), format!("{url}\r\n")).unwrap();
        std::fs::write(&path, format!("slashing_db_file = 'db.url'\n{device}")).unwrap();
        let c = Config::load(Some(&path), dir.path()).unwrap();
        assert_eq!(c.slashing_db.as_ref().unwrap().expose_secret(), url);
        std::fs::write(
            &path,
            format!("slashing_db_file = 'db.url'\nslashing_db = '{url}'\n{device}"),
        )
        .unwrap();
        let err = Config::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not both") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn beacon_node_url_is_read_and_must_be_plain_http() {
        let c = load_with_one_device("beacon_node_url = 'http://127.0.0.1:5052'").unwrap();
        assert_eq!(c.beacon_node_url.as_deref(), Some("http://127.0.0.1:5052"));
        let err = load_with_one_device("beacon_node_url = 'https://bn:5052'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only http:// URLs"), "{err}");
        assert!(load_with_one_device("").unwrap().beacon_node_url.is_none());
    }

    #[test]
    fn the_session_copy_of_the_custody_key_comes_from_the_profile_unless_the_device_says() {
        let copy = |device: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            let base = "[[device]]\nname='a'\ntoken_label='x'\npin_env='P'\nmodule='/bin/sh'\n";
            std::fs::write(&path, format!("{base}{device}")).unwrap();
            let c = Config::load(Some(&path), dir.path()).unwrap();
            c.devices[0].hsm.session_copy
        };
        // The soft tokens' profiles turn it on; a real HSM's leaves it off (not measured).
        assert!(copy(""));
        assert!(copy("profile='kryoptic'"));
        assert!(!copy("profile='luna'"));
        assert!(!copy("profile='yubihsm2'"));
        assert!(!copy("custody_key_session_copy=false"));
        assert!(copy("profile='cloudhsm'\ncustody_key_session_copy=true"));
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(None, dir.path()).unwrap();
        assert!(c.devices.iter().all(|d| d.hsm.session_copy));
    }

    #[test]
    fn embedded_default_has_three_soft_tokens_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(None, dir.path()).unwrap();
        assert!(c.is_embedded());
        assert_eq!(c.devices.len(), EMBEDDED_TOKENS);
        let env = c.module_environment().unwrap();
        assert_eq!(
            env["SOFTHSM2_CONF"],
            dir.path().join("softhsm/softhsm2.conf")
        );
    }
}
