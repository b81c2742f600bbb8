//! Threshold signing across hosts, end to end: participants and a coordinator, each the real
//! binary in its own network namespace (`common::netns`) with its own tokens and SQLite, talking
//! mutual TLS 1.3. Every signature the coordinator answers is checked by blst under the
//! validator key, and against the original (unsplit) key's own signature.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blst::min_pk::SecretKey;
use common::distributed::{attestation, block, import_share, random_keystore, split_for};
use common::netns::{Host, Lan};
use common::tls::{https_client_timeout, write_identity, Ca, Identity};
use common::{mainnet_root, Server, Signer};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Every participant listens on this port of its own host.
const PORT: u16 = 9000;

/// One participant host: its signer (data directory), server and log.
struct Participant {
    name: String,
    signer: Signer,
    server: Option<Server>,
    log: PathBuf,
    host: usize,
}

/// A distributed key: its secret (to check signatures against), public key and threshold.
struct Key {
    secret: SecretKey,
    composite: String,
    threshold: usize,
}

/// Participants and a coordinator on a LAN of namespaces.
struct Cluster {
    lan: Lan,
    participants: Vec<Participant>,
    coordinator: Signer,
    server: Server,
    coordinator_log: PathBuf,
    keys: Vec<Key>,
    /// The coordinator's client identity and the participants' CA: what a compromised
    /// coordinator host holds, to talk to the participants directly.
    identity: Identity,
    ca_pem: String,
    http: Client,
}

fn pubkey_hex(sk: &SecretKey) -> String {
    format!("0x{}", hex::encode(sk.sk_to_pk().to_bytes()))
}

fn endpoint(host: &Host) -> String {
    format!("https://{}:{PORT}", host.ip())
}

impl Cluster {
    /// `n` participants (hosts 0..n) and a coordinator (host n); one key per threshold in
    /// `thresholds`, split t-of-n with share ids 1..=n, share i on participant i. With
    /// `wrong_share`, that participant holds a random secret in place of its share (a
    /// corrupted participant), and the coordinator's record is written by hand with the true
    /// share keys (discovery would refuse the account).
    fn start(n: usize, thresholds: &[usize], wrong_share: Option<usize>) -> Cluster {
        Cluster::start_with(n, thresholds, wrong_share, "")
    }

