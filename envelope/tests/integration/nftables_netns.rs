//! The `nftables` backend end to end, in namespaces as `firewall_netns` does
//! it (whose session helpers these tests share): the envelope binary runs in
//! a server namespace with `--firewall nftables`, clients connect from the
//! client namespace over a veth pair, and the kernel's side is read with
//! `nft` inside the server namespace (`nft` only inspects and tampers here:
//! the envelope itself never runs it). `nft monitor` shows the kernel's
//! transactions, each closed by a `# new generation` line. Needs root,
//! iproute2 and nft; fails (never skips) without them.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::firewall_netns::{
    addr, close, envelopectl, kernel_closes_grants_after_sigkill, later_deadline_wins,
    options_with, session, status_from, ws_from, SetBackend, LIFETIME, PROXY_PORT,
};
use crate::support::{self, Daemon, EnvelopeCmd, EVENTUALLY};
use testbed::{NetPair, ENVELOPE_PORT, SERVER_V4, SERVER_V6, SERVICE_PORT};

fn options(ns: &NetPair, extra: &[&str]) -> EnvelopeCmd {
    options_with(ns, "nftables", extra)
}

/// `nft ARGS` in the server namespace; stdout (panics on failure).
fn nft(ns: &NetPair, args: &[&str]) -> String {
    let mut all = vec!["nft"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&ns.server_cmd(&all).stdout).into_owned()
}

/// The whole ruleset without counters: what must be as found after an exit.
fn ruleset(ns: &NetPair) -> String {
    nft(ns, &["-s", "list", "ruleset"])
}

