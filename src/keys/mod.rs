//! The key store: validator keys and threshold shares, each sealed by a device's custody key and
//! kept as one JSON file per validator (`keys/0x<pubkey>.json`), plus EIP-2335 import and the
//! decrypt-then-sign step. It does not decide *whether* to sign (slashing protection) or *when*
//! (the scheduler); it only knows how to turn an envelope and a signing root into a signature.

pub mod eip2335;

mod record;
mod store;

pub mod distribution;
pub mod import;
pub mod placement;
pub mod provision;
pub mod threshold;
pub mod web3signer;
pub use import::{generate, import_keystores, ImportOptions, Progress};
pub(crate) use record::{envelope_aad, ShareRecord, KEY_FILE_VERSION};
pub use record::{Distributed, KeyRecord, ParticipantRef, PublicKeyBytes, RemoteShare, ShareId};
pub use store::KeyStore;

use blst::min_pk::Signature;
use hsm::Device;

use crate::bls;
use crate::consensus::SigningRoot;
use crate::error::{Result, SignerError};

/// Seal `secret` (32 bytes) as share `id` of the validator `pubkey` under `device`'s custody key.
pub fn seal_share(
    device: &Device,
    validator: &PublicKeyBytes,
    id: ShareId,
    secret: &blst::min_pk::SecretKey,
) -> Result<ShareRecord> {
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    let envelope = device.encrypt(bytes.as_ref(), &envelope_aad(validator, id))?;
    Ok(ShareRecord {
        id,
        device: device.name().to_owned(),
        pubkey: PublicKeyBytes(bls::public_key_bytes(secret)),
        envelope,
    })
}

/// Open one share on its device: the secret exists only in the returned key, which wipes
/// itself when dropped.
pub fn open_share(
    device: &Device,
    validator: &PublicKeyBytes,
    share: &ShareRecord,
) -> Result<blst::min_pk::SecretKey> {
    if device.name() != share.device {
        return Err(SignerError::Invalid(format!(
            "share {} of {validator} lives on device {}, not {}",
            share.id,
            share.device,
            device.name()
        )));
    }
    let secret = device.decrypt(&share.envelope, &envelope_aad(validator, share.id))?;
    bls::secret_key(&secret)
}

/// A whole key's signature of `signing_root` with its secret as [`open_share`] opened it. The
/// scheduler calls these two steps apart (the opening on a device thread, the signing on a CPU
/// worker); [`sign_with_share`] is the two together.
pub(crate) fn sign_opened(
    secret: &blst::min_pk::SecretKey,
    signing_root: &SigningRoot,
) -> Signature {
    bls::sign(secret, &signing_root.0)
}

/// [`sign_opened`] with the signing root already hashed to G2 (`hashed`, from the same root):
/// the same signature bytes, without hashing again — for the many keys that sign one message.
pub(crate) fn sign_opened_hashed(
    secret: &blst::min_pk::SecretKey,
    hashed: &threshold::HashedMessage,
) -> Signature {
    threshold::partial_sign(secret, hashed)
}

/// Open one share on its device and sign `signing_root` with it: [`open_share`] then
/// [`sign_opened`]. The secret exists only inside this call, in buffers that are wiped on
/// return.
pub fn sign_with_share(
    device: &Device,
    validator: &PublicKeyBytes,
    share: &ShareRecord,
    signing_root: &SigningRoot,
) -> Result<Signature> {
    Ok(sign_opened(
        &open_share(device, validator, share)?,
        signing_root,
    ))
}
