//! `GET /v0/envelope/access` as warp filters, in the fixed order of SPEC §5 —
//! path, method, token (`common::filters`), subject, WebSocket upgrade headers
//! (`upgrade.rs`), transmit rate — and only then the handler: a client slot and
//! the grant, which is in the kernel before the 101 goes out. Every refusal is
//! a [`Refusal`], answered in one place.

mod refusal;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::filters::{
    self, AccessPolicy, Denied, NoCustomClaims, ReplayCache, Reservation, TxExempt, TxGate,
    Verified, VerifierSource,
};
use common::Clock as _;
use tokio_util::task::TaskTracker;
use warp::http::Method;
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::events::{client_text, Counted, Event, Events, TokenFacts};
use crate::firewall::Subnet;
use crate::grants::{GrantRequest, Grants};
use crate::http::{exact_path, peer, PeerAddr, Reply};
use crate::keys::Keys;
use crate::logging::escaped;
use crate::metrics::Metrics;
use crate::session;

pub use refusal::Refusal;
use upgrade::{websocket_upgrade, Handshake, NotAnUpgrade};

pub const PATH: &str = "/v0/envelope/access";
pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";

/// The token checks as the daemon runs them.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub required: bool,
    /// The verify keys in force (reloadable); none without `--verify-key`.
    pub keys: Option<Arc<Keys>>,
    /// `--subject` (`monitoring` is always accepted too).
    pub subject: Option<String>,
    /// `--single-use-tokens`: the used `jti`s.
    pub replay: Option<Arc<ReplayCache>>,
}

/// What every access request needs.
#[derive(Debug)]
pub struct Access {
    pub tokens: Tokens,
    pub timeout: Duration,
    pub max_hold: Duration,
    pub grants: Grants,
    pub metrics: Arc<Metrics>,
    pub tx_gate: Option<Arc<TxGate>>,
    pub tls: bool,
    pub sessions: TaskTracker,
    pub events: Events,
}

/// The reloadable verify keys as the token filter's source: each request
/// verifies with the set in force when it arrives.
struct KeysSource(Option<Arc<Keys>>);

impl VerifierSource for KeysSource {
    fn current(&self) -> Option<Arc<common::Verifier>> {
        self.0.as_ref().map(|keys| keys.verifier())
    }
}

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

/// The access endpoint, every other path (404) and the per-request log line.
pub fn routes(app: Arc<Access>) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    let policy = AccessPolicy::with_optional_subject(
        KeysSource(app.tokens.keys.clone()),
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
    // Every outcome is reported once: `admit` reports grants and the refusals
    // of the grant owner; a filter's refusal is reported here, with what the
    // token said as far as it got.
    let access = filters::transmit_rate_unless_exempt(app.tx_gate.clone(), checked)
        .and(peer())
        .then(move |checked, peer| admit(admit_app.clone(), checked, peer))
        .map(Ok)
        .recover(|rejection| std::future::ready(Ok::<_, Infallible>(Err(Refusal::from(rejection)))))
        .unify();
    let access = warp::ext::optional::<PeerAddr>()
        .and(filters::raw_query())
        .and(access)
        .map(
            move |peer: Option<PeerAddr>, query: Option<String>, answer: Result<Reply, Refusal>| {
                answer.unwrap_or_else(|refusal| {
                    if let Some(peer) = peer {
                        let token = filters::token_in_query(query.as_deref());
                        refuse_app.report_refusal(
                            &refusal,
                            peer.0,
                            filter_facts(&refusal, token.as_deref()),
                        );
                    }
                    refusal.respond()
                })
            },
        );
    logged(app.metrics.clone(), access)
}

