//! Grants: what the rest of the daemon sees of the grant owner — the
//! [`Grants`] handle that sends it commands, the [`Lease`] a session holds, and
//! the request, snapshot and error types.
//!
//! One task owns every session record and every firewall change. Rules are
//! reference-counted by subnet, so two clients in one /24 share one rule.
//! Commands that arrive while a firewall change is in flight are coalesced into
//! the next change (group commit). Inside:
//! - `table`: the synchronous grant table (sessions, subnet holders,
//!   deadlines, the pending change);
//! - `commit`: one change applied, a failure isolated per subnet, backoff;
//! - `owner`: the loop that routes commands and replies.

mod commit;
mod owner;
mod table;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::events::Events;
use crate::firewall::{Firewall, FirewallError, Subnet};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

pub type GrantId = u64;

/// Why the owner ended a session; the session turns it into a Close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Deadline,
    Revoked,
    Shutdown,
    /// The drain timeout passed with the session still held.
    DrainTimeout,
}

/// What a handler asks for once every check has passed.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub peer: IpAddr,
    pub subject: String,
    pub monitoring: bool,
    pub deadline: Instant,
}

/// A snapshot of one live grant, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInfo {
    pub id: GrantId,
    pub ip: IpAddr,
    pub subnet: Subnet,
    pub subject: String,
    pub monitoring: bool,
    pub started: SystemTime,
    pub deadline: SystemTime,
    /// How long the kernel itself still keeps the subnet open (backends with
    /// kernel timeouts only), as read when the list was asked for.
    pub kernel_remaining: Option<Duration>,
}

/// Which grants an operator revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    Id(GrantId),
    /// Every grant whose subnet contains this address.
    Ip(IpAddr),
    All,
}

/// Counters the status endpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub sessions: usize,
    /// Subnets whose revoke failed and is being retried; each keeps a slot.
    pub stuck_revokes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("all {max} client slots are in use")]
    Full {
        max: usize,
        /// Until the earliest held session's deadline (capped).
        retry_after: Duration,
    },
    #[error("the envelope is shutting down")]
    ShuttingDown,
    /// Lame duck: an operator's drain, or a SIGTERM's drain before the stop.
    #[error("the envelope is draining: it takes no new clients")]
    Draining {
        /// Until the stop, for a stopping envelope; a minute otherwise.
        retry_after: Duration,
    },
    /// Revoked (e.g. `revoke --all`) or past its deadline before it was granted.
    #[error("the session was ended before it was granted")]
    EndedAtOnce,
    #[error("the grant for {subnet} could not be installed")]
    Firewall {
        subnet: Subnet,
        #[source]
        source: Arc<FirewallError>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("the envelope is shutting down")]
    ShuttingDown,
    /// The sessions are ended and their slots stay taken until a retry removes the rules.
    #[error(
        "could not remove the rule for {}; retrying in the background",
        list(&failures.subnets())
    )]
    Stuck {
        /// Each stuck subnet with why its own revoke failed.
        #[source]
        failures: SubnetFailures,
    },
}

/// Subnets whose firewall change failed, each with its own cause.
#[derive(Debug, Clone)]
pub struct SubnetFailures(pub Vec<(Subnet, Arc<FirewallError>)>);

impl SubnetFailures {
    pub fn subnets(&self) -> Vec<Subnet> {
        self.0.iter().map(|(subnet, _)| *subnet).collect()
    }
}

impl std::fmt::Display for SubnetFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (subnet, cause)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{subnet}: {}", crate::logging::chain(cause.as_ref()))?;
        }
        Ok(())
    }
}

impl std::error::Error for SubnetFailures {}

