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

/// Applies the translation a conntrack entry records to this packet: the
/// forward direction rewrites the destination to the backend, the reverse
/// direction the source back to the frontend; hairpin and SNAT connections
/// also get the other end rewritten (see `CT_FLAG_HAIRPIN`, `CT_FLAG_SNAT`).
/// Entries tracked only for policy (`CT_FLAG_NO_NAT`) change nothing.
#[inline(always)]
pub fn translate(ctx: &TcContext, flow: &Flow, ct: &CtValue) -> Option<()> {
    if ct.flags & CT_FLAG_NO_NAT != 0 {
        return Some(());
    }
    let hairpin = ct.flags & CT_FLAG_HAIRPIN != 0;
    let snat = ct.flags & CT_FLAG_SNAT != 0;
    match ct.direction {
        CT_DIR_FORWARD => {
            rewrite(
                ctx,
                flow,
                Side::Destination,
                ct.backend_addr,
                ct.backend_port,
            )?;
            if hairpin {
                rewrite(ctx, flow, Side::Source, ct.frontend_addr, flow.sport)?;
            } else if snat {
                rewrite(ctx, flow, Side::Source, ct.nat_addr, ct.nat_port)?;
            }
        }
        CT_DIR_REVERSE => {
            rewrite(ctx, flow, Side::Source, ct.frontend_addr, ct.frontend_port)?;
            if hairpin {
                rewrite(ctx, flow, Side::Destination, ct.backend_addr, flow.dport)?;
            } else if snat {
                rewrite(ctx, flow, Side::Destination, ct.nat_addr, ct.nat_port)?;
            }
        }
        _ => {}
    }
    Some(())
}
