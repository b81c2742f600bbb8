//! One validator key handed out to participants on other hosts, for the Remote Signing API's
//! distributed signing profile: a dealer split of an EIP-2335 keystore into one keystore per
//! share plus a manifest (`keys split`), and a participant taking its one share in (`keys
//! import-shares --manifest`). This module owns the manifest format and the checks at both ends;
//! the share math is [`crate::keys::threshold`]'s and sealing on a device
//! [`crate::keys::provision`]'s.
//!
//! A dealer split trusts the machine that splits: the whole secret is in its memory while it
//! runs, and every share passes through it. A dealer-free DKG is a later step.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use blst::min_pk::{PublicKey, SecretKey, Signature};
use hsm::Device;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::bls;
use crate::consensus::wire;
use crate::error::{DistributionError, Result, SignerError};
use crate::keys::eip2335::{KdfChoice, Keystore};
use crate::keys::import::decrypt_one;
use crate::keys::provision::{check_recombination, random_root, seal_proven};
use crate::keys::record::{
    Distributed, KeyRecord, ParticipantRef, PublicKeyBytes, ShareId, KEY_FILE_VERSION,
};
use crate::keys::threshold::{self, HashedMessage};
use crate::keys::KeyStore;

/// The manifest's name in a split's directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Largest manifest read. One participant takes about 200 bytes, so this is thousands of them.
const MAX_MANIFEST_LEN: u64 = 1 << 20;

/// The `origin` of a participant's key record.
const ORIGIN: &str = "imported-share";

/// Name of share `id`'s keystore in a split's directory.
pub fn share_keystore_name(id: ShareId) -> String {
    format!("share-{id}.json")
}

/// Name of share `id`'s password file in a split's directory.
pub fn share_password_name(id: ShareId) -> String {
    format!("share-{id}.password")
}

fn decimal<S: Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `manifest.json` as written and read: the profile's account fields (uint64s as decimal
/// strings) with every participant's share public key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    composite_public_key: PublicKeyBytes,
    #[serde(deserialize_with = "wire::u64", serialize_with = "decimal")]
    signing_threshold: u64,
    participants: Vec<ManifestParticipant>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestParticipant {
    #[serde(deserialize_with = "wire::u64", serialize_with = "decimal")]
    id: u64,
    endpoint: String,
    public_key: PublicKeyBytes,
}

/// A distributed account as a split describes it: composite key, threshold, and each
/// participant's id, HTTPS origin and share public key. A value exists only once it holds
/// together: 1 ≤ t ≤ n, distinct non-zero ids, distinct HTTPS origins (the profile's rules), valid
/// distinct public keys, and share public keys that recombine to the composite key from every
/// t-subset (checked in G1, with no secret), so a manifest of another split, or one altered,
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    composite: PublicKeyBytes,
    account: Distributed,
    /// One per participant, in the order of `account.participants`.
    public_keys: Vec<PublicKeyBytes>,
}

fn valid_point(pk: &PublicKeyBytes, what: &str) -> Result<PublicKey, String> {
    PublicKey::key_validate(&pk.0)
        .map_err(|_| format!("{what} {pk} is not a valid BLS public key (G1 point)"))
}

impl Manifest {
    fn check(
        composite: PublicKeyBytes,
        threshold: u64,
        participants: Vec<(u64, String, PublicKeyBytes)>,
    ) -> Result<Manifest, String> {
        let n = participants.len();
        let signing_threshold = u32::try_from(threshold)
            .map_err(|_| format!("signing threshold {threshold} with {n} participant(s)"))?;
        let mut refs = Vec::with_capacity(n);
        let mut public_keys = Vec::with_capacity(n);
        for (id, endpoint, pk) in participants {
            let id = ShareId::new(id).ok_or(
                "participant id 0 is not allowed: ids are non-zero x-coordinates (x = 0 is the \
                 composite key)",
            )?;
            refs.push(ParticipantRef { id, endpoint });
            public_keys.push(pk);
        }
        let account = Distributed {
            signing_threshold,
            participants: refs,
        };
        account.validate()?;

        let composite_pk = valid_point(&composite, "composite_public_key")?;
        let mut points: Vec<(ShareId, PublicKey)> = Vec::with_capacity(n);
        for (p, pk) in account.participants.iter().zip(&public_keys) {
            let point = valid_point(pk, &format!("participant {}'s public_key", p.id))?;
            if let Some((other, _)) = points.iter().find(|(_, known)| *known == point) {
                return Err(format!(
                    "participants {other} and {} have the same public_key",
                    p.id
                ));
            }
            points.push((p.id, point));
        }
        for subset in threshold::proof_subsets(n, signing_threshold as usize) {
            let picked: Vec<(ShareId, PublicKey)> = subset.iter().map(|&i| points[i]).collect();
            let ok = threshold::interpolate_public_key(&picked)
                .is_ok_and(|recovered| recovered == composite_pk);
            if !ok {
                let ids: Vec<String> = picked.iter().map(|(id, _)| id.to_string()).collect();
                return Err(format!(
                    "the public keys of participants {} do not recombine to composite_public_key \
                     {composite}: the manifest is altered, or its keys are from another split",
                    ids.join(",")
                ));
            }
        }
        Ok(Manifest {
            composite,
            account,
            public_keys,
        })
    }

