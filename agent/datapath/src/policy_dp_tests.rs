//! Privileged tests of NetworkPolicy in the tc programs: load the real
//! object with a private pin directory, fill the policy maps from the real
//! compiler (`policy::compile` + `diff`, written by `policy::apply_ops`),
//! run from-pod, to-pod and node-ingress on crafted packets with
//! BPF_PROG_TEST_RUN, and check the verdicts, the conntrack entries that
//! make policy stateful, the drop counter and the flow events in the ring.
//!
//! The world (node1's view): namespaces x, y (pods on node1) and z (a pod
//! on node2), an address outside the cluster, node1's own addresses (node
//! IP and pod gateway) and node2's.
//!
//! Run with `cargo test -p weir-datapath -- --ignored` as root.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::EbpfLoader;
use aya::maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{TestRun, TestRunOptions};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weir_ebpf_common::flow::{
    FLOW_LOST_MAP, FLOWS_MAP, FlowEvent, NO_DROP, VERDICT_DROPPED, VERDICT_FORWARDED, hook,
};
use weir_ebpf_common::policy::{
    DIR_EGRESS, DIR_INGRESS, EndpointKey, IPPROTO_SCTP, POLICY_ID_HOST, POLICY_ID_UNISOLATED,
    map_names as policy_maps,
};
use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_NO_NAT, CT_FLAG_NODEPORT, IPPROTO_TCP,
    IPPROTO_UDP, SERVICE_FLAG_NODEPORT, SKB_MARK_POLICY_JUDGED, ServiceKey, drop_reason,
    program_names,
};

use super::plan::{DesiredServices, Frontend};
use super::policy::{
    Allocations, Compiled, NamedPort, NamespaceInfo, NodeNetwork, ObjectRef, PodInfo, PolicyInput,
    PolicyKernelMaps, PolicyLimits, PolicyMaps, apply_ops, compile, diff,
};
use super::tests::{
    ACK, PinDir, SYN, TC_ACT_OK, TC_ACT_SHOT, check, ct_key, ipv4_frame, load, tcp, udp,
};
use super::{Datapath, EBPF_OBJECT};

// ---- the world ----

const XA: [u8; 4] = [10, 244, 1, 10];
const XB: [u8; 4] = [10, 244, 1, 11];
const XC: [u8; 4] = [10, 244, 1, 12];
const YA: [u8; 4] = [10, 244, 1, 20];
const YC: [u8; 4] = [10, 244, 1, 22];
/// A pod on node2.
const ZA: [u8; 4] = [10, 244, 2, 10];
/// A pod address on node1 that is no endpoint (not compiled yet).
const UNKNOWN: [u8; 4] = [10, 244, 1, 99];
const EXT: [u8; 4] = [192, 0, 2, 10];
const NODE1: [u8; 4] = [172, 30, 0, 11];
const GATEWAY: [u8; 4] = [10, 244, 1, 1];
const NODE2: [u8; 4] = [172, 30, 0, 12];

fn pod(ns: &str, name: &str, ip: [u8; 4], node: &str) -> PodInfo {
    PodInfo {
        pod: ObjectRef::new(ns, name),
        labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
        ip: Some(Ipv4Addr::from(ip)),
        node: Some(node.to_string()),
        host_network: false,
        named_ports: vec![NamedPort {
            name: "serve-81-tcp".into(),
            proto: IPPROTO_TCP,
            port: 81,
        }],
    }
}

fn pods() -> Vec<PodInfo> {
    vec![
        pod("x", "a", XA, "node1"),
        pod("x", "b", XB, "node1"),
        pod("x", "c", XC, "node1"),
        pod("y", "a", YA, "node1"),
        pod("y", "c", YC, "node1"),
        pod("z", "a", ZA, "node2"),
    ]
}

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("valid NetworkPolicy")
}

/// x/b admits: x's pod a on TCP 80; namespace y on SCTP 80; 10.244.2.0/24
/// on the named port serve-81-tcp and UDP 1000-2000. y/c sends only to
/// x/a on UDP 80. Every other pod is not isolated.
fn policies() -> Vec<NetworkPolicy> {
    vec![
        np(
            "x",
            "b-ingress",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}], "ports": [{"port": 80}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                 "ports": [{"protocol": "SCTP", "port": 80}]},
                {"from": [{"ipBlock": {"cidr": "10.244.2.0/24"}}],
                 "ports": [{"port": "serve-81-tcp"}, {"protocol": "UDP", "port": 1000, "endPort": 2000}]}]}),
        ),
        np(
            "y",
            "c-egress",
            json!({"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                    "podSelector": {"matchLabels": {"pod": "a"}}}],
                            "ports": [{"protocol": "UDP", "port": 80}]}]}),
        ),
    ]
}

