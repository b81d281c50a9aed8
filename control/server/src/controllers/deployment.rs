//! Deployment -> ReplicaSets. One ReplicaSet per distinct pod template, named
//! `<deployment>-<pod-template-hash>`; the one matching the current template is
//! "new", every other one is "old" and is scaled down as the new one comes up
//! (RollingUpdate, honouring maxSurge/maxUnavailable) or before it comes up
//! (Recreate). Rollback is just a template change back to an old hash: that
//! ReplicaSet becomes new again and gets the next revision number.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::util::{controller_ref, fnv32a, safe_encode, terminating, time};

/// Annotation carrying the rollout revision on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Label that ties a ReplicaSet and its pods to one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Old ReplicaSets kept (scaled to zero) for rollback when the spec does not say.
const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// What the executor must do for one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateReplicaSet(ReplicaSet),
    /// Write spec/metadata of an existing ReplicaSet (replicas, revision).
    UpdateReplicaSet(ReplicaSet),
    DeleteReplicaSet {
        namespace: String,
        name: String,
    },
    /// Write the Deployment's metadata (its revision annotation).
    UpdateDeployment(Deployment),
    UpdateStatus(Deployment),
}

/// The pod-template-hash of a template: FNV-1a over its canonical JSON (and
/// the collision count, which Kubernetes bumps when a name is taken by a
/// ReplicaSet with another template).
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // serde_json output of k8s-openapi types is deterministic: struct fields
    // in declaration order, maps are BTreeMaps.
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(fnv32a(&bytes))
}

fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Available pods a ReplicaSet may be credited with. Never more than its
/// spec: pods above it are being deleted, and its status can lag behind the
/// scale-down (crediting them let a rollout dip below maxUnavailable).
fn available_of(rs: &ReplicaSet) -> i32 {
    status_of(rs).2.min(spec_replicas(rs))
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        })
        .unwrap_or((0, 0, 0))
}

/// Resolves maxSurge/maxUnavailable ("25%" or a count) against `desired`:
/// surge rounds up, unavailable rounds down, and both zero means one
/// unavailable so a rollout can progress (Kubernetes' rule).
pub fn rolling_limits(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let resolve = |v: Option<&IntOrString>, round_up: bool| -> i32 {
        match v {
            None => resolve_percent(25, desired, round_up),
            Some(IntOrString::Int(n)) => (*n).max(0),
            Some(IntOrString::String(s)) => match s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                Some(p) => resolve_percent(p, desired, round_up),
                // Validation rejects other strings; be conservative if one slips through.
                None => s.parse::<i32>().map(|n| n.max(0)).unwrap_or(0),
            },
        }
    };
    let s = resolve(surge, true);
    let u = resolve(unavailable, false);
    if s == 0 && u == 0 { (0, 1) } else { (s, u) }
}

