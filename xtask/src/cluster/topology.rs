//! The underlay: a bridge in the host netns (no address: the host never
//! routes into the cluster), one netns per node with `eth0` on the bridge, and
//! an external client netns on the same bridge.
//!
//! Everything goes through `ip` (iproute2) so each step is printed and can be
//! re-run by hand. Namespaces are entered with `ip -n`/`nsenter --net`, never
//! `ip netns exec` (it remounts /sys, hiding bpffs and cgroups).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::cmd::{self, cmd, step};
use crate::layout::{Layout, NodeLayout};

pub fn netns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

pub fn create(layout: &Layout, nodes: &[NodeLayout]) -> Result<()> {
    step(format!(
        "creating the underlay: bridge {} and {} node netns",
        layout.bridge(),
        nodes.len()
    ));
    let br = layout.bridge();
    cmd::run_quiet(&mut cmd("ip", ["link", "add", &br, "type", "bridge"]))?;
    // Bridged frames must not go through the host's iptables (br_netfilter, if loaded).
    let _ = cmd::output(&mut cmd(
        "ip",
        [
            "link",
            "set",
            &br,
            "type",
            "bridge",
            "nf_call_iptables",
            "0",
        ],
    ));
    cmd::run_quiet(&mut cmd("ip", ["link", "set", &br, "up"]))?;
    for n in nodes {
        attach_netns(&br, &n.netns, &n.host_veth, n.ip, true)?;
    }
    attach_netns(
        &br,
        &layout.ext_netns(),
        &layout.ext_host_veth(),
        layout.ext_ip(),
        false,
    )?;
    Ok(())
}

/// Creates netns `ns` with `eth0` (address `ip`/24) whose peer `host_veth` sits on the bridge.
fn attach_netns(
    bridge: &str,
    ns: &str,
    host_veth: &str,
    ip: Ipv4Addr,
    forward: bool,
) -> Result<()> {
    cmd::run_quiet(&mut cmd("ip", ["netns", "add", ns]))?;
    cmd::run_quiet(&mut cmd(
        "ip",
        [
            "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    ))?;
    cmd::run_quiet(&mut cmd(
        "ip",
        ["link", "set", host_veth, "master", bridge, "up"],
    ))?;
    let addr = format!("{ip}/24");
    cmd::run_quiet(&mut cmd(
        "ip",
        ["-n", ns, "addr", "add", &addr, "dev", "eth0"],
    ))?;
    cmd::run_quiet(&mut cmd("ip", ["-n", ns, "link", "set", "eth0", "up"]))?;
    cmd::run_quiet(&mut cmd("ip", ["-n", ns, "link", "set", "lo", "up"]))?;
    if forward {
        // /proc/sys/net is per netns: nsenter --net alone is enough to reach the node's copy.
        let net = format!("--net={}", netns_path(ns));
        cmd::run_quiet(&mut cmd(
            "nsenter",
            [net.as_str(), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ))?;
    }
    Ok(())
}
