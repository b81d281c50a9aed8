//! The scheduling decision, pure: filter the nodes a pod may run on, score
//! the survivors (fewest pods wins, ties broken by name so the result is
//! deterministic), or explain why no node fits in the scheduler's words
//! ("0/3 nodes are available: ...").

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint, Toleration};

/// Why one node was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    NotReady,
    Unschedulable,
    NoPodCidr,
    SelectorMismatch,
    Taint,
}

impl Reject {
    fn phrase(self) -> &'static str {
        match self {
            Reject::NotReady => "node(s) were not ready",
            Reject::Unschedulable => "node(s) were unschedulable",
            Reject::NoPodCidr => "node(s) had no podCIDR yet",
            Reject::SelectorMismatch => "node(s) didn't match Pod's node affinity/selector",
            Reject::Taint => "node(s) had untolerated taint",
        }
    }
}

/// No node fits: the message for the PodScheduled condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub message: String,
}

/// Checks one node against the pod. The first failing check is reported.
pub fn filter(pod: &Pod, node: &Node) -> Result<(), Reject> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        return Err(Reject::NotReady);
    }
    let spec = node.spec.clone().unwrap_or_default();
    if spec.unschedulable == Some(true) {
        return Err(Reject::Unschedulable);
    }
    let has_cidr = spec.pod_cidr.as_deref().is_some_and(|c| !c.is_empty())
        || spec
            .pod_cidrs
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| !c.is_empty()));
    if !has_cidr {
        // The agent cannot wire pod networking before it has a range.
        return Err(Reject::NoPodCidr);
    }
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let node_labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = pod_spec.node_selector.as_ref()
        && !sel.iter().all(|(k, v)| node_labels.get(k) == Some(v))
    {
        return Err(Reject::SelectorMismatch);
    }
    let tolerations = pod_spec.tolerations.unwrap_or_default();
    let blocking = spec
        .taints
        .iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    for t in blocking {
        if !tolerations.iter().any(|tol| tolerates(tol, t)) {
            return Err(Reject::Taint);
        }
    }
    Ok(())
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect_ok = tol
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match tol.key.as_deref() {
        None | Some("") => tol.operator.as_deref() == Some("Exists"),
        Some(k) => k == taint.key,
    };
    let value_ok = match tol.operator.as_deref() {
        Some("Exists") => true,
        _ => tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    };
    effect_ok && key_ok && value_ok
}

/// Picks a node for `pod`. `pods_per_node` counts the pods already on each
/// node (including ones this scheduler just bound).
pub fn schedule(
    pod: &Pod,
    nodes: &[Node],
    pods_per_node: &BTreeMap<String, usize>,
) -> Result<String, Unschedulable> {
    let mut rejects: BTreeMap<Reject, usize> = BTreeMap::new();
    let mut best: Option<(usize, &str)> = None;
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        match filter(pod, node) {
            Err(r) => *rejects.entry(r).or_default() += 1,
            Ok(()) => {
                let score = (pods_per_node.get(name).copied().unwrap_or(0), name);
                if best.is_none_or(|b| score < b) {
                    best = Some(score);
                }
            }
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => {
            let mut message = format!("0/{} nodes are available", nodes.len());
            if !rejects.is_empty() {
                let parts: Vec<String> = rejects
                    .iter()
                    .map(|(r, n)| format!("{n} {}", r.phrase()))
                    .collect();
                message.push_str(": ");
                message.push_str(&parts.join(", "));
            }
            message.push('.');
            Err(Unschedulable { message })
        }
    }
}

