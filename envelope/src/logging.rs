//! tracing-subscriber set-up (text or JSON lines on stderr, `RUST_LOG` to
//! filter), and the one way an error is written into a log line: with its whole
//! cause chain ([`chain`]), so the errno or the kernel's words reach the operator.

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
