//! The iptables/ip6tables backend.
//!
//! Everything lives in two chains of the filter table per family (see `rules.rs`
//! for the layout) plus one jump from INPUT restricted to `--device`. Every
//! change is one `iptables-restore --noflush` transaction per family, fed on
//! stdin: a failing batch applies nothing. Every command runs under
//! `tokio::process` with a bounded `--wait` and a hard timeout (see `command.rs`).
//!
//! The backend remembers which subnets it installed per family. A batch that
//! timed out may or may not have reached the kernel, so that family is marked
//! dirty and the next change is computed from a listing of ENVELOPE-GRANTS
//! instead of from memory. A rejected batch that deletes rules is retried once,
//! also from a listing, so a rule someone deleted by hand counts as revoked; a
//! lock, permission or timeout failure is never taken as "absent".

pub(crate) mod command;
pub(crate) mod rules;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use self::command::{RunError, Runner};
use self::rules::GRANTS_CHAIN;
use super::{Change, Firewall, FirewallError, FwFuture, Subnet};
use super::{Family, PerFamily};
use crate::logging::chain;

/// What the iptables backend needs from the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The four binaries the backend drives.
pub(crate) const BINARIES: [&str; 4] = [
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
];

#[derive(Debug)]
pub struct IptablesFirewall {
    device: String,
    service_ports: Vec<u16>,
    proxy_ports: Vec<u16>,
    /// `nf_tables` or `legacy`.
    mode: String,
    runner: Runner,
    state: Mutex<State>,
}

type State = PerFamily<FamilyState>;

#[derive(Debug, Default, Clone)]
struct FamilyState {
    /// Subnets whose rule is in the kernel (as far as we know).
    installed: BTreeSet<Subnet>,
    /// A batch timed out: the kernel may differ from `installed`.
    dirty: bool,
}

impl IptablesFirewall {
    /// Checks the binaries and detects the backend (nf_tables or legacy).
    pub async fn new(config: IptablesConfig) -> Result<IptablesFirewall, FirewallError> {
        Self::with_spares(config, true).await
    }

    /// The guard alone, for a backend that keeps grants elsewhere (ipset): it
    /// runs `iptables-restore` only at set-up and teardown, so no warm spares.
    pub(crate) async fn guard_only(
        config: IptablesConfig,
    ) -> Result<IptablesFirewall, FirewallError> {
        Self::with_spares(config, false).await
    }

    pub(crate) fn runner(&self) -> &Runner {
        &self.runner
    }

    pub(crate) fn mode(&self) -> &str {
        &self.mode
    }

    pub(crate) fn proxy_ports(&self) -> &[u16] {
        &self.proxy_ports
    }

    async fn with_spares(
        config: IptablesConfig,
        spares: bool,
    ) -> Result<IptablesFirewall, FirewallError> {
        if !rules::valid_device(&config.device) {
            return Err(FirewallError::Failed {
                operation: "--device".into(),
                message: format!("{:?} is not a valid interface name", config.device),
            });
        }
        let runner = Runner::new(&config.bin_dir, config.command_timeout);
        let mut modes = Vec::new();
        for binary in BINARIES {
            let path = runner.path(binary);
            if !path.is_file() {
                return Err(FirewallError::Failed {
                    operation: format!("iptables binaries in {}", config.bin_dir.display()),
                    message: format!("{} not found", path.display()),
                });
            }
            let version = runner.version(binary).await?;
            modes.push((binary, mode_of(&version)));
        }
        let mode = modes[0].1.clone();
        if let Some((binary, other)) = modes.iter().find(|(_, m)| *m != mode) {
            return Err(FirewallError::Failed {
                operation: "iptables backend detection".into(),
                message: format!("iptables drives {mode} but {binary} drives {other}"),
            });
        }
        // Warm spares are safe only where restore takes no lock before its input.
        let runner = if spares && mode == "nf_tables" {
            runner.with_warm_restore()
        } else {
            runner
        };
        let mut service_ports: Vec<u16> = Vec::new();
        for port in config.service_ports {
            if port == 0 {
                tracing::warn!(
                    "listening on port 0 (any port): the firewall cannot open the envelope's own port"
                );
            } else if !service_ports.contains(&port) {
                service_ports.push(port);
            }
        }
        let mut proxy_ports: Vec<u16> = Vec::new();
        for port in config.proxy_ports {
            if port != 0 && !proxy_ports.contains(&port) {
                proxy_ports.push(port);
            }
        }
        Ok(IptablesFirewall {
            device: config.device,
            service_ports,
            proxy_ports,
            mode,
            runner,
            state: Mutex::new(State::default()),
        })
    }

