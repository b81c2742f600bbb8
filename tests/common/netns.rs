//! Several hosts on one machine: a private Ethernet segment of Linux network namespaces, so that
//! a test can run participants and a coordinator each on its own "host", cut one off the network,
//! and bring it back. Needs root and iproute2 (`ip`, `bridge`); nothing else.
//!
//! Shape of one [`Lan`] (subnet `10.a.b.0/24`, unique among the Lans alive on the machine):
//! ```text
//!  root ns (the test process)        switch ns                 host ns i
//!  hsu<k> 10.a.b.1  ──veth──  upl ─┐
//!                                  br0 ─ h<i>  ─────veth─────  eth0 10.a.b.(i+2), lo
//! ```
//! - The bridge lives in its own namespace, not the root one: the root namespace's firewall
//!   (Docker's `FORWARD DROP` on a CI machine, with `br_netfilter` passing bridged frames
//!   through it) must not decide whether two hosts can talk. The uplink veth still gives the
//!   test process an address on the segment, so it can reach every host directly.
//! - Hosts have no default route: their traffic stays on loopback and this segment.
//! - A partition disables the host's bridge port ([`Host::partition`]): the bridge drops its
//!   frames both ways without a word, and the host itself sees no carrier change, as with a cut
//!   somewhere between two real hosts. The kernel here has neither netem nor tc's drop action,
//!   and nft/iptables are not installed, so the port state is what needs nothing extra.
//! - Every neighbour (ARP) entry on the segment is permanent. With learned entries, a peer of a
//!   partitioned host would fail ARP after ~3 s and its connects would end in "No route to
//!   host" (EHOSTUNREACH): a refusal, not the silence of a real partition.
//!
//! Names: namespaces are `hsmt-<pid>.<start>-<n>-<role>` (the owning process's pid and start
//! time, so a reused pid is not mistaken for the owner; `n` counts Lans in that process); the
//! one root-namespace link is `hsu<k>` (4 hex digits, the subnet's index: creating it is the
//! atomic claim on the subnet), with its owner in the link's alias. [`Lan::new`] first removes
//! whatever an owner that is no longer running left behind; [`Lan`]'s `Drop` removes its own,
//! also when the test panicked.
//!
//! Processes on a host: [`Host::command`] runs `ip netns exec`, which enters the namespace and
//! then execs the program itself, so the `Child` is the program: `Child::kill` kills it (a
//! crashed participant). [`Host::run`] runs a closure on a thread inside the namespace, for a
//! client in the test process that must connect from that host.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace a Lan makes.
pub const NS_PREFIX: &str = "hsmt-";
/// Prefix of the one link a Lan makes in the root namespace (its uplink).
pub const LINK_PREFIX: &str = "hsu";

/// Subnets `10.200.0.0/24` to `10.255.255.0/24`: far from the usual private ranges (Docker's
/// 172.17/16, 192.168.x), and skipped anyway where the root namespace has an address in one.
const FIRST_OCTET2: u32 = 200;
const SUBNETS: u32 = (256 - FIRST_OCTET2) * 256;

/// Most hosts on one segment: host addresses are .2 to .251.
const MAX_HOSTS: usize = 250;

/// Lans made so far by this process (part of their names).
static LANS: AtomicU32 = AtomicU32::new(0);

/// A private Ethernet segment with `hosts` namespaces on it. Dropping it removes every
/// namespace and link it made (and kills whatever still runs inside its hosts).
pub struct Lan {
    switch: String,
    uplink: String,
    root_ip: Ipv4Addr,
    hosts: Vec<Host>,
}

/// One namespace on a [`Lan`].
pub struct Host {
    ns: String,
    ip: Ipv4Addr,
    /// The switch namespace and this host's port on its bridge (what a partition disables).
    switch: String,
    port: String,
}

/// What a Lan made, by name, to check after it is gone.
#[derive(Clone, Debug)]
pub struct LanNames {
    pub namespaces: Vec<String>,
    /// In the root namespace.
    pub links: Vec<String>,
    /// The root namespace's address on the segment.
    pub root_ip: Ipv4Addr,
}

