//! Privileged tests of the XDP fast path: BPF_PROG_TEST_RUN of the XDP
//! program on crafted frames (inside a test netns whose FIB routes the pod
//! network to a "node2" out of the ingress interface, so `XDP_TX` decisions
//! and MACs are deterministic), and real traffic through veths.
//!
//! Run with `cargo test -p weir-datapath -- --ignored` as root.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use weir_ebpf_common::flow::{VERDICT_DROPPED, hook};
use weir_ebpf_common::maglev::MAGLEV_TABLE_SIZE;
use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_NODEPORT, CT_FLAG_SNAT, IPPROTO_TCP,
    NODEPORT_SNAT_PORT_MIN, SERVICE_FLAG_NODEPORT, ServiceKey, drop_reason, program_names,
};

use super::nodeport_tests::{
    CLIENT, CLUSTER_IP, LB_IP, LOCAL_POD, NODE_IP, REMOTE_POD, ask_tcp, fib_netns, mac, services,
    two_nodes,
};
use super::plan::{DesiredServices, Frontend, maglev};
use super::policy_dp_tests::flow_events;
use super::tests::{ACK, PinDir, SYN, check, ct_key, invariant_bytes, load, tcp, udp};
use super::traffic_tests::{in_netns, run};
use super::{Datapath, DatapathConfig, NodeConfig, attach};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// `bpf_redirect`'s verdict on the tc path.
const TC_ACT_REDIRECT: u32 = 7;

impl Datapath {
    /// Runs the XDP program on `frame` as if it arrived on `ifindex` (of
    /// the calling thread's netns): (verdict, output frame).
    pub(crate) fn run_xdp(&self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let program: &Xdp = self
            .ebpf
            .program(program_names::NODE_XDP)
            .expect("XDP program in object")
            .try_into()
            .expect("an XDP program");
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&md),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }
}

/// The ifindex of `name` in the calling thread's netns.
pub(crate) fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).expect("interface")
}

