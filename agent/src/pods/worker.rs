//! One pod worker per pod uid: observe the runtime, plan, execute, report status.
//!
//! Workers run concurrently, so a pod that takes its whole grace period to stop
//! does not hold up the others. Each owns the little memory the planner needs
//! (pull failures) and exits once the pod is gone everywhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};
use weir_client::DeleteParams;

use super::isolation::{Admitted, Isolation, isolation};
use super::observed::{LABEL_POD_UID, ObservedPod, container_from_cri, sandbox_from_cri};
use super::plan::{Action, PullFailure, plan};
use super::spec::{
    NodeEnv, PodRef, RuntimeFields, container_config, container_env, pod_cgroup_parent,
    pod_log_directory, sandbox_config, uses_host_network,
};
use super::status::pod_status;
use crate::cgroup::{CgroupError, Cgroups};
use crate::clock::{now_ns, now_time};
use crate::cri::{CriClient, CriError};

/// Told when a sandbox's network is up, before its containers start: the
/// datapath attaches its programs to the new host-side veth here.
pub trait NetworkHook: Send + Sync + 'static {
    fn sandbox_network_ready(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// The NetworkPolicy sync, when the datapath enforces policy: no
    /// container starts before the policy maps include its pod's address.
    fn policy(&self) -> Option<&weir_datapath::policy::PolicyHandle> {
        None
    }
}

/// Everything workers share.
pub struct WorkerContext {
    pub cri: CriClient,
    pub api: weir_client::Client,
    pub cgroups: Cgroups,
    pub env: NodeEnv,
    pub node_ip: String,
    pub network: Arc<dyn NetworkHook>,
    /// How often a worker re-reads its pod's state from the runtime. containerd
    /// 1.6 has no CRI event stream, so exits are found by polling (kubelet's
    /// PLEG relists every second too).
    pub poll: Duration,
}

