//! Privileged test with real traffic: a node namespace and two pod namespaces
//! wired the way weir-cni wires them (host-side veth "wr*" with the gateway
//! address, /32 routes), the datapath attached in the node namespace, and a
//! real TCP connection and UDP exchange from the client pod to ClusterIPs,
//! with an agent restart in the middle of the TCP connection, and a hairpin
//! connection (the backend pod reaching itself through the ClusterIP).
//!
//! This covers what BPF_PROG_TEST_RUN cannot: checksum offload
//! (CHECKSUM_PARTIAL packets from local sockets), routing after the rewrite,
//! and the reply path through the backend's veth.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use weir_ebpf_common::{Backend, IPPROTO_TCP, IPPROTO_UDP, ServiceKey};

use super::{Datapath, DatapathConfig};

/// Named network namespaces private to this test, deleted on drop (which
/// also deletes their veths).
pub(crate) struct Netns(pub(crate) Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub(crate) fn run(cmd: &str) {
    let args: Vec<&str> = cmd.split(' ').collect();
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("spawn");
    assert!(status.success(), "`{cmd}` failed");
}

/// Runs `f` on a new thread that has entered network namespace `name`.
pub(crate) fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Wires a pod namespace to the node namespace like weir-cni does.
pub(crate) fn wire_pod(node: &str, pod: &str, veth: &str, ip: &str) {
    run(&format!(
        "ip -n {node} link add {veth} type veth peer name eth0 netns {pod}"
    ));
    run(&format!("ip -n {node} addr add 10.244.1.1/32 dev {veth}"));
    run(&format!("ip -n {node} link set {veth} up"));
    run(&format!("ip -n {node} route add {ip}/32 dev {veth}"));
    run(&format!("ip -n {pod} addr add {ip}/32 dev eth0"));
    run(&format!("ip -n {pod} link set eth0 up"));
    run(&format!("ip -n {pod} link set lo up"));
    run(&format!(
        "ip -n {pod} route add 10.244.1.1 dev eth0 scope link"
    ));
    run(&format!(
        "ip -n {pod} route add default via 10.244.1.1 dev eth0"
    ));
}

#[test]
#[ignore = "privileged: creates network namespaces and veths, loads and attaches BPF programs"]
fn datapath_real_traffic_reaches_backends_through_cluster_ips() {
    let prefix = format!("weir-test-dp-{}", std::process::id());
    let (node, client, server) = (
        format!("{prefix}-node"),
        format!("{prefix}-client"),
        format!("{prefix}-server"),
    );
    let _netns = Netns(vec![node.clone(), client.clone(), server.clone()]);
    for ns in [&node, &client, &server] {
        run(&format!("ip netns add {ns}"));
    }
    run(&format!(
        "ip netns exec {node} sysctl -q -w net.ipv4.ip_forward=1"
    ));
    wire_pod(&node, &client, "wrtestdpclnt", "10.244.1.2");
    wire_pod(&node, &server, "wrtestdpsrvr", "10.244.1.3");

    // Backends: a TCP echo server (a thread per connection) and a UDP echo.
    in_netns(&server, || {
        let listener = TcpListener::bind("0.0.0.0:8080").expect("bind tcp");
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || echo_lines(conn));
        }
    });
    let udp_server = in_netns(&server, || {
        let socket = UdpSocket::bind("0.0.0.0:5300").expect("bind udp");
        let mut buf = [0u8; 64];
        let (n, peer) = socket.recv_from(&mut buf).expect("recv");
        socket.send_to(&buf[..n], peer).expect("send");
        peer
    });

    // The datapath, loaded and attached in the node namespace.
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{prefix}-traffic"));
    let _pins = RemoveOnDrop(pin_dir.clone());
    let cfg = DatapathConfig {
        bpffs_dir: pin_dir,
        cgroup_dir: None,
        node: None,
    };
    let start_agent = |cfg: DatapathConfig| {
        in_netns(&node, move || {
            let mut dp = Datapath::load(&cfg).expect("load");
            dp.attach_pod_interfaces().expect("attach");
            dp
        })
        .join()
        .expect("node thread")
    };
    let mut dp = start_agent(cfg.clone());
    let desired = BTreeMap::from([
        (
            ServiceKey::new([10, 96, 0, 10], 80, IPPROTO_TCP),
            vec![Backend::new([10, 244, 1, 3], 8080)].into(),
        ),
        (
            ServiceKey::new([10, 96, 0, 53], 53, IPPROTO_UDP),
            vec![Backend::new([10, 244, 1, 3], 5300)].into(),
        ),
    ]);
    let mut state = dp.read_state().expect("read maps");
    let mut next_slot = state.next_free_slot();
    let ops = super::plan::diff(&desired, &state, &mut next_slot);
    dp.apply(&ops, &mut state).expect("apply");

    // UDP: the reply must come from the VIP (the client's socket checks it).
    let (echo, from) = in_netns(&client, || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket.send_to(b"ping", "10.96.0.53:53").expect("send");
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).expect("UDP reply");
        (buf[..n].to_vec(), from)
    })
    .join()
    .expect("client thread");
    assert_eq!(echo, b"ping");
    assert_eq!(
        from,
        "10.96.0.53:53".parse::<SocketAddr>().expect("addr"),
        "reply comes from the VIP"
    );
    let udp_peer = udp_server.join().expect("udp server");
    assert_eq!(
        udp_peer.ip(),
        Ipv4Addr::new(10, 244, 1, 2),
        "the backend sees the client's address"
    );

    // TCP through the ClusterIP, and the same connection across an agent restart.
    let mut conn = in_netns(&client, || connect("10.96.0.10:80"))
        .join()
        .expect("client thread");
    assert_eq!(exchange(&mut conn, "one"), "one");
    drop(dp); // the agent exits: pinned links and maps keep working
    assert_eq!(
        exchange(&mut conn, "two"),
        "two",
        "established connection while no agent runs"
    );
    let _dp = start_agent(cfg);
    assert_eq!(
        exchange(&mut conn, "three"),
        "three",
        "established connection after the restart"
    );
    let mut fresh = in_netns(&client, || connect("10.96.0.10:80"))
        .join()
        .expect("client thread");
    assert_eq!(
        exchange(&mut fresh, "four"),
        "four",
        "new connection after the restart"
    );

    // Bulk data both ways (GSO/TSO-sized segments with offloaded checksums).
    let big: String = (0..4_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert!(
        exchange(&mut fresh, &big) == big,
        "4 MB echoed intact through the ClusterIP"
    );

    // Hairpin: the backend pod reaches itself through the ClusterIP.
    let mut hairpin = in_netns(&server, || connect("10.96.0.10:80"))
        .join()
        .expect("server-side client thread");
    assert_eq!(exchange(&mut hairpin, "five"), "five", "hairpin connection");
}

pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn connect(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("addr");
    let conn = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to the ClusterIP");
    conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    conn
}

/// Sends one line and returns the echoed line.
pub(crate) fn exchange(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes())
        .expect("write");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("read the echo");
    reply.trim_end().to_owned()
}

pub(crate) fn echo_lines(conn: TcpStream) {
    let mut writer = conn.try_clone().expect("clone");
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}
