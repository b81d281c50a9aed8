//! Validation of API objects, with Kubernetes' wording and field paths.
//!
//! Every check appends to a list instead of returning early, so a user sees all
//! problems of a manifest at once (as `kubectl apply` does). The messages copy
//! Kubernetes' `field.Error` format, e.g.
//! `spec.replicas: Invalid value: -1: must be greater than or equal to 0`, so that
//! people and scripts that know Kubernetes read them unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, Pod, PodSpec, PodTemplateSpec, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::selector::Selector;

mod apps;
mod batch;
mod config;
mod network;
mod resources;
mod storage;

pub use apps::{
    RETENTION_POLICIES, controller_revision_update, validate_claim_retention,
    validate_controller_revision,
};
pub use batch::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
    index_set, parse_indexes, validate_cron_job, validate_job, validate_job_spec,
    validate_job_update,
};
pub use config::{config_key, validate_config_map, validate_secret};
pub use network::{validate_ingress, validate_network_policy};
pub use resources::{ProbeKind, parse_quantity, validate_probe, validate_resources};
pub use storage::validate_pvc;

/// The category of a field error (Kubernetes' `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub error_type: ErrorType,
    /// Path of the field, e.g. `spec.ports[0].port`.
    pub field: String,
    /// The offending value, rendered the way Kubernetes renders it (Go syntax).
    pub value: String,
    /// What is wrong / what is allowed.
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Required,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            error_type: ErrorType::Invalid,
            field: field.into(),
            value: value.into(),
            detail: detail.into(),
        }
    }
    /// `supported` are the allowed values, unquoted.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            error_type: ErrorType::NotSupported,
            field: field.into(),
            value: quote(value),
            detail: format!("supported values: {list}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Duplicate,
            field: field.into(),
            value: value.into(),
            detail: String::new(),
        }
    }
    /// `max` is the limit in bytes.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            error_type: ErrorType::TooLong,
            field: field.into(),
            value: String::new(),
            detail: format!("must have at most {max} bytes"),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error_type: ErrorType::Forbidden,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_type {
            ErrorType::Required if self.detail.is_empty() => {
                write!(f, "{}: Required value", self.field)
            }
            ErrorType::Required => write!(f, "{}: Required value: {}", self.field, self.detail),
            // An empty value is one Kubernetes omits (`field.OmitValueType`).
            ErrorType::Invalid if self.value.is_empty() => {
                write!(f, "{}: Invalid value: {}", self.field, self.detail)
            }
            ErrorType::Invalid => write!(
                f,
                "{}: Invalid value: {}: {}",
                self.field, self.value, self.detail
            ),
            ErrorType::NotSupported => {
                write!(
                    f,
                    "{}: Unsupported value: {}: {}",
                    self.field, self.value, self.detail
                )
            }
            ErrorType::Duplicate => write!(f, "{}: Duplicate value: {}", self.field, self.value),
            ErrorType::Forbidden => write!(f, "{}: Forbidden: {}", self.field, self.detail),
            ErrorType::TooLong => write!(f, "{}: Too long: {}", self.field, self.detail),
        }
    }
}

/// All field errors of one object, displayed like kubectl shows them:
/// `Deployment "web" is invalid: <error>\n<error>...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} is invalid: ", self.kind, quote(&self.name))?;
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Renders a string as Go's `%q` does for plain ASCII (what Kubernetes prints).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Renders a label map as Go prints `map[string]string{...}`.
pub fn render_map(m: &BTreeMap<String, String>) -> String {
    let body = m
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("map[string]string{{{body}}}")
}

