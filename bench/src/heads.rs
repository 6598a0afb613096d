//! Memory under a flood of partial request heads (issue 21 item 7): many
//! connections from many source /24s (spread so each stays under the
//! per-subnet cap), each sending most of a request head and never its end.
//! The envelope's resident memory idle, while every connection is held (the
//! envelope has read every byte sent), and once they are all gone: closed by
//! the client, or by the envelope at its head timeout. Plain HTTP, as the
//! head timeout starts after the TLS handshake and 16,000 handshakes would not
//! fit in one head timeout on two cores.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use testbed::envelope::Firewall;
use testbed::Wait;
use tokio::io::AsyncWriteExt;

use crate::client::connect;
use crate::lab::{rss_kib, Lab, ENVELOPE_PORT};
use crate::measure;

/// The envelope's default per-subnet connection cap.
const PER_SUBNET: usize = 256;
/// Connections being opened at once.
const OPENING: usize = 256;
/// The envelope's default head timeout, after which it closes them itself.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after the last connection is gone the settled memory is read:
/// one of the envelope's heap-trim intervals, and a second.
const SETTLE: Duration = Duration::from_secs(envelope::heap::INTERVAL.as_secs() + 1);

/// How the held connections end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closes them all while they are held.
    ClientCloses,
    /// The envelope closes them at its head timeout.
    HeadTimeout,
}

impl Ending {
    pub fn name(self) -> &'static str {
        match self {
            Ending::ClientCloses => "closed by the client",
            Ending::HeadTimeout => "closed at the head timeout",
        }
    }
}

/// Resident memory (KiB) through one flood.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub conns: usize,
    pub idle: u64,
    pub held: u64,
    pub peak: u64,
    pub after: u64,
    /// From the first connect until the envelope had read every head.
    pub opened_in: Duration,
    /// From the end of opening until the envelope's last connection was gone.
    pub gone_in: Duration,
    /// Resident memory one heap-trim interval (and a second) after they were
    /// gone, when the envelope has returned what the allocator held free.
    pub settled: u64,
}

/// Validates the sizes before anything starts: the per-subnet cap, and
/// descriptors for every connection on both ends.
pub fn check_sizes(conns: usize, subnets: usize, head_bytes: usize) -> anyhow::Result<()> {
    let per_subnet = conns.div_ceil(subnets.max(1));
    anyhow::ensure!(
        per_subnet <= PER_SUBNET,
        "--heads {conns} over {subnets} client subnets is {per_subnet} per subnet, over the \
         envelope's per-subnet cap of {PER_SUBNET} (raise --burst, which sets the subnets)"
    );
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    anyhow::ensure!(
        conns as u64 + 512 <= soft,
        "--heads {conns} needs more file descriptors than the limit of {soft}"
    );
    anyhow::ensure!(
        (64..16 << 10).contains(&head_bytes),
        "--head-bytes {head_bytes}: from 64 to under the envelope's 16 KiB head limit"
    );
    Ok(())
}

pub fn round(lab: &Lab, conns: usize, head_bytes: usize, ending: Ending) -> anyhow::Result<Flood> {
    let envelope = lab.envelope("heads", false, Firewall::None, &[])?;
    let pid = envelope.pid();
    let (idle, _) = rss_kib(pid);
    let idle_fds = open_fds(pid)?;
    let target = lab.envelope_addr();
    let sources = lab.client_addrs.clone();
    let server_ns = lab.ns.server.clone();
    let head = partial_head(target, head_bytes);
    let flood = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            let started = Instant::now();
            let mut streams = open(target, &sources, conns, &head).await?;
            all_read(&server_ns, conns)?;
            let opened_in = started.elapsed();
            let (held, peak) = rss_kib(pid);
            let closing = Instant::now();
            if ending == Ending::ClientCloses {
                streams.clear();
            }
            let bound = HEAD_TIMEOUT + testbed::EVENTUALLY;
            let wait = Wait::new(bound, "the envelope's connections gone");
            while open_fds(pid)? > idle_fds {
                wait.pause_async().await?;
            }
            let gone_in = closing.elapsed();
            let (after, _) = rss_kib(pid);
            drop(streams);
            // A fixed wait, not a poll: the figure is what an operator sees
            // one trim interval after a flood, not the best moment.
            tokio::time::sleep(SETTLE).await;
            let (settled, _) = rss_kib(pid);
            Ok::<_, anyhow::Error>(Flood {
                conns,
                idle,
                held,
                peak,
                after,
                opened_in,
                gone_in,
                settled,
            })
        })
    })
    .with_context(|| format!("partial heads ({})\n{}", ending.name(), envelope.logs()))?;
    envelope.stop()?;
    Ok(flood)
}

