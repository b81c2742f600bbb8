//! `bench http`: the signer over the wire. The real server (`hsm-signer serve`) in a process of
//! its own on a scratch data directory (SoftHSM tokens, N keys sealed on its default device,
//! SQLite slashing protection, or PostgreSQL when given), driven by a load generator in this
//! process: `connections` HTTP/1.1 keep-alive connections, each sending its next request when
//! the last is answered, bodies as a validator client sends them (`fork_info`, the data, the
//! `signingRoot`). Raw blst and the custody path are measured in the same run, on the same
//! cores, before the server starts. Workloads, as a validator client's duties come:
//! - `AGGREGATION_SLOT`: each key's selection proof at its duty slot (a 32nd of the keys a
//!   slot), slot after slot; no slashing protection;
//! - `ATTESTATION`: each key's vote at its duty slot, every slot's voters signing one
//!   `AttestationData` (index 0, as since Electra), epoch after epoch: each request checked and
//!   recorded durably (group commit) before it is signed.
//!
//! Measured per workload: requests per second and its ratio to raw blst, latency p50/p99/max,
//! and where the CPU went per request: the server's threads by role (HTTP runtime, devices,
//! signing, slashing protection), the stages inside them the server counts itself
//! (`[server] stage_cpu`: parse, root, device, sign, response; estimated from one run in 16 of
//! each, so that counting them barely slows what is measured), and the load generator.
//! Every signature is verified afterwards with blst against its key (subgroup-checked, in
//! random-linear-combination batches), outside the measured time. Start-up to serving and the
//! server's memory are reported for the key count given.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blst::min_pk::{PublicKey, SecretKey, Signature};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::bench::batch::{aggregation_slot, attestation};
use crate::bench::child::{
    embedded_devices, free_ports, process_cpu, seal_in_children, DeviceToml, SealLine, Servers,
};
use crate::bench::scenario::Latency;
use crate::config::Config;
use crate::consensus::{Network, Request};
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::threshold::{verify_batch, BatchItem, HashedMessage};
use crate::keys::{PublicKeyBytes, ShareId};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Keys on the server.
    pub keys: usize,
    /// Seconds each workload is measured (after a warm-up).
    pub seconds: f64,
    /// Connections kept open, each with one request in flight.
    pub connections: usize,
    /// A PostgreSQL connection string: `ATTESTATION` on PostgreSQL too.
    pub postgres: Option<secrecy::SecretString>,
    /// The server's `[slashing] group_commit_wait_us` (`None`: its default).
    pub group_commit_wait_us: Option<u64>,
}

/// Seconds of load before each measurement, not counted (connections, sessions, caches).
const WARM_UP: Duration = Duration::from_secs(1);
/// How long one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer's head, at most (the server's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// An answer's body, at most.
const MAX_BODY: usize = 64 * 1024;
/// First epoch of the `AGGREGATION_SLOT` workload (Fulu, `batch::fork_info`).
const AGGREGATION_EPOCH_BASE: u64 = 420_000;
/// First epoch of the `AGGREGATION_SLOT` workload with a slot per request (Fulu).
const AGGREGATION_DISTINCT_EPOCH_BASE: u64 = 440_000;
/// First epoch of the `ATTESTATION` workloads (each run on a fresh database goes from here).
const ATTESTATION_EPOCH_BASE: u64 = 412_000;
const SLOTS_PER_EPOCH: u64 = 32;

/// A workload's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Selection proofs as a validator client asks for them: a slot's keys share a message.
    AggregationSlot,
    /// Selection proofs each of a slot of its own: every request hashes its message (the
    /// worst case, no validator client's load).
    AggregationSlotDistinct,
    /// Votes as a validator client asks for them: a slot's keys share a message.
    Attestation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AggregationSlot | Kind::AggregationSlotDistinct => "AGGREGATION_SLOT",
            Kind::Attestation => "ATTESTATION",
        }
    }

    fn shared_messages(self) -> bool {
        self != Kind::AggregationSlotDistinct
    }

    fn epoch_base(self) -> u64 {
        match self {
            Kind::AggregationSlot => AGGREGATION_EPOCH_BASE,
            Kind::AggregationSlotDistinct => AGGREGATION_DISTINCT_EPOCH_BASE,
            Kind::Attestation => ATTESTATION_EPOCH_BASE,
        }
    }

    fn body_without_root(self, slot: u64) -> String {
        match self {
            Kind::AggregationSlot | Kind::AggregationSlotDistinct => aggregation_slot(slot),
            Kind::Attestation => attestation(slot),
        }
    }
}

