//! Table tests of the planner; no kernel involved.

use serde_json::json;

use super::*;

fn service(ns: &str, name: &str, cluster_ip: Option<&str>, ports: &[(&str, u16, &str)]) -> Service {
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    let mut spec = json!({ "ports": ports });
    if let Some(ip) = cluster_ip {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("valid Service")
}

/// An endpoint: address and (ready, serving, terminating), each `None` = unset.
type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

fn slice(
    ns: &str,
    svc: &str,
    family: &str,
    ports: &[(&str, u16, &str)],
    eps: &[Ep<'_>],
) -> EndpointSlice {
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            json!({"addresses": [ip],
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                     "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": family,
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

const READY: Ep<'static> = ("", Some(true), Some(true), Some(false));

fn ep<'a>(ip: &'a str, base: Ep<'static>) -> Ep<'a> {
    (ip, base.1, base.2, base.3)
}
const NOT_READY: Ep<'static> = ("", Some(false), Some(false), Some(false));
const TERMINATING: Ep<'static> = ("", Some(false), Some(true), Some(true));
const TERMINATING_NOT_SERVING: Ep<'static> = ("", Some(false), Some(false), Some(true));
const UNSET: Ep<'static> = ("", None, None, None);

fn key(ip: [u8; 4], port: u16, proto: u8) -> ServiceKey {
    ServiceKey::new(ip, port, proto)
}

#[test]
fn desired_services_table() {
    let web = || service("default", "web", Some("10.96.0.10"), &[("http", 80, "TCP")]);
    let web_key = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    struct Case {
        name: &'static str,
        services: Vec<Service>,
        slices: Vec<EndpointSlice>,
        want: Vec<(ServiceKey, Vec<Backend>)>,
    }
    let cases = vec![
        Case {
            name: "ready endpoints become backends on the slice's (target) port",
            services: vec![web()],
            slices: vec![slice(
                "default",
                "web",
                "IPv4",
                &[("http", 8080, "TCP")],
                &[ep("10.244.1.3", READY), ep("10.244.1.2", READY)],
            )],
            want: vec![(
                web_key,
                vec![
                    Backend::new([10, 244, 1, 2], 8080),
                    Backend::new([10, 244, 1, 3], 8080),
                ],
            )],
        },
        Case {
            name: "not-ready endpoints are left out",
            services: vec![web()],
            slices: vec![slice(
                "default",
                "web",
                "IPv4",
                &[("http", 8080, "TCP")],
                &[
                    ep("10.244.1.2", READY),
                    ep("10.244.1.3", NOT_READY),
                    ep("10.244.1.4", TERMINATING),
                ],
            )],
            want: vec![(web_key, vec![Backend::new([10, 244, 1, 2], 8080)])],
        },
        Case {
            name: "serving terminating endpoints are used only when none is ready",
            services: vec![web()],
            slices: vec![slice(
                "default",
                "web",
                "IPv4",
                &[("http", 8080, "TCP")],
                &[
                    ep("10.244.1.3", NOT_READY),
                    ep("10.244.1.4", TERMINATING),
                    ep("10.244.1.5", TERMINATING_NOT_SERVING),
                ],
            )],
            want: vec![(web_key, vec![Backend::new([10, 244, 1, 4], 8080)])],
        },
        Case {
            name: "unset conditions mean ready",
            services: vec![web()],
            slices: vec![slice(
                "default",
                "web",
                "IPv4",
                &[("http", 8080, "TCP")],
                &[ep("10.244.1.2", UNSET)],
            )],
            want: vec![(web_key, vec![Backend::new([10, 244, 1, 2], 8080)])],
        },
        Case {
            name: "a service without endpoints is a frontend with no backends",
            services: vec![web()],
            slices: vec![],
            want: vec![(web_key, vec![])],
        },
        Case {
            name: "headless and IP-less services are skipped",
            services: vec![
                service("default", "headless", Some("None"), &[("http", 80, "TCP")]),
                service("default", "external", None, &[("http", 80, "TCP")]),
            ],
            slices: vec![slice(
                "default",
                "headless",
                "IPv4",
                &[("http", 8080, "TCP")],
                &[ep("10.244.1.2", READY)],
            )],
            want: vec![],
        },
        Case {
            name: "ports are matched by name and protocol; SCTP is skipped",
            services: vec![service(
                "default",
                "dns",
                Some("10.96.0.53"),
                &[
                    ("dns", 53, "UDP"),
                    ("dns-tcp", 53, "TCP"),
                    ("sig", 99, "SCTP"),
                ],
            )],
            slices: vec![slice(
                "default",
                "dns",
                "IPv4",
                &[
                    ("dns-tcp", 5353, "TCP"),
                    ("dns", 5300, "UDP"),
                    ("sig", 99, "SCTP"),
                ],
                &[ep("10.244.1.7", READY)],
            )],
            want: vec![
                (
                    key([10, 96, 0, 53], 53, IPPROTO_TCP),
                    vec![Backend::new([10, 244, 1, 7], 5353)],
                ),
                (
                    key([10, 96, 0, 53], 53, IPPROTO_UDP),
                    vec![Backend::new([10, 244, 1, 7], 5300)],
                ),
            ],
        },
        Case {
            name: "unnamed ports match; slices of other namespaces and IPv6 slices are ignored; duplicates merge",
            services: vec![service(
                "prod",
                "api",
                Some("10.96.3.4"),
                &[("", 443, "TCP")],
            )],
            slices: vec![
                slice(
                    "prod",
                    "api",
                    "IPv4",
                    &[("", 8443, "TCP")],
                    &[ep("10.244.2.2", READY)],
                ),
                slice(
                    "prod",
                    "api",
                    "IPv4",
                    &[("", 8443, "TCP")],
                    &[ep("10.244.2.2", READY)],
                ),
                slice(
                    "default",
                    "api",
                    "IPv4",
                    &[("", 8443, "TCP")],
                    &[ep("10.244.9.9", READY)],
                ),
                slice(
                    "prod",
                    "api",
                    "IPv6",
                    &[("", 8443, "TCP")],
                    &[ep("fd00::1", READY)],
                ),
            ],
            want: vec![(
                key([10, 96, 3, 4], 443, IPPROTO_TCP),
                vec![Backend::new([10, 244, 2, 2], 8443)],
            )],
        },
    ];
    for case in cases {
        let got = desired_services(&case.services, &case.slices, None);
        let want: DesiredServices = case.want.into_iter().map(|(k, v)| (k, v.into())).collect();
        assert_eq!(got, want, "case: {}", case.name);
    }
}

fn b(last: u8, port: u16) -> Backend {
    Backend::new([10, 244, 1, last], port)
}

fn state(services: &[(ServiceKey, u32, &[Backend])]) -> MapState {
    let mut s = MapState::default();
    for (key, slot, backends) in services {
        s.services.insert(
            *key,
            ServiceValue {
                backend_slot: *slot,
                backend_count: backends.len() as u32,
                flags: 0,
                affinity_timeout_secs: 0,
            },
        );
        for (index, backend) in (0u32..).zip(backends.iter()) {
            s.backends
                .insert(BackendKey { slot: *slot, index }, *backend);
        }
    }
    s
}

/// Every service in `s` has its complete backend set.
fn consistent(s: &MapState) -> bool {
    s.services.values().all(|v| s.backends_of(v).is_some())
}

#[test]
fn diff_table() {
    let a = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    let c = key([10, 96, 0, 11], 53, IPPROTO_UDP);
    struct Case {
        name: &'static str,
        current: MapState,
        desired: Vec<(ServiceKey, Vec<Backend>)>,
        /// Expected (puts of backends, service puts, service deletes, backend deletes).
        want_counts: (usize, usize, usize, usize),
    }
    let mut orphaned = state(&[(a, 1, &[b(2, 80)])]);
    orphaned
        .backends
        .insert(BackendKey { slot: 7, index: 0 }, b(9, 80));
    let mut torn = state(&[(a, 1, &[b(2, 80), b(3, 80)])]);
    torn.backends.remove(&BackendKey { slot: 1, index: 1 });
    let cases = vec![
        Case {
            name: "from empty maps: backends first, then services",
            current: MapState::default(),
            desired: vec![(a, vec![b(2, 80), b(3, 80)]), (c, vec![b(4, 53)])],
            want_counts: (3, 2, 0, 0),
        },
        Case {
            name: "unchanged services write nothing",
            current: state(&[(a, 1, &[b(2, 80), b(3, 80)]), (c, 2, &[b(4, 53)])]),
            desired: vec![(a, vec![b(2, 80), b(3, 80)]), (c, vec![b(4, 53)])],
            want_counts: (0, 0, 0, 0),
        },
        Case {
            name: "a changed backend set is swapped through a new slot",
            current: state(&[(a, 1, &[b(2, 80), b(3, 80)]), (c, 2, &[b(4, 53)])]),
            desired: vec![(a, vec![b(3, 80), b(5, 80)]), (c, vec![b(4, 53)])],
            want_counts: (2, 1, 0, 2),
        },
        Case {
            name: "a removed service is deleted before its backends",
            current: state(&[(a, 1, &[b(2, 80)]), (c, 2, &[b(4, 53)])]),
            desired: vec![(a, vec![b(2, 80)])],
            want_counts: (0, 0, 1, 1),
        },
        Case {
            name: "a service losing all endpoints keeps a frontend with no backends",
            current: state(&[(a, 1, &[b(2, 80)])]),
            desired: vec![(a, vec![])],
            want_counts: (0, 1, 0, 1),
        },
        Case {
            name: "backends no service refers to are garbage-collected",
            current: orphaned,
            desired: vec![(a, vec![b(2, 80)])],
            want_counts: (0, 0, 0, 1),
        },
        Case {
            name: "a service whose backend set is incomplete is rewritten",
            current: torn,
            desired: vec![(a, vec![b(2, 80), b(3, 80)])],
            want_counts: (2, 1, 0, 1),
        },
    ];
    for case in cases {
        let desired: DesiredServices = case
            .desired
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let mut next_slot = case.current.next_free_slot();
        let ops = diff(&desired, &case.current, &mut next_slot);

        let count = |f: fn(&MapOp) -> bool| ops.iter().filter(|op| f(op)).count();
        let counts = (
            count(|op| matches!(op, MapOp::PutBackend(..))),
            count(|op| matches!(op, MapOp::PutService(..))),
            count(|op| matches!(op, MapOp::DeleteService(..))),
            count(|op| matches!(op, MapOp::DeleteBackend(..))),
        );
        assert_eq!(
            counts, case.want_counts,
            "case: {}: ops {ops:#?}",
            case.name
        );

        // Phase order: all backend puts, then service changes, then backend deletes.
        let phase = |op: &MapOp| match op {
            MapOp::PutBackend(..) | MapOp::PutSourceRange(..) => 0,
            MapOp::PutService(..) | MapOp::DeleteService(..) => 1,
            MapOp::DeleteBackend(..) | MapOp::DeleteSourceRange(..) => 2,
        };
        assert!(
            ops.windows(2).all(|w| phase(&w[0]) <= phase(&w[1])),
            "case: {}: order",
            case.name
        );

        // No intermediate state shows a service with a partial backend set
        // (apart from a torn set the plan starts from).
        let mut s = case.current.clone();
        for op in &ops {
            s.apply(op);
            if consistent(&case.current) {
                assert!(consistent(&s), "case: {}: torn after {op:?}", case.name);
            }
        }
        // The end state is the desired one, and nothing else is left.
        for (key, want) in &desired {
            let value = s
                .services
                .get(key)
                .unwrap_or_else(|| panic!("case: {}: {key:?} missing", case.name));
            assert_eq!(
                s.backends_of(value).as_ref(),
                Some(&want.backends),
                "case: {}",
                case.name
            );
        }
        assert_eq!(s.services.len(), desired.len(), "case: {}", case.name);
        let referenced: usize = s.services.values().map(|v| v.backend_count as usize).sum();
        assert_eq!(
            s.backends.len(),
            referenced,
            "case: {}: stray backends",
            case.name
        );
        // Planning again from the result is a no-op.
        assert_eq!(
            diff(&desired, &s, &mut next_slot),
            vec![],
            "case: {}: not idempotent",
            case.name
        );
    }
}

#[test]
fn new_slots_never_reuse_slots_in_use_or_zero() {
    let a = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    let c = key([10, 96, 0, 11], 80, IPPROTO_TCP);
    let current = state(&[(a, 1, &[b(2, 80)]), (c, 2, &[b(3, 80)])]);
    let desired: DesiredServices = [(a, vec![b(4, 80)].into()), (c, vec![b(5, 80)].into())]
        .into_iter()
        .collect();
    // A cursor that wrapped around to 0 must skip 0, 1 and 2.
    let mut next_slot = 0;
    let ops = diff(&desired, &current, &mut next_slot);
    let slots: BTreeSet<u32> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::PutService(_, v) => Some(v.backend_slot),
            _ => None,
        })
        .collect();
    assert_eq!(slots, BTreeSet::from([3, 4]));
    assert_eq!(current.next_free_slot(), 3);
}

#[test]
fn stale_udp_conntrack_table() {
    let dns = key([10, 96, 0, 53], 53, IPPROTO_UDP);
    let web = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    // This node's DSR NodePort (a backend node sees other nodes' addresses
    // in its DSR entries).
    let own_np = key([172, 30, 0, 12], 30053, IPPROTO_UDP);
    let other_np = key([172, 30, 0, 11], 30053, IPPROTO_UDP);
    let desired: DesiredServices = [
        (dns, vec![b(7, 5300)].into()),
        (web, vec![b(8, 8080)].into()),
        (
            own_np,
            Frontend {
                backends: vec![b(7, 5300)],
                flags: SERVICE_FLAG_NODEPORT | SERVICE_FLAG_DSR,
                ..Frontend::default()
            },
        ),
    ]
    .into_iter()
    .collect();
    let entry = |n: u8, frontend: ServiceKey, backend: Backend| {
        let key = CtKey {
            saddr: u32::from_ne_bytes([10, 244, 1, 100 + n]),
            daddr: frontend.addr,
            sport: 4000u16.to_be(),
            dport: frontend.port,
            proto: frontend.proto,
            _pad: [0; 3],
        };
        let value = CtValue {
            frontend_addr: frontend.addr,
            frontend_port: frontend.port,
            backend_addr: backend.addr,
            backend_port: backend.port,
            ..CtValue::default()
        };
        (key, value)
    };
    let cases = [
        (
            "UDP entry whose backend is still there",
            entry(1, dns, b(7, 5300)),
            false,
        ),
        (
            "UDP entry whose backend is gone",
            entry(2, dns, b(9, 5300)),
            true,
        ),
        (
            "UDP entry whose backend changed port",
            entry(3, dns, b(7, 5301)),
            true,
        ),
        (
            "UDP entry of a deleted service",
            entry(4, key([10, 96, 0, 54], 53, IPPROTO_UDP), b(7, 5300)),
            true,
        ),
        (
            "TCP entry whose backend is gone is kept",
            entry(5, web, b(9, 8080)),
            false,
        ),
        (
            "UDP entry tracked only for policy is kept",
            {
                // Pod to pod, no service: frontend = backend = the destination.
                let pod = key([10, 244, 1, 9], 53, IPPROTO_UDP);
                let (k, mut v) = entry(6, pod, b(9, 53));
                v.flags = CT_FLAG_NO_NAT;
                (k, v)
            },
            false,
        ),
        (
            "DSR entry naming another node's NodePort, backend still served",
            {
                let (k, mut v) = entry(7, other_np, b(7, 5300));
                v.flags = weir_ebpf_common::CT_FLAG_NODEPORT | CT_FLAG_DSR;
                (k, v)
            },
            false,
        ),
        (
            "DSR entry whose backend is gone",
            {
                let (k, mut v) = entry(8, other_np, b(9, 5300));
                v.flags = weir_ebpf_common::CT_FLAG_NODEPORT | CT_FLAG_DSR;
                (k, v)
            },
            true,
        ),
        (
            "a non-DSR entry of another node's NodePort is stale",
            entry(9, other_np, b(7, 5300)),
            true,
        ),
    ];
    for (name, e, want_stale) in cases {
        let got = stale_udp_conntrack([e], &desired);
        assert_eq!(got == vec![e.0], want_stale, "case: {name}: {got:?}");
    }
}

/// A Service from a JSON `spec` (namespace "default").
fn service_spec(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"metadata": {"namespace": "default", "name": name}, "spec": spec}),
    )
    .expect("valid Service")
}

