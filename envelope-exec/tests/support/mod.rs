//! Helpers for envelope-exec's tests: a real envelope (`--firewall none`) with
//! envelopectl, tokens from the insecure test keys, and a small fake Locate server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Claims, Clock as _, Signer};
use testbed::launcher::{Launch, Process};

pub const MACHINE: &str = "mlab1-test0";
pub const SUBJECT: &str = "wehe";
pub const DEFAULT_KEY: &str = "wss://:4443/v0/envelope/access";

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

/// A workspace binary beside envelope-exec's. Built once per test run, so a
/// `cargo test -p envelope-exec` never drives a stale envelope.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "envelope", "-p", "envelopectl"])
            .status()
            .unwrap();
        assert!(status.success(), "building envelope and envelopectl failed");
    });
    PathBuf::from(env!("CARGO_BIN_EXE_envelope-exec")).with_file_name(name)
}

fn sign_with(key_file: &str, exp_in: i64) -> String {
    let now = common::SystemClock.now_unix();
    let claims = Claims::for_machine("locate", SUBJECT, MACHINE, now, now + exp_in);
    let key = common::jwk::load_private_key(&testdata(key_file)).unwrap();
    Signer::new(key).sign(&claims).unwrap()
}

/// A token the envelope accepts.
pub fn token() -> String {
    sign_with("insecure-test-eddsa.jwk", 120)
}

/// A well-formed token signed by a key the envelope does not trust (401).
pub fn forged_token() -> String {
    sign_with("insecure-test-es256.jwk", 120)
}

/// A real envelope on 127.0.0.1 with the no-op firewall (through `testbed`'s
/// launcher, logging to `envelope.log` in `dir`); killed on drop.
#[derive(Debug)]
pub struct Envelope {
    process: Process,
    pub addr: SocketAddr,
    pub tls: bool,
    pub dir: tempfile::TempDir,
}

impl Envelope {
    pub fn start(tls: bool) -> Envelope {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = Launch::new(workspace_bin("envelope"), dir.path().join("envelope.log"))
            .args([
                "--listen-address=127.0.0.1:0",
                "--firewall=none",
                "--metrics-address=off",
                "--log-format=text",
                "--timeout=60s",
                &format!("--machine={MACHINE}"),
                &format!("--subject={SUBJECT}"),
            ])
            .arg(format!(
                "--verify-key={}",
                testdata("insecure-test-eddsa.jwk.pub").display()
            ))
            .arg(format!(
                "--admin-socket={}",
                dir.path().join("admin.sock").display()
            ))
            .env("RUST_LOG", "info")
            .env_remove("ENVELOPE_ADMIN_SOCKET");
        if tls {
            launch = launch
                .arg(format!(
                    "--cert={}",
                    testdata("insecure-test-server.pem").display()
                ))
                .arg(format!(
                    "--key={}",
                    testdata("insecure-test-server.key").display()
                ));
        }
        let mut process = launch.spawn().expect("spawn envelope");
        let addr = process
            .wait_for_address("listen-address listening", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("the envelope did not listen: {e}\n{}", process.logs()));
        Envelope {
            process,
            addr,
            tls,
            dir,
        }
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The envelope URL with `token`, named `localhost` (the test certificate's name).
    pub fn url(&self, token: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://localhost:{}/v0/envelope/access?access_token={token}",
            self.addr.port()
        )
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(workspace_bin("envelopectl"))
            .arg(format!("--socket={}", self.socket().display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// How many grants `envelopectl list --json` shows.
    pub fn grants(&self) -> usize {
        let out = self.ctl(&["list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array().unwrap().len()
    }
}

/// Polls `check` every 10 ms for up to `within`.
pub fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fake Locate API: answers every request with one fixed status and body and
/// records the request targets (path and query) it was asked for.
#[derive(Debug)]
pub struct FakeLocate {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeLocate {
    pub fn start(status: u16, body: String) -> FakeLocate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push(target);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeLocate { addr, requests }
    }

    /// A v2 answer listing `urls` (one target each) under `key`.
    pub fn with_targets(key: &str, urls: &[String]) -> FakeLocate {
        let results: Vec<serde_json::Value> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                serde_json::json!({
                    "machine": format!("mlab{}-tst01.example.org", i + 1),
                    "location": {"city": "Test", "country": "ZZ"},
                    "urls": {key: url},
                })
            })
            .collect();
        FakeLocate::start(200, serde_json::json!({ "results": results }).to_string())
    }

    /// The `--locate-url` prefix for this server.
    pub fn prefix(&self) -> String {
        format!("http://{}/v2/nearest/", self.addr)
    }
}

/// envelope-exec with a clean environment for its own variables, trusting the
/// insecure test CA only.
pub fn exec() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_envelope-exec"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ENVELOPE_EXEC_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("SSL_CERT_FILE", testdata("insecure-test-ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion (assert_cmd kills it after `within`).
pub fn output_within(cmd: Command, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let output = assert_cmd::Command::from_std(cmd)
        .timeout(within)
        .output()
        .unwrap();
    (output, started.elapsed())
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that envelope-exec said exactly one line, containing every `part`.
pub fn assert_one_line(output: &Output, parts: &[&str]) {
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "not one line: {text:?}");
    assert!(text.starts_with("envelope-exec: "), "{text:?}");
    for part in parts {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
}
