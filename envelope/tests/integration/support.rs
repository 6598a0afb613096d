//! Shared helpers for the envelope's integration tests: start the real binary,
//! mint tokens with the insecure test keys, connect real WebSocket clients over
//! real TLS, and read what the recording firewall was asked to do.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Claims, Clock as _, Signer};
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
    /// Runs the envelope under this command (e.g. `ip netns exec NS`).
    pub wrapper: Vec<String>,
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
            wrapper: Vec::new(),
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

/// A running envelope; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub tls: bool,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<String>>,
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

impl Daemon {
    pub fn start(options: Options) -> Daemon {
        Self::try_start(options)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }

    /// Starts the envelope and waits (bounded) until it listens.
    pub fn try_start(options: Options) -> Result<Daemon, (String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = match options.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(envelope_bin());
                c
            }
            None => Command::new(envelope_bin()),
        };
        cmd.arg(format!("--listen-address={}", options.listen));
        if !options
            .extra
            .iter()
            .any(|a| a.starts_with("--admin-socket"))
        {
            cmd.arg(format!(
                "--admin-socket={}",
                dir.path().join("admin.sock").display()
            ));
        }
        if !options.extra.iter().any(|a| a.starts_with("--log-format")) {
            cmd.arg("--log-format=text");
        }
        cmd.env("RUST_LOG", "info")
            .env_remove("ENVELOPE_ADMIN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.arg(if options.metrics {
            "--metrics-address=127.0.0.1:0"
        } else {
            "--metrics-address=off"
        });
        if options.tls {
            cmd.arg(format!(
                "--cert={}",
                testdata("insecure-test-server.pem").display()
            ))
            .arg(format!(
                "--key={}",
                testdata("insecure-test-server.key").display()
            ));
        }
        if options.tokens {
            cmd.arg(format!(
                "--verify-key={}",
                testdata("insecure-test-eddsa.jwk.pub").display()
            ))
            .arg(format!("--machine={MACHINE}"))
            .arg(format!("--subject={SUBJECT}"));
        } else {
            cmd.arg("--token-required=false");
        }
        if options.record {
            cmd.arg("--firewall=record").arg(format!(
                "--firewall-journal={}",
                dir.path().join("journal").display()
            ));
            if options.fail_grants {
                cmd.arg("--firewall-journal-fail-grants");
            }
        }
        cmd.args(&options.extra);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        Daemon::launch(cmd, dir, options.tls, options.metrics)
    }

    /// Spawns `cmd` (stderr captured) and waits (bounded) for its listening line,
    /// and for the metrics one too when `metrics`.
    fn launch(
        mut cmd: Command,
        dir: tempfile::TempDir,
        tls: bool,
        metrics: bool,
    ) -> Result<Daemon, (String, String)> {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn envelope");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            tls,
            dir,
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = daemon.logs();
            let listen = find_address(&text, "listen-address listening address=");
            let metrics_addr = find_address(&text, "metrics-address listening address=");
            if let Some(addr) = listen {
                if !metrics || metrics_addr.is_some() {
                    daemon.addr = addr;
                    daemon.metrics_addr = metrics_addr;
                    return Ok(daemon);
                }
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return Err((format!("exited with {status}"), daemon.logs()));
            }
            if Instant::now() > deadline {
                return Err(("no listening line within 20 s".into(), daemon.logs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
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

    /// Polls `check` every 10 ms for up to `within`.
    pub fn wait_for(&self, within: Duration, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\njournal: {:?}\nlogs:\n{}",
                self.journal(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within)
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the log reader drain.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "envelope did not exit within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
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

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn find_address(text: &str, marker: &str) -> Option<SocketAddr> {
    if let Some(start) = text.find(marker) {
        return text[start + marker.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok();
    }
    // --log-format=json: {"message":"listen-address listening","address":"…",…}
    let message = marker.trim_end_matches(" address=");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"message\":\"{message}\"")))?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value["address"].as_str()?.parse().ok()
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
        let mut cmd = Command::new(envelope_bin());
        cmd.args(args(dir.path()))
            .env("RUST_LOG", "info")
            .env_remove("ENVELOPE_ADMIN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::launch(cmd, dir, tls, false)
            .unwrap_or_else(|(e, logs)| panic!("envelope did not start: {e}\n{logs}"))
    }
}

/// Runs the envelope with `args` expecting it to refuse to start: returns its exit
/// status and stderr (panics if it is still running after 15 s).
pub fn run_expecting_exit(args: &[String]) -> (ExitStatus, String) {
    let mut child = Command::new(envelope_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("ENVELOPE_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn envelope");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("envelope {args:?} still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
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