/// An EndpointSlice of service `svc` whose endpoints are (address, nodeName).
fn slice_on_nodes(svc: &str, port: u16, eps: &[(&str, &str)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-xyz"),
                     "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

#[test]
fn node_port_frontends_table() {
    let node = NodeContext {
        name: "node1".into(),
        ip: Ipv4Addr::new(172, 30, 0, 11),
        forwarding: Forwarding::default(),
    };
    let node_key = key([172, 30, 0, 11], 30080, IPPROTO_TCP);
    let cluster_key = key([10, 96, 0, 20], 80, IPPROTO_TCP);
    let local = Backend::new([10, 244, 1, 5], 8080);
    let remote = Backend::new([10, 244, 2, 5], 8080);
    let spec = |type_: &str, policy: Option<&str>| {
        let mut spec = json!({
            "type": type_, "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        });
        if let Some(policy) = policy {
            spec["externalTrafficPolicy"] = json!(policy);
        }
        spec
    };
    let slices = || {
        vec![slice_on_nodes(
            "web",
            8080,
            &[("10.244.1.5", "node1"), ("10.244.2.5", "node2")],
        )]
    };
    let frontend = |backends: Vec<Backend>, flags: u32| Frontend {
        backends,
        flags,
        affinity_timeout_secs: 0,
        source_ranges: Vec::new(),
    };
    struct Case {
        name: &'static str,
        spec: serde_json::Value,
        node: Option<NodeContext>,
        slices: Vec<EndpointSlice>,
        want: Vec<(ServiceKey, Frontend)>,
    }
    let cases = vec![
        Case {
            name: "NodePort: a frontend on the node address with every backend",
            spec: spec("NodePort", None),
            node: Some(node.clone()),
            slices: slices(),
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (
                    node_key,
                    frontend(vec![local, remote], SERVICE_FLAG_NODEPORT),
                ),
            ],
        },
        Case {
            name: "LoadBalancer services have node ports too",
            spec: spec("LoadBalancer", Some("Cluster")),
            node: Some(node.clone()),
            slices: slices(),
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (
                    node_key,
                    frontend(vec![local, remote], SERVICE_FLAG_NODEPORT),
                ),
            ],
        },
        Case {
            name: "externalTrafficPolicy Local: only this node's endpoints; ClusterIP keeps all",
            spec: spec("NodePort", Some("Local")),
            node: Some(node.clone()),
            slices: slices(),
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (
                    node_key,
                    frontend(vec![local], SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL),
                ),
            ],
        },
        Case {
            name: "externalTrafficPolicy Local without a local endpoint: no backends",
            spec: spec("NodePort", Some("Local")),
            node: Some(node.clone()),
            slices: vec![slice_on_nodes("web", 8080, &[("10.244.2.5", "node2")])],
            want: vec![
                (cluster_key, vec![remote].into()),
                (
                    node_key,
                    frontend(vec![], SERVICE_FLAG_NODEPORT | SERVICE_FLAG_EXT_LOCAL),
                ),
            ],
        },
        Case {
            name: "internalTrafficPolicy Local: the ClusterIP keeps only this node's endpoints",
            spec: {
                let mut s = spec("NodePort", None);
                s["internalTrafficPolicy"] = json!("Local");
                s
            },
            node: Some(node.clone()),
            slices: slices(),
            want: vec![
                (cluster_key, vec![local].into()),
                (
                    node_key,
                    frontend(vec![local, remote], SERVICE_FLAG_NODEPORT),
                ),
            ],
        },
        Case {
            name: "internalTrafficPolicy Local needs a node context to apply",
            spec: {
                let mut s = spec("ClusterIP", None);
                s["internalTrafficPolicy"] = json!("Local");
                s
            },
            node: None,
            slices: slices(),
            want: vec![(cluster_key, vec![local, remote].into())],
        },
        Case {
            name: "ClusterIP services get no node frontend even with a nodePort field",
            spec: spec("ClusterIP", None),
            node: Some(node.clone()),
            slices: slices(),
            want: vec![(cluster_key, vec![local, remote].into())],
        },
        Case {
            name: "without a node context no node frontends are planned",
            spec: spec("NodePort", None),
            node: None,
            slices: slices(),
            want: vec![(cluster_key, vec![local, remote].into())],
        },
        Case {
            name: "a NodePort service whose nodePort is not allocated yet",
            spec: json!({
                "type": "NodePort", "clusterIP": "10.96.0.20",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            }),
            node: Some(node.clone()),
            slices: slices(),
            want: vec![(cluster_key, vec![local, remote].into())],
        },
    ];
    for case in cases {
        let services = [service_spec("web", case.spec)];
        let got = desired_services(&services, &case.slices, case.node.as_ref());
        let want: DesiredServices = case.want.into_iter().collect();
        assert_eq!(got, want, "case: {}", case.name);
    }
}

#[test]
fn diff_rewrites_a_frontend_whose_flags_change() {
    let k = key([172, 30, 0, 11], 30080, IPPROTO_TCP);
    let current = state(&[(k, 1, &[b(2, 80)])]);
    let desired: DesiredServices = [(
        k,
        Frontend {
            backends: vec![b(2, 80)],
            flags: SERVICE_FLAG_NODEPORT,
            affinity_timeout_secs: 0,
            source_ranges: Vec::new(),
        },
    )]
    .into_iter()
    .collect();
    let mut next_slot = current.next_free_slot();
    let ops = diff(&desired, &current, &mut next_slot);
    let mut s = current.clone();
    ops.iter().for_each(|op| s.apply(op));
    assert_eq!(s.services[&k].flags, SERVICE_FLAG_NODEPORT, "{ops:?}");
    assert_eq!(
        diff(&desired, &s, &mut next_slot),
        vec![],
        "then idempotent"
    );
}

#[test]
fn session_affinity_and_selectorless_services_table() {
    let web_key = key([10, 96, 0, 30], 80, IPPROTO_TCP);
    let spec = |extra: serde_json::Value| {
        let mut spec = json!({
            "clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        });
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    };
    let backend = Backend::new([10, 244, 1, 5], 8080);
    let slices = || vec![slice_on_nodes("web", 8080, &[("10.244.1.5", "node1")])];
    let with = |backends: Vec<Backend>, affinity_timeout_secs: u32| Frontend {
        backends,
        flags: 0,
        affinity_timeout_secs,
        source_ranges: Vec::new(),
    };
    struct Case {
        name: &'static str,
        spec: serde_json::Value,
        slices: Vec<EndpointSlice>,
        want: Vec<(ServiceKey, Frontend)>,
    }
    let cases = vec![
        Case {
            name: "ClientIP affinity with a timeout",
            spec: spec(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
            slices: slices(),
            want: vec![(web_key, with(vec![backend], 60))],
        },
        Case {
            name: "ClientIP affinity without a config: Kubernetes' default 10800 s",
            spec: spec(json!({"sessionAffinity": "ClientIP"})),
            slices: slices(),
            want: vec![(web_key, with(vec![backend], DEFAULT_AFFINITY_TIMEOUT_SECS))],
        },
        Case {
            name: "a non-positive timeout falls back to the default",
            spec: spec(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}})),
            slices: slices(),
            want: vec![(web_key, with(vec![backend], DEFAULT_AFFINITY_TIMEOUT_SECS))],
        },
        Case {
            name: "sessionAffinity None: no affinity even with a config",
            spec: spec(json!({"sessionAffinity": "None",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
            slices: slices(),
            want: vec![(web_key, with(vec![backend], 0))],
        },
        Case {
            name: "a service without selector uses its hand-written EndpointSlice (outside the cluster)",
            spec: spec(json!({})),
            slices: vec![slice_on_nodes("web", 5432, &[("192.168.50.7", "")])],
            want: vec![(
                web_key,
                with(vec![Backend::new([192, 168, 50, 7], 5432)], 0),
            )],
        },
        Case {
            name: "a headless service with affinity still gets no frontend",
            spec: json!({"clusterIP": "None", "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            slices: slices(),
            want: vec![],
        },
    ];
    for case in cases {
        let services = [service_spec("web", case.spec)];
        let got = desired_services(&services, &case.slices, None);
        let want: DesiredServices = case.want.into_iter().collect();
        assert_eq!(got, want, "case: {}", case.name);
    }
}

#[test]
fn node_ports_inherit_session_affinity() {
    let node = NodeContext {
        name: "node1".into(),
        ip: Ipv4Addr::new(172, 30, 0, 11),
        forwarding: Forwarding::default(),
    };
    let services = [service_spec(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}),
    )];
    let got = desired_services(&services, &[], Some(&node));
    let timeouts: Vec<u32> = got.values().map(|f| f.affinity_timeout_secs).collect();
    assert_eq!(timeouts, vec![30, 30], "{got:?}");
}

#[test]
fn external_ip_frontends_table() {
    let node = NodeContext {
        name: "node1".into(),
        ip: Ipv4Addr::new(172, 30, 0, 11),
        forwarding: Forwarding::default(),
    };
    let cluster_key = key([10, 96, 0, 20], 80, IPPROTO_TCP);
    let ext_key = key([192, 0, 2, 10], 80, IPPROTO_TCP);
    let lb_key = key([192, 0, 2, 20], 80, IPPROTO_TCP);
    let local = Backend::new([10, 244, 1, 5], 8080);
    let remote = Backend::new([10, 244, 2, 5], 8080);
    let slices = vec![slice_on_nodes(
        "web",
        8080,
        &[("10.244.1.5", "node1"), ("10.244.2.5", "node2")],
    )];
    let external = |backends: Vec<Backend>, flags: u32| Frontend {
        backends,
        flags: SERVICE_FLAG_NODEPORT | flags,
        affinity_timeout_secs: 0,
        source_ranges: Vec::new(),
    };
    let object = |spec: serde_json::Value, lb_ip: Option<&str>| {
        let mut svc = json!({"metadata": {"namespace": "default", "name": "web"}, "spec": spec});
        if let Some(ip) = lb_ip {
            svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        serde_json::from_value::<Service>(svc).expect("valid Service")
    };
    let base = |extra: serde_json::Value| {
        let mut spec = json!({"clusterIP": "10.96.0.20",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    };
    struct Case {
        name: &'static str,
        service: Service,
        node: Option<NodeContext>,
        want: Vec<(ServiceKey, Frontend)>,
    }
    let cases = vec![
        Case {
            name: "externalIPs: a frontend per IP on the service port, every backend",
            service: object(
                base(json!({"externalIPs": ["192.0.2.10", "2001:db8::1"]})),
                None,
            ),
            node: Some(node.clone()),
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (ext_key, external(vec![local, remote], 0)),
            ],
        },
        Case {
            name: "externalIPs with externalTrafficPolicy Local: this node's endpoints",
            service: object(
                base(json!({"externalIPs": ["192.0.2.10"], "externalTrafficPolicy": "Local"})),
                None,
            ),
            node: Some(node.clone()),
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (ext_key, external(vec![local], SERVICE_FLAG_EXT_LOCAL)),
            ],
        },
        Case {
            name: "externalIPs without a node context: Cluster behaviour (pods can use them)",
            service: object(
                base(json!({"externalIPs": ["192.0.2.10"], "externalTrafficPolicy": "Local"})),
                None,
            ),
            node: None,
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (ext_key, external(vec![local, remote], 0)),
            ],
        },
        Case {
            name: "a LoadBalancer's ingress IP is a frontend too",
            service: object(base(json!({"type": "LoadBalancer"})), Some("192.0.2.20")),
            node: None,
            want: vec![
                (cluster_key, vec![local, remote].into()),
                (lb_key, external(vec![local, remote], 0)),
            ],
        },
        Case {
            name: "ingress IPs in the status of a non-LoadBalancer service are ignored",
            service: object(base(json!({"type": "ClusterIP"})), Some("192.0.2.20")),
            node: None,
            want: vec![(cluster_key, vec![local, remote].into())],
        },
    ];
    for case in cases {
        let got = desired_services([&case.service], &slices, case.node.as_ref());
        let want: DesiredServices = case.want.into_iter().collect();
        assert_eq!(got, want, "case: {}", case.name);
    }
}

#[test]
fn load_balancer_ip_announcement_table() {
    let node = |name: &str| NodeContext {
        name: name.into(),
        ip: Ipv4Addr::new(172, 30, 0, 11),
        forwarding: Forwarding::default(),
    };
    let marker = key([172, 30, 0, 200], 0, 0);
    let lb = |type_: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": type_, "clusterIP": "10.96.0.20",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}},
        }))
        .expect("valid Service")
    };
    let on = |nodes: &[(&str, &str)]| vec![slice_on_nodes("web", 8080, nodes)];
    let not_ready = || {
        vec![
            serde_json::from_value::<EndpointSlice>(json!({
                "metadata": {"namespace": "default", "name": "web-x",
                             "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "node1",
                               "conditions": {"ready": false}}],
            }))
            .expect("valid EndpointSlice"),
        ]
    };
    let cases = vec![
        (
            "the first node (by name) with a ready endpoint announces",
            lb("LoadBalancer"),
            on(&[("10.244.2.5", "node2"), ("10.244.1.5", "node1")]),
            "node1",
            true,
        ),
        (
            "the other nodes do not",
            lb("LoadBalancer"),
            on(&[("10.244.2.5", "node2"), ("10.244.1.5", "node1")]),
            "node2",
            false,
        ),
        (
            "a node without endpoints does not announce",
            lb("LoadBalancer"),
            on(&[("10.244.2.5", "node2")]),
            "node1",
            false,
        ),
        (
            "nobody announces without ready endpoints",
            lb("LoadBalancer"),
            not_ready(),
            "node1",
            false,
        ),
        (
            "only LoadBalancer services are announced",
            lb("NodePort"),
            on(&[("10.244.1.5", "node1")]),
            "node1",
            false,
        ),
    ];
    for (name, service, slices, node_name, want) in cases {
        let got = desired_services([&service], &slices, Some(&node(node_name)));
        let announced = got
            .get(&marker)
            .is_some_and(|f| f.flags == SERVICE_FLAG_ANNOUNCE && f.backends.is_empty());
        assert_eq!(announced, want, "case: {name}: {got:?}");
    }
}

