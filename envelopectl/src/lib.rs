//! `envelopectl` as a library: its command-line definition, so that tools
//! (the workspace's `xtask`, which writes man pages and shell completions) read
//! the same clap `Command` the binary parses, and its admin-socket [`Client`],
//! which the soak also uses. The binary (`main.rs`) owns the dispatch, the
//! output and the exit codes.

pub mod cli;
mod client;

pub use client::{Client, CtlError};

/// The clap definition of `envelopectl`, exactly as the binary parses it.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
