//! Pod lifecycle: watch this node's Pods, keep a store, and run one worker per
//! pod uid that drives containerd through CRI (see `worker`).
//!
//! Data flow: API watch -> [`PodStore::apply`] (pure) -> per-uid worker ->
//! observe (CRI) -> [`plan::plan`] (pure) -> execute -> [`status::pod_status`]
//! (pure) -> `update_status`. Before a sandbox's first container starts, the
//! worker waits until NetworkPolicy covers the pod (`isolation`).

pub mod isolation;
pub mod observed;
pub mod plan;
pub mod spec;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use weir_client::{ListParams, WatchEvent, WatchParams};

use observed::LABEL_POD_UID;
pub use worker::{NetworkHook, WorkerContext};

/// What the watcher tells the store.
#[derive(Debug, Clone)]
pub enum PodEvent {
    /// A complete list (after start-up, a reconnect or an expired watch).
    Sync(Vec<Pod>),
    Applied(Pod),
    Deleted(Pod),
}

/// This node's pods as the API last showed them, keyed by uid. No I/O.
#[derive(Debug, Default)]
pub struct PodStore {
    node: String,
    pods: HashMap<String, Pod>,
    /// A full list has been applied: a uid missing from the store really is gone.
    synced: bool,
}

fn uid_of(pod: &Pod) -> Option<&str> {
    pod.metadata.uid.as_deref().filter(|u| !u.is_empty())
}

impl PodStore {
    pub fn new(node: impl Into<String>) -> Self {
        PodStore {
            node: node.into(),
            ..Default::default()
        }
    }

    /// Whether `pod` is bound to this node (the server filters by field
    /// selector too; this keeps the agent correct if it does not).
    pub fn is_ours(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.node.as_str())
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Applies an event and returns what changed: (uid, the pod now, or None if gone).
    pub fn apply(&mut self, event: PodEvent) -> Vec<(String, Option<Pod>)> {
        let mut changes = Vec::new();
        match event {
            PodEvent::Sync(list) => {
                let mut seen = HashSet::new();
                let ours: Vec<Pod> = list.into_iter().filter(|p| self.is_ours(p)).collect();
                for pod in ours {
                    let Some(uid) = uid_of(&pod).map(str::to_string) else {
                        continue;
                    };
                    seen.insert(uid.clone());
                    if self.pods.get(&uid) != Some(&pod) {
                        self.pods.insert(uid.clone(), pod.clone());
                        changes.push((uid, Some(pod)));
                    }
                }
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|u| !seen.contains(*u))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.pods.remove(&uid);
                    changes.push((uid, None));
                }
                self.synced = true;
            }
            PodEvent::Applied(pod) => {
                let Some(uid) = uid_of(&pod).map(str::to_string) else {
                    return changes;
                };
                if self.is_ours(&pod) {
                    self.pods.insert(uid.clone(), pod.clone());
                    changes.push((uid, Some(pod)));
                } else if self.pods.remove(&uid).is_some() {
                    changes.push((uid, None));
                }
            }
            PodEvent::Deleted(pod) => {
                let Some(uid) = uid_of(&pod).map(str::to_string) else {
                    return changes;
                };
                if self.pods.remove(&uid).is_some() {
                    changes.push((uid, None));
                }
            }
        }
        changes
    }
}

struct Worker {
    tx: watch::Sender<Option<Pod>>,
    handle: JoinHandle<()>,
}

/// Runs the pod lifecycle until the process ends.
pub async fn run(ctx: Arc<WorkerContext>, node: String, resync: Duration) {
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(watch_pods(ctx.api.clone(), node.clone(), tx));
    let mut store = PodStore::new(node);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tick = tokio::time::interval(resync);
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { return };
                let relisted = matches!(event, PodEvent::Sync(_));
                for (uid, pod) in store.apply(event) {
                    dispatch(&ctx, &mut workers, uid, pod);
                }
                // After a full list the store is authoritative: clean up at once
                // what the runtime holds for pods that no longer exist.
                if relisted && let Err(error) = adopt_orphans(&ctx, &store, &mut workers).await {
                    warn!(error = %error, "cannot list sandboxes to find orphans");
                }
            }
            _ = tick.tick() => {
                workers.retain(|_, w| !w.handle.is_finished());
                if store.is_synced() && let Err(error) = adopt_orphans(&ctx, &store, &mut workers).await {
                    warn!(error = %error, "cannot list sandboxes to find orphans");
                }
            }
        }
    }
}

