//! The Beacon-API JSON encodings the sign request uses: uint64 as a decimal string (a plain JSON
//! number is accepted too), bytes as `0x` hex of an exact length, bitfields as `0x` hex of their
//! SSZ bytes, lists as arrays whose SSZ limit is enforced while parsing (an over-long list is
//! refused before it is buffered). Error messages never echo the input.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use ssz::Decode;
use ssz_types::{BitList, FixedVector, VariableList};
use typenum::Unsigned;

/// `N` bytes (an SSZ `ByteVector[N]`: a root, a version, a BLS key or signature), `0x` hex in
/// JSON. BLS values are carried as bytes: the signer signs over them, it never checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for Bytes<N> {
    fn default() -> Self {
        Bytes([0; N])
    }
}

tree_hash_by_root!([const N: usize] Bytes<N>, Vector, |this| this.0.tree_hash_root());

impl<'de, const N: usize> Deserialize<'de> for Bytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_str(HexVisitor { min: N, max: N })?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(Bytes(out))
    }
}

/// Decodes `0x`-prefixed hex of between `min` and `max` bytes.
pub(crate) struct HexVisitor {
    pub min: usize,
    pub max: usize,
}

impl Visitor<'_> for HexVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "0x-prefixed hex of {} bytes", self.min)
        } else {
            write!(f, "0x-prefixed hex of {} to {} bytes", self.min, self.max)
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
        let digits = s
            .strip_prefix("0x")
            .ok_or_else(|| E::custom("hex value without its 0x prefix"))?;
        if digits.len() % 2 != 0 {
            return Err(E::custom("hex value with an odd number of digits"));
        }
        let len = digits.len() / 2;
        if len < self.min || len > self.max {
            return Err(if self.min == self.max {
                E::custom(format_args!("expected {} hex bytes, got {len}", self.min))
            } else {
                E::custom(format_args!(
                    "expected {} to {} hex bytes, got {len}",
                    self.min, self.max
                ))
            });
        }
        hex::decode(digits).map_err(|_| E::custom("invalid hex digit"))
    }
}

/// A uint64: a decimal string of ASCII digits, or a non-negative JSON integer.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a uint64 as a decimal string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("negative value for a uint64"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom("uint64 string with characters other than 0-9"));
        }
        s.parse::<u64>()
            .map_err(|_| E::custom("uint64 string out of range"))
    }
}

/// A uint64 list element.
struct Quoted(u64);

impl<'de> Deserialize<'de> for Quoted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64(d).map(Quoted)
    }
}

/// Reads a JSON array of at most `max` elements.
struct BoundedSeq<T> {
    max: usize,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedSeq<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} elements", self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Never trust the hint beyond the limit.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(64));
        while let Some(item) = seq.next_element::<T>()? {
            if out.len() == self.max {
                return Err(de::Error::custom(format_args!(
                    "list longer than its limit of {}",
                    self.max
                )));
            }
            out.push(item);
        }
        Ok(out)
    }
}

pub(crate) fn bounded_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(BoundedSeq {
        max,
        _t: PhantomData,
    })
}

/// An SSZ `List[T, N]`.
pub(crate) fn list<'de, D, T, N>(d: D) -> Result<VariableList<T, N>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    N: Unsigned,
{
    let items = bounded_seq::<D, T>(d, N::to_usize())?;
    VariableList::new(items).map_err(|_| de::Error::custom("list longer than its limit"))
}

/// An SSZ `List[uint64, N]`.
pub(crate) fn list_u64<'de, D, N>(d: D) -> Result<VariableList<u64, N>, D::Error>
where
    D: Deserializer<'de>,
    N: Unsigned,
{
    let items = bounded_seq::<D, Quoted>(d, N::to_usize())?;
    VariableList::new(items.into_iter().map(|q| q.0).collect())
        .map_err(|_| de::Error::custom("list longer than its limit"))
}

/// An SSZ `Vector[T, N]`: exactly `N` elements.
pub(crate) fn vector<'de, D, T, N>(d: D) -> Result<FixedVector<T, N>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    N: Unsigned,
{
    let items = bounded_seq::<D, T>(d, N::to_usize())?;
    if items.len() != N::to_usize() {
        return Err(de::Error::custom(format_args!(
            "expected exactly {} elements, got {}",
            N::to_usize(),
            items.len()
        )));
    }
    FixedVector::new(items).map_err(|_| de::Error::custom("vector of the wrong length"))
}

/// The SSZ bytes of a bitlist, checked for shape (non-empty, length bit in the last byte, at
/// most [`MAX_ANY_BITLIST_BITS`] bits) but not yet typed: the limit depends on the container and
/// may depend on the preset ([`bitlist_from_ssz`], `preset::Bitlist::sized`).
#[derive(Debug, Clone)]
pub(crate) struct RawBitlist(pub Vec<u8>);

impl RawBitlist {
    /// The number of bits (without the length bit); `None` without a length bit.
    pub(crate) fn bit_len(&self) -> Option<usize> {
        bitlist_len(&self.0)
    }
}

/// The largest bitlist any request carries in any preset: Electra's
/// `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT` bits on mainnet (and gnosis).
const MAX_ANY_BITLIST_BITS: usize = 2048 * 64;

impl<'de> Deserialize<'de> for RawBitlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_str(HexVisitor {
            min: 1,
            max: MAX_ANY_BITLIST_BITS / 8 + 1,
        })?;
        match bitlist_len(&bytes) {
            Some(n) if n <= MAX_ANY_BITLIST_BITS => Ok(RawBitlist(bytes)),
            Some(_) => Err(de::Error::custom("bitlist longer than its limit")),
            None => Err(de::Error::custom(
                "bitlist without its length bit in the last byte",
            )),
        }
    }
}

