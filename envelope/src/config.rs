//! Command-line flags (with env vars and the Go original's spellings) and their
//! validation into a [`Config`]. Every start-up failure here is one line naming
//! the flag or file at fault.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgAction, Parser, ValueEnum};
use common::goflags::parse_duration;

pub use crate::firewall::FirewallChoice;
use crate::firewall::{IpsetMode, IptablesConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallKind {
    /// Real iptables/ip6tables guard on --device; grants are ipset members
    /// (falls back to iptables-restore rules where the kernel has no ipset).
    Iptables,
    /// The same guard with one rule per grant through iptables-restore.
    IptablesRestore,
    /// Touch nothing (for development, or when another layer guards the host).
    None,
    /// Test backend: append each operation to --firewall-journal.
    #[value(hide = true)]
    Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Opens the firewall for a client's subnet while it holds a WebSocket
/// authorised by a signed access token, and closes it again afterwards.
#[derive(Debug, Parser)]
#[command(name = "envelope", version, about, max_term_width = 100)]
pub struct Flags {
    /// Address to serve on; `:PORT` means every interface, IPv4 and IPv6.
    #[arg(
        long,
        env = "ENVELOPE_LISTEN_ADDRESS",
        default_value = ":8880",
        alias = "envelope.listen-address",
        value_name = "ADDR"
    )]
    pub listen_address: String,

    /// TLS certificate chain (PEM). Without --cert and --key the envelope serves plain HTTP.
    #[arg(
        long,
        env = "ENVELOPE_CERT",
        alias = "envelope.cert",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(
        long,
        env = "ENVELOPE_KEY",
        alias = "envelope.key",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,

    /// Public JWK or JWKS file to verify tokens with; repeat (or comma-separate) for rotation.
    #[arg(
        long,
        env = "ENVELOPE_VERIFY_KEY",
        value_delimiter = ',',
        alias = "envelope.verify-key",
        value_name = "FILE"
    )]
    pub verify_key: Vec<PathBuf>,

    /// Require a valid access token (`--token-required=false` serves token-less clients).
    #[arg(long, env = "ENVELOPE_TOKEN_REQUIRED", alias = "envelope.token-required",
          action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true", value_name = "BOOL")]
    pub token_required: bool,

    /// Accept each token once: its `jti` is remembered until its `exp`; a replay,
    /// or a token without `jti`, gets 401 (the memory is bounded; full = 503).
    #[arg(long, env = "ENVELOPE_SINGLE_USE_TOKENS", action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_value_t = false,
          default_missing_value = "true", value_name = "BOOL")]
    pub single_use_tokens: bool,

    /// Most live tokens the single-use cache remembers (tests lower it).
    #[arg(long, default_value_t = common::filters::DEFAULT_REPLAY_CAP, hide = true)]
    pub replay_cache_cap: usize,

    /// This machine's name; tokens must carry it in `aud`.
    #[arg(long, env = "ENVELOPE_MACHINE", alias = "envelope.machine")]
    pub machine: Option<String>,

    /// The service tokens must name in `sub` (`monitoring` is always accepted too).
    #[arg(long, env = "ENVELOPE_SUBJECT", alias = "envelope.subject")]
    pub subject: Option<String>,

    /// Expected token issuer (`iss`).
    #[arg(
        long,
        env = "ENVELOPE_ISSUER",
        default_value = "locate",
        alias = "envelope.issuer"
    )]
    pub issuer: String,

    /// Most clients holding a grant at once.
    #[arg(long, env = "ENVELOPE_MAX_CLIENTS", default_value_t = 1,
          alias = "envelope.max-clients", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,

    /// The public interface the envelope guards.
    #[arg(
        long,
        env = "ENVELOPE_DEVICE",
        default_value = "eth0",
        alias = "envelope.device"
    )]
    pub device: String,

    /// Shortest hold: a session lasts until max(token exp, now + timeout).
    #[arg(long, env = "ENVELOPE_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          alias = "envelope.timeout")]
    pub timeout: Duration,

    /// Longest hold, whatever the token says.
    #[arg(long, env = "ENVELOPE_MAX_HOLD", default_value = "1h", value_parser = parse_duration,
          alias = "envelope.max-hold")]
    pub max_hold: Duration,

    /// Firewall backend [default: iptables when tokens are required, else none].
    #[arg(
        long,
        env = "ENVELOPE_FIREWALL",
        value_enum,
        alias = "envelope.firewall"
    )]
    pub firewall: Option<FirewallKind>,

    /// TCP ports also opened (to everyone) while any grant is active; empty for none.
    #[arg(
        long,
        env = "ENVELOPE_PROXY_PORTS",
        default_value = "80,443",
        alias = "envelope.proxy-ports",
        value_name = "PORTS"
    )]
    pub proxy_ports: String,

    /// Unix socket of the admin API.
    #[arg(
        long,
        env = "ENVELOPE_ADMIN_SOCKET",
        default_value = "/run/envelope/admin.sock",
        value_name = "PATH"
    )]
    pub admin_socket: PathBuf,

    /// Group allowed to use the admin socket (mode 0660 instead of 0600).
    #[arg(long, env = "ENVELOPE_ADMIN_GROUP", value_name = "NAME")]
    pub admin_group: Option<String>,

    /// Address of the Prometheus /metrics endpoint, or `off`.
    #[arg(
        long,
        env = "ENVELOPE_METRICS_ADDRESS",
        default_value = ":9990",
        alias = "prometheusx.listen-address",
        value_name = "ADDR"
    )]
    pub metrics_address: String,

    /// Device whose transmit rate gates admission (with --tx-max-rate).
    #[arg(long, env = "ENVELOPE_TX_DEVICE", alias = "txcontroller.device")]
    pub tx_device: Option<String>,

    /// Refuse new clients (503) while --tx-device sends more than this many bit/s.
    #[arg(
        long,
        env = "ENVELOPE_TX_MAX_RATE",
        alias = "txcontroller.max-rate",
        value_name = "BITS"
    )]
    pub tx_max_rate: Option<u64>,

    /// Log format.
    #[arg(long, env = "ENVELOPE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Accepted for compatibility with the Go original; the envelope always
    /// listens as --listen-address says.
    #[arg(long = "httpx.tcp-network", hide = true, value_name = "tcp|tcp4|tcp6")]
    pub httpx_tcp_network: Option<String>,

    /// The Go original's paths to iptables, ip6tables and their -save/-restore:
    /// they must share one directory, which then stands for --iptables-dir.
    #[arg(long = "address.iptables", hide = true, value_name = "PATH",
          aliases = ["address.iptables-save", "address.iptables-restore", "address.ip6tables",
                     "address.ip6tables-save", "address.ip6tables-restore"])]
    pub go_iptables_paths: Vec<PathBuf>,

    /// Remove every rule and chain the envelope ever installs, then exit.
    #[arg(long)]
    pub cleanup: bool,

    /// Most TCP connections served at once (held sessions included).
    #[arg(
        long,
        env = "ENVELOPE_MAX_CONNECTIONS",
        default_value_t = 16384,
        hide = true
    )]
    pub max_connections: usize,

    /// Time allowed for the TLS handshake and for the request head.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub handshake_timeout: Duration,

    /// Journal file of the `record` firewall backend (tests).
    #[arg(long, hide = true)]
    pub firewall_journal: Option<PathBuf>,

    /// Make every grant of the `record` backend fail (tests).
    #[arg(long, hide = true)]
    pub firewall_journal_fail_grants: bool,

    /// Where transmit counters are read from (tests).
    #[arg(long, default_value = "/proc/net/dev", hide = true)]
    pub tx_proc_path: PathBuf,

    /// iptables-family binaries are looked up here (tests point it at wrappers).
    #[arg(
        long,
        env = "ENVELOPE_IPTABLES_DIR",
        default_value = "/usr/sbin",
        hide = true
    )]
    pub iptables_dir: PathBuf,

    /// Kernel timeout of a grant's set member beyond its session's deadline.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub kernel_margin: Duration,

    /// Test hook: behave as if the kernel had no ipset (exercises the fallback).
    #[arg(long, hide = true)]
    pub ipset_unavailable: bool,

    /// Longest a single firewall command may run before it is killed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub firewall_timeout: Duration,

    /// Test only (the soak): `fail:N` or `stall:N` makes the Nth netlink
    /// exchange of set-member changes fail or stall past the timeout.
    #[arg(long, hide = true, value_name = "fail:N|stall:N")]
    pub fault_netlink: Option<String>,
}

