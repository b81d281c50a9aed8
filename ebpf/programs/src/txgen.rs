//! Hook: **none of the product's** — the NodePort benchmark's traffic
//! generator and sink (`weir-bench nodeport`). They ship in this object so
//! that the benchmark needs no second eBPF build; the agent never loads them
//! (it loads its programs by name) and their maps are not pinned. Names and
//! indices: `weir_ebpf_common::txgen`.
//!
//! - [`weir_txgen`] is run by `BPF_PROG_TEST_RUN` with XDP live frames
//!   (kernel ≥ 5.18, `BPF_F_TEST_XDP_LIVE_FRAMES`) on a 60-byte UDP frame
//!   built by the benchmark. Each run first writes the frame's headers from
//!   the template map: live frames live in a page pool the kernel recycles
//!   without re-initialising the data, and a frame that went through the
//!   node comes back with the node's rewrites (MACs, TTL, NAT). Then it gives
//!   the frame the next flow's source port (`SPORT_BASE + n % FLOWS`), zeroes the UDP checksum (optional in
//!   IPv4; the port changed) and returns `XDP_TX`, which the test run turns
//!   into a redirect out of the context's `ingress_ifindex`
//!   (`net/bpf/test_run.c`): the generator's veth, whose `ndo_xdp_xmit` puts
//!   the frame straight into the peer's receive ring. No socket, no skb: a
//!   frame costs the sender far less than forwarding it costs the node.
//! - [`weir_txsink`] sits (native XDP) on the interface forwarded frames
//!   arrive on: UDP frames to `SINK_DPORT` are counted and dropped, the rest
//!   (ARP) goes to the stack. Being an XDP program it also gives that veth
//!   the NAPI context `XDP_TX`/redirected frames from its peer need.

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use weir_ebpf_common::{
    IPPROTO_UDP,
    txgen::{self, config, counter},
};

use crate::{parse::ETH_HLEN, xdp_packet};

const ETH_P_IP: u16 = 0x0800;
/// The UDP header's offset in an option-less IPv4 frame.
const UDP_OFF: usize = ETH_HLEN + 20;

/// The benchmark's settings, indexed by `txgen::config` (host byte order).
#[map(name = "WEIR_TXGEN_CFG")]
static CONFIG: Array<u32> = Array::with_max_entries(config::COUNT, 0);

/// The frame's first bytes as the benchmark built them (`txgen::HEADER_MAP`).
#[map(name = "WEIR_TXGEN_HDR")]
static HEADER: Array<u64> = Array::with_max_entries(txgen::HEADER_WORDS, 0);

/// Frames generated and sunk, per CPU, indexed by `txgen::counter`.
#[map(name = "WEIR_TXGEN_CNT")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn setting(index: u32) -> u32 {
    CONFIG.get(index).copied().unwrap_or(0)
}

/// Increments counter `index` of this CPU; returns its previous value.
#[inline(always)]
fn bump(index: u32) -> Option<u64> {
    let ptr = COUNTERS.get_ptr_mut(index)?;
    // SAFETY: this CPU's slot of a per-CPU u64; a program is not preempted
    // by itself on one CPU, so the read-increment does not race.
    unsafe {
        let n = *ptr;
        *ptr = n + 1;
        Some(n)
    }
}

#[xdp]
pub fn weir_txgen(ctx: XdpContext) -> u32 {
    let Some(n) = bump(counter::GENERATED) else {
        return XDP_ABORTED;
    };
    let mut i = 0;
    while i < txgen::HEADER_WORDS {
        let word = HEADER.get(i).copied().unwrap_or(0);
        if xdp_packet::write(&ctx, i as usize * 8, word).is_none() {
            return XDP_ABORTED;
        }
        i += 1;
    }
    let flows = setting(config::FLOWS).max(1);
    let sport = setting(config::SPORT_BASE).wrapping_add((n as u32) % flows) as u16;
    if xdp_packet::write(&ctx, UDP_OFF, sport.to_be()).is_none()
        || xdp_packet::write(&ctx, UDP_OFF + 6, 0u16).is_none()
    {
        return XDP_ABORTED;
    }
    XDP_TX
}

#[xdp]
pub fn weir_txsink(ctx: XdpContext) -> u32 {
    let ours = xdp_packet::read::<u16>(&ctx, 12) == Some(ETH_P_IP.to_be())
        && xdp_packet::read::<u8>(&ctx, ETH_HLEN) == Some(0x45)
        && xdp_packet::read::<u8>(&ctx, ETH_HLEN + 9) == Some(IPPROTO_UDP)
        && xdp_packet::read::<u16>(&ctx, UDP_OFF + 2)
            == Some((setting(config::SINK_DPORT) as u16).to_be());
    if !ours {
        return XDP_PASS;
    }
    let _ = bump(counter::SUNK);
    XDP_DROP
}
