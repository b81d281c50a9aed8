//! NetworkPolicy and Ingress (k8s.io/kubernetes/pkg/apis/networking/validation).

use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    FieldError, check_port_number, check_protocol, dns1035_label, dns1123_subdomain, port_name,
    push_all, quote, validate_labels, validate_object_meta,
};
use crate::selector::Selector;

fn check_selector(errs: &mut Vec<FieldError>, path: &str, sel: &LabelSelector) {
    if let Some(m) = &sel.match_labels {
        errs.extend(validate_labels(m, &format!("{path}.matchLabels")));
    }
    if let Err(e) = Selector::from_label_selector(sel) {
        errs.push(FieldError::invalid(
            format!("{path}.matchExpressions"),
            quote(&format!("{:?}", sel.match_expressions)),
            e.to_string(),
        ));
    }
}

fn check_cidr(errs: &mut Vec<FieldError>, path: &str, cidr: &str) -> Option<ipnet::IpNet> {
    match cidr.parse::<ipnet::IpNet>() {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(FieldError::invalid(
                path,
                quote(cidr),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
            None
        }
    }
}

fn check_peer(errs: &mut Vec<FieldError>, path: &str, peer: &NetworkPolicyPeer) {
    let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match (&peer.ip_block, selectors) {
        (None, false) => errs.push(FieldError::required(path, "must specify a peer")),
        (Some(_), true) => errs.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        )),
        _ => {}
    }
    if let Some(s) = &peer.pod_selector {
        check_selector(errs, &format!("{path}.podSelector"), s);
    }
    if let Some(s) = &peer.namespace_selector {
        check_selector(errs, &format!("{path}.namespaceSelector"), s);
    }
    if let Some(b) = &peer.ip_block {
        let cidr = check_cidr(errs, &format!("{path}.ipBlock.cidr"), &b.cidr);
        for (i, e) in b.except.iter().flatten().enumerate() {
            let p = format!("{path}.ipBlock.except[{i}]");
            if let (Some(c), Some(x)) = (cidr, check_cidr(errs, &p, e))
                && !(c.contains(&x) && c.prefix_len() < x.prefix_len())
            {
                errs.push(FieldError::invalid(
                    p,
                    quote(e),
                    "must be a strict subset of `cidr`",
                ));
            }
        }
    }
}

fn check_policy_port(errs: &mut Vec<FieldError>, path: &str, p: &NetworkPolicyPort) {
    check_protocol(errs, &format!("{path}.protocol"), p.protocol.as_deref());
    match (&p.port, p.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            check_port_number(errs, &format!("{path}.port"), *n);
            if let Some(e) = end {
                check_port_number(errs, &format!("{path}.endPort"), e);
                if e < *n {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        e.to_string(),
                        "must be greater than or equal to `port`",
                    ));
                }
            }
        }
        (Some(IntOrString::String(s)), end) => {
            push_all(errs, &format!("{path}.port"), quote(s), port_name(s));
            if end.is_some() {
                errs.push(FieldError::forbidden(
                    format!("{path}.endPort"),
                    "may not be specified when `port` is non-numeric",
                ));
            }
        }
        (None, Some(_)) => errs.push(FieldError::forbidden(
            format!("{path}.endPort"),
            "may not be specified when `port` is not specified",
        )),
        (None, None) => {}
    }
}

const POLICY_TYPES: &[&str] = &["Egress", "Ingress"];

/// Validates a NetworkPolicy.
pub fn validate_network_policy(np: &NetworkPolicy) -> Vec<FieldError> {
    let mut errs = validate_object_meta("NetworkPolicy", true, &np.metadata);
    let Some(spec) = &np.spec else {
        return errs;
    };
    if let Some(s) = &spec.pod_selector {
        check_selector(&mut errs, "spec.podSelector", s);
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        for (j, peer) in rule.from.iter().flatten().enumerate() {
            check_peer(&mut errs, &format!("spec.ingress[{i}].from[{j}]"), peer);
        }
        for (j, p) in rule.ports.iter().flatten().enumerate() {
            check_policy_port(&mut errs, &format!("spec.ingress[{i}].ports[{j}]"), p);
        }
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        for (j, peer) in rule.to.iter().flatten().enumerate() {
            check_peer(&mut errs, &format!("spec.egress[{i}].to[{j}]"), peer);
        }
        for (j, p) in rule.ports.iter().flatten().enumerate() {
            check_policy_port(&mut errs, &format!("spec.egress[{i}].ports[{j}]"), p);
        }
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    for (i, t) in types.iter().enumerate() {
        if !POLICY_TYPES.contains(&t.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                POLICY_TYPES,
            ));
        }
    }
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            quote(&types.join(",")),
            "may not specify more than two policyTypes",
        ));
    }
    errs
}

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

fn check_backend(errs: &mut Vec<FieldError>, path: &str, b: &IngressBackend) {
    match (&b.service, &b.resource) {
        (None, None) => errs.push(FieldError::invalid(
            path,
            "",
            "must specify exactly one of `service` or `resource`",
        )),
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "",
            "cannot set both `service` and `resource` backends",
        )),
        _ => {}
    }
    if let Some(s) = &b.service {
        push_all(
            errs,
            &format!("{path}.service.name"),
            quote(&s.name),
            dns1035_label(&s.name),
        );
        let port = s.port.clone().unwrap_or_default();
        let p = format!("{path}.service.port");
        match (port.name.as_deref().filter(|n| !n.is_empty()), port.number) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                p,
                "",
                "cannot set both port name & port number",
            )),
            (None, None) => errs.push(FieldError::required(p, "port name or number is required")),
            (Some(n), None) => push_all(errs, &format!("{p}.name"), quote(n), port_name(n)),
            (None, Some(n)) => check_port_number(errs, &format!("{p}.number"), n),
        }
    }
}

