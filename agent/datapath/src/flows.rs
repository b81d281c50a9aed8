//! Flow events: the reader of the `WEIR_FLOWS` ring buffer the tc programs
//! write one [`FlowEvent`] into per policy verdict and per datapath drop
//! (the ABI is `weir_ebpf_common::flow`), and the counters an operator
//! watches (drops by reason, events lost because the ring was full).
//!
//! Decoding and interpretation are pure ([`decode`], [`Flow::from_event`],
//! [`policy_label`]) and table-tested; [`run_flow_reader`] is the thin I/O
//! shell: it opens the ring from its pin under the node's bpffs directory,
//! waits for it to exist (the programs that declare it may be older than
//! this agent, and then the map never appears: the agent keeps working
//! without flows), and drains it whenever epoll says it is readable.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use weir_ebpf_common::flow::{
    FLOW_LOST_MAP, FLOWS_MAP, FlowEvent, NO_DROP, VERDICT_DROPPED, VERDICT_FORWARDED, hook,
};
use weir_ebpf_common::policy::{DIR_EGRESS, DIR_INGRESS, POLICY_ID_HOST, POLICY_ID_UNISOLATED};
use weir_ebpf_common::{drop_reason, map_names};

use super::DatapathError;

/// Size of one ring record.
pub const EVENT_SIZE: usize = std::mem::size_of::<FlowEvent>();

/// A record that is not a [`FlowEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a flow record must be {EVENT_SIZE} bytes, this one has {got}")]
    Size { got: usize },
    #[error("non-zero padding in a flow record (programs and agent disagree on the layout)")]
    Padding,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one ring record (the kernel writes the `#[repr(C)]` struct in
/// native byte order; address and port fields stay in network order, as in
/// the struct). Field offsets are checked against the struct in the tests.
pub fn decode(b: &[u8]) -> Result<FlowEvent, DecodeError> {
    if b.len() != EVENT_SIZE {
        return Err(DecodeError::Size { got: b.len() });
    }
    let mut ktime = [0u8; 8];
    ktime.copy_from_slice(&b[0..8]);
    let ev = FlowEvent {
        ktime_ns: u64::from_ne_bytes(ktime),
        saddr: u32_at(b, 8),
        daddr: u32_at(b, 12),
        orig_daddr: u32_at(b, 16),
        sport: u16_at(b, 20),
        dport: u16_at(b, 22),
        orig_dport: u16_at(b, 24),
        proto: b[26],
        verdict: b[27],
        drop_reason: u16_at(b, 28),
        direction: b[30],
        hook: b[31],
        policy_id: u32_at(b, 32),
        endpoint_id: u16_at(b, 36),
        _pad: u16_at(b, 38),
        ifindex: u32_at(b, 40),
        _pad2: u32_at(b, 44),
    };
    if ev._pad != 0 || ev._pad2 != 0 {
        return Err(DecodeError::Padding);
    }
    Ok(ev)
}

/// The verdict of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Forwarded,
    Dropped,
    /// A value this agent does not know (a newer program).
    Unknown(u8),
}

/// The policy direction of a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One decoded flow event, in host terms (host byte order, wall-clock time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub time: SystemTime,
    pub source: SocketAddrV4,
    /// After service translation (the backend).
    pub destination: SocketAddrV4,
    /// The frontend the client addressed, when the packet was translated.
    pub frontend: Option<SocketAddrV4>,
    /// IP protocol number.
    pub proto: u8,
    pub verdict: Verdict,
    /// `drop_reason` index when dropped.
    pub drop_reason: Option<u16>,
    /// Set when the event is a policy verdict.
    pub direction: Option<Direction>,
    /// `weir_ebpf_common::flow::hook` value.
    pub hook: u8,
    pub policy_id: u32,
    pub endpoint_id: u16,
    pub ifindex: u32,
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

