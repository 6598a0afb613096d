//! Followers of the audit event stream, as the bench attaches them to an
//! envelope's admin socket: a real `envelopectl events -f --json` process
//! printing to a file, and a stalled follower (a connection that asks for
//! `GET /v1/events?follow=1` and reads nothing until told to); and admin
//! requests sent in number, each one event, to fill the buffer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use testbed::Wait;

use crate::http1;

/// How long a follower may take to show what it was sent.
const BOUND: Duration = testbed::EVENTUALLY;

/// `envelopectl events -f --json`, its stdout in a file (so that nothing in
/// the bench wakes for its lines while a measurement runs).
#[derive(Debug)]
pub struct CtlFollower {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl CtlFollower {
    /// Starts it, printing to `out` (its errors to `out.err`), and waits
    /// until it follows: until it prints the `admin.request` event of its own
    /// `GET /v1/events`.
    pub fn attach(envelopectl: &Path, socket: &Path, out: PathBuf) -> anyhow::Result<CtlFollower> {
        let err = out.with_extension("err");
        let child = Command::new(envelopectl)
            .arg("--socket")
            .arg(socket)
            .args(["events", "-f", "--json"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting {}", envelopectl.display()))?;
        let mut follower = CtlFollower { child, out, err };
        follower.until(1, |line| line.contains("\"path\":\"/v1/events\""))?;
        Ok(follower)
    }

    /// Waits (within [`BOUND`]) until `count` of its lines satisfy `wanted`.
    pub fn until(&mut self, count: usize, wanted: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let wait = Wait::new(
            BOUND,
            format!("{count} awaited lines from envelopectl events -f"),
        )
        .every(Duration::from_millis(1));
        loop {
            let text = std::fs::read_to_string(&self.out)?;
            let found = text.lines().filter(|l| wanted(l)).count();
            if found >= count {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let said = std::fs::read_to_string(&self.err).unwrap_or_default();
                anyhow::bail!(
                    "envelopectl events -f exited ({status}) after {found} of {count} awaited \
                     lines: {said}"
                );
            }
            wait.pause()
                .with_context(|| format!("{found} of them in {} lines", text.lines().count()))?;
        }
    }

    /// Ends it (SIGKILL to its own pid: it follows until interrupted).
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for CtlFollower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A follower that sent its request and reads nothing until [`Stalled::finish`].
#[derive(Debug)]
pub struct Stalled(UnixStream);

impl Stalled {
    pub fn open(socket: &Path) -> anyhow::Result<Stalled> {
        let mut stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.write_all(b"GET /v1/events?follow=1 HTTP/1.1\r\nHost: envelope\r\n\r\n")?;
        Ok(Stalled(stream))
    }

    /// Reads everything it was sent, until the envelope closes the
    /// connection (it must within [`BOUND`]); the event lines.
    pub fn finish(self) -> anyhow::Result<Vec<String>> {
        read_events(self.0).context("the stalled follower's stream (was it let go?)")
    }
}

/// The events the buffer holds now (`GET /v1/events`), one line each.
pub fn events(socket: &Path) -> anyhow::Result<Vec<String>> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.write_all(b"GET /v1/events HTTP/1.1\r\nHost: envelope\r\nConnection: close\r\n\r\n")?;
    read_events(stream).context("GET /v1/events")
}

/// Reads an events response to its end (bounded by [`BOUND`] between reads):
/// its lines, or why not.
fn read_events(mut stream: UnixStream) -> anyhow::Result<Vec<String>> {
    stream.set_read_timeout(Some(BOUND))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let head_end = http1::find(&raw, b"\r\n\r\n").context("no response head")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    anyhow::ensure!(head.starts_with("http/1.1 200"), "answer: {head}");
    let body = match head.contains("transfer-encoding: chunked") {
        true => dechunk(&raw[head_end..])?,
        false => raw[head_end..].to_vec(),
    };
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// A chunked body's content (RFC 9112 §7.1, without extensions or trailers).
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = http1::find(body, b"\r\n").context("a chunk without its size line")?;
        let size = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size.trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(body.len() >= size + 2, "a chunk cut short");
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Sends `count` admin requests (`GET /v1/status`, one `admin.request`
/// event each) over `conns` keep-alive connections at once.
pub async fn admin_requests(socket: PathBuf, count: usize, conns: usize) -> anyhow::Result<()> {
    let request = b"GET /v1/status HTTP/1.1\r\nHost: envelope\r\n\r\n";
    let each = count.div_ceil(conns.max(1));
    let mut left = count;
    let mut senders = Vec::new();
    while left > 0 {
        let n = each.min(left);
        left -= n;
        let stream = tokio::net::UnixStream::connect(&socket).await?;
        senders.push(http1::repeat(stream, request, n, 200));
    }
    for result in futures_util::future::join_all(senders).await {
        result.context("admin requests")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_put_back_together() {
        let body = b"5\r\nhello\r\nA\r\n, world!!\n\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"hello, world!!\n");
        assert!(dechunk(b"5\r\nhel").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"").is_err());
    }
}
