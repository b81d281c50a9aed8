//! "A newly created pod that a policy selects is isolated before its first
//! container starts": before a worker starts any container (init containers
//! included) in a sandbox, the NetworkPolicy maps must include the pod with
//! the sandbox's address. The decision is [`isolation`] (pure); the worker
//! then registers the pod with the policy sync and waits, bounded, for the
//! acknowledgement that a compile including it was applied.
//!
//! The API's pod status cannot be relied on for this: the worker writes the
//! address into it after the sandbox exists, and the policy sync sees it
//! only once its watch delivers the update, which may be after the first
//! container has started (and sent packets). So the worker hands the
//! address over directly.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use weir_datapath::policy::PodInfo;

use super::spec::uses_host_network;

/// A sandbox whose address the policy maps were confirmed to include.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub sandbox_id: String,
    pub ip: Ipv4Addr,
}

/// What must happen before a container of the pod starts in `sandbox_id`.
#[derive(Clone, Debug, PartialEq)]
pub enum Isolation {
    /// Nothing: NetworkPolicy does not apply to the pod (host network, no
    /// IPv4 address), or the maps were confirmed to include this sandbox.
    Ready,
    /// The policy sync must first apply a compile including this pod (its
    /// `ip` is the sandbox's address).
    Admit(Box<PodInfo>),
}

/// The decision: `pod_ip` is the sandbox's address as the runtime reports
/// it, `admitted` the last sandbox the policy sync confirmed.
pub fn isolation(
    pod: &Pod,
    sandbox_id: &str,
    pod_ip: Option<&str>,
    admitted: Option<&Admitted>,
) -> Isolation {
    if uses_host_network(pod) {
        return Isolation::Ready;
    }
    let Some(ip) = pod_ip.and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
        // Policy is IPv4 only: there is nothing to enforce it on.
        return Isolation::Ready;
    };
    if admitted.is_some_and(|a| a.sandbox_id == sandbox_id && a.ip == ip) {
        return Isolation::Ready;
    }
    let Some(mut info) = PodInfo::from_pod(pod) else {
        return Isolation::Ready;
    };
    info.ip = Some(ip);
    Isolation::Admit(Box::new(info))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(host_network: bool, status_ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "a", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "hostNetwork": host_network,
                     "initContainers": [{"name": "init"}],
                     "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Pending", "podIP": status_ip},
        }))
        .expect("valid Pod")
    }

    /// (case, host network, status IP, sandbox IP, admitted, must admit)
    type Case<'a> = (
        &'a str,
        bool,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a Admitted>,
        bool,
    );

    #[test]
    fn what_must_be_waited_for() {
        let ip = Ipv4Addr::new(10, 244, 1, 10);
        let admitted = |sandbox: &str, ip: Ipv4Addr| Admitted {
            sandbox_id: sandbox.into(),
            ip,
        };
        let done = admitted("s1", ip);
        let other_sandbox = admitted("s0", Ipv4Addr::new(10, 244, 1, 9));
        let same_id_new_ip = admitted("s1", Ipv4Addr::new(10, 244, 1, 9));
        let cases: [Case<'_>; 8] = [
            (
                "new sandbox, nothing admitted",
                false,
                None,
                Some("10.244.1.10"),
                None,
                true,
            ),
            (
                "the API already shows the address: still admitted (the sync may not have seen it)",
                false,
                Some("10.244.1.10"),
                Some("10.244.1.10"),
                None,
                true,
            ),
            (
                "this sandbox was admitted",
                false,
                None,
                Some("10.244.1.10"),
                Some(&done),
                false,
            ),
            (
                "a previous sandbox was admitted",
                false,
                None,
                Some("10.244.1.10"),
                Some(&other_sandbox),
                true,
            ),
            (
                "same sandbox id, other address",
                false,
                None,
                Some("10.244.1.10"),
                Some(&same_id_new_ip),
                true,
            ),
            (
                "host network: policy does not apply",
                true,
                None,
                Some("172.30.0.11"),
                None,
                false,
            ),
            ("no address", false, None, None, None, false),
            ("IPv6 only", false, None, Some("fd00::10"), None, false),
        ];
        for (name, host, status_ip, sandbox_ip, adm, want) in cases {
            let got = isolation(&pod(host, status_ip), "s1", sandbox_ip, adm);
            match (&got, want) {
                (Isolation::Admit(info), true) => {
                    assert_eq!(info.ip, Some(ip), "{name}: the sandbox's address");
                    assert_eq!(info.pod.to_string(), "x/a", "{name}");
                    assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
                    assert_eq!(info.node.as_deref(), Some("node1"), "{name}");
                    assert_eq!(info.named_ports.len(), 1, "{name}: named ports kept");
                }
                (Isolation::Ready, false) => {}
                _ => panic!("{name}: got {got:?}, want admit={want}"),
            }
        }
    }
}
