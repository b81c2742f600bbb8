//! The PostgreSQL store, for several hsm-signer processes sharing one slashing-protection
//! database. Same schema and semantics as the SQLite store, in the `hsm_signer` schema of the
//! database named by the connection string (tables of other applications are never touched);
//! migrations are embedded and recorded in `hsm_signer.schema_version`. It owns the connection,
//! the SQL and the locking; the rules, group commit, import and export are its siblings'.
//!
//! Locking. Every batch transaction locks each validator it touches before reading that
//! validator's records: `SELECT … FOR UPDATE` on its `validators` row, in ascending pubkey order
//! (the callers sort), so two processes never hold locks the other waits for. A second process
//! wanting the same validator waits until the first one's transaction has committed, and then
//! reads what it committed.
//!
//! Round trips. A batch costs two however large it is, each one simple query of several
//! statements: BEGIN, one statement that locks all its validators (`id = ANY(…) ORDER BY pubkey
//! FOR UPDATE`) and one that reads what the rules need of each (watermarks, deletion mark,
//! lowest and highest records) — a statement of its own, since under READ COMMITTED each
//! statement reads from a snapshot taken when it starts, after the locks it waited for; then the
//! inserts of the records it decided (held back until the next read or the commit) and COMMIT.
//! Round trips, not statements, are what a batch waits for: on a busy host each one waits for the
//! server's process to be scheduled (`bench slashing` with two CPU-bound processes beside it: p99
//! 5 ms → 22 ms with five round trips a batch, 10 ms with two). The lock and the read are
//! statements prepared once per session (`PREPARE`, run by `EXECUTE` with the batch's validator
//! ids, known from earlier commits, written out as one array: a simple query cannot bind
//! parameters, and a statement planned afresh each batch cost the server more than the round
//! trips saved); the inserts carry their values written out. Both are formatted here from bytes
//! and numbers: nothing of a request is spliced in as text. A request that is not above
//! everything its validator recorded costs the lookups the rules need for it (prepared
//! statements). A batch with a key this process has not seen
//! committed yet registers and locks its keys one by one (`ON CONFLICT DO NOTHING`), in the same
//! order. The network's root and the validators' ids are remembered once committed (neither
//! ever changes); a key whose row is gone fails its batch and makes the next one register anew.
//!
//! Why READ COMMITTED with row locks, not SERIALIZABLE: under READ COMMITTED every statement
//! sees everything committed before it began, so once the lock is ours the reads that follow see
//! the previous holder's records. REPEATABLE READ or SERIALIZABLE would read from a snapshot
//! taken *before* the lock wait, would miss those records and would have to abort and retry the
//! whole batch (SQLSTATE 40001) — but a batch cannot be replayed from here, since the store runs
//! the caller's closure once. So the isolation level is set explicitly on every transaction,
//! whatever the server's default is. Lock waits are bounded (`lock_timeout`), and the only
//! outcome of a failure is a store error: nothing recorded, nothing signed.
//!
//! Durability: a commit returns only once its WAL is flushed; the store refuses a server with
//! `fsync = off` and turns `synchronous_commit = off` back on for its session.
//!
//! A lost connection (server restart, network) fails the transaction in flight (its callers
//! sign nothing); the next transaction reconnects.
//!
//! Reaching the server (see [`pg_tls`](super::pg_tls)): TLS with rustls, required with a
//! verified certificate for any host but this machine; TCP keepalives and a TCP user timeout, so
//! that a half-open connection fails the transaction in flight within about half a minute
//! instead of stalling the writer (and every block and attestation behind it) for the kernel's
//! two hours; and on every session a `statement_timeout`, so that a statement stuck on a lock or
//! a sick server fails in seconds.

use std::collections::HashMap;
use std::time::Duration;

use postgres::config::Host;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, SimpleQueryMessage, SimpleQueryRow, Statement};
use zeroize::Zeroizing;

use super::pg_tls::{self, Transport};
use super::service::{Options, SlashingProtection};
use super::store::{
    AttestationRecord, BlockRecord, Footprint, SlashingStore, StoreTxn, ValidatorId,
    ValidatorState, Watermarks,
};
use super::{hex_root, Pubkey, Refusal, Root, SlashingError};

/// Schema migrations, in the `hsm_signer` schema; `schema_version` holds how many are applied.
/// Append, never edit.
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE IF NOT EXISTS hsm_signer.metadata (
        key TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE IF NOT EXISTS hsm_signer.validators (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        pubkey BYTEA NOT NULL UNIQUE CHECK (octet_length(pubkey) = 48),
        wm_block_slot BIGINT CHECK (wm_block_slot >= 0),
        wm_attestation_source BIGINT CHECK (wm_attestation_source >= 0),
        wm_attestation_target BIGINT CHECK (wm_attestation_target >= 0)
    );
    CREATE TABLE IF NOT EXISTS hsm_signer.signed_blocks (
        validator_id BIGINT NOT NULL REFERENCES hsm_signer.validators (id),
        slot BIGINT NOT NULL CHECK (slot >= 0),
        signing_root BYTEA CHECK (signing_root IS NULL OR octet_length(signing_root) = 32),
        PRIMARY KEY (validator_id, slot)
    );
    CREATE TABLE IF NOT EXISTS hsm_signer.signed_attestations (
        validator_id BIGINT NOT NULL REFERENCES hsm_signer.validators (id),
        target_epoch BIGINT NOT NULL CHECK (target_epoch >= 0),
        source_epoch BIGINT NOT NULL CHECK (source_epoch >= 0),
        signing_root BYTEA CHECK (signing_root IS NULL OR octet_length(signing_root) = 32),
        PRIMARY KEY (validator_id, target_epoch)
    );
    CREATE INDEX IF NOT EXISTS signed_attestations_by_source
        ON hsm_signer.signed_attestations (validator_id, source_epoch, target_epoch);",
    // v2: keys deleted through the Keymanager API (a tombstone outlives a restored key file).
    "CREATE TABLE IF NOT EXISTS hsm_signer.deleted_keys (
        pubkey BYTEA PRIMARY KEY CHECK (octet_length(pubkey) = 48),
        deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );",
];

/// Advisory lock serialising migrations of processes starting together ("hsms").
const MIGRATION_LOCK: i64 = 0x6873_6d73;

const GVR_KEY: &str = "genesis_validators_root";

/// How long one statement may run, lock waits included, before the server cancels it (the
/// batch fails: 503, nothing recorded). Below the request path's bound
/// ([`Options::wait`](super::Options::wait)), so a stuck statement is reported as itself.
const STATEMENT_TIMEOUT: &str = "4s";
/// How long a transaction waits for another process's row lock before failing (503).
const LOCK_TIMEOUT: &str = "4s";
/// A session stuck inside a transaction (its process frozen) loses it, and its locks, after this:
/// other instances wait that long for the validators it holds.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";
/// Unless the connection string says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive probes after this much silence, every `KEEPALIVE_INTERVAL`, `KEEPALIVE_RETRIES`
/// times: a dead peer is noticed in about 30 s (the kernel default is over two hours).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent and unacknowledged this long closes the connection (keepalives cover silence).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// The `postgres` crate's keepalive idle time when the string does not set one.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// The PostgreSQL store. See the module doc.
pub(crate) struct PostgresStore {
    config: Config,
    transport: Transport,
    /// `host:port/dbname`, never the password: for messages.
    target: String,
    conn: Option<Connection>,
    memo: Memo,
}

