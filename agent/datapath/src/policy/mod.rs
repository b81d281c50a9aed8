//! NetworkPolicy in the agent. The compiler: pure functions from
//! (NetworkPolicies, Pods, Namespaces, this node) to the contents of the
//! policy maps whose ABI is `weir_ebpf_common::policy`, and from (current,
//! desired) contents to map operations; no I/O, no clock. Around it, the
//! thin shell: the watch loop that feeds it (`sync`) and the executor that
//! applies the ops (`apply`).
//!
//! - `feed`: the node facts from Node objects ([`node_network`]);
//! - `model`: the inputs ([`PodInfo`], [`NamespaceInfo`], [`NodeNetwork`])
//!   and their reduction from Kubernetes objects;
//! - `rules`: NetworkPolicy -> normalized rules (policyTypes defaulting,
//!   selectors, ipBlocks, ports); what it cannot read matches nothing;
//! - `alloc`: stable numbering (identities, CIDR identities, endpoint and
//!   policy ids) across recompiles;
//! - `ports`: port ranges -> prefix-aligned blocks;
//! - `compile`: the compile ([`compile`]);
//! - `diff`: map operations in a safe order ([`diff`]);
//! - `verdict`: the datapath's lookup replayed in user space ([`verdict`]);
//! - `sweep`: conntrack entries + new maps -> the keys of connections now
//!   denied ([`cut_keys`]), and its thin shell over `WEIR_CT`
//!   ([`sweep_conntrack`], [`Sweeper`]).
//!
//! Kubernetes semantics decided here: a pod is isolated for a direction
//! only when a policy selecting it has that policyType; allowed traffic is
//! the union of the selecting policies' rules; `ingress: []` denies all,
//! `ingress: [{}]` allows all; empty `from`/`to` = every peer, empty
//! `ports` = every protocol and port; peers by podSelector (policy's
//! namespace), namespaceSelector, both (AND), several (OR), ipBlock with
//! except (pod addresses included); TCP/UDP/SCTP; numeric, named (resolved
//! on the destination pod) and endPort ranges; traffic between a pod and
//! its own node always passes, both ways; a pod reaches itself.
//!
//! Decided in the datapath, not here: statefulness (only the first packet
//! of a connection is judged; replies and later packets pass on the
//! conntrack entry), and judging after service translation (the lookup
//! uses the backend's address and port). A change does not leave denied
//! connections standing on those entries: after applying it the sync
//! sweeps the conntrack map (`sweep`) and cuts the established connections
//! the new maps deny (and with them a later UDP flow reusing their
//! 5-tuple), which are then judged afresh on their next packet.
//!
//! The datapath side (`ebpf/programs/src/policy.rs`): the tc programs read
//! `WEIR_IPCACHE`, `WEIR_POL_EP` and `WEIR_POLICY` and, for the first
//! packet of a connection only (a conntrack miss, or a TCP SYN), call
//! `weir_ebpf_common::policy::decide` on the translated destination before
//! creating the conntrack entry: from-pod checks the source's egress and,
//! when the destination is a local endpoint, its ingress too, and marks the
//! packet (`SKB_MARK_POLICY_JUDGED`) so the destination's to-pod does not
//! judge it again; to-pod checks the ingress of what comes from the stack
//! (the node, other nodes); node-ingress checks a local NodePort backend's
//! ingress with the client's address before SNAT. An address missing from
//! `WEIR_POL_EP` is not enforced. Allowed connections get conntrack entries,
//! untranslated ones with `CT_FLAG_NO_NAT`, which lets replies pass. Every
//! verdict (per judged direction) and every drop is a `FlowEvent` in
//! `WEIR_FLOWS`. Tested with BPF_PROG_TEST_RUN and real traffic in
//! `policy_dp_tests.rs`, on maps written by [`compile`] + [`apply_ops`].
//!
//! The agent side:
//! - `apply`: the executor ([`apply_ops`] of [`PolicyMapOp`]s over
//!   [`PolicyKernelMaps`], errors naming the map; [`read_maps`]);
//! - `sync`: [`run_policy_sync`], NetworkPolicy/Pod (all namespaces)/
//!   Namespace/Node watches -> reduced inputs -> [`compile`] (numbers kept
//!   stable, and recovered from the pinned maps after a restart by
//!   [`recover_allocations`]) -> [`diff`] against the maps' contents ->
//!   [`apply_ops`] -> [`Sweeper::sweep`] (connections the change denies
//!   are cut; skipped when the ops cannot deny, [`may_deny`], and limited
//!   to the connections of the [`affected`] addresses); a compile
//!   that does not fit or a failed write leaves
//!   the maps as they are and is reported by map name (log + Warning Event
//!   on the Node). Map sizes come from the agent's flags
//!   (`Datapath::load_with_policy_limits`), and the kernel's real
//!   capacities (a pinned map keeps its size) are what the compile checks.
//! - new pods: the pod worker calls [`PolicyHandle::admit`] with the
//!   sandbox's address before the first container (init containers
//!   included) starts, and starts nothing until the sync acknowledges a
//!   compile including the pod was applied (bounded wait; on timeout an
//!   Event and a retry), so a pod a policy selects is isolated from its
//!   first packet.

