//! `envelope-bench`: measures the envelope inside network namespaces it makes
//! itself and prints each figure next to its goal, as a ratio against a baseline
//! measured in the same run (these machines are shared and noisy).
//!
//! - grant latency (upgrade sent → 101) and revoke latency (Close sent → the
//!   measurement service refuses) for sessions back to back with no pause (the
//!   headline), and for Poisson arrivals, ours against the Go original's
//!   firewall sequence, which the bench runs itself ([`go_baseline`]: three
//!   `iptables` commands per grant and per revoke), in the same run;
//! - a burst of clients from distinct /24s upgrading at once, both ways;
//! - SIGKILL with grants held and no restart: time until the kernel has closed
//!   every one of them on its own (set-member timeouts);
//! - the grant figures (back to back, Poisson, burst, SIGKILL) once more with
//!   `--firewall nftables`, beside the ipset path's;
//! - invalid-token rejections per second from a second process (keep-alive HTTP)
//!   and the latency a valid client sees meanwhile;
//! - resident memory idle and with thousands of held sessions;
//! - what the audit event stream costs: grants with an `envelopectl events
//!   -f` follower and with a stalled one against none, and the memory of a
//!   full event buffer ([`audit`]);
//! - resident memory during and after a flood of partial request heads from
//!   many source subnets ([`heads`]).
//!
//! Needs root (it creates network namespaces); never touches the host's own
//! firewall. Run it with `bash scripts/bench.sh`.

mod apply;
mod audit;
mod client;
mod flood;
mod followers;
mod go_baseline;
mod heads;
mod http1;
mod lab;
mod measure;
mod plot;
mod schedule;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use testbed::envelope::Firewall;

