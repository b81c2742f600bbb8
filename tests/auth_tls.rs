//! Access control of the real binary: the API bearer token on the admin routes (and on the
//! signing API when asked), HTTPS, mutual TLS with an allow-list enforced in the handshake, and
//! plain HTTP refused off loopback.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::tls::{error_chain, https_client, write_identity, Ca};
use common::{blst_signature, signing_fixtures, Server, Signer, FIXTURE_PK};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One oracle case: its request and the oracle's signature.
fn registration_case() -> Value {
    signing_fixtures()
        .1
        .into_iter()
        .find(|(_, c)| c["type"] == "VALIDATOR_REGISTRATION")
        .unwrap()
        .1
}

fn sign(http: &Client, server: &Server, case: &Value, token: Option<&str>) -> Response {
    let mut req = http
        .post(server.url(&format!("/api/v1/eth2/sign/{FIXTURE_PK}")))
        .header("Accept", "application/json")
        .json(&case["request"]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap()
}

/// A 401 as the contract says: JSON message and a Bearer challenge.
fn assert_unauthorized(resp: Response) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: Value = resp.json().unwrap();
    assert!(
        !body["message"].as_str().unwrap().is_empty(),
        "no message: {body}"
    );
}

/// The signer's TLS files: CA, server certificate and key under `<data-dir>/tls`.
fn server_pki(s: &Signer) -> (Ca, std::path::PathBuf, std::path::PathBuf) {
    let dir = s.data_dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("hsm-signer test CA");
    let (cert, key) = write_identity(&dir, "server", &ca.server());
    (ca, cert, key)
}

