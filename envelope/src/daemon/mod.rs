//! The daemon's life in two steps, so tests can bind port 0 in-process and pass
//! their own shutdown: [`bind`] (SIGHUP handler, the files the configuration
//! names, admin socket lock, firewall guard, then the ports) and [`run`]
//! (serve until told to stop or a supervised task fails, then stop accepting,
//! close every session with 1001, revoke every grant, remove the guard, and
//! report any task that failed or panicked). With `--drain-timeout`, a SIGTERM
//! first drains (SPEC §9): no new clients, held sessions keep their grants
//! until the last one ends or the timeout passes; a second SIGTERM or a SIGINT
//! stops at once. `main` passes [`termination_signals`]; tests pass
//! [`stop_when`].
//!
//! Inside: `load.rs` reads the key and certificate files, `supervise.rs`
//! watches the long-running tasks and joins them at the end, `cleanup.rs` is
//! `envelope --cleanup`.

mod cleanup;
mod load;
mod supervise;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::filters::TxGate;
use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::cleanup::cleanup;
use self::load::Loaded;
use self::supervise::{finalize, Supervisor};
use crate::access::{self, Access, Tokens};
use crate::admin::{self, AdminSocket, AdminState};
use crate::config::Config;
use crate::events::{Event, Events};
use crate::firewall::Firewall;
use crate::grants::{EndReason, Grants};
use crate::lifecycle::Lifecycle;
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::server::{self, Bounds, Refusals};

/// How long sessions get to send their Close frames at shutdown.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long open connections get to finish at shutdown.
const CONNECTION_GRACE: Duration = Duration::from_secs(1);
/// The metrics listener's connection caps, global and per source subnet.
const METRICS_CONNECTIONS: usize = 128;
const METRICS_PER_SUBNET: usize = 16;
/// The admin socket's connection cap and request-head deadline (it has no TLS).
const ADMIN_CONNECTIONS: usize = 64;
const ADMIN_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon that holds everything it needs but serves nothing yet: the SIGHUP
/// handler, its key and certificate files read, the admin socket (and its
/// lock), the firewall guard in place, and the bound ports.
#[derive(Debug)]
pub struct Bound {
    config: Config,
    loaded: Loaded,
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

    /// The access listeners themselves, for tests that make one fail.
    #[doc(hidden)]
    pub fn access_listeners(&self) -> &[TcpListener] {
        &self.access
    }
}

/// Installs the SIGHUP handler, reads the key and certificate files, takes the
/// admin socket's lock, sets the firewall guard up, then binds the ports, in
/// that order: SIGHUP's default action would end the daemon, so a service
/// manager's reload during start-up must find the handler there from the first
/// log line on; a bad file refuses start-up before anything is touched; a
/// second envelope stops before it touches the firewall the first one owns;
/// and no port opens before the guard is in place. A failure half way removes
/// the guard again.
pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "no SIGHUP handler: reload keys over the admin API");
            None
        }
    };
    let loaded = Loaded::from_config(config)?;
    raise_fd_limit();
    let admin_socket = AdminSocket::bind(&config.admin_socket, config.admin_group.as_deref())?;
    // Only now: a refused file or a second envelope must stay the one line
    // that names the flag, for whoever reads a failed unit's status.
    tracing::info!(
        version = common::build_info::VERSION,
        revision = common::build_info::REVISION,
        rustc = common::build_info::RUSTC,
        "envelope starting"
    );
    let firewall = config.firewall.build().await?;
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
                tracing::error!(error = %chain(&teardown), "removing the firewall guard after a failed start");
            }
            return Err(e);
        }
    };
    Ok(Bound {
        config: config.clone(),
        loaded,
        hangup,
        admin_socket,
        firewall,
        access,
        metrics,
    })
}

/// A request to stop, as the process receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (or a test's stop): drains first when `--drain-timeout` is set.
    Terminate,
    /// SIGINT: stops at once.
    Interrupt,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }
}

