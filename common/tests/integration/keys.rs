//! Load-time key checks (SPEC §3, SECURITY.md §1 rows 26, 30, 31, 32).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::jwk::{load_private_key, load_public_key_files, load_public_keys};
use common::{Algorithm, KeyError, PrivateKey, PublicKey};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn public_json(alg: Algorithm, kid: &str) -> Value {
    let key = PrivateKey::generate(alg, kid).unwrap().public_key();
    serde_json::from_str(&key.to_jwk_json()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The one-line reason of a refused in-memory public key.
fn public_reason(jwk: &Value) -> String {
    match PublicKey::from_jwk_json(&jwk.to_string()).unwrap_err() {
        KeyError::Invalid { path, reason } => {
            assert_eq!(path, Path::new("<memory>"));
            reason
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn duplicate_kid_across_files_names_kid_and_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.json",
        &public_json(Algorithm::EdDSA, "rot-1").to_string(),
    );
    let b = write(
        dir.path(),
        "b.json",
        &public_json(Algorithm::ES256, "rot-2").to_string(),
    );
    let c = write(
        dir.path(),
        "c.json",
        &public_json(Algorithm::EdDSA, "rot-1").to_string(),
    );
    // Distinct kids load fine.
    let keys = load_public_key_files(&[a.clone(), b.clone()]).unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k.kid()).collect();
    assert_eq!(kids, ["rot-1", "rot-2"]);

    let err = load_public_key_files(&[a.clone(), b.clone(), c.clone()]).unwrap_err();
    match &err {
        KeyError::DuplicateKid { kid, first, second } => {
            assert_eq!(kid, "rot-1");
            assert_eq!(first, &a);
            assert_eq!(second, &c);
        }
        other => panic!("expected DuplicateKid, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("\"rot-1\""), "{msg}");
    assert!(msg.contains(&a.display().to_string()), "{msg}");
    assert!(msg.contains(&c.display().to_string()), "{msg}");
}

#[test]
fn duplicate_kid_inside_one_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let set =
        json!({"keys": [public_json(Algorithm::EdDSA, "k"), public_json(Algorithm::ES256, "k")]});
    let path = write(dir.path(), "set.json", &set.to_string());
    match load_public_keys(&path).unwrap_err() {
        KeyError::DuplicateKid { kid, first, second } => {
            assert_eq!(kid, "k");
            assert_eq!(first, path);
            assert_eq!(second, path);
        }
        other => panic!("expected DuplicateKid, got {other:?}"),
    }
}

#[test]
fn jwks_with_two_keys_loads_both() {
    let dir = tempfile::tempdir().unwrap();
    let set = json!({"keys": [public_json(Algorithm::EdDSA, "one"), public_json(Algorithm::RS256, "two")]});
    let path = write(dir.path(), "set.json", &set.to_string());
    let keys = load_public_keys(&path).unwrap();
    let got: Vec<(&str, Algorithm)> = keys.iter().map(|k| (k.kid(), k.alg())).collect();
    assert_eq!(got, [("one", Algorithm::EdDSA), ("two", Algorithm::RS256)]);
}

#[test]
fn bad_key_inside_jwks_names_its_index_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = public_json(Algorithm::EdDSA, "b");
    bad["use"] = json!("enc");
    let set = json!({"keys": [public_json(Algorithm::EdDSA, "a"), bad]});
    let path = write(dir.path(), "set.json", &set.to_string());
    let err = load_public_keys(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "key file {}: keys[1]: use must be \"sig\", found \"enc\"",
            path.display()
        )
    );
    let empty = write(dir.path(), "empty.json", r#"{"keys":[]}"#);
    assert_eq!(
        load_public_keys(&empty).unwrap_err().to_string(),
        format!("key file {}: JWKS has no keys", empty.display())
    );
}

