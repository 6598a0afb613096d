//! [`Verifier`]: our policy (SPEC §3, SECURITY.md §1) around `jsonwebtoken::decode`.
//!
//! jsonwebtoken splits the token, decodes it (strict base64url), parses the header,
//! checks `alg` against the key's one-algorithm `Validation`, verifies the
//! signature (through [`crate::provider`], so EdDSA is `verify_strict`) and parses
//! the claims. What it does not do, or does more loosely than SPEC §3, is here, in
//! this order:
//! 1. length > [`Verifier::MAX_TOKEN_BYTES`] → `too-large`, before any decoding;
//! 2. exactly three `.`-separated segments and a non-empty signature, else
//!    `malformed`; the header is strict base64url and a JSON object without
//!    duplicate known members (`malformed`);
//! 3. header allow-list: `alg` a string (`malformed`) and exactly `EdDSA`, `ES256`
//!    or `RS256` (`alg-not-allowed`); none of `jwk`, `jku`, `x5u`, `x5c`, `x5t`,
//!    `x5t#S256`, `crit`, `cty`, `b64`, even as `null` (`forbidden-header`; the
//!    library ignores the key-carrying ones); `typ` absent or exactly `"JWT"`
//!    (`bad-typ`; the library never checks it); `kid` present (`missing-kid`), a
//!    string (`malformed`), a configured key (`unknown-kid`) whose alg is the
//!    header alg (`alg-mismatch`);
//! 4. jsonwebtoken: base64/JSON errors → `malformed`, signature → `bad-signature`;
//! 5. typed claims, read by [`Payload`] inside jsonwebtoken's parse once the
//!    payload has been read whole as JSON (`malformed` otherwise): an object,
//!    no duplicate known claim (`duplicate-claim`), then in the order iss, sub, aud,
//!    exp, nbf, iat, jti a required one absent is `missing-claim` and a present
//!    one of the wrong type (`null`, floats such as `1.0` or `1e30`, integers
//!    outside i64, an `iss` array) is `bad-claim`;
//! 6. with the injected clock, zero leeway: `exp <= now` → `expired` (the library
//!    accepts `exp == now`), `nbf > now` → `not-yet-valid`, `iat > now` →
//!    `issued-in-future` (never checked by the library); `iss` ≠ the issuer →
//!    `wrong-issuer`; no `aud` entry equal to the audience (empty strings never
//!    match) → `wrong-audience`.
//!
//! The library's own claim checks are all switched off: it reads the system clock,
//! treats `null` as absent and accepts an `iss` array if one entry matches. The
//! library's claim parse still runs and refuses duplicate `exp`/`nbf`/`sub`/`iss`/
//! `aud`. Duplicate *unknown* header members or claims are not detected.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::claims::{Audience, Claims};
use crate::jwk::{Algorithm, KeyError, PublicKey, MEMORY_PATH};

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

/// Declares [`Rejection`] from one table: variant, stable label, message.
macro_rules! rejections {
    ($($variant:ident => $label:literal, $message:literal;)*) => {
        /// Why a token was refused. `label()` strings are stable (metrics, logs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
        pub enum Rejection {
            $(#[error($message)] $variant,)*
        }

        impl Rejection {
            pub const ALL: [Rejection; 17] = [$(Rejection::$variant,)*];

            pub fn label(self) -> &'static str {
                match self {
                    $(Rejection::$variant => $label,)*
                }
            }
        }
    };
}

rejections! {
    TooLarge => "too-large", "token is larger than 8192 bytes";
    Malformed => "malformed", "token is malformed";
    AlgNotAllowed => "alg-not-allowed", "token algorithm is not allowed";
    MissingKid => "missing-kid", "token header has no kid";
    UnknownKid => "unknown-kid", "token kid is not a configured key";
    AlgMismatch => "alg-mismatch", "token algorithm does not match the key's algorithm";
    ForbiddenHeader => "forbidden-header", "token header carries a forbidden parameter";
    BadTyp => "bad-typ", "token typ is not JWT";
    BadSignature => "bad-signature", "token signature is invalid";
    DuplicateClaim => "duplicate-claim", "token has a duplicate claim";
    BadClaim => "bad-claim", "token has an ill-typed claim";
    MissingClaim => "missing-claim", "token lacks a required claim";
    Expired => "expired", "token has expired";
    NotYetValid => "not-yet-valid", "token is not yet valid";
    IssuedInFuture => "issued-in-future", "token was issued in the future";
    WrongIssuer => "wrong-issuer", "token has the wrong issuer";
    WrongAudience => "wrong-audience", "token is not for this audience";
}

/// A configured key and its jsonwebtoken `Validation`, which allows only the
/// key's algorithm and has every claim check off (ours are in [`Verifier`]).
#[derive(Debug, Clone)]
struct Entry {
    key: PublicKey,
    validation: Validation,
}

