//! `goflags`: arguments through `common::goflags` — the Go-style single-dash
//! rewriting with the `envelope` binary's own clap definition, then clap's
//! parse of the result (which runs the flags' value parsers) — and every
//! argument (and the value after `=`) through `parse_duration`.
//!
//! Input: one argument per line (`envelope` is prepended as argv[0]).
//!
//! Beyond "no panic": the rewriting keeps the count, changes an argument only
//! by one leading `-` on a single-dash word, nothing after `--`, and is
//! idempotent; a parsed duration reads back the same from its milliseconds.
#![no_main]

use std::sync::{LazyLock, Mutex};

use common::goflags::{go_style_args, parse_duration};
use libfuzzer_sys::fuzz_target;

/// Built once: clap builds a command on its first parse, and a clone per input
/// would build it again each time.
static COMMAND: LazyLock<Mutex<clap::Command>> = LazyLock::new(|| Mutex::new(envelope::command()));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<String> = std::iter::once("envelope")
        .chain(text.split('\n'))
        .map(str::to_owned)
        .collect();
    let mut command = COMMAND.lock().unwrap_or_else(|e| e.into_inner());
    let out = go_style_args(&command, args.clone());
    assert_eq!(out.len(), args.len());
    let mut positional = false;
    for (before, after) in args.iter().zip(&out) {
        if positional || !before.starts_with('-') || before.starts_with("--") {
            assert_eq!(before, after);
        } else {
            assert!(
                after == before || *after == format!("-{before}"),
                "{before} → {after}"
            );
        }
        positional |= before == "--";
    }
    assert_eq!(go_style_args(&command, out.clone()), out, "not idempotent");
    let _ = command.try_get_matches_from_mut(&out);
    for arg in &args[1..] {
        durations(arg);
        if let Some((_, value)) = arg.split_once('=') {
            durations(value);
        }
    }
});

fn durations(text: &str) {
    if let Ok(d) = parse_duration(text) {
        if let Ok(ms) = u64::try_from(d.as_millis()) {
            assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d), "{text:?}");
        }
    }
}
