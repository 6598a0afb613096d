//! `nft_reply`: bytes as one datagram from the kernel's nf_tables
//! subsystem, decoded as the `nftables` backend reads its answers
//! (`envelope::fuzzing::nft_reply`: the message walk, statuses and listed
//! elements of `firewall/nftables/reply.rs`, a decoder of our own). The seeds
//! are real replies of the kernel to every kind of datagram the backend sends
//! (recorded inside `unshare -n`: `record_nft.rs`).
//!
//! Beyond "no panic": no decoded attribute reads past its length — flipping
//! every padding byte (`envelope_fuzz::netlink`) changes nothing in the result.
#![no_main]

use envelope::fuzzing::nft_reply;
use envelope_fuzz::netlink::{self, padding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: netlink::self_check(), |data: &[u8]| {
    let decoded = nft_reply(data);
    let pads = padding(&netlink::NFTABLES, data);
    if pads.is_empty() {
        return;
    }
    let mut flipped = data.to_vec();
    for range in pads {
        for byte in &mut flipped[range] {
            *byte = !*byte;
        }
    }
    assert_eq!(nft_reply(&flipped), decoded, "padding changed the result");
});
