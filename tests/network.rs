//! Network identity through the real binary: a signer serves one network, named by its genesis
//! validators root; another network's requests are refused with that reason before anything is
//! recorded; the slashing database is bound to the network when it is created; a beacon node on
//! another network stops the start with what disagrees; and nothing depends on the working
//! directory.

mod common;

use common::{signing_fixtures, Server, Signer, FIXTURE_PK};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
const SEPOLIA_GVR: &str = "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078";

/// A deneb block header request at `slot` for the network of `gvr` (mainnet fork versions).
fn block(slot: u64, gvr: &str) -> Value {
    let mut req = signing_fixtures()
        .1
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c["type"] == "BLOCK_V2" && c["request"]["beacon_block"]["version"] == "DENEB")
        .unwrap()["request"]
        .clone();
    let o = req.as_object_mut().unwrap();
    o.remove("signingRoot");
    o.remove("signing_root");
    req["fork_info"]["genesis_validators_root"] = json!(gvr);
    req["beacon_block"]["block_header"]["slot"] = json!(slot.to_string());
    req
}

fn sign(server: &Server, body: &Value) -> (u16, String) {
    let resp = Client::new()
        .post(server.url(&format!("/api/v1/eth2/sign/{FIXTURE_PK}")))
        .json(body)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

fn exported_root(s: &Signer) -> String {
    let export: Value = serde_json::from_str(&s.ok(&["slashing", "export", "-"])).unwrap();
    export["metadata"]["genesis_validators_root"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn another_networks_request_is_refused_and_binds_nothing() {
    let s = Signer::with_fixture_key();
    let server = Server::start(&s, &["--no-slot-deadlines"]);
    // The database was bound to mainnet when `serve` created it, before any request.
    assert_eq!(exported_root(&s), MAINNET_GVR);

    let (status, body) = sign(&server, &block(100, SEPOLIA_GVR));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!(
            "this signer serves network mainnet (genesis validators root {MAINNET_GVR})"
        )) && body.contains(&format!(
            "the request is for genesis validators root {SEPOLIA_GVR}"
        )),
        "{body}"
    );
    // Nothing was recorded: the same slot on the real network signs.
    let (status, body) = sign(&server, &block(100, MAINNET_GVR));
    assert_eq!(status, 200, "{body}");
    let export: Value = serde_json::from_str(&s.ok(&["slashing", "export", "-"])).unwrap();
    assert_eq!(export["metadata"]["genesis_validators_root"], MAINNET_GVR);
    assert_eq!(
        export["data"][0]["signed_blocks"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn a_database_of_another_network_stops_the_start() {
    let s = Signer::with_fixture_key();
    drop(Server::start(&s, &["--no-slot-deadlines"]));
    let out = s.run(&["serve", "--listen", "127.0.0.1:0", "--network", "sepolia"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slashing protection database"), "{err}");
    assert!(
        err.contains(&MAINNET_GVR[2..]) && err.contains(&SEPOLIA_GVR[2..]),
        "both roots named: {err}"
    );
}

const DEVNET: &str = "\
PRESET_BASE: mainnet
CONFIG_NAME: hsm-signer-devnet
MIN_GENESIS_TIME: 1700000000
GENESIS_DELAY: 0
GENESIS_FORK_VERSION: 0x00000000
ALTAIR_FORK_VERSION: 0x01000000
ALTAIR_FORK_EPOCH: 0
BELLATRIX_FORK_VERSION: 0x02000000
BELLATRIX_FORK_EPOCH: 18446744073709551615
SECONDS_PER_SLOT: 4
";

#[test]
fn a_custom_network_needs_its_root_from_somewhere() {
    let s = Signer::with_fixture_key();
    let net = s.data_dir().join("config.yaml");
    std::fs::write(&net, DEVNET).unwrap();
    let net = net.to_str().unwrap();
    let out = s.run(&["serve", "--listen", "127.0.0.1:0", "--network", net]);
    assert!(!out.status.success());
    let err = common::assert_one_error_line(std::str::from_utf8(&out.stderr).unwrap());
    assert!(
        err.contains("network hsm-signer-devnet has no known genesis validators root"),
        "{err}"
    );
    // A built-in network's root cannot be overridden.
    let out = s.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--genesis-validators-root",
        SEPOLIA_GVR,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("network mainnet has genesis validators root"),
        "{err}"
    );

    let root = format!("0x{}", "5e".repeat(32));
    let server = Server::start(
        &s,
        &[
            "--no-slot-deadlines",
            "--network",
            net,
            "--genesis-validators-root",
            &root,
        ],
    );
    let mut req = block(7, &root);
    // This devnet's altair from epoch 0.
    req["fork_info"]["fork"] =
        json!({"previous_version": "0x00000000", "current_version": "0x01000000", "epoch": "0"});
    let (status, body) = sign(&server, &req);
    assert_eq!(status, 200, "{body}");
    // Mainnet's deneb version is not one of this devnet's.
    let (status, body) = sign(&server, &block(8, &root));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("none of this network's forks"), "{body}");
}

/// What a dev node of [`DEVNET`] answers, in Lodestar's manner: the altair version as the
/// genesis fork version, bellatrix listed at `FAR_FUTURE_EPOCH`.
fn devnet_node(seconds_per_slot: &str, gvr: &str) -> String {
    common::beacon::serve_chain(
        json!({"genesis_time": "1700000123", "genesis_validators_root": gvr,
               "genesis_fork_version": "0x01000000"}),
        json!({"SECONDS_PER_SLOT": seconds_per_slot, "SLOTS_PER_EPOCH": "32",
               "GENESIS_FORK_VERSION": "0x00000000",
               "ALTAIR_FORK_VERSION": "0x01000000", "ALTAIR_FORK_EPOCH": "0",
               "BELLATRIX_FORK_VERSION": "0x02000000",
               "BELLATRIX_FORK_EPOCH": "18446744073709551615"}),
        json!([
            {"previous_version": "0x00000000", "current_version": "0x00000000", "epoch": "0"},
            {"previous_version": "0x00000000", "current_version": "0x01000000", "epoch": "0"},
        ]),
    )
}

#[test]
fn the_beacon_node_confirms_the_network_or_stops_the_start() {
    let s = Signer::with_fixture_key();
    let net = s.data_dir().join("config.yaml");
    std::fs::write(&net, DEVNET).unwrap();
    let net = net.to_str().unwrap();
    let root = format!("0x{}", "77".repeat(32));

    // A node with another slot length: refused, and the point named.
    let other = devnet_node("6", &root);
    let out = s.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--network",
        net,
        "--beacon-node-url",
        &other,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not on this signer's network hsm-signer-devnet")
            && err.contains("slot length: the signer's is 4 s, the node's 6 s"),
        "{err}"
    );
    // A node with another root than the configured one.
    let out = s.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--network",
        net,
        "--beacon-node-url",
        &other,
        "--genesis-validators-root",
        &format!("0x{}", "78".repeat(32)),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("genesis validators root: the signer's is 0x7878"),
        "{err}"
    );

    // The right node gives the root (and the real genesis time): its network signs, no other.
    let node = devnet_node("4", &root);
    let log = s.data_dir().join("serve.log");
    let server = Server::start_logging_to(
        &s,
        &[
            "--no-slot-deadlines",
            "--network",
            net,
            "--beacon-node-url",
            &node,
        ],
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "confirms network hsm-signer-devnet (genesis validators root {root})"
        )),
        "{text}"
    );
    let mut req = block(9, &root);
    req["fork_info"]["fork"] =
        json!({"previous_version": "0x00000000", "current_version": "0x01000000", "epoch": "0"});
    let (status, body) = sign(&server, &req);
    assert_eq!(status, 200, "{body}");
    req["fork_info"]["genesis_validators_root"] = json!(MAINNET_GVR);
    let (status, body) = sign(&server, &req);
    assert_eq!(status, 400, "{body}");
    drop(server);
    assert_eq!(exported_root(&s), root);
}

#[test]
fn a_relative_data_directory_serves_like_an_absolute_one() {
    let s = Signer::with_fixture_key();
    let parent = s.data_dir().parent().unwrap();
    let name = s.data_dir().file_name().unwrap().to_str().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .current_dir(parent)
        .args([
            "--data-dir",
            name,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-slot-deadlines",
        ])
        .env_remove("HSM_SIGNER_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("hsm-signer listening on ")
        .map(str::to_owned);
    let result = base.map(|base| {
        Client::new()
            .post(format!("{base}/api/v1/eth2/sign/{FIXTURE_PK}"))
            .json(&block(3, MAINNET_GVR))
            .send()
            .map(|r| r.status().as_u16())
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        matches!(result, Some(Ok(200))),
        "{result:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
