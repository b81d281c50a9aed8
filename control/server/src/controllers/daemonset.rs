//! DaemonSet -> Pods: one pod per eligible node (Kubernetes' daemon
//! controller). A node is eligible when the template's nodeSelector and
//! required node affinity select it and its NoSchedule/NoExecute taints are
//! tolerated, counting the tolerations every daemon pod gets automatically
//! (not-ready, unreachable, pressure, unschedulable). A node that only gained
//! an untolerated NoSchedule taint keeps its pod; an untolerated NoExecute
//! taint, a selector change or the node going away removes it.
//!
//! Pods are pinned to their node the way Kubernetes does (a required node
//! affinity on `metadata.name`, replacing the template's terms, which were
//! already checked here) and, because weir's scheduler does not evaluate node
//! affinity, also with `spec.nodeName` set at creation, so no scheduler is
//! involved. Every distinct template is kept as a ControllerRevision
//! (`<ds>-<hash>`, see [`super::history`]); each pod carries the
//! `controller-revision-hash` of the revision it was made from, and pods
//! whose hash is not the current revision's are outdated: RollingUpdate
//! replaces them within maxUnavailable / maxSurge, OnDelete only gives nodes
//! whose pod was deleted a new one. Old revisions no live pod uses are pruned
//! beyond `revisionHistoryLimit`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::history;
use super::nodematch;
use super::store::ObjKey;
use super::util::{controller_ref, pod_available, pod_ready, terminating};

/// Label tying a daemon pod to the template revision it was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// Label with the DaemonSet generation the pod was made at (deprecated in
/// Kubernetes but still set, so selectors written against it keep working).
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// What the executor must do for one DaemonSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new pod, already pinned to its node.
    CreatePod(Pod),
    DeletePod {
        pod: ObjKey,
        node: String,
        why: Why,
    },
    UpdateStatus(DaemonSet),
    /// A change to the DaemonSet's ControllerRevisions. Creations and
    /// renumberings come before every pod action, prunings after them.
    Revision(history::Change),
}

/// Why a daemon pod is deleted (for logs and Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The pod failed; a fresh one replaces it once it is gone.
    Failed,
    /// The node no longer qualifies (selector, NoExecute taint) or is gone.
    NotEligible,
    /// More than one pod on the node.
    Excess,
    /// The pod runs an old template (RollingUpdate).
    Outdated,
}

/// The tolerations Kubernetes adds to every daemon pod, so a DaemonSet keeps
/// running on nodes that are not ready, unreachable, under pressure or
/// cordoned (k8s.io/kubernetes pkg/controller/daemon/util AddOrUpdateDaemonPodTolerations).
pub fn automatic_tolerations(host_network: bool) -> Vec<Toleration> {
    let tol = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    };
    let mut v = vec![
        tol("node.kubernetes.io/not-ready", "NoExecute"),
        tol("node.kubernetes.io/unreachable", "NoExecute"),
        tol("node.kubernetes.io/disk-pressure", "NoSchedule"),
        tol("node.kubernetes.io/memory-pressure", "NoSchedule"),
        tol("node.kubernetes.io/pid-pressure", "NoSchedule"),
        tol("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(tol("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// (should run, should continue running) for the DaemonSet on `node`, like
/// Kubernetes' NodeShouldRunDaemonPod: an untolerated NoSchedule taint stops
/// new pods but keeps a running one; an untolerated NoExecute taint or a
/// selector mismatch stops both. `spec.unschedulable` is not looked at
/// (daemon pods tolerate cordoned nodes).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    if terminating(&node.metadata) {
        return (false, false);
    }
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return (false, false);
    };
    if !nodematch::selects(spec, node) {
        return (false, false);
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(automatic_tolerations(spec.host_network == Some(true)));
    if nodematch::untolerated(node, &tolerations, "NoExecute")
        .next()
        .is_some()
    {
        return (false, false);
    }
    if nodematch::untolerated(node, &tolerations, "NoSchedule")
        .next()
        .is_some()
    {
        return (false, true);
    }
    (true, true)
}