/// Prints a flood's figures and adds them to the summary.
pub fn report(flood: &Flood, ending: Ending, report: &mut crate::Report) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "   {}: idle {} KiB; all {} heads read {:.2} s after the first connect: {} KiB \
         (peak {} KiB); all gone {:.2} s later: {} KiB; {} s after that: {} KiB",
        ending.name(),
        flood.idle,
        flood.conns,
        flood.opened_in.as_secs_f64(),
        flood.held,
        flood.peak,
        flood.gone_in.as_secs_f64(),
        flood.after,
        SETTLE.as_secs(),
        flood.settled
    );
    let per_conn = flood.held.saturating_sub(flood.idle) as f64 / flood.conns.max(1) as f64;
    report.line(
        &format!("RSS, {} partial heads held (fresh envelope)", flood.conns),
        &format!(
            "{:.1} MiB (idle {:.1}, {per_conn:.1} KiB/conn)",
            mib(flood.held),
            mib(flood.idle)
        ),
        "",
        true,
    );
    let after = match ending {
        Ending::ClientCloses => "  RSS once the client closed them",
        Ending::HeadTimeout => "  RSS once the head timeout closed them",
    };
    report.line(
        after,
        &format!(
            "{:.1} MiB ({:.1} above idle)",
            mib(flood.after),
            mib(flood.after.saturating_sub(flood.idle))
        ),
        "",
        true,
    );
    report.line(
        &format!(
            "  RSS {} s later (the envelope's heap trim)",
            SETTLE.as_secs()
        ),
        &format!(
            "{:.1} MiB ({:.1} above idle)",
            mib(flood.settled),
            mib(flood.settled.saturating_sub(flood.idle))
        ),
        "≤ idle + 64 MiB",
        flood.settled <= flood.idle + (64 << 10),
    );
}

/// A request head of `bytes` bytes that never ends (no blank line).
fn partial_head(target: SocketAddr, bytes: usize) -> Vec<u8> {
    let mut head =
        format!("GET /v0/envelope/access HTTP/1.1\r\nHost: {target}\r\nX-Filler: ").into_bytes();
    head.resize(bytes.max(head.len()), b'a');
    head
}

/// Opens `conns` connections, the k-th from `sources[k % len]`, and sends
/// each the partial head.
async fn open(
    target: SocketAddr,
    sources: &[IpAddr],
    conns: usize,
    head: &[u8],
) -> anyhow::Result<Vec<Box<dyn crate::client::Stream>>> {
    futures_util::stream::iter(0..conns)
        .map(|k| {
            let source = sources[k % sources.len()];
            async move {
                let mut stream = connect(Some(source), target, None).await?;
                stream.write_all(head).await?;
                Ok::<_, anyhow::Error>(stream)
            }
        })
        .buffer_unordered(OPENING)
        .try_collect()
        .await
}

/// Waits until the server namespace has `conns` connections established to
/// the envelope and not one unread byte among them.
fn all_read(server_ns: &str, conns: usize) -> anyhow::Result<()> {
    let wait = Wait::new(HEAD_TIMEOUT, format!("{conns} heads read by the envelope"))
        .every(Duration::from_millis(20));
    loop {
        let table = testbed::NetPair::in_ns(server_ns, || {
            std::fs::read_to_string("/proc/thread-self/net/tcp")
        })?;
        let (established, unread) = receive_queues(&table, ENVELOPE_PORT);
        if established >= conns && unread == 0 {
            return Ok(());
        }
        wait.pause()
            .with_context(|| format!("{established} established, {unread} bytes unread"))?;
    }
}

/// Established connections to local `port` in a `/proc/net/tcp` table, and
/// the bytes waiting in their receive queues.
fn receive_queues(table: &str, port: u16) -> (usize, u64) {
    let port = format!(":{port:04X}");
    let (mut established, mut unread) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local, _, state, queues, ..] = fields[..] else {
            continue;
        };
        if state != "01" || !local.ends_with(&port) {
            continue;
        }
        established += 1;
        let rx = queues.split_once(':').map_or("0", |(_, rx)| rx);
        unread += u64::from_str_radix(rx, 16).unwrap_or(0);
    }
    (established, unread)
}

/// Descriptors `pid` holds open.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("the envelope's descriptors")?
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_queues_count_established_connections_to_the_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 010200C0:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 010200C0:20FB 021200C6:A1B2 01 00000000:00000010 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 010200C0:20FB 021200C6:A1B3 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 010200C0:270F 021200C6:A1B4 01 00000000:00000100 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";
        assert_eq!(receive_queues(table, 8443), (2, 16));
        assert_eq!(receive_queues(table, 9999), (1, 256));
        assert_eq!(receive_queues("", 8443), (0, 0));
    }

    #[test]
    fn a_partial_head_has_the_size_asked_and_no_end() {
        let head = partial_head("192.0.2.1:8443".parse().unwrap(), 15_000);
        assert_eq!(head.len(), 15_000);
        assert!(head.starts_with(b"GET /v0/envelope/access HTTP/1.1\r\n"));
        assert!(!head.windows(4).any(|w| w == b"\r\n\r\n"));
    }

    #[test]
    fn sizes_over_the_per_subnet_cap_are_refused() {
        assert!(check_sizes(100, 64, 15_000).is_ok());
        let e = check_sizes(16_000, 4, 15_000).unwrap_err().to_string();
        assert!(e.contains("4000 per subnet"), "{e}");
        assert!(check_sizes(10, 4, 20_000).is_err());
    }
}
