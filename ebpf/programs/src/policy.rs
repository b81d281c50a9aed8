//! NetworkPolicy enforcement: the lookup of `weir_ebpf_common::policy`
//! ([`decide`]) over the kernel maps, for the first packet of a connection
//! only (the hooks call this on a conntrack miss; an allowed connection gets
//! a conntrack entry, so its replies and later packets pass on it).
//!
//! Judged after service translation: the destination is the backend's
//! address and port. A pod address that is not in `WEIR_POL_EP` is not
//! enforced; a pod reaching itself (hairpin through a service) is always
//! allowed. Traffic between a pod and its own node is allowed by the
//! compiler's `HOST` entries (`POLICY_ID_HOST`), not by a special case here.
//!
//! Every verdict (allowed or denied, per judged direction) is a flow event.
//!
//! What is judged: TCP, UDP and SCTP (NetworkPolicy's protocols), including
//! the first fragment of a datagram (later fragments cannot be reassembled
//! without it). Other protocols (ICMP) are not subject to NetworkPolicy
//! here and pass. A new connection costs at most two endpoint lookups, two
//! ipcache lookups and six policy trie lookups; an established packet
//! costs nothing here.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use weir_ebpf_common::{
    SKB_MARK_POLICY_JUDGED, drop_reason,
    flow::{VERDICT_DROPPED, VERDICT_FORWARDED},
    policy::{
        DIR_EGRESS, DIR_INGRESS, EndpointKey, EndpointValue, IpcacheKey, IpcacheValue,
        POLICY_PREFIX_FULL, PolicyKey, PolicyLookup, PolicyValue, decide, identity,
    },
};

use crate::{
    flow,
    maps::{self, IPCACHE, POL_EP, POLICY},
    parse::Flow,
};

/// The policy trie as `decide` sees it.
struct KernelPolicy;

impl PolicyLookup for KernelPolicy {
    #[inline(always)]
    fn policy(&self, key: &PolicyKey) -> Option<PolicyValue> {
        POLICY.get(Key::new(POLICY_PREFIX_FULL, *key)).copied()
    }
}

/// A new connection as policy judges it: the packet's 5-tuple after
/// service translation, and the frontend when it was translated.
#[derive(Clone, Copy)]
pub struct Conn {
    pub saddr: u32,
    pub sport: u16,
    /// The destination after translation (the backend), network order.
    pub daddr: u32,
    pub dport: u16,
    pub proto: u8,
    /// The frontend the client addressed; 0 when not translated.
    pub orig_daddr: u32,
    pub orig_dport: u16,
}

impl Conn {
    /// The untranslated connection of `flow`.
    #[inline(always)]
    pub fn of(flow: &Flow) -> Self {
        Self {
            saddr: flow.saddr,
            sport: flow.sport,
            daddr: flow.daddr,
            dport: flow.dport,
            proto: flow.proto,
            orig_daddr: 0,
            orig_dport: 0,
        }
    }

    /// `flow` translated to `daddr:dport` (a service backend).
    #[inline(always)]
    pub fn translated(flow: &Flow, daddr: u32, dport: u16) -> Self {
        Self {
            daddr,
            dport,
            orig_daddr: flow.daddr,
            orig_dport: flow.dport,
            ..Self::of(flow)
        }
    }
}

/// What policy said about a new connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Neither end is an endpoint of this node: nothing was judged (and
    /// nothing needs tracking for policy).
    NotEnforced,
    /// Allowed; `src_identity` is the source's identity (for conntrack).
    Allowed { src_identity: u32 },
    /// Denied: counted as `policy_denied`, its flow event emitted; the
    /// caller drops the packet.
    Denied,
}

