//! Writes the seed corpora (`corpus/<target>/`) that come from this workspace's
//! test vectors, except two that need more than this program: the token
//! table's rows (`common/tests/integration/verify_table.rs`,
//! `write_token_fuzz_seeds`) and the kernel's ipset and nf_tables replies (`record_ipset`,
//! `record_nft`).
//! Here: every table row also as a token signed by the `token` target's keys;
//! a JWKS of the public test keys and its refusals (the key files themselves
//! are seeds straight from `testdata/`: scripts/fuzz.sh adds that directory to
//! the key targets' corpora, so no key is copied here); access
//! requests carrying tokens of all three test keys; a request to every admin
//! route; the Go original's flags.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --target-dir target/fuzz --example seeds`

use std::path::{Path, PathBuf};

use common::Algorithm;
use envelope_fuzz::jws::fixture;
use envelope_fuzz::{access_token, testdata};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn write(target: &str, name: &str, data: impl AsRef<[u8]>) {
    std::fs::write(corpus(target).join(name), data).expect("seed file");
}

fn write_all<T: AsRef<[u8]>>(target: &str, seeds: impl IntoIterator<Item = (&'static str, T)>) {
    for (name, data) in seeds {
        write(target, name, data);
    }
}

fn read(name: &str) -> String {
    std::fs::read_to_string(testdata(name)).expect("testdata file")
}

fn main() {
    token();
    keys();
    access();
    admin();
    goflags();
}

/// Each table row (written by the table's own generator) as a signed token too,
/// so that raw-mode mutations start from tokens the verifier accepts.
fn token() {
    let fx = fixture();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus("token"))
        .expect("token corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let Some(stem) = name.strip_suffix(".signed") else {
            continue;
        };
        let seed = std::fs::read(&path).expect("seed");
        let rest = &seed[1..];
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let payload = rest.get(cut + 1..).unwrap_or_default();
        write(
            "token",
            &format!("{stem}.jws"),
            fx.sign(&rest[..cut], payload),
        );
    }
    for vector in ["vector-pyjwt-eddsa.jwt", "vector-pyjwt-es256.jwt"] {
        write("token", vector, read(vector).trim());
    }
}

fn keys() {
    let pubs = [
        "insecure-test-eddsa.jwk.pub",
        "insecure-test-es256.jwk.pub",
        "insecure-test-rs256.jwk.pub",
    ];
    let three: Vec<String> = pubs.iter().map(|n| read(n).trim().to_owned()).collect();
    write(
        "jwk_public",
        "jwks-three",
        format!("{{\"keys\":[{}]}}", three.join(",")),
    );
    write(
        "jwk_public",
        "jwks-duplicate-kid",
        format!("{{\"keys\":[{},{}]}}", three[0], three[0]),
    );
    write("jwk_public", "jwks-empty", "{\"keys\":[]}");
    write_all(
        "jwk_private",
        [
            ("okp-without-d", r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#),
            ("pem-empty", "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"),
            ("pem-two-blocks", "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n"),
        ],
    );
}

fn access() {
    const UPGRADE: &str = "Connection: keep-alive, Upgrade\nUpgrade: websocket\n\
        Sec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\
        Sec-WebSocket-Protocol: net.measurementlab.envelope\n";
    let path = "/v0/envelope/access";
    let mut tokens = Vec::new();
    for alg in Algorithm::ALL {
        tokens.push((alg, access_token(alg, &format!("jti-{alg}"))));
    }
    for (alg, token) in &tokens {
        write(
            "access_request",
            &format!("valid-{alg}"),
            format!("{path}?access_token={token}\n{UPGRADE}"),
        );
    }
    let ed = &tokens[0].1;
    let cases = [
        ("no-token", format!("{path}\n{UPGRADE}")),
        ("empty-token", format!("{path}?access_token=\n{UPGRADE}")),
        (
            "duplicate-token",
            format!("{path}?access_token={ed}&access_token={ed}\n{UPGRADE}"),
        ),
        (
            "encoded-name",
            format!("{path}?access%5Ftoken={ed}&x=1+2%20\n{UPGRADE}"),
        ),
        ("no-upgrade", format!("{path}?access_token={ed}\n")),
        (
            "version-8",
            format!(
                "{path}?access_token={ed}\n{}",
                UPGRADE.replace("Version: 13", "Version: 8")
            ),
        ),
        (
            "other-path",
            format!("/v0/envelope/access/?access_token={ed}\n"),
        ),
        ("root", "/\n".to_owned()),
        (
            "absolute-form",
            format!("http://localhost{path}?access_token={ed}\n{UPGRADE}"),
        ),
    ];
    write_all("access_request", cases);
}

fn admin() {
    let requests = [
        ("status", "GET /v1/status"),
        ("status-query", "GET /v1/status?verbose=1"),
        ("list", "GET /v1/grants"),
        ("revoke-all", "DELETE /v1/grants"),
        ("revoke-ip", "DELETE /v1/grants?ip=192.0.2.99"),
        ("revoke-ip-v6", "DELETE /v1/grants?ip=2001:db8::1"),
        (
            "revoke-ip-twice",
            "DELETE /v1/grants?ip=192.0.2.7&ip=192.0.2.8",
        ),
        ("revoke-id", "DELETE /v1/grants/1"),
        ("revoke-id-missing", "DELETE /v1/grants/99"),
        ("revoke-id-text", "DELETE /v1/grants/one"),
        ("get-one", "GET /v1/grants/2"),
        ("reload", "POST /v1/reload"),
        ("reload-get", "GET /v1/reload"),
        ("unknown", "GET /v0/grants"),
        ("put", "PUT /v1/grants"),
        ("other-uid", "GET /v1/status 1000"),
        ("own-uid", "GET /v1/status 4242"),
        ("body", "POST /v1/reload\n{\"keys\":[]}"),
        ("drain", "POST /v1/drain"),
        ("resume", "POST /v1/resume"),
        ("events", "GET /v1/events"),
        ("events-follow", "GET /v1/events?follow=1&since=1"),
        ("events-gone", "GET /v1/events?since=99"),
        (
            "events-filtered",
            "GET /v1/events?type=grant.opened,grant.revoked&subnet=192.0.2.0%2F24",
        ),
        ("events-bad-type", "GET /v1/events?type=grant.nope"),
    ];
    write_all("admin_request", requests);
}

fn goflags() {
    let lines = [
        ("operations", "--cert\n/etc/envelope/tls.crt\n--key\n/etc/envelope/tls.key\n--verify-key\n/etc/envelope/verify.pub\n--machine\nmlab1-abc0t\n--subject\nndt\n--device\neth0\n--max-clients\n4"),
        ("go-style", "-envelope.listen-address=:8880\n-envelope.device=eth0\n-timeout=1m\n-max-hold=1h30m\n-envelope.token-required=false"),
        ("go-mixed", "-httpx.tcp-network=tcp\n-h\n-v\n--\n-timeout=5s"),
        ("durations", "--timeout=250ms\n--max-hold\n2h45m10s\n-timeout\n0"),
        ("env-style", "--verify-key=a.jwk,b.jwk\n--proxy-ports=\n--firewall=none"),
    ];
    write_all("goflags", lines);
}