/// The bit length an SSZ bitlist encodes, or `None` if the last byte has no length bit.
pub(crate) fn bitlist_len(bytes: &[u8]) -> Option<usize> {
    let (&last, rest) = bytes.split_last()?;
    if last == 0 {
        return None;
    }
    let high = 7 - last.leading_zeros() as usize;
    Some(rest.len() * 8 + high)
}

/// Types raw bitlist bytes as `Bitlist[N]`; `what` names the field in the error.
pub(crate) fn bitlist_from_ssz<N: Unsigned + Clone>(
    raw: &RawBitlist,
    what: &str,
) -> Result<BitList<N>, String> {
    let bits = raw
        .bit_len()
        .ok_or_else(|| format!("{what}: bitlist without length bit"))?;
    if bits > N::to_usize() {
        return Err(format!(
            "{what}: bitlist of {bits} bits, over its limit of {}",
            N::to_usize()
        ));
    }
    BitList::<N>::from_ssz_bytes(&raw.0).map_err(|_| format!("{what}: invalid bitlist"))
}

/// The bytes of a bitvector whose length the preset decides, not yet checked against it
/// (`preset::Bitvector::sized` does that, naming the field and the preset's size).
#[derive(Debug, Clone)]
pub(crate) struct RawBitvector(pub Vec<u8>);

/// Far more than the largest bitvector of any preset (`SYNC_COMMITTEE_SIZE` 512 bits, 64
/// bytes), so that a wrong size is reported against the preset rather than as bad hex.
const MAX_RAW_BITVECTOR_BYTES: usize = 1024;

impl<'de> Deserialize<'de> for RawBitvector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(HexVisitor {
            min: 1,
            max: MAX_RAW_BITVECTOR_BYTES,
        })
        .map(RawBitvector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use typenum::{U16, U4, U8};

    #[derive(serde::Deserialize)]
    struct N {
        #[serde(deserialize_with = "u64")]
        v: u64,
    }

    fn num(json: &str) -> Result<u64, String> {
        serde_json::from_str::<N>(json)
            .map(|n| n.v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn uint64_accepts_decimal_strings_and_plain_numbers() {
        assert_eq!(num(r#"{"v":"18446744073709551615"}"#), Ok(u64::MAX));
        assert_eq!(num(r#"{"v":7}"#), Ok(7));
        assert_eq!(num(r#"{"v":"007"}"#), Ok(7));
        for bad in [
            r#"{"v":"18446744073709551616"}"#,
            r#"{"v":"+1"}"#,
            r#"{"v":"-1"}"#,
            r#"{"v":-1}"#,
            r#"{"v":1.5}"#,
            r#"{"v":1e30}"#,
            r#"{"v":""}"#,
            r#"{"v":" 1"}"#,
            r#"{"v":"0x10"}"#,
            r#"{"v":null}"#,
            r#"{"v":[1]}"#,
        ] {
            assert!(num(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_need_prefix_and_exact_length() {
        let ok: Bytes<4> = serde_json::from_str(r#""0x0102aBcD""#).unwrap();
        assert_eq!(ok.0, [1, 2, 0xab, 0xcd]);
        for bad in [
            r#""01020304""#,
            r#""0x010203""#,
            r#""0x0102030405""#,
            r#""0x0102030""#,
            r#""0x0102030g""#,
            r#""0x010203é""#,
            "4",
        ] {
            assert!(serde_json::from_str::<Bytes<4>>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bitlists_are_checked_for_length_bit_and_limit() {
        let raw: RawBitlist = serde_json::from_str(r#""0x0d""#).unwrap();
        assert_eq!(raw.bit_len(), Some(3));
        assert!(bitlist_from_ssz::<U4>(&raw, "x").is_ok());
        let raw: RawBitlist = serde_json::from_str(r#""0xff01""#).unwrap();
        assert_eq!(raw.bit_len(), Some(8));
        assert!(bitlist_from_ssz::<U8>(&raw, "x").is_ok());
        assert!(bitlist_from_ssz::<U4>(&raw, "x").is_err());
        for bad in [r#""0x""#, r#""0x00""#, r#""0x0100""#] {
            assert!(serde_json::from_str::<RawBitlist>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_bitvectors_are_bounded_hex() {
        let ok: RawBitvector = serde_json::from_str(r#""0x0f00""#).unwrap();
        assert_eq!(ok.0, [0x0f, 0]);
        let longest = format!("\"0x{}\"", "ff".repeat(MAX_RAW_BITVECTOR_BYTES));
        assert!(serde_json::from_str::<RawBitvector>(&longest).is_ok());
        let over = format!("\"0x{}\"", "ff".repeat(MAX_RAW_BITVECTOR_BYTES + 1));
        for bad in [r#""0x""#, r#""0f""#, r#""0x0""#, "3", over.as_str()] {
            assert!(serde_json::from_str::<RawBitvector>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_stop_at_their_limit() {
        #[derive(serde::Deserialize)]
        struct L {
            #[serde(deserialize_with = "list_u64")]
            l: VariableList<u64, U4>,
        }
        assert_eq!(
            serde_json::from_str::<L>(r#"{"l":["1",2,"3","4"]}"#)
                .unwrap()
                .l
                .len(),
            4
        );
        let err = serde_json::from_str::<L>(r#"{"l":["1","2","3","4","5"]}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("limit"), "{err}");
        #[derive(serde::Deserialize)]
        struct V {
            #[serde(deserialize_with = "vector")]
            _v: FixedVector<Bytes<1>, U16>,
        }
        assert!(serde_json::from_str::<V>(r#"{"_v":["0x01"]}"#).is_err());
    }
}
