//! `POST /api/v1/eth2/sign`: one signing request for many keys (the Remote Signing API's batch
//! draft, ethereum/remote-signing-api PR #29), and the batch pipeline its distributed form
//! (`POST /api/v1/eth2/distributed/sign`, `super::distributed`) shares. The request is parsed,
//! checked against the network, its signing root computed and its validity window checked once;
//! then each key goes through what a single request would (the client's key and type policy,
//! the key store and what the endpoint serves, the selection-proof cache), slashing protection
//! decides every key's attestation in one transaction, and the signatures are made by the
//! scheduler in the request's own class, so a batch of proofs never delays a block. The answer
//! has one result per identifier, in order: a signature, or `{code, message}` as the single
//! request would have answered. A malformed batch (bad JSON, no identifiers, a duplicate key, a
//! type the draft does not batch, a request that fails for every key alike) is refused whole
//! (400, or the status every key would have got) and nothing is signed.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::error::ApiError;
use crate::api::policy::Caller;
use crate::api::sign::{self, Cached, Checked, Served};
use crate::api::AppState;
use crate::consensus::{MessageType, RequestKind};
use crate::keys::PublicKeyBytes;
use crate::scheduler::Class;
use crate::slashing::{Proposal, SlashingProtection};

/// The most keys one batch may name: more than one validator client holds for one message,
/// and with 100-byte identifiers within the body limit ([`crate::api::BODY_LIMIT`]); it bounds
/// the work one request can queue.
pub const MAX_BATCH_KEYS: usize = 16_384;

/// The types the draft allows in a batch: one message signed by many validators in the same
/// slot or epoch.
pub const BATCHABLE: [MessageType; 5] = [
    MessageType::AggregationSlot,
    MessageType::Attestation,
    MessageType::RandaoReveal,
    MessageType::SyncCommitteeMessage,
    MessageType::SyncCommitteeSelectionProof,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(deserialize_with = "bounded_identifiers")]
    identifiers: Vec<String>,
    #[serde(borrow)]
    signing_request: &'a RawValue,
}

fn bounded_identifiers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    crate::consensus::wire::bounded_seq(d, MAX_BATCH_KEYS)
}

/// One key's result.
pub(crate) enum Outcome {
    Signed(sign::Signed),
    Failed(ApiError),
}

/// The batch endpoint: complete signatures.
pub async fn sign_batch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = body.map_err(|e| sign::unreadable(e).into_response())?;
    let results = run(&app, &caller, Served::Complete, &body)
        .await
        .map_err(IntoResponse::into_response)?;
    let results: Vec<serde_json::Value> = results
        .into_iter()
        .map(|(id, outcome)| match outcome {
            Outcome::Signed(signed) => {
                serde_json::json!({ "identifier": id, "signature": signed.signature })
            }
            Outcome::Failed(e) => failure(&id, &e),
        })
        .collect();
    Ok((StatusCode::OK, axum::Json(results)).into_response())
}

/// One key's failure as a batch answers it: `{identifier, error: {code, message}}`, the code
/// the single request would have answered.
pub(crate) fn failure(identifier: &str, e: &ApiError) -> serde_json::Value {
    serde_json::json!({
        "identifier": identifier,
        "error": { "code": e.status.as_u16(), "message": e.message },
    })
}

/// Whether `kind` is a message many validators sign alike (one of [`BATCHABLE`]): a
/// coordinator sends the same message's partials for several keys to a participant in one
/// batch request.
pub fn shared_message(kind: RequestKind) -> bool {
    matches!(kind, RequestKind::Typed(t) if BATCHABLE.contains(&t))
}

/// Whether a batch may carry `kind`: the draft's batchable types, and `GENERIC` (which only the
/// distributed endpoints accept).
fn batchable(kind: RequestKind) -> bool {
    match kind {
        RequestKind::Typed(t) => BATCHABLE.contains(&t),
        RequestKind::Generic => true,
    }
}

/// One batch on an endpoint that serves `served`: each identifier (as sent) with its outcome,
/// in order; `Err` when the batch itself is refused, and then nothing was signed.
pub(crate) async fn run(
    app: &AppState,
    caller: &Caller,
    served: Served,
    body: &[u8],
) -> Result<Vec<(String, Outcome)>, ApiError> {
    let batch: BatchRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "malformed batch: {}; nothing was signed",
            crate::consensus::clip(&e.to_string())
        ))
    })?;
    let keys = identifiers(&batch.identifiers)?;
    let checked = sign::parse_checked(app, batch.signing_request.get().as_bytes(), served)?;
    let kind = checked.kind();
    if !batchable(kind) {
        let allowed: Vec<&str> = BATCHABLE.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "{kind} cannot be batched; a batch may carry {} (and GENERIC on the distributed \
             endpoints); nothing was signed",
            allowed.join(", ")
        )));
    }
    let mut timing = sign::in_window(app, &format_args!("{} keys", keys.len()), &checked)?;
    // A RANDAO reveal is block-class work: the proposer needs it for its block now. Many keys'
    // reveals at once cannot all be for imminent proposals (one proposer a slot), so a batch of
    // them runs in the attestation class, below every block; one key's keeps the block class.
    if kind == RequestKind::Typed(MessageType::RandaoReveal) && keys.len() > 1 {
        timing.class = Class::Attestation;
    }
    let protection = sign::protection(app, served, &checked)?;
    let outcomes = sign_each(app, caller, served, &keys, &checked, timing, protection).await;
    Ok(batch.identifiers.into_iter().zip(outcomes).collect())
}