/// What the store learns that outlives a connection: committed facts that never change.
#[derive(Default)]
struct Memo {
    /// Statements sent, each one round trip (the benchmark's profile).
    round_trips: u64,
    /// Validators' ids by key, as committed (a row is never deleted nor its id changed): a batch
    /// whose keys are all here locks them in one statement.
    known: HashMap<Pubkey, ValidatorId>,
    /// The network, once committed (it is recorded once and never changes).
    gvr: Option<Root>,
}

struct Connection {
    client: Client,
    st: Statements,
}

fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

trait Db<T> {
    fn db(self) -> Result<T, SlashingError>;
}

impl<T> Db<T> for Result<T, postgres::Error> {
    fn db(self) -> Result<T, SlashingError> {
        self.map_err(|e| SlashingError::Store(format!("postgresql: {}", describe(&e))))
    }
}

fn int(v: u64) -> Result<i64, SlashingError> {
    i64::try_from(v)
        .map_err(|_| SlashingError::Store(format!("value {v} does not fit the database")))
}

fn uint(v: i64) -> Result<u64, SlashingError> {
    u64::try_from(v)
        .map_err(|_| SlashingError::Store(format!("corrupt database: negative value {v}")))
}

fn opt_uint(v: Option<i64>) -> Result<Option<u64>, SlashingError> {
    v.map(uint).transpose()
}

fn root_col(bytes: Option<Vec<u8>>) -> Result<Option<Root>, SlashingError> {
    bytes
        .map(|b| {
            Root::try_from(b.as_slice()).map_err(|_| {
                SlashingError::Store(format!("corrupt database: a root of {} bytes", b.len()))
            })
        })
        .transpose()
}

/// Column `i` of `row`, typed; a mismatch is a store error, never a panic.
fn col<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Result<T, SlashingError> {
    row.try_get(i).db()
}

/// `host:port/dbname` of a configuration, for messages (no user, no password).
fn describe_target(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or("(default)"))
}

impl PostgresStore {
    /// Connect to the database named by `url` (`postgres://user@host:port/db`, or the
    /// `key=value` form; `host=/dir` for a Unix socket), create or migrate the schema, and check
    /// the network as [`SqliteStore::open`](super::SqliteStore::open) does: `gvr` is recorded on
    /// first use, and a database recorded for another network is refused.
    ///
    /// Blocking: call it from a plain thread, not from inside an async runtime.
    pub fn open(url: &str, gvr: Option<Root>) -> Result<Self, SlashingError> {
        let (config, params) = parse_url(url)?;
        Self::open_config(config, &params, gvr)
    }

    /// [`open`](Self::open) with a parsed configuration and its TLS parameters.
    pub(crate) fn open_config(
        mut config: Config,
        params: &pg_tls::TlsParams,
        gvr: Option<Root>,
    ) -> Result<Self, SlashingError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hsm-signer");
        }
        if !config.get_keepalives() {
            tracing::warn!(
                "slashing protection database: keepalives=0 in the connection string: a dead \
                 connection may stall signing until the kernel gives up on it"
            );
        }
        if config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let target = describe_target(&config);
        let transport = pg_tls::decide(&config, params)
            .and_then(|mode| pg_tls::transport(&mut config, mode, params.root_cert.as_deref()))
            .map_err(|e| SlashingError::Store(format!("postgresql {target}: {e}")))?;
        let mut client = connect(&config, &transport, &target)?;
        migrate(&mut client).map_err(|e| at(&target, e))?;
        let st = Statements::prepare(&mut client).map_err(|e| at(&target, e))?;
        let mut store = PostgresStore {
            config,
            transport,
            target,
            conn: Some(Connection { client, st }),
            memo: Memo::default(),
        };
        store.transaction(|tx| match (tx.genesis_validators_root()?, gvr) {
            (Some(stored), Some(given)) if stored != given => Err(SlashingError::Refused(
                Refusal::GenesisValidatorsRootMismatch {
                    expected: stored,
                    got: given,
                },
            )),
            (None, Some(given)) => tx.set_genesis_validators_root(&given),
            _ => Ok(()),
        })?;
        Ok(store)
    }

    /// The connection, re-established if it was lost.
    fn connection(&mut self) -> Result<&mut Connection, SlashingError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            tracing::warn!(
                "slashing protection: lost the connection to {}; reconnecting",
                self.target
            );
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut client = connect(&self.config, &self.transport, &self.target)?;
            let st = Statements::prepare(&mut client).map_err(|e| at(&self.target, e))?;
            self.conn = Some(Connection { client, st });
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SlashingError::Store("no database connection".into()))
    }
}

fn at(target: &str, e: SlashingError) -> SlashingError {
    match e {
        SlashingError::Store(m) => SlashingError::Store(format!("{target}: {m}")),
        other => other,
    }
}

/// Parse a connection string: the `postgres` crate's part and the TLS parameters it leaves to
/// us. Messages never quote the string (it may hold a password).
fn parse_url(url: &str) -> Result<(Config, pg_tls::TlsParams), SlashingError> {
    let invalid = |e: String| {
        SlashingError::Store(format!(
            "the PostgreSQL connection string is not valid: {e}"
        ))
    };
    let (rest, params): (Zeroizing<String>, _) = pg_tls::split_tls_params(url).map_err(invalid)?;
    let config = rest
        .parse()
        .map_err(|e: postgres::Error| invalid(describe(&e)))?;
    Ok((config, params))
}

/// Whether the connection string `url` carries a password (one that does not parse is taken to,
/// to be safe).
pub(crate) fn connection_string_has_password(url: &str) -> bool {
    parse_url(url).map_or(true, |(config, _)| config.get_password().is_some())
}

/// Open a session (over TLS when `transport` says so).
fn open_session(config: &Config, transport: &Transport) -> Result<Client, postgres::Error> {
    match transport {
        Transport::Plain => config.connect(NoTls),
        Transport::Tls(tls) => config.connect(tls.clone()),
    }
}

