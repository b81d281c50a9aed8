//! Routes to the other nodes' pod CIDRs.
//!
//! Each node owns one pod CIDR (Node.spec.podCIDR) and reaches its own pods
//! through per-pod /32 routes that weir-cni installs. To reach a pod on
//! another node, the node netns needs `<podCIDR> via <that node's InternalIP>`.
//! The agent keeps exactly those routes, tagged with its own routing protocol
//! number so it never touches a route it did not add.
//!
//! The same Node watch keeps masquerade's non-masqueraded destinations
//! current: the configured CIDRs plus every node's InternalIP, so pods reach
//! nodes with their own address (see `weir_datapath::masq`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use tracing::{debug, info, warn};
use weir_client::{ListParams, WatchEvent, WatchParams};
use weir_datapath::Datapath;
use weir_datapath::masq::Masquerade;

use crate::overlay::{self, RoutingMode, VXLAN_DEVICE};

/// rtnetlink protocol number marking routes the agent owns (`ip route` shows
/// it as `proto 87`). Values above 4 and unused by routing daemons are free.
pub const ROUTE_PROTOCOL: u8 = 87;
const MAIN_TABLE: u8 = 254;

/// A route management step failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("no interface carries the node IP {ip}: cannot create the VXLAN device")]
    NoUnderlay { ip: Ipv4Addr },
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
        let ip = internal_ip(node);
        if let (Some(cidr), Some(ip)) = (cidr, ip) {
            routes.insert(cidr.trunc(), ip);
        }
    }
    routes
}

/// A node's InternalIP, if it has a valid one.
fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
}

/// Masquerade's non-masqueraded destinations: the configured CIDRs and every
/// node's address (this one's too), so traffic to nodes keeps the pod address.
pub fn non_masquerade<'a>(
    configured: &BTreeSet<Ipv4Net>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> BTreeSet<Ipv4Net> {
    let mut set: BTreeSet<Ipv4Net> = configured.iter().map(Ipv4Net::trunc).collect();
    set.extend(nodes.into_iter().filter_map(internal_ip).map(Ipv4Net::from));
    set
}

/// Masquerade as the route sync maintains it.
#[derive(Clone)]
pub struct MasqueradeSync {
    pub datapath: Arc<Mutex<Datapath>>,
    /// This node's pod CIDR; `None`: masquerade off.
    pub pod_cidr: Option<Ipv4Net>,
    /// `--non-masquerade-cidr`.
    pub configured: BTreeSet<Ipv4Net>,
}

impl MasqueradeSync {
    fn apply(&self, nodes: &HashMap<String, Node>) {
        let settings = self.pod_cidr.map(|pod_cidr| Masquerade {
            pod_cidr,
            non_masquerade: non_masquerade(&self.configured, nodes.values()),
        });
        let mut dp = self.datapath.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = dp.set_masquerade(settings.as_ref()) {
            warn!(error = %error, "cannot update masquerade; retrying on the next Node change");
        }
        // Direct server return: the node addresses a DSR option may name.
        let addrs = nodes.values().filter_map(internal_ip).collect();
        if let Err(error) = dp.set_node_addrs(&addrs) {
            warn!(error = %error, "cannot update the node addresses for DSR; retrying on the next Node change");
        }
    }
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

/// How this node routes to the others.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub self_name: String,
    pub mode: RoutingMode,
    /// This node's InternalIP (the VXLAN device's local address).
    pub node_ip: Ipv4Addr,
    /// This node's pod CIDR (its network address is the VXLAN device's).
    pub pod_cidr: Ipv4Net,
}

/// A route of the agent's: `cidr via gateway`, through `oif` (VXLAN: the
/// device, onlink, since the gateway is no neighbour of any other link).
fn message(cidr: Ipv4Net, gateway: Ipv4Addr, oif: Option<u32>) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .gateway(gateway)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    match oif {
        Some(index) => b.output_interface(index).onlink().build(),
        None => b.build(),
    }
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

async fn apply(handle: &Handle, plan: &RoutePlan, oif: Option<u32>) -> Result<(), RouteError> {
    for (cidr, gw) in &plan.replace {
        handle
            .route()
            .add(message(*cidr, *gw, oif))
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
        match handle.route().del(message(*cidr, *gw, oif)).execute().await {
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
pub async fn run_route_sync(
    api: weir_client::Client,
    cfg: RouteConfig,
    masq: Option<MasqueradeSync>,
) -> Result<(), RouteError> {
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
        sync(&handle, &nodes, &cfg, masq.as_ref()).await;
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
                sync(&handle, &nodes, &cfg, masq.as_ref()).await;
            }
        }
        debug!(resource_version = %rv, "re-listing Nodes");
    }
}

