//! Key rotation without a restart (SPEC §3): a Kubernetes-style symlink swap of a
//! `--verify-key` file, SIGHUP and `envelopectl reload` each reload the whole set;
//! a set failing a load check is refused whole with the old keys kept; held
//! sessions are untouched; tokens of a removed kid are refused from then on.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use crate::support::{
    self, testdata, ws_connect, Daemon, EnvelopeCmd, Tokens, MACHINE, START_BOUND, SUBJECT,
};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use testbed::Issuer;

fn token_from(key: &str) -> String {
    Issuer::from_testdata(key, MACHINE, SUBJECT).token(120)
}

fn status(daemon: &Daemon) -> serde_json::Value {
    let out = daemon.ctl(&["status", "--json"]);
    assert!(out.ok(), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn kids(daemon: &Daemon) -> Vec<String> {
    status(daemon)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The HTTP status a WebSocket upgrade with `token` gets.
async fn answer(daemon: &Daemon, token: &str) -> u16 {
    support::handshake_status(ws_connect(daemon, Some(token), true).await)
}

/// An envelope trusting the test EdDSA key and the keys in `rotating`.
fn options(rotating: &Path) -> EnvelopeCmd {
    EnvelopeCmd {
        metrics: true,
        ..EnvelopeCmd::default()
    }
    .arg(&format!("--verify-key={}", rotating.display()))
    .arg("--max-clients=10")
}

async fn wait_for_metric(daemon: &Daemon, line: &str) {
    daemon
        .eventually(&format!("{line:?} in the metrics"), || async {
            daemon.metrics().await.lines().any(|l| l == line)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swap_reloads_the_keys_and_held_sessions_stay() {
    // A mounted Secret: key.pub -> ..data/key.pub, ..data -> v1 (then v2).
    let dir = tempfile::tempdir().unwrap();
    for (version, source) in [
        ("v1", "insecure-test-es256.jwk.pub"),
        ("v2", "insecure-test-rs256.jwk.pub"),
    ] {
        std::fs::create_dir(dir.path().join(version)).unwrap();
        std::fs::copy(testdata(source), dir.path().join(version).join("key.pub")).unwrap();
    }
    std::os::unix::fs::symlink("v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/key.pub", dir.path().join("key.pub")).unwrap();
    // In-process: the file watch needs no signal.
    let daemon = Daemon::in_process(options(&dir.path().join("key.pub")));

    let es256 = token_from("insecure-test-es256.jwk");
    let rs256 = token_from("insecure-test-rs256.jwk");
    let (mut held, _) = ws_connect(&daemon, Some(&es256), true).await.unwrap();
    assert_eq!(answer(&daemon, &rs256).await, 401);

    std::os::unix::fs::symlink("v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    daemon
        .eventually("the swap to be picked up", || async {
            tokio::task::block_in_place(|| kids(&daemon)).contains(&"insecure-rs256".to_owned())
        })
        .await;

    // The session opened under the old key is still held.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), held.next())
            .await
            .is_err(),
        "the held session got a frame"
    );
    let grants = daemon.ctl(&["list", "--json"]);
    let grants: serde_json::Value = serde_json::from_str(&grants.stdout).unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");

    assert_eq!(kids(&daemon), ["insecure-eddsa", "insecure-rs256"]);
    assert_eq!(
        answer(&daemon, &es256).await,
        401,
        "a removed kid is refused"
    );
    assert_eq!(answer(&daemon, &rs256).await, 101);
    wait_for_metric(
        &daemon,
        "envelope_key_reloads_total{what=\"keys\",trigger=\"file\",result=\"success\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_envelopectl_reload_refuse_a_bad_set_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rotating = dir.path().join("rotating.jwks");
    std::fs::copy(testdata("insecure-test-es256.jwk.pub"), &rotating).unwrap();
    let daemon = Daemon::start(options(&rotating));
    let es256 = token_from("insecure-test-es256.jwk");
    let rs256 = token_from("insecure-test-rs256.jwk");

    daemon.signal("HUP");
    wait_for_metric(
        &daemon,
        "envelope_key_reloads_total{what=\"keys\",trigger=\"sighup\",result=\"success\"} 1",
    )
    .await;

    // RS256 is fine alone, but the set also repeats the EdDSA kid: refused whole.
    let jwks = |members: &[&str]| {
        let keys: Vec<serde_json::Value> = members
            .iter()
            .map(|m| serde_json::from_slice(&std::fs::read(testdata(m)).unwrap()).unwrap())
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    };
    let write = |text: String| {
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &rotating).unwrap();
    };
    write(jwks(&[
        "insecure-test-rs256.jwk.pub",
        "insecure-test-eddsa.jwk.pub",
    ]));
    let refused = daemon.ctl(&["reload"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let stderr = &refused.stderr;
    assert!(
        stderr.contains("reload refused") && stderr.contains("duplicate kid \"insecure-eddsa\""),
        "{stderr}"
    );
    assert_eq!(kids(&daemon), ["insecure-eddsa", "insecure-es256"]);
    assert_eq!(answer(&daemon, &es256).await, 101, "the old keys stay");
    assert_eq!(answer(&daemon, &rs256).await, 401);
    wait_for_metric(
        &daemon,
        "envelope_key_reloads_total{what=\"keys\",trigger=\"admin\",result=\"failure\"} 1",
    )
    .await;
    assert!(daemon.logs().contains("verify keys reload refused"));

    write(jwks(&["insecure-test-rs256.jwk.pub"]));
    let accepted = daemon.ctl(&["reload"]);
    assert!(accepted.ok(), "{accepted:?}");
    let stdout = &accepted.stdout;
    assert!(
        stdout.starts_with("reloaded; keys in force: insecure-eddsa, insecure-rs256\n"),
        "{stdout}"
    );
    assert_eq!(answer(&daemon, &es256).await, 401);
    assert_eq!(answer(&daemon, &rs256).await, 101);

    let shown = daemon.ctl(&["status"]);
    let shown = &shown.stdout;
    assert!(shown.contains("keys loaded:"), "{shown}");
    assert!(
        shown.contains(&format!("insecure-rs256  {}", rotating.display())),
        "{shown}"
    );
}

/// SIGHUP's default action ends a process, so the handler must be in place
/// before the daemon says anything: a service manager's reload that comes
/// during start-up is handled, with or without `--verify-key`, and the
/// daemon goes on to listen and shut down cleanly. The record journal is a
/// FIFO with no reader yet, so the daemon is held inside `bind` (opening the
/// journal at firewall set-up) until the signal has been sent: a handler
/// installed any later than the first log line loses every time.
#[test]
fn sighup_during_start_up_is_handled() {
    for tokens in [false, true] {
        // The recording firewall's journal is DIR/journal.
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        nix::unistd::mkfifo(&journal, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let options = EnvelopeCmd {
            tokens: tokens.then(|| Tokens::test_key(MACHINE, SUBJECT)),
            ..EnvelopeCmd::default()
        };
        let mut process = Daemon::spawn_unready(&options, dir.path());
        let first = process.wait_for_log("firewall backend", START_BOUND);
        first.unwrap_or_else(|e| panic!("{e}\n{}", process.logs()));
        process.signal(Signal::SIGHUP).unwrap();
        // Non-blocking, so this opens even if the daemon is gone; it lets
        // the daemon's open for writing go on.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&journal)
            .unwrap();
        let handled = if tokens {
            "verify keys reloaded trigger=\"sighup\""
        } else {
            "SIGHUP: no --verify-key to reload"
        };
        for line in [handled, "listen-address listening"] {
            if let Err(e) = process.wait_for_log(line, START_BOUND) {
                panic!("--verify-key given: {tokens}: {e}\n{}", process.logs());
            }
        }
        let status = process.terminate(START_BOUND).unwrap();
        assert!(status.success(), "{status:?}\n{}", process.logs());
        let mut recorded = String::new();
        reader.read_to_string(&mut recorded).unwrap();
        assert_eq!(recorded, "setup\nteardown\n");
    }
}

#[test]
fn sighup_without_verify_keys_does_not_stop_the_daemon() {
    // With TLS, SIGHUP and reload load the certificate; without it there is
    // nothing to reload and reload says so.
    for tls in [true, false] {
        let daemon = Daemon::start(EnvelopeCmd {
            tokens: None,
            tls,
            ..EnvelopeCmd::default()
        });
        daemon.signal("HUP");
        daemon.wait_for("the SIGHUP log line", |d| {
            d.logs().contains("SIGHUP: no --verify-key to reload")
        });
        let reload = daemon.ctl(&["reload"]);
        if tls {
            assert!(reload.ok(), "{reload:?}");
            let stdout = &reload.stdout;
            assert!(
                stdout.starts_with("reloaded; no verify keys\ncertificate in force: CN=localhost"),
                "{stdout}"
            );
        } else {
            assert_eq!(reload.code, Some(1), "{reload:?}");
            assert!(reload.stderr.contains("nothing to reload"));
        }
    }
}
