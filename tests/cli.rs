//! The real `hsm-signer` binary on its embedded default: device and key commands, and bad input
//! that must end in one clear line with nothing changed.

mod common;

use common::{assert_one_error_line, fixture, snapshot, Signer};

fn eip_password() -> String {
    fixture("eip2335/password.txt").display().to_string()
}

#[test]
fn first_run_creates_tokens_with_private_pins_and_device_init_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let s = Signer::new();
    let out = s.cmd().args(["device", "init"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("token created, custody key created").count(),
        3,
        "{stdout}"
    );
    for i in 1..=3 {
        let pin = s.data_dir().join(format!("softhsm/softhsm-{i}.pin"));
        let mode = std::fs::metadata(&pin).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", pin.display());
    }
    let again = s.ok(&["device", "init"]);
    assert_eq!(
        again.matches("token present, custody key present").count(),
        3,
        "{again}"
    );
    let check = s.ok(&["device", "check"]);
    assert_eq!(check.matches(": ok: ").count(), 3, "{check}");
}

#[test]
fn keys_generate_list_and_delete() {
    let s = Signer::new();
    let out = s.ok(&["keys", "generate", "--count", "3", "--device", "softhsm-3"]);
    let pks: Vec<&str> = out.lines().collect();
    assert_eq!(pks.len(), 3);
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(list.as_array().unwrap().iter().all(|k| k["threshold"] == 1
        && k["shares"][0]["device"] == "softhsm-3"
        && k["shares"][0]["id"] == 1));
    s.ok(&["keys", "delete", pks[0]]);
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let err = s.fail(&["keys", "delete", pks[0]]);
    assert!(assert_one_error_line(&err).contains("unknown validator key"));
    // No temp files are left behind by the atomic writes.
    assert!(snapshot(s.data_dir())
        .iter()
        .all(|(p, _, _)| !p.to_string_lossy().ends_with(".tmp")));
}

fn import_fails_and_stores_nothing(keystore: &std::path::Path, password_file: &str, expect: &str) {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    let before = snapshot(s.data_dir());
    let err = s.fail(&[
        "keys",
        "import",
        "--keystore",
        keystore.to_str().unwrap(),
        "--password-file",
        password_file,
    ]);
    assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    assert!(
        err.contains("nothing was imported") || err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(snapshot(s.data_dir()), before, "the data directory changed");
    assert!(
        !err.contains("000000000019d6689c"),
        "the secret leaked into an error"
    );
}

#[test]
fn wrong_password_bad_checksum_and_unknown_kdf_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the password").unwrap();
    import_fails_and_stores_nothing(
        &fixture("eip2335/keystore-pbkdf2.json"),
        wrong.to_str().unwrap(),
        "checksum mismatch",
    );

    let mut ks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("eip2335/keystore-scrypt.json")).unwrap(),
    )
    .unwrap();
    let sum = ks["crypto"]["checksum"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = format!(
        "{}{}",
        if sum.starts_with('0') { '1' } else { '0' },
        &sum[1..]
    );
    ks["crypto"]["checksum"]["message"] = bad.into();
    let bad_checksum = dir.path().join("keystore-bad-checksum.json");
    std::fs::write(&bad_checksum, ks.to_string()).unwrap();
    import_fails_and_stores_nothing(&bad_checksum, &eip_password(), "checksum mismatch");

    let mut ks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("eip2335/keystore-scrypt.json")).unwrap(),
    )
    .unwrap();
    ks["crypto"]["kdf"]["function"] = "argon2id".into();
    let unknown_kdf = dir.path().join("keystore-argon.json");
    std::fs::write(&unknown_kdf, ks.to_string()).unwrap();
    import_fails_and_stores_nothing(&unknown_kdf, &eip_password(), "argon2id");
}

#[test]
fn one_bad_keystore_in_a_batch_imports_none_of_them() {
    let s = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("eip2335/keystore-pbkdf2.json"),
        dir.path().join("keystore-a.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("keystore-b.json"), "{\"version\": 4}").unwrap();
    let err = s.fail(&[
        "keys",
        "import",
        "--keystore",
        dir.path().to_str().unwrap(),
        "--password-file",
        &eip_password(),
    ]);
    assert!(err.contains("keystore-b.json"), "{err}");
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn importing_the_same_key_twice_reports_it_as_present() {
    let s = Signer::new();
    let args = |f: &str| {
        vec![
            "keys".to_owned(),
            "import".into(),
            "--keystore".into(),
            fixture(f).display().to_string(),
            "--password-file".into(),
            eip_password(),
        ]
    };
    let a = args("eip2335/keystore-scrypt.json");
    let out = s.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("1 imported"), "{out}");
    let b = args("eip2335/keystore-pbkdf2.json");
    let out = s.ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("0 imported, 1 already present"), "{out}");
}

