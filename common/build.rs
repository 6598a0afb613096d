//! Build script: the commit this build comes from and the compiler that made
//! it, handed to `common::build_info` as compile-time environment variables.
//!
//! The commit is read with `git` (so a worktree, whose `.git` is a file, works
//! as a clone does), and only when this crate's own manifest is tracked by the
//! repository git finds: a release tarball unpacked inside some other checkout
//! (a distribution's packaging repository) must not take that one's commit.
//! Without git the revision is `unknown`, or what `SOURCE_REVISION`
//! says (for builds from a tarball that know their commit).
//!
//! Reruns only when HEAD, the branch it names or the index change, so an
//! ordinary `cargo build` is not rebuilt every time. The price: `-dirty`
//! describes the tree as of the last such change (an edit that is neither
//! staged nor committed does not rerun it); a build from a clean checkout, as
//! CI and the package make, is exact.

use std::path::{Path, PathBuf};
use std::process::Command;

const OVERRIDE: &str = "SOURCE_REVISION";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    let revision = match std::env::var(OVERRIDE) {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => git_revision().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=BUILD_INFO_REVISION={revision}");
    println!("cargo:rustc-env=BUILD_INFO_RUSTC={}", rustc_version());
}

/// `1a2b3c4`, or `1a2b3c4-dirty` when a tracked file differs from HEAD.
fn git_revision() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    git(&dir, &["ls-files", "--error-unmatch", "Cargo.toml"])?;
    watch_head(&dir)?;
    let hash = git(&dir, &["rev-parse", "--short", "HEAD"])?;
    let changed = git(&dir, &["status", "--porcelain", "--untracked-files=no"])?;
    Some(if changed.is_empty() {
        hash
    } else {
        format!("{hash}-dirty")
    })
}

/// Asks cargo to rerun this script when the commit or the index changes: the
/// worktree's HEAD and its reflog (appended whenever the checked-out branch
/// moves, even when HEAD itself only names the branch), the branch's ref, and
/// the index (`git add`, `git commit`). Only files that exist: cargo reruns a
/// script every time a watched path is missing.
fn watch_head(dir: &Path) -> Option<()> {
    let dirs = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
        ],
    )?;
    let mut lines = dirs.lines();
    let (git_dir, common_dir) = (PathBuf::from(lines.next()?), PathBuf::from(lines.next()?));
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("logs/HEAD"),
        git_dir.join("index"),
        common_dir.join("packed-refs"),
    ];
    let branch = git(dir, &["rev-parse", "--symbolic-full-name", "HEAD"])?;
    if branch.starts_with("refs/") {
        watched.push(common_dir.join(branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(())
}

/// One git command's trimmed output, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        // `git status` would otherwise refresh the index on disk, which is
        // watched above: the next build would run this script again.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

/// `1.95.0` from `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
