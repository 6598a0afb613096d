//! `envelope-bench`: measures the envelope inside network namespaces it makes
//! itself and prints each figure next to its goal, as a ratio against a baseline
//! measured in the same run (these machines are shared and noisy).
//!
//! - grant latency (upgrade sent → 101) and revoke latency (Close sent → the
//!   measurement service refuses), N sequential sessions, ours vs the Go
//!   original's firewall sequence (`--firewall-go-sequential`: three iptables
//!   commands per grant and per revoke), same daemon, same run;
//! - a burst of clients from distinct /24s upgrading at once, both ways;
//! - invalid-token rejections per second from a second process (keep-alive HTTP)
//!   and the latency a valid client sees meanwhile;
//! - resident memory idle and with thousands of held sessions.
//!
//! Needs root (it creates network namespaces); never touches the host's own
//! firewall. Run it with `bash scripts/bench.sh`.

mod client;
mod flood;
mod lab;
mod measure;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::lab::{Lab, ENVELOPE_PORT, SERVICE_PORT};
use crate::stats::{ms, ratio, Sample};

#[derive(Debug, Parser)]
#[command(name = "envelope-bench", about)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Sequential sessions per side for the latency figures.
    #[arg(long, default_value_t = 30)]
    sessions: usize,
    /// Clients (one /24 each) in the burst.
    #[arg(long, default_value_t = 64)]
    burst: u8,
    /// Seconds of invalid-token flood.
    #[arg(long, default_value_t = 5)]
    flood_secs: u64,
    /// Keep-alive connections of the flood.
    #[arg(long, default_value_t = 32)]
    flood_conns: usize,
    /// Held sessions for the memory figure.
    #[arg(long, default_value_t = 5000)]
    held: usize,
    /// The envelope binary (default: beside this one, i.e. the release build).
    #[arg(long)]
    envelope: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Internal: the load generator (a second process in the client namespace).
    #[command(hide = true)]
    Flood {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        token: String,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit();
    if let Some(Mode::Flood {
        target,
        token,
        conns,
        secs,
    }) = cli.mode
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(flood::run(target, &token, conns, secs));
    }
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "envelope-bench must run as root (it creates network namespaces)"
    );
    let envelope = match cli.envelope {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("envelope"),
    };
    anyhow::ensure!(
        envelope.exists(),
        "{} not found: build it first (scripts/bench.sh does)",
        envelope.display()
    );
    let lab = Lab::new(envelope, lab::find_testdata()?, cli.burst)?;
    let mut report = Report::default();

    println!("== floor: one warm iptables-restore deleting one rule (no envelope)");
    let (server_ns, service) = (lab.ns.server.clone(), lab.service());
    let floor = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::warm_restore_floor(server_ns, service, 20).await })
    })?;
    println!(
        "   batch handed over → service refused: p50 {} p90 {}",
        ms(floor.pct(50)),
        ms(floor.pct(90))
    );

    println!(
        "\n== firewall: ours (group-committed iptables-restore) vs the Go original's sequence"
    );
    let ours = firewall_round(&lab, "ours", &[], cli.sessions)?;
    let go = firewall_round(&lab, "go", &["--firewall-go-sequential"], cli.sessions)?;
    for (what, o, g, goal) in [
        (
            "grant p50 (upgrade → 101)",
            ours.grant.pct(50),
            go.grant.pct(50),
            0.4,
        ),
        ("grant p90", ours.grant.pct(90), go.grant.pct(90), f64::NAN),
        (
            "revoke p50 (Close → refused)",
            ours.revoke.pct(50),
            go.revoke.pct(50),
            0.4,
        ),
        (
            "revoke p90",
            ours.revoke.pct(90),
            go.revoke.pct(90),
            f64::NAN,
        ),
        (
            "revoke p50 vs the warm-restore floor",
            ours.revoke.pct(50),
            floor.pct(50),
            f64::NAN,
        ),
        (
            "revoke complete p50 (Close → proxy port refused)",
            ours.revoke_all.pct(50),
            go.revoke_all.pct(50),
            f64::NAN,
        ),
        (
            "burst: all granted",
            ours.burst.all_granted,
            go.burst.all_granted,
            0.1,
        ),
        (
            "burst: all revoked",
            ours.burst.all_revoked,
            go.burst.all_revoked,
            f64::NAN,
        ),
    ] {
        report.ratio(what, o, g, goal);
    }

    println!(
        "\n== invalid-token flood ({} s, {} keep-alive connections, second process)",
        cli.flood_secs, cli.flood_conns
    );
    for (kind, token) in [
        ("bad signature", forged_token(&lab)?),
        ("malformed", "not.a.token".to_owned()),
    ] {
        let (rate, valid) = flood_round(&lab, &token, cli.flood_conns, cli.flood_secs)?;
        report.line(
            &format!("rejections/s, {kind}"),
            &format!("{rate:.0}/s"),
            "≥ 20000/s",
            rate >= 20_000.0,
        );
        report.line(
            &format!(
                "valid client during flood ({kind}), worst of {}",
                valid.len()
            ),
            &ms(valid.pct(100)),
            "≤ 1000 ms",
            valid.pct(100) <= Duration::from_secs(1),
        );
    }

    println!("\n== memory (--firewall none, plain HTTP)");
    let (idle, held, per_session) = memory_round(&lab, cli.held)?;
    report.line(
        "RSS idle",
        &format!("{:.1} MiB", idle as f64 / 1024.0),
        "≤ 20 MiB",
        idle <= 20 * 1024,
    );
    report.line(
        &format!("RSS with {} held sessions", cli.held),
        &format!("{:.1} MiB", held as f64 / 1024.0),
        "",
        true,
    );
    report.line(
        "RSS per held session",
        &format!("{per_session:.1} KiB"),
        "≤ 64 KiB",
        per_session <= 64.0,
    );

    report.print();
    Ok(())
}

