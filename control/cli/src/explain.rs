//! `explain KIND[.field.path]`: the fields, types and descriptions of a
//! kind, read from the k8s-openapi types themselves rather than from a copy
//! of the schema.
//!
//! k8s-openapi's `Deserialize` impls announce each struct with
//! `deserialize_struct(name, FIELDS, ..)`. A probing `Deserializer` walks a
//! field path by feeding each struct one key and stops (with an error) where
//! the path ends, recording what it found: an object and its field names, an
//! array or map of something, or a scalar. No object is ever built.
//!
//! Descriptions and required fields come from k8s-openapi's `JsonSchema`
//! impls (its `schemars` feature), which carry the API's OpenAPI field
//! documentation: the same path is walked through the generated JSON Schema
//! (`$ref`s resolved, arrays and maps stepped through as kubectl does).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// What sits at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Object {
        name: String,
        fields: Vec<&'static str>,
    },
    Array(Box<Shape>),
    Map(Box<Shape>),
    Scalar(&'static str),
}

impl Shape {
    /// kubectl's type notation: `<Object>`, `<[]string>`, `<map[string]string>`.
    pub fn type_name(&self) -> String {
        fn inner(s: &Shape) -> String {
            match s {
                Shape::Object { .. } => "Object".into(),
                Shape::Array(e) => format!("[]{}", inner(e)),
                Shape::Map(v) => format!("map[string]{}", inner(v)),
                Shape::Scalar(t) => (*t).into(),
            }
        }
        format!("<{}>", inner(self))
    }
}

/// Ends a probe: either the path ended (the finding is in the cell) or the
/// path named a field that does not exist.
#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Stop(msg.to_string())
    }
}

type Cell = RefCell<Option<Result<Shape, String>>>;

struct Probe<'a> {
    path: &'a [String],
    out: &'a Cell,
}

impl<'a> Probe<'a> {
    fn found(self, s: Shape) -> Stop {
        *self.out.borrow_mut() = Some(if self.path.is_empty() {
            Ok(s)
        } else {
            Err(format!("field {:?} does not exist", self.path[0]))
        });
        Stop("found".into())
    }

    /// Probes the element (or map value) type with an empty path.
    fn element<'de, V: Visitor<'de>>(
        &self,
        visit: impl FnOnce(Probe<'_>) -> Result<V::Value, Stop>,
    ) -> Shape {
        let cell: Cell = RefCell::new(None);
        let _ = visit(Probe {
            path: &[],
            out: &cell,
        });
        match cell.into_inner() {
            Some(Ok(s)) => s,
            _ => Shape::Scalar("any"),
        }
    }
}

/// One element (or one map entry) handed to a visitor, deserialized by a probe.
struct One<'a> {
    key: Option<&'a str>,
    probe: Option<Probe<'a>>,
}

impl<'de> de::SeqAccess<'de> for One<'_> {
    type Error = Stop;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.probe.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de> de::MapAccess<'de> for One<'_> {
    type Error = Stop;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(k) => seed.deserialize(k.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        match self.probe.take() {
            Some(p) => seed.deserialize(p),
            None => Err(Stop("no value".into())),
        }
    }
}

