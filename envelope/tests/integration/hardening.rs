//! The holes an adversarial review found (issue 21), each driven against the
//! real binary: one source subnet cannot take the connection cap from the
//! others; a connection that never upgrades cannot live forever; a key file
//! that is a FIFO, a device or huge cannot freeze or bloat the daemon;
//! `--cleanup` refuses beside a live envelope; the admin lock follows no
//! symlink and trusts no shared directory; client-chosen control characters
//! are escaped in the log; and the first frame of any kind ends a session.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Enough descriptors in this test process for a flood of its own.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

fn warn_lines(logs: &str) -> usize {
    logs.lines().filter(|l| l.contains("WARN")).count()
}

async fn keep_alive_get(stream: &mut Box<dyn Stream>) -> std::io::Result<()> {
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: flood\r\n\r\n")
        .await
}

#[tokio::test]
async fn one_subnet_cannot_take_the_connection_cap_from_the_others() {
    raise_fd_limit();
    let daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        metrics: true,
        ..EnvelopeCmd::default().arg("--max-connections=512")
    });
    // One source (127.0.0.0/24) opens 600 keep-alive connections and
    // refreshes them with a request each.
    let flooder: IpAddr = "127.0.0.1".parse().unwrap();
    let mut flood = Vec::new();
    for _ in 0..600 {
        if let Ok(stream) = connect_from(daemon.addr, false, Some(flooder)).await {
            flood.push(stream);
        }
    }
    for _ in 0..2 {
        for stream in &mut flood {
            let _ = keep_alive_get(stream).await;
        }
    }
    // A valid client from another /24 is still served.
    let other: IpAddr = "127.0.1.1".parse().unwrap();
    let began = Instant::now();
    let (mut ws, response) = ws_connect_with(&daemon, Some(&token()), true, Some(other), &[])
        .await
        .expect("a client from another subnet gets its upgrade");
    assert_eq!(response.status(), 101);
    eprintln!("101 for the other subnet after {:?}", began.elapsed());
    ws.close(None).await.unwrap();
    let metrics = daemon.metrics().await;
    let refused: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("envelope_connections_refused_total{")
                && l.contains("listener=\"access\"")
                && l.contains("reason=\"subnet-limit\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no subnet-limit refusals counted:\n{metrics}"));
    assert!(
        refused >= 344.0,
        "600 - 256 connections refused, counted {refused}"
    );
    drop(flood);
    let logs = daemon.logs();
    assert!(
        warn_lines(&logs) <= 24,
        "the flood left {} WARN lines:\n{logs}",
        warn_lines(&logs)
    );
}

#[tokio::test]
async fn a_keep_alive_connection_that_never_upgrades_ends_at_its_lifetime() {
    let daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        ..EnvelopeCmd::default().arg("--connection-lifetime=2s")
    });
    let mut stream = connect(daemon.addr, false).await.unwrap();
    let began = Instant::now();
    let mut answered = 0;
    let mut buf = vec![0u8; 4096];
    // Keep the connection busy (each request restarts the head timeout): only
    // the lifetime can end it.
    let closed = loop {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "still open after 10 s, {answered} requests answered"
        );
        if keep_alive_get(&mut stream).await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => answered += 1,
            Err(_) => {}
        }
    };
    assert!(
        closed && answered >= 2,
        "answered {answered} before the close"
    );
}

/// The daemon's verify key as a file of its own in `dir`.
fn own_key_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("verify.jwk.pub");
    std::fs::copy(testdata("insecure-test-eddsa.jwk.pub"), &file).unwrap();
    file
}

fn replace_with(path: &Path, make: impl FnOnce(&Path)) {
    let _ = std::fs::remove_file(path);
    make(path);
}

