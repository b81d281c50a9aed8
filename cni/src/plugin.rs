//! ADD, DEL and CHECK.
//!
//! Addressing (same scheme as the reference `ptp` plugin):
//!
//! ```text
//!  node netns                                pod netns
//!  wr<hash>  10.244.1.1/32 (gateway)  <-veth->  eth0  10.244.1.7/32
//!  route 10.244.1.7/32 dev wr<hash>             route 10.244.1.1/32 dev eth0 scope link
//!                                               route default via 10.244.1.1 dev eth0
//! ```
//!
//! proxy_arp is deliberately not enabled on the host veth: the only address
//! the pod ever ARPs for is its gateway, and the gateway address is
//! configured on the host veth itself, so the node answers that ARP as for
//! any local address. Proxy ARP would only matter if the pod tried to reach
//! other addresses on-link, which its /32 address and routes never do.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use netlink_packet_route::route::RouteScope;
use tracing::{info, warn};

use crate::config::PluginConfig;
use crate::error::PluginError;
use crate::inputs::Target;
use crate::ipam::{IpamStore, Owner};
use crate::naming::{host_veth_name, temp_peer_name};
use crate::net::{self, LinkState, RouteState};
use crate::sys::{self, NetnsError};

/// What ADD built, for the result.
#[derive(Clone, Debug)]
pub struct AddOutcome {
    pub host: LinkState,
    pub pod: LinkState,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

fn owner(target: &Target) -> Owner {
    Owner {
        container_id: target.container_id.clone(),
        ifname: target.ifname.clone(),
    }
}

fn netns_path(target: &Target) -> Result<PathBuf, PluginError> {
    target.netns.clone().ok_or(PluginError::InvalidEnv {
        var: "CNI_NETNS",
        reason: "is required".into(),
    })
}

fn netns_err(path: &std::path::Path) -> impl FnOnce(NetnsError) -> PluginError {
    let path = path.to_path_buf();
    move |e| PluginError::Netns {
        path,
        reason: e.to_string(),
    }
}

/// ADD: allocate (or reuse) the container's address and wire the veth.
/// A repeated ADD for the same container rebuilds the veth with the same
/// address. On failure everything this call created is removed again.
pub fn add(cfg: &PluginConfig, target: &Target) -> Result<AddOutcome, PluginError> {
    let netns = netns_path(target)?;
    // Open the namespace before allocating: a bad CNI_NETNS touches nothing.
    let ns_file = sys::open_netns(&netns).map_err(netns_err(&netns))?;
    let store = IpamStore::open(&cfg.data_dir, cfg.pod_cidr)?;
    let owner = owner(target);
    let allocation = store.allocate(&owner)?;
    info!(container_id = %target.container_id, ip = %allocation.ip, reused = allocation.reused, "address allocated");

    match wire(cfg, target, &netns, ns_file.as_raw_fd(), allocation.ip) {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            warn!(container_id = %target.container_id, error = %err, "ADD failed; undoing");
            let host = host_veth_name(&target.container_id);
            if let Err(e) = net::with_netlink(|h| async move { net::delete_link(&h, &host).await })
            {
                warn!(error = %e, "cleanup: deleting the host veth failed");
            }
            if let Err(e) = store.release(&owner) {
                warn!(error = %e, "cleanup: releasing the address failed");
            }
            Err(err)
        }
    }
}