/// Enters netns `name` on the current thread (a scoped test thread).
pub(crate) fn enter(name: &str) {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// The frame without Ethernet addresses, IPv4/L4 addresses, ports and
/// checksums: what forwarding must not change.
fn payload_bytes(frame: &[u8]) -> Vec<u8> {
    invariant_bytes(frame)[12..].to_vec()
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn xdp_forwards_remote_backends_and_passes_the_rest() {
    let (mut dp, dir) = load();
    dp.seed(&services());
    dp.maps
        .set_node(Some(NODE_IP.into()), Some(mac(0x0b)))
        .expect("node facts");
    let ns_name = format!("wdp8-xdp-{}", std::process::id());
    let _ns = fib_netns(&ns_name);
    // A local pod behind another interface of the node.
    run(&format!(
        "ip -n {ns_name} route add 10.244.1.0/24 dev wdp2v1"
    ));

    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&ns_name);
                let eth = ifindex("wdp2v0");
                let xdp = |frame: &[u8]| dp.run_xdp(frame, eth);

                // Remote backend: DNAT + SNAT to the node, MACs of the next
                // hop, back out of the same interface.
                let syn = tcp(CLIENT, 40000, NODE_IP, 30080, SYN);
                let (verdict, out) = xdp(&syn);
                assert_eq!(verdict, XDP_TX, "SYN to a NodePort with a remote backend");
                let seen = check(&out);
                assert_eq!(seen.dst, (REMOTE_POD, 8080));
                assert_eq!(seen.src.0, NODE_IP, "source translated to the node");
                let nat_port = seen.src.1;
                assert!(nat_port >= NODEPORT_SNAT_PORT_MIN, "SNAT port {nat_port}");
                assert_eq!(out[0..6], mac(0x0c), "to node2's MAC");
                assert_eq!(out[6..12], mac(0x0b), "from the node's MAC");
                assert_eq!(
                    payload_bytes(&out),
                    payload_bytes(&syn),
                    "only NAT fields change"
                );

                // The state is tc's: the same entries node-ingress writes.
                let forward = dp
                    .conntrack()
                    .get(&ct_key((CLIENT, 40000), (NODE_IP, 30080), IPPROTO_TCP), 0)
                    .expect("forward entry");
                assert_eq!(forward.direction, CT_DIR_FORWARD);
                assert_eq!(forward.flags, CT_FLAG_NODEPORT | CT_FLAG_SNAT);
                let reverse = dp
                    .conntrack()
                    .get(
                        &ct_key((REMOTE_POD, 8080), (NODE_IP, nat_port), IPPROTO_TCP),
                        0,
                    )
                    .expect("reverse entry");
                assert_eq!(reverse.direction, CT_DIR_REVERSE);

                // A retransmitted SYN keeps its SNAT port.
                let (verdict, again) = xdp(&syn);
                assert_eq!(verdict, XDP_TX);
                assert_eq!(check(&again).src, (NODE_IP, nat_port));

                // The backend's reply is translated back to the client.
                let reply = tcp(REMOTE_POD, 8080, NODE_IP, nat_port, SYN | ACK);
                let (verdict, out) = xdp(&reply);
                assert_eq!(verdict, XDP_TX, "reply of the remote backend");
                let seen = check(&out);
                assert_eq!((seen.src, seen.dst), ((NODE_IP, 30080), (CLIENT, 40000)));
                assert_eq!(out[0..6], mac(0x64), "to the client's MAC");
                assert_eq!(out[6..12], mac(0x0b));

                // The client's next packet follows conntrack, in XDP and, if
                // it reaches tc (e.g. XDP detached), identically there.
                let ack = tcp(CLIENT, 40000, NODE_IP, 30080, ACK);
                let (verdict, out) = xdp(&ack);
                assert_eq!(verdict, XDP_TX);
                let seen = check(&out);
                assert_eq!(
                    (seen.src, seen.dst),
                    ((NODE_IP, nat_port), (REMOTE_POD, 8080))
                );
                let (verdict, tc_out) = dp.run_program(program_names::NODE_INGRESS, &ack);
                assert_eq!(verdict, TC_ACT_REDIRECT);
                assert_eq!(check(&tc_out), seen, "tc translates XDP's connection alike");

                // UDP, with and without checksum.
                for with_csum in [true, false] {
                    let (verdict, out) = xdp(&udp(CLIENT, 5353, NODE_IP, 30053, with_csum));
                    assert_eq!(verdict, XDP_TX, "UDP NodePort (checksum {with_csum})");
                    let seen = check(&out);
                    assert_eq!(seen.dst, (REMOTE_POD, 5300));
                    assert_eq!(seen.src.0, NODE_IP);
                    let l4_csum = &out[14 + 20 + 6..14 + 20 + 8];
                    assert_eq!(
                        l4_csum == [0, 0],
                        !with_csum,
                        "a zero UDP checksum stays zero"
                    );
                }

                // loadBalancerSourceRanges: outside -> dropped early, counted.
                let (verdict, out) = xdp(&tcp(CLIENT, 40020, LB_IP, 443, SYN));
                assert_eq!(verdict, XDP_TX, "172.30.0.100 is in 172.30.0.96/29");
                assert_eq!(check(&out).dst, (REMOTE_POD, 8080));
                let (verdict, _) = xdp(&tcp([172, 30, 0, 104], 40021, LB_IP, 443, SYN));
                assert_eq!(verdict, XDP_DROP, "outside the source ranges");
                let drops = dp.drop_counters().expect("drops");
                assert!(drops.contains(&("source_range", 1)), "{drops:?}");
                let events: Vec<_> = flow_events(&dir.0)
                    .into_iter()
                    .filter(|e| e.hook == hook::XDP)
                    .map(|e| (e.verdict, e.drop_reason, e.saddr, e.ifindex))
                    .collect();
                assert_eq!(
                    events,
                    [(
                        VERDICT_DROPPED,
                        drop_reason::SOURCE_RANGE as u16,
                        u32::from_ne_bytes([172, 30, 0, 104]),
                        eth
                    )],
                    "the drop is a flow event of the XDP hook"
                );

                // externalTrafficPolicy Local without a local backend: dropped.
                let (verdict, _) = xdp(&tcp(CLIENT, 40030, NODE_IP, 30083, SYN));
                assert_eq!(verdict, XDP_DROP, "no backend: the node does not answer");

                struct Passed {
                    name: &'static str,
                    frame: Vec<u8>,
                }
                let ip_options = {
                    // IHL 6: one 4-byte option (NOPs) before the TCP header.
                    let mut f = tcp(CLIENT, 40011, NODE_IP, 30080, SYN);
                    f[14] = 0x46;
                    f.splice(34..34, [1u8, 1, 1, 1]);
                    f
                };
                let arp = {
                    let mut p = vec![0xff; 6];
                    p.extend_from_slice(&mac(0x64));
                    p.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
                    p.extend_from_slice(&mac(0x64));
                    p.extend_from_slice(&CLIENT);
                    p.extend_from_slice(&[0; 6]);
                    p.extend_from_slice(&LB_IP);
                    p
                };
                let cases = [
                    Passed {
                        name: "backend on this node: tc's job",
                        frame: tcp(CLIENT, 40001, NODE_IP, 30081, SYN),
                    },
                    Passed {
                        name: "externalTrafficPolicy Local: tc's job",
                        frame: tcp(CLIENT, 40002, NODE_IP, 30082, SYN),
                    },
                    Passed {
                        name: "ClusterIPs are not served from outside",
                        frame: tcp(CLIENT, 40004, CLUSTER_IP, 80, SYN),
                    },
                    Passed {
                        name: "a node port without a service",
                        frame: tcp(CLIENT, 40005, NODE_IP, 30099, SYN),
                    },
                    Passed {
                        name: "a TCP NodePort number over UDP",
                        frame: udp(CLIENT, 40006, NODE_IP, 30080, true),
                    },
                    Passed {
                        name: "an IPv4 fragment (MF)",
                        frame: {
                            let mut f = tcp(CLIENT, 40007, NODE_IP, 30080, SYN);
                            f[14 + 6] |= 0x20;
                            f
                        },
                    },
                    Passed {
                        name: "a non-first IPv4 fragment",
                        frame: {
                            let mut f = tcp(CLIENT, 40008, NODE_IP, 30080, SYN);
                            f[14 + 7] = 0x10;
                            f
                        },
                    },
                    Passed {
                        name: "IPv4 with options",
                        frame: ip_options,
                    },
                    Passed {
                        name: "a truncated TCP header",
                        frame: tcp(CLIENT, 40009, NODE_IP, 30080, SYN)[..14 + 20 + 10].to_vec(),
                    },
                    Passed {
                        name: "a truncated IPv4 header",
                        frame: tcp(CLIENT, 40010, NODE_IP, 30080, SYN)[..14 + 12].to_vec(),
                    },
                    Passed {
                        name: "IPv6",
                        frame: {
                            let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
                            p.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
                            p.extend_from_slice(&[0u8; 32]);
                            p.extend_from_slice(&tcp(CLIENT, 40012, NODE_IP, 30080, SYN)[34..]);
                            p
                        },
                    },
                    Passed {
                        name: "ARP for an owned LoadBalancer IP (tc answers it)",
                        frame: arp,
                    },
                    Passed {
                        name: "ICMP",
                        frame: {
                            let mut f = tcp(CLIENT, 40013, NODE_IP, 30080, SYN);
                            f[14 + 9] = 1;
                            f
                        },
                    },
                    Passed {
                        name: "a reply to a pod's own connection (no NodePort entry)",
                        frame: tcp(REMOTE_POD, 8080, [10, 244, 1, 9], 41000, SYN | ACK),
                    },
                ];
                for case in cases {
                    let before = dp.conntrack().keys().count();
                    let (verdict, out) = xdp(&case.frame);
                    assert_eq!(verdict, XDP_PASS, "{}", case.name);
                    assert_eq!(out, case.frame, "{}: must be untouched", case.name);
                    assert_eq!(
                        dp.conntrack().keys().count(),
                        before,
                        "{}: no state before tc decides",
                        case.name
                    );
                }
                let counters = dp.xdp_counters().expect("XDP counters");
                let count = |name: &str| counters.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
                // TX: SYN, retransmitted SYN, reply, ACK, 2 UDP, in-range LB;
                // drops: source range, no backend; passes: the table above.
                assert_eq!(count("tx"), Some(7), "{counters:?}");
                assert_eq!(count("drop"), Some(2), "{counters:?}");
                assert_eq!(count("pass"), Some(14), "{counters:?}");
                // The local backend's connection is then tc's, which translates it.
                let (verdict, _) = dp.run_program(
                    program_names::NODE_INGRESS,
                    &tcp(CLIENT, 40001, NODE_IP, 30081, SYN),
                );
                assert_ne!(verdict, 2, "tc serves the local backend");
                let _ = LOCAL_POD;
            })
            .join()
            .expect("netns thread");
    });
}

