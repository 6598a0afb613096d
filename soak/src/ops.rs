//! The operations: generated from the seed alone (so a prefix of a run is
//! the same operations again), applied to the envelope and the model together.
//! An operation that does not apply to the current state (closing when no
//! session is held) is skipped.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

mod disrupt;
mod reload;
mod sessions;

use crate::client;
use crate::lab::{unix_now, Envelope, Lab, MAX_CLIENTS};
use crate::model::{subnet_of, Model};
use crate::views::{self, Views};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A session from source `src` (index) with a token expiring in `exp` s.
    Grant {
        src: usize,
        exp: u64,
    },
    /// Two sessions at once (contention for the last slots).
    Contend {
        a: usize,
        b: usize,
    },
    /// The client sends a Close frame.
    Close {
        pick: usize,
    },
    /// The client's connection goes without a Close frame.
    Drop {
        pick: usize,
    },
    /// Time passes (deadlines expire on their own).
    Wait {
        ms: u64,
    },
    /// Until the earliest deadline has certainly passed.
    WaitDeadline,
    RevokeId {
        pick: usize,
    },
    RevokeIp {
        src: usize,
    },
    RevokeAll,
    SigtermRestart,
    SigkillRestart,
    /// SIGKILL, stay down `ms` (kernel timeouts close grants), then start.
    SigkillDown {
        ms: u64,
    },
    /// `ipset del` (`nft delete element`) of a held subnet's member by hand;
    /// with `--backend nftables`, one in eight (`pick % 8 == 7`) is `nft
    /// delete table inet envelope` instead.
    TamperMember {
        pick: usize,
    },
    /// Delete the family's set rule by hand.
    TamperRule {
        v6: bool,
    },
    ForeignRule {
        v6: bool,
    },
    /// A foreign ipset set (with `--backend nftables`: a foreign nft table).
    ForeignSet,
    /// A new verify key, loaded by SIGHUP or `POST /v1/reload`: tokens of the
    /// old key are refused from then on, held sessions stay.
    KeyReload {
        sighup: bool,
    },
    /// Restart with `--fault-netlink`, then a grant (fault on its add) or a
    /// grant and a hang-up (fault on the revoke).
    Fault {
        stall: bool,
        on_revoke: bool,
        src: usize,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The first `count` operations of a seed's sequence.
pub fn generate(seed: u64, count: usize, sources: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let src = rng.gen_range(0..sources);
            let pick = rng.gen_range(0..64);
            let roll = rng.gen_range(0..100u32);
            match roll {
                0..=31 => Op::Grant {
                    src,
                    // At least 2 s: a token minted in the second it expires is refused.
                    exp: rng.gen_range(2..=8),
                },
                32..=36 => Op::Contend {
                    a: src,
                    b: rng.gen_range(0..sources),
                },
                37..=46 => Op::Close { pick },
                47..=53 => Op::Drop { pick },
                54..=59 => Op::Wait {
                    ms: rng.gen_range(100..1000),
                },
                60..=61 => Op::WaitDeadline,
                62..=67 => Op::RevokeId { pick },
                68..=72 => Op::RevokeIp { src },
                73..=74 => Op::RevokeAll,
                75..=77 => Op::SigtermRestart,
                78..=80 => Op::SigkillRestart,
                81..=82 => Op::SigkillDown {
                    ms: rng.gen_range(1500..3500),
                },
                83..=90 => Op::TamperMember { pick },
                91 => Op::TamperRule {
                    v6: rng.gen_bool(0.5),
                },
                92..=93 => Op::ForeignRule {
                    v6: rng.gen_bool(0.5),
                },
                94 => Op::ForeignSet,
                95 => Op::KeyReload {
                    sighup: rng.gen_bool(0.5),
                },
                _ => Op::Fault {
                    stall: rng.gen_bool(0.5),
                    on_revoke: rng.gen_bool(0.5),
                    src,
                },
            }
        })
        .collect()
}