    async fn setup_family(&self, family: Family) -> Result<(), FirewallError> {
        let listing = rules::parse_listing(&self.runner.list(family, None).await?);
        let lines = rules::install(&listing, family, &self.device, &self.service_ports);
        self.runner
            .restore(family, &rules::document(&lines), "install guard")
            .await?;
        Ok(())
    }

    /// Applies `grant`/`revoke` to one family in one transaction.
    async fn apply_family(
        &self,
        family: Family,
        state: &mut FamilyState,
        grant: &[Subnet],
        revoke: &[Subnet],
    ) -> Result<(), FirewallError> {
        let mut target = state.installed.clone();
        target.extend(grant.iter().copied());
        for subnet in revoke {
            target.remove(subnet);
        }
        if target == state.installed && !state.dirty {
            return Ok(());
        }
        let wanted = rules::wanted_grants(&target, &self.proxy_ports);
        let operation = describe(grant, revoke);
        let lines = if state.dirty {
            match self.listed_grants(family).await {
                Ok(actual) => rules::diff(&actual, &wanted),
                Err(e) => return Err(e.into()),
            }
        } else {
            let before = rules::wanted_grants(&state.installed, &self.proxy_ports);
            rules::diff(&rules::assumed(&before), &wanted)
        };
        if lines.is_empty() {
            state.installed = target;
            state.dirty = false;
            return Ok(());
        }
        let first = self
            .runner
            .restore(family, &rules::document(&lines), &operation)
            .await;
        let error = match first {
            Ok(()) => {
                state.installed = target;
                state.dirty = false;
                return Ok(());
            }
            Err(e) => e,
        };
        if error.is_timeout() {
            state.dirty = true;
            return Err(error.into());
        }
        let deletes = lines.iter().any(|l| l.starts_with("-D "));
        if !(deletes && error.is_rejection()) {
            return Err(error.into());
        }
        // A delete was rejected: maybe the rule is already gone (deleted by
        // hand). Look, drop what is absent, and try once more.
        let actual = match self.listed_grants(family).await {
            Ok(actual) => actual,
            Err(list_error) => {
                tracing::warn!(error = %chain(&FirewallError::from(list_error)), "listing after a failed revoke");
                return Err(error.into());
            }
        };
        let retry = rules::diff(&actual, &wanted);
        tracing::warn!(
            family = family.name(),
            error = %chain(&FirewallError::from(error)),
            "firewall batch rejected; retrying once against the listed rules"
        );
        if !retry.is_empty() {
            if let Err(e) = self
                .runner
                .restore(family, &rules::document(&retry), &operation)
                .await
            {
                state.dirty |= e.is_timeout();
                return Err(e.into());
            }
        }
        state.installed = target;
        state.dirty = false;
        Ok(())
    }

    /// Our rules now in ENVELOPE-GRANTS (comment, listed spec).
    async fn listed_grants(&self, family: Family) -> Result<Vec<(String, String)>, RunError> {
        let text = self.runner.list(family, Some(GRANTS_CHAIN)).await?;
        Ok(rules::ours_in_grants(&rules::parse_listing(&text)))
    }
}

/// `nf_tables` or `legacy` from `iptables --version` (`iptables v1.8.9 (nf_tables)`).
/// Versions before 1.8 print no mode and are legacy.
fn mode_of(version: &str) -> String {
    match version.rsplit_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')').trim().to_owned(),
        None => "legacy".to_owned(),
    }
}

fn describe(grant: &[Subnet], revoke: &[Subnet]) -> String {
    let list = |s: &[Subnet]| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match (grant.is_empty(), revoke.is_empty()) {
        (false, true) => format!("grant {}", list(grant)),
        (true, false) => format!("revoke {}", list(revoke)),
        _ => format!("grant {} revoke {}", list(grant), list(revoke)),
    }
}

