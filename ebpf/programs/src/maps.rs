//! The maps of the datapath. Layouts, names and sizes come from
//! `weir-ebpf-common`; every map is pinned by name under the agent's bpffs
//! directory so an agent restart keeps services and live connections.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use weir_ebpf_common::flow::FLOWS_RING_BYTES;
use weir_ebpf_common::policy::{
    EndpointKey, EndpointValue, IPCACHE_MAX_ENTRIES, IpcacheKey, IpcacheValue,
    POLICY_ENDPOINTS_MAX_ENTRIES, POLICY_MAX_ENTRIES, PolicyKey, PolicyValue,
};
use weir_ebpf_common::{
    AFFINITY_MAX_ENTRIES, AffinityKey, AffinityValue, BACKENDS_MAX_ENTRIES, Backend, BackendKey,
    CONNTRACK_MAX_ENTRIES, CtKey, CtValue, NodeValue, SERVICES_MAX_ENTRIES, SOCK_REV_MAX_ENTRIES,
    SOURCE_RANGE_FRONTEND_BITS, SOURCE_RANGES_MAX_ENTRIES, ServiceKey, ServiceValue, SockRevKey,
    SockRevValue, SourceRangeKey, drop_reason,
};

/// Service frontends (ClusterIP:port/proto) -> their current backend set.
/// Written only by the agent.
#[map(name = "WEIR_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(SERVICES_MAX_ENTRIES, 0);

/// (backend set, index) -> backend address. Written only by the agent, which
/// swaps whole sets (see `ServiceValue`).
#[map(name = "WEIR_BACKENDS")]
pub static BACKENDS: HashMap<BackendKey, Backend> = HashMap::pinned(BACKENDS_MAX_ENTRIES, 0);

/// Connection tracking: wire 5-tuple -> the translation the connection got.
/// Written by the datapath; LRU so a full table evicts idle flows instead of
/// refusing new ones.
#[map(name = "WEIR_CT")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(CONNTRACK_MAX_ENTRIES, 0);

/// Socket-level balancing: (socket cookie, backend) -> the frontend the
/// application addressed, so recvmsg/getpeername can show it the frontend.
/// Written by the socket hooks; LRU because sockets close without telling us.
#[map(name = "WEIR_SOCK_REV")]
pub static SOCK_REV: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::pinned(SOCK_REV_MAX_ENTRIES, 0);

/// Session affinity (`sessionAffinity: ClientIP`): (client, frontend) -> the
/// backend it sticks to and when it last used it. LRU: idle clients age out.
#[map(name = "WEIR_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(AFFINITY_MAX_ENTRIES, 0);

/// Drop counters by reason (`weir_ebpf_common::drop_reason`), per CPU so
/// counting never contends; the agent sums them.
#[map(name = "WEIR_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(drop_reason::COUNT, 0);

/// This node's facts (`NodeValue`), at index 0. Written by the agent.
#[map(name = "WEIR_NODE")]
pub static NODE: Array<NodeValue> = Array::pinned(1, 0);

/// NetworkPolicy: address/prefix -> (identity, CIDR identity), longest
/// prefix match (`weir_ebpf_common::policy`). Written only by the agent.
/// (aya-ebpf adds `BPF_F_NO_PREALLOC` to every LPM trie, as the kernel
/// requires; the agent may resize it at load with `map_max_entries`.)
#[map(name = "WEIR_IPCACHE")]
pub static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> = LpmTrie::pinned(IPCACHE_MAX_ENTRIES, 0);

/// NetworkPolicy: the pods of this node that policy is enforced for (pod
/// address -> endpoint id). A pod address missing here is not enforced.
/// Written only by the agent.
#[map(name = "WEIR_POL_EP")]
pub static POL_EP: HashMap<EndpointKey, EndpointValue> =
    HashMap::pinned(POLICY_ENDPOINTS_MAX_ENTRIES, 0);

/// NetworkPolicy: what each endpoint allows, per direction (LPM over
/// endpoint, direction, identity, protocol, port block); absence = deny.
/// Written only by the agent.
#[map(name = "WEIR_POLICY")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(POLICY_MAX_ENTRIES, 0);

