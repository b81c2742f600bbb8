//! The API bearer token: one random token per signer, kept in a 0600 file, checked in constant
//! time by a middleware on the admin routes (and, when configured, on the signing API); and the
//! signing API's identification of its caller (a client token or certificate of the signing
//! policy, `super::policy`), and the distributed endpoints' (mutual TLS 1.3 and the certificate
//! only). Owns the token files and the checks; which routes are behind them is
//! `super::router`'s choice.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::policy::Presented;
use super::transport::Peer;
use super::{ApiError, AppState};
use crate::error::{Result, SignerError};

/// Prefix of generated tokens, so that a leaked one is recognisable in a secret scanner.
pub(crate) const TOKEN_PREFIX: &str = "api-token-";

/// The API bearer token. `Debug` does not show it.
#[derive(Debug)]
pub struct ApiToken {
    token: SecretString,
    path: PathBuf,
}

/// Whether the token file was just made or already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Generated at this start.
    Created,
    /// Read from an existing file.
    Existing,
}

impl ApiToken {
    /// Read the token from `path`, or, if there is no such file, generate a random 32-byte token
    /// and write it there with mode 0600 (never readable by others, not even for a moment).
    /// Refuses a file that group or others may read.
    pub fn load_or_create(path: &Path) -> Result<(ApiToken, TokenOrigin)> {
        match std::fs::metadata(path) {
            Ok(_) => Ok((ApiToken::read(path)?, TokenOrigin::Existing)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ApiToken::create(path),
            Err(e) => Err(SignerError::io(path)(e)),
        }
    }

    fn read(path: &Path) -> Result<ApiToken> {
        let meta = std::fs::metadata(path).map_err(SignerError::io(path))?;
        if !meta.is_file() {
            return Err(SignerError::Config(format!(
                "API token file {} is not a regular file",
                path.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SignerError::Config(format!(
                "API token file {} is readable by group or others (mode {mode:04o}): run \
                 `chmod 600 {}` (and replace the token if others may have read it)",
                path.display(),
                path.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(SignerError::io(path))?);
        let token = text.trim();
        if token.is_empty() {
            return Err(SignerError::Config(format!(
                "API token file {} is empty: delete it to have a new token generated",
                path.display()
            )));
        }
        Ok(ApiToken {
            token: SecretString::from(token.to_owned()),
            path: path.to_owned(),
        })
    }

    fn create(path: &Path) -> Result<(ApiToken, TokenOrigin)> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(SignerError::io(dir))?;
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut raw[..])
            .map_err(|e| SignerError::System(format!("no randomness for the API token: {e}")))?;
        let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", hex::encode(&raw[..])));
        // Write a private temporary file, then link it into place: the name appears only with
        // its full content, mode 0600 from creation, and an existing file is never replaced.
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| SignerError::System(format!("no randomness: {e}")))?;
        let tmp = dir.join(format!(".api-token.{}.tmp", hex::encode(nonce)));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok((
                    ApiToken {
                        token: SecretString::from(token.to_string()),
                        path: path.to_owned(),
                    },
                    TokenOrigin::Created,
                ))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((ApiToken::read(path)?, TokenOrigin::Existing))
            }
            Err(e) => Err(SignerError::io(path)(e)),
        }
    }

    /// Where the token is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `other` holds the same token (two clients must not share one).
    pub(crate) fn same_secret_as(&self, other: &ApiToken) -> bool {
        self.matches(other.token.expose_secret().as_bytes())
    }

    /// Whether `presented` is the token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the input's length or content.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected: Zeroizing<[u8; 32]> =
            Zeroizing::new(Sha256::digest(self.token.expose_secret().as_bytes()).into());
        let given: [u8; 32] = Sha256::digest(presented).into();
        bool::from(expected.ct_eq(&given))
    }
}

/// Put every route of `router` behind the bearer token: a request without `Authorization:
/// Bearer <token>`, or with another token, gets 401 and never reaches the handler. Routes that
/// do not match stay 404. This is how the admin routes (and the Keymanager API) are guarded:
/// `let admin = auth::require_token(admin_routes, &state);`.
pub(crate) fn require_token(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.api_token.clone(),
        check_bearer,
    ))
}

async fn check_bearer(
    State(token): State<Option<Arc<ApiToken>>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let verdict = match (&token, presented_token(&req)) {
        // Fail closed: a server built without a token refuses every guarded route.
        (None, _) => Err("no API token is configured on this server"),
        (Some(_), None) => Err("missing bearer token (Authorization: Bearer <token>)"),
        (Some(t), Some(given)) if t.matches(given) => Ok(()),
        (Some(_), Some(_)) => Err("invalid bearer token"),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::warn!(%path, reason = why, "request refused");
            unauthorized(why)
        }
    }
}

