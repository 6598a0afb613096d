//! Table of hand-made tokens (SECURITY.md §1), each row asserting the exact
//! `Rejection::label()` (or acceptance) under a fixed clock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::verify::FixedClock;
use common::{Algorithm, Audience, PrivateKey, Rejection, Verifier};
use serde_json::Value;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "locate";
const AUD: &str = "mlab1-abc0t";

struct Fixture {
    ed: PrivateKey,
    ec: PrivateKey,
    rsa: PrivateKey,
    verifier: Verifier,
}

fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let ed = PrivateKey::generate(Algorithm::EdDSA, "ed").unwrap();
        let ec = PrivateKey::generate(Algorithm::ES256, "ec").unwrap();
        let rsa = PrivateKey::generate(Algorithm::RS256, "rsa").unwrap();
        let verifier = Verifier::new(
            vec![ed.public_key(), ec.public_key(), rsa.public_key()],
            ISS,
            AUD,
        )
        .unwrap()
        .with_clock(Arc::new(FixedClock(NOW)));
        Fixture {
            ed,
            ec,
            rsa,
            verifier,
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn member(jwk: &Value, name: &str) -> Vec<u8> {
    unb64(jwk[name].as_str().unwrap())
}

/// The raw JWS signature of `msg` with `key`, made independently of `Signer`.
fn raw_sign(key: &PrivateKey, msg: &[u8]) -> Vec<u8> {
    let jwk: Value = serde_json::from_str(&key.to_jwk_json()).unwrap();
    match key.alg() {
        Algorithm::EdDSA => {
            use ed25519_dalek::Signer as _;
            let seed: [u8; 32] = member(&jwk, "d").try_into().unwrap();
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .sign(msg)
                .to_bytes()
                .to_vec()
        }
        Algorithm::ES256 => {
            use p256::ecdsa::signature::Signer as _;
            let sk = p256::ecdsa::SigningKey::from_slice(&member(&jwk, "d")).unwrap();
            let sig: p256::ecdsa::Signature = sk.sign(msg);
            sig.to_bytes().to_vec()
        }
        Algorithm::RS256 => {
            let m = |n: &str| member(&jwk, n);
            let (n, e, d, p, q, dp, dq, qi) = (
                m("n"),
                m("e"),
                m("d"),
                m("p"),
                m("q"),
                m("dp"),
                m("dq"),
                m("qi"),
            );
            let kp = aws_lc_rs::rsa::KeyPair::from_components(&aws_lc_rs::rsa::KeyPairComponents {
                public_key: aws_lc_rs::rsa::PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                },
                d: d.as_slice(),
                p: p.as_slice(),
                q: q.as_slice(),
                dP: dp.as_slice(),
                dQ: dq.as_slice(),
                qInv: qi.as_slice(),
            })
            .unwrap();
            let mut sig = vec![0; kp.public_modulus_len()];
            kp.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .unwrap();
            sig
        }
    }
}

/// `b64(header).b64(payload).b64(sig)` where sig signs the first two segments.
fn tok(key: &PrivateKey, header: &str, payload: &str) -> String {
    tok_bytes(key, header.as_bytes(), payload.as_bytes())
}

