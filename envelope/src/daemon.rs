//! The daemon's life in two steps, so tests can bind port 0 in-process and pass
//! their own shutdown: [`bind`] (SIGHUP handler, admin socket lock, firewall
//! guard, then the ports) and [`run`] (serve until the shutdown future
//! resolves, then stop accepting, close every session with 1001, revoke every
//! grant, remove the guard, and report any task that panicked). `main` passes
//! [`termination_signal`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::filters::TxGate;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{self, Access};
use crate::admin::{self, AdminSocket, AdminState};
use crate::config::Config;
use crate::firewall::{Firewall, FirewallError};
use crate::grants::Grants;
use crate::metrics::Metrics;
use crate::server::{self, Limits};

/// How long sessions get to send their Close frames at shutdown.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A daemon that holds everything it needs but serves nothing yet: the SIGHUP
/// handler, the admin socket (and its lock), the firewall guard in place, and
/// the bound ports.
#[derive(Debug)]
pub struct Bound {
    config: Config,
    hangup: Option<Signal>,
    admin_socket: AdminSocket,
    firewall: Arc<dyn Firewall>,
    access: Vec<TcpListener>,
    metrics: Vec<TcpListener>,
}

impl Bound {
    /// Where the access endpoint listens (port 0 resolved).
    pub fn access_addrs(&self) -> Vec<SocketAddr> {
        local_addrs(&self.access)
    }

    /// Where `/metrics` listens; empty with `--metrics-address off`.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        local_addrs(&self.metrics)
    }

    pub fn admin_socket(&self) -> &std::path::Path {
        &self.config.admin_socket
    }
}

/// Installs the SIGHUP handler, takes the admin socket's lock, sets the
/// firewall guard up, then binds the ports, in that order: SIGHUP's default
/// action would end the daemon, so a service manager's reload during start-up
/// must find the handler there from the first log line on; a second envelope
/// stops before it touches the firewall the first one owns; and no port opens
/// before the guard is in place. A failure half way removes the guard again.
pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: reload keys over the admin API");
            None
        }
    };
    tracing::info!(
        version = common::build_info::VERSION,
        revision = common::build_info::REVISION,
        rustc = common::build_info::RUSTC,
        "envelope starting"
    );
    raise_fd_limit();
    let admin_socket = AdminSocket::bind(&config.admin_socket, config.admin_group.as_deref())?;
    let firewall = crate::firewall::build(&config.firewall).await?;
    tracing::info!(backend = %firewall.backend(), device = config.firewall.device(), "firewall backend");
    firewall.setup().await.context("firewall set-up failed")?;
    let listeners = bind_all(&config.listen, "--listen-address").and_then(|access| {
        let metrics = match &config.metrics {
            Some(addrs) => bind_all(addrs, "--metrics-address")?,
            None => Vec::new(),
        };
        Ok((access, metrics))
    });
    let (access, metrics) = match listeners {
        Ok(bound) => bound,
        Err(e) => {
            if let Err(teardown) = firewall.teardown().await {
                tracing::error!(error = %teardown, "removing the firewall guard after a failed start");
            }
            return Err(e);
        }
    };
    Ok(Bound {
        config: config.clone(),
        hangup,
        admin_socket,
        firewall,
        access,
        metrics,
    })
}