/// CPU per request, microseconds: the server's threads by role, the stages the server counts
/// inside them, and the load generator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSplit {
    /// The server process, all threads (user + system).
    pub server_us: f64,
    /// Of which in the kernel (system time).
    pub server_system_us: f64,
    /// The HTTP runtime's threads (connections, parsing, handlers, answers).
    pub http_threads_us: f64,
    /// The device threads (envelopes opened on the token, the queue).
    pub device_threads_us: f64,
    /// The signing threads (BLS, the queue).
    pub signing_threads_us: f64,
    /// Slashing protection's threads (checks, records, commits, replies).
    pub slashing_threads_us: f64,
    /// Every other thread of the server.
    pub other_threads_us: f64,
    /// Stages the server counts itself (`signer_stage_cpu_seconds_total`, from one run in
    /// [`crate::metrics::STAGE_SAMPLE_EVERY`]): parse, root, device, sign, response.
    pub stages_us: Vec<(String, f64)>,
    /// The load generator (this process, its HTTP client).
    pub generator_us: f64,
    /// Where a request's time goes inside the server, mean milliseconds per request (from the
    /// server's histograms): `slashing` (the durable check, its wait for a batch and commit
    /// included), `queue` (waiting for a device or signing thread), `device` (the device
    /// operation), `request` (the whole signing request, from parsed to answered); and
    /// `transaction`, a batch of checks' own time in the store (each batch's, not each
    /// request's: of `slashing`, the rest is waiting for the batch in progress and for company).
    pub waits_ms: Vec<(String, f64)>,
}

/// The server's histograms (and one summary) whose means [`CpuSplit::waits_ms`] shows, by the
/// name shown: each `_sum` ÷ `_count`.
const WAITS: [(&str, &str); 5] = [
    ("slashing", "signer_slashing_check_seconds"),
    ("queue", "signer_queue_wait_seconds"),
    ("device", "signer_device_operation_seconds"),
    ("request", "signer_signing_seconds"),
    ("transaction", "signer_slashing_transaction_seconds"),
];

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// The request type.
    pub kind: &'static str,
    /// Whether a slot's keys share one message (as a validator client's duties do), or every
    /// request has its own.
    pub shared_messages: bool,
    /// Slashing protection's store: `none` (not a slashable type), `sqlite` or `postgresql`.
    pub store: &'static str,
    /// Requests answered in the measured time.
    pub requests: usize,
    /// Requests per second.
    pub per_sec: f64,
    /// ÷ raw blst signatures per second.
    pub ratio_to_raw_blst: f64,
    /// ÷ raw blst with the message hashed once (the ceiling when keys share messages).
    pub ratio_to_hashed_once: f64,
    /// Latency of the measured requests.
    pub latency: Latency,
    /// Where the CPU went (`None`: no `/proc`).
    pub cpu: Option<CpuSplit>,
    /// Requests not signed, over the whole run (warm-up too); the first one's reason.
    pub failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Signatures verified afterwards, and how many did not verify.
    pub verified: usize,
    pub unverified: usize,
    /// Stretches in which the server answered nothing, and the slowest requests they held.
    pub pauses: Pauses,
    /// Latency samples (ms) for the plot.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// A pause: longer than this without any request answered. At the rates measured here (a few
/// thousand answers a second over 64 connections, one every few hundred microseconds) that is
/// the whole pipeline standing still, not one slow request.
const PAUSE: Duration = Duration::from_millis(2);

/// The pauses of one workload as the load generator saw them, and how much of the latency tail
/// they explain: a request slower than the p99 that was in flight across a whole pause waited
/// for the server (or the machine) as a whole, not for its own turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pauses {
    /// Stretches of more than [`PAUSE`] with no answer.
    pub count: usize,
    /// The longest, milliseconds.
    pub longest_ms: f64,
    /// Their total, as a share of the measured window.
    pub share_of_time: f64,
    /// Requests slower than the p99.
    pub above_p99: usize,
    /// Of those, the ones in flight across a whole pause.
    pub above_p99_across_a_pause: usize,
}

/// [`Pauses`] of the requests `timed` (start, latency), all inside a window of `window`.
fn pauses(timed: &[(Duration, Duration)], p99: Duration, window: Duration) -> Pauses {
    let mut ends: Vec<Duration> = timed.iter().map(|(at, took)| *at + *took).collect();
    ends.sort_unstable();
    // Each pause as (last answer before it, first answer after it).
    let gaps: Vec<(Duration, Duration)> = ends
        .windows(2)
        .filter(|w| w[1] - w[0] > PAUSE)
        .map(|w| (w[0], w[1]))
        .collect();
    let total: Duration = gaps.iter().map(|(a, b)| *b - *a).sum();
    let slow: Vec<&(Duration, Duration)> = timed.iter().filter(|(_, took)| *took > p99).collect();
    let across = slow
        .iter()
        .filter(|(at, took)| {
            // The first pause that starts at or after the request's start; pauses are sorted.
            let i = gaps.partition_point(|(from, _)| *from < *at);
            gaps.get(i).is_some_and(|(_, to)| *to <= *at + *took)
        })
        .count();
    Pauses {
        count: gaps.len(),
        longest_ms: gaps
            .iter()
            .map(|(a, b)| (*b - *a).as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
        share_of_time: total.as_secs_f64() / window.as_secs_f64().max(1e-9),
        above_p99: slow.len(),
        above_p99_across_a_pause: across,
    }
}

/// A server's start.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    /// Its slashing protection store.
    pub store: &'static str,
    /// Keys it loaded.
    pub keys: usize,
    /// From its start to listening, milliseconds.
    pub to_serving_ms: f64,
    /// Its resident memory once listening, MiB.
    pub rss_mib: f64,
}

