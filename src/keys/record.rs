//! The on-disk shape of one validator's key file, and the AAD that binds each envelope to its
//! validator and share.

use std::fmt;
use std::num::NonZeroU64;

use hsm::{Envelope, IV_LEN};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bls::PUBKEY_LEN;

/// Version of the key file format.
pub(crate) const KEY_FILE_VERSION: u32 = 1;
const AAD_PREFIX: &[u8] = b"hsm-signer/v1";

/// A share's x-coordinate: explicit and non-zero (the group key sits at x = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShareId(pub NonZeroU64);

impl ShareId {
    /// Share 1: the id of a whole key's one "share".
    pub(crate) const ONE: ShareId = ShareId(NonZeroU64::MIN);

    /// The id as an integer.
    pub fn get(self) -> u64 {
        self.0.get()
    }
    /// `Some` for a non-zero id.
    pub fn new(id: u64) -> Option<ShareId> {
        NonZeroU64::new(id).map(ShareId)
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A compressed BLS public key, written as 0x-prefixed lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKeyBytes(pub [u8; PUBKEY_LEN]);

impl PublicKeyBytes {
    /// Parse `0x…` or bare hex of exactly 48 bytes (any case).
    pub fn parse(s: &str) -> Option<PublicKeyBytes> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; PUBKEY_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PublicKeyBytes(out))
    }
}

impl fmt::Display for PublicKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PublicKeyBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKeyBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKeyBytes::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 48 bytes of hex"))
    }
}

/// `"hsm-signer/v1" || validator pubkey || share id (u64 big-endian)`: an envelope opens only
/// for the validator and share it was sealed for.
pub(crate) fn envelope_aad(validator: &PublicKeyBytes, id: ShareId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + PUBKEY_LEN + 8);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(&validator.0);
    aad.extend_from_slice(&id.get().to_be_bytes());
    aad
}

/// One share (a whole key is the single share of a 1-of-1 key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// x-coordinate.
    pub id: ShareId,
    /// Name of the device whose custody key sealed it.
    pub device: String,
    /// The share's own public key (equal to the validator's for 1-of-1).
    pub pubkey: PublicKeyBytes,
    /// The sealed secret.
    pub envelope: Envelope,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFile {
    id: ShareId,
    device: String,
    pubkey: PublicKeyBytes,
    iv: String,
    ciphertext: String,
}

impl Serialize for ShareRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ShareFile {
            id: self.id,
            device: self.device.clone(),
            pubkey: self.pubkey,
            iv: format!("0x{}", hex::encode(self.envelope.iv)),
            ciphertext: format!("0x{}", hex::encode(&self.envelope.ciphertext)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let f = ShareFile::deserialize(d)?;
        let unhex =
            |s: &str| hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(D::Error::custom);
        let iv: [u8; IV_LEN] = unhex(&f.iv)?
            .try_into()
            .map_err(|_| D::Error::custom(format!("iv must be {IV_LEN} bytes")))?;
        Ok(ShareRecord {
            id: f.id,
            device: f.device,
            pubkey: f.pubkey,
            envelope: Envelope {
                iv,
                ciphertext: unhex(&f.ciphertext)?,
            },
        })
    }
}

/// Everything the signer keeps about one validator key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Format version.
    pub version: u32,
    /// The validator's (group) public key.
    pub pubkey: PublicKeyBytes,
    /// Shares needed to sign (1 for a whole key).
    pub threshold: u32,
    /// The shares, each on its own device.
    pub shares: Vec<ShareRecord>,
    /// Where the key came from (`imported`, `generated`, …), for operators.
    #[serde(default)]
    pub origin: String,
    /// The EIP-2334 derivation path, when the imported keystore said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_path: Option<String>,
    /// On a coordinator: shares held by remote participants (beside `shares` on local devices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<RemoteShare>,
    /// On a participant: the distributed account whose one share this host holds. Such a key
    /// signs only partials, on the distributed endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<Distributed>,
}

/// A share held by a remote participant (coordinator side): the participant is one of the
/// configured `[[participants]]`, by name; its URL and TLS identity live there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteShare {
    /// x-coordinate.
    pub id: ShareId,
    /// Name of the configured participant that holds it.
    pub participant: String,
    /// The share's public key, which its partials must verify under.
    pub pubkey: PublicKeyBytes,
}

