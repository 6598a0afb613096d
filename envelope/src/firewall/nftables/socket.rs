//! One netlink socket to the kernel's nf_tables subsystem, kept open for the
//! life of the daemon: a change is one transaction in one send, no process.
//! The kernel processes a batch within the send and queues a message only for
//! a refused request (no request asks for an acknowledgement), so the answers
//! are read without waiting: none means committed. A refused transaction was
//! applied not at all: the kernel aborts it whole. Dumps and the start-up
//! probe wait for their answers, bounded by a timeout.

use std::fmt;
use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, AsyncSocket, AsyncSocketExt, TokioSocket};

use super::reply::{self, Answer, DecodeError, Listed, Message};
use super::wire::{self, Request};
use crate::firewall::ipset::{FaultAction, FaultCounter, NetlinkFault};

/// Socket buffers big enough for the largest group commit in one datagram.
const BUFFER_BYTES: usize = 4 << 20;
/// The largest answer to a transaction: an error carries only the refused
/// request's header (NETLINK_CAP_ACK).
const RECEIVE_BYTES: usize = 64 << 10;

/// One request the kernel refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the request did (`delete 192.0.2.0/24 from grants-v4`), or `commit`.
    pub what: String,
    /// Its place in the transaction; `None` for the commit itself.
    pub index: Option<usize>,
    /// The kernel's errno (positive).
    pub code: i32,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.code)
        )
    }
}

