//! EIP-2335 (BLS12-381 keystore, version 4) reading and writing.
//!
//! This module owns the keystore format and its cryptography only: it parses
//! and validates keystore JSON, turns a keystore plus a password into the 32
//! secret bytes it protects ([`Keystore::decrypt`]), and turns 32 secret bytes
//! plus a password back into a keystore ([`Keystore::encrypt`]). It does not
//! touch HSMs, read or write key files, prompt for passwords, derive or check
//! BLS public keys, or log anything: callers hand it strings and secrets and
//! decide what to do with the result. Every buffer this module allocates for
//! key material (normalised password, derived key, plaintext) is wrapped in
//! [`Zeroizing`] (the internal state of the scrypt, PBKDF2, SHA-256 and AES
//! implementations is beyond its reach), and the KDF parameters of a keystore
//! are bounded before any work is done so that a hostile file cannot exhaust
//! memory or CPU.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::Hmac;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::{Zeroize, Zeroizing};

/// The only keystore version this module reads or writes.
pub(crate) const KEYSTORE_VERSION: u64 = 4;

/// Length in bytes of the secret a keystore protects (a BLS12-381 secret key).
pub(crate) const SECRET_LEN: usize = 32;
// `Eip2335Error::BadSecretLength`'s message says 32.
const _: () = assert!(SECRET_LEN == 32);

/// `dklen` we accept and produce: aes-128-ctr uses bytes 0..16 as the key and
/// the checksum uses bytes 16..32, so exactly 32 bytes are needed.
const DKLEN: usize = 32;

// Resource limits for scrypt. The KDF parameters come from the file, which is
// not authenticated until after the KDF has run, so they are attacker
// controlled. One scrypt derivation allocates 128 * r * n bytes and does work
// proportional to n * r * p. The EIP default (n = 2^18, r = 8, p = 1) is
// 256 MiB and on the order of a second. The limits leave room for keystores
// made deliberately stronger than that (4x n, 4x r, 16x p) while capping the
// memory of one derivation at 1 GiB and its time at 64x the default (p = 16
// on a 1 GiB derivation), i.e. about a minute rather than unbounded; they also
// keep r * p <= 512, far inside RFC 7914's r * p < 2^30.

/// Largest scrypt `n` accepted: 2^20, four times the EIP default.
const MAX_SCRYPT_N: u64 = 1 << 20;
/// Largest scrypt `r` accepted: four times the EIP default of 8.
const MAX_SCRYPT_R: u64 = 32;
/// Largest scrypt `p` accepted. `p` multiplies the time, not the memory (the
/// implementation runs the p lanes one after another); the EIP default is 1.
const MAX_SCRYPT_P: u64 = 16;
/// Cap on scrypt's big buffer, 128 * r * n bytes. The individual limits above
/// would still allow 4 GiB (n = 2^20, r = 32); a signer importing keystores in
/// parallel must not be made to allocate that by a file it has not yet
/// authenticated. 1 GiB still admits n = 2^20 with the default r = 8.
const MAX_SCRYPT_MEM: u64 = 1 << 30;
/// Largest PBKDF2 iteration count accepted. PBKDF2 needs no memory, so only
/// time is at stake: ten million HMAC-SHA256 iterations is about 40 times the
/// EIP default of 262144 (seconds of CPU), beyond which a keystore is far more
/// likely hostile than careful.
const MAX_PBKDF2_C: u64 = 10_000_000;
/// Largest keystore JSON accepted. Real keystores are about 1 KiB.
const MAX_JSON_LEN: usize = 1 << 20;
/// How many characters of a file-supplied name are quoted in an error.
const MAX_QUOTED_CHARS: usize = 64;

/// Its errors are kinds of the crate's errors (`crate::error`, a leaf), used here by name.
pub(crate) use crate::error::Eip2335Error;

type Result<T> = std::result::Result<T, Eip2335Error>;

/// An EIP-2335 keystore, in the EIP's JSON shape.
///
/// Fields are public so callers can read `pubkey`, `path`, `uuid` and
/// `description`. A value obtained by deserialising directly (rather than via
/// [`Keystore::from_json`]) is validated again by [`Keystore::decrypt`], so
/// nothing here has to be trusted. `Debug` shows only public data and
/// ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keystore {
    /// The three crypto modules.
    pub crypto: KeystoreCrypto,
    /// Optional human-readable description; not necessarily unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Public key as hex without `0x` (as the deposit CLI writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
    /// EIP-2334 derivation path, or `""` if unknown.
    pub path: String,
    /// RFC 4122 UUID of the keystore.
    pub uuid: String,
    /// Always 4.
    pub version: u64,
}

