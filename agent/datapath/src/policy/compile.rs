//! The compile itself: input -> identities, ipcache, endpoints, policy
//! entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use weir_ebpf_common::policy::{
    DIR_EGRESS, DIR_INGRESS, EndpointKey, EndpointValue, IpcacheKey, IpcacheValue,
    POLICY_ACTION_ALLOW, POLICY_ID_HOST, POLICY_ID_MIN, POLICY_ID_UNISOLATED,
    POLICY_PREFIX_ANY_IDENTITY, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO,
    POLICY_PREFIX_FULL, PolicyKey, PolicyValue, identity, map_names,
};

use super::alloc::{Allocator, Exhausted};
use super::model::{NamedPort, ObjectRef, PodInfo, PolicyInput};
use super::ports::port_blocks;
use super::rules::{ParsedPolicy, Peer, PolicyWarning, PortSpec, Rule, parse_policies};
use super::{LpmKey, PolicyError, PolicyLimits, PolicyMaps};

/// What makes two pods the same identity: namespace, labels, and the
/// named container ports. (Pods of one ReplicaSet share all three. Named
/// ports are part of it so that an egress entry keyed by identity resolves
/// a port name exactly as each destination pod does; container ports are
/// immutable, so this never changes a running pod's identity.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityKey {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub named_ports: Vec<NamedPort>,
}

impl IdentityKey {
    fn of(pod: &PodInfo) -> Self {
        Self {
            namespace: pod.pod.namespace.clone(),
            labels: pod.labels.clone(),
            named_ports: pod.named_ports.clone(),
        }
    }
}

/// The numbers handed out by a compile; pass them to the next compile so
/// unchanged things keep their numbers (and their map entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocations {
    pub identities: Allocator<IdentityKey>,
    pub cidrs: Allocator<Ipv4Net>,
    pub endpoints: Allocator<ObjectRef>,
    pub policies: Allocator<ObjectRef>,
}

impl Default for Allocations {
    fn default() -> Self {
        Self {
            identities: Allocator::new(identity::POD_MIN, identity::POD_MAX),
            cidrs: Allocator::new(identity::CIDR_MIN, identity::CIDR_MAX),
            endpoints: Allocator::new(1, u32::from(u16::MAX)),
            policies: Allocator::new(POLICY_ID_MIN, u32::MAX),
        }
    }
}

/// The result of a compile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// What the three maps should hold.
    pub maps: PolicyMaps,
    /// Feed back into the next compile.
    pub alloc: Allocations,
    /// Parts of policies that were ignored (they match nothing).
    pub warnings: Vec<PolicyWarning>,
}

impl Compiled {
    /// The NetworkPolicy a [`PolicyValue::policy_id`] stands for (flow
    /// records); `None` for the reserved ids.
    pub fn policy_of(&self, policy_id: u32) -> Option<&ObjectRef> {
        self.alloc
            .policies
            .iter()
            .find(|(_, id)| *id == policy_id)
            .map(|(r, _)| r)
    }
}

fn exhausted(kind: &'static str) -> impl Fn(Exhausted) -> PolicyError {
    move |e| PolicyError::Exhausted {
        kind,
        capacity: e.capacity,
    }
}

