//! Consent: what each customer agreed to, from a durable store, cached for
//! the hot path.
//!
//! `model` says what a statement is and how statements decide a purpose,
//! `store` is the storage interface (SQLite in `storage::sqlite`), `import`
//! reads bulk files, and `Consents` ties them together:
//!
//! - lookups go to a cache first; misses are fetched from the store in one
//!   batch per response chunk (`fetch`), never one query per record;
//! - a change is committed to the store, then the affected subjects are
//!   dropped from the cache, and only then acknowledged (`record`). A
//!   generation counter stops a lookup that raced with the change from
//!   putting the old state back. So a withdrawal holds from the very next
//!   request after the acknowledgement.
//!
//! The suppression list (erased customers) lives here too: every record of
//! an erased customer is withheld, whatever the purpose. It is loaded whole
//! at start (`load_erasures`) and held in memory; an erasure is committed,
//! then added to the set, then acknowledged.
//!
//! Never logs consent data.

pub mod gate;
pub mod import;
pub mod model;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::{Clock, Millis};
use model::{ConsentEvent, SubjectConsents, check_subject};
use store::{Applied, ConsentStore, Erased, StoreError, Stored};

/// How many subjects the cache holds before it starts over.
const CACHE_CAP: usize = 200_000;

#[derive(Debug, Default)]
struct Cache {
    map: HashMap<Box<str>, Arc<SubjectConsents>>,
    generation: u64,
}

/// The consent service.
#[derive(Debug)]
pub struct Consents {
    store: Arc<dyn ConsentStore>,
    clock: Arc<dyn Clock>,
    cache: RwLock<Cache>,
    writes: Mutex<()>,
    /// Store lookups made by `fetch` (each one a batch).
    lookups: AtomicU64,
    /// The suppression list, and whether it has anyone (the hot path's test).
    erased: RwLock<HashSet<Box<str>>>,
    any_erased: AtomicBool,
}

