//! Single-use tokens: [`ReplayCache`] remembers each accepted token's `jti`
//! until the token's `exp`, so a token is accepted once. A request first
//! *reserves* its `jti`; the reservation becomes permanent only when the
//! request succeeds ([`Reservation::commit`]) and is given back when the
//! request fails for any later reason (dropped), so a client refused for a full
//! server can retry with the same token, and two racing uses of one token
//! cannot both pass.
//!
//! Memory is bounded: at most `cap` live entries. When the cache is full of
//! entries that have not expired it fails closed ([`Denied::ReplayCacheFull`],
//! 503) rather than forget a live one. An entry is a 64-bit keyed hash of the
//! `jti` (SipHash with per-process random keys, so collisions cannot be aimed)
//! and its `exp`: about 60 bytes with the hash map and the expiry index.
//! Nothing is persisted: a restart forgets, which is bounded by the tokens'
//! lifetime (a token replayed after a restart is still refused once it expires).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::filters::Denied;

/// Default number of live entries (about 16 MiB at most).
pub const DEFAULT_CAP: usize = 262_144;

#[derive(Debug)]
pub struct ReplayCache {
    cap: usize,
    keys: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// jti hash → exp, for every reserved or committed token.
    entries: HashMap<u64, i64>,
    /// (exp, jti hash), to forget expired entries in order.
    by_exp: BTreeSet<(i64, u64)>,
}

impl Inner {
    fn forget_expired(&mut self, now: i64) {
        while let Some(&(exp, key)) = self.by_exp.first() {
            if exp > now {
                break;
            }
            self.by_exp.pop_first();
            self.entries.remove(&key);
        }
    }

    fn remove(&mut self, key: u64) {
        if let Some(exp) = self.entries.remove(&key) {
            self.by_exp.remove(&(exp, key));
        }
    }
}

/// A `jti` held for one request; given back on drop unless committed.
#[derive(Debug)]
pub struct Reservation {
    cache: Arc<ReplayCache>,
    key: u64,
    committed: bool,
}

impl Reservation {
    /// The request succeeded: the token stays used until its `exp`.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            self.cache.lock().remove(self.key);
        }
    }
}

impl ReplayCache {
    pub fn new(cap: usize) -> ReplayCache {
        ReplayCache {
            cap: cap.max(1),
            keys: RandomState::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live entries now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves `jti` (a token expiring at `exp`, Unix seconds) at time `now`.
    pub fn reserve(
        self: &Arc<Self>,
        jti: Option<&str>,
        exp: i64,
        now: i64,
    ) -> Result<Reservation, Denied> {
        let jti = jti.ok_or(Denied::MissingJti)?;
        let key = self.keys.hash_one(jti);
        let mut inner = self.lock();
        inner.forget_expired(now);
        if inner.entries.contains_key(&key) {
            return Err(Denied::Replayed);
        }
        if inner.entries.len() >= self.cap {
            return Err(Denied::ReplayCacheFull);
        }
        inner.entries.insert(key, exp);
        inner.by_exp.insert((exp, key));
        Ok(Reservation {
            cache: self.clone(),
            key,
            committed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_token_is_refused_until_it_expires() {
        let cache = Arc::new(ReplayCache::new(8));
        cache.reserve(Some("a"), 100, 10).unwrap().commit();
        assert_eq!(
            cache.reserve(Some("a"), 100, 50).unwrap_err(),
            Denied::Replayed
        );
        // Expired: forgotten (and the verifier refuses such a token anyway).
        assert!(cache.reserve(Some("a"), 200, 100).is_ok());
    }

    #[test]
    fn a_dropped_reservation_gives_the_token_back() {
        let cache = Arc::new(ReplayCache::new(8));
        let first = cache.reserve(Some("a"), 100, 10).unwrap();
        assert_eq!(
            cache.reserve(Some("a"), 100, 10).unwrap_err(),
            Denied::Replayed
        );
        drop(first);
        assert!(cache.is_empty());
        cache.reserve(Some("a"), 100, 10).unwrap().commit();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn no_jti_is_refused() {
        let cache = Arc::new(ReplayCache::new(8));
        assert_eq!(
            cache.reserve(None, 100, 10).unwrap_err(),
            Denied::MissingJti
        );
    }

    #[test]
    fn a_full_cache_fails_closed_until_entries_expire() {
        let cache = Arc::new(ReplayCache::new(2));
        cache.reserve(Some("a"), 100, 10).unwrap().commit();
        cache.reserve(Some("b"), 200, 10).unwrap().commit();
        assert_eq!(
            cache.reserve(Some("c"), 300, 10).unwrap_err(),
            Denied::ReplayCacheFull
        );
        // "a" has expired at 100: its place is free again, "b" is still remembered.
        cache.reserve(Some("c"), 300, 100).unwrap().commit();
        assert_eq!(
            cache.reserve(Some("b"), 200, 100).unwrap_err(),
            Denied::Replayed
        );
    }
}
