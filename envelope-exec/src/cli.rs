//! Command line: the flags (each also from an `ENVELOPE_EXEC_*` variable), the Go
//! original's single-dash spellings, and where the user's command begins.

use std::ffi::OsString;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use common::goflags::{go_style_args, parse_duration};

pub const DEFAULT_LOCATE_URL: &str = "https://locate.measurementlab.net/v2/nearest/";
pub const DEFAULT_SERVICE: &str = "wehe/replay";
pub const DEFAULT_ENVELOPE_KEY: &str = "wss://:4443/v0/envelope/access";

/// Find a server through the Locate API, hold its access envelope open and run
/// COMMAND behind it, with SERVICE_URL and SERVICE_HOSTNAME in its environment.
///
/// Exits with COMMAND's status (128+N when a signal N ended it); 1 when
/// envelope-exec itself fails (Locate, no envelope accepted, the envelope ended the
/// session first, timeout); 2 on a usage error; 126/127 when COMMAND cannot be run.
#[derive(Debug, Parser)]
#[command(name = "envelope-exec", version = common::build_info::long_version(), about, long_about = None)]
pub struct Flags {
    /// Locate API v2 URL prefix; the service name is appended to its path.
    #[arg(long, env = "ENVELOPE_EXEC_LOCATE_URL", default_value = DEFAULT_LOCATE_URL, value_name = "URL")]
    pub locate_url: String,

    /// The service to ask Locate for.
    #[arg(long, env = "ENVELOPE_EXEC_SERVICE", default_value = DEFAULT_SERVICE, value_name = "NAME/TYPE")]
    pub service: String,

    /// The key of the envelope URL in each Locate result's `urls`.
    #[arg(long, env = "ENVELOPE_EXEC_ENVELOPE_KEY", default_value = DEFAULT_ENVELOPE_KEY, value_name = "KEY")]
    pub envelope_key: String,

    /// Bound on the whole run: the Locate request, opening the envelope and COMMAND.
    #[arg(long, env = "ENVELOPE_EXEC_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// How long COMMAND gets to exit after SIGTERM before it is killed.
    #[arg(long, env = "ENVELOPE_EXEC_GRACE_PERIOD", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace_period: Duration,

    /// The command to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

impl Flags {
    /// Parses the process's arguments; prints usage and exits 2 when they are bad.
    pub fn from_env_args() -> Flags {
        match Flags::try_parse_from(rewrite(std::env::args_os())) {
            Ok(flags) => flags,
            Err(e) => e.exit(),
        }
    }
}

/// Gives Go's single-dash spellings (`-locate-url=…`, `-timeout 10s`) clap's double
/// dash, but only before COMMAND: like Go's `flag` package, parsing stops at the
/// first argument that is not a flag, so `envelope-exec ls -la` keeps `-la` for `ls`.
pub fn rewrite(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let cmd = Flags::command();
    let args: Vec<OsString> = args.into_iter().collect();
    let start = command_start(&cmd, &args);
    let (flags, command) = args.split_at(start);
    let flags = flags.iter().map(|a| a.to_string_lossy().into_owned());
    let mut out: Vec<OsString> = go_style_args(&cmd, flags)
        .into_iter()
        .map(OsString::from)
        .collect();
    if command.first().is_some_and(|a| a != "--") {
        out.push("--".into());
    }
    out.extend(command.iter().cloned());
    out
}

/// Index of the first argument that belongs to COMMAND (or of a bare `--`).
fn command_start(cmd: &clap::Command, args: &[OsString]) -> usize {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if arg == "--" || arg == "-" || !arg.starts_with('-') {
            return i;
        }
        i += 1;
        let body = arg.trim_start_matches('-');
        if !body.contains('=') && takes_value(cmd, body) {
            i += 1;
        }
    }
    i
}

fn takes_value(cmd: &clap::Command, name: &str) -> bool {
    cmd.get_arguments()
        .find(|a| {
            a.get_long() == Some(name) || a.get_all_aliases().unwrap_or_default().contains(&name)
        })
        .is_some_and(|a| a.get_action().takes_values())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(rewrite(args.iter().map(OsString::from)))
    }

    fn command(flags: &Flags) -> Vec<&str> {
        flags.command.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn defaults_are_the_go_tools() {
        let flags = parse(&["envelope-exec", "env"]).unwrap();
        assert_eq!(flags.locate_url, DEFAULT_LOCATE_URL);
        assert_eq!(flags.service, "wehe/replay");
        assert_eq!(flags.envelope_key, "wss://:4443/v0/envelope/access");
        assert_eq!(flags.timeout, Duration::from_secs(60));
        assert_eq!(command(&flags), ["env"]);
    }

    #[test]
    fn go_spellings_before_the_command_and_dashes_after_it_are_kept() {
        let flags = parse(&[
            "envelope-exec",
            "-locate-url=http://127.0.0.1:1/v2/nearest/",
            "-timeout",
            "10s",
            "--service",
            "ndt/ndt7",
            "ls",
            "-la",
            "--timeout=3s",
        ])
        .unwrap();
        assert_eq!(flags.locate_url, "http://127.0.0.1:1/v2/nearest/");
        assert_eq!(flags.timeout, Duration::from_secs(10));
        assert_eq!(flags.service, "ndt/ndt7");
        assert_eq!(command(&flags), ["ls", "-la", "--timeout=3s"]);
    }

    #[test]
    fn a_double_dash_ends_the_flags() {
        let flags = parse(&["envelope-exec", "-timeout=5s", "--", "-weird", "x"]).unwrap();
        assert_eq!(command(&flags), ["-weird", "x"]);
    }

    #[test]
    fn a_missing_command_or_a_bad_duration_is_a_usage_error() {
        assert!(parse(&["envelope-exec"]).is_err());
        assert!(parse(&["envelope-exec", "-timeout=5s"]).is_err());
        assert!(parse(&["envelope-exec", "-timeout=soon", "true"]).is_err());
    }
}