/// Open a session and make it safe: durable commits, bounded statements and lock waits.
fn connect(config: &Config, transport: &Transport, target: &str) -> Result<Client, SlashingError> {
    let mut client = open_session(config, transport).map_err(|e| {
        let mut m = format!("postgresql {target}: cannot connect: {}", describe(&e));
        if m.contains("invalid peer certificate") {
            m.push_str(
                " (the server's certificate does not verify against sslrootcert for this host)",
            );
        }
        SlashingError::Store(m)
    })?;
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .db()
        .map_err(|e| at(target, e))?;
    let fsync: String = col(&row, 0)?;
    let synchronous_commit: String = col(&row, 1)?;
    if fsync != "on" {
        return Err(SlashingError::Store(format!(
            "postgresql {target}: the server runs with fsync = {fsync}, so a commit is not \
             durable; slashing protection needs fsync = on"
        )));
    }
    let mut session = format!(
        "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET lock_timeout = '{LOCK_TIMEOUT}'; \
         SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}';"
    );
    if synchronous_commit == "off" {
        session.push_str(" SET synchronous_commit = on;");
    }
    client
        .batch_execute(&session)
        .db()
        .map_err(|e| at(target, e))?;
    Ok(client)
}

/// Create or upgrade the schema, once per open, serialised across processes.
fn migrate(client: &mut Client) -> Result<(), SlashingError> {
    let mut tx = client.transaction().db()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .db()?;
    let row = tx
        .query_one(
            "SELECT to_regnamespace('hsm_signer') IS NOT NULL,
                    to_regclass('hsm_signer.schema_version') IS NOT NULL,
                    (SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = 'hsm_signer')",
            &[],
        )
        .db()?;
    let (schema, versioned, tables): (bool, bool, i64) =
        (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
    if !versioned && tables > 0 {
        return Err(SlashingError::Store(
            "the schema hsm_signer holds tables, but not an hsm-signer slashing-protection \
             database"
                .into(),
        ));
    }
    if !schema {
        tx.batch_execute("CREATE SCHEMA IF NOT EXISTS hsm_signer")
            .db()?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hsm_signer.schema_version (version INTEGER NOT NULL)",
    )
    .db()?;
    let row = tx
        .query_one("SELECT MAX(version) FROM hsm_signer.schema_version", &[])
        .db()?;
    let version: i32 = col::<Option<i32>>(&row, 0)?.unwrap_or(0);
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > known {
        return Err(SlashingError::Store(format!(
            "the database has schema version {version}, newer than this hsm-signer knows \
             ({known}); upgrade hsm-signer"
        )));
    }
    if applied < known {
        for sql in &MIGRATIONS[applied..] {
            tx.batch_execute(sql).db()?;
        }
        let known =
            i32::try_from(known).map_err(|_| SlashingError::Store("too many migrations".into()))?;
        tx.execute("DELETE FROM hsm_signer.schema_version", &[])
            .db()?;
        tx.execute(
            "INSERT INTO hsm_signer.schema_version (version) VALUES ($1)",
            &[&known],
        )
        .db()?;
    }
    tx.commit().db()
}

impl SlashingStore for PostgresStore {
    fn transaction<R>(
        &mut self,
        mut f: impl FnMut(&mut dyn StoreTxn) -> Result<R, SlashingError>,
    ) -> Result<R, SlashingError> {
        // A connection that died while idle is noticed only when used: if the transaction's
        // first round trip (which opens it, so cannot have committed anything) fails that way,
        // reconnect and run it again, once.
        for attempt in 0..2 {
            self.connection()?;
            let (Some(conn), memo) = (self.conn.as_mut(), &mut self.memo) else {
                break;
            };
            let mut txn = PgTxn {
                client: &mut conn.client,
                st: &conn.st,
                memo: &mut *memo,
                begun: false,
                finished: false,
                trips: 0,
                committing: false,
                learned: Vec::new(),
                gvr: None,
                blocks: Vec::new(),
                attestations: Vec::new(),
            };
            // With fsync on and synchronous_commit not off, COMMIT returns once the WAL is
            // flushed. If it fails (or its outcome is unknown), the caller signs nothing, and
            // nothing of it is remembered. On any error the transaction is rolled back (also
            // when `f` panics: `PgTxn`'s drop).
            let result = f(&mut txn).and_then(|r| txn.commit().map(|()| r));
            let first_trip_lost =
                result.is_err() && txn.trips <= 1 && !txn.committing && txn.client.is_closed();
            let (learned, gvr) = (std::mem::take(&mut txn.learned), txn.gvr);
            drop(txn);
            match result {
                Ok(r) => {
                    memo.known.extend(learned);
                    memo.gvr = memo.gvr.or(gvr);
                    return Ok(r);
                }
                Err(e) if !first_trip_lost || attempt > 0 => return Err(e),
                Err(_) => {}
            }
        }
        Err(SlashingError::Store(format!(
            "postgresql {}: the connection was lost and could not be re-established",
            self.target
        )))
    }

    fn round_trips(&self) -> u64 {
        self.memo.round_trips
    }

    fn footprint(&mut self) -> Result<Footprint, SlashingError> {
        let conn = self.connection()?;
        let row = conn
            .client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM hsm_signer.validators),
                        (SELECT COUNT(*) FROM hsm_signer.signed_blocks),
                        (SELECT COUNT(*) FROM hsm_signer.signed_attestations),
                        (SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
                         FROM pg_catalog.pg_class c
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'hsm_signer' AND c.relkind = 'r')",
                &[],
            )
            .db()?;
        Ok(Footprint {
            validators: uint(col(&row, 0)?)?,
            blocks: uint(col(&row, 1)?)?,
            attestations: uint(col(&row, 2)?)?,
            bytes: uint(col(&row, 3)?)?,
        })
    }
}

/// What the rules need of each validator of a batch (`ValidatorState::from_columns`' order,
/// after its id), from `hsm_signer.validators v`; the caller adds which validators. Read in a
/// statement of its own after the locks: it sees what their previous holders committed. Each
/// minimum and maximum is one index seek.
macro_rules! states_select {
    () => {
        "SELECT v.id, v.wm_block_slot, v.wm_attestation_source, v.wm_attestation_target,
         (EXISTS (SELECT 1 FROM hsm_signer.deleted_keys d WHERE d.pubkey = v.pubkey))::INT::BIGINT,
         (SELECT MIN(slot) FROM hsm_signer.signed_blocks WHERE validator_id = v.id),
         (SELECT MAX(slot) FROM hsm_signer.signed_blocks WHERE validator_id = v.id),
         (SELECT MIN(source_epoch) FROM hsm_signer.signed_attestations WHERE validator_id = v.id),
         (SELECT MIN(target_epoch) FROM hsm_signer.signed_attestations WHERE validator_id = v.id),
         (SELECT MAX(source_epoch) FROM hsm_signer.signed_attestations WHERE validator_id = v.id),
         (SELECT MAX(target_epoch) FROM hsm_signer.signed_attestations WHERE validator_id = v.id)
         FROM hsm_signer.validators v"
    };
}

/// A signing root as an SQL literal.
fn root_literal(root: &Option<Root>) -> String {
    match root {
        Some(r) => format!("decode('{}','hex')", hex::encode(r)),
        None => "NULL".into(),
    }
}

