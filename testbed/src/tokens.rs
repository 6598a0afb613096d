//! Access tokens as Locate mints them (issuer `locate`, audience the machine),
//! for the tests, the bench and the soak: signed with an insecure test key
//! from `testdata/` or with a key generated for the run.

use std::path::{Path, PathBuf};

use common::{Algorithm, Claims, Clock as _, PrivateKey, Signer};

use crate::envelope::Tokens;
use crate::testdata;

/// Mints tokens for one machine and subject with one key.
#[derive(Debug)]
pub struct Issuer {
    signer: Signer,
    machine: String,
    subject: String,
    /// The public half's file, when there is one.
    verify_key: Option<PathBuf>,
}

impl Issuer {
    pub fn new(key: PrivateKey, machine: &str, subject: &str) -> Issuer {
        Issuer {
            signer: Signer::new(key),
            machine: machine.to_owned(),
            subject: subject.to_owned(),
            verify_key: None,
        }
    }

    /// With one of the insecure test keys, e.g. `insecure-test-eddsa.jwk`
    /// (its public half beside it, `….jwk.pub`).
    pub fn from_testdata(key_file: &str, machine: &str, subject: &str) -> Issuer {
        let path = testdata(key_file);
        let key = common::jwk::load_private_key(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Issuer {
            verify_key: Some(testdata(&format!("{key_file}.pub"))),
            ..Issuer::new(key, machine, subject)
        }
    }

    /// With a fresh EdDSA key named `kid`, whose public half is written to
    /// `verify_key` (atomically: an envelope watching the file never reads
    /// half of it).
    pub fn generate(
        kid: &str,
        machine: &str,
        subject: &str,
        verify_key: &Path,
    ) -> std::io::Result<Issuer> {
        let key = PrivateKey::generate(Algorithm::EdDSA, kid).map_err(std::io::Error::other)?;
        let next = verify_key.with_extension("next");
        std::fs::write(&next, key.public_key().to_jwk_json())?;
        std::fs::rename(&next, verify_key)?;
        Ok(Issuer {
            verify_key: Some(verify_key.to_owned()),
            ..Issuer::new(key, machine, subject)
        })
    }

    /// The envelope's token checks that accept this issuer's tokens (`None`
    /// for a key with no file).
    pub fn checks(&self) -> Option<Tokens> {
        Some(Tokens {
            verify_key: self.verify_key.clone()?,
            machine: self.machine.clone(),
            subject: self.subject.clone(),
        })
    }

    /// Claims that pass every check, for `subject`, issued now and expiring
    /// `exp_in` seconds from now.
    pub fn claims_for(&self, subject: &str, exp_in: i64) -> Claims {
        let now = common::SystemClock.now_unix();
        Claims::for_machine("locate", subject, &self.machine, now, now + exp_in)
    }

    /// [`Issuer::claims_for`] this issuer's subject.
    pub fn claims(&self, exp_in: i64) -> Claims {
        self.claims_for(&self.subject, exp_in)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        self.signer.sign(claims).expect("signing a test token")
    }

    /// A valid token expiring `exp_in` seconds from now.
    pub fn token(&self, exp_in: i64) -> String {
        self.sign(&self.claims(exp_in))
    }
}