/// Compiles `policies` for node1.
fn compile_node1(policies: &[NetworkPolicy]) -> Compiled {
    let namespaces: Vec<NamespaceInfo> = ["x", "y", "z"]
        .iter()
        .map(|ns| NamespaceInfo::new(*ns, BTreeMap::from([("ns".to_string(), ns.to_string())])))
        .collect();
    let node = NodeNetwork {
        name: "node1".into(),
        host_ips: vec![NODE1.into(), GATEWAY.into()],
        remote_node_ips: vec![NODE2.into()],
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    };
    let pods = pods();
    let input = PolicyInput {
        policies,
        pods: &pods,
        namespaces: &namespaces,
        node: &node,
    };
    let compiled =
        compile(input, &Allocations::default(), &PolicyLimits::default()).expect("compiles");
    assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    compiled
}

/// Opens a pinned map of the test's datapath.
fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("open pinned {name}: {e}"))
}

/// Writes `compiled` into the datapath's policy maps the way the agent
/// does: diff against what they hold, then apply.
fn enforce(dir: &Path, compiled: &Compiled) {
    let mut maps = PolicyKernelMaps {
        ipcache: LpmTrie::try_from(Map::LpmTrie(pinned(dir, policy_maps::IPCACHE)))
            .expect("ipcache"),
        endpoints: HashMap::try_from(Map::HashMap(pinned(dir, policy_maps::POLICY_ENDPOINTS)))
            .expect("endpoints"),
        policy: LpmTrie::try_from(Map::LpmTrie(pinned(dir, policy_maps::POLICY))).expect("policy"),
    };
    let mut state = PolicyMaps::default();
    let ops = diff(&state, &compiled.maps, &PolicyLimits::default());
    apply_ops(&mut maps, &ops, &mut state).expect("apply policy ops");
}

/// A datapath enforcing `policies()` (and its compile).
fn setup() -> (Datapath, PinDir, Compiled) {
    let (dp, dir) = load();
    let compiled = compile_node1(&policies());
    enforce(&dir.0, &compiled);
    (dp, dir, compiled)
}

fn endpoint_id(compiled: &Compiled, ip: [u8; 4]) -> u16 {
    compiled.maps.endpoints[&EndpointKey {
        addr: u32::from_ne_bytes(ip),
    }]
        .endpoint_id
}

fn policy_id(compiled: &Compiled, ns: &str, name: &str) -> u32 {
    compiled
        .alloc
        .policies
        .get(&ObjectRef::new(ns, name))
        .expect("policy has an id")
}

fn sctp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    // Common header (ports, verification tag, CRC32c left zero: nothing on
    // the way checks it) and an INIT chunk header.
    let mut l4 = vec![0u8; 16];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[12] = 1;
    l4[14..16].copy_from_slice(&4u16.to_be_bytes());
    ipv4_frame(src, dst, IPPROTO_SCTP, l4, None)
}

/// The first packet of a new connection of `proto`.
fn first_packet(proto: u8, src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    match proto {
        IPPROTO_TCP => tcp(src.0, src.1, dst.0, dst.1, SYN),
        IPPROTO_UDP => udp(src.0, src.1, dst.0, dst.1, true),
        _ => sctp(src.0, src.1, dst.0, dst.1),
    }
}

/// `sizeof(struct __sk_buff)`: BPF_PROG_TEST_RUN writes the whole context
/// back (a shorter buffer fails with ENOSPC); `mark` is at offset 8.
const SKB_CTX_LEN: usize = 192;

impl Datapath {
    /// Runs program `name` on `packet` with `skb->mark = mark`: (verdict,
    /// output bytes, mark after the run).
    fn run_marked(&self, name: &str, packet: &[u8], mark: u32) -> (u32, Vec<u8>, u32) {
        let mut ctx_in = [0u8; SKB_CTX_LEN];
        ctx_in[8..12].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let mut out = vec![0u8; packet.len() + 256];
        let result = self
            .program(name)
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        let mark = u32::from_ne_bytes(ctx_out[8..12].try_into().expect("4 bytes"));
        (result.return_value, out, mark)
    }

    fn drops(&self, reason: u32) -> u64 {
        let name = drop_reason::NAMES[reason as usize];
        self.drop_counters()
            .expect("read drop counters")
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, n)| n)
    }
}

/// Every flow event in the ring (drained).
pub(crate) fn flow_events(dir: &Path) -> Vec<FlowEvent> {
    let mut ring = RingBuf::try_from(Map::RingBuf(pinned(dir, FLOWS_MAP))).expect("ring");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(decode(&item));
    }
    out
}

/// A ring record as the `#[repr(C)]` struct (native byte order).
fn decode(b: &[u8]) -> FlowEvent {
    assert_eq!(b.len(), std::mem::size_of::<FlowEvent>(), "record size");
    let u16_at = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    FlowEvent {
        ktime_ns: u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes")),
        saddr: u32_at(8),
        daddr: u32_at(12),
        orig_daddr: u32_at(16),
        sport: u16_at(20),
        dport: u16_at(22),
        orig_dport: u16_at(24),
        proto: b[26],
        verdict: b[27],
        drop_reason: u16_at(28),
        direction: b[30],
        hook: b[31],
        policy_id: u32_at(32),
        endpoint_id: u16_at(36),
        _pad: u16_at(38),
        ifindex: u32_at(40),
        _pad2: u32_at(44),
    }
}

