//! End-to-end tests of pod networking across nodes (issue 5). They need the
//! `weirtest` cluster of `cargo xtask test --tier 3`, with at least 3 nodes
//! (the default); with fewer they fail saying so.
//!
//! Every test pins its pods to nodes with a `kubernetes.io/hostname`
//! nodeSelector, so "across nodes" is certain, not left to the scheduler.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use weir_e2e::netns::{PeerEcho, busybox_in};
use weir_e2e::pods::{
    delete_pod, delete_pods_labelled, fetch_until_ok, hostname_pod, labelled, run_client,
    wait_running,
};
use weir_e2e::{Check, Cluster, DeleteParams, ExternalInfo, NodeInfo, unique_suffix, wait_for};

const NS: &str = "default";

/// The cluster, checked to have at least 3 nodes.
async fn three_nodes() -> Result<Cluster> {
    let c = Cluster::connect().await?;
    ensure!(
        c.info.nodes.len() >= 3,
        "the multi-node suite needs 3 nodes, the cluster has {} (cargo xtask test --tier 3 --nodes 3)",
        c.info.nodes.len()
    );
    Ok(c)
}

fn external(c: &Cluster) -> Result<ExternalInfo> {
    c.info
        .external
        .clone()
        .context("the cluster file names no external namespace (rebuild the cluster)")
}

/// One hostname pod per node, labelled `app=<app>`: node name -> (pod name, pod IP).
async fn one_web_pod_per_node(
    c: &Cluster,
    app: &str,
) -> Result<BTreeMap<String, (String, String)>> {
    for n in &c.info.nodes {
        c.apply_ok(&hostname_pod(&format!("{app}-{}", n.name), app, &n.name))?;
    }
    let mut pods = BTreeMap::new();
    for n in &c.info.nodes {
        let name = format!("{app}-{}", n.name);
        let p = wait_running(c, NS, &name).await?;
        let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            on.as_deref() == Some(n.name.as_str()),
            "pod {name} pinned to {} runs on {on:?}",
            n.name
        );
        let ip = p
            .status
            .and_then(|s| s.pod_ip)
            .context("running pod without IP")?;
        pods.insert(n.name.clone(), (name, ip));
    }
    Ok(pods)
}

