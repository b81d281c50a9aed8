//! End-to-end tests of the workload controllers (DaemonSet, ...) inside a
//! real weir-control with its embedded etcd. The test plays the kubelet:
//! pods bound to a node start and become Ready (or finish), and pods marked
//! for deletion are finished off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use weir_client::{Client, DeleteParams, ListParams};

mod common;
use common::Server;

/// Polls `f` until it returns Some, or fails the test with `what` after 60 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn pods(c: &Client) -> Vec<Pod> {
    c.list::<Pod>("default", &ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
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

/// One pass of a fake kubelet: bound pods that have no phase beyond Pending
/// start Running and Ready; pods marked for deletion are finished off.
async fn kubelet_tick(c: &Client) {
    for p in pods(c).await {
        let name = p.metadata.name.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            let _ = c
                .delete::<Pod>(
                    "default",
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
            continue;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if !node_name(&p).is_empty() && matches!(phase, None | Some("Pending")) {
            let mut p = p.clone();
            p.status = Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.244.1.5".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            let _ = c.update_status(&p).await;
        }
    }
}

/// Runs the fake kubelet in the background until the returned handle is dropped.
struct Kubelet(tokio::task::JoinHandle<()>);
impl Kubelet {
    fn start(c: &Client) -> Self {
        let c = c.clone();
        Kubelet(tokio::spawn(async move {
            loop {
                kubelet_tick(&c).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }))
    }
}
impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    let _kubelet = Kubelet::start(c);
    c.create(&daemonset("registry.local/agent:v1"))
        .await
        .expect("create daemonset");

    // One pod per eligible node: the selector excludes d, the taint excludes c.
    let ps = eventually("pods on a, b and e", || async {
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
    eventually("status counts", || async {
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
    eventually("pods on a, d and e", || async {
        (nodes_of(&pods(c).await) == ["a", "d", "e"]).then_some(())
    })
    .await;

    // A template change rolls out node by node (maxUnavailable 1).
    eventually("template updated", || async {
        // The controller writes the status too: retry on Conflict, like kubectl edit.
        let mut ds: DaemonSet = c.get("default", "agent").await.ok()?;
        ds.spec.as_mut()?.template.spec.as_mut()?.containers[0].image =
            Some("registry.local/agent:v2".into());
        c.update(&ds).await.ok().map(|_| ())
    })
    .await;
    let max_gone = std::sync::atomic::AtomicUsize::new(0);
    let gone = &max_gone;
    eventually("every pod runs v2", || async move {
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
    eventually("status after rollout", || async {
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
    eventually("pods collected", || async {
        pods(c).await.is_empty().then_some(())
    })
    .await;
}
