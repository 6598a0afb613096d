//! Fleet operations (SPEC §9, issue 22), against the real binary: a SIGTERM
//! with `--drain-timeout` makes the envelope a lame duck that keeps held
//! grants in the kernel until they end (or the timeout, or a second signal);
//! `envelopectl drain`/`resume`; `/health`; a certificate renewed through a
//! Kubernetes-style symlink swap reaches new handshakes while held sessions
//! stay; and which kids are loaded and used shows in the metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use testbed::{NetPair, ENVELOPE_PORT, SERVER_V4, SERVICE_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::firewall_netns::{addr, close, options, session, LIFETIME};
use crate::support::{self, *};

/// A raw upgrade request over TLS from the client namespace: the whole answer.
async fn refusal_from(ns: &NetPair, server_ip: &str) -> String {
    let tcp = ns
        .connect_from_client(None, addr(server_ip, ENVELOPE_PORT))
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = support::tls_connector().connect(name, tcp).await.unwrap();
    let request = upgrade_request(
        "GET",
        &format!("{ACCESS_PATH}?access_token={}", token()),
        "",
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /health` on the metrics listener inside the server namespace.
fn health(ns: &NetPair, metrics: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = ns.connect_in_server(metrics).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn next_close(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                _ => break None,
            }
        }
    })
    .await
    .expect("a Close frame within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_drain_timeout_keeps_held_grants_until_they_end() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let before = ns.save_all();
    let mut daemon = Daemon::start(EnvelopeCmd {
        metrics: true,
        ..options(&ns, &["--drain-timeout=60s", "--max-clients=4"])
    });
    let metrics = daemon.metrics_addr.unwrap();
    assert!(
        health(&ns, metrics).ends_with("\r\n\r\nok\n"),
        "{}",
        health(&ns, metrics)
    );
    let held = session(&ns, SERVER_V4, &daemon).await;
    let service = addr(SERVER_V4, SERVICE_PORT);
    assert!(ns.client_can_reach(service));

    daemon.signal("TERM");
    daemon
        .eventually("the drain", || async {
            daemon.logs().contains("SIGTERM: draining")
        })
        .await;
    // A new client is told to go elsewhere, in words a program can read.
    let refusal = refusal_from(&ns, SERVER_V4).await;
    assert_eq!(status_of(&refusal), 503, "{refusal}");
    assert_eq!(
        header(&refusal, "content-type"),
        Some("application/problem+json")
    );
    let wait: u64 = header(&refusal, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(
        refusal.contains(r#""type":"urn:envelope:problem:draining""#),
        "{refusal}"
    );
    assert!(health(&ns, metrics).contains("503 Service Unavailable"));
    assert!(health(&ns, metrics).ends_with("\r\n\r\nstopping\n"));

    // The held client keeps its grant in the kernel and its service.
    assert_eq!(ns.members("envelope-v4"), ["192.0.2.0/24"]);
    assert!(ns.client_can_reach(service), "the held grant still passes");
    assert!(daemon
        .wait_exit_within(Duration::from_millis(500))
        .is_none());

    // When it leaves, the envelope stops by itself, leaving the ruleset as found.
    close(held).await;
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", daemon.logs());
    assert!(daemon.logs().contains("drained: the last session ended"));
    assert_eq!(ns.save_all(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_closes_what_is_left_with_1001() {
    let ns = NetPair::new();
    let before = ns.save_all();
    let mut daemon = Daemon::start(options(&ns, &["--drain-timeout=2s"]));
    let mut held = session(&ns, SERVER_V4, &daemon).await;
    let began = Instant::now();
    daemon.signal("TERM");
    let close = next_close(&mut held, Duration::from_secs(20)).await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "closed before the timeout"
    );
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", daemon.logs());
    assert!(daemon.logs().contains("drain timeout"));
    assert_eq!(ns.save_all(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_a_drain_stops_at_once() {
    let ns = NetPair::new();
    let before = ns.save_all();
    let mut daemon = Daemon::start(options(&ns, &["--drain-timeout=10m"]));
    let mut held = session(&ns, SERVER_V4, &daemon).await;
    daemon.signal("TERM");
    daemon
        .eventually("the drain", || async {
            daemon.logs().contains("SIGTERM: draining")
        })
        .await;
    daemon.signal("TERM");
    let close = next_close(&mut held, Duration::from_secs(20)).await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", daemon.logs());
    assert_eq!(ns.save_all(), before);
}

#[tokio::test]
async fn envelopectl_drain_and_resume_with_a_live_client_in_between() {
    let daemon = Daemon::start(EnvelopeCmd {
        metrics: true,
        ..EnvelopeCmd::default().arg("--max-clients=4")
    });
    let (mut held, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    let out = daemon.ctl(&["drain"]).expect_ok();
    assert_eq!(out.trim(), "draining: no new clients (1 session held)");
    assert_eq!(
        handshake_status(ws_connect(&daemon, Some(&token()), true).await),
        503
    );
    let metrics = daemon.metrics().await;
    assert!(metrics.contains("\nlame_duck_experiment 1\n"), "{metrics}");
    assert!(metrics.contains("\nenvelope_lame_duck 1\n"), "{metrics}");
    let status = daemon.ctl(&["status"]).stdout;
    assert!(
        status.contains("state:            draining: no new clients (1 session held)"),
        "{status}"
    );
    assert_eq!(
        daemon.firewall_calls().len(),
        1,
        "the held grant stays: {:?}",
        daemon.journal()
    );

    let out = daemon.ctl(&["resume"]).expect_ok();
    assert_eq!(out.trim(), "serving");
    let (mut second, response) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(daemon
        .metrics()
        .await
        .contains("\nlame_duck_experiment 0\n"));
    held.close(None).await.unwrap();
    second.close(None).await.unwrap();
}

/// Writes a Kubernetes-style Secret volume into `dir`: `..data` is a symlink
/// to a timestamped directory holding the pair, and `tls.crt`/`tls.key` are
/// symlinks through `..data`. Renewing swaps `..data` atomically.
fn secret_volume(dir: &Path, generation: &str, cert: &str, key: &str) {
    let data = dir.join(generation);
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(testdata(cert), data.join("tls.crt")).unwrap();
    std::fs::copy(testdata(key), data.join("tls.key")).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if !dir.join(name).exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

/// The serial of the certificate a new TLS handshake is shown, in hex.
async fn served_serial(addr: SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = support::tls_connector().connect(name, tcp).await.unwrap();
    let (_, session) = tls.get_ref();
    let leaf = &session.peer_certificates().unwrap()[0];
    x509_serial(leaf.as_ref())
}

fn x509_serial(der: &[u8]) -> String {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    cert.tbs_certificate
        .serial_number
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem_serial(name: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(testdata(name)).unwrap();
    x509_serial(der.as_ref())
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_handshakes_and_held_sessions_stay() {
    let secret = tempfile::tempdir().unwrap();
    secret_volume(
        secret.path(),
        "..2026_12_01",
        "insecure-test-server.pem",
        "insecure-test-server.key",
    );
    let (cert, key) = (secret.path().join("tls.crt"), secret.path().join("tls.key"));
    let mut daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        metrics: true,
        ..EnvelopeCmd::default().args(&[
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
            "--max-clients=4",
        ])
    });
    // The certificate is ours, not the options' default: the scheme is wss.
    daemon.tls = true;
    let old = pem_serial("insecure-test-server.pem");
    let new = pem_serial("insecure-test-server-renewed.pem");
    assert_eq!(served_serial(daemon.addr).await, old);
    let (mut held, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();

    secret_volume(
        secret.path(),
        "..2026_12_06",
        "insecure-test-server-renewed.pem",
        "insecure-test-server-renewed.key",
    );
    daemon
        .eventually("the renewed certificate", || async {
            daemon.logs().contains("certificate reloaded")
        })
        .await;
    assert_eq!(served_serial(daemon.addr).await, new);
    let status = daemon.ctl(&["status"]).expect_ok();
    assert!(status.contains(&format!("serial {new}")), "{status}");
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(
            r#"envelope_key_reloads_total{what="certificate",trigger="file",result="success"} 1"#
        ),
        "{metrics}"
    );
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("envelope_tls_certificate_expiry_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    assert!(
        expiry > 4_000_000_000,
        "notAfter 2126 as a Unix time, got {expiry}"
    );

    // A pair that does not match is refused; the renewed one keeps serving.
    std::fs::copy(
        testdata("insecure-test-server.key"),
        secret.path().join("..2026_12_06/tls.key"),
    )
    .unwrap();
    daemon
        .eventually("the refused pair", || async {
            daemon.logs().contains("certificate reload refused")
        })
        .await;
    assert!(
        daemon.logs().contains("does not match --cert"),
        "{}",
        daemon.logs()
    );
    assert_eq!(served_serial(daemon.addr).await, new);

    // The session held across both stays up: a ping is not sent (any frame
    // ends a session); it is still open if the server has not closed it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), held.next())
            .await
            .is_err(),
        "the held session was closed"
    );
    assert_eq!(daemon.firewall_calls().len(), 1, "{:?}", daemon.journal());
    held.close(None).await.unwrap();
}

#[tokio::test]
async fn the_metrics_say_which_kids_are_loaded_and_used() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("verify.jwks");
    std::fs::copy(testdata("insecure-test-eddsa.jwk.pub"), &file).unwrap();
    let key_arg = format!("--verify-key={}", file.display());
    let daemon = Daemon::start(EnvelopeCmd {
        tokens: None,
        metrics: true,
        ..EnvelopeCmd::default().args(&[
            &key_arg,
            &format!("--machine={MACHINE}"),
            &format!("--subject={SUBJECT}"),
        ])
    });
    // tokens: false sets --token-required=false; a token given must still verify.
    let (mut ws, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    ws.close(None).await.unwrap();
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(r#"envelope_verify_key_info{kid="insecure-eddsa",alg="EdDSA"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"envelope_tokens_accepted_total{kid="insecure-eddsa"} 1"#),
        "{metrics}"
    );

    // Rotate: the ES256 key replaces it; a token for the old kid is now unknown.
    std::fs::copy(testdata("insecure-test-es256.jwk.pub"), &file).unwrap();
    daemon
        .eventually("the reload", || async {
            daemon.logs().contains("verify keys reloaded")
        })
        .await;
    assert_eq!(
        handshake_status(ws_connect(&daemon, Some(&token()), true).await),
        401
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains(r#"envelope_verify_key_info{kid="insecure-es256",alg="ES256"} 1"#)
            && !metrics.contains(r#"envelope_verify_key_info{kid="insecure-eddsa""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="unknown-kid"} 1"#), "{metrics}");
}

/// Runs one documented shell line with `envelopectl` and `envelope` on PATH and
/// the daemon's admin socket in the environment, in `netns` when given.
fn recipe_line(line: &str, daemon: &Daemon, netns: Option<&str>) -> (bool, String) {
    let bin_dir = envelope_bin().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sh", "-c", line]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", line]);
            c
        }
    };
    let output = command
        .env("PATH", path)
        .env("ENVELOPE_ADMIN_SOCKET", daemon.admin_socket())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolling_restart_recipe_loses_no_held_session() {
    let recipe = doc_commands("docs/operations.md", Some("## Rolling restart"));
    let [drain, health_check, status, restart] = recipe.as_slice() else {
        panic!("docs/operations.md Rolling restart: expected four commands, found {recipe:#?}");
    };
    assert_eq!(restart, "systemctl restart envelope");
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let before = ns.save_all();
    let start = || {
        Daemon::start(EnvelopeCmd {
            metrics: true,
            ..options(&ns, &["--drain-timeout=2m", "--max-clients=4"])
        })
    };
    let mut daemon = start();
    let held = session(&ns, SERVER_V4, &daemon).await;
    let service = addr(SERVER_V4, SERVICE_PORT);

    let (ok, out) = recipe_line(drain, &daemon, Some(&ns.server));
    assert!(
        ok && out.contains("draining: no new clients (1 session held)"),
        "{out}"
    );
    let metrics = daemon.metrics_addr.unwrap().to_string();
    let (ok, out) = recipe_line(
        &health_check.replace("localhost:9990", &metrics),
        &daemon,
        Some(&ns.server),
    );
    assert!(ok && out.trim() == "draining", "{out}");
    let (ok, out) = recipe_line(status, &daemon, Some(&ns.server));
    assert!(ok && out.contains("state:            draining"), "{out}");
    assert_eq!(refusal_status(&ns).await, 503);

    // `systemctl restart` sends SIGTERM: the held session keeps its grant.
    daemon.signal("TERM");
    daemon
        .eventually("the drain", || async {
            daemon.logs().contains("SIGTERM: draining")
        })
        .await;
    assert!(
        ns.client_can_reach(service),
        "the held session lost its grant"
    );
    close(held).await;
    assert!(
        daemon.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(ns.save_all(), before);

    // The restarted envelope takes clients again.
    let mut restarted = start();
    let fresh = session(&ns, SERVER_V4, &restarted).await;
    close(fresh).await;
    assert!(restarted.terminate(Duration::from_secs(20)).success());
    assert_eq!(ns.save_all(), before);
}

async fn refusal_status(ns: &NetPair) -> u16 {
    status_of(&refusal_from(ns, SERVER_V4).await)
}

#[tokio::test]
async fn the_certificate_renewal_recipe_needs_no_restart() {
    let recipe = doc_commands("docs/operations.md", Some("## Certificate renewal"));
    assert_eq!(recipe.len(), 4, "{recipe:#?}");
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(
        testdata("insecure-test-server.pem"),
        etc.path().join("tls.crt"),
    )
    .unwrap();
    std::fs::copy(
        testdata("insecure-test-server.key"),
        etc.path().join("tls.key"),
    )
    .unwrap();
    let mut daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        ..EnvelopeCmd::default().args(&[
            &format!("--cert={}", etc.path().join("tls.crt").display()),
            &format!("--key={}", etc.path().join("tls.key").display()),
        ])
    });
    daemon.tls = true;
    let (mut held, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    let renewed = pem_serial("insecure-test-server-renewed.pem");
    let mut outputs = String::new();
    for line in &recipe {
        let line = line
            .replace("/etc/envelope", &etc.path().display().to_string())
            .replace(
                "renewed.key",
                &testdata("insecure-test-server-renewed.key")
                    .display()
                    .to_string(),
            )
            .replace(
                "renewed.crt",
                &testdata("insecure-test-server-renewed.pem")
                    .display()
                    .to_string(),
            );
        let (ok, out) = recipe_line(&line, &daemon, None);
        assert!(ok, "{line}: {out}");
        outputs.push_str(&out);
    }
    assert!(
        outputs.contains(&format!(
            "certificate in force: CN=localhost  serial {renewed}"
        )),
        "{outputs}"
    );
    assert!(
        outputs.contains(&format!("certificate:      CN=localhost  serial {renewed}")),
        "{outputs}"
    );
    assert_eq!(served_serial(daemon.addr).await, renewed);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), held.next())
            .await
            .is_err(),
        "the held session was closed"
    );
    held.close(None).await.unwrap();
}
