//! Keeps the deployment recipes (docs/deploy/*) and the migration note
//! (docs/migration.md) honest against the real binary and the source: every
//! flag and ENVELOPE_* variable they mention exists, every Go spelling the
//! migration note promises is accepted and maps to the flag it names, the metric
//! names match envelope/src/metrics.rs, the unit, manifest and Dockerfile
//! have the shape the README describes, the packaged /etc/default/envelope
//! names exactly the variables the clap definition declares, and the Grafana
//! dashboard queries only metrics a running envelope exports.
//!
//! No test here touches the firewall: the binary is run with arguments that
//! fail validation (or clap parsing), always with `--firewall none` and a
//! private admin socket as a safety net, and under a timeout; the one daemon
//! started (for the dashboard) runs with `--firewall none` on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};

use testbed::{Wait, EVENTUALLY};

const ENVELOPE: &str = env!("CARGO_BIN_EXE_envelope");

fn read(relative: &str) -> String {
    let path = testbed::workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file this test keeps honest, with its text.
fn documents() -> Vec<(&'static str, String)> {
    [
        "docs/deploy/envelope.service",
        "docs/deploy/Dockerfile",
        "docs/deploy/kubernetes.yaml",
        "docs/deploy/README.md",
        "docs/deploy/envelope.default",
        "docs/migration.md",
    ]
    .into_iter()
    .map(|name| (name, read(name)))
    .collect()
}

/// Runs the envelope with `args` and no ENVELOPE_* environment, killing it
/// after [`EVENTUALLY`] (it should never get as far as serving).
fn run_envelope(args: &[&str]) -> Output {
    let admin = tempfile::tempdir().expect("tempdir");
    let socket = admin.path().join("admin.sock");
    let mut command = Command::new(ENVELOPE);
    command
        .env_clear()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Safety nets, unless the arguments under test already name them.
    if !args.iter().any(|a| a.contains("firewall")) {
        command.arg("--firewall=none");
    }
    if !args.iter().any(|a| a.contains("admin-socket")) {
        command.arg(format!("--admin-socket={}", socket.display()));
    }
    let mut child = command.spawn().expect("spawn envelope");
    let wait = Wait::new(EVENTUALLY, "the envelope to exit");
    while child.try_wait().expect("try_wait").is_none() {
        if wait.pause().is_err() {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "envelope {args:?} did not exit (it should fail validation): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    child.wait_with_output().expect("wait")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn help() -> String {
    let output = Command::new(ENVELOPE)
        .arg("--help")
        .env_clear()
        .output()
        .expect("envelope --help");
    assert!(output.status.success(), "envelope --help failed");
    String::from_utf8(output.stdout).expect("utf-8 help")
}

/// Long flags shown by `--help` (hidden ones are not).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .flat_map(|line| {
            double_dash_flags(
                line.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .as_str(),
            )
        })
        .collect()
}

/// `alias = "…"` values in config/flags.rs: the documented Go-style aliases.
fn config_aliases() -> BTreeSet<String> {
    let source = read("envelope/src/config/flags.rs");
    source
        .split("alias = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn is_flag_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
}

/// `--name` tokens in `text` (not preceded by a word character or a dash).
fn double_dash_flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let before_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '-');
        if before_ok && bytes[i] == '-' && bytes[i + 1] == '-' && bytes[i + 2].is_ascii_lowercase()
        {
            let name: String = bytes[i + 2..]
                .iter()
                .take_while(|c| is_flag_char(**c))
                .collect();
            let name = name.trim_end_matches(['.', '-']).to_owned();
            i += 2 + name.len();
            found.insert(name);
        } else {
            i += 1;
        }
    }
    found
}

/// Flags the recipes pass to other programs (docker, cargo, kubectl, curl,
/// apt-get, update-alternatives, envelopectl). Anything else must be an
/// envelope flag.
const OTHER_TOOLS: &[&str] = &[
    // envelopectl
    "socket",
    "json",
    "all",
    // docker / Dockerfile
    "network",
    "cap-add",
    "cap-drop",
    "stop-timeout",
    "build-arg",
    "name",
    "restart",
    "mount",
    "from",
    // systemctl
    "now",
    // cargo, cargo deb
    "release",
    "locked",
    "no-build",
    // kubectl
    "from-file",
    // apt-get, update-alternatives
    "no-install-recommends",
    "set",
    // curl
    "http1.1",
    "max-time",
    "unix-socket",
];

