//! Selection-proof precompute (DESIGN §2). Aggregator selection proofs are needed early, are not
//! slashable and come in herds at epoch boundaries; when a beacon node is configured the signer
//! learns its validators' duties itself, signs their proofs ahead of time as background work
//! (only idle device capacity), and answers the validator client's later request from a cache.
//!
//! This module owns the beacon-node client ([`beacon`]), the cache ([`ProofCache`]) and the
//! service loop ([`Service`]). It does not sign: every proof goes through the scheduler as
//! [`Class::Background`](crate::scheduler::Class::Background). A beacon node that is down or
//! answers nonsense only costs cache misses; the live request path never waits for it.

pub mod beacon;
pub mod identity;
mod metrics;
mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

pub(crate) use metrics::PrecomputeMetrics;
pub(crate) use service::{Service, SignerView};

use crate::consensus::{SelectionProof, SigningRoot};
use crate::keys::PublicKeyBytes;

/// Lighthouse's validator client asks for proofs of duties up to this many slots ahead; the
/// precompute signs one slot further, so that request finds its proof ready.
pub(crate) const SELECTION_PROOF_SLOT_LOOKAHEAD: u64 = 8;
/// Precompute runs at `1 / SELECTION_PROOF_SCHEDULE_DENOM` of every slot (mid-slot).
pub(crate) const SELECTION_PROOF_SCHEDULE_DENOM: u32 = 2;

/// The URL check is the configuration's (it runs when the configuration loads).
pub(crate) use crate::config::check_beacon_node_url;

#[derive(Debug, Clone, Copy)]
struct CachedProof {
    root: SigningRoot,
    signature: [u8; 96],
}

type ProofKey = (PublicKeyBytes, SelectionProof);

/// A proof signed, or being signed by the holder of a [`Claim`].
#[derive(Debug)]
enum Entry {
    Ready(CachedProof),
    Pending {
        /// The claim's number (a taken-over claim no longer owns the entry).
        claim: u64,
        /// Gets the signature when the claim completes; closes if it is dropped unfinished.
        done: watch::Receiver<Option<[u8; 96]>>,
        /// The precompute task signing it, which a live request taking over aborts.
        task: Option<tokio::task::AbortHandle>,
    },
}

/// How long a live request waits for a precompute of its proof that is under way before it
/// signs the proof itself (background work only runs in idle capacity, and a busy signer must
/// not hold a validator client's request behind it).
pub(crate) const JOIN_PATIENCE: Duration = Duration::from_millis(200);

/// Precomputed selection proofs, keyed by validator and [`SelectionProof`] (slot, subcommittee,
/// fork version, genesis validators root). Shared by the service, which fills it, and the sign
/// handler, which reads it. A proof is signed once: whoever starts signing it (the precompute or
/// a live request) holds its [`Claim`], and everyone else who wants it waits for that signature.
#[derive(Debug)]
pub struct ProofCache {
    entries: Mutex<HashMap<ProofKey, Entry>>,
    next_claim: AtomicU64,
    metrics: Arc<PrecomputeMetrics>,
}

/// The right, and the duty, to sign one proof: while it is held, others wanting the proof wait
/// for it; [`Claim::complete`] hands them the signature. Dropped unfinished (the signing
/// failed, or its task was aborted), it lets them sign it themselves.
#[derive(Debug)]
pub struct Claim {
    cache: Arc<ProofCache>,
    key: ProofKey,
    id: u64,
    done: watch::Sender<Option<[u8; 96]>>,
}

/// What a live request learns from [`ProofCache::live`].
#[derive(Debug)]
pub enum LiveProof {
    /// Answered from the cache, or by the precompute it joined.
    Answered([u8; 96]),
    /// Not available: sign it, and [`Claim::complete`] it so that nobody signs it again.
    SignIt(Claim),
}

