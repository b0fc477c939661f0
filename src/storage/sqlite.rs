//! The embedded store: one SQLite file in WAL mode, created on first start and
//! brought up to date by numbered migrations (`PRAGMA user_version`).
//!
//! Writes go through one connection, each in one transaction with
//! `synchronous = FULL`, so an acknowledged change survives a crash. Reads use
//! a second connection, which WAL lets run beside the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use crate::clock::Millis;
use crate::consent::model::{ConsentEvent, Current, Status, SubjectConsents};
use crate::consent::store::{Applied, ConsentStore, Erased, StoreError, Stored};
use crate::keys::store::{Binding, KeyStore, StoredKey};
use crate::keys::wrap::{KeyId, Wrapped};

/// Schema versions, applied in order. Never edit one that has shipped; add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: consent history and current state.
    "CREATE TABLE consent_events (
         id INTEGER PRIMARY KEY,
         subject TEXT NOT NULL,
         purpose TEXT NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn', 'objected')),
         at_ms INTEGER NOT NULL,
         source TEXT NOT NULL,
         expires_ms INTEGER,
         proof TEXT,
         recorded_ms INTEGER NOT NULL,
         UNIQUE (subject, purpose, status, at_ms, source)
     );
     CREATE INDEX consent_events_by_subject ON consent_events (subject, at_ms, id);
     CREATE TABLE consent_current (
         subject TEXT NOT NULL,
         purpose TEXT NOT NULL,
         status TEXT NOT NULL,
         at_ms INTEGER NOT NULL,
         event_id INTEGER NOT NULL,
         expires_ms INTEGER,
         PRIMARY KEY (subject, purpose)
     ) WITHOUT ROWID;",
    // 2: a statement's identity includes its expiry and proof, so a grant
    // re-sent with a new expiry is a new statement, not a duplicate.
    "CREATE TABLE consent_events_v2 (
         id INTEGER PRIMARY KEY,
         subject TEXT NOT NULL,
         purpose TEXT NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('granted', 'withdrawn', 'objected')),
         at_ms INTEGER NOT NULL,
         source TEXT NOT NULL,
         expires_ms INTEGER,
         proof TEXT,
         recorded_ms INTEGER NOT NULL
     );
     INSERT INTO consent_events_v2 SELECT id, subject, purpose, status, at_ms, source, expires_ms, proof, recorded_ms FROM consent_events;
     DROP TABLE consent_events;
     ALTER TABLE consent_events_v2 RENAME TO consent_events;
     CREATE INDEX consent_events_by_subject ON consent_events (subject, at_ms, id);
     CREATE UNIQUE INDEX consent_events_identity ON consent_events
         (subject, purpose, status, at_ms, source, COALESCE(expires_ms, -1), COALESCE(proof, ''));",
    // 3: wrapped data keys (encryption at rest). A destroyed key keeps its
    // row as a tombstone with the wrapped bytes gone.
    "CREATE TABLE data_keys (
         owner TEXT PRIMARY KEY,
         key_id BLOB NOT NULL CHECK (length(key_id) = 8),
         master_version INTEGER,
         wrapped BLOB,
         created_ms INTEGER NOT NULL,
         destroyed_ms INTEGER,
         CHECK ((destroyed_ms IS NULL) = (wrapped IS NOT NULL))
     );",
    // 4: the suppression list: erased customers, whose records never leave.
    "CREATE TABLE erasures (
         subject TEXT PRIMARY KEY,
         at_ms INTEGER NOT NULL,
         receipt TEXT NOT NULL
     ) WITHOUT ROWID;",
];

#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    _lock: Option<StoreLock>,
}

/// One process owns a store at a time (an advisory lock on `<store>.lock`,
/// held while the store is open): the consent cache is only right if every
/// change goes through the process that caches. Other processes (the CLI)
/// may read, and send changes through the admin API.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

/// Takes the store's lock; `None` when another process holds it.
pub fn lock(path: &Path) -> Result<Option<StoreLock>, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
    }
    // The lock is named after the store's real location, so that two
    // spellings of one path (relative, symlinked, or a symlinked file)
    // take the same lock.
    let path = &path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.canonicalize(),
        None => std::env::current_dir(),
    }
    .map_err(|e| {
        StoreError(format!(
            "cannot resolve the folder of {}: {e}",
            path.display()
        ))
    })?;
    let file = path
        .file_name()
        .ok_or_else(|| StoreError(format!("{} names no file", path.display())))?;
    let mut name = dir.join(file).into_os_string();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", Path::new(&name).display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(StoreLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError(format!(
            "cannot lock {}: {e}",
            Path::new(&name).display()
        ))),
    }
}

