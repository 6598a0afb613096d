//! The `token` target's fixed world: the insecure test keys of `testdata/`
//! (one per algorithm) under the kids, issuer, audience and clock of the token
//! table (`common/tests/integration/verify_table.rs`), whose rows seed the
//! corpus; and compact JWS signed and verified with other libraries than the
//! verifier's (ed25519-dalek, p256, aws-lc's RSA directly), so that the target
//! can check every token the verifier accepts against them.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::verify::FixedClock;
use common::{Algorithm, PrivateKey, Verifier};
use serde_json::Value;

/// The token table's clock, issuer and audience.
pub const NOW: i64 = 1_700_000_000;
pub const ISSUER: &str = "locate";
pub const AUDIENCE: &str = "mlab1-abc0t";

/// One test key: its table kid, the verifier's view, and the raw key material.
struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    signer: RawSigner,
    /// The public members, base64url-decoded: `x` (OKP), `x`‖`y` (EC), `n`, `e` (RSA).
    public: Vec<Vec<u8>>,
}

enum RawSigner {
    Ed(ed25519_dalek::SigningKey),
    Ec(p256::ecdsa::SigningKey),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// The verifier under test and the keys it trusts.
pub struct Fixture {
    pub verifier: Verifier,
    keys: Vec<TestKey>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .expect("test key member is base64url")
}

fn load(file: &str, kid: &'static str) -> (TestKey, PrivateKey) {
    let text = std::fs::read_to_string(crate::testdata(file)).expect("test key file");
    let mut jwk: Value = serde_json::from_str(&text).expect("test key JSON");
    jwk["kid"] = kid.into();
    let key = PrivateKey::from_jwk_json(&jwk.to_string()).expect("test key loads");
    let m = |name: &str| b64(jwk[name].as_str().expect("test key member"));
    let (signer, public) = match key.alg() {
        Algorithm::EdDSA => {
            let seed: [u8; 32] = m("d").try_into().expect("32-byte seed");
            (
                RawSigner::Ed(ed25519_dalek::SigningKey::from_bytes(&seed)),
                vec![m("x")],
            )
        }
        Algorithm::ES256 => (
            RawSigner::Ec(p256::ecdsa::SigningKey::from_slice(&m("d")).expect("P-256 d")),
            vec![[vec![4], m("x"), m("y")].concat()],
        ),
        Algorithm::RS256 => {
            let (n, e, d, p, q, dp, dq, qi) = (
                m("n"),
                m("e"),
                m("d"),
                m("p"),
                m("q"),
                m("dp"),
                m("dq"),
                m("qi"),
            );
            let pair =
                aws_lc_rs::rsa::KeyPair::from_components(&aws_lc_rs::rsa::KeyPairComponents {
                    public_key: aws_lc_rs::rsa::PublicKeyComponents {
                        n: n.as_slice(),
                        e: e.as_slice(),
                    },
                    d: d.as_slice(),
                    p: p.as_slice(),
                    q: q.as_slice(),
                    dP: dp.as_slice(),
                    dQ: dq.as_slice(),
                    qInv: qi.as_slice(),
                })
                .expect("RSA test key");
            (RawSigner::Rsa(pair), vec![n, e])
        }
    };
    let alg = key.alg();
    (
        TestKey {
            kid,
            alg,
            signer,
            public,
        },
        key,
    )
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let loaded = [
            load("insecure-test-eddsa.jwk", "ed"),
            load("insecure-test-es256.jwk", "ec"),
            load("insecure-test-rs256.jwk", "rsa"),
        ];
        let verifier = Verifier::new(
            loaded.iter().map(|(_, key)| key.public_key()).collect(),
            ISSUER,
            AUDIENCE,
        )
        .expect("verifier")
        .with_clock(Arc::new(FixedClock(NOW)));
        Fixture {
            verifier,
            keys: loaded.into_iter().map(|(raw, _)| raw).collect(),
        }
    })
}

/// The raw JWS signature of `message` with `key`.
fn sign_with(key: &TestKey, message: &[u8]) -> Vec<u8> {
    match &key.signer {
        RawSigner::Ed(sk) => {
            use ed25519_dalek::Signer as _;
            sk.sign(message).to_bytes().to_vec()
        }
        RawSigner::Ec(sk) => {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = sk.sign(message);
            sig.to_bytes().to_vec()
        }
        RawSigner::Rsa(pair) => {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .expect("RSA signing");
            sig
        }
    }
}

impl Fixture {
    fn by_alg(&self, alg: Option<&str>) -> &TestKey {
        self.keys
            .iter()
            .find(|k| Some(k.alg.as_str()) == alg)
            .unwrap_or(&self.keys[0])
    }

    /// `b64(header).b64(payload).b64(signature)`, signed with the key of the
    /// header's `alg` (the Ed25519 key when it names none of ours).
    pub fn sign(&self, header: &[u8], payload: &[u8]) -> String {
        let alg = serde_json::from_slice::<Value>(header)
            .ok()
            .and_then(|h| h.get("alg")?.as_str().map(str::to_owned));
        let key = self.by_alg(alg.as_deref());
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = sign_with(key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Whether `token`'s signature verifies, by libraries other than the
    /// verifier's, under the key its header's `kid` names, with that key's
    /// algorithm (which must be the header's `alg`). `Err` says what failed.
    pub fn verify_independently(&self, token: &str) -> Result<(), String> {
        let (input, sig) = token.rsplit_once('.').ok_or("no signature segment")?;
        let header = input.split('.').next().unwrap_or_default();
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|e| format!("signature: {e}"))?;
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header)
                .map_err(|e| format!("header: {e}"))?,
        )
        .map_err(|e| format!("header JSON: {e}"))?;
        let kid = header["kid"].as_str().ok_or("no kid")?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or("unknown kid")?;
        if header["alg"].as_str() != Some(key.alg.as_str()) {
            return Err(format!("alg {} for a {} key", header["alg"], key.alg));
        }
        let message = input.as_bytes();
        let ok = match key.alg {
            Algorithm::EdDSA => {
                let x: [u8; 32] = key.public[0].as_slice().try_into().map_err(|_| "x")?;
                let sig: [u8; 64] = sig.as_slice().try_into().map_err(|_| "length")?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|e| e.to_string())?
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            }
            Algorithm::ES256 => {
                use p256::ecdsa::signature::Verifier as _;
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public[0])
                    .map_err(|e| e.to_string())?;
                let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
                vk.verify(message, &sig).is_ok()
            }
            Algorithm::RS256 => aws_lc_rs::signature::RsaPublicKeyComponents {
                n: &key.public[0],
                e: &key.public[1],
            }
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                &sig,
            )
            .is_ok(),
        };
        ok.then_some(()).ok_or_else(|| "bad signature".to_owned())
    }
}