/// Identify the caller of every route of `router` (the signing API) for the signing policy:
/// from its bearer token (the API token, or a client's token from the policy) and its client
/// certificate. A missing token where `auth.require_on_signing` wants one, or a token that is
/// no one's, gets 401; a request the policy cannot attribute to exactly one of its clients gets
/// 403 (rule `client`). The handler finds the [`Caller`] in the request's extensions.
pub(crate) fn identify_signing_client(
    router: Router<AppState>,
    state: &AppState,
) -> Router<AppState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        identify,
    ))
}

async fn identify(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let policy = app.policy();
    let required = app.config.auth.require_on_signing;
    let refuse = |why: &'static str, path: &str| {
        tracing::warn!(%path, reason = why, "request refused");
        unauthorized(why)
    };
    let presented = match presented_token(&req) {
        None if required => {
            return refuse(
                "missing bearer token (Authorization: Bearer <token>)",
                req.uri().path(),
            )
        }
        None => Presented::Nothing,
        Some(given) => {
            if app.api_token.as_ref().is_some_and(|t| t.matches(given)) {
                Presented::ApiToken
            } else if let Some(client) = policy.token_client(given) {
                Presented::Client(client)
            } else if required || policy.has_client_tokens() {
                return refuse("invalid bearer token", req.uri().path());
            } else {
                // No token is asked for here: an unrelated header changes nothing.
                Presented::Nothing
            }
        }
    };
    let cert = req
        .extensions()
        .get::<Peer>()
        .and_then(|peer| peer.client.clone());
    match policy.caller(&presented, cert.as_deref()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => refusal.answer(&app.metrics),
    }
}

/// Admit to every route of `router` (the distributed endpoints) only a request that came over
/// TLS 1.3 with a client certificate mutual TLS verified and `tls.allowed_clients` lists, and
/// identify its caller for the signing policy by that certificate alone: plain HTTP, even on
/// loopback, another TLS version, or a bearer token of any kind opens nothing here (403 naming
/// what is missing). The handler finds the [`Caller`] in the request's extensions.
///
/// [`Caller`]: super::policy::Caller
pub(crate) fn identify_coordinator(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        coordinator,
    ))
}

async fn coordinator(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>();
    let (version, cert) = (
        peer.and_then(|p| p.tls),
        peer.and_then(|p| p.client.clone()),
    );
    if let Err(why) =
        super::tls::check_mutual_tls13(version, cert.as_deref(), &app.mutual_tls_clients)
    {
        app.metrics.distributed.no_access();
        tracing::warn!(path = %req.uri().path(), reason = %why, "request refused");
        return ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "distributed endpoints need mutual TLS 1.3 from a client on the allow-list: {why}"
            ),
        }
        .into_response();
    }
    match app.policy().caller(&Presented::Nothing, cert.as_deref()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            app.metrics.distributed.no_access();
            refusal.answer(&app.metrics)
        }
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive), if any.
fn presented_token(req: &Request) -> Option<&[u8]> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
    }
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hsm-signer\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> ApiToken {
        ApiToken {
            token: SecretString::from(t.to_owned()),
            path: PathBuf::new(),
        }
    }

    #[test]
    fn token_matches_only_itself() {
        let t = token("api-token-00ff");
        assert!(t.matches(b"api-token-00ff"));
        for other in [
            &b"api-token-00fe"[..],
            b"api-token-00f",
            b"api-token-00ff ",
            b"api-token-00ff00",
            b"API-TOKEN-00FF",
            b"",
        ] {
            assert!(!t.matches(other), "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn bearer_header_parsing() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(presented_token(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(presented_token(&req("bearer   abc ")), Some(&b"abc"[..]));
        assert_eq!(presented_token(&req("Basic abc")), None);
        assert_eq!(presented_token(&req("Bearer")), None);
        assert_eq!(presented_token(&req("Bearer ")), None);
        let none = Request::new(axum::body::Body::empty());
        assert_eq!(presented_token(&none), None);
    }

    #[test]
    fn token_file_is_created_private_reused_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-token.txt");
        let (a, origin) = ApiToken::load_or_create(&path).unwrap();
        assert_eq!(origin, TokenOrigin::Created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.trim();
        assert!(text.starts_with(TOKEN_PREFIX) && text.len() == TOKEN_PREFIX.len() + 64);
        assert!(a.matches(text.as_bytes()));
        assert!(!format!("{a:?}").contains(text));
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let (b, origin) = ApiToken::load_or_create(&path).unwrap();
        assert_eq!(origin, TokenOrigin::Existing);
        assert!(b.matches(text.as_bytes()));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = ApiToken::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others") && err.contains("0640"),
            "{err}"
        );
        assert!(!err.contains(text));
    }
}