#[test]
fn duplicate_member_inside_jwks_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = public_json(Algorithm::EdDSA, "a").to_string();
    let dup = good.replacen("\"kid\":\"a\"", "\"kid\":\"a\",\"kid\":\"z\"", 1);
    assert_ne!(dup, good);
    let path = write(dir.path(), "set.json", &format!(r#"{{"keys":[{dup}]}}"#));
    let msg = load_public_keys(&path).unwrap_err().to_string();
    assert!(
        msg.contains("keys[0]: invalid JWK JSON: duplicate field `kid`"),
        "{msg}"
    );
}

#[test]
fn private_key_given_as_verify_key() {
    let dir = tempfile::tempdir().unwrap();
    for alg in Algorithm::ALL {
        let private = PrivateKey::generate(alg, "p").unwrap().to_jwk_json();
        let path = write(dir.path(), "p.json", &private);
        let err = load_public_keys(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key file {}: private key given where a public verify key is expected (it has \"d\")",
                path.display()
            )
        );
    }
    // Any single RSA private member is enough.
    let mut rsa = public_json(Algorithm::RS256, "r");
    rsa["qi"] = json!("AQAB");
    assert_eq!(
        public_reason(&rsa),
        "private key given where a public verify key is expected (it has \"qi\")"
    );
}

#[test]
fn use_enc_is_refused_and_use_absent_is_fine() {
    let mut jwk = public_json(Algorithm::EdDSA, "k");
    jwk["use"] = json!("enc");
    assert_eq!(public_reason(&jwk), r#"use must be "sig", found "enc""#);
    jwk.as_object_mut().unwrap().remove("use");
    assert_eq!(
        PublicKey::from_jwk_json(&jwk.to_string()).unwrap().kid(),
        "k"
    );
}

#[test]
fn missing_or_bad_alg_and_kid() {
    let mut jwk = public_json(Algorithm::EdDSA, "k");
    jwk.as_object_mut().unwrap().remove("alg");
    assert_eq!(public_reason(&jwk), r#"missing "alg""#);
    jwk["alg"] = json!("HS256");
    assert_eq!(
        public_reason(&jwk),
        r#"unsupported algorithm "HS256" (expected EdDSA, ES256 or RS256)"#
    );
    jwk["alg"] = json!("ES256");
    assert_eq!(
        public_reason(&jwk),
        r#"kty "OKP" does not match alg ES256 (needs EC)"#
    );

    let mut jwk = public_json(Algorithm::EdDSA, "k");
    jwk.as_object_mut().unwrap().remove("kid");
    assert_eq!(public_reason(&jwk), r#"missing "kid""#);
    jwk["kid"] = json!("");
    assert_eq!(public_reason(&jwk), r#""kid" must not be empty"#);
}

#[test]
fn short_and_long_ed25519_x() {
    let mut jwk = public_json(Algorithm::EdDSA, "k");
    jwk["x"] = json!(b64(&[7u8; 16]));
    assert_eq!(
        public_reason(&jwk),
        r#"Ed25519 "x" must be 32 bytes, found 16"#
    );
    jwk["x"] = json!(b64(&[7u8; 57]));
    assert_eq!(
        public_reason(&jwk),
        r#"Ed25519 "x" must be 32 bytes, found 57"#
    );
    jwk["x"] = json!("AAAA+/==");
    assert_eq!(
        public_reason(&jwk),
        r#""x" is not valid unpadded base64url"#
    );
}

#[test]
fn weak_ed25519_key_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut jwk = public_json(Algorithm::EdDSA, "k");
    jwk["x"] = json!(b64(&identity));
    assert_eq!(public_reason(&jwk), "weak Ed25519 public key (small order)");
    // A point of order 8 (canonical encoding).
    let order8 = {
        let mut b = [0u8; 32];
        b.copy_from_slice(&hex(
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        ));
        b
    };
    jwk["x"] = json!(b64(&order8));
    assert_eq!(public_reason(&jwk), "weak Ed25519 public key (small order)");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn wrong_curve_for_es256() {
    let mut jwk = public_json(Algorithm::ES256, "k");
    jwk["crv"] = json!("P-384");
    jwk["x"] = json!(b64(&[1u8; 48]));
    jwk["y"] = json!(b64(&[2u8; 48]));
    assert_eq!(
        public_reason(&jwk),
        "curve P-384 does not match alg ES256 (needs P-256)"
    );
    let mut ed = public_json(Algorithm::EdDSA, "k");
    ed["crv"] = json!("X25519");
    assert_eq!(
        public_reason(&ed),
        "curve X25519 does not match alg EdDSA (needs Ed25519)"
    );
}

#[test]
fn ec_point_off_curve_and_wrong_length() {
    let mut jwk = public_json(Algorithm::ES256, "k");
    let mut y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    y[31] ^= 1;
    jwk["y"] = json!(b64(&y));
    assert_eq!(public_reason(&jwk), "EC point (x, y) is not on curve P-256");
    jwk["y"] = json!(b64(&y[..31]));
    assert_eq!(
        public_reason(&jwk),
        r#"P-256 "y" must be 32 bytes, found 31"#
    );
}

#[test]
fn weak_rsa_keys_are_refused() {
    let jwk = public_json(Algorithm::RS256, "r");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len(), 256);
    assert!(n[0] & 0x80 != 0);

    // A 1024-bit modulus: the top half of a real one, made odd.
    let mut n1024 = n[..128].to_vec();
    n1024[127] |= 1;
    let mut small = jwk.clone();
    small["n"] = json!(b64(&n1024));
    assert_eq!(
        public_reason(&small),
        "RSA key of 1024 bits is too small (minimum 2048)"
    );

    // 2047 bits.
    let mut n2047 = n.clone();
    n2047[0] = 0x7f;
    small["n"] = json!(b64(&n2047));
    assert_eq!(
        public_reason(&small),
        "RSA key of 2047 bits is too small (minimum 2048)"
    );

    let mut huge = jwk.clone();
    let mut n8200 = vec![0xffu8; 1025];
    n8200[1024] = 0xfb;
    huge["n"] = json!(b64(&n8200));
    assert_eq!(
        public_reason(&huge),
        "RSA key of 8200 bits is too large (maximum 8192)"
    );

    for (e, reason) in [
        (
            vec![1u8],
            r#"RSA exponent "e" must be odd and greater than 1"#,
        ),
        (
            vec![2u8],
            r#"RSA exponent "e" must be odd and greater than 1"#,
        ),
        (
            vec![0u8],
            r#"RSA exponent "e" must be odd and greater than 1"#,
        ),
        (
            vec![1, 0, 0, 0, 0, 1],
            r#"RSA exponent "e" is too large (maximum 33 bits)"#,
        ),
    ] {
        let mut bad = jwk.clone();
        bad["e"] = json!(b64(&e));
        assert_eq!(public_reason(&bad), reason, "e = {e:?}");
    }
    let mut e3 = jwk.clone();
    e3["e"] = json!(b64(&[3]));
    assert!(PublicKey::from_jwk_json(&e3.to_string()).is_ok());
}

#[test]
fn public_key_of_generated_private_key_round_trips() {
    for alg in Algorithm::ALL {
        let private = PrivateKey::generate(alg, "kid-x").unwrap();
        let text = private.public_key().to_jwk_json();
        let again = PublicKey::from_jwk_json(&text).unwrap();
        assert_eq!(again.to_jwk_json(), text);
        assert_eq!((again.kid(), again.alg()), ("kid-x", alg));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("d").is_none());
        // The private JWK, minus its private members, is the public JWK.
        let mut p: Value = serde_json::from_str(&private.to_jwk_json()).unwrap();
        for m in ["d", "p", "q", "dp", "dq", "qi"] {
            p.as_object_mut().unwrap().remove(m);
        }
        assert_eq!(p, v);
    }
    let ed = PrivateKey::generate(Algorithm::EdDSA, "1")
        .unwrap()
        .public_key()
        .to_jwk_json();
    assert!(
        ed.starts_with(r#"{"use":"sig","kty":"OKP","kid":"1","crv":"Ed25519","alg":"EdDSA","x":""#),
        "{ed}"
    );
}

#[test]
fn private_key_file_loads_and_public_file_is_not_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(Algorithm::ES256, "s").unwrap();
    let path = write(dir.path(), "priv.json", &key.to_jwk_json());
    let loaded = load_private_key(&path).unwrap();
    assert_eq!(loaded.to_jwk_json(), key.to_jwk_json());
    let public = write(dir.path(), "pub.json", &key.public_key().to_jwk_json());
    assert_eq!(
        load_private_key(&public).unwrap_err().to_string(),
        format!("key file {}: missing \"d\"", public.display())
    );
}

#[test]
fn unreadable_and_non_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = load_public_keys(&missing).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot read key file {}", missing.display())
    );
    let garbage = write(dir.path(), "g.json", "not json");
    let msg = load_public_keys(&garbage).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("key file {}: invalid JWK JSON", garbage.display())),
        "{msg}"
    );
    let array = write(dir.path(), "a.json", "[1]");
    let msg = load_public_keys(&array).unwrap_err().to_string();
    assert!(
        msg.ends_with("invalid JWK JSON: expected a JSON object"),
        "{msg}"
    );
}

#[test]
fn generate_refuses_empty_kid() {
    let err = PrivateKey::generate(Algorithm::EdDSA, "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "key file <memory>: \"kid\" must not be empty"
    );
}
