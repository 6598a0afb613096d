//! What the kernel and the network should show right now, read off the
//! model: each subnet's member, the proxy ports, reachability, kernel
//! timeouts and the envelope's static lines (none of them while the nftables
//! table is deleted by hand: then nothing guards the device).

use std::net::IpAddr;

use tokio::time::Instant;

use super::{family, kernel_expiry, subnet_of, Model, Phase, Tri, EARLY, KERNEL_LATE};

impl Model {
    /// Whether the kernel set holds the subnet's member right now.
    pub fn member(&self, subnet: &str, now: Instant) -> Tri {
        if self.table_cut {
            return Tri::No;
        }
        match self.phase {
            Phase::Down => Tri::No,
            Phase::Up => self
                .hand_deleted(subnet, now)
                .unwrap_or_else(|| self.held(subnet, now)),
            Phase::Killed => self
                .orphans
                .get(subnet)
                .map_or(Tri::No, |o| kernel_state(o.until, o.held, now)),
        }
    }

    /// Whether the family's proxy-port members are in the kernel right now.
    pub fn ports(&self, family_index: usize, now: Instant) -> Tri {
        if self.table_cut {
            return Tri::No;
        }
        match self.phase {
            Phase::Down => Tri::No,
            Phase::Up => self
                .sessions
                .iter()
                .filter(|s| family(&s.subnet) == family_index)
                .fold(Tri::No, |acc, s| acc.or(self.session_state(s, now))),
            Phase::Killed => self
                .orphans
                .iter()
                .filter(|(subnet, _)| family(subnet) == family_index)
                // A hand-deleted member does not take the ports with it.
                .fold(Tri::No, |acc, (_, o)| {
                    acc.or(kernel_state(
                        o.until,
                        if o.held == Tri::No { Tri::Yes } else { o.held },
                        now,
                    ))
                }),
        }
    }

    /// Whether `source` reaches the service port right now.
    pub fn service_reach(&self, source: IpAddr, now: Instant) -> Tri {
        if self.phase == Phase::Down || self.table_cut {
            return Tri::Yes;
        }
        let subnet = subnet_of(source);
        let fam = family(&subnet);
        self.member(&subnet, now)
            .and_not(self.rule_cut[fam].is_some())
    }

    /// Whether the family's proxy port is reachable (from any source) right now.
    pub fn proxy_reach(&self, family_index: usize, now: Instant) -> Tri {
        if self.phase == Phase::Down || self.table_cut {
            return Tri::Yes;
        }
        self.ports(family_index, now)
    }

    /// The kernel timeout (seconds left) a member should show, when settled.
    pub fn member_timeout(&self, subnet: &str, now: Instant) -> Option<f64> {
        let until = match self.phase {
            Phase::Up if !self.unsettled(subnet, now) => self.latest(subnet)?,
            Phase::Killed => self.orphans.get(subnet)?.until,
            _ => return None,
        };
        Some(
            kernel_expiry(until)
                .saturating_duration_since(now)
                .as_secs_f64(),
        )
    }

    /// Expected `kernel_remaining_seconds` of a listed grant, when settled.
    pub fn kernel_remaining(&self, subnet: &str, now: Instant) -> Option<f64> {
        if self.table_cut {
            return Some(0.0);
        }
        if let Some(missing) = self.hand_deleted(subnet, now) {
            return (missing == Tri::No).then_some(0.0);
        }
        self.member_timeout(subnet, now)
    }

    /// The static lines expected in the kernel now.
    pub fn expected_static(&self) -> Vec<String> {
        if self.phase == Phase::Down || self.table_cut {
            return Vec::new();
        }
        let mut lines = self.static_lines.clone();
        for cut in self.rule_cut.iter().flatten() {
            if let Some(at) = lines.iter().position(|l| l == cut) {
                lines.remove(at);
            }
        }
        lines
    }
}

/// A member with a kernel timeout: held until `until` + margin, then gone.
fn kernel_state(until: Instant, held: Tri, now: Instant) -> Tri {
    let expiry = kernel_expiry(until);
    if held == Tri::No || now > expiry + KERNEL_LATE {
        Tri::No
    } else if now + EARLY < expiry {
        held
    } else {
        Tri::Either
    }
}
