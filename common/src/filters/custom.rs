//! Caller-defined custom claims, read from the payload of a token the verifier
//! has **already accepted** ([`Verifier::verify_payload`](crate::Verifier::verify_payload)
//! hands it over, decoded once). The standard claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti`) are removed before the caller's type sees the payload, so a custom type
//! can never carry — let alone override — one of them: the standard claims a
//! handler gets always come from the verifier.
//! That is stricter than `Verifier::verify_with`, whose `T` sees the whole
//! payload, and it also refuses any member given twice.

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Claim names only the verifier speaks for.
const STANDARD: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The custom-claims type of a service that wants none: accepts any payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoCustomClaims;

impl<'de> Deserialize<'de> for NoCustomClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| NoCustomClaims)
    }
}

/// `T` from the non-standard members of a verified payload (JSON text). `None`
/// when the payload is no object, a member is given twice, or `T` does not fit.
pub(crate) fn custom_claims<T: DeserializeOwned>(payload_json: &str) -> Option<T> {
    let UniqueObject(mut members) = serde_json::from_str(payload_json).ok()?;
    for name in STANDARD {
        members.remove(name);
    }
    T::deserialize(Value::Object(members)).ok()
}

/// A JSON object whose member names are all distinct (a `Map` alone keeps the
/// last of two, which would let a duplicate slip through).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut members = Map::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if members.contains_key(&name) {
                        return Err(de::Error::custom("duplicate claim"));
                    }
                    members.insert(name, value);
                }
                Ok(UniqueObject(members))
            }
        }
        d.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Integration {
        int_id: String,
        #[serde(default)]
        sub: Option<String>,
    }

    #[test]
    fn custom_members_are_read_and_standard_ones_are_never_seen() {
        let got: Integration = custom_claims(r#"{"sub":"ndt","exp":9,"int_id":"a1"}"#).unwrap();
        assert_eq!(
            got,
            Integration {
                int_id: "a1".into(),
                sub: None
            }
        );
    }

    #[test]
    fn duplicates_missing_fields_and_garbage_are_refused() {
        assert_eq!(
            custom_claims::<Integration>(r#"{"int_id":"a","int_id":"b"}"#),
            None
        );
        assert_eq!(custom_claims::<Integration>(r#"{"exp":9}"#), None);
        assert_eq!(custom_claims::<Integration>("[1]"), None);
        assert_eq!(custom_claims::<Integration>("not json"), None);
        assert_eq!(
            custom_claims::<NoCustomClaims>(r#"{"x":1}"#),
            Some(NoCustomClaims)
        );
    }
}
