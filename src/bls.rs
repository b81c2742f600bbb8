//! The BLS ciphersuite used by Ethereum consensus, in one place: `min_pk` (public keys in G1),
//! proof-of-possession DST. Secret keys come and go as `blst` values, which wipe themselves.

use blst::min_pk::{PublicKey, SecretKey, Signature};
use blst::BLST_ERROR;

use crate::error::{Result, SignerError};

/// `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`.
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Compressed G1 public key length.
pub(crate) const PUBKEY_LEN: usize = 48;
/// Compressed G2 signature length.
pub const SIGNATURE_LEN: usize = 96;

/// A secret key from 32 big-endian bytes (must be a non-zero scalar below the group order).
pub fn secret_key(bytes: &[u8]) -> Result<SecretKey> {
    SecretKey::from_bytes(bytes).map_err(|e| SignerError::Bls(format!("invalid secret key: {e:?}")))
}

/// The compressed public key of `sk`.
pub fn public_key_bytes(sk: &SecretKey) -> [u8; PUBKEY_LEN] {
    sk.sk_to_pk().compress()
}

/// Sign a 32-byte signing root.
pub fn sign(sk: &SecretKey, signing_root: &[u8; 32]) -> Signature {
    sk.sign(signing_root, DST, &[])
}

/// Verify `sig` over `signing_root` by the compressed public key `pk`.
pub fn verify(pk: &[u8], signing_root: &[u8; 32], sig: &Signature) -> bool {
    match PublicKey::key_validate(pk) {
        Ok(pk) => sig.verify(true, signing_root, DST, &[], &pk, false) == BLST_ERROR::BLST_SUCCESS,
        Err(_) => false,
    }
}

/// A fresh random secret key (EIP-2333 KeyGen from 32 bytes of OS randomness).
pub fn random_secret_key() -> Result<SecretKey> {
    let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(ikm.as_mut())
        .map_err(|e| SignerError::Bls(format!("no randomness: {e}")))?;
    SecretKey::key_gen(ikm.as_ref(), &[]).map_err(|e| SignerError::Bls(format!("key_gen: {e:?}")))
}