// ---------------------------------------------------------------------------
// Names, labels and other string formats (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn dns1123_label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// Problems of `s` as a DNS-1123 label (max 63 characters), Kubernetes' wording.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !dns1123_label_ok(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// Problems of `s` as a DNS-1123 subdomain (max 253 characters).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(dns1123_label_ok) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// Problems of `s` as a DNS-1035 label (Service names: must start with a letter).
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !(dns1123_label_ok(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

fn name_part_ok(s: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !s.is_empty()
        && s.chars().all(inner)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Problems of a label/annotation key (`[prefix/]name`).
pub fn qualified_name(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !name_part_ok(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// Problems of a label value.
pub fn label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !name_part_ok(v) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// Problems of a port name (IANA service name, as Kubernetes' `IsValidPortName`).
pub fn port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

fn push_all(out: &mut Vec<FieldError>, field: &str, value: String, problems: Vec<String>) {
    out.extend(
        problems
            .into_iter()
            .map(|d| FieldError::invalid(field, value.clone(), d)),
    );
}

fn check_port_number(out: &mut Vec<FieldError>, field: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        out.push(FieldError::invalid(
            field,
            port.to_string(),
            "must be between 1 and 65535, inclusive",
        ));
    }
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn check_protocol(out: &mut Vec<FieldError>, field: &str, protocol: Option<&str>) {
    if let Some(p) = protocol
        && !PROTOCOLS.contains(&p)
    {
        out.push(FieldError::not_supported(field, p, PROTOCOLS));
    }
}

// ---------------------------------------------------------------------------
// Object metadata
// ---------------------------------------------------------------------------

/// Which name format a kind requires for `metadata.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
}

/// The name rule Kubernetes applies to a kind.
pub fn name_rule(kind: &str) -> NameRule {
    match kind {
        "Namespace" => NameRule::Dns1123Label,
        "Service" => NameRule::Dns1035Label,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Validates the metadata of a stored object of `kind` (after defaulting, so
/// a generateName has already become a name).
pub fn validate_object_meta(kind: &str, namespaced: bool, meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
        Some(name) => {
            let problems = match name_rule(kind) {
                NameRule::Dns1123Subdomain => dns1123_subdomain(name),
                NameRule::Dns1123Label => dns1123_label(name),
                NameRule::Dns1035Label => dns1035_label(name),
            };
            push_all(&mut errs, "metadata.name", quote(name), problems);
        }
    }
    match (namespaced, meta.namespace.as_deref()) {
        (true, None | Some("")) => errs.push(FieldError::required("metadata.namespace", "")),
        (true, Some(ns)) => push_all(
            &mut errs,
            "metadata.namespace",
            quote(ns),
            dns1123_label(ns),
        ),
        (false, Some(ns)) if !ns.is_empty() => {
            errs.push(FieldError::forbidden(
                "metadata.namespace",
                "not allowed on this type",
            ));
        }
        (false, _) => {}
    }
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = &meta.annotations {
        for k in annotations.keys() {
            push_all(
                &mut errs,
                "metadata.annotations",
                quote(k),
                qualified_name(k),
            );
        }
    }
    errs
}

/// Validates label keys and values.
pub fn validate_labels(labels: &BTreeMap<String, String>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        push_all(&mut errs, field, quote(k), qualified_name(k));
        push_all(&mut errs, field, quote(v), label_value(v));
    }
    errs
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

/// Validates a Pod.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Pod", true, &pod.metadata);
    match &pod.spec {
        Some(spec) => errs.extend(validate_pod_spec(
            spec,
            "spec",
            &["Always", "OnFailure", "Never"],
        )),
        None => errs.push(FieldError::required("spec", "")),
    }
    errs
}

/// Validates a pod spec at `path`; `restart_policies` are those the owner allows.
pub fn validate_pod_spec(spec: &PodSpec, path: &str, restart_policies: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        errs.extend(validate_container(
            c,
            &format!("{path}.containers[{i}]"),
            &mut names,
        ));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        errs.extend(validate_container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &mut names,
        ));
    }
    if let Some(rp) = spec.restart_policy.as_deref()
        && !restart_policies.contains(&rp)
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            restart_policies,
        ));
    }
    if let Some(dp) = spec.dns_policy.as_deref() {
        const DNS: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !DNS.contains(&dp) {
            errs.push(FieldError::not_supported(
                format!("{path}.dnsPolicy"),
                dp,
                DNS,
            ));
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(node) = spec.node_name.as_deref()
        && !node.is_empty()
    {
        push_all(
            &mut errs,
            &format!("{path}.nodeName"),
            quote(node),
            dns1123_subdomain(node),
        );
    }
    errs
}

fn validate_container(c: &Container, path: &str, names: &mut BTreeSet<String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        push_all(
            &mut errs,
            &format!("{path}.name"),
            quote(&c.name),
            dns1123_label(&c.name),
        );
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(
                format!("{path}.name"),
                quote(&c.name),
            ));
        }
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        const PULL: &[&str] = &["Always", "IfNotPresent", "Never"];
        if !PULL.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.imagePullPolicy"),
                p,
                PULL,
            ));
        }
    }
    for (field, probe, kind) in [
        ("livenessProbe", &c.liveness_probe, ProbeKind::Liveness),
        ("readinessProbe", &c.readiness_probe, ProbeKind::Readiness),
        ("startupProbe", &c.startup_probe, ProbeKind::Startup),
    ] {
        if let Some(p) = probe {
            errs.extend(validate_probe(p, &format!("{path}.{field}"), kind));
        }
    }
    if let Some(r) = &c.resources {
        errs.extend(validate_resources(r, &format!("{path}.resources")));
    }
    let mut port_names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        errs.extend(validate_container_port(
            p,
            &format!("{path}.ports[{i}]"),
            &mut port_names,
        ));
    }
    errs
}

