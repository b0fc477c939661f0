//! `consentry policy test`: declarative cases kept beside the policies.
//!
//! A case gives a request line, a purpose and the upstream response, and the
//! expected response (as JSON, byte for byte, or as a refusal status). The
//! runner takes the same path as the gateway: path normalisation, routing,
//! the purpose's rule, and the streaming rewriter.

use std::path::{Path, PathBuf};

use http::Method;
use serde_saphyr::Location;

use super::compile::{files_in, is_test_file};
use super::source::{TestCase, TestFile};
use super::{Decision, PolicySet};
use crate::diag::{Report, at, parse_yaml};
use crate::path;
use crate::transform::{Limits, RecordOutcome, TransformError, rewrite_all};

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

/// The gateway's answer to a case: status and body.
pub fn respond(
    set: &PolicySet,
    method: &Method,
    target: &str,
    purpose: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let (p, q) = target.split_once('?').unwrap_or((target, ""));
    let normal = match path::normalise(p) {
        Ok(n) => n,
        Err(_) => return Ok((400, Vec::new())),
    };
    if path::check_query(q).is_err() {
        return Ok((400, Vec::new()));
    }
    if !set.knows_purpose(purpose) {
        return Err(format!("unknown purpose `{purpose}`"));
    }
    match set.decide(method, &normal, purpose) {
        Decision::Deny(_) => Ok((403, Vec::new())),
        Decision::Pass { .. } => Ok((200, body.to_vec())),
        Decision::Inspect { resource, table } => {
            match rewrite_all(&resource.program, &table, Limits::default(), body, |_| {
                RecordOutcome::Keep
            }) {
                Ok((out, _)) => Ok((200, out)),
                Err(TransformError::Blocked { .. }) => Ok((403, Vec::new())),
                Err(_) => Ok((502, Vec::new())),
            }
        }
    }
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
    let (status, body) = respond(
        set,
        &method,
        target.trim(),
        &case.purpose.value,
        case.response.value.as_bytes(),
    )?;
    let upstream_status = case.status.unwrap_or(200);
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
    let want: serde_json::Value =
        serde_json::from_str(&expect.value).map_err(|e| format!("`expect` is not JSON: {e}"))?;
    let got: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("the output is not JSON: {e}"))?;
    if want != got {
        return Err(format!(
            "body differs\n  expected: {}\n  got:      {}",
            serde_json::to_string(&want).unwrap_or_default(),
            serde_json::to_string(&got).unwrap_or_default()
        ));
    }
    Ok(())
}
