//! The HTTPS client to one participant: mutual TLS 1.3 only, trusting only the CAs configured
//! for it, presenting our client certificate; every answer read with a size bound and a time
//! bound. Requests run on [`IoRuntime`], a runtime of the participants' own, so the scheduler's
//! device threads (plain OS threads) can wait for them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::ParticipantSettings;
use crate::error::{Result, SignerError};

/// Largest partial-signature answer read (the profile's is a few hundred bytes), and the most a
/// batch answer may add for each of its partials.
pub(super) const ANSWER_LIMIT: usize = 16 * 1024;
/// Largest accounts list read: 10,000 accounts of three participants are about 6 MB.
pub(super) const ACCOUNTS_LIMIT: usize = 64 * 1024 * 1024;

/// One participant's account view (the profile's `DistributedAccount`), as it answers.
#[derive(Debug, Clone, Deserialize)]
pub struct AccountView {
    /// Its share's id (a decimal string).
    pub participant_id: String,
    /// Its share's public key.
    pub public_key: String,
    /// The validator key.
    pub composite_public_key: String,
    /// Partials needed (a decimal string).
    pub signing_threshold: String,
    /// Every participant: id and endpoint.
    pub participants: Vec<AccountParticipant>,
}

/// A participant in an [`AccountView`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AccountParticipant {
    /// Its share's id (a decimal string).
    pub id: String,
    /// Its HTTPS origin.
    pub endpoint: String,
}

/// A runtime for the participants' connections: one worker thread drives every connection;
/// device threads wait on it with `block_on`. Dropped without waiting for what it runs (the
/// probes loop forever), so dropping it from anywhere, async code included, is safe.
pub(super) struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    pub(super) fn new() -> Result<IoRuntime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("participants-io")
            .enable_all()
            .build()
            .map(|rt| IoRuntime(Some(rt)))
            .map_err(|e| SignerError::System(format!("participants' runtime: {e}")))
    }

    pub(super) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.0 {
            rt.spawn(fut);
        }
    }

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        self.0.as_ref().map(|rt| rt.block_on(fut))
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(super) struct Client {
    base: String,
    http: reqwest::Client,
    connect_timeout: Duration,
    io: Arc<IoRuntime>,
}

fn read_pem(path: &std::path::Path, what: &str, name: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        SignerError::Config(format!(
            "participant {name:?}: cannot read its {what} {}: {e}",
            path.display()
        ))
    })
}

/// Mutual TLS 1.3 to one participant: its server certificate must chain to `ca_file` (and
/// name its host), and we present `cert_file`/`key_file`.
fn tls_config(s: &ParticipantSettings) -> Result<rustls::ClientConfig> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        SignerError::Config(format!("participant {:?}: {what}: {e}", s.name))
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = read_pem(&s.ca_file, "CA file", &s.name)?;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| bad("CA file", &e))?;
        roots.add(cert).map_err(|e| bad("CA file", &e))?;
    }
    if roots.is_empty() {
        return Err(bad("CA file", &"no certificate in it"));
    }
    let chain_pem = read_pem(&s.cert_file, "client certificate", &s.name)?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("client certificate", &e))?;
    if chain.is_empty() {
        return Err(bad("client certificate", &"no certificate in it"));
    }
    let key_pem = zeroize::Zeroizing::new(read_pem(&s.key_file, "client key", &s.name)?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("client key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("client certificate and key", &e))
}

impl Client {
    pub(super) fn new(
        s: &ParticipantSettings,
        connect_timeout: Duration,
        timeout: Duration,
        io: Arc<IoRuntime>,
    ) -> Result<Client> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(s)?)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                SignerError::Config(format!("participant {:?}: HTTP client: {e}", s.name))
            })?;
        Ok(Client {
            base: s.url.trim_end_matches('/').to_owned(),
            http,
            connect_timeout,
            io,
        })
    }

    /// POST `body` (JSON) to `path`; the status and at most `limit` bytes of answer, within
    /// `wait`. `Err`: no answer (the reason, with its causes).
    pub(super) fn post_json(
        &self,
        path: &str,
        body: String,
        limit: usize,
        wait: Duration,
    ) -> std::result::Result<(u16, Vec<u8>), String> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body)
            .timeout(wait);
        self.run(req, limit, wait)
    }

    /// GET `path`, with an answer of at most `limit` bytes, within `wait`.
    pub(super) fn get(
        &self,
        path: &str,
        limit: usize,
        wait: Duration,
    ) -> std::result::Result<(u16, Vec<u8>), String> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "application/json")
            .timeout(wait);
        self.run(req, limit, wait)
    }

    /// `/upcheck` answers 200 within the connect timeout plus a second.
    pub(super) async fn upcheck(&self) -> std::result::Result<(), String> {
        let wait = self.connect_timeout + Duration::from_secs(1);
        let req = self
            .http
            .get(format!("{}/upcheck", self.base))
            .timeout(wait);
        match fetch(req, 1024, wait).await? {
            (200, _) => Ok(()),
            (status, _) => Err(format!("/upcheck answered {status}")),
        }
    }

    fn run(
        &self,
        req: reqwest::RequestBuilder,
        limit: usize,
        wait: Duration,
    ) -> std::result::Result<(u16, Vec<u8>), String> {
        self.io
            .block_on(fetch(req, limit, wait))
            .unwrap_or_else(|| Err("the participants' runtime has stopped".into()))
    }
}

/// Send and read the answer, at most `limit` bytes, all within `wait`.
async fn fetch(
    req: reqwest::RequestBuilder,
    limit: usize,
    wait: Duration,
) -> std::result::Result<(u16, Vec<u8>), String> {
    let work = async {
        let mut resp = req.send().await.map_err(|e| chain(&e))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("its answer is over {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    tokio::time::timeout(wait, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", wait.as_millis())))
}

/// An error and its causes on one line (reqwest's own message says only "error sending
/// request"; the cause says refused, timed out, or which certificate check failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
