//! The operator's kit checked against the tools that consume it and against the binary: the
//! systemd unit with `systemd-analyze verify` (and its exposure score), the alert rules with
//! `promtool check rules`, and every metric the dashboard and the rules name against what the
//! running signer exports on `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{http, Server, Signer};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool from Debian's packages (`scripts/install-deps.sh` installs it), on `PATH` or in sbin.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/install-deps.sh");
}

/// The unit as installed, with `ExecStart` pointing at the binary under test (verify checks
/// that the program exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("packaging/systemd/hsm-signer.service")).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/hsm-signer "),
        "{text}"
    );
    let text = text.replace(
        "/usr/local/bin/hsm-signer",
        env!("CARGO_BIN_EXE_hsm-signer"),
    );
    let path = dir.join("hsm-signer.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_cleanly_and_exposes_little() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let analyze = tool("systemd-analyze");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // A misspelt or misplaced key is only a warning to systemd: none is allowed here.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns: {said}"
    );

    let out = Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hsm-signer.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0: {text}");

    // What the issue asks of it, line by line: its own user, a read-only system with only the
    // data directory writable, no new privileges, real-time priority 1 and no capability.
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "User=hsm-signer",
        "StateDirectory=hsm-signer",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LimitRTPRIO=1",
        "CapabilityBoundingSet=\n",
        "EnvironmentFile=/etc/hsm-signer/hsm-signer.env",
        "--data-dir /var/lib/hsm-signer",
    ] {
        assert!(text.contains(line), "the unit lacks {line:?}");
    }
    // The service's data directory is the state directory, and nothing else is writable.
    assert!(!text.contains("ReadWritePaths"), "{text}");
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(repo("packaging/monitoring/hsm-signer-alerts.yml"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS: 13 rules found"), "{said}");
}

/// Metric names an expression refers to (`signer_…`), a histogram's series by its family name.
fn names_in(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("signer_") {
        let start = i + at;
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(expr.len() - start);
        // Only a whole identifier (not the tail of another one).
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            into.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

#[test]
fn every_metric_the_dashboard_and_the_rules_name_is_one_the_signer_exports() {
    // The dashboard's expressions.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("packaging/monitoring/hsm-signer-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12, "{}", panels.len());
    let mut named = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            names_in(t["expr"].as_str().unwrap(), &mut named);
        }
    }
    let from_dashboard = named.len();
    // The alert rules' expressions.
    let rules =
        std::fs::read_to_string(repo("packaging/monitoring/hsm-signer-alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            names_in(expr, &mut named);
        }
    }
    assert!(
        from_dashboard >= 20 && named.len() > from_dashboard,
        "{named:?}"
    );

    // What the real binary declares, on its default setup (SoftHSM, SQLite), with nothing signed
    // yet: every family is declared from the start.
    let s = Signer::new();
    let server = Server::start(&s, &[]);
    let text = http()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        exported.insert(name.to_owned());
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["_sum", "_count"],
            _ => &[],
        };
        for suffix in suffixes {
            exported.insert(format!("{name}{suffix}"));
        }
    }
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
    // The new health gauges carry values from the start: every embedded device is up, and no
    // threshold key is below t.
    assert_eq!(server.metric("signer_threshold_keys_below_threshold"), 0.0);
    let devices = text
        .lines()
        .filter(|l| l.starts_with("signer_device_up{") && l.ends_with(" 1"))
        .count();
    assert_eq!(devices, 3, "{text}");
}
