//! Records the kernel's replies to every kind of nf_tables datagram the
//! envelope's `nftables` backend sends (encoded by the envelope itself:
//! `envelope::fuzzing::nft_requests`) into a directory, one datagram per
//! file: the seed corpus of the `nft_reply` target. It installs and removes
//! the envelope's table, so it runs only inside a network namespace of its
//! own, and refuses to run where it sees any interface but `lo`:
//!
//! ```sh
//! cargo build --manifest-path fuzz/Cargo.toml --example record_nft
//! unshare -n fuzz/target/debug/examples/record_nft fuzz/corpus/nft_reply
//! ```

use envelope::firewall::nftables::Answer;
use envelope::fuzzing::{nft_reply, nft_requests, NftExchange};
use envelope_fuzz::record::{save, start};
use netlink_sys::Socket;

fn main() -> Result<(), String> {
    let (dir, socket) = start("usage: record_nft DIRECTORY")?;
    for (name, exchange, datagram) in nft_requests() {
        let replies = match exchange {
            NftExchange::Transaction => queued(&socket, &datagram)?,
            NftExchange::Answered => answered(&socket, &datagram)?,
        };
        save(&dir, name, &replies)?;
    }
    Ok(())
}

/// Sends a transaction and takes what the kernel queued during the send
/// (its refusals; nothing when it committed).
fn queued(socket: &Socket, datagram: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    socket.send(datagram, 0).map_err(|e| format!("send: {e}"))?;
    let mut replies = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(65_536);
        match socket.recv_from(&mut buf, libc::MSG_DONTWAIT) {
            Ok(_) => replies.push(buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(replies),
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Sends a dump or an acknowledged request and reads until its DONE or status.
fn answered(socket: &Socket, datagram: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let seq = u32::from_ne_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    socket.send(datagram, 0).map_err(|e| format!("send: {e}"))?;
    let mut replies = Vec::new();
    loop {
        let (reply, _) = socket.recv_from_full().map_err(|e| format!("recv: {e}"))?;
        let messages = nft_reply(&reply)?;
        replies.push(reply);
        let finished = messages
            .iter()
            .any(|m| m.seq == seq && matches!(m.answer, Answer::Done | Answer::Status(_)));
        if finished {
            return Ok(replies);
        }
    }
}
