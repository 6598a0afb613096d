//! The admin API and `envelopectl` against a live envelope with the recording
//! firewall: list, revoke (by IP, id, all), status, socket permissions, stale and
//! contested sockets, and agreement between `curl --unix-socket` and `--json`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{
    self, envelopectl_bin, token, ws_connect, Daemon, EnvelopeCmd, Ws, EVENTUALLY,
};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A copy of envelopectl that any user can execute, wherever the checkout lives
/// (CI's work tree may sit below a directory other users cannot enter).
fn envelopectl_for_anyone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("envelopectl");
    std::fs::copy(envelopectl_bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(envelopectl_bin())
        .arg(format!("--socket={}", socket.display()))
        .args(args)
        .env_remove("ENVELOPE_ADMIN_SOCKET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The daemon in-process on port 0 (these tests need no process of its own).
fn start(max_clients: u32) -> Daemon {
    Daemon::in_process(EnvelopeCmd::default().arg(&format!("--max-clients={max_clients}")))
}

async fn hold(daemon: &Daemon) -> Ws {
    let (ws, response) = ws_connect(daemon, Some(&token()), true).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// The next frame the server sends, which must be a Close; returns its code.
async fn close_code(ws: &mut Ws) -> CloseCode {
    let frame = tokio::time::timeout(EVENTUALLY, ws.next())
        .await
        .expect("a Close frame");
    match frame {
        Some(Ok(Message::Close(Some(close)))) => close.code,
        other => panic!("expected a Close frame, got {other:?}"),
    }
}

fn ctl_async(socket: PathBuf, args: Vec<&'static str>) -> tokio::task::JoinHandle<Output> {
    tokio::task::spawn_blocking(move || ctl(&socket, &args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_revoke_by_ip_closes_the_session_and_removes_the_rule_first() {
    let daemon = start(3);
    let socket = daemon.admin_socket();

    let empty = ctl(&socket, &["list"]);
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert_eq!(stdout(&empty), "no live grants\n");
    assert_eq!(stdout(&ctl(&socket, &["list", "--json"])).trim(), "[]");

    let mut ws = hold(&daemon).await;
    let table = stdout(&ctl(&socket, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("ID  CLIENT"), "{table}");
    for cell in ["1", "127.0.0.1", "127.0.0.0/24", "ndt"] {
        assert!(
            lines[1].split_whitespace().any(|c| c == cell),
            "{cell} missing in {table}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&socket, &["list", "--json"]))).unwrap();
    assert_eq!(json[0]["ip"], "127.0.0.1");
    assert_eq!(json[0]["subnet"], "127.0.0.0/24");
    assert_eq!(json[0]["subject"], "ndt");
    assert_eq!(json[0]["monitoring"], false);
    assert!(json[0]["started"].as_str().unwrap().ends_with('Z'));

    let revoke = ctl_async(socket.clone(), vec!["revoke", "127.0.0.9"])
        .await
        .unwrap();
    // The rule was removed before envelopectl returned.
    assert_eq!(
        daemon.firewall_calls(),
        ["grant 127.0.0.0/24", "revoke 127.0.0.0/24"]
    );
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert_eq!(stdout(&revoke), "revoked 1\n");
    assert_eq!(close_code(&mut ws).await, CloseCode::Policy);
    assert_eq!(stdout(&ctl(&socket, &["list"])), "no live grants\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_of_unknown_id_or_address_exits_1() {
    let daemon = start(1);
    let socket = daemon.admin_socket();
    let unknown = ctl(&socket, &["revoke", "42"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown), "envelopectl: no grant with id 42\n");
    let nobody = ctl(&socket, &["revoke", "198.51.100.1"]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(stderr(&nobody).contains("no grant covers 198.51.100.1"));
    let usage = ctl(&socket, &["revoke", "not-an-id"]);
    assert_eq!(usage.status.code(), Some(2));
    let no_target = ctl(&socket, &["revoke"]);
    assert_eq!(no_target.status.code(), Some(2));
    assert!(daemon.firewall_calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_by_id_and_revoke_all() {
    let daemon = start(4);
    let socket = daemon.admin_socket();
    let mut first = hold(&daemon).await;
    let mut rest = vec![hold(&daemon).await, hold(&daemon).await];

    let by_id = ctl(&socket, &["revoke", "1"]);
    assert!(by_id.status.success(), "{}", stderr(&by_id));
    assert_eq!(close_code(&mut first).await, CloseCode::Policy);
    // Two sessions still share the subnet, so its rule stays.
    assert_eq!(daemon.firewall_calls(), ["grant 127.0.0.0/24"]);

    let all = ctl(&socket, &["revoke", "--all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(stdout(&all), "revoked 2, 3\n");
    assert_eq!(
        daemon.firewall_calls(),
        ["grant 127.0.0.0/24", "revoke 127.0.0.0/24"]
    );
    for ws in &mut rest {
        assert_eq!(close_code(ws).await, CloseCode::Policy);
    }
    let again = ctl(&socket, &["revoke", "--all"]);
    assert!(again.status.success());
    assert_eq!(stdout(&again), "no live grants to revoke\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_configuration_and_occupancy() {
    let daemon = start(3);
    let socket = daemon.admin_socket();
    let _ws = hold(&daemon).await;
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&socket, &["status", "--json"]))).unwrap();
    assert_eq!(status["version"], common::build_info::VERSION);
    assert_eq!(status["revision"], common::build_info::REVISION);
    assert_eq!(status["rustc"], common::build_info::RUSTC);
    assert_eq!(status["machine"], support::MACHINE);
    assert_eq!(status["subject"], support::SUBJECT);
    assert_eq!(status["firewall"], "record");
    assert_eq!(status["max_clients"], 3);
    assert_eq!(status["active_grants"], 1);
    assert_eq!(status["pending_revokes"], 0);
    assert!(status["uptime_seconds"].is_u64());
    // Port 0 as bound: the address the test connected to.
    assert_eq!(
        status["listening"],
        serde_json::json!([daemon.addr.to_string()])
    );
    assert_eq!(status["metrics_listening"], serde_json::json!([]));
    let human = stdout(&ctl(&socket, &["status"]));
    assert!(human.contains("clients:          1 of 3"), "{human}");
    let version = common::build_info::long_version();
    assert!(
        human.starts_with(&format!("version:          {version}\n")),
        "{human}"
    );
    assert!(
        human.contains(&format!("listening:        {}\n", daemon.addr)),
        "{human}"
    );
    assert!(human.contains("metrics:          off\n"), "{human}");
}

#[test]
fn socket_is_0600_and_other_users_are_refused() {
    let daemon = start(1);
    let socket = daemon.admin_socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (_bin_dir, ctl_bin) = envelopectl_for_anyone();
    let as_nobody = |socket: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&ctl_bin)
            .arg(format!("--socket={}", socket.display()))
            .arg("list")
            .output()
            .unwrap()
    };
    let denied = as_nobody(&socket);
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
    assert!(stderr(&denied).contains(&socket.display().to_string()));

    // Even with the file opened up, the peer-credential check refuses nobody.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&socket);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("permission denied"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn stale_socket_after_sigkill_is_replaced_and_a_live_one_is_not() {
    // A process: the test kills it.
    let mut first = Daemon::start(EnvelopeCmd::default().arg("--max-clients=1"));
    let socket = first.admin_socket();
    let options = EnvelopeCmd::default().arg(&format!("--admin-socket={}", socket.display()));

    let second = Daemon::try_start(options.clone());
    let (error, logs) =
        second.expect_err("a second envelope on a live socket must refuse to start");
    assert!(error.starts_with("exited with"), "{error}");
    let last = logs.lines().last().unwrap_or_default();
    assert!(last.starts_with("envelope: --admin-socket"), "{logs}");
    assert!(last.contains("another envelope is running"), "{logs}");

    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5));
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");
    let restarted = Daemon::start(options);
    let listed = ctl(&socket, &["list"]);
    assert!(
        listed.status.success(),
        "{}\n{}",
        stderr(&listed),
        restarted.logs()
    );
}

#[test]
fn wrong_socket_exits_3_naming_the_path() {
    let out = ctl(Path::new("/nonexistent/envelope.sock"), &["list"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stderr(&out);
    assert!(text.contains("/nonexistent/envelope.sock"), "{text}");
    assert!(text.contains("--socket"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_envelopectl_json_agree() {
    let daemon = start(2);
    let socket = daemon.admin_socket();
    let _ws = hold(&daemon).await;
    let curl = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/v1/grants")
        .output()
        .expect("curl is installed");
    assert!(curl.status.success());
    let ctl_json = stdout(&ctl(&socket, &["list", "--json"]));
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout).trim_end(),
        ctl_json.trim_end()
    );
    assert!(ctl_json.contains("\"subnet\":\"127.0.0.0/24\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_the_admin_api_doc_works() {
    let daemon = start(2);
    let socket = daemon.admin_socket().display().to_string();
    let _ws = hold(&daemon).await;
    let bin_dir = envelopectl_bin().parent().unwrap().display().to_string();
    let run = |line: &str| {
        let line = line.replace("/run/envelope/admin.sock", &socket);
        Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env(
                "PATH",
                format!("{bin_dir}:{}", std::env::var("PATH").unwrap()),
            )
            .env("ENVELOPE_ADMIN_SOCKET", &socket)
            .output()
            .unwrap()
    };
    let curls = support::doc_commands("docs/admin-api.md", Some("## With curl"));
    assert_eq!(curls.len(), 5);
    for line in &curls {
        let out = run(line);
        assert!(out.status.success(), "{line}: {}", stderr(&out));
        let body: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{line}: not JSON ({e}): {}", stdout(&out)));
        if line.contains("DELETE") && line.ends_with("/v1/grants") {
            assert_eq!(body["revoked"], serde_json::json!([1]), "{line}");
        }
    }
    let ctls = support::doc_commands("docs/admin-api.md", Some("## With envelopectl"));
    assert_eq!(ctls.len(), 9);
    for line in &ctls {
        let out = run(line);
        // 0 done, 1 nothing matched: both mean the command was understood and answered.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{line}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn admin_group_makes_the_socket_0660_and_lets_its_members_in() {
    let daemon = Daemon::start(EnvelopeCmd::default().arg("--admin-group=nogroup"));
    let socket = daemon.admin_socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        65534,
        "owned by nogroup"
    );
    // Let nobody reach the socket's directory; the socket's own mode and the
    // peer check decide the rest.
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_bin_dir, ctl_bin) = envelopectl_for_anyone();
    let as_user = |gid: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
            .arg(&ctl_bin)
            .arg(format!("--socket={}", socket.display()))
            .arg("status")
            .output()
            .unwrap()
    };
    let member = as_user("65534");
    assert!(member.status.success(), "{}", stderr(&member));
    // The same user outside the group is refused by the file mode.
    let outsider = as_user("1");
    assert_eq!(outsider.status.code(), Some(3), "{}", stderr(&outsider));
}
