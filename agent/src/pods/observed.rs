//! What the runtime says exists for one pod, reduced to the fields the planner
//! and the status computation read. Built from CRI list/status answers; pure data.

use crate::cri;

/// Label on every sandbox and container the agent creates: the owning pod's uid.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label on every container: its name in the pod spec.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Label on every container: a hash of the spec it was created from, so a
/// changed spec (a new image on a bare pod) is noticed and the container replaced.
pub const LABEL_CONTAINER_HASH: &str = "weir.io/container-hash";

/// A pod sandbox as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// The pod IP, when the sandbox is ready and its network is set up.
    pub ip: Option<String>,
}

/// The lifecycle state of one container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl From<cri::ContainerState> for RunState {
    fn from(s: cri::ContainerState) -> Self {
        match s {
            cri::ContainerState::ContainerCreated => RunState::Created,
            cri::ContainerState::ContainerRunning => RunState::Running,
            cri::ContainerState::ContainerExited => RunState::Exited,
            cri::ContainerState::ContainerUnknown => RunState::Unknown,
        }
    }
}

/// One container instance (one attempt of one spec container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub sandbox_id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// Restart count of this instance (0 for the first run).
    pub attempt: u32,
    pub state: RunState,
    /// Nanoseconds since the epoch; 0 when not (yet) known.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The image as the runtime resolved it (for containerStatuses[].imageID).
    pub image_ref: String,
    /// [`LABEL_CONTAINER_HASH`]; `None` for containers the agent did not label.
    pub spec_hash: Option<String>,
}

/// Everything the runtime holds for one pod uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    pub sandboxes: Vec<ObservedSandbox>,
    pub containers: Vec<ObservedContainer>,
}

impl ObservedPod {
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }

    /// The newest sandbox (highest attempt, then newest creation).
    pub fn latest_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.attempt, s.created_at))
    }

    /// The newest instance of spec container `name` inside sandbox `sandbox_id`.
    pub fn latest_container(&self, sandbox_id: &str, name: &str) -> Option<&ObservedContainer> {
        self.instances(sandbox_id, name)
            .max_by_key(|c| (c.attempt, c.created_at))
    }

    /// The instance that ran before the latest one, if the runtime still keeps it.
    pub fn previous_container(&self, sandbox_id: &str, name: &str) -> Option<&ObservedContainer> {
        let latest = self.latest_container(sandbox_id, name)?;
        self.instances(sandbox_id, name)
            .filter(|c| c.id != latest.id)
            .max_by_key(|c| (c.attempt, c.created_at))
    }

    /// Every instance of spec container `name` inside sandbox `sandbox_id`.
    pub fn instances(
        &self,
        sandbox_id: &str,
        name: &str,
    ) -> impl Iterator<Item = &ObservedContainer> + use<'_> {
        let (sandbox_id, name) = (sandbox_id.to_owned(), name.to_owned());
        self.containers
            .iter()
            .filter(move |c| c.sandbox_id == sandbox_id && c.name == name)
    }
}

/// Converts a sandbox listing (plus, for ready sandboxes, its status) into an [`ObservedSandbox`].
pub fn sandbox_from_cri(
    s: &cri::PodSandbox,
    status: Option<&cri::PodSandboxStatus>,
) -> ObservedSandbox {
    let ip = status
        .and_then(|st| st.network.as_ref())
        .map(|n| n.ip.clone())
        .filter(|ip| !ip.is_empty());
    ObservedSandbox {
        id: s.id.clone(),
        attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
        ready: s.state() == cri::PodSandboxState::SandboxReady,
        created_at: s.created_at,
        ip,
    }
}

