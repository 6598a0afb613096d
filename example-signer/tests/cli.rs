//! `example-signer` driven as a binary: keygen files and modes, refusal to
//! overwrite, Go-style flags, and tokens checked with `common::Verifier`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use assert_cmd::Command;
use common::jwk::load_public_keys;
use common::{Algorithm, Audience, Claims, Verifier};
use predicates::prelude::*;
use tempfile::TempDir;

fn signer() -> Command {
    Command::cargo_bin("example-signer").unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pub_path(prefix: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", prefix.display()))
}

/// Makes a key pair with `keygen` in `dir` and returns the private key's path.
fn keygen(dir: &TempDir, alg: Algorithm, kid: &str) -> PathBuf {
    let prefix = dir.path().join(format!("key-{kid}"));
    signer()
        .args(["keygen", "--alg", alg.as_str(), "--kid", kid, "--out"])
        .arg(&prefix)
        .assert()
        .success();
    prefix
}

/// Verifies `token` with the `.pub` file next to `private` for `machine`.
fn verify(private: &Path, token: &str, issuer: &str, machine: &str) -> Claims {
    let keys = load_public_keys(&pub_path(private)).unwrap();
    let verifier = Verifier::new(keys, issuer, machine).unwrap();
    verifier.verify(token).unwrap()
}

fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone())
        .unwrap()
        .trim_end()
        .to_owned()
}

fn token_from_url(url: &str) -> &str {
    url.strip_prefix("ws://localhost:8880/v0/envelope/access?access_token=")
        .unwrap_or_else(|| panic!("unexpected URL {url:?}"))
}

#[test]
fn keygen_writes_a_private_0600_file_and_a_public_file_for_each_algorithm() {
    let dir = TempDir::new().unwrap();
    for alg in Algorithm::ALL {
        let kid = format!("k-{alg}");
        let private = keygen(&dir, alg, &kid);
        let public = pub_path(&private);
        assert_eq!(mode(&private), 0o600, "{alg}");
        assert_eq!(mode(&public), 0o644, "{alg}");

        let private_jwk: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&private).unwrap()).unwrap();
        let public_jwk: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&public).unwrap()).unwrap();
        assert!(
            private_jwk.get("d").is_some(),
            "{alg}: private key has no d"
        );
        assert!(public_jwk.get("d").is_none(), "{alg}: public key has d");
        for jwk in [&private_jwk, &public_jwk] {
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
        }
        let keys = load_public_keys(&public).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].kid(), keys[0].alg()), (kid.as_str(), alg));
    }
}

#[test]
fn keygen_default_prefix_is_jwk_keygen_naming() {
    let dir = TempDir::new().unwrap();
    signer()
        .current_dir(dir.path())
        .args(["keygen", "--alg", "EdDSA", "--kid", "one"])
        .assert()
        .success();
    assert!(dir.path().join("jwk_sig_EdDSA_one").is_file());
    assert!(dir.path().join("jwk_sig_EdDSA_one.pub").is_file());
}

#[test]
fn keygen_refuses_to_overwrite_either_file_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let private = keygen(&dir, Algorithm::EdDSA, "a");
    let public = pub_path(&private);
    let before = (fs::read(&private).unwrap(), fs::read(&public).unwrap());
    signer()
        .args(["keygen", "--alg", "EdDSA", "--kid", "a", "--out"])
        .arg(&private)
        .assert()
        .failure()
        .stderr(predicate::str::contains(private.display().to_string()))
        .stderr(predicate::str::contains("--force"));
    assert_eq!(
        before,
        (fs::read(&private).unwrap(), fs::read(&public).unwrap())
    );

    // Only the public file exists: still refused, and no private file appears.
    let other = dir.path().join("other");
    fs::write(pub_path(&other), "keep").unwrap();
    signer()
        .args(["keygen", "--alg", "ES256", "--kid", "b", "--out"])
        .arg(&other)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            pub_path(&other).display().to_string(),
        ));
    assert!(!other.exists());
    assert_eq!(fs::read_to_string(pub_path(&other)).unwrap(), "keep");
}

#[test]
fn keygen_force_replaces_both_files_and_narrows_a_wide_private_file() {
    let dir = TempDir::new().unwrap();
    let private = keygen(&dir, Algorithm::EdDSA, "a");
    let old_private = fs::read_to_string(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o666)).unwrap();
    signer()
        .args(["keygen", "--alg", "ES256", "--kid", "b", "--force", "--out"])
        .arg(&private)
        .assert()
        .success();
    assert_ne!(fs::read_to_string(&private).unwrap(), old_private);
    assert_eq!(mode(&private), 0o600);
    let keys = load_public_keys(&pub_path(&private)).unwrap();
    assert_eq!((keys[0].kid(), keys[0].alg()), ("b", Algorithm::ES256));
}

