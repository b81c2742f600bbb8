//! A client of the standard Beacon API, for exactly what the precompute needs: genesis, spec,
//! fork schedule, validator indices, attester and sync committee duties. Every answer is parsed
//! into typed values with bounded size and checked for sense; anything else is a
//! [`BeaconError`], never a panic.

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::consensus::wire::{self, Bytes};
use crate::keys::PublicKeyBytes;

/// Largest answer read from the beacon node. Validator lookups are filtered to our own keys, so
/// even 10,000 validators stay far below this.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The spec endpoint.
const SPEC_PATH: &str = "/eth/v1/config/spec";
/// Public keys per validator lookup (keeps the query string short).
const LOOKUP_BATCH: usize = 64;

/// Why a beacon node request did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BeaconError {
    /// Not reachable, timed out, or the connection broke.
    #[error("beacon node {path}: {message}")]
    Transport {
        /// The endpoint.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// An HTTP status other than 2xx.
    #[error("beacon node {path}: HTTP {status}")]
    Status {
        /// The endpoint.
        path: String,
        /// The status.
        status: u16,
    },
    /// The node is on another network than the signer's.
    #[error("{0}")]
    OtherNetwork(#[from] super::identity::NetworkDisagreement),
    /// An answer that is not the standard shape, or contradicts itself.
    #[error("beacon node {path}: nonsense answer: {message}")]
    Nonsense {
        /// The endpoint.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// `/eth/v1/beacon/genesis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Genesis {
    /// Unix time of slot 0.
    pub genesis_time: u64,
    /// The genesis validators root.
    pub genesis_validators_root: [u8; 32],
    /// The genesis fork version.
    pub genesis_fork_version: [u8; 4],
}

/// What the precompute needs of `/eth/v1/config/spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Slot length.
    pub seconds_per_slot: u64,
    /// Epoch length.
    pub slots_per_epoch: u64,
    /// Sync committee period length (Altair on; 256 on mainnet).
    pub epochs_per_sync_committee_period: u64,
    /// `SYNC_COMMITTEE_SIZE`.
    pub sync_committee_size: u64,
    /// Members of a subcommittee: `SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT`.
    pub sync_subcommittee_size: u64,
}

/// One entry of `/eth/v1/config/fork_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForkEntry {
    /// The version before `epoch`.
    pub previous_version: [u8; 4],
    /// The version from `epoch` on.
    pub current_version: [u8; 4],
    /// The fork's activation epoch.
    pub epoch: u64,
}

/// An attester duty (the fields the precompute uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttesterDuty {
    /// The validator.
    pub pubkey: PublicKeyBytes,
    /// Its index.
    pub validator_index: u64,
    /// The slot it attests in.
    pub slot: u64,
}

/// `POST /eth/v1/validator/duties/attester/{epoch}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttesterDuties {
    /// The block root the duties depend on; a change means they were re-computed.
    pub dependent_root: [u8; 32],
    /// The duties.
    pub duties: Vec<AttesterDuty>,
}

