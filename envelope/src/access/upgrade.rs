//! The WebSocket upgrade, ours rather than `warp::ws`: the RFC 6455 checks on
//! the request's headers, hyper's upgrade handle taken from the request, and
//! the 101 with the subprotocol echoed only when offered.

use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::SUBPROTOCOL;
use crate::http::Reply;

/// A request that is not a valid RFC 6455 upgrade (400).
#[derive(Debug)]
pub struct NotAnUpgrade;

impl warp::reject::Reject for NotAnUpgrade {}

/// A valid upgrade request: what the 101 needs, and hyper's handle on the connection.
pub struct Handshake {
    pub accept_key: String,
    pub subprotocol: bool,
    pub upgrade: OnUpgrade,
}

/// A valid RFC 6455 upgrade request, with hyper's upgrade handle; else [`NotAnUpgrade`].
pub fn websocket_upgrade() -> impl Filter<Extract = (Handshake,), Error = Rejection> + Copy {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(|headers: HeaderMap, upgrade: Option<OnUpgrade>| {
            let handshake = websocket_accept_key(&headers)
                .zip(upgrade)
                .map(|(accept_key, upgrade)| Handshake {
                    accept_key,
                    subprotocol: offers_subprotocol(&headers),
                    upgrade,
                })
                .ok_or_else(|| warp::reject::custom(NotAnUpgrade));
            std::future::ready(handshake)
        })
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

pub fn switching_protocols(accept_key: &str, subprotocol: bool) -> Reply {
    let mut response = Reply::default();
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
pub(super) mod tests {
    use super::*;

    pub fn upgrade_headers() -> HeaderMap {
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