impl Lan {
    /// A segment with `hosts` hosts, each with `lo` up and one address (see [`Host::ip`]).
    /// Panics, saying why, when the namespaces cannot be made (not root, no iproute2).
    pub fn new(hosts: usize) -> Lan {
        assert!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a Lan has 1 to {MAX_HOSTS} hosts"
        );
        sweep_leftovers();
        let owner = Owner::me();
        let n = LANS.fetch_add(1, Ordering::Relaxed);
        let name = |role: &str| format!("{NS_PREFIX}{}-{n}-{role}", owner.tag());

        let switch = name("sw");
        ip(&["netns", "add", &switch]);
        // From here on, Drop cleans up whatever was made (also when a step below panics).
        let mut lan = Lan {
            switch,
            uplink: String::new(),
            root_ip: Ipv4Addr::UNSPECIFIED,
            hosts: Vec::new(),
        };
        let sw = lan.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);

        let k = lan.claim_subnet(&owner, n);
        let [a, b] = [FIRST_OCTET2 + k / 256, k % 256].map(|x| x as u8);
        let addr = |last: u8| Ipv4Addr::new(10, a, b, last);
        let mac = |last: u8| format!("02:68:73:{a:02x}:{b:02x}:{last:02x}");
        lan.root_ip = addr(1);
        let up = lan.uplink.clone();
        ip(&["addr", "add", &format!("{}/24", lan.root_ip), "dev", &up]);
        ip(&["link", "set", &up, "up"]);
        ip(&["-n", &sw, "link", "set", "upl", "master", "br0", "up"]);

        for i in 0..hosts {
            let last = (i + 2) as u8;
            let host = Host {
                ns: name(&format!("h{i}")),
                ip: addr(last),
                switch: sw.clone(),
                port: format!("h{i}"),
            };
            ip(&["netns", "add", &host.ns]);
            let ns = host.ns.clone();
            lan.hosts.push(host);
            // The host's end is made inside its namespace, with a known address for the
            // permanent neighbour entries below.
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &format!("h{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
                "address",
                &mac(last),
            ]);
            ip(&[
                "-n",
                &sw,
                "link",
                "set",
                &format!("h{i}"),
                "master",
                "br0",
                "up",
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", addr(last)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }

        // Permanent neighbours everywhere (see the module doc): every host knows every other
        // host and the root's uplink; the root knows every host.
        let mut everyone: Vec<(Ipv4Addr, String)> = vec![(lan.root_ip, mac(1))];
        everyone.extend((0..hosts).map(|i| (addr((i + 2) as u8), mac((i + 2) as u8))));
        for (i, host) in lan.hosts.iter().enumerate() {
            for (j, (peer, peer_mac)) in everyone.iter().enumerate() {
                if j != i + 1 {
                    permanent_neighbour(Some(&host.ns), "eth0", *peer, peer_mac);
                }
            }
        }
        for (peer, peer_mac) in &everyone[1..] {
            permanent_neighbour(None, &up, *peer, peer_mac);
        }
        lan
    }

    /// Make the uplink `hsu<k>` for the first free subnet index `k`: the name is the claim
    /// (creating a link whose name exists fails), and the candidates start at a point derived
    /// from the pid so that concurrent test processes rarely try the same one.
    fn claim_subnet(&mut self, owner: &Owner, n: u32) -> u32 {
        let used = root_ipv4_addresses();
        let start = (owner.pid.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503)) % SUBNETS;
        for step in 0..SUBNETS {
            let k = (start + step) % SUBNETS;
            let [a, b] = [FIRST_OCTET2 + k / 256, k % 256].map(|x| x as u8);
            if used.iter().any(|ip| ip.octets()[..3] == [10, a, b]) {
                continue;
            }
            let link = format!("{LINK_PREFIX}{k:04x}");
            let mac = format!("02:68:73:{a:02x}:{b:02x}:01");
            let made = run_ip(&[
                "link",
                "add",
                &link,
                "address",
                &mac,
                "type",
                "veth",
                "peer",
                "name",
                "upl",
                "netns",
                &self.switch,
            ]);
            match made {
                Ok(_) => {
                    self.uplink = link;
                    // The owner, for a later sweep should this process die before its Drop.
                    ip(&["link", "set", &self.uplink, "alias", &owner.alias(n)]);
                    return k;
                }
                Err(e) if e.contains("File exists") => continue,
                Err(e) => panic!("ip link add {link}: {e}"),
            }
        }
        panic!("no free subnet in 10.{FIRST_OCTET2}.0.0 – 10.255.255.0");
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`, from 0.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The test process's own address on the segment (root namespace): hosts reach it, and it
    /// reaches every host not partitioned.
    pub fn root_ip(&self) -> Ipv4Addr {
        self.root_ip
    }

    pub fn names(&self) -> LanNames {
        let mut namespaces = vec![self.switch.clone()];
        namespaces.extend(self.hosts.iter().map(|h| h.ns.clone()));
        LanNames {
            namespaces,
            links: vec![self.uplink.clone()],
            root_ip: self.root_ip,
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // A process left running in a host would keep that namespace alive after its name is
        // gone; only processes this Lan's tests started can be in there.
        for host in &self.hosts {
            for pid in host.pids() {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        // The uplink first and explicitly: a deleted namespace's links go away asynchronously,
        // and the root link and address must be gone when Drop returns.
        let mut failures = Vec::new();
        if !self.uplink.is_empty() {
            if let Err(e) = run_ip(&["link", "del", &self.uplink]) {
                failures.push(format!("link {}: {e}", self.uplink));
            }
        }
        for ns in self.hosts.iter().map(|h| &h.ns).chain([&self.switch]) {
            if let Err(e) = run_ip(&["netns", "del", ns]) {
                failures.push(format!("netns {ns}: {e}"));
            }
        }
        // Drop may run while a test unwinds: report, never panic (that would abort).
        if !failures.is_empty() {
            eprintln!("netns: cleanup incomplete: {}", failures.join("; "));
        }
    }
}

impl LanNames {
    /// Which of these names still exist (namespaces; links and the address in the root
    /// namespace): empty once the Lan is gone.
    pub fn remaining(&self) -> Vec<String> {
        let namespaces = namespace_names();
        let links = root_links();
        let mut left: Vec<String> = self
            .namespaces
            .iter()
            .filter(|n| namespaces.contains(n))
            .map(|n| format!("namespace {n}"))
            .collect();
        left.extend(
            self.links
                .iter()
                .filter(|l| links.iter().any(|(name, _)| name == *l))
                .map(|l| format!("link {l}")),
        );
        if root_ipv4_addresses().contains(&self.root_ip) {
            left.push(format!("address {}", self.root_ip));
        }
        left
    }
}

impl Host {
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The namespace's name (for `ip netns exec` by hand when debugging).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// `program` run inside this host: `ip netns exec <ns> <program>`. Add arguments, env and
    /// stdio as usual; the spawned child is `program` itself (ip execs it), so `Child::kill`
    /// kills the program.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Run `f` on a thread of this process inside this host's network namespace, and return
    /// what it returns (a panic in `f` is this call's panic). Sockets `f` opens, and threads
    /// it spawns (a blocking reqwest client's runtime), are on this host: build the client
    /// inside `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // setns(2) moves only the calling thread; the rest of the process stays put.
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Cut this host off the segment: every frame to or from it is dropped silently (no
    /// reset, no ICMP), as by a broken link between it and everyone else, the test process
    /// included. Connections stay open on both sides; what is sent meanwhile is retransmitted
    /// after [`Host::heal`].
    pub fn partition(&self) {
        self.set_port_state("disabled", "0");
    }

    /// Undo [`Host::partition`].
    pub fn heal(&self) {
        self.set_port_state("forwarding", "3");
    }

    /// Whether the host is partitioned (its bridge port's state, read back from the kernel).
    pub fn is_partitioned(&self) -> bool {
        self.port_state() == "disabled"
    }

    fn set_port_state(&self, name: &str, number: &str) {
        // `ip link set … type bridge_slave state N` exits 0 without changing the state with
        // the iproute2 we have; `bridge link set` does it. Read back to be sure.
        run(
            "bridge",
            &[
                "-n",
                &self.switch,
                "link",
                "set",
                "dev",
                &self.port,
                "state",
                number,
            ],
        )
        .unwrap_or_else(|e| panic!("bridge link set {} state {number}: {e}", self.port));
        let now = self.port_state();
        assert_eq!(now, name, "port {} of {} is {now}", self.port, self.switch);
    }

    fn port_state(&self) -> String {
        let out = run(
            "bridge",
            &["-n", &self.switch, "-j", "link", "show", "dev", &self.port],
        )
        .unwrap_or_else(|e| panic!("bridge link show {}: {e}", self.port));
        let ports: serde_json::Value = serde_json::from_str(&out).unwrap();
        ports[0]["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no port state in {out}"))
            .to_owned()
    }

    /// Pids of the processes running inside this host.
    pub fn pids(&self) -> Vec<i32> {
        run_ip(&["netns", "pids", &self.ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// The process that owns a namespace or link: pid and start time (clock ticks after boot, from
/// `/proc/<pid>/stat`), so that another process given the same pid later is not the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: process_start(pid).expect("/proc/self/stat"),
        }
    }

    /// `<pid>.<start>`, as in names.
    pub fn tag(&self) -> String {
        format!("{}.{}", self.pid, self.start)
    }

    fn alias(&self, n: u32) -> String {
        format!("{NS_PREFIX}{}-{n}", self.tag())
    }

    /// The owner named by a namespace name or an uplink's alias (`hsmt-<pid>.<start>-…`).
    pub fn of(name: &str) -> Option<Owner> {
        let tag = name.strip_prefix(NS_PREFIX)?.split('-').next()?;
        let (pid, start) = tag.split_once('.')?;
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    pub fn is_running(&self) -> bool {
        process_start(self.pid) == Some(self.start)
    }
}

/// Field 22 (starttime) of `/proc/<pid>/stat`; None when there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Remove the namespaces and uplinks of Lans whose owner is no longer running (a test process
/// killed before its Lan's Drop). Best effort: another process may be removing the same.
pub fn sweep_leftovers() {
    for (link, alias) in root_links() {
        if link.starts_with(LINK_PREFIX)
            && Owner::of(&alias).is_some_and(|owner| !owner.is_running())
        {
            let _ = run_ip(&["link", "del", &link]);
        }
    }
    for ns in namespace_names() {
        if Owner::of(&ns).is_some_and(|owner| !owner.is_running()) {
            let _ = run_ip(&["netns", "del", &ns]);
        }
    }
}

/// Every named network namespace.
pub fn namespace_names() -> Vec<String> {
    // Lines are `<name>` or `<name> (id: N)`.
    run_ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Every link of the root namespace, with its alias ("" if none).
pub fn root_links() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").into_iter().flatten() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let alias = std::fs::read_to_string(entry.path().join("ifalias")).unwrap_or_default();
        out.push((name, alias.trim().to_owned()));
    }
    out
}

/// The IPv4 addresses of the root namespace.
fn root_ipv4_addresses() -> Vec<Ipv4Addr> {
    // `ip -o -4 addr show` lines: `2: eth0    inet 192.0.2.2/24 brd … scope global eth0 …`.
    ip(&["-o", "-4", "addr", "show"])
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

fn permanent_neighbour(ns: Option<&str>, dev: &str, peer: Ipv4Addr, mac: &str) {
    let peer = peer.to_string();
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend([
        "neigh",
        "replace",
        &peer,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
    ip(&args);
}

/// `ip args…`, insisting on success; its stdout.
fn ip(args: &[&str]) -> String {
    run_ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
}

fn run_ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// `program args…`: stdout on success, else stderr (or why it could not start).
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} (iproute2 installed? running as root?): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