/// Judges a new connection leaving a pod (from-pod): the source's egress
/// and, when the destination is an endpoint of this node (the packet is
/// delivered without crossing another node), its ingress too.
#[inline(always)]
pub fn judge_from_pod(ctx: &TcContext, hook: u8, conn: &Conn) -> Outcome {
    if conn.saddr == conn.daddr {
        // A pod reaching itself through a service (hairpin): always allowed,
        // also by its to-pod, which sees the frontend as the source.
        mark_judged(ctx);
        return Outcome::NotEnforced;
    }
    let src_ep = endpoint(conn.saddr);
    let dst_ep = endpoint(conn.daddr);
    if src_ep.is_none() && dst_ep.is_none() {
        return Outcome::NotEnforced;
    }
    let mut src_identity = src_ep.map_or(identity::ANY, |ep| ep.identity);
    if let Some(ep) = src_ep {
        let remote = ipcache(conn.daddr);
        if !judge(ctx, hook, conn, &ep, DIR_EGRESS, &remote) {
            return Outcome::Denied;
        }
    }
    if let Some(ep) = dst_ep {
        let remote = ipcache(conn.saddr);
        if src_ep.is_none() {
            src_identity = remote.identity;
        }
        if !judge(ctx, hook, conn, &ep, DIR_INGRESS, &remote) {
            return Outcome::Denied;
        }
        mark_judged(ctx);
    }
    Outcome::Allowed { src_identity }
}

/// Judges a new connection arriving at a local endpoint from elsewhere
/// (to-pod: from the node or another node; node-ingress: a NodePort client
/// before SNAT) against the destination's ingress.
#[inline(always)]
pub fn judge_ingress(ctx: &TcContext, hook: u8, conn: &Conn) -> Outcome {
    if conn.saddr == conn.daddr {
        return Outcome::NotEnforced;
    }
    let Some(ep) = endpoint(conn.daddr) else {
        return Outcome::NotEnforced;
    };
    let remote = ipcache(conn.saddr);
    if !judge(ctx, hook, conn, &ep, DIR_INGRESS, &remote) {
        return Outcome::Denied;
    }
    mark_judged(ctx);
    Outcome::Allowed {
        src_identity: remote.identity,
    }
}

/// Whether a hook of this node already judged this packet against its
/// destination's ingress (see `SKB_MARK_POLICY_JUDGED`).
#[inline(always)]
pub fn already_judged(ctx: &TcContext) -> bool {
    mark(ctx) & SKB_MARK_POLICY_JUDGED != 0
}

/// Marks the packet as decided by this node (see `SKB_MARK_POLICY_JUDGED`).
#[inline(always)]
pub fn mark_judged(ctx: &TcContext) {
    let mark = mark(ctx) | SKB_MARK_POLICY_JUDGED;
    // SAFETY: as in `mark`; `mark` is a writable field for tc programs.
    unsafe { (*flow::skb(ctx)).mark = mark }
}

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program;
    // reading a field of it is a plain context load.
    unsafe { (*flow::skb(ctx)).mark }
}

/// The endpoint of a local pod address.
#[inline(always)]
fn endpoint(addr: u32) -> Option<EndpointValue> {
    maps::get_copy(&POL_EP, &EndpointKey { addr })
}

/// The identities of a remote address. The ipcache always holds
/// 0.0.0.0/0; without it (maps not filled yet) the address is the world.
#[inline(always)]
fn ipcache(addr: u32) -> IpcacheValue {
    IPCACHE
        .get(Key::new(32, IpcacheKey { addr }))
        .copied()
        .unwrap_or(IpcacheValue {
            identity: identity::WORLD,
            cidr_identity: identity::ANY,
        })
}

/// One direction: the lookup, its flow event, and (denied) the drop count.
/// Whether it is allowed.
#[inline(always)]
fn judge(
    ctx: &TcContext,
    hook: u8,
    conn: &Conn,
    ep: &EndpointValue,
    direction: u8,
    remote: &IpcacheValue,
) -> bool {
    let port = u16::from_be(conn.dport);
    let verdict = decide(
        &KernelPolicy,
        ep.endpoint_id,
        direction,
        remote,
        conn.proto,
        port,
    );
    let mut e = flow::event(
        ctx,
        hook,
        (conn.saddr, conn.sport),
        (conn.daddr, conn.dport),
        conn.proto,
    );
    e.orig_daddr = conn.orig_daddr;
    e.orig_dport = conn.orig_dport;
    e.direction = direction;
    e.endpoint_id = ep.endpoint_id;
    let allowed = match verdict {
        Some(v) => {
            e.verdict = VERDICT_FORWARDED;
            e.policy_id = v.policy_id;
            true
        }
        None => {
            e.verdict = VERDICT_DROPPED;
            e.drop_reason = drop_reason::POLICY_DENIED as u16;
            maps::count_drop(drop_reason::POLICY_DENIED);
            false
        }
    };
    flow::emit(&e);
    allowed
}
