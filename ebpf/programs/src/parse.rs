//! Header parsing: from raw packet bytes to a [`Flow`] (the 5-tuple plus the
//! offsets the NAT code needs). Anything that is not a complete, unfragmented
//! IPv4 TCP, UDP or SCTP header yields `None`, and the caller passes the
//! packet on untouched.
//!
//! SCTP is parsed for NetworkPolicy (its ports sit where TCP's and UDP's
//! do) and never translated: the planner writes no SCTP service, so no
//! SCTP packet is ever rewritten (its CRC32c checksum cannot be updated
//! incrementally like the others).
//!
//! [`first_fragment`] reads the ports of the first fragment of a datagram,
//! for NetworkPolicy alone: it is the only fragment with ports, and a
//! datagram whose first fragment is dropped cannot be reassembled, so
//! judging it is enough (later fragments pass).

use aya_ebpf::programs::TcContext;
use weir_ebpf_common::{CtKey, IPPROTO_TCP, IPPROTO_UDP, policy::IPPROTO_SCTP};

use crate::packet::read;

/// Length of an Ethernet header (no VLAN tags: pod veths carry none).
pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

/// Offsets inside the IPv4 header.
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;

/// Offsets inside the L4 header (same for TCP, UDP and SCTP).
pub const L4_SPORT_OFF: usize = 0;
pub const L4_DPORT_OFF: usize = 2;
const TCP_FLAGS_OFF: usize = 13;
const TCP_CSUM_OFF: usize = 16;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const UDP_CSUM_OFF: usize = 6;
/// SCTP's common header: ports, verification tag, then the CRC32c.
const SCTP_CSUM_OFF: usize = 8;

/// The fixed part of an IPv4 header, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

/// A parsed IPv4 TCP/UDP/SCTP packet. Addresses and ports are in network
/// order.
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Offset of the IPv4 header.
    pub l3_off: usize,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    /// Offset of the TCP/UDP checksum field (SCTP: its CRC32c).
    pub l4_csum_off: usize,
    /// UDP with a zero checksum ("no checksum", RFC 768): must stay zero.
    pub udp_no_csum: bool,
    /// A TCP SYN without ACK: the first packet of a new connection.
    pub tcp_syn: bool,
}

impl Flow {
    /// The conntrack key of this packet as it is on the wire.
    #[inline(always)]
    pub fn ct_key(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Parses an Ethernet frame carrying IPv4 TCP, UDP or SCTP.
#[inline(always)]
pub fn parse_ipv4_l4(ctx: &TcContext) -> Option<Flow> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    if ethertype != ETH_P_IP {
        return None;
    }
    let l3_off = ETH_HLEN;
    let ip: Ipv4Hdr = read(ctx, l3_off)?;
    if ip.version_ihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    // Fragments (MF set or a non-zero offset) are left alone: only the first
    // one carries ports, and translating it alone would break reassembly.
    if u16::from_be(ip.frag_off) & 0x3fff != 0 {
        return None;
    }
    let l4_off = l3_off + ihl;
    let l4_csum_off = match ip.proto {
        IPPROTO_TCP => l4_off + TCP_CSUM_OFF,
        IPPROTO_UDP => l4_off + UDP_CSUM_OFF,
        IPPROTO_SCTP => l4_off + SCTP_CSUM_OFF,
        _ => return None,
    };
    let sport: u16 = read(ctx, l4_off + L4_SPORT_OFF)?;
    let dport: u16 = read(ctx, l4_off + L4_DPORT_OFF)?;
    // Reading the checksum also proves the L4 header is there up to it, so a
    // truncated header is never half rewritten.
    let l4_csum: u16 = read(ctx, l4_csum_off)?;
    let tcp_syn = ip.proto == IPPROTO_TCP && {
        let flags: u8 = read(ctx, l4_off + TCP_FLAGS_OFF)?;
        flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    };
    Some(Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        proto: ip.proto,
        l3_off,
        l4_off,
        l4_csum_off,
        udp_no_csum: ip.proto == IPPROTO_UDP && l4_csum == 0,
        tcp_syn,
    })
}

/// The 5-tuple of the first fragment of a TCP/UDP/SCTP datagram (MF set,
/// offset 0), for policy only: the packet must not be translated, so only
/// addresses and ports are meaningful. Ports the fragment is too short to
/// carry read as 0 (a "tiny fragment" then matches only rules without
/// ports, instead of passing unjudged).
#[inline(always)]
pub fn first_fragment(ctx: &TcContext) -> Option<Flow> {
    if u16::from_be(read::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    let l3_off = ETH_HLEN;
    let ip: Ipv4Hdr = read(ctx, l3_off)?;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip.version_ihl >> 4 != 4 || ihl < 20 || u16::from_be(ip.frag_off) & 0x3fff != 0x2000 {
        return None;
    }
    if !matches!(ip.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    let l4_off = l3_off + ihl;
    Some(Flow {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: read(ctx, l4_off + L4_SPORT_OFF).unwrap_or(0),
        dport: read(ctx, l4_off + L4_DPORT_OFF).unwrap_or(0),
        proto: ip.proto,
        l3_off,
        l4_off,
        l4_csum_off: 0,
        udp_no_csum: false,
        tcp_syn: false,
    })
}
