//! The service loop: learn the chain from the beacon node, then every slot poll duties, drop
//! what went stale, and at mid-slot submit the proofs of the next
//! [`SELECTION_PROOF_SLOT_LOOKAHEAD`] + 1 slots to the scheduler as background work (one slot
//! ahead of a validator client that asks on Lighthouse's own schedule). Every signing
//! future lives in one `JoinSet`: dropping the service (shutdown) aborts them, which takes their
//! jobs out of the scheduler's queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blst::min_pk::Signature;
use tokio::task::JoinSet;

use super::beacon::{AttesterDuties, BeaconError, BeaconNode, ForkEntry, Genesis, Spec, SyncDuty};
use super::identity;
use super::{Claim, ProofCache, SELECTION_PROOF_SCHEDULE_DENOM, SELECTION_PROOF_SLOT_LOOKAHEAD};
use crate::consensus::{Network, SelectionProof, SlotClock, SystemTimeSlotClock};
use crate::duties::PrecomputeMetrics;
use crate::keys::{KeyRecord, PublicKeyBytes};
use crate::scheduler::{Class, JobError, Scheduler, SignJob};

/// Where the service finds the current scheduler and keys (a reload swaps both).
pub(crate) type SignerView = Arc<dyn Fn() -> (Scheduler, Vec<Arc<KeyRecord>>) + Send + Sync>;

/// The precompute service. Build with [`Service::new`], drive with [`Service::run`].
pub(crate) struct Service {
    beacon: BeaconNode,
    network: Network,
    cache: Arc<ProofCache>,
    metrics: Arc<PrecomputeMetrics>,
    signer: SignerView,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("beacon", &self.beacon)
            .field("network", &self.network.name)
            .finish_non_exhaustive()
    }
}

/// The chain as the beacon node describes it.
struct Chain {
    clock: SystemTimeSlotClock,
    spec: Spec,
    genesis_validators_root: [u8; 32],
    forks: Vec<ForkEntry>,
}

impl Chain {
    fn epoch(&self, slot: u64) -> u64 {
        slot / self.spec.slots_per_epoch
    }

    fn period(&self, slot: u64) -> u64 {
        self.epoch(slot) / self.spec.epochs_per_sync_committee_period
    }

    /// The sync committee that signs at `slot` is the one of `slot + 1`'s period (its messages
    /// go into the next block): the last slot of a period belongs to the next committee.
    fn signing_period(&self, slot: u64) -> u64 {
        self.period(slot.saturating_add(1))
    }

    /// The fork version `get_domain` uses at `slot`'s epoch.
    fn fork_version(&self, slot: u64) -> [u8; 4] {
        let epoch = self.epoch(slot);
        match self.forks.iter().rev().find(|f| f.epoch <= epoch) {
            Some(f) => f.current_version,
            None => self.forks[0].previous_version,
        }
    }

    fn proof(&self, slot: u64, subcommittee_index: Option<u64>) -> SelectionProof {
        SelectionProof {
            slot,
            subcommittee_index,
            fork_version: self.fork_version(slot),
            genesis_validators_root: self.genesis_validators_root,
        }
    }

    /// When `slot` begins; a slot no `Instant` can hold (a beacon node's nonsense) is taken as
    /// a year away, which is as good as never for the service's waits.
    fn slot_start(&self, slot: u64) -> Instant {
        self.clock
            .instant_of_slot(slot)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(366 * 86_400))
    }

    fn at_fraction(&self, slot: u64, denom: u32) -> Instant {
        self.slot_start(slot) + Duration::from_secs(self.spec.seconds_per_slot) / denom
    }

    /// The validator client asks for a slot's proof before 1/3 of it.
    fn needed_by(&self, slot: u64) -> Instant {
        self.at_fraction(slot, 3)
    }
}

/// What the service knows of its validators' duties.
#[derive(Default)]
struct Duties {
    indices: HashMap<PublicKeyBytes, u64>,
    /// Epoch of the last lookup of keys the chain did not know.
    looked_up: Option<u64>,
    attester: BTreeMap<u64, AttesterDuties>,
    /// Sync duties per period, with the epoch they were fetched in.
    sync: BTreeMap<u64, (u64, Vec<SyncDuty>)>,
    signed_this_slot: u64,
    last_error: Option<String>,
}

