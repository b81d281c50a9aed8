//! The NetworkPolicy sync: watch NetworkPolicies, Pods (every namespace: the
//! ipcache needs every pod address of the cluster), Namespaces and Nodes ->
//! small records ([`Inputs`], pure) -> [`compile`] with stable numbers ->
//! [`diff`] against what the maps hold -> [`apply_ops`].
//!
//! - Latency: each change is compiled as soon as it arrives; changes that
//!   arrive while a compile runs are coalesced into the next one (no fixed
//!   debounce delay). Objects are reduced on arrival, so a pod's status
//!   churn or a Node heartbeat that changes no policy input compiles
//!   nothing.
//! - Nothing is written before all four kinds were listed once (a partial
//!   view would empty the maps on an agent restart).
//! - Restart: the pinned maps still hold what the previous agent wrote; they
//!   are read back and are the base of the first diff, and the identity,
//!   endpoint and CIDR numbers are recovered from them
//!   ([`recover_allocations`]), so the first compile rewrites only what
//!   changed while the agent was down: no flush, no renumbering.
//! - Failure: a compile that does not fit a map, or a number range that is
//!   used up, leaves the maps as they are; it is logged and recorded as a
//!   Warning Event on this Node, naming the map, and retried on the next
//!   change. A failed write is retried with back-off.
//! - New pods: a pod worker registers a pod's sandbox address before its
//!   first container starts ([`PolicyHandle::admit`]) and waits until a
//!   compile including it was applied, so a pod a policy selects is isolated
//!   before it can send or receive anything; the API's pod status (which
//!   carries the address later) then takes over.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_client::events::Recorder;
use weir_client::{Client, WatchEvent};
use weir_ebpf_common::policy::identity;

use super::apply::{PolicyKernelMaps, apply_ops, is_map_full, read_maps};
use super::{
    Allocations, Allocator, IdentityKey, NamespaceInfo, NodeNetwork, ObjectRef, PodInfo,
    PolicyError, PolicyInput, PolicyLimits, PolicyMaps, compile, diff, node_network,
};
use crate::DatapathError;
use crate::reflect::{AbortOnDrop, Backoff, StoreEvent, reflect};

/// A registration no API pod confirmed is forgotten after this long (the
/// pod's status normally carries its address within seconds).
const REGISTRATION_TTL: Duration = Duration::from_secs(600);

/// What the sync needs to know about this node.
#[derive(Clone, Debug)]
pub struct PolicySyncConfig {
    /// The Node object's name: pods with this `spec.nodeName` are the
    /// endpoints this agent enforces policy for.
    pub node_name: String,
    /// The cluster's pod CIDR, if known: addresses in it that no known pod
    /// holds get identity UNMANAGED instead of WORLD.
    pub cluster_cidr: Option<Ipv4Net>,
    /// The node's bpffs directory, whose pinned `WEIR_CT` is swept after
    /// every change (connections the new maps deny are cut, see `sweep`);
    /// `None`: not swept.
    pub conntrack_pin_dir: Option<std::path::PathBuf>,
}

/// A pod worker's request: include this pod (with the address its sandbox
/// got) in the maps, and say when done.
struct Admission {
    uid: String,
    pod: PodInfo,
    ack: oneshot::Sender<Result<(), String>>,
}

/// The receiving end of [`PolicyHandle`]s, for [`run_policy_sync`].
pub struct PolicyAdmissions(mpsc::Receiver<Admission>);

/// How pod workers reach the policy sync. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    tx: mpsc::Sender<Admission>,
}

/// Why a pod could not be admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error(
        "the policy maps did not include the pod within {0:?} (the NetworkPolicy sync has not caught up)"
    )]
    Timeout(Duration),
    #[error("the policy maps cannot include the pod: {0}")]
    Refused(String),
    #[error("the NetworkPolicy sync is not running")]
    Stopped,
}

impl PolicyHandle {
    /// A handle and the admissions it sends, to give to [`run_policy_sync`].
    pub fn channel() -> (PolicyHandle, PolicyAdmissions) {
        let (tx, rx) = mpsc::channel(256);
        (PolicyHandle { tx }, PolicyAdmissions(rx))
    }