/// One target of the issue, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: f64,
    pub target: &'static str,
    pub pass: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    pub bench: &'static str,
    pub keys: usize,
    pub connections: usize,
    pub seconds_each: f64,
    /// Cores of the host (the server, the load generator and raw blst share them).
    pub cores: usize,
    /// Raw blst signatures per second on every core (each hashes its message).
    pub raw_blst_signs_per_sec: f64,
    /// Raw blst with the message hashed to G2 once, a signing multiplication per signature.
    pub raw_hashed_once_signs_per_sec: f64,
    /// The custody path (open on the token, then sign) per second on every core.
    pub custody_signs_per_sec: f64,
    pub startups: Vec<Startup>,
    pub workloads: Vec<WorkloadReport>,
    pub targets: Vec<Target>,
}

/// The server's configuration file: the embedded default's devices, stage accounting on.
#[derive(Serialize)]
struct ServerToml {
    default_device: String,
    device: Vec<DeviceToml>,
    server: ServerSection,
    slashing: SlashingSection,
}

#[derive(Serialize)]
struct SlashingSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    group_commit_wait_us: Option<u64>,
}

#[derive(Serialize)]
struct ServerSection {
    stage_cpu: bool,
}

fn bench_error(what: &str, e: impl std::fmt::Display) -> SignerError {
    SignerError::Invalid(format!("http bench: {what}: {e}"))
}

fn write_server_config(dir: &Path, opts: &HttpOptions) -> Result<()> {
    let devices = embedded_devices(dir)?;
    let text = toml::to_string(&ServerToml {
        default_device: devices
            .first()
            .map(|d| d.name.clone())
            .ok_or_else(|| SignerError::Internal("the embedded default has no device".into()))?,
        device: devices,
        server: ServerSection { stage_cpu: true },
        slashing: SlashingSection {
            group_commit_wait_us: opts.group_commit_wait_us,
        },
    })
    .map_err(|e| SignerError::Internal(format!("the server's configuration: {e}")))?;
    let path = dir.join(crate::config::CONFIG_FILE_NAME);
    std::fs::write(&path, text).map_err(SignerError::io(&path))
}

/// A request body with its `signingRoot`, and the root.
type Made = (Arc<str>, [u8; 32]);

/// The signing requests of a run: bodies by (kind, slot), made once each (every key with a
/// duty at a slot sends the same body), and the signing roots they carry.
struct Bodies {
    network: Network,
    made: Mutex<HashMap<(Kind, u64), Made>>,
}

impl Bodies {
    fn new() -> Result<Bodies> {
        Ok(Bodies {
            network: Network::preset("mainnet")
                .ok_or_else(|| SignerError::Internal("mainnet is not built in".into()))?,
            made: Mutex::default(),
        })
    }

    /// The body of `kind` at `slot` with its `signingRoot`, and the root.
    fn get(&self, kind: Kind, slot: u64) -> Result<Made> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = made.get(&(kind, slot)) {
            return Ok(found.clone());
        }
        let plain = kind.body_without_root(slot);
        let root = match Request::from_json(plain.as_bytes(), self.network.preset)
            .map_err(|e| bench_error("a request", e))?
        {
            Request::Typed(r) => r
                .signing_root(&self.network)
                .map_err(|e| bench_error("a request's root", e))?,
            Request::Generic(_) => return Err(bench_error("a request", "GENERIC")),
        };
        let mut value: serde_json::Value =
            serde_json::from_str(&plain).map_err(|e| bench_error("a request", e))?;
        value["signingRoot"] = serde_json::json!(root.to_string());
        let made_now = (Arc::<str>::from(value.to_string()), root.0);
        made.insert((kind, slot), made_now.clone());
        Ok(made_now)
    }

    fn root(&self, kind: Kind, slot: u64) -> Option<[u8; 32]> {
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, slot))
            .map(|(_, r)| *r)
    }
}

/// The keys: their order within a round (by duty slot, as a validator client's duties come)
/// and their public keys.
struct Keys {
    hex: Vec<String>,
    pubkeys: Vec<PublicKey>,
    /// Position in a round → key index: the keys of slot 0, then of slot 1, ….
    order: Vec<usize>,
}

impl Keys {
    /// Request `n` of a workload: its key and its slot.
    fn request(&self, kind: Kind, n: u64) -> (usize, u64) {
        let per_round = self.order.len() as u64;
        if kind == Kind::AggregationSlotDistinct {
            return (
                (n % per_round) as usize,
                kind.epoch_base() * SLOTS_PER_EPOCH + n,
            );
        }
        let (round, j) = (n / per_round, (n % per_round) as usize);
        let key = self.order[j];
        let slot = (kind.epoch_base() + round) * SLOTS_PER_EPOCH + key as u64 % SLOTS_PER_EPOCH;
        (key, slot)
    }
}

/// A signature the generator got, for the check after the run.
struct Got {
    key: u32,
    slot: u64,
    signature: [u8; 96],
}

