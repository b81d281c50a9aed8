//! The NetworkPolicy map ABI: identities, the ipcache, the local endpoints
//! and the per-endpoint policy entries (issue 6).
//!
//! # Model
//!
//! Every address the datapath can see is mapped by the **ipcache** (an LPM
//! trie) to two numbers:
//! - a *security identity* ([`IpcacheValue::identity`]): one per distinct
//!   (namespace, pod labels) set, or a reserved identity (this node, another
//!   node, the outside world, an unmanaged pod address);
//! - a *CIDR identity* ([`IpcacheValue::cidr_identity`]): the most specific
//!   `ipBlock` prefix (a `cidr` or one of its `except`s) containing the
//!   address, 0 when none does.
//!
//! Keeping both in one value is what makes `ipBlock` match pod addresses:
//! a pod's `/32` carries its pod identity (for `podSelector` /
//! `namespaceSelector` rules) *and* the CIDR identity of the innermost
//! ipBlock prefix around it (for `ipBlock` rules), so neither kind of rule
//! shadows the other in the longest-prefix match.
//!
//! A pod on this node is an **endpoint** ([`EndpointKey`] -> [`EndpointValue`]):
//! a small per-node number that keys its policy entries. The **policy** map
//! (another LPM trie, [`PolicyKey`] -> [`PolicyValue`]) holds the allowed
//! (remote identity, protocol, port block) of each endpoint and direction;
//! absence means deny. A direction that no policy isolates holds one
//! wildcard entry ([`POLICY_PREFIX_ANY_IDENTITY`]) allowing everything.
//!
//! # Lookup (what the tc programs do on a conntrack miss)
//!
//! ```text
//! ep  = WEIR_POL_EP[local pod address]            // none: not a pod of this node
//! rem = WEIR_IPCACHE[LPM remote address]           // always hits (0.0.0.0/0 = world)
//! for id in [rem.identity, rem.cidr_identity (if != 0), identity::ANY]:
//!     key = Key::new(POLICY_PREFIX_FULL, PolicyKey::lookup(ep.endpoint_id, dir, id, proto, port))
//!     if let Some(v) = WEIR_POLICY[LPM key]:
//!         allow, log v.policy_id
//! deny
//! ```
//!
//! The loop is [`decide`], shared by the tc programs and the agent (which
//! replays it over its compiled maps to test and explain decisions). At
//! most three trie lookups, only for the first packet of a connection:
//! replies and later packets of an allowed connection pass on the conntrack
//! entry (NetworkPolicy is stateful), which is what makes "replies of allowed
//! connections pass" hold without reply rules.
//!
//! # Port ranges
//!
//! `port`/`endPort` ranges are split into prefix-aligned port blocks
//! (`[lo, hi]` becomes at most 30 blocks of `2^k` ports starting at a
//! multiple of `2^k`), each one trie entry whose prefix ends `16 - k` bits
//! into the port. The alternative, one exact entry per port, costs up to
//! 65,536 entries for `1-65535`; prefix blocks cost at most 30, and the
//! common cases (one port, all ports, a protocol's all ports) cost one entry.
//! The same trie also expresses "all protocols" and "any identity" by
//! stopping the prefix earlier, so the key's field order is
//! (endpoint, direction, identity, protocol, port), from the most to the
//! least significant.
//!
//! # Byte order
//!
//! Addresses and ports are in network byte order as everywhere in this
//! crate (the trie matches prefixes bit by bit from the first byte, so a
//! port prefix needs the port's high byte first). Endpoint ids and
//! identities are in host order: every prefix covers them entirely or not at
//! all, so their byte order never affects a match.
//!
//! Both tries must be created with `BPF_F_NO_PREALLOC` (the kernel requires
//! it for `BPF_MAP_TYPE_LPM_TRIE`).

/// IP protocol number of SCTP (NetworkPolicy's third protocol).
pub const IPPROTO_SCTP: u8 = 132;

/// Map names (at most 15 bytes, as pinned under the agent's bpffs directory).
pub mod map_names {
    /// LPM trie [`crate::policy::IpcacheKey`] -> [`crate::policy::IpcacheValue`]:
    /// which identities an address has.
    pub const IPCACHE: &str = "WEIR_IPCACHE";
    /// Hash [`crate::policy::EndpointKey`] -> [`crate::policy::EndpointValue`]:
    /// the pods of this node that policy is enforced for.
    pub const POLICY_ENDPOINTS: &str = "WEIR_POL_EP";
    /// LPM trie [`crate::policy::PolicyKey`] -> [`crate::policy::PolicyValue`]:
    /// what each endpoint allows, per direction.
    pub const POLICY: &str = "WEIR_POLICY";
}

