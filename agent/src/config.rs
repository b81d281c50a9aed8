//! Command-line flags, parsed into a plain [`Config`] that the rest of the agent reads.

use std::net::{Ipv4Addr, SocketAddr};
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
    /// Seconds between scans of the runtime for sandboxes whose pod is gone.
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
    /// The cluster's pod CIDR (weir-control's `--cluster-cidr`): NetworkPolicy
    /// treats addresses in it that no known pod holds as unmanaged pod
    /// addresses rather than the outside world.
    #[arg(long)]
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// Capacity of the NetworkPolicy ipcache map (WEIR_IPCACHE): pod and node
    /// addresses of the cluster plus ipBlock prefixes. Applies when the map
    /// is created (a pinned map keeps its size until the node's bpffs
    /// directory is removed).
    #[arg(long, default_value_t = weir_datapath::policy::PolicyLimits::default().ipcache_max_entries)]
    pub policy_ipcache_max_entries: u32,
    /// Capacity of the NetworkPolicy endpoints map (WEIR_POL_EP): pods of
    /// this node (at most 65535).
    #[arg(long, default_value_t = weir_datapath::policy::PolicyLimits::default().endpoints_max_entries)]
    pub policy_endpoints_max_entries: u32,
    /// Capacity of the NetworkPolicy rule map (WEIR_POLICY): allowed
    /// (pod, direction, peer, protocol, port block) entries of this node.
    #[arg(long, default_value_t = weir_datapath::policy::PolicyLimits::default().policy_max_entries)]
    pub policy_max_entries: u32,
    /// Masquerade pod connections leaving the cluster: their source becomes
    /// the node's address (`--masquerade false`: pods keep theirs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub masquerade: bool,
    /// Deliver traffic between pods of this node straight into the
    /// destination pod's network namespace (`bpf_redirect_peer` from the
    /// source pod's veth, like Cilium's BPF host routing). It bypasses the
    /// node's routing and its netfilter FORWARD and POSTROUTING chains;
    /// `--pod-redirect false` keeps every packet on the node's stack.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_redirect: bool,
    /// How pod traffic reaches other nodes: `native` (routes via their
    /// InternalIPs, one L2 segment) or `vxlan` (encapsulated; pods get
    /// `--mtu` minus 50, the VXLAN overhead).
    #[arg(long, value_enum, default_value_t = crate::overlay::RoutingMode::Native)]
    pub routing_mode: crate::overlay::RoutingMode,
    /// How NodePort/externalIP/LoadBalancer traffic reaches backends on other
    /// nodes: `snat` (replies come back through the node the client reached)
    /// or `dsr` (direct server return: the client's address is kept and the
    /// backend's node replies directly; needs `--routing-mode native`). A
    /// Service's `service.weir.io/forwarding-mode` annotation overrides it.
    #[arg(long, default_value = "snat")]
    pub lb_mode: weir_datapath::plan::LbMode,
    /// Destinations pods reach with their own address (comma-separated
    /// CIDRs; the cluster's pod CIDR by default). Node addresses are added
    /// to these automatically.
    #[arg(
        long = "non-masquerade-cidr",
        value_delimiter = ',',
        default_value = "10.244.0.0/16"
    )]
    pub non_masquerade_cidrs: Vec<ipnet::Ipv4Net>,
    /// Where the node API (`weir observe`, `weir datapath`) listens; default
    /// the node IP, port 4244.
    #[arg(long)]
    pub api_addr: Option<SocketAddr>,
    /// Where the Prometheus endpoint (`/metrics`) listens; default the node
    /// IP, port 9962.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// How the NodePort XDP fast path is attached to the node interface:
    /// `auto` (generic on a veth, whose peer may not accept XDP frames;
    /// native elsewhere), `native` or `generic`.
    #[arg(long, default_value = "auto")]
    pub xdp_mode: weir_datapath::XdpAttachMode,
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
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    pub policy_limits: weir_datapath::policy::PolicyLimits,
    /// Whether pod connections leaving the cluster are masqueraded.
    pub masquerade: bool,
    /// Whether local pod-to-pod traffic skips the node's stack.
    pub pod_redirect: bool,
    /// Native routing or VXLAN.
    pub routing_mode: crate::overlay::RoutingMode,
    /// `--lb-mode` (DSR only with native routing).
    pub lb_mode: weir_datapath::plan::LbMode,
    /// Destinations that are never masqueraded (besides the nodes).
    pub non_masquerade_cidrs: std::collections::BTreeSet<ipnet::Ipv4Net>,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// XDP attach mode of the node interface.
    pub xdp_mode: weir_datapath::XdpAttachMode,
}