/// Token policy once flags are validated.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub required: bool,
    /// The verify keys (reloadable), when any `--verify-key` is given.
    pub verifier: Option<Arc<crate::keys::Keys>>,
    pub subject: Option<String>,
    /// `--single-use-tokens`: the cache of used `jti`s.
    pub replay: Option<Arc<common::filters::ReplayCache>>,
}

#[derive(Debug, Clone)]
pub struct TxLimit {
    pub device: String,
    pub max_bits_per_sec: u64,
    pub proc_path: PathBuf,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub machine: Option<String>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub tokens: TokenPolicy,
    pub max_clients: usize,
    pub timeout: Duration,
    pub max_hold: Duration,
    pub firewall: FirewallChoice,
    pub admin_socket: PathBuf,
    pub admin_group: Option<String>,
    pub metrics: Option<Vec<SocketAddr>>,
    pub tx_limit: Option<TxLimit>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

impl Flags {
    /// Parses the process arguments, accepting Go-style single-dash flags.
    pub fn from_env_args() -> Flags {
        use clap::CommandFactory;
        Flags::parse_from(common::goflags::go_style_args(
            &Flags::command(),
            std::env::args(),
        ))
    }

    pub fn validate(self) -> anyhow::Result<Config> {
        let iptables_dir =
            go_iptables_dir(&self.go_iptables_paths)?.unwrap_or(self.iptables_dir.clone());
        if let Some(network) = self.httpx_tcp_network.as_deref().filter(|n| *n != "tcp") {
            tracing::warn!(
                network,
                "-httpx.tcp-network is ignored; --listen-address decides the address family"
            );
        }
        let listen = parse_listen(&self.listen_address).context("--listen-address")?;
        let metrics = match self.metrics_address.as_str() {
            "off" | "" => None,
            addr => Some(parse_listen(addr).context("--metrics-address")?),
        };
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::tls::server_config(cert, key)?)),
            (None, None) => None,
            (Some(_), None) => bail!("--cert is given without --key"),
            (None, Some(_)) => bail!("--key is given without --cert"),
        };
        let verifier = if self.verify_key.is_empty() {
            None
        } else {
            let machine = self.machine.clone().unwrap_or_default();
            let keys =
                crate::keys::Keys::load(self.verify_key.clone(), self.issuer.clone(), machine)
                    .context("--verify-key")?;
            Some(Arc::new(keys))
        };
        if self.token_required {
            if verifier.is_none() {
                bail!("--verify-key is required when tokens are required (or set --token-required=false)");
            }
            if self.machine.as_deref().unwrap_or("").is_empty() {
                bail!("--machine is required when tokens are required");
            }
            if self.subject.as_deref().unwrap_or("").is_empty() {
                bail!("--subject is required when tokens are required");
            }
        } else if verifier.is_some() {
            if self.machine.as_deref().unwrap_or("").is_empty() {
                bail!("--machine is required with --verify-key");
            }
            if self.subject.as_deref().unwrap_or("").is_empty() {
                bail!("--subject is required with --verify-key");
            }
        }
        if self.max_hold < self.timeout {
            bail!(
                "--max-hold ({:?}) is shorter than --timeout ({:?})",
                self.max_hold,
                self.timeout
            );
        }
        let firewall = self.firewall.unwrap_or(if self.token_required {
            FirewallKind::Iptables
        } else {
            FirewallKind::None
        });
        // --proxy-ports is checked whatever the backend, as before.
        let firewall = match firewall {
            FirewallKind::None => {
                parse_ports(&self.proxy_ports).context("--proxy-ports")?;
                FirewallChoice::None
            }
            FirewallKind::Record => {
                let Some(journal) = self.firewall_journal.clone() else {
                    bail!("--firewall record needs --firewall-journal");
                };
                parse_ports(&self.proxy_ports).context("--proxy-ports")?;
                FirewallChoice::Record {
                    journal,
                    fail_grants: self.firewall_journal_fail_grants,
                }
            }
            FirewallKind::Iptables => FirewallChoice::Iptables {
                rules: self.iptables_rules(iptables_dir, &listen)?,
                kernel_margin: self.kernel_margin,
                ipset: if self.ipset_unavailable {
                    IpsetMode::Unavailable
                } else {
                    IpsetMode::Probe {
                        fault_netlink: self.fault_netlink.clone(),
                    }
                },
            },
            FirewallKind::IptablesRestore => {
                FirewallChoice::IptablesRestore(self.iptables_rules(iptables_dir, &listen)?)
            }
        };
        let tx_limit = match (self.tx_device, self.tx_max_rate) {
            (Some(device), Some(max)) if max > 0 => Some(TxLimit {
                device,
                max_bits_per_sec: max,
                proc_path: self.tx_proc_path,
            }),
            (Some(_), None) => bail!("--tx-device needs --tx-max-rate"),
            (None, Some(max)) if max > 0 => bail!("--tx-max-rate needs --tx-device"),
            _ => None,
        };
        Ok(Config {
            listen,
            machine: self.machine.clone().filter(|m| !m.is_empty()),
            tls,
            tokens: TokenPolicy {
                required: self.token_required,
                verifier,
                subject: self.subject.filter(|s| !s.is_empty()),
                replay: self
                    .single_use_tokens
                    .then(|| Arc::new(common::filters::ReplayCache::new(self.replay_cache_cap))),
            },
            max_clients: self.max_clients as usize,
            timeout: self.timeout,
            max_hold: self.max_hold,
            firewall,
            admin_socket: self.admin_socket,
            admin_group: self.admin_group,
            metrics,
            tx_limit,
            max_connections: self.max_connections.max(1),
            handshake_timeout: self.handshake_timeout,
        })
    }

    /// What both iptables backends need: the guard on `--device`, letting in
    /// the envelope's own listening ports.
    fn iptables_rules(
        &self,
        bin_dir: PathBuf,
        listen: &[SocketAddr],
    ) -> anyhow::Result<IptablesConfig> {
        Ok(IptablesConfig {
            device: self.device.clone(),
            service_ports: listen.iter().map(SocketAddr::port).collect(),
            proxy_ports: parse_ports(&self.proxy_ports).context("--proxy-ports")?,
            bin_dir,
            command_timeout: self.firewall_timeout,
        })
    }
}

