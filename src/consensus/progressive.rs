//! Progressive SSZ merkleization (EIP-7916 lists and bitlists, EIP-7495 containers), which the
//! Gloas fork's containers use (EIP-7688): the chunks go into subtrees of 1, 4, 16, 64, …
//! leaves, each the left child of a spine that grows to the right, so a list has no limit and
//! its root does not change shape when the list grows. The first building block of Gloas
//! (issue 20); the containers come next. Checked against remerkleable 0.1.31
//! (`scripts/oracle/progressive_vectors.py`).

use sha2::{Digest, Sha256};

/// A 32-byte chunk or root.
pub type Chunk = [u8; 32];

fn hash_pair(a: &Chunk, b: &Chunk) -> Chunk {
    let mut h = Sha256::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// The root of `chunks` as a balanced tree of `leaves` leaves (a power of two, at least the
/// number of chunks), zero-padded.
fn balanced_root(chunks: &[Chunk], leaves: usize) -> Chunk {
    let bytes: Vec<u8> = chunks.iter().flatten().copied().collect();
    tree_hash::merkle_root(&bytes, leaves).0
}

/// `merkleize_progressive(chunks)`: the zero chunk for none; else `hash(balanced subtree of the
/// first 1 chunk, the rest progressively with subtrees four times larger)`.
pub fn merkleize_progressive(chunks: &[Chunk]) -> Chunk {
    let mut subtrees = Vec::new();
    let (mut rest, mut leaves) = (chunks, 1usize);
    while !rest.is_empty() {
        let take = leaves.min(rest.len());
        subtrees.push(balanced_root(&rest[..take], leaves));
        rest = &rest[take..];
        leaves = leaves.saturating_mul(4);
    }
    // hash(s0, hash(s1, hash(s2, … hash(sn, 0))))
    subtrees
        .iter()
        .rev()
        .fold([0u8; 32], |spine, subtree| hash_pair(subtree, &spine))
}

/// `mix_in_length(root, length)`.
pub fn mix_in_length(root: &Chunk, length: usize) -> Chunk {
    let mut len = [0u8; 32];
    len[..8].copy_from_slice(&(length as u64).to_le_bytes());
    hash_pair(root, &len)
}

/// Split packed bytes into chunks, the last zero-padded.
fn pack(bytes: &[u8]) -> Vec<Chunk> {
    bytes
        .chunks(32)
        .map(|c| {
            let mut chunk = [0u8; 32];
            chunk[..c.len()].copy_from_slice(c);
            chunk
        })
        .collect()
}

/// Bits packed little-endian (bit i of the list is bit `i % 8` of byte `i / 8`).
fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut bytes = vec![0u8; bits.len().div_ceil(8)];
    for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
        bytes[i / 8] |= 1 << (i % 8);
    }
    bytes
}

/// The root of a `ProgressiveList` of a basic type: `packed` is the elements' serialization
/// (e.g. 8 little-endian bytes per `uint64`), `length` the number of elements.
pub fn basic_list_root(packed: &[u8], length: usize) -> Chunk {
    mix_in_length(&merkleize_progressive(&pack(packed)), length)
}

/// The root of a `ProgressiveList` of a composite type, from its elements' roots.
pub fn composite_list_root(element_roots: &[Chunk]) -> Chunk {
    mix_in_length(&merkleize_progressive(element_roots), element_roots.len())
}

/// The root of a `ProgressiveBitList`.
pub fn bitlist_root(bits: &[bool]) -> Chunk {
    bitlist_root_packed(&pack_bits(bits), bits.len())
}

/// The root of a `ProgressiveBitList` of `len` bits, given packed (little-endian, without the
/// SSZ length bit).
pub fn bitlist_root_packed(packed: &[u8], len: usize) -> Chunk {
    mix_in_length(&merkleize_progressive(&pack(packed)), len)
}

