//! One way to run a process under test, shared by the envelope's integration
//! tests, envelope-exec's tests, the benchmark and the soak: spawn a
//! [`Command`] (optionally inside a network namespace: [`command_in`]) with
//! its stderr in a log file, wait (bounded) for a log line, signal it, wait
//! (bounded) for its exit; SIGKILL on drop.
//!
//! Nothing here sleeps to find out: a log line is awaited through inotify on
//! the log file, and the exit through a thread blocked in `waitid(WNOWAIT)`,
//! which leaves the child for [`Process`] to reap (so its pid cannot be reused
//! while it may still be signalled) and closes a pipe that waiters poll. Every
//! wait has a bound. (`wait-timeout` reaps and `tokio::process` needs every
//! caller async; neither gives an exit to poll beside the log.)
//!
//! ```no_run
//! # use std::time::Duration;
//! # use testbed::launcher::{command_in, Process};
//! let envelope = command_in(Some("envs-1-0"), "target/debug/envelope");
//! let mut envelope = Process::spawn(envelope, "/tmp/envelope.log".as_ref())?;
//! envelope.wait_for_log("listen-address listening", Duration::from_secs(20))?;
//! envelope.terminate(Duration::from_secs(15))?;
//! # Ok::<_, testbed::launcher::LaunchError>(())
//! ```

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag};
use nix::unistd::Pid;

/// Why a launch or a wait did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The process ended before the awaited line appeared.
    #[error("exited with {0}")]
    Exited(ExitStatus),
    #[error("no {what} within {within:?}")]
    TimedOut { what: String, within: Duration },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// `program`, run inside the network namespace `netns` when given (`ip netns
/// exec NS`, which execs it: the pid is the program's own).
pub fn command_in(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running (or exited, not yet dropped) process; SIGKILL and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
    log_start: u64,
    /// Readable (hung up) once the process has exited.
    exited: OwnedFd,
    status: Option<ExitStatus>,
}

/// A thread that blocks until `child` has exited, without reaping it, then
/// closes the write end of the returned pipe.
fn watch_exit(child: &Child) -> io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let pid = Pid::from_raw(child.id() as i32);
    std::thread::Builder::new()
        .name(format!("exit-{pid}"))
        .spawn(move || {
            // ECHILD means it was reaped already: exited as well.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            while matches!(
                nix::sys::wait::waitid(Id::Pid(pid), flags),
                Err(Errno::EINTR)
            ) {}
            drop(write);
        })?;
    Ok(read)
}

