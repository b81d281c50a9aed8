//! Table tests of the policy compiler, in the style of the upstream
//! Kubernetes NetworkPolicy e2e suite: namespaces x, y, z with pods a, b, c
//! each (x and y on node1, z on node2), plus an address outside the cluster
//! (`ext`) and the two nodes' own addresses. For each case every source
//! probes every destination; the decision is computed by [`verdict`] over
//! the maps compiled for the source's node (egress) and the destination's
//! node (ingress), i.e. exactly the lookups the datapath performs, and
//! compared with the expected truth table, printed on failure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weir_ebpf_common::policy::{IPPROTO_SCTP, identity, map_names};
use weir_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP};

use super::*;

const TCP: u8 = IPPROTO_TCP;
const UDP: u8 = IPPROTO_UDP;
const SCTP: u8 = IPPROTO_SCTP;

/// A probe source or destination.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    /// "x/a", "ext", "node1", "node2".
    pub(super) name: String,
    pub(super) ip: Ipv4Addr,
    /// For pods.
    ns: Option<&'static str>,
    pod: Option<&'static str>,
    /// The node the pod runs on, or whose address this is.
    node: Option<&'static str>,
}

impl Peer {
    fn is(&self, name: &str) -> bool {
        self.name == name
    }
    fn in_ns(&self, ns: &str) -> bool {
        self.ns == Some(ns)
    }
    fn pod_is(&self, pod: &str) -> bool {
        self.pod == Some(pod)
    }
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn node_of(ns: &str) -> &'static str {
    if ns == "z" { "node2" } else { "node1" }
}

fn pod_ip(ns: &str, pod: &str) -> Ipv4Addr {
    let j = PODS.iter().position(|p| *p == pod).expect("known pod") as u8;
    match ns {
        "x" => Ipv4Addr::new(10, 244, 1, 10 + j),
        "y" => Ipv4Addr::new(10, 244, 1, 20 + j),
        _ => Ipv4Addr::new(10, 244, 2, 10 + j),
    }
}

const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NODE1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 11);
const NODE2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 12);

pub(super) fn peers() -> Vec<Peer> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            out.push(Peer {
                name: format!("{ns}/{pod}"),
                ip: pod_ip(ns, pod),
                ns: Some(ns),
                pod: Some(pod),
                node: Some(node_of(ns)),
            });
        }
    }
    let other = |name: &str, ip, node| Peer {
        name: name.to_string(),
        ip,
        ns: None,
        pod: None,
        node,
    };
    out.push(other("ext", EXT, None));
    out.push(other("node1", NODE1, Some("node1")));
    out.push(other("node2", NODE2, Some("node2")));
    out
}

fn named(name: &str, proto: u8, port: u16) -> NamedPort {
    NamedPort {
        name: name.to_string(),
        proto,
        port,
    }
}

/// The pods: labels `pod=<name>` (z/b also `extra=yes`), serving 80 and 81
/// on TCP and UDP and 80 on SCTP under upstream's `serve-<port>-<proto>`
/// names, and a port named `http` that is 80 in x and y but 81 in z (so a
/// named port must be resolved per destination pod).
pub(super) fn pods() -> Vec<PodInfo> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let mut labels = BTreeMap::from([("pod".to_string(), pod.to_string())]);
            if (ns, pod) == ("z", "b") {
                labels.insert("extra".into(), "yes".into());
            }
            let mut named_ports = vec![
                named("serve-80-tcp", TCP, 80),
                named("serve-80-udp", UDP, 80),
                named("serve-81-tcp", TCP, 81),
                named("serve-81-udp", UDP, 81),
                named("serve-80-sctp", SCTP, 80),
                named("http", TCP, if ns == "z" { 81 } else { 80 }),
            ];
            named_ports.sort();
            out.push(PodInfo {
                pod: ObjectRef::new(ns, pod),
                labels,
                ip: Some(pod_ip(ns, pod)),
                node: Some(node_of(ns).to_string()),
                host_network: false,
                named_ports,
            });
        }
    }
    out
}