use crate::lab::{Lab, ENVELOPE_PORT, SERVICE_PORT};
use crate::stats::{ms, ratio, us, Sample};

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
    /// Seconds of Poisson arrivals.
    #[arg(long, default_value_t = 20.0)]
    poisson_secs: f64,
    /// Poisson arrivals per second.
    #[arg(long, default_value_t = 50.0)]
    poisson_rate: f64,
    /// Skip the firewall rounds (back to back, Poisson, burst, SIGKILL): only
    /// the token floods and memory, e.g. to re-measure them on a quiet machine.
    #[arg(long)]
    no_firewall: bool,
    /// Where the SVG plots go (grant-latency CDFs).
    #[arg(long, default_value = "target/bench-plots")]
    plots: PathBuf,
    /// Grants held when the envelope is SIGKILLed (at most --burst).
    #[arg(long, default_value_t = 32)]
    crash_held: usize,
    /// Seconds of invalid-token flood.
    #[arg(long, default_value_t = 5)]
    flood_secs: u64,
    /// Keep-alive connections of the flood.
    #[arg(long, default_value_t = 32)]
    flood_conns: usize,
    /// Held sessions for the memory figure.
    #[arg(long, default_value_t = 5000)]
    held: usize,
    /// Sessions per condition (no follower, `envelopectl events -f`, a
    /// stalled follower) for the event-stream figures; 0 skips them.
    #[arg(long, default_value_t = 500)]
    events_sessions: usize,
    /// Sessions per block of one condition (the conditions alternate in blocks).
    #[arg(long, default_value_t = 10)]
    events_block: usize,
    /// `--events-buffer` of the envelopes in the event-stream rounds.
    #[arg(long, default_value_t = 10_000)]
    events_buffer: usize,
    /// Connections with a partial request head for the memory figure; 0 skips it.
    #[arg(long, default_value_t = 16_000)]
    heads: usize,
    /// Bytes of each partial head (under the envelope's 16 KiB head limit).
    #[arg(long, default_value_t = 15_000)]
    head_bytes: usize,
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
        /// One token per line, sent in turn.
        #[arg(long)]
        tokens_file: PathBuf,
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
        tokens_file,
        conns,
        secs,
    }) = cli.mode
    {
        let tokens: Vec<String> = std::fs::read_to_string(&tokens_file)?
            .lines()
            .map(str::to_owned)
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(flood::run(target, tokens, conns, secs));
    }
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "envelope-bench must run as root (it creates network namespaces)"
    );
    let envelope = match cli.envelope.clone() {
        Some(path) => path,
        None => testbed::built_bin("envelope").map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(envelope.exists(), "{} not found", envelope.display());
    if cli.heads > 0 {
        heads::check_sizes(cli.heads, usize::from(cli.burst), cli.head_bytes)?;
    }
    if cli.events_sessions > 0 {
        audit::check_sizes(audit_sizes(&cli))?;
    }
    let lab = Lab::new(envelope, cli.burst)?;
    let mut report = Report::default();

    if !cli.no_firewall {
        firewall_rounds(&lab, &cli, &mut report)?;
    }
    if !cli.no_firewall && cli.events_sessions > 0 {
        followers_round(&lab, &cli, &mut report)?;
    }

    println!(
        "\n== invalid-token flood ({} s, {} keep-alive connections, second process)",
        cli.flood_secs, cli.flood_conns
    );
    for (kind, token) in [
        ("bad signature", forged_token(&lab)?),
        ("malformed", "not.a.token".to_owned()),
    ] {
        let (rate, valid) = flood_round(&lab, &[token], &[], cli.flood_conns, cli.flood_secs)?;
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

    println!(
        "\n== unique valid tokens, single-use cache on vs off ({} s, {} connections; requests without upgrade headers: 400 after the token and replay checks)",
        cli.flood_secs, cli.flood_conns
    );
    let unique: Vec<String> = (0..4096)
        .map(|k| lab.token_with_jti(Some(format!("bench-{k}"))))
        .collect();
    let (off, _) = flood_round(&lab, &unique, &[], cli.flood_conns, cli.flood_secs)?;
    let (on, _) = flood_round(
        &lab,
        &unique,
        &["--single-use-tokens"],
        cli.flood_conns,
        cli.flood_secs,
    )?;
    report.line(
        "valid tokens/s, single-use cache on vs off",
        &format!("{on:.0}/s vs {off:.0}/s = {:.2}×", on / off.max(1.0)),
        "≥ 0.9× (cost ≤ 10%)",
        on >= 0.9 * off,
    );

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

    if cli.events_sessions > 0 {
        event_buffer_round(&lab, &cli, &mut report)?;
    }
    if cli.heads > 0 {
        heads_rounds(&lab, &cli, &mut report)?;
    }

    report.print();
    Ok(())
}

fn audit_sizes(cli: &Cli) -> audit::Sizes {
    audit::Sizes {
        sessions: cli.events_sessions,
        block: cli.events_block,
        buffer: cli.events_buffer,
    }
}

/// Back-to-back grants with no event follower, one `envelopectl events -f`,
/// and a stalled one, alternating on one envelope.
fn followers_round(lab: &Lab, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let sizes = audit_sizes(cli);
    let envelopectl = testbed::built_bin("envelopectl").map_err(anyhow::Error::msg)?;
    println!(
        "\n== event followers: {} back-to-back sessions each with none, with `envelopectl events -f --json`, \
         and with a stalled follower; one envelope (iptables, --events-buffer {}), blocks of {} \
         alternating with the order rotated each cycle, each block right after {} admin \
         requests, after 2 warm-up sessions",
        sizes.sessions,
        sizes.buffer,
        sizes.block,
        audit::PREFILL
    );
    let grants = audit::grant_round(lab, &envelopectl, sizes)?;
    audit::report_grants(&grants, sizes, report);
    Ok(())
}

/// Resident memory of a full event buffer against the same envelope idle.
fn event_buffer_round(lab: &Lab, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\n== memory of a full event buffer (--events-buffer {}, filled with refused tokens; \
         --firewall none, plain HTTP; control: the same fill with --events-buffer 1)",
        cli.events_buffer
    );
    let memory = audit::buffer_memory(lab, cli.events_buffer, &forged_token(lab)?)?;
    audit::report_memory(&memory, report);
    Ok(())
}

/// Partial request heads from every client subnet, ended by the client and
/// then by the head timeout, each on a fresh envelope.
fn heads_rounds(lab: &Lab, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\n== partial request heads: {} connections over {} source /24s, {} bytes each, never ended \
         (--firewall none, plain HTTP, a fresh envelope per round)",
        cli.heads,
        lab.client_addrs.len(),
        cli.head_bytes
    );
    for ending in [heads::Ending::ClientCloses, heads::Ending::HeadTimeout] {
        let flood = heads::round(lab, cli.heads, cli.head_bytes, ending)?;
        heads::report(&flood, ending, report);
    }
    Ok(())
}

/// The subnet (as iptables writes it) of a client address.
fn subnet_of(ip: &std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(_) => unreachable!("the bench's clients are IPv4"),
    }
}

