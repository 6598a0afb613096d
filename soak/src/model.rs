//! The soak's model of what must be true: live sessions and their deadlines,
//! what a SIGKILLed instance left in the kernel, tampering done by hand, the
//! envelope's static lines and everything foreign. From it, at any instant,
//! the expected state of every subnet, proxy port and source, with an
//! "either" window around each deadline and kernel expiry so that timing on a
//! slow machine is never mistaken for a bug.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Ws;
use crate::lab::MARGIN_SECS;

mod expect;

/// Before its deadline minus this a session must still be open (generous: one
/// read of the three views takes a few hundred milliseconds here).
pub const EARLY: Duration = Duration::from_millis(800);
/// After its deadline plus this the envelope must have closed it (SPEC: within a second).
pub const LATE: Duration = Duration::from_millis(1500);
/// Kernel expiry lands within a second after deadline + margin (whole-second
/// timeouts, rounded up); allow one more second of slack.
const KERNEL_LATE: Duration = Duration::from_millis(2000);

/// An expectation: must hold, must not hold, or may go either way right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    Either,
}

impl Tri {
    pub fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::No, Tri::No) => Tri::No,
            _ => Tri::Either,
        }
    }

    pub fn and_not(self, cut: bool) -> Tri {
        if cut {
            Tri::No
        } else {
            self
        }
    }

    pub fn allows(self, value: bool) -> bool {
        match self {
            Tri::Yes => value,
            Tri::No => !value,
            Tri::Either => true,
        }
    }
}

/// The grant subnet of a client address, as the admin API and `ipset save` print it.
pub fn subnet_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

pub fn family(subnet: &str) -> usize {
    usize::from(subnet.contains(':'))
}

pub struct Session {
    pub id: u64,
    pub source: IpAddr,
    pub subnet: String,
    pub deadline: Instant,
    pub ws: Option<Ws>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Where the envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Up,
    /// SIGKILLed: its rules and members stay until their kernel timeouts.
    Killed,
    /// Exited after SIGTERM: nothing of it may remain.
    Down,
}

/// A member a SIGKILLed instance left behind.
#[derive(Debug, Clone, Copy)]
pub struct Orphan {
    /// Latest deadline of its sessions: the kernel drops it at this + margin.
    pub until: Instant,
    /// Whether the dead instance certainly still held it (no session was in
    /// its either window, and no hand deleted it).
    pub held: Tri,
}

#[derive(Debug)]
pub struct Model {
    pub phase: Phase,
    pub sessions: Vec<Session>,
    /// Members deleted by hand: subnet → its latest deadline then. The envelope
    /// re-adds a member only when that subnet's latest deadline changes.
    pub tampered: BTreeMap<String, Instant>,
    pub orphans: BTreeMap<String, Orphan>,
    /// The set rule deleted by hand, per family (v4, v6): grants of that family
    /// stop working until the next start (the envelope does not repair rules).
    pub rule_cut: [Option<String>; 2],
    /// The nftables backend's whole table deleted by hand: nothing guards the
    /// device and grants fail until the next start.
    pub table_cut: bool,
    /// The envelope's static lines when it is up (dump order), from the first start.
    pub static_lines: Vec<String>,
    /// Everything not the envelope's in the three dumps (dump order).
    pub foreign: Vec<String>,
}

impl Model {
    pub fn new(foreign: Vec<String>) -> Model {
        Model {
            phase: Phase::Down,
            sessions: Vec::new(),
            tampered: BTreeMap::new(),
            orphans: BTreeMap::new(),
            rule_cut: [None, None],
            table_cut: false,
            static_lines: Vec::new(),
            foreign,
        }
    }

    /// Whether a running envelope still holds a session right now.
    pub fn session_state(&self, s: &Session, now: Instant) -> Tri {
        if now + EARLY < s.deadline {
            Tri::Yes
        } else if now > s.deadline + LATE {
            Tri::No
        } else {
            Tri::Either
        }
    }

    /// Drops sessions the envelope has certainly ended by their deadline, and
    /// orphans the kernel has certainly expired.
    pub fn prune(&mut self, now: Instant) {
        let gone: Vec<usize> = (0..self.sessions.len())
            .filter(|&i| self.session_state(&self.sessions[i], now) == Tri::No)
            .collect();
        for i in gone.into_iter().rev() {
            self.sessions.remove(i);
        }
        self.orphans
            .retain(|_, o| now <= kernel_expiry(o.until) + KERNEL_LATE);
        let live: Vec<String> = self.sessions.iter().map(|s| s.subnet.clone()).collect();
        self.tampered.retain(|subnet, _| live.contains(subnet));
    }

    pub fn yes_count(&self, now: Instant) -> usize {
        self.sessions
            .iter()
            .filter(|s| self.session_state(s, now) == Tri::Yes)
            .count()
    }

    pub fn either_count(&self, now: Instant) -> usize {
        self.sessions
            .iter()
            .filter(|s| self.session_state(s, now) == Tri::Either)
            .count()
    }

    /// The subnet's latest session deadline: the kernel member's deadline.
    pub fn latest(&self, subnet: &str) -> Option<Instant> {
        self.sessions
            .iter()
            .filter(|s| s.subnet == subnet)
            .map(|s| s.deadline)
            .max()
    }

    /// Whether any of the subnet's sessions is in its either window.
    fn unsettled(&self, subnet: &str, now: Instant) -> bool {
        self.sessions
            .iter()
            .any(|s| s.subnet == subnet && self.session_state(s, now) == Tri::Either)
    }

