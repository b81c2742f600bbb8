//! Validity windows, from the consensus specs: every request type, in every fork's shape, is
//! signed at the first moment, in the middle and at the last moment of its window, and refused
//! after it with the reason. The time is a `ManualSlotClock`, so nothing waits for a slot. First
//! the rule alone (`SignRequest::validity_window` and `validity::check`), then through the real
//! request path: the router on real SoftHSM tokens with real slashing protection, in process so
//! that the test sets the clock. The real binary with the system clock is in `tests/api.rs`.
//!
//! The expected windows are restated here from the specs, not taken from the code:
//! `expected_window` is the README's table.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{blst_signature_of, request_at, request_shapes, Signer, TEST_GVR};
use hsm_signer::api::policy::Policy;
use hsm_signer::api::{router, AppState};
use hsm_signer::consensus::{
    validity, ManualSlotClock, MessageType, Network, Preset, SignRequest, SlotTiming,
};
use hsm_signer::keys::KeyStore;
use hsm_signer::slashing::SlashingProtection;
use serde_json::Value;

/// Mainnet's genesis time; slots of 12 s.
const GENESIS: u64 = 1_606_824_023;
const DISPARITY: Duration = Duration::from_millis(500);

fn timing() -> SlotTiming {
    SlotTiming::from_secs(GENESIS, 12)
}

/// The window the specs give each type, for a request about `duty` (a slot; an epoch for
/// RANDAO_REVEAL): its first slot, and the slot at whose start (+ 500 ms of gossip clock
/// disparity) it ends. `None`: no time limit.
fn expected_window(kind: &str, duty: u64, spe: u64) -> Option<(u64, u64)> {
    match kind {
        // Its slot (validator.md "Block proposal"; fork-choice.md `record_block_timeliness`).
        "BLOCK" | "BLOCK_V2" => Some((duty, duty + 1)),
        // Its epoch: it goes into a block of that epoch (validator.md "Randao reveal").
        "RANDAO_REVEAL" => Some((duty * spe, (duty + 1) * spe)),
        // Inclusion (deneb beacon-chain.md `process_attestation`, EIP-7045) and the aggregate's
        // gossip window (deneb p2p-interface.md `beacon_aggregate_and_proof`): to the end of
        // the epoch after the slot's.
        "ATTESTATION" | "AGGREGATE_AND_PROOF" | "AGGREGATE_AND_PROOF_V2" | "AGGREGATION_SLOT" => {
            Some((duty, (duty / spe + 2) * spe))
        }
        // The current slot only (altair p2p-interface.md `is_current_slot`).
        "SYNC_COMMITTEE_MESSAGE"
        | "SYNC_COMMITTEE_SELECTION_PROOF"
        | "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => Some((duty, duty + 1)),
        // Gloas: a payload attestation, the current slot only (`is_current_slot` in
        // `validate_payload_attestation_message_gossip`); a bid, the current or next slot
        // (`is_current_or_next_slot`): its own slot's end either way.
        "PAYLOAD_ATTESTATION_MESSAGE" | "EXECUTION_PAYLOAD_BID" => Some((duty, duty + 1)),
        // Until the proposal slot starts (`is_past_slot` in
        // `validate_proposer_preferences_gossip`).
        "PROPOSER_PREFERENCES" => Some((duty, duty)),
        "VOLUNTARY_EXIT"
        | "DEPOSIT"
        | "VALIDATOR_REGISTRATION"
        | "EXECUTION_PAYLOAD_ENVELOPE"
        | "BUILDER_REQUEST_AUTH" => None,
        other => panic!("unknown type {other}"),
    }
}

/// The duty's words in a refusal.
fn duty_text(kind: &str, duty: u64) -> String {
    if kind == "RANDAO_REVEAL" {
        format!("epoch {duty}")
    } else {
        format!("slot {duty}")
    }
}

/// The refusal, word for word, at the moment the window ends (the current slot is `end`).
fn refusal(kind: &str, duty: u64, end: u64, current: u64) -> String {
    format!(
        "{kind} for {} is past its validity window, which ended 500 ms after slot {end} began \
         (the current slot is {current}); nothing was signed",
        duty_text(kind, duty)
    )
}

