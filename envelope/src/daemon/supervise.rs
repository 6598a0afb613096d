//! The daemon's long-running tasks (listeners, the reload watcher), watched
//! together: any of them ending before the daemon is told to stop — an error,
//! a panic, or just returning — is a failure the daemon shuts down for, and at
//! the end every task is joined so a panic is never a silent exit 0.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinHandle, JoinSet};

/// Named tasks that must run until the daemon stops.
#[derive(Debug, Default)]
pub(super) struct Supervisor {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, String>,
}

impl Supervisor {
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// Waits for the first task to end, which before a stop is always a
    /// failure: its error, its panic, or its ending at all. Pending forever
    /// when there is no task.
    pub async fn first_failure(&mut self) -> anyhow::Error {
        let Some(ended) = self.tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (name, outcome) = match ended {
            Ok((id, outcome)) => (self.name(id), outcome),
            Err(e) => (self.name(e.id()), Err(anyhow::anyhow!("{}", joined(e)))),
        };
        match outcome {
            Ok(()) => anyhow::anyhow!("the {name} stopped unexpectedly"),
            Err(e) => e.context(format!("the {name} failed")),
        }
    }

    /// Joins every task left (they end once the daemon's stop token fires);
    /// one line for each that failed or panicked.
    pub async fn join_all(mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some(ended) = self.tasks.join_next_with_id().await {
            match ended {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => failures.push(format!("the {} failed: {e:#}", self.name(id))),
                Err(e) => failures.push(format!("the {} {}", self.name(e.id()), joined(e))),
            }
        }
        failures
    }

    fn name(&mut self, id: Id) -> String {
        self.names.remove(&id).unwrap_or_else(|| "task".into())
    }
}

/// The end of a shutdown: the owner's revoke result, the failure that caused
/// the shutdown (if a task failed), then every task joined. A panicked task
/// is an error here rather than a silent exit 0, and a panicked owner is
/// reported even when its revoke answer got lost with it.
pub(super) async fn finalize<E>(
    revoked: Result<(), E>,
    owner: JoinHandle<()>,
    cause: Option<anyhow::Error>,
    tasks: Supervisor,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut failures = Vec::new();
    if let Err(e) = owner.await {
        failures.push(format!("the grant owner {}", joined(e)));
    }
    failures.extend(tasks.join_all().await);
    if let Err(e) = revoked {
        return Err(anyhow::Error::new(e).context("revoking grants at shutdown"));
    }
    if let Some(cause) = cause {
        failures.insert(0, format!("{cause:#}"));
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(())
}

fn joined(error: JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("panicked: {message}")
        }
        Err(_) => "was cancelled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FirewallError;

    fn quiet() -> JoinHandle<()> {
        tokio::spawn(async {})
    }

    #[tokio::test]
    async fn finalize_reports_a_panicked_owner() {
        let owner = tokio::spawn(async { panic!("table corrupt") });
        let err = finalize(
            Ok::<(), FirewallError>(()),
            owner,
            None,
            Supervisor::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "the grant owner panicked: table corrupt");
    }

    #[tokio::test]
    async fn finalize_puts_a_failed_revoke_first_and_passes_a_clean_end() {
        let failed = Err(FirewallError::Failed {
            operation: "revoke at shutdown".into(),
            message: "1 subnet rules could not be removed".into(),
        });
        let err = finalize(failed, quiet(), None, Supervisor::default())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "revoking grants at shutdown: revoke at shutdown failed: 1 subnet rules could not be removed"
        );
        let clean = finalize(
            Ok::<(), FirewallError>(()),
            quiet(),
            None,
            Supervisor::default(),
        );
        assert!(clean.await.is_ok());
    }

    #[tokio::test]
    async fn a_task_that_ends_early_is_a_failure_named_after_it() {
        let mut tasks = Supervisor::default();
        tasks.spawn("access listener on 127.0.0.1:1", async {
            Err(anyhow::Error::new(std::io::Error::from_raw_os_error(22)).context("accept"))
        });
        let failure = tasks.first_failure().await;
        assert_eq!(
            format!("{failure:#}"),
            "the access listener on 127.0.0.1:1 failed: accept: Invalid argument (os error 22)"
        );
        let mut tasks = Supervisor::default();
        tasks.spawn("reload watcher", async { Ok(()) });
        assert_eq!(
            tasks.first_failure().await.to_string(),
            "the reload watcher stopped unexpectedly"
        );
        let mut tasks = Supervisor::default();
        tasks.spawn("admin socket", async { panic!("bad request state") });
        assert_eq!(
            format!("{:#}", tasks.first_failure().await),
            "the admin socket failed: panicked: bad request state"
        );
    }

    #[tokio::test]
    async fn join_all_names_each_failure_and_a_clean_task_passes() {
        let mut tasks = Supervisor::default();
        tasks.spawn("metrics listener on [::]:9990", async { Ok(()) });
        tasks.spawn("reload watcher", async { panic!("poisoned") });
        assert_eq!(
            tasks.join_all().await,
            ["the reload watcher panicked: poisoned"]
        );
    }
}
