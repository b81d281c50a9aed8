//! `weir rollout status|history|undo`, pure parts: reading a rollout's
//! progress from a Deployment's, DaemonSet's or StatefulSet's status
//! (kubectl's status viewers, in their words), and picking the template to
//! roll back to from a Deployment's ReplicaSets' revisions or a DaemonSet's
//! or StatefulSet's ControllerRevisions.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Deployment's (and its ReplicaSets') revision annotation.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

/// Where a rollout stands: finished, or the message to show while waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done(String),
    Waiting(String),
}

/// Reads the rollout state of `d` the way `kubectl rollout status` words it.
pub fn progress(d: &Deployment) -> Progress {
    let name = d.metadata.name.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let wait = |m: String| {
        Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {m}"
        ))
    };
    if updated < want {
        return wait(format!(
            "{updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return wait(format!(
            "{} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return wait(format!(
            "{available} of {updated} updated replicas are available..."
        ));
    }
    Progress::Done(format!("deployment {name:?} successfully rolled out"))
}

/// The only update strategy whose rollout has a status (kubectl's rule).
const ROLLING_UPDATE: &str = "RollingUpdate";

fn not_rolling(strategy: Option<&str>) -> Option<String> {
    // Unset means the server's default, RollingUpdate.
    let t = strategy.unwrap_or(ROLLING_UPDATE);
    (t != ROLLING_UPDATE).then(|| {
        format!("error: rollout status is only available for {ROLLING_UPDATE} strategy type")
    })
}

/// Reads a DaemonSet's rollout state as `kubectl rollout status ds/NAME` does.
pub fn daemonset_progress(ds: &DaemonSet) -> Result<Progress, String> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if let Some(e) = not_rolling(strategy.and_then(|u| u.type_.as_deref())) {
        return Err(e);
    }
    let name = ds.metadata.name.clone().unwrap_or_default();
    let st = ds.status.clone().unwrap_or_default();
    if ds.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0) {
        return Ok(Progress::Waiting(
            "Waiting for daemon set spec update to be observed...".into(),
        ));
    }
    let desired = st.desired_number_scheduled;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let available = st.number_available.unwrap_or(0);
    let wait = |m: String| {
        Ok(Progress::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {m}"
        )))
    };
    if updated < desired {
        return wait(format!(
            "{updated} out of {desired} new pods have been updated..."
        ));
    }
    if available < desired {
        return wait(format!(
            "{available} of {desired} updated pods are available..."
        ));
    }
    Ok(Progress::Done(format!(
        "daemon set {name:?} successfully rolled out"
    )))
}

/// Reads a StatefulSet's rollout state as `kubectl rollout status sts/NAME`
/// does (partitioned roll outs included).
pub fn statefulset_progress(sts: &StatefulSet) -> Result<Progress, String> {
    let spec = sts.spec.as_ref();
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    if let Some(e) = not_rolling(strategy.and_then(|u| u.type_.as_deref())) {
        return Err(e);
    }
    let st = sts.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0);
    if observed == 0 || sts.metadata.generation.unwrap_or(0) > observed {
        return Ok(Progress::Waiting(
            "Waiting for statefulset spec update to be observed...".into(),
        ));
    }
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = st.ready_replicas.unwrap_or(0);
    if ready < replicas {
        return Ok(Progress::Waiting(format!(
            "Waiting for {} pods to be ready...",
            replicas - ready
        )));
    }
    let updated = st.updated_replicas.unwrap_or(0);
    if let Some(partition) = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
    {
        let want = (replicas - partition).max(0);
        if updated < want {
            return Ok(Progress::Waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {want} new pods have been updated..."
            )));
        }
        return Ok(Progress::Done(format!(
            "partitioned roll out complete: {updated} new pods have been updated..."
        )));
    }
    let update_rev = st.update_revision.clone().unwrap_or_default();
    if update_rev != st.current_revision.clone().unwrap_or_default() {
        return Ok(Progress::Waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
        )));
    }
    Ok(Progress::Done(format!(
        "statefulset rolling update complete {} pods at revision {update_rev}...",
        st.current_replicas.unwrap_or(0)
    )))
}