fn check_size(map: &'static str, needed: usize, capacity: u32) -> Result<(), PolicyError> {
    if needed > capacity as usize {
        return Err(PolicyError::MapFull {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

/// Compiles the policies for `input.node`. Pure: same input and `prev`,
/// same output.
pub fn compile(
    input: PolicyInput<'_>,
    prev: &Allocations,
    limits: &PolicyLimits,
) -> Result<Compiled, PolicyError> {
    let mut warnings = Vec::new();
    let ctx = Context::new(input);

    // Identities of (namespace, labels, named ports).
    let keys: BTreeSet<IdentityKey> = ctx.pods.iter().map(|p| IdentityKey::of(p)).collect();
    let identities = prev
        .identities
        .reallocate(&keys)
        .map_err(exhausted("identity"))?;
    let pod_identity: BTreeMap<Ipv4Addr, u32> = ctx
        .pods
        .iter()
        .filter_map(|p| Some((p.ip?, identities.get(&IdentityKey::of(p))?)))
        .collect();

    let parsed = parse_policies(input.policies, &mut warnings);
    let policies = prev
        .policies
        .reallocate(parsed.iter().map(|p| &p.policy))
        .map_err(exhausted("policy id"))?;

    // CIDR identities: every ipBlock prefix, plus the /32 of every pod an
    // egress ipBlock rule with a named port reaches (see `egress_named`).
    let mut prefixes = BTreeSet::new();
    for p in &parsed {
        for rule in p.ingress.iter().flatten() {
            ctx.block_prefixes(rule, false, &mut prefixes);
        }
        for rule in p.egress.iter().flatten() {
            ctx.block_prefixes(rule, true, &mut prefixes);
        }
    }
    let cidrs = prev
        .cidrs
        .reallocate(&prefixes)
        .map_err(exhausted("CIDR identity"))?;
    let cidr_ids: BTreeMap<Ipv4Net, u32> = cidrs.iter().map(|(n, id)| (*n, id)).collect();

    let ipcache = ipcache(&ctx, &pod_identity, &cidr_ids);
    check_size(
        map_names::IPCACHE,
        ipcache.len(),
        limits.ipcache_max_entries,
    )?;

    // Local endpoints.
    let local: Vec<&PodInfo> = ctx
        .pods
        .iter()
        .copied()
        .filter(|p| p.node.as_deref() == Some(input.node.name.as_str()))
        .collect();
    check_size(
        map_names::POLICY_ENDPOINTS,
        local.len(),
        limits.endpoints_max_entries,
    )?;
    let endpoint_ids = prev
        .endpoints
        .reallocate(local.iter().map(|p| &p.pod))
        .map_err(exhausted("endpoint id"))?;

    // Peers resolved once per rule: they do not depend on the endpoint.
    let numbers = Numbers {
        cidr_ids: &cidr_ids,
        // Selectors see only a pod's namespace and labels, which all pods of
        // an identity share: matching one pod per identity is enough.
        by_identity: ctx
            .pods
            .iter()
            .rev()
            .filter_map(|p| Some((*pod_identity.get(&p.ip?)?, *p)))
            .collect(),
    };
    let resolve = |rules: &Option<Vec<Rule>>, ns: &str, egress: bool| {
        rules.as_ref().map(|rules| {
            rules
                .iter()
                .map(|r| ctx.resolve(r, ns, egress, &numbers))
                .collect::<Vec<_>>()
        })
    };
    let resolved: Vec<ResolvedPolicy<'_>> = parsed
        .iter()
        .filter_map(|p| {
            Some(ResolvedPolicy {
                parsed: p,
                id: policies.get(&p.policy)?,
                ingress: resolve(&p.ingress, &p.policy.namespace, false),
                egress: resolve(&p.egress, &p.policy.namespace, true),
            })
        })
        .collect();

    let mut endpoints = BTreeMap::new();
    let mut out = Entries::default();
    for pod in &local {
        let (Some(ip), Some(ep)) = (
            pod.ip,
            endpoint_ids
                .get(&pod.pod)
                .and_then(|id| u16::try_from(id).ok()),
        ) else {
            continue;
        };
        let Some(own) = pod_identity.get(&ip).copied() else {
            continue;
        };
        endpoints.insert(
            EndpointKey {
                addr: u32::from(ip).to_be(),
            },
            EndpointValue {
                endpoint_id: ep,
                _pad: 0,
                identity: own,
            },
        );
        let selecting: Vec<&ResolvedPolicy<'_>> = resolved
            .iter()
            .filter(|p| p.parsed.policy.namespace == pod.pod.namespace)
            .filter(|p| {
                p.parsed
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.matches(&pod.labels))
            })
            .collect();
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let rules: Vec<(&Vec<ResolvedRule>, u32)> = selecting
                .iter()
                .filter_map(|p| {
                    let rules = if direction == DIR_INGRESS {
                        &p.ingress
                    } else {
                        &p.egress
                    };
                    Some((rules.as_ref()?, p.id))
                })
                .collect();
            if rules.is_empty() {
                out.insert(
                    ep,
                    direction,
                    identity::ANY,
                    Ports::Anything,
                    POLICY_ID_UNISOLATED,
                );
                continue;
            }
            {
                // Traffic from and to the pod's own node always passes
                // (kubelet probes; Kubernetes' ipBlock exception), both
                // directions.
                out.insert(
                    ep,
                    direction,
                    identity::HOST,
                    Ports::Anything,
                    POLICY_ID_HOST,
                );
            }
            for (rules, policy_id) in rules {
                for rule in rules {
                    rule.emit(pod, ep, direction, policy_id, &mut out);
                }
            }
        }
    }
    check_size(map_names::POLICY, out.0.len(), limits.policy_max_entries)?;

    Ok(Compiled {
        maps: PolicyMaps {
            ipcache,
            endpoints,
            policy: out.0,
        },
        alloc: Allocations {
            identities,
            cidrs,
            endpoints: endpoint_ids,
            policies,
        },
        warnings,
    })
}

/// The ipcache: the base prefixes (world, cluster CIDR, nodes, pods) and
/// the CIDR prefixes, each valued with the innermost base and the innermost
/// CIDR prefix containing it. The LPM then returns, for any address, both
/// innermost ones (the innermost of the union is inside both).
fn ipcache(
    ctx: &Context<'_>,
    pod_identity: &BTreeMap<Ipv4Addr, u32>,
    cidr_ids: &BTreeMap<Ipv4Net, u32>,
) -> BTreeMap<LpmKey<IpcacheKey>, IpcacheValue> {
    let host = |ip: Ipv4Addr| Ipv4Net::from(ip);
    let mut base: BTreeMap<Ipv4Net, u32> = BTreeMap::new();
    base.insert(Ipv4Net::default(), identity::WORLD);
    if let Some(c) = ctx.input.node.cluster_cidr {
        base.insert(c.trunc(), identity::UNMANAGED);
    }
    for ip in &ctx.input.node.remote_node_ips {
        base.insert(host(*ip), identity::REMOTE_NODE);
    }
    for (ip, id) in pod_identity {
        base.insert(host(*ip), *id);
    }
    for ip in &ctx.input.node.host_ips {
        base.insert(host(*ip), identity::HOST);
    }
    let all: BTreeSet<Ipv4Net> = base.keys().chain(cidr_ids.keys()).copied().collect();
    all.into_iter()
        .map(|net| {
            let key = (
                u32::from(net.prefix_len()),
                IpcacheKey {
                    addr: u32::from(net.network()).to_be(),
                },
            );
            let value = IpcacheValue {
                identity: innermost(&base, net).unwrap_or(identity::WORLD),
                cidr_identity: innermost(cidr_ids, net).unwrap_or(identity::ANY),
            };
            (key, value)
        })
        .collect()
}

/// The value of the most specific prefix in `map` containing `net`.
fn innermost(map: &BTreeMap<Ipv4Net, u32>, net: Ipv4Net) -> Option<u32> {
    (0..=net.prefix_len())
        .rev()
        .find_map(|len| {
            Ipv4Net::new(net.network(), len)
                .ok()
                .and_then(|n| map.get(&n.trunc()))
        })
        .copied()
}

/// Which protocols and ports an entry allows.
#[derive(Clone, Copy, Debug)]
enum Ports {
    Anything,
    Proto(u8),
    Range(u8, u16, u16),
}

/// The policy entries being built.
#[derive(Default)]
struct Entries(BTreeMap<LpmKey<PolicyKey>, PolicyValue>);

impl Entries {
    fn insert(&mut self, ep: u16, direction: u8, identity: u32, ports: Ports, policy_id: u32) {
        let key = |prefixlen, proto, port: u16| {
            (
                prefixlen,
                PolicyKey {
                    endpoint_id: ep,
                    direction,
                    _pad0: 0,
                    identity,
                    proto,
                    _pad1: 0,
                    port: port.to_be(),
                },
            )
        };
        let keys = match ports {
            Ports::Anything if identity == identity::ANY => {
                vec![key(POLICY_PREFIX_ANY_IDENTITY, 0, 0)]
            }
            Ports::Anything => vec![key(POLICY_PREFIX_ANY_PROTO, 0, 0)],
            Ports::Proto(p) => vec![key(POLICY_PREFIX_ANY_PORT, p, 0)],
            Ports::Range(p, lo, hi) => port_blocks(lo, hi)
                .into_iter()
                .map(|b| key(POLICY_PREFIX_FULL - b.bits, p, b.start))
                .collect(),
        };
        for k in keys {
            let v = self.0.entry(k).or_insert(PolicyValue {
                policy_id,
                action: POLICY_ACTION_ALLOW,
                _pad: [0; 3],
            });
            v.policy_id = v.policy_id.min(policy_id);
        }
    }
}

/// The pods and namespaces, indexed for matching.
struct Context<'a> {
    input: PolicyInput<'a>,
    /// Pods that have an address and their own network namespace, one per
    /// address (the first by namespace/name when two claim one, e.g. a
    /// deleted pod's stale record).
    pods: Vec<&'a PodInfo>,
    ns_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> Context<'a> {
    fn new(input: PolicyInput<'a>) -> Self {
        let mut sorted: Vec<&PodInfo> = input
            .pods
            .iter()
            .filter(|p| p.ip.is_some() && !p.host_network)
            .collect();
        sorted.sort_by(|a, b| a.pod.cmp(&b.pod));
        let mut seen = BTreeSet::new();
        let pods = sorted.into_iter().filter(|p| seen.insert(p.ip)).collect();
        let ns_labels = input
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), &n.labels))
            .collect();
        Self {
            input,
            pods,
            ns_labels,
        }
    }

    /// Whether `pod` is one of the pods `peer` (of a policy in `policy_ns`) selects.
    fn peer_selects(&self, peer: &Peer, policy_ns: &str, pod: &PodInfo) -> bool {
        let Peer::Pods { namespaces, pods } = peer else {
            return false;
        };
        let ns = pod.pod.namespace.as_str();
        let ns_ok = match namespaces {
            None => ns == policy_ns,
            Some(sel) => match self.ns_labels.get(ns) {
                Some(labels) => sel.matches(labels),
                // A namespace we have not seen yet still has its name label.
                None => sel.matches(&BTreeMap::from([(
                    super::model::NAMESPACE_NAME_LABEL.to_string(),
                    ns.to_string(),
                )])),
            },
        };
        ns_ok && pods.matches(&pod.labels)
    }

    fn block_prefixes(&self, rule: &Rule, egress: bool, out: &mut BTreeSet<Ipv4Net>) {
        let named = rule
            .ports
            .iter()
            .flatten()
            .any(|p| matches!(p, PortSpec::Named { .. }));
        for peer in rule.peers.iter().flatten() {
            if let Peer::Block { cidr, except } = peer {
                out.insert(*cidr);
                out.extend(except.iter().copied());
                if egress && named {
                    out.extend(
                        self.pods
                            .iter()
                            .filter_map(|p| p.ip)
                            .filter(|ip| in_block(*ip, cidr, except))
                            .map(Ipv4Net::from),
                    );
                }
            }
        }
    }

    /// Resolves a rule's peers to remote identities (and, for egress named
    /// ports, to per-destination-pod port numbers).
    fn resolve(
        &self,
        rule: &Rule,
        policy_ns: &str,
        egress: bool,
        numbers: &Numbers<'_>,
    ) -> ResolvedRule {
        let mut remotes = BTreeSet::new();
        match &rule.peers {
            None => {
                remotes.insert(identity::ANY);
            }
            Some(peers) => {
                for peer in peers {
                    match peer {
                        Peer::Pods { .. } => remotes.extend(
                            numbers
                                .by_identity
                                .iter()
                                .filter(|(_, q)| self.peer_selects(peer, policy_ns, q))
                                .map(|(id, _)| *id),
                        ),
                        Peer::Block { cidr, except } => remotes.extend(
                            numbers
                                .cidr_ids
                                .iter()
                                .filter(|(net, _)| {
                                    cidr.contains(*net) && !except.iter().any(|e| e.contains(*net))
                                })
                                .map(|(_, id)| *id),
                        ),
                        Peer::Nothing => {}
                    }
                }
            }
        }
        let mut egress_named = BTreeSet::new();
        if egress {
            for spec in rule.ports.iter().flatten() {
                if let PortSpec::Named { proto, name } = spec {
                    let named = NamedRef {
                        proto: *proto,
                        name,
                    };
                    self.egress_named(rule, policy_ns, named, numbers, &mut egress_named);
                }
            }
        }
        ResolvedRule {
            remotes,
            ports: rule.ports.clone(),
            egress_named,
        }
    }

    /// An egress named port, resolved on each destination pod: keyed by the
    /// pod's identity (all pods of one identity resolve a name alike, see
    /// [`IdentityKey`]) for selector peers and "any peer", and by the pod's
    /// own /32 CIDR identity for ipBlock peers (other pods of its identity
    /// may be outside the block). Non-pod addresses have no named ports.
    fn egress_named(
        &self,
        rule: &Rule,
        policy_ns: &str,
        named: NamedRef<'_>,
        numbers: &Numbers<'_>,
        out: &mut BTreeSet<(u32, u8, u16)>,
    ) {
        let (proto, name) = (named.proto, named.name);
        let peers = rule.peers.as_deref();
        // Selector peers and "any peer": one pod per identity decides.
        for (id, q) in &numbers.by_identity {
            let selected = match peers {
                None => true,
                Some(peers) => peers.iter().any(|p| self.peer_selects(p, policy_ns, q)),
            };
            if let (true, Some(port)) = (selected, q.resolve(name, proto)) {
                out.insert((*id, proto, port));
            }
        }
        // ipBlock peers: each pod inside, by its own /32 CIDR identity.
        for peer in peers.into_iter().flatten() {
            let Peer::Block { cidr, except } = peer else {
                continue;
            };
            for q in &self.pods {
                let Some(ip) = q.ip.filter(|ip| in_block(*ip, cidr, except)) else {
                    continue;
                };
                if let (Some(id), Some(port)) = (
                    numbers.cidr_ids.get(&Ipv4Net::from(ip)),
                    q.resolve(name, proto),
                ) {
                    out.insert((*id, proto, port));
                }
            }
        }
    }
}

