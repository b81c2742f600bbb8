//! The `hsm-signer` command line: the server, devices, keys, slashing protection and
//! benchmarks. Every failure ends in one clear line and a non-zero exit. `main.rs` only calls
//! [`main`].

mod bench;
mod device;
mod import;
mod keys;
mod participant;
mod serve;
mod slashing;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{default_data_dir, Config};
use crate::keys::provision::{resolve_placement, Placement};
use crate::{Result, SignerError};
use bench::bench_cmd;
use device::device_cmd;
use import::import_cmd;
use keys::keys_cmd;
use participant::participant_cmd;
use serve::{parse_root_arg, serve, ServeChecks};
use slashing::slashing_cmd;

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
    /// Remote participants of a coordinator (distributed keys): check them, make key records.
    #[command(subcommand)]
    Participant(ParticipantCmd),
    /// Slashing protection database (EIP-3076 interchange v5).
    #[command(subcommand)]
    Slashing(SlashingCmd),
    /// Move keys and their slashing history here from another signer.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Print the signing root the signer computes for a sign request (read from a file, or
    /// stdin), without signing or opening anything: to compare a client's `signingRoot` with
    /// ours. The request's network is not checked.
    SigningRoot {
        /// The request body (JSON); default: stdin.
        file: Option<std::path::PathBuf>,
        /// Network whose preset and genesis fork version the root follows (default: the
        /// configuration's).
        #[arg(long)]
        network: Option<String>,
    },
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
enum ParticipantCmd {
    /// Reach every configured participant over mutual TLS and list its accounts.
    Check,
    /// Read the participants' accounts and make the coordinator's key records (one JSON line
    /// each; with --write, into the key store). Views that disagree, do not bind to the
    /// participant that answered, or whose share keys do not interpolate to the key are left
    /// out with a warning.
    Records {
        /// Store the records (keys already present with the same record are left alone).
        #[arg(long)]
        write: bool,
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
    /// Import threshold shares made elsewhere: all of them onto this host's devices (local
    /// mode), or this host's one share of a distributed account (participant mode, --manifest).
    ///
    /// Local mode (--group-pubkey, --threshold, --share-ids, --devices): one EIP-2335 keystore
    /// per share, holding the share's pubkey as distributed-validator tools such as Charon write
    /// them, each sealed on its own device; the shares must recombine to the group key.
    ///
    /// Participant mode (--manifest): one --keystore and its --password-file from `keys split`.
    /// The share is found among the manifest's participants by its public key, the manifest is
    /// checked (1 <= threshold <= n, distinct non-zero ids, distinct https:// origins, share
    /// public keys that recombine to the composite key), and the share is sealed on --device.
    /// The key record holds the composite key, this one share and the account (threshold and
    /// participants), for the distributed signing endpoints.
    ImportShares(keys::ImportSharesArgs),
    /// Split one validator key t-of-n for participants on other hosts (the distributed signing
    /// profile): one EIP-2335 keystore per share, each under its own fresh random password, and
    /// a manifest of the composite key, the threshold and every participant.
    ///
    /// Writes into --out, a new directory (0700): share-<id>.json and share-<id>.password (0600)
    /// for each share, then manifest.json. Give participant <id> its keystore, its password file
    /// and the manifest (the password over another channel if you can) and run `keys
    /// import-shares --manifest` there; then delete the directory: whoever holds t keystores and
    /// their passwords holds the key. Nothing is written until the split is proven: every
    /// share's public key comes from its secret, partial signatures of every t-subset (up to 252
    /// subsets) recombine to a signature under the composite key, and each keystore decrypts to
    /// its share. Passwords are 256 random bits each, so the keystores use PBKDF2 (EIP-2335's
    /// 262144 iterations): a costlier KDF would add nothing.
    ///
    /// A dealer split trusts the machine that splits: the whole secret and every share are in
    /// its memory while it runs, so run it where you would keep the key itself (offline if you
    /// can). A dealer-free distributed key generation (DKG) is a later step.
    Split(keys::SplitKeyArgs),
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
enum ImportCmd {
    /// Migrate from Web3Signer: its key configuration directory (YAML files of type
    /// file-keystore and file-raw) and its slashing protection interchange export. History is
    /// imported first, then the keys are sealed on a device. Refused until --source-stopped
    /// confirms that Web3Signer (and every validator client that used it) has stopped for
    /// good and the interchange was exported after that: the interchange's newest entries are
    /// shown to check it. Nothing is written unless every key decrypts and the interchange is
    /// for this signer's network.
    Web3signer {
        /// Web3Signer's key configuration directory (its --key-store-path).
        #[arg(long)]
        key_config_path: PathBuf,
        /// Web3Signer's slashing protection export (`web3signer eth2 export`), EIP-3076 v5.
        #[arg(long)]
        interchange: PathBuf,
        /// Confirm that the source has stopped signing and the interchange was exported after.
        #[arg(long)]
        source_stopped: bool,
        /// Device to seal the keys on (default: the default device).
        #[arg(long)]
        device: Option<String>,
    },
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
    /// A month of slashing-protection traffic in fast forward with pruning on: database size
    /// and rows at the end, and check latency at the end of day 1 against the end of the last
    /// day, on SQLite and optionally PostgreSQL.
    SlashingLongrun {
        /// Validators (each attests every epoch; one block a slot among them).
        #[arg(long, default_value_t = 10_000)]
        validators: usize,
        /// Simulated days (225 epochs each).
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Epochs kept per validator by pruning (default: `[slashing] keep_epochs`' default).
        #[arg(long, default_value_t = crate::slashing::DEFAULT_KEEP_EPOCHS)]
        keep_epochs: u64,
        /// Simulated minutes between two pruning passes (default: the configured default).
        #[arg(long, default_value_t = crate::slashing::DEFAULT_PRUNE_INTERVAL.as_secs() / 60)]
        prune_interval_minutes: u64,
        /// Epochs measured at the end of day 1 and at the end of the last day.
        #[arg(long, default_value_t = 20)]
        measure_epochs: u64,
        /// Concurrent callers in the measured epochs.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Attestations per group in the fast-forwarded epochs.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Also simulate on this PostgreSQL server (postgres://…; its role needs CREATEDB).
        #[arg(long)]
        postgres: Option<String>,
        /// With --postgres: simulate on PostgreSQL only (SQLite's month takes most of an hour).
        #[arg(long, requires = "postgres")]
        postgres_only: bool,
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
    /// The batch endpoint: N AGGREGATION_SLOT signatures through one HTTP batch against N
    /// single requests and raw blst, and block latency while the seed's herd arrives as batches,
    /// in one run.
    Batch {
        /// Keys, and signatures per measurement.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Keys per batch in the herd (each key's selection proof and attestation).
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
        /// Blocks signed in each block phase (idle, herd).
        #[arg(long, default_value_t = 100)]
        blocks: usize,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Threshold signing across hosts: a 2-of-3 key held by three participant processes
    /// (`serve`, mutual TLS 1.3 on loopback, each with its own tokens and slashing protection)
    /// against local 2-of-3 and 1-of-1 keys, in one run: throughput, idle block latency and
    /// block latency under the seed's herd, every signature verified.
    Distributed {
        /// Keys per shape (each signs a proof, a registration and an attestation per herd).
        #[arg(long, default_value_t = 64)]
        keys: usize,
        /// Seconds of the throughput measurement, per shape.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Requests kept in flight during the throughput measurement.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Blocks signed one after another on the idle setup, per shape (before and after the
        /// herds).
        #[arg(long, default_value_t = 100)]
        blocks: usize,
        /// Shortest time between the starts of two blocks while a herd runs, milliseconds (a
        /// block never starts before the one before it is signed).
        #[arg(long, default_value_t = 30)]
        block_interval_ms: u64,
        /// Herds per shape (their blocks pooled).
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Partials each participant may have in flight from the coordinator (default: the
        /// `[[participant]]` default).
        #[arg(long)]
        max_in_flight: Option<usize>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// The signer over the wire: the real server in a process of its own (N keys on SoftHSM,
    /// SQLite slashing protection, PostgreSQL with --postgres) driven by a load generator over
    /// HTTP/1.1 keep-alive connections, against raw blst and the custody path in the same run:
    /// AGGREGATION_SLOT and durable ATTESTATION per second, p50/p99, CPU per request by
    /// thread and stage, start-up time; every signature verified.
    Http {
        /// Keys on the server.
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// Seconds each workload is measured (after one of warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Connections, each with one request in flight.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// PostgreSQL connection string: durable ATTESTATION on PostgreSQL too.
        #[arg(long)]
        postgres: Option<String>,
        /// The server's `[slashing] group_commit_wait_us` (default: its default).
        #[arg(long)]
        group_commit_wait_us: Option<u64>,
        /// Write the latency distributions as an SVG here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Internal to `bench distributed` and `bench http`, run by them on a server's data
    /// directory: seal the keys or participant shares read from standard input (JSON lines) on
    /// the default device.
    #[command(hide = true)]
    SealKeys,
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

/// Parse the command line, run the command, and turn its outcome into the exit status.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,hsm_signer=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The process's rustls provider: ring (reqwest's clients need one; ours configure TLS
    // with ring explicitly, and nothing here uses aws-lc-rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        if on_argv && crate::slashing::connection_string_has_password(&db) {
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
        config.slashing_db = Some(crate::config::read_secret_file(file)?);
    }
    if crate::devices::relocate_embedded(&config)? {
        eprintln!(
            "the data directory {} was moved or restored: its SoftHSM configuration now names \
             the tokens under it",
            config.data_dir.display()
        );
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
                crate::duties::check_beacon_node_url(&url)?;
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
        Command::Participant(cmd) => participant_cmd(&config, cmd),
        Command::Slashing(cmd) => slashing_cmd(&config, cmd),
        Command::Import(cmd) => import_cmd(&config, cmd),
        Command::Bench(cmd) => bench_cmd(&config, cmd),
        Command::SigningRoot { file, network } => {
            let network = serve::resolve_network(network.as_deref().unwrap_or(&config.network))?;
            let body = match &file {
                Some(path) => std::fs::read(path).map_err(SignerError::io(path))?,
                None => {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                        .map_err(|e| SignerError::System(format!("reading stdin: {e}")))?;
                    body
                }
            };
            let request = crate::consensus::SignRequest::from_json(&body, network.preset)
                .map_err(|e| SignerError::Invalid(e.to_string()))?;
            let root = request
                .signing_root(&network)
                .map_err(|e| SignerError::Invalid(e.to_string()))?;
            let supplied = request.supplied_signing_root().map(|r| r.to_string());
            println!(
                "{}",
                serde_json::json!({
                    "type": request.message_type().as_str(),
                    "signing_root": root.to_string(),
                    "supplied_signing_root": supplied,
                    "matches": supplied.as_deref().map(|s| s == root.to_string()),
                })
            );
            Ok(())
        }
    }
}
