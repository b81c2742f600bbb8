//! The multi-host harness (`common::netns`) proven with the real binary: a signer on one
//! network-namespace host, reached over mutual TLS from another, cut off by a partition (its
//! peers wait, they are not refused), back after heal without a restart, refused once killed;
//! and nothing of a Lan left once it is dropped, even by a failing test.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{Lan, Owner, LINK_PREFIX, NS_PREFIX};
use common::tls::{error_chain, https_client_timeout, write_identity, Ca};
use common::{Server, Signer, BIN};
use reqwest::StatusCode;

/// How long a client waits for a partitioned peer: long enough that an immediate refusal could
/// not pass for it, short enough for a quick test.
const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn mutual_tls_across_hosts_through_a_partition_a_heal_and_a_kill() {
    let lan = Lan::new(3);
    let (signer_host, client_host, other_host) = (lan.host(0), lan.host(1), lan.host(2));

    // PKI as participants will use it: the server is named by its address only, and admits
    // one client certificate.
    let s = Signer::with_fixture_key();
    let dir = s.data_dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = Ca::new("participant CA");
    let (cert, key) = write_identity(
        &dir,
        "server",
        &server_ca.server_at(&[IpAddr::V4(signer_host.ip())]),
    );
    let client_ca = Ca::new("coordinator CA");
    let client_ca_file = client_ca.write_cert(&dir, "clients-ca");
    let coordinator = client_ca.client("coordinator");
    s.add_config(&format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {client_ca_file:?}\n\
         allowed_clients = [\"coordinator\"]"
    ));
    let log = s.data_dir().join("server.log");
    let mut server = Server::start_on_host(
        &s,
        signer_host,
        &[
            "--no-slot-deadlines",
            "--no-slashing-protection",
            "--no-network-check",
        ],
        &log,
    );
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        server
            .base
            .starts_with(&format!("https://{}:", signer_host.ip())),
        "{}",
        server.base
    );
    // The child is the signer itself (ip netns exec execs it), running inside host 0: killing
    // the child kills the signer.
    let pid = server.child.id();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        std::fs::canonicalize(BIN).unwrap()
    );
    assert_eq!(signer_host.pids(), vec![pid as i32]);

    let upcheck = server.url("/upcheck");
    let ca_pem = server_ca.cert_pem();
    let signer_addr: SocketAddr = server.base["https://".len()..].parse().unwrap();
    // Clients on host 1: made on a thread inside host 1, so their runtime threads, and the
    // connections they open, are there too. Host 1's address is local only in there.
    let [http, fresh, stranger] = client_host.run(|| {
        TcpListener::bind((client_host.ip(), 0)).expect("host 1's address is local");
        let unlisted = client_ca.client("not-allowed");
        [Some(&coordinator), Some(&coordinator), Some(&unlisted)]
            .map(|id| https_client_timeout(&ca_pem, id, TIMEOUT))
    });
    let root_client = https_client_timeout(&ca_pem, Some(&coordinator), TIMEOUT);
    // A port on host 2, to show that a partition of host 0 leaves the rest of the segment up.
    let other_port = other_host.run(|| TcpListener::bind((other_host.ip(), 0)).unwrap());
    let other_addr = other_port.local_addr().unwrap();

    assert_eq!(http.get(&upcheck).send().unwrap().status(), StatusCode::OK);
    // Mutual TLS across hosts: a certificate not on the allow-list is refused in the
    // handshake, and the signer saw it come from host 1's address.
    let err = stranger.get(&upcheck).send().unwrap_err();
    assert!(err.status().is_none(), "{}", error_chain(&err));
    // (The log may color `peer=`: look for the address and a port.)
    let from_host1 = format!("{}:", client_host.ip());
    assert!(
        wait_for(|| server_log()
            .lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains(&from_host1))),
        "no refusal from {from_host1} logged:\n{}",
        server_log()
    );

    // Partitioned. From host 1, the request on the connection kept alive from before gets no
    // answer, nor does a new connection's handshake; the test process fares no better. Each
    // waits out its whole timeout. Host 2 has never sent host 0 anything: its connect, given
    // longer than ARP takes to give up (~3 s), still times out instead of ending in "No route
    // to host", as it would have without permanent neighbour entries.
    signer_host.partition();
    assert!(signer_host.is_partitioned());
    let url = upcheck.as_str();
    std::thread::scope(|s| {
        let first_contact = s.spawn(|| {
            other_host.run(|| {
                let wait = Duration::from_secs(4);
                let start = Instant::now();
                let err = TcpStream::connect_timeout(&signer_addr, wait).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
                assert!(start.elapsed() >= wait, "{:?}", start.elapsed());
            })
        });
        for (what, client) in [
            ("host 1, kept-alive connection", &http),
            ("host 1, new connection", &fresh),
            ("root namespace", &root_client),
        ] {
            s.spawn(move || assert_times_out(what, client, url));
        }
        // Host 1 still reaches host 2: only host 0 is cut off.
        client_host
            .run(|| TcpStream::connect_timeout(&other_addr, TIMEOUT))
            .expect("host 2 during the partition");
        first_contact.join().unwrap();
    });

    // Healed: the same clients are served again by the same signer.
    signer_host.heal();
    assert!(!signer_host.is_partitioned());
    for client in [&http, &root_client] {
        assert_eq!(
            client.get(&upcheck).send().unwrap().status(),
            StatusCode::OK
        );
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the signer exited:\n{}",
        server_log()
    );
    assert_eq!(server.child.id(), pid);

    // Killed: the host is up but nothing listens, so its kernel refuses at once.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(signer_host.pids(), Vec::<i32>::new());
    let start = Instant::now();
    let err = fresh.get(&upcheck).send().unwrap_err();
    let chain = error_chain(&err);
    assert!(err.is_connect(), "{chain}");
    assert!(chain.contains("Connection refused"), "{chain}");
    assert!(start.elapsed() < TIMEOUT / 2, "{:?}", start.elapsed());

    drop(server);
    drop(other_port);
    let names = lan.names();
    assert_eq!(names.namespaces.len(), 4, "{names:?}");
    drop(lan);
    assert_eq!(names.remaining(), Vec::<String>::new());
}

