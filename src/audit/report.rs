//! The subject access report (GDPR Art. 15 and 20): one machine-readable
//! JSON of what the gateway knows about a customer: their consent history,
//! every recorded access to their data (who, when, for what, what became of
//! their record), and their erasure state. Read-only: it works beside the
//! running gateway (`consentry subject access ID`, and the admin API, which
//! adds the CRM's current record).

use anyhow::bail;

use super::query::Filter;
use crate::config::Config;
use crate::consent::store::ConsentStore;
use crate::keys::service::subject_owner;
use crate::keys::store::{KeyStore, StoredKey};
use crate::storage::sqlite::SqliteStore;

/// The report, as JSON.
pub fn access_report(cfg: &Config, subject: &str) -> anyhow::Result<serde_json::Value> {
    crate::consent::model::check_subject(subject).map_err(anyhow::Error::msg)?;
    if !cfg.sqlite.exists() {
        bail!("no store at {} yet", cfg.sqlite.display());
    }
    let store = SqliteStore::open_read_only(&cfg.sqlite).map_err(anyhow::Error::msg)?;
    let consents: Vec<serde_json::Value> = store
        .history(subject)
        .map_err(anyhow::Error::msg)?
        .iter()
        .map(|s| crate::admin::consent::statement(s, true))
        .collect();
    let suppressed = crate::consent::store::ConsentStore::erasures(&store)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .find(|e| e.subject == subject)
        .map(|e| serde_json::json!({"at": crate::clock::rfc3339(e.at), "receipt": e.receipt}));
    let data_key = match store
        .get(&subject_owner(subject))
        .map_err(anyhow::Error::msg)?
    {
        None => serde_json::json!({"state": "none"}),
        Some(StoredKey::Live(_)) => serde_json::json!({"state": "live"}),
        Some(StoredKey::Destroyed { at, .. }) => {
            serde_json::json!({"state": "destroyed", "at": crate::clock::rfc3339(at)})
        }
    };
    let mut accesses = Vec::new();
    let mut pseudonym = None;
    if let Some(path) = cfg.audit.as_ref().filter(|p| p.exists()) {
        let key = crate::audit::config_pseudonym_key(cfg)?;
        let p = crate::audit::pseudonym(&key, subject);
        let filter = Filter {
            subject: Some(p.clone()),
            ..Filter::default()
        };
        for (seq, e) in
            super::query::query(path, &filter, 0, usize::MAX).map_err(anyhow::Error::msg)?
        {
            let record: Vec<&str> = e
                .subjects
                .iter()
                .filter(|s| s.subject == p)
                .map(|s| s.record.as_str())
                .collect();
            accesses.push(serde_json::json!({
                "seq": seq,
                "at": crate::clock::rfc3339(e.at),
                "kind": e.kind,
                "client": e.client,
                "purpose": e.purpose,
                "method": e.method,
                "route": e.route,
                "decision": e.decision,
                "record": record.join(";"),
                "categories": e.categories,
            }));
        }
        pseudonym = Some(p);
    }
    Ok(serde_json::json!({
        "subject": subject,
        "generated_at": crate::clock::rfc3339(crate::clock::to_ms(std::time::SystemTime::now())),
        "audit_pseudonym": pseudonym,
        "consent_history": consents,
        "accesses": accesses,
        "erasure": {"erased": suppressed, "data_key": data_key},
    }))
}
