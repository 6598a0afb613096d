//! The envelope's own nf_tables table, `inet envelope`, as the requests that
//! install it in one transaction (and the two that remove it):
//!
//! ```text
//! table inet envelope {
//!   set grants-v4 { type ipv4_addr; flags interval,timeout; }     one interval per granted /24
//!   set grants-v6 { type ipv6_addr; flags interval,timeout; }     one interval per granted /64
//!   set proxy-v4  { type inet_service; flags timeout; }           the proxy ports, while the
//!   set proxy-v6  { type inet_service; flags timeout; }             family has a grant
//!   chain input { type filter hook input priority filter; policy accept;
//!     iifname "DEV" jump guard }
//!   chain guard {
//!     ct state established,related accept
//!     meta nfproto ipv4 meta l4proto icmp accept
//!     meta nfproto ipv6 meta l4proto ipv6-icmp accept
//!     tcp dport P accept                                         each service port
//!     udp dport 53 accept
//!     meta nfproto ipv4 ip saddr @grants-v4 accept
//!     meta nfproto ipv6 ip6 saddr @grants-v6 accept
//!     meta nfproto ipv4 tcp dport @proxy-v4 accept
//!     meta nfproto ipv6 tcp dport @proxy-v6 accept
//!     meta l4proto tcp reject with tcp reset
//!     reject with icmpx port-unreachable
//!   }
//! }
//! ```
//!
//! The same policy as the iptables guard, rule for rule. Installing starts
//! with `add table; delete table`, so a dead instance's table goes in the
//! same transaction that creates the fresh one: there is never a moment
//! without a guard, and nothing else in the ruleset is touched.

use netlink_packet_core::{DefaultNla, NLM_F_APPEND};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, HookNumber, Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, SetAttribute,
    SetFlags, SetMessage, TableAttribute, TableMessage, Verdict, VerdictAttribute,
};

use super::wire::Request;
use crate::firewall::Family;

pub const TABLE: &str = "envelope";
pub const INPUT_CHAIN: &str = "input";
pub const GUARD_CHAIN: &str = "guard";

/// The set holding one family's granted subnets.
pub fn grants_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "grants-v4",
        Family::V6 => "grants-v6",
    }
}

/// The set holding the proxy ports while the family has a grant.
pub fn proxy_set(family: Family) -> &'static str {
    match family {
        Family::V4 => "proxy-v4",
        Family::V6 => "proxy-v6",
    }
}

/// What the guard lets in besides grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard<'a> {
    pub device: &'a str,
    pub service_ports: &'a [u16],
}

// nft's datatype ids (what `nft list` shows a set's keys as).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// NF_ACCEPT as a verdict code.
const ACCEPT: u32 = 1;
/// `NFT_PAYLOAD_NETWORK_HEADER`, `NFT_PAYLOAD_TRANSPORT_HEADER`.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// `IFNAMSIZ`: `iifname` compares this many bytes, NUL-padded.
const IFNAMSIZ: usize = 16;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_ESTABLISHED_RELATED: u32 = 2 | 4;
// The `ct` and `reject` expressions, which the crate has no types for.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFT_REJECT_TCP_RST: u32 = 1;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;

fn table() -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }
}

/// `add table inet envelope; delete table inet envelope`: removes our table
/// (with its chains, rules and sets) if it exists, and is a no-op otherwise.
pub fn remove() -> Vec<Request> {
    vec![
        Request::create(
            NfTablesMessage::NewTable(table()),
            "add table inet envelope",
        ),
        Request::plain(
            NfTablesMessage::DeleteTable(table()),
            "delete table inet envelope",
        ),
    ]
}