fn wire(
    cfg: &PluginConfig,
    target: &Target,
    netns: &std::path::Path,
    ns_fd: std::os::fd::RawFd,
    ip: Ipv4Addr,
) -> Result<AddOutcome, PluginError> {
    let host_name = host_veth_name(&target.container_id);
    let peer_name = temp_peer_name(&target.container_id);
    let gateway = cfg.gateway();
    let mtu = cfg.mtu;

    // Node side, on this thread (which is in the node's namespace).
    let host = {
        let (host_name, peer_name) = (host_name.clone(), peer_name.clone());
        net::with_netlink(|h| async move {
            if net::delete_link(&h, &host_name).await? {
                info!(link = %host_name, "removed the veth of an earlier ADD for this container");
            }
            net::delete_link(&h, &peer_name).await?;
            net::create_veth(&h, &host_name, &peer_name, mtu).await?;
            let peer = require_link(&h, &peer_name).await?;
            net::move_to_netns(&h, peer.index, ns_fd).await?;
            let host = require_link(&h, &host_name).await?;
            net::add_address(&h, host.index, gateway, 32).await?;
            net::set_up(&h, host.index).await?;
            net::replace_host_route(&h, ip, host.index).await?;
            require_link(&h, &host_name).await
        })?
    };

    // Pod side, on a thread inside the pod's namespace.
    let ifname = target.ifname.clone();
    let pod = sys::run_in_netns(netns, move || {
        net::with_netlink(|h| async move {
            if net::link_by_name(&h, &ifname).await?.is_some() {
                return Err(PluginError::IfnameTaken { ifname });
            }
            let peer = require_link(&h, &peer_name).await?;
            net::rename(&h, peer.index, &ifname, mtu).await?;
            net::set_up(&h, peer.index).await?;
            net::add_address(&h, peer.index, ip, 32).await?;
            net::replace_host_route(&h, gateway, peer.index).await?;
            net::replace_default_route(&h, gateway, peer.index).await?;
            require_link(&h, &ifname).await
        })
    })
    .map_err(netns_err(netns))??;

    if sys::ensure_ip_forward().map_err(|source| PluginError::Sysctl {
        key: "net.ipv4.ip_forward",
        source,
    })? {
        info!("enabled net.ipv4.ip_forward in the node namespace");
    }
    info!(host = %host.name, pod_if = %pod.name, %ip, "pod wired");
    Ok(AddOutcome {
        host,
        pod,
        netns: netns.to_path_buf(),
        ip,
        gateway,
    })
}

async fn require_link(h: &rtnetlink::Handle, name: &str) -> Result<LinkState, PluginError> {
    net::link_by_name(h, name)
        .await?
        .ok_or_else(|| PluginError::LinkVanished {
            name: name.to_owned(),
        })
}

/// DEL: remove the veth (its pod end and both /32 routes go with it) and
/// release the address. Succeeds when there is nothing left to remove, and
/// never needs the pod namespace, which may already be gone.
pub fn del(cfg: &PluginConfig, target: &Target) -> Result<(), PluginError> {
    let host_name = host_veth_name(&target.container_id);
    let removed = {
        let host_name = host_name.clone();
        net::with_netlink(|h| async move { net::delete_link(&h, &host_name).await })?
    };
    // Release only after the link is gone, so the address cannot be handed
    // to a new pod while the old route to it still exists.
    let store = IpamStore::open(&cfg.data_dir, cfg.pod_cidr)?;
    let released = store.release(&owner(target))?;
    info!(container_id = %target.container_id, link = %host_name, removed, ?released, "DEL done");
    Ok(())
}

/// What CHECK expects to find.
#[derive(Clone, Debug)]
pub struct Expected {
    pub host_veth: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// What CHECK observed in one namespace.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub link: Option<LinkState>,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub routes: Vec<RouteState>,
}

