//! `envelope --cleanup`: removes everything the envelope ever installs, whatever
//! the other flags say, and exits — but never beside a live envelope: it takes
//! the same admin lock (`--admin-socket`) and refuses while one holds it.

use anyhow::Context;

use crate::admin::AdminLock;
use crate::config::Flags;
use crate::firewall::FirewallChoice;

pub async fn cleanup(flags: Flags) -> anyhow::Result<()> {
    let (iptables_dir, timeout) = flags.cleanup_settings()?;
    let _lock = AdminLock::take_existing(&flags.admin_socket)
        .map_err(|e| e.context("--cleanup refused"))?;
    FirewallChoice::cleanup(&iptables_dir, timeout)
        .await
        .context("--cleanup")?;
    tracing::info!("removed every envelope chain, rule and set");
    Ok(())
}
