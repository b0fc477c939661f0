//! Where audit events are kept: a SQLite file of their own, appended to in
//! batches (one fsync'd commit each), and read back to verify the chain.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{AuditError, chain_hash, entries};
use crate::clock::Millis;
use crate::config::unhex;

pub struct AuditStore {
    conn: Connection,
    last_seq: u64,
    last_hash: [u8; 32],
    /// Signs checkpoints; `None`: none are written (tests of the chain alone).
    signer: Option<ed25519_dalek::SigningKey>,
    checkpoint_seq: u64,
    checkpoint_at: Millis,
    /// One process appends to a trail at a time.
    _lock: crate::storage::sqlite::StoreLock,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditStore(at event {})", self.last_seq)
    }
}

/// A checkpoint is signed after this many events, or this long after the
/// last one, whichever comes first (with the next batch).
pub const CHECKPOINT_EVENTS: u64 = 1000;
pub const CHECKPOINT_MS: Millis = 30_000;

fn err(what: &'static str) -> impl Fn(rusqlite::Error) -> AuditError {
    move |e| AuditError::Store(format!("{what}: {e}"))
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    entries BLOB NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    hash BLOB NOT NULL,
    public_key BLOB NOT NULL,
    signature BLOB NOT NULL
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
        let lock = crate::storage::sqlite::lock(path)
            .map_err(|e| AuditError::Store(e.to_string()))?
            .ok_or_else(|| {
                AuditError::Store(format!(
                    "{} is in use by another consentry process (one process appends to an audit trail; give each gateway its own `storage.audit`)",
                    path.display()
                ))
            })?;
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.execute_batch(
            // The trail is appended to, rarely read: a small page cache.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -512;",
        )
        .map_err(err("configure"))?;
        conn.execute_batch(SCHEMA).map_err(err("create"))?;
        let v2: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('audit_events') WHERE name = 'entries'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err("read the schema"))?
            > 0;
        if !v2 {
            return Err(AuditError::Store(format!(
                "{} is an audit trail of an earlier format; move it aside to start a new one",
                path.display()
            )));
        }
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
        let (checkpoint_seq, checkpoint_at): (i64, i64) = conn
            .query_row(
                "SELECT seq, at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err("read the last checkpoint"))?
            .unwrap_or((0, 0));
        Ok(AuditStore {
            conn,
            last_seq,
            last_hash,
            signer: None,
            checkpoint_seq: checkpoint_seq as u64,
            checkpoint_at,
            _lock: lock,
        })
    }

    /// Signs checkpoints with `key` from now on.
    pub fn with_signer(mut self, key: ed25519_dalek::SigningKey) -> AuditStore {
        self.signer = Some(key);
        self
    }

    /// Appends events in one transaction; their sequence numbers, or an
    /// error (and nothing appended).
    pub fn append(&mut self, events: &[Row<'_>]) -> Result<Vec<u64>, AuditError> {
        let tx = self.conn.transaction().map_err(err("begin"))?;
        let (mut seq, mut prev) = (self.last_seq, self.last_hash);
        let mut out = Vec::with_capacity(events.len());
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO audit_events (seq, at, body, entries, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err("prepare"))?;
            for row in events {
                seq += 1;
                let hash = chain_hash(seq, &prev, row.at, row.body, row.commits);
                let text = std::str::from_utf8(row.body)
                    .map_err(|_| AuditError::Store("an event is not UTF-8".into()))?;
                ins.execute(params![
                    seq as i64,
                    row.at,
                    text,
                    row.subjects,
                    prev.as_slice(),
                    hash.as_slice()
                ])
                .map_err(err("append"))?;
                prev = hash;
                out.push(seq);
            }
        }
        // A signed checkpoint over the chain's end, in the same commit.
        let now = events.last().map_or(0, |r| r.at);
        let due = seq.saturating_sub(self.checkpoint_seq) >= CHECKPOINT_EVENTS
            || now - self.checkpoint_at >= CHECKPOINT_MS;
        let mut checkpointed = None;
        if let Some(key) = self
            .signer
            .as_ref()
            .filter(|_| due && seq > self.checkpoint_seq)
        {
            let sig = super::signing::sign(key, seq, now, &prev);
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, at, hash, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    seq as i64,
                    now,
                    prev.as_slice(),
                    key.verifying_key().to_bytes().as_slice(),
                    sig.as_slice()
                ],
            )
            .map_err(err("checkpoint"))?;
            checkpointed = Some((seq, now));
        }
        tx.commit().map_err(err("commit"))?;
        (self.last_seq, self.last_hash) = (seq, prev);
        if let Some((s, at)) = checkpointed {
            (self.checkpoint_seq, self.checkpoint_at) = (s, at);
        }
        Ok(out)
    }
}

