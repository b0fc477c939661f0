//! The audit trail: one event per proxied request and per administrative
//! act, hash-chained and durable before the response it describes leaves.
//!
//! ```text
//! event    what happened: time, request id, client, purpose, method, route,
//!          status, decision, and per customer a keyed pseudonym (the log is
//!          not itself a store of personal data) with what became of their record
//! chain    each event's hash covers its sequence number, the previous hash,
//!          its exact bytes and one commitment per customer entry (SHA-256):
//!          a changed, removed or reordered event breaks the chain from there on
//! unlink   a customer entry is stored beside its commitment (a salted hash of
//!          it, `entries`); erasing the entry unlinks the customer from the
//!          event while the commitment, and so the chain, stays whole
//! writer   one thread appends events in batches, one fsync'd commit per
//!          batch (group commit); a request waits for its own commit
//! store    a SQLite file of its own (`audit.sqlite`)
//! ```

pub mod entries;
pub mod query;
pub mod report;
pub mod signing;
pub mod store;
pub mod writer;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::transform::HashKey;

/// One audit event, as stored (its JSON is what the chain hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at: Millis,
    /// `request` (the data path) or an administrative act (`consent`, `keys`, ...).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The route template (never the raw path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// served, passed, refused, aborted, streaming; or what an act did.
    pub decision: String,
    /// The refusal's problem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Per customer touched: pseudonym and what became of their record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<SubjectEntry>,
    /// Counts of what the rewriter did (masked, redacted, removed, ...),
    /// or of what an act did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Of a served response: its categories by what the purpose's rule did
    /// to them (disclosed, masked, hashed, tokens, redacted, removed); each
    /// customer entry says whether that applied to their record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<std::sync::Arc<serde_json::Value>>,
    /// The policy version that decided a request (1 at start, one more
    /// per applied reload, itself an event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

impl Event {
    /// An administrative act, now: `kind` (consent, keys, erasure, ...),
    /// who did it, what it did, whom it concerned, and counts.
    pub fn act(
        kind: &str,
        client: &str,
        decision: &str,
        subjects: Vec<SubjectEntry>,
        counts: Option<serde_json::Value>,
    ) -> Event {
        Event {
            at: crate::clock::to_ms(std::time::SystemTime::now()),
            kind: kind.to_owned(),
            request_id: None,
            client: Some(client.to_owned()),
            purpose: None,
            method: None,
            route: None,
            status: None,
            decision: decision.to_owned(),
            problem: None,
            subjects,
            counts: counts.map(Counts::Other),
            categories: None,
            policy_version: None,
        }
    }
}

/// An event's counts: a request's are the rewriter's counters, serialized
/// straight from their fields (building them as a JSON map was a third of
/// the event's cost on the hot path); an act's are whatever it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Counts {
    Request(crate::transform::Stats),
    Other(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectEntry {
    /// Keyed pseudonym of the subject id.
    pub subject: String,
    /// shown, redacted (kept in place, every field redacted), dropped, blocked.
    pub record: String,
}

/// Why an event could not be recorded. Carries no event content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit store failed: {0}")]
    Store(String),
    #[error("the audit writer is not running")]
    Stopped,
    #[error("the audit writer is overloaded")]
    Busy,
}

/// Where the trail's signing key lives: beside the trail
/// (`audit.db` -> `audit.signing-key`, 0600), made on first start.
pub fn signing_key_path(trail: &std::path::Path) -> std::path::PathBuf {
    trail.with_extension("signing-key")
}

/// Opens the trail and its signing key (made if there is none).
pub fn open_signed(trail: &std::path::Path) -> Result<store::AuditStore, AuditError> {
    let key = signing::load_or_create(&signing_key_path(trail))?;
    Ok(store::AuditStore::open(trail)?.with_signer(key))
}

/// The hash that chains event `seq` (its time as stored, which pruning
/// goes by; its body without the customer entries; the commitments to
/// those) to its predecessor.
pub fn chain_hash(
    seq: u64,
    prev: &[u8; 32],
    at: Millis,
    body: &[u8],
    commits: &[[u8; 32]],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"consentry-audit-v2\0");
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(at.to_be_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.update((commits.len() as u64).to_be_bytes());
    for c in commits {
        h.update(c);
    }
    h.finalize().into()
}

/// The pseudonym key of the audit trail: derived from the hash key with a
/// label of its own, so that audit pseudonyms never equal the `hash`
/// action's (which purposes see).
pub fn pseudonym_key(hash_key: &HashKey) -> Option<HashKey> {
    let mut derived = Vec::with_capacity(32);
    hash_key.pseudonym(b"consentry audit pseudonyms v1", &mut derived);
    HashKey::new(&derived)
}

/// The trail's pseudonym key, from the config's `keys.hash_key` (which the
/// config requires whenever there is a trail).
pub fn config_pseudonym_key(cfg: &crate::config::Config) -> Result<HashKey, AuditError> {
    cfg.hash_key
        .as_deref()
        .and_then(pseudonym_key)
        .ok_or_else(|| AuditError::Store("the audit trail needs `keys.hash_key`".into()))
}

/// The pseudonym of `subject` in the audit trail.
pub fn pseudonym(key: &HashKey, subject: &str) -> String {
    let mut out = Vec::with_capacity(32);
    key.pseudonym(subject.as_bytes(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_counts_are_stored_as_the_map_they_always_were() {
        let c = Counts::Request(crate::transform::Stats {
            records: 2,
            masked: 3,
            undecryptable: 1,
            ..Default::default()
        });
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"records":2,"records_redacted":0,"records_dropped":0,"masked":3,"hashed":0,"redacted":0,"removed":0,"detected":0,"sealed":0,"opened":0,"tokens":0,"undecryptable":1}"#
        );
        assert_eq!(serde_json::from_str::<Counts>(&json).unwrap(), c);
    }

    #[test]
    fn an_acts_counts_read_back_as_they_were_given() {
        let v = serde_json::json!({"records": 2, "erased": 1});
        let c: Counts = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c, Counts::Other(v));
    }
}