pub(super) fn namespaces() -> Vec<NamespaceInfo> {
    NAMESPACES
        .iter()
        .map(|ns| NamespaceInfo::new(*ns, BTreeMap::from([("ns".to_string(), ns.to_string())])))
        .collect()
}

pub(super) fn node(name: &str) -> NodeNetwork {
    let (own, gw, other) = if name == "node1" {
        (NODE1, Ipv4Addr::new(10, 244, 1, 1), NODE2)
    } else {
        (NODE2, Ipv4Addr::new(10, 244, 2, 1), NODE1)
    };
    NodeNetwork {
        name: name.to_string(),
        host_ips: vec![own, gw],
        remote_node_ips: vec![other],
        cluster_cidr: Some("10.244.0.0/16".parse().expect("cidr")),
    }
}

pub(super) fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("valid NetworkPolicy")
}

/// Compiles for both nodes.
pub(super) fn compile_all(
    policies: &[NetworkPolicy],
    pods: &[PodInfo],
) -> BTreeMap<&'static str, Compiled> {
    let namespaces = namespaces();
    ["node1", "node2"]
        .into_iter()
        .map(|n| {
            let node = node(n);
            let input = PolicyInput {
                policies,
                pods,
                namespaces: &namespaces,
                node: &node,
            };
            let compiled = compile(input, &Allocations::default(), &PolicyLimits::default())
                .expect("compiles");
            (n, compiled)
        })
        .collect()
}

/// The cluster's decision: the source's node judges egress, the
/// destination's node ingress.
fn cluster_allows(
    compiled: &BTreeMap<&'static str, Compiled>,
    src: &Peer,
    dst: &Peer,
    proto: u8,
    port: u16,
) -> bool {
    let on = |node: Option<&str>| node.and_then(|n| compiled.get(n)).map(|c| &c.maps);
    let egress =
        on(src.node).is_none_or(|m| verdict(m, src.ip, dst.ip, proto, port).egress.passes());
    let ingress =
        on(dst.node).is_none_or(|m| verdict(m, src.ip, dst.ip, proto, port).ingress.passes());
    egress && ingress
}

type Expect = fn(&Peer, &Peer, u8, u16) -> bool;

struct Case {
    name: &'static str,
    policies: Vec<NetworkPolicy>,
    probes: Vec<(u8, u16)>,
    /// Whether `src -> dst` on `(proto, port)` should pass. The harness adds
    /// the two rules no policy can remove: a pod reaches itself, and a
    /// pod and its own node reach each other.
    expect: Expect,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        TCP => "TCP",
        UDP => "UDP",
        SCTP => "SCTP",
        _ => "?",
    }
}

/// Runs a case; returns the printed truth table(s) of every mismatching probe.
fn run(case: &Case) -> Option<String> {
    let pods = pods();
    let compiled = compile_all(&case.policies, &pods);
    for c in compiled.values() {
        assert!(
            c.warnings.is_empty(),
            "{}: warnings {:?}",
            case.name,
            c.warnings
        );
    }
    let all = peers();
    let dsts: Vec<&Peer> = all.iter().collect();
    let mut report = String::new();
    for &(proto, port) in &case.probes {
        let mut wrong = 0;
        let mut table = format!(
            "case {:?}, probe {}/{port}: '.' allowed, 'X' denied, '!' = expected allowed but denied, '?' = expected denied but allowed\n{:>6}",
            case.name,
            proto_name(proto),
            "src\\dst"
        );
        for d in &dsts {
            table.push_str(&format!(" {:>5}", d.name));
        }
        table.push('\n');
        for s in &all {
            table.push_str(&format!("{:>7}", s.name));
            for d in &dsts {
                // A node and a pod on it (either direction).
                let own_node =
                    s.node.is_some() && s.node == d.node && (s.pod.is_some() != d.pod.is_some());
                let want = s.ip == d.ip || own_node || (case.expect)(s, d, proto, port);
                let got = cluster_allows(&compiled, s, d, proto, port);
                let cell = match (want, got) {
                    (true, true) => ".",
                    (false, false) => "X",
                    (true, false) => "!",
                    (false, true) => "?",
                };
                if want != got {
                    wrong += 1;
                }
                table.push_str(&format!(" {cell:>5}"));
            }
            table.push('\n');
        }
        if wrong > 0 {
            report.push_str(&table);
        }
    }
    (!report.is_empty()).then_some(report)
}

