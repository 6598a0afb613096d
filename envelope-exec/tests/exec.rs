//! envelope-exec end to end: a fake Locate server, a real envelope (no-op
//! firewall) and envelopectl; the command sees the variables while the session is
//! held, its exit code passes through, a revoke or the timeout stops it, refusing
//! targets are skipped, and Locate failures are one line and exit 1.

mod support;

use std::time::Duration;

use support::{
    assert_one_line, eventually, exec, forged_token, output_within, stderr, token, Envelope,
    FakeLocate, DEFAULT_KEY,
};

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn the_command_sees_both_variables_while_the_session_is_held_and_its_code_passes_through() {
    let envelope = Envelope::start(true);
    let url = envelope.url(&token());
    let locate = FakeLocate::with_targets(DEFAULT_KEY, std::slice::from_ref(&url));
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = exec();
    // The Go tool's single-dash spellings.
    cmd.arg(format!("-locate-url={}", locate.prefix()))
        .args(["-service", "ndt/ndt7", "-timeout=20s"])
        .args([
            "sh",
            "-c",
            r#"printf '%s\n%s\n' "$SERVICE_URL" "$SERVICE_HOSTNAME" > "$OUT/vars"
               "$CTL" --socket "$SOCK" list --json > "$OUT/grants"
               exit 7"#,
        ])
        .env("OUT", dir.path())
        .env("CTL", support::workspace_bin("envelopectl"))
        .env("SOCK", envelope.socket());
    let (output, _) = output_within(cmd, BOUND);

    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    let vars = std::fs::read_to_string(dir.path().join("vars")).unwrap();
    assert_eq!(vars, format!("{url}\nlocalhost\n"));
    let grants: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("grants")).unwrap()).unwrap();
    assert_eq!(
        grants.as_array().unwrap().len(),
        1,
        "the session is held while the command runs: {grants}"
    );
    assert_eq!(locate.requests(), ["/v2/nearest/ndt/ndt7".to_owned()]);
    // Closing the session after the command ends the grant.
    envelope.await_no_grants();
}

