//! The Keymanager API (`GET/POST/DELETE /eth/v1/keystores`, per
//! `specs/web3signer-eth2/keymanager/`): list the loaded keys, import EIP-2335 keystores (with
//! their EIP-3076 slashing history) onto the configured device or split t-of-n across devices,
//! and delete keys so that they can never sign again without an explicit re-import.
//!
//! A deletion is durable: a tombstone in the slashing-protection database (SQLite or PostgreSQL)
//! keeps the key out of the signing set at every start and reload even if its key file is
//! restored, and an in-memory deny-list checked on the sign path refuses it at once. DELETE first
//! refuses new signing requests for the key and waits for those already under way, then records
//! the tombstone and reads the slashing history in one transaction, so the returned interchange
//! holds every signature this signer released. A later `POST` of the keystore clears the
//! tombstone. Authentication is not here: the router owner wraps these routes.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use zeroize::Zeroize;

use crate::api::error::ApiError;
use crate::api::sign::Served;
use crate::api::AppState;
use crate::app::lifecycle::{delete_keys, install_keys, Deleted, NewKey};
use crate::keys::eip2335::{KdfWork, Keystore};
use crate::keys::PublicKeyBytes;
use crate::slashing::interchange;
use crate::slashing::{SlashingError, SlashingProtection};

/// How long DELETE waits for signatures already under way for a key before it gives up on the
/// key (`[keymanager] delete_drain_timeout_secs` overrides).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The Keymanager routes, to be merged into the main router (and wrapped by its auth layer).
pub fn routes() -> Router<AppState> {
    Router::new().route("/eth/v1/keystores", get(list).post(import).delete(delete))
}

fn require_slashing(app: &AppState) -> Result<SlashingProtection, ApiError> {
    app.slashing.clone().ok_or_else(|| {
        ApiError::internal(
            "the Keymanager API needs slashing protection (it keeps deletions and the signing \
             history), but this signer runs with --no-slashing-protection",
        )
    })
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("internal error: {e}"))
}

/// `GET /eth/v1/keystores`.
async fn list(State(app): State<AppState>) -> Json<Value> {
    let runtime = app.runtime();
    let data: Vec<Value> = runtime
        .keys
        .iter()
        // A distributed share is not a validating key of this signer: a tool copying this list
        // into a validator client would point it at signatures never made. DELETE still removes
        // one (with its slashing history).
        .filter(|r| !app.key_gate.is_deleted(&r.pubkey) && Served::Complete.serves(r))
        .map(|r| {
            let mut entry = json!({ "validating_pubkey": r.pubkey.to_string(), "readonly": false });
            if let Some(path) = r.derivation_path.as_deref().filter(|p| !p.is_empty()) {
                entry["derivation_path"] = path.into();
            }
            entry
        })
        .collect();
    Json(json!({ "data": data }))
}

/// The most key-derivation work one import request may ask for: 64 keystores with EIP-2335's
/// default scrypt parameters (2^21 each), or one keystore at the per-keystore limits (scrypt
/// n · r ≤ 2^23, p ≤ 16). Run one at a time, that is about a minute of one core.
const MAX_REQUEST_KDF_WORK: KdfWork = KdfWork(1 << 27);

fn secret_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    let plain: Vec<String> = Vec::deserialize(d)?;
    Ok(plain
        .into_iter()
        .map(|mut s| {
            let secret = SecretString::from(s.as_str());
            s.zeroize();
            secret
        })
        .collect())
}

#[derive(Deserialize)]
struct ImportRequest {
    keystores: Vec<String>,
    #[serde(deserialize_with = "secret_strings")]
    passwords: Vec<SecretString>,
    #[serde(default)]
    slashing_protection: Option<String>,
}

enum Outcome {
    Imported,
    Duplicate,
    Error(String),
}

impl Outcome {
    fn to_json(&self) -> Value {
        match self {
            Outcome::Imported => json!({ "status": "imported" }),
            Outcome::Duplicate => json!({ "status": "duplicate" }),
            Outcome::Error(m) => json!({ "status": "error", "message": m }),
        }
    }
}

/// A 400 for a body that does not parse. serde's "invalid type/value" messages quote the
/// offending value, which may be a password: those are replaced by the expected shape.
fn body_error(what: &str, shape: &str, e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let detail = match e.classify() {
        serde_json::error::Category::Data if !text.starts_with("missing field") => format!(
            "expected {shape} (wrong type or value at line {} column {})",
            e.line(),
            e.column()
        ),
        _ => text,
    };
    ApiError::bad_request(format!("invalid {what} request: {detail}"))
}

