//! The owner loop: the one task that holds the grant table. It takes commands
//! as they come (everything that queued up while the firewall was busy goes
//! into the next change: group commit), wakes for the earliest deadline or a
//! revoke retry, runs the commit step, and only then replies.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::commit::Committer;
use super::table::{Outcome, Session, Table};
use super::{
    AcquireError, Command, EndReason, GrantId, GrantInfo, Lease, Occupancy, RevokeError,
    SubnetFailures,
};
use crate::firewall::{FirewallError, Subnet};
use crate::lifecycle::Lifecycle;
use crate::logging::chain;

/// Most commands folded into one firewall transaction.
const MAX_BATCH: usize = 1024;
/// Longest a list waits for the kernel's timeouts before it shows them as unknown.
const KERNEL_READ_LIMIT: Duration = Duration::from_millis(500);

type AcquireReply = oneshot::Sender<Result<Lease, AcquireError>>;
type RevokeReply = oneshot::Sender<Result<Vec<(GrantId, Subnet)>, RevokeError>>;
type ListReply = oneshot::Sender<(Vec<GrantInfo>, Occupancy)>;
type ShutdownReply = oneshot::Sender<Result<(), FirewallError>>;

/// Replies held back until the firewall change they depend on is done.
#[derive(Default)]
struct Pending {
    acquires: Vec<(GrantId, AcquireReply)>,
    revokes: Vec<(Vec<(GrantId, Subnet)>, RevokeReply)>,
    lists: Vec<ListReply>,
    shutdown: Option<ShutdownReply>,
}

pub(super) struct Owner {
    table: Table,
    committer: Committer,
    lifecycle: Lifecycle,
    /// The session count the daemon waits on while it drains.
    sessions: watch::Sender<usize>,
    /// Handed to every lease, so dropping it reaches this loop.
    me: mpsc::UnboundedSender<Command>,
}

