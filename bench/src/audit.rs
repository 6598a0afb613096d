//! What the audit event stream costs (issue 23), each figure against a
//! baseline measured in the same run:
//!
//! - back-to-back grants (upgrade → 101, `iptables` backend, `--max-clients
//!   1`) with no follower, with one `envelopectl events -f --json` follower,
//!   and with a stalled follower, all on one envelope, in blocks of sessions
//!   whose order rotates each cycle so that drift on a shared machine falls on
//!   every condition alike, each block right after the same admin requests
//!   (which stall the stalled follower before its block starts); the stalled
//!   follower of each block is then passed by a buffer's worth of admin
//!   requests and must read `stream.lost` last;
//! - the resident memory of a full event buffer against the same envelope
//!   idle, with the same fill sent to an envelope that keeps one event as the
//!   control (what serving the fill costs apart from keeping it).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use testbed::envelope::Firewall;
use tokio_rustls::TlsConnector;

use crate::followers::{self, CtlFollower, Stalled};
use crate::lab::Lab;
use crate::stats::{ms, Sample};
use crate::{client, http1, measure};

/// Sizes of the rounds (flags of `envelope-bench`).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Measured sessions per condition.
    pub sessions: usize,
    /// Sessions per block.
    pub block: usize,
    /// `--events-buffer` of the envelopes here.
    pub buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    None,
    Ctl,
    Stalled,
}

/// Admin requests before each block: more events than a stalled follower's
/// socket, queue and the batch in hand take (the figures print how many it
/// was sent in all), so it is stalled before the block starts.
pub const PREFILL: usize = 3000;

const ROTATION: [Condition; 3] = [Condition::None, Condition::Ctl, Condition::Stalled];

/// Grant latencies under each condition, and what each stalled follower read.
#[derive(Debug)]
pub struct Grants {
    pub none: Sample,
    pub ctl: Sample,
    pub stalled: Sample,
    pub stalled_reads: Vec<StalledRead>,
}

/// What one stalled follower read once let go.
#[derive(Debug)]
pub struct StalledRead {
    pub lines: usize,
    /// `grant.opened` lines: any means it read past the stall into the block
    /// (the sessions before it had all opened before it was).
    pub grant_lines: usize,
    pub last: String,
}

impl StalledRead {
    fn of(lines: &[String]) -> StalledRead {
        StalledRead {
            lines: lines.len(),
            grant_lines: lines
                .iter()
                .filter(|l| l.contains("\"type\":\"grant.opened\""))
                .count(),
            last: lines.last().cloned().unwrap_or_default(),
        }
    }

    /// Let go with `stream.lost`, having read nothing of the sessions measured
    /// while it was stalled.
    pub fn dropped_while_stalled(&self) -> bool {
        self.last.starts_with("{\"type\":\"stream.lost\"") && self.grant_lines == 0
    }
}

/// Validates the sizes before anything starts.
pub fn check_sizes(sizes: Sizes) -> anyhow::Result<()> {
    anyhow::ensure!(
        sizes.block >= 1 && PREFILL + 2 * sizes.block < sizes.buffer,
        "--events-block {} does not fit --events-buffer {}: the {PREFILL} events before each \
         block and its two per session must fit in the buffer",
        sizes.block,
        sizes.buffer
    );
    Ok(())
}

