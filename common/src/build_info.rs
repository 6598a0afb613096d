//! What this build is: the workspace version, the commit it was built from and
//! the compiler (computed by `common/build.rs`), for every binary's
//! `--version`, the daemon's status, its start-up line and its
//! `envelope_build_info` metric.

use std::sync::OnceLock;

/// The workspace version, `0.2.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit's short hash, `-dirty` appended when a tracked file differed
/// from it; `unknown` when built without git (a tarball).
pub const REVISION: &str = env!("BUILD_INFO_REVISION");
/// The compiler's version, `1.95.0`.
pub const RUSTC: &str = env!("BUILD_INFO_RUSTC");

/// The one version string every binary shows: `0.2.0 (1a2b3c4)`.
pub fn long_version() -> &'static str {
    static LONG: OnceLock<String> = OnceLock::new();
    LONG.get_or_init(|| describe(VERSION, REVISION))
}

/// `VERSION (REVISION)`, or the version alone when the commit is not known
/// (a tarball build, or a daemon too old to report it).
pub fn describe(version: &str, revision: &str) -> String {
    match revision {
        "" | "unknown" => version.to_owned(),
        revision => format!("{version} ({revision})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_follows_the_version() {
        assert_eq!(describe("0.2.0", "1a2b3c4"), "0.2.0 (1a2b3c4)");
        assert_eq!(describe("0.2.0", "1a2b3c4-dirty"), "0.2.0 (1a2b3c4-dirty)");
    }

    #[test]
    fn an_unknown_commit_leaves_the_version_alone() {
        assert_eq!(describe("0.2.0", "unknown"), "0.2.0");
        assert_eq!(describe("0.2.0", ""), "0.2.0");
    }

    #[test]
    fn this_build_names_its_commit_and_compiler() {
        assert!(long_version().starts_with(VERSION), "{}", long_version());
        let hash = REVISION.trim_end_matches("-dirty");
        assert!(
            REVISION == "unknown"
                || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
            "{REVISION}"
        );
        assert!(RUSTC.split('.').count() >= 3, "{RUSTC}");
    }
}
