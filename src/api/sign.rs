//! `POST /api/v1/eth2/sign/{identifier}`, and the signing pipeline every signing endpoint
//! shares (this one, the batch in `super::batch`, a participant's partial signatures in
//! `super::distributed`): refuse a key the client may not use or this endpoint does not serve,
//! parse, refuse another network's request, recompute the signing root, refuse a supplied root
//! that differs, refuse what the signing policy does not allow, refuse a request past its
//! validity window, check and record it in slashing protection, sign on the key's device (or
//! answer from the selection-proof cache). The endpoints differ only in which key records they
//! serve ([`Served`]) and how they answer; this one answers JSON or text by `Accept`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::policy::Caller;
use crate::api::{AppState, Runtime};
use crate::app::lifecycle::SignPermit;
use crate::consensus::{
    validity, GenericRequest, MessageType, Request, RequestKind, SigningRoot, SlashingData,
    SlotClock, ValidityWindow,
};
use crate::duties::{Claim as ProofClaim, LiveProof, JOIN_PATIENCE};
use crate::keys::{KeyRecord, PublicKeyBytes};
use crate::metrics::{in_stage, Stage};
use crate::scheduler::{Class, Forwarded, JobError, SignJob};
use crate::slashing::{Proposal, Refusal, SlashingError, SlashingProtection};

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

/// The signing endpoint: a complete signature.
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
    let signed = sign_one(&app, &caller, Served::Complete, &identifier, &body)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(signature_response(&headers, signed.signature))
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

/// Why [`sign_one`] did not sign: an error, or the signing policy's refusal (answered with its
/// rule, and already counted).
pub(crate) enum Refused {
    Api(ApiError),
    Policy(Response),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused::Api(e)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Api(e) => e.into_response(),
            Refused::Policy(refusal) => refusal,
        }
    }
}

/// A signature made: by which record, of what, and the signature as 0x-hex.
pub(crate) struct Signed {
    pub key: Arc<KeyRecord>,
    pub kind: RequestKind,
    pub root: SigningRoot,
    pub signature: String,
}

impl Signed {
    pub(crate) fn new(key: Arc<KeyRecord>, checked: &Checked<'_>, signature: String) -> Signed {
        Signed {
            key,
            kind: checked.kind(),
            root: checked.root,
            signature,
        }
    }
}

/// One key's signature of one request on an endpoint that serves `served`, through every stage
/// of the module doc, in order.
pub(crate) async fn sign_one(
    app: &AppState,
    caller: &Caller,
    served: Served,
    identifier: &str,
    body: &[u8],
) -> Result<Signed, Refused> {
    let pubkey = PublicKeyBytes::parse(identifier)
        .ok_or_else(|| ApiError::bad_request("identifier is not a 48-byte hex BLS public key"))?;
    // A key the client may not use is refused before anything says whether it is loaded.
    let policy = app.policy();
    caller
        .check_key(&pubkey)
        .map_err(|refusal| Refused::Policy(refusal.answer(&app.metrics)))?;
    let runtime = app.runtime();
    let (key, _permit) = admit(app, &runtime, served, &pubkey)?;
    let checked = parse_checked(app, body, served)?;
    // The signing policy: the client's types, exits, fee recipients. Before the validity
    // window, slashing protection, the proof cache and the queue: a refusal leaves no trace.
    policy
        .check_message(caller, &pubkey, checked.kind(), checked.fee_recipient())
        .map_err(|refusal| Refused::Policy(refusal.answer(&app.metrics)))?;
    let timing = in_window(app, &pubkey, &checked)?;
    let started = timing.arrived;
    let claim = match from_proof_cache(app, &pubkey, &checked).await {
        Cached::Answered(signature) => {
            observe(app, &checked, started);
            return Ok(Signed::new(key, &checked, signature));
        }
        Cached::SignIt(claim) => claim,
    };
    // Slashing protection: check and record durably before any signature can exist.
    if let Some((slashing, proposal)) = protection(app, served, &checked)? {
        let gvr = checked.gvr()?;
        let asked = std::time::Instant::now();
        let decision = slashing
            .check_and_record_async(&pubkey.0, &gvr, proposal)
            .await;
        app.metrics.slashing_check.observe(asked.elapsed());
        slashing_verdict(app, &pubkey, decision)?;
    }
    let signature = schedule(&runtime, key.clone(), &checked, timing, claim).await?;
    observe(app, &checked, started);
    Ok(Signed::new(key, &checked, signature))
}

/// Which key records an endpoint serves. A participant's record (`KeyRecord::distributed`)
/// holds one share of a distributed account: its signature is a partial, not a validator
/// signature, so only the distributed endpoints serve it, and they serve nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Complete validator signatures: whole keys and threshold keys.
    Complete,
    /// This participant's partial signatures: participant records only.
    Partial,
}

impl Served {
    /// Whether this endpoint serves `record`.
    pub(crate) fn serves(self, record: &KeyRecord) -> bool {
        match self {
            Served::Complete => record.distributed.is_none(),
            Served::Partial => record.distributed.is_some(),
        }
    }
}