fn validate_container_port(
    p: &ContainerPort,
    path: &str,
    names: &mut BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    check_port_number(
        &mut errs,
        &format!("{path}.containerPort"),
        p.container_port,
    );
    if let Some(hp) = p.host_port
        && hp != 0
    {
        check_port_number(&mut errs, &format!("{path}.hostPort"), hp);
    }
    if let Some(n) = p.name.as_deref()
        && !n.is_empty()
    {
        push_all(&mut errs, &format!("{path}.name"), quote(n), port_name(n));
        if !names.insert(n.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), quote(n)));
        }
    }
    check_protocol(
        &mut errs,
        &format!("{path}.protocol"),
        p.protocol.as_deref(),
    );
    errs
}

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Validates a Service (after defaulting; allocation checks happen in the allocator).
pub fn validate_service(svc: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Service", true, &svc.metadata);
    let Some(spec) = &svc.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SERVICE_TYPES));
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if headless && matches!(ty, "NodePort" | "LoadBalancer") {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            quote("None"),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if let Some(ip) = spec.cluster_ip.as_deref()
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            quote(ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(aff) = spec.session_affinity.as_deref()
        && !["ClientIP", "None"].contains(&aff)
    {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            aff,
            &["ClientIP", "None"],
        ));
    }
    errs.extend(validate_service_type_fields(spec, ty));
    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::required("spec.externalName", "")),
            Some(n) => push_all(
                &mut errs,
                "spec.externalName",
                quote(n),
                dns1123_subdomain(n.strip_suffix('.').unwrap_or(n)),
            ),
        }
        return errs;
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            p,
            &format!("spec.ports[{i}]"),
            ports.len() > 1,
            &mut names,
        ));
        if ty == "ClusterIP" && p.node_port.is_some_and(|n| n != 0) {
            errs.push(FieldError::forbidden(
                format!("spec.ports[{i}].nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
    }
    if let Some(sel) = &spec.selector {
        errs.extend(validate_labels(sel, "spec.selector"));
    }
    errs
}

/// The fields that only some Service types may use.
fn validate_service_type_fields(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    ty: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let external = matches!(ty, "NodePort" | "LoadBalancer");
    if ty == "ExternalName"
        && let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            format!("[{}]", quote(ip)),
            "may not be set for ExternalName services",
        ));
    }
    if let Some(p) = spec.external_traffic_policy.as_deref() {
        if !["Cluster", "Local"].contains(&p) {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                p,
                &["Cluster", "Local"],
            ));
        } else if !external && spec.external_ips.as_ref().is_none_or(|e| e.is_empty()) {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                quote(p),
                "may only be set for externally-accessible services",
            ));
        }
    }
    if let Some(p) = spec.internal_traffic_policy.as_deref()
        && !["Cluster", "Local"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            p,
            &["Cluster", "Local"],
        ));
    }
    if ty != "LoadBalancer" {
        if spec
            .load_balancer_source_ranges
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        if spec
            .load_balancer_ip
            .as_deref()
            .is_some_and(|ip| !ip.is_empty())
        {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerIP",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty())
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(FieldError::invalid(
            "spec.loadBalancerIP",
            quote(ip),
            "must be a valid IP address",
        ));
    }
    for (i, r) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        if r.trim().parse::<ipnet::IpNet>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                quote(r),
                "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ",
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.externalIPs[{i}]"),
                quote(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    let mut node_ports = BTreeSet::new();
    let mut port_proto = BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if let Some(np) = p.node_port.filter(|n| *n != 0)
            && !node_ports.insert((np, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                np.to_string(),
            ));
        }
        if !port_proto.insert((p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into()))) {
            errs.push(FieldError::duplicate(
                format!("spec.ports[{i}]"),
                format!(
                    "core.ServicePort{{Port:{}, Protocol:{}}}",
                    p.port,
                    quote(p.protocol.as_deref().unwrap_or("TCP"))
                ),
            ));
        }
    }
    errs
}