struct Round {
    grant: Sample,
    revoke: Sample,
    revoke_all: Sample,
    burst: measure::Burst,
}

fn firewall_round(lab: &Lab, name: &str, extra: &[&str], sessions: usize) -> anyhow::Result<Round> {
    let mut args = vec![
        "--firewall=iptables",
        "--max-clients=64",
        "--proxy-ports=80,443",
    ];
    args.extend_from_slice(extra);
    let envelope = lab.envelope(name, true, &args)?;
    let tls = client::tls_connector(&lab.testdata.join("insecure-test-ca.pem"))?;
    let (addr, service, proxy) = (lab.envelope_addr(), lab.service(), lab.proxy());
    let tokens: Vec<String> = (0..sessions).map(|_| lab.token()).collect();
    let connector = tls.clone();
    let latencies = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::sequential(addr, service, proxy, connector, tokens).await })
    })
    .with_context(|| format!("{name}: sequential sessions\n{}", envelope.logs()))?;
    let (sources, token) = (lab.client_addrs.clone(), lab.token());
    let burst = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::burst(addr, SERVICE_PORT, tls, sources, token).await })
    })
    .with_context(|| format!("{name}: burst\n{}", envelope.logs()))?;
    println!(
        "   {name:>4}: grant p50 {} p90 {} | revoke p50 {} p90 {} (complete p50 {}) | burst of {}: granted {} revoked {}",
        ms(latencies.grant.pct(50)),
        ms(latencies.grant.pct(90)),
        ms(latencies.revoke.pct(50)),
        ms(latencies.revoke.pct(90)),
        ms(latencies.revoke_all.pct(50)),
        lab.client_addrs.len(),
        ms(burst.all_granted),
        ms(burst.all_revoked),
    );
    envelope.stop()?;
    Ok(Round {
        grant: latencies.grant,
        revoke: latencies.revoke,
        revoke_all: latencies.revoke_all,
        burst,
    })
}