    /// Registers `pod` (uid `uid`, `pod.ip` = its sandbox's address) and
    /// waits, at most `timeout`, until a compile including it was applied
    /// to the maps.
    pub async fn admit(
        &self,
        uid: &str,
        pod: PodInfo,
        timeout: Duration,
    ) -> Result<(), AdmitError> {
        let (ack, done) = oneshot::channel();
        let request = Admission {
            uid: uid.to_string(),
            pod,
            ack,
        };
        let wait = async {
            self.tx
                .send(request)
                .await
                .map_err(|_| AdmitError::Stopped)?;
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(AdmitError::Refused(message)),
                Err(_) => Err(AdmitError::Stopped),
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(AdmitError::Timeout(timeout)))
    }
}

/// Keeps the policy maps in sync with the cluster's NetworkPolicies, Pods,
/// Namespaces and Nodes. `limits` are the capacities the kernel maps have
/// (see [`PolicyKernelMaps::take`]). `publish_names` is told, whenever it
/// changes, which NetworkPolicy ("namespace/name") each policy id stands
/// for (flow records name the deciding policy with it). Runs until a watch
/// task stops (only if it panics); API errors are retried.
pub async fn run_policy_sync(
    client: Client,
    mut maps: PolicyKernelMaps,
    limits: PolicyLimits,
    cfg: PolicySyncConfig,
    admissions: PolicyAdmissions,
    mut publish_names: impl FnMut(BTreeMap<u32, String>) + Send,
) -> Result<(), DatapathError> {
    let mut admissions = admissions.0;
    let (tx, mut rx) = mpsc::channel(1024);
    let _tasks = [
        AbortOnDrop(tokio::spawn(reflect::<NetworkPolicy, _>(
            client.clone(),
            tx.clone(),
            |e| Update::Policies(Box::new(e)),
            true,
        ))),
        AbortOnDrop(tokio::spawn(reflect::<Pod, _>(
            client.clone(),
            tx.clone(),
            |e| Update::Pods(Box::new(e)),
            true,
        ))),
        AbortOnDrop(tokio::spawn(reflect::<Namespace, _>(
            client.clone(),
            tx.clone(),
            |e| Update::Namespaces(Box::new(e)),
            true,
        ))),
        AbortOnDrop(tokio::spawn(reflect::<Node, _>(
            client.clone(),
            tx,
            |e| Update::Nodes(Box::new(e)),
            true,
        ))),
    ];
    let reporter = Reporter::new(client, &cfg.node_name);

    // After a restart the pinned maps hold the previous agent's work: diff
    // against it instead of starting from empty maps.
    let mut backoff = Backoff::default();
    let mut current = loop {
        match read_maps(&maps) {
            Ok(current) => break current,
            // Writing without knowing what the maps hold could flush them;
            // pods wait (their admission times out) until this succeeds.
            Err(error) => {
                let delay = backoff.next();
                tracing::warn!(%error, retry_in = ?delay, "cannot read the policy maps back");
                tokio::time::sleep(delay).await;
            }
        }
    };
    tracing::info!(
        ipcache = current.ipcache.len(),
        endpoints = current.endpoints.len(),
        policy = current.policy.len(),
        "policy maps read back"
    );
    let mut inputs = Inputs::default();
    let mut alloc: Option<Allocations> = None;
    let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut dirty = false;
    let mut retry: Option<Instant> = None;
    backoff.reset();
    let mut warned = Vec::new();
    let mut sweeper = super::Sweeper::new(cfg.conntrack_pin_dir.clone());

    loop {
        let retry_at = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else {
                    return Err(DatapathError::WatchStopped {
                        kind: "NetworkPolicy/Pod/Namespace/Node",
                    });
                };
                dirty |= inputs.apply(update, Instant::now().into_std());
            }
            admission = admissions.recv(), if !admissions.is_closed() => {
                if let Some(a) = admission {
                    inputs.register(a.uid, a.pod, Instant::now().into_std());
                    waiting.push(a.ack);
                    dirty = true;
                }
            }
            () = retry_at => {
                retry = None;
                dirty = true;
            }
        }
        // Coalesce whatever else is already queued into this pass.
        while let Ok(update) = rx.try_recv() {
            dirty |= inputs.apply(update, Instant::now().into_std());
        }
        while let Ok(a) = admissions.try_recv() {
            inputs.register(a.uid, a.pod, Instant::now().into_std());
            waiting.push(a.ack);
            dirty = true;
        }
        if !dirty || !inputs.synced() {
            continue;
        }
        dirty = false;

        let started = Instant::now();
        let pods = inputs.pods(Instant::now().into_std());
        let node = inputs.node_network(&cfg);
        let alloc_is_new = alloc.is_none();
        let prev = alloc.get_or_insert_with(|| recover_allocations(&current, &pods, &node.name));
        let policies = inputs.policies();
        let namespaces = inputs.namespaces();
        let input = PolicyInput {
            policies: &policies,
            pods: &pods,
            namespaces: &namespaces,
            node: &node,
        };
        let compiled = match compile(input, prev, &limits) {
            Ok(c) => c,
            Err(error) => {
                reporter.failed(&error.to_string(), map_of(&error));
                ack_all(&mut waiting, Err(error.to_string()));
                continue;
            }
        };
        if compiled.warnings != warned {
            for w in compiled.warnings.iter().filter(|w| !warned.contains(w)) {
                tracing::warn!(policy = %w.policy, field = %w.field, message = %w.message, "part of a NetworkPolicy matches nothing");
            }
            warned.clone_from(&compiled.warnings);
        }
        let ops = diff(&current, &compiled.maps, &limits);
        if compiled.alloc.policies != prev.policies || alloc_is_new {
            publish_names(
                compiled
                    .alloc
                    .policies
                    .iter()
                    .map(|(r, id)| (id, r.to_string()))
                    .collect(),
            );
        }
        // The maps may hold some of the new numbers even if a write fails:
        // keep them, so the next compile reuses them.
        *prev = compiled.alloc;
        match apply_ops(&mut maps, &ops, &mut current) {
            Ok(()) => {
                retry = None;
                backoff.reset();
                reporter.recovered();
                ack_all(&mut waiting, Ok(()));
                if !ops.is_empty() {
                    tracing::info!(
                        ops = ops.len(),
                        policies = policies.len(),
                        pods = pods.len(),
                        ipcache = current.ipcache.len(),
                        endpoints = current.endpoints.len(),
                        policy = current.policy.len(),
                        elapsed = ?started.elapsed(),
                        "policy maps updated"
                    );
                    sweeper.sweep(&ops, &current);
                }
            }
            Err(error) => {
                let delay = backoff.next();
                reporter.failed(&error.to_string(), is_map_full(&error));
                ack_all(&mut waiting, Err(error.to_string()));
                tracing::warn!(%error, retry_in = ?delay, "cannot update the policy maps");
                retry = Some(Instant::now() + delay);
            }
        }
    }
}

