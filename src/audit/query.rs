//! Reading the trail back: events by customer, client, purpose, route,
//! decision and time, for auditors (`consentry audit query`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{AuditError, Event, StoredSubject};
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
    let needle = filter
        .subject
        .as_deref()
        .map(|p| format!("\"subject\":{}", serde_json::Value::from(p)))
        .unwrap_or_default();
    let mut stmt = conn
        .prepare(
            "SELECT seq, body, subjects FROM audit_events
             WHERE seq > ?1 AND (?2 = '' OR instr(subjects, ?2) > 0) ORDER BY seq",
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
        let subjects: String = r.get(2).map_err(err("read"))?;
        let bad =
            |e: serde_json::Error| AuditError::Store(format!("event {seq} does not parse: {e}"));
        let mut event: Event = serde_json::from_str(&body).map_err(bad)?;
        let stored: Vec<StoredSubject> = serde_json::from_str(&subjects).map_err(bad)?;
        // Unlinked entries are left out: nobody can say whose they were.
        event.subjects = stored.into_iter().filter_map(|s| s.e).collect();
        if filter.matches(&event) {
            out.push((seq, event));
        }
    }
    Ok(out)
}
