//! Network namespaces of one benchmark topology, built with iproute2.
//!
//! ```text
//!  client netns                node netns                    server netns
//!                               eth0 172.31.255.1 (node IP; veth to ul0, idle)
//!  eth0 10.244.0.10-25  <-veth-> wrcli0 10.244.0.1
//!                                wrsrv0 10.244.255.1 <-veth-> eth0 10.244.255.2
//!                                10.245/16 via .255.2         local 10.245.0.0/16 dev lo
//! ```
//!
//! The node-side veths are named `wr*` like weir-cni's pod veths, so weir's
//! datapath attaches to them exactly as it does to pods. Every topology is
//! used for one run only and then deleted: reusing one for a second run would
//! meet the first run's TCP state (PAWS, conntrack).

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::sched::CloneFlags;

use crate::plan;

/// Prefix of every netns this benchmark creates.
pub const PREFIX: &str = "wbench-";

/// Moves the calling thread into the named netns (`/run/netns/<name>`).
/// Call it before spawning threads or building a runtime so that every
/// thread inherits it.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter netns {name}"))?;
    Ok(())
}

/// The namespaces of one run; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub node: String,
    pub client: String,
    pub server: String,
    /// With [`Topology::create_with_external`]: a netns outside the node
    /// whose `eth0` (`EXTERNAL_ADDR`) is the peer of the node's `eth0`, the
    /// node's underlay, where NodePorts are reached.
    pub external: Option<String>,
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip [-n netns] -batch -` with `lines`, stopping at the first error.
pub(crate) fn ip_batch(netns: Option<&str>, lines: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip (iproute2)")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(lines.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sets sysctls inside a netns (`/proc/sys/net` is per network namespace).
pub(crate) fn sysctls(netns: &str, settings: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "sysctl", "-q", "-w"])
        .args(settings);
    run(&mut cmd)
}

impl Topology {
    /// Builds the three namespaces for run `tag` (short, unique per run).
    pub fn create(tag: &str) -> Result<Topology> {
        Self::build(tag, false)
    }

    fn build(tag: &str, external: bool) -> Result<Topology> {
        let topo = Topology {
            node: format!("{PREFIX}{tag}-n"),
            client: format!("{PREFIX}{tag}-c"),
            server: format!("{PREFIX}{tag}-s"),
            external: external.then(|| format!("{PREFIX}{tag}-x")),
        };
        // From here on, drop cleans up whatever part was created.
        for ns in [&topo.node, &topo.client, &topo.server]
            .into_iter()
            .chain(topo.external.as_ref())
        {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        let (n, c, s) = (&topo.node, &topo.client, &topo.server);
        // eth0: the node's underlay, carrying the node IP; its peer is ul0 in
        // the node itself (idle), or eth0 of the external netns.
        let underlay_peer = match &topo.external {
            Some(x) => format!("eth0 netns {x}"),
            None => format!("ul0 netns {n}"),
        };
        ip_batch(
            None,
            &format!(
                "link add wrcli0 netns {n} type veth peer name eth0 netns {c}\n\
                 link add wrsrv0 netns {n} type veth peer name eth0 netns {s}\n\
                 link add eth0 netns {n} type veth peer name {underlay_peer}\n"
            ),
        )?;
        if let Some(x) = &topo.external {
            ip_batch(
                Some(x),
                &format!(
                    "link set lo up\nlink set eth0 up\naddr add {}/24 dev eth0\n\
                     route add default via {}\n",
                    plan::EXTERNAL_ADDR,
                    plan::NODE_IP
                ),
            )?;
        }
        let mut node = String::from("link set lo up\nlink set eth0 up\n");
        if topo.external.is_none() {
            node.push_str("link set ul0 up\n");
        }
        node.push_str(&format!("addr add {}/24 dev eth0\n", plan::NODE_IP));
        node.push_str(&format!(
            "addr add {}/24 dev wrcli0\n",
            plan::CLIENT_GATEWAY
        ));
        node.push_str(&format!(
            "addr add {}/24 dev wrsrv0\n",
            plan::SERVER_GATEWAY
        ));
        node.push_str("link set wrcli0 up\nlink set wrsrv0 up\n");
        node.push_str(&format!(
            "route add {} via {}\n",
            plan::BACKEND_CIDR,
            plan::SERVER_ADDR
        ));
        // No route to the VIPs: only a service translation makes them
        // reachable, and an unconfigured VIP fails fast instead of timing out.
        node.push_str(&format!("route add unreachable {}\n", plan::SERVICE_CIDR));
        ip_batch(Some(n), &node)?;
        let mut client = String::from("link set lo up\n");
        for k in 0..plan::SOURCES {
            client.push_str(&format!("addr add {}/24 dev eth0\n", plan::source(k)));
        }
        client.push_str(&format!(
            "link set eth0 up\nroute add default via {}\n",
            plan::CLIENT_GATEWAY
        ));
        ip_batch(Some(c), &client)?;
        let mut server = String::from("link set lo up\n");
        server.push_str(&format!(
            "addr add {}/24 dev eth0\nlink set eth0 up\n",
            plan::SERVER_ADDR
        ));
        server.push_str(&format!("route add default via {}\n", plan::SERVER_GATEWAY));
        server.push_str(&format!("route add local {} dev lo\n", plan::BACKEND_CIDR));
        ip_batch(Some(s), &server)?;
        sysctls(
            n,
            &[
                "net.ipv4.ip_forward=1",
                // Replies are reverse-translated to a VIP source before routing;
                // strict reverse-path filtering would drop them (no route to VIPs).
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.wrcli0.rp_filter=0",
                "net.ipv4.conf.wrsrv0.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
            ],
        )?;
        sysctls(c, &["net.ipv4.ip_local_port_range=1024 65000"])?;
        sysctls(
            s,
            &[
                "net.core.somaxconn=8192",
                "net.ipv4.tcp_max_syn_backlog=8192",
            ],
        )?;
        Ok(topo)
    }

    /// Number of entries in the node's kernel conntrack table (None when
    /// conntrack is not active there).
    pub fn node_conntrack_count(&self) -> Option<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "cat",
                "/proc/sys/net/netfilter/nf_conntrack_count",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server, &self.node]
            .into_iter()
            .chain(self.external.as_ref())
        {
            // Deleting a netns deletes its veths; a missing one is fine.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes namespaces left behind by an interrupted earlier run.
pub fn remove_leftovers() -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run ip netns list")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name.starts_with(PREFIX) {
            run(Command::new("ip").args(["netns", "del", name]))?;
        }
    }
    Ok(())
}
