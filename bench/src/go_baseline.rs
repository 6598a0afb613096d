//! The baseline: the Go original's firewall sequence, run by the bench itself in
//! the server namespace with no daemon. `address/granter.go` grants with three
//! separate `iptables` commands (the client's subnet, tcp/80, tcp/443) and revokes
//! with the three matching deletes. Timing only those commands is kind to the
//! baseline: it pays no HTTP, TLS or token check, which our figures include.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::stats::Sample;

/// What the baseline measured for one arrival pattern.
pub struct GoFigures {
    pub grant: Sample,
    pub revoke: Sample,
}

/// The guard the baseline's rules sit in front of: tcp to the service and the
/// proxy port is reset unless an ACCEPT inserted above it matches.
fn guard(op: &str, port: u16) -> anyhow::Result<()> {
    iptables(&[
        op,
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])
}

/// Runs one `iptables -w …` (absolute path, like the Go original's flags) and
/// fails unless it succeeds. Must run on a thread inside the server namespace.
/// Concurrent iptables-nft commands sometimes exit 4 (a busy resource); the Go
/// original would answer 500 then, the baseline kindly retries instead, and
/// the retry's time counts.
fn iptables(args: &[&str]) -> anyhow::Result<()> {
    for _ in 0..50 {
        let status = Command::new("/usr/sbin/iptables")
            .arg("-w")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        match status.code() {
            Some(0) => return Ok(()),
            Some(4) => continue,
            _ => anyhow::bail!("iptables {args:?} failed: {status}"),
        }
    }
    anyhow::bail!("iptables {args:?} kept failing with exit 4")
}

fn specs(subnet: &str) -> [Vec<String>; 3] {
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    [
        words(&format!("INPUT -s {subnet} -j ACCEPT")),
        words("INPUT -p tcp --dport 80 -j ACCEPT"),
        words("INPUT -p tcp --dport 443 -j ACCEPT"),
    ]
}

/// The three inserts of one grant; returns how long they took.
pub fn grant(subnet: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for spec in specs(subnet) {
        let mut args = vec!["-I"];
        args.extend(spec.iter().map(String::as_str));
        iptables(&args)?;
    }
    Ok(started.elapsed())
}

/// The three deletes of one revoke; returns how long until the subnet's rule was
/// gone (the first delete: from then on the service refuses the client).
pub fn revoke(subnet: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut refused_at = None;
    for spec in specs(subnet) {
        let mut args = vec!["-D"];
        args.extend(spec.iter().map(String::as_str));
        iptables(&args)?;
        refused_at.get_or_insert_with(|| started.elapsed());
    }
    Ok(refused_at.expect("three deletes"))
}

/// Runs `work` on a thread inside the server namespace with the guard installed
/// around it, and removes the guard afterwards.
pub fn with_guard<T: Send + 'static>(
    server_ns: &str,
    ports: [u16; 2],
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    testbed::NetPair::in_ns(server_ns, move || {
        for port in ports {
            guard("-A", port)?;
        }
        let result = work();
        for port in ports {
            guard("-D", port)?;
        }
        result
    })
}

/// `n` sessions one after another with no pause: grant, then revoke at once.
pub fn back_to_back(subnets: &[String], n: usize) -> anyhow::Result<GoFigures> {
    let (mut grants, mut revokes) = (Vec::new(), Vec::new());
    for i in 0..n {
        let subnet = &subnets[i % subnets.len()];
        grants.push(grant(subnet)?);
        revokes.push(revoke(subnet)?);
    }
    Ok(GoFigures {
        grant: Sample::new(grants),
        revoke: Sample::new(revokes),
    })
}

/// Each arrival (offset from the start, subnet, session length) on its own
/// thread, as concurrent requests are in the Go original.
pub fn arrivals(schedule: &[(Duration, String, Duration)]) -> anyhow::Result<GoFigures> {
    let start = Instant::now();
    let handles: Vec<_> = schedule
        .iter()
        .cloned()
        .map(|(at, subnet, hold)| {
            thread::spawn(move || -> anyhow::Result<(Duration, Duration)> {
                thread::sleep((start + at).saturating_duration_since(Instant::now()));
                let granted = grant(&subnet)?;
                thread::sleep(hold);
                Ok((granted, revoke(&subnet)?))
            })
        })
        .collect();
    let (mut grants, mut revokes) = (Vec::new(), Vec::new());
    for handle in handles {
        let (g, r) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a baseline thread panicked"))??;
        grants.push(g);
        revokes.push(r);
    }
    Ok(GoFigures {
        grant: Sample::new(grants),
        revoke: Sample::new(revokes),
    })
}

/// Every subnet granted at once (one thread each), then every one revoked at
/// once: the time until all were granted, until all were revoked, and each
/// thread's own grant time.
pub fn burst(subnets: &[String]) -> anyhow::Result<(Duration, Duration, Sample)> {
    let run =
        |op: fn(&str) -> anyhow::Result<Duration>| -> anyhow::Result<(Duration, Vec<Duration>)> {
            let started = Instant::now();
            let handles: Vec<_> = subnets
                .iter()
                .cloned()
                .map(|s| thread::spawn(move || op(&s)))
                .collect();
            let mut each = Vec::new();
            for handle in handles {
                each.push(
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("a baseline thread panicked"))??,
                );
            }
            Ok((started.elapsed(), each))
        };
    let (granted, each) = run(grant)?;
    let (revoked, _) = run(revoke)?;
    Ok((granted, revoked, Sample::new(each)))
}
