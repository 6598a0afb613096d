//! TLS: the certificate chain and key from PEM files (read with the checks of
//! `common::files`: regular files of at most 1 MiB, never blocking), checked to
//! match, and kept behind one pointer that a reload swaps whole — rustls asks
//! [`Certificates`] for the key at every handshake, so a renewed certificate
//! reaches the next handshake while held sessions go on untouched. aws-lc-rs
//! provider, HTTP/1.1 ALPN only (WebSocket upgrades are HTTP/1.1, and no HTTP/2
//! attack surface is offered).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_cert::der::Decode;

/// `--cert` and `--key`: where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What an operator needs to know of the leaf certificate in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The subject as an RFC 4514 string.
    pub subject: String,
    /// The serial number in hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// One certificate chain and its key, known to match.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub leaf: Leaf,
    pub loaded_at: SystemTime,
}

impl CertFiles {
    /// Reads both files; an error names the flag and file at fault, or says
    /// the two do not match.
    pub fn load(&self) -> anyhow::Result<LoadedCert> {
        let (cert, key) = (&self.cert, &self.key);
        let chain = read_chain(cert).with_context(|| {
            format!(
                "--cert {}: cannot read a PEM certificate chain",
                cert.display()
            )
        })?;
        if chain.is_empty() {
            bail!("--cert {}: no certificate found", cert.display());
        }
        let leaf = leaf(&chain[0])
            .with_context(|| format!("--cert {}: cannot read the certificate", cert.display()))?;
        let private = common::files::read_small_file(key)
            .map_err(anyhow::Error::from)
            .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem).map_err(anyhow::Error::from))
            .with_context(|| format!("--key {}: cannot read a PEM private key", key.display()))?;
        let certified = CertifiedKey::from_der(chain, private, &provider()).with_context(|| {
            format!(
                "--key {} does not match --cert {}",
                key.display(),
                cert.display()
            )
        })?;
        Ok(LoadedCert {
            key: Arc::new(certified),
            leaf,
            loaded_at: SystemTime::now(),
        })
    }
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = common::files::read_small_file(path)?;
    Ok(CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>()?)
}

fn leaf(der: &CertificateDer<'_>) -> anyhow::Result<Leaf> {
    let cert = x509_cert::Certificate::from_der(der.as_ref())?;
    let tbs = &cert.tbs_certificate;
    let not_after = tbs.validity.not_after.to_unix_duration();
    Ok(Leaf {
        subject: tbs.subject.to_string(),
        serial: tbs
            .serial_number
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_after: OffsetDateTime::from_unix_timestamp(not_after.as_secs() as i64)?,
    })
}

fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate in force, and where to read it again.
#[derive(Debug)]
pub struct Certificates {
    files: CertFiles,
    current: RwLock<Arc<LoadedCert>>,
}

impl Certificates {
    /// Loads the files for the first time; an error refuses start-up.
    pub fn load(files: CertFiles) -> anyhow::Result<Certificates> {
        let loaded = files.load()?;
        Ok(Certificates {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    pub fn current(&self) -> Arc<LoadedCert> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts a pair loaded by [`CertFiles::load`] in force.
    pub fn install(&self, loaded: LoadedCert) -> Arc<LoadedCert> {
        let loaded = Arc::new(loaded);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded.clone();
        loaded
    }

    /// Reads the files again and swaps the pair in, or changes nothing.
    pub fn reload(&self) -> anyhow::Result<Arc<LoadedCert>> {
        Ok(self.install(self.files.load()?))
    }

    /// The server configuration whose every handshake asks `self` for its key.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use testbed::testdata;

    fn test_pair() -> CertFiles {
        CertFiles {
            cert: testdata("insecure-test-server.pem"),
            key: testdata("insecure-test-server.key"),
        }
    }

    #[test]
    fn the_test_pair_loads_with_its_leaf_facts() {
        let loaded = test_pair().load().unwrap();
        assert!(loaded.leaf.subject.contains("CN="), "{:?}", loaded.leaf);
        assert!(!loaded.leaf.serial.is_empty());
        assert!(
            loaded.leaf.not_after > OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
        );
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_and_the_old_pair_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::copy(&test_pair().cert, &files.cert).unwrap();
        std::fs::copy(&test_pair().key, &files.key).unwrap();
        let certs = Arc::new(Certificates::load(files.clone()).unwrap());
        let before = certs.current();
        // A CA certificate with the server's key: a pair that does not match.
        std::fs::copy(testdata("insecure-test-ca.pem"), &files.cert).unwrap();
        let err = format!("{:#}", certs.reload().unwrap_err());
        assert!(
            err.starts_with("--key ") && err.contains("does not match --cert"),
            "{err}"
        );
        assert!(Arc::ptr_eq(&before, &certs.current()));
        let config = certs.server_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_fifo_or_a_missing_file_names_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("tls.crt");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = CertFiles {
            cert: fifo,
            key: test_pair().key,
        }
        .load()
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "--cert {}/tls.crt: cannot read a PEM certificate chain: a FIFO, not a regular file",
                dir.path().display()
            )
        );
        let err = CertFiles {
            cert: test_pair().cert,
            key: dir.path().join("missing.key"),
        }
        .load()
        .unwrap_err();
        assert!(err.to_string().starts_with("--key "), "{err}");
    }
}
