//! EIP-2335 against the EIP's test vectors and the keystores of other tools.

use super::*;
use std::time::{Duration, Instant};

/// EIP-2335 "Scrypt Test Vector", verbatim.
const SCRYPT_VECTOR: &str = r#"{
"crypto": {
    "kdf": {
        "function": "scrypt",
        "params": {
            "dklen": 32,
            "n": 262144,
            "p": 1,
            "r": 8,
            "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
        },
        "message": ""
    },
    "checksum": {
        "function": "sha256",
        "params": {},
        "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484"
    },
    "cipher": {
        "function": "aes-128-ctr",
        "params": {
            "iv": "264daa3f303d7259501c93d997d84fe6"
        },
        "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f"
    }
},
"description": "This is a test keystore that uses scrypt to secure the secret.",
"pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
"path": "m/12381/60/3141592653/589793238",
"uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f",
"version": 4
}"#;

/// EIP-2335 "PBKDF2 Test Vector", verbatim.
const PBKDF2_VECTOR: &str = r#"{
"crypto": {
    "kdf": {
        "function": "pbkdf2",
        "params": {
            "dklen": 32,
            "c": 262144,
            "prf": "hmac-sha256",
            "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
        },
        "message": ""
    },
    "checksum": {
        "function": "sha256",
        "params": {},
        "message": "8a9f5d9912ed7e75ea794bc5a89bca5f193721d30868ade6f73043c6ea6febf1"
    },
    "cipher": {
        "function": "aes-128-ctr",
        "params": {
            "iv": "264daa3f303d7259501c93d997d84fe6"
        },
        "message": "cee03fde2af33149775b7223e7845e4fb2c8ae1792e5f99fe9ecf474cc8c16ad"
    }
},
"description": "This is a test keystore that uses PBKDF2 to secure the secret.",
"pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
"path": "m/12381/60/0/0",
"uuid": "64625def-3331-4eea-ab6f-782f3ed16a83",
"version": 4
}"#;

const VECTOR_PASSWORD: &str = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑";
const VECTOR_SECRET_HEX: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn vector_secret() -> [u8; 32] {
    let v = hex::decode(VECTOR_SECRET_HEX).unwrap();
    v.try_into().unwrap()
}

/// A keystore cheap enough to decrypt many times.
fn cheap_keystore(password: &str) -> Keystore {
    Keystore::encrypt(
        &vector_secret(),
        &pw(password),
        KdfChoice::Pbkdf2 { c: 16 },
        None,
        "m/12381/3600/0/0/0",
    )
    .unwrap()
}

/// A boxed edit of a keystore's JSON tree.
type Edit = Box<dyn Fn(&mut Value)>;

/// Edits the JSON of `base` with `f` and parses it back.
fn edited(base: &str, f: impl FnOnce(&mut Value)) -> Result<Keystore> {
    let mut v: Value = serde_json::from_str(base).unwrap();
    f(&mut v);
    Keystore::from_json(&v.to_string())
}

#[test]
fn eip_scrypt_test_vector_decrypts_to_known_secret() {
    let ks = Keystore::from_json(SCRYPT_VECTOR).unwrap();
    let secret = ks.decrypt(&pw(VECTOR_PASSWORD)).unwrap();
    assert_eq!(hex::encode(&secret[..]), VECTOR_SECRET_HEX);
}

#[test]
fn eip_pbkdf2_test_vector_decrypts_to_known_secret() {
    let ks = Keystore::from_json(PBKDF2_VECTOR).unwrap();
    let secret = ks.decrypt(&pw(VECTOR_PASSWORD)).unwrap();
    assert_eq!(hex::encode(&secret[..]), VECTOR_SECRET_HEX);
}

