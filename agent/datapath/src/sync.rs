//! Service sync: watch Services and EndpointSlices -> stores -> plan -> maps.
//!
//! Two reflector tasks (one per kind) list, then watch from the list's
//! resourceVersion, re-list when the server says the revision expired, and
//! back off on other errors. They feed one loop that owns the stores and, once
//! both kinds have been listed, plans the map changes with the pure planner
//! and applies them. Planning against a partial view (e.g. Services listed but
//! EndpointSlices not yet) would empty every service on agent restart, so
//! nothing is written before both initial lists arrived.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::Metadata;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_client::{Client, ListParams, WatchEvent, WatchParams};

use super::plan;
use super::{Datapath, DatapathError};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Watches Services and EndpointSlices (all namespaces) and keeps the service
/// and backend maps in sync, writing only the differences. Runs until a watch
/// task stops (which only happens if it panics); API errors are retried.
pub async fn run_service_sync(
    client: Client,
    dp: Arc<Mutex<Datapath>>,
) -> Result<(), DatapathError> {
    let (tx, mut rx) = mpsc::channel(256);
    let _services = AbortOnDrop(tokio::spawn(reflect::<Service>(
        client.clone(),
        tx.clone(),
        |e| Update::Services(Box::new(e)),
    )));
    let _slices = AbortOnDrop(tokio::spawn(reflect::<EndpointSlice>(client, tx, |e| {
        Update::Slices(Box::new(e))
    })));

    let mut services = Store::default();
    let mut slices = Store::default();
    let (mut current, node) = {
        let dp = lock(&dp);
        (dp.read_state()?, dp.node_context())
    };
    let mut next_slot = current.next_free_slot();
    let mut retry: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::default();
    let mut report = tokio::time::interval(DROP_REPORT_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reported_drops = Vec::new();

    loop {
        let retry_at = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let update = tokio::select! {
            update = rx.recv() => update,
            () = retry_at => Some(Update::Retry),
            _ = report.tick() => {
                report_drops(&dp, &mut reported_drops);
                // The guard must be gone before anything else locks.
                let collected = lock(&dp).gc_conntrack();
                match collected {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(entries = n, "removed idle conntrack entries"),
                    Err(error) => tracing::warn!(%error, "cannot collect idle conntrack entries"),
                }
                continue;
            }
        };
        let Some(update) = update else {
            return Err(DatapathError::WatchStopped {
                kind: "Service/EndpointSlice",
            });
        };
        let mut batch = vec![update];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for update in batch {
            match update {
                Update::Services(e) => services.apply(*e),
                Update::Slices(e) => slices.apply(*e),
                Update::Retry => {}
            }
        }
        if !(services.synced && slices.synced) {
            continue;
        }

        let desired = plan::desired_services(services.objects(), slices.objects(), node.as_ref());
        let ops = plan::diff(&desired, &current, &mut next_slot);
        if ops.is_empty() {
            retry = None;
            continue;
        }
        let span = tracing::info_span!("service_sync", frontends = desired.len(), ops = ops.len());
        match span.in_scope(|| apply_plan(&dp, &ops, &desired, &mut current)) {
            Ok(()) => {
                retry = None;
                backoff.reset();
            }
            Err(error) => {
                let delay = backoff.next();
                tracing::warn!(parent: &span, %error, retry_in = ?delay, "cannot update service maps");
                retry = Some(tokio::time::Instant::now() + delay);
            }
        }
    }
}

/// How often the sync loop checks the datapath's drop counters and collects
/// idle conntrack entries.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(30);

/// Logs the drop counters that grew since the last report (a warning per
/// reason: a full map or a service without backends shows up in the logs).
fn report_drops(dp: &Mutex<Datapath>, reported: &mut Vec<(&'static str, u64)>) {
    let now = match lock(dp).drop_counters() {
        Ok(now) => now,
        Err(error) => {
            tracing::warn!(%error, "cannot read the datapath drop counters");
            return;
        }
    };
    for (reason, count) in drop_increases(reported, &now) {
        tracing::warn!(reason, count, "the datapath dropped packets");
    }
    *reported = now;
}

/// The counters of `now` that grew since `before` (a counter missing from
/// `before` counts from 0), with their increase.
fn drop_increases(
    before: &[(&'static str, u64)],
    now: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    now.iter()
        .filter_map(|(name, count)| {
            let old = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            (*count > old).then(|| (*name, count - old))
        })
        .collect()
}

/// Applies a plan under one lock of the datapath: the map ops, then, if the
/// plan removed backends or services, the purge of stale UDP conntrack.
/// Synchronous on purpose: a `std::sync::Mutex` guard must not live across an
/// `.await`, and taking the lock twice in one statement would deadlock.
pub(super) fn apply_plan(
    dp: &Mutex<Datapath>,
    ops: &[plan::MapOp],
    desired: &plan::DesiredServices,
    current: &mut plan::MapState,
) -> Result<(), DatapathError> {
    let mut dp = lock(dp);
    dp.apply(ops, current)?;
    tracing::info!("service maps updated");
    let removes = |op: &plan::MapOp| {
        matches!(
            op,
            plan::MapOp::DeleteBackend(_) | plan::MapOp::DeleteService(_)
        )
    };
    if ops.iter().any(removes) {
        match dp.purge_stale_udp_conntrack(desired) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "purged stale UDP conntrack"),
            Err(error) => tracing::warn!(%error, "cannot purge stale UDP conntrack"),
        }
    }
    Ok(())
}

fn lock(dp: &Mutex<Datapath>) -> std::sync::MutexGuard<'_, Datapath> {
    // A panic while holding the lock leaves the maps as the kernel has them;
    // `current` is re-planned against on every pass, so the data is usable.
    dp.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One change reported by a reflector (boxed: the objects are large).
enum Update {
    Services(Box<StoreEvent<Service>>),
    Slices(Box<StoreEvent<EndpointSlice>>),
    /// Time to retry a failed apply.
    Retry,
}

/// What a reflector tells the store.
enum StoreEvent<K> {
    /// A complete list: replaces the store's contents.
    Listed(Vec<K>),
    Event(WatchEvent<K>),
}

/// The last known state of one kind, keyed by namespace/name. `apply` does no I/O.
struct Store<K> {
    objects: BTreeMap<(String, String), K>,
    /// A complete list has been seen.
    synced: bool,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            synced: false,
        }
    }
}

