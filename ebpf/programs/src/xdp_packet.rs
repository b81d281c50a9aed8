//! Packet access for the XDP program: bounds-checked direct reads and writes
//! of the frame (XDP has no `bpf_skb_load_bytes`/`store_bytes`), parsing
//! into the same [`Flow`] the tc programs use, and NAT with incremental
//! checksum updates (RFC 1624) computed here (XDP has no
//! `bpf_l3/l4_csum_replace`; frames from the wire carry complete checksums,
//! no `CHECKSUM_PARTIAL`).
//!
//! Stricter than [`crate::parse`]: anything but an Ethernet frame with an
//! IPv4 header of exactly 20 bytes (no options), not a fragment, carrying a
//! complete TCP or UDP header, yields `None` and the caller passes the frame
//! to the tc path untouched.

use core::{mem, ptr};

use aya_ebpf::{EbpfContext, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use weir_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    nat::Tuple,
    parse::{ETH_HLEN, Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF},
};

const ETH_P_IP: u16 = 0x0800;
const IP_HLEN: usize = 20;
const L4_OFF: usize = ETH_HLEN + IP_HLEN;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;
const TCP_FLAGS_OFF: usize = 13;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const IP_TOT_LEN_OFF: usize = 2;

/// A pointer to `len` bytes at `offset`, or `None` past the frame's end.
/// The comparison against `data_end` is what the verifier needs to allow
/// the access.
#[inline(always)]
fn at(ctx: &XdpContext, offset: usize, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    if start + offset + len > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut u8)
}

/// Reads a `T` (an integer, network order as on the wire) at `offset`.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let p = at(ctx, offset, mem::size_of::<T>())?;
    // SAFETY: `at` checked that size_of::<T>() bytes at p are inside the
    // frame; T is a plain integer, valid for any bytes; unaligned on purpose.
    Some(unsafe { ptr::read_unaligned(p.cast::<T>()) })
}

/// Writes `value` at `offset`.
#[inline(always)]
pub fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Option<()> {
    let p = at(ctx, offset, mem::size_of::<T>())?;
    // SAFETY: as in `read`; the frame is writable in XDP.
    unsafe { ptr::write_unaligned(p.cast::<T>(), value) };
    Some(())
}

/// Parses an Ethernet frame carrying option-less, unfragmented IPv4 with a
/// complete TCP or UDP header.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Flow> {
    if u16::from_be(read::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    // Version 4, IHL 5: options are rare and the tc path handles them.
    if read::<u8>(ctx, ETH_HLEN)? != 0x45 {
        return None;
    }
    // MF set or a non-zero offset: a fragment.
    if u16::from_be(read::<u16>(ctx, ETH_HLEN + 6)?) & 0x3fff != 0 {
        return None;
    }
    let proto = read::<u8>(ctx, ETH_HLEN + 9)?;
    let (l4_len, csum_off) = match proto {
        IPPROTO_TCP => (TCP_HLEN, TCP_CSUM_OFF),
        IPPROTO_UDP => (UDP_HLEN, UDP_CSUM_OFF),
        _ => return None,
    };
    at(ctx, L4_OFF, l4_len)?;
    let l4_csum: u16 = read(ctx, L4_OFF + csum_off)?;
    let tcp_syn = proto == IPPROTO_TCP
        && read::<u8>(ctx, L4_OFF + TCP_FLAGS_OFF)? & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    Some(Flow {
        saddr: read(ctx, ETH_HLEN + IP_SADDR_OFF)?,
        daddr: read(ctx, ETH_HLEN + IP_DADDR_OFF)?,
        sport: read(ctx, L4_OFF)?,
        dport: read(ctx, L4_OFF + 2)?,
        proto,
        l3_off: ETH_HLEN,
        l4_off: L4_OFF,
        l4_csum_off: L4_OFF + csum_off,
        udp_no_csum: proto == IPPROTO_UDP && l4_csum == 0,
        tcp_syn,
    })
}

/// The IPv4 total length of the frame (host order), for the FIB's MTU check.
#[inline(always)]
pub fn ip_tot_len(ctx: &XdpContext) -> Option<u16> {
    read::<u16>(ctx, ETH_HLEN + IP_TOT_LEN_OFF).map(u16::from_be)
}

