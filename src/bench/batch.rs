//! `bench batch`: the batch endpoint against single requests and against raw blst, in one run.
//! The real server in process (router, connection handling, scheduler, SoftHSM tokens) on a
//! loopback port, N keys sealed on the default device. Measured:
//! - raw blst: the same N signatures on every core, no device, no HTTP (`sign`, which hashes the
//!   message to G2 each time), and with the message hashed once (what the signer does when
//!   many keys sign one message; the true ceiling);
//! - one batch: one `POST /api/v1/eth2/sign` with N identifiers of an `AGGREGATION_SLOT`;
//! - singles: the same N signatures as N `POST /api/v1/eth2/sign/{key}`, 64 in flight;
//! - the seed's herd as batches: blocks signed one after another over HTTP while every key's
//!   selection proof and attestation arrive as batches of `batch_size`, against blocks on the
//!   idle server (block p99 ratio, target ≤ 2).
//!
//! Every signature of the batch and of the singles is verified against its key.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::AppState;
use crate::app::Signer;
use crate::bench::scenario::Latency;
use crate::config::Config;
use crate::consensus::Network;
use crate::devices::Devices;
use crate::error::{Result, SignerError};
use crate::keys::{seal_share, KeyRecord, KeyStore, PublicKeyBytes, ShareId};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Keys (and signatures per measurement).
    pub keys: usize,
    /// Keys per batch in the herd.
    pub batch_size: usize,
    /// Blocks signed in each block phase.
    pub blocks: usize,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Keys, and signatures per measurement.
    pub keys: usize,
    /// Signing threads of the raw blst measurement (the host's cores).
    pub threads: usize,
    /// Raw blst signatures per second (`sign`: hash to G2, then multiply, per signature).
    pub raw_blst_per_sec: f64,
    /// Raw blst with the message hashed to G2 once and each key multiplying it: the ceiling of
    /// many keys signing one message, which is what the signer does for a batch.
    pub raw_hashed_once_per_sec: f64,
    /// Batch ÷ the hashed-once ceiling.
    pub batch_over_hashed_once: f64,
    /// Signatures per second through one HTTP batch.
    pub batch_per_sec: f64,
    /// Signatures per second through single HTTP requests.
    pub singles_per_sec: f64,
    /// Batch ÷ raw blst (target ≥ 0.90).
    pub batch_over_raw: f64,
    /// Batch ÷ singles.
    pub batch_over_singles: f64,
    /// Keys per batch in the herd.
    pub herd_batch_size: usize,
    /// Block latency on the idle server.
    pub idle: Latency,
    /// Block latency while the herd's batches are signed.
    pub herd: Latency,
    /// Herd block p99 ÷ idle block p99 (target ≤ 2).
    pub p99_herd_over_idle: f64,
}

impl BatchReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, l: &Latency| {
            format!(
                "{name:<28} {:>8.2}ms {:>8.2}ms {:>8.2}ms\n",
                l.p50_ms, l.p99_ms, l.max_ms
            )
        };
        format!(
            "batch: {} AGGREGATION_SLOT signatures, {} keys on the default device\n\
             {:<28} {:>10.0}/s\n{:<28} {:>10.0}/s\n{:<28} {:>10.0}/s\n{:<28} {:>10.0}/s\n\
             batch / raw blst = {:.2} (target >= 0.90); batch / singles = {:.2}; batch / hashed \
             once = {:.2}\n\
             herd: every key's selection proof and attestation in batches of {}, blocks one \
             after another\n{:<28} {:>10} {:>10} {:>10}\n{}{}\
             block p99 herd / idle = {:.2} (target <= 2)\n",
            self.keys,
            self.keys,
            format!("raw blst ({} threads)", self.threads),
            self.raw_blst_per_sec,
            "raw blst, H(m) hashed once",
            self.raw_hashed_once_per_sec,
            "one HTTP batch",
            self.batch_per_sec,
            "single HTTP requests",
            self.singles_per_sec,
            self.batch_over_raw,
            self.batch_over_singles,
            self.batch_over_hashed_once,
            self.herd_batch_size,
            "",
            "block p50",
            "block p99",
            "block max",
            row("idle", &self.idle),
            row("herd as batches", &self.herd),
            self.p99_herd_over_idle,
        )
    }
}

