//! Privileged tests of NodePort on the node interface: a BPF_PROG_TEST_RUN
//! table of crafted packets through the node-ingress program (run inside a
//! test netns so the FIB lookup behind its redirect is deterministic), and a
//! real-traffic test from an "external" namespace to two simulated nodes.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_NODEPORT, CT_FLAG_SNAT, IPPROTO_TCP,
    IPPROTO_UDP, NODEPORT_SNAT_PORT_MIN, SERVICE_FLAG_ANNOUNCE, SERVICE_FLAG_EXT_LOCAL,
    SERVICE_FLAG_NODEPORT, SERVICE_FLAG_SOURCE_RANGES, ServiceKey, program_names,
};

use super::plan::{DesiredServices, Frontend};
use super::tests::{ACK, PinDir, SYN, TC_ACT_OK, TC_ACT_SHOT, check, load, tcp, udp};
use super::traffic_tests::{Netns, in_netns, run, wire_pod};
use super::{Datapath, DatapathConfig, NodeConfig};

/// `bpf_redirect`'s verdict.
const TC_ACT_REDIRECT: u32 = 7;

pub(crate) const NODE_IP: [u8; 4] = [172, 30, 0, 11];
pub(crate) const CLIENT: [u8; 4] = [172, 30, 0, 100];
pub(crate) const CLUSTER_IP: [u8; 4] = [10, 96, 0, 10];
pub(crate) const REMOTE_POD: [u8; 4] = [10, 244, 2, 3];
pub(crate) const LOCAL_POD: [u8; 4] = [10, 244, 1, 3];
/// An external IP of a service, routed by the external client to node1.
pub(crate) const EXTERNAL_IP: [u8; 4] = [192, 0, 2, 10];
/// A LoadBalancer IP on the underlay segment, announced (ARP) by node1.
pub(crate) const LB_IP: [u8; 4] = [172, 30, 0, 200];

/// NodePorts of the tests: (port, backends, flags).
const NODEPORTS: [(u16, u8, &[[u8; 4]], u32); 5] = [
    (30080, IPPROTO_TCP, &[REMOTE_POD], SERVICE_FLAG_NODEPORT),
    (30081, IPPROTO_TCP, &[LOCAL_POD], SERVICE_FLAG_NODEPORT),
    (
        30082,
        IPPROTO_TCP,
        &[LOCAL_POD],
        SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL,
    ),
    (
        30083,
        IPPROTO_TCP,
        &[],
        SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL,
    ),
    (30053, IPPROTO_UDP, &[REMOTE_POD], SERVICE_FLAG_NODEPORT),
];

