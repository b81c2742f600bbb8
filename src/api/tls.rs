//! HTTPS for the API server: the rustls configuration built from `[tls]`, mutual TLS with an
//! allow-list checked inside the handshake, and the rule that plain HTTP is served on loopback
//! only. Handshakes run in `super::transport`, timed and capped per client. Owns transport security;
//! the bearer token is `super::auth`'s.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::TlsSettings;
use crate::error::{Result, SignerError};

/// Parse a listen address: `IP:PORT`, `[IPv6]:PORT`, or `localhost:PORT` (127.0.0.1).
pub(crate) fn parse_listen(listen: &str) -> Result<SocketAddr> {
    let bad = || SignerError::Config(format!("listen address {listen:?} is not host:port"));
    if let Some(port) = listen.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    listen.parse().map_err(|_| bad())
}

/// Refuse plain HTTP on an address other machines can reach, unless the operator said so.
pub(crate) fn check_plain_http(addr: SocketAddr, allow_insecure_http: bool) -> Result<()> {
    if allow_insecure_http || is_loopback(addr.ip()) {
        return Ok(());
    }
    Err(SignerError::Config(format!(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: configure \
         TLS (--tls-cert and --tls-key, or [tls] cert_file and key_file), or pass \
         --allow-insecure-http (allow_insecure_http = true) if a trusted network protects it"
    )))
}

/// Refuse to open the signing API to other machines without client authentication: mutual TLS
/// (`client_auth`) or the bearer token on signing (`token_on_signing`). Anyone who reaches an
/// open signing port can have a voluntary exit or a registration to their fee recipient signed,
/// list every key, or fill slashing protection with records that block real duties. `Ok(true)`:
/// allowed only by the operator's explicit override (the caller says so loudly).
pub(crate) fn check_signing_access(
    addr: SocketAddr,
    client_auth: bool,
    token_on_signing: bool,
    allow_unauthenticated_signing: bool,
) -> Result<bool> {
    if is_loopback(addr.ip()) || client_auth || token_on_signing {
        return Ok(false);
    }
    if allow_unauthenticated_signing {
        return Ok(true);
    }
    Err(SignerError::Config(format!(
        "refusing to open the signing API on {addr}, which is not a loopback address, without \
         client authentication: anyone who reaches it could have exits and registrations signed; \
         configure mutual TLS ([tls] client_ca_file and allowed_clients), or require the API \
         token on signing (--require-auth-on-signing, [auth] require_on_signing = true), or pass \
         --allow-unauthenticated-signing (allow_unauthenticated_signing = true) if a network \
         that admits only your validator clients protects it"
    )))
}

