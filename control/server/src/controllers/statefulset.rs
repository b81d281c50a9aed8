//! StatefulSet -> Pods and PersistentVolumeClaims (Kubernetes' statefulset
//! controller). Pods are named `<set>-<ordinal>` (from `spec.ordinals.start`),
//! have hostname = their name and subdomain = `spec.serviceName`, so the
//! headless Service gives each a stable DNS name, and get one claim per
//! `volumeClaimTemplates` entry, `<template>-<set>-<ordinal>`, created before
//! the pod. `persistentVolumeClaimRetentionPolicy` decides what happens to
//! claims: Retain (the default) keeps them; `whenDeleted: Delete` gives them
//! an ownerReference to the set and `whenScaled: Delete` one to the pod of a
//! scaled-down ordinal (before the pod is deleted), so the garbage collector
//! removes them with their owner, as in Kubernetes.
//!
//! `OrderedReady` creates pods one at a time in ordinal order, each once the
//! ones before it are Running and Ready, and removes them highest first;
//! `Parallel` creates and removes all at once. `RollingUpdate` replaces pods
//! whose `controller-revision-hash` is not the update revision, highest
//! ordinal first, one at a time, each once the rest are Running and Ready,
//! only down to `partition`; `OnDelete` leaves that to the user.
//!
//! Every distinct template is a ControllerRevision `<set>-<hash>` (see
//! [`super::history`]); pods carry its name. `status.updateRevision` is the
//! revision of the current template, `status.currentRevision` the one the
//! set last fully rolled out: a pod below the partition that is deleted comes
//! back from the current revision's template, not the new one.
//!
//! Not implemented: `maxUnavailable`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use super::history;
use super::store::ObjKey;
use super::util::{controller_ref, pod_available, pod_ready, terminating};

/// Label with the revision (`<set>-<hash>`) a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Label with the pod's own name, so a Service can select one pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Label with a StatefulSet revision's hash (Kubernetes' history package).
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the claim if it does not exist (AlreadyExists is success).
    CreateClaim(Box<PersistentVolumeClaim>),
    CreatePod(Box<Pod>),
    DeletePod(ObjKey),
    UpdateStatus(Box<StatefulSet>),
    /// A change to the set's ControllerRevisions. Creations and
    /// renumberings come before every pod action, prunings after them.
    Revision(history::Change),
    /// An existing claim with the owner references the retention policy
    /// asks for (before any pod action: a scaled-down pod must own its
    /// claims before it goes).
    UpdateClaim(Box<PersistentVolumeClaim>),
}

