//! The consensus-spec preset a network is built on, the few SSZ sizes it fixes for what a sign
//! request carries, and the bitfields whose size follows it.
//!
//! Of everything a sign request carries, only these sizes differ between the presets
//! (consensus-specs `presets/{mainnet,minimal}/*.yaml`; gnosis: the `gnosis` preset files of
//! gnosischain/configs and Lighthouse's `GnosisEthSpec`):
//!
//! | size | mainnet | minimal | gnosis | carried by |
//! |---|---|---|---|---|
//! | `MAX_COMMITTEES_PER_SLOT` | 64 | 4 | 64 | electra `Attestation.committee_bits` and its `aggregation_bits` limit (× `MAX_VALIDATORS_PER_COMMITTEE`, 2048 in all three) |
//! | `SYNC_COMMITTEE_SIZE` | 512 | 32 | 512 | altair `SyncAggregate.sync_committee_bits` |
//! | `SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT` (4 in all) | 128 | 8 | 128 | `SyncCommitteeContribution.aggregation_bits` |
//! | `PTC_SIZE` | 512 | 16 | 512 | gloas `PayloadAttestation.aggregation_bits` (gnosis has no gloas preset yet: mainnet's) |
//! | `SLOTS_PER_EPOCH` | 32 | 8 | 16 | not a size: which epoch a slot is in |
//!
//! The phase0 block body's list limits (`MAX_ATTESTATIONS`, `MAX_DEPOSITS`, …), the deposit proof
//! depth and `MAX_VALIDATORS_PER_COMMITTEE` are the same in all three, so those containers keep
//! compile-time sizes. Bellatrix and later blocks reach the signer as headers only.
//!
//! The sizes that differ are known only at run time, so the bitfields that carry them,
//! [`Bitvector`] and [`Bitlist`], hold their length or limit, hash with it, and are made only
//! through a check against the preset.

use std::fmt;

use super::wire::{RawBitlist, RawBitvector};

/// A consensus-spec preset (`PRESET_BASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// `mainnet`: Ethereum mainnet and its testnets.
    Mainnet,
    /// `minimal`: client CI and many devnets.
    Minimal,
    /// `gnosis`: Gnosis chain and Chiado (mainnet sizes, 16 slots per epoch).
    Gnosis,
}

/// `MAX_VALIDATORS_PER_COMMITTEE`: the same in every preset.
const MAX_VALIDATORS_PER_COMMITTEE: usize = 2048;
/// `SYNC_COMMITTEE_SUBNET_COUNT`: a constant of the altair validator spec, not a preset value.
const SYNC_COMMITTEE_SUBNET_COUNT: usize = 4;

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 3] = [Preset::Mainnet, Preset::Minimal, Preset::Gnosis];

    /// The preset named `name` as `PRESET_BASE` spells it (exact, lowercase).
    pub(crate) fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name, as `PRESET_BASE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Mainnet => "mainnet",
            Preset::Minimal => "minimal",
            Preset::Gnosis => "gnosis",
        }
    }

    /// `SLOTS_PER_EPOCH`.
    pub fn slots_per_epoch(self) -> u64 {
        match self {
            Preset::Mainnet => 32,
            Preset::Minimal => 8,
            Preset::Gnosis => 16,
        }
    }

    /// One of the sizes that differ between presets.
    /// `SYNC_COMMITTEE_SIZE`.
    pub(crate) fn sync_committee_size(self) -> u64 {
        self.size(Size::SyncCommittee) as u64
    }

    /// `MAX_COMMITTEES_PER_SLOT`.
    pub(crate) fn max_committees_per_slot(self) -> u64 {
        self.size(Size::CommitteesPerSlot) as u64
    }

    pub(crate) fn size(self, size: Size) -> usize {
        let committees_per_slot = match self {
            Preset::Mainnet | Preset::Gnosis => 64,
            Preset::Minimal => 4,
        };
        let sync_committee_size = match self {
            Preset::Mainnet | Preset::Gnosis => 512,
            Preset::Minimal => 32,
        };
        match size {
            Size::CommitteesPerSlot => committees_per_slot,
            Size::ValidatorsPerSlot => MAX_VALIDATORS_PER_COMMITTEE * committees_per_slot,
            Size::SyncCommittee => sync_committee_size,
            Size::SyncSubcommittee => sync_committee_size / SYNC_COMMITTEE_SUBNET_COUNT,
            Size::Ptc => match self {
                Preset::Mainnet | Preset::Gnosis => 512,
                Preset::Minimal => 16,
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The preset sizes a sign request's bitfields have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    /// `MAX_COMMITTEES_PER_SLOT`.
    CommitteesPerSlot,
    /// Electra's `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT`.
    ValidatorsPerSlot,
    /// `SYNC_COMMITTEE_SIZE`.
    SyncCommittee,
    /// `SYNC_COMMITTEE_SIZE // SYNC_COMMITTEE_SUBNET_COUNT`.
    SyncSubcommittee,
    /// Gloas `PTC_SIZE`: a `PayloadAttestation`'s `aggregation_bits`.
    Ptc,
}

