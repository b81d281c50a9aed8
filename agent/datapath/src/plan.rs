//! The service map planner: pure functions, no I/O.
//!
//! - [`desired_services`]: (Services, EndpointSlices) -> what the services and
//!   backends maps should hold ([`DesiredServices`]).
//! - [`diff`]: (desired, current map contents) -> an ordered list of
//!   [`MapOp`]s that turns current into desired without a packet ever seeing
//!   a half-written service.
//!
//! The executor in `sync.rs` applies the ops one by one and mirrors each
//! success into [`MapState::apply`], so the in-memory view of the maps stays
//! exact even when an op fails halfway through a plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use weir_ebpf_common::policy::IPPROTO_SCTP;
use weir_ebpf_common::{
    Backend, BackendKey, CT_DIR_FORWARD, CT_FLAG_DSR, CT_FLAG_HAIRPIN, CT_FLAG_NO_NAT,
    CT_FLAG_SNAT, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_ANNOUNCE,
    SERVICE_FLAG_DSR, SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT, SERVICE_FLAG_SOURCE_RANGES,
    SOURCE_RANGE_FRONTEND_BITS, ServiceKey, ServiceValue, SourceRangeKey,
};

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every service frontend and what it should hold.
pub type DesiredServices = BTreeMap<ServiceKey, Frontend>;

/// What one frontend should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontend {
    /// Sorted and de-duplicated, so an unchanged endpoint set compares equal
    /// and causes no map write.
    pub backends: Vec<Backend>,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u32,
    /// `sessionAffinity: ClientIP` timeout in seconds (0 = none).
    pub affinity_timeout_secs: u32,
    /// With [`SERVICE_FLAG_SOURCE_RANGES`]: the client prefixes allowed in
    /// (`loadBalancerSourceRanges`), sorted.
    pub source_ranges: Vec<Ipv4Net>,
}

impl From<Vec<Backend>> for Frontend {
    /// A plain ClusterIP frontend.
    fn from(backends: Vec<Backend>) -> Self {
        Frontend {
            backends,
            ..Frontend::default()
        }
    }
}

/// The node the planner plans for: NodePort frontends use its address, and
/// externalTrafficPolicy Local keeps only endpoints on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeContext {
    /// The Node's name, as EndpointSlice endpoints carry it (`nodeName`).
    pub name: String,
    /// The node address NodePorts are reachable on.
    pub ip: Ipv4Addr,
    /// How NodePort/externalIP/LoadBalancer traffic to backends on other
    /// nodes is forwarded (see [`forwarding_mode`]).
    pub forwarding: Forwarding,
}

/// The annotation that picks a Service's forwarding mode (`snat` or `dsr`),
/// overriding the agent's `--lb-mode`.
pub const FORWARDING_MODE_ANNOTATION: &str = "service.weir.io/forwarding-mode";

/// How external traffic reaches backends on other nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LbMode {
    /// Source-translated to the load-balancing node; replies come back
    /// through it.
    #[default]
    Snat,
    /// Direct server return: the client address is kept and the backend's
    /// node replies to the client itself ([`SERVICE_FLAG_DSR`]).
    Dsr,
}

impl std::str::FromStr for LbMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "snat" => Ok(LbMode::Snat),
            "dsr" => Ok(LbMode::Dsr),
            other => Err(format!(
                "unknown load-balancing mode {other:?}: use snat or dsr"
            )),
        }
    }
}

/// The node's forwarding settings: the default mode (`--lb-mode`) and
/// whether DSR can work (native routing: the backend node must see the
/// client's packets unencapsulated and reply to the client directly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    pub default: LbMode,
    pub dsr_possible: bool,
}

/// Why a Service's forwarding-mode annotation was not followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardingProblem {
    /// The value is neither `snat` nor `dsr`; the default applies.
    Unknown(String),
    /// `dsr` on a cluster without native routing (VXLAN); SNAT applies.
    DsrNeedsNativeRouting,
}

