//! `envelopectl reload`: the envelope loads its verify keys again, all or nothing;
//! exit 0 with the kids now in force, 1 with the reason when the set was refused.

use envelopectl::{Client, CtlError};

pub async fn run(client: &Client) -> Result<(), CtlError> {
    let reloaded = client.reload().await?;
    println!("reloaded; keys in force: {}", reloaded.kids.join(", "));
    Ok(())
}
