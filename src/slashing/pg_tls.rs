//! How the PostgreSQL store reaches its server: TLS with rustls (ring, as the API server), the
//! libpq parameters the `postgres` crate does not parse (`sslmode=verify-ca|verify-full`,
//! `sslrootcert`), and the rule that a database on another host is reached only over TLS with a
//! verified server certificate — a forged "recorded" answer from a machine in the middle would
//! let this signer double sign.
//!
//! Modes (libpq's names and meaning): `disable` plain; `prefer` TLS if the server offers it,
//! unauthenticated; `require` TLS, unauthenticated (with `sslrootcert`: as `verify-ca`, as libpq
//! does); `verify-ca` TLS, the chain verified against `sslrootcert`; `verify-full` also the host
//! name. Loopback and Unix-socket hosts may use any mode (default: `prefer` over TCP, plain on a
//! socket); any other host needs `verify-ca` or `verify-full` (default `verify-full` when
//! `sslrootcert` is given), or the store refuses to open, naming the host.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::config::{Host, SslMode};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::{Config, Socket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls::{Error as TlsError, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroizing;

/// libpq's `sslmode` (`allow` is not offered: it prefers plain text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it; the server is not authenticated.
    Prefer,
    /// TLS; the server is not authenticated.
    Require,
    /// TLS; the server's chain verified against `sslrootcert`, its name not checked.
    VerifyCa,
    /// TLS; chain and host name verified.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, String> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (it prefers plain text); use \
                            prefer, require, verify-ca or verify-full"
                        .into(),
                )
            }
            _ => {
                return Err(
                    "sslmode must be disable, prefer, require, verify-ca or verify-full".into(),
                )
            }
        })
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// The TLS parameters taken out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub(crate) mode: Option<TlsMode>,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Split `url` (URL or `key=value` form) into the string the `postgres` crate parses and the TLS
/// parameters it does not. Errors name parameters, never values (the string holds a password).
pub(crate) fn split_tls_params(url: &str) -> Result<(Zeroizing<String>, TlsParams), String> {
    let (rest, found) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else {
        split_key_values(url)?
    };
    let mut params = TlsParams::default();
    for (key, value) in found {
        match key.as_str() {
            "sslmode" => params.mode = Some(TlsMode::parse(&value)?),
            "sslrootcert" => params.root_cert = Some(PathBuf::from(value.as_str())),
            other => {
                return Err(format!(
                    "{other} is not supported: the signer authenticates to PostgreSQL with the \
                     password (SCRAM) in the connection string, not a client certificate"
                ))
            }
        }
    }
    Ok((rest, params))
}

/// Ours to handle, not the `postgres` crate's.
fn is_tls_param(key: &str) -> bool {
    matches!(
        key,
        "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword"
    )
}

type Found = Vec<(String, Zeroizing<String>)>;

fn split_url(url: &str) -> Result<(Zeroizing<String>, Found), String> {
    // The query starts at the first '?' after the user info (a password may hold anything).
    let after_user = url.rfind('@').map_or(0, |i| i + 1);
    let Some(q) = url[after_user..].find('?').map(|q| q + after_user) else {
        return Ok((Zeroizing::new(url.to_owned()), Vec::new()));
    };
    let mut rest = Zeroizing::new(url[..q].to_owned());
    let mut found = Vec::new();
    let mut sep = '?';
    for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_tls_param(key) {
            found.push((key.to_owned(), percent_decode(value)?));
        } else {
            rest.push(sep);
            rest.push_str(pair);
            sep = '&';
        }
    }
    Ok((rest, found))
}

fn percent_decode(value: &str) -> Result<Zeroizing<String>, String> {
    let b = value.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a connection-string parameter has a malformed %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| "a connection-string parameter is not UTF-8".into())
}

