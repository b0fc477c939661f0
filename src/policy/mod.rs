//! Policies: which routes exist, where their personal data is, and what each
//! purpose may see of it.
//!
//! `compile` turns a folder of YAML files (`source`) into a `PolicySet`, an
//! immutable value the gateway holds behind an `Arc` and swaps whole on
//! reload. On the request path the set only routes and looks up: `decide`
//! returns a `Decision` for a method, path and purpose. Pure: no I/O after
//! loading, no logging.

pub mod collect;
pub mod compile;
pub mod explain;
pub mod source;
pub mod taxonomy;
pub mod testing;

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderName, Method};

use crate::consent::model::Basis;
use crate::transform::{ActionTable, Program, Seal};

pub use compile::{Options, load_dir};

/// Response headers that can carry personal data: they pass only where a
/// resource allows them.
pub const SENSITIVE_RESPONSE_HEADERS: &[&str] = &[
    "location",
    "content-location",
    "content-disposition",
    "link",
    "set-cookie",
    "refresh",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply the decisions.
    Enforce,
    /// Compute and count the decisions, but pass requests and responses
    /// unchanged (shadow mode); erased customers stay suppressed.
    Report,
}

/// A resource, compiled.
#[derive(Debug)]
pub struct Resource {
    pub policy: Arc<str>,
    pub name: Arc<str>,
    /// The path template as written (`/crm/v3/objects/contacts/{id}`); logged instead of the path.
    pub template: Arc<str>,
    pub methods: Vec<Method>,
    pub mode: Mode,
    pub passthrough: bool,
    pub program: Arc<Program>,
    /// For write methods (POST, PUT, PATCH): the request body's selectors.
    pub request_program: Option<Arc<Program>>,
    pub rules: Vec<Arc<Rule>>,
    /// Sensitive response headers this resource lets through.
    pub response_headers: Vec<HeaderName>,
    /// A 201 to a POST is the caller's own new record (`echo_created`).
    pub echo_created: bool,
    /// Which path segment (0-based, after the leading `/`) names a write's
    /// subject (`path_subject`).
    pub path_subject: Option<usize>,
    /// Equality searches to rewrite into tokens (`search`).
    pub search: Option<Search>,
    /// Report mode's output rule (`Rule::keeping`), made once.
    pub keep: Option<Arc<Rule>>,
}

/// Where a resource's requests search on which category.
#[derive(Debug, Default)]
pub struct Search {
    /// Query parameters.
    pub params: Vec<SearchField>,
    /// Properties of a HubSpot-style search body (then a POST is a search).
    pub hubspot_filters: Vec<SearchField>,
}

#[derive(Debug, Clone)]
pub struct SearchField {
    pub name: String,
    pub category: String,
    /// How the CRM stores it; `Deterministic` values are rewritten.
    pub seal: Seal,
}

/// What one purpose (and the purposes below it) may see of a resource.
#[derive(Debug)]
pub struct Rule {
    pub purpose: Arc<str>,
    pub basis: Option<LegalBasis>,
    /// The per-record check the basis needs (consent and legitimate interest).
    pub consent: Option<ConsentCheck>,
    /// What the purpose may see of a response.
    pub table: Arc<ActionTable>,
    /// The categories of the response by what this rule does to them
    /// (`disclosure`), for audit events.
    pub disclosure: Arc<serde_json::Value>,
    /// What it may write (collect): `allow` for the categories it may collect,
    /// `remove` for the others. Only for resources with write methods.
    pub collect: Option<Arc<ActionTable>>,
    pub minimise: Minimise,
}

