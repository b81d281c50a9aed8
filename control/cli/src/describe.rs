//! `describe KIND NAME`: kubectl's human sections for an object and its
//! Events. Pure: the object and events in, text out.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::table::human_age;

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The elements of the array at pointer `p` in `v`; none when absent.
fn items<'a>(v: &'a Value, p: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(p).and_then(Value::as_array).into_iter().flatten()
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// Collects lines as tab-separated cells and aligns them like kubectl's
/// tabwriter (padding 2): consecutive lines with more than one cell form a
/// block whose columns line up; a one-cell line ends the block.
struct Out {
    lines: Vec<Vec<String>>,
}

impl Out {
    fn new() -> Self {
        Out { lines: Vec::new() }
    }

    fn kv(&mut self, indent: usize, key: &str, value: impl AsRef<str>) {
        let cell = format!("{}{key}:", " ".repeat(indent));
        let v = value.as_ref();
        if v.is_empty() {
            self.lines.push(vec![cell]);
        } else {
            self.lines.push(vec![cell, v.to_string()]);
        }
    }

    /// A map (labels, annotations, selectors) one `k=v` per line.
    fn map(&mut self, indent: usize, key: &str, m: Option<&Value>) {
        let pairs: Vec<String> = m
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect();
        match pairs.split_first() {
            None => self.kv(indent, key, "<none>"),
            Some((first, rest)) => {
                self.kv(indent, key, first);
                for p in rest {
                    self.lines.push(vec![String::new(), p.clone()]);
                }
            }
        }
    }

