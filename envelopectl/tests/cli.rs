//! envelopectl's command line without a daemon: usage errors and an unreachable
//! socket. (Against a live envelope it is tested in envelope/tests/integration/admin.rs, which
//! also relies on this file making cargo build the binary.)

use assert_cmd::Command;
use predicates::prelude::*;

fn ctl() -> Command {
    let mut cmd = Command::cargo_bin("envelopectl").unwrap();
    cmd.env_remove("ENVELOPE_ADMIN_SOCKET");
    cmd
}

#[test]
fn usage_errors_exit_2() {
    ctl().assert().code(2);
    ctl().arg("frobnicate").assert().code(2);
    ctl().args(["revoke"]).assert().code(2);
    ctl().args(["revoke", "3", "--all"]).assert().code(2);
    ctl()
        .args(["--socket=/nonexistent.sock", "revoke", "not-an-id"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "neither a grant ID nor an IP address",
        ));
}

#[test]
fn an_unreachable_envelope_exits_3_naming_the_socket() {
    for args in [
        vec!["list"],
        vec!["status", "--json"],
        vec!["revoke", "--all"],
    ] {
        ctl()
            .arg("--socket=/nonexistent/dir/admin.sock")
            .args(&args)
            .assert()
            .code(3)
            .stderr(
                predicate::str::contains("/nonexistent/dir/admin.sock")
                    .and(predicate::str::contains("--socket")),
            );
    }
}

#[test]
fn the_socket_comes_from_the_environment_too() {
    ctl()
        .env("ENVELOPE_ADMIN_SOCKET", "/nonexistent/from-env.sock")
        .arg("list")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("/nonexistent/from-env.sock"));
}

#[test]
fn version_names_the_commit() {
    let version = common::build_info::long_version();
    ctl()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("envelopectl {version}\n"));
}
