//! Policy files -> `PolicySet`: every check, every error at once.
//!
//! Loading reads a folder of YAML files, parses each (a syntax error stops
//! that file only), then checks everything that can be checked and reports
//! all problems together with file, line and a hint. What comes out is
//! immutable: selectors compiled to automata, and one action table per
//! resource and purpose, so a request only looks things up.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, Method};
use serde_saphyr::{Location, Spanned};

use super::source::{FieldSource, PolicyFile, ResourceSource, RuleSource};
use super::taxonomy::{self, Kind};
use super::{
    ConsentCheck, LegalBasis, Minimise, Mode, OnMissing, PolicySet, Resource, Rule,
    SENSITIVE_RESPONSE_HEADERS,
};
use crate::consent::model::Basis;
use crate::diag::{Report, at, parse_yaml};
use crate::transform::{
    Action, ActionTable, Detector, DetectorSet, Dfa, FieldSpec, HashKey, Mark, Mask, Program,
    Render, Seal, Selector, Unlisted, lex,
};

/// What compilation needs besides the files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Key for the `hash` action.
    pub hash_key: Option<Arc<HashKey>>,
    /// Refuse policies that hash when no key is configured (off for `policy check` without a config).
    pub require_hash_key: bool,
    /// Whether a master key ring is configured (encryption at rest).
    pub has_master_key: bool,
    /// Refuse policies that encrypt when no master key is configured.
    pub require_master_key: bool,
}

/// Whether a file in a policy folder is a policy (not a test file).
pub fn is_policy_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_test_file(p)
}

pub fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

/// The files of a folder, sorted, that `filter` accepts.
pub fn files_in(dir: &Path, filter: fn(&Path) -> bool) -> Result<Vec<PathBuf>, Report> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        let mut r = Report::default();
        r.error(
            dir,
            Location::UNKNOWN,
            format!("cannot read the policy folder: {e}"),
            Some("give the folder that holds the policy YAML files".into()),
        );
        r
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && filter(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and compiles every policy in `dir`. On success, returns the set and
/// the warnings; on failure, every error found.
pub fn load_dir(dir: &Path, opts: &Options) -> Result<(PolicySet, Report), Report> {
    let files = files_in(dir, is_policy_file)?;
    let mut sources = Vec::new();
    let mut report = Report::default();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push((f.clone(), text)),
            Err(e) => report.error(f, Location::UNKNOWN, format!("cannot read: {e}"), None),
        }
    }
    if files.is_empty() {
        report.error(
            dir,
            Location::UNKNOWN,
            "no policy files (*.yaml) in this folder",
            Some("without policies every route is refused; see policies/ in the repository for examples".into()),
        );
    }
    match compile(&sources, opts) {
        Ok((mut set, warnings)) if !report.has_errors() => {
            set.fingerprint = Some(super::Fingerprint::of(&sources));
            Ok((set, warnings))
        }
        Ok((_, warnings)) => {
            report.extend(warnings);
            report.sort();
            Err(report)
        }
        Err(more) => {
            report.extend(more);
            report.sort();
            Err(report)
        }
    }
}

/// Compiles policy texts (`(file, YAML)` pairs).
pub fn compile(
    sources: &[(PathBuf, String)],
    opts: &Options,
) -> Result<(PolicySet, Report), Report> {
    let mut r = Report::default();
    let mut parsed = Vec::new();
    for (file, text) in sources {
        match parse_yaml::<PolicyFile>(file, text) {
            Ok(p) => parsed.push((file.as_path(), p)),
            Err(d) => r.push(d),
        }
    }
    let vocab = Vocabulary::collect(&parsed, &mut r);
    let mut c = Compiler {
        r,
        vocab,
        opts,
        resources: Vec::new(),
        routes: HashMap::new(),
        names: HashMap::new(),
    };
    for (file, p) in &parsed {
        c.policy(file, p);
    }
    let Compiler {
        mut r,
        resources,
        vocab,
        ..
    } = c;
    r.sort();
    if r.has_errors() {
        return Err(r);
    }
    match PolicySet::new(resources, vocab.custom_uses) {
        Ok(set) => Ok((set, r)),
        Err(e) => {
            r.error(Path::new("policies"), Location::UNKNOWN, e, None);
            Err(r)
        }
    }
}

/// Default fideslang keys plus the custom ones the policies declare.
struct Vocabulary {
    custom_categories: HashSet<String>,
    custom_uses: HashSet<String>,
}

