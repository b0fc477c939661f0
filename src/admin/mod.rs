//! The admin API: its own listener (loopback by default), a bearer token
//! compared in constant time, JSON in and out, RFC 9457 problems on error.
//!
//! ```text
//! GET  /healthz                              liveness (no token)
//! GET  /readyz                               readiness: store, audit, CRM (no token)
//! GET  /metrics                              Prometheus text                     [auditor]
//! POST /v1/policies/reload                   re-read config and policies; swap if valid
//! GET  /v1/policies/explain?method=&path=&purpose=  the decision, field by field  [auditor]
//! POST /v1/consents                          record a change, or an array of them
//! POST /v1/consents/import                   bulk CSV or JSON, all or nothing
//! GET  /v1/consents/export?format=jsonl|csv  every statement, oldest first
//! GET  /v1/subjects/{id}/consents            a subject's current consent
//! GET  /v1/subjects/{id}/consents/history    a subject's every statement
//! GET  /v1/keys                              master key versions, data keys per version
//! POST /v1/keys/rotate                       adopt the master key file (re-wrap, retire)
//! DELETE /v1/subjects/{id}/key               destroy a subject's data key (crypto-shredding)
//! POST /v1/subjects/{id}/erase               erase a customer (Art. 17); a receipt
//! GET  /v1/subjects/{id}/access              access report (Art. 15/20)          [auditor, without the CRM record]
//! GET  /v1/audit/events?...                  audit events, filtered, paged       [auditor]
//! GET  /v1/audit/verify                      check the chain and checkpoints     [auditor]
//! GET  /v1/audit/checkpoints                 the signed checkpoints              [auditor]
//! POST /v1/audit/prune                       prune by `storage.audit_retention`
//! ```
//!
//! Two tokens: the admin token may do everything; the auditor token
//! (`admin.auditor_token`) only what is marked [auditor], and nothing that
//! changes state. Handlers in `consent.rs`, `keys.rs`, `audit.rs` and
//! `subjects.rs`. Nothing here logs request bodies or tokens.

pub mod audit;
pub mod consent;
pub mod keys;
pub mod serving;
pub mod subjects;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::config::AdminToken;
use crate::proxy::Gateway;
use crate::proxy::body::{self, Body};
use crate::proxy::reject::problem_response;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    /// Reads the audit trail and access reports; changes nothing.
    Auditor,
}

/// The admin API's state.
#[derive(Debug)]
pub struct Admin {
    gateway: Arc<Gateway>,
    token: AdminToken,
    auditor: Option<AdminToken>,
    /// One bulk import at a time: each may hold up to 64 MiB while parsed.
    /// The guard moves into the blocking work, so a client that goes away
    /// does not release it early.
    pub(crate) importing: Arc<tokio::sync::Mutex<()>>,
}

/// A refusal from the admin API.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-consent",
            "Invalid consent change",
            detail,
        )
    }

    /// A malformed subject id (400 `invalid-subject`).
    pub fn invalid_subject(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-subject",
            "Invalid subject id",
            detail,
        )
    }

    /// A malformed request body or query (400 `invalid-request`).
    pub fn invalid_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    /// The store failed: 503, and the message names the operation only.
    pub fn store(e: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %e, "consent store failed (admin API)");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "consent-store-unavailable",
            "Consent store unavailable",
            "the consent store could not be read or written; nothing was changed",
        )
    }

    fn response(&self) -> Response<Body> {
        let mut resp = problem_response(self.status, self.slug, self.title, &self.detail, None);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"consentry-admin\""),
            );
        }
        resp
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

type Result<T> = std::result::Result<T, Problem>;

