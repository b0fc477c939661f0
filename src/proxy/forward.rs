//! Phase 4: the request the CRM receives, and the client that sends it.
//!
//! Headers are built, not patched: hop-by-hop headers (RFC 9110 §7.6.1) and
//! every header the client's `Connection` names are dropped, the client's
//! credentials, purpose and forwarding headers never pass, and only then are
//! the gateway's own headers (upstream credentials, `X-Forwarded-*`, `Via`,
//! `X-Request-Id`) set, so a client cannot remove or spoof them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::BoxError;
use super::context::RequestId;
use super::reject::Refusal;
use super::route::Target;
use crate::config::{self, Identity};

pub type UpBody = UnsyncBoxBody<Bytes, BoxError>;

/// Hop-by-hop headers: meaningful for one connection only.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Client headers that never reach the CRM: credentials, what the gateway
/// sets itself, and headers some servers use to override the path, host or
/// client address (every `x-forwarded-*` goes too, by prefix).
const NEVER_FORWARDED: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-host",
    "x-host",
    "x-http-host-override",
    "x-request-id",
    "expect",
    "content-length",
    "via",
];

/// Dropped on inspected reads: the gateway must see whole, fresh bodies.
const INSPECTED_READ_DROPS: &[&str] = &["range", "if-range", "if-none-match", "if-modified-since"];

/// Dropped on inspected writes, whose body the gateway may rewrite.
const INSPECTED_WRITE_DROPS: &[&str] = &[
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "content-encoding",
];

pub(crate) const ACCEPT_ENCODING: &str = "gzip, br, zstd, deflate";

