//! HTTP/1.1 over the admin unix socket (hyper), JSON in and out, one method
//! per admin resource, and the errors an operator sees — the daemon's cause
//! chain printed like a local error.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use common::admin::{
    ApiError, Grant, Lifecycle, Reloaded, Revoked, Status, DRAIN_PATH, EVENTS_PATH, GRANTS_PATH,
    RELOAD_PATH, RESUME_PATH, STATUS_PATH,
};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
}

#[derive(Debug)]
pub enum CtlError {
    /// The socket cannot be connected to.
    Unreachable { socket: PathBuf, cause: String },
    /// The envelope answered with an error.
    Api {
        status: StatusCode,
        errors: Vec<String>,
    },
    /// The answer made no sense.
    Protocol(String),
    /// The command line was fine for clap but not for us.
    Usage(String),
}

impl CtlError {
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            CtlError::Unreachable { socket, cause } => {
                let _ = writeln!(
                    out,
                    "envelopectl: cannot reach the envelope at {}: {cause}",
                    socket.display()
                );
                let _ = writeln!(
                    out,
                    "  is the envelope running? Point --socket (or ENVELOPE_ADMIN_SOCKET) at its admin socket."
                );
            }
            CtlError::Api { errors, .. } => {
                let mut lines = errors.iter();
                let first = lines
                    .next()
                    .map_or("the envelope refused the request", String::as_str);
                let _ = writeln!(out, "envelopectl: {first}");
                for cause in lines {
                    let _ = writeln!(out, "  caused by: {cause}");
                }
            }
            CtlError::Protocol(what) => {
                let _ = writeln!(
                    out,
                    "envelopectl: unexpected answer from the envelope: {what}"
                );
            }
            CtlError::Usage(what) => {
                let _ = writeln!(out, "envelopectl: {what}");
            }
        }
        out
    }
}

/// What [`CtlError::render`] prints, without its last newline (for library users).
impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for CtlError {}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client { socket }
    }

    /// `GET /v1/grants`: the live grants.
    pub async fn grants(&self) -> Result<Vec<Grant>, CtlError> {
        self.call(Method::GET, GRANTS_PATH).await
    }

    /// A `DELETE` of grants (`/v1/grants`, `/v1/grants/ID`, `/v1/grants?ip=IP`):
    /// answers once their sessions are closed and their rules removed.
    pub async fn revoke(&self, path_and_query: &str) -> Result<Revoked, CtlError> {
        self.call(Method::DELETE, path_and_query).await
    }

    /// `POST /v1/reload`: the verify keys loaded again, all or nothing.
    pub async fn reload(&self) -> Result<Reloaded, CtlError> {
        self.call(Method::POST, RELOAD_PATH).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, CtlError> {
        self.call(Method::GET, STATUS_PATH).await
    }

    /// `POST /v1/drain`: no new clients until resumed; held sessions go on.
    pub async fn drain(&self) -> Result<Lifecycle, CtlError> {
        self.call(Method::POST, DRAIN_PATH).await
    }

    /// `POST /v1/resume`: new clients are taken again.
    pub async fn resume(&self) -> Result<Lifecycle, CtlError> {
        self.call(Method::POST, RESUME_PATH).await
    }

    /// Sends one request and decodes the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<T, CtlError> {
        let body = self.call_raw(method, path_and_query).await?;
        serde_json::from_slice(&body).map_err(|e| CtlError::Protocol(e.to_string()))
    }

    /// The JSON text of a GET exactly as the envelope sent it, so `--json`
    /// output and `curl --unix-socket` agree byte for byte.
    pub async fn get_json(&self, path: &str) -> Result<String, CtlError> {
        let body = self.call_raw(Method::GET, path).await?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|e| CtlError::Protocol(e.to_string()))?;
        Ok(String::from_utf8_lossy(&body).trim_end().to_owned())
    }

    /// `GET /v1/events?QUERY`: calls `lines` with the NDJSON lines each
    /// chunk completes, as they arrive (while following, until the envelope
    /// ends the stream), so the caller can write them out at once; stops
    /// early when `lines` says so.
    pub async fn events(
        &self,
        query: &str,
        mut lines: impl FnMut(&[&str]) -> std::ops::ControlFlow<()>,
    ) -> Result<(), CtlError> {
        let path = format!("{EVENTS_PATH}?{query}");
        let response = self.send(Method::GET, &path).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| CtlError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &bytes));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| CtlError::Protocol(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&complete[..end]);
            let complete: Vec<&str> = text.split('\n').collect();
            if lines(&complete).is_break() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends one request; a non-2xx answer becomes [`CtlError::Api`].
    async fn call_raw(&self, method: Method, path_and_query: &str) -> Result<Bytes, CtlError> {
        let response = self.send(method, path_and_query).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CtlError::Protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }

    /// Sends one request over a fresh connection; the answer's head.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CtlError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| CtlError::Unreachable {
                    socket: self.socket.clone(),
                    cause: e.to_string(),
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CtlError::Unreachable {
                socket: self.socket.clone(),
                cause: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, "envelope")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CtlError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| CtlError::Protocol(e.to_string()))
    }
}

/// A refusal's body as the error an operator reads.
fn api_error(status: StatusCode, body: &[u8]) -> CtlError {
    let errors = serde_json::from_slice::<ApiError>(body)
        .map(|e| e.errors)
        .unwrap_or_else(|_| {
            vec![format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(body).trim()
            )]
        });
    CtlError::Api { status, errors }
}
