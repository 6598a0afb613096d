//! `envelopectl`: operators' view of the envelope's live grants (SPEC §6).
//! `main` maps every outcome to an exit code: 0 done, 1 nothing matched (or the
//! envelope refused), 2 usage, 3 the envelope cannot be reached.

mod client;
mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::admin::{DEFAULT_SOCKET, SOCKET_ENV};

use crate::client::{Client, CtlError};

/// List and revoke the envelope's live grants over its admin socket.
#[derive(Debug, Parser)]
#[command(name = "envelopectl", version, about)]
struct Cli {
    /// The envelope's admin socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show live grants (a table, or JSON with --json).
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a session by grant ID, every session whose subnet contains IP, or --all.
    Revoke {
        /// A grant ID (from `list`) or a client IP address.
        #[arg(
            required_unless_present = "all",
            conflicts_with = "all",
            value_name = "ID|IP"
        )]
        target: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Load the verify keys again (all or nothing; the old keys stay if refused).
    Reload,
    /// Show the envelope's version, configuration summary and occupancy.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("envelopectl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let client = Client::new(cli.socket);
    let result = runtime.block_on(async {
        match cli.command {
            Command::List { json } => cmd::list::run(&client, json).await,
            Command::Revoke { target, all } => {
                cmd::revoke::run(&client, target.as_deref(), all).await
            }
            Command::Status { json } => cmd::status::run(&client, json).await,
            Command::Reload => cmd::reload::run(&client).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

impl CtlError {
    fn exit_code(&self) -> u8 {
        match self {
            CtlError::Unreachable { .. } => 3,
            // The socket answered but this user may not use it: as good as unreachable.
            CtlError::Api { status, .. } if *status == hyper::StatusCode::FORBIDDEN => 3,
            CtlError::Usage(_) => 2,
            CtlError::Api { .. } | CtlError::Protocol(_) => 1,
        }
    }
}
