//! The real iptables/ip6tables backend, end to end: the envelope binary runs in a
//! server network namespace this test creates, clients connect from a client
//! namespace over a veth pair, and the kernel's rules are read with
//! iptables-save inside the server namespace. Nothing runs in the host's own
//! network namespace. Needs root and iproute2; fails (never skips) without them.
//! The session helpers here serve `nftables_netns` too.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::support::{
    self, Daemon, EnvelopeCmd, Firewall, Stream, Ws, ACCESS_PATH, EVENTUALLY, SUBPROTOCOL,
};
use futures_util::future::join_all;
use testbed::launcher::Process;
use testbed::{FaultyBins, NetPair, DEVICE, ENVELOPE_PORT, SERVER_V4, SERVER_V6, SERVICE_PORT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub(crate) const PROXY_PORT: u16 = 8080;
pub(crate) const LIFETIME: Duration = Duration::from_secs(90);

pub(crate) fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// The default backend (`iptables`: ipset members where the kernel has ipset).
pub(crate) fn options(ns: &NetPair, extra: &[&str]) -> EnvelopeCmd {
    options_with(ns, "iptables", extra)
}

pub(crate) fn options_with(ns: &NetPair, backend: &'static str, extra: &[&str]) -> EnvelopeCmd {
    EnvelopeCmd {
        netns: Some(ns.server.clone()),
        firewall: Firewall::Kernel(backend),
        listen: format!(":{ENVELOPE_PORT}"),
        extra: vec![format!("--proxy-ports={PROXY_PORT}")],
        ..EnvelopeCmd::default()
    }
    .args(extra)
}

/// A WebSocket session over TLS from the client namespace (optionally from `local`).
pub(crate) async fn ws_from(
    ns: &NetPair,
    local: Option<IpAddr>,
    server_ip: &str,
    token: &str,
) -> Result<(Ws, Response), String> {
    let to = addr(server_ip, ENVELOPE_PORT);
    let tcp = ns
        .connect_from_client(local, to)
        .map_err(|e| format!("connect {to}: {e}"))?;
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(EVENTUALLY, support::tls_connector().connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
    let host = if server_ip.contains(':') {
        format!("[{server_ip}]")
    } else {
        server_ip.to_owned()
    };
    let mut request = format!("wss://{host}:{ENVELOPE_PORT}{ACCESS_PATH}?access_token={token}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let stream: Box<dyn Stream> = Box::new(tls);
    match tokio::time::timeout(EVENTUALLY, tokio_tungstenite::client_async(request, stream)).await {
        Err(_) => Err("WebSocket handshake timed out".into()),
        Ok(Ok(ok)) => Ok(ok),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(Err(e)) => Err(format!("handshake: {e}")),
    }
}

/// The HTTP status of an upgrade attempt: 101, or the refusal's status.
pub(crate) async fn status_from(
    ns: &NetPair,
    local: Option<IpAddr>,
    server_ip: &str,
) -> (u16, Option<Ws>) {
    match ws_from(ns, local, server_ip, &support::token()).await {
        Ok((ws, response)) => (response.status().as_u16(), Some(ws)),
        Err(e) => match e.strip_prefix("HTTP ") {
            Some(code) => (code.parse().unwrap(), None),
            None => panic!("upgrade from {local:?}: {e}"),
        },
    }
}

pub(crate) async fn session(ns: &NetPair, server_ip: &str, daemon: &Daemon) -> Ws {
    match ws_from(ns, None, server_ip, &support::token()).await {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            ws
        }
        Err(e) => panic!("session via {server_ip}: {e}\n{}", daemon.logs()),
    }
}

/// Waits ([`EVENTUALLY`]) until an upgrade from the client is granted; the session.
async fn served(ns: &NetPair, what: &str) -> Ws {
    testbed::eventually_async(EVENTUALLY, what, || async {
        match status_from(ns, None, SERVER_V4).await {
            (101, Some(ws)) => Ok(ws),
            (status, _) => Err(status),
        }
    })
    .await
}

pub(crate) async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    drop(ws);
}

pub(crate) fn lo_works(ns: &NetPair) {
    ns.connect_in_server(addr("127.0.0.1", SERVICE_PORT))
        .expect("lo inside the server namespace must stay open");
}

/// Envelope rules and sets (lines mentioning our chains, comments or sets) in
/// both iptables dumps and the ipset dump.
pub(crate) fn envelope_lines(ns: &NetPair) -> String {
    let (v4, v6, sets) = ns.save_all();
    format!("{v4}{v6}{sets}")
        .lines()
        .filter(|l| l.contains("ENVELOPE") || l.contains("envelope"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_open_the_service_only_while_held_v4_and_v6() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let _proxy = ns.listener(PROXY_PORT, LIFETIME);
    let v4 = addr(SERVER_V4, SERVICE_PORT);
    let v6 = addr(SERVER_V6, SERVICE_PORT);
    let proxy4 = addr(SERVER_V4, PROXY_PORT);
    let proxy6 = addr(SERVER_V6, PROXY_PORT);
    // Without the envelope everything is open.
    assert!(ns.client_can_reach(v4));

    let mut daemon = Daemon::start(options(&ns, &[]));
    assert!(
        daemon.logs().contains("backend=iptables+ipset ("),
        "{}",
        daemon.logs()
    );
    for to in [v4, v6, proxy4, proxy6] {
        assert!(
            !ns.client_can_reach(to),
            "{to} must be refused before any grant"
        );
    }
    lo_works(&ns);
    // Replies to the server's own outgoing connections come back in on the
    // device and pass as established (conntrack works in the namespace).
    let _outside = NetPair::listener_in(&ns.client, 7777, LIFETIME);
    for to in [
        addr(testbed::CLIENT_V4, 7777),
        addr(testbed::CLIENT_V6, 7777),
    ] {
        ns.connect_in_server(to)
            .unwrap_or_else(|e| panic!("outgoing {to} from the server: {e}"));
    }

    // IPv4 session: the client's /24 and the proxy port open, IPv6 stays shut.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert_eq!(ns.grant_rules().len(), 1, "{:?}", ns.grant_rules());
    // The peer is IPv4-mapped on the dual-stack listener: it is the v4 set's /24.
    assert_eq!(ns.members("envelope-v4"), ["192.0.2.0/24"]);
    assert_eq!(ns.members("envelope-v6"), Vec::<String>::new());
    assert_eq!(ns.members("envelope-proxy-v4"), [PROXY_PORT.to_string()]);
    assert!(ns.client_can_reach(v4));
    assert!(ns.client_can_reach(proxy4));
    assert!(!ns.client_can_reach(v6));
    assert!(!ns.client_can_reach(proxy6));
    lo_works(&ns);
    close(ws).await;
    // How soon: the bench's "back-to-back revoke (Close → refused)".
    ns.wait_reach(v4, false).await;
    assert!(
        !ns.client_can_reach(proxy4),
        "proxy port must close with the last grant"
    );
    assert_eq!(ns.members("envelope-proxy-v4"), Vec::<String>::new());

    // IPv6 session.
    let ws = session(&ns, SERVER_V6, &daemon).await;
    let rules = ns.grant_rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains("envelope-v6 2001:db8::/64"), "{rules:?}");
    assert!(ns.client_can_reach(v6));
    assert!(ns.client_can_reach(proxy6));
    assert!(!ns.client_can_reach(v4));
    lo_works(&ns);
    close(ws).await;
    ns.wait_reach(v6, false).await;
    assert!(!ns.client_can_reach(proxy6));
    lo_works(&ns);

    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert!(ns.client_can_reach(v4), "the guard must be gone after exit");
    assert_eq!(envelope_lines(&ns), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_removes_the_stale_grant() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let v4 = addr(SERVER_V4, SERVICE_PORT);

    let mut daemon = Daemon::start(options(&ns, &[]));
    let fresh = ns.save_all();
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(v4));
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    drop(ws);
    assert_eq!(
        ns.grant_rules().len(),
        1,
        "a SIGKILLed envelope cannot clean up"
    );
    drop(daemon);

    let daemon = Daemon::start(options(&ns, &[]));
    // Set-up runs before the port opens, so the grant is gone by now.
    assert_eq!(
        ns.grant_rules(),
        Vec::<String>::new(),
        "stale grant survived the restart"
    );
    assert_eq!(
        ns.save_all(),
        fresh,
        "only the fresh base rules and empty sets may remain"
    );
    assert!(!ns.client_can_reach(v4));
    // And the fresh instance works.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(v4));
    close(ws).await;
    ns.wait_reach(v4, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_exit_restores_the_ruleset_and_keeps_foreign_rules() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    // A set of someone else's exists before the envelope starts.
    ns.server_cmd(&["/usr/sbin/ipset", "create", "others-before", "hash:ip"]);
    let before = ns.save_all();

    // Without sessions.
    let mut daemon = Daemon::start(options(&ns, &[]));
    assert_ne!(ns.save_all(), before);
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(ns.save_all(), before);

    // With live sessions (v4 and v6) and a foreign rule added meanwhile.
    let mut daemon = Daemon::start(options(&ns, &["--max-clients=2"]));
    let a = session(&ns, SERVER_V4, &daemon).await;
    let b = session(&ns, SERVER_V6, &daemon).await;
    let foreign = |op: &str| {
        for (bin, source) in [
            ("/usr/sbin/iptables", "203.0.113.9"),
            ("/usr/sbin/ip6tables", "2001:db8:ffff::9"),
        ] {
            ns.server_cmd(&[bin, "-w", op, "INPUT", "-s", source, "-j", "DROP"]);
        }
        let set_op = if op == "-A" { "create" } else { "destroy" };
        let mut args = vec!["/usr/sbin/ipset", set_op, "others-during"];
        if op == "-A" {
            args.push("hash:net");
        }
        ns.server_cmd(&args);
    };
    foreign("-A");
    assert_eq!(ns.grant_rules().len(), 2);
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    drop((a, b));
    let (v4, v6, sets) = ns.save_all();
    assert!(
        sets.contains("create others-during hash:net"),
        "foreign set lost:\n{sets}"
    );
    assert!(
        v4.contains("-A INPUT -s 203.0.113.9/32 -j DROP"),
        "foreign v4 rule lost:\n{v4}"
    );
    assert!(
        v6.contains("-A INPUT -s 2001:db8:ffff::9/128 -j DROP"),
        "foreign v6 rule lost:\n{v6}"
    );
    foreign("-D");
    assert_eq!(ns.save_all(), before);

    // `envelope --cleanup` removes what a killed instance left.
    let mut daemon = Daemon::start(options(&ns, &[]));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    drop(ws);
    assert_eq!(
        ns.members("envelope-v4").len(),
        1,
        "SIGKILL leaves the member"
    );
    let out = ns.server_cmd(&[support::envelope_bin().to_str().unwrap(), "--cleanup"]);
    assert!(out.status.success());
    assert_eq!(ns.save_all(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_faults_fail_safe() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let v4 = addr(SERVER_V4, SERVICE_PORT);
    let bins = FaultyBins::new();
    let dir = format!("--iptables-dir={}", bins.path());
    // Short, so that a hung call is cut off soon; not so short that an
    // ordinary iptables call on a loaded machine runs into it.
    let daemon = Daemon::start(options_with(
        &ns,
        "iptables-restore",
        &[&dir, "--firewall-timeout=3s", "--max-clients=1"],
    ));
    assert!(
        daemon.logs().contains("backend=iptables (nf_tables)"),
        "--firewall iptables-restore forces the rule path\n{}",
        daemon.logs()
    );
    let base = ns.save_all();

    // 1. The grant batch fails: 500, nothing in the kernel, the slot is free.
    bins.set_nth("fail", bins.calls() + 1);
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    assert_eq!(ns.save_all(), base, "a failed grant left something behind");
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(v4));
    close(ws).await;
    ns.wait_grant_rules(0).await;

    // 2. The batch hangs for 60 s: a 500 at all (the upgrade waits at most
    //    EVENTUALLY) means the timeout cut it off; the slot is free.
    bins.set(Some("hang"));
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    bins.set(None);
    assert_eq!(ns.grant_rules(), Vec::<String>::new());
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(v4));
    close(ws).await;
    ns.wait_grant_rules(0).await;
    assert_eq!(ns.save_all(), base);

    // 3. The xtables lock is held (exit 4): 500, the slot is free.
    bins.set(Some("lock"));
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    bins.set(None);
    assert_eq!(ns.save_all(), base);

    // 4. The revoke fails: the grant stays (fail safe) and keeps the slot while it
    //    is retried, and is gone once the firewall works again.
    let failed_revokes = |d: &Daemon| {
        d.logs()
            .lines()
            .filter(|l| {
                l.contains("firewall.failed")
                    && l.contains("operation=\"revoke\"")
                    && l.contains("subnets=[\"192.0.2.0/24\"]")
            })
            .count()
    };
    let earlier = failed_revokes(&daemon);
    let ws = session(&ns, SERVER_V4, &daemon).await;
    bins.set(Some("fail"));
    close(ws).await;
    // Wait for the revoke and its first retry to have failed.
    daemon
        .eventually("a failed revoke and a failed retry", || async {
            failed_revokes(&daemon) >= earlier + 2
        })
        .await;
    assert_eq!(
        ns.grant_rules().len(),
        1,
        "the grant must stay while its revoke fails"
    );
    assert!(ns.client_can_reach(v4));
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 503, "a stuck revoke keeps its slot");
    bins.set(None);
    ns.wait_grant_rules(0).await;
    ns.wait_reach(v4, false).await;
    assert_eq!(ns.save_all(), base);

    // 4b. An operator's revoke that fails says why, down to the firewall's words.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    bins.set(Some("fail"));
    let out = envelopectl_output(&ns, &daemon, &["revoke", "--all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"envelopectl: revoke failed"),
        "{stderr}"
    );
    assert_eq!(
        lines.get(1),
        Some(
            &"  caused by: could not remove the rule for 192.0.2.0/24; retrying in the background"
        ),
        "{stderr}"
    );
    assert!(
        lines[2..]
            .iter()
            .any(|l| l.starts_with("  caused by: ") && l.contains("injected failure")),
        "the firewall's own error is in the chain:\n{stderr}"
    );
    drop(ws);
    bins.set(None);
    ns.wait_grant_rules(0).await;
    assert_eq!(ns.save_all(), base);

    // 5. A grant rule deleted by hand counts as revoked.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    let rule = ns.grant_rules().pop().unwrap();
    let spec = rule.strip_prefix("-A ENVELOPE-GRANTS ").unwrap().to_owned();
    let mut args = vec![
        "/usr/sbin/iptables".to_owned(),
        "-w".into(),
        "-D".into(),
        "ENVELOPE-GRANTS".into(),
    ];
    args.extend(split_spec(&spec));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.server_cmd(&refs);
    assert_eq!(ns.grant_rules(), Vec::<String>::new());
    close(ws).await;
    // The revoke succeeds (no stuck slot): a new client is served.
    let ws = served(&ns, "the slot freed after a hand-deleted rule").await;
    assert_eq!(ns.grant_rules().len(), 1);
    close(ws).await;
    ns.wait_grant_rules(0).await;
    assert_eq!(
        ns.save_all(),
        base,
        "proxy rule or grant left behind; batches:\n{}",
        std::fs::read_to_string(bins.dir.path().join("batches")).unwrap_or_default()
    );
    assert!(!daemon.logs().contains("panicked"), "{}", daemon.logs());
    if std::env::var_os("SHOW_LOGS").is_some() {
        eprintln!("{}", daemon.logs());
    }
}

/// Splits a listed rule spec (with one double-quoted comment) into arguments.
fn split_spec(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = spec;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap();
            out.push(quoted[..end].to_owned());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_subnets_race_for_four_slots() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let locals = ns.add_client_subnets(30);
    let daemon = Daemon::start(options(&ns, &["--max-clients=4"]));

    let attempts = locals.iter().map(|local| {
        let ns = &ns;
        let local = *local;
        async move {
            (
                local,
                ws_from(ns, Some(local), SERVER_V4, &support::token()).await,
            )
        }
    });
    let results = join_all(attempts).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for (local, result) in results {
        match result {
            Ok((ws, response)) => {
                assert_eq!(response.status().as_u16(), 101);
                held.push((local, ws));
            }
            Err(e) if e == "HTTP 503" => refused += 1,
            Err(e) => panic!("client {local}: {e}\n{}", daemon.logs()),
        }
    }
    assert_eq!((held.len(), refused), (4, 26), "{}", daemon.logs());
    let rules = ns.grant_rules();
    assert_eq!(rules.len(), 4, "{rules:#?}");
    for (local, _) in &held {
        let IpAddr::V4(v4) = local else {
            unreachable!()
        };
        let [a, b, c, _] = v4.octets();
        let subnet = format!(" {a}.{b}.{c}.0/24");
        assert!(
            rules.iter().any(|r| r.contains(&subnet)),
            "{subnet} missing: {rules:#?}"
        );
    }
    join_all(held.into_iter().map(|(_, ws)| close(ws))).await;
    ns.wait_grant_rules(0).await;
    assert_eq!(ns.members("envelope-proxy-v4"), Vec::<String>::new());
}

#[test]
fn missing_binary_fails_start_up_with_one_line() {
    let ns = NetPair::new();
    let empty = tempfile::tempdir().unwrap();
    let dir = format!("--iptables-dir={}", empty.path().display());
    let (why, logs) = Daemon::try_start(options(&ns, &[&dir])).expect_err("must not start");
    assert!(why.starts_with("exited with"), "{why}\n{logs}");
    assert!(
        logs.contains("iptables") && logs.contains("not found"),
        "{logs}"
    );
    assert_eq!(envelope_lines(&ns), "", "nothing may be installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopectl_revoke_closes_the_kernel_rule_before_it_returns() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let daemon = Daemon::start(options(&ns, &[]));
    let service = addr(SERVER_V4, SERVICE_PORT);
    let _ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(service), "granted while held");

    let socket = daemon.admin_socket();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::envelopectl_bin())
            .arg(format!("--socket={}", socket.display()))
            .args(["revoke", testbed::CLIENT_V4])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No waiting: the rule is gone by the time envelopectl has returned.
    assert!(
        !ns.client_can_reach(service),
        "refused right after revoke returned"
    );
    assert!(ns.grant_rules().is_empty(), "{:?}", ns.grant_rules());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_the_operations_doc_works_in_a_namespace() {
    // The reference part of the page; the recipes after "Operator commands"
    // (rolling restart, certificate renewal) have tests of their own (fleet.rs).
    let commands = support::doc_commands("docs/operations.md", None);
    let [run, ipset_list, cleanup, metrics, status, list, revoke] = &commands[..7] else {
        panic!("docs/operations.md: expected seven reference commands, found {commands:#?}");
    };
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let bin_dir = support::envelope_bin().parent().unwrap().to_owned();
    let path_env = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let substituted = run
        .replace(
            "/etc/envelope/tls.crt",
            &support::testdata("insecure-test-server.pem")
                .display()
                .to_string(),
        )
        .replace(
            "/etc/envelope/tls.key",
            &support::testdata("insecure-test-server.key")
                .display()
                .to_string(),
        )
        .replace(
            "/etc/envelope/verify.pub",
            &support::testdata("insecure-test-eddsa.jwk.pub")
                .display()
                .to_string(),
        )
        .replace("mlab1-abc0t", support::MACHINE)
        .replace("eth0", DEVICE);
    let in_server = |line: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns.server, "sh", "-c", line])
            .env("PATH", &path_env)
            .env("ENVELOPE_ADMIN_SOCKET", &socket);
        cmd
    };
    // The documented command, plus where this test wants its port and socket.
    let mut sh = testbed::launcher::command_in(Some(&ns.server), "sh");
    sh.arg("-c")
        .arg(format!(
            "exec {substituted} --listen-address=:{ENVELOPE_PORT}"
        ))
        .env("PATH", &path_env)
        .env("ENVELOPE_ADMIN_SOCKET", &socket);
    let mut daemon = Process::spawn(sh, &dir.path().join("envelope.log")).unwrap();
    if let Err(e) = testbed::envelope::await_listening(&mut daemon) {
        panic!("{e}");
    }
    let service = addr(SERVER_V4, SERVICE_PORT);
    let (_ws, response) = ws_from(&ns, None, SERVER_V4, &support::token())
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert!(ns.client_can_reach(service));

    let out = in_server(ipset_list).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("192.0.2.0/24 timeout "),
        "{ipset_list}: {text}"
    );
    let out = in_server(metrics).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("envelope_active_grants 1"),
        "{metrics}: {text}"
    );
    for line in [status, list] {
        let out = in_server(line).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = in_server(revoke).output().unwrap();
    assert!(
        out.status.success(),
        "{revoke}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !ns.client_can_reach(service),
        "{revoke} must close 192.0.2.0/24"
    );

    // After a crash the documented clean-up leaves no envelope rule behind.
    daemon.kill().unwrap();
    assert!(
        !envelope_lines(&ns).is_empty(),
        "SIGKILL leaves the guard in place"
    );
    let out = in_server(cleanup).output().unwrap();
    assert!(
        out.status.success(),
        "{cleanup}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(envelope_lines(&ns), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_in_flight_grant_leaves_no_rule() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let bins = FaultyBins::new();
    let base = ns.save_all();
    let mut daemon = Daemon::start(options_with(
        &ns,
        "iptables-restore",
        &[
            &format!("--iptables-dir={}", bins.path()),
            "--firewall-timeout=5s",
        ],
    ));
    // Every following restore takes 2 s; the grant is still running at SIGTERM.
    bins.set(Some("slow"));
    let attempt = async {
        ws_from(&ns, None, SERVER_V4, &support::token())
            .await
            .map(|_| ())
    };
    let terminate = async {
        testbed::eventually_async(EVENTUALLY, "the grant at iptables-restore", || async {
            bins.calls() > 0
        })
        .await;
        // The restore has its batch and is inside its 2 s: the grant is in flight.
        daemon.signal("TERM");
    };
    let (_outcome, ()) = tokio::join!(attempt, terminate);
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", daemon.logs());
    assert_eq!(
        ns.save_all(),
        base,
        "a rule survived SIGTERM during a grant\n{}",
        daemon.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_backend_guards_and_cleans_up_too() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let legacy = tempfile::tempdir().unwrap();
    for (name, target) in [
        ("iptables", "iptables-legacy"),
        ("ip6tables", "ip6tables-legacy"),
        ("iptables-restore", "iptables-legacy-restore"),
        ("ip6tables-restore", "ip6tables-legacy-restore"),
    ] {
        std::os::unix::fs::symlink(format!("/usr/sbin/{target}"), legacy.path().join(name))
            .unwrap();
    }
    let save = || {
        let v4 = ns.server_cmd(&["/usr/sbin/iptables-legacy-save"]);
        let v6 = ns.server_cmd(&["/usr/sbin/ip6tables-legacy-save"]);
        (
            testbed::normalize(&String::from_utf8_lossy(&v4.stdout)),
            testbed::normalize(&String::from_utf8_lossy(&v6.stdout)),
        )
    };
    // A host's filter table exists before the envelope starts; a fresh namespace's
    // is made on first use, so list it once.
    ns.server_cmd(&["/usr/sbin/iptables-legacy", "-S"]);
    ns.server_cmd(&["/usr/sbin/ip6tables-legacy", "-S"]);
    let base = (save(), ns.ipset_save());
    let mut daemon = Daemon::start(options(
        &ns,
        &[&format!("--iptables-dir={}", legacy.path().display())],
    ));
    assert!(
        daemon.logs().contains("backend=iptables+ipset (legacy)"),
        "{}",
        daemon.logs()
    );
    let service = addr(SERVER_V4, SERVICE_PORT);
    assert!(!ns.client_can_reach(service));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(service));
    close(ws).await;
    ns.wait_reach(service, false).await;
    let status = daemon.terminate(Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(
        (save(), ns.ipset_save()),
        base,
        "legacy rules or sets left behind"
    );
}

/// `envelopectl` in the server namespace against `daemon`, whatever it answers.
fn envelopectl_output(ns: &NetPair, daemon: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", &ns.server])
        .arg(support::envelopectl_bin())
        .arg(format!("--socket={}", daemon.admin_socket().display()))
        .args(args)
        .output()
        .expect("run envelopectl")
}

/// `envelopectl` in the server namespace against `daemon`, returning stdout.
pub(crate) fn envelopectl(ns: &NetPair, daemon: &Daemon, args: &[&str]) -> String {
    let out = envelopectl_output(ns, daemon, args);
    assert!(
        out.status.success(),
        "envelopectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A backend whose grants are kernel set elements with timeouts, as the
/// tests shared with `nftables_netns` read it.
pub(crate) struct SetBackend {
    /// Its `--firewall` name.
    pub firewall: &'static str,
    /// The IPv4 grant set's elements, each with the seconds the kernel still
    /// keeps it (0 for none).
    pub grants_v4: fn(&NetPair) -> Vec<(String, u64)>,
    /// The IPv4 proxy-port set's elements.
    pub proxy_v4: fn(&NetPair) -> Vec<(String, u64)>,
}

fn ipset_elements(ns: &NetPair, set: &str) -> Vec<(String, u64)> {
    ns.members_with_timeouts(set)
        .into_iter()
        .map(|(member, timeout)| (member, timeout.unwrap_or(0)))
        .collect()
}

const IPSET: SetBackend = SetBackend {
    firewall: "iptables",
    grants_v4: |ns| ipset_elements(ns, "envelope-v4"),
    proxy_v4: |ns| ipset_elements(ns, "envelope-proxy-v4"),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_closes_grants_after_sigkill_with_no_restart() {
    kernel_closes_grants_after_sigkill(&IPSET).await;
}

/// A SIGKILLed envelope revokes nothing: each element's kernel timeout
/// (deadline plus `--kernel-margin`) closes its grant and the proxy ports.
pub(crate) async fn kernel_closes_grants_after_sigkill(backend: &SetBackend) {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let _proxy = ns.listener(PROXY_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let proxy = addr(SERVER_V4, PROXY_PORT);
    // Sessions last 2 s (capped), and the kernel keeps elements 1 s longer.
    let mut daemon = Daemon::start(options_with(
        &ns,
        backend.firewall,
        &["--timeout=1s", "--max-hold=2s", "--kernel-margin=1s"],
    ));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    let listed = (backend.grants_v4)(&ns);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        (1..=3).contains(&listed[0].1),
        "kernel timeout = deadline (2 s) + margin (1 s): {listed:?}"
    );
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    // Nobody revokes now: the service stays open until the kernel's timeout.
    assert!(
        ns.client_can_reach(service),
        "granted until the kernel expires it"
    );
    // How soon (deadline + margin): the bench's "SIGKILL, N held: kernel closed all".
    ns.wait_reach(service, false).await;
    ns.wait_reach(proxy, false).await;
    assert_eq!((backend.grants_v4)(&ns), []);
    assert_eq!((backend.proxy_v4)(&ns), []);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_in_one_subnet_the_later_deadline_wins() {
    later_deadline_wins(&IPSET).await;
}

/// Two sessions of one subnet share one element whose kernel timeout follows
/// the later deadline, and shrinks back when the later session ends.
pub(crate) async fn later_deadline_wins(backend: &SetBackend) {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let daemon = Daemon::start(options_with(
        &ns,
        backend.firewall,
        &["--timeout=1s", "--max-clients=2"],
    ));
    let short = support::sign(&support::claims(support::SUBJECT, 20));
    let long = support::sign(&support::claims(support::SUBJECT, 300));
    let expires = |ns: &NetPair| tokio::task::block_in_place(|| (backend.grants_v4)(ns)[0].1);
    let (a, _) = ws_from(&ns, None, SERVER_V4, &short).await.unwrap();
    assert!(expires(&ns) <= 26, "short session: {}", expires(&ns));
    let (b, _) = ws_from(&ns, None, SERVER_V4, &long).await.unwrap();
    assert_eq!(
        (backend.grants_v4)(&ns).len(),
        1,
        "one element for the subnet"
    );
    let later = expires(&ns);
    assert!(
        (290..=306).contains(&later),
        "the later deadline wins: {later}"
    );
    // Closing the later session keeps the earlier one's access, with its timeout.
    close(b).await;
    daemon
        .eventually("the timeout to shrink back", || async {
            expires(&ns) <= 26
        })
        .await;
    assert!(
        ns.client_can_reach(service),
        "closing one must not cut the other"
    );
    let listed = envelopectl(&ns, &daemon, &["list", "--json"]);
    let grants: Vec<common::admin::Grant> = serde_json::from_str(&listed).unwrap();
    let left = grants[0].kernel_remaining_seconds.unwrap();
    assert!(
        (15..=26).contains(&left),
        "kernel remaining {left} s\n{listed}"
    );
    close(a).await;
    ns.wait_reach(service, false).await;
    assert_eq!((backend.grants_v4)(&ns), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_deleted_by_hand_shows_in_list_and_frees_the_slot() {
    let delete = ["/usr/sbin/ipset", "del", "envelope-v4", "192.0.2.0/24"];
    hand_deleted_grant_frees_the_slot("iptables", &delete).await;
}

/// A held grant's member deleted by hand (`delete`, run in the server
/// namespace) closes the subnet at once, shows as gone in `envelopectl list`,
/// and the revoke of it frees the slot. Shared with `nftables_netns`.
pub(crate) async fn hand_deleted_grant_frees_the_slot(backend: &'static str, delete: &[&str]) {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let daemon = Daemon::start(options_with(&ns, backend, &["--max-clients=1"]));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    let json = envelopectl(&ns, &daemon, &["list", "--json"]);
    let grants: Vec<common::admin::Grant> = serde_json::from_str(&json).unwrap();
    let left = grants[0].kernel_remaining_seconds.unwrap();
    assert!(
        (60..=130).contains(&left),
        "kernel time left: {left} s\n{json}"
    );
    ns.server_cmd(delete);
    assert!(!ns.client_can_reach(service));
    let json = envelopectl(&ns, &daemon, &["list", "--json"]);
    let grants: Vec<common::admin::Grant> = serde_json::from_str(&json).unwrap();
    assert_eq!(grants[0].kernel_remaining_seconds, Some(0), "{json}");
    assert!(envelopectl(&ns, &daemon, &["list"]).contains("gone"));
    close(ws).await;
    // The revoke of an absent member succeeds: the next client is served.
    let ws = served(&ns, "the slot freed after a hand-deleted member").await;
    assert!(ns.client_can_reach(service));
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_second_half_fails_is_rolled_back() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let before = ns.save_all();
    let mut daemon = Daemon::start(options(&ns, &["--max-clients=1"]));
    // Take the proxy-port set away by hand (its rule first: a referenced set
    // cannot be destroyed), so a grant's port members fail after its subnet went in.
    let rule = ns
        .save(false)
        .lines()
        .find(|l| l.contains("--match-set envelope-proxy-v4"))
        .unwrap()
        .to_owned();
    let mut args = vec!["/usr/sbin/iptables".to_owned(), "-w".into(), "-D".into()];
    args.extend(split_spec(rule.strip_prefix("-A ").unwrap()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(ns.server_cmd(&refs).status.success());
    assert!(ns
        .server_cmd(&["/usr/sbin/ipset", "destroy", "envelope-proxy-v4"])
        .status
        .success());
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    assert_eq!(
        ns.members("envelope-v4"),
        Vec::<String>::new(),
        "the subnet member must be rolled back"
    );
    assert!(!ns.client_can_reach(addr(SERVER_V4, SERVICE_PORT)));
    // The slot was freed: the next attempt reaches the firewall again (and fails the same way).
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(ns.save_all(), before, "nothing may be left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ipset_the_envelope_warns_once_and_uses_rules() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let before = ns.save_all();
    let mut daemon = Daemon::start(options(&ns, &["--ipset-unavailable"]));
    let logs = daemon.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("offers no ipset"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("WARN"), "{logs}");
    assert!(logs.contains("backend=iptables (nf_tables)"), "{logs}");
    assert_eq!(ns.ipset_save(), before.2, "the fallback creates no set");
    let ws = session(&ns, SERVER_V4, &daemon).await;
    let rules = ns.grant_rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains("-s 192.0.2.0/24"), "{rules:?}");
    assert!(ns.client_can_reach(service));
    close(ws).await;
    ns.wait_reach(service, false).await;
    assert!(daemon.terminate(Duration::from_secs(10)).success());
    assert_eq!(ns.save_all(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_only_listener_grants_through_the_v4_set_too() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    // Not dual-stack: the peer arrives as a plain IPv4 address, not IPv4-mapped.
    let daemon = Daemon::start(EnvelopeCmd {
        listen: format!("{SERVER_V4}:{ENVELOPE_PORT}"),
        ..options(&ns, &[])
    });
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert_eq!(ns.members("envelope-v4"), ["192.0.2.0/24"]);
    assert_eq!(ns.members("envelope-v6"), Vec::<String>::new());
    assert!(ns.client_can_reach(service));
    close(ws).await;
    ns.wait_reach(service, false).await;
}
