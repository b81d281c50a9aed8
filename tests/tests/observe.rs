//! Flow visibility and inspection over the network (issue 6 "flow
//! visibility", issue 3 "inspection"), end to end: `weir observe` and
//! `weir datapath` reach each node's agent API on the node's InternalIP,
//! and the agent's `/metrics` serves the kernel's drop counters.
//!
//! The host has no route into the local cluster's underlay (by design), so
//! the CLI runs in the cluster's external client namespace (`<cluster>-ext`,
//! on the underlay bridge like a workstation on the nodes' network) and
//! talks to the API server over its unix socket, which is not bound to a
//! network namespace. Everything else is the real path: CLI -> API server
//! (Nodes) -> TCP to each agent's node API -> pinned maps / flow ring.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::Value;
use weir_e2e::{Check, CliOutput, Cluster, ListParams, phase, unique_suffix, wait_for};

const NS: &str = "default";
const HOSTNAME_IMAGE: &str = "127.0.0.1:5000/weir/hostname:v1";
const CLIENT_IMAGE: &str = "127.0.0.1:5000/weir/client:v1";
const POD_TIMEOUT: Duration = Duration::from_secs(180);
/// The agent reads the ring as soon as epoll says so; the pod index and
/// the map sync may lag by a watch event.
const FLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The CLI, run in the cluster's external namespace against the API
/// server's unix socket.
struct Outside {
    netns: String,
    socket: PathBuf,
    weir: PathBuf,
}

