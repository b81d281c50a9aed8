//! Privileged tests of socket-level load balancing with real sockets: the
//! socket programs are attached to a test cgroup (`wdp2-*`), a child process
//! (this test binary again, running [`sock_lb_child_process`]) joins that
//! cgroup and a test network namespace whose loopback holds the backend
//! addresses, and reports what its sockets saw. BPF_PROG_TEST_RUN does not
//! support cgroup sock_addr programs, hence real sockets.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weir_ebpf_common::{Backend, IPPROTO_TCP, IPPROTO_UDP, ServiceKey};

use super::tests::PinDir;
use super::traffic_tests::{Netns, in_netns, run};
use super::{
    Datapath, DatapathConfig,
    plan::{DesiredServices, Frontend},
};

/// Env var that turns [`sock_lb_child_process`] into the client:
/// `<cgroup dir>|<netns name>`.
const CHILD_ENV: &str = "WDP2_SOCK_CHILD";
const WEB_VIP: [u8; 4] = [10, 96, 7, 10];
const DNS_VIP: [u8; 4] = [10, 96, 7, 53];
const EMPTY_VIP: [u8; 4] = [10, 96, 7, 99];
/// A service with `sessionAffinity: ClientIP`.
const STICKY_VIP: [u8; 4] = [10, 96, 7, 11];
const BACKENDS: [[u8; 4]; 2] = [[10, 244, 9, 5], [10, 244, 9, 6]];

/// The cgroup2 hierarchy: /sys/fs/cgroup on a pure cgroup2 host,
/// /sys/fs/cgroup/unified on a hybrid one.
fn cgroup2_root() -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.to_owned()
    } else {
        root.join("unified")
    }
}

/// A cgroup v2 directory private to one test, removed on drop (its
/// processes have exited by then).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = cgroup2_root().join(format!("wdp2-sock-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        Self(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn services() -> DesiredServices {
    let web: Vec<Backend> = BACKENDS.iter().map(|ip| Backend::new(*ip, 8080)).collect();
    let dns: Vec<Backend> = BACKENDS.iter().map(|ip| Backend::new(*ip, 5300)).collect();
    DesiredServices::from([
        (ServiceKey::new(WEB_VIP, 80, IPPROTO_TCP), web.into()),
        (ServiceKey::new(DNS_VIP, 53, IPPROTO_UDP), dns.into()),
        (ServiceKey::new(EMPTY_VIP, 80, IPPROTO_TCP), vec![].into()),
        (
            ServiceKey::new(STICKY_VIP, 80, IPPROTO_TCP),
            Frontend {
                backends: BACKENDS.iter().map(|ip| Backend::new(*ip, 8080)).collect(),
                flags: 0,
                affinity_timeout_secs: 60,
                source_ranges: Vec::new(),
            },
        ),
    ])
}

