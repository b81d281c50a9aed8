//! The pod fast path: a packet from-pod lets through whose destination is a
//! pod of this node goes straight into that pod's network namespace with
//! `bpf_redirect_peer`, skipping the node's routing, netfilter (FORWARD,
//! POSTROUTING), neighbour output, qdisc, the second veth transmit and the
//! backlog — what Cilium calls BPF host routing. Switched by the agent
//! (`--pod-redirect`) through `WEIR_POD_IFS` (see
//! `weir_ebpf_common::redirect`).
//!
//! Nothing is lost by skipping the destination veth's to-pod program: for a
//! TCP/UDP/SCTP packet from-pod passed (`TC_ACT_OK`) it would have done
//! nothing. from-pod already translated it (replies of local backends
//! included), judged a new connection against a local destination's
//! ingress (and marked it `SKB_MARK_POLICY_JUDGED`, which to-pod obeys);
//! when the destination is not a policy endpoint, to-pod's lookup finds no
//! entry from-pod did not find and no endpoint to judge. Fragments, ICMP
//! and everything from-pod did not parse take the stack, as before.
//!
//! The packet gets what the kernel's forwarding would give it: the MACs of
//! the FIB answer (destination = the pod's neighbour entry, source = the
//! veth's), TTL - 1 with the IPv4 checksum updated (RFC 1624), and a zero
//! mark (a veth crossing into another namespace scrubs it). Whenever the FIB
//! does not give a complete answer the packet takes the stack unchanged:
//! no neighbour entry yet (the stack resolves it), forwarding disabled on
//! the veth, an MTU the packet exceeds, a destination behind an interface
//! that is not a registered pod veth (another node, the node itself, the
//! outside), TTL <= 1 (the stack answers with ICMP time exceeded) and IPv4
//! options (the stack processes them).

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};

use crate::{
    fib, flow, maps,
    packet::{read, write},
    parse::{Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_SPORT_OFF},
};

/// IPv4 version 4, header length 5 words: no options.
const IPV4_NO_OPTIONS: u8 = 0x45;
/// Offsets inside the IPv4 header.
const IP_TOS_OFF: usize = 1;
/// TTL and protocol: the 16-bit word the checksum update covers.
const IP_TTL_OFF: usize = 8;

/// from-pod's verdict for a parsed TCP/UDP/SCTP packet, turned into a
/// redirect into the destination pod when the fast path applies; any other
/// verdict (a drop, a redirect of its own) is returned unchanged.
#[inline(always)]
pub fn to_local_pod(ctx: &TcContext, flow: &Flow, verdict: i32) -> i32 {
    if verdict != TC_ACT_OK as i32 {
        return verdict;
    }
    deliver(ctx, flow).unwrap_or(verdict)
}

/// The redirect verdict, or `None` when the packet must take the stack
/// (nothing written yet in that case).
#[inline(always)]
fn deliver(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    // Off (the map is empty) or not from a pod veth: one lookup.
    let ingress = flow::ifindex(ctx);
    registered(ingress)?;
    let version_ihl: u8 = read(ctx, flow.l3_off)?;
    let ttl_word: u16 = read(ctx, flow.l3_off + IP_TTL_OFF)?;
    // The TTL is the word's first byte on the wire.
    let ttl = ttl_word.to_ne_bytes()[0];
    if version_ihl != IPV4_NO_OPTIONS || ttl <= 1 {
        return None;
    }
    let tos: u8 = read(ctx, flow.l3_off + IP_TOS_OFF)?;
    // As from-pod left them (`flow` holds the addresses before translation).
    let saddr: u32 = read(ctx, flow.l3_off + IP_SADDR_OFF)?;
    let daddr: u32 = read(ctx, flow.l3_off + IP_DADDR_OFF)?;
    let ports: [u16; 2] = read(ctx, flow.l4_off + L4_SPORT_OFF)?;

    // tot_len 0: the GSO-aware MTU check (see `fib::Query`).
    let (ret, params) = fib::lookup(
        ctx,
        &fib::Query {
            ifindex: ingress,
            proto: flow.proto,
            tos,
            saddr,
            daddr,
            sport: ports[0],
            dport: ports[1],
            tot_len: 0,
        },
    );
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return None;
    }
    let target = params.ifindex;
    registered(target)?;

    // Rewrite as the stack's forwarding would: TTL first (a failure leaves
    // the packet as it was), then the MACs.
    let new_ttl_word = u16::from_ne_bytes([ttl - 1, ttl_word.to_ne_bytes()[1]]);
    ctx.l3_csum_replace(
        flow.l3_off + IP_CSUM_OFF,
        u64::from(ttl_word),
        u64::from(new_ttl_word),
        2,
    )
    .ok()?;
    let macs = mac_header(&params.dmac, &params.smac);
    if write(ctx, flow.l3_off + IP_TTL_OFF, &new_ttl_word).is_none()
        || write(ctx, 0, &macs).is_none()
    {
        // Half rewritten (checksum already updated): never deliver it.
        return Some(flow::dropped(
            ctx,
            weir_ebpf_common::flow::hook::FROM_POD,
            weir_ebpf_common::drop_reason::REWRITE,
        ));
    }
    // SAFETY: as in `policy::mark`; `mark` is writable for tc programs.
    unsafe { (*flow::skb(ctx)).mark = 0 }
    // SAFETY: bpf_redirect_peer takes an ifindex and flags; no pointers.
    Some(unsafe { bpf_redirect_peer(target, 0) } as i32)
}

/// Whether `ifindex` is a host-side pod veth the agent registered.
#[inline(always)]
fn registered(ifindex: u32) -> Option<()> {
    maps::POD_IFACES.get_ptr(&ifindex).map(|_| ())
}

/// Destination then source MAC, as the Ethernet header holds them.
#[inline(always)]
fn mac_header(dst: &[u8; 6], src: &[u8; 6]) -> [u8; 12] {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(dst);
    macs[6..].copy_from_slice(src);
    macs
}
