//! A request rate for the endpoints that answer anyone (`/upcheck`, `/healthcheck`,
//! `/metrics`). Their answers are cheap, but a flood of them is parsed and answered on the same
//! cores as a block's request: unpaced from one host it made blocks' p99 27 times the idle one
//! (README, `bench health-flood`). A monitor asks a few times a minute, so each client address
//! (an IPv4 address or an IPv6 /64, as the connection caps count) gets a rate with a burst, and
//! all of them together another, larger one.
//!
//! A request over its rate is not refused at once: it waits for its turn, since a refusal
//! answered at once lets a client that does not back off ask again at once and costs as much
//! CPU as the answer. A client that would have to wait longer than [`MAX_WAIT`] waits that long
//! and gets 429, its place not taken. Either way a connection asks at most about once per
//! wait, so what a host can make the signer parse is bounded by its connections (capped by the
//! transport) over [`MAX_WAIT`]. Signing requests and the admin routes are never limited here.
//!
//! The rates are a generic cell rate algorithm: per client, the theoretical arrival time of
//! its next request; a request may come up to `burst − 1` intervals ahead of it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::transport::{client_key, Peer};
use super::{ApiError, AppState};
use crate::config::ServerSettings;
use crate::error::{Result, SignerError};

/// The longest a request over its rate waits for its turn before it is answered 429.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);

/// Clients remembered at most; past it, those whose next request would not wait are forgotten
/// (they owe nothing). Each is an address with a connection open, so the transport's
/// connection cap bounds them too.
const MAX_CLIENTS: usize = 16_384;

/// A rate: requests per second, and how many may come at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Requests per second, sustained.
    pub per_sec: f64,
    /// Requests at once.
    pub burst: u32,
}

impl Rate {
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_sec)
    }

    /// How far ahead of its theoretical arrival time a request may come.
    fn tolerance(&self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }
}

/// The open endpoints' rates, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OpenRates {
    /// Per client address.
    pub per_client: Rate,
    /// All clients together.
    pub total: Rate,
}

impl Default for OpenRates {
    /// A Prometheus scrape every few seconds and a load balancer's probe every second, from a
    /// few hosts, stay well inside these; a flood of them took 0.3 % of what the host answers
    /// unpaced (README).
    fn default() -> OpenRates {
        OpenRates {
            per_client: Rate {
                per_sec: 20.0,
                burst: 40,
            },
            total: Rate {
                per_sec: 200.0,
                burst: 400,
            },
        }
    }
}

impl OpenRates {
    /// The defaults, with what `[server]` sets; a rate below one in 1,000 s (zero, negative,
    /// not a number) or over a million a second is refused, as is a burst of zero. The bounds
    /// keep every interval and tolerance far inside what `Duration` and `Instant` hold.
    pub(crate) fn from_settings(s: &ServerSettings) -> Result<OpenRates> {
        let d = OpenRates::default();
        let rate = |v: Option<f64>, key: &str, default: f64| match v {
            Some(r) if !(0.001..=1e6).contains(&r) => Err(SignerError::Config(format!(
                "[server] {key} = {r}: a rate is requests a second, from 0.001 (one in 1,000 s) \
                 to 1,000,000; leave it out for the default ({default})"
            ))),
            v => Ok(v.unwrap_or(default)),
        };
        let burst = |v: Option<u32>, key: &str, default: u32| match v {
            Some(0) => Err(SignerError::Config(format!(
                "[server] {key} = 0 would refuse every request; leave it out for the default \
                 ({default})"
            ))),
            v => Ok(v.unwrap_or(default)),
        };
        Ok(OpenRates {
            per_client: Rate {
                per_sec: rate(
                    s.open_requests_per_sec_per_client,
                    "open_requests_per_sec_per_client",
                    d.per_client.per_sec,
                )?,
                burst: burst(
                    s.open_requests_burst_per_client,
                    "open_requests_burst_per_client",
                    d.per_client.burst,
                )?,
            },
            total: Rate {
                per_sec: rate(
                    s.open_requests_per_sec,
                    "open_requests_per_sec",
                    d.total.per_sec,
                )?,
                burst: burst(s.open_requests_burst, "open_requests_burst", d.total.burst)?,
            },
        })
    }
}

/// What [`OpenLimiter::admit`] decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Answer after this wait (zero: at once).
    After(Duration),
    /// Over the rate by more than [`MAX_WAIT`]: answer 429 after waiting that long.
    Refused,
}

#[derive(Debug)]
struct Cells {
    total: Instant,
    per_client: HashMap<IpAddr, Instant>,
}

/// The open endpoints' rate limiter (one per server, shared by every connection).
#[derive(Debug)]
pub(crate) struct OpenLimiter {
    rates: OpenRates,
    cells: Mutex<Cells>,
}

impl OpenLimiter {
    /// A limiter with `rates`.
    pub fn new(rates: OpenRates) -> OpenLimiter {
        let now = Instant::now();
        OpenLimiter {
            rates,
            cells: Mutex::new(Cells {
                total: now,
                per_client: HashMap::new(),
            }),
        }
    }

    /// The rates in force.
    pub(crate) fn rates(&self) -> OpenRates {
        self.rates
    }

