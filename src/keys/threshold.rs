//! Threshold BLS: Shamir shares of a validator secret over the BLS12-381 scalar field, partial
//! signatures, Lagrange combination at x = 0, and the checks that name a faulty share. It owns
//! the mathematics only; which devices are asked, in what order and with what hedging is the
//! scheduler's business, and where shares are stored is [`crate::keys::provision`]'s.
//!
//! Speed: a request hashes its signing root to G2 once ([`HashedMessage`]); each partial is then
//! one constant-time G2 multiplication of that point. The Lagrange coefficient λᵢ can be folded
//! into the share's scalar ([`partial_sign_weighted`]: σ'ᵢ = (λᵢ·skᵢ)·H(m)) so the combination
//! is t point additions ([`combine_weighted`]) instead of t more 255-bit multiplications
//! ([`combine`]); `crate::bench::combine` measures that as a fifth of a verified 2-of-3 signature's
//! CPU time. Folding needs the subset fixed before asking; a hedged request that swaps a device
//! asks the new one with the new subset's λ, and [`unweight`] recovers a plain partial. Plain
//! partials ([`partial_sign`]) verify against the share's own public key, which is how a failed
//! combination names its faulty share. The combined signature is verified with the already
//! hashed point ([`verify_hashed`]), or — the larger win, since verification is over half the
//! cost — with others in a batch ([`verify_batch`]: one Miller loop per distinct signing root and
//! one final exponentiation for the whole batch, the random weights applied by multi-scalar
//! multiplication). A coordinator verifies participants' partials and the signatures combined
//! from them many signatures at a time ([`combine_many_verified`]), and combines with small
//! integer coefficients where the ids allow (at most one 255-bit multiplication, not t).
//!
//! Field and curve arithmetic come from `blst` itself, the library that already signs for us,
//! rather than a second curve crate: its constant-time scalar multiplication (the same routine
//! as its `sign`), its Montgomery-form scalar field and its hash-to-curve. The few entry points
//! the safe `blst` API lacks are wrapped one call each in the private `ffi` module below, the
//! only `unsafe` in this crate's key handling. Secret scalars (polynomial coefficients, shares,
//! λᵢ·skᵢ) live in types that wipe themselves on drop.

use std::collections::HashSet;

use blst::min_pk::{AggregatePublicKey, AggregateSignature, PublicKey, SecretKey, Signature};
use blst::{blst_fp12, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine, blst_scalar, Pairing};
use hsm::Device;

use crate::bls;
use crate::error::{Result, SignerError};
use crate::keys::record::{KeyRecord, PublicKeyBytes, ShareId, ShareRecord};

/// The few `blst` functions without a safe wrapper, one `unsafe` call each. Every pointer passed
/// comes from a Rust reference to a live, correctly typed value, and blst writes only through
/// the `out`/`ret` pointer, so no call can alias, dangle or overflow.
#[allow(unsafe_code)]
mod ffi {
    use blst::{blst_fr, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine, blst_scalar};
    use zeroize::Zeroize;

    /// An element of the scalar field Fr (mod r), in blst's Montgomery form; wiped on drop
    /// because it often holds a secret.
    #[derive(Clone, Default)]
    pub(super) struct Fr(blst_fr);

    impl Drop for Fr {
        fn drop(&mut self) {
            self.0.l.zeroize();
        }
    }

    impl Fr {
        pub(super) fn from_u64(x: u64) -> Fr {
            let limbs = [x, 0, 0, 0];
            let mut out = Fr::default();
            // SAFETY: reads the four u64 limbs of `limbs`, writes one blst_fr into `out`.
            unsafe { blst::blst_fr_from_uint64(&mut out.0, limbs.as_ptr()) };
            out
        }

        /// From a little-endian scalar (any 256-bit value; reduced mod r).
        pub(super) fn from_scalar(s: &blst_scalar) -> Fr {
            let mut out = Fr::default();
            // SAFETY: reads the 32 bytes of `s`, writes one blst_fr into `out`.
            unsafe { blst::blst_fr_from_scalar(&mut out.0, s) };
            out
        }

        /// To a little-endian scalar (wiped on drop by blst's own `Zeroize`).
        pub(super) fn to_scalar(&self) -> blst_scalar {
            let mut out = blst_scalar::default();
            // SAFETY: reads one blst_fr, writes the 32 bytes of `out`.
            unsafe { blst::blst_scalar_from_fr(&mut out, &self.0) };
            out
        }

        pub(super) fn add(&self, b: &Fr) -> Fr {
            let mut out = Fr::default();
            // SAFETY: reads two blst_fr, writes one; `out` is distinct from both inputs.
            unsafe { blst::blst_fr_add(&mut out.0, &self.0, &b.0) };
            out
        }

        pub(super) fn sub(&self, b: &Fr) -> Fr {
            let mut out = Fr::default();
            // SAFETY: reads two blst_fr, writes one; `out` is distinct from both inputs.
            unsafe { blst::blst_fr_sub(&mut out.0, &self.0, &b.0) };
            out
        }

        pub(super) fn mul(&self, b: &Fr) -> Fr {
            let mut out = Fr::default();
            // SAFETY: reads two blst_fr, writes one; `out` is distinct from both inputs.
            unsafe { blst::blst_fr_mul(&mut out.0, &self.0, &b.0) };
            out
        }

        /// The inverse, or `None` for zero (whose "inverse" blst returns as zero).
        pub(super) fn inverse(&self) -> Option<Fr> {
            if self.is_zero() {
                return None;
            }
            let mut out = Fr::default();
            // SAFETY: reads one blst_fr, writes one; constant time.
            unsafe { blst::blst_fr_inverse(&mut out.0, &self.0) };
            Some(out)
        }

        pub(super) fn is_zero(&self) -> bool {
            self.0.l.iter().all(|&l| l == 0)
        }
    }

    /// Hash `msg` to G2 (RFC 9380 `hash_to_curve`, SSWU) with domain separation tag `dst`.
    pub(super) fn hash_to_g2(msg: &[u8], dst: &[u8]) -> blst_p2 {
        let mut out = blst_p2::default();
        // SAFETY: reads `msg.len()` bytes of `msg` and `dst.len()` of `dst` (an empty `aug`
        // with length 0 is never read), writes one blst_p2.
        unsafe {
            blst::blst_hash_to_g2(
                &mut out,
                msg.as_ptr(),
                msg.len(),
                dst.as_ptr(),
                dst.len(),
                std::ptr::null(),
                0,
            )
        };
        out
    }

    /// `sk · p` for a secret scalar: blst's signing multiplication (constant time, with the
    /// result normalised in constant time), so a partial equals blst's own signature bytes.
    pub(super) fn mult_secret(p: &blst_p2, sk: &blst_scalar) -> blst_p2 {
        let mut out = blst_p2::default();
        // SAFETY: reads one blst_p2 and the 32 bytes of `sk`, writes one blst_p2.
        unsafe { blst::blst_sign_pk_in_g1(&mut out, p, sk) };
        out
    }

    /// `s · p` for a public scalar (a Lagrange coefficient): blst's GLS multiplication.
    pub(super) fn mult_public(p: &blst_p2, s: &blst_scalar) -> blst_p2 {
        let mut out = blst_p2::default();
        // SAFETY: reads one blst_p2 and exactly 255 bits (32 bytes) of `s.b`, writes one blst_p2.
        unsafe { blst::blst_p2_mult(&mut out, p, s.b.as_ptr(), 255) };
        out
    }

    /// `s · p` in G1 for a public scalar (a Lagrange coefficient applied to a share's public
    /// key).
    pub(super) fn mult_public_g1(p: &blst_p1, s: &blst_scalar) -> blst_p1 {
        let mut out = blst_p1::default();
        // SAFETY: reads one blst_p1 and exactly 255 bits (32 bytes) of `s.b`, writes one blst_p1.
        unsafe { blst::blst_p1_mult(&mut out, p, s.b.as_ptr(), 255) };
        out
    }