fn check(cases: Vec<Case>) {
    let failures: Vec<String> = cases.iter().filter_map(run).collect();
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The harness itself can fail: a wrong expectation yields a table
/// marking exactly the wrong cells.
#[test]
fn harness_reports_mismatches() {
    let case = Case {
        name: "wrong on purpose",
        policies: vec![np(
            "x",
            "deny",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
        )],
        probes: tcp80(),
        expect: |_, _, _, _| true,
    };
    let table = run(&case).expect("mismatches reported");
    // Every pod but x/a itself, ext and node2 are wrongly expected to reach
    // x/a (cells are right-aligned in 5 columns after a space).
    assert_eq!(table.matches("     !").count(), 8 + 2, "{table}");
    assert_eq!(table.matches("     ?").count(), 0, "{table}");
}

fn tcp80() -> Vec<(u8, u16)> {
    vec![(TCP, 80)]
}

#[test]
fn isolation_defaulting_and_union() {
    check(vec![
        Case {
            name: "no policy: everything passes",
            policies: vec![],
            probes: vec![(TCP, 80), (UDP, 81), (SCTP, 80)],
            expect: |_, _, _, _| true,
        },
        Case {
            name: "deny all ingress in x (policyTypes Ingress, no rules)",
            policies: vec![np(
                "x",
                "deny",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            )],
            probes: vec![(TCP, 80), (UDP, 81)],
            expect: |_, d, _, _| !d.in_ns("x"),
        },
        Case {
            name: "ingress: [] without policyTypes denies all ingress",
            policies: vec![np("x", "deny", json!({"podSelector": {}, "ingress": []}))],
            probes: tcp80(),
            expect: |_, d, _, _| !d.in_ns("x"),
        },
        Case {
            name: "ingress: [{}] allows all (and the union with deny-all allows all)",
            policies: vec![
                np("x", "deny", json!({"podSelector": {}, "ingress": []})),
                np("x", "allow", json!({"podSelector": {}, "ingress": [{}]})),
            ],
            probes: vec![(TCP, 80), (UDP, 81), (SCTP, 80)],
            expect: |_, _, _, _| true,
        },
        Case {
            name: "egress rules without policyTypes isolate egress AND ingress",
            policies: vec![np(
                "x",
                "a-egress",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                       "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| {
                if s.is("x/a") {
                    d.is("x/b")
                } else {
                    !d.is("x/a")
                }
            },
        },
        Case {
            name: "egress: [] without policyTypes isolates only ingress",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": []}),
            )],
            probes: tcp80(),
            expect: |_, d, _, _| !d.is("x/a"),
        },
        Case {
            name: "policyTypes [Egress] with no rules denies all egress, ingress untouched",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
            )],
            probes: vec![(TCP, 80), (UDP, 80)],
            expect: |s, _, _, _| !s.is("x/a"),
        },
        Case {
            name: "egress: [{}] allows all egress, also in union with an egress deny-all",
            policies: vec![
                np(
                    "y",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": ["Egress"]}),
                ),
                np(
                    "y",
                    "allow",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{}]}),
                ),
            ],
            probes: vec![(TCP, 80), (UDP, 53)],
            // The allow policy has no policyTypes: it also isolates y/a's ingress.
            expect: |s, d, _, _| (!s.in_ns("y") || s.is("y/a")) && !d.is("y/a"),
        },
        Case {
            name: "a policy selects only pods of its own namespace",
            policies: vec![np(
                "y",
                "deny",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
            )],
            probes: tcp80(),
            expect: |_, d, _, _| !d.is("y/a"),
        },
        Case {
            name: "union of two allow policies",
            policies: vec![
                np(
                    "x",
                    "from-b",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                ),
                np(
                    "x",
                    "from-c",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                ),
            ],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.is("x/b") || s.is("x/c"),
        },
        Case {
            name: "a connection needs the source's egress AND the destination's ingress",
            policies: vec![
                np(
                    "x",
                    "a-to-y",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                ),
                np(
                    "y",
                    "b-from-c",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                ),
            ],
            probes: tcp80(),
            expect: |s, d, _, _| {
                let egress = !s.is("x/a") || d.in_ns("y");
                let ingress = !d.is("y/b") || s.pod_is("c");
                egress && ingress
            },
        },
        Case {
            name: "empty from / empty ports: all peers (outside the cluster too) on all ports",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}, {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            probes: vec![(TCP, 80), (TCP, 81), (UDP, 80)],
            expect: |s, d, proto, port| {
                !d.in_ns("x") || (proto == TCP && port == 80) || (s.in_ns("x") && s.pod_is("b"))
            },
        },
    ]);
}