fn err(what: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{what}: {e}"))
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and runs pending migrations.
    /// Fails when another process has it open.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        match lock(path)? {
            Some(l) => SqliteStore::open_locked(path, l),
            None => Err(StoreError(format!(
                "{} is in use by another consentry process (one process owns a store)",
                path.display()
            ))),
        }
    }

    /// Opens the store whose lock the caller holds.
    pub fn open_locked(path: &Path, lock: StoreLock) -> Result<SqliteStore, StoreError> {
        let writer = Connection::open(path).map_err(err("open"))?;
        writer
            // secure_delete: a destroyed key's bytes are overwritten in the
            // file, not left in a free page.
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;")
            .map_err(err("configure"))?;
        // SQLite silently opens a write-protected file read-only; a store
        // that cannot take changes must stop start-up instead.
        if writer
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(err("check access"))?
        {
            return Err(StoreError(format!(
                "{} is read-only; the consent store must be writable",
                path.display()
            )));
        }
        migrate(&writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("open for reading"))?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(err("configure"))?;
        Ok(SqliteStore {
            // Absolute: later connections (exports) must not follow a
            // change of working directory.
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            _lock: Some(lock),
        })
    }

    /// Opens an existing store for reading only, beside the process that
    /// owns it (exports, reports). Writes fail.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let open = || -> Result<Connection, StoreError> {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(err("open for reading"))?;
            c.execute_batch("PRAGMA busy_timeout = 5000;")
                .map_err(err("configure"))?;
            Ok(c)
        };
        let reader = open()?;
        let version: i64 = reader
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("read schema version"))?;
        if version as usize != MIGRATIONS.len() {
            return Err(StoreError(format!(
                "the store is at schema version {version}, this consentry reads version {}",
                MIGRATIONS.len()
            )));
        }
        Ok(SqliteStore {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            writer: Mutex::new(open()?),
            reader: Mutex::new(reader),
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err("read schema version"))?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the store is at schema version {version}, newer than this consentry ({}); use a newer consentry",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let v = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {v}; COMMIT;"
        ))
        .map_err(|e| StoreError(format!("migration {v}: {e}")))?;
    }
    Ok(())
}

fn status(s: &str) -> Status {
    // The CHECK constraint admits only these three.
    Status::parse(s).unwrap_or(Status::Withdrawn)
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        id: r.get(0)?,
        event: ConsentEvent {
            subject: r.get(1)?,
            purpose: r.get(2)?,
            status: status(&r.get::<_, String>(3)?),
            at: r.get(4)?,
            source: r.get(5)?,
            expires: r.get(6)?,
            proof: r.get(7)?,
        },
        recorded: r.get(8)?,
    })
}

const COLUMNS: &str = "id, subject, purpose, status, at_ms, source, expires_ms, proof, recorded_ms";

impl ConsentStore for SqliteStore {
    fn ready(&self) -> Result<(), StoreError> {
        let conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        // Takes the write lock and lets it go: a read-only or locked file fails here.
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(err("take the write lock"))
    }