#[test]
fn every_documented_flag_exists() {
    let help = help();
    let flags = help_flags(&help);
    let aliases = config_aliases();
    assert!(
        flags.contains("verify-key") && flags.contains("cleanup"),
        "{flags:?}"
    );
    let mut unknown = Vec::new();
    for (file, text) in documents() {
        for flag in double_dash_flags(&text) {
            let known = flags.contains(&flag)
                || aliases.contains(&flag)
                || OTHER_TOOLS.contains(&flag.as_str());
            if !known {
                unknown.push(format!("{file}: --{flag}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags in the docs that `envelope --help` does not show: {unknown:#?}"
    );
}

#[test]
fn every_documented_environment_variable_exists() {
    let help = help();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (file, text) in documents() {
        for piece in text.split("ENVELOPE_").skip(1) {
            let suffix: String = piece
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let suffix = suffix.trim_end_matches('_');
            if suffix.is_empty() {
                continue; // "ENVELOPE_*"
            }
            seen += 1;
            if !help.contains(&format!("[env: ENVELOPE_{suffix}=")) {
                unknown.push(format!("{file}: ENVELOPE_{suffix}"));
            }
        }
    }
    assert!(seen > 20, "expected the docs to name the variables");
    assert!(
        unknown.is_empty(),
        "variables in the docs that `envelope --help` does not list: {unknown:#?}"
    );
}

/// (Go spelling without dashes, canonical flag) from the migration note's
/// flag table: rows that start with "| `-".
fn migration_flag_table() -> Vec<(String, String)> {
    let text = read("docs/migration.md");
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| `-")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let go = cells[1].trim_matches('`');
        let go = go.trim_start_matches('-');
        let go = go.split('=').next().unwrap_or(go).to_owned();
        let canonical = cells[2]
            .trim_matches('`')
            .trim_start_matches('-')
            .to_owned();
        rows.push((go, canonical));
    }
    rows
}

/// A value that parses for each documented Go flag.
fn sample_value(go: &str) -> &'static str {
    match go {
        "envelope.listen-address" | "prometheusx.listen-address" => "127.0.0.1:0",
        "envelope.cert" => "/nonexistent/cert.pem",
        "envelope.key" => "/nonexistent/key.pem",
        "envelope.verify-key" => "/nonexistent/verify.pub",
        "envelope.token-required" => "true",
        "envelope.machine" => "mlab1-test0",
        "envelope.subject" => "ndt",
        "envelope.max-clients" => "2",
        "envelope.device" => "eth1",
        "timeout" => "90s",
        "txcontroller.device" => "eth0",
        "txcontroller.max-rate" => "1000",
        other => panic!("docs/migration.md lists -{other}: give it a sample value here"),
    }
}

const VERIFY_KEY_REQUIRED: &str = "envelope: --verify-key is required when tokens are required";

#[test]
fn go_spellings_in_the_migration_note_are_accepted() {
    let rows = migration_flag_table();
    let promised: BTreeSet<&str> = rows.iter().map(|(go, _)| go.as_str()).collect();
    for go in [
        "envelope.listen-address",
        "envelope.cert",
        "envelope.key",
        "envelope.verify-key",
        "envelope.token-required",
        "envelope.machine",
        "envelope.subject",
        "envelope.max-clients",
        "envelope.device",
        "timeout",
        "prometheusx.listen-address",
        "txcontroller.device",
        "txcontroller.max-rate",
    ] {
        assert!(promised.contains(go), "migration.md must list -{go}");
    }
    for (go, canonical) in &rows {
        let value = sample_value(go);
        // Go style: one dash and `=VALUE`. The key file needs a companion, or
        // the cert/key pairing check fires first (still after parsing); files
        // are read only once the flags validate, so those rows complete the
        // command line.
        let spelled = format!("-{go}={value}");
        let mut args = vec![spelled.as_str()];
        match go.as_str() {
            "envelope.cert" => {
                args.extend(["--key=/nonexistent/key.pem", "--token-required=false"])
            }
            "envelope.key" => {
                args.extend(["--cert=/nonexistent/cert.pem", "--token-required=false"])
            }
            "envelope.verify-key" => args.extend(["--machine=m", "--subject=s"]),
            _ => {}
        }
        let output = run_envelope(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("envelope: --") && !err.contains("\nerror:"),
            "{args:?} must fail validation (one `envelope: --flag …` line), not parsing: {err}"
        );
        match go.as_str() {
            "envelope.cert" | "envelope.key" => {
                assert!(err.starts_with("envelope: --cert"), "{args:?}: {err}")
            }
            "envelope.verify-key" => {
                assert!(
                    err.starts_with("envelope: --verify-key: cannot read"),
                    "{err}"
                )
            }
            _ => assert!(err.starts_with(VERIFY_KEY_REQUIRED), "{args:?}: {err}"),
        }

        // The alias is the flag the table says: giving both is a clap
        // "used multiple times" error naming the canonical flag. (Repeatable
        // --verify-key is checked above: its error names --verify-key.)
        if go != "envelope.verify-key" {
            let both = [spelled.clone(), format!("--{canonical}={value}")];
            let both: Vec<&str> = both.iter().map(String::as_str).collect();
            let output = run_envelope(&both);
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{both:?}: {err}");
            assert!(
                err.contains(&format!("'--{canonical}"))
                    && err.contains("cannot be used multiple times"),
                "-{go} should be an alias of --{canonical}: {err}"
            );
        }
    }
}

#[test]
fn go_spellings_take_a_separate_value_and_double_dashes_too() {
    for args in [
        vec!["-envelope.machine", "mlab1-test0"],
        vec!["--envelope.subject", "ndt"],
        vec!["-timeout", "2m"],
        vec![
            "-envelope.token-required=true",
            "-envelope.max-clients",
            "3",
        ],
    ] {
        let output = run_envelope(&args);
        let err = stderr(&output);
        assert!(err.starts_with(VERIFY_KEY_REQUIRED), "{args:?}: {err}");
    }
}

#[test]
fn other_go_flags_the_migration_note_lists_are_accepted_and_unknown_ones_refused() {
    for accepted in [
        "-address.iptables=/sbin/iptables",
        "-address.iptables-restore=/sbin/iptables-restore",
        "-httpx.tcp-network=tcp",
    ] {
        let output = run_envelope(&[accepted]);
        let err = stderr(&output);
        assert!(err.starts_with(VERIFY_KEY_REQUIRED), "{accepted}: {err}");
    }
    for unknown in ["-hello.world=1", "-Vx", "--no-such-flag"] {
        let output = run_envelope(&[unknown]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{unknown}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn version_names_the_commit() {
    let output = run_envelope(&["--version"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let version = common::build_info::long_version();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("envelope {version}\n")
    );
}

/// Registered metric names in metrics.rs, as Prometheus exposes them
/// (counters get `_total`).
fn exposed_metrics() -> BTreeMap<String, &'static str> {
    let source = read("envelope/src/metrics.rs");
    let mut metrics = BTreeMap::new();
    for call in source.split("registry.register(").skip(1) {
        let name = call.split('"').nth(1).expect("metric name literal");
        // Third argument, after the name and help literals (the help may
        // contain commas): `variable.clone()`.
        let variable = call
            .split('"')
            .nth(4)
            .and_then(|rest| rest.split(',').nth(1))
            .and_then(|a| a.trim().strip_suffix(".clone()"))
            .unwrap_or_else(|| panic!("cannot read the metric passed for {name}"));
        let declaration = source
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("let {variable}")))
            .unwrap_or_else(|| panic!("no `let {variable}` in metrics.rs"));
        let kind = if declaration.contains("Counter") {
            "counter"
        } else if declaration.contains("Gauge") {
            "gauge"
        } else if declaration.contains("Histogram") {
            "histogram"
        } else {
            panic!("unknown metric type for {name}: {declaration}");
        };
        let exposed = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        metrics.insert(exposed, kind);
    }
    metrics
}

#[test]
fn metric_names_in_the_migration_note_match_the_source() {
    let metrics = exposed_metrics();
    for kept in [
        "envelope_requests_total",
        "controller_access_token_requests_total",
        "controller_access_txcontroller_requests_total",
        "envelope_active_grants",
    ] {
        assert!(
            metrics.contains_key(kept),
            "{kept} missing from metrics.rs: {metrics:?}"
        );
    }
    let note = read("docs/migration.md");
    let readme = read("docs/deploy/README.md");
    let mut mentioned = BTreeSet::new();
    for text in [&note, &readme] {
        for quoted in text.split('`').skip(1).step_by(2) {
            let name = quoted.split(['{', ' ']).next().unwrap_or("");
            if (name.starts_with("envelope_") || name.starts_with("controller_"))
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                mentioned.insert(name.to_owned());
            }
        }
    }
    for name in &mentioned {
        assert!(
            metrics.contains_key(name),
            "docs name metric {name}, which metrics.rs does not export: {metrics:?}"
        );
    }
    for name in metrics.keys() {
        assert!(
            note.contains(&format!("`{name}`")),
            "metrics.rs exports {name}; document it in docs/migration.md"
        );
    }
    // The labels the note promises for the kept names.
    let source = read("envelope/src/metrics.rs");
    for field in [
        "pub status:",
        "pub path:",
        "pub request:",
        "pub reason:",
        "pub protocol:",
    ] {
        assert!(source.contains(field), "metrics.rs lost label {field}");
    }
}

/// `[Section]` → key → values, from a systemd unit (comments and blanks skipped).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: no continuations, please",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("line {}: setting outside a section", n + 1));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        sections
            .entry(section)
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    sections
}

#[test]
fn systemd_unit_has_the_promised_settings() {
    let text = read("docs/deploy/envelope.service");
    let unit = parse_unit(&text);
    assert_eq!(
        unit.keys().map(String::as_str).collect::<Vec<_>>(),
        ["Install", "Service", "Unit"]
    );
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("[Service] lacks {key}="));
        assert_eq!(values.len(), 1, "{key}= given more than once");
        &values[0]
    };
    assert_eq!(one("ExecStart"), "/usr/local/bin/envelope");
    assert_eq!(one("ExecStopPost"), "/usr/local/bin/envelope --cleanup");
    assert_eq!(one("EnvironmentFile"), "-/etc/default/envelope");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("NoNewPrivileges"), "yes");
    // The default --admin-socket lives in the RuntimeDirectory.
    assert!(help().contains("[default: /run/envelope/admin.sock]"));
    assert_eq!(one("RuntimeDirectory"), "envelope");
    let caps = |key: &str| -> BTreeSet<String> {
        one(key).split_whitespace().map(str::to_owned).collect()
    };
    let allowed: BTreeSet<String> = ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
        .map(String::from)
        .into();
    let bounding = caps("CapabilityBoundingSet");
    assert!(bounding.contains("CAP_NET_ADMIN"), "{bounding:?}");
    assert!(bounding.is_subset(&allowed), "{bounding:?}");
    assert_eq!(caps("AmbientCapabilities"), bounding);
    // Long enough for the clean-up: several 5 s firewall commands plus 3 s for
    // sessions to close.
    let timeout = one("TimeoutStopSec");
    let seconds: u64 = timeout
        .strip_suffix('s')
        .unwrap_or(timeout)
        .parse()
        .unwrap_or_else(|_| panic!("TimeoutStopSec={timeout}: write whole seconds"));
    assert!(seconds >= 30, "TimeoutStopSec={timeout} is too short");
    // And above the drain timeout the default file suggests, plus the clean-up.
    let defaults = read("docs/deploy/envelope.default");
    let drain = defaults
        .lines()
        .find_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix("ENVELOPE_DRAIN_TIMEOUT=")
        })
        .expect("envelope.default describes ENVELOPE_DRAIN_TIMEOUT");
    let drain = common::goflags::parse_duration(drain).unwrap();
    assert!(
        seconds >= drain.as_secs() + 45,
        "TimeoutStopSec={timeout} would cut a {drain:?} drain short"
    );
    assert!(
        !service.contains_key("User"),
        "the README says the unit runs as root (legacy iptables needs the root-owned lock)"
    );
}

