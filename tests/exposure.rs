//! What the endpoints that answer anyone say (issue 15, finding 11): `/upcheck`,
//! `/healthcheck` and `/metrics` tell a monitor up or down, the configured device names and
//! counts, and nothing about the host: no file path, no token label, no error text. The
//! details are in the signer's log.

mod common;

use common::{Server, Signer};
use reqwest::StatusCode;
use serde_json::Value;

#[test]
fn unauthenticated_answers_name_no_path_and_no_error_detail_and_the_log_has_them() {
    let s = Signer::with_fixture_key();
    // A key file that does not load (its error names the file), and a device taken out of
    // service (its check fails with a reason).
    let broken = format!("0x{}.json", "cd".repeat(48));
    std::fs::write(s.data_dir().join("keys").join(&broken), "{").unwrap();
    let log = s.data_dir().join("server.log");
    let server = Server::start_logging_to(&s, &["--no-slot-deadlines"], &log);
    let http = common::http();
    let device = common::device(2);
    let resp = http
        .post(server.url(&format!("/admin/devices/{device}")))
        .bearer_auth(server.token())
        .json(&serde_json::json!({ "enabled": false }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = http.get(server.url("/healthcheck")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = resp.json().unwrap();
    let text = health.to_string();
    // What a monitor needs is there …
    let checks = health["checks"].as_array().unwrap();
    let down: Vec<&str> = checks
        .iter()
        .filter(|c| c["status"] == "DOWN")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        down,
        [format!("device:{device}").as_str(), "keys-check"],
        "{text}"
    );
    let keys = checks.iter().find(|c| c["id"] == "keys-check").unwrap();
    assert_eq!(keys["keys_loaded"], 1, "{text}");
    assert_eq!(keys["key_errors"], 1, "{text}");
    // … and nothing about the host.
    let data_dir = s.data_dir().display().to_string();
    let tmp = std::env::temp_dir().display().to_string();
    for leak in [
        data_dir.as_str(),
        tmp.as_str(),
        "cdcdcd",
        ".json",
        "hsm-signer-",
        "disabled",
        "softhsm2.conf",
    ] {
        assert!(!text.contains(leak), "/healthcheck says {leak:?}: {text}");
    }
    for path in ["/upcheck", "/metrics", "/no-such-route"] {
        let body = http.get(server.url(path)).send().unwrap().text().unwrap();
        for leak in [data_dir.as_str(), tmp.as_str(), "cdcdcd", "hsm-signer-"] {
            assert!(!body.contains(leak), "{path} says {leak:?}");
        }
    }

    // The log has the details.
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&broken),
        "the log does not name the broken key file:\n{logged}"
    );
    assert!(
        logged
            .lines()
            .any(|l| l.contains(&device) && l.contains("disabled")),
        "the log does not say why {device} is down:\n{logged}"
    );
}
