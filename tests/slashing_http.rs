//! Slashing protection through the real binary: refusals over HTTP, a thousand racing conflicts,
//! and SIGKILL at random points with every returned signature recorded and none conflicting.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier, Mutex};

use common::{Server, Signer};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
const PK: &str = common::FIXTURE_PK;

fn template(kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    common::fixture_request(kind, pred)
}

fn root_hex(tag: u64) -> String {
    format!("0x{:064x}", tag)
}

fn block(slot: u64, tag: u64) -> Value {
    let mut b = template("BLOCK_V2", |r| r["beacon_block"]["version"] == "DENEB");
    b["beacon_block"]["block_header"]["slot"] = json!(slot.to_string());
    b["beacon_block"]["block_header"]["body_root"] = json!(root_hex(tag));
    b
}

fn attestation(source: u64, target: u64, tag: u64) -> Value {
    let mut a = template("ATTESTATION", |_| true);
    a["attestation"]["source"]["epoch"] = json!(source.to_string());
    a["attestation"]["target"]["epoch"] = json!(target.to_string());
    a["attestation"]["beacon_block_root"] = json!(root_hex(tag));
    a
}

fn sign(http: &Client, server: &Server, body: &Value) -> (StatusCode, Value) {
    let resp = http
        .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
        .json(body)
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn slashable_requests_get_412_with_the_reason_and_safe_ones_sign() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let ok = StatusCode::OK;
    let refused = StatusCode::PRECONDITION_FAILED;
    // One line per request, the verdict beside it.
    let table: Vec<(&str, Value, StatusCode)> = vec![
        ("first block", block(10, 1), ok),
        ("identical re-sign", block(10, 1), ok),
        ("double proposal", block(10, 2), refused),
        ("below the lowest slot", block(9, 3), refused),
        ("a later block", block(11, 4), ok),
        ("first attestation", attestation(1, 2, 1), ok),
        ("identical re-sign", attestation(1, 2, 1), ok),
        ("double vote", attestation(1, 2, 2), refused),
        ("surrounding", attestation(0, 3, 3), refused),
        ("a later vote", attestation(2, 5, 4), ok),
        ("surrounded", attestation(3, 4, 5), refused),
        ("source after target", attestation(7, 6, 6), refused),
        ("the next vote", attestation(5, 6, 7), ok),
    ];
    for (what, body, want) in &table {
        let (status, reply) = sign(&http, &server, body);
        assert_eq!(status, *want, "{what}: {reply}");
        if *want == refused {
            let msg = reply["message"].as_str().unwrap();
            assert!(
                msg.starts_with("refused by slashing protection: "),
                "{what}: {msg}"
            );
            assert!(reply.get("signature").is_none());
        } else {
            assert!(reply["signature"].as_str().unwrap().starts_with("0x"));
        }
    }
    // A different network's request is refused before slashing protection sees it.
    let mut other = attestation(6, 7, 8);
    other["fork_info"]["genesis_validators_root"] = json!(root_hex(99));
    let (status, reply) = sign(&http, &server, &other);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("this signer serves network mainnet"),
        "{reply}"
    );
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("signer_slashing_refusals_total 6"),
        "{metrics}"
    );
}

/// Gloas: `AttestationData.index` is the payload-status bit. Either value signs; two votes for
/// one target that differ only there are a double vote.
#[test]
fn gloas_attestations_differing_only_in_the_payload_bit_are_a_double_vote() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let http = Client::new();
    let gloas = |index: &str, target: u64| {
        // A Gloas fork_info (the mainnet network has no Gloas epoch: the check sees the fork
        // version its epoch uses, Fulu's before the fork's epoch).
        let mut a = attestation(target - 1, target, 9);
        a["fork_info"]["fork"] = json!({
            "previous_version": "0x06000000",
            "current_version": "0x07000000",
            "epoch": "18446744073709551615",
        });
        a["attestation"]["index"] = json!(index);
        a
    };
    let (status, body) = sign(&http, &server, &gloas("1", 20));
    assert_eq!(status, StatusCode::OK, "payload bit 1 signs: {body}");
    let (status, body) = sign(&http, &server, &gloas("0", 20));
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("double vote"),
        "{body}"
    );
    // The same vote again is an identical re-sign; the other bit at the next target signs.
    assert_eq!(sign(&http, &server, &gloas("1", 20)).0, StatusCode::OK);
    assert_eq!(sign(&http, &server, &gloas("0", 21)).0, StatusCode::OK);
}

#[test]
fn a_thousand_concurrent_conflicting_requests_yield_exactly_one_signature() {
    let s = Signer::with_fixture_key();
    let server = Arc::new(Server::start(&s, &["--no-slot-deadlines"]));
    for (kind, make) in [
        (
            "attestation",
            Box::new(|i: u64| attestation(10, 11, 1000 + i))
                as Box<dyn Fn(u64) -> Value + Send + Sync>,
        ),
        ("block", Box::new(|i: u64| block(500, 1000 + i))),
    ] {
        let make = Arc::new(make);
        let barrier = Arc::new(Barrier::new(1000));
        // One client for all (it opens a connection per concurrent request): building one per
        // thread loads the system's CA certificates each time, minutes of CPU for 2,000.
        let http = Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        let threads: Vec<_> = (0..1000u64)
            .map(|i| {
                let (server, barrier, make) = (server.clone(), barrier.clone(), make.clone());
                let http = http.clone();
                std::thread::spawn(move || {
                    let body = make(i);
                    barrier.wait();
                    sign(&http, &server, &body).0
                })
            })
            .collect();
        let statuses: Vec<StatusCode> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let signed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count();
        assert_eq!((signed, refused), (1, 999), "{kind}: {statuses:?}");
    }
}