/// Default capacity of the ipcache: one entry per pod address in the
/// cluster, per node address and per distinct ipBlock prefix.
pub const IPCACHE_MAX_ENTRIES: u32 = 65_536;
/// Default capacity of the local endpoints map (pods on one node; endpoint
/// ids are `u16`).
pub const POLICY_ENDPOINTS_MAX_ENTRIES: u32 = 4_096;
/// Default capacity of the policy trie: the sum over this node's endpoints
/// of (allowed identities x protocol/port blocks), per direction.
pub const POLICY_MAX_ENTRIES: u32 = 262_144;

/// Reserved and range-partitioned identity numbers.
///
/// Identities are node-local: no packet carries one, so each agent numbers
/// them itself (stably across recompiles, see the agent's policy compiler).
pub mod identity {
    /// Wildcard in [`crate::policy::PolicyKey`]: "any remote identity". Never
    /// an ipcache value (so it also stands for "no CIDR identity" there).
    pub const ANY: u32 = 0;
    /// This node: its own addresses and the pod gateway address. Traffic
    /// between a pod and its own node is always allowed, both ways
    /// (kubelet probes; Kubernetes' exception to isolation).
    pub const HOST: u32 = 1;
    /// Any address no more specific ipcache entry covers (outside the
    /// cluster).
    pub const WORLD: u32 = 2;
    /// An address inside the cluster's pod CIDR that no known pod holds (a
    /// pod not yet seen, or just deleted): no pod or namespace selector
    /// matches it, only ipBlocks do.
    pub const UNMANAGED: u32 = 3;
    /// Another node's address.
    pub const REMOTE_NODE: u32 = 4;
    /// First identity allocated to a (namespace, labels) set.
    pub const POD_MIN: u32 = 256;
    /// Last pod identity.
    pub const POD_MAX: u32 = 0x00ff_ffff;
    /// First CIDR identity (an ipBlock prefix). A separate range, so a CIDR
    /// identity can never be mistaken for a pod identity.
    pub const CIDR_MIN: u32 = 0x0100_0000;
    /// Last CIDR identity.
    pub const CIDR_MAX: u32 = 0x01ff_ffff;
}

/// Key data of the ipcache LPM trie (the trie key is this behind a `u32`
/// prefix length, 0..=32, as aya's `lpm_trie::Key<IpcacheKey>` lays it out;
/// lookups use 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheKey {
    /// IPv4 address, network byte order; bits beyond the prefix zero.
    pub addr: u32,
}

impl IpcacheKey {
    /// The key data of an address, from its octets.
    pub const fn new(addr: [u8; 4]) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr),
        }
    }
}

/// Value of the ipcache: the identities of the addresses under a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheValue {
    /// Pod identity (`POD_MIN..=POD_MAX`) or a reserved one; never
    /// [`identity::ANY`].
    pub identity: u32,
    /// The innermost ipBlock prefix containing the address
    /// (`CIDR_MIN..=CIDR_MAX`), or [`identity::ANY`] (0) when none does.
    pub cidr_identity: u32,
}

/// Key of the local endpoints map: a pod address on this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// Pod IPv4 address, network byte order.
    pub addr: u32,
}

/// Value of the local endpoints map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointValue {
    /// The endpoint id that keys this pod's [`PolicyKey`]s (never 0).
    pub endpoint_id: u16,
    /// Must be zero.
    pub _pad: u16,
    /// The pod's own identity (for flow records and conntrack's
    /// `src_identity`).
    pub identity: u32,
}

/// [`PolicyKey::direction`]: traffic arriving at the endpoint.
pub const DIR_INGRESS: u8 = 1;
/// [`PolicyKey::direction`]: traffic the endpoint sends.
pub const DIR_EGRESS: u8 = 2;