/// `POST /eth/v1/keystores`.
async fn import(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: ImportRequest = serde_json::from_slice(&body).map_err(|e| {
        body_error(
            "import",
            r#"{"keystores": [string], "passwords": [string], "slashing_protection"?: string}"#,
            &e,
        )
    })?;
    // The body holds the passwords: wipe it when we hold its only reference.
    if let Ok(mut owned) = body.try_into_mut() {
        owned[..].zeroize();
    }
    if request.keystores.len() != request.passwords.len() {
        return Err(ApiError::bad_request(format!(
            "{} keystore(s) but {} password(s): passwords[i] must unlock keystores[i]",
            request.keystores.len(),
            request.passwords.len()
        )));
    }
    let mut keystores = Vec::with_capacity(request.keystores.len());
    for (i, (text, password)) in request.keystores.iter().zip(request.passwords).enumerate() {
        let ks = Keystore::from_json(text)
            .map_err(|e| ApiError::bad_request(format!("keystores[{i}]: {e}")))?;
        keystores.push((ks, password));
    }
    let slashing_data = request
        .slashing_protection
        .as_deref()
        .map(interchange::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("slashing_protection: {e}")))?;
    let slashing = require_slashing(&app)?;
    let placement = crate::keys::placement::keymanager_placement(&app.config)
        .map_err(|e| ApiError::internal(e.to_string()))?;

    // A key already loaded is answered `duplicate` on its keystore's word, without running the
    // KDF; the rest must fit the request's KDF budget before any KDF runs.
    let mut outcomes: Vec<Option<Outcome>> = keystores.iter().map(|_| None).collect();
    let mut pending = Vec::new();
    let mut work = KdfWork(0);
    {
        let loaded = app.runtime();
        for (i, (ks, password)) in keystores.into_iter().enumerate() {
            let claimed = ks.pubkey.as_deref().and_then(PublicKeyBytes::parse);
            if claimed.is_some_and(|pk| loaded.keys.contains(&pk)) {
                outcomes[i] = Some(Outcome::Duplicate);
                continue;
            }
            let w = ks
                .kdf_work()
                .map_err(|e| ApiError::bad_request(format!("keystores[{i}]: {e}")))?;
            work.0 = work.0.saturating_add(w.0);
            pending.push((i, ks, password));
        }
    }
    if work > MAX_REQUEST_KDF_WORK {
        return Err(ApiError::bad_request(format!(
            "the keystores' key derivations need {} units of work, more than the {} one request \
             may spend (64 keystores with EIP-2335's default scrypt parameters); nothing was \
             decrypted: import them in several requests",
            work.0, MAX_REQUEST_KDF_WORK.0
        )));
    }

    // One KDF at a time in the server, at low OS priority, without the key-set lock: signing,
    // reloads, deletions and smaller imports go on meanwhile.
    let mut decrypted = Vec::with_capacity(pending.len());
    for (i, ks, password) in pending {
        let path = Some(ks.path.clone()).filter(|p| !p.is_empty());
        let result = decrypt_in_turn(ks, password, format!("keystores[{i}]")).await;
        decrypted.push((i, path, result));
    }

    let _write = app.key_gate.write.lock().await;
    // The key set may have changed while the KDFs ran: duplicates are decided now.
    let runtime = app.runtime();
    let mut todo = Vec::new();
    let mut seen = HashSet::new();
    for (i, path, result) in decrypted {
        outcomes[i] = Some(match result {
            Err(e) => Outcome::Error(e.to_string()),
            Ok((pk, sk)) => {
                if runtime.keys.contains(&pk) || !seen.insert(pk) {
                    Outcome::Duplicate
                } else {
                    todo.push((i, pk, sk, path));
                    Outcome::Imported
                }
            }
        });
    }
    let mut outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Error("not processed".into())))
        .collect();

    // The slashing history goes in before any key can sign. A file without records would only
    // pin the network (and the all-zero root of an empty DELETE answer is no network at all).
    let decrypted_any = outcomes.iter().any(|o| !matches!(o, Outcome::Error(_)));
    if let Some(data) = slashing_data.filter(|d| decrypted_any && !d.has_no_records()) {
        let db = slashing.clone();
        let summary = tokio::task::spawn_blocking(move || db.import_parsed(data))
            .await
            .map_err(join_error)?
            .map_err(|e| match e {
                SlashingError::Interchange(_) | SlashingError::Refused(_) => {
                    ApiError::bad_request(format!("slashing_protection: {e}; nothing was imported"))
                }
                SlashingError::Store(_) => {
                    ApiError::internal(format!("slashing_protection: {e}; nothing was imported"))
                }
            })?;
        for m in &summary.minified {
            tracing::warn!(
                pubkey = %format!("0x{}", hex::encode(m.pubkey)),
                reason = %m.reason,
                "imported slashing history was slashable; kept as watermarks"
            );
        }
    }

    let keys = todo
        .into_iter()
        .map(|(index, pubkey, secret, derivation_path)| NewKey {
            index,
            pubkey,
            secret,
            derivation_path,
        })
        .collect();
    let refused = install_keys(&app, &runtime, &slashing, placement, keys)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for (i, message) in refused {
        outcomes[i] = Outcome::Error(message);
    }
    let data: Vec<Value> = outcomes.iter().map(Outcome::to_json).collect();
    Ok(Json(json!({ "data": data })).into_response())
}

