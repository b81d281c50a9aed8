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
    // SAFETY: bpf_fib_lookup is plain data (integers and unions of them);
    // all zeroes is a valid value and what the helper expects for unused fields.
    let mut params: bpf_fib_lookup = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = proto;
    // tot_len stays 0, so the kernel checks the skb against the egress
    // device's MTU GSO-aware (`is_skb_forwardable`): given the IPv4 total
    // length it answers FRAG_NEEDED for every GSO packet (a backend's bulk
    // reply) larger than the MTU, which this function would drop.
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = saddr;
    params.__bindgen_anon_4.ipv4_dst = daddr;
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
