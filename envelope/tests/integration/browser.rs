//! A real browser as the client: headless Debian Chromium (installed by
//! scripts/test.sh when missing) loads tests/integration/browser.html over plain HTTP from
//! 127.0.0.1, whose `new WebSocket(url, "net.measurementlab.envelope")` talks to a
//! live envelope over TLS (test certificate, `--firewall none`). The test drives the
//! browser over the Chrome DevTools protocol on its `--remote-debugging-port`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{
    self, claims, envelopectl_bin, sign, token, Daemon, EnvelopeCmd, Firewall, SUBPROTOCOL,
};
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use testbed::HttpStub;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CHROMIUM: &str = "/usr/bin/chromium";
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_opens_with_the_subprotocol_and_sees_1008_when_revoked() {
    let daemon = envelope();
    let page = serve_page();
    let browser = Chromium::launch();
    let mut cdp = browser.devtools().await;
    let tab = cdp
        .open(&page_url(&page, &daemon.url(Some(&token()))))
        .await;

    let events = cdp.until(&tab, "open").await;
    assert_eq!(
        events,
        json!([{"type": "open", "protocol": SUBPROTOCOL}]),
        "ws.protocol is the envelope's"
    );
    let listed = Command::new(envelopectl_bin())
        .arg(format!("--socket={}", daemon.admin_socket().display()))
        .args(["list", "--json"])
        .output()
        .unwrap();
    let grants: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(grants.as_array().map(Vec::len), Some(1), "{grants}");

    let socket = daemon.admin_socket();
    let revoked = tokio::task::spawn_blocking(move || {
        Command::new(envelopectl_bin())
            .arg(format!("--socket={}", socket.display()))
            .args(["revoke", "--all"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");

    let events = cdp.until(&tab, "close").await;
    assert_eq!(
        events[1],
        json!({"type": "close", "code": 1008, "reason": "revoked", "wasClean": true}),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_a_bad_token_sees_the_connection_refused() {
    let daemon = envelope();
    let page = serve_page();
    let browser = Chromium::launch();
    let mut cdp = browser.devtools().await;
    let mut expired = claims(support::SUBJECT, -60);
    expired.iat = Some(expired.exp - 120);
    let tab = cdp
        .open(&page_url(&page, &daemon.url(Some(&sign(&expired)))))
        .await;

    let events = cdp.until(&tab, "close").await;
    assert_eq!(
        events,
        json!([
            {"type": "error"},
            {"type": "close", "code": 1006, "reason": "", "wasClean": false},
        ])
    );
    assert!(
        daemon.logs().contains("status=401"),
        "the envelope refused the token (not TLS or the network):\n{}",
        daemon.logs()
    );
}

/// A live envelope over TLS that never touches the host firewall.
fn envelope() -> Daemon {
    Daemon::start(EnvelopeCmd {
        firewall: Firewall::None,
        ..EnvelopeCmd::default()
    })
}

fn page_url(page: &HttpStub, envelope_url: &str) -> String {
    let encoded: String = envelope_url
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("http://{}/browser.html?url={encoded}", page.addr)
}

/// Serves tests/integration/browser.html on 127.0.0.1 (404 for anything else, e.g. favicon).
fn serve_page() -> HttpStub {
    let page = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/browser.html"),
    )
    .unwrap();
    HttpStub::start(move |method, target| {
        let html = "text/html; charset=utf-8";
        match (method, target.split('?').next()) {
            ("GET", Some("/browser.html")) => (200, html, page.clone()),
            _ => (404, html, Vec::new()),
        }
    })
}

/// Headless Chromium in a process group of its own, killed (the group) on drop.
#[derive(Debug)]
struct Chromium {
    child: Child,
    profile: tempfile::TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: `apt-get install chromium` (scripts/test.sh does it)"
        );
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // The envelope's certificate is signed by the insecure test CA.
                "--ignore-certificate-errors",
                "--remote-debugging-address=127.0.0.1",
                // 0: Chromium picks a port and writes it to DevToolsActivePort.
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        Chromium { child, profile }
    }

    /// Connects to the browser's DevTools endpoint once Chromium has written it.
    async fn devtools(&self) -> Cdp {
        let file = self.profile.path().join("DevToolsActivePort");
        let (port, path) =
            testbed::eventually_async(BOUND, "Chromium's DevToolsActivePort", || async {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let mut lines = text.lines();
                Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
            })
            .await;
        let tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}{path}"), tcp)
            .await
            .unwrap();
        Cdp {
            ws,
            next_id: 0,
            events: Vec::new(),
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A minimal Chrome DevTools protocol client over the browser endpoint, using
/// flattened sessions (one per tab).
struct Cdp {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    /// Sends a command and returns its result; events read meanwhile are kept.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let reply = self.read(method).await;
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
            self.events.push(reply);
        }
    }

    /// Waits for the event `method` of `session`.
    async fn event(&mut self, session: &str, method: &str) -> Value {
        let matches = |e: &Value| e["method"] == json!(method) && e["sessionId"] == json!(session);
        if let Some(at) = self.events.iter().position(matches) {
            return self.events.remove(at);
        }
        loop {
            let event = self.read(method).await;
            if matches(&event) {
                return event;
            }
            self.events.push(event);
        }
    }

    async fn read(&mut self, waiting_for: &str) -> Value {
        loop {
            let message = tokio::time::timeout(BOUND, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {waiting_for} within {BOUND:?}"))
                .expect("DevTools connection open")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// Opens a tab, loads `url` in it and waits for its load event; returns the
    /// tab's session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await;
        let navigated = self
            .call(Some(&session), "Page.navigate", json!({"url": url}))
            .await;
        assert!(navigated.get("errorText").is_none(), "{navigated}");
        self.event(&session, "Page.loadEventFired").await;
        session
    }

    /// The page's events once one of `type` has happened (the page's `until`).
    async fn until(&mut self, session: &str, kind: &str) -> Value {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({
                    "expression": format!("until({kind:?})"),
                    "awaitPromise": true,
                    "returnByValue": true,
                }),
            )
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{result}");
        serde_json::from_str(result["result"]["value"].as_str().unwrap()).unwrap()
    }
}
