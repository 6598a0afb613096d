//! The envelope's command line, built in one place for its integration tests,
//! envelope-exec's tests, the bench and the soak, and the envelope started
//! from it through the [`launcher`](crate::launcher). Its files (admin socket,
//! record journal) go in one directory, TLS uses the insecure test
//! certificate, and a kernel firewall is only ever asked for inside a network
//! namespace: this machine's own firewall is never touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::launcher::{command_in, LaunchError, Process};
use crate::{testdata, DEVICE};

/// The machine and subject tokens name unless a run says otherwise.
pub const MACHINE: &str = "mlab1-test0";
pub const SUBJECT: &str = "ndt";

/// How long an envelope may take to say it listens.
pub const START_BOUND: Duration = Duration::from_secs(30);

/// The firewall backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firewall {
    /// `--firewall=record`: a journal of what it was asked (`DIR/journal`);
    /// with `fail_grants`, every grant fails.
    Record { fail_grants: bool },
    /// `--firewall=none`.
    None,
    /// A kernel backend (`iptables`, `iptables-restore`) on the server
    /// namespace's [`DEVICE`]: only with [`EnvelopeCmd::netns`].
    Kernel(&'static str),
}

/// Token checks: the verify key, and the machine and subject tokens must name.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub verify_key: PathBuf,
    pub machine: String,
    pub subject: String,
}

impl Tokens {
    /// The insecure test EdDSA key (tokens from
    /// `Issuer::from_testdata("insecure-test-eddsa.jwk", …)`).
    pub fn test_key(machine: &str, subject: &str) -> Tokens {
        Tokens {
            verify_key: testdata("insecure-test-eddsa.jwk.pub"),
            machine: machine.to_owned(),
            subject: subject.to_owned(),
        }
    }
}

