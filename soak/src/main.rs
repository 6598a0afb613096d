//! `envelope-soak`: a model-based soak of the envelope's firewall. From a seed
//! it runs a random sequence of operations (grants, hang-ups, deadlines,
//! revokes, crashes, tampering, foreign rules, injected netlink faults)
//! against the real envelope binary in network namespaces, and after every
//! step checks the admin API, the kernel and packets against its model. A
//! mismatch prints the seed, the step, the three views, and the shortest
//! prefix of the sequence that reproduces it. Needs root; never touches the
//! host's own network namespace.

mod client;
mod lab;
mod model;
mod ops;
mod views;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::lab::{Backend, Lab};
use crate::model::Model;
use crate::ops::{Driver, Mismatch, Op};

#[derive(Debug, Parser)]
#[command(about = "Model-based firewall soak of the envelope, in network namespaces (root)")]
struct Args {
    /// The sequence's seed (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Operations to run.
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// On a mismatch, do not search for the shortest reproducing prefix.
    #[arg(long)]
    no_shrink: bool,
    /// The envelope binary (default: next to this one).
    #[arg(long)]
    envelope: Option<PathBuf>,
    /// Print every operation as it runs.
    #[arg(long, short)]
    verbose: bool,
    /// The envelope's `--firewall` backend under test.
    #[arg(long, value_enum, default_value = "iptables")]
    backend: Backend,
}

/// How a run ended.
enum Outcome {
    Passed {
        counts: std::collections::BTreeMap<&'static str, usize>,
        skipped: usize,
    },
    Failed {
        step: usize,
        ops: Vec<Op>,
        mismatch: Mismatch,
        logs: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    let envelope = match &args.envelope {
        Some(path) => path.clone(),
        None => testbed::built_bin("envelope").map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(
        envelope.exists(),
        "no envelope binary at {}",
        envelope.display()
    );
    let backend = args.backend;
    println!(
        "soak: seed {seed}, {} operations, --firewall {}",
        args.ops,
        backend.flag()
    );
    let started = Instant::now();
    match run(seed, args.ops, &envelope, backend, args.verbose)? {
        Outcome::Passed { counts, skipped } => {
            println!(
                "soak: seed {seed}: {} operations, 0 mismatches, nothing left behind, {:.1}s",
                args.ops,
                started.elapsed().as_secs_f64()
            );
            println!("soak: ran {counts:?}; skipped {skipped} (not applicable then)");
            Ok(())
        }
        Outcome::Failed {
            step,
            ops,
            mismatch,
            logs,
        } => {
            println!("soak: MISMATCH, seed {seed}, step {step} ({})", ops[step]);
            for problem in &mismatch.problems {
                println!("  {problem}");
            }
            if let Some(views) = &mismatch.views {
                print!("{}", views.render());
            }
            println!("  operations so far:");
            for (i, op) in ops.iter().enumerate().take(step + 1) {
                println!("    {i}: {op}");
            }
            println!("  envelope log (this instance, last 40 lines):");
            let lines: Vec<&str> = logs.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                println!("    {line}");
            }
            if !args.no_shrink {
                let shortest = shrink(seed, step + 1, &envelope, backend)?;
                println!(
                    "soak: shortest reproducing prefix: --seed {seed} --ops {shortest} \
                     --backend {} (keep it in soak/tests/regressions.rs)",
                    backend.flag()
                );
            }
            println!("soak: seed {seed}: mismatch at step {step}");
            std::process::exit(1)
        }
    }
}

/// Bisects for the shortest prefix of the sequence that still mismatches.
fn shrink(seed: u64, failing: usize, envelope: &Path, backend: Backend) -> anyhow::Result<usize> {
    let (mut good, mut bad) = (0, failing);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        print!("soak: replaying the first {mid} operations: ");
        match run(seed, mid, envelope, backend, false)? {
            Outcome::Passed { .. } => {
                println!("passes");
                good = mid;
            }
            Outcome::Failed { step, .. } => {
                println!("mismatch at step {step}");
                bad = mid;
            }
        }
    }
    Ok(bad)
}

/// One run in fresh namespaces: the first `count` operations of `seed`.
fn run(
    seed: u64,
    count: usize,
    envelope: &Path,
    backend: Backend,
    verbose: bool,
) -> anyhow::Result<Outcome> {
    let lab = Lab::new(envelope.to_owned(), backend)?;
    let client_ns = lab.ns.client.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread (and every socket it makes) lives in the client namespace.
                let path = format!("/run/netns/{client_ns}");
                let file = std::fs::File::open(&path).with_context(|| path.clone())?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns {path}"))?;
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(drive(&lab, seed, count, verbose))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the soak thread panicked"))?
    })
}

async fn drive(lab: &Lab, seed: u64, count: usize, verbose: bool) -> anyhow::Result<Outcome> {
    let ops = ops::generate(seed, count, lab.sources.len());
    let mut before = views::Views::default();
    views::read_kernel(lab, &mut before);
    let mut driver = Driver {
        lab,
        model: Model::new(before.foreign),
        envelope: None,
        tls: client::tls_connector(&testbed::testdata("insecure-test-ca.pem"))?,
        foreign_count: 0,
        counts: Default::default(),
    };
    let fail = |driver: &Driver, step: usize, mismatch: Mismatch| Outcome::Failed {
        step,
        ops: ops.clone(),
        mismatch,
        logs: driver.logs(),
    };
    // Start: the static lines are recorded once and must be the same at every start.
    if let Err(m) = driver.start(None).await {
        return Ok(fail(&driver, 0, m));
    }
    let mut fresh = views::Views::default();
    views::read_kernel(lab, &mut fresh);
    driver.model.static_lines = fresh.static_lines;
    let mut skipped = 0;
    for (step, &op) in ops.iter().enumerate() {
        if verbose {
            println!("  {step}: {op}");
        }
        let outcome = match driver.apply(op).await {
            Ok(ran) => {
                skipped += usize::from(!ran);
                driver.check().await
            }
            Err(m) => Err(m),
        };
        if let Err(m) = outcome {
            return Ok(fail(&driver, step, m));
        }
    }
    // The final SIGTERM: ruleset and sets as before the start (plus foreign changes).
    let last = ops.len().saturating_sub(1);
    if let Some(mut envelope) = driver.envelope.take() {
        envelope.signal(nix::sys::signal::Signal::SIGTERM);
        for session in &mut driver.model.sessions {
            if let Some(ws) = session.ws.take() {
                tokio::spawn(client::drain(ws));
            }
        }
        let status = envelope.wait(Duration::from_secs(20)).await?;
        if !status.success() {
            let logs = envelope.logs();
            return Ok(Outcome::Failed {
                step: last,
                ops,
                mismatch: Mismatch::new(format!("final SIGTERM: exit {status}")),
                logs,
            });
        }
        driver.model.sessions.clear();
        driver.model.phase = model::Phase::Down;
        if let Err(m) = driver.check().await {
            return Ok(fail(&driver, last, m));
        }
    }
    Ok(Outcome::Passed {
        counts: driver.counts,
        skipped,
    })
}
