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
//! opened to the pod's address) passes untouched. ICMP is not translated.

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
    conntrack::now_ns,
    flow, lb,
    maps::{self, CONNTRACK, MASQ_CONFIG, MASQ_CT, MASQ_SKIP},
    nat::{self, Side},
    parse::Flow,
};

/// How many SNAT ports a new connection tries before it is dropped.
const SNAT_TRIES: u32 = 8;

/// The node-egress verdict for a parsed packet.
#[inline(always)]
pub fn egress(ctx: &TcContext, flow: &Flow) -> i32 {
    if flow.proto != IPPROTO_TCP && flow.proto != IPPROTO_UDP {
        return TC_ACT_OK;
    }
    let Some(cfg) = MASQ_CONFIG.get(0) else {
        return TC_ACT_OK;
    };
    if !cfg.is_local_pod(flow.saddr) || skipped(flow.daddr) {
        return TC_ACT_OK;
    }
    let Some(node) = maps::node_addr() else {
        return TC_ACT_OK;
    };
    let forward = match lookup(flow) {
        Some(fwd) => {
            keep_reverse(flow, &fwd);
            fwd
        }
        // Not a connection the pod opened through this node: leave it.
        None if flow.proto == IPPROTO_TCP && !flow.tcp_syn => return TC_ACT_OK,
        None => match create(flow, node, lb::flow_hash(flow)) {
            Some(fwd) => fwd,
            None => return flow::dropped(ctx, hook::NODE_EGRESS, drop_reason::SNAT_PORTS),
        },
    };
    match nat::rewrite(ctx, flow, Side::Source, forward.nat_addr, forward.nat_port) {
        Some(()) => TC_ACT_OK,
        None => flow::dropped(ctx, hook::NODE_EGRESS, drop_reason::REWRITE),
    }
}

/// The node-ingress verdict for a reply whose conntrack entry has
/// `CT_FLAG_MASQ`: the destination becomes the pod again.
#[inline(always)]
pub fn reverse(ctx: &TcContext, flow: &Flow, ct: &CtValue) -> i32 {
    match nat::rewrite(ctx, flow, Side::Destination, ct.nat_addr, ct.nat_port) {
        Some(()) => TC_ACT_OK,
        None => flow::dropped(ctx, hook::NODE_INGRESS, drop_reason::REWRITE),
    }
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