pub(crate) fn services() -> DesiredServices {
    let mut desired: DesiredServices = NODEPORTS
        .iter()
        .map(|&(port, proto, backends, flags)| {
            let target = if proto == IPPROTO_UDP { 5300 } else { 8080 };
            (
                ServiceKey::new(NODE_IP, port, proto),
                Frontend {
                    backends: backends
                        .iter()
                        .map(|ip| Backend::new(*ip, target))
                        .collect(),
                    flags,
                    affinity_timeout_secs: 0,
                    source_ranges: Vec::new(),
                },
            )
        })
        .collect();
    desired.insert(
        ServiceKey::new(CLUSTER_IP, 80, IPPROTO_TCP),
        vec![Backend::new(REMOTE_POD, 8080)].into(),
    );
    desired.insert(
        ServiceKey::new(LB_IP, 80, IPPROTO_TCP),
        Frontend {
            backends: vec![Backend::new(REMOTE_POD, 8080)],
            flags: SERVICE_FLAG_NODEPORT,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    );
    desired.insert(
        ServiceKey::new(LB_IP, 443, IPPROTO_TCP),
        Frontend {
            backends: vec![Backend::new(REMOTE_POD, 8080)],
            flags: SERVICE_FLAG_NODEPORT | SERVICE_FLAG_SOURCE_RANGES,
            affinity_timeout_secs: 0,
            source_ranges: vec!["172.30.0.96/29".parse().expect("net")],
        },
    );
    desired.insert(
        ServiceKey::new(LB_IP, 0, 0),
        Frontend {
            backends: vec![],
            flags: SERVICE_FLAG_ANNOUNCE,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    );
    desired.insert(
        ServiceKey::new(EXTERNAL_IP, 80, IPPROTO_TCP),
        Frontend {
            backends: vec![Backend::new(REMOTE_POD, 8080)],
            flags: SERVICE_FLAG_NODEPORT,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    );
    desired
}

pub(crate) fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, last]
}

/// A namespace in which the FIB sends 10.244.0.0/16 to a "node2" and
/// 172.30.0.0/24 out of a veth, with permanent neighbours, so redirects
/// are deterministic.
pub(crate) fn fib_netns(name: &str) -> Netns {
    let ns = Netns(vec![name.to_owned()]);
    run(&format!("ip netns add {name}"));
    run(&format!(
        "ip -n {name} link add wdp2v0 address 02:00:00:00:00:0b type veth peer name wdp2v1"
    ));
    run(&format!("ip -n {name} addr add 172.30.0.11/24 dev wdp2v0"));
    run(&format!("ip -n {name} link set wdp2v0 up"));
    run(&format!("ip -n {name} link set wdp2v1 up"));
    run(&format!("ip -n {name} link set lo up"));
    run(&format!(
        "ip -n {name} neigh add 172.30.0.12 lladdr 02:00:00:00:00:0c dev wdp2v0 nud permanent"
    ));
    run(&format!(
        "ip -n {name} neigh add 172.30.0.100 lladdr 02:00:00:00:00:64 dev wdp2v0 nud permanent"
    ));
    run(&format!(
        "ip -n {name} route add 10.244.0.0/16 via 172.30.0.12"
    ));
    run(&format!(
        "ip netns exec {name} sysctl -q -w net.ipv4.ip_forward=1"
    ));
    ns
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn datapath_node_ingress_translates_nodeports() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    dp.maps
        .set_node(Some(Ipv4Addr::from(NODE_IP)), Some(mac(0x0b)))
        .expect("node facts");
    let ns_name = format!("wdp2-npb-{}", std::process::id());
    let _ns = fib_netns(&ns_name);
    let node_ingress = |packet: &[u8]| dp.run_program(program_names::NODE_INGRESS, packet);

    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(format!("/run/netns/{ns_name}")).expect("netns");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");

                // Cluster policy, remote backend: DNAT + SNAT to the node, out to node2.
                let syn = tcp(CLIENT, 40000, NODE_IP, 30080, SYN);
                let (verdict, out) = node_ingress(&syn);
                assert_eq!(verdict, TC_ACT_REDIRECT, "SYN to a NodePort is forwarded");
                let seen = check(&out);
                assert_eq!(seen.dst, (REMOTE_POD, 8080));
                assert_eq!(seen.src.0, NODE_IP, "source translated to the node");
                let nat_port = seen.src.1;
                assert!(nat_port >= NODEPORT_SNAT_PORT_MIN, "SNAT port {nat_port}");
                assert_eq!(out[0..6], mac(0x0c), "to node2's MAC");
                assert_eq!(out[6..12], mac(0x0b), "from the node's MAC");

                // A retransmitted SYN keeps its SNAT port.
                let (verdict, again) = node_ingress(&syn);
                assert_eq!(verdict, TC_ACT_REDIRECT, "retransmitted SYN");
                assert_eq!(check(&again).src, (NODE_IP, nat_port));

                // The conntrack entries, both directions.
                let forward = dp
                    .conntrack()
                    .get(
                        &super::tests::ct_key((CLIENT, 40000), (NODE_IP, 30080), IPPROTO_TCP),
                        0,
                    )
                    .expect("forward entry");
                assert_eq!(forward.direction, CT_DIR_FORWARD);
                assert_eq!(forward.flags, CT_FLAG_NODEPORT | CT_FLAG_SNAT);
                let reverse = dp
                    .conntrack()
                    .get(
                        &super::tests::ct_key((REMOTE_POD, 8080), (NODE_IP, nat_port), IPPROTO_TCP),
                        0,
                    )
                    .expect("reverse entry");
                assert_eq!(reverse.direction, CT_DIR_REVERSE);

                // The backend's reply is translated back and sent to the client.
                let reply = tcp(REMOTE_POD, 8080, NODE_IP, nat_port, SYN | ACK);
                let (verdict, out) = node_ingress(&reply);
                assert_eq!(verdict, TC_ACT_REDIRECT);
                let seen = check(&out);
                assert_eq!((seen.src, seen.dst), ((NODE_IP, 30080), (CLIENT, 40000)));
                assert_eq!(out[0..6], mac(0x64), "to the client's MAC");

                // The client's next packet follows conntrack.
                let (verdict, out) = node_ingress(&tcp(CLIENT, 40000, NODE_IP, 30080, ACK));
                assert_eq!(verdict, TC_ACT_REDIRECT, "the client's next packet");
                let seen = check(&out);
                assert_eq!(
                    (seen.src, seen.dst),
                    ((NODE_IP, nat_port), (REMOTE_POD, 8080))
                );

                // Another client connection gets another SNAT port... unless
                // it maps to a different backend tuple; here the same backend.
                let (verdict, out) = node_ingress(&tcp(CLIENT, 40001, NODE_IP, 30080, SYN));
                assert_eq!(verdict, TC_ACT_REDIRECT, "another client connection");
                assert_ne!(
                    check(&out).src,
                    (NODE_IP, nat_port),
                    "SNAT ports are unique"
                );

                // externalTrafficPolicy Local: DNAT only, client address kept.
                let (verdict, out) = node_ingress(&tcp(CLIENT, 40002, NODE_IP, 30082, SYN));
                assert_eq!(verdict, TC_ACT_REDIRECT);
                let seen = check(&out);
                assert_eq!((seen.src, seen.dst), ((CLIENT, 40002), (LOCAL_POD, 8080)));

                // UDP NodePort.
                let (verdict, out) = node_ingress(&udp(CLIENT, 5353, NODE_IP, 30053, true));
                assert_eq!(verdict, TC_ACT_REDIRECT);
                let seen = check(&out);
                assert_eq!(seen.dst, (REMOTE_POD, 5300));
                assert_eq!(seen.src.0, NODE_IP);

                // A local pod's ClusterIP connection to a remote backend: its
                // conntrack entries must not make node-ingress touch replies.
                let (verdict, _) = dp.run(&tcp([10, 244, 1, 9], 41000, CLUSTER_IP, 80, SYN));
                assert_eq!(verdict, TC_ACT_OK);
                assert!(
                    dp.conntrack()
                        .get(
                            &super::tests::ct_key(
                                (REMOTE_POD, 8080),
                                ([10, 244, 1, 9], 41000),
                                IPPROTO_TCP
                            ),
                            0
                        )
                        .is_ok(),
                    "the pod connection's reverse entry exists"
                );

                // loadBalancerSourceRanges: in range -> served; outside -> dropped, counted.
                let (verdict, out) = node_ingress(&tcp(CLIENT, 40020, LB_IP, 443, SYN));
                assert_eq!(
                    verdict, TC_ACT_REDIRECT,
                    "172.30.0.100 is in 172.30.0.96/29"
                );
                assert_eq!(check(&out).dst, (REMOTE_POD, 8080));
                let outsider = [172, 30, 0, 104];
                let (verdict, _) = node_ingress(&tcp(outsider, 40021, LB_IP, 443, SYN));
                assert_eq!(verdict, TC_ACT_SHOT, "outside the source ranges");
                let counted = dp.drop_counters().expect("drops");
                assert!(counted.contains(&("source_range", 1)), "{counted:?}");

                // ARP for an owned LoadBalancer IP is answered with the
                // node's MAC; for other addresses it goes to the stack.
                let arp = |target: [u8; 4]| {
                    let mut p = vec![0xff; 6];
                    p.extend_from_slice(&mac(0x64));
                    p.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
                    p.extend_from_slice(&mac(0x64));
                    p.extend_from_slice(&CLIENT);
                    p.extend_from_slice(&[0; 6]);
                    p.extend_from_slice(&target);
                    p
                };
                let (verdict, out) = node_ingress(&arp(LB_IP));
                assert_eq!(
                    verdict, TC_ACT_REDIRECT,
                    "ARP for an owned LB IP is answered"
                );
                let mut want = mac(0x64).to_vec();
                want.extend_from_slice(&mac(0x0b));
                want.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
                want.extend_from_slice(&mac(0x0b));
                want.extend_from_slice(&LB_IP);
                want.extend_from_slice(&mac(0x64));
                want.extend_from_slice(&CLIENT);
                assert_eq!(out, want, "an ARP reply from the node's MAC");
                let request = arp([172, 30, 0, 201]);
                assert_eq!(node_ingress(&request), (TC_ACT_OK, request), "not ours");

                struct Untouched {
                    name: &'static str,
                    packet: Vec<u8>,
                    verdict: u32,
                }
                let cases = [
                    Untouched {
                        name: "Local NodePort without a local backend: no answer",
                        packet: tcp(CLIENT, 40003, NODE_IP, 30083, SYN),
                        verdict: TC_ACT_SHOT,
                    },
                    Untouched {
                        name: "ClusterIPs are not served from outside",
                        packet: tcp(CLIENT, 40004, CLUSTER_IP, 80, SYN),
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "a node port without a service",
                        packet: tcp(CLIENT, 40005, NODE_IP, 30099, SYN),
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "a TCP NodePort number over UDP",
                        packet: udp(CLIENT, 40006, NODE_IP, 30080, true),
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "an IPv4 fragment to a NodePort",
                        packet: {
                            let mut p = tcp(CLIENT, 40007, NODE_IP, 30080, SYN);
                            p[14 + 6] |= 0x20; // More Fragments
                            p
                        },
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "a truncated TCP header to a NodePort",
                        packet: tcp(CLIENT, 40008, NODE_IP, 30080, SYN)[..14 + 20 + 10].to_vec(),
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "IPv6",
                        packet: {
                            let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
                            p.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
                            p.extend_from_slice(&[0u8; 32]);
                            p.extend_from_slice(
                                &tcp(CLIENT, 40009, NODE_IP, 30080, SYN)[14 + 20..],
                            );
                            p
                        },
                        verdict: TC_ACT_OK,
                    },
                    Untouched {
                        name: "a reply to a pod's ClusterIP connection is left to the pod hooks",
                        packet: tcp(REMOTE_POD, 8080, [10, 244, 1, 9], 41000, SYN | ACK),
                        verdict: TC_ACT_OK,
                    },
                ];
                for case in cases {
                    let (verdict, out) = node_ingress(&case.packet);
                    assert_eq!(verdict, case.verdict, "{}", case.name);
                    if verdict == TC_ACT_OK {
                        assert_eq!(out, case.packet, "{}: must be untouched", case.name);
                    }
                }
            })
            .join()
            .expect("netns thread");
    });
}

