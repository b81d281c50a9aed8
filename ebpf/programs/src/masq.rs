//! Masquerade: pod connections leaving the cluster get the node address as
//! their source, like Cilium's BPF masquerade (map ABI and rules:
//! `weir_ebpf_common::masq`).
//!
//! - [`egress`] (node-egress hook): a pod's packet to a masqueraded
//!   destination finds its forward entry in `WEIR_MASQ_CT` (or, for the
//!   first packet of a connection, creates it) and leaves with
//!   node:`nat_port` as its source.
//! - [`reverse`] (node-ingress hook): a reply matches the reverse entry in
//!   `WEIR_CT` (`CT_FLAG_MASQ`) and gets the pod's address and port back as
//!   its destination; the stack then routes it to the pod.
//!
//! Only connections the pod opens are translated: a TCP packet without an
//! entry that is not a SYN (e.g. a reply to a connection someone outside
//! opened to the pod's address) passes untouched.
//!
//! ICMP echo is masqueraded the same way, the echo identifier playing the
//! source port ([`egress_icmp`], [`reverse_icmp`]): a request is keyed
//! pod:id -> destination:0, its reverse entry destination:0 -> node:new-id,
//! so identifiers come from the SNAT range like ports (per destination and
//! protocol). The ICMP checksum has no pseudo header: only the identifier
//! changes it. Other ICMP types pass untouched (ICMP errors about
//! masqueraded connections are not translated).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_MASQ, CT_FLAG_SNAT, CtKey, CtValue, IPPROTO_TCP,
    IPPROTO_UDP, NODEPORT_SNAT_PORT_MIN, NODEPORT_SNAT_PORTS, drop_reason, flow::hook,
};

use crate::{
    conntrack::{self, now_ns},
    flow, lb,
    maps::{self, CONNTRACK, MASQ_CONFIG, MASQ_CT, MASQ_SKIP},
    nat::{self, Side},
    packet::{read, write},
    parse::{ETH_HLEN, Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF},
};

/// How many SNAT ports a new connection tries before it is dropped.
const SNAT_TRIES: u32 = 8;

/// The node-egress verdict for a parsed packet.
#[inline(always)]
pub fn egress(ctx: &TcContext, flow: &Flow) -> i32 {
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP {
        return TC_ACT_OK;
    }
    let fwd = match claim(flow) {
        Claim::Pass => return TC_ACT_OK,
        Claim::NoPort => return flow::dropped(ctx, hook::NODE_EGRESS, drop_reason::SNAT_PORTS),
        Claim::Entry(fwd) => fwd,
    };
    let done = nat::rewrite(ctx, flow, Side::Source, fwd.nat_addr, fwd.nat_port);
    verdict(ctx, hook::NODE_EGRESS, done)
}

/// The node-ingress verdict for a reply whose conntrack entry has
/// `CT_FLAG_MASQ`: the destination becomes the pod again.
#[inline(always)]
pub fn reverse(ctx: &TcContext, flow: &Flow, ct: &CtValue) -> i32 {
    let done = nat::rewrite(ctx, flow, Side::Destination, ct.nat_addr, ct.nat_port);
    verdict(ctx, hook::NODE_INGRESS, done)
}

/// The node-egress verdict for a packet [`crate::parse`] does not parse: a
/// pod's ICMP echo request to a masqueraded destination leaves with the
/// node address and an identifier from the SNAT range.
#[inline(always)]
pub fn egress_icmp(ctx: &TcContext) -> i32 {
    let Some(flow) = echo(ctx, ICMP_ECHO_REQUEST) else {
        return TC_ACT_OK;
    };
    let fwd = match claim(&flow) {
        Claim::Pass => return TC_ACT_OK,
        Claim::NoPort => return flow::dropped(ctx, hook::NODE_EGRESS, drop_reason::SNAT_PORTS),
        Claim::Entry(fwd) => fwd,
    };
    let done = rewrite_echo(ctx, &flow, IP_SADDR_OFF, fwd.nat_addr, fwd.nat_port);
    verdict(ctx, hook::NODE_EGRESS, done)
}

