//! What the kernel holds, read inside the server namespace: iptables-save and
//! ipset save dumps (normalised so two dumps of the same state compare equal),
//! set members with their timeouts, and the grant rules of the rule backend.

use crate::wait::{eventually_async, EVENTUALLY};
use crate::NetPair;

impl NetPair {
    /// `iptables-save` (v4) or `ip6tables-save` (v6) of the server namespace,
    /// normalized: no `#` lines, no `[packets:bytes]` counters.
    pub fn save(&self, v6: bool) -> String {
        let bin = if v6 {
            "/usr/sbin/ip6tables-save"
        } else {
            "/usr/sbin/iptables-save"
        };
        let out = self.server_cmd(&[bin]);
        normalize(&String::from_utf8_lossy(&out.stdout))
    }

    /// Both families' normalized dumps.
    pub fn save_both(&self) -> (String, String) {
        (self.save(false), self.save(true))
    }

    /// `ipset save` of the server namespace, normalized: no random `initval`,
    /// no ticking member timeouts (see [`members_with_timeouts`] for those).
    pub fn ipset_save(&self) -> String {
        normalize_ipset(&self.ipset_save_raw())
    }

    fn ipset_save_raw(&self) -> String {
        let out = self.server_cmd(&["/usr/sbin/ipset", "save"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Both iptables dumps and the ipset dump: everything the envelope may change.
    pub fn save_all(&self) -> (String, String, String) {
        let (v4, v6) = self.save_both();
        (v4, v6, self.ipset_save())
    }

    /// The members of one set (`192.0.2.0/24`, `8080`), without timeouts.
    pub fn members(&self, set: &str) -> Vec<String> {
        self.members_with_timeouts(set)
            .into_iter()
            .map(|(member, _)| member)
            .collect()
    }

    /// The members of one set with their remaining kernel timeout in seconds.
    pub fn members_with_timeouts(&self, set: &str) -> Vec<(String, Option<u64>)> {
        members_in(&self.ipset_save_raw(), set)
    }

    /// Every grant the kernel holds, whichever backend: envelope grant rules from
    /// both iptables dumps, and members of the envelope's grant sets.
    pub fn grant_rules(&self) -> Vec<String> {
        let (v4, v6) = self.save_both();
        let rules = v4
            .lines()
            .chain(v6.lines())
            .filter(|l| l.contains("envelope: grant "))
            .map(str::to_owned);
        let dump = self.ipset_save_raw();
        let members = ["envelope-v4", "envelope-v6"].into_iter().flat_map(|set| {
            members_in(&dump, set)
                .into_iter()
                .map(move |(m, _)| format!("add {set} {m}"))
        });
        rules.chain(members).collect()
    }

    /// Waits ([`EVENTUALLY`]) until `grant_rules` has `count` lines; them.
    /// Each read blocks its worker through `block_in_place`: call it from a
    /// multi-thread runtime.
    pub async fn wait_grant_rules(&self, count: usize) -> Vec<String> {
        let what = format!("{count} grant rules");
        eventually_async(EVENTUALLY, &what, || async {
            let rules = tokio::task::block_in_place(|| self.grant_rules());
            if rules.len() == count {
                Ok(rules)
            } else {
                Err(format!("{rules:#?}"))
            }
        })
        .await
    }
}

/// The members of `set` in an `ipset save` dump, with their timeouts (seconds).
fn members_in(dump: &str, set: &str) -> Vec<(String, Option<u64>)> {
    let prefix = format!("add {set} ");
    dump.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            let member = words.next().unwrap_or_default().to_owned();
            let timeout = words
                .skip_while(|w| *w != "timeout")
                .nth(1)
                .and_then(|t| t.parse().ok());
            (member, timeout)
        })
        .collect()
}

/// Drops the random `initval` of hash sets and the ticking timeouts of members
/// from an `ipset save` dump, so two dumps of the same sets compare equal.
pub fn normalize_ipset(dump: &str) -> String {
    let mut out = String::new();
    for line in dump.lines() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "initval") {
            words.drain(at..(at + 2).min(words.len()));
        }
        if words.first() == Some(&"add") {
            if let Some(at) = words.iter().position(|w| *w == "timeout") {
                words.drain(at..(at + 2).min(words.len()));
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// Drops `#` lines and `[packets:bytes]` counters from an iptables-save dump.
pub fn normalize(dump: &str) -> String {
    let mut out = String::new();
    for line in dump.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(at)) if line.ends_with(']') => &line[..at],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}
