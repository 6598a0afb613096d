//! Whether the envelope takes new clients (SPEC §9): serving, draining at an
//! operator's word (`envelopectl drain`, until `resume`), or stopping (a
//! SIGTERM with `--drain-timeout`: held sessions keep their grants until they
//! end or the deadline comes). One value shared by the grant owner (which
//! refuses new grants while draining), `/health`, the admin status and the
//! lame-duck gauges, so they can never disagree. Also whether a firewall change
//! is failing and backing off, which `/health` reports too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::metrics::Metrics;

/// Whether new clients are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serving,
    /// An operator's drain: no new clients until resumed.
    Draining {
        since: SystemTime,
    },
    /// A SIGTERM's drain: no new clients, and the envelope stops when the
    /// last session ends or at `deadline`.
    Stopping {
        since: SystemTime,
        deadline: Instant,
    },
}

impl Mode {
    pub fn is_draining(&self) -> bool {
        !matches!(self, Mode::Serving)
    }

    /// `serving`, `draining` or `stopping`, as the admin status shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Serving => "serving",
            Mode::Draining { .. } => "draining",
            Mode::Stopping { .. } => "stopping",
        }
    }
}

/// Why a resume was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the envelope is stopping (SIGTERM); it cannot be resumed")]
pub struct Stopping;

#[derive(Debug)]
struct State {
    mode: Mode,
    /// What a failing firewall change is, while it is failing.
    firewall_failing: Option<String>,
}

/// The shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: Arc<Mutex<State>>,
    metrics: Arc<Metrics>,
}

impl Lifecycle {
    pub fn new(metrics: Arc<Metrics>) -> Lifecycle {
        let lifecycle = Lifecycle {
            state: Arc::new(Mutex::new(State {
                mode: Mode::Serving,
                firewall_failing: None,
            })),
            metrics,
        };
        lifecycle.publish(Mode::Serving);
        lifecycle
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mode(&self) -> Mode {
        self.state().mode
    }

    pub fn is_draining(&self) -> bool {
        self.mode().is_draining()
    }

    /// An operator's drain; no change while already draining or stopping.
    /// Whether it changed anything.
    pub fn drain(&self) -> bool {
        let mut state = self.state();
        if state.mode != Mode::Serving {
            return false;
        }
        state.mode = Mode::Draining {
            since: SystemTime::now(),
        };
        self.publish(state.mode);
        true
    }

    /// Leaves an operator's drain; a stop cannot be resumed. Whether it
    /// changed anything.
    pub fn resume(&self) -> Result<bool, Stopping> {
        let mut state = self.state();
        match state.mode {
            Mode::Stopping { .. } => Err(Stopping),
            Mode::Serving => Ok(false),
            Mode::Draining { .. } => {
                state.mode = Mode::Serving;
                self.publish(state.mode);
                Ok(true)
            }
        }
    }

    /// A SIGTERM with a drain timeout: no new clients, stop by `within`.
    pub fn stop_within(&self, within: Duration) -> Instant {
        let mut state = self.state();
        let deadline = Instant::now() + within;
        let since = match state.mode {
            Mode::Draining { since } => since,
            _ => SystemTime::now(),
        };
        state.mode = Mode::Stopping { since, deadline };
        self.publish(state.mode);
        deadline
    }

    /// The grant owner says whether a firewall change is failing (and what).
    pub fn set_firewall_failing(&self, failing: Option<String>) {
        self.state().firewall_failing = failing;
    }

    /// `/health`: `None` while all is well, else the one-line reason.
    pub fn unhealthy(&self) -> Option<String> {
        let state = self.state();
        match (&state.mode, &state.firewall_failing) {
            (Mode::Serving, None) => None,
            (Mode::Serving, Some(what)) => Some(format!("firewall change failing: {what}")),
            (mode, _) => Some(mode.name().to_owned()),
        }
    }

    /// Seconds a refused client should wait before it asks this envelope
    /// again: until the stop for a stopping one, a minute for an operator's
    /// drain.
    pub fn retry_after(&self) -> Duration {
        match self.mode() {
            Mode::Stopping { deadline, .. } => deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1)),
            _ => Duration::from_secs(60),
        }
    }

    fn publish(&self, mode: Mode) {
        let lame = i64::from(mode.is_draining());
        self.metrics.lame_duck.set(lame);
        self.metrics.lame_duck_experiment.set(lame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle() -> (Lifecycle, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Lifecycle::new(metrics.clone()), metrics)
    }

    #[test]
    fn an_operator_drain_is_resumed_and_the_gauges_follow() {
        let (lifecycle, metrics) = lifecycle();
        assert!(metrics.encode().contains("\nlame_duck_experiment 0\n"));
        assert!(lifecycle.drain());
        assert!(!lifecycle.drain(), "already draining");
        assert_eq!(lifecycle.unhealthy().as_deref(), Some("draining"));
        let text = metrics.encode();
        assert!(
            text.contains("\nenvelope_lame_duck 1\n")
                && text.contains("\nlame_duck_experiment 1\n"),
            "{text}"
        );
        assert_eq!(lifecycle.resume(), Ok(true));
        assert_eq!(lifecycle.unhealthy(), None);
        assert!(metrics.encode().contains("\nenvelope_lame_duck 0\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cannot_be_resumed_and_tells_clients_when_to_come_back() {
        let (lifecycle, _) = lifecycle();
        lifecycle.drain();
        lifecycle.stop_within(Duration::from_secs(90));
        assert_eq!(lifecycle.mode().name(), "stopping");
        assert_eq!(lifecycle.resume(), Err(Stopping));
        assert_eq!(lifecycle.retry_after(), Duration::from_secs(90));
        assert_eq!(lifecycle.unhealthy().as_deref(), Some("stopping"));
    }

    #[test]
    fn a_failing_firewall_change_makes_a_serving_envelope_unhealthy() {
        let (lifecycle, _) = lifecycle();
        lifecycle.set_firewall_failing(Some("revoke 192.0.2.0/24".into()));
        assert_eq!(
            lifecycle.unhealthy().as_deref(),
            Some("firewall change failing: revoke 192.0.2.0/24")
        );
        lifecycle.set_firewall_failing(None);
        assert_eq!(lifecycle.unhealthy(), None);
    }
}
