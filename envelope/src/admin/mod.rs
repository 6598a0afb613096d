//! The admin API (SPEC §6): HTTP/JSON over a unix socket, as warp filters served
//! on our own accept loop (which reads each connection's kernel credentials and
//! hands them to the filters as a request extension). This layer only turns
//! requests into grant-owner commands and answers into JSON; one file per
//! resource. Every refusal is an [`AdminError`] rejection, answered as JSON in
//! one place.

mod grants;
mod reload;
mod socket;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::ApiError;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::{Buf, Filter, Rejection};

pub use socket::{AdminSocket, PeerPolicy};

use crate::grants::Grants;
use crate::server::Reply;

/// Largest request body read (the API takes none; this bounds the refusal).
const MAX_BODY: usize = 4096;

/// What the admin handlers can see.
#[derive(Debug)]
pub struct AdminState {
    /// The verify keys, for `/v1/reload` and the status (none without `--verify-key`).
    pub keys: Option<Arc<crate::keys::Keys>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub grants: Grants,
    pub machine: Option<String>,
    pub subject: Option<String>,
    pub firewall: String,
    pub max_clients: usize,
    pub started: Instant,
    /// Where the access endpoint and `/metrics` listen, as bound.
    pub listening: Vec<std::net::SocketAddr>,
    pub metrics_listening: Vec<std::net::SocketAddr>,
}

pub type AdminResponse = Reply;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> AdminResponse {
    let mut text =
        serde_json::to_vec(body).unwrap_or_else(|_| b"{\"errors\":[\"encoding failed\"]}".to_vec());
    text.push(b'\n');
    let mut response = Reply::new(text.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn error(status: StatusCode, message: impl Into<String>) -> AdminResponse {
    json(status, &ApiError::new(message))
}

/// A refused admin request: its status, the one line, and for 405 the methods allowed.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl warp::reject::Reject for AdminError {}

impl AdminError {
    pub fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
        warp::reject::custom(AdminError {
            status,
            message: message.into(),
            allow: None,
        })
    }

    fn response(&self) -> AdminResponse {
        let mut response = error(self.status, self.message.clone());
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The kernel credentials of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
}

/// Serves the socket until `stop`; removes the socket file afterwards.
pub async fn serve(socket: AdminSocket, state: Arc<AdminState>, stop: CancellationToken) {
    let conns = TaskTracker::new();
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(
        state,
        socket.access.clone(),
    )));
    loop {
        let stream = tokio::select! {
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let (service, stop) = (service.clone(), stop.clone());
        conns.spawn(async move { connection(stream, service, stop).await });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
    let _ = std::fs::remove_file(&socket.path);
}

async fn connection<S>(stream: UnixStream, service: S, stop: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Reply, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    // No credentials, no access: the filters refuse a request without them.
    let cred = stream.peer_cred().ok().map(|cred| PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
    });
    let service = service_fn(move |mut req: Request<Incoming>| {
        if let Some(cred) = cred {
            req.extensions_mut().insert(cred);
        }
        service.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// The whole API: peer check, no body, the resources, JSON errors, a log line.
pub fn routes(
    state: Arc<AdminState>,
    policy: PeerPolicy,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    let resources = status::routes(state.clone())
        .or(reload::routes(state.clone()))
        .unify()
        .or(grants::routes(state))
        .unify()
        .or(unknown_resource())
        .unify();
    let api = allowed_peer(policy)
        .and(no_body())
        .and(resources)
        .recover(|rejection: Rejection| std::future::ready(Ok::<_, Infallible>(refusal(rejection))))
        .unify();
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(api)
        .map(
            |started: Instant, method: Method, path: FullPath, response: Reply| {
                tracing::info!(
                    method = %method,
                    path = %path.as_str(),
                    status = response.status().as_u16(),
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "admin request"
                );
                response
            },
        )
}

fn refusal(rejection: Rejection) -> AdminResponse {
    match rejection.find::<AdminError>() {
        Some(refused) => refused.response(),
        None => {
            tracing::error!(?rejection, "unexpected admin rejection");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// root, the envelope's own user or `--admin-group`, by the connection's credentials.
fn allowed_peer(policy: PeerPolicy) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::ext::optional::<PeerCred>()
        .and_then(move |cred: Option<PeerCred>| {
            let allowed = match cred {
                Some(cred) if policy.allows(cred.uid, cred.gid) => true,
                Some(cred) => {
                    tracing::warn!(uid = cred.uid, gid = cred.gid, "admin connection refused");
                    false
                }
                None => false,
            };
            std::future::ready(if allowed {
                Ok(())
            } else {
                Err(AdminError::reject(
                    StatusCode::FORBIDDEN,
                    "permission denied: only root, the envelope's user or --admin-group may use this socket",
                ))
            })
        })
        .untuple_one()
}

/// Admin requests take no body; one is read up to [`MAX_BODY`] to refuse it.
fn no_body() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::body::stream().and_then(read_nothing).untuple_one()
}

async fn read_nothing<S, B>(body: S) -> Result<(), Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0usize;
    while let Some(chunk) = body.next().await {
        read = match chunk {
            Ok(chunk) => read.saturating_add(chunk.remaining()),
            Err(_) => usize::MAX,
        };
        if read > MAX_BODY {
            return Err(AdminError::reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
    }
    if read > 0 {
        return Err(AdminError::reject(
            StatusCode::BAD_REQUEST,
            "admin requests take no body",
        ));
    }
    Ok(())
}

fn unknown_resource() -> impl Filter<Extract = (Reply,), Error = Rejection> + Copy {
    warp::path::full().and_then(|path: FullPath| {
        std::future::ready(Err::<Reply, _>(AdminError::reject(
            StatusCode::NOT_FOUND,
            format!("no such admin resource: {}", path.as_str()),
        )))
    })
}

/// The request's query pairs, every name within `allowed`; else 400.
pub fn query(
    allowed: &'static [&'static str],
) -> impl Filter<Extract = (Vec<(String, String)>,), Error = Rejection> + Copy {
    common::filters::raw_query().and_then(move |query: Option<String>| {
        std::future::ready(
            query_pairs(query.as_deref(), allowed)
                .map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(n, v)| (n.to_owned(), v.to_owned()))
                        .collect()
                })
                .map_err(|message| AdminError::reject(StatusCode::BAD_REQUEST, message)),
        )
    })
}

/// The last branch of a resource: every method not routed above it is 405.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Copy {
    warp::any().and_then(move || {
        std::future::ready(Err::<Reply, _>(warp::reject::custom(AdminError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method not allowed (allowed: {allow})"),
            allow: Some(allow),
        })))
    })
}

/// Splits a query into pairs; a name outside `allowed` is an error message.
pub fn query_pairs<'a>(
    query: Option<&'a str>,
    allowed: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut pairs = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(format!("unknown query parameter {name:?}"));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}
