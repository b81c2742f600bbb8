//! The default store: one SQLite file in the data directory. WAL journal with
//! `synchronous=FULL`, so a commit is on disk when it returns; `BEGIN IMMEDIATE` transactions, so
//! writers (threads or processes) are serialised; schema migrations embedded in the binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::store::{
    AttestationRecord, BlockRecord, DeletesBelow, Footprint, Pruned, SlashingStore, StoreTxn,
    ValidatorId, ValidatorState, Watermarks,
};
use super::{hex_root, Pubkey, Refusal, Root, SlashingError};

/// `PRAGMA application_id` of our databases ("hsms"), so that a foreign SQLite file is refused.
const APPLICATION_ID: i32 = 0x6873_6d73;

/// Schema migrations; `PRAGMA user_version` is the number applied. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE metadata (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE validators (
        id INTEGER PRIMARY KEY,
        pubkey BLOB NOT NULL UNIQUE CHECK (length(pubkey) = 48),
        wm_block_slot INTEGER CHECK (wm_block_slot >= 0),
        wm_attestation_source INTEGER CHECK (wm_attestation_source >= 0),
        wm_attestation_target INTEGER CHECK (wm_attestation_target >= 0)
    ) STRICT;
    CREATE TABLE signed_blocks (
        validator_id INTEGER NOT NULL REFERENCES validators (id),
        slot INTEGER NOT NULL CHECK (slot >= 0),
        signing_root BLOB CHECK (signing_root IS NULL OR length(signing_root) = 32),
        PRIMARY KEY (validator_id, slot)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE signed_attestations (
        validator_id INTEGER NOT NULL REFERENCES validators (id),
        target_epoch INTEGER NOT NULL CHECK (target_epoch >= 0),
        source_epoch INTEGER NOT NULL CHECK (source_epoch >= 0),
        signing_root BLOB CHECK (signing_root IS NULL OR length(signing_root) = 32),
        PRIMARY KEY (validator_id, target_epoch)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX signed_attestations_by_source
        ON signed_attestations (validator_id, source_epoch, target_epoch);",
    // v2: keys deleted through the Keymanager API (a tombstone outlives a restored key file).
    "CREATE TABLE deleted_keys (
        pubkey BLOB PRIMARY KEY NOT NULL CHECK (length(pubkey) = 48),
        deleted_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;",
];

const GVR_KEY: &str = "genesis_validators_root";

// The two surround queries pin their index: each range-scans from the new attestation's epoch
// upwards, which in honest operation (epochs only rise) finds nothing after one seek. The unary
// `+` keeps SQLite from choosing the other column's index, which would scan the whole history.
pub(crate) const SQL_SURROUNDED_BY: &str = "SELECT source_epoch, target_epoch, signing_root
    FROM signed_attestations INDEXED BY signed_attestations_by_source
    WHERE validator_id = ?1 AND source_epoch > ?2 AND +target_epoch < ?3 LIMIT 1";
pub(crate) const SQL_SURROUNDING: &str = "SELECT source_epoch, target_epoch, signing_root
    FROM signed_attestations
    WHERE validator_id = ?1 AND target_epoch > ?3 AND +source_epoch < ?2 LIMIT 1";
pub(crate) const SQL_MIN_EPOCHS: &str = "SELECT
    (SELECT MIN(source_epoch) FROM signed_attestations WHERE validator_id = ?1),
    (SELECT MIN(target_epoch) FROM signed_attestations WHERE validator_id = ?1)";
pub(crate) const SQL_MAX_EPOCHS: &str = "SELECT
    (SELECT MAX(source_epoch) FROM signed_attestations WHERE validator_id = ?1),
    (SELECT MAX(target_epoch) FROM signed_attestations WHERE validator_id = ?1)";
/// A locked validator's state in one statement: each minimum and maximum is one index seek.
pub(crate) const SQL_STATE: &str = "SELECT
    v.wm_block_slot, v.wm_attestation_source, v.wm_attestation_target,
    EXISTS (SELECT 1 FROM deleted_keys d WHERE d.pubkey = v.pubkey),
    (SELECT MIN(slot) FROM signed_blocks WHERE validator_id = v.id),
    (SELECT MAX(slot) FROM signed_blocks WHERE validator_id = v.id),
    (SELECT MIN(source_epoch) FROM signed_attestations WHERE validator_id = v.id),
    (SELECT MIN(target_epoch) FROM signed_attestations WHERE validator_id = v.id),
    (SELECT MAX(source_epoch) FROM signed_attestations WHERE validator_id = v.id),
    (SELECT MAX(target_epoch) FROM signed_attestations WHERE validator_id = v.id)
    FROM validators v WHERE v.id = ?1";

/// Pages kept in the WAL before the writer checkpoints by itself: a safety net, since the
/// background checkpointer normally keeps the WAL far smaller.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;
/// Bytes the WAL file keeps once it starts over: a burst (a large pruning pass) that grew it is
/// given back to the disk, while the usual cycle reuses the file's blocks without growing it.
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// The SQLite store. See the module doc.
pub(crate) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    checkpointer: Option<Checkpointer>,
}

