//! Connections to a URL's host: TCP, and TLS for `https`/`wss` with the system's
//! trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` override them, as in OpenSSL).

use std::sync::{Arc, OnceLock};

use hyper::Uri;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where a URL points: host (without IPv6 brackets), port and whether TLS is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// `plain`/`secure` are the accepted schemes (`http`/`https` or `ws`/`wss`).
    pub fn of(uri: &Uri, plain: &str, secure: &str) -> Result<Endpoint, String> {
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case(secure) => true,
            Some(s) if s.eq_ignore_ascii_case(plain) => false,
            _ => return Err(format!("not a {plain}:// or {secure}:// URL")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Endpoint {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
        })
    }

    /// `host:port`, bracketing an IPv6 address; safe to print (no path or query).
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens TCP (and TLS) connections; the roots are loaded on the first TLS use.
#[derive(Default)]
pub struct Connector {
    tls: OnceLock<Result<TlsConnector, String>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls_loaded", &self.tls.get().is_some())
            .finish()
    }
}

impl Connector {
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Stream>, String> {
        // Tries every address the name resolves to, in order.
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        if !endpoint.tls {
            return Ok(Box::new(tcp));
        }
        let connector = self.tls.get_or_init(tls_connector).clone()?;
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| format!("{:?} is not a valid TLS server name", endpoint.host))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(tls))
    }
}

fn tls_connector() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted root certificates found{why}; install ca-certificates or set SSL_CERT_FILE"
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Locate and the envelope are both spoken to over HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint, String> {
        Endpoint::of(&url.parse().unwrap(), "ws", "wss")
    }

    #[test]
    fn endpoints_take_default_ports_and_lose_ipv6_brackets() {
        let e =
            endpoint("wss://mlab1-lga03.example.org/v0/envelope/access?access_token=x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("mlab1-lga03.example.org", 443, true)
        );
        let e = endpoint("ws://[2001:db8::1]:4443/x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("2001:db8::1", 4443, false)
        );
        assert_eq!(e.label(), "[2001:db8::1]:4443");
        assert!(endpoint("http://example.org/").is_err());
        assert!(endpoint("/relative").is_err());
    }
}
