//! Shared helpers for the envelope's integration tests, over `testbed`'s test
//! kit: the real binary started from [`EnvelopeCmd`] (or, for tests that need
//! no process of its own, the daemon in-process: [`in_process`]), tokens from
//! the insecure test key, real WebSocket clients over real TLS, what the
//! recording firewall was asked to do, and waits that fail at once when the
//! daemon has exited.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::Duration;

mod in_process;

use common::{Claims, Clock as _};
use nix::sys::signal::Signal;
use testbed::envelope::{await_address, await_listening, envelope_command};
use testbed::launcher::Process;
use testbed::{Issuer, TimedOut, Wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub use testbed::envelope::{EnvelopeCmd, Firewall, Tokens, MACHINE, START_BOUND, SUBJECT};
pub use testbed::{testdata, EVENTUALLY};

/// What one `envelopectl` run ([`Daemon::ctl`]) printed and how it exited.
#[derive(Debug)]
pub struct CtlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Its stdout, once it has succeeded (or a panic with its stderr).
    pub fn expect_ok(self) -> String {
        assert!(
            self.ok(),
            "envelopectl exited {:?}: {}",
            self.code,
            self.stderr
        );
        self.stdout
    }
}

pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";
pub const ACCESS_PATH: &str = "/v0/envelope/access";

pub fn now_unix() -> i64 {
    common::SystemClock.now_unix()
}

/// Tokens from the insecure test key the default [`EnvelopeCmd`] trusts.
fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| Issuer::from_testdata("insecure-test-eddsa.jwk", MACHINE, SUBJECT))
}

/// Claims that pass every check, expiring `exp_in` seconds from now.
pub fn claims(sub: &str, exp_in: i64) -> Claims {
    issuer().claims_for(sub, exp_in)
}

pub fn sign(claims: &Claims) -> String {
    issuer().sign(claims)
}

/// A valid token for this machine and subject.
pub fn token() -> String {
    issuer().token(120)
}

#[derive(Debug)]
enum Runner {
    Process(Process),
    InProcess(in_process::InProcess),
}

/// A running envelope (a [`Process`] from `testbed`'s launcher, with its log in
/// `dir/envelope.log`, or the daemon in this test process); killed or stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    runner: Runner,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub tls: bool,
    pub dir: tempfile::TempDir,
}

pub fn envelope_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_envelope"))
}

/// The envelopectl binary (`cargo test --workspace` builds it; with `-p
/// envelope` alone, build it first: the test says so).
pub fn envelopectl_bin() -> PathBuf {
    testbed::workspace_bin("envelopectl")
}

/// Spawns the envelope with `args` and `env`, logging to `dir/envelope.log`.
fn spawn_with(
    dir: &Path,
    args: Vec<String>,
    env: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
) -> Process {
    let mut cmd = envelope_command(&envelope_bin(), None);
    cmd.args(args).envs(env);
    Process::spawn(cmd, &dir.join("envelope.log")).unwrap_or_else(|e| panic!("spawn envelope: {e}"))
}

impl Daemon {
    pub fn start(cmd: EnvelopeCmd) -> Daemon {
        Self::try_start(cmd)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }

    /// Starts the envelope and waits (bounded) until it listens; on failure, why
    /// (`exited with …` when it quit) and its logs.
    pub fn try_start(cmd: EnvelopeCmd) -> Result<Daemon, (String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let process = Daemon::spawn_unready(&cmd, dir.path());
        Daemon::await_listening(process, dir, cmd.tls, cmd.metrics)
    }

    /// The envelope spawned with its files in `dir` and not waited for: for
    /// tests of what happens during start-up.
    pub fn spawn_unready(cmd: &EnvelopeCmd, dir: &Path) -> Process {
        let log = dir.join("envelope.log");
        Process::spawn(cmd.command(&envelope_bin(), dir), &log)
            .unwrap_or_else(|e| panic!("spawn envelope: {e}"))
    }

    /// Waits (bounded) for the listening line, and for the metrics one too
    /// when `metrics`.
    fn await_listening(
        mut process: Process,
        dir: tempfile::TempDir,
        tls: bool,
        metrics: bool,
    ) -> Result<Daemon, (String, String)> {
        let failed = |e: testbed::envelope::NotStarted| (e.why.to_string(), e.logs);
        let addr = await_listening(&mut process).map_err(failed)?;
        let metrics_addr = if metrics {
            Some(await_address(&mut process, "metrics-address listening").map_err(failed)?)
        } else {
            None
        };
        Ok(Daemon {
            runner: Runner::Process(process),
            addr,
            metrics_addr,
            tls,
            dir,
        })
    }

