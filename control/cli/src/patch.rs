//! Pure object edits behind `patch`, `label`, `annotate` and `set image`:
//! RFC 7386 JSON merge patch, `key=value` / `key-` argument parsing and the
//! map changes kubectl makes with and without `--overwrite`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Applies a JSON merge patch (RFC 7386) to `target` in place: objects merge
/// key by key, `null` removes a key, anything else (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Splits an RFC 6901 JSON pointer into unescaped tokens.
fn pointer_tokens(ptr: &str) -> Result<Vec<String>, String> {
    if ptr.is_empty() {
        return Ok(Vec::new());
    }
    let rest = ptr
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {ptr:?}: it must start with /"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// The parent container of `path` and the last token.
fn parent_mut<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut toks = pointer_tokens(path)?;
    let last = toks
        .pop()
        .ok_or_else(|| format!("the path {path:?} names the whole object"))?;
    let mut cur = doc;
    for t in &toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("the path {path:?} does not exist"))?;
    }
    Ok((cur, last))
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("invalid array index in {path:?}"))?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("the parent of {path:?} is not an object or array")),
    }
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    }
    .ok_or_else(|| format!("the path {path:?} does not exist"))
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test).
/// All or nothing: on any error `target` is left unchanged.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |f: &str| {
            op.get(f)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: missing {f:?}"))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i}: missing \"value\""))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => json_add(&mut doc, path, value()?)?,
            "remove" => {
                json_remove(&mut doc, path)?;
            }
            "replace" => {
                json_remove(&mut doc, path)?;
                json_add(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = json_remove(&mut doc, field("from")?)?;
                json_add(&mut doc, path, v)?;
            }
            "copy" => {
                let from = field("from")?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("operation {i}: the path {from:?} does not exist"))?;
                json_add(&mut doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("operation {i}: test failed at {path:?}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    *target = doc;
    Ok(())
}

/// One `label`/`annotate` argument: `key=value` sets, `key-` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapChange {
    Set(String, String),
    Remove(String),
}

/// Parses `key=value` / `key-` arguments, as `kubectl label` does.
pub fn parse_changes(args: &[String]) -> Result<Vec<MapChange>, String> {
    if args.is_empty() {
        return Err("at least one label update is required".into());
    }
    args.iter()
        .map(|a| {
            if let Some((k, v)) = a.split_once('=') {
                if k.is_empty() {
                    return Err(format!("invalid label spec: {a:?}"));
                }
                Ok(MapChange::Set(k.to_string(), v.to_string()))
            } else if let Some(k) = a.strip_suffix('-').filter(|k| !k.is_empty()) {
                Ok(MapChange::Remove(k.to_string()))
            } else {
                Err(format!("invalid label spec: {a:?}"))
            }
        })
        .collect()
}

/// Applies `changes` to a label or annotation map. Changing an existing key
/// to a different value needs `overwrite`; `key-` on a missing key is a
/// no-op (kubectl warns, it does not fail). Returns whether anything changed.
pub fn apply_changes(
    map: &mut BTreeMap<String, String>,
    changes: &[MapChange],
    overwrite: bool,
) -> Result<bool, String> {
    for c in changes {
        if let MapChange::Set(k, v) = c
            && !overwrite
            && map.get(k).is_some_and(|old| old != v)
        {
            return Err(format!(
                "'{k}' already has a value ({}), and --overwrite is false",
                map[k]
            ));
        }
    }
    let before = map.clone();
    for c in changes {
        match c {
            MapChange::Set(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            MapChange::Remove(k) => {
                map.remove(k);
            }
        }
    }
    Ok(*map != before)
}

/// Applies label/annotation changes to `metadata.<field>` of an object.
pub fn change_metadata_map(
    obj: &mut Value,
    field: &str,
    changes: &[MapChange],
    overwrite: bool,
) -> Result<bool, String> {
    let mut map: BTreeMap<String, String> = obj
        .pointer(&format!("/metadata/{field}"))
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let changed = apply_changes(&mut map, changes, overwrite)?;
    let meta = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| "the object has no metadata".to_string())?;
    if map.is_empty() {
        meta.remove(field);
    } else {
        meta.insert(field.into(), serde_json::to_value(map).unwrap_or_default());
    }
    Ok(changed)
}

/// The pod template's spec of a workload, or the spec of a Pod.
fn pod_spec_mut(obj: &mut Value) -> Option<&mut Value> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let path = match kind {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    obj.pointer_mut(path)
}

/// `set image`: `container=image` pairs, `*=image` sets every container.
/// Errors name a container that does not exist, like kubectl.
pub fn set_images(obj: &mut Value, pairs: &[(String, String)]) -> Result<bool, String> {
    let spec = pod_spec_mut(obj).ok_or_else(|| "the object has no pod template".to_string())?;
    let mut changed = false;
    for (name, image) in pairs {
        let mut found = false;
        for list in ["initContainers", "containers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if name == "*" || c.get("name").and_then(Value::as_str) == Some(name) {
                    found = true;
                    if c.get("image").and_then(Value::as_str) != Some(image) {
                        c["image"] = Value::String(image.clone());
                        changed = true;
                    }
                }
            }
        }
        if !found {
            return Err(format!("unable to find container named {name:?}"));
        }
    }
    Ok(changed)
}