    /// Parse and check manifest JSON; the error says what is wrong, in one line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let file: ManifestFile =
            serde_json::from_str(text).map_err(|e| format!("not a split manifest: {e}"))?;
        Manifest::check(
            file.composite_public_key,
            file.signing_threshold,
            file.participants
                .into_iter()
                .map(|p| (p.id, p.endpoint, p.public_key))
                .collect(),
        )
    }

    /// Read, parse and check a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let bad = |reason: String| DistributionError::Manifest {
            path: path.to_owned(),
            reason,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_MANIFEST_LEN + 1).read_to_string(&mut text))
            .map_err(SignerError::io(path))?;
        if text.len() as u64 > MAX_MANIFEST_LEN {
            return Err(bad(format!("larger than the {MAX_MANIFEST_LEN} bytes accepted")).into());
        }
        Ok(Manifest::parse(&text).map_err(bad)?)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        let file = ManifestFile {
            composite_public_key: self.composite,
            signing_threshold: u64::from(self.account.signing_threshold),
            participants: self
                .account
                .participants
                .iter()
                .zip(&self.public_keys)
                .map(|(p, pk)| ManifestParticipant {
                    id: p.id.get(),
                    endpoint: p.endpoint.clone(),
                    public_key: *pk,
                })
                .collect(),
        };
        // Strings, integers and arrays of them always serialise.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// The validator (composite) public key.
    pub fn composite_public_key(&self) -> PublicKeyBytes {
        self.composite
    }

    /// Threshold and participants, as a participant's key record keeps them.
    pub fn account(&self) -> &Distributed {
        &self.account
    }

    /// The participant whose share has public key `pk`.
    pub fn participant_with_key(&self, pk: &PublicKeyBytes) -> Option<&ParticipantRef> {
        let i = self.public_keys.iter().position(|known| known == pk)?;
        self.account.participants.get(i)
    }

    /// The share public key of participant `id`.
    pub fn public_key(&self, id: ShareId) -> Option<PublicKeyBytes> {
        let i = self.account.participants.iter().position(|p| p.id == id)?;
        self.public_keys.get(i).copied()
    }
}

/// A dealer split to make: t-of-n, one share per participant endpoint, with explicit share ids.
/// A value exists only once it holds together (the profile's rules on threshold, ids, origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec {
    account: Distributed,
}

impl SplitSpec {
    /// `threshold`-of-n for the participants at `endpoints` (HTTPS origins), with share ids
    /// `ids` (default 1..n). `shares`, when given, must be n: it is the operator saying n.
    pub fn new(
        threshold: usize,
        shares: Option<usize>,
        ids: Option<Vec<ShareId>>,
        endpoints: Vec<String>,
    ) -> Result<SplitSpec, DistributionError> {
        let bad = |s: String| Err(DistributionError::BadSplit(s));
        let n = endpoints.len();
        if n == 0 {
            return bad("no participants: give one participant endpoint per share".into());
        }
        if let Some(shares) = shares.filter(|&s| s != n) {
            return bad(format!(
                "{shares} share(s) but {n} participant endpoint(s): give one endpoint per share"
            ));
        }
        let ids = ids.unwrap_or_else(|| threshold::default_ids(n));
        if ids.len() != n {
            return bad(format!(
                "{} share id(s) for {n} participant(s): give one id per participant",
                ids.len()
            ));
        }
        let account = Distributed {
            signing_threshold: u32::try_from(threshold).map_err(|_| {
                DistributionError::BadSplit(format!("threshold {threshold} is too large"))
            })?,
            participants: ids
                .into_iter()
                .zip(endpoints)
                .map(|(id, endpoint)| ParticipantRef { id, endpoint })
                .collect(),
        };
        account.validate().map_err(DistributionError::BadSplit)?;
        Ok(SplitSpec { account })
    }

