//! The grant table: live sessions, the subnets they hold (with the deadlines of
//! their holders), the deadline queue, and which subnets may differ from the
//! kernel. Plain synchronous state: the owner loop drives it, the commit step
//! asks it for the next change and tells it what the kernel accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{AcquireError, EndReason, GrantId, GrantInfo, GrantRequest, Occupancy, Selector};
use crate::firewall::{Change, FirewallError, Opening, Subnet};

/// The longest `Retry-After` a full envelope gives.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// One live session.
#[derive(Debug)]
pub(super) struct Session {
    pub info: GrantInfo,
    pub deadline: Instant,
    /// Set once the session holds its lease; tells it why the owner ended it.
    pub end: Option<oneshot::Sender<EndReason>>,
}

#[derive(Debug, Default)]
struct SubnetState {
    /// The subnet's live sessions by deadline: the last one is how long the
    /// kernel must keep it open.
    holders: BTreeSet<(Instant, GrantId)>,
    installed: bool,
    /// The deadline the kernel's copy was opened or last refreshed for.
    until: Option<Instant>,
}

impl SubnetState {
    fn stuck(&self) -> bool {
        self.holders.is_empty() && self.installed
    }
}

/// Which subnets of a change the firewall refused, each with its cause.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub failed_grants: BTreeMap<Subnet, Arc<FirewallError>>,
    pub failed_revokes: BTreeMap<Subnet, Arc<FirewallError>>,
}

impl Outcome {
    /// Whether the change of `subnet` failed.
    pub fn failed(&self, subnet: &Subnet) -> bool {
        self.failed_grants.contains_key(subnet) || self.failed_revokes.contains_key(subnet)
    }

    /// Records that a change of one subnet failed: an opening or refresh
    /// counts as a failed grant, a close as a failed revoke.
    pub fn record(&mut self, single: &Change, error: Arc<FirewallError>) {
        for opening in single.grant.iter().chain(&single.refresh) {
            self.failed_grants.insert(opening.subnet, error.clone());
        }
        for &subnet in &single.revoke {
            self.failed_revokes.insert(subnet, error.clone());
        }
    }
}

#[derive(Debug)]
pub(super) struct Table {
    max_clients: usize,
    sessions: HashMap<GrantId, Session>,
    subnets: HashMap<Subnet, SubnetState>,
    deadlines: BTreeSet<(Instant, GrantId)>,
    /// Subnets whose wanted state may differ from the kernel's.
    touched: BTreeSet<Subnet>,
    next_id: GrantId,
    shutting_down: bool,
}

impl Table {
    pub fn new(max_clients: usize) -> Table {
        Table {
            max_clients,
            sessions: HashMap::new(),
            subnets: HashMap::new(),
            deadlines: BTreeSet::new(),
            touched: BTreeSet::new(),
            next_id: 1,
            shutting_down: false,
        }
    }

