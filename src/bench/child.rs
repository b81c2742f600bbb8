//! The real server in processes of its own, for the benchmarks that measure across processes
//! (`bench distributed`, `bench http`): this binary started on a scratch data directory with
//! none of the caller's settings, keys sealed there by a child (`bench seal-keys`: a PKCS#11
//! module is initialised once per process, with the SoftHSM configuration of its own data
//! directory, so a bench cannot open another data directory's tokens itself), `serve` started
//! and awaited, killed when the bench ends however it ends; and CPU time read from `/proc`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::config::Config;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::{seal_share, Distributed, KeyRecord, KeyStore, PublicKeyBytes, ShareId};

/// How long a server may take from its start to listening.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// One key, or one distributed key's share for one participant, as a bench hands it to the
/// child that seals it (one JSON line on its standard input). The secret is wiped when this is
/// dropped.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealLine {
    /// The validator (composite) key.
    pub composite: PublicKeyBytes,
    /// The share's id (a whole key: 1).
    pub id: ShareId,
    /// The share's public key (the child checks the secret against it; a whole key: the
    /// validator key).
    pub share_pubkey: PublicKeyBytes,
    /// The share's secret, hex.
    pub secret: String,
    /// A distributed account: its threshold and every participant (`None`: a whole key).
    pub account: Option<Distributed>,
}

impl Drop for SealLine {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// `bench seal-keys`, in the child a bench starts on a server's data directory: seal each key
/// or share read from `input` (JSON lines of [`SealLine`]) on the default device and store it
/// (a share as a participant record), as an operator's import would. Returns how many were
/// stored.
pub fn seal_keys(config: &Config, input: impl BufRead) -> Result<usize> {
    let devices = Devices::open_all(config)?;
    let device = devices.get(&config.default_device)?;
    let mut store = KeyStore::load_strict(&config.keys_dir())?;
    let mut sealed = 0;
    for line in input.lines() {
        let line = Zeroizing::new(
            line.map_err(|e| SignerError::System(format!("reading the shares: {e}")))?,
        );
        if line.trim().is_empty() {
            continue;
        }
        // The parser's message may quote the line, which holds a secret: only its kind.
        let share: SealLine = serde_json::from_str(&line).map_err(|e| {
            SignerError::Invalid(format!("a share line is malformed ({:?})", e.classify()))
        })?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&share.secret, bytes.as_mut()).map_err(|_| {
            SignerError::Invalid(format!(
                "share {} of {}: the secret is not 32 bytes of hex",
                share.id, share.composite
            ))
        })?;
        let sk = crate::bls::secret_key(bytes.as_ref())?;
        let record = seal_share(device, &share.composite, share.id, &sk)?;
        if record.pubkey != share.share_pubkey {
            return Err(SignerError::Invalid(format!(
                "share {} of {}: the secret's public key is {}, the line says {}",
                share.id, share.composite, record.pubkey, share.share_pubkey
            )));
        }
        let mut key = KeyRecord::whole(share.composite, record, "bench");
        key.distributed = share.account.clone();
        store.insert(key)?;
        sealed += 1;
    }
    Ok(sealed)
}

/// `n` loopback ports free at the time of asking (held together, so they differ).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| SignerError::System(format!("finding free loopback ports: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| SignerError::System(format!("finding free loopback ports: {e}")))
}

/// This binary, run on `dir` as its data directory and none of the caller's settings.
pub(crate) fn signer_command(dir: &Path) -> Result<Command> {
    let exe = std::env::current_exe()
        .map_err(|e| SignerError::System(format!("the path of this program: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir").arg(dir);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HSM_SIGNER_") {
            cmd.env_remove(&var);
        }
    }
    // Its own module configuration (set from its data directory), and the default log level.
    cmd.env_remove("SOFTHSM2_CONF").env_remove("RUST_LOG");
    Ok(cmd)
}