fn ack_all(waiting: &mut Vec<oneshot::Sender<Result<(), String>>>, result: Result<(), String>) {
    for ack in waiting.drain(..) {
        // The worker may have given up waiting: fine.
        let _ = ack.send(result.clone());
    }
}

/// The map a compile error is about, if any.
fn map_of(error: &PolicyError) -> Option<&'static str> {
    match error {
        PolicyError::MapFull { map, .. } => Some(map),
        PolicyError::Exhausted { .. } => None,
    }
}

/// Logs failures and records them as Warning Events on this Node, once per
/// distinct message (a failure repeating on every change is not re-sent).
struct Reporter {
    recorder: Recorder,
    node: k8s_openapi::api::core::v1::ObjectReference,
    last: std::sync::Mutex<Option<String>>,
}

impl Reporter {
    fn new(client: Client, node: &str) -> Self {
        Self {
            recorder: Recorder::new(client, "weir-agent", Some(node)),
            node: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
            last: std::sync::Mutex::new(None),
        }
    }

    fn failed(&self, message: &str, map: Option<&'static str>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() == Some(message) {
            return;
        }
        *last = Some(message.to_string());
        tracing::error!(
            error = message,
            map,
            "NetworkPolicy not applied; the policy maps keep their previous contents"
        );
        let (recorder, node) = (self.recorder.clone(), self.node.clone());
        let reason = if map.is_some() {
            "PolicyMapFull"
        } else {
            "PolicyNotApplied"
        };
        let message = message.to_string();
        tokio::spawn(async move {
            if let Err(error) = recorder.warning(&node, reason, &message).await {
                tracing::debug!(%error, reason, "could not record event");
            }
        });
    }

    fn recovered(&self) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.take().is_some() {
            tracing::info!("NetworkPolicy applied again");
        }
    }
}

