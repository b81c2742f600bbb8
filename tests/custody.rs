//! The custody model end to end in-process: keys sealed on SoftHSM tokens, opened only by their
//! own device for their own validator, and signatures identical to blst's.

mod common;

use common::{fixture, Signer, EIP2335_SECRET};
use hsm_signer::bls;
use hsm_signer::consensus::SigningRoot;
use hsm_signer::keys::{self, sign_with_share, ImportOptions, KeyStore, Progress, PublicKeyBytes};
use hsm_signer::SignerError;
use secrecy::SecretString;

fn password() -> SecretString {
    SecretString::from(std::fs::read_to_string(fixture("eip2335/password.txt")).unwrap())
}

fn import(signer: &Signer, file: &str) -> (KeyStore, hsm_signer::devices::Devices) {
    let (config, devices) = signer.open();
    let mut store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let report = keys::import_keystores(
        &mut store,
        &devices,
        &[fixture(file)],
        &password(),
        &ImportOptions {
            device: "softhsm-1".into(),
            progress: Progress::Quiet,
        },
    )
    .unwrap();
    assert_eq!(report.imported.len(), 1);
    (store, devices)
}

fn eip_secret_key() -> blst::min_pk::SecretKey {
    bls::secret_key(&hex::decode(EIP2335_SECRET).unwrap()).unwrap()
}

/// One process holds one SoftHSM configuration, so each vector gets its own test.
#[test]
fn eip2335_scrypt_vector_imports_and_signs_with_the_eips_secret() {
    import_vector_and_sign("eip2335/keystore-scrypt.json");
}

#[test]
fn eip2335_pbkdf2_vector_imports_and_signs_with_the_eips_secret() {
    import_vector_and_sign("eip2335/keystore-pbkdf2.json");
}

fn import_vector_and_sign(file: &str) {
    {
        let signer = Signer::new();
        let (store, devices) = import(&signer, file);
        let expected_pk = PublicKeyBytes(bls::public_key_bytes(&eip_secret_key()));
        let record = store
            .get(&expected_pk)
            .expect("imported under the EIP's pubkey");
        let device = devices.get("softhsm-1").unwrap();
        for i in 0..8u8 {
            let root = [i; 32];
            let via_device = sign_with_share(
                device,
                &record.pubkey,
                &record.shares[0],
                &SigningRoot(root),
            )
            .unwrap();
            let direct = eip_secret_key().sign(&root, bls::DST, &[]);
            assert_eq!(via_device.compress(), direct.compress(), "{file}, root {i}");
        }
    }
}

#[test]
fn decrypt_then_sign_equals_blst_for_generated_keys() {
    let signer = Signer::new();
    let (config, devices) = signer.open();
    let mut store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    let pks = keys::generate(&mut store, &devices, "softhsm-2", 5).unwrap();
    for pk in pks {
        let record = store.get(&pk).unwrap();
        let device = devices.get(&record.shares[0].device).unwrap();
        // The secret never leaves the store in plaintext, so check through verification with
        // blst under the stored pubkey, and that signing is deterministic.
        let root = [0x5a; 32];
        let a = sign_with_share(device, &pk, &record.shares[0], &SigningRoot(root)).unwrap();
        let b = sign_with_share(device, &pk, &record.shares[0], &SigningRoot(root)).unwrap();
        assert_eq!(a.compress(), b.compress());
        assert!(bls::verify(&pk.0, &root, &a));
        assert!(!bls::verify(&pk.0, &[0x5b; 32], &a));
    }
}

#[test]
fn no_key_file_contains_the_plaintext_secret() {
    let signer = Signer::new();
    import(&signer, "eip2335/keystore-pbkdf2.json");
    let secret = hex::decode(EIP2335_SECRET).unwrap();
    let mut files = 0;
    for (path, _, _) in common::snapshot(signer.data_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(
            !text.contains(EIP2335_SECRET),
            "{} holds the secret in hex",
            path.display()
        );
        assert!(
            !bytes.windows(32).any(|w| w == secret),
            "{} holds the raw secret",
            path.display()
        );
        files += 1;
    }
    assert!(files > 5, "token files and the key file were all searched");
}

