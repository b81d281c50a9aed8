//! Reaching the agents' node API (`weir observe`, `weir datapath`): the
//! Nodes come from the API server, each agent is at its node's InternalIP
//! on the node API port. `internal_ip` and `select` are pure.

use k8s_openapi::api::core::v1::Node;
use weir_client::agent::{AgentClient, agent_url};
use weir_client::{Client, ListParams};

use crate::{Failed, Res};

/// A node's InternalIP (else its first address).
pub fn internal_ip(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .or_else(|| addresses.first())
        .map(|a| a.address.clone())
}

/// The (node name, agent URL) pairs to talk to: every node, or the one named.
pub fn select(nodes: &[Node], only: Option<&str>, port: u16) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        match internal_ip(node) {
            Some(ip) => out.push((name, agent_url(&ip, port))),
            None if only.is_some() => {
                return Err(Failed(format!(
                    "error: node {name:?} reports no address (status.addresses is empty); is its agent registered?"
                )));
            }
            None => eprintln!("warning: node {name:?} reports no address; skipped"),
        }
    }
    match only {
        Some(o) if out.is_empty() => Err(Failed(format!(
            "Error from server (NotFound): nodes {o:?} not found"
        ))),
        None if out.is_empty() => Err(Failed("No nodes found.".into())),
        _ => Ok(out),
    }
}

/// Lists the nodes and resolves the agents to talk to.
pub async fn agents(client: &Client, only: Option<&str>, port: u16) -> Res<Vec<(String, String)>> {
    let nodes = client
        .list::<Node>("", &ListParams::default())
        .await
        .map_err(|e| Failed(format!("error: cannot list nodes: {e}")))?;
    select(&nodes.items, only, port)
}

/// Connects to one node's agent, with an error that says where.
pub async fn connect(node: &str, url: &str) -> Res<AgentClient> {
    AgentClient::connect(url).await.map_err(|e| {
        Failed(format!(
            "error: cannot reach the agent of node {node} at {url} (is weir-agent running, and is --agent-port its --api-addr port?): {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, addrs: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).into(),
                            address: (*a).into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selects_agents_by_internal_ip() {
        let nodes = [
            node(
                "node1",
                &[("Hostname", "node1"), ("InternalIP", "172.30.0.11")],
            ),
            node("node2", &[("InternalIP", "172.30.0.12")]),
        ];
        let all = select(&nodes, None, 4244).ok().unwrap();
        assert_eq!(
            all,
            [
                ("node1".to_string(), "http://172.30.0.11:4244".to_string()),
                ("node2".to_string(), "http://172.30.0.12:4244".to_string())
            ]
        );
        let one = select(&nodes, Some("node2"), 9).ok().unwrap();
        assert_eq!(one, [("node2".into(), "http://172.30.0.12:9".into())]);
        let missing = select(&nodes, Some("node9"), 9).err().unwrap();
        assert_eq!(
            missing.0,
            r#"Error from server (NotFound): nodes "node9" not found"#
        );
        let bare = [node("n", &[])];
        assert!(select(&bare, Some("n"), 1).is_err());
    }
}