/// `INSERT …;` of the records held back, their values written out (numbers and hex formatted
/// here, nothing else), appended to `sql`.
fn held_back_sql(
    sql: &mut String,
    blocks: &[(ValidatorId, i64, Option<Root>)],
    attestations: &[(ValidatorId, i64, i64, Option<Root>)],
) {
    use std::fmt::Write;
    if !blocks.is_empty() {
        sql.push_str(
            "INSERT INTO hsm_signer.signed_blocks (validator_id, slot, signing_root) VALUES ",
        );
        for (i, (v, slot, root)) in blocks.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(sql, "{sep}({v},{slot},{})", root_literal(root));
        }
        sql.push(';');
    }
    if !attestations.is_empty() {
        sql.push_str(
            "INSERT INTO hsm_signer.signed_attestations \
             (validator_id, target_epoch, source_epoch, signing_root) VALUES ",
        );
        for (i, (v, target, source, root)) in attestations.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(sql, "{sep}({v},{target},{source},{})", root_literal(root));
        }
        sql.push(';');
    }
}

/// A nullable BIGINT of a text-format row.
fn text_int(row: &SimpleQueryRow, i: usize) -> Result<Option<i64>, SlashingError> {
    match row.try_get(i).db()? {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| SlashingError::Store(format!("not an integer from the database: {t:?}"))),
    }
}

