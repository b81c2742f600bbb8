//! Key distribution for the distributed signing profile, through the real binary: `keys split`
//! of an EIP-2335 keystore into per-share keystores and a manifest (every t-subset of the shares
//! signs exactly as the original key, by blst), and `keys import-shares --manifest` on three
//! participants, one share each (each record right; a share as its token opens it signs the
//! partial that recombines with the others' to the original key's signature). Bad input is
//! refused in one line and changes nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use blst::min_pk::{SecretKey, Signature};
use common::{assert_one_error_line, device, fixture, snapshot, subsets, Signer, EIP2335_SECRET};
use hsm_signer::bls::DST;
use hsm_signer::keys::eip2335::{KdfChoice, Keystore};
use hsm_signer::keys::threshold::combine;
use hsm_signer::keys::{
    open_share, Distributed, KeyRecord, KeyStore, ParticipantRef, PublicKeyBytes, ShareId,
};
use secrecy::SecretString;
use serde_json::Value;

fn id(i: u64) -> ShareId {
    ShareId::new(i).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn unhex(h: &str) -> Vec<u8> {
    hex::decode(h.trim_start_matches("0x")).unwrap()
}

fn pk_hex(sk: &SecretKey) -> String {
    format!("0x{}", hex::encode(sk.sk_to_pk().compress()))
}

fn endpoints(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("https://p{i}.example:9000"))
        .collect()
}

/// A keystore of a fresh random key, and its password file, in `dir`.
fn random_keystore(dir: &Path) -> (SecretKey, PathBuf, PathBuf) {
    let sk = hsm_signer::bls::random_secret_key().unwrap();
    let ks = Keystore::encrypt(
        &sk.to_bytes(),
        &SecretString::from("validator password".to_owned()),
        KdfChoice::Pbkdf2 { c: 1024 },
        Some(hex::encode(sk.sk_to_pk().compress())),
        "m/12381/3600/0/0/0",
    )
    .unwrap();
    let keystore = dir.join("keystore-random.json");
    std::fs::write(&keystore, ks.to_json()).unwrap();
    let password = dir.join("password-random.txt");
    std::fs::write(&password, "validator password\n").unwrap();
    (sk, keystore, password)
}

/// The EIP-2335 vectors' keystore (pbkdf2), its password file and its secret.
fn fixture_keystore() -> (SecretKey, PathBuf, PathBuf) {
    (
        SecretKey::from_bytes(&unhex(EIP2335_SECRET)).unwrap(),
        fixture("eip2335/keystore-pbkdf2.json"),
        fixture("eip2335/password.txt"),
    )
}

