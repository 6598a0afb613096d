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
