//! End-to-end tests of the workload controllers (DaemonSet, ...) and their
//! ControllerRevision histories inside a
//! real weir-control with its embedded etcd. The test plays the kubelet:
//! pods bound to a node start and become Ready (or finish), and pods marked
//! for deletion are finished off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, DaemonSetSpec, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodCondition,
    PodSpec, PodStatus, PodTemplateSpec, ReplicationController, ReplicationControllerSpec, Taint,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use weir_client::{Client, DeleteParams, ListParams};

mod common;
use common::{Server, create_ready_node, eventually_within, pods};

/// How long a test waits for the controllers to get somewhere.
const PATIENCE: Duration = Duration::from_secs(60);

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn node_name(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Live (not terminating) pods as sorted "node" names.
fn nodes_of(ps: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = ps
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(node_name)
        .collect();
    v.sort();
    v
}

/// What the fake kubelet makes of a bound pod: "Running" (and Ready),
/// "Succeeded" or "Failed".
type Outcome = fn(&Pod) -> &'static str;

/// Runs the fake kubelet on namespace default until the returned handle is
/// dropped: bound pods get their outcome (Running pods are Ready).
fn kubelet(c: &Client, outcome: Outcome) -> common::Kubelet {
    common::Kubelet::start(c, "default", move |p| {
        let phase = outcome(p);
        PodStatus {
            phase: Some(phase.into()),
            pod_ip: Some("10.244.1.5".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if phase == "Running" { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    })
}

fn node(name: &str, labels: &[(&str, &str)], taint: Option<(&str, &str)>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(map(labels)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: taint.map(|(k, e)| {
                vec![Taint {
                    key: k.into(),
                    effect: e.into(),
                    value: None,
                    time_added: None,
                }]
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn daemonset(image: &str) -> DaemonSet {
    let labels = map(&[("app", "agent")]);
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
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
                spec: Some(PodSpec {
                    node_selector: Some(map(&[("role", "worker")])),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some(image.into()),
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

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn daemonset_follows_nodes_rolls_out_and_is_collected() {
    let s = Server::start().await;
    let c = &s.client;
    let worker = [("role", "worker")];
    for n in [
        node("a", &worker, None),
        node("b", &worker, None),
        node("c", &worker, Some(("dedicated", "NoSchedule"))),
        node("d", &[], None),
        // Not ready: daemon pods tolerate it.
        node(
            "e",
            &worker,
            Some(("node.kubernetes.io/not-ready", "NoExecute")),
        ),
    ] {
        c.create(&n).await.expect("create node");
    }
    let _kubelet = kubelet(c, |_| "Running");
    c.create(&daemonset("registry.local/agent:v1"))
        .await
        .expect("create daemonset");

    // One pod per eligible node: the selector excludes d, the taint excludes c.
    let ps = eventually_within(PATIENCE, "pods on a, b and e", || async {
        let ps = pods(c).await;
        (nodes_of(&ps) == ["a", "b", "e"]).then_some(ps)
    })
    .await;
    for p in &ps {
        let owner = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("DaemonSet", "agent")
        );
        let term = &p
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("node affinity")
            .node_selector_terms[0];
        let f = &term.match_fields.as_ref().expect("match fields")[0];
        assert_eq!(f.values.as_deref(), Some(&[node_name(p)][..]));
        assert!(
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("controller-revision-hash"))
        );
    }
    eventually_within(PATIENCE, "status counts", || async {
        let ds: DaemonSet = c.get("default", "agent").await.ok()?;
        let st = ds.status?;
        (st.desired_number_scheduled == 3
            && st.current_number_scheduled == 3
            && st.number_ready == 3
            && st.number_available == Some(3)
            && st.updated_number_scheduled == Some(3)
            && st.number_misscheduled == 0
            && st.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // A node joins the selection; another leaves the cluster.
    let mut d: Node = c.get("", "d").await.expect("get d");
    d.metadata.labels = Some(map(&worker));
    c.update(&d).await.expect("label d");
    c.delete::<Node>("", "b", &DeleteParams::default())
        .await
        .expect("delete node b");
    eventually_within(PATIENCE, "pods on a, d and e", || async {
        (nodes_of(&pods(c).await) == ["a", "d", "e"]).then_some(())
    })
    .await;

    // A template change rolls out node by node (maxUnavailable 1).
    eventually_within(PATIENCE, "template updated", || async {
        // The controller writes the status too: retry on Conflict, like kubectl edit.
        let mut ds: DaemonSet = c.get("default", "agent").await.ok()?;
        ds.spec.as_mut()?.template.spec.as_mut()?.containers[0].image =
            Some("registry.local/agent:v2".into());
        c.update(&ds).await.ok().map(|_| ())
    })
    .await;
    let max_gone = std::sync::atomic::AtomicUsize::new(0);
    let gone = &max_gone;
    eventually_within(PATIENCE, "every pod runs v2", || async move {
        let ps = pods(c).await;
        let live: Vec<&Pod> = ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let v1 = live.iter().filter(|p| image(p).ends_with(":v1")).count();
        // Never more than one node without its pod (maxUnavailable 1).
        gone.fetch_max(
            3usize.saturating_sub(live.len()),
            std::sync::atomic::Ordering::Relaxed,
        );
        (v1 == 0 && nodes_of(&ps) == ["a", "d", "e"]).then_some(())
    })
    .await;
    let max_gone = max_gone.into_inner();
    assert!(max_gone <= 1, "{max_gone} nodes without a pod at once");
    eventually_within(PATIENCE, "status after rollout", || async {
        let ds: DaemonSet = c.get("default", "agent").await.ok()?;
        let st = ds.status?;
        (st.updated_number_scheduled == Some(3)
            && st.number_available == Some(3)
            && st.observed_generation == Some(2))
        .then_some(())
    })
    .await;

    // Deleting the DaemonSet collects its pods.
    c.delete::<DaemonSet>("default", "agent", &DeleteParams::default())
        .await
        .expect("delete ds");
    eventually_within(PATIENCE, "pods collected", || async {
        pods(c).await.is_empty().then_some(())
    })
    .await;
}

/// A Ready node the scheduler can bind pods to.
async fn ready_node(c: &Client, name: &str) {
    create_ready_node(c, &node(name, &[], None)).await;
}

fn job(name: &str, f: impl FnOnce(&mut JobSpec)) -> Job {
    let mut spec = JobSpec {
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
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

fn job_of(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("batch.kubernetes.io/job-name"))
        .cloned()
        .unwrap_or_default()
}

fn job_condition(j: &Job, type_: &str) -> Option<(String, Option<String>)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone()))
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn jobs_complete_fail_index_expire_and_suspend() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c, "n1").await;
    // Pods of "flaky" fail; every other job's pods succeed.
    let _kubelet = kubelet(c, |p| {
        if job_of(p) == "flaky" {
            "Failed"
        } else {
            "Succeeded"
        }
    });
    let jobs = [
        job("pi", |s| {
            s.completions = Some(3);
            s.parallelism = Some(2);
        }),
        job("flaky", |s| s.backoff_limit = Some(1)),
        job("indexed", |s| {
            s.completions = Some(3);
            s.parallelism = Some(3);
            s.completion_mode = Some("Indexed".into());
        }),
        job("shortlived", |s| s.ttl_seconds_after_finished = Some(0)),
        job("held", |s| s.suspend = Some(true)),
    ];
    for j in &jobs {
        c.create(j).await.expect("create job");
    }

    let max_running = std::sync::atomic::AtomicUsize::new(0);
    let running = &max_running;
    let pi = eventually_within(PATIENCE, "pi complete", || async move {
        let live = pods(c)
            .await
            .into_iter()
            .filter(|p| job_of(p) == "pi")
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded") | Some("Failed")
                )
            })
            .count();
        running.fetch_max(live, std::sync::atomic::Ordering::Relaxed);
        let j: Job = c.get("default", "pi").await.ok()?;
        job_condition(&j, "Complete").map(|_| j)
    })
    .await;
    assert!(max_running.into_inner() <= 2, "more pods than parallelism");
    let st = pi.status.expect("status");
    assert_eq!((st.succeeded, st.failed, st.active), (Some(3), None, None));
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    let pi_pods: Vec<Pod> = pods(c)
        .await
        .into_iter()
        .filter(|p| job_of(p) == "pi")
        .collect();
    assert_eq!(pi_pods.len(), 3, "finished pods are kept");

    let flaky = eventually_within(PATIENCE, "flaky failed", || async {
        let j: Job = c.get("default", "flaky").await.ok()?;
        job_condition(&j, "Failed").map(|c| (c, j))
    })
    .await;
    assert_eq!(flaky.0.1.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(flaky.1.status.and_then(|s| s.failed), Some(2));

    let indexed = eventually_within(PATIENCE, "indexed complete", || async {
        let j: Job = c.get("default", "indexed").await.ok()?;
        job_condition(&j, "Complete").map(|_| j)
    })
    .await;
    assert_eq!(
        indexed.status.and_then(|s| s.completed_indexes).as_deref(),
        Some("0-2")
    );
    let mut indexes: Vec<String> = pods(c)
        .await
        .iter()
        .filter(|p| job_of(p) == "indexed")
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    eventually_within(
        PATIENCE,
        "shortlived deleted after its TTL, pods collected",
        || async {
            let gone = c
                .get_opt::<Job>("default", "shortlived")
                .await
                .ok()?
                .is_none();
            let left = pods(c)
                .await
                .iter()
                .filter(|p| job_of(p) == "shortlived")
                .count();
            (gone && left == 0).then_some(())
        },
    )
    .await;

    // Suspended: no pods and a Suspended condition; resumed: it runs.
    eventually_within(PATIENCE, "held suspended", || async {
        let j: Job = c.get("default", "held").await.ok()?;
        job_condition(&j, "Suspended")
    })
    .await;
    assert!(pods(c).await.iter().all(|p| job_of(p) != "held"));
    eventually_within(PATIENCE, "held resumed", || async {
        let mut j: Job = c.get("default", "held").await.ok()?;
        j.spec.as_mut()?.suspend = Some(false);
        c.update(&j).await.ok().map(|_| ())
    })
    .await;
    eventually_within(PATIENCE, "held complete", || async {
        let j: Job = c.get("default", "held").await.ok()?;
        job_condition(&j, "Complete").map(|_| ())
    })
    .await;

    // Deleting a Job collects its pods.
    c.delete::<Job>("default", "pi", &DeleteParams::default())
        .await
        .expect("delete pi");
    eventually_within(PATIENCE, "pi pods collected", || async {
        pods(c)
            .await
            .iter()
            .all(|p| job_of(p) != "pi")
            .then_some(())
    })
    .await;
}

fn cronjob(name: &str, f: impl FnOnce(&mut CronJobSpec)) -> CronJob {
    let mut spec = CronJobSpec {
        schedule: "* * * * *".into(),
        job_template: JobTemplateSpec {
            metadata: None,
            spec: job(name, |_| {}).spec,
        },
        ..Default::default()
    };
    f(&mut spec);
    CronJob {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn jobs_of(c: &Client, cronjob: &str) -> Vec<Job> {
    let mut v: Vec<Job> = c
        .list::<Job>("default", &ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.kind == "CronJob" && r.name == cronjob)
        })
        .collect();
    v.sort_by_key(|j| j.metadata.name.clone());
    v
}

/// Pretends the controller was down for ten minutes: the CronJob's last
/// run is set back, so every minute since is a missed start time.
async fn miss_ten_minutes(c: &Client, name: &str) {
    eventually_within(PATIENCE, "lastScheduleTime set back", || async {
        let mut cj: CronJob = c.get("default", name).await.ok()?;
        let back = std::time::SystemTime::now() - Duration::from_secs(600);
        let secs = back.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        let at: k8s_openapi::jiff::Timestamp =
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).ok()?).ok()?;
        cj.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
        c.update_status(&cj).await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test; waits for a minute boundary"]
async fn cronjob_catches_up_once_runs_and_keeps_history() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c, "n1").await;
    let _kubelet = kubelet(c, |_| "Succeeded");
    c.create(&cronjob("report", |s| {
        s.concurrency_policy = Some("Forbid".into());
        s.successful_jobs_history_limit = Some(1);
    }))
    .await
    .expect("create cronjob");
    c.create(&cronjob("paused", |s| s.suspend = Some(true)))
        .await
        .expect("create suspended cronjob");
    miss_ten_minutes(c, "report").await;
    miss_ten_minutes(c, "paused").await;

    // Ten missed minutes start one Job (the most recent), not ten.
    let first = eventually_within(PATIENCE, "one job for the missed runs", || async {
        let js = jobs_of(c, "report").await;
        (!js.is_empty()).then_some(js)
    })
    .await;
    assert_eq!(first.len(), 1, "no flood after downtime");
    let first = &first[0];
    let first_name = first.metadata.name.clone().unwrap_or_default();
    let scheduled = first
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
        .cloned()
        .expect("scheduled-timestamp annotation");
    let at: k8s_openapi::jiff::Timestamp = scheduled.parse().expect("RFC 3339");
    assert_eq!(first_name, format!("report-{}", at.as_second() / 60));
    assert_eq!(at.as_second() % 60, 0, "a minute boundary");

    // The Job runs to completion; the CronJob records it.
    let st = eventually_within(PATIENCE, "lastSuccessfulTime", || async {
        let cj: CronJob = c.get("default", "report").await.ok()?;
        let st = cj.status?;
        (st.last_successful_time.is_some() && st.active.is_none()).then_some(st)
    })
    .await;
    // The next minute's run may already have moved it on.
    let last = st.last_schedule_time.map(|t| t.0);
    assert!(last >= Some(at), "lastScheduleTime {last:?} before {at}");

    // At the next minute another run; with a history of 1 the first Job goes.
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let js = jobs_of(c, "report").await;
        let names: Vec<String> = js.iter().filter_map(|j| j.metadata.name.clone()).collect();
        let done = js.iter().all(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete"))
        });
        if names.len() == 1 && names[0] != first_name && done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "second run and history cleanup: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        jobs_of(c, "paused").await.is_empty(),
        "a suspended CronJob starts nothing"
    );

    // Deleting the CronJob collects its Jobs and their pods.
    c.delete::<CronJob>("default", "report", &DeleteParams::default())
        .await
        .expect("delete cronjob");
    eventually_within(PATIENCE, "jobs and pods collected", || async {
        let left = jobs_of(c, "report").await.len() + pods(c).await.len();
        (left == 0).then_some(())
    })
    .await;
}

fn statefulset(replicas: i32) -> StatefulSet {
    let labels = map(&[("app", "db")]);
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("db".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
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
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "db".into(),
                        image: Some("registry.local/db:v1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                status: None,
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Live pod names of the set, sorted by ordinal.
fn set_pods(ps: &[Pod]) -> Vec<String> {
    let mut v: Vec<(i32, String)> = ps
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let name = p.metadata.name.clone()?;
            let o = name.strip_prefix("db-")?.parse().ok()?;
            Some((o, name))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Whether the names are exactly db-0..db-n (OrderedReady never leaves a gap).
fn is_prefix(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("db-{i}"))
}

async fn set_sts(c: &Client, f: impl Fn(&mut StatefulSet)) {
    eventually_within(PATIENCE, "statefulset updated", || async {
        let mut s: StatefulSet = c.get("default", "db").await.ok()?;
        f(&mut s);
        c.update(&s).await.ok().map(|_| ())
    })
    .await;
}

fn images(ps: &[Pod]) -> Vec<String> {
    let mut live: Vec<&Pod> = ps
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by_key(|p| p.metadata.name.clone());
    live.iter().map(|p| image(p)).collect()
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn statefulset_orders_pods_keeps_claims_and_rolls_by_partition() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c, "n1").await;
    let _kubelet = kubelet(c, |_| "Running");
    c.create(&statefulset(3)).await.expect("create statefulset");

    // Pods come up one by one, in ordinal order: never a gap.
    let ps = eventually_within(PATIENCE, "db-0, db-1, db-2", || async {
        let ps = pods(c).await;
        let names = set_pods(&ps);
        assert!(is_prefix(&names), "out of order: {names:?}");
        (names.len() == 3).then_some(ps)
    })
    .await;
    let mut created: Vec<(String, Option<k8s_openapi::jiff::Timestamp>)> = ps
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    created.sort();
    assert!(
        created.windows(2).all(|w| w[0].1 <= w[1].1),
        "created in ordinal order: {created:?}"
    );
    for p in &ps {
        let name = p.metadata.name.clone().unwrap_or_default();
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let claim = spec.volumes.as_ref().expect("volumes")[0]
            .persistent_volume_claim
            .as_ref()
            .expect("claim volume")
            .claim_name
            .clone();
        assert_eq!(claim, format!("data-{name}"));
    }
    let claims = |c: &Client| {
        let c = c.clone();
        async move {
            let mut v: Vec<String> = c
                .list::<PersistentVolumeClaim>("default", &ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(claims(c).await, ["data-db-0", "data-db-1", "data-db-2"]);
    eventually_within(PATIENCE, "status", || async {
        let st = c.get::<StatefulSet>("default", "db").await.ok()?.status?;
        (st.replicas == 3
            && st.ready_replicas == Some(3)
            && st.updated_replicas == Some(3)
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision)
            .then_some(())
    })
    .await;

    // A new template with partition 2: only db-2 is replaced.
    set_sts(c, |s| {
        let spec = s.spec.as_mut().expect("spec");
        spec.update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(2),
                max_unavailable: None,
            }),
        });
        spec.template.spec.as_mut().expect("pod spec").containers[0].image =
            Some("registry.local/db:v2".into());
    })
    .await;
    eventually_within(PATIENCE, "db-2 on v2, the rest on v1", || async {
        let imgs = images(&pods(c).await);
        (imgs
            == [
                "registry.local/db:v1",
                "registry.local/db:v1",
                "registry.local/db:v2",
            ])
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        images(&pods(c).await)[..2],
        ["registry.local/db:v1", "registry.local/db:v1"],
        "the partition holds"
    );
    // Partition 0: the rest follow, highest ordinal first.
    set_sts(c, |s| {
        if let Some(u) = s.spec.as_mut().and_then(|s| s.update_strategy.as_mut()) {
            u.rolling_update = Some(RollingUpdateStatefulSetStrategy {
                partition: Some(0),
                max_unavailable: None,
            });
        }
    })
    .await;
    eventually_within(PATIENCE, "all on v2", || async {
        let imgs = images(&pods(c).await);
        (imgs.len() == 3 && imgs.iter().all(|i| i.ends_with(":v2"))).then_some(())
    })
    .await;

    // Scale down removes the highest ordinals; the claims stay.
    set_sts(c, |s| s.spec.as_mut().expect("spec").replicas = Some(1)).await;
    eventually_within(PATIENCE, "only db-0", || async {
        let names = set_pods(&pods(c).await);
        assert!(is_prefix(&names), "scale down left a gap: {names:?}");
        (names == ["db-0"]).then_some(())
    })
    .await;
    assert_eq!(claims(c).await.len(), 3, "claims are retained");

    // Deleting the set collects its pods, not its claims.
    c.delete::<StatefulSet>("default", "db", &DeleteParams::default())
        .await
        .expect("delete statefulset");
    eventually_within(PATIENCE, "pods collected", || async {
        pods(c).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(claims(c).await.len(), 3);
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn replication_controller_scales_and_is_collected() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c, "n1").await;
    let _kubelet = kubelet(c, |_| "Running");
    let labels = map(&[("app", "legacy")]);
    let rc = ReplicationController {
        metadata: ObjectMeta {
            name: Some("legacy".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ReplicationControllerSpec {
            replicas: Some(3),
            // No selector: the template's labels select, as in Kubernetes.
            selector: None,
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: Some("registry.local/web:v1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            min_ready_seconds: None,
        }),
        status: None,
    };
    c.create(&rc).await.expect("create rc");
    let live = |ps: Vec<Pod>| {
        ps.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect::<Vec<_>>()
    };
    let ps = eventually_within(PATIENCE, "three pods", || async {
        let ps = live(pods(c).await);
        (ps.len() == 3).then_some(ps)
    })
    .await;
    for p in &ps {
        let o = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str()),
            ("v1", "ReplicationController")
        );
    }
    eventually_within(PATIENCE, "status", || async {
        let st = c
            .get::<ReplicationController>("default", "legacy")
            .await
            .ok()?
            .status?;
        (st.replicas == 3 && st.ready_replicas == Some(3) && st.observed_generation == Some(1))
            .then_some(())
    })
    .await;
    eventually_within(PATIENCE, "scaled to 1", || async {
        let mut r: ReplicationController = c.get("default", "legacy").await.ok()?;
        r.spec.as_mut()?.replicas = Some(1);
        c.update(&r).await.ok().map(|_| ())
    })
    .await;
    eventually_within(PATIENCE, "one pod", || async {
        (live(pods(c).await).len() == 1).then_some(())
    })
    .await;
    c.delete::<ReplicationController>("default", "legacy", &DeleteParams::default())
        .await
        .expect("delete rc");
    eventually_within(PATIENCE, "pods collected", || async {
        pods(c).await.is_empty().then_some(())
    })
    .await;
}

/// The ControllerRevisions controlled by the owner with this uid, oldest first.
async fn revisions_of(c: &Client, uid: &str) -> Vec<ControllerRevision> {
    let mut v: Vec<ControllerRevision> = c
        .list::<ControllerRevision>("default", &ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    v.sort_by_key(|r| r.revision);
    v
}

/// The image a revision's template runs.
fn revision_image(r: &ControllerRevision) -> String {
    r.data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template/spec/containers/0/image"))
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_string()
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn daemonset_keeps_revisions_rolls_back_and_prunes() {
    let s = Server::start().await;
    let c = &s.client;
    let worker = [("role", "worker")];
    for n in ["a", "b"] {
        c.create(&node(n, &worker, None))
            .await
            .expect("create node");
    }
    let _kubelet = kubelet(c, |_| "Running");
    let ds = c
        .create(&daemonset("registry.local/agent:v1"))
        .await
        .expect("create daemonset");
    let uid = ds.metadata.uid.clone().expect("uid");
    let set_image = |image: &'static str, limit: Option<i32>| async move {
        eventually_within(PATIENCE, "daemonset updated", || async {
            let mut ds: DaemonSet = c.get("default", "agent").await.ok()?;
            let spec = ds.spec.as_mut()?;
            spec.template.spec.as_mut()?.containers[0].image = Some(image.into());
            if limit.is_some() {
                spec.revision_history_limit = limit;
            }
            c.update(&ds).await.ok().map(|_| ())
        })
        .await;
    };
    // Pods of `image` on both nodes, all labelled with the hash of the
    // revision (number `n`) holding that image, which is the only one so numbered.
    let settled = |image: &'static str, n: i64, count: usize| {
        let uid = uid.clone();
        async move {
            eventually_within(PATIENCE, &format!("{image} as revision {n}"), || async {
                let revs = revisions_of(c, &uid).await;
                let r = revs.iter().find(|r| r.revision == n)?;
                let hash = label(&r.metadata, "controller-revision-hash")?;
                let ps: Vec<Pod> = pods(c)
                    .await
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                (revs.len() == count
                    && revision_image(r) == image
                    && ps.len() == 2
                    && ps.iter().all(|p| {
                        image_of_pod(p) == image
                            && label(&p.metadata, "controller-revision-hash") == Some(hash)
                    }))
                .then_some(revs)
            })
            .await
        }
    };
    let revs = settled("registry.local/agent:v1", 1, 1).await;
    let first = revs[0].metadata.name.clone().expect("name");
    assert!(first.starts_with("agent-"), "{first}");
    let o = &revs[0].metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!((o.kind.as_str(), o.controller), ("DaemonSet", Some(true)));

    set_image("registry.local/agent:v2", None).await;
    settled("registry.local/agent:v2", 2, 2).await;
    // Back to v1: the old revision is re-used (renumbered 3), not copied.
    set_image("registry.local/agent:v1", None).await;
    let revs = settled("registry.local/agent:v1", 3, 2).await;
    assert_eq!(revs[1].metadata.name.as_deref(), Some(first.as_str()));
    // History limit 0: once no pod runs them, old revisions go.
    set_image("registry.local/agent:v3", Some(0)).await;
    settled("registry.local/agent:v3", 4, 1).await;

    // The API server guards revisions like Kubernetes does.
    let mut bad = revisions_of(c, &uid).await.remove(0);
    bad.metadata = ObjectMeta {
        name: Some("bad".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    bad.revision = -1;
    let err = c.create(&bad).await.expect_err("negative revision");
    assert!(
        err.to_string()
            .contains("revision: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    let mut r = revisions_of(c, &uid).await.remove(0);
    r.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
        serde_json::json!({"spec": {"template": {}}}),
    ));
    let err = c.update(&r).await.expect_err("data is immutable");
    assert!(err.to_string().contains("field is immutable"), "{err}");

    // An orphaning delete leaves pods and revision behind; a new DaemonSet
    // with the same template adopts both and replaces no pod.
    let live_names = || async {
        let mut v: Vec<String> = pods(c)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        v.sort();
        v
    };
    let before = live_names().await;
    let orphan = DeleteParams {
        propagation_policy: "Orphan".into(),
        ..Default::default()
    };
    c.delete::<DaemonSet>("default", "agent", &orphan)
        .await
        .expect("orphaning delete");
    eventually_within(
        PATIENCE,
        "daemonset gone, its revision orphaned",
        || async {
            let gone = c
                .get_opt::<DaemonSet>("default", "agent")
                .await
                .ok()?
                .is_none();
            (gone && revisions_of(c, &uid).await.is_empty()).then_some(())
        },
    )
    .await;
    let mut again = daemonset("registry.local/agent:v3");
    again.spec.as_mut().expect("spec").revision_history_limit = Some(0);
    let uid = c
        .create(&again)
        .await
        .expect("re-create daemonset")
        .metadata
        .uid
        .expect("uid");
    eventually_within(PATIENCE, "revision and pods adopted", || async {
        let revs = revisions_of(c, &uid).await;
        let adopted = pods(c).await.iter().all(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        });
        (revs.len() == 1 && revs[0].revision == 4 && adopted).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(live_names().await, before, "adopted pods are current");
    assert_eq!(revisions_of(c, &uid).await.len(), 1);

    // Deleting the DaemonSet collects its revisions too.
    c.delete::<DaemonSet>("default", "agent", &DeleteParams::default())
        .await
        .expect("delete ds");
    eventually_within(PATIENCE, "revisions collected", || async {
        revisions_of(c, &uid).await.is_empty().then_some(())
    })
    .await;
}

fn image_of_pod(p: &Pod) -> String {
    image(p)
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn statefulset_revisions_and_claim_retention() {
    let s = Server::start().await;
    let c = &s.client;
    ready_node(c, "n1").await;
    let _kubelet = kubelet(c, |_| "Running");
    let mut set = statefulset(3);
    set.spec
        .as_mut()
        .expect("spec")
        .persistent_volume_claim_retention_policy =
        Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some("Delete".into()),
            when_scaled: Some("Delete".into()),
        });
    // An unknown policy is refused with Kubernetes' words.
    let mut wrong = set.clone();
    wrong
        .spec
        .as_mut()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_mut())
        .expect("policy")
        .when_scaled = Some("Keep".into());
    let err = c.create(&wrong).await.expect_err("bad policy");
    assert!(
        err.to_string().contains(
            "spec.persistentVolumeClaimRetentionPolicy.whenScaled: Unsupported value: \"Keep\""
        ),
        "{err}"
    );
    let created = c.create(&set).await.expect("create statefulset");
    let uid = created.metadata.uid.clone().expect("uid");
    let claims = || async {
        let mut v: Vec<PersistentVolumeClaim> = c
            .list::<PersistentVolumeClaim>("default", &ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        v.sort_by_key(|p| p.metadata.name.clone());
        v
    };
    eventually_within(PATIENCE, "three pods", || async {
        (set_pods(&pods(c).await).len() == 3).then_some(())
    })
    .await;
    for claim in claims().await {
        let owners: Vec<(String, String)> = claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.kind.clone(), o.uid.clone()))
            .collect();
        assert_eq!(owners, [("StatefulSet".to_string(), uid.clone())]);
    }
    let revs = revisions_of(c, &uid).await;
    assert_eq!(revs.len(), 1);
    let r1 = revs[0].metadata.name.clone().expect("name");
    assert!(
        pods(c)
            .await
            .iter()
            .all(|p| label(&p.metadata, "controller-revision-hash") == Some(r1.as_str()))
    );

    // A new template: revision 2, rolled out, then current.
    set_sts(c, |s| {
        s.spec
            .as_mut()
            .expect("spec")
            .template
            .spec
            .as_mut()
            .expect("pod spec")
            .containers[0]
            .image = Some("registry.local/db:v2".into());
    })
    .await;
    let r2 = eventually_within(PATIENCE, "revision 2 current", || async {
        let revs = revisions_of(c, &uid).await;
        let r2 = revs
            .iter()
            .find(|r| r.revision == 2)?
            .metadata
            .name
            .clone()?;
        let st = c.get::<StatefulSet>("default", "db").await.ok()?.status?;
        (revs.len() == 2
            && st.update_revision.as_deref() == Some(r2.as_str())
            && st.current_revision.as_deref() == Some(r2.as_str())
            && st.updated_replicas == Some(3)
            && st.ready_replicas == Some(3))
        .then_some(r2)
    })
    .await;
    assert!(pods(c).await.iter().all(|p| {
        p.metadata.deletion_timestamp.is_some()
            || label(&p.metadata, "controller-revision-hash") == Some(r2.as_str())
    }));

    // whenScaled: Delete: the claims of removed ordinals go with their pods.
    set_sts(c, |s| s.spec.as_mut().expect("spec").replicas = Some(1)).await;
    eventually_within(PATIENCE, "claims of db-1 and db-2 collected", || async {
        let names: Vec<String> = claims()
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        (names == ["data-db-0"] && set_pods(&pods(c).await) == ["db-0"]).then_some(())
    })
    .await;

    // whenDeleted: Delete: the set's claims and revisions go with it.
    c.delete::<StatefulSet>("default", "db", &DeleteParams::default())
        .await
        .expect("delete statefulset");
    eventually_within(PATIENCE, "pods, claims and revisions collected", || async {
        (pods(c).await.is_empty()
            && claims().await.is_empty()
            && revisions_of(c, &uid).await.is_empty())
        .then_some(())
    })
    .await;
}
