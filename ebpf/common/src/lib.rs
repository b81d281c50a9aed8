//! The map ABI shared by weir's eBPF programs (`ebpf/programs`) and the agent
//! that fills the maps (`agent/datapath`, package weir-datapath).
//!
//! Every key, value and constant a map uses is defined here exactly once, as a
//! `#[repr(C)]` struct with explicit padding, so the kernel side and user space
//! can never disagree about a layout. The eBPF crate depends on this crate with
//! no features; the agent enables `user`, which implements `aya::Pod` so the
//! types can be read from and written to maps.
//!
//! Byte order: addresses and ports are kept in **network byte order** (exactly
//! as they sit in the packet), so the datapath compares and copies them without
//! conversions. User space converts with `u32::from(Ipv4Addr).to_be()` and
//! `port.to_be()`; the helper constructors below do it.
//!
//! Padding fields are named `_pad*` and must be zero: map keys are compared
//! byte-wise by the kernel, so a non-zero pad byte would make a key unfindable.
#![no_std]
// Only the `aya::Pod` marker impls (feature `user`) are unsafe.
#![deny(unsafe_code)]

pub mod dsr;
pub mod flow;
pub mod maglev;
pub mod masq;
pub mod policy;
pub mod redirect;
pub mod txgen;
pub mod xdp;

/// IP protocol number of TCP (the `proto` field of keys).
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Map names, as the programs declare them with `#[map(name = ..)]` and as
/// they are pinned under the agent's bpffs directory. At most 15 bytes
/// (`BPF_OBJ_NAME_LEN` - 1).
pub mod map_names {
    /// [`crate::ServiceKey`] -> [`crate::ServiceValue`].
    pub const SERVICES: &str = "WEIR_SERVICES";
    /// [`crate::BackendKey`] -> [`crate::Backend`].
    pub const BACKENDS: &str = "WEIR_BACKENDS";
    /// [`crate::CtKey`] -> [`crate::CtValue`].
    pub const CONNTRACK: &str = "WEIR_CT";
    /// [`crate::SockRevKey`] -> [`crate::SockRevValue`].
    pub const SOCK_REV: &str = "WEIR_SOCK_REV";
    /// [`crate::AffinityKey`] -> [`crate::AffinityValue`].
    pub const AFFINITY: &str = "WEIR_AFFINITY";
    /// Per-CPU array of `u64` counters indexed by [`crate::drop_reason`].
    pub const DROPS: &str = "WEIR_DROPS";
    /// One-element array holding the [`crate::NodeValue`] of this node.
    pub const NODE: &str = "WEIR_NODE";
    /// LPM trie of [`crate::SourceRangeKey`] -> `u8` (1).
    pub const SOURCE_RANGES: &str = "WEIR_SRC_RANGES";
}

/// Why the datapath dropped a packet (or refused a socket call): the indices
/// of the per-CPU `WEIR_DROPS` counters, so an operator can tell a missing
/// backend from a full table.
pub mod drop_reason {
    /// A new connection to a frontend without usable backends.
    pub const NO_BACKEND: u32 = 0;
    /// A conntrack or socket reverse-map insert failed (map full or error).
    pub const MAP_INSERT: u32 = 1;
    /// No free NodePort SNAT port towards the chosen backend.
    pub const SNAT_PORTS: u32 = 2;
    /// A header rewrite failed halfway (the packet would have been corrupt).
    pub const REWRITE: u32 = 3;
    /// No route for a translated NodePort packet (FIB lookup failed).
    pub const NO_ROUTE: u32 = 4;
    /// The client is outside the frontend's `loadBalancerSourceRanges`.
    pub const SOURCE_RANGE: u32 = 5;
    /// NetworkPolicy denied a new connection (egress of the source or
    /// ingress of the destination).
    pub const POLICY_DENIED: u32 = 6;
    /// A packet carried a DSR option (see [`crate::dsr`]) that names no DSR
    /// frontend this node knows, or whose destination is not one of that
    /// frontend's backends on this node, or that is malformed (wrong
    /// length): a foreign host must not make the node reply from an address
    /// of its choice.
    pub const DSR_INVALID: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
    /// Counter names, by index (for logs and inspection).
    pub const NAMES: [&str; COUNT as usize] = [
        "no_backend",
        "map_insert",
        "snat_ports",
        "rewrite",
        "no_route",
        "source_range",
        "policy_denied",
        "dsr_invalid",
    ];
}