/// The numbers a compile gave out, for resolving peers.
struct Numbers<'a> {
    cidr_ids: &'a BTreeMap<Ipv4Net, u32>,
    /// One pod of each identity.
    by_identity: BTreeMap<u32, &'a PodInfo>,
}

/// A named port of a rule.
#[derive(Clone, Copy)]
struct NamedRef<'a> {
    proto: u8,
    name: &'a str,
}

/// A policy with its rules resolved.
struct ResolvedPolicy<'p> {
    parsed: &'p ParsedPolicy,
    id: u32,
    ingress: Option<Vec<ResolvedRule>>,
    egress: Option<Vec<ResolvedRule>>,
}

/// A rule with its peers resolved; what is left depends on the endpoint
/// only through ingress named ports.
struct ResolvedRule {
    /// Remote identities of the peers ([`identity::ANY`] for every peer).
    remotes: BTreeSet<u32>,
    /// `None`: every protocol and port.
    ports: Option<Vec<PortSpec>>,
    /// Egress named ports resolved per destination: (identity, proto, port).
    egress_named: BTreeSet<(u32, u8, u16)>,
}

impl ResolvedRule {
    /// The entries of this rule for endpoint `ep` (pod `pod`).
    fn emit(&self, pod: &PodInfo, ep: u16, direction: u8, policy_id: u32, out: &mut Entries) {
        let Some(specs) = &self.ports else {
            for r in &self.remotes {
                out.insert(ep, direction, *r, Ports::Anything, policy_id);
            }
            return;
        };
        for spec in specs {
            let ports = match spec {
                PortSpec::All { proto } => Ports::Proto(*proto),
                PortSpec::Range { proto, lo, hi } => Ports::Range(*proto, *lo, *hi),
                // Ingress: the destination is this endpoint; resolve on it.
                PortSpec::Named { proto, name } if direction == DIR_INGRESS => {
                    match pod.resolve(name, *proto) {
                        Some(n) => Ports::Range(*proto, n, n),
                        None => continue,
                    }
                }
                // Egress: resolved per destination in `egress_named`.
                PortSpec::Named { .. } | PortSpec::Nothing => continue,
            };
            for r in &self.remotes {
                out.insert(ep, direction, *r, ports, policy_id);
            }
        }
        for &(id, proto, port) in &self.egress_named {
            out.insert(
                ep,
                direction,
                id,
                Ports::Range(proto, port, port),
                policy_id,
            );
        }
    }
}

fn in_block(ip: Ipv4Addr, cidr: &Ipv4Net, except: &[Ipv4Net]) -> bool {
    cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
}