    /// The daemon in this test process (`daemon::bind` on port 0, then
    /// `daemon::run`), for tests that need no process of its own: no signals,
    /// no environment, no netns, no log to read.
    pub fn in_process(cmd: EnvelopeCmd) -> Daemon {
        assert!(
            cmd.netns.is_none() && cmd.env.is_empty(),
            "a namespace or an environment needs a process: use Daemon::start"
        );
        let dir = tempfile::tempdir().unwrap();
        let (runner, listening) = in_process::InProcess::start(&cmd.command_line(dir.path()));
        Daemon {
            runner: Runner::InProcess(runner),
            addr: listening.access,
            metrics_addr: listening.metrics,
            tls: cmd.tls,
            dir,
        }
    }

    /// Stops an in-process daemon as SIGTERM stops the binary (the shutdown
    /// future resolves) and waits (bounded) for `run` to return.
    pub fn stop(&mut self, within: Duration) -> Result<(), String> {
        match &mut self.runner {
            Runner::InProcess(runner) => runner.stop(within),
            Runner::Process(_) => panic!("a process is stopped with terminate"),
        }
    }

    pub fn logs(&self) -> String {
        match &self.runner {
            Runner::Process(process) => process.logs(),
            Runner::InProcess(_) => "(in-process daemon: its logs are not captured)".into(),
        }
    }

    fn process(&self) -> &Process {
        match &self.runner {
            Runner::Process(process) => process,
            Runner::InProcess(_) => {
                panic!("an in-process daemon has no process: use Daemon::start")
            }
        }
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// `envelopectl --socket=<this daemon's> ARGS`, whatever it answers.
    pub fn ctl(&self, args: &[&str]) -> CtlRun {
        let output = std::process::Command::new(envelopectl_bin())
            .arg(format!("--socket={}", self.admin_socket().display()))
            .args(args)
            .output()
            .expect("run envelopectl");
        CtlRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process().pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Lines the recording firewall wrote (`setup`, `grant …`, `revoke …`, `teardown`).
    pub fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("journal"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Journal lines other than setup/teardown.
    pub fn firewall_calls(&self) -> Vec<String> {
        self.journal()
            .into_iter()
            .filter(|l| l != "setup" && l != "teardown")
            .collect()
    }

    /// Waits ([`EVENTUALLY`]) until `check` holds; gives up at once, saying
    /// so, if the daemon's process has exited. Blocks the thread: in async
    /// tests use [`Daemon::eventually`].
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let wait = Wait::new(EVENTUALLY, what);
        while !check(self) {
            self.assert_running(what);
            wait.pause().unwrap_or_else(|e| self.timed_out(e));
        }
    }

    /// [`Daemon::wait_for`] with an async check, for async tests: the runtime
    /// runs meanwhile.
    pub async fn eventually<F: Future<Output = bool>>(
        &self,
        what: &str,
        mut check: impl FnMut() -> F,
    ) {
        let wait = Wait::new(EVENTUALLY, what);
        while !check().await {
            self.assert_running(what);
            wait.pause_async()
                .await
                .unwrap_or_else(|e| self.timed_out(e));
        }
    }

    /// Waits ([`EVENTUALLY`]) until the journal holds `line` `count` times.
    pub async fn await_journal(&self, line: &str, count: usize) {
        let what = format!("{count}× {line:?} in the journal");
        self.eventually(&what, || async {
            self.journal().iter().filter(|l| *l == line).count() >= count
        })
        .await
    }

    fn assert_running(&self, what: &str) {
        let exited = matches!(&self.runner, Runner::Process(p) if p.has_exited());
        assert!(
            !exited,
            "the envelope exited waiting for {what}\njournal: {:?}\nlogs:\n{}",
            self.journal(),
            self.logs()
        );
    }

    fn timed_out(&self, e: TimedOut) -> ! {
        panic!("{e}\njournal: {:?}\nlogs:\n{}", self.journal(), self.logs())
    }

    /// Sends the signal named without its `SIG` (`"HUP"`, `"KILL"`, …).
    pub fn signal(&self, signal: &str) {
        let signal: Signal = format!("SIG{signal}").parse().unwrap();
        self.process()
            .signal(signal)
            .unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within)
    }

    /// The exit status if the process ends within `within`, else `None`.
    pub fn wait_exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        match &mut self.runner {
            Runner::Process(process) => process.wait_exit(within).ok(),
            Runner::InProcess(_) => panic!("an in-process daemon has no exit status: use stop"),
        }
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let process = match &mut self.runner {
            Runner::Process(process) => process,
            Runner::InProcess(_) => panic!("an in-process daemon has no exit status: use stop"),
        };
        match process.wait_exit(within) {
            Ok(status) => status,
            Err(e) => panic!("envelope: {e}\n{}", self.logs()),
        }
    }

