//! Where a local cluster lives: names, ports and paths, derived from the
//! cluster name alone.
//!
//! Everything here is a pure function of `(cluster name, node count)`, so
//! `down` can find and remove a cluster's leftovers even when its state file
//! is gone (after a crash), and two clusters (`weir` for development,
//! `weirtest` for the end-to-end tests) can run side by side.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Root of every cluster's persistent state.
pub const STATE_ROOT: &str = "/var/lib/weir";
/// Root of every cluster's runtime state (sockets, containerd state).
pub const RUN_ROOT: &str = "/run/weir";
/// Where cgroup hierarchies are mounted (v1 ones and, on hybrid hosts, v2 at `unified/`).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether /sys/fs/cgroup itself is the cgroup2 hierarchy (pure cgroup v2 host).
fn pure_cgroup2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The cgroup2 hierarchy: /sys/fs/cgroup on pure v2 hosts, /sys/fs/cgroup/unified
/// on hybrid ones (like the project's machines).
pub fn cgroup2_root() -> PathBuf {
    if pure_cgroup2() {
        PathBuf::from(CGROUP_ROOT)
    } else {
        Path::new(CGROUP_ROOT).join("unified")
    }
}

/// Every mounted cgroup hierarchy (v1 controllers, named ones, and the v2 one).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    if pure_cgroup2() {
        return vec![PathBuf::from(CGROUP_ROOT)];
    }
    let Ok(rd) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    // Skip symlinks such as cpu,cpuacct -> cpu so nothing is visited twice.
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}
/// bpffs directory holding every cluster's pins.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/weir";

/// The registry port inside every node netns (the image names say 127.0.0.1:5000).
pub const NODE_REGISTRY_PORT: u16 = 5000;
/// Underlay subnet (/24) of the node netns and the external client.
pub const UNDERLAY_PREFIX: [u8; 3] = [172, 30, 0];
/// Address of the external client netns on the underlay.
pub const EXT_HOST: u8 = 100;
/// The cluster's pod CIDR: weir-control splits it into per-node pod CIDRs
/// and every agent is told it (NetworkPolicy treats unknown addresses in it
/// as pod addresses, not the outside world). Passed explicitly to both, so
/// they can never disagree.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Host-side TCP ports of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// API server TCP port on 127.0.0.1 (the CLI and the tests use it).
    pub api: u16,
    /// Embedded etcd client port (peer port is this + 1).
    pub etcd: u16,
    /// Registry in the host netns that xtask pushes to.
    pub registry: u16,
}

impl Ports {
    /// Ports for a cluster. `weir` gets the well-known ones; `weirtest` a fixed
    /// second set so the e2e tests can run while a dev cluster is up; any other
    /// name a slot derived from a stable hash of the name.
    pub fn for_cluster(name: &str) -> Ports {
        let slot: u16 = match name {
            "weir" => 0,
            "weirtest" => 1,
            other => 2 + (fnv1a(other.as_bytes()) % 60) as u16,
        };
        Ports {
            api: 6443 + slot * 100,
            etcd: 2379 + slot * 100,
            registry: 5000 + slot,
        }
    }
}

/// FNV-1a, 64 bit: a tiny stable hash (std's hasher is not stable across
/// releases, and the result here ends up in ports and cache keys).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Checks a cluster name. Names end up in link names (at most 15 bytes:
/// `<name>-n<i>`), netns names, cgroup names and paths, so they stay short and plain.
pub fn validate_cluster_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let starts_alpha = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if name.is_empty() || name.len() > 10 || !ok_chars || !starts_alpha {
        bail!(
            "invalid cluster name {name:?}: use 1-10 lower-case letters or digits, starting with a letter \
             (it becomes part of 15-byte network interface names)"
        );
    }
    if name.starts_with("wr") {
        bail!(
            "invalid cluster name {name:?}: names starting with \"wr\" collide with pod veth names"
        );
    }
    Ok(())
}

/// The whole layout of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub name: String,
    pub ports: Ports,
    /// The cgroup2 hierarchy the cluster's daemons and pods are tracked in.
    pub cgroup2_root: PathBuf,
}