/// Program names (the Rust function names of the entry points), used by the
/// agent to find them in the loaded object.
pub mod program_names {
    /// tc program attached at TCX ingress of every host-side pod veth, i.e. on
    /// packets leaving a pod.
    pub const FROM_POD: &str = "weir_from_pod";
    /// tc program attached at TCX egress of every host-side pod veth, i.e. on
    /// packets the node delivers to a pod.
    pub const TO_POD: &str = "weir_to_pod";
    /// cgroup v2 `connect4` on the node's cgroup subtree: a connect() to a
    /// service frontend goes to a backend instead (socket-level balancing).
    pub const SOCK_CONNECT4: &str = "weir_sock_connect4";
    /// cgroup v2 `sendmsg4`: the same for unconnected UDP sends.
    pub const SOCK_SENDMSG4: &str = "weir_sock_sendmsg4";
    /// cgroup v2 `recvmsg4`: UDP replies from a backend are reported as
    /// coming from the frontend the application sent to.
    pub const SOCK_RECVMSG4: &str = "weir_sock_recvmsg4";
    /// cgroup v2 `getpeername4`: a socket connected through a frontend
    /// reports the frontend as its peer.
    pub const SOCK_GETPEERNAME4: &str = "weir_sock_getpeername4";
    /// tc program attached at TCX ingress of the node interface (`eth0` of
    /// the node netns): NodePort translation of traffic from outside the
    /// node, and reverse translation of replies of remote backends.
    pub const NODE_INGRESS: &str = "weir_node_ingress";
    /// tc program attached at TCX egress of the node interface: masquerade
    /// (SNAT to the node address) of pod traffic leaving the cluster (see
    /// [`crate::masq`]).
    pub const NODE_EGRESS: &str = "weir_node_egress";
    /// XDP program on the node interface: the fast path for new and
    /// established NodePort/LoadBalancer/externalIP connections whose backend
    /// is on another node (see `ebpf/programs/src/xdp.rs`).
    pub const NODE_XDP: &str = "weir_node_xdp";
}

/// Capacity of the services map: one entry per (ClusterIP, port, protocol).
pub const SERVICES_MAX_ENTRIES: u32 = 16_384;
/// Capacity of the backends map. Room for every service's backends twice over,
/// because a backend-set swap writes the new set before deleting the old one.
pub const BACKENDS_MAX_ENTRIES: u32 = 131_072;
/// Capacity of the conntrack LRU map. Each translated connection takes two
/// entries (forward and reverse); when it is full the kernel evicts the least
/// recently used entry rather than failing an insert.
pub const CONNTRACK_MAX_ENTRIES: u32 = 131_072;

/// Capacity of the socket reverse-translation LRU map: one entry per socket
/// (and, for unconnected UDP, per backend it sent to).
pub const SOCK_REV_MAX_ENTRIES: u32 = 65_536;

/// Capacity of the session affinity LRU map: one entry per (client,
/// frontend) of services with `sessionAffinity: ClientIP`.
pub const AFFINITY_MAX_ENTRIES: u32 = 65_536;

/// Key of the services map: a service frontend as it appears in the
/// destination of a packet.
///
/// ClusterIP frontends use the cluster IP; NodePort frontends the node's own
/// address (and [`SERVICE_FLAG_NODEPORT`] in the value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Must be zero.
    pub _pad: u8,
}

