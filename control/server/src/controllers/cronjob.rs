//! CronJob -> Jobs (Kubernetes' cronjob controller, v2): at each time the
//! schedule names (read in `spec.timeZone`), one Job from the template, named
//! `<cronjob>-<scheduled time in minutes since the epoch>` so a repeated
//! reconcile cannot start the same run twice. After downtime only the most
//! recent missed time runs (never a flood), and not at all when it is more
//! than `startingDeadlineSeconds` late. `concurrencyPolicy` Allow starts it
//! regardless, Forbid skips it while a Job is active (it runs when that one
//! ends, if still within the deadline), Replace deletes the active Jobs
//! first. `suspend` stops new runs. Finished Jobs beyond
//! `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted,
//! oldest first. The clock is an argument.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::cron::{Schedule, time_zone};
use super::job::finished_at;
use super::util::{controller_ref, terminating, time};

/// Annotation with the time a Job was scheduled for (RFC 3339).
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed start times counted before Kubernetes' "too many missed" warning.
const TOO_MANY_MISSED: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreateJob(Box<Job>),
    /// Delete a Job (history beyond its limit, or replaced).
    DeleteJob {
        name: String,
        replaced: bool,
    },
    UpdateStatus(Box<CronJob>),
    Record {
        warning: bool,
        reason: &'static str,
        message: String,
    },
    RequeueAt(Timestamp),
}

fn job_name(j: &Job) -> String {
    j.metadata.name.clone().unwrap_or_default()
}

fn succeeded(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// When a Job was scheduled for: its annotation, else its creation time.
fn scheduled_of(j: &Job) -> Option<Timestamp> {
    j.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_ANNOTATION))
        .and_then(|s| s.parse().ok())
        .or_else(|| j.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The scheduled times in (`earliest`, `now`]: the most recent one and how
/// many there were (counting stops just past the warning threshold).
fn missed(
    s: &Schedule,
    tz: &k8s_openapi::jiff::tz::TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut last = None;
    let mut count = 0;
    let mut t = earliest;
    let mut jumped = false;
    while let Some(next) = s.next_after(t, tz) {
        if next > now {
            break;
        }
        last = Some(next);
        count += 1;
        t = next;
        if count > TOO_MANY_MISSED && !jumped {
            // Only the most recent time matters now: continue from the
            // smallest window before `now` that holds one.
            jumped = true;
            for hours in [1, 24, 24 * 32, 24 * 366] {
                let start = now - SignedDuration::from_hours(hours);
                if start <= t {
                    break;
                }
                if s.next_after(start, tz).is_some_and(|x| x <= now) {
                    t = start;
                    break;
                }
            }
        }
    }
    (last, count)
}

/// Decides what to do for one CronJob given the Jobs it controls.
pub fn reconcile(cj: &CronJob, jobs: &[Job], now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(spec) = cj.spec.as_ref() else {
        return actions;
    };
    if terminating(&cj.metadata) {
        return actions;
    }
    let old = cj.status.clone().unwrap_or_default();
    let mut st = old.clone();

    // Active list: the Jobs that run now (the controlled ones, not finished).
    let mut active: Vec<&Job> = jobs
        .iter()
        .filter(|j| finished_at(j).is_none() && !terminating(&j.metadata))
        .collect();
    active.sort_by_key(|j| job_name(j));
    let was_active: Vec<String> = old
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    for j in jobs.iter().filter(|j| finished_at(j).is_some()) {
        if was_active.contains(&job_name(j)) {
            let cond = if succeeded(j) { "Complete" } else { "Failed" };
            actions.push(Action::Record {
                warning: false,
                reason: "SawCompletedJob",
                message: format!("Saw completed job: {}, condition: {cond}", job_name(j)),
            });
        }
        if succeeded(j) {
            let done = j
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0)
                .or_else(|| finished_at(j));
            let last = st.last_successful_time.as_ref().map(|t| t.0);
            if let Some(d) = done
                && last.is_none_or(|l| d > l)
            {
                st.last_successful_time = Some(time(d));
            }
        }
    }

    // History: keep the newest finished Jobs up to each limit.
    let mut finished: Vec<&Job> = jobs
        .iter()
        .filter(|j| finished_at(j).is_some() && !terminating(&j.metadata))
        .collect();
    finished.sort_by_key(|j| (scheduled_of(j), job_name(j)));
    for (ok, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let of_kind: Vec<&&Job> = finished.iter().filter(|j| succeeded(j) == ok).collect();
        let extra = of_kind
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        for j in of_kind.into_iter().take(extra) {
            actions.push(Action::DeleteJob {
                name: job_name(j),
                replaced: false,
            });
        }
    }

    // Schedule.
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            actions.push(Action::Record {
                warning: true,
                reason: "UnparseableSchedule",
                message: format!("unparseable schedule: {:?} : {e}", spec.schedule),
            });
            return finish(cj, st, &active, actions);
        }
    };
    let tz = match time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            actions.push(Action::Record {
                warning: true,
                reason: "UnknownTimeZone",
                message: e.to_string(),
            });
            return finish(cj, st, &active, actions);
        }
    };
    if spec.suspend == Some(true) {
        return finish(cj, st, &active, actions);
    }
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut earliest = st
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(created);
    if let Some(d) = spec.starting_deadline_seconds {
        earliest = earliest.max(now - SignedDuration::from_secs(d.max(0)));
    }
    let (due, count) = missed(&schedule, &tz, earliest, now);
    if let Some(next) = schedule.next_after(now, &tz) {
        actions.push(Action::RequeueAt(next));
    }
    let Some(due) = due else {
        return finish(cj, st, &active, actions);
    };
    if count > TOO_MANY_MISSED {
        actions.push(Action::Record {
            warning: true,
            reason: "TooManyMissedTimes",
            message: format!(
                "too many missed start times: {count}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            ),
        });
    }
    if let Some(d) = spec.starting_deadline_seconds
        && due + SignedDuration::from_secs(d.max(0)) < now
    {
        actions.push(Action::Record {
            warning: true,
            reason: "MissSchedule",
            message: format!("Missed scheduled time to start a job: {due}"),
        });
        return finish(cj, st, &active, actions);
    }
    let name = format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or_default(),
        due.as_second() / 60
    );
    if jobs.iter().any(|j| job_name(j) == name) {
        // Already started (the status write may have been lost).
        st.last_schedule_time = Some(time(due));
        return finish(cj, st, &active, actions);
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        actions.push(Action::Record {
            warning: false,
            reason: "JobAlreadyActive",
            message: "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
        });
        return finish(cj, st, &active, actions);
    }
    if policy == "Replace" {
        for j in active.drain(..) {
            actions.push(Action::DeleteJob {
                name: job_name(j),
                replaced: true,
            });
        }
    }
    let job = job_from_template(cj, &name, due);
    st.last_schedule_time = Some(time(due));
    let mut refs: Vec<ObjectReference> = active.iter().map(|j| job_ref(j)).collect();
    refs.push(job_ref(&job));
    actions.push(Action::CreateJob(Box::new(job)));
    st.active = Some(refs);
    push_status(cj, st, &mut actions);
    actions
}