/// Why a consent change was refused (before anything was stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Every problem found, each naming its change.
    #[error("{}", .0.join("; "))]
    Bad(Vec<String>),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Consents {
    pub fn new(store: Arc<dyn ConsentStore>, clock: Arc<dyn Clock>) -> Consents {
        Consents {
            store,
            clock,
            cache: RwLock::new(Cache::default()),
            writes: Mutex::new(()),
            lookups: AtomicU64::new(0),
            erased: RwLock::new(HashSet::new()),
            any_erased: AtomicBool::new(false),
        }
    }

    /// Loads the suppression list from the store; the gateway does this
    /// before it serves anything.
    pub fn load_erasures(&self) -> Result<usize, StoreError> {
        let all = self.store.erasures()?;
        let mut set = self
            .erased
            .write()
            .map_err(|_| StoreError("suppression list poisoned".into()))?;
        set.extend(all.into_iter().map(|e| e.subject.into_boxed_str()));
        self.any_erased.store(!set.is_empty(), Ordering::Release);
        Ok(set.len())
    }

    /// Whether the store can take a write now (`/readyz`). Blocking.
    pub fn ready(&self) -> Result<(), String> {
        self.store.ready().map_err(|e| e.to_string())
    }

    /// Whether anyone is on the suppression list.
    #[inline]
    pub fn any_erased(&self) -> bool {
        self.any_erased.load(Ordering::Acquire)
    }

    /// Whether `subject` is on the suppression list. Fails closed: a
    /// poisoned list suppresses everyone.
    #[inline]
    pub fn is_erased(&self, subject: &str) -> bool {
        self.any_erased() && self.erased.read().map_or(true, |s| s.contains(subject))
    }

    /// Puts `subject` on the suppression list: stored durably, then in
    /// force, then returned. An earlier erasure is returned as it was
    /// (`true`: it was there already). Blocking.
    pub fn erase(&self, subject: &str, receipt: &str) -> Result<(Erased, bool), StoreError> {
        let e = Erased {
            subject: subject.to_owned(),
            at: self.now(),
            receipt: receipt.to_owned(),
        };
        let before = self.store.erase(&e)?;
        let mut set = self
            .erased
            .write()
            .map_err(|_| StoreError("suppression list poisoned".into()))?;
        set.insert(subject.into());
        self.any_erased.store(true, Ordering::Release);
        Ok(match before {
            Some(b) => (b, true),
            None => (e, false),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// How many batched store lookups the hot path has made (for metrics and tests).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The cached statements of a subject, if cached.
    #[inline]
    pub fn cached(&self, subject: &str) -> Option<Arc<SubjectConsents>> {
        self.cache.read().ok()?.map.get(subject).cloned()
    }

    /// Fetches `subjects` from the store in one batch and caches them
    /// (subjects without statements are cached as empty). Blocking.
    pub fn fetch(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, Arc<SubjectConsents>>, StoreError> {
        let before = self
            .cache
            .read()
            .map_err(|_| StoreError("cache poisoned".into()))?
            .generation;
        let refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let mut found = self.store.current(&refs)?;
        let out: HashMap<String, Arc<SubjectConsents>> = subjects
            .iter()
            .map(|s| (s.clone(), Arc::new(found.remove(s).unwrap_or_default())))
            .collect();
        let mut cache = self
            .cache
            .write()
            .map_err(|_| StoreError("cache poisoned".into()))?;
        // A change committed since the query started may not be in `found`:
        // then nothing is cached (this response may still use what it read).
        if cache.generation == before {
            if cache.map.len() + out.len() > CACHE_CAP {
                cache.map.clear();
            }
            for (k, v) in &out {
                cache.map.insert(k.as_str().into(), Arc::clone(v));
            }
        }
        Ok(out)
    }

    /// Checks, stores and publishes consent changes, all or nothing. Blocking.
    /// `knows_purpose` tells whether a purpose exists in the policies' vocabulary.
    pub fn record(
        &self,
        events: &[ConsentEvent],
        knows_purpose: &dyn Fn(&str) -> bool,
    ) -> Result<Applied, Invalid> {
        let one = events.len() == 1;
        self.record_labelled(events, knows_purpose, &|i| {
            if one {
                String::new()
            } else {
                format!("record {}", i + 1)
            }
        })
    }

    /// `record`, naming each bad change by `label(index)` (a file's line).
    /// Every problem is reported (up to 20), and nothing is stored.
    pub fn record_labelled(
        &self,
        events: &[ConsentEvent],
        knows_purpose: &dyn Fn(&str) -> bool,
        label: &dyn Fn(usize) -> String,
    ) -> Result<Applied, Invalid> {
        let now = self.now();
        let mut problems = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let Err(m) = validate(e, knows_purpose, now) {
                let l = label(i);
                problems.push(if l.is_empty() { m } else { format!("{l}: {m}") });
                if problems.len() == import::MAX_PROBLEMS {
                    problems.push("(further problems not listed)".into());
                    break;
                }
            }
        }
        if !problems.is_empty() {
            return Err(Invalid::Bad(problems));
        }
        let _one_writer = self
            .writes
            .lock()
            .map_err(|_| Invalid::Store(StoreError("consent writer poisoned".into())))?;
        // A time ahead of this clock (up to 5 minutes of skew pass
        // `validate`) takes effect as now: the store orders by min(at, now).
        let applied = self.store.apply(events, now)?;
        // Committed: from here on a failure is the service's, not the input's.
        let mut cache = self
            .cache
            .write()
            .map_err(|_| Invalid::Store(StoreError("consent cache poisoned".into())))?;
        for e in events {
            cache.map.remove(e.subject.as_str());
        }
        cache.generation += 1;
        Ok(applied)
    }

    pub fn history(&self, subject: &str) -> Result<Vec<Stored>, StoreError> {
        self.store.history(subject)
    }

    pub fn current(&self, subject: &str) -> Result<SubjectConsents, StoreError> {
        Ok(self
            .store
            .current(&[subject])?
            .remove(subject)
            .unwrap_or_default())
    }

    pub fn export(&self, sink: &mut dyn FnMut(Stored)) -> Result<(), StoreError> {
        self.store.export(sink)
    }
}

/// The checks every consent change passes, whatever its way in.
pub fn validate(
    e: &ConsentEvent,
    knows_purpose: &dyn Fn(&str) -> bool,
    now: Millis,
) -> Result<(), String> {
    check_subject(&e.subject)?;
    if !crate::policy::taxonomy::well_formed(&e.purpose) || !knows_purpose(&e.purpose) {
        return Err(format!("unknown purpose `{}`", e.purpose));
    }
    if e.source.trim().is_empty() || e.source.len() > 200 {
        return Err(
            "`source` must name where the statement was collected (1 to 200 characters)".into(),
        );
    }
    if e.proof.as_ref().is_some_and(|p| p.len() > 1000) {
        return Err("`proof` is at most 1000 characters".into());
    }
    if let Some(x) = e.expires {
        if x <= now {
            return Err("`expires_at` is in the past".into());
        }
        if x <= e.at {
            return Err("`expires_at` is before the statement itself".into());
        }
    }
    if e.at > now + 5 * 60_000 {
        return Err("`at` is in the future".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use model::{Basis, Status};
    use store::MemoryStore;

    fn ev(subject: &str, status: Status, at: Millis) -> ConsentEvent {
        ConsentEvent {
            subject: subject.into(),
            purpose: "marketing".into(),
            status,
            at,
            source: "test".into(),
            expires: None,
            proof: None,
        }
    }

    #[test]
    fn a_change_is_visible_to_the_next_lookup() {
        let clock = ManualClock::at(1_000_000);
        let c = Consents::new(Arc::new(MemoryStore::default()), clock);
        let yes = |_: &str| true;
        c.record(&[ev("7", Status::Granted, 1)], &yes).unwrap();
        let got = c.fetch(&["7".into(), "8".into()]).unwrap();
        assert!(got["7"].allows("marketing", Basis::Consent, 2));
        assert!(!got["8"].allows("marketing", Basis::Consent, 2));
        assert!(c.cached("7").is_some() && c.cached("8").is_some());
        c.record(&[ev("7", Status::Withdrawn, 5)], &yes).unwrap();
        assert!(
            c.cached("7").is_none(),
            "a change drops the subject from the cache"
        );
        assert!(!c.fetch(&["7".into()]).unwrap()["7"].allows("marketing", Basis::Consent, 6));
    }

    #[test]
    fn a_time_ahead_of_the_clock_cannot_outrank_the_next_change() {
        let store = Arc::new(MemoryStore::default());
        let c = Consents::new(store.clone(), ManualClock::at(1_000_000));
        let yes = |_: &str| true;
        // A consent platform whose clock runs 3 minutes fast.
        let grant = ev("7", Status::Granted, 1_000_000 + 180_000);
        c.record(std::slice::from_ref(&grant), &yes).unwrap();
        let a = c
            .record(&[ev("7", Status::Withdrawn, 1_000_000)], &yes)
            .unwrap();
        assert_eq!((a.inserted, a.superseded), (1, 0));
        let allowed = |c: &Consents, now| {
            c.fetch(&["7".into()]).unwrap()["7"].allows("marketing", Basis::Consent, now)
        };
        assert!(!allowed(&c, 1_000_001));
        assert_eq!(
            c.history("7").unwrap()[1].event.at,
            1_180_000,
            "its own time is kept"
        );
        // The platform retries once its time has passed: the same statement,
        // so nothing changes, and the withdrawal stays in force.
        let later = Consents::new(store, ManualClock::at(1_240_000));
        assert_eq!(later.record(&[grant], &yes).unwrap().unchanged, 1);
        assert!(!allowed(&later, 1_240_001));
    }

    #[test]
    fn bad_changes_are_refused_whole() {
        let clock = ManualClock::at(1_000_000);
        let c = Consents::new(Arc::new(MemoryStore::default()), clock);
        let only_marketing = |p: &str| p == "marketing";
        let mut past = ev("1", Status::Granted, 10);
        past.expires = Some(500);
        let mut unknown = ev("2", Status::Granted, 10);
        unknown.purpose = "nonsense".into();
        for (bad, why) in [
            (past, "in the past"),
            (unknown, "unknown purpose"),
            (ev("", Status::Granted, 1), "subject"),
        ] {
            let e = c
                .record(&[ev("ok", Status::Granted, 1), bad], &only_marketing)
                .unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        assert!(
            c.fetch(&["ok".into()]).unwrap()["ok"].entries.is_empty(),
            "nothing was stored"
        );
    }
}
