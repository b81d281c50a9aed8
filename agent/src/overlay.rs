//! How pod traffic reaches other nodes: natively routed (`<podCIDR> via
//! <node InternalIP>`, the nodes share an L2 segment) or encapsulated in
//! VXLAN for nodes that are not on one segment (`--routing-mode vxlan`).
//!
//! VXLAN is done flannel-style, with plain kernel objects and no BPF:
//! - one device `weir-vxlan` (VNI 1, UDP 8472, `local` = the node IP, no
//!   learning), whose MAC is derived from the node IP ([`vtep_mac`]) so
//!   every node knows every other node's without publishing it anywhere;
//!   its address is the node's pod CIDR network address ([`vtep_addr`],
//!   e.g. 10.244.1.0/32), the source of node-originated overlay traffic;
//! - per remote node: a route `<podCIDR> via <its vtep addr> dev weir-vxlan
//!   onlink` (proto 87, as in native mode), a permanent neighbour entry
//!   `<its vtep addr> lladdr <its vtep MAC>` and an FDB entry `<its vtep MAC>
//!   dst <its node IP>` (where the encapsulated frame goes).
//!
//! The kernel sets the device's MTU to the underlay's minus the 50 bytes
//! of VXLAN over IPv4 ([`VXLAN_OVERHEAD`]); pods get the same
//! ([`RoutingMode::pod_mtu`]) through the CNI configuration.
//!
//! The decisions (which entries for which nodes, what to change) are pure
//! and table-tested here; `routes.rs` does the netlink I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// How pod traffic crosses to other nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutingMode {
    /// Routes via the other nodes' InternalIPs (one L2 segment).
    #[default]
    Native,
    /// VXLAN encapsulation between the nodes' InternalIPs.
    Vxlan,
}

/// The VXLAN device's name.
pub const VXLAN_DEVICE: &str = "weir-vxlan";
/// The VXLAN network identifier every node uses.
pub const VXLAN_VNI: u32 = 1;
/// UDP port of the encapsulation (flannel's, not IANA's 4789, so weir and a
/// kernel default `vxlan` device never share a socket).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes VXLAN over IPv4 adds: outer IPv4 (20) + UDP (8) + VXLAN (8) +
/// inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

impl RoutingMode {
    /// The MTU pods get when the node's network has `link_mtu`.
    pub fn pod_mtu(self, link_mtu: u32) -> u32 {
        match self {
            RoutingMode::Native => link_mtu,
            RoutingMode::Vxlan => link_mtu.saturating_sub(VXLAN_OVERHEAD),
        }
    }

    /// The flag value (`--routing-mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingMode::Native => "native",
            RoutingMode::Vxlan => "vxlan",
        }
    }
}

/// The VXLAN device MAC of the node with address `node_ip`: locally
/// administered, unicast (`02:57` = "W"), then the address.
pub fn vtep_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = node_ip.octets();
    [0x02, 0x57, a, b, c, d]
}

/// A node's overlay address: the network address of its pod CIDR (never a
/// pod's: the CNI hands out addresses from .2 on).
pub fn vtep_addr(pod_cidr: Ipv4Net) -> Ipv4Addr {
    pod_cidr.network()
}

/// What the VXLAN device needs for a set of remote nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanEntries {
    /// Pod CIDR -> next hop (the remote vtep addr), through the device.
    pub routes: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// Remote vtep addr -> remote vtep MAC (permanent neighbour entries).
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Remote vtep MAC -> remote node IP (FDB entries: where frames go).
    pub fdb: BTreeMap<[u8; 6], Ipv4Addr>,
}

/// The entries for `peers` (remote pod CIDR -> remote node IP, as
/// `routes::desired_routes` finds them).
pub fn vxlan_entries(peers: &BTreeMap<Ipv4Net, Ipv4Addr>) -> VxlanEntries {
    let mut e = VxlanEntries::default();
    for (cidr, node_ip) in peers {
        let gw = vtep_addr(*cidr);
        let mac = vtep_mac(*node_ip);
        e.routes.insert(*cidr, gw);
        e.neighbours.insert(gw, mac);
        e.fdb.insert(mac, *node_ip);
    }
    e
}

