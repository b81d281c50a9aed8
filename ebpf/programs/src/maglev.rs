//! Maglev backend choice for frontends reachable from outside the node
//! (NodePort, externalIPs, LoadBalancer IPs), shared by the XDP fast path
//! ([`crate::xdp`]) and tc node-ingress, so both pick the same backend for a
//! flow, and so does every other node (the agent writes the same table from
//! the same backend set everywhere; see `weir_ebpf_common::maglev`).

use aya_ebpf::{bindings::BPF_F_NO_PREALLOC, macros::map, maps::HashMap};
use weir_ebpf_common::{
    Backend, BackendKey, ServiceKey, ServiceValue,
    maglev::{MAGLEV_MAX_ENTRIES, MAGLEV_TABLE_SIZE, MaglevTable},
};

use crate::{lb, maps};

/// Maglev tables: backend set (slot) -> its table. Written only by the
/// agent, one whole table per update, before any service points at the
/// slot. Not preallocated: only the tables that exist take memory (32 KiB each).
#[map(name = "WEIR_MAGLEV")]
pub static MAGLEV: HashMap<u32, MaglevTable> =
    HashMap::pinned(MAGLEV_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The backend the Maglev table of `svc`'s backend set gives `hash`; `None`
/// when the set has no table (or, transiently, no such backend).
#[inline(always)]
pub fn backend(svc: &ServiceValue, hash: u32) -> Option<Backend> {
    let table = MAGLEV.get_ptr(&svc.backend_slot)?;
    // black_box: LLVM knows the remainder is in range and would drop the
    // bounds check of `get`, but the verifier does not track ranges through
    // a modulo and needs that check to accept the indexed map read.
    let entry = core::hint::black_box(hash % MAGLEV_TABLE_SIZE) as usize;
    // SAFETY: the pointer comes from a successful lookup and points to a
    // MaglevTable in map memory; the agent replaces tables as whole
    // elements, so the element read here is never written in place.
    let index = unsafe { (*table).entries.get(entry).copied() }?;
    maps::get_copy(
        &maps::BACKENDS,
        &BackendKey {
            slot: svc.backend_slot,
            index: u32::from(index),
        },
    )
}

/// The backend for a new connection from outside the node to `frontend`:
/// by the Maglev table when the set has one and the service has no session
/// affinity, otherwise as [`lb::select`] picks (affinity, `hash % count`).
#[inline(always)]
pub fn select(
    svc: &ServiceValue,
    frontend: &ServiceKey,
    client_kind: u8,
    client: u64,
    hash: u32,
) -> Option<Backend> {
    if svc.affinity_timeout_secs == 0
        && svc.backend_count != 0
        && let Some(found) = backend(svc, hash)
    {
        return Some(found);
    }
    lb::select(svc, frontend, client_kind, client, hash)
}
