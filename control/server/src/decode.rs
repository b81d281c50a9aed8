//! Decoding an object's JSON into its k8s-openapi type with the field path of
//! the first problem (`spec.containers[0].ports[0].containerPort`), so that a
//! wrongly typed or missing field is reported like every other validation
//! error: by field.
//!
//! serde_json only reports line and column. On failure, the value is
//! rendered again with one JSON token per line next to a table of the field
//! path of every line, and decoded from that text: the error's line is the
//! field. (The fast path, a plain `from_value`, is taken for valid objects.)

use serde::de::DeserializeOwned;
use serde_json::Value;
use weir_api::validation::FieldError;

/// Decodes `v`, or names the field that does not fit the type.
pub fn decode<K: DeserializeOwned>(v: Value) -> Result<K, FieldError> {
    match serde_json::from_value::<K>(v.clone()) {
        Ok(k) => Ok(k),
        Err(first) => Err(locate::<K>(&v).unwrap_or_else(|| {
            FieldError::invalid("<body>", "", strip_position(&first.to_string()))
        })),
    }
}

fn locate<K: DeserializeOwned>(v: &Value) -> Option<FieldError> {
    let mut lines = Lines::default();
    lines.render(v, "");
    let err = serde_json::from_str::<K>(&lines.text).err()?;
    let idx = err.line().checked_sub(1)?;
    let (path, token) = lines.at.get(idx)?.clone();
    let msg = strip_position(&err.to_string());
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return Some(FieldError::required(join(&path, field), ""));
    }
    let field = if path.is_empty() {
        "<body>".into()
    } else {
        path
    };
    let value = match token.as_str() {
        "{" => "{...}".to_string(),
        "[" => "[...]".to_string(),
        _ => token,
    };
    Some(FieldError::invalid(field, value, msg))
}

/// serde_json appends " at line L column C"; the path replaces it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// JSON text with one token per line, and the (path, token) of every line.
#[derive(Default)]
struct Lines {
    text: String,
    at: Vec<(String, String)>,
}

impl Lines {
    fn line(&mut self, token: String, path: &str) {
        self.text.push_str(&token);
        self.text.push('\n');
        self.at.push((path.to_string(), token));
    }

    fn render(&mut self, v: &Value, path: &str) {
        match v {
            Value::Object(m) => {
                self.line("{".into(), path);
                for (i, (k, val)) in m.iter().enumerate() {
                    let child = join(path, k);
                    let key = serde_json::to_string(k).unwrap_or_else(|_| "\"?\"".into());
                    self.line(format!("{key}:"), &child);
                    self.render(val, &child);
                    if i + 1 < m.len() {
                        self.line(",".into(), &child);
                    }
                }
                self.line("}".into(), path);
            }
            Value::Array(a) => {
                self.line("[".into(), path);
                for (i, val) in a.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.render(val, &child);
                    if i + 1 < a.len() {
                        self.line(",".into(), &child);
                    }
                }
                self.line("]".into(), path);
            }
            scalar => self.line(scalar.to_string(), path),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::Ingress;
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "x"}]}]}}),
                "spec.containers[0].ports[0].containerPort: Invalid value: \"x\": invalid type: string \"x\", expected i32",
            ),
            (
                json!({"spec": {"containers": {"name": "c"}}}),
                "spec.containers: Invalid value: {...}: invalid type: map, expected a sequence",
            ),
            (
                json!({"metadata": {"labels": {"a": 1}}}),
                "metadata.labels.a: Invalid value: 1: invalid type: integer `1`, expected a string",
            ),
            (
                json!({"spec": "nope"}),
                "spec: Invalid value: \"nope\": invalid type: string \"nope\", expected PodSpec",
            ),
        ];
        for (v, want) in cases {
            let e = decode::<Pod>(v).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let e = decode::<Ingress>(json!({"spec": {"rules": [{"http": {"paths": [
            {"path": "/", "pathType": 5}]}}]}}))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.rules[0].http.paths[0].pathType: Invalid value: 5: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn valid_objects_decode() {
        let p: Pod =
            decode(json!({"metadata": {"name": "p"}, "spec": {"containers": []}})).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
    }
}