/// Starts a TCP (8080) and UDP (5300) server in pod netns `pod`; both answer
/// with the client address they see.
pub(crate) fn start_peer_echo(pod: &str) {
    let (tcp, udp) = in_netns(pod, || {
        (
            TcpListener::bind("0.0.0.0:8080").expect("bind tcp"),
            UdpSocket::bind("0.0.0.0:5300").expect("bind udp"),
        )
    })
    .join()
    .expect("bind");
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { return };
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = writeln!(conn, "{peer}");
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(from.ip().to_string().as_bytes(), from);
        }
    });
}

/// Connects from the external namespace; the first line of the answer.
pub(crate) fn ask_tcp(ext: &str, port: u16) -> std::io::Result<String> {
    in_netns(ext, move || {
        let addr = SocketAddr::from((NODE_IP, port));
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })
    .join()
    .expect("client thread")
}

/// Two simulated nodes and an external client on one underlay segment
/// (172.30.0.0/24 on a bridge in its own namespace; ext .100, n1 .11, n2
/// .12), one pod per node (pa 10.244.1.3 on n1, pb 10.244.2.3 on n2, each
/// answering TCP 8080 and UDP 5300 with the client address it sees), routes
/// between the pod networks. Namespace names start with `prefix`; returns
/// them ([br, ext, n1, n2, pa, pb]) and the guard that deletes them.
pub(crate) fn two_nodes(prefix: &str) -> ([String; 6], Netns) {
    let id = std::process::id();
    let [br, ext, n1, n2, pa, pb] =
        ["br", "ext", "n1", "n2", "pa", "pb"].map(|s| format!("{prefix}{s}-{id}"));
    let netns = Netns(vec![
        br.clone(),
        ext.clone(),
        n1.clone(),
        n2.clone(),
        pa.clone(),
        pb.clone(),
    ]);
    for ns in [&br, &ext, &n1, &n2, &pa, &pb] {
        run(&format!("ip netns add {ns}"));
        run(&format!("ip -n {ns} link set lo up"));
    }
    // The underlay: a bridge in its own namespace, eth0 of each member on it.
    run(&format!("ip -n {br} link add br0 type bridge"));
    run(&format!("ip -n {br} link set br0 up"));
    for (i, (ns, ip)) in [
        (&ext, "172.30.0.100"),
        (&n1, "172.30.0.11"),
        (&n2, "172.30.0.12"),
    ]
    .into_iter()
    .enumerate()
    {
        run(&format!(
            "ip -n {br} link add port{i} type veth peer name eth0 netns {ns}"
        ));
        run(&format!("ip -n {br} link set port{i} master br0 up"));
        run(&format!("ip -n {ns} addr add {ip}/24 dev eth0"));
        run(&format!("ip -n {ns} link set eth0 up"));
    }
    wire_pod(&n1, &pa, "wra000000000a", "10.244.1.3");
    wire_pod(&n2, &pb, "wrb000000000b", "10.244.2.3");
    run(&format!(
        "ip -n {n1} route add 10.244.2.0/24 via 172.30.0.12"
    ));
    run(&format!(
        "ip -n {n2} route add 10.244.1.0/24 via 172.30.0.11"
    ));
    for ns in [&n1, &n2] {
        run(&format!(
            "ip netns exec {ns} sysctl -q -w net.ipv4.ip_forward=1"
        ));
    }
    start_peer_echo(&pa);
    start_peer_echo(&pb);

    let names = [br, ext, n1, n2, pa, pb];
    (names, netns)
}

