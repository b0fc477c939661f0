//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) with the configured limits, and drains on shutdown.
//!
//! `serve` takes a bound listener and a shutdown future, so tests bind port 0
//! and stop the server without signals or sleeps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::proxy::Gateway;
use crate::proxy::body::Body;

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `gateway` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = gateway.config().limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // hyper enforces the header read timeout only with a timer.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX));
    accept(listener, &builder, shutdown, "listen", move |req, peer| {
        let gw = Arc::clone(&gateway);
        async move { gw.handle(req, peer).await }
    })
    .await;
}

/// The accept loop both listeners share (the data plane and the admin API):
/// each connection is served by `handle` under `builder`'s limits until
/// `shutdown` resolves; then connections in flight get `DRAIN` to finish.
pub async fn accept<F, Fut>(
    listener: TcpListener,
    builder: &auto::Builder<TokioExecutor>,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
    handle: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let h = handle.clone();
        let svc = service_fn(move |req| {
            let fut = h(req, peer);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Client resets and timeouts end here; they are not our errors.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!(listener = what, "drain deadline reached; closing remaining connections"),
    }
}
