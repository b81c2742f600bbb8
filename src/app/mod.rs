//! The composition root: a running signer's parts, wired once. [`Signer`] holds what every
//! request reads (network, slot clock, slashing protection, the precompute cache) and the live
//! set a reload or the Keymanager API swaps as one (keys, devices, scheduler: [`Runtime`]). The
//! key lifecycle (the gate every signature passes, deletions and their tombstones, placing an
//! imported key) is in [`lifecycle`]. HTTP is not here: `api` serves a `Signer`.

pub mod lifecycle;

use std::sync::{Arc, RwLock};

use crate::config::{Config, SlashingSettings};
use crate::consensus::{Network, SlotClock, SystemTimeSlotClock};
use crate::devices::Devices;
use crate::duties::{PrecomputeMetrics, ProofCache};
use crate::error::{Result, SignerError};
use crate::keys::KeyStore;
use crate::participants::Participants;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerMetrics};
use crate::slashing::{Options as SlashingOptions, Pruning, SlashingProtection};

pub(crate) use lifecycle::KeyGate;

/// What a reload swaps as one: the key set and the devices and scheduler that serve it.
#[derive(Debug)]
pub struct Runtime {
    /// The keys.
    pub keys: KeyStore,
    /// Key files that failed to load at the last (re)load.
    pub key_errors: Vec<String>,
    /// Where jobs run.
    pub scheduler: Scheduler,
}

/// A running signer, without its HTTP surface. Cheap to clone (shared parts).
#[derive(Clone)]
pub struct Signer {
    /// The live set; a request keeps the `Arc` it started with across a swap.
    runtime: Arc<RwLock<Arc<Runtime>>>,
    /// The network (for fork-independent domains and the slot clock).
    pub network: Arc<Network>,
    /// The configuration the signer started with (a reload reads the file again).
    pub config: Arc<Config>,
    /// Deleted keys and signatures under way; the lock that serialises key-set changes.
    pub key_gate: Arc<KeyGate>,
    /// Scheduler settings (kept for reloads).
    pub scheduler_config: SchedulerConfig,
    /// The scheduler's metrics, shared by every scheduler a reload builds.
    pub scheduler_metrics: Arc<SchedulerMetrics>,
    /// The precompute's metrics.
    pub precompute_metrics: Arc<PrecomputeMetrics>,
    /// The slot clock, when deadlines follow slots: requests past their validity window are
    /// refused, and the rest get the window's end as their deadline. Tests put a
    /// `ManualSlotClock` here.
    pub clock: Option<Arc<dyn SlotClock>>,
    /// Slashing protection: every block and attestation is checked and recorded here first.
    /// `None` only when the operator turned it off explicitly.
    pub slashing: Option<SlashingProtection>,
    /// Precomputed selection proofs, when a beacon node is configured (`crate::duties`).
    pub selection_proofs: Option<Arc<ProofCache>>,
    /// Refuse requests for another network (on unless turned off to replay test vectors).
    pub network_check: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("network", &self.network.name)
            .field("network_check", &self.network_check)
            .finish_non_exhaustive()
    }
}

/// What [`Signer::start`] found, for the operator.
#[derive(Debug)]
pub struct Started {
    /// The signer, ready to serve.
    pub signer: Signer,
    /// Key files that did not load (each logged).
    pub key_errors: usize,
    /// Key files left out because their keys were deleted through the Keymanager API.
    pub deleted: usize,
}

/// The slashing protection database: PostgreSQL when `slashing_db` is configured, else SQLite
/// in the data directory, bound to the network's genesis validators root `gvr` when it is
/// created (one bound to another root is refused), pruning in the background when `background`
/// is given. Where it is (for messages) comes beside it.
pub(crate) fn open_slashing_db(
    config: &Config,
    gvr: Option<[u8; 32]>,
    background: Option<Pruning>,
) -> (
    String,
    std::result::Result<SlashingProtection, crate::slashing::SlashingError>,
) {
    let options = slashing_options(config, background);
    match &config.slashing_db {
        Some(url) => (
            "in PostgreSQL".into(),
            SlashingProtection::open_postgres_with(
                secrecy::ExposeSecret::expose_secret(url),
                gvr,
                options,
            ),
        ),
        None => {
            let db = config.data_dir.join("slashing-protection.sqlite");
            (
                db.display().to_string(),
                SlashingProtection::open_sqlite_with(&db, gvr, options),
            )
        }
    }
}

