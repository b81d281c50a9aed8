//! Reading manifests: split a multi-document YAML stream at `---` lines,
//! parse every document, and map each to a kind the server serves. All of
//! it is pure so that a file is either fully understood or rejected before
//! anything is sent.

use serde_json::Value;
use weir_api::ResourceKind;

/// One raw document of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDoc {
    /// 0-based index among the non-empty documents of the file.
    pub index: usize,
    /// 1-based line of the stream where the document's text starts.
    pub first_line: usize,
    pub text: String,
}

/// A manifest problem, naming the file, document and line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("error parsing {source_name}: document {index} (line {line}): {message}")]
    Yaml {
        source_name: String,
        index: usize,
        line: usize,
        message: String,
    },
    #[error("error validating {source_name}: document {index} (line {line}): {message}")]
    Shape {
        source_name: String,
        index: usize,
        line: usize,
        message: String,
    },
    #[error(
        "resource mapping not found for name: {name:?} namespace: {namespace:?} from {source_name:?}: \
         no matches for kind {kind:?} in version {api_version:?}\nensure CRDs are installed first"
    )]
    UnknownKind {
        name: String,
        namespace: String,
        source_name: String,
        kind: String,
        api_version: String,
    },
}

/// Whether `line` separates documents (`---`, optionally followed by a comment or content).
fn is_separator(line: &str) -> bool {
    let l = line.trim_end();
    l == "---" || l.starts_with("--- ") || l.starts_with("---\t")
}

/// Whether a document has no content (only blank lines and comments).
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    })
}