fn firewall_rounds(lab: &Lab, cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let n = cli.sessions;
    let subnets: Vec<String> = lab.client_addrs.iter().map(subnet_of).collect();
    let server = lab.ns.server.clone();
    let ports = [SERVICE_PORT, lab::PROXY_PORT];

    println!("\n== the firewall step alone: Firewall::apply of one grant, then its revoke, {n} times (iptables+ipset, no daemon)");
    let step = apply::grant_and_revoke(&server, n)?;
    report.line(
        "firewall step alone: apply(grant) p50 / p99",
        &format!("{} / {}", us(step.grant.pct(50)), us(step.grant.pct(99))),
        "",
        true,
    );
    report.line(
        "firewall step alone: apply(revoke) p50 / p99",
        &format!("{} / {}", us(step.revoke.pct(50)), us(step.revoke.pct(99))),
        "",
        true,
    );

    println!("\n== back to back: {n} sessions, each starting as the last one ends (no pause)");
    let ours = back_to_back(lab, "iptables", n)?;
    let nft = back_to_back(lab, "nftables", n)?;
    let rules = back_to_back(lab, "iptables-restore", n)?;
    let one = vec![subnet_of(&testbed::CLIENT_V4.parse()?)];
    let go = go_baseline::with_guard(&server, ports, move || go_baseline::back_to_back(&one, n))?;
    println!(
        "   go sequence: grant p50 {} p99 {} | revoke p50 {} p99 {}",
        ms(go.grant.pct(50)),
        ms(go.grant.pct(99)),
        ms(go.revoke.pct(50)),
        ms(go.revoke.pct(99))
    );
    report.ratio(
        "back-to-back grant p50 (upgrade → 101)",
        ours.grant.pct(50),
        go.grant.pct(50),
        0.1,
    );
    report.ratio(
        "back-to-back grant p99",
        ours.grant.pct(99),
        go.grant.pct(99),
        f64::NAN,
    );
    report.ratio(
        "back-to-back revoke p50 (Close → refused)",
        ours.revoke.pct(50),
        go.revoke.pct(50),
        0.1,
    );
    report.ratio(
        "back-to-back revoke p99",
        ours.revoke.pct(99),
        go.revoke.pct(99),
        f64::NAN,
    );
    report.ratio(
        "back-to-back revoke complete p50 (→ proxy refused)",
        ours.revoke_all.pct(50),
        go.revoke.pct(50),
        f64::NAN,
    );
    // The nftables backend beside the ipset path, same run (goal: p50 ≤ 1.1×).
    for (what, theirs, ipset) in [
        ("grant p50", nft.grant.pct(50), ours.grant.pct(50)),
        ("grant p99", nft.grant.pct(99), ours.grant.pct(99)),
        ("revoke p50", nft.revoke.pct(50), ours.revoke.pct(50)),
        ("revoke p99", nft.revoke.pct(99), ours.revoke.pct(99)),
    ] {
        let goal = if what.ends_with("p50") { 1.1 } else { f64::NAN };
        report.ratio(
            &format!("  nftables back-to-back {what} vs ipset"),
            theirs,
            ipset,
            goal,
        );
    }
    report.ratio(
        "  fallback (iptables-restore) grant p50",
        rules.grant.pct(50),
        go.grant.pct(50),
        f64::NAN,
    );
    report.ratio(
        "  fallback (iptables-restore) revoke p50",
        rules.revoke.pct(50),
        go.revoke.pct(50),
        f64::NAN,
    );

    let plan = schedule::poisson(cli.poisson_rate, cli.poisson_secs, subnets.len(), 20261203);
    println!(
        "\n== Poisson arrivals: {} sessions at {}/s for {} s, 0.5–1.5 s each, {} source /24s",
        plan.len(),
        cli.poisson_rate,
        cli.poisson_secs,
        subnets.len()
    );
    let tls = client::tls_connector(&testbed::testdata("insecure-test-ca.pem"))?;
    let poisson = poisson_round(lab, &plan, "iptables", &tls)?;
    let nft_poisson = poisson_round(lab, &plan, "nftables", &tls)?;
    let go_schedule: Vec<_> = plan
        .iter()
        .map(|(at, source, hold)| (*at, subnets[*source].clone(), *hold))
        .collect();
    let go_poisson =
        go_baseline::with_guard(&server, ports, move || go_baseline::arrivals(&go_schedule))?;
    println!(
        "   ours: grant p50 {} p99 {} | nftables: p50 {} p99 {} | go sequence: grant p50 {} p99 {}",
        ms(poisson.pct(50)),
        ms(poisson.pct(99)),
        ms(nft_poisson.pct(50)),
        ms(nft_poisson.pct(99)),
        ms(go_poisson.grant.pct(50)),
        ms(go_poisson.grant.pct(99))
    );
    report.ratio(
        "Poisson grant p99 vs the baseline's p50",
        poisson.pct(99),
        go_poisson.grant.pct(50),
        0.2,
    );
    report.ratio(
        "Poisson grant p50",
        poisson.pct(50),
        go_poisson.grant.pct(50),
        f64::NAN,
    );
    report.ratio(
        "Poisson grant p99",
        poisson.pct(99),
        go_poisson.grant.pct(99),
        f64::NAN,
    );
    report.ratio(
        "  nftables Poisson grant p99 vs ipset",
        nft_poisson.pct(99),
        poisson.pct(99),
        f64::NAN,
    );

    println!(
        "\n== burst: {} clients from distinct /24s upgrading at once",
        subnets.len()
    );
    let burst = burst_round(lab, "iptables", &tls)?;
    let nft_burst = burst_round(lab, "nftables", &tls)?;
    let addr = lab.envelope_addr();
    // The same burst with no firewall at all: what HTTP, TLS and the token
    // checks of 64 requests cost on their own (the floor under our figure).
    let envelope = lab.envelope("burst-floor", true, Firewall::None, &["--max-clients=256"])?;
    let (sources, token, connector) = (lab.client_addrs.clone(), lab.token(), tls.clone());
    let floor = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::upgrades_at_once(addr, connector, sources, token).await })
    })
    .with_context(|| format!("burst floor\n{}", envelope.logs()))?;
    envelope.stop()?;
    let burst_subnets = subnets.clone();
    let (go_granted, go_revoked, go_burst) =
        go_baseline::with_guard(&server, ports, move || go_baseline::burst(&burst_subnets))?;
    println!(
        "   ours: granted {} revoked {} | go sequence: granted {} revoked {}",
        ms(burst.all_granted),
        ms(burst.all_revoked),
        ms(go_granted),
        ms(go_revoked)
    );
    report.ratio("burst: all granted", burst.all_granted, go_granted, 0.02);
    report.ratio(
        "  burst with --firewall none (HTTP+TLS+token floor)",
        floor,
        go_granted,
        f64::NAN,
    );
    report.ratio(
        "burst: all revoked",
        burst.all_revoked,
        go_revoked,
        f64::NAN,
    );
    report.ratio(
        "  nftables burst: all granted vs ipset",
        nft_burst.all_granted,
        burst.all_granted,
        f64::NAN,
    );
    report.ratio(
        "  nftables burst: all revoked vs ipset",
        nft_burst.all_revoked,
        burst.all_revoked,
        f64::NAN,
    );

    std::fs::create_dir_all(&cli.plots)?;
    let ipset = "envelope (iptables+ipset)";
    let nftables = "envelope (nftables)";
    let plots = [
        (
            "back-to-back.svg",
            format!("Grant latency, {n} sessions back to back"),
            vec![
                (ipset, &ours.grant),
                (nftables, &nft.grant),
                ("envelope (iptables-restore)", &rules.grant),
                ("Go sequence", &go.grant),
            ],
        ),
        (
            "poisson.svg",
            format!(
                "Grant latency, Poisson arrivals ({}/s for {} s)",
                cli.poisson_rate, cli.poisson_secs
            ),
            vec![
                (ipset, &poisson),
                (nftables, &nft_poisson),
                ("Go sequence", &go_poisson.grant),
            ],
        ),
        (
            "burst.svg",
            format!("Grant latency of each client, {} at once", subnets.len()),
            vec![
                (ipset, &burst.grants),
                (nftables, &nft_burst.grants),
                ("Go sequence", &go_burst),
            ],
        ),
    ];
    for (file, title, series) in plots {
        let path = cli.plots.join(file);
        plot::cdf(&path, &title, &series)?;
        println!("   plot: {}", path.display());
    }

    crash_round(lab, cli, &tls, report, "iptables")?;
    crash_round(lab, cli, &tls, report, "nftables")
}