/// The whole start-up transaction: remove a stale table, create ours.
pub fn install(guard: &Guard<'_>) -> Vec<Request> {
    let mut requests = remove();
    requests.push(Request::create(
        NfTablesMessage::NewTable(table()),
        "add table inet envelope",
    ));
    for (name, key_type, key_len, interval) in [
        (grants_set(Family::V4), TYPE_IPADDR, 4, true),
        (grants_set(Family::V6), TYPE_IP6ADDR, 16, true),
        (proxy_set(Family::V4), TYPE_INET_SERVICE, 2, false),
        (proxy_set(Family::V6), TYPE_INET_SERVICE, 2, false),
    ] {
        let mut flags = SetFlags::Timeout;
        if interval {
            flags |= SetFlags::Interval;
        }
        let set = SetMessage {
            attributes: vec![
                SetAttribute::Table(TABLE.into()),
                SetAttribute::Name(name.into()),
                SetAttribute::Flags(flags),
                SetAttribute::KeyType(key_type),
                SetAttribute::KeyLen(key_len),
                SetAttribute::Id(set_id(name)),
            ],
        };
        requests.push(Request::create(
            NfTablesMessage::NewSet(set),
            format!("add set {name}"),
        ));
    }
    requests.push(Request::create(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(INPUT_CHAIN.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(InetHookNumber::LocalIn)),
                    Hook::Priority(0),
                ]),
                ChainAttribute::Policy(ACCEPT),
                ChainAttribute::Type("filter".into()),
            ],
        }),
        format!("add chain {INPUT_CHAIN}"),
    ));
    requests.push(Request::create(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(GUARD_CHAIN.into()),
            ],
        }),
        format!("add chain {GUARD_CHAIN}"),
    ));
    let mut jump = iifname(guard.device);
    jump.push(verdict(vec![
        VerdictAttribute::Code(Verdict::Jump),
        VerdictAttribute::Chain(GUARD_CHAIN.into()),
    ]));
    requests.push(rule(INPUT_CHAIN, jump, "jump to the guard"));
    for (expressions, what) in guard_rules(guard) {
        requests.push(rule(GUARD_CHAIN, expressions, what));
    }
    requests
}

/// The id a transaction refers to one of its new sets by: its place in
/// [`install`]'s order, from 1.
fn set_id(set: &str) -> u32 {
    let sets = [
        grants_set(Family::V4),
        grants_set(Family::V6),
        proxy_set(Family::V4),
        proxy_set(Family::V6),
    ];
    sets.iter()
        .position(|s| *s == set)
        .map_or(0, |i| i as u32 + 1)
}

fn rule(chain: &str, expressions: Vec<Expressions>, what: &str) -> Request {
    let rule = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Expressions(
                expressions
                    .into_iter()
                    .map(ListAttribute::<ExpressionAttribute>::from)
                    .collect(),
            ),
        ],
    };
    Request::create(NfTablesMessage::NewRule(rule), format!("add rule: {what}"))
        .with_flags(NLM_F_APPEND)
}

fn guard_rules(guard: &Guard<'_>) -> Vec<(Vec<Expressions>, &'static str)> {
    let mut rules = vec![
        (
            vec![
                other(
                    "ct",
                    vec![be32(NFTA_CT_DREG, 1), be32(NFTA_CT_KEY, NFT_CT_STATE)],
                ),
                Expressions::Bitwise(vec![
                    Bitwise::SourceRegister(Register::Reg1),
                    Bitwise::DestinationRegister(Register::Reg1),
                    Bitwise::Length(4),
                    Bitwise::Mask(DataAttribute::Value(
                        CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
                    )),
                    Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
                ]),
                cmp(Operator::NotEqual, vec![0; 4]),
                accept(),
            ],
            "established, related",
        ),
        (
            [
                meta_is(MetaKey::Nfproto, NFPROTO_IPV4),
                meta_is(MetaKey::L4Proto, IPPROTO_ICMP),
                vec![accept()],
            ]
            .concat(),
            "icmp",
        ),
        (
            [
                meta_is(MetaKey::Nfproto, NFPROTO_IPV6),
                meta_is(MetaKey::L4Proto, IPPROTO_ICMPV6),
                vec![accept()],
            ]
            .concat(),
            "icmpv6",
        ),
    ];
    for &port in guard.service_ports {
        rules.push((dport(IPPROTO_TCP, port), "a service port"));
    }
    rules.push((dport(IPPROTO_UDP, 53), "dns"));
    for (family, nfproto, offset, len) in [
        (Family::V4, NFPROTO_IPV4, 12, 4),
        (Family::V6, NFPROTO_IPV6, 8, 16),
    ] {
        let mut grants = meta_is(MetaKey::Nfproto, nfproto);
        grants.push(load(NETWORK_HEADER, offset, len));
        grants.push(lookup(grants_set(family)));
        grants.push(accept());
        rules.push((grants, "granted subnets"));
    }
    for (family, nfproto) in [(Family::V4, NFPROTO_IPV4), (Family::V6, NFPROTO_IPV6)] {
        let mut proxy = meta_is(MetaKey::Nfproto, nfproto);
        proxy.extend(meta_is(MetaKey::L4Proto, IPPROTO_TCP));
        proxy.push(load(TRANSPORT_HEADER, 2, 2));
        proxy.push(lookup(proxy_set(family)));
        proxy.push(accept());
        rules.push((proxy, "proxy ports"));
    }
    let mut reset = meta_is(MetaKey::L4Proto, IPPROTO_TCP);
    reset.push(other(
        "reject",
        vec![
            be32(NFTA_REJECT_TYPE, NFT_REJECT_TCP_RST),
            DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![0]),
        ],
    ));
    rules.push((reset, "reject tcp with a reset"));
    rules.push((
        vec![other(
            "reject",
            vec![
                be32(NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH),
                DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![NFT_REJECT_ICMPX_PORT_UNREACH]),
            ],
        )],
        "reject the rest",
    ));
    rules
}

fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
    Expressions::Other {
        expression_type: name.into(),
        attributes,
    }
}

fn cmp(op: Operator, data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

/// `meta KEY == value` for a one-byte key (nfproto, l4proto).
fn meta_is(key: MetaKey, value: u8) -> Vec<Expressions> {
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(key),
        ]),
        cmp(Operator::Equal, vec![value]),
    ]
}

/// `iifname "DEV"`; iptables' `DEV+` wildcard becomes a prefix match (`DEV*`).
fn iifname(device: &str) -> Vec<Expressions> {
    let name = match device.strip_suffix('+') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut padded = device.as_bytes().to_vec();
            padded.resize(IFNAMSIZ, 0);
            padded
        }
    };
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(MetaKey::Iifname),
        ]),
        cmp(Operator::Equal, name),
    ]
}

fn load(base: u32, offset: u32, len: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

/// `th dport PORT accept` for `proto` (tcp or udp).
fn dport(proto: u8, port: u16) -> Vec<Expressions> {
    let mut rule = meta_is(MetaKey::L4Proto, proto);
    rule.push(load(TRANSPORT_HEADER, 2, 2));
    rule.push(cmp(Operator::Equal, port.to_be_bytes().to_vec()));
    rule.push(accept());
    rule
}

/// A lookup in one of the sets created in the same transaction.
fn lookup(set: &str) -> Expressions {
    Expressions::Lookup(vec![
        Lookup::Set(set.into()),
        Lookup::SourceRegister(Register::Reg1),
        Lookup::SetId(set_id(set)),
    ])
}

fn verdict(attributes: Vec<VerdictAttribute>) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(attributes)),
    ])
}

fn accept() -> Expressions {
    verdict(vec![VerdictAttribute::Code(Verdict::Other(ACCEPT))])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard<'static> {
        Guard {
            device: "env0",
            service_ports: &[8443, 9443],
        }
    }

    #[test]
    fn installing_removes_the_old_table_first_and_builds_everything_else() {
        let requests = install(&guard());
        let whats: Vec<&str> = requests.iter().map(Request::what).collect();
        assert_eq!(
            whats[..7],
            [
                "add table inet envelope",
                "delete table inet envelope",
                "add table inet envelope",
                "add set grants-v4",
                "add set grants-v6",
                "add set proxy-v4",
                "add set proxy-v6",
            ]
        );
        assert_eq!(
            whats[7..10],
            [
                "add chain input",
                "add chain guard",
                "add rule: jump to the guard"
            ]
        );
        let tcp = whats
            .iter()
            .filter(|w| **w == "add rule: a service port")
            .count();
        assert_eq!(tcp, 2, "one rule per service port");
        assert_eq!(whats.last(), Some(&"add rule: reject the rest"));
    }

    #[test]
    fn an_iptables_wildcard_device_is_a_prefix_match() {
        let exact = iifname("env0");
        let Expressions::Cmp(attrs) = &exact[1] else {
            panic!()
        };
        assert!(attrs.contains(&Cmp::Data(DataAttribute::Value(
            b"env0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()
        ))));
        let wildcard = iifname("eth+");
        let Expressions::Cmp(attrs) = &wildcard[1] else {
            panic!()
        };
        assert!(attrs.contains(&Cmp::Data(DataAttribute::Value(b"eth".to_vec()))));
    }
}
