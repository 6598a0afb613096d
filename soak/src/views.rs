//! The three views the soak checks after every step — the admin API's grants,
//! the kernel (`ipset save`, `iptables-save`, `ip6tables-save`, and `nft list
//! ruleset` with `--backend nftables`) and packets (a TCP connect from each
//! source) — read now and compared with the model, with bounded polling
//! because the envelope acts asynchronously.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use common::admin::Grant;
use testbed::Wait;
use tokio::time::Instant;

use crate::client::{probe, PROBE_PORTS};
use crate::lab::{Backend, Lab, PROXY_PORT, SERVICE_PORT};
use crate::model::{family, subnet_of, Model, Phase};

/// Longest the envelope may take to settle after a step (a failed revoke is
/// retried after 0.5 s; a stalled exchange waits out a 5 s timeout first).
pub const SETTLE: Duration = Duration::from_secs(9);

/// What was read.
#[derive(Debug, Default)]
pub struct Views {
    pub grants: Option<Vec<Grant>>,
    /// Set → member → seconds left.
    pub members: BTreeMap<String, BTreeMap<String, Option<u64>>>,
    /// The envelope's static lines: chains, rules, set headers (dump order).
    pub static_lines: Vec<String>,
    /// Every other line of the three dumps (dump order).
    pub foreign: Vec<String>,
    /// (source, port) → accepted?
    pub reach: BTreeMap<(IpAddr, u16), Option<bool>>,
}

impl Views {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  admin API grants:");
        match &self.grants {
            None => {
                let _ = writeln!(out, "    (no envelope answering)");
            }
            Some(grants) => {
                for g in grants {
                    let _ = writeln!(
                        out,
                        "    id={} ip={} subnet={} deadline={} kernel_remaining={:?}",
                        g.id, g.ip, g.subnet, g.deadline, g.kernel_remaining_seconds
                    );
                }
            }
        }
        let _ = writeln!(out, "  kernel set members:");
        for (set, members) in &self.members {
            let _ = writeln!(out, "    {set}: {members:?}");
        }
        let _ = writeln!(out, "  kernel static lines:");
        for line in &self.static_lines {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "  reachability (accepted):");
        for ((source, port), ok) in &self.reach {
            let _ = writeln!(out, "    {source} -> :{port} {ok:?}");
        }
        out
    }
}

/// Whether a dump line is the envelope's.
fn is_envelope(line: &str) -> bool {
    line.contains("ENVELOPE") || line.contains("envelope")
}

/// Reads the kernel: members (with timeouts), static lines, foreign lines.
pub fn read_kernel(lab: &Lab, views: &mut Views) {
    let (v4, v6) = lab.ns.save_both();
    let sets = lab.ipset_save();
    let mut static_lines = Vec::new();
    let mut foreign = Vec::new();
    for line in v4
        .lines()
        .map(|l| format!("4 {l}"))
        .chain(v6.lines().map(|l| format!("6 {l}")))
    {
        if is_envelope(&line) {
            static_lines.push(line);
        } else {
            foreign.push(line);
        }
    }
    for line in testbed::normalize_ipset(&sets).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"add") && words.get(1).is_some_and(|s| s.starts_with("envelope"))
        {
            continue;
        }
        let line = format!("s {line}");
        if is_envelope(&line) {
            static_lines.push(line);
        } else {
            foreign.push(line);
        }
    }
    for line in sets.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 3 && words[0] == "add" && words[1].starts_with("envelope") {
            let timeout = words
                .iter()
                .position(|w| *w == "timeout")
                .and_then(|at| words.get(at + 1)?.parse().ok());
            views
                .members
                .entry(words[1].to_owned())
                .or_default()
                .insert(words[2].to_owned(), timeout);
        }
    }
    if lab.backend == Backend::Nftables {
        read_nft(lab, views, &mut static_lines, &mut foreign);
    }
    // Dump order is kept: a rule in the wrong place is a different firewall.
    views.static_lines = static_lines;
    views.foreign = foreign;
}

