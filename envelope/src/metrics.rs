//! Prometheus metrics (prometheus-client), with the Go original's names where
//! they exist, and the `/metrics` endpoint (a warp filter) that serves them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::Filter;

use crate::access::{exact_path, plain};
use crate::server::Reply;

/// `/metrics` (any method, as before); every other path is 404.
pub fn routes(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    exact_path("/metrics")
        .map(move || {
            let mut response = Reply::new(metrics.encode().into());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        })
        .or(warp::any().map(|| plain(StatusCode::NOT_FOUND, "not found")))
        .unify()
}

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
    pub trigger: &'static str,
    pub result: &'static str,
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
            "Verify-key reloads by trigger (sighup or file or admin) and result",
            key_reloads.clone(),
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
        }
    }

    pub fn count_key_reload(&self, trigger: &'static str, accepted: bool) {
        let labels = ReloadLabels {
            trigger,
            result: if accepted { "success" } else { "failure" },
        };
        self.key_reloads.get_or_create(&labels).inc();
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