/// Prefix length covering (endpoint, direction, pad): the wildcard entry of
/// a direction no policy isolates (any identity, protocol and port).
pub const POLICY_PREFIX_ANY_IDENTITY: u32 = 32;
/// Prefix length up to and including the identity: any protocol and port
/// (a rule without `ports`).
pub const POLICY_PREFIX_ANY_PROTO: u32 = 64;
/// Prefix length up to and including protocol and pad: every port of one
/// protocol (a rule port with a protocol and no port).
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
/// Full key length: one exact port. A block of `2^k` ports uses
/// `POLICY_PREFIX_FULL - k`.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Key data of the policy LPM trie (behind a `u32` prefix length, as aya's
/// `lpm_trie::Key<PolicyKey>` lays it out: 32..=96 for entries,
/// [`POLICY_PREFIX_FULL`] for lookups). Field order = significance order
/// (see the module doc): a prefix can stop after the direction (any
/// identity), after the identity (any protocol), after the protocol (any
/// port) or inside the port (a port block).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// The local endpoint ([`EndpointValue::endpoint_id`]), host order.
    pub endpoint_id: u16,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    /// Must be zero.
    pub _pad0: u8,
    /// The remote identity (source for ingress, destination for egress),
    /// host order; [`identity::ANY`] in wildcard entries.
    pub identity: u32,
    /// IP protocol number; 0 beyond the prefix.
    pub proto: u8,
    /// Must be zero.
    pub _pad1: u8,
    /// Remote port for egress, local port for ingress (the destination
    /// port in both cases), network byte order; bits beyond the prefix zero.
    pub port: u16,
}

impl PolicyKey {
    /// The key data a lookup uses (with prefix length
    /// [`POLICY_PREFIX_FULL`]): every field set. `port` is in host order.
    pub const fn lookup(
        endpoint_id: u16,
        direction: u8,
        identity: u32,
        proto: u8,
        port: u16,
    ) -> Self {
        Self {
            endpoint_id,
            direction,
            _pad0: 0,
            identity,
            proto,
            _pad1: 0,
            port: port.to_be(),
        }
    }
}

/// [`PolicyValue::action`]: the connection is allowed (NetworkPolicy is
/// allow-only; an absent entry is the deny).
pub const POLICY_ACTION_ALLOW: u8 = 1;

/// [`PolicyValue::policy_id`] of the wildcard entry of a direction no
/// policy isolates.
pub const POLICY_ID_UNISOLATED: u32 = 0;
/// [`PolicyValue::policy_id`] of the implicit entries allowing this node
/// (ingress from it, egress to it) on isolated endpoints.
pub const POLICY_ID_HOST: u32 = 1;
/// First id given to a NetworkPolicy (the agent maps ids back to
/// namespace/name for flow records).
pub const POLICY_ID_MIN: u32 = 16;

/// Value of the policy trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyValue {
    /// Which policy allowed it (for flow records): a NetworkPolicy id
    /// (>= [`POLICY_ID_MIN`]) or a reserved `POLICY_ID_*`. When several
    /// policies allow the same entry, the smallest id is kept.
    pub policy_id: u32,
    /// [`POLICY_ACTION_ALLOW`].
    pub action: u8,
    /// Must be zero.
    pub _pad: [u8; 3],
}

/// The policy trie as [`decide`] sees it: implemented by the tc programs
/// over the kernel map and by the agent over its compiled copy, so both
/// follow the one lookup order defined here.
pub trait PolicyLookup {
    /// Longest-prefix lookup of `key` at [`POLICY_PREFIX_FULL`].
    fn policy(&self, key: &PolicyKey) -> Option<PolicyValue>;
}

/// The policy decision for one endpoint and direction, given the remote
/// address's ipcache value: the remote's identity, then its CIDR identity
/// (if any), then the any-identity entries. `Some` = allowed (by
/// `policy_id`), `None` = denied. At most three lookups, written out (no
/// loop) for the verifier.
#[inline(always)]
pub fn decide<L: PolicyLookup>(
    maps: &L,
    endpoint_id: u16,
    direction: u8,
    remote: &IpcacheValue,
    proto: u8,
    port: u16,
) -> Option<PolicyValue> {
    let by = |id| maps.policy(&PolicyKey::lookup(endpoint_id, direction, id, proto, port));
    if let Some(v) = by(remote.identity) {
        return Some(v);
    }
    if remote.cidr_identity != identity::ANY
        && let Some(v) = by(remote.cidr_identity)
    {
        return Some(v);
    }
    by(identity::ANY)
}

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)], integers only, explicit padding fields (sizes are
    // pinned below), so every bit pattern is valid and no byte is implicit
    // padding.
    unsafe impl aya::Pod for IpcacheKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpcacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EndpointValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyValue {}
}

// Kernel ABI: pin the layouts.
const _: () = assert!(core::mem::size_of::<IpcacheKey>() == 4);
const _: () = assert!(core::mem::size_of::<IpcacheValue>() == 8);
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 4);
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);
// The trie's key data must be exactly the full prefix.
const _: () = assert!(core::mem::size_of::<PolicyKey>() * 8 == POLICY_PREFIX_FULL as usize);
