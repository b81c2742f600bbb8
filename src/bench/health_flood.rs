//! `bench health-flood`: does a flood of `/healthcheck` (which answers anyone) slow blocks?
//! The real server in process (router, connection handling, scheduler, SoftHSM tokens) on a
//! loopback port; blocks signed over HTTP one after another, first on the idle server, then
//! while clients ask `/healthcheck` as fast as they can, then idle again. Reports block p50 and
//! p99 in each phase and the ratio of the flood's p99 to the idle one (target ≤ 2).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
pub struct FloodOptions {
    /// Blocks signed in each phase.
    pub blocks: usize,
    /// Concurrent `/healthcheck` clients during the flood, each on its own keep-alive
    /// connection.
    pub clients: usize,
    /// `/healthcheck` requests per second the clients send together; 0: each asks again as
    /// soon as it has its answer, as fast as the host allows.
    pub rate: u64,
    /// Loopback addresses the clients are spread over (127.0.1.1, 127.0.1.2, …): each is a
    /// client address of its own to the server's per-address rate.
    pub sources: usize,
    /// Each request on a connection of its own (opened, asked, closed), not keep-alive.
    pub fresh_connections: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// Benchmark name.
    pub bench: &'static str,
    /// Blocks per phase.
    pub blocks: usize,
    /// Flooding clients.
    pub clients: usize,
    /// Requests per second asked of the flood (0: unpaced).
    pub rate: u64,
    /// Block latency on the idle server (the faster of before and after the flood, by p99).
    pub idle: Latency,
    /// Block latency during the flood.
    pub flood: Latency,
    /// `/healthcheck` answers per second during the flood.
    pub healthchecks_per_sec: f64,
    /// `/healthcheck` answers that were not 200, 503 or 429 (should be 0).
    pub healthcheck_failures: u64,
    /// Loopback addresses the flood came from.
    pub sources: usize,
    /// Whether each flood request opened a connection of its own.
    pub fresh_connections: bool,
    /// Flood requests that waited for their turn (`signer_open_requests_paced_total`).
    pub healthchecks_delayed: u64,
    /// Flood requests answered 429 after the longest wait.
    pub healthchecks_refused: u64,
    /// Device checks the flood caused (the probe's rounds, not one per call).
    pub device_checks: u64,
    /// Flood block p99 ÷ idle block p99 (target ≤ 2).
    pub p99_flood_over_idle: f64,
}

impl FloodReport {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let row = |name: &str, l: &Latency| {
            format!(
                "{name:<22} {:>8.2}ms {:>8.2}ms {:>8.2}ms\n",
                l.p50_ms, l.p99_ms, l.max_ms
            )
        };
        format!(
            "health flood: {} blocks per phase over HTTP; {} clients from {} addresses asking \
             /healthcheck {}{}\n\
             {:<22} {:>10} {:>10} {:>10}\n{}{}\
             /healthcheck answered {:.0}/s during the flood ({} failed; {} waited their turn, \
             {} got 429), {} device checks made\n\
             block p99 flood / idle = {:.2} (target <= 2)\n",
            self.blocks,
            self.clients,
            self.sources,
            if self.fresh_connections {
                "on a new connection each time, "
            } else {
                ""
            },
            if self.rate == 0 {
                "without pause".to_owned()
            } else {
                format!("{} times a second in all", self.rate)
            },
            "",
            "block p50",
            "block p99",
            "block max",
            row("idle", &self.idle),
            row("/healthcheck flood", &self.flood),
            self.healthchecks_per_sec,
            self.healthcheck_failures,
            self.healthchecks_delayed,
            self.healthchecks_refused,
            self.device_checks,
            self.p99_flood_over_idle
        )
    }
}

