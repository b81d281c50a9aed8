//! Direct server return (see `weir_ebpf_common::dsr` for the option and
//! the rules of which packets carry it).
//!
//! - Load-balancing node ([`route`], [`push_option`]): a new connection to a
//!   frontend with `SERVICE_FLAG_DSR` whose backend the FIB reaches through a
//!   gateway (a pod on another node; native routing) and whose first packet
//!   still fits the MTU with the option is DNATed only; the frontend goes to
//!   the backend node in an IPv4 option right after the base header. The
//!   hooks (tc node-ingress, XDP) call these; XDP inserts the option itself
//!   (`crate::xdp_packet::push_ip_option`).
//! - Backend node ([`receive`], from tc node-ingress; XDP passes packets with
//!   IPv4 options): a packet whose first option is ours is checked (the
//!   frontend must be a DSR frontend this node knows: its own key, e.g. a
//!   LoadBalancer IP, or a NodePort of a cluster node in `WEIR_NODE_ADDRS`
//!   on a port this node serves with DSR too; the destination must be one of
//!   that frontend's backends and routed to a local pod), judged by the
//!   pod's ingress policy with the real client address, and recorded as a
//!   reverse conntrack entry, which from-pod applies to the replies: their
//!   source becomes the frontend and they leave straight to the client.
//!   Anything that fails the checks is dropped (`dsr_invalid`, a flow event):
//!   a foreign host must not make this node send packets from an address of
//!   its choice.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        TC_ACT_OK, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_NET,
    },
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use weir_ebpf_common::{
    BackendKey, SERVICE_FLAG_DSR, SERVICE_FLAG_NODEPORT, ServiceKey, ServiceValue, drop_reason,
    dsr::{DSR_BACKEND_SCAN, DSR_OPT_LEN, DSR_OPT_TYPE, DsrOption, NODE_ADDRS_MAX_ENTRIES},
    flow::hook::NODE_INGRESS,
};

use crate::{
    conntrack, fib, flow, maps,
    packet::{read, write},
    parse::{ETH_HLEN, Flow, IP_CSUM_OFF},
    policy::{self, Conn, Outcome},
};

/// The cluster's node addresses (network order) -> 1: the addresses a DSR
/// option may name as a NodePort frontend. Written by the agent's route sync.
#[map(name = "WEIR_NODE_ADDRS")]
static NODE_ADDRS: HashMap<u32, u8> = HashMap::pinned(NODE_ADDRS_MAX_ENTRIES, 0);

/// Length of an IPv4 header without options.
const IP_BASE_LEN: usize = 20;
const IP_TOT_LEN_OFF: usize = 2;

/// What the FIB says about sending a packet to a backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through a gateway (another node) out of `ifindex`; `macs` (next hop,
    /// own) when the neighbour is resolved.
    Remote {
        ifindex: u32,
        macs: Option<([u8; 6], [u8; 6])>,
    },
    /// The packet would exceed the route's MTU.
    TooBig,
    /// Anything else: a local pod, a directly connected address, no route.
    Other,
}

/// Asks the FIB how `saddr` -> `daddr` (`tot_len` bytes of IPv4, host
/// order) leaves when it arrives on `ifindex`.
#[inline(always)]
pub fn route<C: EbpfContext>(
    ctx: &C,
    ifindex: u32,
    proto: u8,
    saddr: u32,
    daddr: u32,
    tot_len: u16,
) -> Route {
    let (ret, params) = fib::lookup(
        ctx,
        &fib::Query {
            ifindex,
            proto,
            saddr,
            daddr,
            tot_len,
            ..fib::Query::default()
        },
    );
    if ret == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        return Route::TooBig;
    }
    let resolved = ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS);
    if !resolved && ret != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Route::Other;
    }
    if fib::next_hop(&params) == daddr {
        return Route::Other;
    }
    Route::Remote {
        ifindex: params.ifindex,
        macs: resolved.then_some((params.dmac, params.smac)),
    }
}

/// The IPv4 total length of the tc packet (host order).
#[inline(always)]
pub fn tot_len(ctx: &TcContext) -> Option<u16> {
    read::<u16>(ctx, ETH_HLEN + IP_TOT_LEN_OFF).map(u16::from_be)
}

/// Inserts `opt` as the first IPv4 option of the (option-less) tc packet,
/// fixing IHL, total length and the header checksum. The L4 checksum is
/// unchanged: options are not part of the pseudo header.
#[inline(always)]
pub fn push_option(ctx: &TcContext, opt: &DsrOption) -> Option<()> {
    let len = usize::from(DSR_OPT_LEN);
    // BPF_ADJ_ROOM_NET inserts the room right after the base IPv4 header.
    ctx.adjust_room(len as i32, BPF_ADJ_ROOM_NET, 0).ok()?;
    let vihl_tos: [u8; 2] = read(ctx, ETH_HLEN)?;
    let old_len: u16 = read(ctx, ETH_HLEN + IP_TOT_LEN_OFF)?;
    let new_vihl_tos = [vihl_tos[0] + (DSR_OPT_LEN / 4), vihl_tos[1]];
    let new_len = (u16::from_be(old_len) + len as u16).to_be();
    let csum = ETH_HLEN + IP_CSUM_OFF;
    ctx.l3_csum_replace(
        csum,
        u64::from(u16::from_ne_bytes(vihl_tos)),
        u64::from(u16::from_ne_bytes(new_vihl_tos)),
        2,
    )
    .ok()?;
    ctx.l3_csum_replace(csum, u64::from(old_len), u64::from(new_len), 2)
        .ok()?;
    let bytes: [u8; 8] = option_bytes(opt);
    let first = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let second = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    ctx.l3_csum_replace(csum, 0, u64::from(first), 4).ok()?;
    ctx.l3_csum_replace(csum, 0, u64::from(second), 4).ok()?;
    write(ctx, ETH_HLEN, &new_vihl_tos)?;
    write(ctx, ETH_HLEN + IP_TOT_LEN_OFF, &new_len)?;
    write(ctx, ETH_HLEN + IP_BASE_LEN, &bytes)
}