/// What a pruning removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Events removed.
    pub events: u64,
    /// The last removed event; a signed checkpoint stays at it.
    pub through: u64,
}

impl AuditStore {
    /// Removes the events older than `before` (the oldest run of them; the
    /// newest event always stays), behind a signed checkpoint at the last
    /// one removed, so that what remains still verifies and a head cut off
    /// by anyone else does not.
    pub fn prune(&mut self, before: Millis, now: Millis) -> Result<Pruned, AuditError> {
        let Some(key) = self.signer.clone() else {
            return Err(AuditError::Store("pruning needs the signing key".into()));
        };
        let tx = self.conn.transaction().map_err(err("begin"))?;
        let first_kept: Option<i64> = tx
            .query_row(
                "SELECT min(seq) FROM audit_events WHERE at >= ?1",
                [before],
                |r| r.get(0),
            )
            .map_err(err("read"))?;
        let first: Option<i64> = tx
            .query_row("SELECT min(seq) FROM audit_events", [], |r| r.get(0))
            .map_err(err("read"))?;
        let last = self.last_seq as i64;
        let through = first_kept.unwrap_or(last + 1).min(last) - 1;
        let Some(first) = first.filter(|f| *f <= through) else {
            return Ok(Pruned {
                events: 0,
                through: 0,
            });
        };
        let hash: Vec<u8> = tx
            .query_row(
                "SELECT hash FROM audit_events WHERE seq = ?1",
                [through],
                |r| r.get(0),
            )
            .map_err(err("read"))?;
        let h = hash32(hash)
            .ok_or_else(|| AuditError::Store(format!("event {through} has a bad hash")))?;
        let sig = super::signing::sign(&key, through as u64, now, &h);
        tx.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, at, hash, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![through, now, h.as_slice(), key.verifying_key().to_bytes().as_slice(), sig.as_slice()],
        )
        .map_err(err("checkpoint"))?;
        tx.execute("DELETE FROM audit_events WHERE seq <= ?1", [through])
            .map_err(err("prune"))?;
        tx.execute("DELETE FROM audit_checkpoints WHERE seq < ?1", [through])
            .map_err(err("prune"))?;
        tx.commit().map_err(err("commit"))?;
        Ok(Pruned {
            events: (through - first + 1) as u64,
            through: through as u64,
        })
    }
}

/// One event to append: its body (without customer entries), the entries
/// as stored (`entries::seal`) and their commitments.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub at: Millis,
    pub body: &'a [u8],
    pub subjects: &'a [u8],
    pub commits: &'a [[u8; 32]],
}

impl<'a> Row<'a> {
    /// An event without customer entries.
    pub fn plain(at: Millis, body: &'a [u8]) -> Row<'a> {
        Row {
            at,
            body,
            subjects: &[],
            commits: &[],
        }
    }
}

/// Unlinks a customer from every event before `before` (exclusive; 0 for
/// all): their entries' salts, pseudonyms and records are erased (and the
/// record's length), the commitments stay, so the chain still verifies.
/// Returns how many entries were unlinked.
pub fn unlink(path: &Path, pseudonym: &str, before: u64) -> Result<u64, AuditError> {
    let p = entries::pseudonym_bytes(pseudonym)
        .ok_or_else(|| AuditError::Store("a pseudonym is 32 hex digits".into()))?;
    let mut conn = Connection::open(path).map_err(err("open"))?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;")
        .map_err(err("configure"))?;
    // Takes the write lock first (waiting for the gateway's commits), so
    // that it never fails half-way on a lock upgrade.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let rows: Vec<(i64, Vec<u8>)> = {
        let mut st = tx
            .prepare(
                "SELECT seq, entries FROM audit_events
                 WHERE instr(entries, ?1) > 0 AND (?2 = 0 OR seq < ?2)",
            )
            .map_err(err("read"))?;
        let it = st
            .query_map(params![p.as_slice(), before as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err("read"))?;
        it.collect::<Result<_, _>>().map_err(err("read"))?
    };
    let mut n = 0;
    for (seq, mut blob) in rows {
        let k = entries::unlink(&mut blob, &p)
            .ok_or_else(|| AuditError::Store(format!("event {seq}'s entries are malformed")))?;
        if k > 0 {
            tx.execute(
                "UPDATE audit_events SET entries = ?1 WHERE seq = ?2",
                params![blob, seq],
            )
            .map_err(err("unlink"))?;
            n += k;
        }
    }
    tx.commit().map_err(err("commit"))?;
    // The old bytes also sit in the WAL until it is checkpointed.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(err("checkpoint the WAL"))?;
    Ok(n)
}

/// Where a chain check stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The first event that does not check out.
    pub seq: u64,
    pub why: String,
}