fn addr(ip: [u8; 4]) -> u32 {
    u32::from_ne_bytes(ip)
}

// ---- the tests ----

/// (what, program, protocol, source, destination, destination port,
/// expected).
type Probe = (
    &'static str,
    &'static str,
    u8,
    [u8; 4],
    [u8; 4],
    u16,
    Expect,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Denied,
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn policy_judges_the_first_packet_of_new_connections() {
    use Expect::*;
    let (dp, dir, _) = setup();
    let (from_pod, to_pod) = (program_names::FROM_POD, program_names::TO_POD);
    let cases: &[Probe] = &[
        // Egress of y/c (UDP 80 to x/a only).
        ("egress allowed", from_pod, IPPROTO_UDP, YC, XA, 80, Pass),
        (
            "a UDP rule does not open TCP",
            from_pod,
            IPPROTO_TCP,
            YC,
            XA,
            80,
            Denied,
        ),
        (
            "egress to an unselected pod",
            from_pod,
            IPPROTO_UDP,
            YC,
            XC,
            80,
            Denied,
        ),
        (
            "egress to a pod of another node",
            from_pod,
            IPPROTO_UDP,
            YC,
            ZA,
            80,
            Denied,
        ),
        (
            "egress to the outside",
            from_pod,
            IPPROTO_UDP,
            YC,
            EXT,
            80,
            Denied,
        ),
        (
            "egress to its own node",
            from_pod,
            IPPROTO_TCP,
            YC,
            NODE1,
            22,
            Pass,
        ),
        (
            "egress to another node",
            from_pod,
            IPPROTO_TCP,
            YC,
            NODE2,
            22,
            Denied,
        ),
        // Ingress of x/b, judged in from-pod (local client, same node).
        (
            "ingress allowed, same node",
            from_pod,
            IPPROTO_TCP,
            XA,
            XB,
            80,
            Pass,
        ),
        (
            "ingress on another port, same node",
            from_pod,
            IPPROTO_TCP,
            XA,
            XB,
            81,
            Denied,
        ),
        (
            "ingress from an unselected pod",
            from_pod,
            IPPROTO_TCP,
            XC,
            XB,
            80,
            Denied,
        ),
        ("SCTP port rule", from_pod, IPPROTO_SCTP, YA, XB, 80, Pass),
        (
            "SCTP rule, other port",
            from_pod,
            IPPROTO_SCTP,
            YA,
            XB,
            81,
            Denied,
        ),
        (
            "SCTP rule does not open TCP",
            from_pod,
            IPPROTO_TCP,
            YA,
            XB,
            80,
            Denied,
        ),
        // Ingress of x/b, judged in to-pod (from the stack).
        (
            "ipBlock + named port",
            to_pod,
            IPPROTO_TCP,
            ZA,
            XB,
            81,
            Pass,
        ),
        (
            "ipBlock, other TCP port",
            to_pod,
            IPPROTO_TCP,
            ZA,
            XB,
            80,
            Denied,
        ),
        (
            "endPort range, first port",
            to_pod,
            IPPROTO_UDP,
            ZA,
            XB,
            1000,
            Pass,
        ),
        (
            "endPort range, inside",
            to_pod,
            IPPROTO_UDP,
            ZA,
            XB,
            1536,
            Pass,
        ),
        (
            "endPort range, last port",
            to_pod,
            IPPROTO_UDP,
            ZA,
            XB,
            2000,
            Pass,
        ),
        (
            "below the endPort range",
            to_pod,
            IPPROTO_UDP,
            ZA,
            XB,
            999,
            Denied,
        ),
        (
            "above the endPort range",
            to_pod,
            IPPROTO_UDP,
            ZA,
            XB,
            2001,
            Denied,
        ),
        (
            "ingress from the outside",
            to_pod,
            IPPROTO_TCP,
            EXT,
            XB,
            81,
            Denied,
        ),
        (
            "the node reaches its pod",
            to_pod,
            IPPROTO_TCP,
            NODE1,
            XB,
            8080,
            Pass,
        ),
        (
            "the pod gateway reaches the pod",
            to_pod,
            IPPROTO_TCP,
            GATEWAY,
            XB,
            8080,
            Pass,
        ),
        (
            "another node does not",
            to_pod,
            IPPROTO_TCP,
            NODE2,
            XB,
            8080,
            Denied,
        ),
        // Not isolated, and not enforced.
        (
            "unisolated pod, ingress",
            to_pod,
            IPPROTO_TCP,
            EXT,
            XA,
            443,
            Pass,
        ),
        (
            "unisolated pod, egress",
            from_pod,
            IPPROTO_TCP,
            XA,
            EXT,
            443,
            Pass,
        ),
        (
            "unknown pod address sends",
            from_pod,
            IPPROTO_TCP,
            UNKNOWN,
            EXT,
            443,
            Pass,
        ),
        (
            "unknown pod address receives",
            to_pod,
            IPPROTO_TCP,
            EXT,
            UNKNOWN,
            443,
            Pass,
        ),
    ];
    let mut denied = 0;
    let mut sport = 30000;
    for &(what, program, proto, src, dst, dport, expect) in cases {
        sport += 1;
        let packet = first_packet(proto, (src, sport), (dst, dport));
        let (verdict, out) = dp.run_program(program, &packet);
        let fwd = dp
            .conntrack()
            .get(&ct_key((src, sport), (dst, dport), proto), 0)
            .ok();
        match expect {
            Pass => {
                assert_eq!(verdict, TC_ACT_OK, "{what}: verdict");
                assert_eq!(out, packet, "{what}: untranslated traffic is not rewritten");
                let enforced = src != UNKNOWN && dst != UNKNOWN;
                if enforced {
                    let fwd = fwd.unwrap_or_else(|| panic!("{what}: no conntrack entry"));
                    assert_eq!(fwd.flags, CT_FLAG_NO_NAT, "{what}");
                    assert_eq!(fwd.direction, CT_DIR_FORWARD, "{what}");
                    let rev = dp
                        .conntrack()
                        .get(&ct_key((dst, dport), (src, sport), proto), 0)
                        .unwrap_or_else(|_| panic!("{what}: no reverse entry"));
                    assert_eq!(rev.direction, CT_DIR_REVERSE, "{what}");
                } else {
                    assert!(fwd.is_none(), "{what}: unenforced traffic is not tracked");
                }
            }
            Denied => {
                denied += 1;
                assert_eq!(verdict, TC_ACT_SHOT, "{what}: verdict");
                assert!(fwd.is_none(), "{what}: a denied connection is not tracked");
            }
        }
        assert_eq!(
            dp.drops(drop_reason::POLICY_DENIED),
            denied,
            "{what}: policy_denied counts every denial"
        );
    }
    // One event per judged direction: a from-pod probe between two
    // endpoints is judged twice (egress, then ingress) unless egress denies.
    let events = flow_events(&dir.0);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.verdict == VERDICT_DROPPED)
            .count() as u64,
        denied
    );
    assert!(
        events
            .iter()
            .all(|e| e.saddr != addr(UNKNOWN) && e.daddr != addr(UNKNOWN)),
        "no verdict, no event, for unenforced traffic"
    );
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn replies_of_allowed_connections_pass_where_new_connections_are_denied() {
    let (dp, _dir, _) = setup();
    let to_pod = program_names::TO_POD;
    // (what, program opening the connection, client, server, program seeing
    // the reply). Each server's policy denies the reply's tuple as a new
    // connection.
    let cases = [
        // y/c's egress admits nothing on TCP; x/a -> y/c is allowed.
        (
            "from-pod reply",
            program_names::FROM_POD,
            (XA, 40000),
            (YC, 80),
            program_names::FROM_POD,
        ),
        // x/b's ingress admits z/a only on 81/TCP and UDP 1000-2000.
        (
            "to-pod reply",
            program_names::FROM_POD,
            (XB, 40000),
            (ZA, 8080),
            to_pod,
        ),
        // A connection from another node, allowed at to-pod, answered through from-pod.
        (
            "reply to a remote client",
            to_pod,
            (ZA, 5000),
            (YC, 9000),
            program_names::FROM_POD,
        ),
    ];
    for (what, opener, client, server, reply_hook) in cases {
        let syn = tcp(client.0, client.1, server.0, server.1, SYN);
        assert_eq!(dp.run_program(opener, &syn).0, TC_ACT_OK, "{what}: SYN");
        let reply = tcp(server.0, server.1, client.0, client.1, SYN | ACK);
        assert_eq!(
            dp.run_program(reply_hook, &reply),
            (TC_ACT_OK, reply.clone()),
            "{what}: the reply passes on the conntrack entry, untouched"
        );
        let ack = tcp(client.0, client.1, server.0, server.1, ACK);
        assert_eq!(dp.run_program(opener, &ack).0, TC_ACT_OK, "{what}: ACK");
        let before = dp.drops(drop_reason::POLICY_DENIED);
        let stray = tcp(server.0, server.1, client.0, client.1 + 1, SYN | ACK);
        assert_eq!(
            dp.run_program(reply_hook, &stray).0,
            TC_ACT_SHOT,
            "{what}: the same packet without the connection is judged and denied"
        );
        assert_eq!(dp.drops(drop_reason::POLICY_DENIED), before + 1, "{what}");
    }

    // UDP: y/c -> x/a:80 is allowed, x/a's answers follow it into y/c.
    let request = udp(YC, 5353, XA, 80, true);
    assert_eq!(dp.run(&request).0, TC_ACT_OK);
    let answer = udp(XA, 80, YC, 5353, true);
    assert_eq!(dp.run(&answer).0, TC_ACT_OK, "the answer leaves x/a");
    assert_eq!(
        dp.run_program(to_pod, &answer).0,
        TC_ACT_OK,
        "and enters y/c"
    );
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn services_are_judged_on_the_backend_and_the_mark_spares_a_second_judgement() {
    let (mut dp, dir, compiled) = setup();
    let vip = |last| [10, 96, 0, last];
    let mut desired: DesiredServices = BTreeMap::from([
        (
            ServiceKey::new(vip(10), 80, IPPROTO_TCP),
            vec![Backend::new(XB, 80)].into(),
        ),
        (
            ServiceKey::new(vip(11), 80, IPPROTO_TCP),
            vec![Backend::new(XB, 81)].into(),
        ),
        (
            ServiceKey::new(vip(12), 81, IPPROTO_TCP),
            vec![Backend::new(XB, 80)].into(),
        ),
    ]);
    desired.insert(
        ServiceKey::new(NODE1, 30081, IPPROTO_TCP),
        Frontend {
            backends: vec![Backend::new(XB, 81)],
            flags: SERVICE_FLAG_NODEPORT,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    );
    dp.seed(&desired);
    let from_pod = program_names::FROM_POD;

    // Allowed on the backend's port (80), translated, and marked judged.
    let syn = tcp(XA, 41000, vip(10), 80, SYN);
    let (verdict, out, mark) = dp.run_marked(from_pod, &syn, 0);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(check(&out).dst, (XB, 80), "translated to the backend");
    assert_ne!(
        mark & SKB_MARK_POLICY_JUDGED,
        0,
        "from-pod marks what it judged"
    );
    let judged = flow_events(&dir.0);
    assert_eq!(judged.len(), 2, "x/a's egress, x/b's ingress: {judged:?}");
    assert_eq!(
        (judged[0].direction, judged[0].policy_id),
        (DIR_EGRESS, POLICY_ID_UNISOLATED)
    );
    let e = judged[1];
    assert_eq!(
        (e.saddr, e.daddr, u16::from_be(e.dport)),
        (addr(XA), addr(XB), 80),
        "the verdict names the backend"
    );
    assert_eq!(
        (e.orig_daddr, u16::from_be(e.orig_dport)),
        (addr(vip(10)), 80),
        "and the frontend"
    );
    assert_eq!(
        (e.verdict, e.direction, e.hook, e.drop_reason),
        (VERDICT_FORWARDED, DIR_INGRESS, hook::FROM_POD, NO_DROP)
    );
    assert_eq!(e.policy_id, policy_id(&compiled, "x", "b-ingress"));
    assert_eq!(e.endpoint_id, endpoint_id(&compiled, XB));

    // Into x/b: with the mark, and as a later packet, no second judgement.
    let to_pod = program_names::TO_POD;
    let (verdict, _, _) = dp.run_marked(to_pod, &out, mark);
    assert_eq!(verdict, TC_ACT_OK);
    let (verdict, ack, mark) = dp.run_marked(from_pod, &tcp(XA, 41000, vip(10), 80, ACK), 0);
    assert_eq!(verdict, TC_ACT_OK);
    assert_ne!(
        mark & SKB_MARK_POLICY_JUDGED,
        0,
        "from-pod marks every packet of a tracked connection"
    );
    assert_eq!(dp.run_marked(to_pod, &ack, mark).0, TC_ACT_OK);
    // Unmarked (e.g. the client on another node): conntrack has it.
    assert_eq!(dp.run_program(to_pod, &ack).0, TC_ACT_OK);
    assert!(flow_events(&dir.0).is_empty(), "nothing judged twice");
    // Without the mark the same SYN is judged again (it came from elsewhere).
    let (verdict, _, _) = dp.run_marked(to_pod, &out, 0);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(flow_events(&dir.0).len(), 1);

    // x/b reaching itself through a service (hairpin): its to-pod sees the
    // frontend as the source, which x/b's ingress does not admit; the mark
    // exempts it.
    let hairpin = tcp(XB, 41004, vip(10), 80, SYN);
    let (verdict, out, mark) = dp.run_marked(from_pod, &hairpin, 0);
    assert_eq!(verdict, TC_ACT_OK, "hairpin");
    assert_eq!(check(&out).src, (vip(10), 41004), "source-translated");
    assert_eq!(
        dp.run_marked(to_pod, &out, mark).0,
        TC_ACT_OK,
        "hairpin into itself"
    );
    assert_eq!(
        dp.run_marked(to_pod, &out, 0).0,
        TC_ACT_SHOT,
        "control: the same packet from elsewhere is denied"
    );
    let _ = flow_events(&dir.0);

    let cases = [
        ("denied client", XC, 41001, vip(10), 80, TC_ACT_SHOT),
        (
            "judged on the backend port, not the frontend's",
            XA,
            41002,
            vip(11),
            80,
            TC_ACT_SHOT,
        ),
        (
            "frontend port denied, backend port allowed",
            XA,
            41003,
            vip(12),
            81,
            TC_ACT_OK,
        ),
    ];
    for (what, client, sport, frontend, port, want) in cases {
        let (verdict, _) = dp.run(&tcp(client, sport, frontend, port, SYN));
        assert_eq!(verdict, want, "{what}");
        let tracked = dp
            .conntrack()
            .get(&ct_key((client, sport), (frontend, port), IPPROTO_TCP), 0)
            .is_ok();
        assert_eq!(tracked, want == TC_ACT_OK, "{what}: conntrack");
    }

    // NodePort to a local backend: judged with the client's address, before
    // SNAT would make every client this node. (The redirect's FIB lookup
    // has no route here; the conntrack entry shows the connection went on.)
    let node_ingress = program_names::NODE_INGRESS;
    let denied_before = dp.drops(drop_reason::POLICY_DENIED);
    let _ = flow_events(&dir.0);
    let (verdict, _) = dp.run_program(node_ingress, &tcp(EXT, 42000, NODE1, 30081, SYN));
    assert_eq!(verdict, TC_ACT_SHOT, "the outside may not reach x/b");
    assert_eq!(dp.drops(drop_reason::POLICY_DENIED), denied_before + 1);
    let events = flow_events(&dir.0);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].hook,
            events[0].saddr,
            events[0].daddr,
            events[0].orig_daddr
        ),
        (hook::NODE_INGRESS, addr(EXT), addr(XB), addr(NODE1))
    );
    assert!(
        dp.conntrack()
            .get(&ct_key((EXT, 42000), (NODE1, 30081), IPPROTO_TCP), 0)
            .is_err()
    );
    let _ = dp.run_program(node_ingress, &tcp(ZA, 42001, NODE1, 30081, SYN));
    assert_eq!(
        dp.drops(drop_reason::POLICY_DENIED),
        denied_before + 1,
        "z/a's block may reach serve-81-tcp"
    );
    let fwd = dp
        .conntrack()
        .get(&ct_key((ZA, 42001), (NODE1, 30081), IPPROTO_TCP), 0)
        .expect("the allowed NodePort connection is tracked");
    assert_ne!(fwd.flags & CT_FLAG_NODEPORT, 0);
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn verdicts_and_drops_are_flow_events_and_a_full_ring_counts_losses() {
    let (mut dp, dir, compiled) = setup();
    let _ = flow_events(&dir.0);
    let xb = endpoint_id(&compiled, XB);
    let yc = endpoint_id(&compiled, YC);

    // Denied at x/b's ingress, after x/a's (unisolated) egress allowed it.
    let (verdict, _) = dp.run(&tcp(XC, 43000, XB, 80, SYN));
    assert_eq!(verdict, TC_ACT_SHOT);
    let events = flow_events(&dir.0);
    let template = FlowEvent {
        ktime_ns: 0,
        saddr: addr(XC),
        daddr: addr(XB),
        orig_daddr: 0,
        sport: 43000u16.to_be(),
        dport: 80u16.to_be(),
        orig_dport: 0,
        proto: IPPROTO_TCP,
        verdict: VERDICT_FORWARDED,
        drop_reason: NO_DROP,
        direction: DIR_EGRESS,
        hook: hook::FROM_POD,
        policy_id: POLICY_ID_UNISOLATED,
        endpoint_id: endpoint_id(&compiled, XC),
        _pad: 0,
        ifindex: events.first().map_or(0, |e| e.ifindex),
        _pad2: 0,
    };
    let no_time = |e: &FlowEvent| FlowEvent { ktime_ns: 0, ..*e };
    assert_eq!(
        events.iter().map(no_time).collect::<Vec<_>>(),
        vec![
            template,
            FlowEvent {
                verdict: VERDICT_DROPPED,
                drop_reason: drop_reason::POLICY_DENIED as u16,
                direction: DIR_INGRESS,
                policy_id: 0,
                endpoint_id: xb,
                ..template
            },
        ]
    );
    assert!(events.iter().all(|e| e.ktime_ns > 0 && e.ifindex > 0));

    // The node's own traffic is allowed by the implicit HOST entry.
    assert_eq!(dp.run(&tcp(YC, 43001, GATEWAY, 53, SYN)).0, TC_ACT_OK);
    let events = flow_events(&dir.0);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].policy_id,
            events[0].endpoint_id,
            events[0].direction
        ),
        (POLICY_ID_HOST, yc, DIR_EGRESS)
    );

    // Other drops are events too (here: a service without backends).
    let empty = ServiceKey::new([10, 96, 0, 99], 80, IPPROTO_TCP);
    dp.seed(&BTreeMap::from([(empty, Frontend::default())]));
    assert_eq!(
        dp.run(&tcp(XA, 43002, [10, 96, 0, 99], 80, SYN)).0,
        TC_ACT_SHOT
    );
    let events = flow_events(&dir.0);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].verdict, events[0].drop_reason, events[0].hook),
        (
            VERDICT_DROPPED,
            drop_reason::NO_BACKEND as u16,
            hook::FROM_POD
        )
    );
    assert_eq!(
        (events[0].saddr, events[0].daddr),
        (addr(XA), addr([10, 96, 0, 99]))
    );

    // Nobody reads the ring: once it is full, events are counted as lost
    // and packets are still judged (each run below is denied).
    let lost = |dir: &Path| -> u64 {
        let map = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(pinned(dir, FLOW_LOST_MAP)))
            .expect("lost counter");
        map.get(&0, 0).expect("index 0").iter().sum()
    };
    assert_eq!(lost(&dir.0), 0);
    let packet = tcp(XC, 43003, XB, 80, SYN);
    let runs = 40_000;
    let result = dp
        .program(program_names::FROM_POD)
        .test_run(TestRunOptions {
            data_in: Some(&packet),
            repeat: runs,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(result.return_value, TC_ACT_SHOT);
    let kept = flow_events(&dir.0).len() as u64;
    assert!(kept > 1000, "{kept} events fit");
    assert_eq!(
        kept + lost(&dir.0),
        2 * u64::from(runs),
        "every event was either kept or counted as lost"
    );
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn pinned_policy_maps_take_the_loaders_sizes_when_created() {
    let dir = PinDir::new();
    std::fs::create_dir_all(&dir.0).expect("pin dir");
    let load = |entries: u32| {
        EbpfLoader::new()
            .default_map_pin_directory(&dir.0)
            .map_max_entries(policy_maps::POLICY, entries)
            .map_max_entries(policy_maps::IPCACHE, entries)
            .load(EBPF_OBJECT)
            .expect("load object")
    };
    let size = |name: &str| pinned(&dir.0, name).info().expect("info").max_entries();
    let first = load(1024);
    assert_eq!(size(policy_maps::POLICY), 1024);
    assert_eq!(size(policy_maps::IPCACHE), 1024);
    assert_eq!(
        size(policy_maps::POLICY_ENDPOINTS),
        weir_ebpf_common::policy::POLICY_ENDPOINTS_MAX_ENTRIES,
        "the ABI's default"
    );
    drop(first);
    // aya 0.14 reuses an existing pin as it is: a new size needs the pin
    // removed first (the agent decides when that is safe).
    let _second = load(2048);
    assert_eq!(size(policy_maps::POLICY), 1024);
}

/// Real traffic: a node namespace and three pods wired like weir-cni does,
/// the datapath attached, x/b admitting x/a only (TCP 8080, UDP 5300).
/// Covers what BPF_PROG_TEST_RUN cannot: the mark surviving from the
/// client's veth to the server's, replies of real sockets passing on the
/// conntrack entries, the node's own connections.
#[test]
#[ignore = "privileged: creates network namespaces and veths, loads and attaches BPF programs"]
fn real_traffic_follows_network_policy() {
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::time::Duration;

    use super::traffic_tests::{Netns, TIMEOUT, echo_lines, exchange, in_netns, run, wire_pod};
    use super::{DatapathConfig, policy::ObjectRef};

    let prefix = format!("weir-test-pol-{}", std::process::id());
    let [node, a, b, c] = ["node", "a", "b", "c"].map(|n| format!("{prefix}-{n}"));
    let _netns = Netns(vec![node.clone(), a.clone(), b.clone(), c.clone()]);
    for ns in [&node, &a, &b, &c] {
        run(&format!("ip netns add {ns}"));
    }
    run(&format!(
        "ip netns exec {node} sysctl -q -w net.ipv4.ip_forward=1"
    ));
    let ips = [
        ("a", [10, 244, 1, 2], &a, "wrtestpola"),
        ("b", [10, 244, 1, 3], &b, "wrtestpolb"),
        ("c", [10, 244, 1, 4], &c, "wrtestpolc"),
    ];
    for (_, ip, ns, veth) in &ips {
        wire_pod(&node, ns, veth, &Ipv4Addr::from(*ip).to_string());
    }
    let serve_tcp = |ns: &str, port: u16| {
        in_netns(ns, move || {
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                std::thread::spawn(move || echo_lines(conn));
            }
        });
    };
    serve_tcp(&b, 8080);
    serve_tcp(&b, 9090);
    serve_tcp(&a, 8080);
    in_netns(&b, || {
        let socket = UdpSocket::bind("0.0.0.0:5300").expect("bind udp");
        let mut buf = [0u8; 64];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    });

    let pins = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: pins.0.clone(),
        cgroup_dir: None,
        node: None,
    };
    let _dp = in_netns(&node, move || {
        let mut dp = Datapath::load(&cfg).expect("load");
        dp.attach_pod_interfaces().expect("attach");
        dp
    })
    .join()
    .expect("node thread");

    let pods: Vec<PodInfo> = ips
        .iter()
        .map(|(name, ip, _, _)| pod("x", name, *ip, "node1"))
        .collect();
    let policies = [np(
        "x",
        "b-from-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
             "ports": [{"port": 8080}, {"protocol": "UDP", "port": 5300}]}]}),
    )];
    let namespaces = [NamespaceInfo::new("x", BTreeMap::new())];
    let node_net = NodeNetwork {
        name: "node1".into(),
        host_ips: vec![GATEWAY.into()],
        remote_node_ips: vec![],
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    };
    let input = PolicyInput {
        policies: &policies,
        pods: &pods,
        namespaces: &namespaces,
        node: &node_net,
    };
    let compiled =
        compile(input, &Allocations::default(), &PolicyLimits::default()).expect("compiles");
    enforce(&pins.0, &compiled);
    let _ = flow_events(&pins.0);

    let try_connect = |ns: &str, to: &'static str| {
        in_netns(ns, move || {
            let addr: SocketAddr = to.parse().expect("addr");
            TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).inspect(|conn| {
                conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            })
        })
        .join()
        .expect("client thread")
    };
    let mut allowed = try_connect(&a, "10.244.1.3:8080").expect("x/a reaches x/b:8080");
    assert_eq!(exchange(&mut allowed, "hello"), "hello");
    let events = flow_events(&pins.0);
    let b_id = compiled
        .alloc
        .policies
        .get(&ObjectRef::new("x", "b-from-a"));
    assert_eq!(
        events
            .iter()
            .map(|e| (e.direction, e.verdict, e.hook, Some(e.policy_id)))
            .collect::<Vec<_>>(),
        [
            (
                DIR_EGRESS,
                VERDICT_FORWARDED,
                hook::FROM_POD,
                Some(POLICY_ID_UNISOLATED)
            ),
            (DIR_INGRESS, VERDICT_FORWARDED, hook::FROM_POD, b_id),
        ],
        "judged once, in from-pod; the mark spares to-pod a second verdict"
    );
    assert!(
        try_connect(&a, "10.244.1.3:9090").is_err(),
        "x/a may not reach x/b:9090"
    );
    assert!(
        try_connect(&c, "10.244.1.3:8080").is_err(),
        "x/c may not reach x/b"
    );
    let mut probe = try_connect(&node, "10.244.1.3:8080").expect("the node reaches its pod");
    assert_eq!(exchange(&mut probe, "probe"), "probe");
    let mut back = try_connect(&b, "10.244.1.2:8080").expect("x/b reaches x/a");
    assert_eq!(exchange(&mut back, "back"), "back");
    assert_eq!(
        exchange(&mut allowed, "still"),
        "still",
        "the first connection is unaffected"
    );
    let echo = in_netns(&a, || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket.send_to(b"ping", "10.244.1.3:5300").expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).expect("the UDP reply passes");
        buf[..n].to_vec()
    })
    .join()
    .expect("udp client");
    assert_eq!(echo, b"ping");
}