fn finish(
    cj: &CronJob,
    mut st: CronJobStatus,
    active: &[&Job],
    mut actions: Vec<Action>,
) -> Vec<Action> {
    let refs: Vec<ObjectReference> = active.iter().map(|j| job_ref(j)).collect();
    st.active = (!refs.is_empty()).then_some(refs);
    push_status(cj, st, &mut actions);
    actions
}

fn push_status(cj: &CronJob, mut st: CronJobStatus, actions: &mut Vec<Action>) {
    // References carry resourceVersions that change with every Job write;
    // compare without them so a running Job does not cause status churn.
    let strip = |s: &CronJobStatus| {
        let mut s = s.clone();
        for r in s.active.iter_mut().flatten() {
            r.resource_version = None;
        }
        s
    };
    for r in st.active.iter_mut().flatten() {
        r.resource_version = None;
    }
    if cj.status.as_ref().map(strip) != Some(st.clone()) {
        let mut n = cj.clone();
        n.status = Some(st);
        actions.push(Action::UpdateStatus(Box::new(n)));
    }
}

/// The Job for the run scheduled at `at`, owned by the CronJob.
pub fn job_from_template(cj: &CronJob, name: &str, at: Timestamp) -> Job {
    let template = cj.spec.clone().unwrap_or_default().job_template;
    let tm = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_ANNOTATION.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        CronJobSpec, JobCondition, JobSpec, JobStatus, JobTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("test time")
    }

    fn cj(schedule: &str, f: impl FnOnce(&mut CronJobSpec)) -> CronJob {
        let mut spec = CronJobSpec {
            schedule: schedule.into(),
            concurrency_policy: Some("Allow".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".to_string(), "report".to_string())])),
                    ..Default::default()
                }),
                spec: Some(JobSpec::default()),
            },
            ..Default::default()
        };
        f(&mut spec);
        CronJob {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("report".into()),
                uid: Some("cj-uid".into()),
                creation_timestamp: Some(Time(t("2026-11-25T00:00:00Z"))),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn last_scheduled(mut c: CronJob, at: &str) -> CronJob {
        c.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(Time(t(at)));
        c
    }

    fn minutes(at: &str) -> i64 {
        t(at).as_second() / 60
    }

    /// A Job of the CronJob scheduled at `at`; `done` = Some("Complete"|"Failed").
    fn job(at: &str, done: Option<&str>) -> Job {
        let c = cj("* * * * *", |_| {});
        let mut j = job_from_template(&c, &format!("report-{}", minutes(at)), t(at));
        j.metadata.uid = Some(format!("uid-{at}"));
        if let Some(cond) = done {
            j.status = Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: cond.into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(t(at) + SignedDuration::from_secs(30))),
                    ..Default::default()
                }]),
                completion_time: (cond == "Complete")
                    .then(|| Time(t(at) + SignedDuration::from_secs(30))),
                ..Default::default()
            });
        }
        j
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateJob(j) => Some(format!("create {}", job_name(j))),
                Action::DeleteJob { name, replaced } => Some(format!(
                    "delete {name}{}",
                    if *replaced { " (replaced)" } else { "" }
                )),
                Action::Record { reason, .. } => Some(format!("event {reason}")),
                Action::RequeueAt(at) => Some(format!("requeue {at}")),
                Action::UpdateStatus(_) => None,
            })
            .collect()
    }

    #[test]
    fn reconcile_table() {
        let m = |at: &str| minutes(at).to_string();
        let every5 = "*/5 * * * *";
        let running = || vec![job("2026-11-25T00:05:00Z", None)];
        let create = |at: &str| format!("create report-{}", m(at));
        type Case = (&'static str, CronJob, Vec<Job>, &'static str, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                "first run",
                cj(every5, |_| {}),
                vec![],
                "2026-11-25T00:05:30Z",
                vec![
                    "requeue 2026-11-25T00:10:00Z".into(),
                    create("2026-11-25T00:05:00Z"),
                ],
            ),
            (
                "nothing due yet",
                last_scheduled(cj(every5, |_| {}), "2026-11-25T00:05:00Z"),
                vec![],
                "2026-11-25T00:07:00Z",
                vec!["requeue 2026-11-25T00:10:00Z".into()],
            ),
            (
                "after downtime only the latest missed run starts",
                last_scheduled(cj(every5, |_| {}), "2026-11-25T00:05:00Z"),
                vec![],
                "2026-11-25T03:02:00Z",
                vec![
                    "requeue 2026-11-25T03:05:00Z".into(),
                    create("2026-11-25T03:00:00Z"),
                ],
            ),
            (
                "too late for startingDeadlineSeconds",
                last_scheduled(
                    cj(every5, |s| s.starting_deadline_seconds = Some(60)),
                    "2026-11-25T00:05:00Z",
                ),
                vec![],
                "2026-11-25T00:12:30Z",
                vec!["requeue 2026-11-25T00:15:00Z".into()],
            ),
            (
                "within startingDeadlineSeconds",
                last_scheduled(
                    cj(every5, |s| s.starting_deadline_seconds = Some(200)),
                    "2026-11-25T00:05:00Z",
                ),
                vec![],
                "2026-11-25T00:12:30Z",
                vec![
                    "requeue 2026-11-25T00:15:00Z".into(),
                    create("2026-11-25T00:10:00Z"),
                ],
            ),
            (
                "Forbid skips while a job runs",
                last_scheduled(
                    cj(every5, |s| s.concurrency_policy = Some("Forbid".into())),
                    "2026-11-25T00:05:00Z",
                ),
                running(),
                "2026-11-25T00:10:10Z",
                vec![
                    "requeue 2026-11-25T00:15:00Z".into(),
                    "event JobAlreadyActive".into(),
                ],
            ),
            (
                "Replace deletes the running job first",
                last_scheduled(
                    cj(every5, |s| s.concurrency_policy = Some("Replace".into())),
                    "2026-11-25T00:05:00Z",
                ),
                running(),
                "2026-11-25T00:10:10Z",
                vec![
                    "requeue 2026-11-25T00:15:00Z".into(),
                    format!("delete report-{} (replaced)", m("2026-11-25T00:05:00Z")),
                    create("2026-11-25T00:10:00Z"),
                ],
            ),
            (
                "Allow runs side by side",
                last_scheduled(cj(every5, |_| {}), "2026-11-25T00:05:00Z"),
                running(),
                "2026-11-25T00:10:10Z",
                vec![
                    "requeue 2026-11-25T00:15:00Z".into(),
                    create("2026-11-25T00:10:00Z"),
                ],
            ),
            (
                "suspended",
                cj(every5, |s| s.suspend = Some(true)),
                vec![],
                "2026-11-25T00:30:00Z",
                vec![],
            ),
            (
                "a job already made for this time is not made again",
                cj(every5, |_| {}),
                vec![job("2026-11-25T00:05:00Z", Some("Complete"))],
                "2026-11-25T00:06:00Z",
                vec!["requeue 2026-11-25T00:10:00Z".into()],
            ),
            (
                "history limits, oldest first",
                last_scheduled(cj(every5, |_| {}), "2026-11-25T00:30:00Z"),
                vec![
                    job("2026-11-25T00:05:00Z", Some("Complete")),
                    job("2026-11-25T00:10:00Z", Some("Failed")),
                    job("2026-11-25T00:15:00Z", Some("Complete")),
                    job("2026-11-25T00:20:00Z", Some("Failed")),
                    job("2026-11-25T00:25:00Z", Some("Complete")),
                    job("2026-11-25T00:30:00Z", Some("Complete")),
                ],
                "2026-11-25T00:31:00Z",
                vec![
                    format!("delete report-{}", m("2026-11-25T00:05:00Z")),
                    format!("delete report-{}", m("2026-11-25T00:10:00Z")),
                    "requeue 2026-11-25T00:35:00Z".into(),
                ],
            ),
            (
                "time zone",
                cj("0 9 * * *", |s| s.time_zone = Some("Asia/Tokyo".into())),
                vec![],
                "2026-11-25T00:30:00Z",
                vec!["requeue 2026-11-26T00:00:00Z".into()],
            ),
            (
                "unparseable schedule",
                cj("*/5 * *", |_| {}),
                vec![],
                "2026-11-25T00:30:00Z",
                vec!["event UnparseableSchedule".into()],
            ),
            (
                "unknown time zone",
                cj(every5, |s| s.time_zone = Some("Mars/Olympus".into())),
                vec![],
                "2026-11-25T00:30:00Z",
                vec!["event UnknownTimeZone".into()],
            ),
            (
                "many missed: a warning and one run",
                last_scheduled(cj("* * * * *", |_| {}), "2026-11-20T00:00:00Z"),
                vec![],
                "2026-11-25T00:30:10Z",
                vec![
                    "requeue 2026-11-25T00:31:00Z".into(),
                    "event TooManyMissedTimes".into(),
                    create("2026-11-25T00:30:00Z"),
                ],
            ),
        ];
        for (what, c, jobs, now, want) in cases {
            assert_eq!(summary(&reconcile(&c, &jobs, t(now))), want, "{what}");
        }
    }

    fn status(actions: &[Action]) -> CronJobStatus {
        actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus(c) => c.status.clone(),
                _ => None,
            })
            .expect("a status write")
    }

    #[test]
    fn status_and_created_job() {
        let c = cj("*/5 * * * *", |_| {});
        let actions = reconcile(&c, &[], t("2026-11-25T00:05:30Z"));
        let st = status(&actions);
        assert_eq!(st.last_schedule_time, Some(Time(t("2026-11-25T00:05:00Z"))));
        let active = st.active.as_ref().expect("active");
        let name = format!("report-{}", minutes("2026-11-25T00:05:00Z"));
        assert_eq!(active[0].name.as_deref(), Some(name.as_str()));
        let Some(Action::CreateJob(j)) = actions.iter().find(|a| matches!(a, Action::CreateJob(_)))
        else {
            panic!("{actions:?}")
        };
        let r = &j.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("CronJob", "cj-uid", Some(true))
        );
        assert_eq!(
            j.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCHEDULED_ANNOTATION))
                .map(String::as_str),
            Some("2026-11-25T00:05:00Z")
        );
        assert_eq!(
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("report")
        );

        // The job finishes: it leaves the active list, lastSuccessfulTime is
        // set, and the event is recorded once.
        let mut c2 = c.clone();
        c2.status = Some(st);
        let done = job("2026-11-25T00:05:00Z", Some("Complete"));
        let actions = reconcile(&c2, std::slice::from_ref(&done), t("2026-11-25T00:07:00Z"));
        assert!(
            summary(&actions).contains(&"event SawCompletedJob".to_string()),
            "{actions:?}"
        );
        let st = status(&actions);
        assert_eq!(st.active, None);
        assert_eq!(
            st.last_successful_time,
            Some(Time(t("2026-11-25T00:05:30Z")))
        );
        let mut c3 = c2.clone();
        c3.status = Some(st);
        let again = reconcile(&c3, &[done], t("2026-11-25T00:08:00Z"));
        assert_eq!(
            summary(&again),
            vec!["requeue 2026-11-25T00:10:00Z".to_string()]
        );
    }
}
