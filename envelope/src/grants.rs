//! The grant table and its single owner.
//!
//! One task owns every session record and every firewall change. HTTP handlers,
//! the admin API and shutdown send it [`Command`]s; deadlines are enforced by the
//! same task, which sleeps until the earliest one. Rules are reference-counted by
//! subnet, so two clients in one /24 share one rule. Commands that arrive while a
//! firewall change is in flight are coalesced into the next change (group commit):
//! one transaction for many grants and revokes, falling back to one transaction
//! per subnet only when a shared one fails, so a bad subnet never takes others down.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::firewall::{Change, Firewall, FirewallError, Opening, Subnet};
use crate::metrics::Metrics;

pub type GrantId = u64;

/// Most commands folded into one firewall transaction.
const MAX_BATCH: usize = 1024;
/// First and longest wait before a failed revoke is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest a list waits for the kernel's timeouts before it shows them as unknown.
const KERNEL_READ_LIMIT: Duration = Duration::from_millis(500);

/// Why the owner ended a session; the session turns it into a Close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Deadline,
    Revoked,
    Shutdown,
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
    #[error("all {0} client slots are in use")]
    Full(usize),
    #[error("the envelope is shutting down")]
    ShuttingDown,
    /// Revoked (e.g. `revoke --all`) or past its deadline before it was granted.
    #[error("the session was ended before it was granted")]
    EndedAtOnce,
    #[error("firewall change failed: {0}")]
    Firewall(String),
}

#[derive(Debug, thiserror::Error)]
#[error("firewall change failed: {0}")]
pub struct RevokeError(pub String);

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
        reply: oneshot::Sender<Result<Vec<GrantId>, RevokeError>>,
    },
    List {
        reply: oneshot::Sender<(Vec<GrantInfo>, Occupancy)>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), FirewallError>>,
    },
}

/// A session's hold on its grant. Dropping it releases the grant, so a session
/// that ends any way at all (including a failed upgrade) gives its slot back.
#[derive(Debug)]
pub struct Lease {
    id: GrantId,
    ended: Option<oneshot::Receiver<EndReason>>,
    owner: mpsc::UnboundedSender<Command>,
}

impl Lease {
    pub fn id(&self) -> GrantId {
        self.id
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
}

impl Grants {
    /// Starts the owner task. The firewall must already be set up.
    pub fn spawn(
        firewall: Arc<dyn Firewall>,
        max_clients: usize,
        metrics: Arc<Metrics>,
    ) -> (Grants, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let owner = Owner {
            firewall,
            max_clients,
            metrics,
            me: tx.clone(),
            sessions: HashMap::new(),
            subnets: HashMap::new(),
            deadlines: BTreeSet::new(),
            touched: BTreeSet::new(),
            next_id: 1,
            shutting_down: false,
            retry_at: None,
            retry_backoff: RETRY_FIRST,
        };
        let task = tokio::spawn(owner.run(rx));
        (Grants { tx }, task)
    }

