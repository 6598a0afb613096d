//! The `nftables` backend (`--firewall nftables`): the iptables guard's
//! policy in one nf_tables table of our own, `inet envelope` (layout in
//! `ruleset.rs`), driven over one netlink socket the daemon keeps open
//! (`socket.rs`); no `nft` process ever runs.
//!
//! Grants are set elements: a subnet is an interval in `grants-v4`/`-v6`, the
//! proxy ports are elements of `proxy-v4`/`-v6` while the family has a grant,
//! and every element carries a kernel timeout of its deadline plus
//! `--kernel-margin`, so the kernel closes a killed envelope's grants by
//! itself. A change is one kernel transaction: its subnets, refreshed
//! deadlines (delete and re-add), revokes and the proxy ports all apply, or
//! none does; no rollback of our own is needed. A refusal names each refused
//! request; deleting an element that is already gone (deleted by hand, or
//! expired), or re-adding one whose set is gone, is refused with ENOENT, so
//! the transaction is sent again without those requests: a revoke of a
//! vanished grant succeeds and frees its slot.

mod reply;
pub(crate) mod ruleset;
mod socket;
pub(crate) mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub use self::reply::{decode_answers, Answer, DecodeError, Decoded, Listed};
use self::ruleset::{grants_set, proxy_set, Guard};
pub use self::socket::NftError;
use self::socket::NftSocket;
use self::wire::{Key, Request};
use super::ipset::NetlinkFault;
use super::iptables::rules::valid_device;
use super::set_state::{self, Edits, SetState};
use super::{Change, Family, Firewall, FirewallError, FwFuture, PerFamily, Subnet};
use crate::logging::chain;

/// The kernel's answer to deleting an element that is not there.
const ENOENT: i32 = libc::ENOENT;
/// How often a transaction is sent again without deletes of vanished
/// elements (each round drops at least one request).
const MAX_ROUNDS: usize = 4;

/// What the `nftables` choice needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftablesConfig {
    /// `--device`: the guarded interface (iptables' `+` wildcard works).
    pub device: String,
    /// The envelope's own ports, always let in.
    pub service_ports: Vec<u16>,
    /// `--proxy-ports`: open while the family has a grant.
    pub proxy_ports: Vec<u16>,
    /// `--kernel-margin`: an element's kernel timeout beyond its deadline.
    pub kernel_margin: Duration,
    /// `--firewall-timeout`: the bound on each netlink exchange.
    pub timeout: Duration,
    /// `--fault-netlink` (the soak): fault one exchange of element changes.
    pub fault_netlink: Option<NetlinkFault>,
}

#[derive(Debug)]
pub struct NftablesFirewall {
    config: NftablesConfig,
    socket: Mutex<NftSocket>,
    state: Mutex<SetState>,
}

/// A change as requests: those that make it, those that undo it (sent when
/// the outcome is unknown), and the proxy ports' deadlines afterwards.
#[derive(Debug, Default)]
struct Plan {
    forward: Vec<Request>,
    inverse: Vec<Request>,
    ports_until: PerFamily<Option<Instant>>,
}

/// One set's part of a plan: keys to delete, keys to add, and keys to add
/// back with a new timeout (deleted and re-added: a refresh).
#[derive(Debug, Default)]
struct SetEdit {
    delete: Vec<Key>,
    add: Vec<(Key, Duration)>,
    readd: Vec<(Key, Duration)>,
}

impl SetEdit {
    /// Deletes first: a refreshed key is deleted and added back in one transaction.
    fn requests(self, set: &str, out: &mut Vec<Request>) {
        out.extend(
            self.delete
                .into_iter()
                .map(|k| wire::delete_element(set, k)),
        );
        if !self.add.is_empty() {
            out.push(wire::add_elements(set, &self.add));
        }
        if !self.readd.is_empty() {
            out.push(wire::readd_elements(set, &self.readd));
        }
    }

    /// Moves `key` from `old` (its kernel timeout before, if it was there)
    /// to `new`, recording the inverse in `undo`.
    fn edit(&mut self, undo: &mut SetEdit, key: Key, old: Option<Duration>, new: Option<Duration>) {
        self.change(key, old, new);
        undo.change(key, new, old);
    }