/// What the generator saw.
#[derive(Default)]
struct Outcome {
    /// (start offset from the run's start, latency) of every answered request.
    timed: Vec<(Duration, Duration)>,
    got: Vec<Got>,
    failed: usize,
    first_failure: Option<String>,
}

/// One HTTP/1.1 exchange on a keep-alive connection: the status and the body.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    stream.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("answer head too long"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head not UTF-8"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| bad("no content-length"))?;
    if length > MAX_BODY {
        return Err(bad("answer body too long"));
    }
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed in the body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec()))
}

/// The signature in a `{"signature":"0x…"}` answer.
fn signature_of(body: &[u8]) -> Option<[u8; 96]> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let hex = v.get("signature")?.as_str()?.strip_prefix("0x")?;
    let mut out = [0u8; 96];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// One connection's loop: the next request number, its request, its answer, until `stop`.
async fn connection(
    addr: std::net::SocketAddr,
    kind: Kind,
    keys: Arc<Keys>,
    bodies: Arc<Bodies>,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Result<Outcome> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| bench_error("connecting", e))?;
    let _ = stream.set_nodelay(true);
    let mut out = Outcome::default();
    let mut buf = Vec::with_capacity(8192);
    let mut request = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let (key, slot) = keys.request(kind, n);
        let (body, _) = bodies.get(kind, slot)?;
        request.clear();
        request.extend_from_slice(
            format!(
                "POST /api/v1/eth2/sign/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: \
                 application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
                keys.hex[key],
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body.as_bytes());
        let t = Instant::now();
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut stream, &mut buf, &request))
                .await
                .map_err(|_| bench_error("a request", "no answer in 30 s"))?
                .map_err(|e| bench_error("a request", e))?;
        let took = t.elapsed();
        match answer {
            (200, body) => match signature_of(&body) {
                Some(signature) => {
                    out.timed.push((t.duration_since(started), took));
                    out.got.push(Got {
                        key: key as u32,
                        slot,
                        signature,
                    });
                }
                None => {
                    out.failed += 1;
                    out.first_failure
                        .get_or_insert_with(|| "200 without a signature".into());
                }
            },
            (status, body) => {
                out.failed += 1;
                out.first_failure.get_or_insert_with(|| {
                    format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )
                });
            }
        }
    }
    Ok(out)
}

/// CPU seconds of a server's threads by role, user and system, from `/proc/<pid>/task`.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCpu {
    total: f64,
    system: f64,
    http: f64,
    device: f64,
    signing: f64,
    slashing: f64,
}

fn thread_cpu(pid: u32) -> Option<ThreadCpu> {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let mut out = ThreadCpu::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // gone meanwhile
        };
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let user = fields.get(11)?.parse::<u64>().ok()? as f64 / hz;
        let system = fields.get(12)?.parse::<u64>().ok()? as f64 / hz;
        out.total += user + system;
        out.system += system;
        let bucket = if name == "http" {
            &mut out.http
        } else if name.starts_with("dev") {
            &mut out.device
        } else if name.starts_with("cpu-") {
            &mut out.signing
        } else if name.starts_with("slashing") {
            &mut out.slashing
        } else {
            continue;
        };
        *bucket += user + system;
    }
    Some(out)
}

/// Stage CPU seconds by stage, and (sum of seconds, count) of each of [`WAITS`].
type Scraped = (Vec<(String, f64)>, Vec<(f64, f64)>);

/// From the server's `/metrics`: `signer_stage_cpu_seconds_total` per stage, and the sum and
/// count of each histogram in [`WAITS`] (all its labels together).
fn scrape(addr: std::net::SocketAddr) -> Option<Scraped> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.take(4 << 20).read_to_string(&mut text).ok()?;
    let out: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("signer_stage_cpu_seconds_total{stage=\"")?;
            let (stage, value) = rest.split_once("\"} ")?;
            Some((stage.to_owned(), value.trim().parse().ok()?))
        })
        .collect();
    let mut waits = vec![(0.0, 0.0); WAITS.len()];
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        for ((_, family), (sum, count)) in WAITS.iter().zip(waits.iter_mut()) {
            match name.strip_prefix(family) {
                Some("_sum") => *sum += value,
                Some("_count") => *count += value,
                _ => {}
            }
        }
    }
    (!out.is_empty()).then_some((out, waits))
}

/// A reading of every CPU counter the split needs.
struct Mark {
    server: ThreadCpu,
    stages: Vec<(String, f64)>,
    /// (sum of seconds, count) of each of [`WAITS`].
    waits: Vec<(f64, f64)>,
    generator: f64,
}

fn mark(pid: u32, addr: std::net::SocketAddr) -> Option<Mark> {
    let (stages, waits) = scrape(addr)?;
    Some(Mark {
        server: thread_cpu(pid)?,
        stages,
        waits,
        generator: process_cpu("self")?,
    })
}