/// The Poisson schedule against one backend: every grant's latency.
fn poisson_round(
    lab: &Lab,
    plan: &[(Duration, usize, Duration)],
    backend: &'static str,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<Sample> {
    let envelope = lab.envelope(
        &format!("poisson-{backend}"),
        true,
        Firewall::Kernel(backend),
        &["--max-clients=1024", "--proxy-ports=80,443"],
    )?;
    let schedule: Vec<_> = plan
        .iter()
        .map(|&(at, source, hold)| (at, lab.client_addrs[source], hold))
        .collect();
    let (addr, token, connector) = (lab.envelope_addr(), lab.token(), tls.clone());
    let poisson = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::arrivals(addr, connector, schedule, token).await })
    })
    .with_context(|| format!("poisson, {backend}\n{}", envelope.logs()))?;
    envelope.stop()?;
    Ok(poisson)
}

/// Every client from its own /24 at once against one backend.
fn burst_round(
    lab: &Lab,
    backend: &'static str,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<measure::Burst> {
    let envelope = lab.envelope(
        &format!("burst-{backend}"),
        true,
        Firewall::Kernel(backend),
        &["--max-clients=256", "--proxy-ports=80,443"],
    )?;
    let (sources, token, connector) = (lab.client_addrs.clone(), lab.token(), tls.clone());
    let addr = lab.envelope_addr();
    let burst = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::burst(addr, SERVICE_PORT, connector, sources, token).await })
    })
    .with_context(|| format!("burst, {backend}\n{}", envelope.logs()))?;
    envelope.stop()?;
    Ok(burst)
}

