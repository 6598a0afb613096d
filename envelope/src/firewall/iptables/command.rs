//! Runs iptables-family binaries without blocking the runtime: `tokio::process`,
//! absolute paths, a bounded `--wait`, and a hard timeout after which the child
//! is killed.
//!
//! With nf_tables, a spare `iptables-restore` per family is started ahead of
//! time and waits on its input, so a grant or revoke does not pay for exec and
//! start-up (about half a millisecond of a ~1.4 ms transaction). The spare has
//! read nothing, so it holds no cache and no lock: when it finally reads the
//! batch it works on the ruleset as it is then. A spare nobody uses exits on
//! end-of-input (the envelope gone) without changing anything. Not used with
//! the legacy backend, whose restore may take the xtables lock at start-up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use crate::firewall::Family;
use crate::firewall::FirewallError;

/// Exit status iptables uses for "resource problem" (e.g. the xtables lock is held).
pub const EXIT_RESOURCE: i32 = 4;

#[derive(Debug, Clone)]
pub struct Runner {
    bin_dir: PathBuf,
    timeout: Duration,
    /// Warm `*-restore` processes for V4 and V6, when enabled.
    spares: Option<Arc<Mutex<[Option<Child>; 2]>>>,
}

/// Why one command failed.
#[derive(Debug)]
pub enum RunError {
    Timeout {
        operation: String,
        after: Duration,
    },
    Spawn {
        operation: String,
        source: std::io::Error,
    },
    Exit {
        operation: String,
        code: Option<i32>,
        stderr: String,
    },
}

impl RunError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, RunError::Timeout { .. })
    }

    /// An ordinary rejection of the batch (exit 1 or 2: a rule not found, a bad
    /// line), as opposed to a lock, permission, crash or timeout problem.
    pub fn is_rejection(&self) -> bool {
        matches!(self, RunError::Exit { code: Some(1 | 2), stderr, .. }
            if !stderr.contains("Permission denied") && !stderr.contains("lock"))
    }
}

impl From<RunError> for FirewallError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Timeout { operation, after } => FirewallError::Timeout { operation, after },
            RunError::Spawn { operation, source } => FirewallError::Io { operation, source },
            RunError::Exit {
                operation,
                code,
                stderr,
            } => {
                let status = match code {
                    Some(EXIT_RESOURCE) => {
                        "exit 4 (resource problem, e.g. the xtables lock is held)".to_owned()
                    }
                    Some(code) => format!("exit {code}"),
                    None => "killed by a signal".to_owned(),
                };
                let stderr = stderr.trim();
                let message = if stderr.is_empty() {
                    status
                } else {
                    format!("{status}: {stderr}")
                };
                FirewallError::Failed { operation, message }
            }
        }
    }
}

impl Runner {
    pub fn new(bin_dir: &Path, timeout: Duration) -> Runner {
        Runner {
            bin_dir: bin_dir.to_owned(),
            timeout,
            spares: None,
        }
    }

    /// Keeps a warm restore process per family (nf_tables only; see the module doc).
    pub fn with_warm_restore(mut self) -> Runner {
        self.spares = Some(Arc::new(Mutex::new([None, None])));
        self
    }

    fn restore_command(&self, family: Family) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.path(family.restore()));
        command
            .args(["--noflush", &self.wait_flag()])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// A live spare for `family`, if one is waiting.
    fn take_spare(&self, family: Family) -> Option<Child> {
        let spares = self.spares.as_ref()?;
        let mut spare = spares.lock().unwrap_or_else(|e| e.into_inner())[family as usize].take()?;
        // One that died meanwhile is of no use (dropping it reaps it).
        matches!(spare.try_wait(), Ok(None)).then_some(spare)
    }

    /// Starts the next spare in the background, off the caller's path.
    fn refill(&self, family: Family) {
        let Some(spares) = self.spares.clone() else {
            return;
        };
        let mut command = self.restore_command(family);
        tokio::spawn(async move {
            if let Ok(child) = command.spawn() {
                // A spare already there (a race) is dropped, i.e. killed before reading anything.
                spares.lock().unwrap_or_else(|e| e.into_inner())[family as usize] = Some(child);
            }
        });
    }

    pub fn path(&self, binary: &str) -> PathBuf {
        self.bin_dir.join(binary)
    }

    /// `--wait=N`: wait for the xtables lock at most as long as the timeout.
    fn wait_flag(&self) -> String {
        format!("--wait={}", self.timeout.as_secs().max(1))
    }

    /// Runs `binary args…` (stdin from `input`, if any) and returns its stdout.
    pub async fn run(
        &self,
        binary: &str,
        args: &[&str],
        input: Option<&str>,
        operation: &str,
    ) -> Result<String, RunError> {
        let path = self.path(binary);
        let mut command = tokio::process::Command::new(&path);
        command
            .args(args)
            .env("LC_ALL", "C")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let operation = format!("{operation} ({})", path.display());
        let child = command.spawn().map_err(|source| RunError::Spawn {
            operation: operation.clone(),
            source,
        })?;
        self.finish(child, input, operation).await
    }

    /// Feeds `input` (if any) to a started child and waits for it under the timeout.
    async fn finish(
        &self,
        mut child: Child,
        input: Option<&str>,
        operation: String,
    ) -> Result<String, RunError> {
        let work = async {
            let stdin = child.stdin.take();
            let feed = async move {
                if let (Some(mut stdin), Some(text)) = (stdin, input) {
                    // A child that exits early closes the pipe; its exit status says why.
                    let _ = stdin.write_all(text.as_bytes()).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output.map_err(|source| RunError::Spawn {
                operation: operation.clone(),
                source,
            })
        };
        // Dropping `work` on timeout drops the child, which kills it (kill_on_drop).
        let output = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RunError::Timeout {
                    operation,
                    after: self.timeout,
                })
            }
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(RunError::Exit {
                operation,
                code: output.status.code(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// `iptables -t filter -S [CHAIN]` (always numeric).
    pub async fn list(&self, family: Family, chain: Option<&str>) -> Result<String, RunError> {
        let wait = self.wait_flag();
        let mut args = vec![wait.as_str(), "-t", "filter", "-S"];
        args.extend(chain);
        let what = match chain {
            Some(chain) => format!("list {} chain {chain}", family.name()),
            None => format!("list {} filter table", family.name()),
        };
        self.run(family.iptables(), &args, None, &what).await
    }

    /// One atomic `iptables-restore --noflush` transaction.
    pub async fn restore(
        &self,
        family: Family,
        document: &str,
        operation: &str,
    ) -> Result<(), RunError> {
        let operation = format!("{} {operation}", family.name());
        if self.spares.is_none() {
            let wait = self.wait_flag();
            return self
                .run(
                    family.restore(),
                    &["--noflush", wait.as_str()],
                    Some(document),
                    &operation,
                )
                .await
                .map(drop);
        }
        let child = match self.take_spare(family) {
            Some(child) => Ok(child),
            None => self.restore_command(family).spawn(),
        };
        self.refill(family);
        let operation = format!("{operation} ({})", self.path(family.restore()).display());
        let child = child.map_err(|source| RunError::Spawn {
            operation: operation.clone(),
            source,
        })?;
        self.finish(child, Some(document), operation)
            .await
            .map(drop)
    }

    /// `BINARY --version`, trimmed.
    pub async fn version(&self, binary: &str) -> Result<String, RunError> {
        self.run(binary, &["--version"], None, "version check")
            .await
            .map(|out| out.trim().to_owned())
    }
}
