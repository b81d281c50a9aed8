//! The datapath's policy decision, evaluated in user space over compiled
//! maps exactly as the tc programs will look them up (see the "Lookup"
//! section of `weir_ebpf_common::policy`): byte-wise longest-prefix match on
//! the same key layouts. Tests use it to check the compiler end to end; the
//! agent can use it to explain a flow.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weir_ebpf_common::policy::{
    self, DIR_EGRESS, DIR_INGRESS, EndpointKey, EndpointValue, IpcacheKey, IpcacheValue,
    POLICY_PREFIX_FULL, PolicyKey, PolicyLookup, PolicyValue, identity,
};

use super::{LpmKey, PolicyMaps};

/// What one node decided for one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The address is not an endpoint of this node: another node (or
    /// nobody) enforces this direction.
    NotLocal,
    /// Allowed by the entry of this policy id.
    Allowed { policy_id: u32 },
    /// No entry allows it.
    Denied,
}

impl Decision {
    /// True unless denied.
    pub fn passes(self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

/// One node's decision on the first packet of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The source endpoint's egress policy.
    pub egress: Decision,
    /// The destination endpoint's ingress policy.
    pub ingress: Decision,
}

impl Verdict {
    /// Both directions pass.
    pub fn allowed(self) -> bool {
        self.egress.passes() && self.ingress.passes()
    }
}

/// The three policy maps as a lookup sees them: the compiled copy
/// ([`PolicyMaps`], emulating the kernel's LPM trie) or the kernel maps
/// themselves (the privileged test compares the two).
pub trait PolicyView: PolicyLookup {
    /// `WEIR_POL_EP[addr]`.
    fn endpoint(&self, addr: Ipv4Addr) -> Option<EndpointValue>;
    /// `WEIR_IPCACHE[addr/32]`, longest prefix.
    fn ipcache(&self, addr: Ipv4Addr) -> Option<IpcacheValue>;
}

/// The decision for a new connection `src -> dst:port/proto` (after service
/// translation) on the node whose maps these are.
///
/// A pod reaching itself is always allowed; in the datapath that traffic
/// never reaches a veth (it stays on the pod's loopback) except through a
/// hairpin service connection, which the tc program must exempt the same way.
pub fn verdict<M: PolicyView>(
    maps: &M,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> Verdict {
    if src == dst {
        let ok = Decision::Allowed { policy_id: 0 };
        return Verdict {
            egress: ok,
            ingress: ok,
        };
    }
    Verdict {
        egress: decide(maps, src, dst, DIR_EGRESS, proto, port),
        ingress: decide(maps, dst, src, DIR_INGRESS, proto, port),
    }
}

fn decide<M: PolicyView>(
    maps: &M,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    direction: u8,
    proto: u8,
    port: u16,
) -> Decision {
    let Some(ep) = maps.endpoint(local) else {
        return Decision::NotLocal;
    };
    // The ipcache always has 0.0.0.0/0; the fallback only matters for a
    // hand-made map.
    let rem = maps.ipcache(remote).unwrap_or(IpcacheValue {
        identity: identity::WORLD,
        cidr_identity: identity::ANY,
    });
    match policy::decide(maps, ep.endpoint_id, direction, &rem, proto, port) {
        Some(v) => Decision::Allowed {
            policy_id: v.policy_id,
        },
        None => Decision::Denied,
    }
}

impl PolicyView for PolicyMaps {
    fn endpoint(&self, addr: Ipv4Addr) -> Option<EndpointValue> {
        self.endpoints
            .get(&EndpointKey {
                addr: u32::from(addr).to_be(),
            })
            .copied()
    }

    fn ipcache(&self, addr: Ipv4Addr) -> Option<IpcacheValue> {
        ipcache_lookup(&self.ipcache, addr)
    }
}

impl PolicyLookup for PolicyMaps {
    fn policy(&self, key: &PolicyKey) -> Option<PolicyValue> {
        lpm(
            &self.policy,
            POLICY_PREFIX_FULL,
            &policy_bytes(key),
            policy_bytes,
        )
        .copied()
    }
}

/// The ipcache's answer for `addr`.
pub fn ipcache_lookup(
    ipcache: &BTreeMap<LpmKey<IpcacheKey>, IpcacheValue>,
    addr: Ipv4Addr,
) -> Option<IpcacheValue> {
    let bytes = u32::from(addr).to_be().to_ne_bytes();
    lpm(ipcache, 32, &bytes, |k| k.addr.to_ne_bytes().to_vec()).copied()
}

/// The key data in memory order, as the kernel compares it.
fn policy_bytes(k: &PolicyKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&k.endpoint_id.to_ne_bytes());
    b.push(k.direction);
    b.push(k._pad0);
    b.extend_from_slice(&k.identity.to_ne_bytes());
    b.push(k.proto);
    b.push(k._pad1);
    b.extend_from_slice(&k.port.to_ne_bytes());
    b
}

/// `BPF_MAP_TYPE_LPM_TRIE` lookup: among entries whose first `prefixlen`
/// bits equal the key's, the longest (and the kernel caps the match at the
/// lookup key's own prefix length).
fn lpm<'m, K, V>(
    map: &'m BTreeMap<LpmKey<K>, V>,
    key_len: u32,
    key: &[u8],
    data: impl Fn(&K) -> Vec<u8>,
) -> Option<&'m V> {
    map.iter()
        .filter_map(|((len, k), v)| {
            let len = *len;
            (len <= key_len && prefix_eq(&data(k), key, len)).then_some((len, v))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, v)| v)
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let bits = bits as usize;
    let (full, rest) = (bits / 8, bits % 8);
    if a.len() < full || b.len() < full || a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}
