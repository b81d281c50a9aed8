//! Address and port rewriting with incremental checksum updates.
//!
//! The checksum helpers (`bpf_l3_csum_replace`, `bpf_l4_csum_replace`) are
//! used instead of recomputing sums so that packets with `CHECKSUM_PARTIAL`
//! (locally generated TCP/UDP from a pod, checksum offloaded to "the device")
//! stay correct: with `BPF_F_PSEUDO_HDR` the kernel adjusts only the
//! pseudo-header part it is responsible for. For UDP, `BPF_F_MARK_MANGLED_0`
//! keeps a zero ("no checksum") field zero and turns a computed zero into
//! 0xffff, as RFC 768 requires.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};

use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_HAIRPIN, CT_FLAG_NO_NAT, CT_FLAG_SNAT, CtValue,
    IPPROTO_UDP,
};

use crate::{
    packet::write,
    parse::{Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF},
};

/// Which end of the packet to rewrite.
#[derive(Clone, Copy)]
pub enum Side {
    /// Destination address and port (DNAT, client -> backend).
    Destination,
    /// Source address and port (reverse NAT, backend reply -> client).
    Source,
}

/// Rewrites `side` of the packet from the flow's current address/port to
/// `addr`/`port` (network order), fixing the IPv4 and L4 checksums.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, flow: &Flow, side: Side, addr: u32, port: u16) -> Option<()> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Destination => (flow.daddr, flow.dport, IP_DADDR_OFF, L4_DPORT_OFF),
        Side::Source => (flow.saddr, flow.sport, IP_SADDR_OFF, L4_SPORT_OFF),
    };
    let mangled = if flow.proto == IPPROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    if !flow.udp_no_csum {
        // The address is part of the L4 pseudo header.
        ctx.l4_csum_replace(
            flow.l4_csum_off,
            u64::from(old_addr),
            u64::from(addr),
            u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
        )
        .ok()?;
        if old_port != port {
            ctx.l4_csum_replace(
                flow.l4_csum_off,
                u64::from(old_port),
                u64::from(port),
                mangled | 2,
            )
            .ok()?;
        }
    }
    ctx.l3_csum_replace(
        flow.l3_off + IP_CSUM_OFF,
        u64::from(old_addr),
        u64::from(addr),
        4,
    )
    .ok()?;
    write(ctx, flow.l3_off + addr_off, &addr)?;
    write(ctx, flow.l4_off + port_off, &port)?;
    Some(())
}

/// Source and destination of a packet after translation (network order).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub saddr: u32,
    pub sport: u16,
    pub daddr: u32,
    pub dport: u16,
}

/// The addresses and ports the translation a conntrack entry records gives
/// this packet: the forward direction rewrites the destination to the
/// backend, the reverse direction the source back to the frontend; hairpin
/// and SNAT connections also get the other end rewritten (see
/// `CT_FLAG_HAIRPIN`, `CT_FLAG_SNAT`); policy-only entries (`CT_FLAG_NO_NAT`)
/// change nothing. The one decision both the tc programs ([`translate`]) and
/// XDP (`crate::xdp`) apply.
#[inline(always)]
pub fn translated(flow: &Flow, ct: &CtValue) -> Tuple {
    let mut to = Tuple {
        saddr: flow.saddr,
        sport: flow.sport,
        daddr: flow.daddr,
        dport: flow.dport,
    };
    if ct.flags & CT_FLAG_NO_NAT != 0 {
        return to;
    }
    let hairpin = ct.flags & CT_FLAG_HAIRPIN != 0;
    let snat = ct.flags & CT_FLAG_SNAT != 0;
    match ct.direction {
        CT_DIR_FORWARD => {
            to.daddr = ct.backend_addr;
            to.dport = ct.backend_port;
            if hairpin {
                to.saddr = ct.frontend_addr;
            } else if snat {
                to.saddr = ct.nat_addr;
                to.sport = ct.nat_port;
            }
        }
        CT_DIR_REVERSE => {
            to.saddr = ct.frontend_addr;
            to.sport = ct.frontend_port;
            if hairpin {
                to.daddr = ct.backend_addr;
            } else if snat {
                to.daddr = ct.nat_addr;
                to.dport = ct.nat_port;
            }
        }
        _ => {}
    }
    to
}

/// Applies the translation a conntrack entry records to this packet (see
/// [`translated`]), fixing the checksums.
#[inline(always)]
pub fn translate(ctx: &TcContext, flow: &Flow, ct: &CtValue) -> Option<()> {
    let to = translated(flow, ct);
    if to.daddr != flow.daddr || to.dport != flow.dport {
        rewrite(ctx, flow, Side::Destination, to.daddr, to.dport)?;
    }
    if to.saddr != flow.saddr || to.sport != flow.sport {
        rewrite(ctx, flow, Side::Source, to.saddr, to.sport)?;
    }
    Some(())
}
