//! `envelope` binary: flags → config → bind → run until SIGTERM/SIGINT; any
//! failure is one line and exit 1.

use std::process::ExitCode;

use envelope::config::Flags;

fn main() -> ExitCode {
    let flags = Flags::from_env_args();
    envelope::logging::init(flags.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("envelope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if flags.cleanup {
        runtime.block_on(envelope::daemon::cleanup(flags))
    } else {
        flags.validate().and_then(|config| {
            runtime.block_on(async {
                // Installed first, so a signal during start-up is not lost.
                let signals = envelope::daemon::termination_signals()?;
                let bound = envelope::daemon::bind(&config).await?;
                envelope::daemon::run(bound, signals).await
            })
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("envelope: {e:#}");
            ExitCode::FAILURE
        }
    }
}