#[test]
fn eip_vectors_survive_to_json_and_back() {
    for json in [SCRYPT_VECTOR, PBKDF2_VECTOR] {
        let ks = Keystore::from_json(json).unwrap();
        let again = Keystore::from_json(&ks.to_json()).unwrap();
        assert_eq!(ks, again);
        let as_value: Value = serde_json::from_str(&ks.to_json()).unwrap();
        let original: Value = serde_json::from_str(json).unwrap();
        assert_eq!(as_value, original);
    }
    let ks = Keystore::from_json(PBKDF2_VECTOR).unwrap();
    assert_eq!(ks.path, "m/12381/60/0/0");
    assert_eq!(ks.uuid, "64625def-3331-4eea-ab6f-782f3ed16a83");
    assert_eq!(
        ks.pubkey.as_deref(),
        Some("9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07")
    );
}

#[test]
fn password_nfkd_matches_eip_encoded_password() {
    // The EIP gives the encoded form of its test password.
    let bytes = normalize_password(VECTOR_PASSWORD);
    assert_eq!(hex::encode(&bytes[..]), "7465737470617373776f7264f09f9491");
    // Composed é (U+00E9) decomposes to e + U+0301.
    assert_eq!(&normalize_password("\u{e9}")[..], b"e\xcc\x81");
}

#[test]
fn password_control_codes_are_stripped_and_space_kept() {
    let with_controls = "a\u{0}b\u{1f}c\u{7f}d\u{80}e\u{9f}f\n\t\r g";
    assert_eq!(&normalize_password(with_controls)[..], b"abcdef g");
    // U+00A0 is not a control code (NFKD maps it to a space).
    assert_eq!(&normalize_password("a\u{a0}b")[..], b"a b");
    assert!(normalize_password("\u{1}\u{2}\u{85}").is_empty());
}

#[test]
fn password_with_control_codes_decrypts_like_without() {
    let ks = cheap_keystore("testpassword🔑");
    let noisy = "𝔱𝔢𝔰\u{7f}𝔱𝔭𝔞\u{0}𝔰𝔰𝔴\u{85}𝔬𝔯𝔡\n🔑\u{1b}";
    let a = ks.decrypt(&pw("testpassword🔑")).unwrap();
    let b = ks.decrypt(&pw(noisy)).unwrap();
    let c = ks.decrypt(&pw(VECTOR_PASSWORD)).unwrap();
    assert_eq!(*a, vector_secret());
    assert_eq!(a, b);
    assert_eq!(a, c);
    // And against the EIP's own vector, whose password is in fraktur.
    let vector = Keystore::from_json(PBKDF2_VECTOR).unwrap();
    assert_eq!(*vector.decrypt(&pw(noisy)).unwrap(), vector_secret());
}

#[test]
fn wrong_password_is_checksum_mismatch() {
    let ks = cheap_keystore("right horse battery staple");
    assert_eq!(
        ks.decrypt(&pw("wrong horse battery staple")),
        Err(Eip2335Error::ChecksumMismatch)
    );
    assert_eq!(ks.decrypt(&pw("")), Err(Eip2335Error::ChecksumMismatch));
}

#[test]
fn flipped_checksum_digit_is_checksum_mismatch() {
    let ks = cheap_keystore("pw");
    let mut bad = ks.clone();
    let msg = &mut bad.crypto.checksum.message;
    let first = msg.remove(0);
    msg.insert(0, if first == '0' { '1' } else { '0' });
    let bad = Keystore::from_json(&bad.to_json()).unwrap();
    assert_eq!(bad.decrypt(&pw("pw")), Err(Eip2335Error::ChecksumMismatch));
    // A flipped ciphertext digit is caught by the same checksum.
    let mut bad = ks.clone();
    let msg = &mut bad.crypto.cipher.message;
    let last = msg.pop().unwrap();
    msg.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(bad.decrypt(&pw("pw")), Err(Eip2335Error::ChecksumMismatch));
}

#[test]
fn checksum_mismatch_display_text() {
    assert_eq!(
        Eip2335Error::ChecksumMismatch.to_string(),
        "checksum mismatch: wrong password or corrupted keystore"
    );
}

