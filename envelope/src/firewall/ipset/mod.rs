//! The `iptables+ipset` backend, the default where the kernel has ipset.
//!
//! The iptables guard is the same as the `iptables` backend's (own chains,
//! default-deny on `--device`, installed and removed with `iptables-restore` at
//! start-up and exit), but ENVELOPE-GRANTS holds only static rules that match
//! the envelope's kernel sets:
//!
//! ```text
//! envelope-v4, envelope-v6              hash:net   one member per granted /24 or /64
//! envelope-proxy-v4, envelope-proxy-v6  bitmap:port the proxy ports, while the family has a grant
//! ```
//!
//! Grants and revokes are set members added and deleted over one netlink socket
//! the daemon keeps open (`socket.rs`): no process per change, a few microseconds
//! each, many in one send. Every member carries a kernel timeout of its deadline
//! plus a margin, so the kernel closes every grant by itself even if the envelope
//! is killed and never restarted. A change is all or nothing: the kernel applies
//! members one by one, so what it took before a failure is rolled back here.

mod fault;
pub(crate) mod socket;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub use self::fault::NetlinkFault;
pub(crate) use self::fault::{FaultAction, FaultCounter};
pub use self::socket::{IpsetError, IpsetSocket};
use self::wire::{Element, Request, FAMILY_INET, FAMILY_INET6};
use super::iptables::rules;
use super::iptables::{IptablesConfig, IptablesFirewall};
use super::set_state::{self, Edits, FamilyState, SetState};
use super::{Change, Firewall, FirewallError, FwFuture, Subnet};
use super::{Family, PerFamily};
use crate::logging::chain;

/// Default timeout of a member added by hand without one (the envelope always
/// gives its own).
const DEFAULT_TIMEOUT_SECS: u32 = 3600;
/// Most members per net set.
const MAX_ELEMENTS: u32 = 65_536;

/// The hash:net set holding one family's granted subnets.
pub fn nets_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "envelope-v4",
        Family::V6 => "envelope-v6",
    }
}

/// The bitmap:port set holding the proxy ports while the family has a grant.
pub fn ports_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "envelope-proxy-v4",
        Family::V6 => "envelope-proxy-v6",
    }
}

/// Every set the envelope ever creates.
const ALL_SETS: [&str; 4] = [
    "envelope-v4",
    "envelope-v6",
    "envelope-proxy-v4",
    "envelope-proxy-v6",
];

fn nfproto(family: Family) -> u8 {
    match family {
        Family::V4 => FAMILY_INET,
        Family::V6 => FAMILY_INET6,
    }
}