/// The layout of node `index` (from 1) of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    pub index: u8,
    /// Node (and Kubernetes Node object) name, e.g. `node1`.
    pub name: String,
    /// Network namespace name, e.g. `weir-node1`.
    pub netns: String,
    /// Host side of the node's underlay veth (on the bridge).
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    pub cri_socket: PathBuf,
    pub runc_root: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    /// weir-cni's IPAM dataDir (the agent writes `<state-dir>/ipam` into the conflist).
    pub ipam_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    /// The agent's --cgroup-parent: pods live below it.
    pub cgroup_parent: String,
    /// cgroup2 group of the node's daemons (containerd and its shims, agent, registry),
    /// a sibling of the pods' parent so socket-level programs there never see them.
    pub daemon_cgroup: PathBuf,
}

impl Layout {
    /// The layout of cluster `name` on this machine.
    pub fn new(name: &str) -> Result<Layout> {
        Layout::with_cgroup2_root(name, cgroup2_root())
    }

    /// The layout with an explicit cgroup2 hierarchy (no probing of the machine).
    pub fn with_cgroup2_root(name: &str, cgroup2_root: PathBuf) -> Result<Layout> {
        validate_cluster_name(name)?;
        Ok(Layout {
            name: name.to_string(),
            ports: Ports::for_cluster(name),
            cgroup2_root,
        })
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.name)
    }
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(RUN_ROOT).join(&self.name)
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir().join("logs")
    }
    /// The state file: PIDs and paths of the running cluster (also read by the e2e tests).
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("cluster.json")
    }
    pub fn control_state_dir(&self) -> PathBuf {
        self.state_dir().join("control")
    }
    pub fn unix_socket(&self) -> PathBuf {
        self.run_dir().join("weir.sock")
    }
    pub fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.api)
    }
    pub fn agent_server_url(&self) -> String {
        format!("unix://{}", self.unix_socket().display())
    }
    /// Storage of the cluster's registry processes (one on the host, one per node).
    pub fn registry_storage(&self) -> PathBuf {
        self.state_dir().join("registry")
    }
    pub fn registry_host_config(&self) -> PathBuf {
        self.state_dir().join("registry-host.yml")
    }
    pub fn registry_node_config(&self) -> PathBuf {
        self.state_dir().join("registry-node.yml")
    }
    /// CNI bin_dir shared by the cluster's containerds: weir-cni and loopback.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.state_dir().join("cni-bin")
    }
    /// Underlay bridge in the host netns (no address on it).
    pub fn bridge(&self) -> String {
        format!("{}-br", self.name)
    }
    pub fn ext_netns(&self) -> String {
        format!("{}-ext", self.name)
    }
    pub fn ext_host_veth(&self) -> String {
        format!("{}-x", self.name)
    }
    pub fn ext_ip(&self) -> Ipv4Addr {
        let [a, b, c] = UNDERLAY_PREFIX;
        Ipv4Addr::new(a, b, c, EXT_HOST)
    }
    /// cgroup2 group of the control plane (weir-control, its etcd, the host registry).
    pub fn control_cgroup(&self) -> PathBuf {
        self.cgroup2_root
            .join(format!("weir-{}-control", self.name))
    }
    pub fn bpffs_dir(&self) -> PathBuf {
        PathBuf::from(BPFFS_ROOT).join(&self.name)
    }

    pub fn node(&self, index: u8) -> NodeLayout {
        let name = format!("node{index}");
        let state_dir = self.state_dir().join(&name);
        let run_dir = self.run_dir().join(&name);
        let [a, b, c] = UNDERLAY_PREFIX;
        NodeLayout {
            index,
            netns: format!("{}-{name}", self.name),
            host_veth: format!("{}-n{index}", self.name),
            ip: Ipv4Addr::new(a, b, c, 10 + index),
            containerd_config: state_dir.join("containerd.toml"),
            containerd_root: state_dir.join("containerd"),
            containerd_state: run_dir.join("containerd"),
            cri_socket: run_dir.join("containerd.sock"),
            runc_root: run_dir.join("runc"),
            cni_conf_dir: state_dir.join("cni").join("net.d"),
            pod_log_dir: state_dir.join("pods"),
            ipam_dir: state_dir.join("ipam"),
            bpffs_dir: self.bpffs_dir().join(&name),
            cgroup_parent: format!("/weir-{}-{name}", self.name),
            daemon_cgroup: self
                .cgroup2_root
                .join(format!("weir-{}-{name}-daemons", self.name)),
            state_dir,
            run_dir,
            name,
        }
    }

    /// Whether a top-level cgroup directory name belongs to this cluster:
    /// `weir-<cluster>-control`, `weir-<cluster>-node<i>` and `weir-<cluster>-node<i>-<suffix>`.
    /// Precise on purpose: cluster `weir` must not claim `weir-weirtest-node1`.
    pub fn owns_cgroup(&self, dir_name: &str) -> bool {
        let Some(rest) = dir_name.strip_prefix(&format!("weir-{}-", self.name)) else {
            return false;
        };
        if rest == "control" {
            return true;
        }
        let Some(node) = rest.strip_prefix("node") else {
            return false;
        };
        let (digits, suffix) = match node.find('-') {
            Some(i) => (&node[..i], Some(&node[i + 1..])),
            None => (node, None),
        };
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && suffix != Some("")
    }

    /// Whether a netns name belongs to this cluster (`<cluster>-node<i>`, `<cluster>-ext`).
    pub fn owns_netns(&self, ns: &str) -> bool {
        let Some(rest) = ns.strip_prefix(&format!("{}-", self.name)) else {
            return false;
        };
        rest == "ext"
            || rest
                .strip_prefix("node")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(name: &str) -> Layout {
        Layout::with_cgroup2_root(name, PathBuf::from("/sys/fs/cgroup/unified")).unwrap()
    }

    #[test]
    fn ports_are_fixed_for_known_clusters_and_distinct() {
        assert_eq!(
            Ports::for_cluster("weir"),
            Ports {
                api: 6443,
                etcd: 2379,
                registry: 5000
            }
        );
        assert_eq!(
            Ports::for_cluster("weirtest"),
            Ports {
                api: 6543,
                etcd: 2479,
                registry: 5001
            }
        );
        let other = Ports::for_cluster("demo");
        assert_ne!(other, Ports::for_cluster("weir"));
        assert_ne!(other, Ports::for_cluster("weirtest"));
        // Stable: the same name always maps to the same ports.
        assert_eq!(other, Ports::for_cluster("demo"));
    }

    #[test]
    fn cluster_names_are_checked() {
        let cases = [
            ("weir", true),
            ("weirtest", true),
            ("a1", true),
            ("", false),
            ("Weir", false),
            ("weir-x", false),
            ("1abc", false),
            ("abcdefghijk", false), // 11 bytes: "<name>-n10" would not fit IFNAMSIZ
            ("wrx", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_cluster_name(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn node_layout_follows_the_contract() {
        let l = layout("weir");
        let n = l.node(1);
        assert_eq!(n.netns, "weir-node1");
        assert_eq!(n.ip, Ipv4Addr::new(172, 30, 0, 11));
        assert_eq!(
            n.cri_socket,
            PathBuf::from("/run/weir/weir/node1/containerd.sock")
        );
        assert_eq!(n.state_dir, PathBuf::from("/var/lib/weir/weir/node1"));
        assert_eq!(n.bpffs_dir, PathBuf::from("/sys/fs/bpf/weir/weir/node1"));
        assert_eq!(n.cgroup_parent, "/weir-weir-node1");
        assert_eq!(l.agent_server_url(), "unix:///run/weir/weir/weir.sock");
        assert_eq!(l.node(2).ip, Ipv4Addr::new(172, 30, 0, 12));
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        let l = layout("abcdefghij");
        for name in [l.bridge(), l.ext_host_veth(), l.node(99).host_veth] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    #[test]
    fn cgroup_ownership_is_exact() {
        let weir = layout("weir");
        let cases = [
            ("weir-weir-control", true),
            ("weir-weir-node1", true),
            ("weir-weir-node12-daemons", true),
            ("weir-weirtest-node1", false),
            ("weir-weirtest-control", false),
            ("weir-weir-node", false),
            ("weir-weir-nodex", false),
            ("weir-weir-node1-", false),
            ("weir-weir", false),
            ("system.slice", false),
        ];
        for (dir, owned) in cases {
            assert_eq!(weir.owns_cgroup(dir), owned, "{dir}");
        }
    }

    #[test]
    fn netns_ownership_is_exact() {
        let weir = layout("weir");
        let cases = [
            ("weir-node1", true),
            ("weir-ext", true),
            ("weir-node", false),
            ("weirtest-node1", false),
            ("weir-node1x", false),
            ("cni-1234", false),
        ];
        for (ns, owned) in cases {
            assert_eq!(weir.owns_netns(ns), owned, "{ns}");
        }
    }
}
