//! Privileged tests of the pod fast path (`redirect`, kernel side
//! `ebpf/programs/src/redirect.rs`): a node namespace with pod namespaces
//! wired like weir-cni wires them (names prefixed `wbfp`), the datapath
//! loaded and attached there.
//!
//! - BPF_PROG_TEST_RUN of from-pod with the packet "arriving" on a pod veth
//!   (the `__sk_buff` ifindex): the verdict (TC_ACT_REDIRECT or TC_ACT_OK),
//!   the rewritten MACs, TTL and IPv4 checksum, and every fallback leaving
//!   the packet untouched.
//! - Real TCP and UDP traffic both ways between two pods, direct and through
//!   a ClusterIP (and a pod reaching itself through it): with the fast path on, the node namespace forwards none of
//!   it (`Ip: ForwDatagrams` of its `/proc/net/snmp` stays put); off, it
//!   forwards all of it.
//!
//! Run with `cargo test -p weir-datapath -- --ignored redirect` as root.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;

use aya::programs::{TestRun, TestRunOptions};
use weir_ebpf_common::{Backend, IPPROTO_TCP, IPPROTO_UDP, ServiceKey, program_names};

use super::tests::{ACK, PinDir, SYN, TC_ACT_OK, check, tcp, udp};
use super::traffic_tests::{Netns, TIMEOUT, echo_lines, exchange, in_netns, run, wire_pod};
use super::{Datapath, DatapathConfig, attach, plan};

const TC_ACT_REDIRECT: u32 = 7;

const CLIENT: [u8; 4] = [10, 244, 1, 2];
const SERVER: [u8; 4] = [10, 244, 1, 3];
const VIP: [u8; 4] = [10, 96, 0, 10];
/// Routed to the server's veth, with no neighbour entry.
const NO_NEIGH: [u8; 4] = [10, 244, 1, 9];
/// Routed to a veth that is not a pod's, with a neighbour entry.
const ELSEWHERE: [u8; 4] = [192, 0, 2, 1];
/// The MAC the test gives the server pod's neighbour entry.
const SERVER_MAC: [u8; 6] = [0x02, 0xfb, 0, 0, 0, 3];

/// A node namespace with a client and a server pod; deleted on drop.
struct Topology {
    node: String,
    client: String,
    server: String,
    _netns: Netns,
}

const CLIENT_VETH: &str = "wrwbfpclnt";
const SERVER_VETH: &str = "wrwbfpsrvr";

fn topology(tag: &str) -> Topology {
    let prefix = format!("wbfp-{}-{tag}", std::process::id());
    let (node, client, server) = (
        format!("{prefix}-node"),
        format!("{prefix}-client"),
        format!("{prefix}-server"),
    );
    let netns = Netns(vec![node.clone(), client.clone(), server.clone()]);
    for ns in [&node, &client, &server] {
        run(&format!("ip netns add {ns}"));
    }
    run(&format!(
        "ip netns exec {node} sysctl -q -w net.ipv4.ip_forward=1"
    ));
    wire_pod(&node, &client, CLIENT_VETH, "10.244.1.2");
    wire_pod(&node, &server, SERVER_VETH, "10.244.1.3");
    Topology {
        node,
        client,
        server,
        _netns: netns,
    }
}

/// Loads the datapath in the current (node) namespace and attaches it.
fn load_attached(pins: &Path) -> Datapath {
    let mut dp = Datapath::load(&DatapathConfig {
        bpffs_dir: pins.to_owned(),
        cgroup_dir: None,
        node: None,
    })
    .expect("load datapath");
    dp.attach_pod_interfaces().expect("attach");
    dp
}

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).expect("interface index")
}

/// Runs from-pod on `packet` as if it arrived on interface `ifindex`.
fn run_on(dp: &Datapath, ifindex: u32, packet: &[u8]) -> (u32, Vec<u8>) {
    // struct __sk_buff up to `ifindex` (offset 40) and `tc_index`; the
    // kernel takes the device of `ifindex` as the packet's.
    let mut ctx = [0u8; 48];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; packet.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..Default::default()
    };
    let result = dp
        .program(program_names::FROM_POD)
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// `packet` with IPv4 TTL `ttl` (checksum recomputed).
fn with_ttl(packet: &[u8], ttl: u8) -> Vec<u8> {
    let mut p = packet.to_vec();
    p[14 + 8] = ttl;
    fix_ip_csum(&mut p);
    p
}

