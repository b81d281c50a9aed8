//! Job -> Pods (Kubernetes' job controller): runs pods from the template
//! until `completions` of them succeed (`NonIndexed`), or until one pod per
//! index 0..completions succeeds (`Indexed`, each pod carrying its index in
//! the `batch.kubernetes.io/job-completion-index` annotation and label, in
//! `JOB_COMPLETION_INDEX` and in its hostname), with at most `parallelism`
//! running at once. A Job fails when its pod failures exceed `backoffLimit`
//! (failed pods under `restartPolicy: Never`, container restarts under
//! `OnFailure`) or when it has been active longer than
//! `activeDeadlineSeconds`; a finished Job's pods that still run are
//! deleted, and the Job itself after `ttlSecondsAfterFinished`. `suspend`
//! deletes the running pods and stops the clock; resuming restarts it. Pods
//! replacing failed ones wait 10 s, doubling per failure up to 6 minutes.
//!
//! Counts come from the Job's pods, which the controller keeps until the Job
//! goes (Kubernetes' finalizer-based tracking of pods deleted before they
//! were counted is not implemented).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::store::ObjKey;
use super::util::{controller_ref, pod_ready, terminating, time};

/// Annotation (and label) carrying an Indexed Job pod's completion index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Labels Kubernetes puts on every Job pod.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

/// What the executor must do for one Job.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Box<Pod>),
    DeletePod(ObjKey),
    UpdateStatus(Box<Job>),
    /// The Job finished `ttlSecondsAfterFinished` ago.
    DeleteJob,
    /// Record an Event on the Job.
    Record {
        warning: bool,
        reason: &'static str,
        message: String,
    },
    /// Look again at this time (a deadline or a TTL falls due).
    RequeueAt(Timestamp),
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn active(p: &Pod) -> bool {
    !terminating(&p.metadata) && !matches!(phase(p), Some("Succeeded") | Some("Failed"))
}

/// The completion index of an Indexed Job's pod.
pub fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .filter(|i| *i >= 0)
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
}

fn is_true(job: &Job, type_: &str) -> bool {
    condition(job, type_).is_some_and(|c| c.status == "True")
}

/// When the Job finished (Complete or Failed), if it has.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    ["Complete", "Failed"]
        .iter()
        .filter_map(|t| condition(job, t))
        .find(|c| c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
}

/// Sets condition `type_` (keeping the transition time when the status does
/// not change). Returns whether it changed.
fn set_condition(
    st: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Time,
) -> bool {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status {
            return false;
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now.clone());
        c.last_transition_time = Some(now);
        return true;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    true
}

/// "1,3-5,7": Kubernetes' compressed form of a set of indexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// Failed pods, and the pod failures counted against backoffLimit: failed
/// pods plus, under restartPolicy OnFailure, container restarts of running
/// pods (Kubernetes counts those only for the limit, not in status.failed).
fn failures(job: &Job, pods: &[Pod]) -> (i32, i64) {
    let failed = pods.iter().filter(|p| phase(p) == Some("Failed")).count();
    let on_failure = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i64 = if on_failure {
        pods.iter()
            .filter(|p| active(p))
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .map(|c| i64::from(c.restart_count))
            .sum()
    } else {
        0
    };
    (i32::try_from(failed).unwrap_or(i32::MAX), restarts)
}

/// When a pod finished: its containers' latest termination, else its
/// latest condition change, else its creation.
fn finish_time(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref();
    let terminated = st
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    let changed = st
        .into_iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .max();
    terminated
        .or(changed)
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Kubernetes' pod-failure back-off: after n failures since the last
/// success, new pods wait 10 s * 2^(n-1), at most 6 minutes, from the
/// latest failure.
fn backoff_until(pods: &[Pod]) -> Option<Timestamp> {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .filter_map(finish_time)
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == Some("Failed"))
        .filter_map(finish_time)
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = failures.iter().max()?;
    let shift = u32::try_from(failures.len() - 1).unwrap_or(u32::MAX).min(6);
    let secs = (10i64 << shift).min(360);
    Some(*last + SignedDuration::from_secs(secs))
}

