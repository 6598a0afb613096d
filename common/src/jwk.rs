//! JWK and JWKS files in go-jose's `jwk-keygen` format: loading with the checks of
//! SPEC §3, generation, and the public part of a private key.
//!
//! Every key is checked when it is loaded, so a key that exists is usable:
//! - a verify key carries no private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`);
//! - `use`, if present, is `"sig"`; `alg` is one of EdDSA, ES256, RS256; `kid` is a
//!   non-empty string; `kty`/`crv` match `alg`;
//! - OKP `x` is 32 bytes, a canonical encoding, and not of small order;
//! - EC `x`/`y` are 32 bytes each and a point on P-256;
//! - RSA `n` has 2048..=8192 bits and is odd; `e` is odd, > 1 and at most 33 bits;
//! - a private key's `d` matches its public part.
//!
//! All base64 is URL-safe without padding and strict (no `=`, no `+`/`/`, no
//! non-zero trailing bits).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

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
    fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
        KeyError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// RSA public material: the JWK components and aws-lc's parsed key.
pub(crate) struct RsaPublic {
    pub(crate) n: Vec<u8>,
    pub(crate) e: Vec<u8>,
    pub(crate) parsed: aws_lc_rs::signature::ParsedPublicKey,
}

/// P-256 public material: the point (for the JWK) and aws-lc's parsed key, which
/// verifies about ten times faster than the pure-Rust p256 crate — it matters when
/// a flood of forged ES256 tokens must be refused at line rate.
pub(crate) struct EcPublic {
    pub(crate) key: p256::ecdsa::VerifyingKey,
    pub(crate) parsed: aws_lc_rs::signature::ParsedPublicKey,
}

/// The verification material of a [`PublicKey`].
#[derive(Clone)]
pub(crate) enum PublicMaterial {
    Ed(ed25519_dalek::VerifyingKey),
    Ec(Arc<EcPublic>),
    Rsa(Arc<RsaPublic>),
}

/// A verification key.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    alg: Algorithm,
    pub(crate) material: PublicMaterial,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// RSA private material: every JWK component plus aws-lc's key pair.
pub(crate) struct RsaPrivate {
    n: Vec<u8>,
    e: Vec<u8>,
    d: Vec<u8>,
    p: Vec<u8>,
    q: Vec<u8>,
    dp: Vec<u8>,
    dq: Vec<u8>,
    qi: Vec<u8>,
    pub(crate) key_pair: aws_lc_rs::rsa::KeyPair,
}

/// The signing material of a [`PrivateKey`].
#[derive(Clone)]
pub(crate) enum PrivateMaterial {
    Ed(ed25519_dalek::SigningKey),
    Ec(p256::ecdsa::SigningKey),
    Rsa(Arc<RsaPrivate>),
}

/// A signing key.
#[derive(Clone)]
pub struct PrivateKey {
    kid: String,
    alg: Algorithm,
    pub(crate) material: PrivateMaterial,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// JSON shapes

/// A JWK as read. Derived, so a duplicate known member is a JSON error; other
/// members are ignored. The private members are `Value`s so that their mere
/// presence (with any type) is detected.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    #[serde(default, deserialize_with = "present")]
    d: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    p: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    q: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    dp: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    dq: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    qi: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    oth: Option<serde_json::Value>,
}

/// `Some(value)` whenever the member is present, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RawJwks<'a> {
    #[serde(borrow)]
    keys: Vec<&'a serde_json::value::RawValue>,
}

/// Output in go-jose `jwk-keygen` member order. Unset members are skipped, so one
/// struct serves OKP/EC (use,kty,kid,crv,alg,x,y,d) and RSA
/// (use,kty,kid,alg,n,e,d,p,q,dp,dq,qi).
#[derive(Serialize)]
struct OutJwk<'a> {
    #[serde(rename = "use")]
    use_: &'a str,
    kty: &'a str,
    kid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'a str>,
    alg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dq: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qi: Option<String>,
}

