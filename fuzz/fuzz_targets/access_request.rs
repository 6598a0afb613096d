//! `access_request`: a request's target (path and query) and headers through
//! the envelope's access filters (`envelope::fuzzing::AccessHarness`: required
//! single-use tokens under the three public test keys, the subject check, the
//! RFC 6455 upgrade checks), as hyper hands them over.
//!
//! Input: `TARGET` on the first line, then `Name: value` lines (see
//! `envelope_fuzz::request`).
//!
//! Beyond "no panic": the answer is a refusal the SPEC lists (the requests
//! carry no connection to upgrade, so none is granted), a one-line
//! `text/plain` body that never echoes the token, and 404 for any other path.
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
            assert_eq!(
                (answer.status, answer.body.as_slice()),
                (400, &b"not a valid WebSocket upgrade request\n"[..]),
                "{alg}"
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
        Some(&b"text/plain; charset=utf-8"[..])
    );
    let body = std::str::from_utf8(&answer.body).expect("UTF-8 body");
    assert!(
        body.ends_with('\n') && body.matches('\n').count() == 1,
        "{body:?}"
    );
    for pair in uri.query().unwrap_or_default().split('&') {
        let value = pair.split_once('=').map_or("", |(_, v)| v);
        if value.len() >= 16 {
            assert!(!body.contains(value), "the answer echoes a query value");
        }
    }
});