/// The `crypto` object of a keystore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeystoreCrypto {
    /// Key derivation: `scrypt` or `pbkdf2`.
    pub kdf: KeystoreModule,
    /// Password verification: `sha256`.
    pub checksum: KeystoreModule,
    /// Secret encryption: `aes-128-ctr`.
    pub cipher: KeystoreModule,
}

/// One EIP-2335 module: a function name, its parameters, and its message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeystoreModule {
    /// Which construction is used, e.g. `"scrypt"`.
    pub function: String,
    /// The construction's parameters, kept as JSON so that unknown functions
    /// can still be read and reported precisely.
    pub params: Map<String, Value>,
    /// The construction's primary input, as hex (empty for the KDF).
    pub message: String,
}

/// Which KDF [`Keystore::encrypt`] uses, with its parameters.
///
/// `n` is the scrypt cost parameter as a plain value (as written in the
/// keystore JSON), not its log2: it must be a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdfChoice {
    /// scrypt with cost `n` (a power of two, 2 ..= 2^20), block size `r` and
    /// parallelism `p`.
    Scrypt {
        /// CPU/memory cost, a power of two (value form, e.g. 262144).
        n: u32,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// PBKDF2-HMAC-SHA256 with `c` iterations.
    Pbkdf2 {
        /// Iteration count.
        c: u32,
    },
}

impl KdfChoice {
    /// The EIP's scrypt parameters: n = 262144, r = 8, p = 1.
    #[must_use]
    pub const fn scrypt_default() -> Self {
        KdfChoice::Scrypt {
            n: 262_144,
            r: 8,
            p: 1,
        }
    }

    /// The EIP's PBKDF2 parameters: c = 262144 (prf hmac-sha256).
    #[must_use]
    pub const fn pbkdf2_default() -> Self {
        KdfChoice::Pbkdf2 { c: 262_144 }
    }

    fn check(self) -> Result<Kdf> {
        match self {
            KdfChoice::Scrypt { n, r, p } => {
                check_scrypt(u64::from(n), u64::from(r), u64::from(p)).map(Kdf::Scrypt)
            }
            KdfChoice::Pbkdf2 { c } => check_pbkdf2(u64::from(c)).map(|c| Kdf::Pbkdf2 { c }),
        }
    }

    /// The `crypto.kdf` module for these (already checked) parameters.
    fn module(self, salt: &[u8]) -> KeystoreModule {
        let mut params = Map::new();
        params.insert("dklen".into(), Value::from(DKLEN));
        match self {
            KdfChoice::Scrypt { n, r, p } => {
                params.insert("n".into(), Value::from(n));
                params.insert("r".into(), Value::from(r));
                params.insert("p".into(), Value::from(p));
                params.insert("salt".into(), Value::from(hex::encode(salt)));
                KeystoreModule {
                    function: "scrypt".into(),
                    params,
                    message: String::new(),
                }
            }
            KdfChoice::Pbkdf2 { c } => {
                params.insert("c".into(), Value::from(c));
                params.insert("prf".into(), Value::from("hmac-sha256"));
                params.insert("salt".into(), Value::from(hex::encode(salt)));
                KeystoreModule {
                    function: "pbkdf2".into(),
                    params,
                    message: String::new(),
                }
            }
        }
    }
}

/// The CPU work of a key derivation. One unit is one scrypt `n · r · p` step (two Salsa20/8
/// block mixes of 64 bytes) or one PBKDF2-HMAC-SHA256 iteration (two SHA-256 compressions),
/// which cost about the same. The EIP-2335 defaults: scrypt 2^21, PBKDF2 2^18.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KdfWork(pub u64);

