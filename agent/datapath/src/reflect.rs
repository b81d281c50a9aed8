//! The list-then-watch loop both syncs (services, policy) feed their stores
//! from: one task per kind sends the complete list, then every watch event,
//! into the sync's channel. Re-lists on `Expired`; backs off and re-watches
//! on other errors and when the stream ends; returns when the receiver is
//! gone.

use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_client::{Client, ListParams, WatchEvent, WatchParams};

/// Shortest wait after a failed list or watch.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait after repeated failures.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What a reflector tells the store.
pub(crate) enum StoreEvent<K> {
    /// A complete list: replaces the store's contents.
    Listed(Vec<K>),
    Event(WatchEvent<K>),
}

impl<K> StoreEvent<K> {
    pub(crate) fn is_list(&self) -> bool {
        matches!(self, StoreEvent::Listed(_))
    }
}

/// List (all namespaces), then watch from the list's revision (asking for
/// bookmarks when `bookmarks`, so a quiet kind's revision stays fresh),
/// sending each result through `wrap` into `tx`.
pub(crate) async fn reflect<K, U>(
    client: Client,
    tx: mpsc::Sender<U>,
    wrap: fn(StoreEvent<K>) -> U,
    bookmarks: bool,
) where
    K: k8s_openapi::Resource + DeserializeOwned + Send + 'static,
{
    let kind = K::KIND;
    let mut backoff = Backoff::default();
    'relist: loop {
        let list = match client.list::<K>("", &ListParams::default()).await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(kind, %error, "list failed");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        let mut rv = list.resource_version;
        if tx.send(wrap(StoreEvent::Listed(list.items))).await.is_err() {
            return;
        }
        loop {
            let params = WatchParams {
                allow_bookmarks: bookmarks,
                ..WatchParams::default()
            }
            .from_version(rv.clone());
            let mut stream = match client.watch::<K>("", &params).await {
                Ok(stream) => stream,
                Err(weir_client::Error::Expired(_)) => continue 'relist,
                Err(error) => {
                    tracing::warn!(kind, %error, "watch failed");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok((event, event_rv)) => {
                        backoff.reset();
                        rv = event_rv;
                        if matches!(event, WatchEvent::Bookmark(_)) {
                            continue;
                        }
                        if tx.send(wrap(StoreEvent::Event(event))).await.is_err() {
                            return;
                        }
                    }
                    Err(weir_client::Error::Expired(_)) => {
                        tracing::info!(kind, "watch expired, re-listing");
                        continue 'relist;
                    }
                    Err(error) => {
                        tracing::warn!(kind, %error, "watch stream error");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

/// Exponential backoff between [`BACKOFF_MIN`] and [`BACKOFF_MAX`].
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Aborts a spawned task when dropped (e.g. the agent's shutdown cancels a
/// sync future), so the reflectors do not outlive their sync.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(seq[0], BACKOFF_MIN);
        assert_eq!(seq[1], BACKOFF_MIN * 2);
        assert_eq!(*seq.last().expect("non-empty"), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
