//! The one accept loop, for the access endpoint (TCP or TLS), the metrics
//! listener (TCP) and the admin API (unix socket): the caps taken on accept
//! (`limits.rs`: global, and per source subnet), the TLS handshake, each
//! request head and the life of a connection that never upgrades each under a
//! deadline (slowloris, keep-alive floods), the connection's peer put into
//! every request's extensions (never a header), a graceful stop, and an accept
//! error that is not transient ends the loop with that error so the daemon's
//! supervisor sees it.
//!
//! This loop is ours on purpose: warp 0.4 has no TLS, and its `serve` installs
//! no hyper timer, so a slow client could hold a connection open without limit.

mod limits;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::Filter;

pub use self::limits::{Bounds, Refusals};
use crate::firewall::Subnet;
use crate::http::{PeerAddr, PeerCred, Reply};
use crate::logging::chain;

/// Largest request head accepted (hyper answers 431 above it).
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Pause after a transient accept failure (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long open connections get to finish once the loop is told to stop.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Binds `addr`; an unspecified IPv6 address also takes IPv4 (dual stack).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// A listening socket the loop can serve: what a connection is, and who is on
/// the other end of it.
pub trait Listener: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Peer: Peer;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Self::Peer)>> + Send;
}

/// The other end of a connection: written into logs, and put into each of its
/// requests for the filters to read.
pub trait Peer: Clone + fmt::Display + Send + Sync + 'static {
    fn annotate(&self, extensions: &mut hyper::http::Extensions);
    /// The source subnet a per-subnet cap counts it under, if it has one.
    fn source(&self) -> Option<Subnet> {
        None
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;
    type Peer = PeerAddr;

    async fn accept(&self) -> io::Result<(TcpStream, PeerAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, PeerAddr(peer)))
    }
}

impl Peer for PeerAddr {
    fn annotate(&self, extensions: &mut hyper::http::Extensions) {
        extensions.insert(*self);
    }

    fn source(&self) -> Option<Subnet> {
        Some(Subnet::of_client(self.0.ip()))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A unix-socket peer: its kernel credentials, when the kernel gave them (no
/// credentials, no access: the admin filters refuse a request without them).
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer(pub Option<PeerCred>);

impl Listener for UnixListener {
    type Io = UnixStream;
    type Peer = UnixPeer;

    async fn accept(&self) -> io::Result<(UnixStream, UnixPeer)> {
        let (stream, _) = UnixListener::accept(self).await?;
        let cred = stream.peer_cred().ok().map(|cred| PeerCred {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        });
        Ok((stream, UnixPeer(cred)))
    }
}

impl Peer for UnixPeer {
    fn annotate(&self, extensions: &mut hyper::http::Extensions) {
        if let Some(cred) = self.0 {
            extensions.insert(cred);
        }
    }
}

impl fmt::Display for UnixPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cred) => write!(f, "uid {}", cred.uid),
            None => f.write_str("unknown uid"),
        }
    }
}

/// Serves the warp filter `routes` on `listener` until `stop` fires (then
/// `Ok`), or until accepting fails in a way that will not pass (then that
/// error). Connections are tracked by `conns`.
pub async fn serve<L, F>(
    listener: L,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    routes: F,
    stop: CancellationToken,
    conns: TaskTracker,
) -> io::Result<()>
where
    L: Listener,
    F: Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes));
    let mut summaries = tokio::time::interval(limits::SUMMARY_INTERVAL);
    loop {
        let (stream, peer) = tokio::select! {
            _ = summaries.tick() => {
                bounds.refusals.flush_if_due();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %chain(&e), "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            () = stop.cancelled() => return Ok(()),
        };
        let permit = match bounds.admit(peer.source()) {
            Ok(permit) => permit,
            Err(reason) => {
                // Closing at once costs the flood nothing we keep.
                let source = peer
                    .source()
                    .map_or_else(|| peer.to_string(), |s| s.to_string());
                bounds.refusals.refuse(reason, source);
                drop(stream);
                continue;
            }
        };
        let (tls, service, stop, bounds) =
            (tls.clone(), service.clone(), stop.clone(), bounds.clone());
        conns.spawn(async move {
            let _permit = permit;
            connection(stream, peer, tls, &bounds, service, stop).await;
        });
    }
}

/// Whether an accept error says something about one connection or the
/// moment (descriptors, memory, a client that gave up) rather than about the
/// listening socket itself, which cannot get better by retrying.
fn is_transient(error: &io::Error) -> bool {
    use nix::errno::Errno;
    !matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EBADF | Errno::EINVAL | Errno::ENOTSOCK | Errno::EOPNOTSUPP | Errno::EFAULT)
    )
}

async fn connection<I, P, S>(
    stream: I,
    peer: P,
    tls: Option<TlsAcceptor>,
    bounds: &Bounds,
    service: S,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Peer,
    S: Service<Request<Incoming>, Response = Reply, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    match tls {
        None => http(TokioIo::new(stream), peer, bounds, service, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    http(TokioIo::new(tls_stream), peer, bounds, service, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %chain(&e), "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I, P, S>(io: I, peer: P, bounds: &Bounds, service: S, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    P: Peer,
    S: Service<Request<Incoming>, Response = Reply, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let annotate = peer.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        annotate.annotate(req.extensions_mut());
        service.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // Once upgraded, the connection is the session's and this future is done,
    // so the lifetime bounds only connections that never upgrade.
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let lifetime = async {
        match bounds.lifetime {
            Some(lifetime) => tokio::time::sleep(lifetime).await,
            None => std::future::pending().await,
        }
    };
    let stopping = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %chain(&e), "connection ended with an error");
            }
            return;
        }
        () = stop.cancelled() => "stop",
        () = lifetime => "lifetime",
    };
    tracing::debug!(%peer, why = stopping, "closing the connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;

    #[test]
    fn listening_socket_errors_are_fatal_and_the_rest_transient() {
        let error = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        for errno in [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ECONNABORTED,
            Errno::ENOBUFS,
        ] {
            assert!(is_transient(&error(errno)), "{errno}");
        }
        for errno in [Errno::EBADF, Errno::EINVAL, Errno::ENOTSOCK] {
            assert!(!is_transient(&error(errno)), "{errno}");
        }
        assert!(is_transient(&io::Error::other("no errno")));
    }
}
