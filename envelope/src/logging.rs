//! tracing-subscriber set-up (text or JSON lines on stderr, `RUST_LOG` to
//! filter); the one way an error is written into a log line: with its whole
//! cause chain ([`chain`]), so the errno or the kernel's words reach the
//! operator; and the one way text a client chose is: [`escaped`], so it can
//! neither break a line nor reorder what a terminal shows.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub use common::chain::{chain, Chain};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Client-controlled text made safe for a log line, text or JSON: control
/// characters (C0, DEL, C1 such as U+0085 and U+009B CSI), the line and
/// paragraph separators U+2028/U+2029 and the bidirectional controls (U+061C,
/// U+200E/F, U+202A–E, U+2066–9) are written as `\u{…}`, and a backslash as
/// `\\`, so an escape in the output always came from us.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        assert!(matches!(escaped("/v0/envelope/access"), Cow::Borrowed(_)));
        assert_eq!(escaped("/caf\u{e9}"), "/caf\u{e9}");
    }

    #[test]
    fn controls_separators_and_bidi_overrides_are_escaped() {
        let hostile = "/a\u{9b}31m\u{85}b\u{2028}c\u{2029}d\u{202e}fed\u{1b}[2J\u{7f}\\u{9b}";
        assert_eq!(
            escaped(hostile),
            "/a\\u{9b}31m\\u{85}b\\u{2028}c\\u{2029}d\\u{202e}fed\\u{1b}[2J\\u{7f}\\\\u{9b}"
        );
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}', '\n', '\t',
        ] {
            assert!(!escaped(&c.to_string()).contains(c), "{c:?}");
        }
    }
}
