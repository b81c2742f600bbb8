//! The BLS work alone of a distributed 2-of-3 signature against a whole key's, on one thread,
//! for `bench distributed`: the throughput ratio it would measure if transport, tokens and
//! scheduling cost nothing. Each side does what the signer does, with the signer's functions:
//! a whole key's signature is the hash to G2 and `keys::sign_opened_hashed` (what a signing
//! thread calls); a distributed one is two participants' partials (each hashes and multiplies with its share,
//! and compresses the point for the wire) and the coordinator's work (its own hash of the root,
//! the two partials' decompression and subgroup checks, then the combination and the
//! verification of every partial and of the result, in batches as its scheduler makes them).

use std::time::{Duration, Instant};

use blst::min_pk::{SecretKey, Signature};
use serde::Serialize;

use crate::bls;
use crate::error::{Result, SignerError};
use crate::keys::sign_opened_hashed;
use crate::keys::threshold::{
    combine_many_verified, default_ids, split, Combination, HashedMessage, ShareKey, ThresholdKey,
};
use crate::keys::{PublicKeyBytes, ShareId};

/// Signatures the coordinator combines and verifies together at most (the scheduler's batch),
/// and keys of the measurement.
const BATCH: usize = 16;

/// CPU per signature of the BLS work alone, one thread, in milliseconds: on distinct messages
/// (flattened into the report) and with one message for every key at a time.
#[derive(Debug, Clone, Serialize)]
pub struct BlsFloor {
    /// Signatures timed per side and workload.
    pub signatures: usize,
    /// Each signature over a message of its own.
    #[serde(flatten)]
    pub distinct: Floor,
    /// One message for every key at a time: each signer hashes a root once for all its keys
    /// (as the signer's cache of hashed roots does), so a whole key's signature is little more
    /// than the multiplication.
    pub shared: Floor,
}

/// One workload's BLS work per signature, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// A whole key's signature: hash to G2 (or its share of one) and multiplication.
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

/// A 2-of-3 key: the whole secret, its shares, and its public keys as the coordinator holds
/// them.
struct Split {
    whole: SecretKey,
    shares: Vec<(ShareId, SecretKey)>,
    key: ThresholdKey,
}

fn split_key() -> Result<Split> {
    let whole = bls::random_secret_key()?;
    let shares = split(&whole, 2, &default_ids(3))?;
    let pubkey = whole.sk_to_pk();
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
    Ok(Split { whole, shares, key })
}

/// Every 2-subset in turn: shares 1 and 3 have a coefficient that is not an integer.
const SUBSETS: [[usize; 2]; 3] = [[0, 1], [0, 2], [1, 2]];

/// One batch of [`BATCH`] signatures, key `i` of `keys` signing `roots[i]`, timed on each
/// side: the whole keys', the participants' and the coordinator's. `shared`: every root is
/// the same, hashed once per side. Every combined signature must equal the whole key's.
fn batch(
    keys: &[Split],
    roots: &[[u8; 32]],
    shared: bool,
    spent: &mut [Duration; 3],
) -> Result<()> {
    let hash = |roots: &[[u8; 32]]| -> Vec<HashedMessage> {
        if shared {
            let one = HashedMessage::new(&roots[0]);
            vec![one; roots.len()]
        } else {
            roots.iter().map(HashedMessage::new).collect()
        }
    };
    let started = Instant::now();
    let hashed = hash(roots);
    let whole: Vec<Signature> = keys
        .iter()
        .zip(&hashed)
        .map(|(k, h)| sign_opened_hashed(&k.whole, h))
        .collect();
    spent[0] += started.elapsed();

    let started = Instant::now();
    // Each of the two participants hashes for itself.
    let hashes = [hash(roots), hash(roots)];
    let wire: Vec<[(ShareId, [u8; 96]); 2]> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let subset = SUBSETS[i % SUBSETS.len()];
            [0, 1].map(|p| {
                let (id, share) = &k.shares[subset[p]];
                (*id, sign_opened_hashed(share, &hashes[p][i]).compress())
            })
        })
        .collect();
    spent[1] += started.elapsed();

    let started = Instant::now();
    let hashed = hash(roots);
    let partials = wire
        .iter()
        .map(|pair| {
            pair.iter()
                .map(|(id, bytes)| Ok((*id, Signature::sig_validate(bytes, true)?)))
                .collect::<std::result::Result<Vec<_>, blst::BLST_ERROR>>()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| internal(format!("a partial does not decompress: {e:?}")))?;
    let jobs: Vec<Combination<'_>> = keys
        .iter()
        .zip(&hashed)
        .zip(&partials)
        .map(|((k, hashed), partials)| Combination {
            key: &k.key,
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
    Ok(())
}

/// Time `signatures` signatures (whole batches of [`BATCH`] keys) of each side on each
/// workload, over roots no other measurement uses, the sides interleaved batch by batch so
/// that a burst of other load falls on all of them.
pub fn measure(signatures: usize) -> Result<BlsFloor> {
    let signatures = signatures.max(BATCH).next_multiple_of(BATCH);
    let keys = (0..BATCH)
        .map(|_| split_key())
        .collect::<Result<Vec<_>>>()?;
    let mut distinct = [Duration::ZERO; 3];
    let mut shared = [Duration::ZERO; 3];
    for first in (0..signatures).step_by(BATCH) {
        let roots: Vec<[u8; 32]> = (first..first + BATCH)
            .map(|i| crate::bench::message(i as u64 ^ 0xB15_F100))
            .collect();
        batch(&keys, &roots, false, &mut distinct)?;
        let root = crate::bench::message(first as u64 ^ 0x5_4A3E_D000);
        batch(&keys, &vec![root; BATCH], true, &mut shared)?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / signatures as f64;
    let floor = |s: [Duration; 3]| {
        let [whole_ms, participants_ms, coordinator_ms] = s.map(ms);
        Floor {
            whole_ms,
            participants_ms,
            coordinator_ms,
            ratio: whole_ms / (participants_ms + coordinator_ms).max(1e-9),
        }
    };
    Ok(BlsFloor {
        signatures,
        distinct: floor(distinct),
        shared: floor(shared),
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
        let (distinct, shared) = (&floor.distinct, &floor.shared);
        assert!(distinct.ratio > 0.0 && distinct.ratio < 1.0, "{floor:?}");
        assert!(distinct.participants_ms > distinct.whole_ms, "{floor:?}");
        assert!(shared.ratio > 0.0 && shared.ratio < 1.0, "{floor:?}");
        // A shared root is hashed once for many keys: a whole key's signature costs less.
        assert!(shared.whole_ms < distinct.whole_ms, "{floor:?}");
    }
}
