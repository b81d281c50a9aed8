//! Privileged tests: the built `weir-cni` binary is invoked exactly as a
//! runtime invokes it (CNI_* environment, configuration on stdin, reply on
//! stdout) against network namespaces these tests create and always delete.
//!
//! The "node" is a namespace too (`wcni-<pid>-<test>-node`), so nothing is
//! added to the host namespace; the plugin runs inside it through
//! `ip netns exec`, which is fine for a short-lived CNI plugin (it only
//! remounts /sys, which the plugin does not read).
//!
//! Run with `cargo test -p weir-cni -- --ignored` as root.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_weir-cni");
const POD_CIDR: &str = "10.244.1.0/24";
const GATEWAY: &str = "10.244.1.1";

/// A network namespace that is deleted when dropped, even if the test fails.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Netns {
        // A namespace left by an earlier run with the same pid would make
        // `add` fail; it is ours by prefix, so remove it first.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(status.success(), "ip netns add {name} failed");
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    fn exec_stdout(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn link_exists(&self, name: &str) -> bool {
        self.exec(&["ip", "link", "show", "dev", name])
            .status
            .success()
    }

    /// One ICMP echo to `ip` (busybox ping: iputils is not installed here).
    fn ping(&self, ip: &str) -> bool {
        self.exec(&["busybox", "ping", "-c1", "-W1", ip])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One plugin invocation's outcome.
struct Run {
    code: i32,
    reply: Value,
    stdout: String,
}

/// A node namespace plus an IPAM directory, unique per test.
struct Node {
    ns: Netns,
    data: tempfile::TempDir,
    prefix: String,
}

impl Node {
    fn new(test: &str) -> Node {
        let prefix = format!("wcni-{}-{test}", std::process::id());
        let ns = Netns::new(format!("{prefix}-node"));
        let data = tempfile::tempdir().expect("tempdir");
        Node { ns, data, prefix }
    }

    fn pod(&self, name: &str) -> Netns {
        Netns::new(format!("{}-{name}", self.prefix))
    }

    fn ipam_dir(&self) -> PathBuf {
        self.data.path().join("ipam")
    }

    fn config(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "weir", "type": "weir-cni",
            "podCIDR": POD_CIDR, "dataDir": self.ipam_dir(), "mtu": 1500,
            "logFile": self.data.path().join("cni.log"),
        })
        .to_string()
    }

    /// Runs the plugin in the node namespace as a runtime would.
    fn plugin(&self, command: &str, container_id: &str, netns: Option<&Path>, config: &str) -> Run {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name, PLUGIN])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env_remove("CNI_NETNS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = netns {
            cmd.env("CNI_NETNS", path);
        }
        let mut child = cmd.spawn().expect("spawn weir-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("wait weir-cni");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let reply = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).expect("reply is JSON")
        };
        Run {
            code: out.status.code().unwrap_or(-1),
            reply,
            stdout,
        }
    }

    fn add(&self, container_id: &str, pod: &Netns) -> Ipv4Addr {
        let run = self.plugin("ADD", container_id, Some(&pod.path()), &self.config());
        assert_eq!(run.code, 0, "ADD {container_id}: {}", run.stdout);
        pod_ip(&run.reply)
    }

    fn allocated(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.ipam_dir())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn pod_ip(reply: &Value) -> Ipv4Addr {
    let address = reply["ips"][0]["address"].as_str().expect("ips[0].address");
    address.trim_end_matches("/32").parse().expect("pod IP")
}