impl Flow {
    /// Interprets a decoded event; `clock` turns its monotonic timestamp
    /// into wall-clock time.
    pub fn from_event(ev: &FlowEvent, clock: &WallClock) -> Flow {
        let frontend = (ev.orig_daddr != 0)
            .then(|| SocketAddrV4::new(addr(ev.orig_daddr), u16::from_be(ev.orig_dport)));
        Flow {
            time: clock.wall(ev.ktime_ns),
            source: SocketAddrV4::new(addr(ev.saddr), u16::from_be(ev.sport)),
            destination: SocketAddrV4::new(addr(ev.daddr), u16::from_be(ev.dport)),
            frontend,
            proto: ev.proto,
            verdict: match ev.verdict {
                VERDICT_FORWARDED => Verdict::Forwarded,
                VERDICT_DROPPED => Verdict::Dropped,
                other => Verdict::Unknown(other),
            },
            drop_reason: (ev.drop_reason != NO_DROP).then_some(ev.drop_reason),
            direction: match ev.direction {
                DIR_INGRESS => Some(Direction::Ingress),
                DIR_EGRESS => Some(Direction::Egress),
                _ => None,
            },
            hook: ev.hook,
            policy_id: ev.policy_id,
            endpoint_id: ev.endpoint_id,
            ifindex: ev.ifindex,
        }
    }

    /// The name of the drop reason (`no_backend`, `policy_denied`, ...).
    pub fn drop_reason_name(&self) -> Option<Cow<'static, str>> {
        self.drop_reason.map(reason_name)
    }
}

/// The name of a `drop_reason` index; `reason-N` for one this agent does not know.
pub fn reason_name(code: u16) -> Cow<'static, str> {
    match drop_reason::NAMES.get(usize::from(code)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("reason-{code}")),
    }
}

/// The name of a hook (`weir_ebpf_common::flow::hook`).
pub fn hook_name(h: u8) -> Cow<'static, str> {
    Cow::Borrowed(match h {
        hook::FROM_POD => "from-pod",
        hook::TO_POD => "to-pod",
        hook::NODE_INGRESS => "node-ingress",
        hook::NODE_EGRESS => "node-egress",
        hook::XDP => "xdp",
        hook::SOCK => "socket",
        other => return Cow::Owned(format!("hook-{other}")),
    })
}

/// The name of an IP protocol.
pub fn protocol_name(proto: u8) -> Cow<'static, str> {
    Cow::Borrowed(match proto {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        132 => "SCTP",
        other => return Cow::Owned(other.to_string()),
    })
}

/// What decided a policy verdict, for people: the NetworkPolicy
/// ("ns/name", through `names`), an implicit allowance, or the default
/// deny of an isolated pod. Empty for events that are not policy verdicts.
pub fn policy_label(flow: &Flow, names: &PolicyNames) -> String {
    if flow.direction.is_none() {
        return String::new();
    }
    match flow.verdict {
        Verdict::Dropped if flow.drop_reason == Some(drop_reason::POLICY_DENIED as u16) => {
            "(default deny)".to_owned()
        }
        Verdict::Forwarded => match flow.policy_id {
            POLICY_ID_UNISOLATED => "(unisolated)".to_owned(),
            POLICY_ID_HOST => "(host)".to_owned(),
            id => names.name(id).unwrap_or_else(|| format!("policy-id-{id}")),
        },
        _ => String::new(),
    }
}

/// The NetworkPolicy behind each policy id, published by the policy sync
/// whenever its allocations change, read by the flow records. Cheap to clone
/// (one shared table).
#[derive(Clone, Debug, Default)]
pub struct PolicyNames(Arc<RwLock<BTreeMap<u32, String>>>);

impl PolicyNames {
    /// Replaces the table: `ids` maps policy ids to "namespace/name".
    pub fn replace(&self, ids: BTreeMap<u32, String>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = ids;
    }

    /// "namespace/name" of `id`, when known.
    pub fn name(&self, id: u32) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time: the
/// difference of the two clocks, read once per batch of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// Wall-clock time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// A clock whose monotonic zero was at `boot` (Unix nanoseconds).
    pub const fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Reads both clocks now.
    pub fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .unwrap_or(0);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Self::with_offset(wall - mono)
    }

    /// The wall-clock time of a monotonic timestamp.
    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let unix = (i128::from(ktime_ns) + self.offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix).unwrap_or(u64::MAX))
    }
}

/// The datapath's counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Drops by reason, every reason in `drop_reason::NAMES` order.
    pub drops: Vec<(&'static str, u64)>,
    /// Flow events the programs could not write because the ring was full;
    /// `None` while the programs declare no such counter.
    pub flow_events_lost: Option<u64>,
}

fn open_pinned(pin_dir: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(pin_dir.join(name))
        .map_err(|source| DatapathError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| DatapathError::Map { name, source })
}

