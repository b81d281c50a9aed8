//! The compiler's inputs, reduced to what policy needs, and their
//! conversion from Kubernetes objects.
//!
//! The compiler never sees a whole `Pod`: the agent's watches keep these
//! small records, so a pod status churn that changes none of them causes no
//! recompile.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use weir_ebpf_common::policy::IPPROTO_SCTP;
use weir_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP};

/// The label the API server puts on every Namespace (its own name), which
/// `namespaceSelector`s use to pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespaced object's name (pod or policy).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port with a name, which policies can refer to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    /// IP protocol number (TCP when the container port has none).
    pub proto: u8,
    pub port: u16,
}

/// What policy needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub pod: ObjectRef,
    pub labels: BTreeMap<String, String>,
    /// The pod's IPv4 address; `None` until the CNI assigned one, and for
    /// pods that finished (their address may already belong to another pod).
    pub ip: Option<Ipv4Addr>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `spec.hostNetwork`: such a pod has the node's address and identity;
    /// policies do not apply to it (as in Kubernetes).
    pub host_network: bool,
    /// Sorted named container ports, for `ports[].port: <name>`.
    pub named_ports: Vec<NamedPort>,
}

impl PodInfo {
    /// Reduces a Pod. `None` when it has no namespace or name (not a stored
    /// object).
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let reference = ObjectRef::new(meta.namespace.clone()?, meta.name.clone()?);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|_| !finished);
        let mut named_ports: Vec<NamedPort> = spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    proto: protocol_number(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok().filter(|p| *p != 0)?,
                })
            })
            .collect();
        named_ports.sort();
        named_ports.dedup();
        Some(PodInfo {
            pod: reference,
            labels: meta.labels.clone().unwrap_or_default(),
            ip,
            node: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            named_ports,
        })
    }

    /// The port number `name` has for `proto` on this pod, if any.
    pub fn resolve(&self, name: &str, proto: u8) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// What policy needs of a namespace: its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// Always includes [`NAMESPACE_NAME_LABEL`] (added if the object lacks it).
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn new(name: impl Into<String>, labels: BTreeMap<String, String>) -> Self {
        let name = name.into();
        let mut labels = labels;
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Self { name, labels }
    }

    pub fn from_namespace(ns: &Namespace) -> Option<NamespaceInfo> {
        Some(Self::new(
            ns.metadata.name.clone()?,
            ns.metadata.labels.clone().unwrap_or_default(),
        ))
    }
}

/// The node the compiler compiles for, and the addresses that are nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNetwork {
    /// This node's name (pods with this `spec.nodeName` are its endpoints).
    pub name: String,
    /// This node's own addresses: its node address and the pod gateway
    /// (the address the host side of every pod veth has). Identity HOST.
    pub host_ips: Vec<Ipv4Addr>,
    /// Other nodes' addresses (identity REMOTE_NODE).
    pub remote_node_ips: Vec<Ipv4Addr>,
    /// The cluster's pod CIDR: addresses in it that no known pod holds get
    /// identity UNMANAGED instead of WORLD.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// Everything one compile reads.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    pub policies: &'a [NetworkPolicy],
    pub pods: &'a [PodInfo],
    pub namespaces: &'a [NamespaceInfo],
    pub node: &'a NodeNetwork,
}

/// `protocol` of a NetworkPolicy or container port: TCP when absent, `None`
/// when unknown.
pub fn protocol_number(protocol: Option<&str>) -> Option<u8> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        "SCTP" => Some(IPPROTO_SCTP),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(phase: &str, ip: Option<&str>, host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            "spec": {"nodeName": "node1", "hostNetwork": host_network, "containers": [
                {"name": "c1", "ports": [{"name": "http", "containerPort": 8080},
                                         {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                         {"containerPort": 9000}]},
                {"name": "c2", "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "SCTP"}]}]},
            "status": {"phase": phase, "podIP": ip},
        }))
        .expect("valid Pod")
    }

    #[test]
    fn pods_reduce_to_what_policy_needs() {
        let running =
            PodInfo::from_pod(&pod("Running", Some("10.244.1.10"), false)).expect("named");
        assert_eq!(running.pod, ObjectRef::new("x", "a"));
        assert_eq!(running.ip, Some(Ipv4Addr::new(10, 244, 1, 10)));
        assert_eq!(running.node.as_deref(), Some("node1"));
        assert!(!running.host_network);
        assert_eq!(running.resolve("http", IPPROTO_TCP), Some(8080));
        assert_eq!(running.resolve("http", IPPROTO_UDP), None);
        assert_eq!(running.resolve("dns", IPPROTO_UDP), Some(53));
        assert_eq!(running.resolve("metrics", IPPROTO_SCTP), Some(9090));
        assert_eq!(running.named_ports.len(), 3, "unnamed ports are not kept");

        let cases = [
            ("Pending", None, false, None),
            ("Succeeded", Some("10.244.1.10"), false, None),
            ("Failed", Some("10.244.1.10"), false, None),
            ("Running", Some("fd00::1"), false, None),
            ("Running", Some("172.30.0.11"), true, Some("172.30.0.11")),
        ];
        for (phase, ip, host, want) in cases {
            let info = PodInfo::from_pod(&pod(phase, ip, host)).expect("named");
            assert_eq!(
                info.ip,
                want.map(|w| w.parse().expect("ip")),
                "{phase} {ip:?}"
            );
            assert_eq!(info.host_network, host);
        }
    }

    #[test]
    fn namespaces_always_carry_their_name_label() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "y"}})).expect("ns");
        let info = NamespaceInfo::from_namespace(&ns).expect("named");
        assert_eq!(
            info.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("y")
        );
    }
}