    fn change(&mut self, key: Key, from: Option<Duration>, to: Option<Duration>) {
        if from.is_some() {
            self.delete.push(key);
        }
        match (from, to) {
            (Some(_), Some(to)) => self.readd.push((key, to)),
            (None, Some(to)) => self.add.push((key, to)),
            (_, None) => {}
        }
    }
}

impl NftablesFirewall {
    /// Checks the device name and opens the netlink socket (which fails
    /// where the kernel has no nf_tables).
    pub async fn new(config: NftablesConfig) -> Result<NftablesFirewall, FirewallError> {
        if !valid_device(&config.device) {
            return Err(FirewallError::Failed {
                operation: "--device".into(),
                message: format!("{:?} is not a valid interface name", config.device),
            });
        }
        let socket = NftSocket::open(config.timeout)
            .await
            .map_err(|e| failed("open the nf_tables netlink socket", &e))?
            .with_fault(config.fault_netlink);
        Ok(NftablesFirewall {
            config,
            socket: Mutex::new(socket),
            state: Mutex::new(SetState::default()),
        })
    }
}

impl NftablesConfig {
    /// The kernel timeout of an element whose sessions need it until
    /// `until`: whole seconds, rounded up, as the ipset path gives.
    fn timeout(&self, until: Instant, now: Instant) -> Duration {
        let secs = super::set_state::kernel_timeout_secs(until, now, self.kernel_margin);
        Duration::from_secs(u64::from(secs))
    }

    /// The requests that apply `edits` (a subnet's new deadline, or `None`
    /// to close it) to what `state` holds. Only what changes is looked at,
    /// plus one pass per family for its latest deadline (the proxy ports').
    fn plan(&self, state: &SetState, edits: &PerFamily<Edits>, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let timeout = |until: Option<Instant>| until.map(|u| self.timeout(u, now));
        for family in Family::ALL {
            let (before, edits) = (state.get(family), edits.get(family));
            let (mut nets, mut nets_undo) = (SetEdit::default(), SetEdit::default());
            for (subnet, new) in edits {
                let old = before.members.get(subnet).copied();
                if old != *new {
                    nets.edit(
                        &mut nets_undo,
                        Key::Net(*subnet),
                        timeout(old),
                        timeout(*new),
                    );
                }
            }
            let ports_until = before.ports_until_after(edits);
            *plan.ports_until.family(family) = ports_until;
            let (mut ports, mut ports_undo) = (SetEdit::default(), SetEdit::default());
            if before.ports_until != ports_until {
                for &port in &self.proxy_ports {
                    ports.edit(
                        &mut ports_undo,
                        Key::Port(port),
                        timeout(before.ports_until),
                        timeout(ports_until),
                    );
                }
            }
            nets.requests(grants_set(family), &mut plan.forward);
            ports.requests(proxy_set(family), &mut plan.forward);
            nets_undo.requests(grants_set(family), &mut plan.inverse);
            ports_undo.requests(proxy_set(family), &mut plan.inverse);
        }
        plan
    }
}

/// Sends `requests` as one transaction; while the only refusals say that
/// what a delete or a re-add touches is gone already (ENOENT), sends it again
/// without those requests.
async fn commit(socket: &mut NftSocket, mut requests: Vec<Request>) -> Result<(), NftError> {
    for _ in 0..MAX_ROUNDS {
        let refusals = match socket.transact(&requests).await {
            Err(NftError::Refused(refusals)) => refusals,
            other => return other,
        };
        let gone: Option<BTreeSet<usize>> = refusals
            .iter()
            .map(|r| {
                r.index
                    .filter(|&i| r.code == ENOENT && requests.get(i).is_some_and(Request::gone_ok))
            })
            .collect();
        let Some(gone) = gone else {
            return Err(NftError::Refused(refusals));
        };
        for &i in gone.iter().rev() {
            tracing::debug!(request = requests[i].what(), "already gone from the kernel");
            requests.remove(i);
        }
    }
    socket.transact(&requests).await
}

fn failed(operation: &str, error: &NftError) -> FirewallError {
    FirewallError::Failed {
        operation: operation.into(),
        message: chain(error).to_string(),
    }
}

