//! The firewall flags validated into one [`FirewallChoice`]: the backend
//! (`iptables` by default when tokens are required, else `none`), and for each
//! backend only the settings it uses — the journal for `record`; device, service
//! and proxy ports, binary directory and command timeout for the iptables ones;
//! device, ports, kernel margin and netlink timeout for `nftables`.
//! The Go original's `-address.iptables*` paths stand for `--iptables-dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{FirewallKind, Flags};
use crate::firewall::{FirewallChoice, IpsetMode, IptablesConfig, NftablesConfig};

/// `--iptables-dir`, or the one directory the `-address.iptables*` paths share.
pub(super) fn iptables_dir(flags: &Flags) -> anyhow::Result<PathBuf> {
    let mut dirs = flags
        .go_iptables_paths
        .iter()
        .map(|p| p.parent().unwrap_or(Path::new("/")).to_path_buf());
    let Some(first) = dirs.next() else {
        return Ok(flags.iptables_dir.clone());
    };
    if let Some(other) = dirs.find(|d| *d != first) {
        bail!(
            "-address.iptables*: the iptables binaries must share one directory ({} and {})",
            first.display(),
            other.display()
        );
    }
    Ok(first)
}

/// `--firewall` and the settings of the backend it names. `bin_dir` comes from
/// [`iptables_dir`]; the envelope's own `listen` ports are always let in.
pub(super) fn firewall_choice(
    flags: &Flags,
    bin_dir: PathBuf,
    listen: &[SocketAddr],
) -> anyhow::Result<FirewallChoice> {
    let kind = flags.firewall.unwrap_or(if flags.token_required {
        FirewallKind::Iptables
    } else {
        FirewallKind::None
    });
    // --proxy-ports is checked whatever the backend, so a bad value fails
    // before the day someone switches to iptables.
    Ok(match kind {
        FirewallKind::None => {
            proxy_ports(flags)?;
            FirewallChoice::None
        }
        FirewallKind::Record => {
            let Some(journal) = flags.hooks.firewall_journal.clone() else {
                bail!("--firewall record needs --firewall-journal");
            };
            proxy_ports(flags)?;
            FirewallChoice::Record {
                journal,
                fail_grants: flags.hooks.firewall_journal_fail_grants,
            }
        }
        FirewallKind::Iptables => FirewallChoice::Iptables {
            rules: iptables_rules(flags, bin_dir, listen)?,
            kernel_margin: flags.kernel_margin,
            ipset: if flags.hooks.ipset_unavailable {
                IpsetMode::Unavailable
            } else {
                IpsetMode::Probe {
                    fault_netlink: flags.hooks.fault_netlink,
                }
            },
        },
        FirewallKind::IptablesRestore => {
            FirewallChoice::IptablesRestore(iptables_rules(flags, bin_dir, listen)?)
        }
        FirewallKind::Nftables => FirewallChoice::Nftables(NftablesConfig {
            device: flags.device.clone(),
            service_ports: listen.iter().map(SocketAddr::port).collect(),
            proxy_ports: proxy_ports(flags)?,
            kernel_margin: flags.kernel_margin,
            timeout: flags.firewall_timeout,
            fault_netlink: flags.hooks.fault_netlink,
        }),
    })
}

/// What both iptables backends need: the guard on `--device`.
fn iptables_rules(
    flags: &Flags,
    bin_dir: PathBuf,
    listen: &[SocketAddr],
) -> anyhow::Result<IptablesConfig> {
    Ok(IptablesConfig {
        device: flags.device.clone(),
        service_ports: listen.iter().map(SocketAddr::port).collect(),
        proxy_ports: proxy_ports(flags)?,
        bin_dir,
        command_timeout: flags.firewall_timeout,
    })
}

/// `--proxy-ports`.
fn proxy_ports(flags: &Flags) -> anyhow::Result<Vec<u16>> {
    parse_ports(&flags.proxy_ports).context("--proxy-ports")
}

