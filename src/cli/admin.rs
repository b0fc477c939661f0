//! Calls from the command line to a running gateway's admin API: the way to
//! change what the running process owns (its store, its caches, its keys).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::config::Config;

/// Sends one request to the admin API the config names; returns the status,
/// the body as text, and where it went.
pub fn call(
    cfg: &Config,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(StatusCode, String, SocketAddr)> {
    let Some(admin) = &cfg.admin else {
        bail!("the gateway is running without an admin API: configure `admin:`, or stop it");
    };
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    }
    let token = admin.token.expose_for_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let uri = format!("http://{addr}{path}");
    let (status, text) = rt.block_on(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", &*token));
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let resp = client
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| {
                format!("the store is in use, and the admin API at {addr} does not answer")
            })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })?;
    Ok((status, text, addr))
}
