//! JWK and JWKS files in go-jose's `jwk-keygen` format: parsed with jsonwebtoken's
//! [`Jwk`], then our load-time checks (SPEC §3) on top; key generation; output.
//!
//! jsonwebtoken's `DecodingKey::from_jwk` ignores `use`, `alg`, `key_ops`, curve
//! and length, and `Jwk` silently drops private members and keeps one of two
//! duplicate members. So every key is checked here when it is loaded:
//! - no member appears twice; a verify key has no private member (`d`, `p`, `q`,
//!   `dp`, `dq`, `qi`, `oth`, even as `null`);
//! - `use`, if present, is `"sig"`; `key_ops`, if present, includes `sign` or
//!   `verify`; `alg` is EdDSA, ES256 or RS256; `kid` is a non-empty string;
//!   `kty`/`crv` match `alg`;
//! - OKP `x` is 32 bytes, a canonical encoding, and not of small order;
//! - EC `x`/`y` are 32 bytes each and a point on P-256;
//! - RSA `n` has 2048..=8192 bits and is odd; `e` is odd, > 1 and at most 33 bits;
//! - a private key's `d` matches its public part (aws-lc checks the pair).
//!
//! Base64 members are URL-safe, unpadded and strict. A JWKS is read entry by entry
//! rather than as a `JwkSet`, so that each entry gets the checks above and errors
//! name the entry's index.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::signature::{self as lc, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{de, Deserialize, Serialize};
use serde_json::{Map, Value};

/// The path used in errors for keys parsed from a string rather than a file.
pub const MEMORY_PATH: &str = "<memory>";

