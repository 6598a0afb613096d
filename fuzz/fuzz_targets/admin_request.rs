//! `admin_request`: method, target (path and query), peer uid and body through
//! every route of the admin API (`envelope::fuzzing::AdminHarness`: the three
//! public test keys, reloadable; a fresh grant owner holding two grants for
//! each request).
//!
//! Input: `METHOD TARGET [UID]` on the first line, then the body (see
//! `envelope_fuzz::request`).
//!
//! Beyond "no panic": every answer is JSON (the event stream: one JSON object
//! per line) with a status the API documents (never the "unexpected
//! rejection" 500); refusals carry a non-empty list of error lines, and 405 an
//! `Allow` header; a peer other than root or the envelope's user gets 403; a
//! body is never accepted; and only a `DELETE` answered 200 removes grants.
#![no_main]

use std::sync::LazyLock;

use envelope::fuzzing::{AdminHarness, ADMIN_UID, GRANTED};
use envelope_fuzz::{public_key_files, request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

static HARNESS: LazyLock<AdminHarness> =
    LazyLock::new(|| AdminHarness::new(public_key_files()).expect("test keys load"));

/// The harness serves what it should: the status, a revoke by id that leaves
/// one grant, a reload, a drain, the event stream (followed too), and a
/// refusal for a peer that is not allowed.
fn self_check() {
    request::self_check();
    let status = |method: &[u8], target: &str, uid| {
        let out = HARNESS
            .request(method, target, b"", uid)
            .expect("a valid request");
        (out.answer.status, out.grants_left)
    };
    assert_eq!(status(b"GET", "/v1/status", 0), (200, 2));
    assert_eq!(status(b"DELETE", "/v1/grants/1", ADMIN_UID), (200, 1));
    assert_eq!(status(b"POST", "/v1/reload", 0), (200, 2));
    assert_eq!(status(b"POST", "/v1/drain", 0), (200, 2));
    assert_eq!(status(b"GET", "/v1/events?follow=1", 0), (200, 2));
    assert_eq!(status(b"GET", "/v1/grants", 1000), (403, 2));
}

fuzz_target!(init: self_check(), |data: &[u8]| {
    let Some(input) = request::admin(data) else {
        return;
    };
    let Some(out) = HARNESS.request(input.method, input.target, input.body, input.uid) else {
        return;
    };
    let answer = &out.answer;
    let status = answer.status;
    assert!(
        [200, 400, 403, 404, 405, 409, 410, 413, 422].contains(&status),
        "status {status}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    if status == 200 && answer.header("content-type") == Some(&b"application/x-ndjson"[..]) {
        // The route is chosen by the target's path, which an absolute-form
        // target (`GET ://v/v1/events`, found by this target) also has.
        let path = input.target.parse::<http::Uri>().ok();
        let path = path.as_ref().map(http::Uri::path);
        assert_eq!(path, Some("/v1/events"), "{}", input.target);
        for line in answer.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let event: Value = serde_json::from_slice(line).expect("a JSON event line");
            assert!(event["type"].is_string(), "{event}");
        }
        assert_eq!(out.grants_left, GRANTED.len(), "grants changed");
        return;
    }
    assert_eq!(answer.header("content-type"), Some(&b"application/json"[..]));
    let body: Value = serde_json::from_slice(&answer.body).expect("a JSON body");
    if status != 200 {
        let errors = body["errors"].as_array().expect("an error list");
        assert!(!errors.is_empty() && errors.iter().all(Value::is_string), "{body}");
    }
    if status == 405 {
        assert!(answer.header("allow").is_some());
    }
    if input.uid != 0 && input.uid != ADMIN_UID {
        assert_eq!(status, 403);
    }
    if !input.body.is_empty() {
        assert!([400, 403, 413].contains(&status), "a body was accepted");
    }
    if !(input.method == b"DELETE" && status == 200) {
        assert_eq!(out.grants_left, GRANTED.len(), "grants changed");
    }
});
