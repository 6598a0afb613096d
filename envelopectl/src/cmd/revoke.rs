//! `envelopectl revoke ID|IP` and `revoke --all`: returns once the envelope has
//! closed the sessions and removed their rules.

use std::net::IpAddr;

use common::admin::GRANTS_PATH;
use envelopectl::{Client, CtlError};

pub async fn run(client: &Client, target: Option<&str>, all: bool) -> Result<(), CtlError> {
    let path = match (target, all) {
        (None, true) => GRANTS_PATH.to_owned(),
        (Some(text), false) => match text.parse::<IpAddr>() {
            Ok(ip) => format!("{GRANTS_PATH}?ip={ip}"),
            Err(_) if text.parse::<u64>().is_ok() => format!("{GRANTS_PATH}/{text}"),
            Err(_) => {
                return Err(CtlError::Usage(format!(
                    "{text:?} is neither a grant ID nor an IP address"
                )))
            }
        },
        _ => {
            return Err(CtlError::Usage(
                "give a grant ID, an IP address, or --all".into(),
            ))
        }
    };
    let revoked = client.revoke(&path).await?;
    if revoked.revoked.is_empty() {
        println!("no live grants to revoke");
    } else {
        let ids: Vec<String> = revoked.revoked.iter().map(u64::to_string).collect();
        println!("revoked {}", ids.join(", "));
    }
    Ok(())
}
