//! Defaulting of API objects, the values Kubernetes fills in when a manifest
//! leaves them out, so that controllers and agents never have to guess.
//!
//! Pure functions: randomness (the generateName suffix) is passed in.

use k8s_openapi::api::apps::v1::{
    DaemonSet, Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodSpec, PodTemplateSpec, Probe, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The characters Kubernetes uses for generated name suffixes (no vowels, no
/// look-alikes, so generated names never spell words or confuse readers).
pub const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Length of a generateName suffix.
pub const SUFFIX_LEN: usize = 5;

/// Maps random bytes to a generateName suffix.
pub fn name_suffix(random: [u8; SUFFIX_LEN]) -> String {
    random
        .iter()
        .map(|b| SUFFIX_ALPHABET[usize::from(*b) % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// Turns `generateName` into `name` when no name was given.
pub fn apply_generate_name(meta: &mut ObjectMeta, suffix: &str) {
    if meta.name.as_deref().is_none_or(str::is_empty)
        && let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        meta.name = Some(format!("{prefix}{suffix}"));
    }
}

/// Kubernetes' image pull policy default: `Always` for `:latest` or untagged
/// images (they may change under the same name), otherwise `IfNotPresent`.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy =
            Some(image_pull_policy(c.image.as_deref().unwrap_or_default()).to_string());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_string());
    c.termination_message_policy
        .get_or_insert_with(|| "File".to_string());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

/// Kubernetes' probe defaults: 1 s timeout, every 10 s, 1 success, 3 failures;
/// HTTP GET of "/" over plain HTTP.
pub fn default_probe(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = p.http_get.as_mut() {
        h.path.get_or_insert_with(|| "/".to_string());
        h.scheme.get_or_insert_with(|| "HTTP".to_string());
    }
}

/// Defaults a pod spec (also used for every workload's pod template).
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_string());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_string());
    spec.security_context.get_or_insert_with(Default::default);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
}

fn default_template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// Defaults a Pod.
pub fn default_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// Defaults a Service (allocation of cluster IPs and node ports happens later,
/// in the API server, because it needs the set of addresses in use).
pub fn default_service(svc: &mut Service) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    let ty = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_string())
        .clone();
    spec.session_affinity
        .get_or_insert_with(|| "None".to_string());
    if ty == "ExternalName" {
        return;
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    spec.ip_families
        .get_or_insert_with(|| vec!["IPv4".to_string()]);
    spec.ip_family_policy
        .get_or_insert_with(|| "SingleStack".to_string());
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".to_string());
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_string());
    } else if spec.external_ips.as_ref().is_none_or(Vec::is_empty)
        && spec.external_traffic_policy.as_deref() == Some("Cluster")
    {
        // Left over from a NodePort/LoadBalancer past (a type change):
        // Kubernetes drops type-dependent fields; an explicit "Local" is
        // still rejected by validation.
        spec.external_traffic_policy = None;
    }
    if ty == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    // `clusterIPs` mirrors `clusterIP` (Kubernetes keeps them in sync).
    if spec.cluster_ips.as_ref().is_none_or(Vec::is_empty)
        && let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty())
    {
        spec.cluster_ips = Some(vec![ip.to_string()]);
    }
    if spec.cluster_ip.as_deref().is_none_or(str::is_empty)
        && let Some(ip) = spec.cluster_ips.as_ref().and_then(|v| v.first())
    {
        spec.cluster_ip = Some(ip.clone());
    }
}

/// Defaults a Deployment: 1 replica, RollingUpdate 25%/25%, 10 old ReplicaSets
/// kept, 600 s progress deadline.
pub fn default_deployment(d: &mut Deployment) {
    let Some(spec) = d.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let ty = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_string());
    if ty == "RollingUpdate" {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_string()));
    }
    default_template(&mut spec.template);
}

/// Defaults a ReplicaSet.
pub fn default_replica_set(rs: &mut ReplicaSet) {
    let Some(spec) = rs.spec.as_mut() else { return };
    spec.replicas.get_or_insert(1);
    if let Some(t) = spec.template.as_mut() {
        default_template(t);
    }
}

/// Defaults a DaemonSet's pod template.
pub fn default_daemon_set(ds: &mut DaemonSet) {
    if let Some(spec) = ds.spec.as_mut() {
        spec.revision_history_limit.get_or_insert(10);
        default_template(&mut spec.template);
    }
}

/// Defaults a StatefulSet.
pub fn default_stateful_set(ss: &mut StatefulSet) {
    if let Some(spec) = ss.spec.as_mut() {
        spec.replicas.get_or_insert(1);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".to_string());
        spec.revision_history_limit.get_or_insert(10);
        // Kubernetes keeps claims unless told otherwise (Retain for both).
        let policy = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(Default::default);
        policy.when_deleted.get_or_insert_with(|| "Retain".into());
        policy.when_scaled.get_or_insert_with(|| "Retain".into());
        default_template(&mut spec.template);
    }
}

