//! `bench distributed`: what threshold signing across hosts costs. A 2-of-3 key whose shares
//! are held by three participant processes (`hsm-signer serve`, each with its own SoftHSM
//! tokens and SQLite slashing protection, over mutual TLS 1.3 on loopback) against local 2-of-3
//! and 1-of-1 keys, through one coordinator scheduler, in one run. Measured per key shape:
//! - throughput: `AGGREGATION_SLOT`s with `concurrency` requests in flight (a message no
//!   slashing protection records, each of another slot, so no work can be cached);
//! - block latency on the idle setup (`BLOCK_V2`, one after another, each of a new slot);
//! - block latency under the seed's herd (`bench scenario`): every key's selection proof,
//!   builder registration and attestation at once, blocks one after another while it runs
//!   (at most one every `block_interval`).
//!
//! Targets (the issue's): distributed throughput ≥ 0.25 × 1-of-1; distributed block p50 under
//! the herd ≤ 2 × its idle block p50. Every signature the bench gets is checked afterwards with
//! blst against the validator (composite) key, outside the measured time.
//!
//! Everything lives in a scratch directory the caller removes: a throwaway PKI, the three
//! participants' data directories, their logs. The participants are children of the bench,
//! killed when the run ends, however it ends. Their shares are sealed by a child process too
//! (`bench seal-participant-shares`): a PKCS#11 module is initialised once per process, with the
//! SoftHSM configuration of the bench's own data directory, so the bench cannot open another
//! data directory's tokens itself.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blst::min_pk::{PublicKey, Signature};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::bench::batch::{aggregation_slot, attestation};
use crate::bench::bls_floor::BlsFloor;
use crate::bench::child::{
    embedded_devices, free_ports, host_cpu, process_cpu, seal_in_children, DeviceToml, SealLine,
    Servers,
};
use crate::bench::scenario::{bench_config, Latency};
use crate::bench::threshold::{devices_for, make_key};
use crate::config::{Config, ParticipantSettings};
use crate::consensus::{Network, SignRequest};
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::{
    threshold, Distributed, KeyRecord, ParticipantRef, PublicKeyBytes, RemoteShare, ShareId,
    KEY_FILE_VERSION,
};
use crate::participants::Participants;
use crate::scheduler::{Class, Forwarded, JobError, Scheduler, SchedulerMetrics, SignJob};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct DistributedOptions {
    /// Keys per shape (the herd: each signs a proof, a registration and an attestation).
    pub keys: usize,
    /// Seconds of the throughput measurement, per shape.
    pub seconds: f64,
    /// Requests kept in flight during the throughput measurement.
    pub concurrency: usize,
    /// Blocks signed one after another on the idle setup, per shape (twice: before and after
    /// the herds).
    pub blocks: usize,
    /// Shortest time between the starts of two blocks while a herd runs (a block never starts
    /// before the one before it is signed).
    pub block_interval: Duration,
    /// Herds per shape; their blocks are pooled.
    pub rounds: usize,
    /// Partials each participant may have in flight from the coordinator (`max_in_flight` of
    /// `[[participant]]`); `None`: its default.
    pub max_in_flight: Option<usize>,
}

/// One key shape's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeReport {
    /// `1-of-1`, `local 2-of-3` or `distributed 2-of-3`.
    pub shape: &'static str,
    /// Verified signatures per second with `concurrency` requests in flight.
    pub signatures_per_sec: f64,
    /// This shape's throughput ÷ 1-of-1's.
    pub ratio_to_1_of_1: f64,
    /// Latency of the throughput requests.
    pub latency: Latency,
    /// Where the CPU went during the throughput measurement (`None`: no `/proc`).
    pub cpu: Option<CpuSpent>,
    /// The same measurement with the messages a validator client's keys sign alike: every key
    /// signs each slot's `AGGREGATION_SLOT` (as an operator's validators with duties in one
    /// slot sign one selection-proof message, and since Electra one attestation message).
    pub shared: SharedThroughput,
    /// Block latency on the idle setup (before or after the herds: the lower p50).
    pub idle_block: Latency,
    /// Block latency while a herd runs, pooled over the rounds.
    pub herd_block: Latency,
    /// Blocks signed while a herd ran.
    pub herd_blocks: usize,
    /// Herd requests signed per second (the herd's requests over the herd's time).
    pub herd_signatures_per_sec: f64,
    /// Herd block p50 ÷ idle block p50.
    pub herd_block_p50_over_idle: f64,
    /// Requests that got no signature (the first one's reason in `first_failure`).
    pub failed: usize,
    /// Why the first failed request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Threshold jobs of this shape that asked a third holder because one was late (the
    /// scheduler's hedge, after `hedge_delay`), over the whole measurement.
    pub hedges: u64,
    /// Signatures checked with blst against the validator key, and how many did not verify.
    pub verified: usize,
    /// Signatures that did not verify.
    pub unverified: usize,
}

/// Throughput with one message for every key at a time.
#[derive(Debug, Clone, Serialize)]
pub struct SharedThroughput {
    /// Verified signatures per second.
    pub signatures_per_sec: f64,
    /// ÷ 1-of-1's on the same messages.
    pub ratio_to_1_of_1: f64,
    /// Latency of its requests.
    pub latency: Latency,
    /// Where the CPU went (`None`: no `/proc`).
    pub cpu: Option<CpuSpent>,
    /// Partials asked of the participants per request (one message's partials for several
    /// keys go in one batch request); `None` for a shape without participants.
    pub partials_per_request: Option<f64>,
}