impl std::fmt::Display for ForwardingProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(v) => write!(
                f,
                "annotation {FORWARDING_MODE_ANNOTATION}={v:?} is neither snat nor dsr; using the agent's --lb-mode"
            ),
            Self::DsrNeedsNativeRouting => write!(
                f,
                "annotation {FORWARDING_MODE_ANNOTATION}=dsr ignored: DSR needs --routing-mode native; using SNAT"
            ),
        }
    }
}

/// The forwarding mode of a Service's external frontends: its
/// `service.weir.io/forwarding-mode` annotation, else the node's default;
/// never DSR where it cannot work. The problem, if any, is for a warning.
pub fn forwarding_mode(
    service: &Service,
    forwarding: Forwarding,
) -> (LbMode, Option<ForwardingProblem>) {
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FORWARDING_MODE_ANNOTATION));
    let (wanted, problem) = match annotation.map(|v| v.trim().parse::<LbMode>()) {
        None => (forwarding.default, None),
        Some(Ok(mode)) => (mode, None),
        Some(Err(_)) => (
            forwarding.default,
            annotation.map(|v| ForwardingProblem::Unknown(v.clone())),
        ),
    };
    if wanted == LbMode::Dsr && !forwarding.dsr_possible {
        let problem = problem.or(annotation.map(|_| ForwardingProblem::DsrNeedsNativeRouting));
        return (LbMode::Snat, problem);
    }
    (wanted, problem)
}

/// Computes the desired map contents from the Services and EndpointSlices of
/// all namespaces.
///
/// Only ClusterIP frontends with an IPv4 cluster IP are produced: headless
/// services (`clusterIP: None`), services without a cluster IP (ExternalName,
/// not yet allocated) and SCTP ports are skipped. Backends come from the
/// EndpointSlices labelled with the service's name, port matched by name and
/// protocol (the slice port is the targetPort already resolved per pod). Ready
/// endpoints are used; if a port has none, serving-but-terminating endpoints
/// are used instead, so connections drain during a rollout instead of failing.
/// A frontend with no usable endpoint is still desired, with no backends: the
/// datapath then drops new connections to it.
///
/// `spec.externalIPs` and (type LoadBalancer) `status.loadBalancer.ingress`
/// IPs get frontends like node ports ([`SERVICE_FLAG_NODEPORT`]: translated
/// at the node interface, SNAT to the node), on the service port; making the
/// address reach a node is outside the datapath for external IPs (routes);
/// for LoadBalancer IPs the [`announce_owner`] node answers ARP (an address
/// marker `(ip, 0, 0)` with [`SERVICE_FLAG_ANNOUNCE`]).
/// `sessionAffinity: ClientIP` sets every frontend's affinity timeout. With a
/// `node`, `internalTrafficPolicy: Local` limits the ClusterIP frontend to
/// the endpoints on that node.
/// Services without a selector work like any other: their EndpointSlices are
/// found by the `kubernetes.io/service-name` label, whoever wrote them.
///
/// With a `node`, NodePort and LoadBalancer services also get a frontend per
/// port on `node.ip:nodePort` ([`SERVICE_FLAG_NODEPORT`]); with
/// `externalTrafficPolicy: Local` that frontend keeps only the endpoints
/// whose `nodeName` is this node ([`SERVICE_FLAG_EXT_LOCAL`]; none -> no
/// backends -> the node does not answer).
pub fn desired_services<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: Option<&NodeContext>,
) -> DesiredServices {
    let mut slices_by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(service) = slice_service(slice) {
            slices_by_service.entry(service).or_default().push(slice);
        }
    }

    let mut desired = DesiredServices::new();
    for service in services {
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let slices = slices_by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A frontend key two services both claim goes to the later one (by
        // namespace/name when the store iterates in order).
        desired.extend(service_frontends(service, slices, node));
    }
    desired
}