/// Every statement, prepared once per connection (one round trip per use, not two).
struct Statements {
    gvr: Statement,
    insert_gvr: Statement,
    lock_validator: Statement,
    insert_validator: Statement,
    find_validator: Statement,
    validators: Statement,
    watermarks: Statement,
    set_watermarks: Statement,
    block_at: Statement,
    min_block_slot: Statement,
    max_block_slot: Statement,
    blocks: Statement,
    attestation_at_target: Statement,
    min_attestation_epochs: Statement,
    max_attestation_epochs: Statement,
    states: Statement,
    surrounded_by: Statement,
    surrounding: Statement,
    attestations: Statement,
    prune_many: Statement,
    is_deleted: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Self, SlashingError> {
        // Run by name inside a simple query of several statements (`PgTxn::lock_known`), with
        // the batch's validator ids written out as an array.
        client
            .batch_execute(concat!(
                "PREPARE hsm_signer_lock (BIGINT[]) AS SELECT id, encode(pubkey, 'hex')
                 FROM hsm_signer.validators WHERE id = ANY($1) ORDER BY pubkey FOR UPDATE;
                 PREPARE hsm_signer_states (BIGINT[]) AS ",
                states_select!(),
                " WHERE v.id = ANY($1)"
            ))
            .db()?;
        let mut p = |sql: &str| client.prepare(sql).db();
        Ok(Statements {
            gvr: p("SELECT value FROM hsm_signer.metadata WHERE key = $1")?,
            insert_gvr: p(
                "INSERT INTO hsm_signer.metadata (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
            )?,
            lock_validator: p("SELECT id FROM hsm_signer.validators WHERE pubkey = $1 FOR UPDATE")?,
            insert_validator: p("INSERT INTO hsm_signer.validators (pubkey) VALUES ($1)
                 ON CONFLICT (pubkey) DO NOTHING RETURNING id")?,
            find_validator: p("SELECT id FROM hsm_signer.validators WHERE pubkey = $1")?,
            validators: p("SELECT id, pubkey FROM hsm_signer.validators ORDER BY id")?,
            watermarks: p(
                "SELECT wm_block_slot, wm_attestation_source, wm_attestation_target
                 FROM hsm_signer.validators WHERE id = $1",
            )?,
            set_watermarks: p("UPDATE hsm_signer.validators SET wm_block_slot = $2,
                 wm_attestation_source = $3, wm_attestation_target = $4 WHERE id = $1")?,
            block_at: p("SELECT signing_root FROM hsm_signer.signed_blocks
                 WHERE validator_id = $1 AND slot = $2")?,
            min_block_slot: p(
                "SELECT MIN(slot) FROM hsm_signer.signed_blocks WHERE validator_id = $1",
            )?,
            max_block_slot: p(
                "SELECT MAX(slot) FROM hsm_signer.signed_blocks WHERE validator_id = $1",
            )?,
            blocks: p("SELECT slot, signing_root FROM hsm_signer.signed_blocks
                 WHERE validator_id = $1 ORDER BY slot")?,
            attestation_at_target: p(
                "SELECT source_epoch, signing_root FROM hsm_signer.signed_attestations
                 WHERE validator_id = $1 AND target_epoch = $2",
            )?,
            min_attestation_epochs: p("SELECT
                 (SELECT MIN(source_epoch) FROM hsm_signer.signed_attestations
                  WHERE validator_id = $1),
                 (SELECT MIN(target_epoch) FROM hsm_signer.signed_attestations
                  WHERE validator_id = $1)")?,
            max_attestation_epochs: p("SELECT
                 (SELECT MAX(source_epoch) FROM hsm_signer.signed_attestations
                  WHERE validator_id = $1),
                 (SELECT MAX(target_epoch) FROM hsm_signer.signed_attestations
                  WHERE validator_id = $1)")?,
            // After keys locked one by one (some were new); see `states_select!`.
            states: p(concat!(states_select!(), " WHERE v.id = ANY($1)"))?,
            // Each range-scans an index from the new attestation's epoch upwards, which in
            // honest operation (epochs only rise) finds nothing after one seek.
            surrounded_by: p("SELECT source_epoch, target_epoch, signing_root
                 FROM hsm_signer.signed_attestations
                 WHERE validator_id = $1 AND source_epoch > $2 AND target_epoch < $3 LIMIT 1")?,
            surrounding: p("SELECT source_epoch, target_epoch, signing_root
                 FROM hsm_signer.signed_attestations
                 WHERE validator_id = $1 AND target_epoch > $3 AND source_epoch < $2 LIMIT 1")?,
            attestations: p("SELECT source_epoch, target_epoch, signing_root
                 FROM hsm_signer.signed_attestations WHERE validator_id = $1
                 ORDER BY target_epoch")?,
            // `StoreTxn::prune_many`: many validators in one round trip. A validator another
            // transaction holds is skipped (`SKIP LOCKED`; the next pass takes it): pruning
            // locks in id order and checks in pubkey order, and a skip never waits, so never
            // deadlocks with another instance's batch. A validator's bounds are its newest
            // values less $2 slots and $3 epochs (negative or NULL: nothing goes); the
            // watermarks rise to the highest values deleted (GREATEST ignores NULL, as
            // `Watermarks::raise` does; a data-modifying CTE runs whether or not the query
            // reads it). Every part reads the statement's snapshot, taken before the locks: a
            // record committed by another instance in between is neither deleted nor counted
            // in the newest value, which only keeps more.
            prune_many: p("WITH locked AS (
                     SELECT id FROM hsm_signer.validators WHERE id = ANY($1)
                     ORDER BY id FOR UPDATE SKIP LOCKED),
                 bounds AS (
                     SELECT l.id,
                         (SELECT MAX(slot) FROM hsm_signer.signed_blocks
                          WHERE validator_id = l.id) - $2 AS below_slot,
                         (SELECT MAX(target_epoch) FROM hsm_signer.signed_attestations
                          WHERE validator_id = l.id) - $3 AS below_target
                     FROM locked l),
                 gone_blocks AS (
                     DELETE FROM hsm_signer.signed_blocks WHERE ctid = ANY (ARRAY(
                         SELECT x.ctid FROM bounds b CROSS JOIN LATERAL (
                             SELECT s.ctid FROM hsm_signer.signed_blocks s
                             WHERE s.validator_id = b.id AND s.slot < b.below_slot
                             OFFSET 0) x))
                     RETURNING validator_id, slot),
                 gone_attestations AS (
                     DELETE FROM hsm_signer.signed_attestations WHERE ctid = ANY (ARRAY(
                         SELECT x.ctid FROM bounds b CROSS JOIN LATERAL (
                             SELECT s.ctid FROM hsm_signer.signed_attestations s
                             WHERE s.validator_id = b.id AND s.target_epoch < b.below_target
                             OFFSET 0) x))
                     RETURNING validator_id, source_epoch, target_epoch),
                 mb AS (SELECT validator_id, COUNT(*) AS n, MAX(slot) AS slot
                     FROM gone_blocks GROUP BY validator_id),
                 ma AS (SELECT validator_id, COUNT(*) AS n, MAX(source_epoch) AS source,
                         MAX(target_epoch) AS target
                     FROM gone_attestations GROUP BY validator_id),
                 raised AS (
                     UPDATE hsm_signer.validators v SET
                         wm_block_slot = GREATEST(v.wm_block_slot, mb.slot),
                         wm_attestation_source = GREATEST(v.wm_attestation_source, ma.source),
                         wm_attestation_target = GREATEST(v.wm_attestation_target, ma.target)
                     FROM locked l
                         LEFT JOIN mb ON mb.validator_id = l.id
                         LEFT JOIN ma ON ma.validator_id = l.id
                     WHERE v.id = ANY($1) AND v.id = l.id
                         AND (mb.n IS NOT NULL OR ma.n IS NOT NULL))
                 SELECT (COALESCE((SELECT SUM(n) FROM mb), 0)
                         + COALESCE((SELECT SUM(n) FROM ma), 0))::BIGINT,
                     (SELECT COUNT(*) FROM locked)::BIGINT")?,
            // On every check: the deletion mark of another instance, read under the row lock.
            is_deleted: p(
                "SELECT EXISTS (SELECT 1 FROM hsm_signer.deleted_keys WHERE pubkey = $1)",
            )?,
        })
    }
}

/// One transaction on the connection. It is opened lazily, by its first statement (BEGIN in the
/// same round trip when that statement is a batch's bulk lock), and its records are inserted in
/// the round trip that commits: a batch of checks costs two round trips. Dropped unfinished
/// (an error, a panic), it rolls back.
struct PgTxn<'a> {
    client: &'a mut Client,
    st: &'a Statements,
    memo: &'a mut Memo,
    /// BEGIN has been sent.
    begun: bool,
    /// COMMIT or ROLLBACK has been sent.
    finished: bool,
    /// Round trips of this transaction so far.
    trips: u32,
    /// COMMIT was sent (whatever came back): a failure from here on may have committed.
    committing: bool,
    /// Ids seen in this transaction, remembered once it committed.
    learned: Vec<(Pubkey, ValidatorId)>,
    /// The network read or recorded in this transaction, remembered once it committed.
    gvr: Option<Root>,
    /// Records held back until the next statement or the commit, then inserted in one round
    /// trip (with the commit, or before a read).
    blocks: Vec<(ValidatorId, i64, Option<Root>)>,
    attestations: Vec<(ValidatorId, i64, i64, Option<Root>)>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Opens every transaction: READ COMMITTED whatever the server's default (see the module doc).
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// [`BEGIN`] before more statements of one simple query.
const BEGIN_THEN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED;";

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if self.begun && !self.finished && !self.client.is_closed() {
            // Nothing of it may reach the next transaction on this connection.
            if let Err(e) = self.client.batch_execute("ROLLBACK") {
                tracing::warn!("slashing protection: rollback failed: {}", describe(&e));
            }
        }
    }
}

impl PgTxn<'_> {
    /// Count a round trip.
    fn trip(&mut self) {
        self.trips += 1;
        self.memo.round_trips += 1;
    }

    /// Commit: the records held back are inserted in the same round trip. Nothing to commit if
    /// no statement was sent.
    fn commit(&mut self) -> Result<(), SlashingError> {
        if !self.begun && self.blocks.is_empty() && self.attestations.is_empty() {
            self.finished = true;
            return Ok(());
        }
        let mut sql = String::new();
        if !self.begun {
            sql.push_str(BEGIN);
            sql.push(';');
        }
        self.begun = true;
        held_back_sql(&mut sql, &self.blocks, &self.attestations);
        sql.push_str("COMMIT");
        self.trip();
        self.committing = true;
        self.client.batch_execute(&sql).db()?;
        self.finished = true;
        self.blocks.clear();
        self.attestations.clear();
        Ok(())
    }

    /// [`StoreTxn::lock_validators`] when every key is registered: one round trip (BEGIN, if the
    /// transaction is not open yet; one statement locking them all in pubkey order; one reading
    /// their states), sent as one simple query.
    fn lock_known(&mut self, pubkeys: &[Pubkey]) -> Result<Vec<ValidatorState>, SlashingError> {
        self.flush()?;
        // Known keys' ids are committed facts (a row is never deleted nor its id changed); the
        // lock statement still returns each row's key, checked below against the batch's.
        let ids = pubkeys
            .iter()
            .map(|pk| {
                self.memo.known.get(pk).map(i64::to_string).ok_or_else(|| {
                    SlashingError::Store("a key of the batch is not registered".into())
                })
            })
            .collect::<Result<Vec<String>, _>>()?
            .join(",");
        let opening = !self.begun;
        let sql = format!(
            "{}EXECUTE hsm_signer_lock('{{{ids}}}');EXECUTE hsm_signer_states('{{{ids}}}')",
            if opening { BEGIN_THEN } else { "" },
        );
        self.trip();
        self.begun = true;
        // Each statement's rows, in order (BEGIN's none).
        let mut results: Vec<Vec<SimpleQueryRow>> = vec![Vec::new()];
        for message in self.client.simple_query(&sql).db()? {
            match message {
                SimpleQueryMessage::Row(row) => {
                    if let Some(rows) = results.last_mut() {
                        rows.push(row);
                    }
                }
                SimpleQueryMessage::CommandComplete(_) => results.push(Vec::new()),
                _ => {}
            }
        }
        let first = usize::from(opening);
        let (Some(locked), Some(states)) = (results.get(first), results.get(first + 1)) else {
            return Err(SlashingError::Store(
                "the database answered the batch's lock with too few results".into(),
            ));
        };
        let mut ids = Vec::with_capacity(pubkeys.len());
        for (row, pk) in locked.iter().zip(pubkeys) {
            match (text_int(row, 0)?, row.try_get(1).db()?) {
                (Some(id), Some(found)) if found == hex::encode(pk) => ids.push(id),
                _ => {
                    ids.clear();
                    break;
                }
            }
        }
        if ids.len() != pubkeys.len() || locked.len() != pubkeys.len() {
            // Rows do not vanish unless the database was replaced under us: forget what we knew,
            // so that the next batch registers its keys afresh; this one fails.
            self.memo.known.clear();
            return Err(SlashingError::Store(
                "validators this signer knew are no longer in the database".into(),
            ));
        }
        self.learned
            .extend(pubkeys.iter().copied().zip(ids.iter().copied()));
        let mut rows: HashMap<ValidatorId, [Option<i64>; 10]> = HashMap::new();
        for row in states {
            let mut c = [None; 10];
            for (i, v) in c.iter_mut().enumerate() {
                *v = text_int(row, i + 1)?;
            }
            let id = text_int(row, 0)?
                .ok_or_else(|| SlashingError::Store("a validator without an id".into()))?;
            rows.insert(id, c);
        }
        states_of(&ids, &rows)
    }

    /// Lock `pubkey`'s row, inserting it first if it is new.
    fn lock_one(&mut self, pubkey: &Pubkey) -> Result<ValidatorId, SlashingError> {
        let pk: &[u8] = &pubkey[..];
        let (lock, insert) = (&self.st.lock_validator, &self.st.insert_validator);
        if let Some(row) = self.opt(lock, &[&pk])? {
            return col(&row, 0);
        }
        // New: our inserted row is ours until commit. If another process inserted it first, the
        // insert waited for that commit and did nothing; then the row is there to lock.
        if let Some(row) = self.opt(insert, &[&pk])? {
            return col(&row, 0);
        }
        match self.opt(lock, &[&pk])? {
            Some(row) => col(&row, 0),
            None => Err(SlashingError::Store(
                "a validator row vanished while being locked".into(),
            )),
        }
    }

    /// Insert the records held back, so that what follows sees them.
    fn flush(&mut self) -> Result<(), SlashingError> {
        if self.blocks.is_empty() && self.attestations.is_empty() {
            return Ok(());
        }
        self.begin()?;
        let mut sql = String::new();
        held_back_sql(&mut sql, &self.blocks, &self.attestations);
        self.trip();
        self.client.batch_execute(&sql).db()?;
        self.blocks.clear();
        self.attestations.clear();
        Ok(())
    }

    /// Open the transaction, if no statement has yet: a round trip of its own.
    fn begin(&mut self) -> Result<(), SlashingError> {
        if !self.begun {
            self.trip();
            self.begun = true;
            self.client.batch_execute(BEGIN).db()?;
        }
        Ok(())
    }

    /// Before any statement: the transaction is open, what was held back goes first, and the
    /// trip is counted.
    fn before_statement(&mut self) -> Result<(), SlashingError> {
        self.begin()?;
        self.flush()?;
        self.trip();
        Ok(())
    }

    fn opt(&mut self, st: &Statement, params: Params<'_>) -> Result<Option<Row>, SlashingError> {
        self.before_statement()?;
        self.client.query_opt(st, params).db()
    }

    fn one(&mut self, st: &Statement, params: Params<'_>) -> Result<Row, SlashingError> {
        self.before_statement()?;
        self.client.query_one(st, params).db()
    }

    fn all(&mut self, st: &Statement, params: Params<'_>) -> Result<Vec<Row>, SlashingError> {
        self.before_statement()?;
        self.client.query(st, params).db()
    }

    fn exec(&mut self, st: &Statement, params: Params<'_>) -> Result<u64, SlashingError> {
        self.before_statement()?;
        self.client.execute(st, params).db()
    }

    fn batch(&mut self, sql: &str) -> Result<(), SlashingError> {
        self.before_statement()?;
        self.client.batch_execute(sql).db()
    }

    /// One nullable BIGINT from a single-row query.
    fn scalar(&mut self, st: &Statement, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        let row = self.one(st, &[&v])?;
        opt_uint(col(&row, 0)?)
    }

    fn att_query(
        &mut self,
        st: &Statement,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let (source, target) = (int(source)?, int(target)?);
        self.opt(st, &[&v, &source, &target])?
            .map(|row| attestation_row(&row))
            .transpose()
    }
}

/// The states of `ids`, in order, from the rows read by id.
fn states_of(
    ids: &[ValidatorId],
    rows: &HashMap<ValidatorId, [Option<i64>; 10]>,
) -> Result<Vec<ValidatorState>, SlashingError> {
    ids.iter()
        .map(|id| match rows.get(id) {
            Some(c) => ValidatorState::from_columns(*id, c),
            None => Err(SlashingError::Store(
                "a locked validator's row is missing".into(),
            )),
        })
        .collect()
}

/// (source_epoch, target_epoch, signing_root).
fn attestation_row(row: &Row) -> Result<AttestationRecord, SlashingError> {
    Ok(AttestationRecord {
        source_epoch: uint(col(row, 0)?)?,
        target_epoch: uint(col(row, 1)?)?,
        signing_root: root_col(col(row, 2)?)?,
    })
}

impl StoreTxn for PgTxn<'_> {
    fn genesis_validators_root(&mut self) -> Result<Option<Root>, SlashingError> {
        if let Some(gvr) = self.memo.gvr.or(self.gvr) {
            return Ok(Some(gvr));
        }
        let st = &self.st.gvr;
        let gvr = match self.opt(st, &[&GVR_KEY])? {
            Some(row) => root_col(Some(col(&row, 0)?))?,
            None => None,
        };
        self.gvr = gvr;
        Ok(gvr)
    }

    fn set_genesis_validators_root(&mut self, gvr: &Root) -> Result<(), SlashingError> {
        // Another process may have recorded it since we looked: then it must be the same one.
        let st = &self.st.insert_gvr;
        if self.exec(st, &[&GVR_KEY, &&gvr[..]])? == 0 {
            match self.genesis_validators_root()? {
                Some(stored) if stored == *gvr => {}
                Some(stored) => {
                    return Err(SlashingError::Store(format!(
                        "genesis validators root already recorded as {}",
                        hex_root(&stored)
                    )))
                }
                None => {
                    return Err(SlashingError::Store(
                        "the genesis validators root could not be recorded".into(),
                    ))
                }
            }
        }
        self.gvr = Some(*gvr);
        Ok(())
    }

    fn lock_validator(&mut self, pubkey: &Pubkey) -> Result<ValidatorId, SlashingError> {
        let id = self.lock_one(pubkey)?;
        // Remembered once committed (an import's keys too): their next batch locks in bulk.
        self.learned.push((*pubkey, id));
        Ok(id)
    }

    fn lock_validators(
        &mut self,
        pubkeys: &[Pubkey],
    ) -> Result<Vec<ValidatorState>, SlashingError> {
        if pubkeys.iter().all(|pk| self.memo.known.contains_key(pk)) {
            return self.lock_known(pubkeys);
        }
        // Some key is new: register and lock key by key, in the same order.
        let ids: Vec<ValidatorId> = pubkeys
            .iter()
            .map(|pk| self.lock_validator(pk))
            .collect::<Result<_, _>>()?;
        self.learned
            .extend(pubkeys.iter().copied().zip(ids.iter().copied()));
        let st = &self.st.states;
        let mut rows: HashMap<ValidatorId, [Option<i64>; 10]> = HashMap::new();
        for row in self.all(st, &[&ids])? {
            let mut c = [None; 10];
            for (i, v) in c.iter_mut().enumerate() {
                *v = col(&row, i + 1)?;
            }
            rows.insert(col(&row, 0)?, c);
        }
        states_of(&ids, &rows)
    }

    fn find_validator(&mut self, pubkey: &Pubkey) -> Result<Option<ValidatorId>, SlashingError> {
        let pk: &[u8] = &pubkey[..];
        let st = &self.st.find_validator;
        self.opt(st, &[&pk])?.map(|row| col(&row, 0)).transpose()
    }

    fn validators(&mut self) -> Result<Vec<(ValidatorId, Pubkey)>, SlashingError> {
        let st = &self.st.validators;
        self.all(st, &[])?
            .iter()
            .map(|row| {
                let pk: Vec<u8> = col(row, 1)?;
                let pk = Pubkey::try_from(pk.as_slice()).map_err(|_| {
                    SlashingError::Store(format!(
                        "corrupt database: a pubkey of {} bytes",
                        pk.len()
                    ))
                })?;
                Ok((col(row, 0)?, pk))
            })
            .collect()
    }

    fn watermarks(&mut self, v: ValidatorId) -> Result<Watermarks, SlashingError> {
        let st = &self.st.watermarks;
        let row = self.one(st, &[&v])?;
        Ok(Watermarks {
            block_slot: opt_uint(col(&row, 0)?)?,
            attestation_source: opt_uint(col(&row, 1)?)?,
            attestation_target: opt_uint(col(&row, 2)?)?,
        })
    }

    fn set_watermarks(&mut self, v: ValidatorId, wm: &Watermarks) -> Result<(), SlashingError> {
        let p = |x: Option<u64>| x.map(int).transpose();
        let (b, s, t) = (
            p(wm.block_slot)?,
            p(wm.attestation_source)?,
            p(wm.attestation_target)?,
        );
        let st = &self.st.set_watermarks;
        self.exec(st, &[&v, &b, &s, &t])?;
        Ok(())
    }

    fn block_at(
        &mut self,
        v: ValidatorId,
        slot: u64,
    ) -> Result<Option<Option<Root>>, SlashingError> {
        let slot = int(slot)?;
        let st = &self.st.block_at;
        self.opt(st, &[&v, &slot])?
            .map(|row| root_col(col(&row, 0)?))
            .transpose()
    }

    fn min_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        let st = &self.st.min_block_slot;
        self.scalar(st, v)
    }

    fn max_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        let st = &self.st.max_block_slot;
        self.scalar(st, v)
    }

    fn insert_block(&mut self, v: ValidatorId, block: &BlockRecord) -> Result<(), SlashingError> {
        self.blocks.push((v, int(block.slot)?, block.signing_root));
        Ok(())
    }

    fn blocks(&mut self, v: ValidatorId) -> Result<Vec<BlockRecord>, SlashingError> {
        let st = &self.st.blocks;
        self.all(st, &[&v])?
            .iter()
            .map(|row| {
                Ok(BlockRecord {
                    slot: uint(col(row, 0)?)?,
                    signing_root: root_col(col(row, 1)?)?,
                })
            })
            .collect()
    }

    fn attestation_at_target(
        &mut self,
        v: ValidatorId,
        target_epoch: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let target = int(target_epoch)?;
        let st = &self.st.attestation_at_target;
        self.opt(st, &[&v, &target])?
            .map(|row| {
                Ok(AttestationRecord {
                    source_epoch: uint(col(&row, 0)?)?,
                    target_epoch,
                    signing_root: root_col(col(&row, 1)?)?,
                })
            })
            .transpose()
    }

    fn min_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        let st = &self.st.min_attestation_epochs;
        let row = self.one(st, &[&v])?;
        Ok((opt_uint(col(&row, 0)?)?, opt_uint(col(&row, 1)?)?))
    }

    fn max_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        let st = &self.st.max_attestation_epochs;
        let row = self.one(st, &[&v])?;
        Ok((opt_uint(col(&row, 0)?)?, opt_uint(col(&row, 1)?)?))
    }

    fn attestation_surrounded_by(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let st = &self.st.surrounded_by;
        self.att_query(st, v, source, target)
    }

    fn attestation_surrounding(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let st = &self.st.surrounding;
        self.att_query(st, v, source, target)
    }

    fn insert_attestation(
        &mut self,
        v: ValidatorId,
        att: &AttestationRecord,
    ) -> Result<(), SlashingError> {
        self.attestations.push((
            v,
            int(att.target_epoch)?,
            int(att.source_epoch)?,
            att.signing_root,
        ));
        Ok(())
    }

    fn attestations(&mut self, v: ValidatorId) -> Result<Vec<AttestationRecord>, SlashingError> {
        let st = &self.st.attestations;
        self.all(st, &[&v])?.iter().map(attestation_row).collect()
    }

    fn prune_many(&mut self, ids: &[ValidatorId], keep_epochs: u64) -> Result<u64, SlashingError> {
        let keep_slots = i64::try_from(keep_epochs.saturating_mul(super::rules::SLOTS_PER_EPOCH))
            .unwrap_or(i64::MAX);
        let keep_epochs = i64::try_from(keep_epochs).unwrap_or(i64::MAX);
        let st = &self.st.prune_many;
        let row = self.one(st, &[&ids, &keep_slots, &keep_epochs])?;
        let locked = uint(col(&row, 1)?)?;
        let skipped = (ids.len() as u64).saturating_sub(locked);
        if skipped > 0 {
            // Another transaction (this instance's checks, or another instance's) held their
            // rows; SKIP LOCKED left them to the next pass rather than wait.
            tracing::debug!(
                skipped,
                of = ids.len(),
                "pruning skipped validators whose rows another transaction held"
            );
        }
        uint(col(&row, 0)?)
    }

    fn savepoint(&mut self) -> Result<(), SlashingError> {
        self.batch("SAVEPOINT nested")
    }

    fn rollback_savepoint(&mut self) -> Result<(), SlashingError> {
        self.batch("ROLLBACK TO SAVEPOINT nested; RELEASE SAVEPOINT nested")
    }

    fn release_savepoint(&mut self) -> Result<(), SlashingError> {
        self.batch("RELEASE SAVEPOINT nested")
    }

    // Rare administrative operations: not worth a prepared statement per connection.
    fn set_deleted(&mut self, pubkey: &Pubkey, deleted: bool) -> Result<(), SlashingError> {
        let pk: &[u8] = &pubkey[..];
        let sql = if deleted {
            "INSERT INTO hsm_signer.deleted_keys (pubkey) VALUES ($1)
             ON CONFLICT (pubkey) DO NOTHING"
        } else {
            "DELETE FROM hsm_signer.deleted_keys WHERE pubkey = $1"
        };
        self.before_statement()?;
        self.client.execute(sql, &[&pk]).db().map(|_| ())
    }

    fn is_deleted(&mut self, pubkey: &Pubkey) -> Result<bool, SlashingError> {
        let pk: &[u8] = &pubkey[..];
        let st = &self.st.is_deleted;
        let row = self.one(st, &[&pk])?;
        col(&row, 0)
    }

    fn deleted_keys(&mut self) -> Result<Vec<Pubkey>, SlashingError> {
        self.before_statement()?;
        let rows = self
            .client
            .query(
                "SELECT pubkey FROM hsm_signer.deleted_keys ORDER BY pubkey",
                &[],
            )
            .db()?;
        rows.iter()
            .map(|row| {
                let b: Vec<u8> = col(row, 0)?;
                Pubkey::try_from(b.as_slice()).map_err(|_| {
                    SlashingError::Store(format!("corrupt database: a pubkey of {} bytes", b.len()))
                })
            })
            .collect()
    }
}

impl SlashingProtection {
    /// Open (create) the slashing-protection database in the PostgreSQL database named by `url`
    /// (see [`PostgresStore::open`]) for the network whose genesis validators root is `gvr`.
    /// Several signer processes may share it.
    pub fn open_postgres(url: &str, gvr: Option<Root>) -> Result<Self, SlashingError> {
        Self::open_postgres_with(url, gvr, Options::default())
    }