/// `packet` as a fragment: the first (MF set, offset 0) or a later one
/// (offset `offset` x 8 bytes). The IPv4 checksum is left stale: nothing on
/// the way checks it.
fn fragment(mut packet: Vec<u8>, offset: u16) -> Vec<u8> {
    let field = 0x2000 | offset;
    packet[14 + 6..14 + 8].copy_from_slice(&field.to_be_bytes());
    packet
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn first_fragments_are_judged_later_ones_pass() {
    let (dp, _dir, _) = setup();
    let to_pod = program_names::TO_POD;
    let from_pod = program_names::FROM_POD;
    // A first fragment whose L4 header is cut after 2 bytes: no ports.
    let tiny = {
        let mut p = fragment(udp(ZA, 5000, XB, 1500, true), 0);
        p.truncate(14 + 20 + 2);
        p[14 + 2..14 + 4].copy_from_slice(&22u16.to_be_bytes());
        p
    };
    let cases = [
        (
            "first fragment to an allowed port",
            to_pod,
            fragment(udp(ZA, 5001, XB, 1500, true), 0),
            TC_ACT_OK,
        ),
        (
            "first fragment to a denied port",
            to_pod,
            fragment(udp(ZA, 5002, XB, 999, true), 0),
            TC_ACT_SHOT,
        ),
        ("first fragment without ports", to_pod, tiny, TC_ACT_SHOT),
        (
            "later fragment (no ports to judge; cannot be reassembled alone)",
            to_pod,
            fragment(udp(ZA, 5003, XB, 999, true), 185),
            TC_ACT_OK,
        ),
        (
            "first fragment, denied egress",
            from_pod,
            fragment(udp(YC, 5004, XC, 80, true), 0),
            TC_ACT_SHOT,
        ),
        (
            "first fragment, allowed egress",
            from_pod,
            fragment(udp(YC, 5005, XA, 80, true), 0),
            TC_ACT_OK,
        ),
    ];
    let mut denied = 0;
    for (what, program, packet, want) in cases {
        let (verdict, out) = dp.run_program(program, &packet);
        assert_eq!(verdict, want, "{what}");
        if want == TC_ACT_OK {
            assert_eq!(out, packet, "{what}: fragments are never rewritten");
        } else {
            denied += 1;
        }
        assert_eq!(dp.drops(drop_reason::POLICY_DENIED), denied, "{what}");
    }
    assert!(
        dp.conntrack()
            .get(&ct_key((YC, 5005), (XA, 80), IPPROTO_UDP), 0)
            .is_ok(),
        "an allowed first fragment opens the flow"
    );
}
