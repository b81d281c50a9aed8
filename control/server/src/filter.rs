//! List/watch filters: namespace, label selector and field selector.
//!
//! Field selectors support the fields clients of this cluster need, with
//! Kubernetes' syntax (`a=b`, `a==b`, `a!=b`, comma-separated, all must hold):
//! `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`,
//! and for Events (what `describe` asks) `involvedObject.{kind,name,namespace,uid}`,
//! `reason` and `type`.
//! A missing field compares as the empty string, so `spec.nodeName=` selects
//! unscheduled pods, as in Kubernetes.

use std::collections::BTreeMap;

use weir_api::selector::Selector;

use crate::error::ApiError;
use crate::object::ApiObject;

/// A field a selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
    NodeName,
    Phase,
    InvolvedKind,
    InvolvedName,
    InvolvedNamespace,
    InvolvedUid,
    Reason,
    Type,
}

impl Field {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "metadata.name" => Field::Name,
            "metadata.namespace" => Field::Namespace,
            "spec.nodeName" => Field::NodeName,
            "status.phase" => Field::Phase,
            "involvedObject.kind" => Field::InvolvedKind,
            "involvedObject.name" => Field::InvolvedName,
            "involvedObject.namespace" => Field::InvolvedNamespace,
            "involvedObject.uid" => Field::InvolvedUid,
            "reason" => Field::Reason,
            "type" => Field::Type,
            _ => return None,
        })
    }

    fn value<'a>(&self, obj: &'a ApiObject) -> &'a str {
        match self {
            Field::Name => obj.name(),
            Field::Namespace => obj.namespace(),
            Field::NodeName => obj.str_at(&["spec", "nodeName"]).unwrap_or_default(),
            Field::Phase => obj.str_at(&["status", "phase"]).unwrap_or_default(),
            Field::InvolvedKind => obj.str_at(&["involvedObject", "kind"]).unwrap_or_default(),
            Field::InvolvedName => obj.str_at(&["involvedObject", "name"]).unwrap_or_default(),
            Field::InvolvedNamespace => obj
                .str_at(&["involvedObject", "namespace"])
                .unwrap_or_default(),
            Field::InvolvedUid => obj.str_at(&["involvedObject", "uid"]).unwrap_or_default(),
            Field::Reason => obj.str_at(&["reason"]).unwrap_or_default(),
            Field::Type => obj.str_at(&["type"]).unwrap_or_default(),
        }
    }
}

/// What of `obj` any filter can look at: name, namespace, labels and the
/// selectable fields above. Watch events keep this instead of the whole
/// object in memory (the full JSON is kept encoded).
pub fn project(obj: ApiObject) -> ApiObject {
    let mut body = serde_json::Map::new();
    let mut keep = |path: &[&str]| {
        if let Some(v) = obj.str_at(path) {
            let mut node = &mut body;
            for p in &path[..path.len() - 1] {
                let next = node
                    .entry(p.to_string())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                let serde_json::Value::Object(m) = next else {
                    return;
                };
                node = m;
            }
            node.insert(path[path.len() - 1].to_string(), v.into());
        }
    };
    for path in [
        &["spec", "nodeName"][..],
        &["status", "phase"],
        &["involvedObject", "kind"],
        &["involvedObject", "name"],
        &["involvedObject", "namespace"],
        &["involvedObject", "uid"],
        &["reason"],
        &["type"],
    ] {
        keep(path);
    }
    let m = obj.metadata;
    ApiObject {
        api_version: obj.api_version,
        kind: obj.kind,
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            labels: m.labels,
            ..Default::default()
        },
        body,
    }
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: Field,
    pub equal: bool,
    pub value: String,
}

/// Why a field selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    #[error(
        "invalid field selector term {0:?}: expected field=value, field==value or field!=value"
    )]
    Malformed(String),
}

