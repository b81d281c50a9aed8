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
//! `podFailurePolicy` rules (FailJob / FailIndex / Ignore / Count on exit
//! codes or pod conditions, `policy.rs`), `backoffLimitPerIndex` /
//! `maxFailedIndexes` (`status.failedIndexes`, each pod carrying its index's
//! failures so far) and `successPolicy` (`SuccessCriteriaMet`) as in
//! Kubernetes v1.33.
//!
//! Counting is finalizer-based, as Kubernetes does it: every pod is created
//! with the `batch.kubernetes.io/job-tracking` finalizer; a finished pod (or
//! one deleted before it finished, which counts as failed) is first recorded
//! in `status.uncountedTerminatedPods` (an Indexed success in
//! `completedIndexes`), then its finalizer is removed, then it moves into
//! `succeeded`/`failed`; each step is a separate status the next reconcile
//! reads, so a pod deleted or collected right after it finished is counted
//! exactly once. A Job being deleted, and the pods of a Job that is gone,
//! let go of every finalizer (`release_all`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::store::ObjKey;
use super::util::{controller_ref, pod_ready, terminating, time};
use weir_api::validation::{index_set, parse_indexes};

mod policy;
pub use policy::{FailureAction, match_pod_failure_policy, success_rule_met};

/// Annotation (and label) carrying an Indexed Job pod's completion index.
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Labels Kubernetes puts on every Job pod.
pub use weir_api::validation::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};
/// Keeps a Job's pod in the API until the Job's status has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// On an Indexed Job's pod: the failures of its index before it.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// What the executor must do for one Job.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Box<Pod>),
    DeletePod(ObjKey),
    /// Remove the job-tracking finalizer: the Job's status holds the pod's
    /// outcome (or the pod needs none), so it may be deleted.
    RemoveFinalizer(ObjKey),
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

