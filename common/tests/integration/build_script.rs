//! `common/build.rs`, compiled on its own and run as cargo would run it,
//! against throw-away repositories: the commit of a clone and of a git
//! worktree, `-dirty`, the fall-back of a tarball (no git, or someone else's
//! repository around it, or `SOURCE_REVISION`), and the files it asks cargo
//! to watch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The build script as a program, compiled once per test run.
fn script() -> &'static Path {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = SCRIPT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build-script");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs");
        let status = Command::new(rustc())
            .args(["--edition", "2021", "-o"])
            .arg(&path)
            .arg(source)
            .status()
            .unwrap();
        assert!(status.success(), "rustc build.rs: {status}");
        (dir, path)
    });
    path
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned())
}

/// What the script told cargo, run for a crate at `manifest_dir`.
struct Said(String);

impl Said {
    fn of(manifest_dir: &Path) -> Said {
        Said::with_override(manifest_dir, None)
    }

    /// With `SOURCE_REVISION` set to `given`.
    fn with_override(manifest_dir: &Path, given: Option<&str>) -> Said {
        let mut script = Command::new(script());
        script
            .current_dir(manifest_dir)
            .env("CARGO_MANIFEST_DIR", manifest_dir)
            .env("RUSTC", rustc())
            .env_remove("SOURCE_REVISION");
        if let Some(given) = given {
            script.env("SOURCE_REVISION", given);
        }
        let out = script.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        Said(String::from_utf8(out.stdout).unwrap())
    }

    fn env(&self, name: &str) -> &str {
        let prefix = format!("cargo:rustc-env={name}=");
        let found = self.0.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        found.unwrap_or_else(|| panic!("no {name} in:\n{}", self.0))
    }

    fn watched(&self) -> Vec<PathBuf> {
        let lines = self.0.lines();
        lines
            .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
            .map(PathBuf::from)
            .collect()
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository whose one commit holds a crate manifest at `crate/`.
fn repository(root: &Path) -> PathBuf {
    git(root, &["init", "-q"]);
    let krate = root.join("crate");
    std::fs::create_dir(&krate).unwrap();
    std::fs::write(krate.join("Cargo.toml"), "[package]\n").unwrap();
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "first"]);
    krate
}

#[test]
fn a_clone_gives_its_short_hash_and_dirty_when_a_tracked_file_changed() {
    let root = tempfile::tempdir().unwrap();
    let krate = repository(root.path());
    let hash = git(root.path(), &["rev-parse", "--short", "HEAD"]);
    assert_eq!(Said::of(&krate).env("BUILD_INFO_REVISION"), hash);

    // An untracked file is not a change to what was built.
    std::fs::write(krate.join("notes.txt"), "x").unwrap();
    assert_eq!(Said::of(&krate).env("BUILD_INFO_REVISION"), hash);
    std::fs::write(krate.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    let dirty = format!("{hash}-dirty");
    assert_eq!(Said::of(&krate).env("BUILD_INFO_REVISION"), dirty);
}

#[test]
fn a_worktree_gives_its_own_commit_and_watches_its_own_head() {
    let root = tempfile::tempdir().unwrap();
    let main = root.path().join("main");
    std::fs::create_dir(&main).unwrap();
    repository(&main);
    let tree = root.path().join("tree");
    git(
        &main,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "side",
            tree.to_str().unwrap(),
        ],
    );
    std::fs::write(tree.join("crate/Cargo.toml"), "[package]\nname = \"y\"\n").unwrap();
    git(&tree, &["commit", "-q", "-am", "second"]);

    let said = Said::of(&tree.join("crate"));
    let hash = git(&tree, &["rev-parse", "--short", "HEAD"]);
    assert_ne!(hash, git(&main, &["rev-parse", "--short", "HEAD"]));
    assert_eq!(said.env("BUILD_INFO_REVISION"), hash);
    let git_dir = PathBuf::from(git(
        &tree,
        &["rev-parse", "--path-format=absolute", "--git-dir"],
    ));
    let watched = said.watched();
    for path in [
        git_dir.join("HEAD"),
        git_dir.join("logs/HEAD"),
        git_dir.join("index"),
    ] {
        assert!(watched.contains(&path), "{path:?} not in {watched:?}");
    }
    assert!(
        watched
            .iter()
            .all(|p| p.exists() || p == Path::new("build.rs")),
        "a missing watched path reruns the script on every build: {watched:?}"
    );
}

#[test]
fn a_tarball_falls_back_to_unknown_even_inside_another_repository() {
    let bare = tempfile::tempdir().unwrap();
    let said = Said::of(bare.path());
    assert_eq!(said.env("BUILD_INFO_REVISION"), "unknown");
    assert_eq!(said.watched(), [PathBuf::from("build.rs")]);

    // Unpacked inside a packaging repository that does not track it.
    let outer = tempfile::tempdir().unwrap();
    repository(outer.path());
    let unpacked = outer.path().join("envelope-0.2.0");
    std::fs::create_dir(&unpacked).unwrap();
    std::fs::write(unpacked.join("Cargo.toml"), "[package]\n").unwrap();
    assert_eq!(Said::of(&unpacked).env("BUILD_INFO_REVISION"), "unknown");

    // A packager who knows the commit says so.
    let told = Said::with_override(&unpacked, Some("1a2b3c4"));
    assert_eq!(told.env("BUILD_INFO_REVISION"), "1a2b3c4");
}

#[test]
fn the_compiler_version_is_rustcs() {
    let said = Said::of(tempfile::tempdir().unwrap().path());
    let version = Command::new(rustc()).arg("--version").output().unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert_eq!(
        Some(said.env("BUILD_INFO_RUSTC")),
        version.split_whitespace().nth(1)
    );
}

/// In CI's clone (and any checkout) the library names the commit; only a
/// tarball, whose crate no repository tracks, says `unknown`.
#[test]
fn this_build_names_the_commit_it_was_built_from() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(here).output();
        out.ok().filter(|o| o.status.success()).map(|o| o.stdout)
    };
    let tracked = git(&["ls-files", "--error-unmatch", "Cargo.toml"]).is_some();
    let revision = common::build_info::REVISION;
    match git(&["rev-parse", "--short", "HEAD"]) {
        _ if option_env!("SOURCE_REVISION").is_some() => {}
        Some(hash) if tracked => {
            let hash = String::from_utf8(hash).unwrap();
            assert_eq!(revision.trim_end_matches("-dirty"), hash.trim());
        }
        _ => assert_eq!(revision, "unknown"),
    }
}
