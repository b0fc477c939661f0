//! Phase 2: normalise the path once and match it to a policy resource.

use std::sync::Arc;

use http::Uri;

use super::reject::Refusal;
use crate::config::Unmatched;
use crate::path;
use crate::policy::{Decision, Denial, Mode, PolicySet, Resource, Rule};

/// The request target, normalised: this is what the CRM receives.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: String,
    pub query: Option<String>,
}

pub fn target(uri: &Uri) -> Result<Target, Refusal> {
    let path = path::normalise(uri.path()).map_err(Refusal::BadPath)?;
    let query = match uri.query() {
        Some(q) => {
            path::check_query(q).map_err(|e| match e {
                path::PathError::MethodOverride => Refusal::MethodOverride,
                e => Refusal::BadPath(e),
            })?;
            Some(q.to_owned())
        }
        None => None,
    };
    Ok(Target { path, query })
}

/// What happens to the response.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Check the request body, then rewrite the response, by this rule.
    Inspect {
        resource: Arc<Resource>,
        rule: Arc<Rule>,
    },
    /// Forward the body unread: a passthrough resource, or an unmatched
    /// route when `routes.unmatched: passthrough`.
    Pass { resource: Option<Arc<Resource>> },
    /// A resource of a `mode: report` policy: forward the request as it
    /// is, pass the answer unchanged, and compute what the rule would have
    /// done (`rule`), or record the refusal enforcing would have made
    /// (`would`, e.g. a purpose the policy does not cover).
    Report {
        resource: Arc<Resource>,
        rule: Option<Arc<Rule>>,
        would: Option<&'static str>,
    },
}

impl Plan {
    pub fn resource(&self) -> Option<&Arc<Resource>> {
        match self {
            Plan::Inspect { resource, .. } => Some(resource),
            Plan::Pass { resource } => resource.as_ref(),
            Plan::Report { resource, .. } => Some(resource),
        }
    }
}

pub fn plan(
    policies: &PolicySet,
    unmatched: Unmatched,
    method: &http::Method,
    target: &Target,
    purpose: &str,
) -> Result<Plan, Refusal> {
    match policies.decide(method, &target.path, purpose) {
        Decision::Inspect { resource, rule } if resource.mode == Mode::Report => Ok(Plan::Report {
            resource,
            rule: Some(rule),
            would: None,
        }),
        Decision::Inspect { resource, rule } => Ok(Plan::Inspect { resource, rule }),
        Decision::Pass { resource } => Ok(Plan::Pass {
            resource: Some(resource),
        }),
        Decision::Deny(Denial::Unmatched) if unmatched == Unmatched::Passthrough => {
            Ok(Plan::Pass { resource: None })
        }
        Decision::Deny(Denial::Unmatched | Denial::WrongMethod) => Err(Refusal::RouteNotAllowed),
        Decision::Deny(Denial::CaseVariant) => Err(Refusal::PathCaseVariant),
        Decision::Deny(Denial::PurposeNotCovered(resource)) if resource.mode == Mode::Report => {
            Ok(Plan::Report {
                resource,
                rule: None,
                would: Some("purpose-not-covered"),
            })
        }
        Decision::Deny(Denial::PurposeNotCovered(r)) => Err(Refusal::PurposeNotCovered {
            policy: r.policy.to_string(),
            resource: r.name.to_string(),
        }),
    }
}
