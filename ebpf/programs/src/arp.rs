//! Answering ARP for LoadBalancer IPs this node owns (an address marker with
//! `SERVICE_FLAG_ANNOUNCE` in `WEIR_SERVICES`): the request is turned into
//! the reply in place and sent back out of the interface it came in on, so
//! clients on the node's L2 segment send LoadBalancer traffic to this node
//! (where the node-ingress hook translates it). The address is never
//! configured on the interface, so the stack itself would not answer.

use aya_ebpf::{bindings::TC_ACT_OK, helpers::bpf_redirect, programs::TcContext};
use weir_ebpf_common::{SERVICE_FLAG_ANNOUNCE, ServiceKey, drop_reason, flow::hook};

use crate::{
    maps,
    packet::{read, write},
    parse::ETH_HLEN,
};

/// Ethertype of ARP.
pub const ETH_P_ARP: u16 = 0x0806;

/// An ARP packet for IPv4 over Ethernet, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArpIpv4 {
    htype: u16,
    ptype: u16,
    hlen: u8,
    plen: u8,
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// Handles an ARP frame: answers requests for owned LoadBalancer IPs (the
/// verdict is a redirect), passes everything else.
#[inline(always)]
pub fn handle(ctx: &TcContext) -> i32 {
    let Some(arp) = read::<ArpIpv4>(ctx, ETH_HLEN) else {
        return TC_ACT_OK;
    };
    if u16::from_be(arp.htype) != 1
        || u16::from_be(arp.ptype) != 0x0800
        || arp.hlen != 6
        || arp.plen != 4
        || u16::from_be(arp.oper) != ARP_REQUEST
    {
        return TC_ACT_OK;
    }
    let marker = ServiceKey {
        addr: u32::from_ne_bytes(arp.tpa),
        port: 0,
        proto: 0,
        _pad: 0,
    };
    let owned = maps::get_copy(&maps::SERVICES, &marker)
        .is_some_and(|v| v.flags & SERVICE_FLAG_ANNOUNCE != 0);
    let Some(mac) = maps::node_mac().filter(|_| owned) else {
        return TC_ACT_OK;
    };
    let reply = ArpIpv4 {
        oper: ARP_REPLY.to_be(),
        sha: mac,
        spa: arp.tpa,
        tha: arp.sha,
        tpa: arp.spa,
        ..arp
    };
    if write(ctx, 0, &arp.sha).is_none()
        || write(ctx, 6, &mac).is_none()
        || write(ctx, ETH_HLEN, &reply).is_none()
    {
        return crate::flow::dropped(ctx, hook::NODE_INGRESS, drop_reason::REWRITE);
    }
    // SAFETY: `skb` is the context pointer the kernel passed to the program;
    // bpf_redirect takes an ifindex and flags, no pointers.
    unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
}