/// A host of an Ingress rule or TLS entry: a DNS subdomain, optionally `*.`-prefixed, not an IP.
fn check_host(errs: &mut Vec<FieldError>, path: &str, host: &str) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        errs.push(FieldError::invalid(
            path,
            quote(host),
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    push_all(errs, path, quote(host), dns1123_subdomain(name));
}

/// Validates an Ingress.
pub fn validate_ingress(ing: &Ingress) -> Vec<FieldError> {
    let mut errs = validate_object_meta("Ingress", true, &ing.metadata);
    let Some(spec) = &ing.spec else {
        errs.push(FieldError::required("spec", ""));
        return errs;
    };
    if let Some(c) = spec.ingress_class_name.as_deref() {
        push_all(
            &mut errs,
            "spec.ingressClassName",
            quote(c),
            dns1123_subdomain(c),
        );
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        errs.push(FieldError::invalid(
            "spec.rules",
            "[]",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = &spec.default_backend {
        check_backend(&mut errs, "spec.defaultBackend", b);
    }
    for (i, r) in rules.iter().enumerate() {
        if let Some(h) = r.host.as_deref().filter(|h| !h.is_empty()) {
            check_host(&mut errs, &format!("spec.rules[{i}].host"), h);
        }
        let Some(http) = &r.http else { continue };
        if http.paths.is_empty() {
            errs.push(FieldError::required(
                format!("spec.rules[{i}].http.paths"),
                "",
            ));
        }
        for (j, p) in http.paths.iter().enumerate() {
            let base = format!("spec.rules[{i}].http.paths[{j}]");
            if p.path_type.is_empty() {
                errs.push(FieldError::required(
                    format!("{base}.pathType"),
                    "pathType must be specified",
                ));
            } else if !PATH_TYPES.contains(&p.path_type.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{base}.pathType"),
                    &p.path_type,
                    PATH_TYPES,
                ));
            }
            match p.path.as_deref() {
                Some(path) if !path.starts_with('/') => errs.push(FieldError::invalid(
                    format!("{base}.path"),
                    quote(path),
                    "must be an absolute path",
                )),
                None | Some("") if p.path_type != "ImplementationSpecific" => errs.push(
                    FieldError::required(format!("{base}.path"), "must be specified"),
                ),
                _ => {}
            }
            check_backend(&mut errs, &format!("{base}.backend"), &p.backend);
        }
    }
    for (i, t) in spec.tls.iter().flatten().enumerate() {
        for (j, h) in t.hosts.iter().flatten().enumerate() {
            check_host(&mut errs, &format!("spec.tls[{i}].hosts[{j}]"), h);
        }
        if let Some(s) = t.secret_name.as_deref().filter(|s| !s.is_empty()) {
            push_all(
                &mut errs,
                &format!("spec.tls[{i}].secretName"),
                quote(s),
                dns1123_subdomain(s),
            );
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"}, "spec": v
        }))
        .unwrap()
    }

    fn msgs(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn network_policies() {
        let good = np(serde_json::json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 5432}, {"port": 8000, "endPort": 8080}]}],
            "egress": [{"to": [{"namespaceSelector": {}}]}]
        }));
        assert!(validate_network_policy(&good).is_empty());
        let bad = np(serde_json::json!({
            "podSelector": {},
            "policyTypes": ["Sideways"],
            "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]},
                                       "podSelector": {}}],
                         "ports": [{"port": 80, "endPort": 79}, {"port": "http", "endPort": 90}, {"protocol": "ICMP"}]}]
        }));
        assert_eq!(
            msgs(validate_network_policy(&bad)),
            [
                "spec.ingress[0].from[0]: Required value: must specify a peer",
                "spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
                "spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.ingress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to `port`",
                "spec.ingress[0].ports[1].endPort: Forbidden: may not be specified when `port` is non-numeric",
                "spec.ingress[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Egress\", \"Ingress\"",
            ]
        );
    }

    fn ing(v: serde_json::Value) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "i", "namespace": "default"}, "spec": v
        }))
        .unwrap()
    }

    #[test]
    fn ingresses() {
        let good = ing(serde_json::json!({
            "ingressClassName": "nginx",
            "rules": [{"host": "*.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["example.com"], "secretName": "tls"}]
        }));
        assert!(validate_ingress(&good).is_empty());
        let bad = ing(serde_json::json!({
            "rules": [{"host": "10.0.0.1", "http": {"paths": [
                {"path": "api", "pathType": "Regex", "backend": {"service": {"name": "web", "port": {}}}}]}}]
        }));
        assert_eq!(
            msgs(validate_ingress(&bad)),
            [
                "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
                "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend.service.port: Required value: port name or number is required",
            ]
        );
        assert_eq!(
            msgs(validate_ingress(&ing(serde_json::json!({})))),
            ["spec.rules: Invalid value: []: either `defaultBackend` or `rules` must be specified"]
        );
    }
}
