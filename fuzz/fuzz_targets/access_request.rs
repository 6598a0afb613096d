//! `access_request`: a request's target (path and query) and headers through
//! the envelope's access filters (`envelope::fuzzing::AccessHarness`: required
//! single-use tokens under the three public test keys, the subject check, the
//! RFC 6455 upgrade checks), as hyper hands them over.
//!
//! Input: `TARGET` on the first line, then `Name: value` lines (see
//! `envelope_fuzz::request`).
//!
//! Beyond "no panic": the answer is a refusal the SPEC lists (the requests
//! carry no connection to upgrade, so none is granted) as an RFC 9457
//! problem (`application/problem+json`: a `urn:envelope:problem:` type, a
//! title, its own status, one line of detail) that never echoes the token,
//! `Retry-After` on every 503, `Allow` on 405, and 404 for any other path.
#![no_main]

use std::sync::LazyLock;

use common::Algorithm;
use envelope::fuzzing::AccessHarness;
use envelope_fuzz::{access_token, public_key_files, request};
use libfuzzer_sys::fuzz_target;

static HARNESS: LazyLock<AccessHarness> =
    LazyLock::new(|| AccessHarness::new(public_key_files()).expect("test keys load"));

const PATH: &str = "/v0/envelope/access";

/// The harness admits what it should: a valid token of each key passes every
/// check but the upgrade (there is no connection), twice (its single-use
/// reservation is given back); no token is 401.
fn self_check() {
    request::self_check();
    const UPGRADE: [(&[u8], &[u8]); 4] = [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for alg in Algorithm::ALL {
        let target = format!("{PATH}?access_token={}", access_token(alg, "self-check"));
        for _ in 0..2 {
            let answer = HARNESS.get(&target, &UPGRADE).expect("a valid request");
            let problem = problem(&answer.body);
            assert_eq!(
                (answer.status, problem["type"].as_str()),
                (400, Some("urn:envelope:problem:not-an-upgrade")),
                "{alg}: {problem}"
            );
        }
    }
    assert_eq!(HARNESS.get(PATH, &UPGRADE).map(|a| a.status), Some(401));
}

fuzz_target!(init: self_check(), |data: &[u8]| {
    let Some(input) = request::access(data) else {
        return;
    };
    let Some(answer) = HARNESS.get(input.target, &input.headers) else {
        return;
    };
    assert!(
        [400, 401, 404, 405, 503].contains(&answer.status),
        "status {}",
        answer.status
    );
    let uri: http::Uri = input.target.parse().expect("the harness parsed it");
    if uri.path() != PATH {
        assert_eq!(answer.status, 404);
    }
    assert_eq!(
        answer.header("content-type"),
        Some(&b"application/problem+json"[..])
    );
    let problem = problem(&answer.body);
    let label = problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:envelope:problem:"));
    assert!(label.is_some_and(|l| !l.is_empty()), "{problem}");
    assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()), "{problem}");
    assert_eq!(problem["status"], answer.status, "{problem}");
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(!detail.is_empty() && !detail.contains('\n'), "{problem}");
    if answer.status == 503 {
        assert!(answer.header("retry-after").is_some(), "{problem}");
    }
    if answer.status == 405 {
        assert_eq!(answer.header("allow"), Some(&b"GET"[..]));
    }
    let body = std::str::from_utf8(&answer.body).expect("UTF-8 body");
    for pair in uri.query().unwrap_or_default().split('&') {
        let value = pair.split_once('=').map_or("", |(_, v)| v);
        if value.len() >= 16 {
            assert!(!body.contains(value), "the answer echoes a query value");
        }
    }
});

/// The problem document of a refusal.
fn problem(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON problem document")
}