impl ProofCache {
    /// An empty cache counting into `metrics`.
    pub fn new(metrics: Arc<PrecomputeMetrics>) -> ProofCache {
        ProofCache {
            entries: Mutex::default(),
            next_claim: AtomicU64::new(1),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProofKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_entries(&self, entries: &HashMap<ProofKey, Entry>) {
        let ready = entries
            .values()
            .filter(|e| matches!(e, Entry::Ready(_)))
            .count();
        self.metrics.cached.store(ready as u64, Ordering::Relaxed);
    }

    /// A new pending entry for `key`, owned by the returned claim.
    fn new_claim(self: &Arc<Self>, entries: &mut HashMap<ProofKey, Entry>, key: ProofKey) -> Claim {
        let id = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let (done, rx) = watch::channel(None);
        entries.insert(
            key,
            Entry::Pending {
                claim: id,
                done: rx,
                task: None,
            },
        );
        Claim {
            cache: self.clone(),
            key,
            id,
            done,
        }
    }

    /// For the precompute: the claim to sign this proof, unless it is signed already or being
    /// signed.
    pub(crate) fn claim(
        self: &Arc<Self>,
        pubkey: PublicKeyBytes,
        proof: SelectionProof,
    ) -> Option<Claim> {
        let mut entries = self.lock();
        if entries.contains_key(&(pubkey, proof)) {
            return None;
        }
        Some(self.new_claim(&mut entries, (pubkey, proof)))
    }

    /// Record the task signing the proof of claim number `id`, so that a live request that
    /// will not wait for it can take its job out of the queue.
    pub(crate) fn set_task(
        &self,
        pubkey: PublicKeyBytes,
        proof: SelectionProof,
        id: u64,
        handle: tokio::task::AbortHandle,
    ) {
        if let Some(Entry::Pending { claim, task, .. }) = self.lock().get_mut(&(pubkey, proof)) {
            if *claim == id {
                *task = Some(handle);
            }
        }
    }

    /// For a live request of `proof` with signing root `root`: the signature, from the cache
    /// (a hit) or from a precompute already under way (joined, waiting at most `patience`);
    /// else the claim to sign it (a miss; a precompute still queued after `patience` is taken
    /// over: its job leaves the queue).
    pub async fn live(
        self: &Arc<Self>,
        pubkey: &PublicKeyBytes,
        proof: &SelectionProof,
        root: &SigningRoot,
        patience: Duration,
    ) -> LiveProof {
        let m = &self.metrics;
        let key = (*pubkey, *proof);
        if *root != proof.signing_root() {
            // Cannot happen from the request path (the proof is derived from the request);
            // such a request is signed as asked, and its signature never cached.
            m.misses.fetch_add(1, Ordering::Relaxed);
            let (done, _) = watch::channel(None);
            return LiveProof::SignIt(Claim {
                cache: self.clone(),
                key,
                id: 0,
                done,
            });
        }
        let give_up = tokio::time::Instant::now() + patience;
        loop {
            let (claim, mut done) = {
                let mut entries = self.lock();
                match entries.get(&key) {
                    Some(Entry::Ready(c)) => {
                        m.hits.fetch_add(1, Ordering::Relaxed);
                        return LiveProof::Answered(c.signature);
                    }
                    Some(Entry::Pending { claim, done, .. }) => (*claim, done.clone()),
                    None => {
                        m.misses.fetch_add(1, Ordering::Relaxed);
                        return LiveProof::SignIt(self.new_claim(&mut entries, key));
                    }
                }
            };
            let waited = tokio::time::timeout_at(give_up, done.wait_for(Option::is_some)).await;
            match waited {
                Ok(Ok(signature)) => {
                    if let Some(signature) = *signature {
                        m.joined.fetch_add(1, Ordering::Relaxed);
                        return LiveProof::Answered(signature);
                    }
                }
                // Dropped unfinished: look again (it is gone, or someone else took it).
                Ok(Err(_)) => continue,
                Err(_) => {
                    let mut entries = self.lock();
                    if let Some(Entry::Pending {
                        claim: id, task, ..
                    }) = entries.get(&key)
                    {
                        if *id == claim {
                            if let Some(task) = task {
                                task.abort();
                            }
                            m.taken_over.fetch_add(1, Ordering::Relaxed);
                            m.misses.fetch_add(1, Ordering::Relaxed);
                            return LiveProof::SignIt(self.new_claim(&mut entries, key));
                        }
                    }
                }
            }
        }
    }

    /// The cached signature of a proof, if it was precomputed for the same signing root; counts
    /// a hit or a miss (for callers that do not wait for precomputes under way).
    pub(crate) fn lookup(
        &self,
        pubkey: &PublicKeyBytes,
        proof: &SelectionProof,
        root: &SigningRoot,
    ) -> Option<[u8; 96]> {
        let found = match self.lock().get(&(*pubkey, *proof)) {
            Some(Entry::Ready(c)) if c.root == *root => Some(c.signature),
            _ => None,
        };
        let counter = if found.is_some() {
            &self.metrics.hits
        } else {
            &self.metrics.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether the proof is signed and cached.
    pub fn contains(&self, pubkey: &PublicKeyBytes, proof: &SelectionProof) -> bool {
        matches!(self.lock().get(&(*pubkey, *proof)), Some(Entry::Ready(_)))
    }

    /// Proofs cached now (signed; not counting those being signed).
    pub fn len(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e, Entry::Ready(_)))
            .count()
    }

    /// Whether no proof is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a signed proof.
    pub fn insert(
        &self,
        pubkey: PublicKeyBytes,
        proof: SelectionProof,
        root: SigningRoot,
        signature: [u8; 96],
    ) {
        let mut entries = self.lock();
        entries.insert(
            (pubkey, proof),
            Entry::Ready(CachedProof { root, signature }),
        );
        self.count_entries(&entries);
    }

    /// Keep only the entries `keep` accepts (signed or being signed); returns how many were
    /// dropped. A dropped proof being signed is not cached when it completes.
    pub(crate) fn retain(
        &self,
        mut keep: impl FnMut(&PublicKeyBytes, &SelectionProof) -> bool,
    ) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|(pk, proof), _| keep(pk, proof));
        self.count_entries(&entries);
        before - entries.len()
    }
}

