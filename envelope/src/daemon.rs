//! Start-up in a fixed order (firewall guard before the port opens), serving, and
//! the ordered shutdown on SIGTERM/SIGINT: stop accepting, close every session
//! (Close 1001), revoke every grant, remove the firewall guard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::filters::TxGate;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Access};
use crate::admin::{self, AdminSocket, AdminState};
use crate::config::Config;
use crate::grants::Grants;
use crate::metrics::Metrics;
use crate::server::{self, Limits};

/// How long sessions get to send their Close frames at shutdown.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Runs the daemon until a termination signal; returns after a clean shutdown.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    // The admin socket's lock comes first: a second envelope must stop before it
    // touches the firewall the first one owns.
    let admin_socket = AdminSocket::bind(&config.admin_socket, config.admin_group.as_deref())?;
    let firewall = crate::firewall::build(&config.firewall).await?;
    tracing::info!(backend = %firewall.backend(), device = config.firewall.device(), "firewall backend");
    firewall.setup().await.context("firewall set-up failed")?;

    let metrics = Arc::new(Metrics::new());
    let (grants, owner) = Grants::spawn(firewall.clone(), config.max_clients, metrics.clone());
    let stop = CancellationToken::new();
    let started = match start_serving(&config, &grants, &metrics, &stop) {
        Ok(started) => started,
        Err(e) => {
            // Nothing may stay behind when start-up fails half way.
            let _ = grants.shutdown().await;
            return Err(e);
        }
    };

    match &config.tokens.verifier {
        Some(keys) => tokio::spawn(keys.clone().watch(metrics.clone(), stop.clone())),
        None => tokio::spawn(crate::keys::ignore_hangup(stop.clone())),
    };
    let admin_state = Arc::new(AdminState {
        keys: config.tokens.verifier.clone(),
        metrics: metrics.clone(),
        grants: grants.clone(),
        machine: config.machine.clone(),
        subject: config.tokens.subject.clone(),
        firewall: firewall.backend(),
        max_clients: config.max_clients,
        started: Instant::now(),
    });
    let admin = tokio::spawn(admin::serve(admin_socket, admin_state, stop.clone()));

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    let began = Instant::now();
    stop.cancel();
    let result = grants.shutdown().await;
    started.sessions.close();
    let _ = tokio::time::timeout(SESSION_CLOSE_GRACE, started.sessions.wait()).await;
    started.conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), started.conns.wait()).await;
    let _ = owner.await;
    let _ = admin.await;
    result.context("revoking grants at shutdown")?;
    tracing::info!(
        took_ms = began.elapsed().as_millis() as u64,
        "shutdown complete"
    );
    Ok(())
}

struct Started {
    sessions: TaskTracker,
    conns: TaskTracker,
}

fn start_serving(
    config: &Config,
    grants: &Grants,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> anyhow::Result<Started> {
    let tx_gate = match &config.tx_limit {
        Some(limit) => Some(
            TxGate::spawn(
                &limit.proc_path,
                &limit.device,
                limit.max_bits_per_sec,
                stop.clone().cancelled_owned(),
            )
            .context("--tx-device")?,
        ),
        None => None,
    };
    let sessions = TaskTracker::new();
    let conns = TaskTracker::new();
    let app = Arc::new(Access {
        tokens: config.tokens.clone(),
        timeout: config.timeout,
        max_hold: config.max_hold,
        grants: grants.clone(),
        metrics: metrics.clone(),
        tx_gate,
        tls: config.tls.is_some(),
        sessions: sessions.clone(),
    });
    let limits = Limits {
        connections: Arc::new(Semaphore::new(config.max_connections)),
        handshake_timeout: config.handshake_timeout,
    };
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    if acceptor.is_none() {
        tracing::warn!(
            "NO TLS: serving plain HTTP; access tokens travel in clear text (set --cert and --key)"
        );
    }
    let routes = access::routes(app);
    for listener in bind_all(&config.listen, "--listen-address")? {
        tokio::spawn(server::serve(
            listener,
            acceptor.clone(),
            limits.clone(),
            routes.clone(),
            stop.clone(),
            conns.clone(),
        ));
    }
    if let Some(addrs) = &config.metrics {
        let routes = crate::metrics::routes(metrics.clone());
        for listener in bind_all(addrs, "--metrics-address")? {
            let limits = Limits {
                connections: Arc::new(Semaphore::new(64)),
                handshake_timeout: config.handshake_timeout,
            };
            tokio::spawn(server::serve(
                listener,
                None,
                limits,
                routes.clone(),
                stop.clone(),
                conns.clone(),
            ));
        }
    }
    Ok(Started { sessions, conns })
}

fn bind_all(addrs: &[SocketAddr], flag: &str) -> anyhow::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|addr| {
            let listener =
                server::bind(*addr).with_context(|| format!("{flag}: cannot listen on {addr}"))?;
            let local = listener.local_addr().unwrap_or(*addr);
            tracing::info!(address = %local, "{} listening", flag.trim_start_matches("--"));
            Ok(listener)
        })
        .collect()
}

/// Held sessions each need a descriptor; lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `envelope --cleanup`: removes everything the envelope ever installs, whatever
/// the other flags say, and exits.
pub async fn cleanup(flags: crate::config::Flags) -> anyhow::Result<()> {
    // Rules first: a set that a rule references cannot be destroyed.
    crate::firewall::iptables::cleanup(&flags.iptables_dir, flags.firewall_timeout)
        .await
        .context("--cleanup")?;
    crate::firewall::ipset::cleanup(flags.firewall_timeout)
        .await
        .context("--cleanup")?;
    tracing::info!("removed every envelope chain, rule and set");
    Ok(())
}