#[test]
fn argon2_kdf_is_unknown_kdf() {
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["kdf"]["function"] = "argon2".into();
    });
    assert_eq!(r, Err(Eip2335Error::UnknownKdf("argon2".into())));
    // Also when deserialised directly and only checked by decrypt.
    let mut ks = Keystore::from_json(PBKDF2_VECTOR).unwrap();
    ks.crypto.kdf.function = "argon2".into();
    assert_eq!(
        ks.decrypt(&pw(VECTOR_PASSWORD)),
        Err(Eip2335Error::UnknownKdf("argon2".into()))
    );
}

#[test]
fn unknown_cipher_and_checksum_functions_are_rejected() {
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["cipher"]["function"] = "aes-128-gcm".into();
    });
    assert_eq!(r, Err(Eip2335Error::UnknownCipher("aes-128-gcm".into())));
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["checksum"]["function"] = "keccak256".into();
    });
    assert_eq!(r, Err(Eip2335Error::UnknownChecksum("keccak256".into())));
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["kdf"]["function"] = "x".repeat(10_000).into();
    });
    match r {
        Err(Eip2335Error::UnknownKdf(name)) => assert!(name.chars().count() <= 65),
        other => panic!("expected UnknownKdf, got {other:?}"),
    }
}

#[test]
fn version_3_is_unsupported_version() {
    let r = edited(PBKDF2_VECTOR, |v| v["version"] = 3.into());
    assert_eq!(r, Err(Eip2335Error::UnsupportedVersion(3)));
    // An Ethereum 1 keystore has a different shape; its version is still
    // what gets reported.
    let eth1 = r#"{"address":"008aeeda4d805471df9b2a5b0f38a0c3bcba786b",
        "crypto":{"cipher":"aes-128-ctr","ciphertext":"00","kdf":"scrypt"},
        "id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}"#;
    assert_eq!(
        Keystore::from_json(eth1),
        Err(Eip2335Error::UnsupportedVersion(3))
    );
    let mut ks = Keystore::from_json(PBKDF2_VECTOR).unwrap();
    ks.version = 5;
    assert_eq!(
        ks.decrypt(&pw(VECTOR_PASSWORD)),
        Err(Eip2335Error::UnsupportedVersion(5))
    );
}

#[test]
fn truncated_or_garbage_json_is_malformed() {
    let malformed = |s: &str| matches!(Keystore::from_json(s), Err(Eip2335Error::Malformed(_)));
    for cut in [0, 1, 10, PBKDF2_VECTOR.len() / 2, PBKDF2_VECTOR.len() - 1] {
        assert!(malformed(&PBKDF2_VECTOR[..cut]), "cut at {cut}");
    }
    assert!(malformed("not json"));
    assert!(malformed("[]"));
    assert!(malformed("[{}, null, null, \"\", \"\", 4]"));
    assert!(malformed("[5]"));
    assert!(malformed("null"));
    assert!(malformed("{}"));
    assert!(malformed("\u{0}\u{1}garbage"));
    assert!(malformed(&" ".repeat(MAX_JSON_LEN + 1)));
    // Missing fields, wrong types, bad hex, wrong lengths.
    let cases: Vec<Edit> = vec![
        Box::new(|v| {
            v.as_object_mut().unwrap().remove("uuid");
        }),
        Box::new(|v| {
            v["crypto"].as_object_mut().unwrap().remove("checksum");
        }),
        Box::new(|v| v["version"] = "4".into()),
        Box::new(|v| v["version"] = (-4).into()),
        Box::new(|v| v["crypto"]["kdf"]["params"] = Value::Null),
        Box::new(|v| {
            v["crypto"]["kdf"]["params"]
                .as_object_mut()
                .unwrap()
                .remove("salt");
        }),
        Box::new(|v| {
            v["crypto"]["kdf"]["params"]
                .as_object_mut()
                .unwrap()
                .remove("c");
        }),
        Box::new(|v| v["crypto"]["kdf"]["params"]["c"] = "262144".into()),
        Box::new(|v| v["crypto"]["kdf"]["params"]["salt"] = "xyz".into()),
        Box::new(|v| v["crypto"]["kdf"]["params"]["salt"] = 7.into()),
        Box::new(|v| v["crypto"]["cipher"]["params"]["iv"] = "00".into()),
        Box::new(|v| {
            v["crypto"]["cipher"]["params"]
                .as_object_mut()
                .unwrap()
                .remove("iv");
        }),
        Box::new(|v| v["crypto"]["checksum"]["message"] = "abc".into()),
        Box::new(|v| v["crypto"]["checksum"]["message"] = "00".into()),
        Box::new(|v| v["crypto"]["cipher"]["message"] = "0g".into()),
        Box::new(|v| v["pubkey"] = "not hex".into()),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let r = edited(PBKDF2_VECTOR, case);
        assert!(
            matches!(r, Err(Eip2335Error::Malformed(_))),
            "case {i}: {r:?}"
        );
    }
}