/// Defaults a Job (pods of a Job default to restartPolicy `Never` only when the
/// manifest says so; Kubernetes requires it to be set, so no default here).
pub fn default_job(job: &mut Job) {
    let (name, uid) = (job.metadata.name.clone(), job.metadata.uid.clone());
    let Some(spec) = job.spec.as_mut() else {
        return;
    };
    // Both unset: one pod; parallelism alone: a work queue (Kubernetes' SetDefaults_Job).
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    let per_index = spec.backoff_limit_per_index.is_some();
    spec.backoff_limit
        .get_or_insert(if per_index { i32::MAX } else { 6 });
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".to_string());
    spec.suspend.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    spec.pod_replacement_policy
        .get_or_insert_with(|| replacement.to_string());
    for rule in spec
        .pod_failure_policy
        .iter_mut()
        .flat_map(|p| &mut p.rules)
    {
        for pat in rule.on_pod_conditions.iter_mut().flatten() {
            if pat.status.is_empty() {
                pat.status = "True".into();
            }
        }
    }
    if let Some(ps) = spec.template.spec.as_mut() {
        let rp = ps.restart_policy.clone();
        default_pod_spec(ps);
        // Keep an unset restartPolicy unset so validation can ask for one.
        ps.restart_policy = rp;
    }
    // The selector the API server generates from the uid (a Job being
    // created or stored; a CronJob's template has no uid and gets none).
    if let (Some(name), Some(uid)) = (name, uid)
        && spec.manual_selector != Some(true)
    {
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        for (k, v) in [
            (crate::validation::LEGACY_JOB_NAME_LABEL, &name),
            (crate::validation::JOB_NAME_LABEL, &name),
            (crate::validation::LEGACY_CONTROLLER_UID_LABEL, &uid),
            (crate::validation::CONTROLLER_UID_LABEL, &uid),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        spec.selector
            .get_or_insert_with(Default::default)
            .match_labels
            .get_or_insert_with(Default::default)
            .entry(crate::validation::CONTROLLER_UID_LABEL.to_string())
            .or_insert(uid);
    }
}

/// Defaults a CronJob: concurrency Allow, not suspended, 3 successful and 1
/// failed Job kept; the job template like a Job.
pub fn default_cron_job(cj: &mut CronJob) {
    let Some(spec) = cj.spec.as_mut() else { return };
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".to_string());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(js) = spec.job_template.spec.take() {
        let mut job = Job {
            spec: Some(js),
            ..Default::default()
        };
        default_job(&mut job);
        spec.job_template.spec = job.spec;
    }
}

/// Defaults a PersistentVolumeClaim: a file system volume.
pub fn default_pvc(pvc: &mut PersistentVolumeClaim) {
    if let Some(spec) = pvc.spec.as_mut() {
        spec.volume_mode
            .get_or_insert_with(|| "Filesystem".to_string());
    }
}

/// Defaults a Secret: `stringData` is write-only convenience, merged into
/// `data` (overriding the same key), and type Opaque.
pub fn default_secret(s: &mut Secret) {
    s.type_.get_or_insert_with(|| "Opaque".to_string());
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{ContainerPort, ServicePort, ServiceSpec};

    #[test]
    fn pull_policy_follows_tag() {
        let cases = [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.35", "IfNotPresent"),
            ("127.0.0.1:5000/weir/hostname:v1", "IfNotPresent"),
            ("127.0.0.1:5000/weir/hostname", "Always"),
            ("repo/x@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(image_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn generate_name_only_without_name() {
        let cases = [
            (None, Some("web-"), Some("web-bcd2f")),
            (Some("fixed"), Some("web-"), Some("fixed")),
            (None, None, None),
        ];
        for (name, gen_name, want) in cases {
            let mut m = ObjectMeta {
                name: name.map(Into::into),
                generate_name: gen_name.map(Into::into),
                ..Default::default()
            };
            apply_generate_name(&mut m, "bcd2f");
            assert_eq!(m.name.as_deref(), want);
        }
        assert_eq!(name_suffix([0, 1, 2, 27, 26]), "bcdb9");
    }

    #[test]
    fn pod_defaults() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("img:v1".into()),
                    ports: Some(vec![ContainerPort {
                        container_port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                restart_policy: Some("Never".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        default_pod(&mut pod);
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.restart_policy.as_deref(),
            Some("Never"),
            "explicit value kept"
        );
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
    }

    #[test]
    fn service_defaults() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        default_service(&mut svc);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
        let p = &spec.ports.unwrap()[0];
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
        assert_eq!(p.target_port, Some(IntOrString::Int(80)));
        assert_eq!(spec.external_traffic_policy, None);
    }

    #[test]
    fn deployment_defaults() {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec::default()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        default_deployment(&mut d);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        let strategy = spec.strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let ru = strategy.rolling_update.unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn probes_cronjobs_pvcs_secrets() {
        let mut c = Container {
            name: "c".into(),
            image: Some("i:v1".into()),
            liveness_probe: Some(Probe {
                http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                    port: IntOrString::Int(8080),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        default_container(&mut c);
        let p = c.liveness_probe.unwrap();
        assert_eq!(
            (
                p.timeout_seconds,
                p.period_seconds,
                p.success_threshold,
                p.failure_threshold
            ),
            (Some(1), Some(5), Some(1), Some(3))
        );
        let h = p.http_get.unwrap();
        assert_eq!(
            (h.path.as_deref(), h.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );

        let mut cj: CronJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i:v1"}]}}}}}
        }))
        .unwrap();
        default_cron_job(&mut cj);
        let spec = cj.spec.unwrap();
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Allow"));
        assert_eq!(spec.successful_jobs_history_limit, Some(3));
        let job = spec.job_template.spec.unwrap();
        assert_eq!(job.backoff_limit, Some(6));
        assert_eq!(
            job.template.spec.unwrap().restart_policy.as_deref(),
            Some("Never"),
            "kept"
        );

        let mut s = Secret {
            data: Some([("a".to_string(), k8s_openapi::ByteString(b"old".to_vec()))].into()),
            string_data: Some([("a".to_string(), "new".to_string())].into()),
            ..Default::default()
        };
        default_secret(&mut s);
        assert_eq!(s.string_data, None);
        assert_eq!(s.data.unwrap()["a"].0, b"new");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));

        let mut pvc = PersistentVolumeClaim {
            spec: Some(Default::default()),
            ..Default::default()
        };
        default_pvc(&mut pvc);
        assert_eq!(pvc.spec.unwrap().volume_mode.as_deref(), Some("Filesystem"));
    }
}
