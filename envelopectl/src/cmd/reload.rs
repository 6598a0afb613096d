//! `envelopectl reload`: the envelope loads its verify keys and TLS certificate
//! again, each all or nothing; exit 0 with what is now in force, 1 with the
//! reason when one was refused.

use envelopectl::{Client, CtlError};

pub async fn run(client: &Client) -> Result<(), CtlError> {
    let reloaded = client.reload().await?;
    if reloaded.kids.is_empty() {
        println!("reloaded; no verify keys");
    } else {
        println!("reloaded; keys in force: {}", reloaded.kids.join(", "));
    }
    if let Some(cert) = &reloaded.certificate {
        println!(
            "certificate in force: {}",
            super::status::certificate_line(cert)
        );
    }
    Ok(())
}
