//! The bench's laboratory: a server and a client network namespace (from
//! `testbed`), a measurement service on port 9999, a token issuer, and
//! envelope processes started inside the server namespace (from `testbed`'s
//! command line and launcher; the flags and key are the bench's).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use common::Claims;
use testbed::envelope::{EnvelopeCmd, Firewall};
use testbed::launcher::Process;
use testbed::{Issuer, NetPair, SERVER_V4};

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
    pub client_addrs: Vec<IpAddr>,
    issuer: Issuer,
    _service: testbed::Listener,
    _proxy: testbed::Listener,
}

impl Lab {
    pub fn new(envelope_bin: PathBuf, burst: u8) -> anyhow::Result<Lab> {
        let ns = NetPair::new();
        let service = ns.listener(SERVICE_PORT, Duration::from_secs(1800));
        let proxy = ns.listener(PROXY_PORT, Duration::from_secs(1800));
        let client_addrs = ns.add_client_subnets(burst);
        let dir = tempfile::tempdir()?;
        let verify_key = dir.path().join("verify.jwk.pub");
        let issuer = Issuer::generate("bench", MACHINE, SUBJECT, &verify_key)?;
        Ok(Lab {
            ns,
            dir,
            envelope_bin,
            client_addrs,
            issuer,
            _service: service,
            _proxy: proxy,
        })
    }

    pub fn token(&self) -> String {
        self.token_with_jti(None)
    }

    /// A valid token carrying `jti` (for single-use tokens).
    pub fn token_with_jti(&self, jti: Option<String>) -> String {
        self.issuer.sign(&Claims {
            jti,
            ..self.issuer.claims(600)
        })
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

    /// Starts the envelope in the server namespace with `firewall`, TLS (or
    /// not) and tokens, plus `extra`, logging to `NAME.log` in the lab's
    /// directory.
    pub fn envelope(
        &self,
        name: &str,
        tls: bool,
        firewall: Firewall,
        extra: &[&str],
    ) -> anyhow::Result<Envelope> {
        let cmd = EnvelopeCmd {
            listen: format!("{SERVER_V4}:{ENVELOPE_PORT}"),
            firewall,
            tls,
            tokens: self.issuer.checks(),
            netns: Some(self.ns.server.clone()),
            ..EnvelopeCmd::default()
        }
        .args(extra);
        // Production logging (one line per request), written to a file as a
        // service manager would, not held in memory.
        let log = self.dir.path().join(format!("{name}.log"));
        let (process, _) = cmd.start(&self.envelope_bin, self.dir.path(), &log)?;
        Ok(Envelope(process))
    }
}

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

    /// Resident set size now and at its peak, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.pid())
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

/// `VmRSS` and `VmHWM` of `pid`, in KiB, from /proc (0 when unreadable).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_read_from_proc() {
        let (now, peak) = super::rss_kib(std::process::id());
        assert!(now > 0 && peak >= now, "{now} {peak}");
        assert_eq!(super::rss_kib(u32::MAX), (0, 0));
    }
}
