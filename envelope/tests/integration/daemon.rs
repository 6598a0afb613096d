//! The envelope end to end: TLS from testdata, real WebSocket clients, and the
//! recording firewall journal (`--firewall=record`) to see what the firewall was
//! asked to do. One daemon per test; tests run in parallel. Most run the daemon
//! in-process on port 0 (`Daemon::in_process`); those about signals, the
//! environment, the command line or the logs start the real binary.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::*;
use common::{Algorithm, Audience, Claims, PrivateKey};
use futures_util::{SinkExt, StreamExt};
use testbed::Issuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const GRANT: &str = "grant 127.0.0.0/24";
const REVOKE: &str = "revoke 127.0.0.0/24";

type Handshake = Result<(Ws, Response), WsError>;

// ---------------------------------------------------------------- helpers

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Replays grant/revoke lines; returns (grants, revokes, subnets still granted).
fn replay(lines: &[String]) -> (usize, usize, BTreeSet<String>) {
    let (mut grants, mut revokes, mut live) = (0, 0, BTreeSet::new());
    for line in lines {
        if let Some(subnet) = line.strip_prefix("grant ") {
            grants += 1;
            assert!(
                live.insert(subnet.to_owned()),
                "granted twice without a revoke: {lines:?}"
            );
        } else if let Some(subnet) = line.strip_prefix("revoke ") {
            revokes += 1;
            assert!(live.remove(subnet), "revoked without a grant: {lines:?}");
        }
    }
    (grants, revokes, live)
}

fn assert_untouched(daemon: &Daemon, what: &str) {
    assert_eq!(
        daemon.firewall_calls(),
        Vec::<String>::new(),
        "{what}: the firewall was touched"
    );
}

