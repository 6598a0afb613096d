//! The measurements themselves, each run on a thread inside the client namespace.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::join_all;
use futures_util::SinkExt;
use testbed::Wait;
use tokio_rustls::TlsConnector;

use crate::client::{connect, refused, upgrade, wait_refused, Ws};
use crate::stats::Sample;

/// Runs `work` on a current-thread runtime inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    work: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    testbed::NetPair::in_ns(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(work())
    })
}

async fn close(mut ws: Ws) {
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    // Keep the socket until the server has acted; dropping it later is harmless.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(ws);
    });
}

pub struct Latencies {
    pub grant: Sample,
    /// Close → the measurement service refuses new connections.
    pub revoke: Sample,
    /// Close → the proxy port is refused too: every rule of the grant is gone.
    pub revoke_all: Sample,
}

pub async fn sequential(
    envelope: SocketAddr,
    service: SocketAddr,
    proxy: SocketAddr,
    tls: TlsConnector,
    tokens: Vec<String>,
) -> anyhow::Result<Latencies> {
    let (mut grants, mut revokes, mut completes) = (Vec::new(), Vec::new(), Vec::new());
    anyhow::ensure!(
        refused(service)?,
        "the service must be refused before the first grant"
    );
    for token in tokens {
        let stream = connect(None, envelope, Some(&tls)).await?;
        let (ws, granted) = upgrade(stream, envelope, true, &token).await?;
        anyhow::ensure!(
            !refused(service)?,
            "the service must be open while a session is held"
        );
        anyhow::ensure!(
            !refused(proxy)?,
            "the proxy port must be open while a session is held"
        );
        let closed = Instant::now();
        close(ws).await;
        let gone = wait_refused(service, Duration::from_secs(5))?;
        let all_gone = wait_refused(proxy, Duration::from_secs(5))?;
        grants.push(granted);
        revokes.push(gone - closed);
        completes.push(all_gone - closed);
    }
    Ok(Latencies {
        grant: Sample::new(grants),
        revoke: Sample::new(revokes),
        revoke_all: Sample::new(completes),
    })
}

pub struct Burst {
    pub all_granted: Duration,
    pub all_revoked: Duration,
    /// Each client's own upgrade → 101.
    pub grants: Sample,
}

/// One client per source address, all upgrading at once over already-open TLS
/// connections; then all closing at once until the service refuses every one.
pub async fn burst(
    envelope: SocketAddr,
    service_port: u16,
    tls: TlsConnector,
    sources: Vec<IpAddr>,
    token: String,
) -> anyhow::Result<Burst> {
    let mut streams = Vec::new();
    for &source in &sources {
        streams.push(connect(Some(source), envelope, Some(&tls)).await?);
    }
    let started = Instant::now();
    let upgrades = streams
        .into_iter()
        .map(|s| upgrade(s, envelope, true, &token));
    let results: Vec<_> = join_all(upgrades).await;
    let all_granted = started.elapsed();
    let mut sessions = Vec::new();
    let mut grants = Vec::new();
    for result in results {
        let (ws, took) = result?;
        sessions.push(ws);
        grants.push(took);
    }
    let closing = Instant::now();
    for ws in sessions {
        close(ws).await;
    }
    // Every source must be refused again (probed from its own address).
    let service = SocketAddr::new(envelope.ip(), service_port);
    wait_all_refused(service, &sources, Duration::from_secs(10)).await?;
    Ok(Burst {
        all_granted,
        all_revoked: closing.elapsed(),
        grants: Sample::new(grants),
    })
}

