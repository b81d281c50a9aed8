//! Connection tracking for translated connections and for connections
//! NetworkPolicy judged.
//!
//! A tracked connection has two entries in `WEIR_CT`, both keyed by a
//! tuple as it appears on the wire: forward (client -> frontend) and reverse
//! (backend -> client). Both directions therefore cost one lookup of the
//! packet's own tuple, and the value says which rewrite to apply (none for
//! `CT_FLAG_NO_NAT`, the entries that only make policy stateful).

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
};
use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_DSR, CT_FLAG_HAIRPIN, CT_FLAG_NO_NAT,
    CT_FLAG_NODEPORT, CT_FLAG_SNAT, CtKey, CtValue, NODEPORT_SNAT_PORT_MIN, NODEPORT_SNAT_PORTS,
    dsr::DsrOption,
};

use crate::{maps::CONNTRACK, parse::Flow};

/// Monotonic time in nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Finds the entry for this packet's tuple, refreshes its `last_seen_ns`, and
/// returns a copy.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<CtValue> {
    let ptr = CONNTRACK.get_ptr_mut(flow.ct_key())?;
    // SAFETY: the pointer comes from a successful lookup in the LRU map and
    // points to a CtValue (plain integers). Concurrent writers (another CPU
    // refreshing the same entry) can only race on the timestamp, which is a
    // best-effort field.
    unsafe {
        (*ptr).last_seen_ns = now_ns();
        Some(*ptr)
    }
}

/// Whether the packet belongs to a tracked connection seen from the other
/// end: its swapped tuple has an entry. That is the case of a translated
/// connection's request after DNAT (client -> backend, whose reverse entry
/// is backend -> client) on its way into the backend.
#[inline(always)]
pub fn tracked_swapped(flow: &Flow) -> bool {
    CONNTRACK.get_ptr(swapped_key(flow)).is_some()
}

