//! What the runtime says exists for one pod, reduced to the fields the planner
//! and the status computation read. Built from CRI list/status answers; pure data.

use crate::cri;

/// Label on every sandbox and container the agent creates: the owning pod's uid.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label on every container: its name in the pod spec.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

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