impl ServiceKey {
    /// Builds a key from host-order values.
    pub const fn new(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

/// Value of the services map: where this frontend's backends are.
///
/// The backends of a service live in the backends map under
/// `BackendKey { slot: backend_slot, index: 0..backend_count }`. To change the
/// set, the agent writes the new set under a fresh slot, then replaces this
/// value (one atomic map update), then deletes the old slot's entries; a packet
/// therefore sees either the complete old set or the complete new set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// The backend set this frontend currently uses (never 0 when written by
    /// the agent; 0 is reserved as "no slot").
    pub backend_slot: u32,
    /// Number of backends in the set. Zero means the service has no ready
    /// endpoint: the datapath drops new connections to it (as kube-proxy
    /// rejects them) instead of letting them leak to the default route.
    pub backend_count: u32,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u32,
    /// `sessionAffinity: ClientIP` timeout in seconds (0 = no affinity).
    pub affinity_timeout_secs: u32,
}

/// [`ServiceValue::flags`] bit: the frontend is reachable from outside the
/// node: a NodePort on the node's address, or an external IP / load-balancer
/// IP routed to the node. Only such frontends are translated at the node
/// interface; there the client's source is rewritten to the node address
/// ([`NodeValue::addr`]; SNAT) so replies come back through this node, unless
/// [`SERVICE_FLAG_EXT_LOCAL`] is set.
pub const SERVICE_FLAG_NODEPORT: u32 = 1;
/// [`ServiceValue::flags`] bit: `externalTrafficPolicy: Local`. The backend
/// set holds only this node's endpoints, and the client address is kept (no
/// SNAT). An empty set drops the traffic: the node does not answer.
pub const SERVICE_FLAG_EXT_LOCAL: u32 = 2;
/// [`ServiceValue::flags`] bit of an *address marker*: the key
/// `(addr, port 0, proto 0)` (never a real frontend) says this node answers
/// ARP requests for `addr` (a LoadBalancer IP it owns) with the node
/// interface's MAC ([`NodeValue::mac`]), so clients on the same L2 segment
/// reach the LoadBalancer IP through this node.
pub const SERVICE_FLAG_ANNOUNCE: u32 = 4;
/// [`ServiceValue::flags`] bit: new connections from outside the node are
/// accepted only from clients in the frontend's source ranges
/// (`loadBalancerSourceRanges`, in `WEIR_SRC_RANGES`); others are dropped.
pub const SERVICE_FLAG_SOURCE_RANGES: u32 = 8;

/// [`ServiceValue::flags`] bit (with [`SERVICE_FLAG_NODEPORT`], never with
/// [`SERVICE_FLAG_EXT_LOCAL`]): direct server return. A new connection whose
/// backend is on another node keeps the client's address (no SNAT) and
/// carries the frontend to the backend node in an IPv4 option, whose replies
/// go straight to the client (see [`dsr`]). The backend node also needs the
/// bit on its own copy of the frontend to accept such options.
pub const SERVICE_FLAG_DSR: u32 = 16;

/// Capacity of the source ranges LPM trie (all frontends together).
pub const SOURCE_RANGES_MAX_ENTRIES: u32 = 16_384;
/// Bits of a [`SourceRangeKey`] before `src`: a source range of prefix
/// length `n` is stored with LPM prefix length `SOURCE_RANGE_FRONTEND_BITS + n`,
/// so the frontend always matches exactly.
pub const SOURCE_RANGE_FRONTEND_BITS: u32 = 64;

/// Key of the backends map: one backend of one backend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The backend set ([`ServiceValue::backend_slot`]).
    pub slot: u32,
    /// Position in the set, `0..backend_count`.
    pub index: u32,
}

/// Value of the backends map: one endpoint address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// Backend IPv4 address, network byte order.
    pub addr: u32,
    /// Backend port (the EndpointSlice port, i.e. the resolved targetPort),
    /// network byte order.
    pub port: u16,
    /// `BACKEND_FLAG_*` bits; none defined yet (reserved for "terminating",
    /// "local to this node").
    pub flags: u8,
    /// Must be zero.
    pub _pad: u8,
}

impl Backend {
    /// Builds a backend from host-order values.
    pub const fn new(addr: [u8; 4], port: u16) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr),
            port: port.to_be(),
            flags: 0,
            _pad: 0,
        }
    }
}

/// Key of the conntrack map: a packet's 5-tuple exactly as it is on the wire
/// before translation.
///
/// A translated connection has two entries: the forward one keyed by
/// (client -> service frontend), and the reverse one keyed by
/// (backend -> client), so both directions are found with one lookup of the
/// packet's own tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtKey {
    /// Source IPv4 address, network byte order.
    pub saddr: u32,
    /// Destination IPv4 address, network byte order.
    pub daddr: u32,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// [`IPPROTO_TCP`], [`IPPROTO_UDP`], (policy-only entries)
    /// [`policy::IPPROTO_SCTP`] or (masqueraded pings, the echo identifier
    /// in the port fields) ICMP, 1.
    pub proto: u8,
    /// Must be zero.
    pub _pad: [u8; 3],
}

/// [`CtValue::direction`] of an entry keyed by client -> frontend: rewrite the
/// destination to the backend.
pub const CT_DIR_FORWARD: u8 = 1;
/// [`CtValue::direction`] of an entry keyed by backend -> client: rewrite the
/// source back to the frontend.
pub const CT_DIR_REVERSE: u8 = 2;