/// The key `pubkey` for one request on an endpoint that serves `served`: loaded, served here,
/// and not being deleted (404 each, the first saying where such a key is served). The permit
/// holds off a Keymanager DELETE until the signature is made.
pub(crate) fn admit<'a>(
    app: &'a AppState,
    runtime: &Runtime,
    served: Served,
    pubkey: &PublicKeyBytes,
) -> Result<(Arc<KeyRecord>, SignPermit<'a>), ApiError> {
    let key = runtime
        .keys
        .get(pubkey)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("public key {pubkey} not found")))?;
    if !served.serves(&key) {
        return Err(ApiError::not_found(match served {
            Served::Complete => format!(
                "public key {pubkey} is a distributed share on this signer, served on \
                 /api/v1/eth2/distributed/sign: its signature is a partial, not a validator \
                 signature"
            ),
            Served::Partial => format!(
                "public key {pubkey} is not a distributed account of this participant (a \
                 validator key is served on /api/v1/eth2/sign)"
            ),
        }));
    }
    // A key deleted through the Keymanager API signs nothing more; DELETE waits for this permit.
    let permit = app
        .key_gate
        .enter(pubkey)
        .ok_or_else(|| ApiError::not_found(format!("public key {pubkey} not found (deleted)")))?;
    Ok((key, permit))
}

/// A request parsed and checked once, whichever keys sign it: its network, its signing root
/// (ours, and the client's when given).
pub(crate) struct Checked<'a> {
    pub request: Request,
    pub root: SigningRoot,
    /// The request as the client sent it: what a key's remote participants are sent.
    body: &'a [u8],
    /// [`Checked::forwarded`], made on first use: only keys with remote shares need it.
    forwarded: std::sync::OnceLock<Arc<str>>,
}

impl<'a> Checked<'a> {
    fn new(request: Request, root: SigningRoot, body: &'a [u8]) -> Checked<'a> {
        Checked {
            request,
            root,
            body,
            forwarded: std::sync::OnceLock::new(),
        }
    }

    /// The request as a key's remote participants are sent it, as the client sent it (it
    /// parsed as JSON, so it is UTF-8); copied once however many keys forward it.
    pub(crate) fn forwarded(&self) -> Arc<str> {
        self.forwarded
            .get_or_init(|| Arc::from(String::from_utf8_lossy(self.body)))
            .clone()
    }

    /// Its type.
    pub(crate) fn kind(&self) -> RequestKind {
        self.request.kind()
    }

    /// A `VALIDATOR_REGISTRATION`'s fee recipient, for the signing policy.
    pub(crate) fn fee_recipient(&self) -> Option<[u8; 20]> {
        self.request.typed().and_then(|r| r.fee_recipient())
    }

    /// What slashing protection records for it, if anything (a `GENERIC` request is never
    /// in a slashable domain: [`check_generic`]).
    pub(crate) fn proposal(&self) -> Option<Proposal> {
        match self.request.typed()?.slashing_data() {
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
            .typed()
            .and_then(|r| r.genesis_validators_root())
            .ok_or_else(|| ApiError::bad_request("fork_info.genesis_validators_root is required"))
    }
}

/// Parse the body, refuse another network's request (before anything else looks at it: its
/// deadline would follow another clock, and slashing protection must never record it),
/// recompute the signing root and refuse a supplied one that differs. `GENERIC` is accepted
/// on the distributed endpoints only ([`check_generic`]).
pub(crate) fn parse_checked<'a>(
    app: &AppState,
    body: &'a [u8],
    served: Served,
) -> Result<Checked<'a>, ApiError> {
    let request = in_stage(Stage::Parse, || {
        let request = Request::from_json(body, app.network.preset)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let (Request::Typed(typed), true) = (&request, app.network_check) {
            typed
                .check_network(&app.network)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        Ok::<_, ApiError>(request)
    })?;
    let request = match request {
        Request::Typed(request) => request,
        Request::Generic(generic) => return check_generic(generic, served, body),
    };
    let root = in_stage(Stage::Root, || request.signing_root(&app.network))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_supplied(request.supplied_signing_root(), root)?;
    Ok(Checked::new(Request::Typed(request), root, body))
}

/// Refuse a supplied signing root that differs from ours.
fn check_supplied(supplied: Option<SigningRoot>, root: SigningRoot) -> Result<(), ApiError> {
    match supplied {
        Some(supplied) if supplied != root => Err(ApiError::bad_request(format!(
            "signing root mismatch: supplied {supplied}, computed {root}; nothing was signed"
        ))),
        _ => Ok(()),
    }
}

/// `GENERIC` (the distributed-signing profile's opaque object root and domain): a partial
/// signature only, and never in a domain a typed request covers. The profile requires a
/// participant with slashing protection to refuse the proposer and attester domains, so that
/// every participant judges a block or a vote from its structured data; we refuse every domain
/// type the specs define (randao, exits, deposits, selection proofs, aggregates, sync committee,
/// BLS-to-execution changes, builder and PTC domains, builder registrations and request auth)
/// for the same reason: each has a typed request this participant's own policy, validity window
/// and slashing protection can evaluate, and a bare root would bypass them. The profile's own
/// test vector (an all-zero domain: the proposer's type) is therefore refused here.
fn check_generic(
    generic: GenericRequest,
    served: Served,
    body: &[u8],
) -> Result<Checked<'_>, ApiError> {
    if served == Served::Complete {
        return Err(ApiError::bad_request(
            "GENERIC is accepted only on the distributed endpoints \
             (/api/v1/eth2/distributed/sign), for a partial signature; nothing was signed",
        ));
    }
    if let Some(name) = generic.defined_domain() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "GENERIC refused: its domain type 0x{} is {name}, which a typed request \
                 covers; send that request so this participant can apply its own policy and \
                 slashing protection; nothing was signed",
                hex::encode(generic.domain_type())
            ),
        });
    }
    let root = generic.signing_root();
    check_supplied(generic.supplied_signing_root(), root)?;
    Ok(Checked::new(Request::Generic(generic), root, body))
}

