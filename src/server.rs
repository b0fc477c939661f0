//! The listener: accepts connections (TLS when configured, with ALPN
//! choosing HTTP/2 or HTTP/1.1; HTTP/2 by prior knowledge in clear), serves
//! them with the configured limits, and drains on shutdown.
//!
//! `serve` takes a bound listener and a shutdown future, so tests bind port 0
//! and stop the server without signals or sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::proxy::body::Body;
use crate::tls::ClientCertificate;

/// HTTP/2 connections are pinged this often; one that does not answer
/// within the same time is closed.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// The HTTP/1.1 and HTTP/2 settings both listeners use.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // hyper enforces the header read timeout only with a timer. It also
        // runs while a keep-alive connection waits for its next request, so
        // it is the HTTP/1.1 idle timeout too.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    builder
}

/// What a listener does with each connection besides HTTP.
#[derive(Clone)]
pub struct Listener {
    /// TLS handshake first (and client certificates).
    pub tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    /// Connections open at once at most; more are closed at accept.
    pub max_connections: usize,
    /// Counted here: open connections, refusals, TLS failures.
    pub metrics: Option<Arc<Metrics>>,
    /// In-flight requests get this long to finish after shutdown begins.
    pub drain: Duration,
    /// A connection with no request being answered (response bodies
    /// included) for this long is closed; HTTP/2 pings do not count.
    pub idle: Option<Duration>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The data listener's TLS (`tls:`), with its handshake timeout; `None`
/// for plain HTTP. Built once, before anything listens: a certificate or
/// key that does not load stops start-up.
pub fn tls_acceptor(
    cfg: &crate::config::Config,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Duration)>, String> {
    cfg.tls
        .as_ref()
        .map(|t| {
            let c = crate::tls::server_config(t)?;
            Ok((tokio_rustls::TlsAcceptor::from(c), t.handshake_timeout))
        })
        .transpose()
}

/// Serves `gateway` on `listener` (over `tls`, from `tls_acceptor`) until
/// `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = gateway.config().limits.clone();
    let options = Listener {
        tls,
        max_connections: limits.max_connections,
        metrics: Some(Arc::clone(gateway.metrics())),
        drain: limits.shutdown_drain,
        idle: Some(limits.idle_timeout),
    };
    let builder = builder(&limits);
    accept(
        listener,
        &builder,
        shutdown,
        "listen",
        options,
        move |req, peer| {
            let gw = Arc::clone(&gateway);
            async move { gw.handle(req, peer).await }
        },
    )
    .await;
}