/// The node-ingress verdict for a packet [`crate::parse`] does not parse: an
/// ICMP echo reply matching a masqueraded request's reverse entry gets the
/// pod's address and identifier back; anything else passes.
#[inline(always)]
pub fn reverse_icmp(ctx: &TcContext) -> i32 {
    let Some(flow) = echo(ctx, ICMP_ECHO_REPLY) else {
        return TC_ACT_OK;
    };
    let Some(ct) = conntrack::lookup(&flow) else {
        return TC_ACT_OK;
    };
    if ct.flags & CT_FLAG_MASQ == 0 || ct.direction != CT_DIR_REVERSE {
        return TC_ACT_OK;
    }
    let done = rewrite_echo(ctx, &flow, IP_DADDR_OFF, ct.nat_addr, ct.nat_port);
    verdict(ctx, hook::NODE_INGRESS, done)
}

/// Pass a translated packet; drop a half-translated one.
#[inline(always)]
fn verdict(ctx: &TcContext, at: u8, done: Option<()>) -> i32 {
    match done {
        Some(()) => TC_ACT_OK,
        None => flow::dropped(ctx, at, drop_reason::REWRITE),
    }
}

/// What masquerade does with a pod's packet.
enum Claim {
    /// Not masqueraded: pass untouched.
    Pass,
    /// A new connection found no free SNAT port: drop.
    NoPort,
    /// Translate with this forward entry.
    Entry(CtValue),
}

/// Finds (or, for a new connection, creates) the forward entry of a pod's
/// packet to a masqueraded destination.
#[inline(always)]
fn claim(flow: &Flow) -> Claim {
    let Some(cfg) = MASQ_CONFIG.get(0) else {
        return Claim::Pass;
    };
    if !cfg.is_local_pod(flow.saddr) || skipped(flow.daddr) {
        return Claim::Pass;
    }
    let Some(node) = maps::node_addr() else {
        return Claim::Pass;
    };
    match lookup(flow) {
        Some(fwd) => {
            keep_reverse(flow, &fwd);
            Claim::Entry(fwd)
        }
        // Not a connection the pod opened through this node: leave it.
        None if flow.proto == IPPROTO_TCP && !flow.tcp_syn => Claim::Pass,
        None => match create(flow, node, lb::flow_hash(flow)) {
            Some(fwd) => Claim::Entry(fwd),
            None => Claim::NoPort,
        },
    }
}

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// Offsets inside the ICMP header.
const ICMP_CSUM_OFF: usize = 2;
const ICMP_ID_OFF: usize = 4;