/// The name a new revision of the set's current template gets,
/// `<set>-<hash>` (an existing revision holding that template wins, see
/// [`reconcile`]).
#[cfg(test)]
pub fn update_revision(sts: &StatefulSet) -> String {
    let template = sts.spec.clone().unwrap_or_default().template;
    let hash = super::deployment::template_hash(
        &template,
        sts.status.as_ref().and_then(|s| s.collision_count),
    );
    format!(
        "{}-{hash}",
        sts.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The ordinal of a pod of the set named `set` (None if the name is not `<set>-<n>`).
pub fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let (prefix, n) = name.rsplit_once('-')?;
    if prefix != set || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn revision(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn running_and_ready(p: &Pod) -> bool {
    phase(p) == Some("Running") && pod_ready(p)
}

fn healthy(p: &Pod) -> bool {
    running_and_ready(p) && !terminating(&p.metadata)
}

/// The revisions a pass works with: the update revision (the current
/// template's), the current one (what the set last fully rolled out), and
/// the history changes.
struct Revisions {
    update: String,
    current: String,
    current_template: Option<PodTemplateSpec>,
    changes: Vec<history::Change>,
}

/// The set's history, or None when the template's hash collides.
fn revisions(sts: &StatefulSet, pods: &[Pod], revs: &[ControllerRevision]) -> Option<Revisions> {
    let spec = sts.spec.as_ref()?;
    let status_current = sts.status.as_ref().and_then(|s| s.current_revision.clone());
    let owner = history::Owner {
        kind: "StatefulSet",
        meta: &sts.metadata,
        template: &spec.template,
        collision_count: sts.status.as_ref().and_then(|s| s.collision_count),
        history_limit: spec.revision_history_limit,
        hash_label: REVISION_HASH_LABEL,
    };
    let live: Vec<&str> = pods
        .iter()
        .filter(|p| !terminating(&p.metadata))
        .filter_map(revision)
        .collect();
    let in_use = |r: &ControllerRevision| {
        let name = r.metadata.name.as_deref().unwrap_or_default();
        live.contains(&name) || status_current.as_deref() == Some(name)
    };
    let history::Plan::Ready {
        update, changes, ..
    } = history::plan(&owner, revs, &in_use)
    else {
        return None;
    };
    let update = update.metadata.name.clone().unwrap_or_default();
    let current = status_current.unwrap_or_else(|| update.clone());
    // A current revision that is not stored (made before weir kept
    // revisions) only names pods; new ones then come from the set's template.
    let current_template = revs
        .iter()
        .filter(|_| current != update)
        .find(|r| r.metadata.name.as_deref() == Some(current.as_str()))
        .and_then(history::template_of);
    Some(Revisions {
        current,
        current_template,
        update,
        changes,
    })
}

/// Decides what to do for one StatefulSet given the pods it controls, its
/// ControllerRevisions and the claims of its namespace.
pub fn reconcile(
    sts: &StatefulSet,
    pods: &[Pod],
    revs: &[ControllerRevision],
    claims: &[PersistentVolumeClaim],
    now: Timestamp,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(spec) = sts.spec.as_ref() else {
        return actions;
    };
    let set = sts.metadata.name.clone().unwrap_or_default();
    let Some(mut history) = revisions(sts, pods, revs) else {
        // Kubernetes' answer to a hash collision: count it (a new hash) and retry.
        let mut n = sts.clone();
        let st = n.status.get_or_insert_with(Default::default);
        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
        return vec![Action::UpdateStatus(Box::new(n))];
    };
    let update_rev = history.update.clone();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let monotonic = !parallel;

    // Pods by ordinal; pods outside [start, start+replicas) are condemned.
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in pods {
        if let Some(o) = ordinal_of(&set, p) {
            by_ordinal.insert(o, p);
        }
    }
    let wanted = start..start.saturating_add(replicas);
    let condemned: Vec<&Pod> = by_ordinal
        .iter()
        .filter(|(o, _)| !wanted.contains(o))
        .map(|(_, p)| *p)
        .collect();
    let status = compute_status(sts, &by_ordinal, &history.current, &update_rev, now);

    let mut prunes = Vec::new();
    if !terminating(&sts.metadata) {
        for c in std::mem::take(&mut history.changes) {
            match c {
                history::Change::Delete(_) => prunes.push(Action::Revision(c)),
                c => actions.push(Action::Revision(c)),
            }
        }
        actions.extend(
            claim_updates(sts, &set, &wanted, &by_ordinal, claims)
                .into_iter()
                .map(|c| Action::UpdateClaim(Box::new(c))),
        );
        plan(
            sts,
            &set,
            &history,
            wanted,
            &by_ordinal,
            &condemned,
            monotonic,
            &mut actions,
        );
    }
    actions.extend(prunes);
    if sts.status.as_ref() != Some(&status) {
        let mut n = sts.clone();
        n.status = Some(status);
        actions.push(Action::UpdateStatus(Box::new(n)));
    }
    actions
}

/// The pod actions, in Kubernetes' order: replace failed pods and create
/// missing ones, then remove condemned ones, then roll out the template.
#[allow(clippy::too_many_arguments)]
fn plan(
    sts: &StatefulSet,
    set: &str,
    history: &Revisions,
    wanted: std::ops::Range<i32>,
    by_ordinal: &BTreeMap<i32, &Pod>,
    condemned: &[&Pod],
    monotonic: bool,
    actions: &mut Vec<Action>,
) {
    let spec = sts.spec.clone().unwrap_or_default();
    let update_rev = history.update.as_str();
    let start = wanted.start;
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    // Ordinals below start + partition stay at (and come back as) the current revision.
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);
    let partition_end = start.saturating_add(partition);
    // The first pod (in ordinal order, wanted ones first) that is not healthy.
    let first_unhealthy: Option<ObjKey> = wanted
        .clone()
        .filter_map(|o| by_ordinal.get(&o).copied())
        .chain(condemned.iter().copied())
        .find(|p| !healthy(p))
        .map(ObjKey::of);

    for o in wanted.clone() {
        match by_ordinal.get(&o) {
            None => {
                let pod = match &history.current_template {
                    Some(t) if !on_delete && o < partition_end => {
                        pod_from(sts, set, o, &history.current, t)
                    }
                    _ => pod_for_ordinal(sts, set, o, update_rev),
                };
                for c in claims_for(sts, set, o) {
                    actions.push(Action::CreateClaim(Box::new(c)));
                }
                actions.push(Action::CreatePod(Box::new(pod)));
                if monotonic {
                    // The next ordinal waits for this one to be Running and Ready.
                    return;
                }
            }
            Some(p) if phase(p) == Some("Failed") && !terminating(&p.metadata) => {
                // Deleted now, recreated once it is gone.
                actions.push(Action::DeletePod(ObjKey::of(*p)));
                if monotonic {
                    return;
                }
            }
            Some(p) => {
                if monotonic && (terminating(&p.metadata) || !running_and_ready(p)) {
                    // OrderedReady: wait for this pod before touching later ones.
                    return;
                }
            }
        }
    }

    // Scale down: highest ordinal first.
    for p in condemned.iter().rev() {
        if terminating(&p.metadata) {
            if monotonic {
                return;
            }
            continue;
        }
        if monotonic && !healthy(p) && first_unhealthy.as_ref() != Some(&ObjKey::of(*p)) {
            return;
        }
        actions.push(Action::DeletePod(ObjKey::of(*p)));
        if monotonic {
            return;
        }
    }

    // Rolling update, highest ordinal first, down to the partition.
    if on_delete {
        return;
    }
    for o in wanted.rev() {
        if o < partition_end {
            break;
        }
        let Some(p) = by_ordinal.get(&o) else {
            continue;
        };
        if revision(p) != Some(update_rev) {
            if !terminating(&p.metadata) {
                actions.push(Action::DeletePod(ObjKey::of(*p)));
            }
            // One at a time: the replacement must be ready first.
            return;
        }
        if !healthy(p) {
            return;
        }
    }
}

/// The claim retention policy, defaults resolved: (whenDeleted, whenScaled)
/// are Delete.
fn retention(sts: &StatefulSet) -> (bool, bool) {
    let p = sts
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// A plain (not controller) owner reference, as Kubernetes puts on claims.
fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The owner references a claim of `pod` should carry (Kubernetes'
/// updateClaimOwnerRefForSetAndPod): references to anything but the set and
/// the pod are kept; the set owns it when `whenDeleted: Delete` (unless the
/// pod is scaled down and `whenScaled: Delete` hands it to the pod); the
/// pod owns it when it is scaled down and `whenScaled: Delete`.
pub fn claim_owners(
    sts: &StatefulSet,
    pod: Option<&Pod>,
    scaled_down: bool,
    current: &[OwnerReference],
) -> Vec<OwnerReference> {
    let (when_deleted, when_scaled) = retention(sts);
    let set_uid = sts.metadata.uid.as_deref().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.as_deref());
    let mut refs: Vec<OwnerReference> = current
        .iter()
        .filter(|r| r.uid != set_uid && Some(r.uid.as_str()) != pod_uid)
        .cloned()
        .collect();
    let to_pod = when_scaled && scaled_down;
    if when_deleted && !to_pod {
        refs.push(owner_ref("apps/v1", "StatefulSet", &sts.metadata));
    }
    if let Some(p) = pod.filter(|_| to_pod) {
        refs.push(owner_ref("v1", "Pod", &p.metadata));
    }
    refs
}

/// Existing claims of existing pods whose owner references differ from what
/// the retention policy asks for, with the references fixed.
fn claim_updates(
    sts: &StatefulSet,
    set: &str,
    wanted: &std::ops::Range<i32>,
    by_ordinal: &BTreeMap<i32, &Pod>,
    claims: &[PersistentVolumeClaim],
) -> Vec<PersistentVolumeClaim> {
    let templates = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    if templates.is_empty() {
        return Vec::new();
    }
    let by_name: BTreeMap<&str, &PersistentVolumeClaim> = claims
        .iter()
        .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
        .collect();
    let mut out = Vec::new();
    for (o, pod) in by_ordinal {
        if terminating(&pod.metadata) {
            continue;
        }
        for t in &templates {
            let tname = t.metadata.name.as_deref().unwrap_or_default();
            let name = format!("{tname}-{set}-{o}");
            let Some(claim) = by_name.get(name.as_str()) else {
                continue;
            };
            if terminating(&claim.metadata) {
                continue;
            }
            let current = claim.metadata.owner_references.clone().unwrap_or_default();
            let want = claim_owners(sts, Some(pod), !wanted.contains(o), &current);
            if want != current {
                let mut c = (*claim).clone();
                c.metadata.owner_references = (!want.is_empty()).then_some(want);
                out.push(c);
            }
        }
    }
    out
}

/// The claims of one ordinal, from the volumeClaimTemplates, owned by the
/// set when its retention policy says `whenDeleted: Delete`.
pub fn claims_for(sts: &StatefulSet, set: &str, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let owners = claim_owners(sts, None, false, &[]);
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let tname = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(format!("{tname}-{set}-{ordinal}")),
                    namespace: sts.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: (!owners.is_empty()).then(|| owners.clone()),
                    ..Default::default()
                },
                spec: t.spec,
                status: None,
            }
        })
        .collect()
}

