//! [`Signer`]: claims in, compact JWS out (`{"alg","kid","typ":"JWT"}` header).

use std::fmt;

use crate::claims::Claims;
use crate::jwk::{b64_encode, Algorithm, PrivateKey, PrivateMaterial};

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
        // Serializing a &str cannot fail.
        let kid = serde_json::to_string(key.kid()).expect("string serialization");
        let header = format!(r#"{{"alg":"{}","kid":{kid},"typ":"JWT"}}"#, key.alg());
        Signer {
            header_b64: b64_encode(header.as_bytes()),
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
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 2 + 700);
        token.push_str(&self.header_b64);
        token.push('.');
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &payload,
            &mut token,
        );
        let signature = sign_bytes(&self.key, token.as_bytes())?;
        token.push('.');
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &signature,
            &mut token,
        );
        Ok(token)
    }
}

/// The raw JWS signature of `message` (64 bytes for EdDSA and ES256 R‖S, the
/// modulus length for RS256).
pub(crate) fn sign_bytes(key: &PrivateKey, message: &[u8]) -> Result<Vec<u8>, SignError> {
    match &key.material {
        PrivateMaterial::Ed(sk) => {
            use ed25519_dalek::Signer as _;
            Ok(sk.sign(message).to_bytes().to_vec())
        }
        PrivateMaterial::Ec(sk) => {
            use p256::ecdsa::signature::Signer as _;
            // RFC 6979 deterministic nonce, SHA-256, fixed-size R‖S.
            let sig: p256::ecdsa::Signature = sk.sign(message);
            Ok(sig.to_bytes().to_vec())
        }
        PrivateMaterial::Rsa(rsa) => {
            let mut sig = vec![0u8; rsa.key_pair.public_modulus_len()];
            rsa.key_pair
                .sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|_| SignError::Crypto { alg: key.alg() })?;
            Ok(sig)
        }
    }
}