/// [`CtValue::flags`] bit: a hairpin connection (a pod reaching a service
/// whose chosen backend is the pod itself). The source is also rewritten, to
/// the frontend address, because a packet arriving at a pod from its own
/// address would be dropped as a martian. The forward entry then rewrites
/// client:port -> frontend:port as the source, the reverse entry (keyed
/// backend -> frontend:client-port) restores frontend:port -> client:port.
pub const CT_FLAG_HAIRPIN: u8 = 1;
/// [`CtValue::flags`] bit: the connection is also source-translated (NodePort
/// from outside, to the node address). The forward entry rewrites the source
/// to `nat_addr:nat_port` (node address, a port from
/// [`NODEPORT_SNAT_PORT_MIN`]..), the reverse entry (keyed backend ->
/// node:nat_port) rewrites the destination back to `nat_addr:nat_port` (the
/// client).
pub const CT_FLAG_SNAT: u8 = 2;
/// [`CtValue::flags`] bit: a NodePort connection from outside the node. Its
/// translated packets carry the node's own address, which the stack would
/// drop as a martian, so they are forwarded with a FIB lookup and
/// `bpf_redirect` instead of going up the stack.
pub const CT_FLAG_NODEPORT: u8 = 4;
/// [`CtValue::flags`] bit: the reverse entry of a masqueraded connection (a
/// pod's connection to outside the cluster, source-translated to the node
/// address by the node-egress program, see [`masq`]). Keyed destination ->
/// node:`nat_port` (a NodePort SNAT port); `nat_addr:nat_port` hold the pod
/// address and port the node-ingress program restores as the destination.
pub const CT_FLAG_MASQ: u8 = 16;
/// [`CtValue::flags`] bit: a direct-server-return connection (see [`dsr`]).
/// On the load-balancing node (with [`CT_FLAG_NODEPORT`], without
/// [`CT_FLAG_SNAT`]): DNAT only, the client's packets towards a backend on
/// another node. On the backend node: the reverse entry only, keyed backend
/// -> client, restoring the frontend (from the option) as the source of the
/// replies (with [`CT_FLAG_NODEPORT`], so from-pod forwards them past the
/// stack).
pub const CT_FLAG_DSR: u8 = 32;
/// [`CtValue::flags`] bit: a connection tracked only for NetworkPolicy (a
/// pod-to-pod or pod-to-outside connection that policy judged and allowed):
/// no translation (`frontend_*` equal `backend_*`, the destination), so
/// `nat::translate` leaves its packets alone. Its entries make the
/// connection stateful: replies and later packets pass on them without a
/// policy lookup.
pub const CT_FLAG_NO_NAT: u8 = 8;

/// `skb->mark` bit: a tc hook of this node already decided the packet for
/// its destination's to-pod. From-pod sets it on a new connection's first
/// packet it judged against a local destination's ingress and on every
/// packet of a tracked connection; node-ingress on a NodePort connection it
/// judged against a local backend's ingress. To-pod passes such packets
/// without a lookup (and never judges one twice). Marks never cross a
/// network namespace (the kernel scrubs them), so a pod cannot forge it.
pub const SKB_MARK_POLICY_JUDGED: u32 = 1 << 21;

/// First source port used for NodePort SNAT: above the kernel's default
/// ephemeral range (32768-60999), so translated connections never collide
/// with the node's own sockets.
pub const NODEPORT_SNAT_PORT_MIN: u16 = 61_000;
/// Number of SNAT source ports (61000-65535), per backend address and port.
pub const NODEPORT_SNAT_PORTS: u16 = 4_536;

/// Value of the conntrack map: the translation a connection was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue {
    /// Service frontend address the client used, network byte order.
    pub frontend_addr: u32,
    /// Backend address chosen for the connection, network byte order.
    pub backend_addr: u32,
    /// Service frontend port, network byte order.
    pub frontend_port: u16,
    /// Backend port, network byte order.
    pub backend_port: u16,
    /// [`CT_DIR_FORWARD`] or [`CT_DIR_REVERSE`].
    pub direction: u8,
    /// `CT_FLAG_*` bits.
    pub flags: u8,
    /// With [`CT_FLAG_SNAT`]: the port of `nat_addr`, network byte order.
    pub nat_port: u16,
    /// Policy identity of the connection's source when policy judged it
    /// (`policy::IpcacheValue::identity` or the source endpoint's own); 0
    /// when no policy lookup happened.
    pub src_identity: u32,
    /// With [`CT_FLAG_SNAT`]: the other end's address after translation
    /// (forward: the node address the source becomes; reverse: the client
    /// the destination becomes back), network byte order. (Occupies what was
    /// implicit padding, so the value size is unchanged.)
    pub nat_addr: u32,
    /// `bpf_ktime_get_ns()` when the connection was first translated.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns()` of the latest packet seen in this direction.
    pub last_seen_ns: u64,
}