/// Flow events (`weir_ebpf_common::flow::FlowEvent`): every policy verdict
/// and every datapath drop, read by the agent.
#[map(name = "WEIR_FLOWS")]
pub static FLOWS: RingBuf = RingBuf::pinned(FLOWS_RING_BYTES, 0);

/// Flow events lost because the ring was full (index 0, per CPU).
#[map(name = "WEIR_FLOW_LOST")]
pub static FLOW_LOST: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// The node address to SNAT to, if the agent configured one.
#[inline(always)]
pub fn node_addr() -> Option<u32> {
    let node = NODE.get(0)?;
    (node.addr != 0).then_some(node.addr)
}

/// `loadBalancerSourceRanges` of frontends with `SERVICE_FLAG_SOURCE_RANGES`:
/// (frontend, client prefix). Written only by the agent.
#[map(name = "WEIR_SRC_RANGES")]
pub static SOURCE_RANGES: LpmTrie<SourceRangeKey, u8> =
    LpmTrie::pinned(SOURCE_RANGES_MAX_ENTRIES, 0);

/// Whether `client` (network order) is inside a source range of `frontend`.
#[inline(always)]
pub fn source_allowed(frontend: &weir_ebpf_common::ServiceKey, client: u32) -> bool {
    let key = Key::new(
        SOURCE_RANGE_FRONTEND_BITS + 32,
        SourceRangeKey {
            frontend_addr: frontend.addr,
            frontend_port: frontend.port,
            proto: frontend.proto,
            _pad: 0,
            src: client,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// The node interface's MAC, if the agent configured one.
#[inline(always)]
pub fn node_mac() -> Option<[u8; 6]> {
    let node = NODE.get(0)?;
    (node.mac != [0; 6]).then_some(node.mac)
}

/// Counts one drop for `reason` (a `drop_reason` index).
#[inline(always)]
pub fn count_drop(reason: u32) {
    if let Some(ptr) = DROPS.get_ptr_mut(reason) {
        // SAFETY: the pointer is this CPU's slot of an array element (a u64);
        // a BPF program is not preempted by itself on one CPU (programs run
        // with migration disabled), so the increment does not race.
        unsafe { *ptr += 1 }
    }
}

/// Looks up `key` in a hash map and copies the value out.
#[inline(always)]
pub fn get_copy<K, V: Copy>(map: &HashMap<K, V>, key: &K) -> Option<V> {
    let ptr = map.get_ptr(key)?;
    // SAFETY: the pointer comes from a successful bpf_map_lookup_elem and points
    // to a value of type V in map memory; V is Copy (plain integers), so a torn
    // read by a concurrent user-space update can at worst yield a stale mix of
    // integers, never an invalid value.
    Some(unsafe { *ptr })
}

/// Masquerade: this node's pod CIDR and whether masquerading is on
/// (`weir_ebpf_common::masq::MasqConfig`, index 0). Written by the agent.
#[map(name = "WEIR_MASQ_CFG")]
pub static MASQ_CONFIG: Array<weir_ebpf_common::masq::MasqConfig> = Array::pinned(1, 0);

/// Masquerade: destination prefixes never masqueraded (the cluster's pod
/// CIDR, configured non-masquerade CIDRs, node addresses). Written by the agent.
#[map(name = "WEIR_MASQ_SKIP")]
pub static MASQ_SKIP: LpmTrie<u32, u8> =
    LpmTrie::pinned(weir_ebpf_common::masq::MASQ_SKIP_MAX_ENTRIES, 0);

/// Masquerade: forward entries (pod tuple -> the node:port it leaves with);
/// the reverse entries are in `WEIR_CT`. Written by the datapath; LRU.
#[map(name = "WEIR_MASQ_CT")]
pub static MASQ_CT: LruHashMap<CtKey, CtValue> =
    LruHashMap::pinned(weir_ebpf_common::masq::MASQ_CT_MAX_ENTRIES, 0);

/// The pod fast path (`crate::redirect`): ifindexes of this node's host-side
/// pod veths -> `POD_IFACE_ON`; empty when the fast path is off. Written
/// only by the agent.
#[map(name = "WEIR_POD_IFS")]
pub static POD_IFACES: HashMap<u32, u32> =
    HashMap::pinned(weir_ebpf_common::redirect::POD_IFACES_MAX_ENTRIES, 0);