/// A disagreement: what went wrong and, when they were read, the views.
#[derive(Debug)]
pub struct Mismatch {
    pub problems: Vec<String>,
    pub views: Option<Box<Views>>,
}

impl Mismatch {
    pub fn new(problem: impl Into<String>) -> Mismatch {
        Mismatch {
            problems: vec![problem.into()],
            views: None,
        }
    }
}

impl From<anyhow::Error> for Mismatch {
    fn from(e: anyhow::Error) -> Mismatch {
        Mismatch::new(format!("{e:#}"))
    }
}

/// Everything one run drives.
pub struct Driver<'a> {
    pub lab: &'a Lab,
    pub model: Model,
    pub envelope: Option<Envelope>,
    pub tls: TlsConnector,
    pub foreign_count: u32,
    /// How many times each kind of operation ran (not skipped).
    pub counts: std::collections::BTreeMap<&'static str, usize>,
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Grant { .. } => "grant",
        Op::Contend { .. } => "contend",
        Op::Close { .. } => "close",
        Op::Drop { .. } => "drop",
        Op::Wait { .. } => "wait",
        Op::WaitDeadline => "wait-deadline",
        Op::RevokeId { .. } => "revoke-id",
        Op::RevokeIp { .. } => "revoke-ip",
        Op::RevokeAll => "revoke-all",
        Op::SigtermRestart => "sigterm-restart",
        Op::SigkillRestart => "sigkill-restart",
        Op::SigkillDown { .. } => "sigkill-down",
        Op::TamperMember { .. } => "tamper-member",
        Op::TamperRule { .. } => "tamper-rule",
        Op::ForeignRule { .. } => "foreign-rule",
        Op::ForeignSet => "foreign-set",
        Op::KeyReload { .. } => "key-reload",
        Op::Fault { .. } => "fault",
    }
}