/// One envelope's flags, environment and namespace. The default: loopback
/// port 0, TLS, the test key for [`MACHINE`] and [`SUBJECT`], the recording
/// firewall, no metrics.
#[derive(Debug, Clone)]
pub struct EnvelopeCmd {
    pub listen: String,
    pub firewall: Firewall,
    pub tls: bool,
    /// `None`: `--token-required=false`.
    pub tokens: Option<Tokens>,
    /// Metrics on 127.0.0.1 port 0, or off.
    pub metrics: bool,
    /// Run inside this network namespace (e.g. `NetPair::server`).
    pub netns: Option<String>,
    /// Flags after the built ones; `--admin-socket` or `--log-format` here
    /// replace the defaults.
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for EnvelopeCmd {
    fn default() -> Self {
        EnvelopeCmd {
            listen: "127.0.0.1:0".into(),
            firewall: Firewall::Record { fail_grants: false },
            tls: true,
            tokens: Some(Tokens::test_key(MACHINE, SUBJECT)),
            metrics: false,
            netns: None,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl EnvelopeCmd {
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The command line, with the envelope's files in `dir`.
    pub fn command_line(&self, dir: &Path) -> Vec<String> {
        let given = |flag: &str| self.extra.iter().any(|a| a.starts_with(flag));
        let file = |name: &str| dir.join(name).display().to_string();
        let mut args = vec![format!("--listen-address={}", self.listen)];
        if !given("--admin-socket") {
            args.push(format!("--admin-socket={}", file("admin.sock")));
        }
        if !given("--log-format") {
            args.push("--log-format=text".into());
        }
        let metrics = if self.metrics { "127.0.0.1:0" } else { "off" };
        args.push(format!("--metrics-address={metrics}"));
        if self.tls {
            for (flag, name) in [
                ("cert", "insecure-test-server.pem"),
                ("key", "insecure-test-server.key"),
            ] {
                args.push(format!("--{flag}={}", testdata(name).display()));
            }
        }
        match &self.tokens {
            Some(t) => args.extend([
                format!("--verify-key={}", t.verify_key.display()),
                format!("--machine={}", t.machine),
                format!("--subject={}", t.subject),
            ]),
            None => args.push("--token-required=false".into()),
        }
        match &self.firewall {
            Firewall::Record { fail_grants } => {
                args.push("--firewall=record".into());
                args.push(format!("--firewall-journal={}", file("journal")));
                if *fail_grants {
                    args.push("--firewall-journal-fail-grants".into());
                }
            }
            Firewall::None => args.push("--firewall=none".into()),
            Firewall::Kernel(backend) => {
                assert!(
                    self.netns.is_some(),
                    "--firewall={backend} outside a network namespace would change this \
                     machine's own firewall"
                );
                args.push(format!("--firewall={backend}"));
                args.push(format!("--device={DEVICE}"));
            }
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// `bin` with [`EnvelopeCmd::command_line`] and the environment, in the
    /// namespace.
    pub fn command(&self, bin: &Path, dir: &Path) -> Command {
        let mut cmd = envelope_command(bin, self.netns.as_deref());
        cmd.args(self.command_line(dir))
            .envs(self.env.iter().cloned());
        cmd
    }

    /// Starts `bin` logging to `log` and waits (bounded) until it listens;
    /// the process and the address it listens on.
    pub fn start(
        &self,
        bin: &Path,
        dir: &Path,
        log: &Path,
    ) -> Result<(Process, SocketAddr), NotStarted> {
        let mut process =
            Process::spawn(self.command(bin, dir), log).map_err(|why| NotStarted {
                why,
                logs: String::new(),
            })?;
        let addr = await_listening(&mut process)?;
        Ok((process, addr))
    }
}

/// The envelope binary `bin`, in `netns` when given, with the environment
/// every run wants: info logs, and no admin socket from the caller's
/// environment. The arguments are the caller's.
pub fn envelope_command(bin: &Path, netns: Option<&str>) -> Command {
    let mut cmd = command_in(netns, bin);
    cmd.env("RUST_LOG", "info")
        .env_remove("ENVELOPE_ADMIN_SOCKET");
    cmd
}

/// Waits (bounded by [`START_BOUND`]) for the line saying the envelope listens;
/// the address it names.
pub fn await_listening(process: &mut Process) -> Result<SocketAddr, NotStarted> {
    await_address(process, "listen-address listening")
}

/// Waits (bounded by [`START_BOUND`]) for the line announcing a listening
/// socket, `message` (e.g. `metrics-address listening`); the address it names.
pub fn await_address(process: &mut Process, message: &str) -> Result<SocketAddr, NotStarted> {
    let mut found = None;
    let line = process.wait_for_line(&format!("{message:?} line"), START_BOUND, |line| {
        found = address_in(line, message);
        found.is_some()
    });
    match line {
        Ok(_) => Ok(found.expect("the matching line names an address")),
        Err(why) => Err(NotStarted {
            why,
            logs: process.logs(),
        }),
    }
}

/// Why an envelope did not start (`exited with …` when it quit), and its logs.
#[derive(Debug, thiserror::Error)]
#[error("the envelope did not start: {why}\n{logs}")]
pub struct NotStarted {
    pub why: LaunchError,
    pub logs: String,
}

/// The address in a line announcing `message`: `MESSAGE address=ADDR` in text
/// logs, `{"message":"MESSAGE",…,"address":"ADDR"}` in JSON logs.
fn address_in(line: &str, message: &str) -> Option<SocketAddr> {
    let text_marker = format!("{message} address=");
    if let Some(at) = line.find(&text_marker) {
        return line[at + text_marker.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok();
    }
    if !line.contains(&format!("\"message\":\"{message}\"")) {
        return None;
    }
    let key = "\"address\":\"";
    let rest = &line[line.find(key)? + key.len()..];
    rest[..rest.find('"')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_text_and_json_lines() {
        let text = "2026-01-01T00:00:00Z  INFO listen-address listening address=127.0.0.1:8443";
        assert_eq!(
            address_in(text, "listen-address listening"),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        let json = r#"{"timestamp":"x","level":"INFO","message":"metrics-address listening","address":"[::1]:9090"}"#;
        assert_eq!(
            address_in(json, "metrics-address listening"),
            Some("[::1]:9090".parse().unwrap())
        );
        assert_eq!(address_in(json, "listen-address listening"), None);
        assert_eq!(address_in(text, "metrics-address listening"), None);
    }
}