/// Status and body of a handshake that did not succeed (or 101 and no body).
fn status_and_body(result: Handshake) -> (u16, String) {
    match result {
        Ok((_, response)) => (response.status().as_u16(), String::new()),
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

fn expect_ok(result: Handshake, what: &str) -> (Ws, Response) {
    match result {
        Ok(pair) => pair,
        Err(WsError::Http(response)) => panic!(
            "{what}: expected 101, got {} {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        ),
        Err(e) => panic!("{what}: expected 101, got {e}"),
    }
}

fn subprotocol_header(response: &Response) -> Option<String> {
    let values: Vec<_> = response
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .collect();
    assert!(
        values.len() <= 1,
        "several Sec-WebSocket-Protocol headers: {values:?}"
    );
    values.first().map(|v| v.to_str().unwrap().to_owned())
}

/// A raw request over the daemon's transport; returns (status, whole answer).
async fn raw(daemon: &Daemon, request: &str) -> (u16, String) {
    let answer = raw_exchange(daemon.addr, daemon.tls, request).await;
    (status_of(&answer), answer)
}

/// Sends `request`, reads only the answer's head, then drops the connection;
/// returns (status, head).
async fn raw_head(daemon: &Daemon, request: &str) -> (u16, String) {
    let mut stream = connect(daemon.addr, daemon.tls).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(EVENTUALLY, async {
        while !answer.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            answer.push(byte[0]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no complete answer head within {EVENTUALLY:?}"
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (status_of(&answer), answer)
}

fn access(token: &str) -> String {
    format!("{ACCESS_PATH}?access_token={token}")
}

/// A request head with the given header lines (each without CRLF).
fn head(method: &str, path_and_query: &str, headers: &[&str]) -> String {
    let mut text = format!("{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("Connection: close\r\n\r\n");
    text
}

/// A token signed by a freshly generated key that claims the test key's kid.
fn badly_signed_token() -> String {
    let key = PrivateKey::generate(Algorithm::EdDSA, "insecure-eddsa").unwrap();
    Issuer::new(key, MACHINE, SUBJECT).token(120)
}

fn expired_token() -> String {
    let mut c = claims(SUBJECT, 0);
    c.exp = now_unix() - 30;
    c.iat = Some(now_unix() - 90);
    sign(&c)
}

/// `{"alg":"none"}` with valid claims and an empty signature.
fn unsigned_token() -> String {
    use base64::Engine as _;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = br#"{"alg":"none","typ":"JWT","kid":"insecure-eddsa"}"#;
    let claims = serde_json::to_vec(&claims(SUBJECT, 120)).unwrap();
    format!("{}.{}.", b64(header), b64(&claims))
}

fn wrong_issuer_token() -> String {
    let mut c: Claims = claims(SUBJECT, 120);
    c.iss = "mallory".into();
    sign(&c)
}

fn wrong_audience_token() -> String {
    let mut c: Claims = claims(SUBJECT, 120);
    c.aud = Audience::One("mlab9-elsewhere".into());
    sign(&c)
}

/// The session holds exactly one grant; closing it revokes that (how soon:
/// the bench's "back-to-back revoke (Close → refused)").
async fn one_grant_then_revoked_on_close(daemon: &Daemon, ws: Ws) {
    assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
    close(ws).await;
    daemon.await_journal(REVOKE, 1).await;
}

async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while ws.next().await.is_some() {}
    })
    .await;
}

/// Waits (bounded) for the server's Close frame; returns (code, reason).
async fn await_close(ws: &mut Ws, within: Duration) -> (CloseCode, String) {
    let message = tokio::time::timeout(within, ws.next())
        .await
        .unwrap_or_else(|_| panic!("no Close frame within {within:?}"));
    match message {
        Some(Ok(Message::Close(Some(frame)))) => (frame.code, frame.reason.as_str().to_owned()),
        other => panic!("expected a Close frame with a code, got {other:?}"),
    }
}

/// The value of one exposition line `name{labels} value`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

async fn active_grants(daemon: &Daemon) -> Option<f64> {
    metric(&daemon.metrics().await, "envelope_active_grants")
}

// ---------------------------------------------------------------- SPEC §5 HTTP table

mod table {
    use super::*;

    #[tokio::test]
    async fn method_other_than_get_is_405() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let token = token();
        for method in ["POST", "HEAD", "PUT", "DELETE"] {
            let (status, answer) =
                raw(&daemon, &upgrade_request(method, &access(&token), "")).await;
            assert_eq!(status, 405, "{method}: {answer}");
            assert_untouched(&daemon, method);
        }
    }

    #[tokio::test]
    async fn missing_or_invalid_token_is_401() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let (status, body) = status_and_body(ws_connect(&daemon, None, true).await);
        assert_eq!(status, 401, "missing token: {body}");
        assert_untouched(&daemon, "missing token");
        for (what, token) in [
            ("bad signature", badly_signed_token()),
            ("expired", expired_token()),
            ("wrong audience", wrong_audience_token()),
            ("garbage", "garbage".to_owned()),
            ("empty", String::new()),
            ("three garbage parts", "a.b.c".to_owned()),
            ("alg none", unsigned_token()),
            ("wrong issuer", wrong_issuer_token()),
            ("over 8 KiB", format!("{}{}", token(), "A".repeat(8300))),
        ] {
            let (status, body) = status_and_body(ws_connect(&daemon, Some(&token), true).await);
            assert_eq!(status, 401, "{what}: {body}");
            assert_untouched(&daemon, what);
        }
    }

    #[tokio::test]
    async fn wrong_subject_is_400_and_monitoring_is_accepted() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let wrong = sign(&claims("neubot", 120));
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&wrong), true).await);
        assert_eq!(status, 400, "wrong subject: {body}");
        assert_untouched(&daemon, "wrong subject");

        let monitoring = sign(&claims("monitoring", 120));
        let (ws, response) = expect_ok(
            ws_connect(&daemon, Some(&monitoring), true).await,
            "monitoring",
        );
        assert_eq!(response.status().as_u16(), 101);
        assert_eq!(subprotocol_header(&response).as_deref(), Some(SUBPROTOCOL));
        one_grant_then_revoked_on_close(&daemon, ws).await;
    }

    #[tokio::test]
    async fn access_token_twice_is_400() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let (a, b) = (token(), token());
        for query in [
            format!("access_token={a}&access_token={b}"),
            format!("access_token={a}&access_token={a}"),
            format!("access_token={a}&x=1&access%5Ftoken={b}"),
        ] {
            let request = upgrade_request("GET", &format!("{ACCESS_PATH}?{query}"), "");
            let (status, answer) = raw(&daemon, &request).await;
            assert_eq!(status, 400, "{query}: {answer}");
            assert_untouched(&daemon, &query);
        }
    }

    #[tokio::test]
    async fn invalid_upgrade_is_400() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let path = access(&token());
        let cases = [
            ("plain GET", head("GET", &path, &[])),
            (
                "version 8",
                head(
                    "GET",
                    &path,
                    &[
                        "Connection: Upgrade",
                        "Upgrade: websocket",
                        "Sec-WebSocket-Version: 8",
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    ],
                ),
            ),
            (
                "missing key",
                head(
                    "GET",
                    &path,
                    &[
                        "Connection: Upgrade",
                        "Upgrade: websocket",
                        "Sec-WebSocket-Version: 13",
                    ],
                ),
            ),
            (
                "missing Upgrade",
                head(
                    "GET",
                    &path,
                    &[
                        "Connection: Upgrade",
                        "Sec-WebSocket-Version: 13",
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    ],
                ),
            ),
        ];
        for (what, request) in cases {
            let (status, answer) = raw(&daemon, &request).await;
            assert_eq!(status, 400, "{what}: {answer}");
            assert_untouched(&daemon, what);
        }
    }

    #[tokio::test]
    async fn max_clients_full_is_503() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--max-clients=1"));
        let (held, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "first client",
        );
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&token()), true).await);
        assert_eq!(status, 503, "second client: {body}");
        assert_eq!(
            daemon.firewall_calls(),
            vec![GRANT.to_owned()],
            "the 503 touched the firewall"
        );
        close(held).await;
        daemon.await_journal(REVOKE, 1).await;
    }

    #[tokio::test]
    async fn firewall_failure_is_500_and_frees_the_slot() {
        let daemon = Daemon::in_process(EnvelopeCmd {
            firewall: Firewall::Record { fail_grants: true },
            ..EnvelopeCmd::default()
        });
        for attempt in 1..=3 {
            let (status, body) = status_and_body(ws_connect(&daemon, Some(&token()), true).await);
            assert_eq!(
                status, 500,
                "attempt {attempt} (a 503 means the slot was not freed): {body}"
            );
            assert_untouched(&daemon, "failed grant");
        }
        assert_eq!(daemon.journal(), vec!["setup".to_owned()]);
    }

    /// Writes a /proc/net/dev-format file atomically.
    fn write_proc(path: &std::path::Path, tx_bytes: u64) {
        let text = format!(
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n  \
             test0: 1000 10 0 0 0 0 0 0 {tx_bytes} 20 0 0 0 0 0 0\n"
        );
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transmit_rate_over_limit_is_503_unless_monitoring() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("dev");
        write_proc(&proc, 0);
        let daemon = Daemon::in_process(EnvelopeCmd::default().args(&[
            "--max-clients=4",
            "--tx-device=test0",
            "--tx-max-rate=1000000",
            &format!("--tx-proc-path={}", proc.display()),
        ]));
        // The counter keeps growing fast (8e13 bit/s), so every 1 s sample is over.
        let writer = {
            let proc = proc.clone();
            tokio::spawn(async move {
                let mut tx: u64 = 0;
                loop {
                    tx += 1_000_000_000_000;
                    write_proc(&proc, tx);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        daemon
            .eventually("a 503 for the transmit rate", || async {
                let before = daemon.journal();
                match ws_connect(&daemon, Some(&token()), true).await {
                    Ok((ws, _)) => {
                        // Before the first sample the rate is 0: give the grant back.
                        close(ws).await;
                        let grants = count(&daemon.journal(), GRANT);
                        daemon.await_journal(REVOKE, grants).await;
                        false
                    }
                    Err(WsError::Http(response)) => {
                        let body = response.body().as_deref().unwrap_or_default();
                        let body = String::from_utf8_lossy(body);
                        assert_eq!(response.status().as_u16(), 503, "{body}");
                        assert!(body.contains("transmit"), "503 for another reason: {body}");
                        assert_eq!(
                            daemon.journal(),
                            before,
                            "the tx-limit 503 touched the firewall"
                        );
                        true
                    }
                    Err(e) => panic!("handshake error: {e}"),
                }
            })
            .await;
        // Monitoring is not limited.
        let grants = count(&daemon.journal(), GRANT);
        let monitoring = sign(&claims("monitoring", 120));
        let (ws, _) = expect_ok(
            ws_connect(&daemon, Some(&monitoring), true).await,
            "monitoring while over",
        );
        assert_eq!(count(&daemon.journal(), GRANT), grants + 1);
        // And the others still are.
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&token()), true).await);
        assert_eq!(status, 503, "{body}");
        writer.abort();
        close(ws).await;
    }

    #[tokio::test]
    async fn all_good_is_101_with_the_grant_in_place_before_the_answer() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--max-clients=2"));
        let (offered, response) =
            expect_ok(ws_connect(&daemon, Some(&token()), true).await, "offering");
        assert_eq!(response.status().as_u16(), 101);
        assert_eq!(subprotocol_header(&response).as_deref(), Some(SUBPROTOCOL));
        // Read right after the handshake returned: the grant was there before the 101.
        one_grant_then_revoked_on_close(&daemon, offered).await;

        let (plain, response) = expect_ok(
            ws_connect(&daemon, Some(&token()), false).await,
            "not offering",
        );
        assert_eq!(response.status().as_u16(), 101);
        assert_eq!(
            subprotocol_header(&response),
            None,
            "not offered, yet answered"
        );
        assert_eq!(
            daemon.firewall_calls(),
            vec![GRANT.to_owned(), REVOKE.to_owned(), GRANT.to_owned()]
        );
        close(plain).await;
        daemon.await_journal(REVOKE, 2).await;

        // Offered among others (browser style list), by a raw client that then
        // vanishes without a word: the grant goes too.
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: chat, net.measurementlab.envelope\r\n\r\n",
            access(&token())
        );
        let (status, answer) = raw_head(&daemon, &request).await;
        assert_eq!(status, 101, "{answer}");
        assert!(
            answer
                .lines()
                .any(|l| l
                    .eq_ignore_ascii_case("sec-websocket-protocol: net.measurementlab.envelope")),
            "{answer}"
        );
        assert_eq!(count(&daemon.firewall_calls(), GRANT), 3);
        daemon.await_journal(REVOKE, 3).await;
    }
}

