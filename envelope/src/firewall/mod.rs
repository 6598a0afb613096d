//! The firewall at policy level: set up a default-deny guard, open and close
//! client subnets, tear everything down. Backends: `iptables+ipset` (the real
//! one: static rules, grants as kernel set members with timeouts), `iptables`
//! (one rule per grant through `iptables-restore`, where the kernel has no
//! ipset), `nftables` (the same policy in an nf_tables table of its own, grants
//! as set elements with timeouts, each change one kernel transaction), `none`
//! (no-op), and `record` (a journal file, for tests of the daemon).
//! [`FirewallChoice`] names one with its settings, builds it, and cleans up
//! after every backend.

mod choice;
mod family;
pub mod ipset;
pub mod iptables;
mod journal;
pub mod nftables;
mod noop;
mod set_state;
mod subnet;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use choice::{FirewallChoice, IpsetMode};
pub use family::{Family, PerFamily};
pub use ipset::{IpsetFirewall, NetlinkFault};
pub use iptables::{IptablesConfig, IptablesFirewall};
pub use journal::JournalFirewall;
pub use nftables::{NftablesConfig, NftablesFirewall};
pub use noop::NoopFirewall;
pub use subnet::Subnet;

/// A boxed future, so backends can sit behind `dyn Firewall`.
pub type FwFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FirewallError>> + Send + 'a>>;

/// A subnet to open, and until when its sessions need it. Backends with kernel
/// timeouts let the kernel close it by then (plus a margin) on their own, so a
/// grant cannot outlive a crashed envelope for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub subnet: Subnet,
    pub until: tokio::time::Instant,
}

/// One atomic change: every subnet in `grant` is opened, every subnet in
/// `refresh` (already open) gets its new `until`, and every subnet in `revoke`
/// is closed, all or nothing. The grant owner coalesces concurrent requests
/// into one change (group commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub grant: Vec<Opening>,
    pub refresh: Vec<Opening>,
    pub revoke: Vec<Subnet>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.grant.is_empty() && self.refresh.is_empty() && self.revoke.is_empty()
    }

    /// The subnets newly opened.
    pub fn granted(&self) -> impl Iterator<Item = Subnet> + '_ {
        self.grant.iter().map(|o| o.subnet)
    }

    /// What the change does, for error messages: `grant A,B refresh C revoke D`.
    pub fn describe(&self) -> String {
        let list = |s: &mut dyn Iterator<Item = Subnet>| {
            s.map(|s| s.to_string()).collect::<Vec<_>>().join(",")
        };
        let mut parts = Vec::new();
        if !self.grant.is_empty() {
            parts.push(format!("grant {}", list(&mut self.granted())));
        }
        if !self.refresh.is_empty() {
            parts.push(format!(
                "refresh {}",
                list(&mut self.refresh.iter().map(|o| o.subnet))
            ));
        }
        if !self.revoke.is_empty() {
            parts.push(format!("revoke {}", list(&mut self.revoke.iter().copied())));
        }
        parts.join(" ")
    }

    /// Each subnet the change touches, by family, with its new deadline
    /// (`None`: closed): what a kernel-facing backend edits.
    pub fn edits(&self) -> PerFamily<BTreeMap<Subnet, Option<tokio::time::Instant>>> {
        let mut edits = PerFamily::<BTreeMap<_, _>>::default();
        for opening in self.grant.iter().chain(&self.refresh) {
            edits
                .family(Family::of(&opening.subnet))
                .insert(opening.subnet, Some(opening.until));
        }
        for subnet in &self.revoke {
            edits.family(Family::of(subnet)).insert(*subnet, None);
        }
        edits
    }

    /// The same change as one change per subnet (to isolate a failure).
    pub fn per_subnet(&self) -> Vec<Change> {
        let grants = self.grant.iter().map(|&o| Change {
            grant: vec![o],
            ..Change::default()
        });
        let refreshes = self.refresh.iter().map(|&o| Change {
            refresh: vec![o],
            ..Change::default()
        });
        let revokes = self.revoke.iter().map(|&s| Change {
            revoke: vec![s],
            ..Change::default()
        });
        grants.chain(refreshes).chain(revokes).collect()
    }
}

/// A firewall backend. Calls come only from the grant owner, one at a time.
pub trait Firewall: Send + Sync + fmt::Debug {
    /// Name for logs, metrics and the admin status, e.g. `iptables (nf_tables)`.
    fn backend(&self) -> String;
    /// Removes whatever a previous (crashed) instance left, then installs the
    /// default-deny guard. Idempotent.
    fn setup(&self) -> FwFuture<'_, ()>;
    /// Applies one change atomically. Revoking a subnet whose rule is already
    /// gone succeeds.
    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()>;
    /// Removes everything the envelope installed. Idempotent.
    fn teardown(&self) -> FwFuture<'_, ()>;
    /// How long the kernel itself keeps each open subnet open, for backends
    /// whose members carry kernel timeouts; `None` for the others.
    fn kernel_expiries(&self) -> FwFuture<'_, Option<BTreeMap<Subnet, Duration>>> {
        Box::pin(async { Ok(None) })
    }
}

/// Why a firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{operation} did not finish within {after:?}")]
    Timeout { operation: String, after: Duration },
    #[error("{operation} failed: {message}")]
    Failed { operation: String, message: String },
    #[error("{operation}")]
    Io {
        operation: String,
        #[source]
        source: std::io::Error,
    },
}