#[test]
fn a_key_file_moved_to_another_device_does_not_open() {
    let signer = Signer::new();
    let (store, devices) = import(&signer, "eip2335/keystore-scrypt.json");
    let record = store.iter().next().unwrap();
    let mut moved = record.shares[0].clone();
    moved.device = "softhsm-2".into();
    let err = sign_with_share(
        devices.get("softhsm-2").unwrap(),
        &record.pubkey,
        &moved,
        &SigningRoot([1; 32]),
    )
    .unwrap_err();
    assert!(
        matches!(err, SignerError::Hsm(hsm::HsmError::Integrity { .. })),
        "{err}"
    );
}

#[test]
fn a_key_file_edited_to_claim_another_pubkey_does_not_open() {
    let signer = Signer::new();
    let (store, devices) = import(&signer, "eip2335/keystore-scrypt.json");
    let record = store.iter().next().unwrap();
    let other = PublicKeyBytes(bls::public_key_bytes(&bls::random_secret_key().unwrap()));
    let device = devices.get("softhsm-1").unwrap();
    let err =
        sign_with_share(device, &other, &record.shares[0], &SigningRoot([1; 32])).unwrap_err();
    assert!(
        matches!(err, SignerError::Hsm(hsm::HsmError::Integrity { .. })),
        "{err}"
    );

    // The same edit on disk: rename the file and change its pubkey; loading works (it is
    // well-formed) but the envelope refuses to open for the claimed key.
    let dir = store.dir().to_owned();
    let path = dir.join(record.file_name());
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(&record.pubkey.to_string(), &other.to_string());
    std::fs::remove_file(&path).unwrap();
    std::fs::write(dir.join(format!("{other}.json")), edited).unwrap();
    let store = KeyStore::load_strict(&dir).unwrap();
    let forged = store.get(&other).unwrap();
    let err =
        sign_with_share(device, &other, &forged.shares[0], &SigningRoot([1; 32])).unwrap_err();
    assert!(
        matches!(err, SignerError::Hsm(hsm::HsmError::Integrity { .. })),
        "{err}"
    );
}

#[test]
fn tampered_ciphertext_in_a_key_file_fails_authentication() {
    let signer = Signer::new();
    let (store, devices) = import(&signer, "eip2335/keystore-scrypt.json");
    let record = store.iter().next().unwrap();
    let path = store.dir().join(record.file_name());
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ct = json["shares"][0]["ciphertext"].as_str().unwrap().to_owned();
    // Flip the last hex digit (inside the GCM tag).
    let last = ct.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    json["shares"][0]["ciphertext"] = format!("{}{flipped}", &ct[..ct.len() - 1]).into();
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let store = KeyStore::load_strict(store.dir()).unwrap();
    let record = store.iter().next().unwrap();
    let err = sign_with_share(
        devices.get("softhsm-1").unwrap(),
        &record.pubkey,
        &record.shares[0],
        &SigningRoot([1; 32]),
    )
    .unwrap_err();
    assert!(
        matches!(err, SignerError::Hsm(hsm::HsmError::Integrity { .. })),
        "{err}"
    );
}

#[test]
fn malformed_key_files_are_reported_and_do_not_hide_good_ones() {
    let signer = Signer::new();
    let (store, _devices) = import(&signer, "eip2335/keystore-scrypt.json");
    let dir = store.dir().to_owned();
    std::fs::write(dir.join(format!("0x{}.json", "ab".repeat(48))), "{not json").unwrap();
    let (store, errors) = KeyStore::load(&dir).unwrap();
    assert_eq!(store.len(), 1);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("key file"), "{}", errors[0]);
    assert!(KeyStore::load_strict(&dir).is_err());
}

