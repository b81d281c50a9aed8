//! NetworkPolicy objects -> normalized rules, with Kubernetes' defaulting.
//!
//! Anything that cannot be understood (an invalid selector, CIDR, protocol
//! or port) becomes a rule part that matches nothing plus a warning: the
//! policy still isolates the pods it selects, so a bad rule fails closed
//! instead of opening traffic. (The API server validates policies; this is
//! the datapath's own guard.)

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_api::selector::Selector;

use super::model::{ObjectRef, protocol_number};

/// One policy, ready to evaluate.
#[derive(Clone, Debug)]
pub struct ParsedPolicy {
    pub policy: ObjectRef,
    /// `spec.podSelector` (in the policy's namespace); `None` when invalid
    /// (the policy then selects nothing: it cannot say which pods it isolates).
    pub selector: Option<Selector>,
    /// `Some` when the policy isolates ingress (its rules, maybe none).
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when the policy isolates egress.
    pub egress: Option<Vec<Rule>>,
}

/// One ingress or egress rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `None`: `from`/`to` empty or absent, every peer (any address).
    pub peers: Option<Vec<Peer>>,
    /// `None`: `ports` empty or absent, every protocol and port.
    pub ports: Option<Vec<PortSpec>>,
}

/// One `from`/`to` entry.
#[derive(Clone, Debug)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces matching `namespaces`
    /// (`None` = the policy's own namespace).
    Pods {
        namespaces: Option<Selector>,
        pods: Selector,
    },
    /// Addresses in `cidr` but in none of `except`.
    Block { cidr: Ipv4Net, except: Vec<Ipv4Net> },
    /// An invalid peer, or an IPv6 block: matches nothing.
    Nothing,
}

/// One `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Every port of a protocol.
    All { proto: u8 },
    /// `port..=end` (one port when equal).
    Range { proto: u8, lo: u16, hi: u16 },
    /// A named container port, resolved on the destination pod.
    Named { proto: u8, name: String },
    /// Invalid: matches nothing.
    Nothing,
}

/// A problem in a policy that made part of it match nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWarning {
    pub policy: ObjectRef,
    /// Field path, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
    pub field: String,
    pub message: String,
}

/// Parses every policy; problems go to `warnings`.
pub fn parse_policies(
    policies: &[NetworkPolicy],
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<ParsedPolicy> {
    let mut out: Vec<ParsedPolicy> = policies
        .iter()
        .filter_map(|p| parse_policy(p, warnings))
        .collect();
    out.sort_by(|a, b| a.policy.cmp(&b.policy));
    out
}

fn parse_policy(np: &NetworkPolicy, warnings: &mut Vec<PolicyWarning>) -> Option<ParsedPolicy> {
    let policy = ObjectRef::new(np.metadata.namespace.clone()?, np.metadata.name.clone()?);
    let spec = np.spec.clone().unwrap_or_default();
    let mut warn = |field: String, message: String| {
        warnings.push(PolicyWarning {
            policy: policy.clone(),
            field,
            message,
        })
    };
    let selector = match selector(spec.pod_selector.as_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn("spec.podSelector".into(), e);
            None
        }
    };
    // Defaulting as the API server does it: Ingress always; Egress when
    // there are egress rules (`egress: []` alone does not isolate egress).
    let (isolates_ingress, isolates_egress) = match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    };
    let ingress = isolates_ingress.then(|| {
        spec.ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("spec.ingress[{i}]");
                parse_rule(
                    &at,
                    "from",
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    &mut warn,
                )
            })
            .collect()
    });
    let egress = isolates_egress.then(|| {
        spec.egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("spec.egress[{i}]");
                parse_rule(&at, "to", r.to.as_deref(), r.ports.as_deref(), &mut warn)
            })
            .collect()
    });
    Some(ParsedPolicy {
        policy,
        selector,
        ingress,
        egress,
    })
}

fn selector(ls: Option<&LabelSelector>) -> Result<Selector, String> {
    match ls {
        None => Ok(Selector::everything()),
        Some(ls) => Selector::from_label_selector(ls).map_err(|e| e.to_string()),
    }
}