/// Default port of the node API (Hubble's, for familiarity).
pub const DEFAULT_API_PORT: u16 = weir_client::agent::DEFAULT_PORT;
/// Default port of the metrics endpoint.
pub const DEFAULT_METRICS_PORT: u16 = 9962;

/// A flag value the agent cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "--node-name {0:?} is not a valid node name (lower-case letters, digits, '-' and '.', at most 253)"
    )]
    NodeName(String),
    #[error(
        "--cgroup-parent {0:?} must be an absolute cgroup path like /weir-weir-node1 (no '..')"
    )]
    CgroupParent(String),
    #[error(
        "--lb-mode dsr needs --routing-mode native: over VXLAN the backend's node cannot reply to the client directly"
    )]
    DsrOverVxlan,
    #[error("--{flag} {value} is out of range (1..={max})")]
    PolicyLimit {
        flag: &'static str,
        value: u32,
        max: u32,
    },
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

fn valid_cgroup_parent(path: &str) -> bool {
    path.starts_with('/') && path.len() > 1 && !path.split('/').any(|c| c == "..")
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(a: Args) -> Result<Self, ConfigError> {
        if !valid_node_name(&a.node_name) {
            return Err(ConfigError::NodeName(a.node_name));
        }
        if !valid_cgroup_parent(&a.cgroup_parent) {
            return Err(ConfigError::CgroupParent(a.cgroup_parent));
        }
        let policy_limits = policy_limits(&a)?;
        if a.lb_mode == weir_datapath::plan::LbMode::Dsr
            && a.routing_mode == crate::overlay::RoutingMode::Vxlan
        {
            return Err(ConfigError::DsrOverVxlan);
        }
        Ok(Config {
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
            cluster_cidr: a.cluster_cidr.map(|c| c.trunc()),
            policy_limits,
            masquerade: a.masquerade,
            pod_redirect: a.pod_redirect,
            routing_mode: a.routing_mode,
            lb_mode: a.lb_mode,
            non_masquerade_cidrs: a.non_masquerade_cidrs.iter().map(|n| n.trunc()).collect(),
            api_addr: a
                .api_addr
                .unwrap_or(SocketAddr::new(a.node_ip.into(), DEFAULT_API_PORT)),
            metrics_addr: a
                .metrics_addr
                .unwrap_or(SocketAddr::new(a.node_ip.into(), DEFAULT_METRICS_PORT)),
            xdp_mode: a.xdp_mode,
        })
    }
}

/// The NetworkPolicy map sizes, each at least 1; endpoint ids are 16-bit.
fn policy_limits(a: &Args) -> Result<weir_datapath::policy::PolicyLimits, ConfigError> {
    let check = |flag, value: u32, max: u32| {
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::PolicyLimit { flag, value, max })
        }
    };
    Ok(weir_datapath::policy::PolicyLimits {
        ipcache_max_entries: check(
            "policy-ipcache-max-entries",
            a.policy_ipcache_max_entries,
            u32::MAX,
        )?,
        endpoints_max_entries: check(
            "policy-endpoints-max-entries",
            a.policy_endpoints_max_entries,
            u32::from(u16::MAX),
        )?,
        policy_max_entries: check("policy-max-entries", a.policy_max_entries, u32::MAX)?,
    })
}

