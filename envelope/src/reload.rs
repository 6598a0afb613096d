//! What makes the envelope read its files again without a restart, and how
//! that is reported. SIGHUP and `POST /v1/reload` reload the verify keys and
//! the TLS certificate; a change to one of their files (polled, following
//! symlinks, so a Kubernetes Secret's `..data` symlink swap counts) reloads
//! what it belongs to. Each reload reads the files off the runtime under a
//! time bound and puts the result in force only if it loaded whole in time: a
//! file that hangs or fails keeps what is in force, and nothing else in the
//! daemon ever waits on it. Every outcome is one event (`keys.reloaded`,
//! `certificate.reloaded`: its log line, and a count in
//! `envelope_key_reloads_total{what,trigger,result}`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events};
use crate::keys::{KeySet, Keys};
use crate::metrics::Metrics;
use crate::tls::{Certificates, LoadedCert};

/// How often the watched files are looked at.
const POLL: Duration = Duration::from_secs(1);
/// Longest a reload may spend reading its files.
const READ_BOUND: Duration = Duration::from_secs(5);

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

/// What one reload did: for each kind of file configured, the new state in
/// force or why the old one stays.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub keys: Option<anyhow::Result<Arc<KeySet>>>,
    pub certificate: Option<anyhow::Result<Arc<LoadedCert>>>,
}

impl Reloaded {
    /// Whether nothing was configured to reload.
    pub fn is_empty(&self) -> bool {
        self.keys.is_none() && self.certificate.is_none()
    }
}

/// The reloadable files (the verify keys, the certificate, when configured)
/// and where outcomes are counted.
#[derive(Debug, Clone)]
pub struct Reloader {
    keys: Option<Arc<Keys>>,
    certs: Option<Arc<Certificates>>,
    metrics: Arc<Metrics>,
    events: Events,
    /// One reload at a time, so two triggers cannot race their swaps.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub fn new(
        keys: Option<Arc<Keys>>,
        certs: Option<Arc<Certificates>>,
        metrics: Arc<Metrics>,
        events: Events,
    ) -> Reloader {
        Reloader {
            keys,
            certs,
            metrics,
            events,
            one_at_a_time: Arc::default(),
        }
    }

    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    pub fn certs(&self) -> Option<&Arc<Certificates>> {
        self.certs.as_ref()
    }

    /// Reloads everything configured.
    pub async fn reload(&self, trigger: Trigger) -> Reloaded {
        self.reload_some(trigger, true, true).await
    }

    async fn reload_some(&self, trigger: Trigger, keys: bool, certificate: bool) -> Reloaded {
        let _one = self.one_at_a_time.lock().await;
        let mut reloaded = Reloaded::default();
        if let Some(current) = self.keys.clone().filter(|_| keys) {
            let before = owned(current.current().kids());
            let loader = current.clone();
            let result = off_runtime(READ_BOUND, move || Ok(loader.load_again()?))
                .await
                .map(|set| current.install(set));
            let kids = owned(current.current().kids());
            self.events.emit(Event::KeysReloaded {
                trigger: trigger.label(),
                result: if result.is_ok() { "success" } else { "refused" },
                added: kids
                    .iter()
                    .filter(|k| !before.contains(k))
                    .cloned()
                    .collect(),
                removed: before
                    .iter()
                    .filter(|k| !kids.contains(k))
                    .cloned()
                    .collect(),
                kids,
                error: result.as_ref().err().map(|e| format!("{e:#}")),
            });
            reloaded.keys = Some(result);
        }
        if let Some(current) = self.certs.clone().filter(|_| certificate) {
            let files = current.files().clone();
            let result = off_runtime(READ_BOUND, move || files.load())
                .await
                .map(|loaded| current.install(loaded));
            let leaf = result.as_ref().ok().map(|loaded| loaded.leaf.clone());
            self.events.emit(Event::CertificateReloaded {
                trigger: trigger.label(),
                result: if result.is_ok() { "success" } else { "refused" },
                subject: leaf.as_ref().map(|l| l.subject.clone()),
                serial: leaf.as_ref().map(|l| l.serial.clone()),
                not_after: leaf.map(|l| l.not_after),
                error: result.as_ref().err().map(|e| format!("{e:#}")),
            });
            reloaded.certificate = Some(result);
        }
        self.publish();
        reloaded
    }

    /// Sets the gauges that show what is in force: `envelope_verify_key_info`
    /// and `envelope_tls_certificate_expiry_seconds`.
    pub fn publish(&self) {
        if let Some(keys) = &self.keys {
            let set = keys.current();
            self.metrics
                .set_verify_keys(set.keys.iter().map(|k| (k.kid.as_str(), k.alg.as_str())));
        }
        if let Some(certs) = &self.certs {
            self.metrics
                .certificate_expiry
                .set(certs.current().leaf.not_after.unix_timestamp());
        }
    }

    /// Reloads on `hangup` (SIGHUP; installed by the caller, early) and
    /// whenever a watched file changes, until `stop`, which a reload in
    /// progress never delays. With nothing to reload, SIGHUP (a service
    /// manager's "reload") is only logged: it must not kill the daemon.
    pub async fn watch(self, mut hangup: Option<Signal>, stop: CancellationToken) {
        let key_files: Vec<PathBuf> = self
            .keys
            .as_ref()
            .map(|keys| keys.files().to_vec())
            .unwrap_or_default();
        let cert_files: Vec<PathBuf> = self
            .certs
            .as_ref()
            .map(|certs| vec![certs.files().cert.clone(), certs.files().key.clone()])
            .unwrap_or_default();
        let watching = !key_files.is_empty() || !cert_files.is_empty();
        let mut seen = (fingerprints(&key_files), fingerprints(&cert_files));
        let mut tick = tokio::time::interval(POLL);
        loop {
            let (trigger, keys, certificate) = tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => (Trigger::Sighup, true, true),
                _ = tick.tick(), if watching => {
                    let now = (fingerprints(&key_files), fingerprints(&cert_files));
                    let changed = (now.0 != seen.0, now.1 != seen.1);
                    seen = now;
                    if changed == (false, false) {
                        continue;
                    }
                    (Trigger::File, changed.0, changed.1)
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                reloaded = self.reload_some(trigger, keys, certificate) => {
                    if reloaded.keys.is_none() && trigger == Trigger::Sighup {
                        tracing::info!("SIGHUP: no --verify-key to reload");
                    }
                }
            }
        }
    }
}

