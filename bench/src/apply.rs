//! The firewall step alone: the envelope's own `iptables+ipset` backend, built
//! as the daemon builds it, in the server namespace with no daemon and no
//! client, timing `Firewall::apply` for one grant and for its revoke (one
//! netlink send and its acknowledgements each). What every end-to-end grant
//! figure contains of the firewall.

use std::time::{Duration, Instant};

use envelope::firewall::{Change, Firewall, IpsetFirewall, IptablesConfig, Opening, Subnet};

use crate::stats::Sample;

pub struct ApplyFigures {
    pub grant: Sample,
    pub revoke: Sample,
}

/// `rounds` grants and revokes of one /24, back to back, in `server_ns`.
pub fn grant_and_revoke(server_ns: &str, rounds: usize) -> anyhow::Result<ApplyFigures> {
    testbed::NetPair::in_ns(server_ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let firewall = IpsetFirewall::new(
                IptablesConfig {
                    device: testbed::DEVICE.to_owned(),
                    service_ports: vec![crate::lab::ENVELOPE_PORT],
                    proxy_ports: vec![80, 443],
                    bin_dir: "/usr/sbin".into(),
                    command_timeout: Duration::from_secs(5),
                },
                Duration::from_secs(5),
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("ipset backend: {e}"))?;
            firewall.setup().await?;
            let subnet = Subnet::of_client(testbed::CLIENT_V4.parse()?);
            let (mut grants, mut revokes) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let until = tokio::time::Instant::now() + Duration::from_secs(60);
                let grant = Change {
                    grant: vec![Opening { subnet, until }],
                    ..Change::default()
                };
                let started = Instant::now();
                firewall.apply(&grant).await?;
                grants.push(started.elapsed());
                let revoke = Change {
                    revoke: vec![subnet],
                    ..Change::default()
                };
                let started = Instant::now();
                firewall.apply(&revoke).await?;
                revokes.push(started.elapsed());
            }
            firewall.teardown().await?;
            Ok(ApplyFigures {
                grant: Sample::new(grants),
                revoke: Sample::new(revokes),
            })
        })
    })
}
