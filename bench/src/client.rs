//! Client side of the measurements. Runs on a thread that has joined the client
//! namespace, so every socket made here belongs to that namespace.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use testbed::Wait;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub use testbed::tls::{tls_connector, Stream, Ws};

/// TCP (from `local`, if given) and, with a connector, TLS — not timed.
pub async fn connect(
    local: Option<IpAddr>,
    to: SocketAddr,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<Box<dyn Stream>> {
    let socket = if to.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| anyhow!("connect {to} timed out"))??;
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            Ok(Box::new(connector.connect(name, tcp).await?))
        }
    }
}

/// Sends the upgrade and waits for the answer: the grant latency when it is 101.
pub async fn upgrade(
    stream: Box<dyn Stream>,
    to: SocketAddr,
    tls: bool,
    token: &str,
) -> anyhow::Result<(Ws, Duration)> {
    let scheme = if tls { "wss" } else { "ws" };
    let mut request =
        format!("{scheme}://{to}/v0/envelope/access?access_token={token}").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("net.measurementlab.envelope"),
    );
    let started = Instant::now();
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .map_err(|_| anyhow!("upgrade timed out"))?
    .context("upgrade")?;
    let took = started.elapsed();
    anyhow::ensure!(
        response.status().as_u16() == 101,
        "answer {}",
        response.status()
    );
    Ok((ws, took))
}

/// Whether a new TCP connection to `to` is refused right now.
pub fn refused(to: SocketAddr) -> anyhow::Result<bool> {
    match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) => Err(anyhow!("probing {to}: {e}")),
    }
}

/// Polls (every 0.2 ms, for at most `within`) until `to` refuses; returns when it did.
pub fn wait_refused(to: SocketAddr, within: Duration) -> anyhow::Result<Instant> {
    let wait = Wait::new(within, format!("{to} refused")).every(Duration::from_micros(200));
    while !refused(to)? {
        wait.pause()?;
    }
    Ok(Instant::now())
}