impl<'a> OutJwk<'a> {
    fn new(kid: &'a str, alg: Algorithm) -> OutJwk<'a> {
        OutJwk {
            use_: "sig",
            kty: alg.kty(),
            kid,
            crv: alg.crv(),
            alg: alg.as_str(),
            x: None,
            y: None,
            n: None,
            e: None,
            d: None,
            p: None,
            q: None,
            dp: None,
            dq: None,
            qi: None,
        }
    }

    fn to_json(&self) -> String {
        // Serializing plain strings into a String cannot fail.
        serde_json::to_string(self).expect("JWK serialization")
    }
}

// ---------------------------------------------------------------------------
// base64 and helpers

/// Strict base64url without padding: rejects `=`, `+`, `/`, whitespace and
/// non-zero trailing bits (base64 0.22's `URL_SAFE_NO_PAD` does all of these).
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn member<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    value.as_deref().ok_or_else(|| format!("missing {name:?}"))
}

fn decode_member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = member(value, name)?;
    b64_decode(text).ok_or_else(|| format!("{name:?} is not valid unpadded base64url"))
}

fn decode_fixed<const N: usize>(
    value: &Option<String>,
    name: &str,
    what: &str,
) -> Result<[u8; N], String> {
    let bytes = decode_member(value, name)?;
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

const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn first_private_member(raw: &RawJwk) -> Option<&'static str> {
    let present = [
        raw.d.is_some(),
        raw.p.is_some(),
        raw.q.is_some(),
        raw.dp.is_some(),
        raw.dq.is_some(),
        raw.qi.is_some(),
        raw.oth.is_some(),
    ];
    PRIVATE_MEMBERS
        .into_iter()
        .zip(present)
        .find_map(|(name, is)| is.then_some(name))
}

// ---------------------------------------------------------------------------
// Parsing and checks

fn parse_raw(text: &str) -> Result<RawJwk, String> {
    check_object(text)?;
    serde_json::from_str(text).map_err(|e| format!("invalid JWK JSON: {e}"))
}

fn check_object(text: &str) -> Result<(), String> {
    if text.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err("invalid JWK JSON: expected a JSON object".to_string())
    }
}

/// The checks common to public and private keys: `use`, `alg`, `kid`, `kty`, `crv`.
fn check_common(raw: &RawJwk) -> Result<(String, Algorithm), String> {
    if let Some(u) = &raw.use_ {
        if u != "sig" {
            return Err(format!("use must be \"sig\", found {u:?}"));
        }
    }
    let alg_name = member(&raw.alg, "alg")?;
    let alg: Algorithm = alg_name.parse()?;
    let kid = member(&raw.kid, "kid")?;
    if kid.is_empty() {
        return Err("\"kid\" must not be empty".to_string());
    }
    let kty = member(&raw.kty, "kty")?;
    if kty != alg.kty() {
        return Err(format!(
            "kty {kty:?} does not match alg {alg} (needs {})",
            alg.kty()
        ));
    }
    if let Some(want) = alg.crv() {
        let crv = member(&raw.crv, "crv")?;
        if crv != want {
            return Err(format!(
                "curve {crv} does not match alg {alg} (needs {want})"
            ));
        }
    }
    Ok((kid.to_string(), alg))
}

fn ed_public(x: [u8; 32]) -> Result<ed25519_dalek::VerifyingKey, String> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| "Ed25519 \"x\" is not a valid curve point".to_string())?;
    if key.to_edwards().compress().to_bytes() != x {
        return Err("Ed25519 \"x\" is not a canonical point encoding".to_string());
    }
    if key.is_weak() {
        return Err("weak Ed25519 public key (small order)".to_string());
    }
    Ok(key)
}

fn ec_public(x: &[u8; 32], y: &[u8; 32]) -> Result<EcPublic, String> {
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..33].copy_from_slice(x);
    sec1[33..].copy_from_slice(y);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| "EC point (x, y) is not on curve P-256".to_string())?;
    ec_from_key(key)
}

fn ec_from_key(key: p256::ecdsa::VerifyingKey) -> Result<EcPublic, String> {
    let point = key.to_encoded_point(false);
    let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point.as_bytes(),
    )
    .map_err(|e| format!("invalid P-256 public key: {e}"))?;
    Ok(EcPublic { key, parsed })
}

fn rsa_public(n: &[u8], e: &[u8]) -> Result<RsaPublic, String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
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
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if !e_odd || bit_len(e) < 2 {
        return Err("RSA exponent \"e\" must be odd and greater than 1".to_string());
    }
    if bit_len(e) > 33 {
        return Err("RSA exponent \"e\" is too large (maximum 33 bits)".to_string());
    }
    let components = aws_lc_rs::signature::RsaPublicKeyComponents { n, e };
    let parsed = components
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| format!("invalid RSA public key: {e}"))?;
    Ok(RsaPublic {
        n: n.to_vec(),
        e: e.to_vec(),
        parsed,
    })
}