/// The option as it goes on the wire.
#[inline(always)]
pub fn option_bytes(opt: &DsrOption) -> [u8; 8] {
    let port = opt.port.to_ne_bytes();
    let addr = opt.addr.to_ne_bytes();
    [
        opt.kind, opt.len, port[0], port[1], addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Backend node: a packet with IPv4 options arrived at the node interface.
/// `None`: its first option is not ours, the caller goes on as usual;
/// otherwise the verdict.
#[inline(always)]
pub fn receive(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    let at = flow.l3_off + IP_BASE_LEN;
    if flow.l4_off <= at || read::<u8>(ctx, at)? != DSR_OPT_TYPE {
        return None;
    }
    // Ours from here on: accepted whole or dropped.
    let opt = read::<DsrOption>(ctx, at)
        .filter(|o| o.len == DSR_OPT_LEN && flow.l4_off >= at + usize::from(DSR_OPT_LEN));
    let valid = opt.filter(|o| {
        frontend(o, flow.proto).is_some_and(|svc| is_backend(&svc, flow.daddr, flow.dport))
            && local(ctx, flow)
    });
    let Some(opt) = valid else {
        return Some(flow::dropped(ctx, NODE_INGRESS, drop_reason::DSR_INVALID));
    };
    // Later UDP datagrams of a recorded flow pass on its entry (to-pod sees
    // the reverse entry and does not judge them again); a SYN is judged
    // afresh, as everywhere.
    if !flow.tcp_syn && conntrack::dsr_recorded(flow, &opt) {
        return Some(TC_ACT_OK as i32);
    }
    // The pod's ingress, with the client's own address.
    if policy::judge_ingress(ctx, NODE_INGRESS, &Conn::of(flow)) == Outcome::Denied {
        return Some(TC_ACT_SHOT as i32);
    }
    if conntrack::create_dsr_reverse(flow, &opt).is_none() {
        return Some(flow::dropped(ctx, NODE_INGRESS, drop_reason::MAP_INSERT));
    }
    Some(TC_ACT_OK as i32)
}

/// The DSR frontend an option names, as this node holds it: its own key
/// (external and LoadBalancer IPs are the same on every node), or, for the
/// NodePort of another cluster node, this node's frontend on that port.
#[inline(always)]
fn frontend(opt: &DsrOption, proto: u8) -> Option<ServiceValue> {
    let key = ServiceKey {
        addr: opt.addr,
        port: opt.port,
        proto,
        _pad: 0,
    };
    let dsr = |v: &ServiceValue| {
        v.flags & (SERVICE_FLAG_NODEPORT | SERVICE_FLAG_DSR)
            == SERVICE_FLAG_NODEPORT | SERVICE_FLAG_DSR
    };
    if let Some(svc) = maps::get_copy(&maps::SERVICES, &key).filter(dsr) {
        return Some(svc);
    }
    NODE_ADDRS.get_ptr(&opt.addr)?;
    let own = ServiceKey {
        addr: maps::node_addr()?,
        ..key
    };
    maps::get_copy(&maps::SERVICES, &own).filter(dsr)
}

/// Whether `addr:port` is in the frontend's backend set (its first
/// `DSR_BACKEND_SCAN` backends).
#[inline(always)]
fn is_backend(svc: &ServiceValue, addr: u32, port: u16) -> bool {
    for index in 0..DSR_BACKEND_SCAN {
        if index >= svc.backend_count {
            return false;
        }
        let key = BackendKey {
            slot: svc.backend_slot,
            index,
        };
        if let Some(b) = maps::get_copy(&maps::BACKENDS, &key)
            && b.addr == addr
            && b.port == port
        {
            return true;
        }
    }
    false
}

/// Whether the FIB delivers the packet's destination on this node: a direct
/// route (no gateway) out of another interface than the one it came in on
/// (a pod veth).
#[inline(always)]
fn local(ctx: &TcContext, flow: &Flow) -> bool {
    let ingress = flow::ifindex(ctx);
    let (ret, params) = fib::lookup(
        ctx,
        &fib::Query {
            ifindex: ingress,
            proto: flow.proto,
            saddr: flow.saddr,
            daddr: flow.daddr,
            ..fib::Query::default()
        },
    );
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && ret != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return false;
    }
    fib::next_hop(&params) == flow.daddr && params.ifindex != ingress
}
