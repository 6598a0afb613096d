//! The soak's laboratory: the namespaces and client addresses (from `testbed`),
//! the guarded service, a token issuer whose key can be rotated, the envelope
//! process (its flags here, over `testbed`'s command line, started and
//! signalled through its launcher), its admin API through `envelopectl`'s
//! client, and raw reads of the kernel.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use common::admin::Grant;
use common::Clock as _;
use envelopectl::{Client, CtlError};
use testbed::envelope::{await_listening, EnvelopeCmd, Firewall};
use testbed::launcher::Process;
use testbed::{Issuer, NetPair};

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

/// How long one admin request may take.
const ADMIN_BOUND: Duration = Duration::from_secs(10);

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
    /// Every client source address, IPv4 first.
    pub sources: Vec<IpAddr>,
    /// The key tokens are signed with; replaced by a key rotation.
    issuer: Mutex<Issuer>,
    rotations: AtomicU32,
    admin: Client,
    _service: testbed::Listener,
    _proxy: testbed::Listener,
}

impl Lab {
    pub fn new(envelope_bin: PathBuf, backend: Backend) -> anyhow::Result<Lab> {
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
        let issuer =
            Issuer::generate("soak", MACHINE, SUBJECT, &dir.path().join("verify.jwk.pub"))?;
        Ok(Lab {
            ns,
            admin: Client::new(dir.path().join("admin.sock")),
            backend,
            dir,
            envelope_bin,
            sources,
            issuer: Mutex::new(issuer),
            rotations: AtomicU32::new(0),
            _service: service,
            _proxy: proxy,
        })
    }

    /// A token that expires `exp_in` seconds from now.
    pub fn token(&self, exp_in: u64) -> String {
        Self::token_from(&self.issuer.lock().unwrap(), exp_in)
    }

    /// Writes a new verify key (new kid) over the old file; tokens are signed
    /// with it from now on. Returns the old issuer, whose tokens must be refused
    /// once the envelope has reloaded.
    pub fn rotate_key(&self) -> anyhow::Result<Issuer> {
        let n = self.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let path = self.dir.path().join("verify.jwk.pub");
        let next = Issuer::generate(&format!("soak-{n}"), MACHINE, SUBJECT, &path)?;
        Ok(std::mem::replace(&mut *self.issuer.lock().unwrap(), next))
    }

    /// A token from `issuer` (the current key, or an old one), valid for `exp_in` s.
    pub fn token_from(issuer: &Issuer, exp_in: u64) -> String {
        issuer.token(exp_in as i64)
    }

    /// Starts the envelope in the server namespace, optionally with a netlink
    /// fault. Every instance of the run appends to one log.
    pub fn envelope(&self, fault: Option<&str>) -> anyhow::Result<Envelope> {
        let mut cmd = EnvelopeCmd {
            listen: format!(":{ENVELOPE_PORT}"),
            firewall: Firewall::Kernel(self.backend.flag()),
            tokens: self.issuer.lock().unwrap().checks(),
            netns: Some(self.ns.server.clone()),
            ..EnvelopeCmd::default()
        }
        .args(&[
            &format!("--proxy-ports={PROXY_PORT}"),
            &format!("--max-clients={MAX_CLIENTS}"),
            &format!("--timeout={TIMEOUT_SECS}s"),
            &format!("--max-hold={MAX_HOLD_SECS}s"),
            &format!("--kernel-margin={MARGIN_SECS}s"),
            &format!("--firewall-timeout={FIREWALL_TIMEOUT}"),
        ]);
        if let Some(fault) = fault {
            cmd = cmd.arg(&format!("--fault-netlink={fault}"));
        }
        let command = cmd.command(&self.envelope_bin, self.dir.path());
        let mut process = Process::spawn_appending(command, &self.dir.path().join("envelope.log"))?;
        await_listening(&mut process)?;
        Ok(Envelope(process))
    }

    /// `GET /v1/grants`.
    pub async fn grants(&self) -> anyhow::Result<Vec<Grant>> {
        admin(self.admin.grants()).await
    }

    /// A `DELETE` on the admin API; the revoked ids (none when it answers 404,
    /// "no grant covers …").
    pub async fn revoke(&self, path_and_query: &str) -> anyhow::Result<Vec<u64>> {
        match admin(self.admin.revoke(path_and_query)).await {
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            revoked => Ok(revoked?.revoked),
        }
    }

    /// `POST /v1/reload`.
    pub async fn reload(&self) -> anyhow::Result<()> {
        admin(self.admin.reload()).await.map(drop)
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

/// One admin request, bounded by [`ADMIN_BOUND`].
async fn admin<T>(request: impl Future<Output = Result<T, CtlError>>) -> anyhow::Result<T> {
    let answer = tokio::time::timeout(ADMIN_BOUND, request)
        .await
        .with_context(|| format!("the admin API gave no answer within {ADMIN_BOUND:?}"))?;
    Ok(answer?)
}

fn is_not_found(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref(), Some(CtlError::Api { status, .. }) if status.as_u16() == 404)
}

pub fn unix_now() -> i64 {
    common::SystemClock.now_unix()
}

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