fn resolve_percent(p: i32, desired: i32, round_up: bool) -> i32 {
    let num = i64::from(p.max(0)) * i64::from(desired.max(0));
    let v = if round_up {
        (num + 99) / 100
    } else {
        num / 100
    };
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The ReplicaSet the Deployment wants for its current template.
fn new_replica_set(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = tm.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let name = format!(
        "{}-{}",
        d.metadata.name.as_deref().unwrap_or_default(),
        hash
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(BTreeMap::from([(
                REVISION.to_string(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Decides what to do for one Deployment given the ReplicaSets it controls.
pub fn reconcile(d: &Deployment, owned: &[ReplicaSet], now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    if terminating(&d.metadata) {
        // The garbage collector removes the ReplicaSets once it is gone.
        return actions;
    }
    let Some(spec) = d.spec.as_ref() else {
        return actions;
    };
    let desired = spec.replicas.unwrap_or(1).max(0);
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        rolling_limits(
            ru.and_then(|r| r.max_surge.as_ref()),
            ru.and_then(|r| r.max_unavailable.as_ref()),
            desired,
        )
    };

    let is_new = |rs: &ReplicaSet| {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .map(String::as_str)
            == Some(hash.as_str())
    };
    let new_name = format!(
        "{}-{}",
        d.metadata.name.as_deref().unwrap_or_default(),
        hash
    );
    if spec.paused == Some(true) {
        // Paused: no rollout and no scaling until resumed; only the status is kept true.
        let new_rs = owned.iter().find(|rs| is_new(rs));
        let goal = Goal {
            desired,
            max_unavailable,
            paused: true,
        };
        let status = compute_status(d, new_rs, owned, goal, &new_name, now);
        if d.status.as_ref() != Some(&status) {
            let mut nd = d.clone();
            nd.status = Some(status);
            actions.push(Action::UpdateStatus(nd));
        }
        return actions;
    }
    // Planned state: every ReplicaSet with the replica count we are going to write.
    let mut olds: Vec<(ReplicaSet, i32)> = owned
        .iter()
        .filter(|rs| !is_new(rs))
        .map(|rs| (rs.clone(), spec_replicas(rs)))
        .collect();
    olds.sort_by(|(a, _), (b, _)| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &a.metadata.name,
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &b.metadata.name,
            ))
    });
    let max_old_revision = olds
        .iter()
        .map(|(rs, _)| revision_of(&rs.metadata))
        .max()
        .unwrap_or(0);
    let old_spec_total: i32 = olds.iter().map(|(_, r)| *r).sum();
    let old_running: i32 = olds.iter().map(|(rs, _)| status_of(rs).0).sum();

    let mut new_rs = owned.iter().find(|rs| is_new(rs)).cloned();
    let new_revision;
    match new_rs.as_mut() {
        None => {
            let initial = if recreate {
                if old_spec_total == 0 && old_running == 0 {
                    desired
                } else {
                    0
                }
            } else if old_spec_total == 0 {
                desired
            } else {
                (desired + max_surge - old_spec_total).clamp(0, desired)
            };
            new_revision = max_old_revision + 1;
            actions.push(Action::CreateReplicaSet(new_replica_set(
                d,
                &hash,
                initial,
                new_revision,
            )));
        }
        Some(rs) => {
            let mut changed = false;
            let current = spec_replicas(rs);
            let target = if recreate {
                if old_spec_total == 0 && old_running == 0 {
                    desired
                } else {
                    current.min(desired)
                }
            } else if current > desired {
                desired
            } else if current < desired {
                let allowed = desired + max_surge;
                let total = current + old_spec_total;
                if total >= allowed {
                    current
                } else {
                    current + (allowed - total).min(desired - current)
                }
            } else {
                current
            };
            if target != current {
                rs.spec.get_or_insert_with(Default::default).replicas = Some(target);
                changed = true;
            }
            let rev = revision_of(&rs.metadata);
            if rev <= max_old_revision {
                // A rollback (or a revision lost): the current template gets the newest revision.
                rs.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(REVISION.into(), (max_old_revision + 1).to_string());
                new_revision = max_old_revision + 1;
                changed = true;
            } else {
                new_revision = rev;
            }
            if changed {
                actions.push(Action::UpdateReplicaSet(rs.clone()));
            }
        }
    }

    // Scale old ReplicaSets down.
    let (new_spec, new_available) = new_rs
        .as_ref()
        .map(|rs| (spec_replicas(rs), available_of(rs)))
        .unwrap_or((0, 0));
    if recreate {
        for (_, r) in olds.iter_mut() {
            *r = 0;
        }
    } else if old_spec_total > 0 {
        let min_available = desired - max_unavailable;
        let all_spec = new_spec + old_spec_total;
        let new_unavailable = (new_spec - new_available).max(0);
        let mut budget = all_spec - min_available - new_unavailable;
        // First remove old pods that are not available anyway: that costs no availability.
        for (rs, r) in olds.iter_mut() {
            if budget <= 0 {
                break;
            }
            let unhealthy = (*r - available_of(rs)).max(0);
            let cut = unhealthy.min(budget);
            *r -= cut;
            budget -= cut;
        }
        // Then scale down available old pods while availability stays above the floor.
        let available_all: i32 = new_available
            + owned
                .iter()
                .filter(|rs| !is_new(rs))
                .map(available_of)
                .sum::<i32>();
        let mut scale_down = available_all - min_available;
        for (_, r) in olds.iter_mut() {
            if scale_down <= 0 {
                break;
            }
            let cut = (*r).min(scale_down);
            *r -= cut;
            scale_down -= cut;
        }
    }
    for (rs, r) in &olds {
        if *r != spec_replicas(rs) {
            let mut rs = rs.clone();
            rs.spec.get_or_insert_with(Default::default).replicas = Some(*r);
            actions.push(Action::UpdateReplicaSet(rs));
        }
    }

    // Prune history: old, fully scaled-down ReplicaSets beyond the limit, oldest first.
    let limit = spec
        .revision_history_limit
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .max(0) as usize;
    let idle: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|(rs, r)| *r == 0 && status_of(rs).0 == 0)
        .map(|(rs, _)| rs)
        .collect();
    if idle.len() > limit {
        for rs in &idle[..idle.len() - limit] {
            actions.push(Action::DeleteReplicaSet {
                namespace: rs.metadata.namespace.clone().unwrap_or_default(),
                name: rs.metadata.name.clone().unwrap_or_default(),
            });
        }
    }

    // The Deployment's own revision annotation follows its new ReplicaSet.
    if revision_of(&d.metadata) != new_revision {
        let mut nd = d.clone();
        nd.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.into(), new_revision.to_string());
        nd.status = None;
        actions.push(Action::UpdateDeployment(nd));
    }

    let goal = Goal {
        desired,
        max_unavailable,
        paused: false,
    };
    let status = compute_status(d, new_rs.as_ref(), owned, goal, &new_name, now);
    if d.status.as_ref() != Some(&status) {
        let mut nd = d.clone();
        nd.status = Some(status);
        actions.push(Action::UpdateStatus(nd));
    }
    actions
}

/// What the Deployment asks for, as the status computation needs it.
#[derive(Debug, Clone, Copy)]
struct Goal {
    desired: i32,
    max_unavailable: i32,
    paused: bool,
}

fn compute_status(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    owned: &[ReplicaSet],
    goal: Goal,
    new_name: &str,
    now: Timestamp,
) -> DeploymentStatus {
    let Goal {
        desired,
        max_unavailable,
        paused,
    } = goal;
    let (replicas, ready, available) = owned
        .iter()
        .map(status_of)
        .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    let updated = new_rs.map(|rs| status_of(rs).0).unwrap_or(0);
    let old = d.status.clone().unwrap_or_default();
    let avail_ok = available >= desired - max_unavailable;
    let complete = updated == desired && replicas == desired && available == desired;
    let mut conditions = old.conditions.clone().unwrap_or_default();
    set_condition(
        &mut conditions,
        "Available",
        if avail_ok { "True" } else { "False" },
        if avail_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if avail_ok {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        now,
    );
    let (status, reason, message) = if paused {
        (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        )
    } else if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if new_rs.is_none() {
        (
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    set_condition(
        &mut conditions,
        "Progressing",
        status,
        reason,
        &message,
        now,
    );
    let opt = |n: i32| if n == 0 { None } else { Some(n) };
    DeploymentStatus {
        replicas: opt(replicas),
        ready_replicas: opt(ready),
        available_replicas: opt(available),
        updated_replicas: opt(updated),
        unavailable_replicas: opt((desired - available).max(0)),
        observed_generation: d.metadata.generation,
        collision_count: old.collision_count,
        terminating_replicas: old.terminating_replicas,
        conditions: Some(conditions),
    }
}

/// Sets a condition, keeping its timestamps when nothing about it changed.
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let fresh = DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(time(now)),
        last_transition_time: Some(time(now)),
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        None => conds.push(fresh),
        Some(c) => {
            if c.status != status {
                *c = fresh;
            } else if c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(message) {
                c.reason = fresh.reason;
                c.message = fresh.message;
                c.last_update_time = fresh.last_update_time;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{meta, template, ts};
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn deploy(replicas: i32, image: &str, strategy: &str) -> Deployment {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let mut m = meta("default", "web", "d-uid");
        m.generation = Some(3);
        Deployment {
            metadata: m,
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some(strategy.into()),
                    rolling_update: (strategy == "RollingUpdate").then_some(
                        RollingUpdateDeployment {
                            max_surge: Some(IntOrString::Int(1)),
                            max_unavailable: Some(IntOrString::Int(0)),
                        },
                    ),
                }),
                template: template(&[("app", "web")], image),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The ReplicaSet `d` would own for its template, with replicas and observed counts.
    fn rs_for(
        d: &Deployment,
        spec: i32,
        running: i32,
        available: i32,
        revision: i64,
        created: i64,
    ) -> ReplicaSet {
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        let mut rs = new_replica_set(d, &hash, spec, revision);
        rs.metadata.creation_timestamp = Some(Time(ts(created)));
        rs.status = Some(ReplicaSetStatus {
            replicas: running,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        rs
    }

    /// (name, replicas) of every ReplicaSet write, for compact assertions.
    fn rs_writes(actions: &[Action]) -> Vec<(String, String, i32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateReplicaSet(rs) => Some(("create", rs)),
                Action::UpdateReplicaSet(rs) => Some(("update", rs)),
                _ => None,
            })
            .map(|(op, rs)| {
                (
                    op.to_string(),
                    rs.metadata.name.clone().unwrap(),
                    spec_replicas(rs),
                )
            })
            .collect()
    }

    #[test]
    fn creates_named_owned_replica_set() {
        let d = deploy(3, "img:v1", "RollingUpdate");
        let actions = reconcile(&d, &[], ts(2000));
        let Some(Action::CreateReplicaSet(rs)) = actions.first() else {
            panic!("{actions:?}")
        };
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(spec_replicas(rs), 3);
        let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("Deployment", "d-uid", Some(true), Some(true))
        );
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap().get(HASH_LABEL),
            Some(&hash)
        );
        let tl = spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(tl.get(HASH_LABEL), Some(&hash));
        assert_eq!(tl.get("app").map(String::as_str), Some("web"));
        assert_eq!(revision_of(&rs.metadata), 1);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::UpdateDeployment(d) if revision_of(&d.metadata) == 1))
        );
    }

    #[test]
    fn hash_changes_with_template_only() {
        let a = deploy(3, "img:v1", "RollingUpdate");
        let b = deploy(5, "img:v1", "Recreate");
        let c = deploy(3, "img:v2", "RollingUpdate");
        let h = |d: &Deployment| template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(h(&a), h(&b));
        assert_ne!(h(&a), h(&c));
        assert_ne!(
            template_hash(&a.spec.as_ref().unwrap().template, Some(1)),
            h(&a)
        );
    }

    #[test]
    fn rolling_limits_table() {
        let s = |v: &str| Some(IntOrString::String(v.into()));
        // (surge, unavailable, desired, expected)
        let cases = [
            (None, None, 4, (1, 1)),
            (None, None, 3, (1, 0)),
            (s("50%"), s("50%"), 3, (2, 1)),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                3,
                (0, 1),
            ),
            (Some(IntOrString::Int(2)), s("0%"), 10, (2, 0)),
        ];
        for (surge, unav, desired, want) in cases {
            assert_eq!(
                rolling_limits(surge.as_ref(), unav.as_ref(), desired),
                want,
                "{surge:?} {unav:?} {desired}"
            );
        }
    }

    #[test]
    fn rollout_steps_table() {
        let v1 = deploy(3, "img:v1", "RollingUpdate");
        let v2 = deploy(3, "img:v2", "RollingUpdate");
        let h1 = format!(
            "web-{}",
            template_hash(&v1.spec.as_ref().unwrap().template, None)
        );
        let h2 = format!(
            "web-{}",
            template_hash(&v2.spec.as_ref().unwrap().template, None)
        );
        // (deployment, owned ReplicaSets, expected ReplicaSet writes)
        let v1x5 = deploy(5, "img:v1", "RollingUpdate");
        let v1x1 = deploy(1, "img:v1", "RollingUpdate");
        type Case<'a> = (
            &'a str,
            &'a Deployment,
            Vec<ReplicaSet>,
            Vec<(&'a str, &'a str, i32)>,
        );
        let cases: Vec<Case> = vec![
            (
                "steady state: nothing to write",
                &v1,
                vec![rs_for(&v1, 3, 3, 3, 1, 10)],
                vec![],
            ),
            (
                "scale up",
                &v1x5,
                vec![rs_for(&v1, 3, 3, 3, 1, 10)],
                vec![("update", &h1, 5)],
            ),
            (
                "scale down",
                &v1x1,
                vec![rs_for(&v1, 3, 3, 3, 1, 10)],
                vec![("update", &h1, 1)],
            ),
            // maxSurge 1, maxUnavailable 0: one new pod at a time, old shrinks as new becomes available.
            (
                "template change creates new with surge",
                &v2,
                vec![rs_for(&v1, 3, 3, 3, 1, 10)],
                vec![("create", &h2, 1)],
            ),
            (
                "new pod not yet available: old keeps all",
                &v2,
                vec![rs_for(&v1, 3, 3, 3, 1, 10), rs_for(&v2, 1, 1, 0, 2, 20)],
                vec![],
            ),
            (
                "new pod available: old scales down by one",
                &v2,
                vec![rs_for(&v1, 3, 3, 3, 1, 10), rs_for(&v2, 1, 1, 1, 2, 20)],
                vec![("update", &h1, 2)],
            ),
            (
                "old shrunk: new grows by the freed surge",
                &v2,
                vec![rs_for(&v1, 2, 2, 2, 1, 10), rs_for(&v2, 1, 1, 1, 2, 20)],
                vec![("update", &h2, 2)],
            ),
            (
                "stale old status (3 available, spec already 2) is not credited",
                &v2,
                vec![rs_for(&v1, 2, 3, 3, 1, 10), rs_for(&v2, 1, 1, 1, 2, 20)],
                vec![("update", &h2, 2)],
            ),
            (
                "rollout finishing",
                &v2,
                vec![rs_for(&v1, 1, 1, 1, 1, 10), rs_for(&v2, 3, 3, 3, 2, 20)],
                vec![("update", &h1, 0)],
            ),
        ];
        for (name, d, owned, want) in cases {
            let got = rs_writes(&reconcile(d, &owned, ts(2000)));
            let want: Vec<(String, String, i32)> = want
                .into_iter()
                .map(|(a, b, c)| (a.into(), b.into(), c))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn recreate_scales_old_to_zero_before_new() {
        let v1 = deploy(3, "img:v1", "Recreate");
        let v2 = deploy(3, "img:v2", "Recreate");
        let h1 = format!(
            "web-{}",
            template_hash(&v1.spec.as_ref().unwrap().template, None)
        );
        let h2 = format!(
            "web-{}",
            template_hash(&v2.spec.as_ref().unwrap().template, None)
        );
        let s = |a: &str, b: &String, c: i32| (a.to_string(), b.clone(), c);
        // Old still running: new created empty, old scaled to zero.
        let got = rs_writes(&reconcile(&v2, &[rs_for(&v1, 3, 3, 3, 1, 10)], ts(2000)));
        assert_eq!(got, vec![s("create", &h2, 0), s("update", &h1, 0)]);
        // Old pods still terminating: new stays empty.
        let got = rs_writes(&reconcile(
            &v2,
            &[rs_for(&v1, 0, 2, 0, 1, 10), rs_for(&v2, 0, 0, 0, 2, 20)],
            ts(2000),
        ));
        assert_eq!(got, vec![]);
        // Old gone: new scaled up.
        let got = rs_writes(&reconcile(
            &v2,
            &[rs_for(&v1, 0, 0, 0, 1, 10), rs_for(&v2, 0, 0, 0, 2, 20)],
            ts(2000),
        ));
        assert_eq!(got, vec![s("update", &h2, 3)]);
    }

    #[test]
    fn rollback_bumps_revision_of_old_template() {
        let v1 = deploy(3, "img:v1", "RollingUpdate");
        let v2 = deploy(3, "img:v2", "RollingUpdate");
        // Back on v1 while v2 (revision 2) is the newest.
        let actions = reconcile(
            &v1,
            &[rs_for(&v1, 0, 0, 0, 1, 10), rs_for(&v2, 3, 3, 3, 2, 20)],
            ts(2000),
        );
        let bumped = actions.iter().find_map(|a| match a {
            Action::UpdateReplicaSet(rs) if revision_of(&rs.metadata) == 3 => {
                Some(spec_replicas(rs))
            }
            _ => None,
        });
        assert_eq!(bumped, Some(1), "{actions:?}");
    }

    #[test]
    fn status_sums_replica_sets_and_sets_conditions() {
        let mut d = deploy(3, "img:v1", "RollingUpdate");
        d.metadata.annotations = Some(BTreeMap::from([(REVISION.to_string(), "1".to_string())]));
        let actions = reconcile(&d, &[rs_for(&d, 3, 3, 2, 1, 10)], ts(2000));
        let Some(Action::UpdateStatus(nd)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = nd.status.as_ref().unwrap();
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (Some(3), Some(3), Some(2), Some(1))
        );
        assert_eq!(st.observed_generation, Some(3));
        let avail = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_deref()),
            ("False", Some("MinimumReplicasUnavailable"))
        );
        // Feeding the written status back in yields no further status write.
        let again = reconcile(nd, &[rs_for(&d, 3, 3, 2, 1, 10)], ts(3000));
        assert!(
            again.iter().all(|a| !matches!(a, Action::UpdateStatus(_))),
            "{again:?}"
        );
    }

    #[test]
    fn paused_deployment_does_not_roll_out() {
        let v1 = deploy(3, "img:v1", "RollingUpdate");
        let mut v2 = deploy(5, "img:v2", "RollingUpdate");
        v2.spec.as_mut().unwrap().paused = Some(true);
        let actions = reconcile(&v2, &[rs_for(&v1, 3, 3, 3, 1, 10)], ts(2000));
        assert_eq!(
            rs_writes(&actions),
            vec![],
            "no new ReplicaSet, no scaling while paused"
        );
        let Some(Action::UpdateStatus(nd)) = actions.last() else {
            panic!("{actions:?}")
        };
        let progressing = nd
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_deref()),
            ("Unknown", Some("DeploymentPaused"))
        );
    }

    #[test]
    fn prunes_history_beyond_limit() {
        let mut d = deploy(1, "img:v9", "RollingUpdate");
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let mut owned: Vec<ReplicaSet> = (1..=3)
            .map(|i| {
                rs_for(
                    &deploy(1, &format!("img:v{i}"), "RollingUpdate"),
                    0,
                    0,
                    0,
                    i,
                    i * 10,
                )
            })
            .collect();
        owned.push(rs_for(&d, 1, 1, 1, 4, 100));
        let deleted: Vec<String> = reconcile(&d, &owned, ts(2000))
            .into_iter()
            .filter_map(|a| match a {
                Action::DeleteReplicaSet { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            vec![
                owned[0].metadata.name.clone().unwrap(),
                owned[1].metadata.name.clone().unwrap()
            ]
        );
    }
}