/// A sync committee duty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncDuty {
    /// The validator.
    pub pubkey: PublicKeyBytes,
    /// Its index.
    pub validator_index: u64,
    /// Its positions in the sync committee.
    pub validator_sync_committee_indices: Vec<u64>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct U64(#[serde(deserialize_with = "wire::u64")] u64);

#[derive(Deserialize)]
struct GenesisWire {
    #[serde(deserialize_with = "wire::u64")]
    genesis_time: u64,
    genesis_validators_root: Bytes<32>,
    genesis_fork_version: Bytes<4>,
}

#[derive(Deserialize)]
struct ForkWire {
    previous_version: Bytes<4>,
    current_version: Bytes<4>,
    #[serde(deserialize_with = "wire::u64")]
    epoch: u64,
}

#[derive(Deserialize)]
struct ValidatorWire {
    #[serde(deserialize_with = "wire::u64")]
    index: u64,
    validator: ValidatorInner,
}

#[derive(Deserialize)]
struct ValidatorInner {
    pubkey: Bytes<48>,
}

#[derive(Deserialize)]
struct AttesterDutiesWire {
    dependent_root: Bytes<32>,
    data: Vec<AttesterDutyWire>,
}

#[derive(Deserialize)]
struct AttesterDutyWire {
    pubkey: Bytes<48>,
    #[serde(deserialize_with = "wire::u64")]
    validator_index: u64,
    #[serde(deserialize_with = "wire::u64")]
    slot: u64,
}

#[derive(Deserialize)]
struct SyncDutyWire {
    pubkey: Bytes<48>,
    #[serde(deserialize_with = "wire::u64")]
    validator_index: u64,
    validator_sync_committee_indices: Vec<U64>,
}

/// A beacon node at one base URL.
#[derive(Debug, Clone)]
pub(crate) struct BeaconNode {
    client: reqwest::Client,
    base: String,
}

impl BeaconNode {
    /// A client of the node at `base` (`http://host:port`), each request bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<BeaconNode, BeaconError> {
        // reqwest builds a TLS configuration even for plain HTTP, from the process's default
        // rustls provider (ours is ring; `cli::main` installs it too). Installed already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| BeaconError::Transport {
                path: String::new(),
                message: e.to_string(),
            })?;
        Ok(BeaconNode {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, BeaconError> {
        let url = format!("{}{path}", self.base);
        // Errors name the endpoint, not its query (a lookup's query lists 64 public keys).
        let path = path.split('?').next().unwrap_or(path);
        let transport = |e: reqwest::Error| BeaconError::Transport {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let request = match body {
            None => self.client.get(&url),
            Some(b) => self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b),
        };
        let mut response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BeaconError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(BeaconError::Nonsense {
                    path: path.to_owned(),
                    message: format!("answer larger than {MAX_BODY} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| BeaconError::Nonsense {
            path: path.to_owned(),
            message: crate::consensus::clip(&e.to_string()),
        })
    }

    fn nonsense(path: &str, message: impl Into<String>) -> BeaconError {
        BeaconError::Nonsense {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// `GET /eth/v1/beacon/genesis`.
    pub async fn genesis(&self) -> Result<Genesis, BeaconError> {
        let g: Data<GenesisWire> = self.call("/eth/v1/beacon/genesis", None).await?;
        Ok(Genesis {
            genesis_time: g.data.genesis_time,
            genesis_validators_root: g.data.genesis_validators_root.0,
            genesis_fork_version: g.data.genesis_fork_version.0,
        })
    }

    /// `GET /eth/v1/config/spec` as the node gives it: every key and its value.
    pub(crate) async fn spec_map(&self) -> Result<HashMap<String, serde_json::Value>, BeaconError> {
        let s: Data<HashMap<String, serde_json::Value>> = self.call(SPEC_PATH, None).await?;
        Ok(s.data)
    }

    /// The unsigned integer `key` of a spec answer, if present.
    pub(crate) fn spec_u64(
        spec: &HashMap<String, serde_json::Value>,
        key: &str,
    ) -> Result<Option<u64>, BeaconError> {
        match spec.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(v)) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Self::nonsense(SPEC_PATH, format!("{key} is not a uint64"))),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Self::nonsense(SPEC_PATH, format!("{key} is not a uint64"))),
            Some(_) => Err(Self::nonsense(SPEC_PATH, format!("{key} is not a uint64"))),
        }
    }

    /// What the precompute needs of a spec answer, checked for sense.
    pub(crate) fn parse_spec(
        spec: &HashMap<String, serde_json::Value>,
    ) -> Result<Spec, BeaconError> {
        const PATH: &str = SPEC_PATH;
        let get = |key: &str| Self::spec_u64(spec, key);
        let seconds_per_slot = match (get("SECONDS_PER_SLOT")?, get("SLOT_DURATION_MS")?) {
            (Some(s), _) => s,
            (None, Some(ms)) if ms % 1000 == 0 => ms / 1000,
            _ => return Err(Self::nonsense(PATH, "no whole SECONDS_PER_SLOT")),
        };
        let slots_per_epoch =
            get("SLOTS_PER_EPOCH")?.ok_or_else(|| Self::nonsense(PATH, "no SLOTS_PER_EPOCH"))?;
        let period = get("EPOCHS_PER_SYNC_COMMITTEE_PERIOD")?.unwrap_or(256);
        let size = get("SYNC_COMMITTEE_SIZE")?.unwrap_or(512);
        let subnets = get("SYNC_COMMITTEE_SUBNET_COUNT")?.unwrap_or(4);
        // Bounds: a slot of at most a day and an epoch of at most 2^16 slots keep every slot
        // computation far from overflow; anything outside is not a chain we can serve.
        if !(1..=86_400).contains(&seconds_per_slot)
            || !(1..=65_536).contains(&slots_per_epoch)
            || !(1..=65_536).contains(&period)
            || subnets == 0
            || size < subnets
            || size % subnets != 0
        {
            return Err(Self::nonsense(
                PATH,
                "slot, epoch or sync committee sizes out of range",
            ));
        }
        Ok(Spec {
            seconds_per_slot,
            slots_per_epoch,
            epochs_per_sync_committee_period: period,
            sync_committee_size: size,
            sync_subcommittee_size: size / subnets,
        })
    }

    /// `GET /eth/v1/config/fork_schedule`, checked to be non-empty and in epoch order.
    pub async fn fork_schedule(&self) -> Result<Vec<ForkEntry>, BeaconError> {
        const PATH: &str = "/eth/v1/config/fork_schedule";
        let f: Data<Vec<ForkWire>> = self.call(PATH, None).await?;
        let forks: Vec<ForkEntry> = f
            .data
            .into_iter()
            .map(|f| ForkEntry {
                previous_version: f.previous_version.0,
                current_version: f.current_version.0,
                epoch: f.epoch,
            })
            .collect();
        if forks.is_empty() || forks.windows(2).any(|w| w[0].epoch > w[1].epoch) {
            return Err(Self::nonsense(PATH, "empty, or not in epoch order"));
        }
        Ok(forks)
    }

    /// Indices of those of `pubkeys` the chain knows, from
    /// `GET /eth/v1/beacon/states/head/validators?id=…`. Answers for keys we did not ask about
    /// are refused as nonsense.
    pub(crate) async fn validator_indices(
        &self,
        pubkeys: &[PublicKeyBytes],
    ) -> Result<HashMap<PublicKeyBytes, u64>, BeaconError> {
        let mut out = HashMap::new();
        for batch in pubkeys.chunks(LOOKUP_BATCH) {
            // One `id=` per key: the Beacon API's array query (Lighthouse also takes a comma
            // list, Lodestar 1.5.1 answers a comma list with no validators at all).
            let ids: Vec<String> = batch.iter().map(|pk| format!("id={pk}")).collect();
            let path = format!("/eth/v1/beacon/states/head/validators?{}", ids.join("&"));
            let v: Data<Vec<ValidatorWire>> = self.call(&path, None).await?;
            for entry in v.data {
                let pk = PublicKeyBytes(entry.validator.pubkey.0);
                if !batch.contains(&pk) {
                    return Err(Self::nonsense(
                        "/eth/v1/beacon/states/head/validators",
                        "a validator that was not asked for",
                    ));
                }
                out.insert(pk, entry.index);
            }
        }
        Ok(out)
    }

    /// `POST /eth/v1/validator/duties/attester/{epoch}` for `indices`. Duties outside `epoch`
    /// (by `slots_per_epoch`) are refused as nonsense.
    pub(crate) async fn attester_duties(
        &self,
        epoch: u64,
        indices: &[u64],
        slots_per_epoch: u64,
    ) -> Result<AttesterDuties, BeaconError> {
        let path = format!("/eth/v1/validator/duties/attester/{epoch}");
        let body = index_body(indices);
        let d: AttesterDutiesWire = self.call(&path, Some(body)).await?;
        let duties = d
            .data
            .into_iter()
            .map(|w| AttesterDuty {
                pubkey: PublicKeyBytes(w.pubkey.0),
                validator_index: w.validator_index,
                slot: w.slot,
            })
            .collect();
        let duties = checked_attester_duties(duties, epoch, slots_per_epoch, indices)
            .map_err(|m| Self::nonsense(&path, m))?;
        Ok(AttesterDuties {
            dependent_root: d.dependent_root.0,
            duties,
        })
    }

    /// `POST /eth/v1/validator/duties/sync/{epoch}` for `indices`.
    pub(crate) async fn sync_duties(
        &self,
        epoch: u64,
        indices: &[u64],
    ) -> Result<Vec<SyncDuty>, BeaconError> {
        let path = format!("/eth/v1/validator/duties/sync/{epoch}");
        let d: Data<Vec<SyncDutyWire>> = self.call(&path, Some(index_body(indices))).await?;
        Ok(d.data
            .into_iter()
            .map(|w| SyncDuty {
                pubkey: PublicKeyBytes(w.pubkey.0),
                validator_index: w.validator_index,
                validator_sync_committee_indices: w
                    .validator_sync_committee_indices
                    .into_iter()
                    .map(|U64(i)| i)
                    .collect(),
            })
            .collect())
    }
}