/// A window's moments on the clock: its first, its middle, its last (a nanosecond before the
/// end), and its end.
struct Moments {
    first: Duration,
    middle: Duration,
    last: Duration,
    end: Duration,
}

fn moments(first_slot: u64, end_slot: u64) -> Moments {
    let first = timing().start_of(first_slot).unwrap();
    let end = timing().start_of(end_slot).unwrap() + DISPARITY;
    Moments {
        first,
        middle: first + (end - first) / 2,
        last: end - Duration::from_nanos(1),
        end,
    }
}

fn parse(v: &Value) -> SignRequest {
    SignRequest::from_json(v.to_string().as_bytes(), Preset::Mainnet)
        .unwrap_or_else(|e| panic!("{e}: {v}"))
}

#[test]
fn every_request_type_is_signable_throughout_its_window_and_refused_after_it() {
    let shapes = request_shapes();
    let mut kinds = std::collections::BTreeSet::new();
    // Mainnet's 32 slots per epoch and the minimal preset's 8.
    for spe in [32, 8] {
        for (fork, kind, request) in &shapes {
            kinds.insert(kind.clone());
            // The first, a middle and the last slot of an epoch: the epoch rules differ there.
            for duty in [1_000 * spe, 1_000 * spe + spe / 2 - 1, 1_001 * spe - 1] {
                let duty = if kind == "RANDAO_REVEAL" {
                    duty / spe
                } else {
                    duty
                };
                let req = parse(&request_at(request, duty, spe));
                let t = req.message_type();
                let window = req.validity_window(spe);
                let clock = ManualSlotClock::new(timing());
                let case = format!("{fork} {kind} at {duty}, {spe} slots per epoch");
                let Some((first_slot, end_slot)) = expected_window(kind, duty, spe) else {
                    assert_eq!(window, None, "{case}");
                    for now in [Duration::ZERO, Duration::from_secs(1 << 40), Duration::MAX] {
                        clock.set_current_time(now);
                        assert_eq!(validity::check(t, window, &clock), Ok(None), "{case}");
                    }
                    continue;
                };
                let w = window.unwrap_or_else(|| panic!("{case}: no window"));
                assert_eq!(w.ends_at, Some(end_slot), "{case}");
                assert_eq!(w.duty.first_slot(spe), Some(first_slot), "{case}");
                let m = moments(first_slot, end_slot);
                for (name, at) in [("first", m.first), ("middle", m.middle), ("last", m.last)] {
                    clock.set_current_time(at);
                    let before = Instant::now();
                    let deadline = validity::check(t, window, &clock)
                        .unwrap_or_else(|e| panic!("{case}, {name} moment: {e}"))
                        .unwrap_or_else(|| panic!("{case}, {name} moment: no deadline"));
                    // The queue's deadline is the window's end, as far from now as the clock says.
                    let left = deadline.saturating_duration_since(before);
                    assert!(left >= m.end - at, "{case}, {name}: {left:?}");
                    assert!(
                        left <= m.end - at + Duration::from_secs(1),
                        "{case}, {name}: {left:?}"
                    );
                }
                for late in [m.end, m.end + Duration::from_secs(12 * spe)] {
                    clock.set_current_time(late);
                    let refused = validity::check(t, window, &clock)
                        .expect_err(&format!("{case}: signed after its window"));
                    let current = timing().slot_of(late).unwrap();
                    assert_eq!(
                        refused.to_string(),
                        refusal(kind, duty, end_slot, current),
                        "{case}"
                    );
                }
            }
        }
    }
    assert_eq!(kinds.len(), MessageType::ALL.len(), "{kinds:?}");
}