#[test]
fn bad_secret_length_is_reported() {
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["cipher"]["message"] = "00".repeat(48).into();
    });
    assert_eq!(r, Err(Eip2335Error::BadSecretLength(48)));
    let r = edited(PBKDF2_VECTOR, |v| {
        v["crypto"]["cipher"]["message"] = "".into()
    });
    assert_eq!(r, Err(Eip2335Error::BadSecretLength(0)));
}

#[test]
fn hex_fields_accept_optional_0x_prefix() {
    let ks = cheap_keystore("pw");
    let mut prefixed = ks.clone();
    prefixed.crypto.cipher.message = format!("0x{}", ks.crypto.cipher.message);
    prefixed.crypto.checksum.message = ks.crypto.checksum.message.to_uppercase();
    let prefixed = Keystore::from_json(&prefixed.to_json()).unwrap();
    assert_eq!(*prefixed.decrypt(&pw("pw")).unwrap(), vector_secret());
}

#[test]
fn hostile_kdf_params_are_rejected_quickly() {
    type EditFn = fn(&mut Value);
    let scrypt_cases: &[EditFn] = &[
        |v| v["crypto"]["kdf"]["params"]["n"] = (1u64 << 30).into(),
        |v| v["crypto"]["kdf"]["params"]["n"] = u64::MAX.into(),
        |v| v["crypto"]["kdf"]["params"]["n"] = serde_json::json!(1e300),
        |v| v["crypto"]["kdf"]["params"]["n"] = (-1).into(),
        |v| v["crypto"]["kdf"]["params"]["n"] = 1000.into(),
        |v| v["crypto"]["kdf"]["params"]["n"] = 1.into(),
        |v| v["crypto"]["kdf"]["params"]["n"] = 0.into(),
        |v| v["crypto"]["kdf"]["params"]["r"] = 0.into(),
        |v| v["crypto"]["kdf"]["params"]["r"] = 33.into(),
        |v| v["crypto"]["kdf"]["params"]["r"] = u32::MAX.into(),
        |v| v["crypto"]["kdf"]["params"]["p"] = 0.into(),
        |v| v["crypto"]["kdf"]["params"]["p"] = 17.into(),
        |v| v["crypto"]["kdf"]["params"]["p"] = (1u64 << 40).into(),
        |v| v["crypto"]["kdf"]["params"]["dklen"] = 64.into(),
        |v| v["crypto"]["kdf"]["params"]["dklen"] = 16.into(),
        // Within each limit, but 4 GiB together.
        |v| {
            v["crypto"]["kdf"]["params"]["n"] = (1u64 << 20).into();
            v["crypto"]["kdf"]["params"]["r"] = 32.into();
        },
        // RFC 7914: n < 2^(16 r).
        |v| {
            v["crypto"]["kdf"]["params"]["n"] = (1u64 << 16).into();
            v["crypto"]["kdf"]["params"]["r"] = 1.into();
        },
    ];
    let pbkdf2_cases: &[EditFn] = &[
        |v| v["crypto"]["kdf"]["params"]["c"] = 0.into(),
        |v| v["crypto"]["kdf"]["params"]["c"] = 10_000_001.into(),
        |v| v["crypto"]["kdf"]["params"]["c"] = u64::MAX.into(),
        |v| v["crypto"]["kdf"]["params"]["dklen"] = 64.into(),
        |v| v["crypto"]["kdf"]["params"]["dklen"] = 0.into(),
        |v| v["crypto"]["kdf"]["params"]["prf"] = "hmac-sha512".into(),
    ];
    let cases = scrypt_cases
        .iter()
        .map(|f| (SCRYPT_VECTOR, f))
        .chain(pbkdf2_cases.iter().map(|f| (PBKDF2_VECTOR, f)));
    for (i, (base, edit)) in cases.enumerate() {
        let mut v: Value = serde_json::from_str(base).unwrap();
        edit(&mut v);
        let json = v.to_string();
        let start = Instant::now();
        let r = Keystore::from_json(&json);
        assert!(
            matches!(r, Err(Eip2335Error::UnsupportedKdfParams(_))),
            "case {i}: {r:?}"
        );
        // Bypassing from_json: decrypt must refuse before deriving.
        let ks: Keystore = serde_json::from_str(&json).unwrap();
        let r = ks.decrypt(&pw(VECTOR_PASSWORD));
        assert!(
            matches!(r, Err(Eip2335Error::UnsupportedKdfParams(_))),
            "case {i}: {r:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "case {i} slow"
        );
    }
}