/// How long a worker waits for the policy maps to include a new pod before
/// it gives up this round (the container is not started; the next round
/// tries again).
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A round failed; the worker retries after a pause.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error(transparent)]
    Api(#[from] weir_client::Error),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} is not in the pod spec")]
    UnknownContainer(String),
    #[error("not starting containers before NetworkPolicy covers the pod: {0}")]
    Policy(#[from] weir_datapath::policy::AdmitError),
}

enum Outcome {
    /// Nothing left to do until something changes.
    Idle,
    /// A new sandbox exists: plan again right away to start its containers.
    Again,
    /// The pod is gone from the API and the runtime.
    Done,
}

/// Finished pods are polled this many times less often than running ones.
const IDLE_POLL_FACTOR: u32 = 10;

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs until the pod is gone from the API and the runtime.
pub async fn run_worker(
    ctx: Arc<WorkerContext>,
    uid: String,
    mut pod_rx: watch::Receiver<Option<Pod>>,
) {
    let mut state = WorkerState::default();
    let mut failures = 0u32;
    // Replan at once after a new sandbox, but only once in a row: a sandbox
    // that dies as soon as it starts must not be recreated in a tight loop.
    let mut replanned = false;
    loop {
        let pod = pod_rx.borrow_and_update().clone();
        let span = info_span!("pod", uid = %uid, pod = %pod.as_ref().and_then(PodRef::of).map(|r| r.to_string()).unwrap_or_default());
        let result = state
            .round(&ctx, &uid, pod.as_ref())
            .instrument(span.clone())
            .await;
        let pause = match result {
            Ok(Outcome::Done) => {
                info!(parent: &span, "pod cleaned up");
                return;
            }
            Ok(Outcome::Again) if !replanned => {
                replanned = true;
                continue;
            }
            Ok(Outcome::Again | Outcome::Idle) => {
                failures = 0;
                // A finished pod changes only when it is deleted (a watch
                // event wakes the worker), so it needs no fast polling.
                if pod.as_ref().is_some_and(is_finished) {
                    ctx.poll * IDLE_POLL_FACTOR
                } else {
                    ctx.poll
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                warn!(parent: &span, error = %error, failures, "pod round failed; will retry");
                Duration::from_secs(1u64 << failures.min(5)).max(ctx.poll)
            }
        };
        replanned = false;
        tokio::select! {
            changed = pod_rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[derive(Default)]
struct WorkerState {
    /// Image pull failures by container name.
    pull_failures: BTreeMap<String, PullFailure>,
    /// Why the last RunPodSandbox failed, until one succeeds (shown in the status).
    sandbox_error: Option<String>,
    /// The last status this worker wrote and the resourceVersion it got.
    last_written: Option<Written>,
    /// Runtime reads that cannot change, so each poll need not repeat them.
    cache: ObserveCache,
    /// The sandbox the policy maps were confirmed to include.
    admitted: Option<Admitted>,
}

impl WorkerState {
    async fn round(
        &mut self,
        ctx: &WorkerContext,
        uid: &str,
        pod: Option<&Pod>,
    ) -> Result<Outcome, WorkerError> {
        let observed = observe(&ctx.cri, uid, &mut self.cache).await?;
        let plan = plan(pod, &observed, &self.pull_failures, now_ns());
        if plan.done {
            return Ok(Outcome::Done);
        }
        let pod_ref = pod.and_then(PodRef::of);
        let mut again = false;
        let pod_ip = observed
            .latest_sandbox()
            .filter(|s| s.ready)
            .and_then(|s| s.ip.clone());
        let mut failed = None;
        for action in &plan.actions {
            debug!(?action, "executing");
            match self
                .execute(ctx, uid, pod, pod_ref.as_ref(), pod_ip.as_deref(), action)
                .await
            {
                Ok(Step::Continue) => {}
                Ok(Step::Replan) => again = true,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Report the status even after a failed step, so the failure shows on the pod.
        if let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let observed = if plan.actions.is_empty() {
                observed
            } else {
                observe(&ctx.cri, uid, &mut self.cache).await?
            };
            self.report_status(ctx, pod, &observed).await?;
        }
        match failed {
            Some(e) => Err(e),
            None if again => Ok(Outcome::Again),
            None => Ok(Outcome::Idle),
        }
    }

    async fn execute(
        &mut self,
        ctx: &WorkerContext,
        uid: &str,
        pod: Option<&Pod>,
        pod_ref: Option<&PodRef>,
        pod_ip: Option<&str>,
        action: &Action,
    ) -> Result<Step, WorkerError> {
        match action {
            Action::CreateSandbox { attempt } => {
                let (Some(pod), Some(r)) = (pod, pod_ref) else {
                    return Ok(Step::Continue);
                };
                ctx.cgroups
                    .create(&pod_cgroup_parent(&ctx.env.cgroup_parent, uid))?;
                let log_dir = pod_log_directory(&ctx.env.pod_log_dir, r);
                create_dir(&log_dir)?;
                let id = match ctx
                    .cri
                    .run_pod_sandbox(sandbox_config(pod, r, &ctx.env, *attempt))
                    .await
                {
                    Ok(id) => id,
                    Err(e) => {
                        self.sandbox_error = Some(e.message());
                        return Err(e.into());
                    }
                };
                self.sandbox_error = None;
                info!(sandbox = %id, attempt, "sandbox running");
                // Attach the datapath before any container can send a packet.
                if let Err(error) = ctx.network.sandbox_network_ready() {
                    warn!(error = %error, sandbox = %id, "datapath could not attach to the new pod interface");
                }
                Ok(Step::Replan)
            }
            Action::StartContainer {
                sandbox_id,
                container,
                attempt,
            } => {
                let (Some(pod), Some(r)) = (pod, pod_ref) else {
                    return Ok(Step::Continue);
                };
                let pod_ip = if uses_host_network(pod) {
                    Some(ctx.node_ip.as_str())
                } else {
                    pod_ip
                };
                self.ensure_isolated(ctx, uid, pod, sandbox_id, pod_ip)
                    .await?;
                let target = StartTarget {
                    pod,
                    r,
                    sandbox_id,
                    name: container,
                    attempt: *attempt,
                    pod_ip,
                };
                self.start_container(ctx, target).await?;
                Ok(Step::Continue)
            }
            Action::StopContainer { id, timeout_secs } => {
                info!(container = %id, timeout_secs, "stopping container");
                ignore_not_found(ctx.cri.stop_container(id, *timeout_secs).await)?;
                Ok(Step::Continue)
            }
            Action::RemoveContainer { id } => {
                ignore_not_found(ctx.cri.remove_container(id).await)?;
                Ok(Step::Continue)
            }
            Action::StopSandbox { id } => {
                info!(sandbox = %id, "stopping sandbox");
                ignore_not_found(ctx.cri.stop_pod_sandbox(id).await)?;
                Ok(Step::Continue)
            }
            Action::RemoveSandbox { id } => {
                ignore_not_found(ctx.cri.remove_pod_sandbox(id).await)?;
                Ok(Step::Continue)
            }
            Action::RemovePodResources => {
                ctx.cgroups
                    .remove(&pod_cgroup_parent(&ctx.env.cgroup_parent, uid))?;
                remove_pod_logs(&ctx.env.pod_log_dir, uid)?;
                Ok(Step::Continue)
            }
            Action::DeletePod => {
                let Some(r) = pod_ref else {
                    return Ok(Step::Continue);
                };
                // Only the version we tore down: never a same-named pod created since.
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    resource_version: pod
                        .and_then(|p| p.metadata.resource_version.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                };
                match ctx.api.delete::<Pod>(&r.namespace, &r.name, &params).await {
                    Ok(_) => info!("pod deleted"),
                    Err(e) if e.is_not_found() => {}
                    // Changed meanwhile: the watch brings the new version, and the next round retries.
                    Err(e) if e.is_conflict() => {
                        debug!(error = %e, "pod changed before its final delete")
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(Step::Continue)
            }
        }
    }

    /// Before a container starts in `sandbox_id`: makes sure the policy maps
    /// include the pod with the sandbox's address (see `isolation`). On
    /// failure the container is not started, a Warning Event says why, and
    /// the round fails (the worker retries with back-off).
    async fn ensure_isolated(
        &mut self,
        ctx: &WorkerContext,
        uid: &str,
        pod: &Pod,
        sandbox_id: &str,
        pod_ip: Option<&str>,
    ) -> Result<(), WorkerError> {
        let Some(policy) = ctx.network.policy() else {
            return Ok(());
        };
        let Isolation::Admit(info) = isolation(pod, sandbox_id, pod_ip, self.admitted.as_ref())
        else {
            return Ok(());
        };
        let Some(ip) = info.ip else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        match policy.admit(uid, *info, ADMIT_TIMEOUT).await {
            Ok(()) => {
                debug!(%ip, elapsed = ?started.elapsed(), "NetworkPolicy covers the pod");
                self.admitted = Some(Admitted {
                    sandbox_id: sandbox_id.to_string(),
                    ip,
                });
                Ok(())
            }
            Err(error) => {
                let recorder =
                    weir_client::events::Recorder::new(ctx.api.clone(), "weir-agent", None);
                let regarding = weir_client::events::reference(pod);
                let message = format!("containers not started: {error}");
                tokio::spawn(async move {
                    if let Err(e) = recorder
                        .warning(&regarding, "NetworkPolicyPending", &message)
                        .await
                    {
                        debug!(error = %e, "could not record event");
                    }
                });
                Err(error.into())
            }
        }
    }

    /// Ensures the image (per imagePullPolicy), then creates and starts the container.
    /// A failed pull is remembered for the status and the back-off, not returned.
    async fn start_container(
        &mut self,
        ctx: &WorkerContext,
        t: StartTarget<'_>,
    ) -> Result<(), WorkerError> {
        let StartTarget {
            pod,
            r,
            sandbox_id,
            name,
            attempt,
            pod_ip,
        } = t;
        let spec = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .ok_or_else(|| WorkerError::UnknownContainer(name.to_string()))?;
        let image = spec.image.clone().unwrap_or_default();
        let policy = spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&image).to_string());
        let sandbox_cfg = sandbox_config(pod, r, &ctx.env, 0);

        let present = if policy == "Always" {
            false
        } else {
            ctx.cri.image_status(&image).await?.is_some()
        };
        match pull_decision(&policy, present) {
            PullDecision::UseLocal => {}
            PullDecision::NeverPull => {
                self.record_pull_failure(
                    name,
                    format!("image {image} is not present and imagePullPolicy is Never"),
                    true,
                );
                return Ok(());
            }
            PullDecision::Pull => {
                info!(image = %image, container = name, "pulling image");
                match ctx.cri.pull_image(&image, sandbox_cfg.clone()).await {
                    Ok(image_ref) => debug!(image_ref = %image_ref, "pulled"),
                    Err(error) => {
                        warn!(error = %error, image = %image, container = name, "image pull failed");
                        self.record_pull_failure(name, error.message(), false);
                        return Ok(());
                    }
                }
            }
        }
        self.pull_failures.remove(name);

        create_dir(&pod_log_directory(&ctx.env.pod_log_dir, r).join(name))?;
        let fields = RuntimeFields {
            pod_ip: pod_ip.map(str::to_string),
            host_ip: ctx.node_ip.clone(),
        };
        let (envs, unresolved) = container_env(pod, r, spec, &fields);
        if !unresolved.is_empty() {
            warn!(container = name, variables = ?unresolved, "environment variables left unset (only value and fieldRef are supported)");
        }
        let config = container_config(pod, r, spec, attempt, envs);
        let id = ctx
            .cri
            .create_container(sandbox_id, config, sandbox_cfg)
            .await?;
        if let Err(error) = ctx.cri.start_container(&id).await {
            // containerd marks an instance that failed to start as exited
            // (reason StartError, exit code 128): keep it, so the status shows
            // why and the restart policy and back-off apply as for a crash.
            warn!(error = %error, container = name, id = %id, "container failed to start");
            return Ok(());
        }
        info!(container = name, id = %id, attempt, "container started");
        Ok(())
    }

    fn record_pull_failure(&mut self, name: &str, message: String, never_pull: bool) {
        let count = self.pull_failures.get(name).map_or(0, |f| f.count) + 1;
        self.pull_failures.insert(
            name.to_string(),
            PullFailure {
                at_ns: now_ns(),
                count,
                message,
                never_pull,
            },
        );
    }

    /// Writes the pod status when it differs from what the API shows.
    async fn report_status(
        &mut self,
        ctx: &WorkerContext,
        pod: &Pod,
        observed: &ObservedPod,
    ) -> Result<(), WorkerError> {
        let now = now_time();
        let status = pod_status(
            pod,
            observed,
            &self.pull_failures,
            self.sandbox_error.as_deref(),
            &ctx.node_ip,
            &now,
        );
        if !needs_status_write(pod, &status, self.last_written.as_ref()) {
            return Ok(());
        }
        let mut updated = pod.clone();
        updated.status = Some(status.clone());
        let written = match ctx.api.update_status(&updated).await {
            Ok(p) => p,
            Err(e) if e.is_conflict() => {
                // Someone else wrote the pod meanwhile: write onto the newest version once.
                let Some(r) = PodRef::of(pod) else {
                    return Ok(());
                };
                let Some(mut fresh) = ctx.api.get_opt::<Pod>(&r.namespace, &r.name).await? else {
                    return Ok(());
                };
                if fresh.metadata.uid != pod.metadata.uid {
                    return Ok(());
                }
                fresh.status = Some(status.clone());
                ctx.api.update_status(&fresh).await?
            }
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        debug!(phase = ?status.phase, "status written");
        self.last_written = Some(Written {
            status,
            version: resource_version(&written),
        });
        Ok(())
    }
}

/// A status the worker wrote, and the pod's resourceVersion after the write.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    status: PodStatus,
    version: u64,
}

/// resourceVersions are etcd revisions: numbers that only grow. 0 if absent.
fn resource_version(pod: &Pod) -> u64 {
    pod.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Should `computed` be written? Not if the pod already shows it, nor if this
/// worker wrote it and the pod in hand predates (or is) that write — the watch
/// just has not caught up, or the server normalised what was written. Yes if
/// someone else changed the status after our write.
fn needs_status_write(pod: &Pod, computed: &PodStatus, last: Option<&Written>) -> bool {
    if pod.status.as_ref() == Some(computed) {
        return false;
    }
    match last {
        Some(w) if &w.status == computed => resource_version(pod) > w.version,
        _ => true,
    }
}

/// Which container instance to start, and where.
struct StartTarget<'a> {
    pod: &'a Pod,
    r: &'a PodRef,
    sandbox_id: &'a str,
    name: &'a str,
    attempt: u32,
    /// For `status.podIP` in the downward API.
    pod_ip: Option<&'a str>,
}

enum Step {
    Continue,
    Replan,
}

/// What to do about a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullDecision {
    Pull,
    UseLocal,
    NeverPull,
}

/// Kubernetes' default: `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// imagePullPolicy against whether the runtime already has the image.
pub fn pull_decision(policy: &str, present: bool) -> PullDecision {
    match (policy, present) {
        ("Always", _) => PullDecision::Pull,
        ("Never", true) | ("IfNotPresent", true) => PullDecision::UseLocal,
        ("Never", false) => PullDecision::NeverPull,
        _ => PullDecision::Pull,
    }
}

/// Runtime reads [`observe`] keeps between polls because they cannot change.
#[derive(Default)]
pub struct ObserveCache {
    /// Status of each ready sandbox by id (only its IP is used; a sandbox's
    /// network is set up before it is ready and stays until it is removed).
    sandboxes: HashMap<String, crate::cri::PodSandboxStatus>,
    /// Status of each exited container by id (an exited container is final).
    exited: HashMap<String, crate::cri::ContainerStatus>,
}

/// Reads everything the runtime holds for pod `uid`.
pub async fn observe(
    cri: &CriClient,
    uid: &str,
    cache: &mut ObserveCache,
) -> Result<ObservedPod, CriError> {
    let labels: HashMap<String, String> = [(LABEL_POD_UID.to_string(), uid.to_string())].into();
    let mut observed = ObservedPod::default();
    let mut sandboxes = HashMap::new();
    for s in cri.list_pod_sandboxes(labels.clone()).await? {
        let status = if s.state() == crate::cri::PodSandboxState::SandboxReady {
            let status = match cache.sandboxes.remove(&s.id) {
                Some(st) => st,
                None => match cri.pod_sandbox_status(&s.id).await {
                    Ok(st) => st,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                },
            };
            Some(sandboxes.entry(s.id.clone()).or_insert(status))
        } else {
            None
        };
        observed
            .sandboxes
            .push(sandbox_from_cri(&s, status.as_deref()));
    }
    cache.sandboxes = sandboxes;
    let mut exited = HashMap::new();
    for c in cri.list_containers(labels).await? {
        let status = match cache.exited.remove(&c.id) {
            Some(st) => st,
            None => match cri.container_status(&c.id).await {
                Ok(st) => st,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            },
        };
        observed
            .containers
            .push(container_from_cri(&c, Some(&status)));
        if status.state() == crate::cri::ContainerState::ContainerExited {
            exited.insert(c.id.clone(), status);
        }
    }
    cache.exited = exited;
    Ok(observed)
}

fn ignore_not_found(r: Result<(), CriError>) -> Result<(), CriError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

fn create_dir(path: &std::path::Path) -> Result<(), WorkerError> {
    std::fs::create_dir_all(path).map_err(|source| WorkerError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Removes `<pod-log-dir>/<ns>_<name>_<uid>` (found by uid, so orphans whose
/// name is unknown are cleaned too).
fn remove_pod_logs(root: &std::path::Path, uid: &str) -> Result<(), WorkerError> {
    let io_err = |source| WorkerError::Io {
        path: root.display().to_string(),
        source,
    };
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    let suffix = format!("_{uid}");
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            std::fs::remove_dir_all(entry.path()).map_err(io_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_writes() {
        let status = |phase: &str| PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        };
        let pod = |phase: Option<&str>, rv: &str| Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: None,
            status: phase.map(status),
        };
        let wrote_running_at_10 = Written {
            status: status("Running"),
            version: 10,
        };
        let cases = [
            (
                "pod already shows it",
                pod(Some("Running"), "12"),
                None,
                false,
            ),
            ("first write", pod(Some("Pending"), "5"), None, true),
            (
                "watch lags behind our write",
                pod(Some("Pending"), "9"),
                Some(&wrote_running_at_10),
                false,
            ),
            (
                "server normalised our write",
                pod(Some("Pending"), "10"),
                Some(&wrote_running_at_10),
                false,
            ),
            (
                "someone changed it after us",
                pod(Some("Pending"), "11"),
                Some(&wrote_running_at_10),
                true,
            ),
        ];
        for (name, p, last, want) in cases {
            assert_eq!(
                needs_status_write(&p, &status("Running"), last),
                want,
                "{name}"
            );
        }
        let other = Written {
            status: status("Pending"),
            version: 10,
        };
        assert!(
            needs_status_write(&pod(Some("Pending"), "9"), &status("Running"), Some(&other)),
            "a new status is written"
        );
    }

    #[test]
    fn default_pull_policies() {
        let cases = [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("127.0.0.1:5000/weir/hostname:v1", "IfNotPresent"),
            ("127.0.0.1:5000/weir/hostname", "Always"),
            ("registry/x@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn pull_decisions() {
        use PullDecision::*;
        let cases = [
            ("Always", true, Pull),
            ("Always", false, Pull),
            ("IfNotPresent", true, UseLocal),
            ("IfNotPresent", false, Pull),
            ("Never", true, UseLocal),
            ("Never", false, NeverPull),
        ];
        for (policy, present, want) in cases {
            assert_eq!(
                pull_decision(policy, present),
                want,
                "{policy} present={present}"
            );
        }
    }
}