/// The root of a `ProgressiveContainer(active_fields)` whose active fields have `field_roots`
/// (in order): inactive positions are zero chunks, and the active-fields bitvector is mixed in.
/// `None` when the roots do not match the active fields, or there are more than 256 of them.
pub fn container_root(field_roots: &[Chunk], active_fields: &[bool]) -> Option<Chunk> {
    let active = active_fields.iter().filter(|a| **a).count();
    if active != field_roots.len()
        || active_fields.len() > 256
        || active_fields.last() != Some(&true)
    {
        return None;
    }
    let mut roots = field_roots.iter();
    let chunks: Vec<Chunk> = active_fields
        .iter()
        .map(|a| match a {
            true => roots.next().copied().unwrap_or_default(),
            false => [0u8; 32],
        })
        .collect();
    let mut mixed = [0u8; 32];
    let packed = pack_bits(active_fields);
    mixed[..packed.len()].copy_from_slice(&packed);
    Some(hash_pair(&merkleize_progressive(&chunks), &mixed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Chunk {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    fn u64s(n: u64) -> Vec<u8> {
        (1..=n).flat_map(|i| i.to_le_bytes()).collect()
    }

    fn uint(x: u64) -> Chunk {
        let mut c = [0u8; 32];
        c[..8].copy_from_slice(&x.to_le_bytes());
        c
    }

    // Every expected root below is printed by scripts/oracle/progressive_vectors.py
    // (remerkleable 0.1.31).

    #[test]
    fn progressive_lists_of_uint64_match_remerkleable() {
        for (n, root) in [
            (
                0,
                "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b",
            ),
            (
                1,
                "905efb51c2764c2c7a4efb0548e372569df06db82115c3b1896c186632f3fe5b",
            ),
            (
                2,
                "4250789d7838bee417a2b0d7639d928b05e8b75f1fc59588a4301b6e8f70ba58",
            ),
            (
                5,
                "29918e0447260511bc5be0f7dbb9817201e16e30c56af228b9cb931a16e8799d",
            ),
            (
                6,
                "f4bdff2ee94b926f6db14f7e7dad2cb74b75ba057767b458d2c6c051d88e7dbf",
            ),
            (
                21,
                "ed360c03ecbdfbb6f4b1cf5d9cbf6887038423e31121700797de968a9969aaed",
            ),
            (
                22,
                "61f3eebb593ca31c113a9dfec164edea6d13272e20a5f8d0ab641c6e3e2222a9",
            ),
            (
                29,
                "5d30ebabbc917d8afe3aef6314ece120e0c15bae489ef4669635e44b338adad2",
            ),
            (
                86,
                "3197503e039fe2acfc88f0962c651c068bf069217bcf7a7efa8b3d0bc02473e6",
            ),
        ] {
            assert_eq!(
                basic_list_root(&u64s(n), n as usize),
                hex32(root),
                "1..={n}"
            );
        }
    }

    #[test]
    fn progressive_lists_of_roots_match_remerkleable() {
        for (n, root) in [
            (
                0,
                "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b",
            ),
            (
                1,
                "a21da97c8a597221c87c9ea5ecdfbd860fcd52fd6fb5b001723f6437856c8df1",
            ),
            (
                2,
                "9a4badc45a45e9dd4b131c2c1aaff8a054527d8db40d2a7cd07e8f0f02a8232b",
            ),
            (
                5,
                "183886e81b2e887d5960b2fa49b3464eabee62ec55ff5e6ee6f7e0495d8a01d1",
            ),
            (
                21,
                "93589633f10a1e8fe51bef0481731c7c19d7a87269127b6c6a19720668ee47da",
            ),
            (
                22,
                "e79bdcda4e58dd09c4b855964e1f1c01c99e215b6e01602f5302763effaf8637",
            ),
        ] {
            let elements: Vec<Chunk> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
            assert_eq!(composite_list_root(&elements), hex32(root), "{n} roots");
        }
    }

    #[test]
    fn progressive_bitlists_match_remerkleable() {
        for (n, root) in [
            (
                0,
                "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b",
            ),
            (
                1,
                "905efb51c2764c2c7a4efb0548e372569df06db82115c3b1896c186632f3fe5b",
            ),
            (
                8,
                "8cbcee4a4ed21464e60ee6bcf3b35b89d02d2bd8049a9437b9b357ed51787cdd",
            ),
            (
                255,
                "c3362ae9ebd383368b0b2a19d830219a39c34a482f2975536c82e16b39128702",
            ),
            (
                256,
                "25f01ef233dd44d2615671507b9a90483b7823f384453d6be67e24f0f6bfb0c6",
            ),
            (
                257,
                "3b797742367734f4124d6277656bf7206f61bf2a1fab5fab053023adb02591db",
            ),
            (
                2000,
                "14c7dee642303beb51e631c892eeba89fb508fd974d9f364d48b58e16c505b2e",
            ),
        ] {
            let bits: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            assert_eq!(bitlist_root(&bits), hex32(root), "{n} bits");
        }
    }

    #[test]
    fn progressive_containers_match_remerkleable() {
        let all = [true; 3];
        let empty_list = basic_list_root(&[], 0);
        assert_eq!(
            container_root(&[uint(0), [0; 32], empty_list], &all),
            Some(hex32(
                "338783b6b2d636d3472a477fbfb0c81f5b0e3b6017ea5f3818ac2b62aa388c1d"
            ))
        );
        assert_eq!(
            container_root(&[uint(7), [9; 32], basic_list_root(&u64s(3), 3)], &all),
            Some(hex32(
                "9fac3d16bd63667e7ef5a01bae021bbe23712da334aa682e5f9f4b1a1cf006bc"
            ))
        );
        // Gloas' ExecutionPayloadBid (12 fields, all active), default and with values.
        let bid = |slot: u64, value: u64, builder: u64, commitments: &[Chunk]| {
            let mut fields = vec![[0u8; 32]; 5]; // four hashes/roots and a 20-byte address
            fields.extend([uint(0), uint(builder), uint(slot), uint(value), uint(0)]);
            fields.push(composite_list_root(commitments));
            fields.push([0u8; 32]);
            container_root(&fields, &[true; 12])
        };
        assert_eq!(
            bid(0, 0, 0, &[]),
            Some(hex32(
                "83b932ee5875c06aa35328e3c3e3c976c703f2f4b1bc98e32991ceabbb2e4b63"
            ))
        );
        let commitment = balanced_root(&pack(&[1u8; 48]), 2);
        assert_eq!(
            bid(5, 7, 3, &[commitment]),
            Some(hex32(
                "88660dfb7724c063a59ad9adbb57ebbb0212c6c80e5611b7e89fecb056b97556"
            ))
        );
    }

    #[test]
    fn malformed_progressive_containers_have_no_root() {
        assert_eq!(container_root(&[], &[]), None, "no fields");
        assert_eq!(
            container_root(&[[0; 32]], &[true, false]),
            None,
            "ends inactive"
        );
        assert_eq!(
            container_root(&[[0; 32]], &[true, true]),
            None,
            "a root missing"
        );
        assert_eq!(
            container_root(&[[0; 32]; 257], &[true; 257]),
            None,
            "over 256"
        );
        // An inactive position is a zero chunk: [1, 0, 1] differs from [1, 1] by more than
        // the mixed-in bits.
        assert_ne!(
            container_root(&[[1; 32], [2; 32]], &[true, false, true]),
            container_root(&[[1; 32], [2; 32]], &[true, true])
        );
    }
}