impl Claim {
    /// The validator and proof this claim is for.
    pub fn key(&self) -> (PublicKeyBytes, SelectionProof) {
        self.key
    }

    /// The claim's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The proof is signed: cache it (unless `cache` is false: its duty went away meanwhile)
    /// and answer everyone waiting for it.
    pub fn complete(self, signature: [u8; 96], cache: bool) {
        let _ = self.done.send(Some(signature));
        let mut entries = self.cache.lock();
        let ours = matches!(
            entries.get(&self.key),
            Some(Entry::Pending { claim, .. }) if *claim == self.id
        );
        if ours {
            if cache {
                entries.insert(
                    self.key,
                    Entry::Ready(CachedProof {
                        root: self.key.1.signing_root(),
                        signature,
                    }),
                );
            } else {
                entries.remove(&self.key);
            }
            self.cache.count_entries(&entries);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Completed claims have replaced their entry already; an unfinished one leaves, and
        // its waiters (their channel now closed) look again.
        let mut entries = self.cache.lock();
        if matches!(
            entries.get(&self.key),
            Some(Entry::Pending { claim, .. }) if *claim == self.id
        ) {
            entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(slot: u64) -> SelectionProof {
        SelectionProof {
            slot,
            subcommittee_index: None,
            fork_version: [1, 0, 0, 0],
            genesis_validators_root: [7; 32],
        }
    }

    #[test]
    fn a_hit_needs_the_same_key_and_root() {
        let metrics = Arc::new(PrecomputeMetrics::default());
        let cache = ProofCache::new(metrics.clone());
        let pk = PublicKeyBytes([1; 48]);
        let p = proof(10);
        cache.insert(pk, p, p.signing_root(), [9; 96]);
        assert_eq!(cache.lookup(&pk, &p, &p.signing_root()), Some([9; 96]));
        // Same key, a different root (cannot happen from the request path, must still miss).
        assert_eq!(cache.lookup(&pk, &p, &proof(11).signing_root()), None);
        // Another fork version, subcommittee, validator: misses.
        let other_fork = SelectionProof {
            fork_version: [2, 0, 0, 0],
            ..p
        };
        assert_eq!(
            cache.lookup(&pk, &other_fork, &other_fork.signing_root()),
            None
        );
        let sync = SelectionProof {
            subcommittee_index: Some(0),
            ..p
        };
        assert_eq!(cache.lookup(&pk, &sync, &sync.signing_root()), None);
        assert_eq!(
            cache.lookup(&PublicKeyBytes([2; 48]), &p, &p.signing_root()),
            None
        );
        assert_eq!(metrics.hits.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.misses.load(Ordering::Relaxed), 4);
        assert_eq!(cache.retain(|_, p| p.slot > 10), 1);
        assert!(cache.is_empty());
        assert_eq!(metrics.cached.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn beacon_node_url_must_be_plain_http() {
        for ok in [
            "http://127.0.0.1:5052",
            "http://bn:5052/",
            "http://[::1]:5052",
        ] {
            assert!(check_beacon_node_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://bn:5052",
            "bn:5052",
            "http://",
            "http://user@bn",
            "",
        ] {
            assert!(check_beacon_node_url(bad).is_err(), "{bad}");
        }
    }
}
