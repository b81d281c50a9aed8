//! The one place that reads the process environment and stdin.
//!
//! `cni_plugin::Cni::from_env` is not used because it refuses CNI 0.3.x
//! (its compatibility range is `=0.4.0||^1.0.0`, and weir must answer
//! 0.3.0/0.3.1 too) and because it folds config parsing into env parsing,
//! which would take away our per-field config errors. Its `Command` type is
//! used for the command itself.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use cni_plugin::Command;

use crate::error::PluginError;
use crate::naming::is_valid_ifname;

/// What the runtime passed to one invocation (config still unparsed).
#[derive(Debug)]
pub struct Inputs {
    pub command: Command,
    /// Present for ADD, DEL and CHECK.
    pub target: Option<Target>,
    /// The raw network configuration from stdin.
    pub stdin: Vec<u8>,
}

/// The attachment an ADD/DEL/CHECK is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub container_id: String,
    pub ifname: String,
    /// Path of the pod's network namespace; optional for DEL only.
    pub netns: Option<PathBuf>,
}

/// Reads the CNI_* variables and stdin of this process.
pub fn read() -> Result<Inputs, PluginError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|source| PluginError::Io {
            what: "stdin",
            source,
        })?;
    from_parts(&env, stdin)
}

/// Validates already-read variables (pure, for tests).
pub fn from_parts(env: &HashMap<String, String>, stdin: Vec<u8>) -> Result<Inputs, PluginError> {
    let get = |var: &'static str| env.get(var).map(String::as_str).filter(|v| !v.is_empty());
    let require = |var: &'static str| {
        get(var).ok_or(PluginError::InvalidEnv {
            var,
            reason: "is required".into(),
        })
    };

    let command_text = require("CNI_COMMAND")?;
    let command: Command = command_text.parse().map_err(|_| PluginError::InvalidEnv {
        var: "CNI_COMMAND",
        reason: format!("{command_text:?} is not one of ADD, DEL, CHECK, VERSION"),
    })?;

    let target = match command {
        Command::Version => None,
        Command::Add | Command::Del | Command::Check => {
            let container_id = require("CNI_CONTAINERID")?;
            if !is_valid_container_id(container_id) {
                return Err(PluginError::InvalidEnv {
                    var: "CNI_CONTAINERID",
                    reason: format!(
                        "{container_id:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
                    ),
                });
            }
            let ifname = require("CNI_IFNAME")?;
            if !is_valid_ifname(ifname) {
                return Err(PluginError::InvalidEnv {
                    var: "CNI_IFNAME",
                    reason: format!(
                        "{ifname:?} is not a valid Linux interface name (1-15 bytes, no '/', ':' or spaces)"
                    ),
                });
            }
            let netns = match (command, get("CNI_NETNS")) {
                (_, Some(path)) => Some(PathBuf::from(path)),
                (Command::Del, None) => None,
                (_, None) => {
                    return Err(PluginError::InvalidEnv {
                        var: "CNI_NETNS",
                        reason: "is required".into(),
                    });
                }
            };
            Some(Target {
                container_id: container_id.to_owned(),
                ifname: ifname.to_owned(),
                netns,
            })
        }
    };
    Ok(Inputs {
        command,
        target,
        stdin,
    })
}

/// The spec's container id rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It also
/// makes the id safe to store in the IPAM files (no newline).
pub fn is_valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const FULL: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/run/netns/x"),
    ];

    #[test]
    fn add_reads_target() {
        let inputs = from_parts(&env(&FULL), b"{}".to_vec()).expect("valid");
        assert!(matches!(inputs.command, Command::Add));
        assert_eq!(
            inputs.target,
            Some(Target {
                container_id: "abc123".into(),
                ifname: "eth0".into(),
                netns: Some(PathBuf::from("/run/netns/x")),
            })
        );
    }

    #[test]
    fn del_without_netns_is_fine_but_add_is_not() {
        let mut e = env(&FULL);
        e.remove("CNI_NETNS");
        e.insert("CNI_COMMAND".into(), "DEL".into());
        let inputs = from_parts(&e, Vec::new()).expect("DEL without netns");
        assert_eq!(inputs.target.and_then(|t| t.netns), None);
        e.insert("CNI_COMMAND".into(), "ADD".into());
        let err = from_parts(&e, Vec::new()).expect_err("ADD needs netns");
        assert_eq!(err.code(), codes::INVALID_ENV);
        assert!(err.to_string().contains("CNI_NETNS"));
    }

    #[test]
    fn version_needs_only_the_command() {
        let inputs = from_parts(&env(&[("CNI_COMMAND", "VERSION")]), Vec::new()).expect("valid");
        assert!(matches!(inputs.command, Command::Version));
        assert_eq!(inputs.target, None);
    }

    #[test]
    fn invalid_env_table() {
        let cases: [(&str, &str, &str); 6] = [
            ("CNI_COMMAND", "", "CNI_COMMAND"),
            ("CNI_COMMAND", "STATUS", "CNI_COMMAND"),
            ("CNI_CONTAINERID", "", "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", "-leading-dash", "CNI_CONTAINERID"),
            ("CNI_CONTAINERID", "new\nline", "CNI_CONTAINERID"),
            ("CNI_IFNAME", "this-name-is-too-long", "CNI_IFNAME"),
        ];
        for (var, value, needle) in cases {
            let mut e = env(&FULL);
            e.insert(var.into(), value.into());
            let err = from_parts(&e, Vec::new()).expect_err(var);
            assert_eq!(err.code(), codes::INVALID_ENV, "{var}={value:?}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn container_id_rule() {
        assert!(is_valid_container_id("a"));
        assert!(is_valid_container_id("Abc_1.2-3"));
        assert!(!is_valid_container_id(""));
        assert!(!is_valid_container_id("_a"));
        assert!(!is_valid_container_id("a/b"));
    }
}
