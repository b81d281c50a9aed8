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
//! pass untouched, as does everything else.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_ebpf_common::{CT_DIR_REVERSE, drop_reason};

use crate::{conntrack, icmp, maps, nat, parse};

#[classifier]
pub fn weir_to_pod(ctx: TcContext) -> i32 {
    let Some(flow) = parse::parse_ipv4_l4(&ctx) else {
        // ICMP errors of remote backends about translated connections.
        return icmp::translate_error(&ctx);
    };
    match conntrack::lookup(&flow) {
        Some(ct) if ct.direction == CT_DIR_REVERSE => match nat::translate(&ctx, &flow, &ct) {
            Some(()) => TC_ACT_OK,
            // Half rewritten: drop rather than deliver a corrupt packet.
            None => {
                maps::count_drop(drop_reason::REWRITE);
                TC_ACT_SHOT
            }
        },
        _ => TC_ACT_OK,
    }
}
