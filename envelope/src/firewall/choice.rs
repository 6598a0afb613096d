//! Which firewall backend the daemon runs, with the settings that backend alone
//! needs, how it is built, and how everything any backend ever installed is
//! removed. The configuration validates the flags into a [`FirewallChoice`];
//! [`FirewallChoice::build`] turns it into a backend (probing the kernel for
//! ipset and falling back, with one warning, to iptables-restore rules where
//! there is none), and [`FirewallChoice::cleanup`] is `--cleanup`. The daemon
//! never names a backend: a new one is a module and an arm here. A choice
//! cannot name a setting its backend does not use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::ipset::{NetlinkFault, NewError};
use super::{
    ipset, iptables, nftables, Firewall, FirewallError, IpsetFirewall, IptablesConfig,
    IptablesFirewall, JournalFirewall, NftablesConfig, NftablesFirewall, NoopFirewall,
};

/// The validated `--firewall` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallChoice {
    /// `none`: touch nothing.
    None,
    /// `record` (tests): append each operation to a journal file.
    Record {
        /// `--firewall-journal`.
        journal: PathBuf,
        /// `--firewall-journal-fail-grants`: every grant fails.
        fail_grants: bool,
    },
    /// `iptables`: the guard's static rules, grants as ipset members with
    /// kernel timeouts; rules through iptables-restore where there is no ipset.
    Iptables {
        rules: IptablesConfig,
        /// `--kernel-margin`: a member's kernel timeout beyond its deadline.
        kernel_margin: Duration,
        ipset: IpsetMode,
    },
    /// `iptables-restore`: the same guard with one rule per grant.
    IptablesRestore(IptablesConfig),
    /// `nftables`: the same policy in a table of its own, grants as set
    /// elements with kernel timeouts, each change one transaction.
    Nftables(NftablesConfig),
}

/// How the `iptables` choice finds ipset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsetMode {
    /// Ask the kernel; fall back to rules when it has no ipset.
    Probe {
        /// `--fault-netlink` (the soak): fault one exchange of member changes.
        fault_netlink: Option<NetlinkFault>,
    },
    /// `--ipset-unavailable` (tests): behave as if the kernel had none.
    Unavailable,
}

impl FirewallChoice {
    /// The guarded interface (`--device`), for the backends that guard one.
    pub fn device(&self) -> Option<&str> {
        match self {
            FirewallChoice::Iptables { rules, .. } | FirewallChoice::IptablesRestore(rules) => {
                Some(&rules.device)
            }
            FirewallChoice::Nftables(config) => Some(&config.device),
            FirewallChoice::None | FirewallChoice::Record { .. } => None,
        }
    }
}

impl FirewallChoice {
    /// Builds the chosen backend; an error names the `--firewall` choice at fault.
    pub async fn build(&self) -> anyhow::Result<Arc<dyn Firewall>> {
        Ok(match self {
            FirewallChoice::None => Arc::new(NoopFirewall),
            FirewallChoice::Record {
                journal,
                fail_grants,
            } => Arc::new(JournalFirewall::new(journal.clone(), *fail_grants)),
            FirewallChoice::Iptables {
                rules,
                kernel_margin,
                ipset,
            } => {
                let probe = match ipset {
                    IpsetMode::Unavailable => Err(NewError::NoIpset(
                        std::io::Error::other("--ipset-unavailable").into(),
                    )),
                    IpsetMode::Probe { fault_netlink } => {
                        IpsetFirewall::new(rules.clone(), *kernel_margin, *fault_netlink).await
                    }
                };
                match probe {
                    Ok(firewall) => Arc::new(firewall),
                    Err(NewError::Firewall(e)) => {
                        return Err(anyhow::Error::new(e).context("--firewall iptables"))
                    }
                    Err(NewError::NoIpset(e)) => {
                        let alternative = if nftables::available(rules.command_timeout).await {
                            "; the kernel has nf_tables: --firewall nftables is the fast \
                             alternative (set elements with kernel timeouts, one transaction \
                             per change)"
                        } else {
                            ""
                        };
                        tracing::warn!(
                            error = %crate::logging::chain(&e),
                            "the kernel offers no ipset: grants fall back to one iptables rule each \
                             (iptables-restore per change, no kernel timeouts){alternative}"
                        );
                        Arc::new(
                            IptablesFirewall::new(rules.clone())
                                .await
                                .context("--firewall iptables")?,
                        )
                    }
                }
            }
            FirewallChoice::IptablesRestore(rules) => Arc::new(
                IptablesFirewall::new(rules.clone())
                    .await
                    .context("--firewall iptables-restore")?,
            ),
            FirewallChoice::Nftables(config) => Arc::new(
                NftablesFirewall::new(config.clone())
                    .await
                    .context("--firewall nftables")?,
            ),
        })
    }

    /// `--cleanup`: removes everything any backend ever installs, whatever
    /// backend is chosen, with the iptables binaries in `bin_dir` and each
    /// command bounded by `timeout`. Rules go first: a set that a rule
    /// references cannot be destroyed.
    pub async fn cleanup(bin_dir: &Path, timeout: Duration) -> Result<(), FirewallError> {
        iptables::cleanup(bin_dir, timeout).await?;
        ipset::cleanup(timeout).await?;
        nftables::cleanup(timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IptablesConfig {
        IptablesConfig {
            device: "eth7".into(),
            service_ports: vec![8880],
            proxy_ports: vec![],
            bin_dir: "/nonexistent".into(),
            command_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn only_the_iptables_choices_guard_a_device() {
        assert_eq!(FirewallChoice::None.device(), None);
        let record = FirewallChoice::Record {
            journal: "/tmp/j".into(),
            fail_grants: false,
        };
        assert_eq!(record.device(), None);
        assert_eq!(
            FirewallChoice::IptablesRestore(rules()).device(),
            Some("eth7")
        );
        let iptables = FirewallChoice::Iptables {
            rules: rules(),
            kernel_margin: Duration::from_secs(5),
            ipset: IpsetMode::Unavailable,
        };
        assert_eq!(iptables.device(), Some("eth7"));
    }

    #[tokio::test]
    async fn none_and_record_build_without_touching_the_kernel() {
        let none = FirewallChoice::None.build().await.unwrap();
        assert_eq!(none.backend(), "none");
        let dir = tempfile::tempdir().unwrap();
        let record = FirewallChoice::Record {
            journal: dir.path().join("journal"),
            fail_grants: false,
        };
        let record = record.build().await.unwrap();
        assert_eq!(record.backend(), "record");
    }
}
