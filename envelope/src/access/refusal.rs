//! Every way the access endpoint says no, as one closed enum: its status, its
//! stable label, the one line the client reads, and the metrics it counts —
//! turned into a response in exactly one place, [`Refusal::respond`].

use common::filters::Denied;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::Rejection;

use super::{NotAnUpgrade, PATH};
use crate::grants::AcquireError;
use crate::http::{plain, Reply};
use crate::logging::chain;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A token check or the transmit-rate gate refused (`common::filters`).
    #[error("{0}")]
    Denied(Denied),
    #[error("not a valid WebSocket upgrade request")]
    NotAnUpgrade,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not found")]
    NotFound,
    /// Every check passed but the grant owner could not grant: no slot,
    /// shutting down, or the firewall refused (the cause stays in the chain).
    #[error(transparent)]
    Grant(#[from] AcquireError),
    #[error("internal error")]
    Internal,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Denied(denied) => denied.status(),
            Refusal::NotAnUpgrade => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Grant(
                AcquireError::Full(_) | AcquireError::ShuttingDown | AcquireError::EndedAtOnce,
            ) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Grant(AcquireError::Firewall { .. }) | Refusal::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A stable name for logs; token refusals keep the labels of their metric.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Denied(denied) => denied.label(),
            Refusal::NotAnUpgrade => "not-an-upgrade",
            Refusal::MethodNotAllowed => "method-not-allowed",
            Refusal::NotFound => "not-found",
            Refusal::Grant(AcquireError::Full(_)) => "full",
            Refusal::Grant(AcquireError::ShuttingDown) => "shutting-down",
            Refusal::Grant(AcquireError::EndedAtOnce) => "ended-at-once",
            Refusal::Grant(AcquireError::Firewall { .. }) => "firewall",
            Refusal::Internal => "internal",
        }
    }

    /// Counts the refusal and answers it: status, the one line, and `Allow` for 405.
    pub fn respond(&self, metrics: &Metrics, tls: bool) -> Reply {
        match self {
            Refusal::Denied(denied) if denied.is_token() => {
                metrics.count_token(PATH, false, denied.label())
            }
            Refusal::Denied(_) => metrics.count_tx(false, tls),
            Refusal::Grant(AcquireError::Firewall { .. }) => {
                tracing::warn!(error = %chain(self), "grant refused")
            }
            _ => {}
        }
        let mut response = plain(self.status(), &self.to_string());
        if let Refusal::MethodNotAllowed = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        if let Some(&denied) = rejection.find::<Denied>() {
            Refusal::Denied(denied)
        } else if rejection.find::<NotAnUpgrade>().is_some() {
            Refusal::NotAnUpgrade
        } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
            Refusal::MethodNotAllowed
        } else if rejection.is_not_found() {
            Refusal::NotFound
        } else {
            tracing::error!(?rejection, "unexpected rejection");
            Refusal::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::firewall::{FirewallError, Subnet};

    fn firewall_failure() -> Refusal {
        Refusal::Grant(AcquireError::Firewall {
            subnet: Subnet::of_client("192.0.2.1".parse().unwrap()),
            source: Arc::new(FirewallError::Failed {
                operation: "ipset add".into(),
                message: "kernel says no".into(),
            }),
        })
    }

    #[test]
    fn each_refusal_has_its_status_and_line() {
        let cases = [
            (
                Refusal::Denied(Denied::MissingToken),
                401,
                "access token required",
            ),
            (Refusal::Denied(Denied::TxOverLimit), 503, ""),
            (
                Refusal::NotAnUpgrade,
                400,
                "not a valid WebSocket upgrade request",
            ),
            (Refusal::MethodNotAllowed, 405, "method not allowed"),
            (Refusal::NotFound, 404, "not found"),
            (
                Refusal::Grant(AcquireError::Full(3)),
                503,
                "all 3 client slots are in use",
            ),
            (
                Refusal::Grant(AcquireError::ShuttingDown),
                503,
                "the envelope is shutting down",
            ),
            (
                Refusal::Grant(AcquireError::EndedAtOnce),
                503,
                "the session was ended before it was granted",
            ),
            (
                firewall_failure(),
                500,
                "the grant for 192.0.2.0/24 could not be installed",
            ),
            (Refusal::Internal, 500, "internal error"),
        ];
        for (refusal, status, line) in cases {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            if !line.is_empty() {
                assert_eq!(refusal.to_string(), line);
            }
        }
    }

    #[test]
    fn the_client_reads_one_line_and_the_firewall_cause_stays_in_the_chain() {
        let refusal = firewall_failure();
        let response = refusal.respond(&Metrics::new(), false);
        assert_eq!(response.status(), 500);
        let cause = std::error::Error::source(&refusal).expect("firewall cause");
        assert_eq!(cause.to_string(), "ipset add failed: kernel says no");
        assert!(!refusal.to_string().contains("kernel says no"));
    }

    #[test]
    fn token_refusals_count_under_their_label_and_405_names_get() {
        let metrics = Metrics::new();
        Refusal::Denied(Denied::Replayed).respond(&metrics, false);
        assert!(
            metrics.encode().contains("reason=\"replayed\""),
            "{}",
            metrics.encode()
        );
        let response = Refusal::MethodNotAllowed.respond(&metrics, false);
        assert_eq!(response.headers()[header::ALLOW], "GET");
        assert_eq!(
            Refusal::Denied(Denied::WrongSubject).label(),
            "wrong-subject"
        );
    }
}
