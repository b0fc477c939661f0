//! Phase 3b: data minimisation on writes. A POST, PUT or PATCH to an
//! inspected resource is read whole (up to `limits.request_body`), checked
//! as strict JSON, and rewritten so that it carries only what the purpose
//! may collect (`policy::collect`); or refused, as the rule says.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, header};
use hyper::body::Incoming;

use super::body;
use super::forward::UpBody;
use super::reject::Refusal;
use crate::config::Limits;
use crate::consent::Consents;
use crate::keys::vault::{Sealer, Vault};
use crate::policy::collect::{CollectError, collect, collectable};
use crate::policy::{ConsentCheck, Resource, Rule};
use crate::transform::{self, TransformError};

/// Bodies larger than this are rewritten on a blocking-pool thread.
const OFFLOAD_AFTER: usize = 1 << 20;

/// Whether a request to `resource` is a write whose body is minimised.
pub fn applies(method: &Method, resource: &Resource) -> bool {
    resource.request_program.is_some()
        && ((*method == Method::POST && !resource.search_body())
            || *method == Method::PUT
            || *method == Method::PATCH)
}

/// Refuses a write whose subject (named in the path, `path_subject`) has
/// not given the consent the purpose needs, before anything reaches the CRM.
pub async fn check_subject(
    consents: &Arc<Consents>,
    resource: &Resource,
    check: ConsentCheck,
    purpose: &Arc<str>,
    path: &str,
) -> Result<(), Refusal> {
    let refused = || Refusal::ConsentRequired {
        purpose: purpose.to_string(),
        write: true,
    };
    let subject = resource.subject_in_path(path).ok_or_else(refused)?;
    // Cached: no store, no blocking thread.
    if let Some(s) = consents.cached(&subject) {
        let allowed = s.allows(purpose, check.basis, consents.now());
        return if allowed { Ok(()) } else { Err(refused()) };
    }
    let found = super::respond::lookup(Arc::clone(consents), vec![subject.clone()]).await?;
    // `fetch` answers for every subject asked (empty if it has none).
    let allowed = found
        .get(&subject)
        .is_some_and(|s| s.allows(purpose, check.basis, consents.now()));
    if allowed { Ok(()) } else { Err(refused()) }
}

/// Reads, checks and minimises a write body, sealing the values of
/// encrypted categories with `vault`'s keys. Returns the body to send, how
/// many values were taken out, and how many were sealed.
#[allow(clippy::too_many_arguments)]
pub async fn write_body(
    parts: &Parts,
    incoming: Incoming,
    resource: &Arc<Resource>,
    rule: &Arc<Rule>,
    purpose: &str,
    limits: &Limits,
    idle: Duration,
    vault: Option<Arc<Vault>>,
) -> Result<(UpBody, u64, u64), Refusal> {
    let data = read_json(parts, incoming, limits, idle).await?;
    if data.is_empty() {
        return Ok((body::empty(), 0, 0));
    }
    let tlimits = transform::Limits {
        max_depth: limits.json_depth,
        max_buffer: usize::try_from(limits.request_body).unwrap_or(usize::MAX),
    };
    let result = if data.len() > OFFLOAD_AFTER {
        let (res, r) = (Arc::clone(resource), Arc::clone(rule));
        tokio::task::spawn_blocking(move || {
            collect(&res, &r, &data, tlimits, Sealer(vault.as_deref()))
        })
        .await
        .map_err(|_| Refusal::Internal)?
    } else {
        collect(resource, rule, &data, tlimits, Sealer(vault.as_deref()))
    };
    match result {
        Ok(c) => Ok((body::full(c.body), c.removed, c.sealed)),
        Err(CollectError::NotCollectable) => Err(Refusal::NotCollectable {
            purpose: purpose.to_owned(),
            collectable: collectable(resource, rule),
        }),
        Err(CollectError::Transform(TransformError::Malformed { kind, .. })) => {
            Err(Refusal::MalformedRequestJson(kind))
        }
        Err(CollectError::Transform(TransformError::TooLarge { .. })) => {
            Err(Refusal::RequestBodyTooLarge)
        }
        Err(CollectError::Transform(
            TransformError::Blocked { .. } | TransformError::Erased { .. },
        )) => Err(Refusal::Internal),
        Err(CollectError::Transform(TransformError::Seal)) => Err(Refusal::KeysUnavailable),
        Err(CollectError::Transform(TransformError::TokenAsValue)) => Err(Refusal::TokenAsValue),
    }
}

/// Reads an inspected request body whole: uncompressed, and JSON unless empty.
pub async fn read_json(
    parts: &Parts,
    incoming: Incoming,
    limits: &Limits,
    idle: Duration,
) -> Result<Bytes, Refusal> {
    let encoded = parts
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Refusal::RequestEncoding);
    }
    let data = read_all(incoming, limits.request_body, idle).await?;
    if !data.is_empty() && !body::is_json(&parts.headers) {
        return Err(Refusal::RequestNotJson);
    }
    Ok(data)
}

async fn read_all(incoming: Incoming, limit: u64, idle: Duration) -> Result<Bytes, Refusal> {
    body::read_limited(incoming, limit, idle)
        .await
        .map_err(|e| match e {
            body::ReadError::TooLarge => Refusal::RequestBodyTooLarge,
            body::ReadError::Unreadable => Refusal::RequestBodyUnreadable,
        })
}
