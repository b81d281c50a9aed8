//! End-to-end tests of the API server: a real weir-control with its embedded
//! etcd on free loopback ports in a temp dir, driven through weir_client.
//! etcd needs no root, but the test needs /usr/bin/etcd, so it is in the
//! tier `cargo xtask test` runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_client::{Client, DeleteParams, Error, ListParams, WatchEvent, WatchParams};

mod common;
use common::{Etcd, Proc, Replica, Server};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, labels),
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: meta(name, &[("app", "web")]),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("img:v1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rv_of(m: &ObjectMeta) -> String {
    m.resource_version.clone().expect("resourceVersion")
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn crud_conflicts_selectors_and_status() {
    let s = Server::start().await;
    let c = &s.client;

    let created = c
        .create(&config_map("a", &[("app", "web")]))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert!(matches!(
        c.create(&config_map("a", &[])).await,
        Err(Error::AlreadyExists(_))
    ));
    c.create(&config_map("b", &[("app", "db")]))
        .await
        .expect("create b");

    let got: ConfigMap = c.get("default", "a").await.expect("get");
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );
    assert!(matches!(
        c.get::<ConfigMap>("default", "zzz").await,
        Err(Error::NotFound(_))
    ));

    // Label selector and limit/continue.
    let web = c
        .list::<ConfigMap>("default", &ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 1);
    let page1 = c
        .list::<ConfigMap>(
            "",
            &ListParams {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
    assert_eq!(page1.items.len(), 1);
    assert!(!page1.continue_token.is_empty());
    let page2 = c
        .list::<ConfigMap>(
            "",
            &ListParams {
                limit: 1,
                continue_token: page1.continue_token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page 2");
    assert_eq!(page2.items.len(), 1);
    assert_ne!(page1.items[0].metadata.name, page2.items[0].metadata.name);

    // Optimistic concurrency.
    let mut first = got.clone();
    first.data = Some(BTreeMap::from([("k".to_string(), "v2".to_string())]));
    let updated = c.update(&first).await.expect("update");
    assert_ne!(
        updated.metadata.resource_version,
        got.metadata.resource_version
    );
    assert_eq!(updated.metadata.generation, Some(2));
    let stale = c.update(&got).await;
    assert!(
        matches!(stale, Err(Error::Conflict(ref m)) if m.contains("the object has been modified")),
        "{stale:?}"
    );
    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    assert!(
        matches!(c.update(&no_rv).await, Err(Error::Invalid(m)) if m.contains("must be specified for an update"))
    );

    // Status is separate from spec.
    let p = c.create(&pod("p1")).await.expect("create pod");
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Always"),
        "defaulted"
    );
    // The scheduler in the same process may write the pod's status too: retry on conflict.
    let p = loop {
        let mut p: Pod = c.get("default", "p1").await.unwrap();
        p.status.get_or_insert_with(Default::default).phase = Some("Running".into());
        p.spec.as_mut().expect("spec").active_deadline_seconds = Some(99);
        match c.update_status(&p).await {
            Err(e) if e.is_conflict() => continue,
            other => break other.expect("update status"),
        }
    };
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        None,
        "spec ignored by update_status"
    );
    let mut p2 = p.clone();
    p2.status.get_or_insert_with(Default::default).phase = Some("Failed".into());
    p2.metadata.labels = Some(BTreeMap::from([("app".to_string(), "other".to_string())]));
    let p2 = c.update(&p2).await.expect("update");
    assert_eq!(
        p2.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running"),
        "status ignored by update"
    );
    let running = c
        .list::<Pod>(
            "",
            &ListParams::default().fields("status.phase=Running,metadata.name=p1"),
        )
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1);
    assert!(matches!(
        c.list::<Pod>("", &ListParams::default().fields("spec.bogus=x")).await,
        Err(Error::Invalid(m)) if m.contains("field label not supported")
    ));

    // Delete with a stale precondition, then for real.
    let del = DeleteParams {
        resource_version: got.metadata.resource_version.clone().unwrap(),
        ..Default::default()
    };
    assert!(matches!(
        c.delete::<ConfigMap>("default", "a", &del).await,
        Err(Error::Conflict(_))
    ));
    let last = c
        .delete::<ConfigMap>("default", "a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(last.data, first.data);
    assert!(matches!(
        c.get::<ConfigMap>("default", "a").await,
        Err(Error::NotFound(_))
    ));

    // Writes into a namespace that does not exist.
    let mut elsewhere = config_map("x", &[]);
    elsewhere.metadata.namespace = Some("nope".into());
    assert!(
        matches!(c.create(&elsewhere).await, Err(Error::NotFound(m)) if m == "namespaces \"nope\" not found")
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn validation_and_allocation() {
    let s = Server::start().await;
    let c = &s.client;

    let mut bad = pod("Bad_Name");
    bad.spec.as_mut().unwrap().containers.push(Container {
        name: "c".into(),
        ..Default::default()
    });
    let Err(Error::Invalid(msg)) = c.create(&bad).await else {
        panic!("expected Invalid")
    };
    assert!(
        msg.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{msg}"
    );
    assert!(
        msg.contains("\nspec.containers[1].name: Duplicate value: \"c\""),
        "{msg}"
    );
    assert!(
        msg.contains("\nspec.containers[1].image: Required value"),
        "{msg}"
    );
    assert!(
        c.get_opt::<Pod>("default", "Bad_Name")
            .await
            .unwrap()
            .is_none(),
        "nothing stored"
    );

    let svc = |name: &str, ip: Option<&str>, ty: &str| Service {
        metadata: meta(name, &[]),
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: ip.map(Into::into),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = c.create(&svc("a", None, "ClusterIP")).await.expect("svc a");
    assert_eq!(
        a.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.2")
    );
    let b = c
        .create(&svc("b", Some("10.96.0.50"), "NodePort"))
        .await
        .expect("svc b");
    let bspec = b.spec.as_ref().unwrap();
    assert_eq!(bspec.cluster_ips, Some(vec!["10.96.0.50".to_string()]));
    let np = bspec.ports.as_ref().unwrap()[0]
        .node_port
        .expect("node port");
    assert!((30000..=32767).contains(&np));
    let Err(Error::Invalid(msg)) = c.create(&svc("c", Some("10.96.0.50"), "ClusterIP")).await
    else {
        panic!()
    };
    assert!(
        msg.ends_with("spec.clusterIPs: Invalid value: [\"10.96.0.50\"]: failed to allocate IP 10.96.0.50: provided IP is already allocated"),
        "{msg}"
    );
    let headless = c
        .create(&svc("h", Some("None"), "ClusterIP"))
        .await
        .expect("headless");
    assert_eq!(
        headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    // Update without clusterIP keeps it; delete releases it.
    let mut a2 = a.clone();
    a2.spec.as_mut().unwrap().cluster_ip = None;
    a2.spec.as_mut().unwrap().cluster_ips = None;
    let a2 = c.update(&a2).await.expect("update svc");
    assert_eq!(
        a2.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.2")
    );
    // NodePort -> ClusterIP drops and releases the node port.
    let mut b2 = b.clone();
    b2.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    let b2 = c.update(&b2).await.expect("type change");
    assert_eq!(
        b2.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        None
    );
    let mut d = svc("d", None, "NodePort");
    d.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(np);
    let d = c
        .create(&d)
        .await
        .expect("released node port is free again");
    assert_eq!(d.spec.unwrap().ports.unwrap()[0].node_port, Some(np));
    c.delete::<Service>("default", "b", &DeleteParams::default())
        .await
        .expect("delete b");
    c.create(&svc("c", Some("10.96.0.50"), "ClusterIP"))
        .await
        .expect("IP free again");

    // Concurrent creates never share an address: the allocation key is
    // written in the same transaction as the Service.
    let creates = (0..16).map(|i| {
        let c = c.clone();
        let s = svc(&format!("many-{i}"), None, "NodePort");
        tokio::spawn(async move { c.create(&s).await })
    });
    let mut ips = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for h in creates {
        let s = h.await.expect("task").expect("concurrent create");
        let spec = s.spec.expect("spec");
        assert!(
            ips.insert(spec.cluster_ip.expect("ip")),
            "duplicate cluster IP"
        );
        let np = spec.ports.expect("ports")[0].node_port.expect("node port");
        assert!(ports.insert(np), "duplicate node port");
    }

    let node = |name: &str| Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let n1 = c.create(&node("node1")).await.expect("node1");
    let n2 = c.create(&node("node2")).await.expect("node2");
    assert_eq!(
        n1.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.1.0/24")
    );
    assert_eq!(
        n2.spec.as_ref().and_then(|s| s.pod_cidrs.clone()),
        Some(vec!["10.244.2.0/24".to_string()])
    );
}

fn lb_ip(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn load_balancer_ips_from_the_pool() {
    // A pool of two addresses, to see exhaustion.
    let s = Server::start_with(&["--lb-pool", "172.30.0.200/31"]).await;
    let c = &s.client;
    let lb = |name: &str, ty: &str, ip: Option<&str>| Service {
        metadata: meta(name, &[]),
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            load_balancer_ip: ip.map(Into::into),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = c.create(&lb("a", "LoadBalancer", None)).await.expect("a");
    assert_eq!(lb_ip(&a).as_deref(), Some("172.30.0.200"));
    assert!(
        a.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
            .node_port
            .is_some()
    );
    let stored = c.get::<Service>("default", "a").await.expect("get a");
    assert_eq!(
        lb_ip(&stored).as_deref(),
        Some("172.30.0.200"),
        "stored, not only returned"
    );

    let Err(Error::Invalid(msg)) = c
        .create(&lb("x", "LoadBalancer", Some("172.30.0.200")))
        .await
    else {
        panic!("expected Invalid for an address in use")
    };
    assert!(
        msg.contains("spec.loadBalancerIP: Invalid value: \"172.30.0.200\""),
        "{msg}"
    );
    let Err(Error::Invalid(msg)) = c.create(&lb("x", "LoadBalancer", Some("10.1.2.3"))).await
    else {
        panic!("expected Invalid outside the pool")
    };
    assert!(
        msg.contains("not in the LoadBalancer pool 172.30.0.200/31"),
        "{msg}"
    );

    let b = c.create(&lb("b", "LoadBalancer", None)).await.expect("b");
    assert_eq!(lb_ip(&b).as_deref(), Some("172.30.0.201"));
    // Pool exhausted: created, but pending (no ingress), like Kubernetes.
    let p = c
        .create(&lb("p", "LoadBalancer", None))
        .await
        .expect("pending");
    assert_eq!(lb_ip(&p), None);

    // A status writer cannot take the address away or forge another.
    let mut forged = c.get::<Service>("default", "b").await.expect("get b");
    forged.status.as_mut().unwrap().load_balancer = None;
    let forged = c.update_status(&forged).await.expect("status write");
    assert_eq!(lb_ip(&forged).as_deref(), Some("172.30.0.201"));

    // LoadBalancer -> ClusterIP releases the address (and the node port).
    let mut a2 = c.get::<Service>("default", "a").await.expect("get a");
    a2.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    let a2 = c.update(&a2).await.expect("type change");
    assert_eq!(lb_ip(&a2), None);
    // The pending Service gets it on its next write.
    let p2 = c
        .update(&c.get::<Service>("default", "p").await.expect("get p"))
        .await
        .expect("update p");
    assert_eq!(lb_ip(&p2).as_deref(), Some("172.30.0.200"));
    // Delete releases too.
    c.delete::<Service>("default", "b", &DeleteParams::default())
        .await
        .expect("delete b");
    let d = c
        .create(&lb("d", "LoadBalancer", Some("172.30.0.201")))
        .await
        .expect("released address requested again");
    assert_eq!(lb_ip(&d).as_deref(), Some("172.30.0.201"));
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn events_aggregate_and_expire() {
    use k8s_openapi::api::core::v1::Event;
    use weir_client::events::{Recorder, reference};

    let s = Server::start_with(&["--event-ttl-seconds", "3"]).await;
    let c = &s.client;
    let p = c.create(&pod("ev-pod")).await.expect("pod");
    // Not "default-scheduler": the real scheduler records its own events about this pod.
    let recorder = Recorder::new(c.clone(), "api-test", None);
    let first = recorder
        .warning(
            &reference(&p),
            "FailedScheduling",
            "0/0 nodes are available",
        )
        .await
        .expect("record");
    assert_eq!(first.count, Some(1));
    let again = recorder
        .warning(
            &reference(&p),
            "FailedScheduling",
            "0/0 nodes are available",
        )
        .await
        .expect("record again");
    assert_eq!(again.metadata.name, first.metadata.name, "aggregated");
    assert_eq!(again.count, Some(2));
    let other = recorder
        .normal(&reference(&p), "Scheduled", "assigned")
        .await
        .expect("other event");
    assert_ne!(other.metadata.name, first.metadata.name);
    // What `describe` asks for.
    let all: Vec<Event> = c
        .list::<Event>(
            "default",
            &ListParams::default().fields("involvedObject.kind=Pod,involvedObject.name=ev-pod"),
        )
        .await
        .expect("list events of the pod")
        .items
        .into_iter()
        .filter(|e| e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("api-test"))
        .collect();
    assert_eq!(all.len(), 2);

    // etcd deletes them when their lease (TTL 3 s + reuse window) runs out.
    let name = first.metadata.name.clone().expect("name");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c
        .get_opt::<Event>("default", &name)
        .await
        .expect("get")
        .is_some()
    {
        assert!(Instant::now() < deadline, "event {name} did not expire");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        c.get_opt::<Pod>("default", "ev-pod")
            .await
            .expect("get pod")
            .is_some(),
        "only events expire"
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn lists_larger_than_one_grpc_message() {
    // 8 x 900 kB: more than tonic's 4 MiB default message from etcd.
    let s = Server::start().await;
    let c = &s.client;
    for i in 0..8 {
        let mut cm = config_map(&format!("big-{i}"), &[("size", "big")]);
        cm.data = Some(BTreeMap::from([("blob".to_string(), "x".repeat(900_000))]));
        c.create(&cm).await.expect("create big configmap");
    }
    let all = c
        .list::<ConfigMap>("default", &ListParams::default().labels("size=big"))
        .await
        .expect("list over 4 MiB");
    assert_eq!(all.items.len(), 8);
}

/// A weir-control replica against `etcd`, with a fast election.
async fn start_replica(dir: &std::path::Path, etcd: &str) -> (Proc, Client) {
    let flags = [
        "--leader-elect-lease-duration-seconds",
        "4",
        "--leader-elect-renew-deadline-seconds",
        "3",
        "--leader-elect-retry-period-seconds",
        "1",
    ];
    Replica::new(dir, etcd, &flags).start().await
}

async fn lease_holder(c: &Client) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    c.get_opt::<Lease>("kube-system", "weir-control")
        .await
        .expect("read lease")?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Waits until `cond` holds for the lease holder, failing after `secs`.
async fn wait_holder(
    c: &Client,
    secs: u64,
    what: &str,
    cond: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = lease_holder(c).await;
        if cond(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what}: holder is {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ReplicaSet of one; the controllers (on the leader) create its pod.
async fn replica_set_gets_a_pod(c: &Client, name: &str) {
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let labels = BTreeMap::from([("rs".to_string(), name.to_string())]);
    let rs = ReplicaSet {
        metadata: meta(name, &[]),
        spec: Some(ReplicaSetSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: pod(name).spec,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.create(&rs).await.expect("create replicaset");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = c
            .list::<Pod>(
                "default",
                &ListParams::default().labels(format!("rs={name}")),
            )
            .await
            .expect("list pods");
        if pods.items.len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no pod for ReplicaSet {name}: the leader's controllers do not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let etcd_url = etcd.url.clone();
    let (a, ca) = start_replica(&dir.path().join("a"), &etcd_url).await;
    let leader_a = wait_holder(&ca, 30, "first replica leads", Option::is_some).await;
    let (b, cb) = start_replica(&dir.path().join("b"), &etcd_url).await;

    // Both serve the API; one leads; writes through either are seen by both.
    c_roundtrip(&ca, &cb).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lease_holder(&cb).await,
        leader_a,
        "the second replica does not take a live lease"
    );
    replica_set_gets_a_pod(&cb, "before").await;

    // The leader dies without releasing: the follower takes over after the lease duration.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    let leader_b = wait_holder(&cb, 20, "failover after a crash", |h| {
        h.is_some() && *h != leader_a
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "took over a live lease after {took:?}"
    );
    replica_set_gets_a_pod(&cb, "after-crash").await;
    drop(a);

    // A new replica follows; when the leader stops cleanly it releases the lease at once.
    let (_c, cc) = start_replica(&dir.path().join("c"), &etcd_url).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease_holder(&cc).await, leader_b, "the new replica follows");
    drop(b);
    wait_holder(&cc, 4, "takeover after a clean stop", |h| {
        h.is_some() && *h != leader_b
    })
    .await;
    replica_set_gets_a_pod(&cc, "after-stop").await;
}

async fn c_roundtrip(a: &Client, b: &Client) {
    b.create(&config_map("from-b", &[]))
        .await
        .expect("create through b");
    a.get::<ConfigMap>("default", "from-b")
        .await
        .expect("read through a");
}

/// The next watch item, failing the test after 10 s.
async fn next(
    w: &mut weir_client::WatchStream<ConfigMap>,
) -> weir_client::Result<(WatchEvent<ConfigMap>, String)> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("event in time")
        .expect("stream open")
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn watch_replay_resume_selectors_and_expiry() {
    let s = Server::start().await;
    let c = &s.client;
    c.create(&config_map("w1", &[("app", "web")]))
        .await
        .unwrap();

    // Replay then changes, with a selector.
    let mut w = c
        .watch::<ConfigMap>("default", &WatchParams::default().labels("app=web"))
        .await
        .unwrap();
    let (ev, _) = next(&mut w).await.unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("w1")));
    c.create(&config_map("w2", &[("app", "db")])).await.unwrap();
    let mut w1 = c.get::<ConfigMap>("default", "w1").await.unwrap();
    w1.metadata.labels = Some(BTreeMap::from([("app".to_string(), "db".to_string())]));
    let w1 = c.update(&w1).await.unwrap();
    let (ev, rv) = next(&mut w).await.unwrap();
    let WatchEvent::Deleted(gone) = ev else {
        panic!("relabel out of the selector is DELETED, got {ev:?}")
    };
    assert_eq!(
        gone.metadata.labels.unwrap()["app"],
        "web",
        "previous state"
    );
    assert_eq!(rv, rv_of(&w1.metadata));
    let mut w2 = c.get::<ConfigMap>("default", "w2").await.unwrap();
    w2.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
    c.update(&w2).await.unwrap();
    let (ev, _) = next(&mut w).await.unwrap();
    assert!(
        matches!(ev, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("w2")),
        "{ev:?}"
    );
    drop(w);

    // Resume from a revision: exactly the changes after it.
    let mut w = c
        .watch::<ConfigMap>(
            "default",
            &WatchParams::default().from_version(rv_of(&w1.metadata)),
        )
        .await
        .unwrap();
    let (ev, _) = next(&mut w).await.unwrap();
    assert!(
        matches!(ev, WatchEvent::Modified(ref o) if o.metadata.name.as_deref() == Some("w2")),
        "{ev:?}"
    );
    // Changes in another namespace do not reach a namespaced watch (the
    // watch cache feeds all namespaces of a kind).
    let other = Namespace {
        metadata: ObjectMeta {
            name: Some("other".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    c.create(&other).await.unwrap();
    let mut elsewhere = config_map("x", &[("app", "web")]);
    elsewhere.metadata.namespace = Some("other".into());
    c.create(&elsewhere).await.unwrap();
    c.delete::<ConfigMap>("default", "w2", &DeleteParams::default())
        .await
        .unwrap();
    let (ev, _) = next(&mut w).await.unwrap();
    assert!(
        matches!(ev, WatchEvent::Deleted(ref o) if o.data.is_some()),
        "deleted carries last state: {ev:?}"
    );
    drop(w);

    // Compaction makes old revisions expire.
    let mut etcd = etcd_client::Client::connect([s.etcd_url.as_str()], None)
        .await
        .unwrap();
    let head = etcd
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(head, None).await.unwrap();
    let mut w = c
        .watch::<ConfigMap>("default", &WatchParams::default().from_version("2"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("answer in time");
    assert!(
        matches!(got, Some(Err(Error::Expired(ref m))) if m.contains("too old resource version")),
        "{got:?}"
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd; run by cargo xtask test"]
async fn bind_graceful_delete_and_namespaces() {
    let s = Server::start().await;
    let c = &s.client;

    c.create(&pod("p")).await.unwrap();
    c.bind("default", "p", "node1").await.expect("bind");
    c.bind("default", "p", "node1")
        .await
        .expect("bind again to the same node is fine");
    assert!(matches!(
        c.bind("default", "p", "node2").await,
        Err(Error::Conflict(_))
    ));
    let bound: Pod = c.get("default", "p").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node1")
    );

    // Bound pod: marked, stays until deleted with grace 0 (the agent's job).
    let marked = c
        .delete::<Pod>("default", "p", &DeleteParams::default())
        .await
        .unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    assert!(c.get_opt::<Pod>("default", "p").await.unwrap().is_some());
    let zero = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    c.delete::<Pod>("default", "p", &zero).await.unwrap();
    assert!(c.get_opt::<Pod>("default", "p").await.unwrap().is_none());

    // Unbound pod: gone at once.
    c.create(&pod("q")).await.unwrap();
    c.delete::<Pod>("default", "q", &DeleteParams::default())
        .await
        .unwrap();
    assert!(c.get_opt::<Pod>("default", "q").await.unwrap().is_none());

    // Finalizers hold an object until an update removes them.
    let mut f = config_map("f", &[]);
    f.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    c.create(&f).await.unwrap();
    let held = c
        .delete::<ConfigMap>("default", "f", &DeleteParams::default())
        .await
        .unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let mut release = c.get::<ConfigMap>("default", "f").await.unwrap();
    release.metadata.finalizers = None;
    c.update(&release).await.unwrap();
    assert!(
        c.get_opt::<ConfigMap>("default", "f")
            .await
            .unwrap()
            .is_none()
    );

    // Orphan propagation: the server adds the `orphan` finalizer for the garbage
    // collector and keeps the object until the finalizer is gone.
    c.create(&config_map("o", &[])).await.unwrap();
    let orphan = DeleteParams {
        propagation_policy: "Orphan".into(),
        ..Default::default()
    };
    let kept = c
        .delete::<ConfigMap>("default", "o", &orphan)
        .await
        .unwrap();
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert_eq!(kept.metadata.finalizers, Some(vec!["orphan".to_string()]));
    loop {
        // The in-process garbage collector may finish it first.
        let Some(mut o) = c.get_opt::<ConfigMap>("default", "o").await.unwrap() else {
            break;
        };
        o.metadata.finalizers = None;
        match c.update(&o).await {
            Ok(_) | Err(Error::NotFound(_) | Error::Conflict(_)) => {}
            Err(e) => panic!("removing the finalizer: {e}"),
        }
    }
    let bad = DeleteParams {
        propagation_policy: "Sideways".into(),
        ..Default::default()
    };
    assert!(matches!(
        c.delete::<Pod>("default", "x", &bad).await,
        Err(Error::Invalid(_))
    ));

    // Namespace deletion removes its content, then itself.
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("team".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    c.create(&ns).await.unwrap();
    let mut cm = config_map("in-team", &[]);
    cm.metadata.namespace = Some("team".into());
    c.create(&cm).await.unwrap();
    let terminating = c
        .delete::<Namespace>("", "team", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.get_opt::<Namespace>("", "team").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "namespace not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        c.get_opt::<ConfigMap>("team", "in-team")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        c.delete::<Namespace>("", "default", &DeleteParams::default())
            .await,
        Err(Error::Server { .. })
    ));
}
