//! Test-only: the hidden `--fault-netlink` flag makes one chosen exchange of
//! member changes fail or stall, so the soak can check rollback and recovery
//! against the kernel. Never set in production.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::wire::{Cmd, Request};

/// What the injected fault does to its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultAction {
    /// Nothing is sent; the exchange fails as if the socket broke.
    Fail,
    /// Everything is sent (the kernel applies it) but no acknowledgement is
    /// read: the exchange times out, as if the kernel never answered.
    Stall,
}

/// Test-only fault: the `nth` exchange (counting from 1) that carries member
/// adds or deletes, process-wide. Set once at start-up; never in production.
static FAULT: Mutex<Option<(FaultAction, u64)>> = Mutex::new(None);
/// Exchanges of member changes so far (counted only while a fault is set).
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// Test hook (`--fault-netlink`): `fail:N` makes the Nth exchange carrying
/// member adds or deletes fail without reaching the kernel; `stall:N` sends
/// it and then waits out the timeout without reading the answer. Set-up
/// exchanges (create, destroy) are not counted; a rollback is.
pub fn inject(spec: &str) -> Result<(), String> {
    let bad = || format!("--fault-netlink {spec:?}: expected fail:N or stall:N (N >= 1)");
    let (action, nth) = spec.split_once(':').ok_or_else(bad)?;
    let action = match action {
        "fail" => FaultAction::Fail,
        "stall" => FaultAction::Stall,
        _ => return Err(bad()),
    };
    let nth: u64 = nth.parse().map_err(|_| bad())?;
    if nth == 0 {
        return Err(bad());
    }
    *FAULT.lock().unwrap_or_else(|p| p.into_inner()) = Some((action, nth));
    CHANGES.store(0, Ordering::SeqCst);
    Ok(())
}

/// The injected fault's action if this exchange of `requests` is the chosen one.
pub(super) fn for_exchange(requests: &[Request]) -> Option<FaultAction> {
    let (action, nth) = (*FAULT.lock().unwrap_or_else(|p| p.into_inner()))?;
    let changes = requests
        .iter()
        .any(|r| matches!(r.cmd(), Cmd::Add | Cmd::Del));
    if !changes {
        return None;
    }
    let n = CHANGES.fetch_add(1, Ordering::SeqCst) + 1;
    (n == nth).then(|| {
        tracing::warn!(exchange = n, action = ?action, "injected netlink fault (test hook)");
        action
    })
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
            let error = inject(bad).unwrap_err();
            assert!(
                error.contains("expected fail:N or stall:N"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn only_the_nth_exchange_of_member_changes_is_faulted() {
        inject("stall:2").unwrap();
        let flush = || Request::flush(7, "s");
        // Set-up exchanges (flush, create, destroy) are not counted.
        assert_eq!(for_exchange(&[flush()]), None);
        let member = |del: bool| {
            let element = Element::Port(80);
            if del {
                Request::del(7, "s", element)
            } else {
                Request::add(7, "s", element, 1)
            }
        };
        assert_eq!(for_exchange(&[member(false)]), None);
        assert_eq!(
            for_exchange(&[member(true), member(false)]),
            Some(FaultAction::Stall)
        );
        assert_eq!(for_exchange(&[member(true)]), None);
        *FAULT.lock().unwrap() = None;
    }
}
