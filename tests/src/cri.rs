//! A view of a node's containerd through CRI, to check what really runs (the
//! API's view alone could hide leaked sandboxes or containers), and to run a
//! command in a pod's container the way kubelet's exec does (ExecSync).

use std::path::Path;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use cri::{Container, PodSandbox};

pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects to a CRI unix socket (it works from the host netns: a socket
    /// path is not bound to a network namespace).
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let sock = socket.to_path_buf();
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let sock = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(sock).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("cannot connect to CRI at {}", socket.display()))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel),
        })
    }

    /// Every pod sandbox containerd knows (ready or not).
    pub async fn sandboxes(&self) -> Result<Vec<PodSandbox>> {
        let r = self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .context("ListPodSandbox")?;
        Ok(r.into_inner().items)
    }

    /// Every container containerd knows (running or not).
    pub async fn containers(&self) -> Result<Vec<Container>> {
        let r = self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .context("ListContainers")?;
        Ok(r.into_inner().containers)
    }

    /// The sandboxes of the pod with `uid` (from the CRI metadata the agent sets).
    pub async fn sandboxes_of(&self, uid: &str) -> Result<Vec<PodSandbox>> {
        Ok(self
            .sandboxes()
            .await?
            .into_iter()
            .filter(|s| s.metadata.as_ref().is_some_and(|m| m.uid == uid))
            .collect())
    }

    /// The running containers of the pod with `uid`.
    pub async fn running_containers_of(&self, uid: &str) -> Result<Vec<Container>> {
        let sandboxes: Vec<String> = self
            .sandboxes_of(uid)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|c| sandboxes.contains(&c.pod_sandbox_id))
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .collect())
    }

    /// Runs `cmd` in container `id` and waits for it (at most `timeout_secs`).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout_secs: i64,
    ) -> Result<ExecOutput> {
        let r = self
            .runtime
            .clone()
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.to_vec(),
                timeout: timeout_secs,
            })
            .await
            .with_context(|| format!("ExecSync in container {id}"))?
            .into_inner();
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        })
    }
}

/// What an ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}
