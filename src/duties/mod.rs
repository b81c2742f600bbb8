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
mod service;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub use service::{Service, SignerView};

use crate::consensus::{SelectionProof, SigningRoot};
use crate::error::{Result, SignerError};
use crate::keys::PublicKeyBytes;
use crate::metrics::Metrics;

/// Lighthouse's validator client asks for proofs of duties up to this many slots ahead; the
/// precompute signs one slot further, so that request finds its proof ready.
pub const SELECTION_PROOF_SLOT_LOOKAHEAD: u64 = 8;
/// Precompute runs at `1 / SELECTION_PROOF_SCHEDULE_DENOM` of every slot (mid-slot).
pub const SELECTION_PROOF_SCHEDULE_DENOM: u32 = 2;

/// `beacon_node_url` must be a plain `http://` URL (no TLS client is built in): checked when the
/// configuration loads, so a typo is a clear error at start, not a silent lack of precompute.
pub fn check_beacon_node_url(url: &str) -> Result<()> {
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

#[derive(Debug, Clone, Copy)]
struct CachedProof {
    root: SigningRoot,
    signature: [u8; 96],
}

/// Precomputed selection proofs, keyed by validator and [`SelectionProof`] (slot, subcommittee,
/// fork version, genesis validators root). Shared by the service, which fills it, and the sign
/// handler, which reads it.
#[derive(Debug)]
pub struct ProofCache {
    entries: Mutex<HashMap<(PublicKeyBytes, SelectionProof), CachedProof>>,
    metrics: Arc<Metrics>,
}

impl ProofCache {
    /// An empty cache counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> ProofCache {
        ProofCache {
            entries: Mutex::default(),
            metrics,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(PublicKeyBytes, SelectionProof), CachedProof>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compressed signature of a live request's proof, if it was precomputed for the same
    /// signing root; counts a hit or a miss. A miss is signed normally by the caller.
    pub fn lookup(
        &self,
        pubkey: &PublicKeyBytes,
        proof: &SelectionProof,
        root: &SigningRoot,
    ) -> Option<[u8; 96]> {
        let found = self
            .lock()
            .get(&(*pubkey, *proof))
            .filter(|c| c.root == *root)
            .map(|c| c.signature);
        let counter = if found.is_some() {
            &self.metrics.precompute.hits
        } else {
            &self.metrics.precompute.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether the proof is cached.
    pub fn contains(&self, pubkey: &PublicKeyBytes, proof: &SelectionProof) -> bool {
        self.lock().contains_key(&(*pubkey, *proof))
    }

    /// Proofs cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
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
        entries.insert((pubkey, proof), CachedProof { root, signature });
        self.metrics
            .precompute
            .cached
            .store(entries.len() as u64, Ordering::Relaxed);
    }

    /// Keep only the entries `keep` accepts; returns how many were dropped.
    pub fn retain(&self, mut keep: impl FnMut(&PublicKeyBytes, &SelectionProof) -> bool) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|(pk, proof), _| keep(pk, proof));
        self.metrics
            .precompute
            .cached
            .store(entries.len() as u64, Ordering::Relaxed);
        before - entries.len()
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
        let metrics = Arc::new(Metrics::default());
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
        assert_eq!(metrics.precompute.hits.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.precompute.misses.load(Ordering::Relaxed), 4);
        assert_eq!(cache.retain(|_, p| p.slot > 10), 1);
        assert!(cache.is_empty());
        assert_eq!(metrics.precompute.cached.load(Ordering::Relaxed), 0);
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