/// The key of `flow` seen from the other end (addresses and ports swapped):
/// where the replies of a connection whose request is `flow` are looked up.
#[inline(always)]
fn swapped_key(flow: &Flow) -> CtKey {
    CtKey {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// Records a new connection that policy allowed and nothing translates, so
/// that its replies and later packets pass without a policy lookup: the
/// forward entry for `flow` and the reverse entry for the replies, both
/// with `CT_FLAG_NO_NAT`. `src_identity`: the source's policy identity.
#[inline(always)]
pub fn create_untranslated(flow: &Flow, src_identity: u32) -> Option<CtValue> {
    let now = now_ns();
    let forward = CtValue {
        frontend_addr: flow.daddr,
        backend_addr: flow.daddr,
        frontend_port: flow.dport,
        backend_port: flow.dport,
        direction: CT_DIR_FORWARD,
        flags: CT_FLAG_NO_NAT,
        nat_port: 0,
        src_identity,
        nat_addr: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    insert_pair(flow, flow.saddr, forward)
}

/// Records a new translated connection: the forward entry for `flow` (client
/// -> frontend) and the reverse entry for the backend's replies. Returns the
/// forward entry, i.e. the translation to apply to this packet.
#[inline(always)]
pub fn create(flow: &Flow, backend: &Backend) -> Option<CtValue> {
    let now = now_ns();
    // The client is its own backend: its replies come back addressed to the
    // frontend (see CT_FLAG_HAIRPIN), so that is what the reverse key holds.
    let hairpin = backend.addr == flow.saddr;
    let forward = CtValue {
        frontend_addr: flow.daddr,
        backend_addr: backend.addr,
        frontend_port: flow.dport,
        backend_port: backend.port,
        direction: CT_DIR_FORWARD,
        flags: if hairpin { CT_FLAG_HAIRPIN } else { 0 },
        nat_port: 0,
        src_identity: 0,
        nat_addr: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    insert_pair(flow, if hairpin { flow.daddr } else { flow.saddr }, forward)
}

/// Inserts the reverse entry (backend -> `reply_to`, the forward entry with
/// the reverse direction) and then the forward entry for `flow`; returns
/// `forward`. Reverse first: once the forward entry exists, replies may arrive.
#[inline(always)]
fn insert_pair(flow: &Flow, reply_to: u32, forward: CtValue) -> Option<CtValue> {
    let reverse_key = CtKey {
        saddr: forward.backend_addr,
        daddr: reply_to,
        sport: forward.backend_port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let reverse = CtValue {
        direction: CT_DIR_REVERSE,
        ..forward
    };
    CONNTRACK
        .insert(reverse_key, reverse, u64::from(BPF_ANY))
        .ok()?;
    CONNTRACK
        .insert(flow.ct_key(), forward, u64::from(BPF_ANY))
        .ok()?;
    Some(forward)
}

/// How many SNAT ports a new NodePort connection tries before giving up.
const SNAT_TRIES: u32 = 8;

/// Records a new connection from outside the node to an external frontend
/// (`flow` is client -> NodePort / external IP). With `snat`, the source
/// becomes `snat_addr` (the node address) and a port from the SNAT range not
/// in use towards this backend; without (externalTrafficPolicy Local) the
/// client address is kept.
/// Returns the forward entry, or `None` when no SNAT port is free.
#[inline(always)]
pub fn create_nodeport(
    flow: &Flow,
    backend: &Backend,
    snat: Option<u32>,
    hash: u32,
) -> Option<CtValue> {
    let now = now_ns();
    let mut forward = CtValue {
        frontend_addr: flow.daddr,
        backend_addr: backend.addr,
        frontend_port: flow.dport,
        backend_port: backend.port,
        direction: CT_DIR_FORWARD,
        flags: CT_FLAG_NODEPORT,
        nat_port: 0,
        src_identity: 0,
        nat_addr: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    let Some(snat_addr) = snat else {
        return insert_pair(flow, flow.saddr, forward);
    };
    forward.flags |= CT_FLAG_SNAT;
    forward.nat_addr = snat_addr;
    let reverse = CtValue {
        direction: CT_DIR_REVERSE,
        nat_addr: flow.saddr,
        nat_port: flow.sport,
        ..forward
    };
    for i in 0..SNAT_TRIES {
        let offset = (hash.wrapping_add(i.wrapping_mul(0x9e37_79b9))
            % u32::from(NODEPORT_SNAT_PORTS)) as u16;
        let port = (NODEPORT_SNAT_PORT_MIN + offset).to_be();
        let reverse_key = CtKey {
            saddr: backend.addr,
            daddr: snat_addr,
            sport: backend.port,
            dport: port,
            proto: flow.proto,
            _pad: [0; 3],
        };
        // A retransmitted SYN finds its own reverse entry: reuse the port,
        // or the backend would see a second connection.
        let ours = CONNTRACK.get_ptr(reverse_key).is_some_and(|ptr| {
            // SAFETY: a successful lookup returns a pointer to a CtValue
            // (plain integers); a racing update can only yield a stale copy.
            let existing = unsafe { *ptr };
            existing.nat_addr == flow.saddr && existing.nat_port == flow.sport
        });
        let flags = if ours { BPF_ANY } else { BPF_NOEXIST };
        if CONNTRACK
            .insert(reverse_key, reverse, u64::from(flags))
            .is_err()
        {
            continue;
        }
        forward.nat_port = port;
        CONNTRACK
            .insert(flow.ct_key(), forward, u64::from(BPF_ANY))
            .ok()?;
        return Some(forward);
    }
    None
}

/// Load-balancing node: records a new direct-server-return connection
/// (`flow` is client -> frontend): DNAT only, `CT_FLAG_NODEPORT |
/// CT_FLAG_DSR`. Only the forward entry: the backend's replies go straight
/// to the client and never come back through this node. Returns it.
#[inline(always)]
pub fn create_dsr(flow: &Flow, backend: &Backend) -> Option<CtValue> {
    let now = now_ns();
    let forward = CtValue {
        frontend_addr: flow.daddr,
        backend_addr: backend.addr,
        frontend_port: flow.dport,
        backend_port: backend.port,
        direction: CT_DIR_FORWARD,
        flags: CT_FLAG_NODEPORT | CT_FLAG_DSR,
        nat_port: 0,
        src_identity: 0,
        nat_addr: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    CONNTRACK
        .insert(flow.ct_key(), forward, u64::from(BPF_ANY))
        .ok()?;
    Some(forward)
}

/// Backend node: whether the DSR connection of `flow` (client -> backend)
/// is already recorded with the frontend `opt` names.
#[inline(always)]
pub fn dsr_recorded(flow: &Flow, opt: &DsrOption) -> bool {
    CONNTRACK.get_ptr(swapped_key(flow)).is_some_and(|ptr| {
        // SAFETY: a successful lookup returns a pointer to a CtValue
        // (plain integers); a racing update can only yield a stale copy.
        let ct = unsafe { *ptr };
        ct.flags & CT_FLAG_DSR != 0 && ct.frontend_addr == opt.addr && ct.frontend_port == opt.port
    })
}

/// Backend node: records a DSR connection that arrived with option `opt`
/// (`flow` is client -> backend): the reverse entry, keyed backend ->
/// client, that gives the replies the frontend as their source
/// (`CT_FLAG_NODEPORT`: from-pod forwards them past the stack, since their
/// source is not an address of this node).
#[inline(always)]
pub fn create_dsr_reverse(flow: &Flow, opt: &DsrOption) -> Option<()> {
    let now = now_ns();
    let reverse = CtValue {
        frontend_addr: opt.addr,
        backend_addr: flow.daddr,
        frontend_port: opt.port,
        backend_port: flow.dport,
        direction: CT_DIR_REVERSE,
        flags: CT_FLAG_NODEPORT | CT_FLAG_DSR,
        nat_port: 0,
        src_identity: 0,
        nat_addr: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    CONNTRACK
        .insert(swapped_key(flow), reverse, u64::from(BPF_ANY))
        .ok()
}
