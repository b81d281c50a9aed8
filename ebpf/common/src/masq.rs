//! The masquerade map ABI: pod traffic leaving the cluster gets the node's
//! address as its source (issue 5).
//!
//! The tc program at TCX egress of the node interface (`weir_node_egress`)
//! source-translates a new TCP/UDP connection when
//! - masquerading is on ([`MasqConfig::enabled`]),
//! - its source is in this node's pod CIDR ([`MasqConfig::pod_net`]/`pod_mask`),
//! - and its destination is in no non-masqueraded prefix
//!   ([`map_names::MASQ_SKIP`], an LPM trie the agent fills with the
//!   cluster's pod CIDR, the configured `--non-masquerade-cidr`s and every
//!   node's address, so traffic between pods and to nodes keeps the pod address).
//!
//! The source port comes from the NodePort SNAT range
//! ([`crate::NODEPORT_SNAT_PORT_MIN`]..): both translate to the node address,
//! so they share one port space, claimed through the reverse entries in
//! `WEIR_CT` (keyed destination -> node:port, flagged
//! [`crate::CT_FLAG_MASQ`]). The node-ingress program turns replies back
//! with that entry. The forward entries (pod -> destination) live in their
//! own map ([`map_names::MASQ_CT`]): in `WEIR_CT` the pod hooks would see
//! them and take them for their own connections.

/// Map names.
pub mod map_names {
    /// Array of one [`super::MasqConfig`].
    pub const MASQ_CONFIG: &str = "WEIR_MASQ_CFG";
    /// LPM trie: destination prefix -> 1, the destinations never masqueraded.
    pub const MASQ_SKIP: &str = "WEIR_MASQ_SKIP";
    /// LRU hash: `CtKey` of the pod's packet -> `CtValue` (forward entries).
    pub const MASQ_CT: &str = "WEIR_MASQ_CT";
}

/// Capacity of the non-masqueraded prefix trie (configured CIDRs + nodes).
pub const MASQ_SKIP_MAX_ENTRIES: u32 = 4_096;
/// Capacity of the forward masquerade entries (one per connection).
pub const MASQ_CT_MAX_ENTRIES: u32 = 65_536;

/// What the masquerade program needs to know about this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqConfig {
    /// This node's pod CIDR, network address, network byte order.
    pub pod_net: u32,
    /// Its netmask, network byte order (`pod_net & pod_mask == pod_net`).
    pub pod_mask: u32,
    /// 1: masquerade; 0: leave every packet alone.
    pub enabled: u32,
    /// Must be zero.
    pub _pad: u32,
}

impl MasqConfig {
    /// Whether `addr` (network byte order) is in this node's pod CIDR.
    pub const fn is_local_pod(&self, addr: u32) -> bool {
        self.enabled != 0 && addr & self.pod_mask == self.pod_net
    }
}

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
mod pod {
    // SAFETY: #[repr(C)] of four u32, no implicit padding: every bit
    // pattern is a valid value and there are no pointers.
    unsafe impl aya::Pod for super::MasqConfig {}
}

const _: () = assert!(core::mem::size_of::<MasqConfig>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_pod_match() {
        // 10.244.2.0/24 in network byte order (bytes as on the wire).
        let net = u32::from_ne_bytes([10, 244, 2, 0]);
        let mask = u32::from_ne_bytes([255, 255, 255, 0]);
        let on = MasqConfig {
            pod_net: net,
            pod_mask: mask,
            enabled: 1,
            _pad: 0,
        };
        let cases = [
            ([10, 244, 2, 7], true),
            ([10, 244, 2, 255], true),
            ([10, 244, 3, 7], false),
            ([172, 30, 0, 11], false),
        ];
        for (ip, want) in cases {
            assert_eq!(on.is_local_pod(u32::from_ne_bytes(ip)), want, "{ip:?}");
        }
        let off = MasqConfig { enabled: 0, ..on };
        assert!(!off.is_local_pod(u32::from_ne_bytes([10, 244, 2, 7])));
    }
}