#[test]
fn over_https_the_token_guards_admin_routes_and_the_signing_api_when_required() {
    let s = Signer::with_fixture_key();
    let (ca, cert, key) = server_pki(&s);
    let log = s.data_dir().join("server.log");
    let server = Server::start_logging_to(
        &s,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--require-auth-on-signing",
            "--no-slot-deadlines",
            "--no-slashing-protection",
            "--no-network-check",
        ],
        &log,
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let http = https_client(&ca.cert_pem(), None);
    let token = server.token();
    let wrong = format!("api-token-{}", "0".repeat(64));

    // Admin routes: no token, a wrong token, another scheme → 401; the right token → served.
    assert_unauthorized(http.get(server.url("/reload")).send().unwrap());
    assert_unauthorized(
        http.get(server.url("/reload"))
            .bearer_auth(&wrong)
            .send()
            .unwrap(),
    );
    assert_unauthorized(
        http.get(server.url("/reload"))
            .header("Authorization", format!("Basic {token}"))
            .send()
            .unwrap(),
    );
    let resp = http
        .get(server.url("/reload"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().unwrap()["status"], "idle");

    let device = server.url("/admin/devices/softhsm-1");
    let off = json!({ "enabled": false });
    assert_unauthorized(http.post(&device).json(&off).send().unwrap());
    assert_unauthorized(
        http.post(&device)
            .bearer_auth(&wrong)
            .json(&off)
            .send()
            .unwrap(),
    );
    // The refused request changed nothing: the device is still in service.
    let health: Value = http
        .get(server.url("/healthcheck"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let dev1 = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "device:softhsm-1")
        .unwrap()
        .clone();
    assert_eq!(dev1["status"], "UP", "{health}");
    let resp = http
        .post(&device)
        .bearer_auth(&token)
        .json(&json!({ "enabled": true }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The signing API with require_on_signing: refused without the token, served with it, and
    // the signature is the oracle's and blst's.
    let case = registration_case();
    assert_unauthorized(sign(&http, &server, &case, None));
    assert_unauthorized(sign(&http, &server, &case, Some(&wrong)));
    assert_unauthorized(
        http.get(server.url("/api/v1/eth2/publicKeys"))
            .send()
            .unwrap(),
    );
    let resp = sign(&http, &server, &case, Some(&token));
    assert_eq!(resp.status(), StatusCode::OK);
    let sig = resp.json::<Value>().unwrap()["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sig, case["signature"].as_str().unwrap());
    assert_eq!(sig, blst_signature(&case));

    // Probes and metrics stay open; an unknown route is 404, not 401.
    for path in ["/upcheck", "/healthcheck", "/metrics"] {
        let resp = http.get(server.url(path)).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(
        http.get(server.url("/admin/nothing"))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Refusals are logged with the route and the reason; no token, right or wrong, ever is.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("request refused") && l.contains("invalid bearer token")),
        "{text}"
    );
    assert!(
        text.contains(&server.token_file.display().to_string()),
        "{text}"
    );
    assert!(
        !text.contains(&token) && !text.contains(&wrong),
        "a token was logged"
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = server.base.replacen("https://", "http://", 1);
    let got = Client::new().get(format!("{plain}/upcheck")).send();
    assert!(
        got.as_ref()
            .map(|r| !r.status().is_success())
            .unwrap_or(true),
        "plain HTTP was served on the TLS port: {got:?}"
    );
}

#[test]
fn signing_over_https_matches_plain_http_and_blst() {
    let s = Signer::with_fixture_key();
    let case = registration_case();
    let args = [
        "--no-slot-deadlines",
        "--no-slashing-protection",
        "--no-network-check",
    ];

    let plain_sig = {
        let server = Server::start(&s, &args);
        assert!(server.base.starts_with("http://"), "{}", server.base);
        let resp = sign(&Client::new(), &server, &case, None);
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().unwrap()["signature"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let (ca, cert, key) = server_pki(&s);
    let mut tls_args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    tls_args.extend(args);
    let server = Server::start(&s, &tls_args);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    // The signing API is open by default: no token needed.
    let resp = sign(&https_client(&ca.cert_pem(), None), &server, &case, None);
    assert_eq!(resp.status(), StatusCode::OK);
    let tls_sig = resp.json::<Value>().unwrap()["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tls_sig, plain_sig);
    assert_eq!(tls_sig, blst_signature(&case));
    assert_eq!(tls_sig, case["signature"].as_str().unwrap());

    // A client that does not trust the server's CA refuses the connection.
    let stranger = https_client(&Ca::new("another CA").cert_pem(), None);
    let err = stranger.get(server.url("/upcheck")).send().unwrap_err();
    assert!(err.status().is_none(), "{}", error_chain(&err));
}

#[test]
fn mutual_tls_admits_only_allowed_client_certificates_during_the_handshake() {
    let s = Signer::with_fixture_key();
    let (ca, cert, key) = server_pki(&s);
    let clients_ca = Ca::new("validator clients CA");
    let by_name = clients_ca.client("vc-allowed");
    let by_dns = clients_ca.client("vc-dns");
    let by_fingerprint = clients_ca.client("vc-pinned");
    let not_listed = clients_ca.client("vc-other");
    // Same name as an allowed client, but from a CA the signer does not trust.
    let rogue = Ca::new("rogue CA").client("vc-allowed");
    let ca_file = s.data_dir().join("tls/clients-ca.pem");
    std::fs::write(&ca_file, clients_ca.cert_pem()).unwrap();
    s.write_config(&format!(
        "[auth]\ntoken_file = \"secrets/token.txt\"\n\n[tls]\ncert_file = {cert:?}\n\
             key_file = {key:?}\nclient_ca_file = \"tls/clients-ca.pem\"\n\
             allowed_clients = [\"vc-allowed\", \"vc-dns.clients.test\", \"{}\"]\n",
        by_fingerprint.fingerprint()
    ));
    let log = s.data_dir().join("server.log");
    let server = Server::start_logging_to(
        &s,
        &[
            "--no-slot-deadlines",
            "--no-slashing-protection",
            "--no-network-check",
        ],
        &log,
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let case = registration_case();

    // Allowed: by subject CN, by DNS name, by fingerprint.
    for id in [&by_name, &by_dns, &by_fingerprint] {
        let http = https_client(&ca.cert_pem(), Some(id));
        let resp = http.get(server.url("/upcheck")).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = sign(&http, &server, &case, None);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.json::<Value>().unwrap()["signature"],
            case["signature"]
        );
    }

    // Refused in the handshake: no HTTP status at all, only the server's TLS alert (OpenSSL's
    // words for it), or a reset should the close overtake the alert.
    for (what, id, alert) in [
        (
            "a client certificate not on the allow-list",
            Some(&not_listed),
            "access denied",
        ),
        ("no client certificate", None, "certificate required"),
        (
            "a certificate from an unknown CA",
            Some(&rogue),
            "unknown ca",
        ),
    ] {
        let http = https_client(&ca.cert_pem(), id);
        match http.get(server.url("/upcheck")).send() {
            Ok(resp) => panic!("{what}: answered {}", resp.status()),
            Err(e) => {
                let chain = error_chain(&e);
                assert!(e.status().is_none(), "{what}: {chain}");
                assert!(
                    chain.contains(alert) || chain.contains("reset by peer"),
                    "{what}: not refused by the TLS handshake: {chain}"
                );
            }
        }
    }

    // Each refusal is logged with the client's identity (written before the alert was sent).
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals: Vec<&str> = text.lines().filter(|l| l.contains("refused")).collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("not in tls.allowed_clients") && l.contains("vc-other")),
        "{text}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("chain not trusted") && l.contains("UnknownIssuer")),
        "{text}"
    );
    assert!(text.contains("peer sent no certificates"), "{text}");

    // The token is where auth.token_file says (relative to the config file), private.
    let token_file = s.data_dir().join("secrets/token.txt");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!s.data_dir().join("api-token.txt").exists());
    let token = std::fs::read_to_string(&token_file).unwrap();
    let http = https_client(&ca.cert_pem(), Some(&by_name));
    let resp = http
        .get(server.url("/reload"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn mutual_tls_configuration_mistakes_refuse_to_start() {
    let s = Signer::with_fixture_key();
    let (_ca, cert, key) = server_pki(&s);
    let tls = format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
    for (extra, expected) in [
        (
            "client_ca_file = \"tls/server.pem\"\n",
            "tls.allowed_clients is empty",
        ),
        (
            "allowed_clients = [\"vc\"]\n",
            "tls.allowed_clients needs tls.client_ca_file",
        ),
        (
            "client_ca_file = \"tls/server.pem\"\nallowed_clients = [\"sha256:abcd\"]\n",
            "is not sha256: and 64 hex digits",
        ),
    ] {
        s.write_config(&format!("{tls}{extra}"));
        let err = s.fail(&["serve", "--listen", "127.0.0.1:0"]);
        let line = common::assert_one_error_line(&err);
        assert!(line.contains(expected), "{extra}: {line}");
    }
    // A missing key file names the file.
    s.write_config(&format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = \"tls/nope.key\"\n"
    ));
    let err = s.fail(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(
        common::assert_one_error_line(&err).contains("nope.key"),
        "{err}"
    );
}

#[test]
fn plain_http_off_loopback_is_refused_at_start_unless_allowed() {
    let s = Signer::with_fixture_key();
    let before = common::snapshot(s.data_dir());
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let err = s.fail(&["serve", "--listen", listen]);
        let line = common::assert_one_error_line(&err);
        assert!(
            line.contains("refusing to serve plain HTTP")
                && line.contains("--tls-cert")
                && line.contains("--allow-insecure-http"),
            "{line}"
        );
    }
    // Refused before anything was made: no token file, nothing changed.
    assert_eq!(common::snapshot(s.data_dir()), before);

    // The operator's explicit override starts it (reached here over loopback); the signing API
    // off loopback needs client authentication too (the token here).
    let server = Server::start_on(
        &s,
        "0.0.0.0:0",
        &["--allow-insecure-http", "--require-auth-on-signing"],
    );
    let url = server.url("/upcheck").replacen("0.0.0.0", "127.0.0.1", 1);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(
        Client::new().get(url).send().unwrap().status(),
        StatusCode::OK
    );
}

#[test]
fn token_file_is_private_reused_on_restart_and_refused_when_group_readable() {
    let s = Signer::with_fixture_key();
    let token_file = s.data_dir().join("api-token.txt");
    assert!(!token_file.exists());
    let http = Client::new();
    let first = {
        let server = Server::start(&s, &[]);
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = server.token();
        assert!(
            token.starts_with("api-token-") && token.len() == 74,
            "bad format"
        );
        let resp = http
            .get(server.url("/reload"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        token
    };

    // Restart: the same token, still accepted.
    let server = Server::start(&s, &[]);
    assert_eq!(server.token(), first);
    let resp = http
        .get(server.url("/reload"))
        .bearer_auth(&first)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(server);

    // Group-readable: refused at start, with the fix, and without the token in the message.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = s.fail(&["serve", "--listen", "127.0.0.1:0"]);
    let line = common::assert_one_error_line(&err);
    assert!(
        line.contains(token_file.to_str().unwrap()) && line.contains("chmod 600"),
        "{line}"
    );
    assert!(!err.contains(&first));
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), first);
}

/// Hardening (issue 15, finding 1): the signing API is not opened to other machines without
/// client authentication (mutual TLS or the bearer token), unless the operator overrides it,
/// and then it says so.
#[test]
fn signing_off_loopback_needs_client_authentication_unless_overridden() {
    let s = Signer::with_fixture_key();
    let before = common::snapshot(s.data_dir());
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let err = s.fail(&["serve", "--listen", listen, "--allow-insecure-http"]);
        let line = common::assert_one_error_line(&err);
        assert!(
            line.contains("refusing to open the signing API")
                && line.contains("without client authentication")
                && line.contains("client_ca_file")
                && line.contains("--require-auth-on-signing")
                && line.contains("--allow-unauthenticated-signing"),
            "{line}"
        );
    }
    // Refused before anything was made.
    assert_eq!(common::snapshot(s.data_dir()), before);

    // With the token required on signing: an anonymous request is 401, the token's signs.
    let server = Server::start_on(
        &s,
        "0.0.0.0:0",
        &["--allow-insecure-http", "--require-auth-on-signing"],
    );
    let url = server
        .url(&format!("/api/v1/eth2/sign/{FIXTURE_PK}"))
        .replacen("0.0.0.0", "127.0.0.1", 1);
    let request = registration_case()["request"].clone();
    let http = Client::new();
    let anonymous = http.post(&url).json(&request).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let with_token = http
        .post(&url)
        .bearer_auth(server.token())
        .json(&request)
        .send()
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    drop(server);

    // The explicit override starts it open, and says so.
    let log = s.data_dir().join("open.log");
    let server = Server::start_on_appending_to(
        &s,
        "0.0.0.0:0",
        &["--allow-insecure-http", "--allow-unauthenticated-signing"],
        &log,
        &[],
    );
    let url = server
        .url(&format!("/api/v1/eth2/sign/{FIXTURE_PK}"))
        .replacen("0.0.0.0", "127.0.0.1", 1);
    assert_eq!(
        http.post(&url).json(&request).send().unwrap().status(),
        StatusCode::OK
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("WARNING: the signing API on 0.0.0.0:")
            && text.contains("is open to anyone who reaches it"),
        "{text}"
    );
}
