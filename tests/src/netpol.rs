//! The NetworkPolicy e2e suite's expectations and reports, kept apart from
//! the code under test: a small model of the Kubernetes NetworkPolicy
//! semantics written from the API documentation (it shares no code with
//! `weir_datapath::policy`), the probe output parser, and the
//! "reachability" truth tables upstream's suite prints.
//!
//! Model rules (Kubernetes `networking.k8s.io/v1`): a pod is isolated for a
//! direction only when a policy of its namespace selects it with that
//! policyType (Ingress always; Egress when `policyTypes` is absent and the
//! policy has egress rules); allowed traffic is the union of the selecting
//! policies' rules; a connection needs the source's egress and the
//! destination's ingress; empty `from`/`to` = every peer, empty `ports` =
//! every port; peers: ipBlock (with except) on the address, else
//! namespaceSelector (absent = the policy's namespace) AND podSelector
//! (absent = every pod); ports: protocol (default TCP), number, name
//! (resolved on the destination pod), endPort range. A pod always reaches
//! itself, and a pod and its own node always reach each other.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Transport protocol of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
    fn spec(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A pod as the model sees it.
#[derive(Clone, Debug)]
pub struct ModelPod {
    /// Short name for tables, e.g. "x/a".
    pub short: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub node: String,
    /// (name, protocol, port) of the container ports that have a name.
    pub named_ports: Vec<(String, Proto, u16)>,
}

/// The cluster state the model reasons on.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub pods: Vec<ModelPod>,
    /// Namespace name -> labels (the `kubernetes.io/metadata.name` label is
    /// implied, as the API server sets it).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub policies: Vec<NetworkPolicy>,
}

/// Who sends a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Index into `Model::pods`.
    Pod(usize),
    /// A node's own network namespace.
    Node { name: String, ip: Ipv4Addr },
    /// An address outside the cluster.
    External { ip: Ipv4Addr },
}

/// The label every Namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            // An operator the API would reject: matches nothing.
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, mask))
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    parse_cidr(cidr).is_some_and(|(net, mask)| u32::from(ip) & mask == net)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

fn has_type(spec: &NetworkPolicySpec, dir: Dir) -> bool {
    match &spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|t| {
            t == match dir {
                Dir::Ingress => "Ingress",
                Dir::Egress => "Egress",
            }
        }),
        _ => match dir {
            Dir::Ingress => true,
            Dir::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

impl Model {
    fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(ns).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.into(), ns.into());
        labels
    }

    fn ip_of(&self, s: &Source) -> Ipv4Addr {
        match s {
            Source::Pod(i) => self.pods[*i].ip,
            Source::Node { ip, .. } | Source::External { ip } => *ip,
        }
    }

    /// The policies selecting pod `i` for `dir`.
    fn selecting(&self, i: usize, dir: Dir) -> Vec<&NetworkPolicySpec> {
        let pod = &self.pods[i];
        self.policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
            .filter_map(|p| p.spec.as_ref())
            .filter(|s| {
                s.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &pod.labels))
            })
            .filter(|s| has_type(s, dir))
            .collect()
    }

    fn peer_matches(&self, peer: &NetworkPolicyPeer, policy_ns: &str, who: &Source) -> bool {
        if let Some(block) = &peer.ip_block {
            let ip = self.ip_of(who);
            return in_cidr(ip, &block.cidr)
                && !block.except.iter().flatten().any(|e| in_cidr(ip, e));
        }
        let Source::Pod(i) = who else {
            // Selectors pick pods only.
            return false;
        };
        let pod = &self.pods[*i];
        let ns_ok = match &peer.namespace_selector {
            None => pod.namespace == policy_ns,
            Some(sel) => selector_matches(sel, &self.ns_labels(&pod.namespace)),
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|sel| selector_matches(sel, &pod.labels));
        ns_ok && pod_ok
    }

    fn port_matches(
        &self,
        p: &NetworkPolicyPort,
        dst: Option<&ModelPod>,
        proto: Proto,
        port: u16,
    ) -> bool {
        let want = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            _ => return false,
        };
        if want != proto {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => match p.end_port {
                Some(end) => (i64::from(*n)..=i64::from(end)).contains(&i64::from(port)),
                None => i64::from(*n) == i64::from(port),
            },
            Some(IntOrString::String(name)) => dst.is_some_and(|d| {
                d.named_ports
                    .iter()
                    .any(|(n, pr, num)| n == name && *pr == proto && *num == port)
            }),
        }
    }

    fn ports_match(
        &self,
        ports: &Option<Vec<NetworkPolicyPort>>,
        dst: Option<&ModelPod>,
        proto: Proto,
        port: u16,
    ) -> bool {
        match ports {
            None => true,
            Some(v) if v.is_empty() => true,
            Some(v) => v.iter().any(|p| self.port_matches(p, dst, proto, port)),
        }
    }

    fn peers_match(&self, peers: &Option<Vec<NetworkPolicyPeer>>, ns: &str, who: &Source) -> bool {
        match peers {
            None => true,
            Some(v) if v.is_empty() => true,
            Some(v) => v.iter().any(|p| self.peer_matches(p, ns, who)),
        }
    }

    fn egress_allows(&self, src: usize, dst: usize, proto: Proto, port: u16) -> bool {
        let policies = self.selecting(src, Dir::Egress);
        let ns = &self.pods[src].namespace;
        policies.is_empty()
            || policies.iter().any(|s| {
                s.egress.iter().flatten().any(|r| {
                    self.peers_match(&r.to, ns, &Source::Pod(dst))
                        && self.ports_match(&r.ports, Some(&self.pods[dst]), proto, port)
                })
            })
    }

    fn ingress_allows(&self, src: &Source, dst: usize, proto: Proto, port: u16) -> bool {
        let policies = self.selecting(dst, Dir::Ingress);
        let ns = &self.pods[dst].namespace;
        policies.is_empty()
            || policies.iter().any(|s| {
                s.ingress.iter().flatten().any(|r| {
                    self.peers_match(&r.from, ns, src)
                        && self.ports_match(&r.ports, Some(&self.pods[dst]), proto, port)
                })
            })
    }

    /// Whether a new connection from `src` to pod `dst` on (proto, port of
    /// the pod) is allowed.
    pub fn allows(&self, src: &Source, dst: usize, proto: Proto, port: u16) -> bool {
        match src {
            Source::Pod(s) if *s == dst => true,
            Source::Node { name, .. } if *name == self.pods[dst].node => true,
            Source::Pod(s) => {
                self.egress_allows(*s, dst, proto, port)
                    && self.ingress_allows(src, dst, proto, port)
            }
            _ => self.ingress_allows(src, dst, proto, port),
        }
    }
}

