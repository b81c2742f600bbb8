//! Remote participants, the coordinator's side: other hsm-signer hosts that each hold one share
//! of distributed keys and answer the distributed-signing profile's endpoints
//! (ethereum/remote-signing-api PR #29; the participant's side is `crate::api::distributed`).
//! This module owns the client (one mutual-TLS 1.3 connection pool per participant, on a small
//! runtime of its own), each participant's health (up; down until a probe answers; or taken out
//! of service by the operator) and its metrics. The scheduler treats a participant as a device:
//! `max_in_flight` is its session cap, and a request for a partial is its device operation.

mod client;
mod discovery;
mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blst::min_pk::Signature;
use serde::Deserialize;

pub use client::AccountView;
pub use discovery::{discover, Discovery};
pub use metrics::ParticipantMetrics;

use crate::config::ParticipantSettings;
use crate::consensus::SigningRoot;
use crate::error::{Result, SignerError};
use crate::keys::{PublicKeyBytes, ShareId};

/// Sessions of a participant unless `max_in_flight` says otherwise.
const DEFAULT_MAX_IN_FLIGHT: usize = 16;
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a participant that is down is probed (`/upcheck`), and one that is up.
const PROBE_DOWN: Duration = Duration::from_millis(250);
const PROBE_UP: Duration = Duration::from_secs(2);

/// Why a participant gave no partial signature. The scheduler branches on the kind: an
/// unreachable participant is marked down; a refusal is its own decision (slashing
/// protection, policy) and leaves it up; a wrong answer names it as faulty.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParticipantError {
    /// No answer: connection refused or timed out, TLS failure, request timed out.
    #[error("participant {name} is unreachable: {reason}")]
    Unreachable {
        /// The participant.
        name: String,
        /// What failed.
        reason: String,
    },
    /// It answered with an error status (its own refusal).
    #[error("participant {name} refused ({status}): {message}")]
    Refused {
        /// The participant.
        name: String,
        /// HTTP status.
        status: u16,
        /// Its message, shortened.
        message: String,
    },
    /// It answered 200 with something that is not its partial for this request: malformed,
    /// another participant id, another signing root, an invalid point.
    #[error("participant {name} answered wrongly: {reason}")]
    BadAnswer {
        /// The participant.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Out of service (the operator's command) or marked down.
    #[error("participant {name} is {state}")]
    NotAvailable {
        /// The participant.
        name: String,
        /// "disabled" or "down: <reason>".
        state: String,
    },
}

/// One remote participant.
pub struct Participant {
    settings: ParticipantSettings,
    name: String,
    url: String,
    max_in_flight: usize,
    timeout: Duration,
    client: client::Client,
    /// The operator's switch (`participant disable`).
    enabled: AtomicBool,
    /// Up, or down since a request or a probe got no answer (until one does).
    up: AtomicBool,
    /// Its metrics.
    pub metrics: ParticipantMetrics,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The partial-signature answer of the profile (`PartialSigningResponse`).
#[derive(Deserialize)]
struct PartialAnswer {
    participant_id: String,
    signing_root: String,
    signature: String,
}

/// One result of the profile's batch answer: a partial signature with its identifier, or the
/// failure the single request would have answered.
#[derive(Deserialize)]
struct BatchAnswer {
    identifier: String,
    participant_id: Option<String>,
    signing_root: Option<String>,
    signature: Option<String>,
    error: Option<BatchFailure>,
}

/// A batch result's failure: the status and message the single request would have answered.
#[derive(Deserialize)]
struct BatchFailure {
    code: u16,
    message: String,
}

/// One key's result in a batch answer, as read.
enum BatchResult {
    /// A partial (its id, root and point still to check).
    Partial(PartialAnswer),
    /// The participant's refusal for this key: its status and message (shortened, one line).
    Refused { code: u16, message: String },
}

/// A batch answer for the keys of `items`, read: one result per key, in order. `Err`: the whole answer is
/// wrong (not JSON of the profile's shape, or not one result per key); an item's `Err`: that
/// result is wrong (another key's, or neither a partial nor an error).
fn read_batch(
    body: &[u8],
    items: &[(PublicKeyBytes, ShareId)],
) -> std::result::Result<Vec<std::result::Result<BatchResult, String>>, String> {
    let answers: Vec<BatchAnswer> = serde_json::from_slice(body)
        .map_err(|e| format!("not a batch of partial signatures: {e}"))?;
    if answers.len() != items.len() {
        return Err(format!(
            "{} result(s) for a batch of {} key(s)",
            answers.len(),
            items.len()
        ));
    }
    Ok(items
        .iter()
        .zip(answers)
        .map(|((key, _), answer)| {
            if PublicKeyBytes::parse(&answer.identifier).as_ref() != Some(key) {
                return Err(format!(
                    "a batch result for {}, where {key} was asked",
                    short(&answer.identifier)
                ));
            }
            match answer {
                BatchAnswer { error: Some(e), .. } => Ok(BatchResult::Refused {
                    code: e.code,
                    message: short(&e.message.replace(['\n', '\r'], " ")),
                }),
                BatchAnswer {
                    participant_id: Some(participant_id),
                    signing_root: Some(signing_root),
                    signature: Some(signature),
                    ..
                } => Ok(BatchResult::Partial(PartialAnswer {
                    participant_id,
                    signing_root,
                    signature,
                })),
                _ => Err("a batch result with neither a partial signature nor an error".into()),
            }
        })
        .collect())
}

impl Participant {
    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its HTTPS origin.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// Requests it may have in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
    /// Whether the operator has it in service.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    /// Take it out of service, or back.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
    /// In service and not down: the scheduler may ask it.
    pub fn is_available(&self) -> bool {
        self.is_enabled() && !self.is_down()
    }
    /// A request or a probe got no answer, and none has since.
    pub fn is_down(&self) -> bool {
        !self.up.load(Ordering::Relaxed)
    }

    fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(participant = %self.name, %reason, "participant down");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(participant = %self.name, "participant up again");
        }
    }

    /// Ask for the partial signature of share `share` of `composite`, for `request` (the
    /// signing request's JSON, forwarded as the validator client sent it: the participant
    /// computes the root itself), which must be over `root`. Waits at most the participant's
    /// timeout, and never past `deadline`. Blocks: call from a device thread. The partial is
    /// checked to be a valid G2 point for this share and root; whether it verifies under the
    /// share's key is the caller's check (done with the combination, in one pairing batch).
    pub fn partial(
        &self,
        composite: &PublicKeyBytes,
        request: &str,
        share: ShareId,
        root: &SigningRoot,
        deadline: Instant,
    ) -> std::result::Result<Signature, ParticipantError> {
        let path = format!("/api/v1/eth2/distributed/sign/{composite}");
        self.count_request(1);
        let (body, took) = self.post(&path, request.to_owned(), client::ANSWER_LIMIT, deadline)?;
        let answer: PartialAnswer = serde_json::from_slice(&body)
            .map_err(|e| self.bad_answer(took, format!("not a partial-signature answer: {e}")))?;
        self.check_partial(&answer, share, root, took)
    }

    /// [`Participant::partial`] for several keys signing one message (`request`, over `root`):
    /// one request of the profile's batch form (`POST /api/v1/eth2/distributed/sign`), and an
    /// outcome per `(composite, share)` in order. The keys must differ (the participant refuses
    /// a batch that names one twice). An answer that is not one result per key, in order, is a
    /// wrong answer for every key.
    pub fn partials(
        &self,
        items: &[(PublicKeyBytes, ShareId)],
        request: &str,
        root: &SigningRoot,
        deadline: Instant,
    ) -> Vec<std::result::Result<Signature, ParticipantError>> {
        let identifiers: Vec<String> = items.iter().map(|(k, _)| format!("\"{k}\"")).collect();
        let body = format!(
            "{{\"identifiers\":[{}],\"signing_request\":{request}}}",
            identifiers.join(",")
        );
        self.count_request(items.len());
        let limit = client::ANSWER_LIMIT.saturating_mul(items.len().max(1));
        let all = |e: ParticipantError| items.iter().map(|_| Err(e.clone())).collect();
        let (body, took) = match self.post("/api/v1/eth2/distributed/sign", body, limit, deadline) {
            Ok(answered) => answered,
            Err(e) => return all(e),
        };
        let results = match read_batch(&body, items) {
            Ok(results) => results,
            Err(reason) => return all(self.bad_answer(took, reason)),
        };
        items
            .iter()
            .zip(results)
            .map(|((_, share), result)| match result {
                Err(reason) => Err(self.bad_answer(took, reason)),
                Ok(BatchResult::Refused { code, message }) => {
                    self.metrics.refusals.get(&self.name).observe(took);
                    Err(ParticipantError::Refused {
                        name: self.name.clone(),
                        status: code,
                        message,
                    })
                }
                Ok(BatchResult::Partial(answer)) => self.check_partial(&answer, *share, root, took),
            })
            .collect()
    }

    /// POST to `path` within the participant's timeout and `deadline`: the answer's body and
    /// how long it took, if it answered 200. No answer marks it down; any answer marks it up.
    fn post(
        &self,
        path: &str,
        body: String,
        limit: usize,
        deadline: Instant,
    ) -> std::result::Result<(Vec<u8>, Duration), ParticipantError> {
        if !self.is_enabled() {
            return Err(ParticipantError::NotAvailable {
                name: self.name.clone(),
                state: "disabled".into(),
            });
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.timeout);
        let started = Instant::now();
        let outcome = self.client.post_json(path, body, limit, wait);
        let took = started.elapsed();
        let (status, body) = match outcome {
            Ok(answer) => answer,
            Err(reason) => {
                self.metrics.failures.get(&self.name).observe(took);
                self.mark_down(&reason);
                return Err(ParticipantError::Unreachable {
                    name: self.name.clone(),
                    reason,
                });
            }
        };
        // It answered: it is up, whatever it said.
        self.mark_up();
        if status != 200 {
            self.metrics.refusals.get(&self.name).observe(took);
            return Err(ParticipantError::Refused {
                name: self.name.clone(),
                status,
                message: short_message(&body),
            });
        }
        Ok((body, took))
    }

    fn count_request(&self, partials: usize) {
        self.metrics.sign_requests.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .partials_asked
            .fetch_add(partials as u64, Ordering::Relaxed);
    }

    /// A wrong answer, counted.
    fn bad_answer(&self, took: Duration, reason: String) -> ParticipantError {
        self.metrics.bad_answers.get(&self.name).observe(took);
        ParticipantError::BadAnswer {
            name: self.name.clone(),
            reason,
        }
    }

    /// `answer`, checked to be share `share`'s partial over `root` and a valid G2 point.
    fn check_partial(
        &self,
        answer: &PartialAnswer,
        share: ShareId,
        root: &SigningRoot,
        took: Duration,
    ) -> std::result::Result<Signature, ParticipantError> {
        if answer.participant_id.parse::<u64>().ok() != Some(share.get()) {
            return Err(self.bad_answer(
                took,
                format!(
                    "participant_id {:?}, but it holds share {share}",
                    short(&answer.participant_id)
                ),
            ));
        }
        if crate::consensus::parse_root(&answer.signing_root) != Some(root.0) {
            return Err(self.bad_answer(
                took,
                format!(
                    "signing_root {}, but the request's is 0x{}",
                    short(&answer.signing_root),
                    hex::encode(root.0)
                ),
            ));
        }
        let sig = parse_signature(&answer.signature)
            .ok_or_else(|| self.bad_answer(took, "the signature is not a valid G2 point".into()))?;
        self.metrics.requests.get(&self.name).observe(took);
        Ok(sig)
    }

    /// Its accounts (`GET /api/v1/eth2/distributed/accounts`), for the command that writes the
    /// coordinator's key records. Blocks.
    pub fn accounts(&self) -> Result<Vec<AccountView>> {
        let (status, body) = self
            .client
            .get(
                "/api/v1/eth2/distributed/accounts",
                client::ACCOUNTS_LIMIT,
                Duration::from_secs(30),
            )
            .map_err(|reason| {
                SignerError::Config(format!(
                    "participant {} is unreachable: {reason}",
                    self.name
                ))
            })?;
        if status != 200 {
            return Err(SignerError::Config(format!(
                "participant {} refused to list its accounts ({status}): {}",
                self.name,
                short_message(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| {
            SignerError::Config(format!(
                "participant {}: its accounts list is malformed: {e}",
                self.name
            ))
        })
    }

    /// One probe: `/upcheck` answered 200 within the connect and request timeouts.
    async fn probe(&self) {
        match self.client.upcheck().await {
            Ok(()) => self.mark_up(),
            Err(reason) => self.mark_down(&reason),
        }
    }
}

fn parse_signature(s: &str) -> Option<Signature> {
    let bytes = hex::decode(s.strip_prefix("0x")?).ok()?;
    // Subgroup check and no point at infinity: the profile says reject both.
    Signature::sig_validate(&bytes, true).ok()
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(70).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A refusal's message: the `message` field of a JSON error, else the text, shortened and on
/// one line (it is the participant's words, put in our errors and logs).
fn short_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.into_owned());
    short(&msg.replace(['\n', '\r'], " "))
}

/// Every configured participant, with the runtime their connections run on and the probes
/// that keep their health. Dropping the last clone stops the probes and the runtime.
#[derive(Clone, Default)]
pub struct Participants {
    list: Vec<Arc<Participant>>,
    _io: Option<Arc<client::IoRuntime>>,
}

impl std::fmt::Debug for Participants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|p| &p.name))
            .finish()
    }
}

