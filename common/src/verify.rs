//! [`Verifier`]: every rule of SPEC §3 and SECURITY.md §1, with an injectable clock.
//!
//! The JWS is checked by hand, in this order (cheap structural checks first, the
//! signature before the claims are parsed):
//! 1. length > [`Verifier::MAX_TOKEN_BYTES`] → `too-large` (before any decoding);
//! 2. exactly three `.`-separated segments, each strict base64url without padding,
//!    and a non-empty signature → else `malformed` (an empty signature is
//!    `malformed`, not `bad-signature`);
//! 3. the header is a JSON object without duplicate known members (`malformed`);
//!    `alg` is a string (`malformed`) and exactly `EdDSA`, `ES256` or `RS256`
//!    (`alg-not-allowed`); none of `jwk`, `jku`, `x5u`, `x5c`, `x5t`, `crit`, `cty`,
//!    `b64` is present, even as `null` (`forbidden-header`; `b64` is refused because
//!    RFC 7797 only allows it together with `crit`); `typ`, if present, is exactly
//!    `"JWT"` (`bad-typ`); `kid` is present (`missing-kid`), a string (`malformed`),
//!    a configured key (`unknown-kid`) whose alg is the header alg (`alg-mismatch`);
//!    the payload starts as a JSON object (`malformed`);
//! 4. the signature (`bad-signature`): EdDSA with `verify_strict`, ES256 as a
//!    64-byte R‖S, RS256 PKCS#1 v1.5 with SHA-256;
//! 5. the payload is a JSON object with no duplicate known claim
//!    (`duplicate-claim`; other JSON errors `malformed`); each known claim is
//!    checked in the order iss, sub, aud, exp, nbf, iat, jti: a required one that
//!    is absent is `missing-claim`, a present one of the wrong type (including
//!    `null`, floats such as `1.5`, `1.0` or `1e30`, and integers outside i64) is
//!    `bad-claim`;
//! 6. `exp <= now` → `expired`; `nbf > now` → `not-yet-valid`; `iat > now` →
//!    `issued-in-future`; `iss` ≠ the issuer → `wrong-issuer`; no `aud` entry equal
//!    to the audience (empty strings never match) → `wrong-audience`.
//!
//! Duplicate *unknown* header members or claims are not detected (they are ignored).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::claims::{Audience, Claims};
use crate::jwk::{Algorithm, KeyError, PublicKey, PublicMaterial, MEMORY_PATH};

/// The source of "now", in Unix seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_unix(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }
}

/// A clock stopped at a given Unix second (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0
    }
}

/// Why a token was refused. `label()` strings are stable (metrics, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("token is larger than 8192 bytes")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not allowed")]
    AlgNotAllowed,
    #[error("token header has no kid")]
    MissingKid,
    #[error("token kid is not a configured key")]
    UnknownKid,
    #[error("token algorithm does not match the key's algorithm")]
    AlgMismatch,
    #[error("token header carries a forbidden parameter")]
    ForbiddenHeader,
    #[error("token typ is not JWT")]
    BadTyp,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has a duplicate claim")]
    DuplicateClaim,
    #[error("token has an ill-typed claim")]
    BadClaim,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token has the wrong issuer")]
    WrongIssuer,
    #[error("token is not for this audience")]
    WrongAudience,
}

impl Rejection {
    pub const ALL: [Rejection; 17] = [
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::AlgNotAllowed,
        Rejection::MissingKid,
        Rejection::UnknownKid,
        Rejection::AlgMismatch,
        Rejection::ForbiddenHeader,
        Rejection::BadTyp,
        Rejection::BadSignature,
        Rejection::DuplicateClaim,
        Rejection::BadClaim,
        Rejection::MissingClaim,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::WrongIssuer,
        Rejection::WrongAudience,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::TooLarge => "too-large",
            Rejection::Malformed => "malformed",
            Rejection::AlgNotAllowed => "alg-not-allowed",
            Rejection::MissingKid => "missing-kid",
            Rejection::UnknownKid => "unknown-kid",
            Rejection::AlgMismatch => "alg-mismatch",
            Rejection::ForbiddenHeader => "forbidden-header",
            Rejection::BadTyp => "bad-typ",
            Rejection::BadSignature => "bad-signature",
            Rejection::DuplicateClaim => "duplicate-claim",
            Rejection::BadClaim => "bad-claim",
            Rejection::MissingClaim => "missing-claim",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not-yet-valid",
            Rejection::IssuedInFuture => "issued-in-future",
            Rejection::WrongIssuer => "wrong-issuer",
            Rejection::WrongAudience => "wrong-audience",
        }
    }
}

