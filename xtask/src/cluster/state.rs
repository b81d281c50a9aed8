//! The state file of a running cluster (`/var/lib/weir/<cluster>/cluster.json`):
//! what runs and where things are. `down` and `status` read it; so do the
//! e2e tests (they find the API address and each node's directories here).
//! It is rewritten after every started process, so a crash during `up`
//! still leaves the PIDs to stop.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::procs::Process;
use crate::layout::{Layout, NodeLayout};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterState {
    pub name: String,
    /// API server address for the CLI and the tests, e.g. `http://127.0.0.1:6443`.
    pub server: String,
    /// API server unix socket (what the agents use).
    pub unix_socket: PathBuf,
    /// Registry in the host netns (push target).
    pub registry: String,
    /// Directory of the weir binaries the cluster runs.
    pub bin_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub nodes: Vec<NodeState>,
    /// The external client namespace on the underlay (NodePort, masquerade).
    #[serde(default)]
    pub external: Option<ExternalState>,
    /// How the agents route pod traffic between nodes.
    #[serde(default)]
    pub routing: Routing,
    pub processes: Vec<Process>,
}

/// The agents' `--routing-mode`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Routes via the nodes' addresses (they share the underlay bridge).
    #[default]
    Native,
    /// VXLAN between the nodes.
    Vxlan,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Native => "native",
            Routing::Vxlan => "vxlan",
        }
    }
}

/// A namespace outside the cluster on the nodes' network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExternalState {
    pub netns: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub cri_socket: PathBuf,
    pub state_dir: PathBuf,
    pub containerd_state: PathBuf,
    pub pod_log_dir: PathBuf,
    pub ipam_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub cgroup_parent: String,
}

impl From<&NodeLayout> for NodeState {
    fn from(n: &NodeLayout) -> Self {
        NodeState {
            name: n.name.clone(),
            netns: n.netns.clone(),
            ip: n.ip,
            cri_socket: n.cri_socket.clone(),
            state_dir: n.state_dir.clone(),
            containerd_state: n.containerd_state.clone(),
            pod_log_dir: n.pod_log_dir.clone(),
            ipam_dir: n.ipam_dir.clone(),
            cni_conf_dir: n.cni_conf_dir.clone(),
            bpffs_dir: n.bpffs_dir.clone(),
            cgroup_parent: n.cgroup_parent.clone(),
        }
    }
}

impl ClusterState {
    pub fn new(
        layout: &Layout,
        nodes: &[NodeLayout],
        bin_dir: &Path,
        routing: Routing,
    ) -> ClusterState {
        ClusterState {
            name: layout.name.clone(),
            server: layout.server_url(),
            unix_socket: layout.unix_socket(),
            registry: format!("127.0.0.1:{}", layout.ports.registry),
            bin_dir: bin_dir.to_path_buf(),
            logs_dir: layout.logs_dir(),
            nodes: nodes.iter().map(NodeState::from).collect(),
            external: Some(ExternalState {
                netns: layout.ext_netns(),
                ip: layout.ext_ip(),
            }),
            routing,
            processes: Vec::new(),
        }
    }

    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<ClusterState>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("corrupt state file {}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let l = Layout::new("weirtest").unwrap();
        let mut s = ClusterState::new(
            &l,
            &[l.node(1)],
            Path::new("/w/target/debug"),
            Routing::Vxlan,
        );
        s.processes.push(Process {
            name: "containerd/node1".into(),
            pid: 42,
            start_time: 7,
            log: "/l".into(),
        });
        let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.server, "http://127.0.0.1:6543");
        assert!(
            serde_json::to_string(&s)
                .unwrap()
                .contains(r#""routing":"vxlan""#)
        );
        assert_eq!(
            back.nodes[0].ipam_dir,
            PathBuf::from("/var/lib/weir/weirtest/node1/ipam")
        );
    }
}
