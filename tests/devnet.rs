//! A real validator client against the real signer: Lodestar 1.5.1's `lodestar dev` (a beacon
//! node and a validator client in one process, on a devnet of its own, on loopback only) with
//! every validator key in `hsm-signer` (SoftHSM tokens) and none in Lodestar. The chain must
//! propose a block in every slot, finalize, and make every validator richer.
//!
//! Lodestar is installed (once, into a cache folder outside the repository) by
//! `scripts/lodestar.sh`. A recording proxy between Lodestar and the signer logs every request
//! (type, duty slot, when it came, the signer's answer), so that a failure says what the signer
//! refused and why.
//!
//! Environment (all optional):
//! - `HSM_SIGNER_DEVNET_SECONDS_PER_SLOT` (default 2), `HSM_SIGNER_DEVNET_VALIDATORS` (64);
//! - `HSM_SIGNER_DEVNET_SIGNER_ARGS`: extra `serve` arguments, e.g. `--no-slot-deadlines`;
//! - `HSM_SIGNER_DEVNET_NO_BEACON_NODE=1`: no `--beacon-node-url` (no selection-proof precompute);
//! - `HSM_SIGNER_DEVNET_ALTAIR_EPOCH` (default 0);
//! - `HSM_SIGNER_DEVNET_LOCAL_KEYS=1`: a baseline, Lodestar signing with its own interop keys
//!   (the signer runs but is not asked);
//! - `HSM_SIGNER_DEVNET_CONFIG_SET="K=V,…"`: change keys of the signer's config.yaml only;
//! - `HSM_SIGNER_DEVNET_NO_PROXY=1`: Lodestar talks to the signer directly (nothing recorded);
//! - `HSM_SIGNER_DEVNET_KEEP=1`: keep the run's folder (logs, requests, API samples) even when
//!   the test passes (it is always kept when it fails, and its path printed);
//! - `HSM_SIGNER_LODESTAR`: a Lodestar executable to use instead of `scripts/lodestar.sh`'s.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, Signer};
use hsm_signer::keys::eip2335::{KdfChoice, Keystore};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The whole devnet part of a test (from the first Lodestar command to the last check); the
/// installation of Lodestar has its own bounds in `scripts/lodestar.sh`.
const RUN_BUDGET: Duration = Duration::from_secs(10 * 60);

/// What a preset's run looks like.
struct Preset {
    /// `LODESTAR_PRESET`.
    name: &'static str,
    slots_per_epoch: u64,
    /// Stop once the chain has finalized this epoch…
    finalized_target: u64,
    /// …and the wall clock has reached this epoch (minimal: past the first sync committee
    /// period, at epoch 8, so that sync duties change hands once).
    min_epoch: u64,
}

const MAINNET: Preset = Preset {
    name: "mainnet",
    slots_per_epoch: 32,
    finalized_target: 2,
    min_epoch: 0,
};

const MINIMAL: Preset = Preset {
    name: "minimal",
    slots_per_epoch: 8,
    finalized_target: 2,
    min_epoch: 9,
};

#[test]
fn lodestar_devnet_mainnet_preset_signs_only_through_hsm_signer() {
    run_devnet(&MAINNET);
}

#[test]
fn lodestar_devnet_minimal_preset_signs_only_through_hsm_signer() {
    run_devnet(&MINIMAL);
}

// ---------------------------------------------------------------------------------------------
// Interop keys

/// BLS12-381's group order r, little-endian 64-bit limbs.
const CURVE_ORDER: [u64; 4] = [
    0xffff_ffff_0000_0001,
    0x53bd_a402_fffe_5bfe,
    0x3339_d808_09a1_d805,
    0x73ed_a753_299d_7d48,
];

/// The interop secret key of validator `i`, big-endian: `int.from_bytes(sha256(i.to_bytes(32,
/// 'little')), 'little') % r`.
fn interop_secret(i: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    let digest = Sha256::digest(seed);
    let mut x = [0u64; 4];
    for (k, limb) in x.iter_mut().enumerate() {
        *limb = u64::from_le_bytes(digest[8 * k..8 * k + 8].try_into().unwrap());
    }
    // x < 2^256 < 4r: at most three subtractions.
    while !less_than(&x, &CURVE_ORDER) {
        let mut borrow = 0u64;
        for k in 0..4 {
            let (d1, b1) = x[k].overflowing_sub(CURVE_ORDER[k]);
            let (d2, b2) = d1.overflowing_sub(borrow);
            x[k] = d2;
            borrow = u64::from(b1 || b2);
        }
    }
    let mut out = [0u8; 32];
    for k in 0..4 {
        out[32 - 8 * (k + 1)..32 - 8 * k].copy_from_slice(&x[k].to_be_bytes());
    }
    out
}

fn less_than(a: &[u64; 4], b: &[u64; 4]) -> bool {
    for k in (0..4).rev() {
        if a[k] != b[k] {
            return a[k] < b[k];
        }
    }
    false
}

fn interop_pubkey(i: u64) -> String {
    let sk = hsm_signer::bls::secret_key(&interop_secret(i)).unwrap();
    format!("0x{}", hex::encode(hsm_signer::bls::public_key_bytes(&sk)))
}

#[test]
fn interop_keys_are_the_known_ones() {
    // Validator 0's and 1's, as Lodestar's own `lodestar dev` prints them (and the interop spec
    // lists them).
    assert_eq!(
        interop_pubkey(0),
        "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c"
    );
    assert_eq!(
        interop_pubkey(1),
        "0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b"
    );
}