/// Seal each data directory's keys or shares on its own (embedded default) tokens, in child
/// processes, one per directory, all at once.
pub(crate) fn seal_in_children(dirs: &[PathBuf], shares: Vec<Vec<SealLine>>) -> Result<()> {
    let mut children = Vec::new();
    for (dir, shares) in dirs.iter().zip(shares) {
        let mut child = signer_command(dir)?
            .args(["bench", "seal-keys"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SignerError::System(format!("starting the share sealer: {e}")))?;
        let written = child
            .stdin
            .take()
            .ok_or_else(|| SignerError::Internal("the sealer has no standard input".into()))
            .and_then(|mut stdin| {
                for share in &shares {
                    let line = Zeroizing::new(
                        serde_json::to_string(share)
                            .map_err(|e| SignerError::Internal(format!("a share line: {e}")))?,
                    );
                    stdin
                        .write_all(line.as_bytes())
                        .and_then(|()| stdin.write_all(b"\n"))
                        .map_err(|e| {
                            SignerError::System(format!(
                                "handing the shares to the sealer on {}: {e}",
                                dir.display()
                            ))
                        })?;
                }
                Ok(())
            });
        children.push((dir, shares.len(), child, written));
    }
    for (dir, expected, child, written) in children {
        let out = child
            .wait_with_output()
            .map_err(|e| SignerError::System(format!("waiting for the share sealer: {e}")))?;
        if !out.status.success() {
            return Err(SignerError::System(format!(
                "sealing the shares on {} failed ({}): {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        written?;
        let said = String::from_utf8_lossy(&out.stdout);
        if !said.starts_with(&format!("{expected} ")) {
            return Err(SignerError::System(format!(
                "the share sealer on {} sealed other than {expected} shares: {}",
                dir.display(),
                said.trim()
            )));
        }
    }
    Ok(())
}

/// A `[[device]]` entry of a configuration file.
#[derive(Serialize)]
pub(crate) struct DeviceToml {
    pub name: String,
    profile: &'static str,
    token_label: String,
    pin_file: PathBuf,
    module_config: PathBuf,
    so_pin_file: PathBuf,
}

/// The `[[device]]` entries that make the same devices as [`Config::embedded`] on `dir`.
pub(crate) fn embedded_devices(dir: &Path) -> Result<Vec<DeviceToml>> {
    let embedded = Config::embedded(dir)?;
    embedded
        .devices
        .iter()
        .map(|d| {
            let missing = |what: &str| {
                SignerError::Internal(format!(
                    "the embedded default's device {} has no {what}",
                    d.hsm.name
                ))
            };
            let hsm::TokenSelector::Label(label) = &d.hsm.token else {
                return Err(missing("token label"));
            };
            let hsm::PinSource::File(pin) = &d.hsm.pin else {
                return Err(missing("PIN file"));
            };
            Ok(DeviceToml {
                name: d.hsm.name.clone(),
                profile: "softhsm",
                token_label: label.clone(),
                pin_file: pin.clone(),
                module_config: d
                    .module_env
                    .as_ref()
                    .map(|(_, path)| path.clone())
                    .ok_or_else(|| missing("module configuration"))?,
                so_pin_file: d
                    .so_pin_file
                    .clone()
                    .ok_or_else(|| missing("SO PIN file"))?,
            })
        })
        .collect()
}

/// A running server.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
    /// Its announced origin and when it came, once it listens.
    announced: std::sync::mpsc::Receiver<(String, Instant)>,
}

/// Server processes (`hsm-signer serve`): killed and reaped when dropped, however the run ends.
#[derive(Default)]
pub(crate) struct Servers(Vec<Running>);

impl Drop for Servers {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The last lines of a server's log, for an error that says why it did not start.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Servers {
    /// Start `hsm-signer [global…] serve --listen 127.0.0.1:<port> --no-slot-deadlines` on
    /// `dir`, its log in `<dir>/serve.log`. A bench's messages are synthetic (their slots are
    /// not now): no validity windows.
    pub(crate) fn start(
        &mut self,
        name: &str,
        dir: &Path,
        global: &[&str],
        port: u16,
    ) -> Result<()> {
        let log = dir.join("serve.log");
        let log_file = std::fs::File::create(&log).map_err(SignerError::io(&log))?;
        let started = Instant::now();
        let mut child = signer_command(dir)?
            .args(global)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--no-slot-deadlines")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| SignerError::System(format!("starting server {name}: {e}")))?;
        let stdout = child.stdout.take();
        let (tx, announced) = std::sync::mpsc::channel();
        self.0.push(Running {
            name: name.to_owned(),
            child,
            log,
            started,
            announced,
        });
        let stdout = stdout.ok_or_else(|| {
            SignerError::Internal(format!("server {name} has no standard output"))
        })?;
        // Read every line until it exits, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(origin) = line.strip_prefix("hsm-signer listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((origin.trim().to_owned(), Instant::now()));
                    }
                }
            }
        });
        Ok(())
    }

    /// Wait until every server listens on `scheme` (`https` or `http`); how long each took
    /// from its start.
    pub(crate) fn wait_listening(&mut self, scheme: &str) -> Result<Vec<Duration>> {
        let until = Instant::now() + STARTUP_PATIENCE;
        let mut took = Vec::with_capacity(self.0.len());
        for p in &mut self.0 {
            let wait = until.saturating_duration_since(Instant::now());
            match p.announced.recv_timeout(wait) {
                Ok((origin, at)) if origin.starts_with(&format!("{scheme}://")) => {
                    took.push(at.duration_since(p.started));
                }
                Ok((origin, _)) => {
                    return Err(SignerError::Config(format!(
                        "server {} listens on {origin}, not {scheme}: its configuration was \
                         not applied",
                        p.name
                    )))
                }
                Err(_) => {
                    let status = match p.child.try_wait() {
                        Ok(Some(status)) => format!("exited ({status})"),
                        _ => format!("not listening after {} s", STARTUP_PATIENCE.as_secs()),
                    };
                    return Err(SignerError::System(format!(
                        "server {} did not start: {status}; its log ({}) ends: {}",
                        p.name,
                        p.log.display(),
                        log_tail(&p.log)
                    )));
                }
            }
        }
        Ok(took)
    }

    /// The servers' process ids, in the order they were started.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|p| p.child.id()).collect()
    }
}

/// Seconds of CPU `/proc/<pid>/stat` gives for a process (user + system, all its threads).
pub(crate) fn process_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the state (field 3) on:
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Busy and total seconds of every core, from the first line of `/proc/stat`.
pub(crate) fn host_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(((total - idle) as f64 / hz, total as f64 / hz))
}
