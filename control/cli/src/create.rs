//! Pure object builders behind `create namespace|deployment|service|configmap|secret`
//! and `expose`: flags in, the object kubectl would send out. The caller
//! creates it or, with `--dry-run=client`, prints it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// `key=value` pairs of `--from-literal`, in order, duplicates rejected.
pub fn parse_literals(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for a in args {
        let Some((k, v)) = a.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("invalid literal source {a:?}, expected key=value"));
        };
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!(
                "cannot add key {k}, another key by that name already exists"
            ));
        }
    }
    Ok(out)
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// kubectl names the container after the image: last path segment, without
/// tag or digest (`127.0.0.1:5000/weir/hostname:v1` -> `hostname`).
pub fn container_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let base = last.split(['@', ':']).next().unwrap_or(last);
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "app".into()
    } else {
        name.to_string()
    }
}

pub fn deployment(
    name: &str,
    ns: &str,
    images: &[String],
    replicas: i32,
    port: Option<i32>,
) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .map(|i| {
            let mut c = json!({"name": container_name(i), "image": i});
            if let Some(p) = port {
                c["ports"] = json!([{"containerPort": p}]);
            }
            c
        })
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers}
            }
        }
    })
}

/// One `--tcp=port[:targetPort]` of `create service`.
pub fn parse_tcp(spec: &str) -> Result<Value, String> {
    let bad = || format!("invalid --tcp {spec:?}: use PORT or PORT:TARGET_PORT");
    let (port, target) = match spec.split_once(':') {
        Some((p, t)) => (p, t),
        None => (spec, spec),
    };
    let port: i32 = port.parse().map_err(|_| bad())?;
    let target_v: Value = match target.parse::<i32>() {
        Ok(t) => json!(t),
        Err(_) if !target.is_empty() => json!(target),
        Err(_) => return Err(bad()),
    };
    Ok(
        json!({"name": format!("{port}-{target}"), "port": port, "protocol": "TCP", "targetPort": target_v}),
    )
}

/// `create service <type> NAME --tcp=...`: selector and label `app=NAME`.
pub fn service(name: &str, ns: &str, type_: &str, tcp: &[String]) -> Result<Value, String> {
    let type_ = match type_.to_ascii_lowercase().as_str() {
        "clusterip" => "ClusterIP",
        "nodeport" => "NodePort",
        "loadbalancer" => "LoadBalancer",
        other => {
            return Err(format!(
                "unknown service type {other:?}: use clusterip, nodeport or loadbalancer"
            ));
        }
    };
    if tcp.is_empty() {
        return Err("at least one --tcp=PORT[:TARGET_PORT] is required".into());
    }
    let ports = tcp
        .iter()
        .map(|t| parse_tcp(t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"type": type_, "selector": {"app": name}, "ports": ports}
    }))
}

pub fn configmap(name: &str, ns: &str, data: &BTreeMap<String, String>) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// A generic Secret; values are base64-encoded into `data` as kubectl does.
pub fn secret(name: &str, ns: &str, data: &BTreeMap<String, String>) -> Value {
    let data: BTreeMap<&String, k8s_openapi::ByteString> = data
        .iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.clone().into_bytes())))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// Flags of `expose`.
#[derive(Debug, Default, Clone)]
pub struct ExposeOpts {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub target_port: Option<String>,
    pub type_: Option<String>,
    pub protocol: Option<String>,
}