/// EIP-2335 keystores of interop keys `0..n` (cheap PBKDF2), written to `dir`.
fn write_interop_keystores(dir: &Path, range: std::ops::Range<u64>, password: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let pw = secrecy::SecretString::from(password.to_owned());
    for i in range {
        let ks = Keystore::encrypt(
            &interop_secret(i),
            &pw,
            KdfChoice::Pbkdf2 { c: 16 },
            Some(interop_pubkey(i)),
            "",
        )
        .unwrap();
        std::fs::write(dir.join(format!("keystore-{i:04}.json")), ks.to_json()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Lodestar's executable: `HSM_SIGNER_LODESTAR`, else the last line `scripts/lodestar.sh` prints.
fn lodestar_executable() -> PathBuf {
    if let Ok(p) = std::env::var("HSM_SIGNER_LODESTAR") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lodestar.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/lodestar.sh");
    assert!(
        out.status.success(),
        "scripts/lodestar.sh failed ({})",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
    assert!(path.is_file(), "scripts/lodestar.sh printed {stdout:?}");
    println!(
        "lodestar: {} (located in {:.1} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    path
}

/// Child processes in process groups of their own, killed (the whole group) on drop, panics
/// included; and the run folder, kept when the test fails.
struct Guard {
    pids: Arc<Mutex<Vec<i32>>>,
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Guard {
    fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn adopt(&self, child: &std::process::Child) {
        self.pids.lock().unwrap().push(child.id() as i32);
    }
}

fn kill_groups(pids: &Mutex<Vec<i32>>) {
    for pid in pids.lock().unwrap().drain(..) {
        // SAFETY: plain signal delivery to a process group we created.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        kill_groups(&self.pids);
        if let Some(dir) = self.dir.take() {
            if self.keep || std::thread::panicking() {
                let path = dir.keep();
                eprintln!("devnet run folder kept: {}", path.display());
            }
        }
    }
}

/// User + system CPU time of a live process so far (its threads included, not its children).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) closed by ')': state is field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port nobody listens on, never one this process handed out before: the kernel
/// may give the port just closed to the next `bind(0)`, and Lodestar's REST and p2p ports
/// were once the same (CI, stop 24), so Lodestar exited before it answered.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 1000 tries");
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The recording proxy between Lodestar and the signer

/// One signing request as the proxy saw it.
#[derive(Clone, Debug)]
struct Recorded {
    /// Unix time the request arrived.
    at: f64,
    /// Unix time the answer went back.
    done: f64,
    kind: String,
    /// The key it was for (0x…, lower case).
    pubkey: String,
    /// The slot of the duty (an epoch's first slot for RANDAO_REVEAL).
    duty_slot: Option<u64>,
    /// For RANDAO_REVEAL, the epoch.
    epoch: Option<u64>,
    status: u16,
    /// The error body, for an answer that is not 200.
    message: String,
}

/// The first request of each (type, status) and its answer, as JSON.
type Samples = Arc<Mutex<BTreeMap<(String, u16), Value>>>;

struct Proxy {
    base: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    samples: Samples,
    _runtime: tokio::runtime::Runtime,
}

fn duty_of(body: &Value, slots_per_epoch: u64) -> (Option<u64>, Option<u64>) {
    let num = |v: &Value| -> Option<u64> {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_u64())
    };
    let kind = body["type"].as_str().unwrap_or("");
    let slot = match kind {
        "AGGREGATION_SLOT" => num(&body["aggregation_slot"]["slot"]),
        "ATTESTATION" => num(&body["attestation"]["slot"]),
        "AGGREGATE_AND_PROOF" | "AGGREGATE_AND_PROOF_V2" => {
            num(&body["aggregate_and_proof"]["aggregate"]["data"]["slot"])
        }
        "BLOCK_V2" | "BLOCK" => num(&body["beacon_block"]["block"]["slot"])
            .or_else(|| num(&body["beacon_block"]["block_header"]["slot"]))
            .or_else(|| num(&body["block"]["slot"])),
        "SYNC_COMMITTEE_MESSAGE" => num(&body["sync_committee_message"]["slot"]),
        "SYNC_COMMITTEE_SELECTION_PROOF" => num(&body["sync_aggregator_selection_data"]["slot"]),
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => {
            num(&body["contribution_and_proof"]["contribution"]["slot"])
        }
        _ => None,
    };
    if kind == "RANDAO_REVEAL" {
        let epoch = num(&body["randao_reveal"]["epoch"]);
        return (epoch.map(|e| e * slots_per_epoch), epoch);
    }
    (slot, None)
}

impl Proxy {
    fn start(upstream: &str, slots_per_epoch: u64) -> Proxy {
        use axum::body::Body;
        use axum::extract::{Request, State};
        use axum::response::Response;

        #[derive(Clone)]
        struct Ctx {
            upstream: String,
            client: reqwest::Client,
            log: Arc<Mutex<Vec<Recorded>>>,
            samples: Samples,
            slots_per_epoch: u64,
        }

        async fn forward(State(ctx): State<Ctx>, req: Request) -> Response {
            let at = now_unix();
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 8 << 20)
                .await
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let mut rb = ctx
                .client
                .request(parts.method.clone(), format!("{}{path}", ctx.upstream))
                .body(bytes.to_vec());
            for h in ["content-type", "accept", "authorization"] {
                if let Some(v) = parts.headers.get(h) {
                    rb = rb.header(h, v.clone());
                }
            }
            let (status, ctype, answer) = match rb.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let ctype = r.headers().get("content-type").cloned();
                    (status, ctype, r.bytes().await.unwrap_or_default().to_vec())
                }
                Err(e) => (502, None, format!("proxy: {e}").into_bytes()),
            };
            if path.starts_with("/api/v1/eth2/sign/") {
                let req: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (duty_slot, epoch) = duty_of(&req, ctx.slots_per_epoch);
                let message = if status == 200 {
                    String::new()
                } else {
                    serde_json::from_slice::<Value>(&answer)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned())
                };
                let kind = req["type"].as_str().unwrap_or("?").to_owned();
                ctx.samples
                    .lock()
                    .unwrap()
                    .entry((kind, status))
                    .or_insert_with(|| {
                        serde_json::json!({
                            "path": path,
                            "request": req,
                            "status": status,
                            "response": serde_json::from_slice::<Value>(&answer)
                                .unwrap_or_else(|_| {
                                    Value::String(String::from_utf8_lossy(&answer).into_owned())
                                }),
                        })
                    });
                ctx.log.lock().unwrap().push(Recorded {
                    at,
                    done: now_unix(),
                    kind: req["type"].as_str().unwrap_or("?").to_owned(),
                    pubkey: path.trim_start_matches("/api/v1/eth2/sign/").to_lowercase(),
                    duty_slot,
                    epoch,
                    status,
                    message,
                });
            }
            let mut resp = Response::builder().status(status);
            if let Some(c) = ctype {
                resp = resp.header("content-type", c);
            }
            resp.body(Body::from(answer)).unwrap()
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let samples: Samples = Arc::new(Mutex::new(BTreeMap::new()));
        let ctx = Ctx {
            samples: samples.clone(),
            upstream: upstream.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            log: log.clone(),
            slots_per_epoch,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(ctx);
        runtime.spawn(async move { axum::serve(listener, app).await });
        Proxy {
            base,
            log,
            samples,
            _runtime: runtime,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The beacon node's REST API

struct Beacon {
    base: String,
    http: reqwest::blocking::Client,
}

impl Beacon {
    fn get(&self, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status();
        let text = r.text().map_err(|e| format!("GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))
    }

    /// `None` for a 404 (no block at that slot).
    fn get_opt(&self, path: &str) -> Result<Option<Value>, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = r.status();
        let text = r.text().map_err(|e| format!("GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {text}"));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("GET {path}: {e}: {text}"))
    }
}

fn num(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Bits set in an SSZ bitvector given as 0x-hex.
fn popcount_hex(s: &str) -> (u32, u32) {
    let bytes = hex::decode(s.trim_start_matches("0x")).unwrap();
    (
        bytes.iter().map(|b| b.count_ones()).sum(),
        8 * bytes.len() as u32,
    )
}

// ---------------------------------------------------------------------------------------------
// The run

fn run_devnet(preset: &Preset) {
    let seconds_per_slot = env_u64("HSM_SIGNER_DEVNET_SECONDS_PER_SLOT", 2);
    let validators = env_u64("HSM_SIGNER_DEVNET_VALIDATORS", 64);
    let altair_epoch = env_u64("HSM_SIGNER_DEVNET_ALTAIR_EPOCH", 0);
    let local_keys = std::env::var_os("HSM_SIGNER_DEVNET_LOCAL_KEYS").is_some();
    let lodestar = lodestar_executable();
    let started = Instant::now();
    let hard_limit = started + RUN_BUDGET;

    let guard = Guard {
        pids: Arc::new(Mutex::new(Vec::new())),
        dir: Some(
            tempfile::Builder::new()
                .prefix(&format!("hsm-signer-devnet-{}-", preset.name))
                .tempdir()
                .unwrap(),
        ),
        keep: std::env::var_os("HSM_SIGNER_DEVNET_KEEP").is_some(),
    };
    let run = guard.path().to_owned();
    println!("devnet run folder: {}", run.display());
    // A watchdog: past the budget (and a minute's grace for the checks), every child dies, so
    // that whatever waits on them fails at once.
    {
        let pids = guard.pids.clone();
        std::thread::spawn(move || {
            std::thread::sleep(RUN_BUDGET + Duration::from_secs(60));
            eprintln!("devnet watchdog: over budget, killing the devnet");
            kill_groups(&pids);
        });
    }

    let rest_port = free_port();
    let p2p_port = free_port();
    let beacon_url = format!("http://127.0.0.1:{rest_port}");
    let config_name = "hsm-signer-devnet";

    // 1. The chain configuration as Lodestar itself writes it (`--dumpTestnetFiles`, with the
    //    same parameters as the run), with genesis fixed ahead of time below.
    let params = |genesis: Option<u64>| -> Vec<String> {
        let mut p = vec![
            "--params.SECONDS_PER_SLOT".to_owned(),
            seconds_per_slot.to_string(),
            "--params.ALTAIR_FORK_EPOCH".to_owned(),
            altair_epoch.to_string(),
            "--params.CONFIG_NAME".to_owned(),
            config_name.to_owned(),
        ];
        if let Some(t) = genesis {
            p.extend([
                "--params.MIN_GENESIS_TIME".to_owned(),
                t.to_string(),
                "--params.GENESIS_DELAY".to_owned(),
                "0".to_owned(),
            ]);
        }
        p
    };
    let lodestar_cmd = |args: &[String], log: &str| -> Command {
        let mut c = Command::new(&lodestar);
        c.env("LODESTAR_PRESET", preset.name)
            .current_dir(&run)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(run.join(log)).unwrap())
            .stderr(std::fs::File::create(run.join(format!("{log}.stderr"))).unwrap());
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        // Dies with the test's thread, whatever ends it (nextest's timeout kills the test's
        // process group, which this child has left).
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    };
    let dump = run.join("testnet-files");
    let mut dump_args = vec![
        "dev".to_owned(),
        "--dataDir".to_owned(),
        run.join("dump-data").display().to_string(),
        "--dumpTestnetFiles".to_owned(),
        dump.display().to_string(),
        "--genesisValidators".to_owned(),
        "1".to_owned(),
    ];
    dump_args.extend(params(None));
    let t = Instant::now();
    let mut child = lodestar_cmd(&dump_args, "lodestar-dump.log")
        .spawn()
        .unwrap();
    guard.adopt(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success() && dump.join("config.yaml").is_file(),
        "lodestar dev --dumpTestnetFiles failed ({status}); see {}",
        run.join("lodestar-dump.log.stderr").display()
    );
    println!(
        "lodestar config dumped in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. The signer: three SoftHSM tokens. Whole keys on the second and third, the last
    //    `threshold_keys` validators as 2-of-3 threshold keys over all three, so that the first
    //    token holds shares only and can be taken out of service while the chain runs.
    let signer = Signer::new();
    signer.ok(&["device", "init"]);
    let threshold_keys = env_u64("HSM_SIGNER_DEVNET_THRESHOLD_KEYS", 8).min(validators);
    let whole = validators - threshold_keys;
    let (d1, d2, d3) = (common::device(1), common::device(2), common::device(3));
    let all_three = format!("{d1},{d2},{d3}");
    let password_file = run.join("password.txt");
    std::fs::write(&password_file, "devnet").unwrap();
    let placements: [(std::ops::Range<u64>, Vec<&str>); 3] = [
        (0..whole / 2, vec!["--device", &d2]),
        (whole / 2..whole, vec!["--device", &d3]),
        (
            whole..validators,
            vec!["--threshold", "2", "--devices", &all_three],
        ),
    ];
    let t = Instant::now();
    for (k, (range, placement)) in placements.iter().enumerate() {
        if range.is_empty() {
            continue;
        }
        let dir = run.join(format!("keystores-{k}"));
        write_interop_keystores(&dir, range.clone(), "devnet");
        let mut args = vec![
            "keys",
            "import",
            "--keystore",
            dir.to_str().unwrap(),
            "--password-file",
            password_file.to_str().unwrap(),
        ];
        args.extend(placement.iter().copied());
        let out = signer.ok(&args);
        println!(
            "validators {range:?} imported ({}): {}",
            placement.join(" "),
            out.lines().last().unwrap_or("")
        );
    }
    println!(
        "{validators} interop keys imported in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let threshold_pubkeys: Vec<String> = (whole..validators).map(interop_pubkey).collect();

    // Genesis far enough ahead for the signer and Lodestar to start (Lodestar takes 10-30 s to
    // load on a busy 2-core machine).
    let genesis_time = now_unix() as u64 + 50;
    let config_text = std::fs::read_to_string(dump.join("config.yaml")).unwrap();
    let mut config = String::new();
    for line in config_text.lines() {
        let key = line.split(':').next().unwrap_or("");
        match key {
            "MIN_GENESIS_TIME" => writeln!(config, "MIN_GENESIS_TIME: {genesis_time}").unwrap(),
            "GENESIS_DELAY" => writeln!(config, "GENESIS_DELAY: 0").unwrap(),
            _ => writeln!(config, "{line}").unwrap(),
        }
    }
    // Diagnostics only: `HSM_SIGNER_DEVNET_CONFIG_SET="PRESET_BASE=mainnet,SLOTS_PER_EPOCH=8"`
    // changes (or adds) keys of the signer's copy, e.g. to get past a refusal and see what
    // breaks next. Those keys are left out of the comparison with the node's spec.
    std::fs::write(run.join("lodestar-config.yaml"), &config).unwrap();
    let mut edited = Vec::new();
    if let Ok(set) = std::env::var("HSM_SIGNER_DEVNET_CONFIG_SET") {
        for kv in set.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            let mut found = false;
            config = config
                .lines()
                .map(|l| {
                    if l.split(':').next() == Some(k) {
                        found = true;
                        format!("{k}: {v}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            if !found {
                writeln!(config, "{k}: {v}").unwrap();
            }
            edited.push(k.to_owned());
            println!("signer's config.yaml edited: {k}: {v}");
        }
    }
    let config_path = run.join("config.yaml");
    std::fs::write(&config_path, &config).unwrap();

    // The signer starts once the beacon node answers (its root comes from the node) and
    // listens on a port fixed now, so that a restarted signer is where the proxy (and so
    // Lodestar) expects it.
    let signer_port = free_port();
    let signer_listen = format!("127.0.0.1:{signer_port}");
    let mut serve_args: Vec<String> =
        vec!["--network".to_owned(), config_path.display().to_string()];
    if std::env::var_os("HSM_SIGNER_DEVNET_NO_BEACON_NODE").is_none() {
        serve_args.extend(["--beacon-node-url".to_owned(), beacon_url.clone()]);
    }
    if let Ok(extra) = std::env::var("HSM_SIGNER_DEVNET_SIGNER_ARGS") {
        serve_args.extend(extra.split_whitespace().map(str::to_owned));
    }
    let rust_log = std::env::var("HSM_SIGNER_DEVNET_RUST_LOG").unwrap_or_else(|_| "info".into());
    let signer_log = run.join("signer.log");
    let start_signer = |serve_args: &[String]| -> Server {
        let args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        // The signer refusing the configuration is the first thing that can go wrong: say so
        // with its own words rather than with the harness's "unexpected first line".
        let server = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Server::start_on_appending_to(
                &signer,
                &signer_listen,
                &args,
                &signer_log,
                &[("RUST_LOG", &rust_log)],
            )
        }));
        match server {
            Ok(s) => {
                guard.pids.lock().unwrap().push(s.child.id() as i32);
                s
            }
            Err(_) => panic!(
                "hsm-signer serve {} did not start:\n{}",
                serve_args.join(" "),
                tail(&signer_log, 40)
            ),
        }
    };
    let proxy = Proxy::start(&format!("http://{signer_listen}"), preset.slots_per_epoch);

    // 3. `lodestar dev`: beacon node + validator client, every validator on the external signer.
    let mut dev_args: Vec<String> = [
        "dev",
        "--dataDir",
        run.join("lodestar-data").to_str().unwrap(),
        "--genesisValidators",
        &validators.to_string(),
        "--startValidators",
        &format!("0..{}", validators - 1),
        "--genesisTime",
        &genesis_time.to_string(),
        "--rest.address",
        "127.0.0.1",
        "--rest.port",
        &rest_port.to_string(),
        "--server",
        &beacon_url,
        "--listenAddress",
        "127.0.0.1",
        "--port",
        &p2p_port.to_string(),
        "--discv5",
        "false",
        "--logLevel",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if local_keys {
        println!("BASELINE: Lodestar signs with its own interop keys; the signer is not used");
    } else {
        // `HSM_SIGNER_DEVNET_NO_PROXY=1`: straight to the signer (nothing recorded), to see
        // what the proxy costs.
        let url = if std::env::var_os("HSM_SIGNER_DEVNET_NO_PROXY").is_some() {
            println!("no recording proxy: Lodestar talks to the signer directly");
            format!("http://{signer_listen}")
        } else {
            proxy.base.clone()
        };
        // The keys are named rather than fetched: the signer starts after the node.
        dev_args.extend([
            "--externalSigner.url".to_owned(),
            url,
            "--externalSigner.pubkeys".to_owned(),
            (0..validators)
                .map(interop_pubkey)
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    dev_args.extend(params(Some(genesis_time)));
    println!(
        "LODESTAR_PRESET={} lodestar {}",
        preset.name,
        dev_args.join(" ")
    );
    let mut dev = lodestar_cmd(&dev_args, "lodestar.log").spawn().unwrap();
    guard.adopt(&dev);

    let beacon = Beacon {
        base: beacon_url.clone(),
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    };
    let up = loop {
        if let Ok(v) = beacon.get("/eth/v1/node/version") {
            break v;
        }
        assert!(
            Instant::now() < hard_limit,
            "the beacon node never answered"
        );
        if let Some(status) = dev.try_wait().unwrap() {
            panic!(
                "lodestar dev exited ({status}) before its REST API answered:\n{}",
                tail(&run.join("lodestar.log"), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let lead = genesis_time as f64 - now_unix();
    println!(
        "beacon node up ({}), {lead:.1} s before genesis",
        up["data"]["version"]
    );
    if std::env::var_os("HSM_SIGNER_DEVNET_NO_BEACON_NODE").is_some() {
        // Without a beacon node the operator gives the root.
        let g = beacon.get("/eth/v1/beacon/genesis").unwrap();
        serve_args.extend([
            "--genesis-validators-root".to_owned(),
            g["data"]["genesis_validators_root"]
                .as_str()
                .unwrap()
                .to_owned(),
        ]);
    }
    println!("hsm-signer serve {}", serve_args.join(" "));
    let t = Instant::now();
    let mut server = start_signer(&serve_args);
    let first_ready = now_unix();
    println!(
        "signer up in {:.1} s (network confirmed by the beacon node), {:.1} s before genesis",
        t.elapsed().as_secs_f64(),
        genesis_time as f64 - now_unix()
    );

    // The API's view of the chain, for the record (and for others' unit tests).
    let samples = run.join("api");
    std::fs::create_dir_all(&samples).unwrap();
    let genesis = beacon.get("/eth/v1/beacon/genesis").unwrap();
    let spec = beacon.get("/eth/v1/config/spec").unwrap();
    let forks = beacon.get("/eth/v1/config/fork_schedule").unwrap();
    for (name, v) in [
        ("genesis.json", &genesis),
        ("spec.json", &spec),
        ("fork_schedule.json", &forks),
    ] {
        std::fs::write(
            samples.join(name),
            serde_json::to_string_pretty(v).unwrap() + "\n",
        )
        .unwrap();
    }
    std::fs::copy(
        run.join("lodestar-config.yaml"),
        samples.join("config.yaml"),
    )
    .unwrap();
    assert_eq!(num(&genesis["data"]["genesis_time"]), genesis_time);
    // Every value of the signer's config.yaml is the node's.
    for line in config.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().trim_matches('\'').trim_matches('"');
        if edited.iter().any(|e| e == k.trim()) {
            continue;
        }
        if let Some(node) = spec["data"][k.trim()].as_str() {
            assert_eq!(
                node.to_lowercase(),
                v.to_lowercase(),
                "config.yaml's {k} is not the beacon node's"
            );
        }
    }
    assert_eq!(
        num(&spec["data"]["SLOTS_PER_EPOCH"]),
        preset.slots_per_epoch
    );

    // Lodestar's validators are our keys, in order.
    let state_validators = beacon.get("/eth/v1/beacon/states/head/validators").unwrap();
    let list = state_validators["data"].as_array().unwrap();
    assert_eq!(list.len() as u64, validators);
    let mut initial_balance = BTreeMap::new();
    for v in list {
        let i = num(&v["index"]);
        assert_eq!(
            v["validator"]["pubkey"].as_str().unwrap(),
            interop_pubkey(i),
            "validator {i}'s pubkey"
        );
        initial_balance.insert(i, num(&v["balance"]));
    }
    println!("the beacon node's {validators} validators are the signer's interop keys");

    // 4. Let the chain run. On the way: after the first epoch, a snapshot of the precompute's
    //    figures; early in epoch 1 the first token (threshold shares only) is taken out of
    //    service for half an epoch (`POST /admin/devices/{name}`); early in epoch 2, right after
    //    a block, the signer is killed (SIGKILL) and started again.
    let spe = preset.slots_per_epoch;
    let toggle_off_slot = spe + 2;
    let toggle_on_slot = toggle_off_slot + (spe / 2).max(3);
    let kill_slot = 2 * spe + 3;
    let http = common::http();
    let d1_ops =
        |server: &Server| server.metric(&format!("signer_device_operations{{device=\"{d1}\"}}"));
    let set_device = |server: &Server, enabled: bool| {
        let resp = http
            .post(server.url(&format!("/admin/devices/{d1}")))
            .bearer_auth(server.token())
            .json(&serde_json::json!({ "enabled": enabled }))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "POST /admin/devices/{d1}");
    };
    // hits + joined, misses
    let served = |server: &Server| {
        (
            server.metric("signer_selection_proof_cache_hits_total")
                + server.metric("signer_selection_proof_cache_joined_total"),
            server.metric("signer_selection_proof_cache_misses_total"),
        )
    };
    let mut after_first_epoch: Option<(f64, (f64, f64))> = None;
    // (time, the token's operations so far) when it went out of service, and when it came back.
    let mut toggle_off: Option<(f64, f64)> = None;
    let mut toggle_on: Option<(f64, f64)> = None;
    let mut served_before_kill: Option<(f64, f64)> = None;
    let mut outage: Option<(f64, f64)> = None;
    let slot_now = |t: f64| ((t - genesis_time as f64) / seconds_per_slot as f64).floor();
    let mut last_report = -1.0;
    let mut finalized = 0;
    let mut head_slot = 0;
    let stop_reason;
    loop {
        let t = now_unix();
        let slot = slot_now(t);
        let epoch = (slot.max(0.0) as u64) / preset.slots_per_epoch;
        if after_first_epoch.is_none() && slot >= spe as f64 {
            after_first_epoch = Some((now_unix(), served(&server)));
        }
        if toggle_off.is_none() && slot >= toggle_off_slot as f64 {
            let ops = d1_ops(&server);
            set_device(&server, false);
            println!("[slot {slot}] {d1} taken out of service ({ops} operations so far)");
            toggle_off = Some((now_unix(), ops));
        }
        if toggle_on.is_none() && slot >= toggle_on_slot as f64 {
            let ops = d1_ops(&server);
            set_device(&server, true);
            println!("[slot {slot}] {d1} back in service ({ops} operations so far)");
            toggle_on = Some((now_unix(), ops));
        }
        if outage.is_none() && slot >= kill_slot as f64 {
            // Right after a block is in (the next proposal is a slot away): the block of this
            // slot, or if it has not come by 60 % of the slot, of the next.
            let mut k = slot as u64;
            loop {
                let start = genesis_time as f64 + (k * seconds_per_slot) as f64;
                let give_up = start + 0.6 * seconds_per_slot as f64;
                let head = beacon
                    .get("/eth/v1/beacon/headers/head")
                    .map(|h| num(&h["data"]["header"]["message"]["slot"]))
                    .unwrap_or(0);
                if head >= k && now_unix() < give_up {
                    break;
                }
                if now_unix() >= give_up {
                    k += 1;
                    let next = genesis_time as f64 + (k * seconds_per_slot) as f64;
                    std::thread::sleep(Duration::from_secs_f64((next - now_unix()).max(0.0)));
                    continue;
                }
                // Not too often: the node is also the validator client's.
                std::thread::sleep(Duration::from_millis(100));
            }
            served_before_kill = Some(served(&server));
            let killed = now_unix();
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            server = start_signer(&serve_args);
            let ready = now_unix();
            println!(
                "[slot {}] signer killed (SIGKILL) {:.2} s into slot {k}, after its block, and \
                 serving again {:.2} s later",
                slot_now(ready),
                killed - genesis_time as f64 - (k * seconds_per_slot) as f64,
                ready - killed
            );
            outage = Some((killed, ready));
        }
        if let Ok(f) = beacon.get("/eth/v1/beacon/states/head/finality_checkpoints") {
            finalized = num(&f["data"]["finalized"]["epoch"]);
        }
        if slot >= 0.0 && slot - last_report >= preset.slots_per_epoch as f64 / 2.0 {
            last_report = slot;
            let head = beacon
                .get("/eth/v1/beacon/headers/head")
                .map(|h| num(&h["data"]["header"]["message"]["slot"]).to_string())
                .unwrap_or_else(|e| e);
            let log = proxy.log.lock().unwrap();
            let refused = log.iter().filter(|r| r.status != 200).count();
            println!(
                "[{:>6.1} s] slot {slot} (epoch {epoch}), head {head}, finalized epoch {finalized}; \
                 {} signing requests, {refused} refused",
                Instant::now().duration_since(started).as_secs_f64(),
                log.len()
            );
        }
        if let Some(status) = dev.try_wait().unwrap() {
            panic!(
                "lodestar dev exited ({status}):\n{}",
                tail(&run.join("lodestar.log"), 30)
            );
        }
        if let Ok(h) = beacon.get("/eth/v1/beacon/headers/head") {
            head_slot = num(&h["data"]["header"]["message"]["slot"]);
        }
        // No block for two epochs: the chain is stuck (its node then says it is syncing and
        // its validators stop); waiting longer shows nothing new.
        if slot >= (3 * preset.slots_per_epoch) as f64
            && slot - head_slot as f64 > (2 * preset.slots_per_epoch) as f64
        {
            stop_reason = format!("chain stalled: head at slot {head_slot}");
            break;
        }
        if finalized >= preset.finalized_target
            && epoch >= preset.min_epoch
            && outage.is_some()
            && slot > (kill_slot + spe) as f64
        {
            stop_reason = format!("finalized epoch {finalized}");
            break;
        }
        if Instant::now() + Duration::from_secs(40) > hard_limit {
            stop_reason = format!("time budget spent (finalized epoch {finalized})");
            break;
        }
        std::thread::sleep(Duration::from_secs(seconds_per_slot).min(Duration::from_secs(2)));
    }
    let end_time = now_unix();
    let cpu = format!(
        "CPU seconds: lodestar {:.0}, hsm-signer {:.0}, this test (proxy) {:.0}",
        cpu_seconds(dev.id()),
        cpu_seconds(server.child.id()),
        cpu_seconds(std::process::id())
    );
    // Every slot that has wholly passed must hold a block.
    let last_slot = slot_now(end_time) as u64 - 1;
    println!("stopped at slot {}: {stop_reason}", last_slot + 1);

    // 5. Checks through the beacon node's API.
    let mut missing = Vec::new();
    let mut sync_bits = (0u64, 0u64);
    // (slot, proposer, block root) of every block, for the slashing-protection check.
    let mut blocks = Vec::new();
    let mut attestations_in_blocks = 0usize;
    for slot in 1..=last_slot {
        match beacon.get_opt(&format!("/eth/v2/beacon/blocks/{slot}")) {
            Ok(Some(b)) => {
                let msg = &b["data"]["message"];
                assert_eq!(num(&msg["slot"]), slot);
                let header = beacon
                    .get(&format!("/eth/v1/beacon/headers/{slot}"))
                    .unwrap();
                blocks.push((
                    slot,
                    num(&msg["proposer_index"]),
                    root32(header["data"]["root"].as_str().unwrap()),
                ));
                attestations_in_blocks +=
                    msg["body"]["attestations"].as_array().map_or(0, Vec::len);
                if let Some(bits) = msg["body"]["sync_aggregate"]["sync_committee_bits"].as_str() {
                    let (set, all) = popcount_hex(bits);
                    sync_bits.0 += u64::from(set);
                    sync_bits.1 += u64::from(all);
                }
            }
            Ok(None) => missing.push(slot),
            Err(e) => panic!("{e}"),
        }
    }
    let finality = beacon
        .get("/eth/v1/beacon/states/head/finality_checkpoints")
        .unwrap();
    let finalized = num(&finality["data"]["finalized"]["epoch"]);
    let justified = num(&finality["data"]["current_justified"]["epoch"]);
    let balances = beacon
        .get("/eth/v1/beacon/states/head/validator_balances")
        .unwrap();
    let mut not_richer = Vec::new();
    let mut gained = Vec::new();
    for b in balances["data"].as_array().unwrap() {
        let i = num(&b["index"]);
        let now = num(&b["balance"]);
        let before = initial_balance[&i];
        if now <= before {
            not_richer.push(format!("{i}: {before} -> {now}"));
        }
        gained.push(now as i64 - before as i64);
    }
    gained.sort_unstable();
    let metrics: Vec<(&str, f64)> = [
        "signer_selection_proof_cache_hits_total",
        "signer_selection_proof_cache_misses_total",
        "signer_selection_proofs_precomputed_total",
        "signer_selection_proofs_missed_deadline_total",
        "signer_selection_proofs_dropped_reorg_total",
        "signer_beacon_node_errors_total",
        "signer_selection_proof_cache_entries",
    ]
    .into_iter()
    .map(|m| (m, server.metric(m)))
    .collect();
    let served_at_end = served(&server);
    std::fs::write(
        run.join("metrics.txt"),
        reqwest::blocking::get(server.url("/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default(),
    )
    .unwrap();

    // 6. What the signer was asked, when, and what it answered.
    let recorded = proxy.log.lock().unwrap().clone();
    let report = request_report(
        &recorded,
        genesis_time as f64,
        seconds_per_slot as f64,
        preset.slots_per_epoch,
    );
    let mut lines = String::new();
    for r in &recorded {
        writeln!(
            lines,
            "{:.3} {:.3} {} {:?} {:?} {} {}",
            r.at - genesis_time as f64,
            r.done - r.at,
            r.kind,
            r.duty_slot,
            r.epoch,
            r.status,
            r.message
        )
        .unwrap();
    }
    std::fs::write(run.join("requests.txt"), lines).unwrap();
    let sample_dir = samples.join("signing");
    std::fs::create_dir_all(&sample_dir).unwrap();
    for ((kind, status), v) in proxy.samples.lock().unwrap().iter() {
        std::fs::write(
            sample_dir.join(format!("{kind}-{status}.json")),
            serde_json::to_string_pretty(v).unwrap() + "\n",
        )
        .unwrap();
    }

    let summary = format!(
        "== devnet {} preset: {validators} validators, {seconds_per_slot} s slots, {} slots per epoch\n\
         run: {:.0} s; stopped at slot {} ({stop_reason})\n\
         blocks: {} of {last_slot} slots since genesis; missing: {missing:?}\n\
         finalized epoch {finalized}, current justified epoch {justified}\n\
         sync committee participation in blocks: {:.1} % ({} of {} bits)\n\
         balances: {} of {validators} validators richer; gains (Gwei) min {} median {} max {}\n\
         {cpu}\n\
         signer metrics: {}\n\
         {report}",
        preset.name,
        preset.slots_per_epoch,
        started.elapsed().as_secs_f64(),
        last_slot + 1,
        last_slot - missing.len() as u64,
        if sync_bits.1 > 0 {
            100.0 * sync_bits.0 as f64 / sync_bits.1 as f64
        } else {
            0.0
        },
        sync_bits.0,
        sync_bits.1,
        validators - not_richer.len() as u64,
        gained.first().unwrap_or(&0),
        gained.get(gained.len() / 2).unwrap_or(&0),
        gained.last().unwrap_or(&0),
        metrics
            .iter()
            .map(|(m, v)| format!("{m}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!("{summary}");
    std::fs::write(run.join("summary.txt"), &summary).unwrap();

    // 7. The verdict.
    // Requests that found no signer, which the proxy answers 502: before it first started
    // (Lodestar starts first and fetches its first duties, and so signs its first selection
    // proofs, at once), and from shortly before the kill (in flight) until it served again.
    let (killed_at, ready_at) = outage.expect("the signer was killed and restarted during the run");
    let in_outage = |r: &Recorded| {
        r.status == 502 && (r.at <= first_ready || (r.at >= killed_at - 3.0 && r.at <= ready_at))
    };
    let lost_in_outage = recorded.iter().filter(|r| in_outage(r)).count();
    let refused: Vec<&Recorded> = recorded
        .iter()
        .filter(|r| r.status != 200 && !in_outage(r))
        .collect();
    let signed = |kind: &str| {
        recorded
            .iter()
            .filter(|r| r.kind == kind && r.status == 200)
            .count()
    };

    // Precompute: after the first epoch, the client's selection-proof requests answered from
    // the cache or joined to a precompute under way (the metrics of both signer processes).
    let (first_epoch_over, served_first) = after_first_epoch.expect("the first epoch ended");
    let served_killed = served_before_kill.expect("killed");
    let precompute_served = (served_killed.0 - served_first.0) + served_at_end.0;
    let precompute_missed = (served_killed.1 - served_first.1) + served_at_end.1;
    let asked_after_first_epoch = recorded
        .iter()
        .filter(|r| {
            r.at >= first_epoch_over
                && r.status == 200
                && (r.kind == "AGGREGATION_SLOT" || r.kind == "SYNC_COMMITTEE_SELECTION_PROOF")
        })
        .count();
    let precompute_share = precompute_served / asked_after_first_epoch.max(1) as f64;

    // The token toggle: the threshold keys signed all the while, and the token did nothing.
    let ((off_at, ops_off), (on_at, ops_on)) = (
        toggle_off.expect("the token was taken out of service"),
        toggle_on.expect("the token was brought back"),
    );
    let threshold_in_window: Vec<&Recorded> = recorded
        .iter()
        .filter(|r| r.at >= off_at && r.at <= on_at && threshold_pubkeys.contains(&r.pubkey))
        .collect();
    let threshold_refused_in_window = threshold_in_window
        .iter()
        .filter(|r| r.status != 200)
        .count();

    let figures = format!(
        "precompute after the first epoch: {precompute_served} of {asked_after_first_epoch} \
         selection-proof requests answered from the cache or joined ({:.1} %), {precompute_missed} \
         signed live\n\
         token {d1} out of service for {:.1} s: {} threshold-key requests, {threshold_refused_in_window} \
         refused; the token did {} operations meanwhile\n\
         signer killed and restarted: {:.2} s without a signer; {lost_in_outage} requests found no \
         signer (then or before it first started)\n\
         published: {} aggregates, {} sync contributions; {attestations_in_blocks} attestations in blocks",
        100.0 * precompute_share,
        on_at - off_at,
        threshold_in_window.len(),
        ops_on - ops_off,
        ready_at - killed_at,
        signed("AGGREGATE_AND_PROOF") + signed("AGGREGATE_AND_PROOF_V2"),
        signed("SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF"),
    );
    println!("{figures}");
    std::fs::write(run.join("summary.txt"), format!("{summary}{figures}\n")).unwrap();

    // Slashing protection after the kill: every block the chain holds is in the signer's
    // export, with the signing root of the block the chain holds (nothing conflicting).
    drop(server);
    let export: Value = serde_json::from_str(&signer.ok(&["slashing", "export", "-"])).unwrap();
    let gvr = root32(genesis["data"]["genesis_validators_root"].as_str().unwrap());
    let version = |epoch: u64| -> [u8; 4] {
        let key = if epoch >= altair_epoch {
            "ALTAIR_FORK_VERSION"
        } else {
            "GENESIS_FORK_VERSION"
        };
        let v = hex::decode(spec["data"][key].as_str().unwrap().trim_start_matches("0x")).unwrap();
        v.try_into().unwrap()
    };
    let mut recorded_blocks: BTreeMap<(String, u64), Option<String>> = BTreeMap::new();
    for v in export["data"].as_array().unwrap() {
        let pk = v["pubkey"].as_str().unwrap().to_lowercase();
        for b in v["signed_blocks"].as_array().into_iter().flatten() {
            recorded_blocks.insert(
                (pk.clone(), num(&b["slot"])),
                b["signing_root"].as_str().map(str::to_lowercase),
            );
        }
    }
    let mut conflicts = Vec::new();
    for (slot, proposer, root) in &blocks {
        let expected = format!(
            "0x{}",
            hex::encode(block_signing_root(*root, version(slot / spe), gvr))
        );
        match recorded_blocks.get(&(interop_pubkey(*proposer), *slot)) {
            None => conflicts.push(format!(
                "slot {slot}: validator {proposer}'s block not recorded"
            )),
            Some(Some(r)) if *r != expected => conflicts.push(format!(
                "slot {slot}: validator {proposer} recorded {r}, the chain's block signs {expected}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        conflicts.is_empty(),
        "slashing protection disagrees with the chain: {conflicts:?}"
    );
    println!(
        "slashing export: all {} blocks of the chain recorded with their signing roots",
        blocks.len()
    );
    assert!(
        precompute_share >= 0.9,
        "precompute answered {:.1} % of the selection-proof requests after the first epoch",
        100.0 * precompute_share
    );
    assert!(
        !threshold_in_window.is_empty() && threshold_refused_in_window == 0,
        "threshold keys while {d1} was out of service: {} requests, {threshold_refused_in_window} refused",
        threshold_in_window.len()
    );
    assert!(
        ops_on - ops_off <= 4.0,
        "{d1} did {} operations while out of service",
        ops_on - ops_off
    );
    assert!(
        signed("AGGREGATE_AND_PROOF") + signed("AGGREGATE_AND_PROOF_V2") > 0
            && signed("SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF") > 0
            && attestations_in_blocks > 0
            && sync_bits.0 > 0,
        "aggregates and sync contributions were signed and reached blocks"
    );
    assert!(
        missing.is_empty(),
        "{} slot(s) without a block: {missing:?} (the signer refused {} request(s); see the \
         summary above and {})",
        missing.len(),
        refused.len(),
        run.join("requests.txt").display()
    );
    assert!(
        finalized >= preset.finalized_target,
        "finalized epoch {finalized}, wanted at least {}",
        preset.finalized_target
    );
    assert!(
        not_richer.is_empty(),
        "validators whose balance did not grow: {not_richer:?}"
    );
    assert!(
        refused.is_empty(),
        "the signer refused {} of {} requests (see the summary above)",
        refused.len(),
        recorded.len()
    );
    drop(guard);
}

/// `0x` + 64 hex digits.
fn root32(s: &str) -> [u8; 32] {
    hex::decode(s.trim_start_matches("0x"))
        .unwrap()
        .try_into()
        .unwrap()
}

/// A block's signing root, computed here from the consensus specs (`compute_domain`,
/// `compute_signing_root`): DOMAIN_BEACON_PROPOSER is 0x00000000.
fn block_signing_root(block_root: [u8; 32], version: [u8; 4], gvr: [u8; 32]) -> [u8; 32] {
    let mut padded = [0u8; 32];
    padded[..4].copy_from_slice(&version);
    let fork_data_root: [u8; 32] = Sha256::new()
        .chain_update(padded)
        .chain_update(gvr)
        .finalize()
        .into();
    let mut domain = [0u8; 32];
    domain[4..].copy_from_slice(&fork_data_root[..28]);
    Sha256::new()
        .chain_update(block_root)
        .chain_update(domain)
        .finalize()
        .into()
}

/// Per request type: how many, their answers, and when they came relative to their duty's slot
/// (in slots: negative = ahead of the slot's start).
fn request_report(
    recorded: &[Recorded],
    genesis_time: f64,
    seconds_per_slot: f64,
    slots_per_epoch: u64,
) -> String {
    let mut by_kind: BTreeMap<&str, Vec<&Recorded>> = BTreeMap::new();
    for r in recorded {
        by_kind.entry(&r.kind).or_default().push(r);
    }
    let mut out = String::from("signing requests by type (timing = arrival - start of the duty's slot, in slots; p0/p50/p100):\n");
    for (kind, rs) in &by_kind {
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        for r in rs {
            *statuses.entry(r.status).or_default() += 1;
        }
        let mut lead: Vec<f64> = rs
            .iter()
            .filter_map(|r| {
                r.duty_slot
                    .map(|s| (r.at - genesis_time - s as f64 * seconds_per_slot) / seconds_per_slot)
            })
            .collect();
        lead.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| {
            lead.get(((lead.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let mut latency: Vec<f64> = rs.iter().map(|r| (r.done - r.at) * 1000.0).collect();
        latency.sort_by(|a, b| a.partial_cmp(b).unwrap());
        writeln!(
            out,
            "  {kind:<38} {:>6}  statuses {statuses:?}  timing {:+.2} / {:+.2} / {:+.2}  \
             latency p50 {:.1} ms max {:.1} ms",
            rs.len(),
            q(0.0),
            q(0.5),
            q(1.0),
            latency.get(latency.len() / 2).copied().unwrap_or(0.0),
            latency.last().copied().unwrap_or(0.0),
        )
        .unwrap();
        // Where within the epoch the requests for a duty came: for selection proofs, the epoch
        // of the request against the epoch of the duty.
        if kind.contains("SELECTION") || *kind == "AGGREGATION_SLOT" {
            let ahead_epochs: BTreeMap<i64, usize> = rs
                .iter()
                .filter_map(|r| {
                    let s = r.duty_slot? as f64;
                    let req_slot = ((r.at - genesis_time) / seconds_per_slot).floor();
                    Some(
                        (s / slots_per_epoch as f64).floor() as i64
                            - (req_slot / slots_per_epoch as f64).floor() as i64,
                    )
                })
                .fold(BTreeMap::new(), |mut m, d| {
                    *m.entry(d).or_default() += 1;
                    m
                });
            writeln!(out, "    duty epoch - request epoch: {ahead_epochs:?}").unwrap();
        }
        let mut messages: BTreeMap<(u16, String), usize> = BTreeMap::new();
        for r in rs.iter().filter(|r| r.status != 200) {
            // Columns and roots vary from request to request; the rest says what went wrong.
            let mut generic = Vec::new();
            let mut after_column = false;
            for w in r.message.split(' ') {
                generic.push(if after_column {
                    "N"
                } else if w.starts_with("0x") {
                    "0x…"
                } else {
                    w
                });
                after_column = w == "column";
            }
            let generic = generic.join(" ");
            *messages.entry((r.status, generic)).or_default() += 1;
        }
        for ((status, m), n) in messages {
            writeln!(out, "    {n} x {status}: {m}").unwrap();
        }
    }
    out
}
