//! Rule text for `iptables-restore --noflush` batches, and parsing of `-S` listings.
//!
//! Layout (filter table, IPv4 and IPv6 alike):
//!
//! ```text
//! INPUT:            -I INPUT 1 -i DEV -m comment --comment "envelope: guard DEV" -j ENVELOPE-INPUT
//! ENVELOPE-INPUT:   established/related → ACCEPT
//!                   icmp (v4) / ipv6-icmp (v6) → ACCEPT
//!                   tcp dport P (each service port) → ACCEPT
//!                   udp dport 53 → ACCEPT
//!                   → ENVELOPE-GRANTS
//!                   tcp → REJECT --reject-with tcp-reset
//!                   → REJECT
//! ENVELOPE-GRANTS:  -s SUBNET → ACCEPT                       (one per granted subnet)
//!                   tcp multiport PROXY-PORTS → ACCEPT       (while the family has ≥ 1 grant)
//! ```
//!
//! Every rule carries a comment starting with `envelope:`. Subnet text comes only
//! from [`Subnet`]'s `Display` (a masked address); the device name is validated.

use std::collections::BTreeSet;

use crate::firewall::{Family, Subnet};

pub const INPUT_CHAIN: &str = "ENVELOPE-INPUT";
pub const GRANTS_CHAIN: &str = "ENVELOPE-GRANTS";
/// Every comment the envelope writes starts with this.
pub const TAG: &str = "envelope:";
/// At most this many ports per `-m multiport` rule.
const MULTIPORT_MAX: usize = 15;

/// The binaries and protocol names of each family, as iptables spells them.
impl Family {
    /// The listing/query binary.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The batch binary.
    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn icmp(self) -> &'static str {
        match self {
            Family::V4 => "icmp",
            Family::V6 => "ipv6-icmp",
        }
    }
}

/// Whether `device` is safe to put into a rule: a Linux interface name
/// (at most 15 characters, no whitespace, `/` or `:`), optionally ending in
/// iptables' `+` wildcard, and never looking like an option.
pub fn valid_device(device: &str) -> bool {
    !device.is_empty()
        && device.len() <= 15
        && !device.starts_with('-')
        && device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | '+'))
}

fn comment(text: &str) -> String {
    format!("-m comment --comment \"{TAG} {text}\"")
}

/// The comment text (without quotes) of a subnet's grant rule.
pub fn grant_comment(subnet: &Subnet) -> String {
    format!("{TAG} grant {subnet}")
}

/// A rule we want in ENVELOPE-GRANTS: its comment (the identity) and its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub comment: String,
    pub spec: String,
}

fn grant_rule(subnet: &Subnet) -> Wanted {
    Wanted {
        comment: grant_comment(subnet),
        spec: format!(
            "-s {subnet} {} -j ACCEPT",
            comment(&format!("grant {subnet}"))
        ),
    }
}

fn proxy_rules(ports: &[u16]) -> Vec<Wanted> {
    ports
        .chunks(MULTIPORT_MAX)
        .map(|chunk| {
            let list = chunk
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let text = format!("proxy ports {list}");
            Wanted {
                comment: format!("{TAG} {text}"),
                spec: format!(
                    "-p tcp -m multiport --dports {list} {} -j ACCEPT",
                    comment(&text)
                ),
            }
        })
        .collect()
}

/// Everything ENVELOPE-GRANTS of one family should hold when `installed` are granted.
pub fn wanted_grants(installed: &BTreeSet<Subnet>, proxy_ports: &[u16]) -> Vec<Wanted> {
    let mut rules: Vec<Wanted> = installed.iter().map(grant_rule).collect();
    if !installed.is_empty() {
        rules.extend(proxy_rules(proxy_ports));
    }
    rules
}

/// One rule from a `-S` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The chain it is appended to.
    pub chain: String,
    /// Its `--comment` value, if any.
    pub comment: Option<String>,
    /// Its `-j`/`-g` target, if any.
    pub target: Option<String>,
    /// The line exactly as listed, minus the leading `-A CHAIN `.
    pub spec: String,
}