fn validate_service_port(
    p: &ServicePort,
    path: &str,
    multi: bool,
    names: &mut BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match p.name.as_deref() {
        None | Some("") if multi => errs.push(FieldError::required(format!("{path}.name"), "")),
        None | Some("") => {}
        Some(n) => {
            push_all(
                &mut errs,
                &format!("{path}.name"),
                quote(n),
                dns1123_label(n),
            );
            if !names.insert(n.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), quote(n)));
            }
        }
    }
    check_port_number(&mut errs, &format!("{path}.port"), p.port);
    check_protocol(
        &mut errs,
        &format!("{path}.protocol"),
        p.protocol.as_deref(),
    );
    match &p.target_port {
        Some(IntOrString::Int(t)) => {
            check_port_number(&mut errs, &format!("{path}.targetPort"), *t)
        }
        Some(IntOrString::String(s)) => {
            push_all(
                &mut errs,
                &format!("{path}.targetPort"),
                quote(s),
                port_name(s),
            );
        }
        None => {}
    }
    if let Some(np) = p.node_port
        && np != 0
    {
        check_port_number(&mut errs, &format!("{path}.nodePort"), np);
    }
    errs
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

fn validate_replicas(errs: &mut Vec<FieldError>, replicas: Option<i32>) {
    if let Some(r) = replicas
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// Checks a workload's selector and pod template: selector present and non-empty,
/// matching the template's labels, template valid with `restartPolicy: Always`.
fn validate_selector_and_template(
    errs: &mut Vec<FieldError>,
    owner: &str,
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
) {
    let empty_labels = BTreeMap::new();
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty_labels);
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let is_empty = sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && sel.match_expressions.as_ref().is_none_or(Vec::is_empty);
            if is_empty {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                    format!("empty selector is invalid for {owner}"),
                ));
            } else {
                match Selector::from_label_selector(sel) {
                    Err(e) => errs.push(FieldError::invalid(
                        "spec.selector",
                        quote(&format!("{sel:?}")),
                        e.to_string(),
                    )),
                    Ok(s) if !s.matches(labels) => errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        render_map(labels),
                        "`selector` does not match template `labels`",
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
    match template {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            errs.extend(validate_labels(labels, "spec.template.metadata.labels"));
            match &t.spec {
                None => errs.push(FieldError::required("spec.template.spec", "")),
                Some(spec) => {
                    errs.extend(validate_pod_spec(spec, "spec.template.spec", &["Always"]))
                }
            }
        }
    }
}

