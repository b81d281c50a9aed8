//! Container resources (requests/limits as Kubernetes quantities) and probes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Probe, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{FieldError, check_port_number, port_name, push_all, qualified_name, quote};

const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a Kubernetes quantity ("500m", "1Gi", "2", "1e3") into its value.
/// Precision is that of f64, enough to compare requests with limits.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 || !num.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let (sign, digits) = match num.strip_prefix(['+', '-']) {
        Some(rest) => (if num.starts_with('-') { -1.0 } else { 1.0 }, rest),
        None => (1.0, num),
    };
    if digits.contains(['+', '-']) {
        return None;
    }
    let base: f64 = digits.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let e = exp.strip_prefix(['e', 'E'])?;
            let e: i32 = e.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(sign * base * factor)
}

const STANDARD_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "storage"];

/// Checks a resource name: a standard one, `hugepages-*`, or a fully
/// qualified extended resource (`example.com/gpu`).
fn check_resource_name(errs: &mut Vec<FieldError>, path: &str, name: &str) {
    if STANDARD_RESOURCES.contains(&name) || name.starts_with("hugepages-") {
        return;
    }
    if !name.contains('/') {
        errs.push(FieldError::invalid(
            path,
            quote(name),
            "must be a standard resource type or fully qualified",
        ));
        return;
    }
    push_all(errs, path, quote(name), qualified_name(name));
}

/// Parses and checks one map of quantities; returns the parsed values.
fn check_quantities(
    errs: &mut Vec<FieldError>,
    path: &str,
    map: Option<&BTreeMap<String, Quantity>>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, q) in map.into_iter().flatten() {
        let field = format!("{path}[{name}]");
        check_resource_name(errs, &field, name);
        match parse_quantity(&q.0) {
            None => errs.push(FieldError::invalid(&field, quote(&q.0), QUANTITY_MSG)),
            Some(v) if v < 0.0 => errs.push(FieldError::invalid(
                &field,
                quote(&q.0),
                "must be greater than or equal to 0",
            )),
            Some(v) => {
                out.insert(name.clone(), v);
            }
        }
    }
    out
}

/// Validates `resources` of a container at `path`: quantities parse, are not
/// negative, and every request is at most its limit.
pub fn validate_resources(r: &ResourceRequirements, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let limits = check_quantities(&mut errs, &format!("{path}.limits"), r.limits.as_ref());
    let requests = check_quantities(&mut errs, &format!("{path}.requests"), r.requests.as_ref());
    for (name, req) in &requests {
        if let Some(lim) = limits.get(name)
            && req > lim
        {
            let raw = |m: Option<&BTreeMap<String, Quantity>>| {
                m.and_then(|m| m.get(name))
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            };
            errs.push(FieldError::invalid(
                format!("{path}.requests[{name}]"),
                quote(&raw(r.requests.as_ref())),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    raw(r.limits.as_ref())
                ),
            ));
        }
    }
    errs
}

fn check_probe_port(errs: &mut Vec<FieldError>, path: &str, port: &IntOrString) {
    match port {
        IntOrString::Int(p) => check_port_number(errs, path, *p),
        IntOrString::String(s) => push_all(errs, path, quote(s), port_name(s)),
    }
}

/// Which probe: liveness and startup probes must have successThreshold 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// Validates a probe at `path`: exactly one handler, sane numbers.
pub fn validate_probe(p: &Probe, path: &str, kind: ProbeKind) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    match handlers {
        0 => errs.push(FieldError::required(path, "must specify a handler type")),
        1 => {}
        _ => errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(e) = &p.exec
        && e.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(format!("{path}.exec.command"), ""));
    }
    if let Some(h) = &p.http_get {
        check_probe_port(&mut errs, &format!("{path}.httpGet.port"), &h.port);
        if let Some(s) = h.scheme.as_deref()
            && !["HTTP", "HTTPS"].contains(&s)
        {
            errs.push(FieldError::not_supported(
                format!("{path}.httpGet.scheme"),
                s,
                &["HTTP", "HTTPS"],
            ));
        }
    }
    if let Some(t) = &p.tcp_socket {
        check_probe_port(&mut errs, &format!("{path}.tcpSocket.port"), &t.port);
    }
    if let Some(g) = &p.grpc {
        check_port_number(&mut errs, &format!("{path}.grpc.port"), g.port);
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(n) = v
            && n < 0
        {
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(g) = p.termination_grace_period_seconds
        && g <= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            g.to_string(),
            "must be greater than 0",
        ));
    }
    if kind != ProbeKind::Readiness
        && let Some(s) = p.success_threshold
        && s != 1
        && s >= 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            s.to_string(),
            "must be 1",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};

    use super::*;

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("500m", Some(0.5)),
            ("1Gi", Some(1073741824.0)),
            ("128Mi", Some(134217728.0)),
            ("2k", Some(2000.0)),
            ("1e3", Some(1000.0)),
            ("1.5", Some(1.5)),
            ("-1", Some(-1.0)),
            ("", None),
            ("abc", None),
            ("1GB", None),
            ("1..2", None),
            ("1-2", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_quantity(s), *want, "{s:?}");
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn resources() {
        let r = |req: &[(&str, &str)], lim: &[(&str, &str)]| ResourceRequirements {
            requests: q(req),
            limits: q(lim),
            ..Default::default()
        };
        let msgs = |r: &ResourceRequirements| -> Vec<String> {
            validate_resources(r, "spec.containers[0].resources")
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(
            msgs(&r(
                &[("cpu", "100m"), ("memory", "64Mi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            ))
            .is_empty()
        );
        assert_eq!(
            msgs(&r(&[("cpu", "2")], &[("cpu", "1")])),
            [
                "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
            ]
        );
        assert_eq!(
            msgs(&r(&[], &[("memory", "-1")])),
            [
                "spec.containers[0].resources.limits[memory]: Invalid value: \"-1\": must be greater than or equal to 0"
            ]
        );
        assert!(msgs(&r(&[("cpu", "lots")], &[]))[0].starts_with(
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"lots\": quantities must match"
        ));
        assert_eq!(
            msgs(&r(&[("gpu", "1")], &[])),
            [
                "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified"
            ]
        );
        assert!(msgs(&r(&[("example.com/gpu", "1")], &[])).is_empty());
    }

    #[test]
    fn probes() {
        let path = "spec.containers[0].livenessProbe";
        let msgs = |p: &Probe, k: ProbeKind| -> Vec<String> {
            validate_probe(p, path, k)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(msgs(&http, ProbeKind::Liveness).is_empty());
        assert_eq!(
            msgs(&Probe::default(), ProbeKind::Liveness),
            ["spec.containers[0].livenessProbe: Required value: must specify a handler type"]
        );
        let two = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            msgs(&two, ProbeKind::Readiness),
            [
                "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type"
            ]
        );
        let bad = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(0),
                ..Default::default()
            }),
            period_seconds: Some(-1),
            success_threshold: Some(2),
            ..Default::default()
        };
        assert_eq!(
            msgs(&bad, ProbeKind::Liveness),
            [
                "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
            ]
        );
        assert_eq!(
            msgs(&bad, ProbeKind::Readiness).len(),
            2,
            "readiness may need several successes"
        );
    }
}