macro_rules! scalar {
    ($($m:ident => $t:literal),* $(,)?) => {
        $(fn $m<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(self.found(Shape::Scalar($t)))
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    scalar! {
        deserialize_bool => "boolean",
        deserialize_i8 => "integer", deserialize_i16 => "integer", deserialize_i32 => "integer",
        deserialize_i64 => "integer", deserialize_u8 => "integer", deserialize_u16 => "integer",
        deserialize_u32 => "integer", deserialize_u64 => "integer",
        deserialize_f32 => "number", deserialize_f64 => "number",
        deserialize_char => "string", deserialize_str => "string", deserialize_string => "string",
        deserialize_bytes => "string", deserialize_byte_buf => "string",
        deserialize_unit => "any", deserialize_identifier => "string", deserialize_ignored_any => "any",
    }

    /// Untyped values; IntOrString is the one our kinds have, and its
    /// visitor says so in `expecting`.
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        let expecting = format!("{}", &v as &dyn de::Expected);
        let t = if expecting == "IntOrString" {
            "IntOrString"
        } else {
            "any"
        };
        Err(self.found(Shape::Scalar(t)))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(self.found(Shape::Scalar("any")))
    }

    /// Quantity is a newtype over a string with its own name in kubectl.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        if name == "Quantity" {
            return Err(self.found(Shape::Scalar("Quantity")));
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        if self.path.is_empty() {
            let e = self.element::<V>(|p| {
                v.visit_seq(One {
                    key: None,
                    probe: Some(p),
                })
            });
            return Err(self.found(Shape::Array(Box::new(e))));
        }
        // kubectl explain walks through arrays: containers.image.
        let probe = Probe {
            path: self.path,
            out: self.out,
        };
        v.visit_seq(One {
            key: None,
            probe: Some(probe),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Stop> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        if self.path.is_empty() {
            let e = self.element::<V>(|p| {
                v.visit_map(One {
                    key: Some("key"),
                    probe: Some(p),
                })
            });
            return Err(self.found(Shape::Map(Box::new(e))));
        }
        let probe = Probe {
            path: self.path,
            out: self.out,
        };
        v.visit_map(One {
            key: Some("key"),
            probe: Some(probe),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(self.found(Shape::Object {
                name: name.into(),
                fields: fields.to_vec(),
            }));
        };
        if !fields.contains(&first.as_str()) {
            *self.out.borrow_mut() = Some(Err(format!("field {first:?} does not exist")));
            return Err(Stop("no such field".into()));
        }
        v.visit_map(One {
            key: Some(first),
            probe: Some(Probe {
                path: rest,
                out: self.out,
            }),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(self.found(Shape::Scalar("string")))
    }
}

/// The shape at `path` inside `T`.
pub fn probe<T: DeserializeOwned>(path: &[String]) -> Result<Shape, String> {
    let cell: Cell = RefCell::new(None);
    let r = T::deserialize(Probe { path, out: &cell });
    match (cell.into_inner(), r) {
        (Some(found), _) => found,
        (None, Ok(_)) => Err("the type deserialized without a struct".into()),
        (None, Err(e)) => Err(e.0),
    }
}

/// Calls the generic `$f::<T>(args)` with `T` the k8s-openapi type of
/// `$kind`; `None` for a kind weir does not serve.
macro_rules! by_kind {
    ($kind:expr, $f:ident ( $($arg:expr),* )) => {{
        use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking};
        match $kind {
            "Namespace" => Some($f::<core::v1::Namespace>($($arg),*)),
            "Node" => Some($f::<core::v1::Node>($($arg),*)),
            "Pod" => Some($f::<core::v1::Pod>($($arg),*)),
            "Service" => Some($f::<core::v1::Service>($($arg),*)),
            "Endpoints" => Some($f::<core::v1::Endpoints>($($arg),*)),
            "ConfigMap" => Some($f::<core::v1::ConfigMap>($($arg),*)),
            "Secret" => Some($f::<core::v1::Secret>($($arg),*)),
            "ServiceAccount" => Some($f::<core::v1::ServiceAccount>($($arg),*)),
            "Event" => Some($f::<core::v1::Event>($($arg),*)),
            "ReplicationController" => Some($f::<core::v1::ReplicationController>($($arg),*)),
            "PersistentVolume" => Some($f::<core::v1::PersistentVolume>($($arg),*)),
            "PersistentVolumeClaim" => Some($f::<core::v1::PersistentVolumeClaim>($($arg),*)),
            "EndpointSlice" => Some($f::<discovery::v1::EndpointSlice>($($arg),*)),
            "ReplicaSet" => Some($f::<apps::v1::ReplicaSet>($($arg),*)),
            "Deployment" => Some($f::<apps::v1::Deployment>($($arg),*)),
            "DaemonSet" => Some($f::<apps::v1::DaemonSet>($($arg),*)),
            "StatefulSet" => Some($f::<apps::v1::StatefulSet>($($arg),*)),
            "ControllerRevision" => Some($f::<apps::v1::ControllerRevision>($($arg),*)),
            "Job" => Some($f::<batch::v1::Job>($($arg),*)),
            "CronJob" => Some($f::<batch::v1::CronJob>($($arg),*)),
            "NetworkPolicy" => Some($f::<networking::v1::NetworkPolicy>($($arg),*)),
            "Ingress" => Some($f::<networking::v1::Ingress>($($arg),*)),
            "Lease" => Some($f::<coordination::v1::Lease>($($arg),*)),
            _ => None,
        }
    }};
}

/// The shape at `path` of a kind weir serves.
pub fn probe_kind(kind: &str, path: &[String]) -> Result<Shape, String> {
    by_kind!(kind, probe(path)).unwrap_or_else(|| Err(format!("no schema for kind {kind:?}")))
}

/// The JSON Schema of `T`, with its definitions under `$defs`.
fn root_schema<T: schemars::JsonSchema>() -> serde_json::Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or_default()
}

/// The JSON Schema of a kind weir serves.
fn schema_kind(kind: &str) -> Option<serde_json::Value> {
    by_kind!(kind, root_schema())
}

/// Follows `$ref`s (and a lone `allOf`) to the schema they name.
fn resolve<'a>(root: &'a serde_json::Value, mut s: &'a serde_json::Value) -> &'a serde_json::Value {
    for _ in 0..MAX_DEPTH {
        if let Some(r) = s.get("$ref").and_then(serde_json::Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(t) => s = t,
                None => break,
            }
        } else if let Some([only]) = s.get("allOf").and_then(|a| a.as_array()).map(Vec::as_slice) {
            s = only;
        } else {
            break;
        }
    }
    s
}

/// The schema of the objects an array or map holds (kubectl's paths step
/// through both), or `s` itself.
fn element<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
    let mut s = resolve(root, s);
    for _ in 0..MAX_DEPTH {
        match (s.get("items"), s.get("additionalProperties")) {
            (Some(items), _) => s = resolve(root, items),
            (None, Some(values)) if values.is_object() => s = resolve(root, values),
            _ => break,
        }
    }
    s
}

/// The property schema at `path` (the root for an empty path).
fn schema_at<'a>(root: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    let mut s = root;
    for f in path {
        s = element(root, s).get("properties")?.get(f)?;
    }
    Some(s)
}

