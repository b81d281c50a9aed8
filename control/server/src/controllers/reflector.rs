//! The watcher state machine feeding a [`Store`]: list, then watch from the
//! list's revision; on `Expired` re-list (the store's `replace` reports the
//! deletions the gap hid); on other errors back off and resume the watch.
//! The API server is never trusted to send well-formed events: a decode
//! error is logged and answered with a re-list, never a panic.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use weir_client::{Client, Error, ListParams, WatchParams};

use super::queue::backoff;
use super::store::{Change, Store};

/// Where the reflector keeps its objects and tells it has listed once.
pub trait Cached<K>: Send + Sync {
    fn store(&mut self) -> &mut Store<K>;
    fn mark_synced(&mut self);
}

enum Next {
    Relist,
    Rewatch,
}

/// Runs forever: keeps `cache`'s store of `K` in step with the API server
/// and calls `handle` for every change, outside the lock.
pub async fn reflect<K, C, H>(client: Client, cache: Arc<RwLock<C>>, handle: H)
where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static,
    C: Cached<K>,
    H: Fn(&Change<K>) + Send + Sync,
{
    let mut failures: u32 = 0;
    loop {
        let list = match client.list::<K>("", &ListParams::default()).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(kind = K::KIND, %error, "list failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let changes = {
            let mut c = cache.write().unwrap_or_else(|p| p.into_inner());
            let ch = c.store().replace(list.items);
            c.mark_synced();
            ch
        };
        tracing::debug!(kind = K::KIND, changes = changes.len(), rv = %list.resource_version, "listed");
        for ch in &changes {
            handle(ch);
        }
        let mut rv = list.resource_version;
        loop {
            match watch_once(&client, &cache, &handle, &mut rv).await {
                (Next::Relist, _) => break,
                (Next::Rewatch, progressed) => {
                    if progressed {
                        failures = 0;
                    }
                    tokio::time::sleep(backoff(failures).min(Duration::from_secs(10))).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}

/// One watch stream from `rv`. Returns what to do next and whether any event arrived.
async fn watch_once<K, C, H>(
    client: &Client,
    cache: &Arc<RwLock<C>>,
    handle: &H,
    rv: &mut String,
) -> (Next, bool)
where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static,
    C: Cached<K>,
    H: Fn(&Change<K>) + Send + Sync,
{
    let params = WatchParams {
        resource_version: rv.clone(),
        allow_bookmarks: true,
        ..Default::default()
    };
    let mut stream = match client.watch::<K>("", &params).await {
        Ok(s) => s,
        Err(Error::Expired(_)) => return (Next::Relist, false),
        Err(error) => {
            tracing::warn!(kind = K::KIND, %error, "watch failed; retrying");
            return (Next::Rewatch, false);
        }
    };
    let mut progressed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok((ev, new_rv)) => {
                progressed = true;
                if !new_rv.is_empty() {
                    *rv = new_rv;
                }
                let change = {
                    let mut c = cache.write().unwrap_or_else(|p| p.into_inner());
                    c.store().apply_event(ev)
                };
                if let Some(ch) = change {
                    handle(&ch);
                }
            }
            Err(Error::Expired(_)) => {
                tracing::info!(kind = K::KIND, "watch expired; re-listing");
                return (Next::Relist, progressed);
            }
            Err(error @ Error::Decode { .. }) => {
                // Fail closed: an event we cannot read could be a deletion; re-list.
                tracing::warn!(kind = K::KIND, %error, "undecodable watch event; re-listing");
                return (Next::Relist, progressed);
            }
            Err(error) => {
                tracing::warn!(kind = K::KIND, %error, "watch broke; resuming");
                return (Next::Rewatch, progressed);
            }
        }
    }
    tracing::debug!(kind = K::KIND, "watch ended; resuming");
    (Next::Rewatch, progressed)
}
