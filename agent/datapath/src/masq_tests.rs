//! Privileged BPF_PROG_TEST_RUN tests of masquerade: the node-egress program
//! translates pod connections to outside the cluster to the node address,
//! the node-ingress program turns their replies back, and everything else
//! passes byte for byte.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, CT_FLAG_MASQ, CT_FLAG_SNAT, CtKey, CtValue, IPPROTO_TCP,
    NODEPORT_SNAT_PORT_MIN, NODEPORT_SNAT_PORTS, masq::map_names, program_names,
};

use super::masq::Masquerade;
use super::tests::{ACK, SYN, TC_ACT_OK, check, ct_key, load, tcp, udp};

const NODE_IP: [u8; 4] = [172, 30, 0, 11];
const OTHER_NODE: [u8; 4] = [172, 30, 0, 12];
const EXT: [u8; 4] = [172, 30, 0, 100];
const POD: [u8; 4] = [10, 244, 1, 3];
const POD2: [u8; 4] = [10, 244, 1, 4];
const REMOTE_POD: [u8; 4] = [10, 244, 2, 3];

fn masquerade() -> Masquerade {
    Masquerade {
        pod_cidr: "10.244.1.0/24".parse().expect("cidr"),
        non_masquerade: ["10.244.0.0/16", "172.30.0.12/32"]
            .iter()
            .map(|s| s.parse().expect("cidr"))
            .collect::<BTreeSet<_>>(),
    }
}

