//! `envelope-exec`: the client-side helper of the access envelope (SPEC §7), a port
//! of the Go `m-lab/access` `cmd/envelope-exec`.
//!
//! Layout:
//! - [`cli`]: flags, `ENVELOPE_EXEC_*` variables and Go spellings.
//! - [`locate`]: the Locate API v2 `nearest` request and its answer.
//! - [`net`]: TCP and TLS (system roots) connections.
//! - [`envelope`]: opening the first envelope that accepts, holding and closing it.
//! - [`command`]: the user's command in its own process group, and its stopping.
//! - [`run`]: the whole sequence under one `--timeout`, and its exit code.
//!
//! [`command`] is the clap definition, for tools that write the man page and
//! shell completions (the workspace's `xtask`).

pub mod cli;
pub mod command;
pub mod envelope;
pub mod locate;
pub mod net;
pub mod run;

/// The clap definition of `envelope-exec`, exactly as the binary parses it
/// (before [`cli::rewrite`] gives Go spellings their double dash).
pub fn command() -> clap::Command {
    <cli::Flags as clap::CommandFactory>::command()
}

/// `text` on one line: control characters (newlines, ANSI escapes) from a remote
/// answer become spaces, and it is cut at 200 characters.
pub fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}