impl Vocabulary {
    fn collect(parsed: &[(&Path, PolicyFile)], r: &mut Report) -> Vocabulary {
        let mut v = Vocabulary {
            custom_categories: HashSet::new(),
            custom_uses: HashSet::new(),
        };
        // Declarations may build on each other across files: add all, then check parents.
        let mut declared = Vec::new();
        for (file, p) in parsed {
            for (kind, list) in [(Kind::Category, &p.categories), (Kind::Use, &p.purposes)] {
                for key in list {
                    declared.push((*file, kind, key));
                    match kind {
                        Kind::Category => v.custom_categories.insert(key.value.clone()),
                        Kind::Use => v.custom_uses.insert(key.value.clone()),
                    };
                }
            }
        }
        for (file, kind, key) in declared {
            let k = key.value.as_str();
            if !taxonomy::well_formed(k) {
                r.error(file, at(key), format!("`{k}` is not a valid {} key", kind.noun()), Some(
                    "use lowercase dotted segments of letters, digits and `_`, like `user.custom.loyalty_tier`".into(),
                ));
            } else if taxonomy::is_default(kind, k) {
                r.warning(
                    file,
                    at(key),
                    format!("`{k}` is already in the fideslang taxonomy"),
                    Some("remove it from this list".into()),
                );
            } else if !taxonomy::parent(k).is_some_and(|p| v.knows(kind, p)) {
                r.error(file, at(key), format!("custom {} `{k}` has no known parent", kind.noun()), Some(
                    "custom keys extend the taxonomy below an existing key, e.g. `user.custom_x` below `user`".into(),
                ));
            }
        }
        v
    }

    fn knows(&self, kind: Kind, key: &str) -> bool {
        taxonomy::is_default(kind, key)
            || match kind {
                Kind::Category => self.custom_categories.contains(key),
                Kind::Use => self.custom_uses.contains(key),
            }
    }

    /// Checks a category or use written in a policy; reports and returns false if unknown.
    fn check(&self, kind: Kind, file: &Path, key: &Spanned<String>, r: &mut Report) -> bool {
        let k = key.value.as_str();
        if self.knows(kind, k) {
            if let Some(new) = taxonomy::replacement(k) {
                r.warning(
                    file,
                    at(key),
                    format!("`{k}` is deprecated in fideslang"),
                    Some(format!("use `{new}`")),
                );
            }
            return true;
        }
        let hint = match taxonomy::suggest(kind, k) {
            Some(s) => format!(
                "did you mean `{s}`? Custom keys must be declared under `{}`",
                declare_key(kind)
            ),
            None => format!(
                "use a fideslang {} (see `consentry policy vocabulary`), or declare it under `{}`",
                kind.noun(),
                declare_key(kind)
            ),
        };
        r.error(
            file,
            at(key),
            format!("unknown {} `{k}`", kind.noun()),
            Some(hint),
        );
        false
    }
}

fn declare_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Category => "categories:",
        Kind::Use => "purposes:",
    }
}

struct Compiler<'a> {
    r: Report,
    vocab: Vocabulary,
    opts: &'a Options,
    resources: Vec<Resource>,
    /// (method, template) -> where it was declared, to report duplicates.
    routes: HashMap<(Method, String), String>,
    /// Policy name -> file.
    names: HashMap<String, PathBuf>,
}

/// A policy's encrypted categories.
#[derive(Debug, Default)]
struct Encrypt(Vec<(String, Seal)>);

impl Encrypt {
    /// How a field of `category` is stored: by the most specific entry at or above it.
    fn seal_for(&self, category: &str) -> Seal {
        self.0
            .iter()
            .filter(|(c, _)| taxonomy::is_within(category, c))
            .max_by_key(|(c, _)| c.len())
            .map_or(Seal::No, |(_, s)| *s)
    }
}

/// A rule with its categories checked: category -> action.
struct CheckedRule {
    purpose: String,
    /// Where the rule's purpose is written, for errors about the rule.
    at: Location,
    entries: Vec<(String, Action)>,
    basis: Option<LegalBasis>,
    consent: Option<ConsentCheck>,
    minimise: Minimise,
}

impl CheckedRule {
    /// The action of the most specific entry at or above `category`; none: redact.
    fn action_for(&self, category: &str) -> Action {
        self.entries
            .iter()
            .filter(|(c, _)| taxonomy::is_within(category, c))
            .max_by_key(|(c, _)| c.len())
            .map_or(Action::Redact, |(_, a)| *a)
    }
}

