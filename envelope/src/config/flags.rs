//! The `envelope` command line as clap sees it: every flag with its env var,
//! default, Go-original alias and help text, parsed low-level and unchecked.
//! [`super`] validates a parsed [`Flags`] into a [`super::Config`]; nothing here
//! decides whether flags go together.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, ValueEnum};
use common::goflags::parse_duration;

use crate::firewall::NetlinkFault;
use crate::logging::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallKind {
    /// Real iptables/ip6tables guard on --device; grants are ipset members
    /// (falls back to iptables-restore rules where the kernel has no ipset).
    Iptables,
    /// The same guard with one rule per grant through iptables-restore.
    IptablesRestore,
    /// The same policy in an nf_tables table of its own (`inet envelope`);
    /// grants are set elements with kernel timeouts, each change one
    /// transaction over netlink.
    Nftables,
    /// Touch nothing (for development, or when another layer guards the host).
    None,
    /// Test backend: append each operation to --firewall-journal.
    #[value(hide = true)]
    Record,
}

/// Opens the firewall for a client's subnet while it holds a WebSocket
/// authorised by a signed access token, and closes it again afterwards.
#[derive(Debug, Parser)]
#[command(name = "envelope", version = common::build_info::long_version(), about, max_term_width = 100)]
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

    /// On SIGTERM, stop taking new clients and wait up to this long for held
    /// sessions to end before stopping (`0s`: stop at once, as the Go original).
    #[arg(long, env = "ENVELOPE_DRAIN_TIMEOUT", default_value = "0s", value_parser = parse_duration,
          value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// How many audit events the envelope keeps for `envelopectl events`
    /// (`GET /v1/events`); older ones are dropped.
    #[arg(long, env = "ENVELOPE_EVENTS_BUFFER", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub events_buffer: u32,

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

    /// Most connections one source subnet (/24 IPv4, /64 IPv6) may hold open
    /// at once, so that one subnet can never take the whole connection cap.
    #[arg(
        long,
        env = "ENVELOPE_MAX_CONNECTIONS_PER_SUBNET",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    pub max_connections_per_subnet: u32,

    /// Time allowed for the TLS handshake and for the request head.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub handshake_timeout: Duration,

    /// Longest a connection that never becomes a WebSocket may stay open,
    /// however many requests it sends.
    #[arg(long, default_value = "30s", value_parser = parse_duration, hide = true)]
    pub connection_lifetime: Duration,

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

    /// Longest a single firewall command may run before it is killed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, hide = true)]
    pub firewall_timeout: Duration,

    /// Test-only settings (hidden).
    #[command(flatten)]
    pub hooks: TestHooks,
}

/// Settings only tests use, all hidden: they change what the daemon does to
/// make a failure happen or to look inside, and are never for production.
#[derive(Debug, Clone, Args)]
pub struct TestHooks {
    /// Journal file of the `record` firewall backend.
    #[arg(long, hide = true)]
    pub firewall_journal: Option<PathBuf>,

    /// Make every grant of the `record` backend fail.
    #[arg(long, hide = true)]
    pub firewall_journal_fail_grants: bool,

    /// Behave as if the kernel had no ipset (exercises the fallback).
    #[arg(long, hide = true)]
    pub ipset_unavailable: bool,

    /// `fail:N` or `stall:N` makes the Nth netlink exchange of set-member
    /// changes fail or stall past the timeout (the soak).
    #[arg(long, hide = true, value_name = "fail:N|stall:N", value_parser = clap::builder::ValueParser::new(str::parse::<NetlinkFault>))]
    pub fault_netlink: Option<NetlinkFault>,

    /// Where transmit counters are read from.
    #[arg(long, default_value = "/proc/net/dev", hide = true)]
    pub tx_proc_path: PathBuf,

    /// Most live tokens the single-use cache remembers.
    #[arg(long, default_value_t = common::filters::DEFAULT_REPLAY_CAP, hide = true)]
    pub replay_cache_cap: usize,
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
}

/// Parses a command line as the binary does (Go-style spellings included).
#[cfg(test)]
pub(super) fn parse(args: &[&str]) -> Flags {
    use clap::CommandFactory;
    let args = std::iter::once("envelope")
        .chain(args.iter().copied())
        .map(String::from);
    Flags::parse_from(common::goflags::go_style_args(&Flags::command(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