/// The service (namespace, `kubernetes.io/service-name` label) an
/// EndpointSlice belongs to; `None` for non-IPv4 and unlabelled slices, which
/// the planner ignores.
pub fn slice_service(slice: &EndpointSlice) -> Option<(&str, &str)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((ns, svc.as_str()))
}

/// The frontends of one service, from the EndpointSlices of that service
/// (see [`desired_services`] for the rules). [`desired_services`] is this
/// function over every service; the agent's sync calls it for the services
/// an event touched, so one change costs the same whatever the number of
/// services.
pub fn service_frontends(
    service: &Service,
    slices: &[&EndpointSlice],
    node: Option<&NodeContext>,
) -> DesiredServices {
    let mut desired = DesiredServices::new();
    let Some(cluster_ip) = cluster_ipv4(service) else {
        return desired;
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let spec = service.spec.as_ref();
    let node_ports = node.filter(|_| {
        matches!(
            spec.and_then(|s| s.type_.as_deref()),
            Some("NodePort" | "LoadBalancer")
        )
    });
    let ext_local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let affinity_timeout_secs = spec.map_or(0, affinity_timeout_secs);
    let int_local = spec.and_then(|s| s.internal_traffic_policy.as_deref()) == Some("Local");
    // Direct server return for external frontends with cluster traffic
    // policy (Local ones only have local backends: nothing to return).
    let dsr_flag = match node.map(|n| forwarding_mode(service, n.forwarding).0) {
        Some(LbMode::Dsr) if !ext_local => SERVICE_FLAG_DSR,
        _ => 0,
    };
    let external_ips = external_ipv4s(service);
    let lb_ips = load_balancer_ipv4s(service);
    let source_ranges = spec.and_then(load_balancer_source_ranges);
    if let Some(node) = node
        && announce_owner(slices).as_deref() == Some(node.name.as_str())
    {
        for ip in load_balancer_ipv4s(service) {
            desired.insert(
                ServiceKey::new(ip.octets(), 0, 0),
                Frontend {
                    backends: Vec::new(),
                    flags: SERVICE_FLAG_ANNOUNCE,
                    affinity_timeout_secs: 0,
                    source_ranges: Vec::new(),
                },
            );
        }
    }
    for port in ports {
        let Some(proto) = protocol_number(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(port_number) = u16::try_from(port.port) else {
            continue;
        };
        let key = ServiceKey::new(cluster_ip.octets(), port_number, proto);
        let port_name = port.name.as_deref().unwrap_or_default();
        let backends = backends_for_port(slices, port_name, proto, None);
        // internalTrafficPolicy Local: the ClusterIP serves this node's
        // endpoints only (none -> dropped, as Kubernetes specifies).
        let cluster_backends = match node.filter(|_| int_local) {
            Some(node) => backends_for_port(slices, port_name, proto, Some(&node.name)),
            None => backends.clone(),
        };
        if let Some(node) = node_ports
            && let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok())
            && node_port != 0
        {
            let (backends, flags) = if ext_local {
                (
                    backends_for_port(slices, port_name, proto, Some(&node.name)),
                    SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL,
                )
            } else {
                (backends.clone(), SERVICE_FLAG_NODEPORT | dsr_flag)
            };
            desired.insert(
                ServiceKey::new(node.ip.octets(), node_port, proto),
                Frontend {
                    backends,
                    flags,
                    affinity_timeout_secs,
                    source_ranges: Vec::new(),
                },
            );
        }
        for ip in &external_ips {
            // loadBalancerSourceRanges restrict the LoadBalancer IPs only.
            let ranges = source_ranges.as_ref().filter(|_| lb_ips.contains(ip));
            let local = ext_local && node.is_some();
            let backends = match node.filter(|_| local) {
                Some(node) => backends_for_port(slices, port_name, proto, Some(&node.name)),
                None => backends.clone(),
            };
            let local_flag = if local { SERVICE_FLAG_EXT_LOCAL } else { 0 };
            desired.insert(
                ServiceKey::new(ip.octets(), port_number, proto),
                Frontend {
                    backends,
                    flags: SERVICE_FLAG_NODEPORT
                        | local_flag
                        | if local { 0 } else { dsr_flag }
                        | ranges.map_or(0, |_| SERVICE_FLAG_SOURCE_RANGES),
                    affinity_timeout_secs,
                    source_ranges: ranges.cloned().unwrap_or_default(),
                },
            );
        }
        desired.insert(
            key,
            Frontend {
                backends: cluster_backends,
                flags: 0,
                affinity_timeout_secs,
                source_ranges: Vec::new(),
            },
        );
    }
    desired
}

/// The IPv4 addresses a service is reachable on from outside besides node
/// ports: `spec.externalIPs` and the load-balancer ingress IPs in its status
/// (sorted, de-duplicated; others skipped).
fn external_ipv4s(service: &Service) -> BTreeSet<Ipv4Addr> {
    let mut ips: BTreeSet<Ipv4Addr> = service
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .collect();
    ips.extend(load_balancer_ipv4s(service));
    ips
}

/// `loadBalancerSourceRanges` as sorted IPv4 prefixes; `None` when unset or
/// empty (no restriction). Entries that do not parse (or are IPv6) are
/// skipped, so a list of only such entries allows nobody: fail closed.
fn load_balancer_source_ranges(spec: &ServiceSpec) -> Option<Vec<Ipv4Net>> {
    let ranges = spec.load_balancer_source_ranges.as_ref()?;
    if ranges.is_empty() {
        return None;
    }
    let nets: BTreeSet<Ipv4Net> = ranges
        .iter()
        .filter_map(|r| r.trim().parse::<Ipv4Net>().ok())
        .map(|n| n.trunc())
        .collect();
    Some(nets.into_iter().collect())
}

/// The IPv4 load-balancer ingress IPs of a LoadBalancer service.
fn load_balancer_ipv4s(service: &Service) -> BTreeSet<Ipv4Addr> {
    if service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
        return BTreeSet::new();
    }
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        .collect()
}