/// Validates a Deployment.
pub fn validate_deployment(d: &Deployment) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Deployment", true, &d.metadata);
    let Some(spec) = &d.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    validate_replicas(&mut errs, spec.replicas);
    validate_selector_and_template(
        &mut errs,
        "deployment",
        Some(&spec.selector),
        Some(&spec.template),
    );
    if let Some(s) = &spec.strategy
        && let Some(t) = s.type_.as_deref()
        && !["Recreate", "RollingUpdate"].contains(&t)
    {
        errs.push(FieldError::not_supported(
            "spec.strategy.type",
            t,
            &["Recreate", "RollingUpdate"],
        ));
    }
    if let Some(r) = spec.revision_history_limit
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.revisionHistoryLimit",
            r.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// Validates a ReplicaSet.
pub fn validate_replica_set(rs: &ReplicaSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta("ReplicaSet", true, &rs.metadata);
    let Some(spec) = &rs.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    validate_replicas(&mut errs, spec.replicas);
    validate_selector_and_template(
        &mut errs,
        "replicaset",
        Some(&spec.selector),
        spec.template.as_ref(),
    );
    errs
}

/// Validates a DaemonSet.
pub fn validate_daemon_set(ds: &DaemonSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta("DaemonSet", true, &ds.metadata);
    let Some(spec) = &ds.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    validate_selector_and_template(
        &mut errs,
        "daemonset",
        Some(&spec.selector),
        Some(&spec.template),
    );
    errs
}

/// Validates a StatefulSet.
pub fn validate_stateful_set(ss: &StatefulSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta("StatefulSet", true, &ss.metadata);
    let Some(spec) = &ss.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    validate_replicas(&mut errs, spec.replicas);
    validate_selector_and_template(
        &mut errs,
        "statefulset",
        Some(&spec.selector),
        Some(&spec.template),
    );
    if let Some(p) = spec.pod_management_policy.as_deref()
        && !["OrderedReady", "Parallel"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            "spec.podManagementPolicy",
            p,
            &["OrderedReady", "Parallel"],
        ));
    }
    errs.extend(validate_claim_retention(
        spec.persistent_volume_claim_retention_policy.as_ref(),
    ));
    errs
}

/// Validates a Namespace.
pub fn validate_namespace(ns: &Namespace) -> Vec<FieldError> {
    validate_object_meta("Namespace", false, &ns.metadata)
}

