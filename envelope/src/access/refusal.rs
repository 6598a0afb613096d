//! Every way the access endpoint says no, as one closed enum: its status, its
//! stable label, the one line the client reads, how long a client should wait
//! before it asks again, and the metrics it counts — turned into a response in
//! exactly one place, [`Refusal::respond`]: an RFC 9457 problem (`type`
//! `urn:envelope:problem:LABEL`, the label the metrics use) that a program can
//! read, with `Retry-After` on every 503.

use std::time::Duration;

use common::filters::Denied;
use serde::Serialize;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::Rejection;

use super::NotAnUpgrade;
use crate::events::Counted;
use crate::grants::AcquireError;
use crate::http::{json_as, Reply};
use crate::logging::chain;

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
                AcquireError::Full { .. }
                | AcquireError::Draining { .. }
                | AcquireError::ShuttingDown
                | AcquireError::EndedAtOnce,
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
            Refusal::Grant(AcquireError::Full { .. }) => "full",
            Refusal::Grant(AcquireError::Draining { .. }) => "draining",
            Refusal::Grant(AcquireError::ShuttingDown) => "shutting-down",
            Refusal::Grant(AcquireError::EndedAtOnce) => "ended-at-once",
            Refusal::Grant(AcquireError::Firewall { .. }) => "firewall",
            Refusal::Internal => "internal",
        }
    }

    /// A short summary of the kind of problem, the same for every refusal
    /// of one label (RFC 9457 `title`).
    pub fn title(&self) -> &'static str {
        match self {
            Refusal::Denied(Denied::MissingToken) => "Access token required",
            Refusal::Denied(Denied::TxOverLimit) => "Server busy transmitting",
            Refusal::Denied(Denied::WrongSubject) => "Token for another service",
            Refusal::Denied(Denied::DuplicateToken) => "Access token given twice",
            Refusal::Denied(Denied::ReplayCacheFull) => "Too many live tokens",
            Refusal::Denied(_) => "Access token refused",
            Refusal::NotAnUpgrade => "Not a WebSocket upgrade",
            Refusal::MethodNotAllowed => "Method not allowed",
            Refusal::NotFound => "Not found",
            Refusal::Grant(AcquireError::Full { .. }) => "No free client slot",
            Refusal::Grant(AcquireError::Draining { .. }) => "Envelope draining",
            Refusal::Grant(AcquireError::ShuttingDown) => "Envelope shutting down",
            Refusal::Grant(AcquireError::EndedAtOnce) => "Session ended before it began",
            Refusal::Grant(AcquireError::Firewall { .. }) => "Firewall change failed",
            Refusal::Internal => "Internal error",
        }
    }

    /// How long the client should wait before it asks again: every 503 says.
    pub fn retry_after(&self) -> Option<Duration> {
        let secs = |s| Some(Duration::from_secs(s));
        match self {
            Refusal::Grant(e) if e.retry_after().is_some() => e.retry_after(),
            Refusal::Grant(AcquireError::EndedAtOnce) => secs(1),
            Refusal::Denied(Denied::TxOverLimit) => secs(5),
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => secs(60),
            _ => None,
        }
    }

    /// What the request counters count a refusal by the filters as: a
    /// token refusal under its label, a transmit-rate refusal as such.
    pub fn counted_by_filters(&self) -> Counted {
        match self {
            Refusal::Denied(denied) if denied.is_token() => Counted {
                token: Some(denied.label()),
                ..Counted::default()
            },
            Refusal::Denied(_) => Counted {
                tx: Some(false),
                ..Counted::default()
            },
            _ => Counted::default(),
        }
    }

    /// Answers the refusal: status, the problem body, `Allow` for 405 and
    /// `Retry-After` for 503. (The caller reports it as an event.)
    pub fn respond(&self) -> Reply {
        if let Refusal::Grant(AcquireError::Firewall { .. }) = self {
            tracing::warn!(error = %chain(self), "grant refused");
        }
        let problem = Problem {
            kind: format!("urn:envelope:problem:{}", self.label()),
            title: self.title(),
            status: self.status().as_u16(),
            detail: self.to_string(),
        };
        let mut response = json_as(self.status(), &problem, "application/problem+json");
        let headers = response.headers_mut();
        if let Refusal::MethodNotAllowed = self {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        if let Some(wait) = self.retry_after() {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        response
    }
}

/// An RFC 9457 problem body.
#[derive(Debug, Serialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
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
                Refusal::Grant(AcquireError::Full {
                    max: 3,
                    retry_after: Duration::from_secs(40),
                }),
                503,
                "all 3 client slots are in use",
            ),
            (
                Refusal::Grant(AcquireError::Draining {
                    retry_after: Duration::from_secs(60),
                }),
                503,
                "the envelope is draining: it takes no new clients",
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
        let response = refusal.respond();
        assert_eq!(response.status(), 500);
        let cause = std::error::Error::source(&refusal).expect("firewall cause");
        assert_eq!(cause.to_string(), "ipset add failed: kernel says no");
        assert!(!refusal.to_string().contains("kernel says no"));
    }

    #[test]
    fn token_refusals_count_under_their_label_and_405_names_get() {
        let counted = Refusal::Denied(Denied::Replayed).counted_by_filters();
        assert_eq!(counted.token, Some("replayed"));
        assert_eq!(counted.tx, None);
        let counted = Refusal::Denied(Denied::TxOverLimit).counted_by_filters();
        assert_eq!((counted.token, counted.tx), (None, Some(false)));
        assert_eq!(
            Refusal::NotAnUpgrade.counted_by_filters(),
            Counted::default()
        );
        let response = Refusal::MethodNotAllowed.respond();
        assert_eq!(response.headers()[header::ALLOW], "GET");
        assert_eq!(
            Refusal::Denied(Denied::WrongSubject).label(),
            "wrong-subject"
        );
    }

    async fn body(response: Reply) -> serde_json::Value {
        use http_body_util::BodyExt as _;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_refusal_is_a_problem_a_program_can_read_and_503s_say_when_to_return() {
        let full = Refusal::Grant(AcquireError::Full {
            max: 2,
            retry_after: Duration::from_secs(37),
        });
        let response = full.respond();
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "37");
        assert_eq!(
            body(response).await,
            serde_json::json!({
                "type": "urn:envelope:problem:full",
                "title": "No free client slot",
                "status": 503,
                "detail": "all 2 client slots are in use",
            })
        );
        let expired = Refusal::Denied(Denied::InvalidToken(common::Rejection::Expired));
        let response = expired.respond();
        assert_eq!(response.status(), 401);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let problem = body(response).await;
        assert_eq!(problem["type"], "urn:envelope:problem:expired");
        assert_eq!(problem["detail"], "invalid access token: token has expired");
        for refusal in [
            Refusal::Denied(Denied::TxOverLimit),
            Refusal::Denied(Denied::ReplayCacheFull),
            Refusal::Grant(AcquireError::ShuttingDown),
            Refusal::Grant(AcquireError::EndedAtOnce),
            Refusal::Grant(AcquireError::Draining {
                retry_after: Duration::from_secs(90),
            }),
        ] {
            let response = refusal.respond();
            assert_eq!(response.status(), 503, "{refusal:?}");
            assert!(
                response.headers().contains_key(header::RETRY_AFTER),
                "{refusal:?}"
            );
        }
    }
}
