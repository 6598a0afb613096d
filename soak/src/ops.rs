//! The operations: generated from the seed alone (so a prefix of a run is
//! the same operations again), applied to the envelope and the model together.
//! An operation that does not apply to the current state (closing when no
//! session is held) is skipped.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::client::{self, Upgrade};
use crate::lab::{unix_now, Envelope, Lab, MAX_CLIENTS, MAX_HOLD_SECS, TIMEOUT_SECS};
use crate::model::{family, subnet_of, Model, Phase, Session, Tri};
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
    /// `ipset del` of a held subnet's member by hand.
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

    async fn sigterm(&mut self) -> Result<(), Mismatch> {
        let mut envelope = self.envelope.take().expect("running");
        envelope.signal(Signal::SIGTERM);
        // The clients answer the Close frames, as real ones would.
        for session in &mut self.model.sessions {
            if let Some(ws) = session.ws.take() {
                tokio::spawn(client::drain(ws));
            }
        }
        let status = envelope.wait(Duration::from_secs(20)).await?;
        if !status.success() {
            return Err(Mismatch::new(format!(
                "SIGTERM: the envelope exited with {status}:\n{}",
                envelope.logs()
            )));
        }
        self.model.sessions.clear();
        self.model.phase = Phase::Down;
        self.model.rule_cut = [None, None];
        self.model.tampered.clear();
        Ok(())
    }

    async fn sigkill(&mut self) -> Result<(), Mismatch> {
        let mut envelope = self.envelope.take().expect("running");
        envelope.signal(Signal::SIGKILL);
        envelope.wait(Duration::from_secs(10)).await?;
        self.model.killed(Instant::now());
        Ok(())
    }

    /// Sessions the model holds, in a stable order, for `pick`.
    fn pick(&self, pick: usize, only_yes: bool) -> Option<usize> {
        let now = Instant::now();
        let candidates: Vec<usize> = (0..self.model.sessions.len())
            .filter(|&i| {
                !only_yes || self.model.session_state(&self.model.sessions[i], now) == Tri::Yes
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
    }

    /// One upgrade; on 101 the new grant goes into the model.
    async fn grant(&mut self, source: IpAddr, exp: u64) -> Result<Option<u16>, Mismatch> {
        let token = self.lab.token(exp);
        let asked = unix_now();
        let sent = Instant::now();
        let upgrade = client::open(source, &self.tls, &token).await?;
        self.admit(source, exp, asked, sent, upgrade).await
    }

    async fn admit(
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
        let grants = self.lab.grants()?;
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

    /// Runs one operation against the envelope and the model. `Ok(false)` = skipped.
    pub async fn apply(&mut self, op: Op) -> Result<bool, Mismatch> {
        let now = Instant::now();
        self.model.prune(now);
        let sources = &self.lab.sources;
        match op {
            Op::Grant { src, exp } => {
                let source = sources[src];
                let (yes, either) = (self.model.yes_count(now), self.model.either_count(now));
                let got = self.grant(source, exp).await?;
                let want = if yes >= MAX_CLIENTS {
                    Some(503)
                } else if yes + either < MAX_CLIENTS {
                    Some(101)
                } else {
                    None
                };
                if want.is_some() && got != want || !matches!(got, Some(101 | 503)) {
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
                let least = MAX_CLIENTS.saturating_sub(yes + either).min(2);
                let ok = [ga, gb].iter().all(|g| matches!(g, Some(101 | 503)))
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
                let revoked = self.lab.revoke(&format!("/v1/grants/{id}"))?;
                if revoked != [id] {
                    return Err(Mismatch::new(format!("revoke {id}: answer {revoked:?}")));
                }
                self.model.sessions.remove(i);
            }
            Op::RevokeIp { src } => {
                let source = sources[src];
                let subnet = subnet_of(source);
                self.revoke_where(&format!("/v1/grants?ip={source}"), |s| s.subnet == subnet)?;
            }
            Op::RevokeAll => self.revoke_where("/v1/grants", |_| true)?,
            Op::SigtermRestart => {
                self.sigterm().await?;
                self.check().await?;
                self.start(None).await?;
            }
            Op::SigkillRestart => {
                self.sigkill().await?;
                self.check().await?;
                self.start(None).await?;
            }
            Op::SigkillDown { ms } => {
                self.sigkill().await?;
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    self.check().await?;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                self.start(None).await?;
            }
            Op::TamperMember { pick } => {
                let Some(i) = self.pick(pick, true) else {
                    return Ok(false);
                };
                let subnet = self.model.sessions[i].subnet.clone();
                if self.model.tampered.contains_key(&subnet) {
                    return Ok(false);
                }
                let set = if family(&subnet) == 0 {
                    "envelope-v4"
                } else {
                    "envelope-v6"
                };
                self.lab.server_sh(&format!("ipset del {set} {subnet}"))?;
                let latest = self.model.latest(&subnet).expect("a session holds it");
                self.model.tampered.insert(subnet, latest);
            }
            Op::TamperRule { v6 } => {
                let fam = usize::from(v6);
                if self.model.rule_cut[fam].is_some() {
                    return Ok(false);
                }
                let set = if v6 { "envelope-v6" } else { "envelope-v4" };
                let prefix = if v6 { "6 " } else { "4 " };
                let Some(line) = self
                    .model
                    .static_lines
                    .iter()
                    .find(|l| {
                        l.starts_with(prefix) && l.contains(&format!("--match-set {set} src"))
                    })
                    .cloned()
                else {
                    return Err(Mismatch::new(format!("no set rule for {set} to delete")));
                };
                let rule = line[2..].strip_prefix("-A ").unwrap_or(&line[2..]);
                let bin = if v6 { "ip6tables" } else { "iptables" };
                self.lab.server_sh(&format!("{bin} -w -D {rule}"))?;
                self.model.rule_cut[fam] = Some(line);
            }
            Op::ForeignRule { v6 } => {
                self.foreign_count += 1;
                let k = self.foreign_count;
                let script = if v6 {
                    format!(
                        "ip6tables -w -N FOREIGN-{k} && ip6tables -w -A FOREIGN-{k} -j RETURN && \
                         ip6tables -w -A INPUT -s 2001:db8:ffff::{k:x}/128 -p tcp --dport 7 \
                         -m comment --comment foreign-{k} -j ACCEPT"
                    )
                } else {
                    format!(
                        "iptables -w -N FOREIGN-{k} && iptables -w -A FOREIGN-{k} -j RETURN && \
                         iptables -w -A INPUT -s 203.0.113.{}/32 -p tcp --dport 7 \
                         -m comment --comment foreign-{k} -j ACCEPT",
                        k % 250 + 1
                    )
                };
                self.foreign(&script)?;
            }
            Op::ForeignSet => {
                self.foreign_count += 1;
                let k = self.foreign_count;
                self.foreign(&format!(
                    "ipset create foreign-{k} hash:ip && ipset add foreign-{k} 203.0.113.{}",
                    k % 250 + 1
                ))?;
            }
            Op::KeyReload { sighup } => {
                let old = self.lab.rotate_key()?;
                if sighup {
                    self.envelope
                        .as_ref()
                        .expect("running")
                        .signal(Signal::SIGHUP);
                } else {
                    self.lab.reload()?;
                }
                // SIGHUP (and the file watch) act asynchronously: poll, bounded.
                let until = Instant::now() + Duration::from_secs(5);
                loop {
                    let asked = unix_now();
                    let sent = Instant::now();
                    let upgrade =
                        client::open(sources[0], &self.tls, &Lab::token_from(&old, 8)).await?;
                    match self.admit(sources[0], 8, asked, sent, upgrade).await? {
                        Some(401) => break,
                        // Not reloaded yet: a valid token, granted or refused for slots.
                        Some(101 | 503) if !sighup => {
                            return Err(Mismatch::new(
                                "an old key's token still accepted after POST /v1/reload",
                            ))
                        }
                        Some(101 | 503) if Instant::now() < until => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        got => {
                            return Err(Mismatch::new(format!(
                                "old key after reload: answer {got:?}, want 401\n{}",
                                self.logs()
                            )))
                        }
                    }
                }
            }
            Op::Fault {
                stall,
                on_revoke,
                src,
            } => {
                let spec = format!(
                    "{}:{}",
                    if stall { "stall" } else { "fail" },
                    if on_revoke { 2 } else { 1 }
                );
                self.sigterm().await?;
                self.start(Some(&spec)).await?;
                let got = self.grant(sources[src], 8).await?;
                let want = if on_revoke { 101 } else { 500 };
                if got != Some(want) {
                    return Err(Mismatch::new(format!(
                        "grant with --fault-netlink={spec}: answer {got:?}, want {want}\n{}",
                        self.logs()
                    )));
                }
                if on_revoke {
                    // The revoke fails, the slot stays reserved, the retry closes it.
                    let mut session = self.model.sessions.pop().expect("granted");
                    if let Some(ws) = session.ws.take() {
                        client::close(ws).await;
                    }
                }
            }
        }
        *self.counts.entry(kind(&op)).or_default() += 1;
        Ok(true)
    }

    /// A revoke through the admin API of every model session `which` selects.
    fn revoke_where(
        &mut self,
        path: &str,
        which: impl Fn(&Session) -> bool,
    ) -> Result<(), Mismatch> {
        let now = Instant::now();
        let revoked = self.lab.revoke(path)?;
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

    /// A foreign change by hand: the foreign lines grow by it, and must stay.
    fn foreign(&mut self, script: &str) -> Result<(), Mismatch> {
        self.lab.server_sh(script)?;
        let mut views = Views::default();
        views::read_kernel(self.lab, &mut views);
        let missing: Vec<&String> = self
            .model
            .foreign
            .iter()
            .filter(|l| !views.foreign.contains(l))
            .collect();
        if !missing.is_empty() || views.foreign.len() <= self.model.foreign.len() {
            return Err(Mismatch::new(format!(
                "foreign change {script:?}: lines lost {missing:?} or nothing added"
            )));
        }
        self.model.foreign = views.foreign;
        Ok(())
    }
}