/// Deletion order for surplus pods: not ready first, then newest.
fn surplus_rank(p: &Pod) -> (bool, std::cmp::Reverse<Option<Timestamp>>, String) {
    (
        pod_ready(p),
        std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// Decides what to do for one Job given the pods it controls.
/// `suffix` yields random 5-character name suffixes.
pub fn reconcile(
    job: &Job,
    pods: &[Pod],
    now: Timestamp,
    suffix: &mut dyn FnMut() -> String,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(spec) = job.spec.as_ref() else {
        return actions;
    };
    if terminating(&job.metadata) {
        return actions;
    }
    let now_t = time(now);
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let live: Vec<&Pod> = pods.iter().filter(|p| active(p)).collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let delete_all = |actions: &mut Vec<Action>| {
        for p in &live {
            actions.push(Action::DeletePod(ObjKey::of(*p)));
        }
    };

    // Counts.
    let succeeded_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .collect();
    let completions_n = completions.unwrap_or(0).max(0);
    let done_indexes: BTreeSet<i32> = if indexed {
        succeeded_pods
            .iter()
            .filter_map(|p| index_of(p))
            .filter(|i| *i < completions_n)
            .collect()
    } else {
        BTreeSet::new()
    };
    let succeeded = if indexed {
        done_indexes.len() as i32
    } else {
        succeeded_pods.len() as i32
    };
    // Counts never go down (a finished pod someone deleted stays counted).
    let succeeded = succeeded.max(old.succeeded.unwrap_or(0));
    let (failed_pods, restarts) = failures(job, pods);
    let failed = failed_pods.max(old.failed.unwrap_or(0));
    st.succeeded = (succeeded > 0).then_some(succeeded);
    st.failed = (failed > 0).then_some(failed);
    if indexed && !done_indexes.is_empty() {
        st.completed_indexes = Some(format_indexes(&done_indexes));
    }

    let finished = finished_at(job);
    if let Some(at) = finished {
        // Finished: nothing runs any more; the TTL may remove the Job.
        delete_all(&mut actions);
        st.active = None;
        st.ready = Some(0);
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let due = at + SignedDuration::from_secs(i64::from(ttl.max(0)));
            if due <= now {
                actions.push(Action::DeleteJob);
                return actions;
            }
            actions.push(Action::RequeueAt(due));
        }
        push_status(job, st, &mut actions);
        return actions;
    }

    // Suspended: no pods, no clock.
    if spec.suspend == Some(true) {
        delete_all(&mut actions);
        st.active = None;
        st.ready = Some(0);
        st.start_time = None;
        if set_condition(
            &mut st,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now_t.clone(),
        ) {
            actions.push(Action::Record {
                warning: false,
                reason: "Suspended",
                message: "Job suspended".into(),
            });
        }
        push_status(job, st, &mut actions);
        return actions;
    }
    if is_true(job, "Suspended") {
        set_condition(
            &mut st,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now_t.clone(),
        );
        actions.push(Action::Record {
            warning: false,
            reason: "Resumed",
            message: "Job resumed".into(),
        });
    }
    let start = match st.start_time.as_ref() {
        Some(t) => t.0,
        None => {
            st.start_time = Some(now_t.clone());
            now
        }
    };

    // Failure: too many pod failures, or past the deadline.
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| start + SignedDuration::from_secs(s.max(0)));
    let failure = if i64::from(failed) + restarts > i64::from(backoff_limit) {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| d <= now) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        delete_all(&mut actions);
        st.active = None;
        st.ready = Some(0);
        set_condition(&mut st, "Failed", "True", reason, message, now_t);
        actions.push(Action::Record {
            warning: true,
            reason,
            message: message.into(),
        });
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            actions.push(Action::RequeueAt(
                now + SignedDuration::from_secs(i64::from(ttl.max(0))),
            ));
        }
        push_status(job, st, &mut actions);
        return actions;
    }

    // Success.
    let complete = match completions {
        Some(c) => succeeded >= c,
        // A work queue: done once one pod succeeded and none runs any more.
        None => succeeded > 0 && live.is_empty(),
    };
    if complete {
        delete_all(&mut actions);
        st.active = None;
        st.ready = Some(0);
        st.completion_time = Some(now_t.clone());
        set_condition(
            &mut st,
            "Complete",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now_t,
        );
        actions.push(Action::Record {
            warning: false,
            reason: "Completed",
            message: "Job completed".into(),
        });
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            actions.push(Action::RequeueAt(
                now + SignedDuration::from_secs(i64::from(ttl.max(0))),
            ));
        }
        push_status(job, st, &mut actions);
        return actions;
    }

    // Running: keep the right number of pods; after failures, new pods wait.
    let hold = backoff_until(pods).filter(|t| *t > now);
    if let Some(t) = hold {
        actions.push(Action::RequeueAt(t));
    }
    let mut deleted: BTreeSet<ObjKey> = BTreeSet::new();
    if indexed {
        // One active pod per index not yet done; extra or out-of-range ones go.
        let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
        for p in &live {
            match index_of(p).filter(|i| *i < completions_n && !done_indexes.contains(i)) {
                Some(i) => by_index.entry(i).or_default().push(p),
                None => {
                    deleted.insert(ObjKey::of(*p));
                }
            }
        }
        for ps in by_index.values_mut() {
            ps.sort_by_key(|p| surplus_rank(p));
            ps.reverse(); // keep the best-ranked (ready, oldest) pod
            for p in ps.iter().skip(1) {
                deleted.insert(ObjKey::of(*p));
            }
        }
        let running = by_index.len() as i32;
        if running > parallelism {
            let mut extra: Vec<&Pod> = by_index.values().map(|ps| ps[0]).collect();
            extra.sort_by_key(|p| surplus_rank(p));
            for p in extra.into_iter().take((running - parallelism) as usize) {
                deleted.insert(ObjKey::of(p));
            }
        } else {
            let pending = (0..completions_n)
                .filter(|i| !done_indexes.contains(i) && !by_index.contains_key(i))
                .take(if hold.is_some() {
                    0
                } else {
                    (parallelism - running) as usize
                });
            for i in pending {
                actions.push(Action::CreatePod(Box::new(pod_from_template(
                    job,
                    Some(i),
                    &suffix(),
                ))));
            }
        }
    } else {
        let want = match completions {
            Some(c) => parallelism.min((c - succeeded).max(0)),
            // A work queue: once one pod succeeded, no new pods.
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let have = live.len() as i32;
        if have < want {
            for _ in 0..if hold.is_some() { 0 } else { want - have } {
                actions.push(Action::CreatePod(Box::new(pod_from_template(
                    job,
                    None,
                    &suffix(),
                ))));
            }
        } else if have > want && completions.is_some() {
            let mut ranked = live.clone();
            ranked.sort_by_key(|p| surplus_rank(p));
            for p in ranked.into_iter().take((have - want) as usize) {
                deleted.insert(ObjKey::of(p));
            }
        }
    }
    for k in &deleted {
        actions.push(Action::DeletePod(k.clone()));
    }
    let remaining: Vec<&&Pod> = live
        .iter()
        .filter(|p| !deleted.contains(&ObjKey::of(**p)))
        .collect();
    let created = actions
        .iter()
        .filter(|a| matches!(a, Action::CreatePod(_)))
        .count();
    let active_n = (remaining.len() + created) as i32;
    st.active = (active_n > 0).then_some(active_n);
    st.ready = Some(remaining.iter().filter(|p| pod_ready(p)).count() as i32);
    if let Some(d) = deadline {
        actions.push(Action::RequeueAt(d));
    }
    push_status(job, st, &mut actions);
    actions
}

