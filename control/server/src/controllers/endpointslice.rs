//! Service -> EndpointSlices. For every Service with a selector, one slice per
//! distinct set of resolved ports (usually exactly one), holding every
//! matching pod that has an IPv4 address, with ready/serving/terminating
//! conditions. Slices are named `<service>-<hash of the port set>` so the
//! controller finds its own slices again without remembering anything.
//! Services without a selector are left alone: their slices belong to users.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_api::selector::Selector;

use super::util::{controller_ref, fnv32a, pod_ready, safe_encode, terminating};

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label marking slices this controller manages (and may delete).
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice before another slice is started (Kubernetes' default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Resolved ports of one endpoint group: (name, protocol, port) per Service port.
type PortKey = Vec<(String, String, i32)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(EndpointSlice),
    Update(EndpointSlice),
    Delete { namespace: String, name: String },
}

/// Whether this controller manages `slice` for the Service named `service`.
pub fn managed_for(slice: &EndpointSlice, service: &str) -> bool {
    owning_service(slice) == Some(service)
}

/// The Service a managed slice belongs to, if it is one of ours.
pub fn owning_service(slice: &EndpointSlice) -> Option<&str> {
    let l = slice.metadata.labels.as_ref()?;
    (l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .then(|| l.get(SERVICE_NAME_LABEL).map(String::as_str))?
}

/// Resolves a Service port's targetPort for one pod: a number is used as is
/// (0 or absent means "same as port"); a name is looked up among the pod's
/// containerPorts with the same protocol. None when the name is not found.
pub fn resolve_target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match sp.target_port.as_ref() {
        None | Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find_map(|cp| {
                    (cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == proto)
                        .then_some(cp.container_port)
                })
        }
    }
}

/// One pod's endpoint. A pod whose subdomain is this Service's name (a
/// StatefulSet pod under its headless Service) publishes its hostname, which
/// gives it a stable DNS name, as in Kubernetes.
fn endpoint_for(pod: &Pod, ip: &str, publish_not_ready: bool, svc_name: &str) -> Endpoint {
    let ready = pod_ready(pod);
    let gone = terminating(&pod.metadata);
    let spec = pod.spec.as_ref();
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(svc_name))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Endpoint {
        addresses: vec![ip.to_string()],
        hostname,
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (ready && !gone)),
            serving: Some(publish_not_ready || ready),
            terminating: Some(gone),
        }),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The slices the Service should have, by name.
pub fn desired_slices(svc: &Service, pods: &[Pod]) -> BTreeMap<String, EndpointSlice> {
    let mut out = BTreeMap::new();
    let Some(spec) = svc.spec.as_ref() else {
        return out;
    };
    let Some(sel_map) = spec.selector.as_ref() else {
        return out;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    let selector = Selector::from_map(sel_map);
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_ports = spec.ports.clone().unwrap_or_default();

    // Group endpoints by their resolved port list (a named targetPort can map
    // to different numbers in different pods).
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        if !selector.matches(&pod.metadata.labels.clone().unwrap_or_default()) {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        else {
            continue;
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                resolve_target_port(sp, pod).map(|port| EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    port: Some(port),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let key = ports
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_default(),
                    p.port.unwrap_or(0),
                )
            })
            .collect();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint_for(pod, ip, publish_not_ready, &svc_name));
    }
    if groups.is_empty() {
        // A placeholder slice says "this Service has no endpoints" explicitly.
        groups.insert(Vec::new(), (Vec::new(), Vec::new()));
    }
    for (key, (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| {
            let n = |e: &Endpoint| e.target_ref.as_ref().and_then(|r| r.name.clone());
            n(a).cmp(&n(b))
        });
        let key_text = key
            .iter()
            .map(|(n, p, port)| format!("{n}/{p}/{port}"))
            .collect::<Vec<_>>()
            .join(",");
        // Kubernetes' default maxEndpointsPerSlice: big Services get several
        // slices, so one pod change rewrites a small object, not a huge one.
        let chunks: Vec<Vec<Endpoint>> = if endpoints.is_empty() {
            vec![Vec::new()]
        } else {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(<[Endpoint]>::to_vec)
                .collect()
        };
        for (i, endpoints) in chunks.into_iter().enumerate() {
            let seed = if i == 0 {
                key_text.clone()
            } else {
                format!("{key_text}#{i}")
            };
            let name = format!("{svc_name}-{}", safe_encode(fnv32a(seed.as_bytes())));
            out.insert(
                name.clone(),
                slice_for(svc, &svc_name, name, endpoints, ports.clone()),
            );
        }
    }
    out
}

/// One managed slice of `svc`.
fn slice_for(
    svc: &Service,
    svc_name: &str,
    name: String,
    endpoints: Vec<Endpoint>,
    ports: Vec<EndpointPort>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), svc_name.to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: Some(vec![controller_ref("v1", "Service", &svc.metadata)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: if ports.is_empty() { None } else { Some(ports) },
    }
}