/// `expose`: the Service that selects what `source` (Deployment, ReplicaSet,
/// ReplicationController, Service or Pod) selects, on the given or discovered port.
pub fn expose(source: &Value, ns: &str, opts: &ExposeOpts) -> Result<Value, String> {
    let kind = source
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let src_name = source
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let selector: Value = match kind {
        "Deployment" | "ReplicaSet" => {
            if source
                .pointer("/spec/selector/matchExpressions")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(format!(
                    "couldn't retrieve selectors via --selector flag or introspection: {kind} {src_name:?} uses matchExpressions, which a Service selector cannot express"
                ));
            }
            source
                .pointer("/spec/selector/matchLabels")
                .cloned()
                .unwrap_or(Value::Null)
        }
        "ReplicationController" | "Service" => source
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null),
        "Pod" => source
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null),
        other => return Err(format!("cannot expose a {other}")),
    };
    if selector.as_object().is_none_or(|m| m.is_empty()) {
        return Err(format!(
            "couldn't retrieve selectors via --selector flag or introspection: {kind} {src_name:?} has none"
        ));
    }
    // Ports: the flag, else the source's ports (container ports or service ports).
    let discovered: Vec<(i32, Value, String)> = match kind {
        "Service" => source
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = p
                    .get("port")?
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())?;
                let target = p.get("targetPort").cloned().unwrap_or(json!(port));
                Some((
                    port,
                    target,
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                ))
            })
            .collect(),
        _ => {
            let spec = if kind == "Pod" {
                source.get("spec")
            } else {
                source.pointer("/spec/template/spec")
            };
            spec.and_then(|s| s.get("containers"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .filter_map(|p| {
                    let port = p
                        .get("containerPort")?
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())?;
                    Some((
                        port,
                        json!(port),
                        p.get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
                            .to_string(),
                    ))
                })
                .collect()
        }
    };
    let target_of = |t: &str| {
        t.parse::<i32>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(t))
    };
    let ports: Vec<(i32, Value, String)> = match opts.port {
        Some(p) => vec![(
            p,
            opts.target_port
                .as_deref()
                .map(target_of)
                .unwrap_or(json!(p)),
            opts.protocol.clone().unwrap_or_else(|| "TCP".into()),
        )],
        None if discovered.is_empty() => {
            return Err(format!(
                "couldn't find port via --port flag or introspection: {kind} {src_name:?} declares none"
            ));
        }
        None => discovered
            .into_iter()
            .map(|(p, t, proto)| {
                (
                    p,
                    opts.target_port.as_deref().map(target_of).unwrap_or(t),
                    opts.protocol.clone().unwrap_or(proto),
                )
            })
            .collect(),
    };
    let many = ports.len() > 1;
    let ports: Vec<Value> = ports
        .into_iter()
        .enumerate()
        .map(|(i, (port, target, proto))| {
            let mut v = json!({"port": port, "protocol": proto, "targetPort": target});
            if many {
                v["name"] = json!(format!("port-{}", i + 1));
            }
            v
        })
        .collect();
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": opts.name.as_deref().unwrap_or(src_name), "namespace": ns},
        "spec": {"selector": selector, "ports": ports}
    });
    if let Some(labels) = source
        .pointer("/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
    {
        svc["metadata"]["labels"] = labels.clone();
    }
    if let Some(t) = &opts.type_ {
        svc["spec"]["type"] = json!(t);
    }
    Ok(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_name_table() {
        for (image, want) in [
            ("nginx", "nginx"),
            ("nginx:1.27", "nginx"),
            ("127.0.0.1:5000/weir/hostname:v1", "hostname"),
            ("registry/a/b@sha256:abc", "b"),
            ("My_App:1", "my-app"),
        ] {
            assert_eq!(container_name(image), want, "{image}");
        }
    }

    #[test]
    fn deployment_like_kubectl() {
        let d = deployment("web", "prod", &["nginx:1".into()], 3, Some(80));
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["metadata"]["namespace"], "prod");
        assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web"})
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "nginx", "image": "nginx:1", "ports": [{"containerPort": 80}]}])
        );
    }

    #[test]
    fn tcp_and_service_table() {
        assert_eq!(
            parse_tcp("80:8080"),
            Ok(json!({"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}))
        );
        assert_eq!(
            parse_tcp("53").map(|v| v["targetPort"].clone()),
            Ok(json!(53))
        );
        assert_eq!(
            parse_tcp("80:http").map(|v| v["targetPort"].clone()),
            Ok(json!("http"))
        );
        for bad in ["x", "80:", ":80", ""] {
            assert!(parse_tcp(bad).is_err(), "{bad}");
        }
        let s = service("web", "default", "clusterip", &["80:8080".into()]).expect("valid");
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
        assert!(service("web", "default", "headless", &["80".into()]).is_err());
        assert!(service("web", "default", "clusterip", &[]).is_err());
    }

    #[test]
    fn literals_and_secret() {
        let l = parse_literals(&["a=1".into(), "b=x=y".into()]).expect("valid");
        assert_eq!(l.get("b").map(String::as_str), Some("x=y"));
        assert!(parse_literals(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_literals(&["novalue".into()]).is_err());
        let s = secret("s", "default", &l);
        assert_eq!(s["data"], json!({"a": "MQ==", "b": "eD15"}));
        let c = configmap("c", "default", &l);
        assert_eq!(c["data"], json!({"a": "1", "b": "x=y"}));
    }

    #[test]
    fn expose_table() {
        let dep = json!({"kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [
                {"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]}}}});
        // Port discovered from the container.
        let s = expose(&dep, "default", &ExposeOpts::default()).expect("exposes");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 8080, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(s["metadata"]["name"], "web");
        // Flags win.
        let o = ExposeOpts {
            name: Some("front".into()),
            port: Some(80),
            target_port: Some("8080".into()),
            type_: Some("NodePort".into()),
            protocol: None,
        };
        let s = expose(&dep, "default", &o).expect("exposes");
        assert_eq!(s["metadata"]["name"], "front");
        assert_eq!(s["spec"]["type"], "NodePort");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}])
        );
        // A Service is re-exposed with its selector and ports.
        let svc = json!({"kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "a"},
            "ports": [{"port": 80, "targetPort": "http"}]}});
        let s = expose(
            &svc,
            "default",
            &ExposeOpts {
                name: Some("b".into()),
                ..Default::default()
            },
        )
        .expect("exposes");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": "http"}])
        );
        // No port anywhere, no selector, set-based selector: errors.
        let bare = json!({"kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "c"}]}}}});
        assert!(
            expose(&bare, "default", &ExposeOpts::default())
                .expect_err("no port")
                .contains("port")
        );
        let set = json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"selector": {
            "matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
        assert!(
            expose(
                &set,
                "default",
                &ExposeOpts {
                    port: Some(1),
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            expose(
                &json!({"kind": "ConfigMap"}),
                "default",
                &ExposeOpts::default()
            )
            .is_err()
        );
    }
}