/// Runs a blocking load on the blocking pool under `bound`; a load that is
/// late is abandoned (its result, if it ever comes, is dropped).
async fn off_runtime<T: Send + 'static>(
    bound: Duration,
    load: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::time::timeout(bound, tokio::task::spawn_blocking(load)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(anyhow::anyhow!("the reload task failed: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "reading the files took longer than {bound:?}"
        )),
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

fn owned(kids: Vec<&str>) -> Vec<String> {
    kids.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertFiles;

    use testbed::testdata;

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

    fn keys(file: PathBuf) -> Arc<Keys> {
        Arc::new(Keys::load(vec![file], "locate".into(), "m".into()).unwrap())
    }

    #[tokio::test]
    async fn each_reload_is_counted_under_what_it_reloaded_and_its_trigger() {
        let metrics = Arc::new(Metrics::new());
        let certs = Certificates::load(CertFiles {
            cert: testdata("insecure-test-server.pem"),
            key: testdata("insecure-test-server.key"),
        })
        .unwrap();
        let reloader = Reloader::new(
            Some(keys(testdata("insecure-test-eddsa.jwk.pub"))),
            Some(Arc::new(certs)),
            metrics.clone(),
            Events::new(16, metrics.clone()),
        );
        let reloaded = reloader.reload(Trigger::Admin).await;
        assert!(reloaded.keys.unwrap().is_ok() && reloaded.certificate.unwrap().is_ok());
        let text = metrics.encode();
        for what in ["keys", "certificate"] {
            let line = format!(
                r#"envelope_key_reloads_total{{what="{what}",trigger="admin",result="success"}} 1"#
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        let nothing = Reloader::new(None, None, metrics.clone(), Events::new(16, metrics));
        assert!(nothing.reload(Trigger::Sighup).await.is_empty());
    }

    #[tokio::test]
    async fn a_fifo_in_place_of_a_key_file_fails_at_once_and_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verify.jwk");
        std::fs::copy(testdata("insecure-test-eddsa.jwk.pub"), &file).unwrap();
        let keys = keys(file.clone());
        let before = keys.verifier();
        std::fs::remove_file(&file).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(&file)
            .status()
            .unwrap()
            .success());
        let metrics = Arc::new(Metrics::new());
        let reloader = Reloader::new(
            Some(keys.clone()),
            None,
            metrics.clone(),
            Events::new(16, metrics),
        );
        let started = std::time::Instant::now();
        let err = reloader
            .reload(Trigger::File)
            .await
            .keys
            .unwrap()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("a FIFO, not a regular file"),
            "{err:#}"
        );
        assert!(
            started.elapsed() < READ_BOUND,
            "refused at once, not timed out"
        );
        assert!(Arc::ptr_eq(&before, &keys.verifier()));
    }

    #[tokio::test]
    async fn a_load_that_hangs_is_abandoned_at_the_bound() {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let err = off_runtime(Duration::from_millis(50), move || {
            let _ = hold.recv();
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "reading the files took longer than 50ms");
        // The runtime waits for its blocking threads when it shuts down.
        drop(release);
    }
}