struct Sequential {
    grant: Sample,
    revoke: Sample,
    revoke_all: Sample,
}

fn back_to_back(lab: &Lab, backend: &'static str, sessions: usize) -> anyhow::Result<Sequential> {
    let envelope = lab.envelope(
        backend,
        true,
        Firewall::Kernel(backend),
        &["--max-clients=1", "--proxy-ports=80,443"],
    )?;
    let tls = client::tls_connector(&testbed::testdata("insecure-test-ca.pem"))?;
    let (addr, service, proxy) = (lab.envelope_addr(), lab.service(), lab.proxy());
    let tokens: Vec<String> = (0..sessions).map(|_| lab.token()).collect();
    let latencies = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move { measure::sequential(addr, service, proxy, tls, tokens).await })
    })
    .with_context(|| format!("{backend}: back-to-back sessions\n{}", envelope.logs()))?;
    println!(
        "   {backend:>16}: grant p50 {} p99 {} | revoke p50 {} p99 {} (complete p50 {})",
        ms(latencies.grant.pct(50)),
        ms(latencies.grant.pct(99)),
        ms(latencies.revoke.pct(50)),
        ms(latencies.revoke.pct(99)),
        ms(latencies.revoke_all.pct(50)),
    );
    envelope.stop()?;
    Ok(Sequential {
        grant: latencies.grant,
        revoke: latencies.revoke,
        revoke_all: latencies.revoke_all,
    })
}

/// SIGKILL with grants held and no restart: how long until the kernel alone
/// has closed every one. Sessions are capped at `HOLD`; members outlive that by
/// the default margin.
fn crash_round(
    lab: &Lab,
    cli: &Cli,
    tls: &tokio_rustls::TlsConnector,
    report: &mut Report,
    backend: &'static str,
) -> anyhow::Result<()> {
    const HOLD: Duration = Duration::from_secs(3);
    const MARGIN: Duration = Duration::from_secs(5);
    let held = cli.crash_held.min(lab.client_addrs.len());
    println!(
        "\n== SIGKILL with {held} grants held (sessions capped at {HOLD:?}), no restart, --firewall {backend}"
    );
    let envelope = lab.envelope(
        &format!("crash-{backend}"),
        true,
        Firewall::Kernel(backend),
        &[
            "--max-clients=256",
            "--timeout=1s",
            "--max-hold=3s",
            "--proxy-ports=80,443",
        ],
    )?;
    let sources: Vec<_> = lab.client_addrs[..held].to_vec();
    let (addr, token, connector, service) =
        (lab.envelope_addr(), lab.token(), tls.clone(), lab.service());
    let pid = envelope.pid();
    let (after_kill, after_grant) = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            let granted = std::time::Instant::now();
            let sessions = measure::hold_from(addr, connector, sources.clone(), token).await?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            let killed = std::time::Instant::now();
            let all_closed =
                measure::wait_all_refused(service, &sources, Duration::from_secs(30)).await?;
            drop(sessions);
            Ok::<_, anyhow::Error>((all_closed - killed, all_closed - granted))
        })
    })
    .with_context(|| format!("crash\n{}", envelope.logs()))?;
    drop(envelope);
    // Nothing of the killed instance may stay: the next test starts clean.
    let out = lab
        .ns
        .server_cmd(&[lab.envelope_bin.to_str().unwrap_or("envelope"), "--cleanup"]);
    anyhow::ensure!(
        out.status.success(),
        "--cleanup after the crash round failed"
    );
    println!(
        "   all {held} closed by the kernel {} after SIGKILL ({} after they were granted)",
        ms(after_kill),
        ms(after_grant)
    );
    let bound = HOLD + MARGIN + Duration::from_secs(1);
    report.line(
        &format!("SIGKILL, {held} held: kernel closed all (from grant), {backend}"),
        &format!("{} (Go original: never)", ms(after_grant)),
        &format!("≤ {} (hold + margin + 1 s)", ms(bound)),
        after_grant <= bound,
    );
    Ok(())
}

