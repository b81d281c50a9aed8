//! The one error type of the plugin, and its CNI error codes.
//!
//! Codes 1–99 are the spec's (SPEC.md "Error"): 1 incompatible version,
//! 2 unsupported field, 3 container unknown, 4 invalid environment variables,
//! 5 I/O failure, 6 decode failure, 7 invalid network configuration,
//! 11 try again later. Codes 100+ are ours and listed in [`codes`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::ipam::IpamError;

/// CNI error codes (spec-defined below 100, weir-defined from 100).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The IPAM store under dataDir could not be read or written.
    pub const IPAM_STORE: u32 = 100;
    /// Every assignable address of podCIDR is taken.
    pub const IPAM_EXHAUSTED: u32 = 101;
    /// A netlink request failed.
    pub const NETLINK: u32 = 110;
    /// The pod network namespace could not be opened or entered.
    pub const NETNS: u32 = 111;
    /// A sysctl (ip_forward) could not be read or set.
    pub const SYSCTL: u32 = 112;
    /// CNI_IFNAME already exists in the pod namespace (and is not ours).
    pub const IFNAME_TAKEN: u32 = 113;
    /// CHECK found the pod's networking different from what ADD set up.
    pub const CHECK_FAILED: u32 = 120;
}

/// Everything that can make an invocation fail. Each variant maps to one
/// CNI error code ([`PluginError::code`]); the Display text is the reply's
/// `details` and names the field, variable or object concerned.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cniVersion {version:?} is not supported; supported versions: {supported}")]
    IncompatibleVersion { version: String, supported: String },

    #[error("field {field:?} (value {value}) is not supported by weir-cni: {hint}")]
    UnsupportedField {
        field: String,
        value: serde_json::Value,
        hint: &'static str,
    },

    #[error("environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },

    #[error("reading {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("network configuration is not valid JSON for CNI: {source}")]
    Decode {
        #[source]
        source: serde_json::Error,
    },

    #[error("network configuration field {field:?}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    #[error(transparent)]
    Ipam(#[from] IpamError),

    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("network namespace {path}: {reason}")]
    Netns { path: PathBuf, reason: String },

    #[error(
        "interface {ifname} already exists in the pod network namespace; another plugin or an earlier attachment owns it"
    )]
    IfnameTaken { ifname: String },

    #[error(
        "link {name} disappeared while weir-cni was configuring it (concurrent ADD/DEL for the same container?)"
    )]
    LinkVanished { name: String },

    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("CHECK failed for {ip}: {}", problems.join("; "))]
    CheckFailed { ip: Ipv4Addr, problems: Vec<String> },

    #[error(
        "CHECK failed: container {container_id} interface {ifname} has no address recorded in the IPAM store"
    )]
    CheckNoAllocation {
        container_id: String,
        ifname: String,
    },
}

impl PluginError {
    /// The CNI error code reported in the reply and as the exit status.
    pub fn code(&self) -> u32 {
        use codes::*;
        match self {
            Self::IncompatibleVersion { .. } => INCOMPATIBLE_VERSION,
            Self::UnsupportedField { .. } => UNSUPPORTED_FIELD,
            Self::InvalidEnv { .. } => INVALID_ENV,
            Self::Io { .. } => IO_FAILURE,
            Self::Decode { .. } => DECODE_FAILURE,
            Self::InvalidConfig { .. } => INVALID_CONFIG,
            Self::Ipam(IpamError::LockTimeout { .. }) => TRY_AGAIN_LATER,
            Self::Ipam(IpamError::Exhausted { .. }) => IPAM_EXHAUSTED,
            Self::Ipam(IpamError::Store { .. }) => IPAM_STORE,
            Self::Netlink { .. } | Self::LinkVanished { .. } => NETLINK,
            Self::IfnameTaken { .. } => IFNAME_TAKEN,
            Self::Netns { .. } => NETNS,
            Self::Sysctl { .. } => SYSCTL,
            Self::CheckFailed { .. } | Self::CheckNoAllocation { .. } => CHECK_FAILED,
        }
    }

    /// The short, fixed `msg` of the error reply.
    pub fn short_message(&self) -> &'static str {
        match self {
            Self::IncompatibleVersion { .. } => "incompatible CNI version",
            Self::UnsupportedField { .. } => "unsupported field in network configuration",
            Self::InvalidEnv { .. } => "invalid environment variable",
            Self::Io { .. } => "I/O failure",
            Self::Decode { .. } => "failed to decode network configuration",
            Self::InvalidConfig { .. } => "invalid network configuration",
            Self::Ipam(IpamError::LockTimeout { .. }) => "IPAM store busy, try again later",
            Self::Ipam(IpamError::Exhausted { .. }) => "no free address in podCIDR",
            Self::Ipam(IpamError::Store { .. }) => "IPAM store failure",
            Self::Netlink { .. } | Self::LinkVanished { .. } => "netlink request failed",
            Self::IfnameTaken { .. } => "interface name already in use in the pod",
            Self::Netns { .. } => "cannot use the pod network namespace",
            Self::Sysctl { .. } => "cannot set sysctl",
            Self::CheckFailed { .. } | Self::CheckNoAllocation { .. } => {
                "pod networking differs from what ADD set up"
            }
        }
    }

    /// Helper for `map_err` on rtnetlink calls.
    pub fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PluginError {
        let op = op.into();
        move |source| PluginError::Netlink { op, source }
    }
}
