//! Jobs and CronJobs against a real weir-control with its embedded etcd:
//! batch validation through the API (nothing stored on failure), the pod
//! failure policy on exit codes written as a kubelet would, and
//! finalizer-based pod tracking (a pod deleted right after it finished is
//! still counted; deleting or orphaning a Job leaves no pod hanging on the
//! finalizer). The test plays the kubelet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Namespace, Node, Pod,
    PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_client::{Client, DeleteParams, Error, ListParams};

mod common;
use common::Server;

const TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// The first "odd" pod fails (exit code 3) once.
static ODD_FAILED: AtomicBool = AtomicBool::new(false);

/// How long a step may take (a loaded machine runs etcd slowly).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `f` until it returns Some, or fails the test with `what` after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_within(PATIENCE, what, f).await
}

async fn pods_of(c: &Client, job: &str) -> Vec<Pod> {
    common::pods(c)
        .await
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("batch.kubernetes.io/job-name"))
                .is_some_and(|n| n == job)
        })
        .collect()
}

fn tracked(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING)
}

async fn ready_node(c: &Client) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    common::create_ready_node(c, &node).await;
}

/// What the pretend kubelet does with a bound pod: its phase and exit code.
type Outcome = fn(&Pod) -> (&'static str, i32);

/// Runs the pretend kubelet on every namespace until the returned handle is
/// dropped: bound pending pods end with their outcome (a terminated
/// container status carrying the exit code, as weir-agent reports it).
fn kubelet(c: &Client, outcome: Outcome) -> common::Kubelet {
    common::Kubelet::start(c, "", move |p| {
        let (phase, code) = outcome(p);
        PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "work".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    })
}

fn job(name: &str, f: impl FnOnce(&mut JobSpec)) -> Job {
    let mut spec = JobSpec {
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                // Bound at creation, so no scheduler is needed.
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "work".into(),
                    image: Some("registry.local/busybox:v1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    f(&mut spec);
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn invalid_message(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn batch_validation_through_the_api() {
    let s = Server::start().await;
    let c = &s.client;
    let cron = |schedule: &str, zone: Option<&str>| CronJob {
        metadata: ObjectMeta {
            name: Some("tick".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            time_zone: zone.map(Into::into),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: job("x", |_| {}).spec,
            },
            ..Default::default()
        }),
        status: None,
    };
    let m = invalid_message(c.create(&cron("61 * * * *", None)).await);
    assert!(
        m.contains(
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
        ),
        "{m}"
    );
    let m = invalid_message(c.create(&cron("0 * * * *", Some("Mars/Olympus"))).await);
    assert!(
        m.contains(
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
        ),
        "{m}"
    );
    let m = invalid_message(c.create(&cron("TZ=UTC 0 * * * *", None)).await);
    assert!(m.contains("cannot use TZ or CRON_TZ in schedule"), "{m}");
    assert!(
        c.get_opt::<CronJob>("default", "tick")
            .await
            .expect("get")
            .is_none(),
        "nothing stored"
    );
    c.create(&cron("0 9 * * MON-FRI", Some("Europe/Berlin")))
        .await
        .expect("a valid CronJob with a real zone");

    let m = invalid_message(
        c.create(&job("always", |s| {
            s.template.spec.as_mut().unwrap().restart_policy = Some("Always".into())
        }))
        .await,
    );
    assert!(
        m.contains("spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""),
        "{m}"
    );
    // The server generates the selector; completions and the template are immutable.
    let j = c
        .create(&job("held", |s| {
            s.suspend = Some(true);
            s.completions = Some(2);
        }))
        .await
        .expect("create job");
    let spec = j.spec.as_ref().unwrap();
    let uid = j.metadata.uid.clone().unwrap();
    assert_eq!(
        spec.selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get("batch.kubernetes.io/controller-uid")),
        Some(&uid)
    );
    // (The controller writes the status meanwhile: retry on conflicts.)
    let m = eventually("an update answered", || async {
        let mut j: Job = c.get("default", "held").await.ok()?;
        j.spec.as_mut()?.completions = Some(3);
        match c.update(&j).await {
            Err(Error::Conflict(_)) => None,
            r => Some(invalid_message(r)),
        }
    })
    .await;
    assert!(
        m.contains("spec.completions: Invalid value: 3: field is immutable"),
        "{m}"
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn pod_failure_policy_fails_the_job_on_an_exit_code() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c).await;
    // "bad" pods exit 42; the first "odd" pod exits 3 (ignored), later ones 0.
    let _kubelet = kubelet(c, |p| {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        if name.starts_with("bad-") {
            ("Failed", 42)
        } else if name.starts_with("odd-") && !ODD_FAILED.swap(true, Ordering::SeqCst) {
            ("Failed", 3)
        } else {
            ("Succeeded", 0)
        }
    });
    let policy = || {
        Some(PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("work".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: "In".into(),
                        values: vec![3],
                    }),
                    on_pod_conditions: None,
                },
            ],
        })
    };
    c.create(&job("bad", |s| {
        s.backoff_limit = Some(6);
        s.pod_failure_policy = policy();
    }))
    .await
    .expect("create bad");
    let bad = eventually("bad failed", || async {
        let j: Job = c.get("default", "bad").await.ok()?;
        condition(&j, "Failed").map(|c| (c, j))
    })
    .await;
    let pod = pods_of(c, "bad").await;
    assert_eq!(pod.len(), 1, "FailJob: no retry despite backoffLimit 6");
    let pod_name = pod[0].metadata.name.clone().unwrap();
    assert_eq!(bad.0.0, "PodFailurePolicy");
    assert_eq!(
        bad.0.1,
        format!(
            "Container work for pod default/{pod_name} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert!(condition(&bad.1, "FailureTarget").is_some());
    let st = bad.1.status.unwrap();
    assert_eq!((st.failed, st.uncounted_terminated_pods), (Some(1), None));

    // Ignore: a failure with exit code 3 does not count against backoffLimit 0.
    c.create(&job("odd", |s| {
        s.backoff_limit = Some(0);
        s.pod_failure_policy = policy();
    }))
    .await
    .expect("create odd");
    let done = eventually("odd ended after an ignored failure", || async {
        let j: Job = c.get("default", "odd").await.ok()?;
        condition(&j, "Complete")
            .or(condition(&j, "Failed"))
            .map(|c| (c, j))
    })
    .await;
    assert!(
        ODD_FAILED.load(Ordering::SeqCst),
        "the first attempt failed"
    );
    assert_eq!(pods_of(c, "odd").await.len(), 2, "replaced once");
    assert_eq!(done.0.0, "CompletionsReached", "{:?}", done.0);
    assert_eq!(
        done.1.status.and_then(|s| s.failed),
        None,
        "the ignored failure is not counted"
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn finished_pods_are_counted_before_they_may_go() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c).await;
    c.create(&job("count", |s| {
        s.completions = Some(3);
        s.parallelism = Some(3);
    }))
    .await
    .expect("create job");
    // Every pod carries the finalizer. The kubelet starts only after that
    // was seen: a pod that already succeeded may be counted and released
    // (finalizer removed) before the three can be seen tracked at once.
    let created = eventually("three tracked pods", || async {
        let ps = pods_of(c, "count").await;
        (ps.len() == 3 && ps.iter().all(tracked)).then_some(ps)
    })
    .await;
    assert_eq!(created.len(), 3);
    // Delete each pod as soon as it succeeded.
    let succeeding = kubelet(c, |_| ("Succeeded", 0));
    let count = eventually("count complete, pods deleted on success", || async {
        for p in pods_of(c, "count").await {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
                && p.metadata.deletion_timestamp.is_none()
            {
                let name = p.metadata.name.clone().unwrap_or_default();
                let _ = c
                    .delete::<Pod>("default", &name, &DeleteParams::default())
                    .await;
            }
        }
        let j: Job = c.get("default", "count").await.ok()?;
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    let st = count.status.unwrap();
    assert_eq!(
        (st.succeeded, st.failed, st.uncounted_terminated_pods),
        (Some(3), None, None),
        "every deleted pod counted once"
    );
    eventually("deleted pods gone once counted", || async {
        pods_of(c, "count").await.is_empty().then_some(())
    })
    .await;

    // Deleting a Job (background) or orphaning its pods leaves none hanging.
    drop(succeeding);
    let _running = kubelet(c, |_| ("Running", 0));
    for (name, policy) in [
        ("bg", "Background"),
        ("fg", "Foreground"),
        ("orph", "Orphan"),
    ] {
        c.create(&job(name, |s| s.parallelism = Some(2)))
            .await
            .expect("create job");
        eventually("pods created", || async {
            (pods_of(c, name).await.len() == 2).then_some(())
        })
        .await;
        let params = DeleteParams {
            propagation_policy: policy.into(),
            ..Default::default()
        };
        c.delete::<Job>("default", name, &params)
            .await
            .expect("delete job");
        eventually(&format!("{policy}: job gone, no pod tracked"), || async {
            let job_gone = c.get_opt::<Job>("default", name).await.ok()?.is_none();
            let ps = pods_of(c, name).await;
            let settled = match policy {
                "Orphan" => ps.len() == 2 && !ps.iter().any(tracked),
                _ => ps.is_empty(),
            };
            (job_gone && settled).then_some(())
        })
        .await;
    }

    // Deleting a namespace with a running Job does not hang on the finalizer.
    c.create(&Namespace {
        metadata: ObjectMeta {
            name: Some("batchns".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("create namespace");
    let mut j = job("inns", |s| s.parallelism = Some(2));
    j.metadata.namespace = Some("batchns".into());
    c.create(&j).await.expect("create job in namespace");
    eventually("pods in batchns", || async {
        let ps = c
            .list::<Pod>("batchns", &ListParams::default())
            .await
            .ok()?;
        (ps.items.len() == 2).then_some(())
    })
    .await;
    c.delete::<Namespace>("", "batchns", &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("namespace gone", || async {
        c.get_opt::<Namespace>("", "batchns")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