/// Starts, in netns `ns`, a TCP and a UDP server on every backend address;
/// each answers with its own address.
fn start_backends(ns: &str) {
    let sockets = in_netns(ns, || {
        BACKENDS
            .iter()
            .map(|ip| {
                let ip = Ipv4Addr::from(*ip);
                let tcp = TcpListener::bind((ip, 8080)).expect("bind tcp");
                let udp = UdpSocket::bind((ip, 5300)).expect("bind udp");
                (ip, tcp, udp)
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("bind backends");
    for (ip, tcp, udp) in sockets {
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = writeln!(conn, "{ip}");
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(ip.to_string().as_bytes(), from);
            }
        });
    }
}

/// Runs the client process in `cgroup` and `ns`; returns its report lines.
fn run_child(cgroup: &Path, ns: &str) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "--exact",
            "sock_tests::sock_lb_child_process",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{ns}", cgroup.display()))
        .output()
        .expect("spawn the child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest prints "test <name> ... " without a newline before the
        // test's own output, so a report may start mid-line.
        .filter_map(|l| l.split_once("WDP2 ").map(|(_, report)| report))
        .map(str::to_owned)
        .collect()
}

/// What the child reports, one line per probe:
/// - `tcp <getpeername> <reply>` for 16 connects to the web VIP,
/// - `udp-unconnected <recv_from source> <reply> <all 9 datagrams to one backend>`,
/// - `udp-connected <peer_addr> <recv source> <reply>`,
/// - `sticky <reply>` for 16 connects to a VIP with session affinity,
/// - `empty <raw os error>` for a connect to the VIP without backends.
fn child_probes() {
    let web = SocketAddr::from((WEB_VIP, 80));
    let dns = SocketAddr::from((DNS_VIP, 53));
    for _ in 0..16 {
        let mut conn = TcpStream::connect_timeout(&web, Duration::from_secs(2)).expect("connect");
        let peer = conn.peer_addr().expect("getpeername");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).expect("read");
        println!("WDP2 tcp {peer} {}", reply.trim());
    }
    let udp = UdpSocket::bind("0.0.0.0:0").expect("bind");
    udp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    udp.send_to(b"q", dns).expect("send_to");
    let mut buf = [0u8; 64];
    let (n, from) = udp.recv_from(&mut buf).expect("recv_from");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Later datagrams of the same unconnected socket go to the same backend.
    let mut same = true;
    for _ in 0..8 {
        udp.send_to(b"q", dns).expect("send_to");
        let (n, _) = udp.recv_from(&mut buf).expect("recv_from");
        same &= buf[..n] == *first.as_bytes();
    }
    println!("WDP2 udp-unconnected {from} {first} {same}");
    let udp = UdpSocket::bind("0.0.0.0:0").expect("bind");
    udp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    udp.connect(dns).expect("connect udp");
    let peer = udp.peer_addr().expect("getpeername");
    udp.send(b"q").expect("send");
    let (n, from) = udp.recv_from(&mut buf).expect("recv");
    println!(
        "WDP2 udp-connected {peer} {from} {}",
        String::from_utf8_lossy(&buf[..n])
    );
    let sticky = SocketAddr::from((STICKY_VIP, 80));
    for _ in 0..16 {
        let mut conn =
            TcpStream::connect_timeout(&sticky, Duration::from_secs(2)).expect("connect");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).expect("read");
        println!("WDP2 sticky {}", reply.trim());
    }
    let empty =
        TcpStream::connect_timeout(&SocketAddr::from((EMPTY_VIP, 80)), Duration::from_secs(2));
    let errno = empty.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    println!("WDP2 empty {errno}");
}

/// Not a test by itself: the client process of the tests below, which spawn
/// this binary with only this test selected and [`CHILD_ENV`] set. Without
/// the variable (a plain `--ignored` run) it has nothing to do.
#[test]
#[ignore = "privileged: client process of the socket LB tests (does nothing unless they spawn it)"]
fn sock_lb_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (cgroup, ns) = spec.split_once('|').expect("cgroup|netns");
    // This process is dedicated to the probes, so moving all of it into the
    // test cgroup affects nothing else.
    std::fs::write(
        Path::new(cgroup).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the test cgroup");
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    child_probes();
}

fn parse_lines(lines: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let mut tcp = Vec::new();
    let mut other = Vec::new();
    for line in lines {
        match line.strip_prefix("tcp ") {
            Some(rest) => {
                let (peer, reply) = rest.split_once(' ').expect("peer reply");
                tcp.push((peer.to_owned(), reply.to_owned()));
            }
            None => other.push(line.clone()),
        }
    }
    (tcp, other)
}