/// Numbers an earlier agent gave, recovered from the maps it left (`maps`)
/// and the pods now known: a pod's `/32` in the ipcache carries its
/// identity, an endpoint entry its endpoint id, and the entry of each
/// ipBlock prefix its CIDR identity (the least specific prefix carrying a
/// CIDR identity is the prefix it was given to). Policy ids are not
/// recovered (they only label the entries: a renumbered policy rewrites its
/// entries' values in place).
pub fn recover_allocations(maps: &PolicyMaps, pods: &[PodInfo], node: &str) -> Allocations {
    let by_ip: BTreeMap<Ipv4Addr, &PodInfo> = pods
        .iter()
        .filter(|p| !p.host_network)
        .filter_map(|p| Some((p.ip?, p)))
        .collect();
    let addr = |be: u32| Ipv4Addr::from(u32::from_be(be));
    let identities = maps
        .ipcache
        .iter()
        .filter(|((len, _), v)| {
            *len == 32 && (identity::POD_MIN..=identity::POD_MAX).contains(&v.identity)
        })
        .filter_map(|((_, k), v)| {
            let pod = by_ip.get(&addr(k.addr))?;
            let key = IdentityKey {
                namespace: pod.pod.namespace.clone(),
                labels: pod.labels.clone(),
                named_ports: pod.named_ports.clone(),
            };
            Some((key, v.identity))
        });
    let endpoints = maps.endpoints.iter().filter_map(|(k, v)| {
        let pod = by_ip.get(&addr(k.addr))?;
        (pod.node.as_deref() == Some(node)).then(|| (pod.pod.clone(), u32::from(v.endpoint_id)))
    });
    // Per CIDR identity, the least specific prefix carrying it.
    let mut cidrs: BTreeMap<u32, Ipv4Net> = BTreeMap::new();
    for ((len, k), v) in &maps.ipcache {
        if v.cidr_identity == identity::ANY {
            continue;
        }
        let Ok(net) = Ipv4Net::new(addr(k.addr), u8::try_from(*len).unwrap_or(32)) else {
            continue;
        };
        let entry = cidrs.entry(v.cidr_identity).or_insert(net);
        if net.prefix_len() < entry.prefix_len() {
            *entry = net;
        }
    }
    let fresh = Allocations::default();
    Allocations {
        identities: Allocator::seeded(identity::POD_MIN, identity::POD_MAX, identities),
        cidrs: Allocator::seeded(
            identity::CIDR_MIN,
            identity::CIDR_MAX,
            cidrs.into_iter().map(|(id, net)| (net.trunc(), id)),
        ),
        endpoints: Allocator::seeded(1, u32::from(u16::MAX), endpoints),
        policies: fresh.policies,
    }
}

/// A pod address a worker registered before the API showed it.
#[derive(Clone, Debug, PartialEq)]
struct Registered {
    uid: String,
    pod: PodInfo,
    at: std::time::Instant,
}

/// The compiler's inputs as the watches last showed them, reduced to what
/// policy reads. No I/O.
#[derive(Default)]
struct Inputs {
    policies: BTreeMap<ObjectRef, NetworkPolicy>,
    /// By namespace/name: (uid, what policy needs of the pod).
    pods: BTreeMap<ObjectRef, (String, PodInfo)>,
    namespaces: BTreeMap<String, NamespaceInfo>,
    /// Nodes reduced to their name, podCIDR and InternalIP addresses.
    nodes: BTreeMap<String, Node>,
    /// Sandbox addresses pod workers registered, until the API shows them.
    registered: BTreeMap<ObjectRef, Registered>,
    listed: Listed,
}

/// Which kinds have been listed once.
#[derive(Default)]
struct Listed {
    policies: bool,
    pods: bool,
    namespaces: bool,
    nodes: bool,
}

impl Inputs {
    fn synced(&self) -> bool {
        let l = &self.listed;
        l.policies && l.pods && l.namespaces && l.nodes
    }

    /// Applies one update; whether the compiler's inputs changed.
    fn apply(&mut self, update: Update, now: std::time::Instant) -> bool {
        let changed = match update {
            Update::Policies(e) => {
                self.listed.policies |= e.is_list();
                apply_to(&mut self.policies, *e, |p| {
                    let reduced = reduce_policy(p)?;
                    let m = &reduced.metadata;
                    Some((
                        ObjectRef::new(m.namespace.clone()?, m.name.clone()?),
                        reduced,
                    ))
                })
            }
            Update::Pods(e) => {
                self.listed.pods |= e.is_list();
                if let StoreEvent::Event(WatchEvent::Deleted(pod)) = &*e {
                    self.forget_registration(pod);
                }
                apply_to(&mut self.pods, *e, |p| {
                    let info = PodInfo::from_pod(&p)?;
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    Some((info.pod.clone(), (uid, info)))
                })
            }
            Update::Namespaces(e) => {
                self.listed.namespaces |= e.is_list();
                apply_to(&mut self.namespaces, *e, |n| {
                    let info = NamespaceInfo::from_namespace(&n)?;
                    Some((info.name.clone(), info))
                })
            }
            Update::Nodes(e) => {
                self.listed.nodes |= e.is_list();
                apply_to(&mut self.nodes, *e, |n| {
                    let reduced = reduce_node(&n);
                    Some((reduced.metadata.name.clone()?, reduced))
                })
            }
        };
        self.prune_registrations(now) || changed
    }