impl Owner {
    pub fn new(
        table: Table,
        committer: Committer,
        lifecycle: Lifecycle,
        sessions: watch::Sender<usize>,
        me: mpsc::UnboundedSender<Command>,
    ) -> Owner {
        Owner {
            table,
            committer,
            lifecycle,
            sessions,
            me,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                () = sleep_until_opt(self.next_wake()) => None,
            };
            let mut pending = Pending::default();
            for cmd in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
                .take(MAX_BATCH)
            {
                self.route(cmd, &mut pending);
            }
            let now = Instant::now();
            for session in self.table.expire(now) {
                self.end(session, Some(EndReason::Deadline));
            }
            if self.committer.take_due_retry(now) {
                self.table.retry_stuck();
            }
            let outcome = self.committer.commit(&mut self.table).await;
            self.reply_acquires(pending.acquires, &outcome);
            if self.table.has_pending_change() {
                // Only the table entries of failed grants: they were never installed.
                self.committer.commit(&mut self.table).await;
            }
            reply_revokes(pending.revokes, &outcome);
            self.sessions.send_replace(self.table.occupancy().sessions);
            self.reply_lists(pending.lists).await;
            if let Some(reply) = pending.shutdown {
                let _ = reply.send(self.finish().await);
                return;
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        match (self.table.next_deadline(), self.committer.retry_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a command to the table; replies that depend on the firewall wait in `pending`.
    fn route(&mut self, cmd: Command, pending: &mut Pending) {
        match cmd {
            Command::Acquire { request, reply } => {
                if self.lifecycle.is_draining() {
                    let retry_after = self.lifecycle.retry_after();
                    let _ = reply.send(Err(AcquireError::Draining { retry_after }));
                    return;
                }
                match self.table.admit(request, Instant::now(), SystemTime::now()) {
                    Ok(id) => pending.acquires.push((id, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Release { id } => {
                if let Some(session) = self.table.remove(id) {
                    self.end(session, None);
                }
            }
            Command::Revoke { selector, reply } => {
                let chosen = self.table.select(selector);
                for (id, _) in &chosen {
                    if let Some(session) = self.table.remove(*id) {
                        self.end(session, Some(EndReason::Revoked));
                    }
                }
                pending.revokes.push((chosen, reply));
            }
            Command::List { reply } => pending.lists.push(reply),
            Command::Shutdown { why, reply } => {
                for session in self.table.shut_down() {
                    self.end(session, Some(why));
                }
                pending.shutdown = Some(reply);
            }
        }
    }

    /// A session left the table; `why` tells it why, when it did not end
    /// itself. (Its `grant.closed` event, with how long it was held, is the
    /// session's to report.)
    fn end(&self, session: Session, why: Option<EndReason>) {
        if let (Some(end), Some(why)) = (session.end, why) {
            let _ = end.send(why);
        }
    }

    fn reply_acquires(&mut self, acquires: Vec<(GrantId, AcquireReply)>, outcome: &Outcome) {
        for (id, reply) in acquires {
            let Some(session) = self.table.session_mut(id) else {
                // Expired, revoked or shut down within the same batch.
                let error = if self.table.is_shutting_down() {
                    AcquireError::ShuttingDown
                } else {
                    AcquireError::EndedAtOnce
                };
                let _ = reply.send(Err(error));
                continue;
            };
            let subnet = session.info.subnet;
            if let Some(cause) = outcome.failed_grants.get(&subnet) {
                if let Some(session) = self.table.remove(id) {
                    self.end(session, None);
                }
                let _ = reply.send(Err(AcquireError::Firewall {
                    subnet,
                    source: cause.clone(),
                }));
                continue;
            }
            let (end_tx, end_rx) = oneshot::channel();
            session.end = Some(end_tx);
            let lease = Lease {
                id,
                granted_at: Instant::now(),
                ended: Some(end_rx),
                owner: self.me.clone(),
            };
            // A handler that has gone away drops the lease, which releases it.
            let _ = reply.send(Ok(lease));
        }
    }

    async fn reply_lists(&self, lists: Vec<ListReply>) {
        if lists.is_empty() {
            return;
        }
        let mut list = self.table.snapshot();
        // The kernel's word, read now: a member deleted by hand shows as none.
        // Bounded: a stalled kernel read must not hold up the operator's list.
        let read = tokio::time::timeout(
            KERNEL_READ_LIMIT,
            self.committer.firewall().kernel_expiries(),
        );
        match read.await.unwrap_or(Ok(None)) {
            Ok(Some(kernel)) => {
                for grant in &mut list {
                    grant.kernel_remaining =
                        Some(kernel.get(&grant.subnet).copied().unwrap_or_default());
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %chain(&e), "reading the kernel's grant timeouts"),
        }
        let occupancy = self.table.occupancy();
        for reply in lists {
            let _ = reply.send((list.clone(), occupancy));
        }
    }

    /// After the shutdown change: report subnets that stayed open, then tear
    /// the guard down either way.
    async fn finish(&self) -> Result<(), FirewallError> {
        let stuck = self.table.occupancy().stuck_revokes;
        let result = if stuck > 0 {
            Err(FirewallError::Failed {
                operation: "revoke at shutdown".into(),
                message: format!("{stuck} subnet rules could not be removed"),
            })
        } else {
            Ok(())
        };
        let teardown = self.committer.firewall().teardown().await;
        result.and(teardown)
    }
}

/// A revoke succeeds once every chosen subnet's rule is gone; otherwise it
/// names the stuck subnets, each with the firewall's own reason.
fn reply_revokes(revokes: Vec<(Vec<(GrantId, Subnet)>, RevokeReply)>, outcome: &Outcome) {
    for (chosen, reply) in revokes {
        let mut stuck: Vec<Subnet> = chosen
            .iter()
            .map(|(_, subnet)| *subnet)
            .filter(|subnet| outcome.failed_revokes.contains_key(subnet))
            .collect();
        stuck.sort_unstable();
        stuck.dedup();
        let result = if stuck.is_empty() {
            Ok(chosen)
        } else {
            Err(RevokeError::Stuck {
                failures: SubnetFailures(
                    stuck
                        .into_iter()
                        .map(|subnet| (subnet, outcome.failed_revokes[&subnet].clone()))
                        .collect(),
                ),
            })
        };
        let _ = reply.send(result);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
