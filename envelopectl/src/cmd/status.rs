//! `envelopectl status [--json]`.

use common::admin::STATUS_PATH;
use envelopectl::{Client, CtlError};

use super::human;

pub async fn run(client: &Client, json: bool) -> Result<(), CtlError> {
    if json {
        println!("{}", client.get_json(STATUS_PATH).await?);
        return Ok(());
    }
    let s = client.status().await?;
    let version = common::build_info::describe(&s.version, &s.revision);
    println!("version:          {version}");
    println!("machine:          {}", s.machine.as_deref().unwrap_or("-"));
    println!("subject:          {}", s.subject.as_deref().unwrap_or("-"));
    println!("firewall:         {}", s.firewall);
    println!("listening:        {}", addresses(&s.listening));
    println!("metrics:          {}", addresses(&s.metrics_listening));
    println!("clients:          {} of {}", s.active_grants, s.max_clients);
    println!(
        "state:            {}",
        super::lifecycle::describe(&s.lifecycle)
    );
    if s.pending_revokes > 0 {
        println!("pending revokes:  {} (retrying)", s.pending_revokes);
    }
    println!(
        "uptime:           {}",
        human(std::time::Duration::from_secs(s.uptime_seconds))
    );
    if let Some(loaded) = s.keys_loaded_at {
        let when = loaded
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        println!("keys loaded:      {when}");
    }
    for key in &s.keys {
        println!("key:              {}  {}", key.kid, key.file);
    }
    if let Some(cert) = &s.certificate {
        println!("certificate:      {}", certificate_line(cert));
    }
    Ok(())
}

/// `CN=host  serial 0a1b…  expires 2027-03-01T00:00:00Z`.
pub fn certificate_line(cert: &common::admin::Certificate) -> String {
    let expires = cert
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "{}  serial {}  expires {expires}",
        cert.subject, cert.serial
    )
}

fn addresses(addrs: &[std::net::SocketAddr]) -> String {
    if addrs.is_empty() {
        return "off".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