#[test]
fn environment_variables_configure_it_and_refusing_targets_are_skipped() {
    let envelope = Envelope::start(false);
    let good = envelope.url(&token());
    let key = "ws://:8880/v0/envelope/access";
    let locate = FakeLocate::start(
        200,
        serde_json::json!({"results": [
            {"machine": "no-envelope", "urls": {"wss://:443/ndt/v7/download": "wss://x/"}},
            {"machine": "forged", "urls": {key: envelope.url(&forged_token())}},
            {"machine": "good", "urls": {key: good}},
        ]})
        .to_string(),
    );

    let mut cmd = exec();
    cmd.env("ENVELOPE_EXEC_LOCATE_URL", locate.prefix())
        .env("ENVELOPE_EXEC_SERVICE", "wehe/replay")
        .env("ENVELOPE_EXEC_ENVELOPE_KEY", key)
        .env("ENVELOPE_EXEC_TIMEOUT", "20s")
        .env("WANT", &good)
        .args(["sh", "-c", r#"test "$SERVICE_URL" = "$WANT""#]);
    let (output, _) = output_within(cmd, BOUND);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(locate.requests(), ["/v2/nearest/wehe/replay".to_owned()]);
    assert!(
        envelope.logs().contains("status=401"),
        "the forged target was tried first:\n{}",
        envelope.logs()
    );
}

#[test]
fn a_revoke_stops_the_command_and_exits_non_zero_with_a_message() {
    let envelope = Envelope::start(true);
    let locate = FakeLocate::with_targets(DEFAULT_KEY, &[envelope.url(&token())]);
    let dir = tempfile::tempdir().unwrap();

    let cmd = command_until_term(&locate, dir.path());
    let ready = dir.path().join("ready");
    let revoker = std::thread::spawn({
        let socket = envelope.socket();
        let ctl = support::workspace_bin("envelopectl");
        move || {
            eventually(BOUND, "the command to start", || ready.exists());
            std::process::Command::new(ctl)
                .arg(format!("--socket={}", socket.display()))
                .args(["revoke", "--all"])
                .output()
                .unwrap()
        }
    });
    let (output, _) = output_within(cmd, BOUND);
    let revoked = revoker.join().unwrap();
    assert!(revoked.status.success(), "{revoked:?}");

    assert_eq!(output.status.code(), Some(1));
    assert_one_line(&output, &["1008", "revoked", "the command was stopped"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("term")).unwrap(),
        "TERM\n",
        "the command got SIGTERM"
    );
}

#[test]
fn the_timeout_stops_a_command_that_ignores_sigterm_with_sigkill() {
    let envelope = Envelope::start(true);
    let locate = FakeLocate::with_targets(DEFAULT_KEY, &[envelope.url(&token())]);

    let mut cmd = exec();
    cmd.arg(format!("--locate-url={}", locate.prefix()))
        .args(["--timeout=2s", "--grace-period=1s"])
        .args(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]);
    let (output, elapsed) = output_within(cmd, BOUND);

    assert_eq!(output.status.code(), Some(1));
    assert_one_line(&output, &["timed out after 2s while running the command"]);
    assert!(
        elapsed >= Duration::from_secs(3),
        "the command had its grace period: {elapsed:?}"
    );
    envelope.await_no_grants();
}

#[test]
fn when_every_envelope_refuses_it_says_so_in_one_line_without_the_tokens() {
    let envelope = Envelope::start(true);
    let forged = forged_token();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let locate = FakeLocate::with_targets(
        DEFAULT_KEY,
        &[
            envelope.url(&forged),
            format!("wss://localhost:{closed_port}/v0/envelope/access?access_token={forged}"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = exec();
    cmd.arg(format!("--locate-url={}", locate.prefix()))
        .args(["touch", &dir.path().join("ran").display().to_string()]);
    let (output, _) = output_within(cmd, BOUND);

    assert_eq!(output.status.code(), Some(1));
    assert_one_line(
        &output,
        &[
            "no envelope accepted",
            "401",
            &format!("localhost:{closed_port}"),
        ],
    );
    assert!(!stderr(&output).contains(&forged), "no token in messages");
    assert!(!dir.path().join("ran").exists(), "the command never ran");
}

#[test]
fn locate_errors_and_empty_answers_are_one_line_and_exit_1() {
    let cases = [
        (
            503,
            r#"{"error":{"type":"?nearest=failed","title":"Failed to lookup nearest machines","status":503,"detail":"no\nservers"}}"#,
            vec![
                "Locate refused the request for wehe/replay",
                "Failed to lookup nearest machines",
                "503",
                "no servers",
            ],
        ),
        (
            200,
            r#"{"results":[]}"#,
            vec!["Locate returned no targets for wehe/replay"],
        ),
        (
            200,
            r#"{"results":null}"#,
            vec!["Locate returned no targets"],
        ),
        (500, "<html>oops</html>", vec!["answered 500"]),
        (200, "not json", vec!["not a v2 result"]),
    ];
    for (status, body, parts) in cases {
        let locate = FakeLocate::start(status, body.to_owned());
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = exec();
        cmd.arg(format!("--locate-url={}", locate.prefix()))
            .args(["touch", &dir.path().join("ran").display().to_string()]);
        let (output, _) = output_within(cmd, BOUND);
        assert_eq!(output.status.code(), Some(1), "{body}");
        assert_one_line(&output, &parts);
        assert!(!dir.path().join("ran").exists(), "the command never ran");
    }

    // Nobody listening at the Locate URL.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut cmd = exec();
    cmd.arg(format!(
        "--locate-url=http://127.0.0.1:{closed_port}/v2/nearest/"
    ))
    .arg("true");
    let (output, _) = output_within(cmd, BOUND);
    assert_eq!(output.status.code(), Some(1));
    assert_one_line(&output, &["cannot reach Locate"]);
}

#[test]
fn a_command_that_cannot_run_exits_127_and_usage_errors_exit_2() {
    let envelope = Envelope::start(true);
    let locate = FakeLocate::with_targets(DEFAULT_KEY, &[envelope.url(&token())]);
    let mut cmd = exec();
    cmd.arg(format!("--locate-url={}", locate.prefix()))
        .arg("/nonexistent/command");
    let (output, _) = output_within(cmd, BOUND);
    assert_eq!(output.status.code(), Some(127));
    assert_one_line(&output, &["cannot run", "/nonexistent/command"]);
    envelope.await_no_grants();

    for args in [&[][..], &["-timeout=5s"], &["--timeout=soon", "true"]] {
        let mut cmd = exec();
        cmd.args(args);
        let (output, _) = output_within(cmd, BOUND);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let mut cmd = exec();
    cmd.args(["--locate-url=ftp://example.org/", "true"]);
    let (output, _) = output_within(cmd, BOUND);
    assert_eq!(output.status.code(), Some(2));
    assert_one_line(&output, &["--locate-url"]);
}

#[test]
fn sigterm_to_envelope_exec_is_passed_on_and_the_session_closed() {
    let envelope = Envelope::start(true);
    let locate = FakeLocate::with_targets(DEFAULT_KEY, &[envelope.url(&token())]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command_until_term(&locate, dir.path());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    eventually(BOUND, "the command to start", || {
        dir.path().join("ready").exists()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually(BOUND, "envelope-exec to exit", || {
        child.try_wait().unwrap().is_some()
    });
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "128 + SIGTERM");
    assert_one_line(&output, &["stopped the command on SIGTERM"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("term")).unwrap(),
        "TERM\n"
    );
    envelope.await_no_grants();
}

/// `envelope-exec` running a shell that touches `OUT/ready` once it runs,
/// then waits until SIGTERM, which it records in `OUT/term`.
fn command_until_term(locate: &FakeLocate, out: &std::path::Path) -> std::process::Command {
    let mut cmd = exec();
    cmd.arg(format!("--locate-url={}", locate.prefix()))
        .args([
            "sh",
            "-c",
            r#"exec 2>/dev/null # (sh's own "Terminated" notice)
               trap 'echo TERM > "$OUT/term"; exit 0' TERM
               touch "$OUT/ready"
               while :; do sleep 0.1; done"#,
        ])
        .env("OUT", out);
    cmd
}