/// Rewrites the frame's addresses and ports from `flow`'s to `to`, updating
/// the IPv4 header checksum and the TCP/UDP checksum (pseudo header
/// included) incrementally. A UDP checksum of zero ("none") stays zero.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, flow: &Flow, to: &Tuple) -> Option<()> {
    let ip_check: u16 = read(ctx, ETH_HLEN + IP_CSUM_OFF)?;
    let addr_sum = ones_diff(flow.saddr, to.saddr) + ones_diff(flow.daddr, to.daddr);
    write(ctx, ETH_HLEN + IP_CSUM_OFF, apply(ip_check, addr_sum))?;
    if !flow.udp_no_csum {
        let l4_check: u16 = read(ctx, flow.l4_csum_off)?;
        let sum = addr_sum + ones_diff16(flow.sport, to.sport) + ones_diff16(flow.dport, to.dport);
        let mut check = apply(l4_check, sum);
        if check == 0 && flow.proto == IPPROTO_UDP {
            // RFC 768: a computed zero is sent as all ones.
            check = 0xffff;
        }
        write(ctx, flow.l4_csum_off, check)?;
    }
    write(ctx, ETH_HLEN + IP_SADDR_OFF, to.saddr)?;
    write(ctx, ETH_HLEN + IP_DADDR_OFF, to.daddr)?;
    write(ctx, L4_OFF, to.sport)?;
    write(ctx, L4_OFF + 2, to.dport)
}

/// Writes the Ethernet destination and source.
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    write(ctx, 0, dst)?;
    write(ctx, 6, src)
}

/// `~old + new` over the 16-bit words of a 32-bit value as it sits in
/// memory (one's complement sums do not depend on byte order, so the raw
/// words of network-order values can be summed directly). Not folded.
#[inline(always)]
fn ones_diff(old: u32, new: u32) -> u32 {
    u32::from(!(old as u16))
        + u32::from(!((old >> 16) as u16))
        + u32::from(new as u16)
        + u32::from((new >> 16) as u16)
}

/// `~old + new` for a 16-bit field (a port), raw as in memory.
#[inline(always)]
fn ones_diff16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + sum(~m) + sum(m'))`.
#[inline(always)]
fn apply(check: u16, diff: u32) -> u16 {
    let mut sum = u32::from(!check) + diff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Inserts an 8-byte IPv4 option right after the 20-byte base header of an
/// option-less frame (direct server return, `crate::dsr`): grows the head
/// by 8 bytes, moves the Ethernet and IPv4 headers to the new start, writes
/// the option and fixes IHL, total length and the header checksum (the L4
/// checksum does not cover options).
#[inline(always)]
pub fn push_ip_option(ctx: &XdpContext, option: [u8; 8]) -> Option<()> {
    const SHIFT: usize = 8;
    // SAFETY: the helper takes the program's own context; it only moves
    // `data` (bounds are re-checked by every access below).
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr().cast(), -(SHIFT as i32)) } != 0 {
        return None;
    }
    // Ethernet (14) + IPv4 base header (20) = 34 bytes: 4 x 8 + 2.
    for i in 0..4 {
        let word: u64 = read(ctx, SHIFT + i * 8)?;
        write(ctx, i * 8, word)?;
    }
    let tail: u16 = read(ctx, SHIFT + 32)?;
    write(ctx, 32, tail)?;
    let vihl_tos: u16 = read(ctx, ETH_HLEN)?;
    let mut bytes = vihl_tos.to_ne_bytes();
    bytes[0] += (SHIFT / 4) as u8;
    let new_vihl_tos = u16::from_ne_bytes(bytes);
    let old_len: u16 = read(ctx, ETH_HLEN + IP_TOT_LEN_OFF)?;
    let new_len = (u16::from_be(old_len) + SHIFT as u16).to_be();
    let added = |a: u8, b: u8| u32::from(u16::from_ne_bytes([a, b]));
    let sum = ones_diff16(vihl_tos, new_vihl_tos)
        + ones_diff16(old_len, new_len)
        + added(option[0], option[1])
        + added(option[2], option[3])
        + added(option[4], option[5])
        + added(option[6], option[7]);
    let check: u16 = read(ctx, ETH_HLEN + IP_CSUM_OFF)?;
    write(ctx, ETH_HLEN + IP_CSUM_OFF, apply(check, sum))?;
    write(ctx, ETH_HLEN, new_vihl_tos)?;
    write(ctx, ETH_HLEN + IP_TOT_LEN_OFF, new_len)?;
    write(ctx, ETH_HLEN + IP_HLEN, option)
}
