//! Hook: **XDP on the node interface** (`eth0` of the node's network
//! namespace), before the stack and before tc node-ingress: the fast path
//! for traffic from outside to NodePorts, externalIPs and LoadBalancer IPs
//! whose backend is on another node.
//!
//! - A new connection to such a frontend (`SERVICE_FLAG_NODEPORT`, cluster
//!   traffic policy, no session affinity) gets its backend from the
//!   frontend's Maglev table ([`crate::maglev`]) on the 5-tuple hash. If the
//!   FIB sends the backend out of this same interface (a remote backend), the
//!   connection is recorded in the shared conntrack map exactly as tc
//!   node-ingress records it ([`conntrack::create_nodeport`]: DNAT, SNAT to
//!   the node address and a SNAT port, `CT_FLAG_NODEPORT`), the frame is
//!   rewritten, given the next hop's MAC and sent back out with `XDP_TX`.
//! - Later packets of such connections in either direction (the client's,
//!   and the backend's replies to the node's SNAT port) follow their
//!   conntrack entry the same way.
//! - A new connection from a client outside the frontend's
//!   `loadBalancerSourceRanges` is dropped here (`drop_reason::SOURCE_RANGE`);
//!   one to a frontend without backends too (`NO_BACKEND`). Every drop is
//!   counted and is a flow event with hook `XDP`, as on the tc path.
//! - Everything else goes to the stack untouched (`XDP_PASS`), where tc
//!   node-ingress is the reference behaviour: backends on this node (the FIB
//!   routes them to a pod veth), externalTrafficPolicy Local and session
//!   affinity frontends, next hops whose MAC is not resolved yet or that are
//!   reached through another interface, ARP, IPv6, IPv4 with options,
//!   fragments, truncated headers, protocols other than TCP/UDP. Nothing is
//!   recorded before the decision to forward, so a passed packet reaches tc
//!   exactly as it arrived.
//!
//! Direct server return (`SERVICE_FLAG_DSR`, see [`crate::dsr`]): a new
//! connection to such a frontend whose backend the FIB reaches through a
//! gateway out of this interface, with room for the option, is recorded as
//! tc records it ([`conntrack::create_dsr`]), DNATed only, given the IPv4
//! option naming the frontend and sent out with `XDP_TX`; later UDP
//! datagrams get the option again when it fits. A DSR frontend whose first
//! packet does not qualify passes to tc, which decides it the same way
//! (SNAT fallback) with the same inputs.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use weir_ebpf_common::{
    AFFINITY_CLIENT_IP, CT_FLAG_DSR, CT_FLAG_NODEPORT, IPPROTO_UDP, SERVICE_FLAG_DSR,
    SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT, SERVICE_FLAG_SOURCE_RANGES, ServiceKey,
    drop_reason,
    dsr::{DSR_OPT_LEN, DsrOption},
    flow::{FlowEvent, VERDICT_DROPPED, hook},
    xdp::verdict,
};

use crate::{
    conntrack, dsr, fib, lb, maglev, maps,
    nat::{self, Tuple},
    parse::Flow,
    xdp_packet,
};

/// Verdicts by kind (`weir_ebpf_common::xdp::verdict`), per CPU.
#[map(name = "WEIR_XDP_STATS")]
static XDP_STATS: PerCpuArray<u64> = PerCpuArray::pinned(verdict::COUNT, 0);

#[xdp]
pub fn weir_node_xdp(ctx: XdpContext) -> u32 {
    let action = match xdp_packet::parse(&ctx) {
        Some(flow) => handle(&ctx, &flow),
        None => XDP_PASS,
    };
    let counter = match action {
        XDP_TX => verdict::TX,
        XDP_DROP => verdict::DROP,
        _ => verdict::PASS,
    };
    if let Some(ptr) = XDP_STATS.get_ptr_mut(counter) {
        // SAFETY: this CPU's slot of a per-CPU u64; a program is not
        // preempted by itself on one CPU, so the increment does not race.
        unsafe { *ptr += 1 }
    }
    action
}