/// `systemd-analyze verify` on a copy of the unit pointed at the built binary;
/// skipped where systemd-analyze is not installed.
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    };
    if !version.status.success() {
        eprintln!("systemd-analyze does not run here: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = read("docs/deploy/envelope.service").replace("/usr/local/bin/envelope", ENVELOPE);
    let path = dir.path().join("envelope.service");
    std::fs::write(&path, unit).expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Unknown keys and bad values are only warnings, so any output is a failure.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("envelope.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn kubernetes_manifest_has_the_promised_shape() {
    let text = read("docs/deploy/kubernetes.yaml");
    assert!(!text.contains('\t'), "YAML must not contain tabs");
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(kinds, ["DaemonSet"]);
    for needle in [
        "apiVersion: apps/v1",
        "hostNetwork: true",
        "secretName: envelope-verify-key",
        "fieldPath: spec.nodeName",
        "name: ENVELOPE_MACHINE",
        "mountPath: /run/envelope",
        "emptyDir:",
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9990\"",
        "containerPort: 9990",
        "drop: [\"ALL\"]",
        "add: [\"NET_ADMIN\"]",
        "path: /health",
        "port: 9990",
        "secretName: envelope-tls",
        "- --cert=/etc/envelope/tls/tls.crt",
        "name: ENVELOPE_DRAIN_TIMEOUT",
    ] {
        assert!(text.contains(needle), "kubernetes.yaml lacks {needle:?}");
    }
    // The grace period outlasts the drain and its clean-up.
    let grace: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .and_then(|v| v.parse().ok())
        .expect("terminationGracePeriodSeconds");
    let drain = text
        .split("name: ENVELOPE_DRAIN_TIMEOUT")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("value: ")))
        .expect("the ENVELOPE_DRAIN_TIMEOUT value");
    let drain = common::goflags::parse_duration(drain).unwrap();
    assert!(
        grace >= drain.as_secs() + 45,
        "terminationGracePeriodSeconds {grace} would cut a {drain:?} drain short"
    );
    // The key passed with --verify-key lives where the Secret is mounted.
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --verify-key="))
        .expect("a --verify-key= argument");
    let verify_mount = text
        .split("- name: verify-key")
        .nth(1)
        .and_then(|rest| {
            rest.lines()
                .find_map(|l| l.trim().strip_prefix("mountPath: "))
        })
        .expect("the verify-key volume mount");
    assert!(
        key.starts_with(&format!("{verify_mount}/")),
        "--verify-key={key} is not under {verify_mount}"
    );
    // Every volume mounted is declared.
    let volumes = text.split("\n      volumes:\n").nth(1).expect("volumes:");
    for mount in text
        .split("volumeMounts:")
        .nth(1)
        .expect("volumeMounts:")
        .split("\n      volumes:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
    {
        assert!(
            volumes.contains(&format!("- name: {mount}\n")),
            "volume {mount} is mounted but not declared"
        );
    }
}

#[test]
fn dockerfile_builds_every_workspace_member_and_runs_the_envelope() {
    let text = read("docs/deploy/Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains("rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:bookworm-slim"));
    assert!(text.contains("--release -p envelope -p envelopectl"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/envelope\"]"));
    assert!(text.contains("STOPSIGNAL SIGTERM"));
    assert!(text.contains("--cap-add NET_ADMIN") && text.contains("--network host"));
    assert!(text.contains("rm -rf /var/lib/apt/lists/*"));
    assert!(text.contains("DEBIAN_FRONTEND=noninteractive"));
    // The build stage needs every workspace member (cargo loads them all):
    // either the whole context, or each member by name.
    if !text.contains("\nCOPY . .\n") {
        let manifest = read("Cargo.toml");
        let members = manifest
            .split("members = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .expect("workspace members");
        for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
            if !member.is_empty() {
                assert!(
                    text.contains(&format!("COPY {member} {member}")),
                    "the Dockerfile must COPY workspace member {member}"
                );
            }
        }
    }
    // ... and the context must not drag the cargo target directory along.
    let ignore = read("docs/deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
}

/// `NAME=value` lines of docs/deploy/envelope.default, commented (`#NAME=`) or
/// not; prose comments start with `# `.
fn default_file_variables(text: &str) -> Vec<(String, String, bool)> {
    text.lines()
        .filter_map(|line| {
            let (commented, body) = match line.strip_prefix('#') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (name, value) = body.split_once('=')?;
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (name.to_owned(), value.to_owned(), commented))
        })
        .collect()
}

#[test]
fn default_file_names_exactly_the_variables_the_envelope_declares() {
    let command = envelope::command();
    // ENVELOPE_* variables of the flags `--help` shows, with their defaults.
    let declared: BTreeMap<String, Option<String>> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some((env, (!defaults.is_empty()).then(|| defaults.join(","))))
        })
        .collect();
    assert!(declared.len() > 15, "{declared:?}");
    let text = read("docs/deploy/envelope.default");
    let variables = default_file_variables(&text);
    let mut seen = BTreeSet::new();
    for (name, value, commented) in &variables {
        assert!(
            seen.insert(name.clone()),
            "envelope.default sets {name} twice"
        );
        assert!(
            *commented,
            "envelope.default sets {name}: the installed file must leave every default in place"
        );
        let Some(default) = declared.get(name) else {
            panic!("envelope.default names {name}, which no visible envelope flag reads");
        };
        if let Some(default) = default {
            assert_eq!(
                value, default,
                "envelope.default shows {name}={value}, but the default is {default}"
            );
        }
    }
    let missing: Vec<&String> = declared.keys().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "envelope flags whose variables docs/deploy/envelope.default does not describe: {missing:?}"
    );
    // The unit reads it from where the package installs it.
    let unit = parse_unit(&read("docs/deploy/envelope.service"));
    assert_eq!(
        unit["Service"]["EnvironmentFile"],
        ["-/etc/default/envelope"]
    );
}