fn public_material(raw: &RawJwk, alg: Algorithm) -> Result<PublicMaterial, String> {
    Ok(match alg {
        Algorithm::EdDSA => {
            PublicMaterial::Ed(ed_public(decode_fixed::<32>(&raw.x, "x", "Ed25519")?)?)
        }
        Algorithm::ES256 => {
            let x = decode_fixed::<32>(&raw.x, "x", "P-256")?;
            let y = decode_fixed::<32>(&raw.y, "y", "P-256")?;
            PublicMaterial::Ec(Arc::new(ec_public(&x, &y)?))
        }
        Algorithm::RS256 => {
            let n = decode_member(&raw.n, "n")?;
            let e = decode_member(&raw.e, "e")?;
            PublicMaterial::Rsa(Arc::new(rsa_public(&n, &e)?))
        }
    })
}

fn public_from_raw(raw: &RawJwk) -> Result<PublicKey, String> {
    if let Some(name) = first_private_member(raw) {
        return Err(format!(
            "private key given where a public verify key is expected (it has {name:?})"
        ));
    }
    let (kid, alg) = check_common(raw)?;
    let material = public_material(raw, alg)?;
    Ok(PublicKey { kid, alg, material })
}

fn private_string(value: &Option<serde_json::Value>, name: &str) -> Result<Vec<u8>, String> {
    match value {
        None => Err(format!("missing {name:?}")),
        Some(serde_json::Value::String(s)) => {
            b64_decode(s).ok_or_else(|| format!("{name:?} is not valid unpadded base64url"))
        }
        Some(_) => Err(format!("{name:?} must be a string")),
    }
}

fn private_from_raw(raw: &RawJwk) -> Result<PrivateKey, String> {
    let (kid, alg) = check_common(raw)?;
    if raw.oth.is_some() {
        return Err("multi-prime RSA keys (\"oth\") are not supported".to_string());
    }
    let public = public_material(raw, alg)?;
    let material = match (alg, public) {
        (Algorithm::EdDSA, PublicMaterial::Ed(vk)) => {
            let d = private_string(&raw.d, "d")?;
            let seed = <[u8; 32]>::try_from(d.as_slice())
                .map_err(|_| format!("Ed25519 \"d\" must be 32 bytes, found {}", d.len()))?;
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            if sk.verifying_key() != vk {
                return Err("private key \"d\" does not match public key \"x\"".to_string());
            }
            PrivateMaterial::Ed(sk)
        }
        (Algorithm::ES256, PublicMaterial::Ec(ec)) => {
            let d = private_string(&raw.d, "d")?;
            if d.len() != 32 {
                return Err(format!("P-256 \"d\" must be 32 bytes, found {}", d.len()));
            }
            let sk = p256::ecdsa::SigningKey::from_slice(&d)
                .map_err(|_| "P-256 \"d\" is not a valid private scalar".to_string())?;
            if *sk.verifying_key() != ec.key {
                return Err("private key \"d\" does not match public key (x, y)".to_string());
            }
            PrivateMaterial::Ec(sk)
        }
        (Algorithm::RS256, PublicMaterial::Rsa(public)) => {
            let d = private_string(&raw.d, "d")?;
            let p = private_string(&raw.p, "p")?;
            let q = private_string(&raw.q, "q")?;
            let dp = private_string(&raw.dp, "dp")?;
            let dq = private_string(&raw.dq, "dq")?;
            let qi = private_string(&raw.qi, "qi")?;
            rsa_private(public.n.clone(), public.e.clone(), d, p, q, dp, dq, qi)?
        }
        _ => unreachable!("public_material returns the material of alg"),
    };
    Ok(PrivateKey { kid, alg, material })
}