fn split(before: &Mark, after: &Mark, requests: usize) -> CpuSplit {
    let per = |s: f64| s * 1e6 / requests.max(1) as f64;
    let (a, b) = (&after.server, &before.server);
    let other = (a.total - a.http - a.device - a.signing - a.slashing)
        - (b.total - b.http - b.device - b.signing - b.slashing);
    CpuSplit {
        server_us: per(a.total - b.total),
        server_system_us: per(a.system - b.system),
        http_threads_us: per(a.http - b.http),
        device_threads_us: per(a.device - b.device),
        signing_threads_us: per(a.signing - b.signing),
        slashing_threads_us: per(a.slashing - b.slashing),
        other_threads_us: per(other),
        stages_us: after
            .stages
            .iter()
            .map(|(name, s)| {
                let was = before
                    .stages
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, v)| *v);
                (name.clone(), per(s - was))
            })
            .collect(),
        generator_us: per(after.generator - before.generator),
        waits_ms: WAITS
            .iter()
            .zip(after.waits.iter().zip(&before.waits))
            .map(|((shown, _), ((sum, count), (sum0, count0)))| {
                let n = count - count0;
                let mean = if n > 0.0 { (sum - sum0) * 1e3 / n } else { 0.0 };
                ((*shown).to_owned(), mean)
            })
            .collect(),
    }
}

/// A server being measured.
struct Measured {
    addr: std::net::SocketAddr,
    pid: u32,
    store: &'static str,
}

/// What the load generator sends.
struct Load {
    keys: Arc<Keys>,
    bodies: Arc<Bodies>,
    /// Raw blst, and with the message hashed once: the baselines.
    raw: f64,
    hashed_once: f64,
}

/// Drive `kind` at the server for the warm-up and `seconds`; the measured figures.
fn drive(server: &Measured, kind: Kind, load: &Load, opts: &HttpOptions) -> Result<WorkloadReport> {
    let (addr, pid, store) = (server.addr, server.pid, server.store);
    let (keys, bodies) = (&load.keys, &load.bodies);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SignerError::System(format!("the load generator's runtime: {e}")))?;
    let measured = Duration::from_secs_f64(opts.seconds.max(0.5));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // The marks are read by another thread at the window's edges, while the load runs.
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(WARM_UP);
            let first = mark(pid, addr);
            let from = started.elapsed();
            std::thread::sleep(measured);
            let last = mark(pid, addr);
            let to = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            (first, last, from, to)
        })
    };
    let outcomes = runtime.block_on(async {
        let tasks: Vec<_> = (0..opts.connections.max(1))
            .map(|_| {
                tokio::spawn(connection(
                    addr,
                    kind,
                    keys.clone(),
                    bodies.clone(),
                    next.clone(),
                    stop.clone(),
                    started,
                ))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.map_err(|e| bench_error("a connection", e)));
        }
        out
    });
    let (first, last, from, to) = sampler
        .join()
        .map_err(|_| SignerError::Internal("the CPU sampler panicked".into()))?;
    let mut outcome = Outcome::default();
    for o in outcomes {
        let o = o??;
        outcome.timed.extend(o.timed);
        outcome.got.extend(o.got);
        outcome.failed += o.failed;
        if outcome.first_failure.is_none() {
            outcome.first_failure = o.first_failure;
        }
    }
    // Requests that both started and ended inside the window.
    let timed: Vec<(Duration, Duration)> = outcome
        .timed
        .iter()
        .filter(|(at, took)| *at >= from && *at + *took <= to)
        .copied()
        .collect();
    let window = (to - from).as_secs_f64().max(1e-9);
    let per_sec = timed.len() as f64 / window;
    let cpu = match (first, last) {
        (Some(a), Some(b)) => Some(split(&a, &b, timed.len())),
        _ => None,
    };
    let (verified, unverified) = verify(kind, keys, bodies, &outcome.got)?;
    let mut samples_ms: Vec<f64> = timed
        .iter()
        .map(|(_, took)| took.as_secs_f64() * 1e3)
        .collect();
    let latency = Latency::of_ms(&mut samples_ms);
    let pauses = pauses(
        &timed,
        Duration::from_secs_f64(latency.p99_ms / 1e3),
        to - from,
    );
    Ok(WorkloadReport {
        kind: kind.name(),
        shared_messages: kind.shared_messages(),
        store,
        requests: timed.len(),
        per_sec,
        ratio_to_raw_blst: per_sec / load.raw.max(1e-9),
        ratio_to_hashed_once: per_sec / load.hashed_once.max(1e-9),
        latency,
        cpu,
        failed: outcome.failed,
        first_failure: outcome.first_failure,
        verified,
        unverified,
        pauses,
        samples_ms,
    })
}

