//! Connection tracking for translated connections.
//!
//! A translated connection has two entries in `WEIR_CT`, both keyed by a
//! tuple as it appears on the wire: forward (client -> frontend) and reverse
//! (backend -> client). Both directions therefore cost one lookup of the
//! packet's own tuple, and the value says which rewrite to apply.

use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use weir_ebpf_common::{Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_HAIRPIN, CtKey, CtValue};

use crate::{maps::CONNTRACK, parse::Flow};

/// Monotonic time in nanoseconds.
#[inline(always)]
fn now_ns() -> u64 {
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
        _pad: [0; 2],
        src_identity: 0,
        created_ns: now,
        last_seen_ns: now,
    };
    let reverse_key = CtKey {
        saddr: backend.addr,
        daddr: if hairpin { flow.daddr } else { flow.saddr },
        sport: backend.port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let reverse = CtValue {
        direction: CT_DIR_REVERSE,
        ..forward
    };
    // Reverse first: once the forward entry exists, replies may arrive.
    CONNTRACK
        .insert(reverse_key, reverse, u64::from(BPF_ANY))
        .ok()?;
    CONNTRACK
        .insert(flow.ct_key(), forward, u64::from(BPF_ANY))
        .ok()?;
    Some(forward)
}
