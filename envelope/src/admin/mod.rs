//! The admin API (SPEC §6): HTTP/JSON over a unix socket. This layer only turns
//! requests into grant-owner commands and answers into JSON; one file per
//! resource. Peers are checked by their kernel credentials before any request.

mod grants;
mod reload;
mod socket;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::ApiError;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use socket::{AdminSocket, PeerPolicy};

use crate::grants::Grants;

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
}

pub type AdminResponse = Response<Full<Bytes>>;

pub fn json<T: Serialize>(status: StatusCode, body: &T) -> AdminResponse {
    let mut text =
        serde_json::to_vec(body).unwrap_or_else(|_| b"{\"errors\":[\"encoding failed\"]}".to_vec());
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error(status: StatusCode, message: impl Into<String>) -> AdminResponse {
    json(status, &ApiError::new(message))
}

/// Serves the socket until `stop`; removes the socket file afterwards.
pub async fn serve(socket: AdminSocket, state: Arc<AdminState>, stop: CancellationToken) {
    let conns = TaskTracker::new();
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
        let (state, policy, stop) = (state.clone(), socket.access.clone(), stop.clone());
        conns.spawn(async move { connection(stream, state, policy, stop).await });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
    let _ = std::fs::remove_file(&socket.path);
}

async fn connection(
    stream: UnixStream,
    state: Arc<AdminState>,
    policy: PeerPolicy,
    stop: CancellationToken,
) {
    let allowed = match stream.peer_cred() {
        Ok(cred) => {
            let ok = policy.allows(cred.uid(), cred.gid());
            if !ok {
                tracing::warn!(
                    uid = cred.uid(),
                    gid = cred.gid(),
                    "admin connection refused"
                );
            }
            ok
        }
        Err(_) => false,
    };
    let service = service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = if allowed {
                route(&state, req).await
            } else {
                error(StatusCode::FORBIDDEN, "permission denied: only root, the envelope's user or --admin-group may use this socket")
            };
            Ok::<_, Infallible>(response)
        }
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

async fn route(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            if !collected.to_bytes().is_empty() {
                return error(StatusCode::BAD_REQUEST, "admin requests take no body");
            }
        }
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    }
    let path = parts.uri.path();
    let query = parts.uri.query();
    let started = Instant::now();
    let response = if path == common::admin::STATUS_PATH {
        status::handle(state, &parts.method, query).await
    } else if path == common::admin::RELOAD_PATH {
        reload::handle(state, &parts.method, query).await
    } else if path == common::admin::GRANTS_PATH || path.starts_with("/v1/grants/") {
        grants::handle(state, &parts.method, path, query).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no such admin resource: {path}"),
        )
    };
    tracing::info!(
        method = %parts.method,
        path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "admin request"
    );
    response
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

pub fn method_not_allowed(allowed: &'static str) -> AdminResponse {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed (allowed: {allowed})"),
    );
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allowed),
    );
    response
}
