//! The ipset netlink protocol, encoded and decoded by hand on rust-netlink's
//! framing: one [`Request`] is one nfnetlink message of the ipset subsystem,
//! and [`Reply`] is what the kernel sends back. Only what the envelope uses is
//! here: protocol and type queries, create/destroy/flush, add/del of a net or a
//! port with a timeout, and listing one set's members.
//!
//! Constants are those of `<linux/netfilter/ipset/ip_set.h>`.

use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable, Nla,
    NlaBuffer, NlasIterator, NLA_F_NESTED, NLA_F_NET_BYTEORDER,
};

/// `NFNL_SUBSYS_IPSET`: the high byte of every ipset message type.
const SUBSYS_IPSET: u16 = 6;

/// `IPSET_CMD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmd {
    Protocol = 1,
    Create = 2,
    Destroy = 3,
    Flush = 4,
    List = 7,
    Add = 9,
    Del = 10,
    Header = 12,
    Type = 13,
}

/// `NFPROTO_*`.
pub const FAMILY_UNSPEC: u8 = 0;
pub const FAMILY_INET: u8 = 2;
pub const FAMILY_INET6: u8 = 10;

// Command-level attributes (IPSET_ATTR_*).
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_DATA: u16 = 7;
const ATTR_ADT: u16 = 8;
const ATTR_PROTOCOL_MIN: u16 = 10;
// Data attributes, inside ATTR_DATA.
const DATA_IP: u16 = 1;
const DATA_CIDR: u16 = 3;
const DATA_PORT: u16 = 4;
const DATA_PORT_TO: u16 = 5;
const DATA_TIMEOUT: u16 = 6;
const DATA_MAXELEM: u16 = 19;
// Inside DATA_IP.
const IPADDR_V4: u16 = 1;
const IPADDR_V6: u16 = 2;

pub use crate::firewall::set_state::MAX_TIMEOUT_SECS;
/// Set names are at most this long (IPSET_MAXNAMELEN minus the NUL).
pub const MAX_NAME_LEN: usize = 31;

/// One member of a set: a network (hash:net) or a port (bitmap:port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    Net(IpAddr, u8),
    Port(u16),
}

/// A netlink attribute as the envelope emits it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attr {
    U8(u16, u8),
    /// Big-endian, flagged NLA_F_NET_BYTEORDER as the kernel requires.
    Be16(u16, u16),
    Be32(u16, u32),
    Bytes(u16, Vec<u8>),
    Str(u16, String),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U8(..) => 1,
            Attr::Be16(..) => 2,
            Attr::Be32(..) => 4,
            Attr::Bytes(_, b) => b.len(),
            Attr::Str(_, s) => s.len() + 1,
            Attr::Nested(_, inner) => inner.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::U8(k, _) | Attr::Str(k, _) => *k,
            Attr::Be16(k, _) | Attr::Be32(k, _) | Attr::Bytes(k, _) => *k | NLA_F_NET_BYTEORDER,
            Attr::Nested(k, _) => *k | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::U8(_, v) => buffer[0] = *v,
            Attr::Be16(_, v) => buffer.copy_from_slice(&v.to_be_bytes()),
            Attr::Be32(_, v) => buffer.copy_from_slice(&v.to_be_bytes()),
            Attr::Bytes(_, b) => buffer.copy_from_slice(b),
            Attr::Str(_, s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Attr::Nested(_, inner) => inner.as_slice().emit(buffer),
        }
    }
}

fn element_attrs(element: Element) -> Vec<Attr> {
    match element {
        Element::Net(IpAddr::V4(ip), cidr) => vec![
            Attr::Nested(DATA_IP, vec![Attr::Bytes(IPADDR_V4, ip.octets().to_vec())]),
            Attr::U8(DATA_CIDR, cidr),
        ],
        Element::Net(IpAddr::V6(ip), cidr) => vec![
            Attr::Nested(DATA_IP, vec![Attr::Bytes(IPADDR_V6, ip.octets().to_vec())]),
            Attr::U8(DATA_CIDR, cidr),
        ],
        Element::Port(port) => vec![Attr::Be16(DATA_PORT, port)],
    }
}

