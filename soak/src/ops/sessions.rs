//! The client's and the operator's side of the soak's [`Driver`]: one upgrade
//! checked against the grant the admin API then lists (its deadline included),
//! a revoke through the admin API checked against the model, and picking a
//! held session by index.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{Driver, Mismatch};
use crate::client::{self, Upgrade};
use crate::lab::{unix_now, MAX_HOLD_SECS, TIMEOUT_SECS};
use crate::model::{subnet_of, Session, Tri};

impl Driver<'_> {
    /// Sessions the model holds, in a stable order, for `pick`.
    pub(super) fn pick(&self, pick: usize, only_yes: bool) -> Option<usize> {
        let now = Instant::now();
        let candidates: Vec<usize> = (0..self.model.sessions.len())
            .filter(|&i| {
                !only_yes || self.model.session_state(&self.model.sessions[i], now) == Tri::Yes
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
    }

    /// One upgrade; on 101 the new grant goes into the model.
    pub(super) async fn grant(
        &mut self,
        source: IpAddr,
        exp: u64,
    ) -> Result<Option<u16>, Mismatch> {
        let token = self.lab.token(exp);
        let asked = unix_now();
        let sent = Instant::now();
        let upgrade = client::open(source, &self.tls, &token).await?;
        self.admit(source, exp, asked, sent, upgrade).await
    }

    pub(super) async fn admit(
        &mut self,
        source: IpAddr,
        exp: u64,
        asked: i64,
        sent: Instant,
        upgrade: Upgrade,
    ) -> Result<Option<u16>, Mismatch> {
        let ws = match upgrade {
            Upgrade::Refused(status) => return Ok(Some(status)),
            Upgrade::Session(ws) => ws,
        };
        let grants = self.lab.grants().await?;
        let known: Vec<u64> = self.model.sessions.iter().map(|s| s.id).collect();
        let Some(grant) = grants
            .iter()
            .find(|g| !known.contains(&g.id) && g.ip == source)
        else {
            return Err(Mismatch::new(format!(
                "101 for {source} but no new grant listed: {grants:?}"
            )));
        };
        // The deadline: max(token exp, now + timeout), capped by max-hold.
        let wall = time::OffsetDateTime::now_utc();
        let left = (grant.deadline - wall).as_seconds_f64();
        let deadline = Instant::now() + Duration::from_secs_f64(left.max(0.0));
        let exp_at = (asked + exp as i64) as f64;
        let now_unix = wall.unix_timestamp_nanos() as f64 / 1e9;
        let want = exp_at
            .max(now_unix + TIMEOUT_SECS as f64)
            .min(now_unix + MAX_HOLD_SECS as f64)
            - now_unix;
        if (left - want).abs() > 1.6 {
            return Err(Mismatch::new(format!(
                "grant {} deadline in {left:.2}s, expected {want:.2}s (token exp in {exp}s, \
                 --timeout {TIMEOUT_SECS}s, --max-hold {MAX_HOLD_SECS}s; asked {:?} ago)",
                grant.id,
                sent.elapsed()
            )));
        }
        self.model.sessions.push(Session {
            id: grant.id,
            source,
            subnet: subnet_of(source),
            deadline,
            ws: Some(*ws),
        });
        Ok(Some(101))
    }

    /// A revoke through the admin API of every model session `which` selects.
    pub(super) async fn revoke_where(
        &mut self,
        path: &str,
        which: impl Fn(&Session) -> bool,
    ) -> Result<(), Mismatch> {
        let now = Instant::now();
        let revoked = self.lab.revoke(path).await?;
        let mut must = Vec::new();
        let mut may = Vec::new();
        for s in self.model.sessions.iter().filter(|s| which(s)) {
            match self.model.session_state(s, now) {
                Tri::Yes => must.push(s.id),
                _ => may.push(s.id),
            }
        }
        let ok = must.iter().all(|id| revoked.contains(id))
            && revoked
                .iter()
                .all(|id| must.contains(id) || may.contains(id));
        if !ok {
            return Err(Mismatch::new(format!(
                "revoke {path}: answer {revoked:?}, model wants {must:?} (maybe {may:?})"
            )));
        }
        self.model.sessions.retain(|s| !which(s));
        Ok(())
    }
}
