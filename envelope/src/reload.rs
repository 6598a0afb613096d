//! What makes the envelope load its files again without a restart, and how
//! that is reported: SIGHUP, a change to a watched file (polled, following
//! symlinks, so a Kubernetes Secret's `..data` symlink swap counts) and
//! `POST /v1/reload` all call [`Reloader::reload`], which logs the outcome and
//! counts it in `envelope_key_reloads_total` under its trigger.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::KeyError;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::keys::{KeySet, Keys};
use crate::logging::chain;
use crate::metrics::Metrics;

/// How often the watched files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// What asked for a reload, as its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    File,
    Admin,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Sighup => "sighup",
            Trigger::File => "file",
            Trigger::Admin => "admin",
        }
    }
}

/// The reloadable files (the verify keys, when there are any) and where the
/// outcome is counted.
#[derive(Debug, Clone)]
pub struct Reloader {
    keys: Option<Arc<Keys>>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    pub fn new(keys: Option<Arc<Keys>>, metrics: Arc<Metrics>) -> Reloader {
        Reloader { keys, metrics }
    }

    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    /// Loads the verify keys again, all or nothing; logged and counted.
    /// `None` when there are no keys to reload.
    pub fn reload(&self, trigger: Trigger) -> Option<Result<Arc<KeySet>, KeyError>> {
        let keys = self.keys.as_ref()?;
        let result = keys.reload();
        match &result {
            Ok(set) => {
                let kids: Vec<&str> = set.kids.iter().map(|(kid, _)| kid.as_str()).collect();
                tracing::info!(trigger = trigger.label(), kids = ?kids, "verify keys reloaded");
            }
            Err(e) => tracing::warn!(
                trigger = trigger.label(),
                error = %chain(e),
                "verify keys reload refused; the old keys stay in force"
            ),
        }
        self.metrics
            .count_key_reload(trigger.label(), result.is_ok());
        Some(result)
    }

    /// Reloads on `hangup` (SIGHUP; installed by the caller, early) and
    /// whenever a watched file changes, until `stop`. Without keys, SIGHUP (a
    /// service manager's "reload") is only logged: it must not kill the daemon.
    pub async fn watch(self, mut hangup: Option<Signal>, stop: CancellationToken) {
        let files: Vec<PathBuf> = self
            .keys
            .as_ref()
            .map(|keys| keys.files().to_vec())
            .unwrap_or_default();
        let mut seen = fingerprints(&files);
        let mut tick = tokio::time::interval(POLL);
        loop {
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => Trigger::Sighup,
                _ = tick.tick(), if !files.is_empty() => {
                    let now = fingerprints(&files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    Trigger::File
                }
            };
            if self.reload(trigger).is_none() {
                tracing::info!("SIGHUP: no --verify-key to reload");
            }
        }
    }
}

/// What a file looks like from outside, following symlinks: a rewrite, a rename
/// over it or a swap of a symlink on its path all change it. `None` if unreadable.
type Fingerprint = Option<(u64, u64, i64, i64, u64)>;

fn fingerprints(files: &[PathBuf]) -> Vec<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name)
    }

    #[test]
    fn fingerprints_follow_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in [
            ("a", "insecure-test-eddsa.jwk.pub"),
            ("b", "insecure-test-es256.jwk.pub"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::copy(testdata(source), dir.path().join(name).join("key.pub")).unwrap();
        }
        std::os::unix::fs::symlink("a", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key.pub", dir.path().join("key.pub")).unwrap();
        let files = vec![dir.path().join("key.pub")];
        let before = fingerprints(&files);
        std::os::unix::fs::symlink("b", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_ne!(fingerprints(&files), before);
    }

    #[test]
    fn a_reload_is_counted_under_its_trigger() {
        let metrics = Arc::new(Metrics::new());
        let keys = Keys::load(
            vec![testdata("insecure-test-eddsa.jwk.pub")],
            "locate".into(),
            "m".into(),
        )
        .unwrap();
        let reloader = Reloader::new(Some(Arc::new(keys)), metrics.clone());
        assert!(reloader.reload(Trigger::Admin).unwrap().is_ok());
        let text = metrics.encode();
        assert!(
            text.contains(r#"envelope_key_reloads_total{trigger="admin",result="success"} 1"#),
            "{text}"
        );
        assert!(Reloader::new(None, metrics)
            .reload(Trigger::Sighup)
            .is_none());
    }
}