// ---------------------------------------------------------------- check order

mod order {
    use super::*;

    #[tokio::test]
    async fn checks_run_in_the_spec_order() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--max-clients=1"));
        let bad = badly_signed_token();

        let (status, answer) = raw(&daemon, &upgrade_request("POST", &access(&bad), "")).await;
        assert_eq!(status, 405, "POST with a bad token: {answer}");

        let (status, answer) = raw(&daemon, &head("GET", &access(&bad), &[])).await;
        assert_eq!(status, 401, "bad token, no upgrade headers: {answer}");

        let (status, answer) = raw(&daemon, &head("GET", ACCESS_PATH, &[])).await;
        assert_eq!(status, 401, "no token, no upgrade headers: {answer}");

        let wrong = sign(&claims("neubot", 120));
        let (status, answer) = raw(&daemon, &head("GET", &access(&wrong), &[])).await;
        assert_eq!(status, 400, "wrong subject, no upgrade headers: {answer}");
        assert!(
            answer.contains("subject"),
            "400 for the upgrade, not the subject: {answer}"
        );
        assert_untouched(&daemon, "rejections");

        let (held, _) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "holder");
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&bad), true).await);
        assert_eq!(status, 401, "full and bad token: {body}");
        let (status, body) = status_and_body(ws_connect(&daemon, None, true).await);
        assert_eq!(status, 401, "full and no token: {body}");
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&wrong), true).await);
        assert_eq!(status, 400, "full and wrong subject: {body}");
        let (status, answer) = raw(&daemon, &head("GET", &access(&token()), &[])).await;
        assert_eq!(status, 400, "full and not an upgrade: {answer}");
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
        close(held).await;
    }
}