#[test]
fn a_randao_reveal_is_signable_at_every_slot_of_its_epoch() {
    for spe in [32, 8] {
        let epoch = 7_777;
        let request = request_shapes()
            .into_iter()
            .find(|(_, kind, _)| kind == "RANDAO_REVEAL")
            .unwrap()
            .2;
        let req = parse(&request_at(&request, epoch, spe));
        let window = req.validity_window(spe);
        let clock = ManualSlotClock::new(timing());
        for slot in epoch * spe..(epoch + 1) * spe {
            for offset in [Duration::ZERO, Duration::from_millis(11_999)] {
                assert!(clock.set_slot_and_offset(slot, offset));
                let checked = validity::check(MessageType::RandaoReveal, window, &clock);
                assert!(
                    matches!(checked, Ok(Some(_))),
                    "slot {slot} (+{offset:?}), {spe} per epoch: {checked:?}"
                );
            }
        }
        // The next epoch's first half second is still within the disparity allowance; then no.
        let next = (epoch + 1) * spe;
        assert!(clock.set_slot_and_offset(next, Duration::from_millis(499)));
        assert!(validity::check(MessageType::RandaoReveal, window, &clock).is_ok());
        assert!(clock.set_slot_and_offset(next, DISPARITY));
        let refused = validity::check(MessageType::RandaoReveal, window, &clock).unwrap_err();
        assert_eq!(
            refused.to_string(),
            refusal("RANDAO_REVEAL", epoch, next, next)
        );
    }
}

#[test]
fn absurd_slots_and_epochs_never_panic_and_never_end() {
    let absurd = [
        u64::MAX,
        u64::MAX - 1,
        u64::MAX - 31,
        1 << 63,
        i64::MAX as u64,
        u64::MAX / 12 + 1,
        u64::MAX / 32,
    ];
    let clock = ManualSlotClock::new(timing());
    for (fork, kind, request) in request_shapes() {
        for duty in absurd {
            for spe in [32, 8, 1] {
                let req = parse(&request_at(&request, duty, spe));
                let window = req.validity_window(spe);
                for now in [Duration::ZERO, Duration::from_secs(GENESIS), Duration::MAX] {
                    clock.set_current_time(now);
                    let checked = validity::check(req.message_type(), window, &clock);
                    // Nothing this far ahead is past its window, whatever the clock says: its end
                    // is beyond any representable time, so there is no deadline.
                    let end = window.and_then(|w| w.end_time(&clock));
                    if end.is_none() {
                        assert_eq!(checked, Ok(None), "{fork} {kind} {duty}");
                    }
                    let _ = (
                        req.signing_root(&network(spe)),
                        window.and_then(|w| w.duty.first_slot(spe)),
                    );
                }
            }
        }
    }
}

/// Mainnet's fork versions (and Gloas's, at the fixtures' epoch) and root (those of the requests
/// the helpers make), with the test's genesis time and epoch length.
fn network(slots_per_epoch: u64) -> Network {
    let mut gvr = [0u8; 32];
    hex::decode_to_slice(TEST_GVR.trim_start_matches("0x"), &mut gvr).unwrap();
    let mut mainnet = Network::preset("mainnet").unwrap();
    // With Gloas scheduled (as the fixtures have it), so that its requests are this network's.
    mainnet.forks.push(hsm_signer::consensus::ScheduledFork {
        name: "gloas",
        version: [7, 0, 0, 0],
        epoch: 450_000,
    });
    Network {
        name: "validity-test".into(),
        genesis_time: Some(GENESIS),
        seconds_per_slot: 12,
        slots_per_epoch,
        ..mainnet
    }
    .with_genesis_validators_root(gvr)
    .unwrap()
}

/// The real router, in process, on the fixture key's SoftHSM token, with SQLite slashing
/// protection and a clock the test sets.
struct InProcess {
    _signer: Signer,
    base: String,
    clock: ManualSlotClock,
    slashing: SlashingProtection,
    state: AppState,
    http: reqwest::Client,
}

