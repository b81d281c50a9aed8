//! Forwarding a translated packet without the stack: FIB lookup, then
//! `bpf_redirect` (neighbour known) or `bpf_redirect_neigh` (let the kernel
//! resolve it).
//!
//! Needed for NodePort traffic: after translation its source (or, for
//! replies, the packet as a whole) carries the node's own address, and the
//! stack drops packets that arrive with a local source address as martians
//! (`fib_validate_source`, unless `accept_local`).

use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};

use weir_ebpf_common::drop_reason;

use crate::{
    flow,
    packet::{read, write},
    parse::{ETH_HLEN, IP_DADDR_OFF, IP_SADDR_OFF},
};

const AF_INET: u8 = 2;

/// What an IPv4 FIB lookup asks: the interface the packet arrived on, its
/// protocol, TOS, addresses and ports (network order) and IPv4 total length
/// (host order; 0 lets the kernel check the packet against the egress MTU
/// GSO-aware — with the total length it answers FRAG_NEEDED for every GSO
/// packet larger than the MTU).
#[derive(Clone, Copy, Default)]
pub struct Query {
    pub ifindex: u32,
    pub proto: u8,
    pub tos: u8,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub tot_len: u16,
}

/// Runs `bpf_fib_lookup` for `q` in the context of `ctx`'s packet: the
/// helper's answer (`BPF_FIB_LKUP_RET_*`) and the parameter block it filled
/// (egress `ifindex`, `dmac`/`smac`, the next hop in the destination field).
#[inline(always)]
pub fn lookup<C: EbpfContext>(ctx: &C, q: &Query) -> (i64, bpf_fib_lookup) {
    // SAFETY: bpf_fib_lookup is plain data (integers and unions of them);
    // all zeroes is a valid value and what the helper expects for unused fields.
    let mut params: bpf_fib_lookup = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = q.proto;
    params.sport = q.sport;
    params.dport = q.dport;
    params.__bindgen_anon_1.tot_len = q.tot_len;
    params.__bindgen_anon_2.tos = q.tos;
    params.ifindex = q.ifindex;
    params.__bindgen_anon_3.ipv4_src = q.saddr;
    params.__bindgen_anon_4.ipv4_dst = q.daddr;
    // SAFETY: the helper reads and writes `params`, a valid local of the
    // size passed, and takes the program's own context.
    let ret = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    (ret, params)
}

/// The next hop the FIB wrote into `params`' destination field (the
/// gateway, or the destination itself for a directly connected route).
#[inline(always)]
pub fn next_hop(params: &bpf_fib_lookup) -> u32 {
    // SAFETY: a union of u32 views of the address; the helper wrote it.
    unsafe { params.__bindgen_anon_4.ipv4_dst }
}

/// Forwards the (already translated) IPv4 packet to where the FIB routes its
/// destination; the verdict to return. Drops it when there is no route
/// (`hook`: the calling hook, for the drop's flow event).
#[inline(always)]
pub fn redirect(ctx: &TcContext, proto: u8, hook: u8) -> i32 {
    let (Some(saddr), Some(daddr)) = (
        read::<u32>(ctx, ETH_HLEN + IP_SADDR_OFF),
        read::<u32>(ctx, ETH_HLEN + IP_DADDR_OFF),
    ) else {
        return flow::dropped(ctx, hook, drop_reason::REWRITE);
    };
    let (ret, params) = lookup(
        ctx,
        &Query {
            // SAFETY: `skb` is the context pointer the kernel passed to the program.
            ifindex: unsafe { (*ctx.skb.skb).ifindex },
            proto,
            saddr,
            daddr,
            // tot_len 0: GSO-aware MTU check (see `Query`); a backend's bulk
            // reply above the MTU would otherwise be refused and dropped.
            ..Query::default()
        },
    );
    if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        if write(ctx, 0, &params.dmac).is_none() || write(ctx, 6, &params.smac).is_none() {
            return flow::dropped(ctx, hook, drop_reason::REWRITE);
        }
        // SAFETY: bpf_redirect takes an ifindex and flags; no pointers.
        unsafe { bpf_redirect(params.ifindex, 0) as i32 }
    } else if ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // SAFETY: a null parameter block asks the kernel to use the packet's
        // own destination for the neighbour lookup.
        unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) as i32 }
    } else {
        flow::dropped(ctx, hook, drop_reason::NO_ROUTE)
    }
}
