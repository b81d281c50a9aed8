//! Harness for weir's end-to-end tests.
//!
//! The tests run against the real local cluster `cargo xtask test` brings up
//! (cluster `weirtest`: etcd, weir-control, containerd, weir-agent, weir-cni,
//! eBPF). They find it through the cluster's state file, which xtask writes:
//! `$WEIR_E2E_CLUSTER_FILE`, default `/var/lib/weir/weirtest/cluster.json`.
//!
//! What the harness offers: an API client ([`Cluster::client`]), `weir apply`
//! through the built CLI ([`Cluster::apply`]), polling with a deadline and a
//! description of the last state seen ([`wait_for`]), a pod's container log
//! read from its node's pod-log-dir ([`Cluster::pod_log`]), and the node's
//! CRI ([`cri::Cri`]) to check what containerd really runs.
#![forbid(unsafe_code)]

pub mod cri;
pub mod logs;
pub mod netns;
pub mod netpol;
pub mod pods;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

pub use weir_client::{Client, DeleteParams, ListParams};

/// Default location of the e2e cluster's state file.
pub const DEFAULT_CLUSTER_FILE: &str = "/var/lib/weir/weirtest/cluster.json";

/// The parts of xtask's state file the tests need.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    /// API server, e.g. `http://127.0.0.1:6543`.
    pub server: String,
    pub nodes: Vec<NodeInfo>,
    /// The external client namespace on the underlay (absent in state files
    /// written before it was recorded).
    #[serde(default)]
    pub external: Option<ExternalInfo>,
    /// The agents' routing mode (`native` or `vxlan`).
    #[serde(default)]
    pub routing: Option<String>,
}

/// The external client namespace: a machine outside the cluster on the
/// nodes' network (for NodePort and masquerade tests).
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalInfo {
    pub netns: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub cri_socket: PathBuf,
    pub pod_log_dir: PathBuf,
    /// weir-cni's IPAM dataDir: one file per allocated address.
    pub ipam_dir: PathBuf,
    /// The agent's bpffs pin directory (what the kernel datapath holds).
    pub bpffs_dir: PathBuf,
}

/// A connected e2e cluster.
pub struct Cluster {
    pub info: ClusterInfo,
    pub client: Client,
    weir_bin: PathBuf,
}