/// Copies committed WAL frames into the database file on its own thread and connection, so
/// that the writer's commits pay only for their own WAL append and fsync. Durability does not
/// depend on it: a commit is durable once it is in the WAL.
struct Checkpointer {
    kick: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, SlashingError> {
        let conn = Connection::open(path).db()?;
        conn.busy_timeout(Duration::from_secs(10)).db()?;
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("slashing-checkpoint".into())
            .spawn(move || {
                while kicked.recv().is_ok() {
                    // PASSIVE: never blocks the writer; what it cannot copy now, a later round does.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!("slashing protection: WAL checkpoint failed: {e}");
                    }
                }
            })
            .map_err(|e| SlashingError::Store(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer {
            kick: Some(kick),
            thread: Some(thread),
        })
    }

    fn kick(&self) {
        if let Some(k) = &self.kick {
            // Full means a round is already due: the kicks coalesce.
            let _ = k.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.kick.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait Db<T> {
    fn db(self) -> Result<T, SlashingError>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, SlashingError> {
        self.map_err(|e| SlashingError::Store(format!("sqlite: {e}")))
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

fn root_col(blob: Option<Vec<u8>>) -> Result<Option<Root>, SlashingError> {
    blob.map(|b| {
        Root::try_from(b.as_slice()).map_err(|_| {
            SlashingError::Store(format!("corrupt database: a root of {} bytes", b.len()))
        })
    })
    .transpose()
}

fn root_param(root: &Option<Root>) -> Option<&[u8]> {
    root.as_ref().map(|r| &r[..])
}

impl SqliteStore {
    /// Open (create) the database at `path` for the network whose genesis validators root is
    /// `gvr`: recorded on first use; a database recorded for another network is refused.
    pub fn open(path: &Path, gvr: Option<Root>) -> Result<Self, SlashingError> {
        let at = |e: rusqlite::Error| SlashingError::Store(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(at)?;
        // Other signer processes may hold the write lock briefly (one group commit).
        conn.busy_timeout(Duration::from_secs(10)).map_err(at)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(at)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SlashingError::Store(format!(
                "{}: cannot use WAL journaling (got {mode}); put the database on a local \
                 filesystem",
                path.display()
            )));
        }
        // 64 MiB of page cache: the hot pages of ~10^4 validators' indexes stay in memory.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;",
        )
        .map_err(at)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(at)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(at)?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            checkpointer: None,
        };
        store.migrate()?;
        store.checkpointer = Some(Checkpointer::start(path)?);
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

    fn migrate(&mut self) -> Result<(), SlashingError> {
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let app: i32 = tx
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .db()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).db()?;
        let objects: i64 = tx
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .db()?;
        if app != APPLICATION_ID && !(app == 0 && version == 0 && objects == 0) {
            return Err(SlashingError::Store(format!(
                "{path} is not an hsm-signer slashing-protection database"
            )));
        }
        let known = MIGRATIONS.len();
        let applied = usize::try_from(version).unwrap_or(usize::MAX);
        if applied > known {
            return Err(SlashingError::Store(format!(
                "{path} has schema version {version}, newer than this hsm-signer knows ({known}); \
                 upgrade hsm-signer"
            )));
        }
        for sql in &MIGRATIONS[applied..] {
            tx.execute_batch(sql).db()?;
        }
        tx.pragma_update(None, "user_version", known as i64).db()?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .db()?;
        tx.commit().db()
    }
}

impl SlashingStore for SqliteStore {
    fn transaction<R>(
        &mut self,
        mut f: impl FnMut(&mut dyn StoreTxn) -> Result<R, SlashingError>,
    ) -> Result<R, SlashingError> {
        if !self.conn.is_autocommit() {
            // A failed rollback left a transaction open; clear it before starting anew.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        match f(&mut SqliteTxn { conn: &tx }) {
            // COMMIT in WAL mode with synchronous=FULL fsyncs the WAL before returning. If it
            // fails, the transaction is rolled back on drop and the caller signs nothing.
            Ok(r) => {
                tx.commit().db()?;
                if let Some(c) = &self.checkpointer {
                    c.kick();
                }
                Ok(r)
            }
            Err(e) => {
                let _ = tx.rollback();
                Err(e)
            }
        }
    }

    fn footprint(&mut self) -> Result<Footprint, SlashingError> {
        let count = |table: &str| -> Result<u64, SlashingError> {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .db()?;
            uint(n)
        };
        let (validators, blocks, attestations) = (
            count("validators")?,
            count("signed_blocks")?,
            count("signed_attestations")?,
        );
        let mut bytes = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            // The WAL and shared-memory files exist only while the database is open.
            bytes += std::fs::metadata(&p).map_or(0, |m| m.len());
        }
        Ok(Footprint {
            validators,
            blocks,
            attestations,
            bytes,
        })
    }
}

struct SqliteTxn<'c> {
    conn: &'c Connection,
}

