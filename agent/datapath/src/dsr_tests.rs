//! Privileged tests of direct server return (DSR): BPF_PROG_TEST_RUN tables
//! of crafted packets through the load-balancing node's two paths (tc
//! node-ingress and XDP: the option's bytes, IHL, total length, checksums,
//! MACs, conntrack) and through the backend node's side (node-ingress checks
//! and records the option, from-pod turns the reply's source back to the
//! frontend and sends it to the client; spoofed and malformed options are
//! dropped). Each runs inside a test netns whose FIB routes the pod network
//! to a "node2" at 172.30.0.12 (see `nodeport_tests::fib_netns`), with this
//! node's own pods behind a second interface.
//!
//! Run with `cargo test -p weir-datapath -- --ignored dsr` as root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use weir_ebpf_common::dsr::{DSR_OPT_LEN, DSR_OPT_TYPE};
use weir_ebpf_common::flow::{VERDICT_DROPPED, hook};
use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_DSR, CT_FLAG_NODEPORT, CT_FLAG_SNAT,
    IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_DSR, SERVICE_FLAG_NODEPORT, ServiceKey, drop_reason,
    program_names,
};

use super::Datapath;
use super::nodeport_tests::{
    CLIENT, LB_IP, LOCAL_POD, NODE_IP, REMOTE_POD, fib_netns, mac, services,
};
use super::plan::{DesiredServices, Frontend};
use super::policy_dp_tests::flow_events;
use super::tests::{ACK, PinDir, SYN, Seen, TC_ACT_OK, TC_ACT_SHOT, check, ct_key, load, tcp, udp};
use super::traffic_tests::{Netns, run};
use super::xdp_tests::{enter, ifindex};

/// `bpf_redirect`'s verdict on the tc path.
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The other node of the tests: the load balancer when this node is the
/// backend's, the backend's node when this node balances.
const NODE2: [u8; 4] = [172, 30, 0, 12];
/// DSR frontends: TCP and UDP NodePorts, a LoadBalancer IP.
const DSR_TCP: u16 = 30090;
const DSR_UDP: u16 = 30091;
const DSR_LOCAL: u16 = 30092;
const DSR_LB_PORT: u16 = 8443;
/// A DSR NodePort with `sessionAffinity: ClientIP`, two remote backends.
const DSR_AFFINITY: u16 = 30093;

fn dsr(backends: &[([u8; 4], u16)]) -> Frontend {
    Frontend {
        backends: backends
            .iter()
            .map(|(ip, p)| Backend::new(*ip, *p))
            .collect(),
        flags: SERVICE_FLAG_NODEPORT | SERVICE_FLAG_DSR,
        affinity_timeout_secs: 0,
        source_ranges: Vec::new(),
    }
}

/// The NodePort tests' services (SNAT, unchanged) plus DSR frontends.
fn dsr_services() -> DesiredServices {
    let mut desired = services();
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_TCP, IPPROTO_TCP),
        dsr(&[(LOCAL_POD, 8080), (REMOTE_POD, 8080)]),
    );
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_UDP, IPPROTO_UDP),
        dsr(&[(REMOTE_POD, 5300), (LOCAL_POD, 5300)]),
    );
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_LOCAL, IPPROTO_TCP),
        dsr(&[(LOCAL_POD, 8080)]),
    );
    desired.insert(
        ServiceKey::new(LB_IP, DSR_LB_PORT, IPPROTO_TCP),
        dsr(&[(LOCAL_POD, 8080), (REMOTE_POD, 8080)]),
    );
    desired
}

/// A DSR frontend with one remote backend only (the LB node's view).
fn remote_only(desired: &mut DesiredServices) {
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_AFFINITY, IPPROTO_TCP),
        Frontend {
            affinity_timeout_secs: 60,
            ..dsr(&[(REMOTE_POD, 8080), ([10, 244, 2, 4], 8080)])
        },
    );
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_TCP, IPPROTO_TCP),
        dsr(&[(REMOTE_POD, 8080)]),
    );
    desired.insert(
        ServiceKey::new(NODE_IP, DSR_UDP, IPPROTO_UDP),
        dsr(&[(REMOTE_POD, 5300)]),
    );
    desired.insert(
        ServiceKey::new(LB_IP, DSR_LB_PORT, IPPROTO_TCP),
        dsr(&[(REMOTE_POD, 8080)]),
    );
}

/// A datapath seeded as the load-balancing node of [`dsr_services`], every
/// backend on another node.
fn lb_node() -> (Datapath, PinDir) {
    let (mut dp, dir) = load();
    let mut desired = dsr_services();
    remote_only(&mut desired);
    dp.seed(&desired);
    dp.maps
        .set_node(Some(NODE_IP.into()), Some(mac(0x0b)))
        .expect("node facts");
    (dp, dir)
}