/// The node that answers ARP for a service's LoadBalancer IPs: the first
/// (by name) node with a ready endpoint of the service. Every agent computes
/// the same answer from the same EndpointSlices, so exactly one node
/// announces; choosing a node with endpoints keeps externalTrafficPolicy
/// Local services reachable. `None` (nobody announces) without endpoints.
fn announce_owner(slices: &[&EndpointSlice]) -> Option<String> {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| matches!(readiness(e), Readiness::Ready))
        .filter_map(|e| e.node_name.clone())
        .min()
}

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 h).
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;

/// The ClientIP session affinity timeout of a service, 0 without affinity.
/// A missing or non-positive timeout means Kubernetes' default (the API
/// server validates 1..=86400; the planner does not trust that).
fn affinity_timeout_secs(spec: &ServiceSpec) -> u32 {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return 0;
    }
    spec.session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS)
}

/// The service's IPv4 cluster IP, or `None` for headless services, services
/// without one, and IPv6-only services.
fn cluster_ipv4(service: &Service) -> Option<Ipv4Addr> {
    let spec = service.spec.as_ref()?;
    let candidates = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter());
    candidates
        .filter(|ip| ip.as_str() != "None")
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

/// Maps a Kubernetes protocol name (default TCP) to the IP protocol number;
/// `None` for protocols the datapath does not handle (SCTP).
fn protocol_number(protocol: Option<&str>) -> Option<u8> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        _ => None,
    }
}