fn push_status(job: &Job, st: JobStatus, actions: &mut Vec<Action>) {
    if job.status.as_ref() != Some(&st) {
        let mut n = job.clone();
        n.status = Some(st);
        actions.push(Action::UpdateStatus(Box::new(n)));
    }
}

/// A pod for the Job (for `index` of an Indexed Job), owned by it.
pub fn pod_from_template(job: &Job, index: Option<i32>, suffix: &str) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job.spec.clone().unwrap_or_default().template;
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    for (k, v) in [
        (JOB_NAME_LABEL, &name),
        (LEGACY_JOB_NAME_LABEL, &name),
        (CONTROLLER_UID_LABEL, &uid),
        (LEGACY_CONTROLLER_UID_LABEL, &uid),
    ] {
        labels.insert(k.into(), v.clone());
    }
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let (pod_name, generate) = match index {
        Some(i) => {
            annotations.insert(INDEX_ANNOTATION.into(), i.to_string());
            labels.insert(INDEX_ANNOTATION.into(), i.to_string());
            spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{INDEX_ANNOTATION}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let envs = c.env.get_or_insert_with(Vec::new);
                if !envs.iter().any(|e| e.name == env.name) {
                    envs.push(env.clone());
                }
            }
            (format!("{name}-{i}-{suffix}"), format!("{name}-{i}-"))
        }
        None => (format!("{name}-{suffix}"), format!("{name}-")),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            generate_name: Some(generate),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", "Job", &job.metadata)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{pod, ts};
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodTemplateSpec};

    struct J {
        parallelism: i32,
        completions: Option<i32>,
        backoff: i32,
        indexed: bool,
        restart: &'static str,
        deadline: Option<i64>,
        suspend: bool,
        ttl: Option<i32>,
    }

    const J0: J = J {
        parallelism: 2,
        completions: Some(3),
        backoff: 6,
        indexed: false,
        restart: "Never",
        deadline: None,
        suspend: false,
        ttl: None,
    };

    fn job(j: J) -> Job {
        Job {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("pi".into()),
                uid: Some("job-uid".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                parallelism: Some(j.parallelism),
                completions: j.completions,
                backoff_limit: Some(j.backoff),
                completion_mode: Some(if j.indexed { "Indexed" } else { "NonIndexed" }.into()),
                active_deadline_seconds: j.deadline,
                suspend: Some(j.suspend),
                ttl_seconds_after_finished: j.ttl,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some(j.restart.into()),
                        containers: vec![Container {
                            name: "pi".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn started(mut j: Job, at: i64) -> Job {
        j.status.get_or_insert_with(Default::default).start_time = Some(Time(ts(at)));
        j
    }

    fn with_condition(mut j: Job, type_: &str, at: i64) -> Job {
        j.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(JobCondition {
                type_: type_.into(),
                status: "True".into(),
                last_transition_time: Some(Time(ts(at))),
                ..Default::default()
            });
        j
    }

    /// A job pod in `phase`; `index` for Indexed jobs.
    fn jp(name: &str, phase: &str, index: Option<i32>) -> Pod {
        let mut p = pod(
            name,
            &[],
            None,
            Some("n1"),
            (phase == "Running").then_some(10),
        );
        p.status.as_mut().unwrap().phase = Some(phase.into());
        if let Some(i) = index {
            p.metadata.annotations = Some(BTreeMap::from([(
                INDEX_ANNOTATION.to_string(),
                i.to_string(),
            )]));
        }
        p
    }

    fn failed_at(name: &str, at: i64) -> Pod {
        let mut p = jp(name, "Failed", None);
        p.metadata.creation_timestamp = Some(Time(ts(at)));
        p
    }

    fn succeeded_at(name: &str, at: i64) -> Pod {
        let mut p = jp(name, "Succeeded", None);
        p.metadata.creation_timestamp = Some(Time(ts(at)));
        p
    }

    fn restarted(mut p: Pod, n: i32) -> Pod {
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "pi".into(),
            restart_count: n,
            ..Default::default()
        }]);
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
                Action::DeleteJob => Some("delete job".into()),
                Action::Record { reason, .. } => Some(format!("event {reason}")),
                Action::RequeueAt(t) => Some(format!("requeue {}", t.as_second())),
                Action::UpdateStatus(_) => None,
            })
            .collect()
    }

    #[test]
    fn reconcile_table() {
        let suspended = with_condition(job(J0), "Suspended", 50);
        type Case<'a> = (&'a str, Job, Vec<Pod>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "starts parallelism pods",
                job(J0),
                vec![],
                vec!["create pi-s1", "create pi-s2"],
            ),
            (
                "never more than completions left",
                job(J0),
                vec![
                    jp("a", "Succeeded", None),
                    jp("b", "Succeeded", None),
                    jp("c", "Running", None),
                ],
                vec![],
            ),
            (
                "a failed pod is replaced after the back-off",
                job(J0),
                vec![failed_at("a", 900), jp("b", "Running", None)],
                vec!["create pi-s1"],
            ),
            (
                "back-off: 10 s after one failure",
                job(J0),
                vec![failed_at("a", 995), jp("b", "Running", None)],
                vec!["requeue 1005"],
            ),
            (
                "back-off doubles: 20 s after two",
                job(J0),
                vec![failed_at("a", 900), failed_at("b", 990)],
                vec!["requeue 1010"],
            ),
            (
                "a success resets the back-off",
                job(J0),
                vec![failed_at("a", 900), succeeded_at("b", 995)],
                vec!["create pi-s1", "create pi-s2"],
            ),
            (
                "completions reached",
                job(J0),
                vec![
                    jp("a", "Succeeded", None),
                    jp("b", "Succeeded", None),
                    jp("c", "Succeeded", None),
                ],
                vec!["event Completed"],
            ),
            (
                "lower parallelism deletes surplus",
                job(J {
                    parallelism: 1,
                    completions: Some(5),
                    ..J0
                }),
                vec![jp("a", "Running", None), jp("b", "Pending", None)],
                vec!["delete b"],
            ),
            (
                "failures within backoffLimit",
                job(J { backoff: 1, ..J0 }),
                vec![failed_at("a", 900)],
                vec!["create pi-s1", "create pi-s2"],
            ),
            (
                "failures beyond backoffLimit fail the job",
                job(J { backoff: 1, ..J0 }),
                vec![
                    jp("a", "Failed", None),
                    jp("b", "Failed", None),
                    jp("c", "Running", None),
                ],
                vec!["delete c", "event BackoffLimitExceeded"],
            ),
            (
                "OnFailure counts container restarts",
                job(J {
                    backoff: 1,
                    restart: "OnFailure",
                    ..J0
                }),
                vec![restarted(jp("a", "Running", None), 2)],
                vec!["delete a", "event BackoffLimitExceeded"],
            ),
            (
                "past activeDeadlineSeconds",
                started(
                    job(J {
                        deadline: Some(50),
                        ..J0
                    }),
                    100,
                ),
                vec![jp("a", "Running", None)],
                vec!["delete a", "event DeadlineExceeded"],
            ),
            (
                "before the deadline: look again at it",
                started(
                    job(J {
                        deadline: Some(5000),
                        ..J0
                    }),
                    100,
                ),
                vec![jp("a", "Running", None), jp("b", "Running", None)],
                vec!["requeue 5100"],
            ),
            (
                "suspend deletes running pods",
                job(J {
                    suspend: true,
                    ..J0
                }),
                vec![jp("a", "Running", None), jp("b", "Succeeded", None)],
                vec!["delete a", "event Suspended"],
            ),
            (
                "resume",
                suspended,
                vec![],
                vec!["event Resumed", "create pi-s1", "create pi-s2"],
            ),
            (
                "indexed: lowest pending indexes",
                job(J {
                    indexed: true,
                    ..J0
                }),
                vec![jp("a", "Succeeded", Some(0))],
                vec!["create pi-1-s1", "create pi-2-s2"],
            ),
            (
                "indexed: a second pod for one index goes",
                job(J {
                    indexed: true,
                    ..J0
                }),
                vec![jp("a", "Running", Some(1)), jp("b", "Pending", Some(1))],
                vec!["create pi-0-s1", "delete b"],
            ),
            (
                "indexed: every index done",
                job(J {
                    indexed: true,
                    ..J0
                }),
                vec![
                    jp("a", "Succeeded", Some(0)),
                    jp("b", "Succeeded", Some(2)),
                    jp("c", "Succeeded", Some(1)),
                ],
                vec!["event Completed"],
            ),
            (
                "work queue: no new pods after a success",
                job(J {
                    completions: None,
                    ..J0
                }),
                vec![jp("a", "Succeeded", None), jp("b", "Running", None)],
                vec![],
            ),
            (
                "work queue: done when the rest finished",
                job(J {
                    completions: None,
                    ..J0
                }),
                vec![jp("a", "Succeeded", None), jp("b", "Failed", None)],
                vec!["event Completed"],
            ),
            (
                "finished: wait for the TTL",
                with_condition(
                    job(J {
                        ttl: Some(100),
                        ..J0
                    }),
                    "Complete",
                    950,
                ),
                vec![],
                vec!["requeue 1050"],
            ),
            (
                "finished: TTL passed",
                with_condition(
                    job(J {
                        ttl: Some(10),
                        ..J0
                    }),
                    "Failed",
                    950,
                ),
                vec![],
                vec!["delete job"],
            ),
            (
                "finished: stray running pods go",
                with_condition(job(J0), "Complete", 950),
                vec![jp("a", "Running", None)],
                vec!["delete a"],
            ),
        ];
        for (what, j, pods, want) in cases {
            let got = summary(&reconcile(&j, &pods, ts(1000), &mut counter()));
            assert_eq!(got, want, "{what}");
        }
    }

    fn status_of(actions: &[Action]) -> JobStatus {
        actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus(j) => j.status.clone(),
                _ => None,
            })
            .expect("a status write")
    }

    #[test]
    fn status_and_conditions() {
        let pods = vec![
            jp("a", "Succeeded", None),
            jp("b", "Failed", None),
            jp("c", "Running", None),
        ];
        let st = status_of(&reconcile(&job(J0), &pods, ts(1000), &mut counter()));
        assert_eq!(
            (st.active, st.succeeded, st.failed, st.ready),
            (Some(2), Some(1), Some(1), Some(1))
        );
        assert_eq!(st.start_time, Some(Time(ts(1000))));
        assert!(st.conditions.is_none());

        let done = vec![
            jp("a", "Succeeded", None),
            jp("b", "Succeeded", None),
            jp("c", "Succeeded", None),
        ];
        let st = status_of(&reconcile(
            &started(job(J0), 900),
            &done,
            ts(1000),
            &mut counter(),
        ));
        assert_eq!(st.completion_time, Some(Time(ts(1000))));
        assert_eq!(st.start_time, Some(Time(ts(900))));
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("Complete", "True"));

        let mut failed = started(job(J { backoff: 0, ..J0 }), 900);
        let st = status_of(&reconcile(
            &failed,
            &[jp("a", "Failed", None)],
            ts(1000),
            &mut counter(),
        ));
        let c = &st.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("Failed", Some("BackoffLimitExceeded"))
        );
        assert_eq!(st.completion_time, None, "only success sets completionTime");
        // A finished job's status is left alone once written.
        failed.status = Some(st);
        let again = reconcile(
            &failed,
            &[jp("a", "Failed", None)],
            ts(1010),
            &mut counter(),
        );
        assert!(again.is_empty(), "{again:?}");

        let ix = job(J {
            indexed: true,
            completions: Some(6),
            ..J0
        });
        let pods: Vec<Pod> = [0, 1, 2, 4]
            .iter()
            .map(|i| jp(&format!("p{i}"), "Succeeded", Some(*i)))
            .collect();
        let st = status_of(&reconcile(&ix, &pods, ts(1000), &mut counter()));
        assert_eq!(st.completed_indexes.as_deref(), Some("0-2,4"));
        assert_eq!(st.succeeded, Some(4));
    }

    #[test]
    fn indexed_pod_carries_its_index() {
        let j = job(J {
            indexed: true,
            ..J0
        });
        let p = pod_from_template(&j, Some(2), "abcde");
        assert_eq!(p.metadata.name.as_deref(), Some("pi-2-abcde"));
        assert_eq!(index_of(&p), Some(2));
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(INDEX_ANNOTATION).map(String::as_str), Some("2"));
        assert_eq!(labels.get(JOB_NAME_LABEL).map(String::as_str), Some("pi"));
        assert_eq!(
            labels.get(CONTROLLER_UID_LABEL).map(String::as_str),
            Some("job-uid")
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.api_version.as_str(), r.controller),
            ("Job", "batch/v1", Some(true))
        );
    }

    #[test]
    fn index_ranges() {
        let f = |v: &[i32]| format_indexes(&v.iter().copied().collect());
        assert_eq!(f(&[]), "");
        assert_eq!(f(&[3]), "3");
        assert_eq!(f(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