/// Runs `body` on a thread inside the fresh test netns `wdp9-<tag>-<pid>`
/// ([`netns`]), where the programs' FIB lookups see the test topology.
fn in_netns(tag: &str, body: impl FnOnce() + Send) {
    let ns_name = format!("wdp9-{tag}-{}", std::process::id());
    let _ns = netns(&ns_name);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&ns_name);
                body();
            })
            .join()
            .expect("netns thread");
    });
}

/// The test netns: `fib_netns` plus this node's pods behind `wdp2v1`.
fn netns(name: &str) -> Netns {
    let ns = fib_netns(name);
    run(&format!("ip -n {name} route add 10.244.1.0/24 dev wdp2v1"));
    ns
}

/// The option bytes naming `addr:port`.
fn option(addr: [u8; 4], port: u16) -> [u8; 8] {
    let p = port.to_be_bytes();
    [
        DSR_OPT_TYPE,
        DSR_OPT_LEN,
        p[0],
        p[1],
        addr[0],
        addr[1],
        addr[2],
        addr[3],
    ]
}

/// RFC 1071 checksum of `data` (0 when a header's own checksum is right).
fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `frame` (an option-less IPv4 frame) with `opt` inserted as IPv4 options
/// (IHL, total length and header checksum fixed).
fn with_option(frame: &[u8], opt: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f.splice(34..34, opt.iter().copied());
    f[14] = 0x40 | (5 + opt.len() / 4) as u8;
    let tot = u16::from_be_bytes([f[16], f[17]]) + opt.len() as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&f[14..34 + opt.len()]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Checks a frame that must carry the DSR option: IHL 7, total length, the
/// header checksum over all 28 bytes; then the frame without the option
/// through `check` (which verifies the L4 checksum from scratch). Returns
/// what it says and the option bytes.
fn check_dsr(frame: &[u8]) -> (Seen, [u8; 8]) {
    assert_eq!(frame[14], 0x47, "IHL 7: one 8-byte option");
    let tot = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    assert_eq!(tot, frame.len() - 14, "total length counts the option");
    assert_eq!(
        csum(&frame[14..42]),
        0,
        "IPv4 header checksum over the option"
    );
    let opt: [u8; 8] = frame[34..42].try_into().expect("8 bytes");
    let mut plain = frame.to_vec();
    plain.drain(34..42);
    plain[14] = 0x45;
    plain[16..18].copy_from_slice(&((tot - 8) as u16).to_be_bytes());
    plain[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&plain[14..34]);
    plain[24..26].copy_from_slice(&c.to_be_bytes());
    (check(&plain), opt)
}

/// A UDP frame of `len` bytes of IPv4 (checksum set).
fn big_udp(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let small = udp(CLIENT, sport, NODE_IP, dport, false);
    let mut l4 = small[34..42].to_vec();
    let l4_len = len - 20;
    l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    l4.resize(l4_len, 0x61);
    super::tests::ipv4_frame(CLIENT, NODE_IP, IPPROTO_UDP, l4, Some(6))
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn dsr_tc_load_balancer_encodes_the_frontend_in_an_option() {
    let (dp, _dir) = lb_node();
    in_netns("dtc", || {
        let node_ingress = |p: &[u8]| dp.run_program(program_names::NODE_INGRESS, p);

        // A SYN: DNAT only, the option names the NodePort, out to node2.
        let syn = tcp(CLIENT, 40000, NODE_IP, DSR_TCP, SYN);
        let (verdict, out) = node_ingress(&syn);
        assert_eq!(verdict, TC_ACT_REDIRECT, "DSR SYN is forwarded");
        let (seen, opt) = check_dsr(&out);
        assert_eq!(seen.src, (CLIENT, 40000), "the client address is kept");
        assert_eq!(seen.dst, (REMOTE_POD, 8080));
        assert_eq!(opt, option(NODE_IP, DSR_TCP));
        assert_eq!(out[0..6], mac(0x0c), "to node2's MAC");
        assert_eq!(out[6..12], mac(0x0b), "from the node's MAC");
        // The TCP header and payload follow, unchanged but for the
        // destination port and the checksum.
        assert_eq!(out[42 + 4..42 + 16], syn[34 + 4..34 + 16]);
        assert_eq!(out[42 + 18..], syn[34 + 18..]);
        let forward = dp
            .conntrack()
            .get(&ct_key((CLIENT, 40000), (NODE_IP, DSR_TCP), IPPROTO_TCP), 0)
            .expect("forward entry");
        assert_eq!(forward.direction, CT_DIR_FORWARD);
        assert_eq!(forward.flags, CT_FLAG_NODEPORT | CT_FLAG_DSR);
        assert!(
            dp.conntrack()
                .get(&ct_key((REMOTE_POD, 8080), (CLIENT, 40000), IPPROTO_TCP), 0)
                .is_err(),
            "no reverse entry: replies do not come back here"
        );

        // The connection's later packets: DNAT, no option.
        let (verdict, out) = node_ingress(&tcp(CLIENT, 40000, NODE_IP, DSR_TCP, ACK));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x45, "no option after the SYN");
        let seen = check(&out);
        assert_eq!((seen.src, seen.dst), ((CLIENT, 40000), (REMOTE_POD, 8080)));

        // UDP: every datagram that fits carries the option.
        for (i, with_csum) in [(0, true), (1, true), (2, false)] {
            let (verdict, out) = node_ingress(&udp(CLIENT, 5353, NODE_IP, DSR_UDP, with_csum));
            assert_eq!(verdict, TC_ACT_REDIRECT, "datagram {i}");
            let (seen, opt) = check_dsr(&out);
            assert_eq!((seen.src, seen.dst), ((CLIENT, 5353), (REMOTE_POD, 5300)));
            assert_eq!(opt, option(NODE_IP, DSR_UDP), "datagram {i}");
            assert_eq!(
                out[42 + 6..42 + 8] == [0, 0],
                !with_csum,
                "a zero UDP checksum stays zero"
            );
        }
        // ... a later one too large for the option goes without it.
        let (verdict, out) = node_ingress(&big_udp(5353, DSR_UDP, 1500));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x45, "no room for the option");
        assert_eq!(check(&out).dst, (REMOTE_POD, 5300));
        // A new flow whose first datagram has no room: SNAT instead.
        let (verdict, out) = node_ingress(&big_udp(5354, DSR_UDP, 1496));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x45);
        let seen = check(&out);
        assert_eq!(
            (seen.src.0, seen.dst),
            (NODE_IP, (REMOTE_POD, 5300)),
            "SNAT fallback"
        );
        let ct = dp
            .conntrack()
            .get(&ct_key((CLIENT, 5354), (NODE_IP, DSR_UDP), IPPROTO_UDP), 0)
            .expect("forward entry");
        assert_eq!(ct.flags, CT_FLAG_NODEPORT | CT_FLAG_SNAT);
        // ... and one that just fits gets it.
        let (verdict, out) = node_ingress(&big_udp(5355, DSR_UDP, 1492));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(check_dsr(&out).0.src, (CLIENT, 5355));

        // A LoadBalancer IP frontend: the option names it.
        let (verdict, out) = node_ingress(&tcp(CLIENT, 40001, LB_IP, DSR_LB_PORT, SYN));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(check_dsr(&out).1, option(LB_IP, DSR_LB_PORT));

        // A backend on this node: nothing to return directly; SNAT as before.
        let (verdict, out) = node_ingress(&tcp(CLIENT, 40002, NODE_IP, DSR_LOCAL, SYN));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x45, "no option for a local backend");
        assert_eq!(check(&out).src.0, NODE_IP);

        // A SYN that already has IPv4 options: SNAT, options kept.
        let nops = with_option(&tcp(CLIENT, 40003, NODE_IP, DSR_TCP, SYN), &[1, 1, 1, 1]);
        let (verdict, out) = node_ingress(&nops);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x46, "its own options only");
        assert_eq!(&out[26..30], &NODE_IP, "SNAT fallback");

        // SNAT-mode services are unchanged.
        let (verdict, out) = node_ingress(&tcp(CLIENT, 40004, NODE_IP, 30080, SYN));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out[14], 0x45);
        let seen = check(&out);
        assert_eq!((seen.src.0, seen.dst), (NODE_IP, (REMOTE_POD, 8080)));

        // Session affinity: every connection of the client sticks to
        // one backend, each with the option.
        let mut chosen = BTreeSet::new();
        for port in 40100..40108u16 {
            let (verdict, out) = node_ingress(&tcp(CLIENT, port, NODE_IP, DSR_AFFINITY, SYN));
            assert_eq!(verdict, TC_ACT_REDIRECT, "client port {port}");
            let (seen, opt) = check_dsr(&out);
            assert_eq!(opt, option(NODE_IP, DSR_AFFINITY));
            chosen.insert(seen.dst);
        }
        assert_eq!(chosen.len(), 1, "one backend for the client: {chosen:?}");
    });
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn dsr_xdp_load_balancer_encodes_like_tc() {
    let (dp, _dir) = lb_node();
    in_netns("dxd", || {
        let eth = ifindex("wdp2v0");
        let xdp = |f: &[u8]| dp.run_xdp(f, eth);

        let syn = tcp(CLIENT, 40000, NODE_IP, DSR_TCP, SYN);
        let (verdict, out) = xdp(&syn);
        assert_eq!(verdict, XDP_TX, "DSR SYN to a remote backend");
        let (seen, opt) = check_dsr(&out);
        assert_eq!((seen.src, seen.dst), ((CLIENT, 40000), (REMOTE_POD, 8080)));
        assert_eq!(opt, option(NODE_IP, DSR_TCP));
        assert_eq!(out[0..6], mac(0x0c), "to node2's MAC");
        assert_eq!(out[6..12], mac(0x0b), "from the node's MAC");
        let forward = dp
            .conntrack()
            .get(&ct_key((CLIENT, 40000), (NODE_IP, DSR_TCP), IPPROTO_TCP), 0)
            .expect("forward entry");
        assert_eq!(forward.flags, CT_FLAG_NODEPORT | CT_FLAG_DSR, "tc's entry");
        // tc makes the same frame of a retransmitted SYN.
        let (verdict, tc_out) = dp.run_program(program_names::NODE_INGRESS, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(tc_out, out, "tc and XDP write the same frame");

        // Later packets follow conntrack without the option.
        let (verdict, out) = xdp(&tcp(CLIENT, 40000, NODE_IP, DSR_TCP, ACK));
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out[14], 0x45);
        assert_eq!(check(&out).dst, (REMOTE_POD, 8080));

        // UDP, with and without checksum: the option on each datagram.
        for with_csum in [true, false] {
            let (verdict, out) = xdp(&udp(CLIENT, 5353, NODE_IP, DSR_UDP, with_csum));
            assert_eq!(verdict, XDP_TX, "UDP (checksum {with_csum})");
            let (seen, opt) = check_dsr(&out);
            assert_eq!((seen.src, seen.dst), ((CLIENT, 5353), (REMOTE_POD, 5300)));
            assert_eq!(opt, option(NODE_IP, DSR_UDP));
        }
        // Too large for the option: later datagram without it...
        let (verdict, out) = xdp(&big_udp(5353, DSR_UDP, 1500));
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out[14], 0x45);
        // ... a first one is tc's (which falls back to SNAT), untouched.
        let first = big_udp(5354, DSR_UDP, 1496);
        let before = dp.conntrack().keys().count();
        assert_eq!(xdp(&first), (XDP_PASS, first.clone()), "tc decides");
        assert_eq!(dp.conntrack().keys().count(), before, "nothing recorded");

        // Session affinity is tc's (per-client state), untouched here.
        let sticky = tcp(CLIENT, 40100, NODE_IP, DSR_AFFINITY, SYN);
        assert_eq!(xdp(&sticky), (XDP_PASS, sticky.clone()));

        // SNAT-mode services are unchanged.
        let (verdict, out) = xdp(&tcp(CLIENT, 40004, NODE_IP, 30080, SYN));
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out[14], 0x45);
        assert_eq!(check(&out).src.0, NODE_IP);
    });
}

