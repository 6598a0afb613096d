//! `jwk_private`: bytes as a private key file of each kind an operator hands
//! in: a signing JWK (`example-signer --private`, `PrivateKey::from_jwk_json`),
//! and the PEM files of `--cert`/`--key` (`envelope::tls::CertFiles::load`, given
//! the bytes as the key beside the test certificate, and as the chain beside
//! the test key; through a file, as that is what it reads).
//!
//! Beyond "no panic": a private key that loads round-trips (its JWK output
//! loads again to the same output), its public half loads as a verify key, and
//! a token it signs verifies under that public half.
#![no_main]

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use common::{Claims, PrivateKey, PublicKey, Signer, Verifier};
use envelope::tls::CertFiles;
use envelope_fuzz::testdata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = PrivateKey::from_jwk_json(text) {
            loaded(&key);
        }
    }
    let file = scratch(data);
    let (cert, key) = (
        testdata("insecure-test-server.pem"),
        testdata("insecure-test-server.key"),
    );
    let _ = CertFiles {
        cert,
        key: file.clone(),
    }
    .load();
    let _ = CertFiles { cert: file, key }.load();
});

/// A file holding `data`: one per process, unlinked at once (so nothing is
/// left behind) and reached through `/proc/self/fd`.
fn scratch(data: &[u8]) -> PathBuf {
    static FILE: OnceLock<Mutex<File>> = OnceLock::new();
    let file = FILE.get_or_init(|| Mutex::new(tempfile().expect("scratch file")));
    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
    file.set_len(0).expect("truncate scratch file");
    file.seek(SeekFrom::Start(0)).expect("rewind scratch file");
    file.write_all(data).expect("write scratch file");
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// On tmpfs where there is one: on ext4, closing a file truncated and written
/// again forces its blocks to disk, which made every input cost milliseconds.
fn tempfile() -> std::io::Result<File> {
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("envelope-fuzz-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

fn loaded(key: &PrivateKey) {
    let text = key.to_jwk_json();
    let again = PrivateKey::from_jwk_json(&text)
        .unwrap_or_else(|e| panic!("a loaded key's own JWK is refused: {e}"));
    assert_eq!(again.to_jwk_json(), text);
    let public = PublicKey::from_jwk_json(&key.public_key().to_jwk_json())
        .unwrap_or_else(|e| panic!("a loaded key's public half is refused: {e}"));
    let claims = Claims::for_machine("iss", "sub", "machine", 0, i64::MAX);
    let token = Signer::new(key.clone())
        .sign(&claims)
        .expect("a loaded key signs");
    let verifier = Verifier::new(vec![public], "iss", "machine").expect("one key");
    assert_eq!(verifier.verify(&token), Ok(claims));
}