pub(crate) const GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

pub(crate) fn fork_info() -> String {
    format!(
        r#"{{"fork":{{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"}},"genesis_validators_root":"{GVR}"}}"#
    )
}

pub(crate) fn aggregation_slot(slot: u64) -> String {
    format!(
        r#"{{"type":"AGGREGATION_SLOT","fork_info":{},"aggregation_slot":{{"slot":"{slot}"}}}}"#,
        fork_info()
    )
}

pub(crate) fn attestation(slot: u64) -> String {
    let epoch = slot / 32;
    format!(
        r#"{{"type":"ATTESTATION","fork_info":{},"attestation":{{"slot":"{slot}","index":"0","beacon_block_root":"0x{r}","source":{{"epoch":"{s}","root":"0x{r}"}},"target":{{"epoch":"{epoch}","root":"0x{r}"}}}}}}"#,
        fork_info(),
        r = "44".repeat(32),
        s = epoch.saturating_sub(1),
    )
}

fn batch_body(keys: &[String], request: &str) -> String {
    let ids: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        r#"{{"identifiers":[{}],"signing_request":{request}}}"#,
        ids.join(",")
    )
}

/// A response's body as JSON.
async fn json_of(resp: reqwest::Response) -> Result<serde_json::Value> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| bench_error("an answer", e))?;
    serde_json::from_slice(&bytes).map_err(|e| bench_error("an answer", e))
}

fn bench_error(what: &str, e: impl std::fmt::Display) -> SignerError {
    SignerError::Invalid(format!("batch bench: {what}: {e}"))
}

/// The signing root the server computes for `request` (it names it when a supplied one differs).
async fn root_of(http: &reqwest::Client, base: &str, key: &str, request: &str) -> Result<[u8; 32]> {
    let mut v: serde_json::Value =
        serde_json::from_str(request).map_err(|e| bench_error("request", e))?;
    v["signingRoot"] = serde_json::json!(format!("0x{}", "00".repeat(32)));
    let answer: serde_json::Value = http
        .post(format!("{base}/api/v1/eth2/sign/{key}"))
        .header("content-type", "application/json")
        .body(v.to_string())
        .send()
        .await
        .map_err(|e| bench_error("root probe", e))
        .map(json_of)?
        .await?;
    let computed = answer["message"]
        .as_str()
        .and_then(|m| m.split("computed 0x").nth(1))
        .ok_or_else(|| bench_error("root probe", answer.to_string()))?;
    let mut root = [0u8; 32];
    hex::decode_to_slice(computed.get(..64).unwrap_or_default(), &mut root)
        .map_err(|e| bench_error("root probe", e))?;
    Ok(root)
}

fn verify(pk: &PublicKeyBytes, root: &[u8; 32], signature: &str) -> bool {
    let (Ok(pk), Ok(bytes)) = (
        blst::min_pk::PublicKey::from_bytes(&pk.0),
        hex::decode(signature.trim_start_matches("0x")),
    ) else {
        return false;
    };
    blst::min_pk::Signature::from_bytes(&bytes).is_ok_and(|sig| {
        sig.verify(true, root, crate::bls::DST, &[], &pk, true) == blst::BLST_ERROR::BLST_SUCCESS
    })
}

/// Signatures per second of `sign` applied once to each key, on `threads` threads.
fn each_key_per_sec<S>(
    secrets: &[blst::min_pk::SecretKey],
    threads: usize,
    sign: impl Fn(&blst::min_pk::SecretKey) -> S + Sync,
) -> f64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(sk) = secrets.get(i) else { break };
                std::hint::black_box(sign(sk));
            });
        }
    });
    secrets.len() as f64 / t.elapsed().as_secs_f64()
}

