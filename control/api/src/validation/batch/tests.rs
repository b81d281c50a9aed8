use super::*;
use crate::defaults::{default_cron_job, default_job};
use k8s_openapi::api::batch::v1::{
    CronJobSpec, JobStatus, JobTemplateSpec, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule, SuccessPolicyRule,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

fn strings(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

fn base_spec() -> JobSpec {
    JobSpec {
        template: PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        ..Default::default()
    }
}

/// A Job as the API server sees it on create: named, with a uid, defaulted.
fn job(edit: impl FnOnce(&mut JobSpec)) -> Job {
    job_named("pi", edit)
}

fn job_named(name: &str, edit: impl FnOnce(&mut JobSpec)) -> Job {
    let mut spec = base_spec();
    edit(&mut spec);
    let mut j = Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    default_job(&mut j);
    j
}

fn exit_rule(action: &str, op: &str, values: &[i32]) -> PodFailurePolicyRule {
    PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: op.into(),
            values: values.to_vec(),
        }),
        on_pod_conditions: None,
    }
}

fn pfp(rules: Vec<PodFailurePolicyRule>) -> Option<PodFailurePolicy> {
    Some(PodFailurePolicy { rules })
}

#[test]
fn job_rules_table() {
    type Case = (&'static str, Job, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("a valid job", job(|_| {}), vec![]),
        (
            "negative ranges",
            job(|s| {
                s.parallelism = Some(-1);
                s.completions = Some(-2);
                s.backoff_limit = Some(-3);
                s.active_deadline_seconds = Some(-4);
                s.ttl_seconds_after_finished = Some(-5);
            }),
            vec![
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.completions: Invalid value: -2: must be greater than or equal to 0",
                "spec.activeDeadlineSeconds: Invalid value: -4: must be greater than or equal to 0",
                "spec.backoffLimit: Invalid value: -3: must be greater than or equal to 0",
                "spec.ttlSecondsAfterFinished: Invalid value: -5: must be greater than or equal to 0",
            ],
        ),
        (
            "unknown completion mode",
            job(|s| s.completion_mode = Some("Ordered".into())),
            vec![
                "spec.completionMode: Unsupported value: \"Ordered\": supported values: \"NonIndexed\", \"Indexed\"",
            ],
        ),
        (
            "indexed needs completions",
            job(|s| {
                s.completion_mode = Some("Indexed".into());
                s.parallelism = Some(2);
            }),
            vec!["spec.completions: Required value: when completion mode is Indexed"],
        ),
        (
            "restartPolicy unset",
            job(|s| s.template.spec.as_mut().unwrap().restart_policy = None),
            vec![
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ],
        ),
        (
            "restartPolicy Always",
            job(|s| s.template.spec.as_mut().unwrap().restart_policy = Some("Always".into())),
            vec![
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ],
        ),
        (
            "restartPolicy unknown",
            job(|s| s.template.spec.as_mut().unwrap().restart_policy = Some("Sometimes".into())),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ],
        ),
        (
            "per-index limits need Indexed",
            job(|s| {
                s.backoff_limit_per_index = Some(1);
                s.max_failed_indexes = Some(1);
            }),
            vec![
                "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
                "spec.maxFailedIndexes: Invalid value: 1: requires indexed completion mode",
            ],
        ),
        (
            "maxFailedIndexes needs backoffLimitPerIndex and <= completions",
            job(|s| {
                s.completion_mode = Some("Indexed".into());
                s.completions = Some(3);
                s.max_failed_indexes = Some(4);
            }),
            vec![
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
                "spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions",
            ],
        ),
        (
            "selector must match the template",
            job(|s| {
                s.manual_selector = Some(true);
                s.selector = Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "x".to_string())].into()),
                    ..Default::default()
                });
            }),
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{}: `selector` does not match template `labels`",
            ],
        ),
        (
            "manual selector required",
            job(|s| s.manual_selector = Some(true)),
            vec!["spec.selector: Required value"],
        ),
        (
            "a generated selector that was tampered with",
            job(|s| {
                s.selector = Some(LabelSelector {
                    match_labels: Some(
                        [(CONTROLLER_UID_LABEL.to_string(), "other".to_string())].into(),
                    ),
                    ..Default::default()
                });
            }),
            vec![
                "spec.selector: Invalid value: `selector` not auto-generated",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"batch.kubernetes.io/controller-uid\":\"u1\", \"batch.kubernetes.io/job-name\":\"pi\", \"controller-uid\":\"u1\", \"job-name\":\"pi\"}: `selector` does not match template `labels`",
            ],
        ),
        (
            "podFailurePolicy needs restartPolicy Never",
            job(|s| {
                s.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
                s.pod_failure_policy = pfp(vec![exit_rule("FailJob", "In", &[42])]);
            }),
            vec![
                "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
            ],
        ),
        (
            "podFailurePolicy rules",
            job(|s| {
                s.pod_failure_policy = pfp(vec![
                    exit_rule("", "In", &[0, 3, 3]),
                    exit_rule("Explode", "Within", &[5, 1]),
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: None,
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "Maybe".into(),
                        }]),
                    },
                    PodFailurePolicyRule {
                        action: "Count".into(),
                        on_exit_codes: None,
                        on_pod_conditions: None,
                    },
                    exit_rule("FailIndex", "NotIn", &[]),
                    PodFailurePolicyRule {
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some("sidecar".into()),
                            operator: "In".into(),
                            values: vec![1],
                        }),
                        ..exit_rule("FailJob", "In", &[1])
                    },
                ]);
            }),
            vec![
                "spec.podFailurePolicy.rules[0].action: Required value: valid values: [\"Count\" \"FailIndex\" \"FailJob\" \"Ignore\"]",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[1].action: Unsupported value: \"Explode\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[1].onExitCodes.operator: Unsupported value: \"Within\": supported values: \"In\", \"NotIn\"",
                "spec.podFailurePolicy.rules[1].onExitCodes.values: Invalid value: [5 1]: must be ordered",
                "spec.podFailurePolicy.rules[2].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
                "spec.podFailurePolicy.rules[3]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
                "spec.podFailurePolicy.rules[4].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
                "spec.podFailurePolicy.rules[4].onExitCodes.values: Invalid value: []: at least one value is required",
                "spec.podFailurePolicy.rules[5].onExitCodes.containerName: Invalid value: \"sidecar\": must be one of the container or initContainer names in the pod template",
            ],
        ),
        (
            "pod condition status defaults to True",
            job(|s| {
                s.pod_failure_policy = pfp(vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: String::new(),
                    }]),
                }]);
            }),
            vec![],
        ),
        (
            "podReplacementPolicy with a failure policy",
            job(|s| {
                s.pod_failure_policy = pfp(vec![exit_rule("FailJob", "In", &[1])]);
                s.pod_replacement_policy = Some("TerminatingOrFailed".into());
            }),
            vec![
                "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
            ],
        ),
        (
            "successPolicy needs Indexed",
            job(|s| {
                s.success_policy = Some(SuccessPolicy {
                    rules: vec![SuccessPolicyRule {
                        succeeded_count: Some(1),
                        succeeded_indexes: None,
                    }],
                })
            }),
            vec!["spec.successPolicy: Invalid value: requires indexed completion mode"],
        ),
        (
            "successPolicy rules",
            job(|s| {
                s.completion_mode = Some("Indexed".into());
                s.completions = Some(5);
                s.success_policy = Some(SuccessPolicy {
                    rules: vec![
                        SuccessPolicyRule {
                            succeeded_count: None,
                            succeeded_indexes: None,
                        },
                        SuccessPolicyRule {
                            succeeded_count: Some(3),
                            succeeded_indexes: Some("0,2".into()),
                        },
                        SuccessPolicyRule {
                            succeeded_count: Some(6),
                            succeeded_indexes: Some("3-1".into()),
                        },
                    ],
                })
            }),
            vec![
                "spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[1].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                "spec.successPolicy.rules[2].succeededIndexes: Invalid value: \"3-1\": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1",
                "spec.successPolicy.rules[2].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
                "spec.successPolicy.rules[2].succeededCount: Invalid value: 6: must be less than or equal to 0 (the number of indexes in the specified succeededIndexes field)",
            ],
        ),
        (
            "indexed pod hostnames must be labels",
            job_named(&"a".repeat(62), |s| {
                s.completion_mode = Some("Indexed".into());
                s.completions = Some(10);
            }),
            vec![
                "metadata.name: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": will not able to create pod with invalid DNS label: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-9",
            ],
        ),
    ];
    for (what, j, want) in cases {
        assert_eq!(strings(&validate_job(&j)), want, "{what}");
    }
}

