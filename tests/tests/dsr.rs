//! End-to-end test of direct server return (DSR, issue 3): a NodePort
//! Service annotated `service.weir.io/forwarding-mode: dsr` whose only
//! backend runs on another node than the one the external client connects
//! to. Over TCP and UDP the backend must see the client's own address, and
//! the reply must not pass the load-balancing node: its conntrack holds no
//! SNAT entry for the backend, the backend's node holds the DSR entry.
//!
//! Needs the `weirtest` cluster of `cargo xtask test --tier 3` (2 nodes at
//! least). On a VXLAN cluster (`--routing vxlan`) DSR cannot work and the
//! annotation is ignored: the test then checks the SNAT fallback and the
//! agents' Warning Event on the Service instead.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use weir_e2e::pods::{delete_pod, wait_running};
use weir_e2e::{Check, Cluster, DeleteParams, ListParams, NodeInfo, unique_suffix, wait_for};

const NS: &str = "default";
const IMAGE: &str = "127.0.0.1:5000/weir/netpol:v1";

/// The host-side `netprobe` that `cargo xtask images` builds.
fn host_netprobe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/xtask/images/netprobe")
}

/// `weir-datapath --bpffs-dir <node's> <view>`: what the node's kernel holds.
fn datapath_view(node: &NodeInfo, view: &str) -> Result<String> {
    let weir = std::env::var_os("WEIR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/weir"));
    let tool = weir.with_file_name("weir-datapath");
    let out = Command::new(&tool)
        .arg("--bpffs-dir")
        .arg(&node.bpffs_dir)
        .arg(view)
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    ensure!(
        out.status.success(),
        "{} {view} failed on {}: {}",
        tool.display(),
        node.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `netprobe probe` in the external namespace: the answer of each spec
/// (`tcp:IP:PORT`, `udp:IP:PORT`), `None` for a failed probe.
fn probe_from(netns: &str, specs: &[String]) -> Result<Vec<Option<String>>> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(host_netprobe())
        .args(["probe", "-t", "2000"])
        .args(specs)
        .output()
        .context("cannot run nsenter netprobe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Option<String>> = text
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (_, verdict, rest) = (parts.next(), parts.next(), parts.next());
            (verdict == Some("ok")).then(|| rest.unwrap_or_default().trim().to_owned())
        })
        .collect();
    ensure!(
        answers.len() == specs.len(),
        "netprobe answered {text:?} to {specs:?}"
    );
    Ok(answers)
}