fn write_config(s: &Signer, device_body: &str) {
    let conf = s.data_dir().join("softhsm/softhsm2.conf");
    let pin = s.data_dir().join("softhsm/softhsm-1.pin");
    std::fs::write(
        s.data_dir().join("hsm-signer.toml"),
        format!(
            "[[device]]\nname = \"d\"\nprofile = \"softhsm\"\nmodule_config = \"{}\"\npin_file = \"{}\"\n{device_body}\n",
            conf.display(),
            pin.display()
        ),
    )
    .unwrap();
}

/// Bad setups: each gives one clear line, a failing exit, and leaves the data dir as it was.
fn bad_setup(s: &Signer, expect: &str) {
    let before = snapshot(s.data_dir());
    let err = s.fail(&["keys", "generate", "--count", "1"]);
    let line = assert_one_error_line(&err);
    assert!(line.contains(expect), "expected {expect:?} in {line:?}");
    assert_eq!(snapshot(s.data_dir()), before, "the data directory changed");
    let err = s.fail(&["device", "check"]);
    assert!(err.contains("failed the check"), "{err}");
}

#[test]
fn wrong_pin_is_one_clear_line_and_changes_nothing() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    std::fs::write(s.data_dir().join("softhsm/softhsm-2.pin"), "0000").unwrap();
    bad_setup(&s, "softhsm-2: the token rejected the PIN");
}

#[test]
fn missing_module_is_one_clear_line_and_changes_nothing() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    write_config(
        &s,
        "token_label = \"hsm-signer-1\"\nmodule = \"/nonexistent/libsofthsm2.so\"",
    );
    bad_setup(&s, "PKCS#11 module not found: /nonexistent/libsofthsm2.so");
}

#[test]
fn unknown_token_label_is_one_clear_line_and_changes_nothing() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    write_config(&s, "token_label = \"no-such-token\"");
    bad_setup(&s, "no token labelled \"no-such-token\"");
}

#[test]
fn uninitialised_token_is_one_clear_line_and_changes_nothing() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    // SoftHSM always offers one free slot; find its id through the module itself.
    std::env::set_var("SOFTHSM2_CONF", s.data_dir().join("softhsm/softhsm2.conf"));
    let ctx = hsm::load_module(&hsm::find_softhsm_module().unwrap()).unwrap();
    let free = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| !ctx.get_token_info(*slot).unwrap().token_initialized())
        .unwrap();
    write_config(&s, &format!("slot = {}", free.id()));
    bad_setup(&s, "is not initialised; run `hsm-signer device init`");
}

#[test]
fn a_directory_without_keystores_and_a_missing_password_file_are_clear_errors() {
    let s = Signer::new();
    let empty = tempfile::tempdir().unwrap();
    let err = s.fail(&[
        "keys",
        "import",
        "--keystore",
        empty.path().to_str().unwrap(),
        "--password-file",
        &eip_password(),
    ]);
    assert!(
        assert_one_error_line(&err).contains("no keystore*.json files"),
        "{err}"
    );
    let err = s.fail(&[
        "keys",
        "import",
        "--keystore",
        fixture("eip2335/keystore-scrypt.json").to_str().unwrap(),
        "--password-file",
        "/nonexistent/password",
    ]);
    assert!(
        assert_one_error_line(&err).contains("/nonexistent/password"),
        "{err}"
    );
}