/// Key derivations run by this process, for the metric `signer_keystore_kdf_runs`.
static KDF_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Key derivations run by this process since it started.
pub(crate) fn kdf_runs() -> u64 {
    KDF_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A validated KDF with parameters ready for the implementation.
#[derive(Clone, Copy, Debug)]
enum Kdf {
    Scrypt(scrypt::Params),
    Pbkdf2 { c: u32 },
}

/// Everything `decrypt` needs, decoded and checked.
struct Parsed {
    kdf: Kdf,
    salt: Vec<u8>,
    checksum: [u8; 32],
    iv: [u8; 16],
    ciphertext: [u8; SECRET_LEN],
}

impl Keystore {
    /// Parses and validates keystore JSON.
    ///
    /// Checks the version, the three function names, the KDF parameters
    /// (including the resource limits) and every hex field, so that a
    /// keystore that loads can be decrypted without further format errors.
    /// Does no key derivation and needs no password.
    ///
    /// # Errors
    ///
    /// [`Eip2335Error::Malformed`] for bad JSON, missing or mistyped fields,
    /// bad hex or wrong lengths; [`Eip2335Error::UnsupportedVersion`];
    /// [`Eip2335Error::UnknownKdf`], [`Eip2335Error::UnknownChecksum`] or
    /// [`Eip2335Error::UnknownCipher`]; [`Eip2335Error::UnsupportedKdfParams`]
    /// for parameters outside the limits; [`Eip2335Error::BadSecretLength`]
    /// if the ciphertext is not 32 bytes.
    pub fn from_json(s: &str) -> Result<Keystore> {
        if s.len() > MAX_JSON_LEN {
            return Err(Eip2335Error::Malformed(format!(
                "keystore JSON is {} bytes, more than the {MAX_JSON_LEN} accepted",
                s.len()
            )));
        }
        // First as a plain JSON tree: the keystore must be an object (serde
        // would also accept a bare array for a struct), and its version is
        // read before anything else, so that e.g. an Ethereum 1 (version 3)
        // keystore is reported as such rather than as a pile of missing
        // fields. The typed parse below reads the text again so that its
        // errors carry line and column.
        let tree: Value = serde_json::from_str(s).map_err(|e| json_error(&e))?;
        let Some(object) = tree.as_object() else {
            return Err(Eip2335Error::Malformed(
                "keystore JSON must be an object".into(),
            ));
        };
        if let Some(v) = object.get("version").and_then(Value::as_u64) {
            if v != KEYSTORE_VERSION {
                return Err(Eip2335Error::UnsupportedVersion(v));
            }
        }
        let ks: Keystore = serde_json::from_str(s).map_err(|e| json_error(&e))?;
        ks.validate()?;
        Ok(ks)
    }

    /// Pretty-printed keystore JSON, in the EIP's field order.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and JSON maps cannot fail; the
        // fallback keeps this function total without a panic path.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the keystore without decrypting it (the same checks as
    /// [`Keystore::from_json`] after parsing).
    ///
    /// # Errors
    ///
    /// As for [`Keystore::from_json`], except JSON syntax errors.
    pub(crate) fn validate(&self) -> Result<()> {
        self.parse().map(|_| ())
    }

    /// The CPU work of this keystore's KDF, without running it, in [`KdfWork`] units: scrypt
    /// `n · r · p`, PBKDF2 `c`. Checked like [`Keystore::validate`] first.
    ///
    /// # Errors
    ///
    /// As for [`Keystore::validate`].
    pub(crate) fn kdf_work(&self) -> Result<KdfWork> {
        Ok(match self.parse()?.kdf {
            Kdf::Scrypt(params) => KdfWork(
                (1u64 << params.log_n())
                    .saturating_mul(u64::from(params.r()))
                    .saturating_mul(u64::from(params.p())),
            ),
            Kdf::Pbkdf2 { c } => KdfWork(u64::from(c)),
        })
    }

    /// Derives the decryption key from `password`, verifies the checksum and
    /// returns the 32 secret bytes.
    ///
    /// The password is processed as EIP-2335 requires: NFKD normalisation,
    /// removal of C0, C1 and DEL control codes, then UTF-8 encoding.
    ///
    /// # Errors
    ///
    /// [`Eip2335Error::ChecksumMismatch`] for a wrong password (or an altered
    /// keystore), and any error of [`Keystore::validate`], which is checked
    /// before any key derivation.
    pub fn decrypt(&self, password: &SecretString) -> Result<Zeroizing<[u8; SECRET_LEN]>> {
        let parsed = self.parse()?;
        let password = normalize_password(password.expose_secret());
        let key = derive_key(parsed.kdf, &password, &parsed.salt)?;
        let expected = checksum(&key, &parsed.ciphertext);
        if !constant_time_eq(&expected, &parsed.checksum) {
            return Err(Eip2335Error::ChecksumMismatch);
        }
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret.copy_from_slice(&parsed.ciphertext);
        aes_128_ctr(&key, &parsed.iv, &mut secret[..])?;
        Ok(secret)
    }

    /// Encrypts `secret` under `password` into a new version 4 keystore with
    /// a fresh random salt (32 bytes), IV (16 bytes) and UUID (v4).
    ///
    /// `pubkey_hex` may carry a `0x` prefix and upper-case digits; it is stored
    /// lower-case without the prefix. `description` is left empty; set the
    /// public field afterwards if wanted.
    ///
    /// # Errors
    ///
    /// [`Eip2335Error::UnsupportedKdfParams`] if `kdf` is outside the limits
    /// that [`Keystore::decrypt`] accepts (so every keystore written here can
    /// be read back); [`Eip2335Error::Malformed`] if `pubkey_hex` is not hex;
    /// [`Eip2335Error::Randomness`] if the system RNG fails.
    pub fn encrypt(
        secret: &[u8; SECRET_LEN],
        password: &SecretString,
        kdf: KdfChoice,
        pubkey_hex: Option<String>,
        path: &str,
    ) -> Result<Keystore> {
        let checked_kdf = kdf.check()?;
        let pubkey = pubkey_hex.map(|pk| normalize_pubkey_hex(&pk)).transpose()?;

        let mut salt = [0u8; 32];
        fill_random(&mut salt)?;
        let mut iv = [0u8; 16];
        fill_random(&mut iv)?;
        let uuid = random_uuid_v4()?;

        let password = normalize_password(password.expose_secret());
        let key = derive_key(checked_kdf, &password, &salt)?;
        let mut buf = Zeroizing::new([0u8; SECRET_LEN]);
        buf.copy_from_slice(secret);
        aes_128_ctr(&key, &iv, &mut buf[..])?;
        // `buf` now holds ciphertext.
        let sum = checksum(&key, &buf[..]);

        let mut cipher_params = Map::new();
        cipher_params.insert("iv".into(), Value::from(hex::encode(iv)));
        Ok(Keystore {
            crypto: KeystoreCrypto {
                kdf: kdf.module(&salt),
                checksum: KeystoreModule {
                    function: "sha256".into(),
                    params: Map::new(),
                    message: hex::encode(sum),
                },
                cipher: KeystoreModule {
                    function: "aes-128-ctr".into(),
                    params: cipher_params,
                    message: hex::encode(&buf[..]),
                },
            },
            description: None,
            pubkey,
            path: path.to_owned(),
            uuid,
            version: KEYSTORE_VERSION,
        })
    }

    fn parse(&self) -> Result<Parsed> {
        if self.version != KEYSTORE_VERSION {
            return Err(Eip2335Error::UnsupportedVersion(self.version));
        }
        let crypto = &self.crypto;

        let kdf_fn = crypto.kdf.function.as_str();
        if kdf_fn != "scrypt" && kdf_fn != "pbkdf2" {
            return Err(Eip2335Error::UnknownKdf(quote(kdf_fn)));
        }
        if crypto.checksum.function != "sha256" {
            return Err(Eip2335Error::UnknownChecksum(quote(
                &crypto.checksum.function,
            )));
        }
        if crypto.cipher.function != "aes-128-ctr" {
            return Err(Eip2335Error::UnknownCipher(quote(&crypto.cipher.function)));
        }

        let params = &crypto.kdf.params;
        let dklen = kdf_uint(params, "dklen")?;
        if dklen != DKLEN as u64 {
            return Err(Eip2335Error::UnsupportedKdfParams(format!(
                "dklen must be {DKLEN}, got {dklen}"
            )));
        }
        let kdf = if kdf_fn == "scrypt" {
            let n = kdf_uint(params, "n")?;
            let r = kdf_uint(params, "r")?;
            let p = kdf_uint(params, "p")?;
            Kdf::Scrypt(check_scrypt(n, r, p)?)
        } else {
            let c = kdf_uint(params, "c")?;
            let prf = param_str(params, "crypto.kdf.params.prf")?;
            if prf != "hmac-sha256" {
                return Err(Eip2335Error::UnsupportedKdfParams(format!(
                    "pbkdf2 prf must be \"hmac-sha256\", got {:?}",
                    quote(prf)
                )));
            }
            Kdf::Pbkdf2 {
                c: check_pbkdf2(c)?,
            }
        };
        let salt = decode_hex(
            param_str(params, "crypto.kdf.params.salt")?,
            "crypto.kdf.params.salt",
        )?;

        let checksum = decode_hex_array::<32>(&crypto.checksum.message, "crypto.checksum.message")?;
        let iv = decode_hex_array::<16>(
            param_str(&crypto.cipher.params, "crypto.cipher.params.iv")?,
            "crypto.cipher.params.iv",
        )?;
        let ct = decode_hex(&crypto.cipher.message, "crypto.cipher.message")?;
        let ciphertext: [u8; SECRET_LEN] = ct
            .as_slice()
            .try_into()
            .map_err(|_| Eip2335Error::BadSecretLength(ct.len()))?;

        if let Some(pk) = &self.pubkey {
            decode_hex(pk, "pubkey")?;
        }

        Ok(Parsed {
            kdf,
            salt,
            checksum,
            iv,
            ciphertext,
        })
    }
}

/// Checks scrypt parameters against the EIP, RFC 7914 and our resource limits.
fn check_scrypt(n: u64, r: u64, p: u64) -> Result<scrypt::Params> {
    let bad = |why: String| Err(Eip2335Error::UnsupportedKdfParams(why));
    if n < 2 || !n.is_power_of_two() {
        return bad(format!(
            "scrypt n must be a power of two of at least 2, got {n}"
        ));
    }
    if n > MAX_SCRYPT_N {
        return bad(format!("scrypt n = {n} exceeds the limit 2^20"));
    }
    if r == 0 || r > MAX_SCRYPT_R {
        return bad(format!("scrypt r must be 1 ..= {MAX_SCRYPT_R}, got {r}"));
    }
    if p == 0 || p > MAX_SCRYPT_P {
        return bad(format!("scrypt p must be 1 ..= {MAX_SCRYPT_P}, got {p}"));
    }
    // Bounded above, so no overflow: 128 * 32 * 2^20 = 2^32.
    let mem = 128u64.saturating_mul(r).saturating_mul(n);
    if mem > MAX_SCRYPT_MEM {
        return bad(format!(
            "scrypt n = {n}, r = {r} would need {mem} bytes, more than the {MAX_SCRYPT_MEM} allowed"
        ));
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| {
        Eip2335Error::UnsupportedKdfParams(format!("scrypt n = {n} is out of range"))
    })?;
    let r32 = u32::try_from(r).map_err(|_| {
        Eip2335Error::UnsupportedKdfParams(format!("scrypt r = {r} is out of range"))
    })?;
    let p32 = u32::try_from(p).map_err(|_| {
        Eip2335Error::UnsupportedKdfParams(format!("scrypt p = {p} is out of range"))
    })?;
    scrypt::Params::new(log_n, r32, p32, DKLEN).map_err(|_| {
        Eip2335Error::UnsupportedKdfParams(format!(
            "scrypt rejects n = {n}, r = {r}, p = {p} (RFC 7914 requires n < 2^(16 r))"
        ))
    })
}

/// Checks a PBKDF2 iteration count against our limits.
fn check_pbkdf2(c: u64) -> Result<u32> {
    if c == 0 || c > MAX_PBKDF2_C {
        return Err(Eip2335Error::UnsupportedKdfParams(format!(
            "pbkdf2 c must be 1 ..= {MAX_PBKDF2_C}, got {c}"
        )));
    }
    u32::try_from(c)
        .map_err(|_| Eip2335Error::UnsupportedKdfParams(format!("pbkdf2 c = {c} is out of range")))
}

/// Reads a non-negative integer KDF parameter. A missing or non-numeric value
/// is malformed; a number that is not a non-negative integer fitting in 64
/// bits (negative, fractional, or huge) is an unsupported parameter.
fn kdf_uint(params: &Map<String, Value>, key: &str) -> Result<u64> {
    match params.get(key) {
        None => Err(Eip2335Error::Malformed(format!(
            "missing crypto.kdf.params.{key}"
        ))),
        Some(Value::Number(num)) => num.as_u64().ok_or_else(|| {
            Eip2335Error::UnsupportedKdfParams(format!(
                "crypto.kdf.params.{key} must be a non-negative integer, got {num}"
            ))
        }),
        Some(_) => Err(Eip2335Error::Malformed(format!(
            "crypto.kdf.params.{key} must be a number"
        ))),
    }
}

/// Reads a string parameter; `what` is its full JSON path, for messages.
fn param_str<'a>(params: &'a Map<String, Value>, what: &str) -> Result<&'a str> {
    let key = what.rsplit('.').next().unwrap_or(what);
    match params.get(key) {
        None => Err(Eip2335Error::Malformed(format!("missing {what}"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Eip2335Error::Malformed(format!("{what} must be a string"))),
    }
}

/// Decodes hex (an optional `0x` prefix is tolerated). The error never quotes
/// the input: it may be ciphertext.
fn decode_hex(s: &str, what: &str) -> Result<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(digits).map_err(|_| Eip2335Error::Malformed(format!("{what} is not valid hex")))
}