/// Pure comparison behind CHECK: every difference between what ADD sets up
/// and what is there, as readable sentences (empty = healthy).
pub fn check_problems(exp: &Expected, host: &Observed, pod: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    let has_route =
        |routes: &[RouteState], dst: Ipv4Addr, len: u8, gw: Option<Ipv4Addr>, oif: u32| {
            routes.iter().any(|r| {
                r.dst == dst && r.prefix_len == len && r.gateway == gw && r.oif == Some(oif)
            })
        };
    let link_checks =
        |problems: &mut Vec<String>, where_: &str, name: &str, obs: &Observed| -> Option<u32> {
            let Some(link) = &obs.link else {
                problems.push(format!("{where_}: interface {name} does not exist"));
                return None;
            };
            if !link.up {
                problems.push(format!("{where_}: interface {name} is down"));
            }
            if link.mtu.is_some_and(|m| m != exp.mtu) {
                problems.push(format!(
                    "{where_}: interface {name} has MTU {:?}, expected {}",
                    link.mtu, exp.mtu
                ));
            }
            Some(link.index)
        };

    if let Some(index) = link_checks(&mut problems, "node", &exp.host_veth, host) {
        if !host.addresses.contains(&(exp.gateway, 32)) {
            problems.push(format!(
                "node: {} lacks the gateway address {}/32",
                exp.host_veth, exp.gateway
            ));
        }
        if !has_route(&host.routes, exp.ip, 32, None, index) {
            problems.push(format!(
                "node: no route {}/32 dev {}",
                exp.ip, exp.host_veth
            ));
        }
    }
    if let Some(index) = link_checks(&mut problems, "pod", &exp.ifname, pod) {
        if !pod.addresses.contains(&(exp.ip, 32)) {
            problems.push(format!(
                "pod: {} lacks the address {}/32",
                exp.ifname, exp.ip
            ));
        }
        let scope_link = pod.routes.iter().any(|r| {
            r.dst == exp.gateway
                && r.prefix_len == 32
                && r.oif == Some(index)
                && r.scope == RouteScope::Link
        });
        if !scope_link {
            problems.push(format!(
                "pod: no route {}/32 dev {} scope link",
                exp.gateway, exp.ifname
            ));
        }
        if !has_route(
            &pod.routes,
            Ipv4Addr::UNSPECIFIED,
            0,
            Some(exp.gateway),
            index,
        ) {
            problems.push(format!(
                "pod: no default route via {} dev {}",
                exp.gateway, exp.ifname
            ));
        }
    }
    problems
}

async fn observe(h: rtnetlink::Handle, name: String) -> Result<Observed, PluginError> {
    let link = net::link_by_name(&h, &name).await?;
    let addresses = match &link {
        Some(l) => net::addresses(&h, l.index).await?,
        None => Vec::new(),
    };
    let routes = net::main_routes(&h).await?;
    Ok(Observed {
        link,
        addresses,
        routes,
    })
}

/// CHECK: the recorded address, the veth, both addresses and all routes
/// must be as ADD left them; `prevResult`, when given, must list the address.
pub fn check(cfg: &PluginConfig, target: &Target) -> Result<(), PluginError> {
    let netns = netns_path(target)?;
    let store = IpamStore::open(&cfg.data_dir, cfg.pod_cidr)?;
    let ip = store
        .lookup(&owner(target))?
        .ok_or_else(|| PluginError::CheckNoAllocation {
            container_id: target.container_id.clone(),
            ifname: target.ifname.clone(),
        })?;
    let exp = Expected {
        host_veth: host_veth_name(&target.container_id),
        ifname: target.ifname.clone(),
        ip,
        gateway: cfg.gateway(),
        mtu: cfg.mtu,
    };
    let host = net::with_netlink(|h| observe(h, exp.host_veth.clone()))?;
    let ifname = exp.ifname.clone();
    let pod = sys::run_in_netns(&netns, move || net::with_netlink(|h| observe(h, ifname)))
        .map_err(netns_err(&netns))??;

    let mut problems = check_problems(&exp, &host, &pod);
    if let Some(prev) = &cfg.prev_result
        && !prev_result_lists(prev, ip)
    {
        problems.push(format!("prevResult does not list {ip}"));
    }
    if problems.is_empty() {
        info!(container_id = %target.container_id, %ip, "CHECK passed");
        Ok(())
    } else {
        Err(PluginError::CheckFailed { ip, problems })
    }
}

