//! A warp hello-world that answers only holders of a valid envelope access token.
//!
//! ```text
//! cargo run -p common --features warp --example protected_hello -- \
//!     KEY.pub MACHINE SUBJECT [127.0.0.1:8080]
//! curl "http://127.0.0.1:8080/hello?access_token=$(example-signer --private KEY \
//!     --machine MACHINE --subject SUBJECT --token-only)"
//! ```
//!
//! The token filter yields the verified standard claims plus this service's own
//! custom claims (`int_id`, `key_id`: the Go project's integration claims). The
//! accept loop is a plain hyper one with a header-read timeout (warp 0.4's own
//! `serve` installs no timer, so a slow client could hold a connection forever).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::filters::{self, AccessPolicy, Verified};
use common::Verifier;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use warp::{Filter, Reply};

/// This service's custom claims. A field named like a standard claim (`sub`,
/// `exp`, ...) would never be filled: those come from the verifier only.
#[derive(Debug, Clone, Deserialize)]
pub struct Integration {
    pub int_id: Option<String>,
    pub key_id: Option<String>,
}

/// `GET /hello`, for tokens of `policy` only.
pub fn routes(
    policy: AccessPolicy,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    warp::path!("hello")
        .and(warp::get())
        .and(filters::access_token::<Integration>(policy))
        .map(|v: Verified<Integration>| {
            let who = match &v.custom.int_id {
                Some(id) => format!("{} via integration {id}", v.claims.sub),
                None => v.claims.sub.clone(),
            };
            format!("hello, {who}\n").into_response()
        })
        .recover(filters::handle_rejection)
        .unify()
        // warp's own answers (404, 405) for everything else.
        .recover(|rejection: warp::Rejection| async move {
            let status = if rejection.is_not_found() {
                warp::http::StatusCode::NOT_FOUND
            } else {
                warp::http::StatusCode::METHOD_NOT_ALLOWED
            };
            Ok::<_, Infallible>(warp::reply::with_status("", status).into_response())
        })
        .unify()
}

/// Serves `routes` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    routes: impl Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(warp::service(routes));
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, machine, subject, rest @ ..] = args.as_slice() else {
        eprintln!("usage: protected_hello KEY.pub MACHINE SUBJECT [127.0.0.1:8080]");
        std::process::exit(2);
    };
    let addr: SocketAddr = rest
        .first()
        .map_or("127.0.0.1:8080", String::as_str)
        .parse()?;
    let keys = common::jwk::load_public_keys(std::path::Path::new(key))?;
    let verifier = Arc::new(Verifier::new(keys, "locate", machine.as_str())?);
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}/hello", listener.local_addr()?);
    serve(
        listener,
        routes(AccessPolicy::new(verifier, subject.as_str())),
    )
    .await?;
    Ok(())
}