/// Parses `name=image` arguments of `set image`.
pub fn parse_image_pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    if args.is_empty() {
        return Err("at least one image update is required".into());
    }
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((n, i)) if !n.is_empty() && !i.is_empty() => Ok((n.to_string(), i.to_string())),
            _ => Err(format!("invalid image spec {a:?}: use CONTAINER=IMAGE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7386 appendix A, plus nesting into a non-object.
    #[test]
    fn merge_patch_rfc7386_table() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
            (
                json!({"spec":{"replicas":1,"template":{"x":1}}}),
                json!({"spec":{"replicas":3}}),
                json!({"spec":{"replicas":3,"template":{"x":1}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    #[test]
    fn json_patch_table() {
        let base = json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"replicas": 1, "args": ["x", "y"]}});
        // (ops, Ok(result) or Err)
        let cases: Vec<(Value, Result<Value, ()>)> = vec![
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
                Ok(
                    json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"replicas": 3, "args": ["x", "y"]}}),
                ),
            ),
            (
                json!([{"op": "add", "path": "/spec/args/-", "value": "z"}, {"op": "add", "path": "/spec/args/0", "value": "w"}]),
                Ok(
                    json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"replicas": 1, "args": ["w", "x", "y", "z"]}}),
                ),
            ),
            (
                json!([{"op": "remove", "path": "/metadata/labels/a~1b"}]),
                Ok(
                    json!({"metadata": {"labels": {}}, "spec": {"replicas": 1, "args": ["x", "y"]}}),
                ),
            ),
            (
                json!([{"op": "move", "from": "/spec/replicas", "path": "/spec/n"}, {"op": "copy", "from": "/spec/n", "path": "/spec/m"}]),
                Ok(
                    json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"n": 1, "m": 1, "args": ["x", "y"]}}),
                ),
            ),
            (
                json!([{"op": "test", "path": "/spec/replicas", "value": 1}]),
                Ok(base.clone()),
            ),
            (
                json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
                Err(()),
            ),
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 5}, {"op": "remove", "path": "/nope"}]),
                Err(()),
            ),
            (
                json!([{"op": "add", "path": "/spec/args/9", "value": 1}]),
                Err(()),
            ),
            (json!([{"op": "frob", "path": "/x"}]), Err(())),
            (json!({"op": "add"}), Err(())),
        ];
        for (ops, want) in cases {
            let mut t = base.clone();
            let r = json_patch(&mut t, &ops);
            match want {
                Ok(w) => {
                    assert_eq!(r, Ok(()), "{ops}");
                    assert_eq!(t, w, "{ops}");
                }
                Err(()) => {
                    assert!(r.is_err(), "{ops}");
                    assert_eq!(t, base, "all or nothing: {ops}");
                }
            }
        }
    }

    #[test]
    fn parse_changes_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_changes(&s(&["a=b", "c-", "d="])),
            Ok(vec![
                MapChange::Set("a".into(), "b".into()),
                MapChange::Remove("c".into()),
                MapChange::Set("d".into(), String::new()),
            ])
        );
        assert!(parse_changes(&s(&["nokey"])).is_err());
        assert!(parse_changes(&s(&["=v"])).is_err());
        assert!(parse_changes(&s(&["-"])).is_err());
        assert!(parse_changes(&[]).is_err());
    }

    #[test]
    fn apply_changes_table() {
        let base: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let set = |k: &str, v: &str| MapChange::Set(k.into(), v.into());
        let rm = |k: &str| MapChange::Remove(k.into());
        // (changes, overwrite, Ok(changed) or Err, resulting map)
        type Case = (
            Vec<MapChange>,
            bool,
            Result<bool, ()>,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![set("tier", "fe")],
                false,
                Ok(true),
                vec![("app", "web"), ("tier", "fe")],
            ),
            (
                vec![set("app", "web")],
                false,
                Ok(false),
                vec![("app", "web")],
            ),
            (
                vec![set("app", "api")],
                false,
                Err(()),
                vec![("app", "web")],
            ),
            (
                vec![set("app", "api")],
                true,
                Ok(true),
                vec![("app", "api")],
            ),
            (vec![rm("app")], false, Ok(true), vec![]),
            (vec![rm("missing")], false, Ok(false), vec![("app", "web")]),
        ];
        for (changes, overwrite, want, after) in cases {
            let mut m = base.clone();
            let got = apply_changes(&mut m, &changes, overwrite);
            assert_eq!(got.map_err(|_| ()), want, "{changes:?}");
            let after: BTreeMap<String, String> = after
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(m, after, "{changes:?}");
        }
        let err = apply_changes(&mut base.clone(), &[set("app", "x")], false)
            .expect_err("needs overwrite");
        assert_eq!(
            err,
            "'app' already has a value (web), and --overwrite is false"
        );
    }

    #[test]
    fn metadata_map_removes_empty() {
        let mut o = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
        let changed =
            change_metadata_map(&mut o, "labels", &[MapChange::Remove("a".into())], false);
        assert_eq!(changed, Ok(true));
        assert_eq!(o, json!({"metadata": {"name": "x"}}));
        let changed = change_metadata_map(
            &mut o,
            "annotations",
            &[MapChange::Set("note".into(), "hi".into())],
            false,
        );
        assert_eq!(changed, Ok(true));
        assert_eq!(o["metadata"]["annotations"], json!({"note": "hi"}));
    }

    #[test]
    fn set_images_table() {
        let dep = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": "a:1"}, {"name": "side", "image": "b:1"}]}}}});
        let mut d = dep.clone();
        assert_eq!(
            set_images(&mut d, &[("web".into(), "a:2".into())]),
            Ok(true)
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "a:2"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][1]["image"],
            "b:1"
        );
        assert_eq!(
            set_images(&mut d, &[("web".into(), "a:2".into())]),
            Ok(false)
        );
        assert_eq!(set_images(&mut d, &[("*".into(), "c:1".into())]), Ok(true));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][1]["image"],
            "c:1"
        );
        assert!(
            set_images(&mut d, &[("nope".into(), "x".into())])
                .expect_err("unknown container")
                .contains("nope")
        );
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x"}]}});
        assert_eq!(set_images(&mut pod, &[("c".into(), "y".into())]), Ok(true));
        assert_eq!(pod["spec"]["containers"][0]["image"], "y");
        assert_eq!(
            parse_image_pairs(&["web=nginx:1".into()]),
            Ok(vec![("web".into(), "nginx:1".into())])
        );
        assert!(parse_image_pairs(&["web".into()]).is_err());
    }
}