impl Admin {
    pub fn new(gateway: Arc<Gateway>, token: AdminToken) -> Admin {
        Admin {
            gateway,
            token,
            auditor: None,
            importing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Lets `token` read the audit trail and access reports.
    pub fn with_auditor(mut self, token: Option<AdminToken>) -> Admin {
        self.auditor = token;
        self
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.route(req).await {
            Ok(resp) => resp,
            Err(p) => p.response(),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>> {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return match *req.method() {
                Method::GET | Method::HEAD => {
                    Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
                }
                _ => Err(not_allowed("GET")),
            };
        }
        if path == "/readyz" {
            return match *req.method() {
                Method::GET | Method::HEAD => Ok(serving::readyz(self).await),
                _ => Err(not_allowed("GET")),
            };
        }
        let role = self.authorise(&req)?;
        if path == "/metrics" {
            return match *req.method() {
                Method::GET | Method::HEAD => Ok(serving::metrics(self)),
                _ => Err(not_allowed("GET")),
            };
        }
        let segs: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
        let m = req.method().clone();
        // What auditors may do: read the trail and access reports.
        let read = match segs.as_slice() {
            ["v1", "audit", "events" | "verify" | "checkpoints"] if m == Method::GET => {
                Some(segs[2])
            }
            ["v1", "subjects", _, "access"] if m == Method::GET => Some("access"),
            ["v1", "policies", "explain"] if m == Method::GET => Some("explain"),
            _ => None,
        };
        match (read, &segs[..]) {
            (Some("events"), _) => return audit::events(self, &req).await,
            (Some("verify"), _) => return audit::verify(self).await,
            (Some("checkpoints"), _) => return audit::checkpoints(self).await,
            (Some("explain"), _) => return serving::explain(self, &req),
            (Some("access"), ["v1", "subjects", id, "access"]) => {
                // The CRM's record, in clear, is for the admin token only:
                // auditors see who accessed what, not the data itself.
                let with_record = role == Role::Admin;
                return subjects::access(self, &decode_segment(id)?, &req, with_record).await;
            }
            _ => {}
        }
        if role == Role::Auditor {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "auditor-read-only",
                "Auditor token is read-only",
                "the auditor token reads the audit trail and access reports only; this needs the admin token",
            ));
        }
        match segs.as_slice() {
            ["v1", "subjects", id, "erase"] if m == Method::POST => {
                subjects::erase(self, &decode_segment(id)?, req).await
            }
            ["v1", "audit", "prune"] if m == Method::POST => audit::prune(self).await,
            ["v1", "policies", "reload"] if m == Method::POST => serving::reload(self, req).await,
            ["v1", "policies", "reload"] => Err(not_allowed("POST")),
            ["v1", "policies", "explain"] => Err(not_allowed("GET")),
            ["v1", "subjects", _, "erase"] | ["v1", "audit", "prune"] => Err(not_allowed("POST")),
            ["v1", "audit", "events" | "verify" | "checkpoints"]
            | ["v1", "subjects", _, "access"] => Err(not_allowed("GET")),
            ["v1", "consents"] if m == Method::POST => consent::set(self, req).await,
            ["v1", "consents", "import"] if m == Method::POST => consent::import(self, req).await,
            ["v1", "consents", "export"] if m == Method::GET => consent::export(self, &req).await,
            ["v1", "subjects", id, "consents"] if m == Method::GET => {
                consent::current(self, &decode_segment(id)?).await
            }
            ["v1", "subjects", id, "consents", "history"] if m == Method::GET => {
                consent::history(self, &decode_segment(id)?).await
            }
            ["v1", "keys"] if m == Method::GET => keys::status(self).await,
            ["v1", "keys", "rotate"] if m == Method::POST => keys::rotate(self).await,
            ["v1", "subjects", id, "key"] if m == Method::DELETE => {
                keys::shred(self, &decode_segment(id)?).await
            }
            ["v1", "keys"] => Err(not_allowed("GET")),
            ["v1", "keys", "rotate"] => Err(not_allowed("POST")),
            ["v1", "subjects", _, "key"] => Err(not_allowed("DELETE")),
            ["v1", "consents"] | ["v1", "consents", "import"] => Err(not_allowed("POST")),
            ["v1", "consents", "export"]
            | ["v1", "subjects", _, "consents"]
            | ["v1", "subjects", _, "consents", "history"] => Err(not_allowed("GET")),
            _ => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such admin endpoint",
                "see the README's admin API section for the endpoints",
            )),
        }
    }

    /// `Authorization: Bearer <token>`, compared in constant time with the
    /// admin token and the auditor token.
    fn authorise(&self, req: &Request<Incoming>) -> Result<Role> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
                scheme
                    .eq_ignore_ascii_case(b"bearer")
                    .then(|| rest.trim_ascii())
            });
        match presented {
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "admin-token-missing",
                "Admin token missing",
                "send `Authorization: Bearer <admin token>`",
            )),
            Some(t) if self.token.matches(t) => Ok(Role::Admin),
            Some(t) if self.auditor.as_ref().is_some_and(|a| a.matches(t)) => Ok(Role::Auditor),
            Some(_) => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "admin-token-invalid",
                "Admin token not accepted",
                "the bearer token is neither the admin token nor the auditor token",
            )),
        }
    }
}

