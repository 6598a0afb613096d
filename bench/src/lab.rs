//! The bench's laboratory: a server and a client network namespace (from
//! `testbed`), a measurement service on port 9999, a signing key, and envelope
//! processes started inside the server namespace (with `testbed`'s launcher;
//! the flags, key and token are the bench's).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use common::{Algorithm, Claims, Clock as _, PrivateKey, Signer};
use testbed::launcher::{Launch, Process};
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

    /// Starts the envelope in the server namespace with TLS and tokens, plus
    /// `extra`, logging to `NAME.log` in the lab's directory.
    pub fn envelope(&self, name: &str, tls: bool, extra: &[&str]) -> anyhow::Result<Envelope> {
        let mut launch = Launch::new(
            &self.envelope_bin,
            self.dir.path().join(format!("{name}.log")),
        )
        .in_netns(&self.ns.server)
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
        .env("RUST_LOG", "info");
        if tls {
            launch = launch
                .arg(format!(
                    "--cert={}",
                    self.testdata.join("insecure-test-server.pem").display()
                ))
                .arg(format!(
                    "--key={}",
                    self.testdata.join("insecure-test-server.key").display()
                ));
        }
        let mut process = launch.spawn()?;
        if let Err(e) = process.wait_for_log("listen-address listening", START_BOUND) {
            bail!("the envelope did not start: {e}\n{}", process.logs());
        }
        Ok(Envelope(process))
    }
}

/// How long an envelope may take to say it listens.
const START_BOUND: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(15);

/// An envelope process (`testbed`'s launcher); SIGTERM and a bounded wait on
/// drop, SIGKILL when that fails.
pub struct Envelope(Process);

impl Envelope {
    pub fn logs(&self) -> String {
        self.0.logs()
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Resident set size now and at its peak, in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.0.rss_kib()
    }

    /// SIGTERM and a bounded wait; an error unless it exits successfully.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        if self.0.has_exited() {
            self.0.wait_exit(Duration::ZERO)?;
            return Ok(());
        }
        let status = match self.0.terminate(STOP_BOUND) {
            Ok(status) => status,
            Err(e) => {
                let _ = self.0.kill();
                bail!("the envelope after SIGTERM: {e}\n{}", self.logs());
            }
        };
        if !status.success() {
            bail!("the envelope exited with {status}:\n{}", self.logs());
        }
        Ok(())
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        // A failure here leaves the process to `Process`'s drop: SIGKILL.
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
