//! Workspace tasks, run as `cargo run -p xtask -- TASK`.
//!
//! `dist-docs [OUTDIR]` (default `dist/` at the workspace root, which the
//! Debian package's assets read) writes everything the package ships that is
//! generated from the code:
//! - `man/*.1`: man pages from each binary's clap definition ([`man`]);
//! - `completions/{bash,zsh,fish}/…`: shell completions ([`completions`]);
//! - `systemd/envelope.service`: the unit with the packaged paths ([`unit`]).
//!
//! `licenses [--check]` writes (or checks) `THIRD-PARTY-LICENSES.txt`, the
//! licences of every crate compiled into the shipped binaries ([`licenses`]).
//!
//! The binaries are listed once, in [`binaries`].
//!
//! `layers [SRC]` (default `envelope/src`) prints a crate's top-level module
//! graph and fails on any import cycle ([`layers`]).

mod binaries;
mod completions;
mod layers;
mod licenses;
mod man;
mod unit;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::binaries::BINARIES;

/// Workspace tasks.
#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Write the man pages, shell completions and packaged systemd unit.
    DistDocs {
        /// Output directory [default: dist/ at the workspace root].
        outdir: Option<PathBuf>,
    },
    /// Print a crate's top-level module graph; fail on an import cycle.
    Layers {
        /// The crate's src/ [default: envelope/src].
        src: Option<PathBuf>,
    },
    /// Write THIRD-PARTY-LICENSES.txt from Cargo.lock (needs cargo-about).
    Licenses {
        /// Compare with the committed file instead of writing it.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::DistDocs { outdir } => {
            dist_docs(&outdir.unwrap_or_else(|| workspace_root().join("dist")))
        }
        Task::Layers { src } => {
            return layers_task(&src.unwrap_or_else(|| workspace_root().join("envelope/src")))
        }
        Task::Licenses { check } => licenses::run(&workspace_root(), check),
    };
    match result {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn layers_task(src: &Path) -> ExitCode {
    let graph = match layers::graph(src) {
        Ok(graph) => graph,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    let cycles = layers::cycles(&graph);
    for cycle in &cycles {
        eprintln!("xtask: import cycle: {}", cycle.join(" "));
    }
    if cycles.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// The generated subdirectories are replaced whole, so a page or script of a
/// binary that is gone is not shipped from an earlier run.
fn fresh_dir(path: &Path) -> Result<PathBuf> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn dist_docs(outdir: &Path) -> Result<Vec<PathBuf>> {
    let man_dir = fresh_dir(&outdir.join("man"))?;
    let completions_dir = fresh_dir(&outdir.join("completions"))?;
    let systemd_dir = fresh_dir(&outdir.join("systemd"))?;
    let names: Vec<&str> = BINARIES.iter().map(|b| b.name).collect();
    let mut written = Vec::new();
    for binary in BINARIES {
        written.extend(man::write_pages(binary, &names, &man_dir)?);
        written.extend(completions::write_scripts(binary, &completions_dir)?);
    }
    let source_path = workspace_root().join("docs/deploy/envelope.service");
    let source = std::fs::read_to_string(&source_path)
        .with_context(|| format!("cannot read {}", source_path.display()))?;
    let unit_path = systemd_dir.join("envelope.service");
    std::fs::write(&unit_path, unit::packaged(&source)?)
        .with_context(|| format!("cannot write {}", unit_path.display()))?;
    written.push(unit_path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_docs_writes_a_page_and_three_completions_per_binary() {
        let dir = tempfile::tempdir().unwrap();
        let files = dist_docs(dir.path()).unwrap();
        for binary in BINARIES {
            let page = dir.path().join(format!("man/{}.1", binary.name));
            let text = std::fs::read_to_string(&page).unwrap();
            assert!(
                text.contains(&format!("\n.TH {} 1 ", binary.name)),
                "{}: {text}",
                page.display()
            );
            assert_eq!(text.matches(".ds Aq").count(), 2, "one preamble: {text}");
            assert_eq!(text.contains(".SH \"GO-STYLE FLAGS\""), binary.go_flags);
            for shell_file in [
                format!("completions/bash/{}", binary.name),
                format!("completions/zsh/_{}", binary.name),
                format!("completions/fish/{}.fish", binary.name),
            ] {
                let script = std::fs::read_to_string(dir.path().join(&shell_file)).unwrap();
                assert!(script.contains(binary.name), "{shell_file}");
            }
        }
        // Subcommands get their own pages.
        for sub in [
            "envelopectl-list",
            "envelopectl-revoke",
            "envelopectl-status",
            "example-signer-keygen",
        ] {
            assert!(dir.path().join(format!("man/{sub}.1")).exists(), "{sub}");
        }
        // The Go spellings clap hides are on the envelope's page.
        let envelope = std::fs::read_to_string(dir.path().join("man/envelope.1")).unwrap();
        for alias in [
            "envelope.listen\\-address",
            "prometheusx.listen\\-address",
            "httpx.tcp\\-network",
        ] {
            assert!(envelope.contains(alias), "{alias} missing from envelope.1");
        }
        assert!(files.contains(&dir.path().join("systemd/envelope.service")));
        assert!(files.iter().all(|f| f.is_file()), "{files:?}");
    }

    #[test]
    fn a_second_run_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        dist_docs(dir.path()).unwrap();
        let stale = dir.path().join("man/gone.1");
        std::fs::write(&stale, ".TH GONE 1\n").unwrap();
        dist_docs(dir.path()).unwrap();
        assert!(!stale.exists());
    }
}