    /// Shares needed to sign.
    pub fn threshold(&self) -> usize {
        self.account.signing_threshold as usize
    }

    /// Shares made.
    pub fn shares(&self) -> usize {
        self.account.participants.len()
    }
}

/// One share as a split hands it out: an EIP-2335 keystore of the share's secret (its `pubkey`
/// the share's public key), under a password of its own.
#[derive(Debug)]
pub struct DealtShare {
    id: ShareId,
    keystore: Keystore,
    password: SecretString,
}

/// The outcome of [`deal`]: the manifest and every share's keystore and password, proven and
/// not yet written.
#[derive(Debug)]
pub struct Dealt {
    manifest: Manifest,
    shares: Vec<DealtShare>,
}

/// A fresh password: 32 bytes from the OS, as 64 hex digits. Every copy is wiped: the digits
/// are written into a wiping buffer, and the secret string is allocated at its exact length.
fn random_password() -> Result<SecretString> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(bytes.as_mut())
        .map_err(|e| SignerError::System(format!("no randomness for a share password: {e}")))?;
    let mut digits = Zeroizing::new([0u8; 64]);
    let internal = || SignerError::Internal("hex digits of a share password".into());
    hex::encode_to_slice(bytes.as_ref(), digits.as_mut()).map_err(|_| internal())?;
    let text = std::str::from_utf8(digits.as_ref()).map_err(|_| internal())?;
    Ok(SecretString::from(text))
}

/// Split `secret` as `spec` says, and prove it before anything leaves memory: every share's
/// public key is computed from its own secret; partial signatures of a random message from every
/// t-subset (the n − t + 1 that prove the same when C(n, t) > 252) recombine to a signature that
/// verifies under the composite key; the manifest passes the checks a participant makes; and
/// each share's keystore, read back from its JSON, decrypts under its password to the share.
///
/// Share keystores use PBKDF2 with the EIP's 262144 iterations: each password is 256 random
/// bits, so a costlier KDF would add nothing, and every EIP-2335 reader reads PBKDF2.
pub fn deal(secret: &SecretKey, spec: &SplitSpec) -> Result<Dealt> {
    let unproven = |e: String| SignerError::from(DistributionError::Unproven(e));
    let composite = PublicKeyBytes(bls::public_key_bytes(secret));
    let ids: Vec<ShareId> = spec.account.participants.iter().map(|p| p.id).collect();
    let shares = threshold::split(secret, spec.threshold(), &ids)?;

    let hashed = HashedMessage::new(&random_root()?);
    let partials: Vec<(ShareId, Signature)> = shares
        .iter()
        .map(|(id, sk)| (*id, threshold::partial_sign(sk, &hashed)))
        .collect();
    check_recombination(
        &secret.sk_to_pk(),
        &composite,
        spec.threshold(),
        &hashed,
        &partials,
    )
    .map_err(|e| unproven(e.to_string()))?;

    let manifest = Manifest::check(
        composite,
        spec.threshold() as u64,
        shares
            .iter()
            .zip(&spec.account.participants)
            .map(|((id, sk), p)| {
                (
                    id.get(),
                    p.endpoint.clone(),
                    PublicKeyBytes(bls::public_key_bytes(sk)),
                )
            })
            .collect(),
    )
    .map_err(|e| unproven(format!("the manifest made fails its own checks: {e}")))?;

    let n = shares.len();
    let mut dealt = Vec::with_capacity(n);
    for (id, sk) in &shares {
        let name = share_keystore_name(*id);
        let as_keystore = |source| SignerError::Keystore {
            path: PathBuf::from(&name),
            source,
        };
        let bytes = Zeroizing::new(sk.to_bytes());
        let password = random_password()?;
        let mut keystore = Keystore::encrypt(
            &bytes,
            &password,
            KdfChoice::pbkdf2_default(),
            Some(hex::encode(bls::public_key_bytes(sk))),
            "",
        )
        .map_err(as_keystore)?;
        keystore.description = Some(format!(
            "hsm-signer share {id} of the {}-of-{n} composite key {composite}",
            spec.threshold()
        ));
        let reopened = Keystore::from_json(&keystore.to_json())
            .and_then(|k| k.decrypt(&password))
            .map_err(as_keystore)?;
        if *reopened != *bytes {
            return Err(unproven(format!(
                "share {id}'s keystore does not decrypt to the share"
            )));
        }
        dealt.push(DealtShare {
            id: *id,
            keystore,
            password,
        });
    }
    Ok(Dealt {
        manifest,
        shares: dealt,
    })
}

