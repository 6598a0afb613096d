//! Where and how the envelope serves: the listen and metrics addresses, and the
//! TLS certificate and key files, which come as a pair or not at all (plain
//! HTTP); they are read when the daemon binds.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::{bail, Context};

use super::Flags;
use crate::tls::CertFiles;

/// `--listen-address`.
pub(super) fn listen_addresses(flags: &Flags) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(network) = flags.httpx_tcp_network.as_deref().filter(|n| *n != "tcp") {
        tracing::warn!(
            network,
            "-httpx.tcp-network is ignored; --listen-address decides the address family"
        );
    }
    parse_listen(&flags.listen_address).context("--listen-address")
}

/// `--metrics-address`; `off` (or empty) serves no metrics.
pub(super) fn metrics_addresses(flags: &Flags) -> anyhow::Result<Option<Vec<SocketAddr>>> {
    Ok(match flags.metrics_address.as_str() {
        "off" | "" => None,
        addr => Some(parse_listen(addr).context("--metrics-address")?),
    })
}

/// `--cert` and `--key`: both (TLS) or neither (plain HTTP).
pub(super) fn tls(flags: &Flags) -> anyhow::Result<Option<CertFiles>> {
    Ok(match (&flags.cert, &flags.key) {
        (Some(cert), Some(key)) => Some(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => bail!("--cert is given without --key"),
        (None, Some(_)) => bail!("--key is given without --cert"),
    })
}

/// `:PORT` → every interface (one dual-stack IPv6 socket); `HOST:PORT` → that address.
pub fn parse_listen(text: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("invalid port in {text:?}"))?;
        return Ok(vec![SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
        )]);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .with_context(|| {
            format!("cannot resolve {text:?} (expected :PORT, IP:PORT or [IPv6]:PORT)")
        })?
        .collect();
    if addrs.is_empty() {
        bail!("{text:?} resolves to no address");
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::super::flags::parse;
    use super::*;

    #[test]
    fn colon_port_listens_on_every_interface() {
        let addrs = parse_listen(":8880").unwrap();
        assert_eq!(addrs, vec!["[::]:8880".parse().unwrap()]);
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            vec!["127.0.0.1:0".parse().unwrap()]
        );
        assert!(parse_listen(":http").is_err());
    }

    #[test]
    fn a_bad_listen_address_names_the_flag() {
        let err = listen_addresses(&parse(&["--listen-address=:http"])).unwrap_err();
        assert_eq!(err.to_string(), "--listen-address");
        assert_eq!(
            listen_addresses(&parse(&[])).unwrap(),
            vec!["[::]:8880".parse().unwrap()]
        );
    }

    #[test]
    fn metrics_address_off_serves_no_metrics() {
        assert_eq!(
            metrics_addresses(&parse(&["--metrics-address=off"])).unwrap(),
            None
        );
        assert_eq!(
            metrics_addresses(&parse(&["--metrics-address="])).unwrap(),
            None
        );
        assert_eq!(
            metrics_addresses(&parse(&[])).unwrap(),
            Some(vec!["[::]:9990".parse().unwrap()])
        );
        let err = metrics_addresses(&parse(&["--metrics-address=:x"])).unwrap_err();
        assert_eq!(err.to_string(), "--metrics-address");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let err = tls(&parse(&["--cert", "/no/cert.pem"])).unwrap_err();
        assert_eq!(err.to_string(), "--cert is given without --key");
    }

    #[test]
    fn key_without_cert_is_refused() {
        let err = tls(&parse(&["--key", "/no/key.pem"])).unwrap_err();
        assert_eq!(err.to_string(), "--key is given without --cert");
    }

    #[test]
    fn cert_and_key_serve_tls_and_neither_serves_plain_http() {
        let files = tls(&parse(&["--cert", "/no/cert.pem", "--key", "/no/key.pem"]))
            .unwrap()
            .unwrap();
        assert_eq!(files.cert, std::path::PathBuf::from("/no/cert.pem"));
        assert_eq!(files.key, std::path::PathBuf::from("/no/key.pem"));
        assert!(tls(&parse(&[])).unwrap().is_none());
    }
}