/// The result of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(o: Output) -> Self {
        CliOutput {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cluster {
    /// Reads the state file and connects to the API server.
    pub async fn connect() -> Result<Cluster> {
        let file = std::env::var_os("WEIR_E2E_CLUSTER_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_CLUSTER_FILE.into());
        let bytes = std::fs::read(&file).with_context(|| {
            format!(
                "cannot read {} — is the e2e cluster up? (`cargo xtask test --tier 3`)",
                file.display()
            )
        })?;
        let info: ClusterInfo = serde_json::from_slice(&bytes)
            .with_context(|| format!("cannot parse {}", file.display()))?;
        let client = Client::connect(&info.server)
            .await
            .with_context(|| format!("cannot connect to {}", info.server))?;
        let weir_bin = std::env::var_os("WEIR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_weir_bin);
        Ok(Cluster {
            info,
            client,
            weir_bin,
        })
    }

    /// Runs the `weir` CLI against this cluster.
    pub fn weir(&self, args: &[&str]) -> Result<CliOutput> {
        let out = Command::new(&self.weir_bin)
            .args(args)
            .env("WEIR_SERVER", &self.info.server)
            .output()
            .with_context(|| format!("cannot run {}", self.weir_bin.display()))?;
        Ok(out.into())
    }

    /// The backends the node's kernel datapath holds for `frontend`
    /// (`ADDR:PORT`), read from its pinned maps with the `weir-datapath` tool
    /// built next to the CLI: `None` when the frontend is not in the map.
    pub fn datapath_backends(
        &self,
        node: &NodeInfo,
        frontend: &str,
    ) -> Result<Option<Vec<String>>> {
        let tool = self.weir_bin.with_file_name("weir-datapath");
        let out = Command::new(&tool)
            .arg("--bpffs-dir")
            .arg(&node.bpffs_dir)
            .arg("services")
            .output()
            .with_context(|| format!("cannot run {}", tool.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed on {}: {}",
                tool.display(),
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(frontend_backends(
            &String::from_utf8_lossy(&out.stdout),
            frontend,
        ))
    }

    /// `weir apply -f FILE` with `yaml` written to a temporary file.
    pub fn apply(&self, yaml: &str) -> Result<CliOutput> {
        let path = std::env::temp_dir().join(format!(
            "weir-e2e-{}-{}.yaml",
            std::process::id(),
            unique_suffix()
        ));
        std::fs::write(&path, yaml)?;
        let out = self.weir(&["apply", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        out
    }

    /// Like [`Cluster::apply`] but fails unless the CLI succeeds.
    pub fn apply_ok(&self, yaml: &str) -> Result<()> {
        let out = self.apply(yaml)?;
        if !out.success {
            bail!(
                "weir apply failed:\nstdout: {}\nstderr: {}\nmanifest:\n{yaml}",
                out.stdout,
                out.stderr
            );
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&NodeInfo> {
        self.info
            .nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name} in the cluster file"))
    }

    /// The node a pod is bound to.
    pub fn node_of(&self, pod: &Pod) -> Result<&NodeInfo> {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .context("pod is not bound to a node")?;
        self.node(name)
    }

    /// The output of all containers of `pod`, from the CRI log files on its node.
    pub fn pod_log(&self, pod: &Pod) -> Result<String> {
        let node = self.node_of(pod)?;
        let uid = pod.metadata.uid.as_deref().context("pod has no uid")?;
        logs::read_pod_log(&node.pod_log_dir, uid)
    }
}

fn default_weir_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/weir")
}

/// A suffix that makes object names unique per run (tests may re-run on a kept cluster).
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", (nanos / 1_000_000) % 0xff_ffff)
}

/// One poll's verdict.
pub enum Check<T> {
    Done(T),
    /// Not yet; the text says what was seen (reported on timeout).
    Waiting(String),
    /// Never will be (e.g. the pod failed): stop waiting and fail with this.
    Failed(String),
}

/// Polls `probe` every 500 ms until it is `Done`, fails at once on `Failed`,
/// or fails after `timeout` naming `what` and the last state seen. Errors
/// from `probe` are retried (the API may be briefly busy); the last one is
/// reported.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let t0 = Instant::now();
    loop {
        let last = match probe().await {
            Ok(Check::Done(v)) => {
                eprintln!(
                    "[e2e] {what}: done after {:.1}s",
                    t0.elapsed().as_secs_f32()
                );
                return Ok(v);
            }
            Ok(Check::Waiting(seen)) => seen,
            Ok(Check::Failed(why)) => bail!("{what}: {why}"),
            Err(e) => format!("error: {e:#}"),
        };
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The phase of a pod ("" when it has no status yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Finds `frontend` in `weir-datapath services` output (tab-separated
/// `FRONTEND PROTO KIND AFFINITY BACKENDS`) and returns its backends, empty
/// when it has none; `None` when the frontend is absent.
pub fn frontend_backends(services: &str, frontend: &str) -> Option<Vec<String>> {
    services.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.first() != Some(&frontend) {
            return None;
        }
        let backends = cols.get(4).copied().unwrap_or("");
        Some(if backends.starts_with('<') || backends.is_empty() {
            Vec::new()
        } else {
            let mut v: Vec<String> = backends.split(',').map(str::to_owned).collect();
            v.sort();
            v
        })
    })
}

#[cfg(test)]
mod frontend_tests {
    use super::frontend_backends;

    #[test]
    fn reads_backends_of_one_frontend() {
        let out = "FRONTEND\tPROTO\tKIND\tAFFINITY\tBACKENDS\n\
                   10.96.0.2:80\tTCP\tcluster\t-\t10.244.1.4:8080,10.244.1.3:8080\n\
                   10.96.0.3:80\tTCP\tcluster\t-\t<none: new connections dropped>\n";
        assert_eq!(
            frontend_backends(out, "10.96.0.2:80"),
            Some(vec![
                "10.244.1.3:8080".to_owned(),
                "10.244.1.4:8080".to_owned()
            ])
        );
        assert_eq!(frontend_backends(out, "10.96.0.3:80"), Some(vec![]));
        assert_eq!(frontend_backends(out, "10.96.0.2:81"), None);
        assert_eq!(frontend_backends(out, "10.96.0.2"), None);
    }
}