    pub fn url(&self, token: Option<&str>) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = match self.addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        match token {
            Some(t) => format!("{scheme}://{host}{ACCESS_PATH}?access_token={t}"),
            None => format!("{scheme}://{host}{ACCESS_PATH}"),
        }
    }

    /// Fetches the metrics text.
    pub async fn metrics(&self) -> String {
        let addr = self.metrics_addr.expect("started with metrics");
        let text = raw_exchange(
            addr,
            false,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// A TLS client trusting only the insecure test CA.
pub use testbed::tls::{Stream, Ws};

/// Trusts the insecure test CA.
pub fn tls_connector() -> TlsConnector {
    testbed::tls::tls_connector(&testdata("insecure-test-ca.pem")).unwrap()
}

/// TCP (and TLS, when `tls`) to `addr`, from an optional local address.
pub async fn connect(addr: SocketAddr, tls: bool) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Ok(Box::new(tls_connector().connect(name, tcp).await?))
}

/// A real WebSocket client; `subprotocol` offers net.measurementlab.envelope.
pub async fn ws_connect(
    daemon: &Daemon,
    token: Option<&str>,
    subprotocol: bool,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    ws_connect_with(daemon, token, subprotocol, None, &[]).await
}

/// The HTTP status of a failed WebSocket handshake (panics if it succeeded).
pub fn handshake_status(
    result: Result<
        (
            Ws,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    >,
) -> u16 {
    match result {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Sends `request` verbatim and returns everything the server answered until it closed
/// (bounded by 10 s).
pub async fn raw_exchange(addr: SocketAddr, tls: bool, request: &str) -> String {
    let mut stream = connect(addr, tls).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket upgrade request head for `path_and_query`.
pub fn upgrade_request(method: &str, path_and_query: &str, extra_headers: &str) -> String {
    format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}Connection: close\r\n\r\n"
    )
}

pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---- Added for daemon.rs -------------------------------------------------

/// TCP (and TLS, when `tls`) to `addr`, from the local address `local` when given
/// (e.g. 127.0.0.2, to be a second client in the same /24).
pub async fn connect_from(
    addr: SocketAddr,
    tls: bool,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<Box<dyn Stream>> {
    let Some(local) = local else {
        return connect(addr, tls).await;
    };
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Ok(Box::new(tls_connector().connect(name, tcp).await?))
}

/// Like [`ws_connect`], from an optional local address and with extra request headers.
pub async fn ws_connect_with(
    daemon: &Daemon,
    token: Option<&str>,
    subprotocol: bool,
    local: Option<std::net::IpAddr>,
    headers: &[(&'static str, &str)],
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = daemon.url(token).into_client_request()?;
    if subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    let stream = connect_from(daemon.addr, daemon.tls, local).await?;
    tokio_tungstenite::client_async(request, stream).await
}

impl Daemon {
    /// Starts the envelope with exactly `args(dir)` (no defaults added), where `dir`
    /// is the daemon's temporary directory, and waits (bounded) until it listens.
    /// `tls` only tells [`Daemon::url`] which scheme to use.
    pub fn start_with_args(
        args: impl FnOnce(&Path) -> Vec<String>,
        env: &[(&str, &str)],
        tls: bool,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let process = spawn_with(dir.path(), args(dir.path()), env.iter().copied());
        Daemon::await_listening(process, dir, tls, false)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }
}

/// Runs the envelope with `args` expecting it to refuse to start: returns its exit
/// status and stderr (panics if it is still running after 15 s).
pub fn run_expecting_exit(args: &[String]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let no_env: [(&str, &str); 0] = [];
    let mut process = spawn_with(dir.path(), args.to_vec(), no_env);
    match process.wait_exit(Duration::from_secs(15)) {
        Ok(status) => (status, process.logs()),
        Err(e) => panic!("envelope {args:?}: {e}\n{}", process.logs()),
    }
}

/// The shell lines (comments stripped) of the ```sh blocks in a doc under the
/// workspace root: the first block after `heading`, or every block when `None`.
pub fn doc_commands(doc: &str, heading: Option<&str>) -> Vec<String> {
    let text = std::fs::read_to_string(testbed::workspace().join(doc))
        .unwrap_or_else(|e| panic!("{doc}: {e}"));
    let text = match heading {
        Some(h) => &text[text.find(h).unwrap_or_else(|| panic!("{h} in {doc}"))..],
        None => text.as_str(),
    };
    let blocks = text
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""));
    let blocks: Vec<&str> = if heading.is_some() {
        blocks.take(1).collect()
    } else {
        blocks.collect()
    };
    blocks
        .iter()
        .flat_map(|b| b.lines())
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}
