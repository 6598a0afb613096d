//! `--firewall none`: accepts every change and touches nothing.

use super::{Change, Firewall, FwFuture};

#[derive(Debug, Default)]
pub struct NoopFirewall;

impl Firewall for NoopFirewall {
    fn backend(&self) -> String {
        "none".to_owned()
    }
    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn apply<'a>(&'a self, _change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
