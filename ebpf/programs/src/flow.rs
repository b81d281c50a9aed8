//! Flow events: one [`FlowEvent`] into `WEIR_FLOWS` per policy verdict and
//! per datapath drop (the ABI is `weir_ebpf_common::flow`). Only the paths
//! that judge a new connection or drop a packet call into this module, so
//! packets that follow a conntrack entry cost nothing here.
//!
//! A full ring loses the event, never the packet: the loss is counted in
//! `WEIR_FLOW_LOST`. The socket hooks' rejections are no packets: their
//! events carry the frontend the application addressed and hook `SOCK`
//! ([`sock_rejected`]).

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    programs::TcContext,
};
use weir_ebpf_common::{
    IPPROTO_TCP, IPPROTO_UDP,
    flow::{FlowEvent, NO_DROP, VERDICT_DROPPED, VERDICT_FORWARDED},
    policy::IPPROTO_SCTP,
};

use crate::{
    conntrack::now_ns,
    maps::{self, FLOW_LOST, FLOWS},
    packet::read,
    parse::{ETH_HLEN, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF},
};

/// Offset of the protocol inside the IPv4 header.
const IP_PROTO_OFF: usize = 9;
/// Offset of the fragment field inside the IPv4 header.
const IP_FRAG_OFF: usize = 6;
const ETH_P_IP: u16 = 0x0800;

/// The interface the packet is on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed to the program;
    // reading a field of it is a plain context load.
    unsafe { (*skb(ctx)).ifindex }
}

/// The context pointer, opaque to the optimizer at this point: otherwise
/// LLVM may keep `ctx + offsetof(field)` in a register or on the stack and
/// dereference that later, which the verifier rejects ("dereference of
/// modified ctx ptr"); context fields must be read at a constant offset
/// from the context pointer itself.
#[inline(always)]
pub fn skb(ctx: &TcContext) -> *mut __sk_buff {
    core::hint::black_box(ctx.skb.skb)
}

/// A flow event with the packet's 5-tuple and the hook; the caller fills
/// in the verdict fields.
#[inline(always)]
pub fn event(
    ctx: &TcContext,
    hook: u8,
    (saddr, sport): (u32, u16),
    (daddr, dport): (u32, u16),
    proto: u8,
) -> FlowEvent {
    FlowEvent {
        ktime_ns: now_ns(),
        saddr,
        daddr,
        orig_daddr: 0,
        sport,
        dport,
        orig_dport: 0,
        proto,
        verdict: VERDICT_FORWARDED,
        drop_reason: NO_DROP,
        direction: 0,
        hook,
        policy_id: 0,
        endpoint_id: 0,
        _pad: 0,
        ifindex: ifindex(ctx),
        _pad2: 0,
    }
}

/// Writes `event` into the ring, or counts it as lost.
#[inline(always)]
pub fn emit(event: &FlowEvent) {
    if FLOWS.output::<FlowEvent>(event, 0).is_err()
        && let Some(ptr) = FLOW_LOST.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot of a per-CPU u64; a program is not
        // preempted by itself on one CPU, so the increment does not race.
        unsafe { *ptr += 1 }
    }
}

/// Counts a rejection of the socket-level balancer (a connect or send to
/// frontend `addr:port`) and emits its flow event: source unknown, hook
/// `SOCK`. The one way the socket hooks refuse a call.
#[inline(always)]
pub fn sock_rejected(addr: u32, port: u16, proto: u8, reason: u32) {
    maps::count_drop(reason);
    emit(&FlowEvent {
        ktime_ns: now_ns(),
        saddr: 0,
        daddr: addr,
        orig_daddr: 0,
        sport: 0,
        dport: port,
        orig_dport: 0,
        proto,
        verdict: VERDICT_DROPPED,
        drop_reason: reason as u16,
        direction: 0,
        hook: weir_ebpf_common::flow::hook::SOCK,
        policy_id: 0,
        endpoint_id: 0,
        _pad: 0,
        ifindex: 0,
        _pad2: 0,
    });
}

/// Counts a drop for `reason` (a `drop_reason`), emits its flow event (the
/// packet's addresses as they are now) and returns the drop verdict. The
/// one way the tc hooks drop a packet.
#[inline(always)]
pub fn dropped(ctx: &TcContext, hook: u8, reason: u32) -> i32 {
    maps::count_drop(reason);
    let (src, dst, proto) = packet_tuple(ctx);
    let mut e = event(ctx, hook, src, dst, proto);
    e.verdict = VERDICT_DROPPED;
    e.drop_reason = reason as u16;
    emit(&e);
    TC_ACT_SHOT
}

/// (source, destination, protocol) of an IPv4 packet as far as it can be
/// read: ports only for unfragmented TCP/UDP/SCTP, zeros for what is not
/// there.
#[inline(always)]
fn packet_tuple(ctx: &TcContext) -> ((u32, u16), (u32, u16), u8) {
    let none = ((0, 0), (0, 0), 0);
    if read::<u16>(ctx, 12).map(u16::from_be) != Some(ETH_P_IP) {
        return none;
    }
    let (Some(vihl), Some(frag), Some(proto), Some(saddr), Some(daddr)) = (
        read::<u8>(ctx, ETH_HLEN),
        read::<u16>(ctx, ETH_HLEN + IP_FRAG_OFF),
        read::<u8>(ctx, ETH_HLEN + IP_PROTO_OFF),
        read::<u32>(ctx, ETH_HLEN + IP_SADDR_OFF),
        read::<u32>(ctx, ETH_HLEN + IP_DADDR_OFF),
    ) else {
        return none;
    };
    let l4 = ETH_HLEN + usize::from(vihl & 0x0f) * 4;
    let has_ports = matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
        && u16::from_be(frag) & 0x1fff == 0;
    let (sport, dport) = if has_ports {
        (
            read::<u16>(ctx, l4 + L4_SPORT_OFF).unwrap_or(0),
            read::<u16>(ctx, l4 + L4_DPORT_OFF).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    ((saddr, sport), (daddr, dport), proto)
}
