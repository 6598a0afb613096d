//! What a listener lets connections take, and what it says when it says no:
//! the global connection cap, the per-source-subnet cap (so one /24 or /64 can
//! never take the global cap from everyone else), the handshake, head and
//! lifetime deadlines, and refusals counted in a metric and logged as one
//! summary line per interval (count, reasons, top sources) instead of a line
//! per connection a flood would turn into millions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::firewall::Subnet;
use crate::metrics::RefusedLabels;

/// How often refusals are summed up in one log line.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// How many sources a summary names.
const TOP_SOURCES: usize = 3;

/// How much a listener lets each connection take.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Connections served at once; one more is closed at accept.
    pub connections: Arc<Semaphore>,
    /// Connections one source subnet may hold at once (TCP listeners).
    pub per_subnet: Option<Arc<SubnetCaps>>,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for a complete request head (each request of a keep-alive connection).
    pub head_timeout: Duration,
    /// Longest a connection that is not upgraded may live, however many
    /// requests it sends (keep-alive would otherwise restart the head timeout
    /// forever).
    pub lifetime: Option<Duration>,
    /// Where refused connections are counted and summed up.
    pub refusals: Arc<Refusals>,
}

impl Bounds {
    /// `connections` at once, `timeout` for the handshake and each head, no
    /// per-subnet cap, no lifetime; refusals counted under `listener`.
    pub fn new(connections: usize, timeout: Duration, refusals: Arc<Refusals>) -> Bounds {
        Bounds {
            connections: Arc::new(Semaphore::new(connections)),
            per_subnet: None,
            handshake_timeout: timeout,
            head_timeout: timeout,
            lifetime: None,
            refusals,
        }
    }

    pub fn per_subnet(mut self, max: usize) -> Bounds {
        self.per_subnet = Some(Arc::new(SubnetCaps::new(max)));
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Bounds {
        self.lifetime = Some(lifetime);
        self
    }

    /// Takes a place for a connection from `source`, or says why not (the
    /// reason label of the refusal).
    pub fn admit(&self, source: Option<Subnet>) -> Result<Admitted, &'static str> {
        let subnet = match (&self.per_subnet, source) {
            (Some(caps), Some(subnet)) => Some(caps.take(subnet).ok_or("subnet-limit")?),
            _ => None,
        };
        let global = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| "connection-limit")?;
        Ok(Admitted {
            _global: global,
            _subnet: subnet,
        })
    }
}

/// A connection's places in the caps, given back when it is dropped.
#[derive(Debug)]
pub struct Admitted {
    _global: OwnedSemaphorePermit,
    _subnet: Option<SubnetPlace>,
}

/// Open connections per source subnet.
#[derive(Debug)]
pub struct SubnetCaps {
    max: usize,
    open: Mutex<HashMap<Subnet, usize>>,
}

impl SubnetCaps {
    pub fn new(max: usize) -> SubnetCaps {
        SubnetCaps {
            max: max.max(1),
            open: Mutex::default(),
        }
    }

    fn take(self: &Arc<Self>, subnet: Subnet) -> Option<SubnetPlace> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(subnet).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SubnetPlace {
            caps: self.clone(),
            subnet,
        })
    }

    /// Connections `subnet` holds now.
    pub fn open(&self, subnet: Subnet) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&subnet).copied().unwrap_or(0)
    }
}

/// One connection's place in its subnet's count.
#[derive(Debug)]
struct SubnetPlace {
    caps: Arc<SubnetCaps>,
    subnet: Subnet,
}

impl Drop for SubnetPlace {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.subnet) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.subnet);
            }
        }
    }
}

/// Refused connections of one listener: counted one by one, logged as a
/// summary at most once per [`SUMMARY_INTERVAL`].
#[derive(Debug)]
pub struct Refusals {
    listener: &'static str,
    counter: Family<RefusedLabels, Counter>,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    total: u64,
    reasons: BTreeMap<&'static str, u64>,
    sources: HashMap<String, u64>,
}

impl Window {
    fn new() -> Window {
        Window {
            since: Instant::now(),
            total: 0,
            reasons: BTreeMap::new(),
            sources: HashMap::new(),
        }
    }
}

impl Refusals {
    pub fn new(listener: &'static str, counter: Family<RefusedLabels, Counter>) -> Refusals {
        Refusals {
            listener,
            counter,
            window: Mutex::new(Window::new()),
        }
    }

