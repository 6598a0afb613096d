//! `envelope --cleanup`: removes everything the envelope ever installs, whatever
//! the other flags say, and exits.

use anyhow::Context;

use crate::config::Flags;
use crate::firewall::FirewallChoice;

pub async fn cleanup(flags: Flags) -> anyhow::Result<()> {
    let (iptables_dir, timeout) = flags.cleanup_settings()?;
    FirewallChoice::cleanup(&iptables_dir, timeout)
        .await
        .context("--cleanup")?;
    tracing::info!("removed every envelope chain, rule and set");
    Ok(())
}
