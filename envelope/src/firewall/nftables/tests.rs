//! The plan of a change (which requests one transaction carries) and the
//! reading of a listed set, without a kernel: the namespace tests in
//! `envelope/tests/integration/nftables_netns.rs` check the kernel's side.

use super::*;

fn config(proxy_ports: &[u16]) -> NftablesConfig {
    NftablesConfig {
        device: "env0".into(),
        service_ports: vec![8443],
        proxy_ports: proxy_ports.to_vec(),
        kernel_margin: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        fault_netlink: None,
    }
}

fn subnet(ip: &str) -> Subnet {
    Subnet::of_client(ip.parse().unwrap())
}

fn edits(list: &[(&str, Option<Instant>)]) -> PerFamily<BTreeMap<Subnet, Option<Instant>>> {
    let mut out = PerFamily::<BTreeMap<_, _>>::default();
    for (ip, until) in list {
        let s = subnet(ip);
        out.family(Family::of(&s)).insert(s, *until);
    }
    out
}

fn whats(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(Request::what).collect()
}

#[test]
fn the_first_grant_carries_the_proxy_ports_and_its_inverse_removes_both() {
    let now = Instant::now();
    let config = config(&[80, 443]);
    let plan = config.plan(
        &SetState::default(),
        &edits(&[("192.0.2.7", Some(now + Duration::from_secs(60)))]),
        now,
    );
    assert_eq!(
        whats(&plan.forward),
        [
            "add 192.0.2.0/24 to grants-v4",
            "add port 80, port 443 to proxy-v4"
        ]
    );
    // A grant's adds must go in: a missing set fails it.
    assert!(!plan.forward.iter().any(Request::gone_ok));
    assert_eq!(
        whats(&plan.inverse),
        [
            "delete 192.0.2.0/24 from grants-v4",
            "delete port 80 from proxy-v4",
            "delete port 443 from proxy-v4"
        ]
    );
    assert_eq!(plan.ports_until.v4, Some(now + Duration::from_secs(60)));
    assert_eq!(plan.ports_until.v6, None);
}

#[test]
fn a_later_deadline_is_a_delete_and_re_add_and_so_is_the_ports_refresh() {
    let now = Instant::now();
    let config = config(&[80]);
    let early = now + Duration::from_secs(30);
    let late = now + Duration::from_secs(300);
    let mut state = SetState::default();
    state.v4.members.insert(subnet("192.0.2.1"), early);
    state.v4.ports_until = Some(early);
    let plan = config.plan(&state, &edits(&[("192.0.2.1", Some(late))]), now);
    let refresh = [
        "delete 192.0.2.0/24 from grants-v4",
        "re-add 192.0.2.0/24 to grants-v4",
        "delete port 80 from proxy-v4",
        "re-add port 80 to proxy-v4",
    ];
    assert_eq!(whats(&plan.forward), refresh);
    // Deletes and re-adds may find their element (or its set) gone already.
    assert!(plan.forward.iter().all(Request::gone_ok));
    // The inverse re-adds the old deadline.
    assert_eq!(whats(&plan.inverse), refresh);
}

#[test]
fn the_last_revoke_takes_the_ports_and_another_family_is_untouched() {
    let now = Instant::now();
    let config = config(&[80]);
    let until = now + Duration::from_secs(30);
    let mut state = SetState::default();
    state.v4.members.insert(subnet("192.0.2.1"), until);
    state.v4.members.insert(subnet("198.18.0.1"), until);
    state.v4.ports_until = Some(until);
    state.v6.members.insert(subnet("2001:db8::1"), until);
    state.v6.ports_until = Some(until);
    // One of two v4 grants goes: the ports stay.
    let plan = config.plan(&state, &edits(&[("192.0.2.1", None)]), now);
    assert_eq!(whats(&plan.forward), ["delete 192.0.2.0/24 from grants-v4"]);
    // The last v4 grant goes: so do its ports, in the same transaction.
    state.v4.members.remove(&subnet("192.0.2.1"));
    let plan = config.plan(&state, &edits(&[("198.18.0.1", None)]), now);
    assert_eq!(
        whats(&plan.forward),
        [
            "delete 198.18.0.0/24 from grants-v4",
            "delete port 80 from proxy-v4"
        ]
    );
    assert_eq!(plan.ports_until.v6, Some(until));
}

#[test]
fn without_proxy_ports_and_without_a_change_nothing_is_sent() {
    let now = Instant::now();
    let until = now + Duration::from_secs(30);
    let mut state = SetState::default();
    state.v6.members.insert(subnet("2001:db8::1"), until);
    let same = config(&[]).plan(&state, &edits(&[("2001:db8::9", Some(until))]), now);
    assert!(same.forward.is_empty(), "{:?}", whats(&same.forward));
    let unknown = config(&[80]).plan(&SetState::default(), &edits(&[("192.0.2.1", None)]), now);
    assert!(unknown.forward.is_empty());
}

#[test]
fn timeouts_are_the_deadline_plus_the_margin_in_whole_seconds() {
    let now = Instant::now();
    let config = config(&[]);
    assert_eq!(
        config.timeout(now + Duration::from_millis(60_200), now),
        Duration::from_secs(66)
    );
    // A deadline already past still gets the margin; never less than 1 s.
    assert_eq!(
        config.timeout(now, now + Duration::from_secs(9)),
        Duration::from_secs(5)
    );
    let no_margin = NftablesConfig {
        kernel_margin: Duration::ZERO,
        ..config
    };
    assert_eq!(no_margin.timeout(now, now), Duration::from_secs(1));
}

fn listed(key: &[u8], end: bool, expiration_ms: Option<u64>) -> reply::Listed {
    reply::Listed {
        key: key.to_vec(),
        interval_end: end,
        expiration_ms,
        timeout_ms: None,
    }
}

#[test]
fn listed_intervals_map_back_to_grant_subnets_only() {
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let elements = [
        // 192.0.2.0/24 and the adjacent 192.0.3.0/24 share a boundary key.
        listed(&[192, 0, 4, 0], true, None),
        listed(&[192, 0, 3, 0], false, Some(7_000)),
        listed(&[192, 0, 3, 0], true, None),
        listed(&[192, 0, 2, 0], false, Some(65_500)),
        // A /23 added by hand is no grant of ours.
        listed(&[198, 18, 0, 0], false, Some(1_000)),
        listed(&[198, 18, 2, 0], true, None),
        // The last /24 has no end element.
        listed(&[255, 255, 255, 0], false, Some(3_000)),
        listed(&v6("2001:db8:1:2::"), false, Some(9_000)),
        listed(&v6("2001:db8:1:3::"), true, None),
        listed(&[1, 2, 3], false, Some(1)),
    ];
    let got = granted_subnets(&elements);
    let want: BTreeMap<Subnet, Duration> = [
        (subnet("192.0.2.1"), Duration::from_millis(65_500)),
        (subnet("192.0.3.1"), Duration::from_millis(7_000)),
        (subnet("255.255.255.1"), Duration::from_millis(3_000)),
        (subnet("2001:db8:1:2::5"), Duration::from_millis(9_000)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}
