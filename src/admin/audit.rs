//! Audit endpoints: what auditors read (events, with paging; verification;
//! the signed checkpoints, to keep elsewhere) and pruning by retention
//! (admin only). Reads open the trail read-only on a blocking thread.

use std::path::PathBuf;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Admin, Problem, json};
use crate::audit::query::{Filter, query};
use crate::audit::store;
use crate::proxy::body::Body;

type Result<T> = std::result::Result<T, Problem>;

/// Events per page unless `limit` says otherwise, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn trail(admin: &Admin) -> Result<PathBuf> {
    admin.gateway().config().audit.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "audit-off",
            "No audit trail",
            "the gateway runs with `storage.audit: off`",
        )
    })
}

fn bad_filter(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-filter",
        "Invalid audit filter",
        detail,
    )
}

fn failed(e: crate::audit::AuditError) -> Problem {
    tracing::error!(error = %e, "audit trail could not be read (admin API)");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit-unavailable",
        "Audit trail unavailable",
        "the audit trail could not be read",
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, crate::audit::AuditError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| failed(crate::audit::AuditError::Stopped))?
        .map_err(failed)
}

/// The query string's pairs, percent-decoded (`+` is a space).
fn pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| bad_filter("the query string is not UTF-8 once decoded"))
            };
            Ok((dec(k)?, dec(v)?))
        })
        .collect()
}

/// `GET /v1/audit/events?subject=&client=&purpose=&route=&decision=&kind=&since=&until=&after=&limit=`:
/// matching events, oldest first; `next_after` pages on.
pub async fn events(admin: &Admin, req: &Request<Incoming>) -> Result<Response<Body>> {
    let path = trail(admin)?;
    let mut filter = Filter::default();
    let (mut after, mut limit) = (0u64, PAGE);
    for (k, v) in pairs(req.uri().query().unwrap_or(""))? {
        let time = |v: &str| {
            crate::clock::parse_rfc3339(v).ok_or_else(|| {
                bad_filter(format!(
                    "`{k}` must be an RFC 3339 time (2026-11-27T08:00:00Z)"
                ))
            })
        };
        match k.as_str() {
            "subject" => {
                crate::consent::model::check_subject(&v).map_err(|e| bad_filter(e.to_string()))?;
                let audit = admin
                    .gateway()
                    .audit()
                    .ok_or_else(|| failed(crate::audit::AuditError::Stopped))?;
                filter.subject = Some(audit.pseudonym(&v));
            }
            "pseudonym" => filter.subject = Some(v),
            "client" => filter.client = Some(v),
            "purpose" => filter.purpose = Some(v),
            "route" => filter.route = Some(v),
            "decision" => filter.decision = Some(v),
            "kind" => filter.kind = Some(v),
            "since" => filter.since = Some(time(&v)?),
            "until" => filter.until = Some(time(&v)?),
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| bad_filter("`after` must be an event number"))?;
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad_filter(format!("`limit` must be 1 to {MAX_PAGE}")))?;
            }
            _ => {
                return Err(bad_filter(format!(
                    "unknown filter `{k}`; use subject, pseudonym, client, purpose, route, decision, kind, since, until, after, limit"
                )));
            }
        }
    }
    let found = blocking(move || query(&path, &filter, after, limit)).await?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|(s, _)| *s))
        .flatten();
    let events: Vec<serde_json::Value> = found
        .into_iter()
        .map(|(seq, e)| {
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            v["seq"] = seq.into();
            v["time"] = crate::clock::rfc3339(e.at).into();
            v
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"events": events, "next_after": next}),
    ))
}

/// `GET /v1/audit/verify`: the chain and the checkpoints, checked now.
pub async fn verify(admin: &Admin) -> Result<Response<Body>> {
    let path = trail(admin)?;
    // The checkpoints must be signed by the trail's own key: a head cut off
    // behind a checkpoint signed with some other key does not pass.
    let checked = blocking(move || {
        let own = crate::audit::signing::public_key(&crate::audit::signing_key_path(&path))?;
        store::verify_all(&path, &[], own.as_deref())
    });
    match checked.await? {
        Ok(v) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"ok": true, "events": v.events, "checkpoints": v.checkpoints}),
        )),
        Err(b) => Err(Problem::new(
            StatusCode::CONFLICT,
            "audit-broken",
            "Audit trail does not verify",
            format!("event {}: {}", b.seq, b.why),
        )),
    }
}

/// `GET /v1/audit/checkpoints`: every signed checkpoint, to keep elsewhere.
pub async fn checkpoints(admin: &Admin) -> Result<Response<Body>> {
    let path = trail(admin)?;
    let all = blocking(move || store::checkpoints(&path)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::to_value(all).unwrap_or_default(),
    ))
}

/// `POST /v1/audit/prune`: removes what `storage.audit_retention` allows,
/// behind a signed checkpoint.
pub async fn prune(admin: &Admin) -> Result<Response<Body>> {
    let audit = admin.gateway().audit().cloned().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "audit-off",
            "No audit trail",
            "the gateway runs with `storage.audit: off`",
        )
    })?;
    if audit.retention().is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-retention",
            "No retention configured",
            "set `storage.audit_retention` (e.g. 400d) to prune",
        ));
    }
    let p = audit.prune().await.map_err(failed)?;
    let counts = serde_json::json!({"events": p.events, "through": p.through});
    super::audit_act(admin, "audit", "pruned", &[], Some(counts.clone())).await?;
    Ok(json(StatusCode::OK, &counts))
}
