//! The registry of kinds the API server serves. One row per kind: its name,
//! apiVersion, plural (the etcd key segment), kubectl short names and scope.

/// One kind the API server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceKind {
    /// `kind` as written in manifests, e.g. `Deployment`.
    pub kind: &'static str,
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: &'static str,
    /// Lower-case plural, e.g. `deployments`; also the storage key segment.
    pub plural: &'static str,
    /// kubectl's short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Namespaced (true) or cluster-scoped (false).
    pub namespaced: bool,
}

macro_rules! kind {
    ($k:literal, $v:literal, $p:literal, [$($s:literal),*], $ns:literal) => {
        ResourceKind { kind: $k, api_version: $v, plural: $p, short_names: &[$($s),*], namespaced: $ns }
    };
}

/// Every kind weir serves (one line each: a table, kept as one).
#[rustfmt::skip]
pub const KINDS: &[ResourceKind] = &[
    kind!("Namespace", "v1", "namespaces", ["ns"], false),
    kind!("Node", "v1", "nodes", ["no"], false),
    kind!("Pod", "v1", "pods", ["po"], true),
    kind!("Service", "v1", "services", ["svc"], true),
    kind!("Endpoints", "v1", "endpoints", ["ep"], true),
    kind!("ConfigMap", "v1", "configmaps", ["cm"], true),
    kind!("Secret", "v1", "secrets", [], true),
    kind!("ServiceAccount", "v1", "serviceaccounts", ["sa"], true),
    kind!("Event", "v1", "events", ["ev"], true),
    kind!("ReplicationController", "v1", "replicationcontrollers", ["rc"], true),
    kind!("PersistentVolume", "v1", "persistentvolumes", ["pv"], false),
    kind!("PersistentVolumeClaim", "v1", "persistentvolumeclaims", ["pvc"], true),
    kind!("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", [], true),
    kind!("ReplicaSet", "apps/v1", "replicasets", ["rs"], true),
    kind!("Deployment", "apps/v1", "deployments", ["deploy"], true),
    kind!("DaemonSet", "apps/v1", "daemonsets", ["ds"], true),
    kind!("StatefulSet", "apps/v1", "statefulsets", ["sts"], true),
    kind!("ControllerRevision", "apps/v1", "controllerrevisions", [], true),
    kind!("Job", "batch/v1", "jobs", [], true),
    kind!("CronJob", "batch/v1", "cronjobs", ["cj"], true),
    kind!("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", ["netpol"], true),
    kind!("Ingress", "networking.k8s.io/v1", "ingresses", ["ing"], true),
    kind!("Lease", "coordination.k8s.io/v1", "leases", [], true),
];

impl ResourceKind {
    /// Finds a kind by its `kind` name (exact, as in manifests).
    pub fn by_kind(kind: &str) -> Option<&'static ResourceKind> {
        KINDS.iter().find(|k| k.kind == kind)
    }

    /// Finds a kind the way kubectl does on its command line: kind name in any
    /// case, plural, singular (lower-case kind) or short name.
    pub fn lookup(name: &str) -> Option<&'static ResourceKind> {
        let n = name.to_ascii_lowercase();
        KINDS.iter().find(|k| {
            k.kind.to_ascii_lowercase() == n || k.plural == n || k.short_names.contains(&n.as_str())
        })
    }

    /// The etcd key prefix of all objects of this kind (in one namespace when given).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.plural, ns),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// The etcd key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!(
            "{}{}",
            self.key_prefix(if self.namespaced { namespace } else { None }),
            name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_accepts_kubectl_spellings() {
        for name in ["deploy", "deployments", "Deployment", "deployment"] {
            assert_eq!(
                ResourceKind::lookup(name).unwrap().kind,
                "Deployment",
                "{name}"
            );
        }
        assert_eq!(ResourceKind::lookup("svc").unwrap().kind, "Service");
        for name in [
            "controllerrevision",
            "controllerrevisions",
            "ControllerRevision",
        ] {
            assert_eq!(
                ResourceKind::lookup(name).unwrap().kind,
                "ControllerRevision",
                "{name}"
            );
        }
        assert!(ResourceKind::lookup("frobnicator").is_none());
    }

    #[test]
    fn keys_follow_scope() {
        let pod = ResourceKind::by_kind("Pod").unwrap();
        assert_eq!(pod.key(Some("default"), "a"), "/registry/pods/default/a");
        assert_eq!(pod.key_prefix(None), "/registry/pods/");
        let node = ResourceKind::by_kind("Node").unwrap();
        assert_eq!(node.key(Some("ignored"), "n1"), "/registry/nodes/n1");
    }
}