async fn sync(
    handle: &Handle,
    nodes: &HashMap<String, Node>,
    cfg: &RouteConfig,
    masq: Option<&MasqueradeSync>,
) {
    if let Some(m) = masq {
        m.apply(nodes);
    }
    let peers = desired_routes(nodes.values(), &cfg.self_name);
    let result = match cfg.mode {
        RoutingMode::Native => sync_native(handle, &peers).await,
        RoutingMode::Vxlan => sync_vxlan(handle, cfg, &peers).await,
    };
    if let Err(error) = result {
        warn!(error = %error, mode = cfg.mode.as_str(), "cannot sync routes to other nodes' pods; retrying on the next Node change");
    }
}

/// Native routing: routes via the nodes' InternalIPs; no VXLAN device.
async fn sync_native(
    handle: &Handle,
    peers: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Result<(), RouteError> {
    if let Some(index) = link_index(handle, VXLAN_DEVICE).await? {
        del_link(handle, index).await?;
        info!(
            device = VXLAN_DEVICE,
            "VXLAN device removed (native routing)"
        );
    }
    let observed = observed_routes(handle).await?;
    apply(handle, &plan_routes(peers, &observed), None).await
}

/// VXLAN: the device, then per remote node its FDB entry, neighbour entry
/// and route (in that order: a route is usable once its next hop resolves).
async fn sync_vxlan(
    handle: &Handle,
    cfg: &RouteConfig,
    peers: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Result<(), RouteError> {
    let index = ensure_vxlan(handle, cfg).await?;
    let desired = overlay::vxlan_entries(peers);
    let (fdb, neighbours) = observed_vxlan(handle, index).await?;
    let fdb_plan = overlay::plan(&desired.fdb, &fdb);
    for (mac, dst) in &fdb_plan.replace {
        let mut req = handle
            .neighbours()
            .add_bridge(index, mac)
            .destination((*dst).into())
            .replace();
        req.message_mut().header.flags = NeighbourFlags::Own;
        req.execute()
            .await
            .map_err(nl(format!("set fdb {mac:02x?} dst {dst}")))?;
    }
    let neigh_plan = overlay::plan(&desired.neighbours, &neighbours);
    for (ip, mac) in &neigh_plan.replace {
        handle
            .neighbours()
            .add(index, (*ip).into())
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("set neighbour {ip} lladdr {mac:02x?}")))?;
    }
    let observed = observed_routes(handle).await?;
    apply(
        handle,
        &plan_routes(&desired.routes, &observed),
        Some(index),
    )
    .await?;
    for (ip, mac) in &neigh_plan.delete {
        let msg = neighbour_message(
            index,
            AddressFamily::Inet,
            *mac,
            *ip,
            NeighbourFlags::empty(),
        );
        ignore_gone(handle.neighbours().del(msg).execute().await)
            .map_err(nl(format!("delete neighbour {ip}")))?;
    }
    for (mac, dst) in &fdb_plan.delete {
        let msg = neighbour_message(
            index,
            AddressFamily::Bridge,
            *mac,
            *dst,
            NeighbourFlags::Own,
        );
        ignore_gone(handle.neighbours().del(msg).execute().await)
            .map_err(nl(format!("delete fdb {mac:02x?}")))?;
    }
    if !fdb_plan.replace.is_empty() || !fdb_plan.delete.is_empty() {
        info!(
            added = fdb_plan.replace.len(),
            removed = fdb_plan.delete.len(),
            "VXLAN peers updated"
        );
    }
    Ok(())
}

fn nl(what: String) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    move |source| RouteError::Netlink { what, source }
}

/// Treats "no such entry" as done (deleting what is already gone).
fn ignore_gone(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::ESRCH =>
        {
            Ok(())
        }
        other => other,
    }
}

fn neighbour_message(
    index: u32,
    family: AddressFamily,
    mac: [u8; 6],
    ip: Ipv4Addr,
    flags: NeighbourFlags,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.flags = flags;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// The index of link `name`, `None` if there is none.
async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, RouteError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(source) => Err(RouteError::Netlink {
            what: format!("look up link {name}"),
            source,
        }),
    }
}