/// A parsed field selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<Self, FieldSelectorError> {
        let mut requirements = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(FieldSelectorError::Malformed(term.to_string()));
            };
            let field = field.trim();
            let field = Field::parse(field)
                .ok_or_else(|| FieldSelectorError::UnsupportedField(field.to_string()))?;
            requirements.push(FieldRequirement {
                field,
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(Self { requirements })
    }

    pub fn matches(&self, obj: &ApiObject) -> bool {
        self.requirements
            .iter()
            .all(|r| (r.field.value(obj) == r.value) == r.equal)
    }
}

/// Everything a list or watch filters on.
#[derive(Debug, Clone)]
pub struct Filter {
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    /// Parses the selectors of a request.
    pub fn parse(label_selector: &str, field_selector: &str) -> Result<Self, ApiError> {
        let labels = Selector::parse(label_selector)
            .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(field_selector)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    /// Selects everything (no label and no field requirement).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.requirements.is_empty()
    }

    pub fn matches(&self, obj: &ApiObject) -> bool {
        let empty = BTreeMap::new();
        self.labels
            .matches(obj.metadata.labels.as_ref().unwrap_or(&empty))
            && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, app: &str) -> ApiObject {
        let mut v = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {}, "status": {"phase": phase}
        });
        if let Some(n) = node {
            v["spec"]["nodeName"] = n.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn field_selector_table() {
        let bound = pod("a", Some("node1"), "Running", "web");
        let unbound = pod("b", None, "Pending", "web");
        let cases: &[(&str, bool, bool)] = &[
            // selector, matches bound, matches unbound
            ("", true, true),
            ("spec.nodeName=node1", true, false),
            ("spec.nodeName==node1", true, false),
            ("spec.nodeName=", false, true),
            ("spec.nodeName!=", true, false),
            ("status.phase!=Running,status.phase!=Succeeded", false, true),
            ("metadata.name=a", true, false),
            ("metadata.namespace=default, metadata.name=b", false, true),
        ];
        for (sel, want_bound, want_unbound) in cases {
            let s = FieldSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&bound), *want_bound, "{sel} on bound");
            assert_eq!(s.matches(&unbound), *want_unbound, "{sel} on unbound");
        }
    }

    #[test]
    fn event_fields_select_what_describe_asks_for() {
        let ev: ApiObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.0123456789abcdef", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"},
            "reason": "Scheduled", "type": "Normal"
        }))
        .unwrap();
        let cases = [
            (
                "involvedObject.name=web-1,involvedObject.namespace=default",
                true,
            ),
            ("involvedObject.kind=Pod,involvedObject.uid=u1", true),
            ("involvedObject.name=web-2", false),
            ("reason=Scheduled,type!=Warning", true),
            ("type=Warning", false),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&ev),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn projection_keeps_what_filters_read() {
        let full = pod("a", Some("node1"), "Running", "web");
        let p = project(full.clone());
        for sel in [
            ("app=web", "spec.nodeName=node1,status.phase=Running"),
            ("app!=web", ""),
            ("", "metadata.name=a,metadata.namespace=default"),
        ] {
            let f = Filter::parse(sel.0, sel.1).unwrap();
            assert_eq!(f.matches(&p), f.matches(&full), "{sel:?}");
        }
        assert!(
            p.body
                .get("spec")
                .and_then(|s| s.get("containers"))
                .is_none()
        );
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.foo=x"),
            Err(FieldSelectorError::UnsupportedField("spec.foo".into()))
        );
        assert_eq!(
            FieldSelector::parse("nonsense"),
            Err(FieldSelectorError::Malformed("nonsense".into()))
        );
        assert_eq!(
            FieldSelectorError::UnsupportedField("x".into()).to_string(),
            "field label not supported: x"
        );
    }

    #[test]
    fn filter_combines_labels_and_fields() {
        let f = Filter::parse("app=web", "spec.nodeName=node1").unwrap();
        assert!(f.matches(&pod("a", Some("node1"), "Running", "web")));
        assert!(!f.matches(&pod("a", Some("node1"), "Running", "db")));
        assert!(!f.matches(&pod("a", Some("node2"), "Running", "web")));
        assert!(matches!(
            Filter::parse("app in (", ""),
            Err(ApiError::BadRequest(_))
        ));
    }
}