/// The rollout state of an object of `kind` from its JSON.
pub fn progress_of(kind: &str, json: &[u8]) -> Result<Progress, String> {
    let bad = |e: serde_json::Error| format!("error: decoding the {kind}: {e}");
    match kind {
        "Deployment" => Ok(progress(&serde_json::from_slice(json).map_err(bad)?)),
        "DaemonSet" => daemonset_progress(&serde_json::from_slice(json).map_err(bad)?),
        "StatefulSet" => statefulset_progress(&serde_json::from_slice(json).map_err(bad)?),
        other => Err(format!(
            "error: no status viewer has been implemented for {other}"
        )),
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template to roll back to: the ReplicaSet with `to_revision`, or (0)
/// the newest one before the current revision. The hash label is removed:
/// it belongs to ReplicaSets, not to the Deployment's template.
pub fn undo_template(
    owned: &[ReplicaSet],
    current_revision: i64,
    to_revision: i64,
) -> Result<PodTemplateSpec, String> {
    let target = if to_revision > 0 {
        owned
            .iter()
            .find(|rs| revision(rs) == to_revision)
            .ok_or_else(|| format!("unable to find specified revision {to_revision} in history"))?
    } else {
        owned
            .iter()
            .filter(|rs| revision(rs) < current_revision)
            .max_by_key(|rs| revision(rs))
            .ok_or_else(|| "no rollout history found".to_string())?
    };
    let mut t = target
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or("the ReplicaSet has no template")?;
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    Ok(t)
}

/// The pod-template annotation `rollout restart` sets; changing the
/// template makes the Deployment controller roll out new pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// What `rollout restart|pause|resume` changes, as a strategic merge patch.
pub fn action_patch(action: &str, now_rfc3339: &str) -> Option<serde_json::Value> {
    Some(match action {
        "restart" => {
            serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now_rfc3339}}}}})
        }
        "pause" => serde_json::json!({"spec": {"paused": true}}),
        "resume" => serde_json::json!({"spec": {"paused": null}}),
        _ => return None,
    })
}

/// The annotation `kubectl ... --record` and users set to explain a change.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// An object's change-cause annotation.
fn change_cause(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(CHANGE_CAUSE).cloned()
}

/// `rollout history`: (revision, change-cause) of every owned ReplicaSet
/// with a revision, oldest first. Kubernetes copies the Deployment's
/// change-cause onto the ReplicaSet of the current revision; when that copy
/// is missing, the Deployment's own annotation (`current`: its revision and
/// change-cause) stands in for that one revision.
pub fn history(owned: &[ReplicaSet], current: (i64, Option<&str>)) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = owned
        .iter()
        .filter(|rs| revision(rs) > 0)
        .map(|rs| {
            let cause = change_cause(&rs.metadata)
                .or_else(|| {
                    (revision(rs) == current.0)
                        .then(|| current.1.map(str::to_string))
                        .flatten()
                })
                .unwrap_or_else(|| "<none>".into());
            (revision(rs), cause)
        })
        .collect();
    rows.sort_by_key(|(r, _)| *r);
    rows.dedup_by_key(|(r, _)| *r);
    rows
}

/// The pod template of one revision (for `rollout history --revision=N`).
pub fn revision_template(owned: &[ReplicaSet], rev: i64) -> Result<PodTemplateSpec, String> {
    undo_template(owned, i64::MAX, rev)
}

/// Whether rolling back would change nothing (kubectl then skips it).
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(HASH_LABEL);
        }
        t
    };
    strip(a) == strip(b)
}

