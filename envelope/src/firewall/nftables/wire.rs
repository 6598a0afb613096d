//! nf_tables requests on the wire: one [`Request`] is one message of a
//! transaction, encoded with `netlink-packet-netfilter`'s nf_tables types, and
//! [`transaction`] frames requests between NFNL_MSG_BATCH_BEGIN and END so the
//! kernel applies them all or none. Also the set-element requests a grant is
//! made of: a subnet is an interval (its start, and its end flagged
//! NFT_SET_ELEM_INTERVAL_END), a port a single key; added elements carry
//! their kernel timeout.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, GenMessage, ListAttribute, NfTablesMessage, SetElementAttribute,
    SetElementFlags, SetElementList, SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::ruleset::TABLE;
use crate::firewall::Subnet;

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is addressed to.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN`, in the
/// TLV layout `nft` reads: an interval with no end element (it runs to the
/// top of the address space) is still listed as a prefix.
const UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];
/// The longest element timeout we give (the ipset path's cap, about 24.8 days).
pub const MAX_TIMEOUT: Duration =
    Duration::from_secs(crate::firewall::set_state::MAX_TIMEOUT_SECS as u64);

/// One message of a transaction, with its netlink flags and a description
/// for errors (the kernel answers a refusal with an errno only).
#[derive(Debug, Clone)]
pub struct Request {
    message: NfTablesMessage,
    flags: u16,
    what: String,
    /// An ENOENT refusal means that what this request touches is gone already
    /// (deleted by hand, expired, its set deleted): the transaction can go
    /// without it.
    gone_ok: bool,
}

impl Request {
    /// A request that creates or replaces (`NLM_F_CREATE`, never `EXCL`).
    pub fn create(message: NfTablesMessage, what: impl Into<String>) -> Request {
        Request {
            message,
            flags: NLM_F_CREATE,
            what: what.into(),
            gone_ok: false,
        }
    }

    /// A request with no extra flags (deletes).
    pub fn plain(message: NfTablesMessage, what: impl Into<String>) -> Request {
        Request {
            message,
            flags: 0,
            what: what.into(),
            gone_ok: false,
        }
    }

    pub fn with_flags(mut self, flags: u16) -> Request {
        self.flags |= flags;
        self
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Whether an ENOENT refusal of this request means "already gone".
    pub fn gone_ok(&self) -> bool {
        self.gone_ok
    }

    /// Whether this request adds or deletes set elements (the fault hook counts these).
    pub fn changes_elements(&self) -> bool {
        matches!(
            self.message,
            NfTablesMessage::NewSetElement(_) | NfTablesMessage::DeleteSetElement(_)
        )
    }
}

fn append(buf: &mut Vec<u8>, inner: NetfilterMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    message.finalize();
    let start = buf.len();
    buf.resize(start + message.buffer_len(), 0);
    message.serialize(&mut buf[start..]);
}

fn control(message: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
        message,
    )
}

fn nftables(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        message,
    )
}

/// The bytes of one transaction: BEGIN at `first_seq`, the requests at the
/// following sequence numbers, END after them. No message asks for an
/// acknowledgement: the kernel reports every refused request (and a failed
/// commit, on BEGIN's sequence number) by itself, and nothing else.
pub fn transaction(requests: &[Request], first_seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    append(&mut buf, control(ControlMessage::BatchBegin), 0, first_seq);
    let mut seq = first_seq;
    for request in requests {
        seq = seq.wrapping_add(1);
        append(
            &mut buf,
            nftables(request.message.clone()),
            request.flags,
            seq,
        );
    }
    append(
        &mut buf,
        control(ControlMessage::BatchEnd),
        0,
        seq.wrapping_add(1),
    );
    buf
}

/// A request for the ruleset's generation id, acknowledged: whether the
/// kernel answers for nf_tables at all.
pub fn generation(seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let message = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
    append(&mut buf, nftables(message), NLM_F_ACK, seq);
    buf
}

/// A dump request for every element of one of our sets.
pub fn list_elements(set: &str, seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let message = NfTablesMessage::GetSetElement(SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.into()),
            SetElementList::Set(set.into()),
        ],
    });
    append(&mut buf, nftables(message), NLM_F_DUMP, seq);
    buf
}

/// What a grant puts into a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A subnet: an interval in a grants set.
    Net(Subnet),
    /// A proxy port in a proxy set.
    Port(u16),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Net(subnet) => write!(f, "{subnet}"),
            Key::Port(port) => write!(f, "port {port}"),
        }
    }
}

/// The first address of a subnet and the first address after it (`None`
/// when the subnet ends the address space), as the set's key bytes.
pub fn interval(subnet: &Subnet) -> (Vec<u8>, Option<Vec<u8>>) {
    let size_bits = match subnet.network() {
        IpAddr::V4(_) => 32 - u32::from(subnet.prefix()),
        IpAddr::V6(_) => 128 - u32::from(subnet.prefix()),
    };
    match subnet.network() {
        IpAddr::V4(ip) => {
            let end = u32::from(ip).checked_add(1u32.checked_shl(size_bits).unwrap_or(0));
            let end = end.filter(|_| size_bits < 32);
            (ip.octets().to_vec(), end.map(|e| e.to_be_bytes().to_vec()))
        }
        IpAddr::V6(ip) => {
            let end = u128::from(ip).checked_add(1u128.checked_shl(size_bits).unwrap_or(0));
            let end = end.filter(|_| size_bits < 128);
            (ip.octets().to_vec(), end.map(|e| e.to_be_bytes().to_vec()))
        }
    }
}

fn value(bytes: Vec<u8>) -> SetElementAttribute {
    SetElementAttribute::Key(DataAttribute::Value(bytes))
}

/// The list entries of one key; the first carries `timeout` when given.
fn entries(key: Key, timeout: Option<Duration>) -> Vec<ListAttribute<SetElementAttribute>> {
    let timeout =
        timeout.map(|t| SetElementAttribute::Timeout(t.min(MAX_TIMEOUT).as_millis() as u64));
    match key {
        Key::Port(port) => {
            let mut first = vec![value(port.to_be_bytes().to_vec())];
            first.extend(timeout);
            vec![ListAttribute::Element(first)]
        }
        Key::Net(subnet) => {
            let (start, end) = interval(&subnet);
            let mut first = vec![value(start)];
            first.extend(timeout);
            match end {
                Some(end) => vec![
                    ListAttribute::Element(first),
                    ListAttribute::Element(vec![
                        SetElementAttribute::Flags(SetElementFlags::IntervalEnd),
                        value(end),
                    ]),
                ],
                None => {
                    first.push(SetElementAttribute::UserData(UDATA_INTERVAL_OPEN.to_vec()));
                    vec![ListAttribute::Element(first)]
                }
            }
        }
    }
}

fn element_message(
    set: &str,
    elements: Vec<ListAttribute<SetElementAttribute>>,
) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.into()),
            SetElementList::Set(set.into()),
            SetElementList::Elements(elements),
        ],
    }
}

/// Adds every key to `set`, each with its kernel timeout, in one message.
pub fn add_elements(set: &str, keys: &[(Key, Duration)]) -> Request {
    adding(set, keys, "add")
}

/// Adds back keys just deleted in the same transaction, with new timeouts
/// (a refresh). Where their set is gone, so are they: that refusal does not
/// fail the transaction.
pub fn readd_elements(set: &str, keys: &[(Key, Duration)]) -> Request {
    Request {
        gone_ok: true,
        ..adding(set, keys, "re-add")
    }
}

fn adding(set: &str, keys: &[(Key, Duration)], verb: &str) -> Request {
    let elements = keys
        .iter()
        .flat_map(|&(key, timeout)| entries(key, Some(timeout)))
        .collect();
    let list = keys
        .iter()
        .map(|(key, _)| key.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Request::create(
        NfTablesMessage::NewSetElement(element_message(set, elements)),
        format!("{verb} {list} to {set}"),
    )
}

/// Deletes one key from `set`: one message per key, so that a refusal
/// (ENOENT: the element is already gone) names exactly that key.
pub fn delete_element(set: &str, key: Key) -> Request {
    Request {
        gone_ok: true,
        ..Request::plain(
            NfTablesMessage::DeleteSetElement(element_message(set, entries(key, None))),
            format!("delete {key} from {set}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(ip: &str) -> Subnet {
        Subnet::of_client(ip.parse().unwrap())
    }

    #[test]
    fn an_interval_ends_at_the_next_subnet_or_nowhere() {
        assert_eq!(
            interval(&subnet("192.0.2.77")),
            (vec![192, 0, 2, 0], Some(vec![192, 0, 3, 0]))
        );
        assert_eq!(
            interval(&subnet("192.0.255.1")),
            (vec![192, 0, 255, 0], Some(vec![192, 1, 0, 0]))
        );
        assert_eq!(interval(&subnet("255.255.255.9")).1, None);
        let (start, end) = interval(&subnet("2001:db8:1:2::9"));
        assert_eq!(start[..8], [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]);
        assert_eq!(end.unwrap()[..8], [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 3]);
        assert_eq!(interval(&subnet("ffff:ffff:ffff:ffff::1")).1, None);
    }

    /// The nlattr (kind, value) pairs of `bytes`, for checking layouts.
    fn attrs(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        super::super::reply::attributes(bytes)
            .map(|a| a.map(|(k, v)| (k, v.to_vec())).unwrap())
            .collect()
    }

    #[test]
    fn a_transaction_is_framed_by_begin_and_end_for_the_nftables_subsystem() {
        let requests = [delete_element("grants-v4", Key::Port(80))];
        let buf = transaction(&requests, 41);
        let messages: Vec<_> = super::super::reply::messages(&buf)
            .map(Result::unwrap)
            .collect();
        assert_eq!(messages.len(), 3);
        // BEGIN: type 16, nfgenmsg res_id 10 in network order.
        assert_eq!(messages[0].kind, 0x10);
        assert_eq!(messages[0].seq, 41);
        assert_eq!(messages[0].payload, [0, 0, 0, 10]);
        // DELSETELEM (10 << 8 | 14), family inet, no ACK asked.
        assert_eq!(messages[1].kind, 0x0a0e);
        assert_eq!(messages[1].seq, 42);
        assert_eq!(messages[1].flags, NLM_F_REQUEST);
        assert_eq!(messages[1].payload[0], 1);
        assert_eq!(messages[2].kind, 0x11);
        assert_eq!(messages[2].seq, 43);
    }

    #[test]
    fn an_added_subnet_is_a_start_with_its_timeout_and_a_flagged_end() {
        let request = add_elements(
            "grants-v4",
            &[(Key::Net(subnet("192.0.2.7")), Duration::from_secs(65))],
        );
        assert_eq!(request.what(), "add 192.0.2.0/24 to grants-v4");
        let buf = transaction(&[request], 0);
        let message = super::super::reply::messages(&buf).nth(1).unwrap().unwrap();
        let top = attrs(&message.payload[4..]);
        assert_eq!(top[0], (1, b"envelope\0".to_vec()));
        assert_eq!(top[1], (2, b"grants-v4\0".to_vec()));
        let list = attrs(&top[2].1);
        assert_eq!(list.len(), 2, "start and end");
        let start = attrs(&list[0].1);
        assert_eq!(
            start[0],
            (1, vec![8, 0, 1, 0, 192, 0, 2, 0]),
            "KEY {{ VALUE }}"
        );
        assert_eq!(
            start[1],
            (4, 65_000u64.to_be_bytes().to_vec()),
            "TIMEOUT in ms"
        );
        let end = attrs(&list[1].1);
        assert_eq!(end[0], (3, 1u32.to_be_bytes().to_vec()), "INTERVAL_END");
        assert_eq!(end[1], (1, vec![8, 0, 1, 0, 192, 0, 3, 0]));
    }

    #[test]
    fn timeouts_are_capped() {
        let request = add_elements("proxy-v4", &[(Key::Port(443), Duration::MAX)]);
        let buf = transaction(&[request], 0);
        let message = super::super::reply::messages(&buf).nth(1).unwrap().unwrap();
        let top = attrs(&message.payload[4..]);
        let element = attrs(&attrs(&top[2].1)[0].1);
        assert_eq!(element[0], (1, vec![6, 0, 1, 0, 1, 187, 0, 0]));
        assert_eq!(
            element[1].1,
            (MAX_TIMEOUT.as_millis() as u64).to_be_bytes().to_vec()
        );
    }
}