#[test]
fn signed_url_verifies_with_the_public_file_for_each_algorithm() {
    let dir = TempDir::new().unwrap();
    for alg in Algorithm::ALL {
        let private = keygen(&dir, alg, &format!("s-{alg}"));
        let before = now();
        let assert = signer()
            .arg("--private")
            .arg(&private)
            .args([
                "--machine",
                "mlab1-test0",
                "--subject",
                "ndt",
                "--expiry",
                "1h30m",
            ])
            .assert()
            .success()
            .stderr(predicate::str::contains("\"sub\": \"ndt\""));
        let url = stdout_of(&assert);
        let claims = verify(&private, token_from_url(&url), "locate", "mlab1-test0");
        assert_eq!(claims.iss, "locate");
        assert_eq!(claims.sub, "ndt");
        assert_eq!(claims.aud, Audience::One("mlab1-test0".into()));
        assert!(
            (before + 5400..=now() + 5400).contains(&claims.exp),
            "{alg}: exp {}",
            claims.exp
        );
        let iat = claims.iat.unwrap();
        assert!((before..=now()).contains(&iat));
        assert_eq!(claims.nbf, Some(iat));
        let jti = claims.jti.unwrap();
        assert!(
            jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
            "{jti}"
        );
    }
}

#[test]
fn default_expiry_is_two_minutes() {
    let dir = TempDir::new().unwrap();
    let private = keygen(&dir, Algorithm::EdDSA, "e");
    let before = now();
    let assert = signer()
        .arg("--private")
        .arg(&private)
        .args(["--machine", "m", "--subject", "s", "--token-only"])
        .assert()
        .success();
    let claims = verify(&private, &stdout_of(&assert), "locate", "m");
    assert!((before + 120..=now() + 120).contains(&claims.exp));
}

#[test]
fn go_style_single_dash_flags_work() {
    let dir = TempDir::new().unwrap();
    let prefix = dir.path().join("go");
    signer()
        .args(["keygen", "-alg=ES256", "-kid", "go", "-out"])
        .arg(&prefix)
        .assert()
        .success();
    let assert = signer()
        .arg(format!("-private={}", prefix.display()))
        .args([
            "-machine=m",
            "-subject",
            "s",
            "-issuer=iss",
            "-expiry",
            "90s",
        ])
        .args(["-url=wss://example.net/x"])
        .assert()
        .success();
    let url = stdout_of(&assert);
    let token = url
        .strip_prefix("wss://example.net/x?access_token=")
        .unwrap_or_else(|| panic!("unexpected URL {url:?}"));
    let claims = verify(&prefix, token, "iss", "m");
    assert_eq!(claims.sub, "s");
    assert!((now() + 85..=now() + 90).contains(&claims.exp));
}

#[test]
fn token_only_prints_just_the_jwt() {
    let dir = TempDir::new().unwrap();
    let private = keygen(&dir, Algorithm::RS256, "t");
    let assert = signer()
        .arg("--private")
        .arg(&private)
        .args(["--machine", "m", "--subject", "s", "--token-only"])
        .assert()
        .success();
    let token = stdout_of(&assert);
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert!(!token.contains(':'));
    verify(&private, &token, "locate", "m");
}

#[test]
fn issuer_override_and_url_with_a_query() {
    let dir = TempDir::new().unwrap();
    let private = keygen(&dir, Algorithm::EdDSA, "i");
    let assert = signer()
        .arg("--private")
        .arg(&private)
        .args([
            "--machine",
            "m",
            "--subject",
            "s",
            "--issuer",
            "other-issuer",
        ])
        .args(["--url", "ws://h:1/p?x=1"])
        .assert()
        .success();
    let url = stdout_of(&assert);
    let token = url.strip_prefix("ws://h:1/p?x=1&access_token=").unwrap();
    assert_eq!(
        verify(&private, token, "other-issuer", "m").iss,
        "other-issuer"
    );
    let keys = load_public_keys(&pub_path(&private)).unwrap();
    let locate = Verifier::new(keys, "locate", "m").unwrap();
    assert_eq!(locate.verify(token).unwrap_err().label(), "wrong-issuer");
}

#[test]
fn bad_expiry_is_a_usage_error_with_a_clear_message() {
    for (expiry, message) in [
        ("500ms", "expiry must be whole seconds and at least 1s"),
        ("1500ms", "expiry must be whole seconds and at least 1s"),
        ("0s", "expiry must be whole seconds and at least 1s"),
        ("2 minutes", "invalid duration"),
        ("-1m", "invalid duration"),
    ] {
        signer()
            .args(["--private", "unused", "--machine", "m", "--subject", "s"])
            // `=` so that clap takes `-1m` as the value, not as a flag.
            .arg(format!("--expiry={expiry}"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--expiry"))
            .stderr(predicate::str::contains(message));
    }
}

#[test]
fn missing_key_file_is_one_line_naming_the_file() {
    let assert = signer()
        .args([
            "--private",
            "/nonexistent/key",
            "--machine",
            "m",
            "--subject",
            "s",
        ])
        .assert()
        .code(1)
        .stdout("");
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.starts_with("example-signer: "), "{stderr}");
    assert!(stderr.contains("/nonexistent/key"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    signer().assert().code(2);
    signer()
        .args(["--private", "k", "--machine", "m"])
        .assert()
        .code(2);
    signer()
        .args(["keygen", "--alg", "HS256", "--kid", "k"])
        .assert()
        .code(2);
    signer()
        .args(["keygen", "--alg", "EdDSA", "--kid", "k", "--private", "x"])
        .assert()
        .code(2);
}
