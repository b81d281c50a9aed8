//! A small typed client for containerd's CRI (runtime.v1) over its unix socket.
//!
//! It hides the generated request/response envelopes and maps gRPC failures
//! into [`CriError`], so the pod executor reads like a list of steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use cri::{
    Container, ContainerConfig, ContainerState, ContainerStatus, PodSandbox, PodSandboxConfig,
    PodSandboxState, PodSandboxStatus,
};

/// Ordinary calls answer in milliseconds; this bounds a hung runtime.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pulls and sandbox creation (CNI) may legitimately take longer.
const SLOW_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A failed CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {op} failed: {}", .status.message())]
    Call {
        op: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("CRI {op} returned no {what}")]
    Missing {
        op: &'static str,
        what: &'static str,
    },
}

impl CriError {
    /// The object the call named does not exist (already removed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// The runtime's own explanation (for pod status messages).
    pub fn message(&self) -> String {
        match self {
            CriError::Call { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, CriError>;

fn call_err(op: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Call { op, status }
}

fn req<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// The runtime's name and version, as reported by `Version`.
#[derive(Debug, Clone)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
}

/// A connected CRI client (runtime and image services share one channel).
#[derive(Debug, Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self> {
        let socket = path.to_path_buf();
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(|source| CriError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }

    pub async fn version(&self) -> Result<RuntimeVersion> {
        let r = self
            .runtime
            .clone()
            .version(req(
                cri::VersionRequest {
                    version: "v1".into(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("Version"))?
            .into_inner();
        Ok(RuntimeVersion {
            runtime_name: r.runtime_name,
            runtime_version: r.runtime_version,
        })
    }

    /// Creates and starts a sandbox (containerd runs the CNI ADD here).
    pub async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .run_pod_sandbox(req(
                cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                },
                SLOW_CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("RunPodSandbox"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// Stops a sandbox (containerd runs the CNI DEL here). Idempotent.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(req(
                cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.into(),
                },
                SLOW_CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(req(
                cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.into(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("RemovePodSandbox"))?;
        Ok(())
    }

    pub async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        self.runtime
            .clone()
            .pod_sandbox_status(req(
                cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.into(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("PodSandboxStatus"))?
            .into_inner()
            .status
            .ok_or(CriError::Missing {
                op: "PodSandboxStatus",
                what: "status",
            })
    }

    /// Lists sandboxes whose labels include every pair in `labels`.
    pub async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<PodSandbox>> {
        let filter = cri::PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        };
        let r = self
            .runtime
            .clone()
            .list_pod_sandbox(req(
                cri::ListPodSandboxRequest {
                    filter: Some(filter),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("ListPodSandbox"))?;
        Ok(r.into_inner().items)
    }

    /// Lists containers whose labels include every pair in `labels`.
    pub async fn list_containers(&self, labels: HashMap<String, String>) -> Result<Vec<Container>> {
        let filter = cri::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        };
        let r = self
            .runtime
            .clone()
            .list_containers(req(
                cri::ListContainersRequest {
                    filter: Some(filter),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("ListContainers"))?;
        Ok(r.into_inner().containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        self.runtime
            .clone()
            .container_status(req(
                cri::ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or(CriError::Missing {
                op: "ContainerStatus",
                what: "status",
            })
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .create_container(req(
                cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.into(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("CreateContainer"))?;
        Ok(r.into_inner().container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(req(
                cri::StartContainerRequest {
                    container_id: id.into(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("StartContainer"))?;
        Ok(())
    }

    /// Sends SIGTERM, then SIGKILL after `timeout_secs` (0 kills at once).
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        let grace = Duration::from_secs(timeout_secs.max(0).unsigned_abs());
        self.runtime
            .clone()
            .stop_container(req(
                cri::StopContainerRequest {
                    container_id: id.into(),
                    timeout: timeout_secs.max(0),
                },
                CALL_TIMEOUT + grace,
            ))
            .await
            .map_err(call_err("StopContainer"))?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_container(req(
                cri::RemoveContainerRequest {
                    container_id: id.into(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("RemoveContainer"))?;
        Ok(())
    }

    /// The image's id if the runtime has it locally, `None` if not.
    pub async fn image_status(&self, image: &str) -> Result<Option<String>> {
        let r = self
            .images
            .clone()
            .image_status(req(
                cri::ImageStatusRequest {
                    image: Some(image_spec(image)),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("ImageStatus"))?;
        Ok(r.into_inner().image.map(|i| i.id))
    }

    /// Pulls `image` and returns the runtime's reference for it.
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        let r = self
            .images
            .clone()
            .pull_image(req(
                cri::PullImageRequest {
                    image: Some(image_spec(image)),
                    auth: None,
                    sandbox_config: Some(sandbox_config),
                },
                SLOW_CALL_TIMEOUT,
            ))
            .await
            .map_err(call_err("PullImage"))?;
        Ok(r.into_inner().image_ref)
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        user_specified_image: image.to_string(),
        ..Default::default()
    }
}