/// `rollout history` of a DaemonSet or StatefulSet: (revision,
/// change-cause) of each of its ControllerRevisions, oldest first (the
/// controllers copy the owner's annotations onto each revision).
pub fn revision_history(revs: &[ControllerRevision]) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = revs
        .iter()
        .map(|r| {
            let cause = change_cause(&r.metadata).unwrap_or_else(|| "<none>".into());
            (r.revision, cause)
        })
        .collect();
    rows.sort_by_key(|(r, _)| *r);
    rows
}

/// The pod template a ControllerRevision holds: its data is the patch
/// `{"spec":{"template":{..., "$patch":"replace"}}}` the controllers store.
pub fn revision_pod_template(r: &ControllerRevision) -> Result<PodTemplateSpec, String> {
    let name = r.metadata.name.clone().unwrap_or_default();
    let mut t = r
        .data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template"))
        .cloned()
        .ok_or_else(|| format!("revision {name:?} holds no pod template"))?;
    if let serde_json::Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).map_err(|e| format!("revision {name:?}: {e}"))
}

/// The revision `rollout undo` goes back to (kubectl's findHistory): the
/// one numbered `to_revision`, or (0) the newest but one.
pub fn find_revision(
    revs: &[ControllerRevision],
    to_revision: i64,
) -> Result<&ControllerRevision, String> {
    if to_revision > 0 {
        return revs
            .iter()
            .find(|r| r.revision == to_revision)
            .ok_or_else(|| format!("unable to find specified revision {to_revision} in history"));
    }
    let mut sorted: Vec<&ControllerRevision> = revs.iter().collect();
    sorted.sort_by_key(|r| r.revision);
    match sorted.len() {
        0 | 1 => Err("no last revision to roll back to".into()),
        n => Ok(sorted[n - 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, ReplicaSetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn d(
        generation: i64,
        observed: i64,
        want: i32,
        replicas: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn progress_table() {
        let w = |m: &str| {
            Progress::Waiting(format!(
                "Waiting for deployment \"web\" rollout to finish: {m}"
            ))
        };
        let cases = [
            (
                d(2, 1, 3, 3, 3, 3),
                Progress::Waiting("Waiting for deployment spec update to be observed...".into()),
            ),
            (
                d(2, 2, 3, 4, 1, 3),
                w("1 out of 3 new replicas have been updated..."),
            ),
            (
                d(2, 2, 3, 4, 3, 3),
                w("1 old replicas are pending termination..."),
            ),
            (
                d(2, 2, 3, 3, 3, 2),
                w("2 of 3 updated replicas are available..."),
            ),
            (
                d(2, 2, 3, 3, 3, 3),
                Progress::Done("deployment \"web\" successfully rolled out".into()),
            ),
        ];
        for (dep, want) in cases {
            assert_eq!(progress(&dep), want);
        }
    }

    fn rs(rev: i64, image: &str) -> ReplicaSet {
        let mut labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        labels.insert(HASH_LABEL.into(), format!("h{rev}"));
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(REVISION.to_string(), rev.to_string())])),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        annotations: Some(BTreeMap::from([(
                            "image".to_string(),
                            image.to_string(),
                        )])),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn undo_table() {
        let owned = vec![rs(1, "v1"), rs(3, "v3"), rs(2, "v2")];
        let image = |t: &PodTemplateSpec| {
            t.metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get("image"))
                .cloned()
        };
        // (current revision, --to-revision, expected image or error)
        let cases: Vec<(i64, i64, Result<&str, &str>)> = vec![
            (3, 0, Ok("v2")),
            (3, 1, Ok("v1")),
            (1, 0, Err("no rollout history found")),
            (3, 7, Err("unable to find specified revision 7")),
        ];
        for (cur, to, want) in cases {
            let got = undo_template(&owned, cur, to);
            match want {
                Ok(img) => {
                    let t = got.expect("template");
                    assert_eq!(image(&t).as_deref(), Some(img));
                    let labels = t
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.as_ref())
                        .expect("labels");
                    assert!(!labels.contains_key(HASH_LABEL), "hash label stripped");
                    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
                }
                Err(frag) => assert!(got.expect_err(frag).contains(frag)),
            }
        }
    }

    #[test]
    fn action_patch_table() {
        let mut d = serde_json::json!({"spec": {"paused": true, "template": {"metadata": {"labels": {"app": "web"}}}}});
        crate::strategic::strategic_merge(
            &mut d,
            &action_patch("restart", "2026-01-01T00:00:00Z").expect("known"),
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "web");
        crate::strategic::strategic_merge(&mut d, &action_patch("resume", "").expect("known"));
        assert!(d["spec"].get("paused").is_none());
        crate::strategic::strategic_merge(&mut d, &action_patch("pause", "").expect("known"));
        assert_eq!(d["spec"]["paused"], true);
        assert_eq!(action_patch("explode", ""), None);
    }

    #[test]
    fn history_table() {
        let mut with_cause = rs(2, "v2");
        with_cause
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(CHANGE_CAUSE.into(), "set image v2".into());
        let owned = vec![rs(3, "v3"), with_cause, rs(1, "v1"), rs(0, "unrevisioned")];
        assert_eq!(
            history(&owned, (0, None)),
            vec![
                (1, "<none>".to_string()),
                (2, "set image v2".to_string()),
                (3, "<none>".to_string())
            ]
        );
        // The Deployment's change-cause stands in for its current revision only.
        assert_eq!(
            history(&owned, (3, Some("scale up"))),
            vec![
                (1, "<none>".to_string()),
                (2, "set image v2".to_string()),
                (3, "scale up".to_string())
            ]
        );
        assert_eq!(history(&owned, (2, Some("other")))[1].1, "set image v2");
        let t1 = revision_template(&owned, 1).expect("exists");
        let t3 = revision_template(&owned, 3).expect("exists");
        assert!(!same_template(&t1, &t3));
        let raw3 = owned[0]
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .expect("template");
        assert!(same_template(&t3, &raw3), "the hash label does not count");
        assert!(revision_template(&owned, 9).is_err());
    }

    fn ds(strategy: Option<&str>, gen_: i64, observed: i64, counts: (i32, i32, i32)) -> DaemonSet {
        use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy};
        let (desired, updated, available) = counts;
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                generation: Some(gen_),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                update_strategy: strategy.map(|t| DaemonSetUpdateStrategy {
                    type_: Some(t.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(DaemonSetStatus {
                observed_generation: Some(observed),
                desired_number_scheduled: desired,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn daemonset_status_like_kubectl() {
        let w = |m: &str| Ok(Progress::Waiting(m.to_string()));
        for (set, want) in [
            (
                ds(None, 2, 1, (3, 3, 3)),
                w("Waiting for daemon set spec update to be observed..."),
            ),
            (
                ds(Some("RollingUpdate"), 2, 2, (3, 1, 1)),
                w(
                    "Waiting for daemon set \"agent\" rollout to finish: 1 out of 3 new pods have been updated...",
                ),
            ),
            (
                ds(None, 2, 2, (3, 3, 2)),
                w(
                    "Waiting for daemon set \"agent\" rollout to finish: 2 of 3 updated pods are available...",
                ),
            ),
            (
                ds(None, 2, 2, (3, 3, 3)),
                Ok(Progress::Done(
                    "daemon set \"agent\" successfully rolled out".into(),
                )),
            ),
            (
                ds(Some("OnDelete"), 2, 2, (3, 3, 3)),
                Err(
                    "error: rollout status is only available for RollingUpdate strategy type"
                        .into(),
                ),
            ),
        ] {
            assert_eq!(daemonset_progress(&set), want);
        }
    }

    fn sts(
        partition: Option<i32>,
        observed: i64,
        ready: i32,
        updated: i32,
        revs: (&str, &str),
    ) -> StatefulSet {
        use k8s_openapi::api::apps::v1::{
            RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetStatus,
            StatefulSetUpdateStrategy,
        };
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: partition.map(|p| RollingUpdateStatefulSetStrategy {
                        partition: Some(p),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_replicas: Some(3),
                current_revision: Some(revs.0.into()),
                update_revision: Some(revs.1.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn statefulset_status_like_kubectl() {
        let w = |m: &str| Ok(Progress::Waiting(m.to_string()));
        let done = |m: &str| Ok(Progress::Done(m.to_string()));
        for (set, want) in [
            (
                sts(None, 0, 3, 3, ("a", "a")),
                w("Waiting for statefulset spec update to be observed..."),
            ),
            (
                sts(None, 2, 3, 3, ("a", "a")),
                w("Waiting for statefulset spec update to be observed..."),
            ),
            (
                sts(None, 3, 1, 3, ("a", "a")),
                w("Waiting for 2 pods to be ready..."),
            ),
            (
                sts(None, 3, 3, 1, ("a", "b")),
                w("waiting for statefulset rolling update to complete 1 pods at revision b..."),
            ),
            (
                sts(None, 3, 3, 3, ("b", "b")),
                done("statefulset rolling update complete 3 pods at revision b..."),
            ),
            (
                sts(Some(2), 3, 3, 0, ("a", "b")),
                w(
                    "Waiting for partitioned roll out to finish: 0 out of 1 new pods have been updated...",
                ),
            ),
            (
                sts(Some(2), 3, 3, 1, ("a", "b")),
                done("partitioned roll out complete: 1 new pods have been updated..."),
            ),
        ] {
            assert_eq!(statefulset_progress(&set), want);
        }
    }

    #[test]
    fn progress_of_dispatches_by_kind() {
        assert!(matches!(
            progress_of("Deployment", br#"{"metadata":{"name":"web"}}"#),
            Ok(Progress::Done(_) | Progress::Waiting(_))
        ));
        assert_eq!(
            progress_of("ReplicaSet", b"{}"),
            Err("error: no status viewer has been implemented for ReplicaSet".into())
        );
        assert!(
            progress_of("DaemonSet", b"[")
                .unwrap_err()
                .contains("decoding the DaemonSet")
        );
    }

    fn cr(revision: i64, image: &str, cause: Option<&str>) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("web-{revision}")),
                annotations: cause
                    .map(|c| BTreeMap::from([(CHANGE_CAUSE.to_string(), c.to_string())])),
                ..Default::default()
            },
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                serde_json::json!({
                    "spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": image}]}}}
                }),
            )),
            revision,
        }
    }

    #[test]
    fn controller_revision_history_and_undo_target() {
        let revs = vec![
            cr(3, "v3", None),
            cr(1, "v1", Some("first")),
            cr(2, "v2", None),
        ];
        assert_eq!(
            revision_history(&revs),
            vec![
                (1, "first".to_string()),
                (2, "<none>".to_string()),
                (3, "<none>".to_string())
            ]
        );
        let image = |r: &ControllerRevision| {
            revision_pod_template(r).unwrap().spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap()
        };
        // (to-revision, expected image or error)
        let cases: Vec<(i64, Result<&str, &str>)> = vec![
            (0, Ok("v2")),
            (1, Ok("v1")),
            (3, Ok("v3")),
            (7, Err("unable to find specified revision 7 in history")),
        ];
        for (to, want) in cases {
            let got = find_revision(&revs, to).map(image);
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                want,
                "--to-revision={to}"
            );
        }
        assert_eq!(
            find_revision(&revs[..1], 0).unwrap_err(),
            "no last revision to roll back to"
        );
        let t = revision_pod_template(&revs[0]).unwrap();
        assert_eq!(
            t.metadata
                .unwrap()
                .labels
                .unwrap()
                .get("app")
                .map(String::as_str),
            Some("web"),
            "the $patch directive is not part of the template"
        );
    }
}
