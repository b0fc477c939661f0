//! The consent store: the small interface the consent service needs, so that
//! SQLite (the default, `storage::sqlite`) and later PostgreSQL are
//! interchangeable. `MemoryStore` is for tests.
//!
//! Stores are synchronous: callers run them on a blocking thread.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use super::model::{ConsentEvent, Current, SubjectConsents};
use crate::clock::Millis;

/// A stored consent change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub event: ConsentEvent,
    /// When the store recorded it.
    pub recorded: Millis,
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// New events stored.
    pub inserted: usize,
    /// Events already stored (idempotent re-imports).
    pub unchanged: usize,
    /// New events stored in the history that did not become current,
    /// because a later statement for the same purpose exists.
    pub superseded: usize,
}

/// A customer on the suppression list (erased): their records never leave
/// the gateway again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    pub subject: String,
    pub at: Millis,
    /// The receipt id given when the erasure was made.
    pub receipt: String,
}

/// The store failed; the message names the operation, never consent data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consent store: {0}")]
pub struct StoreError(pub String);

pub trait ConsentStore: Send + Sync + fmt::Debug {
    /// Stores `events` in one transaction: all or nothing. An event equal to
    /// a stored one (every field) is not stored again. The current state
    /// follows the latest statement by when it took effect, `min(at,
    /// recorded)` (by id at equal times): a time ahead of the store's clock
    /// cannot outrank a change recorded after it, while the statement keeps
    /// its own time in the history and for idempotency.
    fn apply(&self, events: &[ConsentEvent], recorded: Millis) -> Result<Applied, StoreError>;

    /// The current statements of each subject (subjects without any are absent).
    fn current(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectConsents>, StoreError>;

    /// Every statement of a subject, oldest first.
    fn history(&self, subject: &str) -> Result<Vec<Stored>, StoreError>;

    /// Every statement, oldest first, given to `sink` one by one.
    fn export(&self, sink: &mut dyn FnMut(Stored)) -> Result<(), StoreError>;

    /// Puts `erased` on the suppression list (durably). If the subject is
    /// on it already, nothing changes and the earlier erasure is returned.
    fn erase(&self, erased: &Erased) -> Result<Option<Erased>, StoreError>;

    /// The whole suppression list.
    fn erasures(&self) -> Result<Vec<Erased>, StoreError>;

    /// Whether the store can take a write now (for `/readyz`).
    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// When a stored statement took effect.
fn effective(s: &Stored) -> Millis {
    s.event.at.min(s.recorded)
}

/// An in-memory store with the same semantics as the SQLite one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    events: Mutex<Vec<Stored>>,
    erased: Mutex<Vec<Erased>>,
}

impl MemoryStore {
    fn key(e: &ConsentEvent) -> (&str, &str, &str, Millis, &str, Option<Millis>, Option<&str>) {
        (
            &e.subject,
            &e.purpose,
            e.status.as_str(),
            e.at,
            &e.source,
            e.expires,
            e.proof.as_deref(),
        )
    }
}

impl ConsentStore for MemoryStore {
    fn apply(&self, events: &[ConsentEvent], recorded: Millis) -> Result<Applied, StoreError> {
        let mut all = self
            .events
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut out = Applied::default();
        for e in events {
            if all.iter().any(|s| Self::key(&s.event) == Self::key(e)) {
                out.unchanged += 1;
                continue;
            }
            let id = all.len() as i64 + 1;
            let newer = all.iter().any(|s| {
                s.event.subject == e.subject
                    && s.event.purpose == e.purpose
                    && effective(s) > e.at.min(recorded)
            });
            all.push(Stored {
                id,
                event: e.clone(),
                recorded,
            });
            out.inserted += 1;
            out.superseded += usize::from(newer);
        }
        Ok(out)
    }