/// The backends of one service port across all slices of the service; with
/// `only_node`, only the endpoints on that node.
fn backends_for_port(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: u8,
    only_node: Option<&str>,
) -> Vec<Backend> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && protocol_number(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(target_port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if only_node.is_some() && endpoint.node_name.as_deref() != only_node {
                continue;
            }
            let set = match readiness(endpoint) {
                Readiness::Ready => &mut ready,
                Readiness::ServingTerminating => &mut terminating,
                Readiness::Unusable => continue,
            };
            for addr in &endpoint.addresses {
                if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                    set.insert(Backend::new(ip.octets(), target_port));
                }
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

enum Readiness {
    Ready,
    ServingTerminating,
    Unusable,
}

/// Endpoint conditions as EndpointSlice consumers must read them: an unset
/// `ready` means ready, an unset `serving` follows `ready`, an unset
/// `terminating` means not terminating.
fn readiness(endpoint: &Endpoint) -> Readiness {
    let c = endpoint.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        Readiness::Ready
    } else if serving && terminating {
        Readiness::ServingTerminating
    } else {
        Readiness::Unusable
    }
}

/// What the services and backends maps hold (read from the kernel at start,
/// then mirrored op by op).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub backends: BTreeMap<BackendKey, Backend>,
    /// LPM keys of the source ranges map: (prefix length, data).
    pub source_ranges: BTreeSet<(u32, SourceRangeKey)>,
}

impl MapState {
    /// The complete backend list of `value`, or `None` if any index is missing.
    fn backends_of(&self, value: &ServiceValue) -> Option<Vec<Backend>> {
        (0..value.backend_count)
            .map(|index| {
                self.backends
                    .get(&BackendKey {
                        slot: value.backend_slot,
                        index,
                    })
                    .copied()
            })
            .collect()
    }

    /// Every backend entry under `slot`.
    fn slot_entries(&self, slot: u32) -> impl Iterator<Item = BackendKey> + '_ {
        self.backends
            .range(
                BackendKey { slot, index: 0 }..=BackendKey {
                    slot,
                    index: u32::MAX,
                },
            )
            .map(|(k, _)| *k)
    }

    /// Whether any backend entry uses `slot`.
    fn slot_in_use(&self, slot: u32) -> bool {
        self.slot_entries(slot).next().is_some()
    }

    /// Records an op that was applied to the kernel maps.
    pub fn apply(&mut self, op: &MapOp) {
        match *op {
            MapOp::PutBackend(k, v) => {
                self.backends.insert(k, v);
            }
            MapOp::PutService(k, v) => {
                self.services.insert(k, v);
            }
            MapOp::DeleteService(k) => {
                self.services.remove(&k);
            }
            MapOp::DeleteBackend(k) => {
                self.backends.remove(&k);
            }
            MapOp::PutSourceRange(len, k) => {
                self.source_ranges.insert((len, k));
            }
            MapOp::DeleteSourceRange(len, k) => {
                self.source_ranges.remove(&(len, k));
            }
        }
    }

    /// The first slot number worth trying for new backend sets: above every
    /// slot in use, so a freed slot is not reused right away (a packet that
    /// read the old service value a moment ago may still look it up).
    pub fn next_free_slot(&self) -> u32 {
        let max_service = self
            .services
            .values()
            .map(|v| v.backend_slot)
            .max()
            .unwrap_or(0);
        let max_backend = self.backends.keys().map(|k| k.slot).max().unwrap_or(0);
        max_service.max(max_backend).wrapping_add(1).max(1)
    }
}

/// One write to the services or backends map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    PutBackend(BackendKey, Backend),
    PutService(ServiceKey, ServiceValue),
    DeleteService(ServiceKey),
    DeleteBackend(BackendKey),
    /// An LPM entry (prefix length, data) of the source ranges map.
    PutSourceRange(u32, SourceRangeKey),
    DeleteSourceRange(u32, SourceRangeKey),
}

