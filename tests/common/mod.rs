//! Shared test harness: a private data directory per test (its own SoftHSM tokens, key store),
//! the real `hsm-signer` binary, and the fixtures.
#![allow(dead_code)]

pub mod beacon;
pub mod distributed;
pub mod netns;
pub mod pg;
pub mod tls;

/// SoftHSM2 or kryoptic, as `HSM_SIGNER_TEST_PKCS11` selects (shared with the `hsm` crate's tests).
#[path = "../../hsm/tests/backend/mod.rs"]
pub mod backend;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hsm_signer::config::Config;
use hsm_signer::devices::{init_devices, Devices};

pub const BIN: &str = env!("CARGO_BIN_EXE_hsm-signer");

/// The binary [`Signer`] runs: `$HSM_SIGNER_TEST_BIN` when set, else [`BIN`]. Worktrees that
/// share one target directory share `target/debug/hsm-signer`, which is whichever of them linked
/// last; the variable can name this build's own copy (`target/debug/deps/hsm_signer-<hash>`, the
/// `executable` of the bin in `cargo test --no-run --message-format=json`).
pub fn bin() -> std::ffi::OsString {
    std::env::var_os("HSM_SIGNER_TEST_BIN").unwrap_or_else(|| BIN.into())
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The EIP-2335 vectors' public key.
pub const FIXTURE_PK: &str = "0x9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07";

/// The EIP-2335 vectors' secret.
pub const EIP2335_SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

/// Name of the `i`-th device (from 1) of a fresh [`Signer`]: `softhsm-i` on the embedded
/// default, `kryoptic-i` on kryoptic's tokens.
pub fn device(i: usize) -> String {
    format!("{}-{i}", backend::Backend::selected().name())
}

pub struct Signer {
    pub dir: tempfile::TempDir,
}

impl Signer {
    /// A fresh data directory: the embedded SoftHSM default, or, when another PKCS#11 module
    /// is selected (`backend`), a configuration file for as many of its tokens, made ready with
    /// `device init` like an operator would.
    pub fn new() -> Signer {
        let s = Signer {
            dir: tempfile::tempdir().unwrap(),
        };
        let selected = backend::Backend::selected();
        if selected != backend::Backend::SoftHsm {
            s.configure_module_tokens(selected);
        }
        s
    }

    fn configure_module_tokens(&self, selected: backend::Backend) {
        use std::fmt::Write;
        let n = hsm_signer::config::EMBEDDED_TOKENS;
        let dir = self.data_dir().join(selected.name());
        let setup = selected.write_config(&dir, n);
        let name = selected.name();
        let mut text = format!("default_device = \"{name}-1\"\n");
        for i in 1..=n {
            write!(
                text,
                "\n[[device]]\nname = \"{name}-{i}\"\nprofile = \"{profile}\"\nmodule = \"{module}\"\n\
                 module_config = \"{config}\"\ntoken_label = \"hsm-signer-{i}\"\n\
                 pin_file = \"{pins}/{name}-{i}.pin\"\nso_pin_file = \"{pins}/{name}-{i}.so-pin\"\n",
                profile = setup.profile,
                module = setup.module.display(),
                config = setup.config.display(),
                pins = dir.display(),
            )
            .unwrap();
        }
        std::fs::write(
            self.data_dir().join(hsm_signer::config::CONFIG_FILE_NAME),
            text,
        )
        .unwrap();
        self.ok(&["device", "init"]);
        // Every device is a token of the selected module, not a leftover SoftHSM one.
        let check = self.ok(&["device", "check"]);
        assert_eq!(
            check
                .lines()
                .filter(|l| l.contains(": ok:") && l.to_lowercase().contains(name))
                .count(),
            n,
            "{check}"
        );
    }

    /// A signer holding the EIP-2335 vectors' key (the oracle fixtures' key), imported through
    /// the CLI; its pubkey is [`FIXTURE_PK`].
    pub fn with_fixture_key() -> Signer {
        let s = Signer::new();
        s.ok(&[
            "keys",
            "import",
            "--keystore",
            fixture("eip2335/keystore-pbkdf2.json").to_str().unwrap(),
            "--password-file",
            fixture("eip2335/password.txt").to_str().unwrap(),
        ]);
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A configuration file in the data directory: the embedded SoftHSM devices plus `extra`.
    pub fn write_config(&self, extra: &str) {
        let mut text = String::new();
        for i in 1..=3 {
            text.push_str(&format!(
                "[[device]]\nname = \"softhsm-{i}\"\ntoken_label = \"hsm-signer-{i}\"\n\
                 pin_file = \"softhsm/softhsm-{i}.pin\"\nso_pin_file = \"softhsm/softhsm-{i}.so-pin\"\n\
                 module_config = \"softhsm/softhsm2.conf\"\n\n"
            ));
        }
        text.push_str(extra);
        std::fs::write(
            self.data_dir().join(hsm_signer::config::CONFIG_FILE_NAME),
            text,
        )
        .unwrap();
    }

    /// Write the signing policy file (`<data-dir>/signing-policy.toml`, read at start and at
    /// `/reload`).
    pub fn write_policy(&self, text: &str) {
        std::fs::write(self.data_dir().join("signing-policy.toml"), text).unwrap();
    }

    /// A policy that lets every key sign a voluntary exit (the default signs none), for tests
    /// that sign every message type.
    pub fn enable_exits(&self) -> &Signer {
        self.write_policy("exit_keys = \"all\"\n");
        self
    }

    /// Add TOML `tables` (e.g. a `[server]` section) to the signer's configuration file, writing
    /// one over the embedded default's tokens first if there is none (the tokens must exist:
    /// import a key or run `device init` before).
    pub fn add_config(&self, tables: &str) {
        use std::fmt::Write;
        let path = self.data_dir().join(hsm_signer::config::CONFIG_FILE_NAME);
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.is_empty() {
            let soft = self.data_dir().join("softhsm");
            text = "default_device = \"softhsm-1\"\n".to_owned();
            for i in 1..=hsm_signer::config::EMBEDDED_TOKENS {
                write!(
                    text,
                    "[[device]]\nname = \"softhsm-{i}\"\ntoken_label = \"hsm-signer-{i}\"\n\
                     pin_file = \"{}\"\nmodule_config = \"{}\"\n",
                    soft.join(format!("softhsm-{i}.pin")).display(),
                    soft.join("softhsm2.conf").display(),
                )
                .unwrap();
            }
        }
        text.push('\n');
        text.push_str(tables);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }

    pub fn cmd(&self) -> Command {
        self.cmd_from(Command::new(bin()))
    }

    /// [`Signer::cmd`] run inside `host`'s network namespace.
    pub fn cmd_on(&self, host: &netns::Host) -> Command {
        self.cmd_from(host.command(bin()))
    }

    /// `c` (which runs the binary) with this data directory and none of the caller's settings.
    fn cmd_from(&self, mut c: Command) -> Command {
        c.arg("--data-dir").arg(self.data_dir());
        c.env_remove("HSM_SIGNER_CONFIG").env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run and insist on success; return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hsm-signer {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run and insist on failure; return stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hsm-signer {args:?} unexpectedly succeeded"
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// In-process view of the same data directory: config with module environment applied,
    /// devices initialised and open.
    pub fn open(&self) -> (Config, Devices) {
        let config = Config::load(None, self.data_dir()).unwrap();
        config.apply_module_environment().unwrap();
        init_devices(&config, None).unwrap();
        let devices = Devices::open_all(&config).unwrap();
        (config, devices)
    }
}

/// Every file under `dir` with its size and modification time, to show that nothing changed.
/// SoftHSM's own bookkeeping (`generation`, `*.lock`, and `token.object`, which holds its login
/// counters and is rewritten on every login), is left out; key objects and our files are in.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if !(e.file_name() == "generation"
                || e.file_name() == "token.object"
                || e.path().extension().is_some_and(|x| x == "lock"))
            {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// All k-element subsets of `items`, in lexicographic order.
pub fn subsets<T: Clone>(items: &[T], k: usize) -> Vec<Vec<T>> {
    if k == 0 {
        return vec![vec![]];
    }
    if items.len() < k {
        return vec![];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        for mut rest in subsets(&items[i + 1..], k - 1) {
            rest.insert(0, first.clone());
            out.push(rest);
        }
    }
    out
}

/// The error output is one clear line: a single `error:` line and nothing else.
pub fn assert_one_error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0]
}

/// A running `hsm-signer serve` on an OS-assigned loopback port; killed on drop. `base` is
/// `http://…` or, when the signer serves TLS, `https://…`.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
    /// The default API token file of the signer's data directory.
    pub token_file: PathBuf,
}

impl Server {
    pub fn start(signer: &Signer, extra: &[&str]) -> Server {
        Server::start_on(signer, "127.0.0.1:0", extra)
    }

    /// Like [`Server::start`], listening on `listen`.
    pub fn start_on(signer: &Signer, listen: &str, extra: &[&str]) -> Server {
        Server::spawn(signer, listen, extra, std::process::Stdio::inherit(), &[])
    }

    /// Like [`Server::start`], with the server's standard error (its log) written to `log`.
    pub fn start_logging_to(signer: &Signer, extra: &[&str], log: &Path) -> Server {
        Server::start_logging_to_with_env(signer, extra, log, &[])
    }

    /// Like [`Server::start_logging_to`], with environment variables set for the server (e.g.
    /// `RUST_LOG`, which [`Signer::cmd`] otherwise removes).
    pub fn start_logging_to_with_env(
        signer: &Signer,
        extra: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        Server::start_on_appending_to(signer, "127.0.0.1:0", extra, log, env)
    }

    /// Like [`Server::start_logging_to_with_env`], listening on `listen`, with its log appended
    /// to `log` (a restarted signer keeps one log).
    pub fn start_on_appending_to(
        signer: &Signer,
        listen: &str,
        extra: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        Server::spawn(signer, listen, extra, append_to(log).into(), env)
    }

    /// `hsm-signer serve` inside `host`'s network namespace, listening on the host's address
    /// (a port the OS picks), its log appended to `log`. Off loopback the server insists on
    /// TLS with client authentication: configure it (`[tls]`) or pass it in `extra`.
    pub fn start_on_host(
        signer: &Signer,
        host: &netns::Host,
        extra: &[&str],
        log: &Path,
    ) -> Server {
        Server::start_on_host_at(signer, host, 0, extra, log)
    }

    /// [`Server::start_on_host`] on a given port (a participant's endpoint is known before it
    /// starts: its account names it).
    pub fn start_on_host_at(
        signer: &Signer,
        host: &netns::Host,
        port: u16,
        extra: &[&str],
        log: &Path,
    ) -> Server {
        Server::spawn_with(
            signer.cmd_on(host),
            signer,
            &format!("{}:{port}", host.ip()),
            extra,
            append_to(log).into(),
            &[],
        )
    }

    fn spawn(
        signer: &Signer,
        listen: &str,
        extra: &[&str],
        stderr: std::process::Stdio,
        env: &[(&str, &str)],
    ) -> Server {
        Server::spawn_with(signer.cmd(), signer, listen, extra, stderr, env)
    }

    /// Start `cmd` (the binary with `signer`'s data directory) as `serve` and read the address
    /// it announces.
    fn spawn_with(
        mut cmd: Command,
        signer: &Signer,
        listen: &str,
        extra: &[&str],
        stderr: std::process::Stdio,
        env: &[(&str, &str)],
    ) -> Server {
        use std::io::BufRead;
        let mut child = cmd
            .envs(env.iter().copied())
            .args(["serve", "--listen", listen])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("hsm-signer listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            token_file: signer.data_dir().join("api-token.txt"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The sum of every series of the metric `name` on `/metrics` (0 if absent). A name with
    /// its labels (`x{device="d"}`) picks that one series.
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_with(&http(), name)
    }

    /// [`Server::metric`] asked with `client` (an HTTPS client for a TLS server).
    pub fn metric_with(&self, client: &reqwest::blocking::Client, name: &str) -> f64 {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `POST /reload` (with the API token), then wait (bounded) until it is no longer running;
    /// returns the final `GET /reload` status.
    pub fn reload_and_wait(&self) -> serde_json::Value {
        reload_and_wait(&self.base, &self.token())
    }

    /// The API bearer token (for `/reload`, `/admin/…`), from the default token file.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// `log` opened for appending (created if missing): a server's standard error.
fn append_to(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// blst signing an oracle case's signing root with the fixture secret, directly: the
/// independent computation a signature over HTTP is compared with.
pub fn blst_signature(case: &serde_json::Value) -> String {
    let mut root = [0u8; 32];
    hex::decode_to_slice(
        case["signing_root"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        &mut root,
    )
    .unwrap();
    blst_signature_of(&root)
}

/// blst signing `root` with the fixture secret, as 0x-hex.
pub fn blst_signature_of(root: &[u8; 32]) -> String {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| signing_fixtures().0);
    let sk = hsm_signer::bls::secret_key(&hex::decode(secret.trim_start_matches("0x")).unwrap())
        .unwrap();
    format!(
        "0x{}",
        hex::encode(hsm_signer::bls::sign(&sk, root).compress())
    )
}

/// Every mainnet-preset oracle case: (fork, case JSON), plus the fixture key's secret.
pub fn signing_fixtures() -> (String, Vec<(String, serde_json::Value)>) {
    signing_fixtures_in("signing")
}

/// Every minimal-preset oracle case, as [`signing_fixtures`]; their network is
/// [`MINIMAL_NETWORK_CONFIG`].
pub fn minimal_signing_fixtures() -> (String, Vec<(String, serde_json::Value)>) {
    signing_fixtures_in("signing/minimal")
}

/// The minimal-preset fixtures' network, for `--network` (relative to `tests/fixtures`).
pub const MINIMAL_NETWORK_CONFIG: &str = "signing/minimal/config.yaml";

/// The oracle cases of the fixture directory `dir` (relative to `tests/fixtures`).
fn signing_fixtures_in(dir: &str) -> (String, Vec<(String, serde_json::Value)>) {
    let mut cases = Vec::new();
    let mut secret = String::new();
    for fork in [
        "phase0",
        "altair",
        "bellatrix",
        "capella",
        "deneb",
        "electra",
        "fulu",
        "gloas",
    ] {
        let text = std::fs::read_to_string(fixture(&format!("{dir}/{fork}.json"))).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        secret = file["secret_key"].as_str().unwrap().to_owned();
        for case in file["cases"].as_array().unwrap() {
            cases.push((fork.to_owned(), case.clone()));
        }
    }
    (secret, cases)
}

/// One HTTP client for the whole test process (a clone shares its connection pool): making one
/// per request costs about 100 ms, enough to make a test that acts at set moments of a one-second
/// slot late.
pub fn http() -> reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client")
        })
        .clone()
}

/// The genesis validators root the request helpers put in every `fork_info`, so that one
/// slashing-protection database serves requests made from every fork's fixtures: mainnet's,
/// whose fork versions the fixtures carry, so that a signer serving mainnet (or a test network
/// with mainnet's versions and this root) accepts them.
pub const TEST_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

/// The request of the first signing fixture of type `kind` that `pred` accepts, with its
/// supplied signing root removed (the signer computes it) and `fork_info` naming
/// [`TEST_GVR`].
pub fn fixture_request(kind: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut req = signing_fixtures()
        .1
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c["type"] == kind && pred(&c["request"]))
        .unwrap()["request"]
        .clone();
    let o = req.as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    req["fork_info"]["genesis_validators_root"] = serde_json::json!(TEST_GVR);
    req
}

/// One request of every type in every fork's shape: the first oracle case of each type in each
/// fork's fixture file, as (fork, type, request). BLOCK_V2 comes as a PHASE0 and an ALTAIR
/// block and as headers from BELLATRIX on, AGGREGATE_AND_PROOF_V2 in the phase0 and the
/// ELECTRA container, and so on.
pub fn request_shapes() -> Vec<(String, String, serde_json::Value)> {
    let mut seen = std::collections::HashSet::new();
    signing_fixtures()
        .1
        .into_iter()
        .filter_map(|(fork, case)| {
            let kind = case["type"].as_str()?.to_owned();
            seen.insert((fork.clone(), kind.clone()))
                .then(|| (fork, kind, case["request"].clone()))
        })
        .collect()
}

/// `request` (a sign request body) made about `duty`: the slot it names, or for RANDAO_REVEAL
/// and VOLUNTARY_EXIT the epoch. An attestation's (or aggregate's) target epoch becomes its
/// slot's epoch and its source the epoch before; `fork_info` gets [`TEST_GVR`]; a supplied
/// signing root is dropped (it no longer matches). Deposits and registrations are unchanged.
pub fn request_at(
    request: &serde_json::Value,
    duty: u64,
    slots_per_epoch: u64,
) -> serde_json::Value {
    use serde_json::json;
    let mut r = request.clone();
    if let Some(obj) = r.as_object_mut() {
        obj.remove("signingRoot");
        obj.remove("signing_root");
    }
    if r.get("fork_info").is_some() {
        r["fork_info"]["genesis_validators_root"] = json!(TEST_GVR);
    }
    let set_data = |data: &mut serde_json::Value| {
        let epoch = duty.checked_div(slots_per_epoch).unwrap_or(0);
        data["slot"] = json!(duty.to_string());
        data["target"]["epoch"] = json!(epoch.to_string());
        data["source"]["epoch"] = json!(epoch.saturating_sub(1).to_string());
    };
    match r["type"].as_str().unwrap_or_default() {
        "AGGREGATION_SLOT" => r["aggregation_slot"]["slot"] = json!(duty.to_string()),
        "AGGREGATE_AND_PROOF" => set_data(&mut r["aggregate_and_proof"]["aggregate"]["data"]),
        "AGGREGATE_AND_PROOF_V2" => {
            set_data(&mut r["aggregate_and_proof"]["data"]["aggregate"]["data"])
        }
        "ATTESTATION" => set_data(&mut r["attestation"]),
        "BLOCK" => r["block"]["slot"] = json!(duty.to_string()),
        "BLOCK_V2" => {
            let bb = &mut r["beacon_block"];
            let field = if bb.get("block").is_some() {
                "block"
            } else {
                "block_header"
            };
            bb[field]["slot"] = json!(duty.to_string());
        }
        "RANDAO_REVEAL" => r["randao_reveal"]["epoch"] = json!(duty.to_string()),
        "VOLUNTARY_EXIT" => r["voluntary_exit"]["epoch"] = json!(duty.to_string()),
        "SYNC_COMMITTEE_MESSAGE" => r["sync_committee_message"]["slot"] = json!(duty.to_string()),
        "SYNC_COMMITTEE_SELECTION_PROOF" => {
            r["sync_aggregator_selection_data"]["slot"] = json!(duty.to_string())
        }
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => {
            r["contribution_and_proof"]["contribution"]["slot"] = json!(duty.to_string())
        }
        "EXECUTION_PAYLOAD_BID" => {
            r["execution_payload_bid"]["data"]["slot"] = json!(duty.to_string())
        }
        "EXECUTION_PAYLOAD_ENVELOPE" => {
            r["execution_payload_envelope"]["data"]["payload"]["slot_number"] =
                json!(duty.to_string())
        }
        "PAYLOAD_ATTESTATION_MESSAGE" => {
            r["payload_attestation_message"]["data"]["slot"] = json!(duty.to_string())
        }
        "PROPOSER_PREFERENCES" => {
            r["proposer_preferences"]["data"]["proposal_slot"] = json!(duty.to_string())
        }
        "BUILDER_REQUEST_AUTH" => {
            r["builder_request_auth"]["data"]["slot"] = json!(duty.to_string())
        }
        _ => {}
    }
    r
}

/// (block slots, attestation target epochs) of an EIP-3076 interchange export (its JSON text).
pub fn recorded_in(export: &str) -> (Vec<u64>, Vec<u64>) {
    let export: serde_json::Value = serde_json::from_str(export).unwrap();
    let numbers = |list: &str, field: &str| -> Vec<u64> {
        export["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|v| v[list].as_array().cloned().unwrap_or_default())
            .map(|x| x[field].as_str().unwrap().parse().unwrap())
            .collect()
    };
    (
        numbers("signed_blocks", "slot"),
        numbers("signed_attestations", "target_epoch"),
    )
}

/// `POST {base}/reload` with the API token `token`, then wait (bounded) until it is no longer
/// running; returns the final `GET /reload` status.
pub fn reload_and_wait(base: &str, token: &str) -> serde_json::Value {
    let http = reqwest::blocking::Client::new();
    let resp = http
        .post(format!("{base}/reload"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["status"],
        "accepted"
    );
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < limit {
        let st: serde_json::Value = http
            .get(format!("{base}/reload"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if st["status"] != "running" {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("reload did not finish");
}

/// The shapes clients send a Gloas request in today besides v1.4.0's (README, "Gloas"): for a
/// v1.4.0 request of the five Gloas types, each alias form as (who sends it, request). Every
/// form carries the same message, so it must sign identically.
pub fn gloas_alias_forms(request: &serde_json::Value) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let kind = request["type"].as_str().unwrap_or_default();
    let key = match kind {
        "EXECUTION_PAYLOAD_BID" => "execution_payload_bid",
        "EXECUTION_PAYLOAD_ENVELOPE" => "execution_payload_envelope",
        "PAYLOAD_ATTESTATION_MESSAGE" => "payload_attestation_message",
        "PROPOSER_PREFERENCES" => "proposer_preferences",
        "BUILDER_REQUEST_AUTH" => "builder_request_auth",
        _ => return Vec::new(),
    };
    let data = request[key]["data"].clone();
    // `base` with the body under `new_key` as `body`, and `type` set to `new_type`.
    let with = |new_type: &str, new_key: &str, body: serde_json::Value| {
        let mut r = request.clone();
        let o = r.as_object_mut().unwrap();
        o.remove(key);
        o.insert("type".into(), json!(new_type));
        o.insert(new_key.into(), body);
        r
    };
    let mut forms = vec![("any client, unwrapped", with(kind, key, data.clone()))];
    match kind {
        "PAYLOAD_ATTESTATION_MESSAGE" => {
            forms.push((
                "Lighthouse (PAYLOAD_ATTESTATION, payload_attestation_data)",
                with(
                    "PAYLOAD_ATTESTATION",
                    "payload_attestation_data",
                    data.clone(),
                ),
            ));
            forms.push((
                "Lodestar before #10071 (PAYLOAD_ATTESTATION, payload_attestation)",
                with("PAYLOAD_ATTESTATION", "payload_attestation", data.clone()),
            ));
            let message = json!({
                "validator_index": "17",
                "data": data,
                "signature": format!("0x{}", "c0".repeat(96)),
            });
            forms.push((
                "a whole PayloadAttestationMessage",
                with(kind, key, message),
            ));
        }
        "BUILDER_REQUEST_AUTH" => {
            forms.push((
                "Lighthouse (REQUEST_AUTH, request_auth)",
                with("REQUEST_AUTH", "request_auth", data.clone()),
            ));
            let mut with_fork_info = with("REQUEST_AUTH", "request_auth", data);
            with_fork_info["fork_info"] = json!({
                "fork": {"previous_version": "0x06000000", "current_version": "0x07000000", "epoch": "1"},
                "genesis_validators_root": TEST_GVR,
            });
            forms.push(("with a fork_info, which it does not use", with_fork_info));
        }
        "PROPOSER_PREFERENCES" => {
            // Lighthouse writes these two as JSON numbers.
            let mut numbers = data.clone();
            for f in ["validator_index", "target_gas_limit", "proposal_slot"] {
                let n: u64 = numbers[f].as_str().unwrap().parse().unwrap();
                numbers[f] = json!(n);
            }
            forms.push(("Lighthouse (numbers, unwrapped)", with(kind, key, numbers)));
        }
        _ => {}
    }
    forms
}

/// The signing root of a mainnet request, as the signer's own code computes it (held to the
/// consensus specs by the oracle fixtures): what a test checks a signature over.
pub fn mainnet_root(body: &serde_json::Value) -> [u8; 32] {
    let mainnet = hsm_signer::consensus::Network::preset("mainnet").unwrap();
    hsm_signer::consensus::SignRequest::from_json(body.to_string().as_bytes(), mainnet.preset)
        .unwrap()
        .signing_root(&mainnet)
        .unwrap()
        .0
}
