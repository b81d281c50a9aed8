//! The weir variant, measured as the product runs: a real `weir-control`
//! (API server + controllers over its embedded etcd) holds the N Services
//! (no selector, explicit ClusterIP) and their hand-written EndpointSlices; a
//! real `weir-agent` runs in each topology's node netns, attaches weir's eBPF
//! program to the `wr*` veths at start exactly as it does to pod veths,
//! watches Services/EndpointSlices and fills the maps through its planner.
//!
//! The agent insists on a container runtime, so one containerd (own root,
//! state and socket; no pods are ever created) runs for the whole benchmark.
//! Control plane and containerd are started once; each topology gets a fresh
//! agent with a fresh bpffs pin directory.

use std::fs::File;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::json;

use crate::control::procs::{Proc, free_port_pair};
use crate::netns::Topology;
use crate::plan;

pub const CHANGE_METHOD: &str = "weir: create Service + EndpointSlice through weir-control's API -> etcd -> agent watch -> planner -> eBPF maps";

/// State of the control plane and containerd of one benchmark run.
const STATE_DIR: &str = "/tmp/wbench-weir";
const BPFFS_DIR: &str = "/sys/fs/bpf/wbench";
const NAMESPACE: &str = "default";
/// cgroup parent the agents are given (they create it; no pod ever uses it).
const CGROUP_PARENT: &str = "/wbench";
/// Node name the benchmark's agents register.
const NODE: &str = "wbench";

/// Where weir-control and weir-agent are: `explicit` (`--weir-bin-dir`),
/// else next to this binary (both are release builds of the workspace).
pub fn bin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir.to_owned()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("weir-bench has no directory")?
            .to_owned()),
    }
}

/// weir-control + containerd, and how many benchmark services exist.
pub struct WeirCluster {
    bin_dir: PathBuf,
    dir: PathBuf,
    // Held only to stop them on drop; declared (and so dropped) control
    // plane first, then containerd.
    _control: Proc,
    _containerd: Proc,
    runtime: tokio::runtime::Runtime,
    client: weir_client::Client,
    /// Services `0..services` exist in the API.
    services: u32,
    /// The NodePort service exists.
    nodeport: bool,
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(Stdio::from(
        File::create(dir.join(name)).with_context(|| format!("cannot create {name}"))?,
    ))
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni"
"#
    )
}

fn service_json(i: u32) -> serde_json::Value {
    let vip = plan::vip(i).to_string();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "clusterIP": vip, "clusterIPs": [vip],
                 "ports": [{"name": "http", "port": plan::SERVICE_PORT, "targetPort": plan::TARGET_PORT, "protocol": "TCP"}]}
    })
}

fn slice_json(i: u32) -> serde_json::Value {
    let endpoints: Vec<_> = (0..plan::ENDPOINTS_PER_SERVICE)
        .map(|j| json!({"addresses": [plan::backend(i, j).to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-bench"), "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": plan::TARGET_PORT, "protocol": "TCP"}]
    })
}

/// The UDP NodePort service of the NodePort runs (service number
/// [`plan::NODEPORT_SERVICE`]) and its EndpointSlice.
fn nodeport_json() -> (serde_json::Value, serde_json::Value) {
    let i = plan::NODEPORT_SERVICE;
    let vip = plan::vip(i).to_string();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nodeport-udp", "namespace": NAMESPACE},
        "spec": {"type": "NodePort", "clusterIP": vip, "clusterIPs": [vip],
                 "externalTrafficPolicy": "Cluster",
                 "ports": [{"name": "udp", "port": plan::SERVICE_PORT, "targetPort": plan::TARGET_PORT,
                            "protocol": "UDP", "nodePort": plan::NODE_PORT}]}
    });
    let endpoints: Vec<_> = (0..plan::ENDPOINTS_PER_SERVICE)
        .map(|j| json!({"addresses": [plan::backend(i, j).to_string()], "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "nodeport-udp-bench", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": "nodeport-udp"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "udp", "port": plan::TARGET_PORT, "protocol": "UDP"}]
    });
    (service, slice)
}