impl Firewall for NftablesFirewall {
    fn backend(&self) -> String {
        "nftables".into()
    }

    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            *state = SetState::default();
            let guard = Guard {
                device: &self.config.device,
                service_ports: &self.config.service_ports,
            };
            let mut socket = self.socket.lock().await;
            let result = socket.transact(&ruleset::install(&guard)).await;
            if let Err(e) = result {
                if !e.applied_nothing() {
                    if let Err(undo) = socket.transact(&ruleset::remove()).await {
                        tracing::error!(error = %chain(&undo), "removing the table after a failed set-up");
                    }
                }
                return Err(failed("install table inet envelope", &e));
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let edits = change.edits();
            let Plan {
                forward,
                inverse,
                ports_until,
            } = self.config.plan(&state, &edits, Instant::now());
            if forward.is_empty() {
                return Ok(());
            }
            let mut socket = self.socket.lock().await;
            if let Err(e) = commit(&mut socket, forward).await {
                if !e.applied_nothing() {
                    // The kernel may have taken it: put back what we know.
                    if let Err(undo) = commit(&mut socket, inverse).await {
                        tracing::error!(error = %chain(&undo), "undoing a change of unknown outcome");
                    }
                }
                return Err(failed(&change.describe(), &e));
            }
            set_state::record(&mut state, edits, ports_until);
            Ok(())
        })
    }

    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let mut socket = self.socket.lock().await;
            let result = socket
                .transact(&ruleset::remove())
                .await
                .map_err(|e| failed("remove table inet envelope", &e));
            *state = SetState::default();
            result
        })
    }

    fn kernel_expiries(&self) -> FwFuture<'_, Option<BTreeMap<Subnet, Duration>>> {
        Box::pin(async move {
            let mut socket = self.socket.lock().await;
            let mut out = BTreeMap::new();
            for family in Family::ALL {
                let set = grants_set(family);
                let listed = match socket.list(set).await {
                    Ok(listed) => listed,
                    // The set (or the table) deleted by hand: nothing of it is open.
                    Err(NftError::Refused(r)) if r.iter().all(|r| r.code == ENOENT) => Vec::new(),
                    Err(e) => return Err(failed(&format!("list set {set}"), &e)),
                };
                out.extend(granted_subnets(&listed));
            }
            Ok(Some(out))
        })
    }
}

/// The grant subnets among listed interval elements, each with the time the
/// kernel still keeps it: a start whose end is exactly one grant subnet away
/// (or that runs to the top of the address space).
fn granted_subnets(listed: &[reply::Listed]) -> BTreeMap<Subnet, Duration> {
    let ends: BTreeSet<&[u8]> = listed
        .iter()
        .filter(|l| l.interval_end)
        .map(|l| l.key.as_slice())
        .collect();
    let mut out = BTreeMap::new();
    for start in listed.iter().filter(|l| !l.interval_end) {
        let ip = match start.key.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(start.key.as_slice()).unwrap_or_default()),
            16 => IpAddr::from(<[u8; 16]>::try_from(start.key.as_slice()).unwrap_or_default()),
            _ => continue,
        };
        let subnet = Subnet::of_client(ip);
        if subnet.network() != ip {
            continue;
        }
        let exact = match wire::interval(&subnet).1 {
            Some(end) => ends.contains(end.as_slice()),
            None => true,
        };
        if let (true, Some(ms)) = (exact, start.expiration_ms.or(start.timeout_ms)) {
            out.insert(subnet, Duration::from_millis(ms));
        }
    }
    out
}

/// Whether the kernel answers for nf_tables (for the fallback warning).
pub async fn available(timeout: Duration) -> bool {
    NftSocket::open(timeout).await.is_ok()
}

/// `--cleanup`: removes our table. A kernel without nf_tables has nothing to clean.
pub async fn cleanup(timeout: Duration) -> Result<(), FirewallError> {
    let Ok(mut socket) = NftSocket::open(timeout).await else {
        return Ok(());
    };
    socket
        .transact(&ruleset::remove())
        .await
        .map_err(|e| failed("remove table inet envelope", &e))
}

#[cfg(test)]
mod tests;
