//! Hook: tc, **TCX egress of the node interface** (`eth0` of the node's
//! network namespace), i.e. every packet leaving the node.
//!
//! Masquerade (see [`crate::masq`]): a connection a pod of this node opens to
//! a destination outside every non-masqueraded prefix leaves with the node
//! address and a SNAT port as its source. Everything else (pod traffic to
//! other pods and nodes, the node's own traffic, NodePort traffic already
//! translated at ingress) passes untouched.

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::{masq, parse};

#[classifier]
pub fn weir_node_egress(ctx: TcContext) -> i32 {
    match parse::parse_ipv4_l4(&ctx) {
        Some(flow) => masq::egress(&ctx, &flow),
        None => masq::egress_icmp(&ctx),
    }
}
