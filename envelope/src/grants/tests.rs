//! The owner as the rest of the daemon meets it, through [`Grants`] and [`Lease`],
//! against an in-memory firewall that records changes and fails on demand.
//! Paused clock: deadlines and retry backoff without real waits.

use std::sync::Mutex;

use super::*;
use crate::firewall::{Change, FwFuture, Opening};
use crate::lifecycle::Lifecycle;

/// Records every change; fails grants of subnets in `fail_grants` and
/// revokes while `fail_revokes` is set. Each apply takes `delay`.
#[derive(Debug, Default)]
struct FakeFirewall {
    changes: Mutex<Vec<Change>>,
    fail_grants: Mutex<Vec<Subnet>>,
    fail_revokes: Mutex<bool>,
    delay: Duration,
    entered: tokio::sync::Notify,
}

impl Firewall for FakeFirewall {
    fn backend(&self) -> String {
        "fake".into()
    }
    fn setup(&self) -> FwFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn apply<'a>(&'a self, change: &'a Change) -> FwFuture<'a, ()> {
        Box::pin(async move {
            self.entered.notify_one();
            tokio::time::sleep(self.delay).await;
            let bad_grant = change
                .granted()
                .chain(change.refresh.iter().map(|o| o.subnet))
                .any(|s| self.fail_grants.lock().unwrap().contains(&s));
            let bad_revoke = !change.revoke.is_empty() && *self.fail_revokes.lock().unwrap();
            if bad_grant {
                return Err(FirewallError::Failed {
                    operation: "fake".into(),
                    message: "injected".into(),
                });
            }
            if bad_revoke {
                let subnets: Vec<String> = change.revoke.iter().map(ToString::to_string).collect();
                return Err(FirewallError::Failed {
                    operation: "fake".into(),
                    message: format!("cannot delete {}", subnets.join(",")),
                });
            }
            self.changes.lock().unwrap().push(change.clone());
            Ok(())
        })
    }
    fn teardown(&self) -> FwFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

fn request(ip: &str, hold: Duration) -> GrantRequest {
    GrantRequest {
        peer: ip.parse().unwrap(),
        subject: "ndt".into(),
        monitoring: false,
        deadline: Instant::now() + hold,
    }
}

fn subnet(ip: &str) -> Subnet {
    Subnet::of_client(ip.parse().unwrap())
}

fn spawn(firewall: &Arc<FakeFirewall>, max: usize) -> Grants {
    let metrics = Arc::new(Metrics::new());
    let events = crate::events::Events::new(64, metrics.clone());
    Grants::spawn(
        firewall.clone(),
        max,
        metrics.clone(),
        Lifecycle::new(metrics),
        events,
    )
    .0
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn concurrent_grants_share_one_transaction() {
    let firewall = Arc::new(FakeFirewall {
        delay: Duration::from_millis(20),
        ..FakeFirewall::default()
    });
    let grants = spawn(&firewall, 10);
    // The first grant occupies the firewall; the next three queue up behind it.
    let owner = grants.clone();
    let first = tokio::spawn(async move { owner.acquire(request("198.18.1.2", LONG)).await });
    firewall.entered.notified().await;
    let rest = futures_util::future::join_all(
        ["198.18.2.2", "198.18.3.2", "198.18.4.2"].map(|ip| grants.acquire(request(ip, LONG))),
    )
    .await;
    let first = first.await.unwrap();
    assert!(first.is_ok() && rest.iter().all(Result::is_ok));
    let changes = firewall.changes.lock().unwrap().clone();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1].grant.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_shared_subnet_follows_its_latest_session_deadline() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 10);
    let short = request("198.18.5.2", Duration::from_secs(60));
    let long = request("198.18.5.3", Duration::from_secs(120));
    let (short_until, long_until) = (short.deadline, long.deadline);
    let first = grants.acquire(short).await.unwrap();
    let second = grants.acquire(long).await.unwrap();
    // A list is answered after the releases before it are committed.
    drop(second);
    grants.list().await;
    drop(first);
    grants.list().await;
    let changes = firewall.changes.lock().unwrap().clone();
    let net = subnet("198.18.5.2");
    let opened = Opening {
        subnet: net,
        until: short_until,
    };
    let longer = Opening {
        subnet: net,
        until: long_until,
    };
    assert_eq!(changes[0].grant, [opened]);
    assert_eq!(
        changes[1].refresh,
        [longer],
        "the later session extends the kernel's timeout"
    );
    assert_eq!(
        changes[2].refresh,
        [opened],
        "closing it brings the timeout back"
    );
    assert!(
        changes[2].revoke.is_empty(),
        "closing one must not cut the other"
    );
    assert_eq!(changes[3].revoke, [net]);
    assert_eq!(changes.len(), 4, "{changes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_fails_only_the_newcomer() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 10);
    let first = grants
        .acquire(request("198.18.6.2", Duration::from_secs(60)))
        .await
        .unwrap();
    firewall
        .fail_grants
        .lock()
        .unwrap()
        .push(subnet("198.18.6.2"));
    let second = grants
        .acquire(request("198.18.6.3", Duration::from_secs(120)))
        .await;
    let Err(AcquireError::Firewall {
        subnet: failed,
        source,
    }) = &second
    else {
        panic!("{second:?}");
    };
    assert_eq!(*failed, subnet("198.18.6.3"));
    assert_eq!(
        source.to_string(),
        "fake failed: injected",
        "the cause is kept"
    );
    let (live, _) = grants.list().await;
    assert_eq!(live.iter().map(|g| g.id).collect::<Vec<_>>(), [first.id()]);
    let changes = firewall.changes.lock().unwrap().clone();
    assert!(changes.iter().all(|c| c.revoke.is_empty()), "{changes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_bad_subnet_in_a_shared_transaction_fails_alone() {
    let firewall = Arc::new(FakeFirewall::default());
    firewall
        .fail_grants
        .lock()
        .unwrap()
        .push(subnet("198.18.9.2"));
    let grants = spawn(&firewall, 10);
    let (good, bad) = tokio::join!(
        grants.acquire(request("198.18.8.2", LONG)),
        grants.acquire(request("198.18.9.2", LONG))
    );
    assert!(good.is_ok());
    assert!(matches!(bad, Err(AcquireError::Firewall { .. })), "{bad:?}");
    let (list, occupancy) = grants.list().await;
    assert_eq!(list.len(), 1, "the failed grant's slot is free again");
    assert_eq!(occupancy.stuck_revokes, 0);
}

#[tokio::test(start_paused = true)]
async fn one_subnet_two_sessions_one_rule() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 10);
    let a = grants.acquire(request("192.0.2.1", LONG)).await.unwrap();
    let b = grants.acquire(request("192.0.2.2", LONG)).await.unwrap();
    drop(a);
    assert_eq!(grants.list().await.0.len(), 1);
    let changes = firewall.changes.lock().unwrap().clone();
    assert_eq!(changes[0].grant.len(), 1);
    assert!(
        changes
            .iter()
            .all(|c| c.revoke.is_empty() && c.grant.len() <= 1),
        "no revoke while b holds it, and only one opening: {changes:?}"
    );
    drop(b);
    assert!(grants.list().await.0.is_empty());
    let changes = firewall.changes.lock().unwrap().clone();
    assert_eq!(changes.last().unwrap().revoke, vec![subnet("192.0.2.1")]);
}