/// Whether this scheduler should place the pod: unbound, not being deleted,
/// not finished, and asking for the default scheduler.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let bound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == "default-scheduler");
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !bound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The PodScheduled=False condition for an unschedulable pod, or None when
/// the pod already carries exactly this condition (no write needed).
pub fn unschedulable_condition(
    pod: &Pod,
    u: &Unschedulable,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<PodCondition> {
    let cur = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    if let Some(c) = cur
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
        && c.message.as_deref() == Some(u.message.as_str())
    {
        return None;
    }
    let transition = match cur {
        Some(c) if c.status == "False" => c.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    Some(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(u.message.clone()),
        last_transition_time: Some(transition),
        last_probe_time: None,
        observed_generation: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    struct N {
        name: &'static str,
        ready: bool,
        unschedulable: bool,
        cidr: bool,
        labels: &'static [(&'static str, &'static str)],
        taint: bool,
    }

    const OK: N = N {
        name: "",
        ready: true,
        unschedulable: false,
        cidr: true,
        labels: &[],
        taint: false,
    };

    fn node(n: N) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(n.name.into()),
                labels: Some(
                    n.labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(n.unschedulable),
                pod_cidr: n.cidr.then(|| "10.244.1.0/24".into()),
                taints: n.taint.then(|| {
                    vec![Taint {
                        key: "dedicated".into(),
                        value: Some("gpu".into()),
                        effect: "NoSchedule".into(),
                        time_added: None,
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if n.ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(selector: &[(&str, &str)], tolerate: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_selector: (!selector.is_empty()).then(|| {
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                tolerations: tolerate.then(|| {
                    vec![Toleration {
                        key: Some("dedicated".into()),
                        operator: Some("Equal".into()),
                        value: Some("gpu".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn filter_table() {
        // (case, node, pod, expected)
        let cases: Vec<(&str, N, Pod, Result<(), Reject>)> = vec![
            (
                "healthy node",
                N { name: "a", ..OK },
                pod(&[], false),
                Ok(()),
            ),
            (
                "not ready",
                N {
                    name: "a",
                    ready: false,
                    ..OK
                },
                pod(&[], false),
                Err(Reject::NotReady),
            ),
            (
                "cordoned",
                N {
                    name: "a",
                    unschedulable: true,
                    ..OK
                },
                pod(&[], false),
                Err(Reject::Unschedulable),
            ),
            (
                "no podCIDR",
                N {
                    name: "a",
                    cidr: false,
                    ..OK
                },
                pod(&[], false),
                Err(Reject::NoPodCidr),
            ),
            (
                "selector matches",
                N {
                    name: "a",
                    labels: &[("disk", "ssd")],
                    ..OK
                },
                pod(&[("disk", "ssd")], false),
                Ok(()),
            ),
            (
                "selector mismatch",
                N {
                    name: "a",
                    labels: &[("disk", "hdd")],
                    ..OK
                },
                pod(&[("disk", "ssd")], false),
                Err(Reject::SelectorMismatch),
            ),
            (
                "untolerated taint",
                N {
                    name: "a",
                    taint: true,
                    ..OK
                },
                pod(&[], false),
                Err(Reject::Taint),
            ),
            (
                "tolerated taint",
                N {
                    name: "a",
                    taint: true,
                    ..OK
                },
                pod(&[], true),
                Ok(()),
            ),
        ];
        for (name, n, p, want) in cases {
            assert_eq!(filter(&p, &node(n)), want, "{name}");
        }
    }

    #[test]
    fn schedule_table() {
        let counts = |c: &[(&str, usize)]| {
            c.iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<BTreeMap<_, _>>()
        };
        // (case, nodes, pod counts, expected node or error message)
        type Case<'a> = (
            &'a str,
            Vec<N>,
            BTreeMap<String, usize>,
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "fewest pods wins",
                vec![N { name: "a", ..OK }, N { name: "b", ..OK }],
                counts(&[("a", 3), ("b", 1)]),
                Ok("b"),
            ),
            (
                "tie broken by name",
                vec![N { name: "b", ..OK }, N { name: "a", ..OK }],
                counts(&[]),
                Ok("a"),
            ),
            (
                "filtered node skipped",
                vec![
                    N {
                        name: "a",
                        ready: false,
                        ..OK
                    },
                    N { name: "b", ..OK },
                ],
                counts(&[("b", 9)]),
                Ok("b"),
            ),
            (
                "no nodes",
                vec![],
                counts(&[]),
                Err("0/0 nodes are available."),
            ),
            (
                "nothing fits",
                vec![
                    N {
                        name: "a",
                        ready: false,
                        ..OK
                    },
                    N {
                        name: "b",
                        unschedulable: true,
                        ..OK
                    },
                    N {
                        name: "c",
                        ready: false,
                        ..OK
                    },
                ],
                counts(&[]),
                Err(
                    "0/3 nodes are available: 2 node(s) were not ready, 1 node(s) were unschedulable.",
                ),
            ),
        ];
        for (name, nodes, c, want) in cases {
            let nodes: Vec<Node> = nodes.into_iter().map(node).collect();
            let got = schedule(&pod(&[], false), &nodes, &c);
            assert_eq!(
                got.as_deref().map_err(|u| u.message.as_str()),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn wants_scheduling_table() {
        let mut bound = pod(&[], false);
        bound.spec.as_mut().unwrap().node_name = Some("a".into());
        let mut other = pod(&[], false);
        other.spec.as_mut().unwrap().scheduler_name = Some("custom".into());
        let mut deleting = pod(&[], false);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let cases = [
            ("unbound", pod(&[], false), true),
            ("bound", bound, false),
            ("other scheduler", other, false),
            ("deleting", deleting, false),
        ];
        for (name, p, want) in cases {
            assert_eq!(wants_scheduling(&p), want, "{name}");
        }
    }

    #[test]
    fn condition_written_once() {
        let u = Unschedulable {
            message: "0/1 nodes are available.".into(),
        };
        let now = Time(Timestamp::UNIX_EPOCH);
        let mut p = pod(&[], false);
        let c = unschedulable_condition(&p, &u, now.clone()).expect("first time: write");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("Unschedulable"))
        );
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![c]),
            ..Default::default()
        });
        assert!(
            unschedulable_condition(&p, &u, now).is_none(),
            "same condition: no write"
        );
    }
}
