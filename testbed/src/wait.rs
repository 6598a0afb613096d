//! Waiting for something that happens eventually: one deadline ([`Wait`]),
//! paused between checks by a blocking or an async sleep, and the
//! [`eventually`] helpers every test uses on top of it. A wait that means
//! "eventually" gets [`EVENTUALLY`], generous because a loaded CI machine is
//! slow; how fast something happens is the bench's business, not a test's.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// The bound of a wait that means "eventually".
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// The pause between two checks, unless [`Wait::every`] says otherwise.
const EVERY: Duration = Duration::from_millis(10);

/// `what` did not happen within `bound`.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {bound:?} waiting for {what}")]
pub struct TimedOut {
    pub what: String,
    pub bound: Duration,
}

/// A deadline for one wait, started when made: between two checks that
/// failed, [`Wait::pause`] (or [`Wait::pause_async`]) sleeps until the next
/// check, and fails once the bound is over. The check itself is the caller's
/// loop, so it may borrow anything and report whatever it saw.
#[derive(Debug)]
pub struct Wait {
    what: String,
    bound: Duration,
    every: Duration,
    started: Instant,
}

impl Wait {
    pub fn new(bound: Duration, what: impl Into<String>) -> Wait {
        Wait {
            what: what.into(),
            bound,
            every: EVERY,
            started: Instant::now(),
        }
    }

    /// Checks every `every` instead of every 10 ms.
    pub fn every(mut self, every: Duration) -> Wait {
        self.every = every;
        self
    }

    /// How long to pause before the next check; an error once the bound is
    /// over. The last pause ends at the deadline, so a check runs there too.
    fn next(&self) -> Result<Duration, TimedOut> {
        let left = self.bound.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err(TimedOut {
                what: self.what.clone(),
                bound: self.bound,
            });
        }
        Ok(left.min(self.every))
    }

    /// Blocks the thread until the next check (not in async code: see
    /// [`Wait::pause_async`]).
    pub fn pause(&self) -> Result<(), TimedOut> {
        std::thread::sleep(self.next()?);
        Ok(())
    }

    /// Lets the runtime run other tasks until the next check.
    pub async fn pause_async(&self) -> Result<(), TimedOut> {
        tokio::time::sleep(self.next()?).await;
        Ok(())
    }
}

/// What one check says: done (with a value), or not yet (with what it saw,
/// shown when the wait times out).
pub trait Outcome {
    type Value;
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        self.then_some(()).ok_or_else(String::new)
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.map_err(|seen| format!("; last seen: {seen}"))
    }
}

/// Checks until `check` says done, within `bound`; panics naming `what` (and
/// what the last check saw) when it never does. Blocks the thread: in async
/// code use [`eventually_async`].
pub fn eventually<C: Outcome>(
    bound: Duration,
    what: &str,
    mut check: impl FnMut() -> C,
) -> C::Value {
    let wait = Wait::new(bound, what);
    loop {
        match check().outcome() {
            Ok(value) => return value,
            Err(seen) => wait.pause().unwrap_or_else(|e| panic!("{e}{seen}")),
        }
    }
}

/// [`eventually`] for an async check, pausing without blocking the runtime.
pub async fn eventually_async<C: Outcome, F: Future<Output = C>>(
    bound: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> C::Value {
    let wait = Wait::new(bound, what);
    loop {
        match check().await.outcome() {
            Ok(value) => return value,
            Err(seen) => wait
                .pause_async()
                .await
                .unwrap_or_else(|e| panic!("{e}{seen}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_comes_true_returns_its_value() {
        let mut calls = 0;
        let value = eventually(EVENTUALLY, "the third call", || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(value, 3);
    }

    #[test]
    fn a_check_that_never_comes_true_panics_after_the_bound_with_what_it_saw() {
        let bound = Duration::from_millis(50);
        let started = Instant::now();
        let panic = std::panic::catch_unwind(|| {
            eventually(bound, "never", || Err::<(), _>("still 3"));
        })
        .unwrap_err();
        assert!(started.elapsed() >= bound);
        let message = panic.downcast_ref::<String>().unwrap();
        assert_eq!(
            message,
            "timed out after 50ms waiting for never; last seen: still 3"
        );
    }

    #[tokio::test]
    async fn the_async_check_is_awaited_and_the_runtime_runs_meanwhile() {
        let ticker = tokio::spawn(tokio::time::sleep(Duration::from_millis(30)));
        eventually_async(EVENTUALLY, "the ticker", || async { ticker.is_finished() }).await;
        let wait = Wait::new(Duration::ZERO, "nothing");
        assert_eq!(
            wait.pause_async().await.unwrap_err().to_string(),
            "timed out after 0ns waiting for nothing"
        );
    }
}