/// Hardening (issue 15, finding 11): two stores on one key directory (a CLI import beside a
/// serving signer's Keymanager import) inserting the same key at once: exactly one succeeds,
/// the other is told the key is already there, and the file is whole.
#[test]
fn concurrent_imports_of_one_key_into_one_directory_store_it_exactly_once() {
    let signer = Signer::new();
    let (store, _devices) = import(&signer, "eip2335/keystore-pbkdf2.json");
    let record = (**store.iter().next().unwrap()).clone();
    let dir = signer.data_dir().join("shared-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(record.file_name());
    for round in 0..100 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (barrier, record, dir) = (&barrier, record.clone(), &dir);
                    scope.spawn(move || {
                        let mut store = KeyStore::load_strict(dir).unwrap();
                        barrier.wait();
                        match store.insert(record) {
                            Ok(()) => true,
                            Err(e) => {
                                assert!(e.to_string().contains("already in the store"), "{e}");
                                false
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {results:?}"
        );
        let stored = KeyStore::load_strict(&dir).unwrap();
        assert_eq!(**stored.get(&record.pubkey).unwrap(), record);
        // Nothing left behind but the key file.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "round {round}");
        std::fs::remove_file(&path).unwrap();
    }
}

/// `keys generate` and `keys import` through the real binary, on a device whose module is the TEST
/// DOUBLE `pkcs11-token-double` in front of the selected real module: a token that chooses the
/// AES-GCM IV itself (as CloudHSM and Luna in FIPS mode do) gets keys whose envelopes open on
/// the real token alone; a token whose ciphertexts do not open gets nothing written.
#[test]
fn keys_sealed_on_a_token_that_chooses_its_iv_open_and_a_faulty_token_gets_nothing_written() {
    use common::backend::Backend;
    let s = Signer {
        dir: tempfile::tempdir().unwrap(),
    };
    let setup = Backend::selected().write_config(&s.data_dir().join("module"), 1);
    let double = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(pkcs11_token_double::LIBRARY_FILE);
    assert!(double.is_file(), "{}: not built", double.display());
    let configure = |module: &std::path::Path| {
        let pins = s.data_dir().join("module");
        std::fs::write(
            s.data_dir().join(hsm_signer::config::CONFIG_FILE_NAME),
            format!(
                "default_device = \"iv-token\"\n\n[[device]]\nname = \"iv-token\"\n\
                 profile = \"{}\"\nmodule = \"{}\"\nmodule_config = \"{}\"\n\
                 token_label = \"hsm-signer-1\"\npin_file = \"{p}/pin\"\nso_pin_file = \"{p}/so-pin\"\n",
                setup.profile,
                module.display(),
                setup.config.display(),
                p = pins.display(),
            ),
        )
        .unwrap();
    };
    let run = |mode: &str, args: &[&str]| {
        s.cmd()
            .env(pkcs11_token_double::MODULE_ENV, &setup.module)
            .env(pkcs11_token_double::MODE_ENV, mode)
            .args(args)
            .output()
            .unwrap()
    };
    let keystore = fixture("eip2335/keystore-pbkdf2.json");
    let password = fixture("eip2335/password.txt");
    let import = [
        "keys",
        "import",
        "--keystore",
        keystore.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
    ];
    let key_files = || {
        std::fs::read_dir(s.data_dir().join("keys"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    configure(&double);
    let out = run("forward", &["device", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token whose new envelopes do not open: refused with the reason, no key file written.
    for args in [&["keys", "generate", "--count", "2"][..], &import[..]] {
        let out = run("corrupt", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} succeeded on a faulty token"
        );
        assert!(
            stderr.contains("does not open on the token"),
            "{args:?}: {stderr}"
        );
        assert_eq!(key_files(), 0, "{args:?} wrote a key file: {stderr}");
    }

    // A token that chooses the IV: keys generated and imported through it...
    for args in [&["keys", "generate", "--count", "3"][..], &import[..]] {
        let out = run("token-iv", args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ...open on the real module alone, so the IV stored is the one the token used.
    configure(&setup.module);
    let (config, devices) = s.open();
    let store = KeyStore::load_strict(&config.keys_dir()).unwrap();
    assert_eq!(store.len(), 4);
    let device = devices.get("iv-token").unwrap();
    for record in store.iter() {
        let root = [0x42; 32];
        let signature = sign_with_share(
            device,
            &record.pubkey,
            &record.shares[0],
            &SigningRoot(root),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", record.pubkey));
        assert!(bls::verify(&record.pubkey.0, &root, &signature));
    }
}