/// Checks tokens against a fixed set of keys, an issuer and an audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: HashMap<String, Entry>,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    /// Tokens longer than this are refused before any decoding.
    pub const MAX_TOKEN_BYTES: usize = 8192;

    /// Fails on a duplicate kid, or when a jsonwebtoken `CryptoProvider` other
    /// than [`crate::provider::STRICT_PROVIDER`] is installed in this process.
    pub fn new(
        keys: Vec<PublicKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Verifier, KeyError> {
        let memory = PathBuf::from(MEMORY_PATH);
        crate::provider::install().map_err(|reason| KeyError::Invalid {
            path: memory.clone(),
            reason,
        })?;
        let mut map = HashMap::with_capacity(keys.len());
        for key in keys {
            if map.contains_key(key.kid()) {
                return Err(KeyError::DuplicateKid {
                    kid: key.kid().to_string(),
                    first: memory.clone(),
                    second: memory,
                });
            }
            let mut validation = Validation::new(key.alg().jwt());
            validation.leeway = 0;
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            map.insert(key.kid().to_string(), Entry { key, validation });
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
        // One reading of the payload for every entry point, so that a token
        // gets one label whichever is asked (the `token` fuzz target found a
        // duplicate claim in a payload that is no JSON labelled two ways).
        self.verify_payload(token).map(|(claims, _)| claims)
    }

    /// Like [`Verifier::verify`], and also deserializes the same verified payload
    /// into a caller's type `T` (custom claims). `T` is read separately from the
    /// standard claims, so it can never change them: a `T` with its own `sub` or
    /// `exp` field sees the token's value, but the returned [`Claims`] are still
    /// the ones checked here. `T` is read only after every check has passed; a
    /// payload that `T` cannot deserialize is refused as `bad-claim`.
    pub fn verify_with<T: DeserializeOwned>(&self, token: &str) -> Result<(Claims, T), Rejection> {
        let (claims, raw) = self.verify_payload(token)?;
        let custom = serde_json::from_str(raw.get()).map_err(|_| Rejection::BadClaim)?;
        Ok((claims, custom))
    }

    /// Like [`Verifier::verify`], and also hands back the verified payload's
    /// JSON text, decoded once, for a caller that reads more from it under its
    /// own rules (the warp filters' custom claims).
    pub fn verify_payload(&self, token: &str) -> Result<(Claims, Box<RawValue>), Rejection> {
        let WithRaw(claims, raw) = self.decode(token)?;
        self.check_claims(&claims)?;
        Ok((claims, raw))
    }

    /// Steps 1–5 of the module docs: the header policy, then jsonwebtoken.
    fn decode<P: DeserializeOwned>(&self, token: &str) -> Result<P, Rejection> {
        if token.len() > Self::MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge);
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(_), Some(sig), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(Rejection::Malformed);
        };
        if sig.is_empty() {
            return Err(Rejection::Malformed);
        }
        // 8192 base64 characters decode to at most 6144 bytes.
        let mut buf = [0u8; 6144];
        let len = URL_SAFE_NO_PAD
            .decode_slice(header_b64, &mut buf)
            .map_err(|_| Rejection::Malformed)?;
        let entry = self.header_policy(&buf[..len])?;
        jsonwebtoken::decode::<P>(token, &entry.key.decoding, &entry.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => Rejection::BadSignature,
                ErrorKind::InvalidAlgorithm => Rejection::AlgMismatch,
                ErrorKind::Json(e) => json_rejection(&e),
                // Base64, UTF-8, shape; and, failing closed, any kind added later.
                _ => Rejection::Malformed,
            })
    }

    fn header_policy(&self, header: &[u8]) -> Result<&Entry, Rejection> {
        if !starts_object(header) {
            return Err(Rejection::Malformed);
        }
        let header: Header = serde_json::from_slice(header).map_err(|_| Rejection::Malformed)?;
        let alg: Algorithm = match &header.alg.0 {
            Some(Value::String(name)) => name.parse().map_err(|_| Rejection::AlgNotAllowed)?,
            _ => return Err(Rejection::Malformed),
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
        let entry = self.keys.get(kid.as_str()).ok_or(Rejection::UnknownKid)?;
        if entry.key.alg() != alg {
            return Err(Rejection::AlgMismatch);
        }
        Ok(entry)
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

/// True when the JSON text's first non-whitespace byte opens an object (serde's
/// derived structs would otherwise also accept an array).
fn starts_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// Claim errors travel through jsonwebtoken as JSON errors: serde's "duplicate
/// field", or our label after [`LABEL_MARK`]; anything else is `malformed`.
const LABEL_MARK: &str = "envelope-rejection:";

fn json_rejection(e: &serde_json::Error) -> Rejection {
    let text = e.to_string();
    if e.is_data() && text.starts_with("duplicate field") {
        return Rejection::DuplicateClaim;
    }
    text.strip_prefix(LABEL_MARK)
        .and_then(|rest| {
            Rejection::ALL
                .into_iter()
                .find(|r| rest.starts_with(r.label()))
        })
        .unwrap_or(Rejection::Malformed)
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

/// The JOSE header. Derived, so a duplicate known member is an error; other
/// members are ignored. Presence-only members use `IgnoredAny` so that any type
/// (including `null`) counts as present.
impl Rejection {
    /// Whether the token's signature had been verified when it was refused:
    /// its claims were read from a payload the key signed, so they can be
    /// reported (see [`payload_ids`]).
    pub fn after_signature(self) -> bool {
        matches!(
            self,
            Rejection::Expired
                | Rejection::NotYetValid
                | Rejection::IssuedInFuture
                | Rejection::WrongIssuer
                | Rejection::WrongAudience
        )
    }
}

/// The `jti` and `sub` of a token's payload, read without any check: only for
/// reporting on a token whose signature was verified (a token that passed, or
/// one refused [`after_signature`](Rejection::after_signature)).
pub fn payload_ids(token: &str) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Ids {
        jti: Option<String>,
        sub: Option<String>,
    }
    if token.len() > Verifier::MAX_TOKEN_BYTES {
        return (None, None);
    }
    let ids = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Ids>(&json).ok());
    ids.map_or((None, None), |ids| (ids.jti, ids.sub))
}

/// The `kid` a token's header names, as it says it (not verified): for
/// metrics and logs that say which key a token used or asked for. `None` when
/// the header cannot be read or has no string `kid`.
pub fn token_kid(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct KidOnly {
        kid: Option<String>,
    }
    if token.len() > Verifier::MAX_TOKEN_BYTES {
        return None;
    }
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    serde_json::from_slice::<KidOnly>(&header).ok()?.kid
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Header {
    alg: Member<Value>,
    kid: Member<String>,
    typ: Member<Value>,
    jwk: Member<IgnoredAny>,
    jku: Member<IgnoredAny>,
    x5u: Member<IgnoredAny>,
    x5c: Member<IgnoredAny>,
    x5t: Member<IgnoredAny>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Member<IgnoredAny>,
    crit: Member<IgnoredAny>,
    cty: Member<IgnoredAny>,
    b64: Member<IgnoredAny>,
}

impl Header {
    fn has_forbidden(&self) -> bool {
        [
            &self.jwk,
            &self.jku,
            &self.x5u,
            &self.x5c,
            &self.x5t,
            &self.x5t_s256,
            &self.crit,
            &self.cty,
            &self.b64,
        ]
        .iter()
        .any(|m| m.0.is_some())
    }
}

/// The standard claims, typed while jsonwebtoken parses the payload. Only a JSON
/// object is accepted; a typing error is a JSON error carrying our label.
struct Payload(Claims);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Payload, A::Error> {
                let raw = RawClaims::deserialize(de::value::MapAccessDeserializer::new(map))?;
                raw.typed()
                    .map(Payload)
                    .map_err(|r| de::Error::custom(format_args!("{LABEL_MARK}{}", r.label())))
            }
        }
        d.deserialize_map(V)
    }
}

