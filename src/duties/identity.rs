//! Is the beacon node on our network? The signer's network (built in, or a `config.yaml`) is
//! compared with what the node says of its chain: genesis, spec and fork schedule. Real nodes
//! differ in details that do not matter, and the comparison lets every correct answer pass:
//! `/eth/v1/beacon/genesis` may give the `GENESIS_FORK_VERSION` or the version in force at
//! genesis (Lodestar answers the altair version on a chain with altair from epoch 0); a node
//! may leave unscheduled forks out of its spec or list them at `FAR_FUTURE_EPOCH`; several forks
//! may share an epoch. What does matter — the genesis validators root, genesis time, slot and
//! epoch length, and every scheduled fork's version and epoch — must agree, and each
//! disagreement is named.

use std::collections::HashMap;

use super::beacon::{BeaconError, BeaconNode, ForkEntry, Genesis};
use crate::consensus::{GenesisTimeSource, Network, FAR_FUTURE_EPOCH, FORK_NAMES};

/// What a beacon node says of its chain.
#[derive(Debug, Clone)]
pub(crate) struct NodeChain {
    /// `/eth/v1/beacon/genesis`.
    pub genesis: Genesis,
    /// `/eth/v1/config/spec`, every key.
    pub spec: HashMap<String, serde_json::Value>,
    /// `/eth/v1/config/fork_schedule`.
    pub forks: Vec<ForkEntry>,
}

impl NodeChain {
    /// Read genesis, spec and fork schedule from `beacon`, each checked for sense: a genesis
    /// more than a year ahead, or slot, epoch or committee sizes out of range, are
    /// [`BeaconError::Nonsense`].
    pub async fn read(beacon: &BeaconNode) -> Result<NodeChain, BeaconError> {
        let genesis = beacon.genesis().await?;
        // A real chain announces genesis days, not years, ahead; anything further would also
        // overflow the slot clock's arithmetic.
        const MAX_GENESIS_AHEAD_SECS: u64 = 366 * 86_400;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if genesis.genesis_time > now.saturating_add(MAX_GENESIS_AHEAD_SECS) {
            return Err(BeaconError::Nonsense {
                path: "/eth/v1/beacon/genesis".into(),
                message: format!(
                    "genesis time {} is more than a year ahead",
                    genesis.genesis_time
                ),
            });
        }
        let spec = beacon.spec_map().await?;
        BeaconNode::parse_spec(&spec)?;
        Ok(NodeChain {
            genesis,
            spec,
            forks: beacon.fork_schedule().await?,
        })
    }
}

/// The node is on another network than the signer's: every point on which they disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the beacon node is not on this signer's network {network}: {}", .points.join("; "))]
pub(crate) struct NetworkDisagreement {
    /// The signer's network, by name.
    pub network: String,
    /// What disagrees, one point each.
    pub points: Vec<String>,
}

fn hex4(v: &[u8; 4]) -> String {
    format!("0x{}", hex::encode(v))
}

