//! kubectl-like tables, pure: objects in, text out. Known kinds get their
//! kubectl columns; every other kind gets NAME AGE.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, PodSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Options that change the table's shape.
#[derive(Debug, Clone, Default)]
pub struct TableOpts {
    pub wide: bool,
    pub all_namespaces: bool,
    /// `--show-labels`: a LABELS column at the end.
    pub show_labels: bool,
    /// `-L key`: one column per label key.
    pub label_columns: Vec<String>,
    /// `deployment.apps/` before every NAME: kubectl does this when one
    /// `get` lists several kinds, so the rows say what they are.
    pub name_prefix: Option<String>,
}

/// Renders rows under headers, columns separated by three spaces like
/// kubectl's tabwriter; the last column is not padded.
pub fn render(headers: &[String], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate().take(n) {
            line.push_str(c);
            if i + 1 < n {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// kubectl's short human duration: 45s, 3m20s, 25m, 5h10m, 30h, 3d4h, 40d, 2y10d.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rs = s % 60;
        if rs == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rs}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let rm = m % 60;
        if rm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let rh = h % 24;
        if rh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rh}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        let y = d / 365;
        let rd = d % 365;
        if y < 8 && rd != 0 {
            format!("{y}y{rd}d")
        } else {
            format!("{y}y")
        }
    }
}