#[allow(clippy::too_many_arguments)]
fn rsa_private(
    n: Vec<u8>,
    e: Vec<u8>,
    d: Vec<u8>,
    p: Vec<u8>,
    q: Vec<u8>,
    dp: Vec<u8>,
    dq: Vec<u8>,
    qi: Vec<u8>,
) -> Result<PrivateMaterial, String> {
    let strip = |v: Vec<u8>| strip_leading_zeros(&v).to_vec();
    let (d, p, q, dp, dq, qi) = (
        strip(d),
        strip(p),
        strip(q),
        strip(dp),
        strip(dq),
        strip(qi),
    );
    let components = aws_lc_rs::rsa::KeyPairComponents {
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
    };
    let key_pair = aws_lc_rs::rsa::KeyPair::from_components(&components)
        .map_err(|e| format!("inconsistent RSA private key: {e}"))?;
    Ok(PrivateMaterial::Rsa(Arc::new(RsaPrivate {
        n,
        e,
        d,
        p,
        q,
        dp,
        dq,
        qi,
        key_pair,
    })))
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
        let path = Path::new(MEMORY_PATH);
        parse_raw(text)
            .and_then(|raw| public_from_raw(&raw))
            .map_err(|reason| KeyError::invalid(path, reason))
    }

    /// The key as a public JWK, in go-jose member order.
    pub fn to_jwk_json(&self) -> String {
        let mut out = OutJwk::new(&self.kid, self.alg);
        match &self.material {
            PublicMaterial::Ed(vk) => out.x = Some(b64_encode(vk.as_bytes())),
            PublicMaterial::Ec(ec) => {
                let point = ec.key.to_encoded_point(false);
                out.x = point.x().map(|x| b64_encode(x));
                out.y = point.y().map(|y| b64_encode(y));
            }
            PublicMaterial::Rsa(rsa) => {
                out.n = Some(b64_encode(&rsa.n));
                out.e = Some(b64_encode(&rsa.e));
            }
        }
        out.to_json()
    }
}

impl PrivateKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Generates a fresh key (RSA keys are 2048 bits).
    pub fn generate(alg: Algorithm, kid: &str) -> Result<PrivateKey, KeyError> {
        let path = Path::new(MEMORY_PATH);
        if kid.is_empty() {
            return Err(KeyError::invalid(path, "\"kid\" must not be empty"));
        }
        let mut rng = rand::rngs::OsRng;
        let material = match alg {
            Algorithm::EdDSA => PrivateMaterial::Ed(ed25519_dalek::SigningKey::generate(&mut rng)),
            Algorithm::ES256 => PrivateMaterial::Ec(p256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::RS256 => generate_rsa().map_err(|reason| KeyError::invalid(path, reason))?,
        };
        Ok(PrivateKey {
            kid: kid.to_string(),
            alg,
            material,
        })
    }

    /// Parses one private JWK with every load-time check.
    pub fn from_jwk_json(text: &str) -> Result<PrivateKey, KeyError> {
        parse_private(text, Path::new(MEMORY_PATH))
    }

    /// The public half, as a verify key.
    pub fn public_key(&self) -> PublicKey {
        let material = match &self.material {
            PrivateMaterial::Ed(sk) => PublicMaterial::Ed(sk.verifying_key()),
            PrivateMaterial::Ec(sk) => PublicMaterial::Ec(Arc::new(
                ec_from_key(*sk.verifying_key()).expect("a P-256 signing key has a valid point"),
            )),
            PrivateMaterial::Rsa(rsa) => PublicMaterial::Rsa(Arc::new(
                rsa_public(&rsa.n, &rsa.e).expect("checked when the private key was made"),
            )),
        };
        PublicKey {
            kid: self.kid.clone(),
            alg: self.alg,
            material,
        }
    }

    /// The key as a private JWK, in go-jose `jwk-keygen` member order.
    pub fn to_jwk_json(&self) -> String {
        let mut out = OutJwk::new(&self.kid, self.alg);
        match &self.material {
            PrivateMaterial::Ed(sk) => {
                out.x = Some(b64_encode(sk.verifying_key().as_bytes()));
                out.d = Some(b64_encode(sk.as_bytes()));
            }
            PrivateMaterial::Ec(sk) => {
                let point = sk.verifying_key().to_encoded_point(false);
                out.x = point.x().map(|x| b64_encode(x));
                out.y = point.y().map(|y| b64_encode(y));
                out.d = Some(b64_encode(&sk.to_bytes()));
            }
            PrivateMaterial::Rsa(rsa) => {
                out.n = Some(b64_encode(&rsa.n));
                out.e = Some(b64_encode(&rsa.e));
                out.d = Some(b64_encode(&rsa.d));
                out.p = Some(b64_encode(&rsa.p));
                out.q = Some(b64_encode(&rsa.q));
                out.dp = Some(b64_encode(&rsa.dp));
                out.dq = Some(b64_encode(&rsa.dq));
                out.qi = Some(b64_encode(&rsa.qi));
            }
        }
        out.to_json()
    }
}