/// Checks tokens against a fixed set of keys, an issuer and an audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: HashMap<String, PublicKey>,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// Tokens longer than this are refused before any decoding.
    pub const MAX_TOKEN_BYTES: usize = 8192;

    pub fn new(
        keys: Vec<PublicKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Verifier, KeyError> {
        let mut map = HashMap::with_capacity(keys.len());
        for key in keys {
            if map.contains_key(key.kid()) {
                return Err(KeyError::DuplicateKid {
                    kid: key.kid().to_string(),
                    first: PathBuf::from(MEMORY_PATH),
                    second: PathBuf::from(MEMORY_PATH),
                });
            }
            map.insert(key.kid().to_string(), key);
        }
        Ok(Verifier {
            keys: map,
            issuer: issuer.into(),
            audience: audience.into(),
            clock: Arc::new(SystemClock),
        })
    }

    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Verifier {
        Verifier { clock, ..self }
    }

    /// The claims of `token` if every rule holds (see the module docs for the order).
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        if token.len() > Self::MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge);
        }
        let (signing_input, sig_b64) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
        let (header_b64, payload_b64) =
            signing_input.split_once('.').ok_or(Rejection::Malformed)?;
        if payload_b64.contains('.') || sig_b64.is_empty() {
            return Err(Rejection::Malformed);
        }

        // All three segments decode into one stack buffer: 8192 base64 characters
        // decode to at most 6144 bytes (+ a few bytes of per-segment estimate slack).
        let mut buf = [0u8; 6160];
        let header_len = decode_into(header_b64, &mut buf)?;
        let (header, rest) = buf.split_at_mut(header_len);
        let payload_len = decode_into(payload_b64, rest)?;
        let (payload, rest) = rest.split_at_mut(payload_len);
        let sig_len = decode_into(sig_b64, rest)?;
        let signature = &rest[..sig_len];
        let (header, payload) = (&*header, &*payload);

        if !starts_object(header) {
            return Err(Rejection::Malformed);
        }
        let header: Header<'_> =
            serde_json::from_slice(header).map_err(|_| Rejection::Malformed)?;
        let alg = match header.alg.0 {
            None => return Err(Rejection::Malformed),
            Some(AlgName(None)) => return Err(Rejection::AlgNotAllowed),
            Some(AlgName(Some(alg))) => alg,
        };
        if header.has_forbidden() {
            return Err(Rejection::ForbiddenHeader);
        }
        if let Some(typ) = &header.typ.0 {
            if typ.as_str() != Some("JWT") {
                return Err(Rejection::BadTyp);
            }
        }
        let kid = header.kid.0.as_ref().ok_or(Rejection::MissingKid)?;
        let key = self.keys.get(kid.as_str()).ok_or(Rejection::UnknownKid)?;
        if key.alg() != alg {
            return Err(Rejection::AlgMismatch);
        }
        if !starts_object(payload) {
            return Err(Rejection::Malformed);
        }

        check_signature(key, signing_input.as_bytes(), signature)?;

        let raw: RawClaims = serde_json::from_slice(payload).map_err(|e| {
            if e.is_data() && e.to_string().starts_with("duplicate field") {
                Rejection::DuplicateClaim
            } else {
                Rejection::Malformed
            }
        })?;
        let claims = raw.typed()?;
        self.check_claims(&claims)?;
        Ok(claims)
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), Rejection> {
        let now = self.clock.now_unix();
        if claims.exp <= now {
            return Err(Rejection::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(Rejection::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > now) {
            return Err(Rejection::IssuedInFuture);
        }
        if claims.iss != self.issuer {
            return Err(Rejection::WrongIssuer);
        }
        if self.audience.is_empty() || !claims.aud.contains(&self.audience) {
            return Err(Rejection::WrongAudience);
        }
        Ok(())
    }
}

fn decode_into(segment: &str, out: &mut [u8]) -> Result<usize, Rejection> {
    URL_SAFE_NO_PAD
        .decode_slice(segment, out)
        .map_err(|_| Rejection::Malformed)
}

/// True when the JSON text's first non-whitespace byte opens an object (serde's
/// derived structs would otherwise also accept an array).
fn starts_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

fn check_signature(key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), Rejection> {
    let ok = match &key.material {
        PublicMaterial::Ed(vk) => match <&[u8; 64]>::try_from(signature) {
            Ok(bytes) => {
                let sig = ed25519_dalek::Signature::from_bytes(bytes);
                vk.verify_strict(message, &sig).is_ok()
            }
            Err(_) => false,
        },
        // Fixed-length R‖S only (a DER signature is 70-odd bytes and fails here);
        // aws-lc rejects r or s of zero or ≥ n.
        PublicMaterial::Ec(ec) => {
            signature.len() == 64 && ec.parsed.verify_sig(message, signature).is_ok()
        }
        PublicMaterial::Rsa(rsa) => rsa.parsed.verify_sig(message, signature).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

// ---------------------------------------------------------------------------
// Header and claims as read

/// A member that is `Some` whenever it is present in the JSON, even as `null`.
struct Member<T>(Option<T>);

impl<T> Default for Member<T> {
    fn default() -> Self {
        Member(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Member<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|v| Member(Some(v)))
    }
}

/// `alg`: a string, recognised only when it is exactly one of the three names.
struct AlgName(Option<Algorithm>);

impl<'de> Deserialize<'de> for AlgName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AlgName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an algorithm name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AlgName, E> {
                Ok(AlgName(
                    Algorithm::ALL.into_iter().find(|a| a.as_str() == v),
                ))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string borrowed from the input when it has no escapes.
enum StrCow<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl StrCow<'_> {
    fn as_str(&self) -> &str {
        match self {
            StrCow::Borrowed(s) => s,
            StrCow::Owned(s) => s,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrCow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = StrCow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<StrCow<'de>, E> {
                Ok(StrCow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrCow<'de>, E> {
                Ok(StrCow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The JOSE header. Derived, so a duplicate known member is an error; other
/// members are ignored. Presence-only members use `IgnoredAny` so that any type
/// (including `null`) counts as present.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(default)]
    alg: Member<AlgName>,
    #[serde(default, borrow)]
    kid: Member<StrCow<'a>>,
    #[serde(default)]
    typ: Member<Value>,
    #[serde(default)]
    jwk: Member<IgnoredAny>,
    #[serde(default)]
    jku: Member<IgnoredAny>,
    #[serde(default)]
    x5u: Member<IgnoredAny>,
    #[serde(default)]
    x5c: Member<IgnoredAny>,
    #[serde(default, rename = "x5t")]
    x5t: Member<IgnoredAny>,
    #[serde(default, rename = "x5t#S256")]
    x5t_s256: Member<IgnoredAny>,
    #[serde(default)]
    crit: Member<IgnoredAny>,
    #[serde(default)]
    cty: Member<IgnoredAny>,
    #[serde(default)]
    b64: Member<IgnoredAny>,
}

impl Header<'_> {
    fn has_forbidden(&self) -> bool {
        self.jwk.0.is_some()
            || self.jku.0.is_some()
            || self.x5u.0.is_some()
            || self.x5c.0.is_some()
            || self.x5t.0.is_some()
            || self.x5t_s256.0.is_some()
            || self.crit.0.is_some()
            || self.cty.0.is_some()
            || self.b64.0.is_some()
    }
}

/// The known claims, untyped so that type errors are ours to classify; derived,
/// so a duplicate known claim is a serde "duplicate field" error.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Member<Value>,
    #[serde(default)]
    sub: Member<Value>,
    #[serde(default)]
    aud: Member<Value>,
    #[serde(default)]
    exp: Member<Value>,
    #[serde(default)]
    nbf: Member<Value>,
    #[serde(default)]
    iat: Member<Value>,
    #[serde(default)]
    jti: Member<Value>,
}

fn required<T>(m: Member<Value>, f: impl FnOnce(Value) -> Option<T>) -> Result<T, Rejection> {
    f(m.0.ok_or(Rejection::MissingClaim)?).ok_or(Rejection::BadClaim)
}

fn optional<T>(
    m: Member<Value>,
    f: impl FnOnce(Value) -> Option<T>,
) -> Result<Option<T>, Rejection> {
    m.0.map(|v| f(v).ok_or(Rejection::BadClaim)).transpose()
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// A JSON integer that fits i64; floats (even `1.0`) are refused.
fn integer(v: Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn audience(v: Value) -> Option<Audience> {
    match v {
        Value::String(s) => Some(Audience::One(s)),
        Value::Array(items) => items
            .into_iter()
            .map(string)
            .collect::<Option<Vec<String>>>()
            .map(Audience::Many),
        _ => None,
    }
}

impl RawClaims {
    fn typed(self) -> Result<Claims, Rejection> {
        let iss = required(self.iss, string)?;
        let sub = required(self.sub, string)?;
        let aud = required(self.aud, audience)?;
        let exp = required(self.exp, integer)?;
        let nbf = optional(self.nbf, integer)?;
        let iat = optional(self.iat, integer)?;
        let jti = optional(self.jti, string)?;
        Ok(Claims {
            iss,
            sub,
            aud,
            exp,
            nbf,
            iat,
            jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_all_is_complete() {
        let mut labels: Vec<&str> = Rejection::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 17);
        assert_eq!(Rejection::Expired.to_string(), "token has expired");
    }

    #[test]
    fn starts_object_skips_json_whitespace_only() {
        assert!(starts_object(b" \n{}"));
        assert!(!starts_object(b"[1]"));
        assert!(!starts_object(b"\xef\xbb\xbf{}"), "BOM");
        assert!(!starts_object(b""));
    }

    #[test]
    fn integers_only() {
        let n = |t: &str| integer(serde_json::from_str(t).unwrap());
        assert_eq!(n("-5"), Some(-5));
        assert_eq!(n("9223372036854775807"), Some(i64::MAX));
        assert_eq!(n("9223372036854775808"), None);
        assert_eq!(n("1.0"), None);
        assert_eq!(n("1e3"), None);
        assert_eq!(n("\"1\""), None);
    }

    #[test]
    fn duplicate_known_claim_error_text() {
        let e = serde_json::from_str::<RawClaims>(r#"{"exp":1,"exp":2}"#)
            .err()
            .unwrap();
        assert!(
            e.is_data() && e.to_string().starts_with("duplicate field"),
            "{e}"
        );
    }

    #[test]
    fn system_clock_is_recent() {
        assert!(SystemClock.now_unix() > 1_700_000_000);
    }
}