/// Create `path` anew with `mode` and write `parts` into it, durably.
fn write_new(path: &Path, mode: u32, parts: &[&[u8]]) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| {
            for part in parts {
                f.write_all(part)?;
            }
            f.sync_all()
        })
        .map_err(SignerError::io(path))
}

impl Dealt {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Write the split into `dir`, which must not exist: created 0700, then for each share
    /// `share-<id>.json` and `share-<id>.password` (0600), then `manifest.json` (0644, last, so a
    /// directory with a manifest is complete). On a failure the directory is removed again.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    SignerError::from(DistributionError::OutputExists(dir.to_owned()))
                }
                _ => SignerError::io(dir)(e),
            })?;
        let written = self.write_files(dir);
        if written.is_err() {
            // The directory is ours (made just now, 0700): leave no partial split behind.
            let _ = std::fs::remove_dir_all(dir);
        }
        written
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        // The mode asked for is reduced by the umask; a split's directory is 0700 regardless.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SignerError::io(dir))?;
        for share in &self.shares {
            write_new(
                &dir.join(share_keystore_name(share.id)),
                0o600,
                &[share.keystore.to_json().as_bytes(), b"\n"],
            )?;
            write_new(
                &dir.join(share_password_name(share.id)),
                0o600,
                &[share.password.expose_secret().as_bytes(), b"\n"],
            )?;
        }
        write_new(
            &dir.join(MANIFEST_FILE),
            0o644,
            &[self.manifest.to_json().as_bytes(), b"\n"],
        )?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(SignerError::io(dir))
    }
}

/// Read and decrypt one EIP-2335 keystore file: its public key (checked against the pubkey it
/// declares, if any) and secret.
pub fn open_keystore(path: &Path, password: &SecretString) -> Result<(PublicKeyBytes, SecretKey)> {
    let text = std::fs::read_to_string(path).map_err(SignerError::io(path))?;
    let keystore = Keystore::from_json(&text).map_err(|source| SignerError::Keystore {
        path: path.to_owned(),
        source,
    })?;
    decrypt_one(&keystore, path, password)
}

/// A participant's own share: decrypted from its keystore and found among its manifest's
/// participants (by the public key of its secret). Only [`OwnShare::open`] makes one, so
/// holding one means those checks passed; [`OwnShare::store`] seals it.
pub struct OwnShare {
    composite: PublicKeyBytes,
    account: Distributed,
    id: ShareId,
    secret: SecretKey,
}

