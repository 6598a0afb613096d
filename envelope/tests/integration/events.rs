//! The audit events (SPEC §10, issue 23), each produced by a real action and
//! read back through `envelopectl events --json`: who was let in with which
//! key and token id, who was refused and why, who revoked what; `since` and
//! 410; a follower that falls behind; and that no token ever appears.

use std::process::Command;

use serde_json::Value;
use testbed::{FaultyBins, NetPair, SERVER_V4, SERVICE_PORT};

use crate::firewall_netns::{close, options_with, status_from, LIFETIME};
use crate::support::*;

/// Every event `envelopectl events --json ARGS` prints.
fn events(daemon: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend_from_slice(args);
    daemon
        .ctl(&all)
        .expect_ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// A valid token naming `jti`.
fn token_with_jti(jti: &str) -> String {
    let mut claims = claims(SUBJECT, 120);
    claims.jti = Some(jti.into());
    sign(&claims)
}

#[tokio::test]
async fn who_was_let_in_with_which_key_and_who_revoked_it() {
    let daemon = Daemon::start(EnvelopeCmd::default().arg("--max-clients=4"));
    let token = token_with_jti("jti-opening-7");
    let (_ws, _) = ws_connect(&daemon, Some(&token), true).await.unwrap();
    let expired = {
        let mut claims = claims(SUBJECT, -30);
        claims.jti = Some("jti-too-late".into());
        sign(&claims)
    };
    assert_eq!(
        handshake_status(ws_connect(&daemon, Some(&expired), true).await),
        401
    );
    daemon.ctl(&["revoke", "--all"]).expect_ok();
    daemon
        .eventually("the grant's end", || async {
            !of_type(&events(&daemon, &[]), "grant.closed").is_empty()
        })
        .await;

    let all = events(&daemon, &[]);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let boot = all[0]["boot"].as_str().unwrap();
    assert!(all
        .iter()
        .all(|e| e["boot"] == boot && e["time"].is_string()));

    let opened = of_type(&all, "grant.opened");
    assert_eq!(opened.len(), 1, "{all:#?}");
    assert_eq!(opened[0]["kid"], "insecure-eddsa");
    assert_eq!(opened[0]["jti"], "jti-opening-7");
    assert_eq!(opened[0]["subnet"], "127.0.0.0/24");
    assert_eq!(opened[0]["subject"], SUBJECT);
    let grant = opened[0]["grant"].clone();

    let refused = of_type(&all, "access.refused");
    assert_eq!(refused.len(), 1, "{all:#?}");
    assert_eq!(refused[0]["reason"], "expired");
    assert_eq!(refused[0]["status"], 401);
    assert_eq!(refused[0]["kid"], "insecure-eddsa");
    assert_eq!(
        refused[0]["jti"], "jti-too-late",
        "signed, so its ids are reported"
    );

    let revoked = of_type(&all, "grant.revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["grants"], serde_json::json!([grant]));
    assert_eq!(revoked[0]["target"], "all");
    assert_eq!(revoked[0]["by_uid"], 0, "the revoking user");
    assert!(revoked[0]["by_pid"].as_u64().is_some());

    let closed = of_type(&all, "grant.closed");
    assert_eq!(closed[0]["grant"], grant);
    assert_eq!(closed[0]["reason"], "revoked");
    let admin = of_type(&all, "admin.request");
    assert!(
        admin
            .iter()
            .any(|e| e["method"] == "DELETE" && e["path"] == "/v1/grants" && e["uid"] == 0),
        "{admin:#?}"
    );

    // The one question, in one command: which key let this subnet in, under
    // which token id, and who revoked it.
    let answer = events(
        &daemon,
        &[
            "--type",
            "grant.opened,grant.revoked",
            "--subnet",
            "127.0.0.0/24",
        ],
    );
    assert_eq!(answer.len(), 2, "{answer:#?}");
    assert_eq!(answer[0]["kid"], "insecure-eddsa");
    assert_eq!(answer[1]["by_uid"], 0);

    // No token, and no signature, anywhere.
    let table = daemon.ctl(&["events"]).stdout;
    for secret in [&token, &expired] {
        let signature = secret.rsplit('.').next().unwrap();
        for (what, text) in [
            ("events", serde_json::to_string(&all).unwrap()),
            ("table", table.clone()),
            ("logs", daemon.logs()),
        ] {
            assert!(
                !text.contains(signature),
                "a token's signature in the {what}"
            );
        }
    }
    assert!(table.starts_with("SEQ"), "{table}");
}

#[tokio::test]
async fn reloads_drains_and_the_certificate_are_events_too() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("verify.jwk.pub");
    std::fs::copy(testdata("insecure-test-eddsa.jwk.pub"), &file).unwrap();
    let daemon = Daemon::start(EnvelopeCmd {
        tokens: Some(Tokens {
            verify_key: file.clone(),
            machine: MACHINE.into(),
            subject: SUBJECT.into(),
        }),
        ..EnvelopeCmd::default()
    });
    std::fs::copy(testdata("insecure-test-es256.jwk.pub"), &file).unwrap();
    daemon.ctl(&["reload"]).expect_ok();
    for args in [["drain"], ["resume"]] {
        daemon.ctl(&args).expect_ok();
    }
    let all = events(
        &daemon,
        &[
            "--type",
            "keys.reloaded,certificate.reloaded,drain.started,drain.ended",
        ],
    );
    let keys = of_type(&all, "keys.reloaded");
    let last = keys.last().expect("a keys.reloaded event");
    assert_eq!(last["result"], "success");
    assert_eq!(last["added"], serde_json::json!(["insecure-es256"]));
    assert_eq!(last["removed"], serde_json::json!(["insecure-eddsa"]));
    let cert = of_type(&all, "certificate.reloaded");
    assert_eq!(cert.last().unwrap()["subject"], "CN=localhost");
    assert_eq!(of_type(&all, "drain.started")[0]["by"], "operator");
    assert_eq!(of_type(&all, "drain.ended")[0]["how"], "resumed");
    assert!(
        all.iter().all(|e| e["type"] != "admin.request"),
        "filtered by type"
    );
}

#[tokio::test]
async fn since_reads_on_and_a_since_older_than_the_buffer_is_410() {
    let daemon = Daemon::start(EnvelopeCmd::default().arg("--events-buffer=5"));
    for _ in 0..8 {
        let _ = daemon.ctl(&["status"]);
    }
    // Held now: the last five (each status call is one admin.request).
    let held = events(&daemon, &[]);
    assert_eq!(held.len(), 5, "{held:#?}");
    let oldest = held[0]["seq"].as_u64().unwrap();
    let after = events(&daemon, &["--since", &(oldest + 2).to_string()]);
    assert_eq!(after[0]["seq"].as_u64().unwrap(), oldest + 3);
    let refused = daemon.ctl(&["events", "--since", "1"]);
    assert!(!refused.ok());
    // The reads above are admin requests too, so the oldest held has moved on.
    let said: Option<u64> = refused
        .stderr
        .split("the oldest held is ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok());
    assert!(said.is_some_and(|said| said > oldest), "{}", refused.stderr);
    let raw = raw_unix_get(&daemon.admin_socket(), "/v1/events?since=1").await;
    assert!(raw.starts_with("HTTP/1.1 410"), "{raw}");
    assert!(raw.contains("\"oldest_seq\":"), "{raw}");
}

/// A follower that reads nothing falls behind the buffer and is let go with
/// `stream.lost`, while the envelope goes on.
#[tokio::test]
async fn a_follower_that_falls_behind_reads_stream_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let daemon = Daemon::start(EnvelopeCmd::default().arg("--events-buffer=4"));
    let mut stalled = tokio::net::UnixStream::connect(daemon.admin_socket())
        .await
        .unwrap();
    stalled
        .write_all(b"GET /v1/events?follow=1&since=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The follower is registered; now the envelope moves on without it:
    // enough events (one per admin request) to fill its queue and its
    // socket's buffers, so that the buffer drops what it has not read.
    daemon
        .eventually("the follower's request", || async {
            daemon.logs().contains("path=/v1/events")
        })
        .await;
    // About 250 bytes an event: 8,000 are well past the socket's buffers.
    for _ in 0..8000 {
        raw_unix_get(&daemon.admin_socket(), "/v1/status").await;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(EVENTUALLY, async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the lost follower is let go");
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("{\"type\":\"stream.lost\",\"next\":"),
        "{text}"
    );
    // And the envelope is fine.
    daemon.ctl(&["status"]).expect_ok();
}

async fn raw_unix_get(socket: &std::path::Path, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(EVENTUALLY, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn envelopectl_events_follow_prints_events_as_they_come() {
    let daemon = Daemon::start(EnvelopeCmd::default());
    let mut follower = tokio::process::Command::new(envelopectl_bin())
        .arg(format!("--socket={}", daemon.admin_socket().display()))
        .args(["events", "-f", "--json", "--type", "grant.opened"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap());
    // The follower connects first; the grant comes after.
    daemon
        .eventually("the follower's request", || async {
            daemon.logs().contains("path=/v1/events")
        })
        .await;
    let (_ws, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        EVENTUALLY,
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
    )
    .await
    .expect("a line while following")
    .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "grant.opened", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_firewall_change_and_its_recovery_are_events() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let bins = FaultyBins::new();
    let daemon = Daemon::start(options_with(
        &ns,
        "iptables-restore",
        &[
            &format!("--iptables-dir={}", bins.path()),
            "--firewall-timeout=5s",
        ],
    ));
    bins.set(Some("fail"));
    assert_eq!(status_from(&ns, None, SERVER_V4).await.0, 500);
    bins.set(None);
    let (status, ws) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 101);
    close(ws.unwrap()).await;
    let firewall = events(&daemon, &["--type", "firewall.failed,firewall.recovered"]);
    assert_eq!(firewall.len(), 2, "{firewall:#?}");
    assert_eq!(firewall[0]["type"], "firewall.failed");
    assert_eq!(firewall[0]["operation"], "grant");
    assert_eq!(firewall[0]["subnets"], serde_json::json!(["192.0.2.0/24"]));
    assert!(
        firewall[0]["error"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "the cause chain: {}",
        firewall[0]["error"]
    );
    assert_eq!(firewall[1]["type"], "firewall.recovered");
    assert_eq!(firewall[1]["subnets"], serde_json::json!(["192.0.2.0/24"]));
    let refused = events(&daemon, &["--type", "access.refused"]);
    assert_eq!(refused[0]["reason"], "firewall");
    assert_eq!(refused[0]["status"], 500);
}

/// The documented fail2ban filter, applied with fail2ban's own `<HOST>`
/// expansion (Python `re`, as fail2ban does) to the envelope's real log lines.
#[tokio::test]
async fn the_fail2ban_filter_bans_forged_tokens_and_spares_expired_ones() {
    let daemon = Daemon::start(EnvelopeCmd::default());
    let forged = {
        let token = token();
        let (rest, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &signature[1..])
    };
    let expired = sign(&claims(SUBJECT, -30));
    let from = |last: u8| Some(std::net::IpAddr::from([127, 0, last, 1]));
    for (token, local) in [(&forged, from(10)), (&expired, from(20))] {
        let refused = ws_connect_with(&daemon, Some(token), true, local, &[]).await;
        assert_eq!(handshake_status(refused), 401);
    }
    daemon
        .eventually("both refusals logged", || async {
            daemon.logs().matches("access.refused").count() >= 2
        })
        .await;
    let log = daemon.dir.path().join("envelope.log");
    let filter = testbed::workspace().join("docs/deploy/fail2ban/envelope.conf");
    let script = r#"
import re, sys
conf = open(sys.argv[1]).read()
failregex = re.search(r'^failregex = (.*)$', conf, re.M).group(1)
# fail2ban's <HOST> (config/filter.d/common.conf, "host" part of <ADDR>).
host = r'(?:::f{4,6}:)?(?P<host>[\w\-.^_]*\w|\[?[0-9a-fA-F:]+\]?)'
pattern = re.compile(failregex.replace('<HOST>', host))
for line in open(sys.argv[2]):
    m = pattern.search(line)
    if m:
        print(m.group('host'))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&filter)
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let banned = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        banned.lines().collect::<Vec<_>>(),
        ["127.0.10.1"],
        "the forged token's source, not the expired one's:\n{}",
        daemon.logs()
    );
}
