//! Wire types of the admin API (SPEC §6), shared so that the daemon and
//! `envelopectl` cannot disagree. Every body is JSON; unknown fields are refused.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Versioned root of every admin path.
pub const API_ROOT: &str = "/v1";
/// `GET` lists, `DELETE` revokes (all, or `?ip=ADDR`); `/{id}` names one grant.
pub const GRANTS_PATH: &str = "/v1/grants";
pub const STATUS_PATH: &str = "/v1/status";
/// `POST` reloads the verify keys (all or nothing).
pub const RELOAD_PATH: &str = "/v1/reload";
/// `GET` reads the audit events (NDJSON): `?since=SEQ&follow=1&type=T,…&subnet=CIDR`.
pub const EVENTS_PATH: &str = "/v1/events";
/// `POST` stops taking new clients (lame duck) without stopping.
pub const DRAIN_PATH: &str = "/v1/drain";
/// `POST` takes new clients again after a drain.
pub const RESUME_PATH: &str = "/v1/resume";
/// Where the daemon listens by default, and where `envelopectl` looks.
pub const DEFAULT_SOCKET: &str = "/run/envelope/admin.sock";
/// Environment variable both the daemon and `envelopectl` read for the socket path.
pub const SOCKET_ENV: &str = "ENVELOPE_ADMIN_SOCKET";

/// One live grant: a client session holding its subnet open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub id: u64,
    pub ip: IpAddr,
    pub subnet: String,
    pub subject: String,
    pub monitoring: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// Seconds the kernel itself still keeps the subnet open (its set member's
    /// timeout: the deadline plus a safety margin), read when listed; absent
    /// when the firewall backend has no kernel timeouts. `0` means the kernel
    /// holds no member for it (deleted by hand, or expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_remaining_seconds: Option<u64>,
}

/// Answer to every revoke: the ids whose sessions were closed and rules removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    pub revoked: Vec<u64>,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The daemon's version (`0.2.0`).
    pub version: String,
    /// The commit it was built from (`1a2b3c4`, `-dirty` appended when the tree
    /// was; `unknown` for a tarball build); empty from a daemon before 0.2.0.
    #[serde(default)]
    pub revision: String,
    /// The compiler that built it (`1.95.0`); empty from a daemon before 0.2.0.
    #[serde(default)]
    pub rustc: String,
    pub machine: Option<String>,
    pub subject: Option<String>,
    pub firewall: String,
    pub max_clients: usize,
    pub active_grants: usize,
    /// Subnets whose revoke failed and is being retried (each keeps a slot).
    pub pending_revokes: usize,
    pub uptime_seconds: u64,
    /// The verify keys in force (empty without `--verify-key`).
    #[serde(default)]
    pub keys: Vec<LoadedKey>,
    /// When they were loaded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub keys_loaded_at: Option<OffsetDateTime>,
    /// Where the access endpoint listens, as bound (port 0 resolved).
    #[serde(default)]
    pub listening: Vec<std::net::SocketAddr>,
    /// Where `/metrics` listens (empty when it is off).
    #[serde(default)]
    pub metrics_listening: Vec<std::net::SocketAddr>,
    /// The TLS certificate in force (absent when serving plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// Whether new clients are taken, and while stopping how long is left.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// This start's id, as every event carries it (`/v1/events`).
    #[serde(default)]
    pub boot: String,
}

/// `serving`, `draining` (an operator's drain) or `stopping` (a SIGTERM's
/// drain): the answer to `/v1/drain` and `/v1/resume`, and part of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    pub state: String,
    /// Sessions still holding a grant.
    #[serde(default)]
    pub active_grants: usize,
    /// While stopping: seconds until the drain timeout closes what is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_in_seconds: Option<u64>,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            state: "serving".into(),
            active_grants: 0,
            stop_in_seconds: None,
        }
    }
}

/// The leaf of the TLS certificate chain in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// RFC 4514 form, e.g. `CN=envelope.example`.
    pub subject: String,
    /// Hex.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: OffsetDateTime,
}

/// One verify key in force: its `kid` and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadedKey {
    pub kid: String,
    pub file: String,
}

/// Answer to a reload that was accepted: the kids now in force (with when
/// they were loaded), and the certificate now in force when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reloaded {
    pub kids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

/// Any error: the cause chain, outermost first, as `envelopectl` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub errors: Vec<String>,
    /// With `410 Gone` from `/v1/events`: the oldest seq still held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

impl ApiError {
    pub fn new(message: impl Into<String>) -> ApiError {
        ApiError {
            errors: vec![message.into()],
            oldest_seq: None,
        }
    }

    /// The chain of an error and its sources.
    pub fn from_chain(error: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError {
            errors: crate::chain::causes(error).map(|e| e.to_string()).collect(),
            oldest_seq: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_round_trips_with_rfc3339_times() {
        let json = r#"{"id":7,"ip":"192.0.2.7","subnet":"192.0.2.0/24","subject":"ndt","monitoring":false,"started":"2026-11-25T10:00:00Z","deadline":"2026-11-25T10:01:00Z"}"#;
        let grant: Grant = serde_json::from_str(json).unwrap();
        assert_eq!(grant.id, 7);
        assert_eq!(grant.kernel_remaining_seconds, None);
        assert_eq!(serde_json::to_string(&grant).unwrap(), json);
        let with_kernel = json.replace('}', r#","kernel_remaining_seconds":64}"#);
        let grant: Grant = serde_json::from_str(&with_kernel).unwrap();
        assert_eq!(grant.kernel_remaining_seconds, Some(64));
        assert_eq!(serde_json::to_string(&grant).unwrap(), with_kernel);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<Revoked>(r#"{"revoked":[],"extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn error_chain_lists_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("revoking grant 3")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("iptables-restore exited 1"));
        assert_eq!(
            ApiError::from_chain(&e).errors,
            ["revoking grant 3", "iptables-restore exited 1"]
        );
    }
}