/// The accept loop both listeners share (the data plane and the admin API):
/// each connection is served by `handle` under `builder`'s limits until
/// `shutdown` resolves; then each connection is asked to close once its
/// requests are answered (HTTP/2: GOAWAY), and those still open after the
/// drain time are closed.
pub async fn accept<F, Fut>(
    listener: TcpListener,
    builder: &auto::Builder<TokioExecutor>,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
    options: Listener,
    handle: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One permit per open connection: all of them back means none is open.
    let max = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(tokio::sync::Semaphore::new(max as usize));
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
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Dropping the stream closes it: cheaper than an answer, and the
            // client sees a reset it can retry elsewhere.
            if let Some(m) = &options.metrics {
                m.connection_refused();
            }
            tracing::warn!(
                listener = what,
                "connection refused: `limits.max_connections` are open"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let counted = options.metrics.as_ref().map(|m| m.connection());
        let builder = builder.clone();
        let handle = handle.clone();
        let tls = options.tls.clone();
        let metrics = options.metrics.clone();
        let idle = options.idle;
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = counted;
            let conn = Conn {
                peer,
                builder: &builder,
                stop,
                idle,
            };
            match tls {
                None => conn.serve(stream, None, handle).await,
                Some((acceptor, limit)) => {
                    let Ok(Ok(tls)) = tokio::time::timeout(limit, acceptor.accept(stream)).await
                    else {
                        if let Some(m) = &metrics {
                            m.tls_failure();
                        }
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| ClientCertificate(Arc::new(crate::tls::certificate_names(c))));
                    conn.serve(tls, cert, handle).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = permits.acquire_many(max) => {}
        () = tokio::time::sleep(options.drain) => tracing::warn!(listener = what, "drain deadline reached; closing remaining connections"),
    }
}

/// One connection's settings.
struct Conn<'a> {
    peer: SocketAddr,
    builder: &'a auto::Builder<TokioExecutor>,
    /// Turns true at shutdown.
    stop: tokio::sync::watch::Receiver<bool>,
    idle: Option<Duration>,
}

impl Conn<'_> {
    /// Serves HTTP on `stream` until the client closes it, shutdown asks it
    /// to close, or it has been idle (no request being answered, response
    /// bodies included) for `idle`; the last two close it gracefully.
    async fn serve<S, F, Fut>(self, stream: S, cert: Option<ClientCertificate>, handle: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let busy = Arc::clone(&activity);
        let peer = self.peer;
        let svc = service_fn(move |mut req: Request<Incoming>| {
            if let Some(c) = &cert {
                req.extensions_mut().insert(c.clone());
            }
            // Busy until the response body has been sent (or dropped).
            let guard = Busy::new(&busy);
            let fut = handle(req, peer);
            async move {
                let resp = fut.await;
                // A body that leaves with its head is done then; one that
                // streams keeps the request counted until its end.
                let whole = http_body::Body::size_hint(resp.body())
                    .exact()
                    .is_some_and(|n| n <= ONE_WRITE);
                if whole {
                    drop(guard);
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                Ok(resp.map(|b| {
                    http_body_util::BodyExt::boxed_unsync(Guarded {
                        inner: b,
                        _busy: guard,
                    })
                }))
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        // A watchdog task decides when to ask the connection to close (at
        // shutdown, or once idle), so that serving the connection pays for
        // nothing but an atomic load per wake-up.
        let closer = Arc::new(Closer::default());
        let dog = tokio::spawn(watchdog(
            Arc::clone(&closer),
            activity,
            self.stop.clone(),
            self.idle,
            peer,
        ));
        // Client resets and timeouts end here; they are not our errors.
        let _ = Closing {
            conn: Box::pin(conn),
            closer,
            closing: false,
        }
        .await;
        dog.abort();
    }
}

/// Asks a connection to close.
#[derive(Default)]
struct Closer {
    now: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Closer {
    fn close(&self) {
        self.now.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }
}

/// Waits for shutdown, or for the connection to be idle for `idle`; then
/// asks it to close.
async fn watchdog(
    closer: Arc<Closer>,
    activity: Arc<Activity>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    idle: Option<Duration>,
    peer: SocketAddr,
) {
    let Some(idle) = idle else {
        // Only shutdown closes it.
        if stop.wait_for(|&s| s).await.is_ok() {
            closer.close();
        }
        return;
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = if activity.in_flight() == 0 {
            idle.saturating_sub(activity.quiet_for())
        } else {
            // Busy: look again after a whole period.
            idle
        };
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    // The listener is gone without a shutdown: nothing to do.
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {
                if activity.in_flight() == 0 && activity.quiet_for() >= idle {
                    tracing::debug!(%peer, "idle connection asked to close");
                    break;
                }
            }
        }
    }
    closer.close();
}

/// A connection that starts its graceful shutdown (HTTP/2: GOAWAY; HTTP/1:
/// close after the response in flight) when its `Closer` says so.
struct Closing<C> {
    conn: std::pin::Pin<Box<C>>,
    closer: Arc<Closer>,
    closing: bool,
}

impl<C: hyper_util::server::graceful::GracefulConnection> Future for Closing<C> {
    type Output = C::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        if !this.closing {
            this.closer.waker.register(cx.waker());
            if this.closer.now.load(std::sync::atomic::Ordering::Acquire) {
                this.closing = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

/// When a connection last finished answering a request, and how many of
/// its requests are being answered (response bodies included). Pings and
/// other connection-level traffic do not count: a client that only keeps
/// the connection alive is idle.
struct Activity {
    epoch: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts a request as being answered until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Busy {
        a.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(Arc::clone(a))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0
            .last_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bodies up to this size (known in advance) are written with their head:
/// idleness need not follow them to their end.
const ONE_WRITE: u64 = 256 << 10;

/// A response body that keeps its request counted as being answered
/// until it has been sent or dropped.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = crate::proxy::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
