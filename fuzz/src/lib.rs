//! What the fuzz targets (`fuzz_targets/*.rs`, one per parser) share:
//! - [`jws`]: the `token` target's fixed key set (the insecure test keys of
//!   `testdata/`, one per algorithm), its clock, and signing and verifying
//!   compact JWS independently of `common`;
//! - [`netlink`]: where a netlink datagram's padding lies, for the
//!   `ipset_reply` and `nft_reply` targets' "never reads past a length" check;
//! - [`request`]: the text form of the HTTP inputs of `access_request` and
//!   `admin_request`;
//! - [`record`]: what the kernel-reply recorders share.
//!
//! The seed corpora are in `corpus/<target>/`; `scripts/fuzz.sh` runs the
//! targets (docs/security.md, "Fuzzing").

pub mod jws;
pub mod netlink;
pub mod record;
pub mod request;

use std::path::PathBuf;

use common::{Algorithm, Claims, PrivateKey, Signer};
use envelope::fuzzing::{ISSUER, MACHINE, SUBJECT};

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

/// A token of the test key for `alg` that the envelope harnesses accept: their
/// issuer, machine and subject, valid from 2026 until 2100, with this `jti`.
pub fn access_token(alg: Algorithm, jti: &str) -> String {
    let file = format!("insecure-test-{}.jwk", alg.as_str().to_lowercase());
    let text = std::fs::read_to_string(testdata(&file)).expect("test key file");
    let key = PrivateKey::from_jwk_json(&text).expect("test key");
    let claims = Claims {
        jti: Some(jti.to_owned()),
        ..Claims::for_machine(ISSUER, SUBJECT, MACHINE, 1_767_225_600, 4_102_444_800)
    };
    Signer::new(key).sign(&claims).expect("signing")
}