/// The writer's options `[slashing]` asks for, with `background` pruning.
pub(crate) fn slashing_options(config: &Config, background: Option<Pruning>) -> SlashingOptions {
    SlashingOptions {
        pruning: background,
        gather_wait: config.slashing.group_commit_wait_us.map_or(
            crate::slashing::DEFAULT_GATHER_WAIT,
            std::time::Duration::from_micros,
        ),
        ..SlashingOptions::default()
    }
}

/// The background pruning `[slashing]` asks for: on unless `prune = false`, with the
/// slashing module's defaults for what is unset.
pub(crate) fn pruning(settings: &SlashingSettings) -> Option<Pruning> {
    let defaults = Pruning::default();
    settings.prune.unwrap_or(true).then(|| Pruning {
        keep_epochs: settings.keep_epochs.unwrap_or(defaults.keep_epochs),
        interval: settings
            .prune_interval_minutes
            .map_or(defaults.interval, |m| {
                std::time::Duration::from_secs(m.saturating_mul(60))
            }),
        chunk_budget: defaults.chunk_budget,
    })
}

impl Signer {
    /// Start a signer for `network` as `config` says: its devices opened (the embedded
    /// default's tokens created on first use), its key store loaded, slashing protection opened
    /// (unless `slashing_protection` is false: the operator turned it off), and keys deleted
    /// through the Keymanager API left out, whatever files are on disk (their tombstones are
    /// read even with slashing protection off, from a database that exists).
    pub fn start(config: &Config, network: Network, slashing_protection: bool) -> Result<Started> {
        let gvr = network.genesis_validators_root;
        let devices = crate::devices::open_devices(config)?;
        let participants = Participants::open(&config.participants)?;
        let (keys, errors) = KeyStore::load(&config.keys_dir())?;
        for e in &errors {
            tracing::error!(error = %e, "key file not loaded");
        }
        let slashing = if slashing_protection {
            let (db, opened) = open_slashing_db(config, gvr, pruning(&config.slashing));
            Some(opened.map_err(|e| {
                SignerError::Config(format!("slashing protection database {db}: {e}"))
            })?)
        } else {
            tracing::warn!("slashing protection disabled by --no-slashing-protection");
            None
        };
        let key_errors = errors.len();
        let signer = Signer::new(
            config.clone(),
            network,
            (devices, participants),
            keys,
            errors.iter().map(|e| e.to_string()).collect(),
            slashing,
        );
        let tombstones = match slashing_protection {
            false
                if config.slashing_db.is_some()
                    || config.data_dir.join("slashing-protection.sqlite").exists() =>
            {
                Some(open_slashing_db(config, gvr, None).1)
            }
            _ => None,
        };
        let deleted = tombstones
            .transpose()
            .and_then(|db| signer.exclude_deleted_keys(db.as_ref()))
            .map_err(|e| SignerError::Config(format!("slashing protection database: {e}")))?;
        Ok(Started {
            signer,
            key_errors,
            deleted,
        })
    }

