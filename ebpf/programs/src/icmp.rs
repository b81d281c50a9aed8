//! ICMP errors about translated connections (destination unreachable, time
//! exceeded): a backend's error quotes the packet it received, i.e. the
//! client's packet *after* DNAT (client -> backend). The client's stack only
//! matches errors against what it sent (client -> frontend), so the quoted
//! destination is restored to the frontend, and the error's own source, if
//! it is the backend, becomes the frontend too (like a reply).
//!
//! Only plain DNAT connections are handled: errors about hairpin or SNAT
//! (NodePort) connections, about connections tracked only for policy
//! (nothing to undo), and about anything without a reverse conntrack entry,
//! pass untouched, never half-translated. The quoted L4 checksum is
//! left as is (receivers do not verify the quote's L4 checksum).

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use weir_ebpf_common::{
    CT_DIR_REVERSE, CT_FLAG_HAIRPIN, CT_FLAG_NO_NAT, CT_FLAG_SNAT, CtKey, IPPROTO_TCP, IPPROTO_UDP,
    drop_reason,
};

use crate::{
    flow, maps,
    packet::{read, write},
    parse::{ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF},
};

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// Offset of the checksum inside the ICMP header.
const ICMP_CSUM_OFF: usize = 2;
/// Length of the ICMP header before the quoted packet.
const ICMP_HLEN: usize = 8;

/// Translates an ICMP error about a translated connection; the verdict
/// (`hook`: the calling hook, for a drop's flow event).
#[inline(always)]
pub fn translate_error(ctx: &TcContext, hook: u8) -> i32 {
    match try_translate(ctx) {
        Some(true) | None => TC_ACT_OK,
        Some(false) => flow::dropped(ctx, hook, drop_reason::REWRITE),
    }
}

/// `None`: not an ICMP error we translate (pass). `Some(true)`: translated.
/// `Some(false)`: a rewrite failed halfway (drop).
#[inline(always)]
fn try_translate(ctx: &TcContext) -> Option<bool> {
    if u16::from_be(read::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    let outer = ETH_HLEN;
    let version_ihl: u8 = read(ctx, outer)?;
    let frag: u16 = read(ctx, outer + 6)?;
    let proto: u8 = read(ctx, outer + 9)?;
    if version_ihl >> 4 != 4 || proto != IPPROTO_ICMP || u16::from_be(frag) & 0x3fff != 0 {
        return None;
    }
    let icmp = outer + usize::from(version_ihl & 0x0f) * 4;
    let icmp_type: u8 = read(ctx, icmp)?;
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner = icmp + ICMP_HLEN;
    let inner_vihl: u8 = read(ctx, inner)?;
    let inner_ihl = usize::from(inner_vihl & 0x0f) * 4;
    if inner_vihl >> 4 != 4 || inner_ihl < 20 {
        return None;
    }
    let inner_proto: u8 = read(ctx, inner + 9)?;
    if inner_proto != IPPROTO_TCP && inner_proto != IPPROTO_UDP {
        return None;
    }
    let inner_l4 = inner + inner_ihl;
    let client: u32 = read(ctx, inner + IP_SADDR_OFF)?;
    let backend: u32 = read(ctx, inner + IP_DADDR_OFF)?;
    let client_port: u16 = read(ctx, inner_l4 + L4_SPORT_OFF)?;
    let backend_port: u16 = read(ctx, inner_l4 + L4_DPORT_OFF)?;
    let inner_csum: u16 = read(ctx, inner + IP_CSUM_OFF)?;
    let sender: u32 = read(ctx, outer + IP_SADDR_OFF)?;

    // The reply direction of the quoted packet is the reverse entry's key.
    let key = CtKey {
        saddr: backend,
        daddr: client,
        sport: backend_port,
        dport: client_port,
        proto: inner_proto,
        _pad: [0; 3],
    };
    let ptr = maps::CONNTRACK.get_ptr(&key)?;
    // SAFETY: a successful lookup returns a pointer to a CtValue (plain
    // integers); a racing update can only yield a stale copy.
    let ct = unsafe { *ptr };
    let untranslatable = CT_FLAG_HAIRPIN | CT_FLAG_SNAT | CT_FLAG_NO_NAT;
    if ct.direction != CT_DIR_REVERSE || ct.flags & untranslatable != 0 {
        return None;
    }

    // The quoted IPv4 header checksum, updated for the new destination.
    let new_inner_csum = csum_replace4(inner_csum, backend, ct.frontend_addr);
    // The ICMP checksum covers the quote: account for every changed field.
    let icmp_csum = icmp + ICMP_CSUM_OFF;
    let ok = ctx
        .l4_csum_replace(
            icmp_csum,
            u64::from(backend),
            u64::from(ct.frontend_addr),
            4,
        )
        .is_ok()
        && ctx
            .l4_csum_replace(
                icmp_csum,
                u64::from(backend_port),
                u64::from(ct.frontend_port),
                2,
            )
            .is_ok()
        && ctx
            .l4_csum_replace(
                icmp_csum,
                u64::from(inner_csum),
                u64::from(new_inner_csum),
                2,
            )
            .is_ok()
        && write(ctx, inner + IP_DADDR_OFF, &ct.frontend_addr).is_some()
        && write(ctx, inner_l4 + L4_DPORT_OFF, &ct.frontend_port).is_some()
        && write(ctx, inner + IP_CSUM_OFF, &new_inner_csum).is_some();
    if !ok {
        return Some(false);
    }
    // An error from the backend itself comes from the frontend, like replies.
    if sender == backend {
        let ok = ctx
            .l3_csum_replace(
                outer + IP_CSUM_OFF,
                u64::from(sender),
                u64::from(ct.frontend_addr),
                4,
            )
            .is_ok()
            && write(ctx, outer + IP_SADDR_OFF, &ct.frontend_addr).is_some();
        return Some(ok);
    }
    Some(true)
}

/// RFC 1624 incremental update of a one's complement checksum (as stored,
/// network order) when a 32-bit word (as stored) changes from `old` to `new`.
#[inline(always)]
fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    // Sums are taken over the 16-bit words as they sit in memory; one's
    // complement addition is byte-order independent as long as every word
    // is read the same way.
    let mut sum = u32::from(!check);
    sum += (!old & 0xffff) + (!old >> 16);
    sum += (new & 0xffff) + (new >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
