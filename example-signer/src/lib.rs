//! `example-signer`: generate keys and mint access tokens for the envelope (SPEC §4).
//! The library holds the command-line definition and both modes, so that tools
//! (the workspace's `xtask`, which writes man pages and shell completions) read
//! the same clap `Command` the binary parses; `main.rs` owns the dispatch and
//! the exit code.
//!
//! - [`keygen`]: `example-signer keygen`, key pairs as go-jose `jwk-keygen` files.
//! - [`sign`]: the default mode, one signed token printed as an envelope URL.
//!
//! Go-style `-flag` spellings come from [`common::goflags`], shared with `envelope`.

pub mod keygen;
pub mod sign;

use clap::{Parser, Subcommand};

/// Generate keys and mint access tokens for the envelope.
///
/// Without a subcommand, signs one token with --private for --machine and
/// --subject and prints `<--url>?access_token=<JWT>`; the claims go to stderr.
/// Go-style single-dash flags (`-private=FILE`) are accepted too.
#[derive(Debug, Parser)]
#[command(
    name = "example-signer",
    version = common::build_info::long_version(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub sign: Option<sign::SignArgs>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Keygen(keygen::KeygenArgs),
}

/// The clap definition of `example-signer`, exactly as the binary parses it.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
