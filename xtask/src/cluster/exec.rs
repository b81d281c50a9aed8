//! `cargo xtask exec POD -- CMD...`: runs a command inside a pod's container
//! (its network, mount, PID, UTS and IPC namespaces) on the local cluster.
//! A developer convenience until the API grows an exec call: it finds a
//! container process through the pod's cgroup (`<cgroup-parent>/pod<uid>`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;

use super::state::ClusterState;
use super::up::block_on;
use crate::cmd::{self, cmd};
use crate::layout::Layout;

/// Whether a cgroup directory name belongs to the pod (runc/kubelet spell the
/// uid with dashes or underscores).
fn is_pod_cgroup(dir_name: &str, uid: &str) -> bool {
    dir_name.contains(uid) || dir_name.contains(&uid.replace('-', "_"))
}

/// Every process in the cgroup trees below `parent` that belong to pod `uid`.
fn pod_pids(parent: &Path, uid: &str) -> Vec<i32> {
    let mut stack: Vec<(PathBuf, bool)> = vec![(parent.to_path_buf(), false)];
    let mut pids = Vec::new();
    while let Some((dir, in_pod)) = stack.pop() {
        if in_pod && let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let inside = in_pod
                    || e.file_name()
                        .to_str()
                        .is_some_and(|n| is_pod_cgroup(n, uid));
                stack.push((e.path(), inside));
            }
        }
    }
    pids
}

pub fn exec(layout: &Layout, namespace: &str, pod: &str, command: &[String]) -> Result<()> {
    cmd::require_root("exec")?;
    if command.is_empty() {
        bail!("no command given: cargo xtask exec POD -- CMD [ARGS...]");
    }
    let state = ClusterState::load(&layout.state_file())?
        .with_context(|| format!("cluster {:?} is not up", layout.name))?;
    let server = state.server.clone();
    let (ns, name) = (namespace.to_string(), pod.to_string());
    let p: Pod = block_on(async move {
        let c = weir_client::Client::connect(&server).await?;
        c.get::<Pod>(&ns, &name).await
    })?
    .with_context(|| format!("cannot get pod {namespace}/{pod}"))?;
    let uid = p.metadata.uid.clone().context("pod has no uid")?;
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .with_context(|| format!("pod {namespace}/{pod} is not scheduled yet"))?;
    let ns_state = state
        .nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("pod runs on unknown node {node}"))?;
    let parent = layout
        .cgroup2_root
        .join(ns_state.cgroup_parent.trim_start_matches('/'));
    // The sandbox's pause process shares only the network; pick a container process.
    let pid = pod_pids(&parent, &uid)
        .into_iter()
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() != "pause")
        })
        .with_context(|| {
            format!(
                "no running container of pod {namespace}/{pod} found under {}",
                parent.display()
            )
        })?;
    let target = pid.to_string();
    let status = cmd(
        "nsenter",
        [
            "-t",
            target.as_str(),
            "-n",
            "-m",
            "-p",
            "-u",
            "-i",
            "-r",
            "-w",
            "--",
        ],
    )
    .args(command)
    .status()
    .context("cannot run nsenter")?;
    if !status.success() {
        bail!("command exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_names() {
        let uid = "0f6c-11";
        let cases = [
            ("pod0f6c-11", true),
            ("pod0f6c_11", true),
            ("kubepods-pod0f6c_11.slice", true),
            ("pod0f6c-12", false),
        ];
        for (dir, want) in cases {
            assert_eq!(is_pod_cgroup(dir, uid), want, "{dir}");
        }
    }
}
