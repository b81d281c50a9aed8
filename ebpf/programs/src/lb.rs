//! Backend selection.

use weir_ebpf_common::{Backend, BackendKey, ServiceValue};

use crate::{maps, parse::Flow};

/// Picks the backend of `svc` for a new connection: a hash of the 5-tuple
/// modulo the set size. Stickiness for the rest of the connection comes from
/// conntrack, not from the hash, so a later change of the set does not move an
/// established connection.
///
/// `None` when the set is empty or (during an agent update, which should not
/// happen given the swap ordering) the entry is missing.
#[inline(always)]
pub fn select_backend(svc: &ServiceValue, flow: &Flow) -> Option<Backend> {
    backend_at(svc, flow_hash(flow))
}

/// The backend of `svc` that `hash` picks (modulo the set size); `None` for
/// an empty set.
#[inline(always)]
pub fn backend_at(svc: &ServiceValue, hash: u32) -> Option<Backend> {
    if svc.backend_count == 0 {
        return None;
    }
    let index = hash % svc.backend_count;
    maps::get_copy(
        &maps::BACKENDS,
        &BackendKey {
            slot: svc.backend_slot,
            index,
        },
    )
}

/// A cheap, well-mixed hash of the 5-tuple (murmur3's 32-bit finalizer over a
/// combination of the fields).
#[inline(always)]
pub fn flow_hash(flow: &Flow) -> u32 {
    let mut h = flow.saddr
        ^ flow.daddr.rotate_left(13)
        ^ ((u32::from(flow.sport) << 16) | u32::from(flow.dport))
        ^ u32::from(flow.proto).rotate_left(7);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}
