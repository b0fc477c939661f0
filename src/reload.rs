//! Reload (SIGHUP, or `POST /v1/policies/reload`): the config file and the
//! policy folder are read and checked as at start; only if everything
//! passes are the policies and the clients swapped, in one atomic store.
//! A request in flight keeps the version it started with; a bad file never
//! replaces a good one: the error (file, line, fix) is logged, counted and
//! answered, and the old version keeps serving.
//!
//! What a reload changes: the policies and `clients` (API keys, purposes).
//! Everything else (listeners, TLS, upstream, storage, keys, limits) is
//! bound at start; a reload that finds those changed applies the rest and
//! names the sections that need a restart.

use std::path::Path;
use std::sync::Arc;

use crate::audit::Event;
use crate::config::{self, Config};
use crate::diag::Report;
use crate::policy::PolicySet;
use crate::proxy::Gateway;

/// `Config::sections`.
type Sections = std::collections::BTreeMap<String, [u8; 32]>;

type LoadFn = dyn Fn(&Path) -> Result<(Config, PolicySet, Report), Report> + Send + Sync;

/// How the config file is read again (`config::load`, or the demo's
/// environment).
#[derive(Clone)]
pub struct Loader(Arc<LoadFn>);

impl Default for Loader {
    fn default() -> Self {
        Loader(Arc::new(|p: &Path| config::load(p)))
    }
}

impl Loader {
    pub fn new(
        f: impl Fn(&Path) -> Result<(Config, PolicySet, Report), Report> + Send + Sync + 'static,
    ) -> Loader {
        Loader(Arc::new(f))
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loader")
    }
}

/// What an applied reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// The policy version now serving (1 at start).
    pub version: u64,
    pub resources: usize,
    pub clients: usize,
    pub policy_files: usize,
    pub policies_sha256: String,
    /// Config sections that changed but only take effect at a restart.
    pub restart_required: Vec<String>,
    pub warnings: Vec<String>,
}

/// Why a reload was refused (nothing was replaced).
#[derive(Debug, Clone)]
pub struct Refused {
    /// Every problem found, with file and line.
    pub detail: String,
}

/// Reads, checks and applies the config and policies, and records the act
/// in the audit trail and the metrics. An applied reload's audit event is
/// committed before the new version serves: if it cannot be stored, the
/// reload is refused and the old version keeps serving.
pub async fn reload(gw: &Gateway, who: &str) -> Result<Reloaded, Refused> {
    let _one = gw.reloading.lock().await;
    let loader = gw.loader.clone();
    let file = gw.config().file.clone();
    let loaded = tokio::task::spawn_blocking(move || (loader.0)(&file)).await;
    let checked = match loaded {
        Err(_) => Err("the reload task failed".to_owned()),
        Ok(Err(report)) => Err(format!(
            "{report}\n{} error(s); the serving version is unchanged",
            report.errors()
        )),
        Ok(Ok((cfg, set, warnings))) => check(gw, cfg, set, &warnings),
    };
    let result = match checked {
        Ok((plan, set, clients)) => match record(gw, who, Act::Applied(&plan)).await {
            // Checked above, recorded: applied without checking again, so
            // that nothing can fail between the event and the swap.
            Ok(()) => {
                gw.swap_checked(set, clients, plan.version);
                Ok(plan)
            }
            Err(e) => {
                // A commit that timed out may still land: a second event
                // says this version was not applied.
                let _ = record(gw, who, Act::NotApplied(plan.version)).await;
                Err(format!(
                    "the reload's audit event could not be stored ({e}); the serving version is unchanged"
                ))
            }
        },
        Err(e) => {
            // The refusal is recorded too (a trail that cannot take it is logged).
            if let Err(a) = record(gw, who, Act::Refused).await {
                tracing::error!(error = %a, "the refused reload's audit event was not stored");
            }
            Err(e)
        }
    };
    let metrics = gw.metrics();
    match &result {
        Ok(r) => {
            metrics.reload(true, r.version);
            tracing::info!(
                version = r.version,
                resources = r.resources,
                policies_sha256 = r.policies_sha256.as_str(),
                by = who,
                "reloaded: the new policies serve new requests"
            );
            for s in &r.restart_required {
                tracing::warn!(
                    section = s.as_str(),
                    "changed in the config file, but takes effect only at a restart"
                );
            }
        }
        Err(e) => {
            metrics.reload(false, 0);
            tracing::error!(
                by = who,
                "reload refused; the serving version is unchanged:\n{e}"
            );
        }
    }
    result.map_err(|detail| Refused { detail })
}