/// murmur3's finaliser over the 5-tuple, as `lb::flow_hash` computes it
/// from the raw (network order) header fields.
fn flow_hash(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8) -> u32 {
    let saddr = u32::from_ne_bytes(src.0);
    let daddr = u32::from_ne_bytes(dst.0);
    let ports = (u32::from(src.1.to_be()) << 16) | u32::from(dst.1.to_be());
    let mut h = saddr ^ daddr.rotate_left(13) ^ ports ^ u32::from(proto).rotate_left(7);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn xdp_same_flow_same_backend_on_every_node() {
    // A LoadBalancer IP served by eight remote backends, on two nodes with
    // their own maps and programs (the same flow can reach either).
    let backends: Vec<Backend> = (2..10)
        .map(|i| Backend::new([10, 244, 2, i], 8080))
        .collect();
    let frontend = ServiceKey::new(LB_IP, 80, IPPROTO_TCP);
    let desired: DesiredServices = BTreeMap::from([(
        frontend,
        Frontend {
            backends: backends.clone(),
            flags: SERVICE_FLAG_NODEPORT,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    )]);
    let (mut node_a, _dir_a) = load();
    let (mut node_b, _dir_b) = load();
    // Node B has seen another set first, so its slot numbers differ.
    node_b.seed(&BTreeMap::from([(
        frontend,
        Frontend::from(vec![Backend::new([10, 244, 2, 99], 8080)]),
    )]));
    for (node, last) in [(&mut node_a, 0x0b), (&mut node_b, 0x0d)] {
        node.seed(&desired);
        node.maps
            .set_node(Some(NODE_IP.into()), Some(mac(last)))
            .expect("node facts");
    }
    let table = maglev::datapath_table(&backends).expect("table");
    let ns_name = format!("wdp8-mgl-{}", std::process::id());
    let _ns = fib_netns(&ns_name);

    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&ns_name);
                let eth = ifindex("wdp2v0");
                let mut chosen = std::collections::BTreeSet::new();
                for port in 40000..40064u16 {
                    let syn = tcp(CLIENT, port, LB_IP, 80, SYN);
                    let (va, out_a) = node_a.run_xdp(&syn, eth);
                    let (vb, out_b) = node_b.run_xdp(&syn, eth);
                    assert_eq!((va, vb), (XDP_TX, XDP_TX), "port {port}");
                    let (a, b) = (check(&out_a).dst, check(&out_b).dst);
                    assert_eq!(a, b, "client port {port}: both nodes pick one backend");
                    // ... the one the Maglev table gives the flow's hash.
                    let hash = flow_hash((CLIENT, port), (LB_IP, 80), IPPROTO_TCP);
                    let want = backends[usize::from(table[(hash % MAGLEV_TABLE_SIZE) as usize])];
                    assert_eq!(
                        Backend::new(a.0, a.1),
                        want,
                        "client port {port}: the Maglev choice"
                    );
                    // tc node-ingress (a fresh port, so no conntrack) agrees.
                    let syn = tcp(CLIENT, port + 1000, LB_IP, 80, SYN);
                    let (_, out_tc) = node_a.run_program(program_names::NODE_INGRESS, &syn);
                    let (_, out_x) = node_b.run_xdp(&syn, eth);
                    assert_eq!(check(&out_tc).dst, check(&out_x).dst, "tc and XDP agree");
                    chosen.insert(a);
                }
                assert!(
                    chosen.len() >= 6,
                    "64 flows spread over the backends: {chosen:?}"
                );
            })
            .join()
            .expect("netns thread");
    });
    // Tables exist for the sets in use only: node B's first set is gone.
    for node in [&node_a, &node_b] {
        let slots = node.maglev.slots();
        assert_eq!(slots.len(), 1, "{slots:?}");
        let slot = *slots.iter().next().expect("one");
        let stored = node.maglev.get(slot).expect("table");
        assert_eq!(stored.entries.as_slice(), table.as_slice());
    }
}

