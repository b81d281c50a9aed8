//! The pod planner: a pure function from (the pod as the API wants it, what the
//! runtime holds for it, remembered pull failures, the clock) to the next steps.
//!
//! One call plans one "round". Steps that need an id the runtime has not handed
//! out yet (a new sandbox's id) are planned on the next round, after the worker
//! observed the runtime again; this keeps the planner free of I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::observed::{ObservedPod, RunState};
use super::spec::container_hash;

/// Grace period when the API says nothing (Kubernetes' default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// One step against the runtime or the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pod's cgroup parents and log directory, run a sandbox
    /// (containerd runs CNI ADD) and attach the datapath to its veth.
    CreateSandbox {
        attempt: u32,
    },
    /// Pull the image if the pull policy asks for it, then create and start
    /// the container named `container` in `sandbox_id`.
    StartContainer {
        sandbox_id: String,
        container: String,
        attempt: u32,
    },
    /// SIGTERM, then SIGKILL after `timeout_secs`.
    StopContainer {
        id: String,
        timeout_secs: i64,
    },
    RemoveContainer {
        id: String,
    },
    /// containerd runs CNI DEL here: the pod IP is released and the veth goes.
    StopSandbox {
        id: String,
    },
    RemoveSandbox {
        id: String,
    },
    /// Remove the pod's cgroup parents (runc leaves them behind) and its logs.
    RemovePodResources,
    /// Finish a graceful deletion: delete the Pod object with grace period 0.
    DeletePod,
}

/// A remembered image pull failure of one container (kept by the worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFailure {
    /// When the last pull failed, nanoseconds since the epoch.
    pub at_ns: i64,
    /// Consecutive failures.
    pub count: u32,
    pub message: String,
    /// The image is absent and imagePullPolicy is Never: no pull will help.
    pub never_pull: bool,
}

impl PullFailure {
    /// The pull may be retried from this instant on.
    pub fn retry_at_ns(&self) -> i64 {
        self.at_ns
            .saturating_add(duration_ns(pull_backoff(self.count)))
    }
}

/// Pull retries: 5 s after the first failure, doubling up to 5 minutes.
pub fn pull_backoff(failures: u32) -> Duration {
    exponential(Duration::from_secs(5), failures.saturating_sub(1))
}

/// Restart delay before instance `attempt + 1` of a container that exited:
/// the first restart is immediate, then 10 s doubling up to 5 minutes
/// (kubelet's CrashLoopBackOff). A container that ran 10 minutes resets it.
pub fn restart_backoff(attempt: u32, ran_for: Duration) -> Duration {
    if attempt == 0 || ran_for >= Duration::from_secs(600) {
        return Duration::ZERO;
    }
    exponential(Duration::from_secs(10), attempt - 1)
}

