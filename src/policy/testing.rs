//! `consentry policy test`: declarative cases kept beside the policies.
//!
//! A case gives a request line, a purpose and the upstream response, and the
//! expected response (as JSON, byte for byte, or as a refusal status). The
//! runner takes the same path as the gateway: path normalisation, routing,
//! the purpose's rule, and the streaming rewriter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;
use serde_saphyr::Location;

use super::collect::{CollectError, collect};
use super::compile::{files_in, is_test_file};
use super::source::{TestCase, TestFile};
use super::{Decision, PolicySet, Resource, Rule};
use crate::clock::Millis;
use crate::consent::gate::ConsentGate;
use crate::consent::model::{Current, Status, SubjectConsents, check_subject};
use crate::diag::{Report, at, parse_yaml};
use crate::path;
use crate::transform::{
    Gate, Limits, RecordOutcome, Rewriter, Seal, Subject, TransformError, rewrite_all,
};

/// The key `hash` actions use under `policy test`, so expected pseudonyms are stable.
pub const TEST_HASH_KEY: &[u8] = b"consentry-policy-test-key-not-secret";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub line: u64,
    pub name: String,
    /// `None` when the case passed; else what differed.
    pub failure: Option<String>,
}

/// Runs every `*.test.yaml` case in `dir` against `set`.
pub fn run_dir(dir: &Path, set: &PolicySet) -> Result<Vec<CaseResult>, Report> {
    let mut results = Vec::new();
    let mut report = Report::default();
    for file in files_in(dir, is_test_file)? {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report.error(&file, Location::UNKNOWN, format!("cannot read: {e}"), None);
                continue;
            }
        };
        match parse_yaml::<TestFile>(&file, &text) {
            Ok(tf) => {
                for case in &tf.cases {
                    results.push(CaseResult {
                        file: file.clone(),
                        line: at(&case.name).line(),
                        name: case.name.value.clone(),
                        failure: run_case(set, case).err(),
                    });
                }
            }
            Err(d) => report.push(d),
        }
    }
    if report.has_errors() {
        return Err(report);
    }
    Ok(results)
}

/// The consent state a case runs with: subject -> statements.
pub type ConsentFixture = HashMap<String, Arc<SubjectConsents>>;

/// The time policy tests run at (2030-01-01T00:00:00Z); `expired` grants lapsed before it.
pub const TEST_NOW: Millis = 1_893_456_000_000;

/// What the gateway does with a test request.
enum Planned {
    /// Refused with this status.
    Refused(u16),
    /// Forwarded unread.
    Pass,
    /// Inspected; with the normalised path.
    Inspect(Arc<Resource>, Arc<Rule>, String),
}

/// Routes a test request like the gateway.
fn plan(set: &PolicySet, method: &Method, target: &str, purpose: &str) -> Result<Planned, String> {
    let (p, q) = target.split_once('?').unwrap_or((target, ""));
    let normal = match path::normalise(p) {
        Ok(n) => n,
        Err(_) => return Ok(Planned::Refused(400)),
    };
    if path::check_query(q).is_err() {
        return Ok(Planned::Refused(400));
    }
    if !set.knows_purpose(purpose) {
        return Err(format!("unknown purpose `{purpose}`"));
    }
    Ok(match set.decide(method, &normal, purpose) {
        Decision::Deny(_) => Planned::Refused(403),
        Decision::Pass { .. } => Planned::Pass,
        Decision::Inspect { resource, rule } => Planned::Inspect(resource, rule, normal),
    })
}

/// The gateway's answer to a case: status and body. Subjects not in
/// `consent` have no statements.
pub fn respond(
    set: &PolicySet,
    method: &Method,
    target: &str,
    purpose: &str,
    status: u16,
    body: &[u8],
    consent: &ConsentFixture,
) -> Result<(u16, Vec<u8>), String> {
    let (resource, rule) = match plan(set, method, target, purpose)? {
        Planned::Refused(status) => return Ok((status, Vec::new())),
        Planned::Pass => return Ok((200, body.to_vec())),
        Planned::Inspect(resource, rule, _) => (resource, rule),
    };
    let result = match resource.consent_for(&rule, method, status) {
        Some(check) => {
            let mut gate = ConsentGate::fixed(check, purpose.into(), TEST_NOW, consent.clone());
            let mut out = Vec::new();
            let mut rw = Rewriter::new(
                Arc::clone(&resource.program),
                Arc::clone(&rule.table),
                Limits::default(),
            );
            rw.push(body, &mut gate, &mut out)
                .and_then(|()| rw.finish(&mut gate, &mut out))
                .map(|()| out)
        }
        None => rewrite_all(
            &resource.program,
            &rule.table,
            Limits::default(),
            body,
            |_| RecordOutcome::Keep,
        )
        .map(|(out, _)| out),
    };
    match result {
        Ok(out) => Ok((200, out)),
        Err(TransformError::Blocked { .. }) => Ok((403, Vec::new())),
        Err(_) => Ok((502, Vec::new())),
    }
}

/// Stands in for the keys in policy tests: a value of an encrypted category
/// is written as `[encrypted <category>]`, so that a case shows what the
/// CRM stores (a token, in the gateway) without depending on random keys.
struct StandIn;

impl Gate for StandIn {
    fn decide(&mut self, _: Subject<'_>) -> Option<RecordOutcome> {
        Some(RecordOutcome::Keep)
    }

    fn seal(&mut self, category: &str, _: Seal, _: &[u8], out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(format!("[encrypted {category}]").as_bytes());
        true
    }
}