    /// [`Cluster::start`], with `participant_extra` added to each `[[participant]]` table of
    /// the coordinator.
    fn start_with(
        n: usize,
        thresholds: &[usize],
        wrong_share: Option<usize>,
        participant_extra: &str,
    ) -> Cluster {
        let lan = Lan::new(n + 1);
        let server_ca = Ca::new("participants CA");
        let client_ca = Ca::new("coordinators CA");
        let identity = client_ca.client("coordinator");
        let members: Vec<(u64, String)> = (0..n)
            .map(|i| (i as u64 + 1, endpoint(lan.host(i))))
            .collect();
        let mut participants: Vec<Participant> = (0..n)
            .map(|i| Participant {
                name: format!("p{}", i + 1),
                signer: Signer::new(),
                server: None,
                log: PathBuf::new(),
                host: i,
            })
            .collect();
        let endpoints: Vec<String> = members.iter().map(|(_, e)| e.clone()).collect();
        let work = tempfile::tempdir().unwrap();
        let mut keys = Vec::new();
        let mut true_shares: Vec<Vec<String>> = Vec::new();
        for (k, &t) in thresholds.iter().enumerate() {
            let (secret, keystore, password) = random_keystore(work.path());
            let out = work.path().join(format!("split-{k}"));
            split_for(
                &participants[0].signer,
                (&keystore, &password),
                t,
                &endpoints,
                &out,
            );
            let manifest: Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                    .unwrap();
            true_shares.push(
                manifest["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["public_key"].as_str().unwrap().to_owned())
                    .collect(),
            );
            // A corrupted participant: its share is of another split of the same key (another
            // polynomial through it), so its partials do not verify under the true share key.
            let other = work.path().join(format!("other-split-{k}"));
            if wrong_share.is_some() {
                split_for(
                    &participants[0].signer,
                    (&keystore, &password),
                    t,
                    &endpoints,
                    &other,
                );
            }
            for (i, p) in participants.iter().enumerate() {
                let from = if wrong_share == Some(i) { &other } else { &out };
                import_share(&p.signer, from, i as u64 + 1);
            }
            keys.push(Key {
                composite: pubkey_hex(&secret),
                secret,
                threshold: t,
            });
        }
        for p in &mut participants {
            let host = lan.host(p.host);
            let dir = p.signer.data_dir().join("tls");
            std::fs::create_dir_all(&dir).unwrap();
            let (cert, key) = write_identity(
                &dir,
                "server",
                &server_ca.server_at(&[IpAddr::V4(host.ip())]),
            );
            let clients = client_ca.write_cert(&dir, "clients-ca");
            p.signer.add_config(&format!(
                "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {clients:?}\n\
                 allowed_clients = [\"coordinator\"]\n"
            ));
            p.log = p.signer.data_dir().join("participant.log");
            p.server = Some(Server::start_on_host_at(
                &p.signer,
                host,
                PORT,
                &["--no-slot-deadlines"],
                &p.log,
            ));
        }

        // The coordinator: its own tokens and SQLite, and the participants as [[participant]].
        let coordinator = Signer::new();
        coordinator.ok(&["device", "init"]);
        let dir = coordinator.data_dir().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = server_ca.write_cert(&dir, "participants-ca");
        let (cert, key) = write_identity(&dir, "coordinator", &identity);
        let mut tables = String::new();
        for p in &participants {
            tables.push_str(&format!(
                "[[participant]]\nname = \"{}\"\nurl = \"{}\"\nca_file = {ca_file:?}\n\
                 cert_file = {cert:?}\nkey_file = {key:?}\ntimeout_ms = 1500\n\
                 {participant_extra}\n",
                p.name,
                endpoint(lan.host(p.host))
            ));
        }
        coordinator.add_config(&tables);
        let coordinator_host = lan.host(n);
        if wrong_share.is_none() {
            let out = coordinator
                .cmd_on(coordinator_host)
                .args(["participant", "records", "--write"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["added"], keys.len(), "{report}");
            assert_eq!(report["problems"], 0, "{report}");
        } else {
            // Discovery refuses an account whose share keys do not interpolate to its key.
            let out = coordinator
                .cmd_on(coordinator_host)
                .args(["participant", "records"])
                .output()
                .unwrap();
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(warnings.contains("do not interpolate"), "{warnings}");
            assert!(out.stdout.is_empty());
            for (k, pks) in keys.iter().zip(&true_shares) {
                let remote: Vec<Value> = participants
                    .iter()
                    .zip(pks)
                    .enumerate()
                    .map(|(i, (p, pk))| json!({"id": i + 1, "participant": p.name, "pubkey": pk}))
                    .collect();
                let record = json!({
                    "version": 1, "pubkey": k.composite, "threshold": k.threshold,
                    "shares": [], "origin": "test", "remote": remote,
                });
                let keys_dir = coordinator.data_dir().join("keys");
                std::fs::create_dir_all(&keys_dir).unwrap();
                std::fs::write(
                    keys_dir.join(format!("{}.json", k.composite)),
                    serde_json::to_string_pretty(&record).unwrap(),
                )
                .unwrap();
            }
        }
        let coordinator_log = coordinator.data_dir().join("coordinator.log");
        let server = Server::start_on_host(
            &coordinator,
            coordinator_host,
            &[
                "--no-slot-deadlines",
                "--allow-insecure-http",
                "--allow-unauthenticated-signing",
            ],
            &coordinator_log,
        );
        let http = Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Cluster {
            lan,
            participants,
            coordinator,
            server,
            coordinator_log,
            keys,
            identity,
            ca_pem: server_ca.cert_pem(),
            http,
        }
    }

    /// Sign `body` with key `k` through the coordinator: the status, and on 200 the signature
    /// checked to be the original key's own signature of the request's root.
    fn sign(&self, k: usize, body: &Value) -> (StatusCode, String) {
        let key = &self.keys[k];
        let resp = self
            .http
            .post(
                self.server
                    .url(&format!("/api/v1/eth2/sign/{}", key.composite)),
            )
            .header("accept", "application/json")
            .json(body)
            .send()
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        if status == StatusCode::OK {
            let sig = v["signature"].as_str().unwrap().to_owned();
            let root = mainnet_root(body);
            let expected = format!(
                "0x{}",
                hex::encode(hsm_signer::bls::sign(&key.secret, &root).compress())
            );
            assert_eq!(
                sig, expected,
                "the combined signature is the original key's"
            );
            return (status, sig);
        }
        (status, v["message"].as_str().unwrap_or_default().to_owned())
    }

    /// Put participant `name` out of service on the coordinator, or back.
    fn set_participant(&self, name: &str, enabled: bool) {
        let resp = self
            .http
            .post(self.server.url(&format!("/admin/participants/{name}")))
            .bearer_auth(self.server.token())
            .json(&json!({ "enabled": enabled }))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().unwrap());
    }

    fn coordinator_log(&self) -> String {
        std::fs::read_to_string(&self.coordinator_log).unwrap_or_default()
    }

    fn healthcheck(&self) -> Value {
        self.http
            .get(self.server.url("/healthcheck"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

fn randao(epoch: u64) -> Value {
    let mut r = common::fixture_request("RANDAO_REVEAL", |_| true);
    r["randao_reveal"]["epoch"] = json!(epoch.to_string());
    r
}

#[test]
fn every_t_subset_of_participants_gives_the_original_keys_signature() {
    for (n, t) in [(3usize, 2usize), (5, 3)] {
        let c = Cluster::start(n, &[t], None);
        let all: Vec<usize> = (0..n).collect();
        for (round, subset) in common::subsets(&all, t).into_iter().enumerate() {
            for (i, p) in c.participants.iter().enumerate() {
                c.set_participant(&p.name, subset.contains(&i));
            }
            let (status, msg) = c.sign(0, &randao(round as u64 + 1));
            assert_eq!(status, StatusCode::OK, "subset {subset:?} of {n}: {msg}");
            // And a slashable message, which every participant asked records first.
            let (status, msg) = c.sign(0, &attestation(round as u64, round as u64 + 1, 7));
            assert_eq!(status, StatusCode::OK, "subset {subset:?} of {n}: {msg}");
        }
        // One fewer than t in service: refused, with the reason, and nothing signed.
        for (i, p) in c.participants.iter().enumerate() {
            c.set_participant(&p.name, i < t - 1);
        }
        let (status, msg) = c.sign(0, &randao(99));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{msg}");
        assert!(msg.contains(&format!("fewer than {t}")), "{msg}");
        let health = c.healthcheck();
        assert_eq!(health["status"], "DOWN", "{health}");
        drop(c);
    }
}

impl Cluster {
    /// A client of the participants with the coordinator's certificate: what whoever holds the
    /// coordinator host can do.
    fn participant_client(&self) -> Client {
        https_client_timeout(&self.ca_pem, Some(&self.identity), Duration::from_secs(10))
    }

    /// Ask participant `i` directly for its partial of `body` for key `k`.
    fn partial(&self, http: &Client, i: usize, k: usize, body: &Value) -> (StatusCode, Value) {
        let host = self.lan.host(self.participants[i].host);
        let resp = http
            .post(format!(
                "{}/api/v1/eth2/distributed/sign/{}",
                endpoint(host),
                self.keys[k].composite
            ))
            .json(body)
            .send()
            .unwrap();
        (resp.status(), resp.json().unwrap_or(Value::Null))
    }

    /// How many partials of `kind` participant `i` has released.
    fn released(&self, http: &Client, i: usize, kind: &str) -> f64 {
        let server = self.participants[i].server.as_ref().unwrap();
        server.metric_with(
            http,
            &format!("signer_distributed_partials_total{{type=\"{kind}\"}}"),
        )
    }

    fn check(&self, name: &str) -> Value {
        let health = self.healthcheck();
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name} in {health}"))
    }
}

/// Attestations and blocks, one after the other, each answered 200 with the original key's
/// signature; the duties numbered on from `next`.
fn stream(c: &Cluster, next: &mut u64, n: usize) {
    for _ in 0..n {
        *next += 1;
        let (status, msg) = c.sign(0, &attestation(*next - 1, *next, *next));
        assert_eq!(status, StatusCode::OK, "attestation {next}: {msg}");
        let (status, msg) = c.sign(0, &block(*next * 32, *next));
        assert_eq!(status, StatusCode::OK, "block {next}: {msg}");
    }
}

#[test]
fn a_stream_survives_a_killed_and_a_partitioned_participant_and_recovers_without_restart() {
    let mut c = Cluster::start(3, &[2], None);
    let mut next = 10;
    stream(&c, &mut next, 5);

    // Participant 2 cut off while three are up: it is asked (shares 1 and 2 first) and does
    // not answer; the late share is hedged with participant 3 and nothing fails. Then healed.
    let p2 = c.lan.host(c.participants[1].host);
    p2.partition();
    let hedges = c.server.metric("signer_threshold_hedges_total");
    stream(&c, &mut next, 5);
    assert!(
        c.server.metric("signer_threshold_hedges_total") > hedges,
        "a late share was hedged"
    );
    // Its unanswered request times out (1.5 s), or a probe does: marked down.
    let cut = Instant::now();
    while c.check("participant:p2")["status"] != "DOWN" {
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "participant 2 not seen down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.check("distributed-keys")["status"], "UP");
    stream(&c, &mut next, 3);
    p2.heal();
    let healed = Instant::now();
    while c.check("participant:p2")["status"] != "UP" {
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "participant 2 not seen up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Participant 1 killed mid-stream: nothing fails while two remain.
    let mut p1 = c.participants[0].server.take().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        p1.child.kill().unwrap();
        p1.child.wait().unwrap();
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        stream(&c, &mut next, 1);
    }
    killer.join().unwrap();
    stream(&c, &mut next, 5);
    assert_eq!(c.check("participant:p1")["status"], "DOWN");
    assert_eq!(c.check("distributed-keys")["status"], "UP");

    // Then participant 2 cut off: one of three is left, fewer than t. Every request is refused
    // with 503 (none is answered with anything but the key's own signature), the reason named.
    let p2 = c.lan.host(c.participants[1].host);
    p2.partition();
    for _ in 0..4 {
        next += 1;
        let (status, msg) = c.sign(0, &attestation(next - 1, next, next));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{msg}");
        assert!(msg.contains("fewer than 2"), "{msg}");
    }
    let keys = c.check("distributed-keys");
    assert_eq!(keys["status"], "DOWN", "{keys}");
    assert_eq!(keys["keys_below_threshold"], 1, "{keys}");
    assert_eq!(c.healthcheck()["status"], "DOWN");

    // Healed: participant 2's probes find it, and signing resumes without any restart.
    p2.heal();
    let healed = Instant::now();
    loop {
        next += 1;
        let (status, msg) = c.sign(0, &attestation(next - 1, next, next));
        if status == StatusCode::OK {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "not back after heal: {msg}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stream(&c, &mut next, 5);
    // Participant 1 started again (same data, same port): all three up.
    let p = &mut c.participants[0];
    p.server = Some(Server::start_on_host_at(
        &p.signer,
        c.lan.host(p.host),
        PORT,
        &["--no-slot-deadlines"],
        &p.log,
    ));
    let back = Instant::now();
    while c.check("participant:p1")["status"] != "UP" {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "participant 1 not seen up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.healthcheck()["status"], "UP");
    stream(&c, &mut next, 3);
}

#[test]
fn a_compromised_coordinator_gets_no_slashable_signature() {
    let c = Cluster::start(3, &[2], None);
    let http = c.participant_client();
    // Honest duties through the coordinator first.
    let vote = attestation(4, 5, 1);
    let proposal = block(200, 1);
    assert_eq!(c.sign(0, &vote).0, StatusCode::OK);
    assert_eq!(c.sign(0, &proposal).0, StatusCode::OK);
    let signed_vote: Vec<usize> = (0..3)
        .filter(|&i| c.released(&http, i, "ATTESTATION") > 0.0)
        .collect();
    let signed_block: Vec<usize> = (0..3)
        .filter(|&i| c.released(&http, i, "BLOCK_V2") > 0.0)
        .collect();
    assert!(signed_vote.len() >= 2 && signed_block.len() >= 2);

    // Whoever holds the coordinator host asks the participants straight for a double vote, a
    // surround vote and a double proposal: each participant that signed the first refuses
    // (412), so fewer than t partials exist for any of them.
    let cases = [
        ("double vote", attestation(4, 5, 2), &signed_vote),
        ("surround vote", attestation(3, 6, 3), &signed_vote),
        ("double proposal", block(200, 2), &signed_block),
    ];
    for (what, body, signed_first) in cases {
        let mut partials = 0;
        for i in 0..3 {
            let (status, answer) = c.partial(&http, i, 0, &body);
            if signed_first.contains(&i) {
                assert_eq!(
                    status,
                    StatusCode::PRECONDITION_FAILED,
                    "{what} at p{}: {answer}",
                    i + 1
                );
            }
            if status == StatusCode::OK {
                partials += 1;
            }
        }
        assert!(partials < 2, "{what}: {partials} partials released");
    }

    // Partials of one message offered for another (a replay) do not verify: the combination
    // names both shares and releases nothing.
    let record: hsm_signer::keys::KeyRecord = serde_json::from_str(
        &std::fs::read_to_string(
            c.coordinator
                .data_dir()
                .join("keys")
                .join(format!("{}.json", c.keys[0].composite)),
        )
        .unwrap(),
    )
    .unwrap();
    let key = hsm_signer::keys::threshold::ThresholdKey::from_record(&record).unwrap();
    let mut partials = Vec::new();
    for &i in &signed_vote[..2] {
        let (status, answer) = c.partial(&http, i, 0, &vote);
        assert_eq!(
            status,
            StatusCode::OK,
            "the same vote again is not slashable: {answer}"
        );
        let sig = hex::decode(
            answer["signature"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
        )
        .unwrap();
        partials.push((
            hsm_signer::keys::ShareId::new(i as u64 + 1).unwrap(),
            blst::min_pk::Signature::from_bytes(&sig).unwrap(),
        ));
    }
    use hsm_signer::keys::threshold::{CombineError, HashedMessage};
    let other = mainnet_root(&randao(77));
    match key.combine_each_verified(&HashedMessage::new(&other), &partials) {
        Err(CombineError::Unverified { faulty }) => assert_eq!(faulty.len(), 2, "{faulty:?}"),
        other => panic!("a replayed partial was accepted: {other:?}"),
    }
    let own = key
        .combine_each_verified(&HashedMessage::new(&mainnet_root(&vote)), &partials)
        .unwrap();
    assert_eq!(
        own,
        hsm_signer::bls::sign(&c.keys[0].secret, &mainnet_root(&vote))
    );
}

#[test]
fn a_participant_with_a_wrong_share_is_named_and_excluded_and_the_signature_still_verifies() {
    // Participant 1 (share 1, asked first) holds a share of another split of the same key.
    let c = Cluster::start(3, &[2], Some(0));
    for n in 0..3u64 {
        let (status, msg) = c.sign(0, &attestation(n, n + 1, n));
        assert_eq!(status, StatusCode::OK, "{msg}");
    }
    let faulty = c
        .server
        .metric("signer_participant_faulty_partials_total{participant=\"p1\"}");
    assert!(faulty >= 1.0, "p1's wrong partials counted: {faulty}");
    assert_eq!(
        c.server
            .metric("signer_participant_faulty_partials_total{participant=\"p2\"}"),
        0.0
    );
    let log = c.coordinator_log();
    assert!(
        log.contains("share 1 on participant p1"),
        "the faulty participant is named: {log}"
    );
}

#[test]
fn one_message_for_many_keys_goes_to_a_participant_in_batch_requests_and_each_key_gets_its_own_answer(
) {
    // One partial in flight per participant: what many keys send at once queues, and the
    // coordinator sends one message's queued partials for several keys in one batch request.
    const KEYS: usize = 12;
    let c = Cluster::start_with(3, &[2; KEYS], None, "max_in_flight = 1\n");
    let http = c.participant_client();
    let vote = attestation(20, 21, 5);
    // Key 0 already voted otherwise for that target, straight at every participant: each
    // refuses key 0's partial of the vote (a double vote), and only key 0's.
    let other = attestation(20, 21, 6);
    for i in 0..3 {
        let (status, answer) = c.partial(&http, i, 0, &other);
        assert_eq!(status, StatusCode::OK, "p{}: {answer}", i + 1);
    }
    let requests = |c: &Cluster| -> (f64, f64) {
        c.participants.iter().fold((0.0, 0.0), |(r, n), p| {
            let label = format!("{{participant=\"{}\"}}", p.name);
            (
                r + c
                    .server
                    .metric(&format!("signer_participant_sign_requests_total{label}")),
                n + c
                    .server
                    .metric(&format!("signer_participant_partials_asked_total{label}")),
            )
        })
    };
    let before = requests(&c);
    let answers: Vec<(StatusCode, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..KEYS)
            .map(|k| {
                let (c, vote) = (&c, &vote);
                scope.spawn(move || c.sign(k, vote))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, (status, msg)) in answers.iter().enumerate().skip(1) {
        // `sign` checked the signature against the original key's own.
        assert_eq!(*status, StatusCode::OK, "key {k}: {msg}");
    }
    let (status, msg) = &answers[0];
    assert_ne!(*status, StatusCode::OK, "key 0's double vote: {msg}");
    assert!(msg.contains("fewer than 2"), "key 0: {msg}");
    let after = requests(&c);
    let (sent, asked) = (after.0 - before.0, after.1 - before.1);
    // Every key needs two partials (key 0 asks all three and gets none).
    assert!(asked >= (2 * KEYS) as f64, "{asked} partials asked");
    assert!(
        sent < asked,
        "{asked} partials in {sent} requests: none were batched"
    );
    let log = c.coordinator_log();
    assert!(
        log.contains("slashing") || log.contains("412"),
        "the participants' refusal of key 0 is logged with its reason: {log}"
    );
}