/// The deposit CLI's own output (ethstaker-deposit, pbkdf2 c = 262144): 100 keystores import
/// with visible progress, the KDFs spread over every core, and every pubkey matches the list
/// derived independently from the mnemonic.
#[test]
fn import_of_100_deposit_cli_keystores_shows_progress_and_uses_every_core() {
    let s = Signer::new();
    s.ok(&["device", "init"]);
    let dir = fixture("deposit-cli-100-pbkdf2");
    let out = s
        .cmd()
        .args(["keys", "import", "--keystore"])
        .arg(dir.join("validator_keys"))
        .arg("--password-file")
        .arg(dir.join("password.txt"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    for step in ["10/100", "50/100", "100/100"] {
        assert!(
            stderr.contains(&format!("decrypting keystores: {step}")),
            "no progress {step}:\n{stderr}"
        );
    }
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("100 imported, 0 already present"),
        "{summary}"
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    let threads: usize = summary
        .split("KDF on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(threads, cores.min(100), "{summary}");
    // How busy the cores were (the summary's CPU ÷ wall figure) depends on what else the
    // machine runs, so it is reported, not asserted; that every core's thread ran KDFs is.
    eprintln!("{summary}");

    let expected: std::collections::BTreeSet<String> =
        std::fs::read_to_string(dir.join("pubkeys.txt"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["keys", "list", "--json"])).unwrap();
    let got: std::collections::BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["pubkey"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected);

    // Key 0 signs exactly as blst does with the secret derived from the mnemonic.
    let (config, devices) = s.open();
    let store = hsm_signer::keys::KeyStore::load_strict(&config.keys_dir()).unwrap();
    let secret = std::fs::read_to_string(dir.join("secret-0.txt")).unwrap();
    let sk =
        hsm_signer::bls::secret_key(&hex::decode(secret.trim().trim_start_matches("0x")).unwrap())
            .unwrap();
    let pk = hsm_signer::keys::PublicKeyBytes(hsm_signer::bls::public_key_bytes(&sk));
    let record = store.get(&pk).unwrap();
    let root = [0x42; 32];
    let via_device = hsm_signer::keys::sign_with_share(
        devices.get(&record.shares[0].device).unwrap(),
        &pk,
        &record.shares[0],
        &hsm_signer::consensus::SigningRoot(root),
    )
    .unwrap();
    assert_eq!(
        via_device.compress(),
        hsm_signer::bls::sign(&sk, &root).compress()
    );
}

/// A custody key that is sensitive and non-extractable now, but was created readable and
/// extractable (and so may exist outside the token), fails `device check`, naming the
/// attributes; the other devices still pass.
#[test]
fn a_custody_key_that_was_ever_extractable_fails_the_check() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    use cryptoki::session::UserType;

    let s = Signer::new();
    s.ok(&["device", "init"]);
    let config = hsm_signer::config::Config::load(None, s.data_dir()).unwrap();
    config.apply_module_environment().unwrap();
    let d = &config.devices[0].hsm;
    let ctx = hsm::load_module(&d.module).unwrap();
    let hsm::TokenSelector::Label(label) = &d.token else {
        panic!("the embedded default selects tokens by label")
    };
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&d.pin.read(&d.name).unwrap()))
        .unwrap();
    let key_label = Attribute::Label(d.custody_key_label.as_bytes().to_vec());
    for old in session
        .find_objects(std::slice::from_ref(&key_label))
        .unwrap()
    {
        session.destroy_object(old).unwrap();
    }
    let key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                key_label,
            ],
        )
        .unwrap();
    // Made sensitive and non-extractable afterwards: it looks protected now.
    session
        .update_attributes(
            key,
            &[Attribute::Sensitive(true), Attribute::Extractable(false)],
        )
        .unwrap();
    drop(session);

    let out = s.run(&["device", "check"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", d.name)))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("FAILED"), "{line}");
    assert!(line.contains("CKA_ALWAYS_SENSITIVE is false"), "{line}");
    assert!(line.contains("CKA_NEVER_EXTRACTABLE is false"), "{line}");
    assert_eq!(stdout.matches(": ok: ").count(), 2, "{stdout}");
}

#[test]
fn bench_distributed_signs_through_three_participant_processes_and_leaves_nothing_behind() {
    let s = Signer::new();
    let out = s.ok(&[
        "bench",
        "distributed",
        "--keys",
        "2",
        "--seconds",
        "0.3",
        "--concurrency",
        "4",
        "--blocks",
        "3",
        "--rounds",
        "1",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shapes = report["shapes"].as_array().unwrap();
    let names: Vec<&str> = shapes
        .iter()
        .map(|s| s["shape"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1-of-1", "local 2-of-3", "distributed 2-of-3"]);
    for shape in shapes {
        // Every request signed, and every signature verified by blst under its validator key.
        assert_eq!(shape["failed"], 0, "{shape}");
        assert_eq!(shape["unverified"], 0, "{shape}");
        assert!(shape["verified"].as_u64().unwrap() > 0, "{shape}");
        assert!(shape["herd_blocks"].as_u64().unwrap() > 0, "{shape}");
        assert!(
            shape["signatures_per_sec"].as_f64().unwrap() > 0.0,
            "{shape}"
        );
        // And with one message for every key at a time.
        assert!(
            shape["shared"]["signatures_per_sec"].as_f64().unwrap() > 0.0,
            "{shape}"
        );
    }
    // Only the distributed shape asks participants: at least one partial a request.
    let batching = |s: &serde_json::Value| s["shared"]["partials_per_request"].as_f64();
    assert_eq!(batching(&shapes[0]), None, "{report}");
    assert!(batching(&shapes[2]).unwrap() >= 1.0, "{report}");
    // The BLS work alone, timed in the same run: its ratio is what its two sides say.
    let floor = &report["bls_floor"];
    for side in [floor, &floor["shared"]] {
        let ms = |field: &str| side[field].as_f64().unwrap();
        let expected = ms("whole_ms") / (ms("participants_ms") + ms("coordinator_ms"));
        assert!((ms("ratio") - expected).abs() < 1e-9, "{floor}");
        assert!(ms("ratio") > 0.0 && ms("ratio") < 1.0, "{floor}");
    }
    assert!(floor["signatures"].as_u64().unwrap() >= 16, "{floor}");
    // The figures depend on the machine's load: reported, not asserted. The verdicts follow
    // them.
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{report}");
    let (throughput, shared, herd) = (&targets[0], &targets[1], &targets[2]);
    let measured = |t: &serde_json::Value| t["measured"].as_f64().unwrap();
    assert_eq!(throughput["pass"], measured(throughput) >= 0.25, "{report}");
    assert_eq!(shared["pass"], measured(shared) >= 0.25, "{report}");
    assert_eq!(herd["pass"], measured(herd) <= 2.0, "{report}");
    // The scratch directory (PKI, the participants' tokens, keys and databases) is gone, and
    // so are the participant processes.
    assert_bench_left_nothing(&s);
}

/// A bench's scratch directory (servers' tokens, keys, databases) is gone, and so are the
/// server processes it started.
fn assert_bench_left_nothing(s: &Signer) {
    let left: Vec<_> = std::fs::read_dir(s.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("bench-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let dir = s.data_dir().to_string_lossy().into_owned();
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir) && c.contains(" serve "))
        .collect();
    assert!(running.is_empty(), "{running:?}");
}

#[test]
fn bench_http_drives_a_server_process_on_sqlite_and_postgresql_and_verifies_every_signature() {
    let s = Signer::new();
    let pg = common::pg::PgServer::start();
    let url = pg.create_database("bench_http");
    let out = s.ok(&[
        "bench",
        "http",
        "--keys",
        "40",
        "--seconds",
        "0.5",
        "--connections",
        "8",
        "--postgres",
        &url,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let workloads = report["workloads"].as_array().unwrap();
    let shape: Vec<(&str, bool, &str)> = workloads
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap(),
                w["shared_messages"].as_bool().unwrap(),
                w["store"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("AGGREGATION_SLOT", true, "none"),
            ("AGGREGATION_SLOT", false, "none"),
            ("ATTESTATION", true, "sqlite"),
            ("ATTESTATION", true, "postgresql"),
        ]
    );
    for w in workloads {
        // Every request signed (an attestation recorded first), every signature verified by
        // blst under its key.
        assert_eq!(w["failed"], 0, "{w}");
        assert_eq!(w["unverified"], 0, "{w}");
        assert!(w["verified"].as_u64().unwrap() > 0, "{w}");
        assert!(w["per_sec"].as_f64().unwrap() > 0.0, "{w}");
        // The server counted its stages, and its threads were found by role.
        let cpu = &w["cpu"];
        let stages: Vec<&str> = cpu["stages_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[0].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            ["parse", "root", "device", "sign", "response"],
            "{w}"
        );
        assert!(cpu["http_threads_us"].as_f64().unwrap() > 0.0, "{w}");
        assert!(cpu["signing_threads_us"].as_f64().unwrap() > 0.0, "{w}");
        let slashing = cpu["slashing_threads_us"].as_f64().unwrap();
        // A batch's own time in the store, from the server's histogram: none without a store.
        let transaction = cpu["waits_ms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "transaction")
            .and_then(|p| p[1].as_f64())
            .unwrap_or_else(|| panic!("no transaction time: {w}"));
        if w["store"] == "none" {
            assert_eq!(slashing, 0.0, "{w}");
            assert_eq!(transaction, 0.0, "{w}");
        } else {
            assert!(slashing > 0.0, "{w}");
            assert!(transaction > 0.0, "{w}");
        }
        // The pauses are counted among the measured requests' answers.
        let pauses = &w["pauses"];
        let share = pauses["share_of_time"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{w}");
        assert!(
            pauses["above_p99_across_a_pause"].as_u64().unwrap()
                <= pauses["above_p99"].as_u64().unwrap(),
            "{w}"
        );
        assert_eq!(
            pauses["count"].as_u64().unwrap() == 0,
            pauses["longest_ms"].as_f64().unwrap() == 0.0,
            "{w}"
        );
    }
    // The verdicts follow the figures (which depend on the machine: reported, not asserted).
    for t in report["targets"].as_array().unwrap() {
        let (measured, bound) = (
            t["measured"].as_f64().unwrap(),
            t["target"].as_str().unwrap(),
        );
        let want = match bound.split_once(' ') {
            Some((">=", v)) => measured >= v.parse::<f64>().unwrap(),
            Some(("<", v)) => measured < v.parse::<f64>().unwrap(),
            _ => panic!("{t}"),
        };
        assert_eq!(t["pass"], want, "{t}");
    }
    let startups = report["startups"].as_array().unwrap();
    assert_eq!(startups.len(), 2, "{report}");
    assert!(startups.iter().all(|s| s["keys"] == 40), "{report}");
    // Nothing left behind: no scratch directory, no server process.
    assert_bench_left_nothing(&s);
}