#[test]
fn a_lan_removes_what_it_made_even_when_its_test_panics_and_sweeps_what_dead_owners_left() {
    // What a killed test process would have left: namespaces and an uplink whose owner is not
    // running (this pid with another start time: a previous process that had this pid).
    let me = Owner::me();
    let dead = Owner {
        pid: me.pid,
        start: me.start + 1,
    };
    assert!(me.is_running() && !dead.is_running());
    let dead_ns = format!("{NS_PREFIX}{}-0-h0", dead.tag());
    let dead_link = format!("{LINK_PREFIX}t{}", me.pid);
    assert!(dead_link.len() <= 15);
    ip(&["netns", "add", &dead_ns]);
    ip(&[
        "link",
        "add",
        &dead_link,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{dead_link}p"),
    ]);
    ip(&[
        "link",
        "set",
        &dead_link,
        "alias",
        &format!("{NS_PREFIX}{}-0", dead.tag()),
    ]);
    // And one of a live owner (this process), which must be left alone.
    let live_ns = format!("{NS_PREFIX}{}-999-h0", me.tag());
    ip(&["netns", "add", &live_ns]);

    let mut made = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lan = Lan::new(2);
        let names = lan.names();
        made.push(names.clone());
        let namespaces = common::netns::namespace_names();
        assert!(!namespaces.contains(&dead_ns), "not swept: {dead_ns}");
        assert!(namespaces.contains(&live_ns), "swept a live owner's");
        let links = common::netns::root_links();
        assert!(
            !links.iter().any(|(l, _)| *l == dead_link),
            "not swept: {dead_link}"
        );
        // Everything named exists while the Lan does (so `remaining` sees what it checks).
        assert_eq!(names.remaining().len(), 3 + 1 + 1, "{names:?}");
        assert!(names.links.iter().all(|l| l.len() <= 15), "{names:?}");
        // Hosts reach only their segment: no default route, one subnet.
        for host in lan.hosts() {
            let routes = ip(&["-n", host.namespace(), "-4", "route", "show"]);
            assert_eq!(routes.lines().count(), 1, "{routes}");
            assert!(!routes.contains("default"), "{routes}");
        }
        // Two Lans alive at once are on different subnets.
        let second = Lan::new(1);
        made.push(second.names());
        assert_ne!(
            second.root_ip().octets()[..3],
            lan.root_ip().octets()[..3],
            "same subnet"
        );
        panic!("deliberately failing while two Lans are alive");
    }));
    assert!(outcome.is_err());
    assert_eq!(made.len(), 2, "both Lans were made");
    for names in made {
        assert_eq!(names.remaining(), Vec::<String>::new());
    }
    ip(&["netns", "del", &live_ns]);
}

/// A request to a partitioned signer: no answer and no refusal, only the client's timeout,
/// after all of it.
fn assert_times_out(what: &str, client: &reqwest::blocking::Client, url: &str) {
    let start = Instant::now();
    let err = client.get(url).send().unwrap_err();
    let waited = start.elapsed();
    let chain = error_chain(&err);
    assert!(err.is_timeout(), "{what}: not a timeout: {chain}");
    assert!(
        waited >= TIMEOUT,
        "{what}: gave up after {waited:?}: {chain}"
    );
    assert!(
        !chain.contains("refused") && !chain.contains("unreachable"),
        "{what}: {chain}"
    );
}

/// Whether `cond` holds within 5 s (polled).
fn wait_for(cond: impl Fn() -> bool) -> bool {
    let limit = Instant::now() + Duration::from_secs(5);
    while Instant::now() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// `ip args…`, insisting on success; its stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
