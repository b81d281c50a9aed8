//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4): pure functions,
//! no I/O.
//!
//! [`table`] fills a lookup table of a prime size with backend indices; the
//! datapath picks `table[flow_hash % size]` for a new connection (see
//! `weir_ebpf_common::maglev`). Each backend gets a permutation of the table
//! derived only from its identity (address and port), and the backends take
//! turns claiming their next free preferred entry, so:
//! - every node computes the same table for the same set, whatever order
//!   the set is given in (the backends are ordered by identity first);
//! - every backend owns `size / n` entries, rounded down or up;
//! - removing or adding one backend moves mostly the entries it loses or
//!   gains (the tests measure the rest).
//!
//! The hashes are spelled out here (FNV-1a with a splitmix64 finaliser), not
//! taken from `std`, whose hasher may change between Rust releases: agents of
//! different builds must agree on every table.

use std::collections::{BTreeMap, BTreeSet};

use weir_ebpf_common::maglev::{MAGLEV_MAX_BACKENDS, MAGLEV_TABLE_SIZE};
use weir_ebpf_common::{
    Backend, BackendKey, SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT, ServiceKey, ServiceValue,
};

use super::{MapOp, MapState};

/// Why no table can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("a Maglev table needs at least one backend")]
    NoBackends,
    #[error("the Maglev table size {size} is not a prime")]
    SizeNotPrime { size: u32 },
    #[error("{backends} backends do not fit a Maglev table of {size} entries")]
    TooManyBackends { backends: usize, size: u32 },
}

/// The Maglev lookup table of `backends` with `size` entries (a prime larger
/// than the number of backends): entry `i` holds the index in `backends` of
/// the backend that owns it. Duplicate backends are treated as one identity
/// each (both get entries; the planner never passes duplicates).
pub fn table(backends: &[Backend], size: u32) -> Result<Vec<u16>, MaglevError> {
    if backends.is_empty() {
        return Err(MaglevError::NoBackends);
    }
    if !is_prime(size) {
        return Err(MaglevError::SizeNotPrime { size });
    }
    if backends.len() >= size as usize || backends.len() > usize::from(u16::MAX) + 1 {
        return Err(MaglevError::TooManyBackends {
            backends: backends.len(),
            size,
        });
    }
    // Fill in identity order, so the input order changes only the index
    // numbers written, not which backend owns an entry.
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_key(|&i| identity(&backends[i]));
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let id = identity(&backends[i]);
            let offset = hash(&id, SEED_OFFSET) % m;
            let skip = hash(&id, SEED_SKIP) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();

    let mut entries = vec![0u16; size as usize];
    let mut filled = vec![false; size as usize];
    let mut next = vec![0u64; order.len()];
    let mut remaining = size as usize;
    'fill: loop {
        for (turn, &(offset, skip)) in perms.iter().enumerate() {
            // Each backend's permutation visits every entry once (size is
            // prime, skip in 1..size), so a free one is always found.
            let mut c = (offset + next[turn] * skip) % m;
            while filled[c as usize] {
                next[turn] += 1;
                c = (offset + next[turn] * skip) % m;
            }
            filled[c as usize] = true;
            // Fits: checked against u16::MAX + 1 backends above.
            entries[c as usize] = order[turn] as u16;
            next[turn] += 1;
            remaining -= 1;
            if remaining == 0 {
                break 'fill;
            }
        }
    }
    Ok(entries)
}

/// Whether the datapath chooses this frontend's backends by a Maglev table:
/// frontends reachable from outside the node with the cluster traffic
/// policy (the same backend set on every node) and no session affinity
/// (affinity has its own per-client state), with 1..=65535 backends.
pub fn wants_table(value: &ServiceValue) -> bool {
    value.flags & SERVICE_FLAG_NODEPORT != 0
        && value.flags & SERVICE_FLAG_EXT_LOCAL == 0
        && value.affinity_timeout_secs == 0
        && value.backend_count > 0
        && value.backend_count as usize <= MAGLEV_MAX_BACKENDS
}

/// Which frontends [`tables_to_put`] considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Those the ops point at a backend set, and every other frontend of
    /// the state: after a (re)start, an upgrade that added the tables map,
    /// or a plan that failed halfway. Costs a pass over all frontends.
    Everything,
    /// Only those the ops point at a backend set: after a plan that was
    /// applied completely, every other frontend has its table already.
    Ops,
}

