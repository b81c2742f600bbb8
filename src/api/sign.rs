//! `POST /api/v1/eth2/sign/{identifier}`: parse, recompute the signing root, refuse a supplied
//! root that differs, sign on the key's device, answer as JSON or text by `Accept`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::consensus::{MessageType, SignRequest, SlashingData};
use crate::keys::PublicKeyBytes;
use crate::scheduler::{Class, JobError, SignJob};
use crate::slashing::{Proposal, SlashingError};

/// The priority class of a request type (DESIGN §2).
pub fn class_of(t: MessageType) -> Class {
    use MessageType::*;
    match t {
        BlockV2 | Block | RandaoReveal => Class::Block,
        Attestation | SyncCommitteeMessage => Class::Attestation,
        AggregateAndProof
        | AggregateAndProofV2
        | SyncCommitteeContributionAndProof
        | AggregationSlot
        | SyncCommitteeSelectionProof => Class::Aggregate,
        ValidatorRegistration | VoluntaryExit | Deposit => Class::Admin,
    }
}

/// Whether the client wants JSON: yes when `Accept` allows `application/json` (directly or via
/// `application/*` or `*/*`) at least as much as `text/plain`, or when there is no `Accept`.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let (mut json_q, mut text_q) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" | "application/*" => json_q = json_q.max(q),
            "text/plain" | "text/*" => text_q = text_q.max(q),
            "*/*" => {
                json_q = json_q.max(q);
                text_q = text_q.max(q * 0.999);
            }
            _ => {}
        }
    }
    json_q > 0.0 && json_q >= text_q
}

/// The signing endpoint.
pub async fn sign(
    State(app): State<AppState>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pubkey = PublicKeyBytes::parse(&identifier)
        .ok_or_else(|| ApiError::bad_request("identifier is not a 48-byte hex BLS public key"))?;
    let runtime = app.runtime();
    let key = runtime
        .keys
        .get(&pubkey)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("public key {pubkey} not found")))?;
    // A key deleted through the Keymanager API signs nothing more; DELETE waits for this permit.
    let _permit = app
        .key_gate
        .enter(&pubkey)
        .ok_or_else(|| ApiError::not_found(format!("public key {pubkey} not found (deleted)")))?;
    let request = SignRequest::from_json(&body, app.network.preset)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let root = request
        .signing_root(&app.network)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(supplied) = request.supplied_signing_root() {
        if supplied != root {
            return Err(ApiError::bad_request(format!(
                "signing root mismatch: supplied {supplied}, computed {root}; nothing was signed"
            )));
        }
    }
    let started = std::time::Instant::now();
    // A precomputed selection proof for this very root: no device operation.
    if let (Some(cache), Some(proof)) = (
        &app.selection_proofs,
        request.selection_proof(app.network.slots_per_epoch),
    ) {
        if let Some(signature) = cache.lookup(&pubkey, &proof, &root) {
            app.metrics
                .signing
                .get(request.message_type().as_str())
                .observe(started.elapsed());
            return Ok(signature_response(
                &headers,
                format!("0x{}", hex::encode(signature)),
            ));
        }
    }
    // Slashing protection: check and record durably before any signature can exist.
    let proposal = match request.slashing_data() {
        SlashingData::None => None,
        SlashingData::Block { slot } => Some(Proposal::Block {
            slot,
            signing_root: root.0,
        }),
        SlashingData::Attestation {
            source_epoch,
            target_epoch,
        } => Some(Proposal::Attestation {
            source_epoch,
            target_epoch,
            signing_root: root.0,
        }),
    };
    if let (Some(proposal), Some(slashing)) = (proposal, &app.slashing) {
        let gvr = request.genesis_validators_root().ok_or_else(|| {
            ApiError::bad_request("fork_info.genesis_validators_root is required")
        })?;
        match slashing
            .check_and_record_async(&pubkey.0, &gvr, proposal)
            .await
        {
            Ok(()) => {}
            Err(SlashingError::Refused(reason)) => {
                app.metrics
                    .slashing_refusals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%pubkey, %reason, "refused by slashing protection");
                return Err(ApiError::slashable(format!(
                    "refused by slashing protection: {reason}"
                )));
            }
            Err(e) => {
                tracing::error!(%pubkey, error = %e, "slashing protection unavailable; not signing");
                return Err(ApiError::unavailable(format!(
                    "slashing protection unavailable: {e}"
                )));
            }
        }
    }
    let class = class_of(request.message_type());
    let deadline = app
        .clock
        .zip(request.duty_slot(app.network.slots_per_epoch))
        .and_then(|(clock, slot)| clock.deadline(class, slot));
    let signature = runtime
        .scheduler
        .sign(SignJob {
            key,
            signing_root: root.0,
            class,
            deadline,
        })
        .await
        .map_err(|e| match e {
            JobError::Unavailable(_) | JobError::Overloaded(_) | JobError::Expired => {
                ApiError::unavailable(e.to_string())
            }
            JobError::Failed(_) | JobError::Faulty(_) => {
                tracing::error!(%pubkey, error = %e, "signing failed");
                ApiError::internal(e.to_string())
            }
        })?;
    app.metrics
        .signing
        .get(request.message_type().as_str())
        .observe(started.elapsed());
    Ok(signature_response(
        &headers,
        format!("0x{}", hex::encode(signature.compress())),
    ))
}

/// The answer: `{"signature": …}` or the bare hex, by `Accept`.
fn signature_response(headers: &HeaderMap, hex: String) -> Response {
    if wants_json(headers) {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "signature": hex })),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            hex,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn content_negotiation_table() {
        let cases = [
            ("application/json", true),
            ("*/*", true),
            ("text/plain", false),
            ("text/plain, application/json", true),
            ("text/plain;q=1, application/json;q=0.5", false),
            ("application/json;q=0", false),
            ("text/html", false),
            ("application/*", true),
            ("text/plain, */*;q=0.1", false),
        ];
        for (header, json) in cases {
            assert_eq!(wants_json(&accept(header)), json, "Accept: {header}");
        }
        assert!(
            wants_json(&HeaderMap::new()),
            "no Accept header means anything goes"
        );
    }
}