impl Firewall for IptablesFirewall {
    fn backend(&self) -> String {
        format!("iptables ({})", self.mode)
    }

    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            *state = State::default();
            self.setup_family(Family::V4).await?;
            if let Err(e) = self.setup_family(Family::V6).await {
                // Never leave a half-installed guard behind a failed start.
                if let Err(undo) = remove_family(&self.runner, Family::V4).await {
                    tracing::error!(error = %chain(&undo), "removing the IPv4 guard after a failed set-up");
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            // One rule per subnet, whatever its deadline: a refresh changes nothing here.
            let granted: Vec<Subnet> = change.granted().collect();
            let split = |list: &[Subnet], family| -> Vec<Subnet> {
                list.iter()
                    .filter(|s| Family::of(s) == family)
                    .copied()
                    .collect()
            };
            let mut done: Vec<(Family, FamilyState)> = Vec::new();
            for family in Family::ALL {
                let grant = split(&granted, family);
                let revoke = split(&change.revoke, family);
                if grant.is_empty() && revoke.is_empty() {
                    continue;
                }
                let before = state.family(family).clone();
                let result = self
                    .apply_family(family, state.family(family), &grant, &revoke)
                    .await;
                if let Err(e) = result {
                    // All or nothing: undo the families already changed.
                    for (family, before) in done {
                        let now = state.family(family);
                        let target: Vec<Subnet> = before.installed.iter().copied().collect();
                        let grant_back: Vec<Subnet> = target
                            .iter()
                            .filter(|s| !now.installed.contains(s))
                            .copied()
                            .collect();
                        let revoke_back: Vec<Subnet> = now
                            .installed
                            .iter()
                            .filter(|s| !before.installed.contains(s))
                            .copied()
                            .collect();
                        if let Err(undo) = self
                            .apply_family(family, now, &grant_back, &revoke_back)
                            .await
                        {
                            tracing::error!(error = %chain(&undo), family = family.name(), "undoing a partly applied change");
                        }
                    }
                    return Err(e);
                }
                done.push((family, before));
            }
            Ok(())
        })
    }

    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let mut first_error = None;
            for family in Family::ALL {
                match remove_family(&self.runner, family).await {
                    Ok(()) => *state.family(family) = FamilyState::default(),
                    Err(e) => {
                        state.family(family).dirty = true;
                        first_error.get_or_insert(e);
                    }
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }
}

/// Removes our jump(s) and chains from one family, if there are any.
pub(crate) async fn remove_family(runner: &Runner, family: Family) -> Result<(), FirewallError> {
    let listing = rules::parse_listing(&runner.list(family, None).await?);
    let lines = rules::removal(&listing);
    if lines.is_empty() {
        return Ok(());
    }
    runner
        .restore(family, &rules::document(&lines), "remove guard")
        .await?;
    Ok(())
}

/// Removes every chain and rule the envelope ever installs (IPv4 and IPv6).
pub async fn cleanup(bin_dir: &Path, command_timeout: Duration) -> Result<(), FirewallError> {
    let runner = Runner::new(bin_dir, command_timeout);
    let mut first_error = None;
    for family in Family::ALL {
        if let Err(e) = remove_family(&runner, family).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_mode_is_read_from_the_version() {
        assert_eq!(mode_of("iptables v1.8.9 (nf_tables)"), "nf_tables");
        assert_eq!(mode_of("iptables v1.8.9 (legacy)"), "legacy");
        assert_eq!(mode_of("iptables v1.6.1"), "legacy");
    }

    #[tokio::test]
    async fn missing_binaries_fail_new() {
        let dir = std::env::temp_dir().join(format!("envelope-no-iptables-{}", std::process::id()));
        let result = IptablesFirewall::new(IptablesConfig {
            device: "eth0".into(),
            service_ports: vec![8880],
            proxy_ports: vec![80, 443],
            bin_dir: dir,
            command_timeout: Duration::from_secs(1),
        })
        .await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("iptables"), "{message}");
    }

    #[tokio::test]
    async fn bad_device_fails_new() {
        let result = IptablesFirewall::new(IptablesConfig {
            device: "eth0 -j ACCEPT".into(),
            service_ports: vec![],
            proxy_ports: vec![],
            bin_dir: "/usr/sbin".into(),
            command_timeout: Duration::from_secs(1),
        })
        .await;
        assert!(result.is_err());
    }
}