/// A token that parses and names the right kid but is signed by another key.
fn forged_token(lab: &Lab) -> anyhow::Result<String> {
    let genuine = lab.token();
    let other = common::PrivateKey::generate(common::Algorithm::EdDSA, "bench")?;
    let forged = common::Signer::new(other).sign(&common::Claims {
        iss: "locate".into(),
        sub: lab::SUBJECT.into(),
        aud: common::Audience::One(lab::MACHINE.into()),
        exp: i64::MAX / 2,
        nbf: None,
        iat: None,
        jti: None,
    })?;
    anyhow::ensure!(forged.len() > 100 && forged != genuine);
    Ok(forged)
}

fn flood_round(lab: &Lab, token: &str, conns: usize, secs: u64) -> anyhow::Result<(f64, Sample)> {
    let envelope = lab.envelope("flood", false, &["--firewall=none", "--max-clients=64"])?;
    let target = lab.envelope_addr();
    let flood = Command::new("ip")
        .args(["netns", "exec", &lab.ns.client])
        .arg(std::env::current_exe()?)
        .args(["flood", "--target", &target.to_string(), "--token", token])
        .args(["--conns", &conns.to_string(), "--secs", &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the flood process")?;
    let valid_token = lab.token();
    let valid = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let watch = Duration::from_secs(secs).saturating_sub(Duration::from_millis(600));
            measure::valid_client_during(target, valid_token, watch, Duration::from_millis(100))
                .await
        })
    })?;
    let output = flood.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "the flood process failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> f64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
            .unwrap_or(0.0)
    };
    let (rejected, seconds) = (field("rejected="), field("seconds="));
    println!("   {}", text.trim());
    envelope.stop()?;
    Ok((rejected / seconds.max(0.001), valid))
}

fn memory_round(lab: &Lab, held: usize) -> anyhow::Result<(u64, u64, f64)> {
    let max = held.to_string();
    let envelope = lab.envelope(
        "rss",
        false,
        &[
            "--firewall=none",
            &format!("--max-clients={max}"),
            "--timeout=10m",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = envelope.rss_kib();
    let (addr, token) = (lab.envelope_addr(), lab.token());
    let pid = envelope.pid();
    let (loaded, peak) = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            let sessions = measure::hold_many(addr, token, held).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            let kib = |name: &str| -> u64 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            let figures = (kib("VmRSS:"), kib("VmHWM:"));
            drop(sessions);
            Ok::<_, anyhow::Error>(figures)
        })
    })?;
    println!("   idle {idle} KiB, with {held} sessions {loaded} KiB (peak {peak} KiB)");
    envelope.stop()?;
    let per_session = loaded.saturating_sub(idle) as f64 / held as f64;
    Ok((idle, loaded, per_session))
}

#[derive(Default)]
struct Report {
    lines: Vec<(String, String, String, bool)>,
}

impl Report {
    fn ratio(&mut self, what: &str, ours: Duration, theirs: Duration, goal: f64) {
        let r = ratio(ours, theirs);
        let figure = format!("{} vs {} = {r:.2}×", ms(ours), ms(theirs));
        if goal.is_nan() {
            self.lines.push((what.into(), figure, String::new(), true));
        } else {
            self.lines
                .push((what.into(), figure, format!("≤ {goal}×"), r <= goal));
        }
    }

    fn line(&mut self, what: &str, figure: &str, goal: &str, met: bool) {
        self.lines
            .push((what.into(), figure.into(), goal.into(), met));
    }

    fn print(&self) {
        println!("\n== summary (ours vs baseline in this run)");
        for (what, figure, goal, met) in &self.lines {
            let verdict = match (goal.is_empty(), met) {
                (true, _) => "",
                (false, true) => "met",
                (false, false) => "NOT MET",
            };
            println!("{what:<48} {figure:<36} {goal:<12} {verdict}");
        }
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[allow(dead_code)]
const _PORTS: (u16, u16) = (ENVELOPE_PORT, SERVICE_PORT);
