//! Serving endpoints of the admin API: readiness, metrics and reload.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Admin, Problem, Result, json, off_thread};
use crate::proxy::body::Body;

/// `GET /readyz`: 200 when the gateway can serve (policies loaded, the
/// store takes writes, the audit trail commits, the CRM accepts
/// connections); 503 naming what is not.
pub async fn readyz(admin: &Admin) -> Response<Body> {
    let gw = admin.gateway();
    let live = gw.live();
    let consents = std::sync::Arc::clone(gw.consents());
    let store = off_thread(
        || Problem::store("readiness probe"),
        move || consents.ready(),
    )
    .await
    .map_err(|p| p.to_string())
    .and_then(|r| r);
    let audit = match gw.audit() {
        None => Ok("off"),
        Some(a) if a.healthy() => Ok("ok"),
        // The last commit failed: try one now (a probe event), so that a
        // store that recovered is seen without waiting for traffic.
        Some(a) => {
            let probe = crate::audit::Event::act("health", "readyz", "probe", Vec::new(), None);
            a.record(probe)
                .await
                .map(|_| "ok")
                .map_err(|e| e.to_string())
        }
    };
    let upstream = gw.upstream_reachable().await;
    let ok = store.is_ok() && audit.is_ok() && upstream.is_ok();
    let state = |r: &std::result::Result<&str, String>| match r {
        Ok(s) => serde_json::Value::from(*s),
        Err(e) => serde_json::json!({ "error": e }),
    };
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not ready" },
        "policies": { "version": live.version, "resources": live.policies.resources().len() },
        "store": state(&store.map(|()| "ok")),
        "audit": state(&audit),
        "upstream": state(&upstream.map(|()| "ok")),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(admin: &Admin) -> Response<Body> {
    let text = admin.gateway().metrics().render();
    let mut resp = Response::new(crate::proxy::body::full(text));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

/// `GET /v1/policies/explain?method=GET&path=/...&purpose=P`: what the
/// serving policies decide for that request, field by field, and which
/// rule decides it (`consentry policy explain`, on the live version).
pub fn explain(admin: &Admin, req: &Request<Incoming>) -> Result<Response<Body>> {
    let q = req.uri().query();
    let param = |name: &str| {
        super::consent::query_param(q, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Problem::invalid_request(format!(
                    "`{name}` is required: ?method=GET&path=/crm/...&purpose=marketing"
                ))
            })
    };
    let (method, path, purpose) = (param("method")?, param("path")?, param("purpose")?);
    let live = admin.gateway().live();
    let mut v = crate::policy::explain::request(&live.policies, &method, &path, &purpose)
        .map_err(Problem::invalid_request)?;
    v["policy_version"] = live.version.into();
    Ok(json(StatusCode::OK, &v))
}

/// `POST /v1/policies/reload`: 200 with what was applied, or 422 naming
/// every problem (file and line); the serving version is then unchanged.
pub async fn reload(admin: &Admin, _req: Request<Incoming>) -> Result<Response<Body>> {
    // In a task of its own: a client that goes away does not cut a reload
    // between its audit event and the swap.
    let gw = std::sync::Arc::clone(admin.gateway());
    let done = tokio::spawn(async move { crate::reload::reload(&gw, "admin").await })
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Reload failed",
                "the reload task failed; the serving version is unchanged",
            )
        })?;
    match done {
        Ok(r) => Ok(json(
            StatusCode::OK,
            &serde_json::to_value(&r).unwrap_or_default(),
        )),
        Err(e) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-config",
            "Reload refused",
            e.detail,
        )),
    }
}
