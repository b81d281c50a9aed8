//! The watch cache: one etcd watch per kind, fanned out to every client watch
//! of that kind (like kube-apiserver's cacher), so N agents and controllers
//! watching Pods cost one etcd watch, not N.
//!
//! Each kind's feed keeps a window of its most recent changes. A client watch
//! starting at a revision the window still covers gets the missed changes
//! from the window and then the live ones; an older revision is served by a
//! direct etcd watch instead (which reports "expired" when etcd compacted it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use weir_api::ResourceKind;

use crate::error::ApiError;
use crate::storage::{Storage, StorageError, WatchItem};

/// Changes kept per kind for watches that resume from a recent revision.
const WINDOW: usize = 1000;
/// Changes a slow client may fall behind before its watch is ended (it then
/// resumes from its last revision, usually still inside the window).
const FANOUT_BUFFER: usize = 1024;
/// How often a feed asks etcd for a progress notification (bookmarks).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);

/// What a feed hands to its subscribers.
#[derive(Debug, Clone)]
pub enum Item {
    /// Decoded once here, shared by every watcher.
    Change(Arc<crate::watch::Decoded>),
    /// Every change up to this revision has been delivered.
    Progress(i64),
}

impl Item {
    /// The revision this item belongs to.
    pub fn revision(&self) -> i64 {
        match self {
            Item::Change(c) => c.revision,
            Item::Progress(r) => *r,
        }
    }
}

/// The recent changes of one kind: complete for every revision above `since`.
#[derive(Debug)]
pub struct Window<T> {
    entries: VecDeque<(i64, T)>,
    since: i64,
    capacity: usize,
}

impl<T: Clone> Window<T> {
    pub fn new(since: i64, capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            since,
            capacity,
        }
    }

    /// Appends a change of revision `rev` (revisions never decrease) and
    /// drops the oldest whole revisions beyond the capacity.
    pub fn push(&mut self, rev: i64, item: T) {
        self.entries.push_back((rev, item));
        while self.entries.len() > self.capacity {
            let Some(&(oldest, _)) = self.entries.front() else {
                break;
            };
            while self.entries.front().is_some_and(|(r, _)| *r == oldest) {
                self.entries.pop_front();
            }
            self.since = oldest;
        }
    }

    /// The changes after `rev`, or `None` if some of them were dropped.
    pub fn after(&self, rev: i64) -> Option<Vec<T>> {
        (rev >= self.since).then(|| {
            self.entries
                .iter()
                .filter(|(r, _)| *r > rev)
                .map(|(_, t)| t.clone())
                .collect()
        })
    }

    /// Forgets everything: the window is complete only above `since` now.
    pub fn reset(&mut self, since: i64) {
        self.entries.clear();
        self.since = since;
    }
}

struct FeedState {
    window: Window<Item>,
    tx: broadcast::Sender<Item>,
}

/// One kind's etcd watch and its subscribers.
struct Feed {
    state: Mutex<FeedState>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // The state stays consistent even if a holder panicked: each update is one push.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's view of a feed: the changes it missed, then the live ones.
/// Items at or below the subscription revision must be skipped by the reader
/// (a feed may lag the list the client started from).
pub struct Subscription {
    pub backlog: Vec<Item>,
    pub live: broadcast::Receiver<Item>,
    pub after: i64,
}

/// The per-kind feeds. Shared by all watch requests.
pub struct WatchCache {
    storage: Storage,
    feeds: Mutex<HashMap<&'static str, Arc<Feed>>>,
    /// Turns true at shutdown: feeds stop before etcd does.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl WatchCache {
    pub fn new(storage: Storage, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            storage,
            feeds: Mutex::new(HashMap::new()),
            stop,
        }
    }

    /// Subscribes to the changes of `kind` after revision `after`; `None`
    /// when the cache does not hold all of them (the caller watches etcd).
    pub async fn subscribe(
        &self,
        kind: &'static ResourceKind,
        after: i64,
    ) -> Result<Option<Subscription>, ApiError> {
        let feed = self.feed(kind).await?;
        let st = feed.lock();
        Ok(st.window.after(after).map(|backlog| Subscription {
            backlog,
            live: st.tx.subscribe(),
            after,
        }))
    }