    /// Whether the subnet's sessions keep it granted (ignoring hand deletion).
    pub fn held(&self, subnet: &str, now: Instant) -> Tri {
        self.sessions
            .iter()
            .filter(|s| s.subnet == subnet)
            .fold(Tri::No, |acc, s| acc.or(self.session_state(s, now)))
    }

    /// While a hand-deleted member is still missing (its subnet's latest
    /// deadline has not moved since), whether it is in the kernel: no once
    /// settled, either way while one of its sessions is in its window (the
    /// envelope may be re-adding or dropping it). `None` when not hand-deleted.
    fn hand_deleted(&self, subnet: &str, now: Instant) -> Option<Tri> {
        let at = self.tampered.get(subnet)?;
        (self.latest(subnet) == Some(*at)).then(|| {
            if self.unsettled(subnet, now) {
                Tri::Either
            } else {
                Tri::No
            }
        })
    }

    /// Records a SIGKILL: what the dead instance held stays in the kernel.
    pub fn killed(&mut self, now: Instant) {
        let subnets: Vec<String> = self.sessions.iter().map(|s| s.subnet.clone()).collect();
        self.orphans.clear();
        for subnet in subnets {
            let held = self.hand_deleted(&subnet, now).unwrap_or_else(|| {
                if self.unsettled(&subnet, now) {
                    Tri::Either
                } else {
                    self.held(&subnet, now)
                }
            });
            let until = self.latest(&subnet).unwrap();
            self.orphans.insert(subnet, Orphan { until, held });
        }
        self.sessions.clear();
        self.tampered.clear();
        self.phase = Phase::Killed;
    }

    /// Records a fresh start: set-up replaces whatever a dead instance left.
    pub fn started(&mut self) {
        self.sessions.clear();
        self.orphans.clear();
        self.tampered.clear();
        self.rule_cut = [None, None];
        self.table_cut = false;
        self.phase = Phase::Up;
    }
}

/// When the kernel drops a member whose latest session deadline is `until`.
fn kernel_expiry(until: Instant) -> Instant {
    until + Duration::from_secs(MARGIN_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, source: &str, deadline: Instant) -> Session {
        let source: IpAddr = source.parse().unwrap();
        Session {
            id,
            source,
            subnet: subnet_of(source),
            deadline,
            ws: None,
        }
    }

    fn up_with(sessions: Vec<Session>) -> Model {
        let mut model = Model::new(Vec::new());
        model.started();
        model.sessions = sessions;
        model
    }

    const SUBNET: &str = "192.0.2.0/24";

    #[test]
    fn a_hand_deleted_member_is_missing_once_settled_and_either_in_the_window() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut model = up_with(vec![session(1, "192.0.2.7", deadline)]);
        model.tampered.insert(SUBNET.into(), deadline);
        assert_eq!(model.member(SUBNET, now), Tri::No);
        assert_eq!(model.kernel_remaining(SUBNET, now), Some(0.0));
        assert_eq!(
            model.service_reach("192.0.2.7".parse().unwrap(), now),
            Tri::No
        );

        let in_window = deadline - EARLY / 2;
        assert_eq!(model.member(SUBNET, in_window), Tri::Either);
        assert_eq!(model.kernel_remaining(SUBNET, in_window), None);

        // A later session moves the subnet's deadline: the envelope re-adds it.
        let later = now + Duration::from_secs(20);
        model.sessions.push(session(2, "192.0.2.8", later));
        assert_eq!(model.member(SUBNET, now), Tri::Yes);
        let remaining = model.kernel_remaining(SUBNET, now).unwrap();
        assert!(
            (remaining - (20 + MARGIN_SECS) as f64).abs() < 0.01,
            "{remaining}"
        );
    }

    #[test]
    fn a_sigkill_leaves_members_until_deadline_plus_margin() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let mut model = up_with(vec![
            session(1, "192.0.2.7", deadline),
            session(2, "198.18.0.7", deadline),
        ]);
        model.tampered.insert("198.18.0.0/24".into(), deadline);
        model.killed(now);

        assert_eq!(model.phase, Phase::Killed);
        assert!(model.sessions.is_empty());
        assert_eq!(model.member(SUBNET, now), Tri::Yes);
        assert_eq!(model.member("198.18.0.0/24", now), Tri::No);
        // The hand-deleted member does not take the proxy ports with it.
        assert_eq!(model.ports(0, now), Tri::Yes);

        let expiry = deadline + Duration::from_secs(MARGIN_SECS);
        assert_eq!(model.member(SUBNET, expiry), Tri::Either);
        assert_eq!(model.member(SUBNET, expiry + KERNEL_LATE / 2), Tri::Either);
        let gone = expiry + KERNEL_LATE + Duration::from_millis(1);
        assert_eq!(model.member(SUBNET, gone), Tri::No);

        model.prune(expiry + KERNEL_LATE);
        assert!(model.orphans.contains_key(SUBNET));
        model.prune(gone);
        assert!(model.orphans.is_empty());
    }

    #[test]
    fn a_sigkill_in_a_sessions_window_leaves_its_member_either_way() {
        let now = Instant::now();
        let mut model = up_with(vec![
            session(1, "192.0.2.7", now + EARLY / 2),
            session(2, "192.0.2.8", now + Duration::from_secs(10)),
        ]);
        assert_eq!(model.member(SUBNET, now), Tri::Yes);
        model.killed(now);
        assert_eq!(model.member(SUBNET, now), Tri::Either);
    }
}