/// How a probe reached its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// The pod's own address.
    PodIp,
    /// The pod's Service ClusterIP (service port differs from the pod port).
    ClusterIp,
    /// A NodePort on the pod's own node.
    NodePort,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::PodIp => "pod IP",
            Path::ClusterIp => "ClusterIP",
            Path::NodePort => "NodePort",
        }
    }
}

/// One probe: which table it belongs to, its cell, and what netprobe is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub path: Path,
    pub proto: Proto,
    /// The pod's port (what policy judges).
    pub pod_port: u16,
    pub dst: usize,
    /// `tcp:IP:PORT` as netprobe takes it.
    pub spec: String,
}

impl Probe {
    pub fn new(
        path: Path,
        proto: Proto,
        pod_port: u16,
        dst: usize,
        ip: Ipv4Addr,
        port: u16,
    ) -> Probe {
        Probe {
            path,
            proto,
            pod_port,
            dst,
            spec: format!("{}:{ip}:{port}", proto.spec()),
        }
    }
}

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and got this identity back.
    Answered(String),
    /// No connection (the reason netprobe gave).
    Failed(String),
}

/// Parses `netprobe probe` output: `SPEC ok ID` / `SPEC fail REASON` lines.
pub fn parse_probe_output(out: &str) -> BTreeMap<String, Outcome> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.trim().splitn(3, ' ');
            let (spec, verdict, rest) = (it.next()?, it.next()?, it.next().unwrap_or(""));
            let outcome = match verdict {
                "ok" => Outcome::Answered(rest.to_string()),
                "fail" => Outcome::Failed(rest.to_string()),
                _ => return None,
            };
            Some((spec.to_string(), outcome))
        })
        .collect()
}

/// One table cell's comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    AllowedAsExpected,
    DeniedAsExpected,
    /// Expected allowed, was denied.
    WronglyDenied,
    /// Expected denied, was allowed.
    WronglyAllowed,
    /// Answered by another pod than the destination.
    WrongAnswer,
    /// The prober gave no line for this probe.
    Missing,
}