    /// [`open_postgres`](Self::open_postgres) with explicit [`Options`].
    pub fn open_postgres_with(
        url: &str,
        gvr: Option<Root>,
        options: Options,
    ) -> Result<Self, SlashingError> {
        Self::with_store(PostgresStore::open(url, gvr)?, options)
    }
}

/// A scratch database just created, and the administrative session that drops it.
struct Scratch {
    admin: Client,
    name: String,
    config: Config,
    params: pg_tls::TlsParams,
}

impl Scratch {
    /// Create a database named after `tag`, this process and the time on the server `url`
    /// points to (its role needs `CREATEDB`).
    fn create(url: &str, tag: &str) -> Result<Scratch, SlashingError> {
        let (mut config, params) = parse_url(url)?;
        let target = describe_target(&config);
        let transport = pg_tls::decide(&config, &params)
            .and_then(|mode| pg_tls::transport(&mut config, mode, params.root_cert.as_deref()))
            .map_err(|e| SlashingError::Store(format!("postgresql {target}: {e}")))?;
        let name = format!(
            "hsm_signer_{tag}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut admin = open_session(&config, &transport).map_err(|e| {
            SlashingError::Store(format!(
                "postgresql {target}: cannot connect: {}",
                describe(&e)
            ))
        })?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .db()?;
        Ok(Scratch {
            admin,
            name,
            config,
            params,
        })
    }
}

