//! Client side: WebSocket sessions over TLS and plain TCP probes. Everything
//! here runs on the soak's worker thread, which has joined the client
//! namespace, so every socket made here belongs to that namespace.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::anyhow;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::lab::{ENVELOPE_PORT, PROXY_PORT, SERVICE_PORT};

pub use testbed::tls::{tls_connector, Stream, Ws};

/// The server address a source talks to: the same family.
pub fn server_for(source: IpAddr, port: u16) -> SocketAddr {
    let ip: IpAddr = if source.is_ipv4() {
        testbed::SERVER_V4.parse().unwrap()
    } else {
        testbed::SERVER_V6.parse().unwrap()
    };
    SocketAddr::new(ip, port)
}

/// What an upgrade attempt got.
pub enum Upgrade {
    Session(Box<Ws>),
    /// The HTTP status of a refusal.
    Refused(u16),
}

/// A WebSocket upgrade from `source` with `token`, bounded in time.
pub async fn open(source: IpAddr, tls: &TlsConnector, token: &str) -> anyhow::Result<Upgrade> {
    let to = server_for(source, ENVELOPE_PORT);
    let socket = if to.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| anyhow!("connect {to} from {source} timed out"))??;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream: Box<dyn Stream> = Box::new(
        tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
            .await
            .map_err(|_| anyhow!("TLS from {source} timed out"))??,
    );
    let mut request =
        format!("wss://{to}/v0/envelope/access?access_token={token}").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("net.measurementlab.envelope"),
    );
    match tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    {
        Err(_) => Err(anyhow!("upgrade from {source} timed out")),
        Ok(Ok((ws, _))) => Ok(Upgrade::Session(Box::new(ws))),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Ok(Upgrade::Refused(response.status().as_u16()))
        }
        Ok(Err(e)) => Err(anyhow!("upgrade from {source}: {e}")),
    }
}

/// A clean hang-up: a Close frame, then the connection goes.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Reads a session until it ends: answers the server's Close frame.
pub async fn drain(mut ws: Ws) {
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Whether a TCP connection from `source` to `port` on the server is accepted
/// (`Some(true)`), refused (`Some(false)`), or neither within a second (`None`).
pub fn probe(source: IpAddr, port: u16) -> io::Result<Option<bool>> {
    let to = server_for(source, port);
    let domain = if to.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect_timeout(&to.into(), Duration::from_secs(1)) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Some(false)),
        Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub const PROBE_PORTS: [u16; 2] = [SERVICE_PORT, PROXY_PORT];
