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
use crate::api::{AppState, Runtime};
use crate::consensus::{
    validity, MessageType, SignRequest, SigningRoot, SlashingData, SlotClock, ValidityWindow,
};
use crate::duties::{Claim as ProofClaim, LiveProof, JOIN_PATIENCE};
use crate::keys::PublicKeyBytes;
use crate::scheduler::{Class, JobError, SignJob};
use crate::slashing::{Proposal, Refusal, SlashingError};

/// The priority class of a request type (DESIGN §2).
pub(crate) fn class_of(t: MessageType) -> Class {
    use MessageType::*;
    match t {
        // A payload envelope releases the block's payload: as urgent as the block.
        BlockV2 | Block | RandaoReveal | ExecutionPayloadEnvelope => Class::Block,
        // Due within their slot.
        Attestation | SyncCommitteeMessage | PayloadAttestationMessage | ExecutionPayloadBid => {
            Class::Attestation
        }
        // Proposer preferences are due before the proposal slot, an epoch ahead at most.
        AggregateAndProof
        | AggregateAndProofV2
        | SyncCommitteeContributionAndProof
        | AggregationSlot
        | SyncCommitteeSelectionProof
        | ProposerPreferences => Class::Aggregate,
        ValidatorRegistration | VoluntaryExit | Deposit | BuilderRequestAuth => Class::Admin,
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
    let body = body.map_err(|e| unreadable(e).into_response())?;
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

/// The answer to a body that could not be read.
pub(crate) fn unreadable(e: BytesRejection) -> ApiError {
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
    let request = parse_checked(&app, &body)?;
    // The signing policy: the client's types, exits, fee recipients. Before the validity
    // window, slashing protection, the proof cache and the queue: a refusal leaves no trace.
    policy
        .check_message(
            &caller,
            &pubkey,
            request.request.message_type(),
            request.request.fee_recipient(),
        )
        .map_err(|refusal| Refused::Policy(refusal.answer(&app.metrics)))?;
    let timing = in_window(&app, &pubkey, &request)?;
    let started = std::time::Instant::now();
    let claim = match from_proof_cache(&app, &pubkey, &request).await {
        Cached::Answered(signature) => {
            observe(&app, &request, started);
            return Ok(signature_response(&headers, signature));
        }
        Cached::SignIt(claim) => claim,
    };
    // Slashing protection: check and record durably before any signature can exist.
    if let (Some(proposal), Some(slashing)) = (request.proposal(), &app.slashing) {
        let gvr = request.gvr()?;
        let decision = slashing
            .check_and_record_async(&pubkey.0, &gvr, proposal)
            .await;
        slashing_verdict(&app, &pubkey, decision)?;
    }
    let signature = schedule(&runtime, key, &request, timing, claim).await?;
    observe(&app, &request, started);
    Ok(signature_response(&headers, signature))
}

/// A request parsed and checked once, whichever keys sign it: its network, its signing root
/// (ours, and the client's when given).
pub(crate) struct Checked {
    pub request: SignRequest,
    pub root: SigningRoot,
    /// The request as the client sent it: what a key's remote participants are sent.
    pub body: std::sync::Arc<str>,
}

impl Checked {
    /// What slashing protection records for it, if anything.
    pub(crate) fn proposal(&self) -> Option<Proposal> {
        match self.request.slashing_data() {
            SlashingData::None => None,
            SlashingData::Block { slot } => Some(Proposal::Block {
                slot,
                signing_root: self.root.0,
            }),
            SlashingData::Attestation {
                source_epoch,
                target_epoch,
            } => Some(Proposal::Attestation {
                source_epoch,
                target_epoch,
                signing_root: self.root.0,
            }),
        }
    }

    /// The genesis validators root slashing protection records it under.
    pub(crate) fn gvr(&self) -> Result<[u8; 32], ApiError> {
        self.request
            .genesis_validators_root()
            .ok_or_else(|| ApiError::bad_request("fork_info.genesis_validators_root is required"))
    }
}

/// Parse the body, refuse another network's request (before anything else looks at it: its
/// deadline would follow another clock, and slashing protection must never record it),
/// recompute the signing root and refuse a supplied one that differs.
pub(crate) fn parse_checked(app: &AppState, body: &[u8]) -> Result<Checked, ApiError> {
    let request = SignRequest::from_json(body, app.network.preset)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
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
            )));
        }
    }
    // It parsed as JSON, so it is UTF-8.
    let body = std::sync::Arc::from(String::from_utf8_lossy(body));
    Ok(Checked {
        request,
        root,
        body,
    })
}

/// When a request must be signed by, and where it stands among its class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub class: Class,
    pub deadline: Option<std::time::Instant>,
    pub freshness: u64,
}