/// The three signature algorithms the envelope accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }

    /// The same algorithm as jsonwebtoken names it.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }

    fn kty(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "OKP",
            Algorithm::ES256 => "EC",
            Algorithm::RS256 => "RSA",
        }
    }

    fn crv(self) -> Option<&'static str> {
        match self {
            Algorithm::EdDSA => Some("Ed25519"),
            Algorithm::ES256 => Some("P-256"),
            Algorithm::RS256 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unsupported algorithm {s:?} (expected EdDSA, ES256 or RS256)"))
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("duplicate kid {kid:?}: in {first} and in {second}")]
    DuplicateKid {
        kid: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl KeyError {
    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
        KeyError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// A verification key: its public JWK members (base64url, for output) and
/// jsonwebtoken's `DecodingKey`.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    alg: Algorithm,
    /// `x` (OKP), `x`,`y` (EC) or `n`,`e` (RSA), in go-jose order.
    members: Vec<(&'static str, String)>,
    pub(crate) decoding: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A signing key: its public half, its private JWK members, and jsonwebtoken's
/// `EncodingKey` made from the key's PKCS#8 DER (PKCS#1 for RSA, as aws-lc wants).
#[derive(Clone)]
pub struct PrivateKey {
    public: PublicKey,
    members: Vec<(&'static str, String)>,
    pub(crate) encoding: EncodingKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.public.alg)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Parsing and checks

/// The members a verify key must not have.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A JWK's members as a map, refusing a duplicate member (`Jwk` flattens, which
/// keeps one silently); it also keeps the private members, which `Jwk` drops.
struct Members(Map<String, Value>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    out.insert(key, map.next_value()?);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    fn private_bytes(&self, name: &str) -> Result<Vec<u8>, String> {
        match self.0.get(name) {
            Some(Value::String(s)) => {
                b64_decode(s).ok_or_else(|| format!("{name:?} is not valid unpadded base64url"))
            }
            Some(_) => Err(format!("{name:?} must be a string")),
            None => Err(format!("missing {name:?}")),
        }
    }
}

/// Strict base64url without padding: rejects `=`, `+`, `/`, whitespace and
/// non-zero trailing bits (base64 0.22's `URL_SAFE_NO_PAD` does all of these).
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parse(text: &str) -> Result<(Jwk, Members), String> {
    check_object(text)?;
    let invalid = |e: serde_json::Error| format!("invalid JWK JSON: {e}");
    let members: Members = serde_json::from_str(text).map_err(invalid)?;
    let jwk: Jwk = serde_json::from_str(text).map_err(invalid)?;
    Ok((jwk, members))
}

fn check_object(text: &str) -> Result<(), String> {
    if text.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err("invalid JWK JSON: expected a JSON object".to_string())
    }
}

/// `kty` and `crv` as written in the JWK (jsonwebtoken keeps unknown shapes in `Other`).
fn kty_crv(params: &AlgorithmParameters) -> (Option<String>, Option<String>) {
    // The JSON string a curve enum serializes to, e.g. "P-256".
    fn name<T: Serialize>(v: &T) -> Option<String> {
        serde_json::to_value(v).ok()?.as_str().map(str::to_string)
    }
    match params {
        AlgorithmParameters::EllipticCurve(p) => (Some("EC".into()), name(&p.curve)),
        AlgorithmParameters::RSA(_) => (Some("RSA".into()), None),
        AlgorithmParameters::OctetKey(_) => (Some("oct".into()), None),
        AlgorithmParameters::OctetKeyPair(p) => (Some("OKP".into()), name(&p.curve)),
        AlgorithmParameters::Other(o) => {
            let get = |m: &str| o.fields.get(m).and_then(Value::as_str).map(str::to_string);
            (get("kty"), get("crv"))
        }
        _ => (None, None),
    }
}

/// The checks common to public and private keys: `use`, `key_ops`, `alg`, `kid`,
/// `kty`, `crv`.
fn check_common(jwk: &Jwk, members: &Members) -> Result<(String, Algorithm), String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Encryption) => return Err(r#"use must be "sig", found "enc""#.into()),
        Some(PublicKeyUse::Other(u)) => return Err(format!("use must be \"sig\", found {u:?}")),
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops
            .iter()
            .any(|o| matches!(o, KeyOperations::Sign | KeyOperations::Verify))
        {
            return Err(r#"key_ops must include "sign" or "verify""#.into());
        }
    }
    let alg = match (jwk.common.key_algorithm, members.0.get("alg")) {
        (Some(KeyAlgorithm::EdDSA), _) => Algorithm::EdDSA,
        (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
        (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
        (_, Some(Value::String(name))) => return Err(Algorithm::from_str(name).unwrap_err()),
        _ => return Err(r#"missing "alg""#.into()),
    };
    let kid = jwk.common.key_id.as_deref().ok_or(r#"missing "kid""#)?;
    if kid.is_empty() {
        return Err("\"kid\" must not be empty".to_string());
    }
    let (kty, crv) = kty_crv(&jwk.algorithm);
    let kty = kty.ok_or(r#"missing "kty""#)?;
    if kty != alg.kty() {
        return Err(format!(
            "kty {kty:?} does not match alg {alg} (needs {})",
            alg.kty()
        ));
    }
    if let Some(want) = alg.crv() {
        let crv = crv.ok_or(r#"missing "crv""#)?;
        if crv != want {
            return Err(format!(
                "curve {crv} does not match alg {alg} (needs {want})"
            ));
        }
    }
    Ok((kid.to_string(), alg))
}

fn decode_fixed<const N: usize>(text: &str, name: &str, what: &str) -> Result<[u8; N], String> {
    let bytes =
        b64_decode(text).ok_or_else(|| format!("{name:?} is not valid unpadded base64url"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} {name:?} must be {N} bytes, found {}", bytes.len()))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_len(be: &[u8]) -> usize {
    let be = strip_leading_zeros(be);
    match be.first() {
        None => 0,
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn check_ed25519(x: &[u8; 32]) -> Result<(), String> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(x)
        .map_err(|_| "Ed25519 \"x\" is not a valid curve point".to_string())?;
    if key.to_edwards().compress().to_bytes() != *x {
        return Err("Ed25519 \"x\" is not a canonical point encoding".to_string());
    }
    if key.is_weak() {
        return Err("weak Ed25519 public key (small order)".to_string());
    }
    crate::provider::remember_ed25519(key);
    Ok(())
}

fn sec1(x: &[u8; 32], y: &[u8; 32]) -> Vec<u8> {
    [&[4u8][..], x, y].concat()
}

fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = bit_len(n);
    if bits < 2048 {
        return Err(format!(
            "RSA key of {bits} bits is too small (minimum 2048)"
        ));
    }
    if bits > 8192 {
        return Err(format!(
            "RSA key of {bits} bits is too large (maximum 8192)"
        ));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA modulus \"n\" must be odd".to_string());
    }
    if e.last().is_none_or(|b| b & 1 == 0) || bit_len(e) < 2 {
        return Err("RSA exponent \"e\" must be odd and greater than 1".to_string());
    }
    if bit_len(e) > 33 {
        return Err("RSA exponent \"e\" is too large (maximum 33 bits)".to_string());
    }
    Ok(())
}

/// The key material's checks; returns the public members in go-jose order.
fn check_public(jwk: &Jwk, alg: Algorithm) -> Result<Vec<(&'static str, String)>, String> {
    Ok(match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            check_ed25519(&decode_fixed::<32>(&p.x, "x", "Ed25519")?)?;
            vec![("x", p.x.clone())]
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
            let x = decode_fixed::<32>(&p.x, "x", "P-256")?;
            let y = decode_fixed::<32>(&p.y, "y", "P-256")?;
            lc::ParsedPublicKey::new(&lc::ECDSA_P256_SHA256_FIXED, sec1(&x, &y))
                .map_err(|_| "EC point (x, y) is not on curve P-256".to_string())?;
            vec![("x", p.x.clone()), ("y", p.y.clone())]
        }
        (AlgorithmParameters::RSA(p), Algorithm::RS256) => {
            let decode = |text: &str, name: &str| {
                b64_decode(text).ok_or_else(|| format!("{name:?} is not valid unpadded base64url"))
            };
            check_rsa(&decode(&p.n, "n")?, &decode(&p.e, "e")?)?;
            vec![("n", p.n.clone()), ("e", p.e.clone())]
        }
        // The members for this kty did not parse: name the first one missing.
        _ => {
            let needed: &[&str] = match alg {
                Algorithm::EdDSA => &["x"],
                Algorithm::ES256 => &["x", "y"],
                Algorithm::RS256 => &["n", "e"],
            };
            let missing = needed.iter().find(|m| {
                !matches!(&jwk.algorithm, AlgorithmParameters::Other(o)
                    if o.fields.get(**m).is_some_and(Value::is_string))
            });
            return Err(match missing {
                Some(m) => format!("missing {m:?}"),
                None => format!("invalid {} key members", alg.kty()),
            });
        }
    })
}

fn public_from(jwk: &Jwk, members: &Members) -> Result<PublicKey, String> {
    let (kid, alg) = check_common(jwk, members)?;
    let public = check_public(jwk, alg)?;
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("invalid key: {e}"))?;
    Ok(PublicKey {
        kid,
        alg,
        members: public,
        decoding,
    })
}

fn parse_public(text: &str) -> Result<PublicKey, String> {
    let (jwk, members) = parse(text)?;
    if let Some(name) = PRIVATE_MEMBERS.iter().find(|m| members.0.contains_key(**m)) {
        return Err(format!(
            "private key given where a public verify key is expected (it has {name:?})"
        ));
    }
    public_from(&jwk, &members)
}

fn parse_private(text: &str) -> Result<PrivateKey, String> {
    let (jwk, members) = parse(text)?;
    let public = public_from(&jwk, &members)?;
    if members.0.contains_key("oth") {
        return Err("multi-prime RSA keys (\"oth\") are not supported".to_string());
    }
    let d = members.private_bytes("d")?;
    let pub_bytes = |i: usize| b64_decode(&public.members[i].1).unwrap_or_default();
    let (names, der): (&[&'static str], Vec<u8>) = match public.alg {
        Algorithm::EdDSA => {
            if d.len() != 32 {
                return Err(format!("Ed25519 \"d\" must be 32 bytes, found {}", d.len()));
            }
            let pair = lc::Ed25519KeyPair::from_seed_and_public_key(&d, &pub_bytes(0))
                .map_err(|_| "private key \"d\" does not match public key \"x\"".to_string())?;
            (&["d"], pkcs8(pair.to_pkcs8())?)
        }
        Algorithm::ES256 => {
            if d.len() != 32 {
                return Err(format!("P-256 \"d\" must be 32 bytes, found {}", d.len()));
            }
            let point = [vec![4], pub_bytes(0), pub_bytes(1)].concat();
            let pair = lc::EcdsaKeyPair::from_private_key_and_public_key(
                &lc::ECDSA_P256_SHA256_FIXED_SIGNING,
                &d,
                &point,
            )
            .map_err(|_| "private key \"d\" does not match public key (x, y)".to_string())?;
            (&["d"], pkcs8(pair.to_pkcs8v1())?)
        }
        Algorithm::RS256 => (
            &["d", "p", "q", "dp", "dq", "qi"],
            rsa_pkcs1(&members, &pub_bytes(0), &pub_bytes(1))?,
        ),
    };
    let encoding = match public.alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
        Algorithm::ES256 => EncodingKey::from_ec_der(&der),
        Algorithm::RS256 => EncodingKey::from_rsa_der(&der),
    };
    let members = names
        .iter()
        .map(|&n| (n, members.0[n].as_str().unwrap_or_default().to_string()))
        .collect();
    Ok(PrivateKey {
        public,
        members,
        encoding,
    })
}

fn pkcs8(
    doc: Result<aws_lc_rs::pkcs8::Document, aws_lc_rs::error::Unspecified>,
) -> Result<Vec<u8>, String> {
    doc.map(|d| d.as_ref().to_vec())
        .map_err(|_| "private key export failed".to_string())
}

/// Checks the RSA private members with aws-lc and returns the key's PKCS#1 DER
/// (aws-lc's RSA signer reads PKCS#1; the PKCS#8 wrapper is peeled off).
fn rsa_pkcs1(members: &Members, n: &[u8], e: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    let strip = |name: &str| -> Result<Vec<u8>, String> {
        Ok(strip_leading_zeros(&members.private_bytes(name)?).to_vec())
    };
    let (d, p, q, dp, dq, qi) = (
        strip("d")?,
        strip("p")?,
        strip("q")?,
        strip("dp")?,
        strip("dq")?,
        strip("qi")?,
    );
    let components = aws_lc_rs::rsa::KeyPairComponents {
        public_key: aws_lc_rs::rsa::PublicKeyComponents {
            n: strip_leading_zeros(n),
            e: strip_leading_zeros(e),
        },
        d: d.as_slice(),
        p: p.as_slice(),
        q: q.as_slice(),
        dP: dp.as_slice(),
        dQ: dq.as_slice(),
        qInv: qi.as_slice(),
    };
    let pair = aws_lc_rs::rsa::KeyPair::from_components(&components)
        .map_err(|e| format!("inconsistent RSA private key: {e}"))?;
    let der: Pkcs8V1Der<'static> = pair
        .as_der()
        .map_err(|_| "RSA key export failed".to_string())?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_ref())
        .map_err(|e| format!("RSA key export failed: {e}"))?;
    Ok(info.private_key.to_vec())
}

// ---------------------------------------------------------------------------
// Generation and output

/// Output in go-jose `jwk-keygen` member order: use, kty, kid, crv, alg, then the
/// key members (x, y / n, e, then the private ones).
fn to_jwk_json(key: &PublicKey, private: &[(&'static str, String)]) -> String {
    let head = [
        ("use", "sig"),
        ("kty", key.alg.kty()),
        ("kid", key.kid.as_str()),
        ("crv", key.alg.crv().unwrap_or_default()),
        ("alg", key.alg.as_str()),
    ];
    let tail = key
        .members
        .iter()
        .chain(private)
        .map(|(n, v)| (*n, v.as_str()));
    let members: Vec<String> = head
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .chain(tail)
        // Serializing a &str cannot fail.
        .map(|(n, v)| format!("\"{n}\":{}", serde_json::to_string(v).expect("string")))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A fresh key's members as base64url, in JWK order (public then private).
fn generate_members(alg: Algorithm) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let failed = |_| format!("{alg} key generation failed");
    Ok(match alg {
        Algorithm::EdDSA => {
            let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            vec![
                ("x", sk.verifying_key().to_bytes().to_vec()),
                ("d", sk.to_bytes().to_vec()),
            ]
        }
        Algorithm::ES256 => {
            use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
            let pair =
                lc::EcdsaKeyPair::generate(&lc::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?;
            let point = pair.public_key().as_ref();
            let d: EcPrivateKeyBin<'_> = pair.private_key().as_be_bytes().map_err(failed)?;
            vec![
                ("x", point[1..33].to_vec()),
                ("y", point[33..].to_vec()),
                ("d", d.as_ref().to_vec()),
            ]
        }
        Algorithm::RS256 => {
            use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            let der: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
            let info = pkcs8::PrivateKeyInfo::try_from(der.as_ref()).map_err(|e| e.to_string())?;
            let rsa =
                pkcs1::RsaPrivateKey::try_from(info.private_key).map_err(|e| e.to_string())?;
            let v = |u: pkcs1::UintRef<'_>| u.as_bytes().to_vec();
            vec![
                ("n", v(rsa.modulus)),
                ("e", v(rsa.public_exponent)),
                ("d", v(rsa.private_exponent)),
                ("p", v(rsa.prime1)),
                ("q", v(rsa.prime2)),
                ("dp", v(rsa.exponent1)),
                ("dq", v(rsa.exponent2)),
                ("qi", v(rsa.coefficient)),
            ]
        }
    })
}

// ---------------------------------------------------------------------------
// Public API

impl PublicKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Parses one public JWK (not a JWKS) with every load-time check.
    pub fn from_jwk_json(text: &str) -> Result<PublicKey, KeyError> {
        parse_public(text).map_err(|reason| KeyError::invalid(Path::new(MEMORY_PATH), reason))
    }

    /// The key as a public JWK, in go-jose member order.
    pub fn to_jwk_json(&self) -> String {
        to_jwk_json(self, &[])
    }
}

impl PrivateKey {
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.public.alg
    }

    /// Generates a fresh key (RSA keys are 2048 bits). The key goes through the
    /// same checks as a loaded one.
    pub fn generate(alg: Algorithm, kid: &str) -> Result<PrivateKey, KeyError> {
        let path = Path::new(MEMORY_PATH);
        if kid.is_empty() {
            return Err(KeyError::invalid(path, "\"kid\" must not be empty"));
        }
        let members = generate_members(alg).map_err(|reason| KeyError::invalid(path, reason))?;
        let mut jwk = serde_json::json!({"kty": alg.kty(), "kid": kid, "alg": alg.as_str()});
        if let Some(crv) = alg.crv() {
            jwk["crv"] = crv.into();
        }
        for (name, bytes) in members {
            jwk[name] = b64_encode(&bytes).into();
        }
        PrivateKey::from_jwk_json(&jwk.to_string())
    }

    /// Parses one private JWK with every load-time check.
    pub fn from_jwk_json(text: &str) -> Result<PrivateKey, KeyError> {
        parse_private(text).map_err(|reason| KeyError::invalid(Path::new(MEMORY_PATH), reason))
    }

    /// The public half, as a verify key.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The key as a private JWK, in go-jose `jwk-keygen` member order.
    pub fn to_jwk_json(&self) -> String {
        to_jwk_json(&self.public, &self.members)
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    crate::files::read_small_text(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Deserialize)]
struct RawJwks<'a> {
    #[serde(borrow)]
    keys: Vec<&'a serde_json::value::RawValue>,
}

/// Parses the text of a public key file: a single JWK or a JWKS `{"keys":[…]}`;
/// `path` only names the file in errors.
pub fn parse_public_file(text: &str, path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let invalid = |reason: String| KeyError::invalid(path, reason);
    check_object(text).map_err(invalid)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JWK JSON: {e}")))?;
    if value.get("keys").is_none() {
        return parse_public(text).map(|k| vec![k]).map_err(invalid);
    }
    let set: RawJwks =
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JWKS JSON: {e}")))?;
    if set.keys.is_empty() {
        return Err(invalid("JWKS has no keys".to_string()));
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(set.keys.len());
    for (i, entry) in set.keys.iter().enumerate() {
        let key =
            parse_public(entry.get()).map_err(|reason| invalid(format!("keys[{i}]: {reason}")))?;
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(KeyError::DuplicateKid {
                kid: key.kid,
                first: path.to_path_buf(),
                second: path.to_path_buf(),
            });
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Loads every public key in one file (a single JWK or a JWKS `{"keys":[…]}`).
pub fn load_public_keys(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    parse_public_file(&read(path)?, path)
}

/// Loads several files; a kid found twice (in one file or across files) is an error naming it.
pub fn load_public_key_files(paths: &[PathBuf]) -> Result<Vec<PublicKey>, KeyError> {
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut all = Vec::new();
    for path in paths {
        for key in load_public_keys(path)? {
            if let Some(first) = seen.get(&key.kid) {
                return Err(KeyError::DuplicateKid {
                    kid: key.kid,
                    first: first.clone(),
                    second: path.clone(),
                });
            }
            seen.insert(key.kid.clone(), path.clone());
            all.push(key);
        }
    }
    Ok(all)
}

/// Loads one private JWK.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, KeyError> {
    parse_private(&read(path)?).map_err(|reason| KeyError::invalid(path, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: KeyError) -> String {
        match e {
            KeyError::Invalid { reason, .. } => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(b64_decode("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(b64_decode("AQ=="), None, "padding");
        assert_eq!(b64_decode("AR"), None, "non-zero trailing bits");
        assert_eq!(b64_decode("+/8"), None, "standard alphabet");
        assert_eq!(b64_decode("AQ ID"), None, "whitespace");
    }

    #[test]
    fn every_private_member_is_detected() {
        let pk = PrivateKey::generate(Algorithm::EdDSA, "k")
            .unwrap()
            .public_key();
        let base = pk.to_jwk_json();
        for name in PRIVATE_MEMBERS {
            for value in ["\"AAAA\"", "null", "7"] {
                let text = format!("{},\"{name}\":{value}}}", &base[..base.len() - 1]);
                let err = reason(PublicKey::from_jwk_json(&text).unwrap_err());
                assert_eq!(
                    err,
                    format!("private key given where a public verify key is expected (it has \"{name}\")")
                );
            }
        }
    }

    #[test]
    fn use_and_key_ops_that_are_not_for_signatures_are_refused() {
        let pk = PrivateKey::generate(Algorithm::EdDSA, "k")
            .unwrap()
            .public_key();
        let mut jwk: Value = serde_json::from_str(&pk.to_jwk_json()).unwrap();
        jwk["use"] = "wrap".into();
        let err = reason(PublicKey::from_jwk_json(&jwk.to_string()).unwrap_err());
        assert_eq!(err, r#"use must be "sig", found "wrap""#);
        jwk["use"] = "sig".into();
        jwk["key_ops"] = serde_json::json!(["encrypt"]);
        let err = reason(PublicKey::from_jwk_json(&jwk.to_string()).unwrap_err());
        assert_eq!(err, r#"key_ops must include "sign" or "verify""#);
        jwk["key_ops"] = serde_json::json!(["verify"]);
        assert!(PublicKey::from_jwk_json(&jwk.to_string()).is_ok());
        jwk["alg"] = "RSA-OAEP".into();
        let err = reason(PublicKey::from_jwk_json(&jwk.to_string()).unwrap_err());
        assert_eq!(
            err,
            r#"unsupported algorithm "RSA-OAEP" (expected EdDSA, ES256 or RS256)"#
        );
    }

    #[test]
    fn missing_key_members_are_named() {
        let pk = PrivateKey::generate(Algorithm::ES256, "k")
            .unwrap()
            .public_key();
        let mut jwk: Value = serde_json::from_str(&pk.to_jwk_json()).unwrap();
        jwk.as_object_mut().unwrap().remove("y");
        let err = reason(PublicKey::from_jwk_json(&jwk.to_string()).unwrap_err());
        assert_eq!(err, r#"missing "y""#);
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[0, 0]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0, 0x80, 0]), 16);
        assert_eq!(bit_len(&[0x01, 0, 1]), 17);
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        for alg in Algorithm::ALL {
            let sk = PrivateKey::generate(alg, "kid-1").unwrap();
            let jwk: Value = serde_json::from_str(&sk.to_jwk_json()).unwrap();
            let dbg = format!("{sk:?} {:?}", sk.public_key());
            for m in ["x", "y", "n", "d", "p", "q", "dp", "dq", "qi"] {
                if let Some(v) = jwk.get(m).and_then(|v| v.as_str()) {
                    assert!(!dbg.contains(v), "{m} leaked in {dbg}");
                }
            }
            assert!(dbg.contains("kid-1") && dbg.contains(alg.as_str()), "{dbg}");
        }
    }

    #[test]
    fn private_key_round_trips_and_mismatch_is_refused() {
        for alg in Algorithm::ALL {
            let sk = PrivateKey::generate(alg, "k").unwrap();
            let text = sk.to_jwk_json();
            let again = PrivateKey::from_jwk_json(&text).unwrap();
            assert_eq!(again.to_jwk_json(), text);
            // A different key's d with this x must be refused.
            let other = PrivateKey::generate(alg, "k").unwrap().to_jwk_json();
            let mut mixed: Value = serde_json::from_str(&text).unwrap();
            let other: Value = serde_json::from_str(&other).unwrap();
            mixed["d"] = other["d"].clone();
            let err = reason(PrivateKey::from_jwk_json(&mixed.to_string()).unwrap_err());
            match alg {
                Algorithm::EdDSA => {
                    assert_eq!(err, "private key \"d\" does not match public key \"x\"")
                }
                Algorithm::ES256 => {
                    assert_eq!(err, "private key \"d\" does not match public key (x, y)")
                }
                Algorithm::RS256 => {
                    assert!(err.starts_with("inconsistent RSA private key"), "{err}")
                }
            }
        }
    }

    #[test]
    fn go_jose_member_order() {
        let sk = PrivateKey::generate(Algorithm::EdDSA, "1").unwrap();
        let t = sk.to_jwk_json();
        assert!(
            t.starts_with(
                r#"{"use":"sig","kty":"OKP","kid":"1","crv":"Ed25519","alg":"EdDSA","x":""#
            ),
            "{t}"
        );
        assert!(t.contains(r#"","d":""#));
        let t = PrivateKey::generate(Algorithm::ES256, "1")
            .unwrap()
            .public_key()
            .to_jwk_json();
        assert!(
            t.starts_with(r#"{"use":"sig","kty":"EC","kid":"1","crv":"P-256","alg":"ES256","x":""#),
            "{t}"
        );
        assert!(t.contains(r#"","y":""#));
        let t = PrivateKey::generate(Algorithm::RS256, "1")
            .unwrap()
            .to_jwk_json();
        let order = [
            "\"use\"", "\"kty\"", "\"kid\"", "\"alg\"", "\"n\"", "\"e\"", "\"d\"", "\"p\"",
            "\"q\"", "\"dp\"", "\"dq\"", "\"qi\"",
        ];
        let positions: Vec<usize> = order.iter().map(|m| t.find(m).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{t}");
        assert!(t.contains(r#""e":"AQAB""#), "{t}");
    }
}
