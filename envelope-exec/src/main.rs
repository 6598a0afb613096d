//! `envelope-exec` binary: flags → run → exit code; any failure of its own is one
//! line on stderr.

use std::process::ExitCode;

use envelope_exec::cli::Flags;

fn main() -> ExitCode {
    let flags = Flags::from_env_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("envelope-exec: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(envelope_exec::run::run(flags)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("envelope-exec: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