/// Plans the writes that turn `current` into `desired`.
///
/// The ops come in three phases, which is what makes each service change
/// atomic for the datapath:
/// 1. write every new backend set under a fresh slot (no service refers to it yet),
/// 2. point services at their new slots (one map update each) and delete
///    services that are no longer desired,
/// 3. delete every backend entry no service refers to any more (old slots,
///    and leftovers of an agent that crashed mid-plan).
///
/// `next_slot` is the allocator's cursor (start it at
/// [`MapState::next_free_slot`]); it only moves forward, skipping slots in use
/// and 0.
pub fn diff(desired: &DesiredServices, current: &MapState, next_slot: &mut u32) -> Vec<MapOp> {
    let mut used: BTreeSet<u32> = current.services.values().map(|v| v.backend_slot).collect();
    used.extend(current.backends.keys().map(|k| k.slot));

    let mut put_backends = Vec::new();
    let mut flips = Vec::new();
    let mut referenced: BTreeSet<BackendKey> = BTreeSet::new();

    for (key, want) in desired {
        let keep = current.services.get(key).filter(|value| {
            value.flags == want.flags
                && value.affinity_timeout_secs == want.affinity_timeout_secs
                && current.backends_of(value).as_deref() == Some(want.backends.as_slice())
        });
        let value = match keep {
            Some(value) => *value,
            None => {
                let slot = allocate_slot(next_slot, &mut used);
                let value = ServiceValue {
                    backend_slot: slot,
                    // More than u32::MAX backends cannot exist (the map holds far fewer).
                    backend_count: u32::try_from(want.backends.len()).unwrap_or(u32::MAX),
                    flags: want.flags,
                    affinity_timeout_secs: want.affinity_timeout_secs,
                };
                for (index, backend) in (0u32..).zip(&want.backends) {
                    put_backends.push(MapOp::PutBackend(BackendKey { slot, index }, *backend));
                }
                flips.push(MapOp::PutService(*key, value));
                value
            }
        };
        referenced.extend((0..value.backend_count).map(|index| BackendKey {
            slot: value.backend_slot,
            index,
        }));
    }
    for key in current.services.keys() {
        if !desired.contains_key(key) {
            flips.push(MapOp::DeleteService(*key));
        }
    }
    let deletes = current
        .backends
        .keys()
        .filter(|k| !referenced.contains(k))
        .map(|k| MapOp::DeleteBackend(*k));

    // Source ranges are written before a frontend is flagged as restricted
    // and removed after it no longer is, like backend sets.
    let want_ranges = desired_source_ranges(desired);
    let put_ranges = want_ranges
        .difference(&current.source_ranges)
        .map(|(len, k)| MapOp::PutSourceRange(*len, *k));
    let delete_ranges = current
        .source_ranges
        .difference(&want_ranges)
        .map(|(len, k)| MapOp::DeleteSourceRange(*len, *k));

    put_backends
        .into_iter()
        .chain(put_ranges)
        .chain(flips)
        .chain(deletes)
        .chain(delete_ranges)
        .collect()
}

