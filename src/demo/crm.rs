//! The sample CRM of `consentry demo`: a HubSpot-shaped contacts API on
//! loopback, serving the invented contacts of `data`.
//!
//! ```text
//! GET /crm/v3/objects/contacts/{id}           one contact (404 if unknown)
//! GET /crm/v3/objects/contacts?limit=&after=  {"results":[...],"paging":{...}}
//! GET /crm/v3/properties/contacts             the property schema (no personal data)
//! ```

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use super::data;

/// How many contacts the sample CRM holds.
pub const CONTACTS: u64 = 250;

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

fn query_param(q: Option<&str>, name: &str) -> Option<u64> {
    q?.split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Answers one request.
pub fn answer(method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    const BASE: &str = "/crm/v3/objects/contacts";
    if method != Method::GET && method != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"status":"error","message":"method not allowed"}),
        );
    }
    if path == BASE {
        let limit = query_param(query, "limit").unwrap_or(10).clamp(1, 100);
        let after = query_param(query, "after").unwrap_or(0);
        return json_response(StatusCode::OK, &data::page(BASE, after, limit, CONTACTS));
    }
    if let Some(id) = path.strip_prefix(BASE).and_then(|r| r.strip_prefix('/')) {
        return match id.parse::<u64>() {
            Ok(n) if (1..=CONTACTS).contains(&n) => {
                json_response(StatusCode::OK, &data::contact(n))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"status":"error","message":"Object not found","category":"OBJECT_NOT_FOUND"}),
            ),
        };
    }
    if path == "/crm/v3/properties/contacts" {
        let names = [
            "email",
            "firstname",
            "lastname",
            "phone",
            "date_of_birth",
            "notes",
        ];
        let props: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "type": "string"}))
            .collect();
        return json_response(StatusCode::OK, &json!({ "results": props }));
    }
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"status":"error","message":"not found"}),
    )
}

/// Serves the sample CRM on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            () = &mut shutdown => return,
        };
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let svc = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, std::convert::Infallible>(answer(
                    req.method(),
                    req.uri().path(),
                    req.uri().query(),
                ))
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
