//! `example-signer`: generate keys and mint access tokens for the envelope (SPEC §4).
//! This file owns the flags, the dispatch and the exit code.
//!
//! - [`keygen`]: `example-signer keygen`, key pairs as go-jose `jwk-keygen` files.
//! - [`sign`]: the default mode, one signed token printed as an envelope URL.
//!
//! Go-style `-flag` spellings come from [`common::goflags`], shared with `envelope`.

mod keygen;
mod sign;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Generate keys and mint access tokens for the envelope.
///
/// Without a subcommand, signs one token with --private for --machine and
/// --subject and prints `<--url>?access_token=<JWT>`; the claims go to stderr.
/// Go-style single-dash flags (`-private=FILE`) are accepted too.
#[derive(Debug, Parser)]
#[command(
    name = "example-signer",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sign: Option<sign::SignArgs>,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::KeygenArgs),
}

fn main() -> ExitCode {
    let args = common::goflags::go_style_args(&Cli::command(), std::env::args());
    let cli = Cli::parse_from(args);
    let outcome = match (&cli.command, &cli.sign) {
        (Some(Command::Keygen(args)), _) => keygen::run(args),
        (None, Some(args)) => sign::run(args),
        (None, None) => Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "give a subcommand or --private, --machine and --subject",
            )
            .exit(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-signer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