    fn apply(&self, events: &[ConsentEvent], recorded: Millis) -> Result<Applied, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(err("begin"))?;
        let mut out = Applied::default();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO consent_events
                         (subject, purpose, status, at_ms, source, expires_ms, proof, recorded_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err("prepare insert"))?;
            let mut current = tx
                .prepare_cached(
                    "INSERT INTO consent_current (subject, purpose, status, at_ms, event_id, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (subject, purpose) DO UPDATE SET
                         status = excluded.status, at_ms = excluded.at_ms,
                         event_id = excluded.event_id, expires_ms = excluded.expires_ms
                     WHERE excluded.at_ms > consent_current.at_ms
                        OR (excluded.at_ms = consent_current.at_ms AND excluded.event_id > consent_current.event_id)",
                )
                .map_err(err("prepare current"))?;
            for e in events {
                let n = insert
                    .execute(params![
                        e.subject,
                        e.purpose,
                        e.status.as_str(),
                        e.at,
                        e.source,
                        e.expires,
                        e.proof,
                        recorded
                    ])
                    .map_err(err("insert"))?;
                if n == 0 {
                    out.unchanged += 1;
                    continue;
                }
                out.inserted += 1;
                let id = tx.last_insert_rowid();
                // Ordered by when it took effect: a time ahead of our clock
                // counts as when it was recorded (see `ConsentStore::apply`).
                let became_current = current
                    .execute(params![
                        e.subject,
                        e.purpose,
                        e.status.as_str(),
                        e.at.min(recorded),
                        id,
                        e.expires
                    ])
                    .map_err(err("update current"))?;
                out.superseded += usize::from(became_current == 0);
            }
        }
        tx.commit().map_err(err("commit"))?;
        Ok(out)
    }

    fn current(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectConsents>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError("reader lock poisoned".into()))?;
        let mut out: HashMap<String, SubjectConsents> = HashMap::new();
        // One query per 500 subjects (well below SQLite's parameter limit).
        for batch in subjects.chunks(500) {
            let marks = vec!["?"; batch.len()].join(",");
            let sql = format!(
                "SELECT subject, purpose, status, expires_ms, at_ms FROM consent_current WHERE subject IN ({marks})"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(err("prepare lookup"))?;
            let rows = stmt
                .query_map(params_from_iter(batch.iter()), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(err("lookup"))?;
            for row in rows {
                let (subject, purpose, st, expires, at) = row.map_err(err("lookup row"))?;
                out.entry(subject).or_default().entries.push(Current {
                    purpose: purpose.into(),
                    status: status(&st),
                    expires,
                    at,
                });
            }
        }
        Ok(out)
    }

    fn history(&self, subject: &str) -> Result<Vec<Stored>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError("reader lock poisoned".into()))?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM consent_events WHERE subject = ?1 ORDER BY at_ms, id"
            ))
            .map_err(err("prepare history"))?;
        let rows = stmt.query_map([subject], stored).map_err(err("history"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(err("history row"))
    }

    fn export(&self, sink: &mut dyn FnMut(Stored)) -> Result<(), StoreError> {
        // Its own connection: a long scan must not hold up the hot path's
        // lookups on the shared reader.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("open for export"))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(err("configure"))?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM consent_events ORDER BY at_ms, id"
            ))
            .map_err(err("prepare export"))?;
        let rows = stmt.query_map([], stored).map_err(err("export"))?;
        for r in rows {
            sink(r.map_err(err("export row"))?);
        }
        Ok(())
    }

    fn erase(&self, erased: &Erased) -> Result<Option<Erased>, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        let before = tx
            .query_row(
                "SELECT subject, at_ms, receipt FROM erasures WHERE subject = ?1",
                [&erased.subject],
                erasure,
            )
            .optional()
            .map_err(err("read the suppression list"))?;
        if before.is_none() {
            tx.execute(
                "INSERT INTO erasures (subject, at_ms, receipt) VALUES (?1, ?2, ?3)",
                params![erased.subject, erased.at, erased.receipt],
            )
            .map_err(err("write the suppression list"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(before)
    }

    fn erasures(&self) -> Result<Vec<Erased>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut stmt = conn
            .prepare("SELECT subject, at_ms, receipt FROM erasures")
            .map_err(err("read the suppression list"))?;
        let rows = stmt
            .query_map([], erasure)
            .map_err(err("read the suppression list"))?;
        rows.collect::<Result<_, _>>()
            .map_err(err("read the suppression list"))
    }
}

fn erasure(r: &rusqlite::Row<'_>) -> rusqlite::Result<Erased> {
    Ok(Erased {
        subject: r.get(0)?,
        at: r.get(1)?,
        receipt: r.get(2)?,
    })
}

/// Whether a store file exists and is at the current schema (for `readyz` later).
fn stored_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredKey> {
    let id: Vec<u8> = r.get(0)?;
    let id = KeyId(id.try_into().unwrap_or([0; 8]));
    let version: Option<u32> = r.get(1)?;
    let wrapped: Option<Vec<u8>> = r.get(2)?;
    let destroyed: Option<i64> = r.get(3)?;
    Ok(match (wrapped, version, destroyed) {
        (Some(bytes), Some(master_version), None) => StoredKey::Live(Wrapped {
            id,
            master_version,
            bytes,
        }),
        (_, _, at) => StoredKey::Destroyed {
            id,
            at: at.unwrap_or(0),
        },
    })
}