fn service(name: &str, app: &str, type_: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: {type_}
  selector: {{app: {app}}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// Waits until every node's datapath holds `want` for `frontend`.
async fn wait_for_frontend(c: &Cluster, frontend: &str, want: &[String]) -> Result<()> {
    wait_for_frontend_on(c, &c.info.nodes, frontend, want).await
}

/// Waits until the datapath of each of `nodes` holds `want` for `frontend`.
async fn wait_for_frontend_on(
    c: &Cluster,
    nodes: &[NodeInfo],
    frontend: &str,
    want: &[String],
) -> Result<()> {
    let mut want = want.to_vec();
    want.sort();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let what = format!("the datapath of {names:?} to hold {frontend} -> {want:?}");
    wait_for(&what, Duration::from_secs(60), || async {
        for node in nodes {
            let got = c.datapath_backends(node, frontend)?;
            if got.as_ref() != Some(&want) {
                return Ok(Check::Waiting(format!("{}: {got:?}", node.name)));
            }
        }
        Ok(Check::Done(()))
    })
    .await
}

async fn delete_service(c: &Cluster, name: &str) {
    let _ = c
        .client
        .delete::<Service>(NS, name, &DeleteParams::default())
        .await;
}

/// Pod to pod by IP across nodes, and a ClusterIP whose backends span every
/// node answering from every node: one hostname pod per node, then from a
/// client pod on each node, every pod IP must answer with its pod's name and
/// 30 requests to the ClusterIP must be answered by all of the pods.
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_pod_to_pod_and_clusterip_from_every_node() -> Result<()> {
    let c = three_nodes().await?;
    let app = format!("mn-web-{}", unique_suffix());
    let result = async {
        let pods = one_web_pod_per_node(&c, &app).await?;
        c.apply_ok(&service(&app, &app, "ClusterIP"))?;
        let svc: Service = c.client.get(NS, &app).await?;
        let vip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .context("Service has no clusterIP")?;
        let backends: Vec<String> = pods.values().map(|(_, ip)| format!("{ip}:8080")).collect();
        wait_for_frontend(&c, &format!("{vip}:80"), &backends).await?;
        let names: BTreeSet<String> = pods.values().map(|(n, _)| n.clone()).collect();

        let mut script = String::new();
        for (name, ip) in pods.values() {
            script.push_str(&fetch_until_ok(
                &format!("POD {name}"),
                &format!("http://{ip}:8080/"),
                30,
            ));
        }
        script.push_str(&format!(
            "for i in $(seq 30); do echo \"VIP $(timeout 5 wget -q -O - http://{vip}/ 2>/dev/null || echo FAILED)\"; done"
        ));
        let mut problems = Vec::new();
        for n in &c.info.nodes {
            let client = format!("{app}-client-{}", n.name);
            let log = run_client(&c, NS, &client, &n.name, &script).await?;
            for (name, ip) in pods.values() {
                let answer = labelled(&log, &format!("POD {name}"));
                if answer != vec![name.as_str()] {
                    problems.push(format!(
                        "from {}: pod {name} ({ip}) answered {answer:?}",
                        n.name
                    ));
                }
            }
            let vip_answers = labelled(&log, "VIP");
            let failed = vip_answers.iter().filter(|a| **a == "FAILED").count();
            let seen: BTreeSet<String> = vip_answers
                .iter()
                .filter(|a| **a != "FAILED")
                .map(|a| a.to_string())
                .collect();
            if vip_answers.len() != 30 || failed > 0 || seen != names {
                problems.push(format!(
                    "from {}: {} answers from the ClusterIP, {failed} failed, pods seen {seen:?} of {names:?}",
                    n.name,
                    vip_answers.len()
                ));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
    .await;
    delete_pods_labelled(&c, NS, &format!("app={app}")).await;
    for n in &c.info.nodes {
        delete_pod(&c, NS, &format!("{app}-client-{}", n.name)).await;
    }
    delete_service(&c, &app).await;
    result
}

/// NodePort from the external client namespace: through each node's
/// address, 30 requests must be answered by the pods on every node
/// (externalTrafficPolicy Cluster: SNAT and forwarding to other nodes).
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_nodeport_from_outside_reaches_every_node() -> Result<()> {
    let c = three_nodes().await?;
    let ext = external(&c)?;
    let app = format!("mn-np-{}", unique_suffix());
    let result = async {
        let pods = one_web_pod_per_node(&c, &app).await?;
        c.apply_ok(&service(&app, &app, "NodePort"))?;
        let svc: Service = c.client.get(NS, &app).await?;
        let node_port = svc
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.node_port))
            .context("Service has no nodePort")?;
        let backends: Vec<String> = pods.values().map(|(_, ip)| format!("{ip}:8080")).collect();
        let names: BTreeSet<String> = pods.values().map(|(n, _)| n.clone()).collect();
        let mut problems = Vec::new();
        for n in &c.info.nodes {
            // A node holds NodePort frontends for its own address only.
            let frontend = format!("{}:{node_port}", n.ip);
            wait_for_frontend_on(&c, std::slice::from_ref(n), &frontend, &backends).await?;
            let url = format!("http://{}:{node_port}/", n.ip);
            // The first answer may wait for the frontend on every node.
            wait_for(
                &format!("{url} to answer {}", ext.netns),
                Duration::from_secs(30),
                || async {
                    Ok(
                        match busybox_in(&ext.netns, &["wget", "-q", "-O", "-", &url])? {
                            Some(_) => Check::Done(()),
                            None => Check::Waiting("no answer".into()),
                        },
                    )
                },
            )
            .await?;
            let mut seen = BTreeSet::new();
            let mut failed = 0;
            for _ in 0..30 {
                match busybox_in(&ext.netns, &["wget", "-q", "-O", "-", &url])? {
                    Some(name) => {
                        seen.insert(name);
                    }
                    None => failed += 1,
                }
            }
            eprintln!("[e2e] {url} from {}: {seen:?}, {failed} failed", ext.netns);
            if failed > 0 || seen != names {
                problems.push(format!(
                    "through {} ({url}): {failed} of 30 failed, pods seen {seen:?} of {names:?}",
                    n.name
                ));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
    .await;
    delete_pods_labelled(&c, NS, &format!("app={app}")).await;
    delete_service(&c, &app).await;
    result
}

/// The address `peer` reported for the client pod on each node.
async fn peer_seen_from_each_node(
    c: &Cluster,
    prefix: &str,
    url: &str,
) -> Result<BTreeMap<String, String>> {
    let mut seen = BTreeMap::new();
    for n in &c.info.nodes {
        let client = format!("{prefix}-{}", n.name);
        let log = run_client(c, NS, &client, &n.name, &fetch_until_ok("PEER", url, 20)).await;
        delete_pod(c, NS, &client).await;
        let log = log?;
        let peer = labelled(&log, "PEER")
            .first()
            .copied()
            .unwrap_or("")
            .to_string();
        seen.insert(n.name.clone(), peer);
    }
    Ok(seen)
}

/// Pods reach the external namespace with their node's address as source
/// (masquerade): a server in the external namespace reports the peer address
/// of a client pod on each node.
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_pod_egress_leaves_with_the_node_address() -> Result<()> {
    let c = three_nodes().await?;
    let ext = external(&c)?;
    let echo = PeerEcho::start(&ext.netns, ext.ip, 18081)?;
    let url = format!("http://{}/", echo.addr);
    let seen =
        peer_seen_from_each_node(&c, &format!("mn-egress-{}", unique_suffix()), &url).await?;
    let want: BTreeMap<String, String> = c
        .info
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.to_string()))
        .collect();
    ensure!(
        seen == want,
        "the external server saw {seen:?}; every pod should appear as its node {want:?}"
    );
    Ok(())
}

/// Node to pod and pod to node (probes and host-network clients need both):
/// from every node's namespace, a pod on each node answers by IP; a server
/// on node1's address sees pods (of node1 and of the others) with their own
/// pod IPs, unmasqueraded (nodes are inside the cluster).
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_node_to_pod_and_pod_to_node() -> Result<()> {
    let c = three_nodes().await?;
    let app = format!("mn-node-{}", unique_suffix());
    let result = async {
        let pods = one_web_pod_per_node(&c, &app).await?;
        let mut problems = Vec::new();
        for n in &c.info.nodes {
            for (name, ip) in pods.values() {
                let url = format!("http://{ip}:8080/");
                let got = wait_for(
                    &format!("{url} from node {}", n.name),
                    Duration::from_secs(30),
                    || async {
                        Ok(
                            match busybox_in(&n.netns, &["wget", "-q", "-O", "-", &url])? {
                                Some(a) => Check::Done(a),
                                None => Check::Waiting("no answer".into()),
                            },
                        )
                    },
                )
                .await;
                match got {
                    Ok(a) if a == *name => {}
                    other => problems.push(format!("node {} -> pod {name}: {other:?}", n.name)),
                }
            }
        }
        let node1: &NodeInfo = &c.info.nodes[0];
        let echo = PeerEcho::start(&node1.netns, node1.ip, 18082)?;
        let url = format!("http://{}/", echo.addr);
        let seen = peer_seen_from_each_node(&c, &format!("{app}-c"), &url).await?;
        for n in &c.info.nodes {
            let got = seen.get(&n.name).map(String::as_str).unwrap_or("");
            match got.parse::<Ipv4Addr>() {
                Ok(ip) if ip != n.ip && !c.info.nodes.iter().any(|m| m.ip == ip) => {}
                _ => problems.push(format!(
                    "pod on {} -> node {} ({}): the server saw {got:?}, want the pod's own IP",
                    n.name, node1.name, node1.ip
                )),
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
    .await;
    delete_pods_labelled(&c, NS, &format!("app={app}")).await;
    result
}

/// After weir-agent on one node is killed (SIGKILL) and started again, its
/// pods keep their sandboxes and addresses, and they still reach, and are
/// reached from, pods on the other nodes; the node is Ready again and can
/// start a new pod.
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_agent_restart_keeps_pods_and_connectivity() -> Result<()> {
    let c = three_nodes().await?;
    let xtask = std::env::var_os("WEIR_XTASK")
        .context("WEIR_XTASK is not set (run through cargo xtask test --tier 3)")?;
    let app = format!("mn-rst-{}", unique_suffix());
    let victim = c.info.nodes[1].name.clone();
    let result = async {
        let before = one_web_pod_per_node(&c, &app).await?;
        let (victim_pod, victim_ip) = before[&victim].clone();
        let cri = weir_e2e::cri::Cri::connect(&c.node(&victim)?.cri_socket).await?;
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        let p: Pod = c.client.get(NS, &victim_pod).await?;
        let sandboxes_before: Vec<String> = cri
            .sandboxes_of(&uid(&p))
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();

        let status = Command::new(&xtask)
            .args(["restart-agent", "--name", &c.info.name, &victim])
            .status()
            .context("cannot run xtask restart-agent")?;
        ensure!(
            status.success(),
            "xtask restart-agent {victim} failed: {status}"
        );

        // A new pod on the restarted node proves the agent works again.
        let fresh = format!("{app}-fresh");
        c.apply_ok(&hostname_pod(&fresh, &format!("{app}-f"), &victim))?;
        let fresh_ip = wait_running(&c, NS, &fresh)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .context("no IP")?;

        let p: Pod = c.client.get(NS, &victim_pod).await?;
        let ip_after = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        ensure!(
            ip_after.as_deref() == Some(victim_ip.as_str()),
            "pod {victim_pod} changed address across the agent restart: {victim_ip} -> {ip_after:?}"
        );
        let sandboxes_after: Vec<String> = cri
            .sandboxes_of(&uid(&p))
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        ensure!(
            sandboxes_after == sandboxes_before,
            "pod {victim_pod} got new sandboxes: {sandboxes_before:?} -> {sandboxes_after:?}"
        );

        // Connectivity both ways: from a pod on another node to the victim's
        // pods, and from a pod on the victim node to the other nodes' pods.
        let other = c.info.nodes[0].name.clone();
        let mut problems = Vec::new();
        let mut script = fetch_until_ok(
            &format!("POD {victim_pod}"),
            &format!("http://{victim_ip}:8080/"),
            30,
        );
        script.push_str(&fetch_until_ok(
            &format!("POD {fresh}"),
            &format!("http://{fresh_ip}:8080/"),
            30,
        ));
        let log = run_client(&c, NS, &format!("{app}-c1"), &other, &script).await?;
        for name in [&victim_pod, &fresh] {
            if labelled(&log, &format!("POD {name}")) != vec![name.as_str()] {
                problems.push(format!(
                    "{other} -> {name} on {victim} failed after the restart"
                ));
            }
        }
        let mut script = String::new();
        for (node, (name, ip)) in &before {
            if *node != victim {
                script.push_str(&fetch_until_ok(
                    &format!("POD {name}"),
                    &format!("http://{ip}:8080/"),
                    30,
                ));
            }
        }
        let log = run_client(&c, NS, &format!("{app}-c2"), &victim, &script).await?;
        for (node, (name, _)) in &before {
            if *node != victim && labelled(&log, &format!("POD {name}")) != vec![name.as_str()] {
                problems.push(format!(
                    "{victim} -> {name} on {node} failed after the restart"
                ));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
    .await;
    delete_pods_labelled(&c, NS, &format!("app={app}")).await;
    delete_pods_labelled(&c, NS, &format!("app={app}-f")).await;
    for s in ["c1", "c2"] {
        delete_pod(&c, NS, &format!("{app}-{s}")).await;
    }
    result
}

/// The cluster routes pod traffic the way it was configured: native routes
/// via the other nodes' addresses on eth0, or (`--routing vxlan`) through
/// the `weir-vxlan` device, with pods' MTU 50 bytes below the underlay's.
#[tokio::test]
#[ignore = "e2e: needs the 3-node local cluster from cargo xtask test"]
async fn e2e_multinode_routing_mode_is_in_effect() -> Result<()> {
    let c = three_nodes().await?;
    let mode = c.info.routing.clone().unwrap_or_else(|| "native".into());
    let nodes: Vec<k8s_openapi::api::core::v1::Node> =
        c.client.list("", &Default::default()).await?.items;
    let cidr_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.spec.as_ref()?.pod_cidr.clone())
    };
    let mut problems = Vec::new();
    for n in &c.info.nodes {
        for m in c.info.nodes.iter().filter(|m| m.name != n.name) {
            let cidr = cidr_of(&m.name).context("node without podCIDR")?;
            let out = Command::new("ip")
                .args(["-n", &n.netns, "route", "show", &cidr])
                .output()?;
            let route = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let want = match mode.as_str() {
                "vxlan" => "dev weir-vxlan".to_string(),
                _ => format!("via {} dev eth0", m.ip),
            };
            if !route.contains(&want) || !route.contains("proto 87") {
                problems.push(format!(
                    "{}: route to {} ({cidr}) is {route:?}, want \"{want} ... proto 87\"",
                    n.name, m.name
                ));
            }
        }
    }
    let want_mtu = if mode == "vxlan" { "1450" } else { "1500" };
    let node = &c.info.nodes[0].name;
    let name = format!("mn-mtu-{}", unique_suffix());
    let log = run_client(
        &c,
        NS,
        &name,
        node,
        "echo \"MTU $(cat /sys/class/net/eth0/mtu)\"",
    )
    .await;
    delete_pod(&c, NS, &name).await;
    let mtu = labelled(&log?, "MTU").first().map(|s| s.to_string());
    if mtu.as_deref() != Some(want_mtu) {
        problems.push(format!(
            "pod MTU on {node} is {mtu:?}, want {want_mtu} ({mode} routing)"
        ));
    }
    ensure!(
        problems.is_empty(),
        "{mode} routing:\n{}",
        problems.join("\n")
    );
    Ok(())
}
