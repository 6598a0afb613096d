//! `Verifier::verify_with`: custom claims read from the same verified payload,
//! which can never change the standard claims.

use std::sync::Arc;

use common::verify::FixedClock;
use common::{Algorithm, Audience, PrivateKey, Rejection, Verifier};
use serde::Deserialize;

const NOW: i64 = 1_700_000_000;

fn setup() -> (Verifier, impl Fn(&str) -> String) {
    let key = PrivateKey::generate(Algorithm::EdDSA, "ed").unwrap();
    let verifier = Verifier::new(vec![key.public_key()], "locate", "mlab1-abc0t")
        .unwrap()
        .with_clock(Arc::new(FixedClock(NOW)));
    // Sign an arbitrary payload with the key, by hand (Signer takes only Claims).
    let jwk: serde_json::Value = serde_json::from_str(&key.to_jwk_json()).unwrap();
    let seed = b64d(jwk["d"].as_str().unwrap());
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
    let sign = move |payload: &str| {
        use ed25519_dalek::Signer as _;
        let input = format!(
            "{}.{}",
            b64e(br#"{"alg":"EdDSA","kid":"ed"}"#),
            b64e(payload.as_bytes())
        );
        let sig = sk.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", b64e(&sig))
    };
    (verifier, sign)
}

fn b64e(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn payload(extra: &str) -> String {
    format!(
        r#"{{"iss":"locate","sub":"monitoring","aud":"mlab1-abc0t","exp":{}{extra}}}"#,
        NOW + 100
    )
}

#[derive(Debug, Deserialize, PartialEq)]
struct Custom {
    tier: String,
    #[serde(default)]
    ports: Vec<u16>,
}

#[test]
fn custom_claims_come_with_the_standard_ones() {
    let (v, sign) = setup();
    let token = sign(&payload(r#","tier":"gold","ports":[9999]"#));
    let (claims, custom) = v.verify_with::<Custom>(&token).unwrap();
    assert_eq!(claims, v.verify(&token).unwrap());
    assert_eq!(claims.aud, Audience::One("mlab1-abc0t".into()));
    assert_eq!(
        custom,
        Custom {
            tier: "gold".into(),
            ports: vec![9999]
        }
    );
}

fn shout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|s| s.to_uppercase())
}

fn far_future<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    i64::deserialize(d).map(|_| i64::MAX)
}

/// A custom type that reads `sub` and `exp` its own way.
#[derive(Debug, Deserialize)]
struct Shadow {
    #[serde(deserialize_with = "shout")]
    sub: String,
    #[serde(deserialize_with = "far_future")]
    exp: i64,
}

#[test]
fn a_custom_sub_or_exp_never_changes_the_standard_claims() {
    let (v, sign) = setup();
    let token = sign(&payload(""));
    let (claims, shadow) = v.verify_with::<Shadow>(&token).unwrap();
    assert_eq!((shadow.sub.as_str(), shadow.exp), ("MONITORING", i64::MAX));
    assert_eq!((claims.sub.as_str(), claims.exp), ("monitoring", NOW + 100));

    // An expired token stays expired whatever T makes of `exp`.
    let expired = sign(&format!(
        r#"{{"iss":"locate","sub":"monitoring","aud":"mlab1-abc0t","exp":{NOW}}}"#
    ));
    assert_eq!(
        v.verify_with::<Shadow>(&expired).unwrap_err(),
        Rejection::Expired
    );
}

#[test]
fn a_payload_that_t_cannot_read_is_a_bad_claim() {
    let (v, sign) = setup();
    // Missing field, wrong type, and a standard claim T wants typed differently.
    for extra in ["", r#","tier":7"#, r#","tier":"x","ports":[70000]"#] {
        let token = sign(&payload(extra));
        assert!(v.verify(&token).is_ok(), "{extra}");
        assert_eq!(
            v.verify_with::<Custom>(&token).unwrap_err(),
            Rejection::BadClaim,
            "{extra}"
        );
    }
    #[derive(Debug, Deserialize)]
    struct ExpAsString {
        #[allow(dead_code)]
        exp: String,
    }
    let token = sign(&payload(""));
    assert_eq!(
        v.verify_with::<ExpAsString>(&token).unwrap_err(),
        Rejection::BadClaim
    );
}

#[test]
fn verify_with_applies_every_standard_check_first() {
    let (v, sign) = setup();
    let cases = [
        (payload(r#","tier":"x","exp":1"#), Rejection::DuplicateClaim),
        (payload(r#","tier":"x","jti":1"#), Rejection::BadClaim),
        (
            payload(r#","tier":"x""#).replace("mlab1-abc0t", "other"),
            Rejection::WrongAudience,
        ),
        ("[1]".to_string(), Rejection::Malformed),
    ];
    for (p, want) in cases {
        assert_eq!(v.verify_with::<Custom>(&sign(&p)).unwrap_err(), want, "{p}");
        assert_eq!(v.verify(&sign(&p)).unwrap_err(), want, "{p}");
    }
    // A bad signature is refused before T is ever read.
    let token = sign(&payload(r#","tier":"x""#));
    let at = token.len() - 10;
    let flipped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    assert_eq!(
        v.verify_with::<Custom>(&forged).unwrap_err(),
        Rejection::BadSignature
    );
}

/// Found by the `token` fuzz target: a claim given twice in a payload that is
/// no JSON at all was `duplicate-claim` for `verify` (which read the claims as
/// they came) but `malformed` for `verify_payload` and `verify_with` (which read
/// the payload whole first). Every entry point now reads it one way.
#[test]
fn a_duplicate_claim_in_a_payload_that_is_no_json_is_malformed_everywhere() {
    let (v, sign) = setup();
    let token = sign(&format!(
        r#"{{"iss":"locate","sub":"monitoring","aud":"mlab1-abc0t","exp":{},"aud"o":et"rh}}"#,
        NOW + 100
    ));
    assert_eq!(v.verify(&token).unwrap_err(), Rejection::Malformed);
    assert_eq!(v.verify_payload(&token).unwrap_err(), Rejection::Malformed);
    assert_eq!(
        v.verify_with::<serde_json::Value>(&token).unwrap_err(),
        Rejection::Malformed
    );
    // Valid JSON with the same duplicate is still a duplicate everywhere.
    let token = sign(&payload(r#","aud":"other""#));
    assert_eq!(v.verify(&token).unwrap_err(), Rejection::DuplicateClaim);
    assert_eq!(
        v.verify_payload(&token).unwrap_err(),
        Rejection::DuplicateClaim
    );
}