/// `:PORT` → every interface (one dual-stack IPv6 socket); `HOST:PORT` → that address.
pub fn parse_listen(text: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("invalid port in {text:?}"))?;
        return Ok(vec![SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
        )]);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .with_context(|| {
            format!("cannot resolve {text:?} (expected :PORT, IP:PORT or [IPv6]:PORT)")
        })?
        .collect();
    if addrs.is_empty() {
        bail!("{text:?} resolves to no address");
    }
    Ok(addrs)
}

/// The one directory the Go original's `-address.*` binary paths point into.
fn go_iptables_dir(paths: &[PathBuf]) -> anyhow::Result<Option<PathBuf>> {
    let mut dirs = paths
        .iter()
        .map(|p| p.parent().unwrap_or(Path::new("/")).to_path_buf());
    let Some(first) = dirs.next() else {
        return Ok(None);
    };
    if let Some(other) = dirs.find(|d| *d != first) {
        bail!(
            "-address.iptables*: the iptables binaries must share one directory ({} and {})",
            first.display(),
            other.display()
        );
    }
    Ok(Some(first))
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
    use super::*;

    #[test]
    fn colon_port_listens_on_every_interface() {
        let addrs = parse_listen(":8880").unwrap();
        assert_eq!(addrs, vec!["[::]:8880".parse().unwrap()]);
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            vec!["127.0.0.1:0".parse().unwrap()]
        );
        assert!(parse_listen(":http").is_err());
    }

    #[test]
    fn proxy_ports_parse_and_empty_means_none() {
        assert_eq!(parse_ports("80,443").unwrap(), vec![80, 443]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert!(parse_ports("80,x").is_err());
        assert!(parse_ports("0").is_err());
    }

    #[test]
    fn go_style_command_line_parses() {
        use clap::CommandFactory;
        let args = [
            "envelope",
            "-envelope.listen-address=:0",
            "-envelope.token-required=false",
            "-timeout=90s",
        ]
        .map(String::from);
        let flags = Flags::parse_from(common::goflags::go_style_args(&Flags::command(), args));
        assert_eq!(flags.listen_address, ":0");
        assert!(!flags.token_required);
        assert_eq!(flags.timeout, Duration::from_secs(90));
    }

    fn parse(args: &[&str]) -> Flags {
        use clap::CommandFactory;
        let args = args.iter().map(|a| a.to_string());
        Flags::parse_from(common::goflags::go_style_args(&Flags::command(), args))
    }

    #[test]
    fn go_iptables_paths_name_the_binaries_directory() {
        let ok = parse(&[
            "envelope",
            "-envelope.token-required=false",
            "--firewall=iptables-restore",
            "-address.iptables=/opt/fw/iptables",
            "-address.ip6tables-restore=/opt/fw/ip6tables-restore",
        ]);
        let config = ok.validate().unwrap();
        let FirewallChoice::IptablesRestore(rules) = &config.firewall else {
            panic!("{:?}", config.firewall)
        };
        assert_eq!(rules.bin_dir, PathBuf::from("/opt/fw"));
        let mixed = parse(&[
            "envelope",
            "-envelope.token-required=false",
            "-address.iptables=/opt/fw/iptables",
            "-address.ip6tables=/usr/sbin/ip6tables",
        ]);
        let err = mixed.validate().unwrap_err().to_string();
        assert!(err.contains("share one directory"), "{err}");
    }

    #[test]
    fn go_httpx_network_is_accepted() {
        let flags = parse(&[
            "envelope",
            "-httpx.tcp-network=tcp",
            "-envelope.token-required=false",
        ]);
        assert_eq!(flags.httpx_tcp_network.as_deref(), Some("tcp"));
        assert!(flags.validate().is_ok());
    }
}