#[derive(Deserialize)]
struct DeleteRequest {
    pubkeys: Vec<String>,
}

/// `DELETE /eth/v1/keystores`.
async fn delete(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: DeleteRequest = serde_json::from_slice(&body)
        .map_err(|e| body_error("delete", r#"{"pubkeys": [string]}"#, &e))?;
    let mut pubkeys = Vec::with_capacity(request.pubkeys.len());
    for (i, s) in request.pubkeys.iter().enumerate() {
        let pk = s
            .strip_prefix("0x")
            .filter(|h| h.len() == 96)
            .and_then(|_| PublicKeyBytes::parse(s))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "pubkeys[{i}]: {s:?} is not a 0x-prefixed 48-byte hex public key"
                ))
            })?;
        pubkeys.push(pk);
    }
    let slashing = require_slashing(&app)?;

    // 1. No new signature from these keys; wait for those under way.
    let drain = app
        .config
        .keymanager
        .delete_drain_timeout_secs
        .map_or(DRAIN_TIMEOUT, Duration::from_secs);
    let Deleted {
        active,
        known,
        busy,
        interchange,
    } = delete_keys(&app, &slashing, &pubkeys, drain)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;

    let data: Vec<Value> = pubkeys
        .iter()
        .zip(active.iter().zip(&known))
        .map(|(pk, (active, known))| match (active, known) {
            (true, _) if busy.contains(pk) => json!({
                "status": "error",
                "message": format!(
                    "signing requests for {pk} were still under way after {}s: the key was \
                     not deleted and signs as before; retry the DELETE",
                    drain.as_secs()
                ),
            }),
            (true, _) => json!({ "status": "deleted" }),
            (false, true) => json!({ "status": "not_active" }),
            (false, false) => json!({ "status": "not_found" }),
        })
        .collect();
    let deleted = known
        .iter()
        .zip(&active)
        .filter(|(k, a)| **k && **a)
        .count();
    if deleted > 0 {
        tracing::info!(deleted, "keys deleted through the Keymanager API");
    }
    Ok(Json(json!({ "data": data, "slashing_protection": interchange })).into_response())
}

/// The OS nice value of a Keymanager key derivation: below the HTTP runtime (5), so that an
/// import takes no core from signing.
const SERVER_KDF_NICE: i32 = 10;

/// One key derivation at a time in the whole server, taken in arrival order, so that imports
/// hold at most one KDF's memory (scrypt: up to 1 GiB) and share the turn keystore by keystore.
static SERVER_KDF_TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Decrypt one keystore for the server (the Keymanager API): after waiting for the server's
/// single KDF turn, on a thread of its own at low OS priority, off the async runtime. Holds no
/// lock of the caller's: the caller takes its key-set lock only afterwards.
async fn decrypt_in_turn(
    keystore: Keystore,
    password: SecretString,
    label: String,
) -> crate::error::Result<(PublicKeyBytes, blst::min_pk::SecretKey)> {
    let turn = SERVER_KDF_TURN.acquire().await.map_err(|_| {
        crate::error::SignerError::Internal("the key-derivation turn was closed".into())
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keystore-kdf".into())
        .spawn(move || {
            // The turn ends with the KDF, not with the request: a client that hangs up does
            // not get a second KDF running beside the first.
            let _turn = turn;
            crate::scheduler::set_own_nice(SERVER_KDF_NICE);
            let result = crate::keys::import::decrypt_one(
                &keystore,
                std::path::Path::new(&label),
                &password,
            );
            let _ = tx.send(result);
        })
        .map_err(|e| {
            crate::error::SignerError::System(format!("no thread for the key derivation: {e}"))
        })?;
    rx.await.map_err(|_| {
        crate::error::SignerError::Internal(
            "the key-derivation thread ended without an answer".into(),
        )
    })?
}
