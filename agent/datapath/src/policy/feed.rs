//! From the objects the agent watches to the compiler's inputs: the node
//! facts ([`NodeNetwork`]) come from the Node objects, pods and namespaces
//! are reduced by [`PodInfo::from_pod`] and [`NamespaceInfo::from_namespace`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

use super::model::NodeNetwork;

/// This node's and the other nodes' addresses, from the Node objects:
/// `InternalIP` addresses, plus each node's pod gateway (the first address
/// of its `spec.podCIDR`, which weir-cni puts on the host side of every
/// pod veth, so a node's probes come from it).
pub fn node_network(nodes: &[Node], local: &str, cluster_cidr: Option<Ipv4Net>) -> NodeNetwork {
    let mut host_ips = Vec::new();
    let mut remote_node_ips = Vec::new();
    for node in nodes {
        let mut ips: Vec<Ipv4Addr> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        ips.extend(
            node.spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| c.parse::<Ipv4Net>().ok())
                .and_then(|c| c.hosts().next()),
        );
        if node.metadata.name.as_deref() == Some(local) {
            host_ips.extend(ips);
        } else {
            remote_node_ips.extend(ips);
        }
    }
    host_ips.sort();
    host_ips.dedup();
    remote_node_ips.sort();
    remote_node_ips.dedup();
    NodeNetwork {
        name: local.to_string(),
        host_ips,
        remote_node_ips,
        cluster_cidr,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
        }))
        .expect("valid Node")
    }

    #[test]
    fn node_addresses_and_gateways() {
        let nodes = [
            node("node1", "172.30.0.11", Some("10.244.1.0/24")),
            node("node2", "172.30.0.12", Some("10.244.2.0/24")),
            // Not yet given a podCIDR.
            node("node3", "172.30.0.13", None),
        ];
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let net = node_network(
            &nodes,
            "node1",
            Some("10.244.0.0/16".parse().expect("cidr")),
        );
        assert_eq!(net.host_ips, [ip("10.244.1.1"), ip("172.30.0.11")]);
        assert_eq!(
            net.remote_node_ips,
            [ip("10.244.2.1"), ip("172.30.0.12"), ip("172.30.0.13")]
        );
        assert_eq!(net.name, "node1");
    }
}
