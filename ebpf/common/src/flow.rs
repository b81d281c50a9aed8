//! The flow-event ABI (issue 6, "flow visibility"): what the tc programs
//! write into the `WEIR_FLOWS` ring buffer and the agent reads, decodes and
//! streams to `weir observe`, like Hubble's trace/drop notifications.
//!
//! One event per **policy verdict** (the first packet of a connection, the
//! only packet policy judges; later packets pass on the conntrack entry) and
//! per **datapath drop** (every `drop_reason`). Packets that simply follow an
//! existing conntrack entry produce no event, so the ring costs nothing on
//! the steady-state path.
//!
//! Addresses and ports are in network byte order, as everywhere in this
//! crate, and are the ones the verdict was taken on: after service
//! translation (the backend), with the frontend the client addressed kept in
//! `orig_daddr`/`orig_dport` when the packet was translated.
//!
//! When the ring is full the program loses the *event*, never the packet;
//! it counts the loss in the per-CPU `WEIR_FLOW_LOST` array (index 0) so the
//! agent can report how many events `weir observe` did not see.

/// Map name of the ring buffer (`BPF_MAP_TYPE_RINGBUF`).
pub const FLOWS_MAP: &str = "WEIR_FLOWS";

/// Map name of the per-CPU lost-event counter (`PerCpuArray<u64>`, 1 entry).
pub const FLOW_LOST_MAP: &str = "WEIR_FLOW_LOST";

/// Size of the ring in bytes (a power of two, a multiple of the page size):
/// about 16k events of [`FlowEvent`] in flight before the reader must catch up.
pub const FLOWS_RING_BYTES: u32 = 1 << 20;

/// [`FlowEvent::verdict`]: the packet was let through (a policy allowed the
/// connection, or no policy isolates either end).
pub const VERDICT_FORWARDED: u8 = 1;
/// [`FlowEvent::verdict`]: the packet was dropped; `drop_reason` says why.
pub const VERDICT_DROPPED: u8 = 2;

/// [`FlowEvent::hook`]: which program saw the packet.
pub mod hook {
    /// TCX ingress of a pod's host-side veth (packets a pod sends).
    pub const FROM_POD: u8 = 1;
    /// TCX egress of a pod's host-side veth (packets delivered to a pod).
    pub const TO_POD: u8 = 2;
    /// TCX ingress of the node interface.
    pub const NODE_INGRESS: u8 = 3;
    /// TCX egress of the node interface.
    pub const NODE_EGRESS: u8 = 4;
    /// XDP on the node interface.
    pub const XDP: u8 = 5;
    /// The socket-level balancer (cgroup connect4/sendmsg4) refused a
    /// pod's or the node's connect/send to a frontend. There is no packet:
    /// the source is unknown (0) and `ifindex` is 0; the destination is
    /// the frontend the application addressed.
    pub const SOCK: u8 = 6;
}

/// One flow event. 48 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the packet was judged.
    pub ktime_ns: u64,
    /// Source address, network byte order.
    pub saddr: u32,
    /// Destination address after service translation, network byte order.
    pub daddr: u32,
    /// The frontend address the client addressed when the packet was
    /// translated (ClusterIP, NodePort address, ...); 0 when it was not.
    pub orig_daddr: u32,
    /// Source port, network byte order (0 for protocols without ports).
    pub sport: u16,
    /// Destination port after translation, network byte order.
    pub dport: u16,
    /// The frontend port when translated, network byte order; else 0.
    pub orig_dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`VERDICT_FORWARDED`] or [`VERDICT_DROPPED`].
    pub verdict: u8,
    /// `crate::drop_reason::*` when dropped; [`NO_DROP`] otherwise.
    pub drop_reason: u16,
    /// Policy direction of the verdict (`crate::policy::DIR_INGRESS` /
    /// `DIR_EGRESS`); 0 when the event is not a policy verdict.
    pub direction: u8,
    /// Which hook ([`hook`]).
    pub hook: u8,
    /// The `PolicyValue::policy_id` that allowed the connection
    /// (`POLICY_ID_UNISOLATED` / `POLICY_ID_HOST` for the implicit
    /// allowances); 0 on a drop or when no policy lookup happened.
    pub policy_id: u32,
    /// The local endpoint the verdict was for (`EndpointValue::endpoint_id`);
    /// 0 when none.
    pub endpoint_id: u16,
    /// Must be zero.
    pub _pad: u16,
    /// Interface index the packet was seen on.
    pub ifindex: u32,
    /// Must be zero.
    pub _pad2: u32,
}

/// [`FlowEvent::drop_reason`] of an event that is not a drop.
pub const NO_DROP: u16 = u16::MAX;

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 48);
