//! Pure computation of a Pod's status from what the runtime reports
//! (kubelet's `generateAPIPodStatus` + `getPhase`, reduced to what weir runs).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::observed::{ObservedContainer, ObservedPod, RunState};
use super::plan::{PullFailure, should_restart};

/// Converts runtime nanoseconds to an API time (seconds precision, like the API's JSON form).
fn time_from_ns(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| Time(Timestamp::from_second(ns / 1_000_000_000).unwrap_or(Timestamp::UNIX_EPOCH)))
}

fn terminated(c: &ObservedContainer) -> ContainerStateTerminated {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        container_id: Some(format!("containerd://{}", c.id)),
        exit_code: c.exit_code,
        reason: Some(reason),
        message: Some(c.message.clone()).filter(|m| !m.is_empty()),
        started_at: time_from_ns(c.started_at),
        finished_at: time_from_ns(c.finished_at),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// How a container counts towards the pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// Never ran yet.
    Pending,
    Running,
    /// Ran and stopped (terminated, or waiting to restart after exiting).
    Stopped {
        succeeded: bool,
    },
}

/// The status of one spec container plus how it counts towards the phase.
fn container_status(
    name: &str,
    image: &str,
    latest: Option<&ObservedContainer>,
    previous: Option<&ObservedContainer>,
    restart_policy: Option<&str>,
    pull_failure: Option<&PullFailure>,
    sandbox_error: Option<&str>,
) -> (ContainerStatus, Count) {
    let last_state = |c: Option<&ObservedContainer>| {
        c.filter(|c| c.state == RunState::Exited)
            .map(|c| ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            })
    };
    let (state, last, count) = match latest {
        None => {
            let state = match pull_failure {
                Some(f) if f.never_pull => waiting("ErrImageNeverPull", Some(f.message.clone())),
                Some(f) if f.count <= 1 => waiting("ErrImagePull", Some(f.message.clone())),
                Some(f) => waiting("ImagePullBackOff", Some(f.message.clone())),
                None => waiting(
                    "ContainerCreating",
                    sandbox_error.map(|e| format!("FailedCreatePodSandBox: {e}")),
                ),
            };
            (state, None, Count::Pending)
        }
        Some(c) => match c.state {
            RunState::Running => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time_from_ns(c.started_at),
                    }),
                    ..Default::default()
                },
                last_state(previous),
                Count::Running,
            ),
            RunState::Exited if should_restart(restart_policy, c.exit_code) => (
                waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off restarting failed container {name} (exit code {})",
                        c.exit_code
                    )),
                ),
                last_state(Some(c)),
                Count::Stopped { succeeded: false },
            ),
            RunState::Exited => (
                ContainerState {
                    terminated: Some(terminated(c)),
                    ..Default::default()
                },
                last_state(previous),
                Count::Stopped {
                    succeeded: c.exit_code == 0,
                },
            ),
            RunState::Created => (
                waiting("ContainerCreating", None),
                last_state(previous),
                Count::Pending,
            ),
            RunState::Unknown => (
                waiting("ContainerStatusUnknown", None),
                last_state(previous),
                Count::Pending,
            ),
        },
    };
    let running = count == Count::Running;
    let status = ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: latest.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|c| format!("containerd://{}", c.id)),
        ready: running,
        started: Some(running),
        restart_count: latest.map_or(0, |c| i32::try_from(c.attempt).unwrap_or(i32::MAX)),
        state: Some(state),
        last_state: last,
        ..Default::default()
    };
    (status, count)
}

/// kubelet's phase rules over the containers' counts.
fn phase(counts: &[Count], restart_policy: Option<&str>) -> &'static str {
    let pending = counts.iter().filter(|c| **c == Count::Pending).count();
    let running = counts.iter().filter(|c| **c == Count::Running).count();
    let succeeded = counts
        .iter()
        .filter(|c| **c == Count::Stopped { succeeded: true })
        .count();
    if counts.is_empty() || pending > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match restart_policy.unwrap_or("Always") {
        "Never" if succeeded == counts.len() => "Succeeded",
        "Never" => "Failed",
        "OnFailure" if succeeded == counts.len() => "Succeeded",
        _ => "Running",
    }
}