/// Run it on the configured devices, with one key sealed on the default device in a scratch
/// key directory `scratch`.
pub fn run(config: &Config, scratch: &std::path::Path, opts: &FloodOptions) -> Result<FloodReport> {
    let devices = Devices::open_all(config)?;
    let device = devices.get(&config.default_device)?.clone();
    let sk = crate::bls::random_secret_key()?;
    let pk = PublicKeyBytes(crate::bls::public_key_bytes(&sk));
    let id = ShareId::ONE;
    let share = seal_share(&device, &pk, id, &sk)?;
    let (mut keys, _) = KeyStore::load(scratch)?;
    keys.insert(KeyRecord::whole(pk, share, "bench"))?;
    let network = Network::preset("mainnet")
        .ok_or_else(|| SignerError::Invalid("mainnet is not built in".into()))?;
    let mut state = AppState::serving(Signer::new(
        config.clone(),
        network,
        (devices, Default::default()),
        keys,
        Vec::new(),
        None,
    ));
    // Blocks at any slot: no validity windows, any network.
    state.clock = None;
    state.network_check = false;
    let server = crate::bench::LoopbackServer::start(config, state)?;
    let addr = server.addr;

    // The clients, on threads of their own: the validator client signing blocks at normal
    // priority, the flood at nice 5 like the server's HTTP runtime (on one host it takes the
    // same cores the server needs; from another host it would take none).
    let vc_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SignerError::System(format!("client runtime: {e}")))?;
    let flood_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 5);
        })
        .build()
        .map_err(|e| SignerError::System(format!("flood runtime: {e}")))?;
    let sign_url = format!("http://{addr}/api/v1/eth2/sign/{pk}");
    let health_url = format!("http://{addr}/healthcheck");
    let http = reqwest::Client::new();
    let result = vc_rt.block_on(async {
        // Warm up, then idle.
        crate::bench::sign_blocks(&http, &sign_url, 1, 20).await?;
        let idle_before = crate::bench::sign_blocks(&http, &sign_url, 100, opts.blocks).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let checks_before = metric(addr, "signer_health_device_checks").await;
        let paced = |outcome: &'static str| async move {
            metric(
                addr,
                &format!("signer_open_requests_paced_total{{outcome=\"{outcome}\"}}"),
            )
            .await
        };
        let (delayed_before, refused_before) = (paced("delayed").await, paced("refused").await);
        let every = (opts.rate > 0)
            .then(|| Duration::from_secs_f64(opts.clients as f64 / opts.rate as f64));
        let mut flood = Vec::new();
        for i in 0..opts.clients {
            let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
            let source = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % opts.sources.max(1)) as u8);
            let mut client = reqwest::Client::builder().local_address(std::net::IpAddr::V4(source));
            if opts.fresh_connections {
                client = client.pool_max_idle_per_host(0);
            }
            let client = client
                .build()
                .map_err(|e| SignerError::System(format!("flood client: {e}")))?;
            let url = health_url.clone();
            flood.push(flood_rt.spawn(async move {
                let mut tick = every.map(|d| {
                    let mut t = tokio::time::interval(d);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    t
                });
                while !stop.load(Ordering::Relaxed) {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    match client.get(&url).send().await {
                        Ok(r) if [200, 503, 429].contains(&r.status().as_u16()) => {
                            let _ = r.bytes().await;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        // Let the flood reach its pace before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let from = answered.load(Ordering::Relaxed);
        let under_flood = crate::bench::sign_blocks(&http, &sign_url, 100_000, opts.blocks).await;
        let rate = (answered.load(Ordering::Relaxed) - from) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        let under_flood = under_flood?;
        let device_checks = metric(addr, "signer_health_device_checks")
            .await
            .saturating_sub(checks_before);
        let delayed = paced("delayed").await.saturating_sub(delayed_before);
        let refused = paced("refused").await.saturating_sub(refused_before);
        let idle_after = crate::bench::sign_blocks(&http, &sign_url, 200_000, opts.blocks).await?;
        Ok::<_, SignerError>((
            idle_before,
            under_flood,
            idle_after,
            rate,
            failed.load(Ordering::Relaxed),
            device_checks,
            (delayed, refused),
        ))
    });
    server.stop();
    let (idle_before, flood, idle_after, rate, failures, device_checks, (delayed, refused)) =
        result?;
    let (before, after) = (Latency::of(&idle_before), Latency::of(&idle_after));
    // The faster idle phase is the yardstick: a slow spell of the host in one of them would
    // otherwise flatter the ratio.
    let idle = if after.p99_ms < before.p99_ms {
        after
    } else {
        before
    };
    let flood = Latency::of(&flood);
    Ok(FloodReport {
        bench: "health-flood",
        blocks: opts.blocks,
        clients: opts.clients,
        rate: opts.rate,
        p99_flood_over_idle: flood.p99_ms / idle.p99_ms.max(1e-6),
        idle,
        flood,
        healthchecks_per_sec: rate,
        healthcheck_failures: failures,
        sources: opts.sources,
        fresh_connections: opts.fresh_connections,
        healthchecks_delayed: delayed,
        healthchecks_refused: refused,
        device_checks,
    })
}

/// The series `name` (with its labels) from `/metrics`, asked from an address of its own
/// (127.0.2.1) so that the flood's pace does not hold it up.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let Ok(http) = reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 2, 1)))
        .build()
    else {
        return 0;
    };
    let Ok(resp) = http.get(format!("http://{addr}/metrics")).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