impl KeyStore for SqliteStore {
    fn get(&self, owner: &str) -> Result<Option<StoredKey>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError("reader lock poisoned".into()))?;
        conn.prepare_cached(
            "SELECT key_id, master_version, wrapped, destroyed_ms FROM data_keys WHERE owner = ?1",
        )
        .map_err(err("prepare key lookup"))?
        .query_row([owner], stored_key)
        .optional()
        .map_err(err("key lookup"))
    }

    fn insert(&self, owner: &str, w: &Wrapped, at: Millis) -> Result<StoredKey, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(err("begin"))?;
        tx.execute(
            "INSERT OR IGNORE INTO data_keys (owner, key_id, master_version, wrapped, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner, w.id.0.as_slice(), w.master_version, w.bytes, at],
        )
        .map_err(err("insert key"))?;
        let stored = tx
            .query_row(
                "SELECT key_id, master_version, wrapped, destroyed_ms FROM data_keys WHERE owner = ?1",
                [owner],
                stored_key,
            )
            .map_err(err("read key"))?;
        tx.commit().map_err(err("commit"))?;
        Ok(stored)
    }

    fn destroy(&self, owner: &str, at: Millis) -> Result<bool, StoreError> {
        let conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.unchecked_transaction().map_err(err("begin"))?;
        let n = tx
            .execute(
                "UPDATE data_keys SET wrapped = NULL, master_version = NULL, destroyed_ms = ?2
                 WHERE owner = ?1 AND destroyed_ms IS NULL",
                params![owner, at],
            )
            .map_err(err("destroy key"))?;
        // An owner without a key gets a tombstone too: no key is ever made
        // (or bound) for an erased customer afterwards.
        tx.execute(
            "INSERT OR IGNORE INTO data_keys (owner, key_id, master_version, wrapped, created_ms, destroyed_ms)
             VALUES (?1, zeroblob(8), NULL, NULL, ?2, ?2)",
            params![owner, at],
        )
        .map_err(err("tombstone"))?;
        tx.commit().map_err(err("commit"))?;
        if n > 0 {
            // The old page may still sit in the WAL: copy it into the main
            // file (where secure_delete overwrote it) and empty the WAL. A
            // reader holding an old snapshot makes the checkpoint busy: retry
            // briefly; the frames are overwritten later in any case.
            for attempt in 0..20 {
                let busy: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                    .map_err(err("checkpoint"))?;
                if busy == 0 {
                    break;
                }
                if attempt == 19 {
                    tracing::warn!(
                        "a destroyed key's old page stays in the WAL until the next checkpoint"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Ok(n > 0)
    }

    fn live(&self) -> Result<Vec<(String, Wrapped)>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError("reader lock poisoned".into()))?;
        let mut stmt = conn
            .prepare(
                "SELECT key_id, master_version, wrapped, destroyed_ms, owner FROM data_keys
                 WHERE destroyed_ms IS NULL ORDER BY owner",
            )
            .map_err(err("prepare keys"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(4)?, stored_key(r)?)))
            .map_err(err("keys"))?;
        let mut out = Vec::new();
        for row in rows {
            if let (owner, StoredKey::Live(w)) = row.map_err(err("key row"))? {
                out.push((owner, w));
            }
        }
        Ok(out)
    }

    fn rewrap(&self, keys: &[(String, Wrapped)]) -> Result<(), StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(err("begin"))?;
        {
            let mut up = tx
                .prepare_cached(
                    "UPDATE data_keys SET master_version = ?3, wrapped = ?4
                     WHERE owner = ?1 AND key_id = ?2 AND destroyed_ms IS NULL",
                )
                .map_err(err("prepare rewrap"))?;
            for (owner, w) in keys {
                up.execute(params![owner, w.id.0.as_slice(), w.master_version, w.bytes])
                    .map_err(err("rewrap"))?;
            }
        }
        tx.commit().map_err(err("commit"))
    }

    fn insert_all(&self, keys: &[(String, Wrapped)], at: Millis) -> Result<(), StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(err("begin"))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO data_keys (owner, key_id, master_version, wrapped, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err("prepare insert"))?;
            for (owner, w) in keys {
                ins.execute(params![
                    owner,
                    w.id.0.as_slice(),
                    w.master_version,
                    w.bytes,
                    at
                ])
                .map_err(err("insert key"))?;
            }
        }
        tx.commit().map_err(err("commit"))
    }

    fn bind_all(&self, binds: &[Binding], at: Millis) -> Result<Vec<bool>, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError("writer lock poisoned".into()))?;
        let tx = conn.transaction().map_err(err("begin"))?;
        let mut out = Vec::with_capacity(binds.len());
        for (from, to, w) in binds {
            let taken: bool = tx
                .prepare_cached("SELECT 1 FROM data_keys WHERE owner = ?1")
                .map_err(err("prepare key lookup"))?
                .query_row([to], |_| Ok(()))
                .optional()
                .map_err(err("key lookup"))?
                .is_some();
            if taken {
                out.push(false);
                continue;
            }
            let moved = tx
                .prepare_cached(
                    "DELETE FROM data_keys WHERE owner = ?1 AND key_id = ?2 AND destroyed_ms IS NULL",
                )
                .map_err(err("prepare unbind"))?
                .execute(params![from, w.id.0.as_slice()])
                .map_err(err("unbind key"))?;
            if moved == 0 {
                out.push(false);
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO data_keys (owner, key_id, master_version, wrapped, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(err("prepare bind"))?
            .execute(params![
                to,
                w.id.0.as_slice(),
                w.master_version,
                w.bytes,
                at
            ])
            .map_err(err("bind key"))?;
            out.push(true);
        }
        tx.commit().map_err(err("commit"))?;
        Ok(out)
    }
}

