//! The access-token filters: exactly one `access_token` query parameter, accepted
//! by the [`Verifier`] (keys, issuer, machine audience, times), whose subject is
//! the service's own or `monitoring`; then the caller's custom claims.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use super::custom::{custom_claims, NoCustomClaims};
use super::denied::Denied;
use crate::{Claims, Verifier};

/// The subject of monitoring tokens: accepted whatever the service's subject,
/// and exempt from the transmit-rate gate.
pub const MONITORING_SUBJECT: &str = "monitoring";

/// Where the filters get the verifier for each request, so a service may swap
/// its keys while running. `Arc<Verifier>` and `Option<Arc<Verifier>>` are sources.
pub trait VerifierSource: Send + Sync + 'static {
    /// The verifier in force now; `None` when no verify key is configured.
    fn current(&self) -> Option<Arc<Verifier>>;
}

impl VerifierSource for Arc<Verifier> {
    fn current(&self) -> Option<Arc<Verifier>> {
        Some(self.clone())
    }
}

impl VerifierSource for Option<Arc<Verifier>> {
    fn current(&self) -> Option<Arc<Verifier>> {
        self.clone()
    }
}

/// What a token must satisfy beyond the verifier's own checks.
#[derive(Clone)]
pub struct AccessPolicy {
    verifier: Arc<dyn VerifierSource>,
    subject: Option<String>,
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl AccessPolicy {
    /// Tokens for `subject` (or `monitoring`), checked by `verifier` — whose
    /// issuer and audience (the machine) are the rest of the policy.
    pub fn new(verifier: impl VerifierSource, subject: impl Into<String>) -> AccessPolicy {
        AccessPolicy {
            verifier: Arc::new(verifier),
            subject: Some(subject.into()),
        }
    }

    /// Like [`AccessPolicy::new`], with the subject check only when `subject` is
    /// `Some` (the envelope with `--token-required=false` and no `--subject`).
    pub fn with_optional_subject(
        verifier: impl VerifierSource,
        subject: Option<String>,
    ) -> AccessPolicy {
        AccessPolicy {
            verifier: Arc::new(verifier),
            subject,
        }
    }

    fn check<T: DeserializeOwned>(
        &self,
        query: Option<&str>,
        required: bool,
    ) -> Result<Option<Verified<T>>, Denied> {
        let Some(token) = single_access_token(query)? else {
            return if required {
                Err(Denied::MissingToken)
            } else {
                Ok(None)
            };
        };
        let verifier = self.verifier.current().ok_or(Denied::NoVerifier)?;
        let (claims, payload) = verifier
            .verify_payload(&token)
            .map_err(Denied::InvalidToken)?;
        let custom = custom_claims::<T>(payload.get()).ok_or(Denied::BadCustomClaims)?;
        let kid = crate::verify::token_kid(&token).unwrap_or_default();
        let verified = Verified {
            claims,
            custom,
            kid,
        };
        if let Some(subject) = &self.subject {
            if !verified.is_monitoring() && &verified.claims.sub != subject {
                return Err(Denied::WrongSubject);
            }
        }
        Ok(Some(verified))
    }
}

/// A token that passed every check: the verified standard claims and the
/// caller's custom claims (read from the same token, never overriding the former).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T = NoCustomClaims> {
    pub claims: Claims,
    pub custom: T,
    /// The kid of the key that verified it.
    pub kid: String,
}

impl<T> Verified<T> {
    /// A `monitoring` token: any service accepts it and the rate gate lets it through.
    pub fn is_monitoring(&self) -> bool {
        self.claims.sub == MONITORING_SUBJECT
    }
}

/// Requires a valid access token (SPEC §3, §5): 401 when it is missing or
/// invalid, 400 when given twice or for another subject. Rejects with
/// [`Denied`]; recover with [`handle_rejection`](super::handle_rejection).
pub fn access_token<T>(
    policy: AccessPolicy,
) -> impl Filter<Extract = (Verified<T>,), Error = Rejection> + Clone
where
    T: DeserializeOwned + Send + 'static,
{
    raw_query().and_then(move |query: Option<String>| {
        let checked = policy
            .check::<T>(query.as_deref(), true)
            .and_then(|v| v.ok_or(Denied::MissingToken))
            .map_err(warp::reject::custom);
        std::future::ready(checked)
    })
}

/// Like [`access_token`], but a request without a token passes as `None`; a
/// token that is present must still be valid.
pub fn optional_access_token<T>(
    policy: AccessPolicy,
) -> impl Filter<Extract = (Option<Verified<T>>,), Error = Rejection> + Clone
where
    T: DeserializeOwned + Send + 'static,
{
    raw_query().and_then(move |query: Option<String>| {
        let checked = policy
            .check::<T>(query.as_deref(), false)
            .map_err(warp::reject::custom);
        std::future::ready(checked)
    })
}

/// The raw (still percent-encoded) query string, if any. Unlike
/// `warp::query::<T>()`, it never logs the query, which holds the token.
pub fn raw_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Copy {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The `access_token` of a raw query, if there is exactly one: for reports
/// about a request the filters refused (its kid, and its ids once verified).
pub fn token_in_query(query: Option<&str>) -> Option<String> {
    single_access_token(query).ok().flatten()
}

/// The one `access_token` value of a query string; refused when it appears twice
/// (under any percent-encoding of its name).
fn single_access_token(query: Option<&str>) -> Result<Option<String>, Denied> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name).as_deref() != Some("access_token") {
            continue;
        }
        if found.is_some() {
            return Err(Denied::DuplicateToken);
        }
        // An undecodable value cannot be a token; let the verifier call it malformed.
        found = Some(percent_decode(value).unwrap_or_else(|| value.to_owned()));
    }
    Ok(found)
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains(['%', '+']) {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_is_taken_once_and_duplicates_are_refused() {
        assert_eq!(single_access_token(None), Ok(None));
        assert_eq!(single_access_token(Some("a=1")), Ok(None));
        assert_eq!(
            single_access_token(Some("access_token=x.y.z&a=1")),
            Ok(Some("x.y.z".into()))
        );
        assert_eq!(
            single_access_token(Some("access_token=A&access_token=B")),
            Err(Denied::DuplicateToken)
        );
        assert_eq!(
            single_access_token(Some("access%5Ftoken=A&access_token=B")),
            Err(Denied::DuplicateToken)
        );
        assert_eq!(
            single_access_token(Some("access_token=a%2Eb")),
            Ok(Some("a.b".into()))
        );
    }
}