/// The tables to write before `ops` are applied to the maps that `state`
/// mirrors, given the backend sets (slots) that already have a table: one
/// per backend set that a frontend (in `scope`) will point at after the ops
/// and that wants a table ([`wants_table`]) but has none. Each comes with
/// the set's backends in index order (from the ops' `PutBackend`s for new
/// sets, from `state` for existing ones). Written first, a table exists
/// before any frontend uses its slot, so no packet chooses a backend of a
/// new set without it.
pub fn tables_to_put(
    ops: &[MapOp],
    state: &MapState,
    have: &BTreeSet<u32>,
    scope: Scope,
) -> Vec<(u32, Vec<Backend>)> {
    let mut new_backends: BTreeMap<BackendKey, Backend> = BTreeMap::new();
    let mut changed: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut wanted: BTreeMap<u32, u32> = BTreeMap::new();
    for op in ops {
        match op {
            MapOp::PutBackend(k, v) => {
                new_backends.insert(*k, *v);
            }
            MapOp::PutService(k, v) => {
                changed.insert(*k);
                if wants_table(v) {
                    wanted.insert(v.backend_slot, v.backend_count);
                }
            }
            MapOp::DeleteService(k) => {
                changed.insert(*k);
            }
            _ => {}
        }
    }
    if scope == Scope::Everything {
        for (k, v) in &state.services {
            if !changed.contains(k) && wants_table(v) {
                wanted.insert(v.backend_slot, v.backend_count);
            }
        }
    }
    wanted
        .into_iter()
        .filter(|(slot, _)| !have.contains(slot))
        .filter_map(|(slot, count)| {
            let backends = (0..count)
                .map(|index| {
                    let key = BackendKey { slot, index };
                    new_backends
                        .get(&key)
                        .or_else(|| state.backends.get(&key))
                        .copied()
                })
                .collect::<Option<Vec<Backend>>>()?;
            Some((slot, backends))
        })
        .collect()
}

/// The tables `ops` release, computed before they are applied to the maps
/// `state` mirrors: the backend sets of frontends the ops point elsewhere or
/// delete. The planner gives every changed frontend a fresh slot and no two
/// frontends share one, so once the ops are applied nothing uses these (to
/// delete then, without a pass over all frontends).
pub fn tables_released(ops: &[MapOp], state: &MapState, have: &BTreeSet<u32>) -> Vec<u32> {
    let mut kept = BTreeSet::new();
    let mut released = BTreeSet::new();
    for op in ops {
        let key = match op {
            MapOp::PutService(k, v) => {
                if wants_table(v) {
                    kept.insert(v.backend_slot);
                }
                k
            }
            MapOp::DeleteService(k) => k,
            _ => continue,
        };
        if let Some(old) = state.services.get(key)
            && have.contains(&old.backend_slot)
        {
            released.insert(old.backend_slot);
        }
    }
    released.difference(&kept).copied().collect()
}

/// The tables no frontend of `state` uses any more: all of them, with a
/// pass over every frontend (after a restart or a plan that failed halfway;
/// otherwise [`tables_released`] is exact and cheaper).
pub fn tables_to_delete(state: &MapState, have: &BTreeSet<u32>) -> Vec<u32> {
    let used: BTreeSet<u32> = state
        .services
        .values()
        .filter(|v| wants_table(v))
        .map(|v| v.backend_slot)
        .collect();
    have.difference(&used).copied().collect()
}

/// The table of a backend set at the datapath's size
/// ([`MAGLEV_TABLE_SIZE`]).
pub fn datapath_table(backends: &[Backend]) -> Result<Vec<u16>, MaglevError> {
    table(backends, MAGLEV_TABLE_SIZE)
}

const SEED_OFFSET: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SEED_SKIP: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// A backend's stable identity: its address and port, network order bytes.
fn identity(backend: &Backend) -> [u8; 6] {
    let addr = backend.addr.to_ne_bytes();
    let port = backend.port.to_ne_bytes();
    [addr[0], addr[1], addr[2], addr[3], port[0], port[1]]
}