    /// One refused connection from `source`.
    pub fn refuse(&self, reason: &'static str, source: String) {
        self.counter
            .get_or_create(&RefusedLabels {
                listener: self.listener,
                reason,
            })
            .inc();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window.total += 1;
        *window.reasons.entry(reason).or_default() += 1;
        // A flood from everywhere must not grow this without bound.
        if window.sources.len() < 4096 || window.sources.contains_key(&source) {
            *window.sources.entry(source).or_default() += 1;
        }
        if window.since.elapsed() >= SUMMARY_INTERVAL {
            self.log(&mut window);
        }
    }

    /// Logs what the current window holds once it is due (the accept loop
    /// calls this on a timer, so the last refusals of a burst are told too).
    pub fn flush_if_due(&self) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window.total > 0 && window.since.elapsed() >= SUMMARY_INTERVAL {
            self.log(&mut window);
        }
    }

    fn log(&self, window: &mut Window) {
        let mut top: Vec<(&String, &u64)> = window.sources.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top
            .into_iter()
            .take(TOP_SOURCES)
            .map(|(source, n)| format!("{source} ({n})"))
            .collect();
        let reasons: Vec<String> = window
            .reasons
            .iter()
            .map(|(reason, n)| format!("{reason} ({n})"))
            .collect();
        tracing::warn!(
            listener = self.listener,
            refused = window.total,
            seconds = window.since.elapsed().as_secs(),
            reasons = %reasons.join(", "),
            top_sources = %top.join(", "),
            "connections refused at the connection limits"
        );
        *window = Window::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(ip: &str) -> Option<Subnet> {
        Some(Subnet::of_client(ip.parse().unwrap()))
    }

    fn bounds(global: usize, per_subnet: usize) -> Bounds {
        let refusals = Arc::new(Refusals::new("access", Family::default()));
        Bounds::new(global, Duration::from_secs(5), refusals).per_subnet(per_subnet)
    }

    #[test]
    fn one_subnet_cannot_take_the_global_cap() {
        let bounds = bounds(4, 2);
        let a = [
            bounds.admit(subnet("192.0.2.1")),
            bounds.admit(subnet("192.0.2.99")),
        ];
        assert!(a.iter().all(Result::is_ok));
        assert_eq!(
            bounds.admit(subnet("192.0.2.7")).unwrap_err(),
            "subnet-limit"
        );
        let b = bounds.admit(subnet("198.18.1.1")).unwrap();
        let _c = bounds.admit(subnet("2001:db8::1")).unwrap();
        assert_eq!(
            bounds.admit(subnet("198.18.2.1")).unwrap_err(),
            "connection-limit"
        );
        drop(b);
        assert!(bounds.admit(subnet("198.18.2.1")).is_ok());
    }

    #[test]
    fn a_place_is_given_back_when_the_connection_ends() {
        let bounds = bounds(10, 1);
        let caps = bounds.per_subnet.clone().unwrap();
        let place = bounds.admit(subnet("192.0.2.1")).unwrap();
        assert_eq!(caps.open(subnet("192.0.2.200").unwrap()), 1);
        drop(place);
        assert_eq!(caps.open(subnet("192.0.2.200").unwrap()), 0);
        assert!(caps.open.lock().unwrap().is_empty(), "no entry left behind");
        assert!(bounds.admit(subnet("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_source_without_an_address_meets_only_the_global_cap() {
        let bounds = bounds(1, 1);
        let first = bounds.admit(None).unwrap();
        assert_eq!(bounds.admit(None).unwrap_err(), "connection-limit");
        drop(first);
        assert!(bounds.admit(None).is_ok());
    }

    #[test]
    fn refusals_are_counted_one_by_one_and_summed_up_per_window() {
        let counter = Family::<RefusedLabels, Counter>::default();
        let refusals = Refusals::new("metrics", counter.clone());
        for _ in 0..5 {
            refusals.refuse("subnet-limit", "192.0.2.0/24".into());
        }
        let labels = RefusedLabels {
            listener: "metrics",
            reason: "subnet-limit",
        };
        assert_eq!(counter.get_or_create(&labels).get(), 5);
        // Not due yet: the window keeps them for one summary line.
        refusals.flush_if_due();
        assert_eq!(refusals.window.lock().unwrap().total, 5);
        refusals.window.lock().unwrap().since -= SUMMARY_INTERVAL;
        refusals.flush_if_due();
        assert_eq!(refusals.window.lock().unwrap().total, 0);
    }
}
