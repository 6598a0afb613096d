//! `example-signer` binary: Go-style flags → the library's [`Cli`] → one mode,
//! and the exit code. Everything else lives in the library (`lib.rs`).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use example_signer::{keygen, sign, Cli, Command};

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