impl Duties {
    /// Whether the proof still belongs to a known duty.
    fn wants(&self, chain: &Chain, pk: &PublicKeyBytes, proof: &SelectionProof) -> bool {
        match proof.subcommittee_index {
            None => self
                .attester
                .get(&chain.epoch(proof.slot))
                .is_some_and(|d| {
                    d.duties
                        .iter()
                        .any(|d| d.pubkey == *pk && d.slot == proof.slot)
                }),
            Some(sub) => self
                .sync
                .get(&chain.signing_period(proof.slot))
                .is_some_and(|(_, d)| {
                    d.iter().any(|d| {
                        d.pubkey == *pk
                            && d.validator_sync_committee_indices
                                .iter()
                                .any(|i| i / chain.spec.sync_subcommittee_size == sub)
                    })
                }),
        }
    }
}

type Done = (Claim, Result<Signature, JobError>);

impl Service {
    /// A service for the beacon node at `url` (checked by
    /// [`check_beacon_node_url`](super::check_beacon_node_url)), on `network`, filling `cache`.
    pub fn new(
        url: &str,
        network: Network,
        cache: Arc<ProofCache>,
        metrics: Arc<PrecomputeMetrics>,
        signer: SignerView,
    ) -> Result<Service, BeaconError> {
        let timeout = Duration::from_secs(network.seconds_per_slot.clamp(1, 12)) / 2;
        Ok(Service {
            beacon: BeaconNode::new(url, timeout)?,
            network,
            cache,
            metrics,
            signer,
        })
    }

    /// Run until the future is dropped.
    pub async fn run(self) {
        let mut jobs: JoinSet<Done> = JoinSet::new();
        let mut duties = Duties::default();
        let retry = Duration::from_secs(self.network.seconds_per_slot.clamp(1, 12));
        let mut chain = loop {
            match self.connect().await {
                Ok(chain) => break chain,
                Err(e) => {
                    self.beacon_error(&mut duties, &e);
                    tokio::time::sleep(retry).await;
                }
            }
        };
        tracing::info!(
            genesis_time = chain.clock.timing().genesis.as_secs(),
            seconds_per_slot = chain.spec.seconds_per_slot,
            "selection-proof precompute: beacon node connected"
        );
        let mut last_slot = None;
        loop {
            let Some(slot) = chain.clock.now() else {
                self.wait_until(&chain, chain.slot_start(0), &mut jobs, &mut duties)
                    .await;
                continue;
            };
            if last_slot == Some(slot) {
                // Woken a hair before the wall clock turned the slot: once per slot is enough.
                let soon = Instant::now() + Duration::from_millis(20);
                self.wait_until(&chain, soon, &mut jobs, &mut duties).await;
                continue;
            }
            last_slot = Some(slot);
            self.metrics.precomputed_last_slot.store(
                std::mem::take(&mut duties.signed_this_slot),
                Ordering::Relaxed,
            );
            // Past slots' proofs are of no further use.
            self.cache.retain(|_, p| p.slot >= slot);
            if slot % chain.spec.slots_per_epoch == 0 {
                // A fork scheduled since we connected (an upgraded node) is picked up here.
                match self.beacon.fork_schedule().await {
                    Ok(forks) => chain.forks = forks,
                    Err(e) => self.beacon_error(&mut duties, &e),
                }
            }
            self.poll(&chain, &mut duties, slot, &mut jobs).await;
            let mid = chain.at_fraction(slot, SELECTION_PROOF_SCHEDULE_DENOM);
            self.wait_until(&chain, mid, &mut jobs, &mut duties).await;
            self.precompute(&chain, &mut duties, slot, &mut jobs);
            let next = chain.slot_start(slot.saturating_add(1));
            self.wait_until(&chain, next, &mut jobs, &mut duties).await;
        }
    }

