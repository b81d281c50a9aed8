//! The network configuration weir-cni accepts, validated before anything is
//! touched.
//!
//! The runtime hands the plugin one entry of the conflist the agent wrote,
//! with `name` and `cniVersion` injected:
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"weir","type":"weir-cni",
//!  "podCIDR":"10.244.1.0/24","dataDir":"/var/lib/weir/weir/node1/ipam","mtu":1500}
//! ```
//!
//! The standard fields are parsed by `cni_plugin::config::NetworkConfig`;
//! weir's own fields arrive in its flattened `specific` map and are checked
//! here one by one so that every error names its field. An unknown key is
//! rejected with code 2 (the spec's "unsupported field", whose message must
//! carry the key and value) rather than ignored, so a typo such as `podCidr`
//! cannot silently fall back to something else.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cni_plugin::config::NetworkConfig;
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::error::PluginError;

/// CNI spec versions this plugin speaks. Results differ only in detail
/// between them (0.3.x/0.4.0 IP entries carry `"version":"4"`).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// MTU used when the configuration has none.
pub const DEFAULT_MTU: u32 = 1500;

/// Accepted MTU range: 68 is the IPv4 minimum (RFC 791) and the veth
/// driver's minimum; 65535 is the veth driver's maximum.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// The smallest pod CIDR that still leaves one pod address next to the
/// network address, the gateway and the broadcast address is a /30.
pub const MAX_PREFIX_LEN: u8 = 30;

/// weir's own top-level keys (besides the standard CNI ones).
const WEIR_FIELDS: [&str; 4] = ["podCIDR", "dataDir", "mtu", "logFile"];

/// Keys of the administrative (conflist) schema that libcni may leave in a
/// plugin's configuration; accepted and ignored.
const IGNORED_FIELDS: [&str; 1] = ["capabilities"];

/// A validated weir-cni configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// The runtime's CNI version, one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// The node's pod CIDR (network address, prefix ≤ 30).
    pub pod_cidr: Ipv4Net,
    /// Directory of the IPAM allocation files (absolute).
    pub data_dir: PathBuf,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Optional log file (absolute); without it only warnings go to stderr.
    pub log_file: Option<PathBuf>,
    /// `prevResult` handed down a chain, if any (passed through in results).
    pub prev_result: Option<Value>,
}

impl PluginConfig {
    /// The gateway: first usable address of the pod CIDR, e.g. 10.244.1.1.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.pod_cidr)
    }
}

/// First usable address of `cidr` (network address + 1).
pub fn gateway_of(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

/// Reads just `cniVersion` from raw stdin bytes, for error replies and the
/// VERSION command. Falls back to "1.0.0" when it is absent or unreadable.
pub fn peek_cni_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "1.0.0".to_owned())
}

/// Parses and validates the configuration on stdin.
pub fn parse(stdin: &[u8]) -> Result<PluginConfig, PluginError> {
    let raw: Value =
        serde_json::from_slice(stdin).map_err(|source| PluginError::Decode { source })?;
    // Check the version before the full parse: a version this plugin does not
    // speak is code 1 whatever the rest of the document looks like.
    match raw.get("cniVersion") {
        None => {
            return Err(PluginError::InvalidConfig {
                field: "cniVersion",
                reason: "is required".into(),
            });
        }
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
        Some(other) => {
            return Err(PluginError::IncompatibleVersion {
                version: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
                supported: SUPPORTED_VERSIONS.join(", "),
            });
        }
    }
    let net: NetworkConfig =
        serde_json::from_value(raw).map_err(|source| PluginError::Decode { source })?;
    from_network_config(net)
}