    /// Records a pod worker's registration.
    fn register(&mut self, uid: String, pod: PodInfo, now: std::time::Instant) {
        self.registered
            .insert(pod.pod.clone(), Registered { uid, pod, at: now });
    }

    fn forget_registration(&mut self, pod: &Pod) {
        let Some(info) = PodInfo::from_pod(pod) else {
            return;
        };
        if self
            .registered
            .get(&info.pod)
            .is_some_and(|r| Some(r.uid.as_str()) == pod.metadata.uid.as_deref())
        {
            self.registered.remove(&info.pod);
        }
    }

    /// Drops the registrations the API caught up with (same pod, same
    /// address) and those older than [`REGISTRATION_TTL`]; whether one that
    /// the API did not confirm was dropped (the pods changed).
    fn prune_registrations(&mut self, now: std::time::Instant) -> bool {
        let mut changed = false;
        let pods = &self.pods;
        self.registered.retain(|r, reg| {
            let confirmed = pods
                .get(r)
                .is_some_and(|(uid, info)| *uid == reg.uid && info.ip == reg.pod.ip);
            let expired = now.saturating_duration_since(reg.at) > REGISTRATION_TTL;
            changed |= expired && !confirmed;
            !(confirmed || expired)
        });
        changed
    }

    /// The pods to compile: the API's, with registered sandbox addresses in
    /// place of what the API does not show yet. Expired registrations are
    /// left out.
    fn pods(&self, now: std::time::Instant) -> Vec<PodInfo> {
        let mut out: BTreeMap<&ObjectRef, &PodInfo> =
            self.pods.iter().map(|(r, (_, info))| (r, info)).collect();
        for (r, reg) in &self.registered {
            if now.saturating_duration_since(reg.at) <= REGISTRATION_TTL {
                out.insert(r, &reg.pod);
            }
        }
        out.into_values().cloned().collect()
    }

    fn policies(&self) -> Vec<NetworkPolicy> {
        self.policies.values().cloned().collect()
    }

    fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.namespaces.values().cloned().collect()
    }

    fn node_network(&self, cfg: &PolicySyncConfig) -> NodeNetwork {
        let nodes: Vec<Node> = self.nodes.values().cloned().collect();
        node_network(&nodes, &cfg.node_name, cfg.cluster_cidr)
    }
}

/// Applies a list or a watch event to a store of reduced records; whether
/// the store changed.
fn apply_to<K: Ord, O, V: PartialEq>(
    store: &mut BTreeMap<K, V>,
    event: StoreEvent<O>,
    reduce: impl Fn(O) -> Option<(K, V)>,
) -> bool {
    match event {
        StoreEvent::Listed(items) => {
            let fresh: BTreeMap<K, V> = items.into_iter().filter_map(reduce).collect();
            let changed = fresh != *store;
            *store = fresh;
            changed
        }
        StoreEvent::Event(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
            let Some((k, v)) = reduce(o) else {
                return false;
            };
            if store.get(&k) == Some(&v) {
                return false;
            }
            store.insert(k, v);
            true
        }
        StoreEvent::Event(WatchEvent::Deleted(o)) => match reduce(o) {
            Some((k, _)) => store.remove(&k).is_some(),
            None => false,
        },
        StoreEvent::Event(WatchEvent::Bookmark(_)) => false,
    }
}

/// A NetworkPolicy without what the compiler does not read (status,
/// resourceVersion, managedFields...), so only a real change recompiles.
fn reduce_policy(p: NetworkPolicy) -> Option<NetworkPolicy> {
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            namespace: p.metadata.namespace,
            name: p.metadata.name,
            ..Default::default()
        },
        spec: p.spec,
    })
}

/// A Node reduced to what [`node_network`] reads: its name, podCIDR and
/// InternalIP addresses (heartbeats change none of them).
fn reduce_node(n: &Node) -> Node {
    let addresses: Vec<NodeAddress> = n
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .cloned()
        .collect();
    Node {
        metadata: ObjectMeta {
            name: n.metadata.name.clone(),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: n.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(addresses),
            ..Default::default()
        }),
    }
}