async fn del_link(handle: &Handle, index: u32) -> Result<(), RouteError> {
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(nl(format!("delete link {index}")))
}

/// Creates the VXLAN device if missing (on the interface carrying the node
/// IP), gives it the node's vtep address and brings it up; its index.
async fn ensure_vxlan(handle: &Handle, cfg: &RouteConfig) -> Result<u32, RouteError> {
    let index = match link_index(handle, VXLAN_DEVICE).await? {
        Some(i) => i,
        None => {
            let underlay = crate::node::interface_with_address(cfg.node_ip)
                .ok()
                .flatten()
                .ok_or(RouteError::NoUnderlay { ip: cfg.node_ip })?;
            let underlay_index = link_index(handle, &underlay)
                .await?
                .ok_or(RouteError::NoUnderlay { ip: cfg.node_ip })?;
            let msg = LinkVxlan::new(VXLAN_DEVICE, overlay::VXLAN_VNI)
                .dev(underlay_index)
                .local(cfg.node_ip)
                .port(overlay::VXLAN_PORT)
                .learning(false)
                .address(overlay::vtep_mac(cfg.node_ip).to_vec())
                .up()
                .build();
            handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("create {VXLAN_DEVICE}")))?;
            info!(device = VXLAN_DEVICE, underlay = %underlay, vni = overlay::VXLAN_VNI, "VXLAN device created");
            link_index(handle, VXLAN_DEVICE)
                .await?
                .ok_or(RouteError::NoUnderlay { ip: cfg.node_ip })?
        }
    };
    let vtep = overlay::vtep_addr(cfg.pod_cidr);
    match handle.address().add(index, vtep.into(), 32).execute().await {
        Ok(()) => {}
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
        Err(source) => {
            return Err(RouteError::Netlink {
                what: format!("add {vtep}/32 to {VXLAN_DEVICE}"),
                source,
            });
        }
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {VXLAN_DEVICE} up")))?;
    Ok(index)
}

/// The VXLAN device's FDB (MAC -> remote node IP) and permanent neighbour
/// (vtep addr -> MAC) entries.
async fn observed_vxlan(
    handle: &Handle,
    index: u32,
) -> Result<(BTreeMap<[u8; 6], Ipv4Addr>, BTreeMap<Ipv4Addr, [u8; 6]>), RouteError> {
    let mut fdb = BTreeMap::new();
    let mut neighbours = BTreeMap::new();
    for family in [AddressFamily::Bridge, AddressFamily::Inet] {
        let msgs: Vec<NeighbourMessage> = handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours".into()))?;
        for m in msgs.iter().filter(|m| m.header.ifindex == index) {
            let (mut mac, mut ip) = (None, None);
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                    // In AF_BRIDGE (FDB) messages the decoder cannot tell
                    // the address family of NDA_DST: 4 bytes are IPv4.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        ip = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => {}
                }
            }
            let (Some(mac), Some(ip)) = (mac, ip) else {
                continue;
            };
            if family == AddressFamily::Bridge && mac != [0; 6] {
                fdb.insert(mac, ip);
            } else if family == AddressFamily::Inet && m.header.state == NeighbourState::Permanent {
                neighbours.insert(ip, mac);
            }
        }
    }
    Ok((fdb, neighbours))
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
    fn non_masquerade_adds_every_node_address() {
        let nodes = [
            node("node1", Some("10.244.1.0/24"), Some("172.30.0.11")),
            node("node2", Some("10.244.2.0/24"), Some("172.30.0.12")),
            node("node3", Some("10.244.3.0/24"), None),
            node("node4", None, Some("bogus")),
        ];
        let configured = [net("10.244.0.0/16"), net("192.168.7.9/24")].into();
        let got = non_masquerade(&configured, &nodes);
        let want: BTreeSet<Ipv4Net> = [
            net("10.244.0.0/16"),
            net("192.168.7.0/24"),
            net("172.30.0.11/32"),
            net("172.30.0.12/32"),
        ]
        .into();
        assert_eq!(got, want);
        assert_eq!(
            non_masquerade(&BTreeSet::new(), &[]),
            BTreeSet::new(),
            "nothing configured, no nodes"
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