/// One target of the issue, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: &'static str,
    /// The measured ratio.
    pub measured: f64,
    /// The bound, e.g. `>= 0.25`.
    pub target: &'static str,
    /// Whether the measurement meets it.
    pub pass: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Keys per shape.
    pub keys: usize,
    /// Requests in flight during the throughput measurement.
    pub concurrency: usize,
    /// Seconds of each throughput measurement.
    pub seconds_each: f64,
    /// Herds per shape.
    pub rounds: usize,
    /// Shortest time between the starts of two blocks during a herd, milliseconds.
    pub block_interval_ms: f64,
    /// Local devices of the coordinator.
    pub devices: usize,
    /// Participant processes.
    pub participants: usize,
    /// Partials in flight per participant (the coordinator's cap).
    pub max_in_flight: usize,
    /// Cores of the host (coordinator and participants share them).
    pub cores: usize,
    /// The host's one-minute load average when the run started (others' work included).
    pub load_average_at_start: Option<f64>,
    /// Seconds spent making the PKI, the keys and starting the participants.
    pub setup_seconds: f64,
    /// Per shape: 1-of-1, local 2-of-3, distributed 2-of-3.
    pub shapes: Vec<ShapeReport>,
    /// The BLS work alone on one thread: what the distributed throughput ratio would be with
    /// transport, tokens and scheduling free.
    pub bls_floor: BlsFloor,
    /// The issue's targets.
    pub targets: Vec<Target>,
}

/// Participants of the distributed key, and their share ids.
const PARTICIPANTS: usize = 3;
const THRESHOLD: usize = 2;
/// The coordinator's client certificate name, on the participants' `tls.allowed_clients`.
const COORDINATOR: &str = "coordinator";
/// Blocks signed before each idle measurement and not counted (connections, sessions, caches).
const WARM_UP_BLOCKS: usize = 5;
/// Signatures of each kind timed for [`BlsFloor`] (about a second of one core).
const BLS_FLOOR_SIGNATURES: usize = 512;
/// Blocks of one herd at most, should a herd never end.
const MAX_HERD_BLOCKS: usize = 10_000;

// Messages of mainnet (the participants' network), each checked by the request parser before
// it is sent. Slots and epochs are far apart per kind, so that no two requests share a root
// unless meant to, and each kind stays inside one fork: blocks in Capella (`block_body`), the
// rest in Fulu (`batch::fork_info`).
/// First slot of the throughput measurements' `AGGREGATION_SLOT`s (Fulu).
const AGGREGATION_SLOT_BASE: u64 = 13_200_000;
/// First slot of the shared-message throughput measurements; each measurement takes the next
/// [`SHARED_SLOTS_EACH`] slots (far above the other requests' slots, so no root is shared with
/// them).
const SHARED_SLOT_BASE: u64 = 100_000_000;
const SHARED_SLOTS_EACH: u64 = 10_000_000;
/// First block slot (Capella: epochs 194,048 to 269,567).
const BLOCK_SLOT_BASE: u64 = 6_300_000;
/// Epoch of the first herd (Fulu, below the throughput slots).
const HERD_EPOCH_BASE: u64 = 411_500;

/// The throwaway PKI: the participants' server certificates (IP SAN 127.0.0.1) under one CA,
/// the coordinator's client certificate under another.
struct Pki {
    /// The CA the coordinator trusts for the participants.
    server_ca: PathBuf,
    /// Per participant: its certificate and key.
    servers: Vec<(PathBuf, PathBuf)>,
    /// The CA the participants trust for clients.
    client_ca: PathBuf,
    /// The coordinator's certificate and key.
    coordinator: (PathBuf, PathBuf),
}

fn pki_error(e: rcgen::Error) -> SignerError {
    SignerError::System(format!("bench PKI: {e}"))
}