/// Metric names in a PromQL expression: identifiers that are not functions
/// (followed by `(`), keywords, label names (inside `{…}` or a grouping such as
/// `by (…)`), ranges (`[…]`), strings or numbers.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations too: in `sum by (le) (…)` no `(` follows the name.
    const KEYWORDS: [&str; 19] = [
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Index just past the string literal starting at `i`.
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Index just past the `close` matching the opener at `i` (strings skipped).
    let skip_to = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            i = if chars[i] == '"' {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_word(c) {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPING.contains(&word.as_str()) {
                if next == Some(&'(') {
                    let open = i + chars[i..].iter().position(|c| *c == '(').unwrap_or(0);
                    i = skip_to(open, ')');
                }
            } else if next != Some(&'(') && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL expression in the dashboard: panel targets and template queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "no panels");
    for panel in panels {
        let title = panel["title"].as_str().expect("panel title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            queries.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .expect("template query");
            // label_values(METRIC{…}, label): the metric is the first argument.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(metric, _)| metric.to_owned())
                .unwrap_or_else(|| query.to_owned());
            queries.push(inner);
        }
    }
    queries
}

/// Sample names a scrape exports, plus those its `# TYPE` lines imply (so a
/// labelled family with no sample yet still counts): counters as `_total`,
/// histograms as `_bucket`, `_sum` and `_count`.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut parts = declaration.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn promql_metric_names_skip_functions_labels_and_ranges() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, operation) (rate(a_bucket{instance=~"$i", x="y{z}"}[$__rate_interval]))) / ignoring(le) b_total + on (q) c > bool 0.5 and max(d) by (q)"#,
    );
    assert_eq!(
        names,
        ["a_bucket", "b_total", "c", "d"].map(String::from).into()
    );
}

