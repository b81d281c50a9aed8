//! kubectl's columns for the kinds beyond pods, services, deployments and
//! nodes: DaemonSet, StatefulSet, ReplicationController, Job, CronJob,
//! ConfigMap, Secret (counts only, never values), NetworkPolicy, Ingress,
//! PersistentVolume(Claim) and Endpoints. Pure; read straight from JSON so a
//! partly filled object still renders.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::table::human_age;

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn len(v: &Value, p: &str) -> usize {
    match v.pointer(p) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn since(v: &Value, p: &str, now: Timestamp) -> Option<i64> {
    let t: Timestamp = v.pointer(p)?.as_str()?.parse().ok()?;
    Some(now.as_second() - t.as_second())
}

fn age(v: &Value, now: Timestamp) -> String {
    since(v, "/metadata/creationTimestamp", now)
        .map(human_age)
        .unwrap_or_else(|| "<unknown>".into())
}

fn match_labels(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .and_then(|s| weir_api::selector::Selector::from_label_selector(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn access_modes(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Headers (narrow) of the kinds this module renders.
pub fn headers(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "DaemonSet" => &[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        "StatefulSet" => &["NAME", "READY", "AGE"],
        "ReplicationController" => &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "Job" => &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "CronJob" => &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
        "ConfigMap" => &["NAME", "DATA", "AGE"],
        "Secret" => &["NAME", "TYPE", "DATA", "AGE"],
        "NetworkPolicy" => &["NAME", "POD-SELECTOR", "AGE"],
        "Ingress" => &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        "PersistentVolume" => &[
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "REASON",
            "AGE",
        ],
        "PersistentVolumeClaim" => &[
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "AGE",
        ],
        "Endpoints" => &["NAME", "ENDPOINTS", "AGE"],
        "ControllerRevision" => &["NAME", "CONTROLLER", "REVISION", "AGE"],
        _ => return None,
    })
}

/// The extra `-o wide` columns of these kinds (kubectl's).
pub fn wide_headers(kind: &str) -> &'static [&'static str] {
    match kind {
        "DaemonSet" | "ReplicationController" | "Job" | "CronJob" => {
            &["CONTAINERS", "IMAGES", "SELECTOR"]
        }
        "StatefulSet" => &["CONTAINERS", "IMAGES"],
        "PersistentVolumeClaim" => &["VOLUMEMODE"],
        "PersistentVolume" => &["VOLUMEMODE"],
        _ => &[],
    }
}

/// The cells under [`wide_headers`].
pub fn wide_row(kind: &str, v: &Value) -> Vec<String> {
    let spec = match kind {
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    let containers: Vec<&Value> = v
        .pointer(&format!("{spec}/containers"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let names = containers
        .iter()
        .map(|c| s(c, "/name"))
        .collect::<Vec<_>>()
        .join(",");
    let images = containers
        .iter()
        .map(|c| s(c, "/image"))
        .collect::<Vec<_>>()
        .join(",");
    let selector = match kind {
        // An RC's selector is a plain map.
        "ReplicationController" => v
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        "CronJob" => match_labels(v, "/spec/jobTemplate/spec/selector"),
        _ => match_labels(v, "/spec/selector"),
    };
    match kind {
        "DaemonSet" | "ReplicationController" | "Job" | "CronJob" => {
            vec![names, images, none(selector)]
        }
        "StatefulSet" => vec![names, images],
        "PersistentVolumeClaim" | "PersistentVolume" => {
            let m = s(v, "/spec/volumeMode");
            vec![if m.is_empty() { "Filesystem".into() } else { m }]
        }
        _ => Vec::new(),
    }
}

fn job_status(v: &Value) -> String {
    let conds: Vec<&Value> = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    if has("Complete") {
        "Complete".into()
    } else if has("Failed") {
        "Failed".into()
    } else if has("Suspended") {
        "Suspended".into()
    } else if v.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        "Running".into()
    }
}

fn endpoints_cell(v: &Value) -> String {
    let mut eps = Vec::new();
    for sub in v
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = sub
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for a in sub
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = s(a, "/ip");
            if ports.is_empty() {
                eps.push(ip);
            } else {
                eps.extend(ports.iter().map(|p| format!("{ip}:{p}")));
            }
        }
    }
    match eps.len() {
        0 => "<none>".into(),
        k if k <= 3 => eps.join(","),
        k => format!("{} + {} more...", eps[..3].join(","), k - 3),
    }
}

/// A ControllerRevision's controller as kubectl shows it, e.g.
/// `daemonset.apps/web` (`<none>` without one).
fn revision_controller(v: &Value) -> String {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let group = s(r, "/apiVersion")
                .rsplit_once('/')
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            format!(
                "{}{group}/{}",
                s(r, "/kind").to_ascii_lowercase(),
                s(r, "/name")
            )
        })
        .unwrap_or_else(|| "<none>".into())
}

/// A row of `kind` (must be one `headers` knows).
pub fn row(kind: &str, v: &Value, now: Timestamp) -> Option<Vec<String>> {
    let name = s(v, "/metadata/name");
    let a = age(v, now);
    Some(match kind {
        "DaemonSet" => {
            let sel: Vec<String> = v
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default()))
                .collect();
            vec![
                name,
                n(v, "/status/desiredNumberScheduled").to_string(),
                n(v, "/status/currentNumberScheduled").to_string(),
                n(v, "/status/numberReady").to_string(),
                n(v, "/status/updatedNumberScheduled").to_string(),
                n(v, "/status/numberAvailable").to_string(),
                none(sel.join(",")),
                a,
            ]
        }
        "StatefulSet" => {
            let want = v
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![name, format!("{}/{want}", n(v, "/status/readyReplicas")), a]
        }
        "ReplicationController" => vec![
            name,
            v.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .to_string(),
            n(v, "/status/replicas").to_string(),
            n(v, "/status/readyReplicas").to_string(),
            a,
        ],
        "Job" => {
            let completions = v.pointer("/spec/completions").and_then(Value::as_i64);
            let done = n(v, "/status/succeeded");
            let comp = match completions {
                Some(c) => format!("{done}/{c}"),
                None => format!(
                    "{done}/1 of {}",
                    v.pointer("/spec/parallelism")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            };
            let duration = match (
                since(v, "/status/startTime", now),
                since(v, "/status/completionTime", now),
            ) {
                (Some(st), Some(ct)) => human_age(st - ct),
                (Some(st), None) => human_age(st),
                _ => String::new(),
            };
            vec![name, job_status(v), comp, duration, a]
        }
        "CronJob" => vec![
            name,
            s(v, "/spec/schedule"),
            none(s(v, "/spec/timeZone")),
            if v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
                "True".into()
            } else {
                "False".into()
            },
            len(v, "/status/active").to_string(),
            since(v, "/status/lastScheduleTime", now)
                .map(human_age)
                .unwrap_or_else(|| "<none>".into()),
            a,
        ],
        "ConfigMap" => vec![
            name,
            (len(v, "/data") + len(v, "/binaryData")).to_string(),
            a,
        ],
        // Only the number of keys: a table must never show a secret's values.
        "Secret" => vec![
            name,
            {
                let t = s(v, "/type");
                if t.is_empty() { "Opaque".into() } else { t }
            },
            (len(v, "/data") + len(v, "/stringData")).to_string(),
            a,
        ],
        "NetworkPolicy" => {
            let sel = match_labels(v, "/spec/podSelector");
            vec![name, if sel.is_empty() { "<none>".into() } else { sel }, a]
        }
        "Ingress" => {
            let hosts: Vec<String> = v
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    let h = s(r, "/host");
                    if h.is_empty() { "*".into() } else { h }
                })
                .collect();
            let addrs: Vec<String> = v
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| {
                    let ip = s(i, "/ip");
                    if ip.is_empty() { s(i, "/hostname") } else { ip }
                })
                .collect();
            let ports = if len(v, "/spec/tls") > 0 {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                none(s(v, "/spec/ingressClassName")),
                if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                },
                addrs.join(","),
                ports.into(),
                a,
            ]
        }
        "PersistentVolume" => {
            let claim = match (
                s(v, "/spec/claimRef/namespace"),
                s(v, "/spec/claimRef/name"),
            ) {
                (ns, n) if !n.is_empty() => format!("{ns}/{n}"),
                _ => String::new(),
            };
            let policy = s(v, "/spec/persistentVolumeReclaimPolicy");
            vec![
                name,
                s(v, "/spec/capacity/storage"),
                access_modes(v, "/spec/accessModes"),
                if policy.is_empty() {
                    "Retain".into()
                } else {
                    policy
                },
                {
                    let p = s(v, "/status/phase");
                    if p.is_empty() { "Pending".into() } else { p }
                },
                claim,
                s(v, "/spec/storageClassName"),
                s(v, "/status/reason"),
                a,
            ]
        }
        "PersistentVolumeClaim" => vec![
            name,
            {
                let p = s(v, "/status/phase");
                if p.is_empty() { "Pending".into() } else { p }
            },
            s(v, "/spec/volumeName"),
            s(v, "/status/capacity/storage"),
            access_modes(v, "/status/accessModes"),
            s(v, "/spec/storageClassName"),
            a,
        ],
        "Endpoints" => vec![name, endpoints_cell(v), a],
        "ControllerRevision" => vec![
            name,
            revision_controller(v),
            n(v, "/revision").to_string(),
            a,
        ],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().expect("valid")
    }

    #[test]
    fn rows_table() {
        let meta = json!({"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"});
        let cases = [
            (
                "DaemonSet",
                json!({"metadata": meta, "spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}},
                "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}),
                vec!["x", "2", "2", "1", "2", "1", "disk=ssd", "10m"],
            ),
            (
                "StatefulSet",
                json!({"metadata": meta, "spec": {"replicas": 3}, "status": {"readyReplicas": 2}}),
                vec!["x", "2/3", "10m"],
            ),
            (
                "Job",
                json!({"metadata": meta, "spec": {"completions": 1},
                "status": {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:30Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}),
                vec!["x", "Complete", "1/1", "30s", "10m"],
            ),
            (
                "CronJob",
                json!({"metadata": meta, "spec": {"schedule": "*/5 * * * *"}}),
                vec!["x", "*/5 * * * *", "<none>", "False", "0", "<none>", "10m"],
            ),
            (
                "ConfigMap",
                json!({"metadata": meta, "data": {"a": "1", "b": "2"}}),
                vec!["x", "2", "10m"],
            ),
            (
                "ControllerRevision",
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web", "uid": "u", "controller": true}]},
                    "revision": 3}),
                vec!["x", "daemonset.apps/web", "3", "10m"],
            ),
            (
                "Secret",
                json!({"metadata": meta, "type": "Opaque", "data": {"password": "c2VjcmV0"}}),
                vec!["x", "Opaque", "1", "10m"],
            ),
            (
                "NetworkPolicy",
                json!({"metadata": meta, "spec": {"podSelector": {"matchLabels": {"app": "db"}}}}),
                vec!["x", "app=db", "10m"],
            ),
            (
                "NetworkPolicy",
                json!({"metadata": meta, "spec": {"podSelector": {}}}),
                vec!["x", "<none>", "10m"],
            ),
            (
                "Ingress",
                json!({"metadata": meta, "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example"}, {}]}}),
                vec!["x", "nginx", "a.example,*", "", "80", "10m"],
            ),
            (
                "PersistentVolume",
                json!({"metadata": meta, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}}),
                vec![
                    "x",
                    "1Gi",
                    "RWO",
                    "Retain",
                    "Bound",
                    "default/data",
                    "",
                    "",
                    "10m",
                ],
            ),
            (
                "PersistentVolumeClaim",
                json!({"metadata": meta, "spec": {"volumeName": "pv1", "storageClassName": "local"},
                "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"]}}),
                vec!["x", "Bound", "pv1", "1Gi", "RWX", "local", "10m"],
            ),
            (
                "Endpoints",
                json!({"metadata": meta, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]}),
                vec!["x", "10.0.0.1:80,10.0.0.2:80", "10m"],
            ),
            (
                "Endpoints",
                json!({"metadata": meta}),
                vec!["x", "<none>", "10m"],
            ),
        ];
        for (kind, obj, want) in cases {
            let got = row(kind, &obj, now()).expect("known kind");
            assert_eq!(got, want, "{kind}");
            assert_eq!(
                headers(kind).map(<[_]>::len),
                Some(want.len()),
                "{kind} header count"
            );
        }
        assert_eq!(row("Pod", &json!({}), now()), None);
    }

    #[test]
    fn wide_rows_table() {
        let ds = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"spec": {"containers": [{"name": "c1", "image": "i1"}, {"name": "c2", "image": "i2"}]}}}});
        assert_eq!(wide_row("DaemonSet", &ds), ["c1,c2", "i1,i2", "app=a"]);
        let rc = json!({"spec": {"selector": {"app": "old"}, "template": {"spec": {"containers": [{"name": "o", "image": "x"}]}}}});
        assert_eq!(
            wide_row("ReplicationController", &rc),
            ["o", "x", "app=old"]
        );
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "j", "image": "b"}]}}}}}});
        assert_eq!(wide_row("CronJob", &cj), ["j", "b", "<none>"]);
        assert_eq!(
            wide_row("PersistentVolumeClaim", &json!({})),
            ["Filesystem"]
        );
        for k in [
            "DaemonSet",
            "StatefulSet",
            "Job",
            "CronJob",
            "ReplicationController",
            "PersistentVolume",
        ] {
            assert_eq!(wide_headers(k).len(), wide_row(k, &ds).len(), "{k}");
        }
        assert!(wide_headers("ConfigMap").is_empty());
    }

    #[test]
    fn secret_rows_never_show_values() {
        let sec = json!({"metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": "plain"}});
        let r = row("Secret", &sec, now()).expect("known").join(" ");
        assert!(
            !r.contains("aHVudGVyMg") && !r.contains("hunter2") && !r.contains("plain"),
            "{r}"
        );
    }
}
