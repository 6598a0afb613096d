//! The admin API (SPEC §6): HTTP/JSON over a unix socket, as warp filters
//! served by the daemon's accept loop (which puts each connection's kernel
//! credentials into its requests). This layer only turns requests into
//! grant-owner commands and answers into JSON; one file per resource. Every
//! refusal is an [`AdminError`] rejection, answered as JSON in one place.

mod events;
mod grants;
mod lifecycle;
mod reload;
mod socket;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use common::admin::ApiError;
use futures_util::StreamExt;
use warp::http::header::{HeaderValue, ALLOW};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::{Buf, Filter, Rejection};

pub use socket::{AdminLock, AdminSocket, PeerPolicy};

use crate::events::{Event, Events};
use crate::grants::Grants;
use crate::http::{json, PeerCred, Reply};
use crate::lifecycle::Lifecycle;
use crate::logging::escaped;
use crate::reload::Reloader;

/// Largest request body read (the API takes none; this bounds the refusal).
const MAX_BODY: usize = 4096;

/// What the admin handlers can see.
#[derive(Debug)]
pub struct AdminState {
    /// The reloadable files, for `/v1/reload` and the status.
    pub reloader: Reloader,
    /// Serving, draining or stopping, for `/v1/drain`, `/v1/resume` and the status.
    pub lifecycle: Lifecycle,
    /// Where admin requests, revokes and drains are reported, and what `/v1/events` reads.
    pub events: Events,
    /// Fires at shutdown: `/v1/events` followers end.
    pub stop: tokio_util::sync::CancellationToken,
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

/// The whole API: peer check, no body, the resources, JSON errors, a log line.
pub fn routes(
    state: Arc<AdminState>,
    policy: PeerPolicy,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    let events = state.events.clone();
    let resources = status::routes(state.clone())
        .or(reload::routes(state.clone()))
        .unify()
        .or(lifecycle::routes(state.clone()))
        .unify()
        .or(events::routes(state.clone()))
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
    // Every request is an `admin.request` event: who asked (the kernel's
    // word), for what, and the answer.
    warp::any()
        .and(warp::ext::optional::<PeerCred>())
        .and(warp::method())
        .and(warp::path::full())
        .and(api)
        .map(
            move |caller: Option<PeerCred>, method: Method, path: FullPath, response: Reply| {
                events.emit(Event::AdminRequest {
                    uid: caller.map(|c| c.uid),
                    pid: caller.and_then(|c| c.pid),
                    method: method.to_string(),
                    path: escaped(path.as_str()).into_owned(),
                    status: response.status().as_u16(),
                });
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