/// Polls `fds` for input until one is ready (`true`) or `deadline` (`false`).
fn poll_until(fds: &mut [PollFd], deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so that a wait never ends before its deadline.
        let millis = left.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(fds, timeout) {
            Ok(0) if Instant::now() >= deadline => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Process {
    /// Starts `cmd` with stdin and stdout on `/dev/null` and stderr in `log`
    /// (truncated). It runs until it exits, is signalled, or the [`Process`]
    /// is dropped.
    pub fn spawn(cmd: Command, log: &Path) -> Result<Process, LaunchError> {
        Process::start(cmd, log, false)
    }

    /// [`Process::spawn`] appending to `log` (one log for successive
    /// instances); [`Process::logs`] then shows only this instance's part.
    pub fn spawn_appending(cmd: Command, log: &Path) -> Result<Process, LaunchError> {
        Process::start(cmd, log, true)
    }

    fn start(mut cmd: Command, log: &Path, append: bool) -> Result<Process, LaunchError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .map_err(io_error(format!("log file {}", log.display())))?;
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(io_error(format!("starting {:?}", cmd.get_program())))?;
        let exited = watch_exit(&child).map_err(io_error("watching the exit"))?;
        Ok(Process {
            child,
            log: log.to_owned(),
            log_start,
            exited,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process's log so far (from where it started, when appending).
    pub fn logs(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(&self.log) {
            if file.seek(SeekFrom::Start(self.log_start)).is_ok() {
                let _ = file.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Whether the process has exited (it may not be reaped yet).
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.exited.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits (bounded by `within`) for a complete log line for which `matches`
    /// holds, and returns it; `what` names it in the error. Fails as soon as the
    /// process exits without having written one.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        within: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String, LaunchError> {
        let deadline = Instant::now() + within;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io_error("inotify")(e.into()))?;
        // Watch before the first read: a line written in between is an event.
        inotify
            .add_watch(&self.log, AddWatchFlags::IN_MODIFY)
            .map_err(|e| io_error(format!("watching {}", self.log.display()))(e.into()))?;
        loop {
            // Exited first, then read: what it wrote before exiting is all there.
            let exited = self.has_exited();
            let text = self.logs();
            // Only complete lines: a half-written one may parse as something else.
            let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(line) = complete.lines().find(|l| matches(l)) {
                return Ok(line.to_owned());
            }
            if exited {
                return Err(LaunchError::Exited(self.reap()?));
            }
            let mut fds = [
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.exited.as_fd(), PollFlags::POLLIN),
            ];
            if !poll_until(&mut fds, deadline).map_err(io_error("polling"))? {
                return Err(LaunchError::TimedOut {
                    what: what.to_owned(),
                    within,
                });
            }
            // Drain the events (EAGAIN once none are left); the loop re-reads.
            while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
        }
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_for_log(&mut self, text: &str, within: Duration) -> Result<String, LaunchError> {
        self.wait_for_line(&format!("log line {text:?}"), within, |l| l.contains(text))
    }

    /// Sends `signal`; an error only if the process cannot be signalled.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::other("already reaped"));
        }
        // Not reaped, so the pid is still this process (perhaps a zombie).
        nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal)?;
        Ok(())
    }

    /// Waits (bounded) for the process to exit and reaps it; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        let exited = self.status.is_some() || {
            let mut fds = [PollFd::new(self.exited.as_fd(), PollFlags::POLLIN)];
            poll_until(&mut fds, Instant::now() + within).map_err(io_error("polling"))?
        };
        self.reap_exited(exited, within)
    }

    /// [`Process::wait_exit`] for async callers: the runtime's other tasks
    /// (e.g. clients answering Close frames) run meanwhile.
    pub async fn wait_exit_async(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        let exited = self.status.is_some() || {
            let pipe = self.exited.try_clone().map_err(io_error("exit pipe"))?;
            let deadline = Instant::now() + within;
            tokio::task::spawn_blocking(move || {
                poll_until(
                    &mut [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)],
                    deadline,
                )
            })
            .await
            .map_err(|e| io_error("exit waiter")(io::Error::other(e)))?
            .map_err(io_error("polling"))?
        };
        self.reap_exited(exited, within)
    }

    /// Reaps the process if it `exited`; a timeout after `within` otherwise.
    fn reap_exited(&mut self, exited: bool, within: Duration) -> Result<ExitStatus, LaunchError> {
        if !exited {
            return Err(LaunchError::TimedOut {
                what: "exit".into(),
                within,
            });
        }
        self.reap()
    }

    /// SIGTERM, then waits (bounded) for the exit; its status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        if self.status.is_none() {
            self.signal(Signal::SIGTERM).map_err(io_error("SIGTERM"))?;
        }
        self.wait_exit(within)
    }

    /// SIGKILL and reap; its status.
    pub fn kill(&mut self) -> Result<ExitStatus, LaunchError> {
        if self.status.is_none() {
            let _ = self.signal(Signal::SIGKILL);
        }
        // SIGKILL cannot be caught: the exit follows at once.
        self.wait_exit(Duration::from_secs(10))
    }

    /// Reaps an exited process (does not block once it has exited).
    fn reap(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().map_err(io_error("wait"))?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITHIN: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn spawn(dir: &Path, script: &str) -> Process {
        Process::spawn(sh(script), &dir.join("log")).unwrap()
    }

    #[test]
    fn a_line_is_awaited_and_the_exit_status_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn(
            dir.path(),
            "echo starting >&2; echo 'x listening address=127.0.0.1:1' >&2; exit 3",
        );
        let line = p.wait_for_log("x listening", WITHIN).unwrap();
        assert_eq!(line, "x listening address=127.0.0.1:1");
        let status = p.wait_exit(WITHIN).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(p.logs().starts_with("starting\n"), "{}", p.logs());
    }

    #[test]
    fn an_exit_before_the_line_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn(dir.path(), "echo 'refused' >&2; exit 2");
        let started = Instant::now();
        let err = p.wait_for_log("listening", WITHIN).unwrap_err();
        assert!(
            matches!(err, LaunchError::Exited(s) if s.code() == Some(2)),
            "{err}"
        );
        assert!(err.to_string().starts_with("exited with"), "{err}");
        assert!(started.elapsed() < WITHIN);
        assert_eq!(p.logs(), "refused\n");
    }

    #[test]
    fn waits_are_bounded_and_terminate_ends_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn(dir.path(), "exec sleep 60");
        let bound = Duration::from_millis(200);
        let started = Instant::now();
        let err = p.wait_for_log("never", bound).unwrap_err();
        assert!(matches!(err, LaunchError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() >= bound);
        assert!(matches!(
            p.wait_exit(bound),
            Err(LaunchError::TimedOut { .. })
        ));
        let status = p.terminate(WITHIN).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert!(p.has_exited());
    }

    #[test]
    fn appending_instances_each_see_their_own_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut first = Process::spawn_appending(sh("echo one >&2"), &log).unwrap();
        first.wait_exit(WITHIN).unwrap();
        let mut second = Process::spawn_appending(sh("echo two >&2"), &log).unwrap();
        second.wait_exit(WITHIN).unwrap();
        assert_eq!(second.logs(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "one\ntwo\n"
        );
    }

    #[tokio::test]
    async fn the_async_wait_lets_the_runtime_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn(dir.path(), "exec sleep 60");
        let ticker = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let err = p
            .wait_exit_async(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::TimedOut { .. }), "{err}");
        assert!(ticker.is_finished());
        p.signal(Signal::SIGKILL).unwrap();
        let status = p.wait_exit_async(WITHIN).await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