/// A response's categories grouped by what `table` does to them:
/// `{"disclosed": [...], "masked": [...], "hashed": [...], "tokens": [...],
/// "redacted": [...], "removed": [...]}` (empty groups left out). Audit
/// events carry it, so that a customer's access report says which of their
/// categories a purpose saw, and how.
pub fn disclosure(program: &crate::transform::Program, table: &ActionTable) -> serde_json::Value {
    use crate::transform::Action;
    let mut groups: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        std::collections::BTreeMap::new();
    for (f, action) in program.fields.iter().zip(&table.fields) {
        let group = match action {
            Action::Allow | Action::Seal | Action::Keep => "disclosed",
            Action::Mask(_) => "masked",
            Action::Hash => "hashed",
            Action::Token => "tokens",
            Action::Redact => "redacted",
            Action::Remove => "removed",
        };
        if let Some(c) = program.categories.get(f.category as usize) {
            groups.entry(group).or_default().insert(c);
        }
    }
    serde_json::to_value(groups).unwrap_or_default()
}

/// The lawful bases of GDPR Art. 6(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegalBasis {
    Consent,
    LegitimateInterest,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
}

impl LegalBasis {
    pub const ALL: [LegalBasis; 6] = [
        LegalBasis::Consent,
        LegalBasis::LegitimateInterest,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::VitalInterests,
        LegalBasis::PublicTask,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::LegitimateInterest => "legitimate_interest",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
        }
    }

    pub fn parse(s: &str) -> Option<LegalBasis> {
        LegalBasis::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The basis a rule has when it states none. Marketing and sharing with
    /// third parties are opt-in (GDPR consent; CCPA "do not sell or share"),
    /// except sharing the law requires. Other purposes check nothing per
    /// customer.
    pub fn default_for(purpose: &str) -> Option<LegalBasis> {
        if taxonomy::is_within(purpose, "third_party_sharing.legal_obligation") {
            Some(LegalBasis::LegalObligation)
        } else if taxonomy::is_within(purpose, "marketing")
            || taxonomy::is_within(purpose, "third_party_sharing")
        {
            Some(LegalBasis::Consent)
        } else {
            None
        }
    }
}

/// What a rule checks about each record's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentCheck {
    pub basis: Basis,
    pub on_missing: OnMissing,
}

/// What happens to a record whose subject has not consented (or objected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissing {
    /// Leave the record out of the list.
    Drop,
    /// Keep its place, redact every field.
    Redact,
    /// Refuse the whole response (403).
    Block,
}

impl OnMissing {
    pub fn name(self) -> &'static str {
        match self {
            OnMissing::Drop => "drop",
            OnMissing::Redact => "redact",
            OnMissing::Block => "block",
        }
    }
}

/// What a write carrying data the purpose may not collect gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Minimise {
    /// The fields are removed before the body reaches the CRM.
    Remove,
    /// The request is refused (403).
    Refuse,
}

impl Rule {
    /// Report mode's output rule: every value passes exactly as stored
    /// (`Action::Keep`); only the suppression of erased customers applies.
    /// Its purpose is empty: the request's own purpose is the one named.
    pub fn keeping(program: &crate::transform::Program) -> Rule {
        let table = ActionTable::keep_all(program);
        let disclosure = Arc::new(disclosure(program, &table));
        Rule {
            purpose: Arc::from(""),
            basis: None,
            consent: None,
            table: Arc::new(table),
            disclosure,
            collect: None,
            minimise: Minimise::Remove,
        }
    }
}

impl Resource {
    /// Whether searches here name encrypted (deterministic) fields, which
    /// the gateway rewrites into tokens.
    pub fn search_rewrites(&self) -> bool {
        self.search.as_ref().is_some_and(|s| {
            s.params
                .iter()
                .chain(&s.hubspot_filters)
                .any(|f| f.seal == Seal::Deterministic)
        })
    }

    /// Whether a POST here is a search (its body is rewritten, not collected).
    pub fn search_body(&self) -> bool {
        self.search
            .as_ref()
            .is_some_and(|s| !s.hubspot_filters.is_empty())
    }

