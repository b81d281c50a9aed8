//! The benchmark's address plan: pure functions shared by the orchestrator,
//! the client, the server and the rule generators, so every variant talks to
//! exactly the same addresses.
//!
//! - clients ("pods" on the node): 10.244.0.10 .. 10.244.0.(10+SOURCES-1), gateway 10.244.0.1;
//! - the server netns: 10.244.255.2, gateway 10.244.255.1, and every backend
//!   address in 10.245.0.0/16 is local to it (an AnyIP `local` route), so
//!   4 × 10,000 distinct backend pod IPs need no per-address configuration;
//! - service VIPs: 10.96.128.0 + i, port 80 -> backends' port 8080.
//!
//! Distinct backend addresses per service matter: many VIPs mapping to one
//! backend address:port make the backend's PAWS check reject reused tuples
//! (see shared/ENVIRONMENT.md).

use std::net::{Ipv4Addr, SocketAddrV4};

/// Endpoints behind every service.
pub const ENDPOINTS_PER_SERVICE: u32 = 4;
/// Service port (the VIP side).
pub const SERVICE_PORT: u16 = 80;
/// Backend port (the EndpointSlice port / targetPort).
pub const TARGET_PORT: u16 = 8080;
/// Client source addresses; several of them so that NAT never runs out of
/// tuples (one address × few backends would).
pub const SOURCES: u32 = 16;
/// Largest service count the plan can address (backends must fit 10.245/16).
pub const MAX_SERVICES: u32 = 16_000;

/// The UDP NodePort service of the NodePort runs: its number (for its VIP
/// and backend addresses, beyond any service count the runs use).
pub const NODEPORT_SERVICE: u32 = MAX_SERVICES - 1;
/// Its node port.
pub const NODE_PORT: u16 = 30080;

/// The pod CIDR the iptables rules treat as "in cluster" (clients and
/// backends are both inside it, so pod -> service traffic is not masqueraded,
/// exactly as for a pod in a real cluster).
pub const CLUSTER_CIDR: &str = "10.240.0.0/12";
/// Backend addresses, all local to the server netns.
pub const BACKEND_CIDR: &str = "10.245.0.0/16";
/// Service VIPs.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The node's own address, on its underlay interface `eth0` (not on a pod
/// veth: the agent attaches its node-interface programs where the node IP is).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 1);
/// The external client's address, on the node's underlay (NodePort runs).
pub const EXTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 2);
pub const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const SERVER_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 255, 1);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 244, 255, 2);

/// VIP of service `i` (0-based).
pub fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 128, 0)) + i)
}

/// Address of endpoint `j` of service `i`.
pub fn backend(i: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 0)) + 1 + i * ENDPOINTS_PER_SERVICE + j)
}

/// Client source address `k`.
pub fn source(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 10)) + k)
}

/// What the client connects to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Every backend pod IP directly (variant "direct").
    Backends,
    /// Every service VIP.
    Vips,
}

/// The target set for `services` services: either every VIP:80 or every
/// backend:8080. Both sets spread connections evenly over the same backends.
pub fn targets(kind: TargetKind, services: u32) -> Vec<SocketAddrV4> {
    match kind {
        TargetKind::Vips => (0..services)
            .map(|i| SocketAddrV4::new(vip(i), SERVICE_PORT))
            .collect(),
        TargetKind::Backends => (0..services)
            .flat_map(|i| {
                (0..ENDPOINTS_PER_SERVICE)
                    .map(move |j| SocketAddrV4::new(backend(i, j), TARGET_PORT))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_their_ranges_at_the_largest_n() {
        let last = MAX_SERVICES - 1;
        let cases = [
            (vip(0), Ipv4Addr::new(10, 96, 128, 0)),
            (vip(last), Ipv4Addr::new(10, 96, 190, 127)),
            (backend(0, 0), Ipv4Addr::new(10, 245, 0, 1)),
            (backend(0, 3), Ipv4Addr::new(10, 245, 0, 4)),
            (backend(1, 0), Ipv4Addr::new(10, 245, 0, 5)),
            (backend(last, 3), Ipv4Addr::new(10, 245, 250, 0)),
            (source(0), Ipv4Addr::new(10, 244, 0, 10)),
            (source(SOURCES - 1), Ipv4Addr::new(10, 244, 0, 25)),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn target_sets_cover_every_service_or_backend_once() {
        let vips = targets(TargetKind::Vips, 3);
        assert_eq!(vips.len(), 3);
        assert!(vips.iter().all(|t| t.port() == SERVICE_PORT));
        let backends = targets(TargetKind::Backends, 3);
        assert_eq!(backends.len(), 12);
        assert!(backends.iter().all(|t| t.port() == TARGET_PORT));
        let mut unique = backends.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 12, "backend addresses must be distinct");
    }
}
