//! [`Signer`]: claims in, compact JWS out. The header is `{"alg","kid","typ":"JWT"}`
//! (encoded once); the signature comes from `jsonwebtoken::crypto::sign` with the
//! key's `EncodingKey`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::claims::Claims;
use crate::jwk::{Algorithm, PrivateKey};

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot encode claims as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{alg} signing failed")]
    Crypto { alg: Algorithm },
}

/// Signs claims with one private key.
#[derive(Clone)]
pub struct Signer {
    key: PrivateKey,
    /// base64url of `{"alg":"…","kid":"…","typ":"JWT"}`, computed once.
    header_b64: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("key", &self.key).finish()
    }
}

impl Signer {
    pub fn new(key: PrivateKey) -> Signer {
        // Installing our provider here keeps ES256 signatures deterministic and,
        // if this is the process's first jsonwebtoken call, verification strict.
        let _ = crate::provider::install();
        // Serializing a &str cannot fail.
        let kid = serde_json::to_string(key.kid()).expect("string serialization");
        let header = format!(r#"{{"alg":"{}","kid":{kid},"typ":"JWT"}}"#, key.alg());
        Signer {
            header_b64: URL_SAFE_NO_PAD.encode(header),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    pub fn alg(&self) -> Algorithm {
        self.key.alg()
    }

    /// A compact JWS `header.payload.signature` carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let payload = serde_json::to_vec(claims)?;
        let mut token = format!("{}.", self.header_b64);
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let alg = self.key.alg();
        let signature = jsonwebtoken::crypto::sign(token.as_bytes(), &self.key.encoding, alg.jwt())
            .map_err(|_| SignError::Crypto { alg })?;
        token.push('.');
        token.push_str(&signature);
        Ok(token)
    }
}
