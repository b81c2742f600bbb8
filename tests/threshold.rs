//! Threshold keys end to end: the golden 2-of-3 vector byte for byte, every t-subset of random
//! t-of-n splits recombining to the original key's signature (in memory, and through SoftHSM
//! tokens for 3-of-5 and 5-of-7), provisioning through the real CLI, bad input refused with one
//! line, a corrupted share caught and named, and per-share keystores imported and recombined.

mod common;

use blst::min_pk::{SecretKey, Signature};
use common::{assert_one_error_line, fixture, snapshot, subsets, Signer, EIP2335_SECRET};
use hsm_signer::bls;
use hsm_signer::devices::Devices;
use hsm_signer::keys::eip2335::{KdfChoice, Keystore};
use hsm_signer::keys::provision::{self, ShareImport};
use hsm_signer::keys::threshold::{
    self, combine, combine_weighted, lagrange_at_zero, partial_sign, partial_sign_weighted,
    partial_sign_with_share, sign_with_opened_shares, verify_combined, CombineError, HashedMessage,
    ThresholdKey,
};
use hsm_signer::keys::{
    open_share, seal_share, KeyRecord, KeyStore, Progress, PublicKeyBytes, ShareId,
};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

fn id(i: u64) -> ShareId {
    ShareId::new(i).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).unwrap()
}