/// `url` naming the database `dbname` instead of its own (`postgres://…/db?…` or the
/// `key=value` form). `dbname` is one of ours: letters, digits and underscores.
fn url_with_dbname(url: &str, dbname: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (main, query) = match rest.split_once('?') {
                Some((m, q)) => (m, Some(q)),
                None => (rest, None),
            };
            let authority = main.split_once('/').map_or(main, |(a, _)| a);
            return match query {
                Some(q) => format!("{scheme}{authority}/{dbname}?{q}"),
                None => format!("{scheme}{authority}/{dbname}"),
            };
        }
    }
    format!("{url} dbname={dbname}")
}

/// A fresh database on the server `url` points to (see [`with_scratch_database`]), given to
/// `f` as a connection string like `url` (same server, role and TLS settings), and dropped once
/// `f` returned: whatever `f` started on it must have closed its connections by then. For
/// benchmarks that run a server process on it. The outer error is the scratch database's.
pub(crate) fn with_scratch_url<R>(
    url: &str,
    tag: &str,
    f: impl FnOnce(&str) -> R,
) -> Result<R, SlashingError> {
    let mut scratch = Scratch::create(url, tag)?;
    let result = f(&url_with_dbname(url, &scratch.name));
    scratch
        .admin
        .batch_execute(&format!("DROP DATABASE {}", scratch.name))
        .db()?;
    Ok(result)
}

