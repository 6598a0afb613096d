//! Tokens signed by an independent implementation (PyJWT, see testdata/README.md)
//! verify with our `Verifier`, and are refused for another machine or once expired.

use std::sync::Arc;

use common::jwk::load_public_keys;
use common::verify::FixedClock;
use common::{Audience, Claims, Verifier};
use testbed::testdata;

/// 2026-01-01T00:00:00Z, the vectors' `iat` and `nbf`.
const ISSUED: i64 = 1_767_225_600;
/// 2100-01-01T00:00:00Z, the vectors' `exp`.
const EXPIRES: i64 = 4_102_444_800;

struct Vector {
    name: &'static str,
    aud: Audience,
}

fn vectors() -> [Vector; 2] {
    [
        Vector {
            name: "eddsa",
            aud: Audience::Many(vec!["other".into(), "mlab1-test0".into()]),
        },
        Vector {
            name: "es256",
            aud: Audience::One("mlab1-test0".into()),
        },
    ]
}

fn token(v: &Vector) -> String {
    let path = testdata(&format!("vector-pyjwt-{}.jwt", v.name));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn verifier(v: &Vector, audience: &str, now: i64) -> Verifier {
    let keys = load_public_keys(&testdata(&format!("insecure-pyjwt-{}.jwk.pub", v.name))).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid(), format!("pyjwt-{}", v.name));
    Verifier::new(keys, "locate", audience)
        .unwrap()
        .with_clock(Arc::new(FixedClock(now)))
}

#[test]
fn pyjwt_vectors_verify_with_their_public_keys() {
    for v in vectors() {
        let claims = verifier(&v, "mlab1-test0", ISSUED + 60)
            .verify(&token(&v))
            .unwrap_or_else(|r| panic!("{}: rejected: {}", v.name, r.label()));
        assert_eq!(
            claims,
            Claims {
                iss: "locate".into(),
                sub: "ndt".into(),
                aud: v.aud.clone(),
                exp: EXPIRES,
                nbf: Some(ISSUED),
                iat: Some(ISSUED),
                jti: None,
            },
            "{}",
            v.name
        );
    }
}

#[test]
fn pyjwt_vectors_are_refused_for_another_machine() {
    for v in vectors() {
        let rejection = verifier(&v, "mlab1-other", ISSUED + 60)
            .verify(&token(&v))
            .unwrap_err();
        assert_eq!(rejection.label(), "wrong-audience", "{}", v.name);
    }
}

#[test]
fn pyjwt_vectors_are_refused_at_expiry() {
    for v in vectors() {
        let rejection = verifier(&v, "mlab1-test0", EXPIRES)
            .verify(&token(&v))
            .unwrap_err();
        assert_eq!(rejection.label(), "expired", "{}", v.name);
    }
}
