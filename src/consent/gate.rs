//! The per-record consent decision, as the rewriter asks for it.
//!
//! `ConsentGate` answers from what it already knows (statements fetched for
//! this response, then the shared cache) and defers the rest: the caller
//! collects the deferred subjects (`missing`), fetches them in one batch,
//! hands them over (`learn`) and resumes the rewriter. A record whose subject
//! cannot be read (missing, ambiguous, not a string or number) has no
//! provable consent: it gets the rule's `on_missing_consent` outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Consents;
use super::model::SubjectConsents;
use crate::clock::Millis;
use crate::policy::{ConsentCheck, OnMissing};
use crate::transform::{Gate, RecordOutcome, Rewriter, Subject};

#[derive(Debug)]
pub struct ConsentGate {
    check: ConsentCheck,
    /// The request's purpose (possibly more specific than the rule's).
    purpose: Arc<str>,
    now: Millis,
    shared: Option<Arc<Consents>>,
    /// Statements fetched for this response.
    local: HashMap<String, Arc<SubjectConsents>>,
}

impl ConsentGate {
    /// A gate over the shared cache; unknown subjects are deferred.
    pub fn new(
        check: ConsentCheck,
        purpose: Arc<str>,
        now: Millis,
        consents: Arc<Consents>,
    ) -> ConsentGate {
        ConsentGate {
            check,
            purpose,
            now,
            shared: Some(consents),
            local: HashMap::new(),
        }
    }

    /// A gate over a fixed set of statements; anyone else has none (policy tests).
    pub fn fixed(
        check: ConsentCheck,
        purpose: Arc<str>,
        now: Millis,
        known: HashMap<String, Arc<SubjectConsents>>,
    ) -> ConsentGate {
        ConsentGate {
            check,
            purpose,
            now,
            shared: None,
            local: known,
        }
    }

    pub fn consents(&self) -> Option<&Arc<Consents>> {
        self.shared.as_ref()
    }

    /// The subjects of `rw`'s waiting records that this gate must be told
    /// about, each once. Subjects the shared cache knows are taken from it
    /// now (a record may wait for something else, such as its key), so that
    /// once told, the gate decides every waiting record.
    pub fn missing(&mut self, rw: &Rewriter) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for s in rw.undecided() {
            let Subject::Id(id) = s else { continue };
            if self.local.contains_key(id.as_ref()) || !seen.insert(id.to_string()) {
                continue;
            }
            match self.shared.as_ref().and_then(|c| c.cached(&id)) {
                Some(known) => {
                    self.local.insert(id.into_owned(), known);
                }
                None => out.push(id.into_owned()),
            }
        }
        out
    }

    /// Statements fetched for this response.
    pub fn learn(&mut self, found: HashMap<String, Arc<SubjectConsents>>) {
        self.local.extend(found);
    }

    /// A single-record body cannot lose its record: there `Drop` refuses
    /// the response like `Block` (the rewriter's `Blocked`).
    fn outcome(&self, allowed: bool) -> RecordOutcome {
        if allowed {
            return RecordOutcome::Keep;
        }
        match self.check.on_missing {
            OnMissing::Drop => RecordOutcome::Drop,
            OnMissing::Redact => RecordOutcome::Redact,
            OnMissing::Block => RecordOutcome::Block,
        }
    }
}

impl Gate for ConsentGate {
    #[inline]
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome> {
        let Subject::Id(id) = subject else {
            return Some(self.outcome(false));
        };
        let allowed = if let Some(s) = self.local.get(id.as_ref()) {
            s.allows(&self.purpose, self.check.basis, self.now)
        } else if let Some(s) = self.shared.as_ref().and_then(|c| c.cached(&id)) {
            s.allows(&self.purpose, self.check.basis, self.now)
        } else if self.shared.is_none() {
            SubjectConsents::default().allows(&self.purpose, self.check.basis, self.now)
        } else {
            return None;
        };
        Some(self.outcome(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::consent::model::{Basis, ConsentEvent, Status};
    use crate::consent::store::MemoryStore;
    use crate::transform::{ActionTable, Limits, Program};

    #[test]
    fn defers_unknown_subjects_and_decides_once_told() {
        let consents = Arc::new(Consents::new(
            Arc::new(MemoryStore::default()),
            ManualClock::at(10_000),
        ));
        let grant = ConsentEvent {
            subject: "1".into(),
            purpose: "marketing".into(),
            status: Status::Granted,
            at: 1,
            source: "t".into(),
            expires: None,
            proof: None,
        };
        consents.record(&[grant], &|_| true).unwrap();
        let check = ConsentCheck {
            basis: Basis::Consent,
            on_missing: OnMissing::Drop,
        };
        let mut gate = ConsentGate::new(check, "marketing".into(), 10_000, Arc::clone(&consents));
        assert_eq!(gate.decide(Subject::Id("1".into())), None, "not cached yet");
        assert_eq!(gate.decide(Subject::Missing), Some(RecordOutcome::Drop));
        let prog = Arc::new(Program::validate_only());
        let table = Arc::new(ActionTable::allow_all(&prog));
        let rw = Rewriter::new(prog, table, Limits::default());
        assert!(gate.missing(&rw).is_empty());
        gate.learn(consents.fetch(&["1".into(), "2".into()]).unwrap());
        assert_eq!(
            gate.decide(Subject::Id("1".into())),
            Some(RecordOutcome::Keep)
        );
        assert_eq!(
            gate.decide(Subject::Id("2".into())),
            Some(RecordOutcome::Drop)
        );
        // A new gate finds both in the cache.
        let mut gate = ConsentGate::new(
            ConsentCheck {
                basis: Basis::Consent,
                on_missing: OnMissing::Block,
            },
            "marketing".into(),
            10_000,
            consents,
        );
        assert_eq!(
            gate.decide(Subject::Id("1".into())),
            Some(RecordOutcome::Keep)
        );
        assert_eq!(
            gate.decide(Subject::Id("2".into())),
            Some(RecordOutcome::Block)
        );
    }
}
