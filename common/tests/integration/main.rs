//! `common`'s integration tests, one binary (`cargo test -p common --test
//! integration`): key loading, signing and verification through the public API,
//! against hand-made tokens, independent vectors and property tests, and the
//! warp filters through the `protected_hello` example; and the build script
//! that names the commit (`build_script`).
//!
//! The property tests' saved failure seeds live where proptest looks for them
//! beside a `main.rs`: `tests/proptest-regressions/roundtrip_prop.txt`.

mod build_script;
mod keys;
// The example and its test need the `warp` feature (on in `cargo test
// --workspace`, where the envelope asks for it; `--features warp` otherwise).
#[cfg(feature = "warp")]
mod protected_hello;
mod roundtrip_prop;
mod vectors;
mod verify_table;
mod verify_with;