/// When a request must be signed by, and where it stands among its class.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub class: Class,
    pub deadline: Option<std::time::Instant>,
    pub freshness: u64,
    /// When the request was found in its window: before slashing protection, so the queue
    /// orders it by its arrival ([`crate::scheduler::SignJob::arrived`]).
    pub arrived: std::time::Instant,
}

/// The validity window: a request that can no longer be of use is refused here, before it is
/// recorded by slashing protection or takes a place in the queue (400: it never can be). A
/// block or attestation far in the future would be recorded, and every real one refused after
/// it: refused here too. A `GENERIC` request names no duty: no window, and the class of
/// registrations and exits.
pub(crate) fn in_window(
    app: &AppState,
    pubkey: &dyn std::fmt::Display,
    checked: &Checked<'_>,
) -> Result<Timing, ApiError> {
    let arrived = std::time::Instant::now();
    let Some(request) = checked.request.typed() else {
        return Ok(Timing {
            class: Class::Admin,
            deadline: None,
            freshness: 0,
            arrived,
        });
    };
    let kind = request.message_type();
    let class = class_of(kind);
    let window = request.validity_window(app.network.slots_per_epoch);
    let Some(clock) = &app.clock else {
        return Ok(Timing {
            class,
            deadline: None,
            freshness: 0,
            arrived,
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
        arrived,
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
    checked: &Checked<'_>,
) -> Cached {
    let (Some(cache), Some(proof)) = (
        &app.selection_proofs,
        checked
            .request
            .typed()
            .and_then(|r| r.selection_proof(app.network.slots_per_epoch)),
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

/// Where a request that slashing protection must record (a block, an attestation) is recorded:
/// `None` when it records nothing, or protection is off on an endpoint of complete signatures
/// (the operator's explicit choice). A participant never releases a block or attestation share
/// unprotected (the distributed-signing profile requires it): with protection off, 503.
pub(crate) fn protection<'a>(
    app: &'a AppState,
    served: Served,
    checked: &Checked<'_>,
) -> Result<Option<(&'a SlashingProtection, Proposal)>, ApiError> {
    let Some(proposal) = checked.proposal() else {
        return Ok(None);
    };
    match (&app.slashing, served) {
        (Some(slashing), _) => Ok(Some((slashing, proposal))),
        (None, Served::Complete) => Ok(None),
        (None, Served::Partial) => Err(ApiError::unavailable(format!(
            "slashing protection is off on this participant (--no-slashing-protection): it \
             releases no {} share unprotected; nothing was signed",
            checked.kind()
        ))),
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
    key: Arc<KeyRecord>,
    checked: &Checked<'_>,
    timing: Timing,
    claim: Option<ProofClaim>,
) -> Result<String, ApiError> {
    let pubkey = key.pubkey;
    let result = runtime.scheduler.sign(job(key, checked, timing)).await;
    answer(&pubkey, result, claim)
}

/// The scheduler's job for `key` signing `checked` with `timing`.
pub(crate) fn job(key: Arc<KeyRecord>, checked: &Checked<'_>, timing: Timing) -> SignJob {
    SignJob {
        signing_root: checked.root,
        class: timing.class,
        deadline: timing.deadline,
        freshness: timing.freshness,
        arrived: Some(timing.arrived),
        request: (!key.remote.is_empty()).then(|| Forwarded {
            body: checked.forwarded(),
            shared: super::batch::shared_message(checked.kind()),
        }),
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
pub(crate) fn observe(app: &AppState, checked: &Checked<'_>, started: std::time::Instant) {
    app.metrics
        .signing
        .get(checked.kind().as_str())
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
    in_stage(Stage::Response, || signature_body(headers, hex))
}

fn signature_body(headers: &HeaderMap, hex: String) -> Response {
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
