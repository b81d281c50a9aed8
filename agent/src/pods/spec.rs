//! Pure translation of a Pod into CRI sandbox and container configurations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::observed::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};

/// Node-wide settings the CRI configurations depend on.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// cgroup parent of all pods on this node, e.g. `/weir-weir-node1`.
    pub cgroup_parent: String,
    /// Root directory of pod logs.
    pub pod_log_dir: PathBuf,
}

/// namespace/name/uid of a pod; the uid is the key everything is tracked by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PodRef {
    /// The pod's identity, or `None` when the object lacks a name or uid
    /// (the API server always sets both; anything else is ignored).
    pub fn of(pod: &Pod) -> Option<PodRef> {
        let m = &pod.metadata;
        Some(PodRef {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().filter(|n| !n.is_empty())?,
            uid: m.uid.clone().filter(|u| !u.is_empty())?,
        })
    }
}

/// The pod-level cgroup parent: `<node parent>/pod<uid>`.
pub fn pod_cgroup_parent(node_parent: &str, uid: &str) -> String {
    format!("{}/pod{}", node_parent.trim_end_matches('/'), uid)
}

/// The pod's log directory, `<root>/<namespace>_<name>_<uid>` (kubelet's layout).
pub fn pod_log_directory(root: &Path, pod: &PodRef) -> PathBuf {
    root.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
}

/// A container's log path relative to the pod log directory: `<container>/<restartCount>.log`.
pub fn container_log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

fn pod_labels(pod: &Pod, r: &PodRef) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> =
        pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(LABEL_POD_UID.into(), r.uid.clone());
    labels.insert(LABEL_POD_NAME.into(), r.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), r.namespace.clone());
    labels
}

fn shares_pid_namespace(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.share_process_namespace).unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let pid = if shares_pid_namespace(pod) { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container };
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The sandbox configuration for `pod`'s `attempt`-th sandbox.
pub fn sandbox_config(pod: &Pod, r: &PodRef, env: &NodeEnv, attempt: u32) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: r.name.clone(),
            uid: r.uid.clone(),
            namespace: r.namespace.clone(),
            attempt,
        }),
        hostname: pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| r.name.clone()),
        log_directory: pod_log_directory(&env.pod_log_dir, r).to_string_lossy().into_owned(),
        dns_config: None,
        port_mappings: Vec::new(),
        labels: pod_labels(pod, r),
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup_parent(&env.cgroup_parent, &r.uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The configuration for `container`'s `attempt`-th instance.
///
/// Only literal `env[].value`s are passed; `valueFrom` needs the downward API
/// and ConfigMaps, which the agent does not resolve yet.
pub fn container_config(pod: &Pod, r: &PodRef, container: &Container, attempt: u32) -> cri::ContainerConfig {
    let mut labels = HashMap::new();
    labels.insert(LABEL_POD_UID.to_string(), r.uid.clone());
    labels.insert(LABEL_POD_NAME.to_string(), r.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.to_string(), r.namespace.clone());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), container.name.clone());
    let envs = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_ref().map(|v| cri::KeyValue { key: e.name.clone(), value: v.clone() }))
        .collect();
    let image = container.image.clone().unwrap_or_default();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: container.name.clone(), attempt }),
        image: Some(cri::ImageSpec { image: image.clone(), user_specified_image: image, ..Default::default() }),
        command: container.command.clone().unwrap_or_default(),
        args: container.args.clone().unwrap_or_default(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        labels,
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        log_path: container_log_path(&container.name, attempt),
        tty: container.tty.unwrap_or(false),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources::default()),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> (Pod, PodRef) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("default".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "srv".into(),
                    image: Some("127.0.0.1:5000/weir/hostname:v1".into()),
                    command: Some(vec!["/hostname".into()]),
                    args: Some(vec!["-p".into(), "8080".into()]),
                    working_dir: Some("/tmp".into()),
                    env: Some(vec![
                        EnvVar { name: "A".into(), value: Some("1".into()), value_from: None },
                        EnvVar {
                            name: "B".into(),
                            value: None,
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    api_version: None,
                                }),
                                ..Default::default()
                            }),
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let r = PodRef::of(&pod).expect("complete pod");
        (pod, r)
    }

    fn env() -> NodeEnv {
        NodeEnv { cgroup_parent: "/weir-weir-node1".into(), pod_log_dir: "/var/log/weir/pods".into() }
    }

    #[test]
    fn sandbox_carries_identity_hostname_logs_and_cgroup() {
        let (p, r) = pod();
        let c = sandbox_config(&p, &r, &env(), 2);
        let m = c.metadata.expect("metadata");
        assert_eq!((m.name.as_str(), m.namespace.as_str(), m.uid.as_str(), m.attempt), ("web-1", "default", "u-1", 2));
        assert_eq!(c.hostname, "web-1");
        assert_eq!(c.log_directory, "/var/log/weir/pods/default_web-1_u-1");
        assert_eq!(c.linux.expect("linux").cgroup_parent, "/weir-weir-node1/podu-1");
        assert_eq!(c.labels.get(LABEL_POD_UID).map(String::as_str), Some("u-1"));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert!(c.port_mappings.is_empty());
    }

    #[test]
    fn container_maps_command_args_env_and_log_path() {
        let (p, r) = pod();
        let spec = &p.spec.as_ref().expect("spec").containers[0];
        let c = container_config(&p, &r, spec, 3);
        assert_eq!(c.command, vec!["/hostname"]);
        assert_eq!(c.args, vec!["-p", "8080"]);
        assert_eq!(c.working_dir, "/tmp");
        assert_eq!(c.envs, vec![cri::KeyValue { key: "A".into(), value: "1".into() }]);
        assert_eq!(c.log_path, "srv/3.log");
        assert_eq!(c.metadata.expect("metadata").attempt, 3);
        assert_eq!(c.labels.get(LABEL_CONTAINER_NAME).map(String::as_str), Some("srv"));
        assert_eq!(c.labels.get(LABEL_POD_UID).map(String::as_str), Some("u-1"));
    }

    #[test]
    fn pod_without_uid_is_ignored() {
        let (mut p, _) = pod();
        p.metadata.uid = None;
        assert_eq!(PodRef::of(&p), None);
    }
}
