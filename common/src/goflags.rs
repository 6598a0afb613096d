//! Command-line compatibility with the Go originals: single-dash long flags
//! (`-envelope.listen-address=:8880`) and Go duration strings (`90s`, `1h30m`).

use std::time::Duration;

/// Rewrites `-name[=value]` to `--name[=value]` for every long flag or alias that
/// `cmd` knows, up to a bare `--`. Anything else keeps clap's usual meaning, so
/// short flags such as `-h` still work.
pub fn go_style_args(cmd: &clap::Command, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut longs: Vec<String> = Vec::new();
    collect_longs(cmd, &mut longs);
    let mut rest_is_positional = false;
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 || rest_is_positional {
                return arg;
            }
            if arg == "--" {
                rest_is_positional = true;
                return arg;
            }
            let Some(body) = arg.strip_prefix('-').filter(|b| !b.starts_with('-')) else {
                return arg;
            };
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            // A known long name, or any other multi-letter word: Go has no short
            // flags, so `-httpx.tcp-network` must not be read as `-h` (help).
            let multi_letter =
                name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic());
            if longs.iter().any(|l| l == name) || multi_letter {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

fn collect_longs(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        out.extend(arg.get_long().map(str::to_owned));
        out.extend(
            arg.get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned),
        );
    }
    for sub in cmd.get_subcommands() {
        collect_longs(sub, out);
    }
}

/// Parses a Go duration: a sequence of decimal numbers with units `h`, `m`, `s`,
/// `ms` (e.g. `1h30m`, `90s`, `250ms`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 90s, 2m, 1h30m)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => value.checked_mul(3600).map(Duration::from_secs),
            "m" => value.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(value)),
            "ms" => Some(Duration::from_millis(value)),
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, alias = "envelope.listen-address")]
        listen_address: Option<String>,
        #[arg(short = 'v')]
        verbose: bool,
        rest: Vec<String>,
    }

    fn rewrite(args: &[&str]) -> Vec<String> {
        go_style_args(&Cli::command(), args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn known_single_dash_long_flags_become_double_dash() {
        assert_eq!(
            rewrite(&[
                "prog",
                "-envelope.listen-address=:8880",
                "-listen-address",
                "x"
            ]),
            [
                "prog",
                "--envelope.listen-address=:8880",
                "--listen-address",
                "x"
            ]
        );
    }

    #[test]
    fn short_flags_values_and_positionals_after_double_dash_are_kept() {
        assert_eq!(
            rewrite(&["prog", "-v", "-1m", "--", "-listen-address"]),
            ["prog", "-v", "-1m", "--", "-listen-address"]
        );
    }

    #[test]
    fn unknown_go_flags_are_not_mistaken_for_short_flags() {
        // `-httpx.tcp-network` must be an unknown long flag, not `-h` (help, exit 0).
        assert_eq!(
            rewrite(&["prog", "-httpx.tcp-network=tcp"]),
            ["prog", "--httpx.tcp-network=tcp"]
        );
        let err = Cli::try_parse_from(rewrite(&["prog", "-httpx.tcp-network=tcp"])).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "1x", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
