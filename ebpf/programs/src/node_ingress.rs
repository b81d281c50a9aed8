//! Hook: tc, **TCX ingress of the node interface** (`eth0` of the node's
//! network namespace), i.e. every packet reaching the node from other nodes
//! and from outside.
//!
//! - A new connection to a NodePort or external IP (frontend in
//!   `WEIR_SERVICES` with `SERVICE_FLAG_NODEPORT`) gets a backend (from the
//!   frontend's Maglev table when it has one, as XDP picks it); its
//!   destination becomes the backend and, unless externalTrafficPolicy is
//!   Local, its source the node address and a SNAT port, so replies of
//!   backends on other nodes come back here. Both directions are recorded in
//!   conntrack with `CT_FLAG_NODEPORT` and forwarded with a FIB lookup and a
//!   redirect (see [`crate::fib`]).
//! - Replies of remote backends to SNATed connections (a reverse NodePort
//!   entry matches) are translated back to node:nodePort -> client and sent
//!   back out.
//! - A new connection from a client outside the frontend's
//!   `loadBalancerSourceRanges` (`SERVICE_FLAG_SOURCE_RANGES`) is dropped.
//! - A NodePort without usable backends (for Local: none on this node) drops
//!   new connections: the node does not answer.
//! - NetworkPolicy: a new NodePort connection to a backend on this node is
//!   judged against the backend's ingress with the client's own address,
//!   before SNAT (after it, every client would be this node, which policy
//!   always allows). Other new connections to local pods are judged by the
//!   to-pod hook; backends on other nodes by theirs.
//! - Every drop is a flow event (see [`crate::flow`]).
//! - ARP requests for LoadBalancer IPs this node owns are answered (see
//!   [`crate::arp`]).
//! - Everything else, including ClusterIP frontends (not reachable from
//!   outside) and conntrack entries of pod connections, passes untouched.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use weir_ebpf_common::{
    AFFINITY_CLIENT_IP, CT_FLAG_NODEPORT, SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT,
    SERVICE_FLAG_SOURCE_RANGES, ServiceKey, drop_reason, flow::hook::NODE_INGRESS,
};

use crate::{
    arp, conntrack, fib, flow, lb, maps, nat,
    packet::read,
    parse::{self, Flow},
    policy,
};

#[classifier]
pub fn weir_node_ingress(ctx: TcContext) -> i32 {
    if read::<u16>(&ctx, 12).map(u16::from_be) == Some(arp::ETH_P_ARP) {
        return arp::handle(&ctx);
    }
    match parse::parse_ipv4_l4(&ctx) {
        Some(flow) => handle(&ctx, &flow),
        // Echo replies to masqueraded pings: back to the pod.
        None => crate::masq::reverse_icmp(&ctx),
    }
}

#[inline(always)]
fn handle(ctx: &TcContext, flow: &Flow) -> i32 {
    // As in from-pod: a SYN is balanced afresh (port reuse after a change).
    let existing = if flow.tcp_syn {
        None
    } else {
        conntrack::lookup(flow)
    };
    if let Some(ct) = existing {
        // Replies to masqueraded pod connections: back to the pod.
        if ct.flags & weir_ebpf_common::CT_FLAG_MASQ != 0 {
            return crate::masq::reverse(ctx, flow, &ct);
        }
        // Entries of pod connections (e.g. replies of remote backends to a
        // local pod) are the pod hooks' business.
        if ct.flags & CT_FLAG_NODEPORT == 0 {
            return TC_ACT_OK;
        }
        return forward(ctx, flow, nat::translate(ctx, flow, &ct));
    }

    let key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    let Some(svc) = maps::get_copy(&maps::SERVICES, &key) else {
        return TC_ACT_OK;
    };
    if svc.flags & SERVICE_FLAG_NODEPORT == 0 {
        return TC_ACT_OK;
    }
    if svc.flags & SERVICE_FLAG_SOURCE_RANGES != 0 && !maps::source_allowed(&key, flow.saddr) {
        return flow::dropped(ctx, NODE_INGRESS, drop_reason::SOURCE_RANGE);
    }
    let hash = lb::flow_hash(flow);
    let client = u64::from(flow.saddr);
    let Some(backend) = crate::maglev::select(&svc, &key, AFFINITY_CLIENT_IP, client, hash) else {
        return flow::dropped(ctx, NODE_INGRESS, drop_reason::NO_BACKEND);
    };
    // A local backend's ingress, judged with the client's address.
    let conn = policy::Conn::translated(flow, backend.addr, backend.port);
    if policy::judge_ingress(ctx, NODE_INGRESS, &conn) == policy::Outcome::Denied {
        return TC_ACT_SHOT;
    }
    // SNAT to the node address (an external IP may not be the node's own);
    // without one configured, to the address the client reached (a NodePort).
    let snat =
        (svc.flags & SERVICE_FLAG_EXT_LOCAL == 0).then(|| maps::node_addr().unwrap_or(flow.daddr));
    let Some(ct) = conntrack::create_nodeport(flow, &backend, snat, hash) else {
        // Without SNAT only a failed insert gets here.
        let reason = if snat.is_some() {
            drop_reason::SNAT_PORTS
        } else {
            drop_reason::MAP_INSERT
        };
        return flow::dropped(ctx, NODE_INGRESS, reason);
    };
    forward(ctx, flow, nat::translate(ctx, flow, &ct))
}

/// Redirects a translated packet; drops a half-translated one.
#[inline(always)]
fn forward(ctx: &TcContext, flow: &Flow, translated: Option<()>) -> i32 {
    match translated {
        Some(()) => fib::redirect(ctx, flow.proto, NODE_INGRESS),
        None => flow::dropped(ctx, NODE_INGRESS, drop_reason::REWRITE),
    }
}