    pub async fn acquire(&self, request: GrantRequest) -> Result<Lease, AcquireError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Acquire { request, reply })
            .map_err(|_| AcquireError::ShuttingDown)?;
        rx.await.unwrap_or(Err(AcquireError::ShuttingDown))
    }

    /// Ends the selected sessions; returns once their rules are gone.
    pub async fn revoke(&self, selector: Selector) -> Result<Vec<GrantId>, RevokeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Revoke { selector, reply })
            .map_err(|_| RevokeError("the envelope is shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(RevokeError("the envelope is shutting down".into())))
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

    /// Ends every session, revokes every grant and tears the firewall down.
    pub async fn shutdown(&self) -> Result<(), FirewallError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

#[derive(Debug)]
struct Session {
    info: GrantInfo,
    deadline: Instant,
    end: Option<oneshot::Sender<EndReason>>,
}

#[derive(Debug, Default)]
struct SubnetState {
    sessions: usize,
    installed: bool,
    /// The deadline the kernel's copy was opened or last refreshed for.
    until: Option<Instant>,
}

struct Owner {
    firewall: Arc<dyn Firewall>,
    max_clients: usize,
    metrics: Arc<Metrics>,
    me: mpsc::UnboundedSender<Command>,
    sessions: HashMap<GrantId, Session>,
    subnets: HashMap<Subnet, SubnetState>,
    deadlines: BTreeSet<(Instant, GrantId)>,
    /// Subnets whose wanted state may differ from the kernel's.
    touched: BTreeSet<Subnet>,
    next_id: GrantId,
    shutting_down: bool,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
}

type RevokeReply = oneshot::Sender<Result<Vec<GrantId>, RevokeError>>;

/// Replies held back until the firewall change they depend on is done.
#[derive(Default)]
struct Pending {
    acquires: Vec<(GrantId, oneshot::Sender<Result<Lease, AcquireError>>)>,
    revokes: Vec<(Vec<(GrantId, Subnet)>, RevokeReply)>,
    lists: Vec<oneshot::Sender<(Vec<GrantInfo>, Occupancy)>>,
    shutdown: Option<oneshot::Sender<Result<(), FirewallError>>>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                () = sleep_until_opt(wake) => None,
            };
            let mut pending = Pending::default();
            if let Some(cmd) = first {
                self.handle(cmd, &mut pending);
                let mut taken = 1;
                while taken < MAX_BATCH {
                    let Ok(cmd) = rx.try_recv() else { break };
                    self.handle(cmd, &mut pending);
                    taken += 1;
                }
            }
            self.expire_due(Instant::now());
            self.retry_due(Instant::now());
            let outcome = self.commit().await;
            let done = pending.shutdown.is_some();
            self.answer(pending, &outcome).await;
            if done {
                return;
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        match (deadline, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn occupancy(&self) -> Occupancy {
        Occupancy {
            sessions: self.sessions.len(),
            stuck_revokes: self
                .subnets
                .values()
                .filter(|s| s.sessions == 0 && s.installed)
                .count(),
        }
    }

    fn handle(&mut self, cmd: Command, pending: &mut Pending) {
        match cmd {
            Command::Acquire { request, reply } => {
                if self.shutting_down {
                    let _ = reply.send(Err(AcquireError::ShuttingDown));
                    return;
                }
                let used = self.occupancy();
                if used.sessions + used.stuck_revokes >= self.max_clients {
                    let _ = reply.send(Err(AcquireError::Full(self.max_clients)));
                    return;
                }
                let id = self.add_session(request);
                pending.acquires.push((id, reply));
            }
            Command::Release { id } => self.remove_session(id, None),
            Command::Revoke { selector, reply } => {
                let mut chosen: Vec<(GrantId, Subnet)> = self
                    .sessions
                    .values()
                    .filter(|s| match selector {
                        Selector::Id(id) => s.info.id == id,
                        Selector::Ip(ip) => s.info.subnet.contains(ip),
                        Selector::All => true,
                    })
                    .map(|s| (s.info.id, s.info.subnet))
                    .collect();
                chosen.sort_unstable();
                for (id, _) in &chosen {
                    self.remove_session(*id, Some(EndReason::Revoked));
                }
                pending.revokes.push((chosen, reply));
            }
            Command::List { reply } => pending.lists.push(reply),
            Command::Shutdown { reply } => {
                self.shutting_down = true;
                let all: Vec<GrantId> = self.sessions.keys().copied().collect();
                for id in all {
                    self.remove_session(id, Some(EndReason::Shutdown));
                }
                // Stuck subnets are revoked now too: nothing may outlive the envelope.
                let stuck: Vec<Subnet> = self
                    .subnets
                    .iter()
                    .filter(|(_, s)| s.installed)
                    .map(|(n, _)| *n)
                    .collect();
                self.touched.extend(stuck);
                pending.shutdown = Some(reply);
            }
        }
    }

    fn add_session(&mut self, request: GrantRequest) -> GrantId {
        let id = self.next_id;
        self.next_id += 1;
        let subnet = Subnet::of_client(request.peer);
        let now = Instant::now();
        let started = SystemTime::now();
        let info = GrantInfo {
            id,
            ip: request.peer.to_canonical(),
            subnet,
            subject: request.subject,
            monitoring: request.monitoring,
            started,
            deadline: started + request.deadline.saturating_duration_since(now),
            kernel_remaining: None,
        };
        self.subnets.entry(subnet).or_default().sessions += 1;
        self.touched.insert(subnet);
        self.deadlines.insert((request.deadline, id));
        self.sessions.insert(
            id,
            Session {
                info,
                deadline: request.deadline,
                end: None,
            },
        );
        id
    }

    /// Forgets a session; `why` tells the session why, when it did not end itself.
    fn remove_session(&mut self, id: GrantId, why: Option<EndReason>) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(session.deadline, id));
        if let Some(state) = self.subnets.get_mut(&session.info.subnet) {
            state.sessions -= 1;
        }
        self.touched.insert(session.info.subnet);
        if let (Some(end), Some(why)) = (session.end, why) {
            let _ = end.send(why);
        }
        if let Ok(held) = session.info.started.elapsed() {
            self.metrics.grant_duration.observe(held.as_secs_f64());
        }
    }

    fn expire_due(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.remove_session(id, Some(EndReason::Deadline));
        }
    }

    fn retry_due(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            let stuck: Vec<Subnet> = self
                .subnets
                .iter()
                .filter(|(_, s)| s.sessions == 0 && s.installed)
                .map(|(n, _)| *n)
                .collect();
            self.touched.extend(stuck);
        }
    }

    /// The latest deadline among the subnet's live sessions.
    fn wanted_until(&self, subnet: Subnet) -> Option<Instant> {
        self.sessions
            .values()
            .filter(|s| s.info.subnet == subnet)
            .map(|s| s.deadline)
            .max()
    }

    /// Brings the kernel in line with the table for every touched subnet: opens
    /// new ones, moves an open one's kernel deadline to its latest session's,
    /// closes those no session holds.
    async fn commit(&mut self) -> Outcome {
        let mut change = Change::default();
        for subnet in std::mem::take(&mut self.touched) {
            let wanted = self.wanted_until(subnet);
            let state = self.subnets.entry(subnet).or_default();
            match (wanted, state.installed) {
                (Some(until), false) => change.grant.push(Opening { subnet, until }),
                (Some(until), true) if state.until != Some(until) => {
                    change.refresh.push(Opening { subnet, until })
                }
                (None, true) => change.revoke.push(subnet),
                (None, false) => {
                    self.subnets.remove(&subnet);
                }
                (Some(_), true) => {}
            }
        }
        if change.is_empty() {
            self.metrics.active_grants.set(self.sessions.len() as i64);
            return Outcome::default();
        }
        let mut failed_grants = BTreeSet::new();
        let mut failed_revokes = BTreeSet::new();
        if self.apply(&change).await.is_ok() {
            self.mark(&change, &BTreeSet::new(), &BTreeSet::new());
        } else if change.grant.len() + change.refresh.len() + change.revoke.len() > 1 {
            // Isolate the failure: one transaction per subnet.
            for &opening in &change.grant {
                let one = Change {
                    grant: vec![opening],
                    ..Change::default()
                };
                if self.apply(&one).await.is_err() {
                    failed_grants.insert(opening.subnet);
                }
            }
            for &opening in &change.refresh {
                let one = Change {
                    refresh: vec![opening],
                    ..Change::default()
                };
                if self.apply(&one).await.is_err() {
                    failed_grants.insert(opening.subnet);
                }
            }
            for &subnet in &change.revoke {
                let one = Change {
                    revoke: vec![subnet],
                    ..Change::default()
                };
                if self.apply(&one).await.is_err() {
                    failed_revokes.insert(subnet);
                }
            }
            self.mark(&change, &failed_grants, &failed_revokes);
        } else {
            failed_grants.extend(change.granted());
            failed_grants.extend(change.refresh.iter().map(|o| o.subnet));
            failed_revokes.extend(change.revoke.iter().copied());
            self.mark(&change, &failed_grants, &failed_revokes);
        }
        if failed_revokes.is_empty() {
            self.retry_backoff = RETRY_FIRST;
        } else {
            self.metrics
                .revoke_failures
                .inc_by(failed_revokes.len() as u64);
            self.retry_at = Some(Instant::now() + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
        }
        self.metrics.active_grants.set(self.sessions.len() as i64);
        Outcome {
            failed_grants,
            failed_revokes,
        }
    }

    async fn apply(&self, change: &Change) -> Result<(), FirewallError> {
        let started = std::time::Instant::now();
        let result = self.firewall.apply(change).await;
        let opens = !change.grant.is_empty() || !change.refresh.is_empty();
        let op = match (opens, change.revoke.is_empty()) {
            (false, _) => "revoke",
            (true, true) => "grant",
            (true, false) => "mixed",
        };
        self.metrics
            .observe_firewall(op, started.elapsed(), result.is_ok());
        if let Err(e) = &result {
            tracing::error!(
                grant = ?change.granted().map(|s| s.to_string()).collect::<Vec<_>>(),
                refresh = ?change.refresh.iter().map(|o| o.subnet.to_string()).collect::<Vec<_>>(),
                revoke = ?change.revoke.iter().map(ToString::to_string).collect::<Vec<_>>(),
                error = %e,
                "firewall change failed"
            );
        }
        result
    }

    fn mark(
        &mut self,
        change: &Change,
        failed_grants: &BTreeSet<Subnet>,
        failed_revokes: &BTreeSet<Subnet>,
    ) {
        for opening in change.grant.iter().chain(&change.refresh) {
            if !failed_grants.contains(&opening.subnet) {
                let state = self.subnets.entry(opening.subnet).or_default();
                state.installed = true;
                state.until = Some(opening.until);
            }
        }
        for subnet in &change.revoke {
            if !failed_revokes.contains(subnet) {
                self.subnets.remove(subnet);
            }
        }
    }

    async fn answer(&mut self, pending: Pending, outcome: &Outcome) {
        for (id, reply) in pending.acquires {
            let Some(session) = self.sessions.get_mut(&id) else {
                // Expired, revoked or shut down within the same batch.
                let error = if self.shutting_down {
                    AcquireError::ShuttingDown
                } else {
                    AcquireError::EndedAtOnce
                };
                let _ = reply.send(Err(error));
                continue;
            };
            if outcome.failed_grants.contains(&session.info.subnet) {
                self.remove_session(id, None);
                let _ = reply.send(Err(AcquireError::Firewall(
                    "the grant could not be installed".into(),
                )));
                continue;
            }
            let (end_tx, end_rx) = oneshot::channel();
            session.end = Some(end_tx);
            let lease = Lease {
                id,
                ended: Some(end_rx),
                owner: self.me.clone(),
            };
            // A handler that has gone away drops the lease, which releases it.
            let _ = reply.send(Ok(lease));
        }
        // Sessions of a failed grant were removed above; their subnets were never
        // installed, so this only drops the table entries.
        if !self.touched.is_empty() {
            let _ = Box::pin(self.commit()).await;
        }
        for (chosen, reply) in pending.revokes {
            let stuck: Vec<String> = chosen
                .iter()
                .filter(|(_, subnet)| outcome.failed_revokes.contains(subnet))
                .map(|(_, subnet)| subnet.to_string())
                .collect();
            let result = if stuck.is_empty() {
                Ok(chosen.iter().map(|(id, _)| *id).collect())
            } else {
                Err(RevokeError(format!(
                    "could not remove the rule for {}; retrying in the background",
                    stuck.join(", ")
                )))
            };
            let _ = reply.send(result);
        }
        let occupancy = self.occupancy();
        let mut list: Vec<GrantInfo> = self.sessions.values().map(|s| s.info.clone()).collect();
        list.sort_by_key(|g| g.id);
        if !pending.lists.is_empty() {
            // The kernel's word, read now: a member deleted by hand shows as none.
            // Bounded: a stalled kernel read must not hold up the operator's list.
            let read = tokio::time::timeout(KERNEL_READ_LIMIT, self.firewall.kernel_expiries());
            match read.await.unwrap_or(Ok(None)) {
                Ok(Some(kernel)) => {
                    for grant in &mut list {
                        grant.kernel_remaining =
                            Some(kernel.get(&grant.subnet).copied().unwrap_or_default());
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading the kernel's grant timeouts"),
            }
        }
        for reply in pending.lists {
            let _ = reply.send((list.clone(), occupancy));
        }
        if let Some(reply) = pending.shutdown {
            let result = if occupancy.stuck_revokes > 0 {
                Err(FirewallError::Failed {
                    operation: "revoke at shutdown".into(),
                    message: format!(
                        "{} subnet rules could not be removed",
                        occupancy.stuck_revokes
                    ),
                })
            } else {
                Ok(())
            };
            let teardown = self.firewall.teardown().await;
            let _ = reply.send(result.and(teardown));
        }
    }
}

/// Which subnets of a commit the firewall refused.
#[derive(Debug, Default)]
struct Outcome {
    failed_grants: BTreeSet<Subnet>,
    failed_revokes: BTreeSet<Subnet>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::firewall::FwFuture;

    /// Records every change; fails grants of subnets in `fail_grants` and
    /// revokes while `fail_revokes` is set. Each apply takes `delay`.
    #[derive(Debug, Default)]
    struct FakeFirewall {
        changes: Mutex<Vec<Change>>,
        fail_grants: Mutex<Vec<Subnet>>,
        fail_revokes: Mutex<bool>,
        delay: Duration,
        entered: tokio::sync::Notify,
    }

    impl Firewall for FakeFirewall {
        fn backend(&self) -> String {
            "fake".into()
        }
        fn setup(&self) -> FwFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
            Box::pin(async move {
                self.entered.notify_one();
                tokio::time::sleep(self.delay).await;
                let bad_grant = change
                    .granted()
                    .chain(change.refresh.iter().map(|o| o.subnet))
                    .any(|s| self.fail_grants.lock().unwrap().contains(&s));
                let bad_revoke = !change.revoke.is_empty() && *self.fail_revokes.lock().unwrap();
                if bad_grant || bad_revoke {
                    return Err(FirewallError::Failed {
                        operation: "fake".into(),
                        message: "injected".into(),
                    });
                }
                self.changes.lock().unwrap().push(change.clone());
                Ok(())
            })
        }
        fn teardown(&self) -> FwFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
    }

    fn request(ip: &str, hold: Duration) -> GrantRequest {
        GrantRequest {
            peer: ip.parse().unwrap(),
            subject: "ndt".into(),
            monitoring: false,
            deadline: Instant::now() + hold,
        }
    }

    fn subnet(ip: &str) -> Subnet {
        Subnet::of_client(ip.parse().unwrap())
    }

    fn spawn(firewall: &Arc<FakeFirewall>, max: usize) -> Grants {
        Grants::spawn(firewall.clone(), max, Arc::new(Metrics::new())).0
    }

    const LONG: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn concurrent_grants_share_one_transaction() {
        let firewall = Arc::new(FakeFirewall {
            delay: Duration::from_millis(20),
            ..FakeFirewall::default()
        });
        let grants = spawn(&firewall, 10);
        // The first grant occupies the firewall; the next three queue up behind it.
        let owner = grants.clone();
        let first = tokio::spawn(async move { owner.acquire(request("198.18.1.2", LONG)).await });
        firewall.entered.notified().await;
        let rest = futures_util::future::join_all(
            ["198.18.2.2", "198.18.3.2", "198.18.4.2"].map(|ip| grants.acquire(request(ip, LONG))),
        )
        .await;
        let first = first.await.unwrap();
        assert!(first.is_ok() && rest.iter().all(Result::is_ok));
        let changes = firewall.changes.lock().unwrap().clone();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[1].grant.len(), 3);
    }

    #[tokio::test]
    async fn a_shared_subnet_follows_its_latest_session_deadline() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 10);
        let short = request("198.18.5.2", Duration::from_secs(60));
        let long = request("198.18.5.3", Duration::from_secs(120));
        let (short_until, long_until) = (short.deadline, long.deadline);
        let first = grants.acquire(short).await.unwrap();
        let second = grants.acquire(long).await.unwrap();
        // A list is answered after the releases before it are committed.
        drop(second);
        grants.list().await;
        drop(first);
        grants.list().await;
        let changes = firewall.changes.lock().unwrap().clone();
        let net = subnet("198.18.5.2");
        let opened = Opening {
            subnet: net,
            until: short_until,
        };
        let longer = Opening {
            subnet: net,
            until: long_until,
        };
        assert_eq!(changes[0].grant, [opened]);
        assert_eq!(
            changes[1].refresh,
            [longer],
            "the later session extends the kernel's timeout"
        );
        assert_eq!(
            changes[2].refresh,
            [opened],
            "closing it brings the timeout back"
        );
        assert!(
            changes[2].revoke.is_empty(),
            "closing one must not cut the other"
        );
        assert_eq!(changes[3].revoke, [net]);
        assert_eq!(changes.len(), 4, "{changes:?}");
    }

    #[tokio::test]
    async fn a_failed_refresh_fails_only_the_newcomer() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 10);
        let first = grants
            .acquire(request("198.18.6.2", Duration::from_secs(60)))
            .await
            .unwrap();
        firewall
            .fail_grants
            .lock()
            .unwrap()
            .push(subnet("198.18.6.2"));
        let second = grants
            .acquire(request("198.18.6.3", Duration::from_secs(120)))
            .await;
        assert!(
            matches!(second, Err(AcquireError::Firewall(_))),
            "{second:?}"
        );
        let (live, _) = grants.list().await;
        assert_eq!(live.iter().map(|g| g.id).collect::<Vec<_>>(), [first.id()]);
        let changes = firewall.changes.lock().unwrap().clone();
        assert!(changes.iter().all(|c| c.revoke.is_empty()), "{changes:?}");
    }

    #[tokio::test]
    async fn a_bad_subnet_in_a_shared_transaction_fails_alone() {
        let firewall = Arc::new(FakeFirewall::default());
        firewall
            .fail_grants
            .lock()
            .unwrap()
            .push(subnet("198.18.9.2"));
        let grants = spawn(&firewall, 10);
        let (good, bad) = tokio::join!(
            grants.acquire(request("198.18.8.2", LONG)),
            grants.acquire(request("198.18.9.2", LONG))
        );
        assert!(good.is_ok());
        assert!(matches!(bad, Err(AcquireError::Firewall(_))));
        let (list, occupancy) = grants.list().await;
        assert_eq!(list.len(), 1, "the failed grant's slot is free again");
        assert_eq!(occupancy.stuck_revokes, 0);
    }

    #[tokio::test]
    async fn one_subnet_two_sessions_one_rule() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 10);
        let a = grants.acquire(request("192.0.2.1", LONG)).await.unwrap();
        let b = grants.acquire(request("192.0.2.2", LONG)).await.unwrap();
        drop(a);
        assert_eq!(grants.list().await.0.len(), 1);
        let changes = firewall.changes.lock().unwrap().clone();
        assert_eq!(changes[0].grant.len(), 1);
        assert!(
            changes
                .iter()
                .all(|c| c.revoke.is_empty() && c.grant.len() <= 1),
            "no revoke while b holds it, and only one opening: {changes:?}"
        );
        drop(b);
        assert!(grants.list().await.0.is_empty());
        let changes = firewall.changes.lock().unwrap().clone();
        assert_eq!(changes.last().unwrap().revoke, vec![subnet("192.0.2.1")]);
    }

    #[tokio::test]
    async fn max_clients_is_never_exceeded() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 3);
        let all = futures_util::future::join_all(
            (1..=10).map(|k| grants.acquire(request(&format!("198.18.{k}.2"), LONG))),
        )
        .await;
        assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(
            all.iter()
                .filter(|r| matches!(r, Err(AcquireError::Full(3))))
                .count(),
            7
        );
    }

    #[tokio::test]
    async fn a_failed_revoke_keeps_its_slot_until_a_retry_succeeds() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 1);
        let lease = grants.acquire(request("192.0.2.9", LONG)).await.unwrap();
        *firewall.fail_revokes.lock().unwrap() = true;
        drop(lease);
        let (_, occupancy) = grants.list().await;
        assert_eq!(occupancy.stuck_revokes, 1);
        assert!(matches!(
            grants.acquire(request("198.18.1.2", LONG)).await,
            Err(AcquireError::Full(1))
        ));
        *firewall.fail_revokes.lock().unwrap() = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while grants.list().await.1.stuck_revokes > 0 {
            assert!(std::time::Instant::now() < deadline, "the retry never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(grants.acquire(request("198.18.1.2", LONG)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_owner_ends_a_session_at_its_deadline_and_revokes_it() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 1);
        let mut lease = grants
            .acquire(request("192.0.2.9", Duration::from_secs(30)))
            .await
            .unwrap();
        let started = Instant::now();
        assert_eq!(lease.ended().await, EndReason::Deadline);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(grants.list().await.0.is_empty());
        assert_eq!(
            firewall.changes.lock().unwrap().last().unwrap().revoke,
            vec![subnet("192.0.2.9")]
        );
    }

    #[tokio::test]
    async fn revoke_by_ip_ends_every_session_of_the_subnet_after_the_rule_is_gone() {
        let firewall = Arc::new(FakeFirewall::default());
        let grants = spawn(&firewall, 5);
        let mut a = grants.acquire(request("192.0.2.1", LONG)).await.unwrap();
        let mut b = grants.acquire(request("192.0.2.200", LONG)).await.unwrap();
        let _other = grants.acquire(request("198.18.1.2", LONG)).await.unwrap();
        let ids = grants
            .revoke(Selector::Ip("192.0.2.77".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(ids, vec![a.id(), b.id()]);
        assert_eq!(
            firewall.changes.lock().unwrap().last().unwrap().revoke,
            vec![subnet("192.0.2.1")]
        );
        assert_eq!(a.ended().await, EndReason::Revoked);
        assert_eq!(b.ended().await, EndReason::Revoked);
        assert_eq!(grants.list().await.0.len(), 1);
    }
}
