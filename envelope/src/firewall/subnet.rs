//! The unit a grant opens: a client's /24 (IPv4) or /64 (IPv6), always built from
//! a masked address so no peer-controlled text ever reaches a firewall rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

impl Subnet {
    pub const V4_PREFIX: u8 = 24;
    pub const V6_PREFIX: u8 = 64;

    /// The subnet a client at `peer` is granted. An IPv4-mapped IPv6 address is
    /// treated as the IPv4 address it carries.
    pub fn of_client(peer: IpAddr) -> Subnet {
        match peer.to_canonical() {
            IpAddr::V4(v4) => {
                let masked = u32::from(v4) & (u32::MAX << (32 - Self::V4_PREFIX));
                Subnet {
                    network: IpAddr::V4(Ipv4Addr::from(masked)),
                    prefix: Self::V4_PREFIX,
                }
            }
            IpAddr::V6(v6) => {
                let masked = u128::from(v6) & (u128::MAX << (128 - Self::V6_PREFIX));
                Subnet {
                    network: IpAddr::V6(Ipv6Addr::from(masked)),
                    prefix: Self::V6_PREFIX,
                }
            }
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.network.is_ipv6()
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Subnet::of_client(ip) == *self
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_client_gets_its_slash_24() {
        assert_eq!(
            Subnet::of_client(ip("192.0.2.77")).to_string(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn ipv4_mapped_peer_is_treated_as_ipv4() {
        let s = Subnet::of_client(ip("::ffff:203.0.113.7"));
        assert_eq!(s.to_string(), "203.0.113.0/24");
        assert!(!s.is_ipv6());
    }

    #[test]
    fn ipv6_client_gets_its_slash_64() {
        let s = Subnet::of_client(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(s.to_string(), "2001:db8:1:2::/64");
        assert!(s.is_ipv6());
    }

    #[test]
    fn loopback_v6_is_not_mistaken_for_ipv4() {
        assert_eq!(Subnet::of_client(ip("::1")).to_string(), "::/64");
    }

    #[test]
    fn contains_matches_same_subnet_only() {
        let s = Subnet::of_client(ip("198.18.5.9"));
        assert!(s.contains(ip("198.18.5.200")));
        assert!(s.contains(ip("::ffff:198.18.5.1")));
        assert!(!s.contains(ip("198.18.6.9")));
    }
}
