//! The BLS work alone of a distributed 2-of-3 signature against a whole key's, on one thread,
//! for `bench distributed`: the throughput ratio it would measure if transport, tokens and
//! scheduling cost nothing. Each side does what the signer does, with the signer's functions:
//! a whole key's signature is `bls::sign` (the hash to G2 and the multiplication); a
//! distributed one is two participants' partials (each hashes and multiplies with its share,
//! and compresses the point for the wire) and the coordinator's work (its own hash of the root,
//! the two partials' decompression and subgroup checks, then the combination and the
//! verification of every partial and of the result, in batches as its scheduler makes them).

use std::time::{Duration, Instant};

use blst::min_pk::{SecretKey, Signature};
use serde::Serialize;

use crate::bls;
use crate::error::{Result, SignerError};
use crate::keys::threshold::{
    combine_many_verified, default_ids, split, Combination, HashedMessage, ShareKey, ThresholdKey,
};
use crate::keys::{PublicKeyBytes, ShareId};

/// Signatures the coordinator combines and verifies together at most (the scheduler's batch).
const BATCH: usize = 16;

/// CPU per signature of the BLS work alone, one thread, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct BlsFloor {
    /// Signatures timed per side.
    pub signatures: usize,
    /// A whole key's signature: hash to G2 and multiplication.
    pub whole_ms: f64,
    /// Two participants' partials: each a hash to G2, a multiplication and a compression.
    pub participants_ms: f64,
    /// The coordinator's: hash to G2, two decompressions and subgroup checks, the combination,
    /// and its share of a batch verification of every partial and result.
    pub coordinator_ms: f64,
    /// `whole_ms / (participants_ms + coordinator_ms)`: the most the distributed throughput
    /// could be, as a share of the 1-of-1's, with everything but BLS free.
    pub ratio: f64,
}

fn internal(e: impl std::fmt::Display) -> SignerError {
    SignerError::Bls(format!("BLS floor: {e}"))
}

/// Time `signatures` signatures (at least one batch) of each kind, over distinct roots, the
/// kinds interleaved batch by batch so that a burst of other load falls on all of them. Every
/// distributed signature must equal the whole key's, or the measurement is refused.
pub fn measure(signatures: usize) -> Result<BlsFloor> {
    let signatures = signatures.max(BATCH).next_multiple_of(BATCH);
    let sk = bls::random_secret_key()?;
    let ids = default_ids(3);
    let shares: Vec<(ShareId, SecretKey)> = split(&sk, 2, &ids)?;
    let pubkey = sk.sk_to_pk();
    let key = ThresholdKey {
        pubkey_bytes: PublicKeyBytes(pubkey.compress()),
        pubkey,
        threshold: 2,
        shares: shares
            .iter()
            .map(|(id, share)| ShareKey {
                id: *id,
                device: format!("participant-{id}"),
                pubkey: share.sk_to_pk(),
            })
            .collect(),
    };
    // Every 2-subset in turn: shares 1 and 3 have a coefficient that is not an integer.
    let subsets = [[0, 1], [0, 2], [1, 2]];
    let mut spent = [Duration::ZERO; 3];
    for first in (0..signatures).step_by(BATCH) {
        let roots: Vec<[u8; 32]> = (first..first + BATCH)
            .map(|i| crate::bench::message(i as u64 ^ 0xB15_F100))
            .collect();

        let started = Instant::now();
        let whole: Vec<Signature> = roots.iter().map(|r| bls::sign(&sk, r)).collect();
        spent[0] += started.elapsed();

        let started = Instant::now();
        let wire: Vec<[(ShareId, [u8; 96]); 2]> = roots
            .iter()
            .enumerate()
            .map(|(i, root)| {
                subsets[(first + i) % subsets.len()].map(|s| {
                    let (id, share) = &shares[s];
                    (*id, bls::sign(share, root).compress())
                })
            })
            .collect();
        spent[1] += started.elapsed();

        let started = Instant::now();
        let hashed: Vec<HashedMessage> = roots.iter().map(HashedMessage::new).collect();
        let partials = wire
            .iter()
            .map(|pair| {
                pair.iter()
                    .map(|(id, bytes)| Ok((*id, Signature::sig_validate(bytes, true)?)))
                    .collect::<std::result::Result<Vec<_>, blst::BLST_ERROR>>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| internal(format!("a partial does not decompress: {e:?}")))?;
        let jobs: Vec<Combination<'_>> = hashed
            .iter()
            .zip(&partials)
            .map(|(hashed, partials)| Combination {
                key: &key,
                hashed,
                partials,
            })
            .collect();
        let combined = combine_many_verified(&jobs);
        spent[2] += started.elapsed();

        for (c, w) in combined.into_iter().zip(&whole) {
            if c.map_err(internal)? != *w {
                return Err(internal(
                    "a combined signature differs from the whole key's",
                ));
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / signatures as f64;
    let (whole_ms, participants_ms, coordinator_ms) = (ms(spent[0]), ms(spent[1]), ms(spent[2]));
    Ok(BlsFloor {
        signatures,
        whole_ms,
        participants_ms,
        coordinator_ms,
        ratio: whole_ms / (participants_ms + coordinator_ms).max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_combines_every_subset_to_the_whole_keys_signature_and_costs_more() {
        // `measure` refuses a run in which a combined signature differs from the whole key's.
        let floor = measure(BATCH * 3).unwrap();
        assert_eq!(floor.signatures, BATCH * 3);
        // Three hashes and two multiplications cannot cost less than one of each. Timings
        // otherwise vary with the machine and are not asserted.
        assert!(floor.ratio > 0.0 && floor.ratio < 1.0, "{floor:?}");
        assert!(floor.participants_ms > floor.whole_ms, "{floor:?}");
    }
}
