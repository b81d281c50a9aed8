//! ReplicationController -> Pods: the ReplicaSet reconcile, run on the
//! ReplicaSet a ReplicationController amounts to (its map selector as
//! `matchLabels`, defaulting to the template's labels like Kubernetes), with
//! the results mapped back: pods owned by the ReplicationController (`v1`),
//! and its status.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, ReplicationControllerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use super::replicaset;
use super::store::ObjKey;
use super::util::controller_ref;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Box<Pod>),
    DeletePod(ObjKey),
    UpdateStatus(Box<ReplicationController>),
}

/// The selector of a ReplicationController: `spec.selector`, or the
/// template's labels when it is empty.
pub fn selector(rc: &ReplicationController) -> LabelSelector {
    let spec = rc.spec.clone().unwrap_or_default();
    let labels = spec.selector.filter(|s| !s.is_empty()).or_else(|| {
        spec.template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
    });
    LabelSelector {
        match_labels: labels,
        match_expressions: None,
    }
}

/// The ReplicaSet this ReplicationController amounts to.
fn as_replica_set(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: selector(rc),
            template: spec.template,
        }),
        status: rc
            .status
            .as_ref()
            .map(|s| k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas,
                ready_replicas: s.ready_replicas,
                available_replicas: s.available_replicas,
                observed_generation: s.observed_generation,
                conditions: None,
                terminating_replicas: None,
            }),
    }
}

/// Decides what to do for one ReplicationController given the pods it controls.
pub fn reconcile(
    rc: &ReplicationController,
    pods: &[Pod],
    now: Timestamp,
    suffix: &mut dyn FnMut() -> String,
) -> Vec<Action> {
    let owner = controller_ref("v1", "ReplicationController", &rc.metadata);
    replicaset::reconcile(&as_replica_set(rc), pods, now, suffix)
        .into_iter()
        .map(|a| match a {
            replicaset::Action::CreatePod(mut p) => {
                p.metadata.owner_references = Some(vec![owner.clone()]);
                Action::CreatePod(Box::new(p))
            }
            replicaset::Action::DeletePod(k) => Action::DeletePod(k),
            replicaset::Action::UpdateStatus(rs) => {
                let s = rs.status.unwrap_or_default();
                let mut n = rc.clone();
                n.status = Some(ReplicationControllerStatus {
                    replicas: s.replicas,
                    fully_labeled_replicas: s.fully_labeled_replicas,
                    ready_replicas: s.ready_replicas,
                    available_replicas: s.available_replicas,
                    observed_generation: s.observed_generation,
                    conditions: rc.status.as_ref().and_then(|s| s.conditions.clone()),
                });
                Action::UpdateStatus(Box::new(n))
            }
        })
        // The ReplicaSet status carries fields an RC does not have: write only real changes.
        .filter(|a| match a {
            Action::UpdateStatus(n) => n.status != rc.status,
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{meta, pod, ts};
    use super::*;
    use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationControllerSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn rc(replicas: i32, selector: Option<&[(&str, &str)]>) -> ReplicationController {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let mut m = meta("default", "web", "rc-uid");
        m.generation = Some(4);
        ReplicationController {
            metadata: m,
            spec: Some(ReplicationControllerSpec {
                replicas: Some(replicas),
                selector: selector.map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
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

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("s{n}")
        }
    }

    #[test]
    fn reconcile_table() {
        let ready = |n: &str| pod(n, &[("app", "web")], Some("10.0.0.1"), Some("n1"), Some(10));
        let mut newer = ready("b");
        newer.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(2000)),
        );
        type Case = (
            &'static str,
            ReplicationController,
            Vec<Pod>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "scale up",
                rc(2, None),
                vec![ready("a")],
                vec!["create web-s1"],
            ),
            (
                "enough",
                rc(1, Some(&[("app", "web")])),
                vec![ready("a")],
                vec![],
            ),
            (
                "scale down: newest first",
                rc(1, None),
                vec![ready("a"), newer],
                vec!["delete b"],
            ),
        ];
        for (what, r, pods, want) in cases {
            let got: Vec<String> = reconcile(&r, &pods, ts(1000), &mut counter())
                .iter()
                .filter_map(|a| match a {
                    Action::CreatePod(p) => Some(format!(
                        "create {}",
                        p.metadata.name.clone().unwrap_or_default()
                    )),
                    Action::DeletePod(k) => Some(format!("delete {}", k.name)),
                    Action::UpdateStatus(_) => None,
                })
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn pods_are_owned_by_the_controller_and_status_maps_back() {
        let r = rc(1, None);
        let actions = reconcile(&r, &[], ts(1000), &mut counter());
        let Some(Action::CreatePod(p)) = actions.first() else {
            panic!("{actions:?}")
        };
        let o = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.uid.as_str(),
                o.controller
            ),
            ("v1", "ReplicationController", "rc-uid", Some(true))
        );
        let ready = pod(
            "a",
            &[("app", "web")],
            Some("10.0.0.1"),
            Some("n1"),
            Some(10),
        );
        let actions = reconcile(&r, std::slice::from_ref(&ready), ts(1000), &mut counter());
        let Some(Action::UpdateStatus(n)) = actions.last() else {
            panic!("{actions:?}")
        };
        let st = n.status.clone().unwrap();
        assert_eq!(
            (st.replicas, st.ready_replicas, st.available_replicas),
            (1, Some(1), Some(1))
        );
        assert_eq!(st.observed_generation, Some(4));
        assert!(reconcile(n, &[ready], ts(1000), &mut counter()).is_empty());
        // No selector: the template's labels select.
        assert_eq!(
            selector(&r).match_labels,
            Some(BTreeMap::from([("app".to_string(), "web".to_string())]))
        );
    }
}