fn per_cpu_sum(pin_dir: &Path, name: &'static str, len: u32) -> Result<Vec<u64>, DatapathError> {
    let err = |source| DatapathError::Map { name, source };
    let map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open_pinned(pin_dir, name)?).map_err(err)?;
    (0..len)
        .map(|i| Ok(map.get(&i, 0).map_err(err)?.iter().sum()))
        .collect()
}

/// Reads the drop counters and the lost-event counter pinned under
/// `pin_dir` (read-only; safe beside the live datapath).
pub fn counters(pin_dir: &Path) -> Result<Counters, DatapathError> {
    let drops = per_cpu_sum(pin_dir, map_names::DROPS, drop_reason::COUNT)?;
    let flow_events_lost = if pin_dir.join(FLOW_LOST_MAP).exists() {
        Some(per_cpu_sum(pin_dir, FLOW_LOST_MAP, 1)?[0])
    } else {
        None
    };
    Ok(Counters {
        drops: drop_reason::NAMES.into_iter().zip(drops).collect(),
        flow_events_lost,
    })
}

/// How often the reader looks for the ring when it is not pinned (yet).
const WAIT_FOR_RING: Duration = Duration::from_secs(5);

/// Reads flow events from the ring pinned at `<pin_dir>/WEIR_FLOWS` until
/// `on_flow` returns false, passing each decoded flow to it. While the ring
/// does not exist it waits (logging once); a ring that cannot be read is
/// reopened after a pause. Never fails the caller.
pub async fn run_flow_reader(pin_dir: PathBuf, mut on_flow: impl FnMut(Flow) -> bool) {
    let path = pin_dir.join(FLOWS_MAP);
    let mut said_waiting = false;
    loop {
        if !path.exists() {
            if !said_waiting {
                tracing::info!(path = %path.display(), "no flow ring pinned yet (programs without flow events?); waiting for it");
                said_waiting = true;
            }
            tokio::time::sleep(WAIT_FOR_RING).await;
            continue;
        }
        match read_ring(&pin_dir, &mut on_flow).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?WAIT_FOR_RING, "cannot read the flow ring");
                tokio::time::sleep(WAIT_FOR_RING).await;
            }
        }
    }
}