/// Compare `network` with `node`'s chain. On agreement, the network completed with what only
/// the chain knows: its genesis validators root (when the network had none) and its real
/// genesis time (when the network had only the config's estimate).
pub(crate) fn reconcile(
    network: &Network,
    node: &NodeChain,
) -> Result<Network, NetworkDisagreement> {
    let mut points = Vec::new();
    let g = &node.genesis;
    let mut out = network.clone();

    match network.genesis_validators_root {
        Some(ours) if ours != g.genesis_validators_root => points.push(format!(
            "genesis validators root: the signer's is 0x{}, the node's 0x{}",
            hex::encode(ours),
            hex::encode(g.genesis_validators_root)
        )),
        Some(_) => {}
        None => out.genesis_validators_root = Some(g.genesis_validators_root),
    }

    match (network.genesis_time, network.genesis_time_source) {
        (Some(ours), GenesisTimeSource::Chain) if ours != g.genesis_time => points.push(format!(
            "genesis time: the signer's is {ours}, the node's {}",
            g.genesis_time
        )),
        _ => {
            out.genesis_time = Some(g.genesis_time);
            out.genesis_time_source = GenesisTimeSource::Chain;
        }
    }

    let at_genesis = network.fork_at(0).version;
    if g.genesis_fork_version != network.genesis_fork_version
        && g.genesis_fork_version != at_genesis
    {
        points.push(format!(
            "genesis fork version: the node's is {}, the signer's GENESIS_FORK_VERSION is {} \
             (and {} at epoch 0)",
            hex4(&g.genesis_fork_version),
            hex4(&network.genesis_fork_version),
            hex4(&at_genesis)
        ));
    }

    compare_spec(network, &node.spec, &mut points);

    for entry in &node.forks {
        if entry.epoch == FAR_FUTURE_EPOCH {
            continue;
        }
        let known = network
            .forks
            .iter()
            .any(|f| f.version == entry.current_version && f.epoch == entry.epoch);
        if !known {
            points.push(format!(
                "fork schedule: the node has fork version {} from epoch {}, the signer's network \
                 has {} there",
                hex4(&entry.current_version),
                entry.epoch,
                hex4(&network.fork_at(entry.epoch).version)
            ));
        }
    }

    if points.is_empty() {
        Ok(out)
    } else {
        Err(NetworkDisagreement {
            network: network.name.clone(),
            points,
        })
    }
}

/// Slot and epoch length, the genesis fork version and every fork the spec answer names.
fn compare_spec(
    network: &Network,
    spec: &HashMap<String, serde_json::Value>,
    points: &mut Vec<String>,
) {
    let number = |key: &str| BeaconNode::spec_u64(spec, key).ok().flatten();
    let version = |key: &str| {
        spec.get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|h| {
                let mut out = [0u8; 4];
                hex::decode_to_slice(h, &mut out).ok().map(|_| out)
            })
    };
    let seconds = number("SECONDS_PER_SLOT").or_else(|| {
        number("SLOT_DURATION_MS")
            .filter(|ms| ms % 1000 == 0)
            .map(|ms| ms / 1000)
    });
    match seconds {
        Some(s) if s != network.seconds_per_slot => points.push(format!(
            "slot length: the signer's is {} s, the node's {s} s",
            network.seconds_per_slot
        )),
        Some(_) => {}
        None => points.push("slot length: the node's spec has no SECONDS_PER_SLOT".into()),
    }
    match number("SLOTS_PER_EPOCH") {
        Some(n) if n != network.slots_per_epoch => points.push(format!(
            "epoch length: the signer's is {} slots, the node's {n}",
            network.slots_per_epoch
        )),
        Some(_) => {}
        None => points.push("epoch length: the node's spec has no SLOTS_PER_EPOCH".into()),
    }
    // The preset sizes the containers the signer parses: a node of another preset sends
    // requests the signer would refuse as malformed.
    if let Some(base) = spec.get("PRESET_BASE").and_then(|v| v.as_str()) {
        if !base.eq_ignore_ascii_case(network.preset.name()) {
            points.push(format!(
                "preset: the signer's is {}, the node's {}",
                network.preset.name(),
                crate::consensus::clip(base)
            ));
        }
    }
    for (key, ours) in [
        ("SYNC_COMMITTEE_SIZE", network.preset.sync_committee_size()),
        (
            "MAX_COMMITTEES_PER_SLOT",
            network.preset.max_committees_per_slot(),
        ),
        // The same in every preset (specs/altair/validator.md); the precompute's subcommittees
        // follow it.
        ("SYNC_COMMITTEE_SUBNET_COUNT", 4),
    ] {
        if let Some(theirs) = number(key).filter(|n| *n != ours) {
            points.push(format!(
                "{key}: the signer's preset has {ours}, the node's {theirs}"
            ));
        }
    }
    if let Some(v) = version("GENESIS_FORK_VERSION") {
        if v != network.genesis_fork_version {
            points.push(format!(
                "GENESIS_FORK_VERSION: the signer's is {}, the node's {}",
                hex4(&network.genesis_fork_version),
                hex4(&v)
            ));
        }
    }
    for name in &FORK_NAMES[1..] {
        let upper = name.to_ascii_uppercase();
        let theirs = number(&format!("{upper}_FORK_EPOCH"))
            .filter(|e| *e != FAR_FUTURE_EPOCH)
            .map(|e| (version(&format!("{upper}_FORK_VERSION")), e));
        let ours = network.forks.iter().find(|f| f.name == *name);
        match (ours, theirs) {
            (None, None) => {}
            (Some(f), None) => {
                // A node too old to know a fork leaves it out: only a node that names the fork
                // and leaves it unscheduled disagrees.
                if spec.contains_key(&format!("{upper}_FORK_EPOCH")) {
                    points.push(format!(
                        "{upper}: the signer schedules it at epoch {}, the node does not",
                        f.epoch
                    ));
                }
            }
            (None, Some((_, e))) => points.push(format!(
                "{upper}: the node schedules it at epoch {e}, the signer's network does not"
            )),
            (Some(f), Some((v, e))) => {
                if f.epoch != e {
                    points.push(format!(
                        "{upper}_FORK_EPOCH: the signer's is {}, the node's {e}",
                        f.epoch
                    ));
                }
                if let Some(v) = v.filter(|v| *v != f.version) {
                    points.push(format!(
                        "{upper}_FORK_VERSION: the signer's is {}, the node's {}",
                        hex4(&f.version),
                        hex4(&v)
                    ));
                }
            }
        }
    }
}