fn condition(
    previous: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<String>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: Some(since),
        reason: if ok { None } else { reason },
        ..Default::default()
    }
}

/// Computes the status the API should show for `pod`.
///
/// Fields the agent does not own (qosClass, nominatedNodeName, ...) are kept
/// from the current status. A terminal phase never changes back.
pub fn pod_status(
    pod: &Pod,
    observed: &ObservedPod,
    pull_failures: &BTreeMap<String, PullFailure>,
    sandbox_error: Option<&str>,
    node_ip: &str,
    now: &Time,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref();
    let sandbox = observed.latest_sandbox();

    let mut counts = Vec::new();
    let mut statuses = Vec::new();
    for c in &spec.containers {
        let (latest, previous) = match sandbox {
            Some(s) => (
                observed.latest_container(&s.id, &c.name),
                observed.previous_container(&s.id, &c.name),
            ),
            None => (None, None),
        };
        let image = c.image.clone().unwrap_or_default();
        let (status, count) = container_status(
            &c.name,
            &image,
            latest,
            previous,
            restart_policy,
            pull_failures.get(&c.name),
            sandbox_error,
        );
        statuses.push(status);
        counts.push(count);
    }

    let old_phase = old.phase.as_deref();
    let terminal = matches!(old_phase, Some("Succeeded" | "Failed"));
    let phase = if terminal {
        old_phase.unwrap_or_default()
    } else {
        phase(&counts, restart_policy)
    };
    st.phase = Some(phase.into());

    let ip = if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        sandbox.filter(|s| s.ready).map(|_| node_ip.to_string())
    } else {
        sandbox.filter(|s| s.ready).and_then(|s| s.ip.clone())
    };
    match ip {
        Some(ip) => {
            st.pod_ip = Some(ip.clone());
            st.pod_ips = Some(vec![PodIP { ip }]);
        }
        // A finished pod keeps showing the address it had; a pending one has none.
        None if terminal || phase == "Succeeded" || phase == "Failed" => {}
        None => {
            st.pod_ip = None;
            st.pod_ips = None;
        }
    }
    st.host_ip = Some(node_ip.to_string());
    st.host_ips = Some(vec![HostIP {
        ip: node_ip.to_string(),
    }]);
    st.start_time = old.start_time.clone().or_else(|| Some(now.clone()));
    st.qos_class = old.qos_class.clone().or_else(|| Some("BestEffort".into()));

    let not_ready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let all_ready = not_ready.is_empty() && !statuses.is_empty() && phase == "Running";
    let why = if matches!(phase, "Succeeded" | "Failed") {
        "PodCompleted".to_string()
    } else {
        "ContainersNotReady".to_string()
    };
    let prev = old.conditions.clone().unwrap_or_default();
    st.conditions = Some(vec![
        condition(&prev, "PodScheduled", true, None, now),
        condition(&prev, "Initialized", true, None, now),
        condition(&prev, "ContainersReady", all_ready, Some(why.clone()), now),
        condition(&prev, "Ready", all_ready, Some(why), now),
    ]);
    st.container_statuses = Some(statuses);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::observed::ObservedSandbox;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const SEC: i64 = 1_000_000_000;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).expect("valid"))
    }

    fn pod(restart: &str, containers: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(restart.into()),
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        image: Some(format!("img-{n}")),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn sandbox(ready: bool) -> ObservedSandbox {
        ObservedSandbox {
            id: "s0".into(),
            attempt: 0,
            ready,
            created_at: 1,
            ip: Some("10.244.1.5".into()),
        }
    }

    fn ctr(id: &str, name: &str, attempt: u32, state: RunState, exit: i32) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            sandbox_id: "s0".into(),
            name: name.into(),
            attempt,
            state,
            created_at: i64::from(attempt),
            started_at: 10 * SEC,
            finished_at: if state == RunState::Exited {
                20 * SEC
            } else {
                0
            },
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image_ref: format!("sha256:{name}"),
            spec_hash: None,
        }
    }

    fn cond<'a>(st: &'a PodStatus, t: &str) -> &'a str {
        st.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map_or("missing", |c| c.status.as_str())
    }

    /// (case, restart policy, containers, sandbox, observed containers, phase, Ready, waiting reason of container 0)
    #[test]
    fn phases_and_readiness() {
        use RunState::*;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            &str,
            Vec<&str>,
            Option<bool>,
            Vec<ObservedContainer>,
            &str,
            &str,
            Option<&str>,
        )> = vec![
            (
                "nothing yet",
                "Always",
                vec!["a"],
                None,
                vec![],
                "Pending",
                "False",
                Some("ContainerCreating"),
            ),
            (
                "sandbox, no container",
                "Always",
                vec!["a"],
                Some(true),
                vec![],
                "Pending",
                "False",
                Some("ContainerCreating"),
            ),
            (
                "one of two running",
                "Always",
                vec!["a", "b"],
                Some(true),
                vec![ctr("c", "a", 0, Running, 0)],
                "Pending",
                "False",
                None,
            ),
            (
                "all running",
                "Always",
                vec!["a", "b"],
                Some(true),
                vec![ctr("c", "a", 0, Running, 0), ctr("d", "b", 0, Running, 0)],
                "Running",
                "True",
                None,
            ),
            (
                "crashed, Always",
                "Always",
                vec!["a"],
                Some(true),
                vec![ctr("c", "a", 2, Exited, 1)],
                "Running",
                "False",
                Some("CrashLoopBackOff"),
            ),
            (
                "exit 0, Never",
                "Never",
                vec!["a"],
                Some(true),
                vec![ctr("c", "a", 0, Exited, 0)],
                "Succeeded",
                "False",
                None,
            ),
            (
                "exit 1, Never",
                "Never",
                vec!["a"],
                Some(true),
                vec![ctr("c", "a", 0, Exited, 1)],
                "Failed",
                "False",
                None,
            ),
            (
                "exit 0, OnFailure",
                "OnFailure",
                vec!["a"],
                Some(true),
                vec![ctr("c", "a", 0, Exited, 0)],
                "Succeeded",
                "False",
                None,
            ),
            (
                "exit 1, OnFailure",
                "OnFailure",
                vec!["a"],
                Some(true),
                vec![ctr("c", "a", 0, Exited, 1)],
                "Running",
                "False",
                Some("CrashLoopBackOff"),
            ),
            (
                "one done one running, Never",
                "Never",
                vec!["a", "b"],
                Some(true),
                vec![ctr("c", "a", 0, Exited, 0), ctr("d", "b", 0, Running, 0)],
                "Running",
                "False",
                None,
            ),
        ];
        for (name, policy, containers, sb, ctrs, want_phase, want_ready, want_waiting) in cases {
            let p = pod(policy, &containers);
            let observed = ObservedPod {
                sandboxes: sb.map(sandbox).into_iter().collect(),
                containers: ctrs,
            };
            let st = pod_status(&p, &observed, &BTreeMap::new(), None, "172.30.0.11", &now());
            assert_eq!(st.phase.as_deref(), Some(want_phase), "phase: {name}");
            assert_eq!(cond(&st, "Ready"), want_ready, "Ready: {name}");
            assert_eq!(
                cond(&st, "ContainersReady"),
                want_ready,
                "ContainersReady: {name}"
            );
            assert_eq!(cond(&st, "PodScheduled"), "True", "PodScheduled: {name}");
            let first = &st.container_statuses.as_ref().expect("statuses")[0];
            let waiting = first
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref());
            assert_eq!(waiting, want_waiting, "waiting reason: {name}");
        }
    }

    #[test]
    fn running_pod_reports_ips_ids_and_restarts() {
        let p = pod("Always", &["a"]);
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![
                ctr("old", "a", 0, RunState::Exited, 2),
                ctr("new", "a", 1, RunState::Running, 0),
            ],
        };
        let st = pod_status(&p, &observed, &BTreeMap::new(), None, "172.30.0.11", &now());
        assert_eq!(st.pod_ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(
            st.pod_ips,
            Some(vec![PodIP {
                ip: "10.244.1.5".into()
            }])
        );
        assert_eq!(st.host_ip.as_deref(), Some("172.30.0.11"));
        assert_eq!(st.start_time, Some(now()));
        let c = &st.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(c.container_id.as_deref(), Some("containerd://new"));
        assert_eq!(c.image, "img-a");
        assert_eq!(c.image_id, "sha256:a");
        assert_eq!(c.restart_count, 1);
        assert!(c.ready);
        assert_eq!(c.started, Some(true));
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last state");
        assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
    }

    #[test]
    fn pull_failures_show_as_waiting_reasons() {
        let p = pod("Always", &["a"]);
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![],
        };
        let cases = [
            (1, false, "ErrImagePull"),
            (2, false, "ImagePullBackOff"),
            (1, true, "ErrImageNeverPull"),
        ];
        for (count, never_pull, want) in cases {
            let failures: BTreeMap<String, PullFailure> = [(
                "a".to_string(),
                PullFailure {
                    at_ns: 0,
                    count,
                    message: "manifest unknown".into(),
                    never_pull,
                },
            )]
            .into();
            let st = pod_status(&p, &observed, &failures, None, "172.30.0.11", &now());
            let c = &st.container_statuses.as_ref().expect("statuses")[0];
            let w = c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .expect("waiting");
            assert_eq!(w.reason.as_deref(), Some(want));
            assert_eq!(w.message.as_deref(), Some("manifest unknown"));
            assert_eq!(st.phase.as_deref(), Some("Pending"));
        }
    }

    #[test]
    fn sandbox_failure_shows_on_waiting_containers() {
        let p = pod("Always", &["a"]);
        let st = pod_status(
            &p,
            &ObservedPod::default(),
            &BTreeMap::new(),
            Some("CNI ADD failed"),
            "172.30.0.11",
            &now(),
        );
        let c = &st.container_statuses.as_ref().expect("statuses")[0];
        let w = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(
            w.message.as_deref(),
            Some("FailedCreatePodSandBox: CNI ADD failed")
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn unchanged_observation_gives_unchanged_status() {
        let mut p = pod("Always", &["a"]);
        let observed = ObservedPod {
            sandboxes: vec![sandbox(true)],
            containers: vec![ctr("c", "a", 0, RunState::Running, 0)],
        };
        let first = pod_status(&p, &observed, &BTreeMap::new(), None, "172.30.0.11", &now());
        p.status = Some(first.clone());
        let later = Time(Timestamp::from_second(2_000).expect("valid"));
        let second = pod_status(&p, &observed, &BTreeMap::new(), None, "172.30.0.11", &later);
        assert_eq!(
            first, second,
            "a resync with nothing new must not write the status again"
        );
    }

    #[test]
    fn terminal_phase_is_sticky() {
        let mut p = pod("Never", &["a"]);
        p.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            pod_ip: Some("10.244.1.5".into()),
            ..Default::default()
        });
        let observed = ObservedPod {
            sandboxes: vec![sandbox(false)],
            containers: vec![],
        };
        let st = pod_status(&p, &observed, &BTreeMap::new(), None, "172.30.0.11", &now());
        assert_eq!(st.phase.as_deref(), Some("Succeeded"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.244.1.5"));
    }
}