// ---------------------------------------------------------------- sessions

mod sessions {
    use super::*;

    /// Connects with a token expiring `exp_in` s from now and waits for the server's
    /// Close (checked: 1000 "deadline", then the revoke); returns the longest and
    /// shortest possible hold and how late after the token's `exp` the Close came,
    /// in seconds.
    async fn hold_until_close(daemon: &Daemon, exp_in: i64) -> (f64, f64, f64) {
        let c = claims(SUBJECT, exp_in);
        let exp = c.exp;
        let token = sign(&c);
        let before = Instant::now();
        let (mut ws, _) = expect_ok(ws_connect(daemon, Some(&token), true).await, "client");
        let after = Instant::now();
        let (code, reason) = await_close(&mut ws, EVENTUALLY).await;
        let closed = Instant::now();
        let late = wall_now() - exp as f64;
        assert_eq!(code, CloseCode::Normal, "Close code at the deadline");
        assert_eq!(reason, "deadline");
        daemon.await_journal(REVOKE, 1).await;
        // A well-behaved client answers the Close.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while ws.next().await.is_some() {}
        })
        .await;
        // The deadline was set between `before` and `after`.
        (
            (closed - before).as_secs_f64(),
            (closed - after).as_secs_f64(),
            late,
        )
    }

    fn wall_now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[tokio::test]
    async fn token_expiry_later_than_timeout_sets_the_deadline() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().args(&["--timeout=1s"]));
        let (longest, shortest, late) = hold_until_close(&daemon, 3).await;
        // exp is whole seconds: 2..3 s away at the connect.
        assert!(
            longest >= 1.8,
            "closed after {longest:.2} s: the 1 s timeout won over exp"
        );
        assert!(late > -0.2, "closed {:.2} s before the token's exp", -late);
        assert!(
            shortest <= 4.0 && late < 1.3,
            "closed {late:.2} s after exp ({shortest:.2} s in)"
        );
    }

    #[tokio::test]
    async fn timeout_later_than_token_expiry_sets_the_deadline() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().args(&["--timeout=3s"]));
        // exp 2 s ahead rather than 1: a whole-second exp 1 s ahead may already be
        // past when the daemon checks it (zero leeway), which would be a 401.
        let (longest, shortest, _) = hold_until_close(&daemon, 2).await;
        assert!(
            longest >= 2.85,
            "closed after {longest:.2} s, before now + timeout"
        );
        assert!(
            shortest <= 3.8,
            "closed after {shortest:.2} s, well after now + timeout"
        );
    }

    #[tokio::test]
    async fn max_hold_caps_a_long_token() {
        let daemon =
            Daemon::in_process(EnvelopeCmd::default().args(&["--timeout=1s", "--max-hold=2s"]));
        let (longest, shortest, _) = hold_until_close(&daemon, 3600).await;
        assert!(
            longest >= 1.85,
            "closed after {longest:.2} s, before --max-hold"
        );
        assert!(
            shortest <= 2.8,
            "closed after {shortest:.2} s: --max-hold did not cap the token"
        );
    }

    #[tokio::test]
    async fn client_message_close_or_disconnect_ends_the_session() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());

        // A message.
        let (mut ws, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "message client",
        );
        ws.send(Message::text("hello")).await.unwrap();
        daemon.await_journal(REVOKE, 1).await;
        let ended = tokio::time::timeout(EVENTUALLY, async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the server kept the WebSocket open after a client message"
        );
        drop(ws);

        // A ping is a message too.
        let (mut ws, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "ping client",
        );
        ws.send(Message::Ping(b"x".to_vec().into())).await.unwrap();
        daemon.await_journal(REVOKE, 2).await;
        drop(ws);

        // A 20 MB frame (far over the frame limit).
        let (mut ws, _) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "big frame");
        let big = vec![0u8; 20 << 20];
        // The server cuts the connection: the send ends (in error) rather than stalling.
        let sent = tokio::time::timeout(EVENTUALLY, ws.send(Message::Binary(big.into()))).await;
        assert!(sent.is_ok(), "the server neither read the frame nor closed");
        daemon.await_journal(REVOKE, 3).await;
        drop(ws);

        // A polite close.
        let (mut ws, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "closing client",
        );
        ws.close(None).await.unwrap();
        daemon.await_journal(REVOKE, 4).await;
        drop(ws);

        // Abrupt: the TCP stream goes away without a Close.
        let (ws, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "vanishing client",
        );
        drop(ws);
        daemon.await_journal(REVOKE, 5).await;

        let (grants, revokes, live) = replay(&daemon.firewall_calls());
        assert_eq!((grants, revokes), (5, 5));
        assert!(live.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_concurrent_clients_three_slots() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--max-clients=3"));
        let token = token();
        let attempts = (0..20).map(|_| ws_connect(&daemon, Some(&token), true));
        let results = futures_util::future::join_all(attempts).await;
        let mut held = Vec::new();
        let mut refused = 0;
        for result in results {
            match result {
                Ok((ws, response)) => {
                    assert_eq!(response.status().as_u16(), 101);
                    held.push(ws);
                }
                Err(WsError::Http(response)) => {
                    assert_eq!(response.status().as_u16(), 503);
                    refused += 1;
                }
                Err(e) => panic!("handshake error: {e}"),
            }
        }
        assert_eq!((held.len(), refused), (3, 17));
        // All from 127.0.0.1: one shared grant, and nothing for the 503s.
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
        futures_util::future::join_all(held.into_iter().map(close)).await;
        daemon.await_journal(REVOKE, 1).await;
        let (grants, revokes, live) = replay(&daemon.firewall_calls());
        assert_eq!(grants, revokes);
        assert!(live.is_empty(), "still granted: {live:?}");
    }

    #[tokio::test]
    async fn two_clients_of_one_subnet_share_one_grant() {
        let daemon = Daemon::start(EnvelopeCmd {
            metrics: true,
            ..EnvelopeCmd::default().arg("--max-clients=2")
        });
        let (first, _) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "127.0.0.1");
        let local = Some("127.0.0.2".parse().unwrap());
        let (second, _) = expect_ok(
            ws_connect_with(&daemon, Some(&token()), true, local, &[]).await,
            "127.0.0.2",
        );
        // The request line may be logged just after the 101 went out.
        daemon
            .eventually("a request from 127.0.0.2", || async {
                daemon.logs().contains("peer=127.0.0.2:")
            })
            .await;
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);

        close(first).await;
        // Once the owner has dropped the first session, the shared rule must stay.
        daemon
            .eventually("active grants = 1", || async {
                active_grants(&daemon).await == Some(1.0)
            })
            .await;
        assert_eq!(
            daemon.firewall_calls(),
            vec![GRANT.to_owned()],
            "closing one client cut the other"
        );

        close(second).await;
        daemon.await_journal(REVOKE, 1).await;
        assert_eq!(
            daemon.firewall_calls(),
            vec![GRANT.to_owned(), REVOKE.to_owned()]
        );
    }
}