/// Validates a parsed `NetworkConfig` into a [`PluginConfig`].
pub fn from_network_config(net: NetworkConfig) -> Result<PluginConfig, PluginError> {
    if let Some(ipam) = &net.ipam {
        return Err(PluginError::UnsupportedField {
            field: "ipam".into(),
            value: Value::String(ipam.plugin.clone()),
            hint: "weir-cni allocates addresses itself from podCIDR; remove the ipam section",
        });
    }
    if net.ip_masq {
        return Err(PluginError::UnsupportedField {
            field: "ipMasq".into(),
            value: Value::Bool(true),
            hint: "masquerading is the datapath's job; remove ipMasq",
        });
    }
    let mut unknown: Vec<_> = net
        .specific
        .iter()
        .filter(|(k, _)| {
            !WEIR_FIELDS.contains(&k.as_str()) && !IGNORED_FIELDS.contains(&k.as_str())
        })
        .collect();
    unknown.sort_by(|a, b| a.0.cmp(b.0));
    if let Some((field, value)) = unknown.first() {
        return Err(PluginError::UnsupportedField {
            field: (*field).clone(),
            value: (*value).clone(),
            hint: "weir-cni knows podCIDR, dataDir, mtu and logFile",
        });
    }

    let pod_cidr = parse_pod_cidr(net.specific.get("podCIDR"))?;
    let data_dir = parse_abs_path("dataDir", net.specific.get("dataDir"))?.ok_or(
        PluginError::InvalidConfig {
            field: "dataDir",
            reason: "is required (directory for IP allocation records, e.g. /var/lib/weir/<cluster>/<node>/ipam)".into(),
        },
    )?;
    let mtu = parse_mtu(net.specific.get("mtu"))?;
    let log_file = parse_abs_path("logFile", net.specific.get("logFile"))?;

    Ok(PluginConfig {
        cni_version: net.cni_version.to_string(),
        pod_cidr,
        data_dir,
        mtu,
        log_file,
        prev_result: net.prev_result,
    })
}

fn parse_pod_cidr(value: Option<&Value>) -> Result<Ipv4Net, PluginError> {
    let invalid = |reason: String| PluginError::InvalidConfig {
        field: "podCIDR",
        reason,
    };
    let text = match value {
        None => {
            return Err(invalid(
                "is required (the node's pod CIDR, e.g. 10.244.1.0/24)".into(),
            ));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(invalid(format!(
                "must be a string like \"10.244.1.0/24\", got {other}"
            )));
        }
    };
    let cidr: Ipv4Net = text.parse().map_err(|_| {
        invalid(format!(
            "{text:?} is not an IPv4 CIDR like \"10.244.1.0/24\""
        ))
    })?;
    if cidr.trunc() != cidr {
        return Err(invalid(format!(
            "{text:?} has host bits set; use the network address {}",
            cidr.trunc()
        )));
    }
    if cidr.prefix_len() > MAX_PREFIX_LEN {
        return Err(invalid(format!(
            "{text:?} is too small: a pod CIDR needs a prefix of /{MAX_PREFIX_LEN} or shorter (network, gateway, pods, broadcast)"
        )));
    }
    Ok(cidr)
}

fn parse_abs_path(
    field: &'static str,
    value: Option<&Value>,
) -> Result<Option<PathBuf>, PluginError> {
    let invalid = |reason: String| PluginError::InvalidConfig { field, reason };
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid("must not be empty".into())),
        Some(Value::String(s)) => {
            let path = PathBuf::from(s);
            if path.is_absolute() {
                Ok(Some(path))
            } else {
                Err(invalid(format!("{s:?} must be an absolute path")))
            }
        }
        Some(other) => Err(invalid(format!("must be a string path, got {other}"))),
    }
}

