//! `hsm-signer bench …`: benchmarks that answer an operator's questions, each reporting ratios
//! measured in one run (ours against a baseline), as a table or as JSON.

pub mod batch;
pub mod bls_floor;
pub mod child;
pub mod combine;
pub mod custody;
pub mod distributed;
pub mod health_flood;
pub mod http;
pub mod scenario;
pub mod slashing;
pub mod slashing_longrun;
pub mod threshold;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::{transport, AppState};
use crate::config::Config;
use crate::error::{Result, SignerError};

/// The real server (router, connection handling, scheduler) serving `state` on a loopback port
/// of its own runtime, for the benchmarks that measure over HTTP.
pub(crate) struct LoopbackServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LoopbackServer {
    /// Serve `state` within the limits of `config.server`.
    pub(crate) fn start(config: &Config, state: AppState) -> Result<LoopbackServer> {
        let runtime = crate::scheduler::runtime()
            .map_err(|e| SignerError::System(format!("runtime: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| SignerError::System(format!("binding a loopback port: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SignerError::System(format!("loopback port: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = transport::Limits::from_settings(&config.server)?;
        let metrics = state.metrics.clone();
        let app = crate::api::router(state);
        let server = runtime.spawn(transport::serve(
            listener,
            None,
            app,
            limits,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(LoopbackServer {
            addr,
            runtime,
            stop,
            server,
        })
    }

    /// Stop accepting, and wait for the open connections to finish.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.runtime.block_on(self.server);
    }
}

/// Run `op` on `threads` threads for `duration`; return completed operations per second.
pub(crate) fn throughput<F>(threads: usize, duration: Duration, op: F) -> f64
where
    F: Fn(u64) + Sync,
{
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done, op) = (&stop, &done, &op);
            s.spawn(move || {
                let mut i = (t as u64) << 40;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(i);
                    i += 1;
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A distinct 32-byte message per operation index, so no work can be cached.
pub fn message(i: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    m
}

/// A BLOCK_V2 (a Capella header) at `slot`, as a validator client sends it.
pub(crate) fn block_body(slot: u64) -> String {
    format!(
        r#"{{"type":"BLOCK_V2","fork_info":{{"fork":{{"previous_version":"0x02000000","current_version":"0x03000000","epoch":"194048"}},"genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"}},"beacon_block":{{"version":"CAPELLA","block_header":{{"slot":"{slot}","proposer_index":"7","parent_root":"0x{p}","state_root":"0x{s}","body_root":"0x{b}"}}}}}}"#,
        p = "11".repeat(32),
        s = "22".repeat(32),
        b = "33".repeat(32),
    )
}

/// Sign `n` blocks from `first_slot` on, one after another; their latencies.
pub(crate) async fn sign_blocks(
    http: &reqwest::Client,
    url: &str,
    first_slot: u64,
    n: usize,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .body(block_body(first_slot + i))
            .send()
            .await
            .map_err(|e| SignerError::Invalid(format!("bench: a block: {e}")))?;
        let status = resp.status();
        let _ = resp.bytes().await;
        if !status.is_success() {
            return Err(SignerError::Invalid(format!(
                "bench: a block was answered {status}"
            )));
        }
        out.push(t.elapsed());
    }
    Ok(out)
}
