//! The node API's messages from the datapath's data: a decoded flow with
//! its pods and policy named ([`flow`]), and the inspection views of the
//! pinned maps ([`datapath_reply`]). Pure.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::UNIX_EPOCH;

use weir_client::agent::proto::{
    self, BackendUse, ConntrackEntry, DatapathReply, DropCounter, Endpoint, datapath_request::View,
};
use weir_datapath::flows::{self, Counters, Flow, PolicyNames};
use weir_datapath::inspect::Snapshot;
use weir_ebpf_common::{
    CT_DIR_FORWARD, CT_DIR_REVERSE, SERVICE_FLAG_EXT_LOCAL, SERVICE_FLAG_NODEPORT,
};

fn endpoint(addr: SocketAddrV4, pod: Option<(String, String)>) -> Endpoint {
    let (namespace, pod) = pod.unwrap_or_default();
    Endpoint {
        ip: addr.ip().to_string(),
        port: u32::from(addr.port()),
        namespace,
        pod,
    }
}

/// A flow as the node API sends it: `pod_of` names the pods behind its
/// addresses, `names` the policy behind its policy id.
pub fn flow(
    f: &Flow,
    node: &str,
    pod_of: impl Fn(Ipv4Addr) -> Option<(String, String)>,
    names: &PolicyNames,
) -> proto::Flow {
    let time_unix_nanos = f
        .time
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    proto::Flow {
        time_unix_nanos,
        node: node.to_owned(),
        source: Some(endpoint(f.source, pod_of(*f.source.ip()))),
        destination: Some(endpoint(f.destination, pod_of(*f.destination.ip()))),
        frontend: f.frontend.map(|a| a.to_string()).unwrap_or_default(),
        protocol: flows::protocol_name(f.proto).into_owned(),
        verdict: match f.verdict {
            flows::Verdict::Forwarded => proto::Verdict::Forwarded as i32,
            flows::Verdict::Dropped => proto::Verdict::Dropped as i32,
            flows::Verdict::Unknown(_) => proto::Verdict::Unspecified as i32,
        },
        drop_reason: f
            .drop_reason_name()
            .map(|r| r.into_owned())
            .unwrap_or_default(),
        direction: f.direction.map(|d| d.name().to_owned()).unwrap_or_default(),
        hook: flows::hook_name(f.hook).into_owned(),
        policy_id: f.policy_id,
        policy: flows::policy_label(f, names),
        ifindex: f.ifindex,
    }
}

/// Names the ends of `flow` that have no pod yet with `pod_of`; whether
/// anything changed.
pub fn fill_pods(
    flow: &mut proto::Flow,
    pod_of: impl Fn(Ipv4Addr) -> Option<(String, String)>,
) -> bool {
    let mut changed = false;
    for end in [flow.source.as_mut(), flow.destination.as_mut()]
        .into_iter()
        .flatten()
    {
        if !end.pod.is_empty() {
            continue;
        }
        if let Some((namespace, pod)) = end.ip.parse().ok().and_then(&pod_of) {
            end.namespace = namespace;
            end.pod = pod;
            changed = true;
        }
    }
    changed
}

fn addr_port(be_addr: u32, be_port: u16) -> String {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(be_addr)), u16::from_be(be_port)).to_string()
}

fn protocol(p: u8) -> String {
    flows::protocol_name(p).into_owned()
}

