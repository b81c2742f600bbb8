//! The server's connections: the accept loop, TLS handshakes, and one hyper HTTP/1.1
//! connection per task, with the limits a port open to a network needs and `axum::serve` does
//! not have. A connection that sends no complete request head in time, whether new, trickling
//! or idle between requests, is closed (hyper's header-read timer); a body must arrive in time
//! too; connections are capped in all and per client address, and so are TLS handshakes, so
//! that idle or slow sockets from one host cannot take the places validator clients need.
//! Connections over a cap are closed at once and counted (`signer_connections_refused_total`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::Router;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::api::metrics::Metrics;
use crate::api::tls::ClientIdentity;
use crate::config::ServerSettings;
use crate::error::{Result, SignerError};

/// TLS handshakes in progress at once, from every client together (each costs a signature or
/// a key exchange of CPU).
const MAX_HANDSHAKES: usize = 256;

/// The server's limits, from `[server]` (see [`ServerSettings`] for each one's meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections per client address (an IPv4 address, or an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Time to send a whole request head, from the connection's opening or the last response.
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive, from its head.
    pub body_read_timeout: Duration,
    /// Time for a TLS handshake, waiting for a handshake place included.
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes in progress per client address.
    pub max_tls_handshakes_per_ip: usize,
}

impl Default for Limits {
    /// For an operator with some 10,000 validators behind a handful of validator clients: a
    /// client opens one HTTP/1.1 connection per request in flight (a thousand at once is what a
    /// client's burst is tested with, `tests/slashing_http.rs`), and a connection over a cap is
    /// an error to it, not a wait; per address there is room for such a burst, in all for four.
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_connections_per_ip: 1024,
            header_read_timeout: Duration::from_secs(15),
            body_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
            max_tls_handshakes_per_ip: 32,
        }
    }
}

impl Limits {
    /// The defaults, with what `[server]` sets; a zero is refused (it would refuse everyone).
    pub(crate) fn from_settings(s: &ServerSettings) -> Result<Limits> {
        let d = Limits::default();
        let count = |v: Option<usize>, key: &str, default: usize| match v {
            Some(0) => Err(SignerError::Config(format!(
                "[server] {key} = 0 would refuse every connection; leave it out for the default \
                 ({default})"
            ))),
            v => Ok(v.unwrap_or(default)),
        };
        let millis = |v: Option<u64>, key: &str, default: Duration| match v {
            Some(0) => Err(SignerError::Config(format!(
                "[server] {key} = 0 would time out every connection; leave it out for the \
                 default ({} ms)",
                default.as_millis()
            ))),
            v => Ok(v.map(Duration::from_millis).unwrap_or(default)),
        };
        Ok(Limits {
            max_connections: count(s.max_connections, "max_connections", d.max_connections)?,
            max_connections_per_ip: count(
                s.max_connections_per_ip,
                "max_connections_per_ip",
                d.max_connections_per_ip,
            )?,
            header_read_timeout: millis(
                s.header_read_timeout_ms,
                "header_read_timeout_ms",
                d.header_read_timeout,
            )?,
            body_read_timeout: millis(
                s.body_read_timeout_ms,
                "body_read_timeout_ms",
                d.body_read_timeout,
            )?,
            tls_handshake_timeout: millis(
                s.tls_handshake_timeout_ms,
                "tls_handshake_timeout_ms",
                d.tls_handshake_timeout,
            )?,
            max_tls_handshakes_per_ip: count(
                s.max_tls_handshakes_per_ip,
                "max_tls_handshakes_per_ip",
                d.max_tls_handshakes_per_ip,
            )?,
        })
    }
}

/// File descriptors kept for everything but client connections (tokens, databases, key files,
/// the beacon node).
const SPARE_DESCRIPTORS: u64 = 256;

/// Raise the soft limit on open files to what `max_connections` needs, within the hard limit
/// (a service manager's soft limit is often 1024, fewer than the default cap allows); `Err`
/// says what is missing when the hard limit is lower.
pub(crate) fn raise_descriptor_limit(limits: &Limits) -> std::result::Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let need = (limits.max_connections as u64).saturating_add(SPARE_DESCRIPTORS);
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= need) {
        return Ok(());
    }
    let target = now.maximum.map_or(need, |max| max.min(need));
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: now.maximum,
        },
    );
    match raised {
        Ok(()) if target >= need => Ok(()),
        _ => {
            Err(format!(
            "open files are limited to {}, fewer than [server] max_connections = {} needs ({}): \
             raise the limit (LimitNOFILE= in a systemd unit) or lower max_connections",
            if raised.is_ok() { target } else { now.current.unwrap_or(0) },
            limits.max_connections,
            need
        ))
        }
    }
}

/// Why a connection was closed on arrival; the index of its `reason` label in
/// [`crate::metrics::CONNECTION_REFUSALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    MaxConnections = 0,
    /// The client's address has `max_connections_per_ip` open.
    PerIp = 1,
    /// The client's address has `max_tls_handshakes_per_ip` handshakes in progress.
    HandshakesPerIp = 2,
}