    /// The Miller loop of the pairs (`qs`ᵢ, `ps`ᵢ), multiplied together, on the calling thread
    /// (the safe `blst_fp12::miller_loop_n` hands its pairs to blst's thread pool, whose threads
    /// take the OS priority of the thread that started the pool: a block's verification then
    /// waited for a bulk thread's turn). `qs` and `ps` of one length, at least one.
    pub(super) fn miller_loop_n(qs: &[blst_p2_affine], ps: &[blst_p1_affine]) -> blst::blst_fp12 {
        let n = qs.len().min(ps.len());
        let q: Vec<*const blst_p2_affine> = qs[..n].iter().map(|p| p as *const _).collect();
        let p: Vec<*const blst_p1_affine> = ps[..n].iter().map(|p| p as *const _).collect();
        let mut out = blst::blst_fp12::default();
        if n == 0 {
            return out;
        }
        // SAFETY: `q` and `p` hold `n` pointers each, to live affine points; writes one fp12.
        unsafe { blst::blst_miller_loop_n(&mut out, q.as_ptr(), p.as_ptr(), n) };
        out
    }

    /// `c · p` in G2 for a small public integer `c` (a scaled Lagrange coefficient): as many
    /// doublings as `|c|` has bits, negated when `c` is negative.
    pub(super) fn mult_small_g2(p: &blst_p2, c: i64) -> blst_p2 {
        let m = c.unsigned_abs();
        let mut out = if m == 1 {
            *p
        } else {
            let le = m.to_le_bytes();
            let bits = (64 - m.leading_zeros()) as usize;
            let mut out = blst_p2::default();
            // SAFETY: reads one blst_p2 and `bits` (at most 64) bits of the 8 bytes of `le`,
            // writes one blst_p2.
            unsafe { blst::blst_p2_mult(&mut out, p, le.as_ptr(), bits) };
            out
        };
        // SAFETY: negates the one blst_p2 it is given, in place.
        unsafe { blst::blst_p2_cneg(&mut out, c < 0) };
        out
    }

    /// `a + b` in G2 (either may be the point at infinity, or both equal).
    pub(super) fn add_g2(a: &blst_p2, b: &blst_p2) -> blst_p2 {
        let mut out = blst_p2::default();
        // SAFETY: reads two blst_p2, writes one.
        unsafe { blst::blst_p2_add_or_double(&mut out, a, b) };
        out
    }

    /// `fn $name(points, weights)`: Σ rᵢ·pᵢ for public 64-bit weights (little-endian bytes),
    /// one per point (extra ones of either are ignored; none gives the point at infinity):
    /// blst's multi-scalar multiplication (a table of small multiples for a few points,
    /// Pippenger's buckets for many).
    macro_rules! msm_u64 {
        ($name:ident, $point:ty, $affine:ty, $sizeof:path, $mult:path) => {
            pub(super) fn $name<'a>(
                points: impl IntoIterator<Item = &'a $affine>,
                weights: &[[u8; 8]],
            ) -> $point {
                let pts: Vec<*const $affine> = points
                    .into_iter()
                    .take(weights.len())
                    .map(|p| p as *const $affine)
                    .collect();
                let n = pts.len();
                let scs: Vec<*const u8> = weights[..n].iter().map(|w| w.as_ptr()).collect();
                let mut out = <$point>::default();
                if n == 0 {
                    return out;
                }
                // SAFETY: asks the scratch size for `n` points, which has no other effect.
                let bytes = unsafe { $sizeof(n) };
                let mut scratch =
                    vec![0 as blst::limb_t; bytes.div_ceil(std::mem::size_of::<blst::limb_t>())];
                // SAFETY: `pts` and `scs` hold `n` pointers each, to live affine points and to
                // 8-byte weights of which 64 bits are read; `scratch` has the size blst asked
                // for; writes one point.
                unsafe {
                    $mult(
                        &mut out,
                        pts.as_ptr(),
                        n,
                        scs.as_ptr(),
                        64,
                        scratch.as_mut_ptr(),
                    )
                };
                out
            }
        };
    }
    msm_u64!(
        msm_u64_g1,
        blst_p1,
        blst_p1_affine,
        blst::blst_p1s_mult_pippenger_scratch_sizeof,
        blst::blst_p1s_mult_pippenger
    );
    msm_u64!(
        msm_u64_g2,
        blst_p2,
        blst_p2_affine,
        blst::blst_p2s_mult_pippenger_scratch_sizeof,
        blst::blst_p2s_mult_pippenger
    );
}

use ffi::Fr;

/// A Lagrange coefficient λᵢ = Π_{j≠i} xⱼ / (xⱼ − xᵢ) mod r for one share of one subset. Public
/// (it depends only on the share ids), but kept in a wiping type like every scalar here.
#[derive(Clone)]
pub struct Coefficient(Fr);

impl Coefficient {
    /// The coefficient as 32 big-endian bytes.
    pub fn to_be_bytes(&self) -> [u8; 32] {
        let s = self.0.to_scalar();
        let mut be = s.b;
        be.reverse();
        be
    }
}

impl std::fmt::Debug for Coefficient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coefficient(0x{})", hex::encode(self.to_be_bytes()))
    }
}

/// H(m): a signing root hashed to G2 with the Ethereum ciphersuite, computed once per request
/// and shared by every partial and by the verification.
#[derive(Clone, Copy)]
pub struct HashedMessage {
    point: blst_p2,
    affine: blst_p2_affine,
}

/// The same point (the benchmark checks that hashing again gives it).
impl PartialEq for HashedMessage {
    fn eq(&self, other: &HashedMessage) -> bool {
        self.affine == other.affine
    }
}

impl HashedMessage {
    /// Hash `signing_root` with `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`.
    pub fn new(signing_root: &[u8; 32]) -> HashedMessage {
        let point = ffi::hash_to_g2(signing_root, bls::DST);
        let affine = blst_p2_affine::from(AggregateSignature::from(point).to_signature());
        HashedMessage { point, affine }
    }
}

impl std::fmt::Debug for HashedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sig = Signature::from(self.affine);
        write!(f, "HashedMessage(0x{})", hex::encode(sig.compress()))
    }
}

fn fr_of(sk: &SecretKey) -> Fr {
    let s: &blst_scalar = sk.into();
    Fr::from_scalar(s)
}

fn secret_of(x: &Fr) -> Result<SecretKey> {
    let s = x.to_scalar();
    <&SecretKey>::try_from(&s)
        .cloned()
        .map_err(|_| SignerError::Bls("a share came out as zero; split again".into()))
}

fn check_distinct(ids: &[ShareId]) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids {
        if !seen.insert(*id) {
            return Err(SignerError::Threshold(format!(
                "share id {id} appears twice"
            )));
        }
    }
    Ok(())
}

/// The default share ids 1, 2, …, n.
pub(crate) fn default_ids(n: usize) -> Vec<ShareId> {
    (1..=n as u64).filter_map(ShareId::new).collect()
}

/// Split `secret` into shares f(idᵢ) of a random polynomial f of degree `threshold` − 1 with
/// f(0) = `secret`: any `threshold` shares recover signatures of `secret`, fewer reveal nothing.
/// Needs 1 ≤ threshold ≤ ids.len() and distinct ids. The coefficients are wiped on return; the
/// shares wipe themselves when dropped.
pub fn split(
    secret: &SecretKey,
    threshold: usize,
    ids: &[ShareId],
) -> Result<Vec<(ShareId, SecretKey)>> {
    if threshold == 0 || threshold > ids.len() {
        return Err(SignerError::Threshold(format!(
            "threshold {threshold} with {} share(s): need 1 <= threshold <= shares",
            ids.len()
        )));
    }
    check_distinct(ids)?;
    // a₀ = secret; a₁…a_{t−1} uniform (EIP-2333 KeyGen over fresh OS randomness).
    let mut coefficients = Vec::with_capacity(threshold);
    coefficients.push(fr_of(secret));
    for _ in 1..threshold {
        coefficients.push(fr_of(&bls::random_secret_key()?));
    }
    evaluate(&coefficients, ids)
}

/// The shares f(idᵢ) of the polynomial with `coefficients` (a₀ first).
fn evaluate(coefficients: &[Fr], ids: &[ShareId]) -> Result<Vec<(ShareId, SecretKey)>> {
    ids.iter()
        .map(|&id| {
            let x = Fr::from_u64(id.get());
            // Horner: f(x) = (…(a_{t−1}·x + a_{t−2})·x + …)·x + a₀.
            let mut y = Fr::default();
            for a in coefficients.iter().rev() {
                y = y.mul(&x).add(a);
            }
            Ok((id, secret_of(&y)?))
        })
        .collect()
}

