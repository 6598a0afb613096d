//! The bench's laboratory: a server and a client network namespace (from
//! `testbed`), a measurement service on port 9999, a signing key, and envelope
//! processes started inside the server namespace.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::{Algorithm, Claims, Clock as _, PrivateKey, Signer};
use testbed::{NetPair, DEVICE, SERVER_V4};

pub const MACHINE: &str = "bench-machine";
pub const SUBJECT: &str = "ndt";
pub const ENVELOPE_PORT: u16 = 8443;
pub const SERVICE_PORT: u16 = 9999;
/// One of the proxy ports a grant also opens (the Go original: 80 and 443).
pub const PROXY_PORT: u16 = 443;

pub struct Lab {
    pub ns: NetPair,
    pub dir: tempfile::TempDir,
    pub envelope_bin: PathBuf,
    pub testdata: PathBuf,
    pub client_addrs: Vec<IpAddr>,
    signer: Signer,
    _service: testbed::Listener,
    _proxy: testbed::Listener,
}

impl Lab {
    pub fn new(envelope_bin: PathBuf, testdata: PathBuf, burst: u8) -> anyhow::Result<Lab> {
        let ns = NetPair::new();
        let service = ns.listener(SERVICE_PORT, Duration::from_secs(1800));
        let proxy = ns.listener(PROXY_PORT, Duration::from_secs(1800));
        let client_addrs = ns.add_client_subnets(burst);
        let dir = tempfile::tempdir()?;
        let key = PrivateKey::generate(Algorithm::EdDSA, "bench")?;
        std::fs::write(
            dir.path().join("verify.jwk.pub"),
            key.public_key().to_jwk_json(),
        )?;
        Ok(Lab {
            ns,
            dir,
            envelope_bin,
            testdata,
            client_addrs,
            signer: Signer::new(key),
            _service: service,
            _proxy: proxy,
        })
    }

    pub fn token(&self) -> String {
        self.token_with_jti(None)
    }

    /// A valid token carrying `jti` (for single-use tokens).
    pub fn token_with_jti(&self, jti: Option<String>) -> String {
        let now = common::SystemClock.now_unix();
        let claims = Claims {
            jti,
            ..Claims::for_machine("locate", SUBJECT, MACHINE, now, now + 600)
        };
        self.signer.sign(&claims).expect("signing a bench token")
    }

    pub fn service(&self) -> SocketAddr {
        SocketAddr::new(SERVER_V4.parse().unwrap(), SERVICE_PORT)
    }

    pub fn proxy(&self) -> SocketAddr {
        SocketAddr::new(SERVER_V4.parse().unwrap(), PROXY_PORT)
    }

    pub fn envelope_addr(&self) -> SocketAddr {
        SocketAddr::new(SERVER_V4.parse().unwrap(), ENVELOPE_PORT)
    }

    /// Starts the envelope in the server namespace with TLS and tokens, plus `extra`.
    pub fn envelope(&self, name: &str, tls: bool, extra: &[&str]) -> anyhow::Result<Envelope> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.server])
            .arg(&self.envelope_bin)
            .arg(format!("--listen-address={SERVER_V4}:{ENVELOPE_PORT}"))
            .arg(format!(
                "--verify-key={}",
                self.dir.path().join("verify.jwk.pub").display()
            ))
            .arg(format!("--machine={MACHINE}"))
            .arg(format!("--subject={SUBJECT}"))
            .arg(format!("--device={DEVICE}"))
            .arg(format!(
                "--admin-socket={}",
                self.dir.path().join(format!("{name}.sock")).display()
            ))
            .arg("--metrics-address=off")
            .args(extra)
            // Production logging (one line per request), written to a file as a
            // service manager would, not held in memory.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if tls {
            cmd.arg(format!(
                "--cert={}",
                self.testdata.join("insecure-test-server.pem").display()
            ))
            .arg(format!(
                "--key={}",
                self.testdata.join("insecure-test-server.key").display()
            ));
        }
        Envelope::spawn(cmd, self.dir.path().join(format!("{name}.log")))
    }
}

/// An envelope process; SIGTERM and wait on drop.
pub struct Envelope {
    child: Child,
    log: PathBuf,
}

impl Envelope {
    fn spawn(mut cmd: Command, log: PathBuf) -> anyhow::Result<Envelope> {
        let file = std::fs::File::create(&log)?;
        let child = cmd.stderr(file).spawn().context("starting the envelope")?;
        let envelope = Envelope { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !envelope.logs().contains("listen-address listening") {
            if Instant::now() > deadline {
                bail!("the envelope did not start:\n{}", envelope.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(envelope)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now and at its peak, in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the envelope exited with {status}:\n{}", self.logs());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the envelope did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The workspace's testdata directory, found from the bench binary or the cwd.
pub fn find_testdata() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("testdata"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("insecure-test-server.pem").exists())
        .context("cannot find testdata/ (run from the workspace root)")
}