#[tokio::test]
async fn a_key_file_that_is_a_fifo_a_device_or_huge_freezes_and_bloats_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let key = own_key_file(keys.path());
    let key_arg = format!("--verify-key={}", key.display());
    let mut daemon = Daemon::start_with_args(
        |dir| {
            vec![
                "--listen-address=127.0.0.1:0".into(),
                format!("--admin-socket={}", dir.join("admin.sock").display()),
                "--metrics-address=off".into(),
                format!("--cert={}", testdata("insecure-test-server.pem").display()),
                format!("--key={}", testdata("insecure-test-server.key").display()),
                key_arg,
                format!("--machine={MACHINE}"),
                format!("--subject={SUBJECT}"),
                "--firewall=record".into(),
                format!("--firewall-journal={}", dir.join("journal").display()),
                "--timeout=4s".into(),
                "--max-clients=4".into(),
            ]
        },
        &[],
        true,
    );
    // Its deadline is --timeout (4 s): the token expires before that.
    let short = sign(&claims(SUBJECT, 2));
    let (mut held, _) = ws_connect(&daemon, Some(&short), true).await.unwrap();
    let rss_before = daemon.rss_kib();

    // A FIFO with no writer: opening it would block forever.
    replace_with(&key, |p| {
        assert!(Command::new("mkfifo").arg(p).status().unwrap().success())
    });
    daemon
        .eventually("the FIFO refused", || async {
            daemon.logs().contains("a FIFO, not a regular file")
        })
        .await;
    // New clients are still served with the keys in force.
    let (mut second, response) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    assert_eq!(response.status(), 101);
    second.close(None).await.unwrap();

    // /dev/zero and a 100 MB file: refused, one line each, memory flat.
    replace_with(&key, |p| {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap()
    });
    daemon
        .eventually("the device refused", || async {
            daemon
                .logs()
                .contains("a character device, not a regular file")
        })
        .await;
    replace_with(&key, |p| {
        std::fs::File::create(p)
            .unwrap()
            .set_len(100 << 20)
            .unwrap()
    });
    daemon
        .eventually("the huge file refused", || async {
            daemon.logs().contains("larger than 1024 KiB")
        })
        .await;
    let logs = daemon.logs();
    assert_eq!(
        logs.matches("a character device, not a regular file")
            .count(),
        1
    );
    assert_eq!(logs.matches("larger than 1024 KiB").count(), 1);
    let rss_after = daemon.rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The held session still ends at its deadline.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        loop {
            match held.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("no Close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the held session is closed at its deadline");
    assert_eq!(
        close.map(|f| f.reason.to_string()).as_deref(),
        Some("deadline")
    );

    // And SIGTERM is acted on at once, with the firewall put back.
    let began = Instant::now();
    let status = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", daemon.logs());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(
        daemon.journal().last().map(String::as_str),
        Some("teardown")
    );
}

