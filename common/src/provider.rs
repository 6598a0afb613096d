//! The jsonwebtoken `CryptoProvider` this crate installs: aws-lc for everything
//! except EdDSA verification, which goes to ed25519-dalek's `verify_strict`, and
//! ES256 signing, which goes to p256's deterministic (RFC 6979) ECDSA.
//!
//! Why: aws-lc's Ed25519 verification has no small-order check, so with an identity
//! public key the signature R = identity, S = 0 verifies any claims.
//! `verify_strict` refuses small-order keys and R values (and S ≥ L, as aws-lc does).
//! Key loading already refuses weak keys; this closes the hole for any key that
//! reaches jsonwebtoken another way. aws-lc's ECDSA signing draws a random nonce;
//! RFC 6979 needs no RNG at signing time and makes tokens reproducible.
//!
//! The provider is process-wide (jsonwebtoken keeps it in a `OnceLock`), so
//! [`install`] must run before this process's first jsonwebtoken call; it fails
//! if another provider got there first.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use jsonwebtoken::crypto::{aws_lc, CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// aws-lc's provider with EdDSA verification replaced.
pub static STRICT_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: AWS_LC.rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: AWS_LC.rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: AWS_LC.ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: AWS_LC.ed_pub_components_from_private_key,
        compute_digest: AWS_LC.compute_digest,
    },
};

const AWS_LC: &KeyUtils = &aws_lc::DEFAULT_PROVIDER.key_utils;

/// Installs [`STRICT_PROVIDER`]; `Err` when a different provider is already installed.
pub fn install() -> Result<(), String> {
    match STRICT_PROVIDER.install_default() {
        Ok(()) => Ok(()),
        Err(current) if std::ptr::eq(current, &STRICT_PROVIDER) => Ok(()),
        Err(_) => Err(
            "another jsonwebtoken CryptoProvider is installed in this process; \
             the verifier needs common's strict EdDSA provider"
                .to_string(),
        ),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *alg != Algorithm::EdDSA {
        return (aws_lc::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    }
    let bytes = <[u8; 32]>::try_from(key.try_get_as_bytes()?)
        .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?;
    let known = CHECKED_ED25519
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&bytes)
        .copied();
    let key = match known {
        Some(key) => key,
        None => ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|key| !key.is_weak())
            .ok_or(Error::from(ErrorKind::InvalidEddsaKey))?,
    };
    Ok(Box::new(StrictEd25519(key)))
}

/// Ed25519 keys that passed the load-time checks, decompressed once: jsonwebtoken
/// hands the factory only the key's bytes, and decompressing a point costs about
/// a tenth of a verification. Capped; a key past the cap is decompressed per use.
static CHECKED_ED25519: RwLock<BTreeMap<[u8; 32], ed25519_dalek::VerifyingKey>> =
    RwLock::new(BTreeMap::new());

/// Remembers a key that passed the load-time checks (see [`CHECKED_ED25519`]).
pub(crate) fn remember_ed25519(key: ed25519_dalek::VerifyingKey) {
    let mut keys = CHECKED_ED25519
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if keys.len() < 1024 {
        keys.insert(key.to_bytes(), key);
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    if *alg != Algorithm::ES256 {
        return (aws_lc::DEFAULT_PROVIDER.signer_factory)(alg, key);
    }
    use p256::pkcs8::DecodePrivateKey as _;
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(key.as_bytes())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    Ok(Box::new(DeterministicEs256(key)))
}

struct DeterministicEs256(p256::ecdsa::SigningKey);

impl signature::Signer<Vec<u8>> for DeterministicEs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.0.sign(msg);
        Ok(sig.to_bytes().to_vec())
    }
}

impl JwtSigner for DeterministicEs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct StrictEd25519(ed25519_dalek::VerifyingKey);

impl signature::Verifier<Vec<u8>> for StrictEd25519 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let sig = <&[u8; 64]>::try_from(sig.as_slice()).map_err(|_| signature::Error::new())?;
        self.0
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for StrictEd25519 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    /// The identity point as an Ed25519 public key, and R = identity, S = 0.
    fn identity_forgery() -> (DecodingKey, String, Vec<u8>) {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"x"}"#);
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"forged","exp":99999999999}"#);
        let mut sig = identity.to_vec();
        sig.extend_from_slice(&[0u8; 32]);
        let key = DecodingKey::from_ed_der(&identity);
        (key, format!("{header}.{claims}"), sig)
    }

    #[test]
    fn aws_lc_alone_accepts_the_identity_forgery() {
        // The hole this module exists for: if this ever fails, aws-lc fixed it.
        let (key, msg, sig) = identity_forgery();
        let v = (aws_lc::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::EdDSA, &key).unwrap();
        assert!(v.verify(msg.as_bytes(), &sig).is_ok());
    }

    #[test]
    fn strict_provider_refuses_the_identity_forgery() {
        install().unwrap();
        let (key, msg, sig) = identity_forgery();
        assert!(new_verifier(&Algorithm::EdDSA, &key).is_err(), "weak key");
        let token = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(&sig));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        let err = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidEddsaKey), "{err:?}");
    }

    #[test]
    fn strict_provider_verifies_a_real_signature_and_refuses_s_plus_l() {
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let key = DecodingKey::from_ed_der(sk.verifying_key().as_bytes());
        let v = new_verifier(&Algorithm::EdDSA, &key).unwrap();
        let sig = sk.sign(b"m").to_bytes().to_vec();
        assert!(v.verify(b"m", &sig).is_ok());
        assert!(v.verify(b"n", &sig).is_err());
        assert!(v.verify(b"m", &sig[..63].to_vec()).is_err());
    }

    #[test]
    fn install_is_idempotent() {
        install().unwrap();
        install().unwrap();
        assert!(std::ptr::eq(
            CryptoProvider::try_get_default().unwrap(),
            &STRICT_PROVIDER
        ));
    }
}