/// The reply to a Datapath request for `view`.
pub fn datapath_reply(
    view: View,
    node: &str,
    snap: &Snapshot,
    counters: &Counters,
    flows_seen: u64,
) -> DatapathReply {
    let mut reply = DatapathReply {
        node: node.to_owned(),
        ..Default::default()
    };
    match view {
        View::Services => {
            reply.frontends = snap
                .services
                .iter()
                .map(|(key, value, set)| proto::Frontend {
                    address: addr_port(key.addr, key.port),
                    protocol: protocol(key.proto),
                    kind: match (
                        value.flags & SERVICE_FLAG_NODEPORT != 0,
                        value.flags & SERVICE_FLAG_EXT_LOCAL != 0,
                    ) {
                        (false, _) => "cluster",
                        (true, false) if value.flags & weir_ebpf_common::SERVICE_FLAG_DSR != 0 => {
                            "external-dsr"
                        }
                        (true, false) => "external",
                        (true, true) => "external-local",
                    }
                    .to_owned(),
                    affinity_timeout_seconds: value.affinity_timeout_secs,
                    backends: set
                        .iter()
                        .map(|b| match b {
                            Some(b) => addr_port(b.addr, b.port),
                            None => "<missing>".to_owned(),
                        })
                        .collect(),
                })
                .collect();
        }
        View::Backends => {
            let mut uses: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for (key, _, set) in &snap.services {
                for b in set.iter().flatten() {
                    uses.entry((addr_port(b.addr, b.port), protocol(key.proto)))
                        .or_default()
                        .push(addr_port(key.addr, key.port));
                }
            }
            reply.backends = uses
                .into_iter()
                .map(|((address, protocol), frontends)| BackendUse {
                    address,
                    protocol,
                    frontends,
                })
                .collect();
        }
        View::Conntrack => {
            reply.conntrack = snap
                .conntrack
                .iter()
                .map(|(k, v)| ConntrackEntry {
                    protocol: protocol(k.proto),
                    source: addr_port(k.saddr, k.sport),
                    destination: addr_port(k.daddr, k.dport),
                    direction: match v.direction {
                        CT_DIR_FORWARD => "forward",
                        CT_DIR_REVERSE => "reverse",
                        _ => "?",
                    }
                    .to_owned(),
                    frontend: addr_port(v.frontend_addr, v.frontend_port),
                    backend: addr_port(v.backend_addr, v.backend_port),
                })
                .collect();
        }
        View::Stats | View::Unspecified => {
            reply.frontend_count = snap.services.len() as u64;
            reply.conntrack_count = snap.conntrack.len() as u64;
            reply.drops = counters
                .drops
                .iter()
                .map(|(reason, count)| DropCounter {
                    reason: (*reason).to_owned(),
                    count: *count,
                })
                .collect();
            reply.flow_events_lost = counters.flow_events_lost.unwrap_or(0);
            reply.flows_seen = flows_seen;
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_ebpf_common::{Backend, IPPROTO_TCP, ServiceKey, ServiceValue};

    use super::*;

    #[test]
    fn a_flow_names_its_pods_and_frontend() {
        let f = Flow {
            time: UNIX_EPOCH + Duration::from_nanos(1_500),
            source: "10.244.0.5:40000".parse().unwrap(),
            destination: "10.244.1.7:8080".parse().unwrap(),
            frontend: Some("10.96.0.10:80".parse().unwrap()),
            proto: 6,
            verdict: flows::Verdict::Dropped,
            drop_reason: Some(0),
            direction: None,
            hook: weir_ebpf_common::flow::hook::FROM_POD,
            policy_id: 0,
            endpoint_id: 0,
            ifindex: 7,
        };
        let pods = |ip: Ipv4Addr| {
            (ip == Ipv4Addr::new(10, 244, 0, 5)).then(|| ("default".into(), "client".into()))
        };
        let got = flow(&f, "node1", pods, &PolicyNames::default());
        assert_eq!(
            got,
            proto::Flow {
                time_unix_nanos: 1_500,
                node: "node1".into(),
                source: Some(Endpoint {
                    ip: "10.244.0.5".into(),
                    port: 40000,
                    namespace: "default".into(),
                    pod: "client".into(),
                }),
                destination: Some(Endpoint {
                    ip: "10.244.1.7".into(),
                    port: 8080,
                    ..Default::default()
                }),
                frontend: "10.96.0.10:80".into(),
                protocol: "TCP".into(),
                verdict: proto::Verdict::Dropped as i32,
                drop_reason: "no_backend".into(),
                direction: String::new(),
                hook: "from-pod".into(),
                policy_id: 0,
                policy: String::new(),
                ifindex: 7,
            }
        );
    }

    #[test]
    fn late_pod_names_are_filled_in_once() {
        let mut f = proto::Flow {
            source: Some(Endpoint {
                ip: "10.244.0.5".into(),
                ..Default::default()
            }),
            destination: Some(Endpoint {
                ip: "10.244.0.7".into(),
                namespace: "b".into(),
                pod: "web".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = |ip: Ipv4Addr| Some(("a".to_owned(), format!("pod-{}", ip.octets()[3])));
        assert!(fill_pods(&mut f, pods));
        assert_eq!(f.source.as_ref().unwrap().pod, "pod-5");
        assert_eq!(f.destination.as_ref().unwrap().pod, "web", "kept");
        assert!(!fill_pods(&mut f, pods), "nothing left to name");
        assert!(!fill_pods(&mut proto::Flow::default(), pods));
    }

    #[test]
    fn views_carry_only_what_was_asked() {
        let web = ServiceKey::new([10, 96, 0, 10], 80, IPPROTO_TCP);
        let api = ServiceKey::new([10, 96, 0, 11], 443, IPPROTO_TCP);
        let b = Backend::new([10, 244, 0, 7], 8080);
        let v = ServiceValue {
            backend_slot: 1,
            backend_count: 1,
            ..Default::default()
        };
        let snap = Snapshot {
            services: vec![(web, v, vec![Some(b)]), (api, v, vec![Some(b), None])],
            conntrack: Vec::new(),
            drops: Vec::new(),
        };
        let counters = Counters {
            drops: vec![("no_backend", 4), ("map_insert", 0)],
            flow_events_lost: Some(2),
        };
        let services = datapath_reply(View::Services, "n", &snap, &counters, 9);
        assert_eq!(services.frontends.len(), 2);
        assert_eq!(
            services.frontends[1].backends,
            ["10.244.0.7:8080", "<missing>"]
        );
        assert!(services.drops.is_empty() && services.backends.is_empty());

        let backends = datapath_reply(View::Backends, "n", &snap, &counters, 9);
        assert_eq!(
            backends.backends,
            vec![BackendUse {
                address: "10.244.0.7:8080".into(),
                protocol: "TCP".into(),
                frontends: vec!["10.96.0.10:80".into(), "10.96.0.11:443".into()],
            }]
        );

        let stats = datapath_reply(View::Stats, "n", &snap, &counters, 9);
        assert_eq!(
            (
                stats.frontend_count,
                stats.flow_events_lost,
                stats.flows_seen
            ),
            (2, 2, 9)
        );
        assert_eq!(stats.drops[0].reason, "no_backend");
        assert_eq!(stats.drops[0].count, 4);
    }
}
