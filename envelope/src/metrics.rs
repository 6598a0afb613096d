//! The Prometheus registry (prometheus-client), with the Go original's names
//! where they exist, and one counting method per happening. It knows nothing of
//! HTTP: the metrics listener (`exporter.rs`) serves it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub path: String,
    pub request: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxLabels {
    pub request: &'static str,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `keys` or `certificate`.
    pub what: &'static str,
    pub trigger: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `access`, `metrics` or `admin`.
    pub listener: &'static str,
    /// `connection-limit` or `subnet-limit`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FirewallLabels {
    pub operation: &'static str,
    pub result: &'static str,
}

/// `envelope_build_info`'s labels: which build runs here.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
    pub rustc: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the envelope exports, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabels, Counter>,
    pub token_requests: Family<TokenLabels, Counter>,
    pub tx_requests: Family<TxLabels, Counter>,
    pub active_grants: Gauge,
    pub grant_duration: Histogram,
    pub firewall_latency: HistogramFamily<FirewallLabels>,
    pub revoke_failures: Counter,
    pub key_reloads: Family<ReloadLabels, Counter>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub lame_duck: Gauge,
    pub lame_duck_experiment: Gauge,
    pub verify_keys: Family<KeyLabels, Gauge>,
    pub tokens_accepted: Family<KidLabels, Counter>,
    pub certificate_expiry: Gauge,
    pub events: Family<TypeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub kid: String,
    pub alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KidLabels {
    pub kid: String,
}

fn firewall_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "envelope_build_info",
            "The running build: version, commit and compiler (always 1)",
            build_info.clone(),
        );
        let build = BuildLabels {
            version: common::build_info::VERSION,
            revision: common::build_info::REVISION,
            rustc: common::build_info::RUSTC,
        };
        build_info.get_or_create(&build).set(1);
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "envelope_requests",
            "Requests to the envelope by HTTP status",
            requests.clone(),
        );
        let token_requests = Family::<TokenLabels, Counter>::default();
        registry.register(
            "controller_access_token_requests",
            "Access-token checks by outcome and reason",
            token_requests.clone(),
        );
        let tx_requests = Family::<TxLabels, Counter>::default();
        registry.register(
            "controller_access_txcontroller_requests",
            "Transmit-rate admission checks by outcome",
            tx_requests.clone(),
        );
        let active_grants = Gauge::default();
        registry.register(
            "envelope_active_grants",
            "Sessions currently holding a grant",
            active_grants.clone(),
        );
        let grant_duration = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "envelope_grant_duration_seconds",
            "How long grants were held",
            grant_duration.clone(),
        );
        let firewall_latency: HistogramFamily<FirewallLabels> =
            Family::new_with_constructor(firewall_histogram);
        registry.register(
            "envelope_firewall_operation_duration_seconds",
            "Latency of firewall transactions",
            firewall_latency.clone(),
        );
        let revoke_failures = Counter::default();
        registry.register(
            "envelope_firewall_revoke_failures",
            "Revokes that failed and were scheduled for retry",
            revoke_failures.clone(),
        );
        let key_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "envelope_key_reloads",
            "Reloads of the verify keys or the TLS certificate, by trigger (sighup, file, admin) and result",
            key_reloads.clone(),
        );
        let connections_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "envelope_connections_refused",
            "Connections closed at accept by the connection limits, by listener and reason",
            connections_refused.clone(),
        );
        let lame_duck = Gauge::default();
        registry.register(
            "envelope_lame_duck",
            "1 while the envelope takes no new clients (draining or stopping), else 0",
            lame_duck.clone(),
        );
        let lame_duck_experiment = Gauge::default();
        registry.register(
            "lame_duck_experiment",
            "The same as envelope_lame_duck, under the name M-Lab's alerts and Locate read",
            lame_duck_experiment.clone(),
        );
        let verify_keys = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "envelope_verify_key_info",
            "1 for each verify key loaded now, by kid and algorithm",
            verify_keys.clone(),
        );
        let tokens_accepted = Family::<KidLabels, Counter>::default();
        registry.register(
            "envelope_tokens_accepted",
            "Tokens that passed every check, by the kid that verified them",
            tokens_accepted.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "envelope_tls_certificate_expiry_seconds",
            "notAfter of the TLS leaf certificate in force, as a Unix time (0 when serving plain HTTP)",
            certificate_expiry.clone(),
        );
        let events = Family::<TypeLabels, Counter>::default();
        registry.register(
            "envelope_events",
            "Audit events by type (see GET /v1/events)",
            events.clone(),
        );
        Metrics {
            registry,
            requests,
            token_requests,
            tx_requests,
            active_grants,
            grant_duration,
            firewall_latency,
            revoke_failures,
            key_reloads,
            connections_refused,
            lame_duck,
            lame_duck_experiment,
            verify_keys,
            tokens_accepted,
            certificate_expiry,
            events,
        }
    }

    pub fn count_reload(&self, what: &'static str, trigger: &'static str, accepted: bool) {
        let labels = ReloadLabels {
            what,
            trigger,
            result: if accepted { "success" } else { "failure" },
        };
        self.key_reloads.get_or_create(&labels).inc();
    }

    /// `envelope_verify_key_info`: exactly the keys in force now.
    pub fn set_verify_keys<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'static str)>) {
        self.verify_keys.clear();
        for (kid, alg) in keys {
            self.verify_keys
                .get_or_create(&KeyLabels {
                    kid: kid.to_owned(),
                    alg,
                })
                .set(1);
        }
    }

    pub fn count_token_accepted(&self, kid: &str) {
        self.tokens_accepted
            .get_or_create(&KidLabels {
                kid: kid.to_owned(),
            })
            .inc();
    }

    pub fn count_event(&self, kind: &'static str) {
        self.events
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    pub fn count_status(&self, status: u16) {
        self.requests.get_or_create(&StatusLabels { status }).inc();
    }

    pub fn count_token(&self, path: &str, accepted: bool, reason: &'static str) {
        let labels = TokenLabels {
            path: path.to_owned(),
            request: if accepted { "accepted" } else { "rejected" },
            reason,
        };
        self.token_requests.get_or_create(&labels).inc();
    }

    pub fn count_tx(&self, accepted: bool, tls: bool) {
        let labels = TxLabels {
            request: if accepted { "accepted" } else { "rejected" },
            protocol: if tls { "https" } else { "http" },
        };
        self.tx_requests.get_or_create(&labels).inc();
    }

    pub fn observe_firewall(&self, operation: &'static str, took: Duration, ok: bool) {
        let labels = FirewallLabels {
            operation,
            result: if ok { "ok" } else { "error" },
        };
        self.firewall_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The exposition text served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