impl Cell {
    pub fn of(want: bool, got: Option<&Outcome>, dst_short: &str) -> Cell {
        match (want, got) {
            (_, None) => Cell::Missing,
            (_, Some(Outcome::Answered(id))) if id != dst_short => Cell::WrongAnswer,
            (true, Some(Outcome::Answered(_))) => Cell::AllowedAsExpected,
            (false, Some(Outcome::Failed(_))) => Cell::DeniedAsExpected,
            (true, Some(Outcome::Failed(_))) => Cell::WronglyDenied,
            (false, Some(Outcome::Answered(_))) => Cell::WronglyAllowed,
        }
    }
    pub fn ok(self) -> bool {
        matches!(self, Cell::AllowedAsExpected | Cell::DeniedAsExpected)
    }
    fn symbol(self) -> &'static str {
        match self {
            Cell::AllowedAsExpected => ".",
            Cell::DeniedAsExpected => "X",
            Cell::WronglyDenied => "!",
            Cell::WronglyAllowed => "?",
            Cell::WrongAnswer => "W",
            Cell::Missing => "-",
        }
    }
}

/// One truth table: source index -> destination index -> cell.
pub type Table = BTreeMap<usize, BTreeMap<usize, Cell>>;

/// The result of one round of probes: (source name, probe) -> cell.
#[derive(Clone, Debug, Default)]
pub struct Reachability {
    pub sources: Vec<String>,
    pub dsts: Vec<String>,
    /// (path, proto, pod port) -> source index -> dst index -> cell.
    pub tables: BTreeMap<(Path, Proto, u16), Table>,
}

impl Reachability {
    pub fn record(&mut self, src: usize, probe: &Probe, cell: Cell) {
        self.tables
            .entry((probe.path, probe.proto, probe.pod_port))
            .or_default()
            .entry(src)
            .or_default()
            .insert(probe.dst, cell);
    }

    pub fn wrong(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .flat_map(|r| r.values())
            .filter(|c| !c.ok())
            .count()
    }

    pub fn probes(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .map(|r| r.len())
            .sum()
    }

