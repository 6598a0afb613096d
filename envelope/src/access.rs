//! `GET /v0/envelope/access`: the checks of SPEC §5 in their fixed order — method,
//! token, subject, WebSocket upgrade headers, transmit rate, client slots — and
//! only then the grant, which is in the kernel before the 101 goes out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::task::TaskTracker;

use crate::config::TokenPolicy;
use crate::grants::{AcquireError, GrantRequest, Grants};
use crate::metrics::Metrics;
use crate::session;
use crate::txrate::TxGate;

pub const PATH: &str = "/v0/envelope/access";
pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";
const MONITORING_SUBJECT: &str = "monitoring";

/// What every access request needs.
#[derive(Debug)]
pub struct Access {
    pub tokens: TokenPolicy,
    pub timeout: Duration,
    pub max_hold: Duration,
    pub grants: Grants,
    pub metrics: Arc<Metrics>,
    pub tx_gate: Option<Arc<TxGate>>,
    pub tls: bool,
    pub sessions: TaskTracker,
}

pub type HttpResponse = Response<Full<Bytes>>;

pub fn plain(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A refused request: its status and the one-line reason sent back.
struct Refusal(StatusCode, String);

/// Who the client is, once the token (if any) has been accepted.
struct Client {
    subject: String,
    monitoring: bool,
    /// Token expiry in Unix seconds, when a token was given.
    exp: Option<i64>,
}

impl Access {
    pub async fn handle(
        self: &Arc<Self>,
        peer: SocketAddr,
        mut req: Request<Incoming>,
    ) -> HttpResponse {
        if req.method() != Method::GET {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let client = match self.check_token(req.uri().query()) {
            Ok(client) => client,
            Err(Refusal(status, text)) => return plain(status, &text),
        };
        if !client.monitoring {
            if let Some(expected) = &self.tokens.subject {
                // Only a token names a subject; token-less clients (when allowed) have none.
                let has_token = client.exp.is_some();
                if has_token && &client.subject != expected {
                    self.metrics.count_token(PATH, false, "wrong-subject");
                    return plain(StatusCode::BAD_REQUEST, "token subject is not this service");
                }
            }
        }
        let Some(accept_key) = websocket_accept_key(req.headers()) else {
            return plain(
                StatusCode::BAD_REQUEST,
                "not a valid WebSocket upgrade request",
            );
        };
        let offered_subprotocol = offers_subprotocol(req.headers());
        if let Some(gate) = &self.tx_gate {
            if !client.monitoring && gate.over_limit() {
                self.metrics.count_tx(false, self.tls);
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transmit rate over the limit; try later",
                );
            }
            self.metrics.count_tx(true, self.tls);
        }
        let request = GrantRequest {
            peer: peer.ip().to_canonical(),
            subject: client.subject,
            monitoring: client.monitoring,
            deadline: tokio::time::Instant::now() + self.hold_for(client.exp),
        };
        let lease = match self.grants.acquire(request).await {
            Ok(lease) => lease,
            Err(
                e
                @ (AcquireError::Full(_) | AcquireError::ShuttingDown | AcquireError::EndedAtOnce),
            ) => {
                return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            }
            Err(e @ AcquireError::Firewall(_)) => {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            }
        };
        // The upgrade completes after this response is written; if it never
        // does, the session drops the lease and the grant is released.
        let upgrade = hyper::upgrade::on(&mut req);
        self.sessions.spawn(session::hold(upgrade, lease, peer));
        switching_protocols(&accept_key, offered_subprotocol)
    }

    fn check_token(&self, query: Option<&str>) -> Result<Client, Refusal> {
        let token = match single_access_token(query) {
            Ok(token) => token,
            Err(()) => {
                self.metrics.count_token(PATH, false, "duplicate-parameter");
                return Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "access_token given more than once".into(),
                ));
            }
        };
        let Some(token) = token else {
            if self.tokens.required {
                self.metrics.count_token(PATH, false, "missing");
                return Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    "access token required".into(),
                ));
            }
            return Ok(Client {
                subject: String::new(),
                monitoring: false,
                exp: None,
            });
        };
        let Some(verifier) = &self.tokens.verifier else {
            self.metrics.count_token(PATH, false, "no-verify-key");
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "tokens cannot be verified here (no --verify-key)".into(),
            ));
        };
        match verifier.verifier().verify(&token) {
            Ok(claims) => {
                self.metrics.count_token(PATH, true, "valid");
                Ok(Client {
                    monitoring: claims.sub == MONITORING_SUBJECT,
                    subject: claims.sub,
                    exp: Some(claims.exp),
                })
            }
            Err(rejection) => {
                self.metrics.count_token(PATH, false, rejection.label());
                Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    format!("invalid access token: {rejection}"),
                ))
            }
        }
    }

    /// max(exp − now, timeout), capped by max-hold; exact to the sub-second, so
    /// a token-set deadline falls on `exp` itself.
    fn hold_for(&self, exp: Option<i64>) -> Duration {
        let until_exp = exp.map_or(Duration::ZERO, |exp| {
            // A far-future exp (even i64::MAX) must not overflow: it is capped below anyway.
            match UNIX_EPOCH.checked_add(Duration::from_secs(exp.max(0) as u64)) {
                Some(at) => at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
                None => self.max_hold,
            }
        });
        until_exp.max(self.timeout).min(self.max_hold)
    }
}

