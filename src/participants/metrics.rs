//! Each participant's metrics: how long its partials take, and how often it fails, refuses or
//! answers wrongly; whether it is up.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::metrics::Family;

use super::Participant;

/// One participant's metrics (each family holds the one participant's label).
#[derive(Debug, Default)]
pub struct ParticipantMetrics {
    /// Partial signatures received, by latency.
    pub requests: Family,
    /// Requests with no answer (unreachable, timed out), by time to failure.
    pub failures: Family,
    /// Requests it refused (an error status), by latency.
    pub refusals: Family,
    /// Answers that were not its partial for the request (malformed, wrong id or root).
    pub bad_answers: Family,
    /// Partials that did not verify under its share's key (counted by the scheduler).
    pub faulty: AtomicU64,
    /// Requests for partials sent to it (single and batch), and the partials they asked for:
    /// their ratio is how much one message's partials for several keys were batched.
    pub sign_requests: AtomicU64,
    /// See `sign_requests`.
    pub partials_asked: AtomicU64,
}

/// Which of a participant's histogram families to render.
type Pick = fn(&ParticipantMetrics) -> &Family;
/// Which of a participant's counters to render.
type PickCounter = fn(&ParticipantMetrics) -> &AtomicU64;

/// Every family is declared even with no participant configured, so that dashboards and alert
/// rules name metrics that exist on every signer.
pub(super) fn render(list: &[Arc<Participant>], out: &mut String) {
    let families: [(&str, Pick); 4] = [
        ("signer_participant_request_seconds", |m| &m.requests),
        ("signer_participant_failure_seconds", |m| &m.failures),
        ("signer_participant_refusal_seconds", |m| &m.refusals),
        ("signer_participant_bad_answer_seconds", |m| &m.bad_answers),
    ];
    for (name, family) in families {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for p in list {
            family(&p.metrics).render(out, name, "participant");
        }
    }
    let counters: [(&str, PickCounter); 3] = [
        ("signer_participant_faulty_partials_total", |m| &m.faulty),
        ("signer_participant_sign_requests_total", |m| {
            &m.sign_requests
        }),
        ("signer_participant_partials_asked_total", |m| {
            &m.partials_asked
        }),
    ];
    for (name, counter) in counters {
        let _ = writeln!(out, "# TYPE {name} counter");
        for p in list {
            let _ = writeln!(
                out,
                "{name}{{participant=\"{}\"}} {}",
                p.name,
                counter(&p.metrics).load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# TYPE signer_participant_up gauge");
    for p in list {
        let up = p.is_available();
        let _ = writeln!(
            out,
            "signer_participant_up{{participant=\"{}\"}} {}",
            p.name,
            u8::from(up)
        );
    }
}