#[test]
fn pbkdf2_round_trip() {
    let secret = [0x5au8; 32];
    let ks = Keystore::encrypt(
        &secret,
        &pw("correct horse"),
        KdfChoice::Pbkdf2 { c: 1000 },
        Some("ab".repeat(48)),
        "m/12381/3600/7/0/0",
    )
    .unwrap();
    let ks = Keystore::from_json(&ks.to_json()).unwrap();
    assert_eq!(ks.version, 4);
    assert_eq!(ks.path, "m/12381/3600/7/0/0");
    assert_eq!(ks.crypto.kdf.params["c"], 1000);
    assert_eq!(ks.crypto.kdf.params["prf"], "hmac-sha256");
    assert_eq!(*ks.decrypt(&pw("correct horse")).unwrap(), secret);
    assert_eq!(
        ks.decrypt(&pw("correct horsE")),
        Err(Eip2335Error::ChecksumMismatch)
    );
}

#[test]
fn scrypt_round_trip() {
    let secret = vector_secret();
    let ks = Keystore::encrypt(
        &secret,
        &pw(VECTOR_PASSWORD),
        KdfChoice::Scrypt {
            n: 1024,
            r: 8,
            p: 1,
        },
        None,
        "",
    )
    .unwrap();
    let ks = Keystore::from_json(&ks.to_json()).unwrap();
    assert_eq!(ks.crypto.kdf.function, "scrypt");
    assert_eq!(ks.crypto.kdf.params["n"], 1024);
    assert_eq!(ks.pubkey, None);
    // Encrypted under the fraktur form, decrypts with the NFKD form.
    assert_eq!(*ks.decrypt(&pw("testpassword🔑")).unwrap(), secret);
}

