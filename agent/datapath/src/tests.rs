//! Privileged tests of the real eBPF object: load it with a private pin
//! directory, seed the maps through the same code the agent uses, run the
//! from-pod program on crafted packets with BPF_PROG_TEST_RUN, and check the
//! verdict, the output bytes (addresses, ports, recomputed checksums) and the
//! conntrack side effects.
//!
//! Run with `cargo test -p weir-datapath -- --ignored` as root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use weir_ebpf_common::{
    Backend, CT_DIR_FORWARD, CT_DIR_REVERSE, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, ServiceKey,
    map_names, program_names,
};

use super::plan::{self, DesiredServices};
use super::{Datapath, DatapathConfig, LINKS_DIR, attach};

pub(crate) const TC_ACT_OK: u32 = 0;
pub(crate) const TC_ACT_SHOT: u32 = 2;

// ---- fixture: a datapath with its own pin directory ----

/// A bpffs directory private to one test, removed (with its pinned maps) on drop.
pub(crate) struct PinDir(pub(crate) PathBuf);

impl PinDir {
    pub(crate) fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/weir-test-dp-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Datapath {
    /// The names of the interfaces the pod programs are attached to.
    fn attached_interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }

    pub(crate) fn program(&self, name: &str) -> &SchedClassifier {
        let program = self.ebpf.program(name).expect("program in object");
        program.try_into().expect("a tc program")
    }

    pub(crate) fn conntrack(&self) -> &HashMap<MapData, CtKey, CtValue> {
        &self.maps.conntrack
    }

    /// Seeds the service maps the way the agent does: plan + apply.
    pub(crate) fn seed(&mut self, desired: &DesiredServices) {
        let mut state = self.read_state().expect("read maps");
        let mut next_slot = state.next_free_slot();
        let ops = plan::diff(desired, &state, &mut next_slot);
        self.apply(&ops, &mut state).expect("apply ops");
    }

    /// Runs the from-pod program on `packet`: (verdict, output bytes).
    pub(crate) fn run(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        self.run_program(program_names::FROM_POD, packet)
    }

    /// Runs the from-pod program on `packet`, which must pass (TC_ACT_OK):
    /// the output bytes.
    pub(crate) fn run_ok(&self, packet: &[u8]) -> Vec<u8> {
        let (verdict, out) = self.run(packet);
        assert_eq!(verdict, TC_ACT_OK, "the packet must pass");
        out
    }

    /// Runs program `name` on `packet`: (verdict, output bytes).
    pub(crate) fn run_program(&self, name: &str, packet: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let result = self
            .program(name)
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }
}

pub(crate) fn load() -> (Datapath, PinDir) {
    let dir = PinDir::new();
    let dp = Datapath::load(&DatapathConfig {
        bpffs_dir: dir.0.clone(),
        cgroup_dir: None,
        node: None,
    })
    .expect("load datapath");
    (dp, dir)
}

// ---- packet crafting and checking (independent of the datapath code) ----

const CLIENT: [u8; 4] = [10, 244, 1, 2];
const WEB_VIP: [u8; 4] = [10, 96, 0, 10];
const DNS_VIP: [u8; 4] = [10, 96, 0, 53];
const EMPTY_VIP: [u8; 4] = [10, 96, 0, 99];
const WEB_BACKENDS: [([u8; 4], u16); 2] = [([10, 244, 1, 5], 8080), ([10, 244, 1, 6], 8080)];
const DNS_BACKEND: ([u8; 4], u16) = ([10, 244, 1, 7], 5300);

fn services() -> DesiredServices {
    let web: Vec<Backend> = WEB_BACKENDS
        .iter()
        .map(|(ip, port)| Backend::new(*ip, *port))
        .collect();
    BTreeMap::from([
        (ServiceKey::new(WEB_VIP, 80, IPPROTO_TCP), web.into()),
        (
            ServiceKey::new(DNS_VIP, 53, IPPROTO_UDP),
            vec![Backend::new(DNS_BACKEND.0, DNS_BACKEND.1)].into(),
        ),
        (ServiceKey::new(EMPTY_VIP, 80, IPPROTO_TCP), vec![].into()),
    ])
}

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + l4_len as u32
}

