//! Opening the access envelope: each Locate target in turn until one WebSocket
//! upgrade, offering `net.measurementlab.envelope`, succeeds; then holding it.

use std::time::Duration;

use futures_util::StreamExt;
use hyper::Uri;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::locate::Target;
use crate::net::{Connector, Endpoint, Stream};
use crate::one_line;

pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";

/// One silent machine must not use up the whole `--timeout`.
const PER_TARGET: Duration = Duration::from_secs(10);
/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A held envelope session.
pub struct Session {
    ws: WebSocketStream<Box<dyn Stream>>,
    /// The envelope URL, access token included (the command's `SERVICE_URL`).
    pub url: String,
    /// Its host name, without port or brackets (`SERVICE_HOSTNAME`).
    pub hostname: String,
}

/// Tries `targets` in order; on failure returns one reason per target, each
/// naming the target by host and port only (a URL carries its token).
pub async fn open_first(
    connector: &Connector,
    targets: &[Target],
    key: &str,
) -> Result<Session, Vec<String>> {
    let mut reasons = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let name = if target.machine.is_empty() {
            format!("target {}", i + 1)
        } else {
            one_line(&target.machine)
        };
        let Some(url) = target.urls.get(key) else {
            reasons.push(format!("{name}: no {:?} URL", one_line(key)));
            continue;
        };
        match tokio::time::timeout(PER_TARGET, open(connector, url)).await {
            Ok(Ok(session)) => return Ok(session),
            Ok(Err(why)) => reasons.push(why),
            Err(_) => reasons.push(format!("{name}: no answer within {PER_TARGET:?}")),
        }
    }
    Err(reasons)
}

async fn open(connector: &Connector, url: &str) -> Result<Session, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "an envelope URL is not a valid URL".to_owned())?;
    let endpoint =
        Endpoint::of(&uri, "ws", "wss").map_err(|e| format!("an envelope URL is {e}"))?;
    let label = endpoint.label();
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("{label}: {}", describe(&e)))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let stream = connector
        .connect(&endpoint)
        .await
        .map_err(|e| format!("{label}: {e}"))?;
    let (ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| format!("{label}: {}", describe(&e)))?;
    Ok(Session {
        ws,
        url: url.to_owned(),
        hostname: endpoint.host,
    })
}

/// A handshake error in a few words, without the request (it carries the token).
fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(response) => format!("refused with HTTP {}", response.status()),
        WsError::Io(e) => e.to_string(),
        WsError::Tls(e) => format!("TLS: {e}"),
        WsError::Protocol(e) => format!("not a WebSocket answer: {e}"),
        WsError::Url(_) => "unusable URL".to_owned(),
        other => one_line(&other.to_string()),
    }
}

impl std::fmt::Debug for Session {
    // Never the URL: it carries the access token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Waits until the envelope ends the session, and says how it did.
    pub async fn ended(&mut self) -> String {
        loop {
            match self.ws.next().await {
                // Answered by tungstenite; the envelope does not send them anyway.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(Some(frame)))) => return closed_with(&frame),
                Some(Ok(Message::Close(None))) => return "closed it".to_owned(),
                Some(Ok(_)) => return "sent an unexpected message".to_owned(),
                Some(Err(e)) => return format!("broke the connection ({})", describe(&e)),
                None => return "broke the connection".to_owned(),
            }
        }
    }

    /// Ends the session from our side: a Close frame, then a bounded wait for the
    /// envelope's reply so it revokes the grant at once.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if self.ws.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

fn closed_with(frame: &CloseFrame) -> String {
    let code = u16::from(frame.code);
    if frame.reason.is_empty() {
        format!("closed it (code {code})")
    } else {
        format!("closed it (code {code}, {:?})", one_line(&frame.reason))
    }
}