#[test]
fn load_balancer_source_ranges_table() {
    let lb_frontend = key([172, 30, 0, 200], 80, IPPROTO_TCP);
    let ext_frontend = key([192, 0, 2, 10], 80, IPPROTO_TCP);
    let lb = |ranges: serde_json::Value| -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20",
                     "externalIPs": ["192.0.2.10"],
                     "loadBalancerSourceRanges": ranges,
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}},
        }))
        .expect("valid Service")
    };
    let net = |s: &str| s.parse::<Ipv4Net>().expect("net");
    let cases = vec![
        (
            "ranges restrict the LoadBalancer IP only, sorted and truncated",
            lb(json!(["172.30.0.100/32", "10.1.2.3/8"])),
            Some(vec![net("10.0.0.0/8"), net("172.30.0.100/32")]),
        ),
        ("no ranges: no restriction", lb(json!([])), None),
        (
            "only unparsable ranges: nobody is allowed (fail closed)",
            lb(json!(["not-a-cidr", "2001:db8::/32"])),
            Some(vec![]),
        ),
    ];
    for (name, service, want) in cases {
        let got = desired_services([&service], &[], None);
        let lb = &got[&lb_frontend];
        assert_eq!(
            lb.flags & SERVICE_FLAG_SOURCE_RANGES != 0,
            want.is_some(),
            "case: {name}: flag"
        );
        assert_eq!(lb.source_ranges, want.unwrap_or_default(), "case: {name}");
        assert_eq!(
            got[&ext_frontend].flags & SERVICE_FLAG_SOURCE_RANGES,
            0,
            "case: {name}: externalIPs are not restricted"
        );
    }
}