/// Why an nf_tables exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables netlink socket")]
    Io(#[source] io::Error),
    #[error("nf_tables: no answer from the kernel within {0:?}")]
    Timeout(Duration),
    #[error("nf_tables refused the transaction, nothing was applied: {}", list(.0))]
    Refused(Vec<Refusal>),
    #[error("nf_tables: malformed answer from the kernel")]
    Decode(#[source] DecodeError),
}

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<io::Error> for NftError {
    fn from(e: io::Error) -> NftError {
        NftError::Io(e)
    }
}

impl From<DecodeError> for NftError {
    fn from(e: DecodeError) -> NftError {
        NftError::Decode(e)
    }
}

impl NftError {
    /// The kernel answered and applied nothing (otherwise the outcome is unknown).
    pub fn applied_nothing(&self) -> bool {
        matches!(self, NftError::Refused(_))
    }
}

pub struct NftSocket {
    socket: TokioSocket,
    seq: u32,
    timeout: Duration,
    /// The test hook `--fault-netlink`, when set.
    fault: Option<FaultCounter>,
}

impl fmt::Debug for NftSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NftSocket")
            .field("seq", &self.seq)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NftSocket {
    /// Opens the socket and checks that the kernel answers for nf_tables.
    pub async fn open(timeout: Duration) -> Result<NftSocket, NftError> {
        let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
        socket.socket_mut().bind_auto()?;
        // Best effort: the defaults hold a few hundred grants per change; a
        // change that does not fit fails with EMSGSIZE and the owner retries
        // it subnet by subnet.
        let _ = socket.socket_ref().set_rx_buf_sz(BUFFER_BYTES);
        socket.socket_ref().set_cap_ack(true)?;
        let _ = nix::sys::socket::setsockopt(
            socket.socket_ref(),
            nix::sys::socket::sockopt::SndBufForce,
            &BUFFER_BYTES,
        );
        let mut me = NftSocket {
            socket,
            seq: 0,
            timeout,
            fault: None,
        };
        me.generation().await?;
        Ok(me)
    }

    /// Test hook (`--fault-netlink`): faults one exchange of element changes.
    pub fn with_fault(mut self, fault: Option<NetlinkFault>) -> NftSocket {
        self.fault = fault.map(FaultCounter::new);
        self
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Applies every request in one kernel transaction: all of them, or
    /// (`NftError::Refused`) none.
    pub async fn transact(&mut self, requests: &[Request]) -> Result<(), NftError> {
        if requests.is_empty() {
            return Ok(());
        }
        let changes = requests.iter().any(Request::changes_elements);
        let fault = self
            .fault
            .as_mut()
            .and_then(|counter| counter.for_changes(changes));
        if fault == Some(FaultAction::Fail) {
            return Err(NftError::Io(io::Error::other(
                "injected fault (--fault-netlink)",
            )));
        }
        let first = self.next_seq();
        // BEGIN, the requests, END.
        self.seq = self.seq.wrapping_add(requests.len() as u32 + 1);
        self.socket
            .send(&wire::transaction(requests, first))
            .await?;
        if fault == Some(FaultAction::Stall) {
            // The kernel has applied it; its answers (if any) carry old
            // sequence numbers, which later exchanges skip.
            tokio::time::sleep(self.timeout).await;
            return Err(NftError::Timeout(self.timeout));
        }
        // nf_tables handles a batch inside the send itself (`nft` relies on
        // this too): by now every refusal is queued on the socket, and an
        // empty queue means the kernel committed the whole transaction.
        let mut refused = Vec::new();
        while let Some(datagram) = self.try_receive()? {
            for message in reply::messages(&datagram) {
                let message = message?;
                let Answer::Status(code) = reply::answer(&message)? else {
                    continue;
                };
                let offset = message.seq.wrapping_sub(first) as usize;
                if code == 0 || offset > requests.len() + 1 {
                    continue;
                }
                // Offset 0 is BEGIN: the commit itself failed.
                let request = offset
                    .checked_sub(1)
                    .and_then(|i| Some((i, requests.get(i)?)));
                refused.push(match request {
                    Some((index, request)) => Refusal {
                        what: request.what().to_owned(),
                        index: Some(index),
                        code,
                    },
                    None => Refusal {
                        what: "commit".into(),
                        index: None,
                        code,
                    },
                });
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(NftError::Refused(refused))
        }
    }

    /// One datagram already queued on the socket, without waiting.
    fn try_receive(&self) -> Result<Option<Vec<u8>>, NftError> {
        let mut datagram = Vec::with_capacity(RECEIVE_BYTES);
        let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT.bits();
        match self.socket.socket_ref().recv_from(&mut datagram, flags) {
            Ok(_) => Ok(Some(datagram)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every element of one of our sets, as the kernel lists it.
    pub async fn list(&mut self, set: &str) -> Result<Vec<Listed>, NftError> {
        let seq = self.next_seq();
        self.socket.send(&wire::list_elements(set, seq)).await?;
        let mut elements = Vec::new();
        self.answers(|message| {
            if message.seq != seq {
                return Ok(None);
            }
            match reply::answer(message)? {
                Answer::Done | Answer::Status(0) => Ok(Some(())),
                Answer::Status(code) => Err(refused(format!("list set {set}"), code)),
                Answer::Data if message.kind == reply::NEWSETELEM => {
                    elements.extend(reply::elements(message.payload)?);
                    Ok(None)
                }
                Answer::Data => Ok(None),
            }
        })
        .await?;
        Ok(elements)
    }

    /// Asks for the generation id; an answer means nf_tables is there.
    async fn generation(&mut self) -> Result<(), NftError> {
        let seq = self.next_seq();
        self.socket.send(&wire::generation(seq)).await?;
        self.answers(|message| {
            if message.seq != seq {
                return Ok(None);
            }
            match reply::answer(message)? {
                Answer::Status(0) => Ok(Some(())),
                Answer::Status(code) => Err(refused("get generation".into(), code)),
                _ => Ok(None),
            }
        })
        .await
    }

    /// Reads the kernel's messages until `on` says the exchange is over
    /// (`Some`), within the socket's timeout. Messages of earlier exchanges
    /// that timed out arrive here too: `on` skips them by sequence number.
    async fn answers<T>(
        &mut self,
        mut on: impl FnMut(&Message<'_>) -> Result<Option<T>, NftError>,
    ) -> Result<T, NftError> {
        let timeout = self.timeout;
        let read = async {
            loop {
                let (datagram, _) = self.socket.recv_from_full().await?;
                for message in reply::messages(&datagram) {
                    if let Some(done) = on(&message?)? {
                        return Ok(done);
                    }
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| NftError::Timeout(timeout))?
    }
}

fn refused(what: String, code: i32) -> NftError {
    NftError::Refused(vec![Refusal {
        what,
        index: None,
        code,
    }])
}
