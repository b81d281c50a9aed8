//! Which nodes a pod template may run on, as the DaemonSet controller judges
//! it: `nodeSelector`, the required node-affinity terms (label expressions and
//! `metadata.name` fields), and taints against tolerations. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

/// Whether the node's labels and name satisfy the pod's `nodeSelector` and
/// its `requiredDuringSchedulingIgnoredDuringExecution` node affinity.
pub fn selects(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|r| node_selector_matches(r, &labels, name))
}

/// A NodeSelector: its terms are ORed; a term's requirements are ANDed; an
/// empty term matches nothing (Kubernetes' rule).
pub fn node_selector_matches(
    sel: &NodeSelector,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|t| term_matches(t, labels, name))
}

fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // metadata.name is the only field selector Kubernetes supports here.
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(name))
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|s| number(s)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether `tol` tolerates `taint` (Kubernetes' ToleratesTaint).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect_ok = tol
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let op = tol.operator.as_deref().unwrap_or("Equal");
    let key_ok = match tol.key.as_deref() {
        None | Some("") => op == "Exists",
        Some(k) => k == taint.key,
    };
    let value_ok = match op {
        "Exists" => true,
        "Equal" | "" => {
            tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    };
    effect_ok && key_ok && value_ok
}

/// The node's taints with `effect` that none of `tolerations` tolerates.
pub fn untolerated<'a>(
    node: &'a Node,
    tolerations: &'a [Toleration],
    effect: &'a str,
) -> impl Iterator<Item = &'a Taint> + 'a {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(move |t| t.effect == effect && !tolerations.iter().any(|tol| tolerates(tol, t)))
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::string_map;
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(string_map(labels)),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: None,
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_terms(terms: Vec<NodeSelectorTerm>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exprs(r: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(r),
            match_fields: None,
        }
    }

    #[test]
    fn selection_table() {
        let n = node("n1", &[("disk", "ssd"), ("cores", "8")]);
        let name_is = |v: &str| NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &[v])]),
        };
        let cases: Vec<(&str, PodSpec, bool)> = vec![
            ("nothing asked", PodSpec::default(), true),
            (
                "nodeSelector match",
                PodSpec {
                    node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
                    ..Default::default()
                },
                true,
            ),
            (
                "nodeSelector mismatch",
                PodSpec {
                    node_selector: Some(BTreeMap::from([("disk".into(), "hdd".into())])),
                    ..Default::default()
                },
                false,
            ),
            (
                "In",
                with_terms(vec![exprs(vec![req("disk", "In", &["ssd", "nvme"])])]),
                true,
            ),
            (
                "NotIn",
                with_terms(vec![exprs(vec![req("disk", "NotIn", &["ssd"])])]),
                false,
            ),
            (
                "NotIn absent key",
                with_terms(vec![exprs(vec![req("gpu", "NotIn", &["a"])])]),
                true,
            ),
            (
                "Exists",
                with_terms(vec![exprs(vec![req("disk", "Exists", &[])])]),
                true,
            ),
            (
                "DoesNotExist",
                with_terms(vec![exprs(vec![req("disk", "DoesNotExist", &[])])]),
                false,
            ),
            (
                "Gt",
                with_terms(vec![exprs(vec![req("cores", "Gt", &["4"])])]),
                true,
            ),
            (
                "Lt",
                with_terms(vec![exprs(vec![req("cores", "Lt", &["4"])])]),
                false,
            ),
            (
                "Gt not a number",
                with_terms(vec![exprs(vec![req("disk", "Gt", &["4"])])]),
                false,
            ),
            (
                "requirements ANDed",
                with_terms(vec![exprs(vec![
                    req("disk", "In", &["ssd"]),
                    req("cores", "In", &["16"]),
                ])]),
                false,
            ),
            (
                "terms ORed",
                with_terms(vec![
                    exprs(vec![req("disk", "In", &["hdd"])]),
                    exprs(vec![req("cores", "In", &["8"])]),
                ]),
                true,
            ),
            (
                "empty term matches nothing",
                with_terms(vec![exprs(vec![])]),
                false,
            ),
            ("no terms matches nothing", with_terms(vec![]), false),
            ("metadata.name field", with_terms(vec![name_is("n1")]), true),
            ("other node's name", with_terms(vec![name_is("n2")]), false),
        ];
        for (what, spec, want) in cases {
            assert_eq!(selects(&spec, &n), want, "{what}");
        }
    }

    #[test]
    fn toleration_table() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    toleration_seconds: None,
                }
            };
        let cases = [
            (
                "equal",
                tol(Some("dedicated"), None, Some("gpu"), None),
                true,
            ),
            (
                "wrong value",
                tol(Some("dedicated"), Some("Equal"), Some("cpu"), None),
                false,
            ),
            (
                "exists key",
                tol(Some("dedicated"), Some("Exists"), None, None),
                true,
            ),
            (
                "exists everything",
                tol(None, Some("Exists"), None, None),
                true,
            ),
            (
                "empty key needs Exists",
                tol(None, None, Some("gpu"), None),
                false,
            ),
            (
                "effect matches",
                tol(Some("dedicated"), Some("Exists"), None, Some("NoSchedule")),
                true,
            ),
            (
                "other effect",
                tol(Some("dedicated"), Some("Exists"), None, Some("NoExecute")),
                false,
            ),
            (
                "other key",
                tol(Some("zone"), Some("Exists"), None, None),
                false,
            ),
        ];
        for (what, t, want) in cases {
            assert_eq!(tolerates(&t, &taint), want, "{what}");
        }
    }
}
