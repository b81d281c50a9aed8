//! Pure allocators for cluster resources: service cluster IPs, node ports and
//! per-node pod CIDRs.
//!
//! They take the set in use and return a choice; the API server derives the
//! used set from etcd and stores the choice together with the object in one
//! transaction, so two concurrent creates can never get the same value.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// The default NodePort range (Kubernetes' `--service-node-port-range`).
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// Why an allocation failed. The `Display` text is Kubernetes' detail message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("failed to allocate IP {ip}: provided IP is already allocated")]
    IpInUse { ip: Ipv4Addr },
    #[error(
        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
    )]
    IpOutOfRange { ip: Ipv4Addr, range: Ipv4Net },
    #[error("failed to allocate a serviceIP: range is full")]
    IpRangeFull,
    #[error("provided port is already allocated")]
    PortInUse { port: u16 },
    #[error("provided port is not in the valid range. The range of valid ports is {}-{}", range.start(), range.end())]
    PortOutOfRange {
        port: i32,
        range: RangeInclusive<u16>,
    },
    #[error("range is full")]
    PortRangeFull,
    #[error("no remaining CIDRs of size /{mask} in the cluster CIDR {cluster}")]
    CidrRangeFull { cluster: Ipv4Net, mask: u8 },
    #[error("cannot split cluster CIDR {cluster} into /{mask} blocks")]
    BadMask { cluster: Ipv4Net, mask: u8 },
    #[error("{ip} is not in the LoadBalancer pool {pool}")]
    LbIpOutOfPool { ip: Ipv4Addr, pool: Ipv4Net },
    #[error("{ip} is already allocated to another LoadBalancer Service")]
    LbIpInUse { ip: Ipv4Addr },
    #[error("the LoadBalancer pool {pool} is exhausted")]
    LbPoolFull { pool: Ipv4Net },
}

/// The addresses of `cidr` that may be handed to services: not the network
/// address, not the broadcast address, and not the first host address, which
/// is reserved for the `kubernetes` service.
fn assignable(cidr: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(cidr.network()).saturating_add(2);
    let last = u32::from(cidr.broadcast()).saturating_sub(1);
    (first..=last).map(Ipv4Addr::from)
}