pub fn schema_version(path: &Path) -> Result<Option<i64>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err("open"))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .optional()
        .map_err(err("read schema version"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::store::contract;

    #[test]
    fn sqlite_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("consent.db")).unwrap();
        contract::run(&store);
    }

    #[test]
    fn survives_reopening_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/consent.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.apply(&[contract::ev("9", "marketing", Status::Granted, 1)], 2)
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.current(&["9"]).unwrap()["9"].entries.len(), 1);
        assert_eq!(
            schema_version(&path).unwrap(),
            Some(MIGRATIONS.len() as i64)
        );
        drop(s);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let e = SqliteStore::open(&path).unwrap_err();
        assert!(e.0.contains("newer than this consentry"), "{e}");
    }

    #[test]
    fn a_version_1_store_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!("{}; PRAGMA user_version = 1;", MIGRATIONS[0]))
                .unwrap();
            c.execute(
                "INSERT INTO consent_events (subject, purpose, status, at_ms, source, recorded_ms)
                 VALUES ('7', 'marketing', 'granted', 5, 'form', 6)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO consent_current VALUES ('7', 'marketing', 'granted', 5, 1, NULL)",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.history("7").unwrap().len(), 1);
        assert_eq!(s.current(&["7"]).unwrap()["7"].entries[0].at, 5);
        // The v2 identity: the same statement is a duplicate, another expiry is not.
        let mut e = contract::ev("7", "marketing", Status::Granted, 5);
        e.source = "form".into();
        assert_eq!(s.apply(&[e.clone()], 7).unwrap().unchanged, 1);
        e.expires = Some(99);
        assert_eq!(s.apply(&[e], 8).unwrap().inserted, 1);
        drop(s);
        assert_eq!(
            schema_version(&path).unwrap(),
            Some(MIGRATIONS.len() as i64)
        );
    }

    #[test]
    fn sqlite_key_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("k.db")).unwrap();
        crate::keys::store::contract::run(&s);
    }

    #[test]
    fn a_destroyed_key_leaves_no_bytes_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let marker = b"wrapped-key-bytes-that-must-vanish-0123456789abcdefghijklmnop".to_vec();
        {
            let s = SqliteStore::open(&path).unwrap();
            let w = Wrapped {
                id: KeyId([9; 8]),
                master_version: 1,
                bytes: marker.clone(),
            };
            let other = |b: u8| Wrapped {
                id: KeyId([b; 8]),
                master_version: 1,
                bytes: vec![b; 60],
            };
            s.insert("subject:6", &other(6), 1).unwrap();
            s.insert("subject:7", &w, 1).unwrap();
            s.insert("subject:8", &other(8), 1).unwrap();
            assert!(s.destroy("subject:7", 2).unwrap());
        }
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_slice()),
                "key bytes left in a file"
            );
        }
    }

    #[test]
    fn one_process_owns_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consent.db");
        let first = SqliteStore::open(&path).unwrap();
        let e = SqliteStore::open(&path).unwrap_err();
        assert!(e.0.contains("in use by another consentry process"), "{e}");
        assert!(lock(&path).unwrap().is_none());
        // Another spelling of the same file takes the same lock.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let other = dir.path().join("sub/../consent.db");
        assert!(lock(&other).unwrap().is_none());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
            assert!(lock(&dir.path().join("link/consent.db")).unwrap().is_none());
        }
        drop(first);
        assert!(SqliteStore::open(&path).is_ok());
    }

    #[test]
    fn a_failed_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        // A NUL inside a TEXT parameter is fine for SQLite; force a failure with a CHECK instead.
        let conn = s.writer.lock().unwrap();
        conn.execute_batch("CREATE TRIGGER no_x BEFORE INSERT ON consent_events WHEN NEW.subject = 'x' BEGIN SELECT RAISE(ABORT, 'no'); END;")
            .unwrap();
        drop(conn);
        let r = s.apply(
            &[
                contract::ev("a", "marketing", Status::Granted, 1),
                contract::ev("x", "marketing", Status::Granted, 1),
            ],
            2,
        );
        assert!(r.is_err());
        assert!(s.current(&["a"]).unwrap().is_empty(), "all or nothing");
    }
}
