//! IPv4 and IPv6 as every kernel-facing backend splits its work: the
//! [`Family`] of a subnet, and [`PerFamily`], one value of a backend's state
//! for each.

use super::Subnet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(subnet: &Subnet) -> Family {
        if subnet.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One value per family: a backend's view of what it installed for IPv4 and IPv6.
#[derive(Debug, Default, Clone)]
pub struct PerFamily<T> {
    pub v4: T,
    pub v6: T,
}

impl<T> PerFamily<T> {
    pub fn get(&self, family: Family) -> &T {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn family(&mut self, family: Family) -> &mut T {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}