/// Hands the pod's newest state to its worker, starting one if needed.
fn dispatch(
    ctx: &Arc<WorkerContext>,
    workers: &mut HashMap<String, Worker>,
    uid: String,
    pod: Option<Pod>,
) {
    if let Some(w) = workers.get(&uid).filter(|w| !w.handle.is_finished()) {
        w.tx.send_replace(pod);
        return;
    }
    debug!(uid = %uid, "starting pod worker");
    let (tx, rx) = watch::channel(pod);
    let handle = tokio::spawn(worker::run_worker(ctx.clone(), uid.clone(), rx));
    workers.insert(uid, Worker { tx, handle });
}

/// Starts clean-up workers for sandboxes whose pod the API does not have
/// (deleted while the agent was down, or left over from a crash).
async fn adopt_orphans(
    ctx: &Arc<WorkerContext>,
    store: &PodStore,
    workers: &mut HashMap<String, Worker>,
) -> Result<(), crate::cri::CriError> {
    let sandboxes = ctx.cri.list_pod_sandboxes(HashMap::new()).await?;
    let orphans: HashSet<String> = sandboxes
        .iter()
        .filter_map(|s| s.labels.get(LABEL_POD_UID).cloned())
        .filter(|uid| !store.contains(uid) && !workers.contains_key(uid))
        .collect();
    for uid in orphans {
        info!(uid = %uid, "cleaning up sandbox of a pod the API no longer has");
        dispatch(ctx, workers, uid, None);
    }
    Ok(())
}

