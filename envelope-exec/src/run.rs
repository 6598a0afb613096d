//! The whole run under one `--timeout`: ask Locate, open the first envelope that
//! accepts, run the command while holding it, and decide the exit code.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::cli::Flags;
use crate::command::{self, exit_code, SpawnError};
use crate::envelope;
use crate::locate::{self, LocateError};
use crate::net::Connector;

/// Everything that makes envelope-exec itself fail; the message is the user's line.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Locate(String),
    #[error("Locate refused the request for {service}: {error}")]
    LocateRefused { service: String, error: LocateError },
    #[error("Locate returned no targets for {0}")]
    NoTargets(String),
    #[error("no envelope accepted the connection: {}", .0.join("; "))]
    NoEnvelope(Vec<String>),
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        after: Duration,
        during: &'static str,
    },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("the envelope at {host} {how} before the command finished; the command was stopped")]
    SessionEnded { host: String, how: String },
    #[error("waiting for the command failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("stopped the command on {0}")]
    Signal(Signal),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Spawn(e) => e.exit_code(),
            Failure::Signal(signal) => 128u8.saturating_add(*signal as u8),
            _ => 1,
        }
    }
}

/// Runs `flags.command` behind the envelope; `Ok` carries the command's exit code.
pub async fn run(flags: Flags) -> Result<u8, Failure> {
    let deadline = Instant::now() + flags.timeout;
    let timed_out = |during| Failure::Timeout {
        after: flags.timeout,
        during,
    };
    let url = locate::request_url(&flags.locate_url, &flags.service).map_err(Failure::Usage)?;
    let connector = Connector::default();

    let answer = timeout_at(deadline, locate::nearest(&connector, &url))
        .await
        .map_err(|_| timed_out("asking Locate"))?
        .map_err(Failure::Locate)?;
    if let Some(error) = answer.error {
        return Err(Failure::LocateRefused {
            service: flags.service,
            error,
        });
    }
    let targets = answer.results.unwrap_or_default();
    if targets.is_empty() {
        return Err(Failure::NoTargets(flags.service));
    }

    let mut session = timeout_at(
        deadline,
        envelope::open_first(&connector, &targets, &flags.envelope_key),
    )
    .await
    .map_err(|_| timed_out("opening the envelope"))?
    .map_err(Failure::NoEnvelope)?;

    let env = [
        ("SERVICE_URL", session.url.as_str()),
        ("SERVICE_HOSTNAME", session.hostname.as_str()),
    ];
    // Caught from before the command starts, so none is lost to the default action.
    let mut signals = Signals::new();
    let mut command = match command::spawn(&flags.command, &env) {
        Ok(command) => command,
        Err(e) => {
            session.close().await;
            return Err(e.into());
        }
    };

    enum Outcome {
        Exited(std::io::Result<std::process::ExitStatus>),
        SessionEnded(String),
        TimedOut,
        Signal(Signal),
    }
    let outcome = tokio::select! {
        status = command.wait() => Outcome::Exited(status),
        how = session.ended() => Outcome::SessionEnded(how),
        () = sleep_until(deadline) => Outcome::TimedOut,
        signal = signals.recv() => Outcome::Signal(signal),
    };
    let grace = flags.grace_period;
    match outcome {
        Outcome::Exited(status) => {
            session.close().await;
            Ok(exit_code(status.map_err(Failure::Wait)?))
        }
        Outcome::SessionEnded(how) => {
            let _ = command.stop(Signal::SIGTERM, grace).await;
            Err(Failure::SessionEnded {
                host: session.hostname.clone(),
                how,
            })
        }
        Outcome::TimedOut => {
            let _ = command.stop(Signal::SIGTERM, grace).await;
            session.close().await;
            Err(timed_out("running the command"))
        }
        Outcome::Signal(signal) => {
            // The command runs in its own process group, so a terminal's Ctrl-C
            // reaches it only through us.
            let _ = command.stop(signal, grace).await;
            session.close().await;
            Err(Failure::Signal(signal))
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, to be passed on to the command.
struct Signals(Vec<(Signal, Option<tokio::signal::unix::Signal>)>);

impl Signals {
    fn new() -> Signals {
        Signals(
            [
                (Signal::SIGINT, SignalKind::interrupt()),
                (Signal::SIGTERM, SignalKind::terminate()),
                (Signal::SIGHUP, SignalKind::hangup()),
            ]
            .into_iter()
            .map(|(name, kind)| (name, signal(kind).ok()))
            .collect(),
        )
    }

    async fn recv(&mut self) -> Signal {
        let waits = self.0.iter_mut().map(|(name, stream)| {
            let name = *name;
            Box::pin(async move {
                if let Some(stream) = stream {
                    if stream.recv().await.is_some() {
                        return name;
                    }
                }
                std::future::pending().await
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}