/// Why the ring could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Open(#[from] DatapathError),
    #[error("map {FLOWS_MAP}: {0}")]
    Ring(#[source] aya::maps::MapError),
    #[error("cannot poll the flow ring: {0}")]
    Poll(#[source] std::io::Error),
}

/// Drains the ring each time it becomes readable. Returns Ok when `on_flow`
/// asks to stop.
async fn read_ring(
    pin_dir: &Path,
    on_flow: &mut impl FnMut(Flow) -> bool,
) -> Result<(), ReadError> {
    let ring = RingBuf::try_from(open_pinned(pin_dir, FLOWS_MAP)?).map_err(ReadError::Ring)?;
    // `with_interest` is deprecated in favour of the `unsafe`
    // `register_with_interest`, whose contract (the fd stays open and the
    // same while registered) holds here: the AsyncFd owns the RingBuf, which
    // owns its map fd and closes it only when dropped with it. Staying on
    // the safe form keeps this crate free of `unsafe`.
    #[allow(deprecated)]
    let mut fd = AsyncFd::with_interest(ring, Interest::READABLE).map_err(ReadError::Poll)?;
    tracing::info!(map = FLOWS_MAP, "reading flow events");
    let mut bad_records = 0u64;
    let mut batch = Vec::new();
    loop {
        {
            let mut guard = fd.readable_mut().await.map_err(ReadError::Poll)?;
            let clock = WallClock::now();
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Ok(ev) => batch.push(Flow::from_event(&ev, &clock)),
                    Err(error) => {
                        bad_records += 1;
                        // Log the first and then every 1000th: a layout
                        // mismatch would otherwise flood the log.
                        if bad_records % 1000 == 1 {
                            tracing::warn!(%error, bad_records, "undecodable flow records");
                        }
                    }
                }
            }
            guard.clear_ready();
        }
        for flow in batch.drain(..) {
            if !on_flow(flow) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn decode_offsets_match_the_struct() {
        let cases = [
            (offset_of!(FlowEvent, ktime_ns), 0),
            (offset_of!(FlowEvent, saddr), 8),
            (offset_of!(FlowEvent, daddr), 12),
            (offset_of!(FlowEvent, orig_daddr), 16),
            (offset_of!(FlowEvent, sport), 20),
            (offset_of!(FlowEvent, dport), 22),
            (offset_of!(FlowEvent, orig_dport), 24),
            (offset_of!(FlowEvent, proto), 26),
            (offset_of!(FlowEvent, verdict), 27),
            (offset_of!(FlowEvent, drop_reason), 28),
            (offset_of!(FlowEvent, direction), 30),
            (offset_of!(FlowEvent, hook), 31),
            (offset_of!(FlowEvent, policy_id), 32),
            (offset_of!(FlowEvent, endpoint_id), 36),
            (offset_of!(FlowEvent, _pad), 38),
            (offset_of!(FlowEvent, ifindex), 40),
            (offset_of!(FlowEvent, _pad2), 44),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "field {i}");
        }
    }

    /// The bytes of a translated TCP connection client -> ClusterIP ->
    /// backend that policy allowed at the backend's ingress (as the kernel
    /// writes them on little-endian x86).
    fn forwarded_record() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&5_000_000_000u64.to_ne_bytes()); // ktime
        b.extend_from_slice(&[10, 244, 0, 5]); // saddr (network order)
        b.extend_from_slice(&[10, 244, 0, 7]); // daddr
        b.extend_from_slice(&[10, 96, 0, 10]); // orig_daddr
        b.extend_from_slice(&40000u16.to_be_bytes()); // sport
        b.extend_from_slice(&8080u16.to_be_bytes()); // dport
        b.extend_from_slice(&80u16.to_be_bytes()); // orig_dport
        b.push(6); // TCP
        b.push(VERDICT_FORWARDED);
        b.extend_from_slice(&NO_DROP.to_ne_bytes());
        b.push(DIR_INGRESS);
        b.push(hook::FROM_POD);
        b.extend_from_slice(&17u32.to_ne_bytes()); // policy_id
        b.extend_from_slice(&3u16.to_ne_bytes()); // endpoint_id
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&12u32.to_ne_bytes()); // ifindex
        b.extend_from_slice(&[0; 4]);
        b
    }

    #[test]
    fn decode_table() {
        let good = forwarded_record();
        let mut dirty = good.clone();
        dirty[45] = 1;
        let cases: [(&str, Vec<u8>, Result<(), DecodeError>); 4] = [
            ("a whole record", good.clone(), Ok(())),
            (
                "short",
                good[..40].to_vec(),
                Err(DecodeError::Size { got: 40 }),
            ),
            (
                "long",
                [good.clone(), vec![0; 8]].concat(),
                Err(DecodeError::Size { got: 56 }),
            ),
            ("padding set", dirty, Err(DecodeError::Padding)),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(decode(&bytes).map(|_| ()), want, "{name}");
        }
    }

    #[test]
    fn a_translated_allowed_flow_in_host_terms() {
        let ev = decode(&forwarded_record()).expect("decodes");
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        let flow = Flow::from_event(&ev, &clock);
        assert_eq!(
            flow,
            Flow {
                time: UNIX_EPOCH + Duration::from_nanos(1_700_000_005_000_000_000),
                source: "10.244.0.5:40000".parse().unwrap(),
                destination: "10.244.0.7:8080".parse().unwrap(),
                frontend: Some("10.96.0.10:80".parse().unwrap()),
                proto: 6,
                verdict: Verdict::Forwarded,
                drop_reason: None,
                direction: Some(Direction::Ingress),
                hook: hook::FROM_POD,
                policy_id: 17,
                endpoint_id: 3,
                ifindex: 12,
            }
        );
        let names = PolicyNames::default();
        assert_eq!(policy_label(&flow, &names), "policy-id-17");
        names.replace(BTreeMap::from([(17, "x/allow-web".to_owned())]));
        assert_eq!(policy_label(&flow, &names), "x/allow-web");
    }

    #[test]
    fn an_untranslated_drop_has_no_frontend_and_names_its_reason() {
        let ev = FlowEvent {
            saddr: u32::from_ne_bytes([10, 244, 0, 5]),
            daddr: u32::from_ne_bytes([10, 96, 0, 99]),
            sport: 1234u16.to_be(),
            dport: 80u16.to_be(),
            proto: 17,
            verdict: VERDICT_DROPPED,
            drop_reason: drop_reason::NO_BACKEND as u16,
            hook: hook::FROM_POD,
            ..FlowEvent::default()
        };
        let flow = Flow::from_event(&ev, &WallClock::with_offset(0));
        assert_eq!(flow.frontend, None);
        assert_eq!(flow.direction, None);
        assert_eq!(flow.drop_reason_name().as_deref(), Some("no_backend"));
        assert_eq!(policy_label(&flow, &PolicyNames::default()), "");
    }

    #[test]
    fn names_table() {
        assert_eq!(reason_name(6), "policy_denied");
        assert_eq!(reason_name(200), "reason-200");
        assert_eq!(hook_name(hook::TO_POD), "to-pod");
        assert_eq!(hook_name(hook::SOCK), "socket");
        assert_eq!(hook_name(9), "hook-9");
        assert_eq!(protocol_name(17), "UDP");
        assert_eq!(protocol_name(47), "47");
    }

    #[test]
    fn policy_labels_table() {
        let base = Flow::from_event(
            &decode(&forwarded_record()).unwrap(),
            &WallClock::with_offset(0),
        );
        let names = PolicyNames::default();
        let with = |f: &dyn Fn(&mut Flow)| {
            let mut flow = base.clone();
            f(&mut flow);
            policy_label(&flow, &names)
        };
        let cases = [
            ("unisolated", with(&|f| f.policy_id = 0), "(unisolated)"),
            ("host", with(&|f| f.policy_id = 1), "(host)"),
            (
                "denied",
                with(&|f| {
                    f.verdict = Verdict::Dropped;
                    f.drop_reason = Some(drop_reason::POLICY_DENIED as u16);
                    f.policy_id = 0;
                }),
                "(default deny)",
            ),
            ("not a policy verdict", with(&|f| f.direction = None), ""),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    /// The whole reader on a real ring: a from-pod drop (a new connection
    /// to a frontend without backends) written by the kernel reaches the
    /// callback decoded, with a wall-clock time of now.
    #[tokio::test]
    #[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
    async fn the_reader_delivers_a_kernel_drop_as_a_flow() {
        use weir_ebpf_common::{IPPROTO_TCP, ServiceKey};

        let (mut dp, dir) = crate::tests::load();
        let mut desired = crate::plan::DesiredServices::new();
        desired.insert(
            ServiceKey::new([10, 96, 0, 99], 80, IPPROTO_TCP),
            crate::plan::Frontend {
                backends: Vec::new(),
                flags: 0,
                affinity_timeout_secs: 0,
                source_ranges: Vec::new(),
            },
        );
        dp.seed(&desired);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(run_flow_reader(dir.0.clone(), move |f| tx.send(f).is_ok()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = SystemTime::now();
        const SYN: u8 = 0x02;
        const TC_ACT_SHOT: u32 = 2;
        let packet = crate::tests::tcp([10, 244, 1, 2], 40010, [10, 96, 0, 99], 80, SYN);
        assert_eq!(dp.run(&packet).0, TC_ACT_SHOT);
        let flow = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a flow within 5 s")
            .expect("the reader is alive");
        reader.abort();
        assert_eq!(flow.verdict, Verdict::Dropped);
        assert_eq!(flow.drop_reason_name().as_deref(), Some("no_backend"));
        assert_eq!(flow.source, "10.244.1.2:40010".parse().unwrap());
        assert_eq!(flow.destination, "10.96.0.99:80".parse().unwrap());
        assert_eq!(flow.hook, hook::FROM_POD);
        let skew = match flow.time.duration_since(before) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(skew < Duration::from_secs(2), "flow time off by {skew:?}");
        let counters = counters(&dir.0).expect("counters");
        assert!(counters.drops.contains(&("no_backend", 1)), "{counters:?}");
        assert_eq!(counters.flow_events_lost, Some(0));
    }

    #[test]
    fn wall_clock_never_goes_before_the_epoch() {
        let clock = WallClock::with_offset(-10);
        assert_eq!(clock.wall(5), UNIX_EPOCH);
        let now = WallClock::now();
        let mono_now = now.wall(0);
        // Boot was in the past.
        assert!(mono_now <= SystemTime::now());
    }
}