/// Validates a Node.
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Node", false, &node.metadata);
    if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref())
        && !cidr.is_empty()
        && cidr.parse::<ipnet::IpNet>().is_err()
    {
        errs.push(FieldError::invalid(
            "spec.podCIDR",
            quote(cidr),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    fn container(name: &str, image: Option<&str>) -> Container {
        Container {
            name: name.into(),
            image: image.map(Into::into),
            ..Default::default()
        }
    }

    fn pod_spec(containers: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn deployment(replicas: i32, sel: &[(&str, &str)], tmpl: &[(&str, &str)]) -> Deployment {
        Deployment {
            metadata: meta("web"),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels(sel)),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(tmpl)),
                        ..Default::default()
                    }),
                    spec: Some(pod_spec(vec![container("c", Some("img"))])),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn strings(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn name_formats() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // name, subdomain ok, label ok, 1035 ok
            ("web", true, true, true),
            ("web.example", true, false, false),
            ("1abc", true, true, false),
            ("Foo_", false, false, false),
            ("-a", false, false, false),
            ("a-", false, false, false),
            ("", false, false, false),
        ];
        for (name, sub, label, l1035) in cases {
            assert_eq!(
                dns1123_subdomain(name).is_empty(),
                *sub,
                "subdomain {name:?}"
            );
            assert_eq!(dns1123_label(name).is_empty(), *label, "label {name:?}");
            assert_eq!(dns1035_label(name).is_empty(), *l1035, "1035 {name:?}");
        }
        assert_eq!(
            dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
    }

    #[test]
    fn label_keys_and_values() {
        let cases: &[(&str, bool)] = &[
            ("app", true),
            ("app.kubernetes.io/name", true),
            ("Bad Key", false),
            ("/x", false),
            ("example.com/", false),
            ("UPPER.Case_ok", true),
        ];
        for (k, ok) in cases {
            assert_eq!(qualified_name(k).is_empty(), *ok, "{k:?}");
        }
        for (v, ok) in [("", true), ("v1.2_3", true), ("-x", false), ("a b", false)] {
            assert_eq!(label_value(v).is_empty(), ok, "{v:?}");
        }
    }

    #[test]
    fn port_names() {
        for (n, ok) in [
            ("http", true),
            ("http-alt", true),
            ("80", false),
            ("a--b", false),
            ("-a", false),
            ("HTTP", false),
            ("averyveryverylongname", false),
        ] {
            assert_eq!(port_name(n).is_empty(), ok, "{n:?}");
        }
    }

    #[test]
    fn metadata_errors_use_kubernetes_wording() {
        let errs = validate_object_meta("Pod", true, &meta("Foo_"));
        assert_eq!(
            strings(&errs),
            vec![format!(
                "metadata.name: Invalid value: \"Foo_\": {DNS1123_SUBDOMAIN_MSG}"
            )]
        );
        let errs = validate_object_meta(
            "Pod",
            true,
            &ObjectMeta {
                namespace: Some("default".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            strings(&errs),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let errs = validate_object_meta("Service", true, &meta("1svc"));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains("DNS-1035"));
        let errs = validate_object_meta("Node", false, &meta("n1"));
        assert_eq!(
            strings(&errs),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn pod_cases() {
        let mut dup = pod_spec(vec![container("a", Some("i")), container("a", None)]);
        dup.restart_policy = Some("Sometimes".into());
        let mut bad_port = container("web", Some("img"));
        bad_port.ports = Some(vec![ContainerPort {
            container_port: 70000,
            protocol: Some("HTTP".into()),
            ..Default::default()
        }]);
        let cases: Vec<(&str, PodSpec, Vec<&str>)> = vec![
            (
                "valid",
                pod_spec(vec![container("c", Some("busybox"))]),
                vec![],
            ),
            (
                "no containers",
                pod_spec(vec![]),
                vec!["spec.containers: Required value"],
            ),
            (
                "duplicate name, missing image, bad restart policy",
                dup,
                vec![
                    "spec.containers[1].name: Duplicate value: \"a\"",
                    "spec.containers[1].image: Required value",
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                ],
            ),
            (
                "bad port and protocol",
                pod_spec(vec![bad_port]),
                vec![
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
        ];
        for (name, spec, want) in cases {
            let pod = Pod {
                metadata: meta("p"),
                spec: Some(spec),
                ..Default::default()
            };
            assert_eq!(strings(&validate_pod(&pod)), want, "{name}");
        }
    }

    fn service(ty: Option<&str>, cluster_ip: Option<&str>, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: meta("svc"),
            spec: Some(ServiceSpec {
                type_: ty.map(Into::into),
                cluster_ip: cluster_ip.map(Into::into),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sport(
        name: Option<&str>,
        port: i32,
        target: Option<IntOrString>,
        node_port: Option<i32>,
    ) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            target_port: target,
            node_port,
            ..Default::default()
        }
    }

    #[test]
    fn service_cases() {
        let cases: Vec<(&str, Service, Vec<&str>)> = vec![
            (
                "valid",
                service(
                    None,
                    None,
                    vec![sport(None, 80, Some(IntOrString::Int(8080)), None)],
                ),
                vec![],
            ),
            (
                "headless without ports",
                service(None, Some("None"), vec![]),
                vec![],
            ),
            (
                "no ports",
                service(None, None, vec![]),
                vec!["spec.ports: Required value"],
            ),
            (
                "port out of range",
                service(None, None, vec![sport(None, 70000, None, None)]),
                vec![
                    "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                "named target port and unnamed multi port",
                service(
                    None,
                    None,
                    vec![
                        sport(
                            Some("http"),
                            80,
                            Some(IntOrString::String("http-web".into())),
                            None,
                        ),
                        sport(None, 81, Some(IntOrString::String("Bad_Name".into())), None),
                    ],
                ),
                vec![
                    "spec.ports[1].name: Required value",
                    "spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ],
            ),
            (
                "nodePort on ClusterIP",
                service(
                    Some("ClusterIP"),
                    None,
                    vec![sport(None, 80, None, Some(30080))],
                ),
                vec![
                    "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                ],
            ),
            (
                "unknown type",
                service(Some("Magic"), None, vec![sport(None, 80, None, None)]),
                vec![
                    "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                ],
            ),
            (
                "headless NodePort",
                service(
                    Some("NodePort"),
                    Some("None"),
                    vec![sport(None, 80, None, None)],
                ),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
                ],
            ),
        ];
        for (name, svc, want) in cases {
            assert_eq!(strings(&validate_service(&svc)), want, "{name}");
        }
    }

    #[test]
    fn deployment_cases() {
        let mut no_sel = deployment(1, &[], &[("app", "x")]);
        if let Some(s) = no_sel.spec.as_mut() {
            s.selector = LabelSelector::default();
        }
        let mut bad_restart = deployment(1, &[("app", "x")], &[("app", "x")]);
        if let Some(s) = bad_restart
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
        {
            s.restart_policy = Some("Never".into());
        }
        let cases: Vec<(&str, Deployment, Vec<&str>)> = vec![
            (
                "valid",
                deployment(3, &[("app", "x")], &[("app", "x"), ("tier", "web")]),
                vec![],
            ),
            (
                "negative replicas",
                deployment(-1, &[("app", "x")], &[("app", "x")]),
                vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
            ),
            (
                "selector does not match",
                deployment(1, &[("app", "y")], &[("app", "x")]),
                vec![
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`",
                ],
            ),
            (
                "empty selector",
                no_sel,
                vec![
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
                ],
            ),
            (
                "restart policy",
                bad_restart,
                vec![
                    "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                ],
            ),
        ];
        for (name, d, want) in cases {
            assert_eq!(strings(&validate_deployment(&d)), want, "{name}");
        }
    }

    #[test]
    fn other_workloads() {
        use k8s_openapi::api::apps::v1::{DaemonSetSpec, StatefulSetSpec};
        let template = |labels_: &[(&str, &str)], restart: Option<&str>| PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(labels_)),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: restart.map(Into::into),
                ..pod_spec(vec![container("c", Some("i"))])
            }),
        };
        let sel = |l: &[(&str, &str)]| LabelSelector {
            match_labels: Some(labels(l)),
            ..Default::default()
        };
        let ds = DaemonSet {
            metadata: meta("ds"),
            spec: Some(DaemonSetSpec {
                selector: sel(&[("a", "b")]),
                template: template(&[("a", "c")], None),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            strings(&validate_daemon_set(&ds)),
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{\"a\":\"c\"}: `selector` does not match template `labels`"
            ]
        );
        let ss = StatefulSet {
            metadata: meta("ss"),
            spec: Some(StatefulSetSpec {
                replicas: Some(-2),
                selector: sel(&[("a", "b")]),
                template: template(&[("a", "b")], None),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            strings(&validate_stateful_set(&ss)),
            vec!["spec.replicas: Invalid value: -2: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn invalid_joins_every_error() {
        let inv = Invalid {
            kind: "Deployment".into(),
            name: "web".into(),
            errors: vec![
                FieldError::invalid("spec.replicas", "-1", "must be greater than or equal to 0"),
                FieldError::required("spec.template.spec.containers", ""),
            ],
        };
        assert_eq!(
            inv.to_string(),
            "Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0\nspec.template.spec.containers: Required value"
        );
    }
}