#[test]
fn defaulting_generates_the_selector() {
    let j = job(|_| {});
    let spec = j.spec.unwrap();
    let sel = spec.selector.unwrap().match_labels.unwrap();
    assert_eq!(
        sel.get(CONTROLLER_UID_LABEL).map(String::as_str),
        Some("u1")
    );
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in [
        (CONTROLLER_UID_LABEL, "u1"),
        (LEGACY_CONTROLLER_UID_LABEL, "u1"),
        (JOB_NAME_LABEL, "pi"),
        (LEGACY_JOB_NAME_LABEL, "pi"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!((spec.completions, spec.parallelism), (Some(1), Some(1)));
    // parallelism alone: a work queue, completions stays unset.
    let wq = job(|s| s.parallelism = Some(3)).spec.unwrap();
    assert_eq!((wq.completions, wq.parallelism), (None, Some(3)));
    let per_index = job(|s| {
        s.completion_mode = Some("Indexed".into());
        s.completions = Some(3);
        s.backoff_limit_per_index = Some(1);
    });
    assert_eq!(per_index.spec.unwrap().backoff_limit, Some(i32::MAX));
}

#[test]
fn job_update_table() {
    let base = job(|s| s.completions = Some(3));
    type Case = (&'static str, Job, Job, Vec<&'static str>);
    let change = |f: &dyn Fn(&mut JobSpec)| {
        let mut j = base.clone();
        f(j.spec.as_mut().unwrap());
        j
    };
    let indexed = job(|s| {
        s.completion_mode = Some("Indexed".into());
        s.completions = Some(3);
        s.parallelism = Some(3);
    });
    let suspended = job(|s| s.suspend = Some(true));
    let mut started = suspended.clone();
    started.status = Some(JobStatus {
        start_time: Some(Time("2026-11-25T00:00:00Z".parse().unwrap())),
        ..Default::default()
    });
    let with_node_selector = |j: &Job| {
        let mut j = j.clone();
        j.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("zone".to_string(), "a".to_string())].into());
        j
    };
    let cases: Vec<Case> = vec![
        (
            "parallelism and suspend may change",
            base.clone(),
            change(&|s| {
                s.parallelism = Some(5);
                s.suspend = Some(true);
                s.active_deadline_seconds = Some(100);
            }),
            vec![],
        ),
        (
            "completions of a NonIndexed job",
            base.clone(),
            change(&|s| s.completions = Some(5)),
            vec!["spec.completions: Invalid value: 5: field is immutable"],
        ),
        (
            "completions of an Indexed job, with parallelism",
            indexed.clone(),
            {
                let mut j = indexed.clone();
                let s = j.spec.as_mut().unwrap();
                s.completions = Some(5);
                s.parallelism = Some(5);
                j
            },
            vec![],
        ),
        (
            "completions of an Indexed job, alone",
            indexed.clone(),
            {
                let mut j = indexed.clone();
                j.spec.as_mut().unwrap().completions = Some(5);
                j
            },
            vec![
                "spec.completions: Invalid value: 5: can only be modified in tandem with spec.parallelism",
            ],
        ),
        (
            "selector",
            base.clone(),
            change(&|s| s.selector = Some(LabelSelector::default())),
            vec!["spec.selector: Invalid value: field is immutable"],
        ),
        (
            "template",
            base.clone(),
            change(&|s| {
                s.template.spec.as_mut().unwrap().containers[0].image = Some("other".into())
            }),
            vec!["spec.template: Invalid value: field is immutable"],
        ),
        (
            "completionMode and podFailurePolicy",
            base.clone(),
            change(&|s| {
                s.completion_mode = Some("Indexed".into());
                s.pod_failure_policy = pfp(vec![exit_rule("FailJob", "In", &[1])]);
            }),
            vec![
                "spec.completionMode: Invalid value: \"Indexed\": field is immutable",
                "spec.podFailurePolicy: Invalid value: field is immutable",
            ],
        ),
        (
            "scheduling directives of a suspended job that never started",
            suspended.clone(),
            with_node_selector(&suspended),
            vec![],
        ),
        (
            "scheduling directives once started",
            started.clone(),
            with_node_selector(&started),
            vec!["spec.template: Invalid value: field is immutable"],
        ),
    ];
    for (what, old, new, want) in cases {
        assert_eq!(strings(&validate_job_update(&old, &new)), want, "{what}");
    }
}

