//! The event stream as `/v1/events` reads it: seq and boot, `since`, the
//! filters, a follower that falls behind, and that emitting never waits.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn events(capacity: usize) -> (Events, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Events::new(capacity, metrics.clone()), metrics)
}

fn closed(grant: u64, subnet: &str) -> Event {
    Event::GrantClosed {
        grant,
        peer: "192.0.2.7".parse().unwrap(),
        subnet: subnet.into(),
        reason: "client-closed",
        held_ms: 1500,
    }
}

fn lines(lines: Vec<bytes::Bytes>) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn every_event_has_a_seq_the_boot_and_a_time() {
    let (events, metrics) = events(10);
    events.emit(closed(1, "192.0.2.0/24"));
    events.emit(closed(2, "198.18.7.0/24"));
    let read = lines(events.follow(None, false).unwrap().read().unwrap());
    assert_eq!(read.len(), 2);
    assert_eq!(read[0]["seq"], 1);
    assert_eq!(read[1]["seq"], 2);
    assert_eq!(read[0]["boot"], events.boot());
    assert_eq!(read[0]["type"], "grant.closed");
    assert_eq!(read[0]["reason"], "client-closed");
    let time = read[0]["time"].as_str().unwrap();
    assert!(time.len() > 20 && time.ends_with('Z'), "{time}");
    let text = metrics.encode();
    assert!(
        text.contains(r#"envelope_events_total{type="grant.closed"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("envelope_grant_duration_seconds_count 2"),
        "{text}"
    );
}

#[test]
fn since_reads_after_it_and_one_older_than_the_buffer_is_gone() {
    let (events, _) = events(3);
    for grant in 1..=5 {
        events.emit(closed(grant, "192.0.2.0/24"));
    }
    // Held: 3, 4, 5.
    let read = lines(events.follow(Some(3), false).unwrap().read().unwrap());
    assert_eq!(
        read.iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(
        events.follow(Some(2), false).is_ok(),
        "since 2: 3 on is all held"
    );
    let gone = events.follow(Some(1), false).unwrap_err();
    assert_eq!(
        gone,
        Gone {
            since: 1,
            oldest: 3
        }
    );
    assert_eq!(
        gone.to_string(),
        "the events after 1 are no longer held; the oldest held is 3"
    );
    // Following with no `since` starts at what comes next.
    let mut follower = events.follow(None, true).unwrap();
    assert!(follower.read().unwrap().is_empty());
    events.emit(closed(6, "192.0.2.0/24"));
    assert_eq!(lines(follower.read().unwrap())[0]["seq"], 6);
}

#[test]
fn filters_pick_types_and_subnets_inside_a_cidr() {
    let (events, _) = events(10);
    events.emit(closed(1, "192.0.2.0/24"));
    events.emit(closed(2, "198.18.7.0/24"));
    events.emit(Event::DrainEnded {
        how: "resumed",
        held: 0,
    });
    events.emit(closed(3, "2001:db8:1:2::/64"));
    let by_type = |kinds: &[&str]| {
        let follower = events.follow(Some(0), false).unwrap();
        let kinds = kinds.iter().map(|k| k.to_string()).collect();
        lines(follower.kinds(kinds).read().unwrap()).len()
    };
    assert_eq!(by_type(&["grant.closed"]), 3);
    assert_eq!(by_type(&["drain.ended", "grant.opened"]), 1);
    let within = |cidr: &str| {
        let follower = events.follow(Some(0), false).unwrap();
        let read = follower.within(cidr.parse().unwrap()).read().unwrap();
        lines(read)
            .iter()
            .map(|r| r["grant"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(within("198.18.0.0/15"), [2]);
    assert_eq!(within("198.18.7.0/24"), [2]);
    assert_eq!(
        within("198.18.7.9"),
        Vec::<u64>::new(),
        "a /32 holds no /24"
    );
    assert_eq!(within("2001:db8::/32"), [3]);
    assert!("198.18.7.0/33".parse::<Cidr>().is_err());
    assert!("nonsense".parse::<Cidr>().is_err());
}

#[tokio::test]
async fn a_follower_that_falls_behind_has_lost_the_stream() {
    let (events, _) = events(4);
    let mut slow = events.follow(Some(0), true).unwrap();
    for grant in 1..=10 {
        // Emitting never waits for the reader that reads nothing.
        events.emit(closed(grant, "192.0.2.0/24"));
    }
    let lost = tokio::time::timeout(Duration::from_secs(10), slow.fell_behind())
        .await
        .unwrap();
    assert_eq!(lost, Lost { next: 7 });
    assert_eq!(slow.read().unwrap_err(), lost);
    assert_eq!(&lost.line()[..], b"{\"type\":\"stream.lost\",\"next\":7}\n");
}

#[tokio::test]
async fn batches_take_what_fits_and_a_waiting_batch_still_loses_the_stream() {
    let (events, _) = events(8);
    let mut follower = events
        .follow(Some(0), true)
        .unwrap()
        .within("192.0.2.0/24".parse().unwrap());
    for grant in 1..=5 {
        let subnet = if grant == 2 {
            "198.18.7.0/24"
        } else {
            "192.0.2.0/24"
        };
        events.emit(closed(grant, subnet));
    }
    let line = events.follow(Some(0), false).unwrap().read().unwrap()[0].len();
    let grants = |batch: bytes::Bytes| {
        lines(
            batch
                .split_inclusive(|&b| b == b'\n')
                .map(bytes::Bytes::copy_from_slice)
                .collect(),
        )
        .iter()
        .map(|r| r["grant"].as_u64().unwrap())
        .collect::<Vec<_>>()
    };
    // Two lines fit; grant 2 is another subnet's and skipped on the way.
    let first = follower.read_batch(2 * line).unwrap().unwrap();
    assert_eq!(grants(first), [1, 3]);
    assert_eq!(follower.cursor(), 4);
    // A bound under one line still takes that line, alone.
    assert_eq!(grants(follower.read_batch(1).unwrap().unwrap()), [4]);
    assert_eq!(grants(follower.read_batch(1 << 20).unwrap().unwrap()), [5]);
    assert_eq!(follower.read_batch(1 << 20).unwrap(), None);
    // Whoever waits to send a batch has its cursor right after it: a
    // buffer's worth of events later, it has lost the stream.
    for grant in 6..=14 {
        events.emit(closed(grant, "192.0.2.0/24"));
    }
    let lost = tokio::time::timeout(Duration::from_secs(10), follower.fell_behind())
        .await
        .unwrap();
    assert_eq!(lost, Lost { next: 7 });
    assert_eq!(follower.read_batch(1 << 20).unwrap_err(), lost);
}

#[tokio::test]
async fn a_follower_wakes_when_an_event_arrives() {
    let (events, _) = events(4);
    let mut follower = events.follow(None, true).unwrap();
    let emitter = events.clone();
    tokio::spawn(async move { emitter.emit(closed(1, "192.0.2.0/24")) });
    tokio::time::timeout(Duration::from_secs(10), follower.arrived())
        .await
        .unwrap();
    assert_eq!(follower.read().unwrap().len(), 1);
}

#[test]
fn token_facts_are_bounded_and_escaped() {
    let long = "k".repeat(500);
    let facts = TokenFacts::new(Some(&long), Some("jti\u{202e}x"), None);
    assert_eq!(facts.kid.unwrap().len(), MAX_TOKEN_TEXT);
    assert_eq!(facts.jti.as_deref(), Some("jti\\u{202e}x"));
    let json = serde_json::to_string(&TokenFacts::default()).unwrap();
    assert_eq!(json, "{}", "absent facts are left out");
}