impl Config {
    /// Where weir-cni keeps its IP allocations for this node.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's required flags.
    const CONTRACT: [(&str, &str); 9] = [
        ("--node-name", "node1"),
        ("--server", "unix:///run/weir/weir/weir.sock"),
        ("--node-ip", "172.30.0.11"),
        ("--cri-socket", "/run/c.sock"),
        ("--state-dir", "/var/lib/x"),
        ("--bpffs-dir", "/sys/fs/bpf/weir/weir/node1"),
        ("--cgroup-parent", "/weir-weir-node1"),
        ("--cni-conf-dir", "/etc/cni"),
        ("--pod-log-dir", "/var/log/pods"),
    ];

    /// The contract's flags followed by `extra` arguments, parsed.
    fn with_flags(extra: &[&str]) -> Result<Args, clap::Error> {
        let argv = std::iter::once("weir-agent")
            .chain(CONTRACT.iter().flat_map(|(f, v)| [*f, *v]))
            .chain(extra.iter().copied());
        Args::try_parse_from(argv)
    }

    /// The contract's flags, with `overrides` (flag, value) replacing defaults.
    fn args(overrides: &[(&str, &str)]) -> Args {
        let mut flags = CONTRACT.to_vec();
        for (flag, value) in overrides {
            if let Some(f) = flags.iter_mut().find(|(f, _)| f == flag) {
                f.1 = value;
            }
        }
        let argv = std::iter::once("weir-agent").chain(flags.iter().flat_map(|(f, v)| [*f, *v]));
        Args::try_parse_from(argv).expect("parse")
    }

