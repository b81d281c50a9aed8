//! `weir apply` update semantics, pure. Like kubectl's client-side apply,
//! the manifest last applied is kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation; an update
//! is a three-way merge: start from the stored object (so server-set fields
//! such as a Service's clusterIP and the whole status survive), set every
//! field the new manifest sets, and remove fields the previous manifest set
//! but the new one no longer does.

use serde_json::{Map, Value};

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What `apply` must do for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyPlan {
    Create(Value),
    /// Update with this object (it carries the stored resourceVersion).
    Update(Value),
    Unchanged,
}

/// The manifest with the last-applied annotation set to its own JSON.
pub fn with_last_applied(manifest: &Value) -> Value {
    let mut clean = manifest.clone();
    // The annotation never contains itself.
    if let Some(a) = clean
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED);
        if a.is_empty()
            && let Some(m) = clean
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
        {
            m.remove("annotations");
        }
    }
    let text = serde_json::to_string(&clean).unwrap_or_default();
    let mut out = clean;
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = ann.as_object_mut() {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    out
}

/// Decides create / update / unchanged for `manifest` given the stored object.
pub fn plan(manifest: &Value, stored: Option<&Value>) -> ApplyPlan {
    let desired = with_last_applied(manifest);
    let Some(stored) = stored else {
        return ApplyPlan::Create(desired);
    };
    let new_text = desired
        .pointer(&format!(
            "/metadata/annotations/{}",
            LAST_APPLIED.replace('/', "~1")
        ))
        .cloned();
    let old_text = stored
        .pointer(&format!(
            "/metadata/annotations/{}",
            LAST_APPLIED.replace('/', "~1")
        ))
        .cloned();
    if new_text.is_some() && new_text == old_text {
        return ApplyPlan::Unchanged;
    }
    let last: Value = old_text
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let mut merged = stored.clone();
    merge3(&mut merged, &last, &desired);
    // Status is the server's; the stored resourceVersion makes the update conditional.
    if let (Some(m), Some(s)) = (merged.as_object_mut(), stored.get("status")) {
        m.insert("status".into(), s.clone());
    }
    if let (Some(m), Some(rv)) = (
        merged.get_mut("metadata").and_then(Value::as_object_mut),
        stored.pointer("/metadata/resourceVersion"),
    ) {
        m.insert("resourceVersion".into(), rv.clone());
    }
    ApplyPlan::Update(merged)
}

/// Three-way merge of JSON maps: keys in `new` are set (maps recursively),
/// keys only in `last` are removed; lists and scalars are replaced whole.
pub fn merge3(target: &mut Value, last: &Value, new: &Value) {
    let (Some(t), Some(n)) = (target.as_object_mut(), new.as_object()) else {
        *target = new.clone();
        return;
    };
    let empty = Map::new();
    let l = last.as_object().unwrap_or(&empty);
    for k in l.keys() {
        if !n.contains_key(k) {
            t.remove(k);
        }
    }
    for (k, nv) in n {
        let lv = l.get(k).unwrap_or(&Value::Null);
        match t.get_mut(k) {
            Some(tv) if tv.is_object() && nv.is_object() => merge3(tv, lv, nv),
            _ => {
                t.insert(k.clone(), nv.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge3_table() {
        // (stored, last applied, new manifest, expected)
        let cases = [
            (
                json!({"a": 1, "s": 9}),
                json!({"a": 1}),
                json!({"a": 2}),
                json!({"a": 2, "s": 9}),
            ),
            (
                json!({"a": 1, "b": 2}),
                json!({"a": 1, "b": 2}),
                json!({"a": 1}),
                json!({"a": 1}),
            ),
            (
                json!({"spec": {"x": 1, "clusterIP": "10.96.0.5"}}),
                json!({"spec": {"x": 1}}),
                json!({"spec": {"x": 2}}),
                json!({"spec": {"x": 2, "clusterIP": "10.96.0.5"}}),
            ),
            (
                json!({"l": [1, 2, 3]}),
                json!({"l": [1, 2, 3]}),
                json!({"l": [4]}),
                json!({"l": [4]}),
            ),
            (
                json!({"m": {"a": 1, "b": 2}}),
                json!({"m": {"a": 1, "b": 2}}),
                json!({"m": {"a": 1}}),
                json!({"m": {"a": 1}}),
            ),
        ];
        for (stored, last, new, want) in cases {
            let mut t = stored.clone();
            merge3(&mut t, &last, &new);
            assert_eq!(t, want, "{stored} {last} {new}");
        }
    }

    #[test]
    fn plan_table() {
        let m1 = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        let m2 = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 81}]}});
        // Create: the manifest plus its own last-applied annotation.
        let ApplyPlan::Create(created) = plan(&m1, None) else {
            panic!("create")
        };
        let ann = created
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(ann).unwrap(), m1);
        // What the server stored: defaults, allocations, status, resourceVersion.
        let mut stored = created.clone();
        stored["spec"]["clusterIP"] = json!("10.96.0.7");
        stored["metadata"]["resourceVersion"] = json!("42");
        stored["metadata"]["uid"] = json!("u1");
        stored["status"] = json!({"loadBalancer": {}});
        assert_eq!(plan(&m1, Some(&stored)), ApplyPlan::Unchanged);
        let ApplyPlan::Update(u) = plan(&m2, Some(&stored)) else {
            panic!("update")
        };
        assert_eq!(u["spec"]["ports"], json!([{"port": 81}]));
        assert_eq!(
            u["spec"]["clusterIP"], "10.96.0.7",
            "server-set fields survive"
        );
        assert_eq!(u["metadata"]["resourceVersion"], "42");
        assert_eq!(u["metadata"]["uid"], "u1");
        assert_eq!(u["status"], json!({"loadBalancer": {}}));
        // An object created by something else (no annotation) is updated, not "unchanged".
        let mut foreign = stored.clone();
        foreign["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert!(matches!(plan(&m1, Some(&foreign)), ApplyPlan::Update(_)));
    }
}