/// Up to this many t-subsets (C(10, 5)), a split's proof checks every one of them; beyond, the
/// n − t + 1 subsets of [`proof_subsets`] that prove the same.
const EVERY_SUBSET_UP_TO: usize = 252;

/// C(n, k), or `None` beyond `cap`.
fn binomial_up_to(n: usize, k: usize, cap: usize) -> Option<usize> {
    let k = k.min(n.checked_sub(k)?);
    let mut c: usize = 1;
    for i in 0..k {
        // c·(n − i)/(i + 1) stays an integer: it is C(n, i + 1)·(i + 1)!/(i + 1)! in steps.
        c = c.checked_mul(n - i)? / (i + 1);
        if c > cap {
            return None;
        }
    }
    Some(c)
}

/// The t-subsets of n shares (as indices, ascending) that prove a split: every one when there
/// are at most [`EVERY_SUBSET_UP_TO`]; else the first t, and for each later share k the first
/// t − 1 with k. Those suffice: if the first t recombine to the key, and so do the first t − 1
/// with k, the two polynomials agree at t points (x = 0 and t − 1 ids), so they are one and k is
/// on it; then every t-subset recombines. Empty unless 1 ≤ t ≤ n.
pub(crate) fn proof_subsets(n: usize, t: usize) -> Vec<Vec<usize>> {
    if t == 0 || t > n {
        return Vec::new();
    }
    if binomial_up_to(n, t, EVERY_SUBSET_UP_TO).is_none() {
        let first: Vec<usize> = (0..t).collect();
        let mut out = vec![first];
        out.extend((t..n).map(|k| (0..t - 1).chain([k]).collect()));
        return out;
    }
    // Every combination in lexicographic order.
    let mut out = Vec::new();
    let mut c: Vec<usize> = (0..t).collect();
    loop {
        out.push(c.clone());
        // The rightmost index that can still move right.
        let Some(i) = (0..t).rev().find(|&i| c[i] < n - t + i) else {
            return out;
        };
        c[i] += 1;
        for j in i + 1..t {
            c[j] = c[j - 1] + 1;
        }
    }
}

/// The public key at x = 0 of the polynomial through the share public keys `shares`: Σ λᵢ·PKᵢ
/// in G1. From any t share public keys of a t-of-n split this is the validator key, so a set of
/// public keys can be checked against its composite key without any secret.
pub fn interpolate_public_key(shares: &[(ShareId, PublicKey)]) -> Result<PublicKey> {
    let ids: Vec<ShareId> = shares.iter().map(|(id, _)| *id).collect();
    let lambdas = lagrange(&ids)?;
    let mut acc: Option<AggregatePublicKey> = None;
    for ((_, pk), lambda) in shares.iter().zip(&lambdas) {
        let point = blst_p1::from(AggregatePublicKey::from_public_key(pk));
        let term = AggregatePublicKey::from(ffi::mult_public_g1(&point, &lambda.to_scalar()));
        match &mut acc {
            None => acc = Some(term),
            Some(a) => a.add_aggregate(&term),
        }
    }
    acc.map(|a| a.to_public_key())
        .ok_or_else(|| SignerError::Threshold("no share public keys to interpolate".into()))
}

fn lagrange(ids: &[ShareId]) -> Result<Vec<Fr>> {
    if ids.is_empty() {
        return Err(SignerError::Threshold("no share ids to interpolate".into()));
    }
    check_distinct(ids)?;
    let xs: Vec<Fr> = ids.iter().map(|id| Fr::from_u64(id.get())).collect();
    xs.iter()
        .enumerate()
        .map(|(i, xi)| {
            let mut num = Fr::from_u64(1);
            let mut den = Fr::from_u64(1);
            for (j, xj) in xs.iter().enumerate() {
                if i != j {
                    num = num.mul(xj);
                    den = den.mul(&xj.sub(xi));
                }
            }
            let inv = den
                .inverse()
                .ok_or_else(|| SignerError::Threshold("share ids coincide mod r".into()))?;
            Ok(num.mul(&inv))
        })
        .collect()
}

/// The Lagrange coefficients at x = 0 for `ids` (distinct, non-empty), in the same order.
pub fn lagrange_at_zero(ids: &[ShareId]) -> Result<Vec<Coefficient>> {
    Ok(lagrange(ids)?.into_iter().map(Coefficient).collect())
}

fn to_signature(p: blst_p2) -> Signature {
    AggregateSignature::from(p).to_signature()
}

fn to_point(sig: &Signature) -> blst_p2 {
    blst_p2::from(AggregateSignature::from_signature(sig))
}

/// A plain partial signature skᵢ·H(m): byte for byte what blst signs with the share as a key,
/// verifiable against the share's public key.
pub fn partial_sign(share: &SecretKey, hashed: &HashedMessage) -> Signature {
    to_signature(ffi::mult_secret(&hashed.point, share.into()))
}

/// A weighted partial (λᵢ·skᵢ)·H(m) for one fixed subset: the combination is then a plain sum
/// ([`combine_weighted`]). The product λᵢ·skᵢ is a secret and is wiped on return.
pub fn partial_sign_weighted(
    share: &SecretKey,
    weight: &Coefficient,
    hashed: &HashedMessage,
) -> Signature {
    let scalar = fr_of(share).mul(&weight.0).to_scalar();
    to_signature(ffi::mult_secret(&hashed.point, &scalar))
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    (a, b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The Lagrange coefficients at 0 of small `ids` as integers: `(c, l)` with λᵢ = cᵢ / l, each
/// |cᵢ| < 2⁶³ and `l` the least common denominator (for ids 1, 2: c = (2, −1), l = 1; for 1, 3:
/// c = (3, −1), l = 2). `None` when the integers would not fit (large ids or many shares), and
/// for no ids or an id twice.
fn small_lagrange(ids: &[ShareId]) -> Option<(Vec<i64>, u64)> {
    if ids.is_empty() {
        return None;
    }
    let mut fractions = Vec::with_capacity(ids.len());
    for (i, xi) in ids.iter().enumerate() {
        let xi = i128::from(xi.get());
        let (mut num, mut den) = (1i128, 1i128);
        for (j, xj) in ids.iter().enumerate() {
            if i != j {
                let xj = i128::from(xj.get());
                num = num.checked_mul(xj)?;
                den = den.checked_mul(xj - xi)?;
            }
        }
        let g = gcd(num, den);
        if den == 0 || g == 0 {
            return None;
        }
        let (num, den) = if den < 0 {
            (-num / g, -den / g)
        } else {
            (num / g, den / g)
        };
        fractions.push((num, den));
    }
    let l = fractions
        .iter()
        .try_fold(1i128, |l, &(_, den)| (l / gcd(l, den)).checked_mul(den))?;
    let c = fractions
        .iter()
        .map(|&(num, den)| i64::try_from(num.checked_mul(l / den)?).ok())
        .collect::<Option<Vec<i64>>>()?;
    Some((c, u64::try_from(l).ok()?))
}

/// Σ λᵢ·σᵢ as l⁻¹·Σ cᵢ·σᵢ with the small integers of [`small_lagrange`]: a few doublings and
/// additions per partial and at most one 255-bit multiplication (by l⁻¹, none when l = 1),
/// where the general form makes t of them.
fn combine_small(partials: &[(ShareId, Signature)], c: &[i64], l: u64) -> Option<Signature> {
    let mut acc = blst_p2::default();
    for ((_, sig), &ci) in partials.iter().zip(c) {
        acc = ffi::add_g2(&acc, &ffi::mult_small_g2(&to_point(sig), ci));
    }
    if l != 1 {
        acc = ffi::mult_public(&acc, &Fr::from_u64(l).inverse()?.to_scalar());
    }
    Some(to_signature(acc))
}

/// Σ λᵢ·σᵢ over plain partials, with λᵢ the Lagrange coefficients at 0 of their ids. With at
/// least `threshold` correct partials this is the validator's signature; verify it before use.
pub fn combine(partials: &[(ShareId, Signature)]) -> Result<Signature> {
    let ids: Vec<ShareId> = partials.iter().map(|(id, _)| *id).collect();
    // No ids, or one twice: the field path below refuses them.
    if let Some((c, l)) = small_lagrange(&ids) {
        if let Some(sig) = combine_small(partials, &c, l) {
            return Ok(sig);
        }
    }
    let lambdas = lagrange(&ids)?;
    let mut acc: Option<AggregateSignature> = None;
    for ((_, sig), lambda) in partials.iter().zip(&lambdas) {
        let term = AggregateSignature::from(ffi::mult_public(&to_point(sig), &lambda.to_scalar()));
        match &mut acc {
            None => acc = Some(term),
            Some(a) => a.add_aggregate(&term),
        }
    }
    acc.map(|a| a.to_signature())
        .ok_or_else(|| SignerError::Threshold("no partial signatures to combine".into()))
}

/// Σ σ'ᵢ over weighted partials of one subset (each made with that subset's coefficients).
pub fn combine_weighted(partials: &[Signature]) -> Result<Signature> {
    let refs: Vec<&Signature> = partials.iter().collect();
    AggregateSignature::aggregate(&refs, false)
        .map(|a| a.to_signature())
        .map_err(|_| SignerError::Threshold("no partial signatures to combine".into()))
}

/// Turn a weighted partial back into the plain one (σᵢ = λᵢ⁻¹·σ'ᵢ), to check it against the
/// share's public key.
pub(crate) fn unweight(partial: &Signature, weight: &Coefficient) -> Result<Signature> {
    let inv = weight
        .0
        .inverse()
        .ok_or_else(|| SignerError::Threshold("zero Lagrange coefficient".into()))?;
    Ok(to_signature(ffi::mult_public(
        &to_point(partial),
        &inv.to_scalar(),
    )))
}

/// e(pk, H(m)) = e(g₁, sig), with H(m) already hashed. `pk` must be a validated key (as
/// [`PublicKey::key_validate`] gives) and `sig` a point computed here (no subgroup check).
pub(crate) fn verify_hashed(pk: &PublicKey, hashed: &HashedMessage, sig: &Signature) -> bool {
    let pk: &blst_p1_affine = pk.into();
    let sig: blst_p2_affine = (*sig).into();
    let lhs = blst_fp12::miller_loop(&hashed.affine, pk);
    let mut rhs = blst_fp12::default();
    Pairing::aggregated(&mut rhs, &sig);
    blst_fp12::finalverify(&lhs, &rhs)
}

/// One signature in a batch verification.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The (validated) public key it must verify under.
    pub pubkey: &'a PublicKey,
    /// The hashed message.
    pub hashed: &'a HashedMessage,
    /// The signature (computed here: no subgroup check).
    pub signature: &'a Signature,
}

fn random_weights(n: usize) -> Option<Vec<u64>> {
    let mut bytes = vec![0u8; 8 * n];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([1; 8])) | 1)
            .collect(),
    )
}