/// Chooses a cluster IP: the requested one if it is in range and free,
/// otherwise the lowest free address.
pub fn allocate_cluster_ip(
    cidr: Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, AllocError> {
    if let Some(ip) = requested {
        if !cidr.contains(&ip) || ip == cidr.network() || ip == cidr.broadcast() {
            return Err(AllocError::IpOutOfRange { ip, range: cidr });
        }
        if used.contains(&ip) {
            return Err(AllocError::IpInUse { ip });
        }
        return Ok(ip);
    }
    assignable(cidr)
        .find(|ip| !used.contains(ip))
        .ok_or(AllocError::IpRangeFull)
}

/// The `n`-th address (wrapping) among the assignable addresses of `cidr`,
/// the ones [`allocate_cluster_ip`] hands out: a cursor over the range, so
/// the API server can test the next few addresses for being free one key at
/// a time instead of reading the whole used set. `None` if `cidr` has no
/// assignable address.
pub fn cluster_ip_candidate(cidr: Ipv4Net, n: u64) -> Option<Ipv4Addr> {
    let first = u32::from(cidr.network()).saturating_add(2);
    let last = u32::from(cidr.broadcast()).saturating_sub(1);
    let count = u64::from(last.checked_sub(first)?) + 1;
    // `n % count` < count <= 2^32, so the sum stays within `last`.
    let offset = u32::try_from(n % count).ok()?;
    Some(Ipv4Addr::from(first + offset))
}

/// Chooses a node port: the requested one (non-zero) if in range and free,
/// otherwise the lowest free port of `range`.
pub fn allocate_node_port(
    range: RangeInclusive<u16>,
    used: &BTreeSet<u16>,
    requested: Option<i32>,
) -> Result<u16, AllocError> {
    if let Some(port) = requested.filter(|p| *p != 0) {
        let p = u16::try_from(port)
            .ok()
            .filter(|p| range.contains(p))
            .ok_or_else(|| AllocError::PortOutOfRange {
                port,
                range: range.clone(),
            })?;
        if used.contains(&p) {
            return Err(AllocError::PortInUse { port: p });
        }
        return Ok(p);
    }
    range
        .into_iter()
        .find(|p| !used.contains(p))
        .ok_or(AllocError::PortRangeFull)
}

/// Chooses the next free `/mask` block of the cluster CIDR for a node.
///
/// The first block (e.g. 10.244.0.0/24) is never handed out, so the first node
/// gets 10.244.1.0/24 and no pod address equals the cluster network address.
pub fn allocate_pod_cidr(
    cluster: Ipv4Net,
    mask: u8,
    used: &BTreeSet<Ipv4Net>,
) -> Result<Ipv4Net, AllocError> {
    if mask < cluster.prefix_len() || mask > 30 {
        return Err(AllocError::BadMask { cluster, mask });
    }
    let blocks = cluster
        .subnets(mask)
        .map_err(|_| AllocError::BadMask { cluster, mask })?;
    blocks
        .skip(1)
        .find(|b| !used.iter().any(|u| u.contains(b) || b.contains(u)))
        .ok_or(AllocError::CidrRangeFull { cluster, mask })
}

/// Chooses the LoadBalancer ingress address of a Service from `pool`
/// (LB-IPAM, like MetalLB or Cilium's LB-IPAM in layer-2 mode).
///
/// Every address of the pool is assignable, network and broadcast included:
/// the pool is a slice of the node underlay, not a subnet of its own.
/// `held` is what the Service already has; it is kept unless the Service asks
/// for another address (`spec.loadBalancerIP`). A full pool is an error the
/// caller turns into "pending" (no ingress yet), as Kubernetes leaves a
/// Service without a load balancer pending rather than rejecting it.
pub fn allocate_lb_ip(
    pool: Ipv4Net,
    used: &BTreeSet<Ipv4Addr>,
    held: Option<Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, AllocError> {
    match (requested, held) {
        (Some(ip), Some(h)) if ip == h => Ok(ip),
        (Some(ip), _) => {
            if !pool.contains(&ip) {
                return Err(AllocError::LbIpOutOfPool { ip, pool });
            }
            if used.contains(&ip) {
                return Err(AllocError::LbIpInUse { ip });
            }
            Ok(ip)
        }
        (None, Some(h)) => Ok(h),
        (None, None) => pool
            .hosts()
            .chain([pool.network(), pool.broadcast()])
            .find(|ip| !used.contains(ip))
            .ok_or(AllocError::LbPoolFull { pool }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_ip_candidate_table() {
        let cases: Vec<(&str, &str, u64, Option<&str>)> = vec![
            (
                "0 is the first assignable (.2)",
                "10.96.0.0/16",
                0,
                Some("10.96.0.2"),
            ),
            (
                "wraps at the count",
                "10.96.0.0/16",
                65533,
                Some("10.96.0.2"),
            ),
            (
                "the last assignable",
                "10.96.0.0/16",
                65532,
                Some("10.96.255.254"),
            ),
            (
                "large draws stay in range",
                "10.96.0.0/16",
                u64::MAX,
                Some("10.96.0.82"),
            ),
            (
                "a /30 has one assignable",
                "10.96.0.0/30",
                7,
                Some("10.96.0.2"),
            ),
            ("a /31 has none", "10.96.0.0/31", 1, None),
            ("a /32 has none", "10.96.0.7/32", 1, None),
        ];
        for (name, cidr, n, want) in cases {
            assert_eq!(
                cluster_ip_candidate(net(cidr), n),
                want.map(ip),
                "case: {name}"
            );
        }
        // Every candidate is one `allocate_cluster_ip` accepts as requested.
        let cidr = net("10.96.0.0/24");
        for n in 0..600 {
            let c = cluster_ip_candidate(cidr, n).expect("candidate");
            assert_eq!(
                allocate_cluster_ip(cidr, &BTreeSet::new(), Some(c)),
                Ok(c),
                "cursor {n}"
            );
            assert_ne!(c, ip("10.96.0.1"), "reserved for the kubernetes service");
        }
    }

    #[test]
    fn cluster_ip_cases() {
        let cidr = net("10.96.0.0/16");
        let used: BTreeSet<Ipv4Addr> = [ip("10.96.0.2"), ip("10.96.0.5")].into();
        let cases: Vec<(&str, Option<&str>, Result<Ipv4Addr, AllocError>)> = vec![
            (
                "lowest free skips network, .1 and used",
                None,
                Ok(ip("10.96.0.3")),
            ),
            ("requested free", Some("10.96.0.9"), Ok(ip("10.96.0.9"))),
            (
                "requested in use",
                Some("10.96.0.5"),
                Err(AllocError::IpInUse {
                    ip: ip("10.96.0.5"),
                }),
            ),
            (
                "out of range",
                Some("10.0.0.5"),
                Err(AllocError::IpOutOfRange {
                    ip: ip("10.0.0.5"),
                    range: cidr,
                }),
            ),
            (
                "network address",
                Some("10.96.0.0"),
                Err(AllocError::IpOutOfRange {
                    ip: ip("10.96.0.0"),
                    range: cidr,
                }),
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(
                allocate_cluster_ip(cidr, &used, req.map(ip)),
                want,
                "{name}"
            );
        }
        assert_eq!(
            AllocError::IpInUse {
                ip: ip("10.96.0.5")
            }
            .to_string(),
            "failed to allocate IP 10.96.0.5: provided IP is already allocated"
        );
    }

    #[test]
    fn cluster_ip_range_full() {
        let cidr = net("10.96.0.0/30"); // .0 network, .1 reserved, .2 only, .3 broadcast
        assert_eq!(
            allocate_cluster_ip(cidr, &BTreeSet::new(), None),
            Ok(ip("10.96.0.2"))
        );
        let used = [ip("10.96.0.2")].into();
        assert_eq!(
            allocate_cluster_ip(cidr, &used, None),
            Err(AllocError::IpRangeFull)
        );
    }

    #[test]
    fn node_port_cases() {
        let used: BTreeSet<u16> = [30000, 30001].into();
        let cases: Vec<(Option<i32>, Result<u16, AllocError>)> = vec![
            (None, Ok(30002)),
            (Some(0), Ok(30002)),
            (Some(30080), Ok(30080)),
            (Some(30001), Err(AllocError::PortInUse { port: 30001 })),
            (
                Some(80),
                Err(AllocError::PortOutOfRange {
                    port: 80,
                    range: NODE_PORT_RANGE,
                }),
            ),
            (
                Some(70000),
                Err(AllocError::PortOutOfRange {
                    port: 70000,
                    range: NODE_PORT_RANGE,
                }),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(
                allocate_node_port(NODE_PORT_RANGE, &used, req),
                want,
                "{req:?}"
            );
        }
        assert_eq!(
            allocate_node_port(30000..=30001, &used, None),
            Err(AllocError::PortRangeFull)
        );
        assert_eq!(
            AllocError::PortOutOfRange {
                port: 80,
                range: NODE_PORT_RANGE
            }
            .to_string(),
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
    }

    #[test]
    fn pod_cidr_cases() {
        let cluster = net("10.244.0.0/16");
        let cases: Vec<(Vec<&str>, u8, Result<Ipv4Net, AllocError>)> = vec![
            (vec![], 24, Ok(net("10.244.1.0/24"))),
            (
                vec!["10.244.1.0/24", "10.244.2.0/24"],
                24,
                Ok(net("10.244.3.0/24")),
            ),
            (vec!["10.244.2.0/24"], 24, Ok(net("10.244.1.0/24"))),
            (vec![], 8, Err(AllocError::BadMask { cluster, mask: 8 })),
        ];
        for (used, mask, want) in cases {
            let used: BTreeSet<Ipv4Net> = used.into_iter().map(net).collect();
            assert_eq!(allocate_pod_cidr(cluster, mask, &used), want, "{used:?}");
        }
        let small = net("10.244.0.0/23");
        let used = [net("10.244.1.0/24")].into();
        assert_eq!(
            allocate_pod_cidr(small, 24, &used),
            Err(AllocError::CidrRangeFull {
                cluster: small,
                mask: 24
            })
        );
    }

    #[test]
    fn lb_ip_cases() {
        let pool = net("172.30.0.200/29");
        let used: BTreeSet<Ipv4Addr> = [ip("172.30.0.201"), ip("172.30.0.203")].into();
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Result<Ipv4Addr, AllocError>,
        );
        let cases: Vec<Case> = vec![
            ("lowest free host", None, None, Ok(ip("172.30.0.202"))),
            (
                "held is kept",
                Some("172.30.0.203"),
                None,
                Ok(ip("172.30.0.203")),
            ),
            (
                "requested equal to held",
                Some("172.30.0.203"),
                Some("172.30.0.203"),
                Ok(ip("172.30.0.203")),
            ),
            (
                "requested free",
                Some("172.30.0.203"),
                Some("172.30.0.205"),
                Ok(ip("172.30.0.205")),
            ),
            (
                "requested in use",
                None,
                Some("172.30.0.201"),
                Err(AllocError::LbIpInUse {
                    ip: ip("172.30.0.201"),
                }),
            ),
            (
                "requested outside the pool",
                None,
                Some("172.30.0.100"),
                Err(AllocError::LbIpOutOfPool {
                    ip: ip("172.30.0.100"),
                    pool,
                }),
            ),
            (
                "network address is usable",
                None,
                Some("172.30.0.200"),
                Ok(ip("172.30.0.200")),
            ),
        ];
        for (name, held, req, want) in cases {
            assert_eq!(
                allocate_lb_ip(pool, &used, held.map(ip), req.map(ip)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn lb_pool_exhaustion_uses_every_address_then_fails() {
        let pool = net("172.30.0.200/30");
        let mut used = BTreeSet::new();
        for _ in 0..4 {
            let got = allocate_lb_ip(pool, &used, None, None).unwrap();
            assert!(pool.contains(&got));
            assert!(used.insert(got), "{got} handed out twice");
        }
        assert_eq!(
            allocate_lb_ip(pool, &used, None, None),
            Err(AllocError::LbPoolFull { pool })
        );
    }
}