fn decode_hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let bytes = decode_hex(s, what)?;
    bytes.as_slice().try_into().map_err(|_| {
        Eip2335Error::Malformed(format!(
            "{what} must be {N} bytes, got {} bytes",
            bytes.len()
        ))
    })
}

/// Validates and canonicalises a caller-supplied public key: lower-case hex
/// without `0x`.
fn normalize_pubkey_hex(s: &str) -> Result<String> {
    let bytes = decode_hex(s, "pubkey")?;
    Ok(hex::encode(bytes))
}

/// A file-supplied name, shortened for use in an error message.
fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_QUOTED_CHARS).collect();
    if s.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Turns a `serde_json` error into `Malformed` without echoing input: data
/// errors ("invalid type: string \"...\"") can quote field values, so only
/// the missing/duplicate-field ones, which name schema fields, are passed on.
fn json_error(e: &serde_json::Error) -> Eip2335Error {
    use serde_json::error::Category;
    let detail = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => e.to_string(),
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
                msg
            } else {
                format!(
                    "a field has the wrong type or value at line {} column {}",
                    e.line(),
                    e.column()
                )
            }
        }
    };
    Eip2335Error::Malformed(format!("invalid keystore JSON: {detail}"))
}

/// True for the code points EIP-2335 strips from passwords: C0 (U+0000 to
/// U+001F), DEL (U+007F) and C1 (U+0080 to U+009F). Space is kept.
fn is_stripped_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// EIP-2335 password processing: NFKD, strip control codes, UTF-8 encode.
///
/// The output is sized exactly in a first pass so that the buffer never
/// reallocates (a reallocation would leave an unzeroised copy behind). The
/// normaliser's own small internal buffers are outside our control.
fn normalize_password(password: &str) -> Zeroizing<Vec<u8>> {
    let len: usize = password
        .nfkd()
        .filter(|&c| !is_stripped_control(c))
        .map(char::len_utf8)
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut buf = [0u8; 4];
    for c in password.nfkd().filter(|&c| !is_stripped_control(c)) {
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    buf.zeroize();
    out
}

/// Runs the KDF into a 32-byte decryption key.
///
/// (scrypt's and PBKDF2's internal working buffers are not zeroised by those
/// crates; only our own output is.)
fn derive_key(kdf: Kdf, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; DKLEN]>> {
    let mut key = Zeroizing::new([0u8; DKLEN]);
    KDF_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match kdf {
        Kdf::Scrypt(params) => {
            scrypt::scrypt(password, salt, &params, &mut key[..]).map_err(|_| {
                Eip2335Error::UnsupportedKdfParams("scrypt rejected the output length".into())
            })?;
        }
        Kdf::Pbkdf2 { c } => pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, c, &mut key[..])
            .map_err(|_| {
                Eip2335Error::UnsupportedKdfParams("pbkdf2 rejected the password length".into())
            })?,
    }
    Ok(key)
}

