//! `/upcheck`, `/healthcheck` (per-device checks: 200 when all are up, 503 otherwise) and the
//! public key list. `/healthcheck` and `/metrics` answer anyone: they say what a monitor needs
//! (up or down, the configured device names, counts) and nothing about the host (file paths,
//! token labels, module paths, database hosts), which goes to the log.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::sign::Served;
use crate::api::AppState;

/// How long one device may take to answer a health check.
const DEVICE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /upcheck`.
pub async fn upcheck() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "OK",
    )
        .into_response()
}

/// `GET /api/v1/eth2/publicKeys`.
/// A client of the signing policy sees only the keys it may use.
pub async fn public_keys(
    State(app): State<AppState>,
    axum::extract::Extension(caller): axum::extract::Extension<crate::api::policy::Caller>,
) -> Response {
    let runtime = app.runtime();
    let keys: Vec<String> = runtime
        .keys
        .iter()
        // A distributed share is no validator key of this signer: a client that listed it
        // would ask for signatures this endpoint never makes.
        .filter(|k| caller.may_use(&k.pubkey) && Served::Complete.serves(k))
        .map(|k| k.pubkey.to_string())
        .collect();
    axum::Json(keys).into_response()
}

/// How long one round of device checks answers every `/healthcheck`.
pub(crate) const HEALTH_TTL: Duration = Duration::from_secs(2);

/// One device's last check: its name, and whether it is up.
type DeviceHealth = (String, bool);

/// The device checks `/healthcheck` reports, made at most once per [`HEALTH_TTL`] whoever asks
/// and however often: the endpoint is unauthenticated, and every check takes a session from a
/// device the signer needs for blocks. Concurrent callers wait for the one round in progress
/// rather than starting their own. A check is background work of the scheduler
/// ([`crate::scheduler::Scheduler::probe_device`]): it runs only while its device has a
/// session to spare beyond one kept for a block. A device with none to spare is busy signing,
/// and its own operations answer instead: up while they succeed, down when every one since the
/// last round failed.
#[derive(Default)]
pub(crate) struct HealthProbe {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<DeviceHealth>)>>,
    /// Each device's operation counts (attempted, failed) at the last round.
    counts: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Device checks made (for `/metrics`).
    probes: std::sync::atomic::AtomicU64,
    /// Rounds where a device was too busy to be checked and its operations answered.
    busy: std::sync::atomic::AtomicU64,
}

impl HealthProbe {
    /// The devices' health, from the last round if it is fresh and covers the same devices.
    async fn devices(&self, scheduler: &crate::scheduler::Scheduler) -> Vec<DeviceHealth> {
        let devices = scheduler.devices();
        let names: Vec<String> = devices.iter().map(|d| d.name().to_owned()).collect();
        let mut last = self.last.lock().await;
        if let Some((at, health)) = last.as_ref() {
            let same = health.iter().map(|h| &h.0).eq(names.iter());
            if same && at.elapsed() < HEALTH_TTL {
                return health.clone();
            }
        }
        let mut health = Vec::with_capacity(names.len());
        for device in devices.iter() {
            let (sched, name) = (scheduler.clone(), device.name().to_owned());
            let counts = device.op_counts();
            let result = tokio::time::timeout(
                DEVICE_CHECK_TIMEOUT,
                tokio::task::spawn_blocking(move || sched.probe_device(&name, |d| d.check())),
            )
            .await;
            let before = self
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(device.name().to_owned(), counts);
            if matches!(result, Ok(Ok(Some(_)))) {
                self.probes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // What was wrong can name token labels and module paths: the log has it, the
            // unauthenticated answer only says DOWN.
            let up = match result {
                Ok(Ok(None)) => {
                    self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // No session to spare: the device's own operations since the last round.
                    let (ops, failed) = counts;
                    let (ops0, failed0) = before.unwrap_or((0, 0));
                    device.is_enabled() && !(ops > ops0 && failed - failed0 == ops - ops0)
                }
                Ok(Ok(Some(Ok(())))) => true,
                Ok(Ok(Some(Err(e)))) => {
                    tracing::warn!(device = %device.name(), error = %e, "health check: device down");
                    false
                }
                Ok(Err(e)) => {
                    tracing::error!(device = %device.name(), error = %e, "health check task failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(device = %device.name(), "health check: no answer within 3 s");
                    false
                }
            };
            health.push((device.name().to_owned(), up));
        }
        *last = Some((std::time::Instant::now(), health.clone()));
        health
    }

    /// The devices' health as last known, without checking anything now (a scrape of
    /// `/metrics` must not take sessions or count as device operations): the last round of
    /// `/healthcheck`, or, for a device it did not cover, whether the device is enabled and its
    /// own operations since that round did not all fail.
    pub(crate) fn last_known(&self, scheduler: &crate::scheduler::Scheduler) -> Vec<DeviceHealth> {
        let last = self
            .last
            .try_lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(_, h)| h.clone()));
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        scheduler
            .devices()
            .iter()
            .map(|device| {
                let name = device.name().to_owned();
                let round = last
                    .as_ref()
                    .and_then(|h| h.iter().find(|(n, _)| *n == name).map(|(_, up)| *up));
                let (ops, failed) = device.op_counts();
                let (ops0, failed0) = counts.get(&name).copied().unwrap_or((0, 0));
                let failing = ops > ops0 && failed - failed0 == ops - ops0;
                let up = device.is_enabled() && !failing && round.unwrap_or(true);
                (name, up)
            })
            .collect()
    }

    /// Device checks made so far.
    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks not made because the device had no session to spare (its operations answered).
    pub fn busy(&self) -> u64 {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `GET /healthcheck`.
pub async fn healthcheck(State(app): State<AppState>) -> Response {
    let runtime = app.runtime();
    let mut checks = Vec::new();
    let mut all_up = true;
    let health = app.health.devices(&runtime.scheduler).await;
    for (device, (_, up)) in runtime.scheduler.devices().iter().zip(health) {
        all_up &= up;
        let stats = device.pool_stats();
        checks.push(json!({
            "id": format!("device:{}", device.name()),
            "status": if up { "UP" } else { "DOWN" },
            "sessions_in_use": stats.in_use,
            "max_sessions": stats.max_sessions,
        }));
    }
    // Participants: each one's state; what matters for signing is whether every key still
    // has t shares it can reach, which alone makes the whole answer DOWN (one participant of
    // a 2-of-3 down is a degraded signer, not a stopped one: its check says so).
    let (participant_checks, below) = participant_health(&runtime);
    if !participant_checks.is_empty() {
        checks.extend(participant_checks);
        all_up &= below.is_empty();
        checks.push(json!({
            "id": "distributed-keys",
            "status": if below.is_empty() { "UP" } else { "DOWN" },
            "keys_below_threshold": below.len(),
            "first_below_threshold": below.iter().take(5).map(|k| k.to_string()).collect::<Vec<_>>(),
        }));
    }
    // Key file errors name their files: counted here, each one in the log at start and reload.
    let keys_up = runtime.key_errors.is_empty();
    all_up &= keys_up;
    checks.push(json!({
        "id": "keys-check",
        "status": if keys_up { "UP" } else { "DOWN" },
        "keys_loaded": runtime.keys.len(),
        "key_errors": runtime.key_errors.len(),
    }));
    let status = if all_up { "UP" } else { "DOWN" };
    let code = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({ "status": status, "checks": checks, "outcome": status })),
    )
        .into_response()
}

/// Each participant's check, and the keys with shares on participants that can no longer reach
/// t of their shares (enabled local devices and available participants).
fn participant_health(
    runtime: &crate::app::Runtime,
) -> (Vec<serde_json::Value>, Vec<crate::keys::PublicKeyBytes>) {
    let scheduler = &runtime.scheduler;
    let participants = scheduler.participants();
    if participants.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let in_flight = scheduler.participants_in_flight();
    let checks = participants
        .iter()
        .map(|p| {
            let status = match (p.is_enabled(), p.is_down()) {
                (false, _) => "DISABLED",
                (true, true) => "DOWN",
                (true, false) => "UP",
            };
            json!({
                "id": format!("participant:{}", p.name()),
                "status": status,
                "in_flight": in_flight.get(p.name()).copied().unwrap_or(0),
                "max_in_flight": p.max_in_flight(),
            })
        })
        .collect();
    let devices = scheduler.devices();
    let below = runtime
        .keys
        .iter()
        .filter(|k| !k.remote.is_empty())
        .filter(|k| {
            reachable_shares(k, scheduler, |name| {
                devices.get(name).is_ok_and(|d| d.is_enabled())
            }) < k.threshold as usize
        })
        .map(|k| k.pubkey)
        .collect();
    (checks, below)
}

/// A key's shares that can sign now: on local devices `device_ok` accepts, or on available
/// participants.
fn reachable_shares(
    key: &crate::keys::KeyRecord,
    scheduler: &crate::scheduler::Scheduler,
    device_ok: impl Fn(&str) -> bool,
) -> usize {
    let participants = scheduler.participants();
    let local = key.shares.iter().filter(|s| device_ok(&s.device)).count();
    let remote = key
        .remote
        .iter()
        .filter(|r| {
            participants
                .get(&r.participant)
                .is_some_and(|p| p.is_available())
        })
        .count();
    local + remote
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let runtime = app.runtime();
    let mut gauges = Vec::new();
    // Device health as last known (no check is made for a scrape), and the threshold keys that
    // can no longer reach t shares on devices that are up and participants that are available.
    let health = app.health.last_known(&runtime.scheduler);
    let up = |name: &str| health.iter().any(|(n, up)| n == name && *up);
    for (device, is_up) in &health {
        gauges.push((
            "signer_device_up",
            format!("device=\"{device}\""),
            f64::from(u8::from(*is_up)),
        ));
    }
    let below = runtime
        .keys
        .iter()
        .filter(|k| k.threshold > 1)
        .filter(|k| reachable_shares(k, &runtime.scheduler, up) < k.threshold as usize)
        .count();
    gauges.push((
        "signer_threshold_keys_below_threshold",
        String::new(),
        below as f64,
    ));
    for (device, busy, cap) in runtime.scheduler.sessions_in_use() {
        gauges.push((
            "signer_device_sessions_in_use",
            format!("device=\"{device}\""),
            busy as f64,
        ));
        gauges.push((
            "signer_device_sessions_max",
            format!("device=\"{device}\""),
            cap as f64,
        ));
    }
    for device in runtime.scheduler.devices().iter() {
        gauges.push((
            "signer_device_operations",
            format!("device=\"{}\"", device.name()),
            device.op_counts().0 as f64,
        ));
    }
    // Slashing protection's writer: decisions, and the transactions (commits) they took; read
    // once, for these gauges and the transaction-time summary below.
    let slashing_stats = app.slashing.as_ref().map(|s| s.stats());
    if let Some(stats) = &slashing_stats {
        gauges.push((
            "signer_slashing_checks",
            String::new(),
            stats.requests as f64,
        ));
        gauges.push((
            "signer_slashing_transactions",
            String::new(),
            stats.transactions as f64,
        ));
        gauges.push((
            "signer_slashing_failed_transactions",
            String::new(),
            stats.failed_transactions as f64,
        ));
        // Pruning: what it removed, how long its last pass took, how often it failed.
        gauges.push((
            "signer_slashing_pruned_records",
            String::new(),
            stats.pruned_records as f64,
        ));
        gauges.push((
            "signer_slashing_prune_passes",
            String::new(),
            stats.prune_passes as f64,
        ));
        gauges.push((
            "signer_slashing_prune_failures",
            String::new(),
            stats.prune_failures as f64,
        ));
        gauges.push((
            "signer_slashing_last_prune_seconds",
            String::new(),
            stats.last_prune_duration.as_secs_f64(),
        ));
    }
    gauges.push((
        "signer_keystore_kdf_runs",
        String::new(),
        crate::keys::eip2335::kdf_runs() as f64,
    ));
    gauges.push((
        "signer_health_device_checks",
        String::new(),
        app.health.probes() as f64,
    ));
    gauges.push((
        "signer_health_device_busy",
        String::new(),
        app.health.busy() as f64,
    ));
    let (waiting, cpu) = runtime.scheduler.queued();
    gauges.push((
        "signer_queue_waiting_for_device",
        String::new(),
        waiting as f64,
    ));
    gauges.push(("signer_queue_waiting_for_cpu", String::new(), cpu as f64));
    let limit = runtime.scheduler.cpu_buffer_limit();
    gauges.push(("signer_cpu_buffer_limit", String::new(), limit as f64));
    gauges.push((
        "signer_keys_loaded",
        String::new(),
        runtime.keys.len() as f64,
    ));
    for (name, busy) in runtime.scheduler.participants_in_flight() {
        gauges.push((
            "signer_participant_in_flight",
            format!("participant=\"{name}\""),
            busy as f64,
        ));
    }
    let mut page = app.metrics.render(&gauges);
    runtime.scheduler.participants().render_metrics(&mut page);
    if let Some(stats) = &slashing_stats {
        // Each check transaction's own time in the store, as a summary (its mean is sum ÷
        // count): the database's latency as the signer sees it.
        crate::metrics::render_summary(
            &mut page,
            "signer_slashing_transaction_seconds",
            stats.transaction_time,
            stats.transactions + stats.failed_transactions,
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// `POST /admin/devices/{name}` with `{"enabled": false}` takes a device out of service (new
/// work goes to other devices; threshold keys fail over), `{"enabled": true}` puts it back.
/// For maintenance: swap an HSM without restarting the signer.
pub async fn set_device(
    State(app): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, crate::api::ApiError> {
    let enabled = switch(&body)?;
    let runtime = app.runtime();
    let device = runtime
        .scheduler
        .devices()
        .get(&name)
        .map_err(|_| crate::api::ApiError::not_found(format!("no device named {name:?}")))?;
    device.set_enabled(enabled);
    tracing::warn!(device = %name, enabled = enabled, "device switched by operator");
    Ok(axum::Json(json!({ "device": name, "enabled": enabled })).into_response())
}

/// `POST /admin/participants/{name}` with `{"enabled": false}` takes a remote participant out
/// of service (threshold keys sign with the others while t remain), `{"enabled": true}` puts it
/// back. For maintenance of a participant host, or to exclude one that misbehaves.
pub async fn set_participant(
    State(app): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, crate::api::ApiError> {
    let enabled = switch(&body)?;
    let runtime = app.runtime();
    let participant =
        runtime.scheduler.participants().get(&name).ok_or_else(|| {
            crate::api::ApiError::not_found(format!("no participant named {name:?}"))
        })?;
    participant.set_enabled(enabled);
    tracing::warn!(participant = %name, enabled = enabled, "participant switched by operator");
    Ok(axum::Json(json!({ "participant": name, "enabled": enabled })).into_response())
}

/// The body of the `/admin/…/{name}` switches: `{"enabled": bool}`.
fn switch(body: &[u8]) -> Result<bool, crate::api::ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        enabled: bool,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.enabled)
        .map_err(|e| {
            crate::api::ApiError::bad_request(format!("expected {{\"enabled\": bool}}: {e}"))
        })
}