#[test]
fn peers_selectors() {
    check(vec![
        Case {
            name: "podSelector peer: the policy's namespace only",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.is("x/b"),
        },
        Case {
            name: "namespaceSelector peer: every pod of the matching namespaces",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.in_ns("y"),
        },
        Case {
            name: "namespaceSelector {}: every pod, no outside address",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.pod.is_some(),
        },
        Case {
            name: "namespaceSelector by kubernetes.io/metadata.name",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.in_ns("z"),
        },
        Case {
            name: "podSelector AND namespaceSelector in one peer",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y", "z"]}]},
                    "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || ((s.in_ns("y") || s.in_ns("z")) && s.pod_is("c")),
        },
        Case {
            name: "two peers are OR",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [
                    {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                    {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.in_ns("y") || s.is("x/c"),
        },
        Case {
            name: "matchExpressions NotIn and Exists",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a", "c"]}]}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.in_ns("x") || (s.pod_is("b") && !s.in_ns("x")),
        },
        Case {
            name: "matchExpressions DoesNotExist",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}},
                    "podSelector": {"matchExpressions": [{"key": "extra", "operator": "DoesNotExist"}]}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || (s.in_ns("z") && !s.pod_is("b")),
        },
        Case {
            name: "egress to a namespace",
            policies: vec![np(
                "y",
                "p",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
            )],
            probes: vec![(TCP, 80), (UDP, 81)],
            expect: |s, d, _, _| !s.in_ns("y") || d.in_ns("z"),
        },
    ]);
}

#[test]
fn ip_blocks() {
    check(vec![
        Case {
            name: "ipBlock with except (node1's pod range in, node2's out)",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.in_ns("x") || s.in_ns("y"),
        },
        Case {
            name: "ipBlock /32 of a pod address matches that pod only",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.21/32"}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || s.is("y/b"),
        },
        Case {
            name: "except of a single pod address",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.22/32"]}}]}]}),
            )],
            probes: tcp80(),
            expect: |s, d, _, _| !d.is("x/a") || ((s.in_ns("x") || s.in_ns("y")) && !s.is("y/c")),
        },
        Case {
            name: "egress ipBlock to the outside only; nested blocks of two policies",
            policies: vec![
                np(
                    "x",
                    "out",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}),
                ),
                np(
                    "x",
                    "z-b",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.11/32"}}], "ports": [{"port": 80}]}]}),
                ),
            ],
            probes: vec![(TCP, 80), (TCP, 81)],
            expect: |s, d, _, port| // node2's address is outside 10.0.0.0/8 too.
                !s.is("x/a") || d.is("ext") || d.is("node2") || (d.is("z/b") && port == 80),
        },
        Case {
            name: "an ipBlock and a selector of the same pod do not shadow each other",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": ["10.244.2.10/31"]}}], "ports": [{"port": 81}]},
                    {"from": [{"podSelector": {"matchLabels": {"pod": "a"}}, "namespaceSelector": {}}], "ports": [{"port": 80}]}]}),
            )],
            probes: vec![(TCP, 80), (TCP, 81)],
            expect: |s, d, _, port| {
                !d.is("x/a") || (port == 81 && s.is("z/c")) || (port == 80 && s.pod_is("a"))
            },
        },
    ]);
}