    /// The subject `path` (normalised) names, if the resource says where
    /// (`path_subject`) and it is a well-formed subject id: whose consent a
    /// write needs, whose key it uses, and whether the path is an erased
    /// customer's. Percent-escapes are decoded. The path must carry the id
    /// the consent store knows the customer by.
    pub fn subject_in_path(&self, path: &str) -> Option<String> {
        let seg = path.strip_prefix('/')?.split('/').nth(self.path_subject?)?;
        let id = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .ok()?;
        crate::consent::model::check_subject(&id).ok()?;
        Some(id.into_owned())
    }

    /// The consent check a `method` request needs before it is sent: for
    /// writes (POST, PUT, PATCH, DELETE) to a resource that names the
    /// customer in its path (`path_subject`), under a rule that checks
    /// consent.
    pub fn write_consent(&self, rule: &Rule, method: &Method) -> Option<ConsentCheck> {
        let write = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        self.path_subject.and(rule.consent).filter(|_| write)
    }

    /// The consent check `rule` needs for a response to `method` with
    /// `status`. Every response is checked, reads and writes alike, so an
    /// update cannot be used to read a customer who has not consented. The
    /// one exception is a 201 to a POST on a resource with `echo_created`:
    /// the record just created from the caller's minimised body, whose new
    /// id cannot have consent yet.
    pub fn consent_for(
        &self,
        rule: &Rule,
        method: &http::Method,
        status: u16,
    ) -> Option<ConsentCheck> {
        if self.echo_created && *method == http::Method::POST && status == 201 {
            None
        } else {
            rule.consent
        }
    }

    /// The rule for `purpose`: the one whose purpose is the most specific
    /// at or above it (`marketing` covers `marketing.advertising`).
    pub fn rule_for(&self, purpose: &str) -> Option<&Arc<Rule>> {
        self.rules
            .iter()
            .filter(|r| taxonomy::is_within(purpose, &r.purpose))
            .max_by_key(|r| r.purpose.len())
    }
}

/// Where a request goes.
#[derive(Debug)]
pub enum Routed<'a> {
    Found(&'a Arc<Resource>),
    /// The path matches a template only when letters are folded: some CRMs
    /// would treat it as the same resource, so it is refused.
    CaseVariant,
    /// The path exists for other methods.
    WrongMethod,
    NotFound,
}

/// What the policy says about one request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward, then rewrite the response by this rule.
    Inspect {
        resource: Arc<Resource>,
        rule: Arc<Rule>,
    },
    /// Forward without reading the body (a passthrough resource).
    Pass {
        resource: Arc<Resource>,
    },
    Deny(Denial),
}

/// Why the policy refuses a request.
#[derive(Debug, Clone)]
pub enum Denial {
    /// No resource has this path.
    Unmatched,
    /// Resources have this path, but not for this method: never forwarded,
    /// whatever `routes.unmatched` says.
    WrongMethod,
    /// The path differs from a known template only in letter case.
    CaseVariant,
    /// The resource exists but no rule covers the purpose (in report
    /// mode, the request is let through and this is what it reports).
    PurposeNotCovered(Arc<Resource>),
}

/// All policies, compiled.
#[derive(Debug, Default)]
pub struct PolicySet {
    routes: Vec<(Method, matchit::Router<usize>)>,
    folded: matchit::Router<usize>,
    resources: Vec<Arc<Resource>>,
    custom_uses: HashSet<String>,
    /// Of the files the set was compiled from (`load_dir`); audited.
    fingerprint: Option<Fingerprint>,
}

/// The policy files a set was compiled from: how many, and SHA-256 over
/// their names and bytes, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub files: usize,
    pub sha256: String,
}

impl Fingerprint {
    /// Of `(file, text)` pairs, as `load_dir` read them (sorted by path).
    pub fn of(sources: &[(std::path::PathBuf, String)]) -> Fingerprint {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (file, text) in sources {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        Fingerprint {
            files: sources.len(),
            sha256: crate::config::hex(&h.finalize()),
        }
    }
}

impl PolicySet {
    /// The files it was compiled from, when loaded from a folder.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_ref()
    }