impl Participants {
    /// Build a client per configured participant (reading its CA and our client identity)
    /// and start their health probes. No connection is made here: a participant that is down
    /// at start-up is found by its first probe.
    pub fn open(settings: &[ParticipantSettings]) -> Result<Participants> {
        if settings.is_empty() {
            return Ok(Participants::default());
        }
        let io = Arc::new(client::IoRuntime::new()?);
        let mut list = Vec::new();
        for s in settings {
            let timeout = s.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
            let connect = s
                .connect_timeout_ms
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis);
            let client = client::Client::new(s, connect, timeout, io.clone())?;
            let p = Arc::new(Participant {
                settings: s.clone(),
                name: s.name.clone(),
                url: s.url.clone(),
                max_in_flight: s.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
                timeout,
                client,
                enabled: AtomicBool::new(true),
                up: AtomicBool::new(true),
                metrics: ParticipantMetrics::default(),
            });
            list.push(p);
        }
        for p in &list {
            let weak = Arc::downgrade(p);
            io.spawn(async move {
                loop {
                    let Some(p) = weak.upgrade() else { return };
                    p.probe().await;
                    let next = if p.is_down() { PROBE_DOWN } else { PROBE_UP };
                    drop(p);
                    tokio::time::sleep(next).await;
                }
            });
        }
        Ok(Participants {
            list,
            _io: Some(io),
        })
    }

    /// The participants `settings` describe, for a reload: the current ones, health and
    /// connections as they are, when their settings are unchanged; else opened anew.
    pub fn reopen(
        settings: &[ParticipantSettings],
        current: &Participants,
    ) -> Result<Participants> {
        let same = settings.len() == current.list.len()
            && settings
                .iter()
                .zip(&current.list)
                .all(|(s, p)| *s == p.settings);
        if same {
            return Ok(current.clone());
        }
        Participants::open(settings)
    }

    /// All of them, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Participant>> {
        self.list.iter()
    }

    /// One by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Participant>> {
        self.list.iter().find(|p| p.name == name)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// None configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Append every participant's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        metrics::render(&self.list, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKeyBytes {
        PublicKeyBytes([b; 48])
    }

    fn partial(k: &PublicKeyBytes) -> serde_json::Value {
        serde_json::json!({
            "identifier": k.to_string(), "participant_id": "2",
            "signing_root": format!("0x{}", "11".repeat(32)), "signature": "0xab",
        })
    }

    /// `keys` as a batch's items (share 2 each).
    fn items(keys: &[PublicKeyBytes]) -> Vec<(PublicKeyBytes, ShareId)> {
        let share = ShareId::new(2).unwrap();
        keys.iter().map(|k| (*k, share)).collect()
    }

    fn read(
        answer: serde_json::Value,
        keys: &[PublicKeyBytes],
    ) -> Vec<std::result::Result<BatchResult, String>> {
        read_batch(answer.to_string().as_bytes(), &items(keys)).unwrap()
    }

    #[test]
    fn a_batch_answer_gives_each_key_its_own_partial_or_refusal_in_order() {
        let keys = [key(1), key(2), key(3)];
        let refusal = serde_json::json!({
            "identifier": keys[1].to_string(),
            "error": {"code": 412, "message": "slashable:\nsurround vote"},
        });
        let results = read(
            serde_json::json!([partial(&keys[0]), refusal, partial(&keys[2])]),
            &keys,
        );
        assert!(matches!(&results[0], Ok(BatchResult::Partial(a)) if a.participant_id == "2"));
        match &results[1] {
            Ok(BatchResult::Refused { code, message }) => {
                assert_eq!(*code, 412);
                assert_eq!(message, "slashable: surround vote", "on one line");
            }
            _ => panic!("key 2's refusal is its own"),
        }
        assert!(matches!(&results[2], Ok(BatchResult::Partial(_))));
    }

    #[test]
    fn a_result_for_another_key_or_with_nothing_in_it_is_a_wrong_answer_for_that_key() {
        let keys = [key(1), key(2)];
        // Swapped: each result names the other key.
        let results = read(
            serde_json::json!([partial(&keys[1]), partial(&keys[0])]),
            &keys,
        );
        for r in &results {
            assert!(
                matches!(r, Err(reason) if reason.contains("was asked")),
                "{:?}",
                r.as_ref().err()
            );
        }
        let bare = serde_json::json!({ "identifier": keys[1].to_string() });
        let results = read(serde_json::json!([partial(&keys[0]), bare]), &keys);
        assert!(matches!(&results[0], Ok(BatchResult::Partial(_))));
        assert!(matches!(&results[1], Err(reason) if reason.contains("neither")));
    }

    #[test]
    fn an_answer_that_is_not_one_result_per_key_is_wrong_for_every_key() {
        let keys = [key(1), key(2)];
        let short = serde_json::json!([partial(&keys[0])]);
        let err = read_batch(short.to_string().as_bytes(), &items(&keys))
            .err()
            .unwrap();
        assert!(err.contains("1 result(s) for a batch of 2"), "{err}");
        let err = read_batch(b"{\"code\":400}", &items(&keys)).err().unwrap();
        assert!(err.contains("not a batch"), "{err}");
    }
}