fn assert_translated(lines: &[String]) {
    let (tcp, other) = parse_lines(lines);
    assert_eq!(tcp.len(), 16, "{lines:?}");
    for (peer, _) in &tcp {
        assert_eq!(peer, "10.96.7.10:80", "getpeername must show the ClusterIP");
    }
    for backend in ["10.244.9.5", "10.244.9.6"] {
        assert!(
            tcp.iter().any(|(_, reply)| reply == backend),
            "16 connects never reached {backend}: {tcp:?}"
        );
    }
    let (sticky, other): (Vec<String>, Vec<String>) =
        other.into_iter().partition(|l| l.starts_with("sticky "));
    assert_eq!(sticky.len(), 16, "{lines:?}");
    assert!(
        sticky.iter().all(|l| *l == sticky[0]),
        "session affinity: one backend for all of the process's connections: {sticky:?}"
    );
    assert_eq!(other.len(), 3, "{lines:?}");
    let unconnected: Vec<&str> = other[0].split(' ').collect();
    assert_eq!(
        &unconnected[..2],
        ["udp-unconnected", "10.96.7.53:53"],
        "{other:?}"
    );
    assert!(
        BACKENDS
            .iter()
            .any(|b| Ipv4Addr::from(*b).to_string() == unconnected[2])
    );
    assert_eq!(
        unconnected[3], "true",
        "one unconnected socket, one backend"
    );
    let connected: Vec<&str> = other[1].split(' ').collect();
    assert_eq!(
        &connected[..3],
        ["udp-connected", "10.96.7.53:53", "10.96.7.53:53"],
        "{other:?}"
    );
    let is_backend = |ip: &str| {
        BACKENDS
            .iter()
            .any(|b| Ipv4Addr::from(*b).to_string() == ip)
    };
    assert!(
        is_backend(connected[3]),
        "connected UDP answered by a backend: {other:?}"
    );
    assert!(
        is_backend(sticky[0].trim_start_matches("sticky ")),
        "sticky connects answered by a backend: {sticky:?}"
    );
    assert_eq!(
        other[2],
        format!("empty {}", libc_eperm()),
        "a VIP without backends fails at once"
    );
}

/// EPERM, what a cgroup connect hook's "reject" returns.
fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

/// The number of programs `bpftool` lists on `cgroup`.
fn attached_programs(cgroup: &Path) -> usize {
    let out = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("run bpftool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("weir_sock_"))
        .count()
}

#[test]
#[ignore = "privileged: creates a cgroup and netns, attaches cgroup BPF programs (root)"]
fn datapath_sock_lb_translates_cluster_ips_at_connect_and_survives_restarts() {
    let pins = PinDir::new();
    let cgroup = TestCgroup::new();
    let ns = format!("wdp2-sock-{}", std::process::id());
    let _netns = Netns(vec![ns.clone()]);
    run(&format!("ip netns add {ns}"));
    run(&format!("ip -n {ns} link set lo up"));
    for b in BACKENDS {
        run(&format!(
            "ip -n {ns} addr add {}/32 dev lo",
            Ipv4Addr::from(b)
        ));
    }
    start_backends(&ns);
    let cfg = DatapathConfig {
        bpffs_dir: pins.0.clone(),
        cgroup_dir: Some(cgroup.0.clone()),
        node: None,
    };

    let mut dp = Datapath::load(&cfg).expect("load");
    dp.seed(&services());
    assert_eq!(attached_programs(&cgroup.0), 4);
    assert_translated(&run_child(&cgroup.0, &ns));

    // The refused connect to the VIP without backends is a flow event too:
    // hook socket, no_backend, the frontend as the destination, no source.
    let refused: Vec<_> = crate::policy_dp_tests::flow_events(&pins.0)
        .into_iter()
        .filter(|e| e.hook == weir_ebpf_common::flow::hook::SOCK)
        .collect();
    assert!(
        refused
            .iter()
            .any(|e| e.daddr == u32::from_ne_bytes(EMPTY_VIP)
                && e.dport == 80u16.to_be()
                && e.saddr == 0
                && e.verdict == weir_ebpf_common::flow::VERDICT_DROPPED
                && u32::from(e.drop_reason) == weir_ebpf_common::drop_reason::NO_BACKEND),
        "no socket-hook flow event for the refused connect: {refused:?}"
    );

    // Outside the cgroup nothing is translated: from this process the VIP
    // is just an unroutable address in the test namespace.
    let outside = in_netns(&ns, || {
        TcpStream::connect_timeout(&SocketAddr::from((WEB_VIP, 80)), Duration::from_secs(1))
            .map(|_| ())
            .map_err(|e| e.kind())
    })
    .join()
    .expect("join");
    assert!(
        outside.is_err(),
        "a socket outside the cgroup was translated"
    );

    // The agent exits: the pinned links keep balancing.
    drop(dp);
    assert_translated(&run_child(&cgroup.0, &ns));

    // A new agent replaces the links instead of stacking a second set.
    let dp = Datapath::load(&cfg).expect("reload");
    assert_eq!(attached_programs(&cgroup.0), 4);
    assert_translated(&run_child(&cgroup.0, &ns));
    drop(dp);
    drop(pins);
    // With the pins gone the programs are detached.
    assert_eq!(attached_programs(&cgroup.0), 0);
}