impl Size {
    /// The size as the specs write it, for error messages.
    fn spec_name(self) -> &'static str {
        match self {
            Size::CommitteesPerSlot => "MAX_COMMITTEES_PER_SLOT",
            Size::ValidatorsPerSlot => "MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT",
            Size::SyncCommittee => "SYNC_COMMITTEE_SIZE",
            Size::SyncSubcommittee => "SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT",
            Size::Ptc => "PTC_SIZE",
        }
    }
}

/// Chunks of 32 bytes that `bits` bits fill: the leaf count of a bitfield's merkle tree.
fn chunks(bits: usize) -> usize {
    bits.div_ceil(256)
}

/// An SSZ `Bitvector[N]` with `N` a preset size. Only [`Bitvector::sized`] makes one, so its
/// bytes are exactly `ceil(N / 8)` with no bit set past `N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitvector {
    bytes: Vec<u8>,
    len: usize,
}

impl Bitvector {
    /// The `field`'s raw bytes as a `Bitvector[size of preset]`.
    pub(crate) fn sized(
        raw: RawBitvector,
        field: &str,
        preset: Preset,
        size: Size,
    ) -> Result<Bitvector, String> {
        let len = preset.size(size);
        let name = size.spec_name();
        let bytes = raw.0;
        if bytes.len() != len.div_ceil(8) {
            return Err(format!(
                "{field}: {} bits, the {preset} preset's {name} is {len}",
                bytes.len() * 8
            ));
        }
        // Bits past `len` in the last byte must be zero (SSZ); none when len is a multiple of 8.
        let excess = match (len % 8, bytes.last()) {
            (0, _) | (_, None) => false,
            (used, Some(&last)) => last >> used != 0,
        };
        if excess {
            return Err(format!(
                "{field}: bits set past the {preset} preset's {name} of {len}"
            ));
        }
        Ok(Bitvector { bytes, len })
    }
}

tree_hash_by_root!([] Bitvector, Vector, |this| tree_hash::merkle_root(
    &this.bytes,
    chunks(this.len)
));

/// An SSZ `Bitlist[N]` with `N` a preset size. Only [`Bitlist::sized`] makes one, so it has at
/// most `N` bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitlist {
    /// The bits without the length bit: `ceil(len / 8)` bytes.
    bits: Vec<u8>,
    len: usize,
    limit: usize,
}

impl Bitlist {
    /// The `field`'s raw SSZ bitlist as a `Bitlist[size of preset]`.
    pub(crate) fn sized(
        raw: &RawBitlist,
        field: &str,
        preset: Preset,
        size: Size,
    ) -> Result<Bitlist, String> {
        let limit = preset.size(size);
        let len = raw
            .bit_len()
            .ok_or_else(|| format!("{field}: bitlist without length bit"))?;
        if len > limit {
            return Err(format!(
                "{field}: {len} bits, over the {preset} preset's limit {} = {limit}",
                size.spec_name()
            ));
        }
        // The length bit is bit `len % 8` of byte `len / 8`, the last one: clear it, and drop
        // that byte when it held nothing else.
        let mut bits = raw.0.clone();
        if let Some(last) = bits.get_mut(len / 8) {
            *last &= !(1u8 << (len % 8));
        }
        bits.truncate(len.div_ceil(8));
        Ok(Bitlist { bits, len, limit })
    }
}

tree_hash_by_root!([] Bitlist, List, |this| {
    let root = tree_hash::merkle_root(&this.bits, chunks(this.limit));
    tree_hash::mix_in_length(&root, this.len)
});

#[cfg(test)]
mod tests {
    use super::*;
    use ssz::Decode;
    use ssz_types::{BitList, BitVector};
    use tree_hash::TreeHash;
    use typenum::{U128, U131072, U32, U4, U512, U64, U8, U8192};

    fn raw_vector(hex: &str) -> RawBitvector {
        serde_json::from_str(&format!("\"{hex}\"")).expect("raw bitvector")
    }

    fn raw_list(hex: &str) -> RawBitlist {
        serde_json::from_str(&format!("\"{hex}\"")).expect("raw bitlist")
    }

