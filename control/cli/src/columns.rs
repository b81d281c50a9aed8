//! `-o custom-columns=HEADER:.json.path,...`, `-L key` and `--show-labels`:
//! pure column specs and the small JSONPath subset kubectl users write
//! (`.a.b`, `.a[0].b`, `.a[*].b`, optional `{}` around it).

use serde_json::Value;

/// One custom column: its header and the path of fields it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub header: String,
    pub path: Vec<Step>,
}

/// A step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
    All,
}

/// Parses a path like `.spec.containers[*].image` (leading `.` and `{}` optional).
pub fn parse_path(p: &str) -> Result<Vec<Step>, String> {
    let p = p.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('.').unwrap_or(p);
    let mut steps = Vec::new();
    for part in p.split('.').filter(|s| !s.is_empty()) {
        let (field, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            steps.push(Step::Field(field.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("unterminated [ in {p:?}"))?;
            let idx = &r[..end];
            steps.push(if idx == "*" {
                Step::All
            } else {
                Step::Index(
                    idx.parse()
                        .map_err(|_| format!("bad index [{idx}] in {p:?}"))?,
                )
            });
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(format!("unexpected {rest:?} in {p:?}"));
        }
    }
    if steps.is_empty() {
        return Err(format!("empty field path {p:?}"));
    }
    Ok(steps)
}

/// Parses `NAME:.metadata.name,IMAGE:.spec.containers[*].image`.
pub fn parse_spec(spec: &str) -> Result<Vec<Column>, String> {
    if spec.trim().is_empty() {
        return Err("custom-columns format specified but no custom columns given".into());
    }
    spec.split(',')
        .map(|c| {
            let (h, p) = c.split_once(':').ok_or_else(|| {
                format!("unexpected custom-columns spec: {c}, expected <header>:<json-path-expr>")
            })?;
            Ok(Column {
                header: h.to_string(),
                path: parse_path(p)?,
            })
        })
        .collect()
}

/// Collects every value `steps` reaches from `v` (`[*]` fans out).
pub(crate) fn walk<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    match first {
        Step::Field(f) => {
            if let Some(n) = v.get(f) {
                walk(n, rest, out);
            }
        }
        Step::Index(i) => {
            if let Some(n) = v.get(*i) {
                walk(n, rest, out);
            }
        }
        Step::All => {
            for n in v.as_array().into_iter().flatten() {
                walk(n, rest, out);
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// The cell for `path` in `obj`: matches joined by ",", `<none>` if none.
pub fn eval(obj: &Value, path: &[Step]) -> String {
    let mut out = Vec::new();
    walk(obj, path, &mut out);
    if out.is_empty() {
        "<none>".into()
    } else {
        out.into_iter().map(scalar).collect::<Vec<_>>().join(",")
    }
}

/// The custom-columns table.
pub fn table(cols: &[Column], objects: &[Value]) -> String {
    let headers: Vec<String> = cols.iter().map(|c| c.header.clone()).collect();
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| cols.iter().map(|c| eval(o, &c.path)).collect())
        .collect();
    crate::table::render(&headers, &rows)
}

/// `--sort-by`: orders objects by the value at `path` (numbers by value,
/// everything else by its text; objects without it first), stably.
pub fn sort_by(objects: &mut [Value], path: &[Step]) {
    let key = |v: &Value| {
        let mut found = Vec::new();
        walk(v, path, &mut found);
        match found.first() {
            None => (0u8, 0.0, String::new()),
            Some(Value::Number(n)) => (1, n.as_f64().unwrap_or(0.0), String::new()),
            Some(other) => (2, 0.0, scalar(other)),
        }
    };
    objects.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| ka.2.cmp(&kb.2))
    });
}

/// `--show-labels`' LABELS cell: `k=v,k2=v2` or `<none>`.
pub fn labels_cell(obj: &Value) -> String {
    let l: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if l.is_empty() {
        "<none>".into()
    } else {
        l.join(",")
    }
}

/// `-L key`'s cell: the label's value or empty.
pub fn label_cell(obj: &Value, key: &str) -> String {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// kubectl's -L header: the last segment of the key, upper-cased.
pub fn label_header(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_path_table() {
        let f = |s: &str| Step::Field(s.into());
        assert_eq!(
            parse_path(".metadata.name"),
            Ok(vec![f("metadata"), f("name")])
        );
        assert_eq!(
            parse_path("{.metadata.name}"),
            Ok(vec![f("metadata"), f("name")])
        );
        assert_eq!(
            parse_path(".spec.containers[*].image"),
            Ok(vec![f("spec"), f("containers"), Step::All, f("image")])
        );
        assert_eq!(
            parse_path(".items[0]"),
            Ok(vec![f("items"), Step::Index(0)])
        );
        for bad in ["", ".", ".a[x]", ".a[0", ".a[0]b"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sort_by_table() {
        let mut objs = vec![
            json!({"n": "c", "spec": {"replicas": 10}}),
            json!({"n": "a", "spec": {"replicas": 2}}),
            json!({"n": "none"}),
            json!({"n": "b", "spec": {"replicas": 2}}),
        ];
        sort_by(&mut objs, &parse_path(".spec.replicas").expect("valid"));
        let order: Vec<&str> = objs.iter().filter_map(|o| o["n"].as_str()).collect();
        assert_eq!(
            order,
            ["none", "a", "b", "c"],
            "numeric, stable, missing first"
        );
        sort_by(&mut objs, &parse_path(".n").expect("valid"));
        let order: Vec<&str> = objs.iter().filter_map(|o| o["n"].as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "none"]);
    }

    #[test]
    fn eval_and_table() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "app.kubernetes.io/tier": "fe"}},
            "spec": {"containers": [{"image": "a"}, {"image": "b"}], "replicas": 3}});
        let cols = parse_spec("NAME:.metadata.name,IMAGES:.spec.containers[*].image,FIRST:.spec.containers[0].image,N:.spec.replicas,X:.nope")
            .expect("valid");
        assert_eq!(
            table(&cols, std::slice::from_ref(&pod)),
            "NAME   IMAGES   FIRST   N   X\np      a,b      a       3   <none>\n"
        );
        assert!(parse_spec("NAME").is_err());
        assert!(parse_spec("").is_err());
        assert_eq!(labels_cell(&pod), "app=web,app.kubernetes.io/tier=fe");
        assert_eq!(labels_cell(&json!({"metadata": {}})), "<none>");
        assert_eq!(label_cell(&pod, "app"), "web");
        assert_eq!(label_cell(&pod, "missing"), "");
        assert_eq!(label_header("app.kubernetes.io/tier"), "TIER");
    }
}
