//! Reading the trail back: events by customer, client, purpose, route,
//! decision and time, for auditors (`consentry audit query`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{AuditError, Event, entries};
use crate::clock::Millis;

/// What to select; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The subject's pseudonym in this trail (`Audit::pseudonym`).
    pub subject: Option<String>,
    pub client: Option<String>,
    pub purpose: Option<String>,
    /// A route template, as events name it.
    pub route: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    /// From this time on (inclusive), up to this time (exclusive).
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        eq(&self.client, e.client.as_deref())
            && eq(&self.purpose, e.purpose.as_deref())
            && eq(&self.route, e.route.as_deref())
            && eq(&self.decision, Some(&e.decision))
            && eq(&self.kind, Some(&e.kind))
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
            && self
                .subject
                .as_deref()
                .is_none_or(|s| e.subjects.iter().any(|x| x.subject == s))
    }
}

/// The matching events, oldest first, with their sequence numbers; at most
/// `limit`, starting after sequence `after`.
pub fn query(
    path: &Path,
    filter: &Filter,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Event)>, AuditError> {
    let err =
        |what: &'static str| move |e: rusqlite::Error| AuditError::Store(format!("{what}: {e}"));
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err("open"))?;
    // A customer's events are found by their entries first (cheap), then parsed.
    let needle: Vec<u8> = match filter.subject.as_deref() {
        None => Vec::new(),
        Some(p) => match entries::pseudonym_bytes(p) {
            Some(b) => b.to_vec(),
            None => return Ok(Vec::new()),
        },
    };
    let mut stmt = conn
        .prepare(
            "SELECT seq, body, entries FROM audit_events
             WHERE seq > ?1 AND (length(?2) = 0 OR instr(entries, ?2) > 0) ORDER BY seq",
        )
        .map_err(err("read"))?;
    let mut rows = stmt
        .query(rusqlite::params![after as i64, needle])
        .map_err(err("read"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err("read"))? {
        if out.len() >= limit {
            break;
        }
        let seq = r.get::<_, i64>(0).map_err(err("read"))? as u64;
        let body: String = r.get(1).map_err(err("read"))?;
        let subjects: Vec<u8> = r.get(2).map_err(err("read"))?;
        let bad =
            |e: serde_json::Error| AuditError::Store(format!("event {seq} does not parse: {e}"));
        let mut event: Event = serde_json::from_str(&body).map_err(bad)?;
        let slots = entries::open(&subjects)
            .ok_or_else(|| AuditError::Store(format!("event {seq}'s entries do not check out")))?;
        // Unlinked entries are left out: nobody can say whose they were.
        event.subjects = slots.into_iter().filter_map(|s| s.entry).collect();
        if filter.matches(&event) {
            out.push((seq, event));
        }
    }
    Ok(out)
}
