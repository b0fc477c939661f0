//! What the rewriter asks about each record of a response: may it be shown
//! (consent), and with which keys are its tokens opened.
//!
//! A record waits (the gate defers it) until everything it needs is known:
//! its subject's consent, its subject's data key, and, for the answer to a
//! create that was encrypted under a pending key, the id the CRM assigned
//! (the binding of the key to it starts then; the answer leaves once it is
//! stored, see `take_ticket`). The missing pieces are fetched together in
//! one batch (`needs` -> `fetch` on a blocking thread -> `learn`), so a list
//! of 100 records costs one consent lookup and one key lookup, not 100.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::reject::Refusal;
use crate::consent::Consents;
use crate::consent::gate::ConsentGate;
use crate::consent::model::SubjectConsents;
use crate::keys::service::{BindTicket, Held, Keys, KeysError};
use crate::keys::vault::Vault;
use crate::keys::wrap::DataKey;
use crate::transform::{Gate, RecordOutcome, Rewriter, Seal, Subject};

/// Decides each record of a response and opens its tokens.
#[derive(Debug, Default)]
pub struct RecordGate {
    consent: Option<Box<ConsentGate>>,
    vault: Option<Box<Vault>>,
    keys: Option<Arc<Keys>>,
    /// A create's pending key (owner and key), until bound to the CRM's id.
    bind: Option<(String, Arc<DataKey>)>,
    /// Each decided record's subject and outcome, when auditing (`seen`).
    seen: Option<Vec<(String, RecordOutcome)>>,
    /// The suppression list, when anyone is on it.
    erased: Option<Arc<Consents>>,
    /// A create's binding on its way to the store: the answer waits for it
    /// before it leaves (`take_ticket`).
    ticket: Option<BindTicket>,
}

/// Subjects remembered per response for the audit event, at most.
const MAX_SEEN: usize = 100_000;

/// What the waiting records need fetched.
#[derive(Debug, Default)]
pub struct Needs {
    consents: Vec<String>,
    keys: Vec<String>,
    /// The pending key (owner and key) to bind, and the subject id.
    bind: Option<((String, Arc<DataKey>), String)>,
    /// The record that should name the created id does not.
    unbindable: bool,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.consents.is_empty() && self.keys.is_empty() && self.bind.is_none() && !self.unbindable
    }
}

/// What was fetched for `Needs`.
#[derive(Debug, Default)]
pub struct Fetched {
    consents: HashMap<String, Arc<SubjectConsents>>,
    keys: HashMap<String, Held>,
    /// A create's binding, started.
    bound: Option<BindTicket>,
}

impl RecordGate {
    /// Keeps every record; no keys (a rule without a per-record check on a
    /// resource without encrypted fields).
    pub fn keep_all() -> RecordGate {
        RecordGate::default()
    }

    pub fn new(
        consent: Option<ConsentGate>,
        keys: Option<(Arc<Keys>, Vault)>,
        bind: Option<(String, Arc<DataKey>)>,
    ) -> RecordGate {
        let (keys, vault) = match keys {
            Some((k, v)) => (Some(k), Some(Box::new(v))),
            None => (None, None),
        };
        RecordGate {
            consent: consent.map(Box::new),
            vault,
            keys,
            bind,
            seen: None,
            erased: None,
            ticket: None,
        }
    }

    /// Withholds every record of a customer on `consents`' suppression list,
    /// checked per record, so that a response already streaming when an
    /// erasure lands withholds the customer from then on (one atomic load
    /// per record while nobody is erased).
    pub fn suppress(mut self, consents: &Arc<Consents>) -> RecordGate {
        self.erased = Some(Arc::clone(consents));
        self
    }

    /// Remembers each decided record's subject and outcome (for the audit
    /// event).
    pub fn collect_subjects(mut self) -> RecordGate {
        self.seen = Some(Vec::new());
        self
    }

