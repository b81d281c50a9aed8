//! The pod fast path's map ABI (agent flag `--pod-redirect`, on by default).
//!
//! The from-pod program delivers a packet it lets through straight into the
//! network namespace of a pod of the same node (`bpf_redirect_peer` to the
//! destination's host-side veth), past the node's routing, netfilter
//! FORWARD, neighbour output, qdisc and the second veth transmit, when both
//! the veth it arrived on and the veth the FIB routes its destination to are
//! registered in [`map_names::POD_IFACES`]. The agent registers every
//! host-side pod veth it attached the pod programs to while the fast path
//! is on, and empties the map when it is off: an empty map is the switch.
//!
//! The map holds interfaces, not addresses, so it needs no update when a pod
//! is renumbered; the FIB (weir-cni's /32 route and the kernel's neighbour
//! entry) says which veth an address is behind and which MACs to write.

/// Map names.
pub mod map_names {
    /// Hash: ifindex of a host-side pod veth (`u32`) -> [`super::POD_IFACE_ON`].
    pub const POD_IFACES: &str = "WEIR_POD_IFS";
}

/// Capacity of [`map_names::POD_IFACES`]: host-side pod veths of one node.
pub const POD_IFACES_MAX_ENTRIES: u32 = 4_096;

/// The value of a registered interface (the only one written today).
pub const POD_IFACE_ON: u32 = 1;
