//! One place where happenings become events (SPEC §10): a grant opened or
//! closed, a refusal, a revoke, a firewall change failing or recovering, a
//! reload, a drain, an admin request. [`Events::emit`] gives each a `seq`
//! (monotonic since start), the start's `boot` id and a `time`, writes its one
//! log line (text or JSON, client-chosen text escaped), counts its metrics, and
//! keeps it in a bounded buffer that `/v1/events` serves and followers tail
//! (`ring.rs`). Emitting never waits for a follower. Tokens, signatures and
//! payloads are never part of an event.

mod log;
mod ring;

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use self::ring::Ring;
pub use self::ring::{Cidr, Follower, Gone, Lost};
use crate::logging::escaped;
use crate::metrics::Metrics;

/// The longest token-derived text (kid, jti, sub) an event keeps.
const MAX_TOKEN_TEXT: usize = 128;

/// What happened. Field names are the wire names of `/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A client was refused before any grant.
    #[serde(rename = "access.refused")]
    AccessRefused {
        /// The metric label (`expired`, `unknown-kid`, `full`, `draining`, …).
        reason: &'static str,
        status: u16,
        peer: IpAddr,
        subnet: String,
        #[serde(flatten)]
        token: TokenFacts,
        /// What the metrics count it as.
        #[serde(skip)]
        counted: Counted,
    },
    #[serde(rename = "grant.opened")]
    GrantOpened {
        grant: u64,
        peer: IpAddr,
        subnet: String,
        subject: String,
        monitoring: bool,
        #[serde(flatten)]
        token: TokenFacts,
        #[serde(with = "time::serde::rfc3339")]
        deadline: OffsetDateTime,
        /// Whether a token and a transmit-rate gate were passed (metrics).
        #[serde(skip)]
        counted: Counted,
    },
    #[serde(rename = "grant.closed")]
    GrantClosed {
        grant: u64,
        peer: IpAddr,
        subnet: String,
        /// `client-closed`, `client-sent-data`, `deadline`, `revoked`,
        /// `shutdown`, `drain-timeout`, `connection-error`.
        reason: &'static str,
        held_ms: u64,
    },
    /// An operator revoked grants over the admin API.
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        grants: Vec<u64>,
        /// `all`, `id=N` or `ip=ADDR`.
        target: String,
        subnets: Vec<String>,
        by_uid: Option<u32>,
        by_pid: Option<i32>,
    },
    #[serde(rename = "firewall.failed")]
    FirewallFailed {
        operation: &'static str,
        subnets: Vec<String>,
        /// The whole cause chain.
        error: String,
    },
    /// A change that had failed went through (a revoke retry, say).
    #[serde(rename = "firewall.recovered")]
    FirewallRecovered {
        operation: &'static str,
        subnets: Vec<String>,
    },
    #[serde(rename = "keys.reloaded")]
    KeysReloaded {
        trigger: &'static str,
        /// `success` or `refused`.
        result: &'static str,
        kids: Vec<String>,
        added: Vec<String>,
        removed: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    #[serde(rename = "certificate.reloaded")]
    CertificateReloaded {
        trigger: &'static str,
        result: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        #[serde(
            with = "time::serde::rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        not_after: Option<OffsetDateTime>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// No new clients from now on: `by` `operator` (envelopectl drain) or `sigterm`.
    #[serde(rename = "drain.started")]
    DrainStarted {
        by: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_s: Option<u64>,
        held: usize,
    },
    /// `how`: `resumed`, `drained` (the last session ended), `timeout`, `signal`.
    #[serde(rename = "drain.ended")]
    DrainEnded { how: &'static str, held: usize },
    #[serde(rename = "admin.request")]
    AdminRequest {
        uid: Option<u32>,
        pid: Option<i32>,
        method: String,
        path: String,
        status: u16,
    },
}

/// What a token said, as far as it got: the `kid` its header names, and
/// `jti` and `sub` once its signature was verified. Never the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl TokenFacts {
    /// Bounded and escaped: these come from the client.
    pub fn new(kid: Option<&str>, jti: Option<&str>, sub: Option<&str>) -> TokenFacts {
        let clean = |text: Option<&str>| text.map(client_text);
        TokenFacts {
            kid: clean(kid),
            jti: clean(jti),
            sub: clean(sub),
        }
    }
}

/// Client-chosen text as an event keeps it: at most [`MAX_TOKEN_TEXT`]
/// characters, control and bidirectional characters escaped.
pub fn client_text(text: &str) -> String {
    let short: String = text.chars().take(MAX_TOKEN_TEXT).collect();
    escaped(&short).into_owned()
}

/// Which request counters an access event adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// The token check's outcome label (`valid`, `expired`, …), if a token
    /// was checked.
    pub token: Option<&'static str>,
    /// The transmit-rate gate's outcome, if it was asked.
    pub tx: Option<bool>,
    pub tls: bool,
}