/// The hash a new revision of the DaemonSet's current template gets (the
/// hash of an existing revision holding that template wins, see [`reconcile`]).
#[cfg(test)]
pub fn current_hash(ds: &DaemonSet) -> String {
    let template = ds.spec.clone().unwrap_or_default().template;
    super::deployment::template_hash(
        &template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    )
}

/// The node a daemon pod belongs to: its nodeName, or else the node its
/// `metadata.name` affinity pins it to.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn has_hash(p: &Pod, hash: &str) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .is_some_and(|h| h == hash)
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Oldest first, ties by name (Kubernetes keeps the oldest pod on a node).
fn by_age(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &a.metadata.name,
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &b.metadata.name,
            ))
    });
}

/// The update strategy with Kubernetes' defaults resolved against the
/// number of nodes that should run the pod: None for OnDelete, else
/// (maxSurge, maxUnavailable). Percentages round up; both zero means one
/// unavailable.
pub fn rolling_limits(ds: &DaemonSet, desired: i32) -> Option<(i32, i32)> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let resolve = |v: Option<&IntOrString>, default: i32| match v {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) => {
                let v = (p.max(0) * i64::from(desired.max(0)) + 99) / 100;
                i32::try_from(v).unwrap_or(i32::MAX)
            }
            None => s.parse::<i32>().map(|n| n.max(0)).unwrap_or(0),
        },
    };
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), 0);
    let unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), 1);
    Some(if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    })
}

/// One node's view: whether it qualifies and the DaemonSet's pods on it.
struct NodeState<'a> {
    name: String,
    run: bool,
    keep: bool,
    /// Every pod of the DaemonSet on the node, oldest first.
    pods: Vec<&'a Pod>,
}

impl<'a> NodeState<'a> {
    /// Pods that are neither being deleted nor finished.
    fn running(&self) -> Vec<&'a Pod> {
        self.pods
            .iter()
            .copied()
            .filter(|p| {
                !terminating(&p.metadata) && !matches!(phase(p), Some("Failed") | Some("Succeeded"))
            })
            .collect()
    }
}

/// The DaemonSet's history: the current revision's hash and the revision
/// changes, or None when the hash collides (the collision count must go up).
fn revisions(
    ds: &DaemonSet,
    pods: &[Pod],
    revisions: &[ControllerRevision],
) -> Option<(String, Vec<history::Change>)> {
    let spec = ds.spec.as_ref()?;
    let owner = history::Owner {
        kind: "DaemonSet",
        meta: &ds.metadata,
        template: &spec.template,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        history_limit: spec.revision_history_limit,
        hash_label: HASH_LABEL,
    };
    let live_hashes: Vec<&str> = pods
        .iter()
        .filter(|p| !terminating(&p.metadata))
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL))
        .map(String::as_str)
        .collect();
    let in_use = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .is_some_and(|h| live_hashes.contains(&h.as_str()))
    };
    match history::plan(&owner, revisions, &in_use) {
        history::Plan::Ready { hash, changes, .. } => Some((hash, changes)),
        history::Plan::Collision => None,
    }
}