/// Why the backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The kernel (or this namespace) has no usable ipset: fall back to rules.
    #[error("the kernel offers no usable ipset")]
    NoIpset(#[source] IpsetError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// The kernel's set-type revisions this backend creates sets with.
#[derive(Debug, Clone, Copy)]
struct Revisions {
    net_v4: u8,
    net_v6: u8,
    port: u8,
}

#[derive(Debug)]
pub struct IpsetFirewall {
    guard: IptablesFirewall,
    margin: Duration,
    revisions: Revisions,
    socket: Mutex<IpsetSocket>,
    state: Mutex<SetState>,
}

impl IpsetFirewall {
    /// Checks the iptables binaries, opens the netlink socket and asks the
    /// kernel for the set types. `NewError::NoIpset` means: use the `iptables`
    /// backend instead.
    pub async fn new(
        config: IptablesConfig,
        margin: Duration,
        fault: Option<NetlinkFault>,
    ) -> Result<IpsetFirewall, NewError> {
        let timeout = config.command_timeout;
        let guard = IptablesFirewall::guard_only(config).await?;
        let mut socket = IpsetSocket::open(timeout)
            .await
            .map_err(NewError::NoIpset)?
            .with_fault(fault);
        let revisions = Revisions {
            net_v4: socket
                .type_revision("hash:net", FAMILY_INET)
                .await
                .map_err(NewError::NoIpset)?,
            net_v6: socket
                .type_revision("hash:net", FAMILY_INET6)
                .await
                .map_err(NewError::NoIpset)?,
            port: socket
                .type_revision("bitmap:port", FAMILY_INET)
                .await
                .map_err(NewError::NoIpset)?,
        };
        Ok(IpsetFirewall {
            guard,
            margin,
            revisions,
            socket: Mutex::new(socket),
            state: Mutex::new(SetState::default()),
        })
    }

    fn has_proxy_ports(&self) -> bool {
        !self.guard.proxy_ports().is_empty()
    }

    /// Seconds the kernel keeps a member whose sessions need it until `until`.
    fn timeout(&self, until: Instant, now: Instant) -> u32 {
        super::set_state::kernel_timeout_secs(until, now, self.margin)
    }

    /// Replaces whatever sets a dead instance left with empty ones, then adds
    /// the static rules that match them. The guard's chains are already
    /// flushed, so no rule of ours references an old set.
    async fn install_sets(&self) -> Result<(), FirewallError> {
        let mut socket = self.socket.lock().await;
        for set in ALL_SETS {
            socket
                .destroy(set)
                .await
                .map_err(|e| failed(format!("destroy stale set {set}"), e))?;
        }
        let protocol = socket.protocol();
        for family in Family::ALL {
            let revision = match family {
                Family::V4 => self.revisions.net_v4,
                Family::V6 => self.revisions.net_v6,
            };
            let set = nets_set(family);
            socket
                .run_one(Request::create_nets(
                    protocol,
                    set,
                    nfproto(family),
                    revision,
                    DEFAULT_TIMEOUT_SECS,
                    MAX_ELEMENTS,
                ))
                .await
                .map_err(|e| failed(format!("create set {set}"), e))?;
            if self.has_proxy_ports() {
                let set = ports_set(family);
                socket
                    .run_one(Request::create_ports(
                        protocol,
                        set,
                        self.revisions.port,
                        DEFAULT_TIMEOUT_SECS,
                    ))
                    .await
                    .map_err(|e| failed(format!("create set {set}"), e))?;
            }
        }
        drop(socket);
        for family in Family::ALL {
            let ports = self.has_proxy_ports().then(|| ports_set(family));
            let lines = rules::set_rules(nets_set(family), ports);
            self.guard
                .runner()
                .restore(family, &rules::document(&lines), "install set rules")
                .await?;
        }
        Ok(())
    }

    /// The requests that apply `edits` (a subnet's new deadline, or `None` to
    /// close it) to one family that holds `before`, each with the request that
    /// undoes it; and the proxy ports' deadline afterwards. Only what changes is
    /// looked at, plus one pass for the family's latest deadline.
    fn plan(
        &self,
        family: Family,
        before: &FamilyState,
        edits: &Edits,
        now: Instant,
        protocol: u8,
    ) -> (Vec<(Request, Option<Request>)>, Option<Instant>) {
        let nets = nets_set(family);
        let net = |s: &Subnet| Element::Net(s.network(), s.prefix());
        let restore = |subnet: &Subnet, old: Option<Instant>| match old {
            Some(old) => Request::add(protocol, nets, net(subnet), self.timeout(old, now)),
            None => Request::del(protocol, nets, net(subnet)),
        };
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for (subnet, new) in edits {
            let old = before.members.get(subnet).copied();
            match (old, *new) {
                (old, Some(until)) if old != Some(until) => adds.push((
                    Request::add(protocol, nets, net(subnet), self.timeout(until, now)),
                    Some(restore(subnet, old)),
                )),
                (Some(old), None) => dels.push((
                    Request::del(protocol, nets, net(subnet)),
                    Some(restore(subnet, Some(old))),
                )),
                _ => {}
            }
        }
        let ports_until = before.ports_until_after(edits);
        if self.has_proxy_ports() && before.ports_until != ports_until {
            let set = ports_set(family);
            for &port in self.guard.proxy_ports() {
                let element = Element::Port(port);
                let undo = match before.ports_until {
                    Some(old) => Request::add(protocol, set, element, self.timeout(old, now)),
                    None => Request::del(protocol, set, element),
                };
                match ports_until {
                    Some(until) => adds.push((
                        Request::add(protocol, set, element, self.timeout(until, now)),
                        Some(undo),
                    )),
                    None => dels.push((Request::del(protocol, set, element), Some(undo))),
                }
            }
        }
        // Opening before closing: a subnet's member goes in before its ports.
        adds.extend(dels);
        (adds, ports_until)
    }
}

fn failed(operation: String, error: IpsetError) -> FirewallError {
    FirewallError::Failed {
        operation,
        message: error.to_string(),
    }
}

impl Firewall for IpsetFirewall {
    fn backend(&self) -> String {
        format!("iptables+ipset ({})", self.guard.mode())
    }

    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            *state = SetState::default();
            self.guard.setup().await?;
            if let Err(e) = self.install_sets().await {
                if let Err(undo) = self.guard.teardown().await {
                    tracing::error!(error = %chain(&undo), "removing the guard after a failed set-up");
                }
                let mut socket = self.socket.lock().await;
                for set in ALL_SETS {
                    let _ = socket.destroy(set).await;
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let edits = change.edits();
            let now = Instant::now();
            let mut socket = self.socket.lock().await;
            let protocol = socket.protocol();
            let mut plan = Vec::new();
            let mut ports_until = PerFamily::<Option<Instant>>::default();
            for family in Family::ALL {
                let (requests, ports) =
                    self.plan(family, state.get(family), edits.get(family), now, protocol);
                plan.extend(requests);
                *ports_until.family(family) = ports;
            }
            if plan.is_empty() {
                return Ok(());
            }
            let (requests, undos): (Vec<Request>, Vec<Option<Request>>) = plan.into_iter().unzip();
            let outcome = socket.run(requests).await;
            let first_error = match &outcome {
                Ok(results) => results
                    .iter()
                    .find_map(|r| r.as_ref().err())
                    .map(ToString::to_string),
                Err(e) => Some(e.to_string()),
            };
            let Some(message) = first_error else {
                set_state::record(&mut state, edits, ports_until);
                return Ok(());
            };
            // All or nothing: undo what the kernel took (or may have taken).
            let rollback: Vec<Request> = undos
                .into_iter()
                .enumerate()
                .filter(|(i, _)| match &outcome {
                    Ok(results) => results[*i].is_ok(),
                    Err(_) => true,
                })
                .filter_map(|(_, undo)| undo)
                .collect();
            match socket.run(rollback).await {
                Ok(results) => {
                    for e in results.into_iter().filter_map(Result::err) {
                        tracing::error!(error = %chain(&e), "rolling back a partly applied change");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %chain(&e), "rolling back a partly applied change")
                }
            }
            Err(FirewallError::Failed {
                operation: change.describe(),
                message,
            })
        })
    }

    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            // Rules first: a set a rule references cannot be destroyed.
            self.guard.teardown().await?;
            let mut socket = self.socket.lock().await;
            let mut first_error = None;
            for set in ALL_SETS {
                if let Err(e) = socket.destroy(set).await {
                    first_error.get_or_insert(failed(format!("destroy set {set}"), e));
                }
            }
            *state = SetState::default();
            first_error.map_or(Ok(()), Err)
        })
    }

    fn kernel_expiries(&self) -> FwFuture<'_, Option<BTreeMap<Subnet, Duration>>> {
        Box::pin(async move {
            let mut socket = self.socket.lock().await;
            let mut out = BTreeMap::new();
            for family in Family::ALL {
                let set = nets_set(family);
                let members = socket
                    .list(set)
                    .await
                    .map_err(|e| failed(format!("list set {set}"), e))?;
                for (element, timeout) in members {
                    if let (Element::Net(ip, prefix), Some(secs)) = (element, timeout) {
                        if let Some(subnet) = exact_subnet(ip, prefix) {
                            out.insert(subnet, Duration::from_secs(u64::from(secs)));
                        }
                    }
                }
            }
            Ok(Some(out))
        })
    }
}

