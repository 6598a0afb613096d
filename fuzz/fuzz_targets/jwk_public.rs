//! `jwk_public`: bytes as a `--verify-key` file (one JWK or a JWKS), through
//! `common::jwk::parse_public_file` (what `load_public_keys` does with a file's
//! text) and `PublicKey::from_jwk_json`.
//!
//! Beyond "no panic": every key that loads round-trips (its JWK output loads
//! again to the same key and the same output); a JWKS never yields two keys
//! with one kid; a file that is one JWK loads exactly as that JWK does.
#![no_main]

use std::path::Path;

use common::jwk::parse_public_file;
use common::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let single = PublicKey::from_jwk_json(text);
    if let Ok(key) = &single {
        round_trip(key);
    }
    let file = parse_public_file(text, Path::new("fuzz.jwk"));
    if let Ok(keys) = &file {
        assert!(!keys.is_empty());
        for (i, key) in keys.iter().enumerate() {
            round_trip(key);
            assert!(
                keys[..i].iter().all(|k| k.kid() != key.kid()),
                "kid {:?} twice",
                key.kid()
            );
        }
    }
    let is_jwks =
        serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("keys").is_some());
    if !is_jwks {
        let file = file.map(|keys| keys.iter().map(PublicKey::to_jwk_json).collect::<Vec<_>>());
        let single = single.map(|key| vec![key.to_jwk_json()]);
        assert_eq!(
            file.ok(),
            single.ok(),
            "a one-key file loads unlike its JWK"
        );
    }
});

fn round_trip(key: &PublicKey) {
    let text = key.to_jwk_json();
    let again = PublicKey::from_jwk_json(&text)
        .unwrap_or_else(|e| panic!("a loaded key's own JWK is refused: {e}: {text}"));
    assert_eq!((again.kid(), again.alg()), (key.kid(), key.alg()));
    assert_eq!(again.to_jwk_json(), text);
}
