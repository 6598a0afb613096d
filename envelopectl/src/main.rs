//! `envelopectl`: operators' view of the envelope's live grants (SPEC §6).
//! `main` maps every outcome to an exit code: 0 done, 1 nothing matched (or the
//! envelope refused), 2 usage, 3 the envelope cannot be reached. The flags live in
//! the library ([`envelopectl::cli`]) so that man pages and completions share them,
//! and so does the admin-socket client ([`envelopectl::Client`]).

mod cmd;

use std::process::ExitCode;

use clap::Parser;
use envelopectl::cli::{Cli, Command};
use envelopectl::{Client, CtlError};

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
            Command::Drain => cmd::lifecycle::drain(&client).await,
            Command::Resume => cmd::lifecycle::resume(&client).await,
            Command::Events {
                follow,
                since,
                kinds,
                subnet,
                json,
            } => {
                let ask = cmd::events::Ask {
                    follow,
                    since,
                    kinds,
                    subnet,
                    json,
                };
                cmd::events::run(&client, ask).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(error: &CtlError) -> u8 {
    match error {
        CtlError::Unreachable { .. } => 3,
        // The socket answered but this user may not use it: as good as unreachable.
        CtlError::Api { status, .. } if *status == hyper::StatusCode::FORBIDDEN => 3,
        CtlError::Usage(_) => 2,
        CtlError::Api { .. } | CtlError::Protocol(_) => 1,
    }
}
