//! ReplicaSet -> Pods: keeps `spec.replicas` active pods built from the
//! template, deleting the surplus in Kubernetes' order (unscheduled before
//! scheduled, pending before running, not-ready before ready, newest first),
//! and reports the observed counts in the status.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::store::ObjKey;
use super::util::{controller_ref, pod_active, pod_available, pod_ready, terminating};

/// At most this many creations or deletions per reconcile, like Kubernetes'
/// burstReplicas, so one huge scale does not flood the API server.
pub const BURST: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Pod),
    DeletePod(ObjKey),
    UpdateStatus(ReplicaSet),
}

/// Decides what to do for one ReplicaSet given the pods it controls.
/// `suffix` yields random 5-character name suffixes (randomness comes from the caller).
pub fn reconcile(
    rs: &ReplicaSet,
    pods: &[Pod],
    now: Timestamp,
    suffix: &mut dyn FnMut() -> String,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(spec) = rs.spec.as_ref() else {
        return actions;
    };
    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let active: Vec<&Pod> = pods.iter().filter(|p| pod_active(p)).collect();

    // A ReplicaSet being deleted makes no new pods; the garbage collector removes the old ones.
    if !terminating(&rs.metadata) {
        if active.len() < desired {
            for _ in 0..(desired - active.len()).min(BURST) {
                actions.push(Action::CreatePod(pod_from_template(rs, &suffix())));
            }
        } else if active.len() > desired {
            let mut ranked = active.clone();
            ranked.sort_by_key(|p| deletion_rank(p));
            for p in ranked.into_iter().take((active.len() - desired).min(BURST)) {
                actions.push(Action::DeletePod(ObjKey::of(p)));
            }
        }
    }

    // Pods deleted just now no longer count, so the status written with the
    // deletions does not credit them (the Deployment controller reads it).
    let deleted: Vec<&ObjKey> = actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod(k) => Some(k),
            _ => None,
        })
        .collect();
    let remaining: Vec<&Pod> = active
        .iter()
        .copied()
        .filter(|p| !deleted.contains(&&ObjKey::of(*p)))
        .collect();
    let status = compute_status(rs, &remaining, now);
    if rs.status.as_ref() != Some(&status) {
        let mut n = rs.clone();
        n.status = Some(status);
        actions.push(Action::UpdateStatus(n));
    }
    actions
}

/// Sort key: pods that sort first are deleted first.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, i64, i64, String) {
    let scheduled = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts: i64 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(scheduled),
        phase,
        u8::from(pod_ready(p)),
        -restarts,
        -created,
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// A new pod from the template, owned by the ReplicaSet. Both `name` and
/// `generateName` are set: the name makes the create independent of whether
/// the API server fills generateName suffixes.
pub fn pod_from_template(rs: &ReplicaSet, suffix: &str) -> Pod {
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{rs_name}-{suffix}")),
            generate_name: Some(format!("{rs_name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn compute_status(rs: &ReplicaSet, active: &[&Pod], now: Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let opt = |n: i32| if n == 0 { None } else { Some(n) };
    let fully_labeled = count(&|p| {
        let l = p.metadata.labels.clone().unwrap_or_default();
        template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    let old = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: opt(fully_labeled),
        ready_replicas: opt(count(&|p| pod_ready(p))),
        available_replicas: opt(count(&|p| pod_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions,
        terminating_replicas: old.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{meta, pod, ts};
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use std::collections::BTreeMap;

    fn rs(replicas: i32) -> ReplicaSet {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let mut m = meta("default", "web-abc", "rs-uid");
        m.generation = Some(2);
        ReplicaSet {
            metadata: m,
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(Default::default()),
                }),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn p(name: &str, node: Option<&str>, ready: bool, created: i64) -> Pod {
        let mut p = pod(
            name,
            &[("app", "web")],
            Some("10.0.0.1"),
            node,
            ready.then_some(100),
        );
        p.metadata.creation_timestamp = Some(Time(ts(created)));
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
                    p.metadata.name.clone().unwrap_or_default()
                )),
                Action::DeletePod(k) => Some(format!("delete {}", k.name)),
                Action::UpdateStatus(_) => None,
            })
            .collect()
    }

    #[test]
    fn create_and_delete_table() {
        let mut terminating_pod = p("t", Some("n"), true, 10);
        terminating_pod.metadata.deletion_timestamp = Some(Time(ts(50)));
        // (name, replicas, pods, expected pod actions)
        let cases: Vec<(&str, i32, Vec<Pod>, Vec<&str>)> = vec![
            (
                "from zero",
                2,
                vec![],
                vec!["create web-abc-s1", "create web-abc-s2"],
            ),
            ("enough", 1, vec![p("a", Some("n"), true, 10)], vec![]),
            (
                "terminating pods do not count",
                1,
                vec![terminating_pod],
                vec!["create web-abc-s1"],
            ),
            (
                "unscheduled deleted before scheduled",
                1,
                vec![
                    p("sched", Some("n"), true, 10),
                    p("unsched", None, false, 5),
                ],
                vec!["delete unsched"],
            ),
            (
                "not ready deleted before ready",
                1,
                vec![
                    p("ready", Some("n"), true, 20),
                    p("notready", Some("n"), false, 10),
                ],
                vec!["delete notready"],
            ),
            (
                "newest deleted first",
                1,
                vec![
                    p("old", Some("n"), true, 10),
                    p("new", Some("n"), true, 20),
                    p("mid", Some("n"), true, 15),
                ],
                vec!["delete new", "delete mid"],
            ),
            (
                "scale to zero",
                0,
                vec![p("a", Some("n"), true, 10)],
                vec!["delete a"],
            ),
        ];
        for (name, replicas, pods, want) in cases {
            let got = summary(&reconcile(&rs(replicas), &pods, ts(1000), &mut counter()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn created_pod_is_owned_and_labelled() {
        let actions = reconcile(&rs(1), &[], ts(1000), &mut counter());
        let Some(Action::CreatePod(pod)) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("web")
        );
        let r = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.name.as_str(),
                r.uid.as_str(),
                r.controller
            ),
            ("ReplicaSet", "web-abc", "rs-uid", Some(true))
        );
    }

    #[test]
    fn terminating_replica_set_creates_nothing() {
        let mut r = rs(3);
        r.metadata.deletion_timestamp = Some(Time(ts(10)));
        assert_eq!(
            summary(&reconcile(&r, &[], ts(1000), &mut counter())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn status_counts() {
        let mut unlabeled = p("c", Some("n"), true, 10);
        unlabeled.metadata.labels = None;
        let pods = vec![
            p("a", Some("n"), true, 10),
            p("b", Some("n"), false, 10),
            unlabeled,
        ];
        let mut r = rs(3);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let actions = reconcile(&r, &pods, ts(105), &mut counter());
        let Some(Action::UpdateStatus(n)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = n.status.as_ref().unwrap();
        assert_eq!(st.replicas, 3);
        assert_eq!(st.fully_labeled_replicas, Some(2));
        assert_eq!(st.ready_replicas, Some(2));
        // Ready since 100, minReadySeconds 10, now 105: not yet available.
        assert_eq!(st.available_replicas, None);
        assert_eq!(st.observed_generation, Some(2));
        // Unchanged status is not written again.
        let again = reconcile(n, &pods, ts(105), &mut counter());
        assert!(again.is_empty(), "{again:?}");
    }
}