#[test]
fn default_kdf_choices_match_eip_defaults() {
    assert_eq!(
        KdfChoice::scrypt_default(),
        KdfChoice::Scrypt {
            n: 262_144,
            r: 8,
            p: 1
        }
    );
    assert_eq!(
        KdfChoice::pbkdf2_default(),
        KdfChoice::Pbkdf2 { c: 262_144 }
    );

    // The JSON they produce matches the EIP vectors' params, salt aside.
    let salt =
        hex::decode("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3").unwrap();
    for (choice, vector) in [
        (KdfChoice::scrypt_default(), SCRYPT_VECTOR),
        (KdfChoice::pbkdf2_default(), PBKDF2_VECTOR),
    ] {
        choice.check().unwrap();
        let ks = Keystore::from_json(vector).unwrap();
        assert_eq!(choice.module(&salt), ks.crypto.kdf);
    }

    // And a full round trip at the default PBKDF2 cost.
    let ks = Keystore::encrypt(
        &vector_secret(),
        &pw("pw"),
        KdfChoice::pbkdf2_default(),
        None,
        "",
    )
    .unwrap();
    assert_eq!(ks.crypto.kdf.params["c"], 262_144);
    assert_eq!(ks.crypto.kdf.params["dklen"], 32);
    assert_eq!(*ks.decrypt(&pw("pw")).unwrap(), vector_secret());
}