#[test]
fn protocols_and_ports() {
    check(vec![
        Case {
            name: "a UDP rule never opens TCP; SCTP; protocol defaults to TCP",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [
                {"ports": [{"protocol": "UDP", "port": 80}]},
                {"ports": [{"protocol": "SCTP", "port": 80}], "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]},
                {"ports": [{"port": 81}]}]}),
            )],
            probes: vec![(TCP, 80), (UDP, 80), (SCTP, 80), (TCP, 81), (UDP, 81)],
            expect: |s, d, proto, port| {
                !d.in_ns("x")
                    || (proto, port) == (UDP, 80)
                    || (proto, port) == (TCP, 81)
                    || ((proto, port) == (SCTP, 80) && s.in_ns("y"))
            },
        },
        Case {
            name: "protocol without port: every port of it",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
            )],
            probes: vec![(TCP, 80), (UDP, 80), (UDP, 81), (UDP, 65535)],
            expect: |_, d, proto, _| !d.in_ns("x") || proto == UDP,
        },
        Case {
            name: "named ingress port resolved on the destination",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}, {"port": "serve-80-tcp"}]}]}),
            )],
            probes: vec![(TCP, 80), (TCP, 81), (UDP, 80), (UDP, 81)],
            expect: |_, d, proto, port| {
                !d.in_ns("x") || (proto, port) == (UDP, 81) || (proto, port) == (TCP, 80)
            },
        },
        Case {
            name: "named egress port resolved per destination pod (http = 80 in x, y; 81 in z)",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "http"}]}]}),
            )],
            probes: vec![(TCP, 80), (TCP, 81)],
            expect: |s, d, _, port| {
                !s.is("x/a") || (d.pod.is_some() && port == if d.in_ns("z") { 81 } else { 80 })
            },
        },
        Case {
            name: "named egress port towards an ipBlock resolves on the pods inside it",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": ["10.244.2.12/32"]}}], "ports": [{"port": "http"}]}]}),
            )],
            probes: vec![(TCP, 80), (TCP, 81)],
            expect: |s, d, _, port| !s.is("x/a") || ((d.is("z/a") || d.is("z/b")) && port == 81),
        },
        Case {
            name: "endPort ranges",
            policies: vec![np(
                "x",
                "p",
                json!({"podSelector": {}, "ingress": [
                {"ports": [{"port": 80, "endPort": 81}, {"protocol": "UDP", "port": 1000, "endPort": 2000}]}]}),
            )],
            probes: vec![
                (TCP, 79),
                (TCP, 80),
                (TCP, 81),
                (TCP, 82),
                (UDP, 999),
                (UDP, 1000),
                (UDP, 1500),
                (UDP, 2000),
                (UDP, 2001),
                (TCP, 1500),
            ],
            expect: |_, d, proto, port| {
                !d.in_ns("x")
                    || (proto == TCP && (80..=81).contains(&port))
                    || (proto == UDP && (1000..=2000).contains(&port))
            },
        },
    ]);
}

/// The pod's own node passes ingress and egress isolation, another node
/// does not; a pod reaches itself under egress and ingress deny-all.
#[test]
fn host_and_self_pass_isolation() {
    let policies = vec![np(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )];
    let compiled = compile_all(&policies, &pods());
    let all = peers();
    let find = |n: &str| all.iter().find(|p| p.is(n)).expect("peer");
    let cases = [
        ("node1", "x/a", true),
        ("node2", "x/a", false),
        ("x/a", "x/a", true),
        ("x/a", "x/b", false),
        ("y/a", "x/a", false),
        ("x/a", "node1", true),
        ("x/a", "node2", false),
    ];
    for (s, d, want) in cases {
        let got = cluster_allows(&compiled, find(s), find(d), TCP, 80);
        assert_eq!(got, want, "{s} -> {d}");
    }
}

