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
//! - Direct server return (`SERVICE_FLAG_DSR`, see [`crate::dsr`]): a new
//!   connection whose backend is on another node (the FIB routes it through
//!   a gateway) and whose first packet fits the MTU with the option is DNATed
//!   only (`CT_FLAG_DSR`, client address kept), carries the frontend in an
//!   IPv4 option and is forwarded; the backend's replies go straight to the
//!   client. Otherwise (local backend, no room for the option, IPv4 options
//!   already present) it is SNATed as without DSR. Later UDP datagrams carry
//!   the option again when it fits. As a backend node, packets carrying a
//!   DSR option are checked and recorded (or dropped) before anything else.
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
    AFFINITY_CLIENT_IP, Backend, CT_FLAG_DSR, CT_FLAG_NODEPORT, CtValue, IPPROTO_UDP,
    SERVICE_FLAG_DSR, SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT, SERVICE_FLAG_SOURCE_RANGES,
    ServiceKey, ServiceValue, drop_reason,
    dsr::{DSR_OPT_LEN, DsrOption},
    flow::hook::NODE_INGRESS,
};

use crate::{
    arp, conntrack, dsr, fib, flow, lb, maps, nat,
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
    // A DSR option from a load-balancing node (we always insert it as the
    // first option, so only that position is looked at).
    if flow.l4_off > flow.l3_off + 20
        && let Some(verdict) = dsr::receive(ctx, flow)
    {
        return verdict;
    }
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
        let translated = nat::translate(ctx, flow, &ct);
        // Later UDP datagrams of a DSR flow carry the option when it fits
        // (see weir_ebpf_common::dsr); TCP needs it on the SYN only.
        if translated.is_some() && ct.flags & CT_FLAG_DSR != 0 && flow.proto == IPPROTO_UDP {
            let fits = matches!(dsr_route(ctx, flow, &ct), dsr::Route::Remote { .. });
            if fits && dsr::push_option(ctx, &option(&ct)).is_none() {
                return flow::dropped(ctx, NODE_INGRESS, drop_reason::REWRITE);
            }
        }
        return forward(ctx, flow, translated);
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
    if dsr_applies(ctx, flow, &svc, &backend) {
        let Some(ct) = conntrack::create_dsr(flow, &backend) else {
            return flow::dropped(ctx, NODE_INGRESS, drop_reason::MAP_INSERT);
        };
        if nat::translate(ctx, flow, &ct).is_none() || dsr::push_option(ctx, &option(&ct)).is_none()
        {
            return flow::dropped(ctx, NODE_INGRESS, drop_reason::REWRITE);
        }
        return fib::redirect(ctx, flow.proto, NODE_INGRESS);
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

/// Whether a new connection to `svc` with `backend` is served by direct
/// server return: the frontend asks for it, the packet has no IPv4 options
/// yet, and the backend is on another node with room for the option.
#[inline(always)]
fn dsr_applies(ctx: &TcContext, flow: &Flow, svc: &ServiceValue, backend: &Backend) -> bool {
    if svc.flags & SERVICE_FLAG_DSR == 0
        || svc.flags & SERVICE_FLAG_EXT_LOCAL != 0
        || flow.l4_off != flow.l3_off + 20
    {
        return false;
    }
    let Some(len) = dsr::tot_len(ctx) else {
        return false;
    };
    matches!(
        dsr::route(
            ctx,
            flow::ifindex(ctx),
            flow.proto,
            flow.saddr,
            backend.addr,
            len + u16::from(DSR_OPT_LEN),
        ),
        dsr::Route::Remote { .. }
    )
}

/// The FIB's answer for a later packet of the DSR connection `ct` with the
/// option added.
#[inline(always)]
fn dsr_route(ctx: &TcContext, flow: &Flow, ct: &CtValue) -> dsr::Route {
    match dsr::tot_len(ctx) {
        Some(len) if flow.l4_off == flow.l3_off + 20 => dsr::route(
            ctx,
            flow::ifindex(ctx),
            flow.proto,
            flow.saddr,
            ct.backend_addr,
            len + u16::from(DSR_OPT_LEN),
        ),
        _ => dsr::Route::Other,
    }
}

/// The option naming the frontend of the DSR connection `ct`.
#[inline(always)]
fn option(ct: &CtValue) -> DsrOption {
    DsrOption::new(ct.frontend_addr, ct.frontend_port)
}
