//! Where the workspace's files are: its root, the insecure test keys and
//! certificates in `testdata/`, and its binaries. Binaries are built once, by
//! `cargo build` or `scripts/test.sh` (whose `cargo test --workspace` builds
//! every one the tests run), never from inside a test.

use std::path::{Path, PathBuf};

/// The workspace root (this source tree).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbed sits in the workspace root")
        .to_owned()
}

/// A file of the workspace's `testdata/` (insecure test keys and certificates).
pub fn testdata(name: &str) -> PathBuf {
    workspace().join("testdata").join(name)
}

/// The workspace binary `name` from the target directory the running program
/// was built into (`target/debug` for a test, whose own executable sits in
/// its `deps/`); an error naming the `cargo build` command when it is missing.
pub fn built_bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the running executable: {e}"))?;
    let mut dir = exe.parent().unwrap_or(Path::new("."));
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    if !path.exists() {
        let release = if dir.ends_with("release") {
            " --release"
        } else {
            ""
        };
        return Err(format!(
            "{} is not built: run `cargo build{release} -p {name}` first \
             (scripts/test.sh builds every binary)",
            path.display()
        ));
    }
    Ok(path)
}

/// [`built_bin`] for tests: fails at once, in one line, when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    built_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_command_that_builds_it() {
        let e = built_bin("no-such-binary").unwrap_err();
        assert!(
            e.ends_with(
                "no-such-binary is not built: run `cargo build -p no-such-binary` first \
                 (scripts/test.sh builds every binary)"
            ),
            "{e}"
        );
        assert!(testdata("insecure-test-ca.pem").exists());
    }
}
