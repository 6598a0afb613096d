//! The client side every namespace test, the benchmark and the soak share: a
//! boxed byte stream (plain TCP or TLS), the WebSocket over it, and a TLS
//! connector that trusts one CA (the insecure test CA) and offers only
//! `http/1.1`, as the envelope does.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;

/// Plain TCP or TLS, behind one type.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A client WebSocket over either kind of stream.
pub type Ws = WebSocketStream<Box<dyn Stream>>;

/// A connector trusting only the CA certificates in `ca` (PEM).
pub fn tls_connector(ca: &Path) -> io::Result<TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(io::Error::other)? {
        roots
            .add(cert.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