/// A fresh database on the server `url` points to (its role needs `CREATEDB`), named after
/// `tag` and this process, opened for `f` as slashing protection by the function it is given,
/// and dropped once `f` returned (its service, and so its connection, is gone by then). For
/// benchmarks.
pub(crate) fn with_scratch_database<R>(
    url: &str,
    tag: &str,
    f: impl FnOnce(
        &mut dyn FnMut(Root, Options) -> Result<SlashingProtection, SlashingError>,
    ) -> Result<R, SlashingError>,
) -> Result<R, SlashingError> {
    let Scratch {
        mut admin,
        name,
        config,
        params,
    } = Scratch::create(url, tag)?;
    let params = &params;
    let mut bench_config = config.clone();
    bench_config.dbname(&name);
    let result = f(&mut |gvr, options| {
        SlashingProtection::with_store(
            PostgresStore::open_config(bench_config.clone(), params, Some(gvr))?,
            options,
        )
    });
    // The service is gone (its connection closed) once f returned.
    let dropped = admin.batch_execute(&format!("DROP DATABASE {name}")).db();
    let run = result?;
    dropped?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::url_with_dbname;

    #[test]
    fn a_connection_string_names_another_database_and_keeps_the_rest() {
        let cases = [
            (
                "postgres://u:p@h:5432/db?sslmode=require",
                "postgres://u:p@h:5432/x_1?sslmode=require",
            ),
            ("postgresql://h", "postgresql://h/x_1"),
            (
                "host=/run dbname=a user=u",
                "host=/run dbname=a user=u dbname=x_1",
            ),
        ];
        for (url, expected) in cases {
            let rewritten = url_with_dbname(url, "x_1");
            assert_eq!(rewritten, expected);
            let parsed: postgres::Config = rewritten.parse().unwrap();
            assert_eq!(parsed.get_dbname(), Some("x_1"), "{url}");
            assert_eq!(
                parsed.get_user(),
                url.parse::<postgres::Config>().unwrap().get_user()
            );
        }
    }
}