/// libpq's `key = value` form: values bare (backslash escapes) or in single quotes.
fn split_key_values(s: &str) -> Result<(Zeroizing<String>, Found), String> {
    let b = s.as_bytes();
    let (mut i, mut rest, mut found) = (0, Zeroizing::new(String::new()), Vec::new());
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(format!(
                "the connection string has no '=' after {key:?} (key=value pairs or a \
                 postgres:// URL)"
            ));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Zeroizing::new(Vec::new());
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("the quoted value of {key:?} is not closed")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        if is_tls_param(key) {
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| format!("the value of {key} is not UTF-8"))?;
            found.push((key.to_owned(), Zeroizing::new(value)));
        } else {
            rest.push_str(&s[start..i]);
            rest.push(' ');
        }
    }
    Ok((rest, found))
}

/// A host this machine reaches without a network: a Unix socket or a loopback address.
pub(crate) fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The first host (or `hostaddr`) of `config` that is not this machine, for messages.
fn remote_host(config: &Config) -> Option<String> {
    let host = config
        .get_hosts()
        .iter()
        .find(|h| !is_loopback(h))
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        });
    host.or_else(|| {
        config
            .get_hostaddrs()
            .iter()
            .find(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
    })
}

/// The mode in force for `config` given the string's `params`, or why the connection is refused.
pub(crate) fn decide(config: &Config, params: &TlsParams) -> Result<TlsMode, String> {
    let remote = remote_host(config);
    let sockets_only = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)))
        && config.get_hostaddrs().is_empty();
    let root = params.root_cert.is_some();
    let mode = match params.mode {
        Some(TlsMode::Require) if root => TlsMode::VerifyCa,
        Some(mode) => mode,
        None if root => TlsMode::VerifyFull,
        None if sockets_only => TlsMode::Disable,
        // libpq's default, which a remote host is refused with below.
        None => TlsMode::Prefer,
    };
    if let Some(host) = remote {
        if !mode.verifies() {
            return Err(format!(
                "the slashing protection database host {host} is not on this machine: it is \
                 reached only over TLS with a verified server certificate (sslmode={} would \
                 let anyone on the path answer for the database); add \
                 sslmode=verify-full&sslrootcert=<the CA certificate file> to the connection \
                 string",
                mode.as_str()
            ));
        }
    }
    if mode.verifies() && !root {
        return Err(format!(
            "sslmode={} needs sslrootcert=<the CA certificate file (PEM)> in the connection \
             string",
            mode.as_str()
        ));
    }
    if sockets_only && mode != TlsMode::Disable && mode != TlsMode::Prefer {
        return Err(format!(
            "sslmode={}: PostgreSQL offers no TLS on a Unix socket (the socket is local \
             already); leave sslmode out",
            mode.as_str()
        ));
    }
    Ok(mode)
}

/// How to open a session: plain, or TLS through [`RustlsConnect`].
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    Tls(RustlsConnect),
}

/// Apply `mode` to `config` and build its transport (reading `sslrootcert`).
pub(crate) fn transport(
    config: &mut Config,
    mode: TlsMode,
    root_cert: Option<&Path>,
) -> Result<Transport, String> {
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    if mode == TlsMode::Disable {
        return Ok(Transport::Plain);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (TlsMode::VerifyCa | TlsMode::VerifyFull, Some(path)) => {
            let roots = Arc::new(read_roots(path)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            match mode {
                TlsMode::VerifyFull => webpki,
                _ => Arc::new(ChainOnly(webpki)),
            }
        }
        (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => {
            return Err(format!("sslmode={} needs sslrootcert", mode.as_str()))
        }
        _ => Arc::new(Unauthenticated(provider.clone())),
    };
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What PostgreSQL 17's direct TLS negotiation asks for; older servers ignore it.
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Transport::Tls(RustlsConnect(Arc::new(tls))))
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must verify; the name may differ (libpq's meaning). Webpki checks the
/// name only once the chain has verified, so a name error means the chain is good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` (loopback only, see [`decide`]): encrypted, the server not authenticated,
/// as libpq does without a root certificate.
#[derive(Debug)]
struct Unauthenticated(Arc<CryptoProvider>);

impl ServerCertVerifier for Unauthenticated {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `postgres` crate's TLS hook, on rustls.
#[derive(Clone)]
pub(crate) struct RustlsConnect(Arc<ClientConfig>);

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsHandshake> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a host name or address TLS can verify"),
            )
        })?;
        Ok(RustlsHandshake {
            connector: tokio_rustls::TlsConnector::from(self.0.clone()),
            name,
        })
    }
}

