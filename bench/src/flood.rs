//! `envelope-bench flood`: the load generator, run as a second process inside the
//! client namespace. Keep-alive HTTP/1.1 GETs (no upgrade headers) on `conns`
//! connections for `secs` seconds, each with the next of the given tokens in
//! turn; prints `responses=N rejected=M seconds=S` (rejected = 401).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run(
    target: SocketAddr,
    tokens: Vec<String>,
    conns: usize,
    secs: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!tokens.is_empty(), "no token to send");
    let requests: Vec<String> = tokens
        .iter()
        .map(|token| {
            format!(
                "GET /v0/envelope/access?access_token={token} HTTP/1.1\r\nHost: {target}\r\n\r\n"
            )
        })
        .collect();
    let requests = std::sync::Arc::new(requests);
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let workers = (0..conns).map(|k| {
        let requests = requests.clone();
        // Worker k sends tokens k, k + conns, …: no two connections ever send
        // the same token at once (a single-use token would then be a replay).
        tokio::spawn(async move { worker(target, requests, k, conns, end).await })
    });
    let (mut responses, mut rejected) = (0u64, 0u64);
    for result in futures_util::future::join_all(workers).await {
        let (r, j) = result??;
        responses += r;
        rejected += j;
    }
    println!(
        "responses={responses} rejected={rejected} seconds={:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One keep-alive connection: request, read one response, repeat; reconnects if closed.
async fn worker(
    target: SocketAddr,
    requests: std::sync::Arc<Vec<String>>,
    first: usize,
    stride: usize,
    end: Instant,
) -> anyhow::Result<(u64, u64)> {
    let (mut responses, mut rejected) = (0u64, 0u64);
    let mut next = first;
    let mut buf = vec![0u8; 4096];
    'connection: while Instant::now() < end {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        while Instant::now() < end {
            let request = &requests[next % requests.len()];
            next += stride;
            stream.write_all(request.as_bytes()).await?;
            let mut have = 0;
            let (head_end, body_len) = loop {
                let n = stream.read(&mut buf[have..]).await?;
                if n == 0 {
                    continue 'connection;
                }
                have += n;
                if let Some(pos) = find(&buf[..have], b"\r\n\r\n") {
                    let head = std::str::from_utf8(&buf[..pos]).unwrap_or("");
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if head.starts_with("HTTP/1.1 401") {
                        rejected += 1;
                    }
                    break (pos + 4, length);
                }
                anyhow::ensure!(have < buf.len(), "response head too large");
            };
            let mut body_have = have - head_end;
            while body_have < body_len {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    continue 'connection;
                }
                body_have += n;
            }
            responses += 1;
        }
    }
    Ok((responses, rejected))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
