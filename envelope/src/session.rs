//! One held WebSocket. It ends when the owner says so (deadline, revoke,
//! shutdown: the server sends a Close frame) or when the client sends anything
//! at all — the first byte of any frame, a non-final fragment or a ping
//! included, as the Go original's `ReadOnce` — closes, or goes away. The lease
//! is dropped first, so the grant is released before any time is spent on a
//! polite close.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::events::{Event, Events};
use crate::firewall::Subnet;
use crate::grants::{EndReason, Lease};
use crate::logging::chain;

/// How long a polite close may take once the grant is already gone.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The opcode of a Close frame (RFC 6455 §5.2), in a frame's first byte.
const OPCODE_CLOSE: u8 = 0x8;

/// Holds the session until it ends, then reports its `grant.closed` event.
pub async fn hold(upgrade: OnUpgrade, lease: Lease, peer: SocketAddr, events: Events) {
    let id = lease.id();
    let (reason, held_for) = held(upgrade, lease, peer).await;
    let ip = peer.ip().to_canonical();
    events.emit(Event::GrantClosed {
        grant: id,
        peer: ip,
        subnet: Subnet::of_client(ip).to_string(),
        reason,
        held_ms: held_for.as_millis() as u64,
    });
}

/// The session itself: why it ended, as `grant.closed` names it, and how
/// long the grant was held (until the lease was let go).
async fn held(upgrade: OnUpgrade, mut lease: Lease, peer: SocketAddr) -> (&'static str, Duration) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::warn!(%peer, grant = lease.id(), error = %chain(&e), "upgrade failed; grant released");
            return ("connection-error", lease.granted_at().elapsed());
        }
    };
    // Clients have nothing to send and any frame ends the session, so thousands of
    // held sessions need only small buffers (the defaults are 128 KiB each).
    let config = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(16 << 10));
    // The session waits on the raw connection, not on whole messages, so the
    // first byte of any frame ends it (tungstenite would buffer a fragmented
    // message and say nothing until its last fragment).
    let mut io = TokioIo::new(upgraded);
    let mut first = [0u8; 64];
    let mut read = 0;
    let ending = tokio::select! {
        why = lease.ended() => Ending::Server(why),
        got = io.read(&mut first) => Ending::Client(match got {
            Ok(0) | Err(_) => "connection-error",
            Ok(n) => {
                read = n;
                if first[0] & 0x0f == OPCODE_CLOSE {
                    "client-closed"
                } else {
                    "client-sent-data"
                }
            }
        }),
    };
    // What was read goes back in front of the stream for the close handshake.
    let mut ws = WebSocketStream::from_partially_read(
        io,
        first[..read].to_vec(),
        Role::Server,
        Some(config),
    )
    .await;
    let held_for = lease.granted_at().elapsed();
    drop(lease);
    let reason = match ending {
        Ending::Server(why) => {
            let (code, text, reason) = match why {
                EndReason::Deadline => (CloseCode::Normal, "deadline", "deadline"),
                EndReason::Revoked => (CloseCode::Policy, "revoked", "revoked"),
                EndReason::Shutdown => (CloseCode::Away, "going away", "shutdown"),
                EndReason::DrainTimeout => (CloseCode::Away, "going away", "drain-timeout"),
            };
            let frame = CloseFrame {
                code,
                reason: text.into(),
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))
                    .await?;
                // Wait for the client's answering Close, then the socket closes.
                while let Some(frame) = ws.next().await {
                    frame?;
                }
                Ok::<(), tokio_tungstenite::tungstenite::Error>(())
            })
            .await;
            reason
        }
        Ending::Client(what) => {
            // Reading on drives tungstenite's queued answer to the client's Close
            // (or our own Close) out, then sees the connection end.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            what
        }
    };
    (reason, held_for)
}

enum Ending {
    Server(EndReason),
    Client(&'static str),
}