    fn current(&self, subjects: &[&str]) -> Result<HashMap<String, SubjectConsents>, StoreError> {
        let all = self
            .events
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut latest: HashMap<(&str, &str), &Stored> = HashMap::new();
        for s in all
            .iter()
            .filter(|s| subjects.contains(&s.event.subject.as_str()))
        {
            let k = (s.event.subject.as_str(), s.event.purpose.as_str());
            match latest.get(&k) {
                Some(prev) if (effective(prev), prev.id) > (effective(s), s.id) => {}
                _ => {
                    latest.insert(k, s);
                }
            }
        }
        let mut out: HashMap<String, SubjectConsents> = HashMap::new();
        for ((subject, purpose), s) in latest {
            out.entry(subject.to_owned())
                .or_default()
                .entries
                .push(Current {
                    purpose: purpose.into(),
                    status: s.event.status,
                    expires: s.event.expires,
                    at: effective(s),
                });
        }
        Ok(out)
    }

    fn history(&self, subject: &str) -> Result<Vec<Stored>, StoreError> {
        let all = self
            .events
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut v: Vec<Stored> = all
            .iter()
            .filter(|s| s.event.subject == subject)
            .cloned()
            .collect();
        v.sort_by_key(|s| (s.event.at, s.id));
        Ok(v)
    }

    fn export(&self, sink: &mut dyn FnMut(Stored)) -> Result<(), StoreError> {
        let all = self
            .events
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let mut v = all.clone();
        v.sort_by_key(|s| (s.event.at, s.id));
        v.into_iter().for_each(sink);
        Ok(())
    }

    fn erase(&self, erased: &Erased) -> Result<Option<Erased>, StoreError> {
        let mut all = self
            .erased
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        if let Some(e) = all.iter().find(|e| e.subject == erased.subject) {
            return Ok(Some(e.clone()));
        }
        all.push(erased.clone());
        Ok(None)
    }

    fn erasures(&self) -> Result<Vec<Erased>, StoreError> {
        Ok(self
            .erased
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?
            .clone())
    }
}

/// The same checks against any store: `storage::sqlite` runs them too.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::consent::model::Status;

    pub fn ev(subject: &str, purpose: &str, status: Status, at: Millis) -> ConsentEvent {
        ConsentEvent {
            subject: subject.into(),
            purpose: purpose.into(),
            status,
            at,
            source: "test".into(),
            expires: None,
            proof: None,
        }
    }

    pub fn run(store: &dyn ConsentStore) {
        use Status::*;
        let a = store
            .apply(
                &[
                    ev("1", "marketing", Granted, 10),
                    ev("2", "marketing", Granted, 10),
                    ev("1", "analytics", Objected, 5),
                ],
                100,
            )
            .unwrap();
        assert_eq!(
            a,
            Applied {
                inserted: 3,
                unchanged: 0,
                superseded: 0
            }
        );
        // Idempotent.
        let a = store
            .apply(&[ev("1", "marketing", Granted, 10)], 101)
            .unwrap();
        assert_eq!(
            a,
            Applied {
                inserted: 0,
                unchanged: 1,
                superseded: 0
            }
        );
        // A later withdrawal becomes current; an older statement does not.
        let a = store
            .apply(
                &[
                    ev("1", "marketing", Withdrawn, 20),
                    ev("1", "marketing", Granted, 15),
                ],
                102,
            )
            .unwrap();
        assert_eq!((a.inserted, a.superseded), (2, 1));
        // The same grant with another expiry is another statement.
        let mut longer = ev("2", "marketing", Granted, 10);
        longer.expires = Some(1_000);
        let a = store.apply(&[longer.clone()], 103).unwrap();
        assert_eq!((a.inserted, a.unchanged), (1, 0));
        assert_eq!(store.apply(&[longer], 104).unwrap().unchanged, 1);
        let cur = store.current(&["1", "2", "3"]).unwrap();
        let one = &cur["1"];
        let m = one
            .entries
            .iter()
            .find(|c| &*c.purpose == "marketing")
            .unwrap();
        assert_eq!(m.status, Withdrawn);
        assert_eq!(cur["2"].entries.len(), 1);
        assert!(!cur.contains_key("3"));
        let h = store.history("1").unwrap();
        let statuses: Vec<(Millis, Status)> =
            h.iter().map(|s| (s.event.at, s.event.status)).collect();
        assert_eq!(
            statuses,
            vec![(5, Objected), (10, Granted), (15, Granted), (20, Withdrawn)]
        );
        let mut n = 0;
        store.export(&mut |_| n += 1).unwrap();
        assert_eq!(n, 6);
    }

    #[test]
    fn memory_store_meets_the_contract() {
        run(&MemoryStore::default());
    }
}
