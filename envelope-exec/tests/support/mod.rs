//! Helpers for envelope-exec's tests, over `testbed`'s test kit: a real
//! envelope (`--firewall none`) with envelopectl, tokens from the insecure test
//! keys, and a fake Locate server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testbed::envelope::{EnvelopeCmd, Firewall, Tokens, MACHINE};
use testbed::launcher::Process;
use testbed::{testdata, HttpStub, Issuer};

pub use testbed::{eventually, workspace_bin, EVENTUALLY};

pub const SUBJECT: &str = "wehe";
pub const DEFAULT_KEY: &str = "wss://:4443/v0/envelope/access";

/// A token the envelope accepts.
pub fn token() -> String {
    Issuer::from_testdata("insecure-test-eddsa.jwk", MACHINE, SUBJECT).token(120)
}

/// A well-formed token signed by a key the envelope does not trust (401).
pub fn forged_token() -> String {
    Issuer::from_testdata("insecure-test-es256.jwk", MACHINE, SUBJECT).token(120)
}

/// A real envelope on 127.0.0.1 with the no-op firewall (logging to
/// `envelope.log` in `dir`); killed on drop.
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
        let cmd = EnvelopeCmd {
            firewall: Firewall::None,
            tls,
            tokens: Some(Tokens::test_key(MACHINE, SUBJECT)),
            ..EnvelopeCmd::default()
        }
        .arg("--timeout=60s");
        let log = dir.path().join("envelope.log");
        let (process, addr) = cmd
            .start(&workspace_bin("envelope"), dir.path(), &log)
            .unwrap_or_else(|e| panic!("{e}"));
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

    /// Waits ([`EVENTUALLY`]) until the envelope lists no grant.
    pub fn await_no_grants(&self) {
        eventually(EVENTUALLY, "the grant to end", || self.grants() == 0)
    }
}

/// A fake Locate API (`testbed`'s HTTP stub): answers every request with one
/// fixed status and JSON body, and remembers the request targets.
#[derive(Debug)]
pub struct FakeLocate(HttpStub);

impl FakeLocate {
    pub fn start(status: u16, body: String) -> FakeLocate {
        FakeLocate(HttpStub::start(move |_, _| {
            (status, "application/json", body.clone().into_bytes())
        }))
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
        format!("http://{}/v2/nearest/", self.0.addr)
    }

    /// The request targets (path and query) it was asked for.
    pub fn requests(&self) -> Vec<String> {
        self.0.targets()
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