/// `envelope --cleanup` in a network namespace of its own (`unshare -n`), so
/// whatever it would remove is never the host's.
fn cleanup_in_empty_netns(socket: &Path) -> (std::process::ExitStatus, String) {
    let output = Command::new("unshare")
        .arg("-n")
        .arg(envelope_bin())
        .arg("--cleanup")
        .arg(format!("--admin-socket={}", socket.display()))
        // A loaded machine can be slow to list a new namespace's tables.
        .arg("--firewall-timeout=30s")
        .env("RUST_LOG", "info")
        .env_remove("ENVELOPE_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cleanup_refuses_beside_a_live_envelope_and_runs_once_it_is_gone() {
    let mut daemon = Daemon::start(EnvelopeCmd::default());
    let (status, stderr) = cleanup_in_empty_netns(&daemon.admin_socket());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("envelope: --cleanup refused: --admin-socket ")
            && stderr.contains("another envelope is running"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(daemon.journal(), ["setup"], "the guard is untouched");
    assert!(daemon.terminate(Duration::from_secs(10)).success());
    let (status, stderr) = cleanup_in_empty_netns(&daemon.admin_socket());
    assert!(status.success(), "{stderr}");
}

/// Starts the envelope on `socket` expecting it to refuse; its one line.
fn refused_start(socket: &Path) -> String {
    let (status, stderr) = run_expecting_exit(&[
        "--token-required=false".into(),
        "--firewall=none".into(),
        "--metrics-address=off".into(),
        "--listen-address=127.0.0.1:0".into(),
        format!("--admin-socket={}", socket.display()),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn the_admin_lock_follows_no_symlink_and_trusts_no_shared_directory() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    // A symlink planted where the lock goes: root must not write through it.
    let target = dir.path().join("planted");
    std::os::unix::fs::symlink(&target, dir.path().join("admin.sock.lock")).unwrap();
    let err = refused_start(&socket);
    assert!(err.contains("a symlink is refused"), "{err}");
    assert!(!target.exists(), "nothing was created through the symlink");
    std::fs::remove_file(dir.path().join("admin.sock.lock")).unwrap();

    // A lock file another user owns.
    std::fs::write(dir.path().join("admin.sock.lock"), "").unwrap();
    nix::unistd::chown(
        &dir.path().join("admin.sock.lock"),
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    let err = refused_start(&socket);
    assert!(err.contains("is not a regular file of this user"), "{err}");
    std::fs::remove_file(dir.path().join("admin.sock.lock")).unwrap();

    // A directory others can write to (as /tmp).
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = refused_start(&shared.join("admin.sock"));
    assert!(
        err.contains(&format!(
            "directory {} is writable by its group or others",
            shared.display()
        )),
        "{err}"
    );
    // One line naming the path, every time.
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn client_chosen_control_characters_are_escaped_in_text_and_json_logs() {
    for format in ["text", "json"] {
        let daemon = Daemon::start(EnvelopeCmd {
            tls: false,
            ..EnvelopeCmd::default().arg(&format!("--log-format={format}"))
        });
        let hostile = "/x\u{9b}31m\u{85}y\u{2028}z\u{2029}w\u{202e}gpj.exe";
        let request = format!("GET {hostile} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(daemon.addr, false, &request).await;
        assert_eq!(status_of(&answer), 404, "{answer}");
        daemon
            .eventually("the request line", || async {
                daemon.logs().contains("gpj.exe")
            })
            .await;
        let logs = daemon.logs();
        for raw in ['\u{9b}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}'] {
            assert!(
                !logs.contains(raw),
                "{format}: {raw:?} reached the log:\n{logs}"
            );
        }
        let escaped = if format == "json" {
            r"/x\\u{9b}31m\\u{85}y\\u{2028}z\\u{2029}w\\u{202e}gpj.exe"
        } else {
            r"/x\u{9b}31m\u{85}y\u{2028}z\u{2029}w\u{202e}gpj.exe"
        };
        assert!(logs.contains(escaped), "{format}:\n{logs}");
    }
}

#[tokio::test]
async fn a_first_non_final_fragment_ends_the_session() {
    let daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        ..EnvelopeCmd::default()
    });
    let (mut ws, _) = ws_connect(&daemon, Some(&token()), true).await.unwrap();
    daemon
        .eventually("the grant", || async {
            daemon
                .firewall_calls()
                .iter()
                .any(|c| c.starts_with("grant "))
        })
        .await;
    // FIN = 0, opcode 1 (text), masked, empty payload: the first fragment of a
    // message that never ends.
    ws.get_mut()
        .write_all(&[0x01, 0x80, 1, 2, 3, 4])
        .await
        .unwrap();
    ws.get_mut().flush().await.unwrap();
    daemon
        .eventually("the revoke", || async {
            daemon
                .firewall_calls()
                .iter()
                .any(|c| c.starts_with("revoke "))
        })
        .await;
    daemon
        .eventually("the session's end", || async {
            daemon.logs().contains("grant.closed")
                && daemon.logs().contains("reason=\"client-sent-data\"")
        })
        .await;
}