/// What [`confirm`] found.
#[derive(Debug)]
pub(crate) enum NodeCheck {
    /// The node is on the network; here it is, completed by [`reconcile`].
    Confirmed(Network),
    /// The node gave no usable answer within the time allowed; the last error.
    Unreachable(BeaconError),
}

/// Ask the node at `beacon` until it answers (every 2 s, for at most `patience`), then
/// [`reconcile`]. A node that answers and disagrees is an error at once.
pub(crate) async fn confirm(
    beacon: &BeaconNode,
    network: &Network,
    patience: std::time::Duration,
) -> Result<NodeCheck, NetworkDisagreement> {
    let give_up = tokio::time::Instant::now() + patience;
    loop {
        match NodeChain::read(beacon).await {
            Ok(node) => return reconcile(network, &node).map(NodeCheck::Confirmed),
            Err(e) if tokio::time::Instant::now() >= give_up => {
                return Ok(NodeCheck::Unreachable(e))
            }
            Err(e) => {
                tracing::info!(error = %e, "waiting for the beacon node to confirm the network");
                let next = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                tokio::time::sleep_until(next.min(give_up)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEV_CONFIG: &str = "\
PRESET_BASE: mainnet
CONFIG_NAME: dev
MIN_GENESIS_TIME: 1000
GENESIS_DELAY: 0
GENESIS_FORK_VERSION: 0x00000000
ALTAIR_FORK_VERSION: 0x01000000
ALTAIR_FORK_EPOCH: 0
BELLATRIX_FORK_VERSION: 0x02000000
BELLATRIX_FORK_EPOCH: 18446744073709551615
SECONDS_PER_SLOT: 4
";

    /// What a dev node of `DEV_CONFIG` answers, as Lodestar 1.5.1 does: the altair version as
    /// its genesis fork version, the unscheduled bellatrix at `FAR_FUTURE_EPOCH`.
    fn dev_node() -> NodeChain {
        let spec: HashMap<String, serde_json::Value> = serde_json::from_value(json!({
            "SECONDS_PER_SLOT": "4", "SLOTS_PER_EPOCH": "32",
            "GENESIS_FORK_VERSION": "0x00000000",
            "ALTAIR_FORK_VERSION": "0x01000000", "ALTAIR_FORK_EPOCH": "0",
            "BELLATRIX_FORK_VERSION": "0x02000000",
            "BELLATRIX_FORK_EPOCH": "18446744073709551615",
        }))
        .unwrap();
        NodeChain {
            genesis: Genesis {
                genesis_time: 1234,
                genesis_validators_root: [7; 32],
                genesis_fork_version: [1, 0, 0, 0],
            },
            spec,
            forks: vec![
                ForkEntry {
                    previous_version: [0; 4],
                    current_version: [0; 4],
                    epoch: 0,
                },
                ForkEntry {
                    previous_version: [0; 4],
                    current_version: [1, 0, 0, 0],
                    epoch: 0,
                },
            ],
        }
    }

    #[test]
    fn a_correct_node_passes_and_completes_the_network() {
        let network = Network::from_config_str(DEV_CONFIG).unwrap();
        assert_eq!(network.genesis_validators_root, None);
        let done = reconcile(&network, &dev_node()).unwrap();
        assert_eq!(done.genesis_validators_root, Some([7; 32]));
        assert_eq!(done.genesis_time, Some(1234));
        assert_eq!(done.genesis_time_source, GenesisTimeSource::Chain);
        // The node may also give the config's GENESIS_FORK_VERSION itself.
        let mut node = dev_node();
        node.genesis.genesis_fork_version = [0; 4];
        assert!(reconcile(&network, &node).is_ok());
        // …and leave forks it does not know out of its spec.
        node.spec.remove("BELLATRIX_FORK_EPOCH");
        assert!(reconcile(&network, &node).is_ok());
    }

    #[test]
    fn every_disagreement_is_named() {
        let network = Network::from_config_str(DEV_CONFIG)
            .unwrap()
            .with_genesis_validators_root([8; 32])
            .unwrap();
        let mut node = dev_node();
        node.genesis.genesis_fork_version = [9, 9, 9, 9];
        node.spec.insert("SECONDS_PER_SLOT".into(), json!("12"));
        node.spec.insert("SLOTS_PER_EPOCH".into(), json!("8"));
        node.spec.insert("BELLATRIX_FORK_EPOCH".into(), json!("3"));
        node.spec.insert("PRESET_BASE".into(), json!("minimal"));
        node.spec.insert("SYNC_COMMITTEE_SIZE".into(), json!("32"));
        node.spec
            .insert("SYNC_COMMITTEE_SUBNET_COUNT".into(), json!("32"));
        node.forks.push(ForkEntry {
            previous_version: [1, 0, 0, 0],
            current_version: [2, 0, 0, 0],
            epoch: 3,
        });
        let err = reconcile(&network, &node).unwrap_err();
        let text = err.to_string();
        for needle in [
            "genesis validators root: the signer's is 0x0808",
            "the node's 0x0707",
            "genesis fork version: the node's is 0x09090909",
            "slot length: the signer's is 4 s, the node's 12 s",
            "epoch length: the signer's is 32 slots, the node's 8",
            "BELLATRIX: the node schedules it at epoch 3",
            "fork schedule: the node has fork version 0x02000000 from epoch 3",
            "preset: the signer's is mainnet, the node's minimal",
            "SYNC_COMMITTEE_SIZE: the signer's preset has 512, the node's 32",
            "SYNC_COMMITTEE_SUBNET_COUNT: the signer's preset has 4, the node's 32",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert_eq!(err.points.len(), 9, "{text}");
    }

    #[test]
    fn a_built_in_network_keeps_its_genesis_time() {
        let mainnet = Network::preset("mainnet").unwrap();
        let mut node = dev_node();
        node.genesis.genesis_validators_root = mainnet.genesis_validators_root.unwrap();
        let err = reconcile(&mainnet, &node).unwrap_err().to_string();
        assert!(
            err.contains("genesis time: the signer's is 1606824023, the node's 1234"),
            "{err}"
        );
    }
}
