//! The verify keys, reloadable without a restart (SPEC §3): the current set sits
//! behind one pointer that a reload swaps whole, after the new set has passed every
//! load check; a refused set leaves the old one in force. What triggers a
//! reload, and how it is logged and counted, is `reload.rs`'s.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use common::{Algorithm, KeyError, Verifier};

/// One loaded key set.
#[derive(Debug)]
pub struct KeySet {
    pub verifier: Arc<Verifier>,
    /// Every key, in file order.
    pub keys: Vec<KeyEntry>,
    pub loaded_at: SystemTime,
}

/// One key of a set: its kid, algorithm and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub kid: String,
    pub alg: Algorithm,
    pub file: PathBuf,
}

impl KeySet {
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }
}

/// The verify keys in force, and how to load them again.
#[derive(Debug)]
pub struct Keys {
    current: RwLock<Arc<KeySet>>,
    files: Vec<PathBuf>,
    issuer: String,
    audience: String,
}

impl Keys {
    /// Loads the initial set; an error here refuses start-up.
    pub fn load(files: Vec<PathBuf>, issuer: String, audience: String) -> Result<Keys, KeyError> {
        let set = load_set(&files, &issuer, &audience)?;
        Ok(Keys {
            current: RwLock::new(Arc::new(set)),
            files,
            issuer,
            audience,
        })
    }

    /// The set in force now (a request keeps the one it started with).
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        self.current().verifier.clone()
    }

    /// Loads every file again into a new set, touching nothing in force
    /// (blocking: file reads; the reloader runs it off the runtime).
    pub fn load_again(&self) -> Result<KeySet, KeyError> {
        load_set(&self.files, &self.issuer, &self.audience)
    }

    /// Puts a set loaded by [`Keys::load_again`] in force, whole.
    pub fn install(&self, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = set.clone();
        set
    }

    /// Loads every file again and swaps the whole set in, or changes nothing.
    pub fn reload(&self) -> Result<Arc<KeySet>, KeyError> {
        Ok(self.install(self.load_again()?))
    }

    /// The files the keys come from, as given.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// Every key of every file, with the checks of SPEC §3, and a duplicate kid
/// named with both its files.
fn load_set(files: &[PathBuf], issuer: &str, audience: &str) -> Result<KeySet, KeyError> {
    let mut keys = Vec::new();
    let mut entries: Vec<KeyEntry> = Vec::new();
    for file in files {
        for key in common::jwk::load_public_keys(file)? {
            if let Some(first) = entries.iter().find(|e| e.kid == key.kid()) {
                return Err(KeyError::DuplicateKid {
                    kid: key.kid().to_owned(),
                    first: first.file.clone(),
                    second: file.clone(),
                });
            }
            entries.push(KeyEntry {
                kid: key.kid().to_owned(),
                alg: key.alg(),
                file: file.clone(),
            });
            keys.push(key);
        }
    }
    Ok(KeySet {
        verifier: Arc::new(Verifier::new(keys, issuer, audience)?),
        keys: entries,
        loaded_at: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use testbed::testdata;

    fn kids(keys: &Keys) -> Vec<String> {
        keys.current()
            .kids()
            .iter()
            .map(|k| k.to_string())
            .collect()
    }

    #[test]
    fn a_reload_swaps_the_whole_set_and_a_bad_set_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("verify.jwk");
        std::fs::copy(testdata("insecure-test-eddsa.jwk.pub"), &file).unwrap();
        let keys = Keys::load(vec![file.clone()], "locate".into(), "m".into()).unwrap();
        let before = kids(&keys);
        let old = keys.verifier();

        // A private key is refused at load: the old set stays, the same object.
        std::fs::copy(testdata("insecure-test-es256.jwk"), &file).unwrap();
        assert!(keys.reload().is_err());
        assert!(Arc::ptr_eq(&old, &keys.verifier()));

        std::fs::copy(testdata("insecure-test-es256.jwk.pub"), &file).unwrap();
        let set = keys.reload().unwrap();
        assert_ne!(kids(&keys), before);
        assert_eq!(set.keys[0].file, file);
        assert!(!Arc::ptr_eq(&old, &keys.verifier()));
    }

    #[test]
    fn a_duplicate_kid_across_files_names_both() {
        let file = testdata("insecure-test-eddsa.jwk.pub");
        let err = Keys::load(vec![file.clone(), file], "locate".into(), "m".into()).unwrap_err();
        assert!(matches!(err, KeyError::DuplicateKid { .. }), "{err}");
    }
}