/// Key of the socket reverse-translation map: a socket (by its cookie) and
/// the backend its connect()/sendmsg() to a frontend was sent to.
///
/// The socket hooks translate a frontend once, at connect/sendmsg time, so no
/// packet carries the frontend; recvmsg/getpeername look this key up to show
/// the application the frontend again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    /// Backend IPv4 address, network byte order.
    pub addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Must be zero.
    pub _pad: [u8; 2],
}

/// Value of the socket reverse-translation map: the frontend the application
/// addressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRevValue {
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
    /// Frontend port, network byte order.
    pub port: u16,
    /// Must be zero.
    pub _pad: [u8; 2],
}

/// [`AffinityKey::kind`]: `client` is an IPv4 address (network byte order,
/// zero-extended), as the tc hooks see clients.
pub const AFFINITY_CLIENT_IP: u8 = 1;
/// [`AffinityKey::kind`]: `client` is a network namespace cookie. The socket
/// hooks run before the source address is chosen, and a pod is exactly one
/// network namespace, so the namespace stands for the client's address.
pub const AFFINITY_CLIENT_NETNS: u8 = 2;

/// Key of the session affinity map (`sessionAffinity: ClientIP`): a client
/// and the frontend it used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKey {
    /// The client: see `kind`.
    pub client: u64,
    /// Frontend address, network byte order.
    pub frontend_addr: u32,
    /// Frontend port, network byte order.
    pub frontend_port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// [`AFFINITY_CLIENT_IP`] or [`AFFINITY_CLIENT_NETNS`].
    pub kind: u8,
}

/// Value of the session affinity map: the backend the client sticks to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityValue {
    /// The backend chosen.
    pub backend: Backend,
    /// Its index in the backend set when chosen. The affinity holds while
    /// the frontend's current set has this backend at this index (always
    /// true while the set is unchanged); otherwise a new backend is chosen.
    pub index: u32,
    /// Must be zero.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` of the latest new connection that used it; the
    /// affinity expires `affinity_timeout_secs` after that.
    pub last_used_ns: u64,
}

/// Data of an LPM key of the source ranges map: a frontend (matched exactly,
/// see [`SOURCE_RANGE_FRONTEND_BITS`]) and a client address prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRangeKey {
    /// Frontend address, network byte order.
    pub frontend_addr: u32,
    /// Frontend port, network byte order.
    pub frontend_port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Must be zero.
    pub _pad: u8,
    /// Client address (prefix), network byte order.
    pub src: u32,
}

/// Value of the one-element `WEIR_NODE` array: facts about this node the
/// programs need. Written by the agent at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeValue {
    /// The node's address, network byte order; 0 when not configured (NodePort
    /// SNAT then uses the address the client connected to).
    pub addr: u32,
    /// The node interface's MAC address (ARP answers); all zero when unknown
    /// (then no ARP is answered).
    pub mac: [u8; 6],
    /// Must be zero.
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` marks the types as plain old data: any bit pattern is valid
    //! and they contain no pointers, so aya may copy them to and from maps.
    use super::*;

    // SAFETY (for every impl below): the types are #[repr(C)], contain only
    // integers and integer arrays with explicit padding fields, so every bit
    // pattern is a valid value and there are no implicit padding bytes.
    #[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    mod impls {
        use super::*;
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for ServiceKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for ServiceValue {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for BackendKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for Backend {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for CtKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for CtValue {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for SockRevKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for SockRevValue {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for AffinityKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for AffinityValue {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for NodeValue {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for SourceRangeKey {}
        // SAFETY: see the module comment above.
        unsafe impl aya::Pod for crate::flow::FlowEvent {}
    }
}

// The layouts are part of the kernel ABI: pin their sizes so an accidental
// field change fails the build instead of corrupting pinned maps.
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);
const _: () = assert!(core::mem::size_of::<BackendKey>() == 8);
const _: () = assert!(core::mem::size_of::<Backend>() == 8);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtValue>() == 40);
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<SockRevValue>() == 8);
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 24);
const _: () = assert!(core::mem::size_of::<NodeValue>() == 12);
const _: () = assert!(core::mem::size_of::<SourceRangeKey>() == 12);