fn list(subnets: &[Subnet]) -> String {
    subnets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
enum Command {
    Acquire {
        request: GrantRequest,
        reply: oneshot::Sender<Result<Lease, AcquireError>>,
    },
    Release {
        id: GrantId,
    },
    Revoke {
        selector: Selector,
        reply: oneshot::Sender<Result<Vec<(GrantId, Subnet)>, RevokeError>>,
    },
    List {
        reply: oneshot::Sender<(Vec<GrantInfo>, Occupancy)>,
    },
    Shutdown {
        /// What the sessions still held are told.
        why: EndReason,
        reply: oneshot::Sender<Result<(), FirewallError>>,
    },
}

/// A session's hold on its grant. Dropping it releases the grant, so a session
/// that ends any way at all (including a failed upgrade) gives its slot back.
#[derive(Debug)]
pub struct Lease {
    id: GrantId,
    /// When the owner granted it.
    granted_at: Instant,
    ended: Option<oneshot::Receiver<EndReason>>,
    owner: mpsc::UnboundedSender<Command>,
}

impl AcquireError {
    /// How long a refused client should wait before it asks again, for the
    /// refusals that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcquireError::Full { retry_after, .. } | AcquireError::Draining { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl Lease {
    pub fn id(&self) -> GrantId {
        self.id
    }

    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }

    /// Resolves when the owner ends the session (deadline, revoke, shutdown).
    pub async fn ended(&mut self) -> EndReason {
        match self.ended.as_mut() {
            Some(rx) => rx.await.unwrap_or(EndReason::Revoked),
            None => std::future::pending().await,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The owner may be gone already at shutdown; then there is nothing to release.
        let _ = self.owner.send(Command::Release { id: self.id });
    }
}

/// Cloneable handle to the owner task.
#[derive(Debug, Clone)]
pub struct Grants {
    tx: mpsc::UnboundedSender<Command>,
    /// How many sessions hold a grant, as of the owner's last change.
    sessions: watch::Receiver<usize>,
}

impl Grants {
    /// Starts the owner task. The firewall must already be set up.
    /// New grants are refused while `lifecycle` says the envelope drains;
    /// a firewall change that keeps failing is reported to it.
    pub fn spawn(
        firewall: Arc<dyn Firewall>,
        max_clients: usize,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
        events: Events,
    ) -> (Grants, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (sessions_tx, sessions) = watch::channel(0);
        let owner = owner::Owner::new(
            table::Table::new(max_clients),
            commit::Committer::new(firewall, metrics, lifecycle.clone(), events),
            lifecycle,
            sessions_tx,
            tx.clone(),
        );
        let task = tokio::spawn(owner.run(rx));
        (Grants { tx, sessions }, task)
    }

    /// How many sessions hold a grant, as of the owner's last change.
    pub fn held(&self) -> usize {
        *self.sessions.borrow()
    }

    /// Resolves once no session holds a grant (at once when none does).
    pub async fn idle(&self) {
        let mut sessions = self.sessions.clone();
        let _ = sessions.wait_for(|n| *n == 0).await;
    }

    pub async fn acquire(&self, request: GrantRequest) -> Result<Lease, AcquireError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Acquire { request, reply })
            .map_err(|_| AcquireError::ShuttingDown)?;
        rx.await.unwrap_or(Err(AcquireError::ShuttingDown))
    }

    /// Ends the selected sessions; returns once their rules are gone, with
    /// each revoked grant's subnet.
    pub async fn revoke(&self, selector: Selector) -> Result<Vec<(GrantId, Subnet)>, RevokeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Revoke { selector, reply })
            .map_err(|_| RevokeError::ShuttingDown)?;
        rx.await.unwrap_or(Err(RevokeError::ShuttingDown))
    }

    pub async fn list(&self) -> (Vec<GrantInfo>, Occupancy) {
        let (reply, rx) = oneshot::channel();
        let empty = (
            Vec::new(),
            Occupancy {
                sessions: 0,
                stuck_revokes: 0,
            },
        );
        if self.tx.send(Command::List { reply }).is_err() {
            return empty;
        }
        rx.await.unwrap_or(empty)
    }

    /// Ends every session (telling each `why`), revokes every grant and tears
    /// the firewall down.
    pub async fn shutdown(&self, why: EndReason) -> Result<(), FirewallError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { why, reply }).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests;