/// What a test client got back: enough to check it against the database afterwards.
#[derive(Debug, Clone)]
struct Returned {
    source: u64,
    target: u64,
    signing_root: [u8; 32],
}

#[test]
fn sigkill_at_random_points_never_loses_protection() {
    let s = Signer::with_fixture_key();
    let returned = Arc::new(Mutex::new(Vec::<Returned>::new()));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut epoch = 2u64;
    let mut tag = 0u64;
    let mut kills = 0;
    for _round in 0..22 {
        let mut server = Server::start(&s, &["--no-slot-deadlines"]);
        let url = server.url(&format!("/api/v1/eth2/sign/{PK}"));
        // A stream of attestations: mostly new votes, with double votes and surrounds mixed in.
        let mut plan = Vec::new();
        for _ in 0..400 {
            tag += 1;
            let (src, tgt) = match next() % 10 {
                0..=5 => {
                    epoch += 1;
                    (epoch - 1, epoch)
                }
                6 | 7 => (epoch - 1, epoch), // double vote on the latest target
                8 => (epoch.saturating_sub(3), epoch + 1), // surrounding
                _ => (epoch - 1, epoch.saturating_sub(1)), // older target / surrounded
            };
            plan.push((src, tgt, tag));
        }
        let (r, u) = (returned.clone(), url.clone());
        let stream = std::thread::spawn(move || {
            let http = Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap();
            for (src, tgt, tag) in plan {
                let body = attestation(src, tgt, tag);
                match http.post(&u).json(&body).send() {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        let req = hsm_signer::consensus::SignRequest::from_json(
                            body.to_string().as_bytes(),
                            hsm_signer::consensus::Preset::Mainnet,
                        )
                        .unwrap();
                        let root = req
                            .signing_root(
                                &hsm_signer::consensus::Network::preset("mainnet").unwrap(),
                            )
                            .unwrap();
                        r.lock().unwrap().push(Returned {
                            source: src,
                            target: tgt,
                            signing_root: root.0,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server died
                }
            }
        });
        // Kill at a random point once this round is under way (a state condition, bounded).
        let before = returned.lock().unwrap().len();
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while returned.lock().unwrap().len() < before + 10
            && std::time::Instant::now() < limit
            && !stream.is_finished()
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(next() % 120));
        let _ = server.child.kill(); // SIGKILL
        let _ = server.child.wait();
        kills += 1;
        stream.join().unwrap();
    }
    assert!(kills >= 20);

    // Every signature a client received is in the database …
    let export: Value = serde_json::from_str(&s.ok(&["slashing", "export", "-"])).unwrap();
    let data = export["data"].as_array().unwrap();
    let recorded: HashSet<(u64, u64, String)> = data
        .iter()
        .filter(|d| d["pubkey"] == PK)
        .flat_map(|d| d["signed_attestations"].as_array().unwrap().iter())
        .map(|a| {
            (
                a["source_epoch"].as_str().unwrap().parse().unwrap(),
                a["target_epoch"].as_str().unwrap().parse().unwrap(),
                a["signing_root"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let returned = returned.lock().unwrap();
    assert!(
        returned.len() > 100,
        "the stream got going: {}",
        returned.len()
    );
    // (Each start prunes: what lies more than `keep_epochs` below the newest is gone, under the
    // low watermark that the lowest record left stands for.)
    let lowest = recorded.iter().map(|(_, t, _)| *t).min().unwrap_or(0);
    for r in returned.iter() {
        let key = (
            r.source,
            r.target,
            format!("0x{}", hex::encode(r.signing_root)),
        );
        assert!(
            recorded.contains(&key) || r.target < lowest,
            "returned but not recorded: {r:?}"
        );
    }
    // … and no two of them conflict.
    let mut by_target: BTreeMap<u64, &Returned> = BTreeMap::new();
    for r in returned.iter() {
        if let Some(prev) = by_target.insert(r.target, r) {
            assert_eq!(
                prev.signing_root, r.signing_root,
                "double vote returned at target {}",
                r.target
            );
        }
    }
    for a in returned.iter() {
        for b in returned.iter() {
            assert!(
                !(a.source < b.source && a.target > b.target),
                "surround returned: {a:?} surrounds {b:?}"
            );
        }
    }
}

#[test]
fn prune_keeps_recent_history_and_the_highest_vote() {
    let s = Signer::with_fixture_key();
    let atts: Vec<Value> = (1..=50u64)
        .map(|e| json!({"source_epoch": (e - 1).to_string(), "target_epoch": e.to_string(), "signing_root": root_hex(e)}))
        .collect();
    let interchange = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": GVR},
        "data": [{"pubkey": PK, "signed_blocks": [], "signed_attestations": atts}],
    });
    let file = s.data_dir().join("interchange.json");
    std::fs::write(&file, interchange.to_string()).unwrap();
    let out = s.ok(&["slashing", "import", file.to_str().unwrap()]);
    assert!(out.contains("50 attestation(s) recorded"), "{out}");
    let out = s.ok(&["slashing", "prune", "--keep-epochs", "5"]);
    assert!(out.starts_with("pruned "), "{out}");
    let export: Value = serde_json::from_str(&s.ok(&["slashing", "export", "-"])).unwrap();
    let kept = export["data"][0]["signed_attestations"].as_array().unwrap();
    assert!(kept.len() <= 6, "{} records kept", kept.len());
    let max_target = kept
        .iter()
        .map(|a| a["target_epoch"].as_str().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(max_target, 50, "the newest vote is never pruned");
    // Protection is not lowered: an old vote is still refused over HTTP.
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    let (status, _) = sign(&Client::new(), &server, &attestation(10, 11, 777));
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}
