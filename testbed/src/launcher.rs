//! One way to run a process under test, shared by the envelope's integration
//! tests, the benchmark and the soak: spawn a program (optionally inside a
//! network namespace, through `ip netns exec`) with its stderr in a log file,
//! wait (bounded) for a log line or for the address it says it listens on,
//! signal it, wait (bounded) for its exit, read its pid and memory; SIGKILL on
//! drop.
//!
//! Nothing here sleeps to find out: a log line is awaited through inotify on
//! the log file, and the exit through a thread blocked in `waitid(WNOWAIT)`,
//! which leaves the child for [`Process`] to reap (so its pid cannot be reused
//! while it may still be signalled) and closes a pipe that waiters poll. Every
//! wait has a bound.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use testbed::launcher::Launch;
//! let mut envelope = Launch::new("target/debug/envelope", "/tmp/envelope.log")
//!     .in_netns("envs-1-0")
//!     .arg("--listen-address=:8443")
//!     .spawn()?;
//! let addr = envelope.wait_for_address("listen-address listening", Duration::from_secs(20))?;
//! envelope.terminate(Duration::from_secs(15))?;
//! # Ok::<_, testbed::launcher::LaunchError>(())
//! ```

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
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

impl LaunchError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> LaunchError {
        let what = what.into();
        move |source| LaunchError::Io { what, source }
    }
}

/// What to start: a program, its arguments and environment, where its stderr
/// goes, and optionally the network namespace to run it in. Stdin and stdout
/// are `/dev/null`.
#[derive(Debug)]
pub struct Launch {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    netns: Option<String>,
    log: PathBuf,
    append: bool,
}

impl Launch {
    /// `program`, with its stderr written to `log` (truncated; see
    /// [`Launch::append_log`]).
    pub fn new(program: impl AsRef<OsStr>, log: impl Into<PathBuf>) -> Launch {
        Launch {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            log: log.into(),
            append: false,
        }
    }

