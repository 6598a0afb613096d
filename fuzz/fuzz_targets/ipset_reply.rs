//! `ipset_reply`: bytes as one datagram from the kernel's ipset subsystem,
//! decoded as the envelope's netlink socket does (`envelope::fuzzing::
//! ipset_reply`: its framing into messages, the ipset reply decoder of
//! `firewall/ipset/wire.rs`, acknowledgements made into the daemon's errors).
//! The seeds are real replies of the kernel to every kind of request the
//! envelope sends (recorded inside `unshare -n`: `record_ipset.rs`).
//!
//! Beyond "no panic": no decoded attribute reads past its length — flipping
//! every padding byte (between a message's or attribute's length and the next
//! 4-byte boundary, `envelope_fuzz::netlink`) changes nothing in the result.
#![no_main]

use envelope::fuzzing::ipset_reply;
use envelope_fuzz::netlink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: netlink::self_check(), |data: &[u8]| {
    netlink::assert_padding_is_ignored(&netlink::IPSET, data, ipset_reply);
});