fn manifests(app: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {app}
  labels: {{app: {app}}}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: serve
    image: {IMAGE}
    command: ["/netprobe", "serve", "@peer", "8080"]
---
apiVersion: v1
kind: Service
metadata:
  name: {app}
  annotations: {{service.weir.io/forwarding-mode: dsr}}
spec:
  type: NodePort
  selector: {{app: {app}}}
  ports:
  - {{name: tcp, protocol: TCP, port: 80, targetPort: 8080}}
  - {{name: udp, protocol: UDP, port: 80, targetPort: 8080}}
"#
    )
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test (2+ nodes)"]
async fn e2e_dsr_nodeport_replies_straight_to_the_client() -> Result<()> {
    let c = Cluster::connect().await?;
    ensure!(
        c.info.nodes.len() >= 2,
        "the DSR test needs 2 nodes, the cluster has {}",
        c.info.nodes.len()
    );
    let ext = c
        .info
        .external
        .clone()
        .context("the cluster file names no external namespace")?;
    ensure!(
        host_netprobe().is_file(),
        "{} missing (cargo xtask images builds it)",
        host_netprobe().display()
    );
    let native = c.info.routing.as_deref() != Some("vxlan");
    if !native {
        eprintln!(
            "[e2e] VXLAN cluster: DSR is ignored (annotation warning), checking the SNAT fallback"
        );
    }
    let (lb, backend_node) = (&c.info.nodes[0], &c.info.nodes[1]);
    let app = format!("dsr-{}", unique_suffix());
    let result = async {
        c.apply_ok(&manifests(&app, &backend_node.name))?;
        let pod: Pod = wait_running(&c, NS, &app).await?;
        let pod_ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .context("running pod without IP")?;
        let svc: Service = c.client.get(NS, &app).await?;
        let ports = svc
            .spec
            .and_then(|s| s.ports)
            .context("Service without ports")?;
        let node_port = |proto: &str| {
            ports
                .iter()
                .find(|p| p.protocol.as_deref() == Some(proto))
                .and_then(|p| p.node_port)
                .with_context(|| format!("no {proto} nodePort"))
        };
        let (tcp_port, udp_port) = (node_port("TCP")?, node_port("UDP")?);
        // Both nodes must know the frontend: the LB node to balance, the
        // backend's node to accept the option.
        for (node, port) in [(lb, tcp_port), (lb, udp_port), (backend_node, tcp_port)] {
            let frontend = format!("{}:{port}", node.ip);
            let want = vec![format!("{pod_ip}:8080")];
            wait_for(
                &format!("{} to hold {frontend}", node.name),
                Duration::from_secs(60),
                || async {
                    Ok(match c.datapath_backends(node, &frontend)? {
                        Some(got) if got == want => Check::Done(()),
                        got => Check::Waiting(format!("{got:?}")),
                    })
                },
            )
            .await?;
        }

        let specs = [
            format!("tcp:{}:{tcp_port}", lb.ip),
            format!("udp:{}:{udp_port}", lb.ip),
        ];
        let want = if native { ext.ip } else { lb.ip }.to_string();
        let answers = wait_for(
            &format!("{specs:?} from {} to answer", ext.netns),
            Duration::from_secs(30),
            || async {
                let answers = probe_from(&ext.netns, &specs)?;
                Ok(if answers.iter().all(Option::is_some) {
                    Check::Done(answers)
                } else {
                    Check::Waiting(format!("{answers:?}"))
                })
            },
        )
        .await?;
        eprintln!("[e2e] DSR NodePort {specs:?}: the backend saw {answers:?}");
        for (spec, answer) in specs.iter().zip(&answers) {
            ensure!(
                answer.as_deref() == Some(want.as_str()),
                "{spec}: the backend saw {answer:?}, want {want} ({})",
                if native {
                    "the client's own address: DSR keeps it"
                } else {
                    "the LB node's address: SNAT fallback on VXLAN"
                }
            );
        }

        // Where the replies went: conntrack of both nodes.
        let lb_ct = datapath_view(lb, "conntrack")?;
        let backend_ct = datapath_view(backend_node, "conntrack")?;
        let snat_reverse = |ct: &str| {
            ct.lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    f.len() >= 4
                        && f[1] == format!("{pod_ip}:8080")
                        && f[2].starts_with(&format!("{}:", lb.ip))
                        && f[3] == "reverse"
                })
                .count()
        };
        let dsr_reverse = |ct: &str, proto: &str, port: i32| {
            ct.lines().any(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                f.len() >= 5
                    && f[0] == proto
                    && f[1] == format!("{pod_ip}:8080")
                    && f[2].starts_with(&format!("{}:", ext.ip))
                    && f[3] == "reverse"
                    && f[4] == format!("{}:{port}", lb.ip)
            })
        };
        if native {
            ensure!(
                snat_reverse(&lb_ct) == 0,
                "the LB node holds SNAT entries for the backend (replies come back through it):\n{lb_ct}"
            );
            for (proto, port) in [("TCP", tcp_port), ("UDP", udp_port)] {
                ensure!(
                    dsr_reverse(&backend_ct, proto, port),
                    "{proto}: the backend's node holds no DSR entry (backend -> client, frontend {}:{port}):\n{backend_ct}",
                    lb.ip
                );
            }
        } else {
            ensure!(
                snat_reverse(&lb_ct) >= 2,
                "SNAT fallback: the LB node should hold the reverse entries:\n{lb_ct}"
            );
            // ... and the agents said why, on the Service.
            wait_for(
                "a ForwardingModeIgnored Warning Event on the Service",
                Duration::from_secs(30),
                || async {
                    let events = c.client.list::<Event>(NS, &ListParams::default()).await?;
                    let found = events.items.iter().any(|e| {
                        e.reason.as_deref() == Some("ForwardingModeIgnored")
                            && e.type_.as_deref() == Some("Warning")
                            && e.involved_object.name.as_deref() == Some(app.as_str())
                    });
                    Ok(if found {
                        Check::Done(())
                    } else {
                        Check::Waiting(format!("{} events", events.items.len()))
                    })
                },
            )
            .await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    delete_pod(&c, NS, &app).await;
    if let Err(e) = c
        .client
        .delete::<Service>(NS, &app, &DeleteParams::default())
        .await
    {
        eprintln!("[e2e] cannot delete Service {app}: {e}");
    }
    if let Err(e) = &result {
        bail!("{e:#}");
    }
    Ok(())
}