fn batch_holds(items: &[BatchItem<'_>], weights: &[u64]) -> bool {
    // Π e(Σ rᵢ·pkᵢ, H(m)) over the distinct messages m (the sum over m's items) = e(g₁, Σ rᵢ·σᵢ):
    // one Miller loop per distinct message plus one, one final exponentiation, and the weights
    // applied by two multi-scalar multiplications (one per message in G1, one in G2).
    if items.is_empty() {
        return true;
    }
    let le: Vec<[u8; 8]> = weights.iter().map(|w| w.to_le_bytes()).collect();
    let mut groups: Vec<(blst_p2_affine, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match groups.iter_mut().find(|(h, _)| *h == item.hashed.affine) {
            Some((_, members)) => members.push(i),
            None => groups.push((item.hashed.affine, vec![i])),
        }
    }
    let mut hs = Vec::with_capacity(groups.len());
    let mut pks = Vec::with_capacity(groups.len());
    for (h, members) in &groups {
        let points = members
            .iter()
            .map(|&i| <&blst_p1_affine>::from(items[i].pubkey));
        let w: Vec<[u8; 8]> = members.iter().filter_map(|&i| le.get(i).copied()).collect();
        let sum = AggregatePublicKey::from(ffi::msm_u64_g1(points, &w)).to_public_key();
        hs.push(*h);
        pks.push(blst_p1_affine::from(sum));
    }
    let sigs: Vec<blst_p2_affine> = items.iter().map(|it| (*it.signature).into()).collect();
    let sigma = AggregateSignature::from(ffi::msm_u64_g2(&sigs, &le)).to_signature();
    let lhs = ffi::miller_loop_n(&hs, &pks);
    let mut rhs = blst_fp12::default();
    Pairing::aggregated(&mut rhs, &blst_p2_affine::from(sigma));
    blst_fp12::finalverify(&lhs, &rhs)
}

/// True when every item verifies (random 64-bit weights, one batch: a false accept has
/// probability 2⁻⁶³); false when one does not, or no randomness is available. Says nothing of
/// which: [`verify_batch`] does.
pub fn batch_verifies(items: &[BatchItem<'_>]) -> bool {
    random_weights(items.len()).is_some_and(|weights| batch_holds(items, &weights))
}

/// Verify many signatures at once (random 64-bit weights; a false accept has probability
/// 2⁻⁶³): about one Miller loop per distinct message plus one final exponentiation for the
/// whole batch, against two Miller loops and a final exponentiation each. When the batch fails,
/// or no randomness is available, each item is checked alone and the indices of the bad ones
/// are returned.
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<(), Vec<usize>> {
    if let Some(weights) = random_weights(items.len()) {
        if batch_holds(items, &weights) {
            return Ok(());
        }
    }
    let bad: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| !verify_hashed(it.pubkey, it.hashed, it.signature))
        .map(|(i, _)| i)
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Verify a plain partial against its share's public key.
pub(crate) fn verify_partial(
    share_pk: &PublicKey,
    hashed: &HashedMessage,
    partial: &Signature,
) -> bool {
    verify_hashed(share_pk, hashed, partial)
}

/// The reference check, from bytes: `sig` over `signing_root` by the group public key, with
/// blst's full verification (key and signature subgroup checks, hashing again).
pub fn verify_combined(
    group_pubkey: &PublicKeyBytes,
    signing_root: &[u8; 32],
    sig: &Signature,
) -> bool {
    bls::verify(&group_pubkey.0, signing_root, sig)
}

/// Why a combination produced no signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CombineError {
    /// Fewer partials than the threshold.
    #[error("{have} partial signature(s) for a {need}-of-n key")]
    TooFew {
        /// Partials given.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// A partial from a share the key does not have, or the same share twice.
    #[error("partial signature from share {0}, which is unknown or given twice")]
    BadShare(ShareId),
    /// The combined signature does not verify; the shares whose partials do not verify against
    /// their share public keys are listed (empty if none could be blamed).
    #[error("combined signature does not verify under the validator key; faulty share(s): {}",
        if faulty.is_empty() { "none identified".to_owned() } else {
            faulty.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") })]
    Unverified {
        /// Shares whose partials are wrong.
        faulty: Vec<ShareId>,
    },
    /// The Lagrange coefficients of the subset could not be computed.
    #[error("Lagrange coefficients of the shares asked: {0}")]
    Weights(String),
}

impl From<CombineError> for SignerError {
    fn from(e: CombineError) -> SignerError {
        SignerError::Bls(e.to_string())
    }
}

/// One share as a signer needs it at signing time: id, holder, parsed public key.
#[derive(Debug, Clone)]
pub struct ShareKey {
    /// x-coordinate.
    pub id: ShareId,
    /// Device holding the envelope, or the remote participant holding the share.
    pub device: String,
    /// The share's public key, validated.
    pub pubkey: PublicKey,
}

/// A threshold key with its public keys parsed and validated once (at load), ready for
/// combining and verifying on every request.
#[derive(Debug, Clone)]
pub struct ThresholdKey {
    /// The validator (group) public key bytes.
    pub pubkey_bytes: PublicKeyBytes,
    /// The validator (group) public key, validated.
    pub pubkey: PublicKey,
    /// Shares needed.
    pub threshold: usize,
    /// All shares: those on local devices, then those on remote participants (the order of
    /// [`KeyRecord::share_count`]).
    pub shares: Vec<ShareKey>,
}

fn parse_pubkey(pk: &PublicKeyBytes) -> Result<PublicKey> {
    PublicKey::key_validate(&pk.0)
        .map_err(|e| SignerError::Bls(format!("public key {pk} is not a valid G1 point: {e:?}")))
}

impl ThresholdKey {
    /// Parse and validate the public keys of a key record.
    pub fn from_record(record: &KeyRecord) -> Result<ThresholdKey> {
        let local = record.shares.iter().map(|s| (s.id, &s.device, &s.pubkey));
        let remote = record
            .remote
            .iter()
            .map(|r| (r.id, &r.participant, &r.pubkey));
        let shares = local
            .chain(remote)
            .map(|(id, holder, pubkey)| {
                Ok(ShareKey {
                    id,
                    device: holder.clone(),
                    pubkey: parse_pubkey(pubkey)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ThresholdKey {
            pubkey_bytes: record.pubkey,
            pubkey: parse_pubkey(&record.pubkey)?,
            threshold: record.threshold as usize,
            shares,
        })
    }

    /// A share by id.
    pub fn share(&self, id: ShareId) -> Option<&ShareKey> {
        self.shares.iter().find(|s| s.id == id)
    }

    fn check_subset(&self, ids: impl Iterator<Item = ShareId>) -> Result<(), CombineError> {
        let mut seen = HashSet::new();
        let mut n = 0;
        for id in ids {
            if self.share(id).is_none() || !seen.insert(id) {
                return Err(CombineError::BadShare(id));
            }
            n += 1;
        }
        if n < self.threshold {
            return Err(CombineError::TooFew {
                have: n,
                need: self.threshold,
            });
        }
        Ok(())
    }

    /// Σ λᵢ·σᵢ of plain partials from distinct shares of this key, at least t of them; not
    /// verified.
    fn combined(&self, partials: &[(ShareId, Signature)]) -> Result<Signature, CombineError> {
        self.check_subset(partials.iter().map(|(id, _)| *id))?;
        combine(partials).map_err(|_| CombineError::Unverified { faulty: vec![] })
    }

    /// The ids of `partials` (plain) that do not verify against their share public keys.
    pub fn faulty_partials(
        &self,
        hashed: &HashedMessage,
        partials: &[(ShareId, Signature)],
    ) -> Vec<ShareId> {
        partials
            .iter()
            .filter(|(id, sig)| {
                self.share(*id)
                    .is_none_or(|s| !verify_partial(&s.pubkey, hashed, sig))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Combine plain partials and verify the result under the validator key; on failure, name
    /// the shares whose partials are wrong. No unverified signature leaves this function.
    pub fn combine_verified(
        &self,
        hashed: &HashedMessage,
        partials: &[(ShareId, Signature)],
    ) -> Result<Signature, CombineError> {
        let sig = self.combined(partials)?;
        if verify_hashed(&self.pubkey, hashed, &sig) {
            return Ok(sig);
        }
        Err(CombineError::Unverified {
            faulty: self.faulty_partials(hashed, partials),
        })
    }

    /// Combine plain partials, then verify every partial under its share's key and the result
    /// under the validator key in one batch (one pairing product for a single message); on
    /// failure, name the shares whose partials are wrong. For partials that come from other
    /// hosts: each is checked, not just their sum. No unverified signature leaves here.
    pub fn combine_each_verified(
        &self,
        hashed: &HashedMessage,
        partials: &[(ShareId, Signature)],
    ) -> Result<Signature, CombineError> {
        let sig = self.combined(partials)?;
        let mut items = Vec::with_capacity(partials.len() + 1);
        for (id, partial) in partials {
            let share = self.share(*id).ok_or(CombineError::BadShare(*id))?;
            items.push(BatchItem {
                pubkey: &share.pubkey,
                hashed,
                signature: partial,
            });
        }
        items.push(BatchItem {
            pubkey: &self.pubkey,
            hashed,
            signature: &sig,
        });
        match verify_batch(&items) {
            Ok(()) => Ok(sig),
            Err(bad) => Err(CombineError::Unverified {
                faulty: bad
                    .into_iter()
                    .filter_map(|i| partials.get(i).map(|(id, _)| *id))
                    .collect(),
            }),
        }
    }

    /// Combine weighted partials, each made with [`lagrange_at_zero`] of exactly the ids given
    /// here, and verify; on failure unweight each partial and name the wrong ones.
    pub fn combine_weighted_verified(
        &self,
        hashed: &HashedMessage,
        partials: &[(ShareId, Signature)],
    ) -> Result<Signature, CombineError> {
        self.check_subset(partials.iter().map(|(id, _)| *id))?;
        self.combine_weighted_checked(hashed, partials)
    }

    /// [`ThresholdKey::combine_weighted_verified`] for partials whose subset was checked.
    fn combine_weighted_checked(
        &self,
        hashed: &HashedMessage,
        partials: &[(ShareId, Signature)],
    ) -> Result<Signature, CombineError> {
        let sig = sum_weighted(partials)?;
        if verify_hashed(&self.pubkey, hashed, &sig) {
            return Ok(sig);
        }
        let ids: Vec<ShareId> = partials.iter().map(|(id, _)| *id).collect();
        let faulty = match lagrange_at_zero(&ids) {
            Ok(weights) => {
                let plain: Vec<(ShareId, Signature)> = partials
                    .iter()
                    .zip(&weights)
                    .filter_map(|((id, s), w)| unweight(s, w).ok().map(|p| (*id, p)))
                    .collect();
                self.faulty_partials(hashed, &plain)
            }
            Err(_) => vec![],
        };
        Err(CombineError::Unverified { faulty })
    }
}

/// A threshold key's signature of `hashed` from t shares as [`crate::keys::open_share`] opened
/// them: a partial per share, weighted by its Lagrange coefficient in exactly this subset,
/// combined and verified under the validator key. This is what the scheduler does with the
/// shares its devices opened; no unverified signature leaves it (a wrong share is named in
/// [`CombineError::Unverified`]).
pub fn sign_with_opened_shares(
    key: &ThresholdKey,
    hashed: &HashedMessage,
    opened: &[(ShareId, &SecretKey)],
) -> Result<Signature, CombineError> {
    let partials = weighted_partials(key, hashed, opened)?;
    // The subset was checked there: combine and verify without checking it again.
    key.combine_weighted_checked(hashed, &partials)
}

/// The partials of `opened` (a subset of `key`'s shares, checked here), each weighted by its
/// Lagrange coefficient in exactly this subset.
fn weighted_partials(
    key: &ThresholdKey,
    hashed: &HashedMessage,
    opened: &[(ShareId, &SecretKey)],
) -> Result<Vec<(ShareId, Signature)>, CombineError> {
    key.check_subset(opened.iter().map(|(id, _)| *id))?;
    let ids: Vec<ShareId> = opened.iter().map(|(id, _)| *id).collect();
    let weights = lagrange_at_zero(&ids).map_err(|e| CombineError::Weights(e.to_string()))?;
    Ok(opened
        .iter()
        .zip(&weights)
        .map(|((id, sk), w)| (*id, partial_sign_weighted(sk, w, hashed)))
        .collect())
}

/// The sum of weighted partials: the signature they make, not yet verified.
fn sum_weighted(partials: &[(ShareId, Signature)]) -> Result<Signature, CombineError> {
    let sigs: Vec<Signature> = partials.iter().map(|(_, s)| *s).collect();
    combine_weighted(&sigs).map_err(|_| CombineError::Unverified { faulty: vec![] })
}

/// One threshold signature from shares opened here ([`sign_many_with_opened_shares`]): its key,
/// its hashed message and t opened shares.
pub struct LocalCombination<'a> {
    /// The threshold key.
    pub key: &'a ThresholdKey,
    /// The message, hashed.
    pub hashed: &'a HashedMessage,
    /// The opened shares (share id, secret), exactly t of them.
    pub opened: &'a [(ShareId, &'a SecretKey)],
}

/// [`sign_with_opened_shares`] for many signatures, the results verified in one batch
/// ([`batch_verifies`]: one Miller loop per distinct message and one final exponentiation for
/// them all, where each alone costs two and one). Each result is checked under its own key and
/// message only. When the batch fails, each signature is verified alone, which names its
/// faulty shares; the answers are in the order of `jobs`, and no unverified signature is among
/// them. A single job is [`sign_with_opened_shares`] itself.
pub fn sign_many_with_opened_shares(
    jobs: &[LocalCombination<'_>],
) -> Vec<Result<Signature, CombineError>> {
    // One alone is verified alone: a batch of one would only add its random weights.
    if let [job] = jobs {
        return vec![sign_with_opened_shares(job.key, job.hashed, job.opened)];
    }
    let weighted: Vec<Result<Vec<(ShareId, Signature)>, CombineError>> = jobs
        .iter()
        .map(|job| weighted_partials(job.key, job.hashed, job.opened))
        .collect();
    let combined: Vec<Result<Signature, CombineError>> = weighted
        .iter()
        .map(|partials| sum_weighted(partials.as_ref().map_err(Clone::clone)?))
        .collect();
    let items: Vec<BatchItem<'_>> = jobs
        .iter()
        .zip(&combined)
        .filter_map(|(job, sig)| {
            sig.as_ref().ok().map(|signature| BatchItem {
                pubkey: &job.key.pubkey,
                hashed: job.hashed,
                signature,
            })
        })
        .collect();
    if batch_verifies(&items) {
        return combined;
    }
    jobs.iter()
        .zip(weighted)
        .map(|(job, partials)| job.key.combine_weighted_checked(job.hashed, &partials?))
        .collect()
}

/// The sign of a key with shares on remote participants: the local shares' plain partials
/// beside the participants' partials, combined, and every partial and the result verified
/// ([`ThresholdKey::combine_each_verified`]).
pub fn sign_with_remote_partials(
    key: &ThresholdKey,
    hashed: &HashedMessage,
    opened: &[(ShareId, &SecretKey)],
    remote: &[(ShareId, Signature)],
) -> Result<Signature, CombineError> {
    let partials: Vec<(ShareId, Signature)> = opened
        .iter()
        .map(|(id, sk)| (*id, partial_sign(sk, hashed)))
        .chain(remote.iter().cloned())
        .collect();
    key.combine_each_verified(hashed, &partials)
}

/// One threshold signature of a batch ([`combine_many_verified`]): its key, its hashed
/// message and the plain partials to combine.
#[derive(Debug, Clone, Copy)]
pub struct Combination<'a> {
    /// The threshold key.
    pub key: &'a ThresholdKey,
    /// The message, hashed.
    pub hashed: &'a HashedMessage,
    /// Plain partials (share id, σᵢ), at least t.
    pub partials: &'a [(ShareId, Signature)],
}

/// Combine many threshold signatures and verify every partial under its share's key and every
/// result under its validator key in one batch ([`batch_verifies`]): one Miller loop per
/// distinct message and one final exponentiation for them all, against a pairing product per
/// signature. Each partial is checked against its own message and key only: an item is a
/// (key, message, signature) triple, so nothing is mixed across messages, keys or positions.
/// When the batch fails, each signature is combined and verified alone
/// ([`ThresholdKey::combine_each_verified`]), which names the faulty shares; the answers are in
/// the order of `jobs`, and no unverified signature is among them.
pub fn combine_many_verified(jobs: &[Combination<'_>]) -> Vec<Result<Signature, CombineError>> {
    let combined: Vec<Result<Signature, CombineError>> = jobs
        .iter()
        .map(|job| job.key.combined(job.partials))
        .collect();
    let mut items = Vec::new();
    for (job, sig) in jobs.iter().zip(&combined) {
        let Ok(sig) = sig else { continue };
        for (id, partial) in job.partials {
            if let Some(share) = job.key.share(*id) {
                items.push(BatchItem {
                    pubkey: &share.pubkey,
                    hashed: job.hashed,
                    signature: partial,
                });
            }
        }
        items.push(BatchItem {
            pubkey: &job.key.pubkey,
            hashed: job.hashed,
            signature: sig,
        });
    }
    if batch_verifies(&items) {
        return combined;
    }
    jobs.iter()
        .zip(combined)
        .map(|(job, c)| c.and_then(|_| job.key.combine_each_verified(job.hashed, job.partials)))
        .collect()
}

/// Open one share on its device and make its partial signature of `hashed`: plain, or weighted
/// by `weight` (the share's Lagrange coefficient in the subset being asked). The share's secret
/// exists only inside this call, in buffers wiped on return.
pub fn partial_sign_with_share(
    device: &Device,
    validator: &PublicKeyBytes,
    share: &ShareRecord,
    hashed: &HashedMessage,
    weight: Option<&Coefficient>,
) -> Result<Signature> {
    let sk = crate::keys::open_share(device, validator, share)?;
    Ok(match weight {
        None => partial_sign(&sk, hashed),
        Some(w) => partial_sign_weighted(&sk, w, hashed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<ShareId> {
        v.iter().map(|&i| ShareId::new(i).unwrap()).collect()
    }

    fn sk_from_u64(x: u64) -> SecretKey {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&x.to_be_bytes());
        SecretKey::from_bytes(&b).unwrap()
    }

    #[test]
    fn lagrange_coefficients_of_small_ids_are_the_textbook_values() {
        // ids 1,2: λ₁ = 2/(2−1) = 2, λ₂ = 1/(1−2) = −1.
        let l = lagrange_at_zero(&ids(&[1, 2])).unwrap();
        let mut two = [0u8; 32];
        two[31] = 2;
        assert_eq!(l[0].to_be_bytes(), two);
        let minus_one = Fr::from_u64(0).sub(&Fr::from_u64(1));
        assert_eq!(l[1].to_be_bytes(), Coefficient(minus_one).to_be_bytes());
        // They always sum to 1 (interpolating the constant polynomial 1).
        for set in [&[1u64, 2, 3][..], &[3, 7, 11, 200], &[5], &[u64::MAX, 1]] {
            let l = lagrange(&ids(set)).unwrap();
            let sum = l.iter().fold(Fr::default(), |acc, x| acc.add(x));
            assert_eq!(
                Coefficient(sum).to_be_bytes(),
                Coefficient(Fr::from_u64(1)).to_be_bytes()
            );
        }
    }

    #[test]
    fn split_evaluates_the_polynomial_at_each_id() {
        // With t = 1 every share is the secret.
        let sk = sk_from_u64(42);
        for (_, s) in split(&sk, 1, &ids(&[1, 2, 9])).unwrap() {
            assert_eq!(s.to_bytes(), sk.to_bytes());
        }
        // Shares of a random degree-1 polynomial are collinear: s₃ − s₂ = s₂ − s₁.
        let shares = split(&sk, 2, &ids(&[1, 2, 3])).unwrap();
        let f: Vec<Fr> = shares.iter().map(|(_, s)| fr_of(s)).collect();
        assert_eq!(
            Coefficient(f[2].sub(&f[1])).to_be_bytes(),
            Coefficient(f[1].sub(&f[0])).to_be_bytes()
        );
        // And f(0) = 2·s₁ − s₂ is the secret.
        let zero = f[0].add(&f[0]).sub(&f[1]);
        assert_eq!(secret_of(&zero).unwrap().to_bytes(), sk.to_bytes());
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.trim_start_matches("0x")).unwrap()
    }

    fn pick<T: Copy>(all: &[T], indices: &[usize]) -> Vec<T> {
        indices.iter().map(|&i| all[i]).collect()
    }

    /// The distributed signing profile's 2-of-3 vector (ethereum/remote-signing-api PR #29; see
    /// the README beside it), byte for byte: f(x) = 1 + 2x evaluated by `split`'s own polynomial
    /// code gives the shares 3, 5, 7, their public keys and partial signatures; every 2-subset
    /// recombines, from signatures and from public keys, to the composite values.
    #[test]
    fn distributed_profile_2_of_3_vector_byte_for_byte() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/threshold/threshold-2of3.json"
        ))
        .unwrap();
        assert_eq!(v["threshold"], "2");
        let coefficients: Vec<Fr> = v["polynomial_coefficients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Fr::from_u64(c.as_str().unwrap().parse().unwrap()))
            .collect();
        let participants = v["participants"].as_array().unwrap();
        let xs: Vec<ShareId> = participants
            .iter()
            .map(|p| ShareId::new(p["id"].as_str().unwrap().parse().unwrap()).unwrap())
            .collect();
        let shares = evaluate(&coefficients, &xs).unwrap();

        let root: [u8; 32] = unhex(v["signing_root"].as_str().unwrap())
            .try_into()
            .unwrap();
        let hashed = HashedMessage::new(&root);
        let composite = PublicKeyBytes::parse(v["composite_public_key"].as_str().unwrap()).unwrap();
        assert_eq!(
            secret_of(&coefficients[0]).unwrap().sk_to_pk().compress(),
            composite.0,
            "f(0)·G1"
        );
        let mut partials = Vec::new();
        let mut public = Vec::new();
        for ((x, sk), p) in shares.iter().zip(participants) {
            assert_eq!(
                sk.to_bytes().to_vec(),
                unhex(p["secret_key"].as_str().unwrap()),
                "f({x})"
            );
            let pk = sk.sk_to_pk();
            assert_eq!(
                pk.compress().to_vec(),
                unhex(p["public_key"].as_str().unwrap()),
                "share {x}"
            );
            let partial = partial_sign(sk, &hashed);
            assert_eq!(
                partial.compress().to_vec(),
                unhex(p["signature"].as_str().unwrap()),
                "share {x}'s partial signature"
            );
            partials.push((*x, partial));
            public.push((*x, pk));
        }
        let recovered = unhex(v["recovered_signature"].as_str().unwrap());
        let subsets = proof_subsets(3, 2);
        assert_eq!(subsets, [vec![0, 1], vec![0, 2], vec![1, 2]]);
        for subset in subsets {
            let sig = combine(&pick(&partials, &subset)).unwrap();
            assert_eq!(sig.compress().to_vec(), recovered, "subset {subset:?}");
            assert!(verify_combined(&composite, &root, &sig));
            let pk = interpolate_public_key(&pick(&public, &subset)).unwrap();
            assert_eq!(pk.compress(), composite.0, "subset {subset:?}");
        }
    }

    #[test]
    fn proof_subsets_are_every_subset_when_few_else_a_chain() {
        assert_eq!(proof_subsets(5, 3).len(), 10);
        assert_eq!(proof_subsets(10, 5).len(), 252);
        assert_eq!(proof_subsets(4, 4), [vec![0, 1, 2, 3]]);
        assert_eq!(proof_subsets(3, 1), [vec![0], vec![1], vec![2]]);
        // C(11, 5) = 462 > 252: the first five, then the first four with each later share.
        let chain = proof_subsets(11, 5);
        assert_eq!(chain.len(), 7);
        assert_eq!(chain[0], [0, 1, 2, 3, 4]);
        assert_eq!(chain[6], [0, 1, 2, 3, 10]);
        assert!(proof_subsets(3, 0).is_empty() && proof_subsets(3, 4).is_empty());
        let every = proof_subsets(7, 3);
        let distinct: HashSet<Vec<usize>> = every.iter().cloned().collect();
        assert_eq!((every.len(), distinct.len()), (35, 35));
        assert!(every
            .iter()
            .all(|c| c.windows(2).all(|w| w[0] < w[1]) && c[2] < 7));
    }

    #[test]
    fn interpolated_public_keys_find_a_share_off_the_polynomial() {
        let sk = bls::random_secret_key().unwrap();
        let set = ids(&[3, 8, 20, 21]);
        let mut public: Vec<(ShareId, PublicKey)> = split(&sk, 3, &set)
            .unwrap()
            .iter()
            .map(|(id, s)| (*id, s.sk_to_pk()))
            .collect();
        for subset in proof_subsets(4, 3) {
            assert_eq!(
                interpolate_public_key(&pick(&public, &subset)).unwrap(),
                sk.sk_to_pk()
            );
        }
        public[1].1 = bls::random_secret_key().unwrap().sk_to_pk();
        let good = interpolate_public_key(&[public[0], public[2], public[3]]).unwrap();
        let bad = interpolate_public_key(&[public[0], public[1], public[2]]).unwrap();
        assert_eq!(good, sk.sk_to_pk());
        assert_ne!(bad, sk.sk_to_pk());
        assert!(interpolate_public_key(&[]).is_err());
    }

    #[test]
    fn split_rejects_bad_thresholds_and_duplicate_ids() {
        let sk = sk_from_u64(7);
        assert!(split(&sk, 0, &ids(&[1, 2])).is_err());
        assert!(split(&sk, 3, &ids(&[1, 2])).is_err());
        assert!(split(&sk, 2, &ids(&[1, 2, 2])).is_err());
        assert!(split(&sk, 1, &[]).is_err());
        assert!(lagrange_at_zero(&ids(&[4, 4])).is_err());
        assert!(lagrange_at_zero(&[]).is_err());
    }

    #[test]
    fn partial_equals_blst_signature_with_the_share_as_key() {
        let sk = bls::random_secret_key().unwrap();
        let root = [9u8; 32];
        let hashed = HashedMessage::new(&root);
        assert_eq!(
            partial_sign(&sk, &hashed).compress(),
            bls::sign(&sk, &root).compress()
        );
        assert!(verify_partial(
            &sk.sk_to_pk(),
            &hashed,
            &partial_sign(&sk, &hashed)
        ));
        assert!(!verify_partial(
            &sk.sk_to_pk(),
            &HashedMessage::new(&[8u8; 32]),
            &partial_sign(&sk, &hashed)
        ));
    }

    #[test]
    fn weighted_and_plain_paths_agree_and_unweight_inverts() {
        let sk = bls::random_secret_key().unwrap();
        let set = ids(&[2, 5, 11]);
        let shares = split(&sk, 3, &set).unwrap();
        let root = [3u8; 32];
        let hashed = HashedMessage::new(&root);
        let w = lagrange_at_zero(&set).unwrap();
        let weighted: Vec<Signature> = shares
            .iter()
            .zip(&w)
            .map(|((_, s), w)| partial_sign_weighted(s, w, &hashed))
            .collect();
        let plain: Vec<(ShareId, Signature)> = shares
            .iter()
            .map(|(id, s)| (*id, partial_sign(s, &hashed)))
            .collect();
        let expected = bls::sign(&sk, &root).compress();
        assert_eq!(combine_weighted(&weighted).unwrap().compress(), expected);
        assert_eq!(combine(&plain).unwrap().compress(), expected);
        for i in 0..3 {
            assert_eq!(
                unweight(&weighted[i], &w[i]).unwrap().compress(),
                plain[i].1.compress()
            );
        }
        assert!(verify_hashed(
            &sk.sk_to_pk(),
            &hashed,
            &combine(&plain).unwrap()
        ));
    }

    #[test]
    fn batch_verification_accepts_good_batches_and_names_bad_items() {
        let keys: Vec<SecretKey> = (0..4).map(|_| bls::random_secret_key().unwrap()).collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::sk_to_pk).collect();
        let roots = [[1u8; 32], [2u8; 32]];
        let hashes: Vec<HashedMessage> = roots.iter().map(HashedMessage::new).collect();
        // Keys 0..4 over two roots, so both the grouped and the separate pairings are used.
        let sigs: Vec<Signature> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| partial_sign(k, &hashes[i % 2]))
            .collect();
        let items = |sigs: &[Signature]| -> Vec<(usize, Signature)> {
            sigs.iter().copied().enumerate().collect()
        };
        let check = |sigs: &[Signature]| {
            let owned = items(sigs);
            let batch: Vec<BatchItem<'_>> = owned
                .iter()
                .map(|(i, s)| BatchItem {
                    pubkey: &pks[*i],
                    hashed: &hashes[i % 2],
                    signature: s,
                })
                .collect();
            verify_batch(&batch)
        };
        assert_eq!(check(&sigs), Ok(()));
        assert_eq!(check(&[]), Ok(()));
        let mut bad = sigs.clone();
        bad[2] = partial_sign(&keys[2], &hashes[1]);
        assert_eq!(check(&bad), Err(vec![2]));
        bad.swap(0, 1);
        assert_eq!(check(&bad), Err(vec![0, 1, 2]));
    }

    #[test]
    fn small_integer_lagrange_is_the_field_lagrange_and_falls_back_when_too_large() {
        let (c, l) = small_lagrange(&ids(&[1, 3])).unwrap();
        assert_eq!((c, l), (vec![3, -1], 2));
        let (c, l) = small_lagrange(&ids(&[1, 2])).unwrap();
        assert_eq!((c, l), (vec![2, -1], 1));
        for set in [
            &[1u64, 2, 3][..],
            &[2, 5, 11],
            &[3, 7, 11, 200],
            &[5],
            &[1, 2, 3, 4, 5],
        ] {
            let (c, l) = small_lagrange(&ids(set)).unwrap();
            let inv = Fr::from_u64(l).inverse().unwrap();
            let field = lagrange(&ids(set)).unwrap();
            for (ci, fi) in c.iter().zip(&field) {
                let mag = Fr::from_u64(ci.unsigned_abs());
                let ci = if *ci < 0 {
                    Fr::from_u64(0).sub(&mag)
                } else {
                    mag
                };
                assert_eq!(
                    Coefficient(ci.mul(&inv)).to_be_bytes(),
                    Coefficient(fi.clone()).to_be_bytes(),
                    "ids {set:?}"
                );
            }
        }
        // Products past i128 or coefficients past i64: the field path.
        assert_eq!(small_lagrange(&ids(&[u64::MAX, 1, 2])), None);
        // Every 2-subset of 3 and 3-subset of 5, and ids too large for the small path, combine to
        // the whole key's signature.
        let sk = bls::random_secret_key().unwrap();
        let root = [4u8; 32];
        let hashed = HashedMessage::new(&root);
        let expected = bls::sign(&sk, &root).compress();
        for (t, set) in [
            (2, vec![1, 2, 3]),
            (3, vec![1, 2, 3, 4, 5]),
            (2, vec![u64::MAX - 1, 7, u64::MAX]),
        ] {
            let shares = split(&sk, t, &ids(&set)).unwrap();
            for subset in proof_subsets(set.len(), t) {
                let plain: Vec<(ShareId, Signature)> = subset
                    .iter()
                    .map(|&i| (shares[i].0, partial_sign(&shares[i].1, &hashed)))
                    .collect();
                assert_eq!(
                    combine(&plain).unwrap().compress(),
                    expected,
                    "{subset:?} of {set:?}"
                );
            }
        }
        assert!(combine(&[]).is_err());
    }

    /// Three 2-of-3 keys with shares 1, 2, 3 on devices `{prefix}{id}`, and their secrets.
    #[allow(clippy::type_complexity)]
    fn three_2_of_3_keys(
        prefix: &str,
    ) -> (
        Vec<ThresholdKey>,
        Vec<(SecretKey, Vec<(ShareId, SecretKey)>)>,
    ) {
        let mut keys = Vec::new();
        let mut secrets = Vec::new();
        for _ in 0..3 {
            let sk = bls::random_secret_key().unwrap();
            let shares = split(&sk, 2, &ids(&[1, 2, 3])).unwrap();
            keys.push(ThresholdKey {
                pubkey_bytes: PublicKeyBytes(sk.sk_to_pk().compress()),
                pubkey: sk.sk_to_pk(),
                threshold: 2,
                shares: shares
                    .iter()
                    .map(|(id, s)| ShareKey {
                        id: *id,
                        device: format!("{prefix}{id}"),
                        pubkey: s.sk_to_pk(),
                    })
                    .collect(),
            });
            secrets.push((sk, shares));
        }
        (keys, secrets)
    }

    #[test]
    fn many_local_signatures_verify_together_and_a_wrong_share_is_named_in_its_own() {
        let roots: Vec<[u8; 32]> = (0..6u8).map(|i| [i + 40; 32]).collect();
        let hashes: Vec<HashedMessage> = roots.iter().map(HashedMessage::new).collect();
        let (keys, secrets) = three_2_of_3_keys("d");
        // Job j: key j % 3, root j, shares (j, j+1) mod 3: every pair, two jobs of each key.
        let picks = |j: usize| [j % 3, (j + 1) % 3];
        let run = |opened: &[Vec<(ShareId, &SecretKey)>]| {
            let jobs: Vec<LocalCombination<'_>> = (0..6)
                .map(|j| LocalCombination {
                    key: &keys[j % 3],
                    hashed: &hashes[j],
                    opened: &opened[j],
                })
                .collect();
            sign_many_with_opened_shares(&jobs)
        };
        let opened: Vec<Vec<(ShareId, &SecretKey)>> = (0..6)
            .map(|j| {
                let (_, shares) = &secrets[j % 3];
                picks(j)
                    .iter()
                    .map(|&i| (shares[i].0, &shares[i].1))
                    .collect()
            })
            .collect();
        for (j, got) in run(&opened).into_iter().enumerate() {
            let expected = bls::sign(&secrets[j % 3].0, &roots[j]).compress();
            assert_eq!(got.unwrap().compress(), expected, "job {j}");
        }
        // Job 4 opens a wrong secret for its second share (a device given the wrong share):
        // only job 4 fails, naming that share; the others are still the keys' own signatures.
        let wrong = bls::random_secret_key().unwrap();
        let mut bad = opened.clone();
        let wrong_id = bad[4][1].0;
        bad[4][1].1 = &wrong;
        // Job 2 has one share only: too few, and says so.
        bad[2].truncate(1);
        // One job alone goes the single-signature way, with the same answers.
        let alone = |j: usize, opened: &[(ShareId, &SecretKey)]| {
            sign_many_with_opened_shares(&[LocalCombination {
                key: &keys[j % 3],
                hashed: &hashes[j],
                opened,
            }])
        };
        assert_eq!(
            alone(0, &opened[0])[0].as_ref().unwrap().compress(),
            bls::sign(&secrets[0].0, &roots[0]).compress()
        );
        assert_eq!(
            alone(4, &bad[4])[0],
            Err(CombineError::Unverified {
                faulty: vec![wrong_id]
            })
        );
        for (j, got) in run(&bad).into_iter().enumerate() {
            match j {
                4 => assert_eq!(
                    got.unwrap_err(),
                    CombineError::Unverified {
                        faulty: vec![wrong_id]
                    }
                ),
                2 => assert_eq!(got.unwrap_err(), CombineError::TooFew { have: 1, need: 2 }),
                _ => assert_eq!(
                    got.unwrap().compress(),
                    bls::sign(&secrets[j % 3].0, &roots[j]).compress(),
                    "job {j}"
                ),
            }
        }
    }

    #[test]
    fn many_combinations_verify_together_and_a_wrong_partial_is_named_in_its_own() {
        let roots: Vec<[u8; 32]> = (0..5u8).map(|i| [i + 10; 32]).collect();
        let hashes: Vec<HashedMessage> = roots.iter().map(HashedMessage::new).collect();
        let (keys, secrets) = three_2_of_3_keys("p");
        // Job j: key j % 3, root j, shares (j, j+1) mod 3 — every pair, and two jobs of a key.
        let partials: Vec<Vec<(ShareId, Signature)>> = (0..5)
            .map(|j| {
                let (_, shares) = &secrets[j % 3];
                [j % 3, (j + 1) % 3]
                    .iter()
                    .map(|&i| (shares[i].0, partial_sign(&shares[i].1, &hashes[j])))
                    .collect()
            })
            .collect();
        let jobs =
            |partials: &[Vec<(ShareId, Signature)>]| -> Vec<Result<Signature, CombineError>> {
                let jobs: Vec<Combination<'_>> = (0..5)
                    .map(|j| Combination {
                        key: &keys[j % 3],
                        hashed: &hashes[j],
                        partials: &partials[j],
                    })
                    .collect();
                combine_many_verified(&jobs)
            };
        for (j, got) in jobs(&partials).into_iter().enumerate() {
            let expected = bls::sign(&secrets[j % 3].0, &roots[j]).compress();
            assert_eq!(got.unwrap().compress(), expected, "job {j}");
        }
        // Job 3's second partial signs job 4's root (a replayed partial): only job 3 fails, and
        // names that share.
        let mut bad = partials.clone();
        let (_, shares) = &secrets[0];
        let replayed_id = bad[3][1].0;
        let replayed = shares.iter().find(|(id, _)| *id == replayed_id).unwrap();
        bad[3][1].1 = partial_sign(&replayed.1, &hashes[4]);
        let got = jobs(&bad);
        for (j, got) in got.iter().enumerate() {
            if j == 3 {
                assert_eq!(
                    got.as_ref().unwrap_err(),
                    &CombineError::Unverified {
                        faulty: vec![replayed_id]
                    }
                );
            } else {
                assert!(got.is_ok(), "job {j}");
            }
        }
        // One partial only: too few, whatever the others.
        bad[1].truncate(1);
        assert!(matches!(
            jobs(&bad)[1],
            Err(CombineError::TooFew { have: 1, need: 2 })
        ));
    }
}