/// Plans the writes that bring only the frontends in `keys` to what
/// `desired` says (absent from `desired` = delete), leaving every other
/// frontend, backend set and source range alone: the incremental form of
/// [`diff`] for a change to one or a few services. Its cost grows with the
/// size of the change and `log N`, not with N.
///
/// The same three phases as [`diff`] (new backend sets, then the service
/// flips and deletes, then the old backend sets) make each frontend's switch
/// atomic. Backend sets are never shared between frontends (every new value
/// gets a fresh slot), so the old set of a rewritten or deleted frontend is
/// deleted with it. Leftovers of a crash are not looked for here; a full
/// [`diff`] removes them.
///
/// New slots are checked against the backend entries in use; a slot of a
/// frontend with no backends may in theory be handed out again after the
/// cursor wraps past `u32::MAX`, which is harmless: a frontend with
/// `backend_count` 0 never reads its slot.
pub fn diff_frontends(
    desired: &DesiredServices,
    keys: &BTreeSet<ServiceKey>,
    current: &MapState,
    next_slot: &mut u32,
) -> Vec<MapOp> {
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut put_backends = Vec::new();
    let mut flips = Vec::new();
    let mut deletes = Vec::new();
    for key in keys {
        let old = current.services.get(key);
        let Some(want) = desired.get(key) else {
            if let Some(old) = old {
                flips.push(MapOp::DeleteService(*key));
                deletes.extend(current.slot_entries(old.backend_slot));
            }
            continue;
        };
        let unchanged = old.is_some_and(|value| {
            value.flags == want.flags
                && value.affinity_timeout_secs == want.affinity_timeout_secs
                && current.backends_of(value).as_deref() == Some(want.backends.as_slice())
        });
        if unchanged {
            continue;
        }
        let slot = loop {
            let slot = *next_slot;
            *next_slot = next_slot.wrapping_add(1).max(1);
            if slot != 0 && !current.slot_in_use(slot) && taken.insert(slot) {
                break slot;
            }
        };
        for (index, backend) in (0u32..).zip(&want.backends) {
            put_backends.push(MapOp::PutBackend(BackendKey { slot, index }, *backend));
        }
        flips.push(MapOp::PutService(
            *key,
            ServiceValue {
                backend_slot: slot,
                backend_count: u32::try_from(want.backends.len()).unwrap_or(u32::MAX),
                flags: want.flags,
                affinity_timeout_secs: want.affinity_timeout_secs,
            },
        ));
        if let Some(old) = old {
            deletes.extend(current.slot_entries(old.backend_slot));
        }
    }

    let subset: DesiredServices = keys
        .iter()
        .filter_map(|k| Some((*k, desired.get(k)?.clone())))
        .collect();
    let want_ranges = desired_source_ranges(&subset);
    let have_ranges: BTreeSet<(u32, SourceRangeKey)> = current
        .source_ranges
        .iter()
        .filter(|(_, r)| {
            keys.contains(&ServiceKey {
                addr: r.frontend_addr,
                port: r.frontend_port,
                proto: r.proto,
                _pad: 0,
            })
        })
        .copied()
        .collect();
    let put_ranges = want_ranges
        .difference(&have_ranges)
        .map(|(len, k)| MapOp::PutSourceRange(*len, *k));
    let delete_ranges = have_ranges
        .difference(&want_ranges)
        .map(|(len, k)| MapOp::DeleteSourceRange(*len, *k));

    put_backends
        .into_iter()
        .chain(put_ranges)
        .chain(flips)
        .chain(deletes.into_iter().map(MapOp::DeleteBackend))
        .chain(delete_ranges)
        .collect()
}

/// The LPM entries of every desired frontend's source ranges.
fn desired_source_ranges(desired: &DesiredServices) -> BTreeSet<(u32, SourceRangeKey)> {
    desired
        .iter()
        .flat_map(|(key, frontend)| {
            frontend.source_ranges.iter().map(|net| {
                (
                    SOURCE_RANGE_FRONTEND_BITS + u32::from(net.prefix_len()),
                    SourceRangeKey {
                        frontend_addr: key.addr,
                        frontend_port: key.port,
                        proto: key.proto,
                        _pad: 0,
                        src: u32::from(net.network()).to_be(),
                    },
                )
            })
        })
        .collect()
}

/// The UDP conntrack entries (either direction) whose backend is no longer a
/// backend of their frontend.
///
/// UDP has no handshake that marks a new flow, so a client that keeps sending
/// from one port would otherwise stick to a removed backend forever (kube-proxy
/// clears UDP conntrack for the same reason). TCP entries are left alone: a
/// terminating backend still serves its established connections, and a new
/// TCP connection (SYN) is balanced afresh by the datapath anyway.
pub fn stale_udp_conntrack(
    entries: impl IntoIterator<Item = (CtKey, CtValue)>,
    desired: &DesiredServices,
) -> Vec<CtKey> {
    entries
        .into_iter()
        .filter(|(key, _)| key.proto == IPPROTO_UDP)
        // Entries that only make NetworkPolicy stateful translate nothing
        // and follow no service: they stay until they go idle.
        .filter(|(_, ct)| ct.flags & CT_FLAG_NO_NAT == 0)
        .filter(|(_, ct)| {
            let serves = |want: &Frontend| {
                want.backends
                    .iter()
                    .any(|b| b.addr == ct.backend_addr && b.port == ct.backend_port)
            };
            let frontend = ServiceKey {
                addr: ct.frontend_addr,
                port: ct.frontend_port,
                proto: IPPROTO_UDP,
                _pad: 0,
            };
            if desired.get(&frontend).is_some_and(serves) {
                return false;
            }
            // A backend node's DSR entry names another node's NodePort:
            // this node's DSR frontend on that port stands for it.
            let dsr_nodeport = ct.flags & CT_FLAG_DSR != 0
                && desired.iter().any(|(k, want)| {
                    k.port == ct.frontend_port
                        && k.proto == IPPROTO_UDP
                        && want.flags & SERVICE_FLAG_DSR != 0
                        && serves(want)
                });
            !dsr_nodeport
        })
        .map(|(key, _)| key)
        .collect()
}