/// Copies the headers that may pass: drops hop-by-hop ones, whatever the
/// `Connection` header lists, the names in `drop_names`, the headers in
/// `drop_headers`, and names starting with `drop_prefix` (if not empty).
/// One pass, no hashing of names.
pub fn filter_headers(
    src: &HeaderMap,
    drop_headers: &[&HeaderName],
    drop_names: &[&str],
    drop_prefix: &str,
) -> HeaderMap {
    let mut listed: Vec<String> = Vec::new();
    for v in src.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            listed.extend(
                s.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let mut out = HeaderMap::with_capacity(src.len() + 6);
    for (name, value) in src {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || drop_names.contains(&n)
            || listed.iter().any(|l| l == n)
            || drop_headers.contains(&name)
            || (!drop_prefix.is_empty() && n.starts_with(drop_prefix))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The client address as a header value, without going through `fmt`.
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    if let std::net::IpAddr::V4(v4) = ip {
        let mut b = [0u8; 15];
        let mut n = 0;
        for (i, o) in v4.octets().iter().enumerate() {
            if i > 0 {
                b[n] = b'.';
                n += 1;
            }
            let (h, t, u) = (o / 100, o / 10 % 10, o % 10);
            if h > 0 {
                b[n] = b'0' + h;
                n += 1;
            }
            if h > 0 || t > 0 {
                b[n] = b'0' + t;
                n += 1;
            }
            b[n] = b'0' + u;
            n += 1;
        }
        if let Ok(v) = HeaderValue::from_bytes(&b[..n]) {
            return v;
        }
    }
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How a request goes to the CRM.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forward {
    /// On an inspected route: headers that would describe a body the
    /// client does not get (conditional and range headers on reads, digests
    /// on writes) are dropped, and HEAD is sent as GET.
    pub inspected: bool,
    /// The answer is decoded and read: only encodings the gateway decodes
    /// are offered.
    pub decoded: bool,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

/// Builds the request sent to the CRM.
#[allow(clippy::too_many_arguments)]
pub fn request(
    up: &config::Upstream,
    identity: &Identity,
    parts: &Parts,
    target: &Target,
    how: Forward,
    body: UpBody,
    id: &RequestId,
    peer: SocketAddr,
) -> Result<Request<UpBody>, Refusal> {
    let inspected = how.inspected;
    let drops = [&identity.api_key_header, &identity.purpose_header];
    let reading = parts.method == Method::GET || parts.method == Method::HEAD;
    let mut headers = if inspected && reading {
        let mut names = NEVER_FORWARDED.to_vec();
        names.extend_from_slice(INSPECTED_READ_DROPS);
        filter_headers(&parts.headers, &drops, &names, "x-forwarded-")
    } else if inspected {
        // A minimised write body is not the client's: its digests would lie.
        let mut names = NEVER_FORWARDED.to_vec();
        names.extend_from_slice(INSPECTED_WRITE_DROPS);
        filter_headers(&parts.headers, &drops, &names, "x-forwarded-")
    } else {
        filter_headers(&parts.headers, &drops, NEVER_FORWARDED, "x-forwarded-")
    };
    if how.decoded {
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
    }
    // The gateway's own headers, set last.
    if up.forwarded_headers {
        headers.insert(X_FORWARDED_FOR, ip_header(peer.ip()));
        let proto = if how.https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    headers.insert(header::VIA, HeaderValue::from_static("1.1 consentry"));
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        headers.insert(X_REQUEST_ID, v);
    }
    for (name, value) in &up.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut path_and_query = String::with_capacity(up.prefix.len() + target.path.len() + 32);
    path_and_query.push_str(&up.prefix);
    path_and_query.push_str(&target.path);
    if let Some(q) = &target.query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(up.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| Refusal::Internal)?;
    // HEAD on an inspected route is answered from a GET: same decision, same headers.
    let method = if inspected && parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Counts request body bytes and stops at the limit, remembering that it did.
#[derive(Debug)]
pub struct Capped {
    inner: Incoming,
    left: u64,
    pub exceeded: Arc<AtomicBool>,
}

impl Capped {
    pub fn new(inner: Incoming, limit: u64) -> Capped {
        Capped {
            inner,
            left: limit,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit")]
struct TooLarge;

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.left {
                        self.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body sent upstream: nothing for GET/HEAD/DELETE without a
/// body, else the client's body under the size limit.
pub fn body(
    method: &Method,
    incoming: Incoming,
    limit: u64,
) -> Result<(UpBody, Option<Arc<AtomicBool>>), Refusal> {
    if let Some(n) = incoming.size_hint().exact() {
        if n > limit {
            return Err(Refusal::RequestBodyTooLarge);
        }
        if n == 0
            && matches!(
                *method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
            )
        {
            return Ok((super::body::empty(), None));
        }
    }
    let capped = Capped::new(incoming, limit);
    let flag = Arc::clone(&capped.exceeded);
    Ok((capped.boxed_unsync(), Some(flag)))
}

/// The HTTP(S) client for the CRM, with its timeouts.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, UpBody>,
    response_timeout: std::time::Duration,
}

impl Upstream {
    pub fn new(cfg: &config::Upstream) -> Result<Upstream, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = &cfg.ca_file {
            crate::tls::add_roots(&mut roots, ca, "CA file")?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
        let tls = match &cfg.client_cert {
            Some((cert, key)) => {
                let (chain, key) = crate::tls::client_identity(cert, key)?;
                tls.with_client_auth_cert(chain, key)
                    .map_err(|e| format!("upstream client certificate: {e}"))?
            }
            None => tls.with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Upstream {
            client,
            response_timeout: cfg.response_timeout,
        })
    }

    /// Sends the request; waits for the response head at most the response timeout.
    pub async fn send(&self, req: Request<UpBody>) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect),
            Ok(Err(_)) => Err(SendError::Failed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    Connect,
    Timeout,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_headers() {
        for ip in [
            "127.0.0.1",
            "10.200.3.45",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(ip).to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn connection_listed_and_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, X-Custom, Authorization"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.insert("x-api-key", HeaderValue::from_static("secret"));
        let key = HeaderName::from_static("x-api-key");
        let out = filter_headers(&h, &[&key], &[], "");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["accept"], "application/json");
    }
}
