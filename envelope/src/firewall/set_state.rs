//! What a set-based backend (`iptables+ipset`, `nftables`) believes its
//! kernel sets hold, family by family: each granted subnet with the deadline
//! its kernel timeout was set from, and the proxy ports' deadline. Both
//! backends plan a change against it and record the change only once the
//! kernel has taken all of it.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::{Family, PerFamily, Subnet};

/// A subnet's new deadline, or `None` to close it: one family's part of a change.
pub type Edits = BTreeMap<Subnet, Option<Instant>>;

/// What the kernel holds, as far as the backend knows.
pub type SetState = PerFamily<FamilyState>;

#[derive(Debug, Default, Clone)]
pub struct FamilyState {
    /// Granted subnets and the deadline their kernel timeout was set from.
    pub members: BTreeMap<Subnet, Instant>,
    /// The deadline the proxy ports' timeout was set from, while any grant is open.
    pub ports_until: Option<Instant>,
}

impl FamilyState {
    /// The family's latest deadline once `edits` apply (`None`: no grant
    /// left), which the proxy ports follow. Only what `edits` touches is
    /// looked at, plus one pass over the members.
    pub fn ports_until_after(&self, edits: &Edits) -> Option<Instant> {
        let untouched = self
            .members
            .iter()
            .filter(|(subnet, _)| !edits.contains_key(*subnet))
            .map(|(_, until)| *until);
        untouched.chain(edits.values().flatten().copied()).max()
    }
}

/// The longest timeout the kernel keeps for a set member or element, in
/// seconds; it silently caps longer ones.
pub const MAX_TIMEOUT_SECS: u32 = 2_147_482;

/// The kernel timeout of a member whose sessions need it until `until`:
/// what is left plus `margin`, in whole seconds rounded up, at least one and
/// at most [`MAX_TIMEOUT_SECS`]. Both set backends give their members this.
pub fn kernel_timeout_secs(until: Instant, now: Instant, margin: std::time::Duration) -> u32 {
    let left = until.saturating_duration_since(now) + margin;
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.clamp(1, u64::from(MAX_TIMEOUT_SECS)) as u32
}

/// Records a change the kernel took whole: each family's `edits` and its
/// proxy ports' new deadline.
pub fn record(
    state: &mut SetState,
    edits: PerFamily<Edits>,
    ports_until: PerFamily<Option<Instant>>,
) {
    for (family, edits, ports_until) in [
        (Family::V4, edits.v4, ports_until.v4),
        (Family::V6, edits.v6, ports_until.v6),
    ] {
        let held = state.family(family);
        for (subnet, until) in edits {
            match until {
                Some(until) => held.members.insert(subnet, until),
                None => held.members.remove(&subnet),
            };
        }
        held.ports_until = ports_until;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn subnet(client: &str) -> Subnet {
        Subnet::of_client(client.parse().unwrap())
    }

    #[test]
    fn the_proxy_ports_follow_the_latest_deadline_left() {
        let now = Instant::now();
        let (a, b) = (subnet("192.0.2.1"), subnet("198.18.0.1"));
        let mut state = SetState::default();
        let opened: Edits = [(a, Some(now + Duration::from_secs(30)))].into();
        let ports = state.v4.ports_until_after(&opened);
        assert_eq!(ports, Some(now + Duration::from_secs(30)));
        record(
            &mut state,
            PerFamily {
                v4: opened,
                v6: Edits::new(),
            },
            PerFamily {
                v4: ports,
                v6: None,
            },
        );

        let later: Edits = [(b, Some(now + Duration::from_secs(60)))].into();
        assert_eq!(
            state.v4.ports_until_after(&later),
            Some(now + Duration::from_secs(60))
        );
        let closed: Edits = [(a, None)].into();
        assert_eq!(state.v4.ports_until_after(&closed), None);
        record(
            &mut state,
            PerFamily {
                v4: closed,
                v6: Edits::new(),
            },
            PerFamily::default(),
        );
        assert!(state.v4.members.is_empty());
        assert_eq!(state.v4.ports_until, None);
    }
}
