//! One netlink socket to the kernel's ipset subsystem, kept open for the life of
//! the daemon so that a grant costs a few microseconds and no process. Many
//! requests go out in one send; each is acknowledged on its own, so the caller
//! learns exactly which ones the kernel took (a multi-member ipset message is not
//! atomic, so the caller rolls back what it must). Every exchange is bounded by a
//! timeout.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    ErrorMessage, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, AsyncSocket, AsyncSocketExt, TokioSocket};

use super::fault::{FaultAction, FaultCounter, NetlinkFault};
use super::wire::{error_name, Cmd, Element, Reply, Request};

/// Most requests in one send: their acknowledgements must fit the receive buffer.
const MAX_PER_SEND: usize = 256;

/// Why an ipset request failed.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error("ipset netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("ipset: no answer from the kernel within {0:?}")]
    Timeout(Duration),
    #[error("ipset: {what}: {}", describe(*code))]
    Kernel { what: String, code: i32 },
    #[error("ipset: malformed reply: {0}")]
    Decode(String),
}

impl IpsetError {
    /// The kernel's error number (positive), if the kernel refused.
    pub fn code(&self) -> Option<i32> {
        match self {
            IpsetError::Kernel { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The set named in the request does not exist.
    pub fn is_missing_set(&self) -> bool {
        self.code() == Some(libc::ENOENT)
    }
}

fn describe(code: i32) -> String {
    match error_name(code) {
        Some(name) => format!("{name} (error {code})"),
        None => io::Error::from_raw_os_error(code).to_string(),
    }
}

/// The socket, the protocol version agreed with the kernel, and a sequence counter.
pub struct IpsetSocket {
    socket: TokioSocket,
    protocol: u8,
    seq: u32,
    timeout: Duration,
    /// The test hook `--fault-netlink`, when set.
    fault: Option<FaultCounter>,
}

impl std::fmt::Debug for IpsetSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpsetSocket")
            .field("protocol", &self.protocol)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl IpsetSocket {
    /// Opens the socket and agrees on a protocol version (6 or 7).
    pub async fn open(timeout: Duration) -> Result<IpsetSocket, IpsetError> {
        let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
        socket.socket_mut().bind_auto()?;
        let mut me = IpsetSocket {
            socket,
            protocol: 6,
            seq: 0,
            timeout,
            fault: None,
        };
        let reply = me.query(Request::protocol(6)).await?;
        let kernel = reply.protocol.unwrap_or(6);
        me.protocol = kernel.min(7);
        Ok(me)
    }

    /// Test hook (`--fault-netlink`; see `ipset/fault.rs`): faults one
    /// exchange of member changes on this socket.
    pub fn with_fault(mut self, fault: Option<NetlinkFault>) -> IpsetSocket {
        self.fault = fault.map(FaultCounter::new);
        self
    }

    pub async fn run(
        &mut self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<(), IpsetError>>, IpsetError> {
        let fault = self
            .fault
            .as_mut()
            .and_then(|counter| counter.for_exchange(&requests));
        if fault == Some(FaultAction::Fail) {
            return Err(IpsetError::Io(io::Error::other(
                "injected fault (--fault-netlink)",
            )));
        }
        let mut results = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<Request> = requests.by_ref().take(MAX_PER_SEND).collect();
            let first = self.seq.wrapping_add(1);
            let mut buf = Vec::new();
            let mut whats = Vec::with_capacity(chunk.len());
            for request in chunk {
                whats.push(format!("{:?}", request.cmd()).to_lowercase());
                self.append(&mut buf, request);
            }
            self.socket.send(&buf).await?;
            if fault == Some(FaultAction::Stall) {
                // The late acknowledgements carry old sequence numbers: later
                // exchanges skip them.
                tokio::time::sleep(self.timeout).await;
                return Err(IpsetError::Timeout(self.timeout));
            }
            let mut acks: Vec<Option<Result<(), IpsetError>>> =
                (0..whats.len()).map(|_| None).collect();
            let mut missing = whats.len();
            while missing > 0 {
                for (seq, payload) in self.receive().await? {
                    let index = seq.wrapping_sub(first) as usize;
                    let Some(slot) = acks.get_mut(index) else {
                        continue;
                    };
                    if let NetlinkPayload::Error(e) = payload {
                        if slot.is_none() {
                            missing -= 1;
                        }
                        *slot = Some(acknowledged(&whats[index], &e));
                    }
                }
            }
            results.extend(acks.into_iter().map(|a| a.expect("every ack counted")));
        }
        Ok(results)
    }

    /// One request whose answer is a message (protocol, type, header).
    async fn query(&mut self, request: Request) -> Result<Reply, IpsetError> {
        let what = format!("{:?}", request.cmd()).to_lowercase();
        let mut buf = Vec::new();
        let seq = self.append(&mut buf, request);
        self.socket.send(&buf).await?;
        let mut answer = None;
        loop {
            for (got, payload) in self.receive().await? {
                if got != seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(reply) => answer = Some(reply),
                    NetlinkPayload::Error(e) => {
                        acknowledged(&what, &e)?;
                        return answer
                            .ok_or_else(|| IpsetError::Decode(format!("{what}: no reply")));
                    }
                    _ => {}
                }
            }
        }
    }

    fn append(&mut self, buf: &mut Vec<u8>, request: Request) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        frame(buf, request, self.seq);
        self.seq
    }

    /// One datagram from the kernel, split into its messages.
    async fn receive(&mut self) -> Result<Vec<(u32, NetlinkPayload<Reply>)>, IpsetError> {
        let (data, _) = tokio::time::timeout(self.timeout, self.socket.recv_from_full())
            .await
            .map_err(|_| IpsetError::Timeout(self.timeout))??;
        messages(&data)
    }
}

/// Appends `request` to `buf` as one netlink message with sequence number `seq`.
/// Every request asks for an acknowledgement except a dump (list), which ends
/// with NLMSG_DONE instead; only create carries NLM_F_EXCL, so that add
/// refreshes a member and del of an absent member succeeds.
pub(crate) fn frame(buf: &mut Vec<u8>, request: Request, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = match request.cmd() {
        Cmd::List => NLM_F_REQUEST | NLM_F_DUMP,
        Cmd::Create => NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL,
        _ => NLM_F_REQUEST | NLM_F_ACK,
    };
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    message.finalize();
    let start = buf.len();
    buf.resize(start + message.buffer_len(), 0);
    message.serialize(&mut buf[start..]);
}

/// One datagram as the kernel sent it, split into its messages: each one's
/// sequence number and payload.
pub(crate) fn messages(data: &[u8]) -> Result<Vec<(u32, NetlinkPayload<Reply>)>, IpsetError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let bytes = &data[offset..];
        let length = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| IpsetError::Decode(e.to_string()))?
            .length() as usize;
        let message = NetlinkMessage::<Reply>::deserialize(&bytes[..length])
            .map_err(|e| IpsetError::Decode(e.to_string()))?;
        out.push((message.header.sequence_number, message.payload));
        offset += (length + 3) & !3;
    }
    Ok(out)
}

