//! The soak's laboratory: the namespaces and client addresses (from `testbed`),
//! the guarded service, a signing key, the envelope process (its flags here,
//! started and signalled through `testbed`'s launcher), its admin API over the
//! unix socket, and raw reads of the kernel.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use common::admin::Grant;
use common::{Algorithm, Claims, Clock as _, PrivateKey, Signer};
use testbed::launcher::{Launch, Process};
use testbed::{NetPair, DEVICE};

pub const MACHINE: &str = "soak-machine";
pub const SUBJECT: &str = "ndt";
pub const ENVELOPE_PORT: u16 = 8443;
pub const SERVICE_PORT: u16 = 9999;
pub const PROXY_PORT: u16 = 8080;
/// Envelope flags the model depends on.
pub const TIMEOUT_SECS: u64 = 2;
pub const MAX_HOLD_SECS: u64 = 5;
pub const MARGIN_SECS: u64 = 1;
pub const MAX_CLIENTS: usize = 5;
/// `--firewall-timeout`: how long a stalled netlink exchange waits (and any
/// iptables command: the default; less is too tight on a loaded machine).
pub const FIREWALL_TIMEOUT: &str = "5s";

/// Client address counts: IPv4 /24s and IPv6 /64s, two addresses each.
const V4_SUBNETS: u8 = 5;
const V6_SUBNETS: u16 = 3;

/// The `--firewall` backend the soak drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `iptables`: the guard's rules, grants as ipset members.
    Iptables,
    /// `nftables`: the table `inet envelope`, grants as set elements.
    Nftables,
}

impl Backend {
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

pub struct Lab {
    pub ns: NetPair,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub envelope_bin: PathBuf,
    pub testdata: PathBuf,
    /// Every client source address, IPv4 first.
    pub sources: Vec<IpAddr>,
    /// The key tokens are signed with; replaced by a key rotation.
    signer: std::sync::Mutex<Signer>,
    rotations: std::sync::atomic::AtomicU32,
    _service: testbed::Listener,
    _proxy: testbed::Listener,
}

impl Lab {
    pub fn new(envelope_bin: PathBuf, testdata: PathBuf, backend: Backend) -> anyhow::Result<Lab> {
        let ns = NetPair::new();
        let lifetime = Duration::from_secs(6 * 3600);
        let service = ns.listener(SERVICE_PORT, lifetime);
        let proxy = ns.listener(PROXY_PORT, lifetime);
        let mut sources: Vec<IpAddr> = vec![testbed::CLIENT_V4.parse()?];
        let v4 = ns.add_client_subnets(V4_SUBNETS);
        // A second address in each /24 and /64: two sessions sharing one grant.
        let second: Vec<String> = (1..=V4_SUBNETS)
            .map(|k| format!("198.18.{k}.3/24"))
            .chain((1..=V6_SUBNETS).map(|k| format!("2001:db8:0:{k:x}::3/64")))
            .collect();
        let v6 = ns.add_client_v6_subnets(V6_SUBNETS);
        ns.add_client_addrs(&second);
        for (k, ip) in v4.iter().enumerate() {
            sources.push(*ip);
            sources.push(format!("198.18.{}.3", k + 1).parse()?);
        }
        sources.push(testbed::CLIENT_V6.parse()?);
        for (k, ip) in v6.iter().enumerate() {
            sources.push(*ip);
            sources.push(format!("2001:db8:0:{:x}::3", k + 1).parse()?);
        }
        let dir = tempfile::tempdir()?;
        let key = PrivateKey::generate(Algorithm::EdDSA, "soak")?;
        std::fs::write(
            dir.path().join("verify.jwk.pub"),
            key.public_key().to_jwk_json(),
        )?;
        Ok(Lab {
            ns,
            backend,
            dir,
            envelope_bin,
            testdata,
            sources,
            signer: std::sync::Mutex::new(Signer::new(key)),
            rotations: Default::default(),
            _service: service,
            _proxy: proxy,
        })
    }

    /// A token that expires `exp_in` seconds from now.
    pub fn token(&self, exp_in: u64) -> String {
        Self::token_from(&self.signer.lock().unwrap(), exp_in)
    }

    /// Writes a new verify key (new kid) over the old file; tokens are signed
    /// with it from now on. Returns the old signer, whose tokens must be refused
    /// once the envelope has reloaded.
    pub fn rotate_key(&self) -> anyhow::Result<Signer> {
        let n = self
            .rotations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let key = PrivateKey::generate(Algorithm::EdDSA, &format!("soak-{n}"))?;
        let path = self.dir.path().join("verify.jwk.pub");
        let next = self.dir.path().join("verify.jwk.pub.next");
        std::fs::write(&next, key.public_key().to_jwk_json())?;
        std::fs::rename(&next, &path)?;
        Ok(std::mem::replace(
            &mut *self.signer.lock().unwrap(),
            Signer::new(key),
        ))
    }