impl Event {
    /// The wire name (`grant.opened`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AccessRefused { .. } => "access.refused",
            Event::GrantOpened { .. } => "grant.opened",
            Event::GrantClosed { .. } => "grant.closed",
            Event::GrantRevoked { .. } => "grant.revoked",
            Event::FirewallFailed { .. } => "firewall.failed",
            Event::FirewallRecovered { .. } => "firewall.recovered",
            Event::KeysReloaded { .. } => "keys.reloaded",
            Event::CertificateReloaded { .. } => "certificate.reloaded",
            Event::DrainStarted { .. } => "drain.started",
            Event::DrainEnded { .. } => "drain.ended",
            Event::AdminRequest { .. } => "admin.request",
        }
    }

    /// Every type an event can have, for filters and docs.
    pub const KINDS: [&'static str; 11] = [
        "access.refused",
        "grant.opened",
        "grant.closed",
        "grant.revoked",
        "firewall.failed",
        "firewall.recovered",
        "keys.reloaded",
        "certificate.reloaded",
        "drain.started",
        "drain.ended",
        "admin.request",
    ];

    /// The subnets the event is about, for `?subnet=` filters.
    fn subnets(&self) -> Vec<String> {
        match self {
            Event::AccessRefused { subnet, .. }
            | Event::GrantOpened { subnet, .. }
            | Event::GrantClosed { subnet, .. } => vec![subnet.clone()],
            Event::GrantRevoked { subnets, .. }
            | Event::FirewallFailed { subnets, .. }
            | Event::FirewallRecovered { subnets, .. } => subnets.clone(),
            _ => Vec::new(),
        }
    }
}

/// One event as the stream carries it.
#[derive(Debug, Serialize)]
pub struct Record {
    pub seq: u64,
    #[serde(serialize_with = "shared_str")]
    pub boot: Arc<str>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    #[serde(flatten)]
    pub event: Event,
}

/// The event hub: cheap to clone, shared by every part of the daemon that
/// reports a happening.
#[derive(Debug, Clone)]
pub struct Events {
    ring: Arc<Ring>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Keeps the last `capacity` events (`--events-buffer`).
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Events {
        Events {
            ring: Arc::new(Ring::new(capacity, boot_id())),
            metrics,
        }
    }

    pub fn boot(&self) -> &str {
        self.ring.boot()
    }

    /// Reports `event`: its log line, its metrics, and its place in the stream.
    pub fn emit(&self, event: Event) {
        log::count(&self.metrics, &event);
        let subnets = event.subnets();
        let entry = self.ring.push(event, subnets);
        log::write(&entry.record);
    }

    /// A reader of the stream from after `since` (or from the oldest held,
    /// or only what comes next when `follow` and no `since`).
    pub fn follow(&self, since: Option<u64>, follow: bool) -> Result<Follower, Gone> {
        self.ring.follow(since, follow)
    }
}

fn shared_str<S: serde::Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}

/// One id per start, so a follower can tell a restart from a reconnect.
fn boot_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}", nanos ^ (u64::from(std::process::id()) << 40))
}

#[cfg(test)]
mod tests;