/// The one `access_token` value of a query string; `Err` when it appears twice.
fn single_access_token(query: Option<&str>) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() != Some("access_token") {
            continue;
        }
        if found.is_some() {
            return Err(());
        }
        // An undecodable value cannot be a token; let the verifier call it malformed.
        found = Some(percent_decode(value).unwrap_or_else(|| value.to_owned()));
    }
    Ok(found)
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The `Sec-WebSocket-Accept` value, if this is a valid RFC 6455 upgrade request.
fn websocket_accept_key(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
        || headers.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13"
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .ok()?;
    (decoded.len() == 16).then(|| derive_accept_key(key.as_bytes()))
}

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
}

fn switching_protocols(accept_key: &str, subprotocol: bool) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn far_future_expiry_is_capped_without_overflow() {
        assert_eq!(hold(60, 3600, Some(i64::MAX)), Duration::from_secs(3600));
        assert_eq!(
            hold(60, 3600, Some(253_402_300_800)),
            Duration::from_secs(3600)
        );
        assert_eq!(hold(60, 3600, None), Duration::from_secs(60));
        assert_eq!(hold(60, 3600, Some(0)), Duration::from_secs(60));
    }

    fn hold(timeout: u64, max_hold: u64, exp: Option<i64>) -> Duration {
        let metrics = Arc::new(Metrics::new());
        let (grants, _) = crate::grants::Grants::spawn(
            Arc::new(crate::firewall::NoopFirewall),
            1,
            metrics.clone(),
        );
        let access = Access {
            tokens: TokenPolicy {
                required: false,
                verifier: None,
                subject: None,
            },
            timeout: Duration::from_secs(timeout),
            max_hold: Duration::from_secs(max_hold),
            grants,
            metrics,
            tx_gate: None,
            tls: false,
            sessions: TaskTracker::new(),
        };
        access.hold_for(exp)
    }

    #[test]
    fn access_token_is_taken_once_and_duplicates_are_refused() {
        assert_eq!(single_access_token(None), Ok(None));
        assert_eq!(single_access_token(Some("a=1")), Ok(None));
        assert_eq!(
            single_access_token(Some("access_token=x.y.z&a=1")),
            Ok(Some("x.y.z".into()))
        );
        assert_eq!(
            single_access_token(Some("access_token=A&access_token=B")),
            Err(())
        );
        assert_eq!(
            single_access_token(Some("access%5Ftoken=A&access_token=B")),
            Err(())
        );
        assert_eq!(
            single_access_token(Some("access_token=a%2Eb")),
            Ok(Some("a.b".into()))
        );
    }

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn valid_upgrade_gets_the_rfc_6455_accept_key() {
        assert_eq!(
            websocket_accept_key(&upgrade_headers()).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn incomplete_upgrades_are_refused() {
        for (name, value) in [
            (header::SEC_WEBSOCKET_VERSION, "8"),
            (header::SEC_WEBSOCKET_KEY, "short"),
            (header::UPGRADE, "h2c"),
            (header::CONNECTION, "keep-alive"),
        ] {
            let mut h = upgrade_headers();
            h.insert(name.clone(), HeaderValue::from_static(value));
            assert_eq!(websocket_accept_key(&h), None, "{name}: {value}");
        }
        let mut h = upgrade_headers();
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(websocket_accept_key(&h), None);
    }

    #[test]
    fn subprotocol_is_echoed_only_when_offered() {
        let mut h = upgrade_headers();
        assert!(!offers_subprotocol(&h));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, net.measurementlab.envelope"),
        );
        assert!(offers_subprotocol(&h));
    }
}