    /// Runs the program inside the named network namespace (`ip netns exec NS`,
    /// which execs it: the pid is the program's own).
    pub fn in_netns(mut self, ns: &str) -> Launch {
        self.netns = Some(ns.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Launch {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Launch {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Appends to the log instead of truncating it (one log for successive
    /// instances); [`Process::logs`] then shows only this instance's part.
    pub fn append_log(mut self) -> Launch {
        self.append = true;
        self
    }

    /// Starts the process. It runs until it exits, is signalled, or the
    /// returned [`Process`] is dropped.
    pub fn spawn(self) -> Result<Process, LaunchError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.log)
            .map_err(LaunchError::io(format!("log file {}", self.log.display())))?;
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let child = cmd.spawn().map_err(LaunchError::io(format!(
            "starting {}",
            Path::new(&self.program).display()
        )))?;
        let exited = watch_exit(&child).map_err(LaunchError::io("watching the exit"))?;
        Ok(Process {
            child,
            log: self.log,
            log_start,
            exited,
            status: None,
        })
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
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
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
            .map_err(|e| LaunchError::io("inotify")(e.into()))?;
        // Watch before the first read: a line written in between is an event.
        inotify
            .add_watch(&self.log, AddWatchFlags::IN_MODIFY)
            .map_err(|e| LaunchError::io(format!("watching {}", self.log.display()))(e.into()))?;
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
            if !poll_until(&mut fds, deadline).map_err(LaunchError::io("polling"))? {
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

    /// Waits (bounded) for the line announcing a listening socket and returns
    /// its address: `MESSAGE address=ADDR` in text logs, or `{"message":
    /// "MESSAGE", "address": "ADDR", …}` in JSON logs, where `MESSAGE` is e.g.
    /// `listen-address listening`.
    pub fn wait_for_address(
        &mut self,
        message: &str,
        within: Duration,
    ) -> Result<SocketAddr, LaunchError> {
        let mut found = None;
        self.wait_for_line(&format!("{message:?} line"), within, |line| {
            found = address_in(line, message);
            found.is_some()
        })?;
        Ok(found.expect("matched"))
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
        if self.status.is_none() {
            let mut fds = [PollFd::new(self.exited.as_fd(), PollFlags::POLLIN)];
            let deadline = Instant::now() + within;
            if !poll_until(&mut fds, deadline).map_err(LaunchError::io("polling"))? {
                return Err(LaunchError::TimedOut {
                    what: "exit".into(),
                    within,
                });
            }
        }
        self.reap()
    }

    /// [`Process::wait_exit`] for async callers: the runtime's other tasks
    /// (e.g. clients answering Close frames) run meanwhile.
    pub async fn wait_exit_async(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        if self.status.is_none() {
            let fd = self
                .exited
                .try_clone()
                .map_err(LaunchError::io("exit pipe"))?;
            let deadline = Instant::now() + within;
            let exited = tokio::task::spawn_blocking(move || {
                poll_until(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], deadline)
            })
            .await
            .map_err(|e| LaunchError::io("exit waiter")(io::Error::other(e)))?
            .map_err(LaunchError::io("polling"))?;
            if !exited {
                return Err(LaunchError::TimedOut {
                    what: "exit".into(),
                    within,
                });
            }
        }
        self.reap()
    }

    /// SIGTERM, then waits (bounded) for the exit; its status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, LaunchError> {
        if self.status.is_none() {
            self.signal(Signal::SIGTERM)
                .map_err(LaunchError::io("SIGTERM"))?;
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
        let status = self.child.wait().map_err(LaunchError::io("wait"))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Resident set size now and at its peak, in KiB, from /proc (0 when gone).
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.pid())
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

/// `VmRSS` and `VmHWM` of `pid`, in KiB, from /proc (0 when unreadable).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The address in a line announcing `message`, in text or JSON log format.
fn address_in(line: &str, message: &str) -> Option<SocketAddr> {
    let text_marker = format!("{message} address=");
    if let Some(at) = line.find(&text_marker) {
        return line[at + text_marker.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok();
    }
    if !line.contains(&format!("\"message\":\"{message}\"")) {
        return None;
    }
    let key = "\"address\":\"";
    let rest = &line[line.find(key)? + key.len()..];
    rest[..rest.find('"')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITHIN: Duration = Duration::from_secs(10);

    fn sh(dir: &Path, script: &str) -> Launch {
        Launch::new("sh", dir.join("log")).args(["-c", script])
    }

    #[test]
    fn the_address_is_read_from_text_and_json_lines() {
        let text = "2026-01-01T00:00:00Z  INFO listen-address listening address=127.0.0.1:8443";
        assert_eq!(
            address_in(text, "listen-address listening"),
            Some("127.0.0.1:8443".parse().unwrap())
        );
        let json = r#"{"timestamp":"x","level":"INFO","message":"metrics-address listening","address":"[::1]:9090"}"#;
        assert_eq!(
            address_in(json, "metrics-address listening"),
            Some("[::1]:9090".parse().unwrap())
        );
        assert_eq!(address_in(json, "listen-address listening"), None);
        assert_eq!(address_in(text, "metrics-address listening"), None);
    }

    #[test]
    fn a_line_is_awaited_and_the_exit_status_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh(
            dir.path(),
            "echo starting >&2; echo 'x listening address=127.0.0.1:1' >&2; exit 3",
        )
        .spawn()
        .unwrap();
        let addr = p.wait_for_address("x listening", WITHIN).unwrap();
        assert_eq!(addr.port(), 1);
        let status = p.wait_exit(WITHIN).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(p.logs().starts_with("starting\n"), "{}", p.logs());
    }

    #[test]
    fn an_exit_before_the_line_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh(dir.path(), "echo 'refused' >&2; exit 2")
            .spawn()
            .unwrap();
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
        let mut p = sh(dir.path(), "exec sleep 60").spawn().unwrap();
        let bound = Duration::from_millis(200);
        let started = Instant::now();
        let err = p.wait_for_log("never", bound).unwrap_err();
        assert!(matches!(err, LaunchError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() >= bound);
        assert!(matches!(
            p.wait_exit(bound),
            Err(LaunchError::TimedOut { .. })
        ));
        assert!(p.rss_kib().0 > 0);
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
        let mut first = sh(dir.path(), "echo one >&2").append_log().spawn().unwrap();
        first.wait_exit(WITHIN).unwrap();
        let mut second = sh(dir.path(), "echo two >&2").append_log().spawn().unwrap();
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
        let mut p = sh(dir.path(), "exec sleep 60").spawn().unwrap();
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