    fn line(&mut self, l: impl AsRef<str>) {
        for l in l.as_ref().split('\n') {
            self.lines.push(vec![l.to_string()]);
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.lines.push(cells);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.lines.len() {
            if self.lines[i].len() < 2 {
                out.push_str(
                    self.lines[i]
                        .first()
                        .map(String::as_str)
                        .unwrap_or_default(),
                );
                out.push('\n');
                i += 1;
                continue;
            }
            let end = (i..self.lines.len())
                .find(|&j| self.lines[j].len() < 2)
                .unwrap_or(self.lines.len());
            let block = &self.lines[i..end];
            let cols = block.iter().map(Vec::len).max().unwrap_or(0);
            let widths: Vec<usize> = (0..cols)
                .map(|c| {
                    block
                        .iter()
                        .filter_map(|l| l.get(c))
                        .map(|x| x.chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for l in block {
                let mut line = String::new();
                for (c, cell) in l.iter().enumerate() {
                    line.push_str(cell);
                    if c + 1 < l.len() {
                        line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
            i = end;
        }
        out
    }
}

fn containers(out: &mut Out, title: &str, list: Option<&Value>, statuses: Option<&Value>) {
    let Some(cs) = list.and_then(Value::as_array).filter(|a| !a.is_empty()) else {
        return;
    };
    out.line(format!("{title}:"));
    for c in cs {
        let name = s(c, "/name");
        out.line(format!("  {name}:"));
        out.kv(4, "Image", s(c, "/image"));
        let ports: Vec<String> = items(c, "/ports")
            .map(|p| {
                format!("{}/{}", s(p, "/containerPort"), {
                    let pr = s(p, "/protocol");
                    if pr.is_empty() { "TCP".into() } else { pr }
                })
            })
            .collect();
        if !ports.is_empty() {
            out.kv(4, "Port", ports.join(", "));
        }
        if let Some(cmd) = c.get("command").and_then(Value::as_array) {
            out.kv(
                4,
                "Command",
                cmd.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if let Some(st) = statuses
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|st| s(st, "/name") == name)
        {
            let state = st
                .get("state")
                .and_then(Value::as_object)
                .and_then(|m| m.iter().next());
            if let Some((k, detail)) = state {
                let mut k = k.clone();
                if let Some(f) = k.get_mut(0..1) {
                    f.make_ascii_uppercase();
                }
                out.kv(4, "State", k);
                let reason = s(detail, "/reason");
                if !reason.is_empty() {
                    out.kv(6, "Reason", reason);
                }
                let started = s(detail, "/startedAt");
                if !started.is_empty() {
                    out.kv(6, "Started", started);
                }
            }
            out.kv(4, "Ready", s(st, "/ready"));
            out.kv(4, "Restart Count", s(st, "/restartCount"));
        }
        let env: Vec<String> = items(c, "/env")
            .map(|e| {
                if e.get("valueFrom").is_some() {
                    format!("{}:  <set from a reference>", s(e, "/name"))
                } else {
                    format!("{}:  {}", s(e, "/name"), s(e, "/value"))
                }
            })
            .collect();
        if env.is_empty() {
            out.kv(4, "Environment", "<none>");
        } else {
            out.line("    Environment:");
            for e in env {
                out.line(format!("      {e}"));
            }
        }
    }
}

fn pod_template_section(out: &mut Out, t: Option<&Value>) {
    let Some(t) = t else { return };
    out.line("Pod Template:");
    out.map(2, "Labels", t.pointer("/metadata/labels"));
    let mut inner = Out::new();
    containers(
        &mut inner,
        "Containers",
        t.pointer("/spec/containers"),
        None,
    );
    for mut l in inner.lines {
        if let Some(first) = l.first_mut() {
            first.insert_str(0, "  ");
        }
        out.row(l);
    }
}

fn conditions(out: &mut Out, v: &Value) {
    let Some(cs) = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    else {
        return;
    };
    out.line("Conditions:");
    out.row(vec!["  Type".into(), "Status".into(), "Reason".into()]);
    out.row(vec!["  ----".into(), "------".into(), "------".into()]);
    for c in cs {
        out.row(vec![
            format!("  {}", s(c, "/type")),
            s(c, "/status"),
            s(c, "/reason"),
        ]);
    }
}

fn kind_sections(out: &mut Out, kind: &str, v: &Value) {
    match kind {
        "Pod" => {
            out.kv(0, "Node", or_none(s(v, "/spec/nodeName")));
            out.kv(
                0,
                "Status",
                crate::table::pod_status(&serde_json::from_value(v.clone()).unwrap_or_default()),
            );
            out.kv(0, "IP", or_none(s(v, "/status/podIP")));
            let owner = v
                .pointer("/metadata/ownerReferences/0")
                .map(|o| format!("{}/{}", s(o, "/kind"), s(o, "/name")));
            out.kv(0, "Controlled By", owner.unwrap_or_else(|| "<none>".into()));
            containers(
                out,
                "Init Containers",
                v.pointer("/spec/initContainers"),
                v.pointer("/status/initContainerStatuses"),
            );
            containers(
                out,
                "Containers",
                v.pointer("/spec/containers"),
                v.pointer("/status/containerStatuses"),
            );
            conditions(out, v);
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            let sel = v
                .pointer("/spec/selector/matchLabels")
                .or_else(|| v.pointer("/spec/selector"));
            out.map(0, "Selector", sel);
            if kind != "DaemonSet" {
                out.kv(
                    0,
                    "Replicas",
                    format!(
                        "{} desired | {} updated | {} total | {} available",
                        v.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(1),
                        v.pointer("/status/updatedReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        v.pointer("/status/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        v.pointer("/status/availableReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                    ),
                );
            }
            if kind == "Deployment" {
                out.kv(0, "StrategyType", {
                    let t = s(v, "/spec/strategy/type");
                    if t.is_empty() {
                        "RollingUpdate".into()
                    } else {
                        t
                    }
                });
            }
            pod_template_section(out, v.pointer("/spec/template"));
            conditions(out, v);
        }
        "Service" => {
            out.map(0, "Selector", v.pointer("/spec/selector"));
            out.kv(0, "Type", {
                let t = s(v, "/spec/type");
                if t.is_empty() { "ClusterIP".into() } else { t }
            });
            out.kv(0, "IP", or_none(s(v, "/spec/clusterIP")));
            for p in items(v, "/spec/ports") {
                let name = or_none(s(p, "/name")).replace("<none>", "<unset>");
                out.kv(
                    0,
                    "Port",
                    format!("{name}  {}/{}", s(p, "/port"), {
                        let pr = s(p, "/protocol");
                        if pr.is_empty() { "TCP".into() } else { pr }
                    }),
                );
                out.kv(
                    0,
                    "TargetPort",
                    format!("{}/TCP", {
                        let t = s(p, "/targetPort");
                        if t.is_empty() { s(p, "/port") } else { t }
                    }),
                );
                if p.get("nodePort").is_some() {
                    out.kv(0, "NodePort", format!("{name}  {}/TCP", s(p, "/nodePort")));
                }
            }
        }
        "Node" => {
            let taints: Vec<String> = items(v, "/spec/taints")
                .map(|t| {
                    let val = s(t, "/value");
                    let kv = if val.is_empty() {
                        s(t, "/key")
                    } else {
                        format!("{}={val}", s(t, "/key"))
                    };
                    format!("{kv}:{}", s(t, "/effect"))
                })
                .collect();
            match taints.split_first() {
                None => out.kv(0, "Taints", "<none>"),
                Some((first, rest)) => {
                    out.kv(0, "Taints", first);
                    for t in rest {
                        out.row(vec![String::new(), t.clone()]);
                    }
                }
            }
            out.kv(
                0,
                "Unschedulable",
                v.pointer("/spec/unschedulable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            );
            conditions(out, v);
            let addrs: Vec<String> = items(v, "/status/addresses")
                .map(|a| format!("{}: {}", s(a, "/type"), s(a, "/address")))
                .collect();
            out.line("Addresses:");
            for a in addrs {
                out.line(format!("  {a}"));
            }
            out.kv(0, "PodCIDR", or_none(s(v, "/spec/podCIDR")));
        }
        "ConfigMap" => {
            out.line("\nData\n====");
            for (k, val) in v
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                out.line(format!(
                    "{k}:\n----\n{}\n",
                    val.as_str().unwrap_or_default()
                ));
            }
        }
        // Sizes only, never values: describe is shown on screens and in logs.
        "Secret" => {
            out.kv(0, "Type", or_none(s(v, "/type")));
            out.line("\nData\n====");
            for (k, val) in v
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let n = val
                    .as_str()
                    .map(|b| {
                        (b.len() / 4 * 3)
                            .saturating_sub(b.chars().rev().take_while(|c| *c == '=').count())
                    })
                    .unwrap_or(0);
                out.line(format!("{k}:  {n} bytes"));
            }
        }
        "Namespace" => out.kv(0, "Status", {
            let p = s(v, "/status/phase");
            if p.is_empty() { "Active".into() } else { p }
        }),
        _ => {
            // No specific describer: the spec and status as YAML, like kubectl's generic one.
            for part in ["spec", "status"] {
                if let Some(p) = v
                    .get(part)
                    .filter(|p| p.as_object().is_some_and(|m| !m.is_empty()))
                {
                    let mut t = part.to_string();
                    if let Some(f) = t.get_mut(0..1) {
                        f.make_ascii_uppercase();
                    }
                    out.line(format!("{t}:"));
                    for l in serde_yaml::to_string(p).unwrap_or_default().lines() {
                        out.line(format!("  {l}"));
                    }
                }
            }
        }
    }
}

/// `rollout history --revision`: the "Pod Template:" section of a template.
pub fn pod_template(t: &Value) -> String {
    let mut out = Out::new();
    pod_template_section(&mut out, Some(t));
    out.render()
}

/// Objects describe shows alongside the described one.
#[derive(Debug, Default)]
pub struct Related {
    /// A Service's EndpointSlices (its Endpoints line).
    pub endpoint_slices: Vec<Value>,
    /// A Deployment's ReplicaSets (NewReplicaSet / OldReplicaSets).
    pub replicasets: Vec<Value>,
}

/// kubectl's `Endpoints:` value: ready addresses with each port, `<none>`.
pub fn endpoints_line(slices: &[Value]) -> String {
    let mut eps = Vec::new();
    for sl in slices {
        let ports: Vec<String> = items(sl, "/ports")
            .map(|p| s(p, "/port"))
            .filter(|p| !p.is_empty())
            .collect();
        for e in items(sl, "/endpoints") {
            if e.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            for a in items(e, "/addresses") {
                let ip = a.as_str().unwrap_or_default();
                if ports.is_empty() {
                    eps.push(ip.to_string());
                } else {
                    eps.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                }
            }
        }
    }
    if eps.is_empty() {
        "<none>".into()
    } else {
        eps.join(",")
    }
}

fn rs_revision(rs: &Value) -> i64 {
    s(
        rs,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    )
    .parse()
    .unwrap_or(0)
}

fn rs_cell(rs: &Value) -> String {
    format!(
        "{} ({}/{} replicas created)",
        s(rs, "/metadata/name"),
        rs.pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        rs.pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    )
}

/// kubectl's (NewReplicaSet, OldReplicaSets) cells: the newest revision is
/// new; older ones still running pods are old.
pub fn replicaset_lines(replicasets: &[Value]) -> (String, String) {
    let newest = replicasets.iter().max_by_key(|r| rs_revision(r));
    let old: Vec<String> = replicasets
        .iter()
        .filter(|r| Some(*r) != newest)
        .filter(|r| {
            r.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        })
        .map(rs_cell)
        .collect();
    (
        newest.map(rs_cell).unwrap_or_else(|| "<none>".into()),
        if old.is_empty() {
            "<none>".into()
        } else {
            old.join(", ")
        },
    )
}

/// The full describe text of `v` (of `kind`) with `events` (already
/// filtered to this object).
pub fn describe(
    kind: &str,
    v: &Value,
    events: &[Value],
    related: &Related,
    now: Timestamp,
) -> String {
    let mut out = Out::new();
    out.kv(0, "Name", s(v, "/metadata/name"));
    if v.pointer("/metadata/namespace").is_some() {
        out.kv(0, "Namespace", s(v, "/metadata/namespace"));
    }
    out.map(0, "Labels", v.pointer("/metadata/labels"));
    // last-applied is a copy of the whole manifest: kubectl hides it too.
    let ann = v.pointer("/metadata/annotations").cloned().map(|mut a| {
        if let Some(m) = a.as_object_mut() {
            m.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        a
    });
    out.map(0, "Annotations", ann.as_ref());
    out.kv(
        0,
        "CreationTimestamp",
        or_none(s(v, "/metadata/creationTimestamp")),
    );
    kind_sections(&mut out, kind, v);
    match kind {
        "Service" => out.kv(0, "Endpoints", endpoints_line(&related.endpoint_slices)),
        "Deployment" => {
            let (new, old) = replicaset_lines(&related.replicasets);
            out.kv(0, "OldReplicaSets", old);
            out.kv(0, "NewReplicaSet", new);
        }
        _ => {}
    }
    if events.is_empty() {
        out.kv(0, "Events", "<none>");
    } else {
        out.line("Events:");
        out.row(
            ["  Type", "Reason", "Age", "From", "Message"]
                .map(String::from)
                .to_vec(),
        );
        out.row(
            ["  ----", "------", "----", "----", "-------"]
                .map(String::from)
                .to_vec(),
        );
        let mut evs: Vec<&Value> = events.iter().collect();
        evs.sort_by_key(|e| {
            let t = s(e, "/lastTimestamp");
            if t.is_empty() {
                s(e, "/metadata/creationTimestamp")
            } else {
                t
            }
        });
        for e in evs {
            let last = [
                s(e, "/lastTimestamp"),
                s(e, "/eventTime"),
                s(e, "/metadata/creationTimestamp"),
            ]
            .into_iter()
            .find_map(|t| t.parse::<Timestamp>().ok())
            .map(|t| human_age(now.as_second() - t.as_second()))
            .unwrap_or_else(|| "<unknown>".into());
            let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
            let age = if count > 1 {
                format!("{last} (x{count})")
            } else {
                last
            };
            out.row(vec![
                format!("  {}", s(e, "/type")),
                s(e, "/reason"),
                age,
                s(e, "/source/component"),
                s(e, "/message"),
            ]);
        }
    }
    out.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().expect("valid")
    }

    #[test]
    fn pod_with_events() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "fe"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "img:v1", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "img:v1", "imageID": "",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]}});
        let ev = json!({"type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web-1 to node1",
            "source": {"component": "default-scheduler"}, "lastTimestamp": "2026-01-01T00:09:00Z", "involvedObject": {}});
        let text = describe("Pod", &pod, &[ev], &Related::default(), now());
        for want in [
            "Name:               web-1\n",
            "Namespace:          default\n",
            "Labels:             app=web\n                    tier=fe\n",
            "Annotations:        <none>\n",
            "Node:               node1\n",
            "Status:             Running\n",
            "IP:                 10.244.1.5\n",
            "Containers:\n  c:\n    Image:          img:v1\n    Port:           8080/TCP\n    State:          Running\n",
            "Events:\n  Type    Reason     Age   From               Message\n  ----    ------     ----  ----               -------\n  Normal  Scheduled  60s   default-scheduler  Successfully assigned default/web-1 to node1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    fn describe_plain(kind: &str, v: &Value, events: &[Value], now: Timestamp) -> String {
        describe(kind, v, events, &Related::default(), now)
    }

    #[test]
    fn related_lines() {
        let slices = vec![json!({"ports": [{"port": 8080}], "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"]}]})];
        assert_eq!(endpoints_line(&slices), "10.0.0.1:8080,10.0.0.3:8080");
        assert_eq!(endpoints_line(&[]), "<none>");
        let rs = |name: &str, rev: i64, want: i64, have: i64| {
            json!({"metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision": rev.to_string()}},
                "spec": {"replicas": want}, "status": {"replicas": have}})
        };
        assert_eq!(
            replicaset_lines(&[
                rs("web-1", 1, 1, 1),
                rs("web-2", 2, 3, 2),
                rs("web-0", 0, 0, 0)
            ]),
            (
                "web-2 (2/3 replicas created)".to_string(),
                "web-1 (1/1 replicas created)".to_string()
            )
        );
        assert_eq!(
            replicaset_lines(&[]),
            ("<none>".to_string(), "<none>".to_string())
        );
        let svc = json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        let related = Related {
            endpoint_slices: slices,
            ..Default::default()
        };
        let text = describe("Service", &svc, &[], &related, now());
        assert!(
            text.contains("Endpoints:          10.0.0.1:8080,10.0.0.3:8080\n"),
            "{text}"
        );
    }

    #[test]
    fn no_events_and_secret_sizes() {
        let sec = json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "default"}, "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="}});
        let text = describe("Secret", &sec, &[], &Related::default(), now());
        assert!(text.contains("password:  7 bytes"), "{text}");
        assert!(
            !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.ends_with("Events:  <none>\n"), "{text}");
        let d = json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "img:v2"}]}}}, "status": {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}});
        let text = describe("Deployment", &d, &[], &Related::default(), now());
        assert!(
            text.contains("Replicas:           3 desired | 3 updated | 3 total | 2 available\n"),
            "{text}"
        );
        assert!(text.contains("Pod Template:\n  Labels:  app=web\n  Containers:\n    c:\n      Image:        img:v2\n"), "{text}");
        let node = json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24",
            "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoExecute"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.11"}]}});
        let text = describe("Node", &node, &[], &Related::default(), now());
        assert!(text.contains("Taints:             dedicated=db:NoSchedule\n                    gpu:NoExecute\nUnschedulable:      false\n"), "{text}");
        assert!(
            text.contains("Addresses:\n  InternalIP: 172.30.0.11\n"),
            "{text}"
        );
        let generic = describe_plain(
            "Lease",
            &json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}),
            &[],
            now(),
        );
        assert!(
            generic.contains("Spec:\n  holderIdentity: me\n"),
            "{generic}"
        );
    }
}