#[tokio::test(start_paused = true)]
async fn max_clients_is_never_exceeded() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 3);
    let all = futures_util::future::join_all(
        (1..=10).map(|k| grants.acquire(request(&format!("198.18.{k}.2"), LONG))),
    )
    .await;
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 3);
    assert_eq!(
        all.iter()
            .filter(|r| matches!(r, Err(AcquireError::Full { max: 3, .. })))
            .count(),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_revoke_keeps_its_slot_until_a_retry_succeeds() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 1);
    let lease = grants.acquire(request("192.0.2.9", LONG)).await.unwrap();
    *firewall.fail_revokes.lock().unwrap() = true;
    drop(lease);
    let (_, occupancy) = grants.list().await;
    assert_eq!(occupancy.stuck_revokes, 1);
    assert!(matches!(
        grants.acquire(request("198.18.1.2", LONG)).await,
        Err(AcquireError::Full { max: 1, .. })
    ));
    *firewall.fail_revokes.lock().unwrap() = false;
    // The first retry comes after 500 ms (paused clock: no real wait).
    let failed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(499)).await;
    assert_eq!(grants.list().await.1.stuck_revokes, 1, "retried too early");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        grants.list().await.1.stuck_revokes,
        0,
        "the retry never came"
    );
    assert!(failed_at.elapsed() < Duration::from_secs(1));
    assert!(grants.acquire(request("198.18.1.2", LONG)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_owner_ends_a_session_at_its_deadline_and_revokes_it() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 1);
    let mut lease = grants
        .acquire(request("192.0.2.9", Duration::from_secs(30)))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(lease.ended().await, EndReason::Deadline);
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(grants.list().await.0.is_empty());
    assert_eq!(
        firewall.changes.lock().unwrap().last().unwrap().revoke,
        vec![subnet("192.0.2.9")]
    );
}

