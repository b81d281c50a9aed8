//! A Job's pod failure policy and success policy (Kubernetes v1.33 rules),
//! pure: a failed pod against `spec.podFailurePolicy`, the completed
//! indexes against `spec.successPolicy`.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, SuccessPolicy,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use weir_api::validation::{index_set, parse_indexes};

/// What a matching rule does with a failed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// The Job fails at once; its running pods are terminated.
    FailJob,
    /// The pod's index fails and is not retried (needs backoffLimitPerIndex).
    FailIndex,
    /// Not counted against backoffLimit; a replacement is created.
    Ignore,
    /// Counted against backoffLimit (also what happens when no rule matches).
    Count,
}

/// The first rule that matches a failed pod: its action, and for FailJob
/// the Job condition's message (Kubernetes' `matchPodFailurePolicy`). Rules
/// with an action this version does not know are skipped. None: no rule
/// matched (the failure counts).
pub fn match_pod_failure_policy(
    policy: &PodFailurePolicy,
    pod: &Pod,
) -> Option<(FailureAction, Option<String>)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    for (i, rule) in policy.rules.iter().enumerate() {
        let action = match rule.action.as_str() {
            "FailJob" => FailureAction::FailJob,
            "FailIndex" => FailureAction::FailIndex,
            "Ignore" => FailureAction::Ignore,
            "Count" => FailureAction::Count,
            _ => continue,
        };
        if let Some(req) = &rule.on_exit_codes {
            let statuses = status.into_iter().flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            });
            if let Some((c, code)) = statuses
                .filter_map(|c| matching_exit(c, req).map(|code| (c, code)))
                .next()
            {
                let msg = (action == FailureAction::FailJob).then(|| {
                    format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching FailJob rule at index {i}",
                        c.name
                    )
                });
                return Some((action, msg));
            }
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conditions = status
                .into_iter()
                .flat_map(|s| s.conditions.iter().flatten());
            let hit = conditions.into_iter().find(|c| {
                patterns
                    .iter()
                    .any(|p| p.type_ == c.type_ && p.status == c.status)
            });
            if let Some(c) = hit {
                let msg = (action == FailureAction::FailJob).then(|| {
                    format!(
                        "Pod {ns}/{name} has condition {} matching FailJob rule at index {i}",
                        c.type_
                    )
                });
                return Some((action, msg));
            }
        }
    }
    None
}

/// A terminated container's exit code if it satisfies the requirement.
/// Exit code 0 never matches (a successful container is no failure).
fn matching_exit(c: &ContainerStatus, req: &PodFailurePolicyOnExitCodesRequirement) -> Option<i32> {
    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
    if code == 0 || req.container_name.as_deref().is_some_and(|n| n != c.name) {
        return None;
    }
    let listed = req.values.contains(&code);
    match req.operator.as_str() {
        "In" if listed => Some(code),
        "NotIn" if !listed => Some(code),
        _ => None,
    }
}