fn generate_rsa() -> Result<PrivateMaterial, String> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    let key_pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| "RSA key generation failed".to_string())?;
    let der: Pkcs8V1Der<'static> = key_pair
        .as_der()
        .map_err(|_| "RSA key export failed".to_string())?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_ref())
        .map_err(|e| format!("RSA key export failed: {e}"))?;
    let rsa = pkcs1::RsaPrivateKey::try_from(info.private_key)
        .map_err(|e| format!("RSA key export failed: {e}"))?;
    let v = |u: pkcs1::UintRef<'_>| u.as_bytes().to_vec();
    rsa_private(
        v(rsa.modulus),
        v(rsa.public_exponent),
        v(rsa.private_exponent),
        v(rsa.prime1),
        v(rsa.prime2),
        v(rsa.exponent1),
        v(rsa.exponent2),
        v(rsa.coefficient),
    )
}

fn parse_private(text: &str, path: &Path) -> Result<PrivateKey, KeyError> {
    parse_raw(text)
        .and_then(|raw| private_from_raw(&raw))
        .map_err(|reason| KeyError::invalid(path, reason))
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the text of a public key file: a single JWK or a JWKS `{"keys":[…]}`.
fn parse_public_file(text: &str, path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    check_object(text).map_err(|reason| KeyError::invalid(path, reason))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| KeyError::invalid(path, format!("invalid JWK JSON: {e}")))?;
    let is_set = value.get("keys").is_some();
    if !is_set {
        return PublicKey::from_jwk_json(text)
            .map(|k| vec![k])
            .map_err(|e| with_path(e, path));
    }
    let set: RawJwks = serde_json::from_str(text)
        .map_err(|e| KeyError::invalid(path, format!("invalid JWKS JSON: {e}")))?;
    if set.keys.is_empty() {
        return Err(KeyError::invalid(path, "JWKS has no keys"));
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(set.keys.len());
    for (i, entry) in set.keys.iter().enumerate() {
        // Each entry is parsed from its own raw text so that the derived struct
        // reports duplicate members (a `Value` would silently keep the last).
        let key = parse_raw(entry.get())
            .and_then(|raw| public_from_raw(&raw))
            .map_err(|reason| KeyError::invalid(path, format!("keys[{i}]: {reason}")))?;
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

fn with_path(e: KeyError, path: &Path) -> KeyError {
    match e {
        KeyError::Invalid { reason, .. } => KeyError::invalid(path, reason),
        other => other,
    }
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
    parse_private(&read(path)?, path)
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
        assert_eq!(b64_decode("AQI"), Some(vec![1, 2]));
        assert_eq!(b64_decode("AQ"), Some(vec![1]));
        assert_eq!(b64_decode("AQ=="), None, "padding");
        assert_eq!(b64_decode("AQI="), None, "padding");
        assert_eq!(b64_decode("AR"), None, "non-zero trailing bits");
        assert_eq!(b64_decode("AQJ"), None, "non-zero trailing bits");
        assert_eq!(b64_decode("+/8"), None, "standard alphabet");
        assert_eq!(b64_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(b64_decode("AQ ID"), None, "whitespace");
        assert_eq!(b64_decode("A"), None, "impossible length");
        assert_eq!(b64_decode(""), Some(vec![]));
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
            let jwk: serde_json::Value = serde_json::from_str(&sk.to_jwk_json()).unwrap();
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
            let mut mixed: serde_json::Value = serde_json::from_str(&text).unwrap();
            let other: serde_json::Value = serde_json::from_str(&other).unwrap();
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
        let order: Vec<&str> = [
            "\"use\"", "\"kty\"", "\"kid\"", "\"alg\"", "\"n\"", "\"e\"", "\"d\"", "\"p\"",
            "\"q\"", "\"dp\"", "\"dq\"", "\"qi\"",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = order.iter().map(|m| t.find(m).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{t}");
        assert!(t.contains(r#""e":"AQAB""#), "{t}");
    }
}