impl SqliteTxn<'_> {
    fn att_query(
        &self,
        sql: &str,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let row = self
            .conn
            .prepare_cached(sql)
            .db()?
            .query_row(params![v, int(source)?, int(target)?], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
            })
            .optional()
            .db()?;
        row.map(|(s, t, root)| {
            Ok(AttestationRecord {
                source_epoch: uint(s)?,
                target_epoch: uint(t)?,
                signing_root: root_col(root)?,
            })
        })
        .transpose()
    }
}

impl StoreTxn for SqliteTxn<'_> {
    fn genesis_validators_root(&mut self) -> Result<Option<Root>, SlashingError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT value FROM metadata WHERE key = ?1")
            .db()?
            .query_row([GVR_KEY], |r| r.get(0))
            .optional()
            .db()?;
        root_col(blob)
    }

    fn set_genesis_validators_root(&mut self, gvr: &Root) -> Result<(), SlashingError> {
        if let Some(stored) = self.genesis_validators_root()? {
            return Err(SlashingError::Store(format!(
                "genesis validators root already recorded as {}",
                hex_root(&stored)
            )));
        }
        self.conn
            .prepare_cached("INSERT INTO metadata (key, value) VALUES (?1, ?2)")
            .db()?
            .execute(params![GVR_KEY, &gvr[..]])
            .db()?;
        Ok(())
    }

    fn lock_validator(&mut self, pubkey: &Pubkey) -> Result<ValidatorId, SlashingError> {
        // BEGIN IMMEDIATE holds the database write lock: the row needs no lock of its own.
        if let Some(id) = self.find_validator(pubkey)? {
            return Ok(id);
        }
        self.conn
            .prepare_cached("INSERT INTO validators (pubkey) VALUES (?1) RETURNING id")
            .db()?
            .query_row([&pubkey[..]], |r| r.get(0))
            .db()
    }

    fn lock_validators(
        &mut self,
        pubkeys: &[Pubkey],
    ) -> Result<Vec<ValidatorState>, SlashingError> {
        let mut out = Vec::with_capacity(pubkeys.len());
        for pk in pubkeys {
            let id = self.lock_validator(pk)?;
            let row: [Option<i64>; 10] = self
                .conn
                .prepare_cached(SQL_STATE)
                .db()?
                .query_row([id], |r| {
                    let mut row = [None; 10];
                    for (i, c) in row.iter_mut().enumerate() {
                        *c = r.get(i)?;
                    }
                    Ok(row)
                })
                .db()?;
            out.push(ValidatorState::from_columns(id, &row)?);
        }
        Ok(out)
    }

    fn find_validator(&mut self, pubkey: &Pubkey) -> Result<Option<ValidatorId>, SlashingError> {
        self.conn
            .prepare_cached("SELECT id FROM validators WHERE pubkey = ?1")
            .db()?
            .query_row([&pubkey[..]], |r| r.get(0))
            .optional()
            .db()
    }

    fn validators(&mut self) -> Result<Vec<(ValidatorId, Pubkey)>, SlashingError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, pubkey FROM validators ORDER BY id")
            .db()?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .db()?;
        let mut out = Vec::new();
        for row in rows {
            let (id, pk) = row.db()?;
            let pk = Pubkey::try_from(pk.as_slice()).map_err(|_| {
                SlashingError::Store(format!("corrupt database: a pubkey of {} bytes", pk.len()))
            })?;
            out.push((id, pk));
        }
        Ok(out)
    }

    fn watermarks(&mut self, v: ValidatorId) -> Result<Watermarks, SlashingError> {
        let (b, s, t) = self
            .conn
            .prepare_cached(
                "SELECT wm_block_slot, wm_attestation_source, wm_attestation_target
                 FROM validators WHERE id = ?1",
            )
            .db()?
            .query_row([v], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .db()?;
        Ok(Watermarks {
            block_slot: opt_uint(b)?,
            attestation_source: opt_uint(s)?,
            attestation_target: opt_uint(t)?,
        })
    }

    fn set_watermarks(&mut self, v: ValidatorId, wm: &Watermarks) -> Result<(), SlashingError> {
        let p = |x: Option<u64>| x.map(int).transpose();
        self.conn
            .prepare_cached(
                "UPDATE validators SET wm_block_slot = ?2, wm_attestation_source = ?3,
                 wm_attestation_target = ?4 WHERE id = ?1",
            )
            .db()?
            .execute(params![
                v,
                p(wm.block_slot)?,
                p(wm.attestation_source)?,
                p(wm.attestation_target)?
            ])
            .db()?;
        Ok(())
    }

    fn block_at(
        &mut self,
        v: ValidatorId,
        slot: u64,
    ) -> Result<Option<Option<Root>>, SlashingError> {
        let row: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached(
                "SELECT signing_root FROM signed_blocks WHERE validator_id = ?1 AND slot = ?2",
            )
            .db()?
            .query_row(params![v, int(slot)?], |r| r.get(0))
            .optional()
            .db()?;
        row.map(root_col).transpose()
    }

    fn min_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        let min: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(slot) FROM signed_blocks WHERE validator_id = ?1")
            .db()?
            .query_row([v], |r| r.get(0))
            .db()?;
        opt_uint(min)
    }

    fn max_block_slot(&mut self, v: ValidatorId) -> Result<Option<u64>, SlashingError> {
        let max: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(slot) FROM signed_blocks WHERE validator_id = ?1")
            .db()?
            .query_row([v], |r| r.get(0))
            .db()?;
        opt_uint(max)
    }

    fn insert_block(&mut self, v: ValidatorId, block: &BlockRecord) -> Result<(), SlashingError> {
        self.conn
            .prepare_cached(
                "INSERT INTO signed_blocks (validator_id, slot, signing_root) VALUES (?1, ?2, ?3)",
            )
            .db()?
            .execute(params![
                v,
                int(block.slot)?,
                root_param(&block.signing_root)
            ])
            .db()?;
        Ok(())
    }

    fn blocks(&mut self, v: ValidatorId) -> Result<Vec<BlockRecord>, SlashingError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT slot, signing_root FROM signed_blocks WHERE validator_id = ?1
                 ORDER BY slot",
            )
            .db()?;
        let rows = stmt
            .query_map([v], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))
            .db()?;
        let mut out = Vec::new();
        for row in rows {
            let (slot, root) = row.db()?;
            out.push(BlockRecord {
                slot: uint(slot)?,
                signing_root: root_col(root)?,
            });
        }
        Ok(out)
    }

    fn attestation_at_target(
        &mut self,
        v: ValidatorId,
        target_epoch: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT source_epoch, signing_root FROM signed_attestations
                 WHERE validator_id = ?1 AND target_epoch = ?2",
            )
            .db()?
            .query_row(params![v, int(target_epoch)?], |r| {
                Ok((r.get::<_, i64>(0)?, r.get(1)?))
            })
            .optional()
            .db()?;
        row.map(|(s, root)| {
            Ok(AttestationRecord {
                source_epoch: uint(s)?,
                target_epoch,
                signing_root: root_col(root)?,
            })
        })
        .transpose()
    }

    fn min_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        let (s, t): (Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(SQL_MIN_EPOCHS)
            .db()?
            .query_row([v], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        Ok((opt_uint(s)?, opt_uint(t)?))
    }

    fn max_attestation_epochs(
        &mut self,
        v: ValidatorId,
    ) -> Result<(Option<u64>, Option<u64>), SlashingError> {
        let (s, t): (Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(SQL_MAX_EPOCHS)
            .db()?
            .query_row([v], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        Ok((opt_uint(s)?, opt_uint(t)?))
    }

    fn attestation_surrounded_by(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        self.att_query(SQL_SURROUNDED_BY, v, source, target)
    }

    fn attestation_surrounding(
        &mut self,
        v: ValidatorId,
        source: u64,
        target: u64,
    ) -> Result<Option<AttestationRecord>, SlashingError> {
        self.att_query(SQL_SURROUNDING, v, source, target)
    }

    fn insert_attestation(
        &mut self,
        v: ValidatorId,
        att: &AttestationRecord,
    ) -> Result<(), SlashingError> {
        self.conn
            .prepare_cached(
                "INSERT INTO signed_attestations
                 (validator_id, target_epoch, source_epoch, signing_root) VALUES (?1, ?2, ?3, ?4)",
            )
            .db()?
            .execute(params![
                v,
                int(att.target_epoch)?,
                int(att.source_epoch)?,
                root_param(&att.signing_root)
            ])
            .db()?;
        Ok(())
    }

    fn attestations(&mut self, v: ValidatorId) -> Result<Vec<AttestationRecord>, SlashingError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                 WHERE validator_id = ?1 ORDER BY target_epoch",
            )
            .db()?;
        let rows = stmt
            .query_map([v], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
            })
            .db()?;
        let mut out = Vec::new();
        for row in rows {
            let (s, t, root) = row.db()?;
            out.push(AttestationRecord {
                source_epoch: uint(s)?,
                target_epoch: uint(t)?,
                signing_root: root_col(root)?,
            });
        }
        Ok(out)
    }

    fn prune_many(&mut self, ids: &[ValidatorId], keep_epochs: u64) -> Result<u64, SlashingError> {
        super::rules::prune_each(self, ids, keep_epochs)
    }

    fn savepoint(&mut self) -> Result<(), SlashingError> {
        self.conn.execute_batch("SAVEPOINT nested").db()
    }

    fn rollback_savepoint(&mut self) -> Result<(), SlashingError> {
        self.conn
            .execute_batch("ROLLBACK TO nested; RELEASE nested")
            .db()
    }

    fn release_savepoint(&mut self) -> Result<(), SlashingError> {
        self.conn.execute_batch("RELEASE nested").db()
    }

    fn set_deleted(&mut self, pubkey: &Pubkey, deleted: bool) -> Result<(), SlashingError> {
        let pk: &[u8] = &pubkey[..];
        if deleted {
            self.conn
                .prepare_cached(
                    "INSERT INTO deleted_keys (pubkey, deleted_at) VALUES (?1, unixepoch())
                     ON CONFLICT (pubkey) DO NOTHING",
                )
                .db()?
                .execute([pk])
                .db()?;
        } else {
            self.conn
                .prepare_cached("DELETE FROM deleted_keys WHERE pubkey = ?1")
                .db()?
                .execute([pk])
                .db()?;
        }
        Ok(())
    }

    fn is_deleted(&mut self, pubkey: &Pubkey) -> Result<bool, SlashingError> {
        let pk: &[u8] = &pubkey[..];
        let mut st = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM deleted_keys WHERE pubkey = ?1)")
            .db()?;
        st.query_row([pk], |r| r.get::<_, bool>(0)).db()
    }

    fn deleted_keys(&mut self) -> Result<Vec<Pubkey>, SlashingError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT pubkey FROM deleted_keys ORDER BY pubkey")
            .db()?;
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).db()?;
        rows.map(|r| {
            let b = r.db()?;
            Pubkey::try_from(b.as_slice()).map_err(|_| {
                SlashingError::Store(format!("corrupt database: a pubkey of {} bytes", b.len()))
            })
        })
        .collect()
    }
}