/// A participant's view of its distributed account (the profile's `DistributedAccount` less
/// this host's own share, which is the record's single share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distributed {
    /// Valid partials needed to recover a signature.
    pub signing_threshold: u32,
    /// Every participant of the account, this one included.
    pub participants: Vec<ParticipantRef>,
}

/// One participant of a distributed account: its share id and HTTPS origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRef {
    /// Its share's x-coordinate.
    pub id: ShareId,
    /// Its HTTPS origin (`https://host:port`, no path).
    pub endpoint: String,
}

impl Distributed {
    /// The profile's rules: 1 <= t <= n, distinct ids, distinct HTTPS origins.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = self.participants.len();
        let t = self.signing_threshold as usize;
        if t == 0 || t > n {
            return Err(format!("signing threshold {t} with {n} participant(s)"));
        }
        let mut ids = std::collections::HashSet::new();
        let mut endpoints = std::collections::HashSet::new();
        for p in &self.participants {
            if !ids.insert(p.id) {
                return Err(format!("participant id {} appears twice", p.id));
            }
            crate::config::check_https_origin(&p.endpoint)?;
            if !endpoints.insert(p.endpoint.to_ascii_lowercase()) {
                return Err(format!("participant endpoint {} appears twice", p.endpoint));
            }
        }
        Ok(())
    }
}

impl KeyRecord {
    /// A whole key held by one device.
    pub fn whole(pubkey: PublicKeyBytes, share: ShareRecord, origin: &str) -> KeyRecord {
        KeyRecord {
            version: KEY_FILE_VERSION,
            pubkey,
            threshold: 1,
            shares: vec![share],
            origin: origin.to_owned(),
            derivation_path: None,
            remote: Vec::new(),
            distributed: None,
        }
    }

    /// One share on a local device signs alone: a whole key, or a participant's own share.
    pub fn is_one_local_share(&self) -> bool {
        self.threshold == 1 && self.shares.len() == 1 && self.remote.is_empty()
    }

    /// Every share with where it is held, local first: the order the scheduler indexes them.
    pub fn share_count(&self) -> usize {
        self.shares.len() + self.remote.len()
    }

    /// Structural checks that need no device: version, threshold, distinct non-zero ids, one
    /// share per device or participant, and for a whole key the share pubkey equal to the
    /// validator's. A participant's record holds exactly its own share, signs alone (t = 1 on
    /// this host) and names itself among the account's participants.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.version != KEY_FILE_VERSION {
            return Err(format!("unsupported key file version {}", self.version));
        }
        let t = self.threshold as usize;
        let n = self.share_count();
        if t == 0 || t > n {
            return Err(format!("threshold {t} with {n} share(s)"));
        }
        let mut ids = std::collections::HashSet::new();
        let mut holders = std::collections::HashSet::new();
        let held = self
            .shares
            .iter()
            .map(|s| (s.id, &s.device))
            .chain(self.remote.iter().map(|r| (r.id, &r.participant)));
        for (id, holder) in held {
            if !ids.insert(id) {
                return Err(format!("share id {id} appears twice"));
            }
            if !holders.insert(holder) {
                return Err(format!("two shares on device or participant {holder}"));
            }
        }
        if let Some(account) = &self.distributed {
            account.validate()?;
            let [own] = self.shares.as_slice() else {
                return Err("a participant's record holds exactly one local share".into());
            };
            if t != 1 || !self.remote.is_empty() {
                return Err("a participant's record has threshold 1 and no remote shares".into());
            }
            if !account.participants.iter().any(|p| p.id == own.id) {
                return Err(format!(
                    "share {} is not among the account's participants",
                    own.id
                ));
            }
            return Ok(());
        }
        // With t = 1 every share is the whole key.
        if t == 1
            && (self.shares.iter().any(|s| s.pubkey != self.pubkey)
                || self.remote.iter().any(|s| s.pubkey != self.pubkey))
        {
            return Err("a 1-of-n share's pubkey differs from the validator pubkey".into());
        }
        Ok(())
    }

    /// This participant's own share, when the record is a participant's.
    pub fn own_share(&self) -> Option<&ShareRecord> {
        self.distributed.as_ref().and(self.shares.first())
    }

    /// File name in the key store.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.pubkey)
    }
}