    /// The subjects seen so far.
    pub fn take_seen(&mut self) -> Vec<(String, RecordOutcome)> {
        self.seen.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The binding of a create's key, once started: the answer may leave
    /// only when it is stored.
    pub fn take_ticket(&mut self) -> Option<BindTicket> {
        self.ticket.take()
    }

    /// Whether a create's key still waits for the id in the CRM's answer.
    pub fn binding(&self) -> bool {
        self.bind.is_some()
    }

    /// Whether records may wait for a lookup.
    pub fn defers(&self) -> bool {
        self.consent.is_some() || self.vault.is_some() || self.bind.is_some()
    }

    /// What `rw`'s waiting records need.
    pub fn needs(&mut self, rw: &Rewriter) -> Needs {
        let mut n = Needs::default();
        if let Some(c) = &mut self.consent {
            n.consents = c.missing(rw);
        }
        if let Some(pending) = &self.bind {
            match rw.undecided().next() {
                Some(Subject::Id(id)) => n.bind = Some((pending.clone(), id.into_owned())),
                Some(_) => n.unbindable = true,
                None => {}
            }
        }
        if let Some(v) = &self.vault {
            let mut seen = HashSet::new();
            n.keys = rw
                .undecided()
                .filter_map(|s| match s {
                    Subject::Id(id) if !v.knows(&id) => Some(id.into_owned()),
                    _ => None,
                })
                .filter(|id| seen.insert(id.clone()))
                .filter(|id| n.bind.as_ref().is_none_or(|(_, b)| b != id))
                .collect();
        }
        n
    }

    /// The stores `fetch` reads.
    pub fn sources(&self) -> (Option<Arc<Consents>>, Option<Arc<Keys>>) {
        (
            self.consent.as_ref().and_then(|c| c.consents().cloned()),
            self.keys.clone(),
        )
    }

    /// Fetches `needs`. Blocking: call it on a blocking-pool thread.
    pub fn fetch(
        needs: Needs,
        consents: Option<Arc<Consents>>,
        keys: Option<Arc<Keys>>,
    ) -> Result<Fetched, Refusal> {
        let mut got = Fetched::default();
        if needs.unbindable {
            return Err(Refusal::KeyBinding);
        }
        if !needs.consents.is_empty() {
            let c = consents.ok_or(Refusal::Internal)?;
            got.consents = c.fetch(&needs.consents).map_err(|e| {
                tracing::warn!(error = %e, "consent lookup failed");
                Refusal::ConsentUnavailable
            })?;
        }
        if needs.keys.is_empty() && needs.bind.is_none() {
            return Ok(got);
        }
        let k = keys.ok_or(Refusal::Internal)?;
        if !needs.keys.is_empty() {
            got.keys = k.subject_keys(&needs.keys).map_err(keys_failed)?;
        }
        if let Some(((pending, key), subject)) = needs.bind {
            let ticket = k
                .bind_begin(&pending, Arc::clone(&key), &subject)
                .map_err(binding_failed)?;
            got.keys.insert(subject, Held::Live(key));
            got.bound = Some(ticket);
        }
        Ok(got)
    }

    pub fn learn(&mut self, got: Fetched) {
        if let Some(c) = &mut self.consent {
            c.learn(got.consents);
        }
        if let Some(v) = &mut self.vault {
            v.learn(got.keys);
        }
        if let Some(t) = got.bound {
            self.bind = None;
            self.ticket = Some(t);
        }
    }
}

/// Why a create's key could not be bound.
pub fn binding_failed(e: KeysError) -> Refusal {
    match e {
        KeysError::Taken => {
            tracing::warn!(
                "a created record's id already has a data key (or the create's pending key is no longer stored)"
            );
            Refusal::KeyBinding
        }
        e => keys_failed(e),
    }
}

pub fn keys_failed(e: KeysError) -> Refusal {
    tracing::warn!(error = %e, "data key lookup failed");
    Refusal::KeysUnavailable
}

impl Gate for RecordGate {
    #[inline]
    fn decide(&mut self, subject: Subject<'_>) -> Option<RecordOutcome> {
        if self.bind.is_some() {
            return None;
        }
        // An erased customer's record never leaves, whatever the purpose;
        // nor is it named in the audit event again.
        // A record that names two different ids (duplicate keys) might be
        // an erased customer's: withheld too while anyone is erased.
        if let Some(c) = self.erased.as_ref().filter(|c| c.any_erased()) {
            match &subject {
                Subject::Id(id) if c.is_erased(id) => return Some(RecordOutcome::Suppress),
                Subject::Ambiguous => return Some(RecordOutcome::Suppress),
                _ => {}
            }
        }
        if let (Some(v), Subject::Id(id)) = (&mut self.vault, &subject)
            && !v.knows(id)
        {
            // Most keys (and most customers' lack of one) are cached.
            let cached = self.keys.as_ref().and_then(|k| k.cached_subject(id))?;
            v.remember(id, cached);
        }
        let id = match (&self.seen, &subject) {
            (Some(_), Subject::Id(id)) => Some(id.to_string()),
            _ => None,
        };
        let outcome = match &mut self.consent {
            Some(c) => c.decide(subject),
            None => Some(RecordOutcome::Keep),
        };
        if let (Some(o), Some(id), Some(seen)) = (outcome, id, &mut self.seen)
            && seen.len() < MAX_SEEN
        {
            seen.push((id, o));
        }
        outcome
    }

