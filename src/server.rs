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

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::policy::PolicySet;
use crate::proxy::Gateway;

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
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = Arc::clone(&gateway);
        let svc = service_fn(move |req| {
            let gw = Arc::clone(&gw);
            async move { Ok::<_, std::convert::Infallible>(gw.handle(req, peer).await) }
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
        () = tokio::time::sleep(DRAIN) => tracing::warn!("drain deadline reached; closing remaining connections"),
    }
}

/// Runs `workers` threads, each with its own single-threaded runtime, its own
/// listener on the same address (`SO_REUSEPORT`: the kernel spreads the
/// connections) and its own CRM connection pool. A connection and the CRM
/// connections its requests use stay on one thread, so a request never waits
/// for a wakeup from another core; this is how nginx workers run too.
///
/// Returns the bound address once every worker listens; the workers stop and
/// drain when `stop` becomes true.
pub fn run_workers(
    config: &Config,
    policies: Arc<ArcSwap<PolicySet>>,
    workers: usize,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(std::net::SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    let mut addr = config.listen;
    let mut handles = Vec::new();
    for i in 0..workers.max(1) {
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<std::io::Result<std::net::SocketAddr>>();
        let gw = Gateway::shared(config.clone(), Arc::clone(&policies))
            .map_err(std::io::Error::other)?;
        let mut stop = stop.clone();
        let bind_to = addr;
        let handle = std::thread::Builder::new()
            .name(format!("consentry-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match reuseport_listener(bind_to) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr());
                    serve(listener, Arc::new(gw), async move {
                        while !*stop.borrow() {
                            if stop.changed().await.is_err() {
                                break;
                            }
                        }
                    })
                    .await;
                });
            })?;
        // The first worker fixes the port (it may have been 0); the others join it.
        addr = ready_rx.recv().map_err(std::io::Error::other)??;
        handles.push(handle);
    }
    Ok((addr, handles))
}

fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
