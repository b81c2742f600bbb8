//! The HTTP surface: the Web3Signer eth2 signing API (`/api/v1/eth2/…`), `/upcheck`,
//! `/healthcheck` and `/reload`, and the participant side of distributed signing
//! (`/api/v1/eth2/distributed/…`, [`distributed`]). Handlers parse and answer; consensus rules,
//! slashing protection, scheduling and custody live in their own modules. Access control: the
//! admin routes sit behind the bearer token ([`auth`]), the transport is HTTPS with optional
//! mutual TLS ([`tls`]), plain HTTP is served on loopback only, the distributed endpoints only
//! to mutual TLS 1.3 clients on the allow-list, and who may sign what is the signing policy's
//! ([`policy`]). Connections are served, timed and capped by [`transport`].

pub mod auth;
pub mod batch;
mod distributed;
mod error;
mod health;
pub mod keymanager;
pub mod metrics;
pub mod policy;
mod reload;
mod sign;
pub mod throttle;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub(crate) use error::ApiError;

use crate::api::metrics::Metrics;
use crate::app::Signer;

/// Largest request body accepted. A phase0 block with every list full is well under 1 MiB of
/// JSON, and so is a batch of [`batch::MAX_BATCH_KEYS`] keys; anything larger is refused before
/// parsing. A Gloas payload envelope carries its block's transactions: one over 2 MiB of JSON
/// (a block of some 1 MB of transactions) is refused too.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

pub use crate::app::Runtime;

/// Shared state of the server: the signer it serves ([`Signer`], reached through `Deref`), and
/// what only HTTP needs (the bearer token, the signing policy, probes, metrics, reload status).
#[derive(Clone)]
pub struct AppState {
    signer: Signer,
    reload: Arc<reload::ReloadState>,
    /// Metrics of the API, and the page that renders every service's.
    pub metrics: Arc<Metrics>,
    /// The API bearer token; without one, every guarded route answers 401.
    api_token: Option<Arc<auth::ApiToken>>,
    /// `/healthcheck`'s device checks, shared by every caller.
    health: Arc<health::HealthProbe>,
    /// The signing policy; a reload swaps it with the key set.
    policy: Arc<RwLock<Arc<policy::Policy>>>,
    /// The request rate of the endpoints that answer anyone.
    open_limiter: Arc<throttle::OpenLimiter>,
    /// `tls.allowed_clients`, asked again on the routes that need mutual TLS.
    mutual_tls_clients: Arc<tls::AllowList>,
}

impl std::ops::Deref for AppState {
    type Target = Signer;
    fn deref(&self) -> &Signer {
        &self.signer
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Signer {
        &mut self.signer
    }
}

impl AppState {
    /// The HTTP state around `signer`.
    pub fn serving(signer: Signer) -> AppState {
        let metrics = Arc::new(Metrics {
            scheduler: signer.scheduler_metrics.clone(),
            precompute: signer.precompute_metrics.clone(),
            ..Metrics::default()
        });
        // `serve_with` refuses settings that are not valid before anything is served.
        let open_rates =
            throttle::OpenRates::from_settings(&signer.config.server).unwrap_or_default();
        // A list that does not parse lets no one in (and `serve_with` refuses it anyway).
        let mutual_tls_clients =
            tls::AllowList::parse(&signer.config.tls.allowed_clients).unwrap_or_default();
        AppState {
            signer,
            reload: Arc::default(),
            metrics,
            api_token: None,
            health: Arc::default(),
            policy: Arc::default(),
            open_limiter: Arc::new(throttle::OpenLimiter::new(open_rates)),
            mutual_tls_clients: Arc::new(mutual_tls_clients),
        }
    }

    /// Enforce `policy` (the default, until this is called: no per-client restriction, any fee
    /// recipient, no voluntary exit).
    pub fn with_policy(self, policy: policy::Policy) -> AppState {
        self.set_policy(policy);
        self
    }

    /// The signing policy in force.
    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_policy(&self, policy: policy::Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Guard the admin routes (and the signing API when `auth.require_on_signing`) with `token`.
    pub fn with_api_token(mut self, token: auth::ApiToken) -> AppState {
        self.api_token = Some(Arc::new(token));
        self
    }
}

/// The router with every route of the contract.
pub fn router(state: AppState) -> Router {
    // The Web3Signer signing API: open by default (validator clients generally send no token).
    let signing = Router::new()
        .route("/api/v1/eth2/sign/{identifier}", post(sign::sign))
        .route("/api/v1/eth2/sign", post(batch::sign_batch))
        .route("/api/v1/eth2/publicKeys", get(health::public_keys));
    // Every signing request is attributed to a client of the signing policy (or refused).
    let signing = auth::identify_signing_client(signing, &state);
    // The participant side of distributed signing: mutual TLS 1.3 clients on the allow-list
    // only, named by their certificate (a bearer token opens nothing here).
    let distributed = auth::identify_coordinator(distributed::routes(), &state);
    // Admin routes and the Keymanager API (`/eth/v1/keystores`): always behind the bearer token.
    let admin = Router::new()
        .route("/reload", post(reload::start).get(reload::status))
        .route("/admin/devices/{name}", post(health::set_device))
        .route("/admin/participants/{name}", post(health::set_participant))
        .merge(keymanager::routes());
    let admin = auth::require_token(admin, &state);
    // Probes and metrics stay open, at a bounded rate.
    let open = Router::new()
        .route("/upcheck", get(health::upcheck))
        .route("/healthcheck", get(health::healthcheck))
        .route("/metrics", get(health::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle::pace_open,
        ));
    Router::new()
        .merge(signing)
        .merge(distributed)
        .merge(admin)
        .merge(open)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serve plain HTTP until SIGINT or SIGTERM.
pub async fn serve(state: AppState, addr: SocketAddr) -> std::io::Result<()> {
    serve_with(state, addr, None).await
}

/// Serve until SIGINT or SIGTERM: HTTPS when `tls` is given (see [`tls::server_config`]),
/// else plain HTTP, within the limits of `[server]` ([`transport::Limits`]). Prints
/// `hsm-signer listening on http(s)://ADDR` once bound.
pub(crate) async fn serve_with(
    state: AppState,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let limits = transport::Limits::from_settings(&state.config.server)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    throttle::OpenRates::from_settings(&state.config.server)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Err(e) = transport::raise_descriptor_limit(&limits) {
        eprintln!("WARNING: {e}");
        tracing::warn!("{e}");
    }
    distributed::startup_warnings(&state, tls.is_some());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let metrics = state.metrics.clone();
    let app = router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%local, ?limits, "listening ({scheme})");
    println!("hsm-signer listening on {scheme}://{local}");
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    transport::serve(listener, tls, app, limits, metrics, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
