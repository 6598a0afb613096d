//! TLS server configuration from PEM files: aws-lc-rs provider, HTTP/1.1 ALPN only
//! (WebSocket upgrades are HTTP/1.1, and no HTTP/2 attack surface is offered).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `--cert` and `--key`: where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads both files into a server configuration; an error names the flag
    /// and file at fault, or says the two do not match.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        server_config(&self.cert, &self.key)
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .with_context(|| {
            format!(
                "--cert {}: cannot read a PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!("--cert {}: no certificate found", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--key {}: cannot read a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "--key {} does not match --cert {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
