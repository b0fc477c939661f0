//! Consent endpoints of the admin API. Store calls run on blocking threads;
//! a change is acknowledged only after it is committed and the cache no
//! longer holds the old state (`Consents::record`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::{Admin, Problem, json, read_body, with_type};
use crate::clock::{Millis, rfc3339};
use crate::consent::import::{self, Defaults, Format};
use crate::consent::model::{ConsentEvent, Status, check_subject};
use crate::consent::store::{Applied, Stored};
use crate::consent::{Consents, Invalid};
use crate::proxy::body::Body;

/// Largest body of `POST /v1/consents`.
pub const MAX_CHANGE_BODY: usize = 1 << 20;
/// Largest body of `POST /v1/consents/import`.
pub const MAX_IMPORT_BODY: usize = 64 << 20;
/// `source` of changes made through the admin API without one.
pub const ADMIN_SOURCE: &str = "admin-api";

type Result<T> = std::result::Result<T, Problem>;

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    super::off_thread(|| Problem::store("consent task failed"), f).await
}

fn require_json(parts: &http::request::Parts) -> Result<()> {
    if crate::proxy::body::is_json(&parts.headers) {
        Ok(())
    } else {
        Err(unsupported("send `Content-Type: application/json`"))
    }
}

fn unsupported(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        detail,
    )
}

/// Stores checked changes; the answer says what was new.
/// Checks and stores changes; problems in a file (`format`) are named by
/// its lines or records.
async fn store(
    admin: &Admin,
    events: Vec<ConsentEvent>,
    format: Option<Format>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
) -> Result<Response<Body>> {
    let gw = Arc::clone(admin.gateway());
    let n = events.len();
    // A single change names its customers in the audit event; an import
    // is recorded by its counts (the statements are in the consent store).
    let named: Vec<(String, String)> = if format.is_none() {
        events
            .iter()
            .map(|e| {
                (
                    e.subject.clone(),
                    format!("consent {} {}", e.purpose, e.status.as_str()),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let applied: std::result::Result<Applied, Invalid> = blocking(move || {
        let _held_until_stored = guard;
        let policies = gw.policies();
        let knows = |p: &str| policies.knows_purpose(p);
        match format {
            Some(f) => gw
                .consents()
                .record_labelled(&events, &knows, &|i| f.label(i)),
            None => gw.consents().record(&events, &knows),
        }
    })
    .await?;
    match applied {
        Ok(a) => {
            tracing::info!(
                records = n,
                inserted = a.inserted,
                "consent changes recorded"
            );
            let subjects: Vec<(&str, String)> =
                named.iter().map(|(s, w)| (s.as_str(), w.clone())).collect();
            let counts = serde_json::json!({
                "records": n, "inserted": a.inserted, "unchanged": a.unchanged, "superseded": a.superseded,
            });
            let what = if format.is_some() {
                "imported"
            } else {
                "changed"
            };
            super::audit_act(admin, "consent", what, &subjects, Some(counts)).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "records": n,
                    "inserted": a.inserted,
                    "unchanged": a.unchanged,
                    "superseded": a.superseded,
                }),
            ))
        }
        Err(Invalid::Bad(m)) if format.is_some() => Err(invalid_import(m.join("; "))),
        Err(Invalid::Bad(m)) => Err(Problem::bad_request(m.join("; "))),
        Err(Invalid::Store(e)) => Err(Problem::store(e)),
    }
}

/// `POST /v1/consents`: one change object, or an array of them (all or nothing).
pub async fn set(admin: &Admin, req: Request<Incoming>) -> Result<Response<Body>> {
    let (parts, bytes) = read_body(req, MAX_CHANGE_BODY).await?;
    require_json(&parts)?;
    let defaults = Defaults {
        at: admin.gateway().consents().now(),
        source: ADMIN_SOURCE,
    };
    let events =
        import::parse_changes(&bytes, defaults).map_err(|e| Problem::bad_request(e.to_string()))?;
    store(admin, events, None, None).await
}

/// `POST /v1/consents/import`: a CSV or JSON file (by `Content-Type` or
/// `?format=`), checked whole before anything is stored.
pub async fn import(admin: &Admin, req: Request<Incoming>) -> Result<Response<Body>> {
    let Ok(one_at_a_time) = Arc::clone(&admin.importing).try_lock_owned() else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "import-running",
            "Another import is running",
            "wait for the running import to finish, then send this one",
        ));
    };
    let (parts, bytes) = read_body(req, MAX_IMPORT_BODY).await?;
    let format = query_param(parts.uri.query(), "format")
        .or_else(|| {
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .and_then(|h| Format::guess(&h))
        .ok_or_else(|| {
            unsupported(
                "send `Content-Type: text/csv` or `application/json` (or `?format=csv|json`)",
            )
        })?;
    let parsed = blocking(move || (import::parse(&bytes, format), one_at_a_time)).await?;
    let (events, one_at_a_time) = match parsed {
        (Ok(events), guard) => (events, guard),
        (Err(e), _) => return Err(invalid_import(e.to_string())),
    };
    store(admin, events, Some(format), Some(one_at_a_time)).await
}

fn invalid_import(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-import",
        "Import refused; nothing was stored",
        detail,
    )
}