impl Compiler<'_> {
    fn policy(&mut self, file: &Path, p: &PolicyFile) {
        let name = p.name.value.trim();
        if name.is_empty() {
            self.r
                .error(file, at(&p.name), "the policy name is empty", None);
        } else if let Some(other) = self.names.insert(name.to_owned(), file.to_path_buf()) {
            self.r.error(
                file,
                at(&p.name),
                format!("policy name `{name}` is also used by {}", other.display()),
                Some("policy names must be unique".into()),
            );
        }
        let mode = match p.mode.as_ref().map(|m| m.value.as_str()) {
            None | Some("enforce") => Mode::Enforce,
            Some("report") => Mode::Report,
            Some(other) => {
                let m = p.mode.as_ref().map_or(Location::UNKNOWN, at);
                self.r.error(
                    file,
                    m,
                    format!("unknown mode `{other}`"),
                    Some("write `enforce` or `report`".into()),
                );
                Mode::Enforce
            }
        };
        let render = self.render(file, p);
        let encrypt = self.encrypt(file, p);
        let rules: Vec<CheckedRule> = self.rules(file, &p.rules, &encrypt);
        if mode == Mode::Report && !p.encrypt.is_empty() {
            let m = p.mode.as_ref().map_or(Location::UNKNOWN, at);
            self.r.warning(
                file,
                m,
                "in report mode, writes reach the CRM as they came: the categories under `encrypt` are stored in clear until the policy enforces",
                Some("enforce (remove `mode: report`) before writes carry values that must be stored encrypted".into()),
            );
        }
        if p.rules.is_empty() && !p.resources.is_empty() {
            self.r.warning(
                file,
                at(&p.name),
                "this policy has no rules: every request to its resources is refused",
                Some("add `rules:` with the purposes that may use these resources".into()),
            );
        }
        let mut seen = HashSet::new();
        for res in &p.resources {
            if !seen.insert(res.name.value.clone()) {
                self.r.error(
                    file,
                    at(&res.name),
                    format!(
                        "resource `{}` is declared twice in this policy",
                        res.name.value
                    ),
                    None,
                );
            }
            self.resource(file, name, mode, &render, &encrypt, &rules, res);
        }
    }

    /// The policy's `encrypt` entries: category -> how it is stored.
    fn encrypt(&mut self, file: &Path, p: &PolicyFile) -> Encrypt {
        let mut out = Vec::new();
        let mut entries: Vec<_> = p.encrypt.iter().collect();
        entries.sort_by_key(|(k, _)| at(k).line());
        for (c, mode) in entries {
            let known = self.vocab.check(Kind::Category, file, c, &mut self.r);
            let seal = match mode.value.as_str() {
                "randomised" | "randomized" => Seal::Randomised,
                "deterministic" => Seal::Deterministic,
                other => {
                    self.r.error(
                        file,
                        at(mode),
                        format!("unknown encryption `{other}`"),
                        Some("write `randomised` (different tokens for equal values), or `deterministic` (equal tokens, so the CRM can search on them)".into()),
                    );
                    continue;
                }
            };
            if self.opts.require_master_key && !self.opts.has_master_key {
                self.r.error(
                    file,
                    at(c),
                    "this policy encrypts, but no master key is configured",
                    Some("set `keys.master_key_file` (make one with `consentry keys generate --out FILE`) or `keys.master_key` in the config".into()),
                );
            }
            if known {
                out.push((c.value.clone(), seal));
            }
        }
        Encrypt(out)
    }

    fn render(&mut self, file: &Path, p: &PolicyFile) -> Arc<Render> {
        let mut render = Render {
            hash_key: self.opts.hash_key.clone(),
            ..Render::default()
        };
        if let Some(ph) = &p.placeholder {
            let mut q = Vec::new();
            lex::quote(ph.value.as_bytes(), &mut q);
            render.placeholder = q.into_boxed_slice();
        }
        for (k, v) in &p.detectors {
            match Detector::from_name(&k.value) {
                Some(d) => render.replacements[d as usize] = v.value.clone().into_boxed_str(),
                None => self.r.error(
                    file,
                    at(k),
                    format!("unknown detector `{}`", k.value),
                    Some(detector_hint()),
                ),
            }
        }
        Arc::new(render)
    }

    fn rules(&mut self, file: &Path, rules: &[RuleSource], encrypt: &Encrypt) -> Vec<CheckedRule> {
        let mut out = Vec::new();
        let mut purposes = HashSet::new();
        for rule in rules {
            self.vocab
                .check(Kind::Use, file, &rule.purpose, &mut self.r);
            if !purposes.insert(rule.purpose.value.clone()) {
                self.r.error(
                    file,
                    at(&rule.purpose),
                    format!("a second rule for purpose `{}`", rule.purpose.value),
                    Some("merge the two rules: one rule per purpose".into()),
                );
            }
            let mut entries: Vec<(String, Action)> = Vec::new();
            let mut lines: HashMap<String, Location> = HashMap::new();
            let mut add = |c: &Spanned<String>, a: Action, this: &mut Self| {
                if !this.vocab.check(Kind::Category, file, c, &mut this.r) {
                    return;
                }
                if let Some(prev) = lines.insert(c.value.clone(), at(c)) {
                    this.r.error(
                        file,
                        at(c),
                        format!("category `{}` has two actions in this rule", c.value),
                        Some(format!(
                            "it is also listed at line {}; keep one",
                            prev.line()
                        )),
                    );
                    return;
                }
                if a == Action::Hash && this.opts.require_hash_key && this.opts.hash_key.is_none() {
                    this.r.error(file, at(c), "this rule hashes, but no hash key is configured", Some(
                        "set `keys.hash_key` in the config (32+ random bytes, e.g. from an environment variable)".into(),
                    ));
                }
                entries.push((c.value.clone(), a));
            };
            for c in &rule.allow {
                add(c, Action::Allow, self);
            }
            for c in &rule.redact {
                add(c, Action::Redact, self);
            }
            for c in &rule.remove {
                add(c, Action::Remove, self);
            }
            for c in &rule.hash {
                add(c, Action::Hash, self);
            }
            for c in &rule.token {
                if encrypt.seal_for(&c.value) == Seal::No {
                    self.r.error(
                        file,
                        at(c),
                        format!(
                            "`token` passes the stored token, and `{}` is not encrypted",
                            c.value
                        ),
                        Some(format!(
                            "list `{}` under `encrypt:`, or use `redact` or `remove`",
                            c.value
                        )),
                    );
                }
                add(c, Action::Token, self);
            }
            let mut masks: Vec<_> = rule.mask.iter().collect();
            masks.sort_by_key(|(k, _)| at(k).line());
            for (c, m) in masks {
                match Mask::parse(&m.value) {
                    Some(mask) => add(c, Action::Mask(mask), self),
                    None => self.r.error(file, at(m), format!("unknown mask `{}`", m.value), Some(
                        "write `lastN` (e.g. last4), `firstN`, `firstN_lastM` or `email_domain`, with N and M from 1 to 32".into(),
                    )),
                }
            }
            let (basis, consent) = self.basis(file, rule);
            let minimise = match rule.minimise.as_ref().map(|m| m.value.as_str()) {
                None | Some("remove") => Minimise::Remove,
                Some("refuse") => Minimise::Refuse,
                Some(other) => {
                    let l = rule.minimise.as_ref().map_or(Location::UNKNOWN, at);
                    self.r.error(
                        file,
                        l,
                        format!("unknown `minimise` behaviour `{other}`"),
                        Some(
                            "write `remove` (take the fields out of the write) or `refuse` (403)"
                                .into(),
                        ),
                    );
                    Minimise::Remove
                }
            };
            out.push(CheckedRule {
                purpose: rule.purpose.value.clone(),
                at: at(&rule.purpose),
                entries,
                basis,
                consent,
                minimise,
            });
        }
        out
    }

    /// The rule's legal basis (stated or default) and the per-record check it needs.
    fn basis(
        &mut self,
        file: &Path,
        rule: &RuleSource,
    ) -> (Option<LegalBasis>, Option<ConsentCheck>) {
        let purpose = rule.purpose.value.as_str();
        let default = LegalBasis::default_for(purpose);
        let basis = match &rule.basis {
            None => default,
            Some(b) => match LegalBasis::parse(&b.value) {
                Some(basis) => {
                    if default == Some(LegalBasis::Consent)
                        && !matches!(basis, LegalBasis::Consent | LegalBasis::LegitimateInterest)
                    {
                        self.r.warning(file, at(b), format!(
                            "`{purpose}` is opt-in by default (GDPR consent, CCPA \"do not sell or share\"); with basis `{}` no customer's choice is checked",
                            basis.name()
                        ), Some("keep this only if the law really allows it without consent".into()));
                    }
                    Some(basis)
                }
                None => {
                    let names: Vec<&str> = LegalBasis::ALL.iter().map(|b| b.name()).collect();
                    self.r.error(
                        file,
                        at(b),
                        format!("unknown legal basis `{}`", b.value),
                        Some(format!("write one of {}", names.join(", "))),
                    );
                    default
                }
            },
        };
        let checked = match basis {
            Some(LegalBasis::Consent) => Some(Basis::Consent),
            Some(LegalBasis::LegitimateInterest) => Some(Basis::LegitimateInterest),
            _ => None,
        };
        let on_missing = match rule.on_missing_consent.as_ref() {
            None => OnMissing::Drop,
            Some(m) => {
                let parsed = match m.value.as_str() {
                    "drop" => Some(OnMissing::Drop),
                    "redact" => Some(OnMissing::Redact),
                    "block" => Some(OnMissing::Block),
                    _ => None,
                };
                match (parsed, checked) {
                    (None, _) => {
                        self.r.error(
                            file,
                            at(m),
                            format!("unknown `on_missing_consent` action `{}`", m.value),
                            Some("write `drop` (leave the record out), `redact` (blank its fields) or `block` (403)".into()),
                        );
                        OnMissing::Drop
                    }
                    (Some(_), None) => {
                        let stated = basis.map_or("none", LegalBasis::name);
                        self.r.error(
                            file,
                            at(m),
                            format!("`on_missing_consent` has no effect: this rule's basis is {stated}"),
                            Some("add `basis: consent` (or `legitimate_interest`) to check each customer's choice, or remove this line".into()),
                        );
                        OnMissing::Drop
                    }
                    (Some(o), Some(_)) => o,
                }
            }
        };
        let consent = checked.map(|basis| ConsentCheck { basis, on_missing });
        (basis, consent)
    }

    fn selector(&mut self, file: &Path, s: &Spanned<String>) -> Option<Selector> {
        match Selector::parse(&s.value) {
            Ok(sel) => Some(sel),
            Err(e) => {
                self.r.error(
                    file,
                    at(s),
                    format!("selector `{}`: {e}", s.value),
                    Some("selectors are a JSONPath subset: $, .name, ['name'], [*], ..name".into()),
                );
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the policy-wide settings a resource compiles against
    fn resource(
        &mut self,
        file: &Path,
        policy: &str,
        mode: Mode,
        render: &Arc<Render>,
        encrypt: &Encrypt,
        rules: &[CheckedRule],
        res: &ResourceSource,
    ) {
        let name = res.name.value.clone();
        let template = self.template(file, &res.route.path);
        let methods = self.methods(file, res);
        if let Some(t) = &template {
            for m in &methods {
                let key = (m.clone(), t.clone());
                let here = format!("resource `{name}` in {}", file.display());
                if let Some(other) = self.routes.insert(key, here) {
                    self.r.error(
                        file,
                        at(&res.route.path),
                        format!("{m} {t} is already declared by {other}"),
                        Some(
                            "every method and path template belongs to exactly one resource".into(),
                        ),
                    );
                }
            }
        }
        let passthrough = res.passthrough.as_ref().is_some_and(|p| p.value);
        if passthrough
            && (!res.fields.is_empty()
                || !res.envelope.is_empty()
                || res.records.is_some()
                || res.subject.is_some())
        {
            self.r.error(
                file,
                at(&res.name),
                "a passthrough resource cannot have records, subject, fields or envelope",
                Some(
                    "passthrough forwards the body unread; drop `passthrough` to inspect it".into(),
                ),
            );
        }
        let records = match &res.records {
            Some(s) => self.selector(file, s),
            None => Some(Selector::root()),
        };
        let subject = res.subject.as_ref().and_then(|s| self.selector(file, s));
        let single = records.as_ref().is_some_and(|r| r.steps().is_empty());
        if single && !res.envelope.is_empty() {
            let first = res.envelope.keys().next().map_or(Location::UNKNOWN, at);
            self.r.error(
                file,
                first,
                "`envelope` needs a `records` selector other than `$`",
                Some(
                    "with `records: $` the whole body is the record: list these under `fields`"
                        .into(),
                ),
            );
        }
        let unlisted = match res.unlisted.as_ref().map(|u| u.value.as_str()) {
            None | Some("redact") => Unlisted::Redact,
            Some("allow") => Unlisted::Allow,
            Some("remove") => Unlisted::Remove,
            Some(other) => {
                let l = res.unlisted.as_ref().map_or(Location::UNKNOWN, at);
                self.r.error(
                    file,
                    l,
                    format!("unknown `unlisted` action `{other}`"),
                    Some("write `allow`, `redact` or `remove`".into()),
                );
                Unlisted::Redact
            }
        };
        let mut response_headers = Vec::new();
        for h in &res.response_headers {
            match HeaderName::from_bytes(h.value.as_bytes()) {
                Ok(hn) if SENSITIVE_RESPONSE_HEADERS.contains(&hn.as_str()) => {
                    response_headers.push(hn)
                }
                Ok(hn) => self.r.warning(
                    file,
                    at(h),
                    format!(
                        "`{hn}` passes anyway: only {} are held back",
                        SENSITIVE_RESPONSE_HEADERS.join(", ")
                    ),
                    None,
                ),
                Err(_) => self.r.error(
                    file,
                    at(h),
                    format!("`{}` is not a header name", h.value),
                    None,
                ),
            }
        }

        // Fields: record-relative, then envelope (body-relative).
        let mut fields: Vec<FieldSpec> = Vec::new();
        let mut categories: Vec<Arc<str>> = Vec::new();
        let mut rec_sels: Vec<(Selector, Mark)> = Vec::new();
        let mut env_sels: Vec<(Selector, Mark)> = Vec::new();
        for (map, envelope) in [(&res.fields, false), (&res.envelope, true)] {
            let mut entries: Vec<(&Spanned<String>, &FieldSource)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| (at(k).line(), at(k).column()));
            for (sel_text, f) in entries {
                let sel = self.selector(file, sel_text);
                let known = self
                    .vocab
                    .check(Kind::Category, file, &f.category, &mut self.r);
                let mut scan = DetectorSet::EMPTY;
                for d in &f.scan {
                    match Detector::from_name(&d.value) {
                        Some(det) => scan = scan.with(det),
                        None => self.r.error(
                            file,
                            at(d),
                            format!("unknown detector `{}`", d.value),
                            Some(detector_hint()),
                        ),
                    }
                }
                let (Some(sel), true) = (sel, known) else {
                    continue;
                };
                let category = match categories.iter().position(|c| **c == *f.category.value) {
                    Some(i) => i,
                    None => {
                        categories.push(f.category.value.as_str().into());
                        categories.len() - 1
                    }
                };
                let mark = Mark::Field(fields.len() as u32);
                fields.push(FieldSpec {
                    selector: sel_text.value.clone(),
                    category: category as u16,
                    scan,
                    seal: encrypt.seal_for(&f.category.value),
                });
                if envelope {
                    env_sels.push((sel, mark))
                } else {
                    rec_sels.push((sel, mark))
                }
            }
        }
        if categories.len() > u16::MAX as usize {
            self.r.error(
                file,
                at(&res.name),
                "too many categories in one resource",
                None,
            );
        }
        if !passthrough {
            // Consent rules this resource cannot serve: the first offending
            // rule is named.
            let at_res = at(&res.name);
            let mut refuse = |bad: &dyn Fn(&CheckedRule) -> bool, why: &str, hint: &str| {
                if let Some(rule) = rules.iter().find(|r| bad(r)) {
                    self.r.error(
                        file,
                        at_res,
                        format!(
                            "resource `{name}` {why}, but the rule for `{}` (line {}) checks each customer's consent",
                            rule.purpose,
                            rule.at.line()
                        ),
                        Some(hint.into()),
                    );
                }
            };
            if res.subject.is_none() {
                refuse(
                    &|r| r.consent.is_some(),
                    "has no `subject:`",
                    "add `subject:` with where a record's customer id is, relative to the record, e.g. `subject: $.id`",
                );
            }
            if unlisted == Unlisted::Allow {
                refuse(
                    &|r| {
                        r.consent
                            .is_some_and(|c| c.on_missing == super::OnMissing::Redact)
                    },
                    "has `unlisted: allow`, so a record without consent could not be redacted whole (`on_missing_consent: redact`)",
                    "use `unlisted: redact` (or `remove`) on this resource, or `on_missing_consent: drop` or `block`",
                );
            }
        }
        let echo_created = match &res.echo_created {
            Some(e) if e.value && !methods.contains(&Method::POST) => {
                self.r.error(
                    file,
                    at(e),
                    "`echo_created` is about 201 answers to POST, and this resource takes no POST",
                    Some("add POST to `methods`, or remove it".into()),
                );
                false
            }
            Some(e) => e.value,
            None => false,
        };
        let path_subject = res.path_subject.as_ref().and_then(|p| {
            let want = format!("{{{}}}", p.value);
            let at_seg = res
                .route
                .path
                .value
                .trim_start_matches('/')
                .split('/')
                .position(|s| s == want);
            if passthrough {
                self.r.error(
                    file,
                    at(p),
                    "`path_subject` has no effect on a passthrough resource: nothing is checked there",
                    Some("remove `passthrough: true` (then the writes are checked), or remove `path_subject`".into()),
                );
            }
            if at_seg.is_none() {
                self.r.error(
                    file,
                    at(p),
                    format!(
                        "`path_subject: {}` names no parameter of this path",
                        p.value
                    ),
                    Some(format!(
                        "write the name of a `{{param}}` in `{}`",
                        res.route.path.value
                    )),
                );
            }
            at_seg
        });
        let search = self.search(file, encrypt, res);
        let search_body = search
            .as_ref()
            .is_some_and(|s| !s.hubspot_filters.is_empty());
        if search_body && !methods.contains(&Method::POST) {
            let l = res
                .search
                .as_ref()
                .and_then(|s| s.hubspot_filters.keys().next())
                .map_or(at(&res.name), at);
            self.r.error(
                file,
                l,
                "`hubspot_filters` rewrites POST search bodies, and this resource takes no POST",
                Some("add POST to `methods`, or use `params` for query parameters".into()),
            );
        }
        // A POST with a search body is a read.
        let writes = methods.iter().any(|m| {
            (*m == Method::POST && !search_body) || *m == Method::PUT || *m == Method::PATCH
        });
        let sealed_fields = fields.iter().any(|f| f.seal != Seal::No);
        if writes && sealed_fields && !passthrough && path_subject.is_none() {
            // Tokens are made with the data key of the customer written to:
            // named in the path, or (a create) found in the CRM's answer.
            // One key per write: the body must be one record.
            let one_record = res
                .request_records
                .as_ref()
                .is_none_or(|r| r.value.trim() == "$");
            let create = methods
                .iter()
                .all(|m| *m == Method::POST || *m == Method::GET)
                && res.subject.is_some()
                && one_record
                && records.as_ref().is_some_and(|r| r.steps().is_empty());
            if !create {
                self.r.error(
                    file,
                    at(&res.name),
                    format!("resource `{name}` writes encrypted categories, but the customer written to is not known"),
                    Some("add `path_subject:` (the path parameter that names the customer), or, for a create (POST) of one record, `records: $` and `subject:` so the key is bound to the id in the CRM's answer".into()),
                );
            }
        }
        if sealed_fields && !passthrough && res.subject.is_none() {
            self.r.error(
                file,
                at(&res.name),
                format!("resource `{name}` has encrypted fields but no `subject:`: their tokens open only with the key of the record's customer"),
                Some("add `subject:` with where a record's customer id is, e.g. `subject: $.id`".into()),
            );
        }
        let request_records = match (&res.request_records, writes && !passthrough) {
            (Some(s), true) => self.selector(file, s),
            (None, true) => Some(Selector::root()),
            (Some(s), false) => {
                self.r.error(
                    file,
                    at(s),
                    "`request_records` is for resources that accept writes",
                    Some("list POST, PUT or PATCH under `methods`, or remove it".into()),
                );
                None
            }
            (None, false) => None,
        };
        let request_program = request_records.and_then(|rr| {
            // A one-record body has no envelope: its envelope fields do not apply.
            let mut env = if rr.steps().is_empty() {
                Vec::new()
            } else {
                env_sels.clone()
            };
            env.push((rr, Mark::Record));
            match (Dfa::build(&env), Dfa::build(&rec_sels)) {
                (Ok(e), Ok(r)) => Some(Arc::new(Program::new(
                    e,
                    r,
                    fields.clone(),
                    categories.clone(),
                    unlisted,
                    Arc::clone(render),
                ))),
                (Err(e), _) | (_, Err(e)) => {
                    self.r.error(
                        file,
                        at(&res.name),
                        e.to_string(),
                        Some("use fewer `..` selectors".into()),
                    );
                    None
                }
            }
        });
        let (Some(records), Some(template)) = (records, template) else {
            return;
        };
        if let Some(s) = subject {
            rec_sels.push((s, Mark::Subject));
        }
        env_sels.push((records, Mark::Record));
        let (envelope, record) = match (Dfa::build(&env_sels), Dfa::build(&rec_sels)) {
            (Ok(e), Ok(r)) => (e, r),
            (Err(e), _) | (_, Err(e)) => {
                self.r.error(
                    file,
                    at(&res.name),
                    e.to_string(),
                    Some("use fewer `..` selectors".into()),
                );
                return;
            }
        };
        // An envelope field that holds records would hold back the whole list
        // until it ends (the field is decided as a whole): refuse it here.
        let holds_records = envelope.reaches_below(|m| *m == Mark::Record);
        for (id, st) in envelope.states().iter().enumerate() {
            for m in st.marks.iter() {
                if let (Mark::Field(f), true) = (m, holds_records[id]) {
                    let sel = &fields[*f as usize].selector;
                    let loc = res
                        .envelope
                        .keys()
                        .find(|k| k.value == *sel)
                        .map_or(at(&res.name), at);
                    self.r.error(file, loc, format!("envelope selector `{sel}` reaches a value that holds records"), Some(
                        "classify the values around the records instead, e.g. `$.paging`, not an ancestor of `records`".into(),
                    ));
                }
            }
        }
        let program = Arc::new(Program::new(
            envelope,
            record,
            fields,
            categories,
            unlisted,
            Arc::clone(render),
        ));
        let rules = rules
            .iter()
            .map(|rule| {
                let table = Arc::new(table(&program, rule));
                Arc::new(Rule {
                    purpose: rule.purpose.as_str().into(),
                    basis: rule.basis,
                    consent: rule.consent,
                    disclosure: Arc::new(super::disclosure(&program, &table)),
                    table,
                    collect: request_program
                        .as_ref()
                        .map(|p| Arc::new(collect_table(p, rule))),
                    minimise: rule.minimise,
                })
            })
            .collect();
        let keep = (mode == super::Mode::Report).then(|| Arc::new(Rule::keeping(&program)));
        self.resources.push(Resource {
            policy: policy.into(),
            name: name.into(),
            template: template.into(),
            methods,
            mode,
            passthrough,
            program,
            request_program,
            rules,
            response_headers,
            echo_created,
            path_subject,
            search,
            keep,
        });
    }

    /// The resource's `search` entries; searching needs equal tokens for
    /// equal values, so a randomised category cannot be searched.
    fn search(
        &mut self,
        file: &Path,
        encrypt: &Encrypt,
        res: &ResourceSource,
    ) -> Option<super::Search> {
        let src = res.search.as_ref()?;
        let mut out = super::Search::default();
        for (map, params) in [(&src.params, true), (&src.hubspot_filters, false)] {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(k, _)| at(k).line());
            for (name, c) in entries {
                if !self.vocab.check(Kind::Category, file, c, &mut self.r) {
                    continue;
                }
                let seal = encrypt.seal_for(&c.value);
                if seal == Seal::Randomised {
                    self.r.error(
                        file,
                        at(c),
                        format!("`{}` searches `{}`, which is encrypted `randomised`: equal values have different tokens, so the CRM could not find them", name.value, c.value),
                        Some(format!("encrypt `{}` as `deterministic` under `encrypt:`, or remove this search entry", c.value)),
                    );
                    continue;
                }
                let field = super::SearchField {
                    name: name.value.clone(),
                    category: c.value.clone(),
                    seal,
                };
                if params {
                    out.params.push(field);
                } else {
                    out.hubspot_filters.push(field);
                }
            }
        }
        Some(out)
    }

    fn methods(&mut self, file: &Path, res: &ResourceSource) -> Vec<Method> {
        let mut out = Vec::new();
        if res.route.methods.is_empty() {
            self.r.error(
                file,
                at(&res.route.path),
                "no methods",
                Some("list methods, e.g. `methods: [GET]`".into()),
            );
        }
        for m in &res.route.methods {
            let up = m.value.to_ascii_uppercase();
            match up.as_str() {
                "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => {
                    if let Ok(method) = Method::from_bytes(up.as_bytes())
                        && !out.contains(&method) {
                            out.push(method);
                        }
                }
                "CONNECT" | "TRACE" => self.r.error(file, at(m), format!("{up} is never proxied"), Some(
                    "consentry refuses CONNECT and TRACE: they would tunnel or echo data past the policy".into(),
                )),
                _ => self.r.error(file, at(m), format!("unknown method `{}`", m.value), Some(
                    "use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS".into(),
                )),
            }
        }
        // A GET resource answers HEAD with the same decision.
        if out.contains(&Method::GET) && !out.contains(&Method::HEAD) {
            out.push(Method::HEAD);
        }
        out
    }

    /// Checks a path template: `/literal/{param}/...`, as normalised paths look.
    fn template(&mut self, file: &Path, t: &Spanned<String>) -> Option<String> {
        let s = t.value.as_str();
        let mut err = |msg: String, hint: &str| {
            self.r.error(file, at(t), msg, Some(hint.into()));
            None
        };
        if !s.starts_with('/') {
            return err(
                format!("path template `{s}` must start with `/`"),
                "write the path as the client sends it, e.g. /crm/v3/objects/contacts/{id}",
            );
        }
        if s.len() > 1 && s.ends_with('/') {
            return err(
                format!("path template `{s}` ends with `/`"),
                "paths are matched without a trailing slash; remove it",
            );
        }
        let mut params = HashSet::new();
        for seg in s[1..].split('/') {
            if s == "/" {
                break;
            }
            if seg.is_empty() {
                return err(
                    format!("path template `{s}` has an empty segment"),
                    "remove the doubled `/`",
                );
            }
            if let Some(p) = seg.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let ok = p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    return err(
                        format!("bad parameter `{seg}` in `{s}`"),
                        "parameters are whole segments like {id}",
                    );
                }
                if !params.insert(p) {
                    return err(
                        format!("parameter `{p}` appears twice in `{s}`"),
                        "give each parameter its own name",
                    );
                }
                continue;
            }
            if seg == "." || seg == ".." {
                return err(
                    format!("dot segment in `{s}`"),
                    "templates match normalised paths, which have no dot segments",
                );
            }
            // Literal segments must be spelled the way a normalised request path is.
            let literal = format!("/{seg}");
            if let Ok(canonical) = crate::path::normalise(&literal)
                && canonical != literal
            {
                return err(
                    format!("segment `{seg}` of `{s}` is not in normal form"),
                    &format!(
                        "requests are matched after normalisation; write `{}`",
                        &canonical[1..]
                    ),
                );
            }
            let ok = seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@%".contains(&b));
            if !ok {
                return err(
                    format!(
                        "segment `{seg}` of `{s}` has characters a normalised path cannot contain"
                    ),
                    "use unreserved characters; `;`, `\\`, braces and spaces are refused in requests anyway",
                );
            }
        }
        Some(s.to_owned())
    }
}

