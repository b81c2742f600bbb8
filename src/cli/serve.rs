//! `hsm-signer serve`: the network it serves (configured, cross-checked with a beacon node),
//! the checks made before anything opens, then the signer (`app::Signer::start`) behind HTTP.

use crate::api;
use crate::app::Signer;
use crate::config::Config;
use crate::consensus::Network;
use crate::{Result, SignerError};

pub(super) fn resolve_network(name: &str) -> Result<Network> {
    let path = std::path::Path::new(name);
    if path.is_file() {
        return Network::from_config_file(path).map_err(|e| SignerError::Config(e.to_string()));
    }
    Network::preset(name).ok_or_else(|| {
        SignerError::Config(format!(
            "unknown network {name:?}: use {}, or a config.yaml path",
            crate::consensus::BUILT_IN_NAMES
        ))
    })
}

pub(super) fn parse_root_arg(text: &str) -> Result<[u8; 32]> {
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
pub(super) fn configured_network(config: &Config) -> Result<Network> {
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
    use crate::duties::beacon::BeaconNode;
    use crate::duties::identity::{self, NodeCheck};
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
            crate::consensus::GVR_FILE_NAME
        )));
    }
    Ok(network)
}

/// What `serve` checks before signing.
pub(super) struct ServeChecks {
    pub(super) slashing_protection: bool,
    pub(super) network_check: bool,
}

pub(super) fn serve(config: &Config, listen: Option<String>, checks: ServeChecks) -> Result<()> {
    let protect = checks.slashing_protection;
    let runtime = crate::scheduler::runtime()
        .map_err(|e| SignerError::System(format!("starting the runtime: {e}")))?;
    let network = establish_network(config, &runtime, checks.network_check)?;
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
    if !protect {
        eprintln!(
            "WARNING: slashing protection is OFF: blocks and attestations are signed unchecked"
        );
    }
    if config.server.stage_cpu == Some(true) {
        crate::metrics::enable_stage_cpu();
    }
    let (network_name, preset) = (network.name.clone(), network.preset);
    let started = Signer::start(config, network, protect)?;
    let mut signer = started.signer;
    signer.network_check = checks.network_check;
    let keys = signer.runtime().keys.len();
    eprintln!(
        "data directory {}; {} key(s) loaded ({} failed), {} device(s), network {} ({} preset)",
        config.data_dir.display(),
        keys,
        started.key_errors,
        config.devices.len(),
        network_name,
        preset
    );
    if started.deleted > 0 {
        eprintln!(
            "{} key file(s) ignored: deleted through the Keymanager API",
            started.deleted
        );
    }
    let loaded: std::collections::HashSet<_> =
        signer.runtime().keys.iter().map(|k| k.pubkey).collect();
    let unknown = policy.keys_not_loaded(&loaded);
    if unknown > 0 {
        eprintln!("signing policy: {unknown} key(s) it names are not loaded (yet)");
    }
    let precompute = match &config.beacon_node_url {
        Some(url) => {
            let service = signer
                .enable_precompute(url)
                .map_err(|e| SignerError::Config(format!("beacon node {url}: {e}")))?;
            eprintln!("selection proofs precomputed from the duties of beacon node {url}");
            Some(runtime.spawn(service.run()))
        }
        None => None,
    };
    let state = api::AppState::serving(signer)
        .with_api_token(token)
        .with_policy(policy);
    let served = runtime.block_on(api::serve_with(state, addr, tls));
    if let Some(task) = precompute {
        // Cancel-safe: aborting drops its signing futures, which leave the scheduler's queue.
        task.abort();
    }
    served.map_err(|e| SignerError::System(format!("HTTP server on {addr}: {e}")))
}
