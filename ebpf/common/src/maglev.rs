//! The Maglev ABI: consistent-hashing lookup tables for the frontends that
//! are reachable from outside the node (NodePort, externalIPs, LoadBalancer
//! IPs), used by the XDP fast path and the tc node-ingress program to choose
//! a backend for a new connection.
//!
//! Maglev (Eisenbud et al., NSDI 2016) fills a table of a prime number of
//! entries with backend indices so that (a) every backend owns an almost
//! equal share of the entries and (b) adding or removing one backend moves
//! few entries that belonged to the others. A packet's 5-tuple hash modulo
//! the table size picks an entry, the entry names the backend. Every node
//! computes the same table from the same backend set (the permutations come
//! from the backends' addresses and ports only), so a flow that reaches
//! another node (ECMP upstream, a node restart that lost conntrack) picks
//! the same backend there.
//!
//! Layout and swap: `WEIR_MAGLEV` is a hash map from a backend set
//! ([`crate::ServiceValue::backend_slot`]) to the whole [`MaglevTable`] of
//! that set, one value per set. A table is written once, under a fresh slot,
//! before the service is pointed at that slot, and deleted with the slot's
//! backends after the service no longer refers to it, exactly like the
//! backend entries. A hash map update replaces the value as one element
//! (readers see the old or the new element, never a mix), so no packet sees
//! a half-written table; an array map would be overwritten in place. Without
//! a table (the agent has not written one, a set of more than
//! [`MAGLEV_MAX_BACKENDS`] backends, session affinity) the programs fall back
//! to `hash % backend_count`.

/// Map name of the tables: `u32` backend slot -> [`MaglevTable`].
pub const MAGLEV_MAP: &str = "WEIR_MAGLEV";

/// Entries per table: a prime (Maglev needs a prime so every permutation
/// visits every entry). 16381 keeps every backend's share within 1% of
/// 1/N for up to ~160 backends (Maglev's guidance: M > 100 N) at 32 KiB per
/// table.
pub const MAGLEV_TABLE_SIZE: u32 = 16_381;

/// Largest backend set a table can describe (entries are `u16` indices).
pub const MAGLEV_MAX_BACKENDS: usize = u16::MAX as usize;

/// Capacity of the tables map: twice the services map, so even if every
/// frontend had a table, a swap (new table written before the old one is
/// deleted) fits. The map is created with `BPF_F_NO_PREALLOC`, so only
/// tables that exist take memory.
pub const MAGLEV_MAX_ENTRIES: u32 = 2 * crate::SERVICES_MAX_ENTRIES;

/// Value of the tables map: for each of the [`MAGLEV_TABLE_SIZE`] entries,
/// the index of a backend in its set (`BackendKey::index`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevTable {
    /// Backend index per entry, `0..backend_count`.
    pub entries: [u16; MAGLEV_TABLE_SIZE as usize],
    /// Must be zero (keeps the size a multiple of 4).
    pub _pad: u16,
}

impl Default for MaglevTable {
    fn default() -> Self {
        Self {
            entries: [0; MAGLEV_TABLE_SIZE as usize],
            _pad: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<MaglevTable>() == 2 * (MAGLEV_TABLE_SIZE as usize + 1));

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
// SAFETY: MaglevTable is #[repr(C)] and holds only u16s (an array and an
// explicit pad field), so every bit pattern is valid and there is no
// implicit padding.
unsafe impl aya::Pod for MaglevTable {}
