//! Hook: tc, **TCX ingress of every host-side pod veth** (`wr*`), i.e. every
//! packet a pod sends, before the node's stack routes it.
//!
//! - A packet to a service frontend (ClusterIP:port/proto in `WEIR_SERVICES`)
//!   gets its destination rewritten to a backend, chosen once per connection
//!   and remembered in conntrack; the stack then routes it to the backend.
//!   A TCP SYN is always balanced afresh (see `handle`).
//! - A reply from a backend (a reverse conntrack entry matches) gets its
//!   source rewritten back to the frontend the client used; replies to
//!   NodePort clients outside the node are then redirected out (see `fib`).
//! - ICMP errors of a backend about a translated connection get their quoted
//!   packet translated back (see `icmp`).
//! - Everything else (non-IPv4, not TCP/UDP/SCTP, fragments, truncated
//!   headers, ports a service does not have) passes untouched, subject to
//!   policy where it has ports (below; ICMP is not judged).
//! - A new connection to a service with no ready backend is dropped, like
//!   kube-proxy's reject, instead of leaking to the default route.
//! - A pod reaching itself through a service (hairpin) also gets its source
//!   rewritten to the frontend (see `CT_FLAG_HAIRPIN`).
//! - NetworkPolicy, on the first packet of a connection (a conntrack miss),
//!   after service translation: the source's egress and, when the
//!   destination (the backend) is a pod of this node, its ingress too (see
//!   [`crate::policy`]). Denied: dropped (`policy_denied`). Allowed: the
//!   connection gets a conntrack entry even when nothing is translated
//!   (`CT_FLAG_NO_NAT`), so its replies and later packets pass on it. The
//!   first fragment of a datagram is judged too (never translated); later
//!   fragments pass, useless without it.
//! - Every verdict and every drop is a flow event (see [`crate::flow`]).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_ebpf_common::{
    AFFINITY_CLIENT_IP, CT_FLAG_NODEPORT, ServiceKey, drop_reason, flow::hook::FROM_POD,
};

use crate::{
    conntrack, fib, flow, icmp, lb, maps, nat,
    parse::{self, Flow},
    policy::{self, Conn, Outcome},
};

#[classifier]
pub fn weir_from_pod(ctx: TcContext) -> i32 {
    if let Some(flow) = parse::parse_ipv4_l4(&ctx) {
        // Passed to a pod of this node: straight into it (`redirect`).
        let verdict = handle(&ctx, &flow);
        return crate::redirect::to_local_pod(&ctx, &flow, verdict);
    }
    if let Some(flow) = parse::first_fragment(&ctx) {
        return first_fragment(&ctx, &flow);
    }
    // ICMP errors of local backends about translated connections.
    icmp::translate_error(&ctx, FROM_POD)
}

/// The first fragment of a datagram: never translated (that would break
/// reassembly), but judged by policy like the first packet of a connection
/// unless it belongs to a tracked one or goes to a service frontend (it
/// passes untouched, as it always did).
#[inline(always)]
fn first_fragment(ctx: &TcContext, flow: &Flow) -> i32 {
    if conntrack::lookup(flow).is_some() {
        return TC_ACT_OK;
    }
    let key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    if maps::get_copy(&maps::SERVICES, &key).is_some() {
        return TC_ACT_OK;
    }
    untranslated(ctx, flow)
}

/// A new connection to something that is not a service: policy alone
/// decides, and an allowed connection is tracked so its replies pass.
#[inline(always)]
fn untranslated(ctx: &TcContext, flow: &Flow) -> i32 {
    match policy::judge_from_pod(ctx, FROM_POD, &Conn::of(flow)) {
        Outcome::NotEnforced => TC_ACT_OK,
        Outcome::Denied => TC_ACT_SHOT,
        Outcome::Allowed { src_identity } => {
            match conntrack::create_untranslated(flow, src_identity) {
                Some(_) => TC_ACT_OK,
                None => flow::dropped(ctx, FROM_POD, drop_reason::MAP_INSERT),
            }
        }
    }
}

#[inline(always)]
fn handle(ctx: &TcContext, flow: &Flow) -> i32 {
    // A SYN starts a new connection even when its tuple has an entry: the
    // client reused a source port, and the old entry may name a backend that
    // is gone. It is balanced afresh (and, for retransmitted SYNs, the hash
    // picks the same backend again as long as the set is unchanged).
    let existing = if flow.tcp_syn {
        None
    } else {
        conntrack::lookup(flow)
    };
    if let Some(ct) = existing {
        // A tracked connection: its destination's to-pod, if local, need
        // not look it up again.
        policy::mark_judged(ctx);
        // Replies of local backends to NodePort clients carry the node
        // address after translation: forward them past the stack.
        if ct.flags & CT_FLAG_NODEPORT != 0 {
            return match nat::translate(ctx, flow, &ct) {
                Some(()) => fib::redirect(ctx, flow.proto, FROM_POD),
                None => flow::dropped(ctx, FROM_POD, drop_reason::REWRITE),
            };
        }
        return verdict(ctx, nat::translate(ctx, flow, &ct));
    }

    let key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    let Some(svc) = maps::get_copy(&maps::SERVICES, &key) else {
        return untranslated(ctx, flow);
    };
    let hash = lb::flow_hash(flow);
    let client = u64::from(flow.saddr);
    let Some(backend) = lb::select(&svc, &key, AFFINITY_CLIENT_IP, client, hash) else {
        return flow::dropped(ctx, FROM_POD, drop_reason::NO_BACKEND);
    };
    // Judged on the backend: policy applies after service translation.
    let conn = Conn::translated(flow, backend.addr, backend.port);
    if policy::judge_from_pod(ctx, FROM_POD, &conn) == Outcome::Denied {
        return TC_ACT_SHOT;
    }
    let Some(forward) = conntrack::create(flow, &backend) else {
        return flow::dropped(ctx, FROM_POD, drop_reason::MAP_INSERT);
    };
    verdict(ctx, nat::translate(ctx, flow, &forward))
}

/// A failed rewrite leaves a half-written packet: drop it rather than deliver
/// it with a wrong checksum or address.
#[inline(always)]
fn verdict(ctx: &TcContext, translated: Option<()>) -> i32 {
    match translated {
        Some(()) => TC_ACT_OK,
        None => flow::dropped(ctx, FROM_POD, drop_reason::REWRITE),
    }
}