/// The validity window: a request that can no longer be of use is refused here, before it is
/// recorded by slashing protection or takes a place in the queue (400: it never can be). A
/// block or attestation far in the future would be recorded, and every real one refused after
/// it: refused here too.
pub(crate) fn in_window(
    app: &AppState,
    pubkey: &dyn std::fmt::Display,
    checked: &Checked,
) -> Result<Timing, ApiError> {
    let request = &checked.request;
    let kind = request.message_type();
    let class = class_of(kind);
    let window = request.validity_window(app.network.slots_per_epoch);
    let Some(clock) = &app.clock else {
        return Ok(Timing {
            class,
            deadline: None,
            freshness: 0,
        });
    };
    let deadline = validity::check(kind, window, clock.as_ref()).map_err(|past| {
        app.metrics.scheduler.past_window[class as usize]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%pubkey, reason = %past, "refused: past its validity window");
        ApiError::bad_request(past.to_string())
    })?;
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
    Ok(Timing {
        class,
        deadline,
        freshness: freshness(window, clock.as_ref(), app.network.slots_per_epoch),
    })
}

/// What the selection-proof cache says of a request.
pub(crate) enum Cached {
    /// Precomputed (or just computed by the precompute): the signature, as 0x-hex.
    Answered(String),
    /// Sign it; the claim (if any) stops the precompute signing the same proof meanwhile.
    SignIt(Option<ProofClaim>),
}

/// A selection proof precomputed, or being precomputed, for this very root: no second device
/// operation. Otherwise the request holds the proof's claim while it signs.
pub(crate) async fn from_proof_cache(
    app: &AppState,
    pubkey: &PublicKeyBytes,
    checked: &Checked,
) -> Cached {
    let (Some(cache), Some(proof)) = (
        &app.selection_proofs,
        checked.request.selection_proof(app.network.slots_per_epoch),
    ) else {
        return Cached::SignIt(None);
    };
    match cache
        .live(pubkey, &proof, &checked.root, JOIN_PATIENCE)
        .await
    {
        LiveProof::Answered(signature) => Cached::Answered(format!("0x{}", hex::encode(signature))),
        LiveProof::SignIt(c) => Cached::SignIt(Some(c)),
    }
}

/// Slashing protection's decision, as the API answers it.
pub(crate) fn slashing_verdict(
    app: &AppState,
    pubkey: &PublicKeyBytes,
    decision: Result<(), SlashingError>,
) -> Result<(), ApiError> {
    match decision {
        Ok(()) => Ok(()),
        // Deleted by another signer sharing the database: gone here too, for every type.
        Err(SlashingError::Refused(reason @ Refusal::KeyDeleted { .. })) => {
            app.key_gate.mark_deleted([*pubkey]);
            tracing::warn!(%pubkey, %reason, "refused: key deleted");
            Err(ApiError::not_found(format!(
                "public key {pubkey} not found: {reason}"
            )))
        }
        Err(SlashingError::Refused(reason)) => {
            app.metrics
                .slashing_refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%pubkey, %reason, "refused by slashing protection");
            Err(ApiError::slashable(format!(
                "refused by slashing protection: {reason}"
            )))
        }
        Err(e) => {
            tracing::error!(%pubkey, error = %e, "slashing protection unavailable; not signing");
            Err(ApiError::unavailable(format!(
                "slashing protection unavailable: {e}"
            )))
        }
    }
}

/// Sign on the key's device(s) through the scheduler; the signature as 0x-hex.
pub(crate) async fn schedule(
    runtime: &Runtime,
    key: std::sync::Arc<crate::keys::KeyRecord>,
    checked: &Checked,
    timing: Timing,
    claim: Option<ProofClaim>,
) -> Result<String, ApiError> {
    let pubkey = key.pubkey;
    let result = runtime.scheduler.sign(job(key, checked, timing)).await;
    answer(&pubkey, result, claim)
}

/// The scheduler's job for `key` signing `checked` with `timing`.
pub(crate) fn job(
    key: std::sync::Arc<crate::keys::KeyRecord>,
    checked: &Checked,
    timing: Timing,
) -> SignJob {
    SignJob {
        signing_root: checked.root,
        class: timing.class,
        deadline: timing.deadline,
        freshness: timing.freshness,
        request: (!key.remote.is_empty()).then(|| checked.body.clone()),
        key,
    }
}

/// A job's outcome as the API answers it: the signature as 0x-hex (completing the selection
/// proof's claim, if it held one), or the error's status and reason.
pub(crate) fn answer(
    pubkey: &PublicKeyBytes,
    result: Result<blst::min_pk::Signature, JobError>,
    claim: Option<ProofClaim>,
) -> Result<String, ApiError> {
    let signature = result.map_err(|e| match e {
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
    Ok(format!("0x{}", hex::encode(compressed)))
}

/// Count a signature in the per-type latency histogram.
pub(crate) fn observe(app: &AppState, checked: &Checked, started: std::time::Instant) {
    app.metrics
        .signing
        .get(checked.request.message_type().as_str())
        .observe(started.elapsed());
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