/// Decides the slice writes for one Service. `existing` are the slices this
/// controller manages for it.
pub fn reconcile(svc: &Service, pods: &[Pod], existing: &[EndpointSlice]) -> Vec<Action> {
    let mut actions = Vec::new();
    if terminating(&svc.metadata) {
        return actions;
    }
    let mut desired = desired_slices(svc, pods);
    for cur in existing {
        let name = cur.metadata.name.clone().unwrap_or_default();
        match desired.remove(&name) {
            None => actions.push(Action::Delete {
                namespace: cur.metadata.namespace.clone().unwrap_or_default(),
                name,
            }),
            Some(want) => {
                let labels_ok =
                    want.metadata.labels.iter().flatten().all(|(k, v)| {
                        cur.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)
                    });
                let same = labels_ok
                    && cur.address_type == want.address_type
                    && cur.endpoints == want.endpoints
                    && cur.ports == want.ports
                    && cur.metadata.owner_references == want.metadata.owner_references;
                if !same {
                    let mut upd = cur.clone();
                    let labels = upd.metadata.labels.get_or_insert_with(BTreeMap::new);
                    labels.extend(want.metadata.labels.clone().unwrap_or_default());
                    upd.metadata.owner_references = want.metadata.owner_references;
                    upd.address_type = want.address_type;
                    upd.endpoints = want.endpoints;
                    upd.ports = want.ports;
                    actions.push(Action::Update(upd));
                }
            }
        }
    }
    actions.extend(desired.into_values().map(Action::Create));
    actions
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{meta, pod, ts};
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc(selector: Option<&[(&str, &str)]>, target: IntOrString) -> Service {
        Service {
            metadata: meta("default", "web", "svc-uid"),
            spec: Some(ServiceSpec {
                selector: selector.map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn web_pod(name: &str, ip: Option<&str>, ready: bool, named_port: Option<i32>) -> Pod {
        let mut p = pod(
            name,
            &[("app", "web")],
            ip,
            Some("node1"),
            ready.then_some(10),
        );
        if let Some(port) = named_port {
            p.spec.as_mut().unwrap().containers = vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("web".into()),
                    container_port: port,
                    ..Default::default()
                }]),
                ..Default::default()
            }];
        }
        p
    }

    fn ep_summary(s: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
        s.endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (
                    e.addresses.join(","),
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                )
            })
            .collect()
    }

    #[test]
    fn endpoints_table() {
        let mut leaving = web_pod("d", Some("10.244.1.4"), true, None);
        leaving.metadata.deletion_timestamp = Some(Time(ts(50)));
        let mut other = pod(
            "o",
            &[("app", "db")],
            Some("10.244.1.9"),
            Some("node1"),
            Some(1),
        );
        other.metadata.namespace = Some("default".into());
        let pods = vec![
            web_pod("a", Some("10.244.1.2"), true, None),
            web_pod("b", Some("10.244.1.3"), false, None),
            web_pod("c", None, true, None),
            leaving,
            other,
            web_pod("v6", Some("fd00::1"), true, None),
        ];
        let slices = desired_slices(&svc(Some(&[("app", "web")]), IntOrString::Int(8080)), &pods);
        assert_eq!(slices.len(), 1);
        let s = slices.values().next().unwrap();
        assert_eq!(
            ep_summary(s),
            vec![
                ("10.244.1.2".into(), true, true, false),
                ("10.244.1.3".into(), false, false, false),
                ("10.244.1.4".into(), false, true, true),
            ]
        );
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!(l.get(SERVICE_NAME_LABEL).map(String::as_str), Some("web"));
        assert_eq!(
            l.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(s.address_type, "IPv4");
        assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
        let e = &s.endpoints[0];
        assert_eq!(e.node_name.as_deref(), Some("node1"));
        assert_eq!(
            e.target_ref.as_ref().and_then(|r| r.name.as_deref()),
            Some("a")
        );
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].uid,
            "svc-uid"
        );
    }

    #[test]
    fn headless_service_publishes_pod_hostnames() {
        let named = |name: &str, ip: &str, subdomain: &str| {
            let mut p = web_pod(name, Some(ip), true, None);
            let spec = p.spec.get_or_insert_with(Default::default);
            spec.hostname = Some(name.to_string());
            spec.subdomain = Some(subdomain.to_string());
            p
        };
        let pods = vec![
            named("web-0", "10.244.1.2", "web"),
            named("web-1", "10.244.1.3", "other"),
        ];
        let slices = desired_slices(&svc(Some(&[("app", "web")]), IntOrString::Int(8080)), &pods);
        let s = slices.values().next().unwrap();
        let hosts: Vec<Option<&str>> = s.endpoints.iter().map(|e| e.hostname.as_deref()).collect();
        // Only a pod whose subdomain is this Service gets a DNS name through it.
        assert_eq!(hosts, vec![Some("web-0"), None]);
    }

    #[test]
    fn target_port_resolution_table() {
        let pod_with = web_pod("a", Some("10.0.0.1"), true, Some(9090));
        let pod_without = web_pod("b", Some("10.0.0.2"), true, None);
        let sp = |t: Option<IntOrString>, proto: Option<&str>| ServicePort {
            port: 80,
            target_port: t,
            protocol: proto.map(str::to_string),
            ..Default::default()
        };
        // (service port, pod, expected)
        let cases = [
            (sp(None, None), &pod_without, Some(80)),
            (sp(Some(IntOrString::Int(0)), None), &pod_without, Some(80)),
            (
                sp(Some(IntOrString::Int(8080)), None),
                &pod_without,
                Some(8080),
            ),
            (
                sp(Some(IntOrString::String("web".into())), None),
                &pod_with,
                Some(9090),
            ),
            (
                sp(Some(IntOrString::String("web".into())), Some("UDP")),
                &pod_with,
                None,
            ),
            (
                sp(Some(IntOrString::String("web".into())), None),
                &pod_without,
                None,
            ),
        ];
        for (i, (sp, pod, want)) in cases.iter().enumerate() {
            assert_eq!(resolve_target_port(sp, pod), *want, "case {i}");
        }
    }

    #[test]
    fn named_ports_split_slices() {
        let pods = vec![
            web_pod("a", Some("10.0.0.1"), true, Some(9090)),
            web_pod("b", Some("10.0.0.2"), true, Some(9091)),
        ];
        let slices = desired_slices(
            &svc(Some(&[("app", "web")]), IntOrString::String("web".into())),
            &pods,
        );
        let mut ports: Vec<i32> = slices
            .values()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        ports.sort();
        assert_eq!(ports, vec![9090, 9091]);
    }

    #[test]
    fn reconcile_table() {
        let s = svc(Some(&[("app", "web")]), IntOrString::Int(8080));
        let pods = vec![web_pod("a", Some("10.244.1.2"), true, None)];
        let want = desired_slices(&s, &pods).into_values().next().unwrap();
        let mut stale = want.clone();
        stale.endpoints.clear();
        stale.metadata.resource_version = Some("7".into());
        let mut foreign = want.clone();
        foreign.metadata.name = Some("web-old".into());
        let kind = |a: &Action| match a {
            Action::Create(_) => "create",
            Action::Update(_) => "update",
            Action::Delete { .. } => "delete",
        };
        // (case, service, existing slices, expected action kinds)
        let cases: Vec<(&str, Service, Vec<EndpointSlice>, Vec<&str>)> = vec![
            ("nothing yet", s.clone(), vec![], vec!["create"]),
            ("up to date", s.clone(), vec![want.clone()], vec![]),
            ("stale content", s.clone(), vec![stale], vec!["update"]),
            (
                "leftover slice",
                s.clone(),
                vec![want.clone(), foreign.clone()],
                vec!["delete"],
            ),
            (
                "selector removed: managed slices go",
                svc(None, IntOrString::Int(8080)),
                vec![want.clone()],
                vec!["delete"],
            ),
        ];
        for (name, svc, existing, expected) in cases {
            let got: Vec<&str> = reconcile(&svc, &pods, &existing).iter().map(kind).collect();
            assert_eq!(got, expected, "{name}");
        }
        // An update keeps the stored resourceVersion (optimistic concurrency).
        let mut stale = want.clone();
        stale.endpoints.clear();
        stale.metadata.resource_version = Some("7".into());
        let Some(Action::Update(u)) = reconcile(&s, &pods, &[stale]).pop() else {
            panic!("expected update")
        };
        assert_eq!(u.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(u.endpoints, want.endpoints);
    }

    #[test]
    fn large_services_are_split() {
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                web_pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.244.{}.{}", i / 200, i % 200 + 1)),
                    true,
                    None,
                )
            })
            .collect();
        let slices = desired_slices(&svc(Some(&[("app", "web")]), IntOrString::Int(8080)), &pods);
        let mut sizes: Vec<usize> = slices.values().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100, 100]);
        // Stable names: the same input gives the same slices.
        let again = desired_slices(&svc(Some(&[("app", "web")]), IntOrString::Int(8080)), &pods);
        assert_eq!(
            slices.keys().collect::<Vec<_>>(),
            again.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn placeholder_when_no_pods_match() {
        let slices = desired_slices(&svc(Some(&[("app", "web")]), IntOrString::Int(8080)), &[]);
        let s = slices.values().next().expect("placeholder slice");
        assert!(s.endpoints.is_empty());
        assert!(desired_slices(&svc(None, IntOrString::Int(1)), &[]).is_empty());
    }
}