/// FNV-1a over `bytes` starting from `seed`, then splitmix64's finaliser
/// (FNV alone mixes short inputs poorly into the high bits).
fn hash(bytes: &[u8], seed: u64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Trial division; table sizes are small.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn backends(n: u8) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend::new([10, 244, i / 16, i % 16 + 2], 8080))
            .collect()
    }

    /// The table as backend identities, so tables of the same set given in
    /// different orders can be compared.
    fn owners(set: &[Backend], size: u32) -> Vec<Backend> {
        table(set, size)
            .expect("table")
            .into_iter()
            .map(|i| set[usize::from(i)])
            .collect()
    }

    fn shares(set: &[Backend], size: u32) -> BTreeMap<Backend, usize> {
        let mut counts = BTreeMap::new();
        for b in owners(set, size) {
            *counts.entry(b).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn errors_table() {
        let cases: [(&str, Vec<Backend>, u32, MaglevError); 4] = [
            ("no backends", vec![], 251, MaglevError::NoBackends),
            (
                "size not prime",
                backends(3),
                250,
                MaglevError::SizeNotPrime { size: 250 },
            ),
            (
                "size 1",
                backends(1),
                1,
                MaglevError::SizeNotPrime { size: 1 },
            ),
            (
                "more backends than entries",
                backends(13),
                13,
                MaglevError::TooManyBackends {
                    backends: 13,
                    size: 13,
                },
            ),
        ];
        for (name, set, size, want) in cases {
            assert_eq!(table(&set, size), Err(want), "case: {name}");
        }
    }

    #[test]
    fn primes() {
        let got: Vec<u32> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(got, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(weir_ebpf_common::maglev::MAGLEV_TABLE_SIZE));
        assert!(is_prime(65_537));
        assert!(!is_prime(65_535));
    }

    #[test]
    fn deterministic_across_calls_and_input_order() {
        for (n, size) in [(1, 7), (2, 13), (5, 251), (10, 16_381), (100, 16_381)] {
            let set = backends(n);
            let want = owners(&set, size);
            assert_eq!(owners(&set, size), want, "n={n}: same call, same table");
            let mut reversed = set.clone();
            reversed.reverse();
            assert_eq!(owners(&reversed, size), want, "n={n}: reversed input");
            let mut rotated = set.clone();
            rotated.rotate_left(usize::from(n) / 2);
            assert_eq!(owners(&rotated, size), want, "n={n}: rotated input");
        }
        // Pinned values: a change of the hash or the fill order changes
        // every node's choice and must be deliberate (agents of different
        // versions must agree during a rolling upgrade).
        let small = table(&backends(3), 13).expect("table");
        assert_eq!(small, [1, 2, 0, 2, 0, 2, 1, 0, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn every_entry_is_owned_and_shares_differ_by_at_most_one() {
        for (n, size) in [(1, 7), (3, 13), (4, 251), (7, 16_381), (160, 16_381)] {
            let set = backends(n);
            let t = table(&set, size).expect("table");
            assert_eq!(t.len(), size as usize);
            assert!(t.iter().all(|i| usize::from(*i) < set.len()), "n={n}");
            let shares = shares(&set, size);
            assert_eq!(
                shares.len(),
                usize::from(n),
                "n={n}: every backend owns entries"
            );
            let min = shares.values().min().copied().unwrap_or_default();
            let max = shares.values().max().copied().unwrap_or_default();
            assert!(max - min <= 1, "n={n} size={size}: shares {min}..={max}");
        }
    }

    /// Entries that changed owner between two tables, and of those the
    /// ones whose old and new owner both are in `both` (moved between
    /// backends that stayed, i.e. disruption Maglev tries to avoid).
    fn changes(before: &[Backend], after: &[Backend], both: &[Backend]) -> (usize, usize) {
        let size = weir_ebpf_common::maglev::MAGLEV_TABLE_SIZE;
        let old = owners(before, size);
        let new = owners(after, size);
        let changed: Vec<(Backend, Backend)> =
            old.into_iter().zip(new).filter(|(o, n)| o != n).collect();
        let between = changed
            .iter()
            .filter(|(o, n)| both.contains(o) && both.contains(n))
            .count();
        (changed.len(), between)
    }

    #[test]
    fn removing_or_adding_one_backend_moves_few_other_entries() {
        let m = weir_ebpf_common::maglev::MAGLEV_TABLE_SIZE as f64;
        for n in [3u8, 10, 50, 100] {
            let full = backends(n);
            let mut fewer = full.clone();
            let gone = fewer.remove(usize::from(n) / 2);
            // Removal: the removed backend's entries must move; of the others,
            // Maglev moves only a few. Measured with this hash at size 16381:
            // 32 (n=3), 112 (n=10), 170 (n=50), 223 (n=100) entries, i.e. at
            // most 1.4% of the table; `hash % n` would move (n-1)/n of it.
            let (changed, between) = changes(&full, &fewer, &fewer);
            let own = m / f64::from(n);
            assert!(
                changed as f64 >= own.floor(),
                "n={n}: at least the removed backend's entries move ({changed})"
            );
            let bound = 0.02 * m;
            assert!(
                (between as f64) <= bound,
                "n={n}: removing {gone:?} moved {between} entries between staying backends (bound {bound})"
            );
            // Adding it back is the mirror image.
            let (changed, between) = changes(&fewer, &full, &fewer);
            assert!(changed as f64 >= (m / f64::from(n)).floor(), "n={n}: add");
            assert!((between as f64) <= bound, "n={n}: adding moved {between}");
        }
    }

    fn svc(slot: u32, count: u32, flags: u32, affinity: u32) -> ServiceValue {
        ServiceValue {
            backend_slot: slot,
            backend_count: count,
            flags,
            affinity_timeout_secs: affinity,
        }
    }

    #[test]
    fn wants_table_table() {
        use weir_ebpf_common::{SERVICE_FLAG_ANNOUNCE, SERVICE_FLAG_SOURCE_RANGES};
        let np = SERVICE_FLAG_NODEPORT;
        let cases = [
            ("NodePort, cluster policy", svc(1, 2, np, 0), true),
            (
                "with source ranges",
                svc(1, 2, np | SERVICE_FLAG_SOURCE_RANGES, 0),
                true,
            ),
            ("ClusterIP", svc(1, 2, 0, 0), false),
            (
                "externalTrafficPolicy Local",
                svc(1, 2, np | SERVICE_FLAG_EXT_LOCAL, 0),
                false,
            ),
            ("session affinity", svc(1, 2, np, 10_800), false),
            ("no backends", svc(1, 0, np, 0), false),
            ("too many backends", svc(1, 70_000, np, 0), false),
            ("address marker", svc(0, 0, SERVICE_FLAG_ANNOUNCE, 0), false),
        ];
        for (name, value, want) in cases {
            assert_eq!(wants_table(&value), want, "case: {name}");
        }
    }

    #[test]
    fn tables_follow_backend_sets() {
        let np = SERVICE_FLAG_NODEPORT;
        let node_port = ServiceKey::new([172, 30, 0, 11], 30080, 6);
        let cluster_ip = ServiceKey::new([10, 96, 0, 10], 80, 6);
        let [a, b, c] = [2u8, 3, 4].map(|i| Backend::new([10, 244, 1, i], 8080));
        let mut state = MapState::default();
        let bk = |slot, index| BackendKey { slot, index };
        state.services.insert(node_port, svc(1, 2, np, 0));
        state.services.insert(cluster_ip, svc(2, 2, 0, 0));
        for (k, v) in [(bk(1, 0), a), (bk(1, 1), b), (bk(2, 0), a), (bk(2, 1), b)] {
            state.backends.insert(k, v);
        }

        // An agent meeting maps without tables (first start, upgrade) writes
        // the NodePort's, not the ClusterIP's; a pass over its own ops only
        // finds nothing.
        let (all, ops_only) = (Scope::Everything, Scope::Ops);
        let none = BTreeSet::new();
        assert_eq!(tables_to_put(&[], &state, &none, all), [(1, vec![a, b])]);
        assert_eq!(tables_to_put(&[], &state, &none, ops_only), []);
        let have = BTreeSet::from([1]);
        assert_eq!(tables_to_put(&[], &state, &have, all), []);

        // A change: new set in slot 3, written with its table before the
        // flip; the old set's table is released and goes after it.
        let ops = [
            MapOp::PutBackend(bk(3, 0), a),
            MapOp::PutBackend(bk(3, 1), b),
            MapOp::PutBackend(bk(3, 2), c),
            MapOp::PutService(node_port, svc(3, 3, np, 0)),
            MapOp::DeleteBackend(bk(1, 0)),
            MapOp::DeleteBackend(bk(1, 1)),
        ];
        for scope in [all, ops_only] {
            let got = tables_to_put(&ops, &state, &have, scope);
            assert_eq!(got, [(3, vec![a, b, c])], "{scope:?}");
        }
        let released = tables_released(&ops, &state, &have);
        assert_eq!(released, [1]);
        for op in &ops {
            state.apply(op);
        }
        let have = BTreeSet::from([1, 3]);
        assert_eq!(
            tables_to_delete(&state, &have),
            released,
            "a full pass agrees"
        );

        // The frontend turns externalTrafficPolicy Local: no table wanted.
        let ops = [MapOp::PutService(
            node_port,
            svc(4, 3, np | SERVICE_FLAG_EXT_LOCAL, 0),
        )];
        let have = BTreeSet::from([3]);
        assert_eq!(tables_to_put(&ops, &state, &have, all), []);
        assert_eq!(tables_released(&ops, &state, &have), [3]);
        for op in &ops {
            state.apply(op);
        }
        assert_eq!(tables_to_delete(&state, &have), [3]);

        // Deleting frontends releases only the tables that exist.
        state.services.insert(node_port, svc(7, 3, np, 0));
        let ops = [
            MapOp::DeleteService(node_port),
            MapOp::DeleteService(cluster_ip),
        ];
        assert!(tables_released(&ops, &state, &BTreeSet::new()).is_empty());
        assert_eq!(tables_released(&ops, &state, &BTreeSet::from([7])), [7]);

        // A set whose backends are missing (a torn map) gets no table.
        let ops = [MapOp::PutService(node_port, svc(9, 2, np, 0))];
        assert_eq!(tables_to_put(&ops, &state, &BTreeSet::new(), all), []);
    }

    #[test]
    fn a_set_with_one_backend_owns_everything() {
        let set = backends(1);
        assert!(table(&set, 7).expect("table").iter().all(|i| *i == 0));
    }
}