/// An acknowledgement of the request `what`: success, or the kernel's refusal.
/// The kernel sends a negative errno; any other code is a malformed reply
/// (`i32::MIN` has no positive counterpart: negating it overflowed, found by
/// the `ipset_reply` fuzz target).
pub(crate) fn acknowledged(what: &str, ack: &ErrorMessage) -> Result<(), IpsetError> {
    let Some(code) = ack.code else {
        return Ok(());
    };
    match code.get().checked_neg().filter(|errno| *errno > 0) {
        Some(errno) => Err(IpsetError::Kernel {
            what: what.to_owned(),
            code: errno,
        }),
        None => Err(IpsetError::Decode(format!(
            "{what}: acknowledgement with error code {code}"
        ))),
    }
}

/// Requests by what they do to sets.
impl IpsetSocket {
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Newest revision of a set type the kernel offers for `family`.
    pub async fn type_revision(&mut self, typename: &str, family: u8) -> Result<u8, IpsetError> {
        let reply = self
            .query(Request::type_query(self.protocol, typename, family))
            .await?;
        reply
            .revision
            .ok_or_else(|| IpsetError::Decode(format!("no revision for {typename}")))
    }

    /// Whether a set of this name exists.
    pub async fn exists(&mut self, set: &str) -> Result<bool, IpsetError> {
        match self.query(Request::header(self.protocol, set)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_missing_set() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Destroys a set; a set that does not exist is not an error.
    pub async fn destroy(&mut self, set: &str) -> Result<(), IpsetError> {
        match self.run_one(Request::destroy(self.protocol, set)).await {
            Err(e) if e.is_missing_set() => Ok(()),
            other => other,
        }
    }

    pub async fn flush(&mut self, set: &str) -> Result<(), IpsetError> {
        self.run_one(Request::flush(self.protocol, set)).await
    }

    /// Sends one request and waits for its acknowledgement.
    pub async fn run_one(&mut self, request: Request) -> Result<(), IpsetError> {
        self.run(vec![request])
            .await?
            .pop()
            .expect("one result per request")
    }

    /// Sends every request (several per send) and returns one result per
    /// request, in order. An `Err` outside means the exchange itself failed, so
    /// nothing is known about the requests.
    /// Every member of `set`, with its remaining timeout in seconds.
    pub async fn list(&mut self, set: &str) -> Result<Vec<(Element, Option<u32>)>, IpsetError> {
        let mut buf = Vec::new();
        let seq = self.append(&mut buf, Request::list(self.protocol, set));
        self.socket.send(&buf).await?;
        let mut members = Vec::new();
        loop {
            for (got, payload) in self.receive().await? {
                if got != seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(reply) => members.extend(reply.members),
                    NetlinkPayload::Done(_) => return Ok(members),
                    NetlinkPayload::Error(e) => {
                        return acknowledged(&format!("list {set}"), &e).map(|()| members);
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One acknowledgement (NLMSG_ERROR) for sequence number 1 with `code`.
    fn ack(code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m
    }

    fn outcome(datagram: &[u8]) -> Result<(), IpsetError> {
        let mut decoded = messages(datagram).unwrap();
        assert_eq!(decoded.len(), 1);
        match decoded.remove(0) {
            (1, NetlinkPayload::Error(e)) => acknowledged("add", &e),
            other => panic!("not an ack: {other:?}"),
        }
    }

    #[test]
    fn acknowledgements_carry_the_kernels_errno() {
        assert!(outcome(&ack(0)).is_ok());
        let refused = outcome(&ack(-2)).unwrap_err();
        assert!(refused.is_missing_set(), "{refused}");
    }

    #[test]
    fn an_error_code_that_is_no_negative_errno_is_a_malformed_reply() {
        // The fuzz target's input: an ack with i32::MIN, whose negation
        // overflowed (a panic in debug builds, a nonsense code in release),
        // then a NOOP message.
        let found: [u8; 44] = [
            0x14, 0, 0, 0, 0x02, 0, 0, 0, 0, 0xff, 0x0a, 0, 0, 0x01, 0, 0, 0, 0, 0, 0x80, 0x16, 0,
            0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0x07, 0, 0, 0, 0x07, 0, 0, 0, 0, 0, 0, 0, 0x01,
        ];
        let decoded = messages(&found).unwrap();
        let NetlinkPayload::Error(e) = &decoded[0].1 else {
            panic!("not an ack: {decoded:?}");
        };
        let error = acknowledged("add", e).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ipset: malformed reply: add: acknowledgement with error code -2147483648"
        );
        for code in [i32::MIN, 1, i32::MAX] {
            assert!(
                matches!(outcome(&ack(code)), Err(IpsetError::Decode(_))),
                "{code}"
            );
        }
    }
}