/// An Ethernet + IPv4 frame with correct checksums. `l4_csum_at` is the
/// offset of the L4 checksum inside `l4` (None: leave it as given).
pub(crate) fn ipv4_frame(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    mut l4: Vec<u8>,
    l4_csum_at: Option<usize>,
) -> Vec<u8> {
    if let Some(at) = l4_csum_at {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let c = csum_fold(pseudo_sum(src, dst, proto, l4.len()) + sum16(&l4));
        let c = if c == 0 && proto == IPPROTO_UDP {
            0xffff
        } else {
            c
        };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let total = (IP_HLEN + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum_fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend(ip);
    frame.extend(l4);
    frame
}

pub(crate) fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(b"hello");
    ipv4_frame(src, dst, IPPROTO_TCP, l4, Some(16))
}

pub(crate) fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, with_csum: bool) -> Vec<u8> {
    let payload = b"query";
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    ipv4_frame(src, dst, IPPROTO_UDP, l4, with_csum.then_some(6))
}

pub(crate) const SYN: u8 = 0x02;
pub(crate) const ACK: u8 = 0x10;

/// What a checked output frame says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) src: ([u8; 4], u16),
    pub(crate) dst: ([u8; 4], u16),
}

/// Parses an output frame and verifies both checksums from scratch.
pub(crate) fn check(frame: &[u8]) -> Seen {
    let ip = &frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    assert_eq!(csum_fold(sum16(ip)), 0, "IPv4 header checksum is wrong");
    let proto = ip[9];
    let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
    let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
    let l4 = &frame[ETH_HLEN + IP_HLEN..];
    let udp_no_csum = proto == IPPROTO_UDP && l4[6..8] == [0, 0];
    if !udp_no_csum {
        assert_eq!(
            csum_fold(pseudo_sum(src, dst, proto, l4.len()) + sum16(l4)),
            0,
            "L4 checksum is wrong"
        );
    }
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    Seen {
        src: (src, port(0)),
        dst: (dst, port(2)),
    }
}

/// The bytes that NAT must not change: everything except the addresses,
/// ports and checksums.
pub(crate) fn invariant_bytes(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let l4 = ETH_HLEN + IP_HLEN;
    let csum_at = if f[ETH_HLEN + 9] == IPPROTO_TCP {
        l4 + 16
    } else {
        l4 + 6
    };
    for i in (ETH_HLEN + 10..ETH_HLEN + 20)
        .chain(l4..l4 + 4)
        .chain(csum_at..csum_at + 2)
    {
        f[i] = 0;
    }
    f
}