fn masq_ct(dp: &super::Datapath, key: &CtKey) -> Option<CtValue> {
    let map = dp.ebpf.map(map_names::MASQ_CT).expect("masq map");
    let ct: HashMap<&MapData, CtKey, CtValue> = HashMap::try_from(map).expect("hash map");
    ct.get(key, 0).ok()
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_masquerades_pod_connections_leaving_the_cluster() {
    let (mut dp, _dir) = load();
    dp.maps
        .set_node(Some(Ipv4Addr::from(NODE_IP)), None)
        .expect("node facts");
    dp.set_masquerade(Some(&masquerade())).expect("masquerade");
    let egress = |p: &[u8]| dp.run_program(program_names::NODE_EGRESS, p);
    let ingress = |p: &[u8]| dp.run_program(program_names::NODE_INGRESS, p);

    // A pod's SYN to outside: source becomes node:port, destination kept.
    let (verdict, out) = egress(&tcp(POD, 40000, EXT, 80, SYN));
    assert_eq!(verdict, TC_ACT_OK);
    let seen = check(&out);
    assert_eq!(seen.dst, (EXT, 80));
    assert_eq!(seen.src.0, NODE_IP, "source is the node address");
    let port = seen.src.1;
    assert!(port >= NODEPORT_SNAT_PORT_MIN, "SNAT port {port}");

    // Both entries: forward in WEIR_MASQ_CT, reverse (CT_FLAG_MASQ) in WEIR_CT.
    let fwd = masq_ct(&dp, &ct_key((POD, 40000), (EXT, 80), IPPROTO_TCP)).expect("forward");
    assert_eq!(fwd.direction, CT_DIR_FORWARD);
    assert_eq!(fwd.flags, CT_FLAG_MASQ | CT_FLAG_SNAT);
    let rev = dp
        .conntrack()
        .get(&ct_key((EXT, 80), (NODE_IP, port), IPPROTO_TCP), 0)
        .expect("reverse entry");
    assert_eq!(rev.direction, CT_DIR_REVERSE);
    assert_eq!(rev.flags, CT_FLAG_MASQ | CT_FLAG_SNAT);
    assert!(
        dp.conntrack()
            .get(&ct_key((POD, 40000), (EXT, 80), IPPROTO_TCP), 0)
            .is_err(),
        "no forward entry in WEIR_CT, where the pod hooks would see it"
    );

    // The reply comes back to the pod; the next packets keep the port.
    let (verdict, out) = ingress(&tcp(EXT, 80, NODE_IP, port, SYN | ACK));
    assert_eq!(verdict, TC_ACT_OK, "the stack routes the reply to the pod");
    let seen = check(&out);
    assert_eq!((seen.src, seen.dst), ((EXT, 80), (POD, 40000)));
    let (_, out) = egress(&tcp(POD, 40000, EXT, 80, ACK));
    assert_eq!(
        check(&out).src,
        (NODE_IP, port),
        "same port for the connection"
    );
    let (_, out) = egress(&tcp(POD, 40000, EXT, 80, SYN));
    assert_eq!(check(&out).src, (NODE_IP, port), "a retransmitted SYN too");

    // Another pod to the same destination port gets another port.
    let (_, out) = egress(&tcp(POD2, 40000, EXT, 80, SYN));
    let other = check(&out).src;
    assert_eq!(other.0, NODE_IP);
    assert_ne!(other.1, port, "SNAT ports are unique per destination");

    // UDP, with and without a checksum.
    for with_csum in [true, false] {
        let sport = if with_csum { 5000 } else { 5001 };
        let (verdict, out) = egress(&udp(POD, sport, EXT, 53, with_csum));
        assert_eq!(verdict, TC_ACT_OK);
        let seen = check(&out);
        assert_eq!(seen.src.0, NODE_IP, "UDP masqueraded (csum {with_csum})");
        let (verdict, back) = ingress(&udp(EXT, 53, NODE_IP, seen.src.1, with_csum));
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(check(&back).dst, (POD, sport));
        if !with_csum {
            assert_eq!(out[40..42], [0, 0], "a zero UDP checksum stays zero");
        }
    }

    // What passes untouched, byte for byte.
    let untouched = [
        (
            "pod to a pod of another node",
            tcp(POD, 40001, REMOTE_POD, 8080, SYN),
        ),
        (
            "pod to another node",
            tcp(POD, 40002, OTHER_NODE, 10250, SYN),
        ),
        ("the node's own traffic", tcp(NODE_IP, 40003, EXT, 80, SYN)),
        (
            "another node's pod (routed through)",
            tcp(REMOTE_POD, 40004, EXT, 80, SYN),
        ),
        (
            "TCP that is not a new connection",
            tcp(POD, 40005, EXT, 80, ACK),
        ),
        (
            "the node's replies",
            tcp(NODE_IP, 22, EXT, 50000, SYN | ACK),
        ),
    ];
    for (what, packet) in &untouched {
        let (verdict, out) = egress(packet);
        assert_eq!(verdict, TC_ACT_OK, "{what}");
        assert_eq!(&out, packet, "{what}: must pass unchanged");
    }
    // A reply for a port nobody masqueraded: not ours.
    let stray = tcp(EXT, 80, NODE_IP, 65000, ACK);
    assert_eq!(ingress(&stray), (TC_ACT_OK, stray.clone()));

    // Off: nothing is translated; the trie is emptied.
    dp.set_masquerade(None).expect("off");
    let packet = tcp(POD, 40006, EXT, 80, SYN);
    assert_eq!(
        dp.run_program(program_names::NODE_EGRESS, &packet),
        (TC_ACT_OK, packet.clone()),
        "masquerade off"
    );
    let map = dp.ebpf.map(map_names::MASQ_SKIP).expect("trie");
    let trie: aya::maps::lpm_trie::LpmTrie<&MapData, u32, u8> =
        aya::maps::lpm_trie::LpmTrie::try_from(map).expect("lpm");
    assert_eq!(trie.keys().count(), 0, "no prefix left");
}

/// The Internet checksum of `data` (RFC 1071), as stored.
fn inet_csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const ECHO_PAYLOAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// An ICMP echo (`ty` 8 request, 0 reply) with identifier `id`, sequence 7.
fn echo(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
    let mut icmp = vec![ty, 0, 0, 0, 0, 0, 0, 7];
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(ECHO_PAYLOAD);
    let c = inet_csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    super::tests::ipv4_frame(src, dst, 1, icmp, None)
}

/// (source, destination, identifier) of an echo, after recomputing both
/// checksums from scratch and checking the rest of the message is intact.
fn check_echo(frame: &[u8], ty: u8) -> ([u8; 4], [u8; 4], u16) {
    let ip = &frame[14..34];
    assert_eq!(inet_csum(ip), 0, "IPv4 header checksum is wrong");
    let icmp = &frame[34..];
    assert_eq!(inet_csum(icmp), 0, "ICMP checksum is wrong");
    assert_eq!((icmp[0], icmp[1]), (ty, 0), "type and code kept");
    assert_eq!(icmp[6..8], [0, 7], "sequence kept");
    assert_eq!(&icmp[8..], ECHO_PAYLOAD, "payload kept");
    let addr = |at: usize| -> [u8; 4] { ip[at..at + 4].try_into().expect("4 bytes") };
    (addr(12), addr(16), u16::from_be_bytes([icmp[4], icmp[5]]))
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_masquerades_pod_icmp_echo() {
    const ICMP: u8 = 1;
    const REQUEST: u8 = 8;
    const REPLY: u8 = 0;
    let (mut dp, _dir) = load();
    dp.maps
        .set_node(Some(Ipv4Addr::from(NODE_IP)), None)
        .expect("node facts");
    dp.set_masquerade(Some(&masquerade())).expect("masquerade");
    let egress = |p: &[u8]| dp.run_program(program_names::NODE_EGRESS, p);
    let ingress = |p: &[u8]| dp.run_program(program_names::NODE_INGRESS, p);
    let snat_range = NODEPORT_SNAT_PORT_MIN..=NODEPORT_SNAT_PORT_MIN + (NODEPORT_SNAT_PORTS - 1);

    // A pod's echo request to outside: node address, an identifier from the
    // SNAT range, both checksums right.
    let (verdict, out) = egress(&echo(POD, EXT, REQUEST, 0x1234));
    assert_eq!(verdict, TC_ACT_OK);
    let (src, dst, id) = check_echo(&out, REQUEST);
    assert_eq!((src, dst), (NODE_IP, EXT), "source is the node address");
    assert!(
        snat_range.contains(&id),
        "identifier {id} from the SNAT range"
    );
    let fwd = masq_ct(&dp, &ct_key((POD, 0x1234), (EXT, 0), ICMP)).expect("forward");
    assert_eq!(fwd.flags, CT_FLAG_MASQ | CT_FLAG_SNAT);
    let rev = dp
        .conntrack()
        .get(&ct_key((EXT, 0), (NODE_IP, id), ICMP), 0)
        .expect("reverse entry");
    assert_eq!(rev.direction, CT_DIR_REVERSE);

    // Its reply goes back to the pod with the pod's identifier.
    let (verdict, back) = ingress(&echo(EXT, NODE_IP, REPLY, id));
    assert_eq!(verdict, TC_ACT_OK, "the stack routes the reply to the pod");
    assert_eq!(check_echo(&back, REPLY), (EXT, POD, 0x1234));

    // The next request of the same ping keeps its identifier.
    let (_, out) = egress(&echo(POD, EXT, REQUEST, 0x1234));
    assert_eq!(check_echo(&out, REQUEST), (NODE_IP, EXT, id));

    // Another pod with the same identifier gets another one.
    let (_, out) = egress(&echo(POD2, EXT, REQUEST, 0x1234));
    let (src, _, other) = check_echo(&out, REQUEST);
    assert_eq!(src, NODE_IP);
    assert!(snat_range.contains(&other));
    assert_ne!(other, id, "identifiers are unique per destination");
    let (_, back) = ingress(&echo(EXT, NODE_IP, REPLY, other));
    assert_eq!(check_echo(&back, REPLY), (EXT, POD2, 0x1234));

    // What passes untouched, byte for byte.
    let mut timestamp = echo(POD, EXT, REQUEST, 0x1234);
    timestamp[34] = 13;
    for (what, packet) in [
        (
            "echo to a pod of another node",
            echo(POD, REMOTE_POD, REQUEST, 9),
        ),
        (
            "echo to a non-masqueraded node",
            echo(POD, OTHER_NODE, REQUEST, 9),
        ),
        ("the node's own echo", echo(NODE_IP, EXT, REQUEST, 9)),
        ("an echo reply from a pod", echo(POD, EXT, REPLY, 9)),
        ("another ICMP type", timestamp),
    ] {
        assert_eq!(egress(&packet), (TC_ACT_OK, packet.clone()), "{what}");
    }
    for (what, packet) in [
        ("a reply nobody asked for", echo(EXT, NODE_IP, REPLY, 60000)),
        (
            "an echo request to the node",
            echo(EXT, NODE_IP, REQUEST, id),
        ),
    ] {
        assert_eq!(ingress(&packet), (TC_ACT_OK, packet.clone()), "{what}");
    }
}
