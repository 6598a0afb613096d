//! `--firewall record`: a test backend that appends each operation to a journal
//! file (one line each: `setup`, `grant SUBNET`, `revoke SUBNET`, `teardown`), so
//! tests of the real binary can see exactly what the firewall was asked to do.
//! With `fail_grants` every grant fails, for the 500 path.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{Change, Firewall, FirewallError, FwFuture};

#[derive(Debug)]
pub struct JournalFirewall {
    path: PathBuf,
    fail_grants: bool,
    file: Mutex<Option<std::fs::File>>,
}

impl JournalFirewall {
    pub fn new(path: PathBuf, fail_grants: bool) -> Self {
        JournalFirewall {
            path,
            fail_grants,
            file: Mutex::new(None),
        }
    }

    fn record(&self, lines: &[String]) -> Result<(), FirewallError> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|source| FirewallError::Io {
                    operation: format!("open journal {}", self.path.display()),
                    source,
                })?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("journal opened above");
        let mut text = lines.join("\n");
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|source| FirewallError::Io {
                operation: format!("write journal {}", self.path.display()),
                source,
            })
    }
}

impl Firewall for JournalFirewall {
    fn backend(&self) -> String {
        "record".to_owned()
    }
    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async { self.record(&["setup".to_owned()]) })
    }
    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async move {
            if self.fail_grants && !change.grant.is_empty() {
                return Err(FirewallError::Failed {
                    operation: "grant".to_owned(),
                    message: "injected failure (--firewall-journal-fail-grants)".to_owned(),
                });
            }
            // A refresh changes no rule, so the journal does not show it.
            let lines: Vec<String> = (change.granted().map(|s| format!("grant {s}")))
                .chain(change.revoke.iter().map(|s| format!("revoke {s}")))
                .collect();
            if lines.is_empty() {
                return Ok(());
            }
            self.record(&lines)
        })
    }
    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async { self.record(&["teardown".to_owned()]) })
    }
}
