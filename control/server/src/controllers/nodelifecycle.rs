//! Node lifecycle: a node whose agent stopped posting status gets
//! Ready=Unknown once its last heartbeat is older than the grace period, and
//! the pods bound to it are marked not Ready, so EndpointSlices stop sending
//! traffic to them and the scheduler stops placing pods there. (Eviction of
//! those pods is a later step.)

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::util::{terminating, time};

/// How long a node may stay silent before it is considered lost
/// (Kubernetes' default node-monitor-grace-period).
pub const GRACE: SignedDuration = SignedDuration::from_secs(40);

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write the node's status (Ready=Unknown).
    UpdateNodeStatus(Box<Node>),
    /// Write a pod's status (Ready=False).
    UpdatePodStatus(Box<Pod>),
    /// Look again at this time (when the current heartbeat would expire).
    RequeueAt(Timestamp),
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Decides what to do for one node and the pods bound to it.
pub fn reconcile(node: &Node, pods: &[Pod], now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    // A node that never reported is still registering: nothing to judge yet.
    let Some(ready) = ready_condition(node) else {
        return actions;
    };
    // Without any timestamp there is no age to judge (Kubernetes would start
    // a clock when it first saw the node; a real agent always sends one).
    let Some(last) = ready
        .last_heartbeat_time
        .as_ref()
        .or(ready.last_transition_time.as_ref())
        .map(|t| t.0)
    else {
        return actions;
    };
    let lost = ready.status == "Unknown" || last + GRACE <= now;
    if !lost {
        actions.push(Action::RequeueAt(last + GRACE));
        return actions;
    }
    if ready.status != "Unknown" {
        let mut n = node.clone();
        if let Some(c) = n
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
        {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(time(now));
        }
        actions.push(Action::UpdateNodeStatus(Box::new(n)));
    }
    for p in pods.iter().filter(|p| !terminating(&p.metadata)) {
        let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
        let ready_true =
            conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready_true {
            continue;
        }
        let mut p = p.clone();
        if let Some(cs) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs.retain(|c| c.type_ != "Ready");
            cs.push(PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: Some("NodeNotReady".into()),
                message: Some("the node's agent stopped posting status".into()),
                last_transition_time: Some(time(now)),
                ..Default::default()
            });
        }
        actions.push(Action::UpdatePodStatus(Box::new(p)));
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::super::util::testing::{pod, ts};
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn node(status: &str, heartbeat: i64) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: Some(Time(ts(heartbeat))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::UpdateNodeStatus(n) => {
                    format!(
                        "node {}",
                        ready_condition(n)
                            .map(|c| c.status.clone())
                            .unwrap_or_default()
                    )
                }
                Action::UpdatePodStatus(p) => format!(
                    "pod {} not ready",
                    p.metadata.name.clone().unwrap_or_default()
                ),
                Action::RequeueAt(t) => format!("requeue {}", t.as_second()),
            })
            .collect()
    }

    #[test]
    fn lifecycle_table() {
        let ready_pod = pod("a", &[], Some("10.0.0.1"), Some("n1"), Some(1));
        let unready_pod = pod("b", &[], Some("10.0.0.2"), Some("n1"), None);
        let mut leaving = pod("c", &[], Some("10.0.0.3"), Some("n1"), Some(1));
        leaving.metadata.deletion_timestamp = Some(Time(ts(5)));
        let pods = vec![ready_pod, unready_pod, leaving];
        // (case, node, now, expected)
        let cases: Vec<(&str, Node, i64, Vec<&str>)> = vec![
            (
                "fresh heartbeat",
                node("True", 100),
                120,
                vec!["requeue 140"],
            ),
            (
                "heartbeat expired",
                node("True", 100),
                140,
                vec!["node Unknown", "pod a not ready"],
            ),
            (
                "already unknown: pods still marked",
                node("Unknown", 100),
                500,
                vec!["pod a not ready"],
            ),
            (
                "agent reports NotReady itself: it is alive",
                node("False", 100),
                110,
                vec!["requeue 140"],
            ),
        ];
        for (name, n, now, want) in cases {
            assert_eq!(summary(&reconcile(&n, &pods, ts(now))), want, "{name}");
        }
        let unregistered = Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(reconcile(&unregistered, &pods, ts(1000)).is_empty());
    }
}