/// Everything a reload checks before anything changes: the policy folder
/// bound at start, the keys the running gateway holds, the policies against
/// the config (`check_policies`). What would be applied, with the next version.
fn check(
    gw: &Gateway,
    cfg: Config,
    set: PolicySet,
    warnings: &Report,
) -> Result<(Reloaded, PolicySet, Arc<crate::config::Clients>), String> {
    let fingerprint = set.audited_fingerprint()?;
    // Against the file the gateway started with: what changed since.
    let restart_required = changed_sections(&gw.config().sections, &cfg.sections);
    if cfg.policies_dir != gw.config().policies_dir {
        return Err(format!(
            "`policies` now names {}, but the folder is bound at start; restart to change it",
            cfg.policies_dir.display()
        ));
    }
    // Policies compiled with another hash key would hash with a key the
    // running gateway (and its audit pseudonyms) does not use. Compared by
    // value, so a changed key file is caught too.
    let same_hash_key = match (&cfg.hash_key, &gw.config().hash_key) {
        (Some(a), Some(b)) => a.same_key(b),
        (None, None) => true,
        _ => false,
    };
    if !same_hash_key || restart_required.iter().any(|s| s == "keys") {
        return Err(
            "the `keys` section (or the hash key it names) changed; keys are bound at start: restart to change them (`keys rotate` rotates the master key online)".into(),
        );
    }
    // The listener keeps the TLS it started with: a client identified by
    // its certificate needs client certificates verified there already.
    let verifies = gw
        .config()
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if !verifies && cfg.clients.by_certificates() {
        return Err(
            "a client is identified by its certificate, but the running listener does not verify client certificates (`tls.client_ca` is bound at start): restart to apply `tls`".into(),
        );
    }
    crate::proxy::check_policies(gw.config(), &set, gw.keys().map(|k| &**k))?;
    let clients = Arc::clone(&cfg.clients);
    let plan = Reloaded {
        version: gw.live().version + 1,
        resources: set.resources().len(),
        clients: clients.len(),
        policy_files: fingerprint.files,
        policies_sha256: fingerprint.sha256,
        restart_required,
        warnings: warnings.warnings().map(|w| w.to_string()).collect(),
    };
    Ok((plan, set, clients))
}

/// Top-level sections of the config file, other than `clients` and
/// `policies`, written differently in `old` and `new`.
fn changed_sections(a: &Sections, b: &Sections) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "clients" | "policies"))
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// What a reload's audit event says: to be applied (with the policies'
/// fingerprint and the version it will serve as) or refused.
enum Act<'a> {
    /// To be applied as `Reloaded::version`.
    Applied(&'a Reloaded),
    /// Refused: nothing changed.
    Refused,
    /// The event of this version was not confirmed; it was not applied.
    NotApplied(u64),
}

async fn record(gw: &Gateway, who: &str, act: Act<'_>) -> Result<(), crate::audit::AuditError> {
    let Some(audit) = gw.audit() else {
        return Ok(());
    };
    let (decision, counts) = match act {
        Act::Applied(r) => (
            "applied",
            serde_json::json!({
                "version": r.version,
                "resources": r.resources,
                "clients": r.clients,
                "policy_files": r.policy_files,
                "policies_sha256": r.policies_sha256,
            }),
        ),
        Act::NotApplied(version) => ("refused", serde_json::json!({ "not_applied": version })),
        Act::Refused => ("refused", serde_json::json!({})),
    };
    let event = Event::act("reload", who, decision, Vec::new(), Some(counts));
    audit.record(event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_other_than_clients_and_policies_are_named() {
        let old = "listen: 127.0.0.1:1\nclients: [a]\nlimits: {x: 1}\npolicies: p\n";
        let new = "listen: 127.0.0.1:2\nclients: [b]\nlimits: {x: 1}\npolicies: p\nlog: {}\n";
        let (old, new) = (config::section_digests(old), config::section_digests(new));
        assert_eq!(changed_sections(&old, &new), vec!["listen", "log"]);
        assert!(changed_sections(&old, &old).is_empty());
    }
}
