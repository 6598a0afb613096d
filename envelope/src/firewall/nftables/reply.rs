//! What the kernel sends back, decoded by hand: netlink messages in a
//! datagram, acknowledgements and refusals (NLMSG_ERROR), the end of a dump,
//! and the set elements a dump lists. Every length comes from the bytes
//! themselves, so each one is checked against what is there before it is
//! used: arbitrary input gives an error, never a panic (the decoder is
//! fuzzed). `netlink-packet-netfilter`'s own parsers are not used here: they
//! read nested attributes without checking their length.

use std::fmt;

/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM`: a listed element batch.
pub const NEWSETELEM: u16 = 0x0a0c;
/// The attribute type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HEADER_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

// NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_LIST_ELEM, NFTA_SET_ELEM_*, NFTA_DATA_VALUE.
const LIST_ELEMENTS: u16 = 3;
const LIST_ELEM: u16 = 1;
const ELEM_KEY: u16 = 1;
const ELEM_FLAGS: u16 = 3;
const ELEM_TIMEOUT: u16 = 4;
const ELEM_EXPIRATION: u16 = 5;
const DATA_VALUE: u16 = 1;
/// `NFT_SET_ELEM_INTERVAL_END`.
const INTERVAL_END: u32 = 1;

/// Bytes that are not what the kernel would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn error(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

fn be64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

/// Rounds a netlink length up to its 4-byte alignment.
fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of a datagram, in order; a malformed one ends the walk with an error.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, DecodeError>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let header = (|| {
            let len = usize::try_from(u32_at(rest, 0)?).ok()?;
            Some((len, u16_at(rest, 4)?, u16_at(rest, 6)?, u32_at(rest, 8)?))
        })();
        let item = match header {
            Some((len, kind, flags, seq)) if (NLMSG_HEADER_LEN..=rest.len()).contains(&len) => {
                let payload = rest.get(NLMSG_HEADER_LEN..len).unwrap_or_default();
                rest = rest.get(align(len)..).unwrap_or_default();
                Ok(Message {
                    kind,
                    flags,
                    seq,
                    payload,
                })
            }
            _ => {
                let e = error(format!(
                    "netlink message header does not fit the {} bytes left",
                    rest.len()
                ));
                rest = &[];
                Err(e)
            }
        };
        Some(item)
    })
}

/// The (type, value) attributes of `bytes`; a malformed one ends the walk with an error.
pub fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let header = (|| Some((usize::from(u16_at(rest, 0)?), u16_at(rest, 2)?)))();
        let item = match header {
            Some((len, kind)) if (4..=rest.len()).contains(&len) => {
                let value = rest.get(4..len).unwrap_or_default();
                rest = rest.get(align(len)..).unwrap_or_default();
                Ok((kind & NLA_TYPE_MASK, value))
            }
            _ => {
                let e = error(format!(
                    "attribute header does not fit the {} bytes left",
                    rest.len()
                ));
                rest = &[];
                Err(e)
            }
        };
        Some(item)
    })
}

/// What a message says about the request with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NLMSG_ERROR: 0 acknowledges, otherwise the (positive) errno of a refusal.
    Status(i32),
    /// NLMSG_DONE: a dump is complete.
    Done,
    /// Anything else, e.g. a listed element batch or a generation id.
    Data,
}

/// Classifies a message.
pub fn answer(message: &Message<'_>) -> Result<Answer, DecodeError> {
    match message.kind {
        NLMSG_ERROR => {
            let raw = message
                .payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
                .ok_or_else(|| error("NLMSG_ERROR without an error code"))?;
            Ok(Answer::Status(raw.checked_neg().unwrap_or(i32::MAX)))
        }
        NLMSG_DONE => Ok(Answer::Done),
        _ => Ok(Answer::Data),
    }
}

/// One element as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Vec<u8>,
    /// NFT_SET_ELEM_INTERVAL_END: the key is where an interval ends.
    pub interval_end: bool,
    /// Milliseconds the kernel still keeps it.
    pub expiration_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// The elements a NEWSETELEM message (a dump's answer) lists.
pub fn elements(payload: &[u8]) -> Result<Vec<Listed>, DecodeError> {
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| error("set element message without its nfgenmsg header"))?;
    let mut out = Vec::new();
    for attr in attributes(attrs) {
        let (kind, value) = attr?;
        if kind != LIST_ELEMENTS {
            continue;
        }
        for entry in attributes(value) {
            let (kind, value) = entry?;
            if kind == LIST_ELEM {
                out.push(element(value)?);
            }
        }
    }
    Ok(out)
}

fn element(bytes: &[u8]) -> Result<Listed, DecodeError> {
    let mut listed = Listed {
        key: Vec::new(),
        interval_end: false,
        expiration_ms: None,
        timeout_ms: None,
    };
    let mut has_key = false;
    for attr in attributes(bytes) {
        let (kind, value) = attr?;
        match kind {
            ELEM_KEY => {
                for data in attributes(value) {
                    let (kind, value) = data?;
                    if kind == DATA_VALUE {
                        listed.key = value.to_vec();
                        has_key = true;
                    }
                }
            }
            ELEM_FLAGS => {
                let flags = be32(value).ok_or_else(|| error("element flags are not 4 bytes"))?;
                listed.interval_end = flags & INTERVAL_END != 0;
            }
            ELEM_TIMEOUT => listed.timeout_ms = be64(value),
            ELEM_EXPIRATION => listed.expiration_ms = be64(value),
            _ => {}
        }
    }
    if !has_key {
        return Err(error("listed element without a key"));
    }
    Ok(listed)
}

/// One message of a reply datagram as the backend reads it: the request's
/// sequence number, what it says, and the elements it lists (a dump's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub seq: u32,
    pub answer: Answer,
    pub listed: Vec<Listed>,
}

/// Decodes a datagram the way the backend reads the kernel's answers: every
/// message, its status and the elements it lists. The fuzz target
/// `nft_reply` feeds it arbitrary bytes.
pub fn decode_answers(datagram: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    let mut out = Vec::new();
    for message in messages(datagram) {
        let message = message?;
        let answer = answer(&message)?;
        let listed = if answer == Answer::Data && message.kind == NEWSETELEM {
            elements(message.payload)?
        } else {
            Vec::new()
        };
        out.push(Decoded {
            seq: message.seq,
            answer,
            listed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    /// A dump answer as the kernel sends it: an interval start with its
    /// expiration, and its end.
    fn listed_v4() -> Vec<u8> {
        let start = [
            nla(ELEM_KEY | 0x8000, &nla(DATA_VALUE, &[192, 0, 2, 0])),
            nla(ELEM_TIMEOUT, &65_000u64.to_be_bytes()),
            nla(ELEM_EXPIRATION, &64_321u64.to_be_bytes()),
        ]
        .concat();
        let end = [
            nla(ELEM_FLAGS, &1u32.to_be_bytes()),
            nla(ELEM_KEY | 0x8000, &nla(DATA_VALUE, &[192, 0, 3, 0])),
        ]
        .concat();
        let list = [
            nla(LIST_ELEM | 0x8000, &start),
            nla(LIST_ELEM | 0x8000, &end),
        ]
        .concat();
        let payload = [
            vec![1, 0, 0, 0],
            nla(1, b"envelope\0"),
            nla(2, b"grants-v4\0"),
            nla(LIST_ELEMENTS | 0x8000, &list),
        ]
        .concat();
        message(NEWSETELEM, 9, &payload)
    }

    #[test]
    fn a_dump_answer_lists_starts_and_ends() {
        let datagram = [listed_v4(), message(NLMSG_DONE, 9, &[0; 4])].concat();
        let all: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(answer(&all[1]), Ok(Answer::Done));
        assert_eq!(all[0].kind, NEWSETELEM);
        let listed = elements(all[0].payload).unwrap();
        assert_eq!(
            listed,
            [
                Listed {
                    key: vec![192, 0, 2, 0],
                    interval_end: false,
                    expiration_ms: Some(64_321),
                    timeout_ms: Some(65_000),
                },
                Listed {
                    key: vec![192, 0, 3, 0],
                    interval_end: true,
                    expiration_ms: None,
                    timeout_ms: None,
                },
            ]
        );
    }

    #[test]
    fn errors_carry_the_positive_errno_and_acks_zero() {
        let refusal = message(NLMSG_ERROR, 3, &(-2i32).to_ne_bytes());
        let ack = message(NLMSG_ERROR, 4, &0i32.to_ne_bytes());
        let datagram = [refusal, ack].concat();
        let answers: Vec<_> = messages(&datagram)
            .map(|m| (m.as_ref().unwrap().seq, answer(&m.unwrap()).unwrap()))
            .collect();
        assert_eq!(answers, [(3, Answer::Status(2)), (4, Answer::Status(0))]);
        let short = message(NLMSG_ERROR, 5, &[1, 2]);
        let m = messages(&short).next().unwrap().unwrap();
        assert!(answer(&m).is_err());
    }

    #[test]
    fn truncated_and_lying_lengths_are_errors() {
        let good = listed_v4();
        for cut in 0..good.len() {
            // Every prefix decodes to messages or an error, never a panic.
            for m in messages(&good[..cut]).flatten() {
                let _ = elements(m.payload);
            }
        }
        let mut lying = good.clone();
        lying[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&lying).next().unwrap().is_err());
        let mut tiny = good;
        tiny[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&tiny).next().unwrap().is_err());
        assert!(attributes(&[2, 0, 1, 0]).next().unwrap().is_err());
        assert!(attributes(&[9, 0, 1, 0, 0]).next().unwrap().is_err());
        assert!(element(&nla(ELEM_FLAGS, &[0, 1])).is_err());
    }

    /// A tiny deterministic generator, so the byte soup is the same every run.
    fn soup(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = listed_v4();
        for seed in 0..2000u64 {
            let mut bytes = soup(seed, (seed % 200) as usize);
            // Half the cases mutate a real answer, which gets deeper.
            if seed % 2 == 0 {
                bytes = good.clone();
                for (i, b) in soup(seed, 4).into_iter().enumerate() {
                    let at = (usize::from(b) * 7 + i * 31) % bytes.len();
                    bytes[at] = b;
                }
            }
            let _ = decode_answers(&bytes);
            for m in messages(&bytes).flatten() {
                let _ = elements(m.payload);
            }
        }
    }
}