/// Two replicas share an identity; an ipBlock /32 of one must not admit the
/// other, and an egress named port must follow each replica's number.
#[test]
fn replicas_sharing_an_identity_are_told_apart_by_ip_blocks() {
    let mut pods = pods();
    let web = |name: &str, last: u8| PodInfo {
        pod: ObjectRef::new("y", name),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        ip: Some(Ipv4Addr::new(10, 244, 1, last)),
        node: Some("node1".into()),
        host_network: false,
        named_ports: vec![],
    };
    pods.push(web("web-1", 50));
    pods.push(web("web-2", 51));
    let policies = vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.50/32"}}]}]}),
    )];
    let compiled = compile_all(&policies, &pods);
    let maps = &compiled["node1"].maps;
    let id = |ip| {
        ipcache_lookup(&maps.ipcache, ip)
            .expect("ipcache hit")
            .identity
    };
    let (w1, w2, xa) = (
        Ipv4Addr::new(10, 244, 1, 50),
        Ipv4Addr::new(10, 244, 1, 51),
        pod_ip("x", "a"),
    );
    assert_eq!(id(w1), id(w2), "replicas share an identity");
    assert!(verdict(maps, w1, xa, TCP, 80).allowed());
    assert!(!verdict(maps, w2, xa, TCP, 80).allowed());
}

#[test]
fn ipcache_reserved_identities() {
    let compiled = compile_all(&[], &pods());
    let maps = &compiled["node1"].maps;
    let id = |ip: [u8; 4]| ipcache_lookup(&maps.ipcache, Ipv4Addr::from(ip)).map(|v| v.identity);
    assert_eq!(id([172, 30, 0, 11]), Some(identity::HOST));
    assert_eq!(id([10, 244, 1, 1]), Some(identity::HOST));
    assert_eq!(id([172, 30, 0, 12]), Some(identity::REMOTE_NODE));
    assert_eq!(id([10, 244, 3, 7]), Some(identity::UNMANAGED));
    assert_eq!(id([8, 8, 8, 8]), Some(identity::WORLD));
    let xa = id([10, 244, 1, 10]).expect("pod");
    assert!((identity::POD_MIN..=identity::POD_MAX).contains(&xa));
    // Only node1's pods are its endpoints.
    assert_eq!(maps.endpoints.len(), 6);
    assert_eq!(compiled["node2"].maps.endpoints.len(), 3);
}

/// Bad parts of a policy match nothing but still isolate (fail closed).
#[test]
fn invalid_rules_fail_closed_with_a_warning() {
    let policies = vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.999.0/24"}}]},
                    {"ports": [{"protocol": "ICMP", "port": 80}]}]}),
    )];
    let compiled = compile_all(&policies, &pods());
    let c = &compiled["node1"];
    let fields: Vec<&str> = c.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[1].ports[0].protocol"
        ]
    );
    let (ya, xa) = (pod_ip("y", "a"), pod_ip("x", "a"));
    assert!(!verdict(&c.maps, ya, xa, TCP, 80).allowed());
    assert!(verdict(&c.maps, ya, pod_ip("x", "b"), TCP, 80).allowed());
}

fn compile_node1(
    policies: &[NetworkPolicy],
    pods: &[PodInfo],
    prev: &Allocations,
    limits: &PolicyLimits,
) -> Result<Compiled, PolicyError> {
    let namespaces = namespaces();
    let node = node("node1");
    compile(
        PolicyInput {
            policies,
            pods,
            namespaces: &namespaces,
            node: &node,
        },
        prev,
        limits,
    )
}