fn parse_mtu(value: Option<&Value>) -> Result<u32, PluginError> {
    let Some(value) = value else {
        return Ok(DEFAULT_MTU);
    };
    let out_of_range = || PluginError::InvalidConfig {
        field: "mtu",
        reason: format!(
            "{value} is out of range; use an integer from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ),
    };
    let mtu = value.as_u64().ok_or_else(out_of_range)?;
    u32::try_from(mtu)
        .ok()
        .filter(|m| MTU_RANGE.contains(m))
        .ok_or_else(out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"weir","type":"weir-cni",
        "podCIDR":"10.244.1.0/24","dataDir":"/var/lib/weir/weir/node1/ipam","mtu":1500}"#;

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).expect("GOOD is JSON");
        v[field] = value;
        serde_json::to_vec(&v).expect("serialize")
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).expect("GOOD is JSON");
        v.as_object_mut().expect("object").remove(field);
        serde_json::to_vec(&v).expect("serialize")
    }

    #[test]
    fn good_config_parses() {
        let cfg = parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(cfg.cni_version, "1.0.0");
        assert_eq!(
            cfg.pod_cidr,
            "10.244.1.0/24".parse::<Ipv4Net>().expect("cidr")
        );
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/weir/weir/node1/ipam"));
        assert_eq!(cfg.mtu, 1500);
        assert_eq!(cfg.log_file, None);
    }

    #[test]
    fn defaults_and_optional_fields() {
        let cfg = parse(&without("mtu")).expect("valid");
        assert_eq!(cfg.mtu, DEFAULT_MTU);
        let cfg = parse(&with("logFile", "/var/lib/weir/cni.log".into())).expect("valid");
        assert_eq!(cfg.log_file, Some(PathBuf::from("/var/lib/weir/cni.log")));
        let cfg = parse(&with(
            "capabilities",
            serde_json::json!({"portMappings": false}),
        ))
        .expect("valid");
        assert_eq!(cfg.mtu, 1500);
    }

    #[test]
    fn all_supported_versions_parse() {
        for v in SUPPORTED_VERSIONS {
            let cfg = parse(&with("cniVersion", v.into())).expect(v);
            assert_eq!(cfg.cni_version, v);
        }
    }

    /// (input, expected code, text the details must contain)
    #[test]
    fn invalid_configs_table() {
        let cases: Vec<(Vec<u8>, u32, &str)> = vec![
            (
                b"not json".to_vec(),
                codes::DECODE_FAILURE,
                "not valid JSON",
            ),
            (
                with("cniVersion", "0.2.0".into()),
                codes::INCOMPATIBLE_VERSION,
                "0.2.0",
            ),
            (
                with("cniVersion", "2.0.0".into()),
                codes::INCOMPATIBLE_VERSION,
                "2.0.0",
            ),
            (without("cniVersion"), codes::INVALID_CONFIG, "cniVersion"),
            (without("podCIDR"), codes::INVALID_CONFIG, "podCIDR"),
            (
                with("podCIDR", "10.244.1.0".into()),
                codes::INVALID_CONFIG,
                "podCIDR",
            ),
            (
                with("podCIDR", "banana".into()),
                codes::INVALID_CONFIG,
                "not an IPv4 CIDR",
            ),
            (
                with("podCIDR", "fd00::/64".into()),
                codes::INVALID_CONFIG,
                "not an IPv4 CIDR",
            ),
            (
                with("podCIDR", "10.244.1.7/24".into()),
                codes::INVALID_CONFIG,
                "10.244.1.0/24",
            ),
            (
                with("podCIDR", "10.244.1.0/31".into()),
                codes::INVALID_CONFIG,
                "too small",
            ),
            (
                with("podCIDR", 24.into()),
                codes::INVALID_CONFIG,
                "must be a string",
            ),
            (without("dataDir"), codes::INVALID_CONFIG, "dataDir"),
            (
                with("dataDir", "relative/ipam".into()),
                codes::INVALID_CONFIG,
                "absolute",
            ),
            (with("dataDir", "".into()), codes::INVALID_CONFIG, "dataDir"),
            (with("mtu", 0.into()), codes::INVALID_CONFIG, "mtu"),
            (
                with("mtu", 67.into()),
                codes::INVALID_CONFIG,
                "out of range",
            ),
            (
                with("mtu", 65536.into()),
                codes::INVALID_CONFIG,
                "out of range",
            ),
            (with("mtu", (-1).into()), codes::INVALID_CONFIG, "mtu"),
            (with("mtu", "1500".into()), codes::INVALID_CONFIG, "mtu"),
            (
                with("logFile", "cni.log".into()),
                codes::INVALID_CONFIG,
                "logFile",
            ),
            (
                with("podCidr", "10.244.1.0/24".into()),
                codes::UNSUPPORTED_FIELD,
                "podCidr",
            ),
            (
                with("ipMasq", true.into()),
                codes::UNSUPPORTED_FIELD,
                "ipMasq",
            ),
            (
                with("ipam", serde_json::json!({"type": "host-local"})),
                codes::UNSUPPORTED_FIELD,
                "host-local",
            ),
        ];
        for (input, code, needle) in cases {
            let text = String::from_utf8_lossy(&input).into_owned();
            let err = parse(&input).expect_err(&text);
            assert_eq!(err.code(), code, "{text}: {err}");
            assert!(
                err.to_string().contains(needle),
                "{text}: {err} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn mtu_bounds_are_inclusive() {
        assert_eq!(parse(&with("mtu", 68.into())).expect("68").mtu, 68);
        assert_eq!(parse(&with("mtu", 65535.into())).expect("65535").mtu, 65535);
    }

    #[test]
    fn peek_version_falls_back() {
        assert_eq!(peek_cni_version(GOOD.as_bytes()), "1.0.0");
        assert_eq!(peek_cni_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(peek_cni_version(b""), "1.0.0");
        assert_eq!(peek_cni_version(b"{}"), "1.0.0");
    }
}
