//! The NodePort benchmark's topology: a node on an L2 segment with the
//! traffic generator and the backend node, as in a cluster.
//!
//! ```text
//!  node netns  wbnp<tag>-n                         segment netns  wbnp<tag>-x
//!  eth0 172.31.255.1/24 (NodePort 30080/udp) <-veth-> eth0 172.31.255.2 traffic generator
//!  10.245.0.0/16 via 172.31.255.3 dev eth0              172.31.255.3 backend node
//!  static neighbours .2/.3 -> the segment's MAC         local 10.245.0.0/16 (the endpoints)
//! ```
//!
//! The node reaches its clients and the backend node through its underlay
//! `eth0`, so every forwarded packet leaves through the interface it came in
//! on, towards a next hop on the segment: the path weir's XDP program
//! fast-paths with `XDP_TX` and the path iptables/nftables forward through
//! the stack. The rest of the segment is one netns, the veth peer of the
//! node's `eth0`: the generator injects frames there (`ndo_xdp_xmit` into the
//! node's receive ring) and forwarded frames arrive there, counted and
//! dropped by the sink program. A bridge with a netns per role would add a
//! bridge hop per sent and per forwarded packet on the generator's CPU, which
//! would make the sender the bottleneck again; the node cannot tell the
//! difference (same addresses, same next hop, same interface).
//!
//! Neighbours are static so that no ARP runs during a measurement and
//! `bpf_fib_lookup` in weir's XDP program finds the next hop's MAC at once.
//! GRO is turned on for the node's `eth0` in every variant: a veth runs NAPI
//! (and accepts frames from its peer's `ndo_xdp_xmit`) only with an XDP
//! program attached natively or GRO on, and the variants without weir have
//! no XDP program.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::netns::{ip_batch, run, sysctls};
use crate::plan;

/// Prefix of every netns this benchmark creates.
pub const PREFIX: &str = "wbnp";
/// The backend node's address on the segment (the next hop to the endpoints).
pub const BACKEND_NODE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(172, 31, 255, 3);
/// MAC of the node's `eth0` (locally administered).
pub const NODE_MAC: [u8; 6] = [0x02, 0x77, 0x62, 0x6e, 0x70, 0x01];
/// MAC of the segment's `eth0` (generator and backend node).
pub const SEGMENT_MAC: [u8; 6] = [0x02, 0x77, 0x62, 0x6e, 0x70, 0x02];
/// The interface name on both sides.
pub const IFACE: &str = "eth0";

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// What [`NpTopology::create`] runs: netns names and `ip -batch` inputs.
#[derive(Debug, PartialEq, Eq)]
pub struct TopoPlan {
    pub node: String,
    pub segment: String,
    /// In the root netns: the veth pair, created straight into the netns.
    pub root: String,
    pub node_batch: String,
    pub segment_batch: String,
    pub node_sysctls: Vec<&'static str>,
}

/// The topology of run `tag` (pure).
pub fn topo_plan(tag: &str) -> TopoPlan {
    let node = format!("{PREFIX}{tag}-n");
    let segment = format!("{PREFIX}{tag}-x");
    let root = format!(
        "link add {IFACE} netns {node} address {} type veth peer name {IFACE} netns {segment} address {}\n",
        mac_string(NODE_MAC),
        mac_string(SEGMENT_MAC)
    );
    let node_batch = format!(
        "link set lo up\nlink set {IFACE} up\naddr add {node_ip}/24 dev {IFACE}\n\
         route add {backends} via {BACKEND_NODE_IP} dev {IFACE}\n\
         neigh replace {ext} lladdr {seg} dev {IFACE} nud permanent\n\
         neigh replace {BACKEND_NODE_IP} lladdr {seg} dev {IFACE} nud permanent\n",
        node_ip = plan::NODE_IP,
        backends = plan::BACKEND_CIDR,
        ext = plan::EXTERNAL_ADDR,
        seg = mac_string(SEGMENT_MAC),
    );
    let segment_batch = format!(
        "link set lo up\nlink set {IFACE} up\naddr add {ext}/24 dev {IFACE}\n\
         addr add {BACKEND_NODE_IP}/24 dev {IFACE}\nroute add local {backends} dev lo\n\
         neigh replace {node_ip} lladdr {node_mac} dev {IFACE} nud permanent\n",
        ext = plan::EXTERNAL_ADDR,
        backends = plan::BACKEND_CIDR,
        node_ip = plan::NODE_IP,
        node_mac = mac_string(NODE_MAC),
    );
    TopoPlan {
        node,
        segment,
        root,
        node_batch,
        segment_batch,
        node_sysctls: vec![
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
            // Forwarding back out of the interface a packet came in on is
            // the point here: no ICMP redirect per packet for the stack paths.
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.eth0.send_redirects=0",
        ],
    }
}