/// Numbers survive recompiles; an unchanged input produces no op; a relabel
/// changes the identity of one address and the entries that use it.
#[test]
fn recompile_is_stable_and_diff_is_minimal() {
    let policies = vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )];
    let limits = PolicyLimits::default();
    let mut pods = pods();
    let first =
        compile_node1(&policies, &pods, &Allocations::default(), &limits).expect("compiles");
    let again = compile_node1(&policies, &pods, &first.alloc, &limits).expect("compiles");
    assert_eq!(again.maps, first.maps);
    assert!(diff(&first.maps, &again.maps, &limits).is_empty());

    // Relabel x/c to pod=b: x/c's address takes x/b's identity, x/a now admits it.
    let xc = pods
        .iter_mut()
        .find(|p| p.pod == ObjectRef::new("x", "c"))
        .expect("x/c");
    xc.labels.insert("pod".into(), "b".into());
    let relabelled = compile_node1(&policies, &pods, &first.alloc, &limits).expect("compiles");
    let ops = diff(&first.maps, &relabelled.maps, &limits);
    assert!(!ops.is_empty());
    // Applying the ops to the old maps gives exactly the new maps.
    let mut applied = first.maps.clone();
    for op in &ops {
        applied.apply(*op);
    }
    assert_eq!(applied, relabelled.maps);
    // Upserts come before deletes, policy before ipcache before endpoints.
    let rank = |op: &PolicyMapOp| match op {
        PolicyMapOp::PolicyUpsert(..) => 0,
        PolicyMapOp::IpcacheUpsert(..) => 1,
        PolicyMapOp::EndpointUpsert(..) => 2,
        PolicyMapOp::EndpointDelete(..) => 3,
        PolicyMapOp::IpcacheDelete(..) => 4,
        PolicyMapOp::PolicyDelete(..) => 5,
    };
    assert!(
        ops.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
        "{ops:?}"
    );
    assert!(
        verdict(
            &relabelled.maps,
            pod_ip("x", "c"),
            pod_ip("x", "a"),
            TCP,
            80
        )
        .allowed()
    );
    assert!(!verdict(&first.maps, pod_ip("x", "c"), pod_ip("x", "a"), TCP, 80).allowed());
    // Untouched identities kept their numbers.
    let id = |c: &Compiled, ns, pod| {
        ipcache_lookup(&c.maps.ipcache, pod_ip(ns, pod)).map(|v| v.identity)
    };
    assert_eq!(id(&first, "y", "a"), id(&relabelled, "y", "a"));
    assert_eq!(id(&relabelled, "x", "c"), id(&first, "x", "b"));
    // The policy id maps back to the policy for flow records.
    let allowed = verdict(
        &relabelled.maps,
        pod_ip("x", "c"),
        pod_ip("x", "a"),
        TCP,
        80,
    )
    .ingress;
    let Decision::Allowed { policy_id } = allowed else {
        panic!("expected allowed, got {allowed:?}");
    };
    assert_eq!(
        relabelled.policy_of(policy_id),
        Some(&ObjectRef::new("x", "p"))
    );
}

#[test]
fn full_maps_are_reported_by_name() {
    let pods = pods();
    let cases = [
        (
            PolicyLimits {
                ipcache_max_entries: 5,
                ..PolicyLimits::default()
            },
            map_names::IPCACHE,
        ),
        (
            PolicyLimits {
                endpoints_max_entries: 5,
                ..PolicyLimits::default()
            },
            map_names::POLICY_ENDPOINTS,
        ),
        (
            PolicyLimits {
                policy_max_entries: 5,
                ..PolicyLimits::default()
            },
            map_names::POLICY,
        ),
    ];
    for (limits, map) in cases {
        let err =
            compile_node1(&[], &pods, &Allocations::default(), &limits).expect_err("too small");
        assert!(
            matches!(err, PolicyError::MapFull { map: m, .. } if m == map),
            "{map}: {err}"
        );
        assert!(err.to_string().contains(map), "{err}");
    }
}

/// A diff whose old and new entries together overflow a map deletes first.
#[test]
fn diff_deletes_first_when_the_union_would_overflow() {
    let limits = PolicyLimits::default();
    let pods = pods();
    let a = compile_node1(&[], &pods, &Allocations::default(), &limits).expect("compiles");
    let deny = [np("x", "deny", json!({"podSelector": {}, "ingress": []}))];
    let b = compile_node1(&deny, &pods, &a.alloc, &limits).expect("compiles");
    let tight = PolicyLimits {
        policy_max_entries: b.maps.policy.len().max(a.maps.policy.len()) as u32,
        ..limits
    };
    let ops = diff(&a.maps, &b.maps, &tight);
    assert!(
        matches!(ops.first(), Some(PolicyMapOp::PolicyDelete(_))),
        "{ops:?}"
    );
    let relaxed = diff(&a.maps, &b.maps, &limits);
    assert!(
        matches!(relaxed.last(), Some(PolicyMapOp::PolicyDelete(_))),
        "{relaxed:?}"
    );
}