/// One ipset request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    cmd: Cmd,
    family: u8,
    attrs: Vec<Attr>,
}

impl Request {
    fn new(cmd: Cmd, family: u8, protocol: u8) -> Request {
        Request {
            cmd,
            family,
            attrs: vec![Attr::U8(ATTR_PROTOCOL, protocol)],
        }
    }

    fn named(cmd: Cmd, protocol: u8, set: &str) -> Request {
        debug_assert!(set.len() <= MAX_NAME_LEN, "set name {set} too long");
        let mut r = Request::new(cmd, FAMILY_UNSPEC, protocol);
        r.attrs.push(Attr::Str(ATTR_SETNAME, set.to_owned()));
        r
    }

    pub fn cmd(&self) -> Cmd {
        self.cmd
    }

    /// Which protocol versions the kernel speaks.
    pub fn protocol(protocol: u8) -> Request {
        Request::new(Cmd::Protocol, FAMILY_UNSPEC, protocol)
    }

    /// The newest revision of `typename` the kernel has for `family`.
    pub fn type_query(protocol: u8, typename: &str, family: u8) -> Request {
        let mut r = Request::new(Cmd::Type, family, protocol);
        r.attrs.push(Attr::Str(ATTR_TYPENAME, typename.to_owned()));
        r.attrs.push(Attr::U8(ATTR_FAMILY, family));
        r
    }

    /// A hash:net set for `family` whose members carry timeouts.
    pub fn create_nets(
        protocol: u8,
        set: &str,
        family: u8,
        revision: u8,
        default_timeout: u32,
        maxelem: u32,
    ) -> Request {
        let data = vec![
            Attr::Be32(DATA_TIMEOUT, default_timeout),
            Attr::Be32(DATA_MAXELEM, maxelem),
        ];
        Request::create(protocol, set, "hash:net", revision, family, data)
    }

    /// A bitmap:port set over every port whose members carry timeouts.
    pub fn create_ports(protocol: u8, set: &str, revision: u8, default_timeout: u32) -> Request {
        let data = vec![
            Attr::Be16(DATA_PORT, 0),
            Attr::Be16(DATA_PORT_TO, u16::MAX),
            Attr::Be32(DATA_TIMEOUT, default_timeout),
        ];
        Request::create(protocol, set, "bitmap:port", revision, FAMILY_INET, data)
    }

    fn create(
        protocol: u8,
        set: &str,
        typename: &str,
        revision: u8,
        family: u8,
        data: Vec<Attr>,
    ) -> Request {
        let mut r = Request::named(Cmd::Create, protocol, set);
        r.family = family;
        r.attrs.push(Attr::Str(ATTR_TYPENAME, typename.to_owned()));
        r.attrs.push(Attr::U8(ATTR_REVISION, revision));
        r.attrs.push(Attr::U8(ATTR_FAMILY, family));
        r.attrs.push(Attr::Nested(ATTR_DATA, data));
        r
    }

    pub fn destroy(protocol: u8, set: &str) -> Request {
        Request::named(Cmd::Destroy, protocol, set)
    }

    pub fn flush(protocol: u8, set: &str) -> Request {
        Request::named(Cmd::Flush, protocol, set)
    }

    /// The set's header: answers ENOENT when there is no such set.
    pub fn header(protocol: u8, set: &str) -> Request {
        Request::named(Cmd::Header, protocol, set)
    }

    pub fn list(protocol: u8, set: &str) -> Request {
        Request::named(Cmd::List, protocol, set)
    }

    /// Adds `element`, or refreshes its timeout when it is already there
    /// (the request is sent without NLM_F_EXCL).
    pub fn add(protocol: u8, set: &str, element: Element, timeout_secs: u32) -> Request {
        let mut r = Request::named(Cmd::Add, protocol, set);
        let mut data = element_attrs(element);
        data.push(Attr::Be32(DATA_TIMEOUT, timeout_secs.min(MAX_TIMEOUT_SECS)));
        r.attrs.push(Attr::Nested(ATTR_DATA, data));
        r
    }