#[test]
fn encrypt_uses_fresh_salt_iv_and_v4_uuid() {
    let a = cheap_keystore("pw");
    let b = cheap_keystore("pw");
    assert_ne!(a.crypto.kdf.params["salt"], b.crypto.kdf.params["salt"]);
    assert_ne!(a.crypto.cipher.params["iv"], b.crypto.cipher.params["iv"]);
    assert_ne!(a.crypto.cipher.message, b.crypto.cipher.message);
    assert_ne!(a.uuid, b.uuid);
    assert_eq!(
        hex::decode(a.crypto.kdf.params["salt"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    for ks in [&a, &b] {
        let u = &ks.uuid;
        let groups: Vec<&str> = u.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{u}");
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert!(groups[2].starts_with('4'), "{u}");
        assert!(
            matches!(groups[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
            "{u}"
        );
    }
}

#[test]
fn encrypt_rejects_out_of_range_kdf_choice() {
    let bad = [
        KdfChoice::Scrypt {
            n: 1 << 21,
            r: 8,
            p: 1,
        },
        KdfChoice::Scrypt {
            n: 1000,
            r: 8,
            p: 1,
        },
        KdfChoice::Scrypt {
            n: 1024,
            r: 0,
            p: 1,
        },
        KdfChoice::Scrypt {
            n: 1024,
            r: 8,
            p: 17,
        },
        KdfChoice::Pbkdf2 { c: 0 },
        KdfChoice::Pbkdf2 { c: 10_000_001 },
    ];
    for choice in bad {
        let r = Keystore::encrypt(&[1; 32], &pw("pw"), choice, None, "");
        assert!(
            matches!(r, Err(Eip2335Error::UnsupportedKdfParams(_))),
            "{choice:?}: {r:?}"
        );
    }
}

#[test]
fn encrypt_normalises_pubkey_hex() {
    let ks = Keystore::encrypt(
        &[1; 32],
        &pw("pw"),
        KdfChoice::Pbkdf2 { c: 1 },
        Some("0xABcd".into()),
        "",
    )
    .unwrap();
    assert_eq!(ks.pubkey.as_deref(), Some("abcd"));
    let r = Keystore::encrypt(
        &[1; 32],
        &pw("pw"),
        KdfChoice::Pbkdf2 { c: 1 },
        Some("xyz".into()),
        "",
    );
    assert!(matches!(r, Err(Eip2335Error::Malformed(_))));
}

#[test]
fn malformed_errors_do_not_echo_keystore_content() {
    let ct = "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f";
    let checks: Vec<Edit> = vec![
        Box::new(move |v| v["version"] = ct.into()),
        Box::new(move |v| v["path"] = serde_json::json!([ct])),
        Box::new(move |v| v["crypto"]["cipher"]["message"] = format!("zz{ct}").into()),
        Box::new(move |v| v["crypto"]["checksum"]["message"] = format!("{ct}00").into()),
        Box::new(move |v| v["crypto"]["kdf"]["params"]["salt"] = format!("{ct}g").into()),
    ];
    for (i, edit) in checks.into_iter().enumerate() {
        let err = edited(SCRYPT_VECTOR, edit).unwrap_err();
        assert!(
            matches!(err, Eip2335Error::Malformed(_)),
            "case {i}: {err:?}"
        );
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&ct[..16]), "case {i} leaks: {shown}");
    }
    let err = Keystore::from_json(&format!("{{\"version\": 4, \"x\": {ct}")).unwrap_err();
    assert!(!err.to_string().contains(&ct[..16]), "{err}");
}

/// xorshift64*: a small deterministic PRNG for the fuzz-style test.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Replaces a random node of a JSON tree with a random awkward value.
fn mutate_value(v: &mut Value, rng: &mut XorShift) {
    let palette = [
        Value::Null,
        Value::from(0),
        Value::from(1),
        Value::from(-1),
        Value::from(3),
        Value::from(4),
        Value::from(32),
        Value::from(1024),
        Value::from(1u64 << 30),
        Value::from(u64::MAX),
        serde_json::json!(1.5),
        serde_json::json!(1e300),
        Value::from(""),
        Value::from("0x"),
        Value::from("zz"),
        Value::from("00"),
        Value::from("ff".repeat(32)),
        Value::from("argon2"),
        Value::from("scrypt"),
        Value::from("pbkdf2"),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!({"iv": "00"}),
    ];
    let descend = rng.below(3) != 0;
    match &mut *v {
        Value::Object(m) if descend && !m.is_empty() => {
            let k = rng.below(m.len());
            if let Some(child) = m.values_mut().nth(k) {
                return mutate_value(child, rng);
            }
        }
        Value::Array(a) if descend && !a.is_empty() => {
            let k = rng.below(a.len());
            if let Some(child) = a.get_mut(k) {
                return mutate_value(child, rng);
            }
        }
        _ => {}
    }
    if let Value::Object(m) = &mut *v {
        if rng.below(2) == 0 && !m.is_empty() {
            let k = rng.below(m.len());
            if let Some(key) = m.keys().nth(k).cloned() {
                m.remove(&key);
                return;
            }
        }
    }
    *v = palette[rng.below(palette.len())].clone();
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let bases = [
        cheap_keystore("pw").to_json(),
        Keystore::encrypt(
            &vector_secret(),
            &pw("pw"),
            KdfChoice::Scrypt { n: 16, r: 1, p: 1 },
            Some("11".repeat(48)),
            "m/12381/3600/0/0/0",
        )
        .unwrap()
        .to_json(),
    ];
    let (mut ok, mut err) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..1000 {
        let base = &bases[i % bases.len()];
        let input = match i % 3 {
            // Pure noise, sometimes JSON-ish.
            0 => {
                let len = rng.below(300);
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = rng.next() as u8;
                        let alphabet = b"{}[]\":,0123456789abcdef-. \n";
                        if rng.below(2) == 0 {
                            alphabet[usize::from(b) % alphabet.len()]
                        } else {
                            b
                        }
                    })
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            // Byte-level mutations of a valid keystore.
            1 => {
                let mut bytes = base.clone().into_bytes();
                for _ in 0..=rng.below(4) {
                    let pos = rng.below(bytes.len());
                    match rng.below(4) {
                        0 => {
                            if let Some(b) = bytes.get_mut(pos) {
                                *b = rng.next() as u8;
                            }
                        }
                        1 => {
                            if pos < bytes.len() {
                                bytes.remove(pos);
                            }
                        }
                        2 => bytes.insert(pos, b"0123456789\"{},x"[rng.below(15)]),
                        _ => bytes.truncate(pos),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            // Structural mutations: random fields replaced or removed.
            _ => {
                let mut v: Value = serde_json::from_str(base).unwrap();
                for _ in 0..=rng.below(3) {
                    mutate_value(&mut v, &mut rng);
                }
                v.to_string()
            }
        };
        match Keystore::from_json(&input).and_then(|ks| ks.decrypt(&pw("pw"))) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert_eq!(ok + err, 1000);
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    assert!(start.elapsed() < Duration::from_secs(60));
}
