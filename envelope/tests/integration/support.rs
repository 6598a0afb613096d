//! Shared helpers for the envelope's integration tests: start the real binary
//! (or, for tests that need no process of its own, the daemon in-process:
//! [`in_process`]),
//! mint tokens with the insecure test keys, connect real WebSocket clients over
//! real TLS, and read what the recording firewall was asked to do.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

mod in_process;

use common::{Claims, Clock as _, Signer};
use nix::sys::signal::Signal;
use testbed::launcher::{Launch, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const MACHINE: &str = "mlab1-test0";
pub const SUBJECT: &str = "ndt";
pub const SUBPROTOCOL: &str = "net.measurementlab.envelope";
pub const ACCESS_PATH: &str = "/v0/envelope/access";

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

pub fn now_unix() -> i64 {
    common::SystemClock.now_unix()
}

/// Claims that pass every check, expiring `exp_in` seconds from now.
pub fn claims(sub: &str, exp_in: i64) -> Claims {
    let now = now_unix();
    Claims::for_machine("locate", sub, MACHINE, now, now + exp_in)
}

pub fn sign(claims: &Claims) -> String {
    let key = common::jwk::load_private_key(&testdata("insecure-test-eddsa.jwk")).unwrap();
    Signer::new(key).sign(claims).unwrap()
}

/// A valid token for this machine and subject.
pub fn token() -> String {
    sign(&claims(SUBJECT, 120))
}

/// How to start one envelope process.
#[derive(Debug, Clone)]
pub struct Options {
    pub tls: bool,
    pub tokens: bool,
    pub record: bool,
    pub fail_grants: bool,
    pub listen: String,
    pub metrics: bool,
    /// Runs the envelope inside this network namespace (e.g. `NetPair::server`).
    pub netns: Option<String>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: true,
            tokens: true,
            record: true,
            fail_grants: false,
            listen: "127.0.0.1:0".into(),
            metrics: false,
            netns: None,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl Options {
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

#[derive(Debug)]
enum Runner {
    Process(Process),
    InProcess(in_process::InProcess),
}

/// How long an envelope may take to say it listens.
pub const START_BOUND: Duration = Duration::from_secs(20);

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

/// The envelopectl binary beside the envelope binary (`cargo test --workspace`
/// builds it), built on demand when only this package's tests were asked for.
pub fn envelopectl_bin() -> PathBuf {
    let path = envelope_bin().with_file_name("envelopectl");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "envelopectl"])
            .status()
            .unwrap();
        assert!(status.success(), "building envelopectl failed");
    }
    path
}

/// The command line [`Options`] stand for, with the daemon's files in `dir`.
fn daemon_args(options: &Options, dir: &Path) -> Vec<String> {
    let mut args = vec![format!("--listen-address={}", options.listen)];
    if !options
        .extra
        .iter()
        .any(|a| a.starts_with("--admin-socket"))
    {
        args.push(format!(
            "--admin-socket={}",
            dir.join("admin.sock").display()
        ));
    }
    if !options.extra.iter().any(|a| a.starts_with("--log-format")) {
        args.push("--log-format=text".into());
    }
    args.push(
        if options.metrics {
            "--metrics-address=127.0.0.1:0"
        } else {
            "--metrics-address=off"
        }
        .into(),
    );
    if options.tls {
        args.push(format!(
            "--cert={}",
            testdata("insecure-test-server.pem").display()
        ));
        args.push(format!(
            "--key={}",
            testdata("insecure-test-server.key").display()
        ));
    }
    if options.tokens {
        args.push(format!(
            "--verify-key={}",
            testdata("insecure-test-eddsa.jwk.pub").display()
        ));
        args.push(format!("--machine={MACHINE}"));
        args.push(format!("--subject={SUBJECT}"));
    } else {
        args.push("--token-required=false".into());
    }
    if options.record {
        args.push("--firewall=record".into());
        args.push(format!(
            "--firewall-journal={}",
            dir.join("journal").display()
        ));
        if options.fail_grants {
            args.push("--firewall-journal-fail-grants".into());
        }
    }
    args.extend(options.extra.iter().cloned());
    args
}