/// One batch; its signatures, in order (an error names the first key that was not signed).
async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    keys: &[String],
    request: &str,
) -> Result<Vec<String>> {
    let resp = http
        .post(format!("{base}/api/v1/eth2/sign"))
        .header("content-type", "application/json")
        .body(batch_body(keys, request))
        .send()
        .await
        .map_err(|e| bench_error("batch", e))?;
    let status = resp.status();
    let answer = json_of(resp).await?;
    let results = answer
        .as_array()
        .filter(|_| status.is_success())
        .ok_or_else(|| bench_error("batch answered", format!("{status} {answer}")))?;
    results
        .iter()
        .map(|r| {
            r["signature"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bench_error("a key of the batch", r.to_string()))
        })
        .collect()
}

/// Run it on the configured devices, with the keys sealed on the default device in a scratch
/// key directory `scratch`.
pub fn run(config: &Config, scratch: &std::path::Path, opts: &BatchOptions) -> Result<BatchReport> {
    let n = opts.keys.max(1);
    let devices = Devices::open_all(config)?;
    let device = devices.get(&config.default_device)?.clone();
    let (mut store, _) = KeyStore::load(scratch)?;
    let mut secrets = Vec::with_capacity(n);
    let mut pubkeys = Vec::with_capacity(n);
    for _ in 0..n {
        let sk = crate::bls::random_secret_key()?;
        let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
        let share = seal_share(&device, &pk, ShareId::ONE, &sk)?;
        store.insert(KeyRecord::whole(pk, share, "bench"))?;
        secrets.push(sk);
        pubkeys.push(pk);
    }
    let block_sk = crate::bls::random_secret_key()?;
    let block_pk = PublicKeyBytes(crate::bls::public_key_bytes(&block_sk));
    store.insert(KeyRecord::whole(
        block_pk,
        seal_share(&device, &block_pk, ShareId::ONE, &block_sk)?,
        "bench",
    ))?;
    let network = Network::preset("mainnet")
        .ok_or_else(|| SignerError::Invalid("mainnet is not built in".into()))?;
    let mut state = AppState::serving(Signer::new(
        config.clone(),
        network,
        (devices, Default::default()),
        store,
        Vec::new(),
        None,
    ));
    // Any slot: no validity windows; no slashing protection (the slashing bench measures it).
    state.clock = None;
    let server = crate::bench::LoopbackServer::start(config, state)?;
    let addr = server.addr;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(2);
    // The validator client signing blocks on a runtime of its own at normal priority; the herd's
    // clients at nice 5 like the server's HTTP runtime (on one host they take the same cores the
    // server needs; from another host they would take none).
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SignerError::System(format!("client runtime: {e}")))?;
    let herd_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 5);
        })
        .build()
        .map_err(|e| SignerError::System(format!("herd runtime: {e}")))?;
    let base = format!("http://{addr}");
    let keys: Vec<String> = pubkeys.iter().map(|p| p.to_string()).collect();
    let result = client_rt.block_on(async {
        let http = reqwest::Client::new();
        let request = aggregation_slot(9_000_000);
        let root = root_of(&http, &base, &keys[0], &request).await?;
        // Raw blst: the same signatures on every core; measured before and after the batch,
        // the faster of the two kept (the ratio is then the least flattering).
        let raw_blst = || each_key_per_sec(&secrets, threads, |sk| crate::bls::sign(sk, &root));
        let raw_before = raw_blst();
        // The ceiling of one message signed by many keys: H(m) once, a multiplication each.
        let hashed = crate::keys::threshold::HashedMessage::new(&root);
        let hashed_once = each_key_per_sec(&secrets, threads, |sk| {
            crate::keys::threshold::partial_sign(sk, &hashed)
        });
        // Warm the server up (connections, threads, sessions).
        post_batch(&http, &base, &keys[..n.min(64)], &request).await?;
        // One batch.
        let t = Instant::now();
        let signatures = post_batch(&http, &base, &keys, &request).await?;
        let batch = n as f64 / t.elapsed().as_secs_f64();
        let raw = raw_before.max(raw_blst());
        let bad = pubkeys
            .iter()
            .zip(&signatures)
            .filter(|(pk, sig)| !verify(pk, &root, sig))
            .count();
        if bad > 0 || signatures.len() != n {
            return Err(bench_error(
                "the batch's signatures",
                format!("{bad} of {} do not verify", signatures.len()),
            ));
        }
        // The same signatures as single requests, 64 in flight.
        let t = Instant::now();
        let singles: Vec<Result<String>> = {
            use futures_util::stream::{self, StreamExt};
            stream::iter(keys.iter().map(|k| {
                let (http, url, body) = (
                    http.clone(),
                    format!("{base}/api/v1/eth2/sign/{k}"),
                    request.clone(),
                );
                async move {
                    let r = http
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| bench_error("a single request", e))?;
                    let v = json_of(r).await?;
                    v["signature"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bench_error("a single request", v.to_string()))
                }
            }))
            .buffered(64)
            .collect()
            .await
        };
        let singles_rate = n as f64 / t.elapsed().as_secs_f64();
        for (pk, sig) in pubkeys.iter().zip(singles) {
            let sig = sig?;
            if !verify(pk, &root, &sig) {
                return Err(bench_error("a single request's signature", pk));
            }
        }
        // Blocks, idle and under the herd as batches.
        let block_url = format!("{base}/api/v1/eth2/sign/{block_pk}");
        crate::bench::sign_blocks(&http, &block_url, 1, 20).await?;
        let idle = crate::bench::sign_blocks(&http, &block_url, 100, opts.blocks).await?;
        let herd_client = reqwest::Client::new();
        let size = opts.batch_size.max(1);
        let herd = async {
            let mut sent = Vec::new();
            for (j, chunk) in keys.chunks(size).enumerate() {
                let slot = 10_000_000 + j as u64;
                for request in [aggregation_slot(slot), attestation(slot)] {
                    let (http, base, chunk) = (herd_client.clone(), base.clone(), chunk.to_vec());
                    sent.push(herd_rt.spawn(async move {
                        post_batch(&http, &base, &chunk, &request)
                            .await
                            .map(|s| s.len())
                    }));
                }
            }
            let mut signed = 0;
            for s in sent {
                signed += s.await.map_err(|e| bench_error("herd", e))??;
            }
            Ok::<usize, SignerError>(signed)
        };
        let (under_herd, signed) = tokio::join!(
            async {
                // Let the herd's batches arrive first, as at an epoch boundary.
                tokio::time::sleep(Duration::from_millis(20)).await;
                crate::bench::sign_blocks(&http, &block_url, 1_000, opts.blocks).await
            },
            herd
        );
        let (under_herd, signed) = (under_herd?, signed?);
        if signed != 2 * n {
            return Err(bench_error("herd", format!("{signed} of {} signed", 2 * n)));
        }
        Ok::<_, SignerError>((raw, hashed_once, batch, singles_rate, idle, under_herd))
    });
    server.stop();
    let (raw, hashed_once, batch, singles, idle, herd) = result?;
    let (idle, herd) = (Latency::of(&idle), Latency::of(&herd));
    Ok(BatchReport {
        bench: "batch",
        keys: n,
        threads,
        raw_blst_per_sec: raw,
        raw_hashed_once_per_sec: hashed_once,
        batch_over_hashed_once: batch / hashed_once,
        batch_per_sec: batch,
        singles_per_sec: singles,
        batch_over_raw: batch / raw,
        batch_over_singles: batch / singles,
        herd_batch_size: opts.batch_size.max(1),
        p99_herd_over_idle: herd.p99_ms / idle.p99_ms.max(f64::MIN_POSITIVE),
        idle,
        herd,
    })
}