/// `GET /v1/consents/export?format=jsonl|csv` (JSON lines by default), in
/// the import format: an export imports back unchanged.
pub async fn export(admin: &Admin, req: &Request<Incoming>) -> Result<Response<Body>> {
    let csv = match query_param(req.uri().query(), "format").as_deref() {
        None | Some("jsonl") | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                "`format` is `jsonl` or `csv`",
            ));
        }
    };
    let consents = Arc::clone(admin.gateway().consents());
    let out = blocking(move || export_bytes(&consents, csv)).await??;
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(with_type(StatusCode::OK, ct, Bytes::from(out)))
}

/// Every statement in the import format, as CSV or JSON lines.
pub fn export_bytes(consents: &Consents, csv: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = csv.then(|| csv::Writer::from_writer(Vec::new()));
    if let Some(w) = w.as_mut() {
        w.write_record(import::COLUMNS).map_err(Problem::store)?;
    }
    let mut failed = None;
    consents
        .export(&mut |s: Stored| {
            let e = &s.event;
            match w.as_mut() {
                Some(w) => {
                    let at = rfc3339(e.at);
                    let exp = e.expires.map(rfc3339).unwrap_or_default();
                    let row = [
                        e.subject.as_str(),
                        e.purpose.as_str(),
                        e.status.as_str(),
                        at.as_str(),
                        e.source.as_str(),
                        exp.as_str(),
                        e.proof.as_deref().unwrap_or(""),
                    ];
                    if let Err(err) = w.write_record(row) {
                        failed = Some(err.to_string());
                    }
                }
                None => {
                    if serde_json::to_writer(&mut out, &statement(&s, false)).is_ok() {
                        out.push(b'\n');
                    }
                }
            }
        })
        .map_err(Problem::store)?;
    if let Some(f) = failed {
        return Err(Problem::store(f));
    }
    match w {
        Some(w) => w.into_inner().map_err(|e| Problem::store(e.to_string())),
        None => Ok(out),
    }
}

/// One statement as JSON; `full` adds the store's id and recording time.
pub fn statement(s: &Stored, full: bool) -> serde_json::Value {
    let e = &s.event;
    let mut v = serde_json::json!({
        "subject": e.subject,
        "purpose": e.purpose,
        "status": e.status.as_str(),
        "at": rfc3339(e.at),
        "source": e.source,
        "expires_at": e.expires.map(rfc3339),
        "proof": e.proof,
    });
    if full {
        v["id"] = s.id.into();
        v["recorded_at"] = rfc3339(s.recorded).into();
    }
    v
}

fn subject_ok(subject: &str) -> Result<()> {
    check_subject(subject).map_err(Problem::invalid_subject)
}

/// Every statement of a well-formed subject id, oldest first.
async fn load_history(admin: &Admin, subject: &str) -> Result<Vec<Stored>> {
    subject_ok(subject)?;
    let consents = Arc::clone(admin.gateway().consents());
    let s = subject.to_owned();
    blocking(move || consents.history(&s))
        .await?
        .map_err(Problem::store)
}

/// `GET /v1/subjects/{id}/consents`: the latest statement per purpose.
pub async fn current(admin: &Admin, subject: &str) -> Result<Response<Body>> {
    let history = load_history(admin, subject).await?;
    let now = admin.gateway().consents().now();
    // The store's own order for "latest" (`ConsentStore::apply`): when a
    // statement took effect, min(at, recorded), then id.
    let key = |s: &Stored| (s.event.at.min(s.recorded), s.id);
    let mut latest: BTreeMap<&str, &Stored> = BTreeMap::new();
    for h in &history {
        let e = latest.entry(h.event.purpose.as_str()).or_insert(h);
        if key(h) > key(e) {
            *e = h;
        }
    }
    let list: Vec<serde_json::Value> = latest
        .values()
        .map(|s| {
            let mut v = statement(s, true);
            v["expired"] = expired(&s.event, now).into();
            v
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"subject": subject, "as_of": rfc3339(now), "consents": list}),
    ))
}

fn expired(e: &ConsentEvent, now: Millis) -> bool {
    e.status == Status::Granted && e.expires.is_some_and(|x| x <= now)
}

/// `GET /v1/subjects/{id}/consents/history`: every statement, oldest first.
pub async fn history(admin: &Admin, subject: &str) -> Result<Response<Body>> {
    let history = load_history(admin, subject).await?;
    let list: Vec<serde_json::Value> = history.iter().map(|s| statement(s, true)).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"subject": subject, "history": list}),
    ))
}

/// The first value of `name` in a query string, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}
