//! The thin executor between the compiler and the kernel: [`PolicyMapOp`]s
//! written into the three policy maps, and the maps read back.
//!
//! Plain functions over map handles: the agent's sync owns maps taken out of
//! the loaded object ([`PolicyKernelMaps::take`]); tests may wrap maps they
//! created themselves or borrowed from an [`Ebpf`] (`T = &mut MapData`).
//! Every error names the map it came from.

use std::borrow::{Borrow, BorrowMut};

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, IterableMap, LpmTrie, Map, MapData, MapError};
use weir_ebpf_common::policy::{
    EndpointKey, EndpointValue, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, map_names,
};

use super::{PolicyLimits, PolicyMapOp, PolicyMaps};
use crate::DatapathError;

/// Handles on the three policy maps.
pub struct PolicyKernelMaps<T = MapData> {
    /// `WEIR_IPCACHE`: LPM trie address -> identities.
    pub ipcache: LpmTrie<T, IpcacheKey, IpcacheValue>,
    /// `WEIR_POL_EP`: hash pod address -> endpoint.
    pub endpoints: HashMap<T, EndpointKey, EndpointValue>,
    /// `WEIR_POLICY`: LPM trie of allowed (endpoint, direction, identity,
    /// protocol, port block).
    pub policy: LpmTrie<T, PolicyKey, PolicyValue>,
}

impl PolicyKernelMaps<MapData> {
    /// Takes the policy maps out of a loaded object (the programs keep
    /// their own references). `Ok(None)` when the object declares none of
    /// them (programs built without NetworkPolicy); an error when only some
    /// are declared or one has the wrong type. Also returns the capacities
    /// the maps really have (a map pinned by an earlier agent keeps the size
    /// it was created with).
    pub fn take(ebpf: &mut Ebpf) -> Result<Option<(Self, PolicyLimits)>, DatapathError> {
        let names = [
            map_names::IPCACHE,
            map_names::POLICY_ENDPOINTS,
            map_names::POLICY,
        ];
        let present = names.iter().filter(|n| ebpf.map(n).is_some()).count();
        if present == 0 {
            return Ok(None);
        }
        let ipcache: LpmTrie<MapData, IpcacheKey, IpcacheValue> =
            take_typed(ebpf, map_names::IPCACHE)?;
        let endpoints: HashMap<MapData, EndpointKey, EndpointValue> =
            take_typed(ebpf, map_names::POLICY_ENDPOINTS)?;
        let policy: LpmTrie<MapData, PolicyKey, PolicyValue> = take_typed(ebpf, map_names::POLICY)?;
        let limits = PolicyLimits {
            ipcache_max_entries: max_entries(&ipcache, map_names::IPCACHE)?,
            endpoints_max_entries: max_entries(&endpoints, map_names::POLICY_ENDPOINTS)?,
            policy_max_entries: max_entries(&policy, map_names::POLICY)?,
        };
        let maps = Self {
            ipcache,
            endpoints,
            policy,
        };
        Ok(Some((maps, limits)))
    }
}

/// Takes map `name` out of `ebpf` as the typed map `M`.
fn take_typed<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, DatapathError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?;
    M::try_from(map).map_err(|source| map_error(name, source))
}

/// The capacity the kernel map really has.
fn max_entries<K: aya::Pod, V, M: IterableMap<K, V>>(
    map: &M,
    name: &'static str,
) -> Result<u32, DatapathError> {
    Ok(map
        .map()
        .info()
        .map_err(|source| map_error(name, source))?
        .max_entries())
}

/// Writes one op. Deleting a key that is already gone succeeds (the
/// desired end state holds); every other failure names the map.
pub fn apply_op<T: BorrowMut<MapData>>(
    maps: &mut PolicyKernelMaps<T>,
    op: &PolicyMapOp,
) -> Result<(), DatapathError> {
    let (name, result) = match *op {
        PolicyMapOp::PolicyUpsert((len, k), v) => (
            map_names::POLICY,
            maps.policy.insert(&Key::new(len, k), v, 0),
        ),
        PolicyMapOp::IpcacheUpsert((len, k), v) => (
            map_names::IPCACHE,
            maps.ipcache.insert(&Key::new(len, k), v, 0),
        ),
        PolicyMapOp::EndpointUpsert(k, v) => {
            (map_names::POLICY_ENDPOINTS, maps.endpoints.insert(k, v, 0))
        }
        PolicyMapOp::EndpointDelete(k) => (
            map_names::POLICY_ENDPOINTS,
            ignore_missing(maps.endpoints.remove(&k)),
        ),
        PolicyMapOp::IpcacheDelete((len, k)) => (
            map_names::IPCACHE,
            ignore_missing(maps.ipcache.remove(&Key::new(len, k))),
        ),
        PolicyMapOp::PolicyDelete((len, k)) => (
            map_names::POLICY,
            ignore_missing(maps.policy.remove(&Key::new(len, k))),
        ),
    };
    result.map_err(|source| map_error(name, source))
}

/// Applies `ops` in order (the order [`super::diff`] produced is the safe
/// one), mirroring each success into `state`. Stops at the first failure,
/// leaving `state` equal to what the maps now hold.
pub fn apply_ops<T: BorrowMut<MapData>>(
    maps: &mut PolicyKernelMaps<T>,
    ops: &[PolicyMapOp],
    state: &mut PolicyMaps,
) -> Result<(), DatapathError> {
    for op in ops {
        apply_op(maps, op)?;
        state.apply(*op);
    }
    Ok(())
}

