//! Pure translation of a Pod into CRI sandbox and container configurations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::observed::{
    LABEL_CONTAINER_HASH, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};

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
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(LABEL_POD_UID.into(), r.uid.clone());
    labels.insert(LABEL_POD_NAME.into(), r.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), r.namespace.clone());
    labels
}

fn shares_pid_namespace(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
}

/// `spec.hostNetwork`: the pod shares the node's network namespace (no CNI, pod IP = node IP).
pub fn uses_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let pid = if shares_pid_namespace(pod) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    let network = if uses_host_network(pod) {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    cri::NamespaceOption {
        network: network as i32,
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
        // A host-network pod has no UTS namespace of its own (runc refuses to set a hostname there).
        hostname: if uses_host_network(pod) {
            String::new()
        } else {
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .unwrap_or_else(|| r.name.clone())
        },
        log_directory: pod_log_directory(&env.pod_log_dir, r)
            .to_string_lossy()
            .into_owned(),
        dns_config: None,
        port_mappings: Vec::new(),
        labels: pod_labels(pod, r),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
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

/// A stable hash of a container's spec (FNV-1a over its JSON form; the
/// k8s-openapi serialization has a fixed field order), hex-encoded.
pub fn container_hash(container: &Container) -> String {
    let bytes = serde_json::to_vec(container).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Values the downward API (`env[].valueFrom.fieldRef`) can read that are not in the Pod object yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeFields {
    pub pod_ip: Option<String>,
    pub host_ip: String,
}

/// The value of a `fieldRef` path, for the paths kubelet supports in env vars.
fn field_value(pod: &Pod, r: &PodRef, fields: &RuntimeFields, path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => Some(r.name.clone()),
        "metadata.namespace" => Some(r.namespace.clone()),
        "metadata.uid" => Some(r.uid.clone()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => Some(fields.host_ip.clone()),
        "status.podIP" => fields.pod_ip.clone(),
        _ => {
            let key = path.strip_prefix("metadata.labels['")?.strip_suffix("']");
            let annotation = path
                .strip_prefix("metadata.annotations['")
                .and_then(|p| p.strip_suffix("']"));
            match (key, annotation) {
                (Some(k), _) => pod.metadata.labels.as_ref()?.get(k).cloned(),
                (_, Some(a)) => pod.metadata.annotations.as_ref()?.get(a).cloned(),
                _ => None,
            }
        }
    }
}

/// Expands `$(VAR)` references with the variables defined so far, like
/// kubelet: undefined references stay as written, `$$` is a literal `$`.
pub fn expand(input: &str, vars: &[cri::KeyValue]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(name_end) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=name_end];
            match vars.iter().rev().find(|kv| kv.key == name) {
                Some(kv) => out.push_str(&kv.value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &after[name_end + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment: literal values (with `$(VAR)` expanded) and
/// downward-API `fieldRef`s. Returns the names it could not resolve
/// (ConfigMap/Secret/resource references are not supported yet).
pub fn container_env(
    pod: &Pod,
    r: &PodRef,
    container: &Container,
    fields: &RuntimeFields,
) -> (Vec<cri::KeyValue>, Vec<String>) {
    let mut envs: Vec<cri::KeyValue> = Vec::new();
    let mut unresolved = Vec::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(expand(v, &envs)),
            (None, Some(from)) => from
                .field_ref
                .as_ref()
                .and_then(|f| field_value(pod, r, fields, &f.field_path)),
            (None, None) => Some(String::new()),
        };
        match value {
            Some(value) => envs.push(cri::KeyValue {
                key: e.name.clone(),
                value,
            }),
            None => unresolved.push(e.name.clone()),
        }
    }
    (envs, unresolved)
}

/// The configuration for `container`'s `attempt`-th instance, with `envs`
/// from [`container_env`] (command and args have `$(VAR)` expanded with them).
pub fn container_config(
    pod: &Pod,
    r: &PodRef,
    container: &Container,
    attempt: u32,
    envs: Vec<cri::KeyValue>,
) -> cri::ContainerConfig {
    let mut labels = HashMap::new();
    labels.insert(LABEL_POD_UID.to_string(), r.uid.clone());
    labels.insert(LABEL_POD_NAME.to_string(), r.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.to_string(), r.namespace.clone());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), container.name.clone());
    labels.insert(LABEL_CONTAINER_HASH.to_string(), container_hash(container));
    let image = container.image.clone().unwrap_or_default();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: image.clone(),
            user_specified_image: image,
            ..Default::default()
        }),
        command: container
            .command
            .iter()
            .flatten()
            .map(|c| expand(c, &envs))
            .collect(),
        args: container
            .args
            .iter()
            .flatten()
            .map(|a| expand(a, &envs))
            .collect(),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
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
                    args: Some(vec!["-p".into(), "8080".into(), "--name=$(B)".into()]),
                    working_dir: Some("/tmp".into()),
                    env: Some(vec![
                        EnvVar {
                            name: "A".into(),
                            value: Some("1".into()),
                            value_from: None,
                        },
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
        NodeEnv {
            cgroup_parent: "/weir-weir-node1".into(),
            pod_log_dir: "/var/log/weir/pods".into(),
        }
    }

    #[test]
    fn sandbox_carries_identity_hostname_logs_and_cgroup() {
        let (p, r) = pod();
        let c = sandbox_config(&p, &r, &env(), 2);
        let m = c.metadata.expect("metadata");
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("web-1", "default", "u-1", 2)
        );
        assert_eq!(c.hostname, "web-1");
        assert_eq!(c.log_directory, "/var/log/weir/pods/default_web-1_u-1");
        assert_eq!(
            c.linux.expect("linux").cgroup_parent,
            "/weir-weir-node1/podu-1"
        );
        assert_eq!(c.labels.get(LABEL_POD_UID).map(String::as_str), Some("u-1"));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("web"));
        assert!(c.port_mappings.is_empty());
    }

    #[test]
    fn container_maps_command_args_env_and_log_path() {
        let (p, r) = pod();
        let spec = &p.spec.as_ref().expect("spec").containers[0];
        let fields = RuntimeFields {
            pod_ip: Some("10.244.1.5".into()),
            host_ip: "172.30.0.11".into(),
        };
        let (envs, unresolved) = container_env(&p, &r, spec, &fields);
        assert!(unresolved.is_empty());
        let c = container_config(&p, &r, spec, 3, envs);
        assert_eq!(c.command, vec!["/hostname"]);
        assert_eq!(c.args, vec!["-p", "8080", "--name=web-1"]);
        assert_eq!(c.working_dir, "/tmp");
        assert_eq!(
            c.envs,
            vec![
                cri::KeyValue {
                    key: "A".into(),
                    value: "1".into()
                },
                cri::KeyValue {
                    key: "B".into(),
                    value: "web-1".into()
                },
            ]
        );
        assert_eq!(c.log_path, "srv/3.log");
        assert_eq!(c.metadata.expect("metadata").attempt, 3);
        assert_eq!(
            c.labels.get(LABEL_CONTAINER_NAME).map(String::as_str),
            Some("srv")
        );
        assert_eq!(c.labels.get(LABEL_POD_UID).map(String::as_str), Some("u-1"));
    }

    #[test]
    fn downward_api_fields() {
        let (mut p, r) = pod();
        p.spec.as_mut().expect("spec").node_name = Some("node1".into());
        let fields = RuntimeFields {
            pod_ip: Some("10.244.1.5".into()),
            host_ip: "172.30.0.11".into(),
        };
        let cases = [
            ("metadata.name", Some("web-1")),
            ("metadata.namespace", Some("default")),
            ("metadata.uid", Some("u-1")),
            ("spec.nodeName", Some("node1")),
            ("status.podIP", Some("10.244.1.5")),
            ("status.hostIP", Some("172.30.0.11")),
            ("metadata.labels['app']", Some("web")),
            ("metadata.labels['nope']", None),
            ("spec.bogus", None),
        ];
        for (path, want) in cases {
            assert_eq!(
                field_value(&p, &r, &fields, path).as_deref(),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn expands_variable_references() {
        let vars = vec![
            cri::KeyValue {
                key: "A".into(),
                value: "x".into(),
            },
            cri::KeyValue {
                key: "B".into(),
                value: "y".into(),
            },
        ];
        let cases = [
            ("plain", "plain"),
            ("$(A)", "x"),
            ("a=$(A),b=$(B)", "a=x,b=y"),
            ("$(C)", "$(C)"),
            ("$$(A)", "$(A)"),
            ("cost $5", "cost $5"),
            ("$(unclosed", "$(unclosed"),
            ("end$", "end$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    #[test]
    fn host_network_pods_use_the_node_namespace() {
        let (mut p, r) = pod();
        p.spec.as_mut().expect("spec").host_network = Some(true);
        let c = sandbox_config(&p, &r, &env(), 0);
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("ns options");
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        let c = sandbox_config(&p, &r, &env(), 0);
        assert_eq!(
            c.hostname, "",
            "the node's UTS namespace keeps its hostname"
        );
    }

    #[test]
    fn container_hash_follows_the_spec() {
        let (p, _) = pod();
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        assert_eq!(container_hash(&c), container_hash(&c.clone()), "stable");
        let mut changed = c.clone();
        changed.image = Some("127.0.0.1:5000/weir/hostname:v2".into());
        assert_ne!(container_hash(&c), container_hash(&changed));
        assert_eq!(container_hash(&c).len(), 16);
    }

    #[test]
    fn pod_without_uid_is_ignored() {
        let (mut p, _) = pod();
        p.metadata.uid = None;
        assert_eq!(PodRef::of(&p), None);
    }
}