#[test]
fn golden_2_of_3_vector_partials_and_recovered_signature_match_byte_for_byte() {
    // A copy of the shared `vectors/threshold-2of3.json`, committed so CI needs nothing else.
    let text = std::fs::read_to_string(fixture("threshold/threshold-2of3.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["threshold"], "2");

    // SigningData{object_root, domain}: two 32-byte leaves, so hash_tree_root = sha256(a ‖ b).
    let mut h = Sha256::new();
    h.update(unhex(v["signing_data"]["object_root"].as_str().unwrap()));
    h.update(unhex(v["signing_data"]["domain"].as_str().unwrap()));
    let root: [u8; 32] = h.finalize().into();
    assert_eq!(
        root.to_vec(),
        unhex(v["signing_root"].as_str().unwrap()),
        "the vector's signing root is SigningData over its zero domain"
    );
    let hashed = HashedMessage::new(&root);

    let mut partials = Vec::new();
    let mut shares = Vec::new();
    for p in v["participants"].as_array().unwrap() {
        let x = id(p["id"].as_str().unwrap().parse().unwrap());
        let sk = SecretKey::from_bytes(&unhex(p["secret_key"].as_str().unwrap())).unwrap();
        assert_eq!(
            sk.sk_to_pk().compress().to_vec(),
            unhex(p["public_key"].as_str().unwrap()),
            "share {x} public key"
        );
        let partial = partial_sign(&sk, &hashed);
        assert_eq!(
            partial.compress().to_vec(),
            unhex(p["signature"].as_str().unwrap()),
            "share {x} partial signature"
        );
        partials.push((x, partial));
        shares.push((x, sk));
    }

    let recovered = unhex(v["recovered_signature"].as_str().unwrap());
    let group = PublicKeyBytes::parse(v["composite_public_key"].as_str().unwrap()).unwrap();
    // f(x) = 1 + 2x: the group secret is f(0) = 1, so the group key is the G1 generator.
    let one = {
        let mut b = [0u8; 32];
        b[31] = 1;
        SecretKey::from_bytes(&b).unwrap()
    };
    assert_eq!(one.sk_to_pk().compress(), group.0);
    for subset in subsets(&partials, 2).into_iter().chain([partials.clone()]) {
        let sig = combine(&subset).unwrap();
        assert_eq!(
            sig.compress().to_vec(),
            recovered,
            "plain combine of {subset:?}"
        );
        assert!(verify_combined(&group, &root, &sig));
        // The weighted path gives the same bytes.
        let ids: Vec<ShareId> = subset.iter().map(|(x, _)| *x).collect();
        let weights = lagrange_at_zero(&ids).unwrap();
        let weighted: Vec<Signature> = ids
            .iter()
            .zip(&weights)
            .map(|(x, w)| {
                let sk = &shares.iter().find(|(y, _)| y == x).unwrap().1;
                partial_sign_weighted(sk, w, &hashed)
            })
            .collect();
        assert_eq!(
            combine_weighted(&weighted).unwrap().compress().to_vec(),
            recovered
        );
    }
    // One share alone is not enough.
    for single in subsets(&partials, 1) {
        assert_ne!(combine(&single).unwrap().compress().to_vec(), recovered);
    }
}

/// For every t-subset of a random t-of-n split the combined signature is the original key's;
/// no (t−1)-subset gives it.
fn every_subset_recombines(t: usize, n: usize) {
    let sk = bls::random_secret_key().unwrap();
    // Non-default, non-contiguous ids, as explicit x-coordinates.
    let ids: Vec<ShareId> = (0..n as u64).map(|i| id(3 * i + 2)).collect();
    let shares = threshold::split(&sk, t, &ids).unwrap();
    let root = [0xa5; 32];
    let hashed = HashedMessage::new(&root);
    let expected = bls::sign(&sk, &root).compress();
    let partials: Vec<(ShareId, Signature)> = shares
        .iter()
        .map(|(x, s)| (*x, partial_sign(s, &hashed)))
        .collect();
    let all = subsets(&partials, t);
    assert_eq!(all.len(), binomial(n, t));
    for subset in &all {
        assert_eq!(combine(subset).unwrap().compress(), expected, "{t}-of-{n}");
    }
    for subset in subsets(&partials, t - 1) {
        if subset.is_empty() {
            continue;
        }
        assert_ne!(combine(&subset).unwrap().compress(), expected, "{t}-of-{n}");
    }
}

fn binomial(n: usize, k: usize) -> usize {
    (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
}

#[test]
fn every_2_of_3_subset_recombines_to_the_original_signature() {
    every_subset_recombines(2, 3);
}

#[test]
fn every_3_of_5_subset_recombines_to_the_original_signature() {
    every_subset_recombines(3, 5);
}

#[test]
fn every_5_of_7_subset_recombines_to_the_original_signature() {
    every_subset_recombines(5, 7);
}

/// A data directory configured with `n` SoftHSM tokens `softhsm-1..n`, created and opened.
fn signer_with_tokens(n: usize) -> (Signer, KeyStore, Devices) {
    let s = Signer::new();
    let soft = s.data_dir().join("softhsm");
    std::fs::create_dir_all(soft.join("tokens")).unwrap();
    std::fs::write(
        soft.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            soft.join("tokens").display()
        ),
    )
    .unwrap();
    let mut toml = String::from("default_device = \"softhsm-1\"\n");
    for i in 1..=n {
        toml.push_str(&format!(
            "\n[[device]]\nname = \"softhsm-{i}\"\nprofile = \"softhsm\"\ntoken_label = \"hsm-signer-{i}\"\n\
             pin_file = \"softhsm/softhsm-{i}.pin\"\nso_pin_file = \"softhsm/softhsm-{i}.so-pin\"\n\
             module_config = \"softhsm/softhsm2.conf\"\n"
        ));
    }
    std::fs::write(s.data_dir().join("hsm-signer.toml"), toml).unwrap();
    let (config, devices) = s.open();
    assert_eq!(config.devices.len(), n);
    let store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    (s, store, devices)
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("softhsm-{i}")).collect()
}

/// Sign through the devices with every t-subset of `record`'s shares; each must give `expected`.
fn every_device_subset_signs(
    record: &KeyRecord,
    devices: &Devices,
    root: &[u8; 32],
    expected: &[u8; 96],
) {
    let key = ThresholdKey::from_record(record).unwrap();
    let hashed = HashedMessage::new(root);
    let partials: Vec<(ShareId, Signature)> = record
        .shares
        .iter()
        .map(|s| {
            let device = devices.get(&s.device).unwrap();
            (
                s.id,
                partial_sign_with_share(device, &record.pubkey, s, &hashed, None).unwrap(),
            )
        })
        .collect();
    let t = record.threshold as usize;
    for subset in subsets(&partials, t) {
        let sig = key.combine_verified(&hashed, &subset).unwrap();
        assert_eq!(&sig.compress(), expected);
        // Weighted partials asked of exactly this subset's devices give the same bytes.
        let ids: Vec<ShareId> = subset.iter().map(|(x, _)| *x).collect();
        let weights = lagrange_at_zero(&ids).unwrap();
        let weighted: Vec<(ShareId, Signature)> = ids
            .iter()
            .zip(&weights)
            .map(|(x, w)| {
                let share = record.shares.iter().find(|s| s.id == *x).unwrap();
                let device = devices.get(&share.device).unwrap();
                (
                    *x,
                    partial_sign_with_share(device, &record.pubkey, share, &hashed, Some(w))
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(
            &key.combine_weighted_verified(&hashed, &weighted)
                .unwrap()
                .compress(),
            expected
        );
        // The scheduler's own path: each share opened on its device, then signed, combined and
        // verified by the one function the scheduler calls.
        let opened: Vec<(ShareId, blst::min_pk::SecretKey)> = ids
            .iter()
            .map(|x| {
                let share = record.shares.iter().find(|s| s.id == *x).unwrap();
                let device = devices.get(&share.device).unwrap();
                (*x, open_share(device, &record.pubkey, share).unwrap())
            })
            .collect();
        let opened: Vec<(ShareId, &blst::min_pk::SecretKey)> =
            opened.iter().map(|(x, sk)| (*x, sk)).collect();
        assert_eq!(
            &sign_with_opened_shares(&key, &hashed, &opened)
                .unwrap()
                .compress(),
            expected
        );
    }
    if t > 1 {
        assert_eq!(
            key.combine_verified(&hashed, &partials[..t - 1]),
            Err(CombineError::TooFew {
                have: t - 1,
                need: t
            })
        );
    }
}

#[test]
fn threshold_keys_on_5_and_7_softhsm_tokens_sign_with_every_subset() {
    let (_s, mut store, devices) = signer_with_tokens(7);
    for (t, n) in [(3usize, 5usize), (5, 7)] {
        let sk = bls::random_secret_key().unwrap();
        let pk = provision::provision_threshold(
            &mut store,
            &devices,
            &sk,
            t,
            &names(n),
            None,
            "generated",
        )
        .unwrap();
        let record = store.get(&pk).unwrap().clone();
        assert_eq!(record.threshold as usize, t);
        assert_eq!(record.shares.len(), n);
        let root = [t as u8; 32];
        every_device_subset_signs(&record, &devices, &root, &bls::sign(&sk, &root).compress());
    }
    // The key files survive a reload unchanged.
    let reloaded = KeyStore::load_strict(store.dir()).unwrap();
    assert_eq!(reloaded.len(), 2);
}

fn list(s: &Signer) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&s.ok(&["keys", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn keys_generate_with_threshold_puts_three_shares_on_three_devices() {
    let s = Signer::new();
    let out = s.ok(&[
        "keys",
        "generate",
        "--count",
        "2",
        "--threshold",
        "2",
        "--devices",
        "softhsm-1,softhsm-2,softhsm-3",
    ]);
    let pks: Vec<&str> = out.lines().collect();
    assert_eq!(pks.len(), 2, "{out}");
    let keys = list(&s);
    assert_eq!(keys.len(), 2);
    for k in &keys {
        assert_eq!(k["threshold"], 2);
        assert_eq!(k["origin"], "generated");
        let shares = k["shares"].as_array().unwrap();
        assert_eq!(shares.len(), 3);
        for (i, share) in shares.iter().enumerate() {
            assert_eq!(share["id"], i as u64 + 1);
            assert_eq!(share["device"], format!("softhsm-{}", i + 1));
            assert_ne!(share["pubkey"], k["pubkey"], "a share is not the whole key");
        }
    }
    let text = s.ok(&["keys", "list"]);
    assert!(
        text.contains("2-of-3 on softhsm-1,softhsm-2,softhsm-3"),
        "{text}"
    );

    // Every 2-subset signs, verified under the validator key.
    let (config, devices) = s.open();
    let store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    for pk in pks {
        let record = store.get(&PublicKeyBytes::parse(pk).unwrap()).unwrap();
        let key = ThresholdKey::from_record(record).unwrap();
        let root = [7u8; 32];
        let hashed = HashedMessage::new(&root);
        let partials: Vec<(ShareId, Signature)> = record
            .shares
            .iter()
            .map(|sh| {
                let d = devices.get(&sh.device).unwrap();
                (
                    sh.id,
                    partial_sign_with_share(d, &record.pubkey, sh, &hashed, None).unwrap(),
                )
            })
            .collect();
        let mut sigs = Vec::new();
        for subset in subsets(&partials, 2) {
            let sig = key.combine_verified(&hashed, &subset).unwrap();
            assert!(verify_combined(&record.pubkey, &root, &sig));
            sigs.push(sig.compress());
        }
        sigs.dedup();
        assert_eq!(sigs.len(), 1, "all subsets give one signature");
    }
}

#[test]
fn keys_import_threshold_of_the_eip2335_vector_signs_like_the_eips_secret() {
    let s = Signer::new();
    let out = s.ok(&[
        "keys",
        "import",
        "--keystore",
        fixture("eip2335/keystore-pbkdf2.json").to_str().unwrap(),
        "--password-file",
        fixture("eip2335/password.txt").to_str().unwrap(),
        "--threshold",
        "2",
        "--devices",
        "softhsm-3,softhsm-1,softhsm-2",
        "--share-ids",
        "10,20,30",
    ]);
    assert!(out.contains("1 imported"), "{out}");
    let sk = bls::secret_key(&hex::decode(EIP2335_SECRET).unwrap()).unwrap();
    let pk = PublicKeyBytes(bls::public_key_bytes(&sk));
    let keys = list(&s);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["pubkey"], pk.to_string());
    assert_eq!(keys[0]["threshold"], 2);
    let placed: Vec<(u64, String)> = keys[0]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sh| {
            (
                sh["id"].as_u64().unwrap(),
                sh["device"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            (10, "softhsm-3".to_owned()),
            (20, "softhsm-1".to_owned()),
            (30, "softhsm-2".to_owned())
        ]
    );

    let (config, devices) = s.open();
    let store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let record = store.get(&pk).unwrap();
    for i in 0..4u8 {
        let root = [i; 32];
        every_device_subset_signs(record, &devices, &root, &bls::sign(&sk, &root).compress());
    }
}

#[test]
fn bad_threshold_input_is_one_clear_line_and_stores_nothing() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    let keystore = fixture("eip2335/keystore-pbkdf2.json");
    let password = fixture("eip2335/password.txt");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--threshold",
                "4",
                "--devices",
                "softhsm-1,softhsm-2,softhsm-3",
            ],
            "threshold 4 needs at least 4 devices, got 3",
        ),
        (
            &[
                "--threshold",
                "2",
                "--devices",
                "softhsm-1,softhsm-2,softhsm-1",
            ],
            "device softhsm-1 is listed twice",
        ),
        (
            &[
                "--threshold",
                "2",
                "--devices",
                "softhsm-1,softhsm-9,softhsm-3",
            ],
            "no device named \"softhsm-9\" is configured",
        ),
        (
            &[
                "--threshold",
                "0",
                "--devices",
                "softhsm-1,softhsm-2,softhsm-3",
            ],
            "threshold must be at least 1",
        ),
        (
            &[
                "--threshold",
                "2",
                "--devices",
                "softhsm-1,softhsm-2,softhsm-3",
                "--share-ids",
                "1,0,2",
            ],
            "share id 0 is not allowed",
        ),
        (
            &[
                "--threshold",
                "2",
                "--devices",
                "softhsm-1,softhsm-2,softhsm-3",
                "--share-ids",
                "1,2,2",
            ],
            "share id 2 is listed twice",
        ),
        (
            &["--device", "softhsm-1", "--devices", "softhsm-2,softhsm-3"],
            "--device and --devices are mutually exclusive",
        ),
        (
            &["--threshold", "2"],
            "--threshold and --share-ids need --devices",
        ),
    ];
    for (extra, expect) in cases {
        for base in [
            vec!["keys", "generate", "--count", "1"],
            vec![
                "keys",
                "import",
                "--keystore",
                keystore.to_str().unwrap(),
                "--password-file",
                password.to_str().unwrap(),
            ],
        ] {
            let before = snapshot(s.data_dir());
            let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
            let err = s.fail(&args);
            let line = assert_one_error_line(&err);
            assert!(
                line.contains(expect),
                "{args:?}: expected {expect:?} in {line:?}"
            );
            assert_eq!(
                snapshot(s.data_dir()),
                before,
                "{args:?} changed the data dir"
            );
        }
    }
    assert!(list(&s).is_empty());
}

#[test]
fn a_corrupted_share_fails_verification_and_is_named() {
    let (_s, mut store, devices) = signer_with_tokens(3);
    let sk = bls::random_secret_key().unwrap();
    let pk =
        provision::provision_threshold(&mut store, &devices, &sk, 2, &names(3), None, "generated")
            .unwrap();

    // Put a wrong secret in share 2's envelope on its own device, keeping its recorded pubkey,
    // and write that into the key file as an attacker or a bad restore would.
    let record = store.get(&pk).unwrap().clone();
    let wrong = bls::random_secret_key().unwrap();
    let victim = &record.shares[1];
    assert_eq!(victim.id, id(2));
    let forged = seal_share(devices.get(&victim.device).unwrap(), &pk, id(2), &wrong).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(store.dir().join(record.file_name())).unwrap(),
    )
    .unwrap();
    let forged_json = serde_json::to_value(&forged).unwrap();
    file["shares"][1]["iv"] = forged_json["iv"].clone();
    file["shares"][1]["ciphertext"] = forged_json["ciphertext"].clone();
    std::fs::write(store.dir().join(record.file_name()), file.to_string()).unwrap();
    let store = KeyStore::load_strict(store.dir()).unwrap();
    let record = store.get(&pk).unwrap();
    assert_eq!(
        record.shares[1].pubkey, victim.pubkey,
        "the recorded pubkey is the true one"
    );

    let key = ThresholdKey::from_record(record).unwrap();
    let root = [0x33; 32];
    let hashed = HashedMessage::new(&root);
    let sign = |i: usize, weight: Option<&threshold::Coefficient>| {
        let sh = &record.shares[i];
        (
            sh.id,
            partial_sign_with_share(devices.get(&sh.device).unwrap(), &pk, sh, &hashed, weight)
                .unwrap(),
        )
    };
    // Plain partials: the combination fails and share 2 is named.
    let partials = vec![sign(0, None), sign(1, None)];
    assert!(!verify_combined(&pk, &root, &combine(&partials).unwrap()));
    assert_eq!(
        key.combine_verified(&hashed, &partials),
        Err(CombineError::Unverified {
            faulty: vec![id(2)]
        })
    );
    assert_eq!(key.faulty_partials(&hashed, &partials), vec![id(2)]);
    let message =
        hsm_signer::SignerError::from(key.combine_verified(&hashed, &partials).unwrap_err())
            .to_string();
    assert!(message.contains("faulty share(s): 2"), "{message}");
    // Weighted partials: the same verdict.
    let w = lagrange_at_zero(&[id(1), id(2)]).unwrap();
    let weighted = vec![sign(0, Some(&w[0])), sign(1, Some(&w[1]))];
    assert_eq!(
        key.combine_weighted_verified(&hashed, &weighted),
        Err(CombineError::Unverified {
            faulty: vec![id(2)]
        })
    );
    // The honest shares 1 and 3 still sign, and give the key's own signature.
    let good = vec![sign(0, None), sign(2, None)];
    assert_eq!(
        key.combine_verified(&hashed, &good).unwrap().compress(),
        bls::sign(&sk, &root).compress()
    );
}

/// Write each share as an EIP-2335 keystore with the share's pubkey, as a distributed-validator
/// tool would; return the keystore paths and the password file.
fn write_share_keystores(
    dir: &std::path::Path,
    shares: &[(ShareId, SecretKey)],
) -> (Vec<String>, String) {
    let password = SecretString::from("share-password".to_owned());
    let pw_file = dir.join("password.txt");
    std::fs::write(&pw_file, "share-password\n").unwrap();
    let paths = shares
        .iter()
        .enumerate()
        .map(|(i, (_, sk))| {
            let ks = Keystore::encrypt(
                &sk.to_bytes(),
                &password,
                KdfChoice::Pbkdf2 { c: 1024 },
                Some(hex::encode(sk.sk_to_pk().compress())),
                "",
            )
            .unwrap();
            let p = dir.join(format!("keystore-{i}.json"));
            std::fs::write(&p, ks.to_json()).unwrap();
            p.display().to_string()
        })
        .collect();
    (paths, pw_file.display().to_string())
}

#[test]
fn import_shares_round_trip_from_per_share_keystores() {
    let s = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let sk = bls::random_secret_key().unwrap();
    let group = PublicKeyBytes(bls::public_key_bytes(&sk));
    let ids = [id(4), id(9), id(13)];
    let shares = threshold::split(&sk, 2, &ids).unwrap();
    let (paths, pw) = write_share_keystores(dir.path(), &shares);
    let import = |share_ids: &str, group: &str| {
        let mut args = vec!["keys", "import-shares", "--keystore"];
        args.extend(paths.iter().map(String::as_str));
        args.extend([
            "--password-file",
            pw.as_str(),
            "--group-pubkey",
            group,
            "--threshold",
            "2",
            "--share-ids",
            share_ids,
            "--devices",
            "softhsm-2,softhsm-3,softhsm-1",
        ]);
        s.run(&args)
    };

    // Ids swapped, or the wrong group key: the shares do not recombine; nothing is stored.
    s.ok(&["device", "init"]);
    let before = snapshot(s.data_dir());
    let other = PublicKeyBytes(bls::public_key_bytes(&bls::random_secret_key().unwrap()));
    for (share_ids, group_pk) in [("9,4,13", group.to_string()), ("4,9,13", other.to_string())] {
        let out = import(share_ids, &group_pk);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = assert_one_error_line(&err);
        assert!(line.contains("do not recombine"), "{line}");
        assert_eq!(snapshot(s.data_dir()), before);
    }

    let out = import("4,9,13", &group.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("imported {group} as 2-of-3")),
        "{stdout}"
    );
    let keys = list(&s);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["origin"], "imported-shares");
    for (k, (x, share_sk)) in shares.iter().enumerate() {
        assert_eq!(keys[0]["shares"][k]["id"], x.get());
        assert_eq!(
            keys[0]["shares"][k]["pubkey"],
            format!("0x{}", hex::encode(share_sk.sk_to_pk().compress()))
        );
    }

    let (config, devices) = s.open();
    let store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let root = [0x44; 32];
    every_device_subset_signs(
        store.get(&group).unwrap(),
        &devices,
        &root,
        &bls::sign(&sk, &root).compress(),
    );

    // A second import of the same group key is refused.
    let out = import("4,9,13", &group.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        assert_one_error_line(&err).contains("already in the store"),
        "{err}"
    );
}