/// The grant subnet a listed member stands for, if it is exactly one.
fn exact_subnet(ip: IpAddr, prefix: u8) -> Option<Subnet> {
    let subnet = Subnet::of_client(ip);
    (subnet.network() == ip && subnet.prefix() == prefix).then_some(subnet)
}

/// `--cleanup`: destroys every set the envelope ever creates (after the
/// iptables clean-up has removed the rules that reference them). A kernel
/// without ipset has nothing to clean.
pub async fn cleanup(timeout: Duration) -> Result<(), FirewallError> {
    let Ok(mut socket) = IpsetSocket::open(timeout).await else {
        return Ok(());
    };
    for set in ALL_SETS {
        socket
            .destroy(set)
            .await
            .map_err(|e| failed(format!("destroy set {set}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_fit_the_kernel_limit() {
        for set in ALL_SETS {
            assert!(set.len() <= wire::MAX_NAME_LEN, "{set}");
        }
    }

    #[test]
    fn listed_members_map_back_to_grant_subnets_only() {
        let v4: IpAddr = "192.0.2.0".parse().unwrap();
        assert_eq!(exact_subnet(v4, 24), Some(Subnet::of_client(v4)));
        assert_eq!(exact_subnet(v4, 25), None);
        assert_eq!(exact_subnet("192.0.2.7".parse().unwrap(), 24), None);
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(exact_subnet(v6, 64), Some(Subnet::of_client(v6)));
    }
}