/// The elements of one of the envelope's sets (`192.0.2.0/24`, `8080`),
/// each with the seconds the kernel still keeps it; empty when the set (or
/// the table) is not there.
fn elements(ns: &NetPair, set: &str) -> Vec<(String, u64)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.server, "nft", "-j", "list", "set"])
        .args(["inet", "envelope", set])
        .output()
        .expect("run nft");
    if !out.status.success() {
        return Vec::new();
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j");
    let sets = json["nftables"].as_array().expect("nftables array");
    let elem = sets
        .iter()
        .find_map(|o| o["set"]["elem"].as_array())
        .cloned()
        .unwrap_or_default();
    elem.iter()
        .map(|e| {
            let e = &e["elem"];
            let val = &e["val"];
            let text = match val["prefix"].as_object() {
                Some(p) => format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]),
                None => val.to_string(),
            };
            (text, e["expires"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn keys(ns: &NetPair, set: &str) -> Vec<String> {
    elements(ns, set).into_iter().map(|(k, _)| k).collect()
}

/// The handle of the guard rule that mentions `text` (e.g. `@proxy-v4`).
fn rule_handle(ns: &NetPair, text: &str) -> String {
    let listing = nft(ns, &["-a", "list", "chain", "inet", "envelope", "guard"]);
    let line = listing
        .lines()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no rule with {text}:\n{listing}"));
    line.rsplit("# handle ").next().unwrap().trim().to_owned()
}

/// `nft monitor` in the server namespace, recording from the moment it
/// reports a probe transaction of our own.
struct Monitor {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Monitor {
    async fn start(ns: &NetPair) -> Monitor {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.server, "nft", "monitor"])
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft monitor");
        let monitor = Monitor { child, out };
        testbed::eventually_async(EVENTUALLY, "nft monitor reporting", || async {
            nft(ns, &["add", "table", "inet", "probe"]);
            nft(ns, &["delete", "table", "inet", "probe"]);
            monitor.text().contains("add table inet probe")
        })
        .await;
        monitor
    }

    fn text(&self) -> String {
        let mut text = String::new();
        let mut file = self.out.reopen().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    }

    /// The element events of each transaction so far, one string per
    /// transaction (its lines joined), probe transactions left out.
    fn transactions(&self) -> Vec<String> {
        let text = self.text();
        text.split("# new generation")
            .map(|block| {
                block
                    .lines()
                    .filter(|l| l.contains(" element inet envelope "))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .filter(|block| !block.is_empty())
            .collect()
    }

    /// Waits ([`EVENTUALLY`]) until some transaction contains every one of `events`.
    async fn wait_transaction(&self, events: &[&str]) -> String {
        let what = format!("a transaction with {events:?}");
        testbed::eventually_async(EVENTUALLY, &what, || async {
            let all = self.transactions();
            match all.iter().find(|t| events.iter().all(|e| t.contains(e))) {
                Some(t) => Ok(t.clone()),
                None => Err(format!("; transactions:\n{}", all.join("\n--\n"))),
            }
        })
        .await
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_v6_and_mapped_peers_are_let_in_only_while_held() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let _proxy = ns.listener(PROXY_PORT, LIFETIME);
    let v4 = addr(SERVER_V4, SERVICE_PORT);
    let v6 = addr(SERVER_V6, SERVICE_PORT);
    let proxy4 = addr(SERVER_V4, PROXY_PORT);
    let proxy6 = addr(SERVER_V6, PROXY_PORT);
    let before = ruleset(&ns);
    assert!(ns.client_can_reach(v4), "open before the envelope starts");

    let mut daemon = Daemon::start(options(&ns, &[]));
    assert!(
        daemon.logs().contains("backend=nftables"),
        "{}",
        daemon.logs()
    );
    let status = envelopectl(&ns, &daemon, &["status", "--json"]);
    assert!(status.contains(r#""firewall":"nftables""#), "{status}");
    // Refused (a TCP reset, which client_can_reach insists on), both families.
    for to in [v4, v6, proxy4, proxy6] {
        assert!(
            !ns.client_can_reach(to),
            "{to} must be refused before any grant"
        );
    }
    crate::firewall_netns::lo_works(&ns);

    // An IPv4 client on the dual-stack listener arrives IPv4-mapped: it is
    // the v4 set's /24.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert_eq!(keys(&ns, "grants-v4"), ["192.0.2.0/24"]);
    assert_eq!(keys(&ns, "grants-v6"), Vec::<String>::new());
    assert_eq!(keys(&ns, "proxy-v4"), [PROXY_PORT.to_string()]);
    assert!(ns.client_can_reach(v4));
    assert!(ns.client_can_reach(proxy4));
    assert!(!ns.client_can_reach(v6));
    assert!(!ns.client_can_reach(proxy6));
    close(ws).await;
    ns.wait_reach(v4, false).await;
    assert!(
        !ns.client_can_reach(proxy4),
        "the proxy port goes with the last grant"
    );
    assert_eq!(keys(&ns, "grants-v4"), Vec::<String>::new());
    assert_eq!(keys(&ns, "proxy-v4"), Vec::<String>::new());

    // IPv6.
    let ws = session(&ns, SERVER_V6, &daemon).await;
    assert_eq!(keys(&ns, "grants-v6"), ["2001:db8::/64"]);
    assert_eq!(keys(&ns, "proxy-v6"), [PROXY_PORT.to_string()]);
    assert!(ns.client_can_reach(v6));
    assert!(ns.client_can_reach(proxy6));
    assert!(!ns.client_can_reach(v4));
    close(ws).await;
    ns.wait_reach(v6, false).await;
    assert!(!ns.client_can_reach(proxy6));
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(
        ruleset(&ns),
        before,
        "a clean exit leaves the ruleset as found"
    );
    assert!(ns.client_can_reach(v4), "the guard is gone after exit");

    // A plain IPv4 peer, on an IPv4-only listener.
    let mut daemon = Daemon::start(EnvelopeCmd {
        listen: format!("{SERVER_V4}:{ENVELOPE_PORT}"),
        ..options(&ns, &[])
    });
    assert!(!ns.client_can_reach(v4));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert_eq!(keys(&ns, "grants-v4"), ["192.0.2.0/24"]);
    assert!(ns.client_can_reach(v4));
    close(ws).await;
    ns.wait_reach(v4, false).await;
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(ruleset(&ns), before);
}

const NFTABLES: SetBackend = SetBackend {
    firewall: "nftables",
    grants_v4: |ns| elements(ns, "grants-v4"),
    proxy_v4: |ns| elements(ns, "proxy-v4"),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_closes_grants_after_sigkill_with_no_restart() {
    kernel_closes_grants_after_sigkill(&NFTABLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_in_one_subnet_the_later_deadline_wins() {
    later_deadline_wins(&NFTABLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_ports_come_and_go_in_the_transaction_of_the_first_and_last_grant() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let mut daemon = Daemon::start(options(&ns, &["--max-clients=2"]));
    let monitor = Monitor::start(&ns).await;
    // First grant: the subnet and the port in one transaction.
    let ws = session(&ns, SERVER_V4, &daemon).await;
    let first = monitor
        .wait_transaction(&[
            "add element inet envelope grants-v4 { 192.0.2.0/24",
            &format!("add element inet envelope proxy-v4 {{ {PROXY_PORT}"),
        ])
        .await;
    assert_eq!(first.lines().count(), 2, "{first}");
    // Last grant gone: both deleted in one transaction.
    close(ws).await;
    let last = monitor
        .wait_transaction(&[
            "delete element inet envelope grants-v4 { 192.0.2.0/24",
            &format!("delete element inet envelope proxy-v4 {{ {PROXY_PORT}"),
        ])
        .await;
    assert_eq!(last.lines().count(), 2, "{last}");

    // Take the proxy-v4 set away by hand (its rule first: a set a rule
    // uses cannot be deleted): the port half of the next first grant fails,
    // so the kernel refuses the whole transaction and the subnet never goes in.
    let handle = rule_handle(&ns, "@proxy-v4");
    nft(
        &ns,
        &[
            "delete", "rule", "inet", "envelope", "guard", "handle", &handle,
        ],
    );
    nft(&ns, &["delete", "set", "inet", "envelope", "proxy-v4"]);
    let before = ruleset(&ns);
    let (status, _) = status_from(&ns, None, SERVER_V4).await;
    assert_eq!(status, 500, "{}", daemon.logs());
    assert_eq!(
        ruleset(&ns),
        before,
        "a refused transaction changes nothing"
    );
    assert_eq!(keys(&ns, "grants-v4"), Vec::<String>::new());
    assert!(!ns.client_can_reach(service));
    let logs = daemon.logs();
    assert!(
        logs.contains("nothing was applied") && logs.contains("proxy-v4"),
        "the refusal names the failing request:\n{logs}"
    );
    // The slot was freed and IPv6 (whose sets are intact) still works.
    let ws = session(&ns, SERVER_V6, &daemon).await;
    assert_eq!(keys(&ns, "grants-v6"), ["2001:db8::/64"]);
    close(ws).await;
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(elements(&ns, "grants-v6"), Vec::new());
    assert!(!ruleset(&ns).contains("envelope"), "{}", ruleset(&ns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_deleted_by_hand_shows_in_list_and_frees_the_slot() {
    let delete = [
        "nft",
        "delete",
        "element",
        "inet",
        "envelope",
        "grants-v4",
        "{ 192.0.2.0/24 }",
    ];
    crate::firewall_netns::hand_deleted_grant_frees_the_slot("nftables", &delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_cleanup_and_exit_leave_the_ruleset_as_found_and_foreign_tables_alone() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    // Someone else's table, with a set and a base chain, exists before.
    nft(&ns, &["add", "table", "inet", "foreign"]);
    nft(
        &ns,
        &["add", "set", "inet", "foreign", "s", "{ type ipv4_addr; }"],
    );
    nft(
        &ns,
        &[
            "add",
            "chain",
            "inet",
            "foreign",
            "c",
            "{ type filter hook input priority 10; }",
        ],
    );
    let before = ruleset(&ns);

    // SIGKILL leaves the table and the grant; the next start removes them
    // before its port opens.
    let mut daemon = Daemon::start(options(&ns, &[]));
    let fresh = ruleset(&ns);
    let ws = session(&ns, SERVER_V4, &daemon).await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    drop((ws, daemon));
    assert_eq!(
        keys(&ns, "grants-v4"),
        ["192.0.2.0/24"],
        "SIGKILL cannot clean up"
    );
    let mut daemon = Daemon::start(options(&ns, &[]));
    assert_eq!(
        keys(&ns, "grants-v4"),
        Vec::<String>::new(),
        "stale grant survived"
    );
    assert_eq!(ruleset(&ns), fresh, "only a fresh table");
    assert!(!ns.client_can_reach(service));

    // A foreign table added while it runs survives its exit.
    nft(&ns, &["add", "table", "ip", "during"]);
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    drop(ws);
    assert!(ruleset(&ns).contains("table ip during"), "{}", ruleset(&ns));
    nft(&ns, &["delete", "table", "ip", "during"]);
    assert_eq!(ruleset(&ns), before);

    // `envelope --cleanup` removes what a killed instance left.
    let mut daemon = Daemon::start(options(&ns, &[]));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5));
    drop(ws);
    assert_ne!(ruleset(&ns), before);
    let out = ns.server_cmd(&[support::envelope_bin().to_str().unwrap(), "--cleanup"]);
    assert!(out.status.success());
    assert_eq!(
        ruleset(&ns),
        before,
        "--cleanup leaves the ruleset as found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_by_hand_fails_grants_until_restart_and_exit_is_clean() {
    let ns = NetPair::new();
    let _service = ns.listener(SERVICE_PORT, LIFETIME);
    let service = addr(SERVER_V4, SERVICE_PORT);
    let before = ruleset(&ns);
    let mut daemon = Daemon::start(options(&ns, &["--max-clients=2", "--timeout=1s"]));
    // Two sessions share a subnet, the later deadline in force.
    let short = support::sign(&support::claims(support::SUBJECT, 20));
    let long = support::sign(&support::claims(support::SUBJECT, 300));
    let (a, _) = ws_from(&ns, None, SERVER_V4, &short).await.unwrap();
    let (b, _) = ws_from(&ns, None, SERVER_V4, &long).await.unwrap();
    nft(&ns, &["delete", "table", "inet", "envelope"]);
    assert!(
        ns.client_can_reach(service),
        "nothing guards the device now"
    );
    // The envelope does not repair its table while it runs. The later
    // session ends: the subnet and the ports would be re-added with the
    // earlier deadline, into sets that are gone; that revoke succeeds and
    // frees its slot.
    close(b).await;
    // A new grant fails on the missing table (500) once the slot is free;
    // 503 while a stuck revoke still holds it.
    daemon
        .eventually(
            "the slot freed after a revoke into a deleted table",
            || async { status_from(&ns, None, SERVER_V6).await.0 == 500 },
        )
        .await;
    close(a).await;
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{}",
        daemon.logs()
    );
    assert_eq!(ruleset(&ns), before);
    // The next start puts the guard back.
    let daemon = Daemon::start(options(&ns, &[]));
    assert!(!ns.client_can_reach(service));
    let ws = session(&ns, SERVER_V4, &daemon).await;
    assert!(ns.client_can_reach(service));
    close(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ipset_the_warning_names_the_nftables_backend() {
    let ns = NetPair::new();
    let mut daemon = Daemon::start(options_with(&ns, "iptables", &["--ipset-unavailable"]));
    let logs = daemon.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("offers no ipset"))
        .unwrap_or_else(|| panic!("no fallback warning:\n{logs}"));
    assert!(
        warning.contains("--firewall nftables is the fast alternative"),
        "{warning}"
    );
    assert!(
        daemon.terminate(Duration::from_secs(10)).success(),
        "{logs}"
    );
}
