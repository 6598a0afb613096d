//! The user's command: started in a process group of its own, so that stopping it
//! (SIGTERM, then SIGKILL after a grace period) reaches everything it started,
//! and its exit status turned into ours.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A running command; killed (with its group) if dropped while running.
#[derive(Debug)]
pub struct Running {
    child: Child,
    group: Pid,
}

/// Why the command could not start, with the exit code a shell would use.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program:?}: {source}")]
pub struct SpawnError {
    program: String,
    #[source]
    source: std::io::Error,
}

impl SpawnError {
    pub fn exit_code(&self) -> u8 {
        match self.source.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

pub fn spawn(argv: &[OsString], env: &[(&str, &str)]) -> Result<Running, SpawnError> {
    let (program, args) = argv.split_first().expect("clap requires a command");
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|source| SpawnError {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let group = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
    Ok(Running { child, group })
}

impl Running {
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends `first` to the command's group, then SIGKILL if it has not exited
    /// after `grace`; returns its exit status.
    pub async fn stop(&mut self, first: Signal, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(first);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return status;
        }
        self.signal(Signal::SIGKILL);
        self.child.wait().await
    }

    fn signal(&self, signal: Signal) {
        // ESRCH: the whole group is already gone, which is what we want.
        let _ = killpg(self.group, signal);
    }
}

/// Our exit code for the command's status: its code, or 128+N for signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + (signal & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_shell_exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
