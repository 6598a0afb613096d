//! Network-namespace test bed for the envelope's firewall tests, benchmark and soak,
//! and the process launcher they share ([`launcher`]). Nothing here ever
//! touches the host's own network namespace: every firewall command runs inside
//! a server namespace this module creates, and both namespaces are deleted on
//! drop, even when a test panics.
//!
//! ```text
//!  client ns (envc-PID-N)                 server ns (envs-PID-N)
//!  envc0 192.0.2.2/24, 2001:db8::2/64 ── env0 192.0.2.1/24, 2001:db8::1/64
//!        (+ 198.18.K.2/24 on demand)            (route 198.18.0.0/15 dev env0)
//! ```

pub mod launcher;
pub mod tls;

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SERVER_V4: &str = "192.0.2.1";
pub const CLIENT_V4: &str = "192.0.2.2";
pub const SERVER_V6: &str = "2001:db8::1";
pub const CLIENT_V6: &str = "2001:db8::2";
/// The server-side interface, i.e. `--device`.
pub const DEVICE: &str = "env0";
pub const CLIENT_DEVICE: &str = "envc0";
/// The envelope's port inside the server namespace.
pub const ENVELOPE_PORT: u16 = 8443;
/// The "measurement service" the envelope guards.
pub const SERVICE_PORT: u16 = 9999;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Fails (never skips) when the test bed cannot be built.
pub fn require_root_and_ip() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the firewall namespace tests must run as root (they create network namespaces and \
         drive iptables inside them); run `cargo test` as root"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.as_ref().is_ok_and(|o| o.status.success()),
        "the firewall namespace tests need iproute2's `ip` on PATH: {ip:?}"
    );
    for bin in [
        "iptables",
        "ip6tables",
        "iptables-restore",
        "ip6tables-restore",
        "iptables-save",
        "ip6tables-save",
        "ipset",
    ] {
        assert!(
            std::path::Path::new("/usr/sbin").join(bin).exists(),
            "the firewall namespace tests need /usr/sbin/{bin}"
        );
    }
}