/// Whether a prevResult's `ips` contains `ip` (with any prefix length).
pub fn prev_result_lists(prev: &serde_json::Value, ip: Ipv4Addr) -> bool {
    prev.get("ips")
        .and_then(|v| v.as_array())
        .is_some_and(|ips| {
            ips.iter().any(|entry| {
                entry
                    .get("address")
                    .and_then(|a| a.as_str())
                    .and_then(|a| a.split('/').next())
                    .and_then(|a| a.parse::<Ipv4Addr>().ok())
                    == Some(ip)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn link(index: u32, name: &str) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            mac: None,
            up: true,
            mtu: Some(1500),
        }
    }

    fn route(dst: &str, len: u8, gw: Option<&str>, oif: u32, scope: RouteScope) -> RouteState {
        RouteState {
            dst: ip(dst),
            prefix_len: len,
            gateway: gw.map(ip),
            oif: Some(oif),
            scope,
            table: net::MAIN_TABLE,
        }
    }

    fn expected() -> Expected {
        Expected {
            host_veth: "wr0123456789ab".into(),
            ifname: "eth0".into(),
            ip: ip("10.244.1.7"),
            gateway: ip("10.244.1.1"),
            mtu: 1500,
        }
    }

    fn healthy() -> (Observed, Observed) {
        let host = Observed {
            link: Some(link(12, "wr0123456789ab")),
            addresses: vec![(ip("10.244.1.1"), 32)],
            routes: vec![route("10.244.1.7", 32, None, 12, RouteScope::Link)],
        };
        let pod = Observed {
            link: Some(link(2, "eth0")),
            addresses: vec![(ip("10.244.1.7"), 32)],
            routes: vec![
                route("10.244.1.1", 32, None, 2, RouteScope::Link),
                route("0.0.0.0", 0, Some("10.244.1.1"), 2, RouteScope::Universe),
            ],
        };
        (host, pod)
    }

    #[test]
    fn healthy_setup_has_no_problems() {
        let (host, pod) = healthy();
        assert_eq!(
            check_problems(&expected(), &host, &pod),
            Vec::<String>::new()
        );
    }

    /// Each case breaks one thing and names the sentence that must appear.
    #[test]
    fn each_breakage_is_reported() {
        type Breakage = fn(&mut Observed, &mut Observed);
        let cases: [(Breakage, &str); 9] = [
            (
                |h, _| h.link = None,
                "node: interface wr0123456789ab does not exist",
            ),
            (
                |h, _| {
                    if let Some(l) = &mut h.link {
                        l.up = false
                    }
                },
                "wr0123456789ab is down",
            ),
            (
                |h, _| h.addresses.clear(),
                "lacks the gateway address 10.244.1.1/32",
            ),
            (
                |h, _| h.routes[0].oif = Some(99),
                "no route 10.244.1.7/32 dev wr0123456789ab",
            ),
            (|_, p| p.link = None, "pod: interface eth0 does not exist"),
            (
                |_, p| {
                    if let Some(l) = &mut p.link {
                        l.mtu = Some(9000)
                    }
                },
                "MTU",
            ),
            (
                |_, p| p.addresses = vec![(ip("10.244.1.7"), 24)],
                "lacks the address 10.244.1.7/32",
            ),
            (
                |_, p| p.routes[0].scope = RouteScope::Universe,
                "scope link",
            ),
            (
                |_, p| p.routes.truncate(1),
                "no default route via 10.244.1.1",
            ),
        ];
        for (breakage, needle) in cases {
            let (mut host, mut pod) = healthy();
            breakage(&mut host, &mut pod);
            let problems = check_problems(&expected(), &host, &pod);
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle:?} not in {problems:?}"
            );
        }
    }

    #[test]
    fn prev_result_matching() {
        let prev = serde_json::json!({"ips": [{"address": "10.244.1.7/32", "interface": 1}]});
        assert!(prev_result_lists(&prev, ip("10.244.1.7")));
        assert!(!prev_result_lists(&prev, ip("10.244.1.8")));
        assert!(!prev_result_lists(&serde_json::json!({}), ip("10.244.1.7")));
    }
}
