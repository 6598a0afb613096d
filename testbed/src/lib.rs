//! The test kit of the workspace, shared by the envelope's tests,
//! envelope-exec's tests, the benchmark and the soak: a network-namespace test
//! bed ([`NetPair`], below), the process launcher ([`launcher`]), the
//! envelope's command line ([`envelope`]), tokens ([`Issuer`]), one
//! poll-until-deadline wait ([`eventually`], [`Wait`]), the workspace's files
//! and binaries ([`testdata`], [`workspace_bin`]), a tiny HTTP server
//! ([`HttpStub`]) and the TLS client side ([`tls`]).
//!
//! Nothing here ever touches the host's own network namespace: every firewall
//! command runs inside a server namespace this module creates, and both
//! namespaces are deleted on drop, even when a test panics.
//!
//! ```text
//!  client ns (envc-PID-N)                 server ns (envs-PID-N)
//!  envc0 192.0.2.2/24, 2001:db8::2/64 ── env0 192.0.2.1/24, 2001:db8::1/64
//!        (+ 198.18.K.2/24 on demand)            (route 198.18.0.0/15 dev env0)
//! ```

pub mod envelope;
mod faulty;
mod http_stub;
mod kernel;
pub mod launcher;
mod reach;
pub mod tls;
mod tokens;
mod wait;
mod workspace;

pub use faulty::FaultyBins;
pub use http_stub::{Answer, HttpStub};
pub use kernel::{normalize, normalize_ipset};
pub use reach::Listener;
pub use tokens::Issuer;
pub use wait::{eventually, eventually_async, Outcome, TimedOut, Wait, EVENTUALLY};
pub use workspace::{built_bin, testdata, workspace, workspace_bin};

use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

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