/// A signed checkpoint, as stored or exported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub at: Millis,
    /// Hex of the chain hash of event `seq`.
    pub hash: String,
    pub public_key: String,
    pub signature: String,
}

/// What a check of the whole trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub checkpoints: u64,
}

/// Every checkpoint in the trail, oldest first.
pub fn checkpoints(path: &Path) -> Result<Vec<Checkpoint>, AuditError> {
    checkpoints_in(&read_only(path)?)
}

fn read_only(path: &Path) -> Result<Connection, AuditError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err("open"))?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(err("configure"))?;
    Ok(conn)
}

fn checkpoints_in(conn: &Connection) -> Result<Vec<Checkpoint>, AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, at, hash, public_key, signature FROM audit_checkpoints ORDER BY seq")
        .map_err(err("read"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Checkpoint {
                seq: r.get::<_, i64>(0)? as u64,
                at: r.get(1)?,
                hash: crate::config::hex(&r.get::<_, Vec<u8>>(2)?),
                public_key: crate::config::hex(&r.get::<_, Vec<u8>>(3)?),
                signature: crate::config::hex(&r.get::<_, Vec<u8>>(4)?),
            })
        })
        .map_err(err("read"))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err("read"))
}

/// Walks the chain from the first event, then checks the checkpoints: the
/// trail's own, and `kept` (exported earlier, e.g. to another system), each
/// signed, and each matching the event it names. A trail cut short below a
/// checkpoint, or a checkpoint that no longer matches, is named. With
/// `trusted`, every checkpoint must be signed by that public key (hex).
pub fn verify_all(
    path: &Path,
    kept: &[Checkpoint],
    trusted: Option<&str>,
) -> Result<Result<Verified, Broken>, AuditError> {
    // One read transaction: a consistent snapshot while the gateway appends.
    let conn = read_only(path)?;
    conn.execute_batch("BEGIN").map_err(err("read"))?;
    let w = match walk(&conn)? {
        Ok(x) => x,
        Err(b) => return Ok(Err(b)),
    };
    let (events, hashes) = (w.last, &w.marks);
    let own = checkpoints_in(&conn)?;
    for (cp, whose) in own
        .iter()
        .map(|c| (c, "the trail's"))
        .chain(kept.iter().map(|c| (c, "a kept")))
    {
        let broken = |why: String| Ok(Err(Broken { seq: cp.seq, why }));
        if cp.seq > events {
            return broken(format!(
                "{whose} checkpoint signs event {} but the trail ends at event {events} (truncated)",
                cp.seq
            ));
        }
        let (Some(h), Some(pk), Some(sig)) =
            (unhex(&cp.hash), unhex(&cp.public_key), unhex(&cp.signature))
        else {
            return broken(format!("{whose} checkpoint is malformed"));
        };
        let Ok(h32) = <[u8; 32]>::try_from(h) else {
            return broken(format!("{whose} checkpoint is malformed"));
        };
        // A kept checkpoint from before the pruned head has nothing left to match.
        let pruned = w.first > 1 && cp.seq + 1 < w.first;
        if !pruned && hashes.get(&cp.seq) != Some(&h32) && hash_at(&conn, cp.seq)? != Some(h32) {
            return broken(format!(
                "{whose} checkpoint does not match the event it signs (the trail was rewritten)"
            ));
        }
        if !super::signing::verify(&pk, cp.seq, cp.at, &h32, &sig) {
            return broken(format!("{whose} checkpoint's signature does not verify"));
        }
        if trusted.is_some_and(|t| !t.eq_ignore_ascii_case(&cp.public_key)) {
            return broken(format!("{whose} checkpoint is signed by another key"));
        }
    }
    Ok(Ok(Verified {
        events: w.n,
        checkpoints: own.len() as u64,
    }))
}

