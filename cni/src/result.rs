//! Replies on stdout, built from `cni_plugin::reply`'s types.
//!
//! The success result is a `cni_plugin::reply::SuccessReply` (the CNI 1.0
//! shape). For 0.3.x and 0.4.0 runtimes each IP entry additionally carries
//! `"version":"4"`, which those spec versions require and SuccessReply
//! cannot express; [`Rendered`] holds that final JSON.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use cni_plugin::macaddr::MacAddr;
use cni_plugin::reply::{
    ErrorReply, Interface, Ip, ReplyPayload, Route, SuccessReply, VersionReply,
};
use ipnetwork::{IpNetwork, Ipv4Network};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SUPPORTED_VERSIONS;
use crate::error::PluginError;
use crate::plugin::AddOutcome;

/// A reply already rendered to JSON for the runtime's version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rendered(pub Value);

impl<'de> ReplyPayload<'de> for Rendered {}

fn version(text: &str) -> Version {
    Version::parse(text).unwrap_or_else(|_| Version::new(1, 0, 0))
}

fn net32(ip: Ipv4Addr) -> IpNetwork {
    IpNetwork::V4(Ipv4Network::from(ip))
}

/// The ADD result: prevResult's entries (if chained) followed by ours —
/// the host veth, the pod interface, the pod's /32 with the gateway, and
/// the pod's two routes.
pub fn add_result(cni_version: &str, prev: Option<&Value>, out: &AddOutcome) -> Rendered {
    let mut reply = prev
        .and_then(|p| serde_json::from_value::<SuccessReply>(p.clone()).ok())
        .unwrap_or(SuccessReply {
            cni_version: version(cni_version),
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Default::default(),
            specific: Default::default(),
        });
    reply.cni_version = version(cni_version);
    let mac = |m: &Option<String>| m.as_deref().and_then(|m| m.parse::<MacAddr>().ok());
    reply.interfaces.push(Interface {
        name: out.host.name.clone(),
        mac: mac(&out.host.mac),
        sandbox: PathBuf::new(),
    });
    let pod_index = reply.interfaces.len();
    reply.interfaces.push(Interface {
        name: out.pod.name.clone(),
        mac: mac(&out.pod.mac),
        sandbox: out.netns.clone(),
    });
    reply.ips.push(Ip {
        address: net32(out.ip),
        gateway: Some(IpAddr::V4(out.gateway)),
        interface: Some(pod_index),
    });
    reply.routes.push(Route {
        dst: net32(out.gateway),
        gw: None,
    });
    reply.routes.push(Route {
        dst: IpNetwork::V4(
            Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("a /0 prefix is always valid"),
        ),
        gw: Some(IpAddr::V4(out.gateway)),
    });

    let mut value = serde_json::to_value(&reply).unwrap_or(Value::Null);
    if cni_version != "1.0.0" {
        add_ip_versions(&mut value);
    }
    Rendered(value)
}

/// Adds `"version":"4"|"6"` to every IP entry (CNI 0.3.0–0.4.0 results).
fn add_ip_versions(value: &mut Value) {
    if let Some(ips) = value.get_mut("ips").and_then(Value::as_array_mut) {
        for entry in ips {
            let v6 = entry
                .get("address")
                .and_then(Value::as_str)
                .is_some_and(|a| a.contains(':'));
            if let Some(obj) = entry.as_object_mut() {
                obj.insert(
                    "version".into(),
                    Value::String(if v6 { "6" } else { "4" }.into()),
                );
            }
        }
    }
}

/// The VERSION reply.
pub fn version_result(requested: &str) -> VersionReply {
    VersionReply {
        cni_version: version(requested),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| version(v)).collect(),
    }
}

/// The error reply for `err`, in the runtime's version.
pub fn error_result(cni_version: &str, err: &PluginError) -> ErrorReply<'static> {
    ErrorReply {
        cni_version: version(cni_version),
        code: i32::try_from(err.code()).unwrap_or(100),
        msg: err.short_message(),
        details: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::LinkState;

    fn outcome() -> AddOutcome {
        AddOutcome {
            host: LinkState {
                index: 7,
                name: "wrba7816bf8f01".into(),
                mac: Some("aa:bb:cc:dd:ee:01".into()),
                up: true,
                mtu: Some(1500),
            },
            pod: LinkState {
                index: 2,
                name: "eth0".into(),
                mac: Some("aa:bb:cc:dd:ee:02".into()),
                up: true,
                mtu: Some(1500),
            },
            netns: PathBuf::from("/run/netns/pod"),
            ip: "10.244.1.7".parse().expect("ip"),
            gateway: "10.244.1.1".parse().expect("ip"),
        }
    }

    #[test]
    fn v1_result_shape() {
        let Rendered(v) = add_result("1.0.0", None, &outcome());
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["interfaces"][0]["name"], "wrba7816bf8f01");
        assert_eq!(v["interfaces"][0]["sandbox"], "");
        assert_eq!(v["interfaces"][1]["name"], "eth0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/pod");
        assert_eq!(v["interfaces"][1]["mac"], "AA:BB:CC:DD:EE:02");
        assert_eq!(v["ips"][0]["address"], "10.244.1.7/32");
        assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][1]["dst"], "0.0.0.0/0");
        assert_eq!(v["routes"][1]["gw"], "10.244.1.1");
    }

    #[test]
    fn legacy_results_carry_ip_version() {
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let Rendered(v) = add_result(ver, None, &outcome());
            assert_eq!(v["cniVersion"], ver);
            assert_eq!(v["ips"][0]["version"], "4", "{ver}");
        }
    }

    #[test]
    fn chained_prev_result_is_kept_and_indices_shift() {
        let prev = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo", "sandbox": "/run/netns/pod"}],
            "ips": [], "routes": [], "dns": {}
        });
        let Rendered(v) = add_result("1.0.0", Some(&prev), &outcome());
        assert_eq!(v["interfaces"][0]["name"], "lo");
        assert_eq!(v["interfaces"][2]["name"], "eth0");
        assert_eq!(v["ips"][0]["interface"], 2);
    }

    #[test]
    fn version_and_error_replies() {
        let v = serde_json::to_value(version_result("0.4.0")).expect("json");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
        let err = PluginError::InvalidConfig {
            field: "podCIDR",
            reason: "is required".into(),
        };
        let e = serde_json::to_value(error_result("1.0.0", &err)).expect("json");
        assert_eq!(e["code"], 7);
        assert!(e["details"].as_str().is_some_and(|d| d.contains("podCIDR")));
    }
}
