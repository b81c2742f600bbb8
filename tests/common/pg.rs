//! A real PostgreSQL server for tests, no mocks: Debian's `postgresql` binaries
//! (`/usr/lib/postgresql/<version>/bin`, or `$PG_BIN_DIR`), a fresh cluster in a temporary
//! directory, listening only on 127.0.0.1 on a free port and on a Unix socket in that directory,
//! `fsync = on`, trust authentication. Stopped (`pg_ctl stop -m immediate`) on drop.
//!
//! PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
//! and its commands run through `runuser`; as anyone else, they run directly.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct PgServer {
    /// The database created at start.
    url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// `Some("postgres")` when we are root.
    run_as: Option<&'static str>,
    dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin`, unless `$PG_BIN_DIR` names one.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install Debian's \
                 `postgresql` package (scripts/install-deps.sh does), or set PG_BIN_DIR"
        )
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(
        out.status.success(),
        "no `{user}` system user (Debian's postgresql package creates it)"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl PgServer {
    /// Start a cluster and create one database in it ([`url`](Self::url)).
    pub fn start() -> PgServer {
        PgServer::start_with(None)
    }

    /// [`start`](Self::start), serving TLS (`ssl = on`) with `identity`'s certificate and key
    /// (plain connections stay allowed, for the harness's own).
    pub fn start_tls(identity: &super::tls::Identity) -> PgServer {
        PgServer::start_with(Some(identity))
    }

    fn start_with(tls: Option<&super::tls::Identity>) -> PgServer {
        let bin = bin_dir();
        let run_as = is_root().then_some("postgres");
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(id_of("-u", user)), Some(id_of("-g", user)))
                .unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.path().join("data");
        let mut server = PgServer {
            url: String::new(),
            port: 0,
            bin,
            data,
            run_as,
            dir,
        };
        // --no-sync: initdb skips its final fsync of the new cluster (a throwaway); the server
        // itself runs with fsync = on, so commits are durable as in production.
        server.pg(
            "initdb",
            &[
                "-D".as_ref(),
                server.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = on\n\
             synchronous_commit = on\nmax_connections = 200\n",
            server.dir.path().display()
        );
        let conf_path = server.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        if let Some(id) = tls {
            // The server reads its key only if it is private to the cluster's owner.
            for (name, pem) in [("server.crt", &id.cert_pem), ("server.key", &id.key_pem)] {
                let path = server.data.join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                if let Some(user) = run_as {
                    std::os::unix::fs::chown(
                        &path,
                        Some(id_of("-u", user)),
                        Some(id_of("-g", user)),
                    )
                    .unwrap();
                }
            }
            text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        // A port picked by binding port 0 may be taken again before the server binds it: retry.
        for attempt in 0.. {
            server.port = free_port();
            std::fs::write(&conf_path, format!("{text}port = {}\n", server.port)).unwrap();
            let log = server.dir.path().join("server.log");
            if server.try_pg(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    server.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "30".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                break;
            }
            assert!(
                attempt < 3,
                "PostgreSQL did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        server.url = server.create_database("test");
        server
    }

    /// The database created at start.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Create a fresh database (named after `prefix`, made unique); its URL (TCP, loopback).
    pub fn create_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The same database as `url` (`postgres://…/db`), reached through the Unix socket.
    pub fn socket_url(&self, url: &str) -> String {
        let db = url.rsplit('/').next().unwrap();
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    /// A superuser connection to the `postgres` database, for setting things up.
    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(
            &format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            postgres::NoTls,
        )
        .unwrap()
    }

    /// A superuser connection to the database at `url`.
    pub fn connect(&self, url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls).unwrap()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn try_pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> bool {
        self.command(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn pg(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.try_pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}