/// One client per source, all upgrading at once over already-open TLS
/// connections, with no firewall probing: time until the last 101.
pub async fn upgrades_at_once(
    envelope: SocketAddr,
    tls: TlsConnector,
    sources: Vec<IpAddr>,
    token: String,
) -> anyhow::Result<Duration> {
    let mut streams = Vec::new();
    for &source in &sources {
        streams.push(connect(Some(source), envelope, Some(&tls)).await?);
    }
    let started = Instant::now();
    let results = join_all(
        streams
            .into_iter()
            .map(|s| upgrade(s, envelope, true, &token)),
    )
    .await;
    let took = started.elapsed();
    for result in results {
        close(result?.0).await;
    }
    Ok(took)
}

/// While a flood runs, a valid client upgrades every `every`; returns its latencies.
pub async fn valid_client_during(
    envelope: SocketAddr,
    tokens: Vec<String>,
    for_how_long: Duration,
    every: Duration,
) -> anyhow::Result<Sample> {
    let end = Instant::now() + for_how_long;
    let mut latencies = Vec::new();
    // A fresh token (its own jti) each time, so single-use tokens work too.
    for token in tokens.iter().cycle() {
        if Instant::now() >= end {
            break;
        }
        let started = Instant::now();
        let stream = connect(None, envelope, None).await?;
        let (ws, _) = upgrade(stream, envelope, false, token).await?;
        latencies.push(started.elapsed());
        close(ws).await;
        tokio::time::sleep(every).await;
    }
    Ok(Sample::new(latencies))
}

/// Opens `count` plain sessions (64 at a time) and keeps them.
pub async fn hold_many(
    envelope: SocketAddr,
    token: String,
    count: usize,
) -> anyhow::Result<Vec<Ws>> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let wave = (count - held.len()).min(64);
        let opens = (0..wave).map(|_| async {
            let stream = connect(None, envelope, None).await?;
            Ok::<_, anyhow::Error>(upgrade(stream, envelope, false, &token).await?.0)
        });
        for ws in join_all(opens).await {
            held.push(ws?);
        }
    }
    Ok(held)
}

/// Sessions arriving on a schedule (offset from the start, source address,
/// session length), each on its own task; returns every grant latency
/// (upgrade → 101).
pub async fn arrivals(
    envelope: SocketAddr,
    tls: TlsConnector,
    schedule: Vec<(Duration, IpAddr, Duration)>,
    token: String,
) -> anyhow::Result<Sample> {
    let start = tokio::time::Instant::now();
    let sessions = schedule.into_iter().map(|(at, source, hold)| {
        let (tls, token) = (tls.clone(), token.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let stream = connect(Some(source), envelope, Some(&tls)).await?;
            let (ws, granted) = upgrade(stream, envelope, true, &token).await?;
            tokio::time::sleep(hold).await;
            close(ws).await;
            Ok::<_, anyhow::Error>(granted)
        })
    });
    let mut grants = Vec::new();
    for result in join_all(sessions).await {
        grants.push(result??);
    }
    Ok(Sample::new(grants))
}

/// Opens one session from each source and returns them held.
pub async fn hold_from(
    envelope: SocketAddr,
    tls: TlsConnector,
    sources: Vec<IpAddr>,
    token: String,
) -> anyhow::Result<Vec<Ws>> {
    let opens = sources.into_iter().map(|source| {
        let (tls, token) = (tls.clone(), token.clone());
        async move {
            let stream = connect(Some(source), envelope, Some(&tls)).await?;
            Ok::<_, anyhow::Error>(upgrade(stream, envelope, true, &token).await?.0)
        }
    });
    join_all(opens).await.into_iter().collect()
}

/// Polls (every 1 ms) from every source until the service refuses it, within
/// `within` for all; returns when the last did.
pub async fn wait_all_refused(
    service: SocketAddr,
    sources: &[IpAddr],
    within: Duration,
) -> anyhow::Result<Instant> {
    let wait = Wait::new(within, "every source refused").every(Duration::from_millis(1));
    for &source in sources {
        while connect(Some(source), service, None).await.is_ok() {
            wait.pause_async()
                .await
                .with_context(|| format!("{source} still granted"))?;
        }
    }
    Ok(Instant::now())
}