// ---------------------------------------------------------------- network

mod network {
    use super::*;

    #[tokio::test]
    async fn ipv6_client_gets_its_slash_64() {
        let daemon = Daemon::in_process(EnvelopeCmd {
            listen: "[::1]:0".into(),
            ..EnvelopeCmd::default()
        });
        assert!(daemon.addr.is_ipv6());
        let (ws, response) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "over ::1");
        assert_eq!(subprotocol_header(&response).as_deref(), Some(SUBPROTOCOL));
        assert_eq!(daemon.firewall_calls(), vec!["grant ::/64".to_owned()]);
        close(ws).await;
        daemon.await_journal("revoke ::/64", 1).await;
    }

    #[tokio::test]
    async fn ipv4_mapped_peer_on_a_dual_stack_listener_is_ipv4() {
        let mut daemon = Daemon::in_process(EnvelopeCmd {
            listen: "[::]:0".into(),
            ..EnvelopeCmd::default()
        });
        // The peer arrives as ::ffff:127.0.0.1 on the dual-stack socket.
        daemon.addr = std::net::SocketAddr::new([127, 0, 0, 1].into(), daemon.addr.port());
        let (ws, _) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "over IPv4");
        one_grant_then_revoked_on_close(&daemon, ws).await;
    }

    #[tokio::test]
    async fn forwarding_headers_are_ignored() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let headers = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9;proto=https"),
            ("X-Real-IP", "203.0.113.9"),
            ("X-Forwarded-For", "[2001:db8::9]"),
        ];
        let (ws, _) = expect_ok(
            ws_connect_with(&daemon, Some(&token()), true, None, &headers).await,
            "forged headers",
        );
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
        close(ws).await;
    }

    /// Reads until EOF (or a reset); returns how long that took, bounded by `within`.
    async fn until_closed(
        stream: &mut (impl tokio::io::AsyncRead + Unpin),
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let result = tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            result.is_ok(),
            "the server kept the connection open for {within:?}"
        );
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slowloris_connections_are_dropped() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--handshake-timeout=1s"));
        let started = Instant::now();
        // TCP only, no ClientHello.
        let mut silent = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        // TLS done, half a request head.
        let mut half = connect(daemon.addr, true).await.unwrap();
        half.write_all(
            format!("GET {ACCESS_PATH}?access_token=x HTTP/1.1\r\nHost: loc").as_bytes(),
        )
        .await
        .unwrap();
        half.flush().await.unwrap();

        // A real client is served meanwhile.
        let (ws, _) = expect_ok(
            ws_connect(&daemon, Some(&token()), true).await,
            "while slow ones wait",
        );
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);

        let (a, b) = tokio::join!(
            until_closed(&mut silent, Duration::from_secs(3)),
            until_closed(&mut half, Duration::from_secs(3)),
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "silent {a:?}, half head {b:?}"
        );
        close(ws).await;
        assert_eq!(
            count(&daemon.firewall_calls(), GRANT),
            1,
            "slow connections touched the firewall"
        );
    }

    #[tokio::test]
    async fn oversized_head_is_refused_without_a_grant() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let filler = format!("X-Filler: {}", "a".repeat(20 << 10));
        let request = upgrade_request("GET", &access(&token()), &format!("{filler}\r\n"));
        let (status, answer) = raw(&daemon, &request).await;
        assert_eq!(status, 431, "{answer}");
        assert_untouched(&daemon, "oversized head");
    }

    #[tokio::test]
    async fn idle_keep_alive_after_a_401_is_dropped() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--handshake-timeout=1s"));
        let mut stream = connect(daemon.addr, true).await.unwrap();
        let request = format!("GET {ACCESS_PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // The 401 arrives, then the connection idles without a second request.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(4);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "idle keep-alive connection still open after 4 s (answer: {:?})",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
        assert_eq!(status_of(&String::from_utf8_lossy(&answer)), 401);
    }
}