/// The envelope binary with the environment every test wants: info logs, and no
/// admin socket inherited from the caller's environment.
fn launch_envelope(log: PathBuf) -> Launch {
    Launch::new(envelope_bin(), log)
        .env("RUST_LOG", "info")
        .env_remove("ENVELOPE_ADMIN_SOCKET")
}

/// Spawns the envelope with `args(dir)` and `env`, logging to
/// `dir/envelope.log`, in `netns` when given.
fn spawn_in(
    dir: &Path,
    args: Vec<String>,
    env: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    netns: Option<&str>,
) -> Process {
    let mut launch = launch_envelope(dir.join("envelope.log")).args(args);
    if let Some(ns) = netns {
        launch = launch.in_netns(ns);
    }
    for (k, v) in env {
        launch = launch.env(k, v);
    }
    launch
        .spawn()
        .unwrap_or_else(|e| panic!("spawn envelope: {e}"))
}

impl Daemon {
    pub fn start(options: Options) -> Daemon {
        Self::try_start(options)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }

    /// Starts the envelope and waits (bounded) until it listens; on failure, why
    /// (`exited with …` when it quit) and its logs.
    pub fn try_start(options: Options) -> Result<Daemon, (String, String)> {
        let (process, dir) = Daemon::spawn_unready(&options);
        Daemon::await_listening(process, dir, options.tls, options.metrics)
    }

    /// The envelope spawned and not waited for, with its files in the returned
    /// directory: for tests of what happens during start-up.
    pub fn spawn_unready(options: &Options) -> (Process, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let args = daemon_args(options, dir.path());
        let env = options.env.iter().map(|(k, v)| (k, v));
        let process = spawn_in(dir.path(), args, env, options.netns.as_deref());
        (process, dir)
    }

    /// Waits (bounded) for the listening line, and for the metrics one too
    /// when `metrics`.
    fn await_listening(
        mut process: Process,
        dir: tempfile::TempDir,
        tls: bool,
        metrics: bool,
    ) -> Result<Daemon, (String, String)> {
        let mut listening = |message| match process.wait_for_address(message, START_BOUND) {
            Ok(addr) => Ok(addr),
            Err(e) => Err((e.to_string(), process.logs())),
        };
        let addr = listening("listen-address listening")?;
        let metrics_addr = if metrics {
            Some(listening("metrics-address listening")?)
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
    pub fn in_process(options: Options) -> Daemon {
        assert!(
            options.netns.is_none() && options.env.is_empty(),
            "a namespace or an environment needs a process: use Daemon::start"
        );
        let dir = tempfile::tempdir().unwrap();
        let (runner, listening) = in_process::InProcess::start(&daemon_args(&options, dir.path()));
        Daemon {
            runner: Runner::InProcess(runner),
            addr: listening.access,
            metrics_addr: listening.metrics,
            tls: options.tls,
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

    /// Polls `check` every 10 ms for up to `within`; gives up at once, saying
    /// so, if the daemon's process has exited.
    pub fn wait_for(&self, within: Duration, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            let exited = matches!(&self.runner, Runner::Process(p) if p.has_exited());
            assert!(
                !exited && Instant::now() < deadline,
                "{} waiting for {what}\njournal: {:?}\nlogs:\n{}",
                if exited {
                    "the envelope exited"
                } else {
                    "timed out"
                },
                self.journal(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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
        let env = env.iter().copied();
        let process = spawn_in(dir.path(), args(dir.path()), env, None);
        Daemon::await_listening(process, dir, tls, false)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }
}

/// Runs the envelope with `args` expecting it to refuse to start: returns its exit
/// status and stderr (panics if it is still running after 15 s).
pub fn run_expecting_exit(args: &[String]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut process = launch_envelope(dir.path().join("envelope.log"))
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn envelope: {e}"));
    match process.wait_exit(Duration::from_secs(15)) {
        Ok(status) => (status, process.logs()),
        Err(e) => panic!("envelope {args:?}: {e}\n{}", process.logs()),
    }
}

/// The shell lines (comments stripped) of the ```sh blocks in a doc under the
/// workspace root: the first block after `heading`, or every block when `None`.
pub fn doc_commands(doc: &str, heading: Option<&str>) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc))
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