/// The identifiers as keys: at least one, each a 48-byte hex key, no key twice (whatever the
/// case of its hex).
fn identifiers(ids: &[String]) -> Result<Vec<PublicKeyBytes>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "malformed batch: identifiers is empty; nothing was signed",
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let key = PublicKeyBytes::parse(id).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "malformed batch: identifiers[{i}] is not a 48-byte hex BLS public key; \
                     nothing was signed"
                ))
            })?;
            if !seen.insert(key) {
                return Err(ApiError::bad_request(format!(
                    "malformed batch: identifiers[{i}] repeats key {key}; nothing was signed"
                )));
            }
            Ok(key)
        })
        .collect()
}

/// Every key's outcome, in order; `protection` is where slashing protection records the
/// request, if it must ([`sign::protection`]).
async fn sign_each(
    app: &AppState,
    caller: &Caller,
    served: Served,
    keys: &[PublicKeyBytes],
    checked: &Checked<'_>,
    timing: sign::Timing,
    protection: Option<(&SlashingProtection, Proposal)>,
) -> Vec<Outcome> {
    let runtime = app.runtime();
    let policy = app.policy();
    let kind = checked.kind();
    let started = std::time::Instant::now();
    // What a single request checks before its type: the client's keys, the key store and what
    // this endpoint serves, the Keymanager gate (its permit held until the key's signature is
    // made).
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(keys.len());
    let mut admitted = Vec::new();
    for (i, pubkey) in keys.iter().enumerate() {
        let admitted_key = (|| {
            caller
                .check_key(pubkey)
                .map_err(|r| r.counted(&app.metrics))?;
            let (key, permit) = sign::admit(app, &runtime, served, pubkey)?;
            policy
                .check_message(caller, pubkey, kind, checked.fee_recipient())
                .map_err(|r| r.counted(&app.metrics))?;
            Ok((key, permit))
        })();
        match admitted_key {
            Ok((key, permit)) => {
                outcomes.push(None);
                admitted.push((i, *pubkey, key, permit));
            }
            Err(e) => outcomes.push(Some(Outcome::Failed(e))),
        }
    }
    // Precomputed selection proofs answer at once; the others hold their claim while signed.
    let cache = futures_util::future::join_all(
        admitted
            .iter()
            .map(|(_, pubkey, _, _)| sign::from_proof_cache(app, pubkey, checked)),
    )
    .await;
    let mut to_sign = Vec::with_capacity(admitted.len());
    for ((i, pubkey, key, permit), cached) in admitted.into_iter().zip(cache) {
        match cached {
            Cached::Answered(signature) => {
                outcomes[i] = Some(Outcome::Signed(sign::Signed::new(key, checked, signature)))
            }
            Cached::SignIt(claim) => to_sign.push((i, pubkey, key, permit, claim)),
        }
    }
    // Slashing protection: every key's record in one transaction, before any signature.
    if let Some((slashing, proposal)) = protection {
        match checked.gvr() {
            Err(e) => {
                for (i, ..) in to_sign.drain(..) {
                    outcomes[i] = Some(Outcome::Failed(ApiError::bad_request(e.message.clone())));
                }
            }
            Ok(gvr) => {
                let items = to_sign
                    .iter()
                    .map(|(_, pubkey, ..)| (pubkey.0, gvr, proposal))
                    .collect();
                let asked = std::time::Instant::now();
                let decisions = slashing.check_and_record_many_async(items).await;
                app.metrics.slashing_check.observe(asked.elapsed());
                let mut allowed = Vec::with_capacity(to_sign.len());
                for (job, decision) in to_sign.into_iter().zip(decisions) {
                    match sign::slashing_verdict(app, &job.1, decision) {
                        Ok(()) => allowed.push(job),
                        Err(e) => outcomes[job.0] = Some(Outcome::Failed(e)),
                    }
                }
                to_sign = allowed;
            }
        }
    }
    // The jobs go to the scheduler together: queued under one lock, each device woken once,
    // each in the request's class. Each key's Keymanager permit is held until its batch is
    // signed; if this request goes away, the jobs not yet signed are withdrawn.
    let (mut permits, mut claims, mut indices, mut jobs) = (vec![], vec![], vec![], vec![]);
    for (i, pubkey, key, permit, claim) in to_sign {
        jobs.push(sign::job(key.clone(), checked, timing));
        indices.push((i, pubkey, key));
        permits.push(permit);
        claims.push(claim);
    }
    let results = runtime.scheduler.sign_many(jobs).await;
    drop(permits);
    for (((i, pubkey, key), result), claim) in indices.into_iter().zip(results).zip(claims) {
        outcomes[i] = Some(match sign::answer(&pubkey, result, claim) {
            Ok(signature) => {
                sign::observe(app, checked, started);
                Outcome::Signed(sign::Signed::new(key, checked, signature))
            }
            Err(e) => Outcome::Failed(e),
        });
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Outcome::Failed(ApiError::internal(
                    "no result for this key (internal error)",
                ))
            })
        })
        .collect()
}