impl Driver<'_> {
    /// Checks the three views against the model (bounded polling).
    pub async fn check(&mut self) -> Result<(), Mismatch> {
        views::settle(self.lab, &mut self.model)
            .await
            .map_err(|(problems, views)| Mismatch {
                problems,
                views: Some(Box::new(views)),
            })
    }

    /// Starts the envelope (optionally with a fault) and updates the model.
    pub async fn start(&mut self, fault: Option<&str>) -> Result<(), Mismatch> {
        self.envelope = Some(self.lab.envelope(fault)?);
        self.model.started();
        Ok(())
    }

    pub fn logs(&self) -> String {
        self.envelope
            .as_ref()
            .map(Envelope::logs)
            .unwrap_or_default()
    }

    /// Runs one operation against the envelope and the model. `Ok(false)` = skipped.
    pub async fn apply(&mut self, op: Op) -> Result<bool, Mismatch> {
        let now = Instant::now();
        self.model.prune(now);
        let sources = &self.lab.sources;
        match op {
            Op::Grant { src, exp } => {
                let source = sources[src];
                let (yes, either) = (self.model.yes_count(now), self.model.either_count(now));
                // With the nftables table deleted by hand a grant fails (500),
                // unless its subnet is held already and nothing needs changing.
                let cut = self.model.table_cut;
                let shared = self.model.held(&subnet_of(source), now) != crate::model::Tri::No;
                let got = self.grant(source, exp).await?;
                let want = if yes >= MAX_CLIENTS {
                    Some(503)
                } else if cut && (shared || yes + either >= MAX_CLIENTS) {
                    None
                } else if cut {
                    Some(500)
                } else if yes + either < MAX_CLIENTS {
                    Some(101)
                } else {
                    None
                };
                let answered = matches!(got, Some(101 | 503)) || cut && got == Some(500);
                if want.is_some() && got != want || !answered {
                    return Err(Mismatch::new(format!(
                        "grant from {source}: answer {got:?}, model wants {want:?} \
                         ({yes} held, {either} ending, --max-clients {MAX_CLIENTS})\n{}",
                        self.logs()
                    )));
                }
            }
            Op::Contend { a, b } => {
                let (sa, sb) = (sources[a], sources[b]);
                let (yes, either) = (self.model.yes_count(now), self.model.either_count(now));
                let (ta, tb) = (self.lab.token(8), self.lab.token(8));
                let asked = unix_now();
                let sent = Instant::now();
                let (ua, ub) = tokio::join!(
                    client::open(sa, &self.tls, &ta),
                    client::open(sb, &self.tls, &tb)
                );
                let ga = self.admit(sa, 8, asked, sent, ua?).await?;
                let gb = self.admit(sb, 8, asked, sent, ub?).await?;
                let wins = [ga, gb].iter().filter(|g| **g == Some(101)).count();
                let free = MAX_CLIENTS.saturating_sub(yes);
                let cut = self.model.table_cut;
                let least = if cut {
                    0
                } else {
                    MAX_CLIENTS.saturating_sub(yes + either).min(2)
                };
                let ok = [ga, gb]
                    .iter()
                    .all(|g| matches!(g, Some(101 | 503)) || cut && *g == Some(500))
                    && wins >= least
                    && wins <= free.min(2);
                if !ok {
                    return Err(Mismatch::new(format!(
                        "contention {sa} and {sb}: {ga:?} {gb:?}, model wants {least}..={} wins \
                         ({yes} held, {either} ending)",
                        free.min(2)
                    )));
                }
            }
            Op::Close { pick } | Op::Drop { pick } => {
                let Some(i) = self.pick(pick, false) else {
                    return Ok(false);
                };
                let mut session = self.model.sessions.remove(i);
                if let Some(ws) = session.ws.take() {
                    if matches!(op, Op::Close { .. }) {
                        client::close(ws).await;
                    } else {
                        drop(ws);
                    }
                }
            }
            Op::Wait { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::WaitDeadline => {
                let Some(first) = self.model.sessions.iter().map(|s| s.deadline).min() else {
                    return Ok(false);
                };
                tokio::time::sleep_until(first + crate::model::LATE + Duration::from_millis(100))
                    .await;
            }
            Op::RevokeId { pick } => {
                let Some(i) = self.pick(pick, true) else {
                    return Ok(false);
                };
                let id = self.model.sessions[i].id;
                let revoked = self.lab.revoke(&format!("/v1/grants/{id}")).await?;
                if revoked != [id] {
                    return Err(Mismatch::new(format!("revoke {id}: answer {revoked:?}")));
                }
                self.model.sessions.remove(i);
            }
            Op::RevokeIp { src } => {
                let source = sources[src];
                let subnet = subnet_of(source);
                self.revoke_where(&format!("/v1/grants?ip={source}"), |s| s.subnet == subnet)
                    .await?;
            }
            Op::RevokeAll => self.revoke_where("/v1/grants", |_| true).await?,
            Op::SigtermRestart => {
                if !self.restart_after_sigterm().await? {
                    return Ok(false);
                }
            }
            Op::SigkillRestart => {
                if !self.restart_after_sigkill().await? {
                    return Ok(false);
                }
            }
            Op::SigkillDown { ms } => {
                if !self.down_after_sigkill(ms).await? {
                    return Ok(false);
                }
            }
            Op::TamperMember { pick } => {
                if !self.tamper_member(pick)? {
                    return Ok(false);
                }
            }
            Op::TamperRule { v6 } => {
                if !self.tamper_rule(v6)? {
                    return Ok(false);
                }
            }
            Op::ForeignRule { v6 } => {
                if !self.foreign_rule(v6)? {
                    return Ok(false);
                }
            }
            Op::ForeignSet => {
                if !self.foreign_set()? {
                    return Ok(false);
                }
            }
            Op::KeyReload { sighup } => {
                if !self.key_reload(sighup).await? {
                    return Ok(false);
                }
            }
            Op::Fault {
                stall,
                on_revoke,
                src,
            } => {
                if !self.fault(stall, on_revoke, src).await? {
                    return Ok(false);
                }
            }
        }
        *self.counts.entry(kind(&op)).or_default() += 1;
        Ok(true)
    }
}