pub(crate) fn ct_key(src: ([u8; 4], u16), dst: ([u8; 4], u16), proto: u8) -> CtKey {
    CtKey {
        saddr: u32::from_ne_bytes(src.0),
        daddr: u32::from_ne_bytes(dst.0),
        sport: src.1.to_be(),
        dport: dst.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

// ---- the tests ----

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_translates_service_connections_both_ways() {
    let (mut dp, _dir) = load();
    dp.seed(&services());

    struct Case {
        name: &'static str,
        proto: u8,
        /// Builds a packet from (src, sport, dst, dport).
        packet: fn([u8; 4], u16, [u8; 4], u16) -> Vec<u8>,
        reply: fn([u8; 4], u16, [u8; 4], u16) -> Vec<u8>,
        vip: ([u8; 4], u16),
        backends: &'static [([u8; 4], u16)],
        client_port: u16,
    }
    let cases = [
        Case {
            name: "TCP SYN to a ClusterIP",
            proto: IPPROTO_TCP,
            packet: |s, sp, d, dp| tcp(s, sp, d, dp, SYN),
            reply: |s, sp, d, dp| tcp(s, sp, d, dp, SYN | ACK),
            vip: (WEB_VIP, 80),
            backends: &WEB_BACKENDS,
            client_port: 40000,
        },
        Case {
            name: "UDP to a ClusterIP",
            proto: IPPROTO_UDP,
            packet: |s, sp, d, dp| udp(s, sp, d, dp, true),
            reply: |s, sp, d, dp| udp(s, sp, d, dp, true),
            vip: (DNS_VIP, 53),
            backends: &[DNS_BACKEND],
            client_port: 5353,
        },
        Case {
            name: "UDP without checksum to a ClusterIP",
            proto: IPPROTO_UDP,
            packet: |s, sp, d, dp| udp(s, sp, d, dp, false),
            reply: |s, sp, d, dp| udp(s, sp, d, dp, false),
            vip: (DNS_VIP, 53),
            backends: &[DNS_BACKEND],
            client_port: 5354,
        },
    ];

    for case in cases {
        let client = (CLIENT, case.client_port);
        let request = (case.packet)(client.0, client.1, case.vip.0, case.vip.1);

        // Forward: destination rewritten to one of the backends.
        let (verdict, out) = dp.run(&request);
        assert_eq!(verdict, TC_ACT_OK, "{}: verdict", case.name);
        let seen = check(&out);
        assert_eq!(seen.src, client, "{}: source must not change", case.name);
        let backend = seen.dst;
        assert!(
            case.backends.contains(&backend),
            "{}: {backend:?} is not a backend",
            case.name
        );
        assert_eq!(
            invariant_bytes(&out),
            invariant_bytes(&request),
            "{}: other bytes changed",
            case.name
        );
        if case.name.contains("without checksum") {
            assert_eq!(
                out[ETH_HLEN + IP_HLEN + 6..ETH_HLEN + IP_HLEN + 8],
                [0, 0],
                "{}: zero UDP checksum must stay zero",
                case.name
            );
        }

        // Conntrack: both directions recorded with the chosen backend.
        let ct = dp.conntrack();
        let fwd = ct
            .get(&ct_key(client, case.vip, case.proto), 0)
            .expect("forward conntrack entry");
        assert_eq!(fwd.direction, CT_DIR_FORWARD, "{}", case.name);
        assert_eq!(
            (fwd.backend_addr, u16::from_be(fwd.backend_port)),
            (u32::from_ne_bytes(backend.0), backend.1)
        );
        assert_eq!(
            (fwd.frontend_addr, u16::from_be(fwd.frontend_port)),
            (u32::from_ne_bytes(case.vip.0), case.vip.1)
        );
        assert!(
            fwd.created_ns > 0 && fwd.last_seen_ns >= fwd.created_ns,
            "{}: timestamps",
            case.name
        );
        let rev = ct
            .get(&ct_key(backend, client, case.proto), 0)
            .expect("reverse conntrack entry");
        assert_eq!(rev.direction, CT_DIR_REVERSE, "{}", case.name);

        // The same flow sticks to the same backend.
        let again = dp.run_ok(&request);
        assert_eq!(check(&again).dst, backend, "{}: not sticky", case.name);

        // Reverse: the backend's reply comes back from the VIP.
        let reply = (case.reply)(backend.0, backend.1, client.0, client.1);
        let (verdict, out) = dp.run(&reply);
        assert_eq!(verdict, TC_ACT_OK, "{}: reply verdict", case.name);
        let seen = check(&out);
        assert_eq!(
            seen,
            Seen {
                src: case.vip,
                dst: client
            },
            "{}: reply",
            case.name
        );
        assert_eq!(
            invariant_bytes(&out),
            invariant_bytes(&reply),
            "{}: reply: other bytes changed",
            case.name
        );
    }
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_leaves_other_packets_untouched() {
    let (mut dp, _dir) = load();
    dp.seed(&services());

    let mut fragment = tcp(CLIENT, 40001, WEB_VIP, 80, SYN);
    fragment[ETH_HLEN + 6] |= 0x20; // More Fragments
    let mut ipv6 = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    ipv6.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    ipv6.extend_from_slice(&[0u8; 32]);
    ipv6.extend_from_slice(&tcp(CLIENT, 40002, WEB_VIP, 80, SYN)[ETH_HLEN + IP_HLEN..]);
    let icmp = ipv4_frame(CLIENT, WEB_VIP, 1, vec![8, 0, 0, 0, 0, 1, 0, 1], None);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "TCP to a port the service does not have",
            tcp(CLIENT, 40003, WEB_VIP, 81, SYN),
        ),
        (
            "UDP to a TCP-only service port",
            udp(CLIENT, 40004, WEB_VIP, 80, true),
        ),
        (
            "TCP to an address that is no service",
            tcp(CLIENT, 40005, [10, 244, 1, 9], 80, SYN),
        ),
        ("ICMP to a ClusterIP", icmp),
        ("IPv6", ipv6),
        ("IPv4 fragment to a ClusterIP", fragment),
        // BPF_PROG_TEST_RUN itself rejects (EINVAL) an IPv4 frame shorter than
        // a minimal IPv4 header, so the truncated-IP case is an IHL that
        // points past the end of the packet.
        ("IPv4 header length beyond the packet", {
            let mut p = tcp(CLIENT, 40006, WEB_VIP, 80, SYN)[..ETH_HLEN + IP_HLEN + 8].to_vec();
            p[ETH_HLEN] = 0x4f;
            p
        }),
        (
            "truncated TCP header (ports but no checksum)",
            tcp(CLIENT, 40007, WEB_VIP, 80, SYN)[..ETH_HLEN + IP_HLEN + 10].to_vec(),
        ),
        (
            "truncated UDP header",
            udp(CLIENT, 40008, DNS_VIP, 53, true)[..ETH_HLEN + IP_HLEN + 4].to_vec(),
        ),
        ("ARP", {
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
            arp.extend_from_slice(&[0u8; 28]);
            arp
        }),
    ];
    for (name, packet) in cases {
        let (verdict, out) = dp.run(&packet);
        assert_eq!(verdict, TC_ACT_OK, "{name}: verdict");
        assert_eq!(out, packet, "{name}: bytes changed");
    }
    let ct = dp.conntrack();
    assert_eq!(
        ct.keys().count(),
        0,
        "no conntrack entry for untranslated packets"
    );

    // Control: the seeded services do translate, so the cases above pass
    // because of the packet, not because lookups miss everything.
    for (name, packet) in [
        (
            "TCP to the service port",
            tcp(CLIENT, 40009, WEB_VIP, 80, SYN),
        ),
        (
            "UDP to the DNS service",
            udp(CLIENT, 40010, DNS_VIP, 53, true),
        ),
    ] {
        let (verdict, out) = dp.run(&packet);
        assert_eq!(verdict, TC_ACT_OK, "{name}: verdict");
        assert_ne!(out, packet, "{name}: not translated");
    }
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_drops_new_connections_to_a_service_without_backends() {
    let (mut dp, dir) = load();
    dp.seed(&services());
    let count = |dp: &Datapath| {
        dp.drop_counters()
            .expect("read drop counters")
            .into_iter()
            .find(|(name, _)| *name == "no_backend")
            .map(|(_, n)| n)
    };
    assert_eq!(count(&dp), Some(0));
    let (verdict, _) = dp.run(&tcp(CLIENT, 40010, EMPTY_VIP, 80, SYN));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(count(&dp), Some(1), "the drop is counted, with its reason");

    // The same, read from the pins alone (what an operator's inspection sees).
    let snap = super::inspect::snapshot(&dir.0).expect("snapshot");
    assert_eq!(
        snap.drops.iter().find(|(n, _)| *n == "no_backend"),
        Some(&("no_backend", 1))
    );
    let web: Vec<_> = snap
        .services
        .iter()
        .filter(|(k, _, _)| *k == ServiceKey::new(WEB_VIP, 80, IPPROTO_TCP))
        .flat_map(|(_, _, set)| set.iter().copied())
        .collect();
    assert_eq!(
        web,
        WEB_BACKENDS
            .map(|(ip, port)| Some(Backend::new(ip, port)))
            .to_vec(),
        "the service's backend set, in order"
    );
    assert!(
        super::inspect::render_services(&snap).contains("10.96.0.99:80\tTCP\tcluster\t-\t<none")
    );
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_backend_swap_keeps_established_connections() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    let client = (CLIENT, 41000);
    let out = dp.run_ok(&tcp(client.0, client.1, WEB_VIP, 80, SYN));
    let first = check(&out).dst;

    // Replace the backend set with one new backend.
    let mut desired = services();
    let new_backend = ([10, 244, 1, 42], 9090);
    desired.insert(
        ServiceKey::new(WEB_VIP, 80, IPPROTO_TCP),
        vec![Backend::new(new_backend.0, new_backend.1)].into(),
    );
    dp.seed(&desired);
    let state = dp.read_state().expect("read maps");
    assert_eq!(
        state.backends.len(),
        2,
        "old backend slots are deleted: {state:?}"
    );

    let out = dp.run_ok(&tcp(client.0, client.1, WEB_VIP, 80, ACK));
    assert_eq!(
        check(&out).dst,
        first,
        "an established connection keeps its backend"
    );
    let out = dp.run_ok(&tcp(client.0, 41001, WEB_VIP, 80, SYN));
    assert_eq!(
        check(&out).dst,
        new_backend,
        "a new connection uses the new set"
    );
    // A new connection that reuses the old source port must not follow the
    // stale conntrack entry to the removed backend.
    let out = dp.run_ok(&tcp(client.0, client.1, WEB_VIP, 80, SYN));
    assert_eq!(check(&out).dst, new_backend, "a SYN is balanced afresh");
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_maps_survive_a_reload() {
    let dir = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: dir.0.clone(),
        cgroup_dir: None,
        node: None,
    };
    let mut dp = Datapath::load(&cfg).expect("load");
    dp.seed(&services());
    let before = dp.read_state().expect("read maps");
    assert!(!before.services.is_empty(), "seeded: {before:?}");
    let (verdict, _) = dp.run(&tcp(CLIENT, 40030, WEB_VIP, 80, SYN));
    assert_eq!(verdict, TC_ACT_OK);
    let connections = dp.conntrack().keys().count();
    assert!(connections > 0, "the connection is tracked");
    drop(dp);
    let dp = Datapath::load(&cfg).expect("reload");
    assert_eq!(dp.read_state().expect("read maps"), before);
    assert!(
        dir.0.join(map_names::CONNTRACK).exists(),
        "conntrack is pinned"
    );
    assert_eq!(
        dp.conntrack().keys().count(),
        connections,
        "conntrack entries survive the reload"
    );
}

#[test]
#[ignore = "privileged: creates a network namespace and veths, attaches tc programs"]
fn datapath_attaches_to_pod_veths_idempotently_and_across_restarts() {
    let dir = PinDir::new();
    let cfg = DatapathConfig {
        bpffs_dir: dir.0.clone(),
        cgroup_dir: None,
        node: None,
    };
    // A thread of our own in a fresh network namespace: the namespace and its
    // veths vanish with the thread; the pinned links go with `dir`.
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let ip = |args: &str| {
            let status = std::process::Command::new("ip")
                .args(args.split(' '))
                .status()
                .expect("run ip");
            assert!(status.success(), "ip {args}");
        };
        // What the kernel has attached at TCX ingress of a veth: program ids.
        let kernel_view = |ifname: &str, at: TcAttachType| -> Vec<(String, u32)> {
            let (_, programs) =
                SchedClassifier::query_tcx(ifname, at).expect("query TCX attachments");
            programs
                .iter()
                .map(|p| (p.name_as_str().unwrap_or_default().to_owned(), p.id()))
                .collect()
        };
        let names = |dp: &Datapath| -> Vec<String> {
            dp.attached_interfaces().map(str::to_owned).collect()
        };
        ip("link add wrtestdp00001 type veth peer name ctdp1");
        ip("link add wrtestdp00002 type veth peer name ctdp2");
        ip("link add other0 type veth peer name ctdp3");

        let mut dp = Datapath::load(&cfg).expect("load");
        dp.attach_pod_interfaces().expect("attach");
        assert_eq!(
            names(&dp),
            ["wrtestdp00001", "wrtestdp00002"],
            "only wr* veths"
        );
        dp.attach_pod_interfaces().expect("attach again");
        assert_eq!(names(&dp), ["wrtestdp00001", "wrtestdp00002"], "idempotent");
        let before = kernel_view("wrtestdp00001", TcAttachType::Ingress);
        assert_eq!(before.len(), 1, "exactly one attachment: {before:?}");
        assert_eq!(before[0].0, program_names::FROM_POD);
        let egress = kernel_view("wrtestdp00001", TcAttachType::Egress);
        assert_eq!(egress.len(), 1, "exactly one egress attachment: {egress:?}");
        assert_eq!(egress[0].0, program_names::TO_POD);

        // Agent restart: the pinned link keeps the old program attached...
        drop(dp);
        assert_eq!(
            kernel_view("wrtestdp00001", TcAttachType::Ingress),
            before,
            "still attached without an agent"
        );
        // ...until the new agent adopts the link and swaps its program in.
        let mut dp = Datapath::load(&cfg).expect("reload");
        dp.attach_pod_interfaces().expect("attach after restart");
        let after = kernel_view("wrtestdp00001", TcAttachType::Ingress);
        assert_eq!(after.len(), 1, "adopted, not attached twice: {after:?}");
        assert_ne!(
            after[0].1, before[0].1,
            "the new program replaced the old one"
        );

        // A vanished veth is forgotten and its pin removed.
        ip("link del wrtestdp00002");
        dp.attach_pod_interfaces()
            .expect("attach after a veth vanished");
        assert_eq!(names(&dp), ["wrtestdp00001"]);
        let pins = attach::list_pins(&cfg.bpffs_dir.join(LINKS_DIR)).expect("list pins");
        assert_eq!(
            pins.len(),
            2,
            "the two pins of the remaining veth: {pins:?}"
        );
        assert!(
            pins.iter().all(|p| p.starts_with("wrtestdp00001@")),
            "{pins:?}"
        );
    })
    .join()
    .expect("the test thread panicked (see its message above)");
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_udp_flows_move_off_removed_backends() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    let client = (CLIENT, 6000);
    let out = dp.run_ok(&udp(client.0, client.1, DNS_VIP, 53, true));
    assert_eq!(check(&out).dst, DNS_BACKEND);

    let moved = ([10, 244, 1, 43], 5300);
    let mut desired = services();
    desired.insert(
        ServiceKey::new(DNS_VIP, 53, IPPROTO_UDP),
        vec![Backend::new(moved.0, moved.1)].into(),
    );
    dp.seed(&desired);
    let purged = dp.purge_stale_udp_conntrack(&desired).expect("purge");
    assert_eq!(purged, 2, "forward and reverse entries of the flow");

    let out = dp.run_ok(&udp(client.0, client.1, DNS_VIP, 53, true));
    assert_eq!(
        check(&out).dst,
        moved,
        "the same UDP flow now reaches the new backend"
    );
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_sync_applies_a_plan_with_removals_under_one_lock() {
    use std::sync::{Arc, Mutex};
    let (dp, _dir) = load();
    let dp = Arc::new(Mutex::new(dp));
    let shared = Arc::clone(&dp);
    // Runs on its own thread so that a deadlock fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut current = shared
            .lock()
            .expect("lock")
            .read_state()
            .expect("read maps");
        let mut next_slot = current.next_free_slot();
        let mut desired = services();
        let ops = plan::diff(&desired, &current, &mut next_slot);
        let first = super::sync::apply_plan(&shared, &ops, &desired, &mut current);
        desired.remove(&ServiceKey::new(DNS_VIP, 53, IPPROTO_UDP));
        let ops = plan::diff(&desired, &current, &mut next_slot);
        let second = super::sync::apply_plan(&shared, &ops, &desired, &mut current);
        let _ = tx.send((first.is_ok(), second.is_ok(), current));
    });
    let (first, second, current) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("apply_plan returned (no deadlock)");
    assert!(first && second);
    let kernel = dp.lock().expect("lock").read_state().expect("read maps");
    assert_eq!(kernel, current, "the mirror matches the maps");
    assert_eq!(kernel.services.len(), 2);
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_to_pod_reverse_translates_replies_of_remote_backends_only() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    // The client's connection is translated on this node (from-pod hook)...
    let client = (CLIENT, 42000);
    let out = dp.run_ok(&tcp(client.0, client.1, WEB_VIP, 80, SYN));
    let backend = check(&out).dst;

    let to_pod = program_names::TO_POD;
    // ...the backend's reply arrives from another node, untranslated, and is
    // mapped back to the VIP on its way into the client pod.
    let reply = tcp(backend.0, backend.1, client.0, client.1, SYN | ACK);
    let (verdict, out) = dp.run_program(to_pod, &reply);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        check(&out),
        Seen {
            src: (WEB_VIP, 80),
            dst: client
        }
    );
    assert_eq!(invariant_bytes(&out), invariant_bytes(&reply));

    // Untouched: a reply a local backend's veth already translated, the
    // DNAT-ed request on its way into the backend pod, and unrelated traffic.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "already translated reply",
            tcp(WEB_VIP, 80, client.0, client.1, ACK),
        ),
        (
            "translated request into the backend",
            tcp(client.0, client.1, backend.0, backend.1, SYN),
        ),
        (
            "pod-to-pod traffic",
            tcp([10, 244, 1, 9], 5000, client.0, 6000, SYN),
        ),
        (
            "UDP with no conntrack entry",
            udp(DNS_BACKEND.0, DNS_BACKEND.1, client.0, 7000, true),
        ),
    ];
    for (name, packet) in cases {
        let (verdict, out) = dp.run_program(to_pod, &packet);
        assert_eq!(verdict, TC_ACT_OK, "{name}: verdict");
        assert_eq!(out, packet, "{name}: bytes changed");
    }
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_hairpin_connection_to_itself_is_source_translated() {
    let (mut dp, _dir) = load();
    let vip = [10, 96, 0, 77];
    let mut desired = services();
    desired.insert(
        ServiceKey::new(vip, 80, IPPROTO_TCP),
        vec![Backend::new(CLIENT, 8080)].into(),
    );
    dp.seed(&desired);

    // The pod's request reaches itself from the VIP (keeping its port)...
    let request = tcp(CLIENT, 43000, vip, 80, SYN);
    let (verdict, out) = dp.run(&request);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        check(&out),
        Seen {
            src: (vip, 43000),
            dst: (CLIENT, 8080)
        }
    );
    assert_eq!(invariant_bytes(&out), invariant_bytes(&request));
    // ...its answer goes to the VIP and comes back as the VIP's reply...
    let reply = tcp(CLIENT, 8080, vip, 43000, SYN | ACK);
    let (verdict, out) = dp.run(&reply);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        check(&out),
        Seen {
            src: (vip, 80),
            dst: (CLIENT, 43000)
        }
    );
    // ...and the rest of the connection follows conntrack.
    let out = dp.run_ok(&tcp(CLIENT, 43000, vip, 80, ACK));
    assert_eq!(
        check(&out),
        Seen {
            src: (vip, 43000),
            dst: (CLIENT, 8080)
        }
    );
}