#[inline(always)]
fn handle(ctx: &XdpContext, flow: &Flow) -> u32 {
    // As tc node-ingress: a SYN is balanced afresh (port reuse).
    let existing = if flow.tcp_syn {
        None
    } else {
        conntrack::lookup(flow)
    };
    if let Some(ct) = existing {
        // Pod connections' entries are the pod hooks' business.
        if ct.flags & CT_FLAG_NODEPORT == 0 {
            return XDP_PASS;
        }
        let to = nat::translated(flow, &ct);
        // Later UDP datagrams of a DSR flow: with the option when it fits.
        if ct.flags & CT_FLAG_DSR != 0
            && flow.proto == IPPROTO_UDP
            && let Some(macs) = dsr_next_hop(ctx, flow, &to)
        {
            let opt = DsrOption::new(ct.frontend_addr, ct.frontend_port);
            return transmit(ctx, flow, &to, macs, Some(opt));
        }
        return match next_hop(ctx, &to, flow.proto) {
            Some(macs) => transmit(ctx, flow, &to, macs, None),
            None => XDP_PASS,
        };
    }

    let key = ServiceKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    let Some(svc) = maps::get_copy(&maps::SERVICES, &key) else {
        return XDP_PASS;
    };
    if svc.flags & SERVICE_FLAG_NODEPORT == 0 {
        return XDP_PASS;
    }
    if svc.flags & SERVICE_FLAG_SOURCE_RANGES != 0 && !maps::source_allowed(&key, flow.saddr) {
        return dropped(ctx, flow, drop_reason::SOURCE_RANGE);
    }
    if svc.backend_count == 0 {
        return dropped(ctx, flow, drop_reason::NO_BACKEND);
    }
    // Local backends only (no SNAT, client address kept) or per-client
    // affinity state: tc's job.
    if svc.flags & SERVICE_FLAG_EXT_LOCAL != 0 || svc.affinity_timeout_secs != 0 {
        return XDP_PASS;
    }
    let hash = lb::flow_hash(flow);
    let Some(backend) = maglev::select(&svc, &key, AFFINITY_CLIENT_IP, u64::from(flow.saddr), hash)
    else {
        return XDP_PASS;
    };
    if svc.flags & SERVICE_FLAG_DSR != 0 {
        // DNAT only, to a backend on another node reached from here with
        // room for the option; anything else is tc's (SNAT fallback).
        let to = Tuple {
            saddr: flow.saddr,
            sport: flow.sport,
            daddr: backend.addr,
            dport: backend.port,
        };
        let Some(macs) = dsr_next_hop(ctx, flow, &to) else {
            return XDP_PASS;
        };
        let Some(ct) = conntrack::create_dsr(flow, &backend) else {
            return dropped(ctx, flow, drop_reason::MAP_INSERT);
        };
        let opt = DsrOption::new(ct.frontend_addr, ct.frontend_port);
        return transmit(ctx, flow, &nat::translated(flow, &ct), macs, Some(opt));
    }
    let snat = maps::node_addr().unwrap_or(flow.daddr);
    // Decide before recording anything: only a backend reached through this
    // interface is forwarded here.
    let probe = Tuple {
        saddr: snat,
        sport: flow.sport,
        daddr: backend.addr,
        dport: backend.port,
    };
    let Some(macs) = next_hop(ctx, &probe, flow.proto) else {
        return XDP_PASS;
    };
    let Some(ct) = conntrack::create_nodeport(flow, &backend, Some(snat), hash) else {
        return dropped(ctx, flow, drop_reason::SNAT_PORTS);
    };
    transmit(ctx, flow, &nat::translated(flow, &ct), macs, None)
}

/// Rewrites the frame to `to`, inserts the DSR option if given, sets the
/// MACs and sends it back out.
#[inline(always)]
fn transmit(
    ctx: &XdpContext,
    flow: &Flow,
    to: &Tuple,
    macs: ([u8; 6], [u8; 6]),
    opt: Option<DsrOption>,
) -> u32 {
    if xdp_packet::rewrite(ctx, flow, to).is_none() {
        return dropped(ctx, flow, drop_reason::REWRITE);
    }
    if let Some(opt) = opt
        && xdp_packet::push_ip_option(ctx, dsr::option_bytes(&opt)).is_none()
    {
        return dropped(ctx, flow, drop_reason::REWRITE);
    }
    if xdp_packet::set_macs(ctx, macs.0, macs.1).is_none() {
        return dropped(ctx, flow, drop_reason::REWRITE);
    }
    XDP_TX
}

/// The MACs towards `to.daddr` for a frame that will carry the DSR option:
/// the FIB must route it through a gateway (another node) out of the
/// interface it came in on, resolved, with room for the option.
#[inline(always)]
fn dsr_next_hop(ctx: &XdpContext, flow: &Flow, to: &Tuple) -> Option<([u8; 6], [u8; 6])> {
    let tot_len = xdp_packet::ip_tot_len(ctx)? + u16::from(DSR_OPT_LEN);
    let ifindex = ctx.ingress_ifindex() as u32;
    match dsr::route(ctx, ifindex, flow.proto, to.saddr, to.daddr, tot_len) {
        dsr::Route::Remote {
            ifindex: out,
            macs: Some(macs),
        } if out == ifindex => Some(macs),
        _ => None,
    }
}

/// Counts a drop for `reason`, emits its flow event (hook `XDP`, the
/// packet's tuple as it arrived) like the tc hooks' `flow::dropped`, and
/// returns the drop verdict.
#[inline(always)]
fn dropped(ctx: &XdpContext, flow: &Flow, reason: u32) -> u32 {
    maps::count_drop(reason);
    crate::flow::emit(&FlowEvent {
        ktime_ns: conntrack::now_ns(),
        saddr: flow.saddr,
        daddr: flow.daddr,
        orig_daddr: 0,
        sport: flow.sport,
        dport: flow.dport,
        orig_dport: 0,
        proto: flow.proto,
        verdict: VERDICT_DROPPED,
        drop_reason: reason as u16,
        direction: 0,
        hook: hook::XDP,
        policy_id: 0,
        endpoint_id: 0,
        _pad: 0,
        ifindex: ctx.ingress_ifindex() as u32,
        _pad2: 0,
    });
    XDP_DROP
}

/// The (destination, source) MACs of the next hop towards `to.daddr`, if the
/// FIB routes it out of the interface the frame came in on and the
/// neighbour is resolved; `None` otherwise (the caller passes the frame to
/// tc, which forwards with `bpf_redirect_neigh` or delivers it to a pod).
#[inline(always)]
fn next_hop(ctx: &XdpContext, to: &Tuple, proto: u8) -> Option<([u8; 6], [u8; 6])> {
    let tot_len = xdp_packet::ip_tot_len(ctx)?;
    let ifindex = ctx.ingress_ifindex() as u32;
    let (ret, params) = fib::lookup(
        ctx,
        &fib::Query {
            ifindex,
            proto,
            tos: 0,
            saddr: to.saddr,
            daddr: to.daddr,
            sport: to.sport,
            dport: to.dport,
            tot_len,
        },
    );
    (ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) && params.ifindex == ifindex)
        .then_some((params.dmac, params.smac))
}