async fn create_service(client: &weir_client::Client, i: u32) -> Result<()> {
    let (service, slice) = (
        serde_json::to_vec(&service_json(i))?,
        serde_json::to_vec(&slice_json(i))?,
    );
    // Independent objects: write both at once, like a controller would.
    let (service, slice) = tokio::join!(
        client.create_json("Service", service, false),
        client.create_json("EndpointSlice", slice, false)
    );
    service.with_context(|| format!("cannot create Service svc-{i}"))?;
    slice.with_context(|| format!("cannot create EndpointSlice svc-{i}-bench"))?;
    Ok(())
}

impl WeirCluster {
    /// Starts containerd and weir-control (binaries from `bin_dir`) with
    /// fresh state, and waits for the API.
    pub fn start(bin_dir: &Path) -> Result<WeirCluster> {
        let dir = PathBuf::from(STATE_DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        for sub in ["cni", "cni-bin", "agent", "logs", "containerd"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("containerd.toml"), containerd_config(&dir))?;
        let containerd = Proc::spawn(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("containerd.toml"))
                .stdout(log_file(&dir, "containerd.log")?)
                .stderr(log_file(&dir, "containerd.err.log")?),
        )?;
        let etcd_port = free_port_pair()?;
        let api_port = free_port_pair()?;
        let control = Proc::spawn(
            "weir-control",
            Command::new(bin_dir.join("weir-control"))
                .arg("--state-dir")
                .arg(dir.join("control"))
                .args([
                    "--embedded-etcd-port",
                    &etcd_port.to_string(),
                    "--listen",
                    &format!("127.0.0.1:{api_port}"),
                ])
                .arg("--unix-socket")
                .arg(dir.join("weir.sock"))
                .args([
                    "--cluster-cidr",
                    "10.240.0.0/12",
                    "--service-cidr",
                    plan::SERVICE_CIDR,
                ])
                .stdout(log_file(&dir, "control.log")?)
                .stderr(log_file(&dir, "control.err.log")?),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = format!("unix://{}/weir.sock", dir.display());
        let mut cluster = WeirCluster {
            bin_dir: bin_dir.to_owned(),
            dir,
            _control: control,
            _containerd: containerd,
            client: runtime.block_on(Self::wait_for_api(&server))?,
            runtime,
            services: 0,
            nodeport: false,
        };
        let sock = cluster.dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "containerd did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster.services = 0;
        Ok(cluster)
    }

    async fn wait_for_api(server: &str) -> Result<weir_client::Client> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(client) = weir_client::Client::connect(server).await {
                let probe = client
                    .list_json("Service", "", &weir_client::ListParams::default())
                    .await;
                if probe.is_ok() {
                    return Ok(client);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "weir-control did not answer on {server} within 90 s (see {STATE_DIR}/control*.log)"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates services until `0..n` exist (each with its EndpointSlice).
    pub fn ensure_services(&mut self, n: u32) -> Result<f64> {
        let started = Instant::now();
        let client = self.client.clone();
        let range = self.services..n;
        self.runtime.block_on(async move {
            let mut creates = futures::stream::iter(range.map(|i| {
                let client = client.clone();
                async move { create_service(&client, i).await }
            }))
            .buffer_unordered(64);
            while let Some(result) = creates.next().await {
                result?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        self.services = self.services.max(n);
        Ok(started.elapsed().as_secs_f64())
    }

    /// Creates the UDP NodePort service and its slice (once).
    pub fn ensure_nodeport_service(&mut self) -> Result<()> {
        if self.nodeport {
            return Ok(());
        }
        let (service, slice) = nodeport_json();
        let client = self.client.clone();
        self.runtime.block_on(async move {
            client
                .create_json("Service", serde_json::to_vec(&service)?, false)
                .await
                .context("cannot create the NodePort Service")?;
            client
                .create_json("EndpointSlice", serde_json::to_vec(&slice)?, false)
                .await
                .context("cannot create the NodePort EndpointSlice")?;
            Ok::<_, anyhow::Error>(())
        })?;
        self.nodeport = true;
        Ok(())
    }

    pub fn services(&self) -> u32 {
        self.services
    }

    /// Adds service number `services()` and returns when the API accepted
    /// both objects; the caller timed the start.
    pub fn add_one_service(&mut self) -> Result<()> {
        let i = self.services;
        self.runtime.block_on(create_service(&self.client, i))?;
        self.services += 1;
        Ok(())
    }

    /// Starts a weir-agent in the node netns `node_netns` (whose underlay
    /// carries `plan::NODE_IP`) with `extra` flags appended; does not wait
    /// for it to serve anything.
    pub fn spawn_agent(&self, node_netns: &str, tag: &str, extra: &[&str]) -> Result<Agent> {
        let bpffs = PathBuf::from(BPFFS_DIR).join(tag);
        let mut child = Command::new(self.bin_dir.join("weir-agent"));
        child
            .args(["--node-name", NODE])
            .arg("--server")
            .arg(format!("unix://{}/weir.sock", self.dir.display()))
            .arg("--netns")
            .arg(format!("/run/netns/{node_netns}"))
            .args(["--node-ip", &plan::NODE_IP.to_string()])
            .arg("--cri-socket")
            .arg(self.dir.join("containerd.sock"))
            .arg("--state-dir")
            .arg(self.dir.join("agent"))
            .arg("--bpffs-dir")
            .arg(&bpffs)
            .args(["--cgroup-parent", CGROUP_PARENT])
            .arg("--cni-conf-dir")
            .arg(self.dir.join("cni"))
            .arg("--pod-log-dir")
            .arg(self.dir.join("logs"))
            .args(extra)
            .stdout(log_file(&self.dir, &format!("agent-{tag}.log"))?)
            .stderr(log_file(&self.dir, &format!("agent-{tag}.err.log"))?);
        Ok(Agent {
            child: Some(Proc::spawn("weir-agent", &mut child)?),
            bpffs,
        })
    }

    /// Starts a weir-agent in `topo`'s node netns and waits until the first
    /// and last service VIP answer from the client netns. Returns the agent
    /// and the seconds from its start to that point.
    pub fn start_agent(&self, topo: &Topology, tag: &str) -> Result<(Agent, f64)> {
        let started = Instant::now();
        let agent = self.spawn_agent(&topo.node, tag, &[])?;
        for i in [0, self.services.saturating_sub(1)] {
            let target = SocketAddrV4::new(plan::vip(i), plan::SERVICE_PORT);
            crate::change::wait_reachable(&topo.client, target, Duration::from_secs(60))
                .with_context(|| {
                    format!("weir-agent never served {target} (see {STATE_DIR}/agent-{tag}*.log)")
                })?;
        }
        Ok((agent, started.elapsed().as_secs_f64()))
    }
}

impl Drop for WeirCluster {
    fn drop(&mut self) {
        // The daemons stop when their fields drop, right after this.
        let _ = std::fs::remove_dir(BPFFS_DIR);
        // The agents create the pod cgroup parent in every hierarchy; it is
        // empty (no pod ever ran).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(CGROUP_PARENT.trim_start_matches('/')));
            }
        }
    }
}

/// A cgroup v2 directory under the agents' pod cgroup parent, where weir's
/// socket load balancing applies, for a client that should be treated like a pod.
pub fn client_cgroup(tag: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/unified")
        .join(CGROUP_PARENT.trim_start_matches('/'))
        .join(format!("client-{tag}"))
}

/// One running weir-agent; stopped and its pins removed on drop.
pub struct Agent {
    /// Taken (and so stopped) in drop before the pins are removed.
    child: Option<Proc>,
    bpffs: PathBuf,
}

impl Agent {
    /// Its bpffs pin directory (the datapath's pinned maps).
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        drop(self.child.take());
        // Pinned maps and TCX links live until unpinned.
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}