/// A token that parses and names the right kid but is signed by another key.
fn forged_token(lab: &Lab) -> anyhow::Result<String> {
    let genuine = lab.token();
    let other = common::PrivateKey::generate(common::Algorithm::EdDSA, "bench")?;
    let forger = testbed::Issuer::new(other, lab::MACHINE, lab::SUBJECT);
    // Valid for as long as any flood may run, so only the signature is wrong.
    let forged = forger.sign(&common::Claims {
        exp: i64::MAX / 2,
        iat: None,
        ..forger.claims(0)
    });
    anyhow::ensure!(forged.len() > 100 && forged != genuine);
    Ok(forged)
}

fn flood_round(
    lab: &Lab,
    tokens: &[String],
    extra: &[&str],
    conns: usize,
    secs: u64,
) -> anyhow::Result<(f64, Sample)> {
    let mut args = vec!["--max-clients=64"];
    args.extend_from_slice(extra);
    let envelope = lab.envelope("flood", false, Firewall::None, &args)?;
    let target = lab.envelope_addr();
    let tokens_file = lab.dir.path().join("flood-tokens");
    std::fs::write(&tokens_file, tokens.join("\n"))?;
    let flood = testbed::launcher::command_in(Some(&lab.ns.client), std::env::current_exe()?)
        .args(["flood", "--target", &target.to_string(), "--tokens-file"])
        .arg(&tokens_file)
        .args(["--conns", &conns.to_string(), "--secs", &secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the flood process")?;
    let valid_tokens: Vec<String> = (0..(secs as usize * 10 + 10))
        .map(|k| lab.token_with_jti(Some(format!("valid-{k}"))))
        .collect();
    let valid = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let watch = Duration::from_secs(secs).saturating_sub(Duration::from_millis(600));
            measure::valid_client_during(target, valid_tokens, watch, Duration::from_millis(100))
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
    let (responses, rejected, seconds) =
        (field("responses="), field("rejected="), field("seconds="));
    println!("   {}", text.trim());
    envelope.stop()?;
    // Invalid tokens: the rate of 401s. Valid ones (no upgrade headers): every answer.
    let counted = if rejected > 0.0 { rejected } else { responses };
    Ok((counted / seconds.max(0.001), valid))
}

fn memory_round(lab: &Lab, held: usize) -> anyhow::Result<(u64, u64, f64)> {
    let max = held.to_string();
    let envelope = lab.envelope(
        "rss",
        false,
        Firewall::None,
        &[&format!("--max-clients={max}"), "--timeout=10m"],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = envelope.rss_kib();
    let (addr, token) = (lab.envelope_addr(), lab.token());
    let pid = envelope.pid();
    let (loaded, peak) = measure::in_ns(&lab.ns.client, move || {
        Box::pin(async move {
            let sessions = measure::hold_many(addr, token, held).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let figures = lab::rss_kib(pid);
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
        println!("\n== summary (ours vs the Go sequence measured in this run; headline first)");
        for (what, figure, goal, met) in &self.lines {
            let verdict = match (goal.is_empty(), met) {
                (true, _) => "",
                (false, true) => "met",
                (false, false) => "NOT MET",
            };
            println!("{what:<52} {figure:<36} {goal:<26} {verdict}");
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
