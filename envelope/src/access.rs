//! `GET /v0/envelope/access` as warp filters, in the fixed order of SPEC §5 —
//! path, method, token (`common::filters`), subject, WebSocket upgrade headers,
//! transmit rate — and only then the handler: a client slot and the grant, which
//! is in the kernel before the 101 goes out. Every refusal is a rejection turned
//! into its status in one place, [`refusal`].
//!
//! The upgrade is ours, not `warp::ws`: warp's allocates 128 KiB buffers per
//! session and ignores `Sec-WebSocket-Protocol`. We take hyper's `OnUpgrade` from
//! the request, answer our own 101 (the subprotocol echoed only when offered) and
//! hand the upgraded connection to [`session::hold`] with small buffers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::filters::{
    self, AccessPolicy, Denied, NoCustomClaims, ReplayCache, Reservation, TxExempt, TxGate,
    Verified, VerifierSource,
};
use common::Clock as _;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::task::TaskTracker;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::config::TokenPolicy;
use crate::grants::{AcquireError, GrantRequest, Grants};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::server::{self, Reply};
use crate::session;

pub const PATH: &str = "/v0/envelope/access";
pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";

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

pub fn plain(status: StatusCode, text: &str) -> Reply {
    let mut response = Reply::new(format!("{text}\n").into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The reloadable verify keys as the token filter's source: each request
/// verifies with the set in force when it arrives.
struct KeysSource(Option<Arc<Keys>>);

impl VerifierSource for KeysSource {
    fn current(&self) -> Option<Arc<common::Verifier>> {
        self.0.as_ref().map(|keys| keys.verifier())
    }
}

/// A request that is not a valid RFC 6455 upgrade (400).
#[derive(Debug)]
struct NotAnUpgrade;

impl warp::reject::Reject for NotAnUpgrade {}

/// What the checks found: the client's token (if any), its single-use
/// reservation (with `--single-use-tokens`) and its upgrade.
struct Checked {
    token: Option<Verified>,
    reservation: Option<Reservation>,
    handshake: Handshake,
}

impl TxExempt for Checked {
    fn tx_exempt(&self) -> bool {
        self.token.tx_exempt()
    }
}

/// A valid upgrade request: what the 101 needs, and hyper's handle on the connection.
struct Handshake {
    accept_key: String,
    subprotocol: bool,
    upgrade: OnUpgrade,
}

/// The access endpoint, every other path (404) and the per-request log line.
pub fn routes(app: Arc<Access>) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    let policy = AccessPolicy::with_optional_subject(
        KeysSource(app.tokens.verifier.clone()),
        app.tokens.subject.clone(),
    );
    let token = if app.tokens.required {
        filters::access_token::<NoCustomClaims>(policy)
            .map(Some)
            .boxed()
    } else {
        filters::optional_access_token::<NoCustomClaims>(policy).boxed()
    };
    let replay = app.tokens.replay.clone();
    let checked = exact_path(PATH)
        .and(warp::get())
        .and(token)
        .and_then(move |token: Option<Verified>| {
            std::future::ready(single_use(replay.as_ref(), token))
        })
        .untuple_one()
        .and(websocket_upgrade())
        .map(|token, reservation, handshake| Checked {
            token,
            reservation,
            handshake,
        });
    let (admit_app, refuse_app) = (app.clone(), app.clone());
    let access = filters::transmit_rate_unless_exempt(app.tx_gate.clone(), checked)
        .and(server::peer())
        .then(move |checked, peer| admit(admit_app.clone(), checked, peer))
        .recover(move |rejection| {
            std::future::ready(Ok::<_, Infallible>(refusal(&refuse_app, rejection)))
        })
        .unify();
    logged(app.metrics.clone(), access)
}

/// Matches exactly `path` (no trailing slash, no prefix).
pub fn exact_path(path: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::path::full()
        .and_then(move |full: FullPath| {
            std::future::ready(if full.as_str() == path {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            })
        })
        .untuple_one()
}

/// A valid RFC 6455 upgrade request, with hyper's upgrade handle; else [`NotAnUpgrade`].
fn websocket_upgrade() -> impl Filter<Extract = (Handshake,), Error = Rejection> + Copy {
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

/// With `--single-use-tokens`, reserves the token's `jti` right after the token
/// checks; the reservation is given back if the request fails later on.
fn single_use(
    cache: Option<&Arc<ReplayCache>>,
    token: Option<Verified>,
) -> Result<(Option<Verified>, Option<Reservation>), Rejection> {
    let (Some(cache), Some(verified)) = (cache, token.as_ref()) else {
        return Ok((token, None));
    };
    let now = common::SystemClock.now_unix();
    match cache.reserve(verified.claims.jti.as_deref(), verified.claims.exp, now) {
        Ok(reservation) => Ok((token, Some(reservation))),
        Err(denied) => Err(warp::reject::custom(denied)),
    }
}

/// Every check passed: take a slot, put the grant in the kernel, then answer 101.
async fn admit(app: Arc<Access>, checked: Checked, peer: SocketAddr) -> Reply {
    let Checked {
        token,
        reservation,
        handshake,
    } = checked;
    if token.is_some() {
        app.metrics.count_token(PATH, true, "valid");
    }
    if app.tx_gate.is_some() {
        app.metrics.count_tx(true, app.tls);
    }
    let monitoring = token.as_ref().is_some_and(Verified::is_monitoring);
    let (subject, exp) = match token {
        Some(v) => (v.claims.sub, Some(v.claims.exp)),
        None => (String::new(), None),
    };
    let request = GrantRequest {
        peer: peer.ip().to_canonical(),
        subject,
        monitoring,
        deadline: tokio::time::Instant::now() + app.hold_for(exp),
    };
    let lease = match app.grants.acquire(request).await {
        Ok(lease) => lease,
        Err(
            e @ (AcquireError::Full(_) | AcquireError::ShuttingDown | AcquireError::EndedAtOnce),
        ) => {
            return plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
        Err(e @ AcquireError::Firewall(_)) => {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    };
    // Granted: a single-use token is now used for good.
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    // The upgrade completes after this response is written; if it never does,
    // the session drops the lease and the grant is released.
    app.sessions
        .spawn(session::hold(handshake.upgrade, lease, peer));
    switching_protocols(&handshake.accept_key, handshake.subprotocol)
}

/// Every refusal's status, line and metric, in one place (SPEC §5).
fn refusal(app: &Access, rejection: Rejection) -> Reply {
    if let Some(&denied) = rejection.find::<Denied>() {
        if denied.is_token() {
            app.metrics.count_token(PATH, false, denied.label());
        } else {
            app.metrics.count_tx(false, app.tls);
        }
        return denied.response();
    }
    if rejection.find::<NotAnUpgrade>().is_some() {
        return plain(
            StatusCode::BAD_REQUEST,
            "not a valid WebSocket upgrade request",
        );
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    if rejection.is_not_found() {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    tracing::error!(?rejection, "unexpected rejection");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// One log line and one status count per request; the query (token) is never logged.
fn logged<F>(
    metrics: Arc<Metrics>,
    inner: F,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Reply,), Error = Infallible> + Clone + Send + Sync,
{
    warp::any()
        .map(Instant::now)
        .and(warp::ext::optional::<server::PeerAddr>())
        .and(warp::method())
        .and(warp::path::full())
        .and(inner)
        .map(
            move |started: Instant,
                  peer: Option<server::PeerAddr>,
                  method: Method,
                  path: FullPath,
                  response: Reply| {
                let status = response.status().as_u16();
                metrics.count_status(status);
                let peer = peer.map_or_else(|| "-".to_owned(), |p| p.0.to_string());
                tracing::info!(
                    peer = %peer,
                    method = %method,
                    path = %path.as_str(),
                    status,
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                response
            },
        )
}

impl Access {
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

fn switching_protocols(accept_key: &str, subprotocol: bool) -> Reply {
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

    fn access(timeout: u64, max_hold: u64) -> Access {
        let metrics = Arc::new(Metrics::new());
        let (grants, _) = crate::grants::Grants::spawn(
            Arc::new(crate::firewall::NoopFirewall),
            1,
            metrics.clone(),
        );
        Access {
            tokens: TokenPolicy {
                required: false,
                verifier: None,
                subject: None,
                replay: None,
            },
            timeout: Duration::from_secs(timeout),
            max_hold: Duration::from_secs(max_hold),
            grants,
            metrics,
            tx_gate: None,
            tls: false,
            sessions: TaskTracker::new(),
        }
    }

    fn hold(timeout: u64, max_hold: u64, exp: Option<i64>) -> Duration {
        access(timeout, max_hold).hold_for(exp)
    }

    /// Sends one token-less upgrade request through the routes, as our loop would
    /// (peer address inserted), with or without hyper's upgrade handle.
    async fn upgrade_through_routes(app: Arc<Access>, upgrade: bool) -> Reply {
        use hyper::service::Service as _;
        let mut req = warp::http::Request::get(PATH)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        *req.headers_mut() = upgrade_headers();
        req.extensions_mut()
            .insert(server::PeerAddr("192.0.2.7:40000".parse().unwrap()));
        if upgrade {
            // A handle whose upgrade never happens (as when the 101 cannot be written).
            let never = hyper::upgrade::on(&mut req);
            req.extensions_mut().insert(never);
        }
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(app)));
        service.call(req).await.unwrap()
    }

    #[tokio::test]
    async fn an_upgrade_that_never_happens_releases_its_grant() {
        let app = Arc::new(access(60, 3600));
        let response = upgrade_through_routes(app.clone(), true).await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !app.grants.list().await.0.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the grant stayed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_request_hyper_cannot_upgrade_is_400_without_a_grant() {
        let app = Arc::new(access(60, 3600));
        let response = upgrade_through_routes(app.clone(), false).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(app.grants.list().await.0.is_empty());
        assert_eq!(app.metrics.encode().matches("status=\"400\"").count(), 1);
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