#[tokio::test]
async fn grafana_dashboard_queries_only_metrics_the_envelope_exports() {
    use crate::support::{self, ws_connect, Daemon, EnvelopeCmd, Firewall};

    let text = read("docs/deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("grafana-dashboard.json is JSON");
    assert_eq!(dashboard["uid"], "envelope");
    let queried: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|q| promql_metric_names(q))
        .collect();
    for promised in [
        "envelope_active_grants",
        "envelope_firewall_operation_duration_seconds_bucket",
        "controller_access_token_requests_total",
        "controller_access_txcontroller_requests_total",
        "envelope_firewall_revoke_failures_total",
        "envelope_verify_key_info",
        "envelope_tokens_accepted_total",
        "envelope_lame_duck",
        "envelope_tls_certificate_expiry_seconds",
        "envelope_connections_refused_total",
    ] {
        assert!(
            queried.contains(promised),
            "no panel queries {promised}: {queried:?}"
        );
    }

    // One granted and one rejected request against a real daemon, then a scrape.
    let daemon = Daemon::start(EnvelopeCmd {
        tls: false,
        firewall: Firewall::None,
        metrics: true,
        ..EnvelopeCmd::default()
    });
    let (mut ws, _) = ws_connect(&daemon, Some(&support::token()), true)
        .await
        .expect("granted");
    let rejected = ws_connect(&daemon, Some("not.a.token"), true).await;
    assert_eq!(support::handshake_status(rejected), 401);
    ws.close(None).await.expect("close");
    drop(ws);
    let scrape = testbed::eventually_async(EVENTUALLY, "a revoke in the metrics", || async {
        let scrape = daemon.metrics().await;
        if scrape.contains("operation=\"revoke\"") {
            Ok(scrape)
        } else {
            Err(scrape)
        }
    })
    .await;
    let exported = exported_names(&scrape);
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the envelope does not export: {unknown:?}\nexported: {exported:?}"
    );
}
