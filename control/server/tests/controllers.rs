//! End-to-end tests of the scheduler and the controllers inside a real
//! weir-control (embedded etcd on free loopback ports, temp dir). The test
//! plays the node agent's part: it marks the Node Ready, and gives bound
//! pods an IP and a Ready condition, then checks that Deployments,
//! ReplicaSets, EndpointSlices and garbage collection follow.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec,
    PodStatus, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_client::{Client, DeleteParams, ListParams};

mod common;
use common::{Server, create_ready_node, eventually_within, pods};

/// How long a test waits for the controllers to get somewhere.
const PATIENCE: Duration = Duration::from_secs(30);

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

fn deployment(replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "hostname".into(),
                        image: Some("127.0.0.1:5000/weir/hostname:v1".into()),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        }]),
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

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn deployment_to_ready_endpoints_and_cascading_delete() {
    let s = Server::start().await;
    let c = &s.client;

    // A node, Ready as its agent would report it.
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    create_ready_node(c, &node).await;

    c.create(&deployment(2)).await.expect("create deployment");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    c.create(&svc).await.expect("create service");

    // The controllers make a ReplicaSet and two pods; the scheduler binds them to n1.
    let bound = eventually_within(PATIENCE, "two pods bound to n1", || async {
        let ps = pods(c).await;
        let n1 = ps
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1"))
            .count();
        (ps.len() == 2 && n1 == 2).then_some(ps)
    })
    .await;
    let rs: Vec<ReplicaSet> = c
        .list("default", &ListParams::default())
        .await
        .expect("list rs")
        .items;
    assert_eq!(rs.len(), 1);
    let rs_name = rs[0].metadata.name.clone().unwrap_or_default();
    assert!(rs_name.starts_with("web-"), "{rs_name}");
    for p in &bound {
        let owner = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs_name.as_str())
        );
    }

    // Play the agent: the pods run and become Ready.
    for (i, p) in bound.iter().enumerate() {
        let mut p = p.clone();
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(format!("10.244.1.{}", 10 + i)),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        c.update_status(&p).await.expect("pod status");
    }

    eventually_within(PATIENCE, "deployment available", || async {
        let d: Deployment = c.get("default", "web").await.ok()?;
        let st = d.status?;
        (st.available_replicas == Some(2) && st.ready_replicas == Some(2)).then_some(())
    })
    .await;
    let slice = eventually_within(PATIENCE, "a slice with two ready endpoints", || async {
        let l = c
            .list::<EndpointSlice>("default", &ListParams::default())
            .await
            .ok()?;
        l.items.into_iter().find(|s| {
            s.endpoints.len() == 2
                && s.endpoints
                    .iter()
                    .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        })
    })
    .await;
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(
        slice
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port),
        Some(8080),
        "named targetPort resolved"
    );
    let mut ips: Vec<String> = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        vec!["10.244.1.10".to_string(), "10.244.1.11".to_string()]
    );

    // Deleting the Deployment removes its ReplicaSet, then its pods (gracefully:
    // the test, as the agent, finishes the deletion of pods marked for it).
    c.delete::<Deployment>("default", "web", &DeleteParams::default())
        .await
        .expect("delete deployment");
    eventually_within(PATIENCE, "replicaset collected", || async {
        let l = c
            .list::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
    eventually_within(PATIENCE, "pods collected", || async {
        let ps = pods(c).await;
        for p in ps
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            let name = p.metadata.name.clone().unwrap_or_default();
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
        }
        ps.is_empty().then_some(())
    })
    .await;
    eventually_within(PATIENCE, "slice emptied", || async {
        let l = c
            .list::<EndpointSlice>("default", &ListParams::default())
            .await
            .ok()?;
        l.items.iter().all(|s| s.endpoints.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn pods_without_a_fitting_node_are_marked_unschedulable() {
    let s = Server::start().await;
    let c = &s.client;
    c.create(&deployment(1)).await.expect("create deployment");
    let cond = eventually_within(PATIENCE, "PodScheduled=False", || async {
        let p = pods(c).await.into_iter().next()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
    })
    .await;
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert_eq!(cond.message.as_deref(), Some("0/0 nodes are available."));
}

/// One pass of a fake agent: bound pods without an IP start and become
/// Ready; pods marked for deletion are finished off.
async fn agent_tick(c: &Client, next_ip: &mut u8) {
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
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none() {
            let mut p = p.clone();
            *next_ip = next_ip.wrapping_add(1);
            p.status = Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(format!("10.244.1.{next_ip}")),
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

fn image_of(rs: &ReplicaSet) -> Option<String> {
    rs.spec
        .as_ref()?
        .template
        .as_ref()?
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn rolling_update_and_rollback() {
    let s = Server::start().await;
    let c = &s.client;
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    create_ready_node(c, &node).await;
    c.create(&deployment(3)).await.expect("create deployment");
    let mut ip = 0u8;

    // Rolls the Deployment to `image` and waits until only that template runs.
    // With 3 replicas the default maxUnavailable (25%) rounds down to 0:
    // once up, a rollout must never leave fewer than 3 ready pods.
    async fn roll_to(c: &Client, image: &str, ip: &mut u8, keep_available: bool) -> Deployment {
        loop {
            let mut d: Deployment = c.get("default", "web").await.expect("get deployment");
            if let Some(spec) = d.spec.as_mut()
                && let Some(ps) = spec.template.spec.as_mut()
            {
                ps.containers[0].image = Some(image.to_string());
            }
            match c.update(&d).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("update deployment: {e}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            agent_tick(c, ip).await;
            if keep_available {
                let ready = pods(c)
                    .await
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                assert!(
                    ready >= 3,
                    "rollout to {image} dropped to {ready} ready pods"
                );
            }
            if let Some(d) = rolled_out(c, image).await {
                return d;
            }
            assert!(Instant::now() < deadline, "timed out rolling out {image}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Deployment, once all 3 replicas run `image` and nothing else runs.
    async fn rolled_out(c: &Client, image: &str) -> Option<Deployment> {
        let d: Deployment = c.get("default", "web").await.ok()?;
        let st = d.status.clone()?;
        let rss: Vec<ReplicaSet> = c.list("default", &ListParams::default()).await.ok()?.items;
        let old_running: i32 = rss
            .iter()
            .filter(|rs| image_of(rs).as_deref() != Some(image))
            .map(|rs| {
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
                    + rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
            })
            .sum();
        let done = st.updated_replicas == Some(3)
            && st.available_replicas == Some(3)
            && st.replicas == Some(3)
            && old_running == 0
            && pods(c).await.len() == 3;
        done.then_some(d)
    }

    let d = roll_to(c, "127.0.0.1:5000/weir/hostname:v1", &mut ip, false).await;
    let rev = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .cloned()
    };
    assert_eq!(rev(&d).as_deref(), Some("1"));
    let d = roll_to(c, "127.0.0.1:5000/weir/hostname:v2", &mut ip, true).await;
    assert_eq!(rev(&d).as_deref(), Some("2"));
    let rss: Vec<ReplicaSet> = c
        .list("default", &ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(
        rss.len(),
        2,
        "the old ReplicaSet is kept, scaled to zero, for rollback"
    );
    // Rollback: the v1 ReplicaSet is reused and gets revision 3.
    let d = roll_to(c, "127.0.0.1:5000/weir/hostname:v1", &mut ip, true).await;
    assert_eq!(rev(&d).as_deref(), Some("3"));
    let rss: Vec<ReplicaSet> = c
        .list("default", &ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(rss.len(), 2, "rollback reuses the old ReplicaSet");
    let v1 = rss
        .iter()
        .find(|rs| image_of(rs).as_deref() == Some("127.0.0.1:5000/weir/hostname:v1"))
        .expect("v1 rs");
    assert_eq!(
        v1.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .map(String::as_str),
        Some("3")
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn silent_node_becomes_unknown_and_its_pods_not_ready() {
    let s = Server::start().await;
    let c = &s.client;
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let node = c.create(&node).await.expect("create node");
    let heartbeat = |secs_ago: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let t =
            k8s_openapi::jiff::Timestamp::from_second(i64::try_from(now).expect("time") - secs_ago)
                .expect("time");
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)
    };
    let set_ready = |mut n: Node, secs_ago: i64| {
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_heartbeat_time: Some(heartbeat(secs_ago)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    };
    let node = c
        .update_status(&set_ready(node, 0))
        .await
        .expect("node ready");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("lone".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("x".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    c.create(&pod).await.expect("create pod");
    let bound = eventually_within(PATIENCE, "pod bound", || async {
        let p: Pod = c.get("default", "lone").await.ok()?;
        p.spec.as_ref()?.node_name.is_some().then_some(p)
    })
    .await;
    let mut p = bound.clone();
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.244.1.50".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    c.update_status(&p).await.expect("pod ready");

    // The agent "dies": its last heartbeat is a minute old.
    c.update_status(&set_ready(node, 60))
        .await
        .expect("stale heartbeat");
    eventually_within(PATIENCE, "node Ready=Unknown", || async {
        let n: Node = c.get("", "n1").await.ok()?;
        let cond = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.status == "Unknown").then_some(())
    })
    .await;
    eventually_within(PATIENCE, "pod Ready=False", || async {
        let p: Pod = c.get("default", "lone").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (cond.status == "False").then_some(())
    })
    .await;
}