/// What the CRM receives for a write: `(status, body)`, where a status
/// other than 200 is the gateway's refusal.
pub fn write(
    set: &PolicySet,
    method: &Method,
    target: &str,
    purpose: &str,
    body: &[u8],
    consent: &ConsentFixture,
) -> Result<(u16, Vec<u8>), String> {
    let (resource, rule, normal) = match plan(set, method, target, purpose)? {
        Planned::Refused(status) => return Ok((status, Vec::new())),
        Planned::Pass => return Ok((200, body.to_vec())),
        Planned::Inspect(resource, rule, normal) => (resource, rule, normal),
    };
    // As the gateway does: a write naming its subject in the path needs the
    // subject's consent before it is sent.
    if let Some(check) = resource.write_consent(&rule, method) {
        let allowed = resource.subject_in_path(&normal).is_some_and(|s| {
            consent
                .get(&s)
                .map_or_else(SubjectConsents::default, |c| (**c).clone())
                .allows(purpose, check.basis, TEST_NOW)
        });
        if !allowed {
            return Ok((403, Vec::new()));
        }
    }
    match collect(&resource, &rule, body, Limits::default(), StandIn) {
        Ok(c) => Ok((200, c.body)),
        Err(CollectError::NotCollectable) => Ok((403, Vec::new())),
        Err(CollectError::Transform(_)) => Ok((400, Vec::new())),
    }
}

/// The consent fixture of a case.
fn fixture(set: &PolicySet, case: &TestCase) -> Result<ConsentFixture, String> {
    let mut by_subject: HashMap<String, Vec<Current>> = HashMap::new();
    // Statements are taken in the order listed, each later than the one before.
    for (i, c) in case.consent.iter().enumerate() {
        check_subject(&c.subject.value)
            .map_err(|e| format!("consent subject `{}`: {e}", c.subject.value))?;
        if !set.knows_purpose(&c.purpose.value) {
            return Err(format!("consent: unknown purpose `{}`", c.purpose.value));
        }
        let (status, expires) = match c.status.value.as_str() {
            "expired" => (Status::Granted, Some(TEST_NOW - 1)),
            other => (
                Status::parse(other).ok_or_else(|| {
                    format!(
                        "consent status `{other}`: write granted, withdrawn, objected or expired"
                    )
                })?,
                None,
            ),
        };
        let entries = by_subject.entry(c.subject.value.clone()).or_default();
        entries.retain(|e| *e.purpose != *c.purpose.value);
        entries.push(Current {
            purpose: c.purpose.value.as_str().into(),
            status,
            expires,
            at: TEST_NOW - 1_000_000 + i as Millis,
        });
    }
    Ok(by_subject
        .into_iter()
        .map(|(k, entries)| (k, Arc::new(SubjectConsents { entries })))
        .collect())
}

fn run_case(set: &PolicySet, case: &TestCase) -> Result<(), String> {
    let (method, target) = case
        .request
        .value
        .trim()
        .split_once(' ')
        .ok_or_else(|| "`request` must look like `GET /path`".to_owned())?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method `{method}`"))?;
    let target = target.trim();
    let purpose = &case.purpose.value;
    if let Some(req) = &case.body {
        // A write: check what the CRM would receive.
        let consent = fixture(set, case)?;
        let (status, sent) = write(
            set,
            &method,
            target,
            purpose,
            req.value.as_bytes(),
            &consent,
        )?;
        if status != 200 {
            return match &case.expect_status {
                Some(want) if want.value == status => Ok(()),
                Some(want) => Err(format!("expected status {}, got {status}", want.value)),
                None => Err(format!("the write was refused with {status}")),
            };
        }
        if let Some(want) = &case.expect_upstream {
            compare_json("`expect_upstream`", &want.value, &sent)?;
        } else if case.response.is_none() {
            return Err(
                "a write case needs `expect_upstream`, `expect_status` or a `response`".into(),
            );
        }
        if case.response.is_none() {
            if let Some(want) = &case.expect_status {
                return Err(format!(
                    "expected status {}, but the write passed",
                    want.value
                ));
            }
            return Ok(());
        }
    }
    let Some(response) = &case.response else {
        return Err("give `response` (what the CRM answers), or `body` for a write".into());
    };
    let consent = fixture(set, case)?;
    let upstream_status = case.status.unwrap_or(200);
    let (status, body) = respond(
        set,
        &method,
        target,
        purpose,
        upstream_status,
        response.value.as_bytes(),
        &consent,
    )?;
    let status = if status == 200 {
        upstream_status
    } else {
        status
    };
    if let Some(want) = &case.expect_status {
        if status != want.value {
            return Err(format!("expected status {}, got {status}", want.value));
        }
        return Ok(());
    }
    if status != upstream_status {
        return Err(format!(
            "expected the response to pass (status {upstream_status}), got {status}"
        ));
    }
    if let Some(exact) = &case.expect_exact {
        if body != exact.value.as_bytes() {
            return Err(format!(
                "body differs byte for byte\n  expected: {}\n  got:      {}",
                exact.value.trim_end(),
                String::from_utf8_lossy(&body).trim_end()
            ));
        }
        return Ok(());
    }
    let Some(expect) = &case.expect else {
        return Err("give `expect`, `expect_exact` or `expect_status`".into());
    };
    compare_json("`expect`", &expect.value, &body)
}

fn compare_json(what: &str, want: &str, got: &[u8]) -> Result<(), String> {
    let want: serde_json::Value =
        serde_json::from_str(want).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let got: serde_json::Value =
        serde_json::from_slice(got).map_err(|e| format!("the output is not JSON: {e}"))?;
    if want != got {
        return Err(format!(
            "body differs\n  expected: {}\n  got:      {}",
            serde_json::to_string(&want).unwrap_or_default(),
            serde_json::to_string(&got).unwrap_or_default()
        ));
    }
    Ok(())
}