/// Where a connection ran out of time; the index of its `phase` label in
/// [`crate::metrics::CONNECTION_TIMEOUTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    TlsHandshake = 0,
    Header = 1,
    Body = 2,
}

/// What one client is counted as: its IPv4 address, or its IPv6 /64 (a host is commonly given
/// a whole /64, and could otherwise open its connections from as many addresses).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
    handshakes_per_ip: HashMap<IpAddr, usize>,
}

/// Open connections and TLS handshakes, in all and per client. Pure bookkeeping: a place is
/// taken by [`ConnectionLimiter::admit`] and given back when its guard drops.
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    limits: Limits,
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
}

/// One open connection's place; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Admitted {
    limiter: Arc<ConnectionLimiter>,
    key: IpAddr,
}

/// One TLS handshake's place; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Handshake {
    limiter: Arc<ConnectionLimiter>,
    key: IpAddr,
}

fn take(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl ConnectionLimiter {
    /// A limiter for `limits`, keeping `metrics.connections` up to date.
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            limits,
            counts: Mutex::default(),
            metrics,
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.metrics.connections.refused[why as usize].fetch_add(1, Ordering::Relaxed);
        why
    }

    /// Take a place for a connection from `ip`, or say which cap it would exceed.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> std::result::Result<Admitted, Refusal> {
        let key = client_key(ip);
        let mut c = self.counts();
        if c.open >= self.limits.max_connections {
            return Err(self.refuse(Refusal::MaxConnections));
        }
        let mine = c.per_ip.entry(key).or_default();
        if *mine >= self.limits.max_connections_per_ip {
            return Err(self.refuse(Refusal::PerIp));
        }
        *mine += 1;
        c.open += 1;
        self.metrics
            .connections
            .open
            .fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            limiter: self.clone(),
            key,
        })
    }

    /// Take a TLS handshake place for an admitted connection.
    pub fn handshake(&self, admitted: &Admitted) -> std::result::Result<Handshake, Refusal> {
        let mut c = self.counts();
        let mine = c.handshakes_per_ip.entry(admitted.key).or_default();
        if *mine >= self.limits.max_tls_handshakes_per_ip {
            return Err(self.refuse(Refusal::HandshakesPerIp));
        }
        *mine += 1;
        Ok(Handshake {
            limiter: admitted.limiter.clone(),
            key: admitted.key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().open
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.limiter.counts();
        c.open = c.open.saturating_sub(1);
        take(&mut c.per_ip, self.key);
        self.limiter
            .metrics
            .connections
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        take(&mut self.limiter.counts().handshakes_per_ip, self.key);
    }
}

/// Who sent a request, in its extensions: the TCP peer, the TLS version of its connection,
/// and under mutual TLS the identity of its certificate (for per-client rules).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The connection's TLS version; `None` for plain HTTP.
    pub tls: Option<rustls::ProtocolVersion>,
    /// Its certificate's identity, when it presented one (mutual TLS verified it in the
    /// handshake).
    pub client: Option<Arc<ClientIdentity>>,
}

