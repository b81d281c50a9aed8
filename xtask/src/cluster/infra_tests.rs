//! Privileged test of the cluster's infrastructure on its own (no weir
//! components): underlay, registries, test images, one containerd per node
//! that pulls the images through CRI and runs a pod sandbox; then `down` must
//! leave nothing behind.

use std::path::Path;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use tonic::transport::{Endpoint, Uri};

use super::cleanup;
use super::up::{Starting, block_on, link_cni_plugins};
use crate::images::Image;
use crate::layout::{Layout, NODE_REGISTRY_PORT};

async fn cri_channel(sock: &Path) -> tonic::transport::Channel {
    let sock = sock.to_path_buf();
    Endpoint::from_static("http://cri.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .expect("connect to the node's CRI socket")
}

/// Pulls every test image through the node's CRI, starts a sandbox (the pause
/// image) with host networking and the hostname image in it, and checks that
/// it answers with its hostname on :8080 inside the node's netns.
async fn pull_and_run(sock: &Path, netns: &str, log_dir: &Path) {
    let ch = cri_channel(sock).await;
    let mut images = cri::image_service_client::ImageServiceClient::new(ch.clone());
    for img in Image::ALL {
        let r = images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: img.reference(NODE_REGISTRY_PORT),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull {}: {e}", img.reference(NODE_REGISTRY_PORT)));
        assert!(r.into_inner().image_ref.starts_with("sha256:"));
    }
    let mut rt = cri::runtime_service_client::RuntimeServiceClient::new(ch);
    std::fs::create_dir_all(log_dir).expect("log dir");
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "infra".into(),
            uid: "infra-uid".into(),
            namespace: "xtask".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/weir-xtaskt-node1/podinfra".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run a sandbox from the pause image")
        .into_inner()
        .pod_sandbox_id;
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("status");
    assert_eq!(
        st.into_inner().status.expect("status").state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "hostname".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: Image::Hostname.reference(NODE_REGISTRY_PORT),
                    ..Default::default()
                }),
                log_path: "hostname.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("create the hostname container")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .expect("start");
    // Host network: the container shares the machine's UTS namespace too.
    let want = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let net = format!("--net=/run/netns/{netns}");
    let mut answer = String::new();
    for _ in 0..50 {
        let out = std::process::Command::new("nsenter")
            .args([
                net.as_str(),
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ])
            .output()
            .expect("wget");
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer.trim(),
        want.trim(),
        "the hostname image answers GET / with its hostname"
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: container,
        timeout: 5,
    })
    .await
    .expect("stop container");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("stop");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
}

#[test]
#[ignore = "privileged: creates netns, bridge, cgroups, registries and a containerd"]
fn infra_serves_images_to_each_node_and_down_removes_everything() {
    let _one_at_a_time = super::CLUSTER_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let layout = Layout::new("xtaskt").expect("layout");
    let _ = cleanup::down(&layout);
    let nodes = vec![layout.node(1), layout.node(2)];
    let result = std::panic::catch_unwind(|| {
        let mut s = Starting::new(
            &layout,
            &nodes,
            Path::new("/nonexistent"),
            super::state::Routing::Native,
        )
        .expect("prepare");
        link_cni_plugins(&layout, None).expect("cni bin dir");
        s.start_infra(&nodes).expect("infra");
        for n in &nodes {
            block_on(pull_and_run(
                &n.cri_socket,
                &n.netns,
                &n.pod_log_dir.join("infra"),
            ))
            .expect("runtime");
        }
        // The underlay works: node1 reaches node2 and the external client.
        let net = format!("--net=/run/netns/{}", nodes[0].netns);
        for ip in [nodes[1].ip.to_string(), layout.ext_ip().to_string()] {
            let ok = std::process::Command::new("nsenter")
                .args([net.as_str(), "/bin/busybox", "ping", "-c1", "-W2", &ip])
                .status()
                .expect("ping");
            assert!(ok.success(), "node1 cannot reach {ip}");
        }
    });
    cleanup::down(&layout).expect("down");
    // Nothing of the cluster is left (down checks this itself; be explicit here).
    assert_eq!(cleanup::leftovers(&layout), Vec::<String>::new());
    assert!(!Path::new(&format!("/sys/class/net/{}", layout.bridge())).exists());
    cleanup::down(&layout).expect("down twice is fine");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
