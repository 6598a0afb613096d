//! [`Denied`]: the closed set of refusals the filters reject with, each with its
//! HTTP status (SPEC §5), a stable label (metrics) and the one line sent back,
//! and [`handle_rejection`], which turns one into that response in one place.

use std::fmt;

use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::Rejection;

/// Why a filter refused a request. Rejected as `warp::reject::custom(Denied)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `access_token` where one is required (401).
    MissingToken,
    /// `access_token` given more than once (400).
    DuplicateToken,
    /// A token was given but no verify key is configured (401).
    NoVerifier,
    /// The verifier refused the token (401).
    InvalidToken(Rejection),
    /// The token is valid but its custom claims do not fit the caller's type (401).
    BadCustomClaims,
    /// The token is valid but for another service's subject (400, as the Go original).
    WrongSubject,
    /// The guarded device transmits above its limit (503).
    TxOverLimit,
    /// Single-use tokens: this token was already used (401).
    Replayed,
    /// Single-use tokens: the token carries no `jti` to remember (401).
    MissingJti,
    /// Single-use tokens: the replay cache is full of live tokens (503, fail closed).
    ReplayCacheFull,
}

impl warp::reject::Reject for Denied {}

impl Denied {
    pub fn status(self) -> StatusCode {
        match self {
            Denied::MissingToken
            | Denied::NoVerifier
            | Denied::InvalidToken(_)
            | Denied::BadCustomClaims
            | Denied::Replayed
            | Denied::MissingJti => StatusCode::UNAUTHORIZED,
            Denied::DuplicateToken | Denied::WrongSubject => StatusCode::BAD_REQUEST,
            Denied::TxOverLimit | Denied::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable label for metrics and logs (the verifier's own label for an invalid token).
    pub fn label(self) -> &'static str {
        match self {
            Denied::MissingToken => "missing",
            Denied::DuplicateToken => "duplicate-parameter",
            Denied::NoVerifier => "no-verify-key",
            Denied::InvalidToken(rejection) => rejection.label(),
            Denied::BadCustomClaims => "bad-custom-claims",
            Denied::WrongSubject => "wrong-subject",
            Denied::TxOverLimit => "tx-over-limit",
            Denied::Replayed => "replayed",
            Denied::MissingJti => "missing-jti",
            Denied::ReplayCacheFull => "replay-cache-full",
        }
    }

    /// Whether this is a refusal of the token (as opposed to the transmit-rate gate).
    pub fn is_token(self) -> bool {
        self != Denied::TxOverLimit
    }

    /// The plain-text response: the status and the one-line reason.
    pub fn response(self) -> Response {
        let mut response = Response::new(format!("{self}\n").into());
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::MissingToken => f.write_str("access token required"),
            Denied::DuplicateToken => f.write_str("access_token given more than once"),
            Denied::NoVerifier => {
                f.write_str("tokens cannot be verified here (no verify key is configured)")
            }
            Denied::InvalidToken(rejection) => write!(f, "invalid access token: {rejection}"),
            Denied::BadCustomClaims => {
                f.write_str("invalid access token: custom claims do not fit this service")
            }
            Denied::WrongSubject => f.write_str("token subject is not this service"),
            Denied::TxOverLimit => f.write_str("transmit rate over the limit; try later"),
            Denied::Replayed => f.write_str("access token already used (single-use tokens)"),
            Denied::MissingJti => {
                f.write_str("access token has no jti (single-use tokens need one)")
            }
            Denied::ReplayCacheFull => {
                f.write_str("too many live single-use tokens remembered; try later")
            }
        }
    }
}

/// For `.recover(..)`: answers a [`Denied`] with its status and line; any other
/// rejection is passed on unchanged (warp's own 404/405 and the caller's).
pub async fn handle_rejection(rejection: warp::Rejection) -> Result<Response, warp::Rejection> {
    match rejection.find::<Denied>() {
        Some(denied) => Ok(denied.response()),
        None => Err(rejection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec_table() {
        assert_eq!(Denied::MissingToken.status(), 401);
        assert_eq!(Denied::NoVerifier.status(), 401);
        assert_eq!(Denied::InvalidToken(Rejection::Expired).status(), 401);
        assert_eq!(Denied::BadCustomClaims.status(), 401);
        assert_eq!(Denied::DuplicateToken.status(), 400);
        assert_eq!(Denied::WrongSubject.status(), 400);
        assert_eq!(Denied::TxOverLimit.status(), 503);
        assert_eq!(Denied::InvalidToken(Rejection::Expired).label(), "expired");
        assert!(!Denied::TxOverLimit.is_token());
        assert_eq!(Denied::Replayed.status(), 401);
        assert_eq!(Denied::MissingJti.status(), 401);
        assert_eq!(Denied::ReplayCacheFull.status(), 503);
        assert_eq!(Denied::Replayed.label(), "replayed");
    }
}
