//! `-o jsonpath=TEMPLATE`: the part of kubectl's JSONPath templates people
//! type: text, `{.field.path}` (with `[n]` and `[*]`), string literals like
//! `{"\n"}`, and `{range .items[*]}...{end}`. Pure.

use serde_json::Value;

use crate::columns::{Step, parse_path, walk};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Seg>),
}

/// Unescapes a `{"..."}` literal (\n, \t, \", \\).
fn literal(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a template; `{range}` without `{end}` (or the reverse) is an error.
pub fn parse(template: &str) -> Result<Vec<Seg>, String> {
    // A stack of open ranges: (path, segments so far); the bottom is the top level.
    let mut stack: Vec<(Option<Vec<Step>>, Vec<Seg>)> = vec![(None, Vec::new())];
    let mut rest = template;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            push(&mut stack, Seg::Text(rest.to_string()));
            break;
        };
        if open > 0 {
            push(&mut stack, Seg::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed action in template {template:?}"))?;
        let expr = rest[open + 1..close].trim();
        rest = &rest[close + 1..];
        if let Some(lit) = expr.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            push(&mut stack, Seg::Text(literal(lit)));
        } else if let Some(p) = expr.strip_prefix("range ") {
            stack.push((Some(parse_path(p)?), Vec::new()));
        } else if expr == "end" {
            let (Some(path), segs) = stack.pop().unwrap_or((None, Vec::new())) else {
                return Err(format!(
                    "{{end}} without {{range}} in template {template:?}"
                ));
            };
            push(&mut stack, Seg::Range(path, segs));
        } else {
            push(&mut stack, Seg::Path(parse_path(expr)?));
        }
    }
    match stack.pop() {
        Some((None, segs)) if stack.is_empty() => Ok(segs),
        _ => Err(format!(
            "{{range}} without {{end}} in template {template:?}"
        )),
    }
}

fn push(stack: &mut [(Option<Vec<Step>>, Vec<Seg>)], s: Seg) {
    if let Some((_, segs)) = stack.last_mut() {
        segs.push(s);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the template against `v`. Several matches of one path are
/// joined by a space, as kubectl does.
pub fn render(segs: &[Seg], v: &Value) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Text(t) => out.push_str(t),
            Seg::Path(p) => {
                let mut found = Vec::new();
                walk(v, p, &mut found);
                out.push_str(&found.into_iter().map(text).collect::<Vec<_>>().join(" "));
            }
            Seg::Range(p, inner) => {
                let mut found = Vec::new();
                walk(v, p, &mut found);
                for item in found {
                    out.push_str(&render(inner, item));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_table() {
        let list = json!({"kind": "List", "items": [
            {"metadata": {"name": "a"}, "spec": {"replicas": 1, "containers": [{"image": "x"}, {"image": "y"}]}},
            {"metadata": {"name": "b"}, "spec": {"replicas": 2, "containers": [{"image": "z"}]}}
        ]});
        let cases = [
            ("{.items[*].metadata.name}", "a b"),
            ("{.items[0].spec.replicas}", "1"),
            ("names: {.items[*].metadata.name}!", "names: a b!"),
            (
                "{range .items[*]}{.metadata.name}{\"\\t\"}{.spec.replicas}{\"\\n\"}{end}",
                "a\t1\nb\t2\n",
            ),
            (
                "{range .items[*]}{.metadata.name}:{range .spec.containers[*]}[{.image}]{end};{end}",
                "a:[x][y];b:[z];",
            ),
            ("{.items[5].metadata.name}", ""),
            ("{.items[0].metadata}", "{\"name\":\"a\"}"),
        ];
        for (t, want) in cases {
            let segs = parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(render(&segs, &list), want, "{t}");
        }
        for bad in ["{.a", "{range .items[*]}{.x}", "{end}", "{.a[x]}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
