//! The systemd unit as the Debian package installs it: `docs/deploy/envelope.service`
//! (the one source of truth, written for a manual install into /usr/local/bin)
//! with the binary paths pointed at /usr/bin and its install instructions
//! replaced by the package's.

use anyhow::{bail, Result};

const MANUAL_PATH: &str = "/usr/local/bin/envelope";
const PACKAGED_PATH: &str = "/usr/bin/envelope";

const HEADER: &str = "\
# systemd unit for the envelope daemon, installed by the envelope Debian package
# from docs/deploy/envelope.service. The package does not enable or start it:
#
#   edit /etc/default/envelope (every variable is described there)
#   systemctl enable --now envelope
#
# All configuration comes from ENVELOPE_* variables in /etc/default/envelope
# (every flag has one; see envelope(1)), so this file stays unchanged.
";

/// The packaged unit text from the source unit's text. The source's leading
/// comment block (up to the first blank line) is its manual-install recipe and
/// is replaced; `ExecStart=` and `ExecStopPost=` must name the manual path.
pub fn packaged(source: &str) -> Result<String> {
    let Some((_, body)) = source.split_once("\n\n") else {
        bail!("envelope.service: expected a leading comment block, then a blank line");
    };
    let exec_lines = body
        .lines()
        .filter(|l| l.starts_with("ExecStart=") || l.starts_with("ExecStopPost="))
        .collect::<Vec<_>>();
    if exec_lines.len() != 2 || !exec_lines.iter().all(|l| l.contains(MANUAL_PATH)) {
        bail!("envelope.service: expected ExecStart= and ExecStopPost= to run {MANUAL_PATH}, found {exec_lines:?}");
    }
    if body.matches(MANUAL_PATH).count() != 2 {
        bail!("envelope.service: {MANUAL_PATH} appears outside ExecStart= and ExecStopPost=");
    }
    Ok(format!(
        "{HEADER}\n{}",
        body.replace(MANUAL_PATH, PACKAGED_PATH)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/deploy/envelope.service"
        );
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn packaged_unit_runs_the_packaged_binary_with_the_same_settings() {
        let source = source();
        let unit = packaged(&source).unwrap();
        assert!(unit.contains("\nExecStart=/usr/bin/envelope\n"), "{unit}");
        assert!(
            unit.contains("\nExecStopPost=/usr/bin/envelope --cleanup\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nEnvironmentFile=-/etc/default/envelope\n"),
            "{unit}"
        );
        assert!(!unit.contains("/usr/local"), "{unit}");
        // Every setting line other than the two binaries is the source's, in order.
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.replace(MANUAL_PATH, PACKAGED_PATH))
                .collect()
        };
        assert_eq!(settings(&unit), settings(&source));
    }

    #[test]
    fn a_source_that_moved_the_binary_is_refused() {
        let moved = source().replace(MANUAL_PATH, "/opt/envelope/bin/envelope");
        let err = packaged(&moved).unwrap_err().to_string();
        assert!(err.contains("ExecStart="), "{err}");
        assert!(packaged("[Service]\nExecStart=/usr/local/bin/envelope\n").is_err());
    }
}