#[test]
#[ignore = "privileged: creates network namespaces, loads and attaches BPF programs (root)"]
fn xdp_forwards_real_traffic_to_a_remote_node_without_tc() {
    let ([_br, ext, n1, _n2, _pa, _pb], _netns) = two_nodes("wdp8-x");
    let pins = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: pins.0.clone(),
        cgroup_dir: None,
        node: Some(NodeConfig {
            name: "node1".into(),
            ip: NODE_IP.into(),
            interface: "eth0".into(),
            xdp_mode: crate::XdpAttachMode::Auto,
        }),
    };
    let mut dp: Datapath = in_netns(&n1, move || {
        let mut dp = Datapath::load(&cfg).expect("load");
        dp.attach_pod_interfaces().expect("attach pods");
        dp
    })
    .join()
    .expect("node thread");
    dp.seed(&services());
    // Take tc node-ingress off the interface: whatever NodePort traffic
    // still works was forwarded by XDP, in both directions.
    let (_, tc_link) = dp.node.take().expect("node attachment");
    attach::release(tc_link);
    // XDP forwards only to resolved neighbours (it leaves resolution to tc's
    // bpf_redirect_neigh, absent here): let node1 meet node2 and the client.
    in_netns(&n1, || {
        let udp = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for peer in [[172, 30, 0, 12], [172, 30, 0, 100]] {
            udp.send_to(b"hello", SocketAddr::from((peer, 9)))
                .expect("send");
        }
    })
    .join()
    .expect("neighbour thread");
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(
        ask_tcp(&ext, 30080).ok().as_deref(),
        Some("172.30.0.11"),
        "TCP to a NodePort whose backend is on node2, SNAT to node1"
    );
    let tx = |dp: &Datapath| {
        dp.xdp_counters()
            .expect("XDP counters")
            .into_iter()
            .find(|(name, _)| *name == "tx")
            .map_or(0, |(_, count)| count)
    };
    // Both directions of the handshake, the request and the answer, the FINs.
    assert!(tx(&dp) >= 6, "XDP forwarded the connection: {}", tx(&dp));
    let reply = in_netns(&ext, || {
        let udp = UdpSocket::bind("0.0.0.0:0").expect("bind");
        udp.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        udp.send_to(b"q", SocketAddr::from((NODE_IP, 30053)))
            .expect("send");
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).expect("UDP NodePort reply");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    })
    .join()
    .expect("udp client");
    assert_eq!(
        reply,
        ("172.30.0.11".to_owned(), SocketAddr::from((NODE_IP, 30053))),
        "UDP through XDP both ways"
    );
    // A backend on node1 is tc's job: without tc the stack refuses it.
    assert!(
        ask_tcp(&ext, 30081).is_err(),
        "XDP passed the local backend's connection to the (absent) tc program"
    );
    drop(dp);
    drop(pins);
}

