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
use crate::config::{Config, FirewallKind};
use crate::firewall::ipset::NewError;
use crate::firewall::{
    Firewall, IpsetFirewall, IptablesConfig, IptablesFirewall, JournalFirewall, NoopFirewall,
};
use crate::grants::Grants;
use crate::metrics::Metrics;
use crate::server::{self, Limits};

/// How long sessions get to send their Close frames at shutdown.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);

pub async fn build_firewall(config: &Config) -> anyhow::Result<Arc<dyn Firewall>> {
    Ok(match config.firewall {
        FirewallKind::None => Arc::new(NoopFirewall),
        FirewallKind::Record => Arc::new(JournalFirewall::new(
            config
                .firewall_journal
                .clone()
                .context("--firewall-journal")?,
            config.firewall_journal_fail_grants,
        )),
        FirewallKind::Iptables => {
            let probe = if config.ipset_unavailable {
                Err(NewError::NoIpset(
                    std::io::Error::other("--ipset-unavailable").into(),
                ))
            } else {
                if let Some(spec) = &config.fault_netlink {
                    crate::firewall::ipset::IpsetSocket::inject_fault(spec)
                        .map_err(anyhow::Error::msg)?;
                }
                IpsetFirewall::new(iptables_config(config), config.kernel_margin).await
            };
            match probe {
                Ok(firewall) => Arc::new(firewall),
                Err(NewError::Firewall(e)) => {
                    return Err(anyhow::Error::new(e).context("--firewall iptables"))
                }
                Err(NewError::NoIpset(e)) => {
                    tracing::warn!(
                        error = %e,
                        "the kernel offers no ipset: grants fall back to one iptables rule each \
                         (iptables-restore per change, no kernel timeouts)"
                    );
                    Arc::new(
                        IptablesFirewall::new(iptables_config(config))
                            .await
                            .context("--firewall iptables")?,
                    )
                }
            }
        }
        FirewallKind::IptablesRestore => Arc::new(
            IptablesFirewall::new(iptables_config(config))
                .await
                .context("--firewall iptables-restore")?,
        ),
    })
}

/// Runs the daemon until a termination signal; returns after a clean shutdown.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    // The admin socket's lock comes first: a second envelope must stop before it
    // touches the firewall the first one owns.
    let admin_socket = AdminSocket::bind(&config.admin_socket, config.admin_group.as_deref())?;
    let firewall = build_firewall(&config).await?;
    tracing::info!(backend = %firewall.backend(), device = %config.device, "firewall backend");
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

fn iptables_config(config: &Config) -> IptablesConfig {
    IptablesConfig {
        device: config.device.clone(),
        service_ports: config.listen.iter().map(SocketAddr::port).collect(),
        proxy_ports: config.proxy_ports.clone(),
        bin_dir: config.iptables_dir.clone(),
        command_timeout: config.firewall_timeout,
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
