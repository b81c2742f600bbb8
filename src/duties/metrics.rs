//! The precompute's metrics: proofs made ahead, and how live requests found the cache.

use std::sync::atomic::AtomicU64;

use crate::metrics::render_one;

/// Counters of the selection-proof precompute and its cache.
#[derive(Debug, Default)]
pub struct PrecomputeMetrics {
    /// Proofs signed ahead of time (background class).
    pub precomputed: AtomicU64,
    /// Proofs precomputed at the last mid-slot tick that finished.
    pub precomputed_last_slot: AtomicU64,
    /// Live selection-proof requests answered from the cache, without a device operation.
    pub hits: AtomicU64,
    /// Live selection-proof requests the cache could not answer (signed normally).
    pub misses: AtomicU64,
    /// Live selection-proof requests that found their proof being precomputed and were
    /// answered by that signature when it came (no second device operation).
    pub joined: AtomicU64,
    /// Live requests that found their proof queued for precompute too long and signed it
    /// themselves instead, taking the precompute's job out of the queue (counted as misses too).
    pub taken_over: AtomicU64,
    /// Precomputed proofs that were not ready by 1/3 of their slot (late, expired or shed).
    pub missed_deadline: AtomicU64,
    /// Cache entries dropped because the beacon node re-orged the duty away.
    pub dropped_reorg: AtomicU64,
    /// Beacon node requests that failed or answered nonsense.
    pub beacon_errors: AtomicU64,
    /// Proofs in the cache now.
    pub cached: AtomicU64,
}

impl PrecomputeMetrics {
    /// Append every counter and gauge.
    pub fn render(&self, out: &mut String) {
        for (name, kind, v) in [
            (
                "signer_selection_proofs_precomputed_total",
                "counter",
                &self.precomputed,
            ),
            (
                "signer_selection_proofs_precomputed_last_slot",
                "gauge",
                &self.precomputed_last_slot,
            ),
            (
                "signer_selection_proof_cache_hits_total",
                "counter",
                &self.hits,
            ),
            (
                "signer_selection_proof_cache_misses_total",
                "counter",
                &self.misses,
            ),
            (
                "signer_selection_proof_cache_joined_total",
                "counter",
                &self.joined,
            ),
            (
                "signer_selection_proof_cache_taken_over_total",
                "counter",
                &self.taken_over,
            ),
            (
                "signer_selection_proofs_missed_deadline_total",
                "counter",
                &self.missed_deadline,
            ),
            (
                "signer_selection_proofs_dropped_reorg_total",
                "counter",
                &self.dropped_reorg,
            ),
            (
                "signer_beacon_node_errors_total",
                "counter",
                &self.beacon_errors,
            ),
            (
                "signer_selection_proof_cache_entries",
                "gauge",
                &self.cached,
            ),
        ] {
            render_one(out, name, kind, v);
        }
    }
}