/// One handshake, to `name`.
pub(crate) struct RustlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsHandshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

/// A TLS session to the server.
pub(crate) struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929), so that SCRAM can bind the login to this session.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// The certificate's hash with its signature's hash function (SHA-256 for MD5 and SHA-1).
fn server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let der = cert.as_ref();
    Some(
        match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
            // sha384WithRSAEncryption, ecdsa-with-SHA384
            "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(der).to_vec(),
            // sha512WithRSAEncryption, ecdsa-with-SHA512
            "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(der).to_vec(),
            _ => sha2::Sha256::digest(der).to_vec(),
        },
    )
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> (Config, TlsParams) {
        let (rest, params) = split_tls_params(url).unwrap();
        (rest.parse().unwrap(), params)
    }

    fn decided(url: &str) -> Result<TlsMode, String> {
        let (c, p) = config(url);
        decide(&c, &p)
    }

    #[test]
    fn tls_parameters_are_taken_out_of_both_forms_and_the_rest_kept() {
        let (rest, p) = split_tls_params(
            "postgres://u:p%3Fss@db.example:5433/slash?sslmode=verify-ca&application_name=x&\
             sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest.as_str(),
            "postgres://u:p%3Fss@db.example:5433/slash?application_name=x"
        );
        assert_eq!(p.mode, Some(TlsMode::VerifyCa));
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));

        let (rest, p) = split_tls_params(
            "host=db.example user=u password='it\\'s q' sslmode = verify-full \
             sslrootcert='/my dir/ca.pem' dbname=s",
        )
        .unwrap();
        assert_eq!(p.mode, Some(TlsMode::VerifyFull));
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/my dir/ca.pem")));
        let c: Config = rest.parse().unwrap();
        assert_eq!(c.get_dbname(), Some("s"));
        assert_eq!(c.get_hosts(), &[Host::Tcp("db.example".into())]);
        assert!(!rest.contains("ssl"), "{}", rest.as_str());
        assert_eq!(c.get_password(), Some(&b"it's q"[..]));

        let e = split_tls_params("postgres://u:secret@h/d?sslmode=allow").unwrap_err();
        assert!(e.contains("allow"), "{e}");
        let e = split_tls_params("host=h password=secret sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslcert") && !e.contains("secret"), "{e}");
        let e = split_tls_params("host=h password='secret").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_remote_host_needs_a_verified_certificate_loopback_and_sockets_do_not() {
        for refused in [
            "postgres://u@db.example/s",
            "postgres://u@10.1.2.3/s?sslmode=require",
            "postgres://u@db.example/s?sslmode=prefer",
            "postgres://u@db.example/s?sslmode=disable",
            "host=localhost hostaddr=192.0.2.7 dbname=s",
        ] {
            let e = decided(refused).unwrap_err();
            assert!(e.contains("not on this machine"), "{refused}: {e}");
        }
        let e = decided("postgres://u@db.example/s").unwrap_err();
        assert!(
            e.contains("db.example") && e.contains("sslmode=verify-full"),
            "{e}"
        );
        let e = decided("postgres://u@db.example/s?sslmode=verify-full").unwrap_err();
        assert!(e.contains("needs sslrootcert"), "{e}");
        for (url, mode) in [
            (
                "postgres://u@db.example/s?sslrootcert=/ca.pem",
                TlsMode::VerifyFull,
            ),
            (
                "postgres://u@db.example/s?sslmode=require&sslrootcert=/ca.pem",
                TlsMode::VerifyCa,
            ),
            ("postgres://u@127.0.0.1/s", TlsMode::Prefer),
            (
                "postgres://u@[::1]:5432/s?sslmode=disable",
                TlsMode::Disable,
            ),
            ("postgres://u@localhost/s?sslmode=require", TlsMode::Require),
            ("host=/run/postgresql dbname=s", TlsMode::Disable),
        ] {
            assert_eq!(decided(url), Ok(mode), "{url}");
        }
        let e = decided("host=/run/postgresql sslmode=require").unwrap_err();
        assert!(e.contains("Unix socket"), "{e}");
    }
}