fn age(meta: &ObjectMeta, now: Timestamp) -> String {
    meta.creation_timestamp
        .as_ref()
        .map(|t| human_age(now.as_second() - t.0.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn selector_text(sel: Option<&LabelSelector>) -> String {
    sel.and_then(|s| weir_api::selector::Selector::from_label_selector(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn containers_and_images(spec: Option<&PodSpec>) -> (String, String) {
    let cs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    (
        cs.iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| c.image.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn headers_for(kind: &str, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match kind {
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        ),
        "Service" => (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            &["SELECTOR"],
        ),
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "ReplicaSet" => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "EndpointSlice" => (&["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], &[]),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        other => (
            crate::table_kinds::headers(other).unwrap_or(&["NAME", "AGE"]),
            crate::table_kinds::wide_headers(other),
        ),
    };
    let mut h = base.to_vec();
    if wide {
        h.extend_from_slice(extra);
    }
    h
}

fn typed<T: DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// The STATUS column of a pod, as kubectl derives it.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let st = p.status.clone().unwrap_or_default();
    let mut reason = st
        .reason
        .clone()
        .or(st.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    for cs in st.container_statuses.iter().flatten() {
        let state = cs.state.clone().unwrap_or_default();
        if let Some(r) = state
            .waiting
            .and_then(|w| w.reason)
            .filter(|r| !r.is_empty())
        {
            reason = r;
        } else if let Some(t) = state.terminated {
            reason = t
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
        }
    }
    reason
}

fn pod_row(p: &Pod, wide: bool, now: Timestamp) -> Vec<String> {
    let st = p.status.clone().unwrap_or_default();
    let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let ready = st
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| c.ready)
        .count();
    let restarts: i32 = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let mut r = vec![
        p.metadata.name.clone().unwrap_or_default(),
        format!("{ready}/{total}"),
        pod_status(p),
        restarts.to_string(),
        age(&p.metadata, now),
    ];
    if wide {
        r.push(or_none(st.pod_ip.unwrap_or_default()));
        r.push(or_none(
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ));
        r.push(or_none(st.nominated_node_name.unwrap_or_default()));
        r.push("<none>".into());
    }
    r
}

fn service_row(s: &Service, wide: bool, now: Timestamp) -> Vec<String> {
    let spec = s.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let mut external: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| {
            i.iter()
                .filter_map(|i| i.ip.clone().or(i.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    external.extend(spec.external_ips.clone().unwrap_or_default());
    let external = if !external.is_empty() {
        external.join(",")
    } else if type_ == "LoadBalancer" {
        "<pending>".into()
    } else if type_ == "ExternalName" {
        spec.external_name.clone().unwrap_or_default()
    } else {
        "<none>".into()
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match p.node_port {
                Some(np) => format!("{}:{np}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut r = vec![
        s.metadata.name.clone().unwrap_or_default(),
        type_,
        or_none(spec.cluster_ip.clone().unwrap_or_default()),
        external,
        or_none(ports),
        age(&s.metadata, now),
    ];
    if wide {
        let sel = spec
            .selector
            .map(|m| weir_api::selector::Selector::from_map(&m).to_string())
            .unwrap_or_default();
        r.push(or_none(sel));
    }
    r
}

fn deployment_row(d: &Deployment, wide: bool, now: Timestamp) -> Vec<String> {
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    let mut r = vec![
        d.metadata.name.clone().unwrap_or_default(),
        format!(
            "{}/{}",
            st.ready_replicas.unwrap_or(0),
            spec.replicas.unwrap_or(1)
        ),
        st.updated_replicas.unwrap_or(0).to_string(),
        st.available_replicas.unwrap_or(0).to_string(),
        age(&d.metadata, now),
    ];
    if wide {
        let (c, i) = containers_and_images(spec.template.spec.as_ref());
        r.extend([c, i, or_none(selector_text(Some(&spec.selector)))]);
    }
    r
}

fn replicaset_row(rs: &ReplicaSet, wide: bool, now: Timestamp) -> Vec<String> {
    let spec = rs.spec.clone().unwrap_or_default();
    let st = rs.status.clone().unwrap_or_default();
    let mut r = vec![
        rs.metadata.name.clone().unwrap_or_default(),
        spec.replicas.unwrap_or(1).to_string(),
        st.replicas.to_string(),
        st.ready_replicas.unwrap_or(0).to_string(),
        age(&rs.metadata, now),
    ];
    if wide {
        let (c, i) = containers_and_images(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
        r.extend([c, i, or_none(selector_text(Some(&spec.selector)))]);
    }
    r
}

fn node_row(n: &Node, wide: bool, now: Timestamp) -> Vec<String> {
    let st = n.status.clone().unwrap_or_default();
    let ready = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone());
    let mut status = match ready.as_deref() {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = n
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, _)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    let info = st.node_info.clone().unwrap_or_default();
    let mut r = vec![
        n.metadata.name.clone().unwrap_or_default(),
        status,
        or_none(roles.join(",")),
        age(&n.metadata, now),
        or_none(info.kubelet_version.clone()),
    ];
    if wide {
        let addr = |t: &str| {
            st.addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == t)
                .map(|a| a.address.clone())
                .unwrap_or_default()
        };
        r.extend([
            or_none(addr("InternalIP")),
            or_none(addr("ExternalIP")),
            or_none(info.os_image.clone()),
            or_none(info.kernel_version.clone()),
            or_none(info.container_runtime_version.clone()),
        ]);
    }
    r
}

fn slice_row(s: &EndpointSlice, now: Timestamp) -> Vec<String> {
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.port.map(|n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    let addrs: Vec<&String> = s
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter())
        .collect();
    let endpoints = match addrs.len() {
        0 => "<none>".to_string(),
        n if n <= 3 => addrs
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(","),
        n => format!(
            "{} + {} more...",
            addrs[..3]
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
            n - 3
        ),
    };
    vec![
        s.metadata.name.clone().unwrap_or_default(),
        s.address_type.clone(),
        if ports.is_empty() {
            "<unset>".into()
        } else {
            ports
        },
        endpoints,
        age(&s.metadata, now),
    ]
}

fn event_row(e: &Event, now: Timestamp) -> Vec<String> {
    let last = e
        .last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .or(e.metadata.creation_timestamp.as_ref())
        .map(|t| human_age(now.as_second() - t.0.as_second()))
        .unwrap_or_else(|| "<unknown>".into());
    let o = &e.involved_object;
    let object = format!(
        "{}/{}",
        o.kind.as_deref().unwrap_or_default().to_ascii_lowercase(),
        o.name.as_deref().unwrap_or_default()
    );
    vec![
        last,
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        object,
        e.message.clone().unwrap_or_default(),
    ]
}

fn generic_row(v: &Value, now: Timestamp) -> Vec<String> {
    let meta: ObjectMeta = v.get("metadata").and_then(typed).unwrap_or_default();
    vec![meta.name.clone().unwrap_or_default(), age(&meta, now)]
}

/// One row for `v` of `kind`. An object that does not decode as its kind
/// falls back to NAME AGE rather than failing the whole listing.
fn row(kind: &str, v: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let r = match kind {
        "Pod" => typed::<Pod>(v).map(|o| pod_row(&o, wide, now)),
        "Service" => typed::<Service>(v).map(|o| service_row(&o, wide, now)),
        "Deployment" => typed::<Deployment>(v).map(|o| deployment_row(&o, wide, now)),
        "ReplicaSet" => typed::<ReplicaSet>(v).map(|o| replicaset_row(&o, wide, now)),
        "Node" => typed::<Node>(v).map(|o| node_row(&o, wide, now)),
        "Namespace" => typed::<Namespace>(v).map(|o| {
            let phase = o
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Active".into());
            vec![
                o.metadata.name.clone().unwrap_or_default(),
                phase,
                age(&o.metadata, now),
            ]
        }),
        "EndpointSlice" => typed::<EndpointSlice>(v).map(|o| slice_row(&o, now)),
        "Event" => typed::<Event>(v).map(|o| event_row(&o, now)),
        other => crate::table_kinds::row(other, v, now).map(|mut r| {
            if wide {
                r.extend(crate::table_kinds::wide_row(other, v));
            }
            r
        }),
    };
    let mut r = r.unwrap_or_else(|| generic_row(v, now));
    r.resize(headers_for(kind, wide).len(), "<unknown>".into());
    r
}

/// The table for a list of objects of one kind.
pub fn table(kind: &str, objects: &[Value], opts: &TableOpts, now: Timestamp) -> String {
    let mut headers: Vec<String> = headers_for(kind, opts.wide)
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut rows: Vec<Vec<String>> = objects
        .iter()
        .map(|v| row(kind, v, opts.wide, now))
        .collect();
    if let (Some(p), Some(col)) = (&opts.name_prefix, headers.iter().position(|h| h == "NAME")) {
        for r in rows.iter_mut() {
            if let Some(c) = r.get_mut(col) {
                c.insert_str(0, p);
            }
        }
    }
    headers.extend(
        opts.label_columns
            .iter()
            .map(|k| crate::columns::label_header(k)),
    );
    if opts.show_labels {
        headers.push("LABELS".into());
    }
    for (r, v) in rows.iter_mut().zip(objects) {
        r.extend(
            opts.label_columns
                .iter()
                .map(|k| crate::columns::label_cell(v, k)),
        );
        if opts.show_labels {
            r.push(crate::columns::labels_cell(v));
        }
    }
    if opts.all_namespaces {
        headers.insert(0, "NAMESPACE".into());
        for (r, v) in rows.iter_mut().zip(objects) {
            let ns = v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            r.insert(0, ns.to_string());
        }
    }
    render(&headers, &rows)
}

/// `api-resources`: kubectl's table of the kinds weir serves.
pub fn api_resources(kinds: &[weir_api::ResourceKind]) -> String {
    let headers = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"].map(String::from);
    let mut rows: Vec<Vec<String>> = kinds
        .iter()
        .map(|k| {
            vec![
                k.plural.to_string(),
                k.short_names.join(","),
                k.api_version.to_string(),
                k.namespaced.to_string(),
                k.kind.to_string(),
            ]
        })
        .collect();
    rows.sort();
    render(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid")
    }

    fn created(secs_ago: i64) -> String {
        let t = Timestamp::from_second(1_000_000 - secs_ago).expect("valid");
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    #[test]
    fn api_resources_table() {
        let t = api_resources(weir_api::KINDS);
        assert!(t.starts_with("NAME "), "{t}");
        assert!(
            t.contains("\ndeployments              deploy       apps/v1                  true         Deployment\n"),
            "{t}"
        );
        assert_eq!(t.lines().count(), weir_api::KINDS.len() + 1);
    }

    #[test]
    fn human_age_table() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (25 * 60, "25m"),
            (5 * 3600 + 600, "5h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (800 * 86400, "2y70d"),
            (-5, "0s"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_age(secs), want, "{secs}");
        }
    }

    #[test]
    fn render_pads_like_kubectl() {
        let h = vec!["NAME".to_string(), "READY".to_string(), "AGE".to_string()];
        let rows = vec![
            vec!["web-1".to_string(), "1/1".to_string(), "5s".to_string()],
            vec!["a".into(), "0/1".into(), "10m".into()],
        ];
        assert_eq!(
            render(&h, &rows),
            "NAME    READY   AGE\nweb-1   1/1     5s\na       0/1     10m\n"
        );
    }

    #[test]
    fn kind_tables() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-abc", "namespace": "default", "creationTimestamp": created(30)},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "image": "i", "imageID": ""}]}
        });
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created(300)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}
        });
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created(3600)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "img:v1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node1", "creationTimestamp": created(86400 * 3), "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "weir-0.1.0",
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "",
                "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}}
        });
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x", "namespace": "default", "creationTimestamp": created(10)},
            "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]
        });
        let wide = TableOpts {
            wide: true,
            ..Default::default()
        };
        let narrow = TableOpts::default();
        let labelled = TableOpts {
            show_labels: true,
            label_columns: vec!["app".into()],
            ..Default::default()
        };
        let cases = [
            (
                "Pod",
                &pod,
                narrow.clone(),
                "NAME      READY   STATUS    RESTARTS   AGE\nweb-abc   1/1     Running   2          30s\n",
            ),
            (
                "Pod",
                &pod,
                wide.clone(),
                "NAME      READY   STATUS    RESTARTS   AGE   IP           NODE    NOMINATED NODE   READINESS GATES\n\
                 web-abc   1/1     Running   2          30s   10.244.1.5   node1   <none>           <none>\n",
            ),
            (
                "Service",
                &svc,
                narrow.clone(),
                "NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)        AGE\nweb    NodePort   10.96.0.10   <none>        80:30080/TCP   5m\n",
            ),
            (
                "Deployment",
                &deploy,
                narrow.clone(),
                "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    2/3     3            2           60m\n",
            ),
            (
                "Node",
                &node,
                narrow.clone(),
                "NAME    STATUS                     ROLES           AGE   VERSION\nnode1   Ready,SchedulingDisabled   control-plane   3d    weir-0.1.0\n",
            ),
            (
                "EndpointSlice",
                &slice,
                narrow.clone(),
                "NAME    ADDRESSTYPE   PORTS   ENDPOINTS                                AGE\nweb-x   IPv4          8080    10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...   10s\n",
            ),
            (
                "Event",
                &json!({"metadata": {"name": "e1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "web-1"},
                    "type": "Warning", "reason": "FailedScheduling", "message": "0/0 nodes are available.", "lastTimestamp": created(65)}),
                narrow.clone(),
                "LAST SEEN   TYPE      REASON             OBJECT      MESSAGE\n65s         Warning   FailedScheduling   pod/web-1   0/0 nodes are available.\n",
            ),
            (
                "ConfigMap",
                &json!({"metadata": {"name": "cm", "creationTimestamp": created(5)}}),
                narrow.clone(),
                "NAME   DATA   AGE\ncm     0      5s\n",
            ),
            (
                "Deployment",
                &deploy,
                labelled.clone(),
                "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   APP   LABELS\nweb    2/3     3            2           60m         <none>\n",
            ),
            (
                "Lease",
                &json!({"metadata": {"name": "l", "creationTimestamp": created(5)}}),
                narrow.clone(),
                "NAME   AGE\nl      5s\n",
            ),
            (
                "Deployment",
                &deploy,
                TableOpts {
                    name_prefix: Some("deployment.apps/".into()),
                    ..Default::default()
                },
                "NAME                  READY   UP-TO-DATE   AVAILABLE   AGE\ndeployment.apps/web   2/3     3            2           60m\n",
            ),
        ];
        for (kind, obj, opts, want) in cases {
            assert_eq!(
                table(kind, std::slice::from_ref(obj), &opts, now()),
                want,
                "{kind}"
            );
        }
        let all = table(
            "Pod",
            std::slice::from_ref(&pod),
            &TableOpts {
                all_namespaces: true,
                ..Default::default()
            },
            now(),
        );
        assert!(all.starts_with("NAMESPACE   NAME "), "{all}");
        assert!(all.contains("\ndefault     web-abc "), "{all}");
    }

    #[test]
    fn pod_status_table() {
        let p = |status: Value, deleting: bool| -> Pod {
            let mut v = json!({"metadata": {"name": "p"}, "status": status});
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(v).expect("pod")
        };
        let waiting = json!({"phase": "Pending", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        let crashed = json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3, "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});
        let cases = [
            (p(json!({"phase": "Running"}), false), "Running"),
            (p(json!({}), false), "Pending"),
            (p(waiting, false), "ContainerCreating"),
            (p(crashed, false), "Error"),
            (p(json!({"phase": "Running"}), true), "Terminating"),
        ];
        for (pod, want) in cases {
            assert_eq!(pod_status(&pod), want);
        }
    }
}