#[test]
fn diff_writes_source_ranges_before_the_flag_and_removes_them_after() {
    let k = key([172, 30, 0, 200], 80, IPPROTO_TCP);
    let restricted = |ranges: &[&str]| -> DesiredServices {
        [(
            k,
            Frontend {
                backends: vec![b(2, 80)],
                flags: SERVICE_FLAG_NODEPORT | SERVICE_FLAG_SOURCE_RANGES,
                affinity_timeout_secs: 0,
                source_ranges: ranges.iter().map(|r| r.parse().expect("net")).collect(),
            },
        )]
        .into_iter()
        .collect()
    };
    let mut state = MapState::default();
    let mut next_slot = state.next_free_slot();
    let ops = diff(
        &restricted(&["10.0.0.0/8", "172.30.0.100/32"]),
        &state,
        &mut next_slot,
    );
    let first_flip = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService(..)))
        .expect("service put");
    let ranges_before: Vec<_> = ops[..first_flip]
        .iter()
        .filter_map(|op| match op {
            MapOp::PutSourceRange(len, key) => Some((*len, key.src)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ranges_before,
        vec![
            (64 + 8, u32::from(Ipv4Addr::new(10, 0, 0, 0)).to_be()),
            (64 + 32, u32::from(Ipv4Addr::new(172, 30, 0, 100)).to_be()),
        ],
        "{ops:?}"
    );
    ops.iter().for_each(|op| state.apply(op));

    // Changing the ranges only swaps LPM entries (the service value stays).
    let ops = diff(&restricted(&["10.0.0.0/8"]), &state, &mut next_slot);
    assert!(
        matches!(ops.as_slice(), [MapOp::DeleteSourceRange(96, _)]),
        "{ops:?}"
    );
    ops.iter().for_each(|op| state.apply(op));

    // Lifting the restriction flips the service first, then deletes ranges.
    let open: DesiredServices = [(
        k,
        Frontend {
            backends: vec![b(2, 80)],
            flags: SERVICE_FLAG_NODEPORT,
            ..Frontend::default()
        },
    )]
    .into_iter()
    .collect();
    let ops = diff(&open, &state, &mut next_slot);
    let flip = ops
        .iter()
        .position(|op| matches!(op, MapOp::PutService(..)))
        .expect("flip");
    let delete = ops
        .iter()
        .position(|op| matches!(op, MapOp::DeleteSourceRange(..)))
        .expect("delete");
    assert!(flip < delete, "{ops:?}");
    ops.iter().for_each(|op| state.apply(op));
    assert!(state.source_ranges.is_empty());
    assert_eq!(diff(&open, &state, &mut next_slot), vec![], "idempotent");
}

#[test]
fn one_change_among_ten_thousand_services_touches_only_its_entries() {
    let svc_key = |i: u32| key([10, 96, (i >> 8) as u8, (i & 0xff) as u8], 80, IPPROTO_TCP);
    let backends = |i: u32| -> Vec<Backend> {
        (0..4u8)
            .map(|n| Backend::new([10, 244, (i % 200) as u8, n + 1], 8080))
            .collect()
    };
    let mut desired: DesiredServices = (0..10_000)
        .map(|i| (svc_key(i), backends(i).into()))
        .collect();
    let mut state = MapState::default();
    let mut next_slot = state.next_free_slot();
    diff(&desired, &state, &mut next_slot)
        .iter()
        .for_each(|op| state.apply(op));
    assert_eq!(state.services.len(), 10_000);

    // Change one backend set: 4 puts, 1 flip, 4 deletes, nothing else.
    let changed = svc_key(4242);
    let mut new_set = backends(4242);
    new_set[0] = Backend::new([10, 244, 250, 1], 8080);
    new_set.sort();
    desired.insert(changed, new_set.clone().into());
    let ops = diff(&desired, &state, &mut next_slot);
    assert_eq!(ops.len(), 9, "{ops:?}");
    let old_slot = state.services[&changed].backend_slot;
    let new_slot = ops
        .iter()
        .find_map(|op| match op {
            MapOp::PutService(_, v) => Some(v.backend_slot),
            _ => None,
        })
        .expect("the service is flipped");
    assert_ne!(new_slot, old_slot, "a new slot, not the one in use");
    assert!(ops.iter().all(|op| match op {
        MapOp::PutService(k, _) => *k == changed,
        MapOp::DeleteBackend(k) => k.slot == old_slot,
        MapOp::PutBackend(k, v) => k.slot == new_slot && new_set[k.index as usize] == *v,
        _ => false,
    }));
    ops.iter().for_each(|op| state.apply(op));

    // Add one and remove one: one service's entries each.
    desired.remove(&svc_key(7));
    desired.insert(svc_key(20_000), backends(1).into());
    let ops = diff(&desired, &state, &mut next_slot);
    assert_eq!(ops.len(), 4 + 1 + 1 + 4, "{ops:?}");
}

#[test]
fn expired_conntrack_table() {
    const S: u64 = 1_000_000_000;
    let ip = |last: u8| u32::from_ne_bytes([10, 244, 1, last]);
    let vip = u32::from_ne_bytes([10, 96, 0, 10]);
    let node = u32::from_ne_bytes([172, 30, 0, 11]);
    let ext = u32::from_ne_bytes([172, 30, 0, 100]);
    let ct_key = |saddr, sport: u16, daddr, dport: u16, proto| CtKey {
        saddr,
        daddr,
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    };
    let value = |direction,
                 flags,
                 backend: (u32, u16),
                 frontend: (u32, u16),
                 nat: (u32, u16),
                 seen_s: u64| CtValue {
        frontend_addr: frontend.0,
        backend_addr: backend.0,
        frontend_port: frontend.1.to_be(),
        backend_port: backend.1.to_be(),
        direction,
        flags,
        nat_port: nat.1.to_be(),
        src_identity: 0,
        nat_addr: nat.0,
        created_ns: 0,
        last_seen_ns: seen_s * S,
    };
    use weir_ebpf_common::{
        CT_DIR_FORWARD as F, CT_DIR_REVERSE as R, CT_FLAG_HAIRPIN, CT_FLAG_NODEPORT, CT_FLAG_SNAT,
    };
    let now = 100_000 * S;
    // A pair: (forward key, reverse key) with their values' last-seen seconds.
    struct Case {
        name: &'static str,
        entries: Vec<(CtKey, CtValue)>,
        want_expired: usize,
    }
    let tcp_pair = |fwd_seen, rev_seen| {
        vec![
            (
                ct_key(ip(2), 40000, vip, 80, IPPROTO_TCP),
                value(F, 0, (ip(5), 8080), (vip, 80), (0, 0), fwd_seen),
            ),
            (
                ct_key(ip(5), 8080, ip(2), 40000, IPPROTO_TCP),
                value(R, 0, (ip(5), 8080), (vip, 80), (0, 0), rev_seen),
            ),
        ]
    };
    let udp_pair = |fwd_seen, rev_seen| {
        vec![
            (
                ct_key(ip(2), 5353, vip, 53, IPPROTO_UDP),
                value(F, 0, (ip(7), 5300), (vip, 53), (0, 0), fwd_seen),
            ),
            (
                ct_key(ip(7), 5300, ip(2), 5353, IPPROTO_UDP),
                value(R, 0, (ip(7), 5300), (vip, 53), (0, 0), rev_seen),
            ),
        ]
    };
    let cases = vec![
        Case {
            name: "an active TCP connection stays",
            entries: tcp_pair(99_990, 99_990),
            want_expired: 0,
        },
        Case {
            name: "a TCP connection idle for over a day goes, both entries",
            entries: tcp_pair(10_000, 10_000),
            want_expired: 2,
        },
        Case {
            name: "one busy direction keeps both entries",
            entries: tcp_pair(10_000, 99_999),
            want_expired: 0,
        },
        Case {
            name: "UDP idle for 4 minutes goes",
            entries: udp_pair(99_760, 99_700),
            want_expired: 2,
        },
        Case {
            name: "UDP idle for a minute stays",
            entries: udp_pair(99_940, 99_000),
            want_expired: 0,
        },
        Case {
            name: "a masqueraded ping idle for 4 minutes goes (UDP's timeout, not TCP's)",
            entries: vec![
                (
                    ct_key(ip(2), 7, ext, 0, 1),
                    value(F, 0, (ext, 0), (ext, 0), (node, 61000), 99_760),
                ),
                (
                    ct_key(ext, 0, node, 61000, 1),
                    value(R, 0, (ext, 0), (ext, 0), (ip(2), 7), 99_700),
                ),
            ],
            want_expired: 2,
        },
        Case {
            name: "a hairpin pair is recognised as one connection",
            entries: vec![
                (
                    ct_key(ip(2), 40000, vip, 80, IPPROTO_UDP),
                    value(F, CT_FLAG_HAIRPIN, (ip(2), 8080), (vip, 80), (0, 0), 10),
                ),
                (
                    ct_key(ip(2), 8080, vip, 40000, IPPROTO_UDP),
                    value(R, CT_FLAG_HAIRPIN, (ip(2), 8080), (vip, 80), (0, 0), 99_999),
                ),
            ],
            want_expired: 0,
        },
        Case {
            name: "a SNAT NodePort pair is recognised as one connection",
            entries: vec![
                (
                    ct_key(ext, 40000, node, 30080, IPPROTO_UDP),
                    value(
                        F,
                        CT_FLAG_NODEPORT | CT_FLAG_SNAT,
                        (ip(5), 8080),
                        (node, 30080),
                        (node, 61000),
                        10,
                    ),
                ),
                (
                    ct_key(ip(5), 8080, node, 61000, IPPROTO_UDP),
                    value(
                        R,
                        CT_FLAG_NODEPORT | CT_FLAG_SNAT,
                        (ip(5), 8080),
                        (node, 30080),
                        (ext, 40000),
                        99_999,
                    ),
                ),
            ],
            want_expired: 0,
        },
    ];
    for case in cases {
        let got = expired_conntrack(&case.entries, now);
        assert_eq!(got.len(), case.want_expired, "case: {}: {got:?}", case.name);
    }
}

/// Services with their flags and complete backend lists: what a packet sees,
/// whatever the slot numbers.
fn seen(s: &MapState) -> BTreeMap<ServiceKey, (u32, u32, Option<Vec<Backend>>)> {
    s.services
        .iter()
        .map(|(k, v)| (*k, (v.flags, v.affinity_timeout_secs, s.backends_of(v))))
        .collect()
}

#[test]
fn diff_frontends_table() {
    let a = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    let c = key([10, 96, 0, 11], 53, IPPROTO_UDP);
    let lb = key([192, 168, 1, 240], 80, IPPROTO_TCP);
    let restricted = |backends: Vec<Backend>, nets: &[&str]| Frontend {
        backends,
        flags: SERVICE_FLAG_NODEPORT | SERVICE_FLAG_SOURCE_RANGES,
        affinity_timeout_secs: 0,
        source_ranges: nets.iter().map(|n| n.parse().expect("net")).collect(),
    };
    let base: DesiredServices = [
        (a, vec![b(2, 80), b(3, 80)].into()),
        (c, vec![b(4, 53)].into()),
        (lb, restricted(vec![b(5, 80)], &["10.0.0.0/8"])),
    ]
    .into();
    struct Case {
        name: &'static str,
        desired: DesiredServices,
        keys: Vec<ServiceKey>,
        /// Expected (backend puts, range puts, service puts, service deletes,
        /// backend deletes, range deletes).
        want: (usize, usize, usize, usize, usize, usize),
    }
    let with = |k: ServiceKey, f: Option<Frontend>| {
        let mut d = base.clone();
        match f {
            Some(f) => d.insert(k, f),
            None => d.remove(&k),
        };
        d
    };
    let new_key = key([10, 96, 0, 12], 443, IPPROTO_TCP);
    let cases = vec![
        Case {
            name: "unchanged frontend: nothing",
            desired: base.clone(),
            keys: vec![a, c, lb],
            want: (0, 0, 0, 0, 0, 0),
        },
        Case {
            name: "new frontend: its backends, then its service",
            desired: with(new_key, Some(vec![b(7, 443)].into())),
            keys: vec![new_key],
            want: (1, 0, 1, 0, 0, 0),
        },
        Case {
            name: "changed backends: new set, flip, old set deleted",
            desired: with(a, Some(vec![b(2, 80), b(3, 80), b(9, 80)].into())),
            keys: vec![a],
            want: (3, 0, 1, 0, 2, 0),
        },
        Case {
            name: "changed flags only: rewritten under a new slot",
            desired: with(
                c,
                Some(Frontend {
                    backends: vec![b(4, 53)],
                    flags: 0,
                    affinity_timeout_secs: 60,
                    source_ranges: Vec::new(),
                }),
            ),
            keys: vec![c],
            want: (1, 0, 1, 0, 1, 0),
        },
        Case {
            name: "deleted frontend: service, then its backends and ranges",
            desired: with(lb, None),
            keys: vec![lb],
            want: (0, 0, 0, 1, 1, 1),
        },
        Case {
            name: "deleted frontend never written: nothing",
            desired: base.clone(),
            keys: vec![new_key],
            want: (0, 0, 0, 0, 0, 0),
        },
        Case {
            name: "source range swapped: put new before, delete old after",
            desired: with(lb, Some(restricted(vec![b(5, 80)], &["192.168.0.0/16"]))),
            keys: vec![lb],
            want: (0, 1, 0, 0, 0, 1),
        },
        Case {
            name: "keys outside the set are left alone even if they differ",
            desired: with(a, Some(vec![b(9, 80)].into())),
            keys: vec![c],
            want: (0, 0, 0, 0, 0, 0),
        },
    ];
    for case in cases {
        let mut current = MapState::default();
        let mut next_slot = current.next_free_slot();
        for op in diff(&base, &current, &mut next_slot) {
            current.apply(&op);
        }
        let keys: BTreeSet<ServiceKey> = case.keys.iter().copied().collect();
        let ops = diff_frontends(&case.desired, &keys, &current, &mut next_slot);
        let count = |f: fn(&MapOp) -> bool| ops.iter().filter(|op| f(op)).count();
        let got = (
            count(|op| matches!(op, MapOp::PutBackend(..))),
            count(|op| matches!(op, MapOp::PutSourceRange(..))),
            count(|op| matches!(op, MapOp::PutService(..))),
            count(|op| matches!(op, MapOp::DeleteService(..))),
            count(|op| matches!(op, MapOp::DeleteBackend(..))),
            count(|op| matches!(op, MapOp::DeleteSourceRange(..))),
        );
        assert_eq!(got, case.want, "case: {}: {ops:?}", case.name);
        // Phases: every put of a backend or range comes before any service
        // write, every delete of a backend or range after all of them.
        let phase = |op: &MapOp| match op {
            MapOp::PutBackend(..) | MapOp::PutSourceRange(..) => 0,
            MapOp::PutService(..) | MapOp::DeleteService(..) => 1,
            MapOp::DeleteBackend(..) | MapOp::DeleteSourceRange(..) => 2,
        };
        assert!(
            ops.windows(2).all(|w| phase(&w[0]) <= phase(&w[1])),
            "case: {}: phases out of order: {ops:?}",
            case.name
        );
        // Only the listed frontends are written.
        assert!(
            ops.iter().all(|op| match op {
                MapOp::PutService(k, _) | MapOp::DeleteService(k) => keys.contains(k),
                _ => true,
            }),
            "case: {}",
            case.name
        );
        // Applied, the listed frontends look exactly as a full plan makes
        // them, the others are untouched, and no backend entry is orphaned.
        let before = current.clone();
        for op in &ops {
            current.apply(op);
            assert!(
                consistent(&current),
                "case: {}: torn after {op:?}",
                case.name
            );
        }
        let mut full = before.clone();
        let mut full_slot = next_slot;
        for op in diff(&case.desired, &before, &mut full_slot) {
            full.apply(&op);
        }
        let (got_seen, full_seen, before_seen) = (seen(&current), seen(&full), seen(&before));
        for k in [a, c, lb, new_key] {
            let want = if keys.contains(&k) {
                full_seen.get(&k)
            } else {
                before_seen.get(&k)
            };
            assert_eq!(
                got_seen.get(&k),
                want,
                "case: {}: frontend {k:?}",
                case.name
            );
        }
        let referenced: BTreeSet<u32> = current.services.values().map(|v| v.backend_slot).collect();
        assert!(
            current
                .backends
                .keys()
                .all(|k| referenced.contains(&k.slot)),
            "case: {}: orphaned backends {:?}",
            case.name,
            current.backends
        );
        let want_ranges: BTreeSet<_> = if keys.contains(&lb) {
            full.source_ranges.clone()
        } else {
            before.source_ranges.clone()
        };
        assert_eq!(current.source_ranges, want_ranges, "case: {}", case.name);
        assert!(
            diff_frontends(&case.desired, &keys, &current, &mut next_slot).is_empty(),
            "case: {}: not idempotent",
            case.name
        );
    }
}

#[test]
fn diff_frontends_skips_slots_in_use() {
    let a = key([10, 96, 0, 10], 80, IPPROTO_TCP);
    let n = key([10, 96, 0, 12], 80, IPPROTO_TCP);
    let current = state(&[(a, 5, &[b(2, 80)])]);
    let desired: DesiredServices = [(a, vec![b(2, 80)].into()), (n, vec![b(3, 80)].into())].into();
    for start in [0, 5, u32::MAX] {
        let mut next_slot = start;
        let ops = diff_frontends(&desired, &[n].into(), &current, &mut next_slot);
        let slot = match ops.last() {
            Some(MapOp::PutService(_, v)) => v.backend_slot,
            other => panic!("start {start}: {other:?}"),
        };
        assert!(slot != 0 && slot != 5, "start {start}: slot {slot}");
    }
}

#[test]
fn one_service_is_planned_alone_as_in_the_whole() {
    let svc = |ns: &str, name: &str, ip: &str| {
        service(
            ns,
            name,
            Some(ip),
            &[("http", 80, "TCP"), ("dns", 53, "UDP")],
        )
    };
    let services = [
        svc("a", "web", "10.96.0.10"),
        svc("b", "db", "10.96.0.11"),
        // Claims the same address as a/web: the later service wins.
        svc("c", "clash", "10.96.0.10"),
    ];
    let slices = [
        slice(
            "a",
            "web",
            "IPv4",
            &[("http", 8080, "TCP")],
            &[ep("10.244.1.2", READY)],
        ),
        slice(
            "b",
            "db",
            "IPv4",
            &[("dns", 5353, "UDP")],
            &[ep("10.244.1.3", READY)],
        ),
        slice(
            "c",
            "clash",
            "IPv4",
            &[("http", 9090, "TCP")],
            &[ep("10.244.1.4", READY)],
        ),
        slice(
            "a",
            "web",
            "IPv6",
            &[("http", 8080, "TCP")],
            &[ep("fd00::1", READY)],
        ),
    ];
    let mut merged = DesiredServices::new();
    for s in &services {
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let own: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|sl| slice_service(sl) == Some((ns, name)))
            .collect();
        merged.extend(service_frontends(s, &own, None));
    }
    assert_eq!(merged, desired_services(&services, &slices, None));
    assert_eq!(
        merged[&key([10, 96, 0, 10], 80, IPPROTO_TCP)].backends,
        vec![Backend::new([10, 244, 1, 4], 9090)]
    );
    assert_eq!(slice_service(&slices[3]), None, "IPv6 slices are not used");
}