/// How long a translated connection may be idle (in both directions) before
/// the agent removes its conntrack entries: like kube-proxy's conntrack
/// settings, a day for TCP and SCTP (there is no FIN tracking, so this is
/// the bound for closed connections too) and a few minutes for UDP and ICMP
/// echo (masqueraded pings).
pub const CT_IDLE_TCP_NS: u64 = 24 * 3600 * 1_000_000_000;
/// See [`CT_IDLE_TCP_NS`].
pub const CT_IDLE_UDP_NS: u64 = 180 * 1_000_000_000;

/// The client end and the frontend of the connection an entry belongs to:
/// the forward and the reverse entry of one connection give the same value.
fn connection_of(key: &CtKey, ct: &CtValue) -> (u8, u32, u16, u32, u16) {
    let client = if ct.direction == CT_DIR_FORWARD {
        (key.saddr, key.sport)
    } else if ct.flags & CT_FLAG_HAIRPIN != 0 {
        // Keyed backend -> frontend:client-port; the client is the backend.
        (ct.backend_addr, key.dport)
    } else if ct.flags & CT_FLAG_SNAT != 0 {
        // Keyed backend -> node:snat-port; the client is in nat_addr/port.
        (ct.nat_addr, ct.nat_port)
    } else {
        (key.daddr, key.dport)
    };
    (
        key.proto,
        client.0,
        client.1,
        ct.frontend_addr,
        ct.frontend_port,
    )
}

/// The conntrack entries of connections idle (both directions) for longer
/// than their protocol's timeout at `now_ns` (the datapath's clock,
/// `bpf_ktime_get_ns`). Both entries of a connection go together, so a reply
/// never finds its reverse entry gone while the forward one stays.
pub fn expired_conntrack(entries: &[(CtKey, CtValue)], now_ns: u64) -> Vec<CtKey> {
    let mut last_seen: BTreeMap<(u8, u32, u16, u32, u16), u64> = BTreeMap::new();
    for (key, ct) in entries {
        let seen = last_seen.entry(connection_of(key, ct)).or_default();
        *seen = (*seen).max(ct.last_seen_ns);
    }
    entries
        .iter()
        .filter(|(key, ct)| {
            let idle = now_ns.saturating_sub(last_seen[&connection_of(key, ct)]);
            // Connection-oriented protocols get the long timeout; UDP and
            // the ICMP echo flows of masquerade the short one.
            let timeout = if key.proto == IPPROTO_TCP || key.proto == IPPROTO_SCTP {
                CT_IDLE_TCP_NS
            } else {
                CT_IDLE_UDP_NS
            };
            idle > timeout
        })
        .map(|(key, _)| *key)
        .collect()
}

fn allocate_slot(next_slot: &mut u32, used: &mut BTreeSet<u32>) -> u32 {
    loop {
        let slot = *next_slot;
        *next_slot = next_slot.wrapping_add(1).max(1);
        if slot != 0 && used.insert(slot) {
            return slot;
        }
    }
}

pub mod maglev;

#[cfg(test)]
mod tests;