/// Decides what to do for one DaemonSet given the nodes, the pods it
/// controls and its ControllerRevisions. `suffix` yields random 5-character
/// name suffixes.
pub fn reconcile(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    revs: &[ControllerRevision],
    now: Timestamp,
    suffix: &mut dyn FnMut() -> String,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(spec) = ds.spec.as_ref() else {
        return actions;
    };
    let Some((hash, mut rev_changes)) = revisions(ds, pods, revs) else {
        // Kubernetes' answer to a hash collision: count it (a new hash) and retry.
        let mut n = ds.clone();
        let st = n.status.get_or_insert_with(Default::default);
        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
        return vec![Action::UpdateStatus(n)];
    };
    if terminating(&ds.metadata) {
        // Nothing new for an object on its way out; the GC removes its revisions.
        rev_changes.clear();
    }
    let prunes: Vec<history::Change> = rev_changes
        .iter()
        .filter(|c| matches!(c, history::Change::Delete(_)))
        .cloned()
        .collect();
    rev_changes.retain(|c| !matches!(c, history::Change::Delete(_)));
    let revision_writes = rev_changes.len();
    actions.extend(rev_changes.into_iter().map(Action::Revision));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        if let Some(n) = node_of(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut states: Vec<NodeState> = Vec::new();
    for node in nodes {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let (run, keep) = should_run(ds, node);
        let mut on = by_node.remove(&name).unwrap_or_default();
        by_age(&mut on);
        states.push(NodeState {
            name,
            run,
            keep,
            pods: on,
        });
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    let status = compute_status(ds, &states, &hash, now);

    // A DaemonSet being deleted changes nothing; the garbage collector removes its pods.
    if !terminating(&ds.metadata) {
        let delete = |p: &Pod, node: &str, why: Why| Action::DeletePod {
            pod: ObjKey::of(p),
            node: node.to_string(),
            why,
        };
        // Pods whose node is gone.
        for (node, on) in &by_node {
            for p in on.iter().filter(|p| !terminating(&p.metadata)) {
                actions.push(delete(p, node, Why::NotEligible));
            }
        }
        let limits = rolling_limits(ds, status.desired_number_scheduled);
        let surge = limits.is_some_and(|(s, _)| s > 0);
        for st in &states {
            if !st.keep {
                for p in st.pods.iter().filter(|p| !terminating(&p.metadata)) {
                    actions.push(delete(p, &st.name, Why::NotEligible));
                }
                continue;
            }
            if st.pods.is_empty() {
                if st.run {
                    actions.push(Action::CreatePod(pod_for_node(
                        ds,
                        &st.name,
                        &hash,
                        &suffix(),
                    )));
                }
                continue;
            }
            for p in st.pods.iter().filter(|p| !terminating(&p.metadata)) {
                if matches!(phase(p), Some("Failed") | Some("Succeeded")) {
                    actions.push(delete(p, &st.name, Why::Failed));
                }
            }
            let running = st.running();
            if running.len() > 1 {
                // Keep the oldest pod; with surge, the oldest of each revision.
                let mut kept_new = false;
                let mut kept_old = false;
                for (i, p) in running.iter().enumerate() {
                    let keep = if surge {
                        let slot = if has_hash(p, &hash) {
                            &mut kept_new
                        } else {
                            &mut kept_old
                        };
                        !std::mem::replace(slot, true)
                    } else {
                        i == 0
                    };
                    if !keep {
                        actions.push(delete(p, &st.name, Why::Excess));
                    }
                }
            }
        }
        // Like Kubernetes, roll only once the node-level fixes above are
        // done (and seen): a node just given its pod must count as unavailable.
        if let Some((max_surge, max_unavailable)) =
            limits.filter(|_| actions.len() == revision_writes)
        {
            let (creates, deletes) =
                rolling_update(&states, &hash, max_surge, max_unavailable, min_ready, now);
            for node in creates {
                actions.push(Action::CreatePod(pod_for_node(ds, &node, &hash, &suffix())));
            }
            for (p, node) in deletes {
                let key = ObjKey::of(p);
                if !actions
                    .iter()
                    .any(|a| matches!(a, Action::DeletePod { pod, .. } if *pod == key))
                {
                    actions.push(delete(p, &node, Why::Outdated));
                }
            }
        }
    }

    actions.extend(prunes.into_iter().map(Action::Revision));
    if ds.status.as_ref() != Some(&status) {
        let mut n = ds.clone();
        n.status = Some(status);
        actions.push(Action::UpdateStatus(n));
    }
    actions
}

/// Kubernetes' rollingUpdate for daemon pods: (nodes to get a new pod while
/// their old one still runs, old pods to delete).
fn rolling_update<'a>(
    states: &'a [NodeState<'a>],
    hash: &str,
    max_surge: i32,
    max_unavailable: i32,
    min_ready: i32,
    now: Timestamp,
) -> (Vec<String>, Vec<(&'a Pod, String)>) {
    let available = |p: &Pod| pod_available(p, min_ready, now);
    let mut creates = Vec::new();
    let mut deletes = Vec::new();
    if max_surge == 0 {
        // Delete old pods first, at most maxUnavailable nodes without an available pod.
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for st in states.iter().filter(|s| s.keep && !s.pods.is_empty()) {
            let running = st.running();
            let new = running.iter().find(|p| has_hash(p, hash));
            let old = running.iter().find(|p| !has_hash(p, hash));
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(n), None) => {
                    if !available(n) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if !available(o) {
                        // Not serving anyway: replacing it costs no availability.
                        deletes.push((*o, st.name.clone()));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push((*o, st.name.clone()));
                    }
                }
            }
        }
        let room = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
        deletes.extend(candidates.into_iter().take(room));
    } else {
        // Start new pods next to old ones, at most maxSurge not yet available.
        let mut surging = 0;
        let mut candidates = Vec::new();
        for st in states.iter().filter(|s| s.keep && !s.pods.is_empty()) {
            let running = st.running();
            let new = running.iter().find(|p| has_hash(p, hash));
            let old = running.iter().find(|p| !has_hash(p, hash));
            match (new, old) {
                (None, None) => {}
                (Some(n), None) => {
                    if !available(n) {
                        surging += 1;
                    }
                }
                (None, Some(o)) => {
                    if !st.run {
                        // A NoSchedule taint keeps the old pod but admits no new one.
                    } else if !available(o) {
                        creates.push(st.name.clone());
                    } else {
                        candidates.push(st.name.clone());
                    }
                }
                (Some(n), Some(o)) => {
                    if available(n) {
                        deletes.push((*o, st.name.clone()));
                    } else {
                        surging += 1;
                    }
                }
            }
        }
        let room = usize::try_from(max_surge - surging).unwrap_or(0);
        creates.extend(candidates.into_iter().take(room));
    }
    (creates, deletes)
}