/// Whether a request came over TLS 1.3 (`version`) from a client whose certificate mutual TLS
/// verified (`client`) and `allowed` lists; `Err` says what is missing. The allow-list was
/// already enforced in the handshake; it is asked again so that a route needing it never rests
/// on the server's TLS configuration alone.
pub(crate) fn check_mutual_tls13(
    version: Option<rustls::ProtocolVersion>,
    client: Option<&ClientIdentity>,
    allowed: &AllowList,
) -> std::result::Result<(), String> {
    match version {
        None => return Err("this request came over plain HTTP".into()),
        Some(rustls::ProtocolVersion::TLSv1_3) => {}
        Some(other) => return Err(format!("this connection negotiated {other:?}")),
    }
    let Some(id) = client else {
        return Err(
            "no client certificate was verified (mutual TLS needs [tls] \
                    client_ca_file and allowed_clients)"
                .into(),
        );
    };
    if !allowed.allows(id) {
        return Err(format!(
            "client certificate sha256:{} is not in tls.allowed_clients",
            hex::encode(id.sha256)
        ));
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the server's TLS configuration from `[tls]`; `None` when TLS is not configured.
pub(crate) fn server_config(tls: &TlsSettings) -> Result<Option<Arc<ServerConfig>>> {
    let (cert_file, key_file) = match (&tls.cert_file, &tls.key_file) {
        (None, None) => {
            if tls.client_ca_file.is_some() || !tls.allowed_clients.is_empty() {
                return Err(SignerError::Config(
                    "tls.client_ca_file and tls.allowed_clients need tls.cert_file and \
                     tls.key_file"
                        .into(),
                ));
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(SignerError::Config(
                "set both tls.cert_file and tls.key_file (--tls-cert and --tls-key)".into(),
            ))
        }
    };
    let chain = read_certs(cert_file, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        SignerError::Config(format!(
            "tls.key_file {}: no usable PEM private key ({e})",
            key_file.display()
        ))
    })?;
    if let Ok(meta) = std::fs::metadata(key_file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %key_file.display(), "TLS private key file is readable by group or others");
        }
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SignerError::Config(format!("TLS: {e}")))?;
    let builder = match &tls.client_ca_file {
        Some(ca_file) => {
            let allowed = AllowList::parse(&tls.allowed_clients)?;
            if allowed.is_empty() {
                return Err(SignerError::Config(
                    "tls.client_ca_file is set but tls.allowed_clients is empty: list the \
                     clients to let in (names or sha256:<fingerprint>)"
                        .into(),
                ));
            }
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "tls.client_ca_file")? {
                roots.add(cert).map_err(|e| {
                    SignerError::Config(format!("tls.client_ca_file {}: {e}", ca_file.display()))
                })?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| SignerError::Config(format!("tls.client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(Arc::new(AllowListVerifier { inner, allowed }))
        }
        None if !tls.allowed_clients.is_empty() => {
            return Err(SignerError::Config(
                "tls.allowed_clients needs tls.client_ca_file (the CA the clients chain to)".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        SignerError::Config(format!(
            "tls.cert_file {} and tls.key_file {}: {e}",
            cert_file.display(),
            key_file.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| SignerError::Config(format!("{key} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SignerError::Config(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The clients let in under mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowList {
    fingerprints: Vec<[u8; 32]>,
    names: Vec<String>,
}

impl AllowList {
    /// Parse `tls.allowed_clients`: `sha256:<64 hex digits>` (colons between bytes allowed) is a
    /// certificate fingerprint; anything else is a name, matched case-insensitively against the
    /// subject common name and the DNS subject alternative names.
    pub fn parse(entries: &[String]) -> Result<AllowList> {
        let mut list = AllowList::default();
        for entry in entries {
            let entry = entry.trim();
            if let Some(hex_part) = entry.strip_prefix("sha256:") {
                let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
                let fp: [u8; 32] = hex::decode(&digits)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        SignerError::Config(format!(
                            "tls.allowed_clients: {entry:?} is not sha256: and 64 hex digits"
                        ))
                    })?;
                list.fingerprints.push(fp);
            } else if entry.is_empty() {
                return Err(SignerError::Config(
                    "tls.allowed_clients: empty entry".into(),
                ));
            } else {
                list.names.push(entry.to_ascii_lowercase());
            }
        }
        Ok(list)
    }

    /// No entry at all.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty() && self.names.is_empty()
    }

    /// Whether every entry of `other` is an entry of this list (names case-insensitively).
    pub(crate) fn contains_all(&self, other: &AllowList) -> bool {
        other
            .fingerprints
            .iter()
            .all(|f| self.fingerprints.contains(f))
            && other.names.iter().all(|n| self.names.contains(n))
    }

    /// Whether a client with this identity is let in.
    pub(crate) fn allows(&self, id: &ClientIdentity) -> bool {
        self.fingerprints.contains(&id.sha256)
            || id
                .names()
                .any(|n| self.names.iter().any(|a| a.eq_ignore_ascii_case(n)))
    }
}

/// What identifies a client certificate: its fingerprint, subject common names and DNS names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// Subject common names.
    pub common_names: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
}

impl ClientIdentity {
    /// Read the identity of a DER certificate; names that cannot be parsed are left out (the
    /// fingerprint always exists).
    pub fn of(cert: &CertificateDer<'_>) -> ClientIdentity {
        let sha256: [u8; 32] = Sha256::digest(cert.as_ref()).into();
        let mut id = ClientIdentity {
            sha256,
            common_names: Vec::new(),
            dns_names: Vec::new(),
        };
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            id.common_names = parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
                .collect();
            if let Ok(Some(san)) = parsed.subject_alternative_name() {
                id.dns_names = san
                    .value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect();
            }
        }
        id
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.common_names
            .iter()
            .chain(&self.dns_names)
            .map(String::as_str)
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CN={:?} DNS={:?} sha256:{}",
            self.common_names,
            self.dns_names,
            hex::encode(self.sha256)
        )
    }
}

/// Chain verification by rustls' WebPKI verifier, then the allow-list; both inside the
/// handshake, so a refused client never gets to send a request.
#[derive(Debug)]
struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: AllowList,
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let id = ClientIdentity::of(end_entity);
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(client = %id, error = %e, "client certificate refused: chain not trusted");
            return Err(e);
        }
        if !self.allowed.allows(&id) {
            tracing::warn!(client = %id, "client certificate refused: not in tls.allowed_clients");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        tracing::debug!(client = %id, "client certificate accepted");
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, dns: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().clone()
    }

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_list_matches_common_name_dns_name_or_fingerprint() {
        let vc1 = ClientIdentity::of(&cert("vc-1", &["vc-1.internal"]));
        assert_eq!(vc1.common_names, ["vc-1"]);
        assert_eq!(vc1.dns_names, ["vc-1.internal"]);
        let fp = format!("sha256:{}", hex::encode(vc1.sha256));
        let fp_colons = format!(
            "sha256:{}",
            vc1.sha256
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        let cases: &[(&[&str], bool)] = &[
            (&["vc-1"], true),
            (&["VC-1"], true),
            (&["vc-1.internal"], true),
            (&[fp.as_str()], true),
            (&[fp_colons.as_str()], true),
            (&["vc-2", "vc-1.internal"], true),
            (&["vc-2"], false),
            (&["vc-1.internal.evil"], false),
            (&["vc"], false),
            (&[], false),
        ];
        for (entries, expected) in cases {
            assert_eq!(list(entries).allows(&vc1), *expected, "{entries:?}");
        }
        // Another certificate with the same names has another fingerprint.
        let other = ClientIdentity::of(&cert("vc-1", &["vc-1.internal"]));
        assert!(!list(&[fp.as_str()]).allows(&other));
        assert!(list(&["vc-1"]).allows(&other));
    }

    #[test]
    fn mutual_tls13_needs_tls13_a_verified_certificate_and_the_allow_list() {
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        let id = ClientIdentity::of(&cert("coordinator", &[]));
        let allowed = list(&["coordinator"]);
        assert_eq!(
            check_mutual_tls13(Some(TLSv1_3), Some(&id), &allowed),
            Ok(())
        );
        for (version, client, list, why) in [
            (None, Some(&id), &allowed, "plain HTTP"),
            (Some(TLSv1_2), Some(&id), &allowed, "TLSv1_2"),
            (Some(TLSv1_3), None, &allowed, "no client certificate"),
            (
                Some(TLSv1_3),
                Some(&id),
                &AllowList::default(),
                "not in tls.allowed_clients",
            ),
        ] {
            let e = check_mutual_tls13(version, client, list).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn allow_list_rejects_malformed_fingerprints() {
        for bad in ["sha256:", "sha256:abcd", "sha256:zz", ""] {
            assert!(
                AllowList::parse(&[bad.to_owned()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            parse_listen("localhost:9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        for bad in ["localhost", "localhost:x", "example.com:9000", "9000", ""] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let cases = [
            ("127.0.0.1:9000", false, true),
            ("127.3.2.1:9000", false, true),
            ("[::1]:9000", false, true),
            ("[::ffff:127.0.0.1]:9000", false, true),
            ("0.0.0.0:9000", false, false),
            ("192.168.1.5:9000", false, false),
            ("[::]:9000", false, false),
            ("0.0.0.0:9000", true, true),
            ("localhost:9000", false, true),
        ];
        for (addr, allow, ok) in cases {
            let r = check_plain_http(parse_listen(addr).unwrap(), allow);
            assert_eq!(r.is_ok(), ok, "{addr} allow={allow}: {r:?}");
            if let Err(e) = r {
                let e = e.to_string();
                assert!(
                    e.contains("--allow-insecure-http") && e.contains("--tls-cert"),
                    "{e}"
                );
            }
        }
    }
}