#[test]
#[ignore = "privileged: creates network namespaces, loads and attaches BPF programs (root)"]
fn datapath_real_traffic_reaches_nodeports_from_outside() {
    let ([_br, ext, n1, _n2, _pa, _pb], _netns) = two_nodes("wdp2-np");
    let pins = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: pins.0.clone(),
        cgroup_dir: None,
        node: Some(NodeConfig {
            name: "node1".into(),
            ip: Ipv4Addr::from(NODE_IP),
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

    let cases: [(&str, u16, Option<&str>); 4] = [
        (
            "Cluster policy, backend on another node: SNAT",
            30080,
            Some("172.30.0.11"),
        ),
        (
            "Cluster policy, backend on this node: SNAT",
            30081,
            Some("172.30.0.11"),
        ),
        (
            "Local policy: the client address is kept",
            30082,
            Some("172.30.0.100"),
        ),
        (
            "Local policy without a local backend: no answer",
            30083,
            None,
        ),
    ];
    for (name, port, want) in cases {
        let got = ask_tcp(&ext, port);
        match want {
            Some(peer) => assert_eq!(got.as_deref().ok(), Some(peer), "{name}: {got:?}"),
            None => assert!(got.is_err(), "{name}: answered {got:?}"),
        }
    }
    // An external IP routed to node1: SNAT to node1's address (from
    // WEIR_NODE), or node2 could not route the reply back.
    run(&format!(
        "ip -n {ext} route add 192.0.2.10/32 via 172.30.0.11"
    ));
    let got = in_netns(&ext, || {
        let addr = SocketAddr::from((EXTERNAL_IP, 80));
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok::<_, std::io::Error>(line.trim().to_owned())
    })
    .join()
    .expect("client thread");
    assert_eq!(
        got.as_deref().ok(),
        Some("172.30.0.11"),
        "external IP: {got:?}"
    );

    // A LoadBalancer IP on the segment: node1 answers ARP for it.
    let got = in_netns(&ext, || {
        let addr = SocketAddr::from((LB_IP, 80));
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok::<_, std::io::Error>(line.trim().to_owned())
    })
    .join()
    .expect("client thread");
    assert_eq!(
        got.as_deref().ok(),
        Some("172.30.0.11"),
        "LoadBalancer IP: {got:?}"
    );

    let (reply, from) = in_netns(&ext, || {
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
    assert_eq!(reply, "172.30.0.11", "UDP NodePort is SNATed to the node");
    assert_eq!(
        from,
        SocketAddr::from((NODE_IP, 30053)),
        "reply from the NodePort"
    );
    drop(dp);
    drop(pins);
}