/// Applies the diff from `state` to `desired` op by op, checking
/// `invariant` after each; ends equal to `desired`.
fn converge(
    state: &mut PolicyMaps,
    desired: &PolicyMaps,
    limits: &PolicyLimits,
    invariant: impl Fn(&PolicyMaps) -> bool,
) {
    let ops = diff(state, desired, limits);
    for (i, op) in ops.iter().enumerate() {
        state.apply(*op);
        assert!(
            invariant(state),
            "invariant broken after op {i} ({op:?}) of {ops:?}"
        );
    }
}

/// Changes take effect through a diff, without a restart: adding a policy,
/// a new pod it selects (isolated from its very first map write), a
/// namespace relabel, deleting the policy.
#[test]
fn changes_take_effect_through_diffs() {
    let limits = PolicyLimits::default();
    let node = node("node1");
    let step = |policies: &[NetworkPolicy],
                pods: &[PodInfo],
                namespaces: &[NamespaceInfo],
                prev: &Allocations| {
        compile(
            PolicyInput {
                policies,
                pods,
                namespaces,
                node: &node,
            },
            prev,
            &limits,
        )
        .expect("compiles")
    };
    let mut pods = pods();
    let mut namespaces = namespaces();
    let ya = pod_ip("y", "a");
    let (xa, za) = (pod_ip("x", "a"), pod_ip("z", "a"));

    let start = step(&[], &pods, &namespaces, &Allocations::default());
    let mut state = PolicyMaps::default();
    converge(&mut state, &start.maps, &limits, |_| true);
    assert_eq!(state, start.maps);
    assert!(verdict(&state, za, xa, TCP, 80).allowed());

    // Add: x's pods admit only namespace y.
    let policies = vec![np(
        "x",
        "from-y",
        json!({"podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )];
    let added = step(&policies, &pods, &namespaces, &start.alloc);
    // y/a -> x/a is allowed before, after and at every step in between.
    converge(&mut state, &added.maps, &limits, |m| {
        verdict(m, ya, xa, TCP, 80).allowed()
    });
    assert!(!verdict(&state, za, xa, TCP, 80).allowed());

    // A new pod x/d: from its endpoint's first appearance (before it, the
    // datapath does not know the address as local), z cannot reach it.
    let xd = Ipv4Addr::new(10, 244, 1, 13);
    pods.push(PodInfo {
        pod: ObjectRef::new("x", "d"),
        labels: BTreeMap::from([("pod".to_string(), "d".to_string())]),
        ip: Some(xd),
        node: Some("node1".into()),
        host_network: false,
        named_ports: vec![],
    });
    let with_d = step(&policies, &pods, &namespaces, &added.alloc);
    converge(&mut state, &with_d.maps, &limits, |m| {
        !matches!(
            verdict(m, za, xd, TCP, 80).ingress,
            Decision::Allowed { .. }
        )
    });
    assert!(verdict(&state, ya, xd, TCP, 80).allowed());
    assert_eq!(verdict(&state, za, xd, TCP, 80).ingress, Decision::Denied);

    // Relabel namespace z to ns=y: z's pods are admitted.
    let z = namespaces.iter_mut().find(|n| n.name == "z").expect("z");
    z.labels.insert("ns".into(), "y".into());
    let relabelled = step(&policies, &pods, &namespaces, &with_d.alloc);
    converge(&mut state, &relabelled.maps, &limits, |_| true);
    assert!(verdict(&state, za, xa, TCP, 80).allowed());
    assert_eq!(state, relabelled.maps);

    // Delete the policy: everything open again, nothing left behind.
    let deleted = step(&[], &pods, &namespaces, &relabelled.alloc);
    converge(&mut state, &deleted.maps, &limits, |m| {
        verdict(m, ya, xa, TCP, 80).allowed()
    });
    assert_eq!(state, deleted.maps);
    assert!(verdict(&state, Ipv4Addr::new(192, 0, 2, 1), xd, UDP, 53).allowed());
}
