//! Hook: tc, **TCX egress of every host-side pod veth** (`wr*`), i.e. every
//! packet the node delivers to a pod.
//!
//! Reverse NAT for replies whose backend is on another node: such a reply
//! never crosses the backend's veth on this node, so the from-pod hook cannot
//! translate it; it reaches the client's veth with the backend as its source,
//! and the reverse conntrack entry (created here, where the client's
//! connection was translated) maps it back to the service frontend.
//!
//! Replies from local backends were already translated at the backend veth's
//! ingress; their tuple (frontend -> client) has no reverse entry, so they
//! pass untouched, as does everything else that belongs to a tracked
//! connection.
//!
//! NetworkPolicy: the ingress of the pod, for a new connection from the
//! stack (the node itself, another node, the outside) — a packet that no
//! conntrack entry covers, or a TCP SYN. Packets a hook of this node already
//! decided (`SKB_MARK_POLICY_JUDGED`: from-pod for a local client, on a new
//! connection judged against this pod's ingress or on a tracked one;
//! node-ingress for a NodePort client) pass without any lookup. Allowed connections get a conntrack entry
//! (`CT_FLAG_NO_NAT`) so their replies leave through from-pod untouched.
//! First fragments of untracked datagrams are judged the same way.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_ebpf_common::{CT_DIR_REVERSE, drop_reason, flow::hook::TO_POD};

use crate::{
    conntrack, flow, icmp, nat,
    parse::{self, Flow},
    policy::{self, Conn, Outcome},
};

#[classifier]
pub fn weir_to_pod(ctx: TcContext) -> i32 {
    // Decided by this node's from-pod (or node-ingress) already: a new
    // connection judged against this pod's ingress, or a packet of a tracked
    // connection (whose replies from local backends are translated there).
    if policy::already_judged(&ctx) {
        return TC_ACT_OK;
    }
    let Some(flow) = parse::parse_ipv4_l4(&ctx) else {
        if let Some(flow) = parse::first_fragment(&ctx) {
            // Never translated; judged unless tracked (see from-pod).
            return match conntrack::lookup(&flow) {
                Some(_) => TC_ACT_OK,
                None => new_connection(&ctx, &flow),
            };
        }
        // ICMP errors of remote backends about translated connections.
        return icmp::translate_error(&ctx, TO_POD);
    };
    // A SYN opens a new connection even if an old one left its tuple
    // tracked (source port reuse): policy judges it afresh.
    let existing = if flow.tcp_syn {
        None
    } else {
        conntrack::lookup(&flow)
    };
    match existing {
        Some(ct) if ct.direction == CT_DIR_REVERSE => match nat::translate(&ctx, &flow, &ct) {
            Some(()) => TC_ACT_OK,
            // Half rewritten: drop rather than deliver a corrupt packet.
            None => flow::dropped(&ctx, TO_POD, drop_reason::REWRITE),
        },
        Some(_) => TC_ACT_OK,
        None => new_connection(&ctx, &flow),
    }
}

/// A packet with no conntrack entry of its own tuple, or a SYN.
#[inline(always)]
fn new_connection(ctx: &TcContext, flow: &Flow) -> i32 {
    // A translated request on its way into a local backend (its tuple is
    // client -> backend; the connection's reverse entry is the swap).
    if !flow.tcp_syn && conntrack::tracked_swapped(flow) {
        return TC_ACT_OK;
    }
    match policy::judge_ingress(ctx, TO_POD, &Conn::of(flow)) {
        Outcome::NotEnforced => TC_ACT_OK,
        Outcome::Denied => TC_ACT_SHOT,
        Outcome::Allowed { src_identity } => {
            match conntrack::create_untranslated(flow, src_identity) {
                Some(_) => TC_ACT_OK,
                None => flow::dropped(ctx, TO_POD, drop_reason::MAP_INSERT),
            }
        }
    }
}