impl DeletesBelow for SqliteTxn<'_> {
    fn delete_below(
        &mut self,
        v: ValidatorId,
        below_slot: u64,
        below_target: u64,
    ) -> Result<Pruned, SlashingError> {
        let (below_slot, below_target) = (int(below_slot)?, int(below_target)?);
        let (blocks, max_slot): (i64, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), MAX(slot) FROM signed_blocks
                 WHERE validator_id = ?1 AND slot < ?2",
            )
            .db()?
            .query_row(params![v, below_slot], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        let (atts, max_source, max_target): (i64, Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), MAX(source_epoch), MAX(target_epoch) FROM signed_attestations
                 WHERE validator_id = ?1 AND target_epoch < ?2",
            )
            .db()?
            .query_row(params![v, below_target], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .db()?;
        if blocks > 0 {
            self.conn
                .prepare_cached("DELETE FROM signed_blocks WHERE validator_id = ?1 AND slot < ?2")
                .db()?
                .execute(params![v, below_slot])
                .db()?;
        }
        if atts > 0 {
            self.conn
                .prepare_cached(
                    "DELETE FROM signed_attestations WHERE validator_id = ?1 AND target_epoch < ?2",
                )
                .db()?
                .execute(params![v, below_target])
                .db()?;
        }
        Ok(Pruned {
            records: uint(blocks)? + uint(atts)?,
            maxima: Watermarks {
                block_slot: opt_uint(max_slot)?,
                attestation_source: opt_uint(max_source)?,
                attestation_target: opt_uint(max_target)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let args = [1i64, 5, 9];
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(&args[..stmt.parameter_count()]),
                |r| r.get::<_, String>(3),
            )
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join(" | ")
    }

    #[test]
    fn surround_queries_seek_by_index_instead_of_scanning_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.sqlite"), None).unwrap();
        let p = plan(&store.conn, SQL_SURROUNDED_BY);
        assert!(
            p.contains("SEARCH")
                && p.contains("signed_attestations_by_source (validator_id=? AND source_epoch>?)"),
            "{p}"
        );
        let p = plan(&store.conn, SQL_SURROUNDING);
        assert!(
            p.contains("SEARCH") && p.contains("PRIMARY KEY (validator_id=? AND target_epoch>?)"),
            "{p}"
        );
        for sql in [SQL_MIN_EPOCHS, SQL_MAX_EPOCHS, SQL_STATE] {
            let p = plan(&store.conn, sql);
            assert!(
                !p.contains("SCAN signed_attestations") && !p.contains("SCAN signed_blocks"),
                "{p}"
            );
        }
    }

    #[test]
    fn refuses_a_foreign_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let err = SqliteStore::open(&path, None).err().unwrap();
        assert!(err.to_string().contains("not an hsm-signer"), "{err}");
    }

    #[test]
    fn refuses_another_network_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sqlite");
        drop(SqliteStore::open(&path, Some([1; 32])).unwrap());
        assert!(SqliteStore::open(&path, Some([1; 32])).is_ok());
        assert!(SqliteStore::open(&path, None).is_ok());
        let err = SqliteStore::open(&path, Some([2; 32])).err().unwrap();
        assert!(
            matches!(
                err,
                SlashingError::Refused(Refusal::GenesisValidatorsRootMismatch { .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        drop(SqliteStore::open(&path, None).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path, None).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn deletion_marks_persist_and_a_version_1_database_gains_them() {
        use crate::slashing::{Proposal, SlashingProtection};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        // A database as version 1 left it.
        drop(SqliteStore::open(&path, None).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE deleted_keys").unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);

        let (a, b, c) = ([1u8; 48], [2u8; 48], [3u8; 48]);
        let gvr = [9u8; 32];
        let db = SlashingProtection::open_sqlite(&path, None).unwrap();
        let vote = Proposal::Attestation {
            source_epoch: 1,
            target_epoch: 2,
            signing_root: [7u8; 32],
        };
        db.check_and_record(&b, &gvr, vote).unwrap();
        // a: active; b: known to the database only; c: neither.
        let deletion = db
            .mark_deleted(&[(a, true), (b, false), (c, false)])
            .unwrap();
        assert_eq!(deletion.known, [true, true, false]);
        let ic: serde_json::Value = serde_json::from_str(&deletion.interchange).unwrap();
        let pubkeys: Vec<&str> = ic["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["pubkey"].as_str().unwrap())
            .collect();
        assert_eq!(
            pubkeys,
            [
                format!("0x{}", hex::encode(a)),
                format!("0x{}", hex::encode(b))
            ]
        );
        assert_eq!(ic["data"][1]["signed_attestations"][0]["target_epoch"], "2");
        drop(db);

        let db = SlashingProtection::open_sqlite(&path, None).unwrap();
        assert_eq!(db.deleted_keys().unwrap(), vec![a, b]);
        db.clear_deleted(&[a]).unwrap();
        assert_eq!(db.deleted_keys().unwrap(), vec![b]);
        // The history of a deleted key stays: a conflicting vote is still refused.
        let double = Proposal::Attestation {
            source_epoch: 0,
            target_epoch: 2,
            signing_root: [8u8; 32],
        };
        assert!(db.check_and_record(&b, &gvr, double).is_err());
    }
}
