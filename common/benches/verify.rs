//! Verifications per second for valid EdDSA, ES256 and RS256 tokens, against the
//! ceiling of a raw `ed25519_dalek::VerifyingKey::verify_strict` of the same
//! signing input. After the criterion groups, prints one line per algorithm with
//! ops/s and the EdDSA-token/raw ratio, measured by an interleaved fixed loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{Algorithm, Audience, Claims, PrivateKey, Signer, Verifier};
use criterion::Criterion;

struct Setup {
    verifier: Verifier,
    tokens: Vec<(Algorithm, String)>,
    raw_key: ed25519_dalek::VerifyingKey,
    raw_input: String,
    raw_sig: ed25519_dalek::Signature,
}

fn setup() -> Setup {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = Claims {
        iss: "locate".into(),
        sub: "ndt".into(),
        aud: Audience::One("mlab1-lga0t.mlab-oti.measurement-lab.org".into()),
        exp: now + 3600,
        nbf: None,
        iat: Some(now - 1),
        jti: Some("0123456789abcdef".into()),
    };
    let keys: Vec<PrivateKey> = Algorithm::ALL
        .into_iter()
        .map(|alg| PrivateKey::generate(alg, &format!("{alg}-2024")).unwrap())
        .collect();
    let verifier = Verifier::new(
        keys.iter().map(|k| k.public_key()).collect(),
        "locate",
        "mlab1-lga0t.mlab-oti.measurement-lab.org",
    )
    .unwrap();
    let tokens: Vec<(Algorithm, String)> = keys
        .iter()
        .map(|k| (k.alg(), Signer::new(k.clone()).sign(&claims).unwrap()))
        .collect();
    for (alg, t) in &tokens {
        verifier
            .verify(t)
            .unwrap_or_else(|e| panic!("{alg} token must verify: {e}"));
    }
    let ed_token = tokens[0].1.clone();
    let (raw_input, sig_b64) = ed_token.rsplit_once('.').unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(sig_b64).unwrap().try_into().unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&keys[0].public_key().to_jwk_json()).unwrap();
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let raw_key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let raw_sig = ed25519_dalek::Signature::from_bytes(&sig);
    raw_key
        .verify_strict(raw_input.as_bytes(), &raw_sig)
        .unwrap();
    Setup {
        verifier,
        tokens,
        raw_key,
        raw_input: raw_input.to_string(),
        raw_sig,
    }
}

fn raw_verify(s: &Setup) -> bool {
    s.raw_key
        .verify_strict(black_box(s.raw_input.as_bytes()), black_box(&s.raw_sig))
        .is_ok()
}

fn criterion_groups(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("verify");
    group.throughput(criterion::Throughput::Elements(1));
    for (alg, token) in &s.tokens {
        group.bench_function(format!("{alg} token"), |b| {
            b.iter(|| s.verifier.verify(black_box(token)).is_ok())
        });
    }
    group.bench_function("raw ed25519 verify_strict", |b| b.iter(|| raw_verify(s)));
    group.finish();
}

/// Runs `f` `n` times and returns the elapsed time.
fn time(n: u32, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        assert!(black_box(f()));
    }
    start.elapsed()
}

fn print_figures(s: &Setup) {
    const ROUNDS: u32 = 20;
    const N: u32 = 500;
    let mut token_time = vec![Duration::ZERO; s.tokens.len()];
    let mut raw_time = Duration::ZERO;
    // Interleave every measurement round by round to spread out noise.
    for _ in 0..ROUNDS {
        for (i, (alg, token)) in s.tokens.iter().enumerate() {
            let n = if *alg == Algorithm::RS256 { N / 5 } else { N };
            token_time[i] += time(n, || s.verifier.verify(black_box(token)).is_ok());
            if i == 0 {
                raw_time += time(N, || raw_verify(s));
            }
        }
    }
    let ops = |n: u32, d: Duration| f64::from(n * ROUNDS) / d.as_secs_f64();
    let raw_ops = ops(N, raw_time);
    println!();
    println!("verifications per second (interleaved fixed loop, {ROUNDS} rounds):");
    for (i, (alg, _)) in s.tokens.iter().enumerate() {
        let n = if *alg == Algorithm::RS256 { N / 5 } else { N };
        let o = ops(n, token_time[i]);
        if *alg == Algorithm::EdDSA {
            println!(
                "  {alg:<5} token: {o:>9.0} ops/s  (ratio EdDSA-token/raw = {:.3})",
                o / raw_ops
            );
        } else {
            println!("  {alg:<5} token: {o:>9.0} ops/s");
        }
    }
    println!("  raw ed25519 verify_strict: {raw_ops:>9.0} ops/s");
}

fn main() {
    let s = setup();
    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c, &s);
    c.final_summary();
    print_figures(&s);
}