mod alloc;
mod apply;
mod compile;
mod diff;
mod feed;
mod model;
mod ports;
mod rules;
mod sweep;
mod sync;
mod verdict;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use weir_ebpf_common::policy::{
    EndpointKey, EndpointValue, IPCACHE_MAX_ENTRIES, IpcacheKey, IpcacheValue,
    POLICY_ENDPOINTS_MAX_ENTRIES, POLICY_MAX_ENTRIES, PolicyKey, PolicyValue,
};

pub use alloc::Allocator;
pub use apply::{PolicyKernelMaps, apply_op, apply_ops, is_map_full, read_maps};
pub use compile::{Allocations, Compiled, IdentityKey, compile};
pub use diff::{PolicyMapOp, diff};
pub use feed::node_network;
pub use model::{
    NAMESPACE_NAME_LABEL, NamedPort, NamespaceInfo, NodeNetwork, ObjectRef, PodInfo, PolicyInput,
    protocol_number,
};
pub use ports::{PortBlock, port_blocks};
pub use rules::PolicyWarning;
pub use sweep::{
    SweepStats, SweepView, Sweeper, affected, cut_keys, may_deny, open_conntrack, sweep_conntrack,
};
pub use sync::{
    AdmitError, PolicyAdmissions, PolicyHandle, PolicySyncConfig, recover_allocations,
    run_policy_sync,
};
pub use verdict::{Decision, PolicyView, Verdict, ipcache_lookup, verdict};

/// The key of an LPM trie entry: (prefix length in bits, key data), the two
/// arguments of aya's `lpm_trie::Key::new`.
pub type LpmKey<K> = (u32, K);

/// What the three policy maps hold (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub ipcache: BTreeMap<LpmKey<IpcacheKey>, IpcacheValue>,
    pub endpoints: BTreeMap<EndpointKey, EndpointValue>,
    pub policy: BTreeMap<LpmKey<PolicyKey>, PolicyValue>,
}

/// Map capacities; the maps must be created with these sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    pub ipcache_max_entries: u32,
    pub endpoints_max_entries: u32,
    pub policy_max_entries: u32,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            ipcache_max_entries: IPCACHE_MAX_ENTRIES,
            endpoints_max_entries: POLICY_ENDPOINTS_MAX_ENTRIES,
            policy_max_entries: POLICY_MAX_ENTRIES,
        }
    }
}

/// Why a compile produced nothing (the maps then keep their current
/// contents: the agent reports the error and retries on the next change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The desired contents do not fit a map.
    #[error(
        "BPF map {map} is full: {needed} entries needed, capacity {capacity}; \
         raise its size limit or reduce the policies/pods it serves"
    )]
    MapFull {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
    /// A number range is used up.
    #[error("no free {kind} left (all {capacity} in use)")]
    Exhausted { kind: &'static str, capacity: u64 },
}