/// `keys split` arguments for `keystore` t-of-n to `out`, `extra` appended.
fn split_args(
    keystore: &Path,
    password: &Path,
    t: usize,
    participants: &[String],
    out: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "keys",
        "split",
        "--keystore",
        s(keystore),
        "--password-file",
        s(password),
        "--threshold",
        &t.to_string(),
        "--participants",
        &participants.join(","),
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn run(signer: &Signer, args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    signer.run(&args)
}

/// One share of a split directory, read as a participant's operator would: its keystore
/// decrypted with its password file by the library's EIP-2335 code.
struct Share {
    id: ShareId,
    secret: SecretKey,
    public_key: String,
    keystore: Keystore,
    password: String,
}

/// The manifest and every share of the split in `out`, in manifest order.
fn read_split(out: &Path) -> (Value, Vec<Share>) {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let shares = manifest["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let x: u64 = p["id"].as_str().unwrap().parse().unwrap();
            let ks_text = std::fs::read_to_string(out.join(format!("share-{x}.json"))).unwrap();
            let keystore = Keystore::from_json(&ks_text).unwrap();
            let password = std::fs::read_to_string(out.join(format!("share-{x}.password")))
                .unwrap()
                .trim_end()
                .to_owned();
            let bytes = keystore
                .decrypt(&SecretString::from(password.clone()))
                .unwrap();
            Share {
                id: id(x),
                secret: SecretKey::from_bytes(bytes.as_ref()).unwrap(),
                public_key: p["public_key"].as_str().unwrap().to_owned(),
                keystore,
                password,
            }
        })
        .collect();
    (manifest, shares)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A split of `secret`'s keystore, checked file by file; then every t-subset of its shares
/// signs a root exactly as blst signs it with the original key, and no smaller subset does.
fn split_and_check(
    secret: &SecretKey,
    keystore: &Path,
    password: &Path,
    t: usize,
    ids: Option<&[u64]>,
) {
    let signer = Signer::new();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("split");
    let n = ids.map_or(3, <[u64]>::len);
    let participants = endpoints(n);
    let id_list = ids.map(|v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    let mut extra = vec!["--shares".to_owned(), n.to_string()];
    if let Some(list) = &id_list {
        extra.extend(["--share-ids".to_owned(), list.clone()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let output = run(
        &signer,
        &split_args(keystore, password, t, &participants, &out, &extra),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let composite = pk_hex(secret);
    assert!(
        printed.contains(&format!("split {composite} {t}-of-{n}")),
        "{printed}"
    );

    let expected_ids: Vec<u64> = ids.map_or_else(|| (1..=n as u64).collect(), <[u64]>::to_vec);
    // The directory: 0700, holding exactly the shares' keystores and passwords (0600) and the
    // manifest.
    assert_eq!(mode(&out), 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = expected_ids
        .iter()
        .flat_map(|x| [format!("share-{x}.json"), format!("share-{x}.password")])
        .chain(["manifest.json".to_owned()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    for x in &expected_ids {
        assert_eq!(mode(&out.join(format!("share-{x}.password"))), 0o600);
        assert_eq!(mode(&out.join(format!("share-{x}.json"))), 0o600);
    }

    let (manifest, shares) = read_split(&out);
    assert_eq!(manifest["composite_public_key"], composite);
    assert_eq!(manifest["signing_threshold"], t.to_string());
    assert_eq!(manifest.as_object().unwrap().len(), 3, "{manifest}");
    for ((p, share), (x, endpoint)) in manifest["participants"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&shares)
        .zip(expected_ids.iter().zip(&participants))
    {
        assert_eq!(p["id"], x.to_string());
        assert_eq!(p["endpoint"], *endpoint);
        // The share's public key: from its own secret, in the manifest and in its keystore.
        assert_eq!(share.public_key, pk_hex(&share.secret));
        assert_eq!(
            share.keystore.pubkey.as_deref(),
            Some(&share.public_key[2..])
        );
        let description = share.keystore.description.clone().unwrap_or_default();
        assert!(
            description.contains(&format!("share {x} ")) && description.contains(&composite),
            "{description}"
        );
        // Its own fresh password: 256 bits, never printed.
        assert_eq!(share.password.len(), 64);
        assert!(!printed.contains(&share.password));
        assert!(!printed.contains(&hex::encode(share.secret.to_bytes())));
    }
    let passwords: std::collections::HashSet<&str> =
        shares.iter().map(|s| s.password.as_str()).collect();
    assert_eq!(passwords.len(), n);
    assert!(!printed.contains(&hex::encode(secret.to_bytes())));

    // Every t-subset recombines to the original key's signature, byte for byte (blst signs
    // both the partials and the reference); no (t − 1)-subset does.
    let mut root = [0u8; 32];
    getrandom::getrandom(&mut root).unwrap();
    let expected = secret.sign(&root, DST, &[]).compress();
    let partials: Vec<(ShareId, Signature)> = shares
        .iter()
        .map(|s| (s.id, s.secret.sign(&root, DST, &[])))
        .collect();
    let every = subsets(&partials, t);
    assert_eq!(every.len(), if (t, n) == (2, 3) { 3 } else { 10 });
    for subset in every {
        assert_eq!(combine(&subset).unwrap().compress(), expected, "{subset:?}");
    }
    for subset in subsets(&partials, t - 1) {
        if !subset.is_empty() {
            assert_ne!(combine(&subset).unwrap().compress(), expected);
        }
    }

    // A second split into the same directory is refused and leaves it as it was.
    let before = snapshot(&out);
    let output = run(
        &signer,
        &split_args(keystore, password, t, &participants, &out, &extra),
    );
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        assert_one_error_line(&err).contains("already exists"),
        "{err}"
    );
    assert_eq!(snapshot(&out), before);
}

#[test]
fn split_2_of_3_every_pair_signs_as_the_original_key() {
    let (secret, keystore, password) = fixture_keystore();
    split_and_check(&secret, &keystore, &password, 2, None);
}

#[test]
fn split_3_of_5_with_explicit_ids_every_triple_signs_as_the_original_key() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, keystore, password) = random_keystore(dir.path());
    split_and_check(&secret, &keystore, &password, 3, Some(&[2, 5, 9, 11, 30]));
}

#[test]
fn split_refuses_bad_input_in_one_line_and_writes_nothing() {
    let signer = Signer::new();
    let work = tempfile::tempdir().unwrap();
    let (_, keystore, password) = random_keystore(work.path());
    let wrong = work.path().join("wrong.txt");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let out = work.path().join("split");
    let three = endpoints(3);
    let with = |edit: &dyn Fn(&mut Vec<String>)| {
        let mut e = three.clone();
        edit(&mut e);
        e
    };
    type Case<'a> = (usize, Vec<String>, &'a Path, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            4,
            three.clone(),
            &password,
            vec![],
            "threshold 4 with 3 participant(s)",
        ),
        (
            0,
            three.clone(),
            &password,
            vec![],
            "threshold 0 with 3 participant(s)",
        ),
        (
            2,
            three.clone(),
            &password,
            vec!["--shares", "4"],
            "4 share(s) but 3 participant endpoint(s)",
        ),
        (
            2,
            with(&|e| e[1] = "http://p2.example:9000".into()),
            &password,
            vec![],
            "is not an https:// origin",
        ),
        (
            2,
            with(&|e| e[2] = "https://p3.example:9000/sign".into()),
            &password,
            vec![],
            "must be an origin",
        ),
        (
            2,
            with(&|e| e[2] = "https://P1.example:9000".into()),
            &password,
            vec![],
            "appears twice",
        ),
        (
            2,
            three.clone(),
            &password,
            vec!["--share-ids", "1,7,1"],
            "participant id 1 appears twice",
        ),
        (
            2,
            three.clone(),
            &password,
            vec!["--share-ids", "1,0,2"],
            "share id 0 is not allowed",
        ),
        (
            2,
            three.clone(),
            &password,
            vec!["--share-ids", "1,2"],
            "2 share id(s) for 3 participant(s)",
        ),
        (2, three.clone(), &wrong, vec![], "checksum mismatch"),
    ];
    for (t, participants, pw, extra, expect) in cases {
        let output = run(
            &signer,
            &split_args(&keystore, pw, t, &participants, &out, &extra),
        );
        assert!(!output.status.success(), "{expect}");
        let err = String::from_utf8_lossy(&output.stderr);
        let line = assert_one_error_line(&err);
        assert!(line.contains(expect), "{line:?} lacks {expect:?}");
        assert!(!out.exists(), "{expect}: {} was created", out.display());
    }
    // An existing directory, even empty, is never written into.
    std::fs::create_dir(&out).unwrap();
    let output = run(
        &signer,
        &split_args(&keystore, &password, 2, &three, &out, &[]),
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        assert_one_error_line(&err).contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

/// A (2, 3) split of a fresh key in `dir/name`: the key and the directory.
fn split_2_of_3(dir: &Path, name: &str) -> (SecretKey, PathBuf) {
    let (secret, keystore, password) = random_keystore(dir);
    let out = dir.join(name);
    Signer::new().ok(
        &split_args(&keystore, &password, 2, &endpoints(3), &out, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    (secret, out)
}

fn import_args<'a>(manifest: &'a Path, keystore: &'a Path, password: &'a Path) -> Vec<&'a str> {
    vec![
        "keys",
        "import-shares",
        "--manifest",
        s(manifest),
        "--keystore",
        s(keystore),
        "--password-file",
        s(password),
    ]
}

#[test]
fn three_participants_import_one_share_each_and_a_sealed_share_recombines() {
    let work = tempfile::tempdir().unwrap();
    let (secret, out) = split_2_of_3(work.path(), "split");
    let (manifest_json, shares) = read_split(&out);
    let composite = PublicKeyBytes::parse(&pk_hex(&secret)).unwrap();
    let manifest = out.join("manifest.json");
    let account = Distributed {
        signing_threshold: 2,
        participants: endpoints(3)
            .into_iter()
            .enumerate()
            .map(|(i, endpoint)| ParticipantRef {
                id: id(i as u64 + 1),
                endpoint,
            })
            .collect(),
    };

    let mut root = [0u8; 32];
    getrandom::getrandom(&mut root).unwrap();
    // Each share's partial as blst signs with it…
    let mut partials: Vec<(ShareId, Signature)> = shares
        .iter()
        .map(|s| (s.id, s.secret.sign(&root, DST, &[])))
        .collect();
    for (i, share) in shares.iter().enumerate() {
        let x = share.id.get();
        let participant = Signer::new();
        let stdout = participant.ok(&import_args(
            &manifest,
            &out.join(format!("share-{x}.json")),
            &out.join(format!("share-{x}.password")),
        ));
        assert_eq!(
            stdout.trim(),
            format!(
                "imported share {x} of {composite} (2-of-3; this participant: {}) on {}",
                endpoints(3)[i],
                device(1)
            )
        );

        // The record: the composite key, this one share sealed on the default device, threshold
        // 1 here, and the account; it loads cleanly.
        let data = participant.data_dir().join("keys");
        let (store, errors) = KeyStore::load(&data).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.len(), 1);
        let record: &KeyRecord = store.get(&composite).unwrap();
        assert_eq!(record.pubkey, composite);
        assert_eq!(record.threshold, 1);
        assert_eq!(record.shares.len(), 1);
        assert_eq!(record.shares[0].id, share.id);
        assert_eq!(record.shares[0].device, device(1));
        assert_eq!(record.shares[0].pubkey.to_string(), share.public_key);
        assert_eq!(record.origin, "imported-share");
        assert!(record.remote.is_empty());
        assert_eq!(record.distributed.as_ref(), Some(&account));
        assert_eq!(record.own_share().map(|s| s.id), Some(share.id));
        assert_eq!(
            manifest_json["participants"][i]["public_key"],
            share.public_key
        );
        let listed: Value =
            serde_json::from_str(&participant.ok(&["keys", "list", "--json"])).unwrap();
        assert_eq!(listed[0]["distributed"]["signing_threshold"], 2);
        assert_eq!(
            listed[0]["distributed"]["participants"][i]["endpoint"],
            endpoints(3)[i]
        );
        let listed = participant.ok(&["keys", "list"]);
        assert!(
            listed.contains(&format!("{composite} share {x} of 2-of-3 (participant)")),
            "{listed}"
        );

        // …and, for the first participant, as its token opens the sealed share (a process
        // initialises one PKCS#11 configuration, so one participant's tokens per test).
        if i == 0 {
            let (_, devices) = participant.open();
            let opened = open_share(
                devices.get(&device(1)).unwrap(),
                &composite,
                &record.shares[0],
            )
            .unwrap();
            partials[0].1 = opened.sign(&root, DST, &[]);
        }
    }
    let expected = secret.sign(&root, DST, &[]).compress();
    for subset in subsets(&partials, 2) {
        assert_eq!(combine(&subset).unwrap().compress(), expected);
    }
}

#[test]
fn participant_import_refuses_bad_input_in_one_line_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (_, out) = split_2_of_3(work.path(), "split");
    let (_, other) = split_2_of_3(work.path(), "other");
    let manifest = out.join("manifest.json");
    let ks = |x: u64| out.join(format!("share-{x}.json"));
    let pw = |x: u64| out.join(format!("share-{x}.password"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();

    // Altered copies of the manifest, and of share 1's keystore.
    let altered = |name: &str, edit: &dyn Fn(&mut Value)| -> PathBuf {
        let mut v = m.clone();
        edit(&mut v);
        let p = work.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let dup_id = altered("dup-id.json", &|v| v["participants"][1]["id"] = "1".into());
    let t_over_n = altered("t-over-n.json", &|v| v["signing_threshold"] = "4".into());
    let http = altered("http.json", &|v| {
        v["participants"][0]["endpoint"] = "http://p1.example:9000".into()
    });
    let zero = altered("zero.json", &|v| v["participants"][2]["id"] = "0".into());
    let swapped_ids = altered("swapped.json", &|v| {
        v["participants"][0]["id"] = "2".into();
        v["participants"][1]["id"] = "1".into();
    });
    let other_key = read_split(&other).0["composite_public_key"].clone();
    let wrong_composite = altered("composite.json", &|v| {
        v["composite_public_key"] = other_key.clone()
    });
    let extra_field = altered("extra.json", &|v| v["note"] = "hi".into());
    let not_json = work.path().join("not-json.json");
    std::fs::write(&not_json, "composite: 0x12").unwrap();
    let mut lying: Value = serde_json::from_str(&std::fs::read_to_string(ks(1)).unwrap()).unwrap();
    lying["pubkey"] = m["participants"][1]["public_key"]
        .as_str()
        .unwrap()
        .trim_start_matches("0x")
        .into();
    let lying_ks = work.path().join("lying.json");
    std::fs::write(&lying_ks, lying.to_string()).unwrap();

    let signer = Signer::new();
    signer.ok(&["device", "init"]);
    let check = |args: &[&str], expect: &str| {
        let before = snapshot(signer.data_dir());
        let err = signer.fail(args);
        let line = assert_one_error_line(&err);
        assert!(line.contains(expect), "{line:?} lacks {expect:?}");
        assert_eq!(snapshot(signer.data_dir()), before, "{expect}");
    };
    let import = |m: &Path, k: &Path, p: &Path| -> Vec<String> {
        import_args(m, k, p).iter().map(|a| a.to_string()).collect()
    };
    // A keystore and its password, and neither mode's arguments.
    let no_mode: Vec<String> = [
        "keys",
        "import-shares",
        "--keystore",
        s(&ks(1)),
        "--password-file",
        s(&pw(1)),
    ]
    .map(String::from)
    .to_vec();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (import(&manifest, &ks(1), &pw(2)), "checksum mismatch"),
        (
            import(
                &manifest,
                &other.join("share-1.json"),
                &other.join("share-1.password"),
            ),
            "is not the public_key of any participant",
        ),
        (import(&manifest, &lying_ks, &pw(1)), "claims pubkey"),
        (
            import(&dup_id, &ks(1), &pw(1)),
            "participant id 1 appears twice",
        ),
        (
            import(&t_over_n, &ks(1), &pw(1)),
            "signing threshold 4 with 3 participant(s)",
        ),
        (
            import(&http, &ks(1), &pw(1)),
            "\"http://p1.example:9000\" is not an https:// origin",
        ),
        (
            import(&zero, &ks(1), &pw(1)),
            "participant id 0 is not allowed",
        ),
        (
            import(&swapped_ids, &ks(1), &pw(1)),
            "do not recombine to composite_public_key",
        ),
        (
            import(&wrong_composite, &ks(1), &pw(1)),
            "do not recombine to composite_public_key",
        ),
        (import(&extra_field, &ks(1), &pw(1)), "unknown field `note`"),
        (import(&not_json, &ks(1), &pw(1)), "not a split manifest"),
        (
            [
                import(&manifest, &ks(1), &pw(1)),
                vec!["--device".into(), "nowhere".into()],
            ]
            .concat(),
            "no device named \"nowhere\"",
        ),
        // The two modes do not mix.
        (
            [
                import(&manifest, &ks(1), &pw(1)),
                vec![
                    "--devices".into(),
                    device(1),
                    "--threshold".into(),
                    "2".into(),
                ],
            ]
            .concat(),
            "cannot be combined with --threshold, --devices",
        ),
        (
            [
                import(&manifest, &ks(1), &pw(1)),
                vec!["--keystore".into(), s(&ks(2)).into()],
            ]
            .concat(),
            "participant mode (--manifest) imports one share",
        ),
        (
            no_mode.clone(),
            "missing: --group-pubkey, --threshold, --share-ids, --devices",
        ),
        (
            [no_mode.clone(), vec!["--device".into(), device(1)]].concat(),
            "--device is for participant mode",
        ),
    ];
    for (args, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args, expect);
    }

    // The right share imports once; a second import, of it or of another share of the same
    // key, is refused.
    signer.ok(&import_args(&manifest, &ks(1), &pw(1)));
    for x in [1, 2] {
        check(
            &import_args(&manifest, &ks(x), &pw(x)),
            "is already in the key store; nothing was changed",
        );
    }
}
