//! Test PKI and HTTPS clients: a CA minted per test (rcgen), a server certificate for
//! 127.0.0.1/localhost or for the addresses of a host on a test network (`netns`), client
//! certificates, files of them for the binary's configuration, and a reqwest client that trusts
//! the CA and presents an optional client certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use reqwest::blocking::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A certificate and its key, PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// SHA-256 of the DER certificate, as `tls.allowed_clients` takes it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap();
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(der.as_ref())))
    }
}

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for 127.0.0.1, ::1 and localhost.
    pub fn server(&self) -> Identity {
        self.issue(
            "hsm-signer",
            &["localhost", "127.0.0.1", "::1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for `names` (DNS names or addresses) only.
    pub fn server_named(&self, names: &[&str]) -> Identity {
        self.issue("hsm-signer", names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate whose only names are the IP-address SANs `ips`: a participant
    /// reached by address, as on a test network. (rcgen makes an IP SAN of a name that parses
    /// as an address; typed addresses make sure none becomes a DNS name.)
    pub fn server_at(&self, ips: &[IpAddr]) -> Identity {
        let names: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.server_named(&names)
    }

    /// Write this CA's certificate as `<dir>/<name>.pem` (a `client_ca_file`, or the CA a
    /// client trusts); return its path.
    pub fn write_cert(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert_pem()).unwrap();
        path
    }

    /// A client certificate with subject CN `cn` and the DNS name `cn.clients.test`.
    pub fn client(&self, cn: &str) -> Identity {
        self.issue(
            cn,
            &[&format!("{cn}.clients.test")],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// Write `identity` as `<dir>/<name>.pem` and `<dir>/<name>.key` (0600); return both paths.
pub fn write_identity(dir: &Path, name: &str, identity: &Identity) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::OpenOptionsExt;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &identity.cert_pem).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .unwrap();
    std::io::Write::write_all(&mut f, identity.key_pem.as_bytes()).unwrap();
    (cert, key)
}

/// A blocking HTTPS client (OpenSSL through native-tls: another TLS stack than the server's
/// rustls) that trusts only `ca_pem` and presents `client` if given.
pub fn https_client(ca_pem: &str, client: Option<&Identity>) -> Client {
    https_client_timeout(ca_pem, client, Duration::from_secs(30))
}

/// [`https_client`] whose requests (connect included) give up after `timeout`: what a test
/// of a partitioned peer waits for.
pub fn https_client_timeout(ca_pem: &str, client: Option<&Identity>, timeout: Duration) -> Client {
    https_builder(ca_pem, client, timeout).build().unwrap()
}

/// [`https_client`] that speaks TLS 1.2 at most.
pub fn https_client_tls12(ca_pem: &str, client: Option<&Identity>) -> Client {
    https_builder(ca_pem, client, Duration::from_secs(30))
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap()
}

fn https_builder(
    ca_pem: &str,
    client: Option<&Identity>,
    timeout: Duration,
) -> reqwest::blocking::ClientBuilder {
    let mut builder = Client::builder()
        .tls_backend_native()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(timeout);
    if let Some(id) = client {
        builder = builder.identity(
            reqwest::Identity::from_pkcs8_pem(id.cert_pem.as_bytes(), id.key_pem.as_bytes())
                .unwrap(),
        );
    }
    builder
}

/// The error and every cause below it, one per line (to show what refused a connection).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str("\n  caused by: ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