// ---------------------------------------------------------------- process life

mod lifecycle {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_closes_sessions_with_1001_and_revokes_everything() {
        let daemon = Daemon::start(EnvelopeCmd::default().arg("--max-clients=2"));
        shutdown_closes_sessions_with_1001_and_revokes_everything(daemon, |daemon| {
            let status = daemon.terminate(Duration::from_secs(10));
            assert!(status.success(), "exit status {status}\n{}", daemon.logs());
        })
        .await;
    }

    /// `daemon::run` given its shutdown future (what `main` does on SIGTERM)
    /// returns Ok after the same ordered shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shutdown_future_closes_sessions_with_1001_and_revokes_everything() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--max-clients=2"));
        shutdown_closes_sessions_with_1001_and_revokes_everything(daemon, |daemon| {
            daemon
                .stop(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("run failed: {e}"));
        })
        .await;
    }

    async fn shutdown_closes_sessions_with_1001_and_revokes_everything(
        mut daemon: Daemon,
        stop: impl FnOnce(&mut Daemon),
    ) {
        let (a, _) = expect_ok(ws_connect(&daemon, Some(&token()), true).await, "first");
        let local = Some("127.0.0.2".parse().unwrap());
        let (b, _) = expect_ok(
            ws_connect_with(&daemon, Some(&token()), true, local, &[]).await,
            "second",
        );
        let watch = |mut ws: Ws| {
            tokio::spawn(async move {
                let first = tokio::time::timeout(EVENTUALLY, ws.next()).await;
                // Answer the Close, as a client should, and drain.
                let _ = tokio::time::timeout(Duration::from_secs(3), async {
                    while ws.next().await.is_some() {}
                })
                .await;
                first
            })
        };
        let (wa, wb) = (watch(a), watch(b));
        stop(&mut daemon);
        for (name, watcher) in [("first", wa), ("second", wb)] {
            let got = watcher
                .await
                .unwrap()
                .unwrap_or_else(|_| panic!("{name}: nothing within {EVENTUALLY:?}"));
            match got {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Away, "{name}: {frame:?}")
                }
                other => panic!("{name}: expected Close 1001, got {other:?}"),
            }
        }
        let journal = daemon.journal();
        assert_eq!(
            journal.last().map(String::as_str),
            Some("teardown"),
            "{journal:?}"
        );
        let before_teardown = &journal[..journal.len() - 1];
        let (grants, revokes, live) = replay(before_teardown);
        assert_eq!((grants, revokes), (1, 1), "{journal:?}");
        assert!(live.is_empty(), "{journal:?}");
    }

    #[tokio::test]
    async fn go_style_command_line() {
        let daemon = Daemon::start_with_args(
            |dir| {
                vec![
                    "-envelope.listen-address=127.0.0.1:0".into(),
                    "-envelope.token-required=false".into(),
                    "-timeout=30s".into(),
                    "-prometheusx.listen-address=off".into(),
                    format!("--admin-socket={}", dir.join("admin.sock").display()),
                    "--firewall=record".into(),
                    format!("--firewall-journal={}", dir.join("journal").display()),
                ]
            },
            &[],
            false,
        );
        let (ws, response) = expect_ok(ws_connect(&daemon, None, true).await, "token-less");
        assert_eq!(subprotocol_header(&response).as_deref(), Some(SUBPROTOCOL));
        one_grant_then_revoked_on_close(&daemon, ws).await;
        // A token that is present must still be valid.
        let (status, body) = status_and_body(ws_connect(&daemon, Some("garbage"), true).await);
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            daemon.firewall_calls(),
            vec![GRANT.to_owned(), REVOKE.to_owned()]
        );
    }

    #[tokio::test]
    async fn env_token_required_false() {
        let daemon = Daemon::start_with_args(
            |dir| {
                vec![
                    "--listen-address=127.0.0.1:0".into(),
                    "--metrics-address=off".into(),
                    format!("--admin-socket={}", dir.join("admin.sock").display()),
                    "--firewall=record".into(),
                    format!("--firewall-journal={}", dir.join("journal").display()),
                ]
            },
            &[("ENVELOPE_TOKEN_REQUIRED", "false")],
            false,
        );
        let (ws, _) = expect_ok(ws_connect(&daemon, None, false).await, "token-less");
        assert_eq!(daemon.firewall_calls(), vec![GRANT.to_owned()]);
        close(ws).await;
    }

    #[tokio::test]
    async fn env_max_clients() {
        for n in [1usize, 2] {
            let daemon = Daemon::start(EnvelopeCmd {
                env: vec![("ENVELOPE_MAX_CLIENTS".into(), n.to_string())],
                ..EnvelopeCmd::default()
            });
            let mut held = Vec::new();
            for i in 0..n {
                held.push(
                    expect_ok(
                        ws_connect(&daemon, Some(&token()), true).await,
                        &format!("client {i}"),
                    )
                    .0,
                );
            }
            let (status, body) = status_and_body(ws_connect(&daemon, Some(&token()), true).await);
            assert_eq!(
                status,
                503,
                "ENVELOPE_MAX_CLIENTS={n}, client {}: {body}",
                n + 1
            );
            for ws in held {
                close(ws).await;
            }
        }
    }

    /// Args that would start a harmless envelope (record firewall, temp paths).
    fn base_args(dir: &std::path::Path) -> Vec<String> {
        vec![
            "--listen-address=127.0.0.1:0".into(),
            "--metrics-address=off".into(),
            format!("--admin-socket={}", dir.join("admin.sock").display()),
            "--firewall=record".into(),
            format!("--firewall-journal={}", dir.join("journal").display()),
        ]
    }

    fn assert_refuses(args: Vec<String>, mentions: &[&str]) {
        let (status, stderr) = run_expecting_exit(&args);
        assert!(!status.success(), "{args:?} started ({status})\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: want one stderr line, got:\n{stderr}"
        );
        assert!(lines[0].starts_with("envelope:"), "{args:?}: {stderr}");
        assert!(
            mentions.iter().any(|m| lines[0].contains(m)),
            "{args:?}: the line names none of {mentions:?}: {stderr}"
        );
    }

    #[test]
    fn startup_failures_are_one_line_naming_the_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let pub_key = testdata("insecure-test-eddsa.jwk.pub");
        let tokens = |verify: &str| {
            vec![
                format!("--verify-key={verify}"),
                format!("--machine={MACHINE}"),
                format!("--subject={SUBJECT}"),
            ]
        };

        let missing = dir.path().join("no-such-key.jwk.pub");
        let mut args = base_args(dir.path());
        args.extend(tokens(&missing.display().to_string()));
        assert_refuses(args, &["--verify-key", &missing.display().to_string()]);

        let mut args = base_args(dir.path());
        args.extend([
            format!("--verify-key={}", pub_key.display()),
            format!("--subject={SUBJECT}"),
        ]);
        assert_refuses(args, &["--machine"]);

        let copy = dir.path().join("same-kid.jwk.pub");
        std::fs::copy(&pub_key, &copy).unwrap();
        let mut args = base_args(dir.path());
        args.extend(tokens(&pub_key.display().to_string()));
        args.push(format!("--verify-key={}", copy.display()));
        let (_, stderr) = run_expecting_exit(&args);
        assert!(
            stderr.contains("insecure-eddsa"),
            "duplicate kid not named: {stderr}"
        );
        assert_refuses(args, &["--verify-key", "insecure-eddsa"]);

        let no_cert = dir.path().join("no-such-cert.pem");
        let mut args = base_args(dir.path());
        args.extend(tokens(&pub_key.display().to_string()));
        args.push(format!("--cert={}", no_cert.display()));
        args.push(format!(
            "--key={}",
            testdata("insecure-test-server.key").display()
        ));
        assert_refuses(args, &["--cert", &no_cert.display().to_string()]);
    }
}

