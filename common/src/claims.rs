//! Token claims (SPEC §3) and the audience, which may be a string or an array.

use serde::{Deserialize, Serialize};

/// The claims an access token carries. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Claims for one machine's service, issued at `iat` and expiring at `exp`
    /// (Unix seconds), with no `nbf` or `jti`: the shape Locate issues.
    pub fn for_machine(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        machine: impl Into<String>,
        iat: i64,
        exp: i64,
    ) -> Claims {
        Claims {
            iss: issuer.into(),
            sub: subject.into(),
            aud: Audience::One(machine.into()),
            exp,
            nbf: None,
            iat: Some(iat),
            jti: None,
        }
    }
}

/// `aud`: one audience or several; a token is for a machine when any entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, machine: &str) -> bool {
        match self {
            Audience::One(a) => a == machine,
            Audience::Many(all) => all.iter().any(|a| a == machine),
        }
    }
}
