//! Node registration, status heartbeats, and the per-node CNI configuration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Serialize;
use tracing::{debug, info, warn};

/// Facts about this machine reported in Node.status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub internal_ip: String,
    pub cpus: usize,
    pub memory_kib: u64,
    pub max_pods: u32,
    pub kernel_version: String,
    pub os_image: String,
    pub boot_id: String,
    pub machine_id: String,
    /// e.g. `containerd://1.6.20~ds1`.
    pub container_runtime_version: String,
}

/// Why the node could not be registered or configured.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Api(#[from] weir_client::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Node {node} has an invalid spec.podCIDR {cidr:?}: {source}")]
    BadPodCidr {
        node: String,
        cidr: String,
        #[source]
        source: ipnet::AddrParseError,
    },
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` from an os-release file.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// `MemTotal` in KiB from /proc/meminfo.
pub fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The architecture in Kubernetes' (Go's) spelling.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl NodeFacts {
    /// Reads the facts from /proc and /etc.
    pub fn gather(
        name: &str,
        internal_ip: &str,
        max_pods: u32,
        runtime: &crate::cri::RuntimeVersion,
    ) -> NodeFacts {
        NodeFacts {
            name: name.to_string(),
            internal_ip: internal_ip.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib: mem_total_kib(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            ),
            max_pods,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            machine_id: read_trimmed("/etc/machine-id"),
            container_runtime_version: format!(
                "{}://{}",
                runtime.runtime_name, runtime.runtime_version
            ),
        }
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &Time,
    previous: &[NodeCondition],
) -> NodeCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since),
    }
}

/// The Node status the agent reports: addresses, capacity, system info and
/// conditions, keeping transition times of unchanged conditions. The node is
/// Ready unless `runtime_error` says the container runtime does not answer.
pub fn node_status(
    facts: &NodeFacts,
    runtime_error: Option<&str>,
    previous: Option<&NodeStatus>,
    now: &Time,
) -> NodeStatus {
    let prev = previous
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(facts.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", facts.memory_kib)),
        ),
        ("pods".to_string(), Quantity(facts.max_pods.to_string())),
    ]
    .into();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: facts.internal_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: facts.name.clone(),
            },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "weir-agent has sufficient memory",
                now,
                &prev,
            ),
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "weir-agent has no disk pressure",
                now,
                &prev,
            ),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "weir-agent has sufficient PID",
                now,
                &prev,
            ),
            match runtime_error {
                None => condition(
                    "Ready",
                    true,
                    "KubeletReady",
                    "weir-agent is posting ready status",
                    now,
                    &prev,
                ),
                Some(e) => condition(
                    "Ready",
                    false,
                    "KubeletNotReady",
                    &format!("container runtime is down: {e}"),
                    now,
                    &prev,
                ),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: facts.container_runtime_version.clone(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("weir-agent/{}", env!("CARGO_PKG_VERSION")),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.machine_id.clone(),
            ..Default::default()
        }),
        ..previous.cloned().unwrap_or_default()
    }
}

fn new_node(facts: &NodeFacts) -> Node {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), facts.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(facts.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: None,
    }
}

/// Creates the Node if needed and writes its status once.
pub async fn register(api: &weir_client::Client, facts: &NodeFacts) -> Result<Node, NodeError> {
    register_with(api, facts, None).await
}

async fn register_with(
    api: &weir_client::Client,
    facts: &NodeFacts,
    runtime_error: Option<&str>,
) -> Result<Node, NodeError> {
    let node = match api.get_opt::<Node>("", &facts.name).await? {
        Some(n) => n,
        None => match api.create(&new_node(facts)).await {
            Ok(n) => {
                info!(node = %facts.name, "node registered");
                n
            }
            Err(weir_client::Error::AlreadyExists(_)) => api.get::<Node>("", &facts.name).await?,
            Err(e) => return Err(e.into()),
        },
    };
    write_status(api, node, facts, runtime_error).await
}

async fn write_status(
    api: &weir_client::Client,
    mut node: Node,
    facts: &NodeFacts,
    runtime_error: Option<&str>,
) -> Result<Node, NodeError> {
    node.status = Some(node_status(
        facts,
        runtime_error,
        node.status.as_ref(),
        &crate::clock::now_time(),
    ));
    Ok(api.update_status(&node).await?)
}

/// Posts the Node status every `every` (Ready only while containerd answers);
/// re-creates the Node if someone deleted it.
pub async fn heartbeat(
    api: weir_client::Client,
    cri: crate::cri::CriClient,
    facts: NodeFacts,
    every: Duration,
) {
    // Registration has just written the status: the first beat is due one period later.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let runtime_error = cri.version().await.err().map(|e| e.to_string());
        if let Some(error) = &runtime_error {
            warn!(error = %error, "container runtime does not answer; reporting the node not ready");
        }
        // Writes the status, re-creating the node if it was deleted.
        match register_with(&api, &facts, runtime_error.as_deref()).await {
            Ok(_) => debug!("node heartbeat"),
            Err(error) => warn!(error = %error, "node heartbeat failed"),
        }
    }
}

/// Waits until weir-control has allocated the node's pod CIDR.
pub async fn wait_for_pod_cidr(
    api: &weir_client::Client,
    node: &str,
) -> Result<ipnet::Ipv4Net, NodeError> {
    let mut logged = false;
    loop {
        match api.get_opt::<Node>("", node).await {
            Ok(Some(n)) => {
                let spec = n.spec.unwrap_or_default();
                let cidr = spec
                    .pod_cidr
                    .or_else(|| spec.pod_cidrs.and_then(|c| c.into_iter().next()));
                if let Some(cidr) = cidr.filter(|c| !c.is_empty()) {
                    return cidr.parse().map_err(|source| NodeError::BadPodCidr {
                        node: node.into(),
                        cidr,
                        source,
                    });
                }
            }
            Ok(None) => {}
            Err(error) => {
                warn!(error = %error, "cannot read the Node while waiting for its podCIDR")
            }
        }
        if !logged {
            info!(node, "waiting for weir-control to assign spec.podCIDR");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CniPlugin<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    #[serde(rename = "podCIDR")]
    pod_cidr: String,
    data_dir: String,
    mtu: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CniConfList<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: Vec<CniPlugin<'a>>,
}

/// The CNI network configuration list containerd hands to weir-cni.
pub fn cni_conflist(pod_cidr: ipnet::Ipv4Net, ipam_dir: &Path, mtu: u32) -> String {
    let list = CniConfList {
        cni_version: "1.0.0",
        name: "weir",
        plugins: vec![CniPlugin {
            type_: "weir-cni",
            pod_cidr: pod_cidr.to_string(),
            data_dir: ipam_dir.display().to_string(),
            mtu,
        }],
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string_pretty(&list).unwrap_or_default()
}

/// Name of the conflist file in the CNI configuration directory.
pub const CNI_CONFLIST: &str = "10-weir.conflist";

/// Writes the conflist atomically (temp file + rename), so containerd never
/// reads half a file.
pub fn write_cni_conflist(dir: &Path, content: &str) -> Result<PathBuf, NodeError> {
    let path = dir.join(CNI_CONFLIST);
    let tmp = dir.join(format!(".{CNI_CONFLIST}.tmp"));
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| NodeError::Write { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    std::fs::write(&tmp, content).map_err(werr(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(werr(&path))?;
    Ok(path)
}

/// The first interface name paired with `ip` in `addrs` (name, IPv4 address).
pub fn find_interface<I>(addrs: I, ip: Ipv4Addr) -> Option<String>
where
    I: IntoIterator<Item = (String, Option<Ipv4Addr>)>,
{
    addrs
        .into_iter()
        .find(|(_, a)| *a == Some(ip))
        .map(|(name, _)| name)
}

/// The interface of the current netns that carries `ip` (the node's `eth0`).
pub fn interface_with_address(ip: Ipv4Addr) -> Result<Option<String>, nix::Error> {
    let addrs = nix::ifaddrs::getifaddrs()?.map(|a| {
        let v4 = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        (a.interface_name, v4)
    });
    Ok(find_interface(addrs, ip))
}

/// Turns on IPv4 forwarding in the current network namespace (the node's:
/// /proc/sys/net follows the netns of the process that opens it).
pub fn enable_ip_forward() -> Result<(), NodeError> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    std::fs::write(path, "1").map_err(|source| NodeError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node1".into(),
            internal_ip: "172.30.0.11".into(),
            cpus: 2,
            memory_kib: 4_000_000,
            max_pods: 110,
            kernel_version: "6.18.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            boot_id: "b".into(),
            machine_id: "m".into(),
            container_runtime_version: "containerd://1.6.20".into(),
        }
    }

    #[test]
    fn conflist_matches_the_contract() {
        let s = cni_conflist(
            "10.244.1.0/24".parse().expect("cidr"),
            Path::new("/var/lib/weir/weir/node1/ipam"),
            1500,
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        let want = serde_json::json!({"cniVersion":"1.0.0","name":"weir","plugins":[{"type":"weir-cni",
            "podCIDR":"10.244.1.0/24","dataDir":"/var/lib/weir/weir/node1/ipam","mtu":1500}]});
        assert_eq!(v, want);
    }

    #[test]
    fn conflist_is_written_atomically() {
        let dir = std::env::temp_dir().join(format!("wagent-cni-test-{}", std::process::id()));
        let path = write_cni_conflist(&dir, "{}").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec![CNI_CONFLIST.to_string()], "no temp file left");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn status_reports_addresses_capacity_and_ready() {
        let t0 = Time(Timestamp::from_second(100).expect("t"));
        let st = node_status(&facts(), None, None, &t0);
        let addrs = st.addresses.clone().expect("addresses");
        assert_eq!(
            addrs[0],
            NodeAddress {
                type_: "InternalIP".into(),
                address: "172.30.0.11".into()
            }
        );
        assert_eq!(
            addrs[1],
            NodeAddress {
                type_: "Hostname".into(),
                address: "node1".into()
            }
        );
        let cap = st.capacity.clone().expect("capacity");
        assert_eq!(cap.get("pods"), Some(&Quantity("110".into())));
        assert_eq!(cap.get("memory"), Some(&Quantity("4000000Ki".into())));
        assert_eq!(cap.get("cpu"), Some(&Quantity("2".into())));
        let info = st.node_info.clone().expect("info");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        let ready = st
            .conditions
            .clone()
            .expect("conditions")
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");

        // A later heartbeat moves lastHeartbeatTime but keeps lastTransitionTime.
        let t1 = Time(Timestamp::from_second(200).expect("t"));
        let st2 = node_status(&facts(), None, Some(&st), &t1);
        let ready2 = st2
            .conditions
            .expect("conditions")
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready2.last_heartbeat_time, Some(t1));
        assert_eq!(ready2.last_transition_time, Some(t0));
    }

    #[test]
    fn runtime_down_means_not_ready() {
        let t0 = Time(Timestamp::from_second(100).expect("t"));
        let st = node_status(&facts(), Some("connection refused"), None, &t0);
        let ready = st
            .conditions
            .expect("conditions")
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("container runtime is down: connection refused")
        );
    }

    #[test]
    fn finds_the_interface_of_the_node_ip() {
        let addrs = || {
            vec![
                ("lo".to_string(), Some(Ipv4Addr::LOCALHOST)),
                ("eth0".to_string(), None),
                ("eth0".to_string(), Some(Ipv4Addr::new(172, 30, 0, 11))),
            ]
        };
        assert_eq!(
            find_interface(addrs(), Ipv4Addr::new(172, 30, 0, 11)).as_deref(),
            Some("eth0")
        );
        assert_eq!(find_interface(addrs(), Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn parses_proc_and_os_release() {
        assert_eq!(
            mem_total_kib("MemTotal:        8000000 kB\nMemFree: 1 kB\n"),
            8_000_000
        );
        assert_eq!(mem_total_kib("garbage"), 0);
        assert_eq!(
            os_image("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_image(""), "Linux");
    }
}
