//! `envelopectl`: operators' view of live grants (SPEC §6).
use clap::Parser;

/// List and revoke the envelope's live grants over its admin socket.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