    /// Deletes `element`; an absent one is not an error (no NLM_F_EXCL).
    pub fn del(protocol: u8, set: &str, element: Element) -> Request {
        let mut r = Request::named(Cmd::Del, protocol, set);
        r.attrs
            .push(Attr::Nested(ATTR_DATA, element_attrs(element)));
        r
    }
}

impl NetlinkSerializable for Request {
    fn message_type(&self) -> u16 {
        (SUBSYS_IPSET << 8) | self.cmd as u16
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // struct nfgenmsg: family, version (NFNETLINK_V0), res_id (big-endian 0).
        buffer[0] = self.family;
        buffer[1] = 0;
        buffer[2] = 0;
        buffer[3] = 0;
        self.attrs.as_slice().emit(&mut buffer[4..]);
    }
}

/// What a reply message carries that the envelope reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub protocol: Option<u8>,
    pub protocol_min: Option<u8>,
    pub revision: Option<u8>,
    pub revision_min: Option<u8>,
    /// Members listed in this message, with their remaining timeout (seconds).
    pub members: Vec<(Element, Option<u32>)>,
}

impl NetlinkDeserializable for Reply {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Reply, DecodeError> {
        if header.message_type >> 8 != SUBSYS_IPSET || payload.len() < 4 {
            return Err(DecodeError::from(format!(
                "not an ipset reply (type {:#x})",
                header.message_type
            )));
        }
        let mut reply = Reply::default();
        for nla in NlasIterator::new(&payload[4..]) {
            let nla = nla?;
            let value = nla.value();
            match nla.kind() {
                ATTR_PROTOCOL => reply.protocol = value.first().copied(),
                ATTR_REVISION => reply.revision = value.first().copied(),
                // The same number means "protocol min" in a protocol reply and
                // "revision min" in a type reply.
                ATTR_PROTOCOL_MIN => {
                    reply.protocol_min = value.first().copied();
                    reply.revision_min = value.first().copied();
                }
                ATTR_ADT => {
                    for data in NlasIterator::new(value) {
                        let data = data?;
                        if data.kind() == ATTR_DATA {
                            if let Some(member) = parse_member(data.value())? {
                                reply.members.push(member);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(reply)
    }
}

fn parse_member(data: &[u8]) -> Result<Option<(Element, Option<u32>)>, DecodeError> {
    let (mut ip, mut cidr, mut port, mut timeout) = (None, None, None, None);
    for nla in NlasIterator::new(data) {
        let nla: NlaBuffer<&[u8]> = nla?;
        let value = nla.value();
        match nla.kind() {
            DATA_IP => {
                for inner in NlasIterator::new(value) {
                    let inner = inner?;
                    let v = inner.value();
                    ip = match (inner.kind(), v.len()) {
                        (IPADDR_V4, 4) => {
                            Some(IpAddr::from(<[u8; 4]>::try_from(v).expect("4 bytes")))
                        }
                        (IPADDR_V6, 16) => {
                            Some(IpAddr::from(<[u8; 16]>::try_from(v).expect("16 bytes")))
                        }
                        _ => ip,
                    };
                }
            }
            DATA_CIDR => cidr = value.first().copied(),
            DATA_PORT if value.len() == 2 => port = Some(u16::from_be_bytes([value[0], value[1]])),
            DATA_TIMEOUT if value.len() == 4 => {
                timeout = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            }
            _ => {}
        }
    }
    Ok(match (ip, cidr, port) {
        (Some(ip), Some(cidr), _) => Some((Element::Net(ip, cidr), timeout)),
        (Some(ip), None, _) => Some((
            Element::Net(ip, if ip.is_ipv4() { 32 } else { 128 }),
            timeout,
        )),
        (None, _, Some(port)) => Some((Element::Port(port), timeout)),
        _ => None,
    })
}

/// The name of an ipset error code (positive, as in the header), for messages.
pub fn error_name(code: i32) -> Option<&'static str> {
    Some(match code {
        4097 => "protocol error",
        4098 => "set type not supported by the kernel",
        4099 => "too many sets",
        4100 => "set is in use by a rule (busy)",
        4101 => "second set does not exist",
        4102 => "set type mismatch",
        4103 => "element or set already exists / is missing",
        4104 => "invalid prefix length",
        4105 => "invalid netmask",
        4106 => "invalid family",
        4107 => "timeout not supported by the set",
        4108 => "set is referenced",
        4109 => "invalid IPv4 address",
        4110 => "invalid IPv6 address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    fn bytes(request: Request) -> Vec<u8> {
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(request),
        );
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn add_of_a_v4_net_matches_libipset_layout() {
        let buf = bytes(Request::add(
            7,
            "s",
            Element::Net("192.0.2.0".parse().unwrap(), 24),
            65,
        ));
        // nlmsghdr: type = (6 << 8) | 9.
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x0609);
        // nfgenmsg, then PROTOCOL (len 5, type 1, value 7, 3 pad).
        assert_eq!(&buf[16..20], &[0, 0, 0, 0]);
        assert_eq!(&buf[20..25], &[5, 0, 1, 0, 7]);
        // SETNAME "s\0".
        assert_eq!(&buf[28..34], &[6, 0, 2, 0, b's', 0]);
        // DATA is nested; IP nested; IPv4 address in network order with its flag.
        let data = &buf[36..];
        assert_eq!(
            u16::from_ne_bytes([data[2], data[3]]),
            ATTR_DATA | NLA_F_NESTED
        );
        let ip = &data[4..];
        assert_eq!(u16::from_ne_bytes([ip[2], ip[3]]), DATA_IP | NLA_F_NESTED);
        assert_eq!(
            u16::from_ne_bytes([ip[6], ip[7]]),
            IPADDR_V4 | NLA_F_NET_BYTEORDER
        );
        assert_eq!(&ip[8..12], &[192, 0, 2, 0]);
        // CIDR, then TIMEOUT big-endian.
        assert_eq!(&ip[12..17], &[5, 0, DATA_CIDR as u8, 0, 24]);
        assert_eq!(&ip[20..22], &[8, 0]);
        assert_eq!(
            u16::from_ne_bytes([ip[22], ip[23]]),
            DATA_TIMEOUT | NLA_F_NET_BYTEORDER
        );
        assert_eq!(&ip[24..28], &65u32.to_be_bytes());
        assert_eq!(
            buf.len(),
            u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
        );
    }

    #[test]
    fn timeouts_are_capped_at_the_kernel_maximum() {
        let r = Request::add(7, "s", Element::Port(80), u32::MAX);
        assert!(r
            .attrs
            .iter()
            .any(|a| matches!(a, Attr::Nested(ATTR_DATA, d)
            if d.contains(&Attr::Be32(DATA_TIMEOUT, MAX_TIMEOUT_SECS)))));
    }

    #[test]
    fn a_listed_member_is_parsed_back() {
        // One ADT with one DATA: IP 2001:db8:: /64, timeout 42.
        let member = vec![
            Attr::Nested(
                DATA_IP,
                vec![Attr::Bytes(
                    IPADDR_V6,
                    "2001:db8::"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                        .to_vec(),
                )],
            ),
            Attr::U8(DATA_CIDR, 64),
            Attr::Be32(DATA_TIMEOUT, 42),
        ];
        let attrs = vec![
            Attr::Str(ATTR_SETNAME, "s".into()),
            Attr::Nested(ATTR_ADT, vec![Attr::Nested(ATTR_DATA, member)]),
        ];
        let mut payload = vec![0u8; 4 + attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut payload[4..]);
        let mut header = NetlinkHeader::default();
        header.message_type = 0x0607;
        let reply = Reply::deserialize(&header, &payload).unwrap();
        assert_eq!(
            reply.members,
            [(Element::Net("2001:db8::".parse().unwrap(), 64), Some(42))]
        );
    }
}