/// Container restarts of running pods under restartPolicy OnFailure, which
/// Kubernetes counts against backoffLimit (not in status.failed).
fn restarts(job: &Job, pods: &[Pod]) -> i64 {
    let on_failure = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return 0;
    }
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
        // The Job is going: nothing is counted any more, no pod may hang on it.
        return release_all(pods);
    }
    let now_t = time(now);
    let old = job.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let live: Vec<&Pod> = pods.iter().filter(|p| active(p)).collect();
    // Pods being deleted that have not ended yet: with podReplacementPolicy
    // Failed, their replacements wait until they have.
    let terminating_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| terminating(&p.metadata) && !matches!(phase(p), Some("Succeeded" | "Failed")))
        .collect();
    let wait_terminating = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let per_index = indexed && spec.backoff_limit_per_index.is_some();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let completions_n = completions.unwrap_or(0).max(0);

    // Counts: what the status already holds, plus the finished pods it
    // records now (uncountedTerminatedPods) before their finalizers go.
    let t = tally(job, spec, pods);
    for k in &t.release {
        actions.push(Action::RemoveFinalizer(k.clone()));
    }
    st.uncounted_terminated_pods = uncounted_status(&t);
    let counted_failed = old.failed.unwrap_or(0) + t.counted_failed;
    let succeeded = if indexed {
        st.completed_indexes = (!t.completed.is_empty()).then(|| format_indexes(&t.completed));
        t.completed.len() as i32
    } else {
        old.succeeded.unwrap_or(0) + t.counted_succeeded
    };
    st.succeeded = (succeeded > 0).then_some(succeeded);
    st.failed = (counted_failed > 0).then_some(counted_failed);
    if per_index {
        st.failed_indexes = Some(format_indexes(&t.failed_indexes));
    }
    let succeeded_total = if indexed {
        succeeded
    } else {
        succeeded + t.uncounted_succeeded.len() as i32
    };
    let failed_total = counted_failed + t.uncounted_failed.len() as i32;

    // Running pods are deleted with their finalizer when the Job finishes
    // (then counted as failed, as Kubernetes does); without it when they are
    // surplus or the Job is suspended (not failures).
    let delete_all = |actions: &mut Vec<Action>, release: bool| {
        for p in &live {
            if release && tracked(p) {
                actions.push(Action::RemoveFinalizer(ObjKey::of(*p)));
            }
            actions.push(Action::DeletePod(ObjKey::of(*p)));
        }
    };

    if let Some(at) = finished_at(job) {
        // Finished: nothing runs any more; the TTL may remove the Job.
        delete_all(&mut actions, false);
        st.active = None;
        st.ready = Some(0);
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let due = at + SignedDuration::from_secs(i64::from(ttl.max(0)));
            if due <= now && t.release.is_empty() && st.uncounted_terminated_pods.is_none() {
                actions.push(Action::DeleteJob);
                return actions;
            }
            // Due but pods are still being counted: look again shortly.
            actions.push(Action::RequeueAt(
                due.max(now + SignedDuration::from_secs(1)),
            ));
        }
        push_status(job, st, &mut actions);
        return actions;
    }

    // Suspended: no pods, no clock.
    if spec.suspend == Some(true) {
        delete_all(&mut actions, true);
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

    // Failure: a FailJob rule, too many pod failures or failed indexes, or
    // past the deadline. Success: the success policy, or enough completions.
    // As in Kubernetes v1.33 the decision is recorded at once
    // (FailureTarget / SuccessCriteriaMet, and it stands), running pods are
    // deleted, and the terminal Failed / Complete condition follows once
    // every pod has ended and been counted.
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| start + SignedDuration::from_secs(s.max(0)));
    let every_index_ended =
        (0..completions_n).all(|i| t.completed.contains(&i) || t.failed_indexes.contains(&i));
    let stored = |type_: &str| {
        condition(job, type_)
            .filter(|c| c.status == "True")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    };
    let target = stored("FailureTarget");
    let criteria = stored("SuccessCriteriaMet");
    let decided = target.is_some() || criteria.is_some();
    let failure: Option<(&'static str, String)> = if decided {
        None
    } else if let Some(msg) = &t.fail_job {
        Some(("PodFailurePolicy", msg.clone()))
    } else if i64::from(failed_total) + restarts(job, pods) > i64::from(backoff_limit) {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ))
    } else if per_index
        && spec
            .max_failed_indexes
            .is_some_and(|m| t.failed_indexes.len() as i64 > i64::from(m))
    {
        Some((
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes".into(),
        ))
    } else if deadline.is_some_and(|d| d <= now) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".into(),
        ))
    } else if per_index && !t.failed_indexes.is_empty() && every_index_ended {
        Some(("FailedIndexes", "Job has failed indexes".into()))
    } else {
        None
    };
    let by_policy = spec
        .success_policy
        .as_ref()
        .filter(|_| indexed && !decided && failure.is_none())
        .and_then(|p| success_rule_met(p, &t.completed, completions_n));
    let success: Option<(&'static str, String)> = if decided || failure.is_some() {
        None
    } else if let Some(i) = by_policy {
        Some(("SuccessPolicy", format!("Matched rules at index {i}")))
    } else if match completions {
        Some(c) => succeeded_total >= c,
        // A work queue: done once one pod succeeded and none runs any more.
        None => succeeded_total > 0 && live.is_empty(),
    } {
        Some((
            "CompletionsReached",
            "Reached expected number of succeeded pods".into(),
        ))
    } else {
        None
    };
    let outcome = match (target, criteria, &failure, &success) {
        (Some((r, m)), _, _, _) => Some((true, r, m)),
        (None, Some((r, m)), _, _) => Some((false, r, m)),
        (None, None, Some((r, m)), _) => Some((true, r.to_string(), m.clone())),
        (None, None, None, Some((r, m))) => Some((false, r.to_string(), m.clone())),
        _ => None,
    };
    if let Some((failed, reason, message)) = outcome {
        delete_all(&mut actions, false);
        st.active = None;
        st.ready = Some(0);
        let (interim, terminal) = if failed {
            ("FailureTarget", "Failed")
        } else {
            ("SuccessCriteriaMet", "Complete")
        };
        set_condition(&mut st, interim, "True", &reason, &message, now_t.clone());
        if let Some((r, m)) = failure.or(success) {
            actions.push(Action::Record {
                warning: failed,
                reason: if failed { r } else { "Completed" },
                message: if failed { m } else { "Job completed".into() },
            });
        }
        let all_counted =
            live.is_empty() && st.uncounted_terminated_pods.is_none() && t.release.is_empty();
        if all_counted {
            if !failed {
                st.completion_time = Some(now_t.clone());
            }
            set_condition(&mut st, terminal, "True", &reason, &message, now_t);
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                actions.push(Action::RequeueAt(
                    now + SignedDuration::from_secs(i64::from(ttl.max(0))),
                ));
            }
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
        // One active pod per index not yet done or failed; extra or
        // out-of-range ones go.
        let ended = |i: &i32| t.completed.contains(i) || t.failed_indexes.contains(i);
        let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
        for p in &live {
            match index_of(p).filter(|i| *i < completions_n && !ended(i)) {
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
            let still_terminating: BTreeSet<i32> = terminating_pods
                .iter()
                .filter(|_| wait_terminating)
                .filter_map(|p| index_of(p))
                .collect();
            let pending = (0..completions_n)
                .filter(|i| {
                    !ended(i) && !by_index.contains_key(i) && !still_terminating.contains(i)
                })
                .take(if hold.is_some() {
                    0
                } else {
                    (parallelism - running) as usize
                });
            for i in pending {
                let mut p = pod_from_template(job, Some(i), &suffix());
                if per_index {
                    let n = t.index_failures.get(&i).copied().unwrap_or(0);
                    p.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(INDEX_FAILURE_COUNT.into(), n.to_string());
                }
                actions.push(Action::CreatePod(Box::new(p)));
            }
        }
    } else {
        let want = match completions {
            Some(c) => parallelism.min((c - succeeded_total).max(0)),
            // A work queue: once one pod succeeded, no new pods.
            None if succeeded_total > 0 => 0,
            None => parallelism,
        };
        let have = live.len() as i32;
        let waiting = if wait_terminating {
            terminating_pods.len() as i32
        } else {
            0
        };
        if have + waiting < want {
            for _ in 0..if hold.is_some() {
                0
            } else {
                want - have - waiting
            } {
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
        if live.iter().any(|p| ObjKey::of(*p) == *k && tracked(p)) {
            actions.push(Action::RemoveFinalizer(k.clone()));
        }
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
    st.terminating = Some(terminating_pods.len() as i32);
    if let Some(d) = deadline {
        actions.push(Action::RequeueAt(d));
    }
    push_status(job, st, &mut actions);
    actions
}

/// Every tracked pod lets go: the Job is being deleted, or the pods'
/// Job is gone (orphans), so there is nothing left to count them in.
pub fn release_all(pods: &[Pod]) -> Vec<Action> {
    pods.iter()
        .filter(|p| tracked(p))
        .map(|p| Action::RemoveFinalizer(ObjKey::of(p)))
        .collect()
}

fn uncounted_status(t: &Tally) -> Option<UncountedTerminatedPods> {
    let list = |s: &BTreeSet<String>| (!s.is_empty()).then(|| s.iter().cloned().collect());
    let u = UncountedTerminatedPods {
        succeeded: list(&t.uncounted_succeeded),
        failed: list(&t.uncounted_failed),
    };
    (u != UncountedTerminatedPods::default()).then_some(u)
}

/// What the Job's finished pods add to its status, and which pods may let
/// go of their finalizer (Kubernetes' finalizer-based tracking: a finished
/// pod is first recorded in `status.uncountedTerminatedPods`, or for an
/// Indexed Job's success in `completedIndexes`; once that status is
/// stored its finalizer is removed; once the finalizer is gone the pod
/// moves into the `succeeded`/`failed` counters).
#[derive(Debug, Default)]
struct Tally {
    uncounted_succeeded: BTreeSet<String>,
    uncounted_failed: BTreeSet<String>,
    /// Recorded earlier, released since: into the counters now.
    counted_succeeded: i32,
    counted_failed: i32,
    /// Indexed: completed indexes, stored and new.
    completed: BTreeSet<i32>,
    /// Indexed with backoffLimitPerIndex: indexes that will not be retried.
    failed_indexes: BTreeSet<i32>,
    /// Indexed: failures per index so far (the next pod's annotation).
    index_failures: BTreeMap<i32, i32>,
    release: BTreeSet<ObjKey>,
    /// A FailJob rule matched this message's pod.
    fail_job: Option<String>,
}

fn tally(job: &Job, spec: &JobSpec, pods: &[Pod]) -> Tally {
    let mut t = Tally::default();
    let st = job.status.clone().unwrap_or_default();
    let unc = st.uncounted_terminated_pods.unwrap_or_default();
    let old_succeeded: BTreeSet<String> = unc.succeeded.into_iter().flatten().collect();
    let old_failed: BTreeSet<String> = unc.failed.into_iter().flatten().collect();
    let by_uid: BTreeMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
        .collect();
    // Recorded pods whose finalizer is gone (or the pod itself) are counted.
    for (old, keep, counted) in [
        (
            &old_succeeded,
            &mut t.uncounted_succeeded,
            &mut t.counted_succeeded,
        ),
        (&old_failed, &mut t.uncounted_failed, &mut t.counted_failed),
    ] {
        for uid in old {
            match by_uid.get(uid.as_str()) {
                Some(p) if tracked(p) => {
                    keep.insert(uid.clone());
                }
                _ => *counted += 1,
            }
        }
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(0).max(0);
    let stored = |s: Option<&str>| {
        s.and_then(|s| parse_indexes(s, completions).ok())
            .map(|iv| index_set(&iv))
            .unwrap_or_default()
    };
    let stored_completed = if indexed {
        stored(st.completed_indexes.as_deref())
    } else {
        BTreeSet::new()
    };
    t.completed = stored_completed.clone();
    t.failed_indexes = stored(st.failed_indexes.as_deref());
    let limit_per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let policy = spec.pod_failure_policy.as_ref();
    for p in pods {
        let Some(outcome) = outcome(p) else { continue };
        let index = index_of(p).filter(|i| indexed && *i < completions);
        let matched = match outcome {
            Outcome::Failed => policy.and_then(|pol| match_pod_failure_policy(pol, p)),
            Outcome::Succeeded => None,
        };
        let action = matched.as_ref().map(|(a, _)| *a);
        if let Some((FailureAction::FailJob, Some(msg))) = &matched
            && phase(p) == Some("Failed")
        {
            t.fail_job.get_or_insert_with(|| msg.clone());
        }
        if outcome == Outcome::Failed
            && let Some(i) = index
            && action != Some(FailureAction::Ignore)
            && (phase(p) == Some("Failed") || tracked(p))
        {
            let n = failure_count(p) + 1;
            let e = t.index_failures.entry(i).or_insert(0);
            *e = (*e).max(n);
            if action == Some(FailureAction::FailIndex) || limit_per_index.is_some_and(|l| n > l) {
                t.failed_indexes.insert(i);
            }
        }
        if !tracked(p) {
            continue;
        }
        let key = ObjKey::of(p);
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if old_succeeded.contains(&uid) || old_failed.contains(&uid) {
            // Recorded in the stored status: the pod may go.
            t.release.insert(key);
            continue;
        }
        match outcome {
            Outcome::Succeeded if indexed => match index {
                Some(i) if stored_completed.contains(&i) => {
                    t.release.insert(key);
                }
                Some(i) => {
                    t.completed.insert(i);
                }
                // No valid index: nothing to count.
                None => {
                    t.release.insert(key);
                }
            },
            Outcome::Succeeded => {
                t.uncounted_succeeded.insert(uid);
            }
            Outcome::Failed
                if action == Some(FailureAction::Ignore) || (indexed && index.is_none()) =>
            {
                t.release.insert(key);
            }
            Outcome::Failed => {
                t.uncounted_failed.insert(uid);
            }
        }
    }
    // An index that succeeded is not failed (an older pod of it may have).
    t.failed_indexes.retain(|i| !t.completed.contains(i));
    for i in &t.failed_indexes {
        t.index_failures.entry(*i).or_insert(0);
    }
    t
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
}

/// How a pod ended, if it has: a pod being deleted before it succeeded
/// counts as failed (so an orphaned or evicted pod is not lost).
fn outcome(p: &Pod) -> Option<Outcome> {
    match phase(p) {
        Some("Succeeded") => Some(Outcome::Succeeded),
        Some("Failed") => Some(Outcome::Failed),
        _ if terminating(&p.metadata) => Some(Outcome::Failed),
        _ => None,
    }
}

/// Whether a pod still carries the job-tracking finalizer.
pub fn tracked(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// The failures of its index before this pod (Indexed Jobs with backoffLimitPerIndex).
fn failure_count(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
            finalizers: Some(vec![TRACKING_FINALIZER.to_string()]),
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
        p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
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
                Action::RemoveFinalizer(k) => Some(format!("release {}", k.name)),
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
                vec!["release b", "delete b"],
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
                vec!["release a", "delete a", "event Suspended"],
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
                vec!["create pi-0-s1", "release b", "delete b"],
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

    fn conditions(st: &JobStatus) -> Vec<String> {
        st.conditions
            .iter()
            .flatten()
            .map(|c| format!("{} {}", c.type_, c.reason.clone().unwrap_or_default()))
            .collect()
    }

    /// Runs reconcile rounds against a pretend API server: status writes
    /// land, finalizers go, deleted pods vanish once nothing holds them.
    fn settle(mut j: Job, mut pods: Vec<Pod>) -> (Job, Vec<Pod>) {
        for _ in 0..8 {
            for a in reconcile(&j, &pods, ts(1000), &mut counter()) {
                match a {
                    Action::UpdateStatus(n) => j = *n,
                    Action::RemoveFinalizer(k) => {
                        if let Some(p) = pods.iter_mut().find(|p| ObjKey::of(&**p) == k) {
                            p.metadata.finalizers = None;
                        }
                    }
                    Action::DeletePod(k) => {
                        if let Some(p) = pods.iter_mut().find(|p| ObjKey::of(&**p) == k) {
                            p.metadata.deletion_timestamp = Some(Time(ts(1000)));
                        }
                    }
                    _ => {}
                }
            }
            pods.retain(|p| p.metadata.deletion_timestamp.is_none() || tracked(p));
        }
        (j, pods)
    }

    #[test]
    fn status_and_conditions() {
        let pods = vec![
            jp("a", "Succeeded", None),
            jp("b", "Failed", None),
            jp("c", "Running", None),
        ];
        let st = status_of(&reconcile(&job(J0), &pods, ts(1000), &mut counter()));
        // Finished pods are recorded first; the counters follow once their
        // finalizers are gone (see tracking_table).
        assert_eq!(
            (st.active, st.succeeded, st.failed, st.ready),
            (Some(2), None, None, Some(1))
        );
        let u = st.uncounted_terminated_pods.clone().unwrap();
        assert_eq!(
            (u.succeeded, u.failed),
            (Some(vec!["uid-a".into()]), Some(vec!["uid-b".into()]))
        );
        assert_eq!(st.start_time, Some(Time(ts(1000))));
        assert!(st.conditions.is_none());

        let done = vec![
            jp("a", "Succeeded", None),
            jp("b", "Succeeded", None),
            jp("c", "Succeeded", None),
        ];
        // First the decision (SuccessCriteriaMet), Complete once all are counted.
        let st = status_of(&reconcile(
            &started(job(J0), 900),
            &done,
            ts(1000),
            &mut counter(),
        ));
        assert_eq!(
            conditions(&st),
            vec!["SuccessCriteriaMet CompletionsReached"]
        );
        assert_eq!(st.completion_time, None);
        let (j, pods) = settle(started(job(J0), 900), done);
        let st = j.status.clone().unwrap();
        assert_eq!(
            conditions(&st),
            vec![
                "SuccessCriteriaMet CompletionsReached",
                "Complete CompletionsReached"
            ]
        );
        assert_eq!(
            (st.succeeded, st.failed, st.uncounted_terminated_pods),
            (Some(3), None, None)
        );
        assert_eq!(st.completion_time, Some(Time(ts(1000))));
        assert_eq!(st.start_time, Some(Time(ts(900))));
        assert!(pods.iter().all(|p| !tracked(p)), "every finalizer removed");
        assert!(
            reconcile(&j, &pods, ts(1010), &mut counter()).is_empty(),
            "stable"
        );

        // Failure: a running pod is deleted and counted as failed too.
        let (j, pods) = settle(
            started(job(J { backoff: 0, ..J0 }), 900),
            vec![jp("a", "Failed", None), jp("b", "Running", None)],
        );
        let st = j.status.clone().unwrap();
        assert_eq!(
            conditions(&st),
            vec![
                "FailureTarget BackoffLimitExceeded",
                "Failed BackoffLimitExceeded"
            ]
        );
        assert_eq!((st.failed, st.uncounted_terminated_pods), (Some(2), None));
        assert_eq!(st.completion_time, None, "only success sets completionTime");
        assert_eq!(pods.len(), 1, "the deleted pod went once released");
        assert!(
            reconcile(&j, &pods, ts(1010), &mut counter()).is_empty(),
            "stable"
        );

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

    fn with_uncounted(mut j: Job, succeeded: &[&str], failed: &[&str]) -> Job {
        let list = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        j.status
            .get_or_insert_with(Default::default)
            .uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: list(succeeded),
            failed: list(failed),
        });
        j
    }

    fn untracked(mut p: Pod) -> Pod {
        p.metadata.finalizers = None;
        p
    }

    fn deleting(mut p: Pod) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(ts(990)));
        p
    }

    /// (status.succeeded, status.failed, uncounted succeeded, uncounted failed)
    fn counts(actions: &[Action]) -> (Option<i32>, Option<i32>, Vec<String>, Vec<String>) {
        let st = status_of(actions);
        let u = st.uncounted_terminated_pods.unwrap_or_default();
        (
            st.succeeded,
            st.failed,
            u.succeeded.unwrap_or_default(),
            u.failed.unwrap_or_default(),
        )
    }

    #[test]
    fn tracking_table() {
        const BIG: J = J {
            completions: Some(5),
            ..J0
        };
        type Case<'a> = (
            &'a str,
            Job,
            Vec<Pod>,
            Vec<&'a str>,
            (Option<i32>, Option<i32>, Vec<&'a str>, Vec<&'a str>),
        );
        let cases: Vec<Case> = vec![
            (
                "finished pods are recorded, not yet released",
                job(BIG),
                vec![
                    jp("a", "Succeeded", None),
                    jp("b", "Failed", None),
                    jp("c", "Running", None),
                ],
                vec![],
                (None, None, vec!["uid-a"], vec!["uid-b"]),
            ),
            (
                "recorded pods are released",
                with_uncounted(job(BIG), &["uid-a"], &["uid-b"]),
                vec![
                    jp("a", "Succeeded", None),
                    jp("b", "Failed", None),
                    jp("c", "Running", None),
                ],
                vec!["release a", "release b"],
                (None, None, vec!["uid-a"], vec!["uid-b"]),
            ),
            (
                "released pods are counted",
                with_uncounted(job(BIG), &["uid-a"], &["uid-b"]),
                vec![
                    untracked(jp("a", "Succeeded", None)),
                    jp("c", "Running", None),
                ],
                vec![],
                (Some(1), Some(1), vec![], vec![]),
            ),
            (
                "a pod deleted before it finished counts as failed",
                job(BIG),
                vec![deleting(jp("a", "Running", None)), jp("c", "Running", None)],
                vec![],
                (None, None, vec![], vec!["uid-a"]),
            ),
            (
                "finished pods without the finalizer are not counted again",
                job(BIG),
                vec![
                    untracked(jp("a", "Succeeded", None)),
                    jp("c", "Running", None),
                ],
                vec![],
                (None, None, vec![], vec![]),
            ),
        ];
        for (what, j, pods, want, (s, f, us, uf)) in cases {
            let actions = reconcile(&j, &pods, ts(1000), &mut counter());
            let got: Vec<String> = summary(&actions)
                .into_iter()
                .filter(|a| a.starts_with("release"))
                .collect();
            assert_eq!(got, want, "{what}");
            let to_s = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
            assert_eq!(counts(&actions), (s, f, to_s(us), to_s(uf)), "{what}");
        }
        // A Job being deleted lets go of every pod at once.
        let mut going = job(BIG);
        going.metadata.deletion_timestamp = Some(Time(ts(900)));
        let pods = vec![jp("a", "Running", None), untracked(jp("b", "Failed", None))];
        assert_eq!(
            summary(&reconcile(&going, &pods, ts(1000), &mut counter())),
            vec!["release a"]
        );
        assert_eq!(
            release_all(&pods),
            vec![Action::RemoveFinalizer(ObjKey::new("default", "a"))]
        );
        // Created pods carry the finalizer.
        let p = pod_from_template(&job(J0), None, "x");
        assert!(tracked(&p));
    }

    fn exited(mut p: Pod, code: i32) -> Pod {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "pi".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        p
    }

    fn with_policy(mut j: Job, rules: Vec<(&str, &str, Vec<i32>)>) -> Job {
        use k8s_openapi::api::batch::v1::{
            PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
        };
        j.spec.as_mut().unwrap().pod_failure_policy = Some(PodFailurePolicy {
            rules: rules
                .into_iter()
                .map(|(action, op, values)| PodFailurePolicyRule {
                    action: action.into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: op.into(),
                        values,
                    }),
                    on_pod_conditions: None,
                })
                .collect(),
        });
        j
    }

    #[test]
    fn pod_failure_policy_in_reconcile() {
        let rules = || vec![("FailJob", "In", vec![42]), ("Ignore", "In", vec![3])];
        // FailJob: the Job fails with Kubernetes' reason and message.
        let j = with_policy(job(J0), rules());
        let pods = vec![exited(failed_at("a", 900), 42), jp("b", "Running", None)];
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(
            summary(&actions),
            vec!["delete b", "event PodFailurePolicy"]
        );
        let (j, _) = settle(j, pods);
        let st = j.status.unwrap();
        let c = &st.conditions.as_ref().unwrap()[1];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (
                "Failed",
                Some("PodFailurePolicy"),
                Some(
                    "Container pi for pod default/a failed with exit code 42 matching FailJob rule at index 0"
                )
            )
        );
        // Ignore: not counted, released at once, replaced; even with backoffLimit 0.
        let j = with_policy(job(J { backoff: 0, ..J0 }), rules());
        let pods = vec![exited(failed_at("a", 900), 3), jp("b", "Running", None)];
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(summary(&actions), vec!["release a", "create pi-s1"]);
        assert_eq!(counts(&actions), (None, None, vec![], vec![]));
        // No rule matches: counted against backoffLimit 0: the Job fails.
        let pods = vec![exited(failed_at("a", 900), 1)];
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(summary(&actions), vec!["event BackoffLimitExceeded"]);
    }

    fn per_index(mut j: Job, limit: i32, max_failed: Option<i32>) -> Job {
        let s = j.spec.as_mut().unwrap();
        s.backoff_limit_per_index = Some(limit);
        s.max_failed_indexes = max_failed;
        s.backoff_limit = Some(i32::MAX);
        j
    }

    fn attempt(mut p: Pod, failures_before: i32) -> Pod {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX_FAILURE_COUNT.into(), failures_before.to_string());
        p
    }

    #[test]
    fn pod_replacement_policy() {
        let mut j = job(J0);
        let pods = vec![deleting(jp("a", "Running", None)), jp("b", "Running", None)];
        // TerminatingOrFailed (the default without a failure policy): replaced at once.
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(summary(&actions), vec!["create pi-s1"]);
        assert_eq!(status_of(&actions).terminating, Some(1));
        // Failed: the replacement waits until the pod has ended.
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        assert_eq!(
            summary(&reconcile(&j, &pods, ts(1000), &mut counter())),
            Vec::<String>::new()
        );
        let ix = job(J {
            indexed: true,
            ..J0
        });
        let mut ix = ix;
        ix.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        let pods = vec![deleting(jp("a", "Running", Some(0)))];
        assert_eq!(
            summary(&reconcile(&ix, &pods, ts(1000), &mut counter())),
            vec!["create pi-1-s1", "create pi-2-s2"]
        );
    }

    #[test]
    fn backoff_limit_per_index() {
        const IX: J = J {
            indexed: true,
            completions: Some(3),
            parallelism: 3,
            ..J0
        };
        // Index 1 failed once (limit 1): retried, the new pod carries the count.
        let j = per_index(job(IX), 1, None);
        let pods = vec![
            jp("a", "Running", Some(0)),
            attempt(failed_at("b", 900), 0),
            jp("c", "Running", Some(2)),
        ];
        let mut pods = pods;
        pods[1]
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX_ANNOTATION.into(), "1".into());
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        let created: Vec<&Pod> = actions
            .iter()
            .filter_map(|a| match a {
                Action::CreatePod(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1);
        assert_eq!(index_of(created[0]), Some(1));
        assert_eq!(failure_count(created[0]), 1);
        assert_eq!(status_of(&actions).failed_indexes.as_deref(), Some(""));
        // The second failure of index 1 exceeds the limit: the index fails,
        // is not retried; the others go on.
        pods[1] = attempt(pods[1].clone(), 1);
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(summary(&actions), Vec::<String>::new());
        assert_eq!(status_of(&actions).failed_indexes.as_deref(), Some("1"));
        // Once every index ended, a failed one fails the Job.
        let done = vec![
            jp("a", "Succeeded", Some(0)),
            pods[1].clone(),
            jp("c", "Succeeded", Some(2)),
        ];
        let actions = reconcile(&j, &done, ts(1000), &mut counter());
        assert_eq!(summary(&actions), vec!["event FailedIndexes"]);
        // maxFailedIndexes 0: the first failed index fails the Job.
        let j = per_index(job(IX), 1, Some(0));
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(
            summary(&actions),
            vec!["delete a", "delete c", "event MaxFailedIndexesExceeded"]
        );
    }

    #[test]
    fn success_policy_completes_the_job() {
        use k8s_openapi::api::batch::v1::{SuccessPolicy, SuccessPolicyRule};
        let mut j = job(J {
            indexed: true,
            completions: Some(4),
            parallelism: 4,
            ..J0
        });
        j.spec.as_mut().unwrap().success_policy = Some(SuccessPolicy {
            rules: vec![SuccessPolicyRule {
                succeeded_indexes: Some("0".into()),
                succeeded_count: None,
            }],
        });
        let pods = vec![
            jp("a", "Succeeded", Some(0)),
            jp("b", "Running", Some(1)),
            jp("c", "Running", Some(2)),
            jp("d", "Running", Some(3)),
        ];
        let actions = reconcile(&j, &pods, ts(1000), &mut counter());
        assert_eq!(
            summary(&actions),
            vec!["delete b", "delete c", "delete d", "event Completed"]
        );
        let (j, _) = settle(j, pods);
        let st = j.status.unwrap();
        let conds: Vec<(&str, Option<&str>, Option<&str>)> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.reason.as_deref(), c.message.as_deref()))
            .collect();
        assert_eq!(
            conds,
            vec![
                (
                    "SuccessCriteriaMet",
                    Some("SuccessPolicy"),
                    Some("Matched rules at index 0")
                ),
                (
                    "Complete",
                    Some("SuccessPolicy"),
                    Some("Matched rules at index 0")
                ),
            ]
        );
        assert_eq!(st.completed_indexes.as_deref(), Some("0"));
    }
}
