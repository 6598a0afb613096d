//! Where a datagram of netlink messages has padding: the bytes between a
//! message's (or an attribute's) length and the next 4-byte boundary. A decoder
//! that never reads past a length gives the same answer whatever those bytes
//! hold, which is what the `ipset_reply` and `nft_reply` targets check.
//!
//! The walk follows one of the envelope's decoders (a [`Dialect`]): the
//! messages it reads attributes of, their attributes after the 4-byte
//! `nfgenmsg`, and inside them the nesting the decoder descends into. It
//! stops where the decoder's iterators stop: at a length too short or too
//! long for what is left.

use std::ops::Range;

const NLMSG_HEADER: usize = 16;
const NFGENMSG: usize = 4;
const SUBSYS_IPSET: u16 = 6;
const NLA_HEADER: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Which messages a decoder reads the attributes of, and the attribute kinds
/// it descends into, outermost first.
#[derive(Debug)]
pub struct Dialect {
    pub decodes: fn(u16) -> bool,
    pub nesting: &'static [u16],
}

/// `firewall/ipset/wire.rs`: every message of the ipset subsystem;
/// `IPSET_ATTR_ADT` → `IPSET_ATTR_DATA` → `IPSET_ATTR_IP`
/// (`<linux/netfilter/ipset/ip_set.h>`).
pub const IPSET: Dialect = Dialect {
    decodes: |kind| kind >> 8 == SUBSYS_IPSET,
    nesting: &[8, 7, 1],
};

/// `NFT_MSG_NEWSETELEM` of the nf_tables subsystem.
const NEWSETELEM: u16 = (10 << 8) | 12;

/// `firewall/nftables/reply.rs`: listed set elements only;
/// `NFTA_SET_ELEM_LIST_ELEMENTS` → `NFTA_LIST_ELEM` → `NFTA_SET_ELEM_KEY`
/// (`<linux/netfilter/nf_tables.h>`).
pub const NFTABLES: Dialect = Dialect {
    decodes: |kind| kind == NEWSETELEM,
    nesting: &[3, 1, 1],
};

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

/// The padding ranges of `datagram` as `dialect`'s decoder reads it, as
/// offsets into it.
pub fn padding(dialect: &Dialect, datagram: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while datagram.len() - offset >= NLMSG_HEADER {
        let rest = &datagram[offset..];
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < NLMSG_HEADER || length > rest.len() {
            break;
        }
        let kind = u16_at(rest, 4);
        if (dialect.decodes)(kind) && length >= NLMSG_HEADER + NFGENMSG {
            let start = offset + NLMSG_HEADER + NFGENMSG;
            let area = start..offset + length;
            attributes(dialect.nesting, datagram, area, 0, &mut out);
        }
        let end = (offset + align(length)).min(datagram.len());
        out.push(offset + length..end);
        offset = end;
    }
    out.retain(|r| !r.is_empty());
    out
}

/// The check both netlink targets make: `decode` gives the same answer for
/// `datagram` with every padding byte (as `dialect` reads it) flipped.
pub fn assert_padding_is_ignored<T: PartialEq + std::fmt::Debug>(
    dialect: &Dialect,
    datagram: &[u8],
    decode: impl Fn(&[u8]) -> T,
) {
    let pads = padding(dialect, datagram);
    if pads.is_empty() {
        return;
    }
    let decoded = decode(datagram);
    let mut flipped = datagram.to_vec();
    for range in pads {
        for byte in &mut flipped[range] {
            *byte = !*byte;
        }
    }
    assert_eq!(decode(&flipped), decoded, "padding changed the result");
}

/// The padding of the attributes in `area`, descending at `depth` of `nesting`.
fn attributes(
    nesting: &[u16],
    bytes: &[u8],
    area: Range<usize>,
    depth: usize,
    out: &mut Vec<Range<usize>>,
) {
    let mut at = area.start;
    while at < area.end {
        let left = area.end - at;
        if left < NLA_HEADER {
            return;
        }
        let len = u16_at(bytes, at) as usize;
        if len < NLA_HEADER || len > left {
            return;
        }
        let kind = u16_at(bytes, at + 2) & NLA_TYPE_MASK;
        if nesting.get(depth) == Some(&kind) {
            attributes(nesting, bytes, at + NLA_HEADER..at + len, depth + 1, out);
        }
        let next = (at + align(len)).min(area.end);
        out.push(at + len..next);
        at = next;
    }
}

/// An attribute: length, kind, value (no padding after it).
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(NLA_HEADER + value.len()).expect("small attribute");
    [&len.to_ne_bytes()[..], &kind.to_ne_bytes(), value].concat()
}

/// One message of type `kind` carrying `attributes` after its nfgenmsg.
fn message(kind: u16, attributes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HEADER + NFGENMSG + attributes.len()).expect("small message");
    [
        &len.to_ne_bytes()[..],
        &kind.to_ne_bytes(),
        &[0; 10],
        &[0; 4],
        attributes,
    ]
    .concat()
}

/// Checks [`padding`] on hand-made datagrams; the `ipset_reply` and
/// `nft_reply` targets run it at start-up, so that a wrong walk fails the
/// run rather than weakening it.
// The expected lists of ranges do hold one range each.
#[allow(clippy::single_range_in_vec_init)]
pub fn self_check() {
    // A 5-byte attribute at 20 (3 bytes of padding), then a message that
    // claims 26 of its 28 bytes (2 bytes of message padding).
    let ipset_list = (SUBSYS_IPSET << 8) | 7;
    let mut m = message(ipset_list, &[nla(1, &[7]), vec![0; 3]].concat());
    assert_eq!(padding(&IPSET, &m), [25..28]);
    m[..4].copy_from_slice(&26u32.to_ne_bytes());
    assert_eq!(padding(&IPSET, &m), [25..26, 26..28]);
    // ADT → DATA → IP holding a CIDR (5 bytes at 32, padded) and an IPv4
    // address (8 bytes at 40): the walk descends to the CIDR's padding...
    let ip = nla(
        1,
        &[nla(3, &[24]), vec![0; 3], nla(1, &[192, 0, 2, 0])].concat(),
    );
    let listed = |outer: u16| message(ipset_list, &nla(outer, &nla(7, &ip)));
    assert_eq!(padding(&IPSET, &listed(8)), [37..40]);
    // ...but not into an attribute the decoder does not descend into.
    assert!(padding(&IPSET, &listed(9)).is_empty());
    // nf_tables: LIST_ELEMENTS → LIST_ELEM → KEY → a 1-byte DATA_VALUE at 32
    // (3 bytes of padding at 37), in a NEWSETELEM message only.
    let key = nla(1, &[nla(1, &[7]), vec![0; 3]].concat());
    let elements = |kind: u16| message(kind, &nla(3, &nla(1, &key)));
    assert_eq!(padding(&NFTABLES, &elements(NEWSETELEM)), [37..40]);
    assert!(padding(&NFTABLES, &elements(NEWSETELEM + 1)).is_empty());
}