#[tokio::test(start_paused = true)]
async fn revoke_by_ip_ends_every_session_of_the_subnet_after_the_rule_is_gone() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 5);
    let mut a = grants.acquire(request("192.0.2.1", LONG)).await.unwrap();
    let mut b = grants.acquire(request("192.0.2.200", LONG)).await.unwrap();
    let _other = grants.acquire(request("198.18.1.2", LONG)).await.unwrap();
    let ids = grants
        .revoke(Selector::Ip("192.0.2.77".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![(a.id(), subnet("192.0.2.1")), (b.id(), subnet("192.0.2.1"))]
    );
    assert_eq!(
        firewall.changes.lock().unwrap().last().unwrap().revoke,
        vec![subnet("192.0.2.1")]
    );
    assert_eq!(a.ended().await, EndReason::Revoked);
    assert_eq!(b.ended().await, EndReason::Revoked);
    assert_eq!(grants.list().await.0.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_revoke_reports_its_subnet_and_the_firewalls_reason() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 5);
    let lease = grants.acquire(request("192.0.2.4", LONG)).await.unwrap();
    *firewall.fail_revokes.lock().unwrap() = true;
    let err = grants.revoke(Selector::Id(lease.id())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not remove the rule for 192.0.2.0/24; retrying in the background"
    );
    let cause = std::error::Error::source(&err).expect("the firewall error is the source");
    assert_eq!(
        cause.to_string(),
        "192.0.2.0/24: fake failed: cannot delete 192.0.2.0/24"
    );
}

#[tokio::test(start_paused = true)]
async fn each_stuck_subnet_carries_its_own_cause() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 5);
    let _a = grants.acquire(request("192.0.2.4", LONG)).await.unwrap();
    let _b = grants.acquire(request("198.18.1.2", LONG)).await.unwrap();
    *firewall.fail_revokes.lock().unwrap() = true;
    let err = grants.revoke(Selector::All).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not remove the rule for 192.0.2.0/24, 198.18.1.0/24; retrying in the background"
    );
    assert_eq!(
        crate::logging::chain(&err).to_string(),
        "could not remove the rule for 192.0.2.0/24, 198.18.1.0/24; retrying in the background: \
         192.0.2.0/24: fake failed: cannot delete 192.0.2.0/24; \
         198.18.1.0/24: fake failed: cannot delete 198.18.1.0/24"
    );
}

#[tokio::test(start_paused = true)]
async fn revoke_retries_back_off_doubling() {
    let firewall = Arc::new(FakeFirewall::default());
    let grants = spawn(&firewall, 5);
    let lease = grants.acquire(request("192.0.2.4", LONG)).await.unwrap();
    *firewall.fail_revokes.lock().unwrap() = true;
    drop(lease);
    grants.list().await;
    let failed_at = Instant::now();
    // Tries at +0.5 s, +1.5 s, +3.5 s fail; the one at +7.5 s succeeds.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    *firewall.fail_revokes.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(3800)).await;
    assert_eq!(
        grants.list().await.1.stuck_revokes,
        1,
        "the fourth try is not due yet"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(grants.list().await.1.stuck_revokes, 0);
    assert!(failed_at.elapsed() < Duration::from_secs(8));
}