/// Check every signature against its key and root: subgroup-checked, in batches of 256 on
/// every core. (verified, not verified).
fn verify(kind: Kind, keys: &Keys, bodies: &Bodies, got: &[Got]) -> Result<(usize, usize)> {
    let hashed: HashMap<u64, HashedMessage> = got
        .iter()
        .map(|g| g.slot)
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .map(|slot| {
            bodies
                .root(kind, slot)
                .map(|root| (slot, HashedMessage::new(&root)))
                .ok_or_else(|| SignerError::Internal(format!("no root for slot {slot}")))
        })
        .collect::<Result<_>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = got.len().div_ceil(threads).max(1);
    let bad = AtomicU64::new(0);
    std::thread::scope(|s| {
        for part in got.chunks(chunk) {
            let (hashed, bad) = (&hashed, &bad);
            s.spawn(move || {
                for batch in part.chunks(256) {
                    let sigs: Vec<Option<Signature>> = batch
                        .iter()
                        .map(|g| Signature::sig_validate(&g.signature, true).ok())
                        .collect();
                    let mut items = Vec::with_capacity(batch.len());
                    for (g, sig) in batch.iter().zip(&sigs) {
                        match (sig, hashed.get(&g.slot), keys.pubkeys.get(g.key as usize)) {
                            (Some(signature), Some(hashed), Some(pubkey)) => {
                                items.push(BatchItem {
                                    pubkey,
                                    hashed,
                                    signature,
                                })
                            }
                            _ => {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    if let Err(failed) = verify_batch(&items) {
                        bad.fetch_add(failed.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let bad = bad.into_inner() as usize;
    Ok((got.len() - bad.min(got.len()), bad))
}

/// The server's resident memory, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A server on `dir` (its slashing protection in SQLite there, or in PostgreSQL through the
/// connection string in `db_file`), listening.
fn start_server(
    dir: &Path,
    db_file: Option<&Path>,
    store: &'static str,
    keys: usize,
) -> Result<(Servers, Measured, Startup)> {
    let port = free_ports(1)?
        .first()
        .copied()
        .ok_or_else(|| SignerError::Internal("no free port".into()))?;
    let mut servers = Servers::default();
    let db_arg;
    let global: Vec<&str> = match db_file {
        Some(file) => {
            db_arg = file.display().to_string();
            vec!["--slashing-db-file", &db_arg]
        }
        None => Vec::new(),
    };
    servers.start(store, dir, &global, port)?;
    let took = servers.wait_listening("http")?;
    let pid = servers
        .pids()
        .first()
        .copied()
        .ok_or_else(|| SignerError::Internal("no server".into()))?;
    let startup = Startup {
        store,
        keys,
        to_serving_ms: took.first().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        rss_mib: rss_mib(pid),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Ok((servers, Measured { addr, pid, store }, startup))
}

/// Run the benchmark in `scratch` (the caller removes it): raw blst and custody on `config`'s
/// own default device, then the server on a data directory of its own.
pub fn run(config: &Config, scratch: &Path, opts: &HttpOptions) -> Result<HttpReport> {
    let n = opts.keys.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    // Raw blst and the custody path, first, on a quiet host.
    let custody = {
        let devices = Devices::open_all(config)?;
        crate::bench::custody::run(
            &devices,
            &config.default_device,
            cores,
            opts.seconds.clamp(0.6, 6.0),
        )?
    };
    let raw = custody.raw_blst_signs_per_sec;
    let hashed_once = {
        let sk = crate::bls::random_secret_key()?;
        let hashed = HashedMessage::new(&crate::bench::message(7));
        crate::bench::throughput(
            cores,
            Duration::from_secs_f64(opts.seconds.clamp(0.3, 3.0)),
            |_| {
                std::hint::black_box(crate::keys::threshold::partial_sign(&sk, &hashed));
            },
        )
    };

    let dir: PathBuf = scratch.join("server");
    std::fs::create_dir_all(&dir).map_err(SignerError::io(&dir))?;
    let mut lines = Vec::with_capacity(n);
    let mut pubkeys = Vec::with_capacity(n);
    let mut hex = Vec::with_capacity(n);
    for _ in 0..n {
        let sk: SecretKey = crate::bls::random_secret_key()?;
        let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
        let secret = Zeroizing::new(sk.to_bytes());
        lines.push(SealLine {
            composite: pk,
            id: ShareId::ONE,
            share_pubkey: pk,
            secret: hex::encode(secret.as_ref()),
            account: None,
        });
        pubkeys.push(
            PublicKey::key_validate(&pk.0).map_err(|e| bench_error("a key", format!("{e:?}")))?,
        );
        hex.push(pk.to_string());
    }
    // Sealed on the embedded default (its tokens made by the sealer); then the configuration
    // file that names the same devices and turns stage accounting on.
    seal_in_children(std::slice::from_ref(&dir), vec![lines])?;
    write_server_config(&dir, opts)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (*i as u64 % SLOTS_PER_EPOCH, *i));
    let keys = Arc::new(Keys {
        hex,
        pubkeys,
        order,
    });

    let load = Load {
        keys,
        bodies: Arc::new(Bodies::new()?),
        raw,
        hashed_once,
    };
    let mut startups = Vec::new();
    let mut workloads = Vec::new();
    {
        let (servers, server, startup) = start_server(&dir, None, "sqlite", n)?;
        startups.push(startup);
        let none = Measured {
            store: "none",
            ..server
        };
        for kind in [Kind::AggregationSlot, Kind::AggregationSlotDistinct] {
            workloads.push(drive(&none, kind, &load, opts)?);
        }
        workloads.push(drive(&server, Kind::Attestation, &load, opts)?);
        drop(servers);
    }
    if let Some(url) = &opts.postgres {
        // A database of its own, dropped afterwards: every run starts from an empty one (a
        // database left from earlier runs slows the checks down as it grows).
        let url = secrecy::ExposeSecret::expose_secret(url);
        let (startup, workload) = crate::slashing::with_scratch_url(url, "http", |scratch_url| {
            let file = scratch.join("slashing-db.url");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)
                    .map_err(SignerError::io(&file))?;
                f.write_all(scratch_url.as_bytes())
                    .map_err(SignerError::io(&file))?;
            }
            let (servers, server, startup) = start_server(&dir, Some(&file), "postgresql", n)?;
            let workload = drive(&server, Kind::Attestation, &load, opts);
            drop(servers);
            Ok::<_, SignerError>((startup, workload?))
        })
        .map_err(|e| bench_error("the scratch PostgreSQL database", e))??;
        startups.push(startup);
        workloads.push(workload);
    }
    let targets = targets(&workloads, &startups);
    Ok(HttpReport {
        bench: "http",
        keys: n,
        connections: opts.connections,
        seconds_each: opts.seconds,
        cores,
        raw_blst_signs_per_sec: raw,
        raw_hashed_once_signs_per_sec: hashed_once,
        custody_signs_per_sec: custody.custody_signs_per_sec,
        startups,
        workloads,
        targets,
    })
}

fn targets(workloads: &[WorkloadReport], startups: &[Startup]) -> Vec<Target> {
    let mut out = Vec::new();
    for w in workloads.iter().filter(|w| w.shared_messages) {
        let (ratio, bound, label) = match (w.kind, w.store) {
            ("AGGREGATION_SLOT", _) => (0.80, ">= 0.80", "AGGREGATION_SLOT ÷ raw blst"),
            (_, "sqlite") => (0.60, ">= 0.60", "ATTESTATION (SQLite) ÷ raw blst"),
            _ => (0.50, ">= 0.50", "ATTESTATION (PostgreSQL) ÷ raw blst"),
        };
        out.push(Target {
            what: label.into(),
            measured: w.ratio_to_raw_blst,
            target: bound,
            pass: w.ratio_to_raw_blst >= ratio && w.unverified == 0 && w.failed == 0,
        });
        if w.store != "none" {
            out.push(Target {
                what: format!("ATTESTATION ({}) p99 ms", w.store),
                measured: w.latency.p99_ms,
                target: "< 20",
                pass: w.latency.p99_ms < 20.0,
            });
        }
    }
    for s in startups {
        out.push(Target {
            what: format!("start-up to serving, {} keys ({}), ms", s.keys, s.store),
            measured: s.to_serving_ms,
            target: "< 1000",
            pass: s.to_serving_ms < 1000.0,
        });
    }
    out
}

/// `shared` (a slot's keys sign one message) or `distinct`.
fn messages(w: &WorkloadReport) -> &'static str {
    if w.shared_messages {
        "shared"
    } else {
        "distinct"
    }
}

impl HttpReport {
    /// Human-readable tables.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "bench http: {} keys, {} connections, {} s each, {} cores shared by the server, the \
             load generator and raw blst",
            self.keys, self.connections, self.seconds_each, self.cores
        );
        let _ = writeln!(
            out,
            "raw blst {:.0} signatures/s (each hashes its message; {:.0}/s with one message \
             hashed once); custody (token open + sign) {:.0}/s",
            self.raw_blst_signs_per_sec,
            self.raw_hashed_once_signs_per_sec,
            self.custody_signs_per_sec
        );
        for s in &self.startups {
            let _ = writeln!(
                out,
                "server start ({}): serving after {:.0} ms, {:.1} MiB resident",
                s.store, s.to_serving_ms, s.rss_mib
            );
        }
        let _ = writeln!(
            out,
            "\n{:<18} {:<9} {:<11} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6} {:>9}",
            "workload",
            "messages",
            "store",
            "req/s",
            "÷ raw",
            "÷ hashed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "failed",
            "verified"
        );
        for w in &self.workloads {
            let _ = writeln!(
                out,
                "{:<18} {:<9} {:<11} {:>7.0} {:>7.3} {:>8.3} {:>7.2} {:>7.2} {:>7.1} {:>6} {:>9}",
                w.kind,
                messages(w),
                w.store,
                w.per_sec,
                w.ratio_to_raw_blst,
                w.ratio_to_hashed_once,
                w.latency.p50_ms,
                w.latency.p99_ms,
                w.latency.max_ms,
                w.failed,
                if w.unverified == 0 {
                    format!("{}", w.verified)
                } else {
                    format!("{} BAD", w.unverified)
                }
            );
            if let Some(f) = &w.first_failure {
                let _ = writeln!(out, "  first failure: {f}");
            }
        }
        let _ = writeln!(
            out,
            "\nPauses: stretches of more than {} ms with no request answered (the whole server, or \
             the machine, standing still), and the requests above the p99 in flight across one",
            PAUSE.as_millis()
        );
        for w in &self.workloads {
            let p = &w.pauses;
            let _ = writeln!(
                out,
                "{:<18} {:<9} {:<11} {} pauses, longest {:.1} ms, {:.1} % of the time; {} of {} \
                 requests above the p99",
                w.kind,
                messages(w),
                w.store,
                p.count,
                p.longest_ms,
                p.share_of_time * 100.0,
                p.above_p99_across_a_pause,
                p.above_p99
            );
        }
        let _ = writeln!(
            out,
            "\nCPU per request, µs (server threads by role; stages inside them, estimated from one \
             run in {})",
            crate::metrics::STAGE_SAMPLE_EVERY
        );
        for w in &self.workloads {
            let Some(c) = &w.cpu else { continue };
            let stage = |name: &str| {
                c.stages_us
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, v)| *v)
            };
            let (parse, root, response) = (stage("parse"), stage("root"), stage("response"));
            let (device, sign) = (stage("device"), stage("sign"));
            let _ = writeln!(
                out,
                "{} ({}, {} messages): server {:.0} (kernel {:.0}) + load generator {:.0}",
                w.kind,
                w.store,
                messages(w),
                c.server_us,
                c.server_system_us,
                c.generator_us
            );
            let _ = writeln!(
                out,
                "  http threads {:.0}: parse {:.1}, root {:.1}, response {:.1}, the rest {:.0} \
                 (connections, hyper, handler, queue submit, wake-ups)",
                c.http_threads_us,
                parse,
                root,
                response,
                c.http_threads_us - parse - root - response
            );
            let _ = writeln!(
                out,
                "  device threads {:.0}: token open {:.0}, the rest {:.0}; signing threads \
                 {:.0}: sign {:.0}, the rest {:.0}",
                c.device_threads_us,
                device,
                c.device_threads_us - device,
                c.signing_threads_us,
                sign,
                c.signing_threads_us - sign
            );
            let _ = writeln!(
                out,
                "  slashing protection threads {:.0}; other threads {:.0}",
                c.slashing_threads_us, c.other_threads_us
            );
            let waits: Vec<String> = c
                .waits_ms
                .iter()
                .filter(|(name, _)| name != "transaction")
                .map(|(name, ms)| format!("{name} {ms:.2}"))
                .collect();
            let transaction = c
                .waits_ms
                .iter()
                .find(|(name, _)| name == "transaction")
                .map_or(0.0, |(_, ms)| *ms);
            let _ = writeln!(
                out,
                "  time in the server, mean ms a request: {}; a batch's transaction in the \
                 store {transaction:.2}",
                waits.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "\n{:<48} {:>10} {:>10} {:>6}",
            "target", "measured", "bound", ""
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "{:<48} {:>10.3} {:>10} {:>6}",
                t.what,
                t.measured,
                t.target,
                if t.pass { "PASS" } else { "FAIL" }
            );
        }
        out
    }

    /// An SVG of each workload's latency distribution (CDF).
    pub fn svg(&self) -> String {
        const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
        let names: Vec<String> = self
            .workloads
            .iter()
            .map(|w| format!("{} ({}, {} messages)", w.kind, w.store, messages(w)))
            .collect();
        let series: Vec<crate::bench::scenario::Series<'_>> = self
            .workloads
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (w, name))| {
                (
                    w.samples_ms.as_slice(),
                    COLORS[i % COLORS.len()],
                    name.as_str(),
                    "0",
                )
            })
            .collect();
        crate::bench::scenario::cdf_svg(
            &format!(
                "bench http: request latency, {} keys, {} connections",
                self.keys, self.connections
            ),
            Some((20.0, "20 ms (the p99 target)")),
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn a_pause_is_a_stretch_without_answers_and_holds_the_slow_requests_in_flight_across_it() {
        // Answers every millisecond from 1 to 10 ms, none from 10 to 15 ms (a 5 ms pause),
        // then every millisecond to 20 ms.
        let mut timed: Vec<(Duration, Duration)> = (1..=10)
            .chain(15..=20)
            .map(|end| (ms(end) - ms(1), ms(1)))
            .collect();
        // Two slow requests: one in flight across the whole pause, one that ended inside it.
        timed.push((ms(8), ms(9)));
        timed.push((ms(2), ms(8)));
        let p = pauses(&timed, ms(5), ms(20));
        assert_eq!(p.count, 1);
        assert!((p.longest_ms - 5.0).abs() < 1e-9, "{p:?}");
        assert!((p.share_of_time - 0.25).abs() < 1e-9, "{p:?}");
        assert_eq!((p.above_p99, p.above_p99_across_a_pause), (2, 1), "{p:?}");
    }

    #[test]
    fn answers_at_most_the_pause_length_apart_make_no_pause() {
        let timed: Vec<(Duration, Duration)> = (0..50).map(|i| (ms(2 * i), ms(1))).collect();
        let p = pauses(&timed, ms(1), ms(100));
        assert_eq!(p, Pauses::default());
        assert_eq!(pauses(&[], ms(1), ms(1)), Pauses::default());
    }
}
