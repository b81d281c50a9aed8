//! The objects this replica wrote last, by etcd key, each with the revision
//! etcd gave its write.
//!
//! A (key, mod_revision) pair names one immutable stored value, so an update
//! or delete that finds its object here at the revision it works from can
//! skip the etcd read before its transaction: that transaction is guarded by
//! the same mod_revision, so if the object moved on meanwhile (a write by
//! another replica, or one that bypassed this record) it fails and the
//! registry reads etcd and decides again, exactly as after a lost race. A
//! create → update → delete of one object is then three etcd round trips,
//! not six as before (each call used to read first). Bounded by entries and
//! bytes; the oldest writes go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub mod_revision: i64,
    /// The stored form (as `ApiObject::to_stored` wrote it).
    pub value: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Written>,
    /// Insertion order; an entry whose revision no longer matches the map
    /// was overwritten or forgotten and is skipped on eviction.
    order: VecDeque<(String, i64)>,
    bytes: usize,
}

/// The record. Cheap to share (`Arc`); all methods take `&self`.
#[derive(Debug)]
pub struct Recent {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each method leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `key` holds `value` at `mod_revision`.
    pub fn put(&self, key: &str, mod_revision: i64, value: &[u8]) {
        if value.len() > self.max_bytes {
            self.forget(key);
            return;
        }
        let mut st = self.lock();
        let entry = Written {
            mod_revision,
            value: Arc::from(value),
        };
        if let Some(old) = st.map.insert(key.to_string(), entry) {
            st.bytes -= old.value.len();
        }
        st.bytes += value.len();
        st.order.push_back((key.to_string(), mod_revision));
        while st.map.len() > self.max_entries || st.bytes > self.max_bytes {
            let Some((k, rev)) = st.order.pop_front() else {
                break;
            };
            if st.map.get(&k).is_some_and(|w| w.mod_revision == rev)
                && let Some(w) = st.map.remove(&k)
            {
                st.bytes -= w.value.len();
            }
        }
        // Stale order entries of overwritten keys are dropped lazily; keep
        // the queue from growing without bound when one key is rewritten.
        if st.order.len() > 2 * self.max_entries.max(1) {
            let Inner { map, order, .. } = &mut *st;
            order.retain(|(k, rev)| map.get(k).is_some_and(|w| w.mod_revision == *rev));
        }
    }

    /// The last recorded write of `key`.
    pub fn get(&self, key: &str) -> Option<Written> {
        self.lock().map.get(key).cloned()
    }

    /// Forgets `key` (it was deleted, or its record cannot be trusted).
    pub fn forget(&self, key: &str) {
        let mut st = self.lock();
        if let Some(w) = st.map.remove(key) {
            st.bytes -= w.value.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_write_per_key() {
        let r = Recent::new(10, 1000);
        r.put("/a", 5, b"one");
        r.put("/a", 7, b"two");
        assert_eq!(r.get("/a").map(|w| w.mod_revision), Some(7));
        assert_eq!(r.get("/a").map(|w| w.value.to_vec()), Some(b"two".to_vec()));
        r.forget("/a");
        assert_eq!(r.get("/a"), None);
        assert_eq!(r.lock().bytes, 0);
    }

    #[test]
    fn evicts_oldest_by_entries_and_bytes() {
        let cases: [(usize, usize, &[&str]); 3] = [
            // entries bound: the oldest key goes
            (2, 1000, &["/b", "/c"]),
            // bytes bound (3 bytes each): only two fit
            (10, 7, &["/b", "/c"]),
            // roomy: all stay
            (10, 1000, &["/a", "/b", "/c"]),
        ];
        for (entries, bytes, kept) in cases {
            let r = Recent::new(entries, bytes);
            for (i, k) in ["/a", "/b", "/c"].iter().enumerate() {
                r.put(k, i as i64, b"xyz");
            }
            let have: Vec<&str> = ["/a", "/b", "/c"]
                .into_iter()
                .filter(|k| r.get(k).is_some())
                .collect();
            assert_eq!(have, kept, "entries {entries}, bytes {bytes}");
            assert_eq!(r.lock().bytes, 3 * kept.len());
        }
    }

    #[test]
    fn a_rewritten_key_is_not_evicted_by_its_old_position() {
        let r = Recent::new(2, 1000);
        r.put("/a", 1, b"x");
        r.put("/b", 2, b"x");
        r.put("/a", 3, b"x"); // /a is now the newest
        r.put("/c", 4, b"x"); // evicts /b (oldest live), skipping /a@1
        assert!(r.get("/a").is_some());
        assert!(r.get("/b").is_none());
        assert!(r.get("/c").is_some());
    }

    #[test]
    fn oversized_values_are_not_kept_and_queue_stays_bounded() {
        let r = Recent::new(4, 10);
        r.put("/big", 1, &[0; 11]);
        assert_eq!(r.get("/big"), None);
        for rev in 0..100 {
            r.put("/same", rev, b"x");
        }
        assert!(r.lock().order.len() <= 8);
        assert_eq!(r.get("/same").map(|w| w.mod_revision), Some(99));
    }
}