#[test]
#[ignore = "privileged: creates a network namespace and a veth, attaches XDP (root)"]
fn xdp_link_outlives_the_agent_and_is_adopted_by_the_next() {
    let dir = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: dir.0.clone(),
        cgroup_dir: None,
        node: Some(NodeConfig {
            name: "node1".into(),
            ip: NODE_IP.into(),
            interface: "wdp8e0".into(),
            xdp_mode: crate::XdpAttachMode::Auto,
        }),
    };
    // A thread in a fresh netns: the namespace and its veth vanish with it.
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        run("ip link add wdp8e0 type veth peer name wdp8e1");
        run("ip link set wdp8e0 up");
        // (mode, program id) of the XDP program on the interface, per iproute2.
        let xdp = || -> Option<(u64, u64)> {
            let out = std::process::Command::new("ip")
                .args(["-j", "link", "show", "dev", "wdp8e0"])
                .output()
                .expect("ip");
            let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let xdp = links.get(0)?.get("xdp")?;
            Some((
                xdp.get("mode")?.as_u64()?,
                xdp.get("prog")?.get("id")?.as_u64()?,
            ))
        };
        const XDP_ATTACHED_SKB: u64 = 2;

        let dp = Datapath::load(&cfg).expect("load");
        let (mode, first) = xdp().expect("XDP attached");
        assert_eq!(mode, XDP_ATTACHED_SKB, "generic mode on a veth");
        drop(dp);
        assert_eq!(
            xdp(),
            Some((mode, first)),
            "the pinned link keeps the program attached while no agent runs"
        );
        let dp = Datapath::load(&cfg).expect("reload");
        let (_, second) = xdp().expect("XDP attached after the restart");
        assert_ne!(second, first, "the new agent's program was swapped in");
        assert!(
            std::fs::read_dir(cfg.bpffs_dir.join("node-links"))
                .expect("pins")
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with("-xdp")),
            "one pinned XDP link"
        );
        drop(dp);
    })
    .join()
    .expect("netns thread");
}
