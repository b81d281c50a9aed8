//! Unprivileged protocol tests of the built binary: VERSION, and requests
//! that must be rejected before the plugin touches any namespace or file.
//! (The namespace-creating tests are in `netns.rs`.)

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_weir-cni");

/// Runs the plugin with exactly `env` (plus PATH) and `stdin`; returns the
/// exit code and the parsed stdout.
fn invoke(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut cmd = Command::new(PLUGIN);
    cmd.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn weir-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let reply = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON reply ({e}): {stdout:?}"));
    (out.status.code().unwrap_or(-1), reply)
}

#[test]
fn version_lists_supported_versions() {
    for requested in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let (code, reply) = invoke(
            &[("CNI_COMMAND", "VERSION")],
            &format!(r#"{{"cniVersion":"{requested}"}}"#),
        );
        assert_eq!(code, 0);
        assert_eq!(reply["cniVersion"], requested);
        assert_eq!(
            reply["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
        );
    }
}

#[test]
fn invalid_config_is_code_7_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("ipam");
    let config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "weir", "type": "weir-cni",
        "podCIDR": "10.244.1.0/33", "dataDir": data_dir,
    });
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/run/netns/wcni-does-not-exist"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let (code, reply) = invoke(&env, &config.to_string());
    assert_eq!(code, 7);
    assert_eq!(reply["code"], 7);
    assert_eq!(reply["cniVersion"], "1.0.0");
    assert!(
        reply["details"]
            .as_str()
            .is_some_and(|d| d.contains("podCIDR")),
        "{reply}"
    );
    assert!(
        !data_dir.exists(),
        "rejected ADD created the IPAM directory"
    );
}

#[test]
fn missing_environment_is_code_4() {
    let (code, reply) = invoke(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], "{}");
    assert_eq!(code, 4);
    assert!(
        reply["details"]
            .as_str()
            .is_some_and(|d| d.contains("CNI_CONTAINERID")),
        "{reply}"
    );
    let (code, reply) = invoke(&[], "{}");
    assert_eq!(code, 4);
    assert!(
        reply["details"]
            .as_str()
            .is_some_and(|d| d.contains("CNI_COMMAND")),
        "{reply}"
    );
}

#[test]
fn unsupported_version_is_code_1() {
    let env = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
    ];
    let (code, reply) = invoke(
        &env,
        r#"{"cniVersion":"0.2.0","name":"weir","type":"weir-cni"}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(reply["code"], 1);
}
