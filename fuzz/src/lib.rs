//! What the fuzz targets (`fuzz_targets/*.rs`, one per parser) share:
//! - [`jws`]: the `token` target's fixed key set (the insecure test keys of
//!   `testdata/`, one per algorithm), its clock, and signing and verifying
//!   compact JWS independently of `common`;
//! - [`netlink`]: where a netlink datagram's padding lies, for the
//!   `ipset_reply` target's "never reads past a length" check;
//! - [`request`]: the text form of the HTTP inputs of `access_request` and
//!   `admin_request`.
//!
//! The seed corpora are in `corpus/<target>/`; `scripts/fuzz.sh` runs the
//! targets (docs/security.md, "Fuzzing").

pub mod jws;
pub mod netlink;
pub mod request;

use std::path::PathBuf;

/// The workspace's `testdata/` directory (insecure test keys and certificates).
pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata")).join(name)
}

/// The verify keys the envelope harnesses load: the three public test keys.
pub fn public_key_files() -> Vec<PathBuf> {
    ["eddsa", "es256", "rs256"]
        .iter()
        .map(|alg| testdata(&format!("insecure-test-{alg}.jwk.pub")))
        .collect()
}
