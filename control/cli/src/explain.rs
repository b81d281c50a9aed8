//! `explain KIND[.field.path]`: the fields and types of a kind, read from the
//! k8s-openapi types themselves rather than from a copy of the schema.
//!
//! k8s-openapi's `Deserialize` impls announce each struct with
//! `deserialize_struct(name, FIELDS, ..)`. A probing `Deserializer` walks a
//! field path by feeding each struct one key and stops (with an error) where
//! the path ends, recording what it found: an object and its field names, an
//! array or map of something, or a scalar. No object is ever built.
//!
//! Field descriptions are not available this way: k8s-openapi carries them
//! only behind its `schemars` feature, which would rebuild k8s-openapi (and
//! every crate on it) for the whole workspace; see the CLI's report.

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

/// The shape at `path` of a kind weir serves.
pub fn probe_kind(kind: &str, path: &[String]) -> Result<Shape, String> {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, networking};
    match kind {
        "Namespace" => probe::<core::v1::Namespace>(path),
        "Node" => probe::<core::v1::Node>(path),
        "Pod" => probe::<core::v1::Pod>(path),
        "Service" => probe::<core::v1::Service>(path),
        "Endpoints" => probe::<core::v1::Endpoints>(path),
        "ConfigMap" => probe::<core::v1::ConfigMap>(path),
        "Secret" => probe::<core::v1::Secret>(path),
        "ServiceAccount" => probe::<core::v1::ServiceAccount>(path),
        "Event" => probe::<core::v1::Event>(path),
        "ReplicationController" => probe::<core::v1::ReplicationController>(path),
        "PersistentVolume" => probe::<core::v1::PersistentVolume>(path),
        "PersistentVolumeClaim" => probe::<core::v1::PersistentVolumeClaim>(path),
        "EndpointSlice" => probe::<discovery::v1::EndpointSlice>(path),
        "ReplicaSet" => probe::<apps::v1::ReplicaSet>(path),
        "Deployment" => probe::<apps::v1::Deployment>(path),
        "DaemonSet" => probe::<apps::v1::DaemonSet>(path),
        "StatefulSet" => probe::<apps::v1::StatefulSet>(path),
        "Job" => probe::<batch::v1::Job>(path),
        "CronJob" => probe::<batch::v1::CronJob>(path),
        "NetworkPolicy" => probe::<networking::v1::NetworkPolicy>(path),
        "Ingress" => probe::<networking::v1::Ingress>(path),
        "Lease" => probe::<coordination::v1::Lease>(path),
        other => Err(format!("no schema for kind {other:?}")),
    }
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
    if let Some(last) = path.last() {
        out.push_str(&format!("FIELD: {last} {}\n\n", shape.type_name()));
    }
    if object_fields(&shape).is_some() {
        out.push_str("FIELDS:\n");
        let mut rows = Vec::new();
        field_rows(kind.kind, path, &shape, 1, recursive, &mut rows);
        out.push_str(
            &crate::table::render(&["".to_string(), String::new()], &rows)
                .lines()
                .skip(1)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        );
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
    fn explain_text() {
        let d = weir_api::ResourceKind::by_kind("Deployment").expect("known");
        let t = explain(d, &p("spec.replicas"), false).expect("explains");
        assert!(t.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: replicas <integer>\n"), "{t}");
        let t = explain(d, &p("spec"), false).expect("explains");
        assert!(t.contains("FIELDS:\n"), "{t}");
        assert!(t.contains("  replicas                  <integer>\n"), "{t}");
        assert!(t.contains("  template                  <Object>\n"), "{t}");
        for k in weir_api::KINDS {
            assert!(explain(k, &[], false).is_ok(), "{}", k.kind);
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