pub fn grant_round(lab: &Lab, envelopectl: &Path, sizes: Sizes) -> anyhow::Result<Grants> {
    check_sizes(sizes)?;
    let socket = lab.dir.path().join("events-admin.sock");
    let envelope = lab.envelope(
        "events-followers",
        true,
        Firewall::Kernel("iptables"),
        &[
            "--max-clients=1",
            "--proxy-ports=80,443",
            &format!("--admin-socket={}", socket.display()),
            &format!("--events-buffer={}", sizes.buffer),
        ],
    )?;
    let tls = client::tls_connector(&testbed::testdata("insecure-test-ca.pem"))?;
    let context = || format!("events followers\n{}", envelope.logs());
    // The first grant of a fresh envelope pays for what it sets up once.
    block(lab, &tls, 2).with_context(context)?;

    let (mut none, mut ctl, mut stalled) = (Vec::new(), Vec::new(), Vec::new());
    let mut stalled_reads = Vec::new();
    let cycles = sizes.sessions.div_ceil(sizes.block);
    for cycle in 0..cycles {
        let k = sizes.block.min(sizes.sessions - cycle * sizes.block);
        for step in 0..ROTATION.len() {
            // Every block follows the same admin requests, which also stall
            // a stalled follower; only the follower differs.
            match ROTATION[(cycle + step) % ROTATION.len()] {
                Condition::None => {
                    fill(lab, &socket, PREFILL)?;
                    none.extend(block(lab, &tls, k).with_context(context)?);
                }
                Condition::Ctl => {
                    fill(lab, &socket, PREFILL)?;
                    let out = lab.dir.path().join(format!("envelopectl-events-{cycle}"));
                    let mut follower = CtlFollower::attach(envelopectl, &socket, out)?;
                    ctl.extend(block(lab, &tls, k).with_context(context)?);
                    // It followed: every grant of its block reached it.
                    follower
                        .until(k, |l| l.contains("\"type\":\"grant.opened\""))
                        .with_context(context)?;
                    follower.stop()?;
                }
                Condition::Stalled => {
                    let follower = Stalled::open(&socket)?;
                    fill(lab, &socket, PREFILL)?;
                    stalled.extend(block(lab, &tls, k).with_context(context)?);
                    // A buffer's worth of events passes whatever it had read.
                    fill(lab, &socket, sizes.buffer + 1)?;
                    let read = StalledRead::of(&follower.finish().with_context(context)?);
                    stalled_reads.push(read);
                }
            }
        }
    }
    envelope.stop()?;
    Ok(Grants {
        none: Sample::new(none),
        ctl: Sample::new(ctl),
        stalled: Sample::new(stalled),
        stalled_reads,
    })
}

/// `k` back-to-back sessions (`measure::sequential`); their grant latencies.
fn block(lab: &Lab, tls: &TlsConnector, k: usize) -> anyhow::Result<Vec<Duration>> {
    let (addr, service, proxy, tls) =
        (lab.envelope_addr(), lab.service(), lab.proxy(), tls.clone());
    let tokens: Vec<String> = (0..k).map(|_| lab.token()).collect();
    let latencies = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::sequential(addr, service, proxy, tls, tokens).await })
    })?;
    Ok(latencies.grant.values().to_vec())
}

/// `count` admin requests (one event each) on the envelope's admin socket.
fn fill(lab: &Lab, socket: &Path, count: usize) -> anyhow::Result<()> {
    let socket = socket.to_owned();
    measure::in_ns(&lab.ns.client, move || {
        Box::pin(followers::admin_requests(socket, count, 2))
    })
}

/// Resident memory of an envelope with its event buffer full.
#[derive(Debug)]
pub struct BufferMemory {
    /// KiB after start, before any request.
    pub idle: u64,
    /// KiB once the fill is answered.
    pub full: u64,
    /// Events the buffer held, and the bytes of their JSON lines.
    pub held: usize,
    pub json_bytes: usize,
    /// The same fill into an envelope that keeps one event: KiB idle, after.
    pub control: (u64, u64),
}

impl BufferMemory {
    /// KiB per held event of the buffered envelope's growth beyond the
    /// control's.
    pub fn per_event_kib(&self) -> f64 {
        let own = self.full.saturating_sub(self.idle) as f64;
        let serving = self.control.1.saturating_sub(self.control.0) as f64;
        (own - serving).max(0.0) / self.held.max(1) as f64
    }
}

/// Fills the buffer with refused tokens (a well-formed token signed by
/// another key: `access.refused` with its kid), a tenth more than it holds.
pub fn buffer_memory(lab: &Lab, buffer: usize, forged: &str) -> anyhow::Result<BufferMemory> {
    let count = buffer + buffer / 10;
    let (idle, full, lines) = filled(lab, buffer, forged, count)?;
    let held = lines.len();
    anyhow::ensure!(
        held == buffer,
        "the buffer holds {held} events after {count} refusals, not {buffer}"
    );
    let json_bytes = lines.iter().map(|l| l.len() + 1).sum();
    let (control_idle, control_full, _) = filled(lab, 1, forged, count)?;
    Ok(BufferMemory {
        idle,
        full,
        held,
        json_bytes,
        control: (control_idle, control_full),
    })
}

