//! The files a configuration names, read when the daemon binds: the TLS
//! certificate and key, the verify keys, and the single-use cache they need.
//! A file that does not load refuses start-up with one line naming its flag.

use std::sync::Arc;

use anyhow::Context;
use common::filters::ReplayCache;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::keys::Keys;
use crate::tls::Certificates;

/// What the daemon read from disk to start.
#[derive(Clone)]
pub(super) struct Loaded {
    /// The certificate in force (reloadable) and the acceptor that asks it at
    /// every handshake.
    pub certs: Option<Arc<Certificates>>,
    pub tls: Option<TlsAcceptor>,
    pub keys: Option<Arc<Keys>>,
    pub replay: Option<Arc<ReplayCache>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("tls", &self.tls.is_some())
            .field("keys", &self.keys)
            .field("replay", &self.replay.is_some())
            .finish()
    }
}

impl Loaded {
    /// The certificate first, then the verify keys (with `--issuer` and
    /// `--machine` as the expected `iss` and `aud`).
    pub fn from_config(config: &Config) -> anyhow::Result<Loaded> {
        let certs = match &config.tls {
            Some(files) => Some(Arc::new(Certificates::load(files.clone())?)),
            None => None,
        };
        let tls = match &certs {
            Some(certs) => Some(TlsAcceptor::from(Arc::new(certs.server_config()?))),
            None => None,
        };
        let tokens = &config.tokens;
        let keys = if tokens.verify_keys.is_empty() {
            None
        } else {
            let keys = Keys::load(
                tokens.verify_keys.clone(),
                tokens.issuer.clone(),
                tokens.audience.clone(),
            )
            .context("--verify-key")?;
            Some(Arc::new(keys))
        };
        Ok(Loaded {
            certs,
            tls,
            keys,
            replay: tokens.single_use.map(|cap| Arc::new(ReplayCache::new(cap))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CertFiles, Flags};

    use testbed::testdata;

    fn config(args: &[String]) -> Config {
        use clap::Parser as _;
        let base = [
            "envelope",
            "--firewall=none",
            "--token-required=false",
            "--machine=m",
            "--subject=s",
        ];
        let args = base
            .iter()
            .map(|a| a.to_string())
            .chain(args.iter().cloned());
        Flags::parse_from(args).validate().unwrap()
    }

    fn key_arg(name: &str) -> String {
        format!("--verify-key={}", testdata(name).display())
    }

    #[test]
    fn an_unreadable_verify_key_names_the_flag() {
        let err = Loaded::from_config(&config(&["--verify-key=/nonexistent/key.jwk".into()]))
            .unwrap_err();
        assert_eq!(err.to_string(), "--verify-key");
        assert!(
            format!("{err:#}").contains("/nonexistent/key.jwk"),
            "{err:#}"
        );
    }

    #[test]
    fn keys_certificate_and_single_use_cache_are_loaded() {
        let mut config = config(&[
            key_arg("insecure-test-eddsa.jwk.pub"),
            "--single-use-tokens".into(),
        ]);
        config.tls = Some(CertFiles {
            cert: testdata("insecure-test-server.pem"),
            key: testdata("insecure-test-server.key"),
        });
        let loaded = Loaded::from_config(&config).unwrap();
        assert!(loaded.tls.is_some() && loaded.replay.is_some());
        assert_eq!(loaded.keys.unwrap().current().keys.len(), 1);
    }

    #[test]
    fn a_key_file_that_is_not_a_pem_key_names_the_flag() {
        let mut config = config(&[]);
        config.tls = Some(CertFiles {
            cert: testdata("insecure-test-server.pem"),
            key: testdata("insecure-test-es256.jwk"),
        });
        let err = Loaded::from_config(&config).unwrap_err().to_string();
        assert!(err.starts_with("--key "), "{err}");
    }

    #[test]
    fn nothing_to_load_loads_nothing() {
        let loaded = Loaded::from_config(&config(&[])).unwrap();
        assert!(loaded.tls.is_none() && loaded.keys.is_none() && loaded.replay.is_none());
    }
}