/// Serves until `shutdown` resolves, then shuts down in order: stop accepting,
/// revoke every grant (sessions get Close 1001), wait for the sessions and
/// connections (bounded), tear the guard down, and `finalize` the tasks.
pub async fn run(bound: Bound, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Bound {
        config,
        hangup,
        admin_socket,
        firewall,
        access,
        metrics: metrics_listeners,
    } = bound;
    let listening = local_addrs(&access);
    let metrics_listening = local_addrs(&metrics_listeners);
    let metrics = Arc::new(Metrics::new());
    let (grants, owner) = Grants::spawn(firewall.clone(), config.max_clients, metrics.clone());
    let stop = CancellationToken::new();
    let serving = match serve(&config, access, metrics_listeners, &grants, &metrics, &stop) {
        Ok(serving) => serving,
        Err(e) => {
            // Nothing may stay behind when start-up fails half way.
            let _ = grants.shutdown().await;
            return Err(e);
        }
    };
    let keys = match &config.tokens.verifier {
        Some(keys) => tokio::spawn(keys.clone().watch(hangup, metrics.clone(), stop.clone())),
        None => tokio::spawn(crate::keys::ignore_hangup(hangup, stop.clone())),
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
        listening,
        metrics_listening,
    });
    let admin = tokio::spawn(admin::serve(admin_socket, admin_state, stop.clone()));

    shutdown.await;
    let began = Instant::now();
    stop.cancel();
    let revoked = grants.shutdown().await;
    serving.sessions.close();
    let _ = tokio::time::timeout(SESSION_CLOSE_GRACE, serving.sessions.wait()).await;
    serving.conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), serving.conns.wait()).await;
    finalize(
        revoked,
        owner,
        [("admin API", admin), ("key watcher", keys)],
    )
    .await?;
    tracing::info!(
        took_ms = began.elapsed().as_millis() as u64,
        "shutdown complete"
    );
    Ok(())
}

/// The end of a shutdown: the owner's revoke result, then every task joined. A
/// task that panicked is an error here rather than a silent exit 0, and a
/// panicked owner is reported even when its revoke answer got lost with it.
async fn finalize(
    revoked: Result<(), FirewallError>,
    owner: JoinHandle<()>,
    others: [(&'static str, JoinHandle<()>); 2],
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    if let Err(e) = owner.await {
        failures.push(format!("the grant owner {}", joined(e)));
    }
    for (name, task) in others {
        if let Err(e) = task.await {
            failures.push(format!("the {name} {}", joined(e)));
        }
    }
    if let Err(e) = revoked {
        return Err(anyhow::Error::new(e).context("revoking grants at shutdown"));
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(())
}

fn joined(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("panicked: {message}")
        }
        Err(_) => "was cancelled".into(),
    }
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when
/// this is called, so a signal that comes during start-up is not lost.
pub fn termination_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

struct Serving {
    sessions: TaskTracker,
    conns: TaskTracker,
}

fn serve(
    config: &Config,
    access: Vec<TcpListener>,
    metrics_listeners: Vec<TcpListener>,
    grants: &Grants,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> anyhow::Result<Serving> {
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
    for listener in access {
        tokio::spawn(server::serve(
            listener,
            acceptor.clone(),
            limits.clone(),
            routes.clone(),
            stop.clone(),
            conns.clone(),
        ));
    }
    let routes = crate::metrics::routes(metrics.clone());
    for listener in metrics_listeners {
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
    Ok(Serving { sessions, conns })
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

fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
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
    let (iptables_dir, timeout) = flags.cleanup_settings()?;
    // Rules first: a set that a rule references cannot be destroyed.
    crate::firewall::iptables::cleanup(&iptables_dir, timeout)
        .await
        .context("--cleanup")?;
    crate::firewall::ipset::cleanup(timeout)
        .await
        .context("--cleanup")?;
    tracing::info!("removed every envelope chain, rule and set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> JoinHandle<()> {
        tokio::spawn(async {})
    }

    #[tokio::test]
    async fn finalize_reports_a_panicked_owner() {
        let owner = tokio::spawn(async { panic!("table corrupt") });
        let err = finalize(
            Ok(()),
            owner,
            [("admin API", quiet()), ("key watcher", quiet())],
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "the grant owner panicked: table corrupt");
    }

    #[tokio::test]
    async fn finalize_puts_a_failed_revoke_first_and_passes_a_clean_end() {
        let failed = Err(FirewallError::Failed {
            operation: "revoke at shutdown".into(),
            message: "1 subnet rules could not be removed".into(),
        });
        let err = finalize(
            failed,
            quiet(),
            [("admin API", quiet()), ("key watcher", quiet())],
        )
        .await
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "revoking grants at shutdown: revoke at shutdown failed: 1 subnet rules could not be removed"
        );
        let clean = finalize(
            Ok(()),
            quiet(),
            [("admin API", quiet()), ("key watcher", quiet())],
        );
        assert!(clean.await.is_ok());
    }
}
