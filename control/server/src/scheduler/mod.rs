//! The scheduler: binds each unbound pod to a node.
//!
//! It needs all Pods (every bound pod, to count pods per node, so a
//! `spec.nodeName=` field selector would not be enough) and all Nodes. It
//! reads them from the controllers' cache (one copy per process; the
//! controllers' reflectors call its [`Scheduler::hooks`]), queues unbound pods, and for each asks the pure [`decide`]
//! functions for a node. Pods that fit nowhere get PodScheduled=False
//! (reason Unschedulable) and are retried when a Node changes or after a
//! back-off.

pub mod decide;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{Node, Pod};
use tracing::Instrument;
use weir_client::{Client, Error};

use crate::controllers::queue::WorkQueue;
use crate::controllers::store::{Change, ObjKey};
use crate::controllers::{Cache, Hooks, emit, util};
use weir_client::events::{self, EventType, Recorder};

struct Sched {
    client: Client,
    /// The controllers' cache: the process keeps one copy of every Pod and
    /// Node, fed by the controllers' reflectors, which call [`Scheduler::hooks`].
    cache: Arc<RwLock<Cache>>,
    queue: WorkQueue<ObjKey>,
    /// Pods bound by us that the cache has not shown bound yet (pod -> node),
    /// so back-to-back decisions count them (kube-scheduler's "assumed pods").
    assumed: Mutex<HashMap<ObjKey, String>>,
    events: Recorder,
}

impl Sched {
    fn assumed(&self) -> std::sync::MutexGuard<'_, HashMap<ObjKey, String>> {
        self.assumed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_pod(&self, ch: &Change<Pod>) {
        match &ch.new {
            Some(p) if decide::wants_scheduling(p) => self.queue.add(ObjKey::of(p)),
            // Bound or gone: the cache now tells the truth about it.
            Some(p) => {
                self.assumed().remove(&ObjKey::of(p));
            }
            None => {
                if let Some(p) = &ch.old {
                    self.assumed().remove(&ObjKey::of(p));
                }
            }
        }
    }

    fn on_node(&self, _ch: &Change<Node>) {
        // Any node change may make a waiting pod fit.
        let pending: Vec<ObjKey> = {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            c.pods
                .iter()
                .filter(|p| decide::wants_scheduling(p))
                .map(ObjKey::of)
                .collect()
        };
        for k in pending {
            self.queue.add(k);
        }
    }

    async fn schedule_one(&self, key: &ObjKey) -> Result<(), Error> {
        let (pod, nodes, counts) = {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let Some(pod) = c.pods.get(key).cloned() else {
                return Ok(());
            };
            let nodes: Vec<Node> = c.nodes.iter().cloned().collect();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for p in c.pods.iter().filter(|p| util::pod_active(p)) {
                if let Some(n) = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .filter(|n| !n.is_empty())
                {
                    *counts.entry(n).or_default() += 1;
                }
            }
            for n in self.assumed().values() {
                *counts.entry(n.clone()).or_default() += 1;
            }
            (pod, nodes, counts)
        };
        if !decide::wants_scheduling(&pod) || self.assumed().contains_key(key) {
            return Ok(());
        }
        match decide::schedule(&pod, &nodes, &counts) {
            Ok(node) => {
                match self.client.bind(&key.namespace, &key.name, &node).await {
                    Ok(()) => {
                        tracing::info!(node = %node, "bound pod");
                        emit(
                            &self.events,
                            events::reference(&pod),
                            EventType::Normal,
                            "Scheduled",
                            format!(
                                "Successfully assigned {}/{} to {node}",
                                key.namespace, key.name
                            ),
                        );
                        self.assumed().insert(key.clone(), node);
                        self.queue.forget(key);
                    }
                    // Deleted meanwhile, or bound by someone else: nothing to do.
                    Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => {
                        tracing::debug!("pod gone or already bound");
                    }
                    Err(e) => return Err(e),
                }
                Ok(())
            }
            Err(u) => {
                tracing::info!(reason = %u.message, "pod unschedulable");
                emit(
                    &self.events,
                    events::reference(&pod),
                    EventType::Warning,
                    "FailedScheduling",
                    u.message.clone(),
                );
                if let Some(cond) =
                    decide::unschedulable_condition(&pod, &u, util::time(util::now()))
                {
                    let mut p = pod.clone();
                    let status = p.status.get_or_insert_with(Default::default);
                    status.phase.get_or_insert_with(|| "Pending".into());
                    let conds = status.conditions.get_or_insert_with(Vec::new);
                    conds.retain(|c| c.type_ != "PodScheduled");
                    conds.push(cond);
                    match self.client.update_status(&p).await {
                        Ok(_) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Try again later even if no Node event arrives.
                self.queue.retry(key.clone());
                Ok(())
            }
        }
    }
}

/// The scheduler, sharing the controllers' cache of Pods and Nodes.
pub struct Scheduler(Arc<Sched>);

impl Scheduler {
    pub fn new(client: Client, cache: Arc<RwLock<Cache>>) -> Self {
        Self(Arc::new(Sched {
            client: client.clone(),
            cache,
            queue: WorkQueue::new(),
            assumed: Mutex::new(HashMap::new()),
            events: Recorder::new(client, "default-scheduler", None),
        }))
    }

    /// What the controllers' Pod and Node reflectors must call for the
    /// scheduler (pods to queue, nodes that may make waiting pods fit).
    pub fn hooks(&self) -> Hooks {
        let (p, n) = (self.0.clone(), self.0.clone());
        Hooks {
            on_pod: Some(Arc::new(move |ch: &Change<Pod>| p.on_pod(ch))),
            on_node: Some(Arc::new(move |ch: &Change<Node>| n.on_node(ch))),
        }
    }

    /// Runs the scheduler until the process exits.
    pub async fn run(self) -> anyhow::Result<()> {
        run(self.0).await
    }
}

async fn run(s: Arc<Sched>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let w = s.clone();
    tasks.spawn(async move {
        loop {
            let key = w.queue.pop().await;
            let span =
                tracing::info_span!("schedule", namespace = %key.namespace, name = %key.name);
            match w.schedule_one(&key).instrument(span.clone()).await {
                Ok(()) => {}
                Err(error) => {
                    span.in_scope(|| tracing::warn!(%error, "scheduling failed; will retry"));
                    w.queue.retry(key);
                }
            }
        }
    });
    tracing::info!("scheduler started");
    match tasks.join_next().await {
        Some(Ok(())) | None => anyhow::bail!("a scheduler task ended unexpectedly"),
        Some(Err(e)) => Err(anyhow::anyhow!("a scheduler task panicked: {e}")),
    }
}