/// A self-signed CA named `name`.
fn make_ca(name: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().map_err(pki_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(pki_error)?;
    Ok((cert, key))
}

/// A leaf certificate named `cn` with `sans` for `usage`, signed by `ca`; written as
/// `<dir>/<cn>.pem` and `<dir>/<cn>.key` (0600).
fn issue(
    dir: &Path,
    ca: &(rcgen::Certificate, rcgen::KeyPair),
    cn: &str,
    sans: Vec<rcgen::SanType>,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> Result<(PathBuf, PathBuf)> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let key = KeyPair::generate().map_err(pki_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.0, &ca.1).map_err(pki_error)?;
    let (cert_path, key_path) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    std::fs::write(&cert_path, cert.pem()).map_err(SignerError::io(&cert_path))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(SignerError::io(path))
}

impl Pki {
    fn make(dir: &Path, participants: &[String]) -> Result<Pki> {
        use rcgen::{ExtendedKeyUsagePurpose, SanType};
        std::fs::create_dir_all(dir).map_err(SignerError::io(dir))?;
        let server_ca = make_ca("hsm-signer bench participants CA")?;
        let client_ca = make_ca("hsm-signer bench coordinators CA")?;
        let write_ca = |name: &str, ca: &rcgen::Certificate| {
            let path = dir.join(name);
            std::fs::write(&path, ca.pem()).map_err(SignerError::io(&path))?;
            Ok::<_, SignerError>(path)
        };
        let servers = participants
            .iter()
            .map(|name| {
                issue(
                    dir,
                    &server_ca,
                    name,
                    vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))],
                    ExtendedKeyUsagePurpose::ServerAuth,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let coordinator = issue(
            dir,
            &client_ca,
            COORDINATOR,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Pki {
            server_ca: write_ca("participants-ca.pem", &server_ca.0)?,
            servers,
            client_ca: write_ca("coordinators-ca.pem", &client_ca.0)?,
            coordinator,
        })
    }
}

/// A participant's configuration file: the embedded default's devices, written out (a
/// configuration file replaces the embedded default), and mutual TLS for the coordinator.
#[derive(Serialize)]
struct ParticipantToml {
    default_device: String,
    device: Vec<DeviceToml>,
    tls: TlsToml,
}

#[derive(Serialize)]
struct TlsToml {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: PathBuf,
    allowed_clients: Vec<String>,
}

fn write_participant_config(dir: &Path, cert: &(PathBuf, PathBuf), pki: &Pki) -> Result<()> {
    let devices = embedded_devices(dir)?;
    let text = toml::to_string(&ParticipantToml {
        default_device: devices
            .first()
            .map(|d| d.name.clone())
            .ok_or_else(|| SignerError::Internal("the embedded default has no device".into()))?,
        device: devices,
        tls: TlsToml {
            cert_file: cert.0.clone(),
            key_file: cert.1.clone(),
            client_ca_file: pki.client_ca.clone(),
            allowed_clients: vec![COORDINATOR.to_owned()],
        },
    })
    .map_err(|e| SignerError::Internal(format!("a participant's configuration: {e}")))?;
    let path = dir.join(crate::config::CONFIG_FILE_NAME);
    std::fs::write(&path, text).map_err(SignerError::io(&path))
}

/// The keys of one shape, with their validator keys parsed for the final check.
struct Shape {
    name: &'static str,
    keys: Arc<[Arc<KeyRecord>]>,
    pubkeys: Vec<PublicKey>,
}

impl Shape {
    fn new(name: &'static str, keys: Vec<Arc<KeyRecord>>) -> Result<Shape> {
        let pubkeys = keys
            .iter()
            .map(|k| {
                PublicKey::key_validate(&k.pubkey.0).map_err(|e| {
                    SignerError::Bls(format!("validator key {} is invalid: {e:?}", k.pubkey))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Shape {
            name,
            keys: keys.into(),
            pubkeys,
        })
    }
}

/// Distributed 2-of-3 keys.
struct DistributedKeys {
    /// The coordinator's records (every share remote).
    records: Vec<Arc<KeyRecord>>,
    /// Per participant, its shares to seal.
    shares: Vec<Vec<SealLine>>,
}

fn distributed_keys(n: usize, names: &[String], endpoints: &[String]) -> Result<DistributedKeys> {
    let ids: Vec<ShareId> = (1..=PARTICIPANTS as u64).filter_map(ShareId::new).collect();
    let account: Vec<ParticipantRef> = ids
        .iter()
        .zip(endpoints)
        .map(|(id, endpoint)| ParticipantRef {
            id: *id,
            endpoint: endpoint.clone(),
        })
        .collect();
    let mut records = Vec::with_capacity(n);
    let mut shares: Vec<Vec<SealLine>> = (0..PARTICIPANTS).map(|_| Vec::new()).collect();
    for _ in 0..n {
        let sk = crate::bls::random_secret_key()?;
        let composite = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
        let mut remote = Vec::with_capacity(PARTICIPANTS);
        for (j, (id, share)) in threshold::split(&sk, THRESHOLD, &ids)?
            .into_iter()
            .enumerate()
        {
            let share_pubkey = PublicKeyBytes(crate::bls::public_key_bytes(&share));
            remote.push(RemoteShare {
                id,
                participant: names[j].clone(),
                pubkey: share_pubkey,
            });
            let secret = Zeroizing::new(share.to_bytes());
            shares[j].push(SealLine {
                composite,
                id,
                share_pubkey,
                secret: hex::encode(secret.as_ref()),
                account: Some(Distributed {
                    signing_threshold: THRESHOLD as u32,
                    participants: account.clone(),
                }),
            });
        }
        let record = KeyRecord {
            version: KEY_FILE_VERSION,
            pubkey: composite,
            threshold: THRESHOLD as u32,
            shares: Vec::new(),
            origin: "bench distributed".into(),
            derivation_path: None,
            remote,
            distributed: None,
        };
        record.validate().map_err(|reason| {
            SignerError::Internal(format!("a distributed key's record: {reason}"))
        })?;
        records.push(Arc::new(record));
    }
    Ok(DistributedKeys { records, shares })
}

/// Signing requests as a validator client sends them, and their jobs: the root computed by the
/// parser the API uses, on the participants' network, which must accept them.
struct Requests {
    network: Network,
    aggregation_slots: AtomicU64,
    shared_slots: AtomicU64,
    block_slots: AtomicU64,
    herds: AtomicU64,
}

impl Requests {
    fn new() -> Result<Requests> {
        Ok(Requests {
            network: Network::preset("mainnet")
                .ok_or_else(|| SignerError::Internal("mainnet is not built in".into()))?,
            aggregation_slots: AtomicU64::new(AGGREGATION_SLOT_BASE),
            shared_slots: AtomicU64::new(SHARED_SLOT_BASE),
            block_slots: AtomicU64::new(BLOCK_SLOT_BASE),
            herds: AtomicU64::new(HERD_EPOCH_BASE),
        })
    }

    /// The job of `body` for `key`; the request travels with it when a participant holds a
    /// share.
    fn job(&self, key: &Arc<KeyRecord>, body: String, class: Class) -> Result<SignJob> {
        let bad = |e: crate::consensus::ConsensusError| {
            SignerError::Internal(format!("the bench's own request is refused: {e}"))
        };
        let request = SignRequest::from_json(body.as_bytes(), self.network.preset).map_err(bad)?;
        request.check_network(&self.network).map_err(bad)?;
        let root = request.signing_root(&self.network).map_err(bad)?;
        Ok(SignJob {
            arrived: None,
            key: key.clone(),
            signing_root: root,
            class,
            deadline: None,
            freshness: 0,
            request: (!key.remote.is_empty()).then(|| Forwarded {
                shared: crate::api::batch::shared_message(crate::consensus::RequestKind::Typed(
                    request.message_type(),
                )),
                body: Arc::from(body),
            }),
        })
    }

    /// An `AGGREGATION_SLOT` of a slot no other request of the run has.
    fn aggregation_slot(&self, key: &Arc<KeyRecord>) -> Result<SignJob> {
        let slot = self.aggregation_slots.fetch_add(1, Ordering::Relaxed);
        self.job(key, aggregation_slot(slot), Class::Aggregate)
    }

    /// An `AGGREGATION_SLOT` of `slot`.
    fn aggregation_slot_of(&self, key: &Arc<KeyRecord>, slot: u64) -> Result<SignJob> {
        self.job(key, aggregation_slot(slot), Class::Aggregate)
    }

    /// The first of [`SHARED_SLOTS_EACH`] slots no request of the run has had.
    fn shared_slots(&self) -> u64 {
        self.shared_slots
            .fetch_add(SHARED_SLOTS_EACH, Ordering::Relaxed)
    }

    /// A `BLOCK_V2` of a slot above every block before it (slashing protection on the
    /// participants refuses a second block at a slot, and any at or below a key's first).
    fn block(&self, key: &Arc<KeyRecord>) -> Result<SignJob> {
        let slot = self.block_slots.fetch_add(1, Ordering::Relaxed);
        self.job(key, crate::bench::block_body(slot), Class::Block)
    }

    /// The herd of the next epoch, in the order a validator client fires it at an epoch
    /// boundary: each key's selection proof, then registration, then attestation (one per key
    /// and epoch: slashing protection refuses a second vote for a target). Key `i` is in the
    /// committee of the epoch's slot `i mod 32`.
    fn herd(&self, keys: &[Arc<KeyRecord>]) -> Result<Vec<(usize, SignJob)>> {
        let epoch = self.herds.fetch_add(1, Ordering::Relaxed);
        let slot = |i: usize| epoch * 32 + (i % 32) as u64;
        let mut jobs = Vec::with_capacity(3 * keys.len());
        for (i, key) in keys.iter().enumerate() {
            jobs.push((
                i,
                self.job(key, aggregation_slot(slot(i)), Class::Aggregate)?,
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            jobs.push((
                i,
                self.job(key, registration(&key.pubkey, epoch), Class::Admin)?,
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            jobs.push((i, self.job(key, attestation(slot(i)), Class::Attestation)?));
        }
        Ok(jobs)
    }
}

/// A builder registration of `pubkey`, renewed at `timestamp`.
fn registration(pubkey: &PublicKeyBytes, timestamp: u64) -> String {
    format!(
        r#"{{"type":"VALIDATOR_REGISTRATION","validator_registration":{{"fee_recipient":"0x{f}","gas_limit":"30000000","timestamp":"{timestamp}","pubkey":"{pubkey}"}}}}"#,
        f = "ab".repeat(20),
    )
}

/// CPU time read from `/proc`: where the cores went during a measurement.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    /// This process (the coordinator), seconds.
    coordinator: f64,
    /// The participant processes together, seconds.
    participants: f64,
    /// Every process of the host, and all time of all cores, seconds.
    host_busy: f64,
    host_total: f64,
}

impl CpuMark {
    /// Now; `None` where `/proc` does not tell (the figures are then left out).
    fn now(participants: &[u32]) -> Option<CpuMark> {
        let (host_busy, host_total) = host_cpu()?;
        Some(CpuMark {
            at: Instant::now(),
            coordinator: process_cpu("self")?,
            participants: participants
                .iter()
                .map(|pid| process_cpu(&pid.to_string()))
                .sum::<Option<f64>>()?,
            host_busy,
            host_total,
        })
    }

    /// Where the CPU went from `self` to `later`, for `signatures` signatures.
    fn spent(&self, later: &CpuMark, signatures: usize) -> CpuSpent {
        let per_signature = |s: f64| s * 1e3 / signatures.max(1) as f64;
        let coordinator = later.coordinator - self.coordinator;
        let participants = later.participants - self.participants;
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let total = (later.host_total - self.host_total).max(1e-9);
        let busy = later.host_busy - self.host_busy;
        // Cores of the host, as /proc/stat counts them (its total advances `cores` seconds a
        // second).
        let cores = total / wall;
        CpuSpent {
            coordinator_ms_per_signature: per_signature(coordinator),
            participants_ms_per_signature: per_signature(participants),
            host_busy: busy / total,
            others_cores: ((busy - coordinator - participants) / total * cores).max(0.0),
        }
    }
}

/// Where the CPU went during a throughput measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSpent {
    /// CPU of the coordinator (this process: the bench's clients, the scheduler, the local
    /// devices' signing, combining and verifying), milliseconds per signature.
    pub coordinator_ms_per_signature: f64,
    /// CPU of the three participant processes together, milliseconds per signature.
    pub participants_ms_per_signature: f64,
    /// Share of the host's cores busy (with anything).
    pub host_busy: f64,
    /// Cores taken by processes other than the bench and its participants (the host is shared).
    pub others_cores: f64,
}

/// A signature the bench got, checked after the measurements.
struct Got {
    key: usize,
    root: [u8; 32],
    signature: Signature,
}

/// What a set of requests gave.
#[derive(Default)]
struct Outcomes {
    latencies: Vec<Duration>,
    got: Vec<Got>,
    failed: usize,
    first_failure: Option<String>,
}

impl Outcomes {
    fn record(
        &mut self,
        key: usize,
        root: [u8; 32],
        took: Duration,
        result: std::result::Result<Signature, JobError>,
    ) {
        match result {
            Ok(signature) => {
                self.latencies.push(took);
                self.got.push(Got {
                    key,
                    root,
                    signature,
                });
            }
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn absorb(&mut self, other: Outcomes) {
        self.latencies.extend(other.latencies);
        self.got.extend(other.got);
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

fn task_error(e: tokio::task::JoinError) -> SignerError {
    SignerError::Internal(format!("a bench task failed: {e}"))
}

/// Sign one job and time it (from submission to the signature).
async fn timed(
    scheduler: &Scheduler,
    job: SignJob,
) -> (Duration, std::result::Result<Signature, JobError>) {
    let t = Instant::now();
    let result = scheduler.sign(job).await;
    (t.elapsed(), result)
}

/// `AGGREGATION_SLOT`s for `seconds`, `concurrency` in flight; signatures per second.
async fn throughput(
    scheduler: &Scheduler,
    shape: &Shape,
    requests: &Arc<Requests>,
    seconds: f64,
    concurrency: usize,
    messages: Messages,
) -> Result<(f64, Outcomes)> {
    let first_shared = requests.shared_slots();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (scheduler, keys, requests, next) = (
            scheduler.clone(),
            shape.keys.clone(),
            requests.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Outcomes::default();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let i = (n % keys.len() as u64) as usize;
                let job = match messages {
                    Messages::Distinct => requests.aggregation_slot(&keys[i])?,
                    Messages::Shared => {
                        let slot = first_shared + (n / keys.len() as u64) % SHARED_SLOTS_EACH;
                        requests.aggregation_slot_of(&keys[i], slot)?
                    }
                };
                let root = job.signing_root.0;
                let (took, result) = timed(&scheduler, job).await;
                out.record(i, root, took, result);
            }
            Ok::<_, SignerError>(out)
        }));
    }
    let mut all = Outcomes::default();
    for t in tasks {
        all.absorb(t.await.map_err(task_error)??);
    }
    Ok((all.got.len() as f64 / start.elapsed().as_secs_f64(), all))
}

/// The messages of a throughput measurement.
#[derive(Debug, Clone, Copy)]
enum Messages {
    /// Every request another slot's: no two share a signing root.
    Distinct,
    /// Every key signs one slot, then the next: the keys' requests in flight share roots.
    Shared,
}

/// `n` blocks one after another (after [`WARM_UP_BLOCKS`] not counted), nothing else running.
async fn idle_blocks(
    scheduler: &Scheduler,
    shape: &Shape,
    requests: &Requests,
    n: usize,
) -> Result<(Latency, Outcomes)> {
    let mut out = Outcomes::default();
    for b in 0..n + WARM_UP_BLOCKS {
        let i = b % shape.keys.len();
        let job = requests.block(&shape.keys[i])?;
        let root = job.signing_root.0;
        let (took, result) = timed(scheduler, job).await;
        out.record(i, root, took, result);
        if b + 1 == WARM_UP_BLOCKS {
            out.latencies.clear();
        }
    }
    Ok((Latency::of(&out.latencies), out))
}

/// One herd, with a block at its start and others one after another while it runs, at most
/// one every `interval`.
struct HerdRound {
    herd: Outcomes,
    elapsed: Duration,
    blocks: Outcomes,
}

async fn herd_round(
    scheduler: &Scheduler,
    shape: &Shape,
    requests: &Arc<Requests>,
    interval: Duration,
) -> Result<HerdRound> {
    // Built before the clock starts, as the API would have parsed them on its connections.
    let jobs = requests.herd(&shape.keys)?;
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // The blocks first, so that the harness does not queue the first one behind the herd's
    // tasks.
    let blocks = {
        let (scheduler, keys, requests, done) = (
            scheduler.clone(),
            shape.keys.clone(),
            requests.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let mut out = Outcomes::default();
            let mut next = start;
            for b in 0..MAX_HERD_BLOCKS {
                tokio::time::sleep_until(next.into()).await;
                if done.load(Ordering::Acquire) {
                    break;
                }
                let i = b % keys.len();
                let job = requests.block(&keys[i])?;
                let root = job.signing_root.0;
                let (took, result) = timed(&scheduler, job).await;
                out.record(i, root, took, result);
                // The next one `interval` after this one began, and never before it is signed:
                // a block then waits for the herd, not for the block before it (each holder
                // has one block thread, and a distributed block takes longer than `interval`
                // under load). The idle blocks are one after another too.
                next = (next + interval).max(Instant::now());
            }
            Ok::<_, SignerError>(out)
        })
    };
    // The herd, submitted from inside the runtime and yielding every 64 submissions, as a
    // server's connection tasks would take requests off their sockets (`bench scenario`).
    let herd = {
        let (scheduler, done) = (scheduler.clone(), done.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::with_capacity(jobs.len());
            for (n, (i, job)) in jobs.into_iter().enumerate() {
                let scheduler = scheduler.clone();
                let root = job.signing_root.0;
                tasks.push(tokio::spawn(async move {
                    (i, root, timed(&scheduler, job).await)
                }));
                if n % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            let mut out = Outcomes::default();
            for t in tasks {
                let (i, root, (took, result)) = t.await.map_err(task_error)?;
                out.record(i, root, took, result);
            }
            done.store(true, Ordering::Release);
            Ok::<_, SignerError>((out, start.elapsed()))
        })
    };
    let herd = herd.await.map_err(task_error);
    // However the herd ended, the blocks stop.
    done.store(true, Ordering::Release);
    let blocks = blocks.await.map_err(task_error)??;
    let (herd, elapsed) = herd??;
    Ok(HerdRound {
        herd,
        elapsed,
        blocks,
    })
}

/// How many of `got` do not verify under their shape's validator keys: blst's own checks
/// (signature subgroup, hashing the root again), in random-linear-combination batches of 64,
/// each failed batch checked signature by signature; on every core.
fn count_unverified(pubkeys: &[PublicKey], got: &[Got]) -> usize {
    use rayon::prelude::*;
    let one = |g: &Got| {
        pubkeys.get(g.key).is_some_and(|pk| {
            g.signature
                .verify(true, &g.root, crate::bls::DST, &[], pk, false)
                == blst::BLST_ERROR::BLST_SUCCESS
        })
    };
    got.par_chunks(64)
        .map(|chunk| {
            if batch_verifies(pubkeys, chunk) {
                0
            } else {
                chunk.iter().filter(|g| !one(g)).count()
            }
        })
        .sum()
}

fn batch_verifies(pubkeys: &[PublicKey], chunk: &[Got]) -> bool {
    let mut random = vec![0u8; 8 * chunk.len()];
    if getrandom::getrandom(&mut random).is_err() {
        return false;
    }
    let rands: Vec<blst::blst_scalar> = random
        .chunks_exact(8)
        .map(|r| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(r);
            // Never zero: a zero weight would let its signature through unchecked.
            b[0] |= 1;
            blst::blst_scalar { b }
        })
        .collect();
    let mut msgs = Vec::with_capacity(chunk.len());
    let mut pks = Vec::with_capacity(chunk.len());
    let mut sigs = Vec::with_capacity(chunk.len());
    for g in chunk {
        let Some(pk) = pubkeys.get(g.key) else {
            return false;
        };
        msgs.push(g.root.as_slice());
        pks.push(pk);
        sigs.push(&g.signature);
    }
    Signature::verify_multiple_aggregate_signatures(
        &msgs,
        crate::bls::DST,
        &pks,
        false,
        &sigs,
        true,
        &rands,
        64,
    ) == blst::BLST_ERROR::BLST_SUCCESS
}

/// One throughput measurement of a shape.
struct Throughput {
    rate: f64,
    outcomes: Outcomes,
    /// Where the CPU went (`None`: no `/proc`).
    cpu: Option<CpuSpent>,
    /// Partials asked of the participants per request (`None`: none was sent).
    partials_per_request: Option<f64>,
}

/// Everything measured of one shape, before verification.
struct Measured {
    hedges: u64,
    distinct: Throughput,
    shared: Throughput,
    idle: Latency,
    herd_blocks: Outcomes,
    herd_rate: f64,
    other: Outcomes,
}

/// Requests for partials sent to the participants, and partials they asked for, so far.
fn asked(participants: &Participants) -> (u64, u64) {
    participants.iter().fold((0, 0), |(r, n), p| {
        (
            r + p.metrics.sign_requests.load(Ordering::Relaxed),
            n + p.metrics.partials_asked.load(Ordering::Relaxed),
        )
    })
}

/// [`throughput`] for `opts.seconds`, with the CPU the host's processes spent and the
/// partials asked of the participants per request meanwhile.
async fn measured_throughput(
    scheduler: &Scheduler,
    shape: &Shape,
    requests: &Arc<Requests>,
    opts: &DistributedOptions,
    (participants, remote): (&[u32], &Participants),
    messages: Messages,
) -> Result<Throughput> {
    let before = CpuMark::now(participants);
    let asked_before = asked(remote);
    let (rate, outcomes) = throughput(
        scheduler,
        shape,
        requests,
        opts.seconds,
        opts.concurrency,
        messages,
    )
    .await?;
    let cpu = before
        .zip(CpuMark::now(participants))
        .map(|(before, after)| before.spent(&after, outcomes.got.len()));
    let asked_after = asked(remote);
    let partials_per_request = (asked_after.0 > asked_before.0)
        .then(|| (asked_after.1 - asked_before.1) as f64 / (asked_after.0 - asked_before.0) as f64);
    Ok(Throughput {
        rate,
        outcomes,
        cpu,
        partials_per_request,
    })
}

async fn measure(
    scheduler: &Scheduler,
    shape: &Shape,
    requests: &Arc<Requests>,
    opts: &DistributedOptions,
    (participants, remote): (&[u32], &Participants),
) -> Result<Measured> {
    let mut other = Outcomes::default();
    // Warm up: connections to the participants, sessions, the runtime's threads.
    let (_, warm) = throughput(
        scheduler,
        shape,
        requests,
        0.5,
        opts.concurrency,
        Messages::Distinct,
    )
    .await?;
    other.absorb(warm);
    let distinct = measured_throughput(
        scheduler,
        shape,
        requests,
        opts,
        (participants, remote),
        Messages::Distinct,
    )
    .await?;
    let shared = measured_throughput(
        scheduler,
        shape,
        requests,
        opts,
        (participants, remote),
        Messages::Shared,
    )
    .await?;
    let (idle_before, before) = idle_blocks(scheduler, shape, requests, opts.blocks).await?;
    other.absorb(before);
    let (mut herd, mut herd_blocks) = (Outcomes::default(), Outcomes::default());
    let mut herd_time = Duration::ZERO;
    for _ in 0..opts.rounds.max(1) {
        let round = herd_round(scheduler, shape, requests, opts.block_interval).await?;
        herd_time += round.elapsed;
        herd.absorb(round.herd);
        herd_blocks.absorb(round.blocks);
    }
    let herd_rate = herd.got.len() as f64 / herd_time.as_secs_f64().max(1e-9);
    // The idle latency before and after the herds, the lower p50 kept: a slow spell of the
    // host during one would otherwise flatter the ratio to it (as `bench scenario` does).
    let (idle_after, after) = idle_blocks(scheduler, shape, requests, opts.blocks).await?;
    other.absorb(after);
    // Herd failures count with the others (the herd's own latencies are not reported).
    herd.latencies.clear();
    other.absorb(herd);
    Ok(Measured {
        hedges: 0,
        distinct,
        shared,
        idle: if idle_after.p50_ms < idle_before.p50_ms {
            idle_after
        } else {
            idle_before
        },
        herd_blocks,
        herd_rate,
        other,
    })
}

/// Run it: the participants and the PKI in `scratch` (the caller removes it), the local keys
/// on the configured devices (at least three; the embedded default has them).
pub fn run(
    config: &Config,
    scratch: &Path,
    opts: &DistributedOptions,
) -> Result<DistributedReport> {
    let started = Instant::now();
    let load_average_at_start = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    let n = opts.keys.max(1);
    let devices = devices_for(config, 3)?;
    let names: Vec<String> = (1..=PARTICIPANTS)
        .map(|i| format!("participant-{i}"))
        .collect();
    let ports = free_ports(PARTICIPANTS)?;
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    eprintln!("making a PKI and {n} keys of each shape…");
    let pki = Pki::make(&scratch.join("pki"), &names)?;
    let one = (0..n)
        .map(|_| make_key(&devices, 1, 1))
        .collect::<Result<Vec<_>>>()?;
    let local = (0..n)
        .map(|_| make_key(&devices, THRESHOLD, PARTICIPANTS))
        .collect::<Result<Vec<_>>>()?;
    let DistributedKeys {
        records: distributed,
        shares,
    } = distributed_keys(n, &names, &endpoints)?;
    let dirs: Vec<PathBuf> = names.iter().map(|name| scratch.join(name)).collect();
    eprintln!("sealing the shares on the participants' own tokens…");
    seal_in_children(&dirs, shares)?;
    let mut processes = Servers::default();
    for ((name, dir), (port, cert)) in names.iter().zip(&dirs).zip(ports.iter().zip(&pki.servers)) {
        write_participant_config(dir, cert, &pki)?;
        processes.start(name, dir, &[], *port)?;
    }
    processes.wait_listening("https")?;
    let pids = processes.pids();
    let settings: Vec<ParticipantSettings> = names
        .iter()
        .zip(&endpoints)
        .map(|(name, url)| ParticipantSettings {
            name: name.clone(),
            url: url.clone(),
            ca_file: pki.server_ca.clone(),
            cert_file: pki.coordinator.0.clone(),
            key_file: pki.coordinator.1.clone(),
            max_in_flight: opts.max_in_flight,
            timeout_ms: None,
            connect_timeout_ms: None,
        })
        .collect();
    let participants = Participants::open(&settings)?;
    let remote = participants.clone();
    let max_in_flight = participants
        .iter()
        .map(|p| p.max_in_flight())
        .min()
        .unwrap_or(0);
    let metrics = Arc::new(SchedulerMetrics::default());
    let scheduler = Scheduler::with_participants(
        Devices::from_open(devices.clone()),
        participants,
        bench_config(false),
        metrics.clone(),
    );
    let shapes = [
        Shape::new("1-of-1", one)?,
        Shape::new("local 2-of-3", local)?,
        Shape::new("distributed 2-of-3", distributed)?,
    ];
    let setup_seconds = started.elapsed().as_secs_f64();
    let requests = Arc::new(Requests::new()?);
    let rt =
        crate::scheduler::runtime().map_err(|e| SignerError::System(format!("runtime: {e}")))?;
    let mut measured = Vec::new();
    for shape in &shapes {
        eprintln!(
            "{}: throughput, idle blocks, {} herds, idle blocks…",
            shape.name, opts.rounds
        );
        let hedges = metrics.hedges.load(Ordering::Relaxed);
        let mut m = rt.block_on(measure(
            &scheduler,
            shape,
            &requests,
            opts,
            (&pids, &remote),
        ))?;
        m.hedges = metrics.hedges.load(Ordering::Relaxed) - hedges;
        measured.push(m);
    }
    // The measurements are over: free the cores for the check.
    drop(scheduler);
    drop(remote);
    drop(processes);
    eprintln!("verifying every signature…");
    let base = measured.first().map_or(0.0, |m| m.distinct.rate);
    let shared_base = measured.first().map_or(0.0, |m| m.shared.rate);
    let mut reports = Vec::new();
    for (shape, m) in shapes.iter().zip(measured) {
        let sets = [
            &m.distinct.outcomes,
            &m.shared.outcomes,
            &m.herd_blocks,
            &m.other,
        ];
        let verified: usize = sets.iter().map(|o| o.got.len()).sum();
        let unverified: usize = sets
            .iter()
            .map(|o| count_unverified(&shape.pubkeys, &o.got))
            .sum();
        let herd_block = Latency::of(&m.herd_blocks.latencies);
        reports.push(ShapeReport {
            shape: shape.name,
            signatures_per_sec: m.distinct.rate,
            ratio_to_1_of_1: m.distinct.rate / base.max(1e-9),
            latency: Latency::of(&m.distinct.outcomes.latencies),
            cpu: m.distinct.cpu,
            shared: SharedThroughput {
                signatures_per_sec: m.shared.rate,
                ratio_to_1_of_1: m.shared.rate / shared_base.max(1e-9),
                latency: Latency::of(&m.shared.outcomes.latencies),
                cpu: m.shared.cpu,
                partials_per_request: m.shared.partials_per_request,
            },
            herd_block_p50_over_idle: herd_block.p50_ms / m.idle.p50_ms.max(1e-9),
            idle_block: m.idle,
            herd_block,
            herd_blocks: m.herd_blocks.latencies.len(),
            herd_signatures_per_sec: m.herd_rate,
            hedges: m.hedges,
            failed: sets.iter().map(|o| o.failed).sum(),
            first_failure: sets.iter().find_map(|o| o.first_failure.clone()),
            verified,
            unverified,
        });
    }
    let targets = match reports.last() {
        Some(d) => vec![
            Target {
                what: "distributed throughput / 1-of-1",
                measured: d.ratio_to_1_of_1,
                target: ">= 0.25",
                pass: d.ratio_to_1_of_1 >= 0.25,
            },
            Target {
                what: "distributed throughput / 1-of-1, one message for every key at a time",
                measured: d.shared.ratio_to_1_of_1,
                target: ">= 0.25",
                pass: d.shared.ratio_to_1_of_1 >= 0.25,
            },
            Target {
                what: "distributed herd block p50 / idle block p50",
                measured: d.herd_block_p50_over_idle,
                target: "<= 2",
                pass: d.herd_block_p50_over_idle <= 2.0,
            },
        ],
        None => Vec::new(),
    };
    eprintln!("timing the BLS work alone…");
    let bls_floor = crate::bench::bls_floor::measure(BLS_FLOOR_SIGNATURES)?;
    Ok(DistributedReport {
        bench: "distributed",
        keys: n,
        concurrency: opts.concurrency,
        seconds_each: opts.seconds,
        rounds: opts.rounds.max(1),
        block_interval_ms: opts.block_interval.as_secs_f64() * 1e3,
        devices: devices.len(),
        participants: PARTICIPANTS,
        max_in_flight,
        cores: std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1),
        load_average_at_start,
        setup_seconds,
        shapes: reports,
        bls_floor,
        targets,
    })
}

impl DistributedReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "distributed: 2-of-3 across {} participant processes (mutual TLS 1.3 on loopback, \
             {} partials in flight each) against local 2-of-3 and 1-of-1 on {} devices; {} keys \
             per shape; {} cores shared by all\n\
             throughput: {} AGGREGATION_SLOTs in flight for {:.1} s; blocks: BLOCK_V2 one after \
             another (idle), and so (at most one every {:.0} ms) during {} herds of each key's AGGREGATION_SLOT, \
             VALIDATOR_REGISTRATION and ATTESTATION\n",
            self.participants,
            self.max_in_flight,
            self.devices,
            self.keys,
            self.cores,
            self.concurrency,
            self.seconds_each,
            self.block_interval_ms,
            self.rounds,
        );
        out += &format!(
            "{:<19} {:>8} {:>8} {:>8} {:>8} | {:>9} {:>8} | {:>9} {:>8} {:>6} {:>8} {:>7} | {:>6} {:>10}\n",
            "shape",
            "sigs/s",
            "÷ 1-of-1",
            "p50 ms",
            "p99 ms",
            "idle p50",
            "p99",
            "herd p50",
            "p99",
            "blocks",
            "herd/s",
            "÷ idle",
            "failed",
            "unverified"
        );
        for s in &self.shapes {
            out += &format!(
                "{:<19} {:>8.0} {:>8.3} {:>8.2} {:>8.2} | {:>7.2}ms {:>6.2}ms | {:>7.2}ms {:>6.2}ms {:>6} {:>8.0} {:>7.2} | {:>6} {:>10}\n",
                s.shape,
                s.signatures_per_sec,
                s.ratio_to_1_of_1,
                s.latency.p50_ms,
                s.latency.p99_ms,
                s.idle_block.p50_ms,
                s.idle_block.p99_ms,
                s.herd_block.p50_ms,
                s.herd_block.p99_ms,
                s.herd_blocks,
                s.herd_signatures_per_sec,
                s.herd_block_p50_over_idle,
                s.failed,
                s.unverified
            );
        }
        out += "CPU per signature during the throughput measurement (from /proc):\n";
        for s in &self.shapes {
            if let Some(c) = &s.cpu {
                out += &format!(
                    "{:<19} coordinator {:>5.2} ms + participants {:>5.2} ms = {:>5.2} ms; host \
                     {:>3.0}% busy, {:.2} cores of it other processes'; {} hedged partials in \
                     the whole measurement\n",
                    s.shape,
                    c.coordinator_ms_per_signature,
                    c.participants_ms_per_signature,
                    c.coordinator_ms_per_signature + c.participants_ms_per_signature,
                    c.host_busy * 100.0,
                    c.others_cores,
                    s.hedges
                );
            }
        }
        out += &format!(
            "one message for every key at a time ({} AGGREGATION_SLOTs in flight, every key \
             signing each slot in turn, {:.1} s):\n",
            self.concurrency, self.seconds_each
        );
        for s in &self.shapes {
            let t = &s.shared;
            let mut cpu = t.cpu.as_ref().map_or(String::new(), |c| {
                format!(
                    "; coordinator {:.2} ms + participants {:.2} ms a signature",
                    c.coordinator_ms_per_signature, c.participants_ms_per_signature
                )
            });
            if let Some(n) = t.partials_per_request {
                cpu += &format!("; {n:.1} partials a request to a participant");
            }
            out += &format!(
                "{:<19} {:>8.0} {:>8.3} {:>8.2} {:>8.2}{cpu}\n",
                s.shape,
                t.signatures_per_sec,
                t.ratio_to_1_of_1,
                t.latency.p50_ms,
                t.latency.p99_ms,
            );
        }
        let f = &self.bls_floor;
        out += &format!(
            "BLS work alone, one thread, {} signatures each (what each ratio would be with \
             transport, tokens and scheduling free):\n",
            f.signatures
        );
        for (what, w) in [
            ("distinct messages", &f.distinct),
            ("one message for every key", &f.shared),
        ] {
            out += &format!(
                "{what:<26} 1-of-1 {:.2} ms; distributed 2-of-3 {:.2} ms (participants {:.2} + \
                 coordinator {:.2}): {:.3} x 1-of-1\n",
                w.whole_ms,
                w.participants_ms + w.coordinator_ms,
                w.participants_ms,
                w.coordinator_ms,
                w.ratio,
            );
        }
        for t in &self.targets {
            out += &format!(
                "{} = {:.3} (target {}): {}\n",
                t.what,
                t.measured,
                t.target,
                if t.pass { "PASS" } else { "FAIL" }
            );
        }
        let verified: usize = self.shapes.iter().map(|s| s.verified).sum();
        let unverified: usize = self.shapes.iter().map(|s| s.unverified).sum();
        let failed: usize = self.shapes.iter().map(|s| s.failed).sum();
        out += &format!(
            "{verified} signatures checked with blst against their validator keys: {unverified} \
             did not verify; {failed} requests got no signature; setup {:.1} s; load average at \
             start {}\n",
            self.setup_seconds,
            self.load_average_at_start
                .map_or("unknown".to_owned(), |l| format!("{l:.2}"))
        );
        for s in self.shapes.iter().filter(|s| s.first_failure.is_some()) {
            out += &format!(
                "{}: first failure: {}\n",
                s.shape,
                s.first_failure.as_deref().unwrap_or_default()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participants_device_entries_make_the_embedded_defaults_devices() {
        let dir = tempfile::tempdir().unwrap();
        let text = toml::to_string(&ParticipantToml {
            default_device: "softhsm-1".into(),
            device: embedded_devices(dir.path()).unwrap(),
            tls: TlsToml {
                cert_file: dir.path().join("c.pem"),
                key_file: dir.path().join("c.key"),
                client_ca_file: dir.path().join("ca.pem"),
                allowed_clients: vec![COORDINATOR.into()],
            },
        })
        .unwrap();
        let path = dir.path().join(crate::config::CONFIG_FILE_NAME);
        std::fs::write(&path, text).unwrap();
        let written = Config::load(None, dir.path()).unwrap();
        let embedded = Config::embedded(dir.path()).unwrap();
        assert!(written.source.is_some());
        assert_eq!(written.default_device, embedded.default_device);
        assert_eq!(written.devices.len(), embedded.devices.len());
        for (w, e) in written.devices.iter().zip(&embedded.devices) {
            assert_eq!(format!("{:?}", w.hsm), format!("{:?}", e.hsm));
            assert_eq!(w.module_env, e.module_env);
            assert_eq!(w.so_pin_file, e.so_pin_file);
        }
        assert_eq!(written.tls.allowed_clients, [COORDINATOR]);
    }

    /// A distributed key's record (no device is touched: it is only named).
    fn remote_key() -> Arc<KeyRecord> {
        let sk = crate::bls::random_secret_key().unwrap();
        let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
        Arc::new(KeyRecord {
            version: KEY_FILE_VERSION,
            pubkey: pk,
            threshold: 1,
            shares: Vec::new(),
            origin: "test".into(),
            derivation_path: None,
            remote: vec![RemoteShare {
                id: ShareId::ONE,
                participant: "p".into(),
                pubkey: pk,
            }],
            distributed: None,
        })
    }

    #[test]
    fn the_bench_requests_parse_on_mainnet_each_with_its_own_root() {
        let requests = Requests::new().unwrap();
        let keys = vec![remote_key(), remote_key()];
        let mut jobs = requests.herd(&keys).unwrap();
        jobs.extend(requests.herd(&keys).unwrap());
        for _ in 0..2 {
            jobs.push((0, requests.block(&keys[0]).unwrap()));
            jobs.push((0, requests.aggregation_slot(&keys[0]).unwrap()));
        }
        let mut roots: Vec<[u8; 32]> = jobs.iter().map(|(_, j)| j.signing_root.0).collect();
        let n = roots.len();
        roots.sort();
        roots.dedup();
        assert_eq!(roots.len(), n, "two requests share a root");
        // A participant computes the root itself: the request travels with the job.
        assert!(jobs.iter().all(|(_, j)| j.request.is_some()));
        let classes: Vec<Class> = jobs[..6].iter().map(|(_, j)| j.class).collect();
        use Class::{Admin, Aggregate, Attestation};
        assert_eq!(
            classes,
            [Aggregate, Aggregate, Admin, Admin, Attestation, Attestation]
        );
    }
}