impl<K: Metadata<Ty = ObjectMeta>> Store<K> {
    fn apply(&mut self, event: StoreEvent<K>) {
        match event {
            StoreEvent::Listed(items) => {
                self.objects = items.into_iter().map(|o| (key_of(&o), o)).collect();
                self.synced = true;
            }
            StoreEvent::Event(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                self.objects.insert(key_of(&o), o);
            }
            StoreEvent::Event(WatchEvent::Deleted(o)) => {
                self.objects.remove(&key_of(&o));
            }
            StoreEvent::Event(WatchEvent::Bookmark(_)) => {}
        }
    }

    fn objects(&self) -> impl Iterator<Item = &K> {
        self.objects.values()
    }
}

fn key_of<K: Metadata<Ty = ObjectMeta>>(o: &K) -> (String, String) {
    let m = o.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// List, then watch from the list's revision; re-list on `Expired`; back off
/// and re-watch on other errors and when the stream ends. Returns when the
/// receiver is gone.
async fn reflect<K>(client: Client, tx: mpsc::Sender<Update>, wrap: fn(StoreEvent<K>) -> Update)
where
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
            let mut stream = match client
                .watch::<K>("", &WatchParams::default().from_version(rv.clone()))
                .await
            {
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

/// Exponential backoff between `BACKOFF_MIN` and `BACKOFF_MAX`.
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Aborts a spawned task when the sync future is dropped (e.g. the agent's
/// shutdown cancels it), so the reflectors do not outlive it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip}
        }))
        .expect("valid Service")
    }

    fn ips(store: &Store<Service>) -> Vec<String> {
        store
            .objects()
            .filter_map(|s| s.spec.as_ref()?.cluster_ip.clone())
            .collect()
    }

    #[test]
    fn store_applies_lists_and_events() {
        let mut store = Store::default();
        store.apply(StoreEvent::Event(WatchEvent::Added(svc(
            "a",
            "x",
            "10.96.0.1",
        ))));
        assert!(!store.synced, "events alone do not make a store synced");
        store.apply(StoreEvent::Listed(vec![
            svc("a", "y", "10.96.0.2"),
            svc("b", "y", "10.96.0.3"),
        ]));
        assert!(store.synced);
        assert_eq!(
            ips(&store),
            ["10.96.0.2", "10.96.0.3"],
            "a list replaces everything"
        );
        store.apply(StoreEvent::Event(WatchEvent::Modified(svc(
            "a",
            "y",
            "10.96.0.9",
        ))));
        store.apply(StoreEvent::Event(WatchEvent::Deleted(svc(
            "b",
            "y",
            "10.96.0.3",
        ))));
        store.apply(StoreEvent::Event(WatchEvent::Bookmark("7".into())));
        assert_eq!(ips(&store), ["10.96.0.9"]);
    }

    #[test]
    fn drop_increases_table() {
        type Counters = Vec<(&'static str, u64)>;
        let cases: [(&str, Counters, Counters, Counters); 4] = [
            (
                "first report: every non-zero counter",
                vec![],
                vec![("no_backend", 3), ("rewrite", 0)],
                vec![("no_backend", 3)],
            ),
            (
                "unchanged counters are quiet",
                vec![("no_backend", 3)],
                vec![("no_backend", 3)],
                vec![],
            ),
            (
                "only the increase is reported",
                vec![("no_backend", 3), ("no_route", 1)],
                vec![("no_backend", 5), ("no_route", 1)],
                vec![("no_backend", 2)],
            ),
            (
                "counters reset by recreated maps are quiet",
                vec![("map_insert", 9)],
                vec![("map_insert", 2)],
                vec![],
            ),
        ];
        for (name, before, now, want) in cases {
            assert_eq!(drop_increases(&before, &now), want, "case: {name}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<_> = (0..8).map(|_| b.next()).collect();
        assert_eq!(seq[0], BACKOFF_MIN);
        assert_eq!(seq[1], BACKOFF_MIN * 2);
        assert_eq!(*seq.last().expect("non-empty"), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }
}
