//! Command-line flags, parsed into a plain [`Config`] that the rest of the agent reads.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// weir-agent: registers a node, runs its pods through containerd's CRI and
/// keeps the eBPF datapath in sync with Services.
#[derive(Debug, Parser)]
#[command(name = "weir-agent", version)]
pub struct Args {
    /// Name of the Node object this agent registers and serves.
    #[arg(long)]
    pub node_name: String,
    /// API server address: `unix:///path/to/weir.sock` or `http://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// Network namespace to enter before anything else (e.g. /run/netns/weir-node1).
    /// Without it the agent stays in its current namespace.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// The node's InternalIP (its address on the underlay).
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// containerd's CRI socket.
    #[arg(long)]
    pub cri_socket: PathBuf,
    /// Per-node state (IPAM data for the CNI plugin lives under it).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// bpffs directory where the datapath pins its maps.
    #[arg(long)]
    pub bpffs_dir: PathBuf,
    /// cgroup path (relative to each hierarchy's root) under which pod cgroups live.
    #[arg(long)]
    pub cgroup_parent: String,
    /// Directory containerd reads CNI network configurations from.
    #[arg(long)]
    pub cni_conf_dir: PathBuf,
    /// Directory for pod logs (`<dir>/<namespace>_<name>_<uid>/<container>/<restart>.log`).
    #[arg(long)]
    pub pod_log_dir: PathBuf,
    /// Root of the cgroup file systems.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Seconds between Node status heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// Seconds between full resyncs of pods against the runtime.
    #[arg(long, default_value_t = 10)]
    pub resync_seconds: u64,
    /// Milliseconds between a pod worker's polls of the runtime (container exits are found this way).
    #[arg(long, default_value_t = 1000)]
    pub pod_poll_ms: u64,
    /// Pod capacity reported in Node.status.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// MTU written into the CNI configuration.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
}

/// The agent's configuration, as plain data.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub server: String,
    pub netns: Option<PathBuf>,
    pub node_ip: Ipv4Addr,
    pub cri_socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs_dir: PathBuf,
    pub cgroup_parent: String,
    pub cgroup_root: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub heartbeat: Duration,
    pub resync: Duration,
    pub pod_poll: Duration,
    pub max_pods: u32,
    pub mtu: u32,
}

impl From<Args> for Config {
    fn from(a: Args) -> Self {
        Config {
            node_name: a.node_name,
            server: a.server,
            netns: a.netns,
            node_ip: a.node_ip,
            cri_socket: a.cri_socket,
            state_dir: a.state_dir,
            bpffs_dir: a.bpffs_dir,
            cgroup_parent: a.cgroup_parent,
            cgroup_root: a.cgroup_root,
            cni_conf_dir: a.cni_conf_dir,
            pod_log_dir: a.pod_log_dir,
            heartbeat: Duration::from_secs(a.heartbeat_seconds.max(1)),
            resync: Duration::from_secs(a.resync_seconds.max(1)),
            pod_poll: Duration::from_millis(a.pod_poll_ms.max(100)),
            max_pods: a.max_pods,
            mtu: a.mtu,
        }
    }
}

impl Config {
    /// Where weir-cni keeps its IP allocations for this node.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}