fn hash_at(conn: &Connection, seq: u64) -> Result<Option<[u8; 32]>, AuditError> {
    let h: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM audit_events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(err("read"))?;
    Ok(h.and_then(hash32))
}

/// Walks the chain from the first event; the number of events checked, or
/// the first one that is wrong (changed, missing, out of place).
pub fn verify(path: &Path) -> Result<Result<u64, Broken>, AuditError> {
    let conn = read_only(path)?;
    conn.execute_batch("BEGIN").map_err(err("read"))?;
    Ok(walk(&conn)?.map(|w| w.n))
}

/// Events checked, the first and last event's numbers, and the chain hash
/// at each checkpoint.
struct Walked {
    n: u64,
    first: u64,
    last: u64,
    marks: std::collections::HashMap<u64, [u8; 32]>,
}

fn walk(conn: &Connection) -> Result<Result<Walked, Broken>, AuditError> {
    let marks: std::collections::HashSet<u64> = {
        let mut st = conn
            .prepare("SELECT seq FROM audit_checkpoints")
            .map_err(err("read"))?;
        let rows = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(err("read"))?;
        rows.filter_map(Result::ok).map(|s| s as u64).collect()
    };
    let mut stmt = conn
        .prepare("SELECT seq, at, body, entries, prev, hash FROM audit_events ORDER BY seq")
        .map_err(err("read"))?;
    let mut rows = stmt.query([]).map_err(err("read"))?;
    let (mut expect, mut prev) = (1u64, [0u8; 32]);
    let mut n = 0;
    let mut first = 0;
    let mut at_marks = std::collections::HashMap::new();
    while let Some(r) = rows.next().map_err(err("read"))? {
        let seq = r.get::<_, i64>(0).map_err(err("read"))? as u64;
        if n == 0 && seq > 1 {
            // Pruned: a signed checkpoint must stand where the trail now starts.
            let mark: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT hash FROM audit_checkpoints WHERE seq = ?1",
                    [seq as i64 - 1],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err("read"))?;
            let Some(h) = mark.and_then(hash32) else {
                return Ok(Err(Broken {
                    seq: 1,
                    why: format!(
                        "events 1 to {} are missing, and no checkpoint marks them as pruned",
                        seq - 1
                    ),
                }));
            };
            (expect, prev) = (seq, h);
            at_marks.insert(seq - 1, h);
        }
        if n == 0 {
            first = seq;
        }
        let at: Millis = r.get(1).map_err(err("read"))?;
        let body: String = r.get(2).map_err(err("read"))?;
        let subjects: Vec<u8> = r.get(3).map_err(err("read"))?;
        let stored_prev = hash32(r.get(4).map_err(err("read"))?);
        let stored = hash32(r.get(5).map_err(err("read"))?);
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
        let commits: Option<Vec<[u8; 32]>> =
            entries::open(&subjects).map(|v| v.iter().map(|s| s.commit).collect());
        let Some(commits) = commits else {
            return broken("a customer entry does not match its commitment (changed)".into());
        };
        if stored != Some(chain_hash(seq, &prev, at, body.as_bytes(), &commits)) {
            return broken("its content does not match its hash (changed)".into());
        }
        prev = stored.unwrap_or_default();
        if marks.contains(&seq) {
            at_marks.insert(seq, prev);
        }
        expect += 1;
        n += 1;
    }
    Ok(Ok(Walked {
        n,
        first,
        last: expect - 1,
        marks: at_marks,
    }))
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
            assert_eq!(
                s.append(&[Row::plain(i as i64, body.as_bytes())]).unwrap(),
                [i + 1]
            );
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
        let two = [Row::plain(9, b"{\"a\":1}"), Row::plain(9, b"{\"a\":2}")];
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
        let h = chain_hash(4, &hash32(prev).unwrap(), 3, body, &[]);
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
        assert!(s.append(&[Row::plain(1, b"{}")]).is_err());
        other.execute_batch("COMMIT;").unwrap();
        assert_eq!(s.append(&[Row::plain(1, b"{}")]).unwrap(), [3]);
        assert_eq!(verify(&path).unwrap(), Ok(3));
    }

    fn signed(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut s = crate::audit::open_signed(&path).unwrap();
        for i in 0..n {
            // 30 s apart: every event is also checkpointed.
            let at = (i as i64 + 1) * CHECKPOINT_MS;
            let body = format!(r#"{{"at":{at},"kind":"request","decision":"served"}}"#);
            s.append(&[Row::plain(at, body.as_bytes())]).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn signed_checkpoints_find_a_cut_tail_and_a_rewritten_trail() {
        let (_d, path) = signed(5);
        assert_eq!(
            verify_all(&path, &[], None).unwrap(),
            Ok(Verified {
                events: 5,
                checkpoints: 5
            })
        );
        let kept = checkpoints(&path).unwrap();
        let key = kept[0].public_key.clone();
        assert_eq!(
            verify_all(&path, &kept, Some(&key))
                .unwrap()
                .unwrap()
                .events,
            5
        );
        assert!(
            verify_all(&path, &[], Some(&"00".repeat(32)))
                .unwrap()
                .is_err(),
            "another key"
        );

        // The tail cut off: the trail's own checkpoints say so.
        sql(&path, "DELETE FROM audit_events WHERE seq >= 4");
        let b = verify_all(&path, &[], None).unwrap().unwrap_err();
        assert!(b.why.contains("truncated"), "{b:?}");
        // ... and with those deleted too, the kept ones still do.
        sql(&path, "DELETE FROM audit_checkpoints WHERE seq >= 4");
        assert!(verify_all(&path, &[], None).unwrap().is_ok());
        let b = verify_all(&path, &kept, None).unwrap().unwrap_err();
        assert!(
            b.why.contains("a kept checkpoint") && b.why.contains("truncated"),
            "{b:?}"
        );

        // A whole new chain (consistent hashes, new content): no signature matches.
        let (_d, path) = signed(3);
        let kept = checkpoints(&path).unwrap();
        sql(
            &path,
            "DELETE FROM audit_events; DELETE FROM audit_checkpoints;",
        );
        let mut forged = AuditStore::open(&path).unwrap();
        for i in 0..3 {
            forged
                .append(&[Row::plain(i, br#"{"forged":true}"#)])
                .unwrap();
        }
        let b = verify_all(&path, &kept, None).unwrap().unwrap_err();
        assert!(b.why.contains("rewritten"), "{b:?}");
    }

    #[test]
    fn a_changed_time_is_found_and_one_process_appends() {
        let (_d, path) = trail(4);
        // Pruning goes by the stored time: it is covered by the chain.
        sql(&path, "UPDATE audit_events SET at = 0 WHERE seq = 3");
        assert_eq!(verify(&path).unwrap().unwrap_err().seq, 3);

        let (_d, path) = trail(1);
        let _first = AuditStore::open(&path).unwrap();
        let second = AuditStore::open(&path).unwrap_err();
        assert!(second.to_string().contains("in use by another"), "{second}");
    }

    #[test]
    fn a_cut_head_behind_a_checkpoint_of_another_key_is_refused() {
        let (_d, path) = signed(5);
        let own = crate::audit::signing::public_key(&crate::audit::signing_key_path(&path))
            .unwrap()
            .unwrap();
        // A legitimate prune keeps the trail verifiable under its own key.
        {
            let mut s = crate::audit::open_signed(&path).unwrap();
            let p = s.prune(2 * CHECKPOINT_MS + 1, 10 * CHECKPOINT_MS).unwrap();
            assert_eq!(
                p,
                Pruned {
                    events: 2,
                    through: 2
                }
            );
        }
        assert!(verify_all(&path, &[], Some(&own)).unwrap().is_ok());
        // Someone cuts event 3 and signs a checkpoint at it with a key of
        // their own: only a trusted key tells.
        let conn = Connection::open(&path).unwrap();
        let prev: Vec<u8> = conn
            .query_row("SELECT prev FROM audit_events WHERE seq = 4", [], |r| {
                r.get(0)
            })
            .unwrap();
        let forger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let h = hash32(prev).unwrap();
        let sig = crate::audit::signing::sign(&forger, 3, 1, &h);
        conn.execute_batch(
            "DELETE FROM audit_events WHERE seq = 3; DELETE FROM audit_checkpoints;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO audit_checkpoints (seq, at, hash, public_key, signature) VALUES (3, 1, ?1, ?2, ?3)",
            params![h.as_slice(), forger.verifying_key().to_bytes().as_slice(), sig.as_slice()],
        )
        .unwrap();
        let b = verify_all(&path, &[], Some(&own)).unwrap().unwrap_err();
        assert!(b.why.contains("signed by another key"), "{b:?}");
    }
}