#[test]
#[ignore = "privileged: loads BPF programs and creates a netns (root)"]
fn dsr_backend_node_checks_records_and_replies_directly() {
    let (mut dp, dir) = load();
    dp.seed(&dsr_services());
    dp.maps
        .set_node(Some(NODE_IP.into()), Some(mac(0x0b)))
        .expect("node facts");
    let nodes: BTreeSet<Ipv4Addr> = [NODE_IP.into(), NODE2.into()].into();
    dp.set_node_addrs(&nodes).expect("node addresses");
    in_netns("dbe", || {
        let node_ingress = |p: &[u8]| dp.run_program(program_names::NODE_INGRESS, p);

        // node2 balanced the client's SYN to our pod: accepted as is.
        let syn = with_option(
            &tcp(CLIENT, 40000, LOCAL_POD, 8080, SYN),
            &option(NODE2, DSR_TCP),
        );
        assert_eq!(node_ingress(&syn), (TC_ACT_OK, syn.clone()), "to the pod");
        let reverse = dp
            .conntrack()
            .get(&ct_key((LOCAL_POD, 8080), (CLIENT, 40000), IPPROTO_TCP), 0)
            .expect("reverse entry");
        assert_eq!(reverse.direction, CT_DIR_REVERSE);
        assert_eq!(reverse.flags, CT_FLAG_NODEPORT | CT_FLAG_DSR);
        assert_eq!(
            (reverse.frontend_addr, u16::from_be(reverse.frontend_port)),
            (u32::from_ne_bytes(NODE2), DSR_TCP)
        );
        // The pod's reply leaves from node2's NodePort, straight to the client.
        let (verdict, out) = dp.run(&tcp(LOCAL_POD, 8080, CLIENT, 40000, SYN | ACK));
        assert_eq!(verdict, TC_ACT_REDIRECT, "out past the stack");
        let seen = check(&out);
        assert_eq!((seen.src, seen.dst), ((NODE2, DSR_TCP), (CLIENT, 40000)));
        assert_eq!(out[0..6], mac(0x64), "to the client's MAC");
        // The client's next packets (no option) pass untouched.
        let ack = tcp(CLIENT, 40000, LOCAL_POD, 8080, ACK);
        assert_eq!(node_ingress(&ack), (TC_ACT_OK, ack.clone()));
        assert_eq!(dp.run_program(program_names::TO_POD, &ack).0, TC_ACT_OK);

        // UDP, and a LoadBalancer IP (the same key on every node).
        let dgram = with_option(
            &udp(CLIENT, 5353, LOCAL_POD, 5300, true),
            &option(NODE2, DSR_UDP),
        );
        assert_eq!(node_ingress(&dgram).0, TC_ACT_OK);
        assert_eq!(node_ingress(&dgram).0, TC_ACT_OK, "again: recorded already");
        let (_, out) = dp.run(&udp(LOCAL_POD, 5300, CLIENT, 5353, true));
        assert_eq!(check(&out).src, (NODE2, DSR_UDP));
        let lb = with_option(
            &tcp(CLIENT, 40001, LOCAL_POD, 8080, SYN),
            &option(LB_IP, DSR_LB_PORT),
        );
        assert_eq!(node_ingress(&lb).0, TC_ACT_OK);
        let (_, out) = dp.run(&tcp(LOCAL_POD, 8080, CLIENT, 40001, SYN | ACK));
        assert_eq!(check(&out).src, (LB_IP, DSR_LB_PORT));

        // A packet whose first option is not ours: the usual path.
        let nops = with_option(&tcp(CLIENT, 40002, LOCAL_POD, 8080, SYN), &[1, 1, 1, 1]);
        assert_eq!(node_ingress(&nops), (TC_ACT_OK, nops.clone()));

        // Spoofed and malformed options: dropped, counted, flow events,
        // nothing recorded.
        let spoof = |sport: u16, dst: ([u8; 4], u16), opt: &[u8]| {
            with_option(&tcp(CLIENT, sport, dst.0, dst.1, SYN), opt)
        };
        let mut short = option(NODE2, DSR_TCP);
        short[1] = 6;
        let cases = [
            (
                "an unknown frontend port",
                spoof(41000, (LOCAL_POD, 8080), &option(NODE2, 30099)),
            ),
            (
                "a frontend address that is no node",
                spoof(41001, (LOCAL_POD, 8080), &option([172, 30, 0, 77], DSR_TCP)),
            ),
            (
                "a frontend without DSR",
                spoof(41002, (LOCAL_POD, 8080), &option(NODE2, 30081)),
            ),
            (
                "a destination that is no backend",
                spoof(41003, (LOCAL_POD, 9999), &option(NODE2, DSR_TCP)),
            ),
            (
                "a backend on another node",
                spoof(41004, (REMOTE_POD, 8080), &option(NODE2, DSR_TCP)),
            ),
            (
                "a wrong option length",
                spoof(41005, (LOCAL_POD, 8080), &short),
            ),
            (
                "a truncated option",
                spoof(41006, (LOCAL_POD, 8080), &option(NODE2, DSR_TCP)[..4]),
            ),
        ];
        for (name, packet) in &cases {
            let before = dp.conntrack().keys().count();
            assert_eq!(node_ingress(packet).0, TC_ACT_SHOT, "{name}");
            assert_eq!(
                dp.conntrack().keys().count(),
                before,
                "{name}: nothing recorded"
            );
        }
        let drops = dp.drop_counters().expect("drops");
        assert!(
            drops.contains(&("dsr_invalid", cases.len() as u64)),
            "{drops:?}"
        );
        let events: Vec<_> = flow_events(&dir.0)
            .into_iter()
            .filter(|e| e.drop_reason == drop_reason::DSR_INVALID as u16)
            .map(|e| (e.verdict, e.hook, e.sport))
            .collect();
        let want: Vec<_> = (41000..41007u16)
            .map(|p| (VERDICT_DROPPED, hook::NODE_INGRESS, p.to_be()))
            .collect();
        assert_eq!(events, want, "one flow event per drop");
    });
}