    #[test]
    fn contract_flags_parse() {
        let c = Config::try_from(args(&[])).expect("valid");
        assert_eq!(c.node_name, "node1");
        assert_eq!(c.node_ip, Ipv4Addr::new(172, 30, 0, 11));
        assert_eq!(c.ipam_dir(), PathBuf::from("/var/lib/x/ipam"));
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert_eq!(c.pod_poll, Duration::from_secs(1));
        assert_eq!(c.netns, None);
        assert!(c.masquerade);
        assert_eq!(c.routing_mode, crate::overlay::RoutingMode::Native);
        let cluster: ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.non_masquerade_cidrs, [cluster].into());
        assert_eq!(c.api_addr, "172.30.0.11:4244".parse().unwrap());
        assert_eq!(c.metrics_addr, "172.30.0.11:9962".parse().unwrap());
        assert_eq!(c.xdp_mode, weir_datapath::XdpAttachMode::Auto);
    }

    #[test]
    fn xdp_mode_flag() {
        let with = |mode: &str| with_flags(&[&format!("--xdp-mode={mode}")]);
        use weir_datapath::XdpAttachMode::{Generic, Native};
        for (flag, want) in [("native", Native), ("generic", Generic)] {
            let c = Config::try_from(with(flag).expect("parse")).expect("valid");
            assert_eq!(c.xdp_mode, want, "{flag}");
        }
        let error = with("drv").expect_err("unknown mode").to_string();
        assert!(
            error.contains("expected auto, native or generic"),
            "{error}"
        );
    }

    #[test]
    fn pod_redirect_flag() {
        let with = with_flags;
        let on = Config::try_from(with(&[]).expect("parse")).expect("valid");
        assert!(on.pod_redirect, "on by default");
        let off = Config::try_from(with(&["--pod-redirect", "false"]).expect("parse"));
        assert!(!off.expect("valid").pod_redirect);
        let on = Config::try_from(with(&["--pod-redirect=true"]).expect("parse"));
        assert!(on.expect("valid").pod_redirect);
        assert!(with(&["--pod-redirect", "maybe"]).is_err(), "not a bool");
    }

    #[test]
    fn masquerade_flags_parse() {
        let argv = [
            "weir-agent",
            "--node-name",
            "n",
            "--server",
            "s",
            "--node-ip",
            "172.30.0.11",
            "--cri-socket",
            "c",
            "--state-dir",
            "d",
            "--bpffs-dir",
            "b",
            "--cgroup-parent",
            "/p",
            "--cni-conf-dir",
            "e",
            "--pod-log-dir",
            "l",
            "--masquerade",
            "false",
            "--routing-mode",
            "vxlan",
            "--non-masquerade-cidr",
            "10.0.0.0/8,192.168.1.7/24",
        ];
        let c = Config::try_from(Args::try_parse_from(argv).expect("parse")).expect("valid");
        assert!(!c.masquerade);
        assert_eq!(c.routing_mode, crate::overlay::RoutingMode::Vxlan);
        let want: std::collections::BTreeSet<ipnet::Ipv4Net> = [
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.0/24".parse().unwrap(),
        ]
        .into();
        assert_eq!(c.non_masquerade_cidrs, want);
        let mut bad = argv.to_vec();
        *bad.last_mut().unwrap() = "10.0.0.0/33";
        assert!(Args::try_parse_from(bad).is_err(), "a bad CIDR is refused");
        assert_eq!(c.lb_mode, weir_datapath::plan::LbMode::Snat, "default");
        // DSR needs native routing: refused with VXLAN, accepted without.
        let dsr = [argv.as_slice(), &["--lb-mode", "dsr"]].concat();
        let error = Config::try_from(Args::try_parse_from(&dsr).expect("parse"))
            .expect_err("dsr over vxlan");
        assert_eq!(error, ConfigError::DsrOverVxlan);
        assert!(
            error.to_string().contains("--routing-mode native"),
            "{error}"
        );
        let native: Vec<&str> = dsr
            .iter()
            .map(|a| if *a == "vxlan" { "native" } else { a })
            .collect();
        let c = Config::try_from(Args::try_parse_from(native).expect("parse")).expect("valid");
        assert_eq!(c.lb_mode, weir_datapath::plan::LbMode::Dsr);
        let bad = [argv.as_slice(), &["--lb-mode", "ipip"]].concat();
        let error = Args::try_parse_from(bad)
            .expect_err("unknown mode")
            .to_string();
        assert!(error.contains("use snat or dsr"), "{error}");
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            (
                ("--node-name", "Node_1"),
                ConfigError::NodeName("Node_1".into()),
            ),
            (("--node-name", ""), ConfigError::NodeName(String::new())),
            (
                ("--cgroup-parent", "weir"),
                ConfigError::CgroupParent("weir".into()),
            ),
            (
                ("--cgroup-parent", "/a/../b"),
                ConfigError::CgroupParent("/a/../b".into()),
            ),
        ];
        for (flag, want) in cases {
            let got = Config::try_from(args(&[flag])).expect_err("invalid");
            assert_eq!(got, want, "{flag:?}");
        }
    }

    #[test]
    fn policy_flags() {
        let c = Config::try_from(args(&[])).expect("valid");
        assert_eq!(
            c.policy_limits,
            weir_datapath::policy::PolicyLimits::default()
        );
        assert_eq!(c.cluster_cidr, None);
        let argv = [
            "weir-agent",
            "--node-name=node1",
            "--server=unix:///s",
            "--node-ip=172.30.0.11",
            "--cri-socket=/c",
            "--state-dir=/s",
            "--bpffs-dir=/b",
            "--cgroup-parent=/w",
            "--cni-conf-dir=/e",
            "--pod-log-dir=/l",
            "--cluster-cidr=10.244.7.0/16",
            "--policy-max-entries=1000",
            "--policy-endpoints-max-entries=70000",
        ];
        let got = Config::try_from(Args::try_parse_from(argv).expect("parse"));
        assert_eq!(
            got.expect_err("endpoint ids are 16-bit"),
            ConfigError::PolicyLimit {
                flag: "policy-endpoints-max-entries",
                value: 70000,
                max: 65535
            }
        );
        let argv: Vec<&str> = argv.iter().copied().take(argv.len() - 1).collect();
        let c = Config::try_from(Args::try_parse_from(argv).expect("parse")).expect("valid");
        assert_eq!(c.policy_limits.policy_max_entries, 1000);
        assert_eq!(c.cluster_cidr, Some("10.244.0.0/16".parse().expect("cidr")));
    }
}