    /// The fingerprint the audit trail names at start and on each reload;
    /// a set served with a trail comes from a folder.
    pub fn audited_fingerprint(&self) -> Result<Fingerprint, String> {
        self.fingerprint
            .clone()
            .ok_or_else(|| "the policies were not loaded from a folder".to_owned())
    }

    /// An empty set: every request is unmatched (the fail-closed default).
    pub fn empty() -> PolicySet {
        PolicySet::default()
    }

    pub(crate) fn new(
        resources: Vec<Resource>,
        custom_uses: HashSet<String>,
    ) -> Result<PolicySet, String> {
        let mut set = PolicySet {
            custom_uses,
            ..PolicySet::default()
        };
        for (i, res) in resources.into_iter().enumerate() {
            for m in &res.methods {
                let router = match set.routes.iter_mut().find(|(rm, _)| rm == m) {
                    Some((_, r)) => r,
                    None => {
                        set.routes.push((m.clone(), matchit::Router::new()));
                        match set.routes.last_mut() {
                            Some((_, r)) => r,
                            None => continue,
                        }
                    }
                };
                router
                    .insert(res.template.to_string(), i)
                    .map_err(|e| format!("route {} {}: {e}", m, res.template))?;
            }
            // Templates that differ only in case collide here; the first wins,
            // which is all the case-variant check needs.
            let _ = set.folded.insert(res.template.to_ascii_lowercase(), i);
            set.resources.push(Arc::new(res));
        }
        Ok(set)
    }

    pub fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    /// Finds the resource for a method and a normalised path.
    ///
    /// A path that, with letters folded, would select a different template
    /// than the one it matches exactly (or matches only when folded) is a
    /// case variant: a CRM that ignores case would serve another resource.
    pub fn route(&self, method: &Method, path: &str) -> Routed<'_> {
        let router = self
            .routes
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, r)| r);
        let exact = router.and_then(|r| r.at(path).ok()).map(|m| *m.value);
        let lower = path.to_ascii_lowercase();
        let folded = self.folded.at(&lower).ok().map(|m| *m.value);
        let template = |i: usize| {
            self.resources
                .get(i)
                .map(|r| r.template.to_ascii_lowercase())
        };
        match (exact, folded) {
            (Some(e), Some(f)) if template(e) != template(f) => Routed::CaseVariant,
            (Some(e), _) => match self.resources.get(e) {
                Some(res) => Routed::Found(res),
                None => Routed::NotFound,
            },
            (None, Some(_)) if self.routes.iter().any(|(_, r)| r.at(path).is_ok()) => {
                Routed::WrongMethod
            }
            (None, Some(_)) => Routed::CaseVariant,
            (None, None) => Routed::NotFound,
        }
    }

    /// Whether `purpose` is a known data use (fideslang or declared by a policy).
    pub fn knows_purpose(&self, purpose: &str) -> bool {
        taxonomy::is_default(taxonomy::Kind::Use, purpose) || self.custom_uses.contains(purpose)
    }

    /// The decision for a request with a declared purpose.
    pub fn decide(&self, method: &Method, path: &str, purpose: &str) -> Decision {
        let res = match self.route(method, path) {
            Routed::Found(r) => r,
            Routed::CaseVariant => return Decision::Deny(Denial::CaseVariant),
            Routed::WrongMethod => return Decision::Deny(Denial::WrongMethod),
            Routed::NotFound => return Decision::Deny(Denial::Unmatched),
        };
        let Some(rule) = res.rule_for(purpose) else {
            return Decision::Deny(Denial::PurposeNotCovered(Arc::clone(res)));
        };
        if res.passthrough {
            return Decision::Pass {
                resource: Arc::clone(res),
            };
        }
        Decision::Inspect {
            resource: Arc::clone(res),
            rule: Arc::clone(rule),
        }
    }
}

#[cfg(test)]
mod tests;
