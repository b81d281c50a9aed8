//! Time to live of Events, like kube-apiserver's `--event-ttl` (default 1 h).
//!
//! Every write of an Event attaches the key to an etcd lease, so etcd itself
//! deletes the Event when the lease runs out: no sweeper lists Events, the
//! expiry survives restarts, several weir-control replicas need no
//! coordination, and watchers see an ordinary DELETED event. As in
//! kube-apiserver's lease manager, one lease is shared by all writes within
//! a short reuse window (granted with TTL = ttl + window), so an Event lives
//! between `ttl` and `ttl + window` after its last write, and a busy cluster
//! needs one lease per window instead of one per write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::storage::{Storage, StorageError};

/// The longest reuse window (kube-apiserver's default lease reuse duration).
const MAX_REUSE: Duration = Duration::from_secs(60);

/// A lease granted at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Granted {
    id: i64,
    at: Instant,
}

/// The reuse window for a TTL: 1/60 of it, at most a minute (1 h -> 60 s),
/// so short test TTLs are not stretched by a long window.
fn reuse_window(ttl: Duration) -> Duration {
    (ttl / 60).min(MAX_REUSE)
}

/// The TTL, in whole seconds, of a lease granted now.
fn grant_seconds(ttl: Duration) -> i64 {
    let total = ttl + reuse_window(ttl);
    i64::try_from(total.as_secs() + u64::from(total.subsec_nanos() > 0)).unwrap_or(i64::MAX)
}

/// The cached lease if it is still inside its reuse window.
fn reusable(cached: Option<Granted>, now: Instant, ttl: Duration) -> Option<i64> {
    cached
        .filter(|g| now.saturating_duration_since(g.at) < reuse_window(ttl))
        .map(|g| g.id)
}

/// Hands out leases for TTL'd writes. Cheap to clone.
#[derive(Clone)]
pub struct TtlLeases {
    storage: Storage,
    ttl: Duration,
    cached: Arc<Mutex<Option<Granted>>>,
}

impl TtlLeases {
    pub fn new(storage: Storage, ttl: Duration) -> Self {
        Self {
            storage,
            ttl,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// A lease to attach the next write to.
    pub async fn lease(&self) -> Result<i64, StorageError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(id) = reusable(*cached, now, self.ttl) {
            return Ok(id);
        }
        let id = self.storage.grant_lease(grant_seconds(self.ttl)).await?;
        *cached = Some(Granted { id, at: now });
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_grants() {
        let hour = Duration::from_secs(3600);
        assert_eq!(reuse_window(hour), Duration::from_secs(60));
        assert_eq!(grant_seconds(hour), 3660);
        assert_eq!(reuse_window(Duration::from_secs(6 * 3600)), MAX_REUSE);
        // 3 s: window 50 ms, rounded up to 4 s.
        assert_eq!(grant_seconds(Duration::from_secs(3)), 4);
    }

    #[test]
    fn reuse_only_inside_the_window() {
        let hour = Duration::from_secs(3600);
        let t0 = Instant::now();
        let g = Some(Granted { id: 7, at: t0 });
        let cases = [
            (None, Duration::ZERO, None),
            (g, Duration::ZERO, Some(7)),
            (g, Duration::from_secs(59), Some(7)),
            (g, Duration::from_secs(60), None),
            (g, Duration::from_secs(4000), None),
        ];
        for (cached, after, want) in cases {
            assert_eq!(reusable(cached, t0 + after, hour), want, "{after:?}");
        }
    }
}