impl Outside {
    fn new(c: &Cluster) -> Result<Outside> {
        let file = std::env::var_os("WEIR_E2E_CLUSTER_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| weir_e2e::DEFAULT_CLUSTER_FILE.into());
        let state: Value = serde_json::from_slice(&std::fs::read(&file)?)
            .with_context(|| format!("cannot parse {}", file.display()))?;
        let socket = state["unix_socket"]
            .as_str()
            .context("the cluster file has no unix_socket")?
            .into();
        let netns = state["external"]["netns"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}-ext", c.info.name));
        let weir = std::env::var_os("WEIR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/weir"));
        Ok(Outside {
            netns,
            socket,
            weir,
        })
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns));
        cmd
    }

    /// `weir ARGS` from outside the cluster.
    fn weir(&self, args: &[&str]) -> Result<CliOutput> {
        let out = self
            .nsenter()
            .arg(&self.weir)
            .arg("--server")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .with_context(|| format!("cannot run {} in {}", self.weir.display(), self.netns))?;
        Ok(out.into())
    }

    fn weir_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.weir(args)?;
        if !out.success {
            bail!("weir {args:?} failed:\n{}{}", out.stdout, out.stderr);
        }
        Ok(out.stdout)
    }

    /// GET `url` from outside (busybox wget, as in the cluster's images).
    fn http_get(&self, url: &str) -> Result<String> {
        let out = self
            .nsenter()
            .args(["busybox", "wget", "-q", "-O", "-", url])
            .output()
            .context("cannot run busybox wget")?;
        ensure!(
            out.status.success(),
            "GET {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Opens a TCP connection to `addr:port` (bash's /dev/tcp); whether it
    /// connected within 3 s.
    fn tcp_connects(&self, addr: &str, port: i32) -> Result<bool> {
        let out = self
            .nsenter()
            .args([
                "timeout",
                "3",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{addr}/{port}"),
            ])
            .output()
            .context("cannot run bash")?;
        Ok(out.status.success())
    }
}

fn web(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeName: {node}
      terminationGracePeriodSeconds: 1
      containers:
      - name: hostname
        image: {HOSTNAME_IMAGE}
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// A NodePort Service whose selector matches nothing.
fn empty_nodeport(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: NodePort
  selector: {{app: {name}-nobody}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

fn client_pod(name: &str, node: &str, script: &str) -> String {
    labelled_client_pod(name, "obs-client", node, script)
}

/// A one-shot client pod labelled `role: ROLE`.
fn labelled_client_pod(name: &str, role: &str, node: &str, script: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{role: {role}}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {CLIENT_IMAGE}
    command: ["sh", "-c", '{script}']
"#
    )
}

async fn service(c: &Cluster, name: &str) -> Result<Service> {
    Ok(c.client.get(NS, name).await?)
}

fn cluster_ip(s: &Service) -> Result<String> {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("service has no clusterIP")
}

/// The Running pod of `app` and its IP.
async fn running_pod(c: &Cluster, app: &str) -> Result<(String, String)> {
    wait_for(&format!("a running {app} pod"), POD_TIMEOUT, || async {
        let pods = c
            .client
            .list::<Pod>(NS, &ListParams::default().labels(format!("app={app}")))
            .await?
            .items;
        let found = pods.iter().find_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            (phase(p) == "Running").then(|| (p.metadata.name.clone().unwrap_or_default(), ip))
        });
        Ok(match found {
            Some(v) => Check::Done(v),
            None => Check::Waiting(format!("{} pods, none running", pods.len())),
        })
    })
    .await
}

async fn finished(c: &Cluster, name: &str) -> Result<Pod> {
    wait_for(
        &format!("client pod {name} to finish"),
        POD_TIMEOUT,
        || async {
            let p: Pod = c.client.get(NS, name).await?;
            Ok(match phase(&p) {
                "Succeeded" | "Failed" => Check::Done(p),
                other => Check::Waiting(format!("phase {other:?}")),
            })
        },
    )
    .await
}

async fn cleanup(c: &Cluster, objects: &[(&str, &str)]) {
    for (kind, name) in objects {
        let _ = c.weir(&["delete", kind, name, "--wait=false", "-n", NS]);
    }
}

/// The flows `weir observe ARGS -o json` prints.
fn observed(out: &Outside, args: &[&str]) -> Result<Vec<Value>> {
    let mut all = vec!["observe", "-o", "json"];
    all.extend_from_slice(args);
    out.weir_ok(&all)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_node_api_datapath_views_and_metrics() -> Result<()> {
    let c = Cluster::connect().await?;
    let out = Outside::new(&c)?;
    let node = c.info.nodes.first().context("no node")?.clone();
    let name = format!("obs-dp-{}", unique_suffix());
    c.apply_ok(&web(&name, &node.name))?;
    let result = async {
        let ip = cluster_ip(&service(&c, &name).await?)?;
        let (_, pod_ip) = running_pod(&c, &name).await?;
        let frontend = format!("{ip}:80");
        let backend = format!("{pod_ip}:8080");
        // The frontend with its backend, as the node's kernel holds it.
        wait_for(
            "the frontend in weir datapath services",
            FLOW_TIMEOUT,
            || async {
                let table = out.weir_ok(&["datapath", "services", "--node", &node.name])?;
                Ok(
                    match table.lines().find(|l| l.contains(&format!(" {frontend} "))) {
                        Some(l) if l.starts_with(&node.name) && l.contains(&backend) => {
                            Check::Done(())
                        }
                        other => Check::Waiting(format!("{other:?} in\n{table}")),
                    },
                )
            },
        )
        .await?;
        let backends = out.weir_ok(&["datapath", "backends", "--node", &node.name])?;
        ensure!(
            backends
                .lines()
                .any(|l| l.contains(&backend) && l.contains(&frontend)),
            "{backend} -> {frontend} missing from\n{backends}"
        );
        let stats = out.weir_ok(&["datapath", "stats", "--node", &node.name])?;
        ensure!(stats.contains("drops/no_backend"), "stats:\n{stats}");

        // kubectl-like failures, non-zero exit.
        let missing = out.weir(&["datapath", "services", "--node", "no-such-node"])?;
        ensure!(
            !missing.success && missing.stderr.contains(r#"nodes "no-such-node" not found"#),
            "{missing:?}"
        );
        let bad = out.weir(&["observe", "--pod", "Not_A/pod"])?;
        ensure!(
            !bad.success && bad.stderr.contains("pod:"),
            "a malformed --pod must be refused naming the field: {bad:?}"
        );

        let metrics = out.http_get(&format!("http://{}:9962/metrics", node.ip))?;
        ensure!(
            metrics.contains(r#"weir_datapath_drops_total{reason="no_backend"} "#),
            "metrics:\n{metrics}"
        );
        Ok(())
    }
    .await;
    cleanup(&c, &[("deployment", &name), ("service", &name)]).await;
    result
}

/// Reads `drops/no_backend` of `node` from `weir datapath stats`.
fn no_backend_drops(out: &Outside, node: &str) -> Result<u64> {
    let stats = out.weir_ok(&["datapath", "stats", "--node", node])?;
    stats
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("drops/no_backend"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .with_context(|| format!("no drops/no_backend in\n{stats}"))
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_node_api_counts_a_no_backend_drop() -> Result<()> {
    let c = Cluster::connect().await?;
    let out = Outside::new(&c)?;
    let node = c.info.nodes.first().context("no node")?.clone();
    let name = format!("obs-none-{}", unique_suffix());
    c.apply_ok(&empty_nodeport(&name))?;
    let result = async {
        let svc = service(&c, &name).await?;
        let node_port = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref()?.first()?.node_port)
            .context("no nodePort")?;
        let frontend = format!("{}:{node_port}", node.ip);
        wait_for(
            "the NodePort frontend on the node",
            FLOW_TIMEOUT,
            || async {
                let table = out.weir_ok(&["datapath", "services", "--node", &node.name])?;
                Ok(
                    match table.lines().find(|l| l.contains(&format!(" {frontend} "))) {
                        Some(l) if l.contains("<none") => Check::Done(()),
                        other => Check::Waiting(format!("{other:?}")),
                    },
                )
            },
        )
        .await?;
        let before = no_backend_drops(&out, &node.name)?;
        ensure!(
            !out.tcp_connects(&node.ip.to_string(), node_port)?,
            "a NodePort without backends must not accept connections"
        );
        let after = no_backend_drops(&out, &node.name)?;
        ensure!(
            after > before,
            "drops/no_backend did not grow ({before} -> {after})"
        );
        Ok(())
    }
    .await;
    cleanup(&c, &[("service", &name)]).await;
    result
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_node_api_observe_a_pod_connecting_to_a_service() -> Result<()> {
    let c = Cluster::connect().await?;
    let out = Outside::new(&c)?;
    let node = c.info.nodes.first().context("no node")?.clone();
    let name = format!("obs-web-{}", unique_suffix());
    let client = format!("obs-client-{}", unique_suffix());
    c.apply_ok(&web(&name, &node.name))?;
    let result = async {
        let ip = cluster_ip(&service(&c, &name).await?)?;
        let (server, server_ip) = running_pod(&c, &name).await?;
        // Three connections through the ClusterIP.
        c.apply_ok(&client_pod(
            &client,
            &node.name,
            &format!(
                "for i in 1 2 3; do timeout 5 wget -q -O - http://{ip}/ || true; sleep 1; done"
            ),
        ))?;
        let p = finished(&c, &client).await?;
        eprintln!("[e2e] client log:\n{}", c.pod_log(&p).unwrap_or_default());
        let pod = format!("{NS}/{client}");
        let flow = wait_for(
            "the client's flow in weir observe",
            FLOW_TIMEOUT,
            || async {
                let flows = observed(&out, &["--pod", &pod, "--last", "100"])?;
                let hit = flows.iter().find(|f| {
                    f["source"]["pod"] == client.as_str()
                        && f["destination"]["pod"] == server.as_str()
                        && f["destination"]["ip"] == server_ip.as_str()
                        && f["destination"]["port"] == 8080
                        && f["protocol"] == "TCP"
                });
                Ok(match hit {
                    Some(f) => Check::Done(f.clone()),
                    None => Check::Waiting(format!("{} flows: {flows:?}", flows.len())),
                })
            },
        )
        .await?;
        ensure!(flow["verdict"] == "forwarded", "{flow}");
        ensure!(flow["node"] == node.name.as_str(), "{flow}");

        // The same flow in the text form, filtered by verdict and node.
        let text = out.weir_ok(&[
            "observe",
            "--pod",
            &pod,
            "--verdict",
            "forwarded",
            "--node",
            &node.name,
        ])?;
        let want = format!("{pod} (");
        ensure!(
            text.lines().any(|l| l.contains(&want)
                && l.contains(&format!("{NS}/{server} ({server_ip}:8080)"))
                && l.contains("FORWARDED")),
            "no line for {pod} -> {server} in\n{text}"
        );
        let dropped = observed(&out, &["--pod", &pod, "--verdict", "dropped"])?;
        ensure!(dropped.is_empty(), "unexpected drops: {dropped:?}");
        Ok(())
    }
    .await;
    cleanup(
        &c,
        &[("pod", &client), ("deployment", &name), ("service", &name)],
    )
    .await;
    result
}

/// A NetworkPolicy selecting `app: APP`: ingress from pods labelled
/// `role: ROLE` on TCP 8080, or (no role) no ingress at all.
fn ingress_policy(name: &str, app: &str, from_role: Option<&str>) -> String {
    let ingress = match from_role {
        None => "  ingress: []".to_owned(),
        Some(role) => format!(
            "  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {{role: {role}}}\n    ports:\n    - protocol: TCP\n      port: 8080"
        ),
    };
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
spec:
  podSelector:
    matchLabels: {{app: {app}}}
  policyTypes: [Ingress]
{ingress}
"#
    )
}

/// Waits for a flow of `client` (observed with `extra` flags) that `pick` accepts.
async fn flow_of(
    out: &Outside,
    client: &str,
    extra: &[&str],
    what: &str,
    pick: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let pod = format!("{NS}/{client}");
    wait_for(what, FLOW_TIMEOUT, || async {
        let mut args = vec!["--pod", pod.as_str(), "--last", "200"];
        args.extend_from_slice(extra);
        let flows = observed(out, &args)?;
        Ok(match flows.iter().find(|f| pick(f)) {
            Some(f) => Check::Done(f.clone()),
            None => Check::Waiting(format!("{} flows: {flows:?}", flows.len())),
        })
    })
    .await
}

#[tokio::test]
#[ignore = "e2e: needs the local cluster from cargo xtask test"]
async fn e2e_node_api_observe_policy_verdicts_name_the_policy() -> Result<()> {
    let c = Cluster::connect().await?;
    let out = Outside::new(&c)?;
    let node = c.info.nodes.first().context("no node")?.clone();
    let suffix = unique_suffix();
    let name = format!("obs-pol-{suffix}");
    let role = format!("obs-pol-client-{suffix}");
    let (deny, allow) = (format!("deny-{name}"), format!("allow-{name}"));
    let (denied_client, allowed_client) = (format!("{role}-1"), format!("{role}-2"));
    c.apply_ok(&web(&name, &node.name))?;
    let result = async {
        let ip = cluster_ip(&service(&c, &name).await?)?;
        let (server, _) = running_pod(&c, &name).await?;
        let fetch = format!(
            "for i in 1 2; do timeout 3 wget -q -O - http://{ip}/ && exit 0; sleep 1; done; exit 1"
        );

        // Isolated, nothing allowed: the connection is denied at the
        // server's ingress, and the flow says so.
        c.apply_ok(&ingress_policy(&deny, &name, None))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.apply_ok(&labelled_client_pod(
            &denied_client,
            &role,
            &node.name,
            &fetch,
        ))?;
        let p = finished(&c, &denied_client).await?;
        ensure!(phase(&p) == "Failed", "the denied client got through");
        let drop = flow_of(
            &out,
            &denied_client,
            &["--verdict", "dropped"],
            "the denied flow in weir observe",
            |f| f["destination"]["pod"] == server.as_str(),
        )
        .await?;
        ensure!(drop["drop_reason"] == "policy_denied", "{drop}");
        ensure!(drop["direction"] == "ingress", "{drop}");
        ensure!(drop["policy"] == "(default deny)", "{drop}");

        // Allowed by a second policy: the forwarded ingress verdict names it.
        c.apply_ok(&ingress_policy(&allow, &name, Some(&role)))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.apply_ok(&labelled_client_pod(
            &allowed_client,
            &role,
            &node.name,
            &fetch,
        ))?;
        let p = finished(&c, &allowed_client).await?;
        ensure!(
            phase(&p) == "Succeeded",
            "the allowed client did not get through; its log:\n{}",
            c.pod_log(&p).unwrap_or_default()
        );
        let allowed = flow_of(
            &out,
            &allowed_client,
            &["--verdict", "forwarded"],
            "the allowed flow in weir observe",
            |f| f["destination"]["pod"] == server.as_str() && f["direction"] == "ingress",
        )
        .await?;
        ensure!(allowed["policy"] == format!("{NS}/{allow}"), "{allowed}");
        let text = out.weir_ok(&["observe", "--pod", &format!("{NS}/{allowed_client}")])?;
        ensure!(
            text.contains(&format!("policy {NS}/{allow} ingress")),
            "the text form names the policy:\n{text}"
        );
        Ok(())
    }
    .await;
    cleanup(
        &c,
        &[
            ("pod", &denied_client),
            ("pod", &allowed_client),
            ("networkpolicy", &deny),
            ("networkpolicy", &allow),
            ("deployment", &name),
            ("service", &name),
        ],
    )
    .await;
    result
}
