//! The strategic merge patch kubectl sends by default (`patch` without
//! `--type`), for the lists people patch: lists of objects with a merge key
//! (containers by name, container ports by containerPort, service ports by
//! port, env by name, ...) merge element by element instead of being
//! replaced, and `$patch: delete` / `$patch: replace` directives work.
//! Everything else behaves like a JSON merge patch. Pure.
//!
//! The merge keys are the `x-kubernetes-patch-merge-key`s of the Kubernetes
//! API for the kinds weir serves.

use serde_json::{Map, Value};

/// The merge key of a list field, judged from its name and its elements
/// (`ports` is keyed by containerPort in a container, by port in a Service).
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "readinessGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if sample.is_some_and(|s| s.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_list(target: &mut Vec<Value>, patch: &[Value], key: &str) {
    if patch.iter().any(|p| directive(p) == Some("replace")) {
        *target = patch
            .iter()
            .filter(|p| directive(p) != Some("replace"))
            .map(without_directives)
            .collect();
        return;
    }
    for p in patch {
        let id = p.get(key);
        let pos = id.and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
        match (directive(p), pos) {
            (Some("delete"), Some(i)) => {
                target.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut target[i], p),
            (_, None) => target.push(without_directives(p)),
        }
    }
}

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if directive(patch) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let existing = t.get_mut(k).and_then(Value::as_array_mut);
                let key = merge_key(
                    k,
                    items.first().or(existing.as_ref().and_then(|e| e.first())),
                );
                match (key, existing) {
                    (Some(key), Some(list)) => merge_list(list, items, key),
                    _ => {
                        t.insert(
                            k.clone(),
                            Value::Array(
                                items
                                    .iter()
                                    .filter(|i| directive(i) != Some("delete"))
                                    .map(without_directives)
                                    .collect(),
                            ),
                        );
                    }
                }
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_table() {
        let dep = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "web", "image": "a:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}});
        fn c(v: &Value, i: usize) -> Value {
            v["spec"]["template"]["spec"]["containers"][i].clone()
        }
        // (patch, check)
        type Check = fn(&Value) -> bool;
        let cases: Vec<(Value, Check)> = vec![
            // A container patched by name keeps its other fields and the other containers.
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "a:2"}]}}}}),
                |v| {
                    c(v, 0)
                        == json!({"name": "web", "image": "a:2", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]})
                        && c(v, 1)["image"] == "s:1"
                },
            ),
            // A new name is appended.
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "n:1"}]}}}}),
                |v| c(v, 2)["name"] == "new" && c(v, 0)["name"] == "web",
            ),
            // $patch: delete removes by key.
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}),
                |v| {
                    v["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .map(Vec::len)
                        == Some(1)
                },
            ),
            // Nested keyed lists merge too (env by name, ports by containerPort).
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
                "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 80, "name": "http"}]}]}}}}),
                |v| {
                    c(v, 0)["env"]
                        == json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
                        && c(v, 0)["ports"] == json!([{"containerPort": 80, "name": "http"}])
                },
            ),
            // $patch: replace in a list replaces it.
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}}),
                |v| {
                    v["spec"]["template"]["spec"]["containers"]
                        == json!([{"name": "only", "image": "o:1"}])
                },
            ),
            // Scalars and null behave like a merge patch.
            (json!({"spec": {"replicas": 3, "template": null}}), |v| {
                v["spec"] == json!({"replicas": 3})
            }),
        ];
        for (patch, check) in cases {
            let mut t = dep.clone();
            strategic_merge(&mut t, &patch);
            assert!(check(&t), "{patch}\n=> {t}");
        }
        // Lists without a merge key are replaced; a Service's ports merge by port.
        let mut svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "externalIPs": ["1.1.1.1"]}});
        strategic_merge(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}, {"port": 443}], "externalIPs": ["2.2.2.2"]}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}, {"port": 443}], "externalIPs": ["2.2.2.2"]}})
        );
    }
}