/// A property's description: its own (the field's), else its type's.
fn description<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> Option<&'a str> {
    s.get("description")
        .or_else(|| resolve(root, s).get("description"))
        .and_then(serde_json::Value::as_str)
}

/// The required field names of the object(s) at `s`.
fn required<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> Vec<&'a str> {
    element(root, s)
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

/// `text` wrapped at 80 columns, every line indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && indent + line.len() + 1 + word.len() > 80 {
                out.push_str(&format!("{}{line}\n", " ".repeat(indent)));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&format!("{}{line}\n", " ".repeat(indent)));
    }
    out
}

/// kubectl-like `explain` text for `KIND[.field.path]`.
/// The fields of an object, or of the objects in an array or map.
fn object_fields(shape: &Shape) -> Option<&[&'static str]> {
    match shape {
        Shape::Object { fields, .. } => Some(fields),
        Shape::Array(e) | Shape::Map(e) => object_fields(e),
        Shape::Scalar(_) => None,
    }
}

/// Deep enough for every kind weir serves; stops a self-referential type.
const MAX_DEPTH: usize = 16;

/// One row per field of `shape` (at `path`), indented by depth; with
/// `recursive`, each object field's own fields below it (`--recursive`).
fn field_rows(
    kind: &str,
    path: &[String],
    shape: &Shape,
    depth: usize,
    recursive: bool,
    rows: &mut Vec<Vec<String>>,
) {
    let Some(fields) = object_fields(shape) else {
        return;
    };
    for f in fields {
        let mut p = path.to_vec();
        p.push((*f).to_string());
        let sub = probe_kind(kind, &p);
        let t = sub
            .as_ref()
            .map(Shape::type_name)
            .unwrap_or_else(|_| "<unknown>".into());
        rows.push(vec![format!("{}{f}", "  ".repeat(depth)), t]);
        if let (true, Ok(sub)) = (recursive && depth < MAX_DEPTH, sub) {
            field_rows(kind, &p, &sub, depth + 1, recursive, rows);
        }
    }
}

