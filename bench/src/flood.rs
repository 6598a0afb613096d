//! `envelope-bench flood`: the load generator, run as a second process inside the
//! client namespace. Keep-alive HTTP/1.1 GETs (no upgrade headers) on `conns`
//! connections for `secs` seconds, each with the next of the given tokens in
//! turn; prints `responses=N rejected=M seconds=S` (rejected = 401).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::http1::{access_request, read_response};

pub async fn run(
    target: SocketAddr,
    tokens: Vec<String>,
    conns: usize,
    secs: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!tokens.is_empty(), "no token to send");
    let requests: Vec<String> = tokens
        .iter()
        .map(|token| access_request(target, token))
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
            match read_response(&mut stream, &mut buf).await? {
                None => continue 'connection,
                Some(401) => rejected += 1,
                Some(_) => {}
            }
            responses += 1;
        }
    }
    Ok((responses, rejected))
}