fn cron(edit: impl FnOnce(&mut CronJobSpec)) -> CronJob {
    let mut spec = CronJobSpec {
        schedule: "*/5 * * * *".into(),
        job_template: JobTemplateSpec {
            metadata: None,
            spec: Some(base_spec()),
        },
        ..Default::default()
    };
    edit(&mut spec);
    let mut cj = CronJob {
        metadata: ObjectMeta {
            name: Some("tick".into()),
            namespace: Some("default".into()),
            uid: Some("c1".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    default_cron_job(&mut cj);
    cj
}

fn zones(name: &str) -> bool {
    ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5"].contains(&name)
}

#[test]
fn cron_job_rules_table() {
    type Case = (&'static str, CronJob, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("a valid cronjob", cron(|_| {}), vec![]),
        (
            "a known zone",
            cron(|s| s.time_zone = Some("Europe/Berlin".into())),
            vec![],
        ),
        (
            "schedule out of range",
            cron(|s| s.schedule = "61 * * * *".into()),
            vec![
                "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
            ],
        ),
        (
            "schedule with too few fields",
            cron(|s| s.schedule = "* * *".into()),
            vec![
                "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]",
            ],
        ),
        (
            "empty schedule",
            cron(|s| s.schedule = String::new()),
            vec!["spec.schedule: Required value"],
        ),
        (
            "TZ in the schedule",
            cron(|s| s.schedule = "TZ=UTC 0 * * * *".into()),
            vec![
                "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ],
        ),
        (
            "CRON_TZ in the schedule",
            cron(|s| s.schedule = "CRON_TZ=Europe/Berlin 0 * * * *".into()),
            vec![
                "spec.schedule: Invalid value: \"CRON_TZ=Europe/Berlin 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ],
        ),
        (
            "unknown zone",
            cron(|s| s.time_zone = Some("Mars/Olympus".into())),
            vec!["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"],
        ),
        (
            "zone with a path",
            cron(|s| s.time_zone = Some("../etc/passwd".into())),
            vec![
                "spec.timeZone: Invalid value: \"../etc/passwd\": unknown time zone ../etc/passwd",
            ],
        ),
        (
            "empty zone",
            cron(|s| s.time_zone = Some(String::new())),
            vec!["spec.timeZone: Invalid value: \"\": timeZone must be nil or non-empty string"],
        ),
        (
            "Local",
            cron(|s| s.time_zone = Some("Local".into())),
            vec![
                "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ],
        ),
        (
            "negative deadline and history limits",
            cron(|s| {
                s.starting_deadline_seconds = Some(-1);
                s.successful_jobs_history_limit = Some(-1);
                s.failed_jobs_history_limit = Some(-2);
            }),
            vec![
                "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.successfulJobsHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.failedJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
            ],
        ),
        (
            "history limits of zero",
            cron(|s| {
                s.successful_jobs_history_limit = Some(0);
                s.failed_jobs_history_limit = Some(0);
            }),
            vec![],
        ),
        (
            "concurrency policy",
            cron(|s| s.concurrency_policy = Some("Sometimes".into())),
            vec![
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ],
        ),
        (
            "job template rules apply",
            cron(|s| {
                let js = s.job_template.spec.as_mut().unwrap();
                js.backoff_limit = Some(-1);
                js.template.spec.as_mut().unwrap().restart_policy = None;
                js.selector = Some(LabelSelector::default());
            }),
            vec![
                "spec.jobTemplate.spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
                "spec.jobTemplate.spec.selector: Invalid value: `selector` will be auto-generated",
            ],
        ),
    ];
    for (what, cj, want) in cases {
        assert_eq!(strings(&validate_cron_job(&cj, &zones)), want, "{what}");
    }
}

#[test]
fn index_lists() {
    assert_eq!(parse_indexes("", 3), Ok(vec![]));
    assert_eq!(parse_indexes("0,2-4", 5), Ok(vec![(0, 0), (2, 4)]));
    assert_eq!(
        index_set(&parse_indexes("0,2-4", 5).unwrap()),
        [0, 2, 3, 4].into()
    );
    let bad = [
        ("5", 5, "too large index: \"5\""),
        ("1-7", 5, "too large index: \"7\""),
        ("2,1", 5, "non-increasing order, previous: 2, current: 1"),
        (
            "1-2-3",
            5,
            "the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts separated by '-'",
        ),
        ("x", 5, "cannot convert string to integer for index: \"x\""),
    ];
    for (s, c, want) in bad {
        assert_eq!(parse_indexes(s, c).unwrap_err(), want, "{s}");
    }
}
