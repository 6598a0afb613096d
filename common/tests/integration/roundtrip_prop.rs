//! Sign/verify round trips for the three algorithms, and property tests: arbitrary
//! strings and arbitrary mutations of valid tokens never panic and never verify.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::verify::FixedClock;
use common::{Algorithm, Audience, Claims, PrivateKey, PublicKey, Rejection, Signer, Verifier};
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        iss: "locate".into(),
        sub: "monitoring".into(),
        aud: Audience::Many(vec!["other".into(), "mlab1-abc0t".into()]),
        exp: NOW + 60,
        nbf: Some(NOW - 1),
        iat: Some(NOW),
        jti: Some("j-1".into()),
    }
}

struct Fixture {
    tokens: Vec<String>,
    verifier: Verifier,
}

fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let keys: Vec<PrivateKey> = Algorithm::ALL
            .into_iter()
            .map(|alg| PrivateKey::generate(alg, alg.as_str()).unwrap())
            .collect();
        // Only the public JWK text crosses over, as it would in deployment.
        let publics = keys
            .iter()
            .map(|k| PublicKey::from_jwk_json(&k.public_key().to_jwk_json()).unwrap())
            .collect();
        let tokens = keys
            .into_iter()
            .map(|k| Signer::new(k).sign(&claims()).unwrap())
            .collect();
        let verifier = Verifier::new(publics, "locate", "mlab1-abc0t")
            .unwrap()
            .with_clock(Arc::new(FixedClock(NOW)));
        Fixture { tokens, verifier }
    })
}

#[test]
fn round_trip_each_algorithm() {
    for alg in Algorithm::ALL {
        let key = PrivateKey::generate(alg, "k\"1").unwrap();
        // Through the JWK texts, as the tools would do it.
        let key = PrivateKey::from_jwk_json(&key.to_jwk_json()).unwrap();
        let public = PublicKey::from_jwk_json(&key.public_key().to_jwk_json()).unwrap();
        let signer = Signer::new(key);
        assert_eq!((signer.kid(), signer.alg()), ("k\"1", alg));
        let verifier = Verifier::new(vec![public], "locate", "mlab1-abc0t")
            .unwrap()
            .with_clock(Arc::new(FixedClock(NOW)));
        let token = signer.sign(&claims()).unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"{alg}","kid":"k\"1","typ":"JWT"}}"#)
        );
        assert_eq!(verifier.verify(&token), Ok(claims()), "{alg}");

        // Tampered payload: same header and signature, another subject.
        let mut other = claims();
        other.sub = "someone-else".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            verifier.verify(&forged),
            Err(Rejection::BadSignature),
            "{alg}"
        );

        // A token from a different key with the same kid.
        let stranger = Signer::new(PrivateKey::generate(alg, "k\"1").unwrap());
        assert_eq!(
            verifier.verify(&stranger.sign(&claims()).unwrap()),
            Err(Rejection::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn es256_signatures_are_deterministic_and_fixed_size() {
    let signer = Signer::new(PrivateKey::generate(Algorithm::ES256, "e").unwrap());
    let a = signer.sign(&claims()).unwrap();
    let b = signer.sign(&claims()).unwrap();
    assert_eq!(a, b, "RFC 6979");
    let sig = URL_SAFE_NO_PAD
        .decode(a.rsplit('.').next().unwrap())
        .unwrap();
    assert_eq!(sig.len(), 64);
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { len: usize },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Replace { at: usize, byte: u8 },
    SwapSegments { a: usize, b: usize },
    DuplicateSegment { a: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Delete { at }),
        (
            any::<usize>(),
            proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ".to_vec()
            )
        )
            .prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments { a, b }),
        (0usize..3).prop_map(|a| Mutation::DuplicateSegment { a }),
    ]
}

fn apply(token: &str, m: &Mutation) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let n = bytes.len();
    let mut parts: Vec<&str> = token.split('.').collect();
    let k = parts.len();
    if n == 0 && !matches!(m, Mutation::Insert { .. }) {
        return String::new();
    }
    match *m {
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Mutation::Delete { at } => {
            bytes.remove(at % n);
        }
        Mutation::Replace { at, byte } => bytes[at % n] = byte,
        Mutation::SwapSegments { a, b } => {
            parts.swap(a % k, b % k);
            return parts.join(".");
        }
        Mutation::DuplicateSegment { a } => {
            parts.insert(a % k, parts[a % k]);
            return parts.join(".");
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_verify(s in any::<String>()) {
        prop_assert!(fx().verifier.verify(&s).is_err());
    }

    #[test]
    fn token_shaped_strings_never_verify(s in "[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,200}") {
        prop_assert!(fx().verifier.verify(&s).is_err());
    }

    #[test]
    fn mutated_tokens_never_verify(which in 0usize..3, muts in proptest::collection::vec(mutation(), 1..4)) {
        let f = fx();
        let original = &f.tokens[which];
        prop_assert_eq!(f.verifier.verify(original), Ok(claims()));
        let mut token = original.clone();
        for m in &muts {
            token = apply(&token, m);
        }
        let result = f.verifier.verify(&token);
        if token == *original {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "mutated token verified: {:?}", token);
        }
    }
}
