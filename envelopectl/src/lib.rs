//! `envelopectl`'s command-line definition, as a library so that tools (the
//! workspace's `xtask`, which writes man pages and shell completions) can read
//! the same clap `Command` the binary parses. The binary (`main.rs`) owns the
//! dispatch, the admin-socket client and the exit codes.

pub mod cli;

/// The clap definition of `envelopectl`, exactly as the binary parses it.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
