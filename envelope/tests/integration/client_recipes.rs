//! Runs every client recipe in docs/client-protocol.md against a live envelope
//! (TLS with the test CA, recording firewall), so the documentation cannot rot.

use crate::support::{testdata, token, Daemon, EnvelopeCmd, EVENTUALLY};
use std::process::{Command, Output};

/// The body of the first fenced block in `lang` after `heading`.
fn recipe(heading: &str, lang: &str) -> String {
    let doc =
        std::fs::read_to_string(testbed::workspace().join("docs/client-protocol.md")).unwrap();
    let after = &doc[doc.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let fence = format!("```{lang}\n");
    let start = after
        .find(&fence)
        .unwrap_or_else(|| panic!("no {lang} block after {heading}"))
        + fence.len();
    after[start..start + after[start..].find("```").unwrap()].to_owned()
}

fn run(daemon: &Daemon, program: &str, args: &[&str]) -> Output {
    let url = daemon.url(Some(&token())).replace("127.0.0.1", "localhost");
    Command::new(program)
        .args(args)
        .env("URL", url)
        .env("CA", testdata("insecure-test-ca.pem"))
        .env("NODE_EXTRA_CA_CERTS", testdata("insecure-test-ca.pem"))
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for the client recipes: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The session was granted and, once the client left, revoked.
fn granted_then_revoked(daemon: &Daemon) {
    daemon.wait_for("grant and revoke", |d| {
        d.firewall_calls() == ["grant 127.0.0.0/24", "revoke 127.0.0.0/24"]
    });
}

#[test]
fn curl_recipe_gets_101_with_the_subprotocol() {
    let daemon = Daemon::in_process(EnvelopeCmd::default());
    let out = run(&daemon, "bash", &["-c", &recipe("## curl", "sh")]);
    let err = text(&out.stderr);
    assert!(err.contains("< HTTP/1.1 101 Switching Protocols"), "{err}");
    assert!(
        err.contains("< sec-websocket-protocol: net.measurementlab.envelope"),
        "{err}"
    );
    // --max-time ends the hold (exit 28); the envelope sees the connection go.
    assert_eq!(out.status.code(), Some(28), "{err}");
    granted_then_revoked(&daemon);
}

#[test]
fn python_websockets_recipe_is_granted() {
    let daemon = Daemon::in_process(EnvelopeCmd::default());
    let out = run(&daemon, "python3", &["-c", &recipe("## Python", "python")]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        "granted, subprotocol net.measurementlab.envelope\n"
    );
    granted_then_revoked(&daemon);
}

#[test]
fn browser_recipe_is_granted() {
    // Node's WebSocket is the browser's (WHATWG) API; `url` comes from the page in a browser.
    let daemon = Daemon::in_process(EnvelopeCmd::default());
    let script = format!(
        "const url = process.env.URL;\n{}",
        recipe("## Browser", "javascript")
    );
    let out = run(
        &daemon,
        "node",
        &["--experimental-websocket", "--no-warnings", "-e", &script],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("granted, subprotocol net.measurementlab.envelope\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("closed 1005") || stdout.contains("closed 1000"),
        "{stdout}"
    );
    granted_then_revoked(&daemon);
}

#[test]
fn websocat_recipe_holds_until_its_input_closes() {
    let Ok(found) = Command::new("websocat").arg("--version").output() else {
        panic!("websocat is needed for the websocat recipe; .ci/run installs it (cargo install websocat)");
    };
    assert!(found.status.success());
    let daemon = Daemon::in_process(EnvelopeCmd::default());
    // websocat trusts the system store; SSL_CERT_FILE points OpenSSL at the test CA.
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!("exec {}", recipe("## websocat", "sh").trim()),
        ])
        .env(
            "URL",
            daemon.url(Some(&token())).replace("127.0.0.1", "localhost"),
        )
        .env("SSL_CERT_FILE", testdata("insecure-test-ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    daemon.wait_for("the grant", |d| {
        d.firewall_calls() == ["grant 127.0.0.0/24"]
    });
    // Ctrl-D: websocat closes the WebSocket and exits.
    drop(child.stdin.take());
    let status = testbed::eventually(EVENTUALLY, "websocat to exit", || child.try_wait().unwrap());
    assert!(status.success());
    granted_then_revoked(&daemon);
}
