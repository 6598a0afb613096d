//! `envelopectl`'s flags and subcommands (SPEC §6).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use common::admin::{DEFAULT_SOCKET, SOCKET_ENV};

/// List and revoke the envelope's live grants over its admin socket.
#[derive(Debug, Parser)]
#[command(name = "envelopectl", version = common::build_info::long_version(), about)]
pub struct Cli {
    /// The envelope's admin socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show live grants (a table, or JSON with --json).
    List {
        /// Print JSON (for scripts) instead of a table.
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
        /// Revoke every grant.
        #[arg(long)]
        all: bool,
    },
    /// Load the verify keys again (all or nothing; the old keys stay if refused).
    Reload,
    /// Show the envelope's version, configuration summary and occupancy.
    Status {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}
