//! Slashing protection on a real PostgreSQL shared by several signers: independent services
//! (each its own connection, as separate processes have) racing conflicting requests, two real
//! `hsm-signer serve` processes on one database, reconnection, migrations, the CLI. The
//! EIP-3076 suite runs against PostgreSQL in `slashing_interchange.rs`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use common::pg::PgServer;
use common::{signing_fixtures, Server, Signer};
use hsm_signer::slashing::{Proposal, Refusal, SlashingError, SlashingProtection};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const GVR: [u8; 32] = [0x44; 32];

fn open(url: &str) -> SlashingProtection {
    SlashingProtection::open_postgres(url, Some(GVR)).expect("open")
}

fn root(i: usize) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    r
}

fn att(source_epoch: u64, target_epoch: u64, i: usize) -> Proposal {
    Proposal::Attestation {
        source_epoch,
        target_epoch,
        signing_root: root(i),
    }
}

/// `per_instance` threads on each service, all released at once; thread `i` of service `s`
/// submits `proposal(s * per_instance + i)`.
fn race_across(
    services: &[SlashingProtection],
    per_instance: usize,
    pubkey: [u8; 48],
    proposal: impl Fn(usize) -> Proposal + Sync,
) -> Vec<Result<(), SlashingError>> {
    let n = services.len() * per_instance;
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|k| {
                let sp = services[k / per_instance].clone();
                let (barrier, proposal) = (barrier.clone(), &proposal);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        sp.check_and_record(&pubkey, &GVR, proposal(k))
                    })
                    .expect("spawn")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn two_instances_on_one_database_allow_exactly_one_of_400_conflicting_attestations() {
    let pg = PgServer::start();
    let services = [open(pg.url()), open(pg.url())];
    let results = race_across(&services, 200, [1; 48], |i| att(4, 5, i));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in &results {
        assert!(
            matches!(
                r,
                Ok(()) | Err(SlashingError::Refused(Refusal::DoubleVote { .. }))
            ),
            "{r:?}"
        );
    }
    // Both services took part, each in batches of its own.
    for sp in &services {
        let stats = sp.stats();
        assert_eq!(stats.requests, 200, "{stats:?}");
        assert_eq!(stats.failed_transactions, 0, "{stats:?}");
    }
}

#[test]
fn two_instances_allow_exactly_one_of_conflicting_blocks_and_surrounds() {
    let pg = PgServer::start();
    let services = [open(pg.url()), open(pg.url())];
    let blocks = race_across(&services, 100, [2; 48], |i| Proposal::Block {
        slot: 77,
        signing_root: root(i),
    });
    assert_eq!(blocks.iter().filter(|r| r.is_ok()).count(), 1);
    // Every vote surrounds or is surrounded by every other: one kind wins (its copies are
    // identical re-signs), the others are refused.
    let votes = [(10u64, 20u64), (11, 19), (9, 21), (12, 18), (8, 22)];
    let results = race_across(&services, 100, [3; 48], |i| {
        let (s, t) = votes[i % votes.len()];
        att(s, t, i % votes.len())
    });
    let winners: std::collections::HashSet<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i % votes.len())
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
}

