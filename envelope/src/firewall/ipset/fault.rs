//! Test-only: the hidden `--fault-netlink` flag makes one chosen exchange of
//! member changes fail or stall, so the soak can check rollback and recovery
//! against the kernel. The fault and its count belong to the one socket that
//! carries it. Never set in production.

use std::str::FromStr;

use super::wire::{Cmd, Request};

/// What the injected fault does to its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Nothing is sent; the exchange fails as if the socket broke.
    Fail,
    /// Everything is sent (the kernel applies it) but no acknowledgement is
    /// read: the exchange times out, as if the kernel never answered.
    Stall,
}

/// `fail:N` or `stall:N`: the Nth exchange (counting from 1) that carries
/// member adds or deletes. Set-up exchanges (create, destroy) are not
/// counted; a rollback is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetlinkFault {
    action: FaultAction,
    nth: u64,
}

impl FromStr for NetlinkFault {
    type Err = String;

    fn from_str(spec: &str) -> Result<NetlinkFault, String> {
        let bad = || format!("--fault-netlink {spec:?}: expected fail:N or stall:N (N >= 1)");
        let (action, nth) = spec.split_once(':').ok_or_else(bad)?;
        let action = match action {
            "fail" => FaultAction::Fail,
            "stall" => FaultAction::Stall,
            _ => return Err(bad()),
        };
        match nth.parse::<u64>() {
            Ok(nth) if nth > 0 => Ok(NetlinkFault { action, nth }),
            _ => Err(bad()),
        }
    }
}

/// A socket's fault and the exchanges of member changes it has seen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultCounter {
    fault: NetlinkFault,
    changes: u64,
}

impl FaultCounter {
    pub fn new(fault: NetlinkFault) -> FaultCounter {
        FaultCounter { fault, changes: 0 }
    }

    /// The fault's action if this exchange of `requests` is the chosen one.
    pub fn for_exchange(&mut self, requests: &[Request]) -> Option<FaultAction> {
        self.for_changes(
            requests
                .iter()
                .any(|r| matches!(r.cmd(), Cmd::Add | Cmd::Del)),
        )
    }

    /// The same for any backend: `changes` says whether the exchange adds or
    /// deletes members (only those are counted).
    pub fn for_changes(&mut self, changes: bool) -> Option<FaultAction> {
        if !changes {
            return None;
        }
        self.changes += 1;
        (self.changes == self.fault.nth).then(|| {
            tracing::warn!(exchange = self.changes, action = ?self.fault.action, "injected netlink fault (test hook)");
            self.fault.action
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::ipset::wire::Element;

    #[test]
    fn fault_specs_parse_or_fail_clearly() {
        for bad in [
            "", "fail", "fail:", "fail:0", "fail:x", "hang:1", "stall:-1",
        ] {
            let error = bad.parse::<NetlinkFault>().unwrap_err();
            assert!(
                error.contains("expected fail:N or stall:N"),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            "fail:3".parse::<NetlinkFault>(),
            Ok(NetlinkFault {
                action: FaultAction::Fail,
                nth: 3
            })
        );
    }

    #[test]
    fn only_the_nth_exchange_of_member_changes_is_faulted() {
        let mut counter = FaultCounter::new("stall:2".parse().unwrap());
        let flush = || Request::flush(7, "s");
        // Set-up exchanges (flush, create, destroy) are not counted.
        assert_eq!(counter.for_exchange(&[flush()]), None);
        let member = |del: bool| {
            let element = Element::Port(80);
            if del {
                Request::del(7, "s", element)
            } else {
                Request::add(7, "s", element, 1)
            }
        };
        assert_eq!(counter.for_exchange(&[member(false)]), None);
        assert_eq!(
            counter.for_exchange(&[member(true), member(false)]),
            Some(FaultAction::Stall)
        );
        assert_eq!(counter.for_exchange(&[member(true)]), None);
    }
}