/// One change reported by a reflector (boxed: the objects are large).
enum Update {
    Policies(Box<StoreEvent<NetworkPolicy>>),
    Pods(Box<StoreEvent<Pod>>),
    Namespaces(Box<StoreEvent<Namespace>>),
    Nodes(Box<StoreEvent<Node>>),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{compile_all, np, pods as cluster_pods};
    use super::*;

    fn pod(name: &str, uid: &str, ip: Option<&str>, labels: serde_json::Value, rv: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": name, "uid": uid, "labels": labels,
                         "resourceVersion": rv},
            "spec": {"nodeName": "node1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": rv}]},
        }))
        .expect("valid Pod")
    }

    fn node(name: &str, ip: &str, heartbeat: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": heartbeat},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastHeartbeatTime": format!("2026-11-25T00:00:{heartbeat}Z")}]},
        }))
        .expect("valid Node")
    }

    fn ev<K>(e: WatchEvent<K>) -> StoreEvent<K> {
        StoreEvent::Event(e)
    }

    fn listed_all(inputs: &mut Inputs, now: std::time::Instant) {
        inputs.apply(Update::Policies(Box::new(StoreEvent::Listed(vec![]))), now);
        inputs.apply(Update::Pods(Box::new(StoreEvent::Listed(vec![]))), now);
        inputs.apply(
            Update::Namespaces(Box::new(StoreEvent::Listed(vec![]))),
            now,
        );
        inputs.apply(Update::Nodes(Box::new(StoreEvent::Listed(vec![]))), now);
    }

    #[test]
    fn watch_events_reduce_to_compiler_inputs_and_churn_changes_nothing() {
        let now = std::time::Instant::now();
        let mut inputs = Inputs::default();
        let pods = |e| Update::Pods(Box::new(e));
        let nodes = |e| Update::Nodes(Box::new(e));
        let policies = |e| Update::Policies(Box::new(e));
        let deny = |rv: &str| {
            let mut p = np("x", "deny", json!({"podSelector": {}}));
            p.metadata.resource_version = Some(rv.into());
            p
        };
        // (what happens, whether the compiler's inputs changed)
        let steps: Vec<(&str, Update, bool)> = vec![
            (
                "a pod is added",
                pods(ev(WatchEvent::Added(pod(
                    "a",
                    "u1",
                    None,
                    json!({"app": "a"}),
                    "1",
                )))),
                true,
            ),
            (
                "it gets its address",
                pods(ev(WatchEvent::Modified(pod(
                    "a",
                    "u1",
                    Some("10.244.1.10"),
                    json!({"app": "a"}),
                    "2",
                )))),
                true,
            ),
            (
                "status churn (conditions, resourceVersion)",
                pods(ev(WatchEvent::Modified(pod(
                    "a",
                    "u1",
                    Some("10.244.1.10"),
                    json!({"app": "a"}),
                    "3",
                )))),
                false,
            ),
            (
                "relabelled",
                pods(ev(WatchEvent::Modified(pod(
                    "a",
                    "u1",
                    Some("10.244.1.10"),
                    json!({"app": "b"}),
                    "4",
                )))),
                true,
            ),
            (
                "a node",
                nodes(ev(WatchEvent::Added(node("node1", "172.30.0.11", "01")))),
                true,
            ),
            (
                "its heartbeat",
                nodes(ev(WatchEvent::Modified(node("node1", "172.30.0.11", "02")))),
                false,
            ),
            ("a policy", policies(ev(WatchEvent::Added(deny("5")))), true),
            (
                "the same policy, new resourceVersion",
                policies(ev(WatchEvent::Modified(deny("6")))),
                false,
            ),
            (
                "a re-list showing the same state",
                policies(StoreEvent::Listed(vec![deny("7")])),
                false,
            ),
            (
                "the policy deleted",
                policies(ev(WatchEvent::Deleted(deny("8")))),
                true,
            ),
            (
                "deleting it again",
                policies(ev(WatchEvent::Deleted(deny("8")))),
                false,
            ),
            (
                "bookmarks",
                pods(ev(WatchEvent::Bookmark("9".into()))),
                false,
            ),
        ];
        for (what, update, want) in steps {
            assert_eq!(inputs.apply(update, now), want, "{what}");
        }
        assert!(!inputs.synced(), "events alone are not a complete view");
        let got = inputs.pods(now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip, Some(Ipv4Addr::new(10, 244, 1, 10)));
        assert_eq!(got[0].labels.get("app").map(String::as_str), Some("b"));
        let net = inputs.node_network(&PolicySyncConfig {
            node_name: "node1".into(),
            cluster_cidr: None,
            conntrack_pin_dir: None,
        });
        assert_eq!(
            net.host_ips,
            [Ipv4Addr::new(10, 244, 1, 1), Ipv4Addr::new(172, 30, 0, 11)]
        );
        listed_all(&mut inputs, now);
        assert!(inputs.synced());
        assert!(inputs.pods(now).is_empty(), "a list replaces everything");
    }

    #[test]
    fn registered_sandbox_addresses_count_until_the_api_shows_them() {
        let t0 = std::time::Instant::now();
        let mut inputs = Inputs::default();
        listed_all(&mut inputs, t0);
        let info = |ip: &str| {
            let mut i =
                PodInfo::from_pod(&pod("a", "u1", None, json!({"app": "a"}), "1")).expect("named");
            i.ip = Some(ip.parse().expect("ip"));
            i
        };
        let ips = |inputs: &Inputs, at| -> Vec<Option<Ipv4Addr>> {
            inputs.pods(at).iter().map(|p| p.ip).collect()
        };
        let event = |e| Update::Pods(Box::new(ev(e)));
        let (old, a, b) = (
            Ipv4Addr::new(10, 244, 1, 9),
            Ipv4Addr::new(10, 244, 1, 10),
            Ipv4Addr::new(10, 244, 1, 11),
        );

        // The watch still shows an earlier pod of the same name (uid u0)
        // when the new pod's worker registers its sandbox address.
        inputs.apply(
            event(WatchEvent::Added(pod(
                "a",
                "u0",
                Some("10.244.1.9"),
                json!({}),
                "1",
            ))),
            t0,
        );
        assert_eq!(ips(&inputs, t0), [Some(old)]);
        inputs.register("u1".into(), info("10.244.1.10"), t0);
        assert_eq!(ips(&inputs, t0), [Some(a)], "the registration wins");
        // The earlier pod's deletion does not drop the new registration.
        inputs.apply(
            event(WatchEvent::Deleted(pod(
                "a",
                "u0",
                Some("10.244.1.9"),
                json!({}),
                "2",
            ))),
            t0,
        );
        assert_eq!(ips(&inputs, t0), [Some(a)]);
        // The API shows the new pod without an address yet: still registered.
        inputs.apply(
            event(WatchEvent::Added(pod(
                "a",
                "u1",
                None,
                json!({"app": "a"}),
                "3",
            ))),
            t0,
        );
        assert_eq!(ips(&inputs, t0), [Some(a)]);
        assert_eq!(inputs.registered.len(), 1);
        // The API catches up: the registration is dropped, the pod stays.
        inputs.apply(
            event(WatchEvent::Modified(pod(
                "a",
                "u1",
                Some("10.244.1.10"),
                json!({"app": "a"}),
                "4",
            ))),
            t0,
        );
        assert!(inputs.registered.is_empty());
        assert_eq!(ips(&inputs, t0), [Some(a)]);

        // A new sandbox (new address): registered until the API shows it,
        // or until it expires (which counts as a change).
        inputs.register("u1".into(), info("10.244.1.11"), t0);
        assert_eq!(ips(&inputs, t0), [Some(b)]);
        let late = t0 + REGISTRATION_TTL + Duration::from_secs(1);
        assert_eq!(ips(&inputs, late), [Some(a)]);
        assert!(inputs.apply(event(WatchEvent::Bookmark("5".into())), late));
        assert!(inputs.registered.is_empty());

        // The pod's deletion drops its registration.
        inputs.register("u1".into(), info("10.244.1.11"), t0);
        inputs.apply(
            event(WatchEvent::Deleted(pod(
                "a",
                "u1",
                Some("10.244.1.10"),
                json!({}),
                "6",
            ))),
            t0,
        );
        assert!(inputs.registered.is_empty());
        assert!(ips(&inputs, t0).is_empty());
    }

    #[test]
    fn recovered_numbers_make_a_restart_rewrite_nothing() {
        // Two compiles with different histories number things differently;
        // recovering from the maps of one must reproduce its numbers.
        let policies = [
            np(
                "x",
                "web",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}},
                          {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            ),
            np("y", "deny", json!({"podSelector": {}})),
        ];
        let pods = cluster_pods();
        // History: the pods arrived in reverse order, so numbers differ from
        // a fresh compile's.
        let limits = PolicyLimits::default();
        let reversed: Vec<PodInfo> = pods.iter().rev().cloned().collect();
        let fresh = compile_all(&policies, &pods);
        let before = compile_all(&policies[..1], &reversed[..4]);
        for node in ["node1", "node2"] {
            let old = &before[node];
            let after_restart = {
                let alloc = recover_allocations(&old.maps, &reversed[..4], node);
                assert_eq!(alloc.identities, old.alloc.identities, "{node}");
                assert_eq!(alloc.endpoints, old.alloc.endpoints, "{node}");
                let got: Vec<_> = alloc.cidrs.iter().collect();
                let want: Vec<_> = old.alloc.cidrs.iter().collect();
                assert_eq!(got, want, "{node}");
                alloc
            };
            // Recompiling the same input against the recovered numbers
            // rewrites nothing but policy ids (none here: ids are assigned
            // in order).
            let net = super::super::tests::node(node);
            let namespaces = super::super::tests::namespaces();
            let again = compile(
                PolicyInput {
                    policies: &policies[..1],
                    pods: &reversed[..4],
                    namespaces: &namespaces,
                    node: &net,
                },
                &after_restart,
                &limits,
            )
            .expect("compiles");
            assert!(
                diff(&old.maps, &again.maps, &limits).is_empty(),
                "{node}: a restart rewrites nothing"
            );
            assert_ne!(
                fresh[node].alloc.identities, old.alloc.identities,
                "the histories really differ"
            );
        }
    }

    #[test]
    #[ignore = "privileged: loads the eBPF programs and pins maps (root, CAP_BPF, bpffs)"]
    fn loaded_maps_take_the_limits_and_a_restart_converges_without_a_flush() {
        use crate::{Datapath, DatapathConfig};
        let dir = crate::tests::PinDir::new();
        let cfg = DatapathConfig {
            bpffs_dir: dir.0.clone(),
            cgroup_dir: None,
            node: None,
        };
        let small = PolicyLimits {
            ipcache_max_entries: 1000,
            endpoints_max_entries: 100,
            policy_max_entries: 5000,
        };
        let policies = [
            np("x", "deny", json!({"podSelector": {}})),
            np(
                "y",
                "web",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}],
                 "ports": [{"port": 80, "endPort": 90}]}]}),
            ),
        ];
        let pods = cluster_pods();
        let namespaces = super::super::tests::namespaces();
        let node = super::super::tests::node("node1");
        let input = PolicyInput {
            policies: &policies,
            pods: &pods,
            namespaces: &namespaces,
            node: &node,
        };

        let first = {
            let mut dp = Datapath::load_with_policy_limits(&cfg, &small).expect("load");
            let (mut maps, actual) = dp
                .take_policy_maps()
                .expect("take")
                .expect("the programs declare the policy maps");
            assert_eq!(actual, small, "the maps are created with the limits");
            assert!(
                dp.take_policy_maps().expect("take again").is_none(),
                "taken once"
            );
            let compiled = compile(input, &Allocations::default(), &actual).expect("fits");
            let mut state = read_maps(&maps).expect("read");
            assert_eq!(state, PolicyMaps::default(), "new maps are empty");
            apply_ops(
                &mut maps,
                &diff(&state, &compiled.maps, &actual),
                &mut state,
            )
            .expect("apply");
            compiled
            // The agent exits: programs and handles are dropped, the pins stay.
        };

        // The next agent asks for other sizes: the pinned maps keep theirs
        // and their contents.
        let mut dp =
            Datapath::load_with_policy_limits(&cfg, &PolicyLimits::default()).expect("reload");
        let (maps, actual) = dp.take_policy_maps().expect("take").expect("declared");
        assert_eq!(actual, small, "a pinned map keeps its size");
        let state = read_maps(&maps).expect("read back");
        assert_eq!(state, first.maps, "the restart read back what was written");
        let alloc = recover_allocations(&state, &pods, "node1");
        let again = compile(input, &alloc, &actual).expect("fits");
        assert!(
            diff(&state, &again.maps, &actual).is_empty(),
            "the first compile after a restart writes nothing"
        );
        // What does not fit the real capacity is refused by name.
        let tiny = PolicyLimits {
            policy_max_entries: 3,
            ..actual
        };
        assert!(matches!(
            compile(input, &alloc, &tiny),
            Err(PolicyError::MapFull {
                map: "WEIR_POLICY",
                ..
            })
        ));
    }
}