    /// xorshift64: deterministic bytes for the comparisons below.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn sizes_are_the_presets() {
        use Size::*;
        let table = [
            (Preset::Mainnet, [64, 131_072, 512, 128, 512], 32),
            (Preset::Minimal, [4, 8_192, 32, 8, 16], 8),
            (Preset::Gnosis, [64, 131_072, 512, 128, 512], 16),
        ];
        for (preset, sizes, slots) in table {
            let got = [
                CommitteesPerSlot,
                ValidatorsPerSlot,
                SyncCommittee,
                SyncSubcommittee,
                Ptc,
            ]
            .map(|s| preset.size(s));
            assert_eq!(got, sizes, "{preset}");
            assert_eq!(preset.slots_per_epoch(), slots, "{preset}");
            assert_eq!(Preset::from_name(preset.name()), Some(preset));
        }
        assert_eq!(Preset::from_name("Minimal"), None);
        assert_eq!(Preset::from_name("minimal "), None);
    }

    /// Our run-time sized roots equal ssz_types' compile-time sized ones.
    #[test]
    fn bitvector_roots_are_ssz_types_roots() {
        fn check<N: typenum::Unsigned + Clone>(preset: Preset, size: Size, seed: &mut u64) {
            for _ in 0..20 {
                let mut b = bytes(seed, N::to_usize().div_ceil(8));
                if N::to_usize() % 8 != 0 {
                    if let Some(last) = b.last_mut() {
                        *last &= (1u8 << (N::to_usize() % 8)) - 1;
                    }
                }
                let ours =
                    Bitvector::sized(RawBitvector(b.clone()), "f", preset, size).expect("sized");
                let theirs = BitVector::<N>::from_ssz_bytes(&b).expect("ssz");
                assert_eq!(ours.tree_hash_root(), theirs.tree_hash_root(), "{b:02x?}");
            }
        }
        let mut seed = 0x1234_5678_9abc_def1;
        check::<U4>(Preset::Minimal, Size::CommitteesPerSlot, &mut seed);
        check::<U64>(Preset::Mainnet, Size::CommitteesPerSlot, &mut seed);
        check::<U32>(Preset::Minimal, Size::SyncCommittee, &mut seed);
        check::<U512>(Preset::Gnosis, Size::SyncCommittee, &mut seed);
        check::<U8>(Preset::Minimal, Size::SyncSubcommittee, &mut seed);
        check::<U128>(Preset::Mainnet, Size::SyncSubcommittee, &mut seed);
    }

    #[test]
    fn bitlist_roots_are_ssz_types_roots() {
        fn check<N: typenum::Unsigned + Clone>(preset: Preset, seed: &mut u64) {
            let limit = N::to_usize();
            for len in [0, 1, 7, 8, 9, 255, 256, 257, 1000, limit - 1, limit] {
                let mut b = bytes(seed, len / 8 + 1);
                // Bit `len` is the length bit; none above it.
                if let Some(last) = b.last_mut() {
                    *last = (*last & ((1u8 << (len % 8)) - 1)) | (1u8 << (len % 8));
                }
                let raw = RawBitlist(b.clone());
                let ours =
                    Bitlist::sized(&raw, "f", preset, Size::ValidatorsPerSlot).expect("sized");
                let theirs = BitList::<N>::from_ssz_bytes(&b).expect("ssz");
                assert_eq!(theirs.len(), len);
                assert_eq!(ours.tree_hash_root(), theirs.tree_hash_root(), "len {len}");
            }
        }
        let mut seed = 0x0fed_cba9_8765_4321;
        check::<U8192>(Preset::Minimal, &mut seed);
        check::<U131072>(Preset::Mainnet, &mut seed);
    }

    #[test]
    fn wrong_sizes_name_the_field_the_preset_and_the_size() {
        let mainnet_sync = raw_vector(&format!("0x{}", "ff".repeat(64)));
        let err = Bitvector::sized(
            mainnet_sync.clone(),
            "sync_committee_bits",
            Preset::Minimal,
            Size::SyncCommittee,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "sync_committee_bits: 512 bits, the minimal preset's SYNC_COMMITTEE_SIZE is 32"
        );
        assert!(Bitvector::sized(
            mainnet_sync,
            "sync_committee_bits",
            Preset::Gnosis,
            Size::SyncCommittee
        )
        .is_ok());

        let err = Bitvector::sized(
            raw_vector("0x1f"),
            "committee_bits",
            Preset::Minimal,
            Size::CommitteesPerSlot,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "committee_bits: bits set past the minimal preset's MAX_COMMITTEES_PER_SLOT of 4"
        );
        assert!(Bitvector::sized(
            raw_vector("0x0f"),
            "committee_bits",
            Preset::Minimal,
            Size::CommitteesPerSlot
        )
        .is_ok());

        // 8193 bits: 1024 bytes of bits and the length bit in byte 1025.
        let over = raw_list(&format!("0x{}03", "ff".repeat(1024)));
        let err = Bitlist::sized(
            &over,
            "aggregation_bits",
            Preset::Minimal,
            Size::ValidatorsPerSlot,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "aggregation_bits: 8193 bits, over the minimal preset's limit \
             MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT = 8192"
        );
        assert!(Bitlist::sized(
            &over,
            "aggregation_bits",
            Preset::Mainnet,
            Size::ValidatorsPerSlot
        )
        .is_ok());
    }
}