/// Runs a command and panics with its output when it fails.
pub fn run(args: &[&str]) -> Output {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A server and a client namespace joined by a veth pair.
#[derive(Debug)]
pub struct NetPair {
    pub server: String,
    pub client: String,
}

impl NetPair {
    #[allow(clippy::new_without_default)] // it creates namespaces: not a plain default value
    pub fn new() -> NetPair {
        require_root_and_ip();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let pair = NetPair {
            server: format!("envs-{pid}-{n}"),
            client: format!("envc-{pid}-{n}"),
        };
        // Stale ones from an earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &pair.server])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &pair.client])
            .output();
        // From here on Drop removes whatever was created.
        run(&["ip", "netns", "add", &pair.server]);
        run(&["ip", "netns", "add", &pair.client]);
        let (s, c) = (pair.server.as_str(), pair.client.as_str());
        run(&[
            "ip",
            "-n",
            s,
            "link",
            "add",
            DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_DEVICE,
            "netns",
            c,
        ]);
        for (ns, dev, v4, v6) in [
            (s, DEVICE, SERVER_V4, SERVER_V6),
            (c, CLIENT_DEVICE, CLIENT_V4, CLIENT_V6),
        ] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // A host with a firewall has a filter table. With nf_tables an absent
        // table and an empty one with ACCEPT policies are the same thing, but
        // `iptables-save` prints them differently, and the envelope cannot
        // delete a table through iptables; so make it exist before any snapshot.
        pair.server_cmd(&[
            "/usr/sbin/iptables",
            "-w",
            "-t",
            "filter",
            "-P",
            "INPUT",
            "ACCEPT",
        ]);
        pair.server_cmd(&[
            "/usr/sbin/ip6tables",
            "-w",
            "-t",
            "filter",
            "-P",
            "INPUT",
            "ACCEPT",
        ]);
        pair
    }

    /// Runs a command inside the server namespace (panics on failure).
    pub fn server_cmd(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", self.server.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Gives the client `count` more addresses, 198.18.K.2/24 for K in 1..=count,
    /// each in its own /24, and routes them from the server.
    pub fn add_client_subnets(&self, count: u8) -> Vec<IpAddr> {
        let addrs: Vec<String> = (1..=count).map(|k| format!("198.18.{k}.2/24")).collect();
        self.add_client_addrs(&addrs);
        run(&[
            "ip",
            "-n",
            &self.server,
            "route",
            "add",
            "198.18.0.0/15",
            "dev",
            DEVICE,
        ]);
        addrs
            .iter()
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
            .collect()
    }

    /// Gives the client `count` more IPv6 addresses, 2001:db8:0:K::2/64 for K in
    /// 1..=count, each in its own /64, and routes 2001:db8::/32 from the server.
    pub fn add_client_v6_subnets(&self, count: u16) -> Vec<IpAddr> {
        let addrs: Vec<String> = (1..=count)
            .map(|k| format!("2001:db8:0:{k:x}::2/64"))
            .collect();
        self.add_client_addrs(&addrs);
        run(&[
            "ip",
            "-n",
            &self.server,
            "-6",
            "route",
            "add",
            "2001:db8::/32",
            "dev",
            DEVICE,
        ]);
        addrs
            .iter()
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
            .collect()
    }

    /// Adds addresses (`ADDR/PREFIX`) to the client's device in one batch, with
    /// no duplicate address detection. Routing from the server is the caller's.
    pub fn add_client_addrs(&self, addrs: &[String]) {
        let mut batch = String::new();
        for addr in addrs {
            let nodad = if addr.contains(':') { " nodad" } else { "" };
            batch.push_str(&format!("addr add {addr} dev {CLIENT_DEVICE}{nodad}\n"));
        }
        let mut child = Command::new("ip")
            .args(["-n", &self.client, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(batch.as_bytes())
                .unwrap();
        }
        assert!(child.wait().unwrap().success(), "adding client addresses");
    }

    /// `iptables-save` (v4) or `ip6tables-save` (v6) of the server namespace,
    /// normalized: no `#` lines, no `[packets:bytes]` counters.
    pub fn save(&self, v6: bool) -> String {
        let bin = if v6 {
            "/usr/sbin/ip6tables-save"
        } else {
            "/usr/sbin/iptables-save"
        };
        let out = self.server_cmd(&[bin]);
        normalize(&String::from_utf8_lossy(&out.stdout))
    }

    /// Both families' normalized dumps.
    pub fn save_both(&self) -> (String, String) {
        (self.save(false), self.save(true))
    }

    /// `ipset save` of the server namespace, normalized: no random `initval`,
    /// no ticking member timeouts (see [`members_with_timeouts`] for those).
    pub fn ipset_save(&self) -> String {
        normalize_ipset(&self.ipset_save_raw())
    }

    fn ipset_save_raw(&self) -> String {
        let out = self.server_cmd(&["/usr/sbin/ipset", "save"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Both iptables dumps and the ipset dump: everything the envelope may change.
    pub fn save_all(&self) -> (String, String, String) {
        let (v4, v6) = self.save_both();
        (v4, v6, self.ipset_save())
    }

    /// The members of one set (`192.0.2.0/24`, `8080`), without timeouts.
    pub fn members(&self, set: &str) -> Vec<String> {
        self.members_with_timeouts(set)
            .into_iter()
            .map(|(member, _)| member)
            .collect()
    }

    /// The members of one set with their remaining kernel timeout in seconds.
    pub fn members_with_timeouts(&self, set: &str) -> Vec<(String, Option<u64>)> {
        members_in(&self.ipset_save_raw(), set)
    }

    /// Every grant the kernel holds, whichever backend: envelope grant rules from
    /// both iptables dumps, and members of the envelope's grant sets.
    pub fn grant_rules(&self) -> Vec<String> {
        let (v4, v6) = self.save_both();
        let rules = v4
            .lines()
            .chain(v6.lines())
            .filter(|l| l.contains("envelope: grant "))
            .map(str::to_owned);
        let dump = self.ipset_save_raw();
        let members = ["envelope-v4", "envelope-v6"].into_iter().flat_map(|set| {
            members_in(&dump, set)
                .into_iter()
                .map(move |(m, _)| format!("add {set} {m}"))
        });
        rules.chain(members).collect()
    }

    /// Polls `grant_rules` until it has `count` lines (bounded).
    pub fn wait_grant_rules(&self, count: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let rules = self.grant_rules();
            if rules.len() == count {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} grant rules within {within:?}, have {rules:#?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs `f` on a fresh thread that has joined the namespace `ns`. Sockets
    /// created there stay in that namespace after the thread ends.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// A TCP connection from the client namespace (optionally from `local`).
    pub fn connect_from_client(
        &self,
        local: Option<IpAddr>,
        to: SocketAddr,
    ) -> io::Result<TcpStream> {
        Self::in_ns(&self.client, move || connect(local, to))
    }

    /// A TCP connection made inside the server namespace.
    pub fn connect_in_server(&self, to: SocketAddr) -> io::Result<TcpStream> {
        Self::in_ns(&self.server, move || connect(None, to))
    }

    /// Whether a TCP connection from the client to `to` is accepted (`true`) or
    /// refused (`false`); any other outcome (e.g. a timeout) panics.
    pub fn client_can_reach(&self, to: SocketAddr) -> bool {
        match self.connect_from_client(None, to) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => false,
            Err(e) => panic!("connect {to} from the client: unexpected {e}"),
        }
    }

    /// Polls until `client_can_reach(to) == want` (bounded); returns how long it took.
    pub fn wait_reach(&self, to: SocketAddr, want: bool, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.client_can_reach(to) == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{to} still {} after {within:?}",
                if want { "refused" } else { "accepted" }
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TCP service in the server namespace on `port` (IPv4 and IPv6), which
    /// accepts and closes connections until dropped (at most `lifetime`).
    pub fn listener(&self, port: u16, lifetime: Duration) -> Listener {
        Self::listener_in(&self.server, port, lifetime)
    }

    /// Like [`NetPair::listener`], in the namespace `ns`.
    pub fn listener_in(ns: &str, port: u16, lifetime: Duration) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let sockets = Self::in_ns(ns, move || {
            let v4 = TcpListener::bind(("0.0.0.0", port)).unwrap();
            let v6 =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            v6.set_only_v6(true).unwrap();
            v6.set_reuse_address(true).unwrap();
            v6.bind(&SocketAddr::from(([0u16; 8], port)).into())
                .unwrap();
            v6.listen(128).unwrap();
            let v6: TcpListener = v6.into();
            (v4, v6)
        });
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (v4, v6) = sockets;
            v4.set_nonblocking(true).unwrap();
            v6.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + lifetime;
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let mut idle = true;
                for listener in [&v4, &v6] {
                    if let Ok((stream, _)) = listener.accept() {
                        drop(stream);
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Listener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A running test service; stops on drop.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(local: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let domain = if to.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(local) = local {
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The members of `set` in an `ipset save` dump, with their timeouts (seconds).
fn members_in(dump: &str, set: &str) -> Vec<(String, Option<u64>)> {
    let prefix = format!("add {set} ");
    dump.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            let member = words.next().unwrap_or_default().to_owned();
            let timeout = words
                .skip_while(|w| *w != "timeout")
                .nth(1)
                .and_then(|t| t.parse().ok());
            (member, timeout)
        })
        .collect()
}

/// Drops the random `initval` of hash sets and the ticking timeouts of members
/// from an `ipset save` dump, so two dumps of the same sets compare equal.
pub fn normalize_ipset(dump: &str) -> String {
    let mut out = String::new();
    for line in dump.lines() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "initval") {
            words.drain(at..(at + 2).min(words.len()));
        }
        if words.first() == Some(&"add") {
            if let Some(at) = words.iter().position(|w| *w == "timeout") {
                words.drain(at..(at + 2).min(words.len()));
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// Drops `#` lines and `[packets:bytes]` counters from an iptables-save dump.
pub fn normalize(dump: &str) -> String {
    let mut out = String::new();
    for line in dump.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(at)) if line.ends_with(']') => &line[..at],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A directory of `iptables`, `ip6tables`, `iptables-restore`, `ip6tables-restore`
/// scripts that exec the real binaries in /usr/sbin, except that a restore call can
/// be made to fail (`fail`: exit 1 after reading stdin), hang (`hang`: sleep 60) or
/// exit 4 as if the xtables lock were held (`lock`). Restore calls are counted in
/// `calls`; the `fault` file holds `ACTION` (every restore call) or `ACTION N`
/// (only the Nth).
#[derive(Debug)]
pub struct FaultyBins {
    pub dir: tempfile::TempDir,
}

impl FaultyBins {
    #[allow(clippy::new_without_default)] // it writes scripts to disk: not a plain default value
    pub fn new() -> FaultyBins {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "iptables",
            "ip6tables",
            "iptables-restore",
            "ip6tables-restore",
        ] {
            let fault = if name.ends_with("-restore") {
                r#"
# The envelope may start a restore ahead of time (a warm spare): decide only
# once the batch has arrived, and count only restores that got one.
case "$1" in --version|-V) exec /usr/sbin/$(basename "$0") "$@" ;; esac
input=$(cat)
[ -n "$input" ] || exit 0
n=$(cat "$dir/calls" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$dir/calls"
if [ -f "$dir/fault" ]; then
  read -r action at < "$dir/fault" || true
  if [ -z "$at" ] || [ "$at" = "$n" ]; then
    case "$action" in
      fail) echo "injected failure (call $n)" >&2; exit 1 ;;
      lock) echo "Another app is currently holding the xtables lock (call $n)" >&2; exit 4 ;;
      hang) exec sleep 60 ;;
      slow) sleep 2 ;;
    esac
  fi
fi
printf '%s\n' "$input" >> "$dir/batches"
printf '%s\n' "$input" | /usr/sbin/$(basename "$0") "$@"
rc=$?; echo "-> exit $rc" >> "$dir/batches"; exit $rc
"#
            } else {
                ""
            };
            let script = format!(
                "#!/bin/sh\ndir='{}'\n{fault}exec /usr/sbin/{name} \"$@\"\n",
                dir.path().display()
            );
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FaultyBins { dir }
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Restore calls so far.
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `Some("fail")`, `Some("hang")`, `Some("lock")`, `Some("slow")` (2 s, then succeed) for every following restore
    /// call, or `None` to stop failing.
    pub fn set(&self, action: Option<&str>) {
        let path = self.dir.path().join("fault");
        match action {
            Some(action) => std::fs::write(path, format!("{action}\n")).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Makes only the `n`th restore call (counting from 1) do `action`.
    pub fn set_nth(&self, action: &str, n: usize) {
        std::fs::write(self.dir.path().join("fault"), format!("{action} {n}\n")).unwrap();
    }
}
