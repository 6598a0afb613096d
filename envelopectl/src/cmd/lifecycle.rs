//! `envelopectl drain` and `envelopectl resume`: the envelope stops taking new
//! clients (held sessions go on, `/health` answers 503), or takes them again.

use std::time::Duration;

use common::admin::Lifecycle;
use envelopectl::{Client, CtlError};

use super::human;

pub async fn drain(client: &Client) -> Result<(), CtlError> {
    println!("{}", describe(&client.drain().await?));
    Ok(())
}

pub async fn resume(client: &Client) -> Result<(), CtlError> {
    println!("{}", describe(&client.resume().await?));
    Ok(())
}

/// `serving`, `draining (3 sessions held)`, `stopping in 4m10s (1 session held)`.
pub fn describe(state: &Lifecycle) -> String {
    let held = match state.active_grants {
        1 => "1 session held".to_owned(),
        n => format!("{n} sessions held"),
    };
    match (state.state.as_str(), state.stop_in_seconds) {
        ("serving", _) => "serving".to_owned(),
        ("stopping", Some(secs)) => {
            format!("stopping in {} ({held})", human(Duration::from_secs(secs)))
        }
        (other, _) => format!("{other}: no new clients ({held})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, held: usize, stop: Option<u64>) -> Lifecycle {
        Lifecycle {
            state: name.into(),
            active_grants: held,
            stop_in_seconds: stop,
        }
    }

    #[test]
    fn states_read_as_sentences() {
        assert_eq!(describe(&state("serving", 2, None)), "serving");
        assert_eq!(
            describe(&state("draining", 1, None)),
            "draining: no new clients (1 session held)"
        );
        assert_eq!(
            describe(&state("stopping", 3, Some(250))),
            "stopping in 4m10s (3 sessions held)"
        );
    }
}
