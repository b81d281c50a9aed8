//! Direct server return (DSR) for NodePort, externalIPs and LoadBalancer IPs
//! (issue 3): the ABI between the load-balancing node and the backend node.
//!
//! A frontend with [`crate::SERVICE_FLAG_DSR`] whose chosen backend is on
//! another node is translated on the load-balancing node with DNAT only: the
//! client's address stays the source, and the frontend the client addressed
//! travels to the backend node in an IPv4 option ([`DsrOption`]), inserted
//! right after the 20-byte base header (so it is always the first option).
//! The backend node checks the option ([`crate::drop_reason::DSR_INVALID`]
//! when it names no DSR frontend it knows, or the destination is not one of
//! that frontend's backends on this node), records the reverse translation
//! in conntrack (backend -> client: source back to the frontend,
//! [`crate::CT_FLAG_DSR`]), and the backend's replies go from the backend
//! node straight to the client.
//!
//! Which packets carry the option: a TCP connection's SYN (the backend node
//! records the connection from it; retransmitted SYNs carry it again). UDP:
//! every datagram that still fits the egress MTU with the 8 more bytes, so a
//! backend node that lost its entry (restart of its maps, LRU eviction)
//! learns it again from the next datagram. The first packet decides: when it
//! cannot carry the option (it would exceed the MTU, or it already has IPv4
//! options), the connection is source-translated (SNAT) like a frontend
//! without DSR, for its whole life. A later UDP datagram too large for the
//! option is sent without it (DNAT only); the backend node's entry from an
//! earlier datagram translates its replies. So no packet is ever sent with
//! a translation the backend node cannot undo.

/// IPv4 option type of [`DsrOption`]: copied flag set (fragments keep it),
/// class 0 (control), number 30, the value RFC 4727 sets aside for
/// experiments (0x9e). Cilium uses another number (26, 0x9a), so the two
/// never read each other's options.
pub const DSR_OPT_TYPE: u8 = 0x9e;
/// Length of [`DsrOption`] in bytes, as its `len` field says.
pub const DSR_OPT_LEN: u8 = 8;

/// The IPv4 option the load-balancing node inserts: the frontend the client
/// addressed, as it sits on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DsrOption {
    /// [`DSR_OPT_TYPE`].
    pub kind: u8,
    /// [`DSR_OPT_LEN`].
    pub len: u8,
    /// Frontend port, network byte order.
    pub port: u16,
    /// Frontend IPv4 address, network byte order.
    pub addr: u32,
}

impl DsrOption {
    /// The option naming frontend `addr:port` (network byte order).
    pub const fn new(addr: u32, port: u16) -> Self {
        Self {
            kind: DSR_OPT_TYPE,
            len: DSR_OPT_LEN,
            port,
            addr,
        }
    }
}

/// How many backends of a frontend's set the backend node compares the
/// destination with (a bounded loop for the verifier). A larger set
/// validates only its first `DSR_BACKEND_SCAN` backends (the agent writes
/// sets sorted, so which ones is stable).
pub const DSR_BACKEND_SCAN: u32 = 256;

/// Map names.
pub mod map_names {
    /// Hash: node address (network order, `u32`) -> `u8` (1): the InternalIPs
    /// of the cluster's nodes, written by the agent's route sync. A DSR
    /// option naming a NodePort frontend must name one of them.
    pub const NODE_ADDRS: &str = "WEIR_NODE_ADDRS";
}

/// Capacity of [`map_names::NODE_ADDRS`].
pub const NODE_ADDRS_MAX_ENTRIES: u32 = 4_096;

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
mod pod {
    // SAFETY: #[repr(C)] of two u8, a u16 and a u32 with no implicit
    // padding: every bit pattern is a valid value and there are no pointers.
    unsafe impl aya::Pod for super::DsrOption {}
}

const _: () = assert!(core::mem::size_of::<DsrOption>() == DSR_OPT_LEN as usize);
