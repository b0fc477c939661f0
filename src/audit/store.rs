//! Where audit events are kept: a SQLite file of their own, appended to in
//! batches (one fsync'd commit each), and read back to verify the chain.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{AuditError, chain_hash};
use crate::clock::Millis;

#[derive(Debug)]
pub struct AuditStore {
    conn: Connection,
    last_seq: u64,
    last_hash: [u8; 32],
}

fn err(what: &'static str) -> impl Fn(rusqlite::Error) -> AuditError {
    move |e| AuditError::Store(format!("{what}: {e}"))
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);";

fn hash32(v: Vec<u8>) -> Option<[u8; 32]> {
    v.try_into().ok()
}

impl AuditStore {
    /// Opens (or creates) the audit file, and reads where the chain ends.
    pub fn open(path: &Path) -> Result<AuditStore, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| AuditError::Store(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(err("configure"))?;
        conn.execute_batch(SCHEMA).map_err(err("create"))?;
        let last: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err("read the chain's end"))?;
        let (last_seq, last_hash) = match last {
            Some((s, h)) => (
                s as u64,
                hash32(h).ok_or_else(|| AuditError::Store(format!("event {s} has a bad hash")))?,
            ),
            None => (0, [0; 32]),
        };
        Ok(AuditStore {
            conn,
            last_seq,
            last_hash,
        })
    }

    /// Appends events in one transaction; their sequence numbers, or an
    /// error (and nothing appended).
    pub fn append(&mut self, events: &[(Millis, &[u8])]) -> Result<Vec<u64>, AuditError> {
        let tx = self.conn.transaction().map_err(err("begin"))?;
        let (mut seq, mut prev) = (self.last_seq, self.last_hash);
        let mut out = Vec::with_capacity(events.len());
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO audit_events (seq, at, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err("prepare"))?;
            for (at, body) in events {
                seq += 1;
                let hash = chain_hash(seq, &prev, body);
                let text = std::str::from_utf8(body)
                    .map_err(|_| AuditError::Store("an event is not UTF-8".into()))?;
                ins.execute(params![
                    seq as i64,
                    at,
                    text,
                    prev.as_slice(),
                    hash.as_slice()
                ])
                .map_err(err("append"))?;
                prev = hash;
                out.push(seq);
            }
        }
        tx.commit().map_err(err("commit"))?;
        (self.last_seq, self.last_hash) = (seq, prev);
        Ok(out)
    }
}

/// Where a chain check stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The first event that does not check out.
    pub seq: u64,
    pub why: String,
}

/// Walks the chain from the first event; the number of events checked, or
/// the first one that is wrong (changed, missing, out of place).
pub fn verify(path: &Path) -> Result<Result<u64, Broken>, AuditError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err("open"))?;
    let mut stmt = conn
        .prepare("SELECT seq, body, prev, hash FROM audit_events ORDER BY seq")
        .map_err(err("read"))?;
    let mut rows = stmt.query([]).map_err(err("read"))?;
    let (mut expect, mut prev) = (1u64, [0u8; 32]);
    let mut n = 0;
    while let Some(r) = rows.next().map_err(err("read"))? {
        let seq = r.get::<_, i64>(0).map_err(err("read"))? as u64;
        let body: String = r.get(1).map_err(err("read"))?;
        let stored_prev = hash32(r.get(2).map_err(err("read"))?);
        let stored = hash32(r.get(3).map_err(err("read"))?);
        let broken = |why: String| Ok(Err(Broken { seq, why }));
        if seq != expect {
            return Ok(Err(Broken {
                seq: expect,
                why: format!("missing: the next event found is {seq}"),
            }));
        }
        if stored_prev != Some(prev) {
            return broken("its previous-hash does not match the event before it".into());
        }
        if stored != Some(chain_hash(seq, &prev, body.as_bytes())) {
            return broken("its content does not match its hash (changed)".into());
        }
        prev = stored.unwrap_or_default();
        expect += 1;
        n += 1;
    }
    Ok(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.sqlite");
        let mut s = AuditStore::open(&path).unwrap();
        for i in 0..n {
            let body = format!(r#"{{"at":{i},"kind":"request","decision":"served"}}"#);
            assert_eq!(s.append(&[(i as i64, body.as_bytes())]).unwrap(), [i + 1]);
        }
        (dir, path)
    }

    fn sql(path: &Path, q: &str) {
        Connection::open(path).unwrap().execute_batch(q).unwrap();
    }

    #[test]
    fn the_chain_continues_across_reopens_and_checks_out() {
        let (_d, path) = trail(3);
        let mut s = AuditStore::open(&path).unwrap();
        let two: [(Millis, &[u8]); 2] = [(9, b"{\"a\":1}"), (9, b"{\"a\":2}")];
        assert_eq!(s.append(&two).unwrap(), [4, 5]);
        assert_eq!(verify(&path).unwrap(), Ok(5));
    }

    #[test]
    fn changed_missing_and_reordered_events_are_named() {
        let (_d, path) = trail(5);
        sql(
            &path,
            "UPDATE audit_events SET body = replace(body, 'served', 'refused') WHERE seq = 3",
        );
        assert_eq!(verify(&path).unwrap().unwrap_err().seq, 3);

        let (_d, path) = trail(5);
        sql(&path, "DELETE FROM audit_events WHERE seq = 2");
        let b = verify(&path).unwrap().unwrap_err();
        assert_eq!(b.seq, 2, "{b:?}");
        assert!(b.why.contains("missing"));

        let (_d, path) = trail(5);
        // Swap two events' contents (and their hashes): the chain breaks.
        sql(
            &path,
            "UPDATE audit_events SET seq = -1 WHERE seq = 2;
             UPDATE audit_events SET seq = 2 WHERE seq = 3;
             UPDATE audit_events SET seq = 3 WHERE seq = -1;",
        );
        assert_eq!(verify(&path).unwrap().unwrap_err().seq, 2);

        let (_d, path) = trail(5);
        // Rewriting one event and its own hash still breaks the next link.
        let conn = Connection::open(&path).unwrap();
        let prev: Vec<u8> = conn
            .query_row("SELECT prev FROM audit_events WHERE seq = 4", [], |r| {
                r.get(0)
            })
            .unwrap();
        let body = br#"{"forged":true}"#;
        let h = chain_hash(4, &hash32(prev).unwrap(), body);
        conn.execute(
            "UPDATE audit_events SET body = ?1, hash = ?2 WHERE seq = 4",
            params![std::str::from_utf8(body).unwrap(), h.as_slice()],
        )
        .unwrap();
        let b = verify(&path).unwrap().unwrap_err();
        assert_eq!(b.seq, 5, "{b:?}");
    }

    #[test]
    fn a_failed_commit_appends_nothing_and_the_chain_goes_on() {
        let (_d, path) = trail(2);
        let mut s = AuditStore::open(&path).unwrap();
        // Another connection holds the write lock: the append fails whole.
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE;")
            .unwrap();
        s.conn.execute_batch("PRAGMA busy_timeout = 0;").unwrap();
        assert!(s.append(&[(1, b"{}".as_slice())]).is_err());
        other.execute_batch("COMMIT;").unwrap();
        assert_eq!(s.append(&[(1, b"{}".as_slice())]).unwrap(), [3]);
        assert_eq!(verify(&path).unwrap(), Ok(3));
    }
}