/// [`Payload`] and the payload's raw JSON text, for [`Verifier::verify_with`].
struct WithRaw(Claims, Box<RawValue>);

impl<'de> Deserialize<'de> for WithRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let Payload(claims) = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
        Ok(WithRaw(claims, raw))
    }
}

/// The known claims, untyped so that type errors are ours to classify; derived,
/// so a duplicate known claim is a serde "duplicate field" error.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawClaims {
    iss: Member<Value>,
    sub: Member<Value>,
    aud: Member<Value>,
    exp: Member<Value>,
    nbf: Member<Value>,
    iat: Member<Value>,
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
    fn payload_errors_carry_their_label_through_serde_json() {
        let label = |t: &str| json_rejection(&serde_json::from_str::<Payload>(t).err().unwrap());
        assert_eq!(label(r#"{"exp":1,"exp":2}"#), Rejection::DuplicateClaim);
        assert_eq!(label(r#"{"iss":7}"#), Rejection::BadClaim);
        assert_eq!(label(r#"{"iss":"a"}"#), Rejection::MissingClaim);
        assert_eq!(label("[1]"), Rejection::Malformed);
        let raw = |t: &str| json_rejection(&serde_json::from_str::<WithRaw>(t).err().unwrap());
        assert_eq!(raw(r#"{"jti":1,"jti":2}"#), Rejection::DuplicateClaim);
        assert_eq!(
            raw(r#"{"iss":"i","sub":"s","aud":"a","exp":[1]}"#),
            Rejection::BadClaim
        );
        assert_eq!(raw("[1]"), Rejection::Malformed);
    }

    #[test]
    fn system_clock_is_recent() {
        assert!(SystemClock.now_unix() > 1_700_000_000);
    }
}