/// An ICMP error (type 3 code 3, port unreachable) from `src` to `dst`
/// quoting the first 28 bytes (IPv4 header + 8) of the IPv4 packet in `frame`.
fn icmp_error(src: [u8; 4], dst: [u8; 4], frame: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&frame[ETH_HLEN..ETH_HLEN + IP_HLEN + 8]);
    let c = csum_fold(sum16(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, 1, icmp, None)
}

/// An address and port.
type Endpoint = ([u8; 4], u16);

/// (outer source, quoted source, quoted destination) of an ICMP error, after
/// checking the outer IPv4, ICMP and quoted IPv4 checksums.
fn check_icmp_error(frame: &[u8]) -> ([u8; 4], Endpoint, Endpoint) {
    let ip = &frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    assert_eq!(csum_fold(sum16(ip)), 0, "outer IPv4 checksum");
    let icmp = &frame[ETH_HLEN + IP_HLEN..];
    assert_eq!(csum_fold(sum16(icmp)), 0, "ICMP checksum");
    let quote = &icmp[8..];
    assert_eq!(
        csum_fold(sum16(&quote[..IP_HLEN])),
        0,
        "quoted IPv4 checksum"
    );
    let addr = |at: usize| -> [u8; 4] { quote[at..at + 4].try_into().expect("4 bytes") };
    let port = |at: usize| u16::from_be_bytes([quote[at], quote[at + 1]]);
    (
        ip[12..16].try_into().expect("4 bytes"),
        (addr(12), port(IP_HLEN)),
        (addr(16), port(IP_HLEN + 2)),
    )
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_translates_icmp_errors_about_translated_connections() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    let request = udp(CLIENT, 5353, DNS_VIP, 53, true);
    let translated = dp.run_ok(&request);
    assert_eq!(
        check(&translated).dst,
        DNS_BACKEND,
        "the flow is translated"
    );

    // The backend answers with port unreachable, quoting what it received.
    let error = icmp_error(DNS_BACKEND.0, CLIENT, &translated);
    for program in [program_names::FROM_POD, program_names::TO_POD] {
        let (verdict, out) = dp.run_program(program, &error);
        assert_eq!(verdict, TC_ACT_OK, "{program}");
        assert_eq!(
            check_icmp_error(&out),
            (DNS_VIP, (CLIENT, 5353), (DNS_VIP, 53)),
            "{program}: the error reads as about the client's own packet, from the frontend"
        );
    }

    // From a router on the way: the quote is translated, the sender kept.
    let router = [10, 244, 1, 1];
    let (verdict, out) = dp.run(&icmp_error(router, CLIENT, &translated));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        check_icmp_error(&out),
        (router, (CLIENT, 5353), (DNS_VIP, 53))
    );

    // Errors about connections that were never translated pass untouched.
    let direct = udp(CLIENT, 5454, DNS_BACKEND.0, DNS_BACKEND.1, true);
    let unrelated = icmp_error(DNS_BACKEND.0, CLIENT, &direct);
    assert_eq!(dp.run(&unrelated), (TC_ACT_OK, unrelated.clone()));
}