/// A JSON array of indices as decimal strings, as the Beacon API takes them.
fn index_body(indices: &[u64]) -> Vec<u8> {
    let strings: Vec<String> = indices.iter().map(u64::to_string).collect();
    serde_json::to_vec(&strings).unwrap_or_default()
}

/// A node's attester duties as the specs allow them: each in `epoch`, for a validator that was
/// asked about, at most one per validator (every validator attests once per epoch). A node that
/// answers otherwise could make the precompute sign up to an epoch's slots per validator.
fn checked_attester_duties(
    duties: Vec<AttesterDuty>,
    epoch: u64,
    slots_per_epoch: u64,
    asked: &[u64],
) -> Result<Vec<AttesterDuty>, &'static str> {
    let asked: std::collections::HashSet<u64> = asked.iter().copied().collect();
    let mut seen = std::collections::HashSet::with_capacity(duties.len());
    for d in &duties {
        if d.slot.checked_div(slots_per_epoch) != Some(epoch) {
            return Err("a duty outside the epoch asked for");
        }
        if !asked.contains(&d.validator_index) {
            return Err("a duty of a validator that was not asked about");
        }
        if !seen.insert(d.validator_index) {
            return Err("two duties of one validator in one epoch");
        }
    }
    Ok(duties)
}

#[cfg(test)]
mod attester_duty_tests {
    use super::*;

    fn duty(index: u64, slot: u64) -> AttesterDuty {
        AttesterDuty {
            pubkey: PublicKeyBytes([index as u8; 48]),
            validator_index: index,
            slot,
        }
    }

    #[test]
    fn one_duty_per_asked_validator_in_the_epoch_or_the_answer_is_nonsense() {
        let asked = [7, 8, 9];
        let good = vec![duty(7, 64), duty(9, 95)];
        assert_eq!(
            checked_attester_duties(good.clone(), 2, 32, &asked),
            Ok(good)
        );
        for (bad, why) in [
            (
                vec![duty(7, 64), duty(7, 65)],
                "two duties of one validator in one epoch",
            ),
            (vec![duty(7, 96)], "a duty outside the epoch asked for"),
            (
                vec![duty(5, 64)],
                "a duty of a validator that was not asked about",
            ),
        ] {
            assert_eq!(checked_attester_duties(bad, 2, 32, &asked), Err(why));
        }
    }
}