/// An unfragmented IPv4 ICMP echo packet of `icmp_type` (code 0) as a
/// [`Flow`]: the identifier is the source port of a request and the
/// destination port of a reply, the other port 0 (so a reply's tuple is
/// its request's reverse key).
#[inline(always)]
fn echo(ctx: &TcContext, icmp_type: u8) -> Option<Flow> {
    if u16::from_be(read::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    let l3_off = ETH_HLEN;
    let version_ihl: u8 = read(ctx, l3_off)?;
    let frag: u16 = read(ctx, l3_off + 6)?;
    let proto: u8 = read(ctx, l3_off + 9)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 || proto != IPPROTO_ICMP {
        return None;
    }
    if u16::from_be(frag) & 0x3fff != 0 {
        return None;
    }
    let l4_off = l3_off + ihl;
    let ty: u8 = read(ctx, l4_off)?;
    let code: u8 = read(ctx, l4_off + 1)?;
    if ty != icmp_type || code != 0 {
        return None;
    }
    let id: u16 = read(ctx, l4_off + ICMP_ID_OFF)?;
    let (sport, dport) = if icmp_type == ICMP_ECHO_REQUEST {
        (id, 0)
    } else {
        (0, id)
    };
    Some(Flow {
        saddr: read(ctx, l3_off + IP_SADDR_OFF)?,
        daddr: read(ctx, l3_off + IP_DADDR_OFF)?,
        sport,
        dport,
        proto: IPPROTO_ICMP,
        l3_off,
        l4_off,
        l4_csum_off: l4_off + ICMP_CSUM_OFF,
        udp_no_csum: false,
        tcp_syn: false,
    })
}

/// Rewrites an echo's address at `addr_off` (source or destination) to
/// `addr` and its identifier to `id`, fixing the IPv4 checksum and the
/// ICMP checksum (no pseudo header: only the identifier counts).
#[inline(always)]
fn rewrite_echo(ctx: &TcContext, flow: &Flow, addr_off: usize, addr: u32, id: u16) -> Option<()> {
    let (old_addr, old_id) = if addr_off == IP_SADDR_OFF {
        (flow.saddr, flow.sport)
    } else {
        (flow.daddr, flow.dport)
    };
    if old_id != id {
        ctx.l4_csum_replace(flow.l4_csum_off, u64::from(old_id), u64::from(id), 2)
            .ok()?;
    }
    ctx.l3_csum_replace(
        flow.l3_off + IP_CSUM_OFF,
        u64::from(old_addr),
        u64::from(addr),
        4,
    )
    .ok()?;
    write(ctx, flow.l3_off + addr_off, &addr)?;
    write(ctx, flow.l4_off + ICMP_ID_OFF, &id)?;
    Some(())
}

/// Whether `daddr` is in a non-masqueraded prefix.
#[inline(always)]
fn skipped(daddr: u32) -> bool {
    MASQ_SKIP.get(&Key::new(32, daddr)).is_some()
}

/// The forward entry of this packet's connection, refreshed.
#[inline(always)]
fn lookup(flow: &Flow) -> Option<CtValue> {
    let ptr = MASQ_CT.get_ptr_mut(&flow.ct_key())?;
    // SAFETY: a successful lookup in the LRU map points to a CtValue (plain
    // integers); a concurrent refresh can only race on the timestamp.
    unsafe {
        (*ptr).last_seen_ns = now_ns();
        Some(*ptr)
    }
}

/// The reverse entry of a forward entry: keyed as the replies arrive.
#[inline(always)]
fn reverse_key(flow: &Flow, node: u32, nat_port: u16) -> CtKey {
    CtKey {
        saddr: flow.daddr,
        daddr: node,
        sport: flow.dport,
        dport: nat_port,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// The entry pair of a masqueraded connection: forward (pod -> destination;
/// `nat_*` = node:port) and reverse (`nat_*` = pod address and port).
#[inline(always)]
fn entries(flow: &Flow, node: u32, nat_port: u16, now: u64) -> (CtValue, CtValue) {
    let forward = CtValue {
        frontend_addr: flow.daddr,
        backend_addr: flow.daddr,
        frontend_port: flow.dport,
        backend_port: flow.dport,
        direction: CT_DIR_FORWARD,
        flags: CT_FLAG_MASQ | CT_FLAG_SNAT,
        nat_port,
        src_identity: 0,
        nat_addr: node,
        created_ns: now,
        last_seen_ns: now,
    };
    let reverse = CtValue {
        direction: CT_DIR_REVERSE,
        nat_addr: flow.saddr,
        nat_port: flow.sport,
        ..forward
    };
    (forward, reverse)
}

/// Keeps the reverse entry alive while the pod sends: refreshes it, or puts
/// it back if conntrack GC removed it during a quiet spell.
#[inline(always)]
fn keep_reverse(flow: &Flow, forward: &CtValue) {
    let key = reverse_key(flow, forward.nat_addr, forward.nat_port);
    if let Some(ptr) = CONNTRACK.get_ptr_mut(&key) {
        // SAFETY: as in `lookup`.
        unsafe { (*ptr).last_seen_ns = now_ns() };
        return;
    }
    let (_, reverse) = entries(flow, forward.nat_addr, forward.nat_port, now_ns());
    // The port may meanwhile belong to another connection: then this one's
    // replies are lost, which is what any NAT does with an expired mapping.
    let _ = CONNTRACK.insert(&key, &reverse, u64::from(BPF_NOEXIST));
}

/// Claims a SNAT port for a new connection, the way NodePort SNAT does (see
/// `conntrack::create_nodeport`: same range, same node address, so the
/// reverse entries in `WEIR_CT` keep the two from ever sharing a port
/// towards one destination), and records both entries.
#[inline(always)]
fn create(flow: &Flow, node: u32, hash: u32) -> Option<CtValue> {
    let now = now_ns();
    for i in 0..SNAT_TRIES {
        let offset = (hash.wrapping_add(i.wrapping_mul(0x9e37_79b9))
            % u32::from(NODEPORT_SNAT_PORTS)) as u16;
        let port = (NODEPORT_SNAT_PORT_MIN + offset).to_be();
        let (forward, reverse) = entries(flow, node, port, now);
        if CONNTRACK
            .insert(
                &reverse_key(flow, node, port),
                &reverse,
                u64::from(BPF_NOEXIST),
            )
            .is_err()
        {
            continue;
        }
        MASQ_CT
            .insert(&flow.ct_key(), &forward, u64::from(BPF_NOEXIST))
            .ok()?;
        return Some(forward);
    }
    None
}
