//! STUB — the iptables/ip6tables backend (issue 4) replaces this file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Change, Firewall, FirewallError, FwFuture};

/// What the iptables backend needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct IptablesConfig {
    /// The public interface the guard applies to (`--device`).
    pub device: String,
    /// The envelope's own listening ports (always accepted on the device).
    pub service_ports: Vec<u16>,
    /// TCP ports opened to everyone while any grant is active.
    pub proxy_ports: Vec<u16>,
    /// Directory holding iptables, ip6tables, iptables-restore, ip6tables-restore.
    pub bin_dir: PathBuf,
    /// Longest any single command may run before it is killed.
    pub command_timeout: Duration,
}

#[derive(Debug)]
pub struct IptablesFirewall {
    config: IptablesConfig,
}

impl IptablesFirewall {
    /// Checks the binaries and detects the backend (nf_tables or legacy).
    pub async fn new(config: IptablesConfig) -> Result<IptablesFirewall, FirewallError> {
        Err(FirewallError::Failed {
            operation: format!("iptables on {}", config.device),
            message: "not implemented yet".into(),
        })
    }
}

impl Firewall for IptablesFirewall {
    fn backend(&self) -> String {
        format!("iptables on {}", self.config.device)
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

/// Removes every chain and rule the envelope ever installs (IPv4 and IPv6).
pub async fn cleanup(bin_dir: &Path, command_timeout: Duration) -> Result<(), FirewallError> {
    let _ = (bin_dir, command_timeout);
    Ok(())
}