/// `packet` with one 4-byte IPv4 option (NOP x 3 + EOL).
fn with_options(packet: &[u8]) -> Vec<u8> {
    let mut p = packet[..34].to_vec();
    p.extend_from_slice(&[1, 1, 1, 0]);
    p.extend_from_slice(&packet[34..]);
    p[14] = 0x46;
    let total = u16::from_be_bytes([p[16], p[17]]) + 4;
    p[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_csum(&mut p);
    p
}

fn fix_ip_csum(p: &mut [u8]) {
    let ihl = usize::from(p[14] & 0x0f) * 4;
    p[24..26].copy_from_slice(&[0, 0]);
    let mut sum: u32 = p[14..14 + ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
#[ignore = "privileged: creates network namespaces and veths, loads BPF programs and runs them with BPF_PROG_TEST_RUN"]
fn redirect_from_pod_verdicts_and_rewrites() {
    let topo = topology("tr");
    let node = topo.node.clone();
    run(&format!(
        "ip -n {node} neigh replace 10.244.1.3 lladdr 02:fb:00:00:00:03 dev {SERVER_VETH} nud permanent"
    ));
    run(&format!(
        "ip -n {node} route add 10.244.1.9/32 dev {SERVER_VETH}"
    ));
    // Not a pod veth (no dummy driver here): a veth pair inside the node.
    run(&format!(
        "ip -n {node} link add wbfpother type veth peer name wbfpother1"
    ));
    run(&format!("ip -n {node} link set wbfpother up"));
    run(&format!("ip -n {node} link set wbfpother1 up"));
    run(&format!(
        "ip -n {node} route add 192.0.2.0/24 dev wbfpother"
    ));
    run(&format!(
        "ip -n {node} neigh replace 192.0.2.1 lladdr 02:fb:00:00:00:09 dev wbfpother nud permanent"
    ));
    in_netns(&node.clone(), move || {
        let pins = PinDir::new();
        let mut dp = load_attached(&pins.0);
        let (client_if, server_if, other_if) = (
            ifindex(CLIENT_VETH),
            ifindex(SERVER_VETH),
            ifindex("wbfpother"),
        );
        let server_veth_mac = attach::interface_mac(SERVER_VETH)
            .expect("read MAC")
            .expect("veth MAC");
        dp.seed(&BTreeMap::from([(
            ServiceKey::new(VIP, 80, IPPROTO_TCP),
            vec![Backend::new(SERVER, 8080)].into(),
        )]));

        // Off (the library's default): everything takes the stack.
        let syn = tcp(CLIENT, 40000, SERVER, 8080, SYN);
        assert_eq!(
            run_on(&dp, client_if, &syn),
            (TC_ACT_OK, syn.clone()),
            "off: passed untouched"
        );
        dp.set_pod_redirect(true).expect("on");
        assert!(dp.pod_redirect());

        struct Case {
            name: &'static str,
            ingress: u32,
            packet: Vec<u8>,
            /// Redirected: the destination address:port after translation.
            redirected_to: Option<([u8; 4], u16)>,
        }
        let cases = [
            Case {
                name: "TCP SYN to a local pod",
                ingress: client_if,
                packet: syn.clone(),
                redirected_to: Some((SERVER, 8080)),
            },
            Case {
                name: "TCP ACK to a local pod",
                ingress: client_if,
                packet: tcp(CLIENT, 40000, SERVER, 8080, ACK),
                redirected_to: Some((SERVER, 8080)),
            },
            Case {
                name: "UDP to a local pod",
                ingress: client_if,
                packet: udp(CLIENT, 40001, SERVER, 5300, true),
                redirected_to: Some((SERVER, 5300)),
            },
            Case {
                name: "UDP without checksum to a local pod",
                ingress: client_if,
                packet: udp(CLIENT, 40002, SERVER, 5300, false),
                redirected_to: Some((SERVER, 5300)),
            },
            Case {
                name: "a ClusterIP connection to a local backend: translated, then redirected",
                ingress: client_if,
                packet: tcp(CLIENT, 40003, VIP, 80, SYN),
                redirected_to: Some((SERVER, 8080)),
            },
            Case {
                name: "TTL 1: left to the stack (ICMP time exceeded)",
                ingress: client_if,
                packet: with_ttl(&tcp(CLIENT, 40004, SERVER, 8080, SYN), 1),
                redirected_to: None,
            },
            Case {
                name: "IPv4 options: left to the stack",
                ingress: client_if,
                packet: with_options(&tcp(CLIENT, 40005, SERVER, 8080, SYN)),
                redirected_to: None,
            },
            Case {
                name: "no neighbour entry yet: left to the stack",
                ingress: client_if,
                packet: tcp(CLIENT, 40006, NO_NEIGH, 8080, SYN),
                redirected_to: None,
            },
            Case {
                name: "routed to an interface that is not a pod veth",
                ingress: client_if,
                packet: tcp(CLIENT, 40007, ELSEWHERE, 80, SYN),
                redirected_to: None,
            },
            Case {
                name: "arriving on an interface that is not a pod veth",
                ingress: other_if,
                packet: tcp(ELSEWHERE, 40008, SERVER, 8080, SYN),
                redirected_to: None,
            },
        ];
        for case in cases {
            let (verdict, out) = run_on(&dp, case.ingress, &case.packet);
            match case.redirected_to {
                None => {
                    assert_eq!(verdict, TC_ACT_OK, "{}: verdict", case.name);
                    assert_eq!(out, case.packet, "{}: untouched", case.name);
                }
                Some(dst) => {
                    assert_eq!(verdict, TC_ACT_REDIRECT, "{}: verdict", case.name);
                    assert_eq!(out[0..6], SERVER_MAC, "{}: destination MAC", case.name);
                    assert_eq!(out[6..12], server_veth_mac, "{}: source MAC", case.name);
                    assert_eq!(out[14 + 8], case.packet[14 + 8] - 1, "{}: TTL", case.name);
                    // Checks both checksums from scratch.
                    let seen = check(&out);
                    assert_eq!(seen.dst, dst, "{}: destination", case.name);
                    assert_eq!(seen.src.0, CLIENT, "{}: source", case.name);
                    assert_eq!(out.len(), case.packet.len(), "{}: length", case.name);
                }
            }
        }
        // The interface it would be redirected to is the server's veth:
        // from-pod on the server side redirects the reply to the client's.
        let (verdict, _) = run_on(&dp, server_if, &tcp(SERVER, 8080, CLIENT, 40000, ACK));
        assert_eq!(
            verdict, TC_ACT_OK,
            "no neighbour entry for the client: the reply takes the stack"
        );

        // Forwarding disabled on the ingress veth: the stack would not
        // forward it either, so neither does the fast path.
        run(&format!(
            "ip netns exec {node} sysctl -q -w net.ipv4.conf.{CLIENT_VETH}.forwarding=0"
        ));
        let (verdict, out) = run_on(&dp, client_if, &syn);
        assert_eq!((verdict, out), (TC_ACT_OK, syn.clone()), "forwarding off");
        run(&format!(
            "ip netns exec {node} sysctl -q -w net.ipv4.conf.{CLIENT_VETH}.forwarding=1"
        ));
        assert_eq!(run_on(&dp, client_if, &syn).0, TC_ACT_REDIRECT);

        // Off again: registrations removed, the stack path is back.
        dp.set_pod_redirect(false).expect("off");
        assert_eq!(run_on(&dp, client_if, &syn), (TC_ACT_OK, syn.clone()));

        // A new agent on the same pins starts off whatever the last one left.
        dp.set_pod_redirect(true).expect("on");
        drop(dp);
        let dp = load_attached(&pins.0);
        assert_eq!(
            run_on(&dp, client_if, &syn),
            (TC_ACT_OK, syn),
            "a new agent starts off"
        );
    })
    .join()
    .expect("node thread");
}

/// `Ip: ForwDatagrams` of the calling thread's network namespace.
fn forwarded_datagrams() -> u64 {
    let mut snmp = String::new();
    std::fs::File::open("/proc/thread-self/net/snmp")
        .expect("open snmp")
        .read_to_string(&mut snmp)
        .expect("read snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().expect("Ip header"), ip.next().expect("Ip values"));
    let at = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .expect("ForwDatagrams column");
    values
        .split_whitespace()
        .nth(at)
        .expect("ForwDatagrams value")
        .parse()
        .expect("a number")
}

/// TCP (100 line exchanges and 1 MB) and UDP (20 datagrams) from the
/// client pod to the server (its pod IP or the ClusterIP), echoed back.
fn traffic(client: &str, tcp_target: &'static str, udp_target: &'static str) {
    tcp_traffic(client, tcp_target);
    udp_traffic(client, udp_target);
}

/// 100 line exchanges and 1 MB over one TCP connection to `target`.
fn tcp_traffic(client: &str, target: &'static str) {
    in_netns(client, move || {
        let addr = target.parse().expect("addr");
        let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        for i in 0..100 {
            let line = format!("line {i}");
            assert_eq!(exchange(&mut conn, &line), line);
        }
        let big: String = (0..1_000_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        assert!(exchange(&mut conn, &big) == big, "1 MB echoed intact");
    })
    .join()
    .expect("client thread");
}

/// 20 UDP datagrams to `target`, each echoed.
fn udp_traffic(client: &str, target: &'static str) {
    in_netns(client, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        for i in 0..20u8 {
            socket.send_to(&[i; 32], target).expect("send");
            let mut buf = [0u8; 64];
            let (n, _) = socket.recv_from(&mut buf).expect("UDP echo");
            assert_eq!(&buf[..n], &[i; 32]);
        }
    })
    .join()
    .expect("client thread");
}

#[test]
#[ignore = "privileged: creates network namespaces and veths, loads and attaches BPF programs, sends traffic between them"]
fn redirect_real_traffic_skips_the_node_forwarding() {
    let topo = topology("rt");
    // Echo servers: TCP (a thread per connection) and UDP.
    in_netns(&topo.server, || {
        let listener = TcpListener::bind("0.0.0.0:8080").expect("bind tcp");
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || echo_lines(conn));
        }
    });
    in_netns(&topo.server, || {
        let socket = UdpSocket::bind("0.0.0.0:5300").expect("bind udp");
        let mut buf = [0u8; 64];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    });
    let pins = PinDir::new();
    let pin_path = pins.0.clone();
    let mut dp = in_netns(&topo.node, move || load_attached(&pin_path))
        .join()
        .expect("node thread");
    let desired = BTreeMap::from([
        (
            ServiceKey::new(VIP, 80, IPPROTO_TCP),
            vec![Backend::new(SERVER, 8080)].into(),
        ),
        (
            ServiceKey::new(VIP, 53, IPPROTO_UDP),
            vec![Backend::new(SERVER, 5300)].into(),
        ),
    ]);
    let mut state = dp.read_state().expect("read maps");
    let mut next_slot = state.next_free_slot();
    let ops = plan::diff(&desired, &state, &mut next_slot);
    dp.apply(&ops, &mut state).expect("apply");
    let forwarded = {
        let node = topo.node.clone();
        move || {
            in_netns(&node, forwarded_datagrams)
                .join()
                .expect("node thread")
        }
    };

    // Off: the node forwards every packet (both directions).
    traffic(&topo.client, "10.244.1.3:8080", "10.244.1.3:5300");
    let before = forwarded();
    traffic(&topo.client, "10.244.1.3:8080", "10.244.1.3:5300");
    let off = forwarded() - before;
    assert!(
        off >= 240,
        "off: the node forwards the traffic ({off} datagrams)"
    );

    // On: direct and through the ClusterIP, nothing is forwarded by the
    // node (the neighbour entries exist from the traffic above).
    dp.set_pod_redirect(true).expect("on");
    let before = forwarded();
    traffic(&topo.client, "10.244.1.3:8080", "10.244.1.3:5300");
    traffic(&topo.client, "10.96.0.10:80", "10.96.0.10:53");
    // Hairpin: the server reaches itself through the ClusterIP (redirected
    // back into its own namespace).
    tcp_traffic(&topo.server, "10.96.0.10:80");
    let on = forwarded() - before;
    assert_eq!(on, 0, "on: the node forwarded {on} datagrams");

    // Off again at run time: established paths fall back to the stack.
    dp.set_pod_redirect(false).expect("off");
    let before = forwarded();
    traffic(&topo.client, "10.96.0.10:80", "10.96.0.10:53");
    assert!(
        forwarded() - before >= 240,
        "off again: forwarded by the node"
    );
    drop(dp);
    drop(pins);
    drop(topo);
}
