//! Command-line flags (with env vars and the Go original's spellings) and their
//! validation into a [`Config`]: plain data (addresses, paths, durations,
//! choices), checked without opening a file — the daemon reads keys and
//! certificates when it binds. Every failure here is one line naming the flag.
//!
//! Low-level flags become high-level settings in two steps:
//! - `flags.rs`: the clap definition, parsed and unchecked ([`Flags`]).
//! - one file per concern that checks the flags it owns, with a unit test per
//!   rule that combines flags: `listen.rs` (addresses, the TLS pair),
//!   `tokens.rs` (the [`TokenPolicy`]), `limits.rs` (hold times, the
//!   transmit-rate gate), `firewall.rs` (the [`FirewallChoice`] with its settings).
//!
//! [`Flags::validate`] only composes them, in a fixed order.

mod firewall;
mod flags;
mod limits;
mod listen;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use self::flags::{FirewallKind, Flags, TestHooks};
pub use self::limits::TxLimit;
pub use self::listen::parse_listen;
pub use self::tokens::TokenPolicy;
pub use crate::firewall::FirewallChoice;
pub use crate::tls::CertFiles;

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub machine: Option<String>,
    /// `--cert` and `--key` (none: plain HTTP).
    pub tls: Option<CertFiles>,
    pub tokens: TokenPolicy,
    pub max_clients: usize,
    pub timeout: Duration,
    pub max_hold: Duration,
    /// `--drain-timeout`: zero stops at once on SIGTERM.
    pub drain_timeout: Duration,
    /// `--events-buffer`: audit events kept for `/v1/events`.
    pub events_buffer: usize,
    pub firewall: FirewallChoice,
    pub admin_socket: PathBuf,
    pub admin_group: Option<String>,
    pub metrics: Option<Vec<SocketAddr>>,
    pub tx_limit: Option<TxLimit>,
    pub max_connections: usize,
    pub max_connections_per_subnet: usize,
    pub handshake_timeout: Duration,
    pub connection_lifetime: Duration,
}

impl Flags {
    /// Checks every rule, in a fixed order, and builds the [`Config`]; the first
    /// rule broken is the error.
    pub fn validate(self) -> anyhow::Result<Config> {
        let iptables_dir = firewall::iptables_dir(&self)?;
        let listen = listen::listen_addresses(&self)?;
        let metrics = listen::metrics_addresses(&self)?;
        let tls = listen::tls(&self)?;
        let tokens = tokens::token_policy(&self)?;
        limits::check_hold_times(&self)?;
        let firewall = firewall::firewall_choice(&self, iptables_dir, &listen)?;
        let tx_limit = limits::tx_limit(&self)?;
        Ok(Config {
            machine: tokens::machine(&self),
            listen,
            tls,
            tokens,
            max_clients: self.max_clients as usize,
            timeout: self.timeout,
            max_hold: self.max_hold,
            drain_timeout: self.drain_timeout,
            events_buffer: self.events_buffer as usize,
            firewall,
            admin_socket: self.admin_socket,
            admin_group: self.admin_group,
            metrics,
            tx_limit,
            max_connections: self.max_connections.max(1),
            max_connections_per_subnet: self.max_connections_per_subnet as usize,
            handshake_timeout: self.handshake_timeout,
            connection_lifetime: self.connection_lifetime,
        })
    }

    /// What `--cleanup` needs: the iptables binaries' directory (honouring the
    /// Go original's `-address.iptables*` paths, as `validate` does) and the
    /// per-command timeout.
    pub fn cleanup_settings(&self) -> anyhow::Result<(PathBuf, Duration)> {
        Ok((firewall::iptables_dir(self)?, self.firewall_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::flags::parse;
    use super::*;

    #[test]
    fn go_httpx_network_is_accepted() {
        let flags = parse(&["-httpx.tcp-network=tcp", "-envelope.token-required=false"]);
        assert_eq!(flags.httpx_tcp_network.as_deref(), Some("tcp"));
        assert!(flags.validate().is_ok());
    }

    #[test]
    fn a_complete_command_line_validates_into_its_config() {
        let config = parse(&[
            "--listen-address=127.0.0.1:8443",
            "--verify-key=/keys/locate.jwk.pub",
            "--machine=mlab1",
            "--subject=ndt",
            "--firewall=record",
            "--firewall-journal=/tmp/journal",
            "--max-clients=3",
            "--max-connections=0",
        ])
        .validate()
        .unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(config.machine.as_deref(), Some("mlab1"));
        assert!(config.tokens.required);
        assert_eq!(
            config.tokens.verify_keys,
            vec![PathBuf::from("/keys/locate.jwk.pub")]
        );
        assert!(matches!(config.firewall, FirewallChoice::Record { .. }));
        assert_eq!(config.max_clients, 3);
        assert_eq!(config.max_connections, 1);
        assert!(config.tls.is_none() && config.tx_limit.is_none());
    }

    #[test]
    fn the_first_broken_rule_is_the_error() {
        // A bad listen address comes before the missing verify key.
        let err = parse(&["--listen-address=nowhere"]).validate().unwrap_err();
        assert_eq!(err.to_string(), "--listen-address");
        let err = parse(&[]).validate().unwrap_err();
        assert!(
            err.to_string().starts_with("--verify-key is required"),
            "{err}"
        );
    }

    #[test]
    fn cleanup_follows_the_go_iptables_paths_as_validate_does() {
        let flags = parse(&[
            "--cleanup",
            "-address.iptables=/opt/fw/iptables",
            "--firewall-timeout=2s",
        ]);
        let (dir, timeout) = flags.cleanup_settings().unwrap();
        assert_eq!(dir, PathBuf::from("/opt/fw"));
        assert_eq!(timeout, Duration::from_secs(2));
        let plain = parse(&["--cleanup"]).cleanup_settings().unwrap();
        assert_eq!(plain.0, PathBuf::from("/usr/sbin"));
    }
}
