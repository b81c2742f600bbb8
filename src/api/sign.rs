//! `POST /api/v1/eth2/sign/{identifier}`: refuse a key the client may not use, parse, refuse
//! another network's request, recompute the signing root, refuse a supplied root that differs,
//! refuse what the signing policy does not allow, refuse a request past its validity window,
//! check and record it in slashing protection, sign on the key's device (or answer from the
//! selection-proof cache), answer as JSON or text by `Accept`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::policy::{Caller, Policy};
use crate::api::AppState;
use crate::consensus::{
    validity, MessageType, SignRequest, SlashingData, SlotClock, ValidityWindow,
};
use crate::duties::{LiveProof, JOIN_PATIENCE};
use crate::keys::PublicKeyBytes;
use crate::scheduler::{Class, JobError, SignJob};
use crate::slashing::{Proposal, Refusal, SlashingError};

/// The priority class of a request type (DESIGN §2).
pub(crate) fn class_of(t: MessageType) -> Class {
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
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
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
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    // A body that cannot be read (over the limit, cut off) is answered like every other error:
    // JSON with its status and the reason.
    let body = body.map_err(|e| {
        ApiError {
            status: e.status(),
            message: match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => format!(
                    "request body larger than the limit of {} bytes",
                    crate::api::BODY_LIMIT
                ),
                _ => format!("cannot read the request body: {}", e.body_text()),
            },
        }
        .into_response()
    })?;
    let pubkey = PublicKeyBytes::parse(&identifier).ok_or_else(|| {
        ApiError::bad_request("identifier is not a 48-byte hex BLS public key").into_response()
    })?;
    // A key the client may not use is refused before anything says whether it is loaded.
    let policy = app.policy();
    caller
        .check_key(&pubkey)
        .map_err(|refusal| refusal.answer(&app.metrics))?;
    sign_allowed(app, policy, caller, pubkey, headers, body)
        .await
        .map_err(|e| match e {
            Refused::Api(e) => e.into_response(),
            Refused::Policy(refusal) => refusal,
        })
}

/// Why [`sign_allowed`] did not sign.
enum Refused {
    Api(ApiError),
    Policy(Response),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused::Api(e)
    }
}

/// The signing endpoint, for a key the caller may use.
async fn sign_allowed(
    app: AppState,
    policy: std::sync::Arc<Policy>,
    caller: Caller,
    pubkey: PublicKeyBytes,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refused> {
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
    // Another network's request is refused before anything else looks at it: its deadline
    // would follow another clock, and slashing protection must never record it.
    if app.network_check {
        request
            .check_network(&app.network)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let root = request
        .signing_root(&app.network)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(supplied) = request.supplied_signing_root() {
        if supplied != root {
            return Err(ApiError::bad_request(format!(
                "signing root mismatch: supplied {supplied}, computed {root}; nothing was signed"
            ))
            .into());
        }
    }
    // The signing policy: the client's types, exits, fee recipients. Before the validity
    // window, slashing protection, the proof cache and the queue: a refusal leaves no trace.
    let kind = request.message_type();
    policy
        .check_message(&caller, &pubkey, kind, request.fee_recipient())
        .map_err(|refusal| Refused::Policy(refusal.answer(&app.metrics)))?;
    // The validity window: a request that can no longer be of use is refused here, before it is
    // recorded by slashing protection or takes a place in the queue (400: it never can be).
    let class = class_of(kind);
    let window = request.validity_window(app.network.slots_per_epoch);
    let (deadline, freshness) = match &app.clock {
        Some(clock) => {
            let deadline = validity::check(kind, window, clock.as_ref()).map_err(|past| {
                app.metrics.scheduler.past_window[class as usize]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%pubkey, reason = %past, "refused: past its validity window");
                ApiError::bad_request(past.to_string())
            })?;
            // A block or attestation far in the future would be recorded, and every real one
            // refused after it: refused here, before slashing protection sees it.
            validity::check_not_ahead(
                kind,
                request.slashing_data(),
                app.network.slots_per_epoch,
                clock.as_ref(),
            )
            .map_err(|ahead| {
                app.metrics.scheduler.ahead_of_clock[class as usize]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%pubkey, reason = %ahead, "refused: ahead of the slot clock");
                ApiError::bad_request(ahead.to_string())
            })?;
            let freshness = freshness(window, clock.as_ref(), app.network.slots_per_epoch);
            (deadline, freshness)
        }
        None => (None, 0),
    };
    let started = std::time::Instant::now();
    // A selection proof precomputed, or being precomputed, for this very root: no second
    // device operation. Otherwise this request holds the proof's claim while it signs, so that
    // the precompute does not sign it again.
    let mut claim = None;
    if let (Some(cache), Some(proof)) = (
        &app.selection_proofs,
        request.selection_proof(app.network.slots_per_epoch),
    ) {
        match cache.live(&pubkey, &proof, &root, JOIN_PATIENCE).await {
            LiveProof::Answered(signature) => {
                app.metrics
                    .signing
                    .get(request.message_type().as_str())
                    .observe(started.elapsed());
                return Ok(signature_response(
                    &headers,
                    format!("0x{}", hex::encode(signature)),
                ));
            }
            LiveProof::SignIt(c) => claim = Some(c),
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
            // Deleted by another signer sharing the database: gone here too, for every type.
            Err(SlashingError::Refused(reason @ Refusal::KeyDeleted { .. })) => {
                app.key_gate.mark_deleted([pubkey]);
                tracing::warn!(%pubkey, %reason, "refused: key deleted");
                return Err(ApiError::not_found(format!(
                    "public key {pubkey} not found: {reason}"
                ))
                .into());
            }
            Err(SlashingError::Refused(reason)) => {
                app.metrics
                    .slashing_refusals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%pubkey, %reason, "refused by slashing protection");
                return Err(ApiError::slashable(format!(
                    "refused by slashing protection: {reason}"
                ))
                .into());
            }
            Err(e) => {
                tracing::error!(%pubkey, error = %e, "slashing protection unavailable; not signing");
                return Err(
                    ApiError::unavailable(format!("slashing protection unavailable: {e}")).into(),
                );
            }
        }
    }
    let signature = runtime
        .scheduler
        .sign(SignJob {
            key,
            signing_root: root,
            class,
            deadline,
            freshness,
        })
        .await
        .map_err(|e| match e {
            JobError::Unavailable(_) | JobError::Overloaded(_) | JobError::Expired { .. } => {
                ApiError::unavailable(e.to_string())
            }
            JobError::Failed(_) | JobError::Faulty(_) => {
                tracing::error!(%pubkey, error = %e, "signing failed");
                ApiError::internal(e.to_string())
            }
        })?;
    let compressed = signature.compress();
    if let Some(claim) = claim {
        claim.complete(compressed, true);
    }
    app.metrics
        .signing
        .get(request.message_type().as_str())
        .observe(started.elapsed());
    Ok(signature_response(
        &headers,
        format!("0x{}", hex::encode(compressed)),
    ))
}

/// A request's freshness for the scheduler's order within a class: the first slot of its duty,
/// capped at the current slot, so that work asked ahead of time (selection proofs for the next
/// slots, say) is no fresher than the present slot's; 0 (arrival order) without a slot.
fn freshness(window: Option<ValidityWindow>, clock: &dyn SlotClock, slots_per_epoch: u64) -> u64 {
    window
        .and_then(|w| w.duty.first_slot(slots_per_epoch))
        .zip(clock.now())
        .map_or(0, |(duty, now)| duty.min(now))
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