#[test]
fn overlapping_batches_of_two_instances_never_deadlock_and_each_epoch_is_signed_once() {
    // Both services attest for the same 64 validators, epoch after epoch, so every batch of one
    // locks rows the other's batches want: batches lock in pubkey order, so none deadlocks.
    let pg = PgServer::start();
    let services = [open(pg.url()), open(pg.url())];
    let (validators, epochs) = (64usize, 15u64);
    let barrier = Arc::new(Barrier::new(2 * validators));
    let wins: Vec<(usize, usize, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2 * validators)
            .map(|k| {
                let (side, v) = (k % 2, k / 2);
                let (sp, barrier) = (services[side].clone(), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    let mut pk = [0u8; 48];
                    pk[..8].copy_from_slice(&(v as u64).to_le_bytes());
                    let mut won = Vec::new();
                    for e in 1..=epochs {
                        match sp.check_and_record(&pk, &GVR, att(e - 1, e, side)) {
                            Ok(()) => won.push((v, side, e)),
                            Err(SlashingError::Refused(_)) => {}
                            Err(err) => panic!("validator {v} epoch {e}: {err}"),
                        }
                    }
                    won
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut per_epoch: HashMap<(usize, u64), usize> = HashMap::new();
    for (v, _, e) in &wins {
        *per_epoch.entry((*v, *e)).or_default() += 1;
    }
    assert_eq!(per_epoch.len(), validators * epochs as usize);
    assert!(per_epoch.values().all(|&n| n == 1), "an epoch signed twice");
    for sp in &services {
        let stats = sp.stats();
        assert_eq!(stats.failed_transactions, 0, "{stats:?}");
        eprintln!("{stats:?}");
    }
}

#[test]
fn the_network_is_recorded_once_and_checked_by_every_instance() {
    let pg = PgServer::start();
    let url = pg.create_database("gvr");
    let a = SlashingProtection::open_postgres(&url, None).unwrap();
    let b = SlashingProtection::open_postgres(&url, None).unwrap();
    a.check_and_record(&[5; 48], &GVR, att(0, 1, 0)).unwrap();
    let r = b.check_and_record(&[6; 48], &[0x55; 32], att(0, 1, 0));
    assert!(
        matches!(
            r,
            Err(SlashingError::Refused(
                Refusal::GenesisValidatorsRootMismatch { .. }
            ))
        ),
        "{r:?}"
    );
    let err = SlashingProtection::open_postgres(&url, Some([0x55; 32])).unwrap_err();
    assert!(
        matches!(
            err,
            SlashingError::Refused(Refusal::GenesisValidatorsRootMismatch { .. })
        ),
        "{err}"
    );
    assert!(SlashingProtection::open_postgres(&url, Some(GVR)).is_ok());
}

#[test]
fn instances_starting_together_migrate_once() {
    let pg = PgServer::start();
    let url = pg.create_database("migrate");
    let opened: Vec<Result<SlashingProtection, SlashingError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| SlashingProtection::open_postgres(&url, Some(GVR))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &opened {
        assert!(o.is_ok(), "{:?}", o.as_ref().err());
    }
    let version: i32 = pg
        .connect(&url)
        .query_one("SELECT version FROM hsm_signer.schema_version", &[])
        .unwrap()
        .get(0);
    // Version 2 added the Keymanager API's deletion tombstones.
    assert_eq!(version, 2);
}

#[test]
fn refuses_a_foreign_schema_and_a_newer_one() {
    let pg = PgServer::start();
    let foreign = pg.create_database("foreign");
    pg.connect(&foreign)
        .batch_execute("CREATE SCHEMA hsm_signer; CREATE TABLE hsm_signer.validators (x INT)")
        .unwrap();
    let err = SlashingProtection::open_postgres(&foreign, None).unwrap_err();
    assert!(err.to_string().contains("not an hsm-signer"), "{err}");

    let newer = pg.create_database("newer");
    drop(SlashingProtection::open_postgres(&newer, None).unwrap());
    pg.connect(&newer)
        .batch_execute("UPDATE hsm_signer.schema_version SET version = 99")
        .unwrap();
    let err = SlashingProtection::open_postgres(&newer, None).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    // Tables of other applications in the database are left alone.
    let shared = pg.create_database("shared");
    pg.connect(&shared)
        .batch_execute("CREATE TABLE public.validators (name TEXT); INSERT INTO public.validators VALUES ('x')")
        .unwrap();
    let sp = SlashingProtection::open_postgres(&shared, Some(GVR)).unwrap();
    sp.check_and_record(&[7; 48], &GVR, att(1, 2, 0)).unwrap();
    let n: i64 = pg
        .connect(&shared)
        .query_one("SELECT COUNT(*) FROM public.validators", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn refuses_a_database_that_does_not_exist_or_a_bad_connection_string() {
    let pg = PgServer::start();
    let missing = format!("postgres://postgres@127.0.0.1:{}/nope", pg.port());
    let err = SlashingProtection::open_postgres(&missing, None).unwrap_err();
    assert!(matches!(err, SlashingError::Store(_)), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = SlashingProtection::open_postgres("postgres://u:secret@[::1", None).unwrap_err();
    assert!(matches!(err, SlashingError::Store(_)), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn reconnects_after_the_connection_is_killed_and_keeps_protection() {
    let pg = PgServer::start();
    let sp = open(pg.url());
    sp.check_and_record(&[8; 48], &GVR, att(1, 2, 0)).unwrap();
    let killed: i64 = pg
        .admin()
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'hsm-signer'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // The next request finds the connection dead, reconnects and is decided as usual.
    let r = sp.check_and_record(&[8; 48], &GVR, att(1, 2, 1));
    assert!(
        matches!(r, Err(SlashingError::Refused(Refusal::DoubleVote { .. }))),
        "{r:?}"
    );
    sp.check_and_record(&[8; 48], &GVR, att(2, 3, 0)).unwrap();
    assert_eq!(sp.stats().failed_transactions, 0);
}

#[test]
fn prune_on_postgres_keeps_protection() {
    let pg = PgServer::start();
    let sp = open(pg.url());
    let pk = [9u8; 48];
    for e in 1..=50u64 {
        sp.check_and_record(&pk, &GVR, att(e - 1, e, 1)).unwrap();
        sp.check_and_record(
            &pk,
            &GVR,
            Proposal::Block {
                slot: e * 32,
                signing_root: root(1),
            },
        )
        .unwrap();
    }
    assert_eq!(sp.prune(10).unwrap(), 39 + 39);
    assert_eq!(sp.prune(10).unwrap(), 0);
    for e in 1..40u64 {
        assert!(sp.check_and_record(&pk, &GVR, att(e - 1, e, 2)).is_err());
    }
    sp.check_and_record(&pk, &GVR, att(49, 50, 1)).unwrap();
    sp.check_and_record(&pk, &GVR, att(50, 51, 1)).unwrap();
}

// ---- the real binary --------------------------------------------------------------------------

const HTTP_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
const PK: &str = common::FIXTURE_PK;

/// An `ATTESTATION` sign request from the oracle fixtures, voting `source`→`target`, made unique
/// by `tag`.
fn attestation_request(source: u64, target: u64, tag: u64) -> Value {
    let mut req = signing_fixtures()
        .1
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c["type"] == "ATTESTATION")
        .unwrap()["request"]
        .clone();
    let o = req.as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    req["fork_info"]["genesis_validators_root"] = json!(HTTP_GVR);
    req["attestation"]["source"]["epoch"] = json!(source.to_string());
    req["attestation"]["target"]["epoch"] = json!(target.to_string());
    req["attestation"]["beacon_block_root"] = json!(format!("0x{tag:064x}"));
    req
}

#[test]
fn two_server_processes_sharing_postgres_sign_exactly_one_of_200_conflicting_requests() {
    let pg = PgServer::start();
    // Two signers, each with its own data directory and SoftHSM tokens holding the same key.
    let (s1, s2) = (Signer::with_fixture_key(), Signer::with_fixture_key());
    let args = ["--no-slot-deadlines", "--slashing-db", pg.url()];
    let servers = [
        Arc::new(Server::start(&s1, &args)),
        Arc::new(Server::start(&s2, &args)),
    ];
    let barrier = Arc::new(Barrier::new(200));
    // One client for all: it opens a connection per concurrent request.
    let http = Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let threads: Vec<_> = (0..200u64)
        .map(|i| {
            let (server, barrier) = (servers[(i % 2) as usize].clone(), barrier.clone());
            let http = http.clone();
            std::thread::spawn(move || {
                let body = attestation_request(10, 11, 1000 + i);
                barrier.wait();
                let resp = http
                    .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
                    .json(&body)
                    .send()
                    .unwrap();
                (i % 2, resp.status())
            })
        })
        .collect();
    let statuses: Vec<(u64, StatusCode)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let signed: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| *s == StatusCode::OK)
        .collect();
    let refused = statuses
        .iter()
        .filter(|(_, s)| *s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((signed.len(), refused), (1, 199), "{statuses:?}");
    eprintln!("the one signature came from server {}", signed[0].0);

    // Both servers see the record: a conflicting request to either is refused, and the database
    // exports it through the CLI.
    let http = Client::new();
    for server in &servers {
        let resp = http
            .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
            .json(&attestation_request(10, 11, 5))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    }
    let export: Value =
        serde_json::from_str(&s1.ok(&["slashing", "export", "-", "--slashing-db", pg.url()]))
            .unwrap();
    let atts = export["data"][0]["signed_attestations"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{export}");
    assert_eq!(atts[0]["target_epoch"], "11");
}

#[test]
fn cli_import_and_export_speak_to_postgres() {
    let pg = PgServer::start();
    let s = Signer::new();
    let file = s.data_dir().join("in.json");
    std::fs::write(
        &file,
        json!({
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": HTTP_GVR},
            "data": [{"pubkey": PK, "signed_blocks": [{"slot": "81952"}],
                      "signed_attestations": [{"source_epoch": "2290", "target_epoch": "3007"}]}]
        })
        .to_string(),
    )
    .unwrap();
    let out = s.ok(&[
        "slashing",
        "import",
        file.to_str().unwrap(),
        "--slashing-db",
        pg.url(),
    ]);
    assert!(
        out.contains("1 block(s), 1 attestation(s) recorded"),
        "{out}"
    );
    let export: Value =
        serde_json::from_str(&s.ok(&["slashing", "export", "-", "--slashing-db", pg.url()]))
            .unwrap();
    assert_eq!(export["data"][0]["pubkey"], PK);
    assert_eq!(export["data"][0]["signed_blocks"][0]["slot"], "81952");
    // Nothing went to a SQLite file in the data directory.
    assert!(!s.data_dir().join("slashing-protection.sqlite").exists());
    // An unreachable database is one clear error line.
    let err = s.fail(&[
        "slashing",
        "export",
        "-",
        "--slashing-db",
        &format!("postgres://postgres@127.0.0.1:{}/nope", pg.port()),
    ]);
    common::assert_one_error_line(&err);
}

/// Rows of `table` (in the `hsm_signer` schema) of the database at `url`.
fn rows(pg: &PgServer, url: &str, table: &str) -> i64 {
    pg.connect(url)
        .query_one(&format!("SELECT COUNT(*) FROM hsm_signer.{table}"), &[])
        .unwrap()
        .get(0)
}

/// A `kind` sign request (Bellatrix shape) about `duty` (a slot, or an epoch).
fn request_of(kind: &str, duty: u64) -> Value {
    let (_, _, req) = common::request_shapes()
        .into_iter()
        .find(|(fork, k, _)| fork == "bellatrix" && k == kind)
        .unwrap();
    common::request_at(&req, duty, 32)
}

#[test]
fn a_keymanager_delete_on_one_server_is_refused_at_once_by_another_and_a_new_import_lifts_it() {
    let pg = PgServer::start();
    let (s1, s2) = (Signer::with_fixture_key(), Signer::with_fixture_key());
    let args = ["--no-slot-deadlines", "--slashing-db", pg.url()];
    let (one, two) = (Server::start(&s1, &args), Server::start(&s2, &args));
    let http = Client::new();
    let sign = |server: &Server, body: &Value| {
        let resp = http
            .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
            .json(body)
            .send()
            .unwrap();
        let status = resp.status();
        (status, resp.text().unwrap())
    };
    // Both sign while the key is live.
    assert_eq!(sign(&two, &attestation_request(1, 2, 0)).0, StatusCode::OK);
    assert_eq!(sign(&two, &request_of("BLOCK_V2", 100)).0, StatusCode::OK);
    assert_eq!(sign(&one, &attestation_request(2, 3, 0)).0, StatusCode::OK);

    let resp = http
        .delete(one.url("/eth/v1/keystores"))
        .bearer_auth(one.token())
        .json(&json!({ "pubkeys": [PK] }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let reply: Value = resp.json().unwrap();
    assert_eq!(reply["data"][0]["status"], "deleted", "{reply}");
    let (atts, blocks) = (
        rows(&pg, pg.url(), "signed_attestations"),
        rows(&pg, pg.url(), "signed_blocks"),
    );
    assert_eq!((atts, blocks), (2, 1));

    // The other server never handled the DELETE: its very next attestation and block for the
    // key are refused as for an unknown key, naming the deletion, and nothing is recorded.
    let (status, body) = sign(&two, &attestation_request(3, 4, 0));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body.contains("deleted through the Keymanager API"),
        "{body}"
    );
    let (status, body) = sign(&two, &request_of("BLOCK_V2", 101));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(rows(&pg, pg.url(), "signed_attestations"), atts);
    assert_eq!(rows(&pg, pg.url(), "signed_blocks"), blocks);
    // Having learnt it, it refuses the key for messages slashing protection never sees too.
    let (status, body) = sign(&two, &request_of("RANDAO_REVEAL", 3));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A reload does not bring the key back while the database says it is deleted.
    assert_eq!(two.reload_and_wait()["status"], "completed");
    assert_eq!(
        sign(&two, &request_of("RANDAO_REVEAL", 4)).0,
        StatusCode::NOT_FOUND
    );

    // The first server imports the key again (its keystore and password through the
    // Keymanager API): the mark is cleared in the database, and after a reload the other
    // server, whose key file stayed, signs with it again, where it had learnt the deletion.
    let keystore =
        std::fs::read_to_string(common::fixture("eip2335/keystore-pbkdf2.json")).unwrap();
    let password = std::fs::read_to_string(common::fixture("eip2335/password.txt")).unwrap();
    let resp = http
        .post(one.url("/eth/v1/keystores"))
        .bearer_auth(one.token())
        .json(&json!({ "keystores": [keystore], "passwords": [password.trim_end()] }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let reply: Value = resp.json().unwrap();
    assert_eq!(reply["data"][0]["status"], "imported", "{reply}");
    assert_eq!(
        sign(&one, &request_of("RANDAO_REVEAL", 5)).0,
        StatusCode::OK
    );
    assert_eq!(two.reload_and_wait()["status"], "completed");
    let (status, body) = sign(&two, &request_of("RANDAO_REVEAL", 6));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sign(&two, &attestation_request(4, 5, 0));
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn a_deletion_marked_by_one_service_is_refused_by_another_in_its_check_transaction() {
    // The same rule in-process, per store: a service that never saw the deletion refuses.
    let pg = PgServer::start();
    let url = pg.create_database("tombstone");
    let (a, b) = (open(&url), open(&url));
    let pk = [0x21; 48];
    a.check_and_record(&pk, &GVR, att(1, 2, 0)).unwrap();
    let deletion = b.mark_deleted(&[(pk, true)]).unwrap();
    assert_eq!(deletion.known, [true]);
    let r = a.check_and_record(&pk, &GVR, att(2, 3, 0));
    assert!(
        matches!(r, Err(SlashingError::Refused(Refusal::KeyDeleted { pubkey })) if pubkey == pk),
        "{r:?}"
    );
    // Another key in the same service is unaffected; an explicit re-import clears the mark.
    a.check_and_record(&[0x22; 48], &GVR, att(2, 3, 0)).unwrap();
    b.clear_deleted(&[pk]).unwrap();
    a.check_and_record(&pk, &GVR, att(2, 3, 0)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slashing.sqlite");
    let a = SlashingProtection::open_sqlite(&file, Some(GVR)).unwrap();
    let b = SlashingProtection::open_sqlite(&file, Some(GVR)).unwrap();
    b.mark_deleted(&[(pk, true)]).unwrap();
    let r = a.check_and_record(&pk, &GVR, att(1, 2, 0));
    assert!(
        matches!(r, Err(SlashingError::Refused(Refusal::KeyDeleted { .. }))),
        "{r:?}"
    );
}

// ---- reaching the server: TLS, timeouts ------------------------------------------------------

/// The one `error:` line of a failed command's standard error (which also has start-up notes).
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0]
}

/// `url` with `params` appended as its query.
fn with_params(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

/// Whether every session of the signer (`application_name = 'hsm-signer'`) on `pg` is over TLS,
/// and how many there are.
fn signer_sessions_over_tls(pg: &PgServer) -> (bool, i64) {
    let row = pg
        .admin()
        .query_one(
            "SELECT COALESCE(bool_and(s.ssl), false), COUNT(*) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'hsm-signer'",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn verify_full_with_the_right_ca_connects_and_signs_a_wrong_ca_or_name_is_refused() {
    let ca = common::tls::Ca::new("pg-ca");
    let pg = PgServer::start_tls(&ca.server());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, common::tls::Ca::new("other").cert_pem()).unwrap();
    let verify =
        |mode: &str, ca: &std::path::Path| format!("sslmode={mode}&sslrootcert={}", ca.display());

    // In-process: verified, and the session really is TLS.
    let url = with_params(pg.url(), &verify("verify-full", &ca_file));
    let sp = open(&url);
    sp.check_and_record(&[0x31; 48], &GVR, att(1, 2, 0))
        .unwrap();
    assert_eq!(signer_sessions_over_tls(&pg), (true, 1));
    drop(sp);

    // A certificate from another CA: refused, saying why.
    let wrong = with_params(pg.url(), &verify("verify-full", &other_file));
    let err = SlashingProtection::open_postgres(&wrong, Some(GVR)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SlashingError::Store(_)), "{text}");
    assert!(
        text.contains("invalid peer certificate") && text.contains("sslrootcert"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "{text}");

    // The real binary: verify-full signs over TLS; the wrong CA stops it at start, one line.
    let s = Signer::with_fixture_key();
    let url = with_params(
        &pg.create_database("mainnet"),
        &verify("verify-full", &ca_file),
    );
    let server = Server::start(&s, &["--no-slot-deadlines", "--slashing-db", &url]);
    let resp = Client::new()
        .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
        .json(&attestation_request(1, 2, 0))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(signer_sessions_over_tls(&pg), (true, 1));
    drop(server);
    let err = s.fail(&["serve", "--listen", "127.0.0.1:0", "--slashing-db", &wrong]);
    let line = error_line(&err);
    assert!(line.contains("invalid peer certificate"), "{line}");

    // A certificate for another name: verify-full refuses it, verify-ca (chain only) accepts.
    let misnamed = PgServer::start_tls(&ca.server_named(&["db.elsewhere.test"]));
    let err = SlashingProtection::open_postgres(
        &with_params(misnamed.url(), &verify("verify-full", &ca_file)),
        Some(GVR),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid peer certificate"), "{err}");
    let sp = open(&with_params(misnamed.url(), &verify("verify-ca", &ca_file)));
    sp.check_and_record(&[0x32; 48], &GVR, att(1, 2, 0))
        .unwrap();
    assert_eq!(signer_sessions_over_tls(&misnamed), (true, 1));
}

#[test]
fn a_database_on_another_host_without_verified_tls_is_refused_at_start() {
    // `.invalid` never resolves: the refusal must come before any connection is tried.
    let s = Signer::new();
    for (url, mode) in [
        (
            "postgres://signer:pw@db.example.invalid:5432/slashing",
            "prefer",
        ),
        (
            "postgres://signer:pw@db.example.invalid/slashing?sslmode=require",
            "require",
        ),
    ] {
        let err = s.fail(&["serve", "--listen", "127.0.0.1:0", "--slashing-db", url]);
        let line = error_line(&err);
        assert!(
            line.contains("db.example.invalid is not on this machine")
                && line.contains(&format!("sslmode={mode}"))
                && line.contains("sslmode=verify-full&sslrootcert="),
            "{line}"
        );
        assert!(!line.contains("pw@"), "{line}");
    }
}

#[test]
fn a_stalled_database_fails_signing_within_the_bound_and_the_signer_recovers() {
    let pg = PgServer::start();
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines", "--slashing-db", pg.url()]);
    let http = Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let sign = |source: u64| {
        let started = std::time::Instant::now();
        let resp = http
            .post(server.url(&format!("/api/v1/eth2/sign/{PK}")))
            .json(&attestation_request(source, source + 1, 0))
            .send()
            .unwrap();
        let status = resp.status();
        (status, resp.text().unwrap(), started.elapsed())
    };
    assert_eq!(sign(1).0, StatusCode::OK);

    // The session keeps TCP keepalives on, probing after 15 s of silence (ss shows the timer).
    let ss = std::process::Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            "dport",
            &pg.port().to_string(),
        ])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    assert!(ss.contains("timer:(keepalive,"), "{ss}");

    // 1. A statement stuck behind a lock another session holds: the server cancels it after
    //    4 s, the request gets 503 naming the cause, nothing is recorded.
    let mut holder = pg.connect(pg.url());
    let mut lock = holder.transaction().unwrap();
    lock.batch_execute("LOCK TABLE hsm_signer.validators IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let (status, body, took) = sign(2);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("timeout"), "{body}");
    assert!(took < std::time::Duration::from_secs(7), "{took:?}");
    lock.rollback().unwrap();
    assert_eq!(sign(2).0, StatusCode::OK);

    // 2. A server that stops answering altogether (its backend frozen, as a half-open
    //    connection looks): the request gets 503 at the signer's bound instead of hanging.
    let pid: i32 = pg
        .admin()
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'hsm-signer'",
            &[],
        )
        .unwrap()
        .get(0);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let (status, body, took) = sign(3);
    signal("-CONT");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("no decision within"), "{body}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // Once the server answers again, signing goes on.
    let (status, body, _) = sign(4);
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn the_database_url_comes_from_a_file_or_the_environment_and_a_password_on_argv_is_warned_of() {
    let pg = PgServer::start();
    let s = Signer::new();
    // Trust authentication ignores the password; it stands for a real one.
    let url = pg
        .create_database("secret")
        .replace("postgres@", "postgres:hunter2-secret@");
    let file = s.data_dir().join("slashing-db.url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let export = |args: &[&str], env: Option<&str>| {
        let mut cmd = s.cmd();
        cmd.args(["slashing", "prune", "--keep-epochs", "10"])
            .args(args);
        match env {
            Some(v) => cmd.env("HSM_SIGNER_SLASHING_DB", v),
            None => cmd.env_remove("HSM_SIGNER_SLASHING_DB"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("pruned 0 record(s)"), "{stdout}");
        stderr
    };
    let from_file = export(&["--slashing-db-file", file.to_str().unwrap()], None);
    let from_env = export(&[], Some(&url));
    let from_argv = export(&["--slashing-db", &url], None);
    for quiet in [&from_file, &from_env] {
        assert!(!quiet.contains("WARNING"), "{quiet}");
    }
    assert!(
        from_argv.contains("WARNING") && from_argv.contains("--slashing-db-file"),
        "{from_argv}"
    );
    for stderr in [&from_file, &from_env, &from_argv] {
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // Without a password on argv, no warning.
    assert!(!export(&["--slashing-db", pg.url()], None).contains("WARNING"));
    // An error about the database never shows the password.
    let bad = url.replace("/secret_", "/missing_");
    let err = s.fail(&[
        "slashing",
        "prune",
        "--keep-epochs",
        "1",
        "--slashing-db-file",
        {
            std::fs::write(&file, &bad).unwrap();
            file.to_str().unwrap()
        },
    ]);
    assert!(
        err.contains("missing_") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn bench_slashing_measures_sqlite_and_postgres_and_drops_its_scratch_databases() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "bench",
            "slashing",
            "--validators",
            "20",
            "--concurrency",
            "4",
        ])
        .args(["--seconds", "0.3", "--postgres", pg.url(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for store in ["sqlite", "postgres"] {
        for (mode, name) in [
            ("group_commit", "group-commit"),
            ("transaction_per_request", "transaction-per-request"),
        ] {
            let run = &report[store][mode];
            assert_eq!(run["mode"], name, "{store}: {run}");
            assert!(run["attestations"].as_u64().unwrap() > 0, "{store}: {run}");
            assert_eq!(run["errors"], 0, "{store}: {run}");
            assert_eq!(run["validators"], 20, "{store}: {run}");
            let txns = run["transactions"].as_u64().unwrap();
            assert!(txns > 0, "{store}: {run}");
            if mode == "transaction_per_request" {
                // One transaction per request: every attestation had its own.
                assert_eq!(run["mean_batch"].as_f64().unwrap(), 1.0, "{store}: {run}");
            }
        }
    }
    // The scratch databases are gone, and the one the URL names is untouched.
    let left: Vec<String> = pg
        .admin()
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hsm_signer_bench%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(left.is_empty(), "scratch databases left: {left:?}");
    // The SQLite scratch files are gone from the data directory.
    let files: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("bench-slashing"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn batch(
    sp: &SlashingProtection,
    items: Vec<([u8; 48], Proposal)>,
) -> Vec<Result<(), SlashingError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        sp.check_and_record_many_async(items.into_iter().map(|(pk, p)| (pk, GVR, p)).collect()),
    )
}

/// A transaction of another session holding `pubkey`'s validator row until it ends.
fn hold_row<'c>(session: &'c mut postgres::Client, pubkey: &[u8; 48]) -> postgres::Transaction<'c> {
    let mut holder = session.transaction().unwrap();
    holder
        .execute(
            "SELECT id FROM hsm_signer.validators WHERE pubkey = $1 FOR UPDATE",
            &[&&pubkey[..]],
        )
        .unwrap();
    holder
}

fn key(i: usize) -> [u8; 48] {
    let mut k = [0x21u8; 48];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    k
}

#[test]
fn a_batch_of_known_validators_takes_two_round_trips_and_decides_as_one_by_one_would() {
    let pg = PgServer::start();
    let sp = open(pg.url());
    // First sight of 40 keys: registered one by one.
    let first = batch(&sp, (0..40).map(|i| (key(i), att(0, 1, i))).collect());
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    // Known now: BEGIN + one lock + one read in one trip, the inserts + COMMIT in another.
    let before = sp.stats().round_trips;
    let next = batch(&sp, (0..40).map(|i| (key(i), att(1, 2, i))).collect());
    assert!(next.iter().all(Result::is_ok), "{next:?}");
    assert_eq!(sp.stats().round_trips - before, 2);
    // A batch mixing honest votes with a double vote and a surround: the lookups the rules
    // need, and the right verdicts.
    let mixed = batch(
        &sp,
        vec![
            (key(0), att(2, 3, 0)),
            (key(1), att(1, 2, 99)), // double vote at target 2
            (key(2), att(0, 3, 2)),  // surrounds 1 -> 2
            (key(3), att(2, 3, 3)),
            (key(0), att(2, 3, 77)), // double vote with the first of this batch
        ],
    );
    assert!(mixed[0].is_ok() && mixed[3].is_ok(), "{mixed:?}");
    assert!(
        matches!(
            mixed[1],
            Err(SlashingError::Refused(Refusal::DoubleVote { .. }))
        ),
        "{mixed:?}"
    );
    assert!(
        matches!(mixed[2], Err(SlashingError::Refused(_))),
        "{mixed:?}"
    );
    assert!(
        matches!(
            mixed[4],
            Err(SlashingError::Refused(Refusal::DoubleVote { .. }))
        ),
        "{mixed:?}"
    );
    // What was committed is exactly the allowed records: 40 + 40 + 2.
    let rows: i64 = pg
        .connect(pg.url())
        .query_one("SELECT COUNT(*) FROM hsm_signer.signed_attestations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 82);
    assert_eq!(sp.stats().failed_transactions, 0);
}

#[test]
fn a_batch_that_fails_after_its_locks_is_rolled_back_and_the_connection_serves_the_next() {
    let pg = PgServer::start();
    let sp = open(pg.url());
    assert!(batch(&sp, (0..4).map(|i| (key(i), att(0, 1, i))).collect())
        .iter()
        .all(Result::is_ok));
    // Another session holds key 3's row: the batch locks 0..2, waits for 3, times out.
    let mut other = pg.connect(pg.url());
    let holder = hold_row(&mut other, &key(3));
    let failed = batch(&sp, (0..4).map(|i| (key(i), att(1, 2, i))).collect());
    assert!(
        failed
            .iter()
            .all(|r| matches!(r, Err(SlashingError::Store(_)))),
        "{failed:?}"
    );
    holder.rollback().unwrap();
    // Nothing of it was recorded, no lock of it remains, and the same connection is not left
    // in an aborted transaction: the same votes are decided afresh and recorded.
    let again = batch(&sp, (0..4).map(|i| (key(i), att(1, 2, i))).collect());
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    let stats = sp.stats();
    assert_eq!((stats.failed_transactions, stats.transactions), (1, 2));
    let rows: i64 = pg
        .connect(pg.url())
        .query_one("SELECT COUNT(*) FROM hsm_signer.signed_attestations", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 8);
}

/// Validator `i`'s history: attestations of epochs 1..=20+i%7, blocks at slots 32·e for
/// e in 1..=10+i%5 (none when i%11 == 0), so bounds and watermarks differ between validators.
fn write_history(sp: &SlashingProtection, n: usize) {
    for i in 0..n {
        let mut items: Vec<([u8; 48], Proposal)> = (1..=20 + (i as u64 % 7))
            .map(|e| (key(i), att(e - 1, e, i)))
            .collect();
        if i % 11 != 0 {
            items.extend((1..=10 + (i as u64 % 5)).map(|e| {
                (
                    key(i),
                    Proposal::Block {
                        slot: e * 32,
                        signing_root: root(i),
                    },
                )
            }));
        }
        assert!(batch(sp, items).iter().all(Result::is_ok));
    }
}

/// Verdicts of probes around each validator's pruning bounds: old votes, surrounds, blocks
/// below and above what was deleted, and new duties.
fn probe(sp: &SlashingProtection, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let last = 20 + (i as u64 % 7);
        let mut probes = vec![
            att(2, 3, 1000 + i),
            att(last - 5, last - 4, 1000 + i),
            att(last - 7, last - 6, 1000 + i),
            att(0, last + 1, 1000 + i),
            att(last, last + 1, 1000 + i),
        ];
        for slot in [40, 32 * 6, 32 * 9, 32 * 30] {
            probes.push(Proposal::Block {
                slot,
                signing_root: root(1000 + i),
            });
        }
        for p in probes {
            let verdict = sp.check_and_record(&key(i), &GVR, p);
            out.push(format!(
                "{i} {p:?}: {:?}",
                verdict.map_err(|e| e.to_string())
            ));
        }
    }
    out
}

#[test]
fn bulk_pruning_on_postgres_keeps_what_pruning_one_by_one_keeps_and_skips_a_busy_validator() {
    const N: usize = 300;
    let pg = PgServer::start();
    let pg_sp = open(pg.url());
    let dir = tempfile::tempdir().unwrap();
    let lite = SlashingProtection::open_sqlite(&dir.path().join("s.sqlite"), Some(GVR)).unwrap();
    write_history(&pg_sp, N);
    write_history(&lite, N);

    // Another session holds validator 7's row: the pass skips it and takes the rest.
    let mut other = pg.connect(pg.url());
    let holder = hold_row(&mut other, &key(7));
    let trips = pg_sp.stats().round_trips;
    let report = pg_sp.prune_pass(5).unwrap();
    let bulk_trips = pg_sp.stats().round_trips - trips;
    holder.rollback().unwrap();
    assert_eq!(report.validators, N as u64);
    // Validator 7 (held) kept all of its 20 attestations.
    let kept_7: i64 = pg
        .connect(pg.url())
        .query_one(
            "SELECT COUNT(*) FROM hsm_signer.signed_attestations a
             JOIN hsm_signer.validators v ON v.id = a.validator_id WHERE v.pubkey = $1",
            &[&&key(7)[..]],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept_7, 20);
    // One statement a group of validators, not seven round trips a validator (2,100 here):
    // fewer trips than validators, however slow the machine makes the groups.
    assert!(
        bulk_trips < N as u64,
        "{bulk_trips} round trips for {N} validators"
    );
    // The next pass takes validator 7 too; then both stores hold the same and decide the same.
    let second = pg_sp.prune(5).unwrap();
    let first_lite = lite.prune(5).unwrap();
    assert_eq!(report.records + second, first_lite);
    assert!(second > 0 && second < 30, "validator 7's records: {second}");
    let (p, l) = (pg_sp.footprint().unwrap(), lite.footprint().unwrap());
    assert_eq!(
        (p.validators, p.blocks, p.attestations),
        (l.validators, l.blocks, l.attestations)
    );
    assert_eq!(pg_sp.prune(5).unwrap(), 0);
    // The watermarks are the highest values deleted: targets below last-5 went (source one
    // less), and blocks more than 5·32 slots below the newest.
    let mut db = pg.connect(pg.url());
    for i in 0..N {
        let row = db
            .query_one(
                "SELECT wm_block_slot, wm_attestation_source, wm_attestation_target
                 FROM hsm_signer.validators WHERE pubkey = $1",
                &[&&key(i)[..]],
            )
            .unwrap();
        let last = 20 + (i as i64 % 7);
        let blocks = 10 + (i as i64 % 5);
        let want_block = (i % 11 != 0).then_some(32 * (blocks - 6));
        let got: (Option<i64>, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            got,
            (want_block, Some(last - 7), Some(last - 6)),
            "validator {i}"
        );
    }
    let (pv, lv) = (probe(&pg_sp, N), probe(&lite, N));
    for (a, b) in pv.iter().zip(&lv) {
        assert_eq!(a, b);
    }
    assert!(
        pv.iter().any(|v| v.contains("Ok")) && pv.iter().any(|v| v.contains("Err")),
        "the probes must both pass and fail somewhere"
    );
}