/// Reads the three maps back (after an agent restart: the pinned maps still
/// hold what the previous agent wrote, and the next diff is taken against
/// that, so nothing is flushed).
pub fn read_maps<T: Borrow<MapData>>(
    maps: &PolicyKernelMaps<T>,
) -> Result<PolicyMaps, DatapathError> {
    let mut out = PolicyMaps::default();
    for entry in maps.ipcache.iter() {
        let (k, v) = entry.map_err(|e| map_error(map_names::IPCACHE, e))?;
        out.ipcache.insert((k.prefix_len(), k.data()), v);
    }
    for entry in maps.endpoints.iter() {
        let (k, v) = entry.map_err(|e| map_error(map_names::POLICY_ENDPOINTS, e))?;
        out.endpoints.insert(k, v);
    }
    for entry in maps.policy.iter() {
        let (k, v) = entry.map_err(|e| map_error(map_names::POLICY, e))?;
        out.policy.insert((k.prefix_len(), k.data()), v);
    }
    Ok(out)
}

/// Whether a map write failed because the map is full (hash maps and LPM
/// tries both answer `E2BIG`/`ENOSPC`): the sync reports such a failure by
/// map name instead of retrying it blindly.
pub fn is_map_full(error: &DatapathError) -> Option<&'static str> {
    let DatapathError::Map { name, source } = error else {
        return None;
    };
    let MapError::SyscallError(e) = source else {
        return None;
    };
    matches!(
        e.io_error.raw_os_error(),
        Some(nix::libc::E2BIG | nix::libc::ENOSPC)
    )
    .then_some(*name)
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        other => other,
    }
}

fn map_error(name: &'static str, source: MapError) -> DatapathError {
    DatapathError::Map { name, source }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{compile_all, np, pods};
    use super::super::{PolicyLimits, diff};
    use super::*;

    /// `BPF_F_NO_PREALLOC`: the kernel requires it for LPM tries.
    const BPF_F_NO_PREALLOC: u32 = 1;

    fn create(limits: &PolicyLimits) -> PolicyKernelMaps {
        PolicyKernelMaps {
            ipcache: LpmTrie::create(limits.ipcache_max_entries, BPF_F_NO_PREALLOC)
                .expect("create ipcache trie"),
            endpoints: HashMap::create(limits.endpoints_max_entries, 0).expect("create endpoints"),
            policy: LpmTrie::create(limits.policy_max_entries, BPF_F_NO_PREALLOC)
                .expect("create policy trie"),
        }
    }

    #[test]
    #[ignore = "privileged: creates BPF maps (root, CAP_BPF)"]
    fn applied_ops_read_back_and_converge_without_a_flush() {
        let policies = [
            np(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
            np(
                "y",
                "web",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                 "ports": [{"port": 80, "endPort": 90}]}]}),
            ),
        ];
        let limits = PolicyLimits::default();
        let first = compile_all(&policies[..1], &pods());
        let second = compile_all(&policies, &pods());
        let (a, b) = (&first["node1"].maps, &second["node1"].maps);
        let mut kernel = create(&limits);
        let mut state = PolicyMaps::default();
        apply_ops(&mut kernel, &diff(&state, a, &limits), &mut state).expect("apply");
        assert_eq!(&state, a);
        assert_eq!(&read_maps(&kernel).expect("read"), a, "read back = written");

        // An agent restart: the read-back state is the diff base, so only
        // the change is written and nothing is flushed.
        let mut state = read_maps(&kernel).expect("read");
        let ops = diff(&state, b, &limits);
        assert!(
            ops.len() < b.policy.len() + b.ipcache.len() + b.endpoints.len(),
            "{} ops: the unchanged entries are not rewritten",
            ops.len()
        );
        apply_ops(&mut kernel, &ops, &mut state).expect("apply");
        assert_eq!(&read_maps(&kernel).expect("read"), b);
        assert!(diff(&state, b, &limits).is_empty());

        // Deleting what is already gone is fine (a retried plan).
        let gone = *b.endpoints.keys().next().expect("an endpoint");
        apply_op(&mut kernel, &PolicyMapOp::EndpointDelete(gone)).expect("delete");
        apply_op(&mut kernel, &PolicyMapOp::EndpointDelete(gone)).expect("delete again");
    }

    #[test]
    #[ignore = "privileged: creates BPF maps (root, CAP_BPF)"]
    fn a_full_map_is_reported_by_name() {
        let policies = [np("x", "deny-all", json!({"podSelector": {}}))];
        let compiled = compile_all(&policies, &pods());
        let desired = &compiled["node1"].maps;
        let small = PolicyLimits {
            policy_max_entries: 2,
            ..PolicyLimits::default()
        };
        let mut kernel = create(&small);
        let mut state = PolicyMaps::default();
        // Plan as if the map were large enough (a pinned map smaller than
        // the limits the compile assumed).
        let ops = diff(&state, desired, &PolicyLimits::default());
        let error = apply_ops(&mut kernel, &ops, &mut state).expect_err("map full");
        assert_eq!(is_map_full(&error), Some(map_names::POLICY), "{error}");
        assert!(error.to_string().contains(map_names::POLICY), "{error}");
        assert_eq!(
            read_maps(&kernel).expect("read"),
            state,
            "the mirror is what the kernel holds"
        );
    }
}
