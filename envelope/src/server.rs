//! The accept loops: bounded connections, TLS handshake and request head under a
//! deadline (slowloris), the TCP peer address put into each request's extensions
//! as [`PeerAddr`] (never a header), graceful stop. They serve warp filters
//! (through `warp::service`) for the access endpoint and for /metrics.
//!
//! This loop is ours on purpose: warp 0.4 has no TLS, and its `serve` installs no
//! hyper timer, so a slow client could hold a connection open without limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use warp::Filter;

/// Largest request head accepted (hyper answers 431 above it).
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Pause after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `addr`; an unspecified IPv6 address also takes IPv4 (dual stack).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The TCP peer of the connection a request came on, as a request extension
/// (`warp::addr::remote()` knows nothing of connections it did not accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address; a request that did not come through [`serve`] is rejected.
pub fn peer() -> impl Filter<Extract = (SocketAddr,), Error = warp::Rejection> + Copy {
    warp::ext::get::<PeerAddr>().map(|peer: PeerAddr| peer.0)
}

/// The warp response type every served filter extracts.
pub type Reply = warp::reply::Response;

/// Per-listener settings.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connections: Arc<Semaphore>,
    pub handshake_timeout: Duration,
}

/// Serves the warp filter `routes` on `listener` until `stop` fires;
/// connections are tracked by `conns`.
pub async fn serve<F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    routes: F,
    stop: CancellationToken,
    conns: TaskTracker,
) where
    F: Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; connection dropped");
            continue;
        };
        let (tls, service, stop, timeout) = (
            tls.clone(),
            service.clone(),
            stop.clone(),
            limits.handshake_timeout,
        );
        conns.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            connection(stream, peer, tls, timeout, service, stop).await;
        });
    }
}

async fn connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
    service: S,
    stop: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Reply, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    match tls {
        None => http(TokioIo::new(stream), peer, timeout, service, stop).await,
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                http(TokioIo::new(tls_stream), peer, timeout, service, stop).await
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

async fn http<I, S>(io: I, peer: SocketAddr, timeout: Duration, service: S, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Reply, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        service.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