/// The index of the first success policy rule the completed indexes meet.
pub fn success_rule_met(
    policy: &SuccessPolicy,
    completed: &BTreeSet<i32>,
    completions: i32,
) -> Option<usize> {
    policy.rules.iter().position(|r| {
        let set = r
            .succeeded_indexes
            .as_deref()
            .map(|s| parse_indexes(s, completions).map(|iv| index_set(&iv)));
        match (set, r.succeeded_count) {
            (Some(Err(_)), _) | (None, None) => false,
            (Some(Ok(ix)), Some(n)) => ix.intersection(completed).count() as i64 >= i64::from(n),
            (Some(Ok(ix)), None) => ix.is_subset(completed),
            (None, Some(n)) => completed.len() as i64 >= i64::from(n),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicyRule,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn failed_pod(exits: &[(&str, Option<i32>)], conditions: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("pi-abc".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(
                    exits
                        .iter()
                        .map(|(n, code)| ContainerStatus {
                            name: n.to_string(),
                            state: Some(ContainerState {
                                terminated: code.map(|exit_code| ContainerStateTerminated {
                                    exit_code,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|t| PodCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn exits(
        action: &str,
        container: Option<&str>,
        op: &str,
        values: &[i32],
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn condition(action: &str, type_: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: type_.into(),
                status: "True".into(),
            }]),
        }
    }

    #[test]
    fn failure_policy_table() {
        let policy = PodFailurePolicy {
            rules: vec![
                condition("Ignore", "DisruptionTarget"),
                exits("Unknown", None, "In", &[5]),
                exits("FailJob", Some("main"), "In", &[42]),
                exits("Count", None, "NotIn", &[1, 2]),
                exits("FailIndex", None, "In", &[1]),
            ],
        };
        type Case = (
            &'static str,
            Pod,
            Option<(FailureAction, Option<&'static str>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "a disruption is ignored",
                failed_pod(&[("main", Some(42))], &["DisruptionTarget"]),
                Some((FailureAction::Ignore, None)),
            ),
            (
                "exit 42 of main fails the job",
                failed_pod(&[("side", Some(0)), ("main", Some(42))], &[]),
                Some((
                    FailureAction::FailJob,
                    Some(
                        "Container main for pod default/pi-abc failed with exit code 42 matching FailJob rule at index 2",
                    ),
                )),
            ),
            (
                "exit 42 of another container: NotIn [1 2] counts",
                failed_pod(&[("side", Some(42))], &[]),
                Some((FailureAction::Count, None)),
            ),
            (
                "unknown actions are skipped: exit 5 counts through NotIn",
                failed_pod(&[("main", Some(5))], &[]),
                Some((FailureAction::Count, None)),
            ),
            (
                "exit 1 fails the index",
                failed_pod(&[("main", Some(1))], &[]),
                Some((FailureAction::FailIndex, None)),
            ),
            (
                "exit 0 never matches, not even NotIn",
                failed_pod(&[("main", Some(0))], &[]),
                None,
            ),
            (
                "a container still running has no exit code",
                failed_pod(&[("main", None)], &[]),
                None,
            ),
        ];
        for (what, pod, want) in cases {
            let got = match_pod_failure_policy(&policy, &pod);
            let got = got.as_ref().map(|(a, m)| (*a, m.as_deref()));
            assert_eq!(got, want, "{what}");
        }
        let by_condition = PodFailurePolicy {
            rules: vec![condition("FailJob", "DisruptionTarget")],
        };
        assert_eq!(
            match_pod_failure_policy(&by_condition, &failed_pod(&[], &["DisruptionTarget"])),
            Some((
                FailureAction::FailJob,
                Some(
                    "Pod default/pi-abc has condition DisruptionTarget matching FailJob rule at index 0"
                        .into()
                )
            ))
        );
    }

    #[test]
    fn success_policy_table() {
        let rule = |ix: Option<&str>, n: Option<i32>| SuccessPolicyRule {
            succeeded_indexes: ix.map(Into::into),
            succeeded_count: n,
        };
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let cases = [
            (
                "index 0 done",
                vec![rule(Some("0"), None)],
                set(&[0]),
                Some(0),
            ),
            (
                "index 0 not done",
                vec![rule(Some("0"), None)],
                set(&[1, 2]),
                None,
            ),
            (
                "two of 1-3",
                vec![rule(Some("0"), None), rule(Some("1-3"), Some(2))],
                set(&[1, 3]),
                Some(1),
            ),
            (
                "any three",
                vec![rule(None, Some(3))],
                set(&[0, 4, 5]),
                Some(0),
            ),
            ("only two", vec![rule(None, Some(3))], set(&[0, 4]), None),
        ];
        for (what, rules, completed, want) in cases {
            assert_eq!(
                success_rule_met(&SuccessPolicy { rules }, &completed, 6),
                want,
                "{what}"
            );
        }
    }
}