/// What to change in one table so that `observed` becomes `desired`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan<K, V> {
    /// Add or replace.
    pub replace: Vec<(K, V)>,
    /// Remove (keys not desired any more).
    pub delete: Vec<(K, V)>,
}

/// The generic diff of a keyed table (routes, neighbours, FDB).
pub fn plan<K: Ord + Copy, V: PartialEq + Copy>(
    desired: &BTreeMap<K, V>,
    observed: &BTreeMap<K, V>,
) -> Plan<K, V> {
    Plan {
        replace: desired
            .iter()
            .filter(|(k, v)| observed.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        delete: observed
            .iter()
            .filter(|(k, _)| !desired.contains_key(k))
            .map(|(k, v)| (*k, *v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn mtu_accounts_for_the_encapsulation() {
        let cases = [
            (RoutingMode::Native, 1500, 1500),
            (RoutingMode::Vxlan, 1500, 1450),
            (RoutingMode::Vxlan, 9000, 8950),
            (RoutingMode::Vxlan, 40, 0),
        ];
        for (mode, link, want) in cases {
            assert_eq!(mode.pod_mtu(link), want, "{mode:?} {link}");
        }
    }

    #[test]
    fn vtep_mac_is_derived_from_the_node_ip() {
        assert_eq!(vtep_mac(ip("172.30.0.12")), [0x02, 0x57, 172, 30, 0, 12]);
        // Locally administered unicast.
        let m = vtep_mac(ip("10.0.0.1"));
        assert_eq!(m[0] & 0b11, 0b10);
    }

    #[test]
    fn entries_per_remote_node() {
        let peers = BTreeMap::from([
            (net("10.244.2.0/24"), ip("172.30.0.12")),
            (net("10.244.3.0/24"), ip("172.30.0.13")),
        ]);
        let e = vxlan_entries(&peers);
        assert_eq!(
            e.routes,
            BTreeMap::from([
                (net("10.244.2.0/24"), ip("10.244.2.0")),
                (net("10.244.3.0/24"), ip("10.244.3.0")),
            ])
        );
        assert_eq!(
            e.neighbours,
            BTreeMap::from([
                (ip("10.244.2.0"), [2, 0x57, 172, 30, 0, 12]),
                (ip("10.244.3.0"), [2, 0x57, 172, 30, 0, 13]),
            ])
        );
        assert_eq!(
            e.fdb,
            BTreeMap::from([
                ([2, 0x57, 172, 30, 0, 12], ip("172.30.0.12")),
                ([2, 0x57, 172, 30, 0, 13], ip("172.30.0.13")),
            ])
        );
        assert_eq!(vxlan_entries(&BTreeMap::new()), VxlanEntries::default());
    }

    #[test]
    fn plans_follow_nodes_joining_leaving_and_moving() {
        let a = (ip("10.244.2.0"), [2, 0x57, 172, 30, 0, 12]);
        let b = (ip("10.244.3.0"), [2, 0x57, 172, 30, 0, 13]);
        let b_moved = (ip("10.244.3.0"), [2, 0x57, 172, 30, 0, 23]);
        let cases = [
            ("nothing", vec![], vec![], vec![], vec![]),
            ("node joins", vec![a, b], vec![a], vec![b], vec![]),
            ("in sync", vec![a, b], vec![a, b], vec![], vec![]),
            ("node leaves", vec![a], vec![a, b], vec![], vec![b]),
            (
                "node re-addressed",
                vec![a, b_moved],
                vec![a, b],
                vec![b_moved],
                vec![],
            ),
        ];
        for (name, desired, observed, replace, delete) in cases {
            let got = plan(
                &desired.into_iter().collect(),
                &observed.into_iter().collect(),
            );
            assert_eq!(got, Plan { replace, delete }, "{name}");
        }
    }
}