fn exponential(base: Duration, doublings: u32) -> Duration {
    let cap = Duration::from_secs(300);
    base.checked_mul(1u32.checked_shl(doublings.min(16)).unwrap_or(u32::MAX))
        .map_or(cap, |d| d.min(cap))
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Does `restart_policy` (Always/OnFailure/Never, default Always) restart a
/// container that exited with `exit_code`?
pub fn should_restart(restart_policy: Option<&str>, exit_code: i32) -> bool {
    match restart_policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The grace period for stopping the pod's containers.
pub fn grace_seconds(pod: Option<&Pod>) -> i64 {
    let Some(pod) = pod else { return 0 };
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

fn is_terminal_phase(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What one round should do, and whether the worker is finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The pod is gone from the API and nothing of it is left in the runtime.
    pub done: bool,
}

/// Plans the next round for one pod.
///
/// `pod` is `None` when the API no longer has the pod (deleted, or an orphan
/// sandbox found at start-up); `pull_failures` is keyed by container name.
pub fn plan(
    pod: Option<&Pod>,
    observed: &ObservedPod,
    pull_failures: &BTreeMap<String, PullFailure>,
    now_ns: i64,
) -> Plan {
    let Some(p) = pod else {
        let mut actions = teardown(observed, 0);
        actions.push(Action::RemovePodResources);
        return Plan {
            actions,
            done: observed.is_empty(),
        };
    };
    if p.metadata.deletion_timestamp.is_some() {
        let mut actions = teardown(observed, grace_seconds(pod));
        actions.push(Action::RemovePodResources);
        actions.push(Action::DeletePod);
        return Plan {
            actions,
            done: false,
        };
    }
    if is_terminal_phase(p) {
        // A finished pod keeps its containers (for logs) but gives back its IP.
        let actions = observed
            .sandboxes
            .iter()
            .filter(|s| s.ready)
            .map(|s| Action::StopSandbox { id: s.id.clone() });
        return Plan {
            actions: actions.collect(),
            done: false,
        };
    }
    Plan {
        actions: run(p, observed, pull_failures, now_ns),
        done: false,
    }
}

/// Stops and removes everything the runtime holds for the pod.
fn teardown(observed: &ObservedPod, grace: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    for c in &observed.containers {
        if matches!(
            c.state,
            RunState::Running | RunState::Created | RunState::Unknown
        ) {
            actions.push(Action::StopContainer {
                id: c.id.clone(),
                timeout_secs: grace,
            });
        }
    }
    for c in &observed.containers {
        actions.push(Action::RemoveContainer { id: c.id.clone() });
    }
    for s in &observed.sandboxes {
        actions.push(Action::StopSandbox { id: s.id.clone() });
        actions.push(Action::RemoveSandbox { id: s.id.clone() });
    }
    actions
}

fn run(
    pod: &Pod,
    observed: &ObservedPod,
    pull_failures: &BTreeMap<String, PullFailure>,
    now_ns: i64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let latest = observed.latest_sandbox();
    let Some(sandbox) = latest.filter(|s| s.ready) else {
        // No usable sandbox: kill what is left in the dead one and make a new one.
        for c in observed
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running)
        {
            actions.push(Action::StopContainer {
                id: c.id.clone(),
                timeout_secs: grace_seconds(Some(pod)),
            });
        }
        actions.push(Action::CreateSandbox {
            attempt: latest.map_or(0, |s| s.attempt + 1),
        });
        return actions;
    };

    // Garbage of earlier sandboxes.
    for c in observed
        .containers
        .iter()
        .filter(|c| c.sandbox_id != sandbox.id)
    {
        if c.state == RunState::Running {
            actions.push(Action::StopContainer {
                id: c.id.clone(),
                timeout_secs: 0,
            });
        }
        actions.push(Action::RemoveContainer { id: c.id.clone() });
    }
    for s in observed.sandboxes.iter().filter(|s| s.id != sandbox.id) {
        actions.push(Action::StopSandbox { id: s.id.clone() });
        actions.push(Action::RemoveSandbox { id: s.id.clone() });
    }

    let Some(spec) = pod.spec.as_ref() else {
        return actions;
    };
    let policy = spec.restart_policy.as_deref();
    for container in &spec.containers {
        let name = container.name.as_str();
        let pull_blocked = pull_failures
            .get(name)
            .is_some_and(|f| now_ns < f.retry_at_ns());
        let latest = observed.latest_container(&sandbox.id, name);
        // Keep the latest instance and the one before it (for `logs --previous`).
        let previous = observed
            .previous_container(&sandbox.id, name)
            .map(|c| c.id.as_str());
        for old in observed.instances(&sandbox.id, name) {
            if Some(old.id.as_str()) != latest.map(|c| c.id.as_str())
                && Some(old.id.as_str()) != previous
            {
                actions.push(Action::RemoveContainer { id: old.id.clone() });
            }
        }
        let next_attempt = match latest {
            None => Some(0),
            // The worker creates and starts in one step, so a container still
            // only "created" when a round begins was left by a failed start or
            // an agent that died in between: replace it.
            Some(c) if c.state == RunState::Created => {
                actions.push(Action::RemoveContainer { id: c.id.clone() });
                Some(c.attempt + 1)
            }
            // The spec changed since this instance was created (kubelet's
            // "container spec hash changed"): replace it, whatever the policy.
            Some(c)
                if c.state == RunState::Running
                    && c.spec_hash
                        .as_ref()
                        .is_some_and(|h| *h != container_hash(container)) =>
            {
                actions.push(Action::StopContainer {
                    id: c.id.clone(),
                    timeout_secs: grace_seconds(Some(pod)),
                });
                Some(c.attempt + 1)
            }
            Some(c) if c.state == RunState::Exited && should_restart(policy, c.exit_code) => {
                let ran_for = Duration::from_nanos(
                    c.finished_at
                        .saturating_sub(c.started_at)
                        .max(0)
                        .unsigned_abs(),
                );
                let due = c
                    .finished_at
                    .saturating_add(duration_ns(restart_backoff(c.attempt, ran_for)));
                (now_ns >= due).then_some(c.attempt + 1)
            }
            Some(_) => None,
        };
        if let Some(attempt) = next_attempt.filter(|_| !pull_blocked) {
            actions.push(Action::StartContainer {
                sandbox_id: sandbox.id.clone(),
                container: name.to_string(),
                attempt,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::observed::{ObservedContainer, ObservedSandbox};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const SEC: i64 = 1_000_000_000;

    fn pod(restart: &str, containers: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(restart.into()),
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        image: Some("img".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn deleting(mut p: Pod, grace: i64) -> Pod {
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        p.metadata.deletion_grace_period_seconds = Some(grace);
        p
    }

    fn with_phase(mut p: Pod, phase: &str) -> Pod {
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    fn sb(id: &str, attempt: u32, ready: bool) -> ObservedSandbox {
        ObservedSandbox {
            id: id.into(),
            attempt,
            ready,
            created_at: i64::from(attempt),
            ip: None,
        }
    }

    fn ctr(
        id: &str,
        sandbox: &str,
        name: &str,
        attempt: u32,
        state: RunState,
        exit: i32,
        finished: i64,
    ) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: name.into(),
            attempt,
            state,
            created_at: i64::from(attempt),
            started_at: finished - SEC,
            finished_at: finished,
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            spec_hash: None,
        }
    }

    fn obs(sandboxes: Vec<ObservedSandbox>, containers: Vec<ObservedContainer>) -> ObservedPod {
        ObservedPod {
            sandboxes,
            containers,
        }
    }

    fn start(sandbox: &str, container: &str, attempt: u32) -> Action {
        Action::StartContainer {
            sandbox_id: sandbox.into(),
            container: container.into(),
            attempt,
        }
    }

    #[test]
    fn plans() {
        use Action::*;
        use RunState::*;
        let now = 1_000 * SEC;
        let no_failures = BTreeMap::new();
        let failed_pull: BTreeMap<String, PullFailure> = [(
            "a".to_string(),
            PullFailure {
                at_ns: now - SEC,
                count: 1,
                message: "not found".into(),
                never_pull: false,
            },
        )]
        .into();
        let old_failed_pull: BTreeMap<String, PullFailure> = [(
            "a".to_string(),
            PullFailure {
                at_ns: now - 60 * SEC,
                count: 1,
                message: "not found".into(),
                never_pull: false,
            },
        )]
        .into();

        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Option<Pod>,
            ObservedPod,
            &BTreeMap<String, PullFailure>,
            Vec<Action>,
            bool,
        )> = vec![
            (
                "new pod gets a sandbox",
                Some(pod("Always", &["a"])),
                ObservedPod::default(),
                &no_failures,
                vec![CreateSandbox { attempt: 0 }],
                false,
            ),
            (
                "ready sandbox: containers start in spec order",
                Some(pod("Always", &["a", "b"])),
                obs(vec![sb("s0", 0, true)], vec![]),
                &no_failures,
                vec![start("s0", "a", 0), start("s0", "b", 0)],
                false,
            ),
            (
                "running pod: nothing to do",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Running, 0, 0)],
                ),
                &no_failures,
                vec![],
                false,
            ),
            (
                "container left created by a failed start is replaced",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Created, 0, 0)],
                ),
                &no_failures,
                vec![RemoveContainer { id: "c0".into() }, start("s0", "a", 1)],
                false,
            ),
            (
                "spec changed: replace the running container",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ObservedContainer {
                        spec_hash: Some("old".into()),
                        ..ctr("c0", "s0", "a", 0, Running, 0, 0)
                    }],
                ),
                &no_failures,
                vec![
                    StopContainer {
                        id: "c0".into(),
                        timeout_secs: 30,
                    },
                    start("s0", "a", 1),
                ],
                false,
            ),
            (
                "spec unchanged: leave it running",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ObservedContainer {
                        spec_hash: Some(container_hash(
                            &pod("Always", &["a"]).spec.expect("spec").containers[0],
                        )),
                        ..ctr("c0", "s0", "a", 0, Running, 0, 0)
                    }],
                ),
                &no_failures,
                vec![],
                false,
            ),
            (
                "first crash restarts at once",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 1, now - SEC)],
                ),
                &no_failures,
                vec![start("s0", "a", 1)],
                false,
            ),
            (
                "second crash waits for the back-off",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![
                        ctr("c0", "s0", "a", 0, Exited, 1, now - 5 * SEC),
                        ctr("c1", "s0", "a", 1, Exited, 1, now - SEC),
                    ],
                ),
                &no_failures,
                vec![],
                false,
            ),
            (
                "back-off over: restart, drop instances older than the previous one",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![
                        ctr("c0", "s0", "a", 0, Exited, 1, now - 100 * SEC),
                        ctr("c1", "s0", "a", 1, Exited, 1, now - 50 * SEC),
                        ctr("c2", "s0", "a", 2, Exited, 1, now - 30 * SEC),
                    ],
                ),
                &no_failures,
                vec![RemoveContainer { id: "c0".into() }, start("s0", "a", 3)],
                false,
            ),
            (
                "OnFailure: exit 0 stays down",
                Some(pod("OnFailure", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 0, now - SEC)],
                ),
                &no_failures,
                vec![],
                false,
            ),
            (
                "OnFailure: exit 1 restarts",
                Some(pod("OnFailure", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 1, now - SEC)],
                ),
                &no_failures,
                vec![start("s0", "a", 1)],
                false,
            ),
            (
                "Never: exit 1 stays down",
                Some(pod("Never", &["a"])),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 1, now - SEC)],
                ),
                &no_failures,
                vec![],
                false,
            ),
            (
                "pull failed recently: wait",
                Some(pod("Always", &["a", "b"])),
                obs(vec![sb("s0", 0, true)], vec![]),
                &failed_pull,
                vec![start("s0", "b", 0)],
                false,
            ),
            (
                "pull back-off over: retry",
                Some(pod("Always", &["a"])),
                obs(vec![sb("s0", 0, true)], vec![]),
                &old_failed_pull,
                vec![start("s0", "a", 0)],
                false,
            ),
            (
                "dead sandbox: stop its containers, make the next one",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, false)],
                    vec![ctr("c0", "s0", "a", 0, Running, 0, 0)],
                ),
                &no_failures,
                vec![
                    StopContainer {
                        id: "c0".into(),
                        timeout_secs: 30,
                    },
                    CreateSandbox { attempt: 1 },
                ],
                false,
            ),
            (
                "new sandbox ready: old one and its containers go",
                Some(pod("Always", &["a"])),
                obs(
                    vec![sb("s0", 0, false), sb("s1", 1, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 137, now - SEC)],
                ),
                &no_failures,
                vec![
                    RemoveContainer { id: "c0".into() },
                    StopSandbox { id: "s0".into() },
                    RemoveSandbox { id: "s0".into() },
                    start("s1", "a", 0),
                ],
                false,
            ),
            (
                "graceful delete: stop with the grace period, clean up, delete",
                Some(deleting(pod("Always", &["a"]), 7)),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Running, 0, 0)],
                ),
                &no_failures,
                vec![
                    StopContainer {
                        id: "c0".into(),
                        timeout_secs: 7,
                    },
                    RemoveContainer { id: "c0".into() },
                    StopSandbox { id: "s0".into() },
                    RemoveSandbox { id: "s0".into() },
                    RemovePodResources,
                    DeletePod,
                ],
                false,
            ),
            (
                "graceful delete with nothing left still deletes",
                Some(deleting(pod("Always", &["a"]), 30)),
                ObservedPod::default(),
                &no_failures,
                vec![RemovePodResources, DeletePod],
                false,
            ),
            (
                "orphan: kill at once",
                None,
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Running, 0, 0)],
                ),
                &no_failures,
                vec![
                    StopContainer {
                        id: "c0".into(),
                        timeout_secs: 0,
                    },
                    RemoveContainer { id: "c0".into() },
                    StopSandbox { id: "s0".into() },
                    RemoveSandbox { id: "s0".into() },
                    RemovePodResources,
                ],
                false,
            ),
            (
                "gone and nothing left: done",
                None,
                ObservedPod::default(),
                &no_failures,
                vec![RemovePodResources],
                true,
            ),
            (
                "succeeded pod gives back its sandbox",
                Some(with_phase(pod("Never", &["a"]), "Succeeded")),
                obs(
                    vec![sb("s0", 0, true)],
                    vec![ctr("c0", "s0", "a", 0, Exited, 0, now - SEC)],
                ),
                &no_failures,
                vec![StopSandbox { id: "s0".into() }],
                false,
            ),
        ];
        for (name, pod, observed, failures, want, done) in cases {
            let got = plan(pod.as_ref(), &observed, failures, now);
            assert_eq!(got.actions, want, "case: {name}");
            assert_eq!(got.done, done, "case: {name}");
        }
    }

    #[test]
    fn backoffs() {
        let cases = [
            (0, 0, 0),
            (1, 0, 10),
            (2, 0, 20),
            (3, 0, 40),
            (6, 0, 300),
            (40, 0, 300),
            (3, 700, 0),
        ];
        for (attempt, ran, want) in cases {
            assert_eq!(
                restart_backoff(attempt, Duration::from_secs(ran)),
                Duration::from_secs(want),
                "attempt {attempt}"
            );
        }
        assert_eq!(pull_backoff(1), Duration::from_secs(5));
        assert_eq!(pull_backoff(3), Duration::from_secs(20));
        assert_eq!(pull_backoff(100), Duration::from_secs(300));
    }

    #[test]
    fn restart_policies() {
        let cases = [
            (None, 0, true),
            (Some("Always"), 0, true),
            (Some("OnFailure"), 0, false),
            (Some("OnFailure"), 2, true),
            (Some("Never"), 2, false),
        ];
        for (policy, code, want) in cases {
            assert_eq!(should_restart(policy, code), want, "{policy:?} exit {code}");
        }
    }
}