/// Converts a container listing (plus its status, when it could be read) into an [`ObservedContainer`].
pub fn container_from_cri(
    c: &cri::Container,
    status: Option<&cri::ContainerStatus>,
) -> ObservedContainer {
    let name = c
        .labels
        .get(LABEL_CONTAINER_NAME)
        .cloned()
        .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
        .unwrap_or_default();
    let mut o = ObservedContainer {
        id: c.id.clone(),
        sandbox_id: c.pod_sandbox_id.clone(),
        name,
        attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
        state: RunState::from(c.state()),
        created_at: c.created_at,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image_ref: c.image_ref.clone(),
        spec_hash: c.labels.get(LABEL_CONTAINER_HASH).cloned(),
    };
    if let Some(st) = status {
        o.state = RunState::from(st.state());
        o.started_at = st.started_at;
        o.finished_at = st.finished_at;
        o.exit_code = st.exit_code;
        o.reason = st.reason.clone();
        o.message = st.message.clone();
        if !st.image_ref.is_empty() {
            o.image_ref = st.image_ref.clone();
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_conversion() {
        let listed = cri::PodSandbox {
            id: "s1".into(),
            metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                attempt: 2,
                ..Default::default()
            }),
            state: cri::PodSandboxState::SandboxReady as i32,
            created_at: 7,
            ..Default::default()
        };
        let status = cri::PodSandboxStatus {
            network: Some(k8s_cri::v1::PodSandboxNetworkStatus {
                ip: "10.244.1.9".into(),
                additional_ips: vec![],
            }),
            ..Default::default()
        };
        let s = sandbox_from_cri(&listed, Some(&status));
        assert_eq!(
            s,
            ObservedSandbox {
                id: "s1".into(),
                attempt: 2,
                ready: true,
                created_at: 7,
                ip: Some("10.244.1.9".into())
            }
        );
        let not_ready = cri::PodSandbox {
            state: cri::PodSandboxState::SandboxNotready as i32,
            ..listed
        };
        let s = sandbox_from_cri(&not_ready, None);
        assert!(!s.ready);
        assert_eq!(s.ip, None, "no status, no IP");
    }

    #[test]
    fn container_conversion_prefers_the_status() {
        let listed = cri::Container {
            id: "c1".into(),
            pod_sandbox_id: "s1".into(),
            metadata: Some(k8s_cri::v1::ContainerMetadata {
                name: "meta-name".into(),
                attempt: 3,
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            labels: [(LABEL_CONTAINER_NAME.to_string(), "srv".to_string())].into(),
            image_ref: "sha256:listed".into(),
            ..Default::default()
        };
        let status = cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            started_at: 10,
            finished_at: 20,
            exit_code: 137,
            reason: "OOMKilled".into(),
            image_ref: "registry/x@sha256:abc".into(),
            ..Default::default()
        };
        let c = container_from_cri(&listed, Some(&status));
        assert_eq!(c.name, "srv", "the label names the spec container");
        assert_eq!(
            (c.attempt, c.state, c.exit_code),
            (3, RunState::Exited, 137)
        );
        assert_eq!((c.started_at, c.finished_at), (10, 20));
        assert_eq!(c.reason, "OOMKilled");
        assert_eq!(c.image_ref, "registry/x@sha256:abc");

        let unlabeled = cri::Container {
            labels: Default::default(),
            ..listed
        };
        let c = container_from_cri(&unlabeled, None);
        assert_eq!(c.name, "meta-name", "falls back to the CRI metadata name");
        assert_eq!(c.state, RunState::Running);
        assert_eq!(c.image_ref, "sha256:listed");
    }

    #[test]
    fn latest_and_previous_instances() {
        let c = |id: &str, sandbox: &str, attempt: u32| ObservedContainer {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: "a".into(),
            attempt,
            state: RunState::Exited,
            created_at: i64::from(attempt),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            spec_hash: None,
        };
        let o = ObservedPod {
            sandboxes: vec![],
            containers: vec![
                c("x0", "s0", 0),
                c("x1", "s1", 0),
                c("x2", "s1", 1),
                c("x3", "s1", 2),
            ],
        };
        assert_eq!(
            o.latest_container("s1", "a").map(|c| c.id.as_str()),
            Some("x3")
        );
        assert_eq!(
            o.previous_container("s1", "a").map(|c| c.id.as_str()),
            Some("x2")
        );
        assert_eq!(o.previous_container("s0", "a"), None);
        assert_eq!(o.latest_container("s1", "b"), None);
    }
}