/// Records an administrative act in the audit trail (when there is one),
/// before the act is acknowledged; the event's sequence number. The act
/// itself is already done: if its event cannot be stored, the answer says
/// so (503) rather than claiming a clean success.
pub async fn audit_act(
    admin: &Admin,
    kind: &str,
    decision: &str,
    subjects: &[(&str, String)],
    counts: Option<serde_json::Value>,
) -> Result<Option<u64>> {
    let Some(audit) = admin.gateway().audit() else {
        return Ok(None);
    };
    let entries = subjects
        .iter()
        .map(|(id, what)| crate::audit::SubjectEntry {
            subject: audit.pseudonym(id),
            record: what.clone(),
        })
        .collect();
    let event = crate::audit::Event::act(kind, "admin", decision, entries, counts);
    audit.record(event).await.map(Some).map_err(|e| {
        tracing::error!(error = %e, kind, "an administrative act was carried out, but its audit event was not stored");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit-unavailable",
            "Audit trail unavailable",
            "the change was made, but its audit event could not be stored; check the audit store",
        )
    })
}

/// Runs blocking work (stores, the trail) off the async threads; a task
/// that panicked is `failure`.
pub async fn off_thread<T: Send + 'static>(
    failure: impl FnOnce() -> Problem,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| failure())
}

fn not_allowed(allow: &'static str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("this endpoint takes {allow}"),
    )
}

/// One path segment, percent-decoded, as UTF-8.
fn decode_segment(seg: &str) -> Result<String> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            Problem::invalid_subject("the subject id in the path is not UTF-8 once decoded")
        })
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    with_type(status, "application/json", Bytes::from(bytes))
}

pub fn with_type(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
) -> Result<(http::request::Parts, Bytes)> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the admin API takes at most {limit} bytes here; split the file"),
        )
    };
    let (parts, incoming) = req.into_parts();
    match body::read_limited(incoming, limit as u64, Duration::from_secs(10)).await {
        Ok(b) => Ok((parts, b)),
        Err(body::ReadError::TooLarge) => Err(too_large()),
        Err(body::ReadError::Unreadable) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "body-unreadable",
            "Request body unreadable",
            "the request body could not be read completely",
        )),
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    // The data listener's HTTP settings and drain; fewer connections.
    let limits = &admin.gateway().config().limits;
    let builder = crate::server::builder(limits);
    let options = crate::server::Listener {
        tls: None,
        max_connections: 256,
        metrics: None,
        drain: limits.shutdown_drain,
        idle: None,
    };
    crate::server::accept(
        listener,
        &builder,
        shutdown,
        "admin",
        options,
        move |req, _peer| {
            let a = Arc::clone(&admin);
            async move { a.handle(req).await }
        },
    )
    .await;
}
