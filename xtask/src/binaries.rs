//! The binaries the workspace ships, each with its clap definition. A new binary
//! is one line here (plus its crate in `xtask/Cargo.toml` and its file in the
//! Debian package's assets, `envelope/Cargo.toml`).

/// One shipped binary.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The executable's file name.
    pub name: &'static str,
    /// Its clap definition, as the binary parses it.
    pub command: fn() -> clap::Command,
    /// Whether it accepts Go-style single-dash long flags (`common::goflags`).
    pub go_flags: bool,
}

#[rustfmt::skip]
pub const BINARIES: &[Binary] = &[
    Binary { name: "envelope", command: envelope::command, go_flags: true },
    Binary { name: "envelopectl", command: envelopectl::command, go_flags: false },
    Binary { name: "example-signer", command: example_signer::command, go_flags: true },
    Binary { name: "envelope-exec", command: envelope_exec::command, go_flags: true },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// What `NAME --version` prints, from the definition each binary parses.
    #[test]
    fn every_binary_names_its_version_and_commit() {
        let version = common::build_info::long_version();
        for binary in BINARIES {
            let shown = (binary.command)().render_version();
            assert_eq!(shown, format!("{} {version}\n", binary.name));
        }
    }
}