/// The forwarding mode: the annotation overrides `--lb-mode`; DSR never
/// where routing is not native; the problems are for warnings.
#[test]
fn forwarding_mode_table() {
    let with = |annotation: Option<&str>| {
        let mut svc = service_spec("web", json!({"type": "NodePort"}));
        if let Some(v) = annotation {
            svc.metadata.annotations =
                Some([(FORWARDING_MODE_ANNOTATION.to_owned(), v.to_owned())].into());
        }
        svc
    };
    let fwd = |default: LbMode, dsr_possible: bool| Forwarding {
        default,
        dsr_possible,
    };
    use LbMode::{Dsr, Snat};
    let cases = [
        (
            "no annotation, default snat",
            None,
            fwd(Snat, true),
            Snat,
            None,
        ),
        (
            "no annotation, default dsr",
            None,
            fwd(Dsr, true),
            Dsr,
            None,
        ),
        (
            "annotation dsr over default snat",
            Some("dsr"),
            fwd(Snat, true),
            Dsr,
            None,
        ),
        (
            "annotation snat over default dsr",
            Some("snat"),
            fwd(Dsr, true),
            Snat,
            None,
        ),
        (
            "annotation dsr on VXLAN: SNAT, with a warning",
            Some("dsr"),
            fwd(Snat, false),
            Snat,
            Some(ForwardingProblem::DsrNeedsNativeRouting),
        ),
        (
            "annotation snat on VXLAN",
            Some("snat"),
            fwd(Snat, false),
            Snat,
            None,
        ),
        (
            "an unknown value: the default, with a warning",
            Some("ipip"),
            fwd(Dsr, true),
            Dsr,
            Some(ForwardingProblem::Unknown("ipip".into())),
        ),
    ];
    for (name, annotation, forwarding, want, problem) in cases {
        assert_eq!(
            forwarding_mode(&with(annotation), forwarding),
            (want, problem),
            "{name}"
        );
    }
    let text = ForwardingProblem::DsrNeedsNativeRouting.to_string();
    assert!(text.contains("--routing-mode native"), "{text}");
}