/// A daemon pod for `node`, owned by the DaemonSet and pinned to the node.
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str, suffix: &str) -> Pod {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template = ds.spec.clone().unwrap_or_default().template;
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert(GENERATION_LABEL.into(), g.to_string());
    }
    let mut spec = template.spec.unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for t in automatic_tolerations(spec.host_network == Some(true)) {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    spec.tolerations = Some(tolerations);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    spec.node_name = Some(node.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{suffix}")),
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn compute_status(
    ds: &DaemonSet,
    states: &[NodeState],
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (mut desired, mut current, mut mis, mut ready, mut avail, mut updated) = (0, 0, 0, 0, 0, 0);
    for st in states {
        let live: Vec<&Pod> = st
            .pods
            .iter()
            .copied()
            .filter(|p| !terminating(&p.metadata))
            .collect();
        if !st.run {
            // Kubernetes counts a pod on a node that should not run one
            // (even one kept for a NoSchedule taint) as misscheduled.
            if !live.is_empty() {
                mis += 1;
            }
            continue;
        }
        desired += 1;
        // The oldest pod stands for the node, as in Kubernetes.
        let Some(p) = live.first() else {
            continue;
        };
        current += 1;
        if pod_ready(p) {
            ready += 1;
            if pod_available(p, min_ready, now) {
                avail += 1;
            }
        }
        if has_hash(p, hash) {
            updated += 1;
        }
    }
    let old = ds.status.clone().unwrap_or_default();
    let opt = |n: i32| if n == 0 { None } else { Some(n) };
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: mis,
        number_ready: ready,
        number_available: opt(avail),
        number_unavailable: opt((desired - avail).max(0)),
        updated_number_scheduled: opt(updated),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{pod, set_image, string_map, ts};
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, PodTemplateSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ds() -> DaemonSet {
        let labels = BTreeMap::from([("app".to_string(), "agent".to_string())]);
        DaemonSet {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("agent".into()),
                uid: Some("ds-uid".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_selector(mut d: DaemonSet, k: &str, v: &str) -> DaemonSet {
        let s = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        s.node_selector = Some(BTreeMap::from([(k.to_string(), v.to_string())]));
        d
    }

    fn with_strategy(mut d: DaemonSet, kind: &str, surge: i32, unavailable: i32) -> DaemonSet {
        d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some(kind.into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: Some(IntOrString::Int(surge)),
                max_unavailable: Some(IntOrString::Int(unavailable)),
            }),
        });
        d
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(string_map(labels)),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            value: None,
                            time_added: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A daemon pod on `node`; `new` = current template hash; ready since 100.
    fn dpod(d: &DaemonSet, name: &str, node: &str, new: bool, ready: bool, created: i64) -> Pod {
        let mut p = pod(
            name,
            &[("app", "agent")],
            None,
            Some(node),
            ready.then_some(100),
        );
        let hash = if new { current_hash(d) } else { "old".into() };
        p.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash);
        p.metadata.creation_timestamp = Some(Time(ts(created)));
        p.metadata.owner_references =
            Some(vec![controller_ref("apps/v1", "DaemonSet", &d.metadata)]);
        p
    }

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("s{n}")
        }
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreatePod(p) => Some(format!(
                    "create {}",
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default()
                )),
                Action::DeletePod { pod, why, .. } => Some(format!("delete {} {why:?}", pod.name)),
                Action::UpdateStatus(_) => None,
                Action::Revision(_) => None,
            })
            .collect()
    }

    /// The revision changes of `actions`, as short strings.
    fn revision_summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Revision(history::Change::Create(r)) => {
                    Some(format!("create #{}", r.revision))
                }
                Action::Revision(history::Change::Renumber(r)) => Some(format!(
                    "renumber {} #{}",
                    r.metadata.name.clone().unwrap_or_default(),
                    r.revision
                )),
                Action::Revision(history::Change::Delete(n)) => Some(format!("delete {n}")),
                _ => None,
            })
            .collect()
    }

    /// `d` reconciled on one untainted node, n1, with no pods yet.
    fn on_n1(d: &DaemonSet, revisions: &[ControllerRevision]) -> Vec<Action> {
        reconcile(
            d,
            &[node("n1", &[], &[])],
            &[],
            revisions,
            ts(1000),
            &mut counter(),
        )
    }

    fn with_image(mut d: DaemonSet, image: &str) -> DaemonSet {
        set_image(&mut d.spec.as_mut().unwrap().template, image);
        d
    }

    /// The revision `d`'s template would get, numbered `n`.
    fn revision_of(d: &DaemonSet, n: i64) -> ControllerRevision {
        let spec = d.spec.as_ref().unwrap();
        let owner = history::Owner {
            kind: "DaemonSet",
            meta: &d.metadata,
            template: &spec.template,
            collision_count: None,
            history_limit: spec.revision_history_limit,
            hash_label: HASH_LABEL,
        };
        history::new_revision(&owner, &current_hash(d), n)
    }

    /// A ready daemon pod made from revision `r`.
    fn rpod(d: &DaemonSet, name: &str, node: &str, r: &ControllerRevision) -> Pod {
        let mut p = dpod(d, name, node, true, true, 10);
        let hash = r.metadata.labels.as_ref().unwrap()[HASH_LABEL].clone();
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), hash);
        p
    }

    #[test]
    fn revisions_decide_what_is_outdated() {
        let nodes = vec![node("n1", &[], &[]), node("n2", &[], &[])];
        let v1 = with_image(ds(), "v1");
        let v2 = with_image(ds(), "v2");
        let (r1, r2) = (revision_of(&v1, 1), revision_of(&v2, 2));
        let r1_name = r1.metadata.name.clone().unwrap();
        // (what, daemonset, revisions, pods, revision changes, pod actions)
        type Case = (
            &'static str,
            DaemonSet,
            Vec<ControllerRevision>,
            Vec<Pod>,
            Vec<String>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "first sync records revision 1",
                v1.clone(),
                vec![],
                vec![],
                vec!["create #1".into()],
                vec!["create n1", "create n2"],
            ),
            (
                "template changed: revision 2, pods of 1 outdated",
                v2.clone(),
                vec![r1.clone()],
                vec![rpod(&v1, "a", "n1", &r1), rpod(&v1, "b", "n2", &r1)],
                vec!["create #2".into()],
                vec!["delete a Outdated"],
            ),
            (
                "rollback: revision 1 re-used as 3, its pods are current",
                v1.clone(),
                vec![r1.clone(), r2.clone()],
                vec![rpod(&v1, "a", "n1", &r1), rpod(&v2, "b", "n2", &r2)],
                vec![format!("renumber {r1_name} #3")],
                vec!["delete b Outdated"],
            ),
            (
                "history limit 0 prunes an unused old revision",
                {
                    let mut d = v2.clone();
                    d.spec.as_mut().unwrap().revision_history_limit = Some(0);
                    d
                },
                vec![r1.clone(), r2.clone()],
                vec![rpod(&v2, "a", "n1", &r2), rpod(&v2, "b", "n2", &r2)],
                vec![format!("delete {r1_name}")],
                vec![],
            ),
        ];
        for (what, d, revs, pods, want_revs, want_pods) in cases {
            let actions = reconcile(&d, &nodes, &pods, &revs, ts(1000), &mut counter());
            assert_eq!(revision_summary(&actions), want_revs, "{what}");
            assert_eq!(summary(&actions), want_pods, "{what}");
            if let Some(i) = actions
                .iter()
                .position(|a| matches!(a, Action::CreatePod(_) | Action::DeletePod { .. }))
            {
                assert!(
                    !actions[i..].iter().any(|a| matches!(
                        a,
                        Action::Revision(history::Change::Create(_) | history::Change::Renumber(_))
                    )),
                    "{what}: revisions are written before pods"
                );
            }
        }
    }

    #[test]
    fn hash_collision_bumps_the_count_first() {
        let d = with_image(ds(), "v1");
        let mut clash = revision_of(&d, 1);
        clash.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            history::revision_data(&with_image(ds(), "other").spec.unwrap().template),
        ));
        let actions = on_n1(&d, &[clash]);
        let [Action::UpdateStatus(n)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(n.status.as_ref().unwrap().collision_count, Some(1));
    }

    #[test]
    fn placement_table() {
        let d = ds();
        let three = || {
            vec![
                node("n1", &[], &[]),
                node("n2", &[], &[]),
                node("n3", &[], &[]),
            ]
        };
        let mut failed = dpod(&d, "failed", "n1", true, false, 10);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut leaving = dpod(&d, "leaving", "n1", true, true, 10);
        leaving.metadata.deletion_timestamp = Some(Time(ts(50)));
        let mut tolerating = ds();
        tolerating
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        // (what, daemonset, nodes, pods, expected pod actions)
        type Case<'a> = (&'a str, DaemonSet, Vec<Node>, Vec<Pod>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "one per node",
                d.clone(),
                three(),
                vec![],
                vec!["create n1", "create n2", "create n3"],
            ),
            (
                "only nodes the selector picks",
                with_selector(ds(), "role", "edge"),
                vec![node("n1", &[("role", "edge")], &[]), node("n2", &[], &[])],
                vec![],
                vec!["create n1"],
            ),
            (
                "selector no longer matching removes the pod",
                with_selector(ds(), "role", "edge"),
                vec![node("n1", &[], &[])],
                vec![dpod(&d, "a", "n1", true, true, 10)],
                vec!["delete a NotEligible"],
            ),
            (
                "untolerated NoSchedule: no new pod",
                d.clone(),
                vec![node("n1", &[], &[("dedicated", "NoSchedule")])],
                vec![],
                vec![],
            ),
            (
                "untolerated NoSchedule keeps the running pod",
                d.clone(),
                vec![node("n1", &[], &[("dedicated", "NoSchedule")])],
                vec![dpod(&d, "a", "n1", true, true, 10)],
                vec![],
            ),
            (
                "untolerated NoExecute evicts",
                d.clone(),
                vec![node("n1", &[], &[("dedicated", "NoExecute")])],
                vec![dpod(&d, "a", "n1", true, true, 10)],
                vec!["delete a NotEligible"],
            ),
            (
                "tolerated taint",
                tolerating,
                vec![node("n1", &[], &[("dedicated", "NoExecute")])],
                vec![],
                vec!["create n1"],
            ),
            (
                "automatic tolerations: not-ready, unreachable, cordoned",
                d.clone(),
                vec![
                    node("n1", &[], &[("node.kubernetes.io/not-ready", "NoExecute")]),
                    node(
                        "n2",
                        &[],
                        &[("node.kubernetes.io/unreachable", "NoExecute")],
                    ),
                    node(
                        "n3",
                        &[],
                        &[("node.kubernetes.io/unschedulable", "NoSchedule")],
                    ),
                ],
                vec![],
                vec!["create n1", "create n2", "create n3"],
            ),
            (
                "pod of a node that left is deleted",
                d.clone(),
                vec![node("n1", &[], &[])],
                vec![
                    dpod(&d, "a", "n1", true, true, 10),
                    dpod(&d, "b", "gone", true, true, 10),
                ],
                vec!["delete b NotEligible"],
            ),
            (
                "failed pod is deleted, replaced once gone",
                d.clone(),
                vec![node("n1", &[], &[])],
                vec![failed],
                vec!["delete failed Failed"],
            ),
            (
                "terminating pod blocks a new one",
                d.clone(),
                vec![node("n1", &[], &[])],
                vec![leaving],
                vec![],
            ),
            (
                "extra pod on a node: the newest goes",
                d.clone(),
                vec![node("n1", &[], &[])],
                vec![
                    dpod(&d, "young", "n1", true, true, 20),
                    dpod(&d, "old", "n1", true, true, 10),
                ],
                vec!["delete young Excess"],
            ),
        ];
        for (what, d, nodes, pods, want) in cases {
            let got = summary(&reconcile(&d, &nodes, &pods, &[], ts(1000), &mut counter()));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn update_strategy_table() {
        let nodes = vec![
            node("n1", &[], &[]),
            node("n2", &[], &[]),
            node("n3", &[], &[]),
        ];
        let d = ds();
        let olds = |d: &DaemonSet| {
            vec![
                dpod(d, "o1", "n1", false, true, 10),
                dpod(d, "o2", "n2", false, true, 10),
                dpod(d, "o3", "n3", false, true, 10),
            ]
        };
        let ru = |s, u| with_strategy(ds(), "RollingUpdate", s, u);
        // (what, daemonset, pods, expected pod actions)
        let cases: Vec<(&str, DaemonSet, Vec<Pod>, Vec<&str>)> = vec![
            (
                "default: one at a time",
                d.clone(),
                olds(&d),
                vec!["delete o1 Outdated"],
            ),
            (
                "maxUnavailable 2",
                ru(0, 2),
                olds(&d),
                vec!["delete o1 Outdated", "delete o2 Outdated"],
            ),
            (
                "a new pod not yet ready uses the budget",
                d.clone(),
                vec![
                    dpod(&d, "n1", "n1", true, false, 20),
                    dpod(&d, "o2", "n2", false, true, 10),
                    dpod(&d, "o3", "n3", false, true, 10),
                ],
                vec![],
            ),
            (
                "an old pod that is not available is replaced at once",
                d.clone(),
                vec![
                    dpod(&d, "n1", "n1", true, false, 20),
                    dpod(&d, "o2", "n2", false, false, 10),
                    dpod(&d, "o3", "n3", false, true, 10),
                ],
                vec!["delete o2 Outdated"],
            ),
            (
                "node emptied by the update gets the new pod",
                d.clone(),
                vec![
                    dpod(&d, "o2", "n2", false, true, 10),
                    dpod(&d, "o3", "n3", false, true, 10),
                ],
                vec!["create n1"],
            ),
            (
                "maxSurge 1: new pod next to the old one",
                ru(1, 0),
                olds(&d),
                vec!["create n1"],
            ),
            (
                "maxSurge: old pod goes once the new one is available",
                ru(1, 0),
                vec![
                    dpod(&d, "o1", "n1", false, true, 10),
                    dpod(&d, "n1", "n1", true, true, 20),
                    dpod(&d, "o2", "n2", false, true, 10),
                    dpod(&d, "o3", "n3", false, true, 10),
                ],
                vec!["create n2", "delete o1 Outdated"],
            ),
            (
                "maxSurge: at most that many new pods unavailable",
                ru(1, 0),
                vec![
                    dpod(&d, "o1", "n1", false, true, 10),
                    dpod(&d, "n1", "n1", true, false, 20),
                    dpod(&d, "o2", "n2", false, true, 10),
                    dpod(&d, "o3", "n3", false, true, 10),
                ],
                vec![],
            ),
            (
                "OnDelete replaces nothing",
                with_strategy(ds(), "OnDelete", 0, 0),
                olds(&d),
                vec![],
            ),
            (
                "OnDelete: a deleted pod comes back new",
                with_strategy(ds(), "OnDelete", 0, 0),
                vec![dpod(&d, "o2", "n2", false, true, 10)],
                vec!["create n1", "create n3"],
            ),
        ];
        for (what, d, pods, want) in cases {
            let got = summary(&reconcile(&d, &nodes, &pods, &[], ts(1000), &mut counter()));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn created_pod_is_pinned_owned_and_tolerant() {
        let d = ds();
        let actions = on_n1(&d, &[]);
        let Some(Action::CreatePod(p)) = actions.iter().find(|a| matches!(a, Action::CreatePod(_)))
        else {
            panic!("{actions:?}")
        };
        assert_eq!(p.metadata.name.as_deref(), Some("agent-s1"));
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(HASH_LABEL), Some(&current_hash(&d)));
        assert_eq!(labels.get(GENERATION_LABEL).map(String::as_str), Some("3"));
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert_eq!(node_of(p).as_deref(), Some("n1"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        let term = &spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap()
            .node_selector_terms[0];
        let f = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (f.key.as_str(), f.operator.as_str()),
            ("metadata.name", "In")
        );
        assert_eq!(f.values.as_deref(), Some(&["n1".to_string()][..]));
        let tols = spec.tolerations.as_ref().unwrap();
        assert!(
            tols.iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")
                    && t.effect.as_deref() == Some("NoExecute"))
        );
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("DaemonSet", "ds-uid", Some(true))
        );
    }

    #[test]
    fn status_counts() {
        let d = ds();
        let nodes = vec![
            node("n1", &[], &[]),
            node("n2", &[], &[]),
            node("n3", &[], &[]),
            node("tainted", &[], &[("dedicated", "NoSchedule")]),
        ];
        let pods = vec![
            dpod(&d, "a", "n1", true, true, 10),
            dpod(&d, "b", "n2", false, false, 10),
            dpod(&d, "c", "tainted", true, true, 10),
        ];
        let actions = reconcile(&d, &nodes, &pods, &[], ts(1000), &mut counter());
        let Some(Action::UpdateStatus(n)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = n.status.as_ref().unwrap();
        assert_eq!(st.desired_number_scheduled, 3);
        assert_eq!(st.current_number_scheduled, 2);
        assert_eq!(st.number_misscheduled, 1);
        assert_eq!(st.number_ready, 1);
        assert_eq!(st.number_available, Some(1));
        assert_eq!(st.number_unavailable, Some(2));
        assert_eq!(st.updated_number_scheduled, Some(1));
        assert_eq!(st.observed_generation, Some(3));
        // Written once: the same observation produces no second status write.
        let again = reconcile(n, &nodes, &pods, &[], ts(1000), &mut counter());
        assert!(
            !again.iter().any(|a| matches!(a, Action::UpdateStatus(_))),
            "{again:?}"
        );
    }

    #[test]
    fn terminating_daemonset_only_reports() {
        let mut d = ds();
        d.metadata.deletion_timestamp = Some(Time(ts(5)));
        let got = summary(&on_n1(&d, &[]));
        assert!(got.is_empty(), "{got:?}");
    }
}