    async fn feed(&self, kind: &'static ResourceKind) -> Result<Arc<Feed>, ApiError> {
        if let Some(f) = self
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind.kind)
        {
            return Ok(f.clone());
        }
        let rev = self.storage.revision().await?;
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = feeds.get(kind.kind) {
            return Ok(f.clone());
        }
        let (tx, _) = broadcast::channel(FANOUT_BUFFER);
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState {
                window: Window::new(rev, WINDOW),
                tx,
            }),
        });
        feeds.insert(kind.kind, feed.clone());
        let mut stop = self.stop.clone();
        let run = run_feed(self.storage.clone(), kind, feed.clone(), rev);
        tokio::spawn(async move {
            tokio::select! {
                () = run => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        Ok(feed)
    }
}

/// Keeps one kind's feed current: watches etcd from the last revision seen,
/// resumes after errors, and starts over (ending every subscription) if
/// etcd compacted revisions the feed had not seen yet.
async fn run_feed(storage: Storage, kind: &'static ResourceKind, feed: Arc<Feed>, mut last: i64) {
    let prefix = kind.key_prefix(None);
    tracing::debug!(
        kind = kind.kind,
        revision = last,
        "watch cache feed started"
    );
    loop {
        let stream = match storage
            .watch(&prefix, last + 1, Some(PROGRESS_INTERVAL))
            .await
        {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, kind = kind.kind, "watch cache cannot watch etcd; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchItem::Changes(changes)) => {
                    // Decode outside the lock; an undecodable change still
                    // advances the feed's revision.
                    let decoded: Vec<(i64, Option<crate::watch::Decoded>)> = changes
                        .iter()
                        .map(|c| (c.revision(), crate::watch::decode_logged(c, kind)))
                        .collect();
                    let mut st = feed.lock();
                    for (rev, d) in decoded {
                        last = last.max(rev);
                        let Some(d) = d else { continue };
                        let item = Item::Change(Arc::new(d));
                        last = last.max(item.revision());
                        st.window.push(item.revision(), item.clone());
                        // No receivers is fine: nobody watches this kind right now.
                        let _ = st.tx.send(item);
                    }
                }
                Ok(WatchItem::Progress(rev)) => {
                    last = last.max(rev);
                    let _ = feed.lock().tx.send(Item::Progress(rev));
                }
                Err(StorageError::Compacted { .. }) => {
                    let rev = loop {
                        match storage.revision().await {
                            Ok(r) => break r,
                            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                        }
                    };
                    tracing::warn!(
                        kind = kind.kind,
                        from = last,
                        to = rev,
                        "watch cache fell behind compaction; restarting"
                    );
                    let mut st = feed.lock();
                    st.window.reset(rev);
                    // Dropping the old sender ends every subscription: those
                    // clients resume and are served from etcd (or re-list).
                    st.tx = broadcast::channel(FANOUT_BUFFER).0;
                    last = rev;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, kind = kind.kind, "watch cache lost its etcd watch; resuming");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_serves_only_complete_ranges() {
        let mut w = Window::new(10, 3);
        for (rev, v) in [(11, "a"), (12, "b"), (12, "c"), (13, "d")] {
            w.push(rev, v);
        }
        // Capacity 3: revision 11 was dropped whole, so the window starts above 11.
        assert_eq!(w.after(10), None);
        assert_eq!(w.after(11), Some(vec!["b", "c", "d"]));
        assert_eq!(w.after(12), Some(vec!["d"]));
        assert_eq!(
            w.after(20),
            Some(vec![]),
            "a future revision waits for live changes"
        );
        w.reset(30);
        assert_eq!(w.after(13), None);
        assert_eq!(w.after(30), Some(vec![]));
    }

    #[test]
    fn window_drops_a_whole_revision_even_beyond_capacity() {
        let mut w = Window::new(0, 2);
        for v in ["a", "b", "c"] {
            w.push(5, v);
        }
        assert_eq!(w.after(0), None);
        assert_eq!(w.after(5), Some(vec![]));
    }
}
