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
    /// Load the verify keys and the TLS certificate again (each all or
    /// nothing; what is in force stays if refused).
    Reload,
    /// Stop taking new clients (lame duck: /health answers 503); held sessions go on.
    Drain,
    /// Take new clients again after a drain.
    Resume,
    /// Show the audit events (a table, or NDJSON with --json); -f follows.
    Events {
        /// Keep following new events until interrupted (resuming across
        /// reconnects; a restarted envelope is said to have lost the history).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events after this seq.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Only these event types (comma-separated, e.g. grant.opened,access.refused).
        #[arg(long = "type", value_name = "T,…")]
        kinds: Option<String>,
        /// Only events about a subnet inside this network (e.g. 198.18.7.0/24).
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Print NDJSON (for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the envelope's version, configuration summary and occupancy.
    Status {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}
