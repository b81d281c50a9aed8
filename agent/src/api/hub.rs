//! The agent's in-memory flow log: a ring of the most recent flows for
//! replay, and a broadcast of new ones (and of lost-event notices) to every
//! follower. A push never blocks: a follower that reads too slowly misses
//! flows and is told how many.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use weir_client::agent::proto::Flow;

/// Flows kept for replay.
pub const RING_CAPACITY: usize = 4096;
/// Events buffered per follower before it starts missing some.
const FOLLOW_BUFFER: usize = 1024;

/// A flow shared by the ring and every follower.
#[derive(Clone, Debug, PartialEq)]
pub struct Shared(pub Arc<Flow>);

impl AsRef<Flow> for Shared {
    fn as_ref(&self) -> &Flow {
        &self.0
    }
}

/// What followers receive.
#[derive(Clone, Debug)]
pub enum Event {
    Flow(Shared),
    /// The kernel ring was full: this many events were never written.
    KernelLost(u64),
}

#[derive(Debug)]
pub struct Hub {
    ring: Mutex<VecDeque<Shared>>,
    capacity: usize,
    tx: broadcast::Sender<Event>,
    seen: AtomicU64,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            tx: broadcast::channel(FOLLOW_BUFFER).0,
            seen: AtomicU64::new(0),
        }
    }

    /// Records a flow and hands it to the followers.
    pub fn push(&self, flow: Flow) {
        let flow = Shared(Arc::new(flow));
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(flow.clone());
        self.seen.fetch_add(1, Ordering::Relaxed);
        // Sent under the lock, so a subscriber's replay and live stream
        // neither overlap nor leave a gap. No receiver is fine.
        let _ = self.tx.send(Event::Flow(flow));
    }

    /// Tells the followers that the kernel lost `events`.
    pub fn kernel_lost(&self, events: u64) {
        let _ = self.tx.send(Event::KernelLost(events));
    }

    /// Flows read since the agent started.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// `replay(ring)` taken atomically with a subscription to what follows.
    pub fn subscribe<R>(
        &self,
        replay: impl FnOnce(&VecDeque<Shared>) -> R,
    ) -> (R, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        (replay(&ring), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(t: i64) -> Flow {
        Flow {
            time_unix_nanos: t,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_ring_keeps_the_newest_and_followers_get_what_follows() {
        let hub = Hub::new(3);
        for t in 1..=5 {
            hub.push(flow(t));
        }
        let (replayed, mut rx) =
            hub.subscribe(|ring| ring.iter().map(|f| f.0.time_unix_nanos).collect::<Vec<_>>());
        assert_eq!(replayed, vec![3, 4, 5]);
        hub.push(flow(6));
        hub.kernel_lost(2);
        match rx.recv().await.unwrap() {
            Event::Flow(f) => assert_eq!(f.0.time_unix_nanos, 6),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.recv().await.unwrap(), Event::KernelLost(2)));
        assert_eq!(hub.seen(), 6);
    }
}