#[test]
#[ignore = "privileged: loads BPF programs (root, CAP_BPF)"]
fn datapath_gc_removes_idle_connections_only() {
    let (mut dp, _dir) = load();
    dp.seed(&services());
    // Two UDP flows through the datapath; then age the first one by 10 min.
    for port in [6001, 6002] {
        let (verdict, _) = dp.run(&udp(CLIENT, port, DNS_VIP, 53, true));
        assert_eq!(verdict, TC_ACT_OK);
    }
    assert_eq!(dp.gc_conntrack().expect("gc"), 0, "nothing is idle yet");
    let stale: Vec<(CtKey, CtValue)> = dp
        .conntrack()
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| k.sport == 6001u16.to_be() || k.dport == 6001u16.to_be())
        .collect();
    assert_eq!(
        stale.len(),
        2,
        "forward and reverse entry of the first flow"
    );
    for (key, mut value) in stale {
        value.last_seen_ns = value.last_seen_ns.saturating_sub(600 * 1_000_000_000);
        dp.maps.conntrack.insert(key, value, 0).expect("age entry");
    }
    assert_eq!(
        dp.gc_conntrack().expect("gc"),
        2,
        "the idle flow's two entries"
    );
    let left: Vec<CtKey> = dp.conntrack().keys().filter_map(Result::ok).collect();
    assert_eq!(left.len(), 2, "the active flow stays");
    assert!(
        left.iter()
            .all(|k| k.sport == 6002u16.to_be() || k.dport == 6002u16.to_be()),
        "only the active flow's entries are left: {left:?}"
    );
}
