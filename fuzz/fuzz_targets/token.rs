//! `token`: bytes as a compact JWS for `common::Verifier` (the table's keys of
//! all three algorithms, its issuer, audience and fixed clock), through every
//! entry point: `verify`, `verify_payload`, `verify_with` (any JSON, and a
//! custom-claims struct).
//!
//! Input: a token as text; or `S` + header JSON + NUL + payload JSON, which the
//! target signs with the key of the header's `alg` first, so that mutations
//! reach the claims parser behind the signature check.
//!
//! Beyond "no panic": the four entry points agree; an accepted token's
//! signature verifies with other libraries (ed25519-dalek `verify_strict`,
//! p256, aws-lc RSA) under the key its `kid` names, its segments are canonical
//! base64url, and its claims satisfy the policy at the fixed clock.
#![no_main]

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{Claims, Rejection};
use envelope_fuzz::jws::{fixture, Fixture, AUDIENCE, ISSUER, NOW};
use libfuzzer_sys::fuzz_target;

/// A service's custom claims, as `verify_with` callers declare them.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // Read through Debug only: the point is deserializing.
struct Custom {
    int_id: Option<String>,
    limits: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    tags: Vec<String>,
    /// A standard claim: `verify_with` shows it the token's own value.
    sub: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    match data.strip_prefix(b"S") {
        Some(rest) => {
            let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let payload = rest.get(cut + 1..).unwrap_or_default();
            check(fx, &fx.sign(&rest[..cut], payload));
        }
        None => {
            if let Ok(token) = std::str::from_utf8(data) {
                check(fx, token);
            }
        }
    }
});

fn check(fx: &Fixture, token: &str) {
    let verifier = &fx.verifier;
    let plain = verifier.verify(token);
    let with_payload = verifier.verify_payload(token).map(|(claims, _)| claims);
    assert_eq!(plain, with_payload, "verify and verify_payload disagree");
    // A custom-claims type sees the same verified payload: it may refuse it
    // (`bad-claim`; serde_json's Value refuses nesting deeper than 128), but
    // never accept what `verify` refused, nor change the standard claims.
    let _: Option<serde_json::Value> = custom(&plain, verifier.verify_with(token));
    if let Some(custom) = custom::<Custom>(&plain, verifier.verify_with(token)) {
        let sub = plain.as_ref().map(|claims| &claims.sub).ok();
        assert_eq!(custom.sub.as_ref(), sub, "{custom:?}");
    }
    if let Ok(claims) = plain {
        accepted(fx, token, &claims);
    }
}

fn custom<T: std::fmt::Debug>(
    plain: &Result<Claims, Rejection>,
    with: Result<(Claims, T), Rejection>,
) -> Option<T> {
    match (plain, with) {
        (Ok(claims), Ok((same, custom))) => {
            assert_eq!(claims, &same, "verify_with changed the claims");
            Some(custom)
        }
        (Ok(_), Err(rejection)) => {
            assert_eq!(rejection, Rejection::BadClaim);
            None
        }
        (Err(a), Err(b)) => {
            assert_eq!(*a, b, "verify and verify_with refuse differently");
            None
        }
        (Err(e), Ok(custom)) => {
            panic!("verify_with accepted what verify refused ({e:?}): {custom:?}")
        }
    }
}

fn accepted(fx: &Fixture, token: &str, claims: &Claims) {
    assert!(token.len() <= common::Verifier::MAX_TOKEN_BYTES);
    if let Err(why) = fx.verify_independently(token) {
        panic!("accepted token fails independent verification: {why}: {token}");
    }
    for segment in token.split('.') {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .expect("accepted segment decodes");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(bytes),
            segment,
            "non-canonical base64"
        );
    }
    assert!(claims.exp > NOW, "expired: {claims:?}");
    assert!(claims.nbf.is_none_or(|nbf| nbf <= NOW), "{claims:?}");
    assert!(claims.iat.is_none_or(|iat| iat <= NOW), "{claims:?}");
    assert_eq!(claims.iss, ISSUER);
    assert!(claims.aud.contains(AUDIENCE), "{claims:?}");
}