    /// Takes a slot for `request`; a stuck revoke keeps its slot too.
    pub fn admit(
        &mut self,
        request: GrantRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Result<GrantId, AcquireError> {
        if self.shutting_down {
            return Err(AcquireError::ShuttingDown);
        }
        let used = self.occupancy();
        if used.sessions + used.stuck_revokes >= self.max_clients {
            return Err(AcquireError::Full {
                max: self.max_clients,
                retry_after: self.first_free(now),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let subnet = Subnet::of_client(request.peer);
        let info = GrantInfo {
            id,
            ip: request.peer.to_canonical(),
            subnet,
            subject: request.subject,
            monitoring: request.monitoring,
            started: wall,
            deadline: wall + request.deadline.saturating_duration_since(now),
            kernel_remaining: None,
        };
        let state = self.subnets.entry(subnet).or_default();
        state.holders.insert((request.deadline, id));
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
        Ok(id)
    }

    /// When a slot should be free again: at the earliest held deadline, told
    /// in whole seconds between 1 and [`MAX_RETRY_AFTER`] (a stuck revoke's slot
    /// comes back with a retry, soon).
    fn first_free(&self, now: Instant) -> Duration {
        let wait = self
            .deadlines
            .first()
            .map_or(Duration::ZERO, |(at, _)| at.saturating_duration_since(now));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Duration::from_secs(secs.clamp(1, MAX_RETRY_AFTER.as_secs()))
    }

    /// Forgets a session and marks its subnet for the next change.
    pub fn remove(&mut self, id: GrantId) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.deadlines.remove(&(session.deadline, id));
        if let Some(state) = self.subnets.get_mut(&session.info.subnet) {
            state.holders.remove(&(session.deadline, id));
        }
        self.touched.insert(session.info.subnet);
        Some(session)
    }

    pub fn session_mut(&mut self, id: GrantId) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    /// The sessions `selector` names, by id.
    pub fn select(&self, selector: Selector) -> Vec<(GrantId, Subnet)> {
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
        chosen
    }

    /// Removes every session whose deadline is `now` or earlier.
    pub fn expire(&mut self, now: Instant) -> Vec<Session> {
        let mut ended = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            ended.extend(self.remove(id));
        }
        ended
    }

    /// Refuses new grants, removes every session and marks every open subnet,
    /// stuck ones included: nothing may outlive the envelope.
    pub fn shut_down(&mut self) -> Vec<Session> {
        self.shutting_down = true;
        let ids: Vec<GrantId> = self.sessions.keys().copied().collect();
        let ended = ids.into_iter().filter_map(|id| self.remove(id)).collect();
        let open = self
            .subnets
            .iter()
            .filter(|(_, s)| s.installed)
            .map(|(n, _)| *n);
        self.touched.extend(open);
        ended
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Marks every subnet whose revoke failed, so the next change tries again.
    pub fn retry_stuck(&mut self) {
        let stuck = self
            .subnets
            .iter()
            .filter(|(_, s)| s.stuck())
            .map(|(n, _)| *n);
        self.touched.extend(stuck);
    }

    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            sessions: self.sessions.len(),
            stuck_revokes: self.subnets.values().filter(|s| s.stuck()).count(),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    pub fn has_pending_change(&self) -> bool {
        !self.touched.is_empty()
    }

    /// The change that brings the kernel in line with the table: open new
    /// subnets, move an open one's deadline to its latest holder's, close those
    /// no session holds. Subnets that were never installed and are no longer
    /// held are simply forgotten.
    pub fn plan(&mut self) -> Change {
        let mut change = Change::default();
        for subnet in std::mem::take(&mut self.touched) {
            let Some(state) = self.subnets.get(&subnet) else {
                continue;
            };
            let wanted = state.holders.last().map(|(until, _)| *until);
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
        change
    }

    /// Records what the kernel now holds after `change` was applied, except the
    /// subnets in `outcome`, which stay as they were.
    pub fn settle(&mut self, change: &Change, outcome: &Outcome) {
        for opening in change.grant.iter().chain(&change.refresh) {
            if !outcome.failed_grants.contains_key(&opening.subnet) {
                let state = self.subnets.entry(opening.subnet).or_default();
                state.installed = true;
                state.until = Some(opening.until);
            }
        }
        for subnet in &change.revoke {
            if !outcome.failed_revokes.contains_key(subnet) {
                self.subnets.remove(subnet);
            }
        }
    }

    /// Every live grant, by id.
    pub fn snapshot(&self) -> Vec<GrantInfo> {
        let mut list: Vec<GrantInfo> = self.sessions.values().map(|s| s.info.clone()).collect();
        list.sort_by_key(|g| g.id);
        list
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;

    fn request(ip: &str, deadline: Instant) -> GrantRequest {
        GrantRequest {
            peer: ip.parse::<IpAddr>().unwrap(),
            subject: "ndt".into(),
            monitoring: false,
            deadline,
        }
    }

    fn subnet(ip: &str) -> Subnet {
        Subnet::of_client(ip.parse().unwrap())
    }

    fn at(now: Instant, secs: u64) -> Instant {
        now + Duration::from_secs(secs)
    }

    fn failure() -> Arc<FirewallError> {
        Arc::new(FirewallError::Failed {
            operation: "test".into(),
            message: "injected".into(),
        })
    }

    /// Admits `ip` until `now + secs` and commits the change as if the kernel took it.
    fn granted(table: &mut Table, ip: &str, now: Instant, secs: u64) -> GrantId {
        let id = table
            .admit(request(ip, at(now, secs)), now, SystemTime::now())
            .unwrap();
        let change = table.plan();
        table.settle(&change, &Outcome::default());
        id
    }

    #[test]
    fn a_new_subnet_is_opened_until_its_sessions_deadline() {
        let now = Instant::now();
        let mut table = Table::new(10);
        table
            .admit(request("192.0.2.7", at(now, 60)), now, SystemTime::now())
            .unwrap();
        let change = table.plan();
        assert_eq!(
            change.grant,
            [Opening {
                subnet: subnet("192.0.2.7"),
                until: at(now, 60)
            }]
        );
        assert!(change.refresh.is_empty() && change.revoke.is_empty());
        table.settle(&change, &Outcome::default());
        assert!(table.plan().is_empty(), "nothing left to do once settled");
    }

    #[test]
    fn a_shared_subnet_is_refreshed_to_its_latest_holder_and_closed_by_its_last() {
        let now = Instant::now();
        let mut table = Table::new(10);
        let short = granted(&mut table, "192.0.2.1", now, 60);
        let long = table
            .admit(request("192.0.2.2", at(now, 120)), now, SystemTime::now())
            .unwrap();
        let net = subnet("192.0.2.1");
        let change = table.plan();
        assert!(change.grant.is_empty());
        assert_eq!(
            change.refresh,
            [Opening {
                subnet: net,
                until: at(now, 120)
            }]
        );
        table.settle(&change, &Outcome::default());
        table.remove(long).unwrap();
        let change = table.plan();
        assert_eq!(
            change.refresh,
            [Opening {
                subnet: net,
                until: at(now, 60)
            }],
            "the remaining holder's deadline"
        );
        assert!(change.revoke.is_empty());
        table.settle(&change, &Outcome::default());
        table.remove(short).unwrap();
        assert_eq!(table.plan().revoke, [net]);
    }

    #[test]
    fn the_slot_cap_counts_stuck_revokes() {
        let now = Instant::now();
        let mut table = Table::new(1);
        let id = granted(&mut table, "192.0.2.9", now, 60);
        table.remove(id).unwrap();
        let change = table.plan();
        let mut outcome = Outcome::default();
        outcome
            .failed_revokes
            .insert(subnet("192.0.2.9"), failure());
        table.settle(&change, &outcome);
        assert_eq!(
            table.occupancy(),
            Occupancy {
                sessions: 0,
                stuck_revokes: 1
            }
        );
        let refused = table.admit(request("198.18.1.2", at(now, 60)), now, SystemTime::now());
        assert!(
            matches!(refused, Err(AcquireError::Full { max: 1, .. })),
            "{refused:?}"
        );
        assert!(
            table.plan().is_empty(),
            "a stuck subnet waits for its retry"
        );
        table.retry_stuck();
        let retry = table.plan();
        assert_eq!(retry.revoke, [subnet("192.0.2.9")]);
        table.settle(&retry, &Outcome::default());
        assert_eq!(table.occupancy().stuck_revokes, 0);
        assert!(table
            .admit(request("198.18.1.2", at(now, 60)), now, SystemTime::now())
            .is_ok());
    }

    #[test]
    fn a_failed_grant_leaves_the_subnet_uninstalled() {
        let now = Instant::now();
        let mut table = Table::new(10);
        let id = table
            .admit(request("192.0.2.3", at(now, 60)), now, SystemTime::now())
            .unwrap();
        let change = table.plan();
        let mut outcome = Outcome::default();
        outcome.failed_grants.insert(subnet("192.0.2.3"), failure());
        table.settle(&change, &outcome);
        table.remove(id).unwrap();
        assert!(
            table.plan().is_empty(),
            "nothing was installed, so nothing is revoked"
        );
        assert_eq!(table.occupancy().stuck_revokes, 0);
    }

    #[test]
    fn expire_removes_exactly_the_sessions_due() {
        let now = Instant::now();
        let mut table = Table::new(10);
        let early = granted(&mut table, "192.0.2.1", now, 30);
        let late = granted(&mut table, "198.18.1.1", now, 90);
        assert_eq!(table.next_deadline(), Some(at(now, 30)));
        assert!(table.expire(at(now, 29)).is_empty());
        let ended: Vec<GrantId> = table
            .expire(at(now, 30))
            .iter()
            .map(|s| s.info.id)
            .collect();
        assert_eq!(ended, [early]);
        assert_eq!(table.next_deadline(), Some(at(now, 90)));
        assert_eq!(
            table.snapshot().iter().map(|g| g.id).collect::<Vec<_>>(),
            [late]
        );
    }

    #[test]
    fn select_by_ip_takes_every_session_of_its_subnet() {
        let now = Instant::now();
        let mut table = Table::new(10);
        let a = granted(&mut table, "192.0.2.1", now, 60);
        let b = granted(&mut table, "192.0.2.200", now, 60);
        let c = granted(&mut table, "198.18.1.2", now, 60);
        let net = subnet("192.0.2.1");
        assert_eq!(
            table.select(Selector::Ip("192.0.2.77".parse().unwrap())),
            [(a, net), (b, net)]
        );
        assert_eq!(table.select(Selector::Id(c)).len(), 1);
        assert_eq!(table.select(Selector::All).len(), 3);
        assert!(table.select(Selector::Id(999)).is_empty());
    }

    #[test]
    fn shutdown_ends_everything_and_closes_stuck_subnets_too() {
        let now = Instant::now();
        let mut table = Table::new(10);
        granted(&mut table, "192.0.2.1", now, 60);
        let gone = granted(&mut table, "198.18.1.2", now, 60);
        table.remove(gone).unwrap();
        let change = table.plan();
        let mut outcome = Outcome::default();
        outcome
            .failed_revokes
            .insert(subnet("198.18.1.2"), failure());
        table.settle(&change, &outcome);
        assert_eq!(table.shut_down().len(), 1);
        let mut closing = table.plan().revoke;
        closing.sort();
        assert_eq!(closing, [subnet("192.0.2.1"), subnet("198.18.1.2")]);
        let refused = table.admit(request("203.0.113.1", at(now, 60)), now, SystemTime::now());
        assert!(matches!(refused, Err(AcquireError::ShuttingDown)));
    }

    #[test]
    fn the_wall_clock_deadline_matches_the_monotonic_one() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut table = Table::new(10);
        table
            .admit(request("::ffff:192.0.2.5", at(now, 45)), now, wall)
            .unwrap();
        let info = &table.snapshot()[0];
        assert_eq!(info.deadline, wall + Duration::from_secs(45));
        assert_eq!(info.ip, "192.0.2.5".parse::<IpAddr>().unwrap(), "canonical");
    }
}