impl InProcess {
    async fn start(slots_per_epoch: u64) -> InProcess {
        let signer = Signer::with_fixture_key();
        // Every type is signed, voluntary exits too (off unless the policy enables them).
        signer.enable_exits();
        let (config, devices) = signer.open();
        let policy = Policy::build(&config, None).unwrap();
        let keys = KeyStore::load_strict(&config.keys_dir()).unwrap();
        let mut gvr = [0u8; 32];
        hex::decode_to_slice(TEST_GVR.trim_start_matches("0x"), &mut gvr).unwrap();
        let slashing =
            SlashingProtection::open_sqlite(&signer.data_dir().join("slashing.sqlite"), Some(gvr))
                .unwrap();
        let mut state = AppState::serving(hsm_signer::app::Signer::new(
            config,
            network(slots_per_epoch),
            (devices, Default::default()),
            keys,
            Vec::new(),
            Some(slashing.clone()),
        ))
        .with_policy(policy);
        let clock = ManualSlotClock::new(timing());
        state.clock = Some(Arc::new(clock.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        InProcess {
            _signer: signer,
            base,
            clock,
            slashing,
            state,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// POST a sign request; (status, body).
    async fn sign(&self, body: &Value) -> (reqwest::StatusCode, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/api/v1/eth2/sign/{}",
                self.base,
                common::FIXTURE_PK
            ))
            .json(body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    /// Signed with the fixture key over our own signing root: the signature blst makes.
    async fn assert_signs(&self, body: &Value, what: &str) {
        let (status, answer) = self.sign(body).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{what}: {answer}");
        let root = parse(body)
            .signing_root(&self.state.network)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            answer["signature"].as_str(),
            Some(blst_signature_of(root.as_bytes()).as_str()),
            "{what}"
        );
    }

    /// Refused with 400 and `message`, word for word.
    async fn assert_refused(&self, body: &Value, message: &str, what: &str) {
        let (status, answer) = self.sign(body).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["message"].as_str(), Some(message), "{what}");
    }

    /// The block slots and attestation target epochs slashing protection recorded.
    fn recorded(&self) -> (Vec<u64>, Vec<u64>) {
        common::recorded_in(&self.slashing.export_interchange(None).unwrap())
    }

    fn refused_past_window(&self) -> u64 {
        self.state
            .metrics
            .scheduler
            .past_window
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_type_signs_in_its_window_and_is_refused_after_it_over_http() {
    let spe = 32;
    let signer = InProcess::start(spe).await;
    let mut refusals = 0;
    let shapes = request_shapes();
    let kinds: std::collections::BTreeSet<&str> =
        shapes.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.len(), MessageType::ALL.len(), "{kinds:?}");
    for (i, (fork, kind, request)) in shapes.iter().cloned().enumerate() {
        // Each shape its own epochs, later than the last's: blocks and attestations of
        // different shapes never meet in slashing protection.
        let epoch = 1_000 + 10 * i as u64;
        let duty = if kind == "RANDAO_REVEAL" || kind == "VOLUNTARY_EXIT" {
            epoch
        } else {
            epoch * spe + 13
        };
        let body = request_at(&request, duty, spe);
        let case = format!("{fork} {kind} at {duty}");
        let Some((first_slot, end_slot)) = expected_window(&kind, duty, spe) else {
            // No time limit: signed whenever it comes.
            for slot in [0, epoch * spe, 1 << 40] {
                assert!(signer.clock.set_slot_and_offset(slot, Duration::ZERO));
                signer
                    .assert_signs(&body, &format!("{case}, slot {slot}"))
                    .await;
            }
            continue;
        };
        let m = moments(first_slot, end_slot);
        // A real request needs a moment to be signed: the last one is sent a second before the
        // end (at the very last nanosecond it is accepted, then expires in the queue; the
        // rule alone is tested to the nanosecond above).
        for (name, at) in [
            ("first", m.first),
            ("middle", m.middle),
            ("last", m.end - Duration::from_secs(1)),
        ] {
            signer.clock.set_current_time(at);
            signer
                .assert_signs(&body, &format!("{case}, {name} moment"))
                .await;
        }
        signer.clock.set_current_time(m.end);
        let message = refusal(&kind, duty, end_slot, end_slot);
        signer.assert_refused(&body, &message, &case).await;
        refusals += 1;

        // A slashable message past its window is refused before slashing protection: nothing
        // is recorded (and the 400 is the window's, not slashing protection's 412).
        let stale = match kind.as_str() {
            "BLOCK" | "BLOCK_V2" => Some(duty - 1),
            "ATTESTATION" => Some(duty - 2 * spe),
            _ => None,
        };
        if let Some(stale) = stale {
            let (_, stale_end) = expected_window(&kind, stale, spe).unwrap();
            let message = refusal(&kind, stale, stale_end, end_slot);
            let body = request_at(&request, stale, spe);
            signer.assert_refused(&body, &message, &case).await;
            refusals += 1;
            let (blocks, targets) = signer.recorded();
            if kind == "ATTESTATION" {
                assert!(targets.contains(&(duty / spe)), "{case}: {targets:?}");
            } else {
                assert!(blocks.contains(&duty), "{case}: {blocks:?}");
            }
            assert!(!blocks.contains(&stale), "{case}: {blocks:?}");
            assert!(!targets.contains(&(stale / spe)), "{case}: {targets:?}");
        }
    }
    assert_eq!(signer.refused_past_window(), refusals);
}

/// A RANDAO reveal for an epoch of `spe` slots, sent at the start and 11 s into every slot of
/// the epoch: signed each time; refused once the next epoch is half a second old. (One signer
/// per test: a process initialises its PKCS#11 module once, with one token directory.)
async fn randao_signs_at_every_slot_over_http(spe: u64) {
    let signer = InProcess::start(spe).await;
    let request = request_shapes()
        .into_iter()
        .find(|(fork, kind, _)| fork == "deneb" && kind == "RANDAO_REVEAL")
        .unwrap()
        .2;
    let epoch = 4_321;
    let body = request_at(&request, epoch, spe);
    for slot in epoch * spe..(epoch + 1) * spe {
        for offset in [Duration::ZERO, Duration::from_secs(11)] {
            assert!(signer.clock.set_slot_and_offset(slot, offset));
            signer
                .assert_signs(&body, &format!("slot {slot} +{offset:?}, {spe} per epoch"))
                .await;
        }
    }
    let next = (epoch + 1) * spe;
    assert!(signer.clock.set_slot_and_offset(next, DISPARITY));
    signer
        .assert_refused(
            &body,
            &refusal("RANDAO_REVEAL", epoch, next, next),
            "next epoch",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randao_reveal_signs_at_every_slot_of_its_epoch_over_http() {
    randao_signs_at_every_slot_over_http(32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randao_reveal_signs_at_every_slot_of_a_minimal_preset_epoch_over_http() {
    randao_signs_at_every_slot_over_http(8).await;
}

/// Hardening (issue 15, finding 1): a block or an attestation far ahead of the slot clock is
/// refused before slashing protection records it (recorded, it would refuse every real block
/// or attestation of the validator after it); one slot ahead and the present still sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slashable_messages_far_ahead_of_the_clock_are_refused_and_never_recorded() {
    let spe = 32;
    let signer = InProcess::start(spe).await;
    // 3 s into slot `now`, the first of its epoch (12 s slots).
    let now = 5_000 * spe;
    assert!(signer
        .clock
        .set_slot_and_offset(now, Duration::from_secs(3)));
    let shape = |kind: &str| {
        request_shapes()
            .into_iter()
            .find(|(f, k, _)| f == "deneb" && k == kind)
            .unwrap()
            .2
    };
    let (block, attestation) = (shape("BLOCK_V2"), shape("ATTESTATION"));
    let mut poisoned_target = request_at(&attestation, now, spe);
    poisoned_target["attestation"]["target"]["epoch"] = serde_json::json!((1u64 << 40).to_string());
    let ahead = [
        (
            request_at(&block, 1_000_000_000_000, spe),
            "slot 1000000000000",
        ),
        (request_at(&block, now + 2, spe), "slot 160002"),
        (poisoned_target, "target epoch 1099511627776"),
        (
            request_at(&attestation, now + spe, spe),
            "target epoch 5001",
        ),
    ];
    for (body, what) in &ahead {
        let (status, answer) = signer.sign(body).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{what}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "for {what} is ahead of the slot clock (the current slot is {now})"
            )) && message.ends_with("nothing was signed or recorded"),
            "{message}"
        );
    }
    let ahead_count: u64 = signer
        .state
        .metrics
        .scheduler
        .ahead_of_clock
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(ahead_count, ahead.len() as u64);
    assert_eq!(signer.recorded(), (vec![], vec![]));
    // The validator's real messages: this slot's block and attestation, and the next slot's
    // block (a client with a clock a little ahead).
    signer
        .assert_signs(&request_at(&block, now, spe), "this slot's block")
        .await;
    signer
        .assert_signs(
            &request_at(&attestation, now, spe),
            "this slot's attestation",
        )
        .await;
    signer
        .assert_signs(&request_at(&block, now + 1, spe), "the next slot's block")
        .await;
    assert_eq!(signer.recorded(), (vec![now, now + 1], vec![now / spe]));
}