/// An envelope keeping `buffer` events, sent `count` refusals: KiB idle and
/// after, and the event lines it holds then.
fn filled(
    lab: &Lab,
    buffer: usize,
    forged: &str,
    count: usize,
) -> anyhow::Result<(u64, u64, Vec<String>)> {
    let socket = lab.dir.path().join("events-rss.sock");
    let envelope = lab.envelope(
        &format!("events-rss-{buffer}"),
        false,
        Firewall::None,
        &[
            &format!("--admin-socket={}", socket.display()),
            &format!("--events-buffer={buffer}"),
        ],
    )?;
    let (idle, _) = envelope.rss_kib();
    let target = lab.envelope_addr();
    let request = http1::access_request(target, forged);
    measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            let conns = 4;
            let sends = (0..conns).map(|k| {
                let n = count / conns + usize::from(k < count % conns);
                let request = request.clone();
                async move {
                    let stream = tokio::net::TcpStream::connect(target).await?;
                    stream.set_nodelay(true)?;
                    http1::repeat(stream, request.as_bytes(), n, 401).await
                }
            });
            futures_util::future::join_all(sends)
                .await
                .into_iter()
                .collect::<anyhow::Result<()>>()
        })
    })
    .with_context(|| format!("filling the event buffer\n{}", envelope.logs()))?;
    let (full, _) = envelope.rss_kib();
    let lines = followers::events(&socket)?;
    envelope.stop()?;
    Ok((idle, full, lines))
}

/// Prints a round's figures and adds them to the summary.
pub fn report_grants(grants: &Grants, sizes: Sizes, report: &mut crate::Report) {
    for (name, sample) in [
        ("no follower", &grants.none),
        ("envelopectl events -f", &grants.ctl),
        ("stalled follower", &grants.stalled),
    ] {
        println!(
            "   {name:>22}: grant p50 {} p90 {} p99 {} max {} ({} sessions)",
            ms(sample.pct(50)),
            ms(sample.pct(90)),
            ms(sample.pct(99)),
            ms(sample.pct(100)),
            sample.len()
        );
    }
    let reads = &grants.stalled_reads;
    let lines = |pick: fn(&StalledRead) -> usize| reads.iter().map(pick).max().unwrap_or(0);
    println!(
        "   {} stalled followers let go: each was sent {}–{} lines in all, at most {} of them \
         a grant of its block; the last one's last line: {}",
        reads.len(),
        reads.iter().map(|r| r.lines).min().unwrap_or(0),
        lines(|r| r.lines),
        lines(|r| r.grant_lines),
        reads.last().map_or("-", |r| r.last.as_str())
    );
    if let Some(bad) = reads.iter().find(|r| !r.dropped_while_stalled()) {
        println!("   NOT let go as expected: {bad:?}");
    }
    let (none, ctl, stalled) = (&grants.none, &grants.ctl, &grants.stalled);
    report.line(
        "grant p50 / p99, no event follower",
        &format!("{} / {}", ms(none.pct(50)), ms(none.pct(99))),
        "",
        true,
    );
    report.ratio(
        "grant p50, envelopectl events -f / none",
        ctl.pct(50),
        none.pct(50),
        1.03,
    );
    report.ratio(
        "grant p99, envelopectl events -f / none",
        ctl.pct(99),
        none.pct(99),
        f64::NAN,
    );
    report.ratio(
        "grant p99, stalled follower / none",
        stalled.pct(99),
        none.pct(99),
        1.05,
    );
    report.ratio(
        "grant p50, stalled follower / none",
        stalled.pct(50),
        none.pct(50),
        f64::NAN,
    );
    let dropped = grants
        .stalled_reads
        .iter()
        .filter(|r| r.dropped_while_stalled())
        .count();
    report.line(
        "stalled followers let go with stream.lost",
        &format!(
            "{dropped} of {} (buffer {})",
            grants.stalled_reads.len(),
            sizes.buffer
        ),
        "all",
        dropped == grants.stalled_reads.len(),
    );
}

pub fn report_memory(memory: &BufferMemory, report: &mut crate::Report) {
    let grew = memory.full.saturating_sub(memory.idle);
    println!(
        "   idle {} KiB, buffer full ({} events, {} KiB of JSON lines) {} KiB; \
         control (keeps 1 event) idle {} KiB, after the same fill {} KiB",
        memory.idle,
        memory.held,
        memory.json_bytes / 1024,
        memory.full,
        memory.control.0,
        memory.control.1
    );
    report.line(
        &format!("RSS, event buffer full ({} events) − idle", memory.held),
        &format!(
            "{:.1} − {:.1} = {:.1} MiB",
            memory.full as f64 / 1024.0,
            memory.idle as f64 / 1024.0,
            grew as f64 / 1024.0
        ),
        "",
        true,
    );
    report.line(
        "RSS per buffered event (beyond the control)",
        &format!(
            "{:.2} KiB ({} B of JSON)",
            memory.per_event_kib(),
            memory.json_bytes / memory.held.max(1)
        ),
        "",
        true,
    );
}