/// The two namespaces of one run; deleted on drop (with their veths).
#[derive(Debug)]
pub struct NpTopology {
    pub node: String,
    pub segment: String,
}

impl NpTopology {
    pub fn create(tag: &str) -> Result<NpTopology> {
        let p = topo_plan(tag);
        let topo = NpTopology {
            node: p.node.clone(),
            segment: p.segment.clone(),
        };
        // From here on, drop removes whatever part was created.
        for ns in [&topo.node, &topo.segment] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        ip_batch(None, &p.root)?;
        ip_batch(Some(&topo.node), &p.node_batch)?;
        ip_batch(Some(&topo.segment), &p.segment_batch)?;
        sysctls(&topo.node, &p.node_sysctls)?;
        in_netns(&topo.node, &["ethtool", "-K", IFACE, "gro", "on"]).context(
            "cannot turn GRO on (apt-get install ethtool; cargo xtask bench installs it)",
        )?;
        Ok(topo)
    }
}

impl Drop for NpTopology {
    fn drop(&mut self) {
        for ns in [&self.node, &self.segment] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `argv` inside `netns` (`ip netns exec`: a tool, never a daemon).
pub fn in_netns(netns: &str, argv: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {argv:?} in {netns}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{argv:?} in {netns} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces left behind by an interrupted earlier run.
pub fn remove_leftovers() -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run ip netns list")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split_whitespace().next()
            && name.starts_with(PREFIX)
        {
            run(Command::new("ip").args(["netns", "del", name]))?;
        }
    }
    Ok(())
}

/// The veth counters `ethtool -S` reports that tell whether the node was
/// offered more than it forwarded: on the segment's `eth0`,
/// `tx_queue_0_xdp_xmit` counts generated frames the node's receive ring
/// accepted and `tx_queue_0_xdp_xmit_errors` those it refused (ring full: the
/// node did not keep up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfferCounters {
    pub accepted: u64,
    pub refused: u64,
}

/// Parses `ethtool -S` output (pure).
pub fn parse_offer_counters(ethtool_s: &str) -> Option<OfferCounters> {
    let value = |name: &str| {
        ethtool_s.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(OfferCounters {
        accepted: value("tx_queue_0_xdp_xmit")?,
        refused: value("tx_queue_0_xdp_xmit_errors")?,
    })
}

pub fn offer_counters(segment: &str) -> Result<OfferCounters> {
    let out = in_netns(segment, &["ethtool", "-S", IFACE])?;
    parse_offer_counters(&out)
        .with_context(|| format!("no tx_queue_0_xdp_xmit in ethtool -S {IFACE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_puts_the_backends_behind_the_segment() {
        let p = topo_plan("wn0");
        assert_eq!(
            (p.node.as_str(), p.segment.as_str()),
            ("wbnpwn0-n", "wbnpwn0-x")
        );
        let cases = [
            (
                &p.root,
                "link add eth0 netns wbnpwn0-n address 02:77:62:6e:70:01 type veth peer name eth0 netns wbnpwn0-x address 02:77:62:6e:70:02",
            ),
            (&p.node_batch, "addr add 172.31.255.1/24 dev eth0"),
            (
                &p.node_batch,
                "route add 10.245.0.0/16 via 172.31.255.3 dev eth0",
            ),
            (
                &p.node_batch,
                "neigh replace 172.31.255.3 lladdr 02:77:62:6e:70:02 dev eth0 nud permanent",
            ),
            (
                &p.node_batch,
                "neigh replace 172.31.255.2 lladdr 02:77:62:6e:70:02 dev eth0 nud permanent",
            ),
            (&p.segment_batch, "addr add 172.31.255.2/24 dev eth0"),
            (&p.segment_batch, "addr add 172.31.255.3/24 dev eth0"),
            (&p.segment_batch, "route add local 10.245.0.0/16 dev lo"),
            (
                &p.segment_batch,
                "neigh replace 172.31.255.1 lladdr 02:77:62:6e:70:01 dev eth0 nud permanent",
            ),
        ];
        for (batch, line) in cases {
            assert!(
                batch.lines().any(|l| l == line),
                "{line:?} missing from\n{batch}"
            );
        }
        assert!(
            p.node_sysctls
                .contains(&"net.ipv4.conf.all.send_redirects=0")
        );
        assert!(p.node_sysctls.contains(&"net.ipv4.ip_forward=1"));
    }

    #[test]
    fn offer_counters_parse() {
        let out = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_packets: 5\n     \
                   tx_queue_0_xdp_xmit: 123456\n     tx_queue_0_xdp_xmit_errors: 789\n";
        assert_eq!(
            parse_offer_counters(out),
            Some(OfferCounters {
                accepted: 123456,
                refused: 789
            })
        );
        assert_eq!(
            parse_offer_counters("NIC statistics:\n     peer_ifindex: 2\n"),
            None
        );
    }
}
