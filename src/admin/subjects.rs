//! Subject requests through the admin API: the access report (with the
//! CRM's current record) and erasure.
//!
//! Erasure, in this order, each step durable before the next:
//! 1. the customer goes on the suppression list (from then on none of their
//!    records leaves the gateway, single or in lists);
//! 2. their data key is destroyed (their randomised tokens are unreadable
//!    for good, in the CRM and its backups);
//! 3. the act is audited;
//! 4. `DELETE <subjects.record>` goes to the CRM, when `forward_erasure` is
//!    set (its status is in the receipt; a failure is retried by asking
//!    again); with `unlink`, the customer's entries in earlier events are
//!    unlinked (the chain stays verifiable).
//!
//! Asking again is safe: the first erasure's time and receipt id are kept.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Admin, Problem, json, off_thread, read_body};
use crate::consent::model::check_subject;
use crate::keys::service::subject_owner;
use crate::proxy::body::Body;

type Result<T> = std::result::Result<T, Problem>;

/// A step of a subject request failed in a way that names no store.
fn failed(what: &'static str) -> Problem {
    tracing::error!(what, "a subject request failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "subject-request-failed",
        "Subject request failed",
        format!("{what}; asking again is safe"),
    )
}

/// `GET /v1/subjects/{id}/access[?record=false]`; the CRM's record only
/// when `may_see_record` (the admin token).
pub async fn access(
    admin: &Admin,
    subject: &str,
    req: &Request<Incoming>,
    may_see_record: bool,
) -> Result<Response<Body>> {
    check_subject(subject).map_err(|e| Problem::invalid_subject(e.to_string()))?;
    let with_record = may_see_record && req.uri().query() != Some("record=false");
    let cfg = admin.gateway().config().clone();
    let s = subject.to_owned();
    let mut report = off_thread(
        || failed("the report could not be made"),
        move || crate::audit::report::access_report(&cfg, &s),
    )
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "access report failed");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "report-unavailable",
            "Access report unavailable",
            "the store or the audit trail could not be read",
        )
    })?;
    if with_record {
        report["crm_record"] = match admin.gateway().subject_record(subject).await {
            Ok(Some(r)) => r,
            Ok(None) => serde_json::Value::Null,
            Err(r) => serde_json::json!({"error": r.slug()}),
        };
    }
    super::audit_act(
        admin,
        "subject",
        "access-report",
        &[(subject, "reported".into())],
        None,
    )
    .await?;
    Ok(json(StatusCode::OK, &report))
}

/// `POST /v1/subjects/{id}/erase`, body `{"unlink": true}` optional.
pub async fn erase(admin: &Admin, subject: &str, req: Request<Incoming>) -> Result<Response<Body>> {
    check_subject(subject).map_err(|e| Problem::invalid_subject(e.to_string()))?;
    let (_, body) = read_body(req, 4096).await?;
    let unlink = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            Problem::invalid_request("the body must be JSON: {\"unlink\": true|false}")
        })?;
        match v.get("unlink") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(Problem::invalid_request("`unlink` must be true or false")),
        }
    };
    let gw = std::sync::Arc::clone(admin.gateway());

    // 1. The suppression list.
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|_| failed("no randomness for the receipt"))?;
    let receipt = crate::config::hex(&id);
    let consents = std::sync::Arc::clone(gw.consents());
    let s = subject.to_owned();
    let (erased, again) = off_thread(
        || failed("the erasure could not be stored"),
        move || consents.erase(&s, &receipt),
    )
    .await?
    .map_err(Problem::store)?;

    // 2. The data key.
    let data_key = match gw.keys().cloned() {
        None => "not configured",
        Some(k) => {
            let owner = subject_owner(subject);
            let destroyed = off_thread(
                || failed("the data key could not be destroyed"),
                move || k.destroy(&owner),
            )
            .await?
            .map_err(|e| {
                    tracing::error!(error = %e, "data key could not be destroyed (erasure)");
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "key-store-unavailable",
                        "Key store unavailable",
                        "the customer is suppressed, but their data key could not be destroyed; ask again",
                    )
                })?;
            if destroyed {
                "destroyed"
            } else {
                "none live (never made, or destroyed before)"
            }
        }
    };

    // 3. The audit trail, before anything leaves for the CRM: a crash
    // after it leaves the request recorded (and asking again redoes the
    // delete), never a delete without its record.
    let cfg = gw.config();
    let forward = cfg
        .subjects
        .forward_erasure
        .then(|| cfg.subjects.record_path(subject))
        .flatten();
    let counts = serde_json::json!({
        "receipt": erased.receipt,
        "again": again,
        "data_key": data_key,
        "crm_delete": if forward.is_some() { "requested" } else { "off" },
    });
    let erasure_seq = super::audit_act(
        admin,
        "erasure",
        "erased",
        &[(subject, "erased".into())],
        Some(counts),
    )
    .await?;
    // 4. The CRM's copy; its answer goes into the receipt.
    let crm = match forward {
        Some(path) => match gw.crm(Method::DELETE, &path).await {
            Ok(a) => serde_json::json!({
                "path": path,
                "status": a.status.as_u16(),
                "deleted": a.status.is_success() || a.status == StatusCode::NOT_FOUND,
            }),
            Err(r) => serde_json::json!({"path": path, "deleted": false, "error": r.slug()}),
        },
        None => serde_json::json!("not forwarded (subjects.forward_erasure is off)"),
    };

    let mut unlinked = serde_json::Value::Null;
    if unlink
        && let (Some(path), Some(audit), Some(seq)) = (cfg.audit.clone(), gw.audit(), erasure_seq)
    {
        let p = audit.pseudonym(subject);
        // Every event before the erasure's own (which stays findable).
        let n = off_thread(
            || failed("the audit trail could not be unlinked"),
            move || crate::audit::store::unlink(&path, &p, seq),
        )
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "pseudonym unlinking failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "Audit trail unavailable",
                "the customer is erased, but their earlier audit entries could not be unlinked; ask again",
            )
        })?;
        unlinked = n.into();
    }
    tracing::info!(again, "a customer was erased");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "subject": subject,
            "receipt": erased.receipt,
            "erased_at": crate::clock::rfc3339(erased.at),
            "already_erased": again,
            "suppressed": true,
            "data_key": data_key,
            "crm_delete": crm,
            "audit_entries_unlinked": unlinked,
        }),
    ))
}