fn parse_ports(text: &str) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port: u16 = part
            .parse()
            .with_context(|| format!("invalid port {part:?}"))?;
        if port == 0 {
            bail!("port 0 is not a port");
        }
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::flags::parse;
    use super::*;

    fn listen() -> Vec<SocketAddr> {
        vec!["[::]:8880".parse().unwrap()]
    }

    fn choice(args: &[&str]) -> anyhow::Result<FirewallChoice> {
        let flags = parse(args);
        firewall_choice(&flags, iptables_dir(&flags)?, &listen())
    }

    #[test]
    fn proxy_ports_parse_and_empty_means_none() {
        assert_eq!(parse_ports("80,443").unwrap(), vec![80, 443]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert!(parse_ports("80,x").is_err());
        assert!(parse_ports("0").is_err());
    }

    #[test]
    fn go_iptables_paths_name_the_binaries_directory() {
        let ok = parse(&[
            "-envelope.token-required=false",
            "-address.iptables=/opt/fw/iptables",
            "-address.ip6tables-restore=/opt/fw/ip6tables-restore",
        ]);
        assert_eq!(iptables_dir(&ok).unwrap(), PathBuf::from("/opt/fw"));
        let mixed = parse(&[
            "-envelope.token-required=false",
            "-address.iptables=/opt/fw/iptables",
            "-address.ip6tables=/usr/sbin/ip6tables",
        ]);
        let err = iptables_dir(&mixed).unwrap_err().to_string();
        assert!(err.contains("share one directory"), "{err}");
    }

    #[test]
    fn go_iptables_paths_override_iptables_dir() {
        let flags = parse(&["--iptables-dir=/elsewhere"]);
        assert_eq!(iptables_dir(&flags).unwrap(), PathBuf::from("/elsewhere"));
        let chosen = choice(&[
            "--iptables-dir=/elsewhere",
            "-address.iptables-save=/opt/fw/iptables-save",
            "--firewall=iptables-restore",
        ])
        .unwrap();
        let FirewallChoice::IptablesRestore(rules) = &chosen else {
            panic!("{chosen:?}")
        };
        assert_eq!(rules.bin_dir, PathBuf::from("/opt/fw"));
    }

    #[test]
    fn default_firewall_is_iptables_when_tokens_are_required() {
        let chosen = choice(&[]).unwrap();
        assert!(
            matches!(chosen, FirewallChoice::Iptables { .. }),
            "{chosen:?}"
        );
    }

    #[test]
    fn default_firewall_is_none_when_tokens_are_not_required() {
        let chosen = choice(&["--token-required=false"]).unwrap();
        assert!(matches!(chosen, FirewallChoice::None), "{chosen:?}");
    }

    #[test]
    fn record_needs_a_journal() {
        let err = choice(&["--firewall=record"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--firewall record needs --firewall-journal"
        );
        let chosen = choice(&[
            "--firewall=record",
            "--firewall-journal=/tmp/j",
            "--firewall-journal-fail-grants",
        ])
        .unwrap();
        let FirewallChoice::Record {
            journal,
            fail_grants,
        } = chosen
        else {
            panic!("{chosen:?}")
        };
        assert_eq!(journal, PathBuf::from("/tmp/j"));
        assert!(fail_grants);
    }

    #[test]
    fn bad_proxy_ports_fail_whatever_the_firewall() {
        for firewall in ["none", "iptables", "iptables-restore", "nftables"] {
            let err =
                choice(&[&format!("--firewall={firewall}"), "--proxy-ports=80,x"]).unwrap_err();
            assert_eq!(err.to_string(), "--proxy-ports", "{firewall}");
        }
    }

    #[test]
    fn the_iptables_choice_carries_the_listen_ports_as_service_ports() {
        let flags = parse(&[
            "--device=eth3",
            "--proxy-ports=443,80,443",
            "--kernel-margin=7s",
        ]);
        let listen: Vec<SocketAddr> = vec![
            "127.0.0.1:8443".parse().unwrap(),
            "[::1]:9443".parse().unwrap(),
        ];
        let chosen = firewall_choice(&flags, "/usr/sbin".into(), &listen).unwrap();
        let FirewallChoice::Iptables {
            rules,
            kernel_margin,
            ipset,
        } = &chosen
        else {
            panic!("{chosen:?}")
        };
        assert_eq!(rules.service_ports, vec![8443, 9443]);
        assert_eq!(rules.proxy_ports, vec![443, 80]);
        assert_eq!(rules.device, "eth3");
        assert_eq!(rules.command_timeout, Duration::from_secs(5));
        assert_eq!(*kernel_margin, Duration::from_secs(7));
        assert_eq!(
            *ipset,
            IpsetMode::Probe {
                fault_netlink: None
            }
        );
        assert_eq!(chosen.device(), Some("eth3"));
    }

    #[test]
    fn the_nftables_choice_carries_only_what_its_backend_uses() {
        let flags = parse(&[
            "--firewall=nftables",
            "--device=eth3",
            "--proxy-ports=443",
            "--kernel-margin=2s",
            "--fault-netlink=fail:1",
        ]);
        let chosen = firewall_choice(&flags, "/usr/sbin".into(), &listen()).unwrap();
        assert_eq!(
            chosen,
            FirewallChoice::Nftables(NftablesConfig {
                device: "eth3".into(),
                service_ports: vec![8880],
                proxy_ports: vec![443],
                kernel_margin: Duration::from_secs(2),
                timeout: Duration::from_secs(5),
                fault_netlink: Some("fail:1".parse().unwrap()),
            })
        );
        assert_eq!(chosen.device(), Some("eth3"));
    }

    #[test]
    fn ipset_unavailable_drops_the_netlink_fault() {
        let chosen = choice(&["--ipset-unavailable", "--fault-netlink=fail:1"]).unwrap();
        let FirewallChoice::Iptables { ipset, .. } = chosen else {
            panic!("{chosen:?}")
        };
        assert_eq!(ipset, IpsetMode::Unavailable);
        let chosen = choice(&["--fault-netlink=stall:2"]).unwrap();
        let FirewallChoice::Iptables { ipset, .. } = chosen else {
            panic!("{chosen:?}")
        };
        assert_eq!(
            ipset,
            IpsetMode::Probe {
                fault_netlink: Some("stall:2".parse().unwrap())
            }
        );
    }
}