    /// A token from `signer` (the current key, or an old one), valid for `exp_in` s.
    pub fn token_from(signer: &Signer, exp_in: u64) -> String {
        let now = unix_now();
        let claims = Claims::for_machine("locate", SUBJECT, MACHINE, now, now + exp_in as i64);
        signer.sign(&claims).expect("signing a soak token")
    }

    /// `POST /v1/reload`.
    pub fn reload(&self) -> anyhow::Result<()> {
        self.admin("POST", "/v1/reload").map(drop)
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Starts the envelope in the server namespace, optionally with a netlink
    /// fault. Every instance of the run appends to one log.
    pub fn envelope(&self, fault: Option<&str>) -> anyhow::Result<Envelope> {
        let mut launch = Launch::new(&self.envelope_bin, self.dir.path().join("envelope.log"))
            .append_log()
            .in_netns(&self.ns.server)
            .arg(format!("--listen-address=:{ENVELOPE_PORT}"))
            .arg(format!("--firewall={}", self.backend.flag()))
            .arg(format!("--device={DEVICE}"))
            .arg(format!("--proxy-ports={PROXY_PORT}"))
            .arg(format!(
                "--verify-key={}",
                self.dir.path().join("verify.jwk.pub").display()
            ))
            .arg(format!("--machine={MACHINE}"))
            .arg(format!("--subject={SUBJECT}"))
            .arg(format!("--max-clients={MAX_CLIENTS}"))
            .arg(format!("--timeout={TIMEOUT_SECS}s"))
            .arg(format!("--max-hold={MAX_HOLD_SECS}s"))
            .arg(format!("--kernel-margin={MARGIN_SECS}s"))
            .arg(format!("--firewall-timeout={FIREWALL_TIMEOUT}"))
            .arg(format!("--admin-socket={}", self.admin_socket().display()))
            .arg("--metrics-address=off")
            .arg(format!(
                "--cert={}",
                self.testdata.join("insecure-test-server.pem").display()
            ))
            .arg(format!(
                "--key={}",
                self.testdata.join("insecure-test-server.key").display()
            ))
            .env("RUST_LOG", "info");
        if let Some(fault) = fault {
            launch = launch.arg(format!("--fault-netlink={fault}"));
        }
        let mut process = launch.spawn()?;
        if let Err(e) = process.wait_for_log("listen-address listening", START_BOUND) {
            bail!("the envelope did not start: {e}\n{}", process.logs());
        }
        Ok(Envelope(process))
    }

    /// `GET /v1/grants`.
    pub fn grants(&self) -> anyhow::Result<Vec<Grant>> {
        let body = self.admin("GET", "/v1/grants")?;
        serde_json::from_str(&body).with_context(|| format!("grants: {body}"))
    }

    /// A `DELETE` on the admin API; the revoked ids (none when it answers 404,
    /// "no grant covers …").
    pub fn revoke(&self, path_and_query: &str) -> anyhow::Result<Vec<u64>> {
        let body = match self.admin("DELETE", path_and_query) {
            Err(e) if e.to_string().contains("HTTP/1.1 404") => return Ok(Vec::new()),
            other => other?,
        };
        let revoked: common::admin::Revoked =
            serde_json::from_str(&body).with_context(|| format!("revoke: {body}"))?;
        Ok(revoked.revoked)
    }

    fn admin(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let mut stream = UnixStream::connect(self.admin_socket()).context("admin socket")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: envelope\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("admin: no body")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("admin {method} {path}: {head} {body}");
        }
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Ok(if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        })
    }

    /// `ipset save` of the server namespace, raw.
    pub fn ipset_save(&self) -> String {
        let out = self.ns.server_cmd(&["/usr/sbin/ipset", "save"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft -j -s list ruleset` of the server namespace: its objects (tables,
    /// chains, sets with their elements, rules), without counters.
    pub fn nft_objects(&self) -> Vec<serde_json::Value> {
        let out = self.ns.server_cmd(&["nft", "-j", "-s", "list", "ruleset"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        json["nftables"].as_array().cloned().unwrap_or_default()
    }

    /// A shell command inside the server namespace (for tampering by hand).
    pub fn server_sh(&self, script: &str) -> anyhow::Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.server, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn unix_now() -> i64 {
    common::SystemClock.now_unix()
}

/// How long an envelope may take to say it listens.
const START_BOUND: Duration = Duration::from_secs(30);

/// An envelope process (`testbed`'s launcher). Dropping it sends SIGKILL (the
/// run already checked it).
pub struct Envelope(Process);

impl Envelope {
    /// This instance's log.
    pub fn logs(&self) -> String {
        self.0.logs()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = self.0.signal(signal);
    }

    /// Waits (bounded) for the process to exit; its status. Async, so that the
    /// clients' tasks answer the envelope's Close frames meanwhile.
    pub async fn wait(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.0.wait_exit_async(within).await?)
    }
}