    fn seal(&mut self, category: &str, seal: Seal, plain: &[u8], out: &mut Vec<u8>) -> bool {
        self.vault
            .as_ref()
            .is_some_and(|v| v.seal(category, seal, plain, out))
    }

    fn open(
        &mut self,
        subject: Option<&str>,
        category: &str,
        token: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        self.vault
            .as_ref()
            .is_some_and(|v| v.open(subject, category, token, out))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::master::MasterKeys;
    use crate::keys::service::subject_owner;
    use crate::keys::store::MemoryKeyStore;
    use crate::keys::vault::Sealer;
    use crate::policy::collect::collect;
    use crate::policy::compile::{Options, compile};
    use crate::transform::{Limits, rewrite_with};

    const POLICY: &str = r#"
name: nested
encrypt: { user.contact: randomised }
resources:
  - name: person
    match: { methods: [GET, PUT], path: "/p/{id}" }
    subject: $.id
    path_subject: id
    fields:
      $.id: user.unique_id
      $.contacts[*].value: user.contact.email
      $.profile.phones[*]: user.contact.phone_number
    unlisted: allow
rules:
  - purpose: essential.service
    allow: [user]
  - purpose: analytics.reporting
    basis: contract
    token: [user.contact.email]
    mask: { user.contact.phone_number: last4 }
"#;

    #[test]
    fn values_the_selectors_reach_inside_arrays_are_sealed_and_opened() {
        let (set, _) = compile(
            &[(PathBuf::from("n.yaml"), POLICY.to_owned())],
            &Options::default(),
        )
        .unwrap();
        let res = &set.resources()[0];
        let keys = Arc::new(Keys::new(
            MasterKeys::generate().unwrap(),
            Arc::new(MemoryKeyStore::default()),
            ManualClock::at(1),
        ));
        let dk = keys.for_write(&subject_owner("5")).unwrap();
        let vault = Vault::for_write(&keys, Some(dk), &[]).unwrap();
        let body = br#"{"id":"5","contacts":[{"type":"work","value":"a@x.example"},{"value":"b@x.example"}],"profile":{"phones":["+1 555 0101","+2 666 0202"],"note":"x"}}"#;
        let support = res.rule_for("essential.service").unwrap();
        let c = collect(res, support, body, Limits::default(), Sealer(Some(&vault))).unwrap();
        let stored = String::from_utf8(c.body.clone()).unwrap();
        assert_eq!(c.sealed, 4, "{stored}");
        for plain in ["a@x.example", "b@x.example", "555", "666"] {
            assert!(!stored.contains(plain), "{stored}");
        }
        assert!(stored.contains(r#""type":"work""#) && stored.contains(r#""note":"x""#));

        let read = |purpose: &str| {
            let rule = res.rule_for(purpose).unwrap();
            let mut gate = RecordGate::new(
                None,
                Some((Arc::clone(&keys), Vault::for_read(&keys, &[]).unwrap())),
                None,
            );
            let mut out = Vec::new();
            // The subject's key is cached: nothing waits.
            rewrite_with(
                &res.program,
                &rule.table,
                Limits::default(),
                &c.body,
                &mut gate,
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(read("essential.service").as_bytes(), body);
        let analytics = read("analytics.reporting");
        assert!(
            analytics.contains(r#"["***0101","***0202"]"#),
            "{analytics}"
        );
        assert_eq!(
            analytics.matches("\"ctk1.").count(),
            2,
            "emails stay tokens: {analytics}"
        );
    }

    const NESTED: &str = r#"
name: inner
encrypt: { user.contact: randomised }
resources:
  - name: person
    match: { methods: [GET, PUT], path: "/p/{id}" }
    subject: $.id
    path_subject: id
    fields:
      $.id: user.unique_id
      $.contact: user.contact.address
      $.contact.email: user.contact.email
    unlisted: allow
rules:
  - purpose: essential.service
    allow: [user]
  - purpose: analytics.reporting
    basis: contract
    allow: [user.contact.address, user.unique_id]
    redact: [user.contact.email]
"#;

    #[test]
    fn a_sealed_object_keeps_the_selectors_inside_it() {
        let compiled = |yaml: &str| {
            compile(
                &[(PathBuf::from("i.yaml"), yaml.to_owned())],
                &Options::default(),
            )
            .unwrap()
            .0
        };
        let set = compiled(NESTED);
        let res = &set.resources()[0];
        let keys = Arc::new(Keys::new(
            MasterKeys::generate().unwrap(),
            Arc::new(MemoryKeyStore::default()),
            ManualClock::at(1),
        ));
        let dk = keys.for_write(&subject_owner("5")).unwrap();
        let vault = Vault::for_write(&keys, Some(dk), &[]).unwrap();
        let body = br#"{"id":"5","contact":{"street":"1 Main St","email":"e@x.example"}}"#;
        let write = |res: &crate::policy::Resource| {
            let support = res.rule_for("essential.service").unwrap();
            collect(res, support, body, Limits::default(), Sealer(Some(&vault))).unwrap()
        };
        let c = write(res);
        let stored: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        // Each value its own token; the object's shape stays.
        assert_eq!(c.sealed, 2, "{stored}");
        assert!(
            stored["contact"]["street"]
                .as_str()
                .unwrap()
                .starts_with("ctk1.")
        );
        assert!(
            stored["contact"]["email"]
                .as_str()
                .unwrap()
                .starts_with("ctk1.")
        );
        let read = |res: &crate::policy::Resource, purpose: &str, body: &[u8]| {
            let rule = res.rule_for(purpose).unwrap();
            let vault = Vault::for_read(&keys, &[]).unwrap();
            let mut gate = RecordGate::new(None, Some((Arc::clone(&keys), vault)), None);
            let mut out = Vec::new();
            rewrite_with(
                &res.program,
                &rule.table,
                Limits::default(),
                body,
                &mut gate,
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            read(res, "analytics.reporting", &c.body),
            r#"{"id":"5","contact":{"street":"1 Main St","email":null}}"#
        );
        // An object sealed whole under an older policy (no selector inside
        // it) is not shown where a selector now reaches inside it.
        let older = compiled(&NESTED.replace("      $.contact.email: user.contact.email\n", ""));
        let whole = write(&older.resources()[0]);
        assert_eq!(whole.sealed, 1);
        assert_eq!(
            read(res, "analytics.reporting", &whole.body),
            r#"{"id":"5","contact":null}"#
        );
        // A token written back as a value is refused.
        let echo = format!(
            r#"{{"id":"5","contact":{{"street":{}}}}}"#,
            stored["contact"]["street"]
        );
        let support = res.rule_for("essential.service").unwrap();
        assert_eq!(
            collect(
                res,
                support,
                echo.as_bytes(),
                Limits::default(),
                Sealer(Some(&vault))
            )
            .unwrap_err(),
            crate::policy::collect::CollectError::Transform(
                crate::transform::TransformError::TokenAsValue
            )
        );
    }
}
