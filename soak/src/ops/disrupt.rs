//! The operations that disturb the envelope from outside, as the soak's
//! second half of [`Driver`]: restarts after SIGTERM and SIGKILL, members and
//! rules (with `--backend nftables`, elements, rules and the whole table)
//! deleted by hand, foreign rules, sets and nft tables, key rotation, and
//! injected netlink faults. Each returns `Ok(false)` when it does not apply
//! (skipped).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Driver, Mismatch};
use crate::client;
use crate::lab::Backend;
use crate::model::{family, Phase};
use crate::views::{self, Views};

impl Driver<'_> {
    pub(super) async fn restart_after_sigterm(&mut self) -> Result<bool, Mismatch> {
        self.sigterm().await?;
        self.check().await?;
        self.start(None).await?;
        Ok(true)
    }

    pub(super) async fn restart_after_sigkill(&mut self) -> Result<bool, Mismatch> {
        self.sigkill().await?;
        self.check().await?;
        self.start(None).await?;
        Ok(true)
    }

    pub(super) async fn down_after_sigkill(&mut self, ms: u64) -> Result<bool, Mismatch> {
        self.sigkill().await?;
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            self.check().await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.start(None).await?;
        Ok(true)
    }

    pub(super) fn tamper_member(&mut self, pick: usize) -> Result<bool, Mismatch> {
        let nft = self.lab.backend == Backend::Nftables;
        if nft && pick % 8 == 7 {
            return self.tamper_table();
        }
        let Some(i) = self.pick(pick, true) else {
            return Ok(false);
        };
        let subnet = self.model.sessions[i].subnet.clone();
        if self.model.tampered.contains_key(&subnet) || self.model.table_cut {
            return Ok(false);
        }
        let v6 = family(&subnet) == 1;
        let script = match (nft, v6) {
            (false, false) => format!("ipset del envelope-v4 {subnet}"),
            (false, true) => format!("ipset del envelope-v6 {subnet}"),
            (true, false) => format!("nft delete element inet envelope grants-v4 '{{ {subnet} }}'"),
            (true, true) => format!("nft delete element inet envelope grants-v6 '{{ {subnet} }}'"),
        };
        self.lab.server_sh(&script)?;
        let latest = self.model.latest(&subnet).expect("a session holds it");
        self.model.tampered.insert(subnet, latest);
        Ok(true)
    }

    /// `nft delete table inet envelope`: the device is unguarded, and stays so
    /// until the next start (the envelope does not repair its table).
    fn tamper_table(&mut self) -> Result<bool, Mismatch> {
        if self.model.table_cut || self.model.phase != Phase::Up {
            return Ok(false);
        }
        self.lab.server_sh("nft delete table inet envelope")?;
        self.model.table_cut = true;
        Ok(true)
    }

    pub(super) fn tamper_rule(&mut self, v6: bool) -> Result<bool, Mismatch> {
        let fam = usize::from(v6);
        if self.model.rule_cut[fam].is_some() || self.model.table_cut {
            return Ok(false);
        }
        if self.lab.backend == Backend::Nftables {
            return self.tamper_nft_rule(v6);
        }
        let set = if v6 { "envelope-v6" } else { "envelope-v4" };
        let prefix = if v6 { "6 " } else { "4 " };
        let Some(line) = self
            .model
            .static_lines
            .iter()
            .find(|l| l.starts_with(prefix) && l.contains(&format!("--match-set {set} src")))
            .cloned()
        else {
            return Err(Mismatch::new(format!("no set rule for {set} to delete")));
        };
        let rule = line[2..].strip_prefix("-A ").unwrap_or(&line[2..]);
        let bin = if v6 { "ip6tables" } else { "iptables" };
        self.lab.server_sh(&format!("{bin} -w -D {rule}"))?;
        self.model.rule_cut[fam] = Some(line);
        Ok(true)
    }

    /// The guard rule that matches the family's grants set, deleted by handle.
    fn tamper_nft_rule(&mut self, v6: bool) -> Result<bool, Mismatch> {
        let set = if v6 { "@grants-v6" } else { "@grants-v4" };
        let Some(line) = self
            .model
            .static_lines
            .iter()
            .find(|l| l.starts_with("n {\"rule\"") && l.contains(&format!("\"{set}\"")))
            .cloned()
        else {
            return Err(Mismatch::new(format!("no rule matching {set} to delete")));
        };
        self.lab.server_sh(&format!(
            "handle=$(nft -a list chain inet envelope guard | grep ' {set} accept' | \
             sed 's/.*# handle //') && nft delete rule inet envelope guard handle $handle"
        ))?;
        self.model.rule_cut[usize::from(v6)] = Some(line);
        Ok(true)
    }

    pub(super) fn foreign_rule(&mut self, v6: bool) -> Result<bool, Mismatch> {
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
        Ok(true)
    }

    pub(super) fn foreign_set(&mut self) -> Result<bool, Mismatch> {
        self.foreign_count += 1;
        let k = self.foreign_count;
        let ip = format!("203.0.113.{}", k % 250 + 1);
        self.foreign(&match self.lab.backend {
            Backend::Iptables => {
                format!("ipset create foreign-{k} hash:ip && ipset add foreign-{k} {ip}")
            }
            // A table of someone else's, with a set, an element and a base chain.
            Backend::Nftables => format!(
                "nft add table inet foreign-{k} && \
                 nft add set inet foreign-{k} s '{{ type ipv4_addr; }}' && \
                 nft add element inet foreign-{k} s '{{ {ip} }}' && \
                 nft add chain inet foreign-{k} c '{{ type filter hook input priority 10; }}'"
            ),
        })?;
        Ok(true)
    }

    pub(super) async fn fault(
        &mut self,
        stall: bool,
        on_revoke: bool,
        src: usize,
    ) -> Result<bool, Mismatch> {
        let spec = format!(
            "{}:{}",
            if stall { "stall" } else { "fail" },
            if on_revoke { 2 } else { 1 }
        );
        self.sigterm().await?;
        self.start(Some(&spec)).await?;
        let got = self.grant(self.lab.sources[src], 8).await?;
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
        Ok(true)
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
