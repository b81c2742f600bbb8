//! The runbooks of docs/runbooks/ end with a "Try it" block of shell commands: each is run here
//! as written, with bash, against the real binary, SoftHSM tokens and a real PostgreSQL server,
//! so that what an operator is told to type keeps working. A block checks its own outcome
//! (`expect` in docs/runbooks/lib.sh) and fails the test by exiting non-zero.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;
use common::pg::PgServer;

fn runbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks")
}

/// The runbook's "Try it" block: the first ```bash fence after its "## Try it" heading.
fn try_it(name: &str) -> String {
    let text = std::fs::read_to_string(runbooks().join(name)).unwrap();
    let after = text
        .split("\n## Try it")
        .nth(1)
        .unwrap_or_else(|| panic!("{name} has no \"## Try it\" section"));
    let block = after
        .split("```bash\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .unwrap_or_else(|| panic!("{name}: no bash block under \"## Try it\""));
    block.to_owned()
}

/// Run `name`'s block in a fresh scratch directory, with `env`; its output on failure.
fn run(name: &str, env: &[(&str, &str)]) {
    let work = tempfile::tempdir().unwrap();
    let script = format!("set -euo pipefail\n{}\n", try_it(name));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .env("HSM_SIGNER", env!("CARGO_BIN_EXE_hsm-signer"))
        .env("WORK", work.path())
        .env("RUNBOOK_LIB", runbooks().join("lib.sh"))
        .env("KEYSTORE", fixture("eip2335/keystore-pbkdf2.json"))
        .env("PASSWORD", fixture("eip2335/password.txt"))
        .env_remove("HSM_SIGNER_DATA_DIR")
        .env_remove("HSM_SIGNER_CONFIG")
        .env_remove("HSM_SIGNER_SLASHING_DB")
        .env_remove("SOFTHSM2_CONF");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{said}");
    assert!(said.contains("ok: "), "{name} checked nothing:\n{said}");
}

#[test]
fn runbook_ha_postgresql() {
    let pg = PgServer::start();
    let url = pg.create_database("runbook_ha");
    run("ha-postgresql.md", &[("PG_URL", &url)]);
}

#[test]
fn runbook_backup_and_restore() {
    run("backup-and-restore.md", &[]);
}

#[test]
fn runbook_move_a_validator() {
    run("move-a-validator.md", &[]);
}

#[test]
fn runbook_replace_a_token() {
    run("replace-a-token.md", &[]);
}

#[test]
fn runbook_trust_model() {
    run("trust-model.md", &[]);
}

#[test]
fn every_runbook_is_run_here() {
    let mut found: Vec<String> = std::fs::read_dir(runbooks())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    found.sort();
    let this = std::fs::read_to_string(file!()).unwrap();
    for name in found {
        assert!(
            this.contains(&format!("run(\"{name}\"")),
            "{name} is not run by a test"
        );
    }
}