/// The nftables backend's side of the kernel, from `nft -j -s list ruleset`:
/// the elements of `inet envelope`'s sets as members (under the ipset names
/// the model uses: `grants-v4` is read as `envelope-v4`, `proxy-v4` as
/// `envelope-proxy-v4`), every other object of that table a static line, every
/// object of another table a foreign line. Handles are left out: they number
/// objects, they are not policy.
fn read_nft(
    lab: &Lab,
    views: &mut Views,
    static_lines: &mut Vec<String>,
    foreign: &mut Vec<String>,
) {
    for mut object in lab.nft_objects() {
        let Some((kind, body)) = object.as_object_mut().and_then(|o| o.iter_mut().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let kind = kind.clone();
        let Some(body) = body.as_object_mut() else {
            continue;
        };
        body.remove("handle");
        let ours = body["family"] == "inet"
            && (body.get("table").is_some_and(|t| t == "envelope")
                || (kind == "table" && body["name"] == "envelope"));
        if ours && kind == "set" {
            let name = match body["name"].as_str().unwrap_or_default() {
                "grants-v4" => "envelope-v4",
                "grants-v6" => "envelope-v6",
                "proxy-v4" => "envelope-proxy-v4",
                "proxy-v6" => "envelope-proxy-v6",
                other => other,
            }
            .to_owned();
            let elements = body.remove("elem").unwrap_or_default();
            for element in elements.as_array().into_iter().flatten() {
                let element = &element["elem"];
                let value = &element["val"];
                let text = match value["prefix"].as_object() {
                    Some(p) => format!("{}/{}", p["addr"].as_str().unwrap_or_default(), p["len"]),
                    None => value.to_string(),
                };
                views
                    .members
                    .entry(name.clone())
                    .or_default()
                    .insert(text, element["expires"].as_u64());
            }
        }
        let line = format!("n {object}");
        if ours {
            static_lines.push(line);
        } else {
            foreign.push(line);
        }
    }
}

/// Reads everything.
pub async fn read(lab: &Lab, model: &Model) -> Views {
    let mut views = Views::default();
    if model.phase == Phase::Up {
        views.grants = lab.grants().await.ok();
    }
    read_kernel(lab, &mut views);
    let first_v4 = lab.sources.iter().find(|s| s.is_ipv4()).copied();
    let first_v6 = lab.sources.iter().find(|s| s.is_ipv6()).copied();
    for &source in &lab.sources {
        for port in PROBE_PORTS {
            // The proxy port is not per source: probe it from one per family.
            if port == PROXY_PORT && Some(source) != first_v4 && Some(source) != first_v6 {
                continue;
            }
            let outcome = probe(source, port).unwrap_or(None);
            views.reach.insert((source, port), outcome);
        }
    }
    views
}

/// Every disagreement between the views and the model at `now`.
pub fn compare(model: &Model, views: &Views, now: Instant) -> Vec<String> {
    let mut bad = Vec::new();
    // Admin API.
    if model.phase == Phase::Up {
        match &views.grants {
            None => bad.push("admin API: no answer".into()),
            Some(grants) => {
                for s in &model.sessions {
                    let state = model.session_state(s, now);
                    let listed = grants.iter().find(|g| g.id == s.id);
                    if !state.allows(listed.is_some()) {
                        bad.push(format!(
                            "admin API: grant {} from {} is {} but the model says {state:?}",
                            s.id,
                            s.source,
                            if listed.is_some() {
                                "listed"
                            } else {
                                "missing"
                            }
                        ));
                    }
                    if let Some(g) = listed {
                        if g.ip != s.source || g.subnet != s.subnet {
                            bad.push(format!(
                                "admin API: grant {} shows {} {} for source {} ({})",
                                g.id, g.ip, g.subnet, s.source, s.subnet
                            ));
                        }
                        if let (Some(want), Some(got)) = (
                            model.kernel_remaining(&s.subnet, now),
                            g.kernel_remaining_seconds,
                        ) {
                            if (got as f64 - want).abs() > 1.6 {
                                bad.push(format!(
                                    "admin API: grant {} kernel_remaining_seconds {got}, model {want:.1}",
                                    g.id
                                ));
                            }
                        }
                        if g.kernel_remaining_seconds.is_none() {
                            bad.push(format!("admin API: grant {} has no kernel time", g.id));
                        }
                    }
                }
                for g in grants {
                    if !model.sessions.iter().any(|s| s.id == g.id) {
                        bad.push(format!(
                            "admin API: grant {} from {} is not in the model",
                            g.id, g.ip
                        ));
                    }
                }
            }
        }
    }
    // Kernel: members of the net sets.
    let mut subnets: Vec<String> = model.sessions.iter().map(|s| s.subnet.clone()).collect();
    subnets.extend(model.orphans.keys().cloned());
    for set in ["envelope-v4", "envelope-v6"] {
        if let Some(members) = views.members.get(set) {
            subnets.extend(members.keys().cloned());
        }
    }
    subnets.sort();
    subnets.dedup();
    for subnet in &subnets {
        let set = if family(subnet) == 0 {
            "envelope-v4"
        } else {
            "envelope-v6"
        };
        let member = views.members.get(set).and_then(|m| m.get(subnet));
        let want = model.member(subnet, now);
        if !want.allows(member.is_some()) {
            bad.push(format!(
                "kernel: {set} member {subnet} is {} but the model says {want:?}",
                if member.is_some() {
                    "present"
                } else {
                    "absent"
                }
            ));
        }
        if let (Some(Some(got)), Some(want)) = (member, model.member_timeout(subnet, now)) {
            if (*got as f64 - want).abs() > 1.6 {
                bad.push(format!(
                    "kernel: {set} member {subnet} timeout {got}s, model {want:.1}s (deadline + margin)"
                ));
            }
        }
    }
    for (fam, set) in ["envelope-proxy-v4", "envelope-proxy-v6"]
        .iter()
        .enumerate()
    {
        let present = views
            .members
            .get(*set)
            .is_some_and(|m| m.contains_key(&PROXY_PORT.to_string()));
        let want = model.ports(fam, now);
        if !want.allows(present) {
            bad.push(format!(
                "kernel: {set} port {PROXY_PORT} is {} but the model says {want:?}",
                if present { "present" } else { "absent" }
            ));
        }
    }
    // Kernel: static lines and foreign lines.
    let want_static = model.expected_static();
    if views.static_lines != want_static {
        bad.push(format!(
            "kernel: envelope static lines differ:\n{}",
            diff(&want_static, &views.static_lines)
        ));
    }
    if views.foreign != model.foreign {
        bad.push(format!(
            "kernel: foreign rules or sets changed:\n{}",
            diff(&model.foreign, &views.foreign)
        ));
    }
    // Packets.
    for (&(source, port), &got) in &views.reach {
        let want = if port == SERVICE_PORT {
            model.service_reach(source, now)
        } else {
            model.proxy_reach(usize::from(source.is_ipv6()), now)
        };
        match got {
            None => bad.push(format!(
                "packets: {source} -> :{port} neither accepted nor refused"
            )),
            Some(ok) if !want.allows(ok) => bad.push(format!(
                "packets: {source} ({}) -> :{port} {} but the model says {want:?}",
                subnet_of(source),
                if ok { "accepted" } else { "refused" }
            )),
            _ => {}
        }
    }
    bad
}

fn diff(want: &[String], got: &[String]) -> String {
    let mut out = String::new();
    for line in want.iter().filter(|l| !got.contains(l)) {
        let _ = writeln!(out, "    - {line}");
    }
    for line in got.iter().filter(|l| !want.contains(l)) {
        let _ = writeln!(out, "    + {line}");
    }
    out
}

/// Polls (bounded by [`SETTLE`]) until the views agree with the model; the
/// disagreements and views of the last read otherwise.
pub async fn settle(lab: &Lab, model: &mut Model) -> Result<(), (Vec<String>, Views)> {
    let wait = Wait::new(SETTLE, "the views to settle").every(Duration::from_millis(50));
    loop {
        let now = Instant::now();
        model.prune(now);
        let views = read(lab, model).await;
        let bad = compare(model, &views, now);
        if bad.is_empty() {
            return Ok(());
        }
        if wait.pause_async().await.is_err() {
            return Err((bad, views));
        }
    }
}