/// SHA-256 over `key[16..32] || cipher_message`.
fn checksum(key: &[u8; DKLEN], cipher_message: &[u8]) -> [u8; 32] {
    let (_, mac_key) = key.split_at(16);
    Sha256::new()
        .chain_update(mac_key)
        .chain_update(cipher_message)
        .finalize()
        .into()
}

/// Compares without an early exit, so timing does not reveal how many leading
/// bytes of a guessed checksum were right.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// AES-128-CTR (big-endian 128-bit counter) in place, keyed by `key[0..16]`.
fn aes_128_ctr(key: &[u8; DKLEN], iv: &[u8; 16], buf: &mut [u8]) -> Result<()> {
    let (aes_key, _) = key.split_at(16);
    let mut cipher = ctr::Ctr128BE::<Aes128>::new_from_slices(aes_key, iv)
        .map_err(|_| Eip2335Error::Malformed("bad AES key or IV length".into()))?;
    cipher
        .try_apply_keystream(buf)
        .map_err(|_| Eip2335Error::Malformed("AES-CTR keystream exhausted".into()))
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| Eip2335Error::Randomness(e.to_string()))
}

/// A random RFC 4122 version 4 UUID, lower-case 8-4-4-4-12.
fn random_uuid_v4() -> Result<String> {
    let mut b = [0u8; 16];
    fill_random(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10xx
    Ok(format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    ))
}

#[cfg(test)]
mod tests;
