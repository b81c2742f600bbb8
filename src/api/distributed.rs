//! The participant side of distributed signing (the Remote Signing API's draft profile,
//! ethereum/remote-signing-api PR #29). This signer holds one share of a distributed validator
//! key, a participant record (`KeyRecord::distributed`), and gives a coordinator partial
//! signatures with it, after every check a complete signature gets: its own network check,
//! signing root, signing policy, validity window and durable slashing protection, through the
//! pipeline of `super::sign` and `super::batch`. A participant's trust in the coordinator ends at
//! authentication: it decides for itself.
//!
//! - `GET /api/v1/eth2/distributed/accounts`, `…/accounts/{identifier}`: this participant's view
//!   of its accounts (its id and share key, the composite key, the threshold, every participant).
//! - `POST /api/v1/eth2/distributed/sign/{identifier}`: one partial signature,
//!   `{participant_id, signing_root, signature}`.
//! - `POST /api/v1/eth2/distributed/sign`: the batch form, per identifier
//!   `{identifier, participant_id, signing_root, signature}` or the batch's failure object.
//!
//! The identifier is always the composite (validator) public key. Only a client that connected
//! over TLS 1.3 with a certificate mutual TLS verified and `tls.allowed_clients` lists reaches
//! these routes (`super::auth::identify_coordinator`); that certificate alone names it to the
//! signing policy. uint64s are decimal strings, as the profile says.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api::batch::{self, Outcome};
use crate::api::error::ApiError;
use crate::api::policy::Caller;
use crate::api::sign::{self, Served, Signed};
use crate::api::AppState;
use crate::keys::{KeyRecord, PublicKeyBytes};

/// The distributed endpoints (the router puts them behind
/// [`super::auth::identify_coordinator`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/eth2/distributed/accounts", get(accounts))
        .route(
            "/api/v1/eth2/distributed/accounts/{identifier}",
            get(account),
        )
        .route("/api/v1/eth2/distributed/sign/{identifier}", post(sign))
        .route("/api/v1/eth2/distributed/sign", post(sign_batch))
}

/// `GET /api/v1/eth2/distributed/accounts`: every account of this participant the caller may
/// use, in composite key order.
async fn accounts(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let runtime = app.runtime();
    let list: Vec<Value> = runtime
        .keys
        .iter()
        .filter(|r| caller.may_use(&r.pubkey) && !app.key_gate.is_deleted(&r.pubkey))
        .filter_map(|r| account_json(r))
        .collect();
    Json(list).into_response()
}

/// `GET /api/v1/eth2/distributed/accounts/{identifier}`.
async fn account(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(identifier): Path<String>,
) -> Result<Response, Response> {
    let pubkey = PublicKeyBytes::parse(&identifier).ok_or_else(|| {
        ApiError::bad_request("identifier is not a 48-byte hex BLS public key").into_response()
    })?;
    caller
        .check_key(&pubkey)
        .map_err(|refusal| refusal.answer(&app.metrics))?;
    let runtime = app.runtime();
    let not_found = || {
        ApiError::not_found(format!(
            "no distributed account {pubkey} on this participant"
        ))
    };
    let record = runtime
        .keys
        .get(&pubkey)
        .filter(|r| !app.key_gate.is_deleted(&r.pubkey))
        .ok_or_else(|| not_found().into_response())?;
    let account = account_json(record).ok_or_else(|| not_found().into_response())?;
    Ok(Json(account).into_response())
}

/// A participant record as the profile's `DistributedAccount`; `None` for any other record.
fn account_json(record: &KeyRecord) -> Option<Value> {
    let account = record.distributed.as_ref()?;
    let own = record.own_share()?;
    let participants: Vec<Value> = account
        .participants
        .iter()
        .map(|p| json!({ "id": p.id.get().to_string(), "endpoint": p.endpoint }))
        .collect();
    Some(json!({
        "participant_id": own.id.get().to_string(),
        "public_key": own.pubkey,
        "composite_public_key": record.pubkey,
        "signing_threshold": account.signing_threshold.to_string(),
        "participants": participants,
    }))
}

/// `POST /api/v1/eth2/distributed/sign/{identifier}`: one partial signature.
async fn sign(
    State(app): State<AppState>,
    Path(identifier): Path<String>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let answered = match body {
        Err(e) => Err(sign::unreadable(e).into_response()),
        Ok(body) => {
            match sign::sign_one(&app, &caller, Served::Partial, &identifier, &body).await {
                Ok(signed) => partial(&app, &signed, None).map_err(IntoResponse::into_response),
                Err(refused) => Err(refused.into_response()),
            }
        }
    };
    match answered {
        Ok(body) => Ok(Json(body).into_response()),
        Err(refused) => {
            app.metrics
                .distributed
                .refused_with(refused.status().as_u16());
            Err(refused)
        }
    }
}

/// `POST /api/v1/eth2/distributed/sign`: one request, a partial signature per account.
async fn sign_batch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let refused = |e: ApiError| {
        app.metrics.distributed.refused_with(e.status.as_u16());
        e.into_response()
    };
    let body = body.map_err(|e| refused(sign::unreadable(e)))?;
    let results = batch::run(&app, &caller, Served::Partial, &body)
        .await
        .map_err(refused)?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|(id, outcome)| {
            let answered = match outcome {
                Outcome::Signed(signed) => partial(&app, &signed, Some(&id)),
                Outcome::Failed(e) => Err(e),
            };
            answered.unwrap_or_else(|e| {
                app.metrics.distributed.refused_with(e.status.as_u16());
                batch::failure(&id, &e)
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(results)).into_response())
}

/// A partial signature as the profile answers it (in a batch, with its `identifier`), counted.
fn partial(app: &AppState, signed: &Signed, identifier: Option<&str>) -> Result<Value, ApiError> {
    // The pipeline serves participant records only here; a record without its own share
    // cannot reach this point.
    let own = signed
        .key
        .own_share()
        .ok_or_else(|| ApiError::internal("a distributed account without its share"))?;
    app.metrics.distributed.released(signed.kind.as_str());
    let mut item = serde_json::Map::new();
    if let Some(id) = identifier {
        item.insert("identifier".into(), id.into());
    }
    item.insert("participant_id".into(), own.id.get().to_string().into());
    item.insert("signing_root".into(), signed.root.to_string().into());
    item.insert("signature".into(), signed.signature.clone().into());
    Ok(Value::Object(item))
}

/// Say at start what keeps loaded participant records from being served: without mutual TLS
/// every distributed request is refused, and without slashing protection every block and
/// attestation share is. A warning rather than a refusal to start: the endpoints fail closed,
/// and the signer's other keys are served as before.
pub(crate) fn startup_warnings(app: &AppState, tls: bool) {
    let shares = app
        .runtime()
        .keys
        .iter()
        .filter(|r| r.distributed.is_some())
        .count();
    if shares == 0 {
        return;
    }
    if !(tls && app.config.tls.client_ca_file.is_some()) {
        let warning = format!(
            "{shares} distributed share(s) are loaded, but mutual TLS is not configured ([tls] \
             cert_file, key_file, client_ca_file and allowed_clients): the distributed endpoints \
             refuse every request"
        );
        eprintln!("WARNING: {warning}");
        tracing::warn!("{warning}");
    }
    if app.slashing.is_none() {
        let warning = format!(
            "{shares} distributed share(s) are loaded, but slashing protection is off: no block \
             or attestation share is released"
        );
        eprintln!("WARNING: {warning}");
        tracing::warn!("{warning}");
    }
}