#[test]
fn import_shares_in_process_checks_each_keystore_pubkey() {
    let (_s, mut store, devices) = signer_with_tokens(3);
    let dir = tempfile::tempdir().unwrap();
    let sk = bls::random_secret_key().unwrap();
    let shares = threshold::split(&sk, 2, &[id(1), id(2), id(3)]).unwrap();
    let (paths, pw) = write_share_keystores(dir.path(), &shares);
    // Keystore 2 claims share 3's pubkey.
    let mut ks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paths[1]).unwrap()).unwrap();
    ks["pubkey"] = hex::encode(shares[2].1.sk_to_pk().compress()).into();
    std::fs::write(&paths[1], ks.to_string()).unwrap();
    let import = ShareImport {
        keystores: paths.iter().map(Into::into).collect(),
        passwords: vec![SecretString::from(
            std::fs::read_to_string(&pw).unwrap().trim().to_owned(),
        )],
        group_pubkey: PublicKeyBytes(bls::public_key_bytes(&sk)),
        threshold: 2,
        ids: vec![id(1), id(2), id(3)],
        devices: names(3),
    };
    let err = provision::import_shares(&mut store, &devices, &import, Progress::Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keystore-1.json") && err.contains("claims pubkey"),
        "{err}"
    );
    assert!(store.is_empty());
}