fn tok_bytes(key: &PrivateKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = raw_sign(key, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn hdr(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#)
}

fn ed_hdr() -> String {
    hdr("EdDSA", "ed")
}

/// A valid payload with `extra` members appended (`extra` starts with ',').
fn claims(extra: &str) -> String {
    format!(
        r#"{{"iss":"{ISS}","sub":"monitoring","aud":"{AUD}","exp":{}{extra}}}"#,
        NOW + 100
    )
}

/// A payload with every member given explicitly.
fn payload(iss: &str, aud: &str, exp: &str, extra: &str) -> String {
    let mut members = vec![r#""sub":"monitoring""#.to_string()];
    if !iss.is_empty() {
        members.push(format!(r#""iss":{iss}"#));
    }
    if !aud.is_empty() {
        members.push(format!(r#""aud":{aud}"#));
    }
    if !exp.is_empty() {
        members.push(format!(r#""exp":{exp}"#));
    }
    format!("{{{}{extra}}}", members.join(","))
}

fn ed_tok(payload: &str) -> String {
    tok(&fx().ed, &ed_hdr(), payload)
}

fn replace_segment(token: &str, index: usize, f: impl FnOnce(&str) -> String) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[index] = f(&parts[index]);
    parts.join(".")
}

/// Alters the last character so that the unused trailing bits become non-zero.
fn noncanonical_last(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(segment.len() % 4, 0, "segment has no trailing bits");
    let last = segment.as_bytes()[segment.len() - 1];
    let v = ALPHABET.iter().position(|&c| c == last).unwrap();
    let v2 = v | 1; // bit 0 is always an unused trailing bit for lengths 2 and 3 mod 4
    assert_ne!(v, v2, "pick a signature whose last sextet is even");
    format!("{}{}", &segment[..segment.len() - 1], ALPHABET[v2] as char)
}

/// Adds the Ed25519 group order L to S (bytes 32..64, little-endian).
fn add_l(sig: &[u8]) -> Vec<u8> {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = sig.to_vec();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = out[32 + i] as u16 + L[i] as u16 + carry;
        out[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

type Row = (String, String, Result<(), &'static str>);

fn rows() -> Vec<Row> {
    let f = fx();
    let ok = Ok(());
    let good = claims("");
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |name: &str, token: String, want: Result<(), &'static str>| {
        rows.push((name.to_string(), token, want));
    };

    // Positive controls.
    row("valid EdDSA", ed_tok(&good), ok);
    row("valid ES256", tok(&f.ec, &hdr("ES256", "ec"), &good), ok);
    row("valid RS256", tok(&f.rsa, &hdr("RS256", "rsa"), &good), ok);
    row(
        "typ absent",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":"ed"}"#, &good),
        ok,
    );
    row(
        "unknown header member ignored",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":"ed","x-foo":[1]}"#, &good),
        ok,
    );

    // 1. alg none.
    let none_input = format!(
        "{}.{}",
        b64(hdr("none", "ed").as_bytes()),
        b64(good.as_bytes())
    );
    row(
        "alg none, empty signature",
        format!("{none_input}."),
        Err("malformed"),
    );
    row(
        "alg none, signed",
        tok(&f.ed, &hdr("none", "ed"), &good),
        Err("alg-not-allowed"),
    );
    row(
        "alg NONE",
        tok(&f.ed, &hdr("NONE", "ed"), &good),
        Err("alg-not-allowed"),
    );
    row(
        "alg none without kid",
        tok(&f.ed, r#"{"alg":"none"}"#, &good),
        Err("alg-not-allowed"),
    );
    row(
        "alg missing",
        tok(&f.ed, r#"{"kid":"ed"}"#, &good),
        Err("malformed"),
    );
    row(
        "alg null",
        tok(&f.ed, r#"{"alg":null,"kid":"ed"}"#, &good),
        Err("malformed"),
    );
    row(
        "alg number",
        tok(&f.ed, r#"{"alg":7,"kid":"ed"}"#, &good),
        Err("malformed"),
    );
    row(
        "empty signature on valid header",
        format!("{}.", ed_tok(&good).rsplit_once('.').unwrap().0),
        Err("malformed"),
    );

    // 2. HS256 keyed with the Ed25519 public key (raw bytes and its base64).
    let ed_pub: Value = serde_json::from_str(&f.ed.public_key().to_jwk_json()).unwrap();
    let x_text = ed_pub["x"].as_str().unwrap().to_string();
    let hs_header = hdr("HS256", "ed");
    let hs_input = format!("{}.{}", b64(hs_header.as_bytes()), b64(good.as_bytes()));
    row(
        "HS256 keyed with raw Ed key",
        format!(
            "{hs_input}.{}",
            b64(&hmac_sha256(&unb64(&x_text), hs_input.as_bytes()))
        ),
        Err("alg-not-allowed"),
    );
    row(
        "HS256 keyed with base64 Ed key",
        format!(
            "{hs_input}.{}",
            b64(&hmac_sha256(x_text.as_bytes(), hs_input.as_bytes()))
        ),
        Err("alg-not-allowed"),
    );

    // 3/4. alg tied to the key; names outside the allow-list.
    row(
        "EdDSA token with ES256 key's kid",
        tok(&f.ed, &hdr("EdDSA", "ec"), &good),
        Err("alg-mismatch"),
    );
    row(
        "ES256 token with Ed key's kid",
        tok(&f.ec, &hdr("ES256", "ed"), &good),
        Err("alg-mismatch"),
    );
    row(
        "RS256 token with ES256 kid",
        tok(&f.rsa, &hdr("RS256", "ec"), &good),
        Err("alg-mismatch"),
    );
    for alg in [
        "PS256", "RS384", "ES384", "eddsa", "Ed25519", "ES256K", "HS512", "", "EdDSA ",
    ] {
        row(
            &format!("alg {alg:?}"),
            tok(&f.ed, &hdr(alg, "ed"), &good),
            Err("alg-not-allowed"),
        );
    }
    row(
        "alg escaped but exact",
        tok(&f.ed, r#"{"alg":"EdDS\u0041","kid":"ed"}"#, &good),
        ok,
    );

    // 5/6. kid.
    row(
        "kid missing",
        tok(&f.ed, r#"{"alg":"EdDSA","typ":"JWT"}"#, &good),
        Err("missing-kid"),
    );
    row(
        "kid unknown",
        tok(&f.ed, &hdr("EdDSA", "nope"), &good),
        Err("unknown-kid"),
    );
    row(
        "kid empty",
        tok(&f.ed, &hdr("EdDSA", ""), &good),
        Err("unknown-kid"),
    );
    row(
        "kid path",
        tok(&f.ed, &hdr("EdDSA", "../../dev/null"), &good),
        Err("unknown-kid"),
    );
    row(
        "kid SQL",
        tok(&f.ed, &hdr("EdDSA", "' OR 1=1"), &good),
        Err("unknown-kid"),
    );
    row(
        "kid CRLF",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":"ed\r\n\u001b[31m"}"#, &good),
        Err("unknown-kid"),
    );
    row(
        "kid escaped but exact",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":"\u0065d"}"#, &good),
        ok,
    );
    row(
        "kid number",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":7}"#, &good),
        Err("malformed"),
    );
    row(
        "kid array",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":["ed"]}"#, &good),
        Err("malformed"),
    );
    row(
        "kid null",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":null}"#, &good),
        Err("malformed"),
    );

    // 7/8/9. Key-carrying and other forbidden headers, typ.
    let jwk = f.ed.public_key().to_jwk_json();
    for (name, value) in [
        ("jwk", jwk.as_str()),
        ("jku", r#""https://evil.example/jwks""#),
        ("x5u", r#""https://evil.example/cert""#),
        ("x5c", r#"["MIIB"]"#),
        ("x5t", r#""abc""#),
        ("x5t#S256", r#""abc""#),
        ("crit", r#"["b64"]"#),
        ("crit", r#"["x-unknown"]"#),
        ("cty", r#""JWT""#),
        ("b64", "false"),
        ("jku", "null"),
    ] {
        let header = format!(r#"{{"alg":"EdDSA","kid":"ed","{name}":{value}}}"#);
        row(
            &format!("header {name}: {value}"),
            tok(&f.ed, &header, &good),
            Err("forbidden-header"),
        );
    }
    row(
        "crit+b64",
        tok(
            &f.ed,
            r#"{"alg":"EdDSA","kid":"ed","crit":["b64"],"b64":false}"#,
            &good,
        ),
        Err("forbidden-header"),
    );
    for typ in [
        r#""at+jwt""#,
        r#""jwt""#,
        r#""JWT ""#,
        "null",
        "1",
        r#"["JWT"]"#,
    ] {
        let header = format!(r#"{{"alg":"EdDSA","kid":"ed","typ":{typ}}}"#);
        row(
            &format!("typ {typ}"),
            tok(&f.ed, &header, &good),
            Err("bad-typ"),
        );
    }

    // Signatures.
    let valid = ed_tok(&good);
    let (input, sig_b64) = valid.rsplit_once('.').unwrap();
    let sig = unb64(sig_b64);
    let mut flipped = sig.clone();
    flipped[10] ^= 0x01;
    row(
        "flipped signature byte",
        format!("{input}.{}", b64(&flipped)),
        Err("bad-signature"),
    );
    row(
        "Ed25519 S+L malleability",
        format!("{input}.{}", b64(&add_l(&sig))),
        Err("bad-signature"),
    );
    row(
        "signature 63 bytes",
        format!("{input}.{}", b64(&sig[..63])),
        Err("bad-signature"),
    );
    row(
        "signature 65 bytes",
        format!("{input}.{}", b64(&[&sig[..], &[0]].concat())),
        Err("bad-signature"),
    );
    row(
        "signature from another kid's key",
        {
            let other = PrivateKey::generate(Algorithm::EdDSA, "ed").unwrap();
            tok(&other, &ed_hdr(), &good)
        },
        Err("bad-signature"),
    );
    row(
        "payload tampered",
        {
            let other = b64(claims(r#","jti":"x""#).as_bytes());
            replace_segment(&valid, 1, |_| other)
        },
        Err("bad-signature"),
    );

    // The aws-lc identity-key forgery: R = identity, S = 0. Key loading refuses an
    // identity key (so it cannot be in this verifier; `provider` tests it with
    // one); against a real key the strict provider refuses it too.
    let mut identity_sig = [0u8; 64];
    identity_sig[0] = 1;
    row(
        "forgery R = identity, S = 0",
        format!("{input}.{}", b64(&identity_sig)),
        Err("bad-signature"),
    );

    let ec_valid = tok(&f.ec, &hdr("ES256", "ec"), &good);
    let (ec_input, ec_sig_b64) = ec_valid.rsplit_once('.').unwrap();
    let ec_sig = p256::ecdsa::Signature::from_slice(&unb64(ec_sig_b64)).unwrap();
    row(
        "ES256 DER signature",
        format!("{ec_input}.{}", b64(ec_sig.to_der().as_bytes())),
        Err("bad-signature"),
    );
    row(
        "ES256 r=s=0",
        format!("{ec_input}.{}", b64(&[0u8; 64])),
        Err("bad-signature"),
    );
    let n_p256 = unb64("_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE");
    row(
        "ES256 r=n",
        format!(
            "{ec_input}.{}",
            b64(&[&n_p256[..], &ec_sig.to_bytes()[32..]].concat())
        ),
        Err("bad-signature"),
    );
    let (r, s) = ec_sig.split_scalars();
    let twin = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    row(
        "ES256 high-S twin is a valid signature",
        format!("{ec_input}.{}", b64(&twin.to_bytes())),
        ok,
    );
    let rsa_valid = tok(&f.rsa, &hdr("RS256", "rsa"), &good);
    row(
        "RS256 flipped",
        replace_segment(&rsa_valid, 2, |s| {
            let mut b = unb64(s);
            b[0] ^= 0x80;
            b64(&b)
        }),
        Err("bad-signature"),
    );
    row(
        "RS256 truncated",
        replace_segment(&rsa_valid, 2, |s| b64(&unb64(s)[1..])),
        Err("bad-signature"),
    );

    // 10. Structure and base64.
    // Find a valid EdDSA token whose signature's last sextet is even (half are).
    let even = (0..64)
        .map(|i| ed_tok(&claims(&format!(r#","jti":"{i}""#))))
        .find(|t| {
            let s = t.rsplit_once('.').unwrap().1;
            let last = *s.as_bytes().last().unwrap();
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            alphabet.iter().position(|&c| c == last).unwrap() % 2 == 0
        })
        .unwrap();
    row("control for non-canonical base64", even.clone(), ok);
    row(
        "non-canonical last signature char",
        replace_segment(&even, 2, noncanonical_last),
        Err("malformed"),
    );
    row(
        "'=' padding on signature",
        format!("{even}=="),
        Err("malformed"),
    );
    row(
        "'=' padding on header",
        replace_segment(&even, 0, |s| format!("{s}=")),
        Err("malformed"),
    );
    row(
        "'+' alphabet",
        replace_segment(&even, 2, |s| format!("+{}", &s[1..])),
        Err("malformed"),
    );
    row(
        "'/' alphabet",
        replace_segment(&even, 2, |s| format!("/{}", &s[1..])),
        Err("malformed"),
    );
    row("trailing space", format!("{even} "), Err("malformed"));
    row("leading space", format!(" {even}"), Err("malformed"));
    row("empty token", String::new(), Err("malformed"));
    row("dots only", "..".to_string(), Err("malformed"));
    let parts: Vec<&str> = even.split('.').collect();
    row(
        "2 segments",
        format!("{}.{}", parts[0], parts[1]),
        Err("malformed"),
    );
    row("1 segment", parts[0].to_string(), Err("malformed"));
    row(
        "4 segments",
        format!("{even}.{}", parts[2]),
        Err("malformed"),
    );
    row(
        "5 segments (JWE shape)",
        format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], parts[2], parts[1], parts[2]
        ),
        Err("malformed"),
    );
    row(
        "empty header segment",
        format!(".{}.{}", parts[1], parts[2]),
        Err("malformed"),
    );

    // 11. Not a JSON object.
    row("payload [1]", ed_tok("[1]"), Err("malformed"));
    row("payload \"x\"", ed_tok(r#""x""#), Err("malformed"));
    row(
        "payload is a JWT string",
        ed_tok(&format!("{:?}", even)),
        Err("malformed"),
    );
    row("payload empty", ed_tok(""), Err("malformed"));
    row(
        "payload positional array",
        ed_tok(&format!(r#"["{ISS}","monitoring","{AUD}",{}]"#, NOW + 100)),
        Err("malformed"),
    );
    row(
        "payload trailing garbage",
        ed_tok(&format!("{good}x")),
        Err("malformed"),
    );
    row(
        "payload invalid UTF-8",
        tok_bytes(
            &f.ed,
            ed_hdr().as_bytes(),
            &[b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
        ),
        Err("malformed"),
    );
    row(
        "payload with BOM",
        tok_bytes(
            &f.ed,
            ed_hdr().as_bytes(),
            &[b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
        ),
        Err("malformed"),
    );
    row(
        "header array",
        tok(&f.ed, r#"["EdDSA","ed","JWT"]"#, &good),
        Err("malformed"),
    );
    row(
        "header not JSON",
        tok(&f.ed, "alg=EdDSA", &good),
        Err("malformed"),
    );
    row(
        "header alg twice",
        tok(&f.ed, r#"{"alg":"EdDSA","alg":"EdDSA","kid":"ed"}"#, &good),
        Err("malformed"),
    );
    row(
        "header kid twice",
        tok(&f.ed, r#"{"alg":"EdDSA","kid":"x","kid":"ed"}"#, &good),
        Err("malformed"),
    );
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    row(
        "deep nesting in aud",
        ed_tok(&payload(
            &format!("\"{ISS}\""),
            &deep,
            &(NOW + 100).to_string(),
            "",
        )),
        Err("malformed"),
    );
    row(
        "deep nesting in unknown claim is skipped without recursion",
        ed_tok(&claims(&format!(r#","x":{deep}"#))),
        ok,
    );

    // 12. Duplicate claims.
    row(
        "exp twice (past then future)",
        ed_tok(&format!(
            r#"{{"iss":"{ISS}","sub":"monitoring","aud":"{AUD}","exp":{},"exp":{}}}"#,
            NOW - 10,
            NOW + 100
        )),
        Err("duplicate-claim"),
    );
    row(
        "aud twice",
        ed_tok(&claims(r#","aud":"other""#)),
        Err("duplicate-claim"),
    );
    row(
        "iss twice",
        ed_tok(&claims(&format!(r#","iss":"{ISS}""#))),
        Err("duplicate-claim"),
    );
    row(
        "unknown claim twice is ignored",
        ed_tok(&claims(r#","x":1,"x":2"#)),
        ok,
    );
    // Found by the `token` fuzz target (verify_with.rs has the whole story).
    row(
        "aud twice in a payload that is no JSON",
        ed_tok(&claims(r#","aud"o":et"rh"#)),
        Err("malformed"),
    );

    // 14/15. exp typing.
    let iss = format!("\"{ISS}\"");
    let aud = format!("\"{AUD}\"");
    row(
        "exp missing",
        ed_tok(&payload(&iss, &aud, "", "")),
        Err("missing-claim"),
    );
    for bad in [
        r#""123""#,
        "true",
        "null",
        "1.5",
        "1e30",
        "1.0",
        "18446744073709551616",
        "9223372036854775808",
        "[1]",
        "{}",
    ] {
        row(
            &format!("exp {bad}"),
            ed_tok(&payload(&iss, &aud, bad, "")),
            Err("bad-claim"),
        );
    }
    row(
        "exp float in the future",
        ed_tok(&payload(&iss, &aud, &format!("{}.4", NOW + 100), "")),
        Err("bad-claim"),
    );
    row(
        "exp -5",
        ed_tok(&payload(&iss, &aud, "-5", "")),
        Err("expired"),
    );
    row(
        "exp i64::MIN",
        ed_tok(&payload(&iss, &aud, &i64::MIN.to_string(), "")),
        Err("expired"),
    );

    // 16/17/18. exp edges.
    row(
        "exp == now",
        ed_tok(&payload(&iss, &aud, &NOW.to_string(), "")),
        Err("expired"),
    );
    row(
        "exp 1 s ago",
        ed_tok(&payload(&iss, &aud, &(NOW - 1).to_string(), "")),
        Err("expired"),
    );
    row(
        "exp 30 s ago",
        ed_tok(&payload(&iss, &aud, &(NOW - 30).to_string(), "")),
        Err("expired"),
    );
    row(
        "exp now+1",
        ed_tok(&payload(&iss, &aud, &(NOW + 1).to_string(), "")),
        ok,
    );
    row(
        "exp i64::MAX",
        ed_tok(&payload(&iss, &aud, &i64::MAX.to_string(), "")),
        ok,
    );

    // 19/20. nbf and iat.
    row(
        "nbf in the future",
        ed_tok(&claims(&format!(r#","nbf":{}"#, NOW + 50))),
        Err("not-yet-valid"),
    );
    row(
        "nbf now+1",
        ed_tok(&claims(&format!(r#","nbf":{}"#, NOW + 1))),
        Err("not-yet-valid"),
    );
    row(
        "nbf == now",
        ed_tok(&claims(&format!(r#","nbf":{NOW}"#))),
        ok,
    );
    row(
        "nbf string",
        ed_tok(&claims(r#","nbf":"x""#)),
        Err("bad-claim"),
    );
    row(
        "nbf null",
        ed_tok(&claims(r#","nbf":null"#)),
        Err("bad-claim"),
    );
    row(
        "nbf float",
        ed_tok(&claims(r#","nbf":1.5"#)),
        Err("bad-claim"),
    );
    row(
        "iat in the future",
        ed_tok(&claims(&format!(r#","iat":{}"#, NOW + 5000))),
        Err("issued-in-future"),
    );
    row(
        "iat now+1",
        ed_tok(&claims(&format!(r#","iat":{}"#, NOW + 1))),
        Err("issued-in-future"),
    );
    row(
        "iat == now",
        ed_tok(&claims(&format!(r#","iat":{NOW}"#))),
        ok,
    );
    row(
        "iat string",
        ed_tok(&claims(r#","iat":"1""#)),
        Err("bad-claim"),
    );
    row(
        "jti number",
        ed_tok(&claims(r#","jti":1"#)),
        Err("bad-claim"),
    );
    row("jti string", ed_tok(&claims(r#","jti":"abc""#)), ok);

    // 21. iss.
    let exp = (NOW + 100).to_string();
    row(
        "iss wrong",
        ed_tok(&payload(r#""locate.measurementlab.net""#, &aud, &exp, "")),
        Err("wrong-issuer"),
    );
    row(
        "iss case",
        ed_tok(&payload(r#""Locate""#, &aud, &exp, "")),
        Err("wrong-issuer"),
    );
    row(
        "iss array",
        ed_tok(&payload(&format!(r#"["evil","{ISS}"]"#), &aud, &exp, "")),
        Err("bad-claim"),
    );
    row(
        "iss number",
        ed_tok(&payload("7", &aud, &exp, "")),
        Err("bad-claim"),
    );
    row(
        "iss null",
        ed_tok(&payload("null", &aud, &exp, "")),
        Err("bad-claim"),
    );
    row(
        "iss missing",
        ed_tok(&payload("", &aud, &exp, "")),
        Err("missing-claim"),
    );
    row(
        "sub missing",
        ed_tok(&format!(r#"{{"iss":"{ISS}","aud":"{AUD}","exp":{exp}}}"#)),
        Err("missing-claim"),
    );
    row(
        "sub number",
        ed_tok(&format!(
            r#"{{"iss":"{ISS}","sub":1,"aud":"{AUD}","exp":{exp}}}"#
        )),
        Err("bad-claim"),
    );

    // 22/23. aud.
    row(
        "aud wrong",
        ed_tok(&payload(&iss, r#""mlab2-abc0t""#, &exp, "")),
        Err("wrong-audience"),
    );
    row(
        "aud case",
        ed_tok(&payload(&iss, r#""MLAB1-ABC0T""#, &exp, "")),
        Err("wrong-audience"),
    );
    row(
        "aud empty string",
        ed_tok(&payload(&iss, r#""""#, &exp, "")),
        Err("wrong-audience"),
    );
    row(
        "aud empty array",
        ed_tok(&payload(&iss, "[]", &exp, "")),
        Err("wrong-audience"),
    );
    row(
        "aud array without match",
        ed_tok(&payload(&iss, r#"["a","b"]"#, &exp, "")),
        Err("wrong-audience"),
    );
    row(
        "aud missing",
        ed_tok(&payload(&iss, "", &exp, "")),
        Err("missing-claim"),
    );
    row(
        "aud number",
        ed_tok(&payload(&iss, "123", &exp, "")),
        Err("bad-claim"),
    );
    row(
        "aud array with number",
        ed_tok(&payload(&iss, &format!(r#"[1,"{AUD}"]"#), &exp, "")),
        Err("bad-claim"),
    );
    row(
        "aud null",
        ed_tok(&payload(&iss, "null", &exp, "")),
        Err("bad-claim"),
    );
    row(
        "aud string accepted",
        ed_tok(&payload(&iss, &aud, &exp, "")),
        ok,
    );
    row(
        "aud array accepted",
        ed_tok(&payload(&iss, &format!(r#"["x","{AUD}"]"#), &exp, "")),
        ok,
    );

    // 13. Size: exactly at the cap and one byte over, both validly signed.
    let (at_cap, over_cap) = sized_tokens();
    row("token of exactly 8192 bytes", at_cap, ok);
    row("token of 8193 bytes", over_cap, Err("too-large"));
    row(
        "token of 1 MB",
        ed_tok(&claims(&format!(r#","pad":"{}""#, "a".repeat(1 << 20)))),
        Err("too-large"),
    );
    row("8 KiB of garbage", "!".repeat(9000), Err("too-large"));

    rows
}

/// Two validly signed EdDSA tokens of exactly 8192 and 8193 bytes.
fn sized_tokens() -> (String, String) {
    let mut found = (None, None);
    for space in 0..4 {
        let header = format!(
            r#"{{"alg":"EdDSA","kid":"ed",{}"typ":"JWT"}}"#,
            " ".repeat(space)
        );
        for pad in 5900..6200 {
            let t = tok(
                &fx().ed,
                &header,
                &claims(&format!(r#","pad":"{}""#, "a".repeat(pad))),
            );
            match t.len() {
                8192 if found.0.is_none() => found.0 = Some(t),
                8193 if found.1.is_none() => found.1 = Some(t),
                _ => {}
            }
            if let (Some(at), Some(over)) = &found {
                return (at.clone(), over.clone());
            }
        }
    }
    panic!("could not size tokens");
}

#[test]
fn every_row_has_its_exact_outcome() {
    let f = fx();
    let rows = rows();
    assert!(rows.len() > 150, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (name, token, want) in &rows {
        let got = catch_unwind(AssertUnwindSafe(|| f.verifier.verify(token)));
        let got = match got {
            Err(_) => {
                failures.push(format!("{name}: PANICKED"));
                continue;
            }
            Ok(r) => r.map(|_| ()).map_err(Rejection::label),
        };
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_label_is_exercised() {
    let wanted: std::collections::HashSet<&str> = rows()
        .iter()
        .filter_map(|(_, _, want)| want.err())
        .collect();
    for r in Rejection::ALL {
        assert!(wanted.contains(r.label()), "no row expects {}", r.label());
    }
}

#[test]
fn accepted_token_yields_its_claims() {
    let f = fx();
    let token = ed_tok(&format!(
        r#"{{"iss":"{ISS}","sub":"monitoring","aud":["x","{AUD}"],"exp":{},"nbf":{NOW},"iat":{},"jti":"j1","extra":{{"a":[1,2]}}}}"#,
        NOW + 100,
        NOW - 5
    ));
    let c = f.verifier.verify(&token).unwrap();
    assert_eq!(c.iss, ISS);
    assert_eq!(c.sub, "monitoring");
    assert_eq!(c.aud, Audience::Many(vec!["x".into(), AUD.into()]));
    assert_eq!(c.exp, NOW + 100);
    assert_eq!(c.nbf, Some(NOW));
    assert_eq!(c.iat, Some(NOW - 5));
    assert_eq!(c.jti.as_deref(), Some("j1"));
}

#[test]
fn clock_decides_expiry() {
    let f = fx();
    let token = ed_tok(&claims(""));
    let at = |now: i64| {
        f.verifier
            .clone()
            .with_clock(Arc::new(FixedClock(now)))
            .verify(&token)
            .map(|_| ())
            .map_err(Rejection::label)
    };
    assert_eq!(at(NOW + 99), Ok(()));
    assert_eq!(at(NOW + 100), Err("expired"));
}

#[test]
fn duplicate_kid_in_verifier_is_refused() {
    let f = fx();
    let err = Verifier::new(vec![f.ed.public_key(), f.ed.public_key()], ISS, AUD).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"duplicate kid "ed": in <memory> and in <memory>"#
    );
}

#[test]
fn verifier_is_send_sync_debug_and_prints_no_key() {
    fn assert_traits<T: Send + Sync + std::fmt::Debug + Clone>() {}
    assert_traits::<Verifier>();
    let dbg = format!("{:?}", fx().verifier);
    let jwk: Value = serde_json::from_str(&fx().ed.public_key().to_jwk_json()).unwrap();
    assert!(!dbg.contains(jwk["x"].as_str().unwrap()), "{dbg}");
    assert!(dbg.contains("\"ed\""), "{dbg}");
}

#[test]
fn empty_configured_audience_matches_nothing() {
    let f = fx();
    let v = Verifier::new(vec![f.ed.public_key()], ISS, "")
        .unwrap()
        .with_clock(Arc::new(FixedClock(NOW)));
    let iss = format!("\"{ISS}\"");
    let t = ed_tok(&payload(&iss, r#""""#, &(NOW + 100).to_string(), ""));
    assert_eq!(v.verify(&t).unwrap_err(), Rejection::WrongAudience);
}

/// Writes every row's header and payload as a seed of the `token` fuzz target
/// (`fuzz/corpus/token/table-*`, in its signing form `S` header NUL payload:
/// the target signs them with its own keys of the same kids, under this
/// table's clock, issuer and audience). Not a check: run by hand after
/// changing the table,
/// `cargo test -p common --test integration write_token_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus; run by hand"]
fn write_token_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/token");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("table-")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (i, (name, token, _)) in rows().iter().enumerate() {
        let mut segments = token.split('.').map(|s| URL_SAFE_NO_PAD.decode(s).ok());
        let (Some(Some(header)), Some(Some(payload))) = (segments.next(), segments.next()) else {
            continue;
        };
        if header.len() + payload.len() > 8192 {
            continue;
        }
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let slug = slug
            .split('-')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>();
        let seed = [b"S".as_slice(), &header, b"\0", &payload].concat();
        let file = format!("table-{i:03}-{}.signed", slug.join("-"));
        std::fs::write(dir.join(file), seed).unwrap();
    }
}
