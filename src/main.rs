//! The `hsm-signer` command line: devices, keys, benchmarks (and, as they land, the server and
//! slashing-protection commands). Every failure ends in one clear line and a non-zero exit.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hsm_signer::config::{default_data_dir, Config};
use hsm_signer::consensus::Network;
use hsm_signer::devices::{embedded_needs_init, init_devices, Devices};
use hsm_signer::keys::provision::{self, resolve_placement, Placement};
use hsm_signer::keys::{self, ImportOptions, KeyStore, Progress, PublicKeyBytes};
use hsm_signer::slashing::SlashingProtection;
use hsm_signer::{api, bench, Result, SignerError};
use secrecy::SecretString;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "hsm-signer",
    version,
    about = "Ethereum validator remote signer with keys in PKCS#11 custody"
)]
struct Cli {
    /// Data directory: key store, slashing database, embedded SoftHSM tokens.
    #[arg(long, global = true, env = "HSM_SIGNER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (default: <data-dir>/hsm-signer.toml, else the embedded SoftHSM default).
    #[arg(long, global = true, env = "HSM_SIGNER_CONFIG")]
    config: Option<PathBuf>,
    /// Slashing protection in PostgreSQL (postgres://user@host/db), which several signers may
    /// share; overrides the configuration's slashing_db (default: SQLite in the data directory).
    /// A password on the command line is visible to every local user: prefer
    /// --slashing-db-file or the environment.
    #[arg(
        long,
        global = true,
        env = "HSM_SIGNER_SLASHING_DB",
        hide_env_values = true
    )]
    slashing_db: Option<String>,
    /// A file holding the PostgreSQL connection string (with its password), instead of
    /// --slashing-db.
    #[arg(long, global = true, conflicts_with = "slashing_db")]
    slashing_db_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Web3Signer eth2 API (default 127.0.0.1:9000).
    Serve {
        /// Listen address (overrides the configuration).
        #[arg(long)]
        listen: Option<String>,
        /// Network: mainnet, sepolia, holesky, hoodi, gnosis, chiado, or a consensus-spec
        /// config.yaml (its genesis validators root from a genesis_validators_root.txt beside
        /// it, --genesis-validators-root, or the beacon node).
        #[arg(long)]
        network: Option<String>,
        /// The genesis validators root (0x…) of a --network config.yaml that does not give it
        /// (overrides the configuration's genesis_validators_root).
        #[arg(long)]
        genesis_validators_root: Option<String>,
        /// Accept requests for any network (for replaying test vectors of many networks only;
        /// needs --no-slashing-protection).
        #[arg(long, requires = "no_slashing_protection")]
        no_network_check: bool,
        /// Do not refuse requests past their validity window (for replaying old or synthetic
        /// messages).
        #[arg(long)]
        no_slot_deadlines: bool,
        /// DANGEROUS: sign blocks and attestations without slashing protection (for replaying
        /// test vectors only; like Web3Signer's --slashing-protection-enabled=false).
        #[arg(long)]
        no_slashing_protection: bool,
        #[command(flatten)]
        access: AccessArgs,
        /// Beacon node (http://host:port) whose duties drive selection-proof precompute
        /// (overrides the configuration's beacon_node_url).
        #[arg(long, env = "HSM_SIGNER_BEACON_NODE_URL")]
        beacon_node_url: Option<String>,
    },
    /// PKCS#11 devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Validator keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Slashing protection database (EIP-3076 interchange v5).
    #[command(subcommand)]
    Slashing(SlashingCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Make devices ready: create the embedded tokens and the custody keys if missing (idempotent).
    Init {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
    },
    /// Configured devices and whether they open.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Prove each device works: login, custody key attributes, an encrypt/decrypt round trip.
    Check {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Import EIP-2335 keystores (files, or directories such as the deposit CLI's validator_keys/).
    Import {
        /// Keystore files or directories.
        #[arg(long = "keystore", required = true, num_args = 1..)]
        keystores: Vec<PathBuf>,
        /// File holding the keystores' password.
        #[arg(long)]
        password_file: PathBuf,
        /// Device that seals the keys (default: the configured default device).
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        split: SplitArgs,
    },
    /// Generate new random keys on a device.
    Generate {
        /// How many.
        #[arg(long)]
        count: usize,
        /// Device that seals the keys.
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        split: SplitArgs,
    },
    /// Import threshold shares made elsewhere (one EIP-2335 keystore per share, holding the
    /// share's pubkey, as distributed-validator tools such as Charon write them), one per device.
    ImportShares {
        /// One keystore file per share, in the order of --share-ids and --devices.
        #[arg(long = "keystore", required = true, num_args = 1..)]
        keystores: Vec<PathBuf>,
        /// Password file: one for all keystores, or one per keystore in the same order.
        #[arg(long = "password-file", required = true, num_args = 1..)]
        password_files: Vec<PathBuf>,
        /// The validator (group) public key the shares recombine to (0x…).
        #[arg(long)]
        group_pubkey: String,
        /// Shares needed to sign.
        #[arg(long)]
        threshold: usize,
        /// Each share's id (x-coordinate), comma-separated, e.g. 1,2,3.
        #[arg(long)]
        share_ids: String,
        /// Each share's device, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        devices: Vec<String>,
    },
    /// List keys.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key from the store.
    Delete {
        /// The validator public key (0x…).
        pubkey: String,
    },
}

/// Transport security and authentication of `serve` (each overrides the configuration).
#[derive(clap::Args)]
struct AccessArgs {
    /// PEM certificate chain: serve HTTPS (with --tls-key; overrides [tls] cert_file).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert (overrides [tls] key_file).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (only behind a network you trust).
    #[arg(long)]
    allow_insecure_http: bool,
    /// Require the API bearer token on the signing API too (auth.require_on_signing).
    #[arg(long)]
    require_auth_on_signing: bool,
    /// DANGEROUS: open the signing API on a non-loopback address without client authentication
    /// (neither mutual TLS nor the bearer token): anyone who reaches the port can have exits and
    /// registrations signed. Only behind a network that admits nothing but your validator clients.
    #[arg(long)]
    allow_unauthenticated_signing: bool,
}

impl AccessArgs {
    fn apply(self, config: &mut Config) {
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls.cert_file = Some(cert);
            config.tls.key_file = Some(key);
        }
        config.allow_insecure_http |= self.allow_insecure_http;
        config.auth.require_on_signing |= self.require_auth_on_signing;
        config.allow_unauthenticated_signing |= self.allow_unauthenticated_signing;
    }
}

/// Splitting keys t-of-n across devices at provisioning.
#[derive(clap::Args)]
struct SplitArgs {
    /// Split each key across these devices (comma-separated), one share per device.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Shares needed to sign (with --devices; default 1).
    #[arg(long)]
    threshold: Option<usize>,
    /// Share ids (x-coordinates) for --devices, comma-separated (default 1..n).
    #[arg(long)]
    share_ids: Option<String>,
}

impl SplitArgs {
    fn resolve(self, config: &Config, device: Option<String>) -> Result<Placement> {
        resolve_placement(
            config,
            device,
            self.devices,
            self.threshold,
            self.share_ids.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum SlashingCmd {
    /// Import an interchange file, atomically (all of it or nothing).
    Import {
        /// The EIP-3076 interchange JSON file.
        file: PathBuf,
    },
    /// Export the database (or some validators) as an interchange file.
    Export {
        /// Where to write the JSON ("-" for standard output).
        file: PathBuf,
        /// Only these validators (0x…); repeatable.
        #[arg(long = "pubkey")]
        pubkeys: Vec<String>,
    },
    /// Delete records older than the newest N epochs per validator, keeping their maxima as
    /// watermarks (protection is never lowered).
    Prune {
        /// Epochs of history to keep per validator.
        #[arg(long)]
        keep_epochs: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Durable attestation checks per second and p99 (group commit vs one transaction per
    /// request), SQLite and optionally PostgreSQL, beside raw blst signing in the same run.
    Slashing {
        /// Validators.
        #[arg(long, default_value_t = 10_000)]
        validators: usize,
        /// Concurrent requests.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds per variant.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Also measure this PostgreSQL database (postgres://…).
        #[arg(long)]
        postgres: Option<String>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// 1-of-1, 2-of-3 and 3-of-5 keys through the scheduler, every signature verified.
    Threshold {
        /// Seconds per key shape.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Requests kept in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// The seed's epoch-boundary herd at N validators: our scheduler against FIFO, on plain
    /// SoftHSM and on SoftHSM slowed down to a network HSM.
    Scenario {
        /// Validators (each signs a selection proof, a registration and an attestation).
        #[arg(long, default_value_t = 10_000)]
        validators: usize,
        /// Blocks proposed during the burst: one at its start, then one every
        /// `--block-interval-ms`. Enough of them that the p99 is a percentile, not the maximum.
        #[arg(long, default_value_t = 100)]
        blocks: usize,
        /// Time between two blocks of the burst, milliseconds.
        #[arg(long, default_value_t = 30)]
        block_interval_ms: u64,
        /// Bursts per variant, taken in turn and pooled (percentiles over all their samples).
        /// Even, so that with `--precompute` each of ours and ours + precompute follows FIFO's
        /// burst equally often.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Simulated network HSM latency per operation, milliseconds.
        #[arg(long, default_value_t = 2)]
        slow_latency_ms: u64,
        /// Simulated network HSM sessions per device.
        #[arg(long, default_value_t = 4)]
        slow_sessions: usize,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
        /// Also run our scheduler with selection proofs precomputed (served from the cache).
        #[arg(long)]
        precompute: bool,
        /// Also draw the latency distributions to this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Block latency over HTTP on an idle server and under a flood of `/healthcheck` (which
    /// answers anyone): p50, p99 and their ratio, in one run.
    HealthFlood {
        /// Blocks signed in each phase (idle, flood, idle).
        #[arg(long, default_value_t = 500)]
        blocks: usize,
        /// Clients asking `/healthcheck` without pause during the flood.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// `/healthcheck` requests per second of the whole flood; 0: as fast as they come.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Loopback addresses the clients are spread over (each is paced on its own).
        #[arg(long, default_value_t = 1)]
        sources: usize,
        /// Each flood request on a new connection (opened, asked, closed), not keep-alive.
        #[arg(long)]
        fresh_connections: bool,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt-on-device + sign against raw blst signing.
    Custody {
        /// Device to use (default: the default device).
        #[arg(long)]
        device: Option<String>,
        /// Signing threads (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Total measuring time in seconds.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,hsm_signer=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // Absolute, so that nothing depends on the working directory (the SoftHSM configuration
    // written under it names its token directory by this path).
    let data_dir = cli.data_dir.unwrap_or_else(default_data_dir);
    let data_dir = std::path::absolute(&data_dir).map_err(SignerError::io(&data_dir))?;
    let mut config = Config::load(cli.config.as_deref(), &data_dir)?;
    if let Some(mut db) = cli.slashing_db {
        let on_argv = std::env::args_os()
            .any(|a| a == "--slashing-db" || a.to_string_lossy().starts_with("--slashing-db="));
        if on_argv && hsm_signer::slashing::connection_string_has_password(&db) {
            eprintln!(
                "WARNING: the --slashing-db connection string holds a password, which every \
                 local user can read in the process list; use --slashing-db-file, \
                 HSM_SIGNER_SLASHING_DB or slashing_db_file in the configuration"
            );
            tracing::warn!("a database password was given on the command line");
        }
        config.slashing_db = Some(secrecy::SecretString::from(db.as_str()));
        zeroize::Zeroize::zeroize(&mut db);
    } else if let Some(file) = &cli.slashing_db_file {
        config.slashing_db = Some(hsm_signer::config::read_secret_file(file)?);
    }
    // Modules read their environment in C_Initialize: set it before any device or thread exists.
    config.apply_module_environment()?;
    match cli.command {
        Command::Serve {
            listen,
            network,
            genesis_validators_root,
            no_network_check,
            no_slot_deadlines,
            no_slashing_protection,
            access,
            beacon_node_url,
        } => {
            let mut config = config;
            if no_slot_deadlines {
                config.scheduler.slot_deadlines = Some(false);
            }
            access.apply(&mut config);
            if let Some(url) = beacon_node_url {
                hsm_signer::duties::check_beacon_node_url(&url)?;
                config.beacon_node_url = Some(url);
            }
            if let Some(network) = network {
                config.network = network;
            }
            if let Some(root) = genesis_validators_root {
                config.genesis_validators_root = Some(parse_root_arg(&root)?);
            }
            serve(
                &config,
                listen,
                ServeChecks {
                    slashing_protection: !no_slashing_protection,
                    network_check: !no_network_check,
                },
            )
        }
        Command::Device(cmd) => device_cmd(&config, cmd),
        Command::Keys(cmd) => keys_cmd(&config, cmd),
        Command::Slashing(cmd) => slashing_cmd(&config, cmd),
        Command::Bench(cmd) => bench_cmd(&config, cmd),
    }
}

/// Open every device, creating the embedded default's tokens on first use. Commands call this
/// only after their own input has been checked, so bad input changes nothing.
fn open_devices(config: &Config) -> Result<Devices> {
    bootstrap_embedded(config)?;
    Devices::open_all(config)
}

fn bootstrap_embedded(config: &Config) -> Result<()> {
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

fn resolve_network(name: &str) -> Result<Network> {
    let path = std::path::Path::new(name);
    if path.is_file() {
        return Network::from_config_file(path).map_err(|e| SignerError::Config(e.to_string()));
    }
    Network::preset(name).ok_or_else(|| {
        SignerError::Config(format!(
            "unknown network {name:?}: use {}, or a config.yaml path",
            hsm_signer::consensus::BUILT_IN_NAMES
        ))
    })
}

fn parse_root_arg(text: &str) -> Result<[u8; 32]> {
    let digits = text.strip_prefix("0x").unwrap_or("");
    let mut root = [0u8; 32];
    hex::decode_to_slice(digits, &mut root).map_err(|_| {
        SignerError::Config(format!(
            "--genesis-validators-root {:?}: expected 0x and 64 hex digits",
            text.chars().take(80).collect::<String>()
        ))
    })?;
    Ok(root)
}

/// The configured network, with the configured genesis validators root.
fn configured_network(config: &Config) -> Result<Network> {
    let network = resolve_network(&config.network)?;
    match config.genesis_validators_root {
        Some(root) => network
            .with_genesis_validators_root(root)
            .map_err(|e| SignerError::Config(e.to_string())),
        None => Ok(network),
    }
}

/// How long `serve` waits at start for a beacon node to tell a network's genesis validators
/// root that nothing else gives. A network whose root is known waits for one try only.
const BEACON_NODE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The network `serve` serves: configured, then checked against the beacon node when one is
/// configured (a node on another network is an error; one that does not answer is a warning,
/// unless only it could give the genesis validators root). Never guessed.
fn establish_network(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    network_check: bool,
) -> Result<Network> {
    use hsm_signer::duties::beacon::BeaconNode;
    use hsm_signer::duties::identity::{self, NodeCheck};
    let mut network = configured_network(config)?;
    if let Some(url) = &config.beacon_node_url {
        let patience = match network.genesis_validators_root {
            Some(_) => std::time::Duration::ZERO,
            None => BEACON_NODE_PATIENCE,
        };
        let beacon = BeaconNode::new(url, std::time::Duration::from_secs(5))
            .map_err(|e| SignerError::Config(format!("beacon node {url}: {e}")))?;
        match runtime.block_on(identity::confirm(&beacon, &network, patience)) {
            Ok(NodeCheck::Confirmed(n)) => {
                eprintln!("beacon node {url} confirms network {}", n.describe());
                network = n;
            }
            Ok(NodeCheck::Unreachable(e)) => {
                eprintln!(
                    "WARNING: beacon node {url} did not answer ({e}); the network is not \
                     cross-checked now (the precompute checks it when the node answers)"
                );
            }
            Err(disagreement) => {
                return Err(SignerError::Config(format!(
                    "beacon node {url}: {disagreement}; check --network and beacon_node_url"
                )))
            }
        }
    }
    if network.genesis_validators_root.is_none() && network_check {
        return Err(SignerError::Config(format!(
            "network {} has no known genesis validators root: give it with \
             genesis_validators_root in the configuration, --genesis-validators-root, a {} \
             beside the config.yaml, or beacon_node_url (a beacon node that answers)",
            network.name,
            hsm_signer::consensus::GVR_FILE_NAME
        )));
    }
    Ok(network)
}

/// What `serve` checks before signing.
struct ServeChecks {
    slashing_protection: bool,
    network_check: bool,
}

fn serve(config: &Config, listen: Option<String>, checks: ServeChecks) -> Result<()> {
    let protect = checks.slashing_protection;
    let runtime = hsm_signer::scheduler::runtime()
        .map_err(|e| SignerError::Invalid(format!("starting the runtime: {e}")))?;
    let network = establish_network(config, &runtime, checks.network_check)?;
    let gvr = network.genesis_validators_root;
    if !checks.network_check {
        eprintln!("WARNING: requests for any network are accepted (--no-network-check)");
    }
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let addr = api::tls::parse_listen(&listen)?;
    let tls = api::tls::server_config(&config.tls)?;
    api::transport::Limits::from_settings(&config.server)?;
    if tls.is_none() {
        api::tls::check_plain_http(addr, config.allow_insecure_http)?;
    }
    // A policy with token clients refuses every request that names none of them: it
    // authenticates (certificate clients need mutual TLS, which counts already).
    let overridden = api::tls::check_signing_access(
        addr,
        config.tls.client_ca_file.is_some(),
        config.auth.require_on_signing || config.policy.has_token_clients(),
        config.allow_unauthenticated_signing,
    )?;
    if overridden {
        eprintln!(
            "WARNING: the signing API on {addr} is open to anyone who reaches it (no mutual TLS, \
             no bearer token; --allow-unauthenticated-signing)"
        );
        tracing::warn!(%addr, "signing API without client authentication off loopback (allow_unauthenticated_signing)");
    }
    let (token, origin) = api::auth::ApiToken::load_or_create(&config.token_file())?;
    // The signing policy, checked before any device is opened: a mistake in it is an error at
    // start, not a surprise at the first request.
    let policy = api::policy::Policy::build(config, Some(&token))?;
    eprintln!(
        "API bearer token ({}) in {}: send it as `Authorization: Bearer <token>` to /reload, \
         /admin/*{}",
        match origin {
            api::auth::TokenOrigin::Created => "new",
            api::auth::TokenOrigin::Existing => "existing",
        },
        token.path().display(),
        if config.auth.require_on_signing {
            " and the signing API"
        } else {
            ""
        }
    );
    let devices = open_devices(config)?;
    let (keys, errors) = KeyStore::load(&config.keys_dir())?;
    for e in &errors {
        tracing::error!(error = %e, "key file not loaded");
    }
    eprintln!(
        "data directory {}; {} key(s) loaded ({} failed), {} device(s), network {} ({} preset)",
        config.data_dir.display(),
        keys.len(),
        errors.len(),
        config.devices.len(),
        network.name,
        network.preset
    );
    let slashing = if protect {
        let (db, opened) = open_slashing_db(config, gvr);
        let opened = opened
            .map_err(|e| SignerError::Config(format!("slashing protection database {db}: {e}")))?;
        Some(opened)
    } else {
        eprintln!(
            "WARNING: slashing protection is OFF: blocks and attestations are signed unchecked"
        );
        tracing::warn!("slashing protection disabled by --no-slashing-protection");
        None
    };
    let loaded: std::collections::HashSet<_> = keys.iter().map(|k| k.pubkey).collect();
    let unknown = policy.keys_not_loaded(&loaded);
    if unknown > 0 {
        eprintln!("signing policy: {unknown} key(s) it names are not loaded (yet)");
    }
    let mut state = api::AppState::new(
        config.clone(),
        network,
        devices,
        keys,
        errors.iter().map(|e| e.to_string()).collect(),
        slashing,
    )
    .with_api_token(token)
    .with_policy(policy);
    state.network_check = checks.network_check;
    // Keys deleted through the Keymanager API stay deleted, whatever files are on disk: their
    // tombstones are read even when slashing protection is off, from a database that exists.
    let tombstones = match protect {
        false
            if config.slashing_db.is_some()
                || config.data_dir.join("slashing-protection.sqlite").exists() =>
        {
            Some(open_slashing_db(config, gvr).1)
        }
        _ => None,
    }
    .transpose()
    .and_then(|db| state.exclude_deleted_keys(db.as_ref()))
    .map_err(|e| SignerError::Config(format!("slashing protection database: {e}")))?;
    if tombstones > 0 {
        eprintln!("{tombstones} key file(s) ignored: deleted through the Keymanager API");
    }
    let precompute = match &config.beacon_node_url {
        Some(url) => {
            let service = state
                .enable_precompute(url)
                .map_err(|e| SignerError::Config(format!("beacon node {url}: {e}")))?;
            eprintln!("selection proofs precomputed from the duties of beacon node {url}");
            Some(runtime.spawn(service.run()))
        }
        None => None,
    };
    let served = runtime.block_on(api::serve_with(state, addr, tls));
    if let Some(task) = precompute {
        // Cancel-safe: aborting drops its signing futures, which leave the scheduler's queue.
        task.abort();
    }
    served.map_err(|e| SignerError::Invalid(format!("HTTP server on {addr}: {e}")))
}

fn device_cmd(config: &Config, cmd: DeviceCmd) -> Result<()> {
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
    getrandom::getrandom(probe.as_mut()).map_err(|e| SignerError::Invalid(e.to_string()))?;
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

fn keys_cmd(config: &Config, cmd: KeysCmd) -> Result<()> {
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

fn read_password(path: &std::path::Path) -> Result<SecretString> {
    let raw =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(SignerError::io(path))?);
    Ok(SecretString::from(
        raw.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// A benchmark report as pretty JSON, or as its table.
fn print_report(report: &impl serde::Serialize, table: String, json: bool) {
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
fn tempfile_dir(data_dir: &std::path::Path) -> Result<PathBuf> {
    let dir = data_dir.join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(SignerError::io(&dir))?;
    Ok(dir)
}

/// The slashing protection database: PostgreSQL when `slashing_db` is configured, else SQLite
/// in the data directory. Where it is (for messages) comes beside it.
/// The slashing database, bound to the network's genesis validators root `gvr` when it is
/// created (one bound to another root is refused).
fn open_slashing_db(
    config: &Config,
    gvr: Option<[u8; 32]>,
) -> (
    String,
    std::result::Result<SlashingProtection, hsm_signer::slashing::SlashingError>,
) {
    match &config.slashing_db {
        Some(url) => (
            "in PostgreSQL".into(),
            SlashingProtection::open_postgres(secrecy::ExposeSecret::expose_secret(url), gvr),
        ),
        None => {
            let db = config.data_dir.join("slashing-protection.sqlite");
            (
                db.display().to_string(),
                SlashingProtection::open_sqlite(&db, gvr),
            )
        }
    }
}

fn slashing_cmd(config: &Config, cmd: SlashingCmd) -> Result<()> {
    let err = |e: hsm_signer::slashing::SlashingError| {
        SignerError::Invalid(format!("slashing protection: {e}"))
    };
    match cmd {
        SlashingCmd::Import { file } => {
            let json = std::fs::read_to_string(&file).map_err(SignerError::io(&file))?;
            std::fs::create_dir_all(&config.data_dir).map_err(SignerError::io(&config.data_dir))?;
            // A fresh database is bound to the configured network; an interchange of another
            // network is refused.
            let gvr = configured_network(config)?.genesis_validators_root;
            let db = open_slashing_db(config, gvr).1.map_err(err)?;
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
            let (_, db) = open_slashing_db(config, None);
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
            let db = open_slashing_db(config, None).1.map_err(err)?;
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

fn bench_cmd(config: &Config, cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Slashing {
            validators,
            concurrency,
            seconds,
            postgres,
            json,
        } => {
            let err = |e: hsm_signer::slashing::SlashingError| {
                SignerError::Invalid(format!("slashing bench: {e}"))
            };
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let sk = hsm_signer::bls::random_secret_key()?;
            let raw =
                bench::throughput(threads, std::time::Duration::from_secs_f64(seconds), |i| {
                    std::hint::black_box(hsm_signer::bls::sign(&sk, &bench::message(i)));
                });
            let dir = tempfile_dir(&config.data_dir)?;
            let sqlite = hsm_signer::slashing::bench_sqlite(&dir, validators, concurrency, seconds)
                .map_err(err)?;
            let _ = std::fs::remove_dir_all(&dir);
            let pg = match &postgres {
                Some(url) => Some(
                    hsm_signer::slashing::bench_postgres(url, validators, concurrency, seconds)
                        .map_err(err)?,
                ),
                None => None,
            };
            let report = serde_json::json!({
                "bench": "slashing",
                "validators": validators,
                "concurrency": concurrency,
                "raw_blst_signs_per_sec": raw,
                "sqlite": sqlite,
                "postgres": pg,
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("slashing protection: {validators} validators, {concurrency} concurrent attestations; raw blst {raw:.0} signs/s on {threads} threads");
                println!(
                    "{:<12} {:<24} {:>10} {:>8} {:>8} {:>10} {:>12}",
                    "store", "mode", "att/s", "p50 ms", "p99 ms", "÷ raw blst", "per fsync"
                );
                let mut rows = vec![("sqlite", &sqlite)];
                if let Some(pg) = &pg {
                    rows.push(("postgresql", pg));
                }
                for (store, r) in rows {
                    for run in [&r.group_commit, &r.transaction_per_request] {
                        println!(
                            "{:<12} {:<24} {:>10.0} {:>8.2} {:>8.2} {:>10.2} {:>12.1}",
                            store,
                            run.mode,
                            run.attestations_per_second,
                            run.p50_ms,
                            run.p99_ms,
                            run.attestations_per_second / raw,
                            run.mean_batch
                        );
                    }
                }
            }
            Ok(())
        }
        BenchCmd::Threshold {
            seconds,
            concurrency,
            json,
        } => {
            bootstrap_embedded(config)?;
            let report = bench::threshold::run(config, seconds, concurrency)?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Scenario {
            validators,
            blocks,
            block_interval_ms,
            rounds,
            slow_latency_ms,
            slow_sessions,
            precompute,
            json,
            plot,
        } => {
            bootstrap_embedded(config)?;
            let report = bench::scenario::run(
                config,
                &bench::scenario::ScenarioOptions {
                    validators,
                    blocks,
                    block_interval: std::time::Duration::from_millis(block_interval_ms),
                    rounds,
                    slow_latency: std::time::Duration::from_millis(slow_latency_ms),
                    slow_sessions,
                    precompute,
                },
            )?;
            if let Some(path) = plot {
                std::fs::write(&path, report.svg()).map_err(SignerError::io(&path))?;
                eprintln!("latency distributions drawn to {}", path.display());
            }
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::HealthFlood {
            blocks,
            clients,
            rate,
            sources,
            fresh_connections,
            json,
        } => {
            bootstrap_embedded(config)?;
            let dir = tempfile_dir(&config.data_dir)?;
            let report = bench::health_flood::run(
                config,
                &dir,
                &bench::health_flood::FloodOptions {
                    blocks,
                    clients,
                    rate,
                    sources,
                    fresh_connections,
                },
            );
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            print_report(&report, report.table(), json);
            Ok(())
        }
        BenchCmd::Custody {
            device,
            threads,
            seconds,
            json,
        } => {
            let devices = open_devices(config)?;
            let device = device.unwrap_or_else(|| config.default_device.clone());
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let report = bench::custody::run(&devices, &device, threads, seconds)?;
            print_report(&report, report.table(), json);
            Ok(())
        }
    }
}
