//! Routes to the other nodes' pod CIDRs.
//!
//! Each node owns one pod CIDR (Node.spec.podCIDR) and reaches its own pods
//! through per-pod /32 routes that weir-cni installs. To reach a pod on
//! another node, the node netns needs `<podCIDR> via <that node's InternalIP>`.
//! The agent keeps exactly those routes, tagged with its own routing protocol
//! number so it never touches a route it did not add.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, info, warn};
use weir_client::{ListParams, WatchEvent, WatchParams};

/// rtnetlink protocol number marking routes the agent owns (`ip route` shows
/// it as `proto 87`). Values above 4 and unused by routing daemons are free.
pub const ROUTE_PROTOCOL: u8 = 87;
const MAIN_TABLE: u8 = 254;

/// A route management step failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink: cannot {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// The routes other nodes need: pod CIDR -> node InternalIP, for every node
/// but `self_name` that has both. Nodes with an unparsable CIDR or address are
/// skipped (fail closed: no route rather than a wrong one).
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    self_name: &str,
) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut routes = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Net>().ok());
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        if let (Some(cidr), Some(ip)) = (cidr, ip) {
            routes.insert(cidr.trunc(), ip);
        }
    }
    routes
}

/// What to change so that `observed` (the agent's routes now) becomes `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Add or replace (`ip route replace`).
    pub replace: Vec<(Ipv4Net, Ipv4Addr)>,
    pub delete: Vec<(Ipv4Net, Ipv4Addr)>,
}

pub fn plan_routes(
    desired: &BTreeMap<Ipv4Net, Ipv4Addr>,
    observed: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> RoutePlan {
    RoutePlan {
        replace: desired
            .iter()
            .filter(|(c, gw)| observed.get(c) != Some(gw))
            .map(|(c, gw)| (*c, *gw))
            .collect(),
        delete: observed
            .iter()
            .filter(|(c, _)| !desired.contains_key(c))
            .map(|(c, gw)| (*c, *gw))
            .collect(),
    }
}

fn message(cidr: Ipv4Net, gateway: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .gateway(gateway)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

/// The agent's routes in the main table of the current netns.
async fn observed_routes(handle: &Handle) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, RouteError> {
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|source| RouteError::Netlink {
            what: "list routes".into(),
            source,
        })?;
    let mut routes = BTreeMap::new();
    for m in msgs {
        if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) || m.header.table != MAIN_TABLE
        {
            continue;
        }
        let (mut dst, mut gw) = (None, None);
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                _ => {}
            }
        }
        if let (Some(dst), Some(gw)) = (dst, gw)
            && let Ok(net) = Ipv4Net::new(dst, m.header.destination_prefix_length)
        {
            routes.insert(net, gw);
        }
    }
    Ok(routes)
}

async fn apply(handle: &Handle, plan: &RoutePlan) -> Result<(), RouteError> {
    for (cidr, gw) in &plan.replace {
        handle
            .route()
            .add(message(*cidr, *gw))
            .replace()
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                what: format!("add route {cidr} via {gw}"),
                source,
            })?;
        info!(%cidr, via = %gw, "route to another node's pods set");
    }
    for (cidr, gw) in &plan.delete {
        match handle.route().del(message(*cidr, *gw)).execute().await {
            Ok(()) => info!(%cidr, via = %gw, "route to a removed node's pods deleted"),
            // ESRCH: already gone.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {}
            Err(source) => {
                return Err(RouteError::Netlink {
                    what: format!("delete route {cidr} via {gw}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Keeps the routes to other nodes' pod CIDRs in sync with the Node objects.
/// Runs in the node's netns (the netlink socket is opened by this task, whose
/// threads all entered that namespace before the runtime started).
pub async fn run_route_sync(api: weir_client::Client, self_name: String) -> Result<(), RouteError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
    tokio::spawn(connection);
    let mut backoff = Duration::from_millis(500);
    loop {
        let list = match api.list::<Node>("", &ListParams::default()).await {
            Ok(l) => l,
            Err(error) => {
                warn!(error = %error, "cannot list Nodes for pod routes");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let mut nodes: HashMap<String, Node> = list
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .collect();
        sync(&handle, &nodes, &self_name).await;
        let mut rv = list.resource_version;
        let params = WatchParams::default().from_version(rv.clone());
        let mut stream = match api.watch::<Node>("", &params).await {
            Ok(s) => s,
            Err(error) => {
                warn!(error = %error, "cannot watch Nodes for pod routes");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            let (event, version) = match item {
                Ok(x) => x,
                Err(error) => {
                    debug!(error = %error, "node watch ended; re-listing");
                    break;
                }
            };
            rv = version;
            let changed = match event {
                WatchEvent::Added(n) | WatchEvent::Modified(n) => {
                    let Some(name) = n.metadata.name.clone() else {
                        continue;
                    };
                    nodes.insert(name, n);
                    true
                }
                WatchEvent::Deleted(n) => n
                    .metadata
                    .name
                    .as_ref()
                    .is_some_and(|name| nodes.remove(name).is_some()),
                WatchEvent::Bookmark(_) => false,
            };
            if changed {
                sync(&handle, &nodes, &self_name).await;
            }
        }
        debug!(resource_version = %rv, "re-listing Nodes");
    }
}

async fn sync(handle: &Handle, nodes: &HashMap<String, Node>, self_name: &str) {
    let desired = desired_routes(nodes.values(), self_name);
    let result = async {
        let observed = observed_routes(handle).await?;
        let plan = plan_routes(&desired, &observed);
        apply(handle, &plan).await
    }
    .await;
    if let Err(error) = result {
        warn!(error = %error, "cannot sync routes to other nodes' pods; retrying on the next Node change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ip.map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    })
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn desired_routes_skip_self_and_incomplete_nodes() {
        let nodes = [
            node("node1", Some("10.244.1.0/24"), Some("172.30.0.11")),
            node("node2", Some("10.244.2.0/24"), Some("172.30.0.12")),
            node("node3", None, Some("172.30.0.13")),
            node("node4", Some("10.244.4.0/24"), None),
            node("node5", Some("not-a-cidr"), Some("172.30.0.15")),
        ];
        let got = desired_routes(&nodes, "node1");
        assert_eq!(
            got,
            BTreeMap::from([(net("10.244.2.0/24"), ip("172.30.0.12"))])
        );
    }

    #[test]
    fn plans() {
        let a = (net("10.244.2.0/24"), ip("172.30.0.12"));
        let b = (net("10.244.3.0/24"), ip("172.30.0.13"));
        let b_moved = (net("10.244.3.0/24"), ip("172.30.0.23"));
        let cases = [
            ("nothing", vec![], vec![], RoutePlan::default()),
            (
                "new node",
                vec![a, b],
                vec![a],
                RoutePlan {
                    replace: vec![b],
                    delete: vec![],
                },
            ),
            ("in sync", vec![a, b], vec![a, b], RoutePlan::default()),
            (
                "node gone",
                vec![a],
                vec![a, b],
                RoutePlan {
                    replace: vec![],
                    delete: vec![b],
                },
            ),
            (
                "node moved",
                vec![a, b_moved],
                vec![a, b],
                RoutePlan {
                    replace: vec![b_moved],
                    delete: vec![],
                },
            ),
        ];
        for (name, desired, observed, want) in cases {
            let got = plan_routes(
                &desired.into_iter().collect(),
                &observed.into_iter().collect(),
            );
            assert_eq!(got, want, "{name}");
        }
    }
}