/// List, then watch from the list's revision; re-list on expiry or after an
/// error (with back-off). Feeds the store through `tx`.
async fn watch_pods(api: weir_client::Client, node: String, tx: mpsc::Sender<PodEvent>) {
    let mut backoff = Duration::from_millis(500);
    let mut field_selector = format!("spec.nodeName={node}");
    loop {
        match list_and_watch(&api, &field_selector, &tx, &mut backoff).await {
            Ok(()) => return, // the store is gone: the agent is shutting down
            Err(weir_client::Error::Expired(_)) => {
                info!("pod watch expired; re-listing");
                continue;
            }
            Err(weir_client::Error::Invalid(msg) | weir_client::Error::Unimplemented(msg))
                if !field_selector.is_empty() =>
            {
                warn!(message = %msg, "server rejected the spec.nodeName field selector; filtering on the agent");
                field_selector.clear();
                continue;
            }
            Err(error) => {
                warn!(error = %error, retry_in = ?backoff, "pod watch failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn list_and_watch(
    api: &weir_client::Client,
    field_selector: &str,
    tx: &mpsc::Sender<PodEvent>,
    backoff: &mut Duration,
) -> Result<(), weir_client::Error> {
    let list = api
        .list::<Pod>("", &ListParams::default().fields(field_selector))
        .await?;
    *backoff = Duration::from_millis(500);
    let mut rv = list.resource_version;
    if tx.send(PodEvent::Sync(list.items)).await.is_err() {
        return Ok(());
    }
    loop {
        let params = WatchParams {
            allow_bookmarks: true,
            ..WatchParams::default()
        }
        .fields(field_selector)
        .from_version(rv.clone());
        let mut stream = api.watch::<Pod>("", &params).await?;
        while let Some(item) = stream.next().await {
            let (event, version) = item?;
            rv = version;
            let event = match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => PodEvent::Applied(p),
                WatchEvent::Deleted(p) => PodEvent::Deleted(p),
                WatchEvent::Bookmark(_) => continue,
            };
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
        debug!("pod watch stream ended; resuming");
    }
}

/// How often [`reconcile_ipam`] compares IPAM records with the sandboxes.
pub const IPAM_RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// At start and every [`IPAM_RECONCILE_EVERY`]: lists every sandbox over
/// CRI (any state) and releases the weir-cni address records whose sandbox
/// is gone (see `weir_cni::reconcile`). Runs until the process ends.
pub async fn reconcile_ipam(cri: crate::cri::CriClient, dir: PathBuf, pod_cidr: ipnet::Ipv4Net) {
    let mut tick = tokio::time::interval(IPAM_RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // No filter: ready and NotReady sandboxes alike keep their records.
        let live: HashSet<String> = match cri.list_pod_sandboxes(HashMap::new()).await {
            Ok(items) => items.into_iter().map(|s| s.id).collect(),
            Err(error) => {
                warn!(error = %error, "cannot list sandboxes; IPAM reconcile skipped");
                continue;
            }
        };
        let dir = dir.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let store = weir_cni::ipam::IpamStore::open(&dir, pod_cidr)?;
            weir_cni::reconcile::reconcile(
                &store,
                &live,
                std::time::SystemTime::now(),
                weir_cni::reconcile::GRACE,
            )
        })
        .await;
        match pass {
            Ok(Ok(outcome)) => {
                for (ip, container_id) in outcome.release {
                    info!(%ip, container_id, "released the address of a vanished sandbox");
                }
                for ip in outcome.unparseable {
                    warn!(%ip, "unparseable IPAM record left in place");
                }
            }
            Ok(Err(error)) => warn!(error = %error, "IPAM reconcile failed"),
            Err(error) => warn!(error = %error, "IPAM reconcile task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, node: Option<&str>, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn uids(changes: &[(String, Option<Pod>)]) -> Vec<(&str, bool)> {
        let mut v: Vec<(&str, bool)> = changes
            .iter()
            .map(|(u, p)| (u.as_str(), p.is_some()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn store_events() {
        let mut s = PodStore::new("node1");
        assert!(!s.is_synced());
        let c = s.apply(PodEvent::Sync(vec![
            pod("a", Some("node1"), "1"),
            pod("b", Some("node2"), "1"),
            pod("c", None, "1"),
        ]));
        assert_eq!(uids(&c), vec![("a", true)], "only pods bound here");
        assert!(s.is_synced());

        let c = s.apply(PodEvent::Applied(pod("a", Some("node1"), "2")));
        assert_eq!(uids(&c), vec![("a", true)]);
        let c = s.apply(PodEvent::Applied(pod("c", Some("node1"), "2")));
        assert_eq!(uids(&c), vec![("c", true)], "bound to us later");
        let c = s.apply(PodEvent::Applied(pod("b", Some("node2"), "2")));
        assert!(c.is_empty(), "other nodes' pods are ignored");

        let c = s.apply(PodEvent::Deleted(pod("c", Some("node1"), "3")));
        assert_eq!(uids(&c), vec![("c", false)]);
        let c = s.apply(PodEvent::Deleted(pod("zzz", Some("node1"), "3")));
        assert!(c.is_empty(), "unknown deletions change nothing");

        // Re-list after an expired watch: a pod deleted meanwhile is reported gone,
        // an unchanged one is not re-dispatched.
        s.apply(PodEvent::Applied(pod("d", Some("node1"), "4")));
        let c = s.apply(PodEvent::Sync(vec![
            pod("a", Some("node1"), "2"),
            pod("e", Some("node1"), "5"),
        ]));
        assert_eq!(uids(&c), vec![("d", false), ("e", true)]);
        assert!(s.contains("a") && s.contains("e") && !s.contains("d"));
    }

    #[test]
    fn events_without_uid_are_ignored() {
        let mut s = PodStore::new("node1");
        let mut p = pod("a", Some("node1"), "1");
        p.metadata.uid = None;
        assert!(s.apply(PodEvent::Applied(p)).is_empty());
    }
}