/// One [`StopSignal::Terminate`] when `stop` resolves: how tests and embedders
/// stop a daemon they run in-process.
pub fn stop_when(
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = StopSignal> + Send + Unpin {
    Box::pin(futures_util::stream::once(async move {
        stop.await;
        StopSignal::Terminate
    }))
}

/// Serves until `signals` says stop or a supervised task (a listener, the
/// reload watcher) fails, then shuts down in order: stop accepting, revoke
/// every grant (sessions get Close 1001), wait for the sessions and
/// connections (bounded), tear the guard down, and join every task. With a
/// drain timeout, the first [`StopSignal::Terminate`] drains first. A failed
/// task makes this an error (so the process exits non-zero) after the same
/// ordered shutdown.
pub async fn run(
    bound: Bound,
    mut signals: impl Stream<Item = StopSignal> + Send + Unpin,
) -> anyhow::Result<()> {
    let Bound {
        config,
        loaded,
        hangup,
        admin_socket,
        firewall,
        access,
        metrics: metrics_listeners,
    } = bound;
    let listening = local_addrs(&access);
    let metrics_listening = local_addrs(&metrics_listeners);
    let metrics = Arc::new(Metrics::new());
    let events = Events::new(config.events_buffer, metrics.clone());
    let lifecycle = Lifecycle::new(metrics.clone());
    let (grants, owner) = Grants::spawn(
        firewall.clone(),
        config.max_clients,
        metrics.clone(),
        lifecycle.clone(),
        events.clone(),
    );
    let stop = CancellationToken::new();
    let mut tasks = Supervisor::default();
    let serving = match serve(
        &config,
        &loaded,
        access,
        metrics_listeners,
        &grants,
        &metrics,
        &lifecycle,
        &events,
        &stop,
        &mut tasks,
    ) {
        Ok(serving) => serving,
        Err(e) => {
            // Nothing may stay behind when start-up fails half way.
            stop.cancel();
            let _ = grants.shutdown(EndReason::Shutdown).await;
            return Err(e);
        }
    };
    let reloader = Reloader::new(
        loaded.keys.clone(),
        loaded.certs.clone(),
        metrics.clone(),
        events.clone(),
    );
    reloader.publish();
    let watch = reloader.clone().watch(hangup, stop.clone());
    tasks.spawn("reload watcher", async move {
        watch.await;
        Ok(())
    });
    let trimming = crate::heap::return_freed_memory(stop.clone());
    tasks.spawn("heap trimmer", async move {
        trimming.await;
        Ok(())
    });
    let admin_state = Arc::new(AdminState {
        reloader,
        lifecycle: lifecycle.clone(),
        events: events.clone(),
        stop: stop.clone(),
        grants: grants.clone(),
        machine: config.machine.clone(),
        subject: config.tokens.subject.clone(),
        firewall: firewall.backend(),
        max_clients: config.max_clients,
        started: Instant::now(),
        listening,
        metrics_listening,
    });
    let AdminSocket {
        listener,
        access: peers,
        file: socket_file,
    } = admin_socket;
    tasks.spawn(
        format!("admin socket {}", socket_file.path.display()),
        listen(
            listener,
            None,
            Bounds::new(
                ADMIN_CONNECTIONS,
                ADMIN_HEAD_TIMEOUT,
                Arc::new(Refusals::new("admin", metrics.connections_refused.clone())),
            ),
            admin::routes(admin_state, peers),
            stop.clone(),
            serving.conns.clone(),
        ),
    );

    let (cause, why) = serve_until_stopped(
        &config,
        &lifecycle,
        &grants,
        &events,
        &mut signals,
        &mut tasks,
    )
    .await;
    let began = Instant::now();
    stop.cancel();
    let revoked = grants.shutdown(why).await;
    serving.sessions.close();
    let _ = tokio::time::timeout(SESSION_CLOSE_GRACE, serving.sessions.wait()).await;
    serving.conns.close();
    let _ = tokio::time::timeout(CONNECTION_GRACE, serving.conns.wait()).await;
    socket_file.remove();
    finalize(revoked, owner, cause, tasks).await?;
    tracing::info!(
        took_ms = began.elapsed().as_millis() as u64,
        "shutdown complete"
    );
    Ok(())
}

/// Every SIGTERM and SIGINT the process receives. The handlers are installed
/// when this is called, so a signal that comes during start-up is not lost.
pub fn termination_signals() -> anyhow::Result<impl Stream<Item = StopSignal> + Send + Unpin> {
    let each = |kind: SignalKind, what: StopSignal| -> anyhow::Result<_> {
        let handler = signal(kind).with_context(|| format!("{} handler", what.name()))?;
        Ok(futures_util::stream::unfold(
            handler,
            move |mut handler| async move { handler.recv().await.map(|()| (what, handler)) },
        ))
    };
    let terminate = each(SignalKind::terminate(), StopSignal::Terminate)?;
    let interrupt = each(SignalKind::interrupt(), StopSignal::Interrupt)?;
    Ok(Box::pin(futures_util::stream::select(terminate, interrupt)))
}

/// Waits for the word to stop: a signal (after a drain, when one is set and
/// the signal allows it) or a failed task, whose error is returned, with what
/// the sessions still held are told.
async fn serve_until_stopped(
    config: &Config,
    lifecycle: &Lifecycle,
    grants: &Grants,
    events: &Events,
    signals: &mut (impl Stream<Item = StopSignal> + Unpin),
    tasks: &mut Supervisor,
) -> (Option<anyhow::Error>, EndReason) {
    let mut signals_open = true;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let drain_ended = |how| {
        let held = grants.held();
        events.emit(Event::DrainEnded { how, held });
    };
    loop {
        tokio::select! {
            signal = signals.next(), if signals_open => match signal {
                Some(StopSignal::Terminate) if drain_until.is_none() && !config.drain_timeout.is_zero() => {
                    drain_until = Some(lifecycle.stop_within(config.drain_timeout));
                    tracing::info!(
                        drain_timeout_s = config.drain_timeout.as_secs_f64(),
                        "SIGTERM: draining; new clients get 503, held sessions keep their grants"
                    );
                    events.emit(Event::DrainStarted {
                        by: "sigterm",
                        timeout_s: Some(config.drain_timeout.as_secs()),
                        held: grants.held(),
                    });
                }
                Some(signal) => {
                    tracing::info!("{}: shutting down", signal.name());
                    if drain_until.is_some() {
                        drain_ended("signal");
                    }
                    return (None, EndReason::Shutdown);
                }
                // No more signals can come; serve until something else says stop.
                None => signals_open = false,
            },
            failure = tasks.first_failure() => {
                tracing::error!(error = %format!("{failure:#}"), "shutting down after a failure");
                return (Some(failure), EndReason::Shutdown);
            }
            () = grants.idle(), if drain_until.is_some() => {
                tracing::info!("drained: the last session ended; shutting down");
                drain_ended("drained");
                return (None, EndReason::Shutdown);
            }
            () = sleep_until_opt(drain_until) => {
                tracing::info!("drain timeout: closing the sessions left; shutting down");
                drain_ended("timeout");
                return (None, EndReason::DrainTimeout);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Serving {
    sessions: TaskTracker,
    conns: TaskTracker,
}

/// Starts the access and metrics listeners under `tasks`.
#[allow(clippy::too_many_arguments)]
fn serve(
    config: &Config,
    loaded: &Loaded,
    access: Vec<TcpListener>,
    metrics_listeners: Vec<TcpListener>,
    grants: &Grants,
    metrics: &Arc<Metrics>,
    lifecycle: &Lifecycle,
    events: &Events,
    stop: &CancellationToken,
    tasks: &mut Supervisor,
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
        tokens: Tokens {
            required: config.tokens.required,
            keys: loaded.keys.clone(),
            subject: config.tokens.subject.clone(),
            replay: loaded.replay.clone(),
        },
        timeout: config.timeout,
        max_hold: config.max_hold,
        grants: grants.clone(),
        metrics: metrics.clone(),
        tx_gate,
        tls: loaded.tls.is_some(),
        sessions: sessions.clone(),
        events: events.clone(),
    });
    if loaded.tls.is_none() {
        tracing::warn!(
            "NO TLS: serving plain HTTP; access tokens travel in clear text (set --cert and --key)"
        );
    }
    let bounds = Bounds::new(
        config.max_connections,
        config.handshake_timeout,
        Arc::new(Refusals::new("access", metrics.connections_refused.clone())),
    )
    .per_subnet(config.max_connections_per_subnet)
    .lifetime(config.connection_lifetime);
    let routes = access::routes(app);
    for listener in access {
        let name = format!("access listener on {}", local_name(&listener));
        tasks.spawn(
            name,
            listen(
                listener,
                loaded.tls.clone(),
                bounds.clone(),
                routes.clone(),
                stop.clone(),
                conns.clone(),
            ),
        );
    }
    let routes = crate::exporter::routes(metrics.clone(), lifecycle.clone());
    let metrics_bounds = Bounds::new(
        METRICS_CONNECTIONS,
        config.handshake_timeout,
        Arc::new(Refusals::new(
            "metrics",
            metrics.connections_refused.clone(),
        )),
    )
    .per_subnet(METRICS_PER_SUBNET.min(config.max_connections_per_subnet))
    .lifetime(config.connection_lifetime);
    for listener in metrics_listeners {
        let name = format!("metrics listener on {}", local_name(&listener));
        tasks.spawn(
            name,
            listen(
                listener,
                None,
                metrics_bounds.clone(),
                routes.clone(),
                stop.clone(),
                conns.clone(),
            ),
        );
    }
    Ok(Serving { sessions, conns })
}

/// [`server::serve`] as a supervised task: an accept failure becomes its error.
async fn listen<L, F>(
    listener: L,
    tls: Option<tokio_rustls::TlsAcceptor>,
    bounds: Bounds,
    routes: F,
    stop: CancellationToken,
    conns: TaskTracker,
) -> anyhow::Result<()>
where
    L: server::Listener,
    F: warp::Filter<Extract = (crate::http::Reply,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    server::serve(listener, tls, bounds, routes, stop, conns)
        .await
        .context("accept")
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

fn local_name(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |addr| addr.to_string())
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use clap::Parser as _;
    use nix::sys::socket::{shutdown, Shutdown};

    use super::*;
    use crate::config::Flags;

    /// A daemon on port 0 with the `record` firewall, its files in `dir`.
    fn config(dir: &std::path::Path) -> Config {
        Flags::parse_from([
            "envelope".to_owned(),
            "--token-required=false".into(),
            "--listen-address=127.0.0.1:0".into(),
            "--metrics-address=off".into(),
            format!("--admin-socket={}", dir.join("admin.sock").display()),
            "--firewall=record".into(),
            format!("--firewall-journal={}", dir.join("journal").display()),
        ])
        .validate()
        .unwrap()
    }

    #[tokio::test]
    async fn a_failed_accept_loop_shuts_the_daemon_down_in_order_and_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path())).await.unwrap();
        // Shutting a listening socket down makes every accept fail with EINVAL:
        // a listener that cannot get better by retrying.
        shutdown(bound.access_listeners()[0].as_raw_fd(), Shutdown::Both).unwrap();
        let ran = tokio::time::timeout(
            Duration::from_secs(10),
            run(bound, stop_when(std::future::pending())),
        )
        .await
        .expect("the daemon stops by itself");
        let err = format!("{:#}", ran.unwrap_err());
        assert!(
            err.starts_with("the access listener on 127.0.0.1:")
                && err.contains("failed: accept: "),
            "{err}"
        );
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
        assert_eq!(journal, "setup\nteardown\n", "the guard was removed");
        assert!(
            !dir.path().join("admin.sock").exists(),
            "the admin socket was removed"
        );
    }

    #[tokio::test]
    async fn a_clean_stop_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path())).await.unwrap();
        run(bound, stop_when(async {})).await.unwrap();
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
        assert_eq!(journal, "setup\nteardown\n");
    }
}
