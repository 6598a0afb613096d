//! The HTTP plumbing every surface shares (the access endpoint, the admin API
//! and the metrics listener): the response type the warp filters extract,
//! plain-text and JSON answers, exact path matching, and the connection's peer
//! as a request extension. A leaf: it knows nothing of routes or state.

use std::net::SocketAddr;

use serde::Serialize;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::path::FullPath;
use warp::{Filter, Rejection};

/// The warp response type every served filter extracts.
pub type Reply = warp::reply::Response;

/// The TCP peer of the connection a request came on, as a request extension
/// (`warp::addr::remote()` knows nothing of connections it did not accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The kernel credentials of the unix-socket connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The peer address; a request that did not come through our accept loop is rejected.
pub fn peer() -> impl Filter<Extract = (SocketAddr,), Error = Rejection> + Copy {
    warp::ext::get::<PeerAddr>().map(|peer: PeerAddr| peer.0)
}

/// `text` and a newline, as `text/plain`.
pub fn plain(status: StatusCode, text: &str) -> Reply {
    with_body(
        status,
        format!("{text}\n").into_bytes(),
        "text/plain; charset=utf-8",
    )
}

/// `body` as one line of JSON.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    json_as(status, body, "application/json")
}

/// `body` as one line of JSON with its own media type (e.g. `application/problem+json`).
pub fn json_as<T: Serialize>(status: StatusCode, body: &T, content_type: &'static str) -> Reply {
    let mut text =
        serde_json::to_vec(body).unwrap_or_else(|_| b"{\"errors\":[\"encoding failed\"]}".to_vec());
    text.push(b'\n');
    with_body(status, text, content_type)
}

fn with_body(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Reply {
    let mut response = Reply::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
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