fn parse_rule(
    at: &str,
    peers_field: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    warn: &mut impl FnMut(String, String),
) -> Rule {
    let peers = peers.filter(|p| !p.is_empty()).map(|peers| {
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| parse_peer(&format!("{at}.{peers_field}[{i}]"), p, warn))
            .collect()
    });
    let ports = ports.filter(|p| !p.is_empty()).map(|ports| {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| parse_port(&format!("{at}.ports[{i}]"), p, warn))
            .collect()
    });
    Rule { peers, ports }
}

fn parse_peer(at: &str, peer: &NetworkPolicyPeer, warn: &mut impl FnMut(String, String)) -> Peer {
    if let Some(block) = &peer.ip_block {
        return parse_block(at, block, warn);
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        warn(at.to_string(), "peer has no selector and no ipBlock".into());
        return Peer::Nothing;
    }
    let pods = match selector(peer.pod_selector.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            warn(format!("{at}.podSelector"), e);
            return Peer::Nothing;
        }
    };
    let namespaces = match peer
        .namespace_selector
        .as_ref()
        .map(|ls| selector(Some(ls)))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            warn(format!("{at}.namespaceSelector"), e);
            return Peer::Nothing;
        }
    };
    Peer::Pods { namespaces, pods }
}

fn parse_block(at: &str, block: &IPBlock, warn: &mut impl FnMut(String, String)) -> Peer {
    let cidr = match block.cidr.parse::<Ipv4Net>() {
        Ok(c) => c.trunc(),
        // IPv6 blocks are valid but this datapath is IPv4 only: they can
        // never match an IPv4 packet.
        Err(_) if block.cidr.parse::<ipnet::Ipv6Net>().is_ok() => return Peer::Nothing,
        Err(e) => {
            warn(
                format!("{at}.ipBlock.cidr"),
                format!("{:?}: {e}", block.cidr),
            );
            return Peer::Nothing;
        }
    };
    let mut except = Vec::new();
    for (i, e) in block.except.iter().flatten().enumerate() {
        match e.parse::<Ipv4Net>() {
            Ok(n) if cidr.contains(&n.trunc()) => except.push(n.trunc()),
            Ok(_) => warn(
                format!("{at}.ipBlock.except[{i}]"),
                format!("{e:?} is not inside {cidr}; ignored"),
            ),
            Err(err) => {
                // An except we cannot read could be meant to exclude
                // anything: fail closed.
                warn(format!("{at}.ipBlock.except[{i}]"), format!("{e:?}: {err}"));
                return Peer::Nothing;
            }
        }
    }
    Peer::Block { cidr, except }
}

fn parse_port(
    at: &str,
    port: &NetworkPolicyPort,
    warn: &mut impl FnMut(String, String),
) -> PortSpec {
    let Some(proto) = protocol_number(port.protocol.as_deref()) else {
        warn(
            format!("{at}.protocol"),
            format!("unknown protocol {:?}; use TCP, UDP or SCTP", port.protocol),
        );
        return PortSpec::Nothing;
    };
    match (&port.port, port.end_port) {
        (None, None) => PortSpec::All { proto },
        (Some(IntOrString::String(name)), None) => match name.parse::<u16>() {
            // "80" as a string is how some manifests write a number.
            Ok(n) if n != 0 => PortSpec::Range {
                proto,
                lo: n,
                hi: n,
            },
            _ => PortSpec::Named {
                proto,
                name: name.clone(),
            },
        },
        (Some(IntOrString::Int(n)), end) => {
            let lo = u16::try_from(*n).ok().filter(|n| *n != 0);
            let hi = match end {
                None => lo,
                Some(e) => u16::try_from(e)
                    .ok()
                    .filter(|e| lo.is_some_and(|lo| *e >= lo)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) => PortSpec::Range { proto, lo, hi },
                _ => {
                    warn(
                        format!("{at}.port"),
                        format!("invalid port {n} / endPort {end:?}"),
                    );
                    PortSpec::Nothing
                }
            }
        }
        (_, Some(_)) => {
            warn(
                format!("{at}.endPort"),
                "endPort needs a numeric port".into(),
            );
            PortSpec::Nothing
        }
    }
}
