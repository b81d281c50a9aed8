//! Typed access to the pinned maps the agent reads and writes.

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use weir_ebpf_common::{
    Backend, BackendKey, CtKey, CtValue, IPPROTO_UDP, NodeValue, ServiceKey, ServiceValue,
    SourceRangeKey, drop_reason, map_names,
};

use super::DatapathError;
use super::plan::{MapOp, MapState};

/// The maps the agent writes.
pub struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, BackendKey, Backend>,
    /// Written by the datapath; the agent only prunes stale UDP entries.
    pub(super) conntrack: HashMap<MapData, CtKey, CtValue>,
    /// Written by the datapath (per CPU); the agent sums and reports them.
    drops: PerCpuArray<MapData, u64>,
    /// This node's facts for the programs (written at load).
    node: Array<MapData, NodeValue>,
    source_ranges: LpmTrie<MapData, SourceRangeKey, u8>,
}

impl ServiceMaps {
    /// Takes the maps out of a loaded object (the programs keep their own
    /// references, so this does not affect them).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            services: take_hash(ebpf, map_names::SERVICES)?,
            backends: take_hash(ebpf, map_names::BACKENDS)?,
            conntrack: take_hash(ebpf, map_names::CONNTRACK)?,
            drops: {
                let name = map_names::DROPS;
                let map = ebpf
                    .take_map(name)
                    .ok_or(DatapathError::Missing { what: "map", name })?;
                PerCpuArray::try_from(map).map_err(|source| map_error(name, source))?
            },
            node: {
                let name = map_names::NODE;
                let map = ebpf
                    .take_map(name)
                    .ok_or(DatapathError::Missing { what: "map", name })?;
                Array::try_from(map).map_err(|source| map_error(name, source))?
            },
            source_ranges: {
                let name = map_names::SOURCE_RANGES;
                let map = ebpf
                    .take_map(name)
                    .ok_or(DatapathError::Missing { what: "map", name })?;
                LpmTrie::try_from(map).map_err(|source| map_error(name, source))?
            },
        })
    }

    /// Records the node address the programs SNAT to and the node
    /// interface's MAC they answer ARP with (None: unset).
    pub fn set_node(
        &mut self,
        addr: Option<std::net::Ipv4Addr>,
        mac: Option<[u8; 6]>,
    ) -> Result<(), DatapathError> {
        let value = NodeValue {
            addr: addr.map_or(0, |ip| u32::from(ip).to_be()),
            mac: mac.unwrap_or_default(),
            _pad: [0; 2],
        };
        self.node
            .set(0, value, 0)
            .map_err(|source| map_error(map_names::NODE, source))
    }

    /// The drop counters summed over CPUs, by reason name.
    pub fn drops(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        (0..drop_reason::COUNT)
            .zip(drop_reason::NAMES)
            .map(|(index, name)| {
                let per_cpu = self
                    .drops
                    .get(&index, 0)
                    .map_err(|source| map_error(map_names::DROPS, source))?;
                Ok((name, per_cpu.iter().sum()))
            })
            .collect()
    }

    pub fn read_state(&self) -> Result<MapState, DatapathError> {
        let mut state = MapState::default();
        for entry in self.services.iter() {
            let (k, v) = entry.map_err(|source| map_error(map_names::SERVICES, source))?;
            state.services.insert(k, v);
        }
        for entry in self.backends.iter() {
            let (k, v) = entry.map_err(|source| map_error(map_names::BACKENDS, source))?;
            state.backends.insert(k, v);
        }
        for key in self.source_ranges.keys() {
            let key = key.map_err(|source| map_error(map_names::SOURCE_RANGES, source))?;
            state.source_ranges.insert((key.prefix_len(), key.data()));
        }
        Ok(state)
    }

    /// Every conntrack entry.
    pub fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtValue)>, DatapathError> {
        self.conntrack
            .iter()
            .map(|entry| entry.map_err(|source| map_error(map_names::CONNTRACK, source)))
            .collect()
    }

    /// The UDP conntrack entries (both directions).
    pub fn udp_conntrack(&self) -> Result<Vec<(CtKey, CtValue)>, DatapathError> {
        let mut entries = Vec::new();
        for entry in self.conntrack.iter() {
            let (k, v) = entry.map_err(|source| map_error(map_names::CONNTRACK, source))?;
            if k.proto == IPPROTO_UDP {
                entries.push((k, v));
            }
        }
        Ok(entries)
    }

    /// Deletes conntrack entries; entries already gone (evicted) are fine.
    pub fn delete_conntrack(&mut self, keys: &[CtKey]) -> Result<(), DatapathError> {
        for key in keys {
            ignore_missing(self.conntrack.remove(key))
                .map_err(|source| map_error(map_names::CONNTRACK, source))?;
        }
        Ok(())
    }

    /// Applies one op. Deleting a key that is already gone is a success: the
    /// desired end state holds.
    pub fn apply(&mut self, op: &MapOp) -> Result<(), DatapathError> {
        let (name, result) = match op {
            MapOp::PutBackend(k, v) => (map_names::BACKENDS, self.backends.insert(k, v, 0)),
            MapOp::PutService(k, v) => (map_names::SERVICES, self.services.insert(k, v, 0)),
            MapOp::DeleteService(k) => {
                (map_names::SERVICES, ignore_missing(self.services.remove(k)))
            }
            MapOp::DeleteBackend(k) => {
                (map_names::BACKENDS, ignore_missing(self.backends.remove(k)))
            }
            MapOp::PutSourceRange(len, k) => (
                map_names::SOURCE_RANGES,
                self.source_ranges.insert(&Key::new(*len, *k), 1, 0),
            ),
            MapOp::DeleteSourceRange(len, k) => (
                map_names::SOURCE_RANGES,
                ignore_missing(self.source_ranges.remove(&Key::new(*len, *k))),
            ),
        };
        result.map_err(|source| map_error(name, source))
    }
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

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?;
    HashMap::try_from(map).map_err(|source| map_error(name, source))
}