/// Serve `app` on `listener` (HTTPS when `tls` is given) within `limits` until `shutdown`
/// completes; then stop accepting, let every open connection finish its request in flight
/// (idle ones close at once), and return.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limiter = ConnectionLimiter::new(limits.clone(), metrics.clone());
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let limits = Arc::new(limits);
    let (stop, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: say so, back off, go on.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admitted = match limiter.admit(addr.ip()) {
            Ok(a) => a,
            Err(why) => {
                // Debug only: a flood would otherwise flood the log too; the metric counts it.
                tracing::debug!(peer = %addr, reason = ?why, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, metrics, stopped) = (
            app.clone(),
            limits.clone(),
            metrics.clone(),
            stopped.clone(),
        );
        let (tls, limiter, handshakes) = (tls.clone(), limiter.clone(), handshakes.clone());
        tokio::spawn(async move {
            let peer = Peer {
                addr,
                tls: None,
                client: None,
            };
            let Some(acceptor) = tls else {
                serve_connection(stream, peer, app, &limits, &metrics, stopped).await;
                drop(admitted);
                return;
            };
            let Ok(place) = limiter.handshake(&admitted) else {
                tracing::debug!(peer = %addr, "TLS handshake refused: too many from this client");
                return;
            };
            let handshake = async {
                let _permit = handshakes.acquire().await;
                acceptor.accept(stream).await
            };
            let done = tokio::time::timeout(limits.tls_handshake_timeout, handshake).await;
            drop(place);
            match done {
                Ok(Ok(tls)) => {
                    let session = tls.get_ref().1;
                    let client = session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| Arc::new(ClientIdentity::of(cert)));
                    let peer = Peer {
                        addr,
                        tls: session.protocol_version(),
                        client,
                    };
                    serve_connection(tls, peer, app, &limits, &metrics, stopped).await;
                }
                Ok(Err(e)) => tracing::warn!(peer = %addr, error = %e, "TLS handshake failed"),
                Err(_) => {
                    metrics.connections.timed_out[Timeout::TlsHandshake as usize]
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    drop(stopped);
    tracing::info!(
        open = limiter.open(),
        "no longer accepting; waiting for open connections"
    );
    let _ = stop.send(());
    stop.closed().await;
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, hyper's header-read timer, every request body
/// under [`Limits::body_read_timeout`], until the client closes, a timer fires, or shutdown.
async fn serve_connection<I>(
    io: I,
    peer: Peer,
    app: Router,
    limits: &Limits,
    metrics: &Arc<Metrics>,
    mut stop: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_read_timeout;
    let addr = peer.addr;
    let body_metrics = metrics.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        let req = req.map(|body| TimedBody::new(body, body_timeout, body_metrics.clone()));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics.connections.timed_out[Timeout::Header as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %addr, "connection closed: no complete request head in time");
        } else {
            tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
        }
    }
}

/// A request body that fails once its time is up, so a client trickling a body holds no
/// handler (and no connection) past [`Limits::body_read_timeout`].
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration, metrics: Arc<Metrics>) -> TimedBody {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            metrics,
        }
    }
}

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimedOut(Duration);

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.metrics.connections.timed_out[Timeout::Body as usize]
                .fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimedOut(this.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, per_ip: usize, handshakes: usize) -> Arc<ConnectionLimiter> {
        let limits = Limits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_tls_handshakes_per_ip: handshakes,
            ..Limits::default()
        };
        ConnectionLimiter::new(limits, Arc::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client_and_places_come_back() {
        let l = limiter(5, 2, 1);
        let a1 = l.admit(ip("10.0.0.1")).unwrap();
        let a2 = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(l.admit(ip("10.0.0.1")).unwrap_err(), Refusal::PerIp);
        // The same host as an IPv4-mapped IPv6 address is the same client.
        assert_eq!(l.admit(ip("::ffff:10.0.0.1")).unwrap_err(), Refusal::PerIp);
        let others: Vec<_> = ["10.0.0.2", "10.0.0.3", "10.0.0.3"]
            .iter()
            .map(|a| l.admit(ip(a)).unwrap())
            .collect();
        assert_eq!(l.open(), 5);
        assert_eq!(
            l.admit(ip("10.0.0.4")).unwrap_err(),
            Refusal::MaxConnections
        );
        drop(a1);
        assert_eq!(l.open(), 4);
        let a3 = l.admit(ip("10.0.0.1")).unwrap();
        drop((a2, a3, others));
        assert_eq!(l.open(), 0);
        assert!(l.counts().per_ip.is_empty());
        let m = &l.metrics.connections;
        assert_eq!(
            m.refused[Refusal::PerIp as usize].load(Ordering::Relaxed),
            2
        );
        assert_eq!(
            m.refused[Refusal::MaxConnections as usize].load(Ordering::Relaxed),
            1
        );
        assert_eq!(m.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let l = limiter(10, 1, 1);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            l.admit(ip("2001:db8:1:2:ffff::7")).unwrap_err(),
            Refusal::PerIp
        );
        assert!(l.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn tls_handshakes_are_capped_per_client() {
        let l = limiter(10, 10, 2);
        let conns: Vec<_> = (0..4).map(|_| l.admit(ip("10.0.0.9")).unwrap()).collect();
        let h1 = l.handshake(&conns[0]).unwrap();
        let _h2 = l.handshake(&conns[1]).unwrap();
        assert_eq!(
            l.handshake(&conns[2]).unwrap_err(),
            Refusal::HandshakesPerIp
        );
        // Another client is not held up by this one's handshakes.
        let other = l.admit(ip("10.0.0.10")).unwrap();
        assert!(l.handshake(&other).is_ok());
        drop(h1);
        assert!(l.handshake(&conns[3]).is_ok());
    }

    #[test]
    fn limits_come_from_the_server_section_and_zero_is_refused() {
        assert_eq!(
            Limits::from_settings(&ServerSettings::default()).unwrap(),
            Limits::default()
        );
        let set = ServerSettings {
            max_connections: Some(10),
            header_read_timeout_ms: Some(250),
            ..ServerSettings::default()
        };
        let l = Limits::from_settings(&set).unwrap();
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.header_read_timeout, Duration::from_millis(250));
        assert_eq!(
            l.max_connections_per_ip,
            Limits::default().max_connections_per_ip
        );
        for bad in [
            ServerSettings {
                max_connections_per_ip: Some(0),
                ..ServerSettings::default()
            },
            ServerSettings {
                body_read_timeout_ms: Some(0),
                ..ServerSettings::default()
            },
        ] {
            let e = Limits::from_settings(&bad).unwrap_err().to_string();
            assert!(e.contains("[server]") && e.contains("= 0"), "{e}");
        }
    }
}