    /// Take a turn for a request from `ip` arriving `now`: its wait, or a refusal (which takes
    /// no place, so refusals do not push honest requests further back).
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Turn {
        let key = client_key(ip);
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        if cells.per_client.len() >= MAX_CLIENTS && !cells.per_client.contains_key(&key) {
            cells.per_client.retain(|_, tat| *tat > now);
        }
        let client_tat = cells.per_client.get(&key).copied().unwrap_or(now).max(now);
        let total_tat = cells.total.max(now);
        let wait = |tat: Instant, rate: &Rate| {
            tat.saturating_duration_since(now)
                .saturating_sub(rate.tolerance())
        };
        let wait = wait(client_tat, &self.rates.per_client).max(wait(total_tat, &self.rates.total));
        if wait > MAX_WAIT {
            return Turn::Refused;
        }
        cells
            .per_client
            .insert(key, client_tat + self.rates.per_client.interval());
        cells.total = total_tat + self.rates.total.interval();
        Turn::After(wait)
    }
}

/// The middleware on the open routes: a request waits for its turn, or gets 429 after
/// [`MAX_WAIT`]. A request without a transport peer (in-process tests) counts as one client.
pub(crate) async fn pace_open(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.addr.ip());
    let metrics = &app.metrics.connections;
    match app.open_limiter.admit(ip, Instant::now()) {
        Turn::After(wait) if wait.is_zero() => next.run(req).await,
        Turn::After(wait) => {
            metrics.open_delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            next.run(req).await
        }
        Turn::Refused => {
            metrics.open_refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(MAX_WAIT).await;
            let rates = app.open_limiter.rates();
            let mut resp = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "too many requests to the open endpoints: at most {} a second from one \
                     address and {} from all together; ask less often",
                    rates.per_client.per_sec, rates.total.per_sec
                ),
            }
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(per_client: (f64, u32), total: (f64, u32)) -> OpenRates {
        OpenRates {
            per_client: Rate {
                per_sec: per_client.0,
                burst: per_client.1,
            },
            total: Rate {
                per_sec: total.0,
                burst: total.1,
            },
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_burst_passes_at_once_and_the_rest_is_paced_at_the_rate() {
        let limiter = OpenLimiter::new(rates((10.0, 5), (1000.0, 1000)));
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.admit(A, now), Turn::After(Duration::ZERO));
        }
        // The sixth waits one interval, the seventh two.
        let ms = |t: Turn| match t {
            Turn::After(d) => d.as_millis(),
            Turn::Refused => panic!("refused"),
        };
        assert_eq!(ms(limiter.admit(A, now)), 100);
        assert_eq!(ms(limiter.admit(A, now)), 200);
        // Another address is not paced by A's requests.
        assert_eq!(limiter.admit(B, now), Turn::After(Duration::ZERO));
        // After a quiet second A has its rate back.
        let later = now + Duration::from_millis(1300);
        assert_eq!(limiter.admit(A, later), Turn::After(Duration::ZERO));
    }

    #[test]
    fn past_the_longest_wait_a_request_is_refused_and_takes_no_place() {
        let limiter = OpenLimiter::new(rates((1.0, 1), (1000.0, 1000)));
        let now = Instant::now();
        for i in 0..=MAX_WAIT.as_secs() {
            assert_eq!(
                limiter.admit(A, now),
                Turn::After(Duration::from_secs(i)),
                "request {i}"
            );
        }
        for _ in 0..100 {
            assert_eq!(limiter.admit(A, now), Turn::Refused);
        }
        // The refusals took nothing: one interval later, exactly one more place is free.
        let later = now + Duration::from_secs(1);
        assert_eq!(limiter.admit(A, later), Turn::After(MAX_WAIT));
        assert_eq!(limiter.admit(A, later), Turn::Refused);
    }

    #[test]
    fn all_addresses_together_are_held_to_the_total_rate() {
        let limiter = OpenLimiter::new(rates((100.0, 100), (10.0, 2)));
        let now = Instant::now();
        let ips: Vec<IpAddr> = (0..100u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)))
            .collect();
        let waits: Vec<Turn> = ips.iter().map(|ip| limiter.admit(*ip, now)).collect();
        let served = waits.iter().filter(|t| matches!(t, Turn::After(_))).count();
        // Two at once, then one each 100 ms up to the longest wait.
        assert_eq!(served, 2 + (MAX_WAIT.as_millis() / 100) as usize);
        assert!(waits[served..].iter().all(|t| *t == Turn::Refused));
    }

    #[test]
    fn an_ipv6_host_is_one_client_across_its_64() {
        let limiter = OpenLimiter::new(rates((1.0, 1), (1000.0, 1000)));
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter.admit(a, now), Turn::After(Duration::ZERO));
        assert_eq!(limiter.admit(b, now), Turn::After(Duration::from_secs(1)));
        assert_eq!(limiter.admit(other, now), Turn::After(Duration::ZERO));
    }

    #[test]
    fn the_extreme_settings_allowed_never_overflow() {
        let now = Instant::now();
        for (rate, burst) in [(0.001, u32::MAX), (0.001, 1), (1e6, u32::MAX), (1e6, 1)] {
            let limiter = OpenLimiter::new(rates((rate, burst), (rate, burst)));
            for _ in 0..1000 {
                let _ = limiter.admit(A, now);
            }
        }
    }

    #[test]
    fn rates_from_settings_refuse_nonsense() {
        let mut s = ServerSettings::default();
        assert_eq!(OpenRates::from_settings(&s).unwrap(), OpenRates::default());
        for bad in [0.0, -1.0, 1e-300, f64::NAN, f64::INFINITY, 2e6] {
            s.open_requests_per_sec = Some(bad);
            let e = OpenRates::from_settings(&s).unwrap_err().to_string();
            assert!(e.contains("open_requests_per_sec"), "{e}");
        }
        s.open_requests_per_sec = None;
        s.open_requests_burst_per_client = Some(0);
        let e = OpenRates::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("open_requests_burst_per_client = 0"), "{e}");
    }
}