    /// The truth tables that have a wrong cell (all of them with `all`).
    pub fn render(&self, all: bool) -> String {
        let mut out = String::new();
        for ((path, proto, port), rows) in &self.tables {
            let bad = rows.values().flat_map(|r| r.values()).any(|c| !c.ok());
            if !bad && !all {
                continue;
            }
            let _ = writeln!(
                out,
                "{} {}/{port}: '.' allowed, 'X' denied (both as expected); '!' expected allowed but denied, \
                 '?' expected denied but allowed, 'W' answered by another pod, '-' no result",
                path.as_str(),
                proto.as_str()
            );
            let _ = write!(out, "{:>8}", "src\\dst");
            for d in &self.dsts {
                let _ = write!(out, " {d:>5}");
            }
            out.push('\n');
            for (s, row) in rows {
                let _ = write!(out, "{:>8}", self.sources[*s]);
                for d in 0..self.dsts.len() {
                    let sym = row.get(&d).map(|c| c.symbol()).unwrap_or(" ");
                    let _ = write!(out, " {sym:>5}");
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(short: &str, ns: &str, labels: &[(&str, &str)], last: u8, node: &str) -> ModelPod {
        ModelPod {
            short: short.into(),
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ip: Ipv4Addr::new(10, 244, 1, last),
            node: node.into(),
            named_ports: vec![("web".into(), Proto::Tcp, if ns == "z" { 81 } else { 80 })],
        }
    }

    fn np(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
            .expect("policy")
    }

    fn model(policies: Vec<NetworkPolicy>) -> Model {
        Model {
            pods: vec![
                pod("x/a", "x", &[("pod", "a")], 10, "n1"),
                pod("x/b", "x", &[("pod", "b")], 11, "n1"),
                pod("y/a", "y", &[("pod", "a"), ("tier", "db")], 20, "n2"),
                pod("z/a", "z", &[("pod", "a")], 30, "n2"),
            ],
            namespaces: [("x", "x"), ("y", "y"), ("z", "z")]
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        BTreeMap::from([("ns".to_string(), v.to_string())]),
                    )
                })
                .collect(),
            policies,
        }
    }

    const XA: usize = 0;
    const XB: usize = 1;
    const YA: usize = 2;
    const ZA: usize = 3;

    /// Cases from the Kubernetes NetworkPolicy documentation.
    #[test]
    fn model_follows_the_documented_semantics() {
        let tcp = Proto::Tcp;
        let ext = Source::External {
            ip: Ipv4Addr::new(192, 0, 2, 1),
        };
        let n1 = Source::Node {
            name: "n1".into(),
            ip: Ipv4Addr::new(172, 30, 0, 11),
        };
        let n2 = Source::Node {
            name: "n2".into(),
            ip: Ipv4Addr::new(172, 30, 0, 12),
        };
        let p = Source::Pod;
        // (what, policies, src, dst, proto, port, allowed)
        type Case = (
            &'static str,
            Vec<NetworkPolicy>,
            Source,
            usize,
            Proto,
            u16,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("no policy", vec![], p(YA), XA, tcp, 80, true),
            (
                "deny all ingress",
                vec![np("x", json!({"podSelector": {}}))],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "own node passes",
                vec![np("x", json!({"podSelector": {}}))],
                n1.clone(),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "other node does not",
                vec![np("x", json!({"podSelector": {}}))],
                n2,
                XA,
                tcp,
                80,
                false,
            ),
            (
                "self passes",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                )],
                p(XA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "egress: [] alone is not egress isolation",
                vec![np("x", json!({"podSelector": {}, "egress": []}))],
                p(XA),
                YA,
                tcp,
                80,
                true,
            ),
            (
                "egress deny",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "policyTypes": ["Egress"]}),
                )],
                p(XA),
                YA,
                tcp,
                80,
                false,
            ),
            (
                "podSelector peer is the policy's namespace",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                )],
                p(YA),
                XB,
                tcp,
                80,
                false,
            ),
            (
                "podSelector peer in namespace",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                )],
                p(XA),
                XB,
                tcp,
                80,
                true,
            ),
            (
                "namespaceSelector {} excludes outside",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
                )],
                ext.clone(),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "namespaceSelector by name",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
                )],
                p(ZA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "AND in one peer",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "OR across peers",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "NotIn matches a missing key",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}]}]}),
                )],
                p(ZA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "NotIn excludes the value",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "DoesNotExist",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "ipBlock except",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.20/32"]}}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "ipBlock admits",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.20/32"]}}]}]}),
                )],
                p(ZA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "UDP rule does not open TCP",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                80,
                false,
            ),
            (
                "UDP rule opens UDP",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
                )],
                p(YA),
                XA,
                Proto::Udp,
                80,
                true,
            ),
            (
                "named port on the destination (z: web=81)",
                vec![np(
                    "y",
                    json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]}),
                )],
                p(YA),
                ZA,
                tcp,
                81,
                true,
            ),
            (
                "named port on the destination (x: web=80)",
                vec![np(
                    "y",
                    json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                81,
                false,
            ),
            (
                "endPort",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 81}]}]}),
                )],
                p(YA),
                XA,
                tcp,
                81,
                true,
            ),
            (
                "union",
                vec![
                    np("x", json!({"podSelector": {}, "ingress": []})),
                    np(
                        "x",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}),
                    ),
                ],
                p(YA),
                XA,
                tcp,
                80,
                true,
            ),
            (
                "egress AND ingress",
                vec![np(
                    "x",
                    json!({"podSelector": {}, "ingress": [{}], "egress": [{"to": [{"podSelector": {}}]}]}),
                )],
                p(XA),
                YA,
                tcp,
                80,
                false,
            ),
        ];
        for (what, policies, src, dst, proto, port, want) in cases {
            let m = model(policies);
            assert_eq!(m.allows(&src, dst, proto, port), want, "{what}");
        }
    }

    #[test]
    fn probe_output_and_tables() {
        let out = "tcp:10.0.0.1:80 ok x/a\nudp:10.0.0.1:81 fail timeout\ngarbage\n";
        let got = parse_probe_output(out);
        assert_eq!(got["tcp:10.0.0.1:80"], Outcome::Answered("x/a".into()));
        assert_eq!(got["udp:10.0.0.1:81"], Outcome::Failed("timeout".into()));
        assert_eq!(got.len(), 2);
        assert_eq!(
            Cell::of(true, got.get("tcp:10.0.0.1:80"), "x/a"),
            Cell::AllowedAsExpected
        );
        assert_eq!(
            Cell::of(true, got.get("tcp:10.0.0.1:80"), "x/b"),
            Cell::WrongAnswer
        );
        assert_eq!(
            Cell::of(true, got.get("udp:10.0.0.1:81"), "x/a"),
            Cell::WronglyDenied
        );
        assert_eq!(Cell::of(false, None, "x/a"), Cell::Missing);

        let mut r = Reachability {
            sources: vec!["x/a".into(), "x/b".into()],
            dsts: vec!["x/a".into(), "x/b".into()],
            ..Default::default()
        };
        let probe = |dst| Probe::new(Path::PodIp, Proto::Tcp, 80, dst, Ipv4Addr::LOCALHOST, 80);
        r.record(0, &probe(0), Cell::AllowedAsExpected);
        r.record(0, &probe(1), Cell::WronglyAllowed);
        r.record(1, &probe(0), Cell::DeniedAsExpected);
        assert_eq!(r.wrong(), 1);
        assert_eq!(r.probes(), 3);
        let table = r.render(false);
        assert!(table.contains("pod IP TCP/80"), "{table}");
        assert!(table.contains("     x/a     .     ?"), "{table}");
    }
}
