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
use envelope_fuzz::netlink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: netlink::self_check(), |data: &[u8]| {
    netlink::assert_padding_is_ignored(&netlink::NFTABLES, data, nft_reply);
});
