//! Records the kernel's replies to every kind of ipset request the envelope
//! sends (encoded by the envelope itself: `envelope::fuzzing::ipset_*_requests`)
//! into a directory, one datagram per file: the seed corpus of the
//! `ipset_reply` target. It creates and destroys sets, so it runs only inside
//! a network namespace of its own, and refuses to run where it sees any
//! interface but `lo`:
//!
//! ```sh
//! cargo build --manifest-path fuzz/Cargo.toml --example record_ipset
//! unshare -n fuzz/target/debug/examples/record_ipset fuzz/corpus/ipset_reply
//! ```

use envelope::fuzzing::{ipset_probe_requests, ipset_reply, ipset_set_requests, IpsetMessage};
use envelope_fuzz::record::{save, start};
use netlink_sys::Socket;

fn main() -> Result<(), String> {
    let (dir, socket) = start("usage: record_ipset DIRECTORY")?;
    let mut revisions = Vec::new();
    for (name, request) in ipset_probe_requests() {
        let replies = exchange(&socket, &request)?;
        save(&dir, name, &replies)?;
        if name.starts_with("type-") {
            revisions.push(revision(&replies));
        }
    }
    let (Some(Some(nets)), Some(Some(ports))) = (revisions.first(), revisions.get(1)) else {
        return Err(format!(
            "the kernel offers no hash:net or bitmap:port: {revisions:?}"
        ));
    };
    for (name, request) in ipset_set_requests(*nets, *ports) {
        let replies = exchange(&socket, &request)?;
        save(&dir, name, &replies)?;
    }
    Ok(())
}

/// Sends one framed request and reads datagrams until its acknowledgement
/// (or, for a dump, its DONE) has arrived.
fn exchange(socket: &Socket, request: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let seq = u32::from_ne_bytes([request[8], request[9], request[10], request[11]]);
    socket.send(request, 0).map_err(|e| format!("send: {e}"))?;
    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(|e| format!("recv: {e}"))?;
        let messages = ipset_reply(&datagram)?;
        replies.push(datagram);
        let finished = messages.iter().any(|m| match m {
            IpsetMessage::Ack { seq: s, .. } | IpsetMessage::Done { seq: s } => *s == seq,
            _ => false,
        });
        if finished {
            return Ok(replies);
        }
    }
}

fn revision(replies: &[Vec<u8>]) -> Option<u8> {
    replies
        .iter()
        .flat_map(|d| ipset_reply(d).unwrap_or_default())
        .find_map(|m| match m {
            IpsetMessage::Reply { revision, .. } => revision,
            _ => None,
        })
}
