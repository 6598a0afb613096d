//! The commit step: turns the table's pending change into one firewall
//! transaction, isolates a failure to one transaction per subnet so a bad
//! subnet never takes others down, counts what happened, and backs off before a
//! failed revoke is tried again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::table::{Outcome, Table};
use crate::events::{Event, Events};
use crate::firewall::{Change, Firewall, FirewallError, Subnet};
use crate::lifecycle::Lifecycle;
use crate::logging::chain;
use crate::metrics::Metrics;

/// First and longest wait before a failed revoke is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct Committer {
    firewall: Arc<dyn Firewall>,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    events: Events,
    /// Subnets whose last change failed, to report when one goes through.
    failing: BTreeSet<Subnet>,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
}

impl Committer {
    pub fn new(
        firewall: Arc<dyn Firewall>,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
        events: Events,
    ) -> Committer {
        Committer {
            firewall,
            metrics,
            lifecycle,
            events,
            failing: BTreeSet::new(),
            retry_at: None,
            retry_backoff: RETRY_FIRST,
        }
    }

    pub fn firewall(&self) -> &Arc<dyn Firewall> {
        &self.firewall
    }

    /// When failed revokes are due to be tried again, if any failed.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// True once, when the retry time has come.
    pub fn take_due_retry(&mut self, now: Instant) -> bool {
        let due = self.retry_at.is_some_and(|at| at <= now);
        if due {
            self.retry_at = None;
        }
        due
    }

    /// Brings the kernel in line with the table and tells the table what took.
    pub async fn commit(&mut self, table: &mut Table) -> Outcome {
        let change = table.plan();
        let outcome = if change.is_empty() {
            Outcome::default()
        } else {
            self.apply_isolated(&change).await
        };
        table.settle(&change, &outcome);
        if !change.is_empty() {
            self.schedule_retry(&outcome);
        }
        self.metrics
            .active_grants
            .set(table.occupancy().sessions as i64);
        outcome
    }

    /// The whole change in one transaction; if that fails and it has more than
    /// one subnet, one transaction per subnet. Each subnet that fails is
    /// reported (`firewall.failed`), and each that went through after failing
    /// before (`firewall.recovered`).
    async fn apply_isolated(&mut self, change: &Change) -> Outcome {
        let mut outcome = Outcome::default();
        let failed: Vec<(Change, Arc<FirewallError>)> = match self.apply(change).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                let mut singles = change.per_subnet();
                if singles.len() == 1 {
                    vec![(singles.remove(0), Arc::new(e))]
                } else {
                    let mut failed = Vec::new();
                    for single in singles {
                        if let Err(e) = self.apply(&single).await {
                            failed.push((single, Arc::new(e)));
                        }
                    }
                    failed
                }
            }
        };
        for (single, error) in failed {
            let subnets = subnets(&single);
            self.failing.extend(subnets.iter().copied());
            self.events.emit(Event::FirewallFailed {
                operation: operation(&single),
                subnets: subnets.iter().map(ToString::to_string).collect(),
                error: chain(error.as_ref()).to_string(),
            });
            outcome.record(&single, error);
        }
        let recovered: Vec<Subnet> = subnets(change)
            .into_iter()
            .filter(|s| self.failing.contains(s) && !outcome.failed(s))
            .collect();
        if !recovered.is_empty() {
            for subnet in &recovered {
                self.failing.remove(subnet);
            }
            self.events.emit(Event::FirewallRecovered {
                operation: operation(change),
                subnets: recovered.iter().map(ToString::to_string).collect(),
            });
        }
        outcome
    }

    async fn apply(&self, change: &Change) -> Result<(), FirewallError> {
        let started = std::time::Instant::now();
        let result = self.firewall.apply(change).await;
        self.metrics
            .observe_firewall(operation(change), started.elapsed(), result.is_ok());
        result
    }

    /// Doubles the wait (up to [`RETRY_MAX`]) while revokes keep failing.
    fn schedule_retry(&mut self, outcome: &Outcome) {
        if outcome.failed_revokes.is_empty() {
            self.retry_backoff = RETRY_FIRST;
            self.lifecycle.set_firewall_failing(None);
            return;
        }
        let stuck: Vec<String> = outcome
            .failed_revokes
            .keys()
            .map(ToString::to_string)
            .collect();
        self.lifecycle
            .set_firewall_failing(Some(format!("revoke {}", stuck.join(","))));
        self.metrics
            .revoke_failures
            .inc_by(outcome.failed_revokes.len() as u64);
        self.retry_at = Some(Instant::now() + self.retry_backoff);
        self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
    }
}

/// How a change is named in metrics and events: `grant` (opening or
/// refreshing subnets), `revoke`, or `mixed`.
fn operation(change: &Change) -> &'static str {
    let opens = !change.grant.is_empty() || !change.refresh.is_empty();
    match (opens, change.revoke.is_empty()) {
        (false, _) => "revoke",
        (true, true) => "grant",
        (true, false) => "mixed",
    }
}

fn subnets(change: &Change) -> Vec<Subnet> {
    let mut all: Vec<Subnet> = change
        .granted()
        .chain(change.refresh.iter().map(|o| o.subnet))
        .chain(change.revoke.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}