/// Which frontends get SERVICE_FLAG_DSR: NodePorts, external and
/// LoadBalancer IPs with cluster traffic policy; never ClusterIPs or Local.
#[test]
fn dsr_flag_table() {
    let node = |default: LbMode, dsr_possible: bool| NodeContext {
        name: "node1".into(),
        ip: Ipv4Addr::new(172, 30, 0, 11),
        forwarding: Forwarding {
            default,
            dsr_possible,
        },
    };
    let svc = |annotation: Option<&str>, policy: &str| {
        let mut s = service_spec(
            "web",
            json!({
                "type": "LoadBalancer", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                "externalIPs": ["192.0.2.10"], "externalTrafficPolicy": policy,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
            }),
        );
        if let Some(v) = annotation {
            s.metadata.annotations =
                Some([(FORWARDING_MODE_ANNOTATION.to_owned(), v.to_owned())].into());
        }
        s
    };
    let slices = [slice_on_nodes("web", 8080, &[("10.244.2.5", "node2")])];
    let slices: Vec<&EndpointSlice> = slices.iter().collect();
    let node_key = key([172, 30, 0, 11], 30080, IPPROTO_TCP);
    let ext_key = key([192, 0, 2, 10], 80, IPPROTO_TCP);
    let cluster_key = key([10, 96, 0, 20], 80, IPPROTO_TCP);
    let cases = [
        (
            "annotated dsr",
            svc(Some("dsr"), "Cluster"),
            node(LbMode::Snat, true),
            true,
        ),
        (
            "--lb-mode dsr",
            svc(None, "Cluster"),
            node(LbMode::Dsr, true),
            true,
        ),
        (
            "annotated snat over --lb-mode dsr",
            svc(Some("snat"), "Cluster"),
            node(LbMode::Dsr, true),
            false,
        ),
        (
            "annotated dsr on VXLAN",
            svc(Some("dsr"), "Cluster"),
            node(LbMode::Snat, false),
            false,
        ),
        (
            "default snat",
            svc(None, "Cluster"),
            node(LbMode::Snat, true),
            false,
        ),
    ];
    for (name, service, node, dsr) in cases {
        let got = service_frontends(&service, &slices, Some(&node));
        let flag = |k: &ServiceKey| got.get(k).expect("frontend").flags & SERVICE_FLAG_DSR != 0;
        assert_eq!(flag(&node_key), dsr, "{name}: NodePort");
        assert_eq!(flag(&ext_key), dsr, "{name}: external IP");
        assert!(!flag(&cluster_key), "{name}: never the ClusterIP");
    }
    // externalTrafficPolicy Local: local backends only, no DSR.
    let got = service_frontends(
        &svc(Some("dsr"), "Local"),
        &slices,
        Some(&node(LbMode::Dsr, true)),
    );
    for (k, f) in &got {
        assert_eq!(f.flags & SERVICE_FLAG_DSR, 0, "{k:?}");
    }
}
