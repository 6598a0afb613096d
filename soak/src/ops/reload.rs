//! Key rotation in the soak's [`Driver`]: the verify key is replaced on disk
//! and reloaded (SIGHUP or `POST /v1/reload`); a token of the old key must then
//! be refused, within a bound for the asynchronous SIGHUP.

use std::time::Duration;

use nix::sys::signal::Signal;
use testbed::Wait;
use tokio::time::Instant;

use super::{Driver, Mismatch};
use crate::client;
use crate::lab::{unix_now, Lab};

impl Driver<'_> {
    pub(super) async fn key_reload(&mut self, sighup: bool) -> Result<bool, Mismatch> {
        let old = self.lab.rotate_key()?;
        if sighup {
            self.envelope
                .as_ref()
                .expect("running")
                .signal(Signal::SIGHUP);
        } else {
            self.lab.reload().await?;
        }
        // SIGHUP (and the file watch) act asynchronously: poll, bounded.
        let wait = Wait::new(Duration::from_secs(5), "the old key refused")
            .every(Duration::from_millis(100));
        loop {
            let asked = unix_now();
            let sent = Instant::now();
            let upgrade =
                client::open(self.lab.sources[0], &self.tls, &Lab::token_from(&old, 8)).await?;
            match self
                .admit(self.lab.sources[0], 8, asked, sent, upgrade)
                .await?
            {
                Some(401) => break,
                // Not reloaded yet: a valid token, granted or refused for slots.
                Some(101 | 503) if !sighup => {
                    return Err(Mismatch::new(
                        "an old key's token still accepted after POST /v1/reload",
                    ))
                }
                Some(101 | 503) if wait.pause_async().await.is_ok() => {}
                got => {
                    return Err(Mismatch::new(format!(
                        "old key after reload: answer {got:?}, want 401\n{}",
                        self.logs()
                    )))
                }
            }
        }
        Ok(true)
    }
}