impl std::fmt::Debug for OwnShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnShare")
            .field("composite", &self.composite)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OwnShare {
    /// Decrypt `keystore` with `password` (its declared pubkey, if any, must be its secret's)
    /// and find the participant of `manifest` (read from `manifest_path`) whose public key it is.
    pub fn open(
        manifest: &Manifest,
        manifest_path: &Path,
        keystore: &Path,
        password: &SecretString,
    ) -> Result<OwnShare> {
        let (pubkey, secret) = open_keystore(keystore, password)?;
        let me = manifest.participant_with_key(&pubkey).ok_or_else(|| {
            DistributionError::NotAParticipant {
                keystore: keystore.to_owned(),
                pubkey: pubkey.to_string(),
                manifest: manifest_path.to_owned(),
            }
        })?;
        Ok(OwnShare {
            composite: manifest.composite_public_key(),
            account: manifest.account().clone(),
            id: me.id,
            secret,
        })
    }

    /// The composite (validator) public key.
    pub fn composite(&self) -> PublicKeyBytes {
        self.composite
    }

    /// This participant's share id.
    pub fn id(&self) -> ShareId {
        self.id
    }

    /// This participant's HTTPS origin, as the manifest gives it.
    pub fn endpoint(&self) -> &str {
        self.account
            .participants
            .iter()
            .find(|p| p.id == self.id)
            .map_or("", |p| p.endpoint.as_str())
    }

    /// The account: threshold and participants.
    pub fn account(&self) -> &Distributed {
        &self.account
    }

    /// Seal the share on `device`, prove the envelope opens to it, and store the participant's
    /// key record: the composite key, threshold 1 on this host, this one share, and the account.
    /// Refuses a composite key the store holds already. Nothing is written on failure.
    pub fn store(self, store: &mut KeyStore, device: &Device) -> Result<()> {
        if store.contains(&self.composite) {
            return Err(DistributionError::AlreadyStored(self.composite.to_string()).into());
        }
        let hashed = HashedMessage::new(&random_root()?);
        let share = seal_proven(device, &self.composite, self.id, &self.secret, &hashed)?;
        store.insert(KeyRecord {
            version: KEY_FILE_VERSION,
            pubkey: self.composite,
            threshold: 1,
            shares: vec![share],
            origin: ORIGIN.to_owned(),
            derivation_path: None,
            remote: Vec::new(),
            distributed: Some(self.account),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest's participants before the checks: (id, endpoint, public key).
    type Listed = Vec<(u64, String, PublicKeyBytes)>;

    /// The (id, endpoint, public key) of every share of a fresh t-of-n split, with its composite.
    fn participants(t: usize, n: u64) -> (PublicKeyBytes, Listed) {
        let sk = bls::random_secret_key().unwrap();
        let ids: Vec<ShareId> = (1..=n).filter_map(|i| ShareId::new(i * 7)).collect();
        let shares = threshold::split(&sk, t, &ids).unwrap();
        let list = shares
            .iter()
            .map(|(id, s)| {
                (
                    id.get(),
                    format!("https://p{id}.example:9000"),
                    PublicKeyBytes(bls::public_key_bytes(s)),
                )
            })
            .collect();
        (PublicKeyBytes(bls::public_key_bytes(&sk)), list)
    }

    #[test]
    fn a_manifest_survives_its_own_json_and_finds_each_participant() {
        let (composite, list) = participants(3, 5);
        let m = Manifest::check(composite, 3, list.clone()).unwrap();
        let text = m.to_json();
        assert!(text.contains("\"signing_threshold\": \"3\"") && text.contains("\"id\": \"35\""));
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        for (id, endpoint, pk) in &list {
            let p = m.participant_with_key(pk).unwrap();
            assert_eq!((p.id.get(), &p.endpoint), (*id, endpoint));
            assert_eq!(m.public_key(p.id), Some(*pk));
        }
        assert!(m.participant_with_key(&composite).is_none());
    }

    #[test]
    fn past_252_subsets_the_chain_still_finds_any_share_off_the_polynomial() {
        // C(11, 5) = 462: the check runs the n - t + 1 subsets that prove every one.
        let (composite, list) = participants(5, 11);
        assert!(Manifest::check(composite, 5, list.clone()).is_ok());
        let stranger = PublicKeyBytes(bls::public_key_bytes(&bls::random_secret_key().unwrap()));
        for i in [0, 4, 5, 10] {
            let mut bad = list.clone();
            bad[i].2 = stranger;
            let err = Manifest::check(composite, 5, bad).unwrap_err();
            assert!(err.contains("do not recombine"), "{i}: {err}");
        }
    }

    #[test]
    fn malformed_manifests_are_refused_with_the_reason() {
        let (composite, list) = participants(2, 3);
        let with = |edit: &dyn Fn(&mut Listed)| {
            let mut l = list.clone();
            edit(&mut l);
            l
        };
        let mut infinity = [0u8; 48];
        infinity[0] = 0xc0;
        let cases: Vec<(u64, Listed, &str)> = vec![
            (0, list.clone(), "signing threshold 0 with 3"),
            (u64::MAX, list.clone(), "with 3 participant(s)"),
            (2, vec![], "signing threshold 2 with 0"),
            (
                2,
                with(&|l| l[1].2 = l[0].2),
                "participants 7 and 14 have the same",
            ),
            (
                2,
                with(&|l| l[2].2 = PublicKeyBytes(infinity)),
                "participant 21's public_key",
            ),
            (2, with(&|l| l[2].0 = 7), "participant id 7 appears twice"),
        ];
        for (t, l, expect) in cases {
            let err = Manifest::check(composite, t, l).unwrap_err();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        }
        let err = Manifest::check(PublicKeyBytes(infinity), 2, list).unwrap_err();
        assert!(err.contains("composite_public_key"), "{err}");
        assert!(Manifest::parse("[]")
            .unwrap_err()
            .starts_with("not a split manifest"));
    }
}