// ---------------------------------------------------------------- metrics and logs

mod observability {
    use super::*;

    #[tokio::test]
    async fn json_logs_are_one_object_per_line_with_the_request_fields() {
        let daemon = Daemon::start(EnvelopeCmd::default().arg("--log-format=json"));
        let token = token();
        let (ws, _) = expect_ok(ws_connect(&daemon, Some(&token), true).await, "valid");
        close(ws).await;
        daemon
            .eventually("the request line", || async {
                daemon.logs().contains("\"message\":\"request\"")
            })
            .await;
        let logs = daemon.logs();
        for line in logs.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value["level"].is_string(), "{line}");
        }
        let request: serde_json::Value = logs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["message"] == "request")
            .unwrap();
        assert_eq!(request["method"], "GET");
        assert_eq!(request["path"], ACCESS_PATH);
        assert_eq!(request["status"], 101);
        assert!(request["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(request["duration_ms"].is_f64());
        assert!(!logs.contains(&token) && !logs.contains("access_token"));
    }

    #[tokio::test]
    async fn metrics_count_requests_and_logs_never_show_tokens() {
        let daemon = Daemon::start(EnvelopeCmd {
            metrics: true,
            ..EnvelopeCmd::default()
        });
        let token = token();
        let bad = badly_signed_token();
        let (status, _) = status_and_body(ws_connect(&daemon, Some(&bad), true).await);
        assert_eq!(status, 401);
        let (ws, _) = expect_ok(ws_connect(&daemon, Some(&token), true).await, "valid");
        close(ws).await;
        daemon.await_journal(REVOKE, 1).await;

        // The owner updates the gauge and histogram after the revoke: poll them.
        let text = testbed::eventually_async(EVENTUALLY, "metrics after the revoke", || async {
            let text = daemon.metrics().await;
            let settled = metric(&text, "envelope_active_grants") == Some(0.0)
                && metric(&text, "envelope_grant_duration_seconds_count") == Some(1.0);
            if settled {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
        for name in [
            "envelope_requests_total",
            "controller_access_token_requests_total",
            "envelope_active_grants",
            "envelope_grant_duration_seconds",
            "envelope_firewall_operation_duration_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing:\n{text}"
            );
        }
        let build = format!(
            r#"envelope_build_info{{version="{}",revision="{}",rustc="{}"}}"#,
            common::build_info::VERSION,
            common::build_info::REVISION,
            common::build_info::RUSTC
        );
        assert_eq!(metric(&text, &build), Some(1.0), "{text}");
        let started = format!(
            r#"envelope starting version="{}" revision="{}""#,
            common::build_info::VERSION,
            common::build_info::REVISION
        );
        assert!(daemon.logs().contains(&started), "{}", daemon.logs());
        assert_eq!(
            metric(&text, r#"envelope_requests_total{status="401"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, r#"envelope_requests_total{status="101"}"#),
            Some(1.0),
            "{text}"
        );
        let series = |request: &str, reason: &str| {
            format!(
                r#"controller_access_token_requests_total{{path="{ACCESS_PATH}",request="{request}",reason="{reason}"}}"#
            )
        };
        assert_eq!(
            metric(&text, &series("rejected", "bad-signature")),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, &series("accepted", "valid")),
            Some(1.0),
            "{text}"
        );
        let firewall_ops: f64 = text
            .lines()
            .filter(|l| l.starts_with("envelope_firewall_operation_duration_seconds_count"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum();
        assert_eq!(firewall_ops, 2.0, "one grant and one revoke:\n{text}");

        let is_request = |l: &&str| l.split_whitespace().any(|w| w == "request");
        daemon
            .eventually("two request lines", || async {
                daemon.logs().lines().filter(is_request).count() >= 2
            })
            .await;
        let logs = daemon.logs();
        let requests: Vec<&str> = logs.lines().filter(is_request).collect();
        assert_eq!(requests.len(), 2, "one line per request:\n{logs}");
        for (line, status) in requests.iter().zip(["401", "101"]) {
            for field in [
                "peer=127.0.0.1:",
                "method=GET",
                &format!("path={ACCESS_PATH}"),
                &format!("status={status}"),
            ] {
                assert!(line.contains(field), "{field} missing in {line:?}");
            }
        }
        for token in [&token, &bad] {
            assert!(
                !logs.contains(token.as_str()),
                "a token was logged:\n{logs}"
            );
            for part in token.split('.') {
                assert!(!logs.contains(part), "part of a token was logged:\n{logs}");
            }
        }
        assert!(
            !logs.contains("access_token"),
            "the query was logged:\n{logs}"
        );
    }
}

// ---------------------------------------------------------------- single-use tokens

mod single_use {
    use super::*;

    fn with_jti(jti: &str) -> String {
        let mut c = claims(SUBJECT, 120);
        c.jti = Some(jti.to_owned());
        sign(&c)
    }

    #[tokio::test]
    async fn a_token_is_accepted_once_and_a_token_without_jti_not_at_all() {
        let daemon = Daemon::in_process(EnvelopeCmd {
            metrics: true,
            ..EnvelopeCmd::default().arg("--single-use-tokens")
        });
        let once = with_jti("one-use-1");
        let (ws, _) = expect_ok(ws_connect(&daemon, Some(&once), true).await, "first use");
        one_grant_then_revoked_on_close(&daemon, ws).await;
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&once), true).await);
        assert_eq!(status, 401, "replay: {body}");
        assert!(body.contains("already used"), "{body}");
        let (status, body) = status_and_body(ws_connect(&daemon, Some(&token()), true).await);
        assert_eq!(status, 401, "no jti: {body}");
        let metrics = daemon.metrics().await;
        for label in ["replayed", "missing-jti"] {
            assert!(
                metrics.contains(&format!("reason=\"{label}\"")),
                "{label} not counted:\n{metrics}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_that_fails_later_does_not_use_the_token_up() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().arg("--single-use-tokens"));
        let token = with_jti("retry-after-400");
        // A valid token on a request that is no WebSocket upgrade: 400, token kept.
        let request =
            format!("GET {ACCESS_PATH}?access_token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (status, answer) = raw(&daemon, &request).await;
        assert_eq!(status, 400, "{answer}");
        let (ws, _) = expect_ok(ws_connect(&daemon, Some(&token), true).await, "retry");
        one_grant_then_revoked_on_close(&daemon, ws).await;
    }

    #[tokio::test]
    async fn a_full_cache_fails_closed_with_503() {
        let daemon = Daemon::in_process(EnvelopeCmd::default().args(&[
            "--single-use-tokens",
            "--replay-cache-cap=1",
            "--max-clients=4",
        ]));
        let (first, _) = expect_ok(
            ws_connect(&daemon, Some(&with_jti("cap-1")), true).await,
            "first token",
        );
        let (status, body) =
            status_and_body(ws_connect(&daemon, Some(&with_jti("cap-2")), true).await);
        assert_eq!(status, 503, "cache full: {body}");
        drop(first);
    }

    #[tokio::test]
    async fn without_the_flag_a_token_may_be_used_again() {
        let daemon = Daemon::in_process(EnvelopeCmd::default());
        let token = with_jti("reusable");
        for (n, use_) in ["first", "second"].into_iter().enumerate() {
            let (ws, _) = expect_ok(ws_connect(&daemon, Some(&token), true).await, use_);
            close(ws).await;
            daemon.await_journal(REVOKE, n + 1).await;
        }
    }
}