/// What `-S` says about the filter table (or one chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Chains declared with `-N`.
    pub chains: BTreeSet<String>,
    pub rules: Vec<Listed>,
}

/// Parses `iptables -S` output.
pub fn parse_listing(text: &str) -> Listing {
    let mut listing = Listing::default();
    for line in text.lines().map(str::trim) {
        if let Some(chain) = line.strip_prefix("-N ") {
            listing.chains.insert(chain.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let Some((chain, spec)) = rest.split_once(' ') else {
                continue;
            };
            let words = split_words(spec);
            let after = |flags: &[&str]| {
                words
                    .windows(2)
                    .find(|w| flags.contains(&w[0].as_str()))
                    .map(|w| w[1].clone())
            };
            listing.rules.push(Listed {
                chain: chain.to_owned(),
                comment: after(&["--comment"]),
                target: after(&["-j", "--jump", "-g", "--goto"]),
                spec: spec.to_owned(),
            });
        }
    }
    listing
}

/// Splits a listed rule into words the way iptables-restore does: whitespace
/// separates, double quotes group, a backslash escapes the next character.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The batch lines that turn `actual` (our rules now in ENVELOPE-GRANTS, as
/// comment + spec) into `wanted`: deletes first, then appends. Rules in the
/// chain without our tag are left alone; duplicates of ours are removed.
pub fn diff(actual: &[(String, String)], wanted: &[Wanted]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for (comment, spec) in actual {
        let is_wanted = wanted.iter().any(|w| &w.comment == comment);
        if is_wanted && kept.insert(comment.as_str()) {
            continue;
        }
        lines.push(format!("-D {GRANTS_CHAIN} {spec}"));
    }
    for w in wanted {
        if !kept.contains(w.comment.as_str()) {
            lines.push(format!("-A {GRANTS_CHAIN} {}", w.spec));
        }
    }
    lines
}

/// Our rules in ENVELOPE-GRANTS according to a listing of that chain.
pub fn ours_in_grants(listing: &Listing) -> Vec<(String, String)> {
    listing
        .rules
        .iter()
        .filter(|r| r.chain == GRANTS_CHAIN)
        .filter_map(|r| {
            let c = r.comment.as_ref()?;
            c.starts_with(TAG).then(|| (c.clone(), r.spec.clone()))
        })
        .collect()
}

/// What we believe is in ENVELOPE-GRANTS, in the same shape as [`ours_in_grants`].
pub fn assumed(wanted: &[Wanted]) -> Vec<(String, String)> {
    wanted
        .iter()
        .map(|w| (w.comment.clone(), w.spec.clone()))
        .collect()
}

/// Lines that remove every jump to our chains (from any other chain) and the
/// chains themselves; empty when nothing of ours is there. Declaring a chain in
/// a `--noflush` batch creates or flushes it, so `-X` then always succeeds.
pub fn removal(listing: &Listing) -> Vec<String> {
    let ours = |name: &str| name == INPUT_CHAIN || name == GRANTS_CHAIN;
    let jumps: Vec<String> = listing
        .rules
        .iter()
        .filter(|r| !ours(&r.chain) && r.target.as_deref().is_some_and(ours))
        .map(|r| format!("-D {} {}", r.chain, r.spec))
        .collect();
    if jumps.is_empty() && !listing.chains.iter().any(|c| ours(c)) {
        return Vec::new();
    }
    let mut lines = declare();
    lines.extend(jumps);
    lines.push(format!("-X {INPUT_CHAIN}"));
    lines.push(format!("-X {GRANTS_CHAIN}"));
    lines
}

fn declare() -> Vec<String> {
    vec![
        format!(":{INPUT_CHAIN} - [0:0]"),
        format!(":{GRANTS_CHAIN} - [0:0]"),
    ]
}

/// Lines that (re)install the guard in one transaction: our chains declared
/// (created, or flushed if a dead instance left them), stale jumps removed,
/// the base rules and the single jump from INPUT.
pub fn install(
    listing: &Listing,
    family: Family,
    device: &str,
    service_ports: &[u16],
) -> Vec<String> {
    let mut lines = declare();
    lines.extend(
        listing
            .rules
            .iter()
            .filter(|r| {
                r.chain != INPUT_CHAIN
                    && r.chain != GRANTS_CHAIN
                    && matches!(r.target.as_deref(), Some(INPUT_CHAIN | GRANTS_CHAIN))
            })
            .map(|r| format!("-D {} {}", r.chain, r.spec)),
    );
    let c = INPUT_CHAIN;
    lines.push(format!(
        "-A {c} -m conntrack --ctstate RELATED,ESTABLISHED {} -j ACCEPT",
        comment("established")
    ));
    lines.push(format!(
        "-A {c} -p {} {} -j ACCEPT",
        family.icmp(),
        comment(family.icmp())
    ));
    for port in service_ports {
        lines.push(format!(
            "-A {c} -p tcp -m tcp --dport {port} {} -j ACCEPT",
            comment(&format!("service port {port}"))
        ));
    }
    lines.push(format!(
        "-A {c} -p udp -m udp --dport 53 {} -j ACCEPT",
        comment("dns")
    ));
    lines.push(format!("-A {c} {} -j {GRANTS_CHAIN}", comment("grants")));
    lines.push(format!(
        "-A {c} -p tcp {} -j REJECT --reject-with tcp-reset",
        comment("reject tcp")
    ));
    lines.push(format!("-A {c} {} -j REJECT", comment("reject")));
    lines.push(format!(
        "-I INPUT 1 -i {device} {} -j {INPUT_CHAIN}",
        comment(&format!("guard {device}"))
    ));
    lines
}

/// The static rules that make ENVELOPE-GRANTS accept members of the envelope's
/// sets: sources in `nets` (one hash:net set per family), and tcp to a port in
/// `ports` (a bitmap:port set whose members exist while the family has a grant).
pub fn set_rules(nets: &str, ports: Option<&str>) -> Vec<String> {
    let mut lines = vec![format!(
        "-A {GRANTS_CHAIN} -m set --match-set {nets} src {} -j ACCEPT",
        comment(&format!("grants in set {nets}"))
    )];
    if let Some(ports) = ports {
        lines.push(format!(
            "-A {GRANTS_CHAIN} -p tcp -m set --match-set {ports} dst {} -j ACCEPT",
            comment(&format!("proxy ports in set {ports}"))
        ));
    }
    lines
}

/// Wraps batch lines into an `iptables-restore` document for the filter table.
pub fn document(lines: &[String]) -> String {
    let mut text = String::from("*filter\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(ip: &str) -> Subnet {
        Subnet::of_client(ip.parse().unwrap())
    }

    #[test]
    fn words_follow_restore_quoting() {
        assert_eq!(
            split_words(
                r#"-s 1.2.3.0/24 -m comment --comment "envelope: grant 1.2.3.0/24" -j ACCEPT"#
            ),
            [
                "-s",
                "1.2.3.0/24",
                "-m",
                "comment",
                "--comment",
                "envelope: grant 1.2.3.0/24",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            split_words(r#"--comment "a \"b\" c""#),
            ["--comment", r#"a "b" c"#]
        );
        assert_eq!(split_words("--comment envelope"), ["--comment", "envelope"]);
    }

    #[test]
    fn listing_finds_chains_comments_and_targets() {
        let text = "-P INPUT ACCEPT\n-N ENVELOPE-GRANTS\n-N ENVELOPE-INPUT\n\
            -A INPUT -i env0 -m comment --comment \"envelope: guard env0\" -j ENVELOPE-INPUT\n\
            -A INPUT -s 203.0.113.9/32 -j DROP\n\
            -A ENVELOPE-GRANTS -s 192.0.2.0/24 -m comment --comment \"envelope: grant 192.0.2.0/24\" -j ACCEPT\n";
        let l = parse_listing(text);
        assert_eq!(l.chains.len(), 2);
        assert_eq!(l.rules.len(), 3);
        assert_eq!(l.rules[0].target.as_deref(), Some(INPUT_CHAIN));
        assert_eq!(l.rules[1].comment, None);
        assert_eq!(
            ours_in_grants(&l),
            [(
                "envelope: grant 192.0.2.0/24".to_owned(),
                "-s 192.0.2.0/24 -m comment --comment \"envelope: grant 192.0.2.0/24\" -j ACCEPT"
                    .to_owned()
            )]
        );
        assert_eq!(
            removal(&l),
            [
                ":ENVELOPE-INPUT - [0:0]",
                ":ENVELOPE-GRANTS - [0:0]",
                "-D INPUT -i env0 -m comment --comment \"envelope: guard env0\" -j ENVELOPE-INPUT",
                "-X ENVELOPE-INPUT",
                "-X ENVELOPE-GRANTS",
            ]
        );
        assert!(removal(&parse_listing("-P INPUT ACCEPT\n-A INPUT -j DROP\n")).is_empty());
    }

    #[test]
    fn first_grant_brings_proxy_ports_and_last_revoke_takes_them() {
        let none = BTreeSet::new();
        let one: BTreeSet<Subnet> = [subnet("192.0.2.7")].into();
        let add = diff(
            &assumed(&wanted_grants(&none, &[80, 443])),
            &wanted_grants(&one, &[80, 443]),
        );
        assert_eq!(
            add,
            [
                "-A ENVELOPE-GRANTS -s 192.0.2.0/24 -m comment --comment \"envelope: grant 192.0.2.0/24\" -j ACCEPT",
                "-A ENVELOPE-GRANTS -p tcp -m multiport --dports 80,443 -m comment --comment \"envelope: proxy ports 80,443\" -j ACCEPT",
            ]
        );
        let del = diff(
            &assumed(&wanted_grants(&one, &[80, 443])),
            &wanted_grants(&none, &[80, 443]),
        );
        assert!(del.iter().all(|l| l.starts_with("-D ENVELOPE-GRANTS ")));
        assert_eq!(del.len(), 2);
        // No proxy ports configured: only the subnet rule.
        assert_eq!(wanted_grants(&one, &[]).len(), 1);
    }

    #[test]
    fn diff_against_a_listing_drops_strays_and_keeps_wanted() {
        let one: BTreeSet<Subnet> = [subnet("2001:db8::5")].into();
        let wanted = wanted_grants(&one, &[]);
        let actual = vec![
            (wanted[0].comment.clone(), "X".to_owned()),
            (wanted[0].comment.clone(), "DUP".to_owned()),
            (
                "envelope: grant 198.51.100.0/24".to_owned(),
                "STRAY".to_owned(),
            ),
        ];
        assert_eq!(
            diff(&actual, &wanted),
            ["-D ENVELOPE-GRANTS DUP", "-D ENVELOPE-GRANTS STRAY"]
        );
        assert_eq!(diff(&[], &wanted).len(), 1);
    }

    #[test]
    fn many_proxy_ports_are_split_for_multiport() {
        let ports: Vec<u16> = (1..=20).collect();
        let one: BTreeSet<Subnet> = [subnet("192.0.2.1")].into();
        assert_eq!(wanted_grants(&one, &ports).len(), 3);
    }

    #[test]
    fn install_has_the_documented_order() {
        let lines = install(&Listing::default(), Family::V6, "env0", &[8443]);
        let joined = lines.join("\n");
        let order = [
            "ctstate",
            "ipv6-icmp",
            "--dport 8443",
            "--dport 53",
            "-j ENVELOPE-GRANTS",
            "tcp-reset",
            "\"envelope: reject\" -j REJECT",
            "-I INPUT 1 -i env0",
        ];
        let mut at = 0;
        for needle in order {
            let found = joined[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} out of order"));
            at += found;
        }
        assert!(lines
            .iter()
            .all(|l| l.starts_with(':') || l.contains("--comment \"envelope: ")));
    }

    #[test]
    fn devices_are_validated() {
        for ok in ["eth0", "env0", "enp0s31f6", "veth+", "br-1.2"] {
            assert!(valid_device(ok), "{ok}");
        }
        for bad in [
            "",
            "-j",
            "eth0 -j ACCEPT",
            "a\nb",
            "x/y",
            "waytoolonginterfacename",
            "a\"b",
        ] {
            assert!(!valid_device(bad), "{bad:?}");
        }
    }
}