fn host_veth(container_id: &str) -> String {
    weir_cni::naming::host_veth_name(container_id)
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn add_wires_a_working_veth() {
    let node = Node::new("add");
    let pod = node.pod("p1");
    let run = node.plugin("ADD", "c-add-1", Some(&pod.path()), &node.config());
    assert_eq!(run.code, 0, "{}", run.stdout);

    let r = &run.reply;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], host_veth("c-add-1"));
    assert_eq!(r["interfaces"][0]["sandbox"], "");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(
        r["interfaces"][1]["sandbox"],
        pod.path().to_str().expect("utf8")
    );
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["ips"][0]["gateway"], GATEWAY);
    let ip = pod_ip(r);
    assert_eq!(ip, Ipv4Addr::new(10, 244, 1, 2));

    // Kernel state, read back with iproute2 rather than the plugin's own code.
    let pod_addr = pod.exec_stdout(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(pod_addr.contains(&format!("inet {ip}/32")), "{pod_addr}");
    assert!(
        pod_addr.contains("mtu 1500") && pod_addr.contains(",UP"),
        "{pod_addr}"
    );
    let pod_routes = pod.exec_stdout(&["ip", "-4", "route"]);
    assert!(
        pod_routes.contains(&format!("default via {GATEWAY} dev eth0")),
        "{pod_routes}"
    );
    assert!(
        pod_routes.contains(&format!("{GATEWAY} dev eth0")) && pod_routes.contains("scope link"),
        "{pod_routes}"
    );
    let host_addr =
        node.ns
            .exec_stdout(&["ip", "-4", "addr", "show", "dev", &host_veth("c-add-1")]);
    assert!(
        host_addr.contains(&format!("inet {GATEWAY}/32")),
        "{host_addr}"
    );
    let host_routes = node.ns.exec_stdout(&["ip", "-4", "route"]);
    assert!(
        host_routes.contains(&format!("{ip} dev {}", host_veth("c-add-1"))),
        "{host_routes}"
    );
    assert_eq!(
        node.ns
            .exec_stdout(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        "1"
    );

    assert!(node.ns.ping(&ip.to_string()), "node cannot ping pod {ip}");
    assert!(pod.ping(GATEWAY), "pod cannot ping its gateway");
    let _ = node.plugin("DEL", "c-add-1", Some(&pod.path()), &node.config());
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn distinct_ips_and_idempotent_add() {
    let node = Node::new("two");
    let (p1, p2) = (node.pod("p1"), node.pod("p2"));
    let ip1 = node.add("c-two-1", &p1);
    let ip2 = node.add("c-two-2", &p2);
    assert_ne!(ip1, ip2);

    // ADD again for the same container: same address, working veth.
    let again = node.add("c-two-1", &p1);
    assert_eq!(again, ip1);
    assert_eq!(node.allocated().len(), 2);
    assert!(
        node.ns.ping(&ip1.to_string()),
        "pod 1 unreachable after repeated ADD"
    );
    assert!(node.ns.ping(&ip2.to_string()), "pod 2 unreachable");
    // Pod to pod through the node.
    assert!(p1.ping(&ip2.to_string()), "pod 1 cannot reach pod 2");
    for id in ["c-two-1", "c-two-2"] {
        let _ = node.plugin("DEL", id, None, &node.config());
    }
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn del_releases_and_is_idempotent() {
    let node = Node::new("del");
    let pod = node.pod("p1");
    let ip = node.add("c-del-1", &pod);
    assert!(node.allocated().contains(&ip.to_string()));

    let del = node.plugin("DEL", "c-del-1", Some(&pod.path()), &node.config());
    assert_eq!((del.code, del.stdout.as_str()), (0, ""));
    assert!(
        !node.ns.link_exists(&host_veth("c-del-1")),
        "host veth survived DEL"
    );
    assert!(!pod.link_exists("eth0"), "pod eth0 survived DEL");
    assert!(
        node.allocated().is_empty(),
        "address not released: {:?}",
        node.allocated()
    );

    for netns in [Some(pod.path()), None] {
        let again = node.plugin("DEL", "c-del-1", netns.as_deref(), &node.config());
        assert_eq!(again.code, 0, "repeated DEL: {}", again.stdout);
    }
    // A container that never had an ADD.
    let never = node.plugin("DEL", "c-del-never", Some(&pod.path()), &node.config());
    assert_eq!(never.code, 0, "DEL without ADD: {}", never.stdout);
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn del_after_netns_is_gone() {
    let node = Node::new("gone");
    let pod = node.pod("p1");
    let path = pod.path();
    let ip = node.add("c-gone-1", &pod);
    drop(pod); // the runtime removed the sandbox before DEL

    let del = node.plugin("DEL", "c-gone-1", Some(&path), &node.config());
    assert_eq!(del.code, 0, "DEL with a vanished netns: {}", del.stdout);
    assert!(
        !node.allocated().contains(&ip.to_string()),
        "address not released"
    );
    assert!(!node.ns.link_exists(&host_veth("c-gone-1")));
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn check_passes_then_fails_when_veth_removed() {
    let node = Node::new("chk");
    let pod = node.pod("p1");
    let _ip = node.add("c-chk-1", &pod);

    let ok = node.plugin("CHECK", "c-chk-1", Some(&pod.path()), &node.config());
    assert_eq!((ok.code, ok.stdout.as_str()), (0, ""), "CHECK after ADD");

    let del = node.ns.exec(&["ip", "link", "del", &host_veth("c-chk-1")]);
    assert!(del.status.success());
    let bad = node.plugin("CHECK", "c-chk-1", Some(&pod.path()), &node.config());
    assert_eq!(bad.code, 120, "{}", bad.stdout);
    assert_eq!(bad.reply["code"], 120);
    let details = bad.reply["details"].as_str().expect("details");
    assert!(
        details.contains(&host_veth("c-chk-1")) && details.contains("does not exist"),
        "{details}"
    );

    let unknown = node.plugin("CHECK", "c-chk-unknown", Some(&pod.path()), &node.config());
    assert_eq!(unknown.code, 120, "{}", unknown.stdout);
    let _ = node.plugin("DEL", "c-chk-1", None, &node.config());
}

#[test]
#[ignore = "privileged: creates network namespaces"]
fn bad_config_is_rejected_and_touches_nothing() {
    let node = Node::new("bad");
    let pod = node.pod("p1");
    let links_before = node.ns.exec_stdout(&["ip", "-o", "link"]);
    let mut cfg: Value = serde_json::from_str(&node.config()).expect("json");
    let cases = [
        ("podCIDR", Value::from("10.244.1.0/33"), 7),
        ("podCIDR", Value::from("10.244.1.5/24"), 7),
        ("mtu", Value::from(10), 7),
        ("dataDir", Value::from("relative"), 7),
        ("cniVersion", Value::from("0.1.0"), 1),
        ("podCidr", Value::from("10.244.1.0/24"), 2),
    ];
    for (field, value, code) in cases {
        let mut bad = cfg.clone();
        bad[field] = value.clone();
        let run = node.plugin("ADD", "c-bad-1", Some(&pod.path()), &bad.to_string());
        assert_eq!(run.code, code, "{field}={value}: {}", run.stdout);
        assert_eq!(run.reply["code"], code);
        assert!(
            run.reply["details"]
                .as_str()
                .is_some_and(|d| d.contains(field)),
            "{}",
            run.stdout
        );
    }
    cfg.as_object_mut().expect("object").remove("dataDir");
    let run = node.plugin("ADD", "c-bad-1", Some(&pod.path()), &cfg.to_string());
    assert_eq!(run.code, 7, "{}", run.stdout);

    assert_eq!(
        node.ns.exec_stdout(&["ip", "-o", "link"]),
        links_before,
        "links changed"
    );
    assert!(!pod.link_exists("eth0"));
    assert!(
        !node.ipam_dir().exists(),
        "IPAM dir created by a rejected ADD"
    );
}

#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn concurrent_adds_get_distinct_addresses() {
    let node = std::sync::Arc::new(Node::new("par"));
    let pods: Vec<_> = (0..6).map(|i| node.pod(&format!("p{i}"))).collect();
    let paths: Vec<PathBuf> = pods.iter().map(Netns::path).collect();
    let threads: Vec<_> = paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let node = node.clone();
            std::thread::spawn(move || {
                let run = node.plugin("ADD", &format!("c-par-{i}"), Some(&path), &node.config());
                assert_eq!(run.code, 0, "{}", run.stdout);
                pod_ip(&run.reply)
            })
        })
        .collect();
    let ips: BTreeSet<Ipv4Addr> = threads
        .into_iter()
        .map(|t| t.join().expect("ADD thread"))
        .collect();
    assert_eq!(ips.len(), 6, "{ips:?}");
    for ip in &ips {
        assert!(node.ns.ping(&ip.to_string()), "{ip} unreachable");
    }
    for i in 0..6 {
        let _ = node.plugin("DEL", &format!("c-par-{i}"), None, &node.config());
    }
    drop(pods);
}

/// containerd runs the reference `loopback` plugin on the same sandbox;
/// both must work side by side.
#[test]
#[ignore = "privileged: creates network namespaces; needs containernetworking-plugins"]
fn reference_loopback_plugin_coexists() {
    let loopback = Path::new("/usr/lib/cni/loopback");
    assert!(
        loopback.exists(),
        "{} missing: apt-get install containernetworking-plugins",
        loopback.display()
    );
    let node = Node::new("lo");
    let pod = node.pod("p1");

    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.ns.name])
        .arg(loopback)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c-lo-1")
        .env("CNI_IFNAME", "lo")
        .env("CNI_NETNS", pod.path())
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn loopback");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}"#)
        .expect("write");
    let out = child.wait_with_output().expect("loopback");
    assert!(
        out.status.success(),
        "loopback: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let ip = node.add("c-lo-1", &pod);
    assert!(pod.ping("127.0.0.1"), "pod loopback down");
    assert!(
        node.ns.ping(&ip.to_string()),
        "pod unreachable next to loopback"
    );
    let _ = node.plugin("DEL", "c-lo-1", None, &node.config());
}

#[test]
#[ignore = "privileged: creates network namespaces"]
fn add_with_missing_netns_fails_and_allocates_nothing() {
    let node = Node::new("nons");
    let missing = PathBuf::from(format!("/run/netns/{}-missing", node.prefix));
    let run = node.plugin("ADD", "c-nons-1", Some(&missing), &node.config());
    assert_eq!(run.code, 111, "{}", run.stdout);
    assert!(
        run.reply["details"]
            .as_str()
            .is_some_and(|d| d.contains("missing")),
        "{}",
        run.stdout
    );
    assert!(node.allocated().is_empty());
    assert!(!node.ns.link_exists(&host_veth("c-nons-1")));
}

/// A failure half-way through ADD (here: the pod already has an eth0) must
/// undo the veth and the allocation.
#[test]
#[ignore = "privileged: creates network namespaces and veth pairs"]
fn failed_add_cleans_up_after_itself() {
    let node = Node::new("undo");
    let pod = node.pod("p1");
    // (no dummy module on these kernels: a veth pair inside the pod stands in)
    pod.exec_stdout(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let run = node.plugin("ADD", "c-undo-1", Some(&pod.path()), &node.config());
    assert_eq!(run.code, 113, "{}", run.stdout);
    assert!(
        !node.ns.link_exists(&host_veth("c-undo-1")),
        "host veth left behind"
    );
    assert!(
        node.allocated().is_empty(),
        "address left allocated: {:?}",
        node.allocated()
    );
    let pod_links = pod.exec_stdout(&["ip", "-o", "link"]);
    assert_eq!(
        pod_links.lines().count(),
        3,
        "only lo and the pre-existing eth0/eth0p expected: {pod_links}"
    );
}