    /// Genesis, spec and fork schedule, checked against the configured network
    /// ([`identity::reconcile`]).
    async fn connect(&self) -> Result<Chain, BeaconError> {
        let node = identity::NodeChain::read(&self.beacon).await?;
        let spec = BeaconNode::parse_spec(&node.spec)?;
        let Genesis {
            genesis_time,
            genesis_validators_root,
            ..
        } = node.genesis;
        identity::reconcile(&self.network, &node)?;
        Ok(Chain {
            clock: SystemTimeSlotClock::new(genesis_time, spec.seconds_per_slot),
            spec,
            genesis_validators_root,
            forks: node.forks,
        })
    }

    fn beacon_error(&self, duties: &mut Duties, e: &BeaconError) {
        self.metrics.beacon_errors.fetch_add(1, Ordering::Relaxed);
        let text = e.to_string();
        if duties.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %text, "selection-proof precompute: beacon node unusable; live signing is not affected");
            duties.last_error = Some(text);
        }
    }

    fn beacon_ok(&self, duties: &mut Duties) {
        if duties.last_error.take().is_some() {
            tracing::info!("selection-proof precompute: beacon node answering again");
        }
    }

    /// Indices of new keys, attester duties of this epoch and the next (a changed dependent
    /// root replaces them and drops their proofs), sync duties of the periods in view.
    async fn poll(&self, chain: &Chain, duties: &mut Duties, slot: u64, jobs: &mut JoinSet<Done>) {
        let epoch = chain.epoch(slot);
        duties.attester.retain(|e, _| *e >= epoch);
        duties.sync.retain(|p, _| *p >= chain.period(slot));
        let (_, keys) = (self.signer)();
        let ours: HashSet<PublicKeyBytes> = keys.iter().map(|k| k.pubkey).collect();
        duties.indices.retain(|pk, _| ours.contains(pk));
        let unknown: Vec<PublicKeyBytes> = ours
            .iter()
            .filter(|pk| !duties.indices.contains_key(*pk))
            .copied()
            .collect();
        if !unknown.is_empty() && duties.looked_up != Some(epoch) {
            match self.beacon.validator_indices(&unknown).await {
                Ok(found) => {
                    duties.looked_up = Some(epoch);
                    duties.indices.extend(found);
                    self.beacon_ok(duties);
                }
                Err(e) => self.beacon_error(duties, &e),
            }
        }
        let mut indices: Vec<u64> = duties.indices.values().copied().collect();
        indices.sort_unstable();
        if indices.is_empty() {
            return;
        }
        // The next epoch first: at an epoch's start its duties are new, and a validator client
        // that signs its proofs as soon as it learns them (Lodestar) asks for them right away.
        for e in [epoch + 1, epoch] {
            match self
                .beacon
                .attester_duties(e, &indices, chain.spec.slots_per_epoch)
                .await
            {
                Ok(mut fresh) => {
                    // Only duties of our keys under the index we know them by.
                    fresh
                        .duties
                        .retain(|d| duties.indices.get(&d.pubkey) == Some(&d.validator_index));
                    let changed = duties
                        .attester
                        .get(&e)
                        .is_some_and(|old| old.dependent_root != fresh.dependent_root);
                    duties.attester.insert(e, fresh);
                    if changed {
                        let dropped = self.cache.retain(|pk, p| {
                            p.subcommittee_index.is_some()
                                || chain.epoch(p.slot) != e
                                || duties.wants(chain, pk, p)
                        });
                        self.metrics
                            .dropped_reorg
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                        tracing::info!(
                            epoch = e,
                            dropped,
                            "attester duties re-orged; their selection proofs are recomputed"
                        );
                    }
                    self.beacon_ok(duties);
                }
                Err(err) => self.beacon_error(duties, &err),
            }
        }
        self.precompute(chain, duties, slot, jobs);
        let periods: HashSet<u64> = (slot..=slot + SELECTION_PROOF_SLOT_LOOKAHEAD + 1)
            .map(|s| chain.signing_period(s))
            .collect();
        for period in periods {
            if duties.sync.get(&period).is_some_and(|(at, _)| *at == epoch) {
                continue;
            }
            let ask = epoch.max(period * chain.spec.epochs_per_sync_committee_period);
            match self.beacon.sync_duties(ask, &indices).await {
                Ok(mut fresh) => {
                    fresh.retain(|d| duties.indices.get(&d.pubkey) == Some(&d.validator_index));
                    let size = chain.spec.sync_committee_size;
                    for d in &mut fresh {
                        let before = d.validator_sync_committee_indices.len();
                        d.validator_sync_committee_indices.retain(|i| *i < size);
                        if d.validator_sync_committee_indices.len() != before {
                            self.beacon_error(
                                duties,
                                &BeaconError::Nonsense {
                                    path: format!("/eth/v1/validator/duties/sync/{ask}"),
                                    message: "a sync committee index beyond the committee".into(),
                                },
                            );
                        }
                    }
                    duties.sync.insert(period, (epoch, fresh));
                    self.beacon_ok(duties);
                }
                Err(err) => self.beacon_error(duties, &err),
            }
        }
    }

    /// Submit every proof wanted soon that is neither signed nor being signed: the aggregation
    /// proofs of every known attester duty after `slot` (this epoch and the next, as soon as
    /// the duties are known: a client may ask for them then), and the sync committee proofs of
    /// the next [`SELECTION_PROOF_SLOT_LOOKAHEAD`] + 1 slots. Earliest slot first.
    fn precompute(&self, chain: &Chain, duties: &mut Duties, slot: u64, jobs: &mut JoinSet<Done>) {
        // One slot beyond the lookahead: a validator client with Lighthouse's own schedule asks
        // for slot s + 8's proof at this very mid-slot, and should find it signed a slot ago.
        let window = slot + 1..=slot + SELECTION_PROOF_SLOT_LOOKAHEAD + 1;
        let mut wanted: Vec<(PublicKeyBytes, SelectionProof)> = Vec::new();
        for d in duties.attester.values().flat_map(|a| a.duties.iter()) {
            if d.slot > slot {
                wanted.push((d.pubkey, chain.proof(d.slot, None)));
            }
        }
        for s in window.clone() {
            let Some((_, sync)) = duties.sync.get(&chain.signing_period(s)) else {
                continue;
            };
            for d in sync {
                let mut subs: Vec<u64> = d
                    .validator_sync_committee_indices
                    .iter()
                    .map(|i| i / chain.spec.sync_subcommittee_size)
                    .collect();
                subs.sort_unstable();
                subs.dedup();
                wanted.extend(
                    subs.into_iter()
                        .map(|sub| (d.pubkey, chain.proof(s, Some(sub)))),
                );
            }
        }
        if wanted.is_empty() {
            return;
        }
        wanted.sort_by_key(|(_, p)| p.slot);
        let (scheduler, keys) = (self.signer)();
        let keys: HashMap<PublicKeyBytes, Arc<KeyRecord>> =
            keys.into_iter().map(|k| (k.pubkey, k)).collect();
        for (pk, proof) in wanted {
            // A key with shares on remote participants is signed on request only: they need
            // the validator client's request, which a precomputed proof has not got.
            let Some(key) = keys.get(&pk).filter(|k| k.remote.is_empty()).cloned() else {
                continue;
            };
            let Some(claim) = self.cache.claim(pk, proof) else {
                continue;
            };
            let job = SignJob {
                arrived: None,
                key,
                signing_root: proof.signing_root(),
                class: Class::Background,
                deadline: Some(chain.needed_by(proof.slot)),
                freshness: 0,
                request: None,
            };
            let scheduler = scheduler.clone();
            let id = claim.id();
            let handle = jobs.spawn(async move {
                let result = scheduler.sign(job).await;
                (claim, result)
            });
            self.cache.set_task(pk, proof, id, handle);
        }
    }

    /// Take finished proofs into the cache until `when`.
    async fn wait_until(
        &self,
        chain: &Chain,
        when: Instant,
        jobs: &mut JoinSet<Done>,
        duties: &mut Duties,
    ) {
        let sleep = tokio::time::sleep_until(when.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Ok(done) = done {
                        self.finished(chain, duties, done);
                    }
                }
            }
        }
    }

    fn finished(&self, chain: &Chain, duties: &mut Duties, (claim, result): Done) {
        let (pk, proof) = claim.key();
        let m = &self.metrics;
        match result {
            Ok(signature) => {
                if Instant::now() > chain.needed_by(proof.slot) {
                    m.missed_deadline.fetch_add(1, Ordering::Relaxed);
                }
                m.precomputed.fetch_add(1, Ordering::Relaxed);
                duties.signed_this_slot += 1;
                // A duty re-orged away while its proof was being signed is not cached.
                claim.complete(signature.compress(), duties.wants(chain, &pk, &proof));
            }
            Err(e) => {
                m.missed_deadline.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(validator = %pk, slot = proof.slot, error = %e, "selection proof not precomputed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duties::beacon::AttesterDuty;

    fn chain(forks: Vec<ForkEntry>) -> Chain {
        Chain {
            clock: SystemTimeSlotClock::new(0, 12),
            spec: Spec {
                seconds_per_slot: 12,
                slots_per_epoch: 32,
                epochs_per_sync_committee_period: 256,
                sync_committee_size: 512,
                sync_subcommittee_size: 128,
            },
            genesis_validators_root: [3; 32],
            forks,
        }
    }

    fn fork(previous: u8, current: u8, epoch: u64) -> ForkEntry {
        ForkEntry {
            previous_version: [previous, 0, 0, 0],
            current_version: [current, 0, 0, 0],
            epoch,
        }
    }

    #[test]
    fn the_fork_version_of_a_slot_follows_the_schedule() {
        let c = chain(vec![fork(0, 0, 0), fork(0, 1, 10), fork(1, 2, 20)]);
        let cases = [
            (0, 0),
            (319, 0),
            (320, 1),
            (639, 1),
            (640, 2),
            (u64::MAX, 2),
        ];
        for (slot, version) in cases {
            assert_eq!(c.fork_version(slot), [version, 0, 0, 0], "slot {slot}");
        }
        // A schedule whose first fork is still ahead: its previous version applies.
        let c = chain(vec![fork(5, 6, 100)]);
        assert_eq!(c.fork_version(0), [5, 0, 0, 0]);
        assert_eq!(c.fork_version(3200), [6, 0, 0, 0]);
        let p = c.proof(3200, Some(3));
        assert_eq!(
            (
                p.fork_version,
                p.genesis_validators_root,
                p.subcommittee_index
            ),
            ([6, 0, 0, 0], [3; 32], Some(3))
        );
    }

    #[test]
    fn only_proofs_of_known_duties_are_wanted() {
        let c = chain(vec![fork(0, 0, 0)]);
        let (a, b) = (PublicKeyBytes([1; 48]), PublicKeyBytes([2; 48]));
        let mut d = Duties::default();
        d.attester.insert(
            1,
            AttesterDuties {
                dependent_root: [0; 32],
                duties: vec![AttesterDuty {
                    pubkey: a,
                    validator_index: 7,
                    slot: 40,
                }],
            },
        );
        d.sync.insert(
            0,
            (
                0,
                vec![SyncDuty {
                    pubkey: b,
                    validator_index: 8,
                    validator_sync_committee_indices: vec![130, 511],
                }],
            ),
        );
        assert!(d.wants(&c, &a, &c.proof(40, None)));
        assert!(!d.wants(&c, &a, &c.proof(41, None)));
        assert!(!d.wants(&c, &b, &c.proof(40, None)));
        assert!(d.wants(&c, &b, &c.proof(41, Some(1))));
        assert!(d.wants(&c, &b, &c.proof(41, Some(3))));
        assert!(!d.wants(&c, &b, &c.proof(41, Some(0))));
        assert!(!d.wants(&c, &a, &c.proof(41, Some(1))));
        // The last slot of period 0 is signed by period 1's committee.
        let last = 256 * 32 - 1;
        assert!(d.wants(&c, &b, &c.proof(last - 1, Some(1))));
        assert!(!d.wants(&c, &b, &c.proof(last, Some(1))));
    }
}