/// Splits a YAML stream into its non-empty documents, remembering where each starts.
pub fn split_documents(stream: &str) -> Vec<RawDoc> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    let push = |text: &mut String, first_line: usize, docs: &mut Vec<RawDoc>| {
        if !is_blank(text) {
            docs.push(RawDoc {
                index: docs.len(),
                first_line,
                text: std::mem::take(text),
            });
        } else {
            text.clear();
        }
    };
    for (i, line) in stream.lines().enumerate() {
        if is_separator(line) {
            push(&mut cur, start, &mut docs);
            // Content after "--- " on the same line belongs to the new document.
            let rest = line
                .trim_end()
                .strip_prefix("---")
                .unwrap_or_default()
                .trim_start();
            start = i + 1;
            if !rest.is_empty() && !rest.starts_with('#') {
                cur.push_str(rest);
                cur.push('\n');
            } else {
                start = i + 2;
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    push(&mut cur, start, &mut docs);
    docs
}

/// Adds `offset` to every number following "line " in `message`.
pub fn shift_lines(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("line ") {
        let (head, tail) = rest.split_at(i + "line ".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        match tail[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&tail[..digits]),
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// One parsed object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub index: usize,
    pub line: usize,
    pub kind: &'static ResourceKind,
    pub name: String,
    /// The namespace written in the document, if any.
    pub namespace: Option<String>,
    pub value: Value,
}

/// Parses every document of `stream`; any error rejects the whole stream.
/// `source_name` is the file name used in messages (`-` for stdin).
pub fn parse_stream(stream: &str, source_name: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    for doc in split_documents(stream) {
        let value: Value = serde_yaml::from_str(&doc.text).map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_string(),
            index: doc.index,
            line: doc.first_line
                + e.location()
                    .map(|l| l.line().saturating_sub(1))
                    .unwrap_or(0),
            // serde_yaml counts lines from the start of the document; shift
            // every "line N" in its message so all lines are of the file.
            message: shift_lines(&e.to_string(), doc.first_line - 1),
        })?;
        let shape = |message: String| ManifestError::Shape {
            source_name: source_name.to_string(),
            index: doc.index,
            line: doc.first_line,
            message,
        };
        if value.is_null() {
            continue;
        }
        let Some(obj) = value.as_object() else {
            return Err(shape(
                "a document must be a mapping with apiVersion, kind and metadata".into(),
            ));
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let api_version =
            text(obj.get("apiVersion")).ok_or_else(|| shape("apiVersion not set".into()))?;
        let kind_name = text(obj.get("kind")).ok_or_else(|| shape("kind not set".into()))?;
        let meta = obj.get("metadata");
        let name = text(meta.and_then(|m| m.get("name"))).unwrap_or_default();
        if name.is_empty() {
            return Err(shape(format!(
                "{kind_name}: metadata.name: Required value: name is required"
            )));
        }
        let namespace = text(meta.and_then(|m| m.get("namespace"))).filter(|n| !n.is_empty());
        let kind = ResourceKind::by_kind(&kind_name)
            .filter(|k| k.api_version == api_version)
            .ok_or_else(|| ManifestError::UnknownKind {
                name: name.clone(),
                namespace: namespace.clone().unwrap_or_default(),
                source_name: source_name.to_string(),
                kind: kind_name.clone(),
                api_version: api_version.clone(),
            })?;
        out.push(Object {
            index: doc.index,
            line: doc.first_line,
            kind,
            name,
            namespace,
            value,
        });
    }
    Ok(out)
}

/// The namespace an object goes to: the document's, else the command line's,
/// else "default"; cluster-scoped kinds have none. A document namespace that
/// contradicts an explicit `-n` is an error, as in kubectl.
pub fn effective_namespace(obj: &Object, flag: Option<&str>) -> Result<String, String> {
    if !obj.kind.namespaced {
        return Ok(String::new());
    }
    match (obj.namespace.as_deref(), flag) {
        (Some(doc), Some(flag)) if doc != flag => Err(format!(
            "the namespace from the provided object {doc:?} does not match the namespace {flag:?}. \
             You must pass '--namespace={doc}' to perform this operation."
        )),
        (Some(doc), _) => Ok(doc.to_string()),
        (None, Some(flag)) => Ok(flag.to_string()),
        (None, None) => Ok("default".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        // (stream, expected (first_line, text) per document)
        let cases: &[(&str, &[(usize, &str)])] = &[
            ("", &[]),
            ("a: 1\n", &[(1, "a: 1\n")]),
            ("---\na: 1\n", &[(2, "a: 1\n")]),
            ("a: 1\n---\nb: 2\n", &[(1, "a: 1\n"), (3, "b: 2\n")]),
            (
                "a: 1\n---\n---\n# only a comment\n---\nb: 2\n",
                &[(1, "a: 1\n"), (6, "b: 2\n")],
            ),
            (
                "a: 1\n--- # comment\nb: 2\n",
                &[(1, "a: 1\n"), (3, "b: 2\n")],
            ),
            (
                "a: |\n  x\n  ---not a separator\n",
                &[(1, "a: |\n  x\n  ---not a separator\n")],
            ),
            (
                "a: 1\n---   \nb: 2\n...\n",
                &[(1, "a: 1\n"), (3, "b: 2\n...\n")],
            ),
        ];
        for (stream, want) in cases {
            let got: Vec<(usize, String)> = split_documents(stream)
                .into_iter()
                .map(|d| (d.first_line, d.text))
                .collect();
            let want: Vec<(usize, String)> =
                want.iter().map(|(l, t)| (*l, t.to_string())).collect();
            assert_eq!(got, want, "{stream:?}");
        }
        let idx: Vec<usize> = split_documents("a: 1\n---\n---\nb: 2\n")
            .iter()
            .map(|d| d.index)
            .collect();
        assert_eq!(idx, vec![0, 1], "empty documents take no index");
    }

    const DEPLOY: &str =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";

    #[test]
    fn parses_objects() {
        let s = format!(
            "{DEPLOY}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\n"
        );
        let objs = parse_stream(&s, "f.yaml").expect("valid");
        assert_eq!(objs.len(), 2);
        assert_eq!(
            (
                objs[0].kind.kind,
                objs[0].name.as_str(),
                objs[0].namespace.as_deref()
            ),
            ("Deployment", "web", None)
        );
        assert_eq!(
            (
                objs[1].kind.kind,
                objs[1].namespace.as_deref(),
                objs[1].line
            ),
            ("Service", Some("prod"), 8)
        );
        assert_eq!(objs[0].value["spec"]["replicas"], 3);
    }

    #[test]
    fn errors_table() {
        // (stream, fragment the message must contain)
        let cases = [
            (
                format!("{DEPLOY}---\nkind: [unclosed\n"),
                "error parsing f.yaml: document 1 (line 9)",
            ),
            (
                format!("{DEPLOY}---\na: 1\nb: c: d\n"),
                "document 1 (line 9)",
            ),
            ("- 1\n- 2\n".to_string(), "must be a mapping"),
            (
                "kind: Pod\nmetadata: {name: x}\n".to_string(),
                "apiVersion not set",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {}\n".to_string(),
                "name is required",
            ),
            (
                "apiVersion: v1\nkind: Frob\nmetadata: {name: x}\n".to_string(),
                "resource mapping not found for name: \"x\" namespace: \"\" from \"f.yaml\": no matches for kind \"Frob\" in version \"v1\"",
            ),
            (
                "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n".to_string(),
                "no matches for kind \"Deployment\" in version \"v1\"",
            ),
        ];
        for (stream, frag) in cases {
            let e = parse_stream(&stream, "f.yaml")
                .expect_err(&stream)
                .to_string();
            assert!(e.contains(frag), "{stream:?}: {e:?} lacks {frag:?}");
        }
    }

    #[test]
    fn shift_lines_table() {
        let cases = [
            (
                "x at line 2 column 7, while parsing at line 1 column 3",
                10,
                "x at line 12 column 7, while parsing at line 11 column 3",
            ),
            ("no lines here", 5, "no lines here"),
            ("line x", 5, "line x"),
            ("line 0", 0, "line 0"),
        ];
        for (m, off, want) in cases {
            assert_eq!(shift_lines(m, off), want);
        }
    }

    #[test]
    fn namespace_resolution_table() {
        let objs = parse_stream(
            &format!("{DEPLOY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: a, namespace: prod}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: n}}\n"),
            "f",
        )
        .expect("valid");
        let cases = [
            (0, None, Ok("default")),
            (0, Some("x"), Ok("x")),
            (1, None, Ok("prod")),
            (1, Some("prod"), Ok("prod")),
            (1, Some("x"), Err("does not match")),
            (2, Some("x"), Ok("")),
        ];
        for (i, flag, want) in cases {
            let got = effective_namespace(&objs[i], flag);
            match want {
                Ok(ns) => assert_eq!(got.as_deref(), Ok(ns), "{i} {flag:?}"),
                Err(frag) => assert!(got.expect_err("mismatch").contains(frag)),
            }
        }
    }
}