fn detector_hint() -> String {
    let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
    format!("detectors: {}", names.join(", "))
}

/// What `rule`'s purpose may write: the categories it may see in some form
/// (allow, mask, hash) pass; the others are removed. Nothing is ever
/// redacted in a write: a `null` would overwrite what the CRM holds.
fn collect_table(program: &Program, rule: &CheckedRule) -> ActionTable {
    let may = |a: Action| match a {
        Action::Allow | Action::Mask(_) | Action::Hash | Action::Keep => Action::Allow,
        Action::Redact | Action::Remove | Action::Seal | Action::Token => Action::Remove,
    };
    ActionTable {
        fields: program
            .fields
            .iter()
            .map(|f| {
                match may(rule.action_for(&program.categories[f.category as usize])) {
                    // What the CRM stores of an encrypted category is a token.
                    Action::Allow if f.seal != Seal::No => Action::Seal,
                    a => a,
                }
            })
            .collect(),
        detectors: Detector::ALL.map(|d| may(rule.action_for(d.category()))),
        unlisted: match program.unlisted {
            Unlisted::Allow => Action::Allow,
            Unlisted::Redact | Unlisted::Remove => Action::Remove,
        },
    }
}

/// The action table of `rule` for `program`'s fields and the detectors.
fn table(program: &Program, rule: &CheckedRule) -> ActionTable {
    ActionTable {
        fields: program
            .fields
            .iter()
            .map(|f| rule.action_for(&program.categories[f.category as usize]))
            .collect(),
        detectors: Detector::ALL.map(|d| rule.action_for(d.category())),
        unlisted: match program.unlisted {
            Unlisted::Allow => Action::Allow,
            Unlisted::Redact => Action::Redact,
            Unlisted::Remove => Action::Remove,
        },
    }
}