/// What a refused token said, as far as it got: the kid its header names,
/// and its `jti` and `sub` once its signature was verified.
fn filter_facts(refusal: &Refusal, token: Option<&str>) -> (TokenFacts, Counted) {
    let Some(token) = token else {
        return (TokenFacts::default(), refusal.counted_by_filters());
    };
    let verified = match refusal {
        Refusal::Denied(Denied::InvalidToken(rejection)) => rejection.after_signature(),
        Refusal::Denied(
            Denied::WrongSubject | Denied::Replayed | Denied::MissingJti | Denied::ReplayCacheFull,
        ) => true,
        _ => false,
    };
    let kid = common::verify::token_kid(token);
    let (jti, sub) = if verified {
        common::verify::payload_ids(token)
    } else {
        (None, None)
    };
    (
        TokenFacts::new(kid.as_deref(), jti.as_deref(), sub.as_deref()),
        refusal.counted_by_filters(),
    )
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

/// Every check passed: take a slot, put the grant in the kernel, then answer
/// 101. Reports the grant, or the grant owner's refusal.
async fn admit(app: Arc<Access>, checked: Checked, peer: SocketAddr) -> Reply {
    let Checked {
        token,
        reservation,
        handshake,
    } = checked;
    let counted = Counted {
        token: token.as_ref().map(|_| "valid"),
        tx: app.tx_gate.as_ref().map(|_| true),
        tls: app.tls,
    };
    let facts = token.as_ref().map_or_else(TokenFacts::default, |v| {
        TokenFacts::new(Some(&v.kid), v.claims.jti.as_deref(), Some(&v.claims.sub))
    });
    let monitoring = token.as_ref().is_some_and(Verified::is_monitoring);
    let (subject, exp) = match token {
        Some(v) => (v.claims.sub, Some(v.claims.exp)),
        None => (String::new(), None),
    };
    let hold = app.hold_for(exp);
    let request = GrantRequest {
        peer: peer.ip().to_canonical(),
        subject: subject.clone(),
        monitoring,
        deadline: tokio::time::Instant::now() + hold,
    };
    let lease = match app.grants.acquire(request).await {
        Ok(lease) => lease,
        Err(e) => {
            let refusal = Refusal::Grant(e);
            app.report_refusal(&refusal, peer, (facts, counted));
            return refusal.respond();
        }
    };
    // Granted: a single-use token is now used for good.
    if let Some(reservation) = reservation {
        reservation.commit();
    }
    let ip = peer.ip().to_canonical();
    app.events.emit(Event::GrantOpened {
        grant: lease.id(),
        peer: ip,
        subnet: Subnet::of_client(ip).to_string(),
        subject: client_text(&subject),
        monitoring,
        token: facts,
        deadline: time::OffsetDateTime::now_utc() + hold,
        counted,
    });
    // The upgrade completes after this response is written; if it never does,
    // the session drops the lease and the grant is released.
    app.sessions.spawn(session::hold(
        handshake.upgrade,
        lease,
        peer,
        app.events.clone(),
    ));
    upgrade::switching_protocols(&handshake.accept_key, handshake.subprotocol)
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
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::method())
        .and(warp::path::full())
        .and(inner)
        .map(
            move |started: Instant,
                  peer: Option<PeerAddr>,
                  method: Method,
                  path: FullPath,
                  response: Reply| {
                let status = response.status().as_u16();
                metrics.count_status(status);
                let peer = peer.map_or_else(|| "-".to_owned(), |p| p.0.to_string());
                tracing::info!(
                    peer = %peer,
                    method = %method,
                    path = %escaped(path.as_str()),
                    status,
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                response
            },
        )
}

impl Access {
    /// One `access.refused` event (its log line and its counts).
    fn report_refusal(
        &self,
        refusal: &Refusal,
        peer: SocketAddr,
        (token, counted): (TokenFacts, Counted),
    ) {
        let ip = peer.ip().to_canonical();
        self.events.emit(Event::AccessRefused {
            reason: refusal.label(),
            status: refusal.status().as_u16(),
            peer: ip,
            subnet: Subnet::of_client(ip).to_string(),
            token,
            counted: Counted {
                tls: self.tls,
                ..counted
            },
        });
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

#[cfg(test)]
mod tests {
    use warp::http::StatusCode;

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
        let events = crate::events::Events::new(16, metrics.clone());
        let (grants, _) = crate::grants::Grants::spawn(
            Arc::new(crate::firewall::NoopFirewall),
            1,
            metrics.clone(),
            crate::lifecycle::Lifecycle::new(metrics.clone()),
            events.clone(),
        );
        Access {
            tokens: Tokens::default(),
            timeout: Duration::from_secs(timeout),
            max_hold: Duration::from_secs(max_hold),
            grants,
            metrics,
            tx_gate: None,
            tls: false,
            sessions: TaskTracker::new(),
            events,
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
        *req.headers_mut() = upgrade::tests::upgrade_headers();
        req.extensions_mut()
            .insert(PeerAddr("192.0.2.7:40000".parse().unwrap()));
        if upgrade {
            // A handle whose upgrade never happens (as when the 101 cannot be written).
            let never = hyper::upgrade::on(&mut req);
            req.extensions_mut().insert(never);
        }
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(app)));
        service.call(req).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
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
}
