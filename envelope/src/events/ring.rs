//! The last N events, and the followers that read them. A push is a short
//! lock and a wake-up: it never waits for a reader. A reader keeps its own
//! cursor; one that falls behind the oldest event held has lost the stream
//! (it gets `stream.lost` and is let go), so a stalled follower costs a
//! bounded buffer and nothing else.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Event, Record};

/// One event held: the record (for the log line), its JSON line, and what
/// filters look at.
#[derive(Debug)]
pub struct Entry {
    pub record: Record,
    pub line: Bytes,
    kind: &'static str,
    subnets: Vec<(IpAddr, u8)>,
}

#[derive(Debug)]
struct Held {
    entries: VecDeque<Arc<Entry>>,
    /// The seq the next event gets (the first is 1).
    next: u64,
}

impl Held {
    fn oldest(&self) -> u64 {
        self.next - self.entries.len() as u64
    }
}

#[derive(Debug)]
pub(super) struct Ring {
    boot: Arc<str>,
    capacity: usize,
    held: Mutex<Held>,
    /// (next seq, oldest seq held), for followers to wait on.
    moved: watch::Sender<(u64, u64)>,
}

/// `since` asks for events the buffer no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the events after {since} are no longer held; the oldest held is {oldest}")]
pub struct Gone {
    pub since: u64,
    pub oldest: u64,
}

/// A follower fell behind the buffer: the stream resumes at `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub next: u64,
}

impl Lost {
    /// The last line a lost follower reads.
    pub fn line(self) -> Bytes {
        Bytes::from(format!(
            "{{\"type\":\"stream.lost\",\"next\":{}}}\n",
            self.next
        ))
    }
}

impl Ring {
    pub fn new(capacity: usize, boot: String) -> Ring {
        Ring {
            boot: boot.into(),
            capacity: capacity.max(1),
            held: Mutex::new(Held {
                entries: VecDeque::new(),
                next: 1,
            }),
            moved: watch::channel((1, 1)).0,
        }
    }

    pub fn boot(&self) -> &str {
        &self.boot
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, event: Event, subnets: Vec<String>) -> Arc<Entry> {
        let kind = event.kind();
        let subnets = subnets.iter().filter_map(|s| parse_cidr(s)).collect();
        let mut held = self.held();
        let record = Record {
            seq: held.next,
            boot: self.boot.clone(),
            time: OffsetDateTime::now_utc(),
            event,
        };
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        let entry = Arc::new(Entry {
            record,
            line: Bytes::from(line),
            kind,
            subnets,
        });
        held.next += 1;
        held.entries.push_back(entry.clone());
        if held.entries.len() > self.capacity {
            held.entries.pop_front();
        }
        let moved = (held.next, held.oldest());
        drop(held);
        self.moved.send_replace(moved);
        entry
    }

    pub fn follow(self: &Arc<Self>, since: Option<u64>, follow: bool) -> Result<Follower, Gone> {
        let held = self.held();
        let oldest = held.oldest();
        let cursor = match since {
            Some(since) if since.saturating_add(1) < oldest => {
                return Err(Gone { since, oldest });
            }
            Some(since) => since.saturating_add(1).min(held.next),
            None if follow => held.next,
            None => oldest,
        };
        drop(held);
        Ok(Follower {
            ring: self.clone(),
            cursor,
            moved: self.moved.subscribe(),
            kinds: None,
            within: None,
        })
    }
}

/// A reader of the stream, with its own cursor and filters.
#[derive(Debug)]
pub struct Follower {
    ring: Arc<Ring>,
    cursor: u64,
    moved: watch::Receiver<(u64, u64)>,
    kinds: Option<Vec<String>>,
    within: Option<Cidr>,
}

impl Follower {
    /// Only events of these types.
    pub fn kinds(mut self, kinds: Vec<String>) -> Follower {
        self.kinds = Some(kinds);
        self
    }

    /// Only events about a subnet inside `cidr`.
    pub fn within(mut self, cidr: Cidr) -> Follower {
        self.within = Some(cidr);
        self
    }

    /// The seq of the next event this follower reads.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The held events from the cursor on that pass the filters; the cursor
    /// moves past everything read. `Lost` if the cursor fell behind.
    pub fn read(&mut self) -> Result<Vec<Bytes>, Lost> {
        let held = self.ring.held();
        let oldest = held.oldest();
        if self.cursor < oldest {
            return Err(Lost { next: oldest });
        }
        let skip = (self.cursor - oldest) as usize;
        let lines = held
            .entries
            .iter()
            .skip(skip)
            .filter(|e| self.wanted(e))
            .map(|e| e.line.clone())
            .collect();
        self.cursor = held.next;
        Ok(lines)
    }

    /// The next held lines from the cursor on that pass the filters, joined,
    /// at most `max` bytes (or one longer line alone); the cursor moves past
    /// what was looked at, and no further, so a follower that waits to send
    /// this batch still falls behind when the buffer passes it. `None` when
    /// nothing is left to read; `Lost` if the cursor fell behind.
    pub fn read_batch(&mut self, max: usize) -> Result<Option<Bytes>, Lost> {
        let held = self.ring.held();
        let oldest = held.oldest();
        if self.cursor < oldest {
            return Err(Lost { next: oldest });
        }
        let mut batch = Vec::new();
        for entry in held.entries.iter().skip((self.cursor - oldest) as usize) {
            if self.wanted(entry) {
                if !batch.is_empty() && batch.len() + entry.line.len() > max {
                    break;
                }
                batch.extend_from_slice(&entry.line);
            }
            self.cursor = entry.record.seq + 1;
        }
        Ok((!batch.is_empty()).then(|| Bytes::from(batch)))
    }

    fn wanted(&self, entry: &Entry) -> bool {
        let kind = self
            .kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k == entry.kind));
        let place = self.within.as_ref().is_none_or(|cidr| {
            entry
                .subnets
                .iter()
                .any(|&(ip, prefix)| cidr.contains(ip, prefix))
        });
        kind && place
    }

    /// Resolves when there is something past the cursor to read.
    pub async fn arrived(&mut self) {
        let cursor = self.cursor;
        let _ = self.moved.wait_for(|&(next, _)| next > cursor).await;
    }

    /// Resolves when the buffer has dropped events this follower has not read.
    pub async fn fell_behind(&mut self) -> Lost {
        let cursor = self.cursor;
        let moved = self.moved.wait_for(|&(_, oldest)| oldest > cursor).await;
        Lost {
            next: moved.map_or(cursor, |m| m.1),
        }
    }
}

/// A network, for `?subnet=CIDR` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether the network `ip/prefix` lies inside this one.
    fn contains(&self, ip: IpAddr, prefix: u8) -> bool {
        prefix >= self.prefix && masked(ip, self.prefix) == Some(self.network)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (network, prefix) = parse_cidr(text)
            .ok_or_else(|| format!("{text:?} is not a CIDR (e.g. 192.0.2.0/24)"))?;
        Ok(Cidr {
            network: masked(network, prefix).unwrap_or(network),
            prefix,
        })
    }
}

/// `ADDR/PREFIX` (or a bare address, its own /32 or /128).
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, prefix.parse::<u8>().ok()?),
        None => {
            let ip: IpAddr = text.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn masked(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V4((u32::from(v4) & mask).into()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::V6((u128::from(v6) & mask).into()))
        }
        _ => None,
    }
}