    /// Wire a signer from opened devices and participants and a loaded key store: the scheduler
    /// over them, the slot clock (unless `[scheduler] slot_deadlines = false` or the network has
    /// no genesis time), and the metrics each part keeps.
    pub fn new(
        config: Config,
        network: Network,
        (devices, participants): (Devices, Participants),
        keys: KeyStore,
        key_errors: Vec<String>,
        slashing: Option<SlashingProtection>,
    ) -> Signer {
        let scheduler_config = SchedulerConfig::from_settings(&config.scheduler);
        let clock = match (
            config.scheduler.slot_deadlines.unwrap_or(true),
            network.genesis_time,
        ) {
            (true, Some(genesis_time)) => Some(Arc::new(SystemTimeSlotClock::new(
                genesis_time,
                network.seconds_per_slot,
            )) as Arc<dyn SlotClock>),
            _ => None,
        };
        let scheduler_metrics = Arc::new(SchedulerMetrics::default());
        Signer {
            runtime: Arc::new(RwLock::new(Arc::new(Runtime {
                keys,
                key_errors,
                scheduler: Scheduler::with_participants(
                    devices,
                    participants,
                    scheduler_config.clone(),
                    scheduler_metrics.clone(),
                ),
            }))),
            network: Arc::new(network),
            config: Arc::new(config),
            key_gate: Arc::default(),
            scheduler_config,
            scheduler_metrics,
            precompute_metrics: Arc::default(),
            clock,
            slashing,
            selection_proofs: None,
            network_check: true,
        }
    }

    /// The current live set (an `Arc`: a request keeps the set it started with across a swap).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put `runtime` live, in one step.
    pub(crate) fn swap(&self, runtime: Runtime) {
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
    }

    /// Put `keys` live with the devices and scheduler of `current` (a Keymanager import or
    /// deletion changes the keys only).
    pub(crate) fn swap_keys(&self, current: &Runtime, keys: KeyStore, key_errors: Vec<String>) {
        self.swap(Runtime {
            keys,
            key_errors,
            scheduler: current.scheduler.clone(),
        });
    }

    /// The configuration as its file says now (for a reload).
    pub(crate) fn reread_config(&self) -> Result<Config> {
        Config::load(self.config.source.as_deref(), &self.config.data_dir)
    }

    /// The live set `config` describes, for a reload: devices kept or opened again
    /// ([`Devices::reopen`]), the key store read again with deleted keys left out, and a
    /// scheduler over them (sharing this signer's metrics). Blocks (devices, files, the
    /// database): call from a blocking thread. Nothing is swapped: see [`Signer::swap`].
    pub(crate) fn load_runtime(&self, config: &Config) -> Result<Runtime> {
        let current = self.runtime();
        let devices = Devices::reopen(config, current.scheduler.devices())?;
        let participants =
            Participants::reopen(&config.participants, current.scheduler.participants())?;
        let (mut keys, errors) = KeyStore::load(&config.keys_dir())?;
        for e in &errors {
            // `/healthcheck` only counts them (it answers anyone); the files are named here.
            tracing::error!(error = %e, "key file not loaded");
        }
        lifecycle::exclude_deleted(self, None, &mut keys)
            .map_err(|e| SignerError::Slashing(e.to_string()))?;
        Ok(Runtime {
            keys,
            key_errors: errors.iter().map(|e| e.to_string()).collect(),
            scheduler: Scheduler::with_participants(
                devices,
                participants,
                self.scheduler_config.clone(),
                self.scheduler_metrics.clone(),
            ),
        })
    }

    /// Start selection-proof precompute from the beacon node at `url`: the cache requests
    /// read, and the service (run it on the runtime; dropping it stops it and takes its
    /// background jobs out of the queue). The service follows swaps of the live set.
    pub(crate) fn enable_precompute(
        &mut self,
        url: &str,
    ) -> std::result::Result<crate::duties::Service, crate::duties::beacon::BeaconError> {
        let cache = Arc::new(ProofCache::new(self.precompute_metrics.clone()));
        let view = self.clone();
        let signer: crate::duties::SignerView = Arc::new(move || {
            let runtime = view.runtime();
            (
                runtime.scheduler.clone(),
                runtime.keys.iter().cloned().collect(),
            )
        });
        let service = crate::duties::Service::new(
            url,
            (*self.network).clone(),
            cache.clone(),
            self.precompute_metrics.clone(),
            signer,
        )?;
        self.selection_proofs = Some(cache);
        Ok(service)
    }
}
