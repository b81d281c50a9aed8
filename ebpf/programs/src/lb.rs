//! Backend selection.

use aya_ebpf::bindings::BPF_ANY;
use weir_ebpf_common::{AffinityKey, AffinityValue, Backend, BackendKey, ServiceKey, ServiceValue};

use crate::{conntrack::now_ns, maps, parse::Flow};

/// Picks the backend of `svc` (the value of `frontend`) for a new connection
/// of `client` (an `AFFINITY_CLIENT_*` kind and id): the one the client is
/// stuck to if the service has session affinity and the affinity is live,
/// else the one `hash` picks, which then becomes the client's affinity.
///
/// `None` when the set is empty.
#[inline(always)]
pub fn select(
    svc: &ServiceValue,
    frontend: &ServiceKey,
    client_kind: u8,
    client: u64,
    hash: u32,
) -> Option<Backend> {
    if svc.affinity_timeout_secs == 0 {
        return backend_at(svc, hash);
    }
    if svc.backend_count == 0 {
        return None;
    }
    let key = AffinityKey {
        client,
        frontend_addr: frontend.addr,
        frontend_port: frontend.port,
        proto: frontend.proto,
        kind: client_kind,
    };
    let now = now_ns();
    let timeout_ns = u64::from(svc.affinity_timeout_secs) * 1_000_000_000;
    let sticky = maps::AFFINITY.get_ptr(&key).and_then(|ptr| {
        // SAFETY: a successful lookup returns a pointer to an AffinityValue
        // (plain integers); a racing update can only yield a stale copy.
        let old = unsafe { *ptr };
        if now.saturating_sub(old.last_used_ns) > timeout_ns {
            return None;
        }
        // Still in the current set, at the same place?
        let current = maps::get_copy(
            &maps::BACKENDS,
            &BackendKey {
                slot: svc.backend_slot,
                index: old.index,
            },
        )?;
        (current.addr == old.backend.addr && current.port == old.backend.port)
            .then_some((old.backend, old.index))
    });
    let (backend, index) = match sticky {
        Some(found) => found,
        None => {
            let index = hash % svc.backend_count;
            let backend = maps::get_copy(
                &maps::BACKENDS,
                &BackendKey {
                    slot: svc.backend_slot,
                    index,
                },
            )?;
            (backend, index)
        }
    };
    let value = AffinityValue {
        backend,
        index,
        _pad: 0,
        last_used_ns: now,
    };
    // Best effort: a failed update only costs stickiness for the next connection.
    let _ = maps::AFFINITY.insert(&key, &value, u64::from(BPF_ANY));
    Some(backend)
}

/// The backend of `svc` that `hash` picks (modulo the set size); `None` for
/// an empty set or (during an agent update, which should not happen given the
/// swap ordering) a missing entry. Stickiness for the rest of a connection
/// comes from conntrack (or the socket), not from the hash, so a later change
/// of the set does not move an established connection.
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
    mix(flow.saddr
        ^ flow.daddr.rotate_left(13)
        ^ ((u32::from(flow.sport) << 16) | u32::from(flow.dport))
        ^ u32::from(flow.proto).rotate_left(7))
}

/// A well-mixed hash of a socket cookie (and the frontend port, so one
/// socket sending to several services spreads over each).
#[inline(always)]
pub fn socket_hash(cookie: u64, port: u16) -> u32 {
    mix((cookie as u32) ^ ((cookie >> 32) as u32).rotate_left(16) ^ u32::from(port))
}

/// murmur3's 32-bit finalizer.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}
