//! The envelope as a library inside the test process: `daemon::bind` on port 0
//! and `daemon::run` on a runtime thread of its own (so tests that block their
//! own thread cannot starve it), stopped through the shutdown future `run`
//! takes instead of a signal. For tests that need no separate process: no
//! signals, no environment of its own, no log to read.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

/// A running in-process envelope; stopped (bounded) on drop.
#[derive(Debug)]
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

/// Where it listens, as bound.
pub struct Listening {
    pub access: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl InProcess {
    /// Parses `args` as the binary would (Go spellings included), binds, and
    /// serves; returns once the ports are bound. Panics with the one-line error
    /// the binary would print if the flags or the binding fail.
    pub fn start(args: &[String]) -> (InProcess, Listening) {
        use clap::Parser as _;
        let argv = std::iter::once("envelope".to_owned()).chain(args.iter().cloned());
        let flags = envelope::config::Flags::try_parse_from(common::goflags::go_style_args(
            &envelope::command(),
            argv,
        ))
        .unwrap_or_else(|e| panic!("envelope flags: {e}"));
        let config = flags
            .validate()
            .unwrap_or_else(|e| panic!("envelope: {e:#}"));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the in-process envelope");
            let result = runtime.block_on(async move {
                let bound = match envelope::daemon::bind(&config).await {
                    Ok(bound) => bound,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok((bound.access_addrs(), bound.metrics_addrs())));
                // A dropped sender (the test ended) stops it too.
                envelope::daemon::run(
                    bound,
                    envelope::daemon::stop_when(async {
                        let _ = stopped.await;
                    }),
                )
                .await
            });
            let _ = done_tx.send(result.map_err(|e| format!("{e:#}")));
        });
        let (access, metrics) = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => panic!("envelope: {e}"),
            Err(e) => panic!("the in-process envelope did not bind within 20 s: {e}"),
        };
        let me = InProcess {
            stop: Some(stop),
            done,
            thread: Some(thread),
        };
        let listening = Listening {
            access: access[0],
            metrics: metrics.first().copied(),
        };
        (me, listening)
    }

    /// Resolves the shutdown future and waits (bounded) for `run` to return.
    pub fn stop(&mut self, within: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.done.recv_timeout(within) {
            Ok(result) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                result
            }
            // The thread is left behind rather than joined forever.
            Err(e) => {
                self.thread = None;
                Err(format!("run did not return within {within:?}: {e}"))
            }
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop(Duration::from_secs(10));
        }
    }
}