/// The pod for one ordinal from the set's template: stable name, hostname
/// and subdomain, its claims mounted under the templates' names.
pub fn pod_for_ordinal(sts: &StatefulSet, set: &str, ordinal: i32, revision: &str) -> Pod {
    let template = sts.spec.clone().unwrap_or_default().template;
    pod_from(sts, set, ordinal, revision, &template)
}

/// The pod for one ordinal from `template` (the set's, or an older
/// revision's), labelled with that `revision`.
pub fn pod_from(
    sts: &StatefulSet,
    set: &str,
    ordinal: i32,
    revision: &str,
    template: &PodTemplateSpec,
) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let template = template.clone();
    let name = format!("{set}-{ordinal}");
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut ps = template.spec.unwrap_or_default();
    ps.hostname = Some(name.clone());
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        ps.subdomain = spec.service_name.clone();
    }
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.metadata.name.clone().unwrap_or_default();
        let volumes = ps.volumes.get_or_insert_with(Vec::new);
        // A claim replaces a template volume of the same name, as in Kubernetes.
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{tname}-{set}-{ordinal}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "StatefulSet",
                &sts.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ps),
        status: None,
    }
}

fn compute_status(
    sts: &StatefulSet,
    by_ordinal: &BTreeMap<i32, &Pod>,
    current_rev: &str,
    update_rev: &str,
    now: Timestamp,
) -> StatefulSetStatus {
    let spec = sts.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let old = sts.status.clone().unwrap_or_default();
    let live: Vec<&Pod> = by_ordinal
        .values()
        .copied()
        .filter(|p| !terminating(&p.metadata))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let current_rev = current_rev.to_string();
    let replicas = count(&|_| true);
    let updated = count(&|p| revision(p) == Some(update_rev));
    let ready = count(&|p| pod_ready(p));
    // The rollout is done once every wanted pod runs the update revision.
    let want = spec.replicas.unwrap_or(1);
    let (current_rev, current) = if updated == want && replicas == want && ready == want {
        (update_rev.to_string(), updated)
    } else {
        let c = count(&|p| revision(p) == Some(current_rev.as_str()));
        (current_rev, c)
    };
    let opt = |n: i32| if n == 0 { None } else { Some(n) };
    StatefulSetStatus {
        replicas,
        ready_replicas: opt(ready),
        available_replicas: opt(count(&|p| pod_available(p, min_ready, now))),
        current_replicas: opt(current),
        updated_replicas: opt(updated),
        current_revision: Some(current_rev),
        update_revision: Some(update_rev.to_string()),
        observed_generation: sts.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{pod, set_image, ts};
    use super::*;
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn sts(replicas: i32, f: impl FnOnce(&mut StatefulSetSpec)) -> StatefulSet {
        let labels = BTreeMap::from([("app".to_string(), "db".to_string())]);
        let mut spec = StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some("db".into()),
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
            pod_management_policy: Some("OrderedReady".into()),
            ..Default::default()
        };
        f(&mut spec);
        StatefulSet {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("db".into()),
                uid: Some("sts-uid".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn parallel(s: &mut StatefulSetSpec) {
        s.pod_management_policy = Some("Parallel".into());
    }

    fn partition(n: i32) -> impl FnOnce(&mut StatefulSetSpec) {
        move |s| {
            s.update_strategy = Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(n),
                    max_unavailable: None,
                }),
            })
        }
    }

    /// Pod `db-<o>`: "ready", "pending", "failed" or "leaving"; `new` = current revision.
    fn sp(s: &StatefulSet, o: i32, state: &str, new: bool) -> Pod {
        let mut p = pod(
            &format!("db-{o}"),
            &[("app", "db")],
            None,
            Some("n1"),
            (state == "ready").then_some(10),
        );
        let rev = if new {
            update_revision(s)
        } else {
            "db-old".into()
        };
        p.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION_LABEL.into(), rev);
        let st = p.status.as_mut().unwrap();
        st.phase = Some(
            match state {
                "pending" => "Pending",
                "failed" => "Failed",
                _ => "Running",
            }
            .into(),
        );
        if state == "leaving" {
            p.metadata.deletion_timestamp = Some(Time(ts(50)));
        }
        p
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateClaim(c) => Some(format!(
                    "claim {}",
                    c.metadata.name.clone().unwrap_or_default()
                )),
                Action::CreatePod(p) => Some(format!(
                    "create {}",
                    p.metadata.name.clone().unwrap_or_default()
                )),
                Action::DeletePod(k) => Some(format!("delete {}", k.name)),
                Action::UpdateClaim(c) => Some(format!(
                    "own claim {}",
                    c.metadata.name.clone().unwrap_or_default()
                )),
                Action::UpdateStatus(_) | Action::Revision(_) => None,
            })
            .collect()
    }

    fn with_image(mut s: StatefulSet, image: &str) -> StatefulSet {
        set_image(&mut s.spec.as_mut().unwrap().template, image);
        s
    }

    /// The revision `s`'s template would get, numbered `n`.
    fn revision_of(s: &StatefulSet, n: i64) -> ControllerRevision {
        let spec = s.spec.as_ref().unwrap();
        let owner = history::Owner {
            kind: "StatefulSet",
            meta: &s.metadata,
            template: &spec.template,
            collision_count: None,
            history_limit: None,
            hash_label: REVISION_HASH_LABEL,
        };
        let name = update_revision(s);
        let hash = name.strip_prefix("db-").unwrap().to_string();
        history::new_revision(&owner, &hash, n)
    }

    fn image_of(p: &Pod) -> String {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default()
    }

    #[test]
    fn partition_recreates_old_ordinals_from_the_current_revision() {
        let v1 = with_image(sts(3, partition(2)), "v1");
        let mut v2 = with_image(sts(3, partition(2)), "v2");
        let (r1, r2) = (revision_of(&v1, 1), revision_of(&v2, 2));
        v2.status = Some(StatefulSetStatus {
            current_revision: r1.metadata.name.clone(),
            update_revision: r2.metadata.name.clone(),
            ..Default::default()
        });
        let mut old1 = sp(&v1, 1, "ready", true);
        old1.spec = pod_for_ordinal(&v1, "db", 1, "").spec;
        let pods = vec![old1, sp(&v2, 2, "ready", true)];
        let actions = reconcile(&v2, &pods, &[r1.clone(), r2.clone()], &[], ts(1000));
        let created: Vec<&Pod> = actions
            .iter()
            .filter_map(|a| match a {
                Action::CreatePod(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        let [p] = created.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(p.metadata.name.as_deref(), Some("db-0"));
        assert_eq!(
            image_of(p),
            "v1",
            "below the partition: the current revision"
        );
        assert_eq!(revision(p), r1.metadata.name.as_deref());
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Revision(_))),
            "{actions:?}"
        );
        // Above the partition a missing pod gets the update revision.
        let pods = vec![sp(&v1, 0, "ready", true), sp(&v1, 1, "ready", true)];
        let actions = reconcile(&v2, &pods, &[r1, r2.clone()], &[], ts(1000));
        let Some(Action::CreatePod(p)) = actions.iter().find(|a| matches!(a, Action::CreatePod(_)))
        else {
            panic!("{actions:?}")
        };
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        assert_eq!(image_of(p), "v2");
        assert_eq!(revision(p), r2.metadata.name.as_deref());
    }

    #[test]
    fn rollback_reuses_the_old_revision() {
        let v1 = with_image(sts(1, |_| {}), "v1");
        let v2 = with_image(sts(1, |_| {}), "v2");
        let (r1, r2) = (revision_of(&v1, 1), revision_of(&v2, 2));
        let actions = reconcile(&v1, &[], &[r1.clone(), r2], &[], ts(1000));
        let Some(Action::Revision(history::Change::Renumber(r))) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!((r.metadata.name.clone(), r.revision), (r1.metadata.name, 3));
    }

    /// The volume claim template "data".
    fn data_claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec::default()),
            status: None,
        }
    }

    fn policy(when_deleted: &str, when_scaled: &str) -> impl FnOnce(&mut StatefulSetSpec) {
        let (d, sc) = (when_deleted.to_string(), when_scaled.to_string());
        move |s| {
            s.persistent_volume_claim_retention_policy = Some(
                k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(d),
                    when_scaled: Some(sc),
                },
            );
            s.volume_claim_templates = Some(vec![data_claim()]);
        }
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let mut pod = sp(&sts(1, |_| {}), 1, "ready", true);
        pod.metadata.uid = Some("pod-uid".into());
        let other = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "keep".into(),
            uid: "cm-uid".into(),
            ..Default::default()
        };
        // (whenDeleted, whenScaled, scaled down, owner kinds wanted)
        let cases = [
            ("Retain", "Retain", false, vec!["ConfigMap"]),
            ("Retain", "Retain", true, vec!["ConfigMap"]),
            ("Delete", "Retain", false, vec!["ConfigMap", "StatefulSet"]),
            ("Delete", "Retain", true, vec!["ConfigMap", "StatefulSet"]),
            ("Retain", "Delete", false, vec!["ConfigMap"]),
            ("Retain", "Delete", true, vec!["ConfigMap", "Pod"]),
            ("Delete", "Delete", false, vec!["ConfigMap", "StatefulSet"]),
            ("Delete", "Delete", true, vec!["ConfigMap", "Pod"]),
        ];
        for (d, sc, down, want) in cases {
            let s = sts(1, policy(d, sc));
            // Stale references to the set and the pod are replaced, not doubled.
            let current = vec![
                other.clone(),
                owner_ref("apps/v1", "StatefulSet", &s.metadata),
                owner_ref("v1", "Pod", &pod.metadata),
            ];
            let got = claim_owners(&s, Some(&pod), down, &current);
            let kinds: Vec<&str> = got.iter().map(|r| r.kind.as_str()).collect();
            assert_eq!(kinds, want, "{d}/{sc} scaled down {down}");
            assert!(got.iter().all(|r| r.controller.is_none()));
        }
        let s = sts(1, policy("Delete", "Retain"));
        let c = &claims_for(&s, "db", 0)[0];
        let r = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str()),
            ("StatefulSet", "sts-uid")
        );
        assert!(
            claims_for(&sts(1, policy("Retain", "Delete")), "db", 0)[0]
                .metadata
                .owner_references
                .is_none()
        );
    }

    #[test]
    fn scaled_down_pod_owns_its_claim_before_it_goes() {
        let s = sts(1, policy("Retain", "Delete"));
        let ready = |o| {
            let mut p = sp(&s, o, "ready", true);
            p.metadata.uid = Some(format!("pod-{o}"));
            p
        };
        let claim = |o: i32| PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(format!("data-db-{o}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let pods = vec![ready(0), ready(1)];
        let actions = reconcile(&s, &pods, &[], &[claim(0), claim(1)], ts(1000));
        assert_eq!(
            summary(&actions),
            vec!["own claim data-db-1", "delete db-1"]
        );
        let Some(Action::UpdateClaim(c)) =
            actions.iter().find(|a| matches!(a, Action::UpdateClaim(_)))
        else {
            panic!()
        };
        let r = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("Pod", "pod-1"));
        // Once it owns it, nothing more to write.
        let mut owned = claim(1);
        owned.metadata.owner_references = c.metadata.owner_references.clone();
        let actions = reconcile(&s, &pods, &[], &[claim(0), owned], ts(1000));
        assert_eq!(summary(&actions), vec!["delete db-1"]);
    }

    #[test]
    fn reconcile_table() {
        let base = sts(3, |_| {});
        let ready = |o| sp(&base, o, "ready", true);
        let old = |o| sp(&base, o, "ready", false);
        let with_claims = sts(2, |s| s.volume_claim_templates = Some(vec![data_claim()]));
        type Case = (&'static str, StatefulSet, Vec<Pod>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "ordered: first pod only",
                sts(3, |_| {}),
                vec![],
                vec!["create db-0"],
            ),
            (
                "ordered: next once ready",
                sts(3, |_| {}),
                vec![ready(0)],
                vec!["create db-1"],
            ),
            (
                "ordered: wait while pending",
                sts(3, |_| {}),
                vec![sp(&base, 0, "pending", true)],
                vec![],
            ),
            (
                "parallel: all at once",
                sts(3, parallel),
                vec![],
                vec!["create db-0", "create db-1", "create db-2"],
            ),
            (
                "claims before the pod",
                with_claims.clone(),
                vec![],
                vec!["claim data-db-0", "create db-0"],
            ),
            (
                "failed pod deleted",
                sts(3, |_| {}),
                vec![ready(0), sp(&base, 1, "failed", true)],
                vec!["delete db-1"],
            ),
            (
                "ordered scale down: highest first, one at a time",
                sts(1, |_| {}),
                vec![ready(0), ready(1), ready(2)],
                vec!["delete db-2"],
            ),
            (
                "ordered scale down waits for a terminating pod",
                sts(1, |_| {}),
                vec![ready(0), ready(1), sp(&base, 2, "leaving", true)],
                vec![],
            ),
            (
                "ordered scale down waits for unhealthy pods",
                sts(1, |_| {}),
                vec![sp(&base, 0, "pending", true), ready(1), ready(2)],
                vec![],
            ),
            (
                "parallel scale down",
                sts(1, parallel),
                vec![ready(0), ready(1), ready(2)],
                vec!["delete db-2", "delete db-1"],
            ),
            (
                "rolling update: highest ordinal first",
                sts(3, |_| {}),
                vec![old(0), old(1), old(2)],
                vec!["delete db-2"],
            ),
            (
                "rolling update: one at a time",
                sts(3, |_| {}),
                vec![old(0), old(1), sp(&base, 2, "pending", true)],
                vec![],
            ),
            (
                "rolling update: next once the replacement is ready",
                sts(3, |_| {}),
                vec![old(0), old(1), ready(2)],
                vec!["delete db-1"],
            ),
            (
                "partition keeps lower ordinals",
                sts(3, partition(2)),
                vec![old(0), old(1), ready(2)],
                vec![],
            ),
            (
                "OnDelete",
                sts(3, |s| {
                    s.update_strategy = Some(StatefulSetUpdateStrategy {
                        type_: Some("OnDelete".into()),
                        rolling_update: None,
                    })
                }),
                vec![old(0), old(1), old(2)],
                vec![],
            ),
            (
                "ordinals.start",
                sts(2, |s| {
                    s.ordinals =
                        Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) })
                }),
                vec![ready(0)],
                // OrderedReady: db-5 first; db-0 goes once db-5 and db-6 are ready.
                vec!["create db-5"],
            ),
        ];
        for (what, s, pods, want) in cases {
            assert_eq!(
                summary(&reconcile(&s, &pods, &[], &[], ts(1000))),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn pod_identity_and_claims() {
        let s = sts(1, |s| {
            s.volume_claim_templates = Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(BTreeMap::from([("tier".to_string(), "disk".to_string())])),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec::default()),
                status: None,
            }])
        });
        let actions = reconcile(&s, &[], &[], &[], ts(1000));
        let Some(Action::Revision(history::Change::Create(r))) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(r.metadata.name, Some(update_revision(&s)));
        let Some(Action::CreateClaim(c)) = actions.get(1) else {
            panic!("{actions:?}")
        };
        assert_eq!(c.metadata.name.as_deref(), Some("data-db-0"));
        assert!(
            c.metadata.owner_references.is_none(),
            "claims are retained by default"
        );
        let labels = c.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("db"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("disk"));
        let Some(Action::CreatePod(p)) = actions.get(2) else {
            panic!("{actions:?}")
        };
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(v.name, "data");
        assert_eq!(
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-db-0")
        );
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l.get(POD_NAME_LABEL).map(String::as_str), Some("db-0"));
        assert_eq!(l.get(POD_INDEX_LABEL).map(String::as_str), Some("0"));
        assert_eq!(l.get(REVISION_LABEL), Some(&update_revision(&s)));
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("StatefulSet", Some(true)));
        assert_eq!(ordinal_of("db", p), Some(0));
        assert_eq!(ordinal_of("d", p), None);
    }

    #[test]
    fn status_counts_and_revisions() {
        let s = sts(3, |_| {});
        let pods = vec![
            sp(&s, 0, "ready", false),
            sp(&s, 1, "ready", true),
            sp(&s, 2, "pending", true),
        ];
        let mut with_current = s.clone();
        with_current.status = Some(StatefulSetStatus {
            current_revision: Some("db-old".into()),
            ..Default::default()
        });
        let actions = reconcile(&with_current, &pods, &[], &[], ts(1000));
        let Some(Action::UpdateStatus(n)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = n.status.as_ref().unwrap();
        assert_eq!(st.replicas, 3);
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.available_replicas, Some(2));
        assert_eq!(st.updated_replicas, Some(2));
        assert_eq!(st.current_replicas, Some(1));
        assert_eq!(st.current_revision.as_deref(), Some("db-old"));
        assert_eq!(st.update_revision, Some(update_revision(&s)));
        assert_eq!(st.observed_generation, Some(2));
        // All updated and ready: the update revision becomes current.
        let done: Vec<Pod> = (0..3).map(|o| sp(&s, o, "ready", true)).collect();
        let actions = reconcile(&with_current, &done, &[], &[], ts(1000));
        let Some(Action::UpdateStatus(n)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = n.status.as_ref().unwrap();
        assert_eq!(st.current_revision, Some(update_revision(&s)));
        assert_eq!(st.current_replicas, Some(3));
    }
}