pub fn explain(
    kind: &weir_api::ResourceKind,
    path: &[String],
    recursive: bool,
) -> Result<String, String> {
    let shape = probe_kind(kind.kind, path).map_err(|m| {
        format!(
            "field {:?} does not exist in {}: {m}",
            path.join("."),
            kind.kind
        )
    })?;
    let (group, version) = match kind.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", kind.api_version),
    };
    let mut out = String::new();
    if !group.is_empty() {
        out.push_str(&format!("GROUP:      {group}\n"));
    }
    out.push_str(&format!(
        "KIND:       {}\nVERSION:    {version}\n\n",
        kind.kind
    ));
    let schema = schema_kind(kind.kind).unwrap_or_default();
    let here = schema_at(&schema, path);
    if let Some(last) = path.last() {
        out.push_str(&format!("FIELD: {last} {}\n\n", shape.type_name()));
    }
    if let Some(d) = here.and_then(|h| description(&schema, h)) {
        out.push_str(&format!("DESCRIPTION:\n{}\n", wrap(d, 4)));
    }
    let Some(fields) = object_fields(&shape) else {
        return Ok(out);
    };
    out.push_str("FIELDS:\n");
    if recursive {
        // kubectl --recursive: names and types only, as a tree.
        let mut rows = Vec::new();
        field_rows(kind.kind, path, &shape, 1, recursive, &mut rows);
        out.push_str(
            &crate::table::render(&["".to_string(), String::new()], &rows)
                .lines()
                .skip(1)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        );
        return Ok(out);
    }
    let required = here.map(|h| required(&schema, h)).unwrap_or_default();
    for f in fields {
        let mut p = path.to_vec();
        p.push((*f).to_string());
        let t = probe_kind(kind.kind, &p)
            .map(|s| s.type_name())
            .unwrap_or_else(|_| "<unknown>".into());
        let req = if required.contains(f) {
            " -required-"
        } else {
            ""
        };
        out.push_str(&format!("  {f}\t{t}{req}\n"));
        if let Some(d) = schema_at(&schema, &p).and_then(|s| description(&schema, s)) {
            out.push_str(&wrap(d, 4));
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn p(s: &str) -> Vec<String> {
        s.split('.')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn probe_table() {
        let top = probe::<Deployment>(&[]).expect("found");
        assert!(
            matches!(&top, Shape::Object { name, .. } if name == "Deployment"),
            "{top:?}"
        );
        let Shape::Object { fields, .. } = &top else {
            unreachable!()
        };
        assert_eq!(
            fields,
            &["apiVersion", "kind", "metadata", "spec", "status"]
        );
        let cases = [
            ("spec.replicas", "<integer>"),
            ("spec.paused", "<boolean>"),
            ("kind", "<string>"),
            ("spec.template.spec.containers", "<[]Object>"),
            ("spec.template.spec.containers.image", "<string>"),
            ("spec.template.spec.containers.args", "<[]string>"),
            ("metadata.labels", "<map[string]string>"),
            (
                "spec.template.spec.containers.ports.containerPort",
                "<integer>",
            ),
            (
                "spec.template.spec.containers.resources.limits",
                "<map[string]Quantity>",
            ),
            ("spec.strategy.rollingUpdate.maxSurge", "<IntOrString>"),
            ("metadata.creationTimestamp", "<string>"),
        ];
        for (path, want) in cases {
            assert_eq!(
                probe::<Deployment>(&p(path)).map(|s| s.type_name()),
                Ok(want.to_string()),
                "{path}"
            );
        }
        assert!(
            probe::<Deployment>(&p("spec.nope"))
                .expect_err("missing")
                .contains("nope")
        );
        assert!(
            probe::<Deployment>(&p("spec.replicas.x")).is_err(),
            "a scalar has no fields"
        );
    }

    #[test]
    fn wrap_at_80_columns() {
        let text = "word ".repeat(40);
        let w = wrap(text.trim(), 4);
        assert!(w.lines().count() > 1, "{w}");
        assert!(
            w.lines().all(|l| l.starts_with("    ") && l.len() <= 80),
            "{w}"
        );
        assert_eq!(w.split_whitespace().count(), 40);
        // Paragraphs stay paragraphs.
        assert_eq!(wrap("a\nb", 2), "  a\n  b\n");
    }

    #[test]
    fn explain_text() {
        let d = weir_api::ResourceKind::by_kind("Deployment").expect("known");
        let t = explain(d, &p("spec.replicas"), false).expect("explains");
        assert!(t.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: replicas <integer>\n"), "{t}");
        assert!(
            t.contains("\n\nDESCRIPTION:\n    Number of desired pods. This is a pointer"),
            "{t}"
        );
        let t = explain(d, &p("spec"), false).expect("explains");
        assert!(t.contains("FIELDS:\n"), "{t}");
        assert!(
            t.contains("  replicas\t<integer>\n    Number of desired pods."),
            "{t}"
        );
        // DeploymentSpec requires selector and template.
        assert!(
            t.contains("  template\t<Object> -required-\n    Template describes"),
            "{t}"
        );
        assert!(t.contains("  selector\t<Object> -required-\n"), "{t}");
        assert!(!t.contains("  paused\t<boolean> -required-"), "{t}");
        // Through an array: a container's name is required.
        let pod = weir_api::ResourceKind::by_kind("Pod").expect("known");
        let t = explain(pod, &p("spec.containers"), false).expect("explains");
        assert!(
            t.contains("FIELD: containers <[]Object>\n\nDESCRIPTION:\n    List of containers"),
            "{t}"
        );
        assert!(t.contains("  name\t<string> -required-\n"), "{t}");
        for k in weir_api::KINDS {
            let t = explain(k, &[], false).expect(k.kind);
            assert!(t.contains("DESCRIPTION:\n    "), "{}: {t}", k.kind);
            assert!(
                t.lines()
                    .all(|l| l.len() <= 80 || !l.contains(' ') || l.starts_with("  ")),
                "{t}"
            );
        }
        assert!(explain(d, &p("spec.bogus"), false).is_err());
        let r = explain(d, &p("spec.strategy"), true).expect("explains");
        assert!(
            r.contains("  rollingUpdate      <Object>\n    maxSurge         <IntOrString>\n"),
            "{r}"
        );
        // Every kind's whole tree renders (and terminates).
        for k in weir_api::KINDS {
            assert!(
                explain(k, &[], true).is_ok_and(|t| t.lines().count() > 5),
                "{}",
                k.kind
            );
        }
    }
}
